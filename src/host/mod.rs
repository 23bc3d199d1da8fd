//! The host runtime: KMDF modelled in user mode, to unit-test drivers with `cargo test`.
//!
//! A [`Runtime`] is one simulated machine. It loads drivers ([`Runtime::load`] runs
//! `DriverEntry`), plays the PnP manager's part for each device ([`LoadedDriver::add_device`]
//! runs `EvtDriverDeviceAdd` and returns the [`DeviceNode`] the test drives), and records
//! every driver callback it invokes in a [`Trace`]. Framework objects follow KMDF's life
//! cycle: deleting an object disposes its children first, then runs its
//! `EvtCleanupCallback`; its context is dropped when its last reference goes
//! (`EvtDestroyCallback`).
//!
//! A panic in a driver callback, a bug check in the kernel, fails the test: see
//! [`Runtime::panics`]. Timers run on a virtual clock that only [`Runtime::advance`] moves,
//! one expiry at a time, each followed by the work it handed on, so a test gives the same
//! trace every time.
//!
//! ```
//! use kmdf::host::{PnpAction, Runtime};
//! use kmdf::{Device, DeviceInit, Driver, PnpPowerCallbacks, Result};
//!
//! struct Nop;
//! impl Driver for Nop {
//!     fn driver_entry() -> Result<Self> { Ok(Nop) }
//!     fn device_add(&self, init: DeviceInit<'_>) -> Result {
//!         init.create(NopDevice(7))?;
//!         Ok(())
//!     }
//! }
//!
//! struct NopDevice(u32);
//! kmdf::vtable! {
//!     impl PnpPowerCallbacks for NopDevice {
//!         fn surprise_removal(&self, _device: &Device<Self>) {}
//!         fn cleanup(&self, _device: &Device<Self>) {}
//!     }
//! }
//!
//! let runtime = Runtime::new();
//! let driver = runtime.load::<Nop>()?;
//! let node = driver.add_device()?;
//! assert_eq!(node.with_context(|device: &NopDevice| device.0), Ok(7));
//! node.start()?;
//! node.apply(PnpAction::SurpriseRemove)?;
//! assert_eq!(
//!     runtime.trace().lines(),
//!     [
//!         "DriverEntry",
//!         "EvtDriverDeviceAdd",
//!         "EvtDeviceSurpriseRemoval",
//!         "EvtCleanupCallback(WDFDEVICE)",
//!         "EvtDestroyCallback(WDFDEVICE)",
//!     ]
//! );
//! // Anything after removal is refused.
//! assert!(node.apply(PnpAction::Wake).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

extern crate std;

mod current;
pub(crate) mod debug;
pub(crate) mod device;
pub(crate) mod entry;
pub(crate) mod lockdep;
pub(crate) mod object;
mod pnp;
pub(crate) mod pool;
mod resources;
pub(crate) mod sync;
pub(crate) mod sync_shim;
pub(crate) mod time;
pub(crate) mod timer;
mod trace;
pub(crate) mod work_item;

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock, Weak};
use std::vec::Vec;
use sync_shim::Mutex;

pub use object::ObjectKind;
pub use pnp::{NodeState, PnpAction, PnpError, UnknownAction};
pub use trace::{CallbackPanicked, PanicReport, Trace, TraceEntry, VerifierFinding};

pub(crate) use device::RawDeviceInit;
pub(crate) use object::RawObject;
pub use resources::AssignedResources;
pub(crate) use resources::RawResources;

use device::{CreatedDevice, DeviceSlot};
use object::{Shared, lock};

use crate::{Callback, DeviceInit, Driver, NtStatus, Result};

/// One simulated machine: its drivers, devices, objects and callback trace.
///
/// Runtimes are independent of each other, so tests can run in parallel, each with its own.
pub struct Runtime {
    shared: Arc<Shared>,
}

impl Runtime {
    /// A machine with no driver loaded and an empty trace.
    #[must_use]
    pub fn new() -> Self {
        Self { shared: Shared::new() }
    }

    /// Loads driver `D`: runs `DriverEntry` ([`Driver::driver_entry`]) and creates the
    /// `WDFDRIVER` object with the driver value as its context.
    ///
    /// # Errors
    ///
    /// What `driver_entry` returned: the driver is not loaded.
    pub fn load<D: Driver>(&self) -> Result<LoadedDriver<D>> {
        let mut value = None;
        self.shared.invoke(Callback::DriverEntry, None, None, || {
            value = Some(D::driver_entry()?);
            Ok(())
        })?;
        let Some(value) = value else { unreachable!("driver_entry succeeded") };
        let object = RawObject::create(&self.shared, ObjectKind::Driver, None, None, None)?;
        object.set_context(value);
        Ok(LoadedDriver {
            shared: Arc::clone(&self.shared),
            object: Mutex::new(Some(object)),
            _driver: PhantomData,
        })
    }

    /// Makes the `nth` call (counting from 1, over the whole runtime: all devices and drivers
    /// together; [`DeviceNode::inject_failure`] counts one device's calls) of `callback` fail with
    /// `status`, without running the driver's code for it: the framework sees the failure and
    /// takes its failure path (kmdf-semantics.md section 2). A callback the driver did not
    /// register is never called, so it never fails. The trace marks the call `(injected)`.
    ///
    /// ```
    /// # use kmdf::{Callback, NtStatus, host::Runtime};
    /// let runtime = Runtime::new();
    /// runtime.inject_failure(Callback::SelfManagedIoInit, 1, NtStatus::UNSUCCESSFUL)?;
    /// assert_eq!(
    ///     runtime.inject_failure(Callback::SelfManagedIoFlush, 1, NtStatus::UNSUCCESSFUL),
    ///     Err(NtStatus::INVALID_PARAMETER), // EvtDeviceSelfManagedIoFlush returns nothing
    /// );
    /// # Ok::<(), NtStatus>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `STATUS_INVALID_PARAMETER` when `callback` cannot fail (it returns nothing in KMDF),
    /// `status` is not a failure status, or `nth` is 0.
    pub fn inject_failure(&self, callback: Callback, nth: u64, status: NtStatus) -> Result {
        pnp::check_injectable(callback, status)?;
        if nth == 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        self.shared.inject(callback, None, nth, status);
        Ok(())
    }

    /// What the runtime's verifier caught so far, oldest first: work items or timers that ran
    /// after their device's `SelfManagedIoFlush` returned. Findings made during a PnP action
    /// are also reported by that action ([`PnpError::InvariantViolated`]).
    #[must_use]
    pub fn verifier_findings(&self) -> Vec<VerifierFinding> {
        self.shared.findings()
    }

    /// The panics caught at callback boundaries and not taken by
    /// [`take_panics`](Self::take_panics), oldest first.
    ///
    /// Reading them acknowledges them: a test that looked at its panics is not failed for
    /// them. The runtime fails a test for a panic nobody looked at (in the kernel, every one
    /// of them is a bug check):
    ///
    /// * A panic in *deferred work* (a work item's or timer's callback, or an object's
    ///   cleanup run from one) makes the next [`DeviceNode::apply`] (or its shorthands),
    ///   [`advance`](Self::advance) or [`wait_for_work_items`](Self::wait_for_work_items)
    ///   return an error naming the callback and the panic message ([`CallbackPanicked`]).
    /// * A panic in a PnP or driver callback (`EvtDeviceD0Entry`, `DriverEntry`, ...) fails
    ///   that callback as if it returned `STATUS_UNSUCCESSFUL`: the device takes KMDF's
    ///   failure path within the action, whose trace shows `(panicked)`, and the action does
    ///   not return an error for it.
    /// * Dropping the runtime with a panic of either kind that no error returned and no
    ///   `panics`/`take_panics` call acknowledged panics, listing them (unless the thread is
    ///   panicking already: the test has failed anyway).
    ///
    /// ```
    /// # use kmdf::host::Runtime;
    /// # use kmdf::{Driver, DeviceInit, Result};
    /// struct Doomed;
    /// impl Driver for Doomed {
    ///     fn driver_entry() -> Result<Self> { panic!("out of pool") }
    ///     fn device_add(&self, _init: DeviceInit<'_>) -> Result { Ok(()) }
    /// }
    /// let runtime = Runtime::new();
    /// assert!(runtime.load::<Doomed>().is_err());
    /// // The test meant it: it acknowledges the panic, and the runtime drops quietly.
    /// assert_eq!(runtime.panics()[0].message, "out of pool");
    /// ```
    #[must_use]
    pub fn panics(&self) -> Vec<PanicReport> {
        self.shared.panics()
    }

    /// The panics caught at callback boundaries, oldest first, as [`panics`](Self::panics)
    /// returns them, but forgetting them: the next call returns only newer ones. Like
    /// `panics`, it acknowledges them.
    #[must_use]
    pub fn take_panics(&self) -> Vec<PanicReport> {
        self.shared.take_panics()
    }

    /// Moves the runtime's virtual clock `by` forward, firing every timer expiry that falls
    /// due on the way, on this thread at `DISPATCH_LEVEL` (periodic timers again and again).
    ///
    /// Expiries fire one at a time, in due-time order (when due together, in the order the
    /// timers were set, a periodic timer counting as set again when it fires), and after each the advance waits until the work it handed on is done:
    /// the work items its callback enqueued run on the worker threads, as do the ones they
    /// enqueue in turn, before the next expiry fires. So a test gives the same trace every
    /// time: a 100 ms periodic timer whose callback enqueues a work item, advanced by one
    /// second, fires 10 times and the item runs 10 times, alternately. (In the kernel time
    /// does not wait, and an enqueue while the item is still queued is lost; the host models
    /// the schedule a driver is designed for, work short next to the period.) Work the
    /// expiries did not hand on (an item the test enqueued) is not waited for; see
    /// [`wait_for_work_items`](Self::wait_for_work_items).
    ///
    /// While [`hold_workers`](Self::hold_workers) holds the workers, the advance does not
    /// wait: every due expiry fires, the work they handed on stays queued (and an item still
    /// queued is not queued twice), as if the work were slower than the timer.
    ///
    /// A work-item callback that never returns (or enqueues itself forever) hangs the
    /// advance; after 10 s of waiting, and every 10 s after, the runtime says on stderr what
    /// it waits for.
    ///
    /// # Errors
    ///
    /// [`CallbackPanicked`] when deferred work panicked (see [`panics`](Self::panics)) and
    /// no call reported it yet: panics from before the call (the clock does not move), or
    /// from an expiry's callback or the work it handed on (the clock stays at that expiry's
    /// time, and the later ones do not fire).
    pub fn advance(&self, by: std::time::Duration) -> core::result::Result<(), CallbackPanicked> {
        timer::advance(&self.shared, by)
    }

    /// Waits until no work-item callback is queued or running, runs queued by running
    /// callbacks included.
    ///
    /// Call it from the test's thread, never from a driver callback (a work item waiting for
    /// itself would never return). It returns at once while [`hold_workers`](Self::hold_workers)
    /// holds the workers. A callback that never returns hangs it; after 10 s of waiting, and
    /// every 10 s after, the runtime says on stderr what it waits for.
    ///
    /// # Errors
    ///
    /// [`CallbackPanicked`] when deferred work panicked (see [`panics`](Self::panics)) and
    /// no call reported it yet, before or during the wait.
    pub fn wait_for_work_items(&self) -> core::result::Result<(), CallbackPanicked> {
        self.shared.pool().wait_idle();
        self.shared.report_deferred_panics()
    }

    /// The virtual clock's time since the runtime was created.
    #[must_use]
    pub fn now(&self) -> std::time::Duration {
        timer::now(self.shared.clock())
    }

    /// Turns the trace on (the default) or off. With the trace off, callbacks run and are
    /// checked as usual but nothing is recorded: for long runs that only need the checks.
    pub fn set_tracing(&self, enabled: bool) {
        self.shared.set_tracing(enabled);
    }

    /// Everything recorded so far.
    #[must_use]
    pub fn trace(&self) -> Trace {
        Trace::new(self.shared.trace())
    }

    /// Everything recorded so far, clearing the trace: handy to look at one action at a time.
    #[must_use]
    pub fn take_trace(&self) -> Trace {
        Trace::new(self.shared.take_trace())
    }

    /// The framework objects not yet destroyed, oldest first.
    #[must_use]
    pub fn live_objects(&self) -> Vec<ObjectKind> {
        self.shared.live().into_values().collect()
    }

    /// Keeps the runtime's system worker threads from starting any queued work-item
    /// callback until the returned guard is dropped, as if they were all busy: queued
    /// items stay queued. Runs already started go on.
    ///
    /// A test aid, to observe an item that is queued but not running. Do not wait for a
    /// queued item (flush, delete, remove its device) on the thread holding the guard.
    /// [`wait_for_work_items`](Self::wait_for_work_items) and [`advance`](Self::advance)
    /// do not wait for work while the workers are held.
    #[must_use = "the workers are released when the guard is dropped"]
    pub fn hold_workers(&self) -> HeldWorkers<'_> {
        self.shared.pool().hold();
        HeldWorkers { runtime: self }
    }

    /// How many threads are blocked until a work item's callback returns: in
    /// [`WorkItem::flush`](crate::WorkItem::flush), or in a deletion waiting for a queued or
    /// running callback (the item's own, or its parent's, such as a device removal).
    ///
    /// A test aid, to know that another thread has reached the wait.
    #[must_use]
    pub fn work_item_waiters(&self) -> usize {
        self.shared.waiters()
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Runtime {
    /// Fails the test for the panics nobody looked at; see [`Runtime::panics`].
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Err(unreported) = self.shared.report_all_panics() {
            panic!(
                "kmdf host runtime dropped with driver callback panics that no call reported and \
                 no Runtime::panics or take_panics acknowledged: {unreported}"
            );
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("live_objects", &self.live_objects()).finish()
    }
}

/// Holds the runtime's worker threads; see [`Runtime::hold_workers`].
pub struct HeldWorkers<'a> {
    runtime: &'a Runtime,
}

impl Drop for HeldWorkers<'_> {
    fn drop(&mut self) {
        self.runtime.shared.pool().release();
    }
}

impl fmt::Debug for HeldWorkers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldWorkers").finish_non_exhaustive()
    }
}

/// A driver loaded into a [`Runtime`].
///
/// The handle holds the `WDFDRIVER` until [`unload`](Self::unload); after that every call
/// answers `STATUS_DELETE_PENDING`.
pub struct LoadedDriver<D> {
    shared: Arc<Shared>,
    object: Mutex<Option<Arc<RawObject>>>,
    _driver: PhantomData<D>,
}

impl<D: Driver> LoadedDriver<D> {
    /// Calls `f` with the driver value [`Driver::driver_entry`] built.
    ///
    /// # Errors
    ///
    /// `STATUS_DELETE_PENDING` once the driver was unloaded.
    pub fn with_driver<R>(&self, f: impl FnOnce(&D) -> R) -> Result<R> {
        let object = self.object()?;
        Ok(f(Self::driver(&object)))
    }

    fn driver(object: &RawObject) -> &D {
        object.context::<D>().expect("a loaded driver has its context")
    }

    fn object(&self) -> Result<Arc<RawObject>> {
        lock(&self.object).clone().ok_or(NtStatus::DELETE_PENDING)
    }

    /// The PnP manager found a device for this driver: runs `EvtDriverDeviceAdd`
    /// ([`Driver::device_add`]) and returns the node the test drives.
    ///
    /// # Errors
    ///
    /// * What `device_add` returned; a device it had created is deleted, as KMDF deletes
    ///   it (its children are disposed and its cleanup callbacks run).
    /// * `STATUS_NO_SUCH_DEVICE` when `device_add` succeeded without creating a device:
    ///   KMDF accepts that (filters do it), but there is then nothing to drive.
    /// * `STATUS_DELETE_PENDING` when the driver has been unloaded.
    pub fn add_device(&self) -> Result<DeviceNode> {
        self.add_device_with(AssignedResources::new())
    }

    /// [`add_device`](Self::add_device) for hardware with `resources`: the device's
    /// `EvtDevicePrepareHardware` sees them (raw and translated), its
    /// `EvtDeviceReleaseHardware` the translated list.
    ///
    /// # Errors
    ///
    /// As [`add_device`](Self::add_device).
    pub fn add_device_with(&self, resources: AssignedResources) -> Result<DeviceNode> {
        let driver = self.object()?;
        let node = self.shared.next_id();
        let trace_start = self.shared.trace_position();
        let resources = Arc::new(resources);
        let created = add_device_on(&driver, node, &resources, device_add_of::<D>)?;
        Ok(DeviceNode {
            node: Arc::new(Node {
                shared: Arc::clone(&self.shared),
                id: node,
                driver: Arc::downgrade(&driver),
                resources,
                device_add: device_add_of::<D>,
                state: Mutex::new(NodeInner {
                    machine: pnp::Machine::new(&created, trace_start),
                    device: Some(created),
                    restarts: None,
                }),
            }),
        })
    }

    /// Unloads the driver: `EvtDriverUnload` ([`Driver::unload`]), then the `WDFDRIVER` is
    /// deleted and its context dropped.
    ///
    /// # Errors
    ///
    /// `STATUS_DEVICE_BUSY` while any of its devices has not been removed: the driver stays
    /// loaded. `STATUS_DELETE_PENDING` when it was already unloaded.
    pub fn unload(&self) -> Result {
        let mut slot = lock(&self.object);
        if slot.as_ref().is_some_and(|driver| driver.has_children()) {
            return Err(NtStatus::DEVICE_BUSY);
        }
        let driver = slot.take().ok_or(NtStatus::DELETE_PENDING)?;
        drop(slot);
        self.shared.invoke_void(Callback::DriverUnload, None, None, || {
            Self::driver(&driver).unload();
        });
        driver.delete();
        // The last reference: the driver object is destroyed and its context dropped.
        drop(driver);
        Ok(())
    }
}

/// `EvtDriverDeviceAdd` of a driver, monomorphized for its type.
type DeviceAdd = fn(&RawObject, DeviceInit<'_>) -> Result;

fn device_add_of<D: Driver>(driver: &RawObject, init: DeviceInit<'_>) -> Result {
    LoadedDriver::<D>::driver(driver).device_add(init)
}

/// Runs `EvtDriverDeviceAdd` for the hardware of device node `node` and returns the device
/// it created. On a failure the device it had created is deleted, as KMDF deletes it.
fn add_device_on(
    driver: &Arc<RawObject>,
    node: u64,
    resources: &Arc<AssignedResources>,
    device_add: DeviceAdd,
) -> Result<CreatedDevice> {
    let shared = driver.shared();
    let slot = DeviceSlot {
        driver: Arc::clone(driver),
        node,
        resources: Arc::clone(resources),
        created: OnceLock::new(),
    };
    let init = DeviceInit { raw: RawDeviceInit { slot: &slot } };
    let result =
        shared.invoke(Callback::DriverDeviceAdd, None, Some(node), || device_add(driver, init));
    match (result, slot.created.into_inner()) {
        (Ok(()), Some(created)) => Ok(created),
        (Ok(()), None) => Err(NtStatus::NO_SUCH_DEVICE),
        (Err(status), created) => {
            if let Some(created) = created {
                created.object.delete();
            }
            Err(status)
        }
    }
}

impl<D> fmt::Debug for LoadedDriver<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoadedDriver<{}>({:?})", std::any::type_name::<D>(), lock(&self.object))
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

struct Node {
    shared: Arc<Shared>,
    id: u64,
    /// The driver that serves the hardware, to add a new device for it after a restart.
    driver: Weak<RawObject>,
    /// The hardware's resources, assigned again to a device added after a restart.
    resources: Arc<AssignedResources>,
    device_add: DeviceAdd,
    /// Held for the whole of an action: the PnP manager sends a device one IRP at a time.
    state: Mutex<NodeInner>,
}

struct NodeInner {
    machine: pnp::Machine,
    /// The device object, until it is removed.
    device: Option<CreatedDevice>,
    /// Restarts after `WdfDeviceSetFailed(AttemptRestart)`: when the current period began
    /// and how many restarts it saw (`FxPkgPnp::PnpIncrementRestartCountLogic`).
    restarts: Option<(std::time::Duration, u32)>,
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
        inner.machine.apply(PnpAction::SurpriseRemove, &self.shared, self.id, &mut inner.device)?;
        let now = timer::now(self.shared.clock());
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
        inner.machine = pnp::Machine::new(&created, trace_start);
        inner.device = Some(created);
        inner.machine.apply(PnpAction::Start, &self.shared, self.id, &mut inner.device)
    }
}

impl DeviceNode {
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
    pub fn with_context<T: 'static, R>(&self, f: impl FnOnce(&T) -> R) -> Result<R> {
        let object = self.object()?;
        let context = object.context::<T>().ok_or(NtStatus::OBJECT_TYPE_MISMATCH)?;
        Ok(f(context))
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
    /// (kmdf-semantics.md sections 1 and 2), then checks KMDF's invariants (section 3).
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
    ///   [`Runtime::panics`]): before the action (which is then not applied), or while it
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
        let mut inner = lock(&self.node.state);
        // A failure the device reported since the last action is answered first.
        self.node.answer_failure(&mut inner)?;
        let NodeInner { machine, device, .. } = &mut *inner;
        machine.apply(action, shared, self.node.id, device)?;
        // Then one reported during this action, once it is done.
        self.node.answer_failure(&mut inner)?;
        drop(inner);
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
        let mut inner = lock(&self.node.state);
        self.node.answer_failure(&mut inner)
    }

    /// Makes the `nth` call (counting from 1) of `callback` *on this device* fail with
    /// `status`, without running the driver's code for it; calls on other devices do not
    /// count. Otherwise as [`Runtime::inject_failure`].
    ///
    /// ```
    /// # use kmdf::{Callback, NtStatus, host::{PnpAction, Runtime}};
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
    /// second.inject_failure(Callback::D0Entry, 1, NtStatus::UNSUCCESSFUL)?;
    /// first.start()?; // the first D0Entry of the runtime, but not of `second`
    /// second.start()?; // fails: the start IRP fails and the device is removed
    /// assert!(!first.is_removed() && second.is_removed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `STATUS_INVALID_PARAMETER` when `callback` cannot fail or is not a device's callback
    /// (`DriverEntry`, `EvtDriverDeviceAdd`), `status` is not a failure status, or `nth` is 0.
    pub fn inject_failure(&self, callback: Callback, nth: u64, status: NtStatus) -> Result {
        pnp::check_injectable(callback, status)?;
        if nth == 0 || matches!(callback, Callback::DriverEntry | Callback::DriverDeviceAdd) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        self.node.shared.inject(callback, Some(self.node.id), nth, status);
        Ok(())
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

    fn object(&self) -> Result<Arc<RawObject>> {
        lock(&self.node.state)
            .device
            .as_ref()
            .map(|created| Arc::clone(&created.object))
            .ok_or(NtStatus::NO_SUCH_DEVICE)
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
