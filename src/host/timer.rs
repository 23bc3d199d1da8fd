//! Timers on the host, on the runtime's virtual clock: `WdfTimerCreate`, `Start`, `Stop`,
//! `WdfObjectDelete`, and the runs.
//!
//! Time only moves when the test (or the sample runner) calls `Runtime::advance`: the due
//! expiries then fire one at a time in due-time order on the advancing thread, each at
//! `DISPATCH_LEVEL` as a DPC would, periodic timers re-arming themselves. After each expiry
//! the advance waits until the work that expiry handed on is done (the work items its
//! callback enqueued, the work items those enqueued, ...: the pool tracks the expiry as the
//! jobs' origin), so the next expiry never races with it. Nothing sleeps, so a scenario with
//! timers gives the same trace every time.
//!
//! In the kernel, time does not wait for the work: a periodic timer whose work item is still
//! queued when it fires again loses that enqueue (`WdfWorkItemEnqueue` does nothing while
//! the item is queued). The host chooses the schedule where every piece of work is quick
//! next to the timer's period, the one a driver is designed for; a test that wants the
//! other, with work still queued when the timer fires again, holds the workers
//! (`Runtime::hold_workers`): the advance then does not wait.

use super::std;
use std::any::type_name;
use std::boxed::Box;
use std::panic::Location;
use std::sync::{Arc, PoisonError};

use super::sync_shim::thread::{self, ThreadId};
use super::sync_shim::{Condvar, Mutex};
use std::time::Duration;
use std::vec::Vec;

use super::clock::{self, Key};
use super::lockdep::{self, Kind, LockMap};
use super::mutex::lock;
use super::object::{KindState, NewObject, RawObject, RawRef, StateSlot, view};
use super::object_kind::ObjectKind;
use super::pool::{self, Origin};
use super::shared::Shared;
use super::sync::{at_dispatch, current_irql};
use super::trace::CallbackPanicked;
use crate::object::{ObjectRef, sealed::Handle as _};
use crate::sync::Irql;
use crate::{Callback, NtError, Result, Timer, TimerCallbacks};

/// What a `WDFTIMER` adds to the common object: its place on the virtual clock and its runs
/// (shared with the runs likewise).
pub(crate) struct TimerState {
    inner: Mutex<Inner>,
    /// Signalled when no callback runs any more.
    idle: Condvar,
    /// The driver's callback, monomorphized for the context type.
    run: fn(&RawObject, &RawObject),
    period: Option<Duration>,
    /// The timer's lockdep class: a firing holds it as a pseudo-lock, a wait acquires it.
    map: LockMap,
}

struct Inner {
    /// The timer's place in the clock's queue while it is set.
    due: Option<Key>,
    /// Callbacks in progress.
    running: usize,
    /// The threads firing the timer now, one entry per firing.
    runners: Vec<ThreadId>,
    /// Deletion has started: the timer cannot be set any more.
    deleting: bool,
    /// `Some` while a `stop` with wait is in progress: a start meanwhile is ignored
    /// (`FxTimer::Start` with `m_StopThread` set) and noted here (`m_StartAborted`), so that
    /// the stop reports the timer as set.
    waiting_stop: Option<bool>,
    /// Deleted from its own callback: the run disposes it when it returns.
    dispose_when_idle: bool,
    /// The parent, referenced until the timer is disposed.
    parent: Option<Arc<RawObject>>,
}

impl TimerState {
    /// The timer's identity for lockdep: the state's address.
    fn instance(&self) -> usize {
        std::ptr::from_ref(self).addr()
    }
}

impl KindState for TimerState {
    fn kind(&self) -> ObjectKind {
        ObjectKind::Timer
    }

    /// Its runs are deferred work: none may run after the device's `SelfManagedIoFlush`.
    fn watched_by_verifier(&self) -> bool {
        true
    }

    /// Called by `RawObject::delete` before the timer's cleanup callback
    /// (`FxTimer::FlushAndRundown`: `Stop(TRUE)`, then the parent is released).
    fn rundown(&self, timer: &RawObject) {
        let mut inner = lock(&self.inner);
        inner.deleting = true;
        inner.dispose_when_idle = false;
        if let Some(key) = inner.due.take() {
            lock(timer.shared().clock()).queue.remove(&key);
        }
        let firing_here = inner.runners.contains(&thread::current().id());
        if inner.running > 0 && !firing_here && current_irql() == Irql::Passive {
            inner = timer.shared().waiting(|| {
                let mut inner = inner;
                while inner.running > 0 {
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

fn state(timer: &RawObject) -> &TimerState {
    timer
        .state::<TimerState>()
        .unwrap_or_else(|| panic!("kmdf host runtime: {timer:?} is not a timer"))
}

#[track_caller]
pub(crate) fn create<T: TimerCallbacks>(
    parent: &T::Parent,
    period_ms: u32,
    context: T,
) -> Result<ObjectRef<Timer<T>>> {
    let map = LockMap::new(Kind::Timer, type_name::<T>(), Location::caller());
    let parent = parent.raw().to_arc();
    let state = Arc::new(TimerState {
        inner: Mutex::new(Inner {
            due: None,
            running: 0,
            runners: Vec::new(),
            deleting: false,
            waiting_stop: None,
            dispose_when_idle: false,
            parent: Some(Arc::clone(&parent)),
        }),
        idle: Condvar::new(),
        run: run::<T>,
        period: (period_ms > 0).then(|| Duration::from_millis(u64::from(period_ms))),
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
            ..NewObject::new(ObjectKind::Timer)
        },
    )?;
    Ok(ObjectRef::from_raw(object))
}

fn run<T: TimerCallbacks>(timer: &RawObject, parent: &RawObject) {
    let timer = view::<Timer<T>>(timer);
    timer.context().run(timer, view::<T::Parent>(parent));
}

fn cleanup<T: TimerCallbacks>(timer: &RawObject) {
    let timer = view::<Timer<T>>(timer);
    timer.context().cleanup(timer);
}

/// One more reference on the timer (`ObjectRef::from(&timer)`).
pub(crate) fn new_ref<T>(timer: &Timer<T>) -> RawRef {
    timer.raw.to_arc()
}

pub(crate) fn context<T: TimerCallbacks>(timer: &Timer<T>) -> &T {
    timer.raw.expect_context::<T>()
}

pub(crate) fn start<T>(timer: &Timer<T>, due: Duration) -> Result<bool> {
    let timer = &timer.raw;
    let mut inner = lock(&state(timer).inner);
    if inner.deleting {
        return Err(NtError::DELETE_PENDING);
    }
    if let Some(start_aborted) = &mut inner.waiting_stop {
        // KMDF ignores a start while WdfTimerStop(Wait) runs: the stop wins.
        *start_aborted = true;
        return Ok(false);
    }
    let mut clock = lock(timer.shared().clock());
    let was_set = inner.due.take().is_some_and(|key| clock.queue.remove(&key).is_some());
    let when = clock.now.checked_add(due).ok_or(NtError::INVALID_PARAMETER)?;
    let key = clock.key(when);
    clock.queue.insert(key, entry(timer.to_arc()));
    inner.due = Some(key);
    Ok(was_set)
}

#[track_caller]
pub(crate) fn stop<T>(timer: &Timer<T>, wait: bool) -> Result<bool> {
    let timer = &timer.raw;
    if wait && current_irql() != Irql::Passive {
        return Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
    }
    let state = state(timer);
    if wait {
        let at = Some(Location::caller());
        lockdep::wait_for(&state.map, state.instance(), "Timer::stop(wait)", at);
    }
    let mut inner = lock(&state.inner);
    let was_set = inner
        .due
        .take()
        .is_some_and(|key| lock(timer.shared().clock()).queue.remove(&key).is_some());
    if wait && inner.running > 0 {
        inner.waiting_stop = Some(false);
        inner = timer.shared().waiting(|| {
            let mut inner = inner;
            while inner.running > 0 {
                inner = state.idle.wait(inner).unwrap_or_else(PoisonError::into_inner);
            }
            inner
        });
        // `FxTimer::Stop`: TRUE when the start logic aborted because of this stop.
        let start_aborted = inner.waiting_stop.take() == Some(true);
        return Ok(was_set || start_aborted);
    }
    Ok(was_set)
}

#[track_caller]
pub(crate) fn delete<T>(timer: &Timer<T>) -> Result {
    let timer = &timer.raw;
    if current_irql() == Irql::Passive {
        // The deletion waits for a running callback.
        let state = state(timer);
        let at = Some(Location::caller());
        lockdep::wait_for(&state.map, state.instance(), "Timer::delete", at);
    }
    let mut inner = lock(&state(timer).inner);
    if inner.deleting {
        return Err(NtError::DELETE_PENDING);
    }
    inner.deleting = true;
    if current_irql() == Irql::Passive {
        drop(inner);
        timer.to_arc().delete();
    } else if inner.running > 0 {
        // From the callback (or another DPC while it runs): the run disposes the timer when
        // it returns, at PASSIVE_LEVEL again.
        inner.dispose_when_idle = true;
    } else {
        // At DISPATCH_LEVEL with nothing running: KMDF defers the disposal to a
        // passive-level worker; so does the host.
        drop(inner);
        let deferred = timer.to_arc();
        timer.shared().pool().submit(Box::new(move || deferred.delete()));
    }
    Ok(())
}

/// Fires the timer that sat at `key` in the queue, on the advancing thread, as deferred work
/// of `origin`. Like a work item's run, the firing counts itself out, then releases its
/// reference on the timer before it wakes the waiters (unless it completes a deletion asked
/// for from the callback).
fn fire(timer: RawRef, key: Key, origin: Origin) {
    pool::deferred(origin, || fire_here(timer, key));
}

fn fire_here(timer: RawRef, key: Key) {
    let state = timer.state_arc::<TimerState>().expect("a timer has its state");
    let parent = {
        let mut inner = lock(&state.inner);
        if inner.due != Some(key) || inner.deleting {
            return; // stopped or set again since it was taken off the queue
        }
        inner.due = None;
        if let Some(period) = state.period {
            let mut clock = lock(timer.shared().clock());
            let next = clock.key(key.0 + period);
            clock.queue.insert(next, entry(Arc::clone(&timer)));
            inner.due = Some(next);
        }
        inner.running += 1;
        inner.runners.push(thread::current().id());
        inner.parent.clone()
    };
    if let Some(parent) = parent {
        at_dispatch(|| {
            timer.run_callback(Callback::TimerFunc, || {
                // What the callback takes, a wait for the timer depends on.
                let _running = lockdep::running(&state.map, state.instance());
                (state.run)(&timer, &parent);
            });
        });
    }
    let (dispose, notify) = {
        let mut inner = lock(&state.inner);
        inner.running -= 1;
        let me = thread::current().id();
        if let Some(index) = inner.runners.iter().position(|runner| *runner == me) {
            inner.runners.swap_remove(index);
        }
        let idle = inner.running == 0;
        (idle && std::mem::take(&mut inner.dispose_when_idle), idle)
    };
    if dispose {
        // Back at PASSIVE_LEVEL, and no longer counted as firing: the deletion asked for
        // from the callback completes now. Waiters wake first (the disposal may wait for a
        // disposal they run).
        state.idle.notify_all();
        timer.delete();
        drop(timer);
    } else {
        // The reference goes before the waiters wake, as for work items.
        drop(timer);
        if notify {
            state.idle.notify_all();
        }
    }
}

/// Moves the virtual clock `by` forward, running every expiry that falls due on the way
/// (timers' firings, devices' idle timeouts), one at a time in due-time order, and waiting after each for the work it handed on
/// (unless the workers are held).
///
/// # Errors
///
/// The panics caught in deferred work that no call reported yet: found before the clock
/// moves (it does not move then), or after an expiry's work (the clock stays at that
/// expiry; later ones do not fire).
pub(crate) fn advance(shared: &Shared, by: Duration) -> core::result::Result<(), CallbackPanicked> {
    shared.report_deferred_panics()?;
    let clock = shared.clock();
    let target = {
        let clock = lock(clock);
        clock.now.saturating_add(by)
    };
    loop {
        let due = {
            let mut clock = lock(clock);
            match clock.queue.first_key_value() {
                Some((key, _)) if key.0 <= target => {
                    let (key, timer) = clock.queue.pop_first().expect("just seen");
                    clock.now = key.0;
                    Some((key, timer))
                }
                _ => {
                    clock.now = target;
                    None
                }
            }
        };
        let Some((key, expiry)) = due else { return Ok(()) };
        let origin = shared.pool().new_origin();
        expiry.expire(key, origin);
        shared.pool().wait_origin(origin);
        shared.report_deferred_panics()?;
    }
}

/// A timer object as the clock holds it while the timer is set.
struct TimerExpiry(RawRef);

impl clock::Expiry for TimerExpiry {
    fn expire(self: Arc<Self>, key: Key, origin: Origin) {
        fire(Arc::clone(&self.0), key, origin);
    }
}

fn entry(timer: RawRef) -> clock::Entry {
    Arc::new(TimerExpiry(timer))
}
