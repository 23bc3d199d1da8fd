//! File objects (`WDFFILEOBJECT`): one per open handle of an application.
//!
//! A device that wants to know of opens and closes registers a file-object type with
//! [`DeviceInit::set_file_object`] (`WdfDeviceInitSetFileObjectConfig`): a context type `F`
//! that implements [`FileCallbacks`] through [`vtable!`](crate::vtable). Each open runs
//! [`FileCallbacks::create`] (`EvtDeviceFileCreate`), which returns the file's context, or
//! the status the open fails with; the close of the last handle runs `cleanup`
//! (`EvtFileCleanup`), then, once every request sent on the file is completed, `close`
//! (`EvtFileClose`). Requests name their file ([`Request::file`](crate::Request::file)).
//!
//! ```
//! use kmdf::file::{FileCallbacks, FileObject};
//! use kmdf::sync::SpinLock;
//! use kmdf::{Device, DeviceInit, PnpPowerCallbacks, Result};
//!
//! struct Toaster;
//! kmdf::vtable! { impl PnpPowerCallbacks for Toaster {} }
//!
//! /// What the driver keeps per open handle.
//! struct Handle {
//!     reads: SpinLock<u32>,
//! }
//!
//! kmdf::vtable! {
//!     impl FileCallbacks for Handle {
//!         type Device = Toaster;
//!
//!         fn create(_device: &Device<Toaster>) -> Result<Self> {
//!             Ok(Handle { reads: SpinLock::new(0)? })
//!         }
//!
//!         fn close(&self, _file: &FileObject<Self>, _device: &Device<Toaster>) {}
//!     }
//! }
//!
//! fn device_add(mut init: DeviceInit<'_>) -> Result {
//!     init.set_file_object::<Handle>();
//!     init.create(Toaster)?;
//!     Ok(())
//! }
//! ```
//!
//! # The rules (docs/kmdf-behaviour.md section 9; the shared reference's section 7)
//!
//! `EvtDeviceFileCreate` runs even while the device is in Dx (KMDF sends creates through an
//! internal queue that is not power-managed). On an exclusive device
//! ([`DeviceInit::set_exclusive`]) a second open fails `STATUS_ACCESS_DENIED`. At cleanup
//! every queue cancels the *queued* requests of the file; the ones the driver owns stay its
//! job, and `close` waits for them.

use core::fmt;
use core::marker::PhantomData;

use crate::backend;
use crate::{Device, DeviceInit, PnpPowerCallbacks, Result};

/// A framework file object (`WDFFILEOBJECT`) whose context is an `F`: one open handle.
#[repr(transparent)]
pub struct FileObject<F> {
    pub(crate) raw: backend::RawObject,
    _context: PhantomData<F>,
}

impl<F: FileCallbacks> FileObject<F> {
    /// The file's context: what [`FileCallbacks::create`] returned.
    #[must_use]
    pub fn context(&self) -> &F {
        backend::file::context(&self.raw)
    }
}

impl<F> fmt::Debug for FileObject<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileObject<{}>({:?})", core::any::type_name::<F>(), self.raw)
    }
}

/// What a device does when applications open and close it: `WDF_FILEOBJECT_CONFIG`'s
/// callbacks, with the file's context type.
///
/// Implemented by the file context type, always through [`vtable!`](crate::vtable). The
/// callbacks run at `PASSIVE_LEVEL`, and get the device (`WdfFileObjectGetDevice`), lent
/// for the call: a file object does not keep its device alive.
pub trait FileCallbacks: Sized + Send + Sync + 'static {
    /// Which methods the impl block wrote. Written by [`vtable!`](crate::vtable). Not part
    /// of the public API.
    #[doc(hidden)]
    const REGISTERED: crate::callback::vtable::FileCallbacks;

    /// The context type of the device.
    type Device: PnpPowerCallbacks;

    /// `EvtDeviceFileCreate`: an application opens the device. `Ok` completes the create
    /// request with `STATUS_SUCCESS` and makes the value the file's context; `Err` fails
    /// the open with that status, and the file object is deleted.
    ///
    /// # Errors
    ///
    /// The status the open fails with.
    fn create(device: &Device<Self::Device>) -> Result<Self>;

    /// `EvtFileCleanup`: the application closed its last handle; requests sent on the file
    /// may still be outstanding (the queued ones are cancelled right after).
    fn cleanup(&self, file: &FileObject<Self>, device: &Device<Self::Device>) {
        let _ = (file, device);
    }

    /// `EvtFileClose`: every request sent on the file is completed; the file object is
    /// deleted after this.
    fn close(&self, file: &FileObject<Self>, device: &Device<Self::Device>) {
        let _ = (file, device);
    }
}

/// How the I/O manager passes the buffers of reads and writes (`WDF_DEVICE_IO_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum IoType {
    /// `WdfDeviceIoBuffered` (the default): a system buffer.
    #[default]
    Buffered,
    /// `WdfDeviceIoDirect`: the caller's buffer, mapped through an MDL. On the host runtime
    /// the buffers behave the same either way.
    Direct,
}

impl DeviceInit<'_> {
    /// Sets how reads and writes pass their buffers (`WdfDeviceInitSetIoType`).
    pub fn set_io_type(&mut self, io_type: IoType) {
        backend::file::set_io_type(&mut self.raw, io_type);
    }

    /// Makes the device exclusive (`WdfDeviceInitSetExclusive`): one open handle at a time;
    /// a second open fails `STATUS_ACCESS_DENIED`.
    pub fn set_exclusive(&mut self, exclusive: bool) {
        backend::file::set_exclusive(&mut self.raw, exclusive);
    }

    /// Gives the device file objects whose context is an `F`, and registers `F`'s
    /// callbacks (`WdfDeviceInitSetFileObjectConfig`). Without it, opens succeed without a
    /// callback and requests have no file object (`WdfFileObjectNotRequired`).
    ///
    /// The device created from this `DeviceInit` must have `F::Device` as its context type
    /// (the callbacks reach the device as that type): [`create`](DeviceInit::create) and
    /// [`create_with`](DeviceInit::create_with) fail `STATUS_INVALID_PARAMETER` otherwise,
    /// before creating anything.
    pub fn set_file_object<F: FileCallbacks>(&mut self) {
        backend::file::set_file_object::<F>(&mut self.raw);
    }
}
