//! Work items: `WdfWorkItemCreate`, `Enqueue`, `Flush`, `WdfObjectDelete`, and the
//! `EvtWorkItem` and `EvtCleanupCallback` trampolines.
//!
//! The item's context is an [`ItemContext<T>`]: a small header, then the driver's `T`. A
//! `&WorkItem<T>` points at that context (not at the handle, as `&Device<T>` does): it is a
//! view of a [`RawItem<T>`], an opaque cell the size of the context, so the reference covers
//! the memory reached through it. The header holds the handle: `enqueue` and `flush` reach
//! the flags below and make their one indirect call through the WDF function table without
//! a context lookup first. The callbacks, which KMDF calls with the handle, look the
//! context up once, as C callbacks do.
//!
//! The header adds what KMDF does not tell a driver:
//!
//! * `queued`, to report whether an enqueue queued a run. `WdfWorkItemEnqueue` is still
//!   called every time, so that when `enqueue` returns, KMDF itself has a run pending that
//!   will see the caller's work and that a flush waits for. (Skipping the call when the
//!   flag is already set would leave a window where a concurrent first enqueuer has set
//!   the flag but not yet reached KMDF, and a flush would not wait for the coalesced work.)
//!   The trampoline clears the flag before the callback, as KMDF clears `m_Enqueued`.
//! * `deleted`, set by `delete` and by the cleanup callback, so later calls fail with
//!   `STATUS_DELETE_PENDING` instead of reaching KMDF, which ignores them (and breaks into
//!   the debugger under Driver Verifier).
//! * `runners`, the threads running the callback now. KMDF remembers only the last one
//!   (`m_WorkItemThread`, cleared by whichever run ends first), so with overlapping runs its
//!   self-flush check misses, and a flush or delete from the callback waits for itself.
//!   `kmdf` checks its own list first.
//!
//! A delete from inside the item's callback is made with the runners' spin lock held, that
//! is at `DISPATCH_LEVEL`: KMDF then defers the disposal to a passive-level worker of the
//! device (`FxObject::ShouldDeferDisposeLocked`, `QueueDeferredDisposeLocked` in
//! `fxobjectstatemachine.cpp`), which waits for the running callback and any queued run
//! (`FxWorkItem::FlushAndRundown`) before the cleanup callback. At `PASSIVE_LEVEL` KMDF
//! would instead dispose the item inside the callback, run its cleanup there, release its
//! reference on the parent while the callback still uses it, and could still start a run
//! queued before the delete after that cleanup.
//!
//! Such an item has left its parent's child list: if the parent is removed before the
//! deferred disposal ran, KMDF runs the parent's cleanup first and the item's later
//! (`PnpEventRemovedCommonCode` disposes the device, then waits for its dispose list). The
//! host runtime keeps the item a child until it is disposed, so there its cleanup comes
//! first.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use wdk_sys::ntddk::{KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock, PsGetCurrentThreadId};
use wdk_sys::{
    HANDLE, KSPIN_LOCK, WDF_WORKITEM_CONFIG, WDFOBJECT, WDFWORKITEM,
    call_unsafe_wdf_function_binding,
};

use super::object::{RawRef, view_handle};
use super::raw::{List, Node, Opaque};
use super::sync::current_irql;
use super::{attributes_for, struct_size, try_context_ptr, write_context_ptr};
use crate::object::{ObjectRef, sealed::Handle as _};
use crate::sync::Irql;
use crate::{Callback, NtError, NtStatus, Result, WorkItem, WorkItemCallbacks};

/// What `&WorkItem<T>` views: the memory of the item's [`ItemContext<T>`], an [`Opaque`]
/// cell (as Rust-for-Linux's `Opaque<T>`), so that the reference covers all of the context
/// and allows the atomics and the spin lock inside to change.
///
/// Never constructed as a value: only viewed in place, over the context KMDF allocated.
///
/// # Invariants
///
/// A `&RawItem<T>` exists only for the context of a live item created by `create::<T>`,
/// made from a pointer to that context with the provenance of all of it (from the context's
/// own `UnsafeCell`, see [`RawItem::from_context`]), after the context was written; the
/// context is written once, before that, and dropped only after every reference to the
/// item is gone.
#[repr(transparent)]
pub struct RawItem<T>(Opaque<ItemContext<T>>);

// SAFETY: what a `&RawItem<T>` gives access to is the header, whose fields are atomics, the
// handle (a plain value any thread may use) and the runners' list (only touched with its
// spin lock held), and `&T`: sharing or sending the view is sound when `T` is `Sync`.
unsafe impl<T: Send + Sync> Sync for RawItem<T> {}
// SAFETY: as above; a `RawItem<T>` is never moved or owned, only viewed.
unsafe impl<T: Send + Sync> Send for RawItem<T> {}

impl<T> RawItem<T> {
    /// Views a written context in place.
    ///
    /// # Safety
    ///
    /// `context` points at the written `ItemContext<T>` of a live item created by
    /// `create::<T>`, with the provenance of all of it, and the item stays alive for `'a`.
    unsafe fn from_context<'a>(context: NonNull<ItemContext<T>>) -> &'a Self {
        // SAFETY: the context is written, covered by the pointer and valid for `'a` (the
        // caller's contract), and only accessed shared (its mutable parts are atomics and
        // the spin-locked list) until it is dropped, after every reference to the item.
        let opaque: &'a Opaque<ItemContext<T>> = unsafe { Opaque::from_ptr(context) };
        // SAFETY: `RawItem<T>` is a `#[repr(transparent)]` wrapper of the `Opaque`, the same
        // memory with the same provenance, for `'a`.
        // INVARIANT: the caller's contract is the type invariant.
        unsafe { &*ptr::from_ref(opaque).cast::<Self>() }
    }

    /// The context, shared.
    fn context(&self) -> &ItemContext<T> {
        self.0.get()
    }
}

impl<T> fmt::Debug for RawItem<T> {
    /// The item's handle, as `&Device<T>` shows its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:p}", self.context().header.handle.0)
    }
}

/// The context of a work item created by `kmdf`.
pub(crate) struct ItemContext<T> {
    header: Header,
    value: T,
}

struct Header {
    /// The item's handle.
    handle: Handle,
    /// A run is queued and its callback has not started.
    queued: AtomicBool,
    /// The item's deletion has started.
    deleted: AtomicBool,
    runners: Runners,
}

/// The threads running the item's callback now: an intrusive list of nodes that live on
/// those threads' stacks, guarded by a spin lock. Nothing is allocated.
///
/// # Invariants
///
/// `list` is only accessed with `lock` held. Every node in the list lives on the stack of
/// the thread it names, in the trampoline's frame, and is unlinked before that frame ends.
struct Runners {
    lock: UnsafeCell<KSPIN_LOCK>,
    list: UnsafeCell<List<HANDLE>>,
    /// How many nodes are linked: lets a thread that runs nothing skip the lock.
    active: AtomicUsize,
}

// SAFETY: the list is only read or changed with the spin lock held (type invariant), and
// its nodes stay valid while linked, so the list may be shared and sent between threads.
unsafe impl Send for Runners {}
// SAFETY: as above.
unsafe impl Sync for Runners {}

/// A thread running the item's callback, in the trampoline's frame.
type Runner = Node<HANDLE>;

/// A `WDFWORKITEM`, which any thread may use.
struct Handle(WDFWORKITEM);

// SAFETY: a WDF handle is a plain value that the framework lets any thread pass to its
// DDIs; it owns nothing.
unsafe impl Send for Handle {}
// SAFETY: as above; shared access only reads it.
unsafe impl Sync for Handle {}

/// The current thread's identity, comparable with the runners'.
fn current_thread() -> HANDLE {
    // SAFETY: `PsGetCurrentThreadId` only reads the current thread; callable at any IRQL.
    unsafe { PsGetCurrentThreadId() }
}

impl Runners {
    /// An empty list with a released lock: what `KeInitializeSpinLock` writes is zero.
    const fn new() -> Self {
        Self {
            lock: UnsafeCell::new(0),
            list: UnsafeCell::new(List::new()),
            active: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the list with the spin lock held, at `DISPATCH_LEVEL`.
    fn locked<R>(&self, f: impl FnOnce(&mut List<HANDLE>) -> R) -> R {
        // SAFETY: the lock is a valid `KSPIN_LOCK` for the life of the context, and this
        // thread does not hold it (it is only held inside this function, which never
        // calls itself).
        let irql = unsafe { KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        // SAFETY: the lock is held, so this is the only access to the list (invariant).
        let list = unsafe { &mut *self.list.get() };
        let result = f(list);
        // SAFETY: acquired above on this thread, with `irql` the level to return to.
        unsafe { KeReleaseSpinLock(self.lock.get(), irql) };
        result
    }

    /// Whether the current thread is running the item's callback.
    #[inline]
    fn current_is_running(&self) -> bool {
        // A thread running the callback registered itself first, in its own program order:
        // if no node is linked, this thread runs nothing, and the lock is not needed.
        self.active.load(Ordering::SeqCst) != 0 && self.current_is_running_locked()
    }

    /// [`current_is_running`](Self::current_is_running) while some run is in progress.
    #[cold]
    #[inline(never)]
    fn current_is_running_locked(&self) -> bool {
        let me = current_thread();
        self.locked(|list| list.contains(me))
    }

    /// Links `node` in until the returned registration is dropped.
    fn register<'a>(&'a self, node: &'a mut Runner) -> Registration<'a> {
        let node = NonNull::from(node);
        self.active.fetch_add(1, Ordering::SeqCst);
        self.locked(|list| {
            // SAFETY: `node` is exclusively borrowed for `'a`, so valid and not otherwise
            // accessed until the registration, which lives for `'a` at most, unlinks it; it
            // is a fresh node, not linked.
            unsafe { list.push(node) };
        });
        // INVARIANT: the node outlives the registration (the borrow), whose `Drop` unlinks it.
        Registration { runners: self, node, _node: PhantomData }
    }
}

/// A node linked into [`Runners`]; unlinked when dropped, even if the callback unwinds.
struct Registration<'a> {
    runners: &'a Runners,
    node: NonNull<Runner>,
    _node: PhantomData<&'a mut Runner>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let node = self.node;
        self.runners.locked(|list| list.unlink(node));
        self.runners.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn item_context<T: WorkItemCallbacks>(item: &WorkItem<T>) -> &ItemContext<T> {
    item.raw.context()
}

/// The `&WorkItem<T>` of an item: a view of its context.
fn view_of<T: WorkItemCallbacks>(raw: &RawItem<T>) -> &WorkItem<T> {
    const {
        assert!(size_of::<WorkItem<T>>() == size_of::<RawItem<T>>());
        assert!(align_of::<WorkItem<T>>() == align_of::<RawItem<T>>());
    }
    // SAFETY: `WorkItem<T>` is a `#[repr(transparent)]` struct whose only field that is not
    // `PhantomData` is a `RawItem<T>` (the invariant of the sealed `Object` trait), so the
    // same memory with the same provenance, for `raw`'s lifetime.
    unsafe { &*ptr::from_ref(raw).cast::<WorkItem<T>>() }
}

/// The item whose handle KMDF passed to a callback.
///
/// # Safety
///
/// `handle` is a live item created by `create::<T>`, which stays alive for `'a`.
unsafe fn item_of<'a, T: WorkItemCallbacks>(handle: WDFOBJECT) -> Option<&'a WorkItem<T>> {
    // SAFETY: the caller's contract.
    let context = unsafe { try_context_ptr::<ItemContext<T>>(handle) }?;
    // SAFETY: the pointer is the written context of that item, from its `UnsafeCell` (all
    // of it), alive for `'a` (the caller's contract).
    let raw = unsafe { RawItem::from_context(context) };
    Some(view_of(raw))
}

/// One more reference on the item (`ObjectRef::from(&item)`): counted on its handle, viewed
/// at its context, as `create` returns it.
pub(crate) fn new_ref<T: WorkItemCallbacks>(item: &WorkItem<T>) -> RawRef {
    RawRef::with_view(handle(item).cast(), item)
}

pub(crate) fn context<T: WorkItemCallbacks>(item: &WorkItem<T>) -> &T {
    &item_context(item).value
}

pub(crate) fn create<T: WorkItemCallbacks>(
    parent: &T::Parent,
    context: T,
) -> Result<ObjectRef<WorkItem<T>>> {
    // WDF_WORKITEM_CONFIG_INIT: the size, the callback, AutomaticSerialization = TRUE.
    let mut config = WDF_WORKITEM_CONFIG {
        Size: struct_size::<WDF_WORKITEM_CONFIG>(),
        EvtWorkItemFunc: Some(run::<T>),
        AutomaticSerialization: 1,
    };
    let mut attributes =
        attributes_for::<ItemContext<T>>(Some(cleanup::<T>), parent.raw().handle());
    let mut item: WDFWORKITEM = ptr::null_mut();
    // SAFETY: the structures are initialized as their `_INIT` functions do and outlive the
    // call; the parent is live (borrowed); `item` receives the handle.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfWorkItemCreate,
            &raw mut config,
            &raw mut attributes,
            &raw mut item,
        )
    };
    NtStatus::from_raw(status).ok()?;
    let header = Header {
        handle: Handle(item),
        queued: AtomicBool::new(false),
        deleted: AtomicBool::new(false),
        runners: Runners::new(),
    };
    // SAFETY: created just above with `attributes_for::<ItemContext<T>>`. Nothing can run
    // its callback (no one else has the handle), and the parent cannot dispose it before
    // the reference below is taken: `kmdf` creates work items only from code the parent's
    // deletion waits for (its PnP callbacks, and work-item callbacks, which the deletion
    // waits for in creation order, so an item created by another item's run is disposed
    // after that run returned).
    let context = unsafe { write_context_ptr(item.cast(), ItemContext { header, value: context }) };
    // SAFETY: the written context of the item just created, from its `UnsafeCell`; the
    // reference taken below keeps it alive for as long as the view is used.
    let raw = unsafe { RawItem::from_context(context) };
    Ok(ObjectRef::from_raw(RawRef::with_view(item.cast(), view_of(raw))))
}

/// `EvtWorkItem`.
unsafe extern "C" fn run<T: WorkItemCallbacks>(handle: WDFWORKITEM) {
    // SAFETY: KMDF calls the callback registered by `create::<T>` with that item, alive
    // (KMDF holds a reference) for the call, its context written before it could be queued.
    let item: &WorkItem<T> = unsafe { item_of(handle.cast()) }
        .expect("kmdf: work item queued before its context was written");
    let context = item_context(item);
    // Cleared before the callback, as KMDF clears `m_Enqueued`: an enqueue from here on
    // queues another run.
    context.header.queued.store(false, Ordering::SeqCst);
    let mut runner = Runner::new(current_thread());
    let _running = context.header.runners.register(&mut runner);
    // SAFETY: the item is live (above).
    let parent = unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemGetParentObject, handle) };
    // SAFETY: the parent is the `T::Parent` given to `create::<T>`. KMDF keeps its reference
    // on it until the item is disposed, and a disposal waits for this callback to return
    // (`FlushAndRundown`: the disposing thread is never this one, see the module docs).
    let parent: &T::Parent = unsafe { view_handle(parent) };
    context.value.run(item, parent);
}

/// The item's `EvtCleanupCallback`, always registered: it marks the item deleted, then
/// calls the driver's `cleanup` if `T` implements it.
unsafe extern "C" fn cleanup<T: WorkItemCallbacks>(object: WDFOBJECT) {
    // SAFETY: registered by `create::<T>` for that item, alive for the call; `None` if the
    // item is disposed before `create` wrote its context.
    let Some(item) = (unsafe { item_of::<T>(object) }) else {
        return;
    };
    let context = item_context(item);
    context.header.deleted.store(true, Ordering::SeqCst);
    if T::REGISTERED.contains(Callback::ObjectCleanup) {
        context.value.cleanup(item);
    }
}

fn handle<T: WorkItemCallbacks>(item: &WorkItem<T>) -> WDFWORKITEM {
    item_context(item).header.handle.0
}

pub(crate) fn enqueue<T: WorkItemCallbacks>(item: &WorkItem<T>) -> Result<bool> {
    let header = &item_context(item).header;
    if header.deleted.load(Ordering::SeqCst) {
        return Err(NtError::DELETE_PENDING);
    }
    let was_queued = header.queued.swap(true, Ordering::SeqCst);
    // SAFETY: the item is live (borrowed); callable at IRQL <= DISPATCH_LEVEL.
    unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemEnqueue, handle(item)) };
    Ok(!was_queued)
}

pub(crate) fn flush<T: WorkItemCallbacks>(item: &WorkItem<T>) -> Result {
    if current_irql() != Irql::Passive {
        return Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
    }
    if item_context(item).header.runners.current_is_running() {
        return Err(NtError::POSSIBLE_DEADLOCK);
    }
    // SAFETY: the item is live (borrowed), the thread is at PASSIVE_LEVEL and does not run
    // the item's callback, so the wait can end.
    unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemFlush, handle(item)) };
    Ok(())
}

pub(crate) fn delete<T: WorkItemCallbacks>(item: &WorkItem<T>) -> Result {
    let header = &item_context(item).header;
    if header.deleted.swap(true, Ordering::SeqCst) {
        return Err(NtError::DELETE_PENDING);
    }
    let object: WDFOBJECT = header.handle.0.cast();
    let me = current_thread();
    let deferred = header.runners.locked(|list| {
        if !list.contains(me) {
            return false;
        }
        // SAFETY: the item is live (borrowed) and deleted only once (the flag above). The
        // lock holds the thread at DISPATCH_LEVEL, where KMDF defers the disposal to a
        // passive-level worker that waits for this callback (module docs).
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, object) };
        true
    });
    if !deferred {
        // SAFETY: as above. At PASSIVE_LEVEL this waits for a queued or running callback,
        // which this thread is not running; above it, KMDF defers as above.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, object) };
    }
    Ok(())
}
