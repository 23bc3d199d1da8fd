//! Framework objects on the host: the object table, parent/child disposal and contexts.
//!
//! Mirrors KMDF's object life cycle (docs/kmdf-behaviour.md section 5): deleting an object disposes
//! its children first, then runs its own `EvtCleanupCallback`; the object is destroyed, and
//! its context dropped, when its last reference goes. A child holds a reference on its
//! parent until the child is disposed; the parent's child list holds the child's creation
//! reference.
//!
//! Each kind of object (device, work item, timer, ...) plugs in from its own module: it
//! implements [`KindState`] for its state and creates its objects with [`NewObject`]. This
//! module never names a kind's state.

use super::std;
use std::any::{Any, TypeId};
use std::boxed::Box;
use std::fmt;
use std::ptr;
use std::sync::{Arc, OnceLock, PoisonError, Weak};

use super::sync_shim::thread::{self, ThreadId};
use super::sync_shim::{Condvar, Mutant, Mutex, mutant};
use std::vec::Vec;

use super::mutex::lock;
use super::object_kind::ObjectKind;
use super::shared::Shared;
use super::trace::TraceEntry;
use crate::object::sealed;
use crate::{Callback, NtError, Result};

/// What the object does when it is disposed: a monomorphized call of the driver's
/// `EvtCleanupCallback`, when the driver implements one.
pub(crate) type CleanupHook = fn(&RawObject);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Alive,
    Disposing,
    Disposed,
}

struct Links {
    parent: Option<Arc<RawObject>>,
    children: Vec<Arc<RawObject>>,
    lifecycle: Lifecycle,
    /// The thread running the disposal, while `Disposing`.
    disposer: Option<ThreadId>,
    /// Threads waiting on `disposed` for the disposal to finish: the disposer signals only
    /// when there are some (a condition variable's signal is a system call even when nobody
    /// waits, and almost no disposal has a waiter).
    waiters: usize,
}

/// What one kind of object adds to the common object: its own state, implemented in the
/// kind's module (a work item's queue and runs, a timer's place on the clock, a device's
/// PnP table). The object table depends on this trait only, never on the kinds.
///
/// The state is shared (`Arc`) so that a kind can hand it to work that outlives a borrow of
/// the object (a work item's run signals its end after releasing the object).
pub(crate) trait KindState: Any + Send + Sync {
    /// The kind of object the state belongs to, printed as its handle type (`WDFTIMER`).
    fn kind(&self) -> ObjectKind;

    /// Called by [`RawObject::delete`] after the children are disposed and before the
    /// object's `EvtCleanupCallback`: stop what the kind runs (a work item waits for its
    /// callback, a timer is taken off the clock) and release the parent it holds.
    fn rundown(&self, object: &RawObject) {
        let _ = object;
    }

    /// Whether the runtime's verifier watches the object's callback runs
    /// ([`RawObject::run_callback`]): deferred work must not run after its device's
    /// `SelfManagedIoFlush` returned.
    fn watched_by_verifier(&self) -> bool {
        false
    }
}

/// An object's kind state with the type it was made as, so that finding it again
/// ([`RawObject::state`]) compares a stored `TypeId` instead of calling `Any::type_id`
/// through the vtable (which returns through memory: the reload stalled on the store and
/// doubled the cost of a coalesced `WdfWorkItemEnqueue`).
pub(crate) struct StateSlot {
    /// `TypeId::of` the concrete type behind `state`, recorded by [`StateSlot::new`] from
    /// the same generic parameter as the value.
    type_id: TypeId,
    state: Arc<dyn KindState>,
}

impl StateSlot {
    /// The slot for `state`.
    pub(crate) fn new<S: KindState>(state: Arc<S>) -> Self {
        Self { type_id: TypeId::of::<S>(), state }
    }
}

/// What [`RawObject::create`] makes.
pub(crate) struct NewObject<'a> {
    /// The object's kind; the `state`'s, when one is given.
    pub(crate) kind: ObjectKind,
    /// The parent: the object is its child, disposed with it.
    pub(crate) parent: Option<&'a Arc<RawObject>>,
    /// The device node the object belongs to, for the trace; a child inherits its parent's
    /// when `None`.
    pub(crate) device: Option<u64>,
    /// The driver's `EvtCleanupCallback`, when it implements one.
    pub(crate) cleanup: Option<CleanupHook>,
    /// Whether the cleanup callback is recorded in the trace (only the raw face's
    /// bookkeeping cleanups are not, see `host::raw::Cleanup`).
    pub(crate) trace_cleanup: bool,
    /// The kind's own state.
    pub(crate) state: Option<StateSlot>,
    /// The context, written before the object can be reached (see [`RawObject::create`]).
    pub(crate) context: Option<Box<dyn Any + Send + Sync>>,
}

impl NewObject<'_> {
    /// An object of `kind` with no parent, device, cleanup, state or context yet.
    pub(crate) fn new(kind: ObjectKind) -> Self {
        Self {
            kind,
            parent: None,
            device: None,
            cleanup: None,
            trace_cleanup: true,
            state: None,
            context: None,
        }
    }
}

/// A framework object on the host. `&Device<T>` and the other handle types point at one.
///
/// # Invariant
///
/// Every `RawObject` lives in an `Arc`: [`create`](Self::create) is its only
/// constructor.
pub struct RawObject {
    /// The `Arc` this object lives in, to hand out more counted references from a borrow.
    me: Weak<RawObject>,
    shared: Arc<Shared>,
    id: u64,
    kind: ObjectKind,
    device: Option<u64>,
    cleanup: Option<CleanupHook>,
    trace_cleanup: bool,
    /// Dropped before `state`, which may hold the last reference on an object the context
    /// belongs under (a device's driver): a child's context never outlives its parent's.
    context: OnceLock<Box<dyn Any + Send + Sync>>,
    state: Option<StateSlot>,
    links: Mutex<Links>,
    /// Signalled when a disposal completes.
    disposed: Condvar,
}

impl RawObject {
    /// Creates an object with its creation reference, as a child of `new.parent` if given,
    /// with its kind-specific state and, optionally, its context already written: such an
    /// object is complete before its parent can reach it, so a deletion of the parent on
    /// another thread always finds it whole.
    ///
    /// # Errors
    ///
    /// `STATUS_DELETE_PENDING` when the parent is being deleted or was deleted. The context
    /// is dropped then without any callback: the object never existed.
    pub(crate) fn create(shared: &Arc<Shared>, new: NewObject<'_>) -> Result<Arc<Self>> {
        let NewObject { kind, parent, device, cleanup, trace_cleanup, state, context } = new;
        debug_assert!(state.as_ref().is_none_or(|slot| slot.state.kind() == kind));
        // INVARIANT: the object is created in an `Arc`, knows that `Arc` through `me`, and
        // is only ever handed out as one.
        let build = || {
            Arc::new_cyclic(|me| Self {
                me: me.clone(),
                shared: Arc::clone(shared),
                id: shared.next_id(),
                kind,
                device: device.or_else(|| parent.and_then(|p| p.device)),
                cleanup,
                trace_cleanup,
                context: context.map(OnceLock::from).unwrap_or_default(),
                state,
                links: Mutex::new(Links {
                    parent: parent.cloned(),
                    children: Vec::new(),
                    lifecycle: Lifecycle::Alive,
                    disposer: None,
                    waiters: 0,
                }),
                disposed: Condvar::new(),
            })
        };
        let object = match parent {
            Some(parent) => {
                // Linked under the parent's lock, so that a deletion of the parent either
                // finds the child whole or refused it. When refused, nothing was built: the
                // context is dropped without an `EvtDestroyCallback` (the object never
                // existed).
                let mut links = lock(&parent.links);
                if links.lifecycle != Lifecycle::Alive {
                    return Err(NtError::DELETE_PENDING);
                }
                let object = build();
                links.children.push(Arc::clone(&object));
                object
            }
            None => build(),
        };
        shared.object_created(object.id, kind);
        Ok(object)
    }

    /// Another counted reference to this object.
    pub(crate) fn to_arc(&self) -> Arc<Self> {
        // A `RawObject` is only reached through an `Arc` that keeps it alive (type
        // invariant), so the upgrade succeeds while `self` is borrowed.
        self.me.upgrade().expect("kmdf host runtime: an object borrowed after its last reference")
    }

    /// The kind-specific state given to [`create`](Self::create), if it is an `S`.
    #[inline]
    pub(crate) fn state<S: KindState>(&self) -> Option<&S> {
        let slot = self.state.as_ref()?;
        if slot.type_id != TypeId::of::<S>() {
            return None;
        }
        let state: *const dyn KindState = Arc::as_ptr(&slot.state);
        // SAFETY: `slot.type_id` is `TypeId::of` the type of the value behind `slot.state`
        // (`StateSlot::new` takes both from one `Arc<S>`, and the fields are private to this
        // module and never written again); it equals `TypeId::of::<S>()`, so that value is an
        // `S` and the thin pointer points at it. The `Arc` in `self` keeps the value alive
        // and shared (never mutated through `&`) for as long as `&self`.
        Some(unsafe { &*state.cast::<S>() })
    }

    /// A counted reference to the kind-specific state, if it is an `S`.
    pub(crate) fn state_arc<S: KindState>(&self) -> Option<Arc<S>> {
        let state: Arc<dyn KindState> = Arc::clone(&self.state.as_ref()?.state);
        let state: Arc<dyn Any + Send + Sync> = state;
        state.downcast::<S>().ok()
    }

    /// Runs one of the object's own event callbacks (a work item's, a timer's), recorded in
    /// the trace and guarded like every callback; the verifier checks the run first when
    /// the kind's state asks for it.
    pub(crate) fn run_callback(&self, callback: Callback, run: impl FnOnce()) {
        if self.state.as_ref().is_some_and(|slot| slot.state.watched_by_verifier()) {
            self.shared.check_deferred_work(callback, self.device);
        }
        self.shared.invoke_void(TraceEntry::new(callback, self.device), run);
    }

    /// The object's kind.
    #[cfg(feature = "sys-harness")]
    pub(crate) fn state_kind(&self) -> ObjectKind {
        self.kind
    }

    /// The object's number, unique in its runtime.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The device node the object belongs to, as the trace records it.
    pub(crate) fn device(&self) -> Option<u64> {
        self.device
    }

    /// The runtime this object lives in.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Writes the context of an object created without one (a device whose context is built
    /// with the device in hand, `DeviceInit::create_with`), before the handle escapes.
    ///
    /// # Panics
    ///
    /// If the object already has a context (a bug in the runtime).
    pub(crate) fn set_context<T: Send + Sync + 'static>(&self, value: T) {
        assert!(
            self.context.set(Box::new(value)).is_ok(),
            "kmdf host runtime: context written twice"
        );
    }

    /// The context of an object created with a `T`, as the handle types reach it.
    ///
    /// # Panics
    ///
    /// If the object has no `T` context: a bug in the runtime, since handle types are only
    /// made for objects created with their context type.
    pub(crate) fn expect_context<T: 'static>(&self) -> &T {
        self.context::<T>().unwrap_or_else(|| {
            panic!(
                "kmdf host runtime: {self:?} has no context of type {}",
                std::any::type_name::<T>()
            )
        })
    }

    /// The context, if it is a `T` (`WdfObjectGetTypedContext`: `None` when absent).
    pub(crate) fn context<T: 'static>(&self) -> Option<&T> {
        self.context.get()?.downcast_ref::<T>()
    }

    /// Whether the object has children that are not yet disposed.
    pub(crate) fn has_children(&self) -> bool {
        !lock(&self.links).children.is_empty()
    }

    /// Deletes the object (`WdfObjectDelete`, or the framework deleting it): disposes the
    /// children, then runs the kind's rundown (a work item waits for its callback), then
    /// this object's `EvtCleanupCallback`, then drops the creation reference held by the
    /// parent and the reference on the parent.
    ///
    /// Returns once the object is disposed: when another thread is disposing it already,
    /// waits for that disposal to finish, so that a parent's cleanup never overtakes a
    /// child's. On the disposing thread itself (a cleanup callback deleting its own object)
    /// and once disposed, it does nothing.
    pub(crate) fn delete(self: &Arc<Self>) {
        let me = thread::current().id();
        let children = {
            let mut links = lock(&self.links);
            match links.lifecycle {
                Lifecycle::Alive => {}
                Lifecycle::Disposing
                    if links.disposer != Some(me)
                        && !mutant(Mutant::DeleteDoesNotWaitForDisposal) =>
                {
                    links.waiters += 1;
                    while links.lifecycle != Lifecycle::Disposed {
                        links = self.disposed.wait(links).unwrap_or_else(PoisonError::into_inner);
                    }
                    links.waiters -= 1;
                    return;
                }
                Lifecycle::Disposing | Lifecycle::Disposed => return,
            }
            links.lifecycle = Lifecycle::Disposing;
            links.disposer = Some(me);
            std::mem::take(&mut links.children)
        };
        for child in &children {
            child.delete();
        }
        drop(children);
        if let Some(slot) = &self.state {
            slot.state.rundown(self);
        }
        // A panicking cleanup callback is caught at the boundary: the object is still
        // disposed, and nobody waits for it forever.
        if let Some(cleanup) = self.cleanup.filter(|_| !self.trace_cleanup) {
            cleanup(self);
        } else if let Some(cleanup) = self.cleanup {
            let entry = TraceEntry::new(Callback::ObjectCleanup, self.device).of_object(self.kind);
            self.shared.invoke_void(entry, || cleanup(self));
        }
        let (parent, waiters) = {
            let mut links = lock(&self.links);
            links.lifecycle = Lifecycle::Disposed;
            links.disposer = None;
            (links.parent.take(), links.waiters)
        };
        // A waiter counted itself under the lock before it waited, and waits until it sees
        // `Disposed`, set above under the same lock: none can be missed.
        if waiters > 0 {
            self.disposed.notify_all();
        }
        if let Some(parent) = parent {
            lock(&parent.links).children.retain(|child| !Arc::ptr_eq(child, self));
        }
    }
}

/// A counted reference to an object, as `ObjectRef` holds it.
pub(crate) type RawRef = Arc<RawObject>;

/// The object a reference points at, as the handle type `O` it was created as
/// (`ObjectRef<O>`'s `Deref`).
pub(crate) fn deref<O: sealed::Object>(raw: &RawRef) -> &O {
    view(raw)
}

/// Views an object as the handle type `O`. On the host every handle type, a work item's
/// included, is a view of the `RawObject` (which is the memory its methods reach).
///
/// Callers pick the `O` the object was created as. (A mismatch would still not be undefined
/// behaviour: handle types reach an object's context only through checked downcasts.)
pub(crate) fn view<O: sealed::Object>(raw: &RawObject) -> &O {
    const {
        assert!(size_of::<O>() == size_of::<RawObject>());
        assert!(align_of::<O>() == align_of::<RawObject>());
    }
    // SAFETY: `O` is a `#[repr(transparent)]` struct whose only field that is not
    // `PhantomData` is the host's view of the object (the invariant of the sealed `Object`
    // trait, implemented only in this crate), which on the host is a `RawObject` or a
    // `#[repr(transparent)]` wrapper of one (`work_item::RawItem`), so it has `RawObject`'s
    // layout and covers the same memory; the reference keeps `raw`'s lifetime.
    unsafe { &*ptr::from_ref(raw).cast::<O>() }
}

impl Drop for RawObject {
    /// The last reference is gone: `EvtDestroyCallback`, then the context is dropped.
    fn drop(&mut self) {
        if self.context.get().is_some() {
            let entry = TraceEntry::new(Callback::ObjectDestroy, self.device).of_object(self.kind);
            self.shared.record(entry);
        }
        self.shared.object_destroyed(self.id);
        // The context is dropped with the fields, after the entry above.
    }
}

impl fmt::Debug for RawObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.kind, self.id)
    }
}
