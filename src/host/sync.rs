//! Spin locks, wait locks and the IRQL, modelled per thread.
//!
//! A thread's IRQL is `PASSIVE_LEVEL` until it acquires a spin lock, which raises it to
//! `DISPATCH_LEVEL` until released, as `WdfSpinLockAcquire` does. Operations the kernel only
//! allows at low IRQL (acquiring a wait lock, flushing a work item) check it.

use super::std;
use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

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
}

impl<T> SpinLock<T> {
    #[allow(clippy::unnecessary_wraps, reason = "the kernel's WdfSpinLockCreate can fail")]
    pub(crate) fn new(value: T) -> Result<Self> {
        Ok(Self { mutex: Mutex::new(value) })
    }

    pub(crate) fn lock(&self) -> SpinLockGuard<'_, T> {
        // Raise first, as KeAcquireSpinLock does: the wait itself happens at DISPATCH_LEVEL.
        let previous = raise_to_dispatch();
        let guard = self.mutex.lock().unwrap_or_else(PoisonError::into_inner);
        SpinLockGuard { guard: Some(guard), previous }
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
        IRQL.set(self.previous);
    }
}

pub(crate) struct WaitLock<T> {
    mutex: Mutex<T>,
}

impl<T> WaitLock<T> {
    #[allow(clippy::unnecessary_wraps, reason = "the kernel's WdfWaitLockCreate can fail")]
    pub(crate) fn new(value: T) -> Result<Self> {
        Ok(Self { mutex: Mutex::new(value) })
    }

    pub(crate) fn lock(&self) -> WaitLockGuard<'_, T> {
        let irql = current_irql();
        assert!(
            irql <= Irql::Apc,
            "WaitLock::lock at {irql:?}: WdfWaitLockAcquire waits, so it must be called at \
             PASSIVE_LEVEL or APC_LEVEL (is a SpinLock held?)"
        );
        WaitLockGuard { guard: self.mutex.lock().unwrap_or_else(PoisonError::into_inner) }
    }

    pub(crate) fn try_lock(&self) -> Option<WaitLockGuard<'_, T>> {
        match self.mutex.try_lock() {
            Ok(guard) => Some(WaitLockGuard { guard }),
            Err(TryLockError::Poisoned(poisoned)) => {
                Some(WaitLockGuard { guard: poisoned.into_inner() })
            }
            Err(TryLockError::WouldBlock) => None,
        }
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
