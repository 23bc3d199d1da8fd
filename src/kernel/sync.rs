//! `WDFSPINLOCK` and `WDFWAITLOCK` guarding a value, and the IRQL.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr;

use wdk_sys::{WDFOBJECT, WDFSPINLOCK, WDFWAITLOCK, call_unsafe_wdf_function_binding};

use crate::sync::Irql;
use crate::{NtStatus, Result};

/// `KeGetCurrentIrql`, inline as the WDK's own for x64: the IRQL is CR8.
#[cfg(target_arch = "x86_64")]
pub(crate) fn current_irql() -> Irql {
    let irql: u64;
    // SAFETY: reading CR8, the task-priority register that holds the IRQL on x64, is allowed
    // at CPL 0, where all kernel-mode driver code runs, and has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr8", out(reg) irql, options(nomem, nostack, preserves_flags));
    }
    Irql::from_raw(u8::try_from(irql).unwrap_or(u8::MAX))
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn current_irql() -> Irql {
    // SAFETY: `KeGetCurrentIrql` reads the current processor's IRQL; callable at any IRQL.
    Irql::from_raw(unsafe { wdk_sys::ntddk::KeGetCurrentIrql() })
}

fn delete(object: WDFOBJECT) {
    // SAFETY: called once per lock, when its owner is dropped or consumed, for a lock this
    // module created.
    unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, object) };
}

/// # Invariants
///
/// `lock` is a live `WDFSPINLOCK` owned by this value, deleted in `Drop`.
pub(crate) struct SpinLock<T> {
    lock: WDFSPINLOCK,
    value: UnsafeCell<T>,
}

// SAFETY: the lock handle may be used from any thread, and the value is only reached through
// the lock (or `&mut self`), so sending or sharing the lock is as safe as for `T: Send`.
unsafe impl<T: Send> Send for SpinLock<T> {}
// SAFETY: as above: shared access to the value is serialized by the spin lock.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> Result<Self> {
        let mut lock: WDFSPINLOCK = ptr::null_mut();
        // SAFETY: no attributes (the driver is the parent); `lock` receives the handle.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(WdfSpinLockCreate, ptr::null_mut(), &raw mut lock)
        };
        NtStatus::from_raw(status).ok()?;
        // INVARIANT: created above and owned from here on.
        Ok(Self { lock, value: UnsafeCell::new(value) })
    }

    pub(crate) fn lock(&self) -> SpinLockGuard<'_, T> {
        // SAFETY: `self.lock` is live (type invariant).
        unsafe { call_unsafe_wdf_function_binding!(WdfSpinLockAcquire, self.lock) };
        SpinLockGuard { lock: self, _not_send: PhantomData }
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    pub(crate) fn into_inner(self) -> T {
        let this = core::mem::ManuallyDrop::new(self);
        delete(this.lock.cast());
        // SAFETY: `this` is never used or dropped again, so the value is moved out once.
        unsafe { ptr::read(this.value.get()) }
    }
}

impl<T> Drop for SpinLock<T> {
    fn drop(&mut self) {
        delete(self.lock.cast());
    }
}

pub(crate) struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` makes this the only reference.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard acquired the lock on this thread; the lock is live.
        unsafe { call_unsafe_wdf_function_binding!(WdfSpinLockRelease, self.lock.lock) };
    }
}

/// # Invariants
///
/// `lock` is a live `WDFWAITLOCK` owned by this value, deleted in `Drop`.
pub(crate) struct WaitLock<T> {
    lock: WDFWAITLOCK,
    value: UnsafeCell<T>,
}

// SAFETY: as for `SpinLock`: the value is only reached through the lock.
unsafe impl<T: Send> Send for WaitLock<T> {}
// SAFETY: as for `SpinLock`.
unsafe impl<T: Send> Sync for WaitLock<T> {}

impl<T> WaitLock<T> {
    pub(crate) fn new(value: T) -> Result<Self> {
        let mut lock: WDFWAITLOCK = ptr::null_mut();
        // SAFETY: no attributes (the driver is the parent); `lock` receives the handle.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(WdfWaitLockCreate, ptr::null_mut(), &raw mut lock)
        };
        NtStatus::from_raw(status).ok()?;
        // INVARIANT: created above and owned from here on.
        Ok(Self { lock, value: UnsafeCell::new(value) })
    }

    pub(crate) fn lock(&self) -> WaitLockGuard<'_, T> {
        // The same rule as the host runtime's, checked before KMDF would bug check inside
        // WdfWaitLockAcquire (IRQL_NOT_LESS_OR_EQUAL, or the verifier's WDF_VIOLATION): a
        // panic names the caller's mistake (wdk-panic turns it into a bug check too).
        let irql = current_irql();
        assert!(
            irql <= Irql::Apc,
            "WaitLock::lock at {irql:?}: WdfWaitLockAcquire waits, so it must be called at \
             PASSIVE_LEVEL or APC_LEVEL (is a SpinLock held?)"
        );
        // SAFETY: the lock is live; a NULL timeout waits until it is acquired.
        let acquired = unsafe {
            call_unsafe_wdf_function_binding!(WdfWaitLockAcquire, self.lock, ptr::null_mut())
        };
        // Without a timeout the only outcome is STATUS_SUCCESS.
        debug_assert_eq!(acquired, NtStatus::SUCCESS.to_raw());
        WaitLockGuard { lock: self, _not_send: PhantomData }
    }

    pub(crate) fn try_lock(&self) -> Option<WaitLockGuard<'_, T>> {
        let mut timeout: i64 = 0;
        // SAFETY: the lock is live; a zero timeout returns STATUS_TIMEOUT instead of waiting.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(WdfWaitLockAcquire, self.lock, &raw mut timeout)
        };
        (status == NtStatus::SUCCESS.to_raw())
            .then_some(WaitLockGuard { lock: self, _not_send: PhantomData })
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    pub(crate) fn into_inner(self) -> T {
        let this = core::mem::ManuallyDrop::new(self);
        delete(this.lock.cast());
        // SAFETY: `this` is never used or dropped again, so the value is moved out once.
        unsafe { ptr::read(this.value.get()) }
    }
}

impl<T> Drop for WaitLock<T> {
    fn drop(&mut self) {
        delete(self.lock.cast());
    }
}

pub(crate) struct WaitLockGuard<'a, T> {
    lock: &'a WaitLock<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for WaitLockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for WaitLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` makes this the only reference.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for WaitLockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard acquired the lock on this thread; the lock is live.
        unsafe { call_unsafe_wdf_function_binding!(WdfWaitLockRelease, self.lock.lock) };
    }
}
