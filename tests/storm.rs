//! Random PnP storms (issue: reliability): random sequences of every PnP action, valid or
//! not, with random injected callback failures, against a driver that registers every
//! callback. After every step the runtime's invariant checks (docs/kmdf-behaviour.md section 3)
//! must hold and an invalid action must change nothing; at the end no object is left alive
//! and the device context was dropped exactly once.
//!
//! `KMDF_STORM_CASES` sets the number of sequences (default 10,000); the toaster storm,
//! which keeps a timer and a work item busy on real worker threads, runs a tenth of that.

mod common;
#[path = "../examples/toaster/driver.rs"]
#[allow(dead_code, reason = "the storm uses only part of the sample's API")]
mod driver;
mod io_common;

use common::{FullDriver, full_device_drops};
use kmdf::host::{NodeState, PendingIo, PnpAction, PnpError, Runtime};
use kmdf::{Callback, NtError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The callbacks whose failure can be injected (they return a status in KMDF).
const FALLIBLE: [Callback; 11] = [
    Callback::PrepareHardware,
    Callback::ReleaseHardware,
    Callback::D0Entry,
    Callback::D0EntryPostInterruptsEnabled,
    Callback::D0ExitPreInterruptsDisabled,
    Callback::D0Exit,
    Callback::QueryRemove,
    Callback::QueryStop,
    Callback::SelfManagedIoInit,
    Callback::SelfManagedIoSuspend,
    Callback::SelfManagedIoRestart,
];

#[derive(Clone, Debug)]
struct Storm {
    actions: Vec<PnpAction>,
    /// (callback, nth call) to fail.
    failures: Vec<(Callback, u64)>,
}

fn storm() -> impl Strategy<Value = Storm> {
    let action = proptest::sample::select(PnpAction::ALL.to_vec());
    let failure = (proptest::sample::select(FALLIBLE.to_vec()), 1_u64..4);
    (proptest::collection::vec(action, 1..40), proptest::collection::vec(failure, 0..3))
        .prop_map(|(actions, failures)| Storm { actions, failures })
}

fn play(storm: &Storm) -> Result<(), TestCaseError> {
    let drops_before = full_device_drops();
    let runtime = Runtime::new();
    for &(callback, nth) in &storm.failures {
        runtime.inject_failure(callback, nth, NtError::UNSUCCESSFUL).unwrap();
    }
    let driver = runtime.load::<FullDriver>().unwrap();
    let node = driver.add_device().unwrap();
    for (step, &action) in storm.actions.iter().enumerate() {
        let state = node.state();
        let trace_len = runtime.trace().len();
        let live = runtime.live_objects();
        match node.apply(action) {
            Ok(()) => {}
            Err(PnpError::InvalidAction { action: refused, state: reported }) => {
                prop_assert_eq!(refused, action);
                prop_assert_eq!(reported, state);
                prop_assert_eq!(
                    node.state(),
                    state,
                    "step {}: refused action changed the state",
                    step
                );
                prop_assert_eq!(
                    runtime.trace().len(),
                    trace_len,
                    "step {}: refused action called",
                    step
                );
                prop_assert_eq!(runtime.live_objects(), live);
            }
            Err(violation) => {
                return Err(TestCaseError::fail(format!("step {step} ({action}): {violation}")));
            }
        }
    }
    // Finish the device's life whatever state it is in, then unload.
    if let NodeState::Asleep { .. } = node.state() {
        node.apply(PnpAction::Resume).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    if node.state() != NodeState::Removed {
        let last = if node.state() == NodeState::Added {
            PnpAction::Remove
        } else {
            PnpAction::SurpriseRemove
        };
        node.apply(last).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    prop_assert_eq!(node.state(), NodeState::Removed);
    prop_assert_eq!(driver.unload(), Ok(()));
    prop_assert!(runtime.live_objects().is_empty(), "left alive: {:?}", runtime.live_objects());
    prop_assert_eq!(
        full_device_drops() - drops_before,
        1,
        "the context must be dropped exactly once"
    );
    prop_assert!(runtime.panics().is_empty());
    prop_assert!(runtime.verifier_findings().is_empty());
    Ok(())
}

/// The same storm on the toaster sample: between two steps an application asks for toast
/// (a read on its handle, opened by the toaster's interface, when the toaster works) and a
/// heating period passes, so the timer fires and the work
/// item runs, every other time on another thread, concurrently with the next action; at the
/// end every read completed (exactly once: the client sees one completion) and the toaster
/// accounts for each one it took.
fn play_toaster(storm: &Storm) -> Result<(), TestCaseError> {
    use driver::{GUID_DEVINTERFACE_TOASTER, TICK, ToasterDriver};
    let runtime = Runtime::new();
    for &(callback, nth) in &storm.failures {
        runtime.inject_failure(callback, nth, NtError::UNSUCCESSFUL).unwrap();
    }
    let driver = runtime.load::<ToasterDriver>().unwrap();
    let ledger = driver.with_driver(|d| std::sync::Arc::clone(&d.ledger)).unwrap();
    let node = driver.add_device().unwrap();
    let heat = |runtime: &Runtime| {
        runtime.advance(TICK).map_err(|panics| TestCaseError::fail(panics.to_string()))
    };
    let mut handle = None;
    let mut reads = Vec::new();
    std::thread::scope(|scope| {
        // Every other period passes on another thread while the next action runs, so the
        // timer and the heating work item race with the PnP callbacks; the others pass
        // between two actions.
        let mut heating = None;
        for (step, &action) in storm.actions.iter().enumerate() {
            let applied = node.apply(action);
            if let Some(heating) = heating.take() {
                std::thread::ScopedJoinHandle::join(heating).expect("advance returns")?;
            }
            match applied {
                Ok(()) | Err(PnpError::InvalidAction { .. }) => {}
                Err(violation) => {
                    return Err(TestCaseError::fail(format!(
                        "step {step} ({action}): {violation}"
                    )));
                }
            }
            if node.state() == NodeState::Working {
                if handle.is_none() {
                    handle = node.open(&GUID_DEVINTERFACE_TOASTER).ok();
                }
                if let Some(handle) = &handle {
                    reads.push(handle.read_async(8));
                }
            }
            if step % 2 == 0 {
                heat(&runtime)?;
            } else {
                heating = Some(scope.spawn(|| heat(&runtime)));
            }
        }
        heating.map_or(Ok(()), |heating| heating.join().expect("advance returns"))
    })?;
    if let NodeState::Asleep { .. } = node.state() {
        node.apply(PnpAction::Resume).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    let last = match node.state() {
        NodeState::Removed => None,
        NodeState::Added => Some(PnpAction::Remove),
        _ => Some(PnpAction::SurpriseRemove),
    };
    if let Some(last) = last {
        node.apply(last).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    let unfinished: Vec<u64> =
        reads.iter().filter(|read| !read.is_complete()).map(PendingIo::id).collect();
    prop_assert!(unfinished.is_empty(), "reads never completed: {:?}", unfinished);
    prop_assert_eq!(
        ledger.completed() + ledger.canceled() + ledger.flushed(),
        ledger.submitted(),
        "each read the toaster took ended one way"
    );
    drop(handle);
    prop_assert_eq!(driver.unload(), Ok(()));
    prop_assert!(runtime.live_objects().is_empty(), "left alive: {:?}", runtime.live_objects());
    prop_assert!(runtime.panics().is_empty(), "{:?}", runtime.panics());
    prop_assert!(runtime.verifier_findings().is_empty(), "{:?}", runtime.verifier_findings());
    Ok(())
}

#[test]
fn random_pnp_storms_on_the_toaster() {
    let cases = std::env::var("KMDF_STORM_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(10_000)
        / 10;
    let mut runner =
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let started = std::time::Instant::now();
    if let Err(error) = runner.run(&storm(), |storm| play_toaster(&storm)) {
        panic!("{error}");
    }
    eprintln!("{cases} toaster storms passed in {:.1?}", started.elapsed());
}

#[test]
fn random_pnp_storms_keep_kmdf_invariants() {
    let cases =
        std::env::var("KMDF_STORM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let mut runner =
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let started = std::time::Instant::now();
    let result = runner.run(&storm(), |storm| play(&storm));
    if let Err(error) = result {
        panic!("{error}");
    }
    eprintln!("{cases} PnP storms passed in {:.1?}", started.elapsed());
}

/// One step of an I/O storm: a PnP action, or what an application or the driver does.
#[derive(Clone, Debug)]
enum IoStep {
    Pnp(PnpAction),
    Open,
    Read(usize),
    Write(usize),
    Ioctl(usize),
    /// `CancelIoEx` on the oldest I/O not known complete.
    Cancel,
    /// `CloseHandle` on the oldest handle.
    Close,
    /// The driver completes the oldest request it keeps (from the test's thread).
    Complete,
    /// The virtual clock moves this many quarters of the idle timeout (docs/kmdf-behaviour.md
    /// section 10: an idle timeout may power the device down; a request wakes it).
    Advance(u8),
}

#[derive(Clone, Debug)]
struct IoStorm {
    plan: (io_common::OnRead, io_common::OnStop, u8, bool),
    idle: Option<kmdf::power_policy::IdleCaps>,
    steps: Vec<IoStep>,
    failures: Vec<(Callback, u64)>,
}

fn io_storm() -> impl Strategy<Value = IoStorm> {
    use io_common::{OnRead, OnStop};
    let step = prop_oneof![
        3 => proptest::sample::select(PnpAction::ALL.to_vec()).prop_map(IoStep::Pnp),
        2 => Just(IoStep::Open),
        3 => (0_usize..5).prop_map(IoStep::Read),
        1 => (0_usize..5).prop_map(IoStep::Write),
        1 => (0_usize..5).prop_map(IoStep::Ioctl),
        1 => Just(IoStep::Cancel),
        1 => Just(IoStep::Close),
        2 => Just(IoStep::Complete),
        2 => (1_u8..8).prop_map(IoStep::Advance),
    ];
    let idle = proptest::option::of(proptest::sample::select(vec![
        kmdf::power_policy::IdleCaps::CannotWakeFromS0,
        kmdf::power_policy::IdleCaps::CanWakeFromS0,
    ]));
    let plan = (
        proptest::sample::select(vec![OnRead::Complete, OnRead::Pend, OnRead::Cancelable]),
        proptest::sample::select(vec![OnStop::Acknowledge, OnStop::Requeue, OnStop::Complete]),
        0_u8..3,
        any::<bool>(),
    );
    let failure = (proptest::sample::select(FALLIBLE.to_vec()), 1_u64..4);
    (plan, idle, proptest::collection::vec(step, 1..40), proptest::collection::vec(failure, 0..3))
        .prop_map(|(plan, idle, steps, failures)| IoStorm { plan, idle, steps, failures })
}

/// An I/O storm: client I/O mixed with every PnP action, clock advances (with or without
/// S0 idle settings, so the device idles by itself and requests wake it) and injected
/// failures, on the I/O test driver (docs/kmdf-behaviour.md sections 9 and 10). No request
/// is presented by a power-managed queue while the device is in Dx (a verifier check). Every request completes exactly once
/// with a status (a second completion would panic the runtime's bookkeeping), none is lost
/// (each is complete once the device is removed), no callback runs after the removal and
/// no driver rule is broken (no verifier finding), no object is left alive.
fn play_io(storm: &IoStorm) -> Result<(), TestCaseError> {
    use io_common::{GUID_DEVINTERFACE_TEST, IOCTL_ECHO, Plan};
    use kmdf::io_queue::Dispatch;
    let (on_read, on_stop, dispatch, power_managed) = storm.plan;
    let dispatch = match dispatch {
        0 => Dispatch::Sequential,
        1 => Dispatch::Parallel { limit: std::num::NonZeroU32::new(2) },
        _ => Dispatch::parallel(),
    };
    let plan =
        Plan { dispatch, power_managed, on_read, on_stop, idle: storm.idle, ..Plan::default() };
    let runtime = Runtime::new();
    for &(callback, nth) in &storm.failures {
        runtime.inject_failure(callback, nth, NtError::UNSUCCESSFUL).unwrap();
    }
    let driver = runtime.load_with(io_common::IoDriver { plan }).unwrap();
    let node = driver.add_device().unwrap();
    let mut handles = std::collections::VecDeque::new();
    let mut pending: Vec<kmdf::host::PendingIo> = Vec::new();
    for (step, action) in storm.steps.iter().enumerate() {
        let fail = |what: &dyn std::fmt::Display| {
            TestCaseError::fail(format!("step {step} ({action:?}): {what}"))
        };
        match action {
            IoStep::Pnp(action) => match node.apply(*action) {
                Ok(()) | Err(PnpError::InvalidAction { .. }) => {}
                Err(violation) => return Err(fail(&violation)),
            },
            IoStep::Open => {
                if let Ok(handle) = runtime.open(&GUID_DEVINTERFACE_TEST) {
                    handles.push_back(handle);
                }
            }
            IoStep::Read(n) | IoStep::Write(n) | IoStep::Ioctl(n) => {
                if let Some(handle) = handles.back() {
                    pending.push(match action {
                        IoStep::Read(_) => handle.read_async(*n),
                        IoStep::Write(_) => handle.write_async(&vec![1; *n]),
                        _ => handle.ioctl_async(IOCTL_ECHO, &vec![2; *n], *n),
                    });
                }
            }
            IoStep::Cancel => {
                if let Some(io) = pending.iter().find(|io| !io.is_complete()) {
                    io.cancel();
                }
            }
            IoStep::Close => drop(handles.pop_front()),
            IoStep::Advance(quarters) => {
                let by = io_common::IDLE_TIMEOUT / 4 * u32::from(*quarters);
                runtime.advance(by).map_err(|e| fail(&e))?;
            }
            IoStep::Complete => {
                if let Ok(Some(request)) =
                    node.with_context(|dev: &io_common::Dev| dev.q().context().take_oldest())
                {
                    request.complete(kmdf::NtStatus::SUCCESS);
                }
            }
        }
        if !runtime.verifier_findings().is_empty() {
            return Err(fail(&format!("{:?}", runtime.verifier_findings())));
        }
    }
    if let NodeState::Asleep { .. } = node.state() {
        node.apply(PnpAction::Resume).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    let last = match node.state() {
        NodeState::Removed => None,
        NodeState::Added => Some(PnpAction::Remove),
        _ => Some(PnpAction::SurpriseRemove),
    };
    if let Some(last) = last {
        node.apply(last).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    for io in &pending {
        prop_assert!(io.is_complete(), "request {} lost: {:?}", io.id(), io);
    }
    drop(handles);
    drop(pending);
    // A close made due by a completion above PASSIVE_LEVEL runs on a worker thread.
    runtime.wait_for_work_items().map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(driver.unload(), Ok(()));
    prop_assert!(runtime.live_objects().is_empty(), "left alive: {:?}", runtime.live_objects());
    prop_assert!(runtime.panics().is_empty(), "{:?}", runtime.panics());
    prop_assert!(runtime.verifier_findings().is_empty(), "{:?}", runtime.verifier_findings());
    Ok(())
}

#[test]
fn random_io_storms_complete_every_request_once() {
    let cases =
        std::env::var("KMDF_STORM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let mut runner =
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let started = std::time::Instant::now();
    if let Err(error) = runner.run(&io_storm(), |storm| play_io(&storm)) {
        panic!("{error}");
    }
    eprintln!("{cases} I/O storms passed in {:.1?}", started.elapsed());
}
