//! The host runner of the toaster sample: parses the command line, plays the PnP actions on
//! the host runtime, and renders the trace and the summary.
//!
//! ```text
//! cargo run --example toaster -- [ACTION ...] [--fail CALLBACK[@N]] [--late-work]
//! ```
//!
//! An action is a PnP action (`start`, `idle`, ...), `wait MS`, which advances the
//! runtime's virtual clock by MS milliseconds: the element heats meanwhile, and once the
//! toaster has been in D0 for its idle timeout with no power reference it idles by itself
//! (docs/kmdf-behaviour.md section 10), or a client action, an application using the
//! toaster (section 9): `open` (a handle by `GUID_DEVINTERFACE_TOASTER`), `read` (8 bytes
//! of toast; pending until toasted), `write` (8 bytes of bread), `ioctl CODE` (`pending`,
//! `heat-ticks` or a number), `cancel` (the oldest pending request, as `CancelIoEx`) and
//! `close` (the oldest open handle). Reads, writes and device controls go to the newest
//! open handle.
//! Between two actions one heating period passes on the runtime's virtual clock (the timer
//! fires, the work item heats). After the last action nothing more happens.
//! With `--late-work` the work item a period hands on is still queued when the next action
//! starts, and runs once the action waits for it (a flush) or has ended; a client action
//! lets it run first.
//!
//! Standard output: the trace, one callback per line, then one line per request (its final
//! status and information, or `pending`), then the summary lines. Exit code 0,
//! or 1 when the driver failed (an action was refused or broke KMDF's invariants, a driver
//! callback panicked: stderr says which, in a line starting with `toaster: `), or 2 for a
//! bad command line. A panic in the timer's or work item's callback ends the life there, as
//! a bug check would: the trace and the summary are printed up to that point.

use std::fmt::Write as _;
use std::time::Duration;

use kmdf::host::{
    CallbackPanicked, Completion, DeviceNode, FileHandle, HeldWorkers, PanicReport, PendingIo,
    PnpAction, PnpError, Runtime,
};
use kmdf::{Callback, NtError, NtStatus};

use crate::driver::{
    GUID_DEVINTERFACE_TOASTER, IOCTL_TOASTER_HEAT_TICKS, IOCTL_TOASTER_PENDING, TICK, Toaster,
    ToasterDriver,
};

/// The life played when no action is given: an application asks for toast, the read pends
/// across an idle and a wake (`EvtIoStop(Suspend)`, `EvtIoResume`), and the heating
/// completes it before the handle is closed and the toaster removed.
pub const DEFAULT_LIFE: [Step; 7] = [
    Step::Pnp(PnpAction::Start),
    Step::Client(Client::Open),
    Step::Client(Client::Read),
    Step::Pnp(PnpAction::Idle),
    Step::Pnp(PnpAction::Wake),
    Step::Client(Client::Close),
    Step::Pnp(PnpAction::Remove),
];

/// The length of a `read` and of a `write`.
pub const IO_LENGTH: usize = 8;

/// An application's action on the toaster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// `open`: a handle by the toaster's interface (`CreateFile`).
    Open,
    /// `read`: [`IO_LENGTH`] bytes of toast (`ReadFile`).
    Read,
    /// `write`: [`IO_LENGTH`] bytes of bread (`WriteFile`).
    Write,
    /// `ioctl CODE`: a device control with a 4-byte output buffer (`DeviceIoControl`).
    Ioctl(u32),
    /// `cancel`: the oldest pending request (`CancelIoEx`).
    Cancel,
    /// `close`: the oldest open handle (`CloseHandle`).
    Close,
}

/// The longest `wait`: an hour of the virtual clock (36,000 heating periods).
pub const MAX_WAIT_MS: u64 = 3_600_000;

/// One step of the life: a PnP action, or time passing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A PnP action applied to the device.
    Pnp(PnpAction),
    /// `wait MS`: the virtual clock advances by this much.
    Wait(Duration),
    /// An application's action.
    Client(Client),
}

impl From<PnpAction> for Step {
    fn from(action: PnpAction) -> Self {
        Step::Pnp(action)
    }
}

pub const USAGE: &str = "\
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
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

impl Outcome {
    fn error(message: impl Into<String>) -> Self {
        Outcome { stdout: String::new(), stderr: message.into(), code: 2 }
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

/// The callbacks `--fail` accepts: those that return a status in KMDF.
fn failable() -> Vec<&'static str> {
    let probe = Runtime::new();
    Callback::ALL
        .iter()
        .filter(|c| probe.inject_failure(**c, u64::MAX, NtError::UNSUCCESSFUL).is_ok())
        .map(|c| c.kmdf_name())
        .collect()
}

/// Runs the runner with `args` (without the program name).
pub fn run(args: &[String]) -> Outcome {
    let plan = match parse(args) {
        Ok(Some(plan)) => plan,
        Ok(None) => return Outcome { stdout: format!("{USAGE}\n"), ..Outcome::default() },
        Err(message) => return Outcome::error(format!("toaster: {message}\n")),
    };
    let runtime = Runtime::new();
    for &(callback, nth) in &plan.failures {
        if runtime.inject_failure(callback, nth, NtError::UNSUCCESSFUL).is_err() {
            return Outcome::error(format!(
                "toaster: {callback} cannot fail: it returns nothing in KMDF; callbacks that \
                 can fail: {}\n",
                failable().join(" ")
            ));
        }
    }
    let mut outcome = Outcome::default();
    let driver = match runtime.load::<ToasterDriver>() {
        Ok(driver) => driver,
        Err(status) => {
            finish(&mut outcome, &runtime, &[]);
            let _ = writeln!(outcome.stderr, "toaster: the driver did not load: {status}");
            outcome.code = 1;
            return outcome;
        }
    };
    let ledger = driver.with_driver(|d| d.ledger.clone()).expect("loaded");
    let node = match driver.add_device() {
        Ok(node) => node,
        Err(status) => {
            finish(&mut outcome, &runtime, &[]);
            let _ = writeln!(outcome.stderr, "toaster: EvtDriverDeviceAdd failed: {status}");
            outcome.code = 1;
            return outcome;
        }
    };
    let mut app = App::default();
    let played = play(&runtime, &node, &plan.actions, plan.late_work, &mut app);
    let panicked = match played {
        Ok(panicked) => panicked,
        Err(error) => {
            let named = match &error {
                PlayError::Pnp(PnpError::InvariantViolated { .. }) => format!("toaster: {error}"),
                _ => format!("toaster: {error}\n"),
            };
            finish(&mut outcome, &runtime, &[]);
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
    let other_panics = finish(&mut outcome, &runtime, &named);
    app.report(&mut outcome.stdout);
    // Every read the toaster took ended one way, or is still pending.
    let pending = node.with_context(Toaster::pending).unwrap_or(0) as u64;
    let ended = ledger.completed() + ledger.canceled() + ledger.flushed() + pending;
    if ended != ledger.submitted() {
        let _ = writeln!(
            outcome.stderr,
            "toaster: the toaster took {} reads but accounts for {ended}",
            ledger.submitted()
        );
        outcome.code = 1;
    }
    let _ = writeln!(
        outcome.stdout,
        // The line's first four counts keep the shape the runner printed before requests
        // were real; the count of cancelled reads extends it at the end.
        "toast: {} requested, {} done, {} failed by flush, {} pending, {} cancelled",
        ledger.submitted(),
        ledger.completed(),
        ledger.flushed(),
        pending,
        ledger.canceled()
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

/// The application's side: its open handles and every request it sent.
#[derive(Default)]
pub struct App {
    /// Open handles, oldest first.
    pub handles: Vec<FileHandle>,
    /// Every request, in the order sent.
    pub requests: Vec<Sent>,
}

/// A request the application sent.
pub struct Sent {
    /// What it was: `open`, `read(8)`, `write(8)`, `ioctl(0x...)`.
    pub what: String,
    /// How it ended, once it has.
    pub completion: Option<(NtStatus, usize)>,
    /// The I/O while it is pending.
    pub pending: Option<PendingIo>,
}

impl App {
    /// Plays a client action. Errors: the action is not possible (no open handle, nothing
    /// pending).
    pub fn act(&mut self, node: &DeviceNode, client: Client) -> Result<(), String> {
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
    pub fn settle(&mut self) {
        for sent in &mut self.requests {
            if let Some(done) = sent.pending.as_ref().and_then(PendingIo::completion) {
                sent.completion = Some((done.status, done.information));
                sent.pending = None;
            }
        }
    }

    /// One line per request: its final status and information, or `pending`.
    pub fn report(&mut self, out: &mut String) {
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

/// Plays `actions`, one heating period passing between two; a [`Step::Wait`] advances the
/// clock by its duration, a [`Step::Client`] is the application's (`app`). With `late_work`,
/// the work a period hands on is still queued when the next action starts (the workers are
/// held), and runs once the action waits for it or has ended (before a client action): each
/// action meets work in flight, the same way every run.
///
/// Ends early with the action's error when one is refused or breaks KMDF's invariants (a
/// client action that is not possible is [`PnpError::Refused`]-like: reported by its text),
/// and with `Ok(Some(..))` when a callback of the timer or the work item panicked, reported
/// by the next call: the machine has bug-checked.
///
/// # Errors
///
/// As above: the refused action's error.
pub fn play(
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
pub enum PlayError {
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

/// Advances the clock by `duration`, each expiry's work done before the next. With workers
/// `held`, the expiries fire without waiting, on another thread, and the workers are
/// released as soon as something waits for a work item (the flush of an idle power-down
/// that falls due meanwhile); otherwise they are handed back, still held.
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
        // Nothing waits on a finished advance, and a waiting one cannot finish.
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

/// Applies `action`; with workers `held`, on another thread, releasing them once the
/// action waits for a work item or has ended, then waiting for the work.
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

/// Prints the trace, and lists on stderr the panics no error named (reading them
/// acknowledges them, so the runtime drops quietly). Returns whether it listed any.
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
