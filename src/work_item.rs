//! Work items: driver code that runs later, at `PASSIVE_LEVEL`, on a system worker thread.
//!
//! A work item (`WDFWORKITEM`) is a framework object with a parent, a typed context and a
//! callback. The context type *is* the work: it implements [`WorkItemCallbacks`] through
//! [`vtable!`](crate::vtable), and [`run`](WorkItemCallbacks::run) gets the context as
//! `&self`, the work item, and the parent device. [`WorkItem::create`] returns an
//! [`ObjectRef`], a counted reference the driver keeps (typically in its device context) to
//! [`enqueue`](WorkItem::enqueue) the item, [`flush`](WorkItem::flush) it and
//! [`delete`](WorkItem::delete) it.
//!
//! # Example
//!
//! A device polls its hardware from a work item. The item is created with the device
//! ([`DeviceInit::create_with`](crate::DeviceInit::create_with)), first enqueued when
//! self-managed I/O starts, re-enqueues itself while there is work, and is flushed when the
//! device is being removed, before its resources go away:
//!
//! ```
//! use kmdf::object::ObjectRef;
//! use kmdf::sync::SpinLock;
//! use kmdf::{Device, DeviceInit, PnpPowerCallbacks, Result, WorkItem, WorkItemCallbacks};
//!
//! /// The device context, built with the device: its poller is the device's child.
//! struct Toaster {
//!     poller: ObjectRef<WorkItem<Poll>>,
//!     polls: SpinLock<u32>,
//! }
//!
//! fn device_add(init: DeviceInit<'_>) -> Result {
//!     init.create_with(|device| {
//!         let poller = WorkItem::create(device, Poll { rounds: 3 })?;
//!         Ok(Toaster { poller, polls: SpinLock::new(0)? })
//!     })?;
//!     Ok(())
//! }
//!
//! /// The work item's context: the work to do.
//! struct Poll {
//!     rounds: u32,
//! }
//!
//! kmdf::vtable! {
//!     impl WorkItemCallbacks for Poll {
//!         type Parent = Device<Toaster>;
//!
//!         fn run(&self, item: &WorkItem<Self>, toaster: &Device<Toaster>) {
//!             let mut polls = toaster.context().polls.lock();
//!             *polls += 1;
//!             if *polls < self.rounds {
//!                 // From the callback itself: runs once more after this run. Once the
//!                 // item is being deleted this fails, and the chain ends.
//!                 let _ = item.enqueue();
//!             }
//!         }
//!     }
//! }
//!
//! kmdf::vtable! {
//!     impl PnpPowerCallbacks for Toaster {
//!         fn self_managed_io_init(&self, _device: &Device<Self>) -> Result {
//!             self.poller.enqueue()?;
//!             Ok(())
//!         }
//!
//!         fn self_managed_io_flush(&self, _device: &Device<Self>) {
//!             // Waits for the queued or running poll, including its re-enqueues.
//!             self.poller.flush().expect("at PASSIVE_LEVEL, outside the item's callback");
//!         }
//!     }
//! }
//! ```
//!
//! The framework deletes the work item with its parent: when the device is removed, the
//! item is disposed before the device (its queued or running callback is waited for, then
//! its [`cleanup`](WorkItemCallbacks::cleanup) runs, then the device's), and its context is
//! dropped when the last [`ObjectRef`] goes, here with the device context.
//!
//! On the host runtime the same code runs on real worker threads, concurrently with the
//! test and with the device's PnP callbacks, and every run is traced as `EvtWorkItem`:
//!
//! ```
//! # use kmdf::object::ObjectRef;
//! # use kmdf::sync::SpinLock;
//! # use kmdf::{Device, DeviceInit, Driver, Enqueued, PnpPowerCallbacks, Result, WorkItem, WorkItemCallbacks};
//! # struct Toaster { poller: ObjectRef<WorkItem<Poll>>, polls: SpinLock<u32> }
//! # struct Poll { rounds: u32 }
//! # kmdf::vtable! {
//! #     impl WorkItemCallbacks for Poll {
//! #         type Parent = Device<Toaster>;
//! #         fn run(&self, item: &WorkItem<Self>, toaster: &Device<Toaster>) {
//! #             let mut polls = toaster.context().polls.lock();
//! #             *polls += 1;
//! #             if *polls < self.rounds { let _ = item.enqueue(); }
//! #         }
//! #     }
//! # }
//! # kmdf::vtable! { impl PnpPowerCallbacks for Toaster {} }
//! struct ToasterDriver;
//!
//! impl Driver for ToasterDriver {
//!     fn driver_entry() -> Result<Self> {
//!         Ok(ToasterDriver)
//!     }
//!
//!     fn device_add(&self, init: DeviceInit<'_>) -> Result {
//!         let device = init.create_with(|device| {
//!             let poller = WorkItem::create(device, Poll { rounds: 3 })?;
//!             Ok(Toaster { poller, polls: SpinLock::new(0)? })
//!         })?;
//!         assert_eq!(device.context().poller.enqueue(), Ok(Enqueued::Queued));
//!         Ok(())
//!     }
//! }
//!
//! # #[cfg(not(windows))] {
//! use kmdf::Callback;
//! use kmdf::host::Runtime;
//!
//! let runtime = Runtime::new();
//! let node = runtime.load::<ToasterDriver>()?.add_device()?;
//! node.with_context(|toaster: &Toaster| toaster.poller.flush())??;
//! assert_eq!(node.with_context(|toaster: &Toaster| *toaster.polls.lock())?, 3);
//! assert_eq!(node.trace().count(Callback::WorkItem), 3);
//! node.remove()?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The rules (docs/kmdf-behaviour.md section 4)
//!
//! * **Enqueue** while the item is queued does nothing more: one run serves both calls, so
//!   [`run`](WorkItemCallbacks::run) must handle everything pending when it starts. The
//!   queued flag is cleared just before the callback runs: the callback may enqueue its
//!   own item, and that next run may start while this one is still running.
//! * **Flush** waits until the queued or running callback has returned, re-enqueues
//!   included; it returns at once if nothing is queued or running. It waits, so it is for
//!   `PASSIVE_LEVEL` only, and never from the item's own callback, where it would wait for
//!   itself: `kmdf` returns an error in both cases instead of hanging (KMDF itself only
//!   documents the self-flush as a deadlock).
//! * **Delete** does not cancel a queued run: it waits for it, and for a running one, then
//!   the item's cleanup runs. From inside the item's own callback it returns at once, and
//!   the disposal completes when the callback has returned. No run ever starts after the
//!   item's cleanup.
//! * **The parent** is referenced by the item until the item is disposed; when the parent
//!   is deleted, its work items are disposed first, by the same rules as a delete.
//!
//! `AutomaticSerialization` is `TRUE`, as `WDF_WORKITEM_CONFIG_INIT` sets it. It serializes
//! the callback with the parent's callbacks only if the parent has a device or queue
//! synchronization scope; `kmdf` devices have none (`WdfSynchronizationScopeNone`, KMDF's
//! default), so runs are not serialized with anything, and creation cannot fail with
//! `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL` (which KMDF returns when the scope's lock is
//! not passive-level). The other failures `WdfWorkItemCreate` checks for cannot happen:
//! the parent is a required argument whose type can parent a work item
//! (`STATUS_WDF_PARENT_NOT_SPECIFIED`, `STATUS_INVALID_DEVICE_REQUEST`), the callback is a
//! required trait method (`STATUS_INVALID_PARAMETER`), and `kmdf` fills in the
//! configuration (`STATUS_INFO_LENGTH_MISMATCH`).
//!
//! `flush` is refused above `PASSIVE_LEVEL` at run time rather than made impossible at
//! compile time: that would take a token of the current IRQL threaded through every
//! callback and borrowed by every spin-lock guard, a change to the whole crate's API.

use core::fmt;
use core::marker::PhantomData;

use crate::Result;
use crate::backend;
use crate::object::{ObjectRef, ParentObject};

/// A framework work-item object (`WDFWORKITEM`) whose context is a `T`.
///
/// Reached by reference only: from an [`ObjectRef`] the driver keeps, or as the argument
/// of the item's callbacks.
#[repr(transparent)]
pub struct WorkItem<T> {
    /// The backend's view of the item: in the kernel its context (the handle is in it), so
    /// that the reference covers the memory `enqueue` and `flush` reach.
    pub(crate) raw: backend::work_item::RawItem<T>,
    _context: PhantomData<T>,
}

impl<T: WorkItemCallbacks> WorkItem<T> {
    /// Creates a work item (`WdfWorkItemCreate`) that is a child of `parent`, with
    /// `context` in its context space and `T`'s callbacks registered
    /// (`EvtWorkItem`, and `EvtCleanupCallback` if `T` implements
    /// [`cleanup`](WorkItemCallbacks::cleanup)). `AutomaticSerialization` is `TRUE`.
    ///
    /// Callable at `IRQL <= DISPATCH_LEVEL`.
    ///
    /// The caller's location names the work item's class for the host runtime's lock-order
    /// checks (a wait for its callback depends on the locks the callback takes).
    ///
    /// # Errors
    ///
    /// * `STATUS_DELETE_PENDING` when the parent is being deleted.
    /// * `STATUS_INSUFFICIENT_RESOURCES`, or another failure of `WdfWorkItemCreate`.
    ///
    /// `context` is dropped on failure.
    #[track_caller]
    pub fn create(parent: &T::Parent, context: T) -> Result<ObjectRef<Self>> {
        backend::work_item::create(parent, context)
    }

    /// One more counted reference to the item: [`ObjectRef::from`]`(self)`, for keeping an
    /// item that a callback got borrowed.
    #[must_use]
    pub fn to_ref(&self) -> ObjectRef<Self> {
        ObjectRef::from(self)
    }

    /// The item's context: the value given to [`create`](Self::create).
    ///
    /// It stays readable as long as the `WorkItem` is reachable, even once the item is
    /// deleted; it is dropped when the last reference goes.
    #[must_use]
    pub fn context(&self) -> &T {
        backend::work_item::context(self)
    }

    /// Queues the item to run its callback on a system worker thread
    /// (`WdfWorkItemEnqueue`). Callable at `IRQL <= DISPATCH_LEVEL`.
    ///
    /// Returns [`Enqueued::Queued`] when this call queued a run, and
    /// [`Enqueued::AlreadyQueued`] when a run was queued already and has not started: that
    /// run will see whatever this call's caller prepared, so nothing is lost. A run may
    /// therefore find nothing new to do.
    ///
    /// # Errors
    ///
    /// `STATUS_DELETE_PENDING` once the item's deletion has started (by
    /// [`delete`](Self::delete) or with its parent); KMDF silently ignores such a call.
    ///
    /// In the kernel `kmdf` learns of a deletion by the parent only when the item's cleanup
    /// runs, and of its own `delete` when it is called: an enqueue made before that (from
    /// the callback the parent's deletion is waiting for, or racing with `delete` on
    /// another thread) still reaches KMDF, which ignores it (Driver Verifier breaks), and
    /// returns `Ok`. Stop re-enqueueing before the device goes away, in
    /// `self_managed_io_flush`.
    pub fn enqueue(&self) -> Result<Enqueued> {
        let queued = backend::work_item::enqueue(self)?;
        Ok(if queued { Enqueued::Queued } else { Enqueued::AlreadyQueued })
    }

    /// Waits until the queued or running callback has returned, including any run it
    /// enqueued itself (`WdfWorkItemFlush`); returns at once when nothing is queued or
    /// running. Every enqueue that returned before the flush started has then been seen by
    /// a run that finished.
    ///
    /// After the item was deleted it waits for the runs the deletion is waiting for, if
    /// any, as KMDF does.
    ///
    /// # Errors
    ///
    /// * `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL` when called above `PASSIVE_LEVEL`, for
    ///   example while a [`SpinLock`](crate::sync::SpinLock) guard is held: it waits.
    /// * `STATUS_POSSIBLE_DEADLOCK` when called from this item's own callback (on the
    ///   thread running it): it would wait for itself.
    ///
    /// # Panics
    ///
    /// On the host runtime, when the thread holds a lock that the item's callback was seen
    /// to take (or the callback takes it later: the callback panics then): the flush waits
    /// for the callback, which waits for the lock, a potential deadlock reported by the
    /// lock-order checks of [`sync`](crate::sync). This holds whether or not a run is queued.
    #[track_caller]
    pub fn flush(&self) -> Result {
        backend::work_item::flush(self)
    }

    /// Deletes the item (`WdfObjectDelete`). A queued run is not cancelled: the deletion
    /// waits for it, and for a running one, then runs the item's cleanup callback. No run
    /// starts after that.
    ///
    /// Called from the item's own callback it returns at once, and the disposal completes
    /// (cleanup callback included) when the callback has returned. At `DISPATCH_LEVEL` it
    /// returns at once too: KMDF finishes the deletion on a passive-level worker thread.
    /// Callable at `IRQL <= DISPATCH_LEVEL`.
    ///
    /// The context is not dropped yet: it goes with the last [`ObjectRef`].
    ///
    /// # Errors
    ///
    /// `STATUS_DELETE_PENDING` when the deletion has already started, by an earlier call
    /// or because the parent is being deleted.
    ///
    /// # Panics
    ///
    /// On the host runtime, at `PASSIVE_LEVEL` outside the item's callback, as
    /// [`flush`](Self::flush) does: the deletion waits for the callback.
    #[track_caller]
    pub fn delete(&self) -> Result {
        backend::work_item::delete(self)
    }
}

/// What [`WorkItem::enqueue`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Enqueued {
    /// This call queued a run (`WdfWorkItemEnqueue` queued the item).
    Queued,
    /// A run was queued already and has not started; it covers this call too.
    AlreadyQueued,
}

impl<T> fmt::Debug for WorkItem<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkItem<{}>({:?})", core::any::type_name::<T>(), self.raw)
    }
}

/// What a work item does: its `EvtWorkItem` callback and, optionally, its
/// `EvtCleanupCallback`.
///
/// Implemented by the work item's context type, always through [`vtable!`](crate::vtable),
/// which registers exactly the methods written in the impl block. The associated type
/// `Parent` comes first in the block.
pub trait WorkItemCallbacks: Sized + Send + Sync + 'static {
    /// Which methods the impl block wrote: the callbacks registered for this type.
    ///
    /// Written by [`vtable!`](crate::vtable), the only way to implement this trait. Not part
    /// of the public API.
    #[doc(hidden)]
    const REGISTERED: crate::callback::vtable::WorkItemCallbacks;

    /// The type of the parent object: a [`Device<C>`](crate::Device).
    type Parent: ParentObject;

    /// `EvtWorkItem`: runs at `PASSIVE_LEVEL` on a system worker thread after
    /// [`WorkItem::enqueue`], once for all the enqueues made while the item was queued.
    ///
    /// `parent` is the object given to [`WorkItem::create`] (`WdfWorkItemGetParentObject`).
    /// It is only handed to the callbacks: while a callback runs, the item holds its parent
    /// (KMDF releases the parent once the item is disposed, and a deletion waits for the
    /// callback), whereas an [`ObjectRef`] to the item may outlive the parent.
    ///
    /// Runs of one item can overlap when it is enqueued again while running, and they run
    /// concurrently with the parent's PnP and power callbacks: shared state lives in
    /// [`sync`](crate::sync) types.
    fn run(&self, item: &WorkItem<Self>, parent: &Self::Parent);

    /// `EvtCleanupCallback` of the work item: it is being deleted, its callback will not run
    /// again. The context is dropped later, with the last reference.
    fn cleanup(&self, _item: &WorkItem<Self>) {}
}
