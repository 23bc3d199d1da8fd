//! I/O queues (`WDFQUEUE`): how requests reach the driver.
//!
//! A queue belongs to a device and has a typed context, which implements
//! [`IoQueueCallbacks`] through [`vtable!`](crate::vtable): only the callbacks written are
//! registered, as a C driver leaves the others NULL. The device's *default queue* gets every
//! read, write and device control request no other queue was configured for
//! ([`IoQueue::configure_dispatching`]).
//!
//! ```
//! use kmdf::io_queue::{Dispatch, IoQueue, IoQueueCallbacks, IoQueueConfig};
//! use kmdf::{Device, DeviceInit, NtStatus, PnpPowerCallbacks, Request, Result};
//!
//! struct Echo;
//! kmdf::vtable! { impl PnpPowerCallbacks for Echo {} }
//!
//! /// The default queue's context.
//! struct Reads;
//!
//! kmdf::vtable! {
//!     impl IoQueueCallbacks for Reads {
//!         type Device = Echo;
//!
//!         fn read(
//!             &self,
//!             _queue: &IoQueue<Self>,
//!             _device: &Device<Echo>,
//!             mut request: Request,
//!             length: usize,
//!         ) {
//!             match request.output_buffer(1) {
//!                 Ok(buffer) => {
//!                     buffer.fill(b'e');
//!                     let done = request.complete_with_information(NtStatus::SUCCESS, length);
//!                     debug_assert!(done.is_ok());
//!                 }
//!                 Err(status) => request.complete(status.status()),
//!             }
//!         }
//!     }
//! }
//!
//! fn device_add(init: DeviceInit<'_>) -> Result {
//!     let device = init.create(Echo)?;
//!     IoQueue::create(device, IoQueueConfig::default_queue(Dispatch::parallel()), Reads)?;
//!     Ok(())
//! }
//! ```
//!
//! # The rules (docs/kmdf-behaviour.md section 9; the shared reference's section 7)
//!
//! * **Presentation**: first in, first out per queue; a sequential queue presents the next
//!   request once the driver no longer owns the previous one; a parallel queue while the
//!   driver owns fewer than its limit; a manual queue never (the driver retrieves them).
//!   The type's handler is called, else `default`, else the request is completed
//!   `STATUS_INVALID_DEVICE_REQUEST`. A zero-length read or write is completed with
//!   success unless the queue allows them. A queue that does not accept requests (purged,
//!   drained) completes new ones `STATUS_INVALID_DEVICE_STATE`.
//! * **Power**: a power-managed queue (the default) presents only while the device is in
//!   D0. When the device leaves D0 (right after `EvtDeviceSelfManagedIoSuspend`) every
//!   request the driver owns gets `stop` with [`StopAction::Suspend`], and the power-down
//!   waits until each is acknowledged ([`IoStop`]) or completed; after the power-up, before
//!   `EvtDeviceSelfManagedIoInit`/`Restart`, requests acknowledged without requeue get
//!   `resume`, and queued ones are presented. Requests arriving in Dx wait in the queue.
//! * **Removal**: power-managed queues are purged before `EvtDeviceSelfManagedIoFlush`,
//!   the others before `EvtDeviceSelfManagedIoCleanup`: queued requests are cancelled,
//!   cancelable driver-owned ones get `request_cancel`, the others `stop` with
//!   [`StopAction::Purge`].

use core::fmt;
use core::marker::PhantomData;
use core::num::NonZeroU32;

use crate::backend;
use crate::object::ObjectRef;
use crate::request::{Request, RequestId, RequestType};
use crate::{Device, NtStatus, PnpPowerCallbacks, Result};

/// A framework queue object (`WDFQUEUE`) whose context is a `T`.
#[repr(transparent)]
pub struct IoQueue<T> {
    pub(crate) raw: backend::RawObject,
    _context: PhantomData<T>,
}

/// How a queue presents its requests (`WDF_IO_QUEUE_DISPATCH_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dispatch {
    /// `WdfIoQueueDispatchSequential`: one at a time.
    Sequential,
    /// `WdfIoQueueDispatchParallel`: as many as arrive, or at most `limit` the driver owns
    /// at once (`NumberOfPresentedRequests`).
    Parallel {
        /// The most requests the driver owns at once; `None` for no limit.
        limit: Option<NonZeroU32>,
    },
    /// `WdfIoQueueDispatchManual`: never presented; the driver retrieves them
    /// ([`IoQueue::retrieve_next_request`]).
    Manual,
}

impl Dispatch {
    /// Parallel without a limit, as `WDF_IO_QUEUE_CONFIG_INIT` sets it.
    #[must_use]
    pub const fn parallel() -> Dispatch {
        Dispatch::Parallel { limit: None }
    }
}

/// A queue's configuration (`WDF_IO_QUEUE_CONFIG`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoQueueConfig {
    dispatch: Dispatch,
    default_queue: bool,
    power_managed: bool,
    allow_zero_length: bool,
}

impl IoQueueConfig {
    /// A queue that gets the request types it is configured for
    /// ([`IoQueue::configure_dispatching`]), or that the driver forwards requests to:
    /// power-managed, zero-length requests not presented (`WDF_IO_QUEUE_CONFIG_INIT`).
    #[must_use]
    pub const fn new(dispatch: Dispatch) -> Self {
        Self { dispatch, default_queue: false, power_managed: true, allow_zero_length: false }
    }

    /// The device's default queue (`WDF_IO_QUEUE_CONFIG_INIT_DEFAULT_QUEUE`).
    #[must_use]
    pub const fn default_queue(dispatch: Dispatch) -> Self {
        Self { default_queue: true, ..Self::new(dispatch) }
    }

    /// Whether the queue follows the device's power state (`PowerManaged`; default
    /// `true`, as `WdfUseDefault` means for a function driver).
    #[must_use]
    pub const fn power_managed(self, power_managed: bool) -> Self {
        Self { power_managed, ..self }
    }

    /// Whether zero-length reads and writes are presented (`AllowZeroLengthRequests`;
    /// default `false`: they are completed with success and never presented).
    #[must_use]
    pub const fn allow_zero_length(self, allow: bool) -> Self {
        Self { allow_zero_length: allow, ..self }
    }

    /// The dispatch type.
    #[must_use]
    pub const fn dispatch(&self) -> Dispatch {
        self.dispatch
    }

    /// Whether this is the default queue.
    #[must_use]
    pub const fn is_default_queue(&self) -> bool {
        self.default_queue
    }

    /// Whether the queue is power-managed.
    #[must_use]
    pub const fn is_power_managed(&self) -> bool {
        self.power_managed
    }

    /// Whether zero-length reads and writes are presented.
    #[must_use]
    pub const fn allows_zero_length(&self) -> bool {
        self.allow_zero_length
    }
}

impl<T: IoQueueCallbacks> IoQueue<T> {
    /// Creates a queue of `device` (`WdfIoQueueCreate`) with `context` in its context space
    /// and `T`'s callbacks registered.
    ///
    /// Callable at `IRQL <= DISPATCH_LEVEL`; a default queue only before the device's
    /// first start (in `device_add`).
    ///
    /// # Errors
    ///
    /// * `STATUS_WDF_NO_CALLBACK` for a sequential or parallel queue with no request
    ///   handler (`read`, `write`, `device_control`, `internal_device_control`, `default`);
    ///   `STATUS_INVALID_PARAMETER` for a manual queue with one, or with a presentation
    ///   limit on a non-parallel queue (not expressible here).
    /// * `STATUS_UNSUCCESSFUL` for a second default queue; `STATUS_INVALID_DEVICE_STATE`
    ///   for a default queue after the first start.
    /// * `STATUS_DELETE_PENDING` when the device is being removed.
    ///
    /// `context` is dropped on failure.
    #[track_caller]
    pub fn create(
        device: &Device<T::Device>,
        config: IoQueueConfig,
        context: T,
    ) -> Result<ObjectRef<Self>> {
        backend::io_queue::create(device, config, context)
    }

    /// One more counted reference to the queue.
    #[must_use]
    pub fn to_ref(&self) -> ObjectRef<Self> {
        ObjectRef::from_raw(backend::io_queue::new_ref(self))
    }

    /// The queue's context.
    #[must_use]
    pub fn context(&self) -> &T {
        backend::io_queue::context(&self.raw)
    }

    /// Sends every request of type `request_type` to this queue instead of the default
    /// queue (`WdfDeviceConfigureRequestDispatching`). Only before the device's first start.
    ///
    /// `device` is the queue's device: a queue does not keep its device alive, so the
    /// caller lends it (as in `device_add`, right after [`create`](Self::create)).
    ///
    /// # Errors
    ///
    /// * `STATUS_INVALID_DEVICE_REQUEST` for the default queue itself, for a queue that
    ///   is neither manual nor has `default` or the type's handler, or when `device` is
    ///   not the queue's device.
    /// * `STATUS_WDF_BUSY` when the type goes to another queue already.
    /// * `STATUS_INVALID_DEVICE_STATE` after the device's first start.
    pub fn configure_dispatching(
        &self,
        device: &Device<T::Device>,
        request_type: RequestType,
    ) -> Result {
        backend::io_queue::configure_dispatching(&device.raw, &self.raw, request_type)
    }

    /// Starts the queue (`WdfIoQueueStart`): it accepts and presents requests again after a
    /// stop, purge or drain.
    pub fn start(&self) {
        backend::io_queue::start(&self.raw);
    }

    /// Stops presenting (`WdfIoQueueStop`); new requests are still accepted and wait.
    pub fn stop(&self) {
        backend::io_queue::stop(&self.raw);
    }

    /// Stops presenting and cancels the queued requests and the cancelable ones the driver
    /// owns (`WdfIoQueueStopAndPurge`); new requests are still accepted and wait.
    pub fn stop_and_purge(&self) {
        backend::io_queue::stop_and_purge(&self.raw);
    }

    /// Stops accepting requests and cancels the queued ones and the cancelable ones the
    /// driver owns (`WdfIoQueuePurge`). Until [`start`](Self::start), new requests are
    /// completed `STATUS_INVALID_DEVICE_STATE`.
    pub fn purge(&self) {
        backend::io_queue::purge(&self.raw);
    }

    /// Stops accepting requests, still presents the queued ones (`WdfIoQueueDrain`).
    pub fn drain(&self) {
        backend::io_queue::drain(&self.raw);
    }

    /// [`stop`](Self::stop), then waits until the driver owns none of the queue's requests
    /// and no callback of the queue runs (`WdfIoQueueStopSynchronously`).
    ///
    /// # Errors
    ///
    /// * `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL` above `PASSIVE_LEVEL` (every I/O
    ///   callback runs at `DISPATCH_LEVEL` on the host runtime): it waits.
    /// * On the host runtime, called outside deferred work (from the test's thread),
    ///   `STATUS_POSSIBLE_DEADLOCK` when nothing could end the wait: no queue callback runs on
    ///   another thread, no work item is queued or running, and requests are still the
    ///   driver's (KMDF would wait forever). From a work item it waits, as KMDF does.
    pub fn stop_synchronously(&self) -> Result {
        backend::io_queue::wait(&self.raw, backend::io_queue::Wait::Stop)
    }

    /// [`stop_and_purge`](Self::stop_and_purge), then waits as
    /// [`stop_synchronously`](Self::stop_synchronously) does
    /// (`WdfIoQueueStopAndPurgeSynchronously`).
    ///
    /// # Errors
    ///
    /// As [`stop_synchronously`](Self::stop_synchronously).
    pub fn stop_and_purge_synchronously(&self) -> Result {
        backend::io_queue::wait(&self.raw, backend::io_queue::Wait::StopAndPurge)
    }

    /// [`purge`](Self::purge), then waits until no request is queued or the driver's
    /// (`WdfIoQueuePurgeSynchronously`).
    ///
    /// # Errors
    ///
    /// As [`stop_synchronously`](Self::stop_synchronously).
    pub fn purge_synchronously(&self) -> Result {
        backend::io_queue::wait(&self.raw, backend::io_queue::Wait::Purge)
    }

    /// [`drain`](Self::drain), then waits until no request is queued or the driver's
    /// (`WdfIoQueueDrainSynchronously`).
    ///
    /// # Errors
    ///
    /// As [`stop_synchronously`](Self::stop_synchronously).
    pub fn drain_synchronously(&self) -> Result {
        backend::io_queue::wait(&self.raw, backend::io_queue::Wait::Drain)
    }

    /// The next request of a manual or sequential queue (`WdfIoQueueRetrieveNextRequest`),
    /// now the driver's.
    ///
    /// # Errors
    ///
    /// * `STATUS_INVALID_DEVICE_STATE` on a parallel queue.
    /// * `STATUS_WDF_PAUSED` when the queue is stopped, or power-managed and the device is
    ///   not in D0.
    /// * `STATUS_NO_MORE_ENTRIES` when it is empty.
    pub fn retrieve_next_request(&self) -> Result<Request> {
        backend::io_queue::retrieve_next_request(&self.raw).map(|raw| Request { raw })
    }
}

impl<T> fmt::Debug for IoQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IoQueue<{}>({:?})", core::any::type_name::<T>(), self.raw)
    }
}

/// Why a queue calls [`IoQueueCallbacks::stop`] (`WDF_REQUEST_STOP_ACTION_FLAGS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopAction {
    /// `WdfRequestStopActionSuspend`: the device leaves D0; the request may be kept
    /// ([`IoStop::acknowledge`]) and resumed after the power-up.
    Suspend,
    /// `WdfRequestStopActionPurge`: the queue is purged (the device is being removed);
    /// complete the request.
    Purge,
}

/// `EvtIoStop`'s request: which one, why, and the acknowledgement
/// (`WdfRequestStopAcknowledge`), which only exists inside the callback.
///
/// It cannot leave the callback, so the acknowledgement cannot come later (which KMDF
/// documents as a rule and would leave the power-down blocked):
///
/// ```compile_fail
/// use kmdf::io_queue::{IoQueue, IoQueueCallbacks, IoStop};
/// use kmdf::sync::SpinLock;
/// use kmdf::{Device, PnpPowerCallbacks, Request};
///
/// struct Dev;
/// kmdf::vtable! { impl PnpPowerCallbacks for Dev {} }
/// struct Reads {
///     later: SpinLock<Option<IoStop<'static>>>,
/// }
/// kmdf::vtable! {
///     impl IoQueueCallbacks for Reads {
///         type Device = Dev;
///         fn read(&self, _q: &IoQueue<Self>, _d: &Device<Dev>, request: Request, _length: usize) {
///             request.complete(kmdf::NtStatus::SUCCESS);
///         }
///         fn stop(&self, _queue: &IoQueue<Self>, _device: &Device<Dev>, stop: IoStop<'_>) {
///             *self.later.lock() = Some(stop); // the borrow does not live long enough
///         }
///     }
/// }
/// ```
///
/// Dropped without acknowledging it, the request stays the driver's and the power-down or
/// purge waits for its completion (on the host runtime: until no work item runs; then the
/// verifier reports the stuck power-down and lets it go on).
pub struct IoStop<'a> {
    pub(crate) raw: backend::io_queue::RawStop<'a>,
}

impl IoStop<'_> {
    /// The request the driver owns.
    #[must_use]
    pub fn request(&self) -> RequestId {
        RequestId(self.raw.id)
    }

    /// Why the queue stops.
    #[must_use]
    pub fn action(&self) -> StopAction {
        self.raw.action
    }

    /// Whether the request is cancelable (`WdfRequestStopRequestCancelable`).
    #[must_use]
    pub fn is_cancelable(&self) -> bool {
        self.raw.cancelable
    }

    /// `WdfRequestStopAcknowledge(Request, FALSE)`: the driver keeps the request; after the
    /// power-up it gets [`IoQueueCallbacks::resume`] for it.
    pub fn acknowledge(self) {
        backend::io_queue::acknowledge(&self.raw);
    }

    /// `WdfRequestStopAcknowledge(Request, TRUE)`: the request goes back to the head of its
    /// queue and is presented again after the power-up (during a purge: it is cancelled).
    ///
    /// # Errors
    ///
    /// `STATUS_INVALID_PARAMETER` when `request` is not the one this stop is about; it
    /// comes back in the error.
    pub fn acknowledge_requeue(
        self,
        request: Request,
    ) -> core::result::Result<(), crate::RequestError> {
        backend::io_queue::acknowledge_requeue(&self.raw, request.raw)
            .map_err(|(raw, status)| crate::RequestError { status, request: Request { raw } })
    }
}

impl fmt::Debug for IoStop<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoStop")
            .field("request", &self.request())
            .field("action", &self.action())
            .field("cancelable", &self.is_cancelable())
            .finish()
    }
}

/// What a queue does with the requests it presents: `WDF_IO_QUEUE_CONFIG`'s callbacks, the
/// requests' `EvtRequestCancel` and the queue's `EvtCleanupCallback`.
///
/// Implemented by the queue's context type, always through [`vtable!`](crate::vtable),
/// which registers exactly the methods written; the associated type `Device` (the device's
/// context type) comes first. Every request callback runs at `DISPATCH_LEVEL` on the host
/// runtime (KMDF's default allows it), so it must not wait: keep the request and finish it
/// from a work item.
///
/// The request handlers receive the request by value: the driver owns it and must complete
/// it, now or later. The default bodies are never called (an unregistered handler is not
/// called); they complete the request `STATUS_INVALID_DEVICE_REQUEST`, as KMDF does for a
/// request without a handler.
pub trait IoQueueCallbacks: Sized + Send + Sync + 'static {
    /// Which methods the impl block wrote. Written by [`vtable!`](crate::vtable). Not part
    /// of the public API.
    #[doc(hidden)]
    const REGISTERED: crate::callback::vtable::IoQueueCallbacks;

    /// The context type of the device the queue belongs to.
    type Device: PnpPowerCallbacks;

    /// `EvtIoRead`: a read of `length` bytes (traced `EvtIoRead(LEN)`).
    fn read(
        &self,
        queue: &IoQueue<Self>,
        device: &Device<Self::Device>,
        request: Request,
        length: usize,
    ) {
        let _ = (queue, device, length);
        request.complete(NtStatus::INVALID_DEVICE_REQUEST);
    }

    /// `EvtIoWrite`: a write of `length` bytes (traced `EvtIoWrite(LEN)`).
    fn write(
        &self,
        queue: &IoQueue<Self>,
        device: &Device<Self::Device>,
        request: Request,
        length: usize,
    ) {
        let _ = (queue, device, length);
        request.complete(NtStatus::INVALID_DEVICE_REQUEST);
    }

    /// `EvtIoDeviceControl` (traced `EvtIoDeviceControl(0xCODE, OUT, IN)`).
    fn device_control(
        &self,
        queue: &IoQueue<Self>,
        device: &Device<Self::Device>,
        request: Request,
        output_length: usize,
        input_length: usize,
        code: u32,
    ) {
        let _ = (queue, device, output_length, input_length, code);
        request.complete(NtStatus::INVALID_DEVICE_REQUEST);
    }

    /// `EvtIoInternalDeviceControl`.
    fn internal_device_control(
        &self,
        queue: &IoQueue<Self>,
        device: &Device<Self::Device>,
        request: Request,
        output_length: usize,
        input_length: usize,
        code: u32,
    ) {
        let _ = (queue, device, output_length, input_length, code);
        request.complete(NtStatus::INVALID_DEVICE_REQUEST);
    }

    /// `EvtIoDefault`: a request whose type has no handler registered.
    fn default(&self, queue: &IoQueue<Self>, device: &Device<Self::Device>, request: Request) {
        let _ = (queue, device);
        request.complete(NtStatus::INVALID_DEVICE_REQUEST);
    }

    /// `EvtIoStop`: the queue stops (power-down) or is purged while the driver owns the
    /// request `stop` names. Complete it, or acknowledge the stop.
    fn stop(&self, queue: &IoQueue<Self>, device: &Device<Self::Device>, stop: IoStop<'_>) {
        let _ = (queue, device, stop);
    }

    /// `EvtIoResume`: the power-up after a stop acknowledged without requeue; the driver
    /// owns `request` still and carries on with it.
    fn resume(&self, queue: &IoQueue<Self>, device: &Device<Self::Device>, request: RequestId) {
        let _ = (queue, device, request);
    }

    /// `EvtIoCanceledOnQueue`: a request presented before (forwarded, requeued) was
    /// cancelled while back in the queue; complete it.
    fn canceled_on_queue(
        &self,
        queue: &IoQueue<Self>,
        device: &Device<Self::Device>,
        request: Request,
    ) {
        let _ = (queue, device);
        request.complete(NtStatus::CANCELLED);
    }

    /// `EvtIoQueueState` of `WdfIoQueueReadyNotify`: a manual queue went from empty to not
    /// empty (or was started, or powered up, with requests waiting).
    fn ready_notify(&self, queue: &IoQueue<Self>, device: &Device<Self::Device>) {
        let _ = (queue, device);
    }

    /// `EvtRequestCancel` of requests made cancelable with this queue
    /// ([`Request::mark_cancelable`]): complete `request` (`STATUS_CANCELLED`).
    fn request_cancel(
        &self,
        queue: &IoQueue<Self>,
        device: &Device<Self::Device>,
        request: Request,
    ) {
        let _ = (queue, device);
        request.complete(NtStatus::CANCELLED);
    }

    /// `EvtCleanupCallback` of the queue: it is being deleted, with its device.
    fn cleanup(&self, queue: &IoQueue<Self>, device: &Device<Self::Device>) {
        let _ = (queue, device);
    }
}
