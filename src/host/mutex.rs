//! The runtime's own bookkeeping locks.

use super::std;
use std::sync::PoisonError;

use super::sync_shim::{Mutex, MutexGuard};

/// Locks a mutex, ignoring poisoning: a panicking driver callback must not take the
/// runtime's own bookkeeping down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
