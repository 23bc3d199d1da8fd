//! The host's work items checked with [loom](https://docs.rs/loom) on the code that ships:
//! every interleaving of each scenario's threads, up to a preemption bound, against the
//! rules of docs/kmdf-behaviour.md section 4.
//!
//! Built with `RUSTFLAGS="--cfg loom"`, the host runtime runs on loom's mutexes, condition
//! variables, atomics, threads and thread-locals (`src/host/sync_shim.rs`): the scenarios
//! below drive the real `Runtime`, a real driver, device and work items through the public
//! API, on the runtime's own worker pool (two workers under loom). Run it with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --target-dir target/loom --test loom_work_item
//! ```
//!
//! Each scenario is a `loom::model::Builder` with an explicit preemption bound (raise it with
//! `LOOM_MAX_PREEMPTIONS` for a deeper local run) and prints how many executions loom
//! explored (`-- --nocapture`). loom allows five threads, the main one and the pool's two
//! workers included, which bounds the scenarios.
//!
//! The checks are themselves tested: each deliberately broken variant of the runtime (a
//! `Mutant` of `src/host/sync_shim.rs`, switched on by `KMDF_LOOM_MUTANT` in a child
//! process) must be caught by its scenario.

#![cfg(loom)]

use std::cell::RefCell;
use std::panic;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::{Arc, OnceLock, PoisonError, Weak};

use kmdf::host::{DeviceNode, LoadedDriver, Runtime};
use kmdf::object::ObjectRef;
use kmdf::sync::SpinLock;
use kmdf::{
    Device, DeviceInit, Driver, Enqueued, NtError, PnpPowerCallbacks, Result, WorkItem,
    WorkItemCallbacks,
};
use loom::sync::Mutex;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// What the driver's callbacks did, in the order the interleaving ran them. Kept under a
/// loom mutex: loom only tries both orders of two threads' steps when it sees them touch
/// the same loom object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// A callback run of the named item started.
    Run(&'static str),
    /// That run's callback returned.
    Returned(&'static str),
    /// The named object's cleanup callback ran.
    Cleanup(&'static str),
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Event>>>);

impl Log {
    fn push(&self, event: Event) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(event);
    }

    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

// ----------------------------------------------------------------------------------------
// The driver: one device, whose `device_add` creates the scenario's work items.

struct Dev {
    log: Log,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Dev {
        fn cleanup(&self, _device: &Device<Self>) {
            self.log.push(Event::Cleanup("device"));
        }
    }
}

type Body = Box<dyn Fn(&WorkItem<Job>) + Send + Sync>;

struct Job {
    name: &'static str,
    log: Log,
    body: Body,
}

kmdf::vtable! {
    impl WorkItemCallbacks for Job {
        type Parent = Device<Dev>;

        fn run(&self, item: &WorkItem<Self>, _device: &Device<Dev>) {
            self.log.push(Event::Run(self.name));
            (self.body)(item);
            self.log.push(Event::Returned(self.name));
        }

        fn cleanup(&self, _item: &WorkItem<Self>) {
            self.log.push(Event::Cleanup(self.name));
        }
    }
}

type Items = Vec<(&'static str, Body)>;

std::thread_local! {
    /// The items the device being added creates: `add_device` runs `device_add` on the
    /// calling thread (loom runs every model thread on this OS thread).
    static SETUP: RefCell<Option<(Log, Items)>> = const { RefCell::new(None) };
    static CREATED: RefCell<Vec<ObjectRef<WorkItem<Job>>>> = const { RefCell::new(Vec::new()) };
}

struct TestDriver;

impl Driver for TestDriver {
    fn driver_entry() -> Result<Self> {
        Ok(TestDriver)
    }

    fn device_add(&self, init: DeviceInit<'_>) -> Result {
        let (log, items) = SETUP.with(|setup| setup.borrow_mut().take()).expect("a setup");
        let device = init.create(Dev { log: log.clone() })?;
        for (name, body) in items {
            let item = WorkItem::create(device, Job { name, log: log.clone(), body })?;
            CREATED.with(|created| created.borrow_mut().push(item));
        }
        Ok(())
    }
}

/// One runtime with one device, the parent of the scenario's work items.
struct Rig {
    runtime: Arc<Runtime>,
    driver: LoadedDriver<TestDriver>,
    node: Arc<OnceLock<DeviceNode>>,
    log: Log,
}

impl Rig {
    /// A device whose items are `items`; each body gets the item and the rig's parts it
    /// needs through what it captured.
    fn new(items: Items) -> (Self, Vec<ObjectRef<WorkItem<Job>>>) {
        let log = Log::default();
        SETUP.with(|setup| *setup.borrow_mut() = Some((log.clone(), items)));
        let runtime = Arc::new(Runtime::new());
        let driver = runtime.load::<TestDriver>().unwrap();
        let node = Arc::new(OnceLock::new());
        assert!(node.set(driver.add_device().unwrap()).is_ok());
        let created = CREATED.with(|created| std::mem::take(&mut *created.borrow_mut()));
        (Self { runtime, driver, node, log }, created)
    }

    fn node(&self) -> &DeviceNode {
        self.node.get().expect("added")
    }

    /// Waits for every queued or running run (and the work it handed on).
    fn settle(&self) {
        self.runtime.wait_for_work_items().expect("no callback panicked");
    }

    /// Ends the scenario: waits for the work, removes the device (a no-op if the scenario
    /// removed it), checks the rules every scenario obeys, and stops the runtime (its
    /// workers end: loom wants every thread finished). Returns the log.
    fn finish(self, items: Vec<ObjectRef<WorkItem<Job>>>, names: &[&'static str]) -> Vec<Event> {
        self.settle();
        if !self.node().is_removed() {
            self.node().remove().unwrap();
        }
        self.settle();
        assert_eq!(self.runtime.work_item_waiters(), 0, "a thread is still waiting");
        assert!(self.runtime.take_panics().is_empty(), "a callback panicked");
        let events = self.log.events();
        check_disposal(&events, names);
        drop(items);
        let Rig { runtime, driver, node, .. } = self;
        drop(node);
        drop(driver);
        drop(Arc::into_inner(runtime).expect("the scenario's threads let the runtime go"));
        events
    }
}

fn body(run: impl Fn(&WorkItem<Job>) + Send + Sync + 'static) -> Body {
    Box::new(run)
}

/// Where `event` is in the log; it must be there exactly once.
fn position_once(events: &[Event], event: Event) -> usize {
    let found: Vec<usize> = (0..events.len()).filter(|&i| events[i] == event).collect();
    assert_eq!(found.len(), 1, "{event:?} is in the log {} times: {events:?}", found.len());
    found[0]
}

/// Section 4, Delete: each item is cleaned up once, after every run of its callback has
/// returned (so no run starts after its cleanup), and before its parent's cleanup.
fn check_disposal(events: &[Event], items: &[&'static str]) {
    let parent_cleanup = position_once(events, Event::Cleanup("device"));
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
    let iterations = Arc::new(StdAtomicUsize::new(0));
    let counter = Arc::clone(&iterations);
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

/// Names the runtime's broken variant in the child process that runs it.
const MUTANT: &str = "KMDF_LOOM_MUTANT";

/// Checks that loom finds the bug of the runtime's broken variant `mutant` (a
/// `sync_shim::Mutant`, by name) in `scenario`, and that its report contains `expected`.
///
/// The variant runs in a child process, this test binary running only `test`: once loom
/// reports a deadlock, the unwinding threads touch loom's state again and the process
/// aborts, so the failure cannot be caught in this process.
fn must_fail(
    test: &str,
    mutant: &str,
    expected: &str,
    scenario: impl Fn() + Sync + Send + 'static,
) {
    if std::env::var_os(MUTANT).is_some() {
        let default_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let executions = EXECUTIONS.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!("loom: caught in execution {executions}");
            default_hook(info);
        }));
        explore(&format!("broken: {mutant}"), 3, scenario);
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(MUTANT, mutant)
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
    opened: loom::sync::Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
}

// ----------------------------------------------------------------------------------------
// Enqueue and flush.

/// Section 4, Enqueue and Flush, on one thread: an enqueue while queued returns `AlreadyQueued`
/// and queues nothing; the flush returns after a run that saw both enqueues' work.
fn coalesce(outcomes: &Arc<[StdAtomicUsize; 2]>) {
    let work = Arc::new(Work::default());
    let in_run = Arc::clone(&work);
    let (rig, items) = Rig::new(vec![("item", body(move |_| in_run.run()))]);
    let item = &items[0];

    work.post();
    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    work.post();
    let second = item.enqueue().unwrap() == Enqueued::Queued;
    outcomes[usize::from(second)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(item.flush(), Ok(()));
    assert_eq!(work.handled(), 2, "the flush returned before a run saw every enqueue's work");

    let events = rig.finish(items, &["item"]);
    assert_eq!(work.runs(), 1 + usize::from(second), "one run per Queued, none per AlreadyQueued");
    assert_eq!(count(&events, Event::Run("item")), work.runs());
}

#[test]
fn enqueue_while_queued_coalesces_and_flush_waits_for_the_run() {
    let outcomes = Arc::new([StdAtomicUsize::new(0), StdAtomicUsize::new(0)]);
    let seen = Arc::clone(&outcomes);
    explore("enqueue coalesces, flush sees every enqueue", 3, move || coalesce(&seen));
    let [queued, coalesced] = &*outcomes;
    assert!(coalesced.load(std::sync::atomic::Ordering::Relaxed) > 0, "never coalesced");
    assert!(queued.load(std::sync::atomic::Ordering::Relaxed) > 0, "never queued twice");
}

/// Section 4, Enqueue and Flush, with two enqueuing threads and a flushing one: whatever was
/// posted before an enqueue that returned (`Queued` or `AlreadyQueued`) before the flush
/// started has been handled by a run that returned before the flush returns.
fn concurrent_enqueuers(outcomes: &Arc<[StdAtomicUsize; 2]>) {
    let work = Arc::new(Work::default());
    let in_run = Arc::clone(&work);
    let (rig, items) = Rig::new(vec![("item", body(move |_| in_run.run()))]);
    let returned = Arc::new(AtomicUsize::new(0));
    let queued = Arc::new(AtomicUsize::new(0));

    let enqueuers: Vec<_> = (0..2)
        .map(|_| {
            let (item, work, returned, queued) =
                (items[0].clone(), Arc::clone(&work), Arc::clone(&returned), Arc::clone(&queued));
            let outcomes = Arc::clone(outcomes);
            thread::spawn(move || {
                work.post();
                let queued_now = item.enqueue().unwrap() == Enqueued::Queued;
                outcomes[usize::from(queued_now)]
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                queued.fetch_add(usize::from(queued_now), Ordering::Relaxed);
                returned.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();

    let before = returned.load(Ordering::SeqCst);
    assert_eq!(items[0].flush(), Ok(()));
    assert!(work.handled() >= before, "the flush returned before a run saw an earlier enqueue");

    for enqueuer in enqueuers {
        enqueuer.join().unwrap();
    }
    assert_eq!(items[0].flush(), Ok(()));
    assert_eq!(work.handled(), 2);
    rig.finish(items, &["item"]);
    assert_eq!(work.runs(), queued.load(Ordering::Relaxed), "one run per Queued");
}

#[test]
fn two_enqueuing_threads_and_a_flushing_one() {
    let outcomes = Arc::new([StdAtomicUsize::new(0), StdAtomicUsize::new(0)]);
    let seen = Arc::clone(&outcomes);
    explore("2 enqueuers + 1 flusher", 2, move || concurrent_enqueuers(&seen));
    let [_, coalesced] = &*outcomes;
    assert!(coalesced.load(std::sync::atomic::Ordering::Relaxed) > 0, "never coalesced");
}

/// Section 4, Flush: a flush waits for a re-enqueue chain; a flush from the item's own
/// callback returns `STATUS_POSSIBLE_DEADLOCK` at once, also while the next run of the chain
/// overlaps this one.
fn re_enqueue_chain() {
    const ROUNDS: usize = 3;
    let rounds = Arc::new(AtomicUsize::new(0));
    let in_run = Arc::clone(&rounds);
    let (rig, items) = Rig::new(vec![(
        "item",
        body(move |item| {
            if in_run.fetch_add(1, Ordering::Relaxed) + 1 < ROUNDS {
                assert_eq!(
                    item.enqueue(),
                    Ok(Enqueued::Queued),
                    "the queued flag is cleared first"
                );
            }
            assert_eq!(item.flush(), Err(NtError::POSSIBLE_DEADLOCK));
        }),
    )]);
    let item = &items[0];
    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    assert_eq!(item.flush(), Ok(()));
    assert_eq!(rounds.load(Ordering::Relaxed), ROUNDS, "the flush returned before the chain ended");
    rig.finish(items, &["item"]);
}

#[test]
fn flush_waits_for_a_re_enqueue_chain_and_a_self_flush_is_refused() {
    explore("flush waits for a re-enqueue chain", 3, re_enqueue_chain);
}

/// Section 4, Flush: a flush ends at the first idle moment after it started, even if the
/// item is enqueued again at once. Here a second flusher enqueues the item as soon as its
/// own flush returns, and that run waits for the first flush to return: a flush that waited
/// for the item to be idle again would never return.
fn flush_ends_at_the_first_idle_moment() {
    let first_flush_returned = Arc::new(Gate::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let runtime: Arc<OnceLock<Weak<Runtime>>> = Arc::new(OnceLock::new());
    let (gate, in_run, in_run_runtime) =
        (Arc::clone(&first_flush_returned), Arc::clone(&runs), Arc::clone(&runtime));
    let (rig, items) = Rig::new(vec![(
        "item",
        body(move |_| {
            if in_run.fetch_add(1, Ordering::Relaxed) == 0 {
                // The first run returns once both flushes wait for it.
                let runtime = in_run_runtime.get().and_then(Weak::upgrade).expect("running");
                while runtime.work_item_waiters() < 2 {
                    thread::yield_now();
                }
            } else {
                gate.wait();
            }
        }),
    )]);
    assert!(runtime.set(Arc::downgrade(&rig.runtime)).is_ok());
    let item = items[0].clone();
    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    let second = thread::spawn(move || {
        assert_eq!(item.flush(), Ok(()));
        assert_eq!(item.enqueue(), Ok(Enqueued::Queued), "the first run has returned");
    });
    assert_eq!(items[0].flush(), Ok(()));
    first_flush_returned.open();
    second.join().unwrap();
    rig.finish(items, &["item"]);
    assert_eq!(runs.load(Ordering::Relaxed), 2);
}

#[test]
fn flush_ends_at_the_first_idle_moment_after_it_started() {
    explore("flush ends at the first idle moment", 2, flush_ends_at_the_first_idle_moment);
}

// ----------------------------------------------------------------------------------------
// Delete.

/// Section 4, Delete: a queued run is not cancelled, the deletion waits for it, then the
/// item is cleaned up; an enqueue racing the deletion either queues a run the deletion waits
/// for too, or fails; afterwards delete and enqueue fail, and flush returns at once.
fn delete_while_queued() {
    let (rig, items) = Rig::new(vec![("item", body(|_| {}))]);
    let item = &items[0];
    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    let enqueuer = {
        let item = item.clone();
        thread::spawn(move || item.enqueue())
    };

    assert_eq!(item.delete(), Ok(()));
    let events = rig.log.events();
    assert!(events.contains(&Event::Returned("item")), "the queued run was lost: {events:?}");
    assert_eq!(events.last(), Some(&Event::Cleanup("item")), "delete returned before cleanup");
    assert_eq!(item.delete(), Err(NtError::DELETE_PENDING));
    assert_eq!(item.enqueue(), Err(NtError::DELETE_PENDING));
    assert_eq!(item.flush(), Ok(()));

    let raced = enqueuer.join().unwrap();
    assert!(matches!(raced, Ok(_) | Err(NtError::DELETE_PENDING)), "{raced:?}");
    let events = rig.finish(items, &["item"]);
    let runs = count(&events, Event::Run("item"));
    assert_eq!(runs, 1 + usize::from(raced == Ok(Enqueued::Queued)), "{events:?}");
}

#[test]
fn delete_while_queued_waits_for_the_run_and_later_calls_fail() {
    explore("delete while queued", 3, delete_while_queued);
}

/// Section 4, Delete: from inside the callback it returns at once (a run it queued just
/// before is not cancelled), and the disposal completes when the last run has returned,
/// with no flush or delete from the driver's side.
fn delete_from_the_callback() {
    let runs = Arc::new(AtomicUsize::new(0));
    let successes = Arc::new(AtomicUsize::new(0));
    let (in_run, deletes) = (Arc::clone(&runs), Arc::clone(&successes));
    let (rig, items) = Rig::new(vec![(
        "item",
        body(move |item| {
            if in_run.fetch_add(1, Ordering::Relaxed) == 0 {
                assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
            }
            // Either run may delete first (they can overlap): the other one's delete fails.
            match item.delete() {
                Ok(()) => _ = deletes.fetch_add(1, Ordering::Relaxed),
                failed => assert_eq!(failed, Err(NtError::DELETE_PENDING)),
            }
            assert_eq!(item.enqueue(), Err(NtError::DELETE_PENDING));
        }),
    )]);
    let item = &items[0];
    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    assert_eq!(item.flush(), Ok(()));
    rig.settle();
    // Both runs returned (they may have overlapped), then the item was cleaned up.
    assert_eq!(successes.load(Ordering::Relaxed), 1, "one delete succeeded");
    let events = rig.log.events();
    assert_eq!(count(&events, Event::Returned("item")), 2, "{events:?}");
    assert_eq!(
        events.last(),
        Some(&Event::Cleanup("item")),
        "the disposal did not complete when the last run returned: {events:?}"
    );
    rig.finish(items, &["item"]);
}

#[test]
fn delete_from_the_callback_returns_at_once_and_the_last_run_disposes() {
    explore("delete from the callback", 3, delete_from_the_callback);
}

/// `delete` at `DISPATCH_LEVEL` (a spin lock held) returns at once; the disposal follows
/// the queued run, or a worker does it when the item is idle. `flush` is refused there.
fn delete_at_dispatch_level() {
    let (rig, items) = Rig::new(vec![("queued", body(|_| {})), ("idle", body(|_| {}))]);
    let (queued, idle) = (&items[0], &items[1]);
    assert_eq!(queued.enqueue(), Ok(Enqueued::Queued));
    let lock = SpinLock::new(()).unwrap();
    {
        let _dispatch = lock.lock();
        assert_eq!(queued.flush(), Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL));
        assert_eq!(queued.delete(), Ok(()));
        assert_eq!(idle.delete(), Ok(()));
        assert_eq!(idle.enqueue(), Err(NtError::DELETE_PENDING));
    }
    rig.settle();
    let events = rig.log.events();
    assert!(events.contains(&Event::Cleanup("queued")), "{events:?}");
    assert!(events.contains(&Event::Cleanup("idle")), "{events:?}");
    let events = rig.finish(items, &["queued", "idle"]);
    assert_eq!(count(&events, Event::Run("queued")), 1);
    assert_eq!(count(&events, Event::Run("idle")), 0);
}

#[test]
fn delete_at_dispatch_level_defers_the_disposal() {
    explore("delete at DISPATCH_LEVEL", 3, delete_at_dispatch_level);
}

// ----------------------------------------------------------------------------------------
// The parent goes away.

/// Section 4, Delete: when the device is removed its work items are disposed first, each
/// after its queued or running callback (and the re-enqueue it raced) returned, before the
/// device's cleanup.
fn parent_removal() {
    let runs = Arc::new(AtomicUsize::new(0));
    let in_run = Arc::clone(&runs);
    let (rig, items) = Rig::new(vec![
        (
            "a",
            body(move |item| {
                if in_run.fetch_add(1, Ordering::Relaxed) == 0 {
                    let again = item.enqueue();
                    assert!(
                        matches!(again, Ok(Enqueued::Queued) | Err(NtError::DELETE_PENDING)),
                        "{again:?}"
                    );
                }
            }),
        ),
        ("b", body(|_| {})),
    ]);
    assert_eq!(items[0].enqueue(), Ok(Enqueued::Queued));

    rig.node().remove().unwrap();
    let events = rig.log.events();
    assert!(events.contains(&Event::Run("a")), "the queued run was lost: {events:?}");
    assert_eq!(
        events[events.len() - 3..],
        [Event::Cleanup("a"), Event::Cleanup("b"), Event::Cleanup("device")]
    );
    for item in &items {
        assert_eq!(item.enqueue(), Err(NtError::DELETE_PENDING));
        assert_eq!(item.delete(), Err(NtError::DELETE_PENDING));
        assert_eq!(item.flush(), Ok(()));
    }
    rig.finish(items, &["a", "b"]);
}

#[test]
fn parent_removal_disposes_the_item_after_its_run_and_before_the_parent() {
    explore("parent removal", 3, parent_removal);
}

/// The device's removal racing the item's deletion from its own callback: whichever starts
/// the item's disposal, the other waits for it (or fails), and the order holds.
fn parent_removal_racing_a_self_delete() {
    let (rig, items) = Rig::new(vec![(
        "item",
        body(|item| {
            let deleted = item.delete();
            assert!(matches!(deleted, Ok(()) | Err(NtError::DELETE_PENDING)), "{deleted:?}");
        }),
    )]);
    assert_eq!(items[0].enqueue(), Ok(Enqueued::Queued));
    rig.node().remove().unwrap();
    let events = rig.log.events();
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
    rig.finish(items, &["item"]);
}

#[test]
fn parent_removal_racing_the_items_delete_from_its_callback() {
    explore("parent removal racing a self-delete", 3, parent_removal_racing_a_self_delete);
}

/// Section 4, Delete, when the device is removed from inside the item's callback (a test
/// can do it on the host): the removal cannot wait for that run, but it waits for the runs
/// other threads have started, so no run starts after the item's cleanup and only the
/// remover's own callback returns after it.
fn parent_removal_from_the_callback() {
    let runs = Arc::new(AtomicUsize::new(0));
    let node: Arc<OnceLock<Weak<OnceLock<DeviceNode>>>> = Arc::new(OnceLock::new());
    let in_run_node = Arc::clone(&node);
    let (rig, items) = Rig::new(vec![(
        "item",
        body(move |item| {
            if runs.fetch_add(1, Ordering::Relaxed) == 0 {
                assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
                let node = in_run_node.get().and_then(Weak::upgrade).expect("the rig is alive");
                node.get().expect("added").remove().unwrap();
            }
        }),
    )]);
    assert!(node.set(Arc::downgrade(&rig.node)).is_ok());
    assert_eq!(items[0].enqueue(), Ok(Enqueued::Queued));
    rig.settle();
    let events = rig.log.events();
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
    rig.finish(items, &[]);
}

#[test]
fn parent_removal_from_the_callback_waits_for_the_other_runs() {
    explore("parent removal from the callback", 3, parent_removal_from_the_callback);
}

// ----------------------------------------------------------------------------------------
// The checks catch broken variants of the runtime.

#[test]
fn a_flush_ignoring_the_idle_epoch_is_caught() {
    must_fail(
        "a_flush_ignoring_the_idle_epoch_is_caught",
        "FlushIgnoresIdleEpoch",
        "deadlock",
        flush_ends_at_the_first_idle_moment,
    );
}

#[test]
fn a_rundown_that_does_not_wait_is_caught() {
    must_fail(
        "a_rundown_that_does_not_wait_is_caught",
        "RundownDoesNotWait",
        "the queued run was lost",
        delete_while_queued,
    );
}

#[test]
fn a_single_runner_per_item_is_caught() {
    must_fail("a_single_runner_per_item_is_caught", "SingleRunner", "deadlock", re_enqueue_chain);
}

#[test]
fn a_forgotten_deferred_disposal_is_caught() {
    must_fail(
        "a_forgotten_deferred_disposal_is_caught",
        "NoDisposeWhenIdle",
        "the disposal did not complete",
        delete_from_the_callback,
    );
}

#[test]
fn a_delete_that_does_not_wait_for_another_threads_disposal_is_caught() {
    must_fail(
        "a_delete_that_does_not_wait_for_another_threads_disposal_is_caught",
        "DeleteDoesNotWaitForDisposal",
        "the removal did not dispose the item before the device",
        parent_removal_racing_a_self_delete,
    );
}

#[test]
fn a_rundown_inside_the_callback_ignoring_other_runs_is_caught() {
    must_fail(
        "a_rundown_inside_the_callback_ignoring_other_runs_is_caught",
        "RundownIgnoresOtherRuns",
        "after the item's cleanup",
        parent_removal_from_the_callback,
    );
}
