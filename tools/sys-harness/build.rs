//! Generates, from the KMDF 1.33 headers of the WDK-shaped root that
//! scripts/setup-kernel-check lays out (`WDKContentRoot`, default
//! `../../target/kernel-check/wdk`):
//!
//! * `wdf_functions.rs`: the WDF function table's names in `WDFFUNCENUM` order, from
//!   `wdffuncenum.h` (`WdfXxxTableIndex = N`), and the table itself: the harness's
//!   implementation where there is one (a `pub extern "win64" fn WdfXxx(` in src/wdf.rs's
//!   `ddi` module), otherwise a
//!   stub that names itself and fails the run;
//! * `layouts.rs`: `sizeof` and field offsets of the structures the harness reads, as clang
//!   computes them for x86_64-pc-windows-msvc from the same headers (each reported by an
//!   `-Wint-conversion` warning), so that a size a driver passes in a `Size` field is checked
//!   against the header's, and the harness's own `#[repr(C)]` mirrors are checked at compile
//!   time; and the values of the enumerators it reads in them (`VALUE_<name>`).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const STRUCTS: &[&str] = &[
    "WDF_DRIVER_CONFIG",
    "WDF_OBJECT_ATTRIBUTES",
    "WDF_OBJECT_CONTEXT_TYPE_INFO",
    "WDF_PNPPOWER_EVENT_CALLBACKS",
    "WDF_WORKITEM_CONFIG",
    "WDF_TIMER_CONFIG",
    "WDF_DRIVER_GLOBALS",
    "WDF_POWER_POLICY_EVENT_CALLBACKS",
    "WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS",
    "WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS",
    "WDF_FILEOBJECT_CONFIG",
    "GUID",
    "UNICODE_STRING",
    "WDF_IO_QUEUE_CONFIG",
    "WDF_REQUEST_PARAMETERS",
];

const FIELDS: &[(&str, &[&str])] = &[
    (
        "WDF_DRIVER_CONFIG",
        &["Size", "EvtDriverDeviceAdd", "EvtDriverUnload", "DriverInitFlags", "DriverPoolTag"],
    ),
    (
        "WDF_OBJECT_ATTRIBUTES",
        &[
            "Size",
            "EvtCleanupCallback",
            "EvtDestroyCallback",
            "ExecutionLevel",
            "SynchronizationScope",
            "ParentObject",
            "ContextSizeOverride",
            "ContextTypeInfo",
        ],
    ),
    (
        "WDF_OBJECT_CONTEXT_TYPE_INFO",
        &["Size", "ContextName", "ContextSize", "UniqueType", "EvtDriverGetUniqueContextType"],
    ),
    (
        "WDF_PNPPOWER_EVENT_CALLBACKS",
        &[
            "Size",
            "EvtDeviceD0Entry",
            "EvtDeviceD0EntryPostInterruptsEnabled",
            "EvtDeviceD0Exit",
            "EvtDeviceD0ExitPreInterruptsDisabled",
            "EvtDevicePrepareHardware",
            "EvtDeviceReleaseHardware",
            "EvtDeviceSelfManagedIoCleanup",
            "EvtDeviceSelfManagedIoFlush",
            "EvtDeviceSelfManagedIoInit",
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceSelfManagedIoRestart",
            "EvtDeviceSurpriseRemoval",
            "EvtDeviceQueryRemove",
            "EvtDeviceQueryStop",
            "EvtDeviceUsageNotification",
            "EvtDeviceRelationsQuery",
            "EvtDeviceUsageNotificationEx",
        ],
    ),
    ("WDF_WORKITEM_CONFIG", &["Size", "EvtWorkItemFunc", "AutomaticSerialization"]),
    (
        "WDF_TIMER_CONFIG",
        &[
            "Size",
            "EvtTimerFunc",
            "Period",
            "AutomaticSerialization",
            "TolerableDelay",
            "UseHighResolutionTimer",
        ],
    ),
    (
        "WDF_DRIVER_GLOBALS",
        &["Driver", "DriverFlags", "DriverTag", "DriverName", "DisplaceDriverUnload"],
    ),
    (
        "WDF_POWER_POLICY_EVENT_CALLBACKS",
        &[
            "Size",
            "EvtDeviceArmWakeFromS0",
            "EvtDeviceDisarmWakeFromS0",
            "EvtDeviceWakeFromS0Triggered",
            "EvtDeviceArmWakeFromSx",
            "EvtDeviceDisarmWakeFromSx",
            "EvtDeviceWakeFromSxTriggered",
            "EvtDeviceArmWakeFromSxWithReason",
        ],
    ),
    (
        "WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS",
        &[
            "Size",
            "IdleCaps",
            "DxState",
            "IdleTimeout",
            "UserControlOfIdleSettings",
            "Enabled",
            "PowerUpIdleDeviceOnSystemWake",
            "IdleTimeoutType",
            "ExcludeD3Cold",
        ],
    ),
    (
        "WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS",
        &[
            "Size",
            "DxState",
            "UserControlOfWakeSettings",
            "Enabled",
            "ArmForWakeIfChildrenAreArmedForWake",
            "IndicateChildWakeOnParentWake",
        ],
    ),
    (
        "WDF_FILEOBJECT_CONFIG",
        &[
            "Size",
            "EvtDeviceFileCreate",
            "EvtFileClose",
            "EvtFileCleanup",
            "AutoForwardCleanupClose",
            "FileObjectClass",
        ],
    ),
    ("GUID", &["Data1", "Data2", "Data3", "Data4"]),
    ("UNICODE_STRING", &["Length", "MaximumLength", "Buffer"]),
    (
        "WDF_IO_QUEUE_CONFIG",
        &[
            "Size",
            "DispatchType",
            "PowerManaged",
            "AllowZeroLengthRequests",
            "DefaultQueue",
            "EvtIoDefault",
            "EvtIoRead",
            "EvtIoWrite",
            "EvtIoDeviceControl",
            "EvtIoInternalDeviceControl",
            "EvtIoStop",
            "EvtIoResume",
            "EvtIoCanceledOnQueue",
            "Settings.Parallel.NumberOfPresentedRequests",
            "Driver",
        ],
    ),
    (
        "WDF_REQUEST_PARAMETERS",
        &[
            "Size",
            "MinorFunction",
            "Type",
            "Parameters.Read.Length",
            "Parameters.Write.Length",
            "Parameters.DeviceIoControl.OutputBufferLength",
            "Parameters.DeviceIoControl.InputBufferLength",
            "Parameters.DeviceIoControl.IoControlCode",
            "Parameters.DeviceIoControl.Type3InputBuffer",
        ],
    ),
];

/// Enumerators whose values the harness reads in the structures above (`VALUE_<name>`).
const ENUMERATORS: &[&str] = &[
    "IdleCannotWakeFromS0",
    "IdleCanWakeFromS0",
    "IdleUsbSelectiveSuspend",
    "IdleDoNotAllowUserControl",
    "IdleAllowUserControl",
    "WakeDoNotAllowUserControl",
    "WakeAllowUserControl",
    "DriverManagedIdleTimeout",
    "WdfFalse",
    "WdfTrue",
    "WdfUseDefault",
    "PowerDeviceD1",
    "PowerDeviceD2",
    "PowerDeviceD3",
    "PowerDeviceMaximum",
    "WdfFileObjectWdfCannotUseFsContexts",
    "WdfIoQueueDispatchSequential",
    "WdfIoQueueDispatchParallel",
    "WdfIoQueueDispatchManual",
    "WdfRequestTypeRead",
    "WdfRequestTypeWrite",
    "WdfRequestTypeDeviceControl",
    "WdfRequestTypeDeviceControlInternal",
    "WdfRequestStopActionSuspend",
    "WdfRequestStopActionPurge",
    "WdfRequestStopRequestCancelable",
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = env::var_os("WDKContentRoot")
        .map_or_else(|| manifest.join("../../target/kernel-check/wdk"), PathBuf::from);
    println!("cargo::rerun-if-env-changed=WDKContentRoot");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/wdf.rs");
    let kmdf = root.join("Include/wdf/kmdf/1.33");
    let enum_header = kmdf.join("wdffuncenum.h");
    println!("cargo::rerun-if-changed={}", enum_header.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let header = fs::read_to_string(&enum_header).unwrap_or_else(|e| {
        panic!(
            "sys-harness: cannot read {} ({e}): run scripts/setup-kernel-check first, or set \
             WDKContentRoot",
            enum_header.display()
        )
    });
    fs::write(out.join("wdf_functions.rs"), functions(&header, &manifest)).unwrap();
    fs::write(out.join("layouts.rs"), layouts(&root)).unwrap();
}

/// The names in `WDFFUNCENUM` order, and the table.
fn functions(header: &str, manifest: &Path) -> String {
    let body = header
        .split("typedef enum _WDFFUNCENUM {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("wdffuncenum.h has no WDFFUNCENUM");
    let mut names = Vec::new();
    let mut count = None;
    for line in body.lines() {
        let line = line.trim().trim_end_matches(',');
        let Some((name, value)) = line.split_once('=') else { continue };
        let (name, value) = (name.trim(), value.trim().parse::<usize>().expect("an index"));
        if name == "WdfFunctionTableNumEntries" {
            count = Some(value);
        } else if let Some(function) = name.strip_suffix("TableIndex") {
            assert_eq!(value, names.len(), "WDFFUNCENUM is not contiguous at {name}");
            names.push(function.to_owned());
        }
    }
    assert_eq!(Some(names.len()), count, "WdfFunctionTableNumEntries");
    // The functions src/wdf.rs implements: its `pub extern "win64" fn WdfXxx(` lines.
    let source = fs::read_to_string(manifest.join("src/wdf.rs")).unwrap_or_default();
    let implemented: Vec<&str> = source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub extern \"win64\" fn "))
        .filter_map(|rest| rest.split('(').next())
        .filter(|name| name.starts_with("Wdf"))
        .collect();
    for name in &implemented {
        assert!(
            names.iter().any(|n| n == name),
            "src/wdf.rs implements {name}, not in WDFFUNCENUM"
        );
    }
    let mut code = String::new();
    writeln!(code, "/// The KMDF 1.33 function count (`WdfFunctionTableNumEntries`).").unwrap();
    writeln!(code, "pub const FUNCTION_COUNT: usize = {};", names.len()).unwrap();
    writeln!(code, "/// The names, in `WDFFUNCENUM` order (from wdffuncenum.h).").unwrap();
    writeln!(code, "pub const FUNCTION_NAMES: [&str; {}] = [", names.len()).unwrap();
    for name in &names {
        writeln!(code, "    {name:?},").unwrap();
    }
    writeln!(code, "];").unwrap();
    writeln!(code, "/// The table: the implementation, or a stub naming the function.").unwrap();
    writeln!(code, "pub static FUNCTION_TABLE: crate::wdf::Table = crate::wdf::Table([").unwrap();
    for (index, name) in names.iter().enumerate() {
        if implemented.contains(&name.as_str()) {
            writeln!(code, "    crate::wdf::ddi::{name} as *const (),").unwrap();
        } else {
            writeln!(code, "    crate::wdf::not_implemented::<{index}> as *const (),").unwrap();
        }
    }
    writeln!(code, "]);").unwrap();
    code
}

/// Sizes and offsets, from clang's warnings.
fn layouts(root: &Path) -> String {
    let sdk = fs::read_dir(root.join("Include"))
        .expect("Include/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("10.")))
        .max()
        .expect("Include/10.*");
    let mut probe = String::from("#include <ntddk.h>\n#include <wdf.h>\n");
    let mut keys = Vec::new();
    for name in STRUCTS {
        writeln!(probe, "char (*p{})[sizeof({name})] = 1;", keys.len()).unwrap();
        keys.push(format!("SIZEOF_{name}"));
    }
    for (name, fields) in FIELDS {
        for field in *fields {
            // +1: a zero-sized array would not tell the offset 0 apart from an error.
            writeln!(
                probe,
                "char (*p{})[__builtin_offsetof({name}, {field}) + 1] = 1;",
                keys.len()
            )
            .unwrap();
            keys.push(format!("OFFSET_{name}__{}", field.replace('.', "_")));
        }
    }
    for name in ENUMERATORS {
        writeln!(probe, "char (*p{})[({name}) + 1] = 1;", keys.len()).unwrap();
        keys.push(format!("VALUE_{name}"));
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let file = out.join("layouts.c");
    fs::write(&file, probe).unwrap();
    let clang_include = Command::new("clang").arg("-print-resource-dir").output().expect("clang");
    let clang_include =
        String::from_utf8_lossy(&clang_include.stdout).trim().to_owned() + "/include";
    let output = Command::new("clang")
        .args([
            "-target",
            "x86_64-pc-windows-msvc",
            "-fsyntax-only",
            "-D__GNUC__=4",
            "-D__GNUC_MINOR__=9",
        ])
        .args(["-D_AMD64_", "-DKMDF_VERSION_MAJOR=1", "-DKMDF_VERSION_MINOR=33"])
        .arg("-isystem")
        .arg(&clang_include)
        .arg(format!("-I{}", sdk.join("km/crt").display()))
        .arg(format!("-I{}", sdk.join("km").display()))
        .arg(format!("-I{}", sdk.join("shared").display()))
        .arg(format!("-I{}", root.join("Include/wdf/kmdf/1.33").display()))
        .arg(&file)
        .output()
        .expect("clang (scripts/setup-kernel-check installs it)");
    let diagnostics = String::from_utf8_lossy(&output.stderr);
    let mut values = vec![None; keys.len()];
    for line in diagnostics.lines() {
        let Some(rest) = line.strip_prefix(&format!("{}:", file.display())) else { continue };
        let Some(line_no) = rest.split(':').next().and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        let Some(size) =
            line.split("initializing 'char (*)[").nth(1).and_then(|r| r.split(']').next())
        else {
            continue;
        };
        // Lines 1 and 2 are the includes.
        if let (Some(slot), Ok(size)) = (values.get_mut(line_no - 3), size.parse::<usize>()) {
            *slot = Some(size);
        }
    }
    let mut code = String::new();
    for (key, value) in keys.iter().zip(&values) {
        let value = value.unwrap_or_else(|| {
            panic!("sys-harness: clang did not report {key}; its diagnostics:\n{diagnostics}")
        });
        if key.starts_with("VALUE_") {
            writeln!(code, "pub const {key}: i32 = {};", value - 1).unwrap();
            continue;
        }
        let value = if key.starts_with("OFFSET_") { value - 1 } else { value };
        writeln!(code, "pub const {key}: usize = {value};").unwrap();
    }
    code
}
