//! The toaster's harness exports: compiled into the toaster's `.sys` only with its
//! `sys-harness` feature (`examples/toaster/kmdf-driver`), never into a driver that ships.
//!
//! The host runner reads the number of pending reads through `DeviceNode::with_context`
//! (`Toaster::pending`) and the summary from the driver's ledger; in a `.sys` the same calls
//! are made by these functions, which the harness finds among the image's exports. They call
//! the sample's own code, the same code the host runner calls. (The application's requests
//! are real I/O: the harness sends them through the host runtime's client, as the host
//! runner does, and the image's queue and file callbacks get them through the WDF DDIs.)

use core::ffi::c_void;

use crate::driver::{Toaster, ToasterDriver};

/// `Toaster::pending` on the device `device`.
///
/// # Safety
///
/// `device` is the toaster's live `WDFDEVICE`; called at `PASSIVE_LEVEL`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KmdfHarnessToasterPending(device: *mut c_void) -> u64 {
    // SAFETY: the caller's contract: a live toaster device.
    let device = unsafe { kmdf::__sys_harness::device::<Toaster>(device) };
    device.context().pending() as u64
}

/// The ledger: writes `[submitted, completed, cancelled, flushed]` (the reads the toaster
/// took, toasted, had cancelled, failed in `self_managed_io_flush`) to `out`; returns how
/// many values it wrote (at most `capacity`), or 0 when the driver is not loaded.
///
/// # Safety
///
/// `out` is valid for `capacity` writes of `u64`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KmdfHarnessToasterLedger(out: *mut u64, capacity: u64) -> u64 {
    let Some(driver) = kmdf::__sys_harness::driver::<ToasterDriver>() else { return 0 };
    let ledger = &driver.ledger;
    let values = [ledger.submitted(), ledger.completed(), ledger.canceled(), ledger.flushed()];
    let count = values.len().min(usize::try_from(capacity).unwrap_or(usize::MAX));
    for (index, value) in values.iter().take(count).enumerate() {
        // SAFETY: `index < capacity`, for which `out` is valid (the caller's contract).
        unsafe { out.add(index).write(*value) };
    }
    count as u64
}
