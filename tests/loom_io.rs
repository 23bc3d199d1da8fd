//! Who completes a request, checked with [loom](https://docs.rs/loom) on the code that
//! ships: the host's I/O package (`src/host/io.rs`) decides, under its lock, whether the
//! driver, the cancellation or the removal's purge completes a request
//! (docs/kmdf-behaviour.md section 9.5). Every interleaving of each scenario's threads, up to
//! a preemption bound, must complete the request exactly once (a second completion panics
//! the runtime) and never lose it.
//!
//! Built as `tests/loom_work_item.rs` is (the runtime's synchronisation on loom's, through
//! `src/host/sync_shim.rs`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --target-dir target/loom --test loom_io
//! ```
//!
//! The check is itself tested: the broken variant `MarkCancelableInTwoSteps` (a `Mutant` of
//! `src/host/sync_shim.rs`, in a child process) must be caught.

#![cfg(loom)]

mod io_common;

use std::panic;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;

use io_common::{Dev, GUID_DEVINTERFACE_TEST, OnRead, Plan};
use kmdf::host::{FileHandle, PendingIo, PnpAction, Runtime};
use kmdf::request::Marked;
use kmdf::{NtStatus, Request};
use loom::thread;

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

/// Checks that loom finds the bug of the broken variant `mutant` in `scenario`, and that
/// its report contains `expected` (in a child process, as `tests/loom_work_item.rs` does).
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

/// A started device whose default queue keeps reads (`plan`), one handle, one read the
/// driver owns.
fn setup(on_read: OnRead) -> (Runtime, kmdf::host::DeviceNode, FileHandle, PendingIo) {
    let plan = Plan { on_read, ..Plan::default() };
    let runtime = Runtime::new();
    let node = runtime.load_with(io_common::IoDriver { plan }).unwrap().add_device().unwrap();
    node.start().unwrap();
    let handle = runtime.open(&GUID_DEVINTERFACE_TEST).unwrap();
    let read = handle.read_async(1);
    (runtime, node, handle, read)
}

/// The driver makes its request cancelable while the application cancels it: whichever
/// comes first, the request is completed `STATUS_CANCELLED`, once.
fn mark_versus_cancel() {
    let (runtime, node, handle, read) = setup(OnRead::Pend);
    let request: Request =
        node.with_context(|dev: &Dev| dev.q().context().take_oldest()).unwrap().unwrap();
    let read = Arc::new(read);
    let canceller = {
        let read = Arc::clone(&read);
        thread::spawn(move || read.cancel())
    };
    node.with_context(|dev: &Dev| match request.mark_cancelable(dev.q()) {
        Marked::Cancelable(claim) => dev.q().context().cancelables.lock().push(claim),
        Marked::Canceled(request) => request.complete(NtStatus::CANCELLED),
    })
    .unwrap();
    canceller.join().unwrap();
    assert_eq!(read.status(), Some(NtStatus::CANCELLED), "the request was lost");
    drop(handle);
    node.apply(PnpAction::SurpriseRemove).unwrap();
    assert!(runtime.verifier_findings().is_empty());
}

#[test]
fn mark_cancelable_racing_a_cancel_completes_the_request_once() {
    explore("mark_versus_cancel", 3, mark_versus_cancel);
}

/// The driver unmarks its cancelable request and completes it while the application
/// cancels it: either the driver gets it back (`STATUS_SUCCESS`) or `EvtRequestCancel`
/// does (`STATUS_CANCELLED`), never both, never neither.
fn unmark_versus_cancel() {
    let (runtime, node, handle, read) = setup(OnRead::Cancelable);
    let claim = node.with_context(|dev: &Dev| dev.q().context().cancelables.lock().pop()).unwrap();
    let claim = claim.expect("the driver's claim");
    let read = Arc::new(read);
    let canceller = {
        let read = Arc::clone(&read);
        thread::spawn(move || read.cancel())
    };
    let unmarked = claim.unmark().map(|request| request.complete(NtStatus::SUCCESS)).is_some();
    canceller.join().unwrap();
    let expected = if unmarked { NtStatus::SUCCESS } else { NtStatus::CANCELLED };
    assert_eq!(read.status(), Some(expected));
    drop(handle);
    node.apply(PnpAction::SurpriseRemove).unwrap();
    assert!(runtime.verifier_findings().is_empty());
}

#[test]
fn unmark_racing_a_cancel_completes_the_request_once() {
    explore("unmark_versus_cancel", 3, unmark_versus_cancel);
}

/// The application cancels a cancelable request while the device is surprise-removed on
/// another thread, whose purge cancels it too: `EvtRequestCancel` runs once, the request
/// is completed `STATUS_CANCELLED` once, no finding.
fn cancel_versus_purge() {
    let (runtime, node, handle, read) = setup(OnRead::Cancelable);
    let remover = {
        let node = node.clone();
        thread::spawn(move || node.apply(PnpAction::SurpriseRemove).unwrap())
    };
    read.cancel();
    remover.join().unwrap();
    assert_eq!(read.status(), Some(NtStatus::CANCELLED), "the request was lost");
    let cancels = runtime.trace().count(kmdf::Callback::RequestCancel);
    assert_eq!(cancels, 1, "EvtRequestCancel once");
    drop(handle);
    assert!(runtime.verifier_findings().is_empty(), "{:?}", runtime.verifier_findings());
}

#[test]
fn a_cancel_racing_the_removal_purge_completes_the_request_once() {
    explore("cancel_versus_purge", 2, cancel_versus_purge);
}

#[test]
fn a_cancelable_mark_in_two_steps_is_caught() {
    must_fail(
        "a_cancelable_mark_in_two_steps_is_caught",
        "MarkCancelableInTwoSteps",
        "the request was lost",
        mark_versus_cancel,
    );
}
