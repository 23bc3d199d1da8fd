//! Framework objects on the host: the object table, parent/child disposal and contexts.
//!
//! Mirrors KMDF's object life cycle (kmdf-semantics section 5): deleting an object disposes
//! its children first, then runs its own `EvtCleanupCallback`; the object is destroyed, and
//! its context dropped, when its last reference goes. A child holds a reference on its
//! parent until the child is disposed; the parent's child list holds the child's creation
//! reference.

use super::std;
use std::any::Any;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::fmt;
use std::format;
use std::ptr;
use std::string::String;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, PoisonError, Weak};

use super::sync_shim::thread::{self, ThreadId};
use super::sync_shim::{
    AtomicBool, AtomicU64, AtomicUsize, Condvar, Mutant, Mutex, MutexGuard, mutant,
};
use std::vec::Vec;

use super::lockdep;
use super::pool::{self, Pool};
use super::timer::{Clock, TimerState};
use super::trace::{CallbackPanicked, PanicReport, TraceEntry, VerifierFinding};
use super::work_item::WorkItemState;
use crate::device::FailedAction;
use crate::object::sealed;
use crate::{Callback, NtStatus, Result};

/// Locks a mutex, ignoring poisoning: a panicking driver callback must not take the
/// runtime's own bookkeeping down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The kind of a framework object, printed as its handle type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// `WDFDRIVER`.
    Driver,
    /// `WDFDEVICE`.
    Device,
    /// `WDFWORKITEM`.
    WorkItem,
    /// `WDFTIMER`.
    Timer,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Driver => "WDFDRIVER",
            ObjectKind::Device => "WDFDEVICE",
            ObjectKind::WorkItem => "WDFWORKITEM",
            ObjectKind::Timer => "WDFTIMER",
        })
    }
}

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
}

/// The verifier's state: devices whose `SelfManagedIoFlush` has returned, and findings.
#[derive(Default)]
struct Verifier {
    flushed: std::collections::BTreeSet<u64>,
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

/// Failures to inject: the Nth call of a callback fails with a status.
#[derive(Default)]
struct Injections {
    /// Each fires once.
    planned: Vec<Injection>,
    /// How many times each callback was reached so far: over the whole runtime (`None`) and
    /// per device node.
    calls: BTreeMap<(Option<u64>, Callback), u64>,
}

/// One planned failure: the `nth` call of `callback` (counted over the whole runtime, or on
/// one device node when `device` is set) fails with `status`.
struct Injection {
    callback: Callback,
    device: Option<u64>,
    nth: u64,
    status: NtStatus,
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
        })
    }

    /// The virtual clock.
    pub(crate) fn clock(&self) -> &Mutex<Clock> {
        &self.clock
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
        status: NtStatus,
    ) {
        lock(&self.injections).planned.push(Injection { callback, device, nth, status });
    }

    /// Counts a call of `callback` on `device`; returns the status to fail it with, if one
    /// is planned for this call.
    fn injected(&self, callback: Callback, device: Option<u64>) -> Option<NtStatus> {
        let mut injections = lock(&self.injections);
        let mut count = |key| {
            let count = injections.calls.entry(key).or_insert(0);
            *count += 1;
            *count
        };
        let overall = count((None, callback));
        let on_device = device.map(|device| count((Some(device), callback)));
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
        let _ = self.record(Callback::DebugPrint, Some(message), device);
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

    /// Appends an entry for a callback about to run; returns its index for
    /// [`finish`](Self::finish) (`usize::MAX` when tracing is off, which matches no entry).
    pub(crate) fn record(
        &self,
        callback: Callback,
        args: Option<String>,
        device: Option<u64>,
    ) -> usize {
        if !self.tracing.load(Ordering::Relaxed) {
            return usize::MAX;
        }
        let entry =
            TraceEntry { callback, args, status: None, device, injected: false, panicked: false };
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
        let _entered = super::current::enter(self, device);
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
                let status = NtStatus::UNSUCCESSFUL;
                self.finish(index, fallible.then_some(status), true);
                Err(status)
            }
        }
    }

    /// Notes that `device`'s `SelfManagedIoFlush` returned: from now on its work items and
    /// timers must not run (kmdf-semantics.md section 4: drivers flush them there).
    pub(crate) fn note_flushed(&self, device: u64) {
        lock(&self.verifier).flushed.insert(device);
    }

    /// The verifier's check before deferred work (a work item or a timer) of `device` runs.
    fn check_deferred_work(&self, callback: Callback, device: Option<u64>) {
        let Some(device) = device else { return };
        let mut verifier = lock(&self.verifier);
        if verifier.flushed.contains(&device) {
            let finding = VerifierFinding {
                device,
                callback,
                message: std::format!(
                    "{callback} ran after EvtDeviceSelfManagedIoFlush returned: the driver left \
                     it queued or running; flush (or stop) the device's work items and timers \
                     in SelfManagedIoFlush or SelfManagedIoSuspend (kmdf-semantics.md section 4)"
                ),
            };
            verifier.findings.push((finding, false));
        }
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

    /// Records and runs a callback that returns nothing.
    pub(crate) fn invoke_void(
        &self,
        callback: Callback,
        args: Option<String>,
        device: Option<u64>,
        run: impl FnOnce(),
    ) {
        if matches!(callback, Callback::WorkItem | Callback::TimerFunc) {
            self.check_deferred_work(callback, device);
        }
        let index = self.record(callback, args, device);
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

    /// Records and runs a fallible callback, or fails it without running it when a failure
    /// is injected for this call. A panic in `run` is caught and reported as a failure.
    pub(crate) fn invoke(
        &self,
        callback: Callback,
        args: Option<String>,
        device: Option<u64>,
        run: impl FnOnce() -> Result,
    ) -> Result {
        if let Some(status) = self.injected(callback, device) {
            let entry = TraceEntry {
                callback,
                args,
                status: Some(status),
                device,
                injected: true,
                panicked: false,
            };
            if self.tracing.load(Ordering::Relaxed) {
                lock(&self.trace).push(entry);
            }
            return Err(status);
        }
        let index = self.record(callback, args, device);
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
}

/// What the object does when it is disposed: a monomorphized call of the driver's
/// `EvtCleanupCallback`, when the driver implements one.
pub(crate) type CleanupHook = fn(&RawObject);

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

/// What one kind of object adds to the common object: its own state, and what it does when
/// it is disposed, before its `EvtCleanupCallback`.
pub(crate) enum Extension {
    /// A `WDFWORKITEM`: its queue and run bookkeeping. Shared with the runs, which signal
    /// the end of a run after they released their reference on the object.
    WorkItem(Arc<WorkItemState>),
    /// A `WDFTIMER`: its place on the virtual clock and its runs (shared likewise).
    Timer(Arc<TimerState>),
}

impl Extension {
    fn rundown(&self, object: &RawObject) {
        match self {
            Extension::WorkItem(state) => state.rundown(object),
            Extension::Timer(state) => state.rundown(object),
        }
    }
}

/// A framework object on the host. `&Device<T>` and the other handle types point at one.
///
/// # Invariant
///
/// Every `RawObject` lives in an `Arc`: [`create_with`](Self::create_with) is its only
/// constructor.
pub struct RawObject {
    /// The `Arc` this object lives in, to hand out more counted references from a borrow.
    me: Weak<RawObject>,
    shared: Arc<Shared>,
    id: u64,
    kind: ObjectKind,
    device: Option<u64>,
    cleanup: Option<CleanupHook>,
    extension: Option<Extension>,
    context: OnceLock<Box<dyn Any + Send + Sync>>,
    /// For a device, the `WDFDRIVER` it belongs to (`WdfGetDriver`), held as long as the
    /// device object exists so its driver value can be lent out with the device's lifetime.
    owner: OnceLock<Arc<RawObject>>,
    links: Mutex<Links>,
    /// Signalled when a disposal completes.
    disposed: Condvar,
}

impl RawObject {
    /// Creates an object with its creation reference, as a child of `parent` if given.
    ///
    /// `device` is the device node the object belongs to, for the trace; a child inherits its
    /// parent's when `None`.
    ///
    /// # Errors
    ///
    /// `STATUS_DELETE_PENDING` when the parent is being deleted or was deleted.
    pub(crate) fn create(
        shared: &Arc<Shared>,
        kind: ObjectKind,
        parent: Option<&Arc<RawObject>>,
        device: Option<u64>,
        cleanup: Option<CleanupHook>,
    ) -> Result<Arc<Self>> {
        Self::create_with(shared, kind, parent, device, cleanup, None, None)
    }

    /// [`create`](Self::create) for an object with kind-specific state and, optionally, its
    /// context already written: such an object is complete before its parent can reach it,
    /// so a deletion of the parent on another thread always finds it whole.
    ///
    /// # Errors
    ///
    /// `STATUS_DELETE_PENDING` when the parent is being deleted or was deleted. The context
    /// is dropped then without any callback: the object never existed.
    pub(crate) fn create_with(
        shared: &Arc<Shared>,
        kind: ObjectKind,
        parent: Option<&Arc<RawObject>>,
        device: Option<u64>,
        cleanup: Option<CleanupHook>,
        extension: Option<Extension>,
        context: Option<Box<dyn Any + Send + Sync>>,
    ) -> Result<Arc<Self>> {
        // INVARIANT: the object is created in an `Arc`, knows that `Arc` through `me`, and
        // is only ever handed out as one.
        let build = || {
            Arc::new_cyclic(|me| Self {
                me: me.clone(),
                shared: Arc::clone(shared),
                id: shared.next_id(),
                kind,
                device: device.or_else(|| parent.and_then(|p| p.device)),
                cleanup,
                extension,
                context: context.map(OnceLock::from).unwrap_or_default(),
                owner: OnceLock::new(),
                links: Mutex::new(Links {
                    parent: parent.cloned(),
                    children: Vec::new(),
                    lifecycle: Lifecycle::Alive,
                    disposer: None,
                }),
                disposed: Condvar::new(),
            })
        };
        let object = match parent {
            Some(parent) => {
                // Linked under the parent's lock, so that a deletion of the parent either
                // finds the child whole or refused it. When refused, nothing was built: the
                // context is dropped without an `EvtDestroyCallback` (the object never
                // existed).
                let mut links = lock(&parent.links);
                if links.lifecycle != Lifecycle::Alive {
                    return Err(NtStatus::DELETE_PENDING);
                }
                let object = build();
                links.children.push(Arc::clone(&object));
                object
            }
            None => build(),
        };
        lock(&shared.live).insert(object.id, kind);
        Ok(object)
    }

    /// Another counted reference to this object.
    pub(crate) fn to_arc(&self) -> Arc<Self> {
        // A `RawObject` is only reached through an `Arc` that keeps it alive (type
        // invariant), so the upgrade succeeds while `self` is borrowed.
        self.me.upgrade().expect("kmdf host runtime: an object borrowed after its last reference")
    }

    /// Records the driver a device belongs to; see [`owner`](Self::owner).
    pub(crate) fn set_owner(&self, driver: Arc<RawObject>) {
        let _ = self.owner.set(driver);
    }

    /// The `WDFDRIVER` of a device.
    pub(crate) fn owner(&self) -> Option<&RawObject> {
        self.owner.get().map(|driver| &**driver)
    }

    /// The kind-specific state given to [`create_with`](Self::create_with).
    pub(crate) fn extension(&self) -> Option<&Extension> {
        self.extension.as_ref()
    }

    /// The device node the object belongs to, as the trace records it.
    pub(crate) fn device(&self) -> Option<u64> {
        self.device
    }

    /// The runtime this object lives in.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Writes the context. Done once, right after creation, before the handle escapes.
    ///
    /// # Panics
    ///
    /// If the object already has a context (a bug in the runtime).
    pub(crate) fn set_context<T: Send + Sync + 'static>(&self, value: T) {
        assert!(
            self.context.set(Box::new(value)).is_ok(),
            "kmdf host runtime: context written twice"
        );
    }

    /// The context of an object created with a `T`, as the handle types reach it.
    ///
    /// # Panics
    ///
    /// If the object has no `T` context: a bug in the runtime, since handle types are only
    /// made for objects created with their context type.
    pub(crate) fn expect_context<T: 'static>(&self) -> &T {
        self.context::<T>().unwrap_or_else(|| {
            panic!(
                "kmdf host runtime: {self:?} has no context of type {}",
                std::any::type_name::<T>()
            )
        })
    }

    /// The context, if it is a `T` (`WdfObjectGetTypedContext`: `None` when absent).
    pub(crate) fn context<T: 'static>(&self) -> Option<&T> {
        self.context.get()?.downcast_ref::<T>()
    }

    /// Whether the object has children that are not yet disposed.
    pub(crate) fn has_children(&self) -> bool {
        !lock(&self.links).children.is_empty()
    }

    /// Deletes the object (`WdfObjectDelete`, or the framework deleting it): disposes the
    /// children, then runs the kind's rundown (a work item waits for its callback), then
    /// this object's `EvtCleanupCallback`, then drops the creation reference held by the
    /// parent and the reference on the parent.
    ///
    /// Returns once the object is disposed: when another thread is disposing it already,
    /// waits for that disposal to finish, so that a parent's cleanup never overtakes a
    /// child's. On the disposing thread itself (a cleanup callback deleting its own object)
    /// and once disposed, it does nothing.
    pub(crate) fn delete(self: &Arc<Self>) {
        let me = thread::current().id();
        let children = {
            let mut links = lock(&self.links);
            match links.lifecycle {
                Lifecycle::Alive => {}
                Lifecycle::Disposing
                    if links.disposer != Some(me)
                        && !mutant(Mutant::DeleteDoesNotWaitForDisposal) =>
                {
                    while links.lifecycle != Lifecycle::Disposed {
                        links = self.disposed.wait(links).unwrap_or_else(PoisonError::into_inner);
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
            child.delete();
        }
        drop(children);
        if let Some(extension) = &self.extension {
            extension.rundown(self);
        }
        // A panicking cleanup callback is caught at the boundary: the object is still
        // disposed, and nobody waits for it forever.
        if let Some(cleanup) = self.cleanup {
            let args = format!("{}", self.kind);
            self.shared.invoke_void(Callback::ObjectCleanup, Some(args), self.device, || {
                cleanup(self);
            });
        }
        let parent = {
            let mut links = lock(&self.links);
            links.lifecycle = Lifecycle::Disposed;
            links.disposer = None;
            links.parent.take()
        };
        self.disposed.notify_all();
        if let Some(parent) = parent {
            lock(&parent.links).children.retain(|child| !Arc::ptr_eq(child, self));
        }
    }
}

/// A counted reference to an object, as `ObjectRef` holds it.
pub(crate) type RawRef = Arc<RawObject>;

/// The object a reference points at.
pub(crate) fn raw_of(raw: &RawRef) -> &RawObject {
    raw
}

/// Views an object as the handle type `O`.
///
/// Callers pick the `O` the object was created as. (A mismatch would still not be undefined
/// behaviour: handle types reach an object's context only through checked downcasts.)
pub(crate) fn view<O: sealed::Object>(raw: &RawObject) -> &O {
    const {
        assert!(size_of::<O>() == size_of::<RawObject>());
        assert!(align_of::<O>() == align_of::<RawObject>());
    }
    // SAFETY: `O` is a `#[repr(transparent)]` struct whose only non-zero-sized field is a
    // `RawObject` (the invariant of the sealed `Object` trait, implemented only in this
    // crate), so it has `RawObject`'s layout; the reference keeps `raw`'s lifetime.
    unsafe { &*ptr::from_ref(raw).cast::<O>() }
}

impl Drop for RawObject {
    /// The last reference is gone: `EvtDestroyCallback`, then the context is dropped.
    fn drop(&mut self) {
        if self.context.get().is_some() {
            let args = format!("{}", self.kind);
            self.shared.record(Callback::ObjectDestroy, Some(args), self.device);
        }
        lock(&self.shared.live).remove(&self.id);
        // The context is dropped with the fields, after the entry above.
    }
}

impl fmt::Debug for RawObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.kind, self.id)
    }
}
