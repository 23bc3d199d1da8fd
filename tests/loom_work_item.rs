//! A model of the host work-item state machine (enqueue, run, re-enqueue, flush, delete,
//! removal of the parent), checked with [loom](https://docs.rs/loom): every interleaving of
//! each scenario's threads, up to a preemption bound, against the rules of
//! docs/kmdf-behaviour.md section 4.
//!
//! **This model mirrors `src/host/work_item.rs` step by step, with the parts of
//! `src/host/object.rs` (`RawObject::create_with`, `RawObject::delete`) and
//! `src/host/pool.rs` that work items rely on, and must be updated with them.** loom cannot
//! run the real code, which uses `std`'s primitives, so the model copies the algorithm with
//! loom's `Mutex`, `Condvar`, `Arc`, atomics and threads: the same `Inner` fields, the same
//! transitions under the same lock, the same wait conditions, and functions named like the
//! real ones (`work_item::enqueue`, `run_job`, `flush`, `delete`, `dispose_deferred`,
//! `WorkItemState::rundown`, `RawObject::delete`).
//!
//! What the model leaves out:
//! * The worker pool is one loom thread per job. The real pool starts a thread whenever every
//!   thread is busy, so a job never waits behind another one (up to 64 threads); runs of one
//!   item can overlap in both. `Runtime::hold_workers`, a test aid, is not modelled, nor
//!   are the jobs' origins (the timer expiry whose work `Runtime::advance` waits for) and
//!   the deferred-work flag panics are classified by: neither changes the item's states.
//! * The callback boundary (`invoke_void`) records a run's start and return in a log instead
//!   of the trace, and does not catch panics: in the model a panic is a failed check.
//! * Contexts, object ids, the live-object table and `EvtDestroyCallback`: they play no part
//!   in the state machine. Every object has a cleanup callback (it logs).
//!
//! Everything the threads share, the log the assertions read included, is a loom object:
//! loom only tries both orders of two threads' steps when it sees them touch the same loom
//! object, so state kept in `std` types would hide interleavings from the checks.
//!
//! Each scenario is a `loom::model::Builder` with an explicit preemption bound (raise it with
//! `LOOM_MAX_PREEMPTIONS` for a deeper local run) and prints how many executions loom
//! explored: `cargo test --test loom_work_item -- --nocapture`. loom allows five threads,
//! the main one included, which bounds the scenarios. The whole file takes about 15 s in the
//! debug profile. The model is also run with deliberately broken variants ([`Bug`]), each
//! in a child process, and loom must catch every one: the checks themselves are tested.

use std::cell::Cell;
use std::panic;
use std::sync::PoisonError;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;

use kmdf::sync::Irql;
use kmdf::{NtError, Result};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
use loom::thread::{self, JoinHandle};

/// A deliberate bug, injected into the model to show that the scenarios catch it. The
/// faithful model runs with none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    /// `flush` waits until the item is idle and ignores `idle_epoch`: it no longer ends at
    /// the first idle moment after it started.
    FlushIgnoresIdleEpoch,
    /// `WorkItemState::rundown` does not wait for the queued or running callback.
    RundownDoesNotWait,
    /// One runner per item, like KMDF's `m_WorkItemThread`: a run forgets the one before.
    SingleRunner,
    /// `run_job` does not complete a deletion left to the last run (`dispose_when_idle`).
    NoDisposeWhenIdle,
    /// `RawObject::delete` returns at once when another thread is disposing the object.
    DeleteDoesNotWaitForDisposal,
    /// A rundown inside the item's callback does not wait for the runs other threads have
    /// started: the host code before this model found that they can call the driver after
    /// the item's cleanup.
    RundownIgnoresOtherRuns,
}

/// What the driver's callbacks did, in the order the interleaving ran them: the model's
/// trace, which the assertions read. It is kept under a loom mutex, not a `std` one: loom
/// only tries both orders of two threads' steps when it sees them touch the same loom
/// object, so a log it could not see would hide orderings from the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// A callback run of the named item started.
    Run(&'static str),
    /// That run's callback returned.
    Returned(&'static str),
    /// The named object's cleanup callback ran.
    Cleanup(&'static str),
}

loom::thread_local! {
    /// The thread's IRQL (`host::sync`'s thread-local): a loom thread-local, since loom runs
    /// all its threads on one OS thread.
    static IRQL: Cell<Irql> = Cell::new(Irql::Passive);
}

fn current_irql() -> Irql {
    IRQL.with(Cell::get)
}

/// Runs `f` at `DISPATCH_LEVEL`, as while a spin lock is held.
fn at_dispatch_level<R>(f: impl FnOnce() -> R) -> R {
    IRQL.with(|irql| irql.set(Irql::Dispatch));
    let result = f();
    IRQL.with(|irql| irql.set(Irql::Passive));
    result
}

// ----------------------------------------------------------------------------------------
// The model of src/host/pool.rs.

mod pool {
    use super::object::lock;
    use super::{JoinHandle, Mutex, thread};

    /// A job: one callback run, or a deferred deletion.
    pub(crate) type Job = Box<dyn FnOnce() + Send>;

    /// The system worker threads: one loom thread per job (see the file's documentation).
    pub(crate) struct Pool {
        threads: Mutex<Vec<JoinHandle<()>>>,
    }

    impl Pool {
        pub(crate) fn new() -> Self {
            Self { threads: Mutex::new(Vec::new()) }
        }

        /// Runs `job` on a worker thread of its own.
        pub(crate) fn submit(&self, job: Job) {
            let thread = thread::spawn(job);
            lock(&self.threads).push(thread);
        }

        /// Waits until every job has returned, jobs submitted by jobs included (what
        /// dropping the real pool does).
        pub(crate) fn join(&self) {
            loop {
                let next = lock(&self.threads).pop();
                match next {
                    Some(thread) => thread.join().expect("a job panicked"),
                    None => return,
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// The model of src/host/object.rs: objects, parent and children, disposal.

mod object {
    use super::pool::Pool;
    use super::work_item::WorkItemState;
    use super::{Arc, AtomicUsize, Bug, Condvar, Event, Mutex, MutexGuard, NtError, Ordering};
    use super::{PoisonError, Result, thread};
    use loom::thread::ThreadId;

    /// Locks a mutex, ignoring poisoning.
    pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// State shared by everything in one runtime.
    pub(crate) struct Shared {
        log: Mutex<Vec<Event>>,
        /// Threads blocked until a work item's callback returns (in a flush or a deletion).
        waiters: AtomicUsize,
        pool: Pool,
        /// The deliberate bug of a broken variant, if any.
        bug: Option<Bug>,
    }

    impl Shared {
        pub(crate) fn new(bug: Option<Bug>) -> Arc<Self> {
            Arc::new(Self {
                log: Mutex::new(Vec::new()),
                waiters: AtomicUsize::new(0),
                pool: Pool::new(),
                bug,
            })
        }

        pub(crate) fn pool(&self) -> &Pool {
            &self.pool
        }

        pub(crate) fn has_bug(&self, bug: Bug) -> bool {
            self.bug == Some(bug)
        }

        pub(crate) fn bug(&self) -> Option<Bug> {
            self.bug
        }

        /// Counts the calling thread as waiting for a work item while `wait` runs.
        pub(crate) fn waiting<R>(&self, wait: impl FnOnce() -> R) -> R {
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let result = wait();
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            result
        }

        pub(crate) fn waiters(&self) -> usize {
            self.waiters.load(Ordering::SeqCst)
        }

        pub(crate) fn record(&self, event: Event) {
            lock(&self.log).push(event);
        }

        pub(crate) fn events(&self) -> Vec<Event> {
            lock(&self.log).clone()
        }

        /// Records and runs an item's callback.
        pub(crate) fn invoke_void(&self, item: &'static str, run: impl FnOnce()) {
            self.record(Event::Run(item));
            run();
            self.record(Event::Returned(item));
        }
    }

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
    }

    /// What one kind of object adds to the common object.
    pub(crate) enum Extension {
        WorkItem(WorkItemState),
    }

    impl Extension {
        fn rundown(&self, object: &RawObject) {
            match self {
                Extension::WorkItem(state) => state.rundown(object),
            }
        }
    }

    /// A framework object.
    pub(crate) struct RawObject {
        shared: Arc<Shared>,
        /// Names the object in the log (the real object has an id and a kind).
        pub(crate) name: &'static str,
        extension: Option<Extension>,
        links: Mutex<Links>,
        /// Signalled when a disposal completes.
        disposed: Condvar,
    }

    impl RawObject {
        /// Creates an object with its creation reference, as a child of `parent` if given.
        pub(crate) fn create_with(
            shared: &Arc<Shared>,
            name: &'static str,
            parent: Option<&Arc<RawObject>>,
            extension: Option<Extension>,
        ) -> Result<Arc<Self>> {
            let object = Arc::new(Self {
                shared: Arc::clone(shared),
                name,
                extension,
                links: Mutex::new(Links {
                    parent: parent.cloned(),
                    children: Vec::new(),
                    lifecycle: Lifecycle::Alive,
                    disposer: None,
                }),
                disposed: Condvar::new(),
            });
            if let Some(parent) = parent {
                let mut links = lock(&parent.links);
                if links.lifecycle != Lifecycle::Alive {
                    return Err(NtError::DELETE_PENDING);
                }
                links.children.push(Arc::clone(&object));
            }
            Ok(object)
        }

        pub(crate) fn extension(&self) -> Option<&Extension> {
            self.extension.as_ref()
        }

        pub(crate) fn shared(&self) -> &Arc<Shared> {
            &self.shared
        }

        /// Deletes the object: disposes the children, then runs the kind's rundown, then
        /// the cleanup callback, then drops the links. Waits for a disposal another thread
        /// is running; does nothing on the disposing thread itself or once disposed.
        ///
        /// (The real method takes `self: &Arc<Self>`; loom's `Arc` cannot be a receiver.)
        pub(crate) fn delete(this: &Arc<Self>) {
            let me = thread::current().id();
            let children = {
                let mut links = lock(&this.links);
                match links.lifecycle {
                    Lifecycle::Alive => {}
                    Lifecycle::Disposing
                        if links.disposer != Some(me)
                            // BROKEN VARIANT: another thread's disposal is not waited for.
                            && !this.shared.has_bug(Bug::DeleteDoesNotWaitForDisposal) =>
                    {
                        while links.lifecycle != Lifecycle::Disposed {
                            links =
                                this.disposed.wait(links).unwrap_or_else(PoisonError::into_inner);
                        }
                        return;
                    }
                    Lifecycle::Disposing | Lifecycle::Disposed => return,
                }
                links.lifecycle = Lifecycle::Disposing;
                links.disposer = Some(me);
                std::mem::take(&mut links.children)
            };
            for child in &children {
                RawObject::delete(child);
            }
            drop(children);
            if let Some(extension) = &this.extension {
                extension.rundown(this);
            }
            this.shared.record(Event::Cleanup(this.name));
            let parent = {
                let mut links = lock(&this.links);
                links.lifecycle = Lifecycle::Disposed;
                links.disposer = None;
                links.parent.take()
            };
            this.disposed.notify_all();
            if let Some(parent) = parent {
                lock(&parent.links).children.retain(|child| !Arc::ptr_eq(child, this));
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// The model of src/host/work_item.rs.

mod work_item {
    use super::object::{Extension, RawObject, lock};
    use super::{Arc, Bug, Condvar, Irql, Mutex, NtError, PoisonError, Result};
    use super::{current_irql, thread};
    use loom::thread::ThreadId;

    /// The driver's callback: gets the item and its parent.
    pub(crate) type Run = Box<dyn Fn(&Arc<RawObject>, &RawObject) + Send + Sync>;

    /// The `Extension` of a `WDFWORKITEM`.
    pub(crate) struct WorkItemState {
        inner: Mutex<Inner>,
        /// Signalled when the item becomes idle, and once the deletion started whenever a
        /// run returns.
        idle: Condvar,
        run: Run,
    }

    struct Inner {
        /// A run is queued and has not started.
        queued: bool,
        /// Runs in progress.
        running: usize,
        /// The threads running the callback now, one entry per run.
        runners: Vec<ThreadId>,
        /// Counts the moments the item became idle.
        idle_epoch: u64,
        /// Deletion has started: no more enqueues.
        deleting: bool,
        /// The last run to return disposes the item.
        dispose_when_idle: bool,
        /// The parent, referenced until the item is disposed.
        parent: Option<Arc<RawObject>>,
    }

    impl Inner {
        fn is_idle(&self) -> bool {
            !self.queued && self.running == 0
        }

        /// Whether a rundown on a thread running `own` of the item's runs still waits: for
        /// idleness, or inside the callback for the other threads' runs.
        fn rundown_waits(&self, own: usize, bug: Option<Bug>) -> bool {
            match bug {
                // BROKEN VARIANT: the rundown does not wait.
                Some(Bug::RundownDoesNotWait) => false,
                // BROKEN VARIANT: inside the callback, the rundown does not wait for the
                // other threads' runs (the host code before the model found it).
                Some(Bug::RundownIgnoresOtherRuns) if own > 0 => false,
                _ if own == 0 => !self.is_idle(),
                _ => self.running > own,
            }
        }
    }

    impl WorkItemState {
        /// Called by `RawObject::delete` before the item's cleanup callback: no more
        /// enqueues, then wait for the queued or running callback (on a thread running it:
        /// for the other threads' runs), then release the parent.
        pub(crate) fn rundown(&self, item: &RawObject) {
            let me = thread::current().id();
            let bug = item.shared().bug();
            let mut inner = lock(&self.inner);
            inner.deleting = true;
            inner.dispose_when_idle = false;
            let own = inner.runners.iter().filter(|&&runner| runner == me).count();
            if inner.rundown_waits(own, bug) {
                inner = item.shared().waiting(|| {
                    let mut inner = inner;
                    while inner.rundown_waits(own, bug) {
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

    fn state(item: &RawObject) -> &WorkItemState {
        match item.extension() {
            Some(Extension::WorkItem(state)) => state,
            None => panic!("{} is not a work item", item.name),
        }
    }

    pub(crate) fn create(
        parent: &Arc<RawObject>,
        name: &'static str,
        run: Run,
    ) -> Result<Arc<RawObject>> {
        let state = WorkItemState {
            inner: Mutex::new(Inner {
                queued: false,
                running: 0,
                runners: Vec::new(),
                idle_epoch: 0,
                deleting: false,
                dispose_when_idle: false,
                parent: Some(Arc::clone(parent)),
            }),
            idle: Condvar::new(),
            run,
        };
        RawObject::create_with(
            parent.shared(),
            name,
            Some(parent),
            Some(Extension::WorkItem(state)),
        )
    }

    pub(crate) fn enqueue(item: &Arc<RawObject>) -> Result<bool> {
        let mut inner = lock(&state(item).inner);
        if inner.deleting {
            return Err(NtError::DELETE_PENDING);
        }
        if inner.queued {
            return Ok(false);
        }
        inner.queued = true;
        drop(inner);
        let job = Arc::clone(item);
        item.shared().pool().submit(Box::new(move || run_job(&job)));
        Ok(true)
    }

    /// One run on a worker thread.
    fn run_job(item: &Arc<RawObject>) {
        let me = thread::current().id();
        let state = state(item);
        let parent = {
            let mut inner = lock(&state.inner);
            // Cleared before the callback, so that the callback can enqueue the item again.
            inner.queued = false;
            inner.running += 1;
            // BROKEN VARIANT: one runner only, as KMDF's `m_WorkItemThread`.
            if item.shared().has_bug(Bug::SingleRunner) {
                inner.runners.clear();
            }
            inner.runners.push(me);
            inner.parent.clone()
        };
        if let Some(parent) = parent {
            item.shared().invoke_void(item.name, || {
                (state.run)(item, &parent);
            });
        }
        let dispose = {
            let mut inner = lock(&state.inner);
            inner.running -= 1;
            if let Some(index) = inner.runners.iter().position(|runner| *runner == me) {
                inner.runners.swap_remove(index);
            }
            // Once the deletion started, every return, not only the last: a rundown inside
            // the callback waits for the other runs while its own keeps the item busy.
            if inner.is_idle() || inner.deleting {
                state.idle.notify_all();
            }
            if inner.is_idle() {
                inner.idle_epoch += 1;
                std::mem::take(&mut inner.dispose_when_idle)
                    // BROKEN VARIANT: the deferred disposal is forgotten.
                    && !item.shared().has_bug(Bug::NoDisposeWhenIdle)
            } else {
                false
            }
        };
        if dispose {
            dispose_deferred(item);
        }
    }

    /// Completes a deletion the driver asked for where it could not wait.
    fn dispose_deferred(item: &Arc<RawObject>) {
        RawObject::delete(item);
    }

    pub(crate) fn flush(item: &Arc<RawObject>) -> Result {
        if current_irql() != Irql::Passive {
            return Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
        }
        let state = state(item);
        let mut inner = lock(&state.inner);
        if inner.runners.contains(&thread::current().id()) {
            return Err(NtError::POSSIBLE_DEADLOCK);
        }
        if !inner.is_idle() {
            let start = inner.idle_epoch;
            // BROKEN VARIANT: wait for idleness only, whatever the epoch.
            let ignore_epoch = item.shared().has_bug(Bug::FlushIgnoresIdleEpoch);
            item.shared().waiting(|| {
                while !inner.is_idle() && (inner.idle_epoch == start || ignore_epoch) {
                    inner = state.idle.wait(inner).unwrap_or_else(PoisonError::into_inner);
                }
            });
        }
        Ok(())
    }

    pub(crate) fn delete(item: &Arc<RawObject>) -> Result {
        let state = state(item);
        let mut inner = lock(&state.inner);
        if inner.deleting {
            return Err(NtError::DELETE_PENDING);
        }
        inner.deleting = true;
        let own_callback = inner.runners.contains(&thread::current().id());
        if !own_callback && current_irql() == Irql::Passive {
            drop(inner);
            RawObject::delete(item);
        } else if inner.is_idle() {
            // At DISPATCH_LEVEL with nothing to wait for: deferred to a worker.
            drop(inner);
            let deferred = Arc::clone(item);
            item.shared().pool().submit(Box::new(move || dispose_deferred(&deferred)));
        } else {
            // The last run to return disposes the item; no run can be queued after this.
            inner.dispose_when_idle = true;
        }
        Ok(())
    }
}

// ----------------------------------------------------------------------------------------
// The checks.

use object::{RawObject, Shared};

/// One runtime with one device, the parent of the scenario's work items.
struct Rig {
    shared: Arc<Shared>,
    device: Arc<RawObject>,
}

impl Rig {
    fn new(bug: Option<Bug>) -> Self {
        let shared = Shared::new(bug);
        let device = RawObject::create_with(&shared, "device", None, None).unwrap();
        Self { shared, device }
    }

    fn item(
        &self,
        name: &'static str,
        run: impl Fn(&Arc<RawObject>, &RawObject) + Send + Sync + 'static,
    ) -> Arc<RawObject> {
        work_item::create(&self.device, name, Box::new(run)).unwrap()
    }

    /// Ends the scenario: waits for every job, removes the device (a no-op if the scenario
    /// removed it), and checks the rules every scenario obeys. Returns the log.
    fn finish(self, items: &[&'static str]) -> Vec<Event> {
        self.shared.pool().join();
        RawObject::delete(&self.device);
        self.shared.pool().join();
        assert_eq!(self.shared.waiters(), 0, "a thread is still waiting");
        let events = self.shared.events();
        check_disposal(&events, items, self.device.name);
        events
    }
}

/// Where `event` is in the log; it must be there exactly once.
fn position_once(events: &[Event], event: Event) -> usize {
    let found: Vec<usize> = (0..events.len()).filter(|&i| events[i] == event).collect();
    assert_eq!(found.len(), 1, "{event:?} is in the log {} times: {events:?}", found.len());
    found[0]
}

/// Section 4, Delete: each item is cleaned up once, after every run of its callback has
/// returned (so no run starts after its cleanup), and before its parent's cleanup.
fn check_disposal(events: &[Event], items: &[&'static str], parent: &'static str) {
    let parent_cleanup = position_once(events, Event::Cleanup(parent));
    for &item in items {
        let cleanup = position_once(events, Event::Cleanup(item));
        for (i, event) in events.iter().enumerate() {
            if matches!(event, Event::Run(name) | Event::Returned(name) if *name == item) {
                assert!(i < cleanup, "{event:?} after the item's cleanup: {events:?}");
            }
        }
        assert!(cleanup < parent_cleanup, "the parent was cleaned up first: {events:?}");
    }
    let runs = |kind: fn(&'static str) -> Event| {
        items.iter().map(|&item| events.iter().filter(|&&e| e == kind(item)).count()).sum::<usize>()
    };
    assert_eq!(runs(Event::Run), runs(Event::Returned), "a run did not return: {events:?}");
}

fn count(events: &[Event], event: Event) -> usize {
    events.iter().filter(|&&e| e == event).count()
}

/// Executions of the model started so far in this process.
static EXECUTIONS: StdAtomicUsize = StdAtomicUsize::new(0);

/// Explores every interleaving of `model` up to `preemption_bound` preemptions (or
/// `LOOM_MAX_PREEMPTIONS`); returns how many executions loom ran.
fn explore(name: &str, preemption_bound: usize, model: impl Fn() + Sync + Send + 'static) -> usize {
    let iterations = std::sync::Arc::new(StdAtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&iterations);
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(preemption_bound));
    let bound = builder.preemption_bound;
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        EXECUTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        model();
    });
    let iterations = iterations.load(std::sync::atomic::Ordering::Relaxed);
    println!("loom: {name}: {iterations} executions explored (preemption bound {bound:?})");
    assert!(iterations > 1, "loom explored a single execution");
    iterations
}

/// Set in the child process that runs a broken variant.
const BROKEN_VARIANT: &str = "KMDF_LOOM_BROKEN_VARIANT";

/// Checks that loom finds the bug in a broken variant of the model, and that its report
/// contains `expected`.
///
/// The variant runs in a child process, this test binary running only `test`: once loom
/// reports a deadlock, the unwinding threads touch loom's state again and the process
/// aborts, so the failure cannot be caught in this process.
fn must_fail(test: &str, expected: &str, broken: impl FnOnce()) {
    if std::env::var_os(BROKEN_VARIANT).is_some() {
        let default_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let executions = EXECUTIONS.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!("loom: caught in execution {executions}");
            default_hook(info);
        }));
        broken();
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(BROKEN_VARIANT, "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "the broken variant passed the check:\n{report}");
    assert!(report.contains(expected), "not the expected failure ({expected}):\n{report}");
    let caught = report.lines().find(|line| line.starts_with("loom: caught")).unwrap_or_default();
    println!("loom: {test}: {caught}: {expected}");
}

/// Work a driver posts before enqueueing the item, and its callback handles: `posted` and
/// `handled` count units of work. `Relaxed` on purpose: what a run sees of the work posted
/// before an enqueue must be ordered by the item's own lock.
#[derive(Default)]
struct Work {
    posted: AtomicUsize,
    handled: AtomicUsize,
    runs: AtomicUsize,
}

impl Work {
    fn post(&self) {
        self.posted.fetch_add(1, Ordering::Relaxed);
    }

    /// The callback: handles everything posted so far.
    fn run(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let posted = self.posted.load(Ordering::Relaxed);
        self.handled.fetch_max(posted, Ordering::Relaxed);
    }

    fn handled(&self) -> usize {
        self.handled.load(Ordering::Relaxed)
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }
}

/// An event a thread can wait for.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *object::lock(&self.open) = true;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let mut open = object::lock(&self.open);
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

// ----------------------------------------------------------------------------------------
// Enqueue and flush.

/// Section 4, Enqueue and Flush, on one thread: an enqueue while queued returns `Ok(false)`
/// and queues nothing; the flush returns after a run that saw both enqueues' work.
fn coalesce(outcomes: &std::sync::Arc<[StdAtomicUsize; 2]>) {
    let rig = Rig::new(None);
    let work = Arc::new(Work::default());
    let in_run = Arc::clone(&work);
    let item = rig.item("item", move |_, _| in_run.run());

    work.post();
    assert_eq!(work_item::enqueue(&item), Ok(true));
    work.post();
    let second = work_item::enqueue(&item).unwrap();
    outcomes[usize::from(second)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(work_item::flush(&item), Ok(()));
    assert_eq!(work.handled(), 2, "the flush returned before a run saw every enqueue's work");

    let events = rig.finish(&["item"]);
    assert_eq!(work.runs(), 1 + usize::from(second), "one run per Ok(true), none per Ok(false)");
    assert_eq!(count(&events, Event::Run("item")), work.runs());
}

#[test]
fn enqueue_while_queued_coalesces_and_flush_waits_for_the_run() {
    let outcomes = std::sync::Arc::new([StdAtomicUsize::new(0), StdAtomicUsize::new(0)]);
    let seen = std::sync::Arc::clone(&outcomes);
    explore("enqueue coalesces, flush sees every enqueue", 3, move || coalesce(&seen));
    let [queued, coalesced] = &*outcomes;
    assert!(coalesced.load(std::sync::atomic::Ordering::Relaxed) > 0, "never coalesced");
    assert!(queued.load(std::sync::atomic::Ordering::Relaxed) > 0, "never queued twice");
}

/// Section 4, Enqueue and Flush, with two enqueuing threads and a flushing one: whatever was
/// posted before an enqueue that returned (`Ok(true)` or `Ok(false)`) before the flush
/// started has been handled by a run that returned before the flush returns.
fn concurrent_enqueuers(outcomes: &std::sync::Arc<[StdAtomicUsize; 2]>) {
    let rig = Rig::new(None);
    let work = Arc::new(Work::default());
    let in_run = Arc::clone(&work);
    let item = rig.item("item", move |_, _| in_run.run());
    let returned = Arc::new(AtomicUsize::new(0));
    let queued = Arc::new(AtomicUsize::new(0));

    let enqueuers: Vec<_> = (0..2)
        .map(|_| {
            let (item, work, returned, queued) =
                (Arc::clone(&item), Arc::clone(&work), Arc::clone(&returned), Arc::clone(&queued));
            let outcomes = std::sync::Arc::clone(outcomes);
            thread::spawn(move || {
                work.post();
                let queued_now = work_item::enqueue(&item).unwrap();
                outcomes[usize::from(queued_now)]
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                queued.fetch_add(usize::from(queued_now), Ordering::Relaxed);
                returned.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();

    let before = returned.load(Ordering::SeqCst);
    assert_eq!(work_item::flush(&item), Ok(()));
    assert!(work.handled() >= before, "the flush returned before a run saw an earlier enqueue");

    for enqueuer in enqueuers {
        enqueuer.join().unwrap();
    }
    assert_eq!(work_item::flush(&item), Ok(()));
    assert_eq!(work.handled(), 2);
    rig.finish(&["item"]);
    assert_eq!(work.runs(), queued.load(Ordering::Relaxed), "one run per Ok(true)");
}

#[test]
fn two_enqueuing_threads_and_a_flushing_one() {
    let outcomes = std::sync::Arc::new([StdAtomicUsize::new(0), StdAtomicUsize::new(0)]);
    let seen = std::sync::Arc::clone(&outcomes);
    explore("2 enqueuers + 1 flusher", 2, move || concurrent_enqueuers(&seen));
    let [_, coalesced] = &*outcomes;
    assert!(coalesced.load(std::sync::atomic::Ordering::Relaxed) > 0, "never coalesced");
}

/// Section 4, Flush: a flush waits for a re-enqueue chain; a flush from the item's own
/// callback returns `STATUS_POSSIBLE_DEADLOCK` at once, also while the next run of the chain
/// overlaps this one.
fn re_enqueue_chain(bug: Option<Bug>) {
    const ROUNDS: usize = 3;
    let rig = Rig::new(bug);
    let rounds = Arc::new(AtomicUsize::new(0));
    let in_run = Arc::clone(&rounds);
    let item = rig.item("item", move |item, _| {
        if in_run.fetch_add(1, Ordering::Relaxed) + 1 < ROUNDS {
            assert_eq!(work_item::enqueue(item), Ok(true), "the queued flag is cleared first");
        }
        assert_eq!(work_item::flush(item), Err(NtError::POSSIBLE_DEADLOCK));
    });

    assert_eq!(work_item::enqueue(&item), Ok(true));
    assert_eq!(work_item::flush(&item), Ok(()));
    assert_eq!(rounds.load(Ordering::Relaxed), ROUNDS, "the flush returned before the chain ended");
    rig.finish(&["item"]);
}

#[test]
fn flush_waits_for_a_re_enqueue_chain_and_a_self_flush_is_refused() {
    explore("flush waits for a re-enqueue chain", 3, || re_enqueue_chain(None));
}

/// Section 4, Flush: a flush ends at the first idle moment after it started, even if the
/// item is enqueued again at once. Here a second flusher enqueues the item as soon as its
/// own flush returns, and that run waits for the first flush to return: a flush that waited
/// for the item to be idle again would never return.
fn flush_ends_at_the_first_idle_moment(bug: Option<Bug>) {
    let rig = Rig::new(bug);
    let first_flush_returned = Arc::new(Gate::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let (gate, in_run) = (Arc::clone(&first_flush_returned), Arc::clone(&runs));
    let item = rig.item("item", move |item, _| {
        if in_run.fetch_add(1, Ordering::Relaxed) == 0 {
            // The first run returns once both flushes wait for it.
            while item.shared().waiters() < 2 {
                thread::yield_now();
            }
        } else {
            gate.wait();
        }
    });

    assert_eq!(work_item::enqueue(&item), Ok(true));
    let second = {
        let item = Arc::clone(&item);
        thread::spawn(move || {
            assert_eq!(work_item::flush(&item), Ok(()));
            assert_eq!(work_item::enqueue(&item), Ok(true), "the first run has returned");
        })
    };
    assert_eq!(work_item::flush(&item), Ok(()));
    first_flush_returned.open();
    second.join().unwrap();
    rig.finish(&["item"]);
    assert_eq!(runs.load(Ordering::Relaxed), 2);
}

#[test]
fn flush_ends_at_the_first_idle_moment_after_it_started() {
    explore("flush ends at the first idle moment", 3, || flush_ends_at_the_first_idle_moment(None));
}

// ----------------------------------------------------------------------------------------
// Delete.

/// Section 4, Delete: a queued run is not cancelled, the deletion waits for it, then the
/// item is cleaned up; an enqueue racing the deletion either queues a run the deletion waits
/// for too, or fails; afterwards delete and enqueue fail, and flush returns at once.
fn delete_while_queued(bug: Option<Bug>) {
    let rig = Rig::new(bug);
    let item = rig.item("item", |_, _| {});
    assert_eq!(work_item::enqueue(&item), Ok(true));
    let enqueuer = {
        let item = Arc::clone(&item);
        thread::spawn(move || work_item::enqueue(&item))
    };

    assert_eq!(work_item::delete(&item), Ok(()));
    let events = rig.shared.events();
    assert!(events.contains(&Event::Returned("item")), "the queued run was lost: {events:?}");
    assert_eq!(events.last(), Some(&Event::Cleanup("item")), "delete returned before cleanup");
    assert_eq!(work_item::delete(&item), Err(NtError::DELETE_PENDING));
    assert_eq!(work_item::enqueue(&item), Err(NtError::DELETE_PENDING));
    assert_eq!(work_item::flush(&item), Ok(()));

    let raced = enqueuer.join().unwrap();
    assert!(matches!(raced, Ok(_) | Err(NtError::DELETE_PENDING)), "{raced:?}");
    let events = rig.finish(&["item"]);
    let runs = count(&events, Event::Run("item"));
    assert_eq!(runs, 1 + usize::from(raced == Ok(true)), "{events:?}");
}

#[test]
fn delete_while_queued_waits_for_the_run_and_later_calls_fail() {
    explore("delete while queued", 3, || delete_while_queued(None));
}

/// Section 4, Delete: from inside the callback it returns at once (a run it queued just
/// before is not cancelled), and the disposal completes when the last run has returned,
/// with no flush or delete from the driver's side.
fn delete_from_the_callback(bug: Option<Bug>) {
    let rig = Rig::new(bug);
    let runs = Arc::new(AtomicUsize::new(0));
    let successes = Arc::new(AtomicUsize::new(0));
    let (in_run, deletes) = (Arc::clone(&runs), Arc::clone(&successes));
    let item = rig.item("item", move |item, _| {
        if in_run.fetch_add(1, Ordering::Relaxed) == 0 {
            assert_eq!(work_item::enqueue(item), Ok(true));
        }
        // Either run may delete first (they can overlap): the other one's delete fails.
        match work_item::delete(item) {
            Ok(()) => _ = deletes.fetch_add(1, Ordering::Relaxed),
            failed => assert_eq!(failed, Err(NtError::DELETE_PENDING)),
        }
        assert_eq!(work_item::enqueue(item), Err(NtError::DELETE_PENDING));
    });

    assert_eq!(work_item::enqueue(&item), Ok(true));
    assert_eq!(work_item::flush(&item), Ok(()));
    rig.shared.pool().join();
    // Both runs returned (they may have overlapped), then the item was cleaned up.
    assert_eq!(successes.load(Ordering::Relaxed), 1, "one delete succeeded");
    let events = rig.shared.events();
    assert_eq!(count(&events, Event::Returned("item")), 2, "{events:?}");
    assert_eq!(
        events.last(),
        Some(&Event::Cleanup("item")),
        "the disposal did not complete when the last run returned: {events:?}"
    );
    rig.finish(&["item"]);
}

#[test]
fn delete_from_the_callback_returns_at_once_and_the_last_run_disposes() {
    explore("delete from the callback", 3, || delete_from_the_callback(None));
}

/// `delete` at `DISPATCH_LEVEL` returns at once; the disposal follows the queued run, or a
/// worker does it when the item is idle. `flush` is refused there.
fn delete_at_dispatch_level() {
    let rig = Rig::new(None);
    let queued = rig.item("queued", |_, _| {});
    let idle = rig.item("idle", |_, _| {});
    assert_eq!(work_item::enqueue(&queued), Ok(true));
    at_dispatch_level(|| {
        assert_eq!(work_item::flush(&queued), Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL));
        assert_eq!(work_item::delete(&queued), Ok(()));
        assert_eq!(work_item::delete(&idle), Ok(()));
        assert_eq!(work_item::enqueue(&idle), Err(NtError::DELETE_PENDING));
    });
    rig.shared.pool().join();
    let events = rig.shared.events();
    assert!(events.contains(&Event::Cleanup("queued")), "{events:?}");
    assert!(events.contains(&Event::Cleanup("idle")), "{events:?}");
    let events = rig.finish(&["queued", "idle"]);
    assert_eq!(count(&events, Event::Run("queued")), 1);
    assert_eq!(count(&events, Event::Run("idle")), 0);
}

#[test]
fn delete_at_dispatch_level_defers_the_disposal() {
    explore("delete at DISPATCH_LEVEL", 3, delete_at_dispatch_level);
}

// ----------------------------------------------------------------------------------------
// The parent goes away.

/// Section 4, Delete: when the parent is deleted its work items are disposed first, each
/// after its queued or running callback (and the re-enqueue it raced) returned, before the
/// parent's cleanup.
fn parent_removal() {
    let rig = Rig::new(None);
    let runs = Arc::new(AtomicUsize::new(0));
    let in_run = Arc::clone(&runs);
    let a = rig.item("a", move |item, _| {
        if in_run.fetch_add(1, Ordering::Relaxed) == 0 {
            let again = work_item::enqueue(item);
            assert!(matches!(again, Ok(true) | Err(NtError::DELETE_PENDING)), "{again:?}");
        }
    });
    let b = rig.item("b", |_, _| {});
    assert_eq!(work_item::enqueue(&a), Ok(true));

    RawObject::delete(&rig.device);
    let events = rig.shared.events();
    assert!(events.contains(&Event::Run("a")), "the queued run was lost: {events:?}");
    assert_eq!(
        events[events.len() - 3..],
        [Event::Cleanup("a"), Event::Cleanup("b"), Event::Cleanup("device")]
    );
    for item in [&a, &b] {
        assert_eq!(work_item::enqueue(item), Err(NtError::DELETE_PENDING));
        assert_eq!(work_item::delete(item), Err(NtError::DELETE_PENDING));
        assert_eq!(work_item::flush(item), Ok(()));
    }
    rig.finish(&["a", "b"]);
}

#[test]
fn parent_removal_disposes_the_item_after_its_run_and_before_the_parent() {
    explore("parent removal", 3, parent_removal);
}

/// The parent's removal racing the item's deletion from its own callback: whichever starts
/// the item's disposal, the other waits for it (or fails), and the order holds.
fn parent_removal_racing_a_self_delete(bug: Option<Bug>) {
    let rig = Rig::new(bug);
    let item = rig.item("item", |item, _| {
        let deleted = work_item::delete(item);
        assert!(matches!(deleted, Ok(()) | Err(NtError::DELETE_PENDING)), "{deleted:?}");
    });
    assert_eq!(work_item::enqueue(&item), Ok(true));
    RawObject::delete(&rig.device);
    let events = rig.shared.events();
    assert_eq!(
        events,
        [
            Event::Run("item"),
            Event::Returned("item"),
            Event::Cleanup("item"),
            Event::Cleanup("device")
        ],
        "the removal did not dispose the item before the device"
    );
    rig.finish(&["item"]);
}

/// Section 4, Delete, when the parent is removed from inside the item's callback (a test can
/// do it on the host): the removal cannot wait for that run, but it waits for the runs other
/// threads have started, so no run starts after the item's cleanup and only the remover's
/// own callback returns after it.
fn parent_removal_from_the_callback(bug: Option<Bug>) {
    let rig = Rig::new(bug);
    let device = Arc::clone(&rig.device);
    let runs = Arc::new(AtomicUsize::new(0));
    let item = rig.item("item", move |item, _| {
        if runs.fetch_add(1, Ordering::Relaxed) == 0 {
            assert_eq!(work_item::enqueue(item), Ok(true));
            RawObject::delete(&device);
        }
    });
    assert_eq!(work_item::enqueue(&item), Ok(true));
    rig.shared.pool().join();
    let events = rig.shared.events();
    let cleanup = position_once(&events, Event::Cleanup("item"));
    assert!(
        !events[cleanup..].contains(&Event::Run("item")),
        "a run started after the item's cleanup: {events:?}"
    );
    assert_eq!(
        count(&events[cleanup..], Event::Returned("item")),
        1,
        "a run other than the remover's returned after the item's cleanup: {events:?}"
    );
    assert!(cleanup < position_once(&events, Event::Cleanup("device")), "{events:?}");
    rig.finish(&[]);
}

#[test]
fn parent_removal_from_the_callback_waits_for_the_other_runs() {
    explore("parent removal from the callback", 3, || parent_removal_from_the_callback(None));
}

#[test]
fn parent_removal_racing_the_items_delete_from_its_callback() {
    explore("parent removal racing a self-delete", 3, || parent_removal_racing_a_self_delete(None));
}

// ----------------------------------------------------------------------------------------
// The checks catch broken variants of the model.

#[test]
fn a_flush_ignoring_the_idle_epoch_is_caught() {
    must_fail("a_flush_ignoring_the_idle_epoch_is_caught", "deadlock", || {
        explore("broken: flush ignores idle_epoch", 3, || {
            flush_ends_at_the_first_idle_moment(Some(Bug::FlushIgnoresIdleEpoch));
        });
    });
}

#[test]
fn a_rundown_that_does_not_wait_is_caught() {
    must_fail("a_rundown_that_does_not_wait_is_caught", "the queued run was lost", || {
        explore("broken: rundown does not wait", 3, || {
            delete_while_queued(Some(Bug::RundownDoesNotWait));
        });
    });
}

#[test]
fn a_single_runner_per_item_is_caught() {
    must_fail("a_single_runner_per_item_is_caught", "deadlock", || {
        explore("broken: one runner per item", 3, || re_enqueue_chain(Some(Bug::SingleRunner)));
    });
}

#[test]
fn a_forgotten_deferred_disposal_is_caught() {
    must_fail("a_forgotten_deferred_disposal_is_caught", "the disposal did not complete", || {
        explore("broken: dispose_when_idle ignored", 3, || {
            delete_from_the_callback(Some(Bug::NoDisposeWhenIdle));
        });
    });
}

#[test]
fn a_delete_that_does_not_wait_for_another_threads_disposal_is_caught() {
    must_fail(
        "a_delete_that_does_not_wait_for_another_threads_disposal_is_caught",
        "the removal did not dispose the item before the device",
        || {
            explore("broken: delete does not wait for another disposal", 3, || {
                parent_removal_racing_a_self_delete(Some(Bug::DeleteDoesNotWaitForDisposal));
            });
        },
    );
}

#[test]
fn a_rundown_inside_the_callback_ignoring_other_runs_is_caught() {
    must_fail(
        "a_rundown_inside_the_callback_ignoring_other_runs_is_caught",
        "after the item's cleanup",
        || {
            explore("broken: rundown inside the callback ignores other runs", 3, || {
                parent_removal_from_the_callback(Some(Bug::RundownIgnoresOtherRuns));
            });
        },
    );
}
