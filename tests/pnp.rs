//! PnP, power and self-managed I/O on the host runtime: one test per row of
//! docs/kmdf-behaviour.md section 1 (callback order per scenario) and section 2 (failure paths),
//! invalid actions, and registration of only the callbacks a driver implements.

mod common;

use common::{FullDevice, full_device, lines};
use kmdf::host::{HarnessError, NodeState, PnpAction, PnpError, Runtime};
use kmdf::{Callback, Device, DeviceInit, DevicePowerState, Driver, NtError, PnpPowerCallbacks};

const PREPARE: &str = "EvtDevicePrepareHardware";
const RELEASE: &str = "EvtDeviceReleaseHardware";
const ENTRY_D3FINAL: &str = "EvtDeviceD0Entry(D3Final)";
const POST_D3FINAL: &str = "EvtDeviceD0EntryPostInterruptsEnabled(D3Final)";
const ENTRY_D3: &str = "EvtDeviceD0Entry(D3)";
const POST_D3: &str = "EvtDeviceD0EntryPostInterruptsEnabled(D3)";
const PRE_D3: &str = "EvtDeviceD0ExitPreInterruptsDisabled(D3)";
const EXIT_D3: &str = "EvtDeviceD0Exit(D3)";
const PRE_D3FINAL: &str = "EvtDeviceD0ExitPreInterruptsDisabled(D3Final)";
const EXIT_D3FINAL: &str = "EvtDeviceD0Exit(D3Final)";
const QUERY_REMOVE: &str = "EvtDeviceQueryRemove";
const QUERY_STOP: &str = "EvtDeviceQueryStop";
const SURPRISE: &str = "EvtDeviceSurpriseRemoval";
const INIT: &str = "EvtDeviceSelfManagedIoInit";
const SUSPEND: &str = "EvtDeviceSelfManagedIoSuspend";
const RESTART: &str = "EvtDeviceSelfManagedIoRestart";
const FLUSH: &str = "EvtDeviceSelfManagedIoFlush";
const SMIO_CLEANUP: &str = "EvtDeviceSelfManagedIoCleanup";
const CLEANUP: &str = "EvtCleanupCallback(WDFDEVICE)";
const DESTROY: &str = "EvtDestroyCallback(WDFDEVICE)";

/// The device torn down after `SmioCleanup`: the object's cleanup, then destroy.
const OBJECT_GONE: [&str; 2] = [CLEANUP, DESTROY];

fn started() -> (Runtime, kmdf::host::LoadedDriver<common::FullDriver>, kmdf::host::DeviceNode) {
    let (runtime, driver, node) = full_device();
    node.start().unwrap();
    let _ = lines(&runtime);
    (runtime, driver, node)
}

fn idle() -> (Runtime, kmdf::host::LoadedDriver<common::FullDriver>, kmdf::host::DeviceNode) {
    let (runtime, driver, node) = started();
    node.apply(PnpAction::Idle).unwrap();
    let _ = lines(&runtime);
    (runtime, driver, node)
}

fn concat(parts: &[&[&str]]) -> Vec<String> {
    parts.iter().flat_map(|part| part.iter().map(|s| (*s).to_owned())).collect()
}

// ---- Section 1: callback order per scenario --------------------------------------------

#[test]
fn first_start_prepares_hardware_powers_up_and_inits_smio() {
    let runtime = Runtime::new();
    let driver = runtime.load::<common::FullDriver>().unwrap();
    let node = driver.add_device().unwrap();
    node.start().unwrap();
    assert_eq!(
        lines(&runtime),
        ["DriverEntry", "EvtDriverDeviceAdd", PREPARE, ENTRY_D3FINAL, POST_D3FINAL, INIT]
    );
    assert_eq!(node.state(), NodeState::Working);
    // The trace records what the driver's code really received.
    let seen = node.with_context(|d: &FullDevice| d.calls.lock().clone()).unwrap();
    assert_eq!(seen, [PREPARE, ENTRY_D3FINAL, POST_D3FINAL, INIT]);
}

#[test]
fn idle_suspends_smio_and_leaves_d0() {
    let (runtime, _driver, node) = started();
    node.apply(PnpAction::Idle).unwrap();
    assert_eq!(lines(&runtime), [SUSPEND, PRE_D3, EXIT_D3]);
    assert_eq!(node.state(), NodeState::Idle);
}

#[test]
fn wake_returns_to_d0_and_restarts_smio() {
    let (runtime, _driver, node) = idle();
    node.apply(PnpAction::Wake).unwrap();
    assert_eq!(lines(&runtime), [ENTRY_D3, POST_D3, RESTART]);
    assert_eq!(node.state(), NodeState::Working);
}

#[test]
fn system_sleep_from_d0_powers_down_and_keeps_the_hardware() {
    let (runtime, _driver, node) = started();
    node.apply(PnpAction::Sleep).unwrap();
    // As idle to Dx, with the Dx IRP's target D3; no ReleaseHardware.
    assert_eq!(lines(&runtime), [SUSPEND, PRE_D3, EXIT_D3]);
    assert_eq!(node.state(), NodeState::Asleep { was_idle: false });
}

#[test]
fn system_sleep_while_idle_calls_nothing() {
    let (runtime, _driver, node) = idle();
    node.apply(PnpAction::Sleep).unwrap();
    assert!(lines(&runtime).is_empty());
    assert_eq!(node.state(), NodeState::Asleep { was_idle: true });
}

#[test]
fn system_resume_returns_to_the_power_state_before_sleep() {
    let (runtime, _driver, node) = started();
    node.apply(PnpAction::Sleep).unwrap();
    let _ = lines(&runtime);
    node.apply(PnpAction::Resume).unwrap();
    assert_eq!(lines(&runtime), [ENTRY_D3, POST_D3, RESTART]);
    assert_eq!(node.state(), NodeState::Working);

    // A device that was idle (and cannot wake) stays in Dx.
    let (runtime, _driver, node) = idle();
    node.apply(PnpAction::Sleep).unwrap();
    node.apply(PnpAction::Resume).unwrap();
    assert!(lines(&runtime).is_empty());
    assert_eq!(node.state(), NodeState::Idle);
}

#[test]
fn a_vetoed_query_remove_leaves_the_device_started() {
    let (runtime, _driver, node) = started();
    runtime.inject_failure(Callback::QueryRemove, 1, NtError::DEVICE_BUSY).unwrap();
    node.apply(PnpAction::QueryRemove).unwrap();
    assert_eq!(lines(&runtime), ["EvtDeviceQueryRemove -> STATUS_DEVICE_BUSY (injected)"]);
    assert_eq!(node.state(), NodeState::Working);
}

#[test]
fn a_cancelled_query_remove_calls_nothing_and_the_device_works_on() {
    // From D0.
    let (runtime, _driver, node) = started();
    node.apply(PnpAction::QueryRemove).unwrap();
    assert_eq!(lines(&runtime), [QUERY_REMOVE]);
    assert_eq!(node.state(), NodeState::QueryRemovePending);
    node.apply(PnpAction::CancelRemove).unwrap();
    assert!(lines(&runtime).is_empty(), "no callback for the cancel");
    assert_eq!(node.state(), NodeState::Working);
    // The device may idle again.
    node.apply(PnpAction::Idle).unwrap();
    assert_eq!(lines(&runtime), [SUSPEND, PRE_D3, EXIT_D3]);

    // From Dx: the device is brought to D0 after the query.
    let (runtime, _driver, node) = idle();
    node.apply(PnpAction::QueryRemove).unwrap();
    assert_eq!(lines(&runtime), [QUERY_REMOVE, ENTRY_D3, POST_D3, RESTART]);
    node.apply(PnpAction::CancelRemove).unwrap();
    assert!(lines(&runtime).is_empty());
}

#[test]
fn orderly_remove_queries_powers_down_releases_and_cleans_up() {
    let (runtime, _driver, node) = started();
    node.remove().unwrap();
    let tail = [SUSPEND, PRE_D3FINAL, EXIT_D3FINAL, RELEASE, FLUSH, SMIO_CLEANUP];
    assert_eq!(lines(&runtime), concat(&[&[QUERY_REMOVE], &tail, &OBJECT_GONE]));
    assert_eq!(node.state(), NodeState::Removed);

    // From Dx: to D0 first.
    let (runtime, _driver, node) = idle();
    node.remove().unwrap();
    assert_eq!(
        lines(&runtime),
        concat(&[&[QUERY_REMOVE, ENTRY_D3, POST_D3, RESTART], &tail, &OBJECT_GONE])
    );

    // With a query-remove outstanding, none is sent again.
    let (runtime, _driver, node) = started();
    node.apply(PnpAction::QueryRemove).unwrap();
    let _ = lines(&runtime);
    node.remove().unwrap();
    assert_eq!(lines(&runtime), concat(&[&tail, &OBJECT_GONE]));
}

#[test]
fn a_vetoed_orderly_remove_leaves_the_device_started() {
    let (runtime, _driver, node) = started();
    runtime.inject_failure(Callback::QueryRemove, 1, NtError::DEVICE_BUSY).unwrap();
    node.remove().unwrap();
    assert_eq!(lines(&runtime), ["EvtDeviceQueryRemove -> STATUS_DEVICE_BUSY (injected)"]);
    assert_eq!(node.state(), NodeState::Working);
}

#[test]
fn surprise_removal_in_d0_calls_the_driver_first_then_powers_down() {
    let (runtime, _driver, node) = started();
    node.apply(PnpAction::SurpriseRemove).unwrap();
    assert_eq!(
        lines(&runtime),
        concat(&[
            &[SURPRISE, SUSPEND, PRE_D3FINAL, EXIT_D3FINAL, RELEASE, FLUSH],
            &[SMIO_CLEANUP],
            &OBJECT_GONE
        ])
    );
    assert_eq!(node.state(), NodeState::Removed);
}

#[test]
fn surprise_removal_in_dx_does_not_power_down_again() {
    let (runtime, _driver, node) = idle();
    node.apply(PnpAction::SurpriseRemove).unwrap();
    // No second Suspend or D0Exit.
    assert_eq!(
        lines(&runtime),
        concat(&[&[SURPRISE, RELEASE, FLUSH], &[SMIO_CLEANUP], &OBJECT_GONE])
    );
}

#[test]
fn surprise_removal_while_stopped_only_flushes_and_cleans_up() {
    let (runtime, _driver, node) = started();
    node.apply(PnpAction::Stop).unwrap();
    let _ = lines(&runtime);
    node.apply(PnpAction::SurpriseRemove).unwrap();
    assert_eq!(lines(&runtime), concat(&[&[SURPRISE, FLUSH], &[SMIO_CLEANUP], &OBJECT_GONE]));
}

#[test]
fn rebalance_stop_releases_the_hardware_and_the_next_start_restarts_smio() {
    let (runtime, _driver, node) = started();
    node.apply(PnpAction::Stop).unwrap();
    assert_eq!(lines(&runtime), [QUERY_STOP, SUSPEND, PRE_D3FINAL, EXIT_D3FINAL, RELEASE]);
    assert_eq!(node.state(), NodeState::Stopped);
    node.start().unwrap();
    // SmioRestart, not Init.
    assert_eq!(lines(&runtime), [PREPARE, ENTRY_D3FINAL, POST_D3FINAL, RESTART]);
    assert_eq!(node.state(), NodeState::Working);

    // From Dx, the device is brought to D0 first.
    let (runtime, _driver, node) = idle();
    node.apply(PnpAction::Stop).unwrap();
    assert_eq!(
        lines(&runtime),
        [QUERY_STOP, ENTRY_D3, POST_D3, RESTART, SUSPEND, PRE_D3FINAL, EXIT_D3FINAL, RELEASE]
    );
}

#[test]
fn a_cancelled_or_vetoed_query_stop_leaves_the_device_started() {
    let (runtime, _driver, node) = started();
    node.apply(PnpAction::QueryStop).unwrap();
    assert_eq!(lines(&runtime), [QUERY_STOP]);
    node.apply(PnpAction::CancelStop).unwrap();
    assert!(lines(&runtime).is_empty());
    assert_eq!(node.state(), NodeState::Working);

    // A vetoed query-stop leaves the device started too.
    runtime.inject_failure(Callback::QueryStop, 2, NtError::DEVICE_BUSY).unwrap();
    node.apply(PnpAction::Stop).unwrap();
    assert_eq!(lines(&runtime), ["EvtDeviceQueryStop -> STATUS_DEVICE_BUSY (injected)"]);
    assert_eq!(node.state(), NodeState::Working);
}

// ---- Section 2: when a callback fails --------------------------------------------------

fn failing(
    callback: Callback,
) -> (Runtime, kmdf::host::LoadedDriver<common::FullDriver>, kmdf::host::DeviceNode) {
    let (runtime, driver, node) = full_device();
    runtime.inject_failure(callback, 1, NtError::UNSUCCESSFUL).unwrap();
    (runtime, driver, node)
}

fn failed(line: &str) -> String {
    format!("{line} -> STATUS_UNSUCCESSFUL (injected)")
}

#[test]
fn a_failed_prepare_hardware_removes_the_device_without_powering_up() {
    let (runtime, _driver, node) = failing(Callback::PrepareHardware);
    node.start().unwrap();
    // ReleaseHardware always paired; no D0Entry, no SMIO callback at all.
    let expected = [failed(PREPARE), RELEASE.into(), CLEANUP.into(), DESTROY.into()];
    assert_eq!(lines(&runtime), expected);
    assert_eq!(node.state(), NodeState::Removed);
    // The driver's own code never ran PrepareHardware (it was injected).
}

#[test]
fn a_failed_first_d0_entry_removes_the_device_without_d0_exit() {
    let (runtime, _driver, node) = failing(Callback::D0Entry);
    node.start().unwrap();
    // Never D0Exit for the failed entry; no SMIO callback.
    let expected =
        [PREPARE.into(), failed(ENTRY_D3FINAL), RELEASE.into(), CLEANUP.into(), DESTROY.into()];
    assert_eq!(lines(&runtime), expected);
    assert_eq!(node.state(), NodeState::Removed);
}

#[test]
fn a_failed_d0_entry_on_wake_fails_the_device_with_a_late_surprise_removal() {
    let (runtime, _driver, node) = full_device();
    node.start().unwrap();
    node.apply(PnpAction::Idle).unwrap();
    runtime.inject_failure(Callback::D0Entry, 2, NtError::UNSUCCESSFUL).unwrap();
    let _ = lines(&runtime);
    node.apply(PnpAction::Wake).unwrap();
    // The device is failed: surprise removal late, then SmioCleanup.
    let expected = [
        failed(ENTRY_D3),
        RELEASE.into(),
        FLUSH.into(),
        SURPRISE.into(),
        SMIO_CLEANUP.into(),
        CLEANUP.into(),
        DESTROY.into(),
    ];
    assert_eq!(lines(&runtime), expected);
}

#[test]
fn a_failed_d0_entry_post_gets_d0_exit_without_d0_exit_pre() {
    let (runtime, _driver, node) = failing(Callback::D0EntryPostInterruptsEnabled);
    node.start().unwrap();
    // D0Exit(D3Final) without D0ExitPre, then the start teardown.
    let expected = [
        PREPARE.into(),
        ENTRY_D3FINAL.into(),
        failed(POST_D3FINAL),
        EXIT_D3FINAL.into(),
        RELEASE.into(),
        CLEANUP.into(),
        DESTROY.into(),
    ];
    assert_eq!(lines(&runtime), expected);
}

#[test]
fn a_failed_smio_init_powers_down_without_suspend_and_removes_the_device() {
    let (runtime, _driver, node) = failing(Callback::SelfManagedIoInit);
    node.start().unwrap();
    // No SmioSuspend.
    let expected = [
        PREPARE.into(),
        ENTRY_D3FINAL.into(),
        POST_D3FINAL.into(),
        failed(INIT),
        PRE_D3FINAL.into(),
        EXIT_D3FINAL.into(),
        RELEASE.into(),
        FLUSH.into(),
        SMIO_CLEANUP.into(),
        CLEANUP.into(),
        DESTROY.into(),
    ];
    assert_eq!(lines(&runtime), expected);
    let seen = runtime.trace();
    assert_eq!(seen.count(Callback::SelfManagedIoSuspend), 0);
}

#[test]
fn a_failed_smio_restart_on_wake_fails_the_running_device() {
    // On wake: the same tail as a failed Init, no Suspend; the running device is failed, so
    // the PnP manager's surprise removal comes before the final Cleanup.
    let (runtime, _driver, node) = full_device();
    node.start().unwrap();
    node.apply(PnpAction::Idle).unwrap();
    runtime.inject_failure(Callback::SelfManagedIoRestart, 1, NtError::UNSUCCESSFUL).unwrap();
    let _ = lines(&runtime);
    node.apply(PnpAction::Wake).unwrap();
    let expected = [
        ENTRY_D3.into(),
        POST_D3.into(),
        failed(RESTART),
        PRE_D3FINAL.into(),
        EXIT_D3FINAL.into(),
        RELEASE.into(),
        FLUSH.into(),
        SURPRISE.into(),
        SMIO_CLEANUP.into(),
        CLEANUP.into(),
        DESTROY.into(),
    ];
    assert_eq!(lines(&runtime), expected);
}

// ---- Section 2: a failed start after a rebalance stop fails the device ---------------------

/// A device started, then stopped for rebalance (from D0, or from idle: the query-stop
/// brings it back to D0 first), with `callback`'s next call failing and an empty trace.
fn stopped_then_failing(
    from_idle: bool,
    callback: Callback,
) -> (Runtime, kmdf::host::LoadedDriver<common::FullDriver>, kmdf::host::DeviceNode) {
    let (runtime, driver, node) = full_device();
    node.start().unwrap();
    if from_idle {
        node.apply(PnpAction::Idle).unwrap();
    }
    node.apply(PnpAction::Stop).unwrap();
    assert_eq!(node.state(), NodeState::Stopped);
    let nth = runtime.trace().count(callback) as u64 + 1;
    runtime.inject_failure(callback, nth, NtError::UNSUCCESSFUL).unwrap();
    let _ = lines(&runtime);
    (runtime, driver, node)
}

/// The teardown of a device that had run (section 2, "start after stop" rows):
/// ReleaseHardware, SmioFlush, the late SurpriseRemoval, SmioCleanup, the object.
const FAILED_DEVICE_TAIL: [&str; 6] = [RELEASE, FLUSH, SURPRISE, SMIO_CLEANUP, CLEANUP, DESTROY];

#[test]
fn a_failed_start_after_a_stop_fails_the_device() {
    for from_idle in [false, true] {
        // PrepareHardware: ReleaseHardware (always paired), then the failed device's tail.
        let (runtime, _driver, node) = stopped_then_failing(from_idle, Callback::PrepareHardware);
        node.start().unwrap();
        let expected = concat(&[&[&failed(PREPARE)], &FAILED_DEVICE_TAIL]);
        assert_eq!(lines(&runtime), expected, "from_idle {from_idle}");
        assert_eq!(node.state(), NodeState::Removed);

        // D0Entry: never D0Exit for the failed entry.
        let (runtime, _driver, node) = stopped_then_failing(from_idle, Callback::D0Entry);
        node.start().unwrap();
        let expected = concat(&[&[PREPARE, &failed(ENTRY_D3FINAL)], &FAILED_DEVICE_TAIL]);
        assert_eq!(lines(&runtime), expected, "from_idle {from_idle}");

        // D0EntryPost: D0Exit without D0ExitPre.
        let (runtime, _driver, node) =
            stopped_then_failing(from_idle, Callback::D0EntryPostInterruptsEnabled);
        node.start().unwrap();
        let expected = concat(&[
            &[PREPARE, ENTRY_D3FINAL, &failed(POST_D3FINAL), EXIT_D3FINAL],
            &FAILED_DEVICE_TAIL,
        ]);
        assert_eq!(lines(&runtime), expected, "from_idle {from_idle}");

        // SmioRestart (not Init): the queues stop, D0ExitPre, D0Exit; no Suspend.
        let (runtime, _driver, node) =
            stopped_then_failing(from_idle, Callback::SelfManagedIoRestart);
        node.start().unwrap();
        let expected = concat(&[
            &[PREPARE, ENTRY_D3FINAL, POST_D3FINAL, &failed(RESTART), PRE_D3FINAL, EXIT_D3FINAL],
            &FAILED_DEVICE_TAIL,
        ]);
        assert_eq!(lines(&runtime), expected, "from_idle {from_idle}");
        assert_eq!(node.state(), NodeState::Removed);
    }
}

// ---- Section 2: a failed power-up forced by a query does not fail the query ----------------

/// An idle device whose next D0Entry/D0EntryPost/SmioRestart (`callback`) fails, queried
/// with `query` (query-remove or query-stop). Returns the lines of the query.
fn query_with_failing_power_up(
    callback: Callback,
    query: PnpAction,
) -> (Runtime, kmdf::host::LoadedDriver<common::FullDriver>, kmdf::host::DeviceNode, Vec<String>) {
    let (runtime, driver, node) = full_device();
    node.start().unwrap();
    node.apply(PnpAction::Idle).unwrap();
    let nth = runtime.trace().count(callback) as u64 + 1;
    runtime.inject_failure(callback, nth, NtError::UNSUCCESSFUL).unwrap();
    let _ = lines(&runtime);
    node.apply(query).unwrap();
    let lines = lines(&runtime);
    (runtime, driver, node, lines)
}

/// What each failing callback of the forced power-up leaves in the trace after the query.
fn forced_power_up(query: &str, callback: Callback) -> Vec<String> {
    match callback {
        Callback::D0Entry => vec![query.into(), failed(ENTRY_D3)],
        Callback::D0EntryPostInterruptsEnabled => {
            vec![query.into(), ENTRY_D3.into(), failed(POST_D3), EXIT_D3FINAL.into()]
        }
        _ => vec![
            query.into(),
            ENTRY_D3.into(),
            POST_D3.into(),
            failed(RESTART),
            PRE_D3FINAL.into(),
            EXIT_D3FINAL.into(),
        ],
    }
}

const POWER_UP_STEPS: [Callback; 3] =
    [Callback::D0Entry, Callback::D0EntryPostInterruptsEnabled, Callback::SelfManagedIoRestart];

#[test]
fn a_failed_forced_power_up_then_orderly_remove_runs_the_tail_without_surprise_removal() {
    for callback in POWER_UP_STEPS {
        let (runtime, _driver, node, query) =
            query_with_failing_power_up(callback, PnpAction::QueryRemove);
        assert_eq!(query, forced_power_up(QUERY_REMOVE, callback), "{callback}");
        // FxPowerIdleMachine::PowerFailed still reports D0: the query succeeds.
        assert_eq!(node.state(), NodeState::QueryRemovePending, "{callback}");
        node.remove().unwrap();
        // The device is already off: no second power-down, no SurpriseRemoval.
        assert_eq!(lines(&runtime), [RELEASE, FLUSH, SMIO_CLEANUP, CLEANUP, DESTROY], "{callback}");
        assert_eq!(node.state(), NodeState::Removed);
    }
}

#[test]
fn a_failed_forced_power_up_then_cancel_leaves_the_device_failed_until_surprise_removal() {
    for (query, cancel, name) in [
        (PnpAction::QueryRemove, PnpAction::CancelRemove, QUERY_REMOVE),
        (PnpAction::QueryStop, PnpAction::CancelStop, QUERY_STOP),
    ] {
        for callback in POWER_UP_STEPS {
            let (runtime, _driver, node, lines_of_query) =
                query_with_failing_power_up(callback, query);
            assert_eq!(lines_of_query, forced_power_up(name, callback), "{callback}");
            // The cancel calls nothing; the device is back in the started state, failed.
            node.apply(cancel).unwrap();
            assert!(lines(&runtime).is_empty());
            assert_eq!(node.state(), NodeState::Failed);
            // The failed device is not idled, woken or started any more.
            for refused in [PnpAction::Idle, PnpAction::Wake, PnpAction::Start] {
                assert_eq!(
                    node.apply(refused),
                    Err(PnpError::InvalidAction { action: refused, state: NodeState::Failed })
                );
            }
            // A query asks the driver, then fails: the power reference it takes fails
            // (FxPowerIdleMachine::IoIncrementWithFlags, FxPowerIdlePowerFailed).
            for (action, line) in [
                (PnpAction::QueryRemove, QUERY_REMOVE),
                (PnpAction::Remove, QUERY_REMOVE),
                (PnpAction::QueryStop, QUERY_STOP),
                (PnpAction::Stop, QUERY_STOP),
            ] {
                node.apply(action).unwrap();
                assert_eq!(lines(&runtime), [line], "{action}");
                assert_eq!(node.state(), NodeState::Failed);
            }
            // The PnP manager's surprise removal: SurpriseRemoval first, then the tail.
            node.apply(PnpAction::SurpriseRemove).unwrap();
            assert_eq!(
                lines(&runtime),
                [SURPRISE, RELEASE, FLUSH, SMIO_CLEANUP, CLEANUP, DESTROY],
                "{query} {callback}"
            );
            assert_eq!(node.state(), NodeState::Removed);
        }
    }
}

#[test]
fn a_failed_forced_power_up_then_surprise_removal_while_pending() {
    let (runtime, _driver, node, _) =
        query_with_failing_power_up(Callback::D0Entry, PnpAction::QueryRemove);
    node.apply(PnpAction::SurpriseRemove).unwrap();
    assert_eq!(lines(&runtime), [SURPRISE, RELEASE, FLUSH, SMIO_CLEANUP, CLEANUP, DESTROY]);
}

#[test]
fn a_failed_forced_power_up_then_stop_removes_the_failed_device() {
    // The stop releases the hardware of the device that is already off; KMDF had set
    // m_InternalFailure when the power-up failed, so the device is then removed as a failed
    // device (as when ReleaseHardware fails during a stop).
    let (runtime, _driver, node, _) =
        query_with_failing_power_up(Callback::D0Entry, PnpAction::QueryStop);
    assert_eq!(node.state(), NodeState::QueryStopPending);
    node.apply(PnpAction::Stop).unwrap();
    assert_eq!(lines(&runtime), FAILED_DEVICE_TAIL);
    assert_eq!(node.state(), NodeState::Removed);
}

// ---- Section 1: a start of a started device restarts it ----------------------------------

#[test]
fn a_start_of_a_started_device_restarts_it() {
    // m_PnpStartedOtherStates: PnpEventStartDevice -> PnpEventRestart. No query; the stop of
    // a rebalance, ReleaseHardware, then the start with the new resources (SmioRestart).
    let (runtime, _driver, node) = started();
    node.start().unwrap();
    assert_eq!(
        lines(&runtime),
        [
            SUSPEND,
            PRE_D3FINAL,
            EXIT_D3FINAL,
            RELEASE,
            PREPARE,
            ENTRY_D3FINAL,
            POST_D3FINAL,
            RESTART
        ]
    );
    assert_eq!(node.state(), NodeState::Working);

    // An idle device is brought back to D0 first (PwrPolStoppingResetDevice).
    let (runtime, _driver, node) = idle();
    node.start().unwrap();
    assert_eq!(
        lines(&runtime),
        [
            ENTRY_D3,
            POST_D3,
            RESTART,
            SUSPEND,
            PRE_D3FINAL,
            EXIT_D3FINAL,
            RELEASE,
            PREPARE,
            ENTRY_D3FINAL,
            POST_D3FINAL,
            RESTART
        ]
    );
    assert_eq!(node.state(), NodeState::Working);
}

#[test]
fn a_failed_restart_of_a_started_device_fails_the_device() {
    let (runtime, _driver, node) = full_device();
    node.start().unwrap();
    runtime.inject_failure(Callback::PrepareHardware, 2, NtError::UNSUCCESSFUL).unwrap();
    let _ = lines(&runtime);
    node.start().unwrap();
    let expected = concat(&[
        &[SUSPEND, PRE_D3FINAL, EXIT_D3FINAL, RELEASE, &failed(PREPARE)],
        &FAILED_DEVICE_TAIL,
    ]);
    assert_eq!(lines(&runtime), expected);
    assert_eq!(node.state(), NodeState::Removed);
}

// ---- A device that never started ------------------------------------------------------------

#[test]
fn a_never_started_device_takes_a_query_remove_without_a_callback() {
    // PnpEventInitQueryRemove, then PnpEventInitQueryRemoveCanceled back to Init.
    let (runtime, _driver, node) = full_device();
    let _ = lines(&runtime);
    node.apply(PnpAction::QueryRemove).unwrap();
    node.apply(PnpAction::CancelRemove).unwrap();
    assert!(lines(&runtime).is_empty());
    assert_eq!(node.state(), NodeState::Added);
    node.start().unwrap();
    assert_eq!(lines(&runtime), [PREPARE, ENTRY_D3FINAL, POST_D3FINAL, INIT]);
    // Or the remove follows: the object is deleted, no PnP callback.
    let (runtime, _driver, node) = full_device();
    let _ = lines(&runtime);
    node.apply(PnpAction::QueryRemove).unwrap();
    node.remove().unwrap();
    assert_eq!(lines(&runtime), OBJECT_GONE);
}

// ---- Section 2: cancels after a vetoed query -------------------------------------------

#[test]
fn a_cancel_after_a_vetoed_query_is_taken_without_a_callback() {
    for (query, cancel, callback) in [
        (PnpAction::QueryRemove, PnpAction::CancelRemove, Callback::QueryRemove),
        (PnpAction::QueryStop, PnpAction::CancelStop, Callback::QueryStop),
        (PnpAction::Remove, PnpAction::CancelRemove, Callback::QueryRemove),
        (PnpAction::Stop, PnpAction::CancelStop, Callback::QueryStop),
    ] {
        for from_idle in [false, true] {
            let (runtime, _driver, node) = if from_idle { idle() } else { started() };
            let state = node.state();
            runtime.inject_failure(callback, 1, NtError::DEVICE_BUSY).unwrap();
            node.apply(query).unwrap();
            assert_eq!(lines(&runtime).len(), 1, "only the vetoing query ran");
            // m_PnpStartedOtherStates: StartedCancelRemove / StartedCancelStop.
            node.apply(cancel).unwrap();
            assert!(lines(&runtime).is_empty(), "{query} then {cancel}");
            assert_eq!(node.state(), state);
            // The device goes on as before.
            node.remove().unwrap();
            assert_eq!(node.state(), NodeState::Removed);
        }
    }
}

#[test]
fn a_failed_smio_suspend_completes_the_power_down_then_fails_the_device() {
    let (runtime, _driver, node) = started();
    runtime.inject_failure(Callback::SelfManagedIoSuspend, 1, NtError::UNSUCCESSFUL).unwrap();
    node.apply(PnpAction::Idle).unwrap();
    // The power-down goes on, is reported failed, then the device is torn down; never
    // SmioRestart.
    let expected = [
        failed(SUSPEND),
        PRE_D3.into(),
        EXIT_D3.into(),
        RELEASE.into(),
        FLUSH.into(),
        SURPRISE.into(),
        SMIO_CLEANUP.into(),
        CLEANUP.into(),
        DESTROY.into(),
    ];
    assert_eq!(lines(&runtime), expected);
    assert_eq!(runtime.trace().count(Callback::SelfManagedIoRestart), 0);
    assert_eq!(node.state(), NodeState::Removed);
}

#[test]
fn a_failed_release_hardware_during_remove_is_ignored() {
    let (runtime, _driver, node) = started();
    runtime.inject_failure(Callback::ReleaseHardware, 1, NtError::UNSUCCESSFUL).unwrap();
    node.remove().unwrap();
    // Ignored: the removal continues.
    let expected = [
        QUERY_REMOVE.into(),
        SUSPEND.into(),
        PRE_D3FINAL.into(),
        EXIT_D3FINAL.into(),
        failed(RELEASE),
        FLUSH.into(),
        SMIO_CLEANUP.into(),
        CLEANUP.into(),
        DESTROY.into(),
    ];
    assert_eq!(lines(&runtime), expected);
    assert_eq!(node.state(), NodeState::Removed);
}

#[test]
fn injected_failures_skip_the_drivers_code() {
    let (runtime, _driver, node) = started();
    runtime.inject_failure(Callback::QueryRemove, 1, NtError::DEVICE_BUSY).unwrap();
    node.apply(PnpAction::QueryRemove).unwrap();
    node.apply(PnpAction::QueryRemove).unwrap();
    // The framework reached QueryRemove twice; the driver's code ran only the second time.
    assert_eq!(runtime.trace().count(Callback::QueryRemove), 2);
    let seen = node.with_context(|d: &FullDevice| d.calls.lock().clone()).unwrap();
    assert_eq!(seen.iter().filter(|c| *c == QUERY_REMOVE).count(), 1);
    assert_eq!(node.state(), NodeState::QueryRemovePending);
}

#[test]
fn injection_rejects_callbacks_that_cannot_fail() {
    let runtime = Runtime::new();
    for callback in [
        Callback::SurpriseRemoval,
        Callback::SelfManagedIoFlush,
        Callback::SelfManagedIoCleanup,
        Callback::ObjectCleanup,
        Callback::ObjectDestroy,
        Callback::WorkItem,
        Callback::DriverUnload,
    ] {
        assert_eq!(
            runtime.inject_failure(callback, 1, NtError::UNSUCCESSFUL),
            Err(HarnessError::NotInjectable(callback)),
            "{callback}"
        );
    }
    // A success status cannot be injected: `NtError` has none (a compile-fail doctest of
    // `Runtime::inject_failure` shows it).
    assert_eq!(
        runtime.inject_failure(Callback::D0Entry, 0, NtError::UNSUCCESSFUL),
        Err(HarnessError::ZerothCall)
    );
}

// ---- Invalid actions --------------------------------------------------------------------

/// Brings a fresh device to `state` and returns it with an empty trace.
fn device_in(
    state: NodeState,
) -> (Runtime, kmdf::host::LoadedDriver<common::FullDriver>, kmdf::host::DeviceNode) {
    let (runtime, driver, node) = full_device();
    let steps: &[PnpAction] = match state {
        NodeState::Added => &[],
        NodeState::Working => &[PnpAction::Start],
        NodeState::Idle => &[PnpAction::Start, PnpAction::Idle],
        NodeState::Asleep { was_idle: false } => &[PnpAction::Start, PnpAction::Sleep],
        NodeState::Asleep { was_idle: true } => {
            &[PnpAction::Start, PnpAction::Idle, PnpAction::Sleep]
        }
        NodeState::QueryRemovePending => &[PnpAction::Start, PnpAction::QueryRemove],
        NodeState::QueryStopPending => &[PnpAction::Start, PnpAction::QueryStop],
        NodeState::Stopped => &[PnpAction::Start, PnpAction::Stop],
        NodeState::Removed => &[PnpAction::Start, PnpAction::Remove],
        NodeState::Failed => {
            // The power-up that the query forces fails; the query is cancelled.
            runtime.inject_failure(Callback::D0Entry, 2, NtError::UNSUCCESSFUL).unwrap();
            &[PnpAction::Start, PnpAction::Idle, PnpAction::QueryRemove, PnpAction::CancelRemove]
        }
        _ => unreachable!("a state this test does not know: {state:?}"),
    };
    for step in steps {
        node.apply(*step).unwrap();
    }
    assert_eq!(node.state(), state);
    let _ = lines(&runtime);
    (runtime, driver, node)
}

#[test]
fn invalid_actions_are_refused_without_side_effects() {
    use NodeState::{
        Added, Asleep, Failed, Idle, QueryRemovePending, QueryStopPending, Removed, Stopped,
        Working,
    };
    let valid = |state: NodeState, action: PnpAction| -> bool {
        use PnpAction::*;
        match state {
            Added => matches!(action, Start | QueryRemove | CancelRemove | Remove),
            Working => matches!(
                action,
                Start
                    | Idle
                    | Sleep
                    | QueryRemove
                    | CancelRemove
                    | Remove
                    | SurpriseRemove
                    | QueryStop
                    | CancelStop
                    | Stop
            ),
            NodeState::Idle => matches!(
                action,
                Start
                    | Wake
                    | Sleep
                    | QueryRemove
                    | CancelRemove
                    | Remove
                    | SurpriseRemove
                    | QueryStop
                    | CancelStop
                    | Stop
            ),
            Failed => matches!(
                action,
                QueryRemove
                    | CancelRemove
                    | Remove
                    | QueryStop
                    | CancelStop
                    | Stop
                    | SurpriseRemove
            ),
            Asleep { .. } => matches!(action, Resume),
            QueryRemovePending => matches!(action, CancelRemove | Remove | SurpriseRemove),
            QueryStopPending => matches!(action, CancelStop | Stop | SurpriseRemove),
            Stopped => matches!(action, Start | SurpriseRemove),
            Removed => false,
            _ => unreachable!("a state this test does not know: {state:?}"),
        }
    };
    let states = [
        Added,
        Working,
        Idle,
        Asleep { was_idle: false },
        Asleep { was_idle: true },
        QueryRemovePending,
        QueryStopPending,
        Stopped,
        Failed,
        Removed,
    ];
    let mut refused = 0;
    for state in states {
        for action in PnpAction::ALL {
            let (runtime, _driver, node) = device_in(state);
            let live = runtime.live_objects();
            let result = node.apply(action);
            if valid(state, action) {
                assert!(result.is_ok(), "{action} in {state:?}: {result:?}");
            } else {
                assert_eq!(
                    result,
                    Err(PnpError::InvalidAction { action, state }),
                    "{action} in {state:?}"
                );
                assert!(lines(&runtime).is_empty(), "{action} in {state:?} called something");
                assert_eq!(node.state(), state);
                assert_eq!(runtime.live_objects(), live);
                refused += 1;
            }
        }
    }
    assert!(refused > 60, "{refused}");
}

#[test]
fn invalid_action_errors_read_well() {
    let (_runtime, _driver, node) = started();
    let error = node.apply(PnpAction::Wake).unwrap_err();
    assert_eq!(error.to_string(), "`wake` is not valid for a device that is started in D0");
    node.remove().unwrap();
    let error = node.start().unwrap_err();
    assert_eq!(error.to_string(), "`start` is not valid for a device that is removed");
}

// ---- Registration: only what the driver implements -------------------------------------

struct Partial;

impl Driver for Partial {
    fn driver_entry() -> kmdf::Result<Self> {
        Ok(Partial)
    }
    fn device_add(&self, device_init: DeviceInit<'_>) -> kmdf::Result {
        device_init.create(PowerOnly)?;
        Ok(())
    }
}

/// Registers D0Entry and D0Exit only: no self-managed I/O machine.
struct PowerOnly;

kmdf::vtable! {
    impl PnpPowerCallbacks for PowerOnly {
        fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> kmdf::Result {
            Ok(())
        }
        fn d0_exit(&self, _device: &Device<Self>, _target: DevicePowerState) -> kmdf::Result {
            Ok(())
        }
        /// Compiled out: neither registered nor the reason for a self-managed I/O machine.
        #[cfg(any())]
        fn self_managed_io_flush(&self, _device: &Device<Self>) {}
    }
}

#[test]
fn a_cfg_disabled_method_is_not_registered() {
    let registered = kmdf::pnp::registered::<PowerOnly>();
    assert_eq!(registered.iter().collect::<Vec<_>>(), [Callback::D0Entry, Callback::D0Exit]);
    assert!(!registered.any_self_managed_io());
}

#[test]
fn only_registered_callbacks_are_called() {
    let runtime = Runtime::new();
    let driver = runtime.load::<Partial>().unwrap();
    let node = driver.add_device().unwrap();
    let _ = lines(&runtime);
    for action in
        [PnpAction::Start, PnpAction::Idle, PnpAction::Wake, PnpAction::Stop, PnpAction::Start]
    {
        node.apply(action).unwrap();
    }
    node.remove().unwrap();
    assert_eq!(
        lines(&runtime),
        [
            ENTRY_D3FINAL, // start
            EXIT_D3,       // idle
            ENTRY_D3,      // wake
            EXIT_D3FINAL,  // stop
            ENTRY_D3FINAL, // start
            EXIT_D3FINAL,  // remove
            DESTROY,       // no EvtCleanupCallback registered
        ]
    );
    // No SMIO machine: injecting into SMIO callbacks never fires.
    assert_eq!(runtime.trace().count(Callback::SelfManagedIoFlush), 0);
}

struct FlushOnlyDriver;

impl Driver for FlushOnlyDriver {
    fn driver_entry() -> kmdf::Result<Self> {
        Ok(FlushOnlyDriver)
    }
    fn device_add(&self, device_init: DeviceInit<'_>) -> kmdf::Result {
        device_init.create(FlushOnly)?;
        Ok(())
    }
}

/// Registers only SmioFlush: the SMIO machine exists (section 3), so Flush runs at removal
/// even though Init is not registered (the machine still passed through Started).
struct FlushOnly;

kmdf::vtable! {
    impl PnpPowerCallbacks for FlushOnly {
        fn self_managed_io_flush(&self, _device: &Device<Self>) {}
    }
}

#[test]
fn one_smio_callback_creates_the_smio_machine() {
    let runtime = Runtime::new();
    let driver = runtime.load::<FlushOnlyDriver>().unwrap();
    let node = driver.add_device().unwrap();
    node.start().unwrap();
    let _ = lines(&runtime);
    node.apply(PnpAction::SurpriseRemove).unwrap();
    assert_eq!(lines(&runtime), [FLUSH, DESTROY]);

    // Removed before it ever started: the machine is still in Created, so no Flush.
    let node = driver.add_device().unwrap();
    let _ = lines(&runtime);
    node.remove().unwrap();
    assert_eq!(lines(&runtime), [DESTROY]);
}

// ---- Failure injection on one device ----------------------------------------------------

#[test]
fn per_device_injection_counts_only_that_devices_calls() {
    let runtime = Runtime::new();
    let driver = runtime.load::<common::FullDriver>().unwrap();
    let (first, second) = (driver.add_device().unwrap(), driver.add_device().unwrap());
    // The second D0Entry of `second`: its wake, not the runtime's second D0Entry (which is
    // `second`'s first start).
    second.inject_failure(Callback::D0Entry, 2, NtError::DEVICE_NOT_READY).unwrap();
    first.start().unwrap();
    second.start().unwrap();
    first.apply(PnpAction::Idle).unwrap();
    first.apply(PnpAction::Wake).unwrap();
    assert_eq!(first.state(), NodeState::Working, "the first device's calls do not count");
    second.apply(PnpAction::Idle).unwrap();
    let _ = lines(&runtime);
    second.apply(PnpAction::Wake).unwrap();
    assert_eq!(lines(&runtime)[0], "EvtDeviceD0Entry(D3) -> STATUS_DEVICE_NOT_READY (injected)");
    assert_eq!(second.state(), NodeState::Removed);
    // It fires once.
    first.apply(PnpAction::Idle).unwrap();
    first.apply(PnpAction::Wake).unwrap();
    assert_eq!(first.state(), NodeState::Working);
    // Driver-wide callbacks are not a device's; the usual checks apply.
    for (callback, nth, status, refused) in [
        (
            Callback::DriverDeviceAdd,
            1,
            NtError::UNSUCCESSFUL,
            HarnessError::NotInjectable(Callback::DriverDeviceAdd),
        ),
        (
            Callback::SelfManagedIoFlush,
            1,
            NtError::UNSUCCESSFUL,
            HarnessError::NotInjectable(Callback::SelfManagedIoFlush),
        ),
        (Callback::D0Entry, 0, NtError::UNSUCCESSFUL, HarnessError::ZerothCall),
    ] {
        assert_eq!(
            first.inject_failure(callback, nth, status),
            Err(refused),
            "{callback} {nth} {status}"
        );
    }
}
