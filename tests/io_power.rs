//! Queues around power transitions and removal on the host runtime: docs/kmdf-behaviour.md
//! section 9.3 (the shared reference's section 7, "Power-managed queues and the power
//! sequences", "Removal"; section 1 for where IoStop/IoResume sit among the callbacks).

mod io_common;

use io_common::{Dev, GUID_DEVINTERFACE_TEST, OnRead, OnStop, Plan, lines, started, with_q};
use kmdf::host::{PnpAction, PnpError, Violation};
use kmdf::{Callback, NtError, NtStatus};

fn verifier_messages(error: &PnpError) -> Vec<String> {
    match error {
        PnpError::InvariantViolated { violations, .. } => violations
            .iter()
            .filter_map(|violation| match violation {
                Violation::Verifier(finding) => Some(finding.message.clone()),
                _ => None,
            })
            .collect(),
        other => panic!("expected a verifier finding, got {other}"),
    }
}

/// Section 9.3: a read the driver keeps across idle gets `EvtIoStop(Suspend)` right after
/// SMIO Suspend (before `D0ExitPre`); acknowledged without requeue, it gets `EvtIoResume`
/// after `D0EntryPost` and before SMIO Restart; the driver completes it later.
#[test]
fn a_pending_read_across_idle_and_wake() {
    let plan = Plan { on_read: OnRead::Pend, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let read = handle.read(8).expect_err("kept pending by the driver");
    assert_eq!(lines(&runtime), ["EvtIoRead(8)"]);
    node.apply(PnpAction::Idle).unwrap();
    assert_eq!(
        lines(&runtime),
        ["EvtDeviceSelfManagedIoSuspend", "EvtIoStop(Suspend)", "EvtDeviceD0Exit(D3)",]
    );
    assert!(!read.is_complete(), "kept by the driver");
    node.apply(PnpAction::Wake).unwrap();
    assert_eq!(
        lines(&runtime),
        ["EvtDeviceD0Entry(D3)", "EvtIoResume", "EvtDeviceSelfManagedIoRestart"]
    );
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(read.wait().unwrap().status, NtStatus::SUCCESS);
}

/// Section 9.3: acknowledged with requeue, the request goes back to the head of its queue
/// and is presented again at the power-up (no `EvtIoResume`), before SMIO Restart.
#[test]
fn a_request_requeued_in_evt_io_stop_is_presented_again_after_the_power_up() {
    let plan = Plan { on_read: OnRead::Pend, on_stop: OnStop::Requeue, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let read = handle.read_async(8);
    node.apply(PnpAction::Idle).unwrap();
    assert_eq!(with_q(&node, |q| q.pending.lock().len()), 0, "requeued");
    let _ = runtime.take_trace();
    node.apply(PnpAction::Wake).unwrap();
    assert_eq!(
        lines(&runtime),
        ["EvtDeviceD0Entry(D3)", "EvtIoRead(8)", "EvtDeviceSelfManagedIoRestart"]
    );
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
}

/// Section 9.3: a request arriving while the device idles in Dx waits in its power-managed
/// queue, whose power reference (taken when it goes from empty to not empty) brings the
/// device back to D0 on a system worker thread; the request is presented at the power-up,
/// before SMIO Restart.
#[test]
fn a_request_arriving_in_dx_wakes_the_device_and_waits_for_the_power_up() {
    let (runtime, node, handle) = started(Plan::default());
    node.apply(PnpAction::Idle).unwrap();
    let _ = runtime.take_trace();
    let held = runtime.hold_workers(); // the power-up waits on a worker thread
    let read = handle.read_async(2);
    assert!(!read.is_complete());
    assert!(lines(&runtime).is_empty(), "held in the queue while in D3");
    drop(held);
    runtime.wait_for_work_items().unwrap();
    assert_eq!(node.state(), kmdf::host::NodeState::Working);
    assert_eq!(
        lines(&runtime),
        ["EvtDeviceD0Entry(D3)", "EvtIoRead(2)", "EvtDeviceSelfManagedIoRestart"]
    );
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
}

/// Section 9.3 and 10: a request the driver keeps holds its queue's power reference, so the
/// device does not idle out; once it is completed the idle timeout runs again.
#[test]
fn a_kept_request_keeps_the_device_in_d0() {
    use kmdf::power_policy::{IdleCaps, S0IdleSettings};
    use std::time::Duration;
    let (runtime, node, handle) = started(Plan { on_read: OnRead::Pend, ..Plan::default() });
    let settings =
        S0IdleSettings::new(IdleCaps::CannotWakeFromS0).idle_timeout(Duration::from_secs(1));
    node.with_device(|device: &kmdf::Device<Dev>| device.assign_s0_idle_settings(&settings))
        .unwrap()
        .unwrap();
    let read = handle.read_async(1);
    runtime.advance(Duration::from_secs(10)).unwrap();
    assert_eq!(node.state(), kmdf::host::NodeState::Working, "the kept request holds D0");
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
    runtime.advance(Duration::from_secs(2)).unwrap();
    runtime.wait_for_work_items().unwrap();
    assert_eq!(node.state(), kmdf::host::NodeState::Idle, "idle once nothing is kept");
}

/// Section 9.3: a queue that is not power-managed presents while the device is in Dx.
#[test]
fn a_queue_not_power_managed_presents_in_dx() {
    let (runtime, node, handle) = started(Plan { power_managed: false, ..Plan::default() });
    node.apply(PnpAction::Idle).unwrap();
    let _ = runtime.take_trace();
    assert_eq!(handle.read(2).unwrap().status, NtStatus::SUCCESS);
    assert_eq!(lines(&runtime), ["EvtIoRead(2)"]);
}

/// Section 9.3 and 8.5: a power-down stuck on a request the driver neither acknowledged
/// nor completed is reported by the verifier; the action returns, it does not hang.
#[test]
fn a_stuck_power_down_is_reported_not_hung() {
    let plan = Plan { on_read: OnRead::Pend, on_stop: OnStop::Ignore, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let read = handle.read_async(1);
    let error = node.apply(PnpAction::Idle).expect_err("the verifier reports it");
    let messages = verifier_messages(&error);
    assert!(
        messages.iter().any(|m| m.contains("power-down") && m.contains("stuck")),
        "{messages:?}"
    );
    assert_eq!(node.state(), kmdf::host::NodeState::Idle, "the power-down went on");
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
    let _ = runtime.take_trace();
}

/// Section 9.3: with no `EvtIoStop` the power-down waits for the completion of every
/// request the driver owns; a request that stays pending is a stuck power-down.
#[test]
fn without_evt_io_stop_the_power_down_waits_for_completion() {
    let plan = Plan { with_stop: false, ..Plan::default() };
    let (_runtime, node, handle) = started(plan);
    let read = handle.read_async(1);
    let error = node.apply(PnpAction::Idle).expect_err("stuck");
    assert!(verifier_messages(&error).iter().any(|m| m.contains("stuck")));
    let request =
        node.with_context(|dev: &Dev| dev.plain().context().pending.lock().pop()).unwrap();
    request.unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
}

/// Section 9.3: an orderly removal with a read pending: `EvtIoStop(Suspend)` in the
/// power-down, then the power-managed purge (`EvtIoStop(Purge)`) before SMIO Flush; the
/// driver completes it there. The interface is gone; the handle's new requests fail.
#[test]
fn removal_purges_power_managed_queues_before_smio_flush() {
    let (runtime, node, handle) = started(Plan { on_read: OnRead::Pend, ..Plan::default() });
    let read = handle.read_async(4);
    let _ = runtime.take_trace();
    node.remove().unwrap();
    let trace = lines(&runtime);
    assert_eq!(
        trace[..6],
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtIoStop(Suspend)",
            "EvtDeviceD0Exit(D3Final)",
            "EvtIoStop(Purge)",
            "EvtDeviceSelfManagedIoFlush",
            "EvtDeviceSelfManagedIoCleanup",
        ]
    );
    assert_eq!(read.status(), Some(NtStatus::CANCELLED));
    assert_eq!(runtime.open(&GUID_DEVINTERFACE_TEST).err(), Some(NtError::OBJECT_NAME_NOT_FOUND));
    assert_eq!(handle.read(1).unwrap().status, NtStatus::DEVICE_REMOVED);
    assert!(runtime.verifier_findings().is_empty());
}

/// Section 9.3: queued requests are cancelled by the purge without a callback.
#[test]
fn removal_cancels_queued_requests() {
    let plan = Plan {
        dispatch: kmdf::io_queue::Dispatch::Sequential,
        on_read: OnRead::Pend,
        ..Plan::default()
    };
    let (runtime, node, handle) = started(plan);
    let owned = handle.read_async(1);
    let queued = handle.read_async(2);
    let _ = runtime.take_trace();
    node.apply(PnpAction::SurpriseRemove).unwrap();
    assert_eq!(queued.status(), Some(NtStatus::CANCELLED));
    assert_eq!(owned.status(), Some(NtStatus::CANCELLED)); // completed in EvtIoStop(Purge)
    let trace = lines(&runtime);
    assert_eq!(trace.iter().filter(|line| line.starts_with("EvtIoRead")).count(), 0);
    assert_eq!(trace.iter().filter(|line| *line == "EvtIoStop(Purge)").count(), 1);
}

/// Section 9.3: surprise removal in Dx: no power-down, the purge reaches the request the
/// driver kept through the idle.
#[test]
fn surprise_removal_in_dx_purges_the_kept_request() {
    let (runtime, node, handle) = started(Plan { on_read: OnRead::Pend, ..Plan::default() });
    let read = handle.read_async(4);
    node.apply(PnpAction::Idle).unwrap();
    let _ = runtime.take_trace();
    node.apply(PnpAction::SurpriseRemove).unwrap();
    assert_eq!(
        lines(&runtime)[..3],
        ["EvtIoStop(Purge)", "EvtDeviceSelfManagedIoFlush", "EvtDeviceSelfManagedIoCleanup"]
    );
    assert_eq!(read.status(), Some(NtStatus::CANCELLED));
}

/// Section 9.3: queues that are not power-managed are purged after SMIO Flush, before SMIO
/// Cleanup.
#[test]
fn removal_purges_other_queues_before_smio_cleanup() {
    let plan = Plan { on_read: OnRead::Pend, power_managed: false, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let read = handle.read_async(4);
    let _ = runtime.take_trace();
    node.remove().unwrap();
    assert_eq!(
        lines(&runtime)[..5],
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceD0Exit(D3Final)",
            "EvtDeviceSelfManagedIoFlush",
            "EvtIoStop(Purge)",
            "EvtDeviceSelfManagedIoCleanup",
        ]
    );
    assert_eq!(read.status(), Some(NtStatus::CANCELLED));
}

/// Section 9.3 and 8.5: a request the driver still owns when SMIO Flush returns is a
/// verifier finding; when the device context that keeps it goes, the dropped request is
/// completed `STATUS_CANCELLED` and reported too.
#[test]
fn a_request_owned_when_smio_flush_returns_is_reported() {
    let plan =
        Plan { on_read: OnRead::Pend, on_stop: OnStop::AcknowledgeAlways, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let read = handle.read_async(4);
    let error = node.remove().expect_err("the verifier reports it");
    let messages = verifier_messages(&error);
    assert!(
        messages.iter().any(|m| m.contains("EvtDeviceSelfManagedIoFlush returned")),
        "{messages:?}"
    );
    assert_eq!(read.status(), Some(NtStatus::CANCELLED));
    let findings = runtime.verifier_findings();
    assert!(findings.iter().any(|f| f.message.contains("dropped")), "{findings:?}");
    assert!(runtime.verifier_findings().iter().any(|f| f.callback == Callback::SelfManagedIoFlush));
}

/// Section 9.3: a cancelable request gets `EvtIoStop(Suspend|Cancelable)`; the driver
/// unmarks it and requeues it, and it is presented again after the power-up.
#[test]
fn a_cancelable_request_is_stopped_with_the_cancelable_flag() {
    let plan = Plan { on_read: OnRead::Cancelable, on_stop: OnStop::Requeue, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let read = handle.read_async(4);
    let _ = runtime.take_trace();
    node.apply(PnpAction::Idle).unwrap();
    assert_eq!(lines(&runtime)[1], "EvtIoStop(Suspend|Cancelable)");
    node.apply(PnpAction::Wake).unwrap();
    assert!(lines(&runtime).contains(&String::from("EvtIoRead(4)")));
    read.cancel();
    assert_eq!(read.status(), Some(NtStatus::CANCELLED));
    assert_eq!(lines(&runtime), ["EvtRequestCancel"]);
}

/// Section 9.3 and 9.5: a request the application cancelled while the driver owns it, not
/// cancelable, was not cancelled by KMDF (`FxRequest::m_Canceled` stays false; only
/// `WdfRequestIsCanceled` says it): it still gets `EvtIoStop`, in the power-down and in the
/// removal's purge.
#[test]
fn an_owned_request_cancelled_by_the_application_still_gets_evt_io_stop() {
    let (runtime, node, handle) = started(Plan { on_read: OnRead::Pend, ..Plan::default() });
    let read = handle.read_async(1);
    read.cancel();
    assert!(with_q(&node, |q| q.pending.lock()[0].is_canceled()));
    let _ = runtime.take_trace();
    node.apply(PnpAction::Idle).unwrap();
    assert_eq!(lines(&runtime)[1], "EvtIoStop(Suspend)");
    node.apply(PnpAction::SurpriseRemove).unwrap();
    assert_eq!(lines(&runtime)[0], "EvtIoStop(Purge)");
    assert_eq!(read.status(), Some(NtStatus::CANCELLED));
}
