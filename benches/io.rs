//! I/O on the host runtime (issue 15): a request round trip and a parallel queue's
//! throughput, each against a bare baseline in the same run.
//!
//! * **Round trip**: the client reads 64 bytes, the default queue's `EvtIoRead` fills the
//!   buffer and completes the request inline, the client sees the status and the data.
//!   Baselines: a request/response between two std threads over channels (the issue's
//!   goal: the host at most 1.5x that), and the same work on one thread behind a `Mutex`
//!   (what an inline completion costs without a framework).
//! * **Parallel queue**: 100 reads in flight on a parallel queue (the driver keeps them),
//!   then the driver completes them all; baseline: 100 requests pushed into and popped from
//!   a `Mutex<VecDeque>` and answered through a `Mutex<Option<..>>` each.
//!
//! Criterion measures each case; a `summary:` line after the groups measures them again
//! with fixed iteration counts, alternated in rounds, and prints the ratios.
//! Run: `cargo bench --bench io` (`-- NOMATCH` for the summary only).

#[path = "../tests/io_common/mod.rs"]
mod io_common;

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use io_common::{Dev, GUID_DEVINTERFACE_TEST, OnRead, Plan};
use kmdf::NtStatus;
use kmdf::host::{DeviceNode, FileHandle, PendingIo, Runtime};

const IN_FLIGHT: usize = 100;

/// A started device with one open handle, tracing off.
struct Host {
    _runtime: Runtime,
    node: DeviceNode,
    handle: FileHandle,
}

impl Host {
    fn new(on_read: OnRead) -> Self {
        let runtime = Runtime::new();
        runtime.set_tracing(false);
        let plan = Plan { on_read, ..Plan::default() };
        let node = runtime.load_with(io_common::IoDriver { plan }).unwrap().add_device().unwrap();
        node.start().unwrap();
        let handle = runtime.open(&GUID_DEVINTERFACE_TEST).unwrap();
        Self { _runtime: runtime, node, handle }
    }

    fn round_trip(&self) {
        let read = self.handle.read(64).expect("completed inline");
        assert_eq!(read.status, NtStatus::SUCCESS);
        black_box(read.data);
    }

    fn parallel(&self) {
        let pending: Vec<PendingIo> = (0..IN_FLIGHT).map(|_| self.handle.read_async(64)).collect();
        self.node
            .with_context(|dev: &Dev| {
                while let Some(request) = dev.q().context().take_oldest() {
                    request.complete(NtStatus::SUCCESS);
                }
            })
            .unwrap();
        assert!(pending.iter().all(PendingIo::is_complete));
    }
}

/// Request/response between two std threads: the request (a length) goes over one channel,
/// the response (status and data) comes back over another.
struct TwoThreads {
    requests: mpsc::Sender<usize>,
    responses: mpsc::Receiver<(i32, Vec<u8>)>,
}

impl TwoThreads {
    fn new() -> Self {
        let (requests, incoming) = mpsc::channel::<usize>();
        let (outgoing, responses) = mpsc::channel();
        thread::spawn(move || {
            while let Ok(length) = incoming.recv() {
                if outgoing.send((0, vec![0xAB; length])).is_err() {
                    break;
                }
            }
        });
        Self { requests, responses }
    }

    fn round_trip(&self) {
        self.requests.send(64).unwrap();
        black_box(self.responses.recv().unwrap());
    }
}

/// The same work on one thread: a handler behind a `Mutex`, called directly.
struct OneThread {
    handler: Mutex<u64>,
}

impl OneThread {
    fn round_trip(&self) {
        let mut served = self.handler.lock().unwrap();
        *served += 1;
        black_box((0_i32, vec![0xAB_u8; 64]));
    }
}

/// 100 requests queued, then answered one by one, with std types only.
fn bare_parallel(queue: &Mutex<VecDeque<Arc<Mutex<Option<i32>>>>>) {
    let answers: Vec<Arc<Mutex<Option<i32>>>> =
        (0..IN_FLIGHT).map(|_| Arc::new(Mutex::new(None))).collect();
    for answer in &answers {
        queue.lock().unwrap().push_back(Arc::clone(answer));
    }
    while let Some(answer) = queue.lock().unwrap().pop_front() {
        *answer.lock().unwrap() = Some(0);
    }
    assert!(answers.iter().all(|answer| answer.lock().unwrap().is_some()));
}

fn benches(c: &mut Criterion) {
    let host = Host::new(OnRead::Complete);
    let two = TwoThreads::new();
    let one = OneThread { handler: Mutex::new(0) };
    let mut group = c.benchmark_group("io round trip");
    group.bench_function("host", |b| b.iter(|| host.round_trip()));
    group.bench_function("two threads", |b| b.iter(|| two.round_trip()));
    group.bench_function("one thread", |b| b.iter(|| one.round_trip()));
    group.finish();

    let host = Host::new(OnRead::Pend);
    let queue = Mutex::new(VecDeque::new());
    let mut group = c.benchmark_group("parallel queue, 100 in flight");
    group.bench_function("host", |b| b.iter(|| host.parallel()));
    group.bench_function("baseline", |b| b.iter(|| bare_parallel(&queue)));
    group.finish();
}

const ROUNDS: usize = 21;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median time per operation (ns) of each measure, alternated over `ROUNDS` rounds of
/// `ops` operations.
fn per_op<const N: usize>(ops: u32, measures: [&dyn Fn(); N]) -> [f64; N] {
    let mut times = [(); N].map(|()| Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        for (time, measure) in times.iter_mut().zip(measures) {
            let start = Instant::now();
            for _ in 0..ops {
                measure();
            }
            let elapsed: Duration = start.elapsed();
            time.push(elapsed.as_secs_f64() * 1e9 / f64::from(ops));
        }
    }
    times.map(median)
}

fn summary() {
    let host = Host::new(OnRead::Complete);
    let two = TwoThreads::new();
    let one = OneThread { handler: Mutex::new(0) };
    let [h, t, o] =
        per_op(2_000, [&|| host.round_trip(), &|| two.round_trip(), &|| one.round_trip()]);
    println!(
        "summary: io round trip ({ROUNDS} rounds of 2000, medians): host {:.2} us, two threads \
         {:.2} us, one thread {:.2} us; host / two threads x{:.2} (goal x1.50: {}), host / one \
         thread x{:.1}",
        h / 1e3,
        t / 1e3,
        o / 1e3,
        h / t,
        if h <= 1.5 * t { "met" } else { "MISSED" },
        h / o,
    );
    let host = Host::new(OnRead::Pend);
    let queue = Mutex::new(VecDeque::new());
    let [h, b] = per_op(200, [&|| host.parallel(), &|| bare_parallel(&queue)]);
    #[allow(clippy::cast_precision_loss, reason = "100")]
    let per_request = IN_FLIGHT as f64;
    println!(
        "summary: parallel queue, {IN_FLIGHT} in flight ({ROUNDS} rounds of 200, medians): host \
         {:.2} us per request ({:.0} k/s), baseline {:.3} us per request; ratio x{:.1}",
        h / per_request / 1e3,
        1e6 / (h / per_request),
        b / per_request / 1e3,
        h / b,
    );
}

criterion_group!(io, benches);

fn main() {
    io();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
