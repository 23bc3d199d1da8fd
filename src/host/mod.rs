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

mod client;
mod clock;
pub(crate) mod debug;
pub(crate) mod device;
mod driver;
pub(crate) mod entry;
mod error;
pub(crate) mod file;
pub(crate) mod interface;
mod io;
pub(crate) mod io_queue;
pub(crate) mod lockdep;
mod mutex;
mod node;
pub(crate) mod object;
mod object_kind;
mod pnp;
mod policy;
pub(crate) mod pool;
pub(crate) mod power_policy;
#[cfg(feature = "sys-harness")]
pub mod raw;
mod registry;
pub(crate) mod request;
mod resources;
mod shared;
pub(crate) mod sync;
pub(crate) mod sync_shim;
pub(crate) mod time;
pub(crate) mod timer;
mod trace;
pub(crate) mod work_item;

use std::fmt;
use std::sync::Arc;
use std::vec::Vec;

pub use client::{FileHandle, PendingIo};
pub use driver::LoadedDriver;
pub use error::HarnessError;
pub use io::Completion;
pub use node::DeviceNode;
pub use object_kind::ObjectKind;
pub use pnp::{
    InvariantViolation, NodeState, PnpAction, PnpError, UnknownAction, Violation, ViolationKind,
};
pub use trace::{CallbackPanicked, PanicReport, Trace, TraceEntry, VerifierFinding};

pub(crate) use device::RawDeviceInit;
pub(crate) use object::RawObject;
pub use resources::AssignedResources;
pub(crate) use resources::RawResources;

use registry::Registry;
use shared::Shared;

use crate::{Callback, Driver, NtError, Result};

/// One simulated machine: its drivers, devices, objects and callback trace.
///
/// Runtimes are independent of each other, so tests can run in parallel, each with its own.
///
/// The runtime owns the drivers it loaded and their device nodes. Dropping it tears down
/// what is left in KMDF's order, never a parent before a child: every device still present
/// is removed (surprise-removed if it started, removed if it did not), newest first, then
/// every driver still loaded is unloaded (`EvtDriverUnload`, then the `WDFDRIVER` is
/// deleted and its context dropped). A test that dropped its [`LoadedDriver`] and
/// [`DeviceNode`] handles without `remove` or `unload` still sees every cleanup, in order.
pub struct Runtime {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

impl Runtime {
    /// A machine with no driver loaded and an empty trace.
    #[must_use]
    pub fn new() -> Self {
        let shared = Shared::new();
        Self { registry: Registry::new(Arc::clone(&shared)), shared }
    }

    /// Loads driver `D`: runs `DriverEntry` ([`Driver::driver_entry`]) and creates the
    /// `WDFDRIVER` object with the driver value as its context.
    ///
    /// # Errors
    ///
    /// What `driver_entry` returned: the driver is not loaded.
    pub fn load<D: Driver>(&self) -> Result<LoadedDriver<D>> {
        driver::load(&self.registry, D::driver_entry)
    }

    /// Loads a driver whose value the test built: as [`load`](Self::load), but `DriverEntry`
    /// hands over `driver` instead of calling [`Driver::driver_entry`]. The trace still
    /// shows `DriverEntry`, and a failure injected into it fails the load (`driver` is then
    /// dropped without any callback).
    ///
    /// The way to give a test driver what its `device_add` needs (a plan, a log, the
    /// test's closures) without globals:
    ///
    /// ```
    /// use kmdf::host::Runtime;
    /// use kmdf::{Device, DeviceInit, Driver, PnpPowerCallbacks, Result};
    ///
    /// struct Lamp {
    ///     watts: u32,
    /// }
    /// impl Driver for Lamp {
    ///     fn driver_entry() -> Result<Self> {
    ///         Ok(Lamp { watts: 40 })
    ///     }
    ///     fn device_add(&self, init: DeviceInit<'_>) -> Result {
    ///         init.create(Bulb(self.watts))?;
    ///         Ok(())
    ///     }
    /// }
    /// struct Bulb(u32);
    /// kmdf::vtable! {
    ///     impl PnpPowerCallbacks for Bulb {
    ///         fn cleanup(&self, _device: &Device<Self>) {}
    ///     }
    /// }
    ///
    /// let runtime = Runtime::new();
    /// let driver = runtime.load_with(Lamp { watts: 100 })?;
    /// let node = driver.add_device()?;
    /// assert_eq!(node.with_context(|bulb: &Bulb| bulb.0), Ok(100));
    /// assert_eq!(runtime.trace().lines(), ["DriverEntry", "EvtDriverDeviceAdd"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A failure injected into `DriverEntry`: the driver is not loaded.
    pub fn load_with<D: Driver>(&self, driver: D) -> Result<LoadedDriver<D>> {
        driver::load(&self.registry, || Ok(driver))
    }

    /// Makes the `nth` call (counting from 1, over the whole runtime: all devices and drivers
    /// together; [`DeviceNode::inject_failure`] counts one device's calls) of `callback` fail with
    /// `status`, without running the driver's code for it: the framework sees the failure and
    /// takes its failure path (docs/kmdf-behaviour.md section 2). A callback the driver did not
    /// register is never called, so it never fails. The trace marks the call `(injected)`.
    ///
    /// ```
    /// # use kmdf::{Callback, NtError, host::{HarnessError, Runtime}};
    /// let runtime = Runtime::new();
    /// runtime.inject_failure(Callback::SelfManagedIoInit, 1, NtError::UNSUCCESSFUL)?;
    /// assert_eq!(
    ///     runtime.inject_failure(Callback::SelfManagedIoFlush, 1, NtError::UNSUCCESSFUL),
    ///     Err(HarnessError::NotInjectable(Callback::SelfManagedIoFlush)), // returns nothing
    /// );
    /// # Ok::<(), HarnessError>(())
    /// ```
    ///
    /// A success cannot be injected: `status` is an [`NtError`].
    ///
    /// ```compile_fail
    /// # use kmdf::{Callback, NtStatus, host::Runtime};
    /// Runtime::new().inject_failure(Callback::D0Entry, 1, NtStatus::SUCCESS);
    /// ```
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotInjectable`] when `callback` cannot fail (it returns nothing in
    /// KMDF), [`HarnessError::ZerothCall`] when `nth` is 0.
    pub fn inject_failure(
        &self,
        callback: Callback,
        nth: u64,
        status: NtError,
    ) -> core::result::Result<(), HarnessError> {
        pnp::check_injectable(callback, nth, false)?;
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
        self.shared.now()
    }

    /// Turns the trace on (the default) or off. With the trace off, callbacks run and are
    /// checked as usual but nothing is recorded: for long runs that only need the checks.
    pub fn set_tracing(&self, enabled: bool) {
        self.shared.set_tracing(enabled);
    }

    /// Opens a handle on the first device (oldest first) with an enabled interface of class
    /// `interface` (`CreateFile` on its interface path), as an application would: runs
    /// `EvtDeviceFileCreate`. See [`FileHandle`] for the I/O it sends.
    ///
    /// # Errors
    ///
    /// * `STATUS_OBJECT_NAME_NOT_FOUND` when no device has such an interface enabled (not
    ///   started yet, removed, or disabled by the driver).
    /// * `STATUS_ACCESS_DENIED` when the device is exclusive and open already.
    /// * The status `EvtDeviceFileCreate` failed the open with.
    pub fn open(
        &self,
        interface: &crate::interface::Guid,
    ) -> core::result::Result<FileHandle, NtError> {
        client::open(&self.shared, interface)
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
    /// Tears down the devices and drivers left (see [`Runtime`]), then fails the test for
    /// the panics nobody looked at (see [`Runtime::panics`]) and for what the checks found
    /// during the teardown (as [`DeviceNode::apply`] would report it).
    ///
    /// While the thread panics already (the test failed) it does neither: driver code
    /// could wait for something the failed test will never do, and the failure that counts
    /// is the test's own.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let findings = self.registry.tear_down();
        if let Err(unreported) = self.shared.report_all_panics() {
            panic!(
                "kmdf host runtime dropped with driver callback panics that no call reported and \
                 no Runtime::panics or take_panics acknowledged: {unreported}"
            );
        }
        if let Some(finding) = findings.first() {
            panic!(
                "kmdf host runtime: tearing down the devices left when it was dropped, {finding}"
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
