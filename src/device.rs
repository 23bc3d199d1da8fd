//! Devices: creating a WDFDEVICE with a typed context, and using it.
//!
//! [`Driver::device_add`] gets a [`DeviceInit`] and turns it into
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
use crate::{Driver, PnpPowerCallbacks, Result};

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
    /// The device's context: the value given to [`DeviceInit::create`] (or built by
    /// [`DeviceInit::create_with`]).
    ///
    /// Callbacks of one device can run concurrently (work items, surprise removal), so the
    /// context is shared: state that changes lives in [`sync`](crate::sync) types.
    ///
    /// # Panics
    ///
    /// While [`DeviceInit::create_with`]'s closure runs: the context does not exist yet.
    #[must_use]
    pub fn context(&self) -> &T {
        backend::device::context(self)
    }
}

impl<T> Device<T> {
    /// Reports the device failed (`WdfDeviceSetFailed`): the driver found it unusable, for
    /// example after a hardware error seen in a work item.
    ///
    /// KMDF marks the device failed and invalidates its PnP state; the PnP manager then
    /// asks for the state, learns that the device failed and removes it with a surprise
    /// removal (`EvtDeviceSurpriseRemoval`, the power-down of a device in D0,
    /// `EvtDeviceReleaseHardware`, `EvtDeviceSelfManagedIoFlush`, then on the remove IRP
    /// `EvtDeviceSelfManagedIoCleanup` and the object's cleanup). With
    /// [`FailedAction::AttemptRestart`] KMDF asks the bus to re-enumerate the device, so a
    /// new device object is added and started for the same hardware, unless the device
    /// restarted five times within a minute already (`FxPkgPnp::PnpIncrementRestartCountLogic`).
    ///
    /// Callable at `IRQL <= DISPATCH_LEVEL`, from any callback. The removal happens after
    /// the call returns, never inside it. On the host runtime the PnP manager answers when
    /// the action in progress on the device ends, or before the next one, or when the test
    /// lets it (`DeviceNode::settle`).
    pub fn set_failed(&self, action: FailedAction) {
        backend::device::set_failed(&self.raw, action);
    }

    /// The driver's value (the `WDFDRIVER`'s context, `WdfGetDriver`), if the driver is a
    /// `D`: what [`Driver::driver_entry`] built, shared by every device of the driver.
    ///
    /// ```
    /// # use kmdf::{Device, DeviceInit, Driver, PnpPowerCallbacks, Result};
    /// struct Toaster { model: &'static str }
    /// # impl Driver for Toaster {
    /// #     fn driver_entry() -> Result<Self> { Ok(Toaster { model: "T-1000" }) }
    /// #     fn device_add(&self, init: DeviceInit<'_>) -> Result { init.create(Slot)?; Ok(()) }
    /// # }
    /// struct Slot;
    /// kmdf::vtable! {
    ///     impl PnpPowerCallbacks for Slot {
    ///         fn self_managed_io_init(&self, device: &Device<Self>) -> Result {
    ///             let driver = device.driver::<Toaster>().expect("this driver's device");
    ///             assert_eq!(driver.model, "T-1000");
    ///             Ok(())
    ///         }
    ///     }
    /// }
    /// ```
    #[must_use]
    pub fn driver<D: Driver>(&self) -> Option<&D> {
        backend::device::driver(&self.raw)
    }
}

/// What the PnP manager does after [`Device::set_failed`] removed the device
/// (`WDF_DEVICE_FAILED_ACTION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailedAction {
    /// `WdfDeviceFailedAttemptRestart`: a software failure; the device is removed, then a
    /// new device object is created and started for the same hardware, at most five times a
    /// minute.
    AttemptRestart,
    /// `WdfDeviceFailedNoRestart`: the hardware is unusable; the device is removed and
    /// stays so.
    NoRestart,
}

impl<T> fmt::Debug for Device<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Device<{}>({:?})", core::any::type_name::<T>(), self.raw)
    }
}

/// The device the PnP manager found, before it is created (`PWDFDEVICE_INIT`).
///
/// Given to [`Driver::device_add`]; [`create`](Self::create)
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
        self.create_with(|_| Ok(context))
    }

    /// Creates the device as [`create`](Self::create) does, then builds its context with the
    /// device in hand: `build` gets the new device, so the context can hold the device's
    /// children (work items, timers), created with the device as their parent, instead of
    /// `Option`s filled in later.
    ///
    /// ```
    /// use kmdf::object::ObjectRef;
    /// use kmdf::{Device, DeviceInit, PnpPowerCallbacks, Result, WorkItem, WorkItemCallbacks};
    ///
    /// struct Toaster {
    ///     poller: ObjectRef<WorkItem<Poll>>,
    /// }
    ///
    /// struct Poll;
    /// kmdf::vtable! {
    ///     impl WorkItemCallbacks for Poll {
    ///         type Parent = Device<Toaster>;
    ///         fn run(&self, _item: &WorkItem<Self>, _toaster: &Device<Toaster>) {}
    ///     }
    /// }
    ///
    /// kmdf::vtable! {
    ///     impl PnpPowerCallbacks for Toaster {
    ///         fn self_managed_io_init(&self, _device: &Device<Self>) -> Result {
    ///             self.poller.enqueue()?;
    ///             Ok(())
    ///         }
    ///     }
    /// }
    ///
    /// fn device_add(init: DeviceInit<'_>) -> Result {
    ///     init.create_with(|device| Ok(Toaster { poller: WorkItem::create(device, Poll)? }))?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// The context does not exist while `build` runs: it is what `build` returns. So
    /// [`Device::context`] panics if called then, by `build` itself or by a child's callback
    /// (a work item enqueued, or a timer started, inside `build` may run before `build`
    /// returns: start them later, in `self_managed_io_init`). The device's PnP and power
    /// callbacks cannot run before `device_add` returns.
    ///
    /// In the kernel this is `WdfDeviceCreate`, then `build`, then the context is written
    /// into the device's context space (which KMDF zero-fills, and `kmdf` marks written only
    /// then). On the host runtime the device object is created, then `build` runs, then the
    /// context is set.
    ///
    /// # Errors
    ///
    /// `WdfDeviceCreate`'s failure, or `build`'s. Return it from `device_add`: the framework
    /// then deletes the device, with the children `build` created (their cleanup callbacks
    /// run; the device's own `cleanup` does not, since it has no context). On the host
    /// runtime the device is deleted at once.
    pub fn create_with<T: PnpPowerCallbacks>(
        self,
        build: impl FnOnce(&Device<T>) -> Result<T>,
    ) -> Result<&'a Device<T>> {
        backend::device::create_with(self.raw, build)
    }
}

impl fmt::Debug for DeviceInit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceInit").finish_non_exhaustive()
    }
}
