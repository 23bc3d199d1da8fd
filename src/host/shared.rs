//! What everything in one runtime shares: the trace, the injected failures, the panics
//! caught at callback boundaries, the verifier, the virtual clock, the worker pool, the
//! failures devices reported, and the table of live objects; and the callback boundary
//! itself ([`Shared::invoke`]), with which runtime (and device) the thread runs a callback
//! for ([`with_current`]).
//!
//! The module knows nothing of objects beyond their kind and number: object kinds build on
//! it, never the reverse.

use super::std;
use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::string::String;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

#[cfg(loom)]
use super::sync_shim::LocalRefExt as _;
use super::sync_shim::{AtomicBool, AtomicU64, AtomicUsize, Mutex, local};
use std::time::Duration;
use std::vec::Vec;

use super::clock::Clock;
use super::lockdep;
use super::mutex::lock;
use super::object_kind::ObjectKind;
use super::pool::{self, Pool};
use super::trace::{CallbackPanicked, PanicReport, TraceEntry, VerifierFinding};
use crate::device::FailedAction;
use crate::{Callback, NtError, NtStatus, Result};

/// State shared by everything in one runtime: the trace, the object table, the injected
/// failures and the system worker threads.
pub(crate) struct Shared {
    trace: Mutex<TraceLog>,
    next_id: AtomicU64,
    live: Mutex<BTreeMap<u64, ObjectKind>>,
    injections: Mutex<Injections>,
    panics: Mutex<Vec<CaughtPanic>>,
    /// Whether callbacks are recorded in the trace.
    tracing: AtomicBool,
    /// Threads blocked until a work item's callback returns (in a flush or a deletion).
    waiters: AtomicUsize,
    /// Dropped with the runtime's last reference to `Shared`: its threads are joined then.
    pool: Pool,
    /// The virtual clock timers run on.
    clock: Mutex<Clock>,
    /// What the runtime's verifier saw drivers do wrong.
    verifier: Mutex<Verifier>,
    /// Devices that reported themselves failed (`WdfDeviceSetFailed`) and that the PnP
    /// manager has not answered yet, by device node.
    failures: Mutex<BTreeMap<u64, FailedAction>>,
    /// The devices' I/O packages (`io::IoPackage`, unnamed here: kinds build on this
    /// module), for the client to open a device by interface.
    io_packages: Mutex<Vec<Weak<dyn Any + Send + Sync>>>,
}

/// The verifier's state: devices whose `SelfManagedIoFlush` has returned, and findings.
#[derive(Default)]
struct Verifier {
    flushed: BTreeSet<u64>,
    findings: Vec<(VerifierFinding, bool)>,
}

/// The trace. Entries are numbered from the start of the runtime, so a callback that
/// finishes after [`Shared::take_trace`] drained its entry does not update another one.
#[derive(Default)]
struct TraceLog {
    entries: Vec<TraceEntry>,
    drained: usize,
}

impl TraceLog {
    fn push(&mut self, entry: TraceEntry) -> usize {
        self.entries.push(entry);
        self.drained + self.entries.len() - 1
    }
}

/// A panic caught at a callback boundary, and whether the test has been told.
struct CaughtPanic {
    report: PanicReport,
    /// Caught in deferred work (`pool::in_deferred_work`): no call of the test returned it,
    /// so the next one reports it.
    deferred: bool,
    /// Returned in an error, or read by the test (`Runtime::panics`).
    reported: bool,
}

/// How many times each callback was reached, indexed by `Callback as usize`.
type CallCounts = [u64; Callback::ALL.len()];

/// Failures to inject: the Nth call of a callback fails with a status.
struct Injections {
    /// Each fires once.
    planned: Vec<Injection>,
    /// How many times each callback was reached so far over the whole runtime.
    calls: CallCounts,
    /// The same per device node (one array per node, made at its first counted call).
    calls_on: BTreeMap<u64, CallCounts>,
}

impl Default for Injections {
    fn default() -> Self {
        Self { planned: Vec::new(), calls: [0; Callback::ALL.len()], calls_on: BTreeMap::new() }
    }
}

/// One planned failure: the `nth` call of `callback` (counted over the whole runtime, or on
/// one device node when `device` is set) fails with `status`.
struct Injection {
    callback: Callback,
    device: Option<u64>,
    nth: u64,
    status: NtError,
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            trace: Mutex::new(TraceLog::default()),
            next_id: AtomicU64::new(1),
            live: Mutex::new(BTreeMap::new()),
            injections: Mutex::new(Injections::default()),
            panics: Mutex::new(Vec::new()),
            tracing: AtomicBool::new(true),
            waiters: AtomicUsize::new(0),
            pool: Pool::new(),
            clock: Mutex::new(Clock::default()),
            verifier: Mutex::new(Verifier::default()),
            failures: Mutex::new(BTreeMap::new()),
            io_packages: Mutex::new(Vec::new()),
        })
    }

    /// The virtual clock.
    pub(crate) fn clock(&self) -> &Mutex<Clock> {
        &self.clock
    }

    /// The virtual clock's time since the runtime started.
    pub(crate) fn now(&self) -> Duration {
        lock(&self.clock).now()
    }

    /// The runtime's system worker threads.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
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

    /// Plans a failure: the `nth` call (counting from 1) of `callback` returns `status`;
    /// calls are counted over the whole runtime, or on `device` alone when given.
    pub(crate) fn inject(
        &self,
        callback: Callback,
        device: Option<u64>,
        nth: u64,
        status: NtError,
    ) {
        lock(&self.injections).planned.push(Injection { callback, device, nth, status });
    }

    /// Counts a call of `callback` on `device`; returns the status to fail it with, if one
    /// is planned for this call.
    fn injected(&self, callback: Callback, device: Option<u64>) -> Option<NtError> {
        let mut injections = lock(&self.injections);
        let injections = &mut *injections;
        let index = callback as usize;
        injections.calls[index] += 1;
        let overall = injections.calls[index];
        let on_device = device.map(|device| {
            let calls = injections.calls_on.entry(device).or_insert([0; Callback::ALL.len()]);
            calls[index] += 1;
            calls[index]
        });
        if injections.planned.is_empty() {
            return None;
        }
        let index = injections.planned.iter().position(|planned| {
            planned.callback == callback
                && match planned.device {
                    None => planned.nth == overall,
                    Some(_) => planned.device == device && Some(planned.nth) == on_device,
                }
        })?;
        Some(injections.planned.remove(index).status)
    }

    /// `WdfDeviceSetFailed` on the device of `node`: the PnP manager answers later
    /// ([`take_failure`](Self::take_failure)). A second report before the answer keeps the
    /// stronger action: no restart wins.
    pub(crate) fn request_failure(&self, node: u64, action: FailedAction) {
        let mut failures = lock(&self.failures);
        let entry = failures.entry(node).or_insert(action);
        if action == FailedAction::NoRestart {
            *entry = action;
        }
    }

    /// The failure `node` reported and the PnP manager has not answered, if any.
    pub(crate) fn take_failure(&self, node: u64) -> Option<FailedAction> {
        lock(&self.failures).remove(&node)
    }

    /// Records a driver's debug print (`DbgPrintEx`) in the trace.
    pub(crate) fn record_print(&self, device: Option<u64>, message: String) {
        let _ = self.record(TraceEntry::new(Callback::DebugPrint, device).with_args(message));
    }

    /// Forgets what the verifier knows of the device that `node` had: a new device object
    /// was created for the same hardware (a restart after `WdfDeviceSetFailed`).
    pub(crate) fn forget_device(&self, node: u64) {
        lock(&self.verifier).flushed.remove(&node);
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Turns recording in the trace on or off.
    pub(crate) fn set_tracing(&self, enabled: bool) {
        self.tracing.store(enabled, Ordering::Relaxed);
    }

    /// Appends the entry of a callback about to run; returns its index for
    /// [`finish`](Self::finish) (`usize::MAX` when tracing is off, which matches no entry).
    pub(crate) fn record(&self, entry: TraceEntry) -> usize {
        if !self.tracing.load(Ordering::Relaxed) {
            return usize::MAX;
        }
        lock(&self.trace).push(entry)
    }

    /// Records what the callback at `index` returned.
    fn finish(&self, index: usize, status: Option<NtStatus>, panicked: bool) {
        let mut trace = lock(&self.trace);
        if let Some(entry) = index.checked_sub(trace.drained).and_then(|i| trace.entries.get_mut(i))
        {
            entry.status = status;
            entry.panicked = panicked;
        }
    }

    /// Runs driver code for the callback recorded at `index`, catching a panic at the
    /// boundary: it is reported and turned into `STATUS_UNSUCCESSFUL`.
    fn guarded(
        &self,
        callback: Callback,
        device: Option<u64>,
        index: usize,
        fallible: bool,
        run: impl FnOnce() -> Result,
    ) -> Result {
        // Lockdep's reports name the callback the thread runs.
        let _callback = lockdep::enter(callback);
        let _entered = enter(self, device);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(result) => {
                self.finish(index, fallible.then(|| result.into()), false);
                result
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| String::from(*s))
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| String::from("(a panic payload that is not a string)"));
                lock(&self.panics).push(CaughtPanic {
                    report: PanicReport { callback, device, message },
                    deferred: pool::in_deferred_work(),
                    reported: false,
                });
                let status = NtError::UNSUCCESSFUL;
                self.finish(index, fallible.then_some(status.status()), true);
                Err(status)
            }
        }
    }

    /// Notes that `device`'s `SelfManagedIoFlush` returned: from now on its work items and
    /// timers must not run (docs/kmdf-behaviour.md section 4: drivers flush them there).
    pub(crate) fn note_flushed(&self, device: u64) {
        lock(&self.verifier).flushed.insert(device);
    }

    /// The verifier's check before deferred work (a work item or a timer) of `device` runs.
    pub(crate) fn check_deferred_work(&self, callback: Callback, device: Option<u64>) {
        let Some(device) = device else { return };
        let mut verifier = lock(&self.verifier);
        if verifier.flushed.contains(&device) {
            let finding = VerifierFinding {
                device,
                callback,
                message: std::format!(
                    "{callback} ran after EvtDeviceSelfManagedIoFlush returned: the driver left \
                     it queued or running; flush (or stop) the device's work items and timers \
                     in SelfManagedIoFlush or SelfManagedIoSuspend (docs/kmdf-behaviour.md section 4)"
                ),
            };
            verifier.findings.push((finding, false));
        }
    }

    /// Records a finding of the verifier about `finding.device`.
    pub(crate) fn report(&self, finding: VerifierFinding) {
        lock(&self.verifier).findings.push((finding, false));
    }

    /// Registers a device's I/O package.
    pub(crate) fn register_io(&self, package: Weak<dyn Any + Send + Sync>) {
        let mut packages = lock(&self.io_packages);
        packages.retain(|package| package.strong_count() > 0);
        packages.push(package);
    }

    /// The I/O packages still in use, oldest first.
    pub(crate) fn io_packages(&self) -> Vec<Arc<dyn Any + Send + Sync>> {
        lock(&self.io_packages).iter().filter_map(Weak::upgrade).collect()
    }

    /// The findings about `device` not reported yet, marking them reported.
    pub(crate) fn report_findings(&self, device: u64) -> Vec<VerifierFinding> {
        let mut verifier = lock(&self.verifier);
        verifier
            .findings
            .iter_mut()
            .filter(|(finding, reported)| finding.device == device && !reported)
            .map(|(finding, reported)| {
                *reported = true;
                finding.clone()
            })
            .collect()
    }

    pub(crate) fn findings(&self) -> Vec<VerifierFinding> {
        lock(&self.verifier).findings.iter().map(|(finding, _)| finding.clone()).collect()
    }

    /// Records (as `entry`) and runs a callback that returns nothing.
    pub(crate) fn invoke_void(&self, entry: TraceEntry, run: impl FnOnce()) {
        let (callback, device) = (entry.callback, entry.device);
        let index = self.record(entry);
        let _ = self.guarded(callback, device, index, false, || {
            run();
            Ok(())
        });
    }

    /// Every panic caught and not taken, marking them reported.
    pub(crate) fn panics(&self) -> Vec<PanicReport> {
        let mut panics = lock(&self.panics);
        panics.iter_mut().for_each(|caught| caught.reported = true);
        panics.iter().map(|caught| caught.report.clone()).collect()
    }

    /// Every panic caught and not taken, forgetting them.
    pub(crate) fn take_panics(&self) -> Vec<PanicReport> {
        lock(&self.panics).drain(..).map(|caught| caught.report).collect()
    }

    /// The panics caught in deferred work that no call reported yet, as an error, marking
    /// them reported: what the next action, wait or advance returns.
    pub(crate) fn report_deferred_panics(&self) -> core::result::Result<(), CallbackPanicked> {
        self.report_panics(|caught| caught.deferred)
    }

    /// Every panic not reported yet, as an error, marking them reported.
    pub(crate) fn report_all_panics(&self) -> core::result::Result<(), CallbackPanicked> {
        self.report_panics(|_| true)
    }

    fn report_panics(
        &self,
        which: impl Fn(&CaughtPanic) -> bool,
    ) -> core::result::Result<(), CallbackPanicked> {
        let mut panics = lock(&self.panics);
        let reports: Vec<PanicReport> = panics
            .iter_mut()
            .filter(|caught| !caught.reported && which(caught))
            .map(|caught| {
                caught.reported = true;
                caught.report.clone()
            })
            .collect();
        if reports.is_empty() { Ok(()) } else { Err(CallbackPanicked::new(reports)) }
    }

    /// Records (as `entry`) and runs a fallible callback, or fails it without running it when a failure
    /// is injected for this call. A panic in `run` is caught and reported as a failure.
    pub(crate) fn invoke(&self, entry: TraceEntry, run: impl FnOnce() -> Result) -> Result {
        let (callback, device) = (entry.callback, entry.device);
        if let Some(status) = self.injected(callback, device) {
            let entry = TraceEntry { status: Some(status.status()), injected: true, ..entry };
            let _ = self.record(entry);
            return Err(status);
        }
        let index = self.record(entry);
        self.guarded(callback, device, index, true, run)
    }

    pub(crate) fn trace(&self) -> Vec<TraceEntry> {
        lock(&self.trace).entries.clone()
    }

    /// The position the next trace entry will have.
    pub(crate) fn trace_position(&self) -> usize {
        let trace = lock(&self.trace);
        trace.drained + trace.entries.len()
    }

    /// The entries from `position` on (those not drained by [`take_trace`](Self::take_trace)).
    pub(crate) fn trace_from(&self, position: usize) -> Vec<TraceEntry> {
        let trace = lock(&self.trace);
        let start = position.saturating_sub(trace.drained).min(trace.entries.len());
        trace.entries[start..].to_vec()
    }

    pub(crate) fn take_trace(&self) -> Vec<TraceEntry> {
        let mut trace = lock(&self.trace);
        trace.drained += trace.entries.len();
        std::mem::take(&mut trace.entries)
    }

    pub(crate) fn live(&self) -> BTreeMap<u64, ObjectKind> {
        lock(&self.live).clone()
    }

    /// Counts a new object, `id`, among the live ones.
    pub(crate) fn object_created(&self, id: u64, kind: ObjectKind) {
        lock(&self.live).insert(id, kind);
    }

    /// The object `id` was destroyed.
    pub(crate) fn object_destroyed(&self, id: u64) {
        lock(&self.live).remove(&id);
    }
}

local! {
    /// The callbacks this thread is inside of, innermost last (a cleanup callback can run
    /// inside a work item's callback, for example).
    ///
    /// Driver code reaches a few framework services without a handle: `DbgPrintEx`, the
    /// system time (`KeQueryInterruptTime`). In the kernel they are global; on the host each
    /// [`Runtime`](super::Runtime) is a machine of its own, so these services find theirs
    /// through the callback the thread is running: the runtime enters it at the callback
    /// boundary ([`Shared::guarded`]) and leaves it when the callback returns.
    static CURRENT: RefCell<Vec<(*const Shared, Option<u64>)>> = RefCell::new(Vec::new());
}

/// The thread is inside a callback of a runtime until this is dropped.
///
/// # Invariant
///
/// The entry it pushed points at a `Shared` borrowed for `'a`, and the guard cannot outlive
/// that borrow; it is created and dropped in one stack frame (`Shared::guarded`) and never
/// leaked, so the entry is popped before the `Shared` can go away.
struct Entered<'a> {
    _shared: PhantomData<&'a Shared>,
}

/// Enters a callback of `shared`, for `device` (or driver-wide).
fn enter(shared: &Shared, device: Option<u64>) -> Entered<'_> {
    // INVARIANT: the guard borrows `shared` for as long as the entry stays pushed.
    CURRENT.with_borrow_mut(|stack| stack.push((std::ptr::from_ref(shared), device)));
    Entered { _shared: PhantomData }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        CURRENT.with_borrow_mut(Vec::pop);
    }
}

/// Calls `f` with the runtime and device of the innermost callback the thread is running,
/// or returns `None` outside any callback (the test's own thread, between actions).
pub(crate) fn with_current<R>(f: impl FnOnce(&Shared, Option<u64>) -> R) -> Option<R> {
    let (shared, device) = CURRENT.with_borrow(|stack| stack.last().copied())?;
    // SAFETY: the entry was pushed by `enter` from a `&Shared` that stays borrowed until the
    // entry is popped (the invariant of `Entered`), and the entry is still on the stack: the
    // `Shared` is alive, and it is only ever accessed through shared references.
    let shared = unsafe { &*shared };
    Some(f(shared, device))
}
