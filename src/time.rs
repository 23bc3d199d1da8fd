//! The system's clocks, as drivers read them: `KeQueryInterruptTime` and
//! `KeQueryPerformanceCounter`.
//!
//! In the kernel they read the real clocks. On the host runtime they read the runtime's
//! virtual clock (the one timers run on, moved by `Runtime::advance`), so a driver that
//! timestamps its work sees the same times run after run.

use core::time::Duration;

use crate::backend;

/// The interrupt time: how long the system has been running, in 100-nanosecond units
/// (`KeQueryInterruptTime`). On the host runtime it is the virtual clock's time since the
/// runtime was created.
///
/// # Panics
///
/// On the host runtime, when called outside a driver callback: only a callback knows which
/// runtime's clock to read.
#[must_use]
pub fn interrupt_time() -> u64 {
    backend::time::interrupt_time()
}

/// [`interrupt_time`] as a [`Duration`].
///
/// # Panics
///
/// As [`interrupt_time`].
#[must_use]
pub fn since_boot() -> Duration {
    let ticks = interrupt_time();
    Duration::new(ticks / 10_000_000, u32::try_from(ticks % 10_000_000).unwrap_or(0) * 100)
}

/// A reading of the high-resolution performance counter (`KeQueryPerformanceCounter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerformanceCounter {
    /// The counter's value.
    pub count: u64,
    /// How many counts make a second.
    pub frequency: u64,
}

impl PerformanceCounter {
    /// The counter's value as time since it started.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        let frequency = self.frequency.max(1);
        let seconds = self.count / frequency;
        let rest = u128::from(self.count % frequency) * 1_000_000_000 / u128::from(frequency);
        Duration::new(seconds, u32::try_from(rest).unwrap_or(0))
    }
}

/// Reads the performance counter (`KeQueryPerformanceCounter`). On the host runtime it
/// counts the virtual clock at 10 MHz.
///
/// # Panics
///
/// As [`interrupt_time`].
#[must_use]
pub fn performance_counter() -> PerformanceCounter {
    backend::time::performance_counter()
}
