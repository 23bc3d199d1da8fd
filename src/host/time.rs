//! The system clocks on the host: the virtual clock of the runtime whose callback the
//! thread is running.

use super::shared;

fn virtual_time() -> core::time::Duration {
    shared::with_current(|shared, _| shared.now()).unwrap_or_else(|| {
        panic!(
            "kmdf::time read outside a driver callback: on the host runtime the clock belongs \
             to a Runtime (use Runtime::now from a test)"
        )
    })
}

#[allow(clippy::cast_possible_truncation, reason = "u64 100-ns units last 58,000 years")]
pub(crate) fn interrupt_time() -> u64 {
    (virtual_time().as_nanos() / 100) as u64
}

pub(crate) fn performance_counter() -> crate::time::PerformanceCounter {
    crate::time::PerformanceCounter { count: interrupt_time(), frequency: 10_000_000 }
}
