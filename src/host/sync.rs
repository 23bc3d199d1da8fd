//! Spin locks, wait locks and the IRQL, modelled per thread.
//!
//! A thread's IRQL is `PASSIVE_LEVEL` until it acquires a spin lock, which raises it to
//! `DISPATCH_LEVEL` until released, as `WdfSpinLockAcquire` does. Operations the kernel only
//! allows at low IRQL (acquiring a wait lock, flushing a work item) check it.
//!
//! Every lock carries its lockdep identity (its class: the type it guards and where it was
//! created) and reports its acquisitions and releases to [`lockdep`](super::lockdep), which
//! panics on a recursive acquisition or an order inversion before the thread blocks.

use super::std;
use std::any::type_name;
use std::cell::Cell;
use std::panic::Location;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use super::lockdep::{self, Kind, LockMap};

use crate::Result;
use crate::sync::Irql;

std::thread_local! {
    static IRQL: Cell<u8> = const { Cell::new(0) };
}

pub(crate) fn current_irql() -> Irql {
    Irql::from_raw(IRQL.get())
}

/// Runs `f` at `DISPATCH_LEVEL`, as the kernel runs a DPC.
pub(crate) fn at_dispatch<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            IRQL.set(self.0);
        }
    }
    let _restore = Restore(raise_to_dispatch());
    f()
}

/// Raises the thread to `DISPATCH_LEVEL`; returns the level to restore.
fn raise_to_dispatch() -> u8 {
    let previous = IRQL.get();
    IRQL.set(previous.max(Irql::Dispatch.to_raw()));
    previous
}

pub(crate) struct SpinLock<T> {
    mutex: Mutex<T>,
    map: LockMap,
}

impl<T> SpinLock<T> {
    #[allow(clippy::unnecessary_wraps, reason = "the kernel's WdfSpinLockCreate can fail")]
    #[track_caller]
    pub(crate) fn new(value: T) -> Result<Self> {
        let map = LockMap::new(Kind::SpinLock, type_name::<T>(), Location::caller());
        Ok(Self { mutex: Mutex::new(value), map })
    }

    /// The lock's identity for lockdep: its address.
    fn instance(&self) -> usize {
        std::ptr::from_ref(&self.mutex).addr()
    }

    #[track_caller]
    pub(crate) fn lock(&self) -> SpinLockGuard<'_, T> {
        // Checked before anything changes: a report panics with nothing to undo.
        let instance = self.instance();
        lockdep::acquire(&self.map, instance, Location::caller());
        // Raise first, as KeAcquireSpinLock does: the wait itself happens at DISPATCH_LEVEL.
        let previous = raise_to_dispatch();
        let guard = self.mutex.lock().unwrap_or_else(PoisonError::into_inner);
        SpinLockGuard { guard: Some(guard), previous, instance }
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.mutex.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn into_inner(self) -> T {
        self.mutex.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) struct SpinLockGuard<'a, T> {
    guard: Option<MutexGuard<'a, T>>,
    previous: u8,
    instance: usize,
}

impl<T> std::ops::Deref for SpinLockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.guard.as_deref().expect("guard is held until drop")
    }
}

impl<T> std::ops::DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_deref_mut().expect("guard is held until drop")
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // Release, then lower the IRQL, as KeReleaseSpinLock does.
        self.guard = None;
        lockdep::release(self.instance);
        IRQL.set(self.previous);
    }
}

pub(crate) struct WaitLock<T> {
    mutex: Mutex<T>,
    map: LockMap,
}

impl<T> WaitLock<T> {
    #[allow(clippy::unnecessary_wraps, reason = "the kernel's WdfWaitLockCreate can fail")]
    #[track_caller]
    pub(crate) fn new(value: T) -> Result<Self> {
        let map = LockMap::new(Kind::WaitLock, type_name::<T>(), Location::caller());
        Ok(Self { mutex: Mutex::new(value), map })
    }

    /// The lock's identity for lockdep: its address.
    fn instance(&self) -> usize {
        std::ptr::from_ref(&self.mutex).addr()
    }

    #[track_caller]
    pub(crate) fn lock(&self) -> WaitLockGuard<'_, T> {
        let irql = current_irql();
        assert!(
            irql <= Irql::Apc,
            "WaitLock::lock at {irql:?}: WdfWaitLockAcquire waits, so it must be called at \
             PASSIVE_LEVEL or APC_LEVEL (is a SpinLock held?)"
        );
        let instance = self.instance();
        lockdep::acquire(&self.map, instance, Location::caller());
        let guard = self.mutex.lock().unwrap_or_else(PoisonError::into_inner);
        WaitLockGuard { guard, instance }
    }

    /// `None` when the lock is held, by another thread or by this one: a wait lock held by
    /// the calling thread is not acquired again, as `WdfWaitLockAcquire` with a zero timeout
    /// times out on it (`FxWaitLockInternal::AcquireLock` waits on the lock's event).
    #[track_caller]
    pub(crate) fn try_lock(&self) -> Option<WaitLockGuard<'_, T>> {
        let guard = match self.mutex.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let instance = self.instance();
        lockdep::acquired_without_wait(&self.map, instance, Location::caller());
        Some(WaitLockGuard { guard, instance })
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.mutex.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn into_inner(self) -> T {
        self.mutex.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) struct WaitLockGuard<'a, T> {
    guard: MutexGuard<'a, T>,
    instance: usize,
}

impl<T> Drop for WaitLockGuard<'_, T> {
    fn drop(&mut self) {
        // The mutex is released right after, with the `guard` field.
        lockdep::release(self.instance);
    }
}

impl<T> std::ops::Deref for WaitLockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for WaitLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}
