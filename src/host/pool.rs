//! The system worker threads of one runtime: where work-item callbacks run.
//!
//! Like the kernel's system worker pool, the pool runs queued jobs in order on whichever
//! thread is free and grows when every thread is busy, so a callback that blocks (waiting on
//! a test's barrier, a wait lock, a flush of another item) never keeps the others from
//! running. It starts [`MIN_THREADS`] threads on first use and never more than
//! [`MAX_THREADS`]. Dropping the pool (with the runtime's last object) stops and joins
//! the threads.
//!
//! While jobs are queued, one thread that is not running a job is *searching*: on its way
//! to take the next job (woken for it, just started, or back from a job). A thread that
//! takes a job hands the search on (wakes a sleeping thread, or starts one if none sleeps)
//! before it runs the job, if jobs are left; so no queued job ever waits for a running
//! callback to return, yet a burst of jobs wakes one thread at a time instead of one per
//! job, and the pool only grows when every thread is running a job. Every counter is
//! kept under the pool's mutex, where the queue is, so no wake-up is lost.
//!
//! Jobs are *deferred work*: code the framework runs later, on its own threads, as opposed to
//! the PnP actions and calls a test makes on its own thread. A timer's firing is deferred
//! work too, on the advancing thread ([`deferred`]). A panic caught in deferred work fails
//! the test's next call (`Runtime::advance` and the others), since no call of the test
//! returns it otherwise. Deferred work also remembers its *origin*: the timer expiry whose
//! firing handed it on, directly or through jobs that job queued, so that `Runtime::advance`
//! can wait for exactly that work before the next expiry ([`Pool::wait_origin`]).

use super::std;
use std::boxed::Box;
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::eprintln;
use std::format;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, PoisonError};

use super::sync_shim::thread::{self, JoinHandle, ThreadId};
use super::sync_shim::{Condvar, Mutex, local};
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::mutex::lock;

/// Threads started with the first job: two, so that two runs of one work item can overlap,
/// as they can in the kernel.
const MIN_THREADS: usize = 2;

/// The most threads one runtime starts; further jobs wait for a free thread. (Under loom,
/// which runs five threads at most, the main one included: two.)
const MAX_THREADS: usize = if cfg!(loom) { MIN_THREADS } else { 64 };

/// A job: one callback run, or a deferred deletion.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// How long a wait for work items goes before it says on stderr what it is waiting for: a
/// callback that never returns would otherwise hang the test silently. (Only a message:
/// the wait goes on, since a callback may legitimately wait for the test's other threads.)
const HANG_WARNING: Duration = Duration::from_secs(10);

/// The origin of work handed on by a timer expiry; see [`deferred`].
pub(crate) type Origin = u64;

/// The origin of deferred work that no expiry handed on (a work item the test or a PnP
/// callback enqueued, a deferred deletion).
const NO_ORIGIN: Origin = 0;

local! {
    /// What this thread runs now: `None` on a caller's thread (the test, a PnP action), or
    /// deferred work of the given origin. A worker thread runs nothing else.
    static DEFERRED: Cell<Option<Origin>> = Cell::new(None);
}

/// Runs `work` as deferred work of `origin` on this thread (a timer's firing on the
/// advancing thread): jobs it queues inherit the origin, and panics caught in it are
/// reported as deferred-work panics.
pub(crate) fn deferred<R>(origin: Origin, work: impl FnOnce() -> R) -> R {
    /// Restores the thread's previous state, also when `work` unwinds.
    struct Restore(Option<Origin>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEFERRED.with(|deferred| deferred.set(self.0));
        }
    }
    let _restore = Restore(DEFERRED.with(|deferred| deferred.replace(Some(origin))));
    work()
}

/// Whether this thread runs deferred work now: a work-item run, a deferred deletion, a
/// timer's firing (and what they call, such as an object's cleanup).
pub(crate) fn in_deferred_work() -> bool {
    DEFERRED.with(Cell::get).is_some()
}

pub(crate) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    work: Condvar,
    /// Signalled when no job is queued or running.
    idle: Condvar,
}

struct State {
    /// Queued jobs, each with its origin.
    jobs: VecDeque<(Job, Origin)>,
    /// Jobs queued or running, by origin (but [`NO_ORIGIN`]); an origin with none left has
    /// no entry.
    outstanding: BTreeMap<Origin, usize>,
    /// The last origin handed out by [`Pool::new_origin`].
    last_origin: Origin,
    threads: Vec<JoinHandle<()>>,
    /// Threads not running a job that will look at the queue: started or woken for it, or
    /// back from a job.
    searching: usize,
    /// Threads waiting for a wake-up, not counting those already woken (`wakeups`).
    sleeping: usize,
    /// Wake-ups sent and not yet taken: a sleeping thread that finds one takes it and
    /// searches. (A condition variable may wake a thread spuriously; counting wake-ups
    /// keeps such a thread asleep and the counters exact.)
    wakeups: usize,
    /// While positive, no job starts (`Runtime::hold_workers`).
    held: usize,
    /// Jobs running now.
    busy: usize,
    shutdown: bool,
}

impl Pool {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    outstanding: BTreeMap::new(),
                    last_origin: NO_ORIGIN,
                    threads: Vec::new(),
                    searching: 0,
                    sleeping: 0,
                    wakeups: 0,
                    held: 0,
                    busy: 0,
                    shutdown: false,
                }),
                work: Condvar::new(),
                idle: Condvar::new(),
            }),
        }
    }

    /// Queues `job` to run on a worker thread: wakes a thread for it unless one is
    /// searching already, and starts one if none is free. The job inherits the origin of
    /// the deferred work queueing it, if any.
    pub(crate) fn submit(&self, job: Job) {
        let origin = DEFERRED.with(Cell::get).unwrap_or(NO_ORIGIN);
        let mut state = lock(&self.inner.state);
        state.jobs.push_back((job, origin));
        if origin != NO_ORIGIN {
            *state.outstanding.entry(origin).or_insert(0) += 1;
        }
        while state.threads.len() < MIN_THREADS {
            Inner::spawn(&self.inner, &mut state);
        }
        let wake = Inner::search(&self.inner, &mut state);
        drop(state);
        if wake {
            self.inner.work.notify_one();
        }
    }

    /// Keeps every worker from starting a job until [`release`](Self::release).
    pub(crate) fn hold(&self) {
        lock(&self.inner.state).held += 1;
        // A wait for work returns while the workers are held: wake the waits in progress.
        self.inner.idle.notify_all();
    }

    /// A new origin, for the work one timer expiry hands on.
    pub(crate) fn new_origin(&self) -> Origin {
        let mut state = lock(&self.inner.state);
        state.last_origin += 1;
        state.last_origin
    }

    /// Waits until no job is queued or running, jobs queued by running jobs included. Returns
    /// at once while the workers are held (queued jobs cannot start then).
    pub(crate) fn wait_idle(&self) {
        self.wait_until("Runtime::wait_for_work_items", |state| {
            state.busy == 0 && state.jobs.is_empty()
        });
    }

    /// Waits until no job of `origin` is queued or running: the work a timer expiry handed
    /// on, and the work that work handed on in turn, is done. Returns at once while the
    /// workers are held, like [`wait_idle`](Self::wait_idle).
    pub(crate) fn wait_origin(&self, origin: Origin) {
        self.wait_until("Runtime::advance", |state| !state.outstanding.contains_key(&origin));
    }

    /// Waits until `done` holds or the workers are held, saying on stderr every
    /// [`HANG_WARNING`] what it still waits for.
    fn wait_until(&self, waiter: &str, done: impl Fn(&State) -> bool) {
        let started = Instant::now();
        let mut state = lock(&self.inner.state);
        while !done(&state) && state.held == 0 {
            let (next, timeout) = self
                .inner
                .idle
                .wait_timeout(state, HANG_WARNING)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            if timeout.timed_out() && !done(&state) && state.held == 0 {
                eprintln!(
                    "kmdf host runtime: {waiter} has waited {:?} for work items ({} running, {} \
                     queued); a work-item callback that never returns, or that enqueues itself \
                     forever, hangs it",
                    started.elapsed(),
                    state.busy,
                    state.jobs.len(),
                );
            }
        }
    }

    /// Undoes one [`hold`](Self::hold).
    pub(crate) fn release(&self) {
        let mut state = lock(&self.inner.state);
        state.held -= 1;
        let wake = Inner::search(&self.inner, &mut state);
        drop(state);
        if wake {
            self.inner.work.notify_one();
        }
    }
}

impl Inner {
    /// Starts a worker thread, searching.
    fn spawn(this: &Arc<Self>, state: &mut State) {
        let inner = Arc::clone(this);
        let name = format!("kmdf-worker-{}", state.threads.len());
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || inner.work())
            .expect("kmdf host runtime: cannot start a worker thread");
        state.threads.push(thread);
        state.searching += 1;
    }

    /// Makes sure a thread is searching when jobs can start and none is: counts a wake-up
    /// for a sleeping thread, or starts a thread if none sleeps (up to [`MAX_THREADS`]; past
    /// that, the jobs wait for a thread to come back from its job). Returns whether to
    /// notify the condition variable, which the caller does once the state is unlocked.
    fn search(this: &Arc<Self>, state: &mut State) -> bool {
        if state.jobs.is_empty() || state.held > 0 || state.searching > 0 {
            false
        } else if state.sleeping > 0 {
            state.sleeping -= 1;
            state.wakeups += 1;
            state.searching += 1;
            true
        } else {
            if state.threads.len() < MAX_THREADS {
                Self::spawn(this, state);
            }
            false
        }
    }

    /// A worker thread's loop: run jobs until the pool shuts down. The thread starts
    /// searching.
    fn work(self: Arc<Self>) {
        let mut state = lock(&self.state);
        loop {
            let job = if state.held == 0 { state.jobs.pop_front() } else { None };
            if let Some((job, origin)) = job {
                state.searching -= 1;
                state.busy += 1;
                // Jobs left: another thread searches before this one runs driver code, which
                // may block.
                let wake = Self::search(&self, &mut state);
                drop(state);
                if wake {
                    self.work.notify_one();
                }
                // The job and what it captured (possibly the runtime's last object, and so
                // the pool itself) are dropped before the state is locked again. Jobs
                // report their callbacks' panics themselves; catching here only keeps a
                // panic in the runtime's own code from losing a thread.
                let _ = deferred(origin, || panic::catch_unwind(AssertUnwindSafe(job)));
                state = lock(&self.state);
                state.searching += 1;
                state.busy -= 1;
                let origin_done = origin != NO_ORIGIN && {
                    let left = state.outstanding.get_mut(&origin).expect("counted at submit");
                    *left -= 1;
                    *left == 0
                };
                if origin_done {
                    state.outstanding.remove(&origin);
                }
                if origin_done || (state.busy == 0 && state.jobs.is_empty()) {
                    self.idle.notify_all();
                }
            } else if state.shutdown {
                return;
            } else {
                // Nothing to start (the queue is empty, or held): sleep until woken for a
                // job. Whoever queues one, or releases the hold, sees no thread searching
                // and wakes this one, under the same lock: no wake-up is lost.
                state.searching -= 1;
                state.sleeping += 1;
                while state.wakeups == 0 && !state.shutdown {
                    state = self.work.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
                if state.wakeups > 0 {
                    // The waker counted this thread as searching.
                    state.wakeups -= 1;
                } else {
                    return;
                }
            }
        }
    }
}

impl Drop for Pool {
    /// Stops the workers and joins them. Jobs hold references to the runtime's objects, so
    /// when the pool is dropped no job is left; a worker that drops the pool itself (its
    /// job released the runtime's last object) is not joined: it exits right after.
    fn drop(&mut self) {
        let threads = {
            let mut state = lock(&self.inner.state);
            state.shutdown = true;
            std::mem::take(&mut state.threads)
        };
        self.inner.work.notify_all();
        let me: ThreadId = thread::current().id();
        for thread in threads {
            if thread.thread().id() != me {
                // Workers catch every panic, so they only end by returning: there is no
                // error to look at.
                let _ = thread.join();
            }
        }
    }
}
