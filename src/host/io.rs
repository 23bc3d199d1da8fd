//! The I/O package of one device on the host (`FxPkgIo`, `FxIoQueue`, `FxRequest`): its
//! queues, its requests, its open files and its device interfaces, and KMDF's rules for
//! them (docs/kmdf-behaviour.md section 9).
//!
//! One mutex guards the whole package; driver callbacks are never called under it. Requests
//! are presented by one *dispatcher* at a time (the thread that submitted, completed or
//! started something, whichever finds nobody dispatching): the others leave a note and the
//! dispatcher looks again before it stops, so no presentation is lost.
//!
//! Why one file of about 1,700 lines: one mutex guards the whole package, and the
//! dispatcher, the power transitions (`IoStop`, `IoResume`), the purges, the cancellation
//! and the completion all read and change the same private state under it, in an order that
//! `tests/loom_io.rs` checks. Split by concern, every part would need that state's fields
//! visible to the others and the lock discipline would be spread over files. What plugs in
//! from outside lives elsewhere: the queue and file object kinds (`io_queue.rs`, `file.rs`),
//! the request's value (`request.rs`), the application side (`client.rs`).
//!
//! Who completes a request is decided here, under the mutex: the request's value
//! ([`RawRequest`]) is held by exactly one party at a time (a queue, the driver, the
//! cancelable slot), and whoever takes it out completes it or hands it on.
//!
//! The module knows no object kind's state: queues and files plug in through
//! [`QueueTable`] and [`FileTable`], written by `io_queue.rs` and `file.rs`.

use super::std;
use std::collections::{BTreeMap, VecDeque};
use std::format;
use std::string::String;
use std::sync::{Arc, OnceLock, Weak};
use std::vec;
use std::vec::Vec;

use super::mutex::lock;
use super::object::RawObject;
use super::policy::PowerPolicy;
use super::pool;
use super::shared::Shared;
use super::sync::{at_dispatch, current_irql};
use super::sync_shim::{Condvar, Mutant, Mutex, MutexGuard, mutant};
use super::trace::{TraceEntry, VerifierFinding};
use crate::callback::vtable;
use crate::file::IoType;
use crate::interface::Guid;
use crate::io_queue::{Dispatch, IoQueueConfig, StopAction};
use crate::request::{Parameters, RequestType};
use crate::sync::Irql;
use crate::{Callback, NtError, NtStatus, Result};

/// What `DeviceInit` configured for the device's I/O.
#[derive(Clone, Copy, Default)]
pub(crate) struct IoInit {
    pub(crate) io_type: IoType,
    pub(crate) exclusive: bool,
    pub(crate) file: Option<FileTable>,
}

/// `WDF_FILEOBJECT_CONFIG` on the host: the file callbacks, monomorphized.
#[derive(Clone, Copy)]
pub(crate) struct FileTable {
    pub(crate) registered: vtable::FileCallbacks,
    /// The device context type the file callbacks were written for (`F::Device`).
    pub(crate) device: std::any::TypeId,
    /// `EvtDeviceFileCreate`: builds the file's context (device, file).
    pub(crate) create: fn(&RawObject, &RawObject) -> Result,
    /// `EvtFileCleanup` (device, file).
    pub(crate) cleanup: fn(&RawObject, &RawObject),
    /// `EvtFileClose` (device, file).
    pub(crate) close: fn(&RawObject, &RawObject),
}

/// A queue's callbacks, monomorphized for its context type.
#[derive(Clone, Copy)]
pub(crate) struct QueueTable {
    pub(crate) registered: vtable::IoQueueCallbacks,
    pub(crate) call: fn(&RawObject, QueueCall<'_>),
}

/// One queue callback with its arguments.
pub(crate) enum QueueCall<'a> {
    Read(RawRequest, usize),
    Write(RawRequest, usize),
    DeviceControl(RawRequest, usize, usize, u32),
    InternalDeviceControl(RawRequest, usize, usize, u32),
    Default(RawRequest),
    Stop(RawStop<'a>),
    Resume(u64),
    CanceledOnQueue(RawRequest),
    ReadyNotify,
    Cancel(RawRequest),
}

/// `EvtIoStop`'s request, as the facade's `IoStop` holds it.
pub(crate) struct RawStop<'a> {
    pub(crate) id: u64,
    pub(crate) action: StopAction,
    pub(crate) cancelable: bool,
    pub(crate) io: &'a Arc<IoPackage>,
}

/// What a completed request returns to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The completion status.
    pub status: NtStatus,
    /// The information: the bytes transferred.
    pub information: usize,
    /// What the driver wrote: the first `information` bytes of the output buffer of a read
    /// or a device control; empty for a write.
    pub data: Vec<u8>,
}

/// Where a request's completion is published, for the application that waits for it.
pub(crate) struct Done {
    result: Mutex<Option<Completion>>,
    signal: Condvar,
}

impl Done {
    fn new() -> Arc<Self> {
        Arc::new(Self { result: Mutex::new(None), signal: Condvar::new() })
    }

    pub(crate) fn get(&self) -> Option<Completion> {
        lock(&self.result).clone()
    }

    fn set(&self, completion: Completion) {
        let mut result = lock(&self.result);
        assert!(result.is_none(), "kmdf host runtime: a request completed twice");
        *result = Some(completion);
        drop(result);
        self.signal.notify_all();
    }
}

/// What every party holding a request shares about it.
pub(crate) struct RequestCore {
    pub(crate) id: u64,
    pub(crate) parameters: Parameters,
    /// The file object it was sent on.
    pub(crate) file: Option<Arc<RawObject>>,
    pub(crate) io: Arc<IoPackage>,
    done: Arc<Done>,
}

/// A request's value: held by one party at a time (a queue, the driver, the cancelable
/// slot). Dropped uncompleted, it completes itself `STATUS_CANCELLED` and the verifier
/// reports it.
pub(crate) struct RawRequest {
    pub(crate) core: Arc<RequestCore>,
    pub(crate) input: Vec<u8>,
    pub(crate) output: Vec<u8>,
    completed: bool,
}

impl RawRequest {
    /// Completes the request (`WdfRequestCompleteWithInformation`).
    pub(crate) fn complete(mut self, status: NtStatus, information: usize) {
        self.completed = true;
        let output = std::mem::take(&mut self.output);
        let core = Arc::clone(&self.core);
        drop(self);
        core.io.complete(&core, status, information, output);
    }
}

impl Drop for RawRequest {
    fn drop(&mut self) {
        if self.completed {
            return;
        }
        self.completed = true;
        let core = Arc::clone(&self.core);
        let callback = handler_callback(core.parameters.request_type());
        core.io.shared.report(VerifierFinding {
            device: core.io.node,
            callback,
            message: format!(
                "request {} ({callback}) was dropped without being completed; kmdf completed it \
                 STATUS_CANCELLED: complete every request the driver owns \
                 (docs/kmdf-behaviour.md section 9)",
                core.id
            ),
        });
        let output = std::mem::take(&mut self.output);
        core.io.complete(&core, NtStatus::CANCELLED, 0, output);
    }
}

/// The callback a request of `request_type` is presented with.
fn handler_callback(request_type: RequestType) -> Callback {
    match request_type {
        RequestType::Read => Callback::IoRead,
        RequestType::Write => Callback::IoWrite,
        RequestType::DeviceControl => Callback::IoDeviceControl,
        RequestType::InternalDeviceControl => Callback::IoInternalDeviceControl,
    }
}

/// The driver's claim on a cancelable request.
pub(crate) struct RawCancelable {
    pub(crate) io: Arc<IoPackage>,
    pub(crate) id: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// In its queue, not presented.
    Queued,
    /// The driver owns the value.
    Owned,
    /// The driver owns it, the framework holds the value (`slot`).
    Cancelable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    None,
    /// `EvtIoStop` is due or delivered, not acknowledged yet.
    Pending(StopAction),
    /// Acknowledged without requeue: kept by the driver, `EvtIoResume` at the power-up.
    Kept,
}

/// The framework's state of one request it has not completed.
struct RequestState {
    queue: usize,
    place: Place,
    /// The application cancelled it, or a purge is in progress (the IRP's cancel flag, as
    /// `WdfRequestIsCanceled` and `WdfRequestMarkCancelableEx` read it).
    canceled: bool,
    /// KMDF cancelled it (`FxRequest::m_Canceled`): `EvtRequestCancel` or
    /// `EvtIoCanceledOnQueue` was delivered; it gets no `EvtIoStop`.
    framework_canceled: bool,
    presented_before: bool,
    stop: Stop,
    /// When it was last presented or retrieved: the order of `EvtIoStop` calls.
    order: u64,
    file: Option<u64>,
    /// The value while cancelable, and the queue whose `EvtRequestCancel` it gets.
    slot: Option<RawRequest>,
    cancel_with: Option<(Arc<RawObject>, QueueTable)>,
}

/// One queue's state.
#[allow(clippy::struct_excessive_bools, reason = "KMDF's queue state flags, one each")]
struct QueueData {
    object: Arc<RawObject>,
    table: QueueTable,
    config: IoQueueConfig,
    /// Takes new requests (not purged, drained).
    accepting: bool,
    /// Presents (started, not stopped).
    started: bool,
    /// Purged for removal, or by `WdfIoQueuePurge`: requeues cancel.
    purging: bool,
    /// Purged for the device's removal already.
    purged_for_removal: bool,
    queued: VecDeque<RawRequest>,
    owned: usize,
    running: usize,
    /// `EvtIoQueueState` is due.
    ready_due: bool,
    /// The queue holds a power reference on its device (`FxIoQueue::SetTransitionFromEmpty`):
    /// taken when it went from empty (nothing queued or driver-owned) to not empty.
    holds_reference: bool,
}

impl QueueData {
    fn presents(&self, powered: bool) -> bool {
        self.started
            && (powered || !self.config.is_power_managed())
            && self.config.dispatch() != Dispatch::Manual
    }

    fn has_room(&self) -> bool {
        match self.config.dispatch() {
            Dispatch::Sequential => self.owned == 0,
            Dispatch::Parallel { limit: Some(limit) } => {
                self.owned < usize::try_from(limit.get()).unwrap_or(usize::MAX)
            }
            Dispatch::Parallel { limit: None } => true,
            Dispatch::Manual => false,
        }
    }
}

struct Interface {
    guid: Guid,
    reference: Option<String>,
    enabled: bool,
    /// Enabled at the end of the first start (created before it, never set by the driver).
    automatic: bool,
}

struct OpenFile {
    object: Arc<RawObject>,
    outstanding: usize,
    closing: bool,
}

#[derive(Default)]
#[allow(clippy::struct_excessive_bools, reason = "the package's state flags, one each")]
struct IoInner {
    queues: BTreeMap<usize, QueueData>,
    next_queue: usize,
    routes: BTreeMap<RequestTypeKey, usize>,
    default_queue: Option<usize>,
    requests: BTreeMap<u64, RequestState>,
    next_order: u64,
    powered: bool,
    started_once: bool,
    /// The device is removed: nothing is accepted or presented any more.
    removed: bool,
    dispatching: bool,
    redispatch: bool,
    interfaces: Vec<Interface>,
    files: BTreeMap<u64, OpenFile>,
    open_handles: usize,
}

/// [`RequestType`] as a map key.
type RequestTypeKey = u8;

const fn key(request_type: RequestType) -> RequestTypeKey {
    match request_type {
        RequestType::Read => 0,
        RequestType::Write => 1,
        RequestType::DeviceControl => 2,
        RequestType::InternalDeviceControl => 3,
    }
}

/// The I/O package of one device.
pub(crate) struct IoPackage {
    pub(crate) shared: Arc<Shared>,
    pub(crate) node: u64,
    pub(crate) init: IoInit,
    /// The device's power policy, for the power references of power-managed queues.
    policy: Arc<PowerPolicy>,
    device: OnceLock<Weak<RawObject>>,
    inner: Mutex<IoInner>,
    changed: Condvar,
}

/// What the dispatcher does next, outside the lock.
enum Work {
    Call(Arc<RawObject>, QueueTable, usize, Callback, Option<String>, PendingCall),
    Complete(RawRequest, NtStatus),
}

/// A queue call that owns its request, before it is made.
enum PendingCall {
    Request(RawRequest),
    ReadyNotify,
}

/// A framework action decided under the lock, done outside it.
enum Action {
    Complete(RawRequest, NtStatus),
    Call(Arc<RawObject>, QueueTable, usize, Callback, Option<String>, QueueCallOwned),
}

/// A queue call decided under the lock (its request already taken out).
enum QueueCallOwned {
    CanceledOnQueue(RawRequest),
    Cancel(RawRequest),
    Resume(u64),
    Stop(u64, StopAction, bool),
}

impl IoPackage {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        node: u64,
        init: IoInit,
        policy: &Arc<PowerPolicy>,
    ) -> Arc<Self> {
        let io = Arc::new(Self {
            shared: Arc::clone(shared),
            node,
            init,
            policy: Arc::clone(policy),
            device: OnceLock::new(),
            inner: Mutex::new(IoInner::default()),
            changed: Condvar::new(),
        });
        let any: Arc<dyn std::any::Any + Send + Sync> = Arc::clone(&io) as _;
        shared.register_io(Arc::downgrade(&any));
        io
    }

    /// Records the device object, once created.
    pub(crate) fn set_device(&self, device: &Arc<RawObject>) {
        let _ = self.device.set(Arc::downgrade(device));
    }

    /// The device object, while it exists.
    pub(crate) fn device(&self) -> Option<Arc<RawObject>> {
        self.device.get()?.upgrade()
    }

    fn lock(&self) -> MutexGuard<'_, IoInner> {
        lock(&self.inner)
    }

    // ---- queues ------------------------------------------------------------------------

    /// Reserves a queue number (`WdfIoQueueCreate`), checking the configuration's
    /// device-wide rules.
    pub(crate) fn new_queue(&self, config: IoQueueConfig) -> Result<usize> {
        let mut inner = self.lock();
        if inner.removed {
            return Err(NtError::DELETE_PENDING);
        }
        if config.is_default_queue() {
            if inner.default_queue.is_some() {
                return Err(NtError::UNSUCCESSFUL);
            }
            if inner.started_once {
                return Err(NtError::INVALID_DEVICE_STATE);
            }
        }
        let id = inner.next_queue;
        inner.next_queue += 1;
        Ok(id)
    }

    /// Adds the queue `id` created as `object`.
    pub(crate) fn add_queue(
        &self,
        id: usize,
        object: Arc<RawObject>,
        table: QueueTable,
        config: IoQueueConfig,
    ) {
        let mut inner = self.lock();
        if config.is_default_queue() {
            inner.default_queue = Some(id);
        }
        inner.queues.insert(
            id,
            QueueData {
                object,
                table,
                config,
                accepting: true,
                started: true,
                purging: false,
                purged_for_removal: false,
                queued: VecDeque::new(),
                owned: 0,
                running: 0,
                ready_due: false,
                holds_reference: false,
            },
        );
    }

    /// The queue `id` is being deleted (with its device): it leaves the package, and what
    /// is still queued in it is cancelled.
    pub(crate) fn remove_queue(&self, id: usize) {
        // Dropped after the lock: the queue's last reference may drop its context, and the
        // requests that context keeps complete themselves.
        let queue = {
            let mut inner = self.lock();
            let Some(queue) = inner.queues.remove(&id) else { return };
            inner.routes.retain(|_, queue| *queue != id);
            if inner.default_queue == Some(id) {
                inner.default_queue = None;
            }
            queue
        };
        for request in queue.queued {
            request.complete(NtStatus::CANCELLED, 0);
        }
    }

    /// `WdfDeviceConfigureRequestDispatching`.
    pub(crate) fn configure_dispatching(&self, id: usize, request_type: RequestType) -> Result {
        let mut inner = self.lock();
        if inner.started_once {
            return Err(NtError::INVALID_DEVICE_STATE);
        }
        let queue = inner.queues.get(&id).ok_or(NtError::DELETE_PENDING)?;
        let registered = queue.table.registered;
        let handler = registered.contains(handler_callback(request_type));
        if queue.config.is_default_queue()
            || (queue.config.dispatch() != Dispatch::Manual && !handler && !registered.default)
        {
            return Err(NtError::INVALID_DEVICE_REQUEST);
        }
        match inner.routes.get(&key(request_type)) {
            Some(&other) if other != id => Err(NtError::WDF_BUSY),
            _ => {
                inner.routes.insert(key(request_type), id);
                Ok(())
            }
        }
    }

    /// `WdfIoQueueStart`.
    pub(crate) fn start_queue(self: &Arc<Self>, id: usize) {
        {
            let mut inner = self.lock();
            let Some(queue) = inner.queues.get_mut(&id) else { return };
            queue.accepting = true;
            queue.started = true;
            queue.purging = false;
            if !queue.queued.is_empty() {
                queue.ready_due = true;
            }
        }
        self.dispatch();
    }

    /// `WdfIoQueueStop` (`purge`: `WdfIoQueueStopAndPurge`).
    pub(crate) fn stop_queue(self: &Arc<Self>, id: usize, purge: bool) {
        let actions = {
            let mut inner = self.lock();
            let Some(queue) = inner.queues.get_mut(&id) else { return };
            queue.started = false;
            if purge { Self::cancel_queue(&mut inner, id, false) } else { Vec::new() }
        };
        self.act(actions);
    }

    /// `WdfIoQueuePurge`.
    pub(crate) fn purge_queue(self: &Arc<Self>, id: usize) {
        let actions = {
            let mut inner = self.lock();
            let Some(queue) = inner.queues.get_mut(&id) else { return };
            queue.accepting = false;
            queue.purging = true;
            Self::cancel_queue(&mut inner, id, false)
        };
        self.act(actions);
    }

    /// `WdfIoQueueDrain`.
    pub(crate) fn drain_queue(self: &Arc<Self>, id: usize) {
        if let Some(queue) = self.lock().queues.get_mut(&id) {
            queue.accepting = false;
        }
        self.dispatch();
    }

    /// Cancels what a purge of queue `id` cancels: the queued requests and the cancelable
    /// ones the driver owns; with `stop_others`, the other driver-owned requests get
    /// `EvtIoStop(Purge)` (and count as cancelled).
    fn cancel_queue(inner: &mut IoInner, id: usize, stop_others: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(queue) = inner.queues.get_mut(&id) else { return actions };
        let object = Arc::clone(&queue.object);
        let table = queue.table;
        let queued: Vec<RawRequest> = queue.queued.drain(..).collect();
        for request in queued {
            let state = inner.requests.get_mut(&request.core.id).expect("a queued request");
            if state.presented_before && table.registered.canceled_on_queue {
                state.place = Place::Owned;
                state.framework_canceled = true;
                inner.next_order += 1;
                state.order = inner.next_order;
                inner.queues.get_mut(&id).expect("the queue").owned += 1;
                actions.push(Action::Call(
                    Arc::clone(&object),
                    table,
                    id,
                    Callback::IoCanceledOnQueue,
                    None,
                    QueueCallOwned::CanceledOnQueue(request),
                ));
            } else {
                actions.push(Action::Complete(request, NtStatus::CANCELLED));
            }
        }
        let mut owned: Vec<(u64, u64)> = inner
            .requests
            .iter()
            .filter(|(_, state)| state.queue == id && state.place != Place::Queued)
            .map(|(&request, state)| (state.order, request))
            .collect();
        owned.sort_unstable();
        for (_, request) in owned {
            let state = inner.requests.get_mut(&request).expect("listed");
            if let Some(value) = state.slot.take() {
                state.place = Place::Owned;
                state.canceled = true;
                state.framework_canceled = true;
                let (object, table) = state.cancel_with.take().expect("a cancelable request");
                actions.push(Action::Call(
                    object,
                    table,
                    id,
                    Callback::RequestCancel,
                    None,
                    QueueCallOwned::Cancel(value),
                ));
            } else if stop_others && !state.framework_canceled {
                state.canceled = true;
                if table.registered.stop {
                    state.stop = Stop::Pending(StopAction::Purge);
                    actions.push(Action::Call(
                        Arc::clone(&object),
                        table,
                        id,
                        Callback::IoStop,
                        Some(String::from("Purge")),
                        QueueCallOwned::Stop(request, StopAction::Purge, false),
                    ));
                }
            } else {
                state.canceled = true;
            }
        }
        for action in &actions {
            if let Action::Call(_, _, queue, ..) = action
                && let Some(queue) = inner.queues.get_mut(queue)
            {
                queue.running += 1;
            }
        }
        actions
    }

    /// Waits until queue `id` has no request the driver owns and no running callback (with
    /// `purge_or_drain`, no queued request either): a synchronous queue operation. On the
    /// test's thread it gives up when nothing can make it so (no queue callback running
    /// elsewhere, no work item queued or running); in deferred work it waits as KMDF does.
    pub(crate) fn wait_queue(&self, id: usize, purge_or_drain: bool) -> Result {
        let done = |inner: &IoInner| {
            inner.queues.get(&id).is_none_or(|queue| {
                queue.owned == 0
                    && queue.running == 0
                    && (!purge_or_drain || queue.queued.is_empty())
            })
        };
        if pool::in_deferred_work() {
            let mut inner = self.lock();
            while !done(&inner) {
                inner = self.changed.wait(inner).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            return Ok(());
        }
        // As `settle`: first while a queue callback runs on another thread, then once for
        // the work items.
        let mut waited_for_work_items = false;
        loop {
            let mut inner = self.lock();
            loop {
                if done(&inner) {
                    return Ok(());
                }
                if !inner.queues.values().any(|queue| queue.running > 0) {
                    break;
                }
                inner = self.changed.wait(inner).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            drop(inner);
            if waited_for_work_items {
                return Err(NtError::POSSIBLE_DEADLOCK);
            }
            self.shared.pool().wait_idle();
            waited_for_work_items = true;
        }
    }

    /// `WdfIoQueueRetrieveNextRequest`.
    pub(crate) fn retrieve(&self, id: usize) -> Result<RawRequest> {
        let mut inner = self.lock();
        let powered = inner.powered;
        let queue = inner.queues.get_mut(&id).ok_or(NtError::DELETE_PENDING)?;
        if matches!(queue.config.dispatch(), Dispatch::Parallel { .. }) {
            return Err(NtError::INVALID_DEVICE_STATE);
        }
        if !queue.started || (queue.config.is_power_managed() && !powered) {
            return Err(NtError::WDF_PAUSED);
        }
        // A sequential queue gives its next queued request even while the driver owns the one
        // it presented: `FxIoQueue::GetRequest` does not look at the driver's requests.
        let request = queue.queued.pop_front().ok_or(NtError::NO_MORE_ENTRIES)?;
        queue.owned += 1;
        inner.next_order += 1;
        let order = inner.next_order;
        let state = inner.requests.get_mut(&request.core.id).expect("a queued request");
        state.place = Place::Owned;
        state.order = order;
        Ok(request)
    }

    // ---- requests ----------------------------------------------------------------------

    /// An application's request arrives (`FxPkgIo::Dispatch`): routed to its queue, or
    /// completed at once by the rules of section 9.
    pub(crate) fn submit(
        self: &Arc<Self>,
        file: Option<Arc<RawObject>>,
        parameters: Parameters,
        input: Vec<u8>,
    ) -> (u64, Arc<Done>) {
        let output_length = match parameters {
            Parameters::Read { length } => length,
            Parameters::Write { .. } => 0,
            Parameters::DeviceControl { output_length, .. }
            | Parameters::InternalDeviceControl { output_length, .. } => output_length,
        };
        let done = Done::new();
        let id = self.shared.next_id();
        let file_id = file.as_ref().map(|file| file.id());
        let core = Arc::new(RequestCore {
            id,
            parameters,
            file,
            io: Arc::clone(self),
            done: Arc::clone(&done),
        });
        // METHOD_BUFFERED: in the kernel input and output are one system buffer, which starts
        // with the input bytes; the output mirrors that (docs/kmdf-behaviour.md section 9.4).
        let mut output = vec![0; output_length];
        if let Parameters::DeviceControl { code, .. }
        | Parameters::InternalDeviceControl { code, .. } = parameters
            && crate::interface::TransferMethod::of(code)
                == crate::interface::TransferMethod::Buffered
        {
            let n = input.len().min(output_length);
            output[..n].copy_from_slice(&input[..n]);
        }
        let request = RawRequest { core, input, output, completed: false };
        let refused = {
            let mut inner = self.lock();
            let request_type = parameters.request_type();
            let queue = inner.routes.get(&key(request_type)).copied().or(inner.default_queue);
            match queue.and_then(|queue| inner.queues.get(&queue).map(|data| (queue, data))) {
                _ if inner.removed => Some((request, NtStatus::DEVICE_REMOVED)),
                None => Some((request, NtStatus::INVALID_DEVICE_REQUEST)),
                Some((_, data)) if !data.accepting => {
                    Some((request, NtStatus::INVALID_DEVICE_STATE))
                }
                Some((_, data))
                    if !data.config.allows_zero_length()
                        && matches!(
                            parameters,
                            Parameters::Read { length: 0 } | Parameters::Write { length: 0 }
                        ) =>
                {
                    Some((request, NtStatus::SUCCESS))
                }
                Some((queue, _)) => {
                    inner.requests.insert(
                        id,
                        RequestState {
                            queue,
                            place: Place::Queued,
                            canceled: false,
                            framework_canceled: false,
                            presented_before: false,
                            stop: Stop::None,
                            order: 0,
                            file: file_id,
                            slot: None,
                            cancel_with: None,
                        },
                    );
                    if let Some(file) = file_id.and_then(|file| inner.files.get_mut(&file)) {
                        file.outstanding += 1;
                    }
                    Self::enqueue(&mut inner, queue, request, false);
                    None
                }
            }
        };
        if let Some((request, status)) = refused {
            request.complete(status, 0);
        } else {
            self.dispatch();
        }
        (id, done)
    }

    /// Puts `request` in queue `id`, at the head or the tail.
    fn enqueue(inner: &mut IoInner, id: usize, request: RawRequest, head: bool) {
        let queue = inner.queues.get_mut(&id).expect("the queue");
        if queue.queued.is_empty()
            && queue.config.dispatch() == Dispatch::Manual
            && queue.table.registered.ready_notify
        {
            queue.ready_due = true;
        }
        if head {
            queue.queued.push_front(request);
        } else {
            queue.queued.push_back(request);
        }
    }

    /// Publishes the completion of `core` and forgets the request.
    fn complete(
        self: &Arc<Self>,
        core: &RequestCore,
        status: NtStatus,
        information: usize,
        mut output: Vec<u8>,
    ) {
        // The state is dropped after the lock: it may hold a queue's last reference.
        let mut inner = self.lock();
        let state = inner.requests.remove(&core.id);
        let file = state.as_ref().and_then(|state| {
            if state.place != Place::Queued
                && let Some(queue) = inner.queues.get_mut(&state.queue)
            {
                queue.owned -= 1;
            }
            if let Some(open) = state.file.and_then(|file| inner.files.get_mut(&file)) {
                open.outstanding -= 1;
            }
            state.file
        });
        drop(inner);
        drop(state);
        let data = if let Parameters::Write { .. } = core.parameters {
            Vec::new()
        } else {
            output.truncate(information);
            output
        };
        core.done.set(Completion { status, information, data });
        self.changed.notify_all();
        if let Some(file) = file {
            self.close_if_done(file);
        }
        self.dispatch();
    }

    /// The most information a successful completion may report.
    pub(crate) fn information_limit(parameters: Parameters) -> usize {
        parameters.information_limit()
    }

    /// The queue request `id` belongs to, while the framework knows it.
    pub(crate) fn queue_of(&self, id: u64) -> Option<usize> {
        self.lock().requests.get(&id).map(|state| state.queue)
    }

    /// `WdfRequestIsCanceled`.
    pub(crate) fn is_canceled(&self, id: u64) -> bool {
        self.lock().requests.get(&id).is_some_and(|state| state.canceled)
    }

    /// `WdfRequestMarkCancelableEx` with `queue`'s `EvtRequestCancel`: the value goes to the
    /// slot, or comes back when the request is cancelled already.
    pub(crate) fn mark_cancelable(
        self: &Arc<Self>,
        request: RawRequest,
        queue: Arc<RawObject>,
        table: QueueTable,
    ) -> core::result::Result<RawCancelable, RawRequest> {
        let mut inner = self.lock();
        // The check and the move into the slot are one critical section: a cancellation
        // comes before both (the request comes back) or after both (it finds the slot).
        let checked = mutant(Mutant::MarkCancelableInTwoSteps);
        if checked {
            let canceled = inner.requests.get(&request.core.id).is_none_or(|state| state.canceled);
            drop(inner);
            if canceled {
                return Err(request);
            }
            inner = self.lock();
        }
        let Some(state) = inner.requests.get_mut(&request.core.id) else { return Err(request) };
        if state.canceled && !checked {
            return Err(request);
        }
        let id = request.core.id;
        state.place = Place::Cancelable;
        state.slot = Some(request);
        state.cancel_with = Some((queue, table));
        Ok(RawCancelable { io: Arc::clone(self), id })
    }

    /// `WdfRequestUnmarkCancelable`.
    pub(crate) fn unmark(&self, id: u64) -> Option<RawRequest> {
        let mut inner = self.lock();
        let state = inner.requests.get_mut(&id)?;
        let request = state.slot.take()?;
        state.place = Place::Owned;
        state.cancel_with = None;
        Some(request)
    }

    /// `WdfRequestForwardToIoQueue`.
    pub(crate) fn forward(
        self: &Arc<Self>,
        request: RawRequest,
        to: usize,
    ) -> core::result::Result<(), (RawRequest, NtError)> {
        {
            let mut inner = self.lock();
            let Some(from) = inner.requests.get(&request.core.id).map(|state| state.queue) else {
                return Err((request, NtError::INVALID_DEVICE_REQUEST));
            };
            match inner.queues.get(&to) {
                _ if from == to => return Err((request, NtError::INVALID_DEVICE_REQUEST)),
                None => return Err((request, NtError::INVALID_DEVICE_REQUEST)),
                Some(queue) if !queue.accepting => return Err((request, NtError::WDF_BUSY)),
                Some(_) => {}
            }
            if let Some(queue) = inner.queues.get_mut(&from) {
                queue.owned -= 1;
            }
            let state = inner.requests.get_mut(&request.core.id).expect("found above");
            state.queue = to;
            state.place = Place::Queued;
            state.presented_before = true;
            Self::enqueue(&mut inner, to, request, false);
        }
        self.dispatch();
        Ok(())
    }

    /// `WdfRequestRequeue` (`manual_only`), or `WdfRequestStopAcknowledge(TRUE)`.
    fn requeue_at_head(
        self: &Arc<Self>,
        request: RawRequest,
        manual_only: bool,
    ) -> core::result::Result<(), (RawRequest, NtError)> {
        let cancel = {
            let mut inner = self.lock();
            let Some(from) = inner.requests.get(&request.core.id).map(|state| state.queue) else {
                return Err((request, NtError::INVALID_DEVICE_REQUEST));
            };
            let removed = inner.removed;
            let Some(queue) = inner.queues.get_mut(&from) else {
                return Err((request, NtError::INVALID_DEVICE_REQUEST));
            };
            if manual_only && queue.config.dispatch() != Dispatch::Manual {
                return Err((request, NtError::INVALID_DEVICE_REQUEST));
            }
            if queue.purging || !queue.accepting || removed {
                Some(request)
            } else {
                queue.owned -= 1;
                let state = inner.requests.get_mut(&request.core.id).expect("found above");
                state.place = Place::Queued;
                state.presented_before = true;
                state.stop = Stop::None;
                Self::enqueue(&mut inner, from, request, true);
                None
            }
        };
        match cancel {
            Some(request) => request.complete(NtStatus::CANCELLED, 0),
            None => self.dispatch(),
        }
        Ok(())
    }

    /// `WdfRequestRequeue`.
    pub(crate) fn requeue(
        self: &Arc<Self>,
        request: RawRequest,
    ) -> core::result::Result<(), (RawRequest, NtError)> {
        self.requeue_at_head(request, true)
    }

    /// `WdfRequestStopAcknowledge(FALSE)`.
    pub(crate) fn acknowledge(&self, id: u64) {
        if let Some(state) = self.lock().requests.get_mut(&id)
            && matches!(state.stop, Stop::Pending(_))
        {
            state.stop = Stop::Kept;
        }
        self.changed.notify_all();
    }

    /// `WdfRequestStopAcknowledge(TRUE)`.
    pub(crate) fn acknowledge_requeue(
        self: &Arc<Self>,
        stop: &RawStop<'_>,
        request: RawRequest,
    ) -> core::result::Result<(), (RawRequest, NtError)> {
        if request.core.id != stop.id {
            return Err((request, NtError::INVALID_PARAMETER));
        }
        if stop.action == StopAction::Purge {
            request.complete(NtStatus::CANCELLED, 0);
            return Ok(());
        }
        self.requeue_at_head(request, false)
    }

    /// The application cancels request `id` (`CancelIoEx`).
    pub(crate) fn cancel(self: &Arc<Self>, id: u64) {
        let action = {
            let mut inner = self.lock();
            let Some(state) = inner.requests.get_mut(&id) else { return };
            let queue_id = state.queue;
            match state.place {
                Place::Queued => Self::take_queued(&mut inner, queue_id, id),
                Place::Cancelable => {
                    state.canceled = true;
                    state.framework_canceled = true;
                    state.place = Place::Owned;
                    let value = state.slot.take().expect("a cancelable request's value");
                    let (object, table) = state.cancel_with.take().expect("its queue");
                    if let Some(queue) = inner.queues.get_mut(&queue_id) {
                        queue.running += 1;
                    }
                    Some(Action::Call(
                        object,
                        table,
                        queue_id,
                        Callback::RequestCancel,
                        None,
                        QueueCallOwned::Cancel(value),
                    ))
                }
                Place::Owned => {
                    state.canceled = true;
                    None
                }
            }
        };
        self.act(action.into_iter().collect());
    }

    /// Takes the queued request `id` out of queue `queue_id` to cancel it: completed
    /// `STATUS_CANCELLED`, or `EvtIoCanceledOnQueue` when presented before.
    fn take_queued(inner: &mut IoInner, queue_id: usize, id: u64) -> Option<Action> {
        let queue = inner.queues.get_mut(&queue_id)?;
        let position = queue.queued.iter().position(|request| request.core.id == id)?;
        let request = queue.queued.remove(position)?;
        let (object, table) = (Arc::clone(&queue.object), queue.table);
        let state = inner.requests.get_mut(&id).expect("a queued request");
        if state.presented_before && table.registered.canceled_on_queue {
            state.place = Place::Owned;
            state.framework_canceled = true;
            let queue = inner.queues.get_mut(&queue_id).expect("the queue");
            queue.owned += 1;
            queue.running += 1;
            Some(Action::Call(
                object,
                table,
                queue_id,
                Callback::IoCanceledOnQueue,
                None,
                QueueCallOwned::CanceledOnQueue(request),
            ))
        } else {
            Some(Action::Complete(request, NtStatus::CANCELLED))
        }
    }

    /// Does what was decided under the lock.
    fn act(self: &Arc<Self>, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Complete(request, status) => request.complete(status, 0),
                Action::Call(object, table, queue, callback, args, call) => {
                    self.call_queue(&object, queue, callback, args, |object| {
                        let call = match call {
                            QueueCallOwned::CanceledOnQueue(request) => {
                                QueueCall::CanceledOnQueue(request)
                            }
                            QueueCallOwned::Cancel(request) => QueueCall::Cancel(request),
                            QueueCallOwned::Resume(id) => QueueCall::Resume(id),
                            QueueCallOwned::Stop(id, action, cancelable) => {
                                QueueCall::Stop(RawStop { id, action, cancelable, io: self })
                            }
                        };
                        (table.call)(object, call);
                    });
                }
            }
        }
        self.dispatch();
    }

    /// Runs one queue callback at `DISPATCH_LEVEL`, traced; the caller counted it in the
    /// queue's `running`, which this uncounts. After the device's removal it is not run:
    /// the verifier reports it.
    fn call_queue(
        &self,
        object: &RawObject,
        queue: usize,
        callback: Callback,
        args: Option<String>,
        run: impl FnOnce(&RawObject),
    ) {
        // Held for the call: the callback is lent the device (`io_queue::call`).
        let device = self.device();
        let removed = self.lock().removed;
        if removed || device.is_none() {
            self.shared.report(VerifierFinding {
                device: self.node,
                callback,
                message: format!(
                    "{callback} would run after the device's removal (docs/kmdf-behaviour.md \
                     section 9); the runtime did not call it"
                ),
            });
        } else {
            let mut entry = TraceEntry::new(callback, Some(self.node));
            if let Some(args) = args {
                entry = entry.with_args(args);
            }
            self.shared.invoke_void(entry, || at_dispatch(|| run(object)));
        }
        drop(device);
        if let Some(queue) = self.lock().queues.get_mut(&queue) {
            queue.running -= 1;
        }
        self.changed.notify_all();
    }

    // ---- the dispatcher ----------------------------------------------------------------

    /// Presents what can be presented, unless another thread is presenting already (it
    /// looks again before it stops).
    pub(crate) fn dispatch(self: &Arc<Self>) {
        {
            let mut inner = self.lock();
            if inner.dispatching {
                inner.redispatch = true;
                return;
            }
            inner.dispatching = true;
        }
        loop {
            let work = {
                let mut inner = self.lock();
                inner.redispatch = false;
                let Some(work) = self.next_work(&mut inner) else {
                    inner.dispatching = false;
                    drop(inner);
                    self.changed.notify_all();
                    self.update_references();
                    return;
                };
                work
            };
            match work {
                Work::Complete(request, status) => request.complete(status, 0),
                Work::Call(object, table, queue, callback, args, call) => {
                    self.call_queue(&object, queue, callback, args, |object| {
                        let call = match call {
                            PendingCall::ReadyNotify => QueueCall::ReadyNotify,
                            PendingCall::Request(request) => presentation(request, callback),
                        };
                        (table.call)(object, call);
                    });
                }
            }
        }
    }

    /// The next presentation (or ready notification), in queue creation order.
    fn next_work(&self, inner: &mut IoInner) -> Option<Work> {
        if inner.removed {
            return None;
        }
        let powered = inner.powered;
        let mut chosen = None;
        for (&id, queue) in &mut inner.queues {
            if queue.ready_due && queue.started && (powered || !queue.config.is_power_managed()) {
                queue.ready_due = false;
                if !queue.queued.is_empty() && queue.table.registered.ready_notify {
                    queue.running += 1;
                    return Some(Work::Call(
                        Arc::clone(&queue.object),
                        queue.table,
                        id,
                        Callback::IoQueueState,
                        None,
                        PendingCall::ReadyNotify,
                    ));
                }
            }
            if queue.presents(powered)
                && queue.has_room()
                && let Some(request) = queue.queued.pop_front()
            {
                chosen = Some((id, request));
                break;
            }
        }
        let (id, request) = chosen?;
        // A cross-check of two models: the power-managed queues present only in D0, and the
        // PnP machine, not this package, says where the device is (docs/kmdf-behaviour.md
        // sections 9.3 and 10).
        if inner.queues[&id].config.is_power_managed() && self.policy.in_dx() {
            self.shared.report(VerifierFinding {
                device: self.node,
                callback: handler_callback(request.core.parameters.request_type()),
                message: format!(
                    "request {} was presented by a power-managed queue while the device is in \
                     a low-power state (docs/kmdf-behaviour.md sections 9.3 and 10)",
                    request.core.id
                ),
            });
        }
        inner.next_order += 1;
        let order = inner.next_order;
        let queue = inner.queues.get_mut(&id).expect("chosen");
        queue.owned += 1;
        let state = inner.requests.get_mut(&request.core.id).expect("a queued request");
        state.place = Place::Owned;
        state.order = order;
        let registered = queue.table.registered;
        let request_type = request.core.parameters.request_type();
        let callback = if registered.contains(handler_callback(request_type)) {
            handler_callback(request_type)
        } else if registered.default {
            Callback::IoDefault
        } else {
            return Some(Work::Complete(request, NtStatus::INVALID_DEVICE_REQUEST));
        };
        queue.running += 1;
        let args = match (callback, request.core.parameters) {
            (Callback::IoDefault, _) => None,
            (_, Parameters::Read { length } | Parameters::Write { length }) => {
                Some(format!("{length}"))
            }
            (
                _,
                Parameters::DeviceControl { code, output_length, input_length }
                | Parameters::InternalDeviceControl { code, output_length, input_length },
            ) => Some(format!("0x{code:X}, {output_length}, {input_length}")),
        };
        Some(Work::Call(
            Arc::clone(&queue.object),
            queue.table,
            id,
            callback,
            args,
            PendingCall::Request(request),
        ))
    }

    // ---- power and removal -------------------------------------------------------------

    /// The power-up's `IoResume` (before `EvtDeviceSelfManagedIoInit`/`Restart`): requests
    /// kept through the power-down get `EvtIoResume`, then the queues present again.
    pub(crate) fn power_up(self: &Arc<Self>) {
        let actions = {
            let mut inner = self.lock();
            inner.powered = true;
            let mut kept: Vec<(u64, u64, usize)> = inner
                .requests
                .iter()
                .filter(|(_, state)| state.stop == Stop::Kept)
                .map(|(&id, state)| (state.order, id, state.queue))
                .collect();
            kept.sort_unstable_by_key(|&(order, _, queue)| (queue, order));
            let mut actions = Vec::new();
            for (_, id, queue_id) in kept {
                if let Some(state) = inner.requests.get_mut(&id) {
                    state.stop = Stop::None;
                }
                let Some(queue) = inner.queues.get_mut(&queue_id) else { continue };
                if queue.config.is_power_managed() && queue.table.registered.resume {
                    queue.running += 1;
                    actions.push(Action::Call(
                        Arc::clone(&queue.object),
                        queue.table,
                        queue_id,
                        Callback::IoResume,
                        None,
                        QueueCallOwned::Resume(id),
                    ));
                }
            }
            for queue in inner.queues.values_mut() {
                if !queue.queued.is_empty() && queue.config.dispatch() == Dispatch::Manual {
                    queue.ready_due = true;
                }
            }
            actions
        };
        self.act(actions);
    }

    /// The power-down's `IoStop` (right after `EvtDeviceSelfManagedIoSuspend`): the
    /// power-managed queues stop presenting; each request the driver owns gets
    /// `EvtIoStop(Suspend)`, queue by queue, and the power-down waits until each is
    /// acknowledged or completed. On the host it waits until no work item is queued or
    /// running; what is left then is a stuck power-down, which the verifier reports (KMDF
    /// would hang), and the power-down goes on.
    pub(crate) fn power_down(self: &Arc<Self>) {
        let queues: Vec<usize> = {
            let mut inner = self.lock();
            inner.powered = false;
            while inner.dispatching {
                inner = self.changed.wait(inner).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            inner
                .queues
                .iter()
                .filter(|(_, queue)| queue.config.is_power_managed())
                .map(|(&id, _)| id)
                .collect()
        };
        for queue_id in queues {
            let actions = {
                let mut inner = self.lock();
                let Some(queue) = inner.queues.get(&queue_id) else { continue };
                let (object, table) = (Arc::clone(&queue.object), queue.table);
                let mut owned: Vec<(u64, u64)> = inner
                    .requests
                    .iter()
                    .filter(|(_, state)| {
                        state.queue == queue_id
                            && state.place != Place::Queued
                            && !state.framework_canceled
                    })
                    .map(|(&id, state)| (state.order, id))
                    .collect();
                owned.sort_unstable();
                let mut actions = Vec::new();
                for (_, id) in owned {
                    let state = inner.requests.get_mut(&id).expect("listed");
                    if table.registered.stop && state.stop != Stop::Kept {
                        let cancelable = state.place == Place::Cancelable;
                        state.stop = Stop::Pending(StopAction::Suspend);
                        let args = if cancelable { "Suspend|Cancelable" } else { "Suspend" };
                        actions.push(Action::Call(
                            Arc::clone(&object),
                            table,
                            queue_id,
                            Callback::IoStop,
                            Some(String::from(args)),
                            QueueCallOwned::Stop(id, StopAction::Suspend, cancelable),
                        ));
                    }
                }
                if let Some(queue) = inner.queues.get_mut(&queue_id) {
                    queue.running += actions.len();
                }
                actions
            };
            self.act(actions);
            self.settle(queue_id, "power-down (EvtIoStop(Suspend))");
        }
    }

    /// Waits until the driver-owned requests of queue `queue_id` are completed or kept
    /// (acknowledged without requeue), or nothing running can change that: then reports
    /// what is stuck, and counts it as kept.
    fn settle(&self, queue_id: usize, what: &str) {
        let stuck = |inner: &IoInner| -> Vec<u64> {
            inner
                .requests
                .iter()
                .filter(|(_, state)| {
                    state.queue == queue_id
                        && state.place != Place::Queued
                        && state.stop != Stop::Kept
                })
                .map(|(&id, _)| id)
                .collect()
        };
        // Waits while a queue callback runs on another thread (an `EvtRequestCancel` of a
        // cancellation, a presentation): it ends by itself. Then, once, for the work items.
        let mut waited_for_work_items = false;
        let mut inner = loop {
            let mut inner = self.lock();
            loop {
                if stuck(&inner).is_empty() {
                    return;
                }
                if !inner.queues.values().any(|queue| queue.running > 0) {
                    break;
                }
                inner = self.changed.wait(inner).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if waited_for_work_items || pool::in_deferred_work() {
                break inner;
            }
            drop(inner);
            self.shared.pool().wait_idle();
            waited_for_work_items = true;
        };
        let stuck = stuck(&inner);
        for id in &stuck {
            if let Some(state) = inner.requests.get_mut(id) {
                state.stop = Stop::Kept;
            }
        }
        drop(inner);
        self.shared.report(VerifierFinding {
            device: self.node,
            callback: Callback::IoStop,
            message: format!(
                "the {what} of device {} is stuck on requests {stuck:?} that the driver owns: \
                 neither completed nor acknowledged (WdfRequestStopAcknowledge) in EvtIoStop, \
                 and no work item is left to do it; KMDF would wait forever \
                 (docs/kmdf-behaviour.md section 9)",
                self.node
            ),
        });
    }

    /// The purge of removal: power-managed queues before `EvtDeviceSelfManagedIoFlush`,
    /// the others before `EvtDeviceSelfManagedIoCleanup`.
    pub(crate) fn purge_for_removal(self: &Arc<Self>, power_managed: bool) {
        let queues: Vec<usize> = {
            let mut inner = self.lock();
            while inner.dispatching {
                inner = self.changed.wait(inner).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            inner
                .queues
                .iter()
                .filter(|(_, queue)| {
                    queue.config.is_power_managed() == power_managed && !queue.purged_for_removal
                })
                .map(|(&id, _)| id)
                .collect()
        };
        for queue_id in queues {
            let actions = {
                let mut inner = self.lock();
                let Some(queue) = inner.queues.get_mut(&queue_id) else { continue };
                queue.accepting = false;
                queue.started = false;
                queue.purging = true;
                queue.purged_for_removal = true;
                Self::cancel_queue(&mut inner, queue_id, true)
            };
            self.act(actions);
            self.settle(queue_id, "removal (EvtIoStop(Purge))");
        }
    }

    /// The verifier's check when `EvtDeviceSelfManagedIoFlush` returned: no request of a
    /// power-managed queue is the driver's any more.
    pub(crate) fn check_after_flush(&self) {
        let owned: Vec<u64> = {
            let inner = self.lock();
            inner
                .requests
                .iter()
                .filter(|(_, state)| {
                    state.place != Place::Queued
                        && inner
                            .queues
                            .get(&state.queue)
                            .is_none_or(|queue| queue.config.is_power_managed())
                })
                .map(|(&id, _)| id)
                .collect()
        };
        if !owned.is_empty() {
            self.shared.report(VerifierFinding {
                device: self.node,
                callback: Callback::SelfManagedIoFlush,
                message: format!(
                    "requests {owned:?} of power-managed queues were still owned by the driver \
                     when EvtDeviceSelfManagedIoFlush returned: complete them in EvtIoStop(Purge) \
                     or in SelfManagedIoFlush (docs/kmdf-behaviour.md section 9)"
                ),
            });
        }
    }

    /// The device is removed: nothing is accepted or presented any more, and the queues
    /// let go of their power references.
    pub(crate) fn mark_removed(&self) {
        let held = {
            let mut inner = self.lock();
            inner.removed = true;
            inner
                .queues
                .values_mut()
                .map(|queue| std::mem::take(&mut queue.holds_reference))
                .filter(|&held| held)
                .count()
        };
        self.changed.notify_all();
        for _ in 0..held {
            self.policy.resume_idle();
        }
    }

    /// A power-managed queue holds a power reference on its device while it is not empty
    /// (requests queued or driver-owned), as KMDF's queues do for the power-policy owner
    /// ([S q.cpp: `FxIoQueue::DispatchEvents`], `SetTransitionFromEmpty`): a request arriving
    /// while the device idles in Dx brings it back to D0, and a request the driver keeps
    /// keeps it from idling. A reference asked for while the power policy is not started
    /// (before the first start, stopped) is refused, and the queue takes one only when a
    /// later change finds it not empty.
    fn update_references(&self) {
        let (take, release) = {
            let mut inner = self.lock();
            if inner.removed {
                return;
            }
            let (mut take, mut release) = (Vec::new(), 0);
            for (&id, queue) in &mut inner.queues {
                let busy = !queue.queued.is_empty() || queue.owned > 0;
                if !queue.config.is_power_managed() || busy == queue.holds_reference {
                    continue;
                }
                // Marked before the call, so that no other thread takes it twice.
                queue.holds_reference = busy;
                if busy {
                    take.push(id);
                } else {
                    release += 1;
                }
            }
            (take, release)
        };
        for _ in 0..release {
            self.policy.resume_idle();
        }
        for id in take {
            if self.policy.stop_idle(false).is_err()
                && let Some(queue) = self.lock().queues.get_mut(&id)
            {
                queue.holds_reference = false;
            }
        }
    }

    // ---- interfaces --------------------------------------------------------------------

    /// `WdfDeviceCreateDeviceInterface`.
    pub(crate) fn create_interface(&self, guid: Guid, reference: Option<&str>) -> Result {
        let mut inner = self.lock();
        if inner.removed {
            return Err(NtError::DELETE_PENDING);
        }
        if inner.interfaces.iter().any(|i| i.guid == guid && i.reference.as_deref() == reference) {
            return Err(NtError::INVALID_PARAMETER);
        }
        let automatic = !inner.started_once;
        inner.interfaces.push(Interface {
            guid,
            reference: reference.map(String::from),
            enabled: false,
            automatic,
        });
        Ok(())
    }

    /// `WdfDeviceSetDeviceInterfaceState`.
    /// `WdfDeviceSetDeviceInterfaceState`: KMDF ignores an interface the device did not
    /// register; the verifier reports it (attributed to `EvtDriverDeviceAdd`, where
    /// interfaces are registered: the DDI has no callback of its own).
    pub(crate) fn set_interface_state(&self, guid: Guid, reference: Option<&str>, enabled: bool) {
        let mut inner = self.lock();
        let removed = inner.removed;
        let Some(interface) = inner
            .interfaces
            .iter_mut()
            .find(|i| i.guid == guid && i.reference.as_deref() == reference)
        else {
            drop(inner);
            self.shared.report(VerifierFinding {
                device: self.node,
                callback: Callback::DriverDeviceAdd,
                message: format!(
                    "WdfDeviceSetDeviceInterfaceState({guid}, {reference:?}) of an interface the \
                     device did not register (WdfDeviceCreateDeviceInterface); KMDF ignores it \
                     (docs/kmdf-behaviour.md section 9.7)"
                ),
            });
            return;
        };
        interface.enabled = enabled && !removed;
        interface.automatic = false;
    }

    /// The end of the device's first start (`PnpEventEnableInterfaces`).
    pub(crate) fn first_start_done(&self) {
        let mut inner = self.lock();
        if std::mem::replace(&mut inner.started_once, true) {
            return;
        }
        for interface in &mut inner.interfaces {
            if interface.automatic {
                interface.enabled = true;
                interface.automatic = false;
            }
        }
    }

    /// Removal disables every interface (`PnpDisableInterfaces`).
    pub(crate) fn disable_interfaces(&self) {
        let mut inner = self.lock();
        for interface in &mut inner.interfaces {
            interface.enabled = false;
            interface.automatic = false;
        }
    }

    /// Whether an interface of class `guid` is enabled.
    pub(crate) fn interface_enabled(&self, guid: &Guid) -> bool {
        self.lock().interfaces.iter().any(|i| i.guid == *guid && i.enabled)
    }

    // ---- files -------------------------------------------------------------------------

    /// Counts an open handle in, refusing it on an exclusive device that has one, on a
    /// removed device, or when no enabled interface of class `guid` exists.
    pub(crate) fn reserve_open(&self, guid: &Guid) -> Result {
        let mut inner = self.lock();
        if inner.removed {
            return Err(NtError::NO_SUCH_DEVICE);
        }
        if !inner.interfaces.iter().any(|i| i.guid == *guid && i.enabled) {
            return Err(NtError::OBJECT_NAME_NOT_FOUND);
        }
        if self.init.exclusive && inner.open_handles > 0 {
            return Err(NtError::ACCESS_DENIED);
        }
        inner.open_handles += 1;
        Ok(())
    }

    /// An open failed after [`reserve_open`](Self::reserve_open).
    pub(crate) fn unreserve_open(&self) {
        self.lock().open_handles -= 1;
    }

    /// The open succeeded: `file` is the handle's file object.
    pub(crate) fn opened(&self, file: &Arc<RawObject>) {
        self.lock().files.insert(
            file.id(),
            OpenFile { object: Arc::clone(file), outstanding: 0, closing: false },
        );
    }

    /// The application closes the handle of `file` (`IRP_MJ_CLEANUP`): `EvtFileCleanup`,
    /// the file's queued requests cancelled, and `EvtFileClose` once none is outstanding.
    /// After the device's removal no callback runs.
    pub(crate) fn close(self: &Arc<Self>, file: &Arc<RawObject>) {
        let removed = self.lock().removed;
        if removed {
            let mut inner = self.lock();
            if inner.files.remove(&file.id()).is_some() {
                inner.open_handles -= 1;
            }
            return;
        }
        // The callback is lent the device, held for the call.
        if let Some(table) = self.init.file.filter(|table| table.registered.cleanup)
            && let Some(device) = self.device()
        {
            let entry = TraceEntry::new(Callback::FileCleanup, Some(self.node));
            self.shared.invoke_void(entry, || (table.cleanup)(&device, file));
        }
        let actions = {
            let mut inner = self.lock();
            if let Some(open) = inner.files.get_mut(&file.id()) {
                open.closing = true;
            }
            let queued: Vec<(usize, u64)> = inner
                .requests
                .iter()
                .filter(|(_, state)| state.file == Some(file.id()) && state.place == Place::Queued)
                .map(|(&id, state)| (state.queue, id))
                .collect();
            queued
                .into_iter()
                .filter_map(|(queue, id)| Self::take_queued(&mut inner, queue, id))
                .collect()
        };
        self.act(actions);
        self.close_if_done(file.id());
    }

    /// `EvtFileClose` of a closing file whose requests are all completed, then its
    /// deletion. The close runs at `PASSIVE_LEVEL`: when the last completion comes above it
    /// (from a request callback, under a spin lock), it is deferred to a system worker
    /// thread, as Windows defers the last dereference of a file object (`IRP_MJ_CLOSE`).
    fn close_if_done(self: &Arc<Self>, file: u64) {
        let object = {
            let mut inner = self.lock();
            match inner.files.get(&file) {
                Some(open) if open.closing && open.outstanding == 0 => {
                    inner.open_handles -= 1;
                    inner.files.remove(&file).map(|open| open.object)
                }
                _ => None,
            }
        };
        let Some(object) = object else { return };
        if current_irql() == Irql::Passive {
            self.run_close(&object);
        } else {
            let io = Arc::clone(self);
            self.shared.pool().submit(std::boxed::Box::new(move || io.run_close(&object)));
        }
    }

    /// `EvtFileClose`, then the file object's deletion. After the device's removal (a
    /// deferred close late), or once the device object is gone, no callback; else the
    /// callback is lent the device, held for the call.
    fn run_close(&self, object: &Arc<RawObject>) {
        let removed = self.lock().removed;
        if let Some(table) = self.init.file.filter(|table| table.registered.close && !removed)
            && let Some(device) = self.device()
        {
            let entry = TraceEntry::new(Callback::FileClose, Some(self.node));
            self.shared.invoke_void(entry, || (table.close)(&device, object));
        }
        object.delete();
    }
}

/// The queue call presenting `request` with `callback`.
fn presentation(request: RawRequest, callback: Callback) -> QueueCall<'static> {
    match (callback, request.core.parameters) {
        (Callback::IoRead, Parameters::Read { length }) => QueueCall::Read(request, length),
        (Callback::IoWrite, Parameters::Write { length }) => QueueCall::Write(request, length),
        (
            Callback::IoDeviceControl,
            Parameters::DeviceControl { code, output_length, input_length },
        ) => QueueCall::DeviceControl(request, output_length, input_length, code),
        (
            Callback::IoInternalDeviceControl,
            Parameters::InternalDeviceControl { code, output_length, input_length },
        ) => QueueCall::InternalDeviceControl(request, output_length, input_length, code),
        _ => QueueCall::Default(request),
    }
}
