//! The toaster sample as a KMDF driver: the whole driver is `../driver.rs`, whose
//! `kmdf::driver_entry!` exports `DriverEntry` and installs `wdk-alloc`'s allocator; kmdf's
//! kernel backend links `wdk-panic`'s panic handler.

#![no_std]

// Public: its request API (`Toaster::submit`) is what an I/O queue would call.
#[path = "../../driver.rs"]
pub mod driver;

// tools/sys-harness's view into the running driver (scripts/sys-run builds with it).
#[cfg(feature = "sys-harness")]
#[path = "../../../../tools/sys-harness/hooks/toaster.rs"]
mod sys_harness_hooks;
