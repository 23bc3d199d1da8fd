//! Power policy on the host runtime: S0 idle on the virtual clock, wake arming, power
//! references, system sleep and resume with each setting (docs/kmdf-behaviour.md section 10,
//! `../shared/kmdf-semantics.md` section 9).

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use kmdf::host::{AssignedResources, DeviceNode, NodeState, PnpAction, PnpError, Runtime};
use kmdf::object::ObjectRef;
use kmdf::power_policy::{DxState, IdleCaps, S0IdleSettings, SxWakeSettings};
use kmdf::{
    Callback, Device, DeviceInit, DevicePowerState, Driver, NtError, PnpPowerCallbacks, Result,
    WorkItem, WorkItemCallbacks,
};

const TIMEOUT: Duration = Duration::from_millis(100);
/// Just before the timeout.
const ALMOST: Duration = Duration::from_millis(99);

/// What `device_add` assigns, and what it saw doing so.
#[derive(Default)]
struct Policy {
    s0: Option<S0IdleSettings>,
    sx: Option<SxWakeSettings>,
    assigned: Mutex<Vec<Result>>,
}

impl Driver for Policy {
    fn driver_entry() -> Result<Self> {
        Ok(Policy::default())
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        let device = device_init.create_with(|device| {
            Ok(Dev { poke: WorkItem::create(device, Poke)?, job: Mutex::new(None) })
        })?;
        let mut assigned = self.assigned.lock().unwrap();
        // Before the power policy starts, a power reference cannot be taken.
        assigned.push(device.stop_idle(false).map(drop));
        if let Some(s0) = &self.s0 {
            assigned.push(device.assign_s0_idle_settings(s0));
        }
        if let Some(sx) = &self.sx {
            assigned.push(device.assign_sx_wake_settings(sx));
        }
        Ok(())
    }
}

type Job = Box<dyn FnOnce(&Device<Dev>) + Send>;

struct Dev {
    poke: ObjectRef<WorkItem<Poke>>,
    job: Mutex<Option<Job>>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Dev {
        fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
            Ok(())
        }
        fn d0_entry_post_interrupts_enabled(
            &self,
            _device: &Device<Self>,
            _previous: DevicePowerState,
        ) -> Result {
            Ok(())
        }
        fn d0_exit_pre_interrupts_disabled(
            &self,
            _device: &Device<Self>,
            _target: DevicePowerState,
        ) -> Result {
            Ok(())
        }
        fn d0_exit(&self, _device: &Device<Self>, _target: DevicePowerState) -> Result {
            Ok(())
        }
        fn self_managed_io_suspend(&self, _device: &Device<Self>) -> Result {
            Ok(())
        }
        fn self_managed_io_restart(&self, _device: &Device<Self>) -> Result {
            Ok(())
        }
        fn arm_wake_from_s0(&self, _device: &Device<Self>) -> Result {
            Ok(())
        }
        fn disarm_wake_from_s0(&self, _device: &Device<Self>) {}
        fn wake_from_s0_triggered(&self, _device: &Device<Self>) {}
        fn arm_wake_from_sx(&self, _device: &Device<Self>) -> Result {
            Ok(())
        }
        fn disarm_wake_from_sx(&self, _device: &Device<Self>) {}
        fn wake_from_sx_triggered(&self, _device: &Device<Self>) {}
    }
}

/// A work item that runs the job a test left in the device context.
struct Poke;

kmdf::vtable! {
    impl WorkItemCallbacks for Poke {
        type Parent = Device<Dev>;

        fn run(&self, _item: &WorkItem<Self>, device: &Device<Dev>) {
            let job = device.context().job.lock().unwrap().take();
            if let Some(job) = job {
                job(device);
            }
        }
    }
}

struct Rig {
    runtime: Runtime,
    node: DeviceNode,
}

fn rig_with(policy: Policy, resources: AssignedResources) -> Rig {
    let runtime = Runtime::new();
    let driver = runtime.load_with(policy).unwrap();
    let node = driver.add_device_with(resources).unwrap();
    Rig { runtime, node }
}

fn rig(s0: Option<S0IdleSettings>, sx: Option<SxWakeSettings>) -> Rig {
    rig_with(Policy { s0, sx, ..Policy::default() }, AssignedResources::new())
}

impl Rig {
    /// The trace since the last call.
    fn lines(&self) -> Vec<String> {
        self.runtime.take_trace().lines()
    }

    /// Runs `job` on a worker thread, with the device.
    fn poke(&self, job: impl FnOnce(&Device<Dev>) + Send + 'static) {
        self.node
            .with_context(|dev: &Dev| {
                *dev.job.lock().unwrap() = Some(Box::new(job));
                dev.poke.enqueue().unwrap();
            })
            .unwrap();
    }

    /// Takes a power reference on a worker thread and holds it until the returned sender
    /// is used; the receiver gets `stop_idle`'s result (pending or not).
    fn hold_reference(&self, wait: bool) -> (Sender<()>, Receiver<Result<bool>>) {
        let (release, released) = mpsc::channel::<()>();
        let (taken, result) = mpsc::channel();
        self.poke(move |device| match device.stop_idle(wait) {
            Ok(reference) => {
                taken.send(Ok(reference.is_pending())).unwrap();
                released.recv().unwrap();
                drop(reference);
            }
            Err(error) => taken.send(Err(error)).unwrap(),
        });
        (release, result)
    }
}

#[allow(clippy::unnecessary_wraps, reason = "what `rig` takes")]
fn s0(caps: IdleCaps) -> Option<S0IdleSettings> {
    Some(S0IdleSettings::new(caps).idle_timeout(TIMEOUT))
}

const IDLE_UNARMED: [&str; 3] = [
    "EvtDeviceSelfManagedIoSuspend",
    "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
    "EvtDeviceD0Exit(D3)",
];

#[test]
fn a_device_idles_after_its_timeout_with_no_reference_and_not_before() {
    // Section 10, Idling: the timer runs whenever the count is 0, including right after the
    // first start; expiry is the power-down to DxState (D3 when it cannot wake).
    let rig = rig(s0(IdleCaps::CannotWakeFromS0), None);
    rig.node.start().unwrap();
    let _ = rig.lines();
    rig.runtime.advance(ALMOST).unwrap();
    assert_eq!(rig.node.state(), NodeState::Working);
    assert!(rig.lines().is_empty());
    rig.runtime.advance(Duration::from_millis(1)).unwrap();
    assert_eq!(rig.node.state(), NodeState::Idle);
    assert_eq!(rig.lines(), IDLE_UNARMED);
}

#[test]
fn without_idle_settings_a_device_never_idles() {
    // Section 10: by default a KMDF device stays in D0 while the system runs.
    let rig = rig(None, None);
    rig.node.start().unwrap();
    rig.runtime.advance(Duration::from_hours(1)).unwrap();
    assert_eq!(rig.node.state(), NodeState::Working);
}

#[test]
fn idle_disabled_never_idles() {
    let settings =
        S0IdleSettings::new(IdleCaps::CannotWakeFromS0).idle_timeout(TIMEOUT).enabled(false);
    let rig = rig(Some(settings), None);
    rig.node.start().unwrap();
    rig.runtime.advance(TIMEOUT * 10).unwrap();
    assert_eq!(rig.node.state(), NodeState::Working);
}

#[test]
fn a_wake_capable_device_is_armed_before_idling_and_a_wake_signal_brings_it_back() {
    // Section 10, wake callbacks: "idle, wake-capable" and "back by the wake signal". DxState
    // Maximum is the bus's DeviceWake state, D2 here.
    let rig = rig_with(
        Policy { s0: s0(IdleCaps::CanWakeFromS0), ..Policy::default() },
        AssignedResources::new().device_wake(Some(DevicePowerState::D2)),
    );
    rig.node.start().unwrap();
    let _ = rig.lines();
    rig.runtime.advance(TIMEOUT).unwrap();
    assert_eq!(
        rig.lines(),
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceArmWakeFromS0",
            "EvtDeviceD0ExitPreInterruptsDisabled(D2)",
            "EvtDeviceD0Exit(D2)",
        ]
    );
    rig.node.signal_wake().unwrap();
    assert_eq!(
        rig.lines(),
        [
            "EvtDeviceD0Entry(D2)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D2)",
            "EvtDeviceWakeFromS0Triggered",
            "EvtDeviceDisarmWakeFromS0",
            "EvtDeviceSelfManagedIoRestart",
        ]
    );
    assert_eq!(rig.node.state(), NodeState::Working);
    // Back in D0 with no reference: the idle timer runs again.
    rig.runtime.advance(TIMEOUT).unwrap();
    assert_eq!(rig.node.state(), NodeState::Idle);
}

#[test]
fn a_wake_for_io_disarms_without_the_triggered_callback() {
    // Section 10: "back by I/O or StopIdle": D0Entry, D0EntryPost, DisarmWakeFromS0, ...
    let rig = rig(s0(IdleCaps::CanWakeFromS0), None);
    rig.node.start().unwrap();
    rig.runtime.advance(TIMEOUT).unwrap();
    let _ = rig.lines();
    rig.node.apply(PnpAction::Wake).unwrap();
    assert_eq!(
        rig.lines(),
        [
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtDeviceDisarmWakeFromS0",
            "EvtDeviceSelfManagedIoRestart",
        ]
    );
}

#[test]
fn a_failed_arm_wake_from_s0_finishes_the_power_down_and_comes_straight_back() {
    // Section 10: ArmWakeFromS0 fails: no DisarmWakeFromS0, the power-down still finishes and
    // the device comes straight back; not a device failure; it may idle again later.
    let rig = rig(s0(IdleCaps::CanWakeFromS0), None);
    rig.node.inject_failure(Callback::ArmWakeFromS0, 1, NtError::UNSUCCESSFUL).unwrap();
    rig.node.start().unwrap();
    let _ = rig.lines();
    rig.runtime.advance(TIMEOUT).unwrap();
    assert_eq!(
        rig.lines(),
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceArmWakeFromS0 -> STATUS_UNSUCCESSFUL (injected)",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtDeviceSelfManagedIoRestart",
        ]
    );
    assert_eq!(rig.node.state(), NodeState::Working);
    rig.runtime.advance(TIMEOUT).unwrap();
    assert_eq!(rig.node.state(), NodeState::Idle, "it idles again, armed this time");
}

#[test]
fn a_held_power_reference_keeps_the_device_in_d0_and_its_release_restarts_the_timer() {
    // Section 10: +1 per WdfDeviceStopIdle, -1 per WdfDeviceResumeIdle; the timer runs only
    // at 0.
    let rig = rig(s0(IdleCaps::CannotWakeFromS0), None);
    rig.node.start().unwrap();
    let (release, taken) = rig.hold_reference(true);
    assert_eq!(taken.recv().unwrap(), Ok(false), "in D0: STATUS_SUCCESS");
    rig.runtime.advance(TIMEOUT * 5).unwrap();
    assert_eq!(rig.node.state(), NodeState::Working);
    release.send(()).unwrap();
    rig.runtime.wait_for_work_items().unwrap();
    rig.runtime.advance(ALMOST).unwrap();
    assert_eq!(rig.node.state(), NodeState::Working, "the timer starts at the release");
    rig.runtime.advance(Duration::from_millis(1)).unwrap();
    assert_eq!(rig.node.state(), NodeState::Idle);
}

#[test]
fn stop_idle_waiting_brings_an_idle_device_back_before_it_returns() {
    let rig = rig(s0(IdleCaps::CannotWakeFromS0), None);
    rig.node.start().unwrap();
    rig.runtime.advance(TIMEOUT).unwrap();
    let _ = rig.lines();
    let (release, taken) = rig.hold_reference(true);
    assert_eq!(taken.recv().unwrap(), Ok(false));
    assert_eq!(rig.node.state(), NodeState::Working);
    assert_eq!(
        rig.lines(),
        [
            "EvtWorkItem",
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtDeviceSelfManagedIoRestart",
        ]
    );
    release.send(()).unwrap();
    rig.runtime.wait_for_work_items().unwrap();
}

#[test]
fn stop_idle_without_waiting_is_pending_and_the_device_comes_back() {
    // Section 10: STATUS_PENDING when WaitForD0 is FALSE and the device must power up
    // (reference held either way).
    let rig = rig(s0(IdleCaps::CannotWakeFromS0), None);
    rig.node.start().unwrap();
    rig.runtime.advance(TIMEOUT).unwrap();
    let (release, taken) = rig.hold_reference(false);
    assert_eq!(taken.recv().unwrap(), Ok(true), "STATUS_PENDING");
    // The power-up runs on another worker thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.node.state() != NodeState::Working {
        assert!(std::time::Instant::now() < deadline, "the device never came back");
        std::thread::yield_now();
    }
    release.send(()).unwrap();
    rig.runtime.wait_for_work_items().unwrap();
}

#[test]
fn a_sleep_armed_for_sx_arms_and_the_resume_disarms() {
    // Section 10: "Sx, armable" and "resume, was armed for Sx".
    let rig = rig(None, Some(SxWakeSettings::new()));
    rig.node.start().unwrap();
    let _ = rig.lines();
    rig.node.apply(PnpAction::Sleep).unwrap();
    assert_eq!(
        rig.lines(),
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceArmWakeFromSx",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
        ]
    );
    rig.node.apply(PnpAction::Resume).unwrap();
    assert_eq!(
        rig.lines(),
        [
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtDeviceDisarmWakeFromSx",
            "EvtDeviceSelfManagedIoRestart",
        ]
    );
}

#[test]
fn a_wake_signal_during_sleep_is_reported_on_resume() {
    let rig = rig(None, Some(SxWakeSettings::new()));
    rig.node.start().unwrap();
    rig.node.apply(PnpAction::Sleep).unwrap();
    rig.node.signal_wake().unwrap();
    let _ = rig.lines();
    rig.node.apply(PnpAction::Resume).unwrap();
    assert_eq!(
        rig.lines(),
        [
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtDeviceWakeFromSxTriggered",
            "EvtDeviceDisarmWakeFromSx",
            "EvtDeviceSelfManagedIoRestart",
        ]
    );
}

#[test]
fn a_failed_arm_wake_from_sx_disarms_and_sleeps_unarmed() {
    // Section 10: ArmWakeFromSx fails: DisarmWakeFromSx, then the device sleeps unarmed.
    let rig = rig(None, Some(SxWakeSettings::new().dx_state(DxState::D2)));
    rig.node.inject_failure(Callback::ArmWakeFromSx, 1, NtError::UNSUCCESSFUL).unwrap();
    rig.node.start().unwrap();
    let _ = rig.lines();
    rig.node.apply(PnpAction::Sleep).unwrap();
    assert_eq!(
        rig.lines(),
        [
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceArmWakeFromSx -> STATUS_UNSUCCESSFUL (injected)",
            "EvtDeviceDisarmWakeFromSx",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
        ]
    );
    assert!(matches!(
        rig.node.signal_wake(),
        Err(PnpError::InvalidAction { action: PnpAction::SignalWake, .. })
    ));
}

#[test]
fn resume_leaves_an_idle_capable_unarmed_device_in_dx_even_if_it_slept_from_d0() {
    // Section 10: resume, not armed for Sx: the device stays in Dx iff idle enabled,
    // CannotWakeFromS0, PowerUpIdleDeviceOnSystemWake FALSE and no power reference,
    // "whether it was idle in Dx or in D0 before the sleep".
    let rig = rig(s0(IdleCaps::CannotWakeFromS0), None);
    rig.node.start().unwrap();
    rig.node.apply(PnpAction::Sleep).unwrap();
    let _ = rig.lines();
    rig.node.apply(PnpAction::Resume).unwrap();
    assert_eq!(rig.node.state(), NodeState::Idle);
    assert!(rig.lines().is_empty());
    // The next reference brings it back.
    rig.node.apply(PnpAction::Wake).unwrap();
    assert_eq!(rig.node.state(), NodeState::Working);
}

#[test]
fn resume_powers_up_an_idle_device_set_to_power_up_on_system_wake() {
    let settings = S0IdleSettings::new(IdleCaps::CannotWakeFromS0)
        .idle_timeout(TIMEOUT)
        .power_up_on_system_wake(true);
    let rig = rig(Some(settings), None);
    rig.node.start().unwrap();
    rig.runtime.advance(TIMEOUT).unwrap();
    rig.node.apply(PnpAction::Sleep).unwrap();
    let _ = rig.lines();
    rig.node.apply(PnpAction::Resume).unwrap();
    assert_eq!(rig.node.state(), NodeState::Working);
    assert_eq!(
        rig.lines(),
        [
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtDeviceSelfManagedIoRestart",
        ]
    );
}

#[test]
fn a_wake_capable_idle_device_always_returns_to_d0_on_resume() {
    let rig = rig(s0(IdleCaps::CanWakeFromS0), None);
    rig.node.start().unwrap();
    rig.node.apply(PnpAction::Sleep).unwrap();
    rig.node.apply(PnpAction::Resume).unwrap();
    assert_eq!(rig.node.state(), NodeState::Working);
}

#[test]
fn sleep_while_idle_armed_for_s0_comes_back_disarmed_then_sleeps_armed_for_sx() {
    // Section 10: "Sx while idle in Dx, armed for S0".
    let rig = rig(s0(IdleCaps::CanWakeFromS0), Some(SxWakeSettings::new()));
    rig.node.start().unwrap();
    rig.runtime.advance(TIMEOUT).unwrap();
    let _ = rig.lines();
    rig.node.apply(PnpAction::Sleep).unwrap();
    assert_eq!(
        rig.lines(),
        [
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceD0EntryPostInterruptsEnabled(D3)",
            "EvtDeviceDisarmWakeFromS0",
            "EvtDeviceSelfManagedIoRestart",
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceArmWakeFromSx",
            "EvtDeviceD0ExitPreInterruptsDisabled(D3)",
            "EvtDeviceD0Exit(D3)",
        ]
    );
}

#[test]
fn sleep_while_idle_unarmed_and_not_armable_calls_nothing() {
    // Section 10: "Sx while idle in Dx, unarmed": otherwise no callback.
    let rig = rig(s0(IdleCaps::CannotWakeFromS0), None);
    rig.node.start().unwrap();
    rig.runtime.advance(TIMEOUT).unwrap();
    let _ = rig.lines();
    rig.node.apply(PnpAction::Sleep).unwrap();
    assert!(rig.lines().is_empty());
}

#[test]
fn disabling_idle_brings_an_idle_device_back_to_d0() {
    // Section 10: back to D0 when Enabled is set to FALSE.
    let rig = rig(s0(IdleCaps::CannotWakeFromS0), None);
    rig.node.start().unwrap();
    rig.runtime.advance(TIMEOUT).unwrap();
    let (done, result) = mpsc::channel();
    rig.poke(move |device| {
        let settings = S0IdleSettings::new(IdleCaps::CannotWakeFromS0).enabled(false);
        done.send(device.assign_s0_idle_settings(&settings)).unwrap();
    });
    assert_eq!(result.recv().unwrap(), Ok(()));
    rig.runtime.wait_for_work_items().unwrap();
    assert_eq!(rig.node.state(), NodeState::Working);
}

#[test]
fn settings_the_device_cannot_honour_are_refused_with_kmdfs_codes() {
    // Section 10, WdfDeviceAssignS0IdleSettings / WdfDeviceAssignSxWakeSettings.
    let cases: Vec<(Policy, AssignedResources, Vec<Result>)> = vec![
        (
            Policy { s0: s0(IdleCaps::CanWakeFromS0), ..Policy::default() },
            AssignedResources::new().device_wake(None),
            vec![Err(NtError::POWER_STATE_INVALID)],
        ),
        (
            Policy {
                s0: Some(S0IdleSettings::new(IdleCaps::CanWakeFromS0).dx_state(DxState::D3)),
                ..Policy::default()
            },
            AssignedResources::new().device_wake(Some(DevicePowerState::D2)),
            vec![Err(NtError::POWER_STATE_INVALID)],
        ),
        (
            Policy { s0: s0(IdleCaps::UsbSelectiveSuspend), ..Policy::default() },
            AssignedResources::new(),
            vec![Err(NtError::POWER_STATE_INVALID)],
        ),
        (
            Policy {
                s0: Some(
                    S0IdleSettings::new(IdleCaps::CanWakeFromS0).power_up_on_system_wake(false),
                ),
                ..Policy::default()
            },
            AssignedResources::new(),
            vec![Err(NtError::INVALID_PARAMETER)],
        ),
        (
            Policy {
                s0: Some(
                    S0IdleSettings::new(IdleCaps::CannotWakeFromS0).idle_timeout(Duration::ZERO),
                ),
                ..Policy::default()
            },
            AssignedResources::new(),
            vec![Err(NtError::INVALID_PARAMETER)],
        ),
        (
            Policy { sx: Some(SxWakeSettings::new()), ..Policy::default() },
            AssignedResources::new().device_wake(None),
            vec![Err(NtError::POWER_STATE_INVALID)],
        ),
        (
            Policy {
                s0: Some(S0IdleSettings::new(IdleCaps::CannotWakeFromS0)),
                sx: Some(SxWakeSettings::new().dx_state(DxState::D1)),
                ..Policy::default()
            },
            AssignedResources::new().device_wake(None),
            vec![Ok(()), Err(NtError::POWER_STATE_INVALID)],
        ),
    ];
    // The first entry of each is device_add's `stop_idle`, before the power policy started:
    // STATUS_POWER_STATE_INVALID (section 10).
    for (policy, resources, expected) in cases {
        let runtime = Runtime::new();
        let driver = runtime.load_with(policy).unwrap();
        let _node = driver.add_device_with(resources).unwrap();
        let seen = driver.with_driver(|policy| policy.assigned.lock().unwrap().clone()).unwrap();
        let mut want = vec![Err(NtError::POWER_STATE_INVALID)];
        want.extend(expected);
        assert_eq!(seen, want);
    }
}

#[test]
fn a_wake_signal_when_not_armed_is_refused() {
    let rig = rig(s0(IdleCaps::CannotWakeFromS0), None);
    rig.node.start().unwrap();
    rig.runtime.advance(TIMEOUT).unwrap();
    assert!(matches!(
        rig.node.signal_wake(),
        Err(PnpError::InvalidAction { action: PnpAction::SignalWake, state: NodeState::Idle })
    ));
}
