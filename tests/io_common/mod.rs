//! The I/O test driver the `io_*` tests share: a device with an interface, a file-object
//! type, a default queue whose behaviour a [`Plan`] picks, and optionally a manual queue for
//! reads. Every callback is traced by the runtime; the driver decides what to do with each
//! request from the plan.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::sync::Mutex;

use kmdf::file::{FileCallbacks, FileObject};
use kmdf::host::{DeviceNode, Runtime};
use kmdf::interface::{Access, Guid, TransferMethod, ctl_code};
use kmdf::io_queue::{Dispatch, IoQueue, IoQueueCallbacks, IoQueueConfig, IoStop, StopAction};
use kmdf::object::ObjectRef;
use kmdf::request::{CancelableRequest, Marked, RequestType};
use kmdf::sync::SpinLock;
use kmdf::{
    Device, DeviceInit, DevicePowerState, Driver, NtStatus, PnpPowerCallbacks, Request, Result,
};

pub const GUID_DEVINTERFACE_TEST: Guid = Guid::parse("{8f6a1c2e-0d4b-4e8a-9c1f-2b3d4e5f6a7b}");
/// Copies the input to the output; information = input length.
pub const IOCTL_ECHO: u32 = ctl_code(0x8000, 0x800, TransferMethod::Buffered, Access::Any);
/// Tries to report one byte more than the output buffer holds, then completes with what
/// the error said.
pub const IOCTL_TOO_MUCH: u32 = ctl_code(0x8000, 0x801, TransferMethod::Buffered, Access::Any);
/// A `METHOD_NEITHER` code: no buffer for it from an application.
pub const IOCTL_NEITHER: u32 = ctl_code(0x8000, 0x802, TransferMethod::Neither, Access::Any);
/// Forwards the request to the manual queue (when the plan has one), where it waits.
pub const IOCTL_PARK: u32 = ctl_code(0x8000, 0x803, TransferMethod::Buffered, Access::Any);

/// What the default queue does with a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRead {
    /// Fills the buffer with `0xAB` and completes it with its length.
    Complete,
    /// Keeps it in the queue context's `pending`.
    Pend,
    /// Marks it cancelable and keeps the claim in `cancelables`.
    Cancelable,
    /// Drops it (a driver bug).
    Drop,
}

/// What the default queue does in `EvtIoStop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStop {
    /// `WdfRequestStopAcknowledge(FALSE)` on a suspend; completes the request
    /// `STATUS_CANCELLED` on a purge (what a driver does).
    Acknowledge,
    /// `WdfRequestStopAcknowledge(FALSE)`, even on a purge (a driver bug at removal).
    AcknowledgeAlways,
    /// `WdfRequestStopAcknowledge(TRUE)`, unmarking a cancelable request first.
    Requeue,
    /// Completes the request `STATUS_CANCELLED`.
    Complete,
    /// Nothing (a driver bug when the request stays pending).
    Ignore,
}

/// The test's choices.
#[derive(Clone, Copy, Debug)]
#[allow(clippy::struct_excessive_bools, reason = "one switch per choice")]
pub struct Plan {
    pub dispatch: Dispatch,
    pub power_managed: bool,
    pub allow_zero_length: bool,
    pub on_read: OnRead,
    pub on_stop: OnStop,
    pub exclusive: bool,
    /// Reads go to a manual queue.
    pub manual_reads: bool,
    /// Register `EvtIoStop` on the default queue.
    pub with_stop: bool,
    /// S0 idle settings with an idle timeout of [`IDLE_TIMEOUT`], when set.
    pub idle: Option<kmdf::power_policy::IdleCaps>,
}

/// The idle timeout of [`Plan::idle`].
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(40);

impl Default for Plan {
    fn default() -> Self {
        Self {
            dispatch: Dispatch::parallel(),
            power_managed: true,
            allow_zero_length: false,
            on_read: OnRead::Complete,
            on_stop: OnStop::Acknowledge,
            exclusive: false,
            manual_reads: false,
            with_stop: true,
            idle: None,
        }
    }
}

pub struct IoDriver {
    pub plan: Plan,
}

impl Driver for IoDriver {
    fn driver_entry() -> Result<Self> {
        Ok(IoDriver { plan: Plan::default() })
    }

    fn device_add(&self, mut init: DeviceInit<'_>) -> Result {
        let plan = self.plan;
        init.set_file_object::<Handle>();
        init.set_exclusive(plan.exclusive);
        let device = init.create_with(|device| {
            device.create_device_interface(&GUID_DEVINTERFACE_TEST, None)?;
            let config = IoQueueConfig::default_queue(plan.dispatch)
                .power_managed(plan.power_managed)
                .allow_zero_length(plan.allow_zero_length);
            let queue = if plan.with_stop {
                Queued::Stoppable(IoQueue::create(device, config, Q::new(plan)?)?)
            } else {
                Queued::Plain(IoQueue::create(device, config, Plain::new()?)?)
            };
            let manual = if plan.manual_reads {
                let manual = IoQueue::create(
                    device,
                    IoQueueConfig::new(Dispatch::Manual).power_managed(plan.power_managed),
                    M { ready: SpinLock::new(0)? },
                )?;
                manual.configure_dispatching(device, RequestType::Read)?;
                Some(manual)
            } else {
                None
            };
            Ok(Dev { queue, manual })
        })?;
        if let Some(caps) = plan.idle {
            let settings = kmdf::power_policy::S0IdleSettings::new(caps).idle_timeout(IDLE_TIMEOUT);
            device.assign_s0_idle_settings(&settings)?;
        }
        Ok(())
    }
}

pub enum Queued {
    Stoppable(ObjectRef<IoQueue<Q>>),
    Plain(ObjectRef<IoQueue<Plain>>),
}

/// The device context.
pub struct Dev {
    pub queue: Queued,
    pub manual: Option<ObjectRef<IoQueue<M>>>,
}

impl Dev {
    /// The default queue, when it has `EvtIoStop`.
    pub fn q(&self) -> &IoQueue<Q> {
        match &self.queue {
            Queued::Stoppable(queue) => queue,
            Queued::Plain(_) => panic!("the plan has no EvtIoStop queue"),
        }
    }

    /// The default queue, when it has no `EvtIoStop`.
    pub fn plain(&self) -> &IoQueue<Plain> {
        match &self.queue {
            Queued::Plain(queue) => queue,
            Queued::Stoppable(_) => panic!("the plan has an EvtIoStop queue"),
        }
    }
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Dev {
        fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
            Ok(())
        }
        fn d0_exit(&self, _device: &Device<Self>, _target: DevicePowerState) -> Result {
            Ok(())
        }
        fn self_managed_io_init(&self, _device: &Device<Self>) -> Result {
            Ok(())
        }
        fn self_managed_io_suspend(&self, _device: &Device<Self>) -> Result {
            Ok(())
        }
        fn self_managed_io_restart(&self, _device: &Device<Self>) -> Result {
            Ok(())
        }
        fn self_managed_io_flush(&self, _device: &Device<Self>) {}
        fn self_managed_io_cleanup(&self, _device: &Device<Self>) {}
    }
}

/// The file context: how many opens were seen.
pub struct Handle;

kmdf::vtable! {
    impl FileCallbacks for Handle {
        type Device = Dev;

        fn create(_device: &Device<Dev>) -> Result<Self> {
            Ok(Handle)
        }

        fn cleanup(&self, _file: &FileObject<Self>, _device: &Device<Self::Device>) {}

        fn close(&self, _file: &FileObject<Self>, _device: &Device<Self::Device>) {
            // EvtFileClose runs at PASSIVE_LEVEL (section 9.6).
            assert_eq!(kmdf::sync::current_irql(), kmdf::sync::Irql::Passive);
        }
    }
}

/// The default queue's context, with `EvtIoStop`.
pub struct Q {
    pub plan: Mutex<Plan>,
    pub pending: SpinLock<Vec<Request>>,
    pub cancelables: SpinLock<Vec<CancelableRequest>>,
}

impl Q {
    fn new(plan: Plan) -> Result<Self> {
        Ok(Q {
            plan: Mutex::new(plan),
            pending: SpinLock::new(Vec::new())?,
            cancelables: SpinLock::new(Vec::new())?,
        })
    }

    /// Takes the pending request `id`, if kept.
    pub fn take(&self, id: kmdf::request::RequestId) -> Option<Request> {
        let mut pending = self.pending.lock();
        let index = pending.iter().position(|request| request.id() == id)?;
        Some(pending.remove(index))
    }

    /// Takes the oldest pending request.
    pub fn take_oldest(&self) -> Option<Request> {
        let mut pending = self.pending.lock();
        (!pending.is_empty()).then(|| pending.remove(0))
    }

    /// Takes the claim on cancelable request `id`.
    pub fn take_cancelable(&self, id: kmdf::request::RequestId) -> Option<CancelableRequest> {
        let mut cancelables = self.cancelables.lock();
        let index = cancelables.iter().position(|claim| claim.id() == id)?;
        Some(cancelables.remove(index))
    }

    fn on_read(&self) -> OnRead {
        self.plan.lock().unwrap().on_read
    }
}

fn complete_read(mut request: Request, length: usize) {
    if let Ok(buffer) = request.output_buffer(length) {
        buffer.fill(0xAB);
    }
    request.complete_with_information(NtStatus::SUCCESS, length).expect("length fits");
}

fn device_control(device: &Device<Dev>, mut request: Request, output_length: usize, code: u32) {
    match code {
        IOCTL_PARK => {
            let manual = device.context().manual.clone();
            match manual {
                Some(manual) => {
                    if let Err(error) = request.forward(&manual) {
                        error.request.complete(error.status.status());
                    }
                }
                None => request.complete(NtStatus::INVALID_DEVICE_REQUEST),
            }
        }
        IOCTL_ECHO => {
            let input = request.input_buffer(0).map(<[u8]>::to_vec).unwrap_or_default();
            let n = input.len().min(output_length);
            if let Ok(output) = request.output_buffer(n) {
                output[..n].copy_from_slice(&input[..n]);
            }
            request.complete_with_information(NtStatus::SUCCESS, n).expect("fits");
        }
        IOCTL_TOO_MUCH => {
            match request.complete_with_information(NtStatus::SUCCESS, output_length + 1) {
                Ok(()) => panic!("information larger than the output buffer was accepted"),
                Err(error) => error.request.complete(error.status.status()),
            }
        }
        IOCTL_NEITHER => {
            let status = match request.output_buffer(0) {
                Ok(_) => NtStatus::SUCCESS,
                Err(status) => status.status(),
            };
            request.complete(status);
        }
        _ => request.complete(NtStatus::INVALID_DEVICE_REQUEST),
    }
}

kmdf::vtable! {
    impl IoQueueCallbacks for Q {
        type Device = Dev;

        fn read(
            &self,
            queue: &IoQueue<Self>,
            _device: &Device<Self::Device>,
            request: Request,
            length: usize,
        ) {
            match self.on_read() {
                OnRead::Complete => complete_read(request, length),
                OnRead::Pend => self.pending.lock().push(request),
                OnRead::Cancelable => match request.mark_cancelable(queue) {
                    Marked::Cancelable(claim) => self.cancelables.lock().push(claim),
                    Marked::Canceled(request) => request.complete(NtStatus::CANCELLED),
                },
                OnRead::Drop => drop(request),
            }
        }

        fn write(
            &self,
            _queue: &IoQueue<Self>,
            _device: &Device<Self::Device>,
            request: Request,
            length: usize,
        ) {
            request.complete_with_information(NtStatus::SUCCESS, length).expect("fits");
        }

        fn device_control(
            &self,
            _queue: &IoQueue<Self>,
            device: &Device<Self::Device>,
            request: Request,
            output_length: usize,
            _input_length: usize,
            code: u32,
        ) {
            device_control(device, request, output_length, code);
        }

        fn internal_device_control(
            &self,
            _queue: &IoQueue<Self>,
            device: &Device<Self::Device>,
            request: Request,
            output_length: usize,
            _input_length: usize,
            code: u32,
        ) {
            // As a device control, but METHOD_NEITHER has buffers (a kernel-mode sender's).
            let code = if code == IOCTL_NEITHER { IOCTL_ECHO } else { code };
            device_control(device, request, output_length, code);
        }

        fn stop(&self, _queue: &IoQueue<Self>, _device: &Device<Self::Device>, stop: IoStop<'_>) {
            let on_stop = self.plan.lock().unwrap().on_stop;
            let id = stop.request();
            let request = || {
                self.take(id).or_else(|| self.take_cancelable(id).and_then(CancelableRequest::unmark))
            };
            match on_stop {
                OnStop::Acknowledge if stop.action() == StopAction::Suspend => stop.acknowledge(),
                OnStop::AcknowledgeAlways => stop.acknowledge(),
                OnStop::Requeue => match request() {
                    Some(request) => stop.acknowledge_requeue(request).expect("this request"),
                    None => stop.acknowledge(),
                },
                OnStop::Acknowledge | OnStop::Complete => {
                    if let Some(request) = request() {
                        request.complete(NtStatus::CANCELLED);
                    }
                }
                OnStop::Ignore => {}
            }
        }

        fn resume(&self, _queue: &IoQueue<Self>, _device: &Device<Self::Device>, _request: kmdf::request::RequestId) {}

        fn request_cancel(
            &self,
            _queue: &IoQueue<Self>,
            _device: &Device<Self::Device>,
            request: Request,
        ) {
            let _ = self.take_cancelable(request.id());
            request.complete(NtStatus::CANCELLED);
        }
    }
}

/// A default queue without `EvtIoStop`: it only reads, and keeps what it reads.
pub struct Plain {
    pub pending: SpinLock<Vec<Request>>,
}

impl Plain {
    fn new() -> Result<Self> {
        Ok(Plain { pending: SpinLock::new(Vec::new())? })
    }
}

kmdf::vtable! {
    impl IoQueueCallbacks for Plain {
        type Device = Dev;

        fn read(
            &self,
            _queue: &IoQueue<Self>,
            _device: &Device<Self::Device>,
            request: Request,
            _length: usize,
        ) {
            self.pending.lock().push(request);
        }
    }
}

/// The manual queue's context: how many ready notifications it got.
pub struct M {
    pub ready: SpinLock<u32>,
}

kmdf::vtable! {
    impl IoQueueCallbacks for M {
        type Device = Dev;

        fn ready_notify(&self, _queue: &IoQueue<Self>, _device: &Device<Self::Device>) {
            *self.ready.lock() += 1;
        }

        fn canceled_on_queue(
            &self,
            _queue: &IoQueue<Self>,
            _device: &Device<Self::Device>,
            request: Request,
        ) {
            request.complete(NtStatus::CANCELLED);
        }
    }
}

/// A runtime with the I/O driver loaded under `plan` and its device added.
pub fn rig(plan: Plan) -> (Runtime, DeviceNode) {
    let runtime = Runtime::new();
    let node = runtime.load_with(IoDriver { plan }).unwrap().add_device().unwrap();
    (runtime, node)
}

/// A started rig with one open handle, and the trace taken.
pub fn started(plan: Plan) -> (Runtime, DeviceNode, kmdf::host::FileHandle) {
    let (runtime, node) = rig(plan);
    node.start().unwrap();
    let handle = runtime.open(&GUID_DEVINTERFACE_TEST).unwrap();
    let _ = runtime.take_trace();
    (runtime, node, handle)
}

/// The trace's lines that are I/O callbacks or self-managed I/O and power callbacks, as
/// printed.
pub fn lines(runtime: &Runtime) -> Vec<String> {
    runtime.take_trace().lines()
}

/// Calls `f` with the default queue's context.
pub fn with_q<R>(node: &DeviceNode, f: impl FnOnce(&Q) -> R) -> R {
    node.with_context(|dev: &Dev| f(dev.q().context())).unwrap()
}
