//! Devices: creating a WDFDEVICE with a typed context, and using it.
//!
//! [`Driver::device_add`](crate::Driver::device_add) gets a [`DeviceInit`] and turns it into
//! a device with [`DeviceInit::create`], handing over the value that becomes the device's
//! context. The context type is the device's behaviour too: it implements
//! [`PnpPowerCallbacks`], and `create` registers exactly the callbacks it implements.
//!
//! The framework owns the device. Driver code only ever sees `&Device<T>`, borrowed for the
//! length of a callback, so it cannot keep a handle past the device's deletion. The context
//! is written into the device's context space when the device is created and dropped
//! exactly once, when the device object is destroyed (after its `EvtCleanupCallback`).

use core::fmt;
use core::marker::PhantomData;

use crate::backend;
use crate::{PnpPowerCallbacks, Result};

/// A framework device object (`WDFDEVICE`) whose context is a `T`.
///
/// Only ever used by reference: `&Device<T>` *is* the handle, borrowed from the framework
/// for the callback that received it.
#[repr(transparent)]
pub struct Device<T> {
    pub(crate) raw: backend::RawObject,
    _context: PhantomData<T>,
}

impl<T: PnpPowerCallbacks> Device<T> {
    /// The device's context: the value given to [`DeviceInit::create`].
    ///
    /// Callbacks of one device can run concurrently (work items, surprise removal), so the
    /// context is shared: state that changes lives in [`sync`](crate::sync) types.
    #[must_use]
    pub fn context(&self) -> &T {
        backend::device::context(self)
    }
}

impl<T> fmt::Debug for Device<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Device<{}>({:?})", core::any::type_name::<T>(), self.raw)
    }
}

/// The device the PnP manager found, before it is created (`PWDFDEVICE_INIT`).
///
/// Given to [`Driver::device_add`](crate::Driver::device_add); [`create`](Self::create)
/// consumes it. A `DeviceInit` that is dropped without `create` leaves the driver without
/// a device for that hardware, and the add fails.
pub struct DeviceInit<'a> {
    pub(crate) raw: backend::RawDeviceInit<'a>,
}

impl<'a> DeviceInit<'a> {
    /// Creates the device (`WdfDeviceCreate`) with `context` in its context space, and
    /// registers the PnP, power and self-managed I/O callbacks `T` implements
    /// (`WdfDeviceInitSetPnpPowerEventCallbacks`), and its `EvtCleanupCallback` if `T`
    /// implements [`PnpPowerCallbacks::cleanup`].
    ///
    /// The device is returned borrowed for the rest of `device_add`.
    ///
    /// # Errors
    ///
    /// `WdfDeviceCreate`'s failure (for example `STATUS_INSUFFICIENT_RESOURCES`); `context`
    /// is dropped then. Return the error from `device_add`: the framework deletes what
    /// was created.
    pub fn create<T: PnpPowerCallbacks>(self, context: T) -> Result<&'a Device<T>> {
        backend::device::create(self.raw, context)
    }
}

impl fmt::Debug for DeviceInit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceInit").finish_non_exhaustive()
    }
}
