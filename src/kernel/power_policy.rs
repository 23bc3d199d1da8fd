//! Power policy in the kernel: `WdfDeviceAssignS0IdleSettings`,
//! `WdfDeviceAssignSxWakeSettings`, `WdfDeviceStopIdle`, `WdfDeviceResumeIdle`, and the
//! power-policy event callbacks' trampolines (`WdfDeviceInitSetPowerPolicyEventCallbacks`).

use core::ptr;

use wdk_sys::{
    _DEVICE_POWER_STATE, _WDF_POWER_POLICY_IDLE_TIMEOUT_TYPE,
    _WDF_POWER_POLICY_S0_IDLE_CAPABILITIES, _WDF_POWER_POLICY_S0_IDLE_USER_CONTROL,
    _WDF_POWER_POLICY_SX_WAKE_USER_CONTROL, _WDF_TRI_STATE, DEVICE_POWER_STATE, NTSTATUS,
    WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS, WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS,
    WDF_POWER_POLICY_EVENT_CALLBACKS, WDF_TRI_STATE, WDFDEVICE, call_unsafe_wdf_function_binding,
};

use super::{RawObject, status, struct_size};
use crate::power_policy::{DxState, IdleCaps, S0IdleSettings, SxWakeSettings};
use crate::{Callback, Device, NtStatus, PnpPowerCallbacks, Result};

fn tri_state(value: Option<bool>) -> WDF_TRI_STATE {
    match value {
        None => _WDF_TRI_STATE::WdfUseDefault,
        Some(true) => _WDF_TRI_STATE::WdfTrue,
        Some(false) => _WDF_TRI_STATE::WdfFalse,
    }
}

fn dx_state(state: DxState) -> DEVICE_POWER_STATE {
    match state {
        DxState::D1 => _DEVICE_POWER_STATE::PowerDeviceD1,
        DxState::D2 => _DEVICE_POWER_STATE::PowerDeviceD2,
        DxState::D3 => _DEVICE_POWER_STATE::PowerDeviceD3,
        DxState::Deepest => _DEVICE_POWER_STATE::PowerDeviceMaximum,
    }
}

pub(crate) fn assign_s0_idle_settings(device: &RawObject, settings: &S0IdleSettings) -> Result {
    let mut raw = WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS {
        Size: struct_size::<WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS>(),
        IdleCaps: match settings.idle_caps {
            IdleCaps::CannotWakeFromS0 => {
                _WDF_POWER_POLICY_S0_IDLE_CAPABILITIES::IdleCannotWakeFromS0
            }
            IdleCaps::CanWakeFromS0 => _WDF_POWER_POLICY_S0_IDLE_CAPABILITIES::IdleCanWakeFromS0,
            IdleCaps::UsbSelectiveSuspend => {
                _WDF_POWER_POLICY_S0_IDLE_CAPABILITIES::IdleUsbSelectiveSuspend
            }
        },
        // `WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS_INIT` writes D3 for a device that cannot
        // wake, PowerDeviceMaximum otherwise; KMDF resolves Maximum to D3 for the former.
        DxState: dx_state(settings.dx_state),
        // 0 is IdleTimeoutDefaultValue.
        IdleTimeout: settings.timeout_ms()?,
        UserControlOfIdleSettings: if settings.user_control {
            _WDF_POWER_POLICY_S0_IDLE_USER_CONTROL::IdleAllowUserControl
        } else {
            _WDF_POWER_POLICY_S0_IDLE_USER_CONTROL::IdleDoNotAllowUserControl
        },
        Enabled: tri_state(settings.enabled),
        PowerUpIdleDeviceOnSystemWake: tri_state(settings.power_up_on_system_wake),
        IdleTimeoutType: _WDF_POWER_POLICY_IDLE_TIMEOUT_TYPE::DriverManagedIdleTimeout,
        ExcludeD3Cold: _WDF_TRI_STATE::WdfUseDefault,
    };
    // SAFETY: `device` is a live device (a `&Device<T>` views it); the settings structure is
    // initialized, sized for this KMDF version, and only read during the call.
    let assigned = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceAssignS0IdleSettings,
            device.handle().cast(),
            &raw mut raw,
        )
    };
    NtStatus::from_raw(assigned).ok()
}

pub(crate) fn assign_sx_wake_settings(device: &RawObject, settings: SxWakeSettings) -> Result {
    let mut raw = WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS {
        Size: struct_size::<WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS>(),
        DxState: dx_state(settings.dx_state),
        UserControlOfWakeSettings: if settings.user_control {
            _WDF_POWER_POLICY_SX_WAKE_USER_CONTROL::WakeAllowUserControl
        } else {
            _WDF_POWER_POLICY_SX_WAKE_USER_CONTROL::WakeDoNotAllowUserControl
        },
        Enabled: tri_state(settings.enabled),
        ArmForWakeIfChildrenAreArmedForWake: 0,
        IndicateChildWakeOnParentWake: 0,
    };
    // SAFETY: as for `assign_s0_idle_settings`.
    let assigned = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceAssignSxWakeSettings,
            device.handle().cast(),
            &raw mut raw,
        )
    };
    NtStatus::from_raw(assigned).ok()
}

/// `WdfDeviceStopIdle` (the macro: `WdfDeviceStopIdleActual` with no tag, line or file).
pub(crate) fn stop_idle(device: &RawObject, wait_for_d0: bool) -> Result<bool> {
    if wait_for_d0 && crate::sync::current_irql() != crate::sync::Irql::Passive {
        return Err(crate::NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
    }
    // SAFETY: `device` is a live device; tag, line and file may be null/zero.
    let stopped = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceStopIdleActual,
            device.handle().cast(),
            u8::from(wait_for_d0),
            ptr::null_mut(),
            0,
            ptr::null_mut(),
        )
    };
    let stopped = NtStatus::from_raw(stopped);
    stopped.ok()?;
    Ok(stopped == NtStatus::PENDING)
}

/// `WdfDeviceResumeIdle` (`WdfDeviceResumeIdleActual` with no tag, line or file).
pub(crate) fn resume_idle(device: &RawObject) {
    // SAFETY: `device` is a live device holding the reference a `PowerReference` took.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceResumeIdleActual,
            device.handle().cast(),
            ptr::null_mut(),
            0,
            ptr::null_mut(),
        );
    }
}

/// `WDF_POWER_POLICY_EVENT_CALLBACKS_INIT`, then a trampoline for each callback `T`
/// registers; `None` when it registers none (no call is made then).
pub(crate) fn power_policy_callbacks<T: PnpPowerCallbacks>()
-> Option<WDF_POWER_POLICY_EVENT_CALLBACKS> {
    let on = |callback: Callback| T::REGISTERED.contains(callback);
    let any = [
        Callback::ArmWakeFromS0,
        Callback::DisarmWakeFromS0,
        Callback::WakeFromS0Triggered,
        Callback::ArmWakeFromSx,
        Callback::DisarmWakeFromSx,
        Callback::WakeFromSxTriggered,
    ]
    .into_iter()
    .any(on);
    any.then(|| WDF_POWER_POLICY_EVENT_CALLBACKS {
        Size: struct_size::<WDF_POWER_POLICY_EVENT_CALLBACKS>(),
        EvtDeviceArmWakeFromS0: on(Callback::ArmWakeFromS0).then_some(arm_wake_from_s0::<T>),
        EvtDeviceDisarmWakeFromS0: on(Callback::DisarmWakeFromS0)
            .then_some(disarm_wake_from_s0::<T>),
        EvtDeviceWakeFromS0Triggered: on(Callback::WakeFromS0Triggered)
            .then_some(wake_from_s0_triggered::<T>),
        EvtDeviceArmWakeFromSx: on(Callback::ArmWakeFromSx).then_some(arm_wake_from_sx::<T>),
        EvtDeviceDisarmWakeFromSx: on(Callback::DisarmWakeFromSx)
            .then_some(disarm_wake_from_sx::<T>),
        EvtDeviceWakeFromSxTriggered: on(Callback::WakeFromSxTriggered)
            .then_some(wake_from_sx_triggered::<T>),
        EvtDeviceArmWakeFromSxWithReason: None,
    })
}

/// Views the device a power-policy callback gets.
///
/// # Safety
///
/// `device` is a live device created by `create_with::<T>`, alive for `'a`.
unsafe fn device_ref<'a, T>(device: WDFDEVICE) -> &'a Device<T> {
    // SAFETY: as `super::device::device_ref`: `Device<T>` is a zero-sized view of the
    // handle value, never read through.
    unsafe { &*device.cast_const().cast::<Device<T>>() }
}

macro_rules! policy_trampolines {
    (@fallible) => { false };
    (@fallible $ret:ty) => { true };
    ($($name:ident[$callback:ident] $(-> $ret:ty)? = |$this:ident, $device:ident| $call:expr;)*) => {$(
        const _: () = assert!(
            Callback::$callback.is_fallible() == policy_trampolines!(@fallible $($ret)?),
            concat!(stringify!($name), ": its return type disagrees with Callback::is_fallible"),
        );

        unsafe extern "C" fn $name<T: PnpPowerCallbacks>(device: WDFDEVICE) $(-> $ret)? {
            // SAFETY: KMDF calls the callbacks `create_with::<T>` registered with that
            // device, alive for the call.
            let $device: &Device<T> = unsafe { device_ref(device) };
            let $this = $device.context();
            $call
        }
    )*};
}

policy_trampolines! {
    arm_wake_from_s0[ArmWakeFromS0] -> NTSTATUS
        = |this, device| status(this.arm_wake_from_s0(device));
    disarm_wake_from_s0[DisarmWakeFromS0] = |this, device| this.disarm_wake_from_s0(device);
    wake_from_s0_triggered[WakeFromS0Triggered]
        = |this, device| this.wake_from_s0_triggered(device);
    arm_wake_from_sx[ArmWakeFromSx] -> NTSTATUS
        = |this, device| status(this.arm_wake_from_sx(device));
    disarm_wake_from_sx[DisarmWakeFromSx] = |this, device| this.disarm_wake_from_sx(device);
    wake_from_sx_triggered[WakeFromSxTriggered]
        = |this, device| this.wake_from_sx_triggered(device);
}
