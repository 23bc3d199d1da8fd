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

use super::std;
use std::boxed::Box;
use std::collections::VecDeque;
use std::format;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};
use std::vec::Vec;

use super::object::lock;

/// Threads started with the first job: two, so that two runs of one work item can overlap,
/// as they can in the kernel.
const MIN_THREADS: usize = 2;

/// The most threads one runtime starts; further jobs wait for a free thread.
const MAX_THREADS: usize = 64;

/// A job: one callback run, or a deferred deletion.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

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
    jobs: VecDeque<Job>,
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
    /// searching already, and starts one if none is free.
    pub(crate) fn submit(&self, job: Job) {
        let mut state = lock(&self.inner.state);
        state.jobs.push_back(job);
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
    }

    /// Waits until no job is queued or running, jobs queued by running jobs included. Returns
    /// at once while the workers are held (queued jobs cannot start then).
    pub(crate) fn wait_idle(&self) {
        let mut state = lock(&self.inner.state);
        while (state.busy > 0 || !state.jobs.is_empty()) && state.held == 0 {
            state = self.inner.idle.wait(state).unwrap_or_else(PoisonError::into_inner);
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
            if let Some(job) = job {
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
                let _ = panic::catch_unwind(AssertUnwindSafe(job));
                state = lock(&self.state);
                state.searching += 1;
                state.busy -= 1;
                if state.busy == 0 && state.jobs.is_empty() {
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
