//! Queues: `WdfIoQueueCreate` with the callbacks a context type registers, the queue
//! DDIs, and the trampolines of the `EvtIo*` callbacks.
//!
//! `&IoQueue<T>` is the queue's handle ([`RawObject`](super::RawObject)); its context is
//! found from the handle. The presenting trampolines (`EvtIoRead`, `EvtIoWrite`,
//! `EvtIoDeviceControl`, `EvtIoInternalDeviceControl`) build the request's parameters
//! from their own arguments, so presenting a request costs no WDF call besides the
//! context lookup.

use core::marker::PhantomData;
use core::ptr;

use wdk_sys::{
    _WDF_IO_QUEUE_DISPATCH_TYPE, _WDF_REQUEST_STOP_ACTION_FLAGS, _WDF_REQUEST_TYPE, _WDF_TRI_STATE,
    ULONG, WDF_IO_QUEUE_CONFIG, WDFCONTEXT, WDFDEVICE, WDFOBJECT, WDFQUEUE, WDFREQUEST,
    call_unsafe_wdf_function_binding,
};

use super::object::{RawRef, view_handle};
use super::request::RawRequest;
use super::sync::current_irql;
use super::{RawObject, attributes_for, context as slot_context, struct_size, write_context};
use crate::io_queue::{Dispatch, IoQueue, IoQueueCallbacks, IoQueueConfig, IoStop, StopAction};
use crate::object::ObjectRef;
use crate::request::{Parameters, Request, RequestId, RequestType};
use crate::sync::Irql;
use crate::{Callback, Device, NtError, NtStatus, Result};

/// The context of a queue created by `kmdf`: its device's handle (so that a callback gets
/// its device without a `WdfIoQueueGetDevice` call), then the driver's `T`.
pub(crate) struct QueueContext<T> {
    device: DeviceHandle,
    value: T,
}

/// A `WDFDEVICE`, which any thread may use.
struct DeviceHandle(WDFDEVICE);

// SAFETY: a WDF handle is a plain value that the framework lets any thread pass to its
// DDIs; it owns nothing.
unsafe impl Send for DeviceHandle {}
// SAFETY: as above; shared access only reads it.
unsafe impl Sync for DeviceHandle {}

fn queue_context<T: IoQueueCallbacks>(queue: &RawObject) -> &QueueContext<T> {
    // SAFETY: a `&IoQueue<T>` only exists for a queue created by `create::<T>`, whose
    // context was written before the handle was handed out, alive for the borrow.
    unsafe { slot_context(queue.handle()) }
}

/// The context and the device of a queue that is calling back: a queue's callbacks run
/// while its device exists (the device's removal purges and runs down its queues first),
/// so the device is lent for the callback. One context lookup, no other call.
pub(crate) fn parts<T: IoQueueCallbacks>(queue: &IoQueue<T>) -> (&T, &Device<T::Device>) {
    let context = queue_context::<T>(&queue.raw);
    // SAFETY: the queue was created by `create::<T>` on this device, of context
    // `T::Device`; only called from the queue's callbacks, for their duration, while the
    // device lives.
    let device = unsafe { super::device::device_ref(context.device.0) };
    (&context.value, device)
}

/// `EvtIoStop`'s request, for the callback's duration.
pub(crate) struct RawStop<'a> {
    pub(crate) id: u64,
    pub(crate) action: StopAction,
    pub(crate) cancelable: bool,
    handle: WDFREQUEST,
    _callback: PhantomData<&'a ()>,
}

// SAFETY: the handle of the request `EvtIoStop` is about, alive for the callback (`'a`);
// `WdfRequestStopAcknowledge` may be called from any thread at IRQL <= DISPATCH_LEVEL. As
// the host's `RawStop`, it may be shared and sent (within the callback's lifetime).
unsafe impl Send for RawStop<'_> {}
// SAFETY: as above; shared access only reads the fields.
unsafe impl Sync for RawStop<'_> {}

#[track_caller]
pub(crate) fn create<T: IoQueueCallbacks>(
    device: &Device<T::Device>,
    config: IoQueueConfig,
    context: T,
) -> Result<ObjectRef<IoQueue<T>>> {
    let on = |callback: Callback| T::REGISTERED.contains(callback);
    // `NumberOfPresentedRequests`: what `_INIT` leaves (0, or -1 for no limit on a
    // parallel queue), or the limit.
    let (dispatch, limit) = match config.dispatch() {
        Dispatch::Sequential => (_WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchSequential, 0),
        Dispatch::Parallel { limit } => (
            _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel,
            limit.map_or(ULONG::MAX, core::num::NonZeroU32::get),
        ),
        Dispatch::Manual => (_WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchManual, 0),
    };
    // WDF_IO_QUEUE_CONFIG_INIT / _INIT_DEFAULT_QUEUE, then the callbacks `T` registers.
    // SAFETY: all-zero bytes are a valid WDF_IO_QUEUE_CONFIG (integers, `Option`s of
    // function pointers, a union of integers, a handle).
    let mut queue_config: WDF_IO_QUEUE_CONFIG = unsafe { core::mem::zeroed() };
    queue_config.Size = struct_size::<WDF_IO_QUEUE_CONFIG>();
    queue_config.DispatchType = dispatch;
    queue_config.PowerManaged =
        if config.is_power_managed() { _WDF_TRI_STATE::WdfTrue } else { _WDF_TRI_STATE::WdfFalse };
    queue_config.AllowZeroLengthRequests = u8::from(config.allows_zero_length());
    queue_config.DefaultQueue = u8::from(config.is_default_queue());
    queue_config.Settings.Parallel.NumberOfPresentedRequests = limit;
    queue_config.EvtIoDefault = on(Callback::IoDefault).then_some(io_default::<T>);
    queue_config.EvtIoRead = on(Callback::IoRead).then_some(io_read::<T>);
    queue_config.EvtIoWrite = on(Callback::IoWrite).then_some(io_write::<T>);
    queue_config.EvtIoDeviceControl =
        on(Callback::IoDeviceControl).then_some(io_device_control::<T>);
    queue_config.EvtIoInternalDeviceControl =
        on(Callback::IoInternalDeviceControl).then_some(io_internal_device_control::<T>);
    queue_config.EvtIoStop = on(Callback::IoStop).then_some(io_stop::<T>);
    queue_config.EvtIoResume = on(Callback::IoResume).then_some(io_resume::<T>);
    queue_config.EvtIoCanceledOnQueue =
        on(Callback::IoCanceledOnQueue).then_some(io_canceled_on_queue::<T>);
    let cleanup = on(Callback::ObjectCleanup).then_some(cleanup::<T> as _);
    // The parent of a queue is always its device (KMDF's default when none is given).
    let mut attributes = attributes_for::<QueueContext<T>>(cleanup, ptr::null_mut());
    let mut queue: WDFQUEUE = ptr::null_mut();
    // SAFETY: the structures are initialized as their `_INIT` functions do and outlive the
    // call; the device is live (borrowed); `queue` receives the handle.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device.raw.handle().cast(),
            &raw mut queue_config,
            &raw mut attributes,
            &raw mut queue,
        )
    };
    if let Err(error) = NtStatus::from_raw(status).ok() {
        drop(context);
        return Err(error);
    }
    // SAFETY: created just above with `attributes_for::<T>`. Its callbacks cannot run
    // before the context is written: a queue created during `EvtDriverDeviceAdd` gets no
    // request before the device starts; one created later is created by the driver from a
    // callback of its device, whose I/O reaches the new queue only once it is configured or
    // forwarded to, which needs the reference returned below.
    unsafe {
        write_context(
            queue,
            QueueContext { device: DeviceHandle(device.raw.handle().cast()), value: context },
        );
    }
    // SAFETY: as above: a live queue created with `T`.
    let view: &IoQueue<T> = unsafe { view_handle(queue) };
    if matches!(config.dispatch(), Dispatch::Manual) && on(Callback::IoQueueState) {
        // SAFETY: a live manual queue; `ready::<T>` is a callback for a queue of `T`.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfIoQueueReadyNotify,
                queue,
                Some(ready::<T>),
                ptr::null_mut()
            )
        };
        NtStatus::from_raw(status).ok()?;
    }
    Ok(ObjectRef::from_raw(RawRef::new(view)))
}

/// Trampolines: find the queue and its context, build the request, call the trait method.
/// None returns a status: checked against [`Callback::is_fallible`], the one table.
macro_rules! trampolines {
    ($(
        $name:ident[$callback:ident]($($arg:ident: $raw:ty),*)
            = |$this:ident, $queue:ident, $device:ident| $call:expr;
    )*) => {$(
        const _: () = assert!(
            !Callback::$callback.is_fallible(),
            concat!(stringify!($name), ": its return type disagrees with Callback::is_fallible"),
        );

        unsafe extern "C" fn $name<T: IoQueueCallbacks>(queue: WDFQUEUE $(, $arg: $raw)*) {
            // SAFETY: KMDF calls the callbacks registered by `create::<T>` with that queue,
            // alive for the call (it is presenting one of its requests, or its state).
            let $queue: &IoQueue<T> = unsafe { view_handle(queue) };
            let ($this, $device) = parts($queue);
            $call
        }
    )*};
}

/// A request KMDF presents with its parameters in the callback's arguments.
#[inline]
fn presented(request: WDFREQUEST, parameters: Parameters) -> Request {
    // SAFETY: a presenting callback hands the live request to the driver, with these
    // parameters (its arguments).
    Request { raw: unsafe { RawRequest::owned(request, parameters) } }
}

/// A request KMDF hands to the driver without its parameters.
fn handed(request: WDFREQUEST) -> Option<Request> {
    // SAFETY: the callback hands the live request to the driver.
    unsafe { RawRequest::read(request) }.map(|raw| Request { raw })
}

fn stop_action(flags: ULONG) -> (StopAction, bool) {
    let flags = i32::try_from(flags).unwrap_or(i32::MAX);
    let action = if flags & _WDF_REQUEST_STOP_ACTION_FLAGS::WdfRequestStopActionPurge != 0 {
        StopAction::Purge
    } else {
        StopAction::Suspend
    };
    let cancelable = flags & _WDF_REQUEST_STOP_ACTION_FLAGS::WdfRequestStopRequestCancelable != 0;
    (action, cancelable)
}

trampolines! {
    io_read[IoRead](request: WDFREQUEST, length: usize)
        = |this, queue, device| this.read(queue, device, presented(request, Parameters::Read { length }), length);
    io_write[IoWrite](request: WDFREQUEST, length: usize)
        = |this, queue, device| this.write(queue, device, presented(request, Parameters::Write { length }), length);
    io_device_control[IoDeviceControl](request: WDFREQUEST, output: usize, input: usize, code: ULONG)
        = |this, queue, device| {
            let parameters =
                Parameters::DeviceControl { code, output_length: output, input_length: input };
            this.device_control(queue, device, presented(request, parameters), output, input, code);
        };
    io_internal_device_control[IoInternalDeviceControl](request: WDFREQUEST, output: usize, input: usize, code: ULONG)
        = |this, queue, device| {
            let parameters = Parameters::InternalDeviceControl {
                code,
                output_length: output,
                input_length: input,
            };
            this.internal_device_control(queue, device, presented(request, parameters), output, input, code);
        };
    io_default[IoDefault](request: WDFREQUEST) = |this, queue, device| {
        if let Some(request) = handed(request) {
            this.default(queue, device, request);
        }
    };
    io_stop[IoStop](request: WDFREQUEST, flags: ULONG) = |this, queue, device| {
        let (action, cancelable) = stop_action(flags);
        let raw = RawStop {
            id: request.addr() as u64,
            action,
            cancelable,
            handle: request,
            _callback: PhantomData,
        };
        this.stop(queue, device, IoStop { raw });
    };
    io_resume[IoResume](request: WDFREQUEST)
        = |this, queue, device| this.resume(queue, device, RequestId(request.addr() as u64));
    io_canceled_on_queue[IoCanceledOnQueue](request: WDFREQUEST) = |this, queue, device| {
        if let Some(request) = handed(request) {
            this.canceled_on_queue(queue, device, request);
        }
    };
    ready[IoQueueState](_context: WDFCONTEXT) = |this, queue, device| this.ready_notify(queue, device);
}

/// The queue's `EvtCleanupCallback`.
unsafe extern "C" fn cleanup<T: IoQueueCallbacks>(object: WDFOBJECT) {
    // SAFETY: registered by `create::<T>` for that queue, alive for the call.
    let queue: &IoQueue<T> = unsafe { view_handle(object) };
    // SAFETY: as above; `None` if the queue is disposed before `create` wrote its context.
    if unsafe { super::try_context::<QueueContext<T>>(object) }.is_some() {
        // The queue's cleanup runs in its device's removal, before the device's own.
        let (context, device) = parts(queue);
        context.cleanup(queue, device);
    }
}

pub(crate) fn new_ref<T>(queue: &IoQueue<T>) -> RawRef {
    RawRef::new(queue)
}

pub(crate) fn context<T: IoQueueCallbacks>(queue: &RawObject) -> &T {
    &queue_context::<T>(queue).value
}

fn handle(queue: &RawObject) -> WDFQUEUE {
    queue.handle().cast()
}

pub(crate) fn configure_dispatching(
    device: &RawObject,
    queue: &RawObject,
    request_type: RequestType,
) -> Result {
    let request_type = match request_type {
        RequestType::Read => _WDF_REQUEST_TYPE::WdfRequestTypeRead,
        RequestType::Write => _WDF_REQUEST_TYPE::WdfRequestTypeWrite,
        RequestType::DeviceControl => _WDF_REQUEST_TYPE::WdfRequestTypeDeviceControl,
        RequestType::InternalDeviceControl => {
            _WDF_REQUEST_TYPE::WdfRequestTypeDeviceControlInternal
        }
    };
    // SAFETY: the device and the queue are live (borrowed); KMDF checks that the queue is
    // the device's.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceConfigureRequestDispatching,
            device.handle().cast(),
            handle(queue),
            request_type,
        )
    };
    NtStatus::from_raw(status).ok()
}

pub(crate) fn start(queue: &RawObject) {
    // SAFETY: the queue is live (borrowed); callable at IRQL <= DISPATCH_LEVEL.
    unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueStart, handle(queue)) };
}

pub(crate) fn stop(queue: &RawObject) {
    // SAFETY: as in `start`; no stop-complete callback.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfIoQueueStop, handle(queue), None, ptr::null_mut());
    }
}

pub(crate) fn stop_and_purge(queue: &RawObject) {
    // SAFETY: as in `stop`.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfIoQueueStopAndPurge,
            handle(queue),
            None,
            ptr::null_mut()
        );
    }
}

pub(crate) fn purge(queue: &RawObject) {
    // SAFETY: as in `stop`.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfIoQueuePurge, handle(queue), None, ptr::null_mut());
    }
}

pub(crate) fn drain(queue: &RawObject) {
    // SAFETY: as in `stop`.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfIoQueueDrain, handle(queue), None, ptr::null_mut());
    }
}

/// A synchronous queue operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Stop,
    StopAndPurge,
    Purge,
    Drain,
}

/// `WdfIoQueue*Synchronously` (`PASSIVE_LEVEL` only: they wait).
pub(crate) fn wait(queue: &RawObject, wait: Wait) -> Result {
    if current_irql() != Irql::Passive {
        return Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
    }
    let queue = handle(queue);
    match wait {
        // SAFETY: the queue is live (borrowed), and this thread is at PASSIVE_LEVEL
        // (checked above), where the synchronous forms may wait.
        Wait::Stop => unsafe {
            call_unsafe_wdf_function_binding!(WdfIoQueueStopSynchronously, queue);
        },
        // SAFETY: as above.
        Wait::StopAndPurge => unsafe {
            call_unsafe_wdf_function_binding!(WdfIoQueueStopAndPurgeSynchronously, queue);
        },
        // SAFETY: as above.
        Wait::Purge => unsafe {
            call_unsafe_wdf_function_binding!(WdfIoQueuePurgeSynchronously, queue);
        },
        // SAFETY: as above.
        Wait::Drain => unsafe {
            call_unsafe_wdf_function_binding!(WdfIoQueueDrainSynchronously, queue);
        },
    }
    Ok(())
}

pub(crate) fn retrieve_next_request(queue: &RawObject) -> Result<RawRequest> {
    loop {
        let mut request: WDFREQUEST = ptr::null_mut();
        // SAFETY: the queue is live (borrowed); `request` receives the handle.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfIoQueueRetrieveNextRequest,
                handle(queue),
                &raw mut request
            )
        };
        NtStatus::from_raw(status).ok()?;
        // SAFETY: a retrieved request is the driver's. One of a type `kmdf` does not
        // present is completed by `read`; the next one is retrieved then.
        if let Some(raw) = unsafe { RawRequest::read(request) } {
            return Ok(raw);
        }
    }
}

pub(crate) fn acknowledge(stop: &RawStop<'_>) {
    // SAFETY: inside `EvtIoStop` (the borrow), for the request it names, which the driver
    // owns: the acknowledgement without requeue leaves it the driver's.
    unsafe { call_unsafe_wdf_function_binding!(WdfRequestStopAcknowledge, stop.handle, 0) };
}

pub(crate) fn acknowledge_requeue(
    stop: &RawStop<'_>,
    request: RawRequest,
) -> core::result::Result<(), (RawRequest, NtError)> {
    if request.handle() != stop.handle {
        return Err((request, NtError::INVALID_PARAMETER));
    }
    let handle = request.into_handle();
    // SAFETY: inside `EvtIoStop`, for its request, which the driver owned (the value given
    // up above): requeued, it is the framework's again.
    unsafe { call_unsafe_wdf_function_binding!(WdfRequestStopAcknowledge, handle, 1) };
    Ok(())
}
