//! Work items on the host: `WdfWorkItemCreate`, `Enqueue`, `Flush`, `WdfObjectDelete`, and
//! the runs on the runtime's worker threads.
//!
//! One mutex guards an item's bookkeeping, the same facts KMDF keeps in `FxWorkItem`
//! (`m_Enqueued`, `m_WorkItemRunningCount`, `m_RunningDown`, `m_WorkItemThread`), except
//! that every running thread is remembered, not only the last one: runs of one item can
//! overlap, and KMDF's single thread field then forgets a runner, which is where its
//! self-flush detection fails. Waits (flush, deletion) use a condition variable.
//!
//! `tests/loom_work_item.rs` checks this file with loom (`--cfg loom`, through
//! `sync_shim`), with its deliberately broken variants (`sync_shim::Mutant`).

use super::std;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;
use std::any::type_name;
use std::boxed::Box;
use std::panic::Location;
use std::sync::{Arc, PoisonError};

use super::sync_shim::thread::{self, ThreadId};
use super::sync_shim::{Condvar, Mutant, Mutex, mutant};
use std::vec::Vec;

use super::lockdep::{self, Kind, LockMap};
use super::mutex::lock;
use super::object::{KindState, NewObject, RawObject, RawRef, StateSlot, view};
use super::object_kind::ObjectKind;
use super::sync::current_irql;
use crate::object::{ObjectRef, sealed::Handle as _};
use crate::sync::Irql;
use crate::{Callback, NtError, Result, WorkItem, WorkItemCallbacks};

/// What a `WDFWORKITEM` adds to the common object: its queue and run bookkeeping. Shared
/// with the runs, which signal the end of a run after they released their reference on the
/// object.
pub(crate) struct WorkItemState {
    inner: Mutex<Inner>,
    /// Signalled when the item becomes idle (nothing queued, nothing running), which flushes
    /// and deletions wait for, and once the deletion started whenever a run returns: a
    /// rundown on a thread running the item waits for the other threads' runs.
    idle: Condvar,
    /// The driver's callback, monomorphized for the context type.
    run: fn(&RawObject, &RawObject),
    /// The item's lockdep class: a run holds it as a pseudo-lock, a wait acquires it.
    map: LockMap,
}

struct Inner {
    /// A run is queued and has not started (`m_Enqueued`).
    queued: bool,
    /// Runs in progress (`m_WorkItemRunningCount`).
    running: usize,
    /// The threads running the callback now, one entry per run.
    runners: Vec<ThreadId>,
    /// Counts the moments the item became idle, so that a flush ends at the first one
    /// after it started even if an enqueue follows at once (KMDF's notification event).
    idle_epoch: u64,
    /// Deletion has started: no more enqueues (`m_RunningDown`).
    deleting: bool,
    /// The driver deleted the item where the deletion could not wait (from its own
    /// callback, or at `DISPATCH_LEVEL`): the last run to return disposes it.
    dispose_when_idle: bool,
    /// The parent, referenced until the item is disposed (KMDF's `m_Object`).
    parent: Option<Arc<RawObject>>,
}

impl Inner {
    fn is_idle(&self) -> bool {
        !self.queued && self.running == 0
    }

    /// Whether a rundown on a thread running `own` of the item's runs still waits. With
    /// none, it waits for the item to be idle. Inside the callback (the parent removed from
    /// it) it cannot wait for its own run, but it waits for the runs other threads started:
    /// each has taken its parent reference and would call the driver after the cleanup.
    /// Runs still queued find no parent and do not call the driver.
    fn rundown_waits(&self, own: usize) -> bool {
        if mutant(Mutant::RundownDoesNotWait)
            || (own > 0 && mutant(Mutant::RundownIgnoresOtherRuns))
        {
            return false;
        }
        if own == 0 { !self.is_idle() } else { self.running > own }
    }
}

impl WorkItemState {
    /// The item's identity for lockdep: the state's address.
    fn instance(&self) -> usize {
        std::ptr::from_ref(self).addr()
    }
}

impl KindState for WorkItemState {
    fn kind(&self) -> ObjectKind {
        ObjectKind::WorkItem
    }

    /// Its runs are deferred work: none may run after the device's `SelfManagedIoFlush`.
    fn watched_by_verifier(&self) -> bool {
        true
    }

    /// Called by `RawObject::delete` before the item's cleanup callback
    /// (`FxWorkItem::Dispose` and `FlushAndRundown`): no more enqueues, then wait for the
    /// queued or running callback (on a thread running it: for the other threads' runs),
    /// then release the parent.
    fn rundown(&self, item: &RawObject) {
        let me = thread::current().id();
        let mut inner = lock(&self.inner);
        inner.deleting = true;
        inner.dispose_when_idle = false;
        let own = inner.runners.iter().filter(|&&runner| runner == me).count();
        if inner.rundown_waits(own) {
            inner = item.shared().waiting(|| {
                let mut inner = inner;
                while inner.rundown_waits(own) {
                    inner = self.idle.wait(inner).unwrap_or_else(PoisonError::into_inner);
                }
                inner
            });
        }
        let parent = inner.parent.take();
        drop(inner);
        drop(parent);
    }
}

/// What `&WorkItem<T>` views on the host: the item's `RawObject`, which holds its state and
/// context, typed by the context. Never constructed: only viewed over a `RawObject`
/// (`object::view`), which lives in an `Arc`.
#[repr(transparent)]
pub struct RawItem<T> {
    object: RawObject,
    _context: PhantomData<T>,
}

impl<T> Deref for RawItem<T> {
    type Target = RawObject;

    fn deref(&self) -> &RawObject {
        &self.object
    }
}

impl<T> fmt::Debug for RawItem<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.object.fmt(f)
    }
}

#[inline]
fn state(item: &RawObject) -> &WorkItemState {
    item.state::<WorkItemState>()
        .unwrap_or_else(|| panic!("kmdf host runtime: {item:?} is not a work item"))
}

#[track_caller]
pub(crate) fn create<T: WorkItemCallbacks>(
    parent: &T::Parent,
    context: T,
) -> Result<ObjectRef<WorkItem<T>>> {
    let map = LockMap::new(Kind::WorkItem, type_name::<T>(), Location::caller());
    let parent = parent.raw().to_arc();
    let state = Arc::new(WorkItemState {
        inner: Mutex::new(Inner {
            queued: false,
            running: 0,
            runners: Vec::new(),
            idle_epoch: 0,
            deleting: false,
            dispose_when_idle: false,
            parent: Some(Arc::clone(&parent)),
        }),
        idle: Condvar::new(),
        run: run::<T>,
        map,
    });
    let cleanup_hook = T::REGISTERED.contains(Callback::ObjectCleanup).then_some(cleanup::<T> as _);
    let object = RawObject::create(
        parent.shared(),
        NewObject {
            parent: Some(&parent),
            cleanup: cleanup_hook,
            state: Some(StateSlot::new(state)),
            context: Some(Box::new(context)),
            ..NewObject::new(ObjectKind::WorkItem)
        },
    )?;
    Ok(ObjectRef::from_raw(object))
}

fn run<T: WorkItemCallbacks>(item: &RawObject, parent: &RawObject) {
    let item = view::<WorkItem<T>>(item);
    item.context().run(item, view::<T::Parent>(parent));
}

fn cleanup<T: WorkItemCallbacks>(item: &RawObject) {
    let item = view::<WorkItem<T>>(item);
    item.context().cleanup(item);
}

/// One more reference on the item (`ObjectRef::from(&item)`).
pub(crate) fn new_ref<T>(item: &WorkItem<T>) -> RawRef {
    item.raw.to_arc()
}

pub(crate) fn context<T: WorkItemCallbacks>(item: &WorkItem<T>) -> &T {
    item.raw.expect_context::<T>()
}

pub(crate) fn enqueue<T>(item: &WorkItem<T>) -> Result<bool> {
    let item = &item.raw;
    let mut inner = lock(&state(item).inner);
    if inner.deleting {
        return Err(NtError::DELETE_PENDING);
    }
    if inner.queued {
        return Ok(false);
    }
    inner.queued = true;
    drop(inner);
    let job: RawRef = item.to_arc();
    item.shared().pool().submit(Box::new(move || run_job(job)));
    Ok(true)
}

/// One run on a worker thread (`FxWorkItem::WorkItemThunk` and `WorkItemHandler`).
///
/// The run holds a reference on the item until its callback returned. It counts itself out,
/// then (unless it completes a deferred deletion) releases the reference *before* it wakes
/// the waiters: a flush or a deletion that waited for the run goes on only once the item
/// may be destroyed, so the destroy (and its trace entry) does not trail behind on the
/// worker. KMDF releases its reference after signalling; the host is stricter so that
/// traces are deterministic. The order of the bookkeeping is the one
/// `tests/loom_work_item.rs` checks.
fn run_job(item: RawRef) {
    let me = thread::current().id();
    let state = item.state_arc::<WorkItemState>().expect("a work item has its state");
    let parent = {
        let mut inner = lock(&state.inner);
        // Cleared before the callback, so that the callback can enqueue the item again.
        inner.queued = false;
        inner.running += 1;
        if mutant(Mutant::SingleRunner) {
            inner.runners.clear();
        }
        inner.runners.push(me);
        inner.parent.clone()
    };
    // The parent is only released by the rundown, which waits for queued runs; only a
    // rundown that could not wait (it ran on a thread running this item) leaves queued runs
    // behind it, and those must not call the driver after its cleanup. (It waits for the
    // runs that got their parent here on other threads.)
    if let Some(parent) = parent {
        // A panic is caught at the boundary and reported; the worker goes on.
        item.run_callback(Callback::WorkItem, || {
            // What the callback takes, a flush of the item depends on.
            let _running = lockdep::running(&state.map, state.instance());
            (state.run)(&item, &parent);
        });
    }
    let (dispose, notify) = {
        let mut inner = lock(&state.inner);
        inner.running -= 1;
        if let Some(index) = inner.runners.iter().position(|runner| *runner == me) {
            inner.runners.swap_remove(index);
        }
        // Once the deletion started, every return, not only the last: a rundown inside the
        // callback waits for the other runs while its own keeps the item busy.
        let notify = inner.is_idle() || inner.deleting;
        let dispose = inner.is_idle() && {
            inner.idle_epoch += 1;
            std::mem::take(&mut inner.dispose_when_idle) && !mutant(Mutant::NoDisposeWhenIdle)
        };
        (dispose, notify)
    };
    if dispose {
        // Waiters must wake before the disposal, which may wait for a disposal they run.
        if notify {
            state.idle.notify_all();
        }
        dispose_deferred(&item);
        drop(item);
    } else {
        // The reference goes before the waiters wake: a flush or deletion that waited for
        // this run goes on only once the item can be destroyed, so its destroy does not
        // trail behind on the worker.
        drop(item);
        if notify {
            state.idle.notify_all();
        }
    }
}

/// Completes a deletion the driver asked for where it could not wait, on a worker thread.
/// (A panic in the item's cleanup callback is caught and reported by the deletion.)
fn dispose_deferred(item: &Arc<RawObject>) {
    item.delete();
}

#[track_caller]
pub(crate) fn flush<T>(item: &WorkItem<T>) -> Result {
    let item = &item.raw;
    if current_irql() != Irql::Passive {
        return Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
    }
    let state = state(item);
    // Whether or not a run is queued now: the order is what could deadlock.
    lockdep::wait_for(&state.map, state.instance(), "WorkItem::flush", Some(Location::caller()));
    let mut inner = lock(&state.inner);
    if inner.runners.contains(&thread::current().id()) {
        return Err(NtError::POSSIBLE_DEADLOCK);
    }
    if !inner.is_idle() {
        let start = inner.idle_epoch;
        item.shared().waiting(|| {
            while !inner.is_idle()
                && (inner.idle_epoch == start || mutant(Mutant::FlushIgnoresIdleEpoch))
            {
                inner = state.idle.wait(inner).unwrap_or_else(PoisonError::into_inner);
            }
        });
    }
    Ok(())
}

#[track_caller]
pub(crate) fn delete<T>(item: &WorkItem<T>) -> Result {
    let item = &item.raw;
    let state = state(item);
    if current_irql() == Irql::Passive {
        // The deletion waits for a queued or running callback (not from the callback itself,
        // where lockdep sees the item's own pseudo-lock and adds nothing).
        let at = Some(Location::caller());
        lockdep::wait_for(&state.map, state.instance(), "WorkItem::delete", at);
    }
    let mut inner = lock(&state.inner);
    if inner.deleting {
        return Err(NtError::DELETE_PENDING);
    }
    inner.deleting = true;
    let own_callback = inner.runners.contains(&thread::current().id());
    if !own_callback && current_irql() == Irql::Passive {
        drop(inner);
        item.to_arc().delete();
    } else if inner.is_idle() {
        // At DISPATCH_LEVEL with nothing to wait for: KMDF defers the disposal to a
        // passive-level worker; so does the host.
        drop(inner);
        let deferred = item.to_arc();
        item.shared().pool().submit(Box::new(move || dispose_deferred(&deferred)));
    } else {
        // The last run to return disposes the item; no run can be queued after this.
        inner.dispose_when_idle = true;
    }
    Ok(())
}
