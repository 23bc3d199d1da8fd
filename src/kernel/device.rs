//! Devices: `WdfDeviceCreate` with a typed context, and the PnP/power trampolines.

use core::marker::PhantomData;
use core::ptr;

use wdk_sys::{
    NTSTATUS, WDF_PNPPOWER_EVENT_CALLBACKS, WDF_POWER_DEVICE_STATE, WDFCMRESLIST, WDFDEVICE,
    WDFDEVICE_INIT, WDFOBJECT, call_unsafe_wdf_function_binding,
};

use super::{
    attributes_for, context as slot_context, status, struct_size, try_context, write_context,
};
use crate::pnp::{HardwareResources, Resource};
use crate::{Callback, Device, DevicePowerState, PnpPowerCallbacks, Result};

/// Views a device handle as `&Device<T>`.
///
/// # Safety
///
/// `device` is a live device created by [`create::<T>`], and stays alive for `'a`.
pub(crate) unsafe fn device_ref<'a, T>(device: WDFDEVICE) -> &'a Device<T> {
    // SAFETY: `Device<T>` is a zero-sized `#[repr(transparent)]` view of the handle value
    // (`RawObject`'s invariant): the reference is never read through, so it needs access to
    // no memory (the context is found from the handle, `slot`), and the handle is non-null
    // and live for `'a`.
    unsafe { &*device.cast_const().cast::<Device<T>>() }
}

pub(crate) fn context<T: PnpPowerCallbacks>(device: &Device<T>) -> &T {
    // SAFETY: a `&Device<T>` only exists for a device created by `create::<T>`, alive for the
    // reference's lifetime.
    unsafe { slot_context(device.raw.handle()) }
}

/// `PWDFDEVICE_INIT`, valid for the `EvtDriverDeviceAdd` call it was passed to.
pub(crate) struct RawDeviceInit<'a> {
    pub(crate) init: *mut WDFDEVICE_INIT,
    /// The device context type the file objects' callbacks expect (`set_file_object`).
    pub(crate) file_device: Option<core::any::TypeId>,
    pub(crate) _scope: PhantomData<&'a mut WDFDEVICE_INIT>,
}

#[allow(clippy::needless_pass_by_value, reason = "WdfDeviceCreate consumes the init")]
pub(crate) fn create_with<T: PnpPowerCallbacks>(
    init: RawDeviceInit<'_>,
    build: impl FnOnce(&Device<T>) -> Result<T>,
) -> Result<&Device<T>> {
    if init.file_device.is_some_and(|device| device != core::any::TypeId::of::<T>()) {
        return Err(crate::NtError::INVALID_PARAMETER);
    }
    let mut callbacks = pnp_power_callbacks::<T>();
    // SAFETY: `init.init` is the live PWDFDEVICE_INIT of this `EvtDriverDeviceAdd`; the
    // callbacks structure is initialized and only read during the call.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetPnpPowerEventCallbacks,
            init.init,
            &raw mut callbacks,
        );
    }
    if let Some(mut policy) = super::power_policy::power_policy_callbacks::<T>() {
        // SAFETY: as above.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfDeviceInitSetPowerPolicyEventCallbacks,
                init.init,
                &raw mut policy,
            );
        }
    }
    let cleanup = T::REGISTERED.contains(Callback::ObjectCleanup).then_some(cleanup::<T> as _);
    let mut attributes = attributes_for::<T>(cleanup, ptr::null_mut());
    let mut device_init = init.init;
    let mut device: WDFDEVICE = ptr::null_mut();
    // SAFETY: as above; on success KMDF consumes the init and returns the new device.
    let created = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            &raw mut device_init,
            &raw mut attributes,
            &raw mut device,
        )
    };
    crate::NtStatus::from_raw(created).ok()?;
    // SAFETY: created above with `T`; KMDF keeps it alive at least until the end of
    // `EvtDriverDeviceAdd` (`'a`), and deletes it itself if the add fails.
    let device_view: &Device<T> = unsafe { device_ref(device) };
    // The context space is zero-filled, which `try_context` reads as "not written": a
    // `context()` inside `build` panics rather than reading it. On failure the device stays
    // without a context until KMDF deletes it (the add fails); its cleanup skips it.
    let context = build(device_view)?;
    // SAFETY: the device was created with `attributes_for::<T>`; its PnP callbacks cannot
    // run before `EvtDriverDeviceAdd` returns, and the context is written only here.
    unsafe { write_context(device.cast(), context) };
    Ok(device_view)
}

/// `WDF_PNPPOWER_EVENT_CALLBACKS_INIT`, then a trampoline for each callback `T` registers.
fn pnp_power_callbacks<T: PnpPowerCallbacks>() -> WDF_PNPPOWER_EVENT_CALLBACKS {
    let on = |callback: Callback| T::REGISTERED.contains(callback);
    WDF_PNPPOWER_EVENT_CALLBACKS {
        Size: struct_size::<WDF_PNPPOWER_EVENT_CALLBACKS>(),
        EvtDeviceD0Entry: on(Callback::D0Entry).then_some(d0_entry::<T>),
        EvtDeviceD0EntryPostInterruptsEnabled: on(Callback::D0EntryPostInterruptsEnabled)
            .then_some(d0_entry_post_interrupts_enabled::<T>),
        EvtDeviceD0Exit: on(Callback::D0Exit).then_some(d0_exit::<T>),
        EvtDeviceD0ExitPreInterruptsDisabled: on(Callback::D0ExitPreInterruptsDisabled)
            .then_some(d0_exit_pre_interrupts_disabled::<T>),
        EvtDevicePrepareHardware: on(Callback::PrepareHardware).then_some(prepare_hardware::<T>),
        EvtDeviceReleaseHardware: on(Callback::ReleaseHardware).then_some(release_hardware::<T>),
        EvtDeviceSelfManagedIoCleanup: on(Callback::SelfManagedIoCleanup)
            .then_some(self_managed_io_cleanup::<T>),
        EvtDeviceSelfManagedIoFlush: on(Callback::SelfManagedIoFlush)
            .then_some(self_managed_io_flush::<T>),
        EvtDeviceSelfManagedIoInit: on(Callback::SelfManagedIoInit)
            .then_some(self_managed_io_init::<T>),
        EvtDeviceSelfManagedIoSuspend: on(Callback::SelfManagedIoSuspend)
            .then_some(self_managed_io_suspend::<T>),
        EvtDeviceSelfManagedIoRestart: on(Callback::SelfManagedIoRestart)
            .then_some(self_managed_io_restart::<T>),
        EvtDeviceSurpriseRemoval: on(Callback::SurpriseRemoval).then_some(surprise_removal::<T>),
        EvtDeviceQueryRemove: on(Callback::QueryRemove).then_some(query_remove::<T>),
        EvtDeviceQueryStop: on(Callback::QueryStop).then_some(query_stop::<T>),
        EvtDeviceUsageNotification: None,
        EvtDeviceRelationsQuery: None,
        EvtDeviceUsageNotificationEx: None,
    }
}

/// Trampolines: find the device and its context, call the trait method, return its status.
/// Whether one returns a status is checked against [`Callback::is_fallible`], the one table.
macro_rules! trampolines {
    (@fallible) => { false };
    (@fallible $ret:ty) => { true };
    ($(
        $name:ident[$callback:ident]($($arg:ident: $raw:ty),*) $(-> $ret:ty)?
            = |$this:ident, $device:ident| $call:expr;
    )*) => {$(
        const _: () = assert!(
            Callback::$callback.is_fallible() == trampolines!(@fallible $($ret)?),
            concat!(stringify!($name), ": its return type disagrees with Callback::is_fallible"),
        );

        unsafe extern "C" fn $name<T: PnpPowerCallbacks>(
            device: WDFDEVICE $(, $arg: $raw)*
        ) $(-> $ret)? {
            // SAFETY: KMDF calls the callbacks registered by `create::<T>` with that device,
            // alive for the call.
            let $device: &Device<T> = unsafe { device_ref(device) };
            let $this = $device.context();
            $call
        }
    )*};
}

/// Calls `f` with the power state, or fails with `STATUS_INVALID_PARAMETER` for a value
/// that is not one.
fn with_state(raw: WDF_POWER_DEVICE_STATE, f: impl FnOnce(DevicePowerState) -> Result) -> NTSTATUS {
    status(DevicePowerState::from_raw(raw).and_then(f))
}

fn resources<'a>(raw: WDFCMRESLIST, translated: WDFCMRESLIST) -> HardwareResources<'a> {
    HardwareResources { raw: RawResources { raw, translated, _lists: PhantomData } }
}

trampolines! {
    prepare_hardware[PrepareHardware](raw: WDFCMRESLIST, translated: WDFCMRESLIST) -> NTSTATUS
        = |this, device| status(this.prepare_hardware(device, resources(raw, translated)));
    release_hardware[ReleaseHardware](translated: WDFCMRESLIST) -> NTSTATUS
        = |this, device| status(this.release_hardware(device, resources(ptr::null_mut(), translated)));
    d0_entry[D0Entry](previous: WDF_POWER_DEVICE_STATE) -> NTSTATUS
        = |this, device| with_state(previous, |previous| this.d0_entry(device, previous));
    d0_entry_post_interrupts_enabled[D0EntryPostInterruptsEnabled](previous: WDF_POWER_DEVICE_STATE) -> NTSTATUS
        = |this, device| with_state(previous, |previous| {
            this.d0_entry_post_interrupts_enabled(device, previous)
        });
    d0_exit_pre_interrupts_disabled[D0ExitPreInterruptsDisabled](target: WDF_POWER_DEVICE_STATE) -> NTSTATUS
        = |this, device| with_state(target, |target| {
            this.d0_exit_pre_interrupts_disabled(device, target)
        });
    d0_exit[D0Exit](target: WDF_POWER_DEVICE_STATE) -> NTSTATUS
        = |this, device| with_state(target, |target| this.d0_exit(device, target));
    query_remove[QueryRemove]() -> NTSTATUS = |this, device| status(this.query_remove(device));
    query_stop[QueryStop]() -> NTSTATUS = |this, device| status(this.query_stop(device));
    surprise_removal[SurpriseRemoval]() = |this, device| this.surprise_removal(device);
    self_managed_io_init[SelfManagedIoInit]() -> NTSTATUS = |this, device| status(this.self_managed_io_init(device));
    self_managed_io_suspend[SelfManagedIoSuspend]() -> NTSTATUS
        = |this, device| status(this.self_managed_io_suspend(device));
    self_managed_io_restart[SelfManagedIoRestart]() -> NTSTATUS
        = |this, device| status(this.self_managed_io_restart(device));
    self_managed_io_flush[SelfManagedIoFlush]() = |this, device| this.self_managed_io_flush(device);
    self_managed_io_cleanup[SelfManagedIoCleanup]() = |this, device| this.self_managed_io_cleanup(device);
}

/// The device's `EvtCleanupCallback`.
unsafe extern "C" fn cleanup<T: PnpPowerCallbacks>(object: WDFOBJECT) {
    // SAFETY: registered by `create_with::<T>` for that device, alive for the call.
    let device: &Device<T> = unsafe { device_ref(object.cast()) };
    // SAFETY: as above; the device was created with `attributes_for::<T>`.
    // No context when `create_with`'s closure failed: nothing to clean up.
    if let Some(context) = unsafe { try_context::<T>(object) } {
        context.cleanup(device);
    }
}

/// `WDFCMRESLIST` handles, valid for the callback they were passed to.
#[derive(Clone, Copy)]
pub(crate) struct RawResources<'a> {
    raw: WDFCMRESLIST,
    translated: WDFCMRESLIST,
    _lists: PhantomData<&'a ()>,
}

impl RawResources<'_> {
    pub(crate) fn raw_count(self) -> u32 {
        count(self.raw)
    }

    pub(crate) fn translated_count(self) -> u32 {
        count(self.translated)
    }

    pub(crate) fn raw_descriptor(self, index: u32) -> Option<Resource> {
        descriptor(self.raw, index)
    }

    pub(crate) fn translated_descriptor(self, index: u32) -> Option<Resource> {
        descriptor(self.translated, index)
    }
}

/// `WdfCmResourceListGetDescriptor`, read into a [`Resource`].
#[allow(clippy::cast_sign_loss, reason = "physical addresses are unsigned; LARGE_INTEGER is not")]
fn descriptor(list: WDFCMRESLIST, index: u32) -> Option<Resource> {
    if list.is_null() {
        return None;
    }
    // SAFETY: a non-null list handle passed to the running callback, valid during it; an
    // index past the end returns NULL.
    let descriptor =
        unsafe { call_unsafe_wdf_function_binding!(WdfCmResourceListGetDescriptor, list, index) };
    if descriptor.is_null() {
        return None;
    }
    // SAFETY: a non-null descriptor of the list, valid while the list is (this callback);
    // the structure is packed, so it is copied out unaligned.
    let descriptor = unsafe { descriptor.read_unaligned() };
    let resource = match descriptor.Type {
        Resource::TYPE_PORT => {
            // SAFETY: a port descriptor's union holds `Port`.
            let port = unsafe { descriptor.u.Port };
            // SAFETY: every bit pattern of a LARGE_INTEGER is a valid `QuadPart`.
            let start = unsafe { port.Start.QuadPart };
            Resource::Port { start: start as u64, length: port.Length }
        }
        Resource::TYPE_MEMORY => {
            // SAFETY: a memory descriptor's union holds `Memory`.
            let memory = unsafe { descriptor.u.Memory };
            // SAFETY: every bit pattern of a LARGE_INTEGER is a valid `QuadPart`.
            let start = unsafe { memory.Start.QuadPart };
            Resource::Memory { start: start as u64, length: memory.Length }
        }
        Resource::TYPE_INTERRUPT => {
            // SAFETY: an interrupt descriptor's union holds `Interrupt`, or for a
            // message-signaled one `MessageInterrupt`, whose raw and translated forms keep
            // `Vector` and `Affinity` at the same offsets.
            let interrupt = unsafe { descriptor.u.Interrupt };
            Resource::Interrupt {
                vector: interrupt.Vector,
                affinity: interrupt.Affinity,
                message_signaled: descriptor.Flags & Resource::FLAG_INTERRUPT_MESSAGE != 0,
            }
        }
        kind => Resource::Other { kind },
    };
    Some(resource)
}

fn count(list: WDFCMRESLIST) -> u32 {
    if list.is_null() {
        return 0;
    }
    // SAFETY: a non-null list handle passed to the running callback, valid during it.
    unsafe { call_unsafe_wdf_function_binding!(WdfCmResourceListGetCount, list) }
}

/// `WdfDeviceSetFailed`.
pub(crate) fn set_failed(device: &super::RawObject, action: crate::FailedAction) {
    let action = match action {
        crate::FailedAction::AttemptRestart => {
            wdk_sys::_WDF_DEVICE_FAILED_ACTION::WdfDeviceFailedAttemptRestart
        }
        crate::FailedAction::NoRestart => {
            wdk_sys::_WDF_DEVICE_FAILED_ACTION::WdfDeviceFailedNoRestart
        }
    };
    // SAFETY: `device` is a live device, lent to the running callback; WdfDeviceSetFailed
    // may be called at any IRQL up to DISPATCH_LEVEL, which is as high as callbacks run.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfDeviceSetFailed, device.handle().cast(), action);
    }
}

/// `WdfGetDriver`'s context, if the driver value is a `D`. The device only borrows it: the
/// driver outlives every one of its devices.
pub(crate) fn driver<D: crate::Driver>(_device: &super::RawObject) -> Option<&D> {
    super::entry::driver::<D>()
}
