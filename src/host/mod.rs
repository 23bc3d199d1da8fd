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

pub(crate) mod device;
pub(crate) mod entry;
pub(crate) mod lockdep;
pub(crate) mod object;
mod pnp;
pub(crate) mod pool;
pub(crate) mod sync;
pub(crate) mod timer;
mod trace;
pub(crate) mod work_item;

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};
use std::vec::Vec;

pub use object::ObjectKind;
pub use pnp::{NodeState, PnpAction, PnpError, UnknownAction};
pub use trace::{PanicReport, Trace, TraceEntry, VerifierFinding};

pub(crate) use device::{RawDeviceInit, RawResources};
pub(crate) use object::RawObject;

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

    /// Makes the `nth` call (counting from 1, over the whole runtime) of `callback` fail with
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
        self.shared.inject(callback, nth, status);
        Ok(())
    }

    /// What the runtime's verifier caught so far, oldest first: work items or timers that ran
    /// after their device's `SelfManagedIoFlush` returned. Findings made during a PnP action
    /// are also reported by that action ([`PnpError::InvariantViolated`]).
    #[must_use]
    pub fn verifier_findings(&self) -> Vec<VerifierFinding> {
        self.shared.findings()
    }

    /// The panics caught at callback boundaries so far, oldest first.
    #[must_use]
    pub fn panics(&self) -> Vec<PanicReport> {
        self.shared.panics()
    }

    /// Moves the runtime's virtual clock `by` forward: every timer that falls due on the way
    /// fires, in due-time order, on this thread at `DISPATCH_LEVEL` (periodic ones again and
    /// again). Work items they enqueue run on the worker threads as usual; see
    /// [`wait_for_work_items`](Self::wait_for_work_items) to let them finish.
    pub fn advance(&self, by: std::time::Duration) {
        timer::advance(self.shared.clock(), by);
    }

    /// Waits until no work-item callback is queued or running, runs queued by running
    /// callbacks included: after [`advance`](Self::advance), the work its timers handed to
    /// work items is done.
    ///
    /// Call it from the test's thread, never from a driver callback (a work item waiting for
    /// itself would never return). It returns at once while [`hold_workers`](Self::hold_workers)
    /// holds the workers.
    pub fn wait_for_work_items(&self) {
        self.shared.pool().wait_idle();
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
        let driver = self.object()?;
        let node = self.shared.next_id();
        let trace_start = self.shared.trace_position();
        let slot = DeviceSlot { driver: Arc::clone(&driver), node, created: OnceLock::new() };
        let init = DeviceInit { raw: RawDeviceInit { slot: &slot } };
        let result = self.shared.invoke(Callback::DriverDeviceAdd, None, Some(node), || {
            Self::driver(&driver).device_add(init)
        });
        match (result, slot.created.into_inner()) {
            (Ok(()), Some(created)) => Ok(DeviceNode {
                node: Arc::new(Node {
                    shared: Arc::clone(&self.shared),
                    id: node,
                    state: Mutex::new(NodeInner {
                        machine: pnp::Machine::new(&created, trace_start),
                        device: Some(created),
                    }),
                }),
            }),
            (Ok(()), None) => Err(NtStatus::NO_SUCH_DEVICE),
            (Err(status), created) => {
                if let Some(created) = created {
                    created.object.delete();
                }
                Err(status)
            }
        }
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
    /// Held for the whole of an action: the PnP manager sends a device one IRP at a time.
    state: Mutex<NodeInner>,
}

struct NodeInner {
    machine: pnp::Machine,
    /// The device object, until it is removed.
    device: Option<CreatedDevice>,
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
    pub fn apply(&self, action: PnpAction) -> core::result::Result<(), PnpError> {
        let mut inner = lock(&self.node.state);
        let NodeInner { machine, device } = &mut *inner;
        machine.apply(action, &self.node.shared, self.node.id, device)
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
