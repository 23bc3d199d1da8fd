//! Queues on the host: the `WDFQUEUE` object kind, and the facade's queue operations on the
//! device's I/O package (`io.rs`), one function each.

use super::std;
use std::boxed::Box;
use std::sync::{Arc, Weak};

use super::device::device_ref;
use super::io::{IoPackage, QueueCall, QueueTable, RawRequest};
use super::object::{KindState, NewObject, RawObject, RawRef, StateSlot, view};
use super::object_kind::ObjectKind;
use super::sync::current_irql;
use crate::io_queue::{IoQueue, IoQueueCallbacks, IoQueueConfig, IoStop};
use crate::object::ObjectRef;
use crate::request::{Request, RequestId, RequestType};
use crate::sync::Irql;
use crate::{Callback, Device, NtError, Result};

pub(crate) use super::io::RawStop;

/// What a `WDFQUEUE` adds to the common object: its number in its device's I/O package,
/// and the device, which queues reach through `WdfIoQueueGetDevice`.
pub(crate) struct QueueState {
    pub(crate) io: Arc<IoPackage>,
    pub(crate) id: usize,
    pub(crate) table: QueueTable,
    /// Not counted: the device context often holds the queue's references.
    device: Weak<RawObject>,
}

impl KindState for QueueState {
    fn kind(&self) -> ObjectKind {
        ObjectKind::Queue
    }

    /// The queue leaves its device's package (its device is being deleted).
    fn rundown(&self, _object: &RawObject) {
        self.io.remove_queue(self.id);
    }
}

pub(crate) fn state(queue: &RawObject) -> &QueueState {
    queue
        .state::<QueueState>()
        .unwrap_or_else(|| panic!("kmdf host runtime: {queue:?} is not a queue"))
}

#[track_caller]
pub(crate) fn create<T: IoQueueCallbacks>(
    device: &Device<T::Device>,
    config: IoQueueConfig,
    context: T,
) -> Result<ObjectRef<IoQueue<T>>> {
    let registered = T::REGISTERED;
    let table = QueueTable { registered, call: call::<T> };
    let cleanup_hook = registered.contains(Callback::ObjectCleanup).then_some(cleanup::<T> as _);
    let object =
        create_raw(&device.raw.to_arc(), config, table, cleanup_hook, true, Box::new(context))?;
    Ok(ObjectRef::from_raw(object))
}

/// `WdfIoQueueCreate` with the callbacks of `table` and the context `context`, for the
/// typed face and the raw face (`host::raw::create_queue`): KMDF's checks of the
/// configuration against the callbacks registered, then the queue, child of `device`.
pub(crate) fn create_raw(
    device: &Arc<RawObject>,
    config: IoQueueConfig,
    table: QueueTable,
    cleanup: Option<super::object::CleanupHook>,
    trace_cleanup: bool,
    context: Box<dyn core::any::Any + Send + Sync>,
) -> Result<Arc<RawObject>> {
    let registered = table.registered;
    let handlers = [
        Callback::IoRead,
        Callback::IoWrite,
        Callback::IoDeviceControl,
        Callback::IoInternalDeviceControl,
        Callback::IoDefault,
    ]
    .into_iter()
    .any(|callback| registered.contains(callback));
    match (config.dispatch(), handlers) {
        (crate::io_queue::Dispatch::Manual, true) => return Err(NtError::INVALID_PARAMETER),
        (crate::io_queue::Dispatch::Manual, false) | (_, true) => {}
        (_, false) => return Err(NtError::WDF_NO_CALLBACK),
    }
    let io = Arc::clone(super::device::io(device));
    let id = io.new_queue(config)?;
    let object = RawObject::create(
        device.shared(),
        NewObject {
            parent: Some(device),
            cleanup,
            trace_cleanup,
            state: Some(StateSlot::new(Arc::new(QueueState {
                io: Arc::clone(&io),
                id,
                table,
                device: Arc::downgrade(device),
            }))),
            context: Some(context),
            ..NewObject::new(ObjectKind::Queue)
        },
    )?;
    io.add_queue(id, Arc::clone(&object), table, config);
    Ok(object)
}

/// The queue's device, for a callback: alive while its queue calls back (the device's
/// deletion runs the queues down first).
pub(crate) fn device_of(queue: &RawObject) -> Arc<RawObject> {
    state(queue)
        .device
        .upgrade()
        .unwrap_or_else(|| panic!("kmdf host runtime: a callback of {queue:?} after its device"))
}

fn call<T: IoQueueCallbacks>(object: &RawObject, call: QueueCall<'_>) {
    let queue = view::<IoQueue<T>>(object);
    let device = device_of(object);
    let device = device_ref::<T::Device>(&device);
    let context = queue.context();
    match call {
        QueueCall::Read(raw, length) => context.read(queue, device, Request { raw }, length),
        QueueCall::Write(raw, length) => context.write(queue, device, Request { raw }, length),
        QueueCall::DeviceControl(raw, output, input, code) => {
            context.device_control(queue, device, Request { raw }, output, input, code);
        }
        QueueCall::InternalDeviceControl(raw, output, input, code) => {
            context.internal_device_control(queue, device, Request { raw }, output, input, code);
        }
        QueueCall::Default(raw) => context.default(queue, device, Request { raw }),
        QueueCall::Stop(raw) => context.stop(queue, device, IoStop { raw }),
        QueueCall::Resume(id) => context.resume(queue, device, RequestId(id)),
        QueueCall::CanceledOnQueue(raw) => {
            context.canceled_on_queue(queue, device, Request { raw });
        }
        QueueCall::ReadyNotify => context.ready_notify(queue, device),
        QueueCall::Cancel(raw) => context.request_cancel(queue, device, Request { raw }),
    }
}

fn cleanup<T: IoQueueCallbacks>(object: &RawObject) {
    let queue = view::<IoQueue<T>>(object);
    let device = device_of(object);
    queue.context().cleanup(queue, device_ref::<T::Device>(&device));
}

pub(crate) fn new_ref<T>(queue: &IoQueue<T>) -> RawRef {
    queue.raw.to_arc()
}

pub(crate) fn context<T: IoQueueCallbacks>(queue: &RawObject) -> &T {
    queue.expect_context::<T>()
}

pub(crate) fn configure_dispatching(
    device: &RawObject,
    queue: &RawObject,
    request_type: RequestType,
) -> Result {
    let state = state(queue);
    if !core::ptr::eq(state.device.as_ptr(), device) {
        return Err(NtError::INVALID_DEVICE_REQUEST);
    }
    state.io.configure_dispatching(state.id, request_type)
}

pub(crate) fn start(queue: &RawObject) {
    let state = state(queue);
    state.io.start_queue(state.id);
}

pub(crate) fn stop(queue: &RawObject) {
    let state = state(queue);
    state.io.stop_queue(state.id, false);
}

pub(crate) fn stop_and_purge(queue: &RawObject) {
    let state = state(queue);
    state.io.stop_queue(state.id, true);
}

pub(crate) fn purge(queue: &RawObject) {
    let state = state(queue);
    state.io.purge_queue(state.id);
}

pub(crate) fn drain(queue: &RawObject) {
    let state = state(queue);
    state.io.drain_queue(state.id);
}

/// A synchronous queue operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Stop,
    StopAndPurge,
    Purge,
    Drain,
}

/// `WdfIoQueue*Synchronously`: the operation, then the wait (`PASSIVE_LEVEL` only).
pub(crate) fn wait(queue: &RawObject, wait: Wait) -> Result {
    if current_irql() != Irql::Passive {
        return Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
    }
    let state = state(queue);
    match wait {
        Wait::Stop => state.io.stop_queue(state.id, false),
        Wait::StopAndPurge => state.io.stop_queue(state.id, true),
        Wait::Purge => state.io.purge_queue(state.id),
        Wait::Drain => state.io.drain_queue(state.id),
    }
    state.io.wait_queue(state.id, matches!(wait, Wait::Purge | Wait::Drain))
}

pub(crate) fn retrieve_next_request(queue: &RawObject) -> Result<RawRequest> {
    let state = state(queue);
    state.io.retrieve(state.id)
}

pub(crate) fn acknowledge(stop: &RawStop<'_>) {
    stop.io.acknowledge(stop.id);
}

pub(crate) fn acknowledge_requeue(
    stop: &RawStop<'_>,
    request: RawRequest,
) -> core::result::Result<(), (RawRequest, NtError)> {
    stop.io.acknowledge_requeue(stop, request)
}
