//! Which runtime, and which device, the calling thread is running a driver callback for.
//!
//! Driver code reaches a few framework services without a handle: `DbgPrintEx`, the
//! system time (`KeQueryInterruptTime`). In the kernel they are global; on the host each
//! [`Runtime`](super::Runtime) is a machine of its own, so these services find theirs
//! through the callback the thread is running: the runtime enters it at the callback
//! boundary ([`Shared::guarded`](super::object::Shared)) and leaves it when the callback
//! returns.

use super::std;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::vec::Vec;

use super::object::Shared;
#[cfg(loom)]
use super::sync_shim::LocalRefExt as _;
use super::sync_shim::local;

local! {
    /// The callbacks this thread is inside of, innermost last (a cleanup callback can run
    /// inside a work item's callback, for example).
    static CURRENT: RefCell<Vec<(*const Shared, Option<u64>)>> = RefCell::new(Vec::new());
}

/// The thread is inside a callback of a runtime until this is dropped.
///
/// # Invariant
///
/// The entry it pushed points at a `Shared` borrowed for `'a`, and the guard cannot outlive
/// that borrow; it is created and dropped in one stack frame (`Shared::guarded`) and never
/// leaked, so the entry is popped before the `Shared` can go away.
pub(crate) struct Entered<'a> {
    _shared: PhantomData<&'a Shared>,
}

/// Enters a callback of `shared`, for `device` (or driver-wide).
pub(crate) fn enter(shared: &Shared, device: Option<u64>) -> Entered<'_> {
    // INVARIANT: the guard borrows `shared` for as long as the entry stays pushed.
    CURRENT.with_borrow_mut(|stack| stack.push((std::ptr::from_ref(shared), device)));
    Entered { _shared: PhantomData }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        CURRENT.with_borrow_mut(Vec::pop);
    }
}

/// Calls `f` with the runtime and device of the innermost callback the thread is running,
/// or returns `None` outside any callback (the test's own thread, between actions).
pub(crate) fn with<R>(f: impl FnOnce(&Shared, Option<u64>) -> R) -> Option<R> {
    let (shared, device) = CURRENT.with_borrow(|stack| stack.last().copied())?;
    // SAFETY: the entry was pushed by `enter` from a `&Shared` that stays borrowed until the
    // entry is popped (the invariant of `Entered`), and the entry is still on the stack: the
    // `Shared` is alive, and it is only ever accessed through shared references.
    let shared = unsafe { &*shared };
    Some(f(shared, device))
}
