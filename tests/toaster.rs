//! The toaster sample, driven through scenarios on the host runtime, and its runner's
//! command line. What a driver author would check: every request completes exactly once
//! (toasted, or failed by `SelfManagedIoFlush`), nothing of the element runs after Flush,
//! and Cleanup frees everything Init allocated.

#[path = "../examples/toaster/driver.rs"]
mod driver;
#[path = "../examples/toaster/runner.rs"]
mod runner;

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Rig;
use driver::{HEAT_TICKS, IDLE_TIMEOUT, Ledger, TICK, Toaster, ToasterDriver};
use kmdf::host::{AssignedResources, NodeState, PnpAction, Runtime, Trace};
use kmdf::{Callback, NtError, NtStatus};

/// The toaster driver loaded with one device added.
fn toaster() -> Rig<ToasterDriver> {
    Rig::new()
}

/// What the scenarios do with the toaster.
trait Toasting {
    /// The driver's record of the requests.
    fn ledger(&self) -> Arc<Ledger>;
    /// Submits a request to the device; returns its id.
    fn submit(&self) -> u64;
    /// Lets `ticks` heating periods pass and the work they started finish.
    fn heat(&self, ticks: u32);
    /// The end of every scenario: the device is gone, each request completed exactly once,
    /// nothing ran after Flush, and nothing Init allocated is left.
    fn assert_clean_end(&self);
}

impl Toasting for Rig<ToasterDriver> {
    fn ledger(&self) -> Arc<Ledger> {
        self.driver_value(|driver| Arc::clone(&driver.ledger))
    }

    fn submit(&self) -> u64 {
        self.node.with_context(Toaster::submit).unwrap().unwrap()
    }

    fn heat(&self, ticks: u32) {
        for _ in 0..ticks {
            self.runtime.advance(TICK).unwrap();
            self.runtime.wait_for_work_items().unwrap();
        }
    }

    fn assert_clean_end(&self) {
        assert_eq!(self.node.state(), NodeState::Removed);
        let completions = self.ledger().completions();
        let mut ids: Vec<u64> = completions.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        let expected: Vec<u64> = (1..=self.ledger().submitted()).collect();
        assert_eq!(ids, expected, "every request completed exactly once: {completions:?}");
        let trace = self.node.trace();
        assert_quiet_after_flush(&trace);
        assert_cleanup_frees_the_element(&trace);
        self.driver.unload().unwrap();
        assert!(self.runtime.live_objects().is_empty(), "{:?}", self.runtime.live_objects());
        assert!(self.runtime.panics().is_empty(), "{:?}", self.runtime.panics());
        assert!(
            self.runtime.verifier_findings().is_empty(),
            "{:?}",
            self.runtime.verifier_findings()
        );
    }
}

/// No `EvtTimerFunc` or `EvtWorkItem` after `EvtDeviceSelfManagedIoFlush` began.
fn assert_quiet_after_flush(trace: &Trace) {
    let callbacks = trace.callbacks();
    if let Some(flush) = callbacks.iter().position(|c| *c == Callback::SelfManagedIoFlush) {
        let late: Vec<_> = callbacks[flush..]
            .iter()
            .filter(|c| matches!(c, Callback::TimerFunc | Callback::WorkItem))
            .collect();
        assert!(late.is_empty(), "ran after SelfManagedIoFlush: {late:?}\n{trace}");
    }
}

/// The timer and the work item, children of the device, are deleted in
/// `SelfManagedIoCleanup` and destroyed with the device context that holds them, after the
/// device's own cleanup.
fn assert_cleanup_frees_the_element(trace: &Trace) {
    let lines = trace.lines();
    let at = |line: &str| lines.iter().position(|l| l == line);
    let Some(device) = at("EvtCleanupCallback(WDFDEVICE)") else {
        return;
    };
    for object in ["EvtDestroyCallback(WDFTIMER)", "EvtDestroyCallback(WDFWORKITEM)"] {
        let freed = at(object).unwrap_or_else(|| panic!("{object} missing\n{trace}"));
        assert!(device < freed, "{object} out of place\n{trace}");
    }
}

#[test]
fn requests_are_toasted_after_enough_heat() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    let first = bench.submit();
    bench.heat(1);
    let second = bench.submit();
    bench.heat(u32::try_from(HEAT_TICKS).unwrap() - 1);
    assert_eq!(bench.ledger().completions(), [(first, NtStatus::SUCCESS)]);
    bench.heat(1);
    assert_eq!(
        bench.ledger().completions(),
        [(first, NtStatus::SUCCESS), (second, NtStatus::SUCCESS)]
    );
    bench.act(PnpAction::Remove);
    bench.assert_clean_end();
}

#[test]
fn nothing_heats_while_the_toaster_is_out_of_d0() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    bench.submit();
    bench.act(PnpAction::Idle);
    let _ = bench.runtime.take_trace();
    bench.heat(10);
    assert!(bench.runtime.take_trace().is_empty(), "the timer was stopped by Suspend");
    bench.act(PnpAction::Wake);
    bench.heat(u32::try_from(HEAT_TICKS).unwrap());
    assert_eq!(bench.ledger().completed(), 1);
    bench.act(PnpAction::Remove);
    bench.assert_clean_end();
}

#[test]
fn surprise_removal_with_requests_pending_in_d0() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    for _ in 0..3 {
        bench.submit();
    }
    bench.heat(1);
    bench.act(PnpAction::SurpriseRemove);
    assert_eq!(bench.ledger().completed(), 0);
    assert_eq!(bench.ledger().flushed(), 3);
    assert!(bench.ledger().completions().iter().all(|(_, s)| *s == NtStatus::DEVICE_REMOVED));
    bench.assert_clean_end();
}

#[test]
fn surprise_removal_with_requests_pending_while_idle() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    bench.submit();
    bench.heat(u32::try_from(HEAT_TICKS).unwrap());
    bench.submit();
    bench.act(PnpAction::Idle);
    bench.act(PnpAction::SurpriseRemove);
    // Section 1, surprise remove in Dx: no second Suspend or D0Exit.
    let lines = bench.node.trace().lines();
    let tail = &lines[lines.iter().position(|l| l == "EvtDeviceSurpriseRemoval").unwrap()..];
    assert_eq!(
        &tail[..3],
        ["EvtDeviceSurpriseRemoval", "EvtDeviceReleaseHardware", "EvtDeviceSelfManagedIoFlush"]
    );
    assert_eq!((bench.ledger().completed(), bench.ledger().flushed()), (1, 1));
    bench.assert_clean_end();
}

#[test]
fn query_remove_flushes_the_work_item_first() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    bench.submit();
    // A tick hands work to the item, which stays queued while the workers are held.
    let held = bench.runtime.hold_workers();
    bench.runtime.advance(TICK).unwrap();
    let _ = bench.runtime.take_trace();
    std::thread::scope(|scope| {
        let remover = scope.spawn(|| bench.node.apply(PnpAction::Remove));
        // QueryRemove is flushing the work item: it waits for the queued run.
        while bench.runtime.work_item_waiters() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(bench.runtime.trace().lines(), ["EvtDeviceQueryRemove"]);
        drop(held);
        remover.join().unwrap().unwrap();
    });
    let lines = bench.runtime.trace().lines();
    assert_eq!(
        &lines[..3],
        ["EvtDeviceQueryRemove", "EvtWorkItem", "EvtDeviceSelfManagedIoSuspend"]
    );
    bench.assert_clean_end();
}

#[test]
fn requests_survive_a_rebalance() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    let id = bench.submit();
    bench.act(PnpAction::Stop);
    bench.heat(5);
    assert!(bench.ledger().completions().is_empty());
    bench.act(PnpAction::Start); // SelfManagedIoRestart, not Init
    bench.heat(u32::try_from(HEAT_TICKS).unwrap());
    assert_eq!(bench.ledger().completions(), [(id, NtStatus::SUCCESS)]);
    assert_eq!(bench.node.trace().count(Callback::SelfManagedIoInit), 1);
    bench.act(PnpAction::Remove);
    bench.assert_clean_end();
}

#[test]
fn a_failed_init_tears_the_toaster_down_cleanly() {
    let bench = toaster();
    bench
        .runtime
        .inject_failure(Callback::SelfManagedIoInit, 1, NtError::INSUFFICIENT_RESOURCES)
        .unwrap();
    bench.act(PnpAction::Start);
    assert_eq!(bench.node.state(), NodeState::Removed);
    bench.assert_clean_end();
}

#[test]
fn every_scenario_of_every_length_three_ends_clean() {
    // All action triples, each followed by a removal: the sample never loses a request or
    // runs after Flush, whatever the order (invalid actions are skipped).
    for a in PnpAction::ALL {
        for b in PnpAction::ALL {
            for c in PnpAction::ALL {
                let bench = toaster();
                for action in [a, b, c] {
                    if bench.node.apply(action).is_ok() && bench.node.state() == NodeState::Working
                    {
                        bench.submit();
                    }
                    bench.heat(1);
                }
                if let NodeState::Asleep { .. } = bench.node.state() {
                    bench.act(PnpAction::Resume);
                }
                match bench.node.state() {
                    NodeState::Removed => {}
                    // The PnP manager restarts a stopped device before removing it; a
                    // stopped or stopping device can only be surprise-removed.
                    NodeState::Stopped | NodeState::QueryStopPending | NodeState::Failed => {
                        bench.act(PnpAction::SurpriseRemove);
                    }
                    _ => bench.act(PnpAction::Remove),
                }
                bench.assert_clean_end();
            }
        }
    }
}

// ---- The toaster's power policy (docs/kmdf-behaviour.md section 10) ----------------------

/// The trace lines recorded since the last call, of the whole runtime.
fn new_lines(bench: &Rig<ToasterDriver>) -> Vec<String> {
    bench.runtime.take_trace().lines()
}

const MS: Duration = Duration::from_millis(1);

/// Lets `time` pass on the virtual clock, the work each expiry hands on done before the next.
fn pass(bench: &Rig<ToasterDriver>, time: Duration) {
    bench.runtime.advance(time).unwrap();
    bench.runtime.wait_for_work_items().unwrap();
}

/// Section 10, "Power references and the idle timeout": with S0 idle enabled the idle timer
/// runs from the first start while no reference is held, and when it expires the device
/// powers down to its idle state; `IdleCannotWakeFromS0` idles unarmed (the "idle" row
/// without `ArmWakeFromS0`). The toaster's own requests hold no power reference: the one
/// pending idles with it and is toasted once the toaster is back.
#[test]
fn the_toaster_idles_by_itself_after_its_timeout_and_not_before() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    let id = bench.submit();
    pass(&bench, IDLE_TIMEOUT.checked_sub(MS).unwrap());
    assert_eq!(bench.node.state(), NodeState::Working, "not before its timeout");
    assert_eq!(bench.ledger().completions(), [(id, NtStatus::SUCCESS)]);
    let late = bench.submit();
    let _ = bench.runtime.take_trace();
    pass(&bench, MS);
    assert_eq!(bench.node.state(), NodeState::Idle, "idle at its timeout");
    assert_eq!(
        new_lines(&bench),
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
        ]
    );
    assert_eq!(bench.context(Toaster::armed_for_wake), (false, false), "idles unarmed");
    // Idle, it does not heat, and nothing brings it back by itself.
    pass(&bench, IDLE_TIMEOUT * 10);
    assert!(new_lines(&bench).is_empty());
    assert_eq!(bench.node.state(), NodeState::Idle);
    // Back in D0, its idle timer runs again: it idles once more after the same timeout.
    bench.act(PnpAction::Wake);
    bench.heat(u32::try_from(HEAT_TICKS).unwrap());
    assert_eq!(bench.ledger().completions(), [(id, NtStatus::SUCCESS), (late, NtStatus::SUCCESS)]);
    let heated = TICK * u32::try_from(HEAT_TICKS).unwrap();
    pass(&bench, IDLE_TIMEOUT.checked_sub(heated + MS).unwrap());
    assert_eq!(bench.node.state(), NodeState::Working);
    pass(&bench, MS);
    assert_eq!(bench.node.state(), NodeState::Idle);
    bench.act(PnpAction::Remove);
    bench.assert_clean_end();
}

/// Section 10: the toaster's default Sx wake settings arm it when the system sleeps
/// ("sleep, armable"), and the resume disarms it and brings it back to D0 ("resume, armed
/// for Sx"), with `WakeFromSxTriggered` first when its wake signal woke the system. Asleep
/// from idle, it comes back to D0 to be armed first ("sleep while idle, unarmed", armable).
#[test]
fn sleep_and_resume_arm_and_disarm_the_toaster_for_system_wake() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    let _ = bench.runtime.take_trace();
    bench.act(PnpAction::Sleep);
    assert_eq!(
        new_lines(&bench),
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceArmWakeFromSx",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
        ]
    );
    assert_eq!(bench.context(Toaster::armed_for_wake), (false, true));
    bench.act(PnpAction::Resume);
    assert_eq!(
        new_lines(&bench),
        [
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtDeviceDisarmWakeFromSx",
            "EvtDeviceSelfManagedIoRestart",
        ]
    );
    assert_eq!(bench.node.state(), NodeState::Working);
    assert_eq!(bench.context(Toaster::armed_for_wake), (false, false));

    // From idle (by its timeout), with the wake signal while asleep.
    pass(&bench, IDLE_TIMEOUT);
    assert_eq!(bench.node.state(), NodeState::Idle);
    let _ = bench.runtime.take_trace();
    bench.act(PnpAction::Sleep);
    assert_eq!(
        new_lines(&bench),
        [
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtDeviceSelfManagedIoRestart",
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceArmWakeFromSx",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
        ]
    );
    bench.act(PnpAction::SignalWake);
    bench.act(PnpAction::Resume);
    assert_eq!(
        new_lines(&bench),
        [
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtDeviceWakeFromSxTriggered",
            "EvtDeviceDisarmWakeFromSx",
            "EvtDeviceSelfManagedIoRestart",
        ]
    );
    assert_eq!(bench.context(Toaster::wakes_triggered), 1);
    assert_eq!(bench.node.state(), NodeState::Working);
    bench.act(PnpAction::Remove);
    bench.assert_clean_end();
}

/// Section 10, "Resume": a toaster that slept unarmed stays in Dx on resume, with no
/// callback, because its S0 idle policy would idle it anyway (idle enabled,
/// `CannotWakeFromS0`, no power-up on system wake, no reference), also when it slept from
/// D0; it comes back on the next wake. Unarmed here because `ArmWakeFromSx` failed
/// (`DisarmWakeFromSx`, then it sleeps in D3), or because its bus cannot wake the system
/// (its `WdfDeviceAssignSxWakeSettings` failed, which the toaster ignores like the C one).
#[test]
fn an_unarmed_toaster_stays_in_dx_on_resume() {
    let bench = toaster();
    bench.runtime.inject_failure(Callback::ArmWakeFromSx, 1, NtError::UNSUCCESSFUL).unwrap();
    bench.act(PnpAction::Start);
    let _ = bench.runtime.take_trace();
    bench.act(PnpAction::Sleep);
    assert_eq!(
        new_lines(&bench),
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceArmWakeFromSx -> STATUS_UNSUCCESSFUL (injected)",
            "EvtDeviceDisarmWakeFromSx",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
        ]
    );
    bench.act(PnpAction::Resume);
    assert!(new_lines(&bench).is_empty(), "stays in Dx without a callback");
    assert_eq!(bench.node.state(), NodeState::Idle);
    bench.act(PnpAction::Wake);
    assert_eq!(bench.node.state(), NodeState::Working);
    bench.act(PnpAction::Remove);
    bench.assert_clean_end();

    let runtime = Runtime::new();
    let driver = runtime.load::<ToasterDriver>().unwrap();
    let node = driver.add_device_with(AssignedResources::new().device_wake(None)).unwrap();
    let bench = Rig { runtime, driver, node };
    bench.act(PnpAction::Start);
    let _ = bench.runtime.take_trace();
    bench.act(PnpAction::Sleep);
    assert_eq!(
        new_lines(&bench),
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
        ],
        "not armable: sleeps unarmed"
    );
    bench.act(PnpAction::Resume);
    assert!(new_lines(&bench).is_empty());
    assert_eq!(bench.node.state(), NodeState::Idle);
    bench.act(PnpAction::Remove);
    bench.assert_clean_end();
}

// ---- The runner's command line (a public contract) ---------------------------------------

fn run(args: &[&str]) -> runner::Outcome {
    runner::run(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
}

/// The toaster's life with no actions given. `sleep` arms it for system wake and `resume`
/// disarms it: it assigned the default Sx wake settings (docs/kmdf-behaviour.md section 10,
/// the rows "sleep, armable" and "resume, armed for Sx").
#[test]
fn the_default_life() {
    let outcome = run(&[]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.stderr, "");
    let expected = "\
DriverEntry
EvtDriverDeviceAdd
EvtDevicePrepareHardware
EvtDeviceD0Entry(D3Final)
EvtDeviceD0EntryPostInterruptsEnabled(D3Final)
EvtDeviceSelfManagedIoInit
EvtTimerFunc
EvtWorkItem
EvtDeviceSelfManagedIoSuspend
EvtDeviceD0ExitPreInterruptsDisabled(D3)
EvtDeviceD0Exit(D3)
EvtDeviceD0Entry(D3)
EvtDeviceD0EntryPostInterruptsEnabled(D3)
EvtDeviceSelfManagedIoRestart
EvtTimerFunc
EvtWorkItem
EvtDeviceSelfManagedIoSuspend
EvtDeviceArmWakeFromSx
EvtDeviceD0ExitPreInterruptsDisabled(D3)
EvtDeviceD0Exit(D3)
EvtDeviceD0Entry(D3)
EvtDeviceD0EntryPostInterruptsEnabled(D3)
EvtDeviceDisarmWakeFromSx
EvtDeviceSelfManagedIoRestart
EvtTimerFunc
EvtWorkItem
EvtDeviceQueryRemove
EvtDeviceSelfManagedIoSuspend
EvtDeviceD0ExitPreInterruptsDisabled(D3Final)
EvtDeviceD0Exit(D3Final)
EvtDeviceReleaseHardware
EvtDeviceSelfManagedIoFlush
EvtDeviceSelfManagedIoCleanup
EvtCleanupCallback(WDFDEVICE)
EvtDestroyCallback(WDFDEVICE)
EvtDestroyCallback(WDFTIMER)
EvtDestroyCallback(WDFWORKITEM)
toast: 3 requested, 2 done, 1 failed by flush, 0 pending
invariants: ok (checked after every action)
";
    assert_eq!(outcome.stdout, expected);
}

#[test]
fn explicit_actions_and_nothing_after_the_last() {
    let outcome = run(&["start", "idle"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    // Between the two actions one tick passes; after `idle`, nothing more.
    assert_eq!(
        &lines[lines.len() - 5..],
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
            "toast: 1 requested, 0 done, 0 failed by flush, 1 pending",
            "invariants: ok (checked after every action)",
        ]
    );
    // Nothing but the trace begins with `Evt`, and every trace line does or is DriverEntry.
    let trace_lines = &lines[..lines.len() - 2];
    assert!(trace_lines.iter().all(|l| l.starts_with("Evt") || *l == "DriverEntry"));
    assert!(lines[lines.len() - 2..].iter().all(|l| !l.starts_with("Evt")));
}

#[test]
fn fail_makes_a_callback_fail_on_its_nth_call() {
    let outcome = run(&["start", "idle", "wake", "--fail", "EvtDeviceD0Entry@2"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome.stdout.contains(
            "EvtDeviceD0Entry(D3) -> STATUS_UNSUCCESSFUL (injected)\n\
         EvtDeviceReleaseHardware\n\
         EvtDeviceSelfManagedIoFlush\n\
         EvtDeviceSurpriseRemoval\n\
         EvtDeviceSelfManagedIoCleanup\n"
        ),
        "{}",
        outcome.stdout
    );
    assert!(outcome.stdout.contains("1 failed by flush"));

    let outcome = run(&["start", "--fail=EvtDeviceSelfManagedIoInit"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome.stdout.contains("EvtDeviceSelfManagedIoInit -> STATUS_UNSUCCESSFUL (injected)\n")
    );
}

#[test]
fn bad_command_lines_fail_clearly() {
    let outcome = run(&["start", "unplug"]);
    assert_eq!(outcome.code, 2);
    assert!(
        outcome
            .stderr
            .starts_with("toaster: unknown PnP action `unplug`; the actions are: start idle")
    );
    assert_eq!(outcome.stdout, "");

    let outcome = run(&["--fail", "EvtDeviceToast"]);
    assert_eq!(outcome.code, 2);
    assert!(
        outcome
            .stderr
            .starts_with("toaster: unknown callback `EvtDeviceToast`; callbacks that can fail:")
    );

    let outcome = run(&["--fail", "EvtDeviceSelfManagedIoFlush"]);
    assert_eq!(outcome.code, 2);
    assert!(outcome.stderr.starts_with("toaster: EvtDeviceSelfManagedIoFlush cannot fail"));

    let outcome = run(&["--fail", "EvtDeviceD0Entry@0"]);
    assert_eq!(outcome.code, 2);
    assert!(outcome.stderr.contains("is not a call number"));

    let outcome = run(&["--fail"]);
    assert_eq!(outcome.code, 2);

    let outcome = run(&["--toast"]);
    assert_eq!(outcome.code, 2);
    assert!(outcome.stderr.starts_with("toaster: unknown option `--toast`"));

    let outcome = run(&["--help"]);
    assert_eq!(outcome.code, 0);
    assert!(outcome.stdout.starts_with("usage: toaster [ACTION ...] [--fail CALLBACK[@N]]"));
}

/// `--late-work`: the period's work item is still queued when the next action starts, so
/// the flushes of `SelfManagedIoSuspend` and `EvtDeviceQueryRemove` wait for it
/// (docs/kmdf-behaviour.md section 4: a flush returns once the queued or running callback
/// has returned); after an action that waits for nothing, it runs once the action ended.
#[test]
fn late_work_meets_each_action_with_the_work_item_queued() {
    let outcome = run(&["start", "idle", "wake", "query-remove", "remove", "--late-work"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    let after = |callback: &str| lines[lines.iter().position(|l| *l == callback).unwrap() + 1];
    // Idle: Suspend flushes, the queued run goes first.
    assert_eq!(after("EvtDeviceSelfManagedIoSuspend"), "EvtWorkItem");
    // After wake, the tick's run meets query-remove, which flushes it.
    assert_eq!(after("EvtDeviceQueryRemove"), "EvtWorkItem");
    // Without --late-work, the work is done before each action: nothing runs inside one.
    let plain = run(&["start", "idle", "wake", "query-remove", "remove"]);
    let plain: Vec<&str> = plain.stdout.lines().collect();
    let index = plain.iter().position(|l| *l == "EvtDeviceSelfManagedIoSuspend").unwrap();
    assert_eq!(plain[index + 1], "EvtDeviceD0ExitPreInterruptsDisabled(D3)");
    // The same trace every time.
    for _ in 0..20 {
        let again = run(&["start", "idle", "wake", "query-remove", "remove", "--late-work"]);
        assert_eq!(again.stdout, outcome.stdout);
    }
}

#[test]
fn an_action_invalid_in_the_state_stops_with_the_trace_so_far() {
    let outcome = run(&["start", "wake"]);
    assert_eq!(outcome.code, 1);
    assert_eq!(outcome.stderr, "toaster: `wake` is not valid for a device that is started in D0\n");
    assert!(outcome.stdout.ends_with("EvtDeviceSelfManagedIoInit\nEvtTimerFunc\nEvtWorkItem\n"));
    assert!(!outcome.stdout.contains("toast:"), "no summary after an error");
}

/// `wait MS` advances the virtual clock: the toaster heats meanwhile and idles by itself at
/// its idle timeout (docs/kmdf-behaviour.md section 10), which counts from its start; one
/// heating period passes after `start`, so `wait 900` reaches it and `wait 899` does not.
#[test]
fn wait_advances_the_clock_and_the_toaster_idles_at_its_timeout() {
    let period = u64::try_from(TICK.as_millis()).unwrap();
    let timeout = u64::try_from(IDLE_TIMEOUT.as_millis()).unwrap();
    let before = (timeout - period - 1).to_string();
    let outcome = run(&["start", "wait", &before]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(!outcome.stdout.contains("EvtDeviceSelfManagedIoSuspend"), "{}", outcome.stdout);
    // One tick in the period after start, then one each 100 ms of the wait.
    let ticks = outcome.stdout.lines().filter(|l| *l == "EvtTimerFunc").count();
    assert_eq!(ticks, usize::try_from((timeout - 1) / period).unwrap());

    let at = (timeout - period).to_string();
    let outcome = run(&["start", "wait", &at]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(
        &lines[lines.len() - 6..],
        [
            "EvtWorkItem",
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
            "toast: 1 requested, 1 done, 0 failed by flush, 0 pending",
            "invariants: ok (checked after every action)",
        ]
    );
    // Idle, the toaster is not working: no toast is asked for; `wake` brings it back.
    let outcome = run(&["start", "wait", &at, "wake", "remove"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(outcome.stdout.contains(
        "EvtDeviceD0Exit(D3)\nEvtDeviceD0Entry(D3)\nEvtDeviceD0EntryPostInterruptsEnabled(D3)\n"
    ));
    assert!(outcome.stdout.ends_with(
        "toast: 2 requested, 1 done, 1 failed by flush, 0 pending\n\
         invariants: ok (checked after every action)\n"
    ));
    // Also with the period's work still queued: the idle power-down's flush waits for it;
    // a wait that does not reach the timeout runs it once it has ended; the trace is the
    // same every time.
    let late_lives: [&[&str]; 2] = [
        &["start", "wait", &at, "wake", "remove", "--late-work"],
        &["start", "wait", "100", "wait", &before, "wait", "1", "remove", "--late-work"],
    ];
    let late = run(late_lives[0]);
    assert_eq!(late.code, 0, "{}", late.stderr);
    let lines: Vec<&str> = late.stdout.lines().collect();
    let suspend = lines.iter().position(|l| *l == "EvtDeviceSelfManagedIoSuspend").unwrap();
    assert_eq!(lines[suspend + 1], "EvtWorkItem", "{}", late.stdout);
    let short = run(&["start", "wait", "100", "idle", "--late-work"]);
    assert!(
        short.stdout.contains(
            "EvtTimerFunc\nEvtWorkItem\nEvtTimerFunc\nEvtDeviceSelfManagedIoSuspend\nEvtWorkItem\n"
        ),
        "{}",
        short.stdout
    );
    for life in late_lives {
        let first = run(life);
        for _ in 0..20 {
            assert_eq!(run(life), first);
        }
    }
}

#[test]
fn wait_needs_a_number_of_milliseconds() {
    for (args, message) in [
        (
            &["start", "wait"][..],
            "toaster: `wait` needs a number of milliseconds, e.g. wait 1000\n",
        ),
        (
            &["start", "wait", "soon", "remove"],
            "toaster: `soon` in `wait soon` is not a number of milliseconds (1 to 3600000)\n",
        ),
        (
            &["wait", "0"],
            "toaster: `0` in `wait 0` is not a number of milliseconds (1 to 3600000)\n",
        ),
        (
            &["wait", "-5"],
            "toaster: `-5` in `wait -5` is not a number of milliseconds (1 to 3600000)\n",
        ),
        (
            &["wait", "3600001"],
            "toaster: `3600001` in `wait 3600001` is not a number of milliseconds (1 to 3600000)\n",
        ),
    ] {
        let outcome = run(args);
        assert_eq!(
            (outcome.code, outcome.stderr.as_str(), outcome.stdout.as_str()),
            (2, message, "")
        );
    }
    let outcome = run(&["--help"]);
    assert!(outcome.stdout.contains("wait MS"), "{}", outcome.stdout);
}

/// A driver whose timer panics on its first tick, to drive the runner's loop into a bug
/// check (the toaster itself never panics).
mod sparky {
    use std::time::Duration;

    use kmdf::{Device, DeviceInit, Driver, PnpPowerCallbacks, Result, Timer, TimerCallbacks};

    pub struct Sparky;

    impl Driver for Sparky {
        fn driver_entry() -> Result<Self> {
            Ok(Sparky)
        }
        fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
            let device = device_init.create(Wiring)?;
            let timer = Timer::one_shot(device, Spark)?;
            timer.start(Duration::from_millis(50))?;
            Ok(())
        }
    }

    pub struct Wiring;

    kmdf::vtable! {
        impl PnpPowerCallbacks for Wiring {
            fn cleanup(&self, _device: &Device<Self>) {}
        }
    }

    struct Spark;

    kmdf::vtable! {
        impl TimerCallbacks for Spark {
            type Parent = Device<Wiring>;

            fn run(&self, _timer: &Timer<Self>, _device: &Device<Wiring>) {
                panic!("short circuit");
            }
        }
    }
}

#[test]
fn the_runner_s_life_ends_at_a_panic_in_deferred_work() {
    // Issue 11, B3: the heating period after `start` reports the timer's panic; the runner
    // stops there, as a bug check would, and does not apply `idle`.
    let runtime = Runtime::new();
    let driver = runtime.load::<sparky::Sparky>().unwrap();
    let node = driver.add_device().unwrap();
    let panics =
        runner::play(&runtime, &node, &[PnpAction::Start.into(), PnpAction::Idle.into()], false)
            .unwrap()
            .expect("the panic ends the life");
    assert_eq!(
        panics.to_string(),
        format!(
            "EvtTimerFunc panicked on device {}: short circuit (a bug check in the kernel)",
            node.id()
        )
    );
    assert_eq!(node.state(), NodeState::Working, "idle was not applied");
    assert_eq!(runtime.trace().lines().last().unwrap(), "EvtTimerFunc (panicked)");
}
