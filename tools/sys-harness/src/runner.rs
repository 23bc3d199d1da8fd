//! The toaster's runner, on the `.sys`: the host runner's (examples/toaster/runner.rs)
//! command line, life and output, with the driver's code running from the image.
//!
//! Where the host runner reaches into the driver's Rust values (`Toaster::pending` through
//! `DeviceNode::with_context`, the ledger through `LoadedDriver::with_driver`), this one
//! calls the image's harness exports (tools/sys-harness/hooks/toaster.rs, compiled into the
//! `.sys` with the toaster's `sys-harness` feature), which call the same driver code.

use std::ffi::c_void;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kmdf::host::raw::{self, RawDriver};
use kmdf::host::{
    CallbackPanicked, Completion, DeviceNode, FileHandle, HeldWorkers, PanicReport, PendingIo,
    PnpAction, PnpError, Runtime,
};
use kmdf::interface::{Access, Guid, TransferMethod, ctl_code};
use kmdf::{Callback, NtError, NtStatus};

use crate::pe::{self, Symbols};
use crate::wdf::{self, CDriver};
use crate::{cpu, ntos, report};

/// The toaster's heating period (examples/toaster/driver.rs `TICK`).
const TICK: Duration = Duration::from_millis(100);

/// The toaster's interface and IOCTLs (examples/toaster/driver.rs: a mismatch shows in
/// every scenario with client actions).
const GUID_DEVINTERFACE_TOASTER: Guid = Guid::parse("{781EF630-72B2-11d2-B852-00C04FAD5171}");
const IOCTL_TOASTER_PENDING: u32 = ctl_code(0x22, 0x800, TransferMethod::Buffered, Access::Read);
const IOCTL_TOASTER_HEAT_TICKS: u32 = ctl_code(0x22, 0x801, TransferMethod::Buffered, Access::Read);

/// The life played when no action is given (the host runner's).
const DEFAULT_LIFE: [Step; 7] = [
    Step::Pnp(PnpAction::Start),
    Step::Client(Client::Open),
    Step::Client(Client::Read),
    Step::Pnp(PnpAction::Idle),
    Step::Pnp(PnpAction::Wake),
    Step::Client(Client::Close),
    Step::Pnp(PnpAction::Remove),
];

/// The length of a `read` and of a `write`.
const IO_LENGTH: usize = 8;

/// An application's action on the toaster (the host runner's).
#[derive(Clone, Copy)]
enum Client {
    Open,
    Read,
    Write,
    Ioctl(u32),
    Cancel,
    Close,
}

/// The longest `wait` (the host runner's).
const MAX_WAIT_MS: u64 = 3_600_000;

/// One step of the life: a PnP action, time passing (`wait MS`), or a client action.
#[derive(Clone, Copy)]
enum Step {
    Pnp(PnpAction),
    Wait(Duration),
    Client(Client),
}

const USAGE: &str = "\
usage: toaster [ACTION ...] [--fail CALLBACK[@N]]... [--late-work]

Loads the toaster sample driver on the kmdf host runtime, applies the actions in order and
prints every driver callback, one per line, then each request's final status and
information, then a summary.

actions:   start idle wake sleep resume query-remove cancel-remove remove surprise-remove
           query-stop cancel-stop stop signal-wake
           wait MS  the virtual clock advances MS milliseconds (1 to 3600000): the toaster
           heats, and idles by itself once it has been in D0 for its idle timeout (1000 ms)
client:    open     open a handle by the toaster's device interface
           read     read 8 bytes of toast (pending until toasted) on the newest open handle
           write    write 8 bytes on the newest open handle
           ioctl CODE  a device control on the newest open handle: pending, heat-ticks, or
                    a code (decimal or 0x hex); output buffer 4 bytes
           cancel   cancel the oldest pending request
           close    close the oldest open handle
           (none: start open read idle wake close remove)
--fail     make the named KMDF callback (e.g. EvtDeviceSelfManagedIoInit) fail with
           STATUS_UNSUCCESSFUL on its Nth call (default 1); may be repeated
--late-work  the work each heating period hands on is still queued when the next action
           starts; it runs once the action waits for it (a flush) or has ended";

/// What the runner printed and how it ends.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

impl Outcome {
    fn error(message: impl Into<String>, code: u8) -> Self {
        Outcome { stdout: String::new(), stderr: message.into(), code }
    }
}

struct Plan {
    actions: Vec<Step>,
    failures: Vec<(Callback, u64)>,
    late_work: bool,
}

fn parse(args: &[String]) -> Result<Option<Plan>, String> {
    let mut actions = Vec::new();
    let mut failures = Vec::new();
    let mut late_work = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if arg == "--late-work" {
            late_work = true;
            continue;
        }
        let spec = if arg == "--fail" {
            Some(
                args.next()
                    .ok_or("--fail needs a callback name, e.g. --fail EvtDeviceD0Entry@2")?,
            )
        } else {
            arg.strip_prefix("--fail=").map(|_| arg)
        };
        if let Some(spec) = spec {
            let spec = spec.strip_prefix("--fail=").unwrap_or(spec);
            failures.push(parse_failure(spec)?);
        } else if arg.starts_with('-') {
            return Err(format!("unknown option `{arg}`\n{USAGE}"));
        } else if arg == "wait" {
            actions.push(Step::Wait(parse_wait(args.next())?));
        } else if let Some(client) = parse_client(arg, &mut args)? {
            actions.push(Step::Client(client));
        } else {
            actions.push(Step::Pnp(arg.parse::<PnpAction>().map_err(|e| e.to_string())?));
        }
    }
    if actions.is_empty() {
        actions = DEFAULT_LIFE.to_vec();
    }
    Ok(Some(Plan { actions, failures, late_work }))
}

fn parse_client<'a>(
    arg: &str,
    args: &mut impl Iterator<Item = &'a String>,
) -> Result<Option<Client>, String> {
    Ok(Some(match arg {
        "open" => Client::Open,
        "read" => Client::Read,
        "write" => Client::Write,
        "cancel" => Client::Cancel,
        "close" => Client::Close,
        "ioctl" => Client::Ioctl(parse_ioctl(args.next())?),
        _ => return Ok(None),
    }))
}

fn parse_ioctl(code: Option<&String>) -> Result<u32, String> {
    let code =
        code.ok_or("`ioctl` needs a code: pending, heat-ticks or a number, e.g. ioctl pending")?;
    match code.as_str() {
        "pending" => Ok(IOCTL_TOASTER_PENDING),
        "heat-ticks" => Ok(IOCTL_TOASTER_HEAT_TICKS),
        number => {
            let parsed = match number.strip_prefix("0x").or_else(|| number.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => number.parse::<u32>(),
            };
            parsed.map_err(|_| {
                format!(
                    "`{code}` in `ioctl {code}` is not an IOCTL: pending, heat-ticks, or a \
                     32-bit number (decimal or 0x hex)"
                )
            })
        }
    }
}

fn parse_wait(ms: Option<&String>) -> Result<Duration, String> {
    let ms = ms.ok_or("`wait` needs a number of milliseconds, e.g. wait 1000")?;
    ms.parse::<u64>()
        .ok()
        .filter(|ms| (1..=MAX_WAIT_MS).contains(ms))
        .map(Duration::from_millis)
        .ok_or_else(|| {
            format!("`{ms}` in `wait {ms}` is not a number of milliseconds (1 to {MAX_WAIT_MS})")
        })
}

fn parse_failure(spec: &str) -> Result<(Callback, u64), String> {
    let (name, nth) = match spec.split_once('@') {
        Some((name, nth)) => {
            let nth = nth.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("`{nth}` in `--fail {spec}` is not a call number (1, 2, ...)")
            })?;
            (name, nth)
        }
        None => (spec, 1),
    };
    let callback = name.parse::<Callback>().map_err(|_| {
        format!("unknown callback `{name}`; callbacks that can fail: {}", failable().join(" "))
    })?;
    Ok((callback, nth))
}

fn failable() -> Vec<&'static str> {
    let probe = Runtime::new();
    Callback::ALL
        .iter()
        .filter(|c| probe.inject_failure(**c, u64::MAX, NtError::UNSUCCESSFUL).is_ok())
        .map(|c| c.kmdf_name())
        .collect()
}

/// The image's harness exports.
struct Exports {
    pending: extern "win64" fn(usize) -> u64,
    ledger: extern "win64" fn(*mut u64, u64) -> u64,
}

fn export<F: Copy>(image: &pe::Image, name: &str) -> Result<F, String> {
    let address = image.exports.get(name).copied().ok_or_else(|| {
        format!("the image has no export {name}: build it with the toaster's sys-harness feature (scripts/sys-run does)")
    })?;
    assert_eq!(size_of::<F>(), size_of::<usize>());
    // SAFETY: `F` is the export's function pointer type (tools/sys-harness/hooks/toaster.rs,
    // `extern "system"`, which is win64 on x86_64 Windows), of pointer size (checked).
    Ok(unsafe { std::mem::transmute_copy::<usize, F>(&address) })
}

/// Loads the image: maps it, binds its imports, installs the CR8/int3 handlers.
fn load_image(path: &str) -> Result<(pe::Image, Exports), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let image = pe::load(&bytes, ntos::resolve).map_err(|e| format!("{path}: {e}"))?;
    let _ = cpu::IMAGE.set((image.base, image.size));
    let map = std::path::Path::new(path).with_extension("map");
    if let Ok(map) = std::fs::read_to_string(&map) {
        let symbols = Symbols::read(&map, image.base);
        if let Some(count) = symbols.address("WdfFunctionCount") {
            wdf::FUNCTION_COUNT_SYMBOL.store(count, Ordering::SeqCst);
        }
        let _ = report::SYMBOLS.set(symbols);
    }
    cpu::install();
    let exports = Exports {
        pending: export(&image, "KmdfHarnessToasterPending")?,
        ledger: export(&image, "KmdfHarnessToasterLedger")?,
    };
    Ok((image, exports))
}

/// Runs the toaster's image at `path` with the runner's `args`.
pub fn run(path: &str, args: &[String]) -> Outcome {
    let plan = match parse(args) {
        Ok(Some(plan)) => plan,
        Ok(None) => return Outcome { stdout: format!("{USAGE}\n"), ..Outcome::default() },
        Err(message) => return Outcome::error(format!("toaster: {message}\n"), 2),
    };
    let (image, exports) = match load_image(path) {
        Ok(loaded) => loaded,
        Err(message) => return Outcome::error(format!("sys-harness: {message}\n"), 4),
    };
    let runtime: &'static Runtime = Box::leak(Box::new(Runtime::new()));
    report::RUNTIME.store(std::ptr::from_ref(runtime).cast_mut(), Ordering::SeqCst);
    for &(callback, nth) in &plan.failures {
        if runtime.inject_failure(callback, nth, NtError::UNSUCCESSFUL).is_err() {
            return Outcome::error(
                format!(
                    "toaster: {callback} cannot fail: it returns nothing in KMDF; callbacks that \
                     can fail: {}\n",
                    failable().join(" ")
                ),
                2,
            );
        }
    }
    let mut outcome = Outcome::default();
    let entry = image.entry;
    let driver = match raw::load(runtime, || driver_entry(entry)) {
        Ok(driver) => driver,
        Err(status) => {
            finish(&mut outcome, runtime, &[]);
            let _ = writeln!(outcome.stderr, "toaster: the driver did not load: {status}");
            outcome.code = 1;
            return outcome;
        }
    };
    if let (Ok(object), Ok(Some(handle))) = (
        raw::driver_object(&driver),
        driver.with_driver(|d| d.hooks::<CDriver>().map(|c| c.handle)),
    ) {
        wdf::set_object_of(handle, &object);
    }
    let node = match driver.add_device() {
        Ok(node) => node,
        Err(status) => {
            finish(&mut outcome, runtime, &[]);
            let _ = writeln!(outcome.stderr, "toaster: EvtDriverDeviceAdd failed: {status}");
            outcome.code = 1;
            return outcome;
        }
    };
    let mut app = App::default();
    let panicked = match play(runtime, &node, &plan.actions, plan.late_work, &mut app) {
        Ok(panicked) => panicked,
        Err(error) => {
            let named = match &error {
                PlayError::Pnp(PnpError::InvariantViolated { .. }) => format!("toaster: {error}"),
                _ => format!("toaster: {error}\n"),
            };
            finish(&mut outcome, runtime, &[]);
            app.report(&mut outcome.stdout);
            outcome.stderr.insert_str(0, &named);
            outcome.code = 1;
            return outcome;
        }
    };
    if let Some(panics) = &panicked {
        let _ = writeln!(outcome.stderr, "toaster: {panics}");
        outcome.code = 1;
    }
    let bug_check = panicked.is_some();
    let named = panicked.map(CallbackPanicked::into_panics).unwrap_or_default();
    let other_panics = finish(&mut outcome, runtime, &named);
    app.report(&mut outcome.stdout);
    let mut ledger = [0_u64; 64];
    let written = (exports.ledger)(ledger.as_mut_ptr(), ledger.len() as u64);
    if written < 4 {
        report::bug_check("KmdfHarnessToasterLedger: the driver is not loaded");
    }
    let pending = device_handle(&node).map_or(0, |device| (exports.pending)(device));
    // Every read the toaster took ended one way, or is still pending.
    let ended = ledger[1] + ledger[2] + ledger[3] + pending;
    if ended != ledger[0] {
        let _ = writeln!(
            outcome.stderr,
            "toaster: the toaster took {} reads but accounts for {ended}",
            ledger[0]
        );
        outcome.code = 1;
    }
    let _ = writeln!(
        outcome.stdout,
        "toast: {} requested, {} done, {} failed by flush, {} pending, {} cancelled",
        ledger[0], ledger[1], ledger[3], pending, ledger[2]
    );
    if other_panics {
        outcome.code = 1;
    } else if !bug_check {
        let _ = writeln!(outcome.stdout, "invariants: ok (checked after every action)");
    }
    // The handles still open are closed once everything is printed.
    app.handles.clear();
    outcome
}

/// `DriverEntry`, as the PnP manager's loader calls the image's entry point.
fn driver_entry(entry: usize) -> kmdf::Result<RawDriver> {
    // A DRIVER_OBJECT and the registry path: only passed through by the driver.
    let mut driver_object = vec![0_u8; 0x150];
    let mut registry_path = [0_u64; 2];
    // SAFETY: the image's entry point, FxDriverEntry(PDRIVER_OBJECT, PUNICODE_STRING), with
    // the Windows calling convention.
    let fx_driver_entry: extern "win64" fn(*mut c_void, *mut c_void) -> i32 =
        unsafe { std::mem::transmute::<usize, _>(entry) };
    let status =
        fx_driver_entry(driver_object.as_mut_ptr().cast(), registry_path.as_mut_ptr().cast());
    let created =
        wdf::CREATED_DRIVER.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    // A failed DriverEntry: KMDF deletes the driver object it created (dropping `created`
    // runs its EvtDestroyCallback).
    NtStatus::from_raw(status).ok()?;
    let Some(created) = created else {
        report::bug_check("DriverEntry succeeded without WdfDriverCreate");
    };
    Ok(RawDriver::new(Box::new(created)))
}

/// The `WDFDEVICE` of `node`, while it exists.
fn device_handle(node: &DeviceNode) -> Option<usize> {
    raw::with_device(node, wdf::CObjectHandle::handle).ok()
}

/// The application's side: its open handles and every request it sent.
#[derive(Default)]
struct App {
    /// Open handles, oldest first.
    handles: Vec<FileHandle>,
    /// Every request, in the order sent.
    requests: Vec<Sent>,
}

/// A request the application sent.
struct Sent {
    /// What it was: `open`, `read(8)`, `write(8)`, `ioctl(0x...)`.
    what: String,
    /// How it ended, once it has.
    completion: Option<(NtStatus, usize)>,
    /// The I/O while it is pending.
    pending: Option<PendingIo>,
}

impl App {
    /// Plays a client action. Errors: the action is not possible (no open handle, nothing
    /// pending).
    fn act(&mut self, node: &DeviceNode, client: Client) -> Result<(), String> {
        let sent = |what: String, result: Result<Completion, PendingIo>| match result {
            Ok(done) => {
                Sent { what, completion: Some((done.status, done.information)), pending: None }
            }
            Err(io) => Sent { what, completion: None, pending: Some(io) },
        };
        match client {
            Client::Open => {
                let completion = match node.open(&GUID_DEVINTERFACE_TOASTER) {
                    Ok(handle) => {
                        self.handles.push(handle);
                        (NtStatus::SUCCESS, 0)
                    }
                    Err(error) => (error.status(), 0),
                };
                self.requests.push(Sent {
                    what: "open".into(),
                    completion: Some(completion),
                    pending: None,
                });
            }
            Client::Read | Client::Write | Client::Ioctl(_) => {
                let handle = self.handles.last().ok_or_else(|| {
                    format!("`{}`: no handle is open (`open` one first)", name(client))
                })?;
                let request = match client {
                    Client::Read => sent(format!("read({IO_LENGTH})"), handle.read(IO_LENGTH)),
                    Client::Write => sent(format!("write({IO_LENGTH})"), handle.write(b"bread!!!")),
                    Client::Ioctl(code) => {
                        sent(format!("ioctl({code:#x})"), handle.ioctl(code, &[], 4))
                    }
                    _ => unreachable!("matched above"),
                };
                self.requests.push(request);
            }
            Client::Cancel => {
                let io = self
                    .requests
                    .iter()
                    .filter_map(|sent| sent.pending.as_ref())
                    .find(|io| !io.is_complete())
                    .ok_or("`cancel`: no request is pending")?;
                io.cancel();
            }
            Client::Close => {
                if self.handles.is_empty() {
                    return Err("`close`: no handle is open".into());
                }
                self.handles.remove(0).close();
            }
        }
        self.settle();
        Ok(())
    }

    /// Records the completions of the pending requests that have completed.
    fn settle(&mut self) {
        for sent in &mut self.requests {
            if let Some(done) = sent.pending.as_ref().and_then(PendingIo::completion) {
                sent.completion = Some((done.status, done.information));
                sent.pending = None;
            }
        }
    }

    /// One line per request: its final status and information, or `pending`.
    fn report(&mut self, out: &mut String) {
        self.settle();
        for (index, sent) in self.requests.iter().enumerate() {
            let _ = match sent.completion {
                Some((status, information)) => writeln!(
                    out,
                    "request {} {}: {status}, information {information}",
                    index + 1,
                    sent.what
                ),
                None => writeln!(out, "request {} {}: pending", index + 1, sent.what),
            };
        }
    }
}

/// The client action's command-line name.
fn name(client: Client) -> &'static str {
    match client {
        Client::Open => "open",
        Client::Read => "read",
        Client::Write => "write",
        Client::Ioctl(_) => "ioctl",
        Client::Cancel => "cancel",
        Client::Close => "close",
    }
}

/// As the host runner's `play`: one heating period between two actions; `wait MS`
/// advances the clock; a client action is the application's (`app`), after the held work;
/// with `late_work`, the period's work is still queued when the next action starts.
fn play(
    runtime: &Runtime,
    node: &DeviceNode,
    actions: &[Step],
    late_work: bool,
    app: &mut App,
) -> Result<Option<CallbackPanicked>, PlayError> {
    let last = actions.len() - 1;
    let mut held = None;
    for (index, &step) in actions.iter().enumerate() {
        match step {
            Step::Pnp(action) => match apply(runtime, node, action, held.take()) {
                Ok(()) => {}
                Err(PnpError::CallbackPanicked { panics, .. }) => return Ok(Some(panics)),
                Err(error) => return Err(PlayError::Pnp(error)),
            },
            Step::Wait(duration) => {
                // The held work runs once the wait waits for it or has ended.
                let (advanced, still_held) = advance(runtime, duration, held.take());
                drop(still_held);
                if let Err(panics) = advanced.and_then(|()| runtime.wait_for_work_items()) {
                    return Ok(Some(panics));
                }
            }
            Step::Client(client) => {
                // The held work runs first.
                drop(held.take());
                if let Err(panics) = runtime.wait_for_work_items() {
                    return Ok(Some(panics));
                }
                app.act(node, client).map_err(PlayError::Client)?;
                if let Err(panics) = runtime.wait_for_work_items() {
                    return Ok(Some(panics));
                }
            }
        }
        if index < last {
            let (advanced, still_held) =
                advance(runtime, TICK, late_work.then(|| runtime.hold_workers()));
            held = still_held;
            if let Err(panics) = advanced.and_then(|()| runtime.wait_for_work_items()) {
                return Ok(Some(panics));
            }
            app.settle();
        }
    }
    Ok(None)
}

/// Why [`play`] stopped early.
#[derive(Debug)]
enum PlayError {
    /// A PnP action was refused or broke KMDF's invariants.
    Pnp(PnpError),
    /// A client action was not possible (no open handle, nothing pending).
    Client(String),
}

impl std::fmt::Display for PlayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlayError::Pnp(error) => write!(f, "{error}"),
            PlayError::Client(message) => f.write_str(message),
        }
    }
}

/// As the host runner's `advance`.
fn advance<'r>(
    runtime: &'r Runtime,
    duration: Duration,
    held: Option<HeldWorkers<'r>>,
) -> (Result<(), CallbackPanicked>, Option<HeldWorkers<'r>>) {
    let Some(held) = held else { return (runtime.advance(duration), None) };
    std::thread::scope(|scope| {
        let advancing = scope.spawn(|| runtime.advance(duration));
        while runtime.work_item_waiters() == 0 && !advancing.is_finished() {
            std::thread::yield_now();
        }
        let held = if advancing.is_finished() {
            Some(held)
        } else {
            drop(held);
            None
        };
        let advanced = advancing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (advanced, held)
    })
}

/// As the host runner's `apply`.
fn apply(
    runtime: &Runtime,
    node: &DeviceNode,
    action: PnpAction,
    held: Option<HeldWorkers<'_>>,
) -> Result<(), PnpError> {
    let Some(held) = held else { return node.apply(action) };
    let result = std::thread::scope(|scope| {
        let applying = scope.spawn(|| node.apply(action));
        while runtime.work_item_waiters() == 0 && !applying.is_finished() {
            std::thread::yield_now();
        }
        drop(held);
        applying.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    // The released work runs before anything else happens, also after a refused action.
    let waited = runtime.wait_for_work_items();
    result?;
    waited.map_err(|panics| PnpError::CallbackPanicked { action, applied: true, panics })
}

fn finish(outcome: &mut Outcome, runtime: &Runtime, named: &[PanicReport]) -> bool {
    for line in runtime.trace().lines() {
        let _ = writeln!(outcome.stdout, "{line}");
    }
    let mut listed = false;
    for panic in runtime.panics().iter().filter(|panic| !named.contains(panic)) {
        let _ = writeln!(outcome.stderr, "toaster: {panic}");
        listed = true;
    }
    listed
}

/// Drops the runtime: its teardown removes the devices left and unloads the driver, running
/// the driver's code.
pub fn tear_down() {
    let runtime = report::RUNTIME.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !runtime.is_null() {
        // SAFETY: leaked from a Box in `run`; the pointer was taken out of RUNTIME, so this
        // is its only owner now.
        drop(unsafe { Box::from_raw(runtime) });
    }
}
