//! Power policy: when a device idles, whether it is armed to wake, and the power references
//! that keep it in D0.
//!
//! A function driver owns its device's power policy. By default a KMDF device never idles:
//! it stays in D0 while the system runs. [`Device::assign_s0_idle_settings`]
//! (`WdfDeviceAssignS0IdleSettings`) makes the framework power it down after an idle
//! timeout with no power reference, and bring it back when it is needed;
//! [`Device::assign_sx_wake_settings`] (`WdfDeviceAssignSxWakeSettings`) arms it to wake
//! the system when the system sleeps. [`Device::stop_idle`] (`WdfDeviceStopIdle`) takes a
//! power reference, released when the returned [`PowerReference`] is dropped
//! (`WdfDeviceResumeIdle`), so a reference cannot leak or be released twice.
//!
//! The wake callbacks (`WdfDeviceInitSetPowerPolicyEventCallbacks`) are methods of
//! [`PnpPowerCallbacks`](crate::PnpPowerCallbacks), registered like the others by
//! [`vtable!`](crate::vtable): `arm_wake_from_s0`, `disarm_wake_from_s0`,
//! `wake_from_s0_triggered`, `arm_wake_from_sx`, `disarm_wake_from_sx`,
//! `wake_from_sx_triggered`. The order they run in is in `docs/kmdf-behaviour.md` section 10.
//!
//! ```
//! use core::time::Duration;
//! use kmdf::power_policy::{IdleCaps, S0IdleSettings};
//! use kmdf::{Device, DeviceInit, PnpPowerCallbacks, Result};
//!
//! struct Sensor;
//!
//! kmdf::vtable! {
//!     impl PnpPowerCallbacks for Sensor {
//!         // Armed before each idle power-down, disarmed when back in D0.
//!         fn arm_wake_from_s0(&self, _device: &Device<Self>) -> Result {
//!             Ok(())
//!         }
//!
//!         fn disarm_wake_from_s0(&self, _device: &Device<Self>) {}
//!     }
//! }
//!
//! fn device_add(device_init: DeviceInit<'_>) -> Result {
//!     let device = device_init.create(Sensor)?;
//!     // Idle after 2 s without a power reference, armed to wake.
//!     device.assign_s0_idle_settings(
//!         &S0IdleSettings::new(IdleCaps::CanWakeFromS0).idle_timeout(Duration::from_secs(2)),
//!     )
//! }
//! ```

use core::fmt;
use core::time::Duration;

use crate::backend;
use crate::{Device, NtError, Result};

/// Whether the device can wake itself from its idle Dx state while the system runs
/// (`WDF_POWER_POLICY_S0_IDLE_CAPABILITIES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdleCaps {
    /// `IdleCannotWakeFromS0`: it idles unarmed; only a power reference (I/O, `stop_idle`)
    /// brings it back.
    CannotWakeFromS0,
    /// `IdleCanWakeFromS0`: it is armed for wake (`arm_wake_from_s0`) before each idle
    /// power-down, and a wake signal brings it back.
    CanWakeFromS0,
    /// `IdleUsbSelectiveSuspend`: wake-capable idle through USB selective suspend (Dx no
    /// deeper than D2).
    UsbSelectiveSuspend,
}

impl IdleCaps {
    /// Whether the device is armed for wake when it idles.
    #[must_use]
    pub const fn can_wake(self) -> bool {
        !matches!(self, IdleCaps::CannotWakeFromS0)
    }
}

/// The low-power state a device enters when it idles or sleeps (`DEVICE_POWER_STATE`, the
/// states a power policy may name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DxState {
    /// `PowerDeviceD1`.
    D1,
    /// `PowerDeviceD2`.
    D2,
    /// `PowerDeviceD3`.
    D3,
    /// `PowerDeviceMaximum`: the deepest state from which the device can wake (the bus's
    /// `DeviceWake`) when it is armed, `D3` otherwise.
    Deepest,
}

/// `WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS`, as `WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS_INIT`
/// fills it, then changed field by field.
///
/// ```
/// use core::time::Duration;
/// use kmdf::power_policy::{DxState, IdleCaps, S0IdleSettings};
///
/// let settings = S0IdleSettings::new(IdleCaps::CannotWakeFromS0)
///     .idle_timeout(Duration::from_millis(500))
///     .power_up_on_system_wake(true);
/// assert_eq!(settings.dx_state, DxState::Deepest);
/// assert_eq!(settings.enabled, None); // WdfUseDefault: idle is enabled
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct S0IdleSettings {
    /// `IdleCaps`.
    pub idle_caps: IdleCaps,
    /// `DxState`: [`DxState::Deepest`] by default.
    pub dx_state: DxState,
    /// `IdleTimeout`: `None` is `IdleTimeoutDefaultValue` (5 s).
    pub idle_timeout: Option<Duration>,
    /// `Enabled`: `None` is `WdfUseDefault` (enabled unless the user disabled idle);
    /// `Some(false)` never idles, and brings a device idle in Dx back to D0.
    pub enabled: Option<bool>,
    /// `PowerUpIdleDeviceOnSystemWake`: `None` is `WdfUseDefault` (`FALSE`). Only for
    /// [`IdleCaps::CannotWakeFromS0`].
    pub power_up_on_system_wake: Option<bool>,
    /// `UserControlOfIdleSettings == IdleAllowUserControl` (the default).
    pub user_control: bool,
}

/// KMDF's idle timeout when the driver leaves it at `IdleTimeoutDefaultValue`
/// (`FxPowerPolicyDefaultTimeout`, 5,000 ms).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

impl S0IdleSettings {
    /// `WDF_DEVICE_POWER_POLICY_IDLE_SETTINGS_INIT(&settings, idle_caps)`.
    #[must_use]
    pub const fn new(idle_caps: IdleCaps) -> Self {
        Self {
            idle_caps,
            dx_state: DxState::Deepest,
            idle_timeout: None,
            enabled: None,
            power_up_on_system_wake: None,
            user_control: true,
        }
    }

    /// With `IdleTimeout` set.
    #[must_use]
    pub const fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// With `DxState` set.
    #[must_use]
    pub const fn dx_state(mut self, dx_state: DxState) -> Self {
        self.dx_state = dx_state;
        self
    }

    /// With `Enabled` set to `WdfTrue` or `WdfFalse`.
    #[must_use]
    pub const fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// With `PowerUpIdleDeviceOnSystemWake` set to `WdfTrue` or `WdfFalse`.
    #[must_use]
    pub const fn power_up_on_system_wake(mut self, power_up: bool) -> Self {
        self.power_up_on_system_wake = Some(power_up);
        self
    }

    /// With `UserControlOfIdleSettings` set (`true`: `IdleAllowUserControl`).
    #[must_use]
    pub const fn user_control(mut self, allowed: bool) -> Self {
        self.user_control = allowed;
        self
    }

    /// The checks of `WdfDeviceAssignS0IdleSettings` that do not depend on the device.
    pub(crate) fn check(&self) -> Result {
        if self.idle_caps.can_wake() && self.power_up_on_system_wake.is_some() {
            return Err(NtError::INVALID_PARAMETER);
        }
        self.timeout_ms().map(drop)
    }

    /// The idle timeout in milliseconds, as KMDF takes it (`ULONG`).
    ///
    /// # Errors
    ///
    /// `STATUS_INVALID_PARAMETER` when it does not fit in a `ULONG`, or is zero (which is
    /// `IdleTimeoutDefaultValue` in C; leave it `None` for that).
    pub fn timeout_ms(&self) -> Result<u32> {
        match self.idle_timeout {
            None => Ok(0),
            Some(timeout) => match u32::try_from(timeout.as_millis()) {
                Ok(0) | Err(_) => Err(NtError::INVALID_PARAMETER),
                Ok(ms) => Ok(ms),
            },
        }
    }
}

/// `WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS`, as `WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS_INIT`
/// fills it, then changed field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SxWakeSettings {
    /// `DxState`: [`DxState::Deepest`] by default (the deepest `DeviceWake` state).
    pub dx_state: DxState,
    /// `Enabled`: `None` is `WdfUseDefault` (enabled unless the user disabled wake).
    pub enabled: Option<bool>,
    /// `UserControlOfWakeSettings == WakeAllowUserControl` (the default).
    pub user_control: bool,
}

impl SxWakeSettings {
    /// `WDF_DEVICE_POWER_POLICY_WAKE_SETTINGS_INIT(&settings)`.
    #[must_use]
    pub const fn new() -> Self {
        Self { dx_state: DxState::Deepest, enabled: None, user_control: true }
    }

    /// With `DxState` set.
    #[must_use]
    pub const fn dx_state(mut self, dx_state: DxState) -> Self {
        self.dx_state = dx_state;
        self
    }

    /// With `Enabled` set to `WdfTrue` or `WdfFalse`.
    #[must_use]
    pub const fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// With `UserControlOfWakeSettings` set (`true`: `WakeAllowUserControl`).
    #[must_use]
    pub const fn user_control(mut self, allowed: bool) -> Self {
        self.user_control = allowed;
        self
    }
}

impl Default for SxWakeSettings {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Device<T> {
    /// Sets the device's S0 idle policy (`WdfDeviceAssignS0IdleSettings`): from
    /// `device_add` or later; a later call replaces the policy, which takes effect at once.
    ///
    /// # Errors
    ///
    /// * `STATUS_POWER_STATE_INVALID`: a wake-capable `idle_caps` on a device that cannot
    ///   wake from S0, or a `dx_state` deeper than the deepest state it can wake from (D2
    ///   for USB selective suspend).
    /// * `STATUS_INVALID_PARAMETER`: `power_up_on_system_wake` set with a wake-capable
    ///   `idle_caps`; an idle timeout of zero or above `u32::MAX` milliseconds.
    pub fn assign_s0_idle_settings(&self, settings: &S0IdleSettings) -> Result {
        settings.check()?;
        backend::power_policy::assign_s0_idle_settings(&self.raw, settings)
    }

    /// Sets the device's system-wake policy (`WdfDeviceAssignSxWakeSettings`): when the
    /// system sleeps with wake enabled, the device is armed (`arm_wake_from_sx`) and enters
    /// `dx_state`.
    ///
    /// # Errors
    ///
    /// `STATUS_POWER_STATE_INVALID` when the device cannot wake the system, or `dx_state` is
    /// deeper than the deepest state it can wake from.
    pub fn assign_sx_wake_settings(&self, settings: &SxWakeSettings) -> Result {
        backend::power_policy::assign_sx_wake_settings(&self.raw, *settings)
    }

    /// Takes a power reference (`WdfDeviceStopIdle`): the device does not idle while the
    /// returned [`PowerReference`] lives, and is brought back to D0 if it idles now.
    ///
    /// With `wait_for_d0` the call returns once the device is in D0 (only at
    /// `PASSIVE_LEVEL`, and never from the device's own power callbacks, which the power-up
    /// would wait for); without it, the reference is held at once and
    /// [`PowerReference::is_pending`] says whether the power-up is still on its way
    /// (`STATUS_PENDING`).
    ///
    /// # Errors
    ///
    /// * `STATUS_POWER_STATE_INVALID` before the device's power policy started (in
    ///   `device_add`, `prepare_hardware`) or after it stopped (removal), and when the
    ///   power-up waited for failed (no reference is kept).
    /// * `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL` when waiting above `PASSIVE_LEVEL`.
    /// * On the host runtime, `STATUS_POSSIBLE_DEADLOCK` when waiting from one of the
    ///   device's own PnP or power callbacks (in KMDF a deadlock).
    pub fn stop_idle(&self, wait_for_d0: bool) -> Result<PowerReference<'_>> {
        let pending = backend::power_policy::stop_idle(&self.raw, wait_for_d0)?;
        Ok(PowerReference { raw: &self.raw, pending })
    }
}

/// A power reference on a device ([`Device::stop_idle`]): released when dropped
/// (`WdfDeviceResumeIdle`), which lets the idle timer run again once no reference is left.
#[must_use = "the reference is released (WdfDeviceResumeIdle) when dropped"]
pub struct PowerReference<'a> {
    raw: &'a backend::RawObject,
    pending: bool,
}

impl PowerReference<'_> {
    /// Whether `WdfDeviceStopIdle` returned `STATUS_PENDING`: the device was not in D0 and
    /// its power-up was started, not awaited.
    #[must_use]
    pub const fn is_pending(&self) -> bool {
        self.pending
    }
}

impl Drop for PowerReference<'_> {
    fn drop(&mut self) {
        backend::power_policy::resume_idle(self.raw);
    }
}

impl fmt::Debug for PowerReference<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerReference").field("pending", &self.pending).finish_non_exhaustive()
    }
}
