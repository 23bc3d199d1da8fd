//! The toaster's harness exports: compiled into the toaster's `.sys` only with its
//! `sys-harness` feature (`examples/toaster/kmdf-driver`), never into a driver that ships.
//!
//! The host runner plays an application through `DeviceNode::with_context` (it asks for a
//! slice of toast with `Toaster::submit`) and reads the summary from the driver's ledger;
//! in a `.sys` the same calls are made by these functions, which the harness finds among the
//! image's exports. They call the sample's own code, the same code the host runner calls.

extern crate alloc;

use core::ffi::c_void;

use kmdf::NtStatus;

use crate::driver::{Toaster, ToasterDriver};

/// `Toaster::submit` on the device `device`: `STATUS_SUCCESS` or the error.
///
/// # Safety
///
/// `device` is the toaster's live `WDFDEVICE`; called at `PASSIVE_LEVEL`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KmdfHarnessToasterSubmit(device: *mut c_void) -> i32 {
    // SAFETY: the caller's contract: a live toaster device.
    let device = unsafe { kmdf::__sys_harness::device::<Toaster>(device) };
    NtStatus::from(device.context().submit().map(|_| ())).to_raw()
}

/// `Toaster::pending` on the device `device`.
///
/// # Safety
///
/// As [`KmdfHarnessToasterSubmit`].
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KmdfHarnessToasterPending(device: *mut c_void) -> u64 {
    // SAFETY: the caller's contract: a live toaster device.
    let device = unsafe { kmdf::__sys_harness::device::<Toaster>(device) };
    device.context().pending() as u64
}

/// The ledger: writes `[submitted, completed, flushed, n, id...]` (the `n` ids completed more
/// than once, at most `capacity - 4` of them) to `out`; returns how many values it wrote,
/// or 0 when the driver is not loaded.
///
/// # Safety
///
/// `out` is valid for `capacity` writes of `u64`, `capacity >= 4`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KmdfHarnessToasterLedger(out: *mut u64, capacity: u64) -> u64 {
    let Some(driver) = kmdf::__sys_harness::driver::<ToasterDriver>() else { return 0 };
    let ledger = &driver.ledger;
    let mut ids: alloc::vec::Vec<u64> = ledger.completions().iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    let twice: alloc::vec::Vec<u64> =
        ids.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    let mut values = alloc::vec![
        ledger.submitted(),
        ledger.completed() as u64,
        ledger.flushed() as u64,
        twice.len() as u64,
    ];
    values.extend(twice);
    let count = values.len().min(usize::try_from(capacity).unwrap_or(usize::MAX));
    for (index, value) in values.iter().take(count).enumerate() {
        // SAFETY: `index < capacity`, for which `out` is valid (the caller's contract).
        unsafe { out.add(index).write(*value) };
    }
    count as u64
}
