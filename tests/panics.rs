//! A panicking callback on the host runtime: caught at the callback boundary, the device
//! fails the way a failing callback would, the report names the callback, and every other
//! device keeps working.

use std::sync::atomic::{AtomicUsize, Ordering};

use kmdf::host::{NodeState, PnpAction, Runtime};
use kmdf::{
    Callback, Device, DeviceInit, DevicePowerState, Driver, NtStatus, PnpPowerCallbacks, Result,
};

struct Fragile {
    devices: AtomicUsize,
}

impl Driver for Fragile {
    fn driver_entry() -> Result<Self> {
        Ok(Fragile { devices: AtomicUsize::new(0) })
    }
    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        // The first device's hardware is broken: its D0 entry panics.
        let broken = self.devices.fetch_add(1, Ordering::SeqCst) == 0;
        device_init.create(FragileDevice { broken })?;
        Ok(())
    }
}

struct FragileDevice {
    broken: bool,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for FragileDevice {
        fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
            assert!(!self.broken, "register read returned 0xFFFFFFFF");
            Ok(())
        }
        fn surprise_removal(&self, _device: &Device<Self>) {
            panic!("surprise removal of a {} device", if self.broken { "broken" } else { "good" });
        }
        fn release_hardware(&self, _device: &Device<Self>, _r: kmdf::pnp::HardwareResources<'_>) -> Result {
            Ok(())
        }
    }
}

#[test]
fn a_panicking_callback_fails_only_its_device() {
    let runtime = Runtime::new();
    let driver = runtime.load::<Fragile>().unwrap();
    let broken = driver.add_device().unwrap();
    let good = driver.add_device().unwrap();
    let _ = runtime.take_trace();

    broken.start().unwrap();
    // Failed like a D0Entry returning an error on first start: ReleaseHardware, then removal.
    assert_eq!(
        runtime.take_trace().lines(),
        [
            "EvtDeviceD0Entry(D3Final) -> STATUS_UNSUCCESSFUL (panicked)",
            "EvtDeviceReleaseHardware",
            "EvtDestroyCallback(WDFDEVICE)",
        ]
    );
    assert_eq!(broken.state(), NodeState::Removed);
    let panics = runtime.panics();
    assert_eq!(panics.len(), 1);
    assert_eq!(panics[0].callback, Callback::D0Entry);
    assert_eq!(panics[0].device, Some(broken.id()));
    assert_eq!(
        panics[0].to_string(),
        format!(
            "EvtDeviceD0Entry panicked on device {}: register read returned 0xFFFFFFFF",
            broken.id()
        )
    );

    // The other device is unaffected.
    good.start().unwrap();
    good.apply(PnpAction::Idle).unwrap();
    good.apply(PnpAction::Wake).unwrap();
    assert_eq!(good.state(), NodeState::Working);

    // A panic in a callback that returns nothing cannot change KMDF's course: the surprise
    // removal completes.
    let _ = runtime.take_trace();
    good.apply(PnpAction::SurpriseRemove).unwrap();
    assert_eq!(
        runtime.take_trace().lines(),
        [
            "EvtDeviceSurpriseRemoval (panicked)",
            "EvtDeviceReleaseHardware",
            "EvtDestroyCallback(WDFDEVICE)",
        ]
    );
    assert_eq!(runtime.panics().len(), 2);
    assert_eq!(good.state(), NodeState::Removed);
    driver.unload().unwrap();
    assert!(runtime.live_objects().is_empty());
}

#[test]
fn a_panicking_driver_entry_does_not_load() {
    struct Doomed;
    impl Driver for Doomed {
        fn driver_entry() -> Result<Self> {
            panic!("no memory for the lookaside list")
        }
        fn device_add(&self, _device_init: DeviceInit<'_>) -> Result {
            Ok(())
        }
    }
    let runtime = Runtime::new();
    assert_eq!(runtime.load::<Doomed>().unwrap_err(), NtStatus::UNSUCCESSFUL);
    assert_eq!(runtime.trace().lines(), ["DriverEntry -> STATUS_UNSUCCESSFUL (panicked)"]);
    assert_eq!(runtime.panics()[0].message, "no memory for the lookaside list");
}
