//! The host runtime's locks against a bare `std::sync::Mutex`, uncontended, on one thread:
//! what the IRQL model and the lock-order checks (lockdep, `src/host/lockdep.rs`) add to
//! an acquisition and a release.
//!
//! * `SpinLock` and `WaitLock` lock + unlock with no other lock held (lockdep: a
//!   thread-local push and pop);
//! * a `SpinLock` lock + unlock while the thread holds a `WaitLock` (lockdep: the recursion
//!   check and a lookup of the known edge in a per-thread cache);
//!
//! each against a `Mutex` lock + unlock. Run: `cargo bench --bench locks`.

use std::hint::black_box;
use std::sync::Mutex;

use criterion::Criterion;
use kmdf::sync::{SpinLock, WaitLock};

fn locks(c: &mut Criterion) {
    let spin = SpinLock::new(0_u64).expect("spin lock");
    let wait = WaitLock::new(0_u64).expect("wait lock");
    let outer = WaitLock::new(()).expect("wait lock");
    let mutex = Mutex::new(0_u64);
    let mut group = c.benchmark_group("lock + unlock, uncontended");
    group.bench_function("SpinLock", |b| b.iter(|| *black_box(&spin).lock() += 1));
    group.bench_function("WaitLock", |b| b.iter(|| *black_box(&wait).lock() += 1));
    group.bench_function("SpinLock, a WaitLock held", |b| {
        let _outer = outer.lock();
        b.iter(|| *black_box(&spin).lock() += 1);
    });
    group.bench_function("baseline: std Mutex", |b| {
        b.iter(|| *black_box(&mutex).lock().unwrap() += 1);
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    locks(&mut criterion);
    criterion.final_summary();
}
