//! What the integration tests share: the fixture most tests start from ([`Rig`]: a
//! runtime, a driver, a device) and a test driver that logs every callback.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::ops::Deref;

use kmdf::host::{DeviceNode, LoadedDriver, PnpAction, Runtime};
use kmdf::pnp::HardwareResources;
use kmdf::sync::SpinLock;
use kmdf::{Device, DeviceInit, DevicePowerState, Driver, PnpPowerCallbacks, Result};

/// A driver whose device registers every PnP, power and self-managed I/O callback, and
/// logs each call the driver's code really receives.
pub struct FullDriver;

impl Driver for FullDriver {
    fn driver_entry() -> Result<Self> {
        Ok(FullDriver)
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        device_init.create(FullDevice { calls: SpinLock::new(Vec::new())? })?;
        Ok(())
    }
}

/// The device context of [`FullDriver`].
pub struct FullDevice {
    /// What the driver's code saw, as `name(arg)` strings like the trace prints them.
    pub calls: SpinLock<Vec<String>>,
}

std::thread_local! {
    static FULL_DEVICE_DROPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many `FullDevice` contexts were dropped on this thread so far.
pub fn full_device_drops() -> usize {
    FULL_DEVICE_DROPS.get()
}

impl Drop for FullDevice {
    fn drop(&mut self) {
        FULL_DEVICE_DROPS.set(FULL_DEVICE_DROPS.get() + 1);
    }
}

impl FullDevice {
    fn log(&self, call: impl Into<String>) {
        self.calls.lock().push(call.into());
    }
}

kmdf::vtable! {
    impl PnpPowerCallbacks for FullDevice {
        fn prepare_hardware(&self, _device: &Device<Self>, _resources: HardwareResources<'_>) -> Result {
            self.log("EvtDevicePrepareHardware");
            Ok(())
        }
        fn release_hardware(&self, _device: &Device<Self>, _resources: HardwareResources<'_>) -> Result {
            self.log("EvtDeviceReleaseHardware");
            Ok(())
        }
        fn d0_entry(&self, _device: &Device<Self>, previous: DevicePowerState) -> Result {
            self.log(format!("EvtDeviceD0Entry({previous})"));
            Ok(())
        }
        fn d0_entry_post_interrupts_enabled(&self, _device: &Device<Self>, previous: DevicePowerState) -> Result {
            self.log(format!("EvtDeviceD0EntryPostInterruptsEnabled({previous})"));
            Ok(())
        }
        fn d0_exit_pre_interrupts_disabled(&self, _device: &Device<Self>, target: DevicePowerState) -> Result {
            self.log(format!("EvtDeviceD0ExitPreInterruptsDisabled({target})"));
            Ok(())
        }
        fn d0_exit(&self, _device: &Device<Self>, target: DevicePowerState) -> Result {
            self.log(format!("EvtDeviceD0Exit({target})"));
            Ok(())
        }
        fn query_remove(&self, _device: &Device<Self>) -> Result {
            self.log("EvtDeviceQueryRemove");
            Ok(())
        }
        fn query_stop(&self, _device: &Device<Self>) -> Result {
            self.log("EvtDeviceQueryStop");
            Ok(())
        }
        fn surprise_removal(&self, _device: &Device<Self>) {
            self.log("EvtDeviceSurpriseRemoval");
        }
        fn self_managed_io_init(&self, _device: &Device<Self>) -> Result {
            self.log("EvtDeviceSelfManagedIoInit");
            Ok(())
        }
        fn self_managed_io_suspend(&self, _device: &Device<Self>) -> Result {
            self.log("EvtDeviceSelfManagedIoSuspend");
            Ok(())
        }
        fn self_managed_io_restart(&self, _device: &Device<Self>) -> Result {
            self.log("EvtDeviceSelfManagedIoRestart");
            Ok(())
        }
        fn self_managed_io_flush(&self, _device: &Device<Self>) {
            self.log("EvtDeviceSelfManagedIoFlush");
        }
        fn self_managed_io_cleanup(&self, _device: &Device<Self>) {
            self.log("EvtDeviceSelfManagedIoCleanup");
        }
        fn cleanup(&self, _device: &Device<Self>) {
            self.log("EvtCleanupCallback(WDFDEVICE)");
        }
    }
}

/// A runtime, a driver loaded into it and one device added: what most tests start from.
///
/// The test driver gets what its `device_add` needs (a plan, a log, the test's closures)
/// in its value, built by the test ([`Rig::with`], which loads it with
/// [`Runtime::load_with`]); no globals or thread-locals. It derefs to the [`Runtime`].
pub struct Rig<D> {
    pub runtime: Runtime,
    pub driver: LoadedDriver<D>,
    pub node: DeviceNode,
}

impl<D: Driver> Rig<D> {
    /// `D` loaded as its `driver_entry` builds it, with one device added.
    pub fn new() -> Self {
        let runtime = Runtime::new();
        let driver = runtime.load::<D>().expect("load the driver");
        Self::add_device(runtime, driver)
    }

    /// `driver`, as the test built it, loaded with one device added.
    pub fn with(driver: D) -> Self {
        let runtime = Runtime::new();
        let driver = runtime.load_with(driver).expect("load the driver");
        Self::add_device(runtime, driver)
    }

    fn add_device(runtime: Runtime, driver: LoadedDriver<D>) -> Self {
        let node = driver.add_device().expect("add the device");
        Self { runtime, driver, node }
    }

    /// The same, its trace emptied: the test's own actions are what it will show.
    #[must_use]
    pub fn quiet(self) -> Self {
        let _ = self.runtime.take_trace();
        self
    }

    /// Applies `action` to the device; fails the test with the error if it fails.
    pub fn act(&self, action: PnpAction) {
        self.node.apply(action).unwrap_or_else(|error| panic!("{action}: {error}"));
    }

    /// Calls `f` with the device's context, a `T`.
    pub fn context<T: 'static, R>(&self, f: impl FnOnce(&T) -> R) -> R {
        self.node.with_context(f).expect("the device and its context")
    }

    /// Calls `f` with the driver value.
    pub fn driver_value<R>(&self, f: impl FnOnce(&D) -> R) -> R {
        self.driver.with_driver(f).expect("the driver is loaded")
    }

    /// The runtime, the driver and the device, for a test that moves them apart.
    pub fn into_parts(self) -> (Runtime, LoadedDriver<D>, DeviceNode) {
        (self.runtime, self.driver, self.node)
    }
}

impl<D> Deref for Rig<D> {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.runtime
    }
}

/// A runtime with [`FullDriver`] loaded and one device added; the trace starts empty.
pub fn full_device() -> (Runtime, LoadedDriver<FullDriver>, DeviceNode) {
    Rig::<FullDriver>::new().quiet().into_parts()
}

/// The printed trace lines since the last call.
pub fn lines(runtime: &Runtime) -> Vec<String> {
    runtime.take_trace().lines()
}
