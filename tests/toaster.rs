//! The toaster sample, driven through scenarios on the host runtime, and its runner's
//! command line. What a driver author would check: every request completes exactly once
//! (toasted, or failed by `SelfManagedIoFlush`), nothing of the element runs after Flush,
//! and Cleanup frees everything Init allocated.

#[path = "../examples/toaster/driver.rs"]
mod driver;
#[path = "../examples/toaster/runner.rs"]
mod runner;

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Rig;
use driver::{
    GUID_DEVINTERFACE_TOASTER, HEAT_TICKS, IDLE_TIMEOUT, Ledger, TICK, TOAST, Toaster,
    ToasterDriver,
};
use kmdf::host::{AssignedResources, FileHandle, NodeState, PendingIo, PnpAction, Runtime, Trace};
use kmdf::{Callback, NtError, NtStatus};

/// The toaster driver loaded with one device added, and an application using it.
struct Bench {
    rig: Rig<ToasterDriver>,
    /// The application's handle, opened at its first read.
    handle: Mutex<Option<FileHandle>>,
    /// Its reads, in the order sent.
    reads: Mutex<Vec<PendingIo>>,
}

impl std::ops::Deref for Bench {
    type Target = Rig<ToasterDriver>;

    fn deref(&self) -> &Self::Target {
        &self.rig
    }
}

fn toaster() -> Bench {
    Bench { rig: Rig::new(), handle: Mutex::new(None), reads: Mutex::new(Vec::new()) }
}

impl Bench {
    /// The driver's record of the reads.
    fn ledger(&self) -> Arc<Ledger> {
        self.driver_value(|driver| Arc::clone(&driver.ledger))
    }

    /// The application asks for toast: a read on its handle (opened first when it has
    /// none); returns the read's number (1, 2, ...).
    fn submit(&self) -> u64 {
        let mut handle = self.handle.lock().unwrap();
        if handle.is_none() {
            *handle = Some(self.node.open(&GUID_DEVINTERFACE_TOASTER).expect("the toaster opens"));
        }
        let read = handle.as_ref().unwrap().read_async(8);
        let mut reads = self.reads.lock().unwrap();
        reads.push(read);
        reads.len() as u64
    }

    /// The reads that completed, in the order sent: (number, status). A toasted read
    /// carries 8 bytes of toast.
    fn completions(&self) -> Vec<(u64, NtStatus)> {
        let reads = self.reads.lock().unwrap();
        reads
            .iter()
            .enumerate()
            .filter_map(|(index, read)| {
                let done = read.completion()?;
                if done.status == NtStatus::SUCCESS {
                    assert_eq!((done.information, done.data), (8, vec![TOAST; 8]));
                }
                Some((index as u64 + 1, done.status))
            })
            .collect()
    }

    /// Lets `ticks` heating periods pass and the work they started finish.
    fn heat(&self, ticks: u32) {
        for _ in 0..ticks {
            self.runtime.advance(TICK).unwrap();
            self.runtime.wait_for_work_items().unwrap();
        }
    }

    /// The end of every scenario: the device is gone, each read completed exactly once,
    /// nothing ran after Flush, and nothing Init allocated is left.
    fn assert_clean_end(&self) {
        assert_eq!(self.node.state(), NodeState::Removed);
        let completions = self.completions();
        let numbers: Vec<u64> = completions.iter().map(|(n, _)| *n).collect();
        let expected: Vec<u64> = (1..=self.reads.lock().unwrap().len() as u64).collect();
        assert_eq!(numbers, expected, "every read completed: {completions:?}");
        let ledger = self.ledger();
        assert_eq!(
            ledger.completed() + ledger.canceled() + ledger.flushed(),
            ledger.submitted(),
            "every read the toaster took ended one way"
        );
        let trace = self.node.trace();
        assert_quiet_after_flush(&trace);
        assert_cleanup_frees_the_element(&trace);
        drop(self.handle.lock().unwrap().take());
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
    assert_eq!(bench.completions(), [(first, NtStatus::SUCCESS)]);
    bench.heat(1);
    assert_eq!(bench.completions(), [(first, NtStatus::SUCCESS), (second, NtStatus::SUCCESS)]);
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
    // Section 9.3, removal: after ReleaseHardware the power-managed queue is purged; the
    // reads the toaster owns are cancelable, so each gets EvtRequestCancel before
    // `SelfManagedIoFlush`, which finds nothing left to fail.
    let lines = bench.node.trace().lines();
    let tail = &lines[lines.iter().position(|l| l == "EvtDeviceReleaseHardware").unwrap()..];
    assert_eq!(
        &tail[..5],
        [
            "EvtDeviceReleaseHardware",
            "EvtRequestCancel",
            "EvtRequestCancel",
            "EvtRequestCancel",
            "EvtDeviceSelfManagedIoFlush"
        ]
    );
    assert_eq!((bench.ledger().completed(), bench.ledger().canceled()), (0, 3));
    assert_eq!(bench.ledger().flushed(), 0);
    assert_eq!(bench.completions(), [1, 2, 3].map(|n| (n, NtStatus::CANCELLED)));
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
    // Section 9.3: the read kept across the idle (EvtIoStop(Suspend)) is cancelled by the
    // removal's purge before `SelfManagedIoFlush`.
    assert_eq!(
        &tail[..4],
        [
            "EvtDeviceSurpriseRemoval",
            "EvtDeviceReleaseHardware",
            "EvtRequestCancel",
            "EvtDeviceSelfManagedIoFlush"
        ]
    );
    assert_eq!(lines.iter().filter(|l| *l == "EvtIoStop(Suspend|Cancelable)").count(), 1);
    assert_eq!(bench.completions(), [(1, NtStatus::SUCCESS), (2, NtStatus::CANCELLED)]);
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
    assert!(bench.completions().is_empty());
    bench.act(PnpAction::Start); // SelfManagedIoRestart, not Init
    bench.heat(u32::try_from(HEAT_TICKS).unwrap());
    assert_eq!(bench.completions(), [(id, NtStatus::SUCCESS)]);
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
/// without `ArmWakeFromS0`). Section 9.3, power references: the toaster's queue is
/// power-managed, so a pending read holds a reference and the toaster does not idle with
/// toast pending; its idle timer runs again once the read is toasted.
#[test]
fn the_toaster_idles_by_itself_after_its_timeout_and_not_before() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    pass(&bench, IDLE_TIMEOUT.checked_sub(MS).unwrap());
    assert_eq!(bench.node.state(), NodeState::Working, "not before its timeout");
    // A read 1 ms before the timeout: pending, it holds the queue's power reference.
    let id = bench.submit();
    pass(&bench, MS);
    assert_eq!(bench.node.state(), NodeState::Working, "not with toast pending");
    assert!(bench.completions().is_empty());
    // The element ticks every 100 ms from the start: at 1000 ms (the first heat) and at
    // 1100 ms, which toasts it.
    assert_eq!(HEAT_TICKS, 2);
    pass(&bench, TICK.checked_sub(MS).unwrap());
    assert!(bench.completions().is_empty());
    pass(&bench, MS);
    assert_eq!(bench.completions(), [(id, NtStatus::SUCCESS)]);
    let _ = bench.runtime.take_trace();
    // Toasted: the reference is gone, the idle timer runs its whole timeout again.
    pass(&bench, IDLE_TIMEOUT.checked_sub(MS).unwrap());
    assert_eq!(bench.node.state(), NodeState::Working);
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
    pass(&bench, IDLE_TIMEOUT.checked_sub(MS).unwrap());
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
    let bench = Bench {
        rig: Rig { runtime, driver, node },
        handle: Mutex::new(None),
        reads: Mutex::new(Vec::new()),
    };
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

/// The default life (section 9.3): a read pends (the toaster owns it, cancelable) across an
/// idle and a wake, gets `EvtIoStop(Suspend|Cancelable)` in the power-down right after
/// `SelfManagedIoSuspend` and `EvtIoResume` in the power-up right before
/// `SelfManagedIoRestart`, and the heating after the wake completes it with its toast.
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
EvtDeviceFileCreate
EvtTimerFunc
EvtWorkItem
EvtIoRead(8)
EvtTimerFunc
EvtWorkItem
EvtDeviceSelfManagedIoSuspend
EvtIoStop(Suspend|Cancelable)
EvtDeviceD0ExitPreInterruptsDisabled(D3)
EvtDeviceD0Exit(D3)
EvtDeviceD0Entry(D3)
EvtDeviceD0EntryPostInterruptsEnabled(D3)
EvtIoResume
EvtDeviceSelfManagedIoRestart
EvtTimerFunc
EvtWorkItem
EvtFileCleanup
EvtFileClose
EvtDestroyCallback(WDFFILEOBJECT)
EvtTimerFunc
EvtWorkItem
EvtDeviceQueryRemove
EvtDeviceSelfManagedIoSuspend
EvtDeviceD0ExitPreInterruptsDisabled(D3Final)
EvtDeviceD0Exit(D3Final)
EvtDeviceReleaseHardware
EvtDeviceSelfManagedIoFlush
EvtDeviceSelfManagedIoCleanup
EvtDestroyCallback(WDFQUEUE)
EvtCleanupCallback(WDFDEVICE)
EvtDestroyCallback(WDFDEVICE)
EvtDestroyCallback(WDFTIMER)
EvtDestroyCallback(WDFWORKITEM)
request 1 open: STATUS_SUCCESS, information 0
request 2 read(8): STATUS_SUCCESS, information 8
toast: 1 requested, 1 done, 0 failed by flush, 0 pending, 0 cancelled
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
            "toast: 0 requested, 0 done, 0 failed by flush, 0 pending, 0 cancelled",
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
    let outcome = run(&["start", "open", "read", "idle", "wake", "--fail", "EvtDeviceD0Entry@2"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    // The failed power-up removes the toaster: the purge cancels the pending read
    // (section 9.3) before `SelfManagedIoFlush`.
    assert!(
        outcome.stdout.contains(
            "EvtDeviceD0Entry(D3) -> STATUS_UNSUCCESSFUL (injected)\n\
         EvtDeviceReleaseHardware\n\
         EvtRequestCancel\n\
         EvtDeviceSelfManagedIoFlush\n\
         EvtDeviceSurpriseRemoval\n\
         EvtDeviceSelfManagedIoCleanup\n"
        ),
        "{}",
        outcome.stdout
    );
    assert!(outcome.stdout.contains(
        "request 2 read(8): STATUS_CANCELLED, information 0\n\
         toast: 1 requested, 0 done, 0 failed by flush, 0 pending, 1 cancelled\n"
    ));

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
            "toast: 0 requested, 0 done, 0 failed by flush, 0 pending, 0 cancelled",
            "invariants: ok (checked after every action)",
        ]
    );
    // Idle, it stays in Dx until `wake` brings it back.
    let outcome = run(&["start", "wait", &at, "wake", "remove"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(outcome.stdout.contains(
        "EvtDeviceD0Exit(D3)\nEvtDeviceD0Entry(D3)\nEvtDeviceD0EntryPostInterruptsEnabled(D3)\n"
    ));
    assert!(outcome.stdout.ends_with(
        "toast: 0 requested, 0 done, 0 failed by flush, 0 pending, 0 cancelled\n\
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
    let panics = runner::play(
        &runtime,
        &node,
        &[PnpAction::Start.into(), PnpAction::Idle.into()],
        false,
        &mut runner::App::default(),
    )
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

// ---- The toaster's I/O (docs/kmdf-behaviour.md section 9) ---------------------------------

/// Section 9.3, `IoStop`/`IoResume`: the read the toaster owns gets
/// `EvtIoStop(Suspend|Cancelable)` right after `SelfManagedIoSuspend` in the idle power-down,
/// which it acknowledges and keeps; nothing heats it in Dx; after the wake it gets
/// `EvtIoResume` right before `SelfManagedIoRestart` and is toasted by the next heats.
#[test]
fn a_read_pends_across_idle_and_wake() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    let id = bench.submit();
    bench.heat(1);
    let _ = bench.runtime.take_trace();
    bench.act(PnpAction::Idle);
    assert_eq!(
        new_lines(&bench),
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtIoStop(Suspend|Cancelable)",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
        ]
    );
    bench.heat(10);
    assert!(new_lines(&bench).is_empty(), "nothing heats in Dx");
    assert!(bench.completions().is_empty(), "still pending");
    assert_eq!(bench.context(Toaster::pending), 1);
    bench.act(PnpAction::Wake);
    assert_eq!(
        new_lines(&bench),
        [
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtIoResume",
            "EvtDeviceSelfManagedIoRestart",
        ]
    );
    // One heat before the idle, one after the wake.
    bench.heat(u32::try_from(HEAT_TICKS).unwrap() - 1);
    assert_eq!(bench.completions(), [(id, NtStatus::SUCCESS)]);
    bench.act(PnpAction::Remove);
    bench.assert_clean_end();
}

/// Section 9.5: the application cancels a read the toaster owns (cancelable): its
/// `EvtRequestCancel` completes it `STATUS_CANCELLED`, and the heating that follows does
/// not complete it again. The toaster's IOCTLs see the pending count change.
#[test]
fn a_read_cancelled_by_the_client() {
    let bench = toaster();
    bench.act(PnpAction::Start);
    bench.submit();
    let second = bench.submit();
    let handle = bench.node.open(&GUID_DEVINTERFACE_TOASTER).unwrap();
    let pending = |handle: &FileHandle| {
        let done = handle.ioctl(driver::IOCTL_TOASTER_PENDING, &[], 4).expect("inline");
        assert_eq!((done.status, done.information), (NtStatus::SUCCESS, 4));
        u32::from_le_bytes(done.data.try_into().unwrap())
    };
    assert_eq!(pending(&handle), 2);
    let _ = bench.runtime.take_trace();
    bench.reads.lock().unwrap()[1].cancel();
    assert_eq!(new_lines(&bench), ["EvtRequestCancel"]);
    assert_eq!(bench.completions(), [(second, NtStatus::CANCELLED)]);
    assert_eq!(pending(&handle), 1);
    bench.heat(u32::try_from(HEAT_TICKS).unwrap());
    assert_eq!(bench.completions(), [(1, NtStatus::SUCCESS), (second, NtStatus::CANCELLED)]);
    assert_eq!((bench.ledger().completed(), bench.ledger().canceled()), (1, 1));
    let heat = handle.ioctl(driver::IOCTL_TOASTER_HEAT_TICKS, &[], 4).expect("inline");
    assert_eq!(heat.data, u32::try_from(HEAT_TICKS).unwrap().to_le_bytes());
    // A buffer too small for the answer: the request's own error (section 9.4).
    let small = handle.ioctl(driver::IOCTL_TOASTER_PENDING, &[], 2).expect("inline");
    assert_eq!(small.status, NtStatus::BUFFER_TOO_SMALL);
    let unknown = handle.ioctl(0x42, &[], 4).expect("inline");
    assert_eq!(unknown.status, NtStatus::INVALID_DEVICE_REQUEST);
    handle.close();
    bench.act(PnpAction::Remove);
    bench.assert_clean_end();
}

/// The exact output of a first start with I/O: the handle's create, a read pending until
/// two heats have toasted it (section 9.4), a write and the device controls completed in
/// their callbacks, then one line per request and the summary.
#[test]
fn the_first_start_with_io() {
    let outcome = run(&[
        "start",
        "open",
        "read",
        "write",
        "ioctl",
        "pending",
        "ioctl",
        "heat-ticks",
        "ioctl",
        "0x42",
        "close",
    ]);
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
EvtDeviceFileCreate
EvtTimerFunc
EvtWorkItem
EvtIoRead(8)
EvtTimerFunc
EvtWorkItem
EvtIoWrite(8)
EvtTimerFunc
EvtWorkItem
EvtIoDeviceControl(0x226000, 4, 0)
EvtTimerFunc
EvtWorkItem
EvtIoDeviceControl(0x226004, 4, 0)
EvtTimerFunc
EvtWorkItem
EvtIoDeviceControl(0x42, 4, 0)
EvtTimerFunc
EvtWorkItem
EvtFileCleanup
EvtFileClose
EvtDestroyCallback(WDFFILEOBJECT)
request 1 open: STATUS_SUCCESS, information 0
request 2 read(8): STATUS_SUCCESS, information 8
request 3 write(8): STATUS_SUCCESS, information 8
request 4 ioctl(0x226000): STATUS_SUCCESS, information 4
request 5 ioctl(0x226004): STATUS_SUCCESS, information 4
request 6 ioctl(0x42): STATUS_INVALID_DEVICE_REQUEST, information 0
toast: 1 requested, 1 done, 0 failed by flush, 0 pending, 0 cancelled
invariants: ok (checked after every action)
";
    assert_eq!(outcome.stdout, expected);
    assert_eq!(driver::IOCTL_TOASTER_PENDING, 0x0022_6000);
}

/// The runner's client actions: `cancel` takes the oldest pending request, a read left
/// pending is listed as such, an open before the interface is enabled fails with the
/// client's status (section 9.7), and the actions that are not possible or badly written
/// fail clearly.
#[test]
fn the_runner_s_client_actions_and_their_errors() {
    let outcome = run(&["start", "open", "read", "cancel", "read"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(outcome.stdout.contains("EvtIoRead(8)\nEvtTimerFunc\nEvtWorkItem\nEvtRequestCancel\n"));
    assert!(outcome.stdout.contains(
        "EvtIoRead(8)\n\
         request 1 open: STATUS_SUCCESS, information 0\n\
         request 2 read(8): STATUS_CANCELLED, information 0\n\
         request 3 read(8): pending\n\
         toast: 2 requested, 0 done, 0 failed by flush, 1 pending, 1 cancelled\n"
    ));
    let outcome = run(&["open", "start"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome.stdout.contains("request 1 open: STATUS_OBJECT_NAME_NOT_FOUND, information 0\n")
    );

    for (args, message) in [
        (&["start", "read"][..], "toaster: `read`: no handle is open (`open` one first)\n"),
        (
            &["start", "ioctl", "pending"],
            "toaster: `ioctl`: no handle is open (`open` one first)\n",
        ),
        (&["start", "open", "cancel"], "toaster: `cancel`: no request is pending\n"),
        (&["start", "close"], "toaster: `close`: no handle is open\n"),
    ] {
        let outcome = run(args);
        assert_eq!((outcome.code, outcome.stderr.as_str()), (1, message), "{args:?}");
        assert!(!outcome.stdout.contains("toast:"), "no summary after an error");
    }
    for (args, message) in [
        (
            &["start", "open", "ioctl"][..],
            "toaster: `ioctl` needs a code: pending, heat-ticks or a number, e.g. ioctl pending\n",
        ),
        (
            &["ioctl", "toast"],
            "toaster: `toast` in `ioctl toast` is not an IOCTL: pending, heat-ticks, or a 32-bit \
             number (decimal or 0x hex)\n",
        ),
        (
            &["ioctl", "0x1ffffffff"],
            "toaster: `0x1ffffffff` in `ioctl 0x1ffffffff` is not an IOCTL: pending, \
             heat-ticks, or a 32-bit number (decimal or 0x hex)\n",
        ),
    ] {
        let outcome = run(args);
        assert_eq!(
            (outcome.code, outcome.stderr.as_str(), outcome.stdout.as_str()),
            (2, message, "")
        );
    }
}
