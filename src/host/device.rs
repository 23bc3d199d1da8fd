//! Devices on the host: `WdfDeviceCreate`, contexts and the PnP/power dispatch table.

use super::std;
use std::ptr;
use std::sync::{Arc, OnceLock};

use super::object::{ObjectKind, RawObject};
use super::resources::AssignedResources;
use crate::pnp::{CallbackSet, HardwareResources};
use crate::{Callback, Device, DevicePowerState, PnpPowerCallbacks, Result};

/// Views a device object as `&Device<T>`.
///
/// Safe to call with any object: `Device<T>` only reaches its context through
/// [`context`], which checks the type.
pub(crate) fn device_ref<T>(raw: &RawObject) -> &Device<T> {
    // The reference must cover exactly the object's memory (checked by Miri too).
    const {
        assert!(size_of::<Device<T>>() == size_of::<RawObject>());
        assert!(align_of::<Device<T>>() == align_of::<RawObject>());
    }
    // SAFETY: `Device<T>` is `#[repr(transparent)]` over `RawObject` (its other field is a
    // zero-sized `PhantomData`), so a `&RawObject` is a valid `&Device<T>` with the same
    // lifetime.
    unsafe { &*ptr::from_ref(raw).cast::<Device<T>>() }
}

pub(crate) fn context<T: PnpPowerCallbacks>(device: &Device<T>) -> &T {
    device.raw.expect_context::<T>()
}

/// Where `EvtDriverDeviceAdd` leaves the device it created.
pub(crate) struct DeviceSlot {
    pub(crate) driver: Arc<RawObject>,
    pub(crate) node: u64,
    pub(crate) resources: Arc<AssignedResources>,
    pub(crate) created: OnceLock<CreatedDevice>,
}

/// A created device and the callbacks registered for it.
pub(crate) struct CreatedDevice {
    pub(crate) object: Arc<RawObject>,
    pub(crate) callbacks: PnpTable,
    /// The hardware resources of its node.
    pub(crate) resources: Arc<AssignedResources>,
}

/// `WDF_PNPPOWER_EVENT_CALLBACKS` on the host: which callbacks are registered, and one
/// monomorphized function that calls them on the context type.
#[derive(Clone, Copy)]
pub(crate) struct PnpTable {
    pub(crate) registered: CallbackSet,
    pub(crate) dispatch: fn(&RawObject, PnpCall, &AssignedResources) -> Result,
}

/// A PnP/power callback with its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PnpCall {
    PrepareHardware,
    ReleaseHardware,
    D0Entry(DevicePowerState),
    D0EntryPostInterruptsEnabled(DevicePowerState),
    D0ExitPreInterruptsDisabled(DevicePowerState),
    D0Exit(DevicePowerState),
    QueryRemove,
    QueryStop,
    SurpriseRemoval,
    SelfManagedIoInit,
    SelfManagedIoSuspend,
    SelfManagedIoRestart,
    SelfManagedIoFlush,
    SelfManagedIoCleanup,
}

impl PnpCall {
    pub(crate) fn callback(self) -> Callback {
        match self {
            PnpCall::PrepareHardware => Callback::PrepareHardware,
            PnpCall::ReleaseHardware => Callback::ReleaseHardware,
            PnpCall::D0Entry(_) => Callback::D0Entry,
            PnpCall::D0EntryPostInterruptsEnabled(_) => Callback::D0EntryPostInterruptsEnabled,
            PnpCall::D0ExitPreInterruptsDisabled(_) => Callback::D0ExitPreInterruptsDisabled,
            PnpCall::D0Exit(_) => Callback::D0Exit,
            PnpCall::QueryRemove => Callback::QueryRemove,
            PnpCall::QueryStop => Callback::QueryStop,
            PnpCall::SurpriseRemoval => Callback::SurpriseRemoval,
            PnpCall::SelfManagedIoInit => Callback::SelfManagedIoInit,
            PnpCall::SelfManagedIoSuspend => Callback::SelfManagedIoSuspend,
            PnpCall::SelfManagedIoRestart => Callback::SelfManagedIoRestart,
            PnpCall::SelfManagedIoFlush => Callback::SelfManagedIoFlush,
            PnpCall::SelfManagedIoCleanup => Callback::SelfManagedIoCleanup,
        }
    }

    /// Whether the KMDF callback returns an `NTSTATUS` (the others return nothing).
    pub(crate) fn returns_status(self) -> bool {
        !matches!(
            self,
            PnpCall::SurpriseRemoval | PnpCall::SelfManagedIoFlush | PnpCall::SelfManagedIoCleanup
        )
    }

    /// The power state argument, printed in the trace.
    pub(crate) fn power_state(self) -> Option<DevicePowerState> {
        match self {
            PnpCall::D0Entry(state)
            | PnpCall::D0EntryPostInterruptsEnabled(state)
            | PnpCall::D0ExitPreInterruptsDisabled(state)
            | PnpCall::D0Exit(state) => Some(state),
            _ => None,
        }
    }
}

impl PnpTable {
    fn of<T: PnpPowerCallbacks>() -> Self {
        Self { registered: T::REGISTERED, dispatch: dispatch::<T> }
    }
}

fn dispatch<T: PnpPowerCallbacks>(
    object: &RawObject,
    call: PnpCall,
    resources: &AssignedResources,
) -> Result {
    let device = device_ref::<T>(object);
    let context = device.context();
    match call {
        PnpCall::PrepareHardware => {
            context.prepare_hardware(device, HardwareResources { raw: resources.lists(true) })
        }
        PnpCall::ReleaseHardware => {
            context.release_hardware(device, HardwareResources { raw: resources.lists(false) })
        }
        PnpCall::D0Entry(previous) => context.d0_entry(device, previous),
        PnpCall::D0EntryPostInterruptsEnabled(previous) => {
            context.d0_entry_post_interrupts_enabled(device, previous)
        }
        PnpCall::D0ExitPreInterruptsDisabled(target) => {
            context.d0_exit_pre_interrupts_disabled(device, target)
        }
        PnpCall::D0Exit(target) => context.d0_exit(device, target),
        PnpCall::QueryRemove => context.query_remove(device),
        PnpCall::QueryStop => context.query_stop(device),
        PnpCall::SurpriseRemoval => {
            context.surprise_removal(device);
            Ok(())
        }
        PnpCall::SelfManagedIoInit => context.self_managed_io_init(device),
        PnpCall::SelfManagedIoSuspend => context.self_managed_io_suspend(device),
        PnpCall::SelfManagedIoRestart => context.self_managed_io_restart(device),
        PnpCall::SelfManagedIoFlush => {
            context.self_managed_io_flush(device);
            Ok(())
        }
        PnpCall::SelfManagedIoCleanup => {
            context.self_managed_io_cleanup(device);
            Ok(())
        }
    }
}

fn cleanup<T: PnpPowerCallbacks>(object: &RawObject) {
    let device = device_ref::<T>(object);
    device.context().cleanup(device);
}

/// `PWDFDEVICE_INIT` on the host.
pub(crate) struct RawDeviceInit<'a> {
    pub(crate) slot: &'a DeviceSlot,
}

#[allow(clippy::needless_pass_by_value, reason = "consumed like the kernel's PWDFDEVICE_INIT")]
pub(crate) fn create<T: PnpPowerCallbacks>(
    init: RawDeviceInit<'_>,
    context: T,
) -> Result<&Device<T>> {
    let slot = init.slot;
    let cleanup_hook = T::REGISTERED.contains(Callback::ObjectCleanup).then_some(cleanup::<T> as _);
    let object = RawObject::create(
        slot.driver.shared(),
        ObjectKind::Device,
        Some(&slot.driver),
        Some(slot.node),
        cleanup_hook,
    )?;
    object.set_context(context);
    object.set_owner(Arc::clone(&slot.driver));
    let created = CreatedDevice {
        object,
        callbacks: PnpTable::of::<T>(),
        resources: Arc::clone(&slot.resources),
    };
    // `DeviceInit::create` consumes the only `DeviceInit` of this slot, so it is empty.
    let created = match slot.created.set(created) {
        Ok(()) => slot.created.get().expect("just set"),
        Err(_) => unreachable!("a DeviceInit creates one device"),
    };
    Ok(device_ref(&created.object))
}

/// `WdfDeviceSetFailed`: the runtime's PnP manager answers after the call returns.
pub(crate) fn set_failed(device: &RawObject, action: crate::device::FailedAction) {
    if let Some(node) = device.device() {
        device.shared().request_failure(node, action);
    }
}

/// `WdfGetDriver`, and its context if it is a `D`.
pub(crate) fn driver<D: crate::Driver>(device: &RawObject) -> Option<&D> {
    device.owner()?.context::<D>()
}
