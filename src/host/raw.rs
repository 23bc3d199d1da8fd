//! The raw face of the host runtime, for `tools/sys-harness`: the runtime's own models
//! (objects with parent/child disposal and cleanup/destroy, work items on the worker pool,
//! timers on the virtual clock, the per-thread IRQL, the PnP/power/SMIO state machines with
//! their failure injection and trace) driven by a driver whose callbacks are not Rust trait
//! methods but C function pointers, and whose contexts are opaque blobs: the kernel
//! backend's code, running in a `.sys` that the harness loads.
//!
//! Behind the `sys-harness` feature; not part of the typed API, which stays as it is. The
//! harness keeps its own handle table (a `WDFOBJECT` value to an [`Object`]) and context
//! blobs; this module only lets it create the runtime's objects with a [`Hooks`] value as
//! their context, through which the runtime calls back.
//!
//! What differs from the typed face: the trace line `EvtDestroyCallback` is recorded for
//! every object created here (the kernel backend registers an `EvtDestroyCallback` on every
//! object it creates), and `EvtCleanupCallback` only for an object created with
//! [`Cleanup::Traced`].
//!
//! ```
//! use kmdf::host::raw::{self, Cleanup, DriverHooks, Hooks, RawDriver};
//! use kmdf::host::Runtime;
//! use kmdf::{Callback, DeviceInit, Result};
//!
//! /// `EvtDriverDeviceAdd` of a driver whose callbacks are not trait methods.
//! struct Driver;
//! impl DriverHooks for Driver {
//!     fn device_add(&self, init: DeviceInit<'_>) -> Result {
//!         // WDF_PNPPOWER_EVENT_CALLBACKS with EvtDeviceD0Entry set, no EvtCleanupCallback.
//!         raw::create_device(init, &[Callback::D0Entry], Cleanup::None, Box::new(Device))?;
//!         Ok(())
//!     }
//! }
//! /// The device's context: its callbacks (`Hooks::pnp` answers them, `Ok` by default).
//! struct Device;
//! impl Hooks for Device {}
//!
//! let runtime = Runtime::new();
//! let driver = raw::load(&runtime, || Ok(RawDriver::new(Box::new(Driver))))?;
//! let node = driver.add_device()?;
//! node.start()?;
//! node.remove()?;
//! assert_eq!(
//!     runtime.trace().lines(),
//!     [
//!         "DriverEntry",
//!         "EvtDriverDeviceAdd",
//!         "EvtDeviceD0Entry(D3Final)",
//!         "EvtDestroyCallback(WDFDEVICE)",
//!     ]
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::std;
use std::any::Any;
use std::boxed::Box;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::device::{self, DeviceSlot, PnpCall, PnpTable};
use super::object::RawObject;
use super::{AssignedResources, DeviceNode, HarnessError, LoadedDriver, ObjectKind, Runtime};
use crate::callback::vtable;
use crate::{Callback, DeviceInit, DevicePowerState, Driver, NtError, Result};

/// What the runtime calls back on an object created here: the object's context.
///
/// Every method has a default that does nothing, for the objects whose kind never calls it.
pub trait Hooks: Any + Send + Sync {
    /// The object's `EvtCleanupCallback` (only called when it was created with `cleanup`).
    fn cleanup(&self, object: &Object) {
        let _ = object;
    }

    /// A work item's `EvtWorkItem` or a timer's `EvtTimerFunc`, with the parent object.
    fn run(&self, object: &Object, parent: &Object) {
        let _ = (object, parent);
    }

    /// A device's PnP/power callback `callback` (one registered at creation), with the
    /// power state it takes, if any, and the node's hardware resources.
    ///
    /// # Errors
    ///
    /// The status the driver's callback returned (ignored for callbacks that return
    /// nothing in KMDF).
    fn pnp(
        &self,
        device: &Object,
        callback: Callback,
        power_state: Option<DevicePowerState>,
        resources: &AssignedResources,
    ) -> Result {
        let _ = (device, callback, power_state, resources);
        Ok(())
    }

    /// A device's `EvtDeviceFileCreate` (registered with [`set_file_object`]): the context
    /// of the new file object `file`, or the status that fails the open.
    ///
    /// # Errors
    ///
    /// The status the driver completed the create request with; by default
    /// `STATUS_INVALID_DEVICE_REQUEST` (a device with no file hooks refuses opens).
    fn file_create(&self, device: &Object, file: &Object) -> Result<Box<dyn Hooks>> {
        let _ = (device, file);
        Err(NtError::INVALID_DEVICE_REQUEST)
    }

    /// A file object's `EvtFileCleanup`, with its device.
    fn file_cleanup(&self, file: &Object, device: &Object) {
        let _ = (file, device);
    }

    /// A file object's `EvtFileClose`, with its device.
    fn file_close(&self, file: &Object, device: &Object) {
        let _ = (file, device);
    }

    /// A queue's I/O callback (one registered with [`create_queue`]), with its device.
    fn queue(&self, queue: &Object, device: &Object, event: QueueEvent<'_>) {
        let _ = (queue, device, event);
    }
}

/// A queue callback the runtime makes, with what it carries: the request handed to the
/// driver for the callbacks that take one (`EvtIoRead`, ..., `EvtRequestCancel`).
#[derive(Debug)]
pub enum QueueEvent<'a> {
    /// `EvtIoRead(request, length)`.
    Read(Request, usize),
    /// `EvtIoWrite(request, length)`.
    Write(Request, usize),
    /// `EvtIoDeviceControl(request, output length, input length, code)`.
    DeviceControl(Request, usize, usize, u32),
    /// `EvtIoInternalDeviceControl(request, output length, input length, code)`.
    InternalDeviceControl(Request, usize, usize, u32),
    /// `EvtIoDefault(request)`.
    Default(Request),
    /// `EvtIoStop`: a request the driver owns, while its queue stops.
    Stop(Stop<'a>),
    /// `EvtIoResume(request id)`: a request acknowledged in `EvtIoStop` is resumed.
    Resume(u64),
    /// `EvtIoCanceledOnQueue(request)`.
    CanceledOnQueue(Request),
    /// `EvtIoQueueState`: a manual queue has requests ready.
    ReadyNotify,
    /// `EvtRequestCancel(request)`: a request the driver marked cancelable was cancelled.
    Cancel(Request),
}

impl QueueEvent<'_> {
    /// The callback: `Callback::IoRead`, `IoWrite`, `IoDeviceControl`,
    /// `IoInternalDeviceControl`, `IoDefault`, `IoStop`, `IoResume`, `IoCanceledOnQueue`,
    /// `IoQueueState` or `RequestCancel`.
    #[must_use]
    pub fn callback(&self) -> Callback {
        match self {
            QueueEvent::Read(..) => Callback::IoRead,
            QueueEvent::Write(..) => Callback::IoWrite,
            QueueEvent::DeviceControl(..) => Callback::IoDeviceControl,
            QueueEvent::InternalDeviceControl(..) => Callback::IoInternalDeviceControl,
            QueueEvent::Default(..) => Callback::IoDefault,
            QueueEvent::Stop(..) => Callback::IoStop,
            QueueEvent::Resume(..) => Callback::IoResume,
            QueueEvent::CanceledOnQueue(..) => Callback::IoCanceledOnQueue,
            QueueEvent::ReadyNotify => Callback::IoQueueState,
            QueueEvent::Cancel(..) => Callback::RequestCancel,
        }
    }

    fn new(call: super::io::QueueCall<'_>) -> QueueEvent<'_> {
        use super::io::QueueCall;
        match call {
            QueueCall::Read(raw, length) => QueueEvent::Read(Request(raw), length),
            QueueCall::Write(raw, length) => QueueEvent::Write(Request(raw), length),
            QueueCall::DeviceControl(raw, output, input, code) => {
                QueueEvent::DeviceControl(Request(raw), output, input, code)
            }
            QueueCall::InternalDeviceControl(raw, output, input, code) => {
                QueueEvent::InternalDeviceControl(Request(raw), output, input, code)
            }
            QueueCall::Default(raw) => QueueEvent::Default(Request(raw)),
            QueueCall::Stop(raw) => QueueEvent::Stop(Stop(raw)),
            QueueCall::Resume(id) => QueueEvent::Resume(id),
            QueueCall::CanceledOnQueue(raw) => QueueEvent::CanceledOnQueue(Request(raw)),
            QueueCall::ReadyNotify => QueueEvent::ReadyNotify,
            QueueCall::Cancel(raw) => QueueEvent::Cancel(Request(raw)),
        }
    }
}

/// A request the driver owns (`WDFREQUEST`), as the typed `Request`: dropped uncompleted,
/// it completes itself `STATUS_CANCELLED` and the verifier reports it.
///
/// Its buffers stay where they are while it exists, also while it is marked cancelable
/// ([`Request::mark_cancelable`]) and once it is given back: a pointer into them, handed to
/// C code, is valid until the request is completed.
pub struct Request(super::io::RawRequest);

impl Request {
    /// Its id: the same for the request's whole life (presented, cancelable, cancelled).
    #[must_use]
    pub fn id(&self) -> u64 {
        super::request::id(&self.0)
    }

    /// Its parameters (`WdfRequestGetParameters`).
    #[must_use]
    pub fn parameters(&self) -> crate::request::Parameters {
        super::request::parameters(&self.0)
    }

    /// `WdfRequestRetrieveInputBuffer`.
    ///
    /// # Errors
    ///
    /// As the typed `Request::input_buffer`: `STATUS_INVALID_DEVICE_REQUEST` for a request
    /// with no input buffer, `STATUS_BUFFER_TOO_SMALL` below `min_len` or empty.
    pub fn input_buffer(&self, min_len: usize) -> Result<&[u8]> {
        super::request::input_buffer(&self.0, min_len)
    }

    /// `WdfRequestRetrieveOutputBuffer`.
    ///
    /// # Errors
    ///
    /// As [`Request::input_buffer`], for the output buffer.
    pub fn output_buffer(&mut self, min_len: usize) -> Result<&mut [u8]> {
        super::request::output_buffer(&mut self.0, min_len)
    }

    /// The file object it was sent on (`WdfRequestGetFileObject`).
    #[must_use]
    pub fn file(&self) -> Option<Object> {
        self.0.core.file.clone().map(Object)
    }

    /// `WdfRequestIsCanceled`.
    #[must_use]
    pub fn is_canceled(&self) -> bool {
        super::request::is_canceled(&self.0)
    }

    /// `WdfRequestComplete` / `WdfRequestCompleteWithInformation` without the check of
    /// the information (an error status).
    pub fn complete(self, status: crate::NtStatus, information: usize) {
        super::request::complete(self.0, status, information);
    }

    /// `WdfRequestCompleteWithInformation`.
    ///
    /// # Errors
    ///
    /// The request back, with `STATUS_INVALID_PARAMETER`, for a success whose information
    /// exceeds the request's buffer (section 9.4), as the typed face.
    pub fn complete_with_information(
        self,
        status: crate::NtStatus,
        information: usize,
    ) -> core::result::Result<(), (Request, NtError)> {
        super::request::complete_with_information(self.0, status, information)
            .map_err(|(raw, error)| (Request(raw), error))
    }

    /// `WdfRequestMarkCancelableEx` with `queue`'s `EvtRequestCancel` ([`Hooks::queue`]'s
    /// [`QueueEvent::Cancel`]): the claim, or the request back when it is cancelled already
    /// (`STATUS_CANCELLED`).
    ///
    /// # Errors
    ///
    /// The request, when it was cancelled already.
    ///
    /// # Panics
    ///
    /// When `queue` is not the request's queue (the typed face's rule).
    pub fn mark_cancelable(self, queue: &Object) -> core::result::Result<Cancelable, Request> {
        let io = Arc::clone(&self.0.core.io);
        let state = super::io_queue::state(&queue.0);
        assert!(
            Arc::ptr_eq(&state.io, &io) && io.queue_of(self.id()) == Some(state.id),
            "kmdf: raw::Request::mark_cancelable of request {} on a queue that is not its own",
            self.id()
        );
        io.mark_cancelable(self.0, Arc::clone(&queue.0), state.table)
            .map(Cancelable)
            .map_err(Request)
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id())
            .field("parameters", &self.parameters())
            .finish_non_exhaustive()
    }
}

/// The driver's claim on a request it marked cancelable.
pub struct Cancelable(super::io::RawCancelable);

impl Cancelable {
    /// The request's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        super::request::cancelable_id(&self.0)
    }

    /// `WdfRequestUnmarkCancelable`: the request back, or `None` when its cancellation has
    /// it (`STATUS_CANCELLED`: [`QueueEvent::Cancel`] is, or was, delivered).
    #[must_use]
    pub fn unmark(self) -> Option<Request> {
        super::request::unmark(self.0).map(Request)
    }
}

impl fmt::Debug for Cancelable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cancelable").field(&self.id()).finish()
    }
}

/// `EvtIoStop`'s request: its id, the action, and the acknowledgement.
pub struct Stop<'a>(super::io::RawStop<'a>);

impl Stop<'_> {
    /// The request's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Why its queue stops.
    #[must_use]
    pub fn action(&self) -> crate::io_queue::StopAction {
        self.0.action
    }

    /// Whether the request is marked cancelable.
    #[must_use]
    pub fn cancelable(&self) -> bool {
        self.0.cancelable
    }

    /// `WdfRequestStopAcknowledge(request, FALSE)`: the driver keeps it.
    pub fn acknowledge(&self) {
        super::io_queue::acknowledge(&self.0);
    }

    /// `WdfRequestStopAcknowledge(request, TRUE)`: back to the head of its queue (cancelled
    /// when the queue is purging).
    ///
    /// # Errors
    ///
    /// The request back, `STATUS_INVALID_PARAMETER` when it is not this stop's request.
    pub fn acknowledge_requeue(
        &self,
        request: Request,
    ) -> core::result::Result<(), (Request, NtError)> {
        super::io_queue::acknowledge_requeue(&self.0, request.0)
            .map_err(|(raw, error)| (Request(raw), error))
    }
}

impl fmt::Debug for Stop<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stop")
            .field("id", &self.id())
            .field("action", &self.action())
            .field("cancelable", &self.cancelable())
            .finish()
    }
}

/// Whether an object created here has an `EvtCleanupCallback` ([`Hooks::cleanup`]), and
/// whether the trace records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// None registered.
    None,
    /// Registered, and recorded as `EvtCleanupCallback(KIND)` as the typed face records a
    /// driver's cleanup method.
    Traced,
    /// Registered but not recorded: a callback the driver's framework layer registers for
    /// its own bookkeeping (the kernel backend's on every work item and timer), which runs
    /// the driver's cleanup method only when it has one, which the runtime cannot see.
    Untraced,
}

impl Cleanup {
    fn hook(self) -> Option<super::object::CleanupHook> {
        (self != Cleanup::None).then_some(raw_cleanup as _)
    }
}

/// The context of every object created here.
struct RawContext(Box<dyn Hooks>);

/// A counted reference to a framework object of the runtime.
#[derive(Clone)]
pub struct Object(Arc<RawObject>);

impl Object {
    /// The object's kind.
    #[must_use]
    pub fn kind(&self) -> ObjectKind {
        self.0.state_kind()
    }

    /// The object's context, if it was created here with an `H`.
    #[must_use]
    pub fn hooks<H: Hooks>(&self) -> Option<&H> {
        hooks_of(&self.0)
    }

    /// A reference that does not keep the object alive.
    #[must_use]
    pub fn downgrade(&self) -> WeakObject {
        WeakObject(Arc::downgrade(&self.0))
    }

    /// Whether two references are to the same object.
    #[must_use]
    pub fn same(&self, other: &Object) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A reference to a framework object that does not keep it alive.
#[derive(Clone, Debug, Default)]
pub struct WeakObject(Weak<RawObject>);

impl WeakObject {
    /// The object, while it exists.
    #[must_use]
    pub fn upgrade(&self) -> Option<Object> {
        self.0.upgrade().map(Object)
    }
}

fn hooks_of<H: Hooks>(object: &RawObject) -> Option<&H> {
    let hooks: &dyn Any = &*object.context::<RawContext>()?.0;
    hooks.downcast_ref::<H>()
}

fn context_of(object: &RawObject) -> &dyn Hooks {
    &*object.expect_context::<RawContext>().0
}

fn raw_cleanup(object: &RawObject) {
    context_of(object).cleanup(&Object(object.to_arc()));
}

fn raw_run(object: &RawObject, parent: &RawObject) {
    context_of(object).run(&Object(object.to_arc()), &Object(parent.to_arc()));
}

fn raw_dispatch(object: &RawObject, call: PnpCall, resources: &AssignedResources) -> Result {
    context_of(object).pnp(&Object(object.to_arc()), call.callback(), call.power_state(), resources)
}

fn raw_queue(object: &RawObject, call: super::io::QueueCall<'_>) {
    let device = super::io_queue::device_of(object);
    context_of(object).queue(&Object(object.to_arc()), &Object(device), QueueEvent::new(call));
}

fn raw_file_create(device: &RawObject, file: &RawObject) -> Result {
    let hooks = context_of(device).file_create(&Object(device.to_arc()), &Object(file.to_arc()))?;
    file.set_context(RawContext(hooks));
    Ok(())
}

fn raw_file_cleanup(device: &RawObject, file: &RawObject) {
    context_of(file).file_cleanup(&Object(file.to_arc()), &Object(device.to_arc()));
}

fn raw_file_close(device: &RawObject, file: &RawObject) {
    context_of(file).file_close(&Object(file.to_arc()), &Object(device.to_arc()));
}

/// What a driver loaded through the raw face does when the PnP manager adds a device or
/// the driver unloads: its `EvtDriverDeviceAdd` and `EvtDriverUnload`.
pub trait DriverHooks: Any + Send + Sync {
    /// `EvtDriverDeviceAdd`; create the device with [`create_device`].
    ///
    /// # Errors
    ///
    /// What the driver's callback returned.
    fn device_add(&self, init: DeviceInit<'_>) -> Result;

    /// `EvtDriverUnload`.
    fn unload(&self) {}
}

/// The driver value of a driver loaded through the raw face: its [`DriverHooks`].
pub struct RawDriver(Box<dyn DriverHooks>);

impl RawDriver {
    /// The driver value whose callbacks are `hooks`.
    #[must_use]
    pub fn new(hooks: Box<dyn DriverHooks>) -> Self {
        Self(hooks)
    }

    /// The hooks, if they are an `H`.
    #[must_use]
    pub fn hooks<H: DriverHooks>(&self) -> Option<&H> {
        let hooks: &dyn Any = &*self.0;
        hooks.downcast_ref::<H>()
    }
}

impl Driver for RawDriver {
    /// Never called: [`load`] takes the `DriverEntry` to run.
    fn driver_entry() -> Result<Self> {
        Err(NtError::NOT_SUPPORTED)
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        self.0.device_add(device_init)
    }

    fn unload(&self) {
        self.0.unload();
    }
}

impl fmt::Debug for RawDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawDriver")
    }
}

/// Loads a driver whose `DriverEntry` is `entry`: recorded as `DriverEntry` in the trace,
/// failed without running it when a failure is injected, as [`Runtime::load`] does.
///
/// # Errors
///
/// What `entry` returned, or the injected failure.
pub fn load(
    runtime: &Runtime,
    entry: impl FnOnce() -> Result<RawDriver>,
) -> Result<LoadedDriver<RawDriver>> {
    super::driver::load(&runtime.registry, entry)
}

/// The driver's object (`WDFDRIVER`), while loaded.
///
/// # Errors
///
/// [`HarnessError::DriverUnloaded`] once it was unloaded.
pub fn driver_object(
    driver: &LoadedDriver<RawDriver>,
) -> core::result::Result<Object, HarnessError> {
    driver.object().map(Object)
}

/// `WdfDeviceCreate` from `EvtDriverDeviceAdd`: the device with the PnP/power callbacks in
/// `registered` (`WDF_PNPPOWER_EVENT_CALLBACKS`: the ones that are not NULL), its
/// `EvtCleanupCallback` when `cleanup`, and `hooks` as its context.
///
/// # Errors
///
/// `STATUS_DELETE_PENDING` when the driver is being deleted.
#[allow(clippy::needless_pass_by_value, reason = "consumed like the kernel's PWDFDEVICE_INIT")]
pub fn create_device(
    init: DeviceInit<'_>,
    registered: &[Callback],
    cleanup: Cleanup,
    hooks: Box<dyn Hooks>,
) -> Result<Object> {
    let slot: &DeviceSlot = init.raw.slot;
    let mut table = vtable::PnpPowerCallbacks::NONE;
    for &callback in registered {
        table = table.with(callback);
    }
    let table = PnpTable { registered: table, dispatch: raw_dispatch };
    let object = device::create_object(
        slot,
        table,
        cleanup.hook(),
        cleanup != Cleanup::Untraced,
        init.raw.io,
    )?;
    object.set_context(RawContext(hooks));
    Ok(Object(device::publish(slot, object).to_arc()))
}

/// `WdfDeviceInitSetFileObjectConfig` before [`create_device`]: the device gets file
/// objects: each open calls the device's [`Hooks::file_create`] (traced
/// `EvtDeviceFileCreate`, always, as the typed face's; a harness whose driver registered no
/// `EvtDeviceFileCreate` answers it with a context itself), and the callbacks in
/// `registered` among `Callback::FileCleanup` and `Callback::FileClose` (the ones that are
/// not NULL) are the file's [`Hooks::file_cleanup`] and [`Hooks::file_close`].
pub fn set_file_object(init: &mut DeviceInit<'_>, registered: &[Callback]) {
    let mut table = vtable::FileCallbacks::NONE;
    for &callback in registered {
        table = table.with(callback);
    }
    init.raw.io.file = Some(super::io::FileTable {
        registered: table,
        device: core::any::TypeId::of::<RawContext>(),
        create: raw_file_create,
        cleanup: raw_file_cleanup,
        close: raw_file_close,
    });
}

/// `WdfDeviceCreateDeviceInterface`: an interface of class `guid` (and `reference`) on
/// `device`, enabled at its first start, disabled at its removal, as the typed
/// `Device::create_device_interface`.
///
/// # Errors
///
/// As `Device::create_device_interface`: `STATUS_INVALID_PARAMETER` for the same
/// interface twice, `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL` above `PASSIVE_LEVEL`;
/// `STATUS_INVALID_DEVICE_REQUEST` when `device` is not a device.
pub fn create_device_interface(
    device: &Object,
    guid: &crate::interface::Guid,
    reference: Option<&str>,
) -> Result {
    if device.kind() != ObjectKind::Device {
        return Err(NtError::INVALID_DEVICE_REQUEST);
    }
    super::interface::create(&device.0, *guid, reference)
}

/// `WdfIoQueueCreate`: a queue of `device` configured as `config`, whose I/O callbacks in
/// `registered` (those of `WDF_IO_QUEUE_CONFIG` that are not NULL; `EvtRequestCancel`
/// comes with the request it is registered on) are [`Hooks::queue`], with its
/// `EvtCleanupCallback` when `cleanup`, and `hooks` as its context.
///
/// # Errors
///
/// As the typed `IoQueue::create`: `STATUS_WDF_NO_CALLBACK` for a queue that presents
/// requests but registered no handler, `STATUS_INVALID_PARAMETER` for a manual queue that
/// registered one, `STATUS_UNSUCCESSFUL` for a second default queue,
/// `STATUS_INVALID_DEVICE_STATE` for a default queue after the first start,
/// `STATUS_DELETE_PENDING` once the device is being removed;
/// `STATUS_INVALID_DEVICE_REQUEST` when `device` is not a device.
pub fn create_queue(
    device: &Object,
    config: crate::io_queue::IoQueueConfig,
    registered: &[Callback],
    cleanup: Cleanup,
    hooks: Box<dyn Hooks>,
) -> Result<Object> {
    if device.kind() != ObjectKind::Device {
        return Err(NtError::INVALID_DEVICE_REQUEST);
    }
    let mut table = vtable::IoQueueCallbacks::NONE;
    for &callback in registered {
        table = table.with(callback);
    }
    if cleanup != Cleanup::None {
        table = table.with(Callback::ObjectCleanup);
    }
    let table = super::io::QueueTable { registered: table, call: raw_queue };
    let context = Box::new(RawContext(hooks));
    let traced = cleanup != Cleanup::Untraced;
    super::io_queue::create_raw(&device.0, config, table, cleanup.hook(), traced, context)
        .map(Object)
}

/// Calls `f` with the context of `node`'s device, if it is an `H`.
///
/// # Errors
///
/// As [`DeviceNode::with_context`].
pub fn with_device<H: Hooks, R>(
    node: &DeviceNode,
    f: impl FnOnce(&H) -> R,
) -> core::result::Result<R, HarnessError> {
    node.with_context(|context: &RawContext| {
        let hooks: &dyn Any = &*context.0;
        hooks.downcast_ref::<H>().map(f)
    })?
    .ok_or(HarnessError::WrongContextType)
}

/// `WdfWorkItemCreate`: a work item, child of `parent`, whose `EvtWorkItem` is
/// [`Hooks::run`].
///
/// # Errors
///
/// `STATUS_DELETE_PENDING` when the parent is being deleted.
#[track_caller]
pub fn create_work_item(
    parent: &Object,
    cleanup: Cleanup,
    hooks: Box<dyn Hooks>,
) -> Result<Object> {
    let context = Box::new(RawContext(hooks));
    let traced = cleanup != Cleanup::Untraced;
    let name = "sys-harness work item";
    super::work_item::create_raw(&parent.0, name, raw_run, cleanup.hook(), traced, context)
        .map(Object)
}

/// `WdfWorkItemEnqueue`; `Ok(false)` when it was queued already.
///
/// # Errors
///
/// `STATUS_DELETE_PENDING` once its deletion started.
pub fn enqueue(item: &Object) -> Result<bool> {
    super::work_item::enqueue_raw(&item.0)
}

/// `WdfWorkItemFlush`.
///
/// # Errors
///
/// As the typed `WorkItem::flush`: above `PASSIVE_LEVEL`, or from the item's own callback.
#[track_caller]
pub fn flush(item: &Object) -> Result {
    super::work_item::flush_raw(&item.0)
}

/// `WdfTimerCreate`: a timer, child of `parent`, with the period `period_ms` (0: one-shot),
/// whose `EvtTimerFunc` is [`Hooks::run`].
///
/// # Errors
///
/// `STATUS_DELETE_PENDING` when the parent is being deleted.
#[track_caller]
pub fn create_timer(
    parent: &Object,
    period_ms: u32,
    cleanup: Cleanup,
    hooks: Box<dyn Hooks>,
) -> Result<Object> {
    let context = Box::new(RawContext(hooks));
    let traced = cleanup != Cleanup::Untraced;
    let name = "sys-harness timer";
    super::timer::create_raw(&parent.0, name, period_ms, raw_run, cleanup.hook(), traced, context)
        .map(Object)
}

/// `WdfTimerStart` with a relative due time; whether it was set already.
///
/// # Errors
///
/// `STATUS_DELETE_PENDING` once its deletion started.
pub fn timer_start(timer: &Object, due: Duration) -> Result<bool> {
    super::timer::start_raw(&timer.0, due)
}

/// `WdfTimerStop`; whether it was set.
///
/// # Errors
///
/// As the typed `Timer::stop`.
#[track_caller]
pub fn timer_stop(timer: &Object, wait: bool) -> Result<bool> {
    super::timer::stop_raw(&timer.0, wait)
}

/// `WdfObjectDelete` on a work item or a timer, with the IRQL rules of their kind.
///
/// # Errors
///
/// `STATUS_DELETE_PENDING` when its deletion started already; `STATUS_NOT_SUPPORTED` for
/// other kinds (KMDF does not let a driver delete a device or driver object this way).
#[track_caller]
pub fn delete(object: &Object) -> Result {
    match object.kind() {
        ObjectKind::WorkItem => super::work_item::delete_raw(&object.0),
        ObjectKind::Timer => super::timer::delete_raw(&object.0),
        _ => Err(NtError::NOT_SUPPORTED),
    }
}

/// `WdfDeviceAssignS0IdleSettings` on `device`, with the checks and errors of
/// [`Device::assign_s0_idle_settings`](crate::Device::assign_s0_idle_settings): the device's
/// S0 idle policy on the runtime's model (docs/kmdf-behaviour.md section 10).
///
/// # Errors
///
/// As [`Device::assign_s0_idle_settings`](crate::Device::assign_s0_idle_settings);
/// `STATUS_INVALID_DEVICE_REQUEST` when `device` is not a device.
pub fn assign_s0_idle_settings(
    device: &Object,
    settings: &crate::power_policy::S0IdleSettings,
) -> Result {
    if device.kind() != ObjectKind::Device {
        return Err(NtError::INVALID_DEVICE_REQUEST);
    }
    settings.check()?;
    super::power_policy::assign_s0_idle_settings(&device.0, settings)
}

/// `WdfDeviceAssignSxWakeSettings` on `device`: its system-wake policy on the runtime's
/// model (docs/kmdf-behaviour.md section 10).
///
/// # Errors
///
/// As [`Device::assign_sx_wake_settings`](crate::Device::assign_sx_wake_settings);
/// `STATUS_INVALID_DEVICE_REQUEST` when `device` is not a device.
pub fn assign_sx_wake_settings(
    device: &Object,
    settings: crate::power_policy::SxWakeSettings,
) -> Result {
    if device.kind() != ObjectKind::Device {
        return Err(NtError::INVALID_DEVICE_REQUEST);
    }
    super::power_policy::assign_sx_wake_settings(&device.0, settings)
}

/// `WdfDeviceSetFailed`: the runtime's PnP manager answers after the call returns.
pub fn set_failed(device: &Object, action: crate::FailedAction) {
    device::set_failed(&device.0, action);
}

/// The calling thread's IRQL in the runtime's model (`KeGetCurrentIrql`).
#[must_use]
pub fn current_irql() -> u8 {
    super::sync::current_irql().to_raw()
}

/// Sets the calling thread's IRQL in the runtime's model: what a write of CR8
/// (`KeRaiseIrql`, `KeLowerIrql` inline) does in the kernel.
pub fn set_irql(irql: u8) {
    super::sync::set_irql(irql);
}

/// A spin lock is about to be acquired on this thread: the first one held raises it to
/// `DISPATCH_LEVEL` (as the typed face's spin locks do).
pub fn enter_spin_lock() {
    super::sync::enter_spin();
}

/// A spin lock was released on this thread: the last one lowers it back.
pub fn leave_spin_lock() {
    super::sync::leave_spin();
}
