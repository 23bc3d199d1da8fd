//! The host's lock, and the IRQL modelled per thread.
//!
//! A thread's IRQL is `PASSIVE_LEVEL` until it acquires a spin lock, which raises it to
//! `DISPATCH_LEVEL` until the last spin lock it holds is released (in any order), as
//! `WdfSpinLockAcquire` does. Operations the kernel only allows at low IRQL (acquiring a
//! wait lock, flushing a work item) check it.
//!
//! One [`Lock`] serves both kinds (the facade's `SpinLockBackend` and `WaitLockBackend`
//! pick the kind): a `std` mutex, and the lock's lockdep identity (its class: the kind, the
//! type it guards and where it was created). Acquisitions and releases are reported to
//! [`lockdep`](super::lockdep), which panics on a recursive acquisition or an order
//! inversion before the thread blocks.

use super::std;
use std::any::type_name;
use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::sync::{PoisonError, TryLockError};

#[cfg(loom)]
use super::sync_shim::LocalExt as _;
use super::sync_shim::{Mutex, MutexGuard, local};

pub(crate) use super::lockdep::Kind;
use super::lockdep::{self, LockMap};

use crate::Result;
use crate::sync::Irql;

local! {
    static IRQL: Cell<u8> = Cell::new(0);
}
local! {
    /// The spin locks this thread holds, and the IRQL the first of them raised from: the
    /// level is restored when the count drops to zero, whichever guard goes last.
    static SPIN: Cell<(u32, u8)> = Cell::new((0, 0));
}

pub(crate) fn current_irql() -> Irql {
    Irql::from_raw(IRQL.get())
}

/// Sets the thread's IRQL (the raw face's model of a CR8 write).
#[cfg(feature = "sys-harness")]
pub(crate) fn set_irql(irql: u8) {
    IRQL.set(irql);
}

/// Runs `f` at `DISPATCH_LEVEL`, as the kernel runs a DPC.
pub(crate) fn at_dispatch<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            IRQL.set(self.0);
        }
    }
    let previous = IRQL.get();
    IRQL.set(previous.max(Irql::Dispatch.to_raw()));
    let _restore = Restore(previous);
    f()
}

/// A spin lock is acquired: the first one held raises the thread to `DISPATCH_LEVEL`.
pub(crate) fn enter_spin() {
    let (held, saved) = SPIN.get();
    if held == 0 {
        let previous = IRQL.get();
        IRQL.set(previous.max(Irql::Dispatch.to_raw()));
        SPIN.set((1, previous));
    } else {
        SPIN.set((held + 1, saved));
    }
}

/// A spin lock is released: the last one held restores the level the first one raised
/// from. So guards dropped out of order never lower the IRQL while a spin lock is held.
pub(crate) fn leave_spin() {
    // `try_with`: a guard dropped while the thread's locals are torn down has nothing to do.
    let _ = SPIN.try_with(|spin| {
        let (held, saved) = spin.get();
        let held = held.saturating_sub(1);
        spin.set((held, saved));
        if held == 0 {
            IRQL.set(saved);
        }
    });
}

/// A spin lock or a wait lock guarding a `T`.
pub struct Lock<T> {
    mutex: Mutex<T>,
    /// The lock's class; its kind says whether this is a spin lock or a wait lock.
    map: LockMap,
}

impl<T> Lock<T> {
    #[allow(clippy::unnecessary_wraps, reason = "the kernel's WdfSpinLockCreate can fail")]
    #[track_caller]
    pub(crate) fn new(value: T, kind: Kind) -> Result<Self> {
        let map = LockMap::new(kind, type_name::<T>(), Location::caller());
        Ok(Self { mutex: Mutex::new(value), map })
    }

    /// The lock's identity for lockdep: its address.
    fn instance(&self) -> usize {
        std::ptr::from_ref(&self.mutex).addr()
    }

    #[track_caller]
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        let spin = self.map.kind() == Kind::SpinLock;
        if !spin {
            let irql = current_irql();
            assert!(
                irql <= Irql::Apc,
                "WaitLock::lock at {irql:?}: WdfWaitLockAcquire waits, so it must be called at \
                 PASSIVE_LEVEL or APC_LEVEL (is a SpinLock held?)"
            );
        }
        // Checked before anything changes: a report panics with nothing to undo.
        let instance = self.instance();
        lockdep::acquire(&self.map, instance, Location::caller());
        if spin {
            // Raise first, as KeAcquireSpinLock does: the wait happens at DISPATCH_LEVEL.
            enter_spin();
        }
        let guard = self.mutex.lock().unwrap_or_else(PoisonError::into_inner);
        Guard { held: Some(guard), instance, spin }
    }

    /// A wait lock's try-lock. `None` when the lock is held, by another thread or by this
    /// one: a wait lock held by the calling thread is not acquired again, as
    /// `WdfWaitLockAcquire` with a zero timeout times out on it
    /// (`FxWaitLockInternal::AcquireLock` waits on the lock's event).
    #[track_caller]
    pub(crate) fn try_lock(&self) -> Option<Guard<'_, T>> {
        debug_assert!(self.map.kind() == Kind::WaitLock, "only wait locks have a try-lock");
        let guard = match self.mutex.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let instance = self.instance();
        lockdep::acquired_without_wait(&self.map, instance, Location::caller());
        Some(Guard { held: Some(guard), instance, spin: false })
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.mutex.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn into_inner(self) -> T {
        self.mutex.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Holds a [`Lock`]. Not `Send` (the `std` guard is not).
pub struct Guard<'a, T> {
    /// `None` only in `drop`, to release the mutex before lowering the IRQL.
    held: Option<MutexGuard<'a, T>>,
    instance: usize,
    /// Whether this guard holds a spin lock (and counts in the thread's IRQL).
    spin: bool,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.held.as_deref().expect("guard is held until drop")
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.held.as_deref_mut().expect("guard is held until drop")
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // Release, then lower the IRQL, as KeReleaseSpinLock does.
        self.held = None;
        lockdep::release(self.instance);
        if self.spin {
            leave_spin();
        }
    }
}
