//! Framework services a driver reaches from its callbacks: `WdfDeviceSetFailed` and the
//! sequence KMDF runs after it, `WdfGetDriver`, the system clocks and `DbgPrintEx`.

use std::time::Duration;

mod common;

use kmdf::host::{NodeState, PnpAction, Runtime};
use kmdf::object::ObjectRef;
use kmdf::pnp::HardwareResources;
use kmdf::sync::SpinLock;
use kmdf::{
    Device, DeviceInit, DevicePowerState, Driver, FailedAction, PnpPowerCallbacks, Result,
    WorkItem, WorkItemCallbacks,
};

/// What the next loaded driver's devices do.
#[derive(Clone, Copy, Default)]
struct Plan {
    /// `SelfManagedIoInit` reports the device failed, this many times.
    fail_in_init: Option<(FailedAction, u32)>,
}

struct Services {
    plan: Plan,
    inits: SpinLock<u32>,
    name: &'static str,
}

impl Driver for Services {
    fn driver_entry() -> Result<Self> {
        Services::with(Plan::default())
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        device_init
            .create(Unit { work: SpinLock::new(None)?, seen: SpinLock::new(Vec::new())? })?;
        Ok(())
    }
}

struct Unit {
    work: SpinLock<Option<ObjectRef<WorkItem<Fault>>>>,
    /// What the callbacks saw, for the assertions.
    seen: SpinLock<Vec<String>>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Unit {
        fn self_managed_io_init(&self, device: &Device<Self>) -> Result {
            let driver = device.driver::<Services>().expect("the device's own driver");
            let inits = {
                let mut inits = driver.inits.lock();
                *inits += 1;
                *inits
            };
            kmdf::debug_print!("{}: init #{inits}", driver.name);
            if let Some((action, times)) = driver.plan.fail_in_init
                && inits <= times
            {
                device.set_failed(action);
            }
            *self.work.lock() = Some(WorkItem::create(device, Fault)?);
            Ok(())
        }

        fn self_managed_io_flush(&self, _device: &Device<Self>) {
            if let Some(work) = self.work.lock().take() {
                let _ = work.flush();
            }
        }

        fn prepare_hardware(&self, _device: &Device<Self>, _resources: HardwareResources<'_>) -> Result {
            Ok(())
        }

        fn release_hardware(&self, _device: &Device<Self>, _resources: HardwareResources<'_>) -> Result {
            Ok(())
        }

        fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
            Ok(())
        }

        fn d0_exit(&self, _device: &Device<Self>, _target: DevicePowerState) -> Result {
            Ok(())
        }

        fn surprise_removal(&self, _device: &Device<Self>) {}

        fn self_managed_io_suspend(&self, _device: &Device<Self>) -> Result {
            Ok(())
        }

        fn self_managed_io_cleanup(&self, _device: &Device<Self>) {}
    }
}

/// A work item that finds the hardware broken.
struct Fault;

kmdf::vtable! {
    impl WorkItemCallbacks for Fault {
        type Parent = Device<Unit>;

        fn run(&self, _item: &WorkItem<Self>, device: &Device<Unit>) {
            let now = kmdf::time::since_boot();
            device.context().seen.lock().push(format!("fault at {now:?}"));
            device.set_failed(FailedAction::NoRestart);
        }
    }
}

impl Services {
    fn with(plan: Plan) -> Result<Self> {
        Ok(Services { plan, inits: SpinLock::new(0)?, name: "services" })
    }
}

/// The services driver, following `plan`, with one device added.
fn load(plan: Plan) -> (Runtime, kmdf::host::LoadedDriver<Services>, kmdf::host::DeviceNode) {
    common::Rig::with(Services::with(plan).unwrap()).into_parts()
}

#[test]
fn set_failed_no_restart_in_a_callback_removes_the_device_after_the_action() {
    let (runtime, _driver, node) = load(Plan { fail_in_init: Some((FailedAction::NoRestart, 1)) });
    let _ = runtime.take_trace();
    node.start().unwrap();
    // The start completes; then the PnP manager learns that the device failed and sends a
    // surprise removal (SurpriseRemoval first: the device is started and in D0).
    assert_eq!(
        runtime.take_trace().lines(),
        [
            "EvtDevicePrepareHardware",
            "EvtDeviceD0Entry(D3Final)",
            "EvtDeviceSelfManagedIoInit",
            "DbgPrintEx(services: init #1)",
            "EvtDeviceSurpriseRemoval",
            "EvtDeviceSelfManagedIoSuspend",
            "EvtDeviceD0Exit(D3Final)",
            "EvtDeviceReleaseHardware",
            "EvtDeviceSelfManagedIoFlush",
            "EvtDeviceSelfManagedIoCleanup",
            "EvtDestroyCallback(WDFWORKITEM)",
            "EvtDestroyCallback(WDFDEVICE)",
        ]
    );
    assert_eq!(node.state(), NodeState::Removed);
}

#[test]
fn set_failed_attempt_restart_adds_and_starts_a_new_device() {
    let (runtime, driver, node) =
        load(Plan { fail_in_init: Some((FailedAction::AttemptRestart, 1)) });
    node.start().unwrap();
    let trace = runtime.trace();
    // Removed, then re-enumerated: a second EvtDriverDeviceAdd and a first start of the
    // new device (SelfManagedIoInit again, not Restart).
    assert_eq!(trace.count(kmdf::Callback::DriverDeviceAdd), 2);
    assert_eq!(trace.count(kmdf::Callback::SurpriseRemoval), 1);
    assert_eq!(trace.count(kmdf::Callback::SelfManagedIoInit), 2);
    assert_eq!(node.state(), NodeState::Working);
    assert_eq!(driver.with_driver(|d| *d.inits.lock()).unwrap(), 2);
    // The new device lives its own life.
    node.apply(PnpAction::Idle).unwrap();
    node.remove().unwrap();
    assert_eq!(node.state(), NodeState::Removed);
    assert_eq!(driver.unload(), Ok(()));
    assert!(runtime.live_objects().is_empty(), "{:?}", runtime.live_objects());
}

#[test]
fn restarts_stop_after_five_within_a_minute() {
    // Every start reports the device failed again: KMDF restarts it five times within
    // m_RestartTimePeriodMaximum (60 s), then leaves it removed.
    let (runtime, _driver, node) =
        load(Plan { fail_in_init: Some((FailedAction::AttemptRestart, u32::MAX)) });
    node.start().unwrap(); // the failure of the first device, and restart 1
    for _ in 0..10 {
        node.settle().unwrap();
    }
    assert_eq!(node.state(), NodeState::Removed);
    let trace = runtime.trace();
    assert_eq!(trace.count(kmdf::Callback::DriverDeviceAdd), 1 + 5);
    assert_eq!(trace.count(kmdf::Callback::SurpriseRemoval), 1 + 5);
}

#[test]
fn set_failed_from_a_work_item_is_answered_by_settle_or_the_next_action() {
    let (runtime, _driver, node) = load(Plan::default());
    node.start().unwrap();
    runtime.advance(Duration::from_millis(1500)).unwrap();
    node.with_context(|unit: &Unit| unit.work.lock().as_ref().unwrap().enqueue().unwrap()).unwrap();
    runtime.wait_for_work_items().unwrap();
    // The PnP manager has not answered yet: the device is still working.
    assert_eq!(node.state(), NodeState::Working);
    let seen = node.with_context(|unit: &Unit| unit.seen.lock().clone()).unwrap();
    // The work item read the virtual clock.
    assert_eq!(seen, ["fault at 1.5s"]);
    let _ = runtime.take_trace();
    node.settle().unwrap();
    assert_eq!(runtime.take_trace().lines()[0], "EvtDeviceSurpriseRemoval");
    assert_eq!(node.state(), NodeState::Removed);

    // Or the next action answers first, and then finds the device gone.
    let (runtime, _driver, node) = load(Plan::default());
    node.start().unwrap();
    node.with_context(|unit: &Unit| unit.work.lock().as_ref().unwrap().enqueue().unwrap()).unwrap();
    runtime.wait_for_work_items().unwrap();
    assert!(matches!(
        node.apply(PnpAction::Idle),
        Err(kmdf::host::PnpError::InvalidAction { state: NodeState::Removed, .. })
    ));
}

#[test]
fn driver_lookup_checks_the_type() {
    struct Other;
    impl Driver for Other {
        fn driver_entry() -> Result<Self> {
            Ok(Other)
        }
        fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
            device_init.create(Probe)?;
            Ok(())
        }
    }
    struct Probe;
    kmdf::vtable! {
        impl PnpPowerCallbacks for Probe {
            fn self_managed_io_init(&self, device: &Device<Self>) -> Result {
                assert!(device.driver::<Other>().is_some());
                assert!(device.driver::<Services>().is_none(), "not this device's driver");
                Ok(())
            }
        }
    }
    let runtime = Runtime::new();
    let driver = runtime.load::<Other>().unwrap();
    let node = driver.add_device().unwrap();
    node.start().unwrap();
    assert!(runtime.panics().is_empty(), "{:?}", runtime.panics());
    assert_eq!(runtime.trace().lines().last().unwrap(), "EvtDeviceSelfManagedIoInit");
}

#[test]
fn the_clocks_follow_the_virtual_clock() {
    struct Clocked;
    impl Driver for Clocked {
        fn driver_entry() -> Result<Self> {
            kmdf::debug_print!(
                "interrupt time {} pc {:?}",
                kmdf::time::interrupt_time(),
                kmdf::time::performance_counter().elapsed()
            );
            Ok(Clocked)
        }
        fn device_add(&self, _device_init: DeviceInit<'_>) -> Result {
            Ok(())
        }
    }
    let runtime = Runtime::new();
    runtime.advance(Duration::from_micros(2500)).unwrap();
    let _driver = runtime.load::<Clocked>().unwrap();
    assert_eq!(
        runtime.trace().lines(),
        ["DriverEntry", "DbgPrintEx(interrupt time 25000 pc 2.5ms)"]
    );
    // Outside any callback there is no runtime to read the time of.
    let outside = std::panic::catch_unwind(kmdf::time::interrupt_time);
    assert!(outside.is_err());
}
