//! Timers: `WdfTimerCreate`, `Start`, `Stop`, `WdfObjectDelete`, and the `EvtTimerFunc` and
//! `EvtCleanupCallback` trampolines.
//!
//! The callback runs at `DISPATCH_LEVEL` (a DPC), so a `stop_and_wait()` from it is refused by
//! the IRQL check before KMDF could wait for itself, and a delete from it is deferred by
//! KMDF to a passive-level worker that stops the timer and waits for the callback
//! (`FxTimer::FlushAndRundown`) before the cleanup callback.

use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use wdk_sys::{WDF_TIMER_CONFIG, WDFOBJECT, WDFTIMER, call_unsafe_wdf_function_binding};

use super::object::{RawRef, view_handle};
use super::sync::current_irql;
use super::{attributes_for, context as slot_context, struct_size, try_context, write_context};
use crate::object::{ObjectRef, sealed::Handle as _};
use crate::sync::Irql;
use crate::{Callback, NtError, NtStatus, Result, Timer, TimerCallbacks};

/// The context of a timer created by `kmdf`: whether its deletion started, then the
/// driver's `T`.
///
/// Reached from the handle (`WdfObjectGetTypedContextWorker`), never through the
/// `&Timer<T>`, which is a zero-sized handle value ([`RawObject`](super::RawObject)'s
/// invariant): the atomic is written through the pointer KMDF returns.
pub(crate) struct TimerContext<T> {
    deleted: AtomicBool,
    value: T,
}

fn timer_context<T: TimerCallbacks>(timer: &Timer<T>) -> &TimerContext<T> {
    // SAFETY: a `&Timer<T>` only exists for a timer created by `create::<T>`, whose context
    // was written before the handle was handed out, and which is alive for the borrow.
    unsafe { slot_context(timer.raw.handle()) }
}

/// One more reference on the timer (`ObjectRef::from(&timer)`): `&Timer<T>` is its handle.
pub(crate) fn new_ref<T>(timer: &Timer<T>) -> RawRef {
    RawRef::new(timer)
}

pub(crate) fn context<T: TimerCallbacks>(timer: &Timer<T>) -> &T {
    &timer_context(timer).value
}

fn handle<T>(timer: &Timer<T>) -> WDFTIMER {
    timer.raw.handle().cast()
}

pub(crate) fn create<T: TimerCallbacks>(
    parent: &T::Parent,
    period_ms: u32,
    context: T,
) -> Result<ObjectRef<Timer<T>>> {
    // WDF_TIMER_CONFIG_INIT / _INIT_PERIODIC: the size, the callback, the period,
    // AutomaticSerialization = TRUE, no tolerable delay, no high-resolution timer.
    let mut config = WDF_TIMER_CONFIG {
        Size: struct_size::<WDF_TIMER_CONFIG>(),
        EvtTimerFunc: Some(run::<T>),
        Period: period_ms,
        AutomaticSerialization: 1,
        TolerableDelay: 0,
        __bindgen_padding_0: [0; 4],
        UseHighResolutionTimer: 0,
    };
    let mut attributes =
        attributes_for::<TimerContext<T>>(Some(cleanup::<T>), parent.raw().handle());
    let mut timer: WDFTIMER = ptr::null_mut();
    // SAFETY: the structures are initialized as their `_INIT` functions do and outlive the
    // call; the parent is live (borrowed); `timer` receives the handle.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfTimerCreate,
            &raw mut config,
            &raw mut attributes,
            &raw mut timer,
        )
    };
    NtStatus::from_raw(status).ok()?;
    // SAFETY: created just above with `attributes_for::<TimerContext<T>>`; it cannot fire
    // before it is started, which needs the reference returned below, and the parent cannot
    // dispose it first: timers, like work items, are created only from code the parent's
    // deletion waits for.
    unsafe {
        write_context(
            timer.cast(),
            TimerContext { deleted: AtomicBool::new(false), value: context },
        );
    }
    // SAFETY: as above: a live timer created with `T`.
    let timer: &Timer<T> = unsafe { view_handle(timer.cast()) };
    Ok(ObjectRef::from_raw(RawRef::new(timer)))
}

/// `EvtTimerFunc`.
unsafe extern "C" fn run<T: TimerCallbacks>(handle: WDFTIMER) {
    // SAFETY: KMDF calls the callback registered by `create::<T>` with that timer, alive for
    // the call.
    let timer: &Timer<T> = unsafe { view_handle(handle.cast()) };
    // SAFETY: the timer is live (above).
    let parent = unsafe { call_unsafe_wdf_function_binding!(WdfTimerGetParentObject, handle) };
    // SAFETY: the parent is the `T::Parent` given to `create::<T>`. KMDF keeps its reference
    // on it until the timer's rundown, which stops the timer and waits for this callback
    // (`FxTimer::FlushAndRundown`) before releasing it.
    let parent: &T::Parent = unsafe { view_handle(parent) };
    timer_context(timer).value.run(timer, parent);
}

/// The timer's `EvtCleanupCallback`, always registered: it marks the timer deleted, then
/// calls the driver's `cleanup` if `T` implements it.
unsafe extern "C" fn cleanup<T: TimerCallbacks>(object: WDFOBJECT) {
    // SAFETY: registered by `create::<T>` for that timer, alive for the call.
    let timer: &Timer<T> = unsafe { view_handle(object) };
    // SAFETY: as above; `None` if the timer is disposed before `create` wrote its context.
    let Some(context) = (unsafe { try_context::<TimerContext<T>>(object) }) else {
        return;
    };
    context.deleted.store(true, Ordering::SeqCst);
    if T::REGISTERED.contains(Callback::ObjectCleanup) {
        context.value.cleanup(timer);
    }
}

pub(crate) fn start<T: TimerCallbacks>(timer: &Timer<T>, due: Duration) -> Result<bool> {
    if timer_context(timer).deleted.load(Ordering::SeqCst) {
        return Err(NtError::DELETE_PENDING);
    }
    // A negative due time is relative, in 100-nanosecond units (WDF_REL_TIMEOUT_IN_US).
    let ticks = i64::try_from(due.as_nanos() / 100).map_err(|_| NtError::INVALID_PARAMETER)?;
    // SAFETY: the timer is live (borrowed); callable at IRQL <= DISPATCH_LEVEL.
    let was_set =
        unsafe { call_unsafe_wdf_function_binding!(WdfTimerStart, handle(timer), -ticks) };
    Ok(was_set != 0)
}

pub(crate) fn stop<T: TimerCallbacks>(timer: &Timer<T>, wait: bool) -> Result<bool> {
    if wait && current_irql() != Irql::Passive {
        return Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
    }
    // SAFETY: the timer is live (borrowed); waiting only at PASSIVE_LEVEL (checked above),
    // where this thread cannot be running the DPC it waits for.
    let was_set =
        unsafe { call_unsafe_wdf_function_binding!(WdfTimerStop, handle(timer), u8::from(wait)) };
    Ok(was_set != 0)
}

pub(crate) fn delete<T: TimerCallbacks>(timer: &Timer<T>) -> Result {
    if timer_context(timer).deleted.swap(true, Ordering::SeqCst) {
        return Err(NtError::DELETE_PENDING);
    }
    // SAFETY: the timer is live (borrowed) and deleted only once (the flag above). At
    // PASSIVE_LEVEL KMDF stops it and waits for a running callback, which this thread is not
    // running (callbacks run at DISPATCH_LEVEL); above it, KMDF defers the disposal.
    unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, timer.raw.handle()) };
    Ok(())
}
