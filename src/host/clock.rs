//! The runtime's virtual clock: the time, and the timers set on it in due-time order.
//!
//! The clock knows nothing of what is set on it: it holds [`Expiry`] values (a `WDFTIMER`
//! that was started, a device's idle timeout) and hands each back when it falls due, so the
//! runtime's shared state can own the clock without depending on the object table, and a
//! new kind of expiry plugs in without the clock changing.

use super::std;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::pool::Origin;

/// Where a set timer sits in the clock's queue: its due time, then the order it was set in.
pub(crate) type Key = (Duration, u64);

/// Something set on the clock, run when it falls due.
pub(crate) trait Expiry: Send + Sync {
    /// Runs the expiry that sat at `key`, on the advancing thread, as deferred work of
    /// `origin` (the advance waits for the work it hands on).
    fn expire(self: Arc<Self>, key: Key, origin: Origin);
}

/// What sits on the clock.
pub(crate) type Entry = Arc<dyn Expiry>;

/// The runtime's virtual clock and the timers set on it.
#[derive(Default)]
pub(crate) struct Clock {
    /// The time since the runtime started; only `Runtime::advance` moves it.
    pub(crate) now: Duration,
    next_seq: u64,
    /// The set timers, by due time, then the order they were set in.
    pub(crate) queue: BTreeMap<Key, Entry>,
}

impl Clock {
    /// The place of a timer set now to fall due at `due`: after every timer set before it
    /// for the same time.
    pub(crate) fn key(&mut self, due: Duration) -> Key {
        self.next_seq += 1;
        (due, self.next_seq)
    }

    /// The time since the runtime started.
    pub(crate) fn now(&self) -> Duration {
        self.now
    }
}
