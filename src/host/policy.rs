//! The power policy of one device on the host: its S0 idle and Sx wake settings, its power
//! references, and its idle timeout on the virtual clock (docs/kmdf-behaviour.md section 10).
//! (The calls a driver makes, `WdfDeviceAssignS0IdleSettings` and the others, are in
//! `power_policy.rs`, which finds a device's policy here.)
//!
//! The policy decides; the PnP machine ([`super::pnp::machine`]) runs the transitions.
//! The policy reaches the device's node through [`PolicyOwner`], which the node implements,
//! so that this module depends on neither the node nor the machine:
//!
//! * the idle timeout is an [`Expiry`] on the clock; when it falls due (in
//!   `Runtime::advance`) the node idles the device, if nothing changed meanwhile;
//! * a power reference taken while the device idles in Dx (`WdfDeviceStopIdle`) asks the
//!   node to bring it back to D0: at once on the calling thread when it waits, on a worker
//!   thread when it does not (`STATUS_PENDING`), and after the action in progress when it
//!   is taken from one of the device's own callbacks.

use super::std;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use super::clock::{Entry, Expiry, Key};
use super::mutex::lock;
use super::pool::Origin;
use super::shared::Shared;
use super::sync::current_irql;
use super::sync_shim::Mutex;
use crate::power_policy::{DxState, IdleCaps, S0IdleSettings, SxWakeSettings};
use crate::sync::Irql;
use crate::{DevicePowerState, NtError, Result};

/// The S0 idle settings as KMDF keeps them once checked and resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct S0Idle {
    /// Armed for wake before each idle power-down.
    pub(crate) can_wake: bool,
    /// The state the device idles in.
    pub(crate) dx: DevicePowerState,
    pub(crate) timeout: Duration,
    pub(crate) enabled: bool,
    pub(crate) power_up_on_system_wake: bool,
}

/// The Sx wake settings, checked and resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SxWake {
    /// The state the device sleeps in when armed.
    pub(crate) dx: DevicePowerState,
    pub(crate) enabled: bool,
}

/// What the device's node does for the policy.
pub(crate) trait PolicyOwner: Send + Sync {
    /// The idle timeout set at `key` fell due: idle the device unless the policy changed.
    fn idle_timeout(&self, key: Key);

    /// A power reference needs the device in D0: bring it back from its idle Dx state, on
    /// this thread. Returns whether the device is in D0 afterwards.
    fn power_up(&self) -> bool;

    /// Whether this thread is applying an action to the device now (so its callbacks run
    /// here, and the device's state cannot change until it returns).
    fn applying_here(&self) -> bool;
}

/// One device's power policy.
pub(crate) struct PowerPolicy {
    shared: Arc<Shared>,
    /// The bus's `DeviceWake` capability.
    device_wake: Option<DevicePowerState>,
    inner: Mutex<Inner>,
    owner: OnceLock<Weak<dyn PolicyOwner>>,
    /// Itself, for the clock entries that point back at it.
    me: Weak<PowerPolicy>,
}

#[derive(Default)]
struct Inner {
    s0: Option<S0Idle>,
    sx: Option<SxWake>,
    /// `WdfDeviceStopIdle` references not yet released.
    references: u32,
    /// The power policy runs: from the start's power-up to the removal.
    started: bool,
    /// The device is in a low-power state while started (idle or asleep).
    in_dx: bool,
    /// The idle timeout's place on the clock, while it runs.
    timer: Option<Key>,
    /// A power-up asked for from one of the device's own callbacks, done after the action.
    power_up_requested: bool,
}

impl PowerPolicy {
    /// The policy of a new device whose bus reports `device_wake`.
    pub(crate) fn new(shared: &Arc<Shared>, device_wake: Option<DevicePowerState>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            shared: Arc::clone(shared),
            device_wake,
            inner: Mutex::new(Inner::default()),
            owner: OnceLock::new(),
            me: me.clone(),
        })
    }

    /// Connects the policy to its node; once.
    pub(crate) fn set_owner(&self, owner: Weak<dyn PolicyOwner>) {
        let _ = self.owner.set(owner);
    }

    fn owner(&self) -> Option<Arc<dyn PolicyOwner>> {
        self.owner.get()?.upgrade()
    }

    /// The S0 idle settings, if the driver assigned some.
    pub(crate) fn s0(&self) -> Option<S0Idle> {
        lock(&self.inner).s0
    }

    /// The Sx wake settings, if the driver assigned some.
    pub(crate) fn sx(&self) -> Option<SxWake> {
        lock(&self.inner).sx
    }

    /// Whether a power reference is held.
    pub(crate) fn referenced(&self) -> bool {
        lock(&self.inner).references > 0
    }

    /// `WdfDeviceAssignS0IdleSettings` (`FxPkgPnp::PowerPolicySetS0IdleSettings`). A device
    /// idle in Dx whose idle is now disabled is brought back to D0.
    pub(crate) fn assign_s0(&self, settings: &S0IdleSettings) -> Result {
        let can_wake = settings.idle_caps.can_wake();
        let usb = settings.idle_caps == IdleCaps::UsbSelectiveSuspend;
        let dx = if can_wake {
            let deepest = self.device_wake.ok_or(NtError::POWER_STATE_INVALID)?;
            let dx = match settings.dx_state {
                DxState::Deepest => deepest,
                explicit => dx_state(explicit),
            };
            if deeper(dx, deepest) || (usb && deeper(dx, DevicePowerState::D2)) {
                return Err(NtError::POWER_STATE_INVALID);
            }
            dx
        } else {
            match settings.dx_state {
                DxState::Deepest => DevicePowerState::D3,
                explicit => dx_state(explicit),
            }
        };
        let timeout = match settings.timeout_ms()? {
            0 => crate::power_policy::DEFAULT_IDLE_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let s0 = S0Idle {
            can_wake,
            dx,
            timeout,
            enabled: settings.enabled.unwrap_or(true),
            power_up_on_system_wake: settings.power_up_on_system_wake.unwrap_or(false),
        };
        let wake_up = {
            let mut inner = lock(&self.inner);
            inner.s0 = Some(s0);
            inner.started && inner.in_dx && !s0.enabled
        };
        if wake_up {
            self.ask_power_up();
        }
        self.reevaluate();
        Ok(())
    }

    /// `WdfDeviceAssignSxWakeSettings`.
    pub(crate) fn assign_sx(&self, settings: SxWakeSettings) -> Result {
        let deepest = self.device_wake.ok_or(NtError::POWER_STATE_INVALID)?;
        let dx = match settings.dx_state {
            DxState::Deepest => deepest,
            explicit => dx_state(explicit),
        };
        if deeper(dx, deepest) {
            return Err(NtError::POWER_STATE_INVALID);
        }
        lock(&self.inner).sx = Some(SxWake { dx, enabled: settings.enabled.unwrap_or(true) });
        Ok(())
    }

    /// `WdfDeviceStopIdle`: returns whether the power-up is pending.
    pub(crate) fn stop_idle(&self, wait: bool) -> Result<bool> {
        if wait && current_irql() != Irql::Passive {
            return Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
        }
        let owner = self.owner();
        let in_dx = {
            let mut inner = lock(&self.inner);
            if !inner.started {
                return Err(NtError::POWER_STATE_INVALID);
            }
            if wait && inner.in_dx && owner.as_ref().is_some_and(|owner| owner.applying_here()) {
                return Err(NtError::POSSIBLE_DEADLOCK);
            }
            inner.references += 1;
            self.cancel_timer(&mut inner);
            inner.in_dx
        };
        if !in_dx {
            return Ok(false);
        }
        if !wait {
            self.ask_power_up();
            return Ok(true);
        }
        if owner.is_some_and(|owner| owner.power_up()) {
            Ok(false)
        } else {
            self.resume_idle();
            Err(NtError::POWER_STATE_INVALID)
        }
    }

    /// `WdfDeviceResumeIdle`.
    pub(crate) fn resume_idle(&self) {
        {
            let mut inner = lock(&self.inner);
            inner.references = inner.references.saturating_sub(1);
        }
        self.reevaluate();
    }

    /// Brings the device back to D0 for a reference: after the action when asked from one
    /// of its callbacks, else on a worker thread.
    fn ask_power_up(&self) {
        let Some(owner) = self.owner() else { return };
        if owner.applying_here() {
            lock(&self.inner).power_up_requested = true;
        } else {
            self.shared.pool().submit(std::boxed::Box::new(move || {
                let _ = owner.power_up();
            }));
        }
    }

    /// Takes the power-up asked for during the action that just ended.
    pub(crate) fn take_power_up_request(&self) -> bool {
        std::mem::take(&mut lock(&self.inner).power_up_requested)
    }

    /// The power policy starts (the start's power-up begins) or stops (the device goes).
    pub(crate) fn set_started(&self, started: bool) {
        let mut inner = lock(&self.inner);
        inner.started = started;
        if !started {
            self.cancel_timer(&mut inner);
        }
    }

    /// Whether the device is in a low-power state while started (idle or asleep).
    pub(crate) fn in_dx(&self) -> bool {
        lock(&self.inner).in_dx
    }

    /// The device entered (`true`) or left a low-power state.
    pub(crate) fn set_in_dx(&self, in_dx: bool) {
        lock(&self.inner).in_dx = in_dx;
    }

    /// Whether the device should idle now: idle enabled, no reference, in D0, started.
    pub(crate) fn wants_idle(&self) -> bool {
        let inner = lock(&self.inner);
        inner.started
            && !inner.in_dx
            && inner.references == 0
            && inner.s0.is_some_and(|s0| s0.enabled)
    }

    /// Sets the idle timeout when the device should idle and it is not running; cancels it
    /// when it should not. Called after every change of state, setting or reference.
    pub(crate) fn reevaluate(&self) {
        let wants = self.wants_idle();
        let mut inner = lock(&self.inner);
        match (wants, inner.timer) {
            (true, None) => {
                let Some(s0) = inner.s0 else { return };
                let Some(me) = self.me.upgrade() else { return };
                let mut clock = lock(self.shared.clock());
                let Some(due) = clock.now.checked_add(s0.timeout) else { return };
                let key = clock.key(due);
                let entry: Entry = Arc::new(IdleExpiry(Arc::downgrade(&me)));
                clock.queue.insert(key, entry);
                inner.timer = Some(key);
            }
            (false, Some(_)) => self.cancel_timer(&mut inner),
            _ => {}
        }
    }

    fn cancel_timer(&self, inner: &mut Inner) {
        if let Some(key) = inner.timer.take() {
            lock(self.shared.clock()).queue.remove(&key);
        }
    }

    /// Whether `key` is the running idle timeout; it stops running.
    pub(crate) fn take_timer(&self, key: Key) -> bool {
        let mut inner = lock(&self.inner);
        if inner.timer == Some(key) {
            inner.timer = None;
            true
        } else {
            false
        }
    }
}

/// Whether `state` is a deeper (lower-power) state than `than`.
fn deeper(state: DevicePowerState, than: DevicePowerState) -> bool {
    state.to_raw() > than.to_raw()
}

/// The power state of a policy's `DxState`.
fn dx_state(state: DxState) -> DevicePowerState {
    match state {
        DxState::D1 => DevicePowerState::D1,
        DxState::D2 => DevicePowerState::D2,
        DxState::D3 | DxState::Deepest => DevicePowerState::D3,
    }
}

/// A device's idle timeout on the clock.
struct IdleExpiry(Weak<PowerPolicy>);

impl Expiry for IdleExpiry {
    fn expire(self: Arc<Self>, key: Key, _origin: Origin) {
        // The idle power-down is the framework's power policy thread's work, not a driver's
        // deferred work: it runs on the advancing thread like an action.
        if let Some(owner) = self.0.upgrade().and_then(|policy| policy.owner()) {
            owner.idle_timeout(key);
        }
    }
}
