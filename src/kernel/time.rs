//! The system clocks in the kernel.

use wdk_sys::LARGE_INTEGER;

/// `KUSER_SHARED_DATA`'s `InterruptTime`, which `KeQueryInterruptTime` reads on x64
/// (`KI_USER_SHARED_DATA + 0x8`, wdm.h).
const INTERRUPT_TIME: *const u64 = 0xFFFF_F780_0000_0008 as *const u64;

pub(crate) fn interrupt_time() -> u64 {
    // SAFETY: KUSER_SHARED_DATA is mapped read-only at this fixed address in every
    // process and in the kernel; the 64-bit interrupt time there is updated atomically on
    // x64, and wdm.h's KeQueryInterruptTime is this volatile read.
    unsafe { INTERRUPT_TIME.read_volatile() }
}

#[allow(clippy::cast_sign_loss, reason = "the counter and its frequency are never negative")]
pub(crate) fn performance_counter() -> crate::time::PerformanceCounter {
    let mut frequency = LARGE_INTEGER::default();
    // SAFETY: KeQueryPerformanceCounter may be called at any IRQL and writes the frequency
    // through the pointer, which is valid for the call.
    let count = unsafe { wdk_sys::ntddk::KeQueryPerformanceCounter(&raw mut frequency) };
    // SAFETY: a LARGE_INTEGER is always valid as its `QuadPart` (an i64 over all 8 bytes).
    let count = unsafe { count.QuadPart };
    // SAFETY: as above.
    let frequency = unsafe { frequency.QuadPart };
    crate::time::PerformanceCounter { count: count as u64, frequency: frequency as u64 }
}
