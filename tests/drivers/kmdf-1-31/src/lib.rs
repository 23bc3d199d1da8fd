//! A minimal KMDF 1.31 driver over kmdf: one device per `EvtDriverDeviceAdd`, with a
//! `EvtDeviceD0Entry` that does nothing. It exists so that `scripts/check-kernel` builds a
//! driver whose KMDF minor version differs from the toaster sample's.

#![no_std]

use kmdf::{Device, DeviceInit, DevicePowerState, Driver, PnpPowerCallbacks, Result};

/// The driver: no state.
pub struct MinimalDriver;

impl Driver for MinimalDriver {
    fn driver_entry() -> Result<Self> {
        Ok(MinimalDriver)
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        device_init.create(Lamp)?;
        Ok(())
    }
}

/// The device's context.
pub struct Lamp;

kmdf::vtable! {
    impl PnpPowerCallbacks for Lamp {
        /// Nothing to power up.
        fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
            Ok(())
        }
    }
}

kmdf::driver_entry!(MinimalDriver);
