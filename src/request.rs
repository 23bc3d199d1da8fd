//! Requests (`WDFREQUEST`): the I/O an application sent, owned by the driver until it
//! completes it.
//!
//! A queue presents a [`Request`] to the driver by value ([`IoQueueCallbacks`]). The value
//! *is* the ownership: the driver completes it exactly once, with
//! [`complete`](Request::complete) or
//! [`complete_with_information`](Request::complete_with_information), which consume it; or
//! hands it on ([`forward`](Request::forward), [`requeue`](Request::requeue)), or makes it
//! cancelable ([`mark_cancelable`](Request::mark_cancelable)), which consume it too. A
//! request cannot be completed twice, nor used after completion. It can be kept, in the
//! device or queue context, and completed later from any callback (a work item, a timer).
//!
//! Its buffers are slices borrowed from the request ([`input_buffer`](Request::input_buffer),
//! [`output_buffer`](Request::output_buffer)), so none outlives the completion.
//!
//! # A request dropped without completion
//!
//! In KMDF a request the driver forgets is never completed: the application's I/O hangs,
//! and so does the device's removal. `kmdf` completes a dropped [`Request`] with
//! `STATUS_CANCELLED` (information 0), the status an application sees for an I/O that did
//! not happen, and the host runtime's verifier reports it as a driver bug (a finding that
//! fails the PnP action it happened in, see
//! [`Runtime::verifier_findings`](crate::host::Runtime::verifier_findings)). Do not rely on
//! it: complete what you own.
//!
//! # The rules (docs/kmdf-behaviour.md section 9; the shared reference's section 7)
//!
//! * `information` must not exceed the buffer the request describes when the status is a
//!   success: the read length, the write length, a device control's output length (KMDF's
//!   verifier bug-checks; `kmdf` returns the request in an error).
//! * A read has no input buffer and a write no output buffer
//!   (`STATUS_INVALID_DEVICE_REQUEST`); a buffer of length 0, or shorter than the minimum
//!   asked for, is `STATUS_BUFFER_TOO_SMALL` (`FxRequest::GetMemoryObject`).
//! * Cancellation: a request the driver keeps pending for long is made cancelable; the
//!   queue's `request_cancel` runs at most once when the application cancels it (or the
//!   queue is purged), and gets the request to complete. [`CancelableRequest::unmark`]
//!   takes it back, unless the cancellation won.

use core::fmt;

use crate::backend;
use crate::file::{FileCallbacks, FileObject};
use crate::io_queue::{IoQueue, IoQueueCallbacks};
use crate::{NtError, NtStatus};

/// Identifies a request while it exists, for example to find it in `EvtIoStop` among the
/// requests a driver keeps ([`IoStop::request`](crate::io_queue::IoStop::request)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

/// The type of a request a queue presents (`WDF_REQUEST_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// `WdfRequestTypeRead` (`IRP_MJ_READ`).
    Read,
    /// `WdfRequestTypeWrite` (`IRP_MJ_WRITE`).
    Write,
    /// `WdfRequestTypeDeviceControl` (`IRP_MJ_DEVICE_CONTROL`).
    DeviceControl,
    /// `WdfRequestTypeDeviceControlInternal` (`IRP_MJ_INTERNAL_DEVICE_CONTROL`).
    InternalDeviceControl,
}

/// A request's parameters (`WDF_REQUEST_PARAMETERS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Parameters {
    /// A read of `length` bytes.
    Read {
        /// The length of the caller's buffer.
        length: usize,
    },
    /// A write of `length` bytes.
    Write {
        /// The length of the caller's data.
        length: usize,
    },
    /// A device I/O control request.
    DeviceControl {
        /// The I/O control code ([`ctl_code`](crate::interface::ctl_code)).
        code: u32,
        /// The length of the output buffer.
        output_length: usize,
        /// The length of the input buffer.
        input_length: usize,
    },
    /// An internal device I/O control request.
    InternalDeviceControl {
        /// The I/O control code.
        code: u32,
        /// The length of the output buffer.
        output_length: usize,
        /// The length of the input buffer.
        input_length: usize,
    },
}

impl Parameters {
    /// The request's type.
    #[must_use]
    pub const fn request_type(&self) -> RequestType {
        match self {
            Parameters::Read { .. } => RequestType::Read,
            Parameters::Write { .. } => RequestType::Write,
            Parameters::DeviceControl { .. } => RequestType::DeviceControl,
            Parameters::InternalDeviceControl { .. } => RequestType::InternalDeviceControl,
        }
    }

    /// The most `information` a successful completion may report: the read length, the
    /// write length, a device control's output length.
    pub(crate) const fn information_limit(&self) -> usize {
        match *self {
            Parameters::Read { length } | Parameters::Write { length } => length,
            Parameters::DeviceControl { output_length, .. }
            | Parameters::InternalDeviceControl { output_length, .. } => output_length,
        }
    }
}

/// A request the driver owns (`WDFREQUEST`): complete it once, or hand it on.
///
/// See the [module](self) for what happens to one that is dropped. Completing it twice
/// does not compile:
///
/// ```compile_fail,E0382
/// # fn handler(request: kmdf::Request) {
/// request.complete(kmdf::NtStatus::SUCCESS);
/// request.complete(kmdf::NtStatus::SUCCESS); // use of moved value
/// # }
/// ```
///
/// nor does keeping a buffer past the completion:
///
/// ```compile_fail,E0505
/// # fn handler(mut request: kmdf::Request) {
/// let buffer = request.output_buffer(1).unwrap();
/// request.complete(kmdf::NtStatus::SUCCESS); // moves the request while borrowed
/// buffer[0] = 1;
/// # }
/// ```
#[must_use = "a request must be completed; a dropped one is completed with STATUS_CANCELLED \
              and reported by the host runtime's verifier"]
pub struct Request {
    pub(crate) raw: backend::request::RawRequest,
}

impl Request {
    /// The request's identity, while it exists.
    #[must_use]
    #[inline]
    pub fn id(&self) -> RequestId {
        RequestId(backend::request::id(&self.raw))
    }

    /// The request's parameters (`WdfRequestGetParameters`).
    #[must_use]
    #[inline]
    pub fn parameters(&self) -> Parameters {
        backend::request::parameters(&self.raw)
    }

    /// The input buffer (`WdfRequestRetrieveInputBuffer`): a write's data, a device
    /// control's input. Borrowed from the request, so it cannot outlive its completion.
    ///
    /// # Errors
    ///
    /// * `STATUS_INVALID_DEVICE_REQUEST` for a read, and for a `METHOD_NEITHER` device
    ///   control from an application.
    /// * `STATUS_BUFFER_TOO_SMALL` when the buffer is empty (even when `min_len` is 0) or
    ///   shorter than `min_len`.
    #[inline]
    pub fn input_buffer(&self, min_len: usize) -> crate::Result<&[u8]> {
        backend::request::input_buffer(&self.raw, min_len)
    }

    /// The output buffer (`WdfRequestRetrieveOutputBuffer`): where a read's data or a device
    /// control's output goes. The caller receives its first `information` bytes
    /// ([`complete_with_information`](Self::complete_with_information)).
    ///
    /// For a `METHOD_BUFFERED` device control the input and the output are one system
    /// buffer, which starts with the input bytes: the exclusive borrow makes sure no input
    /// slice is alive while the output is written (read the input first, copy what is
    /// needed).
    ///
    /// # Errors
    ///
    /// * `STATUS_INVALID_DEVICE_REQUEST` for a write, and for a `METHOD_NEITHER` device
    ///   control from an application.
    /// * `STATUS_BUFFER_TOO_SMALL` when the buffer is empty (even when `min_len` is 0) or
    ///   shorter than `min_len`.
    #[inline]
    pub fn output_buffer(&mut self, min_len: usize) -> crate::Result<&mut [u8]> {
        backend::request::output_buffer(&mut self.raw, min_len)
    }

    /// The file object the request was sent on (`WdfRequestGetFileObject`), if the device
    /// has file objects of type `F` ([`DeviceInit::set_file_object`](crate::DeviceInit::set_file_object)).
    ///
    /// `F` is checked at run time: `None` when the file object's context is of another type
    /// (in the kernel, a type tag stored ahead of the context names it), or when the request
    /// has no file object.
    #[must_use]
    pub fn file<F: FileCallbacks>(&self) -> Option<&FileObject<F>> {
        backend::request::file(&self.raw)
    }

    /// Whether the request was cancelled (`WdfRequestIsCanceled`): the application
    /// cancelled its I/O, or the queue is being purged, while the driver owned the request
    /// without making it cancelable. The driver should complete it with `STATUS_CANCELLED`.
    #[must_use]
    #[inline]
    pub fn is_canceled(&self) -> bool {
        backend::request::is_canceled(&self.raw)
    }

    /// Completes the request with `status` and information 0 (`WdfRequestComplete`).
    ///
    /// Callable at `IRQL <= DISPATCH_LEVEL`, from any callback.
    #[inline]
    pub fn complete(self, status: NtStatus) {
        backend::request::complete(self.raw, status, 0);
    }

    /// Completes the request with `status` and `information`, the number of bytes
    /// transferred (`WdfRequestCompleteWithInformation`).
    ///
    /// # Errors
    ///
    /// `STATUS_INVALID_PARAMETER` when `status` is a success and `information` exceeds the
    /// request's buffer (the read length, the write length, the device control's output
    /// length): the request is not completed and comes back in the error.
    #[inline]
    pub fn complete_with_information(
        self,
        status: NtStatus,
        information: usize,
    ) -> Result<(), RequestError> {
        backend::request::complete_with_information(self.raw, status, information)
            .map_err(|(raw, status)| RequestError { status, request: Request { raw } })
    }

    /// Makes the request cancelable (`WdfRequestMarkCancelableEx`), with `queue`'s
    /// [`request_cancel`](IoQueueCallbacks::request_cancel) as its `EvtRequestCancel`.
    ///
    /// Consumes the request: the framework holds it while it is cancelable. Returns
    /// [`Marked::Cancelable`], the driver's claim on it, or [`Marked::Canceled`] with the
    /// request when it was cancelled already (the application cancelled it, or the queue
    /// is being purged): the driver completes it then, with `STATUS_CANCELLED`.
    ///
    /// `queue` is the request's queue: the one that presented it, or that it was forwarded
    /// to (in the kernel the cancel callback finds its queue with `WdfRequestGetIoQueue`).
    ///
    /// # Panics
    ///
    /// When `queue` is not the request's queue.
    ///
    /// `queue`'s callbacks must implement `request_cancel`; a queue type that does not is
    /// refused at compile time:
    ///
    /// ```compile_fail
    /// use kmdf::io_queue::{IoQueue, IoQueueCallbacks};
    /// use kmdf::request::Marked;
    /// use kmdf::{Device, PnpPowerCallbacks, Request};
    ///
    /// struct Dev;
    /// kmdf::vtable! { impl PnpPowerCallbacks for Dev {} }
    /// struct Reads;
    /// kmdf::vtable! {
    ///     impl IoQueueCallbacks for Reads {
    ///         type Device = Dev;
    ///         fn read(&self, queue: &IoQueue<Self>, _d: &Device<Dev>, request: Request, _len: usize) {
    ///             // No `request_cancel` in this impl: does not compile.
    ///             if let Marked::Canceled(request) = request.mark_cancelable(queue) {
    ///                 request.complete(kmdf::NtStatus::CANCELLED);
    ///             }
    ///         }
    ///     }
    /// }
    /// // Any use of the handler instantiates the check (here, taking its address).
    /// let read: fn(&Reads, &IoQueue<Reads>, &Device<Dev>, Request, usize) =
    ///     <Reads as IoQueueCallbacks>::read;
    /// # let _ = read;
    /// ```
    pub fn mark_cancelable<T: IoQueueCallbacks>(self, queue: &IoQueue<T>) -> Marked {
        const {
            assert!(
                T::REGISTERED.request_cancel,
                "mark_cancelable: the queue's callbacks must implement request_cancel"
            );
        }
        match backend::request::mark_cancelable(self.raw, queue) {
            Ok(raw) => Marked::Cancelable(CancelableRequest { raw }),
            Err(raw) => Marked::Canceled(Request { raw }),
        }
    }

    /// Forwards the request to another queue of the same device
    /// (`WdfRequestForwardToIoQueue`): it is queued there, and presented (or retrieved)
    /// again; the queue it came from no longer counts it as the driver's (a sequential queue
    /// presents its next request).
    ///
    /// # Errors
    ///
    /// The request comes back in the error:
    /// * `STATUS_INVALID_DEVICE_REQUEST` when `queue` is the request's own queue or a queue
    ///   of another device;
    /// * `STATUS_WDF_BUSY` when `queue` does not accept requests (purged, drained).
    pub fn forward<T: IoQueueCallbacks>(self, queue: &IoQueue<T>) -> Result<(), RequestError> {
        backend::request::forward(self.raw, &queue.raw)
            .map_err(|(raw, status)| RequestError { status, request: Request { raw } })
    }

    /// Puts a request retrieved from a manual queue back at the head of its queue
    /// (`WdfRequestRequeue`). During a purge of that queue it is cancelled instead, and the
    /// call still succeeds.
    ///
    /// # Errors
    ///
    /// `STATUS_INVALID_DEVICE_REQUEST` when the request's queue is not a manual one; the
    /// request comes back in the error.
    pub fn requeue(self) -> Result<(), RequestError> {
        backend::request::requeue(self.raw)
            .map_err(|(raw, status)| RequestError { status, request: Request { raw } })
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id())
            .field("parameters", &self.parameters())
            .finish()
    }
}

/// What [`Request::mark_cancelable`] did.
#[derive(Debug)]
#[must_use = "a cancelled request must be completed"]
pub enum Marked {
    /// The request is cancelable; the framework holds it.
    Cancelable(CancelableRequest),
    /// The request was cancelled already: complete it (`STATUS_CANCELLED`).
    Canceled(Request),
}

/// The driver's claim on a cancelable request, which the framework holds.
///
/// When the request is cancelled, the queue's `request_cancel` gets the request and
/// completes it; [`unmark`](Self::unmark) then returns `None`. Dropping the claim leaves
/// the request cancelable: only a cancellation (by the application, or the purge when the
/// device is removed) completes it then.
#[must_use = "unmark the request to complete it, or keep the claim"]
pub struct CancelableRequest {
    pub(crate) raw: backend::request::RawCancelable,
}

impl CancelableRequest {
    /// The request's identity.
    #[must_use]
    #[inline]
    pub fn id(&self) -> RequestId {
        RequestId(backend::request::cancelable_id(&self.raw))
    }

    /// Makes the request not cancelable again (`WdfRequestUnmarkCancelable`) and returns it,
    /// or `None` when it was cancelled: `request_cancel` has run or will run with it, and
    /// completes it.
    #[must_use = "the returned request must be completed"]
    pub fn unmark(self) -> Option<Request> {
        backend::request::unmark(self.raw).map(|raw| Request { raw })
    }
}

impl fmt::Debug for CancelableRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelableRequest").field(&self.id()).finish()
    }
}

/// A request operation that failed: the status, and the request, still the driver's.
#[derive(Debug)]
pub struct RequestError {
    /// Why it failed.
    pub status: NtError,
    /// The request, which the driver still owns and must complete.
    pub request: Request,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {:?}: {}", self.request.id(), self.status)
    }
}

// On both backends, requests, claims and stops may be moved to and shared with other
// threads (a request kept in a context and completed by a work item): checked here, where
// each backend's build checks it.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Request>();
    send_sync::<CancelableRequest>();
    send_sync::<RequestError>();
    send_sync::<crate::io_queue::IoStop<'static>>();
};
