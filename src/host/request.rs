//! Requests on the host: the facade's request operations on the request's I/O package
//! (`io.rs`), one function each. A request is no object of the object table: it lives
//! from its arrival to its completion, as a value one party holds at a time.

use super::std;

use super::io::IoPackage;
use super::io_queue;
use super::object::view;
use crate::file::{FileCallbacks, FileObject};
use crate::interface::TransferMethod;
use crate::io_queue::{IoQueue, IoQueueCallbacks};
use crate::request::Parameters;
use crate::{NtError, NtStatus, Result};

pub(crate) use super::io::{RawCancelable, RawRequest};

pub(crate) fn id(request: &RawRequest) -> u64 {
    request.core.id
}

pub(crate) fn parameters(request: &RawRequest) -> Parameters {
    request.core.parameters
}

/// Whether a buffer of `direction` exists for the request (`FxRequest::GetMemoryObject`):
/// a read has no input, a write no output, `METHOD_NEITHER` from an application neither.
fn check(request: &RawRequest, input: bool) -> Result {
    match request.core.parameters {
        Parameters::Read { .. } if input => Err(NtError::INVALID_DEVICE_REQUEST),
        Parameters::Write { .. } if !input => Err(NtError::INVALID_DEVICE_REQUEST),
        Parameters::DeviceControl { code, .. }
            if TransferMethod::of(code) == TransferMethod::Neither =>
        {
            Err(NtError::INVALID_DEVICE_REQUEST)
        }
        _ => Ok(()),
    }
}

pub(crate) fn input_buffer(request: &RawRequest, min_len: usize) -> Result<&[u8]> {
    check(request, true)?;
    let buffer = &request.input;
    if buffer.is_empty() || buffer.len() < min_len {
        return Err(NtError::BUFFER_TOO_SMALL);
    }
    Ok(buffer)
}

pub(crate) fn output_buffer(request: &mut RawRequest, min_len: usize) -> Result<&mut [u8]> {
    check(request, false)?;
    let buffer = &mut request.output;
    if buffer.is_empty() || buffer.len() < min_len {
        return Err(NtError::BUFFER_TOO_SMALL);
    }
    Ok(buffer)
}

pub(crate) fn file<F: FileCallbacks>(request: &RawRequest) -> Option<&FileObject<F>> {
    let file = request.core.file.as_deref()?;
    file.context::<F>()?;
    Some(view::<FileObject<F>>(file))
}

pub(crate) fn is_canceled(request: &RawRequest) -> bool {
    request.core.io.is_canceled(request.core.id)
}

pub(crate) fn complete(request: RawRequest, status: NtStatus, information: usize) {
    request.complete(status, information);
}

pub(crate) fn complete_with_information(
    request: RawRequest,
    status: NtStatus,
    information: usize,
) -> core::result::Result<(), (RawRequest, NtError)> {
    if status.is_success() && information > IoPackage::information_limit(request.core.parameters) {
        return Err((request, NtError::INVALID_PARAMETER));
    }
    request.complete(status, information);
    Ok(())
}

pub(crate) fn mark_cancelable<T: IoQueueCallbacks>(
    request: RawRequest,
    queue: &IoQueue<T>,
) -> core::result::Result<RawCancelable, RawRequest> {
    let io = std::sync::Arc::clone(&request.core.io);
    let state = io_queue::state(&queue.raw);
    assert!(
        std::sync::Arc::ptr_eq(&state.io, &io) && io.queue_of(request.core.id) == Some(state.id),
        "kmdf: Request::mark_cancelable({queue:?}) of request {} of another queue: the cancel \
         callback is the request's own queue's",
        request.core.id
    );
    io.mark_cancelable(request, queue.raw.to_arc(), state.table)
}

pub(crate) fn cancelable_id(request: &RawCancelable) -> u64 {
    request.id
}

#[allow(clippy::needless_pass_by_value, reason = "the claim is consumed, as the facade's")]
pub(crate) fn unmark(request: RawCancelable) -> Option<RawRequest> {
    request.io.unmark(request.id)
}

pub(crate) fn forward(
    request: RawRequest,
    queue: &super::object::RawObject,
) -> core::result::Result<(), (RawRequest, NtError)> {
    let state = io_queue::state(queue);
    if !std::sync::Arc::ptr_eq(&state.io, &request.core.io) {
        return Err((request, NtError::INVALID_DEVICE_REQUEST));
    }
    let io = std::sync::Arc::clone(&request.core.io);
    io.forward(request, state.id)
}

pub(crate) fn requeue(request: RawRequest) -> core::result::Result<(), (RawRequest, NtError)> {
    let io = std::sync::Arc::clone(&request.core.io);
    io.requeue(request)
}
