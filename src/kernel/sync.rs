//! `WDFSPINLOCK` and `WDFWAITLOCK` guarding a value, and the IRQL.
//!
//! One [`Lock`] serves both kinds (the facade's `SpinLockBackend` and `WaitLockBackend`
//! pick the kind). The kernel rules it meets:
//!
//! * **No framework call before `WdfDriverCreate`.** A lock is created with
//!   `WdfSpinLockCreate`/`WdfWaitLockCreate`, parented to the driver; `DriverEntry`
//!   (`entry::driver_entry`) creates the `WDFDRIVER` before it calls the driver's
//!   `driver_entry`, so a lock in the driver value is created after it.
//! * **No lock deleted twice.** Dropping a lock deletes it (`WdfObjectDelete`), except once
//!   the driver unloads ([`driver_unloading`], called by `EvtDriverUnload`): the framework
//!   then deletes every child of the driver, the locks included, before it destroys the
//!   driver's context, where the driver value (and any lock in it) is dropped. A lock
//!   dropped after that point is left to the framework, which deletes (or has deleted) it.
//! * **Guards released in any order.** `WdfSpinLockAcquire` restores, on release, the IRQL
//!   it raised from, so releasing an outer lock before an inner one would lower the
//!   processor to `PASSIVE_LEVEL` while it still holds a spin lock. Here the first spin lock
//!   a processor takes raises it to `DISPATCH_LEVEL` itself and remembers the level it came
//!   from, every `WdfSpinLockAcquire` then runs at `DISPATCH_LEVEL` (and restores just that),
//!   and the processor goes back to the remembered level when the last spin lock it holds
//!   is released, whichever that is. The count is kept per processor: a thread at
//!   `DISPATCH_LEVEL` is never rescheduled, so the processor stands for the thread from the
//!   first acquisition to the last release.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use wdk_sys::{WDFOBJECT, WDFSPINLOCK, WDFWAITLOCK, call_unsafe_wdf_function_binding};

use crate::sync::Irql;
use crate::{NtStatus, Result};

#[cfg(not(target_arch = "x86_64"))]
compile_error!("kmdf: the kernel backend's IRQL handling (CR8) is written for x86_64 only");

/// `KeGetCurrentIrql`, inline as the WDK's own for x64: the IRQL is CR8.
pub(crate) fn current_irql() -> Irql {
    let irql: u64;
    // SAFETY: reading CR8, the task-priority register that holds the IRQL on x64, is allowed
    // at CPL 0, where all kernel-mode driver code runs, and has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr8", out(reg) irql, options(nomem, nostack, preserves_flags));
    }
    Irql::from_raw(u8::try_from(irql).unwrap_or(u8::MAX))
}

/// `KeRaiseIrqlToDpcLevel` and `KeLowerIrql`, inline as the WDK's own for x64: a write of
/// CR8. Only called to raise from below `DISPATCH_LEVEL`, or to lower back to that level.
fn set_irql(irql: Irql) {
    let raw = u64::from(irql.to_raw());
    // SAFETY: writing CR8 is how the WDK's x64 headers raise and lower the IRQL (CPL 0, where
    // driver code runs); the callers only raise to DISPATCH_LEVEL or lower back to the level
    // a matching raise came from, as KeLowerIrql's contract asks.
    unsafe {
        core::arch::asm!("mov cr8, {}", in(reg) raw, options(nomem, nostack, preserves_flags));
    }
}

/// Set once the driver unloads: from then on the framework deletes the locks, children of
/// the driver object, and dropping one deletes nothing (see the module docs).
static DRIVER_UNLOADING: AtomicBool = AtomicBool::new(false);

/// Called by `EvtDriverUnload`, before the driver's own `unload`.
pub(crate) fn driver_unloading() {
    DRIVER_UNLOADING.store(true, Ordering::Release);
}

/// The most processors Windows runs on (`KeQueryMaximumProcessorCountEx` stays below).
const MAX_PROCESSORS: usize = 2048;

/// The spin locks one processor holds, and the IRQL the first of them raised it from. Only
/// touched by that processor, at `DISPATCH_LEVEL` (so never concurrently; atomics only to
/// keep this free of `unsafe`).
struct Processor {
    held: AtomicU32,
    raised_from: AtomicU8,
}

static PROCESSORS: [Processor; MAX_PROCESSORS] =
    [const { Processor { held: AtomicU32::new(0), raised_from: AtomicU8::new(0) } };
        MAX_PROCESSORS];

/// The processor the thread runs on; stable while it is at `DISPATCH_LEVEL`.
fn this_processor() -> &'static Processor {
    // SAFETY: `KeGetCurrentProcessorNumberEx` may be called at any IRQL; a NULL argument
    // asks for the system-wide index only.
    let index = unsafe { wdk_sys::ntddk::KeGetCurrentProcessorNumberEx(ptr::null_mut()) };
    &PROCESSORS[index as usize]
}

/// Before a spin lock is acquired: raises to `DISPATCH_LEVEL` if the processor is below.
fn enter_spin() {
    let irql = current_irql();
    assert!(
        irql <= Irql::Dispatch,
        "SpinLock::lock at {irql:?}: WdfSpinLockAcquire must be called at DISPATCH_LEVEL or below"
    );
    if irql < Irql::Dispatch {
        set_irql(Irql::Dispatch);
    }
    let processor = this_processor();
    let held = processor.held.load(Ordering::Relaxed);
    if held == 0 {
        processor.raised_from.store(irql.to_raw(), Ordering::Relaxed);
    }
    processor.held.store(held + 1, Ordering::Relaxed);
}

/// After a spin lock is released: the last one lowers the processor back.
fn leave_spin() {
    let processor = this_processor();
    let held = processor.held.load(Ordering::Relaxed) - 1;
    processor.held.store(held, Ordering::Relaxed);
    if held == 0 {
        let raised_from = Irql::from_raw(processor.raised_from.load(Ordering::Relaxed));
        if raised_from < Irql::Dispatch {
            set_irql(raised_from);
        }
    }
}

/// Which framework object a [`Lock`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    SpinLock,
    WaitLock,
}

/// A `WDFSPINLOCK` or a `WDFWAITLOCK` guarding a `T`.
///
/// # Invariants
///
/// `handle` is a live lock object of `kind`, created by this value; deleted in `Drop` unless
/// the framework deletes it (the driver unloads).
pub struct Lock<T> {
    handle: WDFOBJECT,
    kind: Kind,
    value: UnsafeCell<T>,
}

// SAFETY: the lock handle may be used from any thread, and the value is only reached through
// the lock (or `&mut self`), so sending or sharing the lock is as safe as for `T: Send`.
unsafe impl<T: Send> Send for Lock<T> {}
// SAFETY: as above: shared access to the value is serialized by the lock.
unsafe impl<T: Send> Sync for Lock<T> {}

impl<T> Lock<T> {
    pub(crate) fn new(value: T, kind: Kind) -> Result<Self> {
        let mut handle: WDFOBJECT = ptr::null_mut();
        let status = match kind {
            Kind::SpinLock => {
                let handle: *mut WDFOBJECT = &raw mut handle;
                // SAFETY: no attributes (the driver is the parent; it exists, see the module
                // docs); `handle` receives the new lock's handle.
                unsafe {
                    call_unsafe_wdf_function_binding!(
                        WdfSpinLockCreate,
                        ptr::null_mut(),
                        handle.cast::<WDFSPINLOCK>()
                    )
                }
            }
            Kind::WaitLock => {
                let handle: *mut WDFOBJECT = &raw mut handle;
                // SAFETY: as above, for a wait lock.
                unsafe {
                    call_unsafe_wdf_function_binding!(
                        WdfWaitLockCreate,
                        ptr::null_mut(),
                        handle.cast::<WDFWAITLOCK>()
                    )
                }
            }
        };
        NtStatus::from_raw(status).ok()?;
        // INVARIANT: created above and owned from here on.
        Ok(Self { handle, kind, value: UnsafeCell::new(value) })
    }

    pub(crate) fn lock(&self) -> Guard<'_, T> {
        match self.kind {
            Kind::SpinLock => {
                enter_spin();
                let handle: WDFSPINLOCK = self.handle.cast();
                // SAFETY: the lock is live (type invariant); the processor is at
                // DISPATCH_LEVEL, so the acquisition saves and later restores just that.
                unsafe { call_unsafe_wdf_function_binding!(WdfSpinLockAcquire, handle) };
            }
            Kind::WaitLock => {
                // The same rule as the host runtime's, checked before KMDF would bug check
                // inside WdfWaitLockAcquire (IRQL_NOT_LESS_OR_EQUAL, or the verifier's
                // WDF_VIOLATION): a panic names the caller's mistake (wdk-panic turns it
                // into a bug check too).
                let irql = current_irql();
                assert!(
                    irql <= Irql::Apc,
                    "WaitLock::lock at {irql:?}: WdfWaitLockAcquire waits, so it must be called \
                     at PASSIVE_LEVEL or APC_LEVEL (is a SpinLock held?)"
                );
                // SAFETY: the lock is live; a NULL timeout waits until it is acquired.
                let acquired = unsafe {
                    call_unsafe_wdf_function_binding!(
                        WdfWaitLockAcquire,
                        self.handle.cast(),
                        ptr::null_mut()
                    )
                };
                // Without a timeout the only outcome is STATUS_SUCCESS.
                debug_assert_eq!(acquired, NtStatus::SUCCESS.to_raw());
            }
        }
        Guard { lock: self, _not_send: PhantomData }
    }

    /// A wait lock's try-lock (`WdfWaitLockAcquire` with a zero timeout).
    pub(crate) fn try_lock(&self) -> Option<Guard<'_, T>> {
        debug_assert_eq!(self.kind, Kind::WaitLock, "only wait locks have a try-lock");
        let mut timeout: i64 = 0;
        // SAFETY: the lock is live; a zero timeout returns STATUS_TIMEOUT instead of waiting.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfWaitLockAcquire,
                self.handle.cast(),
                &raw mut timeout
            )
        };
        (status == NtStatus::SUCCESS.to_raw())
            .then_some(Guard { lock: self, _not_send: PhantomData })
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    pub(crate) fn into_inner(self) -> T {
        let this = core::mem::ManuallyDrop::new(self);
        this.delete();
        // SAFETY: `this` is never used or dropped again, so the value is moved out once.
        unsafe { ptr::read(this.value.get()) }
    }

    /// Deletes the lock object, unless the framework does (see the module docs).
    fn delete(&self) {
        if DRIVER_UNLOADING.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: called once per lock, when it is dropped or consumed; the driver, its
        // parent, has not started unloading, so the framework has not deleted it.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, self.handle) };
    }
}

impl<T> Drop for Lock<T> {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Holds a [`Lock`]; releases it when dropped.
pub struct Guard<'a, T> {
    lock: &'a Lock<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` makes this the only reference.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        match self.lock.kind {
            Kind::SpinLock => {
                // SAFETY: this guard acquired the lock on this thread; the lock is live. The
                // processor is at DISPATCH_LEVEL, which the release restores.
                unsafe {
                    call_unsafe_wdf_function_binding!(WdfSpinLockRelease, self.lock.handle.cast());
                }
                leave_spin();
            }
            Kind::WaitLock => {
                // SAFETY: this guard acquired the lock on this thread; the lock is live.
                unsafe {
                    call_unsafe_wdf_function_binding!(WdfWaitLockRelease, self.lock.handle.cast());
                }
            }
        }
    }
}
