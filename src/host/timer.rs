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
use std::collections::BTreeMap;
use std::panic::Location;
use std::sync::{Arc, PoisonError};

use super::sync_shim::thread::{self, ThreadId};
use super::sync_shim::{Condvar, Mutex};
use std::time::Duration;
use std::vec::Vec;

use super::lockdep::{self, Kind, LockMap};
use super::object::{Extension, ObjectKind, RawObject, RawRef, Shared, lock, view};
use super::pool::{self, Origin};
use super::sync::{at_dispatch, current_irql};
use super::trace::CallbackPanicked;
use crate::object::{ObjectRef, sealed::Object as _};
use crate::sync::Irql;
use crate::{Callback, NtStatus, Result, Timer, TimerCallback};

/// Where a set timer sits in the clock's queue: its due time, then the order it was set in.
type Key = (Duration, u64);

/// The runtime's virtual clock and the timers set on it.
#[derive(Default)]
pub(crate) struct Clock {
    now: Duration,
    next_seq: u64,
    queue: BTreeMap<Key, RawRef>,
}

impl Clock {
    fn key(&mut self, due: Duration) -> Key {
        self.next_seq += 1;
        (due, self.next_seq)
    }
}

/// The `Extension` of a `WDFTIMER`.
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

    /// Called by `RawObject::delete` before the timer's cleanup callback
    /// (`FxTimer::FlushAndRundown`: `Stop(TRUE)`, then the parent is released).
    pub(crate) fn rundown(&self, timer: &RawObject) {
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

fn state(timer: &RawObject) -> &Arc<TimerState> {
    match timer.extension() {
        Some(Extension::Timer(state)) => state,
        _ => panic!("kmdf host runtime: {timer:?} is not a timer"),
    }
}

#[track_caller]
pub(crate) fn create<T: TimerCallback>(
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
    let object = RawObject::create_with(
        parent.shared(),
        ObjectKind::Timer,
        Some(&parent),
        None,
        cleanup_hook,
        Some(Extension::Timer(state)),
        Some(Box::new(context)),
    )?;
    Ok(ObjectRef::from_raw(object))
}

fn run<T: TimerCallback>(timer: &RawObject, parent: &RawObject) {
    let timer = view::<Timer<T>>(timer);
    timer.context().run(timer, view::<T::Parent>(parent));
}

fn cleanup<T: TimerCallback>(timer: &RawObject) {
    let timer = view::<Timer<T>>(timer);
    timer.context().cleanup(timer);
}

pub(crate) fn context<T: TimerCallback>(timer: &Timer<T>) -> &T {
    timer.raw.expect_context::<T>()
}

pub(crate) fn start<T>(timer: &Timer<T>, due: Duration) -> Result<bool> {
    let timer = &timer.raw;
    let mut inner = lock(&state(timer).inner);
    if inner.deleting {
        return Err(NtStatus::DELETE_PENDING);
    }
    if let Some(start_aborted) = &mut inner.waiting_stop {
        // KMDF ignores a start while WdfTimerStop(Wait) runs: the stop wins.
        *start_aborted = true;
        return Ok(false);
    }
    let mut clock = lock(timer.shared().clock());
    let was_set = inner.due.take().is_some_and(|key| clock.queue.remove(&key).is_some());
    let when = clock.now.checked_add(due).ok_or(NtStatus::INVALID_PARAMETER)?;
    let key = clock.key(when);
    clock.queue.insert(key, timer.to_arc());
    inner.due = Some(key);
    Ok(was_set)
}

#[track_caller]
pub(crate) fn stop<T>(timer: &Timer<T>, wait: bool) -> Result<bool> {
    let timer = &timer.raw;
    if wait && current_irql() != Irql::Passive {
        return Err(NtStatus::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
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
        return Err(NtStatus::DELETE_PENDING);
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
    let state = Arc::clone(state(&timer));
    let parent = {
        let mut inner = lock(&state.inner);
        if inner.due != Some(key) || inner.deleting {
            return; // stopped or set again since it was taken off the queue
        }
        inner.due = None;
        if let Some(period) = state.period {
            let mut clock = lock(timer.shared().clock());
            let next = clock.key(key.0 + period);
            clock.queue.insert(next, Arc::clone(&timer));
            inner.due = Some(next);
        }
        inner.running += 1;
        inner.runners.push(thread::current().id());
        inner.parent.clone()
    };
    if let Some(parent) = parent {
        at_dispatch(|| {
            timer.shared().invoke_void(Callback::TimerFunc, None, timer.device(), || {
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

/// Moves the virtual clock `by` forward, firing every timer that falls due on the way, one
/// expiry at a time in due-time order, and waiting after each for the work it handed on
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
        let Some((key, timer)) = due else { return Ok(()) };
        let origin = shared.pool().new_origin();
        fire(timer, key, origin);
        shared.pool().wait_origin(origin);
        shared.report_deferred_panics()?;
    }
}

/// The virtual clock's time since the runtime started.
pub(crate) fn now(clock: &Mutex<Clock>) -> Duration {
    lock(clock).now
}
