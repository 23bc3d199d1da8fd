//! Locks for driver state, and the IRQL they run at.
//!
//! Callbacks of one device run concurrently (PnP/power callbacks, work items, surprise
//! removal), so the device context is reached as `&T` and what changes in it is guarded:
//!
//! * [`SpinLock`] (`WDFSPINLOCK`): short critical sections, usable at `DISPATCH_LEVEL`;
//!   holding it raises the thread to `DISPATCH_LEVEL`, where nothing may wait.
//! * [`WaitLock`] (`WDFWAITLOCK`): critical sections that may wait (flush a work item, call
//!   a lower driver); acquired at `PASSIVE_LEVEL` or `APC_LEVEL` only.
//!
//! Both hand out RAII guards that are not `Send`: a lock is released on the thread (and at
//! the IRQL) it was acquired on. On the host runtime the IRQL is modelled per thread, so the
//! rules that the kernel enforces with a bug check fail loudly in tests too.
//!
//! On the host runtime the locks are also checked for deadlocks, in the spirit of Linux's
//! lockdep: taking a lock the thread already holds panics at once (in the kernel it hangs,
//! or Driver Verifier bug checks), and so does the first acquisition, or wait for a work
//! item's or timer's callback, that takes locks in the opposite order to one seen before
//! (which can deadlock when the two paths run at the same time), naming both paths. A lock's
//! class, for that ordering, is its type and the place where it was created.
//!
//! ```
//! use kmdf::sync::{current_irql, Irql, SpinLock};
//!
//! let counter = SpinLock::new(0_u32)?;
//! {
//!     let mut count = counter.lock();
//!     *count += 1;
//!     assert_eq!(current_irql(), Irql::Dispatch);
//! }
//! assert_eq!(current_irql(), Irql::Passive);
//! assert_eq!(*counter.lock(), 1);
//! # Ok::<(), kmdf::NtError>(())
//! ```

use core::fmt;
use core::ops::{Deref, DerefMut};

use crate::{Result, backend};

/// An interrupt request level, as far as driver code running in callbacks can see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Irql {
    /// `PASSIVE_LEVEL` (0): every PnP/power callback and every work item runs here; the
    /// thread may wait.
    Passive,
    /// `APC_LEVEL` (1).
    Apc,
    /// `DISPATCH_LEVEL` (2): while a spin lock is held; the thread must not wait.
    Dispatch,
    /// A device IRQL (above `DISPATCH_LEVEL`), with its raw value.
    Device(u8),
}

impl Irql {
    /// The IRQL for a raw `KIRQL` value.
    #[must_use]
    pub const fn from_raw(raw: u8) -> Self {
        match raw {
            0 => Self::Passive,
            1 => Self::Apc,
            2 => Self::Dispatch,
            other => Self::Device(other),
        }
    }

    /// The raw `KIRQL` value.
    #[must_use]
    pub const fn to_raw(self) -> u8 {
        match self {
            Self::Passive => 0,
            Self::Apc => 1,
            Self::Dispatch => 2,
            Self::Device(raw) => raw,
        }
    }
}

/// The IRQL the current thread runs at (`KeGetCurrentIrql`).
#[must_use]
pub fn current_irql() -> Irql {
    backend::sync::current_irql()
}

/// A spin lock (`WDFSPINLOCK`) guarding a `T`.
///
/// [`lock`](Self::lock) raises the thread to `DISPATCH_LEVEL` until the guard is dropped.
/// Keep the critical section short and do not wait in it: no [`WaitLock`], no flushing a
/// work item.
pub struct SpinLock<T> {
    inner: backend::sync::SpinLock<T>,
}

impl<T> SpinLock<T> {
    /// Creates the lock (`WdfSpinLockCreate`, parented to the driver; deleted when the
    /// `SpinLock` is dropped). The caller's location is the lock's class for the host
    /// runtime's lock-order checks.
    ///
    /// # Errors
    ///
    /// `WdfSpinLockCreate`'s failure, `STATUS_INSUFFICIENT_RESOURCES`.
    #[track_caller]
    pub fn new(value: T) -> Result<Self> {
        Ok(Self { inner: backend::sync::SpinLock::new(value)? })
    }

    /// Acquires the lock (`WdfSpinLockAcquire`), spinning until it is free.
    ///
    /// # Panics
    ///
    /// On the host runtime, when the thread already holds this lock (it would spin
    /// forever), or when taking it inverts a lock order seen before (a potential deadlock,
    /// see the [module docs](self)). The message names the lock, the driver callback and,
    /// for an inversion, both orders.
    #[track_caller]
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        SpinLockGuard { inner: self.inner.lock() }
    }

    /// The value, through exclusive access: no locking needed.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// Consumes the lock and returns the value.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: fmt::Debug> fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpinLock").finish_non_exhaustive()
    }
}

/// Holds a [`SpinLock`]; releases it (`WdfSpinLockRelease`) when dropped. Not `Send`.
pub struct SpinLockGuard<'a, T> {
    inner: backend::sync::SpinLockGuard<'a, T>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: fmt::Debug> fmt::Debug for SpinLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A wait lock (`WDFWAITLOCK`) guarding a `T`: a mutex whose holder may wait.
///
/// Acquire it at `PASSIVE_LEVEL` or `APC_LEVEL` only, never while holding a [`SpinLock`].
pub struct WaitLock<T> {
    inner: backend::sync::WaitLock<T>,
}

impl<T> WaitLock<T> {
    /// Creates the lock (`WdfWaitLockCreate`, parented to the driver; deleted when the
    /// `WaitLock` is dropped). The caller's location is the lock's class for the host
    /// runtime's lock-order checks.
    ///
    /// # Errors
    ///
    /// `WdfWaitLockCreate`'s failure, `STATUS_INSUFFICIENT_RESOURCES`.
    #[track_caller]
    pub fn new(value: T) -> Result<Self> {
        Ok(Self { inner: backend::sync::WaitLock::new(value)? })
    }

    /// Acquires the lock (`WdfWaitLockAcquire` without timeout), waiting until it is free.
    ///
    /// # Panics
    ///
    /// When called above `APC_LEVEL` (while holding a [`SpinLock`]), on both backends:
    /// `WdfWaitLockAcquire` would bug check there. The calls that wait and return a
    /// [`Result`] anyway (`WorkItem::flush`, `Timer::stop`) return an error instead; a lock
    /// has no error to return but this bug, so it panics (in the kernel, `wdk-panic` makes
    /// that a bug check that names the mistake). On the host runtime also when the thread
    /// already holds this lock (it would wait forever; KMDF's verifier breaks with
    /// `WDF_RECURSIVE_LOCK`), or when taking it inverts a lock order seen before (a
    /// potential deadlock, see the [module docs](self)).
    #[track_caller]
    pub fn lock(&self) -> WaitLockGuard<'_, T> {
        WaitLockGuard { inner: self.inner.lock() }
    }

    /// Acquires the lock only if it is free (`WdfWaitLockAcquire` with a zero timeout);
    /// usable at `DISPATCH_LEVEL`.
    ///
    /// Returns `None` when the lock is held, also by the calling thread itself: like
    /// `WdfWaitLockAcquire` with a zero timeout, which then times out, this is not treated
    /// as a recursive acquisition and never panics. A lock taken this way counts as held
    /// for the host runtime's lock-order checks.
    #[track_caller]
    pub fn try_lock(&self) -> Option<WaitLockGuard<'_, T>> {
        self.inner.try_lock().map(|inner| WaitLockGuard { inner })
    }

    /// The value, through exclusive access: no locking needed.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// Consumes the lock and returns the value.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: fmt::Debug> fmt::Debug for WaitLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitLock").finish_non_exhaustive()
    }
}

/// Holds a [`WaitLock`]; releases it (`WdfWaitLockRelease`) when dropped. Not `Send`.
pub struct WaitLockGuard<'a, T> {
    inner: backend::sync::WaitLockGuard<'a, T>,
}

impl<T> Deref for WaitLockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for WaitLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: fmt::Debug> fmt::Debug for WaitLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
