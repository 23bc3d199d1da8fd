//! The host runner of the toaster sample: parses the command line, plays the PnP actions on
//! the host runtime, and renders the trace and the summary.
//!
//! ```text
//! cargo run --example toaster -- [ACTION ...] [--fail CALLBACK[@N]] [--late-work]
//! ```
//!
//! An action is a PnP action (`start`, `idle`, ...) or `wait MS`, which advances the
//! runtime's virtual clock by MS milliseconds: the element heats meanwhile, and once the
//! toaster has been in D0 for its idle timeout with no power reference it idles by itself
//! (docs/kmdf-behaviour.md section 10).
//! Between two actions one heating period passes on the runtime's virtual clock (the timer
//! fires, the work item heats), and while the toaster is working an application first asks
//! for a slice of toast. After the last action nothing more happens.
//! With `--late-work` the work item a period hands on is still queued when the next action
//! starts, and runs once the action waits for it (a flush) or has ended.
//!
//! Standard output: the trace, one callback per line, then the summary lines. Exit code 0,
//! or 1 when the driver failed (an action was refused or broke KMDF's invariants, a driver
//! callback panicked: stderr says which, in a line starting with `toaster: `), or 2 for a
//! bad command line. A panic in the timer's or work item's callback ends the life there, as
//! a bug check would: the trace and the summary are printed up to that point.

use std::fmt::Write as _;
use std::time::Duration;

use kmdf::host::{
    CallbackPanicked, DeviceNode, HeldWorkers, NodeState, PanicReport, PnpAction, PnpError, Runtime,
};
use kmdf::{Callback, NtError};

use crate::driver::{TICK, Toaster, ToasterDriver};

/// The life played when no action is given.
pub const DEFAULT_LIFE: [Step; 6] = [
    Step::Pnp(PnpAction::Start),
    Step::Pnp(PnpAction::Idle),
    Step::Pnp(PnpAction::Wake),
    Step::Pnp(PnpAction::Sleep),
    Step::Pnp(PnpAction::Resume),
    Step::Pnp(PnpAction::Remove),
];

/// The longest `wait`: an hour of the virtual clock (36,000 heating periods).
pub const MAX_WAIT_MS: u64 = 3_600_000;

/// One step of the life: a PnP action, or time passing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A PnP action applied to the device.
    Pnp(PnpAction),
    /// `wait MS`: the virtual clock advances by this much.
    Wait(Duration),
}

impl From<PnpAction> for Step {
    fn from(action: PnpAction) -> Self {
        Step::Pnp(action)
    }
}

pub const USAGE: &str = "\
usage: toaster [ACTION ...] [--fail CALLBACK[@N]]... [--late-work]

Loads the toaster sample driver on the kmdf host runtime, applies the PnP actions in order
and prints every driver callback, one per line, then a summary.

actions:   start idle wake sleep resume query-remove cancel-remove remove surprise-remove
           query-stop cancel-stop stop signal-wake
           wait MS  the virtual clock advances MS milliseconds (1 to 3600000): the toaster
           heats, and idles by itself once it has been in D0 for its idle timeout (1000 ms)
           (none: start idle wake sleep resume remove)
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
        } else {
            actions.push(Step::Pnp(arg.parse::<PnpAction>().map_err(|e| e.to_string())?));
        }
    }
    if actions.is_empty() {
        actions = DEFAULT_LIFE.to_vec();
    }
    Ok(Some(Plan { actions, failures, late_work }))
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
    let panicked = match play(&runtime, &node, &plan.actions, plan.late_work) {
        Ok(panicked) => panicked,
        Err(error) => {
            let named = match &error {
                PnpError::InvariantViolated { .. } => format!("toaster: {error}"),
                _ => format!("toaster: {error}\n"),
            };
            finish(&mut outcome, &runtime, &[]);
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
    // Every request completes at most once (exactly once unless it is still pending).
    let completions = ledger.completions();
    let mut ids: Vec<u64> = completions.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    let twice: Vec<u64> = ids.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    if !twice.is_empty() {
        let _ = writeln!(outcome.stderr, "toaster: requests completed twice: {twice:?}");
        outcome.code = 1;
    }
    let pending = node.with_context(Toaster::pending).unwrap_or(0);
    let _ = writeln!(
        outcome.stdout,
        "toast: {} requested, {} done, {} failed by flush, {} pending",
        ledger.submitted(),
        ledger.completed(),
        ledger.flushed(),
        pending
    );
    if other_panics {
        outcome.code = 1;
    } else if !bug_check {
        let _ = writeln!(outcome.stdout, "invariants: ok (checked after every action)");
    }
    outcome
}

/// Plays `actions`, one heating period passing between two (an application first asks for
/// toast while the toaster works); a [`Step::Wait`] advances the clock by its duration. With `late_work`, the work a period hands on is still
/// queued when the next action starts (the workers are held), and runs once the action
/// waits for it or has ended: each action meets work in flight, the same way every run.
///
/// Ends early with the action's error when one is refused or breaks KMDF's invariants, and
/// with `Ok(Some(..))` when a callback of the timer or the work item panicked, reported by
/// the next call: the machine has bug-checked.
pub fn play(
    runtime: &Runtime,
    node: &DeviceNode,
    actions: &[Step],
    late_work: bool,
) -> Result<Option<CallbackPanicked>, PnpError> {
    let last = actions.len() - 1;
    let mut held = None;
    for (index, &step) in actions.iter().enumerate() {
        match step {
            Step::Pnp(action) => match apply(runtime, node, action, held.take()) {
                Ok(()) => {}
                Err(PnpError::CallbackPanicked { panics, .. }) => return Ok(Some(panics)),
                Err(error) => return Err(error),
            },
            Step::Wait(duration) => {
                // The held work runs once the wait waits for it or has ended.
                let (advanced, still_held) = advance(runtime, duration, held.take());
                drop(still_held);
                if let Err(panics) = advanced.and_then(|()| runtime.wait_for_work_items()) {
                    return Ok(Some(panics));
                }
            }
        }
        if index < last {
            if node.state() == NodeState::Working {
                let _ = node.with_context(|toaster: &Toaster| toaster.submit());
            }
            let (advanced, still_held) =
                advance(runtime, TICK, late_work.then(|| runtime.hold_workers()));
            held = still_held;
            if let Err(panics) = advanced.and_then(|()| runtime.wait_for_work_items()) {
                return Ok(Some(panics));
            }
        }
    }
    Ok(None)
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
