//! What `tools/sys-harness` needs from inside a driver built as a `.sys` (the `sys-harness`
//! feature): the driver value and a device's typed view from a handle, for the few
//! functions a sample exports so that the harness can play the part of its applications
//! (the toaster's `submit`) and read its summary, as the host runner does through
//! `DeviceNode::with_context`. Never in a driver that ships.

use core::ffi::c_void;

use crate::{Device, Driver, PnpPowerCallbacks};

/// The driver value, if the loaded driver is a `D` (`WdfGetDriver`'s context).
#[must_use]
pub fn driver<D: Driver>() -> Option<&'static D> {
    super::entry::driver::<D>()
}

/// Views a device handle as `&Device<T>`.
///
/// # Safety
///
/// `device` is a live `WDFDEVICE` that `kmdf` created with a `T` context (by
/// `DeviceInit::create` or `create_with`), and it stays alive for `'a`.
#[must_use]
pub unsafe fn device<'a, T: PnpPowerCallbacks>(device: *mut c_void) -> &'a Device<T> {
    // SAFETY: the caller's contract is `device_ref`'s.
    unsafe { super::device::device_ref(device.cast()) }
}
