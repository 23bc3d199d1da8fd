//! Device nodes: one device as the PnP manager sees it, driven by the test.
//!
//! A node outlives its device object (a test checks what happened after removal) and
//! answers what the device reported (`WdfDeviceSetFailed`), adding a new device for the
//! same hardware after a restart.

use super::std;
use std::fmt;
use std::sync::{Arc, OnceLock, Weak};

use super::sync_shim::Mutex;

use super::clock::Key;
use super::device::{CreatedDevice, DeviceSlot, RawDeviceInit};
use super::error::HarnessError;
use super::mutex::lock;
use super::object::RawObject;
use super::pnp::machine::Machine;
use super::pnp::{self, NodeState, PnpAction, PnpError};
use super::policy::PolicyOwner;
use super::resources::AssignedResources;
use super::shared::Shared;
use super::sync_shim::thread::{self, ThreadId};
use super::trace::{Trace, TraceEntry};
use crate::{Callback, DeviceInit, NtError, Result};

/// `EvtDriverDeviceAdd` of a driver, monomorphized for its type.
pub(crate) type DeviceAdd = fn(&RawObject, DeviceInit<'_>) -> Result;

/// Runs `EvtDriverDeviceAdd` for the hardware of device node `node` and returns the device
/// it created. On a failure the device it had created is deleted, as KMDF deletes it.
pub(crate) fn add_device_on(
    driver: &Arc<RawObject>,
    node: u64,
    resources: &Arc<AssignedResources>,
    device_add: DeviceAdd,
) -> core::result::Result<CreatedDevice, HarnessError> {
    let shared = driver.shared();
    let slot = DeviceSlot {
        driver: Arc::clone(driver),
        node,
        resources: Arc::clone(resources),
        created: OnceLock::new(),
    };
    let init = DeviceInit { raw: RawDeviceInit { slot: &slot, io: super::io::IoInit::default() } };
    let result = shared.invoke(TraceEntry::new(Callback::DriverDeviceAdd, Some(node)), || {
        device_add(driver, init)
    });
    match (result, slot.created.into_inner()) {
        (Ok(()), Some(created)) => Ok(created),
        (Ok(()), None) => Err(HarnessError::NoDevice),
        (Err(status), created) => {
            if let Some(created) = created {
                created.object.delete();
            }
            Err(HarnessError::Driver(status))
        }
    }
}

/// A device node: one device as the PnP manager sees it, driven by the test.
///
/// It outlives the device object: after removal it still answers (with errors) so that a
/// test can check what happened.
#[derive(Clone)]
pub struct DeviceNode {
    node: Arc<Node>,
}

pub(crate) struct Node {
    shared: Arc<Shared>,
    id: u64,
    /// The driver that serves the hardware, to add a new device for it after a restart.
    driver: Weak<RawObject>,
    /// The hardware's resources, assigned again to a device added after a restart.
    resources: Arc<AssignedResources>,
    device_add: DeviceAdd,
    /// Held for the whole of an action: the PnP manager sends a device one IRP at a time.
    state: Mutex<NodeInner>,
    /// The thread applying an action now (holding `state`), so that the power policy can
    /// tell a call from the device's own callbacks.
    applying: Mutex<Option<ThreadId>>,
    /// Itself, to hand the power policy a handle on the node.
    me: Weak<Node>,
}

struct NodeInner {
    machine: Machine,
    /// The device object, until it is removed.
    device: Option<CreatedDevice>,
    /// Restarts after `WdfDeviceSetFailed(AttemptRestart)`: when the current period began
    /// and how many restarts it saw (`FxPkgPnp::PnpIncrementRestartCountLogic`).
    restarts: Option<(std::time::Duration, u32)>,
    /// What the checks found in a transition the framework made by itself (an idle
    /// timeout, a power-up for a power reference): reported by the next action.
    unreported: Option<PnpError>,
}

/// KMDF allows [`RESTART_COUNT_MAXIMUM`] restarts of a device within this period
/// (`FxPkgPnp::m_RestartTimePeriodMaximum`, 60 s).
const RESTART_PERIOD: std::time::Duration = std::time::Duration::from_mins(1);
/// `FxPkgPnp::m_RestartCountMaximum`.
const RESTART_COUNT_MAXIMUM: u32 = 5;

impl NodeInner {
    /// Whether one more restart is allowed at `now`, counting it
    /// (`PnpIncrementRestartCountLogic`: a new period starts when the last one is over).
    fn count_restart(&mut self, now: std::time::Duration) -> bool {
        match self.restarts {
            Some((start, count)) if now.saturating_sub(start) <= RESTART_PERIOD => {
                if count < RESTART_COUNT_MAXIMUM {
                    self.restarts = Some((start, count + 1));
                    true
                } else {
                    false
                }
            }
            _ => {
                self.restarts = Some((now, 1));
                true
            }
        }
    }
}

impl Node {
    /// The node of hardware `id` (with `resources`) that `driver` serves, whose device
    /// `device_add` created when the trace was at `trace_start`.
    pub(crate) fn new(
        driver: &Arc<RawObject>,
        id: u64,
        resources: Arc<AssignedResources>,
        device_add: DeviceAdd,
        created: CreatedDevice,
        trace_start: usize,
    ) -> Arc<Self> {
        let node = Arc::new_cyclic(|me| Node {
            shared: Arc::clone(driver.shared()),
            id,
            driver: Arc::downgrade(driver),
            resources,
            device_add,
            state: Mutex::new(NodeInner {
                machine: Machine::new(&created, trace_start),
                device: None,
                restarts: None,
                unreported: None,
            }),
            applying: Mutex::new(None),
            me: me.clone(),
        });
        node.adopt(&mut lock(&node.state), created);
        node
    }

    /// Makes `created` the node's device, its power policy answering to the node.
    fn adopt(&self, inner: &mut NodeInner, created: CreatedDevice) {
        let owner: Weak<dyn PolicyOwner> = self.me.clone();
        created.state().power_policy.set_owner(owner);
        inner.device = Some(created);
    }

    /// Runs `f` with the node's state locked, noting this thread as the one applying.
    fn with_inner<R>(&self, f: impl FnOnce(&mut NodeInner) -> R) -> R {
        let mut inner = lock(&self.state);
        let previous = lock(&self.applying).replace(thread::current().id());
        let result = f(&mut inner);
        *lock(&self.applying) = previous;
        result
    }

    /// After an action: the power policy sees the device's new state (its idle timeout
    /// runs or stops), and a power-up a callback asked for during the action is done.
    fn settle_policy(&self, inner: &mut NodeInner) -> core::result::Result<(), PnpError> {
        let Some(policy) = inner.device.as_ref().map(|d| Arc::clone(&d.state().power_policy))
        else {
            return Ok(());
        };
        if policy.take_power_up_request() && inner.machine.state == NodeState::Idle {
            self.apply(inner, PnpAction::Wake)?;
        }
        policy.reevaluate();
        Ok(())
    }

    /// Whether the device is known to be gone, without waiting for an action in progress
    /// (then it answers `false`).
    pub(crate) fn is_surely_removed(&self) -> bool {
        self.state.try_lock().is_ok_and(|inner| inner.machine.state == NodeState::Removed)
    }

    /// Removes what is left of the device when the runtime goes away
    /// ([`Registry::tear_down`](super::registry::Registry::tear_down)): a device that never
    /// started is removed (`IRP_MN_REMOVE_DEVICE`, no PnP callback); a started one is
    /// surprise-removed, the one removal a driver cannot veto and valid from every started
    /// state; a device asleep with the system is resumed first (the PnP manager sends no
    /// removal while the system sleeps). Reports it did not answer yet are dropped: the
    /// hardware is leaving.
    ///
    /// # Errors
    ///
    /// What the checker found, as for [`DeviceNode::apply`].
    pub(crate) fn tear_down(&self) -> core::result::Result<(), PnpError> {
        self.with_inner(|inner| {
            let result = self.tear_down_locked(inner);
            // What no call reported comes first; the teardown ran all the same.
            inner.unreported.take().map_or(result, Err)
        })
    }

    fn tear_down_locked(&self, inner: &mut NodeInner) -> core::result::Result<(), PnpError> {
        let _ = self.shared.take_failure(self.id);
        match inner.machine.state {
            NodeState::Removed => return Ok(()),
            NodeState::Added => return self.apply(inner, PnpAction::Remove),
            NodeState::Asleep { .. } => self.apply(inner, PnpAction::Resume)?,
            _ => {}
        }
        if inner.machine.state == NodeState::Removed {
            return Ok(()); // the resume failed and tore the device down
        }
        self.apply(inner, PnpAction::SurpriseRemove)
    }

    /// The PnP manager's answer to a `WdfDeviceSetFailed` of the device: it learns that the
    /// device failed (`IRP_MN_QUERY_PNP_DEVICE_STATE` answered `PNP_DEVICE_FAILED`) and
    /// removes it with a surprise removal; after `AttemptRestart` the bus re-enumerates the
    /// hardware, so a new device is added and started, within KMDF's restart limit.
    ///
    /// A device that has not started yet, or sleeps with the system, is answered later.
    fn answer_failure(&self, inner: &mut NodeInner) -> core::result::Result<(), PnpError> {
        let Some(action) = self.shared.take_failure(self.id) else { return Ok(()) };
        match inner.machine.state {
            NodeState::Removed => return Ok(()),
            NodeState::Added | NodeState::Asleep { .. } => {
                self.shared.request_failure(self.id, action);
                return Ok(());
            }
            _ => {}
        }
        self.apply(inner, PnpAction::SurpriseRemove)?;
        let now = self.shared.now();
        if action != crate::FailedAction::AttemptRestart || !inner.count_restart(now) {
            return Ok(());
        }
        let Some(driver) = self.driver.upgrade() else { return Ok(()) };
        let trace_start = self.shared.trace_position();
        // A failed EvtDriverDeviceAdd leaves the hardware without a device, as in KMDF.
        let Ok(created) = add_device_on(&driver, self.id, &self.resources, self.device_add) else {
            return Ok(());
        };
        self.shared.forget_device(self.id);
        inner.machine = Machine::new(&created, trace_start);
        self.adopt(inner, created);
        self.apply(inner, PnpAction::Start)
    }

    /// Applies `action` to the model, then lets the checker read what it did, then lets the
    /// power policy see the new state.
    fn apply(
        &self,
        inner: &mut NodeInner,
        action: PnpAction,
    ) -> core::result::Result<(), PnpError> {
        inner.machine.apply(action, &self.shared, self.id, &mut inner.device)?;
        pnp::checker::after_action(action, &inner.machine, &self.shared, self.id)?;
        self.settle_policy(inner)
    }

    /// A transition the framework makes by itself: what the checks find is kept for the
    /// next action (and the runtime's teardown) to report.
    fn apply_by_framework(&self, inner: &mut NodeInner, action: PnpAction) {
        if let Err(error) = self.apply(inner, action)
            && inner.unreported.is_none()
        {
            inner.unreported = Some(error);
        }
    }
}

impl PolicyOwner for Node {
    fn idle_timeout(&self, key: Key) {
        self.with_inner(|inner| {
            let Some(policy) = inner.device.as_ref().map(|d| Arc::clone(&d.state().power_policy))
            else {
                return;
            };
            if policy.take_timer(key)
                && policy.wants_idle()
                && inner.machine.state == NodeState::Working
            {
                self.apply_by_framework(inner, PnpAction::Idle);
            }
        });
    }

    fn power_up(&self) -> bool {
        self.with_inner(|inner| {
            if inner.machine.state == NodeState::Idle {
                self.apply_by_framework(inner, PnpAction::Wake);
            }
            matches!(
                inner.machine.state,
                NodeState::Working | NodeState::QueryRemovePending | NodeState::QueryStopPending
            )
        })
    }

    fn applying_here(&self) -> bool {
        *lock(&self.applying) == Some(thread::current().id())
    }
}

impl DeviceNode {
    pub(crate) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The node's identifier, as in [`TraceEntry::device`].
    #[must_use]
    pub fn id(&self) -> u64 {
        self.node.id
    }

    /// Calls `f` with the device's context, if it is a `T`.
    ///
    /// # Errors
    ///
    /// `STATUS_NO_SUCH_DEVICE` once the device was removed; `STATUS_OBJECT_TYPE_MISMATCH`
    /// when the context is not a `T`.
    pub fn with_context<T: 'static, R>(
        &self,
        f: impl FnOnce(&T) -> R,
    ) -> core::result::Result<R, HarnessError> {
        let object = self.object()?;
        let context = object.context::<T>().ok_or(HarnessError::WrongContextType)?;
        Ok(f(context))
    }

    /// Calls `f` with the device, if its context is a `T`: what a test does on the device
    /// that a driver would do from one of its callbacks (for example, enable an interface).
    ///
    /// # Errors
    ///
    /// As [`with_context`](Self::with_context).
    pub fn with_device<T: crate::PnpPowerCallbacks, R>(
        &self,
        f: impl FnOnce(&crate::Device<T>) -> R,
    ) -> core::result::Result<R, HarnessError> {
        let object = self.object()?;
        object.context::<T>().ok_or(HarnessError::WrongContextType)?;
        Ok(f(super::device::device_ref::<T>(&object)))
    }

    /// Opens a handle on this node's device through its interface of class `interface`, as
    /// [`Runtime::open`](super::Runtime::open) does.
    ///
    /// # Errors
    ///
    /// As [`Runtime::open`](super::Runtime::open); `STATUS_NO_SUCH_DEVICE` once the device
    /// was removed.
    pub fn open(
        &self,
        interface: &crate::interface::Guid,
    ) -> core::result::Result<super::client::FileHandle, NtError> {
        let device = self.object().map_err(|_| NtError::NO_SUCH_DEVICE)?;
        super::client::open_device(&device, interface)
    }

    /// Whether the device object is gone.
    #[must_use]
    pub fn is_removed(&self) -> bool {
        self.state() == NodeState::Removed
    }

    /// The callbacks recorded for this device (and its children), in order.
    #[must_use]
    pub fn trace(&self) -> Trace {
        let entries = self.node.shared.trace();
        Trace::new(entries.into_iter().filter(|e| e.device == Some(self.node.id)).collect())
    }

    /// Where the device is in its life.
    #[must_use]
    pub fn state(&self) -> NodeState {
        lock(&self.node.state).machine.state
    }

    /// Applies a PnP action: runs, in order, every driver callback KMDF would for it
    /// (docs/kmdf-behaviour.md sections 1 and 2), then checks KMDF's invariants (section 3).
    ///
    /// A callback that fails is not an error of the action: the device takes KMDF's failure
    /// path (a vetoed query leaves it started; a failed start or power transition tears it
    /// down to [`NodeState::Removed`] within this call) and the trace shows the status.
    ///
    /// # Errors
    ///
    /// * [`PnpError::InvalidAction`] when the device's state does not allow the action (wake
    ///   while in D0, anything after removal, ...): nothing is called and nothing changes.
    /// * [`PnpError::InvariantViolated`] when the callbacks broke one of KMDF's invariants;
    ///   the error carries the device's trace.
    /// * [`PnpError::CallbackPanicked`] when deferred work (a work item's or timer's
    ///   callback, on any device) panicked and no call reported it yet (see
    ///   [`Runtime::panics`](super::Runtime::panics)): before the action (which is then not applied), or while it
    ///   ran (it completed). A panic in one of the action's own PnP callbacks is no error:
    ///   the callback fails as described above and the trace shows `(panicked)`. When the
    ///   invariants were violated too, that error wins and the panics fail the next call.
    pub fn apply(&self, action: PnpAction) -> core::result::Result<(), PnpError> {
        let shared = &self.node.shared;
        shared.report_deferred_panics().map_err(|panics| PnpError::CallbackPanicked {
            action,
            applied: false,
            panics,
        })?;
        self.node.with_inner(|inner| {
            // What the checks found in a transition the framework made by itself is
            // reported first: the action is not applied.
            if let Some(error) = inner.unreported.take() {
                return Err(error);
            }
            // A failure the device reported since the last action is answered first.
            self.node.answer_failure(inner)?;
            self.node.apply(inner, action)?;
            // Then one reported during this action, once it is done.
            self.node.answer_failure(inner)
        })?;
        shared.report_deferred_panics().map_err(|panics| PnpError::CallbackPanicked {
            action,
            applied: true,
            panics,
        })
    }

    /// Lets the PnP manager answer what the device reported since the last action
    /// ([`Device::set_failed`](crate::Device::set_failed), from a work item or a timer):
    /// the surprise removal of the failed device and, after
    /// [`FailedAction::AttemptRestart`](crate::FailedAction::AttemptRestart), the start of a
    /// new device on the same node. Does nothing when nothing was reported.
    ///
    /// # Errors
    ///
    /// [`PnpError::InvariantViolated`] as for [`apply`](Self::apply).
    pub fn settle(&self) -> core::result::Result<(), PnpError> {
        self.node.with_inner(|inner| self.node.answer_failure(inner))
    }

    /// Makes the `nth` call (counting from 1) of `callback` *on this device* fail with
    /// `status`, without running the driver's code for it; calls on other devices do not
    /// count. Otherwise as [`Runtime::inject_failure`](super::Runtime::inject_failure).
    ///
    /// ```
    /// # use kmdf::{Callback, NtError, host::{PnpAction, Runtime}};
    /// # struct Nop;
    /// # impl kmdf::Driver for Nop {
    /// #     fn driver_entry() -> kmdf::Result<Self> { Ok(Nop) }
    /// #     fn device_add(&self, init: kmdf::DeviceInit<'_>) -> kmdf::Result {
    /// #         init.create(Dev)?; Ok(())
    /// #     }
    /// # }
    /// # struct Dev;
    /// # kmdf::vtable! { impl kmdf::PnpPowerCallbacks for Dev {
    /// #     fn d0_entry(&self, _: &kmdf::Device<Self>, _: kmdf::DevicePowerState) -> kmdf::Result { Ok(()) }
    /// # } }
    /// let runtime = Runtime::new();
    /// let driver = runtime.load::<Nop>()?;
    /// let (first, second) = (driver.add_device()?, driver.add_device()?);
    /// second.inject_failure(Callback::D0Entry, 1, NtError::UNSUCCESSFUL)?;
    /// first.start()?; // the first D0Entry of the runtime, but not of `second`
    /// second.start()?; // fails: the start IRP fails and the device is removed
    /// assert!(!first.is_removed() && second.is_removed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotInjectable`] when `callback` cannot fail or is not a device's
    /// callback (`DriverEntry`, `EvtDriverDeviceAdd`), [`HarnessError::ZerothCall`] when
    /// `nth` is 0.
    pub fn inject_failure(
        &self,
        callback: Callback,
        nth: u64,
        status: NtError,
    ) -> core::result::Result<(), HarnessError> {
        pnp::check_injectable(callback, nth, true)?;
        self.node.shared.inject(callback, Some(self.node.id), nth, status);
        Ok(())
    }

    /// [`apply`](Self::apply)`(PnpAction::SignalWake)`: the device signals wake (its bus
    /// completes the wait-wake request), valid while it is armed: an idle device armed for
    /// wake from S0 comes back to D0 (`EvtDeviceWakeFromS0Triggered`,
    /// `EvtDeviceDisarmWakeFromS0`); a sleeping device armed for Sx reports it when the
    /// system resumes (docs/kmdf-behaviour.md section 10).
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply); [`PnpError::InvalidAction`] when the device is not armed.
    pub fn signal_wake(&self) -> core::result::Result<(), PnpError> {
        self.apply(PnpAction::SignalWake)
    }

    /// [`apply`](Self::apply)`(PnpAction::Start)`: first start, or start after a stop.
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply).
    pub fn start(&self) -> core::result::Result<(), PnpError> {
        self.apply(PnpAction::Start)
    }

    /// [`apply`](Self::apply)`(PnpAction::Remove)`: an orderly removal (query-remove first
    /// unless one is pending). For a device that never started there is no PnP callback:
    /// the device object is deleted, its children disposed first, its `EvtCleanupCallback`
    /// run, and its context dropped when the last reference goes.
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply).
    pub fn remove(&self) -> core::result::Result<(), PnpError> {
        self.apply(PnpAction::Remove)
    }

    fn object(&self) -> core::result::Result<Arc<RawObject>, HarnessError> {
        lock(&self.node.state)
            .device
            .as_ref()
            .map(|created| Arc::clone(&created.object))
            .ok_or(HarnessError::NoDevice)
    }
}

impl fmt::Debug for DeviceNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceNode")
            .field("id", &self.node.id)
            .field("removed", &self.is_removed())
            .finish()
    }
}
