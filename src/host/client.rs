//! The client: a test plays an application that opens the device by interface and sends it
//! I/O, as `CreateFile`, `ReadFile`, `WriteFile`, `DeviceIoControl`, `CancelIoEx` and
//! `CloseHandle` would.
//!
//! ```
//! use kmdf::host::Runtime;
//! use kmdf::interface::Guid;
//! use kmdf::io_queue::{Dispatch, IoQueue, IoQueueCallbacks, IoQueueConfig};
//! use kmdf::{Device, DeviceInit, Driver, NtStatus, PnpPowerCallbacks, Request, Result};
//!
//! const GUID_DEVINTERFACE_ECHO: Guid = Guid::parse("4d36e97d-e325-11ce-bfc1-08002be10318");
//!
//! struct Echo;
//! impl Driver for Echo {
//!     fn driver_entry() -> Result<Self> { Ok(Echo) }
//!     fn device_add(&self, init: DeviceInit<'_>) -> Result {
//!         let device = init.create(EchoDevice)?;
//!         device.create_device_interface(&GUID_DEVINTERFACE_ECHO, None)?;
//!         IoQueue::create(device, IoQueueConfig::default_queue(Dispatch::parallel()), Reads)?;
//!         Ok(())
//!     }
//! }
//! struct EchoDevice;
//! kmdf::vtable! { impl PnpPowerCallbacks for EchoDevice {} }
//! struct Reads;
//! kmdf::vtable! {
//!     impl IoQueueCallbacks for Reads {
//!         type Device = EchoDevice;
//!         fn read(
//!             &self,
//!             _queue: &IoQueue<Self>,
//!             _device: &Device<EchoDevice>,
//!             mut request: Request,
//!             length: usize,
//!         ) {
//!             if let Ok(buffer) = request.output_buffer(1) {
//!                 buffer.fill(7);
//!             }
//!             let _ = request.complete_with_information(NtStatus::SUCCESS, length);
//!         }
//!     }
//! }
//!
//! let runtime = Runtime::new();
//! let node = runtime.load::<Echo>()?.add_device()?;
//! assert!(runtime.open(&GUID_DEVINTERFACE_ECHO).is_err()); // enabled at the first start
//! node.start()?;
//! let handle = runtime.open(&GUID_DEVINTERFACE_ECHO)?;
//! let read = handle.read(3).expect("completed inline");
//! assert_eq!((read.status, read.information, read.data), (NtStatus::SUCCESS, 3, vec![7; 3]));
//! assert_eq!(node.trace().lines().last().unwrap(), "EvtIoRead(3)");
//! handle.close();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::std;
use std::fmt;
use std::sync::Arc;
use std::vec::Vec;

use super::device::io;
use super::file;
use super::io::{Completion, Done, IoPackage};
use super::object::RawObject;
use super::shared::Shared;
use crate::interface::Guid;
use crate::request::Parameters;
use crate::{NtError, NtStatus};

/// Opens a handle on the first device (oldest first) with an enabled interface of class
/// `interface` ([`Runtime::open`](super::Runtime::open)).
pub(crate) fn open(shared: &Shared, interface: &Guid) -> core::result::Result<FileHandle, NtError> {
    let package = shared
        .io_packages()
        .into_iter()
        .filter_map(|package| Arc::downcast::<IoPackage>(package).ok())
        .find(|package| package.interface_enabled(interface))
        .ok_or(NtError::OBJECT_NAME_NOT_FOUND)?;
    FileHandle::open(package, interface)
}

/// Opens a handle on `device` ([`DeviceNode::open`](super::DeviceNode::open)).
pub(crate) fn open_device(
    device: &RawObject,
    interface: &Guid,
) -> core::result::Result<FileHandle, NtError> {
    FileHandle::open(Arc::clone(io(device)), interface)
}

/// An open handle on a device: the application's side of a `WDFFILEOBJECT`.
///
/// Each I/O is a request the device's queues present to the driver. The blocking forms
/// ([`read`](Self::read), ...) return the completion, or hand the I/O back as a
/// [`PendingIo`] when the driver keeps it pending and nothing running on the machine (no
/// work item) can complete it: the test then moves the clock, applies a PnP action,
/// cancels it, ... The `_async` forms return the [`PendingIo`] at once.
///
/// Dropping the handle closes it, as [`close`](Self::close) does.
pub struct FileHandle {
    io: Arc<IoPackage>,
    file: Arc<RawObject>,
    closed: bool,
}

impl FileHandle {
    fn open(io: Arc<IoPackage>, interface: &Guid) -> core::result::Result<Self, NtError> {
        let file = file::open(&io, interface)?;
        Ok(Self { io, file, closed: false })
    }

    fn submit(&self, parameters: Parameters, input: Vec<u8>) -> PendingIo {
        let (id, done) = self.io.submit(Some(Arc::clone(&self.file)), parameters, input);
        PendingIo { io: Arc::clone(&self.io), id, done }
    }

    /// Sends a read of `length` bytes (`ReadFile`) and returns at once.
    #[must_use = "the pending I/O is the only way to its completion"]
    pub fn read_async(&self, length: usize) -> PendingIo {
        self.submit(Parameters::Read { length }, Vec::new())
    }

    /// Sends a write of `data` (`WriteFile`) and returns at once.
    #[must_use = "the pending I/O is the only way to its completion"]
    pub fn write_async(&self, data: &[u8]) -> PendingIo {
        self.submit(Parameters::Write { length: data.len() }, data.to_vec())
    }

    /// Sends a device I/O control request (`DeviceIoControl`) with `input` and an output
    /// buffer of `output_length` bytes, and returns at once.
    #[must_use = "the pending I/O is the only way to its completion"]
    pub fn ioctl_async(&self, code: u32, input: &[u8], output_length: usize) -> PendingIo {
        let parameters =
            Parameters::DeviceControl { code, output_length, input_length: input.len() };
        self.submit(parameters, input.to_vec())
    }

    /// Sends an internal device I/O control request (`IRP_MJ_INTERNAL_DEVICE_CONTROL`) on
    /// the handle, as another driver would (applications cannot), and returns at once. Its
    /// buffers are given to the driver whatever the method, `METHOD_NEITHER` included (a
    /// kernel-mode sender's).
    #[must_use = "the pending I/O is the only way to its completion"]
    pub fn internal_ioctl_async(&self, code: u32, input: &[u8], output_length: usize) -> PendingIo {
        let parameters =
            Parameters::InternalDeviceControl { code, output_length, input_length: input.len() };
        self.submit(parameters, input.to_vec())
    }

    /// Reads `length` bytes and waits for the completion (see [`PendingIo::wait`]).
    ///
    /// # Errors
    ///
    /// The I/O, still pending, when nothing running can complete it.
    pub fn read(&self, length: usize) -> core::result::Result<Completion, PendingIo> {
        self.read_async(length).wait()
    }

    /// Writes `data` and waits for the completion (see [`PendingIo::wait`]).
    ///
    /// # Errors
    ///
    /// The I/O, still pending, when nothing running can complete it.
    pub fn write(&self, data: &[u8]) -> core::result::Result<Completion, PendingIo> {
        self.write_async(data).wait()
    }

    /// Sends a device I/O control request and waits for the completion (see
    /// [`PendingIo::wait`]).
    ///
    /// # Errors
    ///
    /// The I/O, still pending, when nothing running can complete it.
    pub fn ioctl(
        &self,
        code: u32,
        input: &[u8],
        output_length: usize,
    ) -> core::result::Result<Completion, PendingIo> {
        self.ioctl_async(code, input, output_length).wait()
    }

    /// Closes the handle (`CloseHandle`): `EvtFileCleanup`, the handle's queued requests
    /// are cancelled, and `EvtFileClose` runs once every request sent on it is completed
    /// (at once, or when the last one completes). After the device's removal no callback
    /// runs (the host removes a device without waiting for its handles).
    pub fn close(mut self) {
        self.close_now();
    }

    fn close_now(&mut self) {
        if !std::mem::replace(&mut self.closed, true) {
            self.io.close(&self.file);
        }
    }
}

impl Drop for FileHandle {
    fn drop(&mut self) {
        self.close_now();
    }
}

impl fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileHandle").field("file", &self.file).finish_non_exhaustive()
    }
}

/// An I/O sent and not yet known to be complete (an `OVERLAPPED` operation).
pub struct PendingIo {
    io: Arc<IoPackage>,
    id: u64,
    done: Arc<Done>,
}

impl PendingIo {
    /// The request's number (the driver sees it as [`Request::id`](crate::Request::id)).
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The completion, if the request is completed.
    #[must_use]
    pub fn completion(&self) -> Option<Completion> {
        self.done.get()
    }

    /// Whether the request is completed.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.done.get().is_some()
    }

    /// Waits for the completion as long as something running on the machine could bring
    /// it: until no work item is queued or running (see
    /// [`Runtime::wait_for_work_items`](super::Runtime::wait_for_work_items)).
    ///
    /// # Errors
    ///
    /// `self`, when the request is still pending then: only the test can make it progress
    /// (advance the clock, apply a PnP action, cancel it).
    pub fn wait(self) -> core::result::Result<Completion, PendingIo> {
        if let Some(completion) = self.done.get() {
            return Ok(completion);
        }
        self.io.shared.pool().wait_idle();
        self.done.get().ok_or(self)
    }

    /// Cancels the request (`CancelIoEx`): a queued one is completed `STATUS_CANCELLED` (or
    /// gets `EvtIoCanceledOnQueue`), a cancelable one the driver owns gets
    /// `EvtRequestCancel`, another one the driver owns is marked cancelled
    /// (`WdfRequestIsCanceled`). A completed one is left alone.
    pub fn cancel(&self) {
        self.io.cancel(self.id);
    }

    /// The status, when completed.
    #[must_use]
    pub fn status(&self) -> Option<NtStatus> {
        self.done.get().map(|completion| completion.status)
    }
}

impl fmt::Debug for PendingIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingIo")
            .field("id", &self.id)
            .field("completion", &self.done.get())
            .finish_non_exhaustive()
    }
}
