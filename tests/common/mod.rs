//! Test drivers shared by the integration tests.

#![allow(dead_code, reason = "each test binary uses a different part")]

use kmdf::host::{DeviceNode, LoadedDriver, Runtime};
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

/// A runtime with [`FullDriver`] loaded and one device added; the trace starts empty.
pub fn full_device() -> (Runtime, LoadedDriver<FullDriver>, DeviceNode) {
    let runtime = Runtime::new();
    let driver = runtime.load::<FullDriver>().expect("load");
    let node = driver.add_device().expect("add device");
    let _ = runtime.take_trace();
    (runtime, driver, node)
}

/// The printed trace lines since the last call.
pub fn lines(runtime: &Runtime) -> Vec<String> {
    runtime.take_trace().lines()
}
