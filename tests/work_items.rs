//! Work items on the host runtime: every rule of docs/kmdf-behaviour.md section 4, on real
//! worker threads.
//!
//! Interleavings are built with channels and with the runtime's two test aids,
//! `Runtime::hold_workers` (queued runs stay queued) and `Runtime::work_item_waiters` (a
//! thread has reached a flush or deletion wait), never with sleeps. Every wait is bounded
//! by `TIMEOUT`, only so that a bug fails the test instead of hanging it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use kmdf::Enqueued;
use kmdf::host::{DeviceNode, ObjectKind};
use kmdf::object::ObjectRef;
use kmdf::sync::{Irql, SpinLock, current_irql};
use kmdf::{
    Callback, Device, DeviceInit, Driver, NtError, PnpPowerCallbacks, Result, WorkItem,
    WorkItemCallbacks,
};

/// The hang guard: far longer than any of these tests takes.
const TIMEOUT: Duration = Duration::from_secs(20);

// ----------------------------------------------------------------------------------------
// The test driver: one device, whose `device_add` runs the test's setup.

/// What happened, in order, across threads.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, event: impl Into<String>) {
        self.0.lock().unwrap().push(event.into());
    }

    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

type CleanupHook = Box<dyn FnOnce(&Device<Dev>) + Send>;

/// The device context.
struct Dev {
    log: Log,
    /// Runs in the device's cleanup callback, when set.
    on_cleanup: Mutex<Option<CleanupHook>>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Dev {
        fn cleanup(&self, device: &Device<Self>) {
            self.log.push("device cleanup");
            if let Some(hook) = self.on_cleanup.lock().unwrap().take() {
                hook(device);
            }
        }
    }
}

type Body = Box<dyn Fn(&WorkItem<Job>, &Device<Dev>) + Send + Sync>;

/// A work item's context: a name, the test's log, and what its run does.
struct Job {
    name: &'static str,
    log: Log,
    body: Body,
    drops: Arc<AtomicUsize>,
}

impl Drop for Job {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

kmdf::vtable! {
    impl WorkItemCallbacks for Job {
        type Parent = Device<Dev>;

        fn run(&self, item: &WorkItem<Self>, device: &Device<Dev>) {
            (self.body)(item, device);
            self.log.push(format!("{} ran", self.name));
        }

        fn cleanup(&self, _item: &WorkItem<Self>) {
            self.log.push(format!("{} cleanup", self.name));
        }
    }
}

type Setup = Box<dyn FnOnce(&Device<Dev>) -> Result<Vec<ObjectRef<WorkItem<Job>>>> + Send>;

/// The test driver. Its value, built by the test, carries the test's log and the setup its
/// `device_add` runs.
struct TestDriver {
    log: Log,
    setup: Mutex<Option<Setup>>,
    /// The items the setup created, until the test takes them.
    created: Mutex<Vec<ObjectRef<WorkItem<Job>>>>,
}

impl Driver for TestDriver {
    fn driver_entry() -> Result<Self> {
        Ok(TestDriver { log: Log::default(), setup: Mutex::default(), created: Mutex::default() })
    }

    fn device_add(&self, init: DeviceInit<'_>) -> Result {
        let device = init.create(Dev { log: self.log.clone(), on_cleanup: Mutex::new(None) })?;
        if let Some(setup) = self.setup.lock().unwrap().take() {
            let items = setup(device)?;
            self.created.lock().unwrap().extend(items);
        }
        Ok(())
    }
}

/// A runtime with the test driver loaded and its device added.
type Rig = common::Rig<TestDriver>;

/// A runtime with one device, after `setup` ran in its `device_add`; returns the items
/// `setup` created.
fn start(
    log: &Log,
    setup: impl FnOnce(&Device<Dev>) -> Result<Vec<ObjectRef<WorkItem<Job>>>> + Send + 'static,
) -> (Rig, DeviceNode, Vec<ObjectRef<WorkItem<Job>>>) {
    let rig = Rig::with(TestDriver {
        log: log.clone(),
        setup: Mutex::new(Some(Box::new(setup))),
        created: Mutex::default(),
    });
    let items = rig.driver_value(|driver| std::mem::take(&mut *driver.created.lock().unwrap()));
    let node = rig.node.clone();
    (rig, node, items)
}

/// A work item named `name` whose run does `body`.
fn job(
    device: &Device<Dev>,
    name: &'static str,
    log: &Log,
    drops: &Arc<AtomicUsize>,
    body: impl Fn(&WorkItem<Job>, &Device<Dev>) + Send + Sync + 'static,
) -> Result<ObjectRef<WorkItem<Job>>> {
    WorkItem::create(
        device,
        Job { name, log: log.clone(), body: Box::new(body), drops: Arc::clone(drops) },
    )
}

/// A runtime with one device and one work item whose run does `body`.
fn one_item(
    log: &Log,
    body: impl Fn(&WorkItem<Job>, &Device<Dev>) + Send + Sync + 'static,
) -> (Rig, DeviceNode, ObjectRef<WorkItem<Job>>, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let (log2, drops2) = (log.clone(), Arc::clone(&drops));
    let (runtime, node, mut items) =
        start(log, move |device| Ok(vec![job(device, "item", &log2, &drops2, body)?]));
    let item = items.pop().unwrap();
    (runtime, node, item, drops)
}

/// Waits until `condition` holds, failing the test after `TIMEOUT`.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::yield_now();
    }
}

/// Waits until `count` contexts were dropped, and checks none more is.
///
/// The last reference may be a worker's, released an instant after the run that the test
/// waited for (KMDF's worker also holds the item until its handler has returned).
fn dropped_once(drops: &AtomicUsize, count: usize) {
    wait_until("the contexts are dropped", || drops.load(Ordering::SeqCst) >= count);
    assert_eq!(drops.load(Ordering::SeqCst), count);
}

fn recv<T>(receiver: &Receiver<T>, what: &str) -> T {
    receiver.recv_timeout(TIMEOUT).unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A run that says it started, then waits for the test to let it go.
fn blocking_body(
    started: Sender<()>,
    go: Receiver<()>,
) -> impl Fn(&WorkItem<Job>, &Device<Dev>) + Send + Sync + 'static {
    let go = Mutex::new(go);
    move |_, _| {
        started.send(()).unwrap();
        recv(&go.lock().unwrap(), "the test to release the run");
    }
}

// ----------------------------------------------------------------------------------------
// Creation and running.

#[test]
fn a_run_gets_its_context_and_parent_at_passive_level_on_a_worker_thread() {
    // docs/kmdf-behaviour.md section 4: GetParentObject returns exactly the parent given at
    // creation; EvtWorkItem runs at PASSIVE_LEVEL on a system worker thread.
    let log = Log::default();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let (runtime, node, item, _) = one_item(&log, move |item, device| {
        let seen = (
            std::ptr::from_ref(device.context()) as usize,
            item.context().name,
            current_irql(),
            thread::current().name().map(str::to_owned),
        );
        tx.lock().unwrap().send(seen).unwrap();
    });
    let test_thread = thread::current().name().map(str::to_owned);

    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    let (parent, name, irql, thread_name) = recv(&rx, "the run");
    let device = node.with_context(|dev: &Dev| std::ptr::from_ref(dev) as usize).unwrap();
    assert_eq!(parent, device, "the parent is the device the item was created with");
    assert_eq!(name, "item");
    assert_eq!(irql, Irql::Passive);
    assert_ne!(thread_name, test_thread);
    assert!(thread_name.unwrap().starts_with("kmdf-worker-"));

    item.flush().unwrap();
    assert_eq!(node.trace().lines(), ["EvtDriverDeviceAdd", "EvtWorkItem"]);
    assert!(runtime.panics().is_empty());
}

#[test]
fn creating_under_a_parent_being_deleted_fails_and_drops_the_context() {
    // docs/kmdf-behaviour.md section 4 (the work item is a child of its parent) and section 5:
    // an object being deleted takes no new children (STATUS_DELETE_PENDING).
    let log = Log::default();
    let drops = Arc::new(AtomicUsize::new(0));
    let (hook_log, hook_drops) = (log.clone(), Arc::clone(&drops));
    let (runtime, node, _) = start(&log, move |device| {
        *device.context().on_cleanup.lock().unwrap() = Some(Box::new(move |device| {
            let late = job(device, "late", &hook_log, &hook_drops, |_, _| {});
            hook_log.push(format!("create in cleanup: {:?}", late.map(|_| ())));
        }));
        Ok(vec![])
    });
    node.remove().unwrap();
    assert_eq!(
        log.events(),
        ["device cleanup", "create in cleanup: Err(STATUS_DELETE_PENDING (0xC0000056))"]
    );
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the context given to create is dropped");
    assert!(!node.trace().lines().iter().any(|line| line.contains("WDFWORKITEM")));
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver]);
}

#[test]
fn a_panicking_run_is_recorded_and_the_workers_go_on() {
    // Not a KMDF rule (a panic in the kernel is a bug check): the host runtime keeps its
    // worker and its bookkeeping, so the test can see the panic and carry on.
    let log = Log::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let (runtime, _node, item, _) = one_item(&log, move |_, _| {
        assert!(counted.fetch_add(1, Ordering::SeqCst) != 0, "first run fails");
    });
    item.enqueue().unwrap();
    item.flush().unwrap();
    let panics = runtime.panics();
    assert_eq!(panics.len(), 1);
    assert_eq!(
        (panics[0].callback, panics[0].message.as_str()),
        (Callback::WorkItem, "first run fails")
    );
    assert!(runtime.trace().lines().contains(&"EvtWorkItem (panicked)".to_owned()));
    assert_eq!(item.enqueue(), Ok(Enqueued::Queued), "the item is not left queued by the panic");
    item.flush().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(log.events(), ["item ran"]);
}

// ----------------------------------------------------------------------------------------
// Enqueue.

#[test]
fn enqueue_while_queued_does_nothing_more() {
    // docs/kmdf-behaviour.md section 4, Enqueue: already queued, the call does nothing; one run
    // serves both calls.
    let log = Log::default();
    let (runtime, node, item, _) = one_item(&log, |_, _| {});
    {
        let _held = runtime.hold_workers();
        assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
        assert_eq!(item.enqueue(), Ok(Enqueued::AlreadyQueued));
        assert_eq!(item.enqueue(), Ok(Enqueued::AlreadyQueued));
    }
    item.flush().unwrap();
    assert_eq!(node.trace().count(Callback::WorkItem), 1);
    assert_eq!(log.events(), ["item ran"]);
}

#[test]
fn the_queued_flag_is_cleared_before_the_callback_so_runs_can_overlap() {
    // docs/kmdf-behaviour.md section 4, Enqueue: the queued flag is cleared before the callback
    // runs: re-enqueue from inside the callback works, and a second run can overlap the
    // first. Flush from either overlapping run is detected as a self-flush (KMDF keeps one
    // thread per item and would miss the first one).
    let log = Log::default();
    let (second_started, second_started_rx) = mpsc::channel::<()>();
    let second_started = Mutex::new(second_started);
    let second_started_rx = Mutex::new(second_started_rx);
    let (result_tx, result_rx) = mpsc::channel();
    let result_tx = Mutex::new(result_tx);
    let runs = AtomicUsize::new(0);
    let (_runtime, node, item, _) = one_item(&log, move |item, _| {
        let report = |what: &str, value: String| {
            result_tx.lock().unwrap().send(format!("{what}: {value}")).unwrap();
        };
        if runs.fetch_add(1, Ordering::SeqCst) == 0 {
            report("re-enqueue", format!("{:?}", item.enqueue()));
            // Stay in the callback until the second run has started: they overlap.
            recv(&second_started_rx.lock().unwrap(), "the second run");
            report("first flush", format!("{:?}", item.flush()));
        } else {
            report("second flush", format!("{:?}", item.flush()));
            second_started.lock().unwrap().send(()).unwrap();
        }
    });
    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    let mut results: Vec<String> = (0..3).map(|_| recv(&result_rx, "a result")).collect();
    results.sort();
    assert_eq!(
        results,
        [
            "first flush: Err(STATUS_POSSIBLE_DEADLOCK (0xC0000194))",
            "re-enqueue: Ok(Queued)",
            "second flush: Err(STATUS_POSSIBLE_DEADLOCK (0xC0000194))",
        ]
    );
    item.flush().unwrap();
    assert_eq!(node.trace().count(Callback::WorkItem), 2);
}

#[test]
fn runs_that_block_never_keep_queued_runs_from_starting() {
    // docs/kmdf-behaviour.md section 4: callbacks run on system worker threads, which the kernel
    // adds when all are busy. Every run here blocks until all of them have started, so
    // they only finish if each queued run gets a thread of its own, whether enqueued in a
    // burst or released together from a hold.
    const ITEMS: usize = 12;
    let log = Log::default();
    let drops = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (log2, drops2, gate2) = (log.clone(), Arc::clone(&drops), Arc::clone(&gate));
    let (runtime, node, items) = start(&log, move |device| {
        (0..ITEMS)
            .map(|_| {
                let (started, gate) = (Mutex::new(started_tx.clone()), Arc::clone(&gate2));
                job(device, "item", &log2, &drops2, move |_, _| {
                    started.lock().unwrap().send(()).unwrap();
                    let (open, opened) = &*gate;
                    let open = opened
                        .wait_timeout_while(open.lock().unwrap(), TIMEOUT, |open| !*open)
                        .unwrap();
                    assert!(*open.0, "timed out waiting for the other runs to start");
                })
            })
            .collect()
    });
    for held in [false, true] {
        *gate.0.lock().unwrap() = false;
        let hold = held.then(|| runtime.hold_workers());
        for item in &items {
            assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
        }
        drop(hold);
        for _ in 0..ITEMS {
            recv(&started_rx, "every run to start while the others block");
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        for item in &items {
            item.flush().unwrap();
        }
    }
    assert_eq!(node.trace().count(Callback::WorkItem), 2 * ITEMS);
    assert!(runtime.panics().is_empty());
}

// ----------------------------------------------------------------------------------------
// Flush.

#[test]
fn flush_of_an_item_never_enqueued_returns_at_once() {
    // docs/kmdf-behaviour.md section 4, Flush: never enqueued, it returns at once.
    let log = Log::default();
    let (runtime, node, item, _) = one_item(&log, |_, _| {});
    // Held workers could not run anything: a flush that waited would hang here.
    let _held = runtime.hold_workers();
    assert_eq!(item.flush(), Ok(()));
    assert_eq!(node.trace().count(Callback::WorkItem), 0);
}

#[test]
fn flush_waits_for_a_running_callback() {
    // docs/kmdf-behaviour.md section 4, Flush: waits until the running callback has returned.
    let log = Log::default();
    let (started, started_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let (runtime, _node, item, _) = one_item(&log, blocking_body(started, go_rx));
    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    recv(&started_rx, "the run to start");

    let flusher = {
        let (item, log) = (item.clone(), log.clone());
        thread::spawn(move || {
            let result = item.flush();
            log.push("flush returned");
            result
        })
    };
    // The flusher is blocked in the flush while the callback is still running.
    wait_until("the flush waits", || runtime.work_item_waiters() == 1);
    assert!(log.events().is_empty());
    go.send(()).unwrap();
    assert_eq!(flusher.join().unwrap(), Ok(()));
    assert_eq!(log.events(), ["item ran", "flush returned"]);
}

#[test]
fn flush_waits_for_a_queued_callback_and_its_re_enqueue_chain() {
    // docs/kmdf-behaviour.md section 4, Flush: waits for the queued callback, including a
    // re-enqueue chain.
    const ROUNDS: usize = 5;
    let log = Log::default();
    let rounds = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&rounds);
    let (runtime, node, item, _) = one_item(&log, move |item, _| {
        if counted.fetch_add(1, Ordering::SeqCst) + 1 < ROUNDS {
            assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
        }
    });
    let flusher = {
        let held = runtime.hold_workers();
        assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
        let item = item.clone();
        let flusher = thread::spawn(move || item.flush());
        // The flush is waiting before the first run could even start.
        wait_until("the flush waits", || runtime.work_item_waiters() == 1);
        drop(held);
        flusher
    };
    assert_eq!(flusher.join().unwrap(), Ok(()));
    assert_eq!(
        rounds.load(Ordering::SeqCst),
        ROUNDS,
        "the whole chain ran before the flush returned"
    );
    assert_eq!(node.trace().count(Callback::WorkItem), ROUNDS);
    assert!(runtime.panics().is_empty());
}

#[test]
fn flush_from_the_items_own_callback_is_an_error_not_a_deadlock() {
    // docs/kmdf-behaviour.md section 4, Flush: from inside the item's own callback it would wait
    // for itself; kmdf returns STATUS_POSSIBLE_DEADLOCK.
    let log = Log::default();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let (_runtime, _node, item, _) = one_item(&log, move |item, _| {
        tx.lock().unwrap().send(item.flush()).unwrap();
    });
    item.enqueue().unwrap();
    assert_eq!(recv(&rx, "the flush result"), Err(NtError::POSSIBLE_DEADLOCK));
    item.flush().unwrap();
    assert_eq!(log.events(), ["item ran"]);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "needs the OS scheduler to run both items on one worker thread; Miri's does not"
)]
fn a_worker_that_ran_an_item_before_may_flush_it_from_another_items_callback() {
    // Only a flush from inside the item's *running* callback is the self-flush error
    // (docs/kmdf-behaviour.md section 4): a worker thread whose earlier run of the item has
    // returned flushes it normally, here from another item's callback.
    //
    // Made deterministic: x's first two runs overlap (its queued flag is cleared before the
    // callback) and meet at a barrier, so both of the pool's threads have run x before y is
    // queued. The pool grows only when every thread is busy, and both are idle when y is
    // queued, so y runs on a thread that ran x.
    type Slot = Arc<Mutex<Option<ObjectRef<WorkItem<Job>>>>>;
    let log = Log::default();
    let drops = Arc::new(AtomicUsize::new(0));
    let x_threads = Arc::new(Mutex::new(HashSet::new()));
    let slot: Slot = Arc::default();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let (_runtime, _node, items) = {
        let (log, drops, x_threads, slot) =
            (log.clone(), Arc::clone(&drops), Arc::clone(&x_threads), Arc::clone(&slot));
        let barrier = Barrier::new(2);
        start(&log.clone(), move |device| {
            let x = job(device, "x", &log, &drops, move |_, _| {
                x_threads.lock().unwrap().insert(thread::current().id());
                started_tx.lock().unwrap().send(()).unwrap();
                barrier.wait();
            })?;
            let y = job(device, "y", &log, &drops, move |_, _| {
                let x = slot.lock().unwrap().clone().expect("x is in the slot");
                tx.lock().unwrap().send((thread::current().id(), x.flush())).unwrap();
            })?;
            Ok(vec![x, y])
        })
    };
    let (x, y) = (&items[0], &items[1]);
    *slot.lock().unwrap() = Some(x.clone());
    assert_eq!(x.enqueue(), Ok(Enqueued::Queued));
    recv(&started_rx, "x's first run");
    assert_eq!(x.enqueue(), Ok(Enqueued::Queued), "the running item can be queued again");
    recv(&started_rx, "x's second run");
    x.flush().unwrap();
    assert_eq!(x_threads.lock().unwrap().len(), 2, "x's two overlapping runs had two threads");
    y.enqueue().unwrap();
    let (y_thread, flushed) = recv(&rx, "y's flush of x");
    assert_eq!(flushed, Ok(()));
    y.flush().unwrap();
    assert!(x_threads.lock().unwrap().contains(&y_thread), "y ran on a thread that had run x");
    slot.lock().unwrap().take();
}

#[test]
fn flush_ends_at_the_first_idle_moment_even_if_an_enqueue_follows_at_once() {
    // A flush waits for the queued or running callback (docs/kmdf-behaviour.md section 4), not
    // for the item to be idle when the flushing thread looks again: KMDF's flush waits on
    // a notification event the run sets, and an enqueue right after does not unset it for
    // those already woken. Eight flushers wait for one run; each enqueues the item again as
    // soon as its flush returns, while the workers are held so that the new run stays
    // queued. Every flush must return all the same.
    /// The next run's channels: it says it started, then waits to be let go.
    type Gate = Arc<Mutex<Option<(Sender<()>, Receiver<()>)>>>;
    const FLUSHERS: usize = 8;
    let log = Log::default();
    let gate: Gate = Arc::default();
    let (runtime, _node, item, _) = {
        let gate = Arc::clone(&gate);
        one_item(&log, move |_, _| {
            let gate = gate.lock().unwrap().take();
            if let Some((started, go)) = gate {
                started.send(()).unwrap();
                recv(&go, "the test to release the run");
            }
        })
    };
    for _ in 0..10 {
        let (started, started_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        *gate.lock().unwrap() = Some((started, go_rx));
        item.enqueue().unwrap();
        recv(&started_rx, "the run to start");
        let flushers: Vec<_> = (0..FLUSHERS)
            .map(|_| {
                let item = item.clone();
                thread::spawn(move || {
                    let flushed = item.flush();
                    let _ = item.enqueue();
                    flushed
                })
            })
            .collect();
        wait_until("every flusher waits", || runtime.work_item_waiters() == FLUSHERS);
        let held = runtime.hold_workers();
        go.send(()).unwrap();
        wait_until("every flush returns", || runtime.work_item_waiters() == 0);
        drop(held);
        for flusher in flushers {
            assert_eq!(flusher.join().unwrap(), Ok(()));
        }
        runtime.wait_for_work_items().unwrap();
    }
}

#[test]
fn flush_above_passive_level_is_an_error() {
    // docs/kmdf-behaviour.md section 4, Flush: PASSIVE_LEVEL only. Holding a spin lock raises
    // the thread to DISPATCH_LEVEL.
    let log = Log::default();
    let (runtime, _node, item, _) = one_item(&log, |_, _| {});
    let lock = SpinLock::new(()).unwrap();
    let _held = runtime.hold_workers();
    item.enqueue().unwrap();
    {
        let _guard = lock.lock();
        assert_eq!(item.flush(), Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL));
    }
    assert_eq!(runtime.work_item_waiters(), 0, "the refused flush did not wait");
}

#[test]
fn flush_sees_every_enqueue_that_returned_before_it_while_many_threads_enqueue() {
    // docs/kmdf-behaviour.md section 4, Enqueue and Flush: a coalesced enqueue is served by the
    // pending run, and a flush waits for it: whatever was posted before an enqueue that
    // returned (Ok(true) or Ok(false)) before the flush started has been handled by a run
    // that finished before the flush returned.
    const ENQUEUERS: usize = 8;
    const PER_THREAD: usize = 300;

    #[derive(Default)]
    struct Work {
        posted: Mutex<Vec<usize>>,
        handled: Mutex<HashSet<usize>>,
        runs: AtomicUsize,
    }
    let work = Arc::new(Work::default());
    let log = Log::default();
    let in_run = Arc::clone(&work);
    let (_runtime, node, item, _) = one_item(&log, move |_, _| {
        in_run.runs.fetch_add(1, Ordering::SeqCst);
        let batch = std::mem::take(&mut *in_run.posted.lock().unwrap());
        let mut handled = in_run.handled.lock().unwrap();
        for id in batch {
            assert!(handled.insert(id), "work {id} handled twice");
        }
    });

    let returned = Arc::new(Mutex::new(Vec::new()));
    let queued_now = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(ENQUEUERS + 1));
    let done = Arc::new(AtomicBool::new(false));
    let enqueuers: Vec<_> = (0..ENQUEUERS)
        .map(|t| {
            let (item, work, returned, queued_now, start) = (
                item.clone(),
                Arc::clone(&work),
                Arc::clone(&returned),
                Arc::clone(&queued_now),
                Arc::clone(&start),
            );
            thread::spawn(move || {
                start.wait();
                for i in 0..PER_THREAD {
                    let id = t * PER_THREAD + i;
                    work.posted.lock().unwrap().push(id);
                    if item.enqueue().unwrap() == Enqueued::Queued {
                        queued_now.fetch_add(1, Ordering::SeqCst);
                    }
                    returned.lock().unwrap().push(id);
                }
            })
        })
        .collect();
    let flusher = {
        let (item, work, returned, done, start) = (
            item.clone(),
            Arc::clone(&work),
            Arc::clone(&returned),
            Arc::clone(&done),
            Arc::clone(&start),
        );
        thread::spawn(move || {
            start.wait();
            let mut flushes = 0;
            while !done.load(Ordering::SeqCst) || flushes < 3 {
                let before: Vec<usize> = returned.lock().unwrap().clone();
                item.flush().unwrap();
                let handled = work.handled.lock().unwrap();
                for id in before {
                    assert!(handled.contains(&id), "flush returned before work {id} was handled");
                }
                flushes += 1;
            }
            flushes
        })
    };
    for enqueuer in enqueuers {
        enqueuer.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    assert!(flusher.join().unwrap() >= 3);

    item.flush().unwrap();
    assert_eq!(work.handled.lock().unwrap().len(), ENQUEUERS * PER_THREAD);
    // Each Ok(true) queued exactly one run; Ok(false) queued none.
    let runs = work.runs.load(Ordering::SeqCst);
    assert_eq!(runs, queued_now.load(Ordering::SeqCst));
    assert_eq!(node.trace().count(Callback::WorkItem), runs);
}

// ----------------------------------------------------------------------------------------
// Delete.

#[test]
fn delete_of_an_idle_item_cleans_it_up_at_once() {
    // docs/kmdf-behaviour.md section 4, Delete: not queued, it is cleaned up at once. Section 5:
    // the context is dropped when the last reference goes, exactly once.
    let log = Log::default();
    let (runtime, node, item, drops) = one_item(&log, |_, _| {});
    assert_eq!(item.delete(), Ok(()));
    assert_eq!(log.events(), ["item cleanup"]);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "still referenced");
    assert_eq!(item.context().name, "item", "the context stays readable");
    assert_eq!(
        runtime.live_objects(),
        [ObjectKind::Driver, ObjectKind::Device, ObjectKind::WorkItem]
    );
    drop(item);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver, ObjectKind::Device]);
    assert_eq!(
        node.trace().lines(),
        [
            "EvtDriverDeviceAdd",
            "EvtCleanupCallback(WDFWORKITEM)",
            "EvtDestroyCallback(WDFWORKITEM)",
        ]
    );
}

#[test]
fn delete_twice_and_enqueue_after_delete_are_errors() {
    // docs/kmdf-behaviour.md section 4, Enqueue: being deleted, KMDF ignores it; kmdf reports
    // STATUS_DELETE_PENDING, and for a second delete too. A flush has nothing to wait for.
    let log = Log::default();
    let (_runtime, node, item, _) = one_item(&log, |_, _| {});
    item.delete().unwrap();
    assert_eq!(item.delete(), Err(NtError::DELETE_PENDING));
    assert_eq!(item.enqueue(), Err(NtError::DELETE_PENDING));
    assert_eq!(item.flush(), Ok(()));
    assert_eq!(node.trace().count(Callback::WorkItem), 0);
    assert_eq!(log.events(), ["item cleanup"]);
}

#[test]
fn delete_while_queued_waits_for_the_run_then_cleans_up() {
    // docs/kmdf-behaviour.md section 4, Delete: queued, the run is not cancelled; deletion
    // waits for the callback, then the cleanup runs.
    let log = Log::default();
    let (runtime, node, item, _) = one_item(&log, |_, _| {});
    let held = runtime.hold_workers();
    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    let deleter = {
        let (item, log) = (item.clone(), log.clone());
        thread::spawn(move || {
            let result = item.delete();
            log.push("delete returned");
            result
        })
    };
    wait_until("the delete waits", || runtime.work_item_waiters() == 1);
    assert_eq!(item.enqueue(), Err(NtError::DELETE_PENDING), "deletion has started");
    assert!(log.events().is_empty(), "nothing ran while the item was queued");
    drop(held);
    assert_eq!(deleter.join().unwrap(), Ok(()));
    assert_eq!(log.events(), ["item ran", "item cleanup", "delete returned"]);
    assert_eq!(
        node.trace().lines(),
        ["EvtDriverDeviceAdd", "EvtWorkItem", "EvtCleanupCallback(WDFWORKITEM)"]
    );
}

#[test]
fn delete_while_running_waits_for_the_callback() {
    // docs/kmdf-behaviour.md section 4, Delete: running, deletion waits for the callback.
    let log = Log::default();
    let (started, started_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let (runtime, _node, item, _) = one_item(&log, blocking_body(started, go_rx));
    item.enqueue().unwrap();
    recv(&started_rx, "the run to start");
    let deleter = {
        let (item, log) = (item.clone(), log.clone());
        thread::spawn(move || {
            let result = item.delete();
            log.push("delete returned");
            result
        })
    };
    wait_until("the delete waits", || runtime.work_item_waiters() == 1);
    go.send(()).unwrap();
    assert_eq!(deleter.join().unwrap(), Ok(()));
    assert_eq!(log.events(), ["item ran", "item cleanup", "delete returned"]);
}

#[test]
fn delete_from_inside_the_callback_returns_at_once_and_cleanup_follows_the_run() {
    // docs/kmdf-behaviour.md section 4, Delete: from inside the callback it returns at once;
    // the item is cleaned up once the callback has returned. The run it queued just before
    // is not cancelled either, and no run starts after the cleanup.
    let log = Log::default();
    let (started, started_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let wait_for_go = blocking_body(started, go_rx);
    let runs = AtomicUsize::new(0);
    let in_run = log.clone();
    let (runtime, node, item, drops) = one_item(&log, move |item, device| {
        if runs.fetch_add(1, Ordering::SeqCst) == 0 {
            wait_for_go(item, device);
            in_run.push(format!("re-enqueue {:?}", item.enqueue()));
            in_run.push(format!("delete {:?}", item.delete()));
        }
        in_run.push(format!("enqueue {:?}", item.enqueue()));
    });
    item.enqueue().unwrap();
    recv(&started_rx, "the first run");
    let held = runtime.hold_workers();
    go.send(()).unwrap();
    // The first run has returned; the run it queued has not started, and the item has not
    // been cleaned up: its disposal waits for that run.
    wait_until("the first run returns", || log.events().len() == 4);
    drop(held);
    wait_until("the item's cleanup", || log.events().len() == 7);
    assert_eq!(
        log.events(),
        [
            "re-enqueue Ok(Queued)",
            "delete Ok(())",
            "enqueue Err(STATUS_DELETE_PENDING (0xC0000056))",
            "item ran",
            "enqueue Err(STATUS_DELETE_PENDING (0xC0000056))",
            "item ran",
            "item cleanup",
        ]
    );
    assert_eq!(item.enqueue(), Err(NtError::DELETE_PENDING));
    assert_eq!(item.flush(), Ok(()));
    assert_eq!(node.trace().count(Callback::WorkItem), 2);
    drop(item);
    dropped_once(&drops, 1);
}

#[test]
fn delete_at_dispatch_level_returns_at_once_and_disposal_follows() {
    // KMDF defers the disposal of a work item deleted above PASSIVE_LEVEL to a
    // passive-level worker (fxobjectstatemachine.cpp, ShouldDeferDisposeLocked): the
    // cleanup still runs, at PASSIVE_LEVEL, and after a queued run.
    let log = Log::default();
    let (runtime, _node, item, _) = one_item(&log, |_, _| {});
    let lock = SpinLock::new(()).unwrap();
    let held = runtime.hold_workers();
    item.enqueue().unwrap();
    {
        let _guard = lock.lock();
        assert_eq!(item.delete(), Ok(()));
    }
    assert!(log.events().is_empty(), "nothing happened yet: the run is still queued");
    drop(held);
    wait_until("the item's cleanup", || log.events().len() == 2);
    assert_eq!(log.events(), ["item ran", "item cleanup"]);
}

#[test]
fn delete_at_dispatch_level_of_an_idle_item_completes_on_a_worker() {
    // As above, with nothing queued: the deferred disposal runs on a worker thread.
    let log = Log::default();
    let (runtime, node, item, _) = one_item(&log, |_, _| {});
    let lock = SpinLock::new(()).unwrap();
    let held = runtime.hold_workers();
    {
        let _guard = lock.lock();
        assert_eq!(item.delete(), Ok(()));
    }
    assert_eq!(item.enqueue(), Err(NtError::DELETE_PENDING), "deletion has started");
    assert!(log.events().is_empty(), "the disposal waits for a worker");
    drop(held);
    wait_until("the item's cleanup", || !log.events().is_empty());
    assert_eq!(log.events(), ["item cleanup"]);
    assert_eq!(node.trace().count(Callback::WorkItem), 0);
}

// ----------------------------------------------------------------------------------------
// The parent goes away.

/// A device with two items, "a" and "b".
fn two_items(
    log: &Log,
    a: impl Fn(&WorkItem<Job>, &Device<Dev>) + Send + Sync + 'static,
) -> (Rig, DeviceNode, Vec<ObjectRef<WorkItem<Job>>>, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let (log2, drops2) = (log.clone(), Arc::clone(&drops));
    let (runtime, node, items) = start(log, move |device| {
        Ok(vec![job(device, "a", &log2, &drops2, a)?, job(device, "b", &log2, &drops2, |_, _| {})?])
    });
    (runtime, node, items, drops)
}

#[test]
fn a_queued_item_runs_during_device_removal_before_any_cleanup_and_never_after() {
    // docs/kmdf-behaviour.md section 4, Delete: a still-queued work item can run during device
    // removal; when a parent is deleted its work items are disposed first, each one's
    // cleanup after its callbacks return and before the parent's cleanup.
    let log = Log::default();
    let (runtime, node, items, drops) = two_items(&log, |_, _| {});
    let held = runtime.hold_workers();
    assert_eq!(items[0].enqueue(), Ok(Enqueued::Queued));
    let remover = {
        let node = node.clone();
        thread::spawn(move || node.remove())
    };
    wait_until("the removal waits for the queued run", || runtime.work_item_waiters() == 1);
    assert!(log.events().is_empty());
    drop(held);
    assert_eq!(remover.join().unwrap(), Ok(()));
    assert_eq!(log.events(), ["a ran", "a cleanup", "b cleanup", "device cleanup"]);

    // Nothing runs after the cleanup, and the items refuse new work.
    for item in &items {
        assert_eq!(item.enqueue(), Err(NtError::DELETE_PENDING));
        assert_eq!(item.delete(), Err(NtError::DELETE_PENDING));
        assert_eq!(item.flush(), Ok(()));
    }
    assert_eq!(node.trace().count(Callback::WorkItem), 1);

    // The contexts go with the last references, once each.
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(items);
    dropped_once(&drops, 2);
    assert_eq!(
        node.trace().lines(),
        [
            "EvtDriverDeviceAdd",
            "EvtWorkItem",
            "EvtCleanupCallback(WDFWORKITEM)",
            "EvtCleanupCallback(WDFWORKITEM)",
            "EvtCleanupCallback(WDFDEVICE)",
            "EvtDestroyCallback(WDFDEVICE)",
            "EvtDestroyCallback(WDFWORKITEM)",
            "EvtDestroyCallback(WDFWORKITEM)",
        ]
    );
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver]);
}

#[test]
fn device_removal_waits_for_a_running_item() {
    // docs/kmdf-behaviour.md section 4, Delete: the parent's deletion waits for a running
    // callback before the item's cleanup, and the device's cleanup comes last.
    let log = Log::default();
    let (started, started_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let (runtime, node, items, _) = two_items(&log, blocking_body(started, go_rx));
    items[0].enqueue().unwrap();
    recv(&started_rx, "the run to start");
    let remover = {
        let node = node.clone();
        thread::spawn(move || node.remove())
    };
    wait_until("the removal waits for the run", || runtime.work_item_waiters() == 1);
    assert!(log.events().is_empty(), "no cleanup while the callback runs");
    go.send(()).unwrap();
    assert_eq!(remover.join().unwrap(), Ok(()));
    assert_eq!(log.events(), ["a ran", "a cleanup", "b cleanup", "device cleanup"]);
}

#[test]
fn device_removal_from_an_items_callback_waits_for_the_items_other_runs() {
    // docs/kmdf-behaviour.md section 4, Delete: each work item's cleanup runs after its callbacks
    // return, and no run starts after it. A removal from inside the item's own callback
    // cannot wait for that run, but it waits for the run another thread has started. It did
    // not: the cleanups ran while that run was still in its callback, and a run that had
    // just taken its parent could even call the driver after them (found by the loom model,
    // tests/loom_work_item.rs).
    let log = Log::default();
    let (started, started_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let wait_for_go = blocking_body(started, go_rx);
    let started_rx = Mutex::new(started_rx);
    let slot: Arc<Mutex<Option<DeviceNode>>> = Arc::default();
    let runs = AtomicUsize::new(0);
    let (in_run, node_in_run) = (log.clone(), Arc::clone(&slot));
    let (runtime, node, item, _) = one_item(&log, move |item, device| {
        if runs.fetch_add(1, Ordering::SeqCst) == 0 {
            assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
            recv(&started_rx.lock().unwrap(), "the second run to start");
            let node = node_in_run.lock().unwrap().clone().unwrap();
            in_run.push(format!("remove {:?}", node.remove()));
        } else {
            wait_for_go(item, device);
        }
    });
    *slot.lock().unwrap() = Some(node.clone());

    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    let cleaned_up = || log.events().contains(&"item cleanup".to_owned());
    wait_until("the removal waits for the second run (or cleans up without waiting)", || {
        runtime.work_item_waiters() == 1 || cleaned_up()
    });
    assert!(!cleaned_up(), "cleaned up during the second run: {:?}", log.events());
    go.send(()).unwrap();
    wait_until("both runs return", || log.events().len() == 5);
    assert_eq!(
        log.events(),
        ["item ran", "item cleanup", "device cleanup", "remove Ok(())", "item ran"]
    );
    assert!(node.is_removed());
    assert_eq!(node.trace().count(Callback::WorkItem), 2);
    slot.lock().unwrap().take();
}

#[test]
fn device_removal_disposes_items_deleted_earlier_only_once() {
    // docs/kmdf-behaviour.md section 5: cleanup runs exactly once; an item the driver deleted
    // is no longer a child the device disposes.
    let log = Log::default();
    let (runtime, node, items, drops) = two_items(&log, |_, _| {});
    items[1].delete().unwrap();
    node.remove().unwrap();
    assert_eq!(log.events(), ["b cleanup", "a cleanup", "device cleanup"]);
    drop(items);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver]);
}

#[test]
fn items_still_referenced_after_the_runtime_is_gone_are_safe_to_use() {
    // Section 5: a reference keeps the object (and its context) alive, not its parent.
    let log = Log::default();
    let (runtime, node, item, drops) = one_item(&log, |_, _| {});
    item.enqueue().unwrap();
    item.flush().unwrap();
    node.remove().unwrap();
    drop(node);
    drop(runtime);
    assert_eq!(item.enqueue(), Err(NtError::DELETE_PENDING));
    assert_eq!(item.context().name, "item");
    // The last reference: the runtime's worker threads are joined here.
    drop(item);
    dropped_once(&drops, 1);
}
