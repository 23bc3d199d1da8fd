//! Requests: the `WDFREQUEST` a queue presents, as a value the driver owns, and the
//! request DDIs, one WDF call each.
//!
//! A [`RawRequest`] is the handle and the request's [`Parameters`], read once when the
//! request reaches the driver: from the arguments of the `EvtIo*` callback that presents it
//! (no call at all), or with `WdfRequestGetParameters` where KMDF passes none
//! (`EvtIoDefault`, `EvtIoCanceledOnQueue`, `EvtRequestCancel`, a retrieval). So a
//! completion is exactly the one `WdfRequestComplete*` call a C driver makes: the check of
//! `information` against the buffer reads the cached length.
//!
//! # Buffers
//!
//! `WdfRequestRetrieveInputBuffer` / `OutputBuffer` return the system buffer (buffered
//! I/O, `METHOD_BUFFERED`), the MDL's system mapping (direct I/O) or, for a kernel-mode
//! sender of `METHOD_NEITHER`, its pointers. For `METHOD_BUFFERED` the input and the output
//! are *one* buffer; the facade's borrows (`input_buffer(&self)`, `output_buffer(&mut
//! self)`) keep a `&[u8]` and a `&mut [u8]` of one request from being alive at once, so the
//! aliasing is never observable.

use core::mem::ManuallyDrop;
use core::ptr::{self, NonNull};
use core::slice;

use wdk_sys::{
    _WDF_REQUEST_TYPE, NTSTATUS, STATUS_CANCELLED, WDF_REQUEST_PARAMETERS, WDFQUEUE, WDFREQUEST,
    call_unsafe_wdf_function_binding,
};

use super::object::view_handle;
use super::struct_size;
use crate::file::{FileCallbacks, FileObject};
use crate::io_queue::{IoQueue, IoQueueCallbacks};
use crate::request::Parameters;
use crate::{NtError, NtStatus, Request, Result};

/// A request the driver owns: the handle, and its parameters as they were presented.
///
/// # Invariants
///
/// `handle` is a live request that this value owns (the framework presented it to the
/// driver, and nothing else completes, forwards or requeues it while this value exists).
/// Dropped, the value completes it `STATUS_CANCELLED`.
pub(crate) struct RawRequest {
    handle: NonNull<core::ffi::c_void>,
    parameters: Parameters,
}

// SAFETY: a WDFREQUEST may be completed, and its buffers used, from any thread (KMDF's
// request DDIs are callable at IRQL <= DISPATCH_LEVEL on any thread); the value owns the
// request, so moving it moves that ownership.
unsafe impl Send for RawRequest {}
// SAFETY: shared access only reads the parameters, and makes request DDIs that KMDF lets
// run concurrently (`WdfRequestIsCanceled`, `WdfRequestRetrieveInputBuffer`,
// `WdfRequestGetFileObject`).
unsafe impl Sync for RawRequest {}

impl RawRequest {
    /// Takes ownership of a request the framework handed to the driver.
    ///
    /// # Safety
    ///
    /// `handle` is a live request the driver now owns (just presented, retrieved, or handed
    /// to a cancel routine), and `parameters` are its own.
    #[inline]
    pub(crate) unsafe fn owned(handle: WDFREQUEST, parameters: Parameters) -> Self {
        let handle = NonNull::new(handle).expect("kmdf: NULL request handle");
        // INVARIANT: the caller's contract.
        Self { handle, parameters }
    }

    /// Takes ownership of a request the framework handed to the driver without its
    /// parameters, reading them (`WdfRequestGetParameters`). `None`, after completing it
    /// `STATUS_INVALID_DEVICE_REQUEST`, for a request of a type `kmdf` does not present
    /// (KMDF gives queues only reads, writes and device controls unless a driver configures
    /// dispatching of another type, which `kmdf` does not offer).
    ///
    /// # Safety
    ///
    /// `handle` is a live request the driver now owns.
    pub(crate) unsafe fn read(handle: WDFREQUEST) -> Option<Self> {
        if let Some(parameters) = read_parameters(handle) {
            // SAFETY: the caller's contract; the parameters are the request's.
            return Some(unsafe { Self::owned(handle, parameters) });
        }
        // SAFETY: a live request the driver owns (the caller's contract), completed once,
        // here.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestComplete,
                handle,
                NtStatus::INVALID_DEVICE_REQUEST.to_raw(),
            );
        }
        None
    }

    pub(crate) fn handle(&self) -> WDFREQUEST {
        self.handle.as_ptr()
    }

    /// Gives up ownership without completing (the framework has the request again).
    pub(crate) fn into_handle(self) -> WDFREQUEST {
        ManuallyDrop::new(self).handle.as_ptr()
    }
}

impl Drop for RawRequest {
    /// A request dropped without completion is completed `STATUS_CANCELLED` (the
    /// `request` module's documented rule), never lost.
    fn drop(&mut self) {
        // SAFETY: the value owns the live request (type invariant) and is going away: this
        // is its one completion.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestComplete,
                self.handle.as_ptr(),
                STATUS_CANCELLED
            );
        }
    }
}

/// `WdfRequestGetParameters`, read into [`Parameters`]; `None` for another request type.
fn read_parameters(handle: WDFREQUEST) -> Option<Parameters> {
    // WDF_REQUEST_PARAMETERS_INIT: zeroed, then the size.
    // SAFETY: all-zero bytes are a valid WDF_REQUEST_PARAMETERS (integers, a union of
    // integers and pointers).
    let mut raw: WDF_REQUEST_PARAMETERS = unsafe { core::mem::zeroed() };
    raw.Size = u16::try_from(struct_size::<WDF_REQUEST_PARAMETERS>()).unwrap_or(u16::MAX);
    // SAFETY: `handle` is a live request (the callers'); the structure is initialized and
    // outlives the call.
    unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetParameters, handle, &raw mut raw) };
    Some(match raw.Type {
        _WDF_REQUEST_TYPE::WdfRequestTypeRead => {
            // SAFETY: for a read, KMDF filled the union's `Read` member.
            let read = unsafe { raw.Parameters.Read };
            Parameters::Read { length: read.Length }
        }
        _WDF_REQUEST_TYPE::WdfRequestTypeWrite => {
            // SAFETY: for a write, `Write`.
            let write = unsafe { raw.Parameters.Write };
            Parameters::Write { length: write.Length }
        }
        _WDF_REQUEST_TYPE::WdfRequestTypeDeviceControl => {
            // SAFETY: for a device control, `DeviceIoControl`.
            let control = unsafe { raw.Parameters.DeviceIoControl };
            Parameters::DeviceControl {
                code: control.IoControlCode,
                output_length: control.OutputBufferLength,
                input_length: control.InputBufferLength,
            }
        }
        _WDF_REQUEST_TYPE::WdfRequestTypeDeviceControlInternal => {
            // SAFETY: for an internal device control, `DeviceIoControl`.
            let control = unsafe { raw.Parameters.DeviceIoControl };
            Parameters::InternalDeviceControl {
                code: control.IoControlCode,
                output_length: control.OutputBufferLength,
                input_length: control.InputBufferLength,
            }
        }
        _ => return None,
    })
}

#[inline]
pub(crate) fn id(request: &RawRequest) -> u64 {
    request.handle.as_ptr().addr() as u64
}

#[inline]
pub(crate) fn parameters(request: &RawRequest) -> Parameters {
    request.parameters
}

#[inline]
pub(crate) fn input_buffer(request: &RawRequest, min_len: usize) -> Result<&[u8]> {
    let mut buffer: *mut core::ffi::c_void = ptr::null_mut();
    let mut length = 0_usize;
    // SAFETY: the request is live and the caller's (type invariant); the out-parameters
    // are valid for the call.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveInputBuffer,
            request.handle(),
            min_len,
            &raw mut buffer,
            &raw mut length,
        )
    };
    NtStatus::from_raw(status).ok()?;
    if buffer.is_null() || length == 0 {
        return Err(NtError::BUFFER_TOO_SMALL);
    }
    // SAFETY: on success KMDF returns a buffer of `length` bytes that stays valid until the
    // request is completed, which needs the request by value, so not while `request` is
    // borrowed; the borrow is shared, so no `&mut` of the (possibly same, METHOD_BUFFERED)
    // output buffer exists meanwhile (`output_buffer` needs `&mut`).
    Ok(unsafe { slice::from_raw_parts(buffer.cast::<u8>(), length) })
}

#[inline]
pub(crate) fn output_buffer(request: &mut RawRequest, min_len: usize) -> Result<&mut [u8]> {
    let mut buffer: *mut core::ffi::c_void = ptr::null_mut();
    let mut length = 0_usize;
    // SAFETY: as in `input_buffer`.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveOutputBuffer,
            request.handle(),
            min_len,
            &raw mut buffer,
            &raw mut length,
        )
    };
    NtStatus::from_raw(status).ok()?;
    if buffer.is_null() || length == 0 {
        return Err(NtError::BUFFER_TOO_SMALL);
    }
    // SAFETY: valid for `length` bytes until the completion, as in `input_buffer`; the
    // request is borrowed exclusively for the slice's lifetime, so no other slice of it
    // (the input buffer is the same memory for METHOD_BUFFERED) is alive meanwhile.
    Ok(unsafe { slice::from_raw_parts_mut(buffer.cast::<u8>(), length) })
}

pub(crate) fn file<F: FileCallbacks>(request: &RawRequest) -> Option<&FileObject<F>> {
    // SAFETY: the request is live (type invariant); NULL when it has no file object.
    let file =
        unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetFileObject, request.handle()) };
    if file.is_null() {
        return None;
    }
    // SAFETY: the request holds its file object for as long as it exists, so for the
    // borrow of `request`.
    unsafe { super::file::file_of::<F>(file) }
}

#[inline]
pub(crate) fn is_canceled(request: &RawRequest) -> bool {
    // SAFETY: the request is live (type invariant).
    unsafe { call_unsafe_wdf_function_binding!(WdfRequestIsCanceled, request.handle()) != 0 }
}

/// `WdfRequestComplete`, or `WdfRequestCompleteWithInformation` when `information` is not
/// 0: one call either way (the facade's `complete` passes a constant 0).
#[inline]
pub(crate) fn complete(request: RawRequest, status: NtStatus, information: usize) {
    let handle = request.into_handle();
    let status: NTSTATUS = status.to_raw();
    if information == 0 {
        // SAFETY: the driver owned the live request (the value's invariant), and gave the
        // value up above: this is its one completion.
        unsafe { call_unsafe_wdf_function_binding!(WdfRequestComplete, handle, status) };
    } else {
        // SAFETY: as above.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestCompleteWithInformation,
                handle,
                status,
                information as u64,
            );
        }
    }
}

#[inline]
pub(crate) fn complete_with_information(
    request: RawRequest,
    status: NtStatus,
    information: usize,
) -> core::result::Result<(), (RawRequest, NtError)> {
    if status.is_success() && information > request.parameters.information_limit() {
        return Err((request, NtError::INVALID_PARAMETER));
    }
    let handle = request.into_handle();
    // SAFETY: the driver owned the live request, and gave the value up above: this is its
    // one completion.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestCompleteWithInformation,
            handle,
            status.to_raw(),
            information as u64,
        );
    }
    Ok(())
}

/// A cancelable request: the framework holds it; the driver has a claim.
///
/// # Invariants
///
/// The value owns one object reference on the request (`WdfObjectReferenceActual`, taken
/// before the request was made cancelable, released in `Drop`). The cancel routine may run,
/// and complete the request, at any time after `WdfRequestMarkCancelableEx`; the reference
/// keeps the `WDFREQUEST` object (not the I/O) alive until then, so
/// `WdfRequestUnmarkCancelable` never reaches a freed object: KMDF answers it
/// `STATUS_CANCELLED` (the cancel routine has the request) or, once that routine completed
/// it, an error, and only `STATUS_SUCCESS` gives the request back.
pub(crate) struct RawCancelable {
    handle: NonNull<core::ffi::c_void>,
    parameters: Parameters,
}

// SAFETY: as `RawRequest`: a handle value, plain data, and an object reference, which may
// be released on any thread.
unsafe impl Send for RawCancelable {}
// SAFETY: as above; shared access only reads them.
unsafe impl Sync for RawCancelable {}

/// `WdfObjectReferenceActual` on a live request (no tag, line or file).
fn reference(handle: WDFREQUEST) {
    // SAFETY: `handle` is a live request the caller owns.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfObjectReferenceActual,
            handle,
            ptr::null_mut(),
            0,
            ptr::null(),
        );
    }
}

impl Drop for RawCancelable {
    fn drop(&mut self) {
        // SAFETY: releases the reference this value owns (type invariant); the request
        // object may be freed by it (when its cancel routine completed it), and nothing
        // uses the handle afterwards.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfObjectDereferenceActual,
                self.handle.as_ptr(),
                ptr::null_mut(),
                0,
                ptr::null(),
            );
        }
    }
}

pub(crate) fn mark_cancelable<T: IoQueueCallbacks>(
    request: RawRequest,
    queue: &IoQueue<T>,
) -> core::result::Result<RawCancelable, RawRequest> {
    // SAFETY: the request is live (owned).
    let own: WDFQUEUE =
        unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetIoQueue, request.handle()) };
    assert!(
        own == queue.raw.handle(),
        "kmdf: Request::mark_cancelable({queue:?}) of a request of another queue: the cancel \
         callback is the request's own queue's"
    );
    // The claim's reference, taken while the request is surely alive (the driver's).
    reference(request.handle());
    let parameters = request.parameters;
    let handle = request.into_handle();
    // INVARIANT: the reference just taken is the claim's from here on.
    let claim = RawCancelable { handle: NonNull::new(handle).expect("non-null"), parameters };
    // SAFETY: the request is live and the driver's; `cancel::<T>` is the cancel routine of
    // a request of a queue created with `T` (checked above).
    let status = unsafe {
        call_unsafe_wdf_function_binding!(WdfRequestMarkCancelableEx, handle, Some(cancel::<T>))
    };
    if status == STATUS_CANCELLED {
        // Not marked: the request is still the driver's (and the claim's reference goes).
        drop(claim);
        // SAFETY: the live request, which the driver still owns, with its parameters.
        return Err(unsafe { RawRequest::owned(handle, parameters) });
    }
    Ok(claim)
}

/// `EvtRequestCancel` of requests made cancelable with a queue of context `T`.
unsafe extern "C" fn cancel<T: IoQueueCallbacks>(request: WDFREQUEST) {
    // SAFETY: KMDF calls the cancel routine with the live request, now the driver's again.
    let queue = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetIoQueue, request) };
    // SAFETY: the request's queue was created with `T` (`mark_cancelable::<T>` checked it),
    // and holds the request, so it is alive for the call.
    let queue: &IoQueue<T> = unsafe { view_handle(queue) };
    // SAFETY: the driver owns the request in its cancel routine.
    let Some(raw) = (unsafe { RawRequest::read(request) }) else {
        return;
    };
    let (context, device) = super::io_queue::parts(queue);
    context.request_cancel(queue, device, Request { raw });
}

pub(crate) fn cancelable_id(request: &RawCancelable) -> u64 {
    request.handle.as_ptr().addr() as u64
}

#[allow(clippy::needless_pass_by_value, reason = "the claim is consumed, as the facade's")]
pub(crate) fn unmark(request: RawCancelable) -> Option<RawRequest> {
    let handle = request.handle.as_ptr();
    // SAFETY: the request object is alive: the claim holds a reference on it (type
    // invariant), even if its cancel routine has completed it.
    let status = unsafe { call_unsafe_wdf_function_binding!(WdfRequestUnmarkCancelable, handle) };
    if status != wdk_sys::STATUS_SUCCESS {
        // STATUS_CANCELLED: the cancel routine has it; an error: it completed it already.
        return None;
    }
    let parameters = request.parameters;
    // The request is the driver's again: the claim's reference may go.
    drop(request);
    // SAFETY: unmarked: the driver owns the live request again, with its parameters.
    Some(unsafe { RawRequest::owned(handle, parameters) })
}

pub(crate) fn forward(
    request: RawRequest,
    queue: &super::RawObject,
) -> core::result::Result<(), (RawRequest, NtError)> {
    // SAFETY: the request is live and the driver's; the queue is live (borrowed).
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestForwardToIoQueue,
            request.handle(),
            queue.handle().cast()
        )
    };
    match NtStatus::from_raw(status).ok() {
        Ok(()) => {
            let _ = request.into_handle();
            Ok(())
        }
        Err(error) => Err((request, error)),
    }
}

pub(crate) fn requeue(request: RawRequest) -> core::result::Result<(), (RawRequest, NtError)> {
    // SAFETY: the request is live and the driver's.
    let status = unsafe { call_unsafe_wdf_function_binding!(WdfRequestRequeue, request.handle()) };
    match NtStatus::from_raw(status).ok() {
        Ok(()) => {
            let _ = request.into_handle();
            Ok(())
        }
        Err(error) => Err((request, error)),
    }
}
