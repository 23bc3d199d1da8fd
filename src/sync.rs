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
//! Both are one generic [`Lock`] over a [`Backend`] (as Rust-for-Linux's
//! `Lock<T, B: Backend>`), and both hand out the one RAII [`Guard`], which is not `Send`: a
//! lock is released on the thread (and at the IRQL) it was acquired on. Guards may be
//! dropped in any order: the IRQL goes back to where it was only when the last spin lock the
//! thread (in the kernel: the processor) holds is released. On the host runtime the IRQL is
//! modelled per thread, so the rules that the kernel enforces with a bug check fail loudly
//! in tests too.
//!
//! A guard cannot be sent to another thread:
//!
//! ```compile_fail,E0277
//! use kmdf::sync::SpinLock;
//!
//! let lock = SpinLock::new(0_u32).unwrap();
//! let guard = lock.lock();
//! std::thread::scope(|scope| {
//!     scope.spawn(move || drop(guard));
//! });
//! ```
//!
//! In the kernel, a lock is a `WDFSPINLOCK` or `WDFWAITLOCK` parented to the driver, so it
//! may be created in [`Driver::driver_entry`](crate::Driver::driver_entry) (the framework's
//! driver object exists by then) and kept in the driver value; when the driver unloads, the
//! framework deletes the locks with the driver object, and dropping the driver value
//! afterwards deletes nothing twice.
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
use core::marker::PhantomData;
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

/// How a backend implements one kind of lock: the contract between [`Lock`] and the host
/// runtime or the kernel. Implemented by [`SpinLockBackend`] and [`WaitLockBackend`] only.
pub trait Backend: sealed::Sealed + Sized + 'static {
    /// The lock's name, as its `Debug` output shows it.
    #[doc(hidden)]
    const NAME: &'static str;
    /// The backend's lock guarding a `T`.
    #[doc(hidden)]
    type Lock<T>;
    /// What holds the backend's lock; releases it when dropped.
    #[doc(hidden)]
    type Guard<'a, T: 'a>: DerefMut<Target = T>;
    /// Creates the lock; the caller's location is its lockdep class on the host.
    #[doc(hidden)]
    #[track_caller]
    fn new<T>(value: T) -> Result<Self::Lock<T>>;
    /// Acquires the lock, waiting (or spinning) until it is free.
    #[doc(hidden)]
    #[track_caller]
    fn lock<T>(lock: &Self::Lock<T>) -> Self::Guard<'_, T>;
    /// The value, through exclusive access.
    #[doc(hidden)]
    fn get_mut<T>(lock: &mut Self::Lock<T>) -> &mut T;
    /// Deletes the lock and returns the value.
    #[doc(hidden)]
    fn into_inner<T>(lock: Self::Lock<T>) -> T;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::SpinLockBackend {}
    impl Sealed for super::WaitLockBackend {}
}

/// The [`Backend`] of a [`SpinLock`]: `WDFSPINLOCK`. Acquiring raises the thread to
/// `DISPATCH_LEVEL`.
#[derive(Debug)]
pub enum SpinLockBackend {}

/// The [`Backend`] of a [`WaitLock`]: `WDFWAITLOCK`. Acquired at `PASSIVE_LEVEL` or
/// `APC_LEVEL` only.
#[derive(Debug)]
pub enum WaitLockBackend {}

impl Backend for SpinLockBackend {
    const NAME: &'static str = "SpinLock";
    type Lock<T> = backend::sync::Lock<T>;
    type Guard<'a, T: 'a> = backend::sync::Guard<'a, T>;

    #[track_caller]
    fn new<T>(value: T) -> Result<Self::Lock<T>> {
        backend::sync::Lock::new(value, backend::sync::Kind::SpinLock)
    }

    #[track_caller]
    fn lock<T>(lock: &Self::Lock<T>) -> Self::Guard<'_, T> {
        lock.lock()
    }

    fn get_mut<T>(lock: &mut Self::Lock<T>) -> &mut T {
        lock.get_mut()
    }

    fn into_inner<T>(lock: Self::Lock<T>) -> T {
        lock.into_inner()
    }
}

impl Backend for WaitLockBackend {
    const NAME: &'static str = "WaitLock";
    type Lock<T> = backend::sync::Lock<T>;
    type Guard<'a, T: 'a> = backend::sync::Guard<'a, T>;

    #[track_caller]
    fn new<T>(value: T) -> Result<Self::Lock<T>> {
        backend::sync::Lock::new(value, backend::sync::Kind::WaitLock)
    }

    #[track_caller]
    fn lock<T>(lock: &Self::Lock<T>) -> Self::Guard<'_, T> {
        lock.lock()
    }

    fn get_mut<T>(lock: &mut Self::Lock<T>) -> &mut T {
        lock.get_mut()
    }

    fn into_inner<T>(lock: Self::Lock<T>) -> T {
        lock.into_inner()
    }
}

/// A lock guarding a `T`, of the kind its [`Backend`] says: use [`SpinLock`] or
/// [`WaitLock`].
pub struct Lock<T, B: Backend> {
    inner: B::Lock<T>,
}

/// A spin lock (`WDFSPINLOCK`) guarding a `T`.
///
/// [`lock`](Lock::lock) raises the thread to `DISPATCH_LEVEL` until the guard is dropped
/// (until the last spin lock the thread holds is released). Keep the critical section
/// short and do not wait in it: no [`WaitLock`], no flushing a work item.
pub type SpinLock<T> = Lock<T, SpinLockBackend>;

/// A wait lock (`WDFWAITLOCK`) guarding a `T`: a mutex whose holder may wait.
///
/// Acquire it at `PASSIVE_LEVEL` or `APC_LEVEL` only, never while holding a [`SpinLock`].
pub type WaitLock<T> = Lock<T, WaitLockBackend>;

/// Holds a [`SpinLock`]; releases it (`WdfSpinLockRelease`) when dropped. Not `Send`.
pub type SpinLockGuard<'a, T> = Guard<'a, T, SpinLockBackend>;

/// Holds a [`WaitLock`]; releases it (`WdfWaitLockRelease`) when dropped. Not `Send`.
pub type WaitLockGuard<'a, T> = Guard<'a, T, WaitLockBackend>;

impl<T, B: Backend> Lock<T, B> {
    /// Creates the lock (`WdfSpinLockCreate` or `WdfWaitLockCreate`, parented to the driver;
    /// deleted when the lock is dropped, unless the driver is unloading: then the framework
    /// deletes it with the driver). The caller's location is the lock's class for the host
    /// runtime's lock-order checks.
    ///
    /// # Errors
    ///
    /// The framework's failure to create the lock, `STATUS_INSUFFICIENT_RESOURCES`.
    #[track_caller]
    pub fn new(value: T) -> Result<Self> {
        Ok(Self { inner: B::new(value)? })
    }

    /// Acquires the lock (`WdfSpinLockAcquire`, or `WdfWaitLockAcquire` without timeout),
    /// spinning or waiting until it is free.
    ///
    /// # Panics
    ///
    /// For a [`WaitLock`], when called above `APC_LEVEL` (while holding a [`SpinLock`]), on
    /// both backends: `WdfWaitLockAcquire` would bug check there. The calls that wait and
    /// return a [`Result`] anyway (`WorkItem::flush`, `Timer::stop`) return an error
    /// instead; a lock has no error to return but this bug, so it panics (in the kernel,
    /// `wdk-panic` makes that a bug check that names the mistake).
    ///
    /// On the host runtime also when the thread already holds this lock (it would spin or
    /// wait forever; KMDF's verifier breaks with `WDF_RECURSIVE_LOCK`), or when taking it
    /// inverts a lock order seen before (a potential deadlock, see the
    /// [module docs](self)). The message names the lock, the driver callback and, for an
    /// inversion, both orders.
    #[track_caller]
    pub fn lock(&self) -> Guard<'_, T, B> {
        Guard { inner: B::lock(&self.inner), _not_send: PhantomData }
    }

    /// The value, through exclusive access: no locking needed.
    pub fn get_mut(&mut self) -> &mut T {
        B::get_mut(&mut self.inner)
    }

    /// Consumes the lock and returns the value.
    pub fn into_inner(self) -> T {
        B::into_inner(self.inner)
    }
}

impl<T> WaitLock<T> {
    /// Acquires the lock only if it is free (`WdfWaitLockAcquire` with a zero timeout);
    /// usable at `DISPATCH_LEVEL`.
    ///
    /// Returns `None` when the lock is held, also by the calling thread itself: like
    /// `WdfWaitLockAcquire` with a zero timeout, which then times out, this is not treated
    /// as a recursive acquisition and never panics. A lock taken this way counts as held
    /// for the host runtime's lock-order checks.
    #[track_caller]
    pub fn try_lock(&self) -> Option<WaitLockGuard<'_, T>> {
        self.inner.try_lock().map(|inner| Guard { inner, _not_send: PhantomData })
    }
}

impl<T, B: Backend> fmt::Debug for Lock<T, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(B::NAME).finish_non_exhaustive()
    }
}

/// Holds a [`Lock`]; releases it when dropped. Not `Send`: a lock is released on the thread
/// (and at the IRQL) it was acquired on.
pub struct Guard<'a, T: 'a, B: Backend> {
    inner: B::Guard<'a, T>,
    _not_send: PhantomData<*const ()>,
}

impl<'a, T: 'a, B: Backend> Deref for Guard<'a, T, B> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<'a, T: 'a, B: Backend> DerefMut for Guard<'a, T, B> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<'a, T: fmt::Debug + 'a, B: Backend> fmt::Debug for Guard<'a, T, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
