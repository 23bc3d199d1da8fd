//! The driver object and its entry point.
//!
//! A driver is a type implementing [`Driver`]; [`driver_entry!`](crate::driver_entry) makes
//! it the driver of the binary. In the kernel that exports `DriverEntry`, which creates the
//! `WDFDRIVER` (`WdfDriverCreate`, registering `EvtDriverDeviceAdd`), then builds the driver
//! value and stores it as the driver object's context. On the host the runtime loads it with
//! `kmdf::host::Runtime::load`.

use crate::{DeviceInit, Result};

/// A KMDF driver: the context of the `WDFDRIVER` object, and its driver-wide callbacks.
///
/// The value lives as long as the driver is loaded and is shared by every device, so state
/// that changes lives in [`sync`](crate::sync) types.
pub trait Driver: Sized + Send + Sync + 'static {
    /// Builds the driver value when the driver is loaded, in `DriverEntry` right after
    /// `WdfDriverCreate`, so it may create framework objects (locks).
    ///
    /// # Errors
    ///
    /// A failure is returned from `DriverEntry`: the driver does not load.
    fn driver_entry() -> Result<Self>;

    /// `EvtDriverDeviceAdd`: the PnP manager found a device this driver serves. Create it
    /// with [`DeviceInit::create`].
    ///
    /// # Errors
    ///
    /// A failure means no device: the framework deletes anything created here, including
    /// the device and its children, and the device does not start.
    fn device_add(&self, device_init: DeviceInit<'_>) -> Result;

    /// `EvtDriverUnload`: the driver is about to be unloaded; every device is gone.
    fn unload(&self) {}
}

/// Makes a [`Driver`] the driver of this binary.
///
/// In a kernel build this exports `DriverEntry`, which calls `WdfDriverCreate` (with
/// `EvtDriverDeviceAdd` and `EvtDriverUnload` registered), then [`Driver::driver_entry`],
/// whose value becomes the `WDFDRIVER`'s context, and installs `wdk-alloc`'s global allocator; `wdk-panic`
/// provides the panic handler (a panic in a driver is a bug check). On the host it only
/// checks the type: the runtime loads the driver with `kmdf::host::Runtime::load`.
///
/// Use it once, at the root of the driver crate:
///
/// ```
/// # use kmdf::{DeviceInit, Driver, Result};
/// struct Toaster;
///
/// impl Driver for Toaster {
///     fn driver_entry() -> Result<Self> {
///         Ok(Toaster)
///     }
///     fn device_add(&self, _device_init: DeviceInit<'_>) -> Result {
///         Ok(())
///     }
/// }
///
/// kmdf::driver_entry!(Toaster);
/// ```
#[macro_export]
macro_rules! driver_entry {
    ($driver:ty) => {
        $crate::__kmdf_backend_driver_entry!($driver);
    };
}
