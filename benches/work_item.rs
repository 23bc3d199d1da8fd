//! Work items on the host runtime against bare std threads, in the same run.
//!
//! * Round trip: `enqueue`, the (empty) callback runs on a worker thread, `flush` returns;
//!   against a dedicated thread waiting on a `Mutex` + `Condvar`, handed a job (flag,
//!   notify) that runs the same empty work, sets done and notifies. Goal (issue:
//!   benchmarks): at most 1.5x the baseline. A variant with locks (trace off) measures
//!   lockdep's checks on their nested path: the flushing thread holds a `WaitLock`
//!   across the enqueue and the flush, and the callback takes a `SpinLock`.
//! * Enqueue throughput when the item is already queued (the coalescing path: the workers
//!   are held, every `enqueue` returns `Ok(false)`), against a `Mutex<bool>` flag; from 1
//!   and from 2 threads at once on the same item.
//! * Enqueue throughput when the item is not queued: each thread enqueues a batch of idle
//!   items (every `enqueue` returns `Ok(true)`) and flushes them, so every enqueue is
//!   followed by its run; against the same pattern on bare threads (per item a
//!   `Mutex<state>` + `Condvar`, a queue served by two worker threads); from 1 and from 2
//!   threads, each with its own items.
//!
//! Criterion measures each case; a summary after the groups measures them again with fixed
//! iteration counts, alternating host and baseline, and prints the ratios (host time over
//! baseline time; above 1 the host is slower). Run: `cargo bench --bench work_item`
//! (`-- --profile-time 10 <filter>` runs one benchmark alone, without the summary, for a
//! profiler).

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use kmdf::Enqueued;
use kmdf::host::{DeviceNode, LoadedDriver, PnpAction, Runtime};
use kmdf::object::ObjectRef;
use kmdf::sync::{SpinLock, WaitLock};
use kmdf::{Device, DeviceInit, Driver, PnpPowerCallbacks, Result, WorkItem, WorkItemCallbacks};

/// Work items each thread of the not-queued benchmark enqueues before flushing them.
const BATCH: usize = 16;

/// Work items the test device creates: a batch for each of two threads.
const ITEMS: usize = 2 * BATCH;

// ----------------------------------------------------------------------------------------
// The host side: a driver whose device creates `ITEMS` work items with an empty callback.

struct Bench;

impl Driver for Bench {
    fn driver_entry() -> Result<Self> {
        Ok(Bench)
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        let device = device_init.create(BenchDevice {
            items: Mutex::new(Vec::new()),
            locked: Mutex::new(None),
            held: WaitLock::new(())?,
            counter: SpinLock::new(0)?,
        })?;
        let items =
            (0..ITEMS).map(|_| WorkItem::create(device, Empty)).collect::<Result<Vec<_>>>()?;
        *device.context().items.lock().unwrap() = items;
        *device.context().locked.lock().unwrap() = Some(WorkItem::create(device, Locking)?);
        Ok(())
    }
}

struct BenchDevice {
    items: Mutex<Vec<ObjectRef<WorkItem<Empty>>>>,
    /// The item of the round trip with locks.
    locked: Mutex<Option<ObjectRef<WorkItem<Locking>>>>,
    /// Held by the flushing thread in the round trip with locks.
    held: WaitLock<()>,
    /// Taken by the `Locking` callback.
    counter: SpinLock<u64>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for BenchDevice {}
}

/// The work item's context: nothing to do.
struct Empty;

kmdf::vtable! {
    impl WorkItemCallbacks for Empty {
        type Parent = Device<BenchDevice>;

        fn run(&self, item: &WorkItem<Self>, _device: &Device<BenchDevice>) {
            black_box(item);
        }
    }
}

/// The locking work item's context: the callback takes the device's spin lock.
struct Locking;

kmdf::vtable! {
    impl WorkItemCallbacks for Locking {
        type Parent = Device<BenchDevice>;

        fn run(&self, _item: &WorkItem<Self>, device: &Device<BenchDevice>) {
            *device.context().counter.lock() += 1;
        }
    }
}

/// A runtime with the driver loaded and one started device.
struct Host {
    items: Vec<ObjectRef<WorkItem<Empty>>>,
    node: DeviceNode,
    driver: LoadedDriver<Bench>,
    runtime: Runtime,
}

impl Host {
    fn new(tracing: bool) -> Self {
        let runtime = Runtime::new();
        runtime.set_tracing(tracing);
        let driver = runtime.load::<Bench>().expect("load");
        let node = driver.add_device().expect("add_device");
        node.apply(PnpAction::Start).expect("start");
        let items = node
            .with_context(|device: &BenchDevice| device.items.lock().unwrap().clone())
            .expect("context");
        Self { items, node, driver, runtime }
    }

    fn item(&self) -> &WorkItem<Empty> {
        &self.items[0]
    }

    /// Drops the trace recorded so far: with the trace on, every run adds an entry.
    fn clear_trace(&self) {
        drop(self.runtime.take_trace());
    }

    fn round_trips(&self, n: u64) -> Duration {
        let item = self.item();
        let started = Instant::now();
        for _ in 0..n {
            item.enqueue().expect("enqueue");
            item.flush().expect("flush");
        }
        let elapsed = started.elapsed();
        self.clear_trace();
        elapsed
    }

    /// [`round_trips`](Self::round_trips) with locks: the device's wait lock held across
    /// the enqueue and the flush, the callback taking its spin lock.
    fn locked_round_trips(&self, n: u64) -> Duration {
        let elapsed = self
            .node
            .with_context(|device: &BenchDevice| {
                let item = device.locked.lock().unwrap().clone().expect("created");
                let started = Instant::now();
                for _ in 0..n {
                    let _held = device.held.lock();
                    item.enqueue().expect("enqueue");
                    item.flush().expect("flush");
                }
                started.elapsed()
            })
            .expect("context");
        self.clear_trace();
        elapsed
    }

    /// `n` enqueues of the first item, on each of `threads` threads, while it is queued.
    fn coalesced_enqueues(&self, threads: usize, n: u64) -> Duration {
        let item = self.item();
        let held = self.runtime.hold_workers();
        assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
        let elapsed = on_threads(threads, |_| {
            for _ in 0..n {
                assert_eq!(black_box(item.enqueue()), Ok(Enqueued::AlreadyQueued));
            }
        });
        drop(held);
        item.flush().expect("flush");
        self.clear_trace();
        elapsed
    }

    /// `n` times, on each of `threads` threads: enqueue `BATCH` idle items (each queues a
    /// run), then flush them.
    fn queued_enqueues(&self, threads: usize, n: u64) -> Duration {
        let elapsed = on_threads(threads, |thread| {
            let items = &self.items[thread * BATCH..][..BATCH];
            for _ in 0..n {
                for item in items {
                    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
                }
                for item in items {
                    item.flush().expect("flush");
                }
            }
        });
        self.clear_trace();
        elapsed
    }

    fn finish(self) {
        let Self { items, node, driver, runtime } = self;
        drop(items);
        node.apply(PnpAction::Remove).expect("remove");
        driver.unload().expect("unload");
        assert!(runtime.panics().is_empty());
    }
}

/// Runs `work(thread index)` on `threads` threads started together; the time from the
/// common start to the last one's end.
fn on_threads(threads: usize, work: impl Fn(usize) + Sync) -> Duration {
    if threads == 1 {
        let started = Instant::now();
        work(0);
        return started.elapsed();
    }
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (barrier, work) = (&barrier, &work);
                scope.spawn(move || {
                    barrier.wait();
                    let started = Instant::now();
                    work(thread);
                    (started, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("bench thread")).collect()
    });
    let start = spans.iter().map(|span| span.0).min().expect("a thread");
    let end = spans.iter().map(|span| span.1).max().expect("a thread");
    end - start
}

// ----------------------------------------------------------------------------------------
// The round-trip baseline: one dedicated thread, a `Mutex` + `Condvar` hand-off.

#[derive(Default)]
struct HandOffState {
    job: bool,
    done: bool,
    stop: bool,
}

#[derive(Default)]
struct HandOffShared {
    state: Mutex<HandOffState>,
    work: Condvar,
    done: Condvar,
}

struct HandOff {
    shared: Arc<HandOffShared>,
    thread: Option<JoinHandle<()>>,
}

impl HandOff {
    fn new() -> Self {
        let shared = Arc::new(HandOffShared::default());
        let worker = Arc::clone(&shared);
        let thread = thread::spawn(move || {
            let mut state = worker.state.lock().unwrap();
            loop {
                if state.stop {
                    return;
                }
                if state.job {
                    state.job = false;
                    drop(state);
                    black_box(&worker); // The same empty work.
                    state = worker.state.lock().unwrap();
                    state.done = true;
                    worker.done.notify_one();
                } else {
                    state = worker.work.wait(state).unwrap();
                }
            }
        });
        Self { shared, thread: Some(thread) }
    }

    fn round_trips(&self, n: u64) -> Duration {
        let shared = &*self.shared;
        let started = Instant::now();
        for _ in 0..n {
            let mut state = shared.state.lock().unwrap();
            state.job = true;
            drop(state);
            shared.work.notify_one();
            let mut state = shared.state.lock().unwrap();
            while !state.done {
                state = shared.done.wait(state).unwrap();
            }
            state.done = false;
        }
        started.elapsed()
    }
}

impl Drop for HandOff {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().stop = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("hand-off thread");
        }
    }
}

// ----------------------------------------------------------------------------------------
// The enqueue baseline: the same pattern on bare threads. Per item a `Mutex` with its
// queued flag and run count, and a `Condvar` for the flush; a job queue served by two
// worker threads (the host pool's initial size; unlike the host's, this pool never grows,
// so two blocked runs would stop it).

#[derive(Default)]
struct BareItemState {
    queued: bool,
    running: usize,
}

#[derive(Default)]
struct BareItem {
    state: Mutex<BareItemState>,
    idle: Condvar,
}

#[derive(Default)]
struct BareQueue {
    jobs: VecDeque<usize>,
    stop: bool,
}

struct BarePoolShared {
    items: Vec<BareItem>,
    queue: Mutex<BareQueue>,
    work: Condvar,
}

struct BarePool {
    shared: Arc<BarePoolShared>,
    threads: Vec<JoinHandle<()>>,
}

impl BarePool {
    fn new() -> Self {
        let shared = Arc::new(BarePoolShared {
            items: (0..ITEMS).map(|_| BareItem::default()).collect(),
            queue: Mutex::default(),
            work: Condvar::new(),
        });
        let threads = (0..2)
            .map(|_| {
                let shared = Arc::clone(&shared);
                thread::spawn(move || shared.work())
            })
            .collect();
        Self { shared, threads }
    }

    fn coalesced_enqueues(&self, threads: usize, n: u64) -> Duration {
        let item = &self.shared.items[0];
        item.state.lock().unwrap().queued = true;
        let elapsed = on_threads(threads, |_| {
            for _ in 0..n {
                assert!(!black_box(self.shared.enqueue(0)));
            }
        });
        item.state.lock().unwrap().queued = false;
        elapsed
    }

    fn queued_enqueues(&self, threads: usize, n: u64) -> Duration {
        on_threads(threads, |thread| {
            let items = thread * BATCH..(thread + 1) * BATCH;
            for _ in 0..n {
                for item in items.clone() {
                    assert!(self.shared.enqueue(item));
                }
                for item in items.clone() {
                    self.shared.flush(item);
                }
            }
        })
    }
}

impl BarePoolShared {
    /// Queues a run of `item` unless one is queued; whether this call queued it.
    fn enqueue(&self, item: usize) -> bool {
        let mut state = self.items[item].state.lock().unwrap();
        if state.queued {
            return false;
        }
        state.queued = true;
        drop(state);
        self.queue.lock().unwrap().jobs.push_back(item);
        self.work.notify_one();
        true
    }

    fn flush(&self, item: usize) {
        let item = &self.items[item];
        let mut state = item.state.lock().unwrap();
        while state.queued || state.running > 0 {
            state = item.idle.wait(state).unwrap();
        }
    }

    fn work(&self) {
        let mut queue = self.queue.lock().unwrap();
        loop {
            if let Some(index) = queue.jobs.pop_front() {
                drop(queue);
                let item = &self.items[index];
                let mut state = item.state.lock().unwrap();
                state.queued = false;
                state.running += 1;
                drop(state);
                black_box(item); // The same empty work.
                let mut state = item.state.lock().unwrap();
                state.running -= 1;
                if !state.queued && state.running == 0 {
                    item.idle.notify_all();
                }
                drop(state);
                queue = self.queue.lock().unwrap();
            } else if queue.stop {
                return;
            } else {
                queue = self.work.wait(queue).unwrap();
            }
        }
    }
}

impl Drop for BarePool {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap().stop = true;
        self.shared.work.notify_all();
        for thread in self.threads.drain(..) {
            thread.join().expect("bare worker");
        }
    }
}

// ----------------------------------------------------------------------------------------
// Criterion groups.

fn round_trip(c: &mut Criterion) {
    let traced = Host::new(true);
    let untraced = Host::new(false);
    let baseline = HandOff::new();
    let mut group = c.benchmark_group("work item round trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("host, trace on", |b| b.iter_custom(|n| traced.round_trips(n)));
    group.bench_function("host, trace off", |b| b.iter_custom(|n| untraced.round_trips(n)));
    group.bench_function("host, trace off, locks", |b| {
        b.iter_custom(|n| untraced.locked_round_trips(n));
    });
    group.bench_function("baseline: Mutex+Condvar hand-off", |b| {
        b.iter_custom(|n| baseline.round_trips(n));
    });
    group.finish();
    traced.finish();
    untraced.finish();
}

fn enqueue(c: &mut Criterion) {
    let host = Host::new(true);
    let bare = BarePool::new();
    let mut group = c.benchmark_group("enqueue, already queued");
    for threads in [1, 2] {
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(format!("host, {threads} thread(s)"), |b| {
            b.iter_custom(|n| host.coalesced_enqueues(threads, n));
        });
        group.bench_function(format!("baseline: Mutex<bool>, {threads} thread(s)"), |b| {
            b.iter_custom(|n| bare.coalesced_enqueues(threads, n));
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("enqueue, not queued (batches of {BATCH} + runs)"));
    for threads in [1, 2] {
        group.throughput(Throughput::Elements((threads * BATCH) as u64));
        group.bench_function(format!("host, {threads} thread(s)"), |b| {
            b.iter_custom(|n| host.queued_enqueues(threads, n));
        });
        group.bench_function(format!("baseline: bare pool, {threads} thread(s)"), |b| {
            b.iter_custom(|n| bare.queued_enqueues(threads, n));
        });
    }
    group.finish();
    host.finish();
}

// ----------------------------------------------------------------------------------------
// The summary: fixed iteration counts, host and baseline alternated in short rounds (the
// machine's speed drifts by tens of percent between seconds), medians.

/// Rounds of each measurement; the median is reported.
const ROUNDS: usize = 31;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs each of `measures` (which returns its time and how many operations it did)
/// `ROUNDS` times, alternating them; the median time per operation of each, in
/// nanoseconds.
fn per_op<const N: usize>(measures: [&dyn Fn() -> (Duration, u64); N]) -> [f64; N] {
    let mut times = [(); N].map(|()| Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        for (time, measure) in times.iter_mut().zip(measures) {
            let (elapsed, ops) = measure();
            #[allow(clippy::cast_precision_loss)] // Op counts are far below 2^52.
            time.push(elapsed.as_secs_f64() * 1e9 / ops as f64);
        }
    }
    times.map(median)
}

fn summary() {
    const ROUND_TRIPS: u64 = 2_000;
    const COALESCED: u64 = 200_000;
    const BATCHES: u64 = 200;

    let traced = Host::new(true);
    let untraced = Host::new(false);
    let hand_off = HandOff::new();
    let [on, off, locks, hand] = per_op([
        &|| (traced.round_trips(ROUND_TRIPS), ROUND_TRIPS),
        &|| (untraced.round_trips(ROUND_TRIPS), ROUND_TRIPS),
        &|| (untraced.locked_round_trips(ROUND_TRIPS), ROUND_TRIPS),
        &|| (hand_off.round_trips(ROUND_TRIPS), ROUND_TRIPS),
    ]);
    drop(hand_off);
    untraced.finish();
    println!(
        "summary: round trip ({ROUNDS} rounds of {ROUND_TRIPS}, medians): host trace on \
         {:.2} us, trace off {:.2} us, baseline {:.2} us; ratio x{:.2} (trace on), x{:.2} \
         (trace off); goal x1.50: {}; with locks (trace off) {:.2} us, x{:.2}",
        on / 1e3,
        off / 1e3,
        hand / 1e3,
        on / hand,
        off / hand,
        if on <= 1.5 * hand && off <= 1.5 * hand { "met" } else { "MISSED" },
        locks / 1e3,
        locks / hand,
    );

    let host = traced;
    let bare = BarePool::new();
    for threads in [1, 2] {
        let ops = COALESCED * threads as u64;
        let [host_ns, bare_ns] =
            per_op([&|| (host.coalesced_enqueues(threads, COALESCED), ops), &|| {
                (bare.coalesced_enqueues(threads, COALESCED), ops)
            }]);
        println!(
            "summary: enqueue, already queued, {threads} thread(s) ({ROUNDS} rounds of {ops}, \
             medians): host {:.0} M/s ({host_ns:.1} ns), baseline {:.0} M/s ({bare_ns:.1} \
             ns); ratio x{:.2}",
            1e3 / host_ns,
            1e3 / bare_ns,
            host_ns / bare_ns,
        );
    }
    for threads in [1, 2] {
        let ops = BATCHES * (threads * BATCH) as u64;
        let [host_ns, bare_ns] =
            per_op([&|| (host.queued_enqueues(threads, BATCHES), ops), &|| {
                (bare.queued_enqueues(threads, BATCHES), ops)
            }]);
        println!(
            "summary: enqueue, not queued, {threads} thread(s) ({ROUNDS} rounds of {ops} \
             enqueues and runs, medians): host {:.0} k/s ({:.2} us), baseline {:.0} k/s \
             ({:.2} us); ratio x{:.2}",
            1e6 / host_ns,
            host_ns / 1e3,
            1e6 / bare_ns,
            bare_ns / 1e3,
            host_ns / bare_ns,
        );
    }
    host.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    round_trip(&mut criterion);
    enqueue(&mut criterion);
    criterion.final_summary();
    // `--profile-time` (criterion's profiling mode) runs the selected benchmark alone.
    if !std::env::args().any(|arg| arg == "--profile-time") {
        summary();
    }
}
