//! Safe Rust for Windows KMDF drivers, testable on any host.
//!
//! A driver written with `kmdf` implements traits; the crate owns every `extern "C"`
//! trampoline, every `WDF_*_INIT` structure and every raw handle. The same driver source
//! builds two ways:
//!
//! * **kernel backend** (`target_os = "windows"`): a thin layer over
//!   [`wdk-sys`](https://docs.rs/wdk-sys), each call the same indirect call through the WDF
//!   function table a C driver makes;
//! * **host runtime** (every other target, or Windows with the `host-runtime` feature): a
//!   user-mode model of KMDF's PnP, power and self-managed I/O state machines and of work
//!   items on real threads, with failure injection, a callback trace and invariant checks.
//!   It lives in [`host`] and is how drivers are unit-tested with plain `cargo test`.
//!
//! # A driver
//!
//! ```
//! use kmdf::{Device, DeviceInit, Driver, PnpPowerCallbacks, Result, sync::SpinLock};
//!
//! struct Echo;
//!
//! impl Driver for Echo {
//!     fn driver_entry() -> Result<Self> {
//!         Ok(Echo)
//!     }
//!
//!     fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
//!         device_init.create(EchoDevice { opened: SpinLock::new(0)? })?;
//!         Ok(())
//!     }
//! }
//!
//! /// The device context: KMDF stores it in the WDFDEVICE's context space.
//! struct EchoDevice {
//!     opened: SpinLock<u32>,
//! }
//!
//! // `vtable!` registers exactly the callbacks written here and no others.
//! kmdf::vtable! {
//!     impl PnpPowerCallbacks for EchoDevice {
//!         fn self_managed_io_init(&self, _device: &Device<Self>) -> Result {
//!             *self.opened.lock() += 1;
//!             Ok(())
//!         }
//!     }
//! }
//!
//! kmdf::driver_entry!(Echo);
//!
//! # #[cfg(not(windows))] {
//! // On the host runtime, the same driver runs under test:
//! let runtime = kmdf::host::Runtime::new();
//! let driver = runtime.load::<Echo>().unwrap();
//! let node = driver.add_device().unwrap();
//! assert_eq!(node.with_context(|device: &EchoDevice| *device.opened.lock()), Ok(0));
//! # }
//! ```
//!
//! # Where things are
//!
//! | concept | module |
//! |---|---|
//! | status codes, `NtError`, `Result` | [`status`] |
//! | the driver object, `DriverEntry` | [`driver`], [`driver_entry!`] |
//! | devices and their typed contexts | [`device`] |
//! | PnP, power and self-managed I/O callbacks | [`pnp`], [`vtable!`] |
//! | I/O queues, requests, file objects | [`io_queue`], [`request`], [`file`](mod@file) |
//! | device interfaces, GUIDs, I/O control codes | [`interface`] |
//! | work items | [`work_item`] |
//! | timers | [`timer`] |
//! | counted object references | [`object`] |
//! | spin locks, wait locks, IRQL | [`sync`] |
//! | the system clocks | [`time`] |
//! | debug output (`DbgPrintEx`) | [`debug`], [`debug_print!`] |
//! | the host runtime | [`host`] (host builds only) |
//!
//! Only the two backend folders, `src/kernel` and `src/host`, hold code that the compiler
//! cannot check for memory safety; every block there says why it holds.

#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub(crate) mod callback;
pub mod debug;
pub mod device;
pub mod driver;
pub mod file;
pub mod interface;
pub mod io_queue;
pub mod object;
pub mod pnp;
pub mod power_policy;
pub mod request;
pub mod status;
pub mod sync;
pub mod time;
pub mod timer;
pub mod work_item;

#[cfg(kmdf_host)]
pub mod host;
#[cfg(kmdf_kernel)]
mod kernel;

#[cfg(kmdf_host)]
use host as backend;
#[cfg(kmdf_kernel)]
use kernel as backend;

pub use callback::Callback;
pub use device::{Device, DeviceInit, FailedAction};
pub use driver::Driver;
pub use file::{FileCallbacks, FileObject};
pub use io_queue::{IoQueue, IoQueueCallbacks, IoQueueConfig};
pub use pnp::{DevicePowerState, PnpPowerCallbacks};
pub use request::{Request, RequestError};
pub use status::{NtError, NtStatus, Result};
pub use timer::{Started, Stopped, Timer, TimerCallbacks};
pub use work_item::{Enqueued, WorkItem, WorkItemCallbacks};

/// For `tools/sys-harness` (the `sys-harness` feature): in a kernel build, what a sample's
/// harness exports need from inside the driver. Not part of the public API.
#[cfg(all(kmdf_kernel, feature = "sys-harness"))]
#[doc(hidden)]
pub use kernel::harness as __sys_harness;

/// Items the crate's macros expand to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::callback::vtable;
    #[cfg(kmdf_kernel)]
    pub use crate::kernel::entry::*;
}
