//! Timers: driver code that runs at a given time, once or periodically, at `DISPATCH_LEVEL`.
//!
//! A timer (`WDFTIMER`) is a framework object with a parent, a typed context and a
//! callback. As for [work items](crate::work_item), the context type *is* the work: it
//! implements [`TimerCallbacks`] through [`vtable!`](crate::vtable), and
//! [`run`](TimerCallbacks::run) gets the context as `&self`, the timer and the parent device.
//! [`Timer::one_shot`] and [`Timer::periodic`] return an [`ObjectRef`] the driver keeps to [`start`](Timer::start)
//! and [`stop`](Timer::stop) the timer.
//!
//! The callback runs at `DISPATCH_LEVEL` (a DPC, KMDF's default execution level): it may
//! take a [`SpinLock`](crate::sync::SpinLock) and enqueue a work item, but not wait. The
//! usual pattern is a periodic timer that hands the real work to a work item:
//!
//! ```
//! use core::time::Duration;
//! use kmdf::object::ObjectRef;
//! use kmdf::sync::SpinLock;
//! use kmdf::{Device, DeviceInit, PnpPowerCallbacks, Result, Timer, TimerCallbacks};
//!
//! struct Sensor {
//!     poll: ObjectRef<Timer<Tick>>,
//!     ticks: SpinLock<u64>,
//! }
//!
//! fn device_add(init: DeviceInit<'_>) -> Result {
//!     init.create_with(|device| {
//!         let poll = Timer::periodic(device, Duration::from_millis(10), Tick)?;
//!         Ok(Sensor { poll, ticks: SpinLock::new(0)? })
//!     })?;
//!     Ok(())
//! }
//!
//! struct Tick;
//!
//! kmdf::vtable! {
//!     impl TimerCallbacks for Tick {
//!         type Parent = Device<Sensor>;
//!
//!         fn run(&self, _timer: &Timer<Self>, sensor: &Device<Sensor>) {
//!             *sensor.context().ticks.lock() += 1;
//!         }
//!     }
//! }
//!
//! kmdf::vtable! {
//!     impl PnpPowerCallbacks for Sensor {
//!         fn self_managed_io_init(&self, _device: &Device<Self>) -> Result {
//!             self.poll.start(Duration::from_millis(10))?;
//!             Ok(())
//!         }
//!
//!         fn self_managed_io_suspend(&self, _device: &Device<Self>) -> Result {
//!             // Waits for a running tick: PASSIVE_LEVEL only.
//!             self.poll.stop_and_wait()?;
//!             Ok(())
//!         }
//!     }
//! }
//! ```
//!
//! On the host runtime, time is virtual: timers fire when the test (or the sample runner)
//! advances the runtime's clock with `Runtime::advance`, in due-time order, each run traced
//! as `EvtTimerFunc`, and the work an expiry hands to work items finishes before the next
//! expiry fires. Tests are deterministic and never sleep.
//!
//! # The rules (KMDF's `FxTimer`)
//!
//! * **Start** (`WdfTimerStart`) sets the timer to fire after `due`, replacing an earlier
//!   setting; it tells whether the timer was already set. A periodic timer then fires every
//!   period until stopped.
//! * **Stop** (`WdfTimerStop`) cancels the setting and tells whether there was one.
//!   [`stop_and_wait`](Timer::stop_and_wait) also waits for a running callback: only at
//!   `PASSIVE_LEVEL`, so never from the callback itself.
//! * **Deletion**, explicit or with the parent, stops the timer and waits for a running
//!   callback before the timer's `cleanup`; the parent's cleanup comes after.

use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;

use crate::object::{ObjectRef, ParentObject};
use crate::{Result, backend};

/// A framework timer (`WDFTIMER`) whose context is a `T`.
///
/// Used by reference (`&Timer<T>` in its callback) or through an [`ObjectRef`].
#[repr(transparent)]
pub struct Timer<T> {
    pub(crate) raw: backend::RawObject,
    _context: PhantomData<T>,
}

impl<T: TimerCallbacks> Timer<T> {
    /// Creates a one-shot timer (`WdfTimerCreate` with no period) whose parent is `parent`,
    /// with `context` in its context space: it fires once per [`start`](Self::start). The
    /// callback runs at `DISPATCH_LEVEL`; automatic serialization is on, as
    /// `WDF_TIMER_CONFIG_INIT` sets it.
    ///
    /// The caller's location names the timer's class for the host runtime's lock-order
    /// checks (a wait for its callback depends on the locks the callback takes).
    ///
    /// # Errors
    ///
    /// * `STATUS_DELETE_PENDING` when the parent is being deleted;
    /// * `WdfTimerCreate`'s failures, e.g. `STATUS_INSUFFICIENT_RESOURCES`.
    #[track_caller]
    pub fn one_shot(parent: &T::Parent, context: T) -> Result<ObjectRef<Self>> {
        backend::timer::create(parent, 0, context)
    }

    /// Creates a periodic timer (`WDF_TIMER_CONFIG_INIT_PERIODIC`): after each
    /// [`start`](Self::start) it fires at the due time, then every `period` until stopped.
    /// Otherwise as [`one_shot`](Self::one_shot).
    ///
    /// # Errors
    ///
    /// * `STATUS_INVALID_PARAMETER` for a zero period, or one that is not a whole number of
    ///   milliseconds or exceeds KMDF's limit of `MAXLONG` milliseconds (about 24.8 days);
    /// * as [`one_shot`](Self::one_shot).
    #[track_caller]
    pub fn periodic(parent: &T::Parent, period: Duration, context: T) -> Result<ObjectRef<Self>> {
        backend::timer::create(parent, period_millis(period)?, context)
    }

    /// One more counted reference to the timer: [`ObjectRef::from`]`(self)`, for keeping a
    /// timer that a callback got borrowed.
    #[must_use]
    pub fn to_ref(&self) -> ObjectRef<Self> {
        ObjectRef::from(self)
    }

    /// The timer's context: the value given to [`one_shot`](Self::one_shot) or
    /// [`periodic`](Self::periodic).
    #[must_use]
    pub fn context(&self) -> &T {
        backend::timer::context(self)
    }

    /// Sets the timer to fire after `due` (`WdfTimerStart` with a relative due time),
    /// replacing an earlier setting. Callable at `DISPATCH_LEVEL`, from the callback too.
    ///
    /// Returns whether the timer was already set ([`Started::WasSet`]) or not
    /// ([`Started::Set`]).
    ///
    /// # Errors
    ///
    /// `STATUS_DELETE_PENDING` once the timer is being deleted (KMDF would ignore the call);
    /// `STATUS_INVALID_PARAMETER` for a due time KMDF cannot express (over 29,000 years).
    pub fn start(&self, due: Duration) -> Result<Started> {
        let was_set = backend::timer::start(self, due)?;
        Ok(if was_set { Started::WasSet } else { Started::Set })
    }

    /// Cancels the timer (`WdfTimerStop` with `Wait = FALSE`): a callback already running
    /// goes on. Callable at `IRQL <= DISPATCH_LEVEL`, from the callback too.
    ///
    /// Returns whether the timer was set (and so is now cancelled).
    ///
    /// # Errors
    ///
    /// None today; a `Result` like its siblings.
    pub fn stop(&self) -> Result<Stopped> {
        backend::timer::stop(self, false).map(Stopped::from_was_set)
    }

    /// Cancels the timer and waits until a callback that is running has returned
    /// (`WdfTimerStop` with `Wait = TRUE`). `PASSIVE_LEVEL` only.
    ///
    /// Returns whether the timer was set (and so is now cancelled).
    ///
    /// # Errors
    ///
    /// `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL` above `PASSIVE_LEVEL` (from the timer's own
    /// callback, or while a spin lock is held), where KMDF would wait forever.
    ///
    /// # Panics
    ///
    /// On the host runtime, when the thread holds a lock that the timer's callback was seen
    /// to take (a potential deadlock, reported by the lock-order checks of
    /// [`sync`](crate::sync)). (A callback at `DISPATCH_LEVEL` only takes spin locks, and a
    /// waiting thread cannot hold one, so this matters for passive-level callbacks.)
    #[track_caller]
    pub fn stop_and_wait(&self) -> Result<Stopped> {
        backend::timer::stop(self, true).map(Stopped::from_was_set)
    }

    /// Deletes the timer (`WdfObjectDelete`): stops it and, at `PASSIVE_LEVEL`, waits for a
    /// running callback, then runs the timer's cleanup. From the callback itself (at
    /// `DISPATCH_LEVEL`) it returns at once and the deletion completes on a worker thread.
    ///
    /// # Errors
    ///
    /// `STATUS_DELETE_PENDING` when the timer is already being deleted.
    ///
    /// # Panics
    ///
    /// On the host runtime, at `PASSIVE_LEVEL`, as [`stop_and_wait`](Self::stop_and_wait).
    #[track_caller]
    pub fn delete(&self) -> Result {
        backend::timer::delete(self)
    }
}

/// What [`Timer::start`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Started {
    /// The timer was not set; now it is.
    Set,
    /// The timer was set already; the new due time replaced the old one.
    WasSet,
}

/// What [`Timer::stop`] and [`Timer::stop_and_wait`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stopped {
    /// The timer was set; the setting is cancelled.
    Cancelled,
    /// The timer was not set (it had fired, or was never started).
    NotSet,
}

impl Stopped {
    fn from_was_set(was_set: bool) -> Self {
        if was_set { Stopped::Cancelled } else { Stopped::NotSet }
    }
}

impl<T> fmt::Debug for Timer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timer<{}>({:?})", core::any::type_name::<T>(), self.raw)
    }
}

/// A timer's context and callbacks, implemented through [`vtable!`](crate::vtable).
pub trait TimerCallbacks: Sized + Send + Sync + 'static {
    /// Which methods the impl block wrote: the callbacks registered for this type.
    ///
    /// Written by [`vtable!`](crate::vtable), the only way to implement this trait. Not part
    /// of the public API.
    #[doc(hidden)]
    const REGISTERED: crate::callback::vtable::TimerCallbacks;

    /// The parent object's type: a device.
    type Parent: ParentObject;

    /// `EvtTimerFunc`: the timer fired. Runs at `DISPATCH_LEVEL`: no waiting (no
    /// [`WaitLock::lock`](crate::sync::WaitLock::lock), no work-item flush), but spin locks
    /// and work-item enqueues are fine. `parent` is alive for the call.
    fn run(&self, timer: &Timer<Self>, parent: &Self::Parent);

    /// `EvtCleanupCallback` of the timer: it is being deleted and will not fire again.
    fn cleanup(&self, _timer: &Timer<Self>) {}
}

/// KMDF's `Period` is a `ULONG` of milliseconds, at most `MAXLONG` (`WdfTimerCreate` in
/// `fxtimerapi.cpp` refuses more with `STATUS_INVALID_PARAMETER`).
fn period_millis(period: Duration) -> Result<u32> {
    const MAXLONG: u32 = i32::MAX.unsigned_abs();
    let whole_millis = period.subsec_nanos().is_multiple_of(1_000_000);
    match u32::try_from(period.as_millis()) {
        Ok(millis) if millis > 0 && millis <= MAXLONG && whole_millis => Ok(millis),
        _ => Err(crate::NtError::INVALID_PARAMETER),
    }
}
