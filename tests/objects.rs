//! The object model on the host runtime: devices with typed contexts, read back, and
//! dropped exactly once (docs/kmdf-behaviour.md section 5).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kmdf::host::{HarnessError, LoadedDriver, ObjectKind, PnpError, Runtime};
use kmdf::{Callback, Device, DeviceInit, Driver, NtError, NtStatus, PnpPowerCallbacks, Result};

/// Counts drops of the device context, and remembers whether `cleanup` ran first.
#[derive(Default)]
struct Drops {
    context: AtomicUsize,
    cleanups_before_drop: AtomicUsize,
    cleanups: AtomicUsize,
}

struct Counted {
    serial: u32,
    drops: Arc<Drops>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.context.fetch_add(1, Ordering::SeqCst);
    }
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Counted {
        fn cleanup(&self, _device: &Device<Self>) {
            self.drops.cleanups.fetch_add(1, Ordering::SeqCst);
            if self.drops.context.load(Ordering::SeqCst) == 0 {
                self.drops.cleanups_before_drop.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// The test driver: its value, built by the test, carries the test's `Drops` and what its
/// `device_add` returns after creating the device.
struct Counting {
    drops: Arc<Drops>,
    fail: Option<NtError>,
}

impl Driver for Counting {
    fn driver_entry() -> Result<Self> {
        Ok(Counting { drops: Arc::default(), fail: None })
    }
    fn device_add(&self, init: DeviceInit<'_>) -> Result {
        let device = init.create(Counted { serial: 42, drops: Arc::clone(&self.drops) })?;
        assert_eq!(device.context().serial, 42);
        self.fail.map_or(Ok(()), Err)
    }
}

/// A runtime with [`Counting`] loaded, its device adds failing with `fail`; returns the
/// drops it counts.
fn counting(fail: Option<NtError>) -> (Runtime, LoadedDriver<Counting>, Arc<Drops>) {
    let drops = Arc::new(Drops::default());
    let runtime = Runtime::new();
    let driver = runtime.load_with(Counting { drops: Arc::clone(&drops), fail }).unwrap();
    (runtime, driver, drops)
}

#[test]
fn context_written_at_creation_reads_back() {
    let (runtime, driver, _drops) = counting(None);
    let node = driver.add_device().unwrap();
    assert_eq!(node.with_context(|c: &Counted| c.serial), Ok(42));
    assert_eq!(node.with_context(|_: &u32| ()), Err(HarnessError::WrongContextType));
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver, ObjectKind::Device]);
}

#[test]
fn context_dropped_exactly_once_when_device_goes_away() {
    let (runtime, driver, drops) = counting(None);
    let node = driver.add_device().unwrap();
    assert_eq!(drops.context.load(Ordering::SeqCst), 0);

    node.remove().unwrap();
    assert_eq!(drops.context.load(Ordering::SeqCst), 1);
    assert_eq!(drops.cleanups.load(Ordering::SeqCst), 1);
    assert_eq!(drops.cleanups_before_drop.load(Ordering::SeqCst), 1, "cleanup before destroy");
    assert!(node.is_removed());

    // A second removal is refused and drops nothing more.
    assert!(matches!(node.remove(), Err(PnpError::InvalidAction { .. })));
    assert_eq!(node.with_context(|c: &Counted| c.serial), Err(HarnessError::NoDevice));
    driver.unload().unwrap();
    assert_eq!(drops.context.load(Ordering::SeqCst), 1);
    assert!(runtime.live_objects().is_empty());

    // Section 5 and invariant 11: cleanup, then destroy, once each.
    let trace = node.trace();
    assert_eq!(
        trace.callbacks(),
        [Callback::DriverDeviceAdd, Callback::ObjectCleanup, Callback::ObjectDestroy]
    );
}

#[test]
fn failed_device_add_deletes_the_created_device() {
    let (runtime, driver, drops) = counting(Some(NtError::INSUFFICIENT_RESOURCES));
    assert_eq!(
        driver.add_device().unwrap_err(),
        HarnessError::Driver(NtError::INSUFFICIENT_RESOURCES)
    );
    assert_eq!(drops.context.load(Ordering::SeqCst), 1);
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver]);
    assert_eq!(
        runtime.trace().lines(),
        [
            "DriverEntry",
            "EvtDriverDeviceAdd -> STATUS_INSUFFICIENT_RESOURCES",
            "EvtCleanupCallback(WDFDEVICE)",
            "EvtDestroyCallback(WDFDEVICE)",
        ]
    );
}

#[test]
fn device_add_without_a_device_is_reported() {
    struct Filter;
    impl Driver for Filter {
        fn driver_entry() -> Result<Self> {
            Ok(Filter)
        }
        fn device_add(&self, _init: DeviceInit<'_>) -> Result {
            Ok(())
        }
    }
    let runtime = Runtime::new();
    let driver = runtime.load::<Filter>().unwrap();
    assert_eq!(driver.add_device().unwrap_err(), HarnessError::NoDevice);
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver]);
}

#[test]
fn unload_waits_for_devices_and_drops_the_driver_context() {
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Driver for Tracked {
        fn driver_entry() -> Result<Self> {
            Ok(Tracked(Arc::default()))
        }
        fn device_add(&self, init: DeviceInit<'_>) -> Result {
            init.create(Plain)?;
            Ok(())
        }
    }
    struct Plain;
    kmdf::vtable! { impl PnpPowerCallbacks for Plain {} }

    let driver_drops = Arc::new(AtomicUsize::new(0));
    let runtime = Runtime::new();
    let driver = runtime.load_with(Tracked(Arc::clone(&driver_drops))).unwrap();
    let node = driver.add_device().unwrap();
    // Plain registers no EvtCleanupCallback: its removal traces only the destroy.
    node.remove().unwrap();
    assert_eq!(node.trace().lines(), ["EvtDriverDeviceAdd", "EvtDestroyCallback(WDFDEVICE)"]);
    assert_eq!(driver_drops.load(Ordering::SeqCst), 0);
    driver.unload().unwrap();
    assert_eq!(driver_drops.load(Ordering::SeqCst), 1);
    assert!(runtime.live_objects().is_empty());
}

#[test]
fn unload_with_a_device_present_is_refused() {
    struct Busy;
    impl Driver for Busy {
        fn driver_entry() -> Result<Self> {
            Ok(Busy)
        }
        fn device_add(&self, init: DeviceInit<'_>) -> Result {
            init.create(Idle)?;
            Ok(())
        }
    }
    struct Idle;
    kmdf::vtable! { impl PnpPowerCallbacks for Idle {} }

    let runtime = Runtime::new();
    let driver = runtime.load::<Busy>().unwrap();
    let node = driver.add_device().unwrap();
    let before = runtime.trace();
    assert_eq!(driver.unload(), Err(HarnessError::DevicesRemain));
    assert!(!node.is_removed());
    assert_eq!(runtime.trace(), before, "a refused unload calls nothing");
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver, ObjectKind::Device]);

    // The driver is still loaded and serves new devices.
    let second = driver.add_device().unwrap();
    node.remove().unwrap();
    second.remove().unwrap();
    driver.unload().unwrap();
    assert_eq!(driver.unload(), Err(HarnessError::DriverUnloaded));
    assert_eq!(driver.add_device().unwrap_err(), HarnessError::DriverUnloaded);
}

#[test]
fn driver_entry_failure_loads_nothing() {
    struct Broken;
    impl Driver for Broken {
        fn driver_entry() -> Result<Self> {
            Err(NtError::NOT_SUPPORTED)
        }
        fn device_add(&self, _init: DeviceInit<'_>) -> Result {
            unreachable!("never loaded")
        }
    }
    let runtime = Runtime::new();
    assert_eq!(runtime.load::<Broken>().unwrap_err(), NtStatus::NOT_SUPPORTED);
    assert!(runtime.live_objects().is_empty());
    assert_eq!(runtime.trace().lines(), ["DriverEntry -> STATUS_NOT_SUPPORTED"]);
}

#[test]
fn dropping_the_runtime_removes_the_devices_left_then_unloads_the_driver() {
    use std::sync::Mutex;
    /// What the driver saw, in order.
    type Log = Arc<Mutex<Vec<String>>>;

    struct Owner {
        devices: AtomicUsize,
        log: Log,
    }
    impl Drop for Owner {
        fn drop(&mut self) {
            self.log.lock().unwrap().push("driver context dropped".into());
        }
    }
    impl Driver for Owner {
        fn driver_entry() -> Result<Self> {
            Ok(Owner { devices: AtomicUsize::new(0), log: Log::default() })
        }
        fn device_add(&self, init: DeviceInit<'_>) -> Result {
            let serial = self.devices.fetch_add(1, Ordering::SeqCst) + 1;
            init.create(Owned { serial, log: Arc::clone(&self.log) })?;
            Ok(())
        }
        fn unload(&self) {
            self.log.lock().unwrap().push("EvtDriverUnload".into());
        }
    }
    struct Owned {
        serial: usize,
        log: Log,
    }
    impl Owned {
        fn log(&self, what: &str) {
            self.log.lock().unwrap().push(format!("device {} {what}", self.serial));
        }
    }
    impl Drop for Owned {
        fn drop(&mut self) {
            self.log("context dropped");
        }
    }
    kmdf::vtable! {
        impl PnpPowerCallbacks for Owned {
            fn surprise_removal(&self, _device: &Device<Self>) {
                self.log("surprise removal");
            }
            fn cleanup(&self, _device: &Device<Self>) {
                self.log("cleanup");
            }
        }
    }

    let log = Log::default();
    let runtime = Runtime::new();
    let driver =
        runtime.load_with(Owner { devices: AtomicUsize::new(0), log: Arc::clone(&log) }).unwrap();
    let started = driver.add_device().unwrap();
    let added = driver.add_device().unwrap();
    started.start().unwrap();
    // The handles only point into the runtime, which owns the driver and its devices.
    drop((driver, started, added));
    assert!(log.lock().unwrap().is_empty());

    drop(runtime);
    // Newest device first: the one that never started is removed, the started one
    // surprise-removed; each device's cleanup and context before the driver's unload and
    // context, and the unload once.
    assert_eq!(
        *log.lock().unwrap(),
        [
            "device 2 cleanup",
            "device 2 context dropped",
            "device 1 surprise removal",
            "device 1 cleanup",
            "device 1 context dropped",
            "EvtDriverUnload",
            "driver context dropped",
        ]
    );
}

#[test]
fn a_device_asleep_when_the_runtime_drops_is_resumed_then_surprise_removed() {
    use kmdf::DevicePowerState;
    use kmdf::host::{NodeState, PnpAction};
    use std::sync::Mutex;
    type Log = Arc<Mutex<Vec<String>>>;

    struct Sleeper(Log);
    impl Driver for Sleeper {
        fn driver_entry() -> Result<Self> {
            Ok(Sleeper(Log::default()))
        }
        fn device_add(&self, init: DeviceInit<'_>) -> Result {
            init.create(Bed(Arc::clone(&self.0)))?;
            Ok(())
        }
    }
    struct Bed(Log);
    kmdf::vtable! {
        impl PnpPowerCallbacks for Bed {
            fn d0_entry(&self, _device: &Device<Self>, previous: DevicePowerState) -> Result {
                self.0.lock().unwrap().push(format!("D0Entry({previous})"));
                Ok(())
            }
            fn d0_exit(&self, _device: &Device<Self>, target: DevicePowerState) -> Result {
                self.0.lock().unwrap().push(format!("D0Exit({target})"));
                Ok(())
            }
            fn surprise_removal(&self, _device: &Device<Self>) {
                self.0.lock().unwrap().push("SurpriseRemoval".into());
            }
        }
    }

    let log = Log::default();
    let runtime = Runtime::new();
    let driver = runtime.load_with(Sleeper(Arc::clone(&log))).unwrap();
    let node = driver.add_device().unwrap();
    node.start().unwrap();
    node.apply(PnpAction::Sleep).unwrap();
    log.lock().unwrap().clear();
    drop(runtime);
    // The system resumes before the PnP manager removes anything; then the surprise
    // removal, its callback first, then the power-down.
    assert_eq!(*log.lock().unwrap(), ["D0Entry(D3)", "SurpriseRemoval", "D0Exit(D3Final)"]);
    assert_eq!(node.state(), NodeState::Removed);
    assert_eq!(driver.unload(), Err(HarnessError::DriverUnloaded));
}
