//! The system worker threads of one runtime: where work-item callbacks run.
//!
//! Like the kernel's system worker pool, the pool runs queued jobs in order on whichever
//! thread is free and grows when every thread is busy, so a callback that blocks (waiting on
//! a test's barrier, a wait lock, a flush of another item) never keeps the others from
//! running. It starts [`MIN_THREADS`] threads on first use and never more than
//! [`MAX_THREADS`]. Dropping the pool (with the runtime's last object) stops and joins
//! the threads.

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
    /// Threads waiting for a job, or started and about to look for one.
    available: usize,
    threads: Vec<JoinHandle<()>>,
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
                    available: 0,
                    threads: Vec::new(),
                    held: 0,
                    busy: 0,
                    shutdown: false,
                }),
                work: Condvar::new(),
                idle: Condvar::new(),
            }),
        }
    }

    /// Queues `job` to run on a worker thread, starting a thread if none is free.
    pub(crate) fn submit(&self, job: Job) {
        let mut state = lock(&self.inner.state);
        state.jobs.push_back(job);
        while state.threads.len() < MAX_THREADS
            && (state.threads.len() < MIN_THREADS || state.available < state.jobs.len())
        {
            let inner = Arc::clone(&self.inner);
            let name = format!("kmdf-worker-{}", state.threads.len());
            let thread = thread::Builder::new()
                .name(name)
                .spawn(move || inner.work())
                .expect("kmdf host runtime: cannot start a worker thread");
            state.threads.push(thread);
            state.available += 1;
        }
        drop(state);
        self.inner.work.notify_one();
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
        lock(&self.inner.state).held -= 1;
        self.inner.work.notify_all();
    }
}

impl Inner {
    /// A worker thread's loop: run jobs until the pool shuts down.
    fn work(&self) {
        let mut state = lock(&self.state);
        loop {
            let job = if state.held == 0 { state.jobs.pop_front() } else { None };
            if let Some(job) = job {
                state.available -= 1;
                state.busy += 1;
                drop(state);
                // The job and what it captured (possibly the runtime's last object, and so
                // the pool itself) are dropped before the state is locked again. Jobs
                // report their callbacks' panics themselves; catching here only keeps a
                // panic in the runtime's own code from losing a thread.
                let _ = panic::catch_unwind(AssertUnwindSafe(job));
                state = lock(&self.state);
                state.available += 1;
                state.busy -= 1;
                if state.busy == 0 && state.jobs.is_empty() {
                    self.idle.notify_all();
                }
            } else if state.shutdown {
                return;
            } else {
                state = self.work.wait(state).unwrap_or_else(PoisonError::into_inner);
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
