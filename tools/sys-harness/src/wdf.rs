//! WDFLDR and the WDF function table, on the host runtime's own models.
//!
//! `WdfVersionBind` hands the driver the table generated from the KMDF 1.33 headers
//! (build.rs): each entry this file's `ddi` module implements is an `extern "win64"`
//! function built on `kmdf::host::raw` (objects, contexts, work items, timers, devices and
//! their PnP/power state machines are the runtime's); every other entry names itself and
//! ends the run.
//!
//! Handles: a `WDFOBJECT` is a value of the harness's handle table, which maps it to the
//! runtime's object (held weakly: the runtime owns its objects, as KMDF does), to the
//! context blobs the driver asked for (sized by `ContextSizeOverride` or the type info's
//! `ContextSize`, zero-filled, found by type-info pointer identity), and to the references
//! the driver took (`WdfObjectReferenceActual`). The object's C `EvtDestroyCallback` runs
//! when the runtime destroys the object (its last reference gone), then the blobs are freed.

#![allow(non_snake_case, reason = "the DDIs keep their KMDF names")]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kmdf::host::AssignedResources;
use kmdf::host::raw::{self, Cleanup, DriverHooks, Hooks, Object, WeakObject};
use kmdf::io_queue::Dispatch;
use kmdf::power_policy::{DxState, IdleCaps, S0IdleSettings, SxWakeSettings};
use kmdf::request::Parameters;
use kmdf::{Callback, DeviceInit, DevicePowerState, FailedAction, NtError, NtStatus};

use crate::report;

include!(concat!(env!("OUT_DIR"), "/wdf_functions.rs"));

/// The WDF function table: an entry per `WDFFUNCENUM` index.
pub struct Table(pub [*const (); FUNCTION_COUNT]);

// SAFETY: the table holds function addresses, never written after initialization.
unsafe impl Sync for Table {}

/// Sizes and offsets from the KMDF 1.33 headers (build.rs).
#[allow(dead_code, reason = "not every offset is read; all are checked")]
#[allow(non_upper_case_globals, reason = "OFFSET_<STRUCT>__<Field>: the header's field names")]
#[allow(clippy::unreadable_literal, reason = "generated: the values clang reports")]
pub mod layout {
    include!(concat!(env!("OUT_DIR"), "/layouts.rs"));
}

type Evt = Option<extern "win64" fn(usize)>;

/// `WDF_DRIVER_CONFIG`.
#[repr(C)]
pub struct DriverConfig {
    size: u32,
    device_add: Option<extern "win64" fn(usize, usize) -> i32>,
    unload: Evt,
    init_flags: u32,
    pool_tag: u32,
}

/// `WDF_OBJECT_ATTRIBUTES`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ObjectAttributes {
    size: u32,
    cleanup: Evt,
    destroy: Evt,
    execution_level: i32,
    synchronization_scope: i32,
    parent: usize,
    context_size_override: usize,
    context_type_info: *const ContextTypeInfo,
}

/// `WDF_OBJECT_CONTEXT_TYPE_INFO`.
#[repr(C)]
pub struct ContextTypeInfo {
    size: u32,
    name: *const u8,
    context_size: usize,
    unique_type: *const ContextTypeInfo,
    get_unique: usize,
}

/// `WDF_PNPPOWER_EVENT_CALLBACKS`: the callbacks as addresses, called with their own
/// signatures ([`call_pnp`]).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PnpPowerCallbacks {
    size: u32,
    d0_entry: usize,
    d0_entry_post_interrupts_enabled: usize,
    d0_exit: usize,
    d0_exit_pre_interrupts_disabled: usize,
    prepare_hardware: usize,
    release_hardware: usize,
    self_managed_io_cleanup: usize,
    self_managed_io_flush: usize,
    self_managed_io_init: usize,
    self_managed_io_suspend: usize,
    self_managed_io_restart: usize,
    surprise_removal: usize,
    query_remove: usize,
    query_stop: usize,
    usage_notification: usize,
    relations_query: usize,
    usage_notification_ex: usize,
}

/// `WDF_POWER_POLICY_EVENT_CALLBACKS`: the callbacks as addresses, called with their own
/// signatures ([`call_policy`]).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PowerPolicyCallbacks {
    size: u32,
    arm_wake_from_s0: usize,
    disarm_wake_from_s0: usize,
    wake_from_s0_triggered: usize,
    arm_wake_from_sx: usize,
    disarm_wake_from_sx: usize,
    wake_from_sx_triggered: usize,
    arm_wake_from_sx_with_reason: usize,
}

/// `WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS` (its enums and `WDF_TRI_STATE`s as `i32`).
#[repr(C)]
pub struct IdleSettings {
    size: u32,
    idle_caps: i32,
    dx_state: i32,
    idle_timeout: u32,
    user_control: i32,
    enabled: i32,
    power_up_on_system_wake: i32,
    idle_timeout_type: i32,
    exclude_d3_cold: i32,
}

/// `WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS`.
#[repr(C)]
pub struct WakeSettings {
    size: u32,
    dx_state: i32,
    user_control: i32,
    enabled: i32,
    arm_for_wake_if_children_are_armed: u8,
    indicate_child_wake_on_parent_wake: u8,
}

/// `WDF_WORKITEM_CONFIG`.
#[repr(C)]
pub struct WorkItemConfig {
    size: u32,
    func: Evt,
    automatic_serialization: u8,
}

/// `WDF_TIMER_CONFIG`.
#[repr(C)]
pub struct TimerConfig {
    size: u32,
    func: Evt,
    period: u32,
    automatic_serialization: u8,
    tolerable_delay: u32,
    /// `DECLSPEC_ALIGN(8) BOOLEAN UseHighResolutionTimer`.
    _align: [u8; 4],
    use_high_resolution_timer: u8,
}

/// `WDF_FILEOBJECT_CONFIG`: the file callbacks as addresses.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct FileObjectConfig {
    size: u32,
    create: usize,
    close: usize,
    cleanup: usize,
    auto_forward_cleanup_close: i32,
    class: i32,
}

/// `WDF_IO_QUEUE_CONFIG`: the callbacks as addresses.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IoQueueConfig {
    size: u32,
    dispatch_type: i32,
    power_managed: i32,
    allow_zero_length: u8,
    default_queue: u8,
    io_default: usize,
    io_read: usize,
    io_write: usize,
    io_device_control: usize,
    io_internal_device_control: usize,
    io_stop: usize,
    io_resume: usize,
    io_canceled_on_queue: usize,
    /// `Settings.Parallel.NumberOfPresentedRequests`.
    number_of_presented_requests: u32,
    driver: usize,
}

/// `WDF_REQUEST_PARAMETERS`, with the members of its union the harness writes: `Read` and
/// `Write` (`Length`), `DeviceIoControl`.
#[repr(C)]
pub struct RequestParameters {
    size: u16,
    minor_function: u8,
    request_type: i32,
    /// `Read.Length`, `Write.Length`, `DeviceIoControl.OutputBufferLength`.
    length: usize,
    /// `DeviceIoControl.InputBufferLength`.
    input_length: usize,
    /// `DeviceIoControl.IoControlCode`.
    code: u32,
    /// `DeviceIoControl.Type3InputBuffer`.
    type3_input_buffer: usize,
}

/// `GUID`.
#[repr(C)]
pub struct Guid {
    data1: u32,
    data2: u16,
    data3: u16,
    data4: [u8; 8],
}

/// `UNICODE_STRING`.
#[repr(C)]
pub struct UnicodeString {
    length: u16,
    maximum_length: u16,
    buffer: *const u16,
}

/// `WDF_DRIVER_GLOBALS`.
#[repr(C)]
pub struct DriverGlobals {
    driver: AtomicUsize,
    flags: u32,
    tag: u32,
    name: [u8; 32],
    displace_unload: u8,
}

/// The mirrors above have the headers' layout (a mismatch fails the harness's build).
macro_rules! check_layout {
    ($($ty:ident = $c:ident { $($field:ident = $cfield:ident),* $(,)? })*) => {
        paste_free_checks! { $($ty $c { $($field $cfield)* })* }
    };
}

macro_rules! paste_free_checks {
    ($($ty:ident $c:ident { $($field:ident $cfield:ident)* })*) => {$(
        const _: () = assert!(size_of::<$ty>() == layout::$c, concat!("sizeof ", stringify!($c)));
        $(const _: () = assert!(
            offset_of!($ty, $field) == layout::$cfield,
            concat!(stringify!($c), ".", stringify!($cfield)),
        );)*
    )*};
}

check_layout! {
    DriverConfig = SIZEOF_WDF_DRIVER_CONFIG {
        device_add = OFFSET_WDF_DRIVER_CONFIG__EvtDriverDeviceAdd,
        unload = OFFSET_WDF_DRIVER_CONFIG__EvtDriverUnload,
        init_flags = OFFSET_WDF_DRIVER_CONFIG__DriverInitFlags,
        pool_tag = OFFSET_WDF_DRIVER_CONFIG__DriverPoolTag,
    }
    ObjectAttributes = SIZEOF_WDF_OBJECT_ATTRIBUTES {
        cleanup = OFFSET_WDF_OBJECT_ATTRIBUTES__EvtCleanupCallback,
        destroy = OFFSET_WDF_OBJECT_ATTRIBUTES__EvtDestroyCallback,
        execution_level = OFFSET_WDF_OBJECT_ATTRIBUTES__ExecutionLevel,
        synchronization_scope = OFFSET_WDF_OBJECT_ATTRIBUTES__SynchronizationScope,
        parent = OFFSET_WDF_OBJECT_ATTRIBUTES__ParentObject,
        context_size_override = OFFSET_WDF_OBJECT_ATTRIBUTES__ContextSizeOverride,
        context_type_info = OFFSET_WDF_OBJECT_ATTRIBUTES__ContextTypeInfo,
    }
    ContextTypeInfo = SIZEOF_WDF_OBJECT_CONTEXT_TYPE_INFO {
        name = OFFSET_WDF_OBJECT_CONTEXT_TYPE_INFO__ContextName,
        context_size = OFFSET_WDF_OBJECT_CONTEXT_TYPE_INFO__ContextSize,
        unique_type = OFFSET_WDF_OBJECT_CONTEXT_TYPE_INFO__UniqueType,
        get_unique = OFFSET_WDF_OBJECT_CONTEXT_TYPE_INFO__EvtDriverGetUniqueContextType,
    }
    PnpPowerCallbacks = SIZEOF_WDF_PNPPOWER_EVENT_CALLBACKS {
        d0_entry = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceD0Entry,
        d0_entry_post_interrupts_enabled = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceD0EntryPostInterruptsEnabled,
        d0_exit = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceD0Exit,
        d0_exit_pre_interrupts_disabled = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceD0ExitPreInterruptsDisabled,
        prepare_hardware = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDevicePrepareHardware,
        release_hardware = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceReleaseHardware,
        self_managed_io_cleanup = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceSelfManagedIoCleanup,
        self_managed_io_flush = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceSelfManagedIoFlush,
        self_managed_io_init = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceSelfManagedIoInit,
        self_managed_io_suspend = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceSelfManagedIoSuspend,
        self_managed_io_restart = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceSelfManagedIoRestart,
        surprise_removal = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceSurpriseRemoval,
        query_remove = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceQueryRemove,
        query_stop = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceQueryStop,
        usage_notification = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceUsageNotification,
        relations_query = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceRelationsQuery,
        usage_notification_ex = OFFSET_WDF_PNPPOWER_EVENT_CALLBACKS__EvtDeviceUsageNotificationEx,
    }
    WorkItemConfig = SIZEOF_WDF_WORKITEM_CONFIG {
        func = OFFSET_WDF_WORKITEM_CONFIG__EvtWorkItemFunc,
        automatic_serialization = OFFSET_WDF_WORKITEM_CONFIG__AutomaticSerialization,
    }
    TimerConfig = SIZEOF_WDF_TIMER_CONFIG {
        func = OFFSET_WDF_TIMER_CONFIG__EvtTimerFunc,
        period = OFFSET_WDF_TIMER_CONFIG__Period,
        automatic_serialization = OFFSET_WDF_TIMER_CONFIG__AutomaticSerialization,
        tolerable_delay = OFFSET_WDF_TIMER_CONFIG__TolerableDelay,
        use_high_resolution_timer = OFFSET_WDF_TIMER_CONFIG__UseHighResolutionTimer,
    }
    PowerPolicyCallbacks = SIZEOF_WDF_POWER_POLICY_EVENT_CALLBACKS {
        arm_wake_from_s0 = OFFSET_WDF_POWER_POLICY_EVENT_CALLBACKS__EvtDeviceArmWakeFromS0,
        disarm_wake_from_s0 = OFFSET_WDF_POWER_POLICY_EVENT_CALLBACKS__EvtDeviceDisarmWakeFromS0,
        wake_from_s0_triggered = OFFSET_WDF_POWER_POLICY_EVENT_CALLBACKS__EvtDeviceWakeFromS0Triggered,
        arm_wake_from_sx = OFFSET_WDF_POWER_POLICY_EVENT_CALLBACKS__EvtDeviceArmWakeFromSx,
        disarm_wake_from_sx = OFFSET_WDF_POWER_POLICY_EVENT_CALLBACKS__EvtDeviceDisarmWakeFromSx,
        wake_from_sx_triggered = OFFSET_WDF_POWER_POLICY_EVENT_CALLBACKS__EvtDeviceWakeFromSxTriggered,
        arm_wake_from_sx_with_reason = OFFSET_WDF_POWER_POLICY_EVENT_CALLBACKS__EvtDeviceArmWakeFromSxWithReason,
    }
    IdleSettings = SIZEOF_WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS {
        idle_caps = OFFSET_WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS__IdleCaps,
        dx_state = OFFSET_WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS__DxState,
        idle_timeout = OFFSET_WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS__IdleTimeout,
        user_control = OFFSET_WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS__UserControlOfIdleSettings,
        enabled = OFFSET_WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS__Enabled,
        power_up_on_system_wake = OFFSET_WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS__PowerUpIdleDeviceOnSystemWake,
        idle_timeout_type = OFFSET_WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS__IdleTimeoutType,
        exclude_d3_cold = OFFSET_WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS__ExcludeD3Cold,
    }
    WakeSettings = SIZEOF_WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS {
        dx_state = OFFSET_WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS__DxState,
        user_control = OFFSET_WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS__UserControlOfWakeSettings,
        enabled = OFFSET_WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS__Enabled,
        arm_for_wake_if_children_are_armed = OFFSET_WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS__ArmForWakeIfChildrenAreArmedForWake,
        indicate_child_wake_on_parent_wake = OFFSET_WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS__IndicateChildWakeOnParentWake,
    }
    FileObjectConfig = SIZEOF_WDF_FILEOBJECT_CONFIG {
        create = OFFSET_WDF_FILEOBJECT_CONFIG__EvtDeviceFileCreate,
        close = OFFSET_WDF_FILEOBJECT_CONFIG__EvtFileClose,
        cleanup = OFFSET_WDF_FILEOBJECT_CONFIG__EvtFileCleanup,
        auto_forward_cleanup_close = OFFSET_WDF_FILEOBJECT_CONFIG__AutoForwardCleanupClose,
        class = OFFSET_WDF_FILEOBJECT_CONFIG__FileObjectClass,
    }
    IoQueueConfig = SIZEOF_WDF_IO_QUEUE_CONFIG {
        dispatch_type = OFFSET_WDF_IO_QUEUE_CONFIG__DispatchType,
        power_managed = OFFSET_WDF_IO_QUEUE_CONFIG__PowerManaged,
        allow_zero_length = OFFSET_WDF_IO_QUEUE_CONFIG__AllowZeroLengthRequests,
        default_queue = OFFSET_WDF_IO_QUEUE_CONFIG__DefaultQueue,
        io_default = OFFSET_WDF_IO_QUEUE_CONFIG__EvtIoDefault,
        io_read = OFFSET_WDF_IO_QUEUE_CONFIG__EvtIoRead,
        io_write = OFFSET_WDF_IO_QUEUE_CONFIG__EvtIoWrite,
        io_device_control = OFFSET_WDF_IO_QUEUE_CONFIG__EvtIoDeviceControl,
        io_internal_device_control = OFFSET_WDF_IO_QUEUE_CONFIG__EvtIoInternalDeviceControl,
        io_stop = OFFSET_WDF_IO_QUEUE_CONFIG__EvtIoStop,
        io_resume = OFFSET_WDF_IO_QUEUE_CONFIG__EvtIoResume,
        io_canceled_on_queue = OFFSET_WDF_IO_QUEUE_CONFIG__EvtIoCanceledOnQueue,
        number_of_presented_requests = OFFSET_WDF_IO_QUEUE_CONFIG__Settings_Parallel_NumberOfPresentedRequests,
        driver = OFFSET_WDF_IO_QUEUE_CONFIG__Driver,
    }
    RequestParameters = SIZEOF_WDF_REQUEST_PARAMETERS {
        minor_function = OFFSET_WDF_REQUEST_PARAMETERS__MinorFunction,
        request_type = OFFSET_WDF_REQUEST_PARAMETERS__Type,
        length = OFFSET_WDF_REQUEST_PARAMETERS__Parameters_Read_Length,
        length = OFFSET_WDF_REQUEST_PARAMETERS__Parameters_Write_Length,
        length = OFFSET_WDF_REQUEST_PARAMETERS__Parameters_DeviceIoControl_OutputBufferLength,
        input_length = OFFSET_WDF_REQUEST_PARAMETERS__Parameters_DeviceIoControl_InputBufferLength,
        code = OFFSET_WDF_REQUEST_PARAMETERS__Parameters_DeviceIoControl_IoControlCode,
        type3_input_buffer = OFFSET_WDF_REQUEST_PARAMETERS__Parameters_DeviceIoControl_Type3InputBuffer,
    }
    Guid = SIZEOF_GUID {
        data1 = OFFSET_GUID__Data1,
        data2 = OFFSET_GUID__Data2,
        data3 = OFFSET_GUID__Data3,
        data4 = OFFSET_GUID__Data4,
    }
    UnicodeString = SIZEOF_UNICODE_STRING {
        length = OFFSET_UNICODE_STRING__Length,
        maximum_length = OFFSET_UNICODE_STRING__MaximumLength,
        buffer = OFFSET_UNICODE_STRING__Buffer,
    }
    DriverGlobals = SIZEOF_WDF_DRIVER_GLOBALS {
        driver = OFFSET_WDF_DRIVER_GLOBALS__Driver,
        flags = OFFSET_WDF_DRIVER_GLOBALS__DriverFlags,
        tag = OFFSET_WDF_DRIVER_GLOBALS__DriverTag,
        name = OFFSET_WDF_DRIVER_GLOBALS__DriverName,
        displace_unload = OFFSET_WDF_DRIVER_GLOBALS__DisplaceDriverUnload,
    }
}

/// The driver's globals (`WdfDriverGlobals`).
pub static GLOBALS: DriverGlobals = DriverGlobals {
    driver: AtomicUsize::new(0),
    flags: 0,
    tag: 0,
    name: [0; 32],
    displace_unload: 0,
};

/// Ends the run: the driver broke a KMDF rule, or called what the harness lacks.
fn fail(ddi: &str, message: &str) -> ! {
    report::bug_check(&format!("{ddi}: {message}"))
}

/// Checks a structure's `Size` against the KMDF 1.33 header's `sizeof`.
fn check_size(ddi: &str, structure: &str, size: u32, expected: usize) {
    if size as usize != expected {
        fail(
            ddi,
            &format!(
                "{structure}.Size is {size}, but sizeof({structure}) is {expected} in the KMDF \
                 1.33 headers: the driver's structure does not match the framework's"
            ),
        );
    }
}

/// `SYS_HARNESS_DDI=log`: every WDF call on stderr as it is made; `count`: a count of each
/// at the end (see [`print_counts`]). Either changes stderr, so not for `sys-diff`.
static DDI_MODE: std::sync::LazyLock<Option<String>> =
    std::sync::LazyLock::new(|| std::env::var("SYS_HARNESS_DDI").ok());
static DDI_COUNTS: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

/// Prints the counts of `SYS_HARNESS_DDI=count`, and of the CR8 accesses emulated.
pub fn print_counts() {
    if DDI_MODE.as_deref() != Some("count") {
        return;
    }
    let counts = DDI_COUNTS.lock().unwrap_or_else(PoisonError::into_inner);
    for (ddi, count) in counts.iter() {
        eprintln!("sys-harness: {count:6} {ddi}");
    }
    let reads = crate::cpu::CR8_READS.load(Ordering::Relaxed);
    let writes = crate::cpu::CR8_WRITES.load(Ordering::Relaxed);
    eprintln!("sys-harness: {reads:6} CR8 reads, {writes} CR8 writes emulated");
}

fn check_globals(ddi: &'static str, globals: *const DriverGlobals) {
    match DDI_MODE.as_deref() {
        Some("log") => eprintln!("sys-harness: {ddi} (IRQL {})", raw::current_irql()),
        Some("count") => {
            let mut counts = DDI_COUNTS.lock().unwrap_or_else(PoisonError::into_inner);
            match counts.iter_mut().find(|(name, _)| *name == ddi) {
                Some((_, count)) => *count += 1,
                None => counts.push((ddi, 1)),
            }
        }
        _ => {}
    }
    if !std::ptr::eq(globals, &raw const GLOBALS) {
        fail(
            ddi,
            &format!("called with DriverGlobals {globals:p}, not the ones WdfVersionBind gave"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// The handle table.

/// A zero-filled context allocation.
struct Blob {
    pointer: *mut u8,
    layout: Layout,
}

// SAFETY: the blob is plain memory the driver reaches through its own pointers; the harness
// only allocates and frees it.
unsafe impl Send for Blob {}
// SAFETY: as above.
unsafe impl Sync for Blob {}

impl Blob {
    fn new(size: usize) -> Self {
        let layout = Layout::from_size_align(size.max(1), 16).expect("a context size");
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { alloc_zeroed(layout) };
        assert!(!pointer.is_null(), "out of memory");
        Self { pointer, layout }
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.pointer, self.layout) };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Driver,
    Device,
    WorkItem,
    Timer,
    SpinLock,
    ResourceList,
    Queue,
    File,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Driver => "WDFDRIVER",
            Kind::Device => "WDFDEVICE",
            Kind::WorkItem => "WDFWORKITEM",
            Kind::Timer => "WDFTIMER",
            Kind::SpinLock => "WDFSPINLOCK",
            Kind::ResourceList => "WDFCMRESLIST",
            Kind::Queue => "WDFQUEUE",
            Kind::File => "WDFFILEOBJECT",
        }
    }
}

/// A spin lock: the owner's thread id, 0 when free.
#[derive(Default)]
struct SpinLock {
    owner: AtomicU64,
}

struct Entry {
    kind: Kind,
    object: WeakObject,
    contexts: Vec<(usize, Arc<Blob>)>,
    references: Vec<Object>,
    parent: usize,
    lock: Option<Arc<SpinLock>>,
    resource_count: u32,
}

impl Entry {
    fn new(kind: Kind, parent: usize) -> Self {
        Self {
            kind,
            object: WeakObject::default(),
            contexts: Vec::new(),
            references: Vec::new(),
            parent,
            lock: None,
            resource_count: 0,
        }
    }
}

static TABLE: Mutex<Option<HashMap<usize, Entry>>> = Mutex::new(None);
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(1);

fn table() -> MutexGuard<'static, Option<HashMap<usize, Entry>>> {
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn with_table<R>(f: impl FnOnce(&mut HashMap<usize, Entry>) -> R) -> R {
    f(table().get_or_insert_with(HashMap::new))
}

/// A new handle value: never dereferenced by the kernel backend (a `&Device<T>` is a
/// zero-sized view of it), distinct from every address the driver uses.
fn new_handle() -> usize {
    0x7e00_0000_0000 + NEXT_HANDLE.fetch_add(1, Ordering::Relaxed) * 0x10
}

/// The identity KMDF finds a context by: the type info's `UniqueType` when set.
fn type_key(info: *const ContextTypeInfo) -> usize {
    if info.is_null() {
        return 0;
    }
    // SAFETY: a non-null type info from the driver: static data of its image.
    let unique = unsafe { (*info).unique_type };
    if unique.is_null() { info as usize } else { unique as usize }
}

/// Registers `handle` with the contexts `attributes` asks for.
fn register(
    ddi: &str,
    handle: usize,
    kind: Kind,
    parent: usize,
    attributes: Option<&ObjectAttributes>,
) {
    let mut entry = Entry::new(kind, parent);
    if let Some(attributes) = attributes
        && !attributes.context_type_info.is_null()
    {
        // SAFETY: a non-null type info from the driver: static data of its image.
        let info = unsafe { &*attributes.context_type_info };
        check_size(
            ddi,
            "WDF_OBJECT_CONTEXT_TYPE_INFO",
            info.size,
            layout::SIZEOF_WDF_OBJECT_CONTEXT_TYPE_INFO,
        );
        let size = if attributes.context_size_override != 0 {
            if attributes.context_size_override < info.context_size {
                fail(ddi, "ContextSizeOverride is smaller than the type's ContextSize");
            }
            attributes.context_size_override
        } else {
            info.context_size
        };
        entry.contexts.push((type_key(attributes.context_type_info), Arc::new(Blob::new(size))));
    }
    with_table(|table| table.insert(handle, entry));
}

fn set_object(handle: usize, object: &Object) {
    with_table(|table| {
        if let Some(entry) = table.get_mut(&handle) {
            entry.object = object.downgrade();
        }
    });
}

/// The runtime's object of `handle`, which must be of `kind`.
fn object(ddi: &str, handle: usize, kinds: &[Kind]) -> Object {
    let found =
        with_table(|table| table.get(&handle).map(|entry| (entry.kind, entry.object.upgrade())));
    match found {
        Some((kind, Some(object))) if kinds.contains(&kind) => object,
        Some((kind, _)) if !kinds.contains(&kind) => {
            fail(ddi, &format!("handle {handle:#x} is a {}, not a {}", kind.name(), names(kinds)))
        }
        Some(_) => fail(ddi, &format!("handle {handle:#x} is an object already destroyed")),
        None => fail(ddi, &format!("{handle:#x} is not a live {} handle", names(kinds))),
    }
}

fn names(kinds: &[Kind]) -> String {
    kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(" or ")
}

fn forget(handle: usize) -> Option<Entry> {
    with_table(|table| table.remove(&handle))
}

/// The attributes a DDI got, checked.
fn attributes<'a>(ddi: &str, attributes: *const ObjectAttributes) -> Option<&'a ObjectAttributes> {
    if attributes.is_null() {
        return None;
    }
    // SAFETY: a non-null WDF_OBJECT_ATTRIBUTES the driver passed, valid for the call.
    let attributes = unsafe { &*attributes };
    check_size(ddi, "WDF_OBJECT_ATTRIBUTES", attributes.size, layout::SIZEOF_WDF_OBJECT_ATTRIBUTES);
    Some(attributes)
}

/// The context of the runtime's objects the harness creates: the C callbacks.
pub struct CObject {
    handle: usize,
    cleanup: Evt,
    destroy: Evt,
    run: Evt,
    pnp: PnpPowerCallbacks,
    policy: PowerPolicyCallbacks,
    /// A device's `WDF_FILEOBJECT_CONFIG`, if `WdfDeviceInitSetFileObjectConfig` set one.
    file: Option<FileObjectConfig>,
    /// A device's file objects' attributes (`WdfDeviceInitSetFileObjectConfig`).
    file_attributes: Option<SendAttributes>,
    /// A queue's `WDF_IO_QUEUE_CONFIG`.
    queue: Option<IoQueueConfig>,
    /// Set once the runtime created the object: before, there is nothing to destroy.
    created: AtomicBool,
}

impl CObject {
    fn new(handle: usize, attributes: Option<&ObjectAttributes>) -> Self {
        Self {
            handle,
            cleanup: attributes.and_then(|a| a.cleanup),
            destroy: attributes.and_then(|a| a.destroy),
            run: None,
            pnp: PnpPowerCallbacks::default(),
            policy: PowerPolicyCallbacks::default(),
            file: None,
            file_attributes: None,
            queue: None,
            created: AtomicBool::new(false),
        }
    }
}

impl Hooks for CObject {
    fn cleanup(&self, _object: &Object) {
        if let Some(cleanup) = self.cleanup {
            cleanup(self.handle);
        }
    }

    fn run(&self, _object: &Object, _parent: &Object) {
        if let Some(run) = self.run {
            run(self.handle);
        }
    }

    fn pnp(
        &self,
        _device: &Object,
        callback: Callback,
        power_state: Option<DevicePowerState>,
        resources: &AssignedResources,
    ) -> kmdf::Result {
        if POLICY_FIELDS.iter().any(|(c, _, _)| *c == callback) {
            return call_policy(self.handle, &self.policy, callback);
        }
        call_pnp(self.handle, &self.pnp, callback, power_state, resources)
    }

    fn queue(&self, _queue: &Object, _device: &Object, event: raw::QueueEvent<'_>) {
        call_queue(self.handle, &self.queue.unwrap_or_default(), event);
    }

    fn file_create(&self, _device: &Object, file: &Object) -> kmdf::Result<Box<dyn Hooks>> {
        const DDI: &str = "EvtDeviceFileCreate";
        // The runtime calls this only on a device with a WDF_FILEOBJECT_CONFIG.
        let config = self.file.unwrap_or_default();
        let attributes = self.file_attributes.as_ref().map(|a| &a.0);
        let handle = new_handle();
        register(DDI, handle, Kind::File, self.handle, attributes);
        set_object(handle, file);
        let request = requests::new_create();
        if config.create != 0 {
            type Create = extern "win64" fn(usize, usize, usize);
            // SAFETY: the non-null EvtDeviceFileCreate of the WDF_FILEOBJECT_CONFIG, of the
            // header's type.
            let create = unsafe { std::mem::transmute::<usize, Create>(config.create) };
            create(self.handle, request, handle);
        } else {
            // No EvtDeviceFileCreate: KMDF completes the create with success.
            requests::complete_create(request, 0);
        }
        let Some(status) = requests::take_create(request) else {
            fail(
                DDI,
                "returned without completing the create request (a create completed later is \
                 not modelled)",
            );
        };
        let mut hooks = CObject::new(handle, attributes);
        hooks.file = Some(config);
        // KMDF destroys the file object, created, also when the create fails.
        hooks.created.store(true, Ordering::SeqCst);
        match NtStatus::from_raw(status).ok() {
            Ok(()) => Ok(Box::new(hooks)),
            Err(error) => {
                drop(hooks);
                Err(error)
            }
        }
    }

    fn file_cleanup(&self, _file: &Object, _device: &Object) {
        let address = self.file.map_or(0, |config| config.cleanup);
        if address != 0 {
            // SAFETY: the non-null EvtFileCleanup of the WDF_FILEOBJECT_CONFIG, of the
            // header's type.
            let cleanup =
                unsafe { std::mem::transmute::<usize, extern "win64" fn(usize)>(address) };
            cleanup(self.handle);
        }
    }

    fn file_close(&self, _file: &Object, _device: &Object) {
        let address = self.file.map_or(0, |config| config.close);
        if address != 0 {
            // SAFETY: the non-null EvtFileClose of the WDF_FILEOBJECT_CONFIG, of the
            // header's type.
            let close = unsafe { std::mem::transmute::<usize, extern "win64" fn(usize)>(address) };
            close(self.handle);
        }
    }
}

/// `WDF_OBJECT_ATTRIBUTES` kept for later creations (a device's file objects').
#[derive(Clone, Copy)]
struct SendAttributes(ObjectAttributes);

// SAFETY: the attributes hold function addresses and a type info pointer into the image's
// static data, read only.
unsafe impl Send for SendAttributes {}
// SAFETY: as above.
unsafe impl Sync for SendAttributes {}

/// The queue `queue`'s callback for `event`, from its `WDF_IO_QUEUE_CONFIG`.
fn call_queue(queue: usize, config: &IoQueueConfig, event: raw::QueueEvent<'_>) {
    type One = extern "win64" fn(usize, usize);
    type Length = extern "win64" fn(usize, usize, usize);
    type Control = extern "win64" fn(usize, usize, usize, usize, u32);
    type StopFn = extern "win64" fn(usize, usize, u32);
    let callback = event.callback();
    let address = match callback {
        Callback::IoRead => config.io_read,
        Callback::IoWrite => config.io_write,
        Callback::IoDeviceControl => config.io_device_control,
        Callback::IoInternalDeviceControl => config.io_internal_device_control,
        Callback::IoDefault => config.io_default,
        Callback::IoStop => config.io_stop,
        Callback::IoResume => config.io_resume,
        Callback::IoCanceledOnQueue => config.io_canceled_on_queue,
        Callback::RequestCancel => 0,
        _ => fail(callback.kmdf_name(), "not modelled by the harness"),
    };
    if address == 0 && callback != Callback::RequestCancel {
        fail(callback.kmdf_name(), "the runtime called a callback the queue did not register");
    }
    // SAFETY (each transmute below): `address` is the non-null function the driver
    // registered in the WDF_IO_QUEUE_CONFIG field of `callback`, of the header's type: the
    // one transmuted to.
    match event {
        raw::QueueEvent::Read(request, length) | raw::QueueEvent::Write(request, length) => {
            let handle = requests::present(queue, request);
            // SAFETY: see above.
            let f = unsafe { std::mem::transmute::<usize, Length>(address) };
            f(queue, handle, length);
        }
        raw::QueueEvent::DeviceControl(request, output, input, code)
        | raw::QueueEvent::InternalDeviceControl(request, output, input, code) => {
            let handle = requests::present(queue, request);
            // SAFETY: see above.
            let f = unsafe { std::mem::transmute::<usize, Control>(address) };
            f(queue, handle, output, input, code);
        }
        raw::QueueEvent::Default(request) | raw::QueueEvent::CanceledOnQueue(request) => {
            let handle = requests::present(queue, request);
            // SAFETY: see above.
            let f = unsafe { std::mem::transmute::<usize, One>(address) };
            f(queue, handle);
        }
        raw::QueueEvent::Stop(stop) => {
            let handle = requests::handle_of(stop.id());
            let mut flags = match stop.action() {
                kmdf::io_queue::StopAction::Suspend => layout::VALUE_WdfRequestStopActionSuspend,
                kmdf::io_queue::StopAction::Purge => layout::VALUE_WdfRequestStopActionPurge,
            };
            if stop.cancelable() {
                flags |= layout::VALUE_WdfRequestStopRequestCancelable;
            }
            // SAFETY: see above.
            let f = unsafe { std::mem::transmute::<usize, StopFn>(address) };
            requests::with_stop(&stop, || f(queue, handle, flags.cast_unsigned()));
        }
        raw::QueueEvent::Resume(id) => {
            let handle = requests::handle_of(id);
            // SAFETY: see above.
            let f = unsafe { std::mem::transmute::<usize, One>(address) };
            f(queue, handle);
        }
        raw::QueueEvent::Cancel(request) => requests::cancel(request),
        raw::QueueEvent::ReadyNotify => {
            fail("EvtIoQueueState", "WdfIoQueueReadyNotify is not implemented by the harness")
        }
    }
}

/// The harness's `WDFREQUEST`s: a handle per request the runtime hands to the driver, for
/// its whole life (presented, cancelable, cancelled, completed while references remain),
/// so that the kernel backend's request id (the handle) is the same in every callback.
mod requests {
    use std::cell::Cell;
    use std::collections::HashMap;
    use std::sync::{Mutex, MutexGuard, PoisonError};

    use kmdf::host::raw;
    use kmdf::request::Parameters;

    use super::{fail, new_handle};

    pub(super) struct Entry {
        /// The runtime's id; 0 for a create request.
        pub(super) id: u64,
        pub(super) queue: usize,
        pub(super) parameters: Option<Parameters>,
        /// The request, while the driver owns it and it is not marked cancelable.
        pub(super) value: Option<raw::Request>,
        /// The claim, while it is marked cancelable (or until unmarked after a cancel).
        pub(super) claim: Option<raw::Cancelable>,
        pub(super) cancel: Option<extern "win64" fn(usize)>,
        /// A create request's completion status.
        pub(super) create_status: Option<i32>,
        pub(super) completed: bool,
        pub(super) references: usize,
    }

    #[derive(Default)]
    pub(super) struct Table {
        pub(super) entries: HashMap<usize, Entry>,
        by_id: HashMap<u64, usize>,
    }

    static TABLE: Mutex<Option<Table>> = Mutex::new(None);

    thread_local! {
        /// The `EvtIoStop` running on this thread: its request's id and its `raw::Stop`.
        static STOP: Cell<(u64, usize)> = const { Cell::new((0, 0)) };
    }

    pub(super) fn with<R>(f: impl FnOnce(&mut Table) -> R) -> R {
        let mut guard: MutexGuard<'_, Option<Table>> =
            TABLE.lock().unwrap_or_else(PoisonError::into_inner);
        f(guard.get_or_insert_with(Table::default))
    }

    fn entry(id: u64, queue: usize, parameters: Option<Parameters>) -> Entry {
        Entry {
            id,
            queue,
            parameters,
            value: None,
            claim: None,
            cancel: None,
            create_status: None,
            completed: false,
            references: 0,
        }
    }

    /// A request presented (or handed) by `queue`: its handle, the same as before if the
    /// driver had it before (a requeued or forwarded request).
    pub(super) fn present(queue: usize, request: raw::Request) -> usize {
        let id = request.id();
        let parameters = request.parameters();
        with(|table| {
            let handle = if let Some(&handle) = table.by_id.get(&id) {
                handle
            } else {
                let handle = new_handle();
                table.by_id.insert(id, handle);
                table.entries.insert(handle, entry(id, queue, Some(parameters)));
                handle
            };
            let entry = table.entries.get_mut(&handle).expect("inserted");
            entry.queue = queue;
            entry.value = Some(request);
            handle
        })
    }

    /// A create request, for `EvtDeviceFileCreate`.
    pub(super) fn new_create() -> usize {
        let handle = new_handle();
        with(|table| table.entries.insert(handle, entry(0, 0, None)));
        handle
    }

    pub(super) fn complete_create(handle: usize, status: i32) {
        with(|table| {
            if let Some(entry) = table.entries.get_mut(&handle) {
                entry.create_status = Some(status);
                entry.completed = true;
            }
        });
    }

    /// The create request's status, once completed; the handle goes (unless referenced).
    pub(super) fn take_create(handle: usize) -> Option<i32> {
        with(|table| {
            let status = table.entries.get(&handle)?.create_status;
            if table.entries.get(&handle).is_some_and(|e| e.references == 0) {
                table.entries.remove(&handle);
            }
            status
        })
    }

    /// The handle of the request `id`, which the driver had before.
    pub(super) fn handle_of(id: u64) -> usize {
        with(|table| table.by_id.get(&id).copied())
            .unwrap_or_else(|| fail("the harness", &format!("request {id} has no WDFREQUEST")))
    }

    /// `EvtRequestCancel`: the request is the driver's again, for its cancel routine.
    pub(super) fn cancel(request: raw::Request) {
        let id = request.id();
        let handle = handle_of(id);
        let routine = with(|table| {
            let entry = table.entries.get_mut(&handle).expect("found by id");
            entry.value = Some(request);
            entry.cancel.take()
        });
        let Some(routine) = routine else {
            fail("EvtRequestCancel", "a cancelled request has no cancel routine");
        };
        routine(handle);
    }

    /// Runs `f` (the driver's `EvtIoStop`) with `stop` as this thread's stop.
    pub(super) fn with_stop(stop: &raw::Stop<'_>, f: impl FnOnce()) {
        let previous = STOP.replace((stop.id(), std::ptr::from_ref(stop).addr()));
        f();
        STOP.set(previous);
    }

    /// Calls `f` with the stop of request `id` running on this thread, if any.
    pub(super) fn current_stop<R>(id: u64, f: impl FnOnce(&raw::Stop<'_>) -> R) -> Option<R> {
        let (stop_id, address) = STOP.get();
        if address == 0 || stop_id != id {
            return None;
        }
        // SAFETY: `with_stop` set the address of a `raw::Stop` that lives on this thread's
        // stack for the `EvtIoStop` call in progress (this is inside it), and resets it after.
        let stop = unsafe { &*(address as *const raw::Stop<'_>) };
        Some(f(stop))
    }

    /// Forgets a completed request nobody references any more.
    pub(super) fn release(table: &mut Table, handle: usize) {
        if let Some(entry) = table.entries.get(&handle)
            && entry.completed
            && entry.references == 0
        {
            let entry = table.entries.remove(&handle).expect("found");
            if entry.id != 0 {
                table.by_id.remove(&entry.id);
            }
        }
    }
}

impl Drop for CObject {
    fn drop(&mut self) {
        if self.created.load(Ordering::SeqCst)
            && let Some(destroy) = self.destroy
        {
            destroy(self.handle);
        }
        // The blobs go after the destroy callback, which drops what they hold.
        let entry = forget(self.handle);
        drop(entry);
    }
}

/// Calls the driver's PnP/power callback `callback` with its own signature.
fn call_pnp(
    device: usize,
    callbacks: &PnpPowerCallbacks,
    callback: Callback,
    power_state: Option<DevicePowerState>,
    resources: &AssignedResources,
) -> kmdf::Result {
    type Status = extern "win64" fn(usize) -> i32;
    type Void = extern "win64" fn(usize);
    type Power = extern "win64" fn(usize, i32) -> i32;
    type Prepare = extern "win64" fn(usize, usize, usize) -> i32;
    type Release = extern "win64" fn(usize, usize) -> i32;
    let address = field(callbacks, callback);
    assert!(address != 0, "the runtime calls only registered callbacks");
    let state = power_state.map_or(0, DevicePowerState::to_raw);
    // SAFETY (each transmute below): `address` is the non-null function the driver
    // registered in the WDF_PNPPOWER_EVENT_CALLBACKS field of `callback`, whose type the
    // header gives: the one transmuted to.
    let status = match callback {
        Callback::PrepareHardware | Callback::ReleaseHardware => {
            let translated = resource_list(resources.translated().len());
            let status = if callback == Callback::PrepareHardware {
                let raw = resource_list(resources.raw().len());
                // SAFETY: see above.
                let f = unsafe { std::mem::transmute::<usize, Prepare>(address) };
                let status = f(device, raw, translated);
                forget(raw);
                status
            } else {
                // SAFETY: see above.
                let f = unsafe { std::mem::transmute::<usize, Release>(address) };
                f(device, translated)
            };
            forget(translated);
            status
        }
        Callback::D0Entry
        | Callback::D0EntryPostInterruptsEnabled
        | Callback::D0ExitPreInterruptsDisabled
        | Callback::D0Exit => {
            // SAFETY: see above.
            let f = unsafe { std::mem::transmute::<usize, Power>(address) };
            f(device, state)
        }
        Callback::SurpriseRemoval
        | Callback::SelfManagedIoFlush
        | Callback::SelfManagedIoCleanup => {
            // SAFETY: see above.
            let f = unsafe { std::mem::transmute::<usize, Void>(address) };
            f(device);
            0
        }
        _ => {
            // SAFETY: see above.
            let f = unsafe { std::mem::transmute::<usize, Status>(address) };
            f(device)
        }
    };
    NtStatus::from_raw(status).ok()
}

fn resource_list(count: usize) -> usize {
    let handle = new_handle();
    let mut entry = Entry::new(Kind::ResourceList, 0);
    entry.resource_count = u32::try_from(count).unwrap_or(u32::MAX);
    with_table(|table| table.insert(handle, entry));
    handle
}

/// Calls the driver's power-policy callback `callback` with its own signature.
fn call_policy(
    device: usize,
    callbacks: &PowerPolicyCallbacks,
    callback: Callback,
) -> kmdf::Result {
    type Status = extern "win64" fn(usize) -> i32;
    type Void = extern "win64" fn(usize);
    let address = POLICY_FIELDS
        .iter()
        .find(|(c, _, _)| *c == callback)
        .map_or(0, |(_, get, _)| get(callbacks));
    assert!(address != 0, "the runtime calls only registered callbacks");
    // SAFETY (each transmute below): `address` is the non-null function the driver
    // registered in the WDF_POWER_POLICY_EVENT_CALLBACKS field of `callback`, whose type the
    // header gives: `NTSTATUS (WDFDEVICE)` to arm, `VOID (WDFDEVICE)` otherwise.
    let status = if callback.is_fallible() {
        // SAFETY: see above.
        let f = unsafe { std::mem::transmute::<usize, Status>(address) };
        f(device)
    } else {
        // SAFETY: see above.
        let f = unsafe { std::mem::transmute::<usize, Void>(address) };
        f(device);
        0
    };
    NtStatus::from_raw(status).ok()
}

type PolicyGetter = fn(&PowerPolicyCallbacks) -> usize;

/// The fields of `WDF_POWER_POLICY_EVENT_CALLBACKS` the runtime models, with the callback
/// each registers and the kernel backend's trampoline for it
/// (`kmdf::kernel::power_policy::NAME`).
const POLICY_FIELDS: [(Callback, PolicyGetter, &str); 6] = [
    (Callback::ArmWakeFromS0, |c| c.arm_wake_from_s0, "arm_wake_from_s0"),
    (Callback::DisarmWakeFromS0, |c| c.disarm_wake_from_s0, "disarm_wake_from_s0"),
    (Callback::WakeFromS0Triggered, |c| c.wake_from_s0_triggered, "wake_from_s0_triggered"),
    (Callback::ArmWakeFromSx, |c| c.arm_wake_from_sx, "arm_wake_from_sx"),
    (Callback::DisarmWakeFromSx, |c| c.disarm_wake_from_sx, "disarm_wake_from_sx"),
    (Callback::WakeFromSxTriggered, |c| c.wake_from_sx_triggered, "wake_from_sx_triggered"),
];

/// The field of `callbacks` that registers `callback`, and its header name.
fn field(callbacks: &PnpPowerCallbacks, callback: Callback) -> usize {
    FIELDS.iter().find(|(c, _, _)| *c == callback).map_or(0, |(_, get, _)| get(callbacks))
}

type Getter = fn(&PnpPowerCallbacks) -> usize;

/// The fields of `WDF_PNPPOWER_EVENT_CALLBACKS` the runtime models, with the callback each
/// registers and the kernel backend's trampoline for it (`kmdf::kernel::device::NAME`).
const FIELDS: [(Callback, Getter, &str); 14] = [
    (Callback::D0Entry, |c| c.d0_entry, "d0_entry"),
    (
        Callback::D0EntryPostInterruptsEnabled,
        |c| c.d0_entry_post_interrupts_enabled,
        "d0_entry_post_interrupts_enabled",
    ),
    (Callback::D0Exit, |c| c.d0_exit, "d0_exit"),
    (
        Callback::D0ExitPreInterruptsDisabled,
        |c| c.d0_exit_pre_interrupts_disabled,
        "d0_exit_pre_interrupts_disabled",
    ),
    (Callback::PrepareHardware, |c| c.prepare_hardware, "prepare_hardware"),
    (Callback::ReleaseHardware, |c| c.release_hardware, "release_hardware"),
    (Callback::SelfManagedIoCleanup, |c| c.self_managed_io_cleanup, "self_managed_io_cleanup"),
    (Callback::SelfManagedIoFlush, |c| c.self_managed_io_flush, "self_managed_io_flush"),
    (Callback::SelfManagedIoInit, |c| c.self_managed_io_init, "self_managed_io_init"),
    (Callback::SelfManagedIoSuspend, |c| c.self_managed_io_suspend, "self_managed_io_suspend"),
    (Callback::SelfManagedIoRestart, |c| c.self_managed_io_restart, "self_managed_io_restart"),
    (Callback::SurpriseRemoval, |c| c.surprise_removal, "surprise_removal"),
    (Callback::QueryRemove, |c| c.query_remove, "query_remove"),
    (Callback::QueryStop, |c| c.query_stop, "query_stop"),
];

/// With the image's link map: a registered function that is one of the kernel backend's
/// PnP trampolines must be the one of its field (`kmdf::kernel::device::d0_entry` in
/// `EvtDeviceD0Entry`): a callback registered in the wrong field shows here, by name.
fn check_fields(ddi: &str, callbacks: &PnpPowerCallbacks) {
    let fields: Vec<(Callback, usize, &str)> =
        FIELDS.iter().map(|(c, get, name)| (*c, get(callbacks), *name)).collect();
    check_trampolines(ddi, "WDF_PNPPOWER_EVENT_CALLBACKS", "device", &fields);
}

/// As [`check_fields`], for `WDF_POWER_POLICY_EVENT_CALLBACKS` and the trampolines of
/// `kmdf::kernel::power_policy`.
fn check_policy_fields(ddi: &str, callbacks: &PowerPolicyCallbacks) {
    let fields: Vec<(Callback, usize, &str)> =
        POLICY_FIELDS.iter().map(|(c, get, name)| (*c, get(callbacks), *name)).collect();
    check_trampolines(ddi, "WDF_POWER_POLICY_EVENT_CALLBACKS", "power_policy", &fields);
}

/// Each registered address in `fields` (callback, address, trampoline name) that is one of
/// the trampolines of `kmdf::kernel::MODULE` must be its own field's.
fn check_trampolines(ddi: &str, structure: &str, module: &str, fields: &[(Callback, usize, &str)]) {
    let Some(symbols) = report::SYMBOLS.get() else { return };
    // Legacy mangling: _ZN4kmdf6kernel<len><module><len><name>...
    let prefix = format!("4kmdf6kernel{}{module}", module.len());
    for &(callback, address, expected) in fields {
        if address == 0 {
            continue;
        }
        // Folded functions share an address, so any of its names may be the expected one.
        let trampolines: Vec<&str> = symbols
            .names_at(address)
            .iter()
            .filter_map(|symbol| {
                let rest = symbol.split(prefix.as_str()).nth(1)?;
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let length = digits.parse::<usize>().ok()?;
                rest.get(digits.len()..digits.len() + length)
            })
            .collect();
        if trampolines.is_empty() || trampolines.contains(&expected) {
            continue;
        }
        let name = trampolines.join(" = ");
        fail(
            ddi,
            &format!(
                "{structure}.{} holds kmdf::kernel::{module}::{name}, the trampoline of another \
                 callback (expected kmdf::kernel::{module}::{expected})",
                callback
                    .kmdf_name()
                    .replacen("Evt", "EvtDevice", 1)
                    .replace("EvtDeviceDevice", "EvtDevice")
            ),
        );
    }
}

/// The callbacks registered in `callbacks` and `policy`.
fn registered(callbacks: &PnpPowerCallbacks, policy: &PowerPolicyCallbacks) -> Vec<Callback> {
    let pnp = FIELDS.iter().filter(|(_, get, _)| get(callbacks) != 0).map(|(c, _, _)| *c);
    let policy = POLICY_FIELDS.iter().filter(|(_, get, _)| get(policy) != 0).map(|(c, _, _)| *c);
    pnp.chain(policy).collect()
}

// ---------------------------------------------------------------------------------------
// The driver.

/// What `WdfDriverCreate` registered, until `DriverEntry` returns.
pub struct CDriver {
    pub handle: usize,
    device_add: Option<extern "win64" fn(usize, usize) -> i32>,
    unload: Evt,
    destroy: Evt,
}

/// The driver `WdfDriverCreate` created during the current `DriverEntry`.
pub static CREATED_DRIVER: Mutex<Option<CDriver>> = Mutex::new(None);

impl DriverHooks for CDriver {
    fn device_add(&self, init: DeviceInit<'_>) -> kmdf::Result {
        let Some(device_add) = self.device_add else {
            return Err(NtError::NOT_SUPPORTED);
        };
        let mut state = InitState {
            init: Some(init),
            callbacks: None,
            policy: None,
            file: None,
            file_attributes: None,
        };
        let status = device_add(self.handle, (&raw mut state).addr());
        NtStatus::from_raw(status).ok()
    }

    fn unload(&self) {
        if let Some(unload) = self.unload {
            unload(self.handle);
        }
    }
}

impl Drop for CDriver {
    fn drop(&mut self) {
        if let Some(destroy) = self.destroy {
            destroy(self.handle);
        }
        // The driver's locks (children of the driver object) go with it.
        let handle = self.handle;
        let children: Vec<Entry> = with_table(|table| {
            let keys: Vec<usize> = table
                .iter()
                .filter(|(_, e)| e.parent == handle && e.kind == Kind::SpinLock)
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| table.remove(k)).collect()
        });
        drop(children);
        drop(forget(handle));
        GLOBALS.driver.store(0, Ordering::SeqCst);
    }
}

/// The harness's `WDFDEVICE_INIT`: the runtime's `DeviceInit`, and the callbacks set on it.
struct InitState<'a> {
    init: Option<DeviceInit<'a>>,
    callbacks: Option<PnpPowerCallbacks>,
    policy: Option<PowerPolicyCallbacks>,
    file: Option<FileObjectConfig>,
    file_attributes: Option<SendAttributes>,
}

/// `WDFLDR.SYS`'s exports.
pub fn resolve_loader(name: &str) -> Option<usize> {
    match name {
        "WdfVersionBind" => Some(wdf_version_bind as *const () as usize),
        "WdfVersionUnbind" => Some(wdf_version_unbind as *const () as usize),
        _ => None,
    }
}

/// `WDF_BIND_INFO` (fxldr.h).
#[repr(C)]
pub struct BindInfo {
    size: u32,
    component: *const u16,
    major: u32,
    minor: u32,
    build: u32,
    function_count: u32,
    function_table: *mut *const usize,
    module: *mut c_void,
}

/// The image's `WdfFunctionCount` (the link map's address), if known.
pub static FUNCTION_COUNT_SYMBOL: AtomicUsize = AtomicUsize::new(0);

extern "win64" fn wdf_version_bind(
    _driver_object: *mut c_void,
    _registry_path: *mut c_void,
    bind_info: *mut BindInfo,
    globals: *mut *const DriverGlobals,
) -> i32 {
    const DDI: &str = "WdfVersionBind";
    if bind_info.is_null() || globals.is_null() {
        fail(DDI, "NULL bind info or globals pointer");
    }
    // SAFETY: the stub's static WDF_BIND_INFO, valid and not otherwise accessed meanwhile.
    let info = unsafe { &mut *bind_info };
    check_size(DDI, "WDF_BIND_INFO", info.size, size_of::<BindInfo>());
    if (info.major, info.minor) != (1, 33) {
        fail(
            DDI,
            &format!(
                "the driver binds to KMDF {}.{}; the harness is KMDF 1.33",
                info.major, info.minor
            ),
        );
    }
    if info.function_count as usize != FUNCTION_COUNT {
        fail(
            DDI,
            &format!(
                "the driver's function count is {}, KMDF 1.33's WDFFUNCENUM has {FUNCTION_COUNT}",
                info.function_count
            ),
        );
    }
    if info.function_table.is_null() {
        fail(DDI, "NULL FuncTable");
    }
    // SAFETY: FuncTable points at the stub's `WdfFunctions_01033` variable.
    unsafe { info.function_table.write(FUNCTION_TABLE.0.as_ptr().cast()) };
    let count = FUNCTION_COUNT_SYMBOL.load(Ordering::SeqCst) as *mut u32;
    if !count.is_null() {
        // SAFETY: the link map's address of the stub's `ULONG WdfFunctionCount`, in the
        // image's writable data.
        unsafe { count.write(u32::try_from(FUNCTION_COUNT).expect("a count")) };
    }
    // SAFETY: the stub's `WdfDriverGlobals` variable.
    unsafe { globals.write(&raw const GLOBALS) };
    0
}

extern "win64" fn wdf_version_unbind(
    _registry_path: *mut c_void,
    _bind_info: *mut BindInfo,
    _globals: *const DriverGlobals,
) -> i32 {
    0
}

/// An entry the harness does not implement: names itself and ends the run.
pub extern "win64" fn not_implemented<const INDEX: usize>() -> ! {
    fail(
        FUNCTION_NAMES[INDEX],
        &format!(
            "not implemented by the harness (WDFFUNCENUM index {INDEX}); add it to tools/sys-harness/src/wdf.rs"
        ),
    )
}

/// The implemented DDIs: each takes the driver's globals first, as the WDF function table's
/// entries do.
#[allow(clippy::wildcard_imports, reason = "the DDIs use the whole module")]
pub mod ddi {
    use super::*;

    pub extern "win64" fn WdfDriverCreate(
        globals: *const DriverGlobals,
        _driver_object: *mut c_void,
        _registry_path: *mut c_void,
        attributes: *const ObjectAttributes,
        config: *const DriverConfig,
        driver: *mut usize,
    ) -> i32 {
        const DDI: &str = "WdfDriverCreate";
        check_globals(DDI, globals);
        if config.is_null() {
            fail(DDI, "NULL DriverConfig");
        }
        // SAFETY: a non-null WDF_DRIVER_CONFIG the driver passed, valid for the call.
        let config = unsafe { &*config };
        check_size(DDI, "WDF_DRIVER_CONFIG", config.size, layout::SIZEOF_WDF_DRIVER_CONFIG);
        let attributes = super::attributes(DDI, attributes);
        let mut created = CREATED_DRIVER.lock().unwrap_or_else(PoisonError::into_inner);
        if created.is_some() || GLOBALS.driver.load(Ordering::SeqCst) != 0 {
            fail(DDI, "called twice");
        }
        let handle = new_handle();
        register(DDI, handle, Kind::Driver, 0, attributes);
        *created = Some(CDriver {
            handle,
            device_add: config.device_add,
            unload: config.unload,
            destroy: attributes.and_then(|a| a.destroy),
        });
        GLOBALS.driver.store(handle, Ordering::SeqCst);
        if !driver.is_null() {
            // SAFETY: the driver's out pointer for the handle.
            unsafe { driver.write(handle) };
        }
        0
    }

    pub extern "win64" fn WdfDeviceInitSetPnpPowerEventCallbacks(
        globals: *const DriverGlobals,
        init: usize,
        callbacks: *const PnpPowerCallbacks,
    ) {
        const DDI: &str = "WdfDeviceInitSetPnpPowerEventCallbacks";
        check_globals(DDI, globals);
        if init == 0 || callbacks.is_null() {
            fail(DDI, "NULL DeviceInit or callbacks");
        }
        // SAFETY: a non-null WDF_PNPPOWER_EVENT_CALLBACKS the driver passed, valid for the call.
        let callbacks = unsafe { &*callbacks };
        check_size(
            DDI,
            "WDF_PNPPOWER_EVENT_CALLBACKS",
            callbacks.size,
            layout::SIZEOF_WDF_PNPPOWER_EVENT_CALLBACKS,
        );
        check_fields(DDI, callbacks);
        // SAFETY: `init` is the InitState that `CDriver::device_add` passed to this
        // EvtDriverDeviceAdd, alive on its stack for the callback's duration.
        let state = unsafe { &mut *(init as *mut InitState<'_>) };
        state.callbacks = Some(*callbacks);
    }

    pub extern "win64" fn WdfDeviceInitSetPowerPolicyEventCallbacks(
        globals: *const DriverGlobals,
        init: usize,
        callbacks: *const PowerPolicyCallbacks,
    ) {
        const DDI: &str = "WdfDeviceInitSetPowerPolicyEventCallbacks";
        check_globals(DDI, globals);
        if init == 0 || callbacks.is_null() {
            fail(DDI, "NULL DeviceInit or callbacks");
        }
        // SAFETY: a non-null WDF_POWER_POLICY_EVENT_CALLBACKS the driver passed, valid for
        // the call.
        let callbacks = unsafe { &*callbacks };
        check_size(
            DDI,
            "WDF_POWER_POLICY_EVENT_CALLBACKS",
            callbacks.size,
            layout::SIZEOF_WDF_POWER_POLICY_EVENT_CALLBACKS,
        );
        if callbacks.arm_wake_from_sx_with_reason != 0 {
            fail(DDI, "EvtDeviceArmWakeFromSxWithReason is not modelled");
        }
        check_policy_fields(DDI, callbacks);
        // SAFETY: as in WdfDeviceInitSetPnpPowerEventCallbacks.
        let state = unsafe { &mut *(init as *mut InitState<'_>) };
        state.policy = Some(*callbacks);
    }

    pub extern "win64" fn WdfDeviceInitSetFileObjectConfig(
        globals: *const DriverGlobals,
        init: usize,
        config: *const FileObjectConfig,
        attributes: *const ObjectAttributes,
    ) {
        const DDI: &str = "WdfDeviceInitSetFileObjectConfig";
        check_globals(DDI, globals);
        if init == 0 || config.is_null() {
            fail(DDI, "NULL DeviceInit or FileObjectConfig");
        }
        // SAFETY: a non-null WDF_FILEOBJECT_CONFIG the driver passed, valid for the call.
        let config = unsafe { &*config };
        check_size(DDI, "WDF_FILEOBJECT_CONFIG", config.size, layout::SIZEOF_WDF_FILEOBJECT_CONFIG);
        if config.class != layout::VALUE_WdfFileObjectWdfCannotUseFsContexts {
            fail(
                DDI,
                &format!(
                    "FileObjectClass {} is not modelled (only WdfFileObjectWdfCannotUseFsContexts)",
                    config.class
                ),
            );
        }
        if config.auto_forward_cleanup_close != layout::VALUE_WdfUseDefault {
            fail(DDI, "an AutoForwardCleanupClose other than WdfUseDefault is not modelled");
        }
        if let Some(attributes) = super::attributes(DDI, attributes)
            && attributes.parent != 0
        {
            fail(DDI, "a file object's ParentObject must be NULL (its device is its parent)");
        }
        // SAFETY: as in WdfDeviceInitSetPnpPowerEventCallbacks.
        let state = unsafe { &mut *(init as *mut InitState<'_>) };
        let Some(device_init) = state.init.as_mut() else {
            fail(DDI, "the DeviceInit was consumed by WdfDeviceCreate");
        };
        let mut registered = Vec::new();
        if config.cleanup != 0 {
            registered.push(Callback::FileCleanup);
        }
        if config.close != 0 {
            registered.push(Callback::FileClose);
        }
        raw::set_file_object(device_init, &registered);
        state.file = Some(*config);
        state.file_attributes = super::attributes(DDI, attributes).map(|a| SendAttributes(*a));
    }

    pub extern "win64" fn WdfDeviceCreateDeviceInterface(
        globals: *const DriverGlobals,
        device: usize,
        class: *const Guid,
        reference: *const UnicodeString,
    ) -> i32 {
        const DDI: &str = "WdfDeviceCreateDeviceInterface";
        check_globals(DDI, globals);
        let object = super::object(DDI, device, &[Kind::Device]);
        if class.is_null() {
            fail(DDI, "NULL InterfaceClassGUID");
        }
        // SAFETY: a non-null GUID the driver passed, valid for the call.
        let class = unsafe { &*class };
        let guid = kmdf::interface::Guid {
            data1: class.data1,
            data2: class.data2,
            data3: class.data3,
            data4: class.data4,
        };
        let reference = if reference.is_null() {
            None
        } else {
            // SAFETY: a non-null UNICODE_STRING the driver passed, valid for the call.
            let string = unsafe { &*reference };
            if string.length % 2 != 0 || string.length > string.maximum_length {
                fail(DDI, "a malformed ReferenceString (odd Length, or above MaximumLength)");
            }
            let units = usize::from(string.length / 2);
            let slice = if units == 0 {
                &[][..]
            } else {
                if string.buffer.is_null() {
                    fail(DDI, "a ReferenceString with a Length and a NULL Buffer");
                }
                // SAFETY: the driver's buffer of `Length` bytes, valid for the call.
                unsafe { std::slice::from_raw_parts(string.buffer, units) }
            };
            match String::from_utf16(slice) {
                Ok(text) => Some(text),
                Err(_) => fail(DDI, "a ReferenceString that is not valid UTF-16"),
            }
        };
        match raw::create_device_interface(&object, &guid, reference.as_deref()) {
            Ok(()) => 0,
            Err(error) => error.to_raw(),
        }
    }

    pub extern "win64" fn WdfIoQueueCreate(
        globals: *const DriverGlobals,
        device: usize,
        config: *const IoQueueConfig,
        attributes: *const ObjectAttributes,
        queue: *mut usize,
    ) -> i32 {
        const DDI: &str = "WdfIoQueueCreate";
        check_globals(DDI, globals);
        let device_object = object(DDI, device, &[Kind::Device]);
        if config.is_null() {
            fail(DDI, "NULL Config");
        }
        // SAFETY: a non-null WDF_IO_QUEUE_CONFIG the driver passed, valid for the call.
        let config = unsafe { &*config };
        check_size(DDI, "WDF_IO_QUEUE_CONFIG", config.size, layout::SIZEOF_WDF_IO_QUEUE_CONFIG);
        let attributes = super::attributes(DDI, attributes);
        if attributes.is_some_and(|a| a.parent != 0 && a.parent != device) {
            fail(DDI, "a queue's ParentObject must be its device");
        }
        if config.driver != 0 {
            fail(DDI, "a queue's Driver (a queue of another driver) is not modelled");
        }
        let dispatch = match config.dispatch_type {
            t if t == layout::VALUE_WdfIoQueueDispatchSequential => Dispatch::Sequential,
            t if t == layout::VALUE_WdfIoQueueDispatchParallel => {
                let limit = match config.number_of_presented_requests {
                    u32::MAX => None,
                    0 => fail(DDI, "a parallel queue's NumberOfPresentedRequests is 0"),
                    n => core::num::NonZeroU32::new(n),
                };
                Dispatch::Parallel { limit }
            }
            t if t == layout::VALUE_WdfIoQueueDispatchManual => Dispatch::Manual,
            t => fail(DDI, &format!("DispatchType {t} is not a WDF_IO_QUEUE_DISPATCH_TYPE")),
        };
        // WdfUseDefault: power-managed, the device being its power policy owner.
        let power_managed = match tri_state(config.power_managed) {
            Ok(value) => value.unwrap_or(true),
            Err(_) => {
                fail(DDI, &format!("PowerManaged {} is not a WDF_TRI_STATE", config.power_managed))
            }
        };
        let mut queue_config = if config.default_queue != 0 {
            kmdf::io_queue::IoQueueConfig::default_queue(dispatch)
        } else {
            kmdf::io_queue::IoQueueConfig::new(dispatch)
        };
        queue_config = queue_config
            .power_managed(power_managed)
            .allow_zero_length(config.allow_zero_length != 0);
        let registered: Vec<Callback> = [
            (config.io_default, Callback::IoDefault),
            (config.io_read, Callback::IoRead),
            (config.io_write, Callback::IoWrite),
            (config.io_device_control, Callback::IoDeviceControl),
            (config.io_internal_device_control, Callback::IoInternalDeviceControl),
            (config.io_stop, Callback::IoStop),
            (config.io_resume, Callback::IoResume),
            (config.io_canceled_on_queue, Callback::IoCanceledOnQueue),
        ]
        .into_iter()
        .filter(|(address, _)| *address != 0)
        .map(|(_, callback)| callback)
        .collect();
        let handle = new_handle();
        register(DDI, handle, Kind::Queue, device, attributes);
        let mut hooks = CObject::new(handle, attributes);
        hooks.queue = Some(*config);
        let cleanup = if hooks.cleanup.is_some() { Cleanup::Traced } else { Cleanup::None };
        let hooks = Box::new(hooks);
        let created: *const AtomicBool = &raw const hooks.created;
        match raw::create_queue(&device_object, queue_config, &registered, cleanup, hooks) {
            Ok(object) => {
                // SAFETY: the hooks now live in the object's context, which `object` keeps.
                unsafe { (*created).store(true, Ordering::SeqCst) };
                set_object(handle, &object);
                if !queue.is_null() {
                    // SAFETY: the driver's out pointer for the handle.
                    unsafe { queue.write(handle) };
                }
                0
            }
            Err(error) => error.to_raw(),
        }
    }

    pub extern "win64" fn WdfFileObjectGetDevice(
        globals: *const DriverGlobals,
        file: usize,
    ) -> usize {
        const DDI: &str = "WdfFileObjectGetDevice";
        check_globals(DDI, globals);
        let _ = object(DDI, file, &[Kind::File]);
        with_table(|table| table.get(&file).map_or(0, |entry| entry.parent))
    }

    /// The request `handle`'s entry, for `f`; a bug check for a handle that is none.
    fn request<R>(ddi: &str, handle: usize, f: impl FnOnce(&mut requests::Entry) -> R) -> R {
        let found = requests::with(|table| table.entries.get_mut(&handle).map(f));
        found.unwrap_or_else(|| fail(ddi, &format!("{handle:#x} is not a live WDFREQUEST")))
    }

    /// Completes the request `handle`, which the driver owns.
    fn complete(ddi: &str, handle: usize, status: i32, information: usize) {
        let taken = requests::with(|table| {
            let entry = table.entries.get_mut(&handle)?;
            if entry.completed {
                return Some(Err("completed twice"));
            }
            if entry.id == 0 {
                entry.create_status = Some(status);
                entry.completed = true;
                return Some(Ok(None));
            }
            let Some(value) = entry.value.take() else {
                return Some(Err(if entry.claim.is_some() {
                    "a request marked cancelable is completed without WdfRequestUnmarkCancelable"
                } else {
                    "a request the driver does not own"
                }));
            };
            entry.completed = true;
            requests::release(table, handle);
            Some(Ok(Some(value)))
        });
        match taken {
            None => fail(ddi, &format!("{handle:#x} is not a live WDFREQUEST")),
            Some(Err(message)) => fail(ddi, message),
            Some(Ok(None)) => {}
            // Outside the table: the completion may dispatch the next request.
            Some(Ok(Some(value))) => value.complete(NtStatus::from_raw(status), information),
        }
    }

    pub extern "win64" fn WdfRequestComplete(
        globals: *const DriverGlobals,
        request: usize,
        status: i32,
    ) {
        const DDI: &str = "WdfRequestComplete";
        check_globals(DDI, globals);
        complete(DDI, request, status, 0);
    }

    pub extern "win64" fn WdfRequestCompleteWithInformation(
        globals: *const DriverGlobals,
        request: usize,
        status: i32,
        information: usize,
    ) {
        const DDI: &str = "WdfRequestCompleteWithInformation";
        check_globals(DDI, globals);
        complete(DDI, request, status, information);
    }

    pub extern "win64" fn WdfRequestRetrieveOutputBuffer(
        globals: *const DriverGlobals,
        request: usize,
        minimum: usize,
        buffer: *mut *mut c_void,
        length: *mut usize,
    ) -> i32 {
        const DDI: &str = "WdfRequestRetrieveOutputBuffer";
        check_globals(DDI, globals);
        retrieve(DDI, request, minimum, buffer, length, false)
    }

    pub extern "win64" fn WdfRequestRetrieveInputBuffer(
        globals: *const DriverGlobals,
        request: usize,
        minimum: usize,
        buffer: *mut *mut c_void,
        length: *mut usize,
    ) -> i32 {
        const DDI: &str = "WdfRequestRetrieveInputBuffer";
        check_globals(DDI, globals);
        retrieve(DDI, request, minimum, buffer, length, true)
    }

    /// The request's buffer: a pointer into the runtime's request, which stays put until
    /// the request is completed (`raw::Request`).
    fn retrieve(
        ddi: &str,
        handle: usize,
        minimum: usize,
        buffer: *mut *mut c_void,
        length: *mut usize,
        input: bool,
    ) -> i32 {
        if buffer.is_null() {
            fail(ddi, "NULL Buffer");
        }
        let found = request(ddi, handle, |entry| {
            let value = entry.value.as_mut()?;
            Some(if input {
                value.input_buffer(minimum).map(|b| (b.as_ptr().cast_mut(), b.len()))
            } else {
                value.output_buffer(minimum).map(|b| (b.as_mut_ptr(), b.len()))
            })
        });
        let Some(found) = found else {
            fail(ddi, "a request the driver does not own (marked cancelable, or completed)");
        };
        match found {
            Ok((pointer, len)) => {
                // SAFETY: the driver's out pointers (Buffer checked non-null, Length
                // optional).
                unsafe { buffer.write(pointer.cast()) };
                if !length.is_null() {
                    // SAFETY: as above.
                    unsafe { length.write(len) };
                }
                0
            }
            Err(error) => error.to_raw(),
        }
    }

    pub extern "win64" fn WdfRequestGetIoQueue(
        globals: *const DriverGlobals,
        handle: usize,
    ) -> usize {
        const DDI: &str = "WdfRequestGetIoQueue";
        check_globals(DDI, globals);
        request(DDI, handle, |entry| entry.queue)
    }

    pub extern "win64" fn WdfRequestIsCanceled(globals: *const DriverGlobals, handle: usize) -> u8 {
        const DDI: &str = "WdfRequestIsCanceled";
        check_globals(DDI, globals);
        let canceled =
            request(DDI, handle, |entry| entry.value.as_ref().map(raw::Request::is_canceled));
        let Some(canceled) = canceled else {
            fail(DDI, "a request the driver does not own (marked cancelable, or completed)");
        };
        u8::from(canceled)
    }

    pub extern "win64" fn WdfRequestGetParameters(
        globals: *const DriverGlobals,
        handle: usize,
        parameters: *mut RequestParameters,
    ) {
        const DDI: &str = "WdfRequestGetParameters";
        check_globals(DDI, globals);
        if parameters.is_null() {
            fail(DDI, "NULL Parameters");
        }
        // SAFETY: the driver's WDF_REQUEST_PARAMETERS (non-null), initialized with its Size.
        let out = unsafe { &mut *parameters };
        check_size(
            DDI,
            "WDF_REQUEST_PARAMETERS",
            u32::from(out.size),
            layout::SIZEOF_WDF_REQUEST_PARAMETERS,
        );
        let Some(known) = request(DDI, handle, |entry| entry.parameters) else {
            fail(DDI, "the parameters of a create request are not modelled");
        };
        let (request_type, length, input_length, code) = match known {
            Parameters::Read { length } => (layout::VALUE_WdfRequestTypeRead, length, 0, 0),
            Parameters::Write { length } => (layout::VALUE_WdfRequestTypeWrite, length, 0, 0),
            Parameters::DeviceControl { code, output_length, input_length } => {
                (layout::VALUE_WdfRequestTypeDeviceControl, output_length, input_length, code)
            }
            Parameters::InternalDeviceControl { code, output_length, input_length } => (
                layout::VALUE_WdfRequestTypeDeviceControlInternal,
                output_length,
                input_length,
                code,
            ),
        };
        out.minor_function = 0;
        out.request_type = request_type;
        out.length = length;
        out.input_length = input_length;
        out.code = code;
        out.type3_input_buffer = 0;
    }

    pub extern "win64" fn WdfRequestMarkCancelableEx(
        globals: *const DriverGlobals,
        handle: usize,
        cancel: Option<extern "win64" fn(usize)>,
    ) -> i32 {
        const DDI: &str = "WdfRequestMarkCancelableEx";
        check_globals(DDI, globals);
        let Some(cancel) = cancel else { fail(DDI, "NULL EvtRequestCancel") };
        let (value, queue) = request(DDI, handle, |entry| {
            if entry.value.is_some() {
                entry.cancel = Some(cancel);
            }
            (entry.value.take(), entry.queue)
        });
        let Some(value) = value else {
            fail(
                DDI,
                "a request the driver does not own (marked cancelable already, or completed)",
            );
        };
        let queue = object(DDI, queue, &[Kind::Queue]);
        // Outside the table: a cancellation may come at once, on another thread.
        match value.mark_cancelable(&queue) {
            Ok(claim) => {
                request(DDI, handle, |entry| entry.claim = Some(claim));
                0
            }
            Err(value) => {
                request(DDI, handle, |entry| {
                    entry.cancel = None;
                    entry.value = Some(value);
                });
                NtStatus::CANCELLED.to_raw()
            }
        }
    }

    pub extern "win64" fn WdfRequestUnmarkCancelable(
        globals: *const DriverGlobals,
        handle: usize,
    ) -> i32 {
        const DDI: &str = "WdfRequestUnmarkCancelable";
        check_globals(DDI, globals);
        let claim = request(DDI, handle, |entry| entry.claim.take());
        let Some(claim) = claim else {
            fail(DDI, "a request that is not marked cancelable");
        };
        match claim.unmark() {
            Some(value) => {
                request(DDI, handle, |entry| {
                    entry.cancel = None;
                    entry.value = Some(value);
                });
                0
            }
            // Its cancel routine has it, or had it and completed it.
            None => NtStatus::CANCELLED.to_raw(),
        }
    }

    pub extern "win64" fn WdfRequestStopAcknowledge(
        globals: *const DriverGlobals,
        handle: usize,
        requeue: u8,
    ) {
        const DDI: &str = "WdfRequestStopAcknowledge";
        check_globals(DDI, globals);
        let id = request(DDI, handle, |entry| entry.id);
        let value = if requeue == 0 {
            None
        } else {
            let value = request(DDI, handle, |entry| entry.value.take());
            if value.is_none() {
                fail(DDI, "requeues a request the driver does not own (unmark it first)");
            }
            value
        };
        let done = requests::current_stop(id, |stop| match value {
            None => {
                stop.acknowledge();
                Ok(())
            }
            Some(value) => stop.acknowledge_requeue(value).map_err(|(_, error)| error),
        });
        match done {
            None => fail(DDI, "outside the request's EvtIoStop (not modelled)"),
            Some(Err(error)) => fail(DDI, &format!("the runtime refused the requeue: {error}")),
            Some(Ok(())) => {}
        }
    }

    pub extern "win64" fn WdfDeviceCreate(
        globals: *const DriverGlobals,
        init: *mut usize,
        attributes: *const ObjectAttributes,
        device: *mut usize,
    ) -> i32 {
        const DDI: &str = "WdfDeviceCreate";
        check_globals(DDI, globals);
        // SAFETY: the driver's PWDFDEVICE_INIT* (checked non-null first).
        let init_value = if init.is_null() { 0 } else { unsafe { init.read() } };
        if init_value == 0 {
            fail(DDI, "NULL DeviceInit (used already?)");
        }
        // SAFETY: as in WdfDeviceInitSetPnpPowerEventCallbacks.
        let state = unsafe { &mut *(init_value as *mut InitState<'_>) };
        let Some(device_init) = state.init.take() else {
            fail(DDI, "the DeviceInit was consumed by an earlier WdfDeviceCreate");
        };
        let attributes = super::attributes(DDI, attributes);
        let handle = new_handle();
        let driver = GLOBALS.driver.load(Ordering::SeqCst);
        register(DDI, handle, Kind::Device, driver, attributes);
        let mut hooks = CObject::new(handle, attributes);
        let callbacks = state.callbacks.unwrap_or_default();
        let policy = state.policy.unwrap_or_default();
        hooks.pnp = callbacks;
        hooks.policy = policy;
        hooks.file = state.file;
        hooks.file_attributes = state.file_attributes;
        let cleanup = if hooks.cleanup.is_some() { Cleanup::Traced } else { Cleanup::None };
        let hooks = Box::new(hooks);
        let created: *const AtomicBool = &raw const hooks.created;
        match raw::create_device(device_init, &registered(&callbacks, &policy), cleanup, hooks) {
            Ok(object) => {
                // SAFETY: the hooks now live in the object's context, which `object` keeps.
                unsafe { (*created).store(true, Ordering::SeqCst) };
                set_object(handle, &object);
                // SAFETY: the driver's pointers, checked non-null.
                unsafe { init.write(0) };
                if !device.is_null() {
                    // SAFETY: the driver's out pointer for the handle.
                    unsafe { device.write(handle) };
                }
                0
            }
            Err(error) => error.to_raw(),
        }
    }

    pub extern "win64" fn WdfObjectGetTypedContextWorker(
        globals: *const DriverGlobals,
        handle: usize,
        type_info: *const ContextTypeInfo,
    ) -> *mut c_void {
        const DDI: &str = "WdfObjectGetTypedContextWorker";
        check_globals(DDI, globals);
        let key = type_key(type_info);
        let found = with_table(|table| {
            table.get(&handle).map(|entry| {
                entry.contexts.iter().find(|(k, _)| *k == key).map(|(_, blob)| blob.pointer)
            })
        });
        match found {
            Some(Some(pointer)) => pointer.cast(),
            Some(None) => std::ptr::null_mut(),
            None => fail(DDI, &format!("{handle:#x} is not a live handle")),
        }
    }

    pub extern "win64" fn WdfObjectReferenceActual(
        globals: *const DriverGlobals,
        handle: usize,
        _tag: *mut c_void,
        _line: i32,
        _file: *const u8,
    ) {
        const DDI: &str = "WdfObjectReferenceActual";
        check_globals(DDI, globals);
        let request = requests::with(|table| {
            table.entries.get_mut(&handle).map(|entry| entry.references += 1).is_some()
        });
        if request {
            return;
        }
        let object = object(
            DDI,
            handle,
            &[Kind::Driver, Kind::Device, Kind::WorkItem, Kind::Timer, Kind::Queue],
        );
        with_table(|table| table.get_mut(&handle).map(|e| e.references.push(object)));
    }

    pub extern "win64" fn WdfObjectDereferenceActual(
        globals: *const DriverGlobals,
        handle: usize,
        _tag: *mut c_void,
        _line: i32,
        _file: *const u8,
    ) {
        const DDI: &str = "WdfObjectDereferenceActual";
        check_globals(DDI, globals);
        let request = requests::with(|table| {
            let entry = table.entries.get_mut(&handle)?;
            if entry.references == 0 {
                return Some(false);
            }
            entry.references -= 1;
            requests::release(table, handle);
            Some(true)
        });
        match request {
            Some(true) => return,
            Some(false) => fail(DDI, &format!("{handle:#x}: a dereference without a reference")),
            None => {}
        }
        let reference = with_table(|table| table.get_mut(&handle).map(|e| e.references.pop()));
        match reference {
            // Dropped here, outside the table: the last reference destroys the object.
            Some(Some(reference)) => drop(reference),
            Some(None) => fail(DDI, &format!("{handle:#x}: a dereference without a reference")),
            None => fail(DDI, &format!("{handle:#x} is not a live handle")),
        }
    }

    pub extern "win64" fn WdfObjectDelete(globals: *const DriverGlobals, handle: usize) {
        const DDI: &str = "WdfObjectDelete";
        check_globals(DDI, globals);
        let kind = with_table(|table| table.get(&handle).map(|e| e.kind));
        match kind {
            Some(Kind::SpinLock) => drop(forget(handle)),
            Some(Kind::WorkItem | Kind::Timer) => {
                let object = object(DDI, handle, &[Kind::WorkItem, Kind::Timer]);
                if let Err(error) = raw::delete(&object) {
                    fail(DDI, &format!("{handle:#x}: {error} (deleted twice?)"));
                }
            }
            Some(kind) => fail(DDI, &format!("a driver does not delete a {}", kind.name())),
            None => fail(DDI, &format!("{handle:#x} is not a live handle")),
        }
    }

    pub extern "win64" fn WdfSpinLockCreate(
        globals: *const DriverGlobals,
        attributes: *const ObjectAttributes,
        lock: *mut usize,
    ) -> i32 {
        const DDI: &str = "WdfSpinLockCreate";
        check_globals(DDI, globals);
        let attributes = super::attributes(DDI, attributes);
        let parent = attributes
            .map(|a| a.parent)
            .filter(|p| *p != 0)
            .unwrap_or_else(|| GLOBALS.driver.load(Ordering::SeqCst));
        let handle = new_handle();
        register(DDI, handle, Kind::SpinLock, parent, attributes);
        with_table(|table| table.get_mut(&handle).map(|e| e.lock = Some(Arc::default())));
        if lock.is_null() {
            fail(DDI, "NULL SpinLock pointer");
        }
        // SAFETY: the driver's out pointer, checked non-null.
        unsafe { lock.write(handle) };
        0
    }

    fn spin_lock(ddi: &str, handle: usize) -> Arc<SpinLock> {
        with_table(|table| table.get(&handle).and_then(|e| e.lock.clone()))
            .unwrap_or_else(|| fail(ddi, &format!("{handle:#x} is not a live WDFSPINLOCK")))
    }

    fn thread_id() -> u64 {
        // SAFETY: gettid has no preconditions.
        u64::try_from(unsafe { libc::gettid() }).unwrap_or(u64::MAX)
    }

    pub extern "win64" fn WdfSpinLockAcquire(globals: *const DriverGlobals, handle: usize) {
        const DDI: &str = "WdfSpinLockAcquire";
        check_globals(DDI, globals);
        let lock = spin_lock(DDI, handle);
        let irql = raw::current_irql();
        if irql > 2 {
            fail(DDI, &format!("called at IRQL {irql}, above DISPATCH_LEVEL"));
        }
        let me = thread_id();
        if lock.owner.load(Ordering::SeqCst) == me {
            fail(
                DDI,
                &format!("{handle:#x} is held by this thread already (a deadlock in the kernel)"),
            );
        }
        raw::enter_spin_lock();
        while lock.owner.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            std::hint::spin_loop();
        }
    }

    pub extern "win64" fn WdfSpinLockRelease(globals: *const DriverGlobals, handle: usize) {
        const DDI: &str = "WdfSpinLockRelease";
        check_globals(DDI, globals);
        let lock = spin_lock(DDI, handle);
        if lock
            .owner
            .compare_exchange(thread_id(), 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            fail(DDI, &format!("{handle:#x} is not held by this thread"));
        }
        raw::leave_spin_lock();
    }

    pub extern "win64" fn WdfWorkItemCreate(
        globals: *const DriverGlobals,
        config: *const WorkItemConfig,
        attributes: *const ObjectAttributes,
        item: *mut usize,
    ) -> i32 {
        const DDI: &str = "WdfWorkItemCreate";
        check_globals(DDI, globals);
        if config.is_null() || item.is_null() {
            fail(DDI, "NULL Config or WorkItem pointer");
        }
        // SAFETY: a non-null WDF_WORKITEM_CONFIG the driver passed, valid for the call.
        let config = unsafe { &*config };
        check_size(DDI, "WDF_WORKITEM_CONFIG", config.size, layout::SIZEOF_WDF_WORKITEM_CONFIG);
        let Some(attributes) = super::attributes(DDI, attributes) else {
            fail(DDI, "a work item needs attributes with a ParentObject");
        };
        if config.func.is_none() {
            fail(DDI, "no EvtWorkItemFunc");
        }
        let parent = object(DDI, attributes.parent, &[Kind::Device]);
        let handle = new_handle();
        register(DDI, handle, Kind::WorkItem, attributes.parent, Some(attributes));
        let mut hooks = CObject::new(handle, Some(attributes));
        hooks.run = config.func;
        // The kernel backend registers a cleanup on every work item for its own bookkeeping.
        let cleanup = if hooks.cleanup.is_some() { Cleanup::Untraced } else { Cleanup::None };
        let hooks = Box::new(hooks);
        let created: *const AtomicBool = &raw const hooks.created;
        match raw::create_work_item(&parent, cleanup, hooks) {
            Ok(object) => {
                // SAFETY: the hooks now live in the object's context, which `object` keeps.
                unsafe { (*created).store(true, Ordering::SeqCst) };
                set_object(handle, &object);
                // SAFETY: the driver's out pointer, checked non-null.
                unsafe { item.write(handle) };
                0
            }
            Err(error) => error.to_raw(),
        }
    }

    pub extern "win64" fn WdfWorkItemEnqueue(globals: *const DriverGlobals, handle: usize) {
        const DDI: &str = "WdfWorkItemEnqueue";
        check_globals(DDI, globals);
        let item = object(DDI, handle, &[Kind::WorkItem]);
        if let Err(error) = raw::enqueue(&item) {
            fail(DDI, &format!("{handle:#x}: {error} (enqueued after WdfObjectDelete)"));
        }
    }

    pub extern "win64" fn WdfWorkItemFlush(globals: *const DriverGlobals, handle: usize) {
        const DDI: &str = "WdfWorkItemFlush";
        check_globals(DDI, globals);
        let item = object(DDI, handle, &[Kind::WorkItem]);
        if let Err(error) = raw::flush(&item) {
            fail(DDI, &format!("{handle:#x}: {error}"));
        }
    }

    pub extern "win64" fn WdfWorkItemGetParentObject(
        globals: *const DriverGlobals,
        handle: usize,
    ) -> usize {
        const DDI: &str = "WdfWorkItemGetParentObject";
        check_globals(DDI, globals);
        parent_of(DDI, handle, Kind::WorkItem)
    }

    fn parent_of(ddi: &str, handle: usize, kind: Kind) -> usize {
        match with_table(|table| table.get(&handle).map(|e| (e.kind, e.parent))) {
            Some((k, parent)) if k == kind => parent,
            _ => fail(ddi, &format!("{handle:#x} is not a live {}", kind.name())),
        }
    }

    pub extern "win64" fn WdfTimerCreate(
        globals: *const DriverGlobals,
        config: *const TimerConfig,
        attributes: *const ObjectAttributes,
        timer: *mut usize,
    ) -> i32 {
        const DDI: &str = "WdfTimerCreate";
        check_globals(DDI, globals);
        if config.is_null() || timer.is_null() {
            fail(DDI, "NULL Config or Timer pointer");
        }
        // SAFETY: a non-null WDF_TIMER_CONFIG the driver passed, valid for the call.
        let config = unsafe { &*config };
        check_size(DDI, "WDF_TIMER_CONFIG", config.size, layout::SIZEOF_WDF_TIMER_CONFIG);
        let Some(attributes) = super::attributes(DDI, attributes) else {
            fail(DDI, "a timer needs attributes with a ParentObject");
        };
        if config.func.is_none() {
            fail(DDI, "no EvtTimerFunc");
        }
        if config.use_high_resolution_timer != 0 || config.tolerable_delay != 0 {
            fail(DDI, "high-resolution and coalescable timers are not modelled");
        }
        let parent = object(DDI, attributes.parent, &[Kind::Device]);
        let handle = new_handle();
        register(DDI, handle, Kind::Timer, attributes.parent, Some(attributes));
        let mut hooks = CObject::new(handle, Some(attributes));
        hooks.run = config.func;
        // As for work items: the kernel backend's bookkeeping cleanup.
        let cleanup = if hooks.cleanup.is_some() { Cleanup::Untraced } else { Cleanup::None };
        let hooks = Box::new(hooks);
        let created: *const AtomicBool = &raw const hooks.created;
        match raw::create_timer(&parent, config.period, cleanup, hooks) {
            Ok(object) => {
                // SAFETY: the hooks now live in the object's context, which `object` keeps.
                unsafe { (*created).store(true, Ordering::SeqCst) };
                set_object(handle, &object);
                // SAFETY: the driver's out pointer, checked non-null.
                unsafe { timer.write(handle) };
                0
            }
            Err(error) => error.to_raw(),
        }
    }

    pub extern "win64" fn WdfTimerStart(
        globals: *const DriverGlobals,
        handle: usize,
        due_time: i64,
    ) -> u8 {
        const DDI: &str = "WdfTimerStart";
        check_globals(DDI, globals);
        let timer = object(DDI, handle, &[Kind::Timer]);
        if due_time > 0 {
            fail(DDI, "an absolute due time is not modelled (the virtual clock has no date)");
        }
        let due = Duration::from_nanos(due_time.unsigned_abs().saturating_mul(100));
        match raw::timer_start(&timer, due) {
            Ok(was_set) => u8::from(was_set),
            Err(error) => {
                fail(DDI, &format!("{handle:#x}: {error} (started after WdfObjectDelete)"))
            }
        }
    }

    pub extern "win64" fn WdfTimerStop(
        globals: *const DriverGlobals,
        handle: usize,
        wait: u8,
    ) -> u8 {
        const DDI: &str = "WdfTimerStop";
        check_globals(DDI, globals);
        let timer = object(DDI, handle, &[Kind::Timer]);
        match raw::timer_stop(&timer, wait != 0) {
            Ok(was_set) => u8::from(was_set),
            Err(error) => fail(DDI, &format!("{handle:#x}: {error}")),
        }
    }

    pub extern "win64" fn WdfTimerGetParentObject(
        globals: *const DriverGlobals,
        handle: usize,
    ) -> usize {
        const DDI: &str = "WdfTimerGetParentObject";
        check_globals(DDI, globals);
        parent_of(DDI, handle, Kind::Timer)
    }

    pub extern "win64" fn WdfCmResourceListGetCount(
        globals: *const DriverGlobals,
        list: usize,
    ) -> u32 {
        const DDI: &str = "WdfCmResourceListGetCount";
        check_globals(DDI, globals);
        match with_table(|table| table.get(&list).map(|e| (e.kind, e.resource_count))) {
            Some((Kind::ResourceList, count)) => count,
            _ => fail(DDI, &format!("{list:#x} is not a live WDFCMRESLIST")),
        }
    }

    pub extern "win64" fn WdfDeviceAssignS0IdleSettings(
        globals: *const DriverGlobals,
        handle: usize,
        settings: *const IdleSettings,
    ) -> i32 {
        const DDI: &str = "WdfDeviceAssignS0IdleSettings";
        check_globals(DDI, globals);
        let device = object(DDI, handle, &[Kind::Device]);
        if settings.is_null() {
            fail(DDI, "NULL Settings");
        }
        // SAFETY: a non-null WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS the driver passed, valid
        // for the call.
        let settings = unsafe { &*settings };
        check_size(
            DDI,
            "WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS",
            settings.size,
            layout::SIZEOF_WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS,
        );
        let assigned = s0_idle_settings(DDI, settings)
            .and_then(|settings| raw::assign_s0_idle_settings(&device, &settings));
        NtStatus::from(assigned).to_raw()
    }

    pub extern "win64" fn WdfDeviceAssignSxWakeSettings(
        globals: *const DriverGlobals,
        handle: usize,
        settings: *const WakeSettings,
    ) -> i32 {
        const DDI: &str = "WdfDeviceAssignSxWakeSettings";
        check_globals(DDI, globals);
        let device = object(DDI, handle, &[Kind::Device]);
        if settings.is_null() {
            fail(DDI, "NULL Settings");
        }
        // SAFETY: a non-null WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS the driver passed, valid
        // for the call.
        let settings = unsafe { &*settings };
        check_size(
            DDI,
            "WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS",
            settings.size,
            layout::SIZEOF_WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS,
        );
        let assigned = sx_wake_settings(DDI, settings)
            .and_then(|settings| raw::assign_sx_wake_settings(&device, settings));
        NtStatus::from(assigned).to_raw()
    }

    pub extern "win64" fn WdfDeviceSetFailed(
        globals: *const DriverGlobals,
        handle: usize,
        action: i32,
    ) {
        const DDI: &str = "WdfDeviceSetFailed";
        check_globals(DDI, globals);
        let device = object(DDI, handle, &[Kind::Device]);
        let action = match action {
            1 => FailedAction::AttemptRestart,
            2 => FailedAction::NoRestart,
            other => fail(DDI, &format!("WDF_DEVICE_FAILED_ACTION {other} is not a valid action")),
        };
        raw::set_failed(&device, action);
    }
}

/// A `WDF_TRI_STATE`.
fn tri_state(value: i32) -> Result<Option<bool>, NtError> {
    match value {
        layout::VALUE_WdfFalse => Ok(Some(false)),
        layout::VALUE_WdfTrue => Ok(Some(true)),
        layout::VALUE_WdfUseDefault => Ok(None),
        _ => Err(NtError::INVALID_PARAMETER),
    }
}

/// A `DEVICE_POWER_STATE` a power policy may name (`PowerDeviceD1` to
/// `PowerDeviceMaximum`); KMDF refuses the others (`PowerDeviceD0` among them).
fn dx_state(value: i32) -> Result<DxState, NtError> {
    match value {
        layout::VALUE_PowerDeviceD1 => Ok(DxState::D1),
        layout::VALUE_PowerDeviceD2 => Ok(DxState::D2),
        layout::VALUE_PowerDeviceD3 => Ok(DxState::D3),
        layout::VALUE_PowerDeviceMaximum => Ok(DxState::Deepest),
        _ => Err(NtError::INVALID_PARAMETER),
    }
}

/// `UserControlOfIdleSettings` or `UserControlOfWakeSettings` (`allow`: its `...AllowUserControl` value, `deny`: its
/// `...DoNotAllowUserControl` value).
fn user_control(value: i32, allow: i32, deny: i32) -> Result<bool, NtError> {
    match value {
        v if v == allow => Ok(true),
        v if v == deny => Ok(false),
        _ => Err(NtError::INVALID_PARAMETER),
    }
}

/// `WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS` as the typed settings, or KMDF's error.
fn s0_idle_settings(ddi: &str, raw: &IdleSettings) -> Result<S0IdleSettings, NtError> {
    // The system-managed ones are PoFx, not modelled.
    if raw.idle_timeout_type != layout::VALUE_DriverManagedIdleTimeout {
        fail(ddi, "a system-managed IdleTimeoutType (PoFx) is not modelled");
    }
    if raw.exclude_d3_cold != layout::VALUE_WdfUseDefault {
        fail(ddi, "ExcludeD3Cold other than WdfUseDefault is not modelled");
    }
    let caps = match raw.idle_caps {
        layout::VALUE_IdleCannotWakeFromS0 => IdleCaps::CannotWakeFromS0,
        layout::VALUE_IdleCanWakeFromS0 => IdleCaps::CanWakeFromS0,
        layout::VALUE_IdleUsbSelectiveSuspend => IdleCaps::UsbSelectiveSuspend,
        _ => return Err(NtError::INVALID_PARAMETER),
    };
    let user = user_control(
        raw.user_control,
        layout::VALUE_IdleAllowUserControl,
        layout::VALUE_IdleDoNotAllowUserControl,
    )?;
    let mut settings =
        S0IdleSettings::new(caps).dx_state(dx_state(raw.dx_state)?).user_control(user);
    // 0 is IdleTimeoutDefaultValue.
    if raw.idle_timeout != 0 {
        settings = settings.idle_timeout(Duration::from_millis(u64::from(raw.idle_timeout)));
    }
    if let Some(enabled) = tri_state(raw.enabled)? {
        settings = settings.enabled(enabled);
    }
    if let Some(power_up) = tri_state(raw.power_up_on_system_wake)? {
        settings = settings.power_up_on_system_wake(power_up);
    }
    Ok(settings)
}

/// `WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS` as the typed settings, or KMDF's error.
fn sx_wake_settings(ddi: &str, raw: &WakeSettings) -> Result<SxWakeSettings, NtError> {
    if raw.arm_for_wake_if_children_are_armed != 0 || raw.indicate_child_wake_on_parent_wake != 0 {
        fail(ddi, "a bus driver's child wake settings are not modelled");
    }
    let user = user_control(
        raw.user_control,
        layout::VALUE_WakeAllowUserControl,
        layout::VALUE_WakeDoNotAllowUserControl,
    )?;
    let mut settings = SxWakeSettings::new().dx_state(dx_state(raw.dx_state)?).user_control(user);
    if let Some(enabled) = tri_state(raw.enabled)? {
        settings = settings.enabled(enabled);
    }
    Ok(settings)
}

/// Binds `handle` (the driver's, once `raw::load` created its object) to the runtime's object.
pub fn set_object_of(handle: usize, object: &Object) {
    set_object(handle, object);
}

/// The handle of a device created by `WdfDeviceCreate`.
pub struct CObjectHandle;

impl CObjectHandle {
    /// The handle of `hooks`' object.
    pub fn handle(hooks: &CObject) -> usize {
        hooks.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table follows WDFFUNCENUM (wdffuncenum.h: `WdfWaitLockCreateTableIndex = 312`,
    /// `WdfTimerStartTableIndex = 319`, `WdfFunctionTableNumEntries = 458`).
    #[test]
    fn the_generated_table_follows_wdffuncenum() {
        assert_eq!(FUNCTION_COUNT, 458);
        assert_eq!(FUNCTION_NAMES[0], "WdfChildListCreate");
        assert_eq!(FUNCTION_NAMES[312], "WdfWaitLockCreate");
        assert_eq!(FUNCTION_NAMES[319], "WdfTimerStart");
        assert_eq!(FUNCTION_NAMES[320], "WdfTimerStop");
        assert_eq!(FUNCTION_TABLE.0[319], ddi::WdfTimerStart as *const ());
        assert_eq!(FUNCTION_TABLE.0[320], ddi::WdfTimerStop as *const ());
        assert_eq!(FUNCTION_TABLE.0[312], not_implemented::<312> as *const ());
    }

    /// Every implemented DDI has its WDFFUNCENUM index (build.rs would not build otherwise),
    /// and they are 37: the 23 the toaster's kernel backend called before its I/O, and the
    /// 14 of its file objects, device interface, queue and requests.
    #[test]
    fn the_implemented_ddis_are_the_ddi_module() {
        let source = include_str!("wdf.rs");
        let implemented: Vec<&str> = source
            .lines()
            .filter_map(|line| line.trim().strip_prefix("pub extern \"win64\" fn Wdf"))
            .filter_map(|rest| rest.split('(').next())
            .collect();
        assert_eq!(implemented.len(), 37, "{implemented:?}");
        for name in implemented {
            assert!(FUNCTION_NAMES.iter().any(|n| *n == format!("Wdf{name}")), "{name}");
        }
    }
}
