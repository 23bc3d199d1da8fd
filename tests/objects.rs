//! The object model on the host runtime: devices with typed contexts, read back, and
//! dropped exactly once (kmdf-semantics.md section 5).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kmdf::host::{HarnessError, ObjectKind, PnpError, Runtime};
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

/// The test driver. Its `Drops` travel in a global so `driver_entry` can find them: each
/// test uses its own driver type (below) to keep tests independent.
macro_rules! counting_driver {
    ($name:ident, $fail:expr) => {
        struct $name;
        static DROPS: std::sync::LazyLock<Arc<Drops>> = std::sync::LazyLock::new(Default::default);
        impl Driver for $name {
            fn driver_entry() -> Result<Self> {
                Ok($name)
            }
            fn device_add(&self, init: DeviceInit<'_>) -> Result {
                let device = init.create(Counted { serial: 42, drops: Arc::clone(&DROPS) })?;
                assert_eq!(device.context().serial, 42);
                let fail: Option<NtError> = $fail;
                fail.map_or(Ok(()), Err)
            }
        }
    };
}

#[test]
fn context_written_at_creation_reads_back() {
    counting_driver!(ReadBack, None);
    let runtime = Runtime::new();
    let driver = runtime.load::<ReadBack>().unwrap();
    let node = driver.add_device().unwrap();
    assert_eq!(node.with_context(|c: &Counted| c.serial), Ok(42));
    assert_eq!(node.with_context(|_: &u32| ()), Err(HarnessError::WrongContextType));
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver, ObjectKind::Device]);
}

#[test]
fn context_dropped_exactly_once_when_device_goes_away() {
    counting_driver!(DropOnce, None);
    let runtime = Runtime::new();
    let driver = runtime.load::<DropOnce>().unwrap();
    let node = driver.add_device().unwrap();
    assert_eq!(DROPS.context.load(Ordering::SeqCst), 0);

    node.remove().unwrap();
    assert_eq!(DROPS.context.load(Ordering::SeqCst), 1);
    assert_eq!(DROPS.cleanups.load(Ordering::SeqCst), 1);
    assert_eq!(DROPS.cleanups_before_drop.load(Ordering::SeqCst), 1, "cleanup before destroy");
    assert!(node.is_removed());

    // A second removal is refused and drops nothing more.
    assert!(matches!(node.remove(), Err(PnpError::InvalidAction { .. })));
    assert_eq!(node.with_context(|c: &Counted| c.serial), Err(HarnessError::NoDevice));
    driver.unload().unwrap();
    assert_eq!(DROPS.context.load(Ordering::SeqCst), 1);
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
    counting_driver!(FailAdd, Some(NtError::INSUFFICIENT_RESOURCES));
    let runtime = Runtime::new();
    let driver = runtime.load::<FailAdd>().unwrap();
    assert_eq!(
        driver.add_device().unwrap_err(),
        HarnessError::Driver(NtError::INSUFFICIENT_RESOURCES)
    );
    assert_eq!(DROPS.context.load(Ordering::SeqCst), 1);
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
    static DRIVER_DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Tracked;
    impl Drop for Tracked {
        fn drop(&mut self) {
            DRIVER_DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Driver for Tracked {
        fn driver_entry() -> Result<Self> {
            Ok(Tracked)
        }
        fn device_add(&self, init: DeviceInit<'_>) -> Result {
            init.create(Plain)?;
            Ok(())
        }
    }
    struct Plain;
    kmdf::vtable! { impl PnpPowerCallbacks for Plain {} }

    let runtime = Runtime::new();
    let driver = runtime.load::<Tracked>().unwrap();
    let node = driver.add_device().unwrap();
    // Plain registers no EvtCleanupCallback: its removal traces only the destroy.
    node.remove().unwrap();
    assert_eq!(node.trace().lines(), ["EvtDriverDeviceAdd", "EvtDestroyCallback(WDFDEVICE)"]);
    assert_eq!(DRIVER_DROPS.load(Ordering::SeqCst), 0);
    driver.unload().unwrap();
    assert_eq!(DRIVER_DROPS.load(Ordering::SeqCst), 1);
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
