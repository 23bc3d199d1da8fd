//! Devices on the host: `WdfDeviceCreate`, contexts and the PnP/power dispatch table.

use super::std;
use std::ptr;
use std::sync::{Arc, OnceLock};

use super::io::{IoInit, IoPackage};
use super::object::{KindState, NewObject, RawObject, StateSlot};
use super::object_kind::ObjectKind;
use super::policy::PowerPolicy;
use super::resources::AssignedResources;
use crate::callback::vtable;
use crate::pnp::HardwareResources;
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
    device.raw.context::<T>().unwrap_or_else(|| {
        panic!(
            "kmdf: Device::context() of {:?} before its context exists \
             (inside DeviceInit::create_with's closure)",
            device.raw
        )
    })
}

/// Where `EvtDriverDeviceAdd` leaves the device it created.
pub(crate) struct DeviceSlot {
    pub(crate) driver: Arc<RawObject>,
    pub(crate) node: u64,
    pub(crate) resources: Arc<AssignedResources>,
    pub(crate) created: OnceLock<CreatedDevice>,
}

/// A device `EvtDriverDeviceAdd` created.
pub(crate) struct CreatedDevice {
    pub(crate) object: Arc<RawObject>,
}

impl CreatedDevice {
    /// The device's own state.
    pub(crate) fn state(&self) -> &DeviceState {
        self.object.state::<DeviceState>().expect("a device object has a device's state")
    }
}

/// What a `WDFDEVICE` adds to the common object: its PnP/power callbacks, its node's
/// hardware resources, and its driver.
pub(crate) struct DeviceState {
    /// The callbacks registered for it.
    pub(crate) callbacks: PnpTable,
    /// The hardware resources of its node.
    pub(crate) resources: Arc<AssignedResources>,
    /// The `WDFDRIVER` it belongs to (`WdfGetDriver`), held as long as the device object
    /// exists so its driver value can be lent out with the device's lifetime.
    driver: Arc<RawObject>,
    /// Its power policy (docs/kmdf-behaviour.md section 10).
    pub(crate) power_policy: Arc<PowerPolicy>,
    /// Its queues, requests, files and interfaces.
    pub(crate) io: Arc<IoPackage>,
}

/// The I/O package of a device object.
///
/// # Panics
///
/// If `device` is not a device (a bug in the runtime).
pub(crate) fn io(device: &RawObject) -> &Arc<IoPackage> {
    &device.state::<DeviceState>().expect("a device object has a device's state").io
}

impl KindState for DeviceState {
    fn kind(&self) -> ObjectKind {
        ObjectKind::Device
    }
}

/// `WDF_PNPPOWER_EVENT_CALLBACKS` on the host: which callbacks are registered, and one
/// monomorphized function that calls them on the context type.
#[derive(Clone, Copy)]
pub(crate) struct PnpTable {
    pub(crate) registered: vtable::PnpPowerCallbacks,
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
    ArmWakeFromS0,
    DisarmWakeFromS0,
    WakeFromS0Triggered,
    ArmWakeFromSx,
    DisarmWakeFromSx,
    WakeFromSxTriggered,
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
            PnpCall::ArmWakeFromS0 => Callback::ArmWakeFromS0,
            PnpCall::DisarmWakeFromS0 => Callback::DisarmWakeFromS0,
            PnpCall::WakeFromS0Triggered => Callback::WakeFromS0Triggered,
            PnpCall::ArmWakeFromSx => Callback::ArmWakeFromSx,
            PnpCall::DisarmWakeFromSx => Callback::DisarmWakeFromSx,
            PnpCall::WakeFromSxTriggered => Callback::WakeFromSxTriggered,
        }
    }

    /// Whether the KMDF callback returns an `NTSTATUS` (the others return nothing).
    pub(crate) fn returns_status(self) -> bool {
        self.callback().is_fallible()
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
        PnpCall::ArmWakeFromS0 => context.arm_wake_from_s0(device),
        PnpCall::DisarmWakeFromS0 => {
            context.disarm_wake_from_s0(device);
            Ok(())
        }
        PnpCall::WakeFromS0Triggered => {
            context.wake_from_s0_triggered(device);
            Ok(())
        }
        PnpCall::ArmWakeFromSx => context.arm_wake_from_sx(device),
        PnpCall::DisarmWakeFromSx => {
            context.disarm_wake_from_sx(device);
            Ok(())
        }
        PnpCall::WakeFromSxTriggered => {
            context.wake_from_sx_triggered(device);
            Ok(())
        }
    }
}

fn cleanup<T: PnpPowerCallbacks>(object: &RawObject) {
    let device = device_ref::<T>(object);
    // No context when `create_with`'s closure failed: nothing to clean up.
    if let Some(context) = object.context::<T>() {
        context.cleanup(device);
    }
}

/// `PWDFDEVICE_INIT` on the host.
pub(crate) struct RawDeviceInit<'a> {
    pub(crate) slot: &'a DeviceSlot,
    /// What the driver configured for I/O before `WdfDeviceCreate`.
    pub(crate) io: IoInit,
}

#[allow(clippy::needless_pass_by_value, reason = "consumed like the kernel's PWDFDEVICE_INIT")]
pub(crate) fn create_with<T: PnpPowerCallbacks>(
    init: RawDeviceInit<'_>,
    build: impl FnOnce(&Device<T>) -> Result<T>,
) -> Result<&Device<T>> {
    let slot = init.slot;
    // The file callbacks were written for a device context type: this one.
    if init.io.file.is_some_and(|file| file.device != core::any::TypeId::of::<T>()) {
        return Err(crate::NtError::INVALID_PARAMETER);
    }
    let cleanup_hook = T::REGISTERED.contains(Callback::ObjectCleanup).then_some(cleanup::<T> as _);
    let object = create_object(slot, PnpTable::of::<T>(), cleanup_hook, true, init.io)?;
    // Children created by `build` are parented to the device; the context is set after. A
    // failed (or panicking) `build` deletes the device, with them.
    let unbuilt = DeleteOnDrop(&object);
    let context = build(device_ref(&object))?;
    core::mem::forget(unbuilt);
    object.set_context(context);
    Ok(device_ref(publish(slot, object)))
}

/// `WdfDeviceCreate`: the device object of `slot`'s node with the PnP/power callbacks of
/// `callbacks`, without its context yet. Also used by the raw face (`host::raw`).
pub(crate) fn create_object(
    slot: &DeviceSlot,
    callbacks: PnpTable,
    cleanup: Option<super::object::CleanupHook>,
    trace_cleanup: bool,
    io: IoInit,
) -> Result<Arc<RawObject>> {
    let policy = PowerPolicy::new(slot.driver.shared(), slot.resources.wake_capability());
    let state = DeviceState {
        callbacks,
        resources: Arc::clone(&slot.resources),
        driver: Arc::clone(&slot.driver),
        io: IoPackage::new(slot.driver.shared(), slot.node, io, &policy),
        power_policy: policy,
    };
    let io = Arc::clone(&state.io);
    let object = RawObject::create(
        slot.driver.shared(),
        NewObject {
            parent: Some(&slot.driver),
            device: Some(slot.node),
            cleanup,
            trace_cleanup,
            state: Some(StateSlot::new(Arc::new(state))),
            ..NewObject::new(ObjectKind::Device)
        },
    )?;
    // The I/O package reaches its device through a weak reference.
    io.set_device(&object);
    Ok(object)
}

/// Leaves the device `EvtDriverDeviceAdd` created in its slot, for the PnP manager.
pub(crate) fn publish(slot: &DeviceSlot, object: Arc<RawObject>) -> &RawObject {
    let created = CreatedDevice { object };
    // `DeviceInit::create` consumes the only `DeviceInit` of this slot, so it is empty.
    let created = match slot.created.set(created) {
        Ok(()) => slot.created.get().expect("just set"),
        Err(_) => unreachable!("a DeviceInit creates one device"),
    };
    &created.object
}

/// Deletes a device whose context was not built.
struct DeleteOnDrop<'a>(&'a Arc<RawObject>);

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        self.0.delete();
    }
}

/// `WdfDeviceSetFailed`: the runtime's PnP manager answers after the call returns.
pub(crate) fn set_failed(device: &RawObject, action: crate::device::FailedAction) {
    if let Some(node) = device.device() {
        device.shared().request_failure(node, action);
    }
}

/// `WdfGetDriver`, and its context if it is a `D`.
pub(crate) fn driver<D: crate::Driver>(device: &RawObject) -> Option<&D> {
    device.state::<DeviceState>()?.driver.context::<D>()
}
