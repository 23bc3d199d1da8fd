//! The host runtime's synchronisation primitives: `std`'s, or [loom](https://docs.rs/loom)'s
//! when built with `--cfg loom`, so that `tests/loom_work_item.rs` checks the code that
//! ships (every interleaving of its threads, up to a preemption bound).
//!
//! Everything the work-item, timer and object code shares between threads goes through
//! here: mutexes, condition variables, the atomics they count with, threads (the worker
//! pool) and thread-locals (a loom thread is not an OS thread, so `std`'s thread-locals
//! would be shared between loom's threads). What stays `std` on purpose: `Arc` (loom's
//! cannot be a method receiver or cyclic), lockdep's process-wide graph (a `static`, held
//! for no loom operation) and its class cache.
//!
//! Under loom, [`mutant`] also injects the deliberately broken variants that the loom test
//! must catch (`KMDF_LOOM_MUTANT` names one); in normal builds it is `false`, a constant.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread;

use super::std;

/// A thread-local: `std::thread_local!` with a `const` initializer, or loom's.
macro_rules! local {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local! { $(#[$attr])* static $name: $t = const { $init }; }
        #[cfg(loom)]
        loom::thread_local! { $(#[$attr])* static $name: $t = $init; }
    };
}
pub(crate) use local;

/// `std`'s `LocalKey` helpers for `Cell` and `RefCell` thread-locals, for loom's `LocalKey`
/// (in normal builds `std`'s own inherent methods are used).
#[cfg(loom)]
pub(crate) trait LocalExt<T> {
    fn get(&'static self) -> T
    where
        T: Copy;
    fn set(&'static self, value: T);
    fn replace(&'static self, value: T) -> T;
}

#[cfg(loom)]
impl<T> LocalExt<T> for loom::thread::LocalKey<std::cell::Cell<T>> {
    fn get(&'static self) -> T
    where
        T: Copy,
    {
        self.with(std::cell::Cell::get)
    }

    fn set(&'static self, value: T) {
        self.with(|cell| cell.set(value));
    }

    fn replace(&'static self, value: T) -> T {
        self.with(|cell| cell.replace(value))
    }
}

#[cfg(loom)]
pub(crate) trait LocalRefExt<T> {
    fn with_borrow<R>(&'static self, f: impl FnOnce(&T) -> R) -> R;
    fn with_borrow_mut<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> R;
}

#[cfg(loom)]
impl<T> LocalRefExt<T> for loom::thread::LocalKey<std::cell::RefCell<T>> {
    fn with_borrow<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        self.with(|cell| f(&cell.borrow()))
    }

    fn with_borrow_mut<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> R {
        self.with(|cell| f(&mut cell.borrow_mut()))
    }
}

/// A deliberate bug the loom test injects, to show that its scenarios catch it.
#[cfg_attr(not(loom), allow(dead_code, reason = "the mutants exist under loom only"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mutant {
    /// `work_item::flush` waits until the item is idle and ignores `idle_epoch`: it no
    /// longer ends at the first idle moment after it started.
    FlushIgnoresIdleEpoch,
    /// `WorkItemState::rundown` does not wait for the queued or running callback.
    RundownDoesNotWait,
    /// One runner per item, like KMDF's `m_WorkItemThread`: a run forgets the one before.
    SingleRunner,
    /// `run_job` does not complete a deletion left to the last run (`dispose_when_idle`).
    NoDisposeWhenIdle,
    /// `RawObject::delete` returns at once when another thread is disposing the object.
    DeleteDoesNotWaitForDisposal,
    /// A rundown inside the item's callback does not wait for the runs other threads have
    /// started.
    RundownIgnoresOtherRuns,
    /// `IoPackage::mark_cancelable` checks whether the request was cancelled and makes it
    /// cancelable under two acquisitions of the package's lock, not one: a cancellation in
    /// between is lost.
    MarkCancelableInTwoSteps,
}

/// Whether `mutant` is injected: never in normal builds.
#[cfg(not(loom))]
#[inline]
pub(crate) const fn mutant(_mutant: Mutant) -> bool {
    false
}

/// Whether `mutant` is injected: named by `KMDF_LOOM_MUTANT` (its `Debug` name).
#[cfg(loom)]
pub(crate) fn mutant(mutant: Mutant) -> bool {
    static NAMED: std::sync::OnceLock<Option<std::string::String>> = std::sync::OnceLock::new();
    NAMED
        .get_or_init(|| std::env::var("KMDF_LOOM_MUTANT").ok())
        .as_deref()
        .is_some_and(|named| named == std::format!("{mutant:?}"))
}
