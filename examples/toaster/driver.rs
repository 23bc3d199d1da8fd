//! The toaster function driver, in the spirit of KMDF's toaster sample
//! (`general/toaster/toastDrv/kmdf/func/featured`) and of toastmon's query-remove handling.
//!
//! One source for both backends: `cargo run --example toaster` runs it on the host runtime,
//! and `examples/toaster/kmdf-driver` builds it as a KMDF driver with the WDK.
//!
//! The toaster keeps its own requests: an application asks for toast
//! ([`Toaster::submit`]), and the request stays pending, owned by the driver, until the
//! heating element has toasted it for [`HEAT_TICKS`] ticks. The element is self-managed
//! I/O: a periodic timer (`WDFTIMER`, at `DISPATCH_LEVEL`) enqueues a work item
//! (`WDFWORKITEM`, at `PASSIVE_LEVEL`) that heats and completes the requests that are done.
//! Both are children of the device, created with it in `device_add`.
//!
//! * `self_managed_io_init` starts the element;
//! * `self_managed_io_suspend` stops the timer, waiting for a running tick, and flushes the
//!   work item, so nothing heats while the toaster is out of D0;
//! * `self_managed_io_restart` starts the timer again;
//! * `self_managed_io_flush` fails every pending request (the toaster is going away) and
//!   flushes the work item;
//! * `self_managed_io_cleanup` deletes the element;
//! * `query_remove` flushes the work item before agreeing, as toastmon flushes its target's
//!   work item in `EvtIoTargetQueryRemove` before closing the target.
//!
//! Its power policy is the C featured toaster's: in `device_add` it idles after
//! [`IDLE_TIMEOUT`] without a power reference, unarmed (`IdleCannotWakeFromS0`: only a
//! power reference or a hand-applied wake brings it back), and it asks to be armed for
//! system wake with the default settings, going on without when the bus cannot wake the
//! system. Its six wake callbacks only record what the framework did
//! ([`Toaster::armed_for_wake`], [`Toaster::wakes_triggered`]): a toaster has no wake
//! hardware to program. Its own requests are not `WDFREQUEST`s on a power-managed queue, so
//! they hold no power reference: it idles after its timeout with toast pending, and heats
//! again when it is back in D0.

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;

use kmdf::object::ObjectRef;
use kmdf::pnp::HardwareResources;
use kmdf::power_policy::{IdleCaps, S0IdleSettings, SxWakeSettings};
use kmdf::sync::SpinLock;
use kmdf::{
    Device, DeviceInit, DevicePowerState, Driver, NtError, NtStatus, PnpPowerCallbacks, Result,
    Timer, TimerCallbacks, WorkItem, WorkItemCallbacks,
};

/// How often the element heats.
pub const TICK: Duration = Duration::from_millis(100);

/// How many ticks a slice needs.
pub const HEAT_TICKS: u64 = 2;

/// How long the toaster stays in D0 without a power reference before it idles.
///
/// The C featured toaster's is 60 s; this one is shortened to 1 s so that the runner's
/// `wait 1000` shows it in ten heating periods rather than six hundred. It is still ten
/// times the heating period that passes between two of the runner's actions, so the default
/// life never idles by itself.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// The driver: what is shared by every toaster it serves.
pub struct ToasterDriver {
    /// Every request's outcome, kept past the devices so the runner and tests can check it.
    pub ledger: Arc<Ledger>,
}

impl Driver for ToasterDriver {
    fn driver_entry() -> Result<Self> {
        Ok(ToasterDriver { ledger: Arc::new(Ledger::new()?) })
    }

    /// `EvtDriverDeviceAdd`: one toaster, its element, its context, every PnP/power
    /// callback, and its power policy.
    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        let device = device_init.create_with(|device| {
            Ok(Toaster {
                ledger: Arc::clone(&self.ledger),
                pending: SpinLock::new(VecDeque::new())?,
                timer: Timer::periodic(device, TICK, Thermostat)?,
                heater: WorkItem::create(device, Heater)?,
                flushed: AtomicBool::new(false),
                unplugged: AtomicBool::new(false),
                resources: AtomicU64::new(0),
                armed_s0: AtomicBool::new(false),
                armed_sx: AtomicBool::new(false),
                wakes: AtomicU64::new(0),
            })
        })?;
        // Idle after the timeout, unarmed: the toaster cannot signal wake itself, only a
        // request (a power reference) brings it back.
        device.assign_s0_idle_settings(
            &S0IdleSettings::new(IdleCaps::CannotWakeFromS0).idle_timeout(IDLE_TIMEOUT),
        )?;
        // Armed to wake the system when it sleeps, if the bus can do that; without, the
        // toaster works all the same.
        let _ = device.assign_sx_wake_settings(&SxWakeSettings::new());
        Ok(())
    }
}

/// Every request ever submitted and how it ended.
pub struct Ledger {
    next_id: AtomicU64,
    completions: SpinLock<Vec<(u64, NtStatus)>>,
}

impl Ledger {
    fn new() -> Result<Self> {
        Ok(Ledger { next_id: AtomicU64::new(1), completions: SpinLock::new(Vec::new())? })
    }

    /// How many requests were submitted.
    pub fn submitted(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst) - 1
    }

    /// Every completion, in order: (request id, status).
    pub fn completions(&self) -> Vec<(u64, NtStatus)> {
        self.completions.lock().clone()
    }

    /// How many requests completed with toast.
    pub fn completed(&self) -> usize {
        self.completions.lock().iter().filter(|(_, status)| status.is_success()).count()
    }

    /// How many requests were failed by `self_managed_io_flush`.
    pub fn flushed(&self) -> usize {
        self.completions.lock().iter().filter(|(_, status)| status.is_failure()).count()
    }

    fn complete(&self, request: &Request, status: NtStatus) {
        self.completions.lock().push((request.id, status));
    }
}

/// A driver-owned request: a slice waiting to be toasted.
#[derive(Debug)]
struct Request {
    id: u64,
    heat: u64,
}

/// The device context.
pub struct Toaster {
    ledger: Arc<Ledger>,
    /// Requests the driver owns until they are toasted or flushed.
    pending: SpinLock<VecDeque<Request>>,
    /// The heating element: a tick, and the heating it hands to a work item.
    timer: ObjectRef<Timer<Thermostat>>,
    heater: ObjectRef<WorkItem<Heater>>,
    /// `self_managed_io_flush` ran: no request is accepted any more.
    flushed: AtomicBool,
    /// `surprise_removal` ran: the hardware is gone.
    unplugged: AtomicBool,
    /// Resource descriptors seen by `prepare_hardware`.
    resources: AtomicU64,
    /// Armed for wake from S0 (idle) and from Sx (system sleep), as the wake callbacks say.
    armed_s0: AtomicBool,
    armed_sx: AtomicBool,
    /// How many times its wake signal brought it (or the system) back.
    wakes: AtomicU64,
}

impl Toaster {
    /// An application asks for a slice of toast: the request pends until toasted.
    ///
    /// # Errors
    ///
    /// `STATUS_DEVICE_REMOVED` once the toaster is being removed (its pending requests were
    /// flushed).
    pub fn submit(&self) -> Result<u64> {
        let mut pending = self.pending.lock();
        // Checked under the lock that Flush takes too: no request slips in after it.
        if self.flushed.load(Ordering::SeqCst) {
            return Err(NtError::DEVICE_REMOVED);
        }
        let id = self.ledger.next_id.fetch_add(1, Ordering::SeqCst);
        pending.push_back(Request { id, heat: 0 });
        Ok(id)
    }

    /// How many requests are pending.
    pub fn pending(&self) -> usize {
        self.pending.lock().len()
    }

    /// Whether the toaster is armed for wake now: (from S0 idle, from a system sleep).
    #[allow(dead_code, reason = "read by tests/toaster.rs, not by the runner")]
    pub fn armed_for_wake(&self) -> (bool, bool) {
        (self.armed_s0.load(Ordering::SeqCst), self.armed_sx.load(Ordering::SeqCst))
    }

    /// How many times its wake signal brought the toaster back (`wake_from_s0_triggered`,
    /// `wake_from_sx_triggered`).
    #[allow(dead_code, reason = "read by tests/toaster.rs, not by the runner")]
    pub fn wakes_triggered(&self) -> u64 {
        self.wakes.load(Ordering::SeqCst)
    }

    /// Stops the element and waits until neither its timer nor its work item runs.
    fn quiesce(&self) -> Result {
        self.timer.stop_and_wait()?;
        self.heater.flush()
    }
}

/// The timer's context: a tick of the element.
struct Thermostat;

kmdf::vtable! {
    impl TimerCallbacks for Thermostat {
        type Parent = Device<Toaster>;

        /// `EvtTimerFunc`, at `DISPATCH_LEVEL`: hand the heating to the work item.
        fn run(&self, _timer: &Timer<Self>, toaster: &Device<Toaster>) {
            // Coalesces with a run already queued: that run heats for this tick too.
            let _ = toaster.context().heater.enqueue();
        }
    }
}

/// The work item's context: heating.
struct Heater;

kmdf::vtable! {
    impl WorkItemCallbacks for Heater {
        type Parent = Device<Toaster>;

        /// `EvtWorkItem`, at `PASSIVE_LEVEL`: heat every pending slice one tick and complete
        /// the ones that are done.
        fn run(&self, _item: &WorkItem<Self>, toaster: &Device<Toaster>) {
            let toaster = toaster.context();
            let done: Vec<Request> = {
                let mut pending = toaster.pending.lock();
                for request in pending.iter_mut() {
                    request.heat += 1;
                }
                let ready = pending.iter().take_while(|r| r.heat >= HEAT_TICKS).count();
                pending.drain(..ready).collect()
            };
            for request in done {
                toaster.ledger.complete(&request, NtStatus::SUCCESS);
            }
        }
    }
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Toaster {
        /// Map the toaster's registers (here: count the resources).
        fn prepare_hardware(&self, _device: &Device<Self>, resources: HardwareResources<'_>) -> Result {
            self.resources.store(u64::from(resources.translated_count()), Ordering::SeqCst);
            Ok(())
        }

        /// Unmap them.
        fn release_hardware(&self, _device: &Device<Self>, _resources: HardwareResources<'_>) -> Result {
            self.resources.store(0, Ordering::SeqCst);
            Ok(())
        }

        /// Power the toaster up.
        fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
            Ok(())
        }

        /// Interrupts are connected: nothing to enable on a toaster.
        fn d0_entry_post_interrupts_enabled(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
            Ok(())
        }

        /// Interrupts are about to be disconnected.
        fn d0_exit_pre_interrupts_disabled(&self, _device: &Device<Self>, _target: DevicePowerState) -> Result {
            Ok(())
        }

        /// Power the toaster down. Self-managed I/O was suspended already.
        fn d0_exit(&self, _device: &Device<Self>, _target: DevicePowerState) -> Result {
            Ok(())
        }

        /// Like toastmon before `WdfIoTargetCloseForQueryRemove`: nothing of ours may be in
        /// flight once the removal goes ahead.
        fn query_remove(&self, _device: &Device<Self>) -> Result {
            self.heater.flush()
        }

        /// A rebalance would stop the element; it restarts after.
        fn query_stop(&self, _device: &Device<Self>) -> Result {
            Ok(())
        }

        /// The toaster was unplugged.
        fn surprise_removal(&self, _device: &Device<Self>) {
            self.unplugged.store(true, Ordering::SeqCst);
        }

        /// Start heating.
        fn self_managed_io_init(&self, _device: &Device<Self>) -> Result {
            self.timer.start(TICK)?;
            Ok(())
        }

        /// Leaving D0: stop heating, and wait until nothing of the element runs.
        fn self_managed_io_suspend(&self, _device: &Device<Self>) -> Result {
            self.quiesce()
        }

        /// Back in D0: heat again.
        fn self_managed_io_restart(&self, _device: &Device<Self>) -> Result {
            self.timer.start(TICK)?;
            Ok(())
        }

        /// The toaster is going away: fail every request it still owns, and make sure the
        /// work item is not running or queued.
        fn self_managed_io_flush(&self, _device: &Device<Self>) {
            let _ = self.quiesce();
            let requests: Vec<Request> = {
                let mut pending = self.pending.lock();
                self.flushed.store(true, Ordering::SeqCst);
                pending.drain(..).collect()
            };
            for request in requests {
                self.ledger.complete(&request, NtStatus::DEVICE_REMOVED);
            }
        }

        /// Delete the element (its memory goes with the device context).
        fn self_managed_io_cleanup(&self, _device: &Device<Self>) {
            let _ = self.timer.delete();
            let _ = self.heater.delete();
        }

        /// About to idle armed for wake (never with `IdleCannotWakeFromS0`, but a toaster
        /// on a wake-capable bus would be): nothing to program, only noted.
        fn arm_wake_from_s0(&self, _device: &Device<Self>) -> Result {
            self.armed_s0.store(true, Ordering::SeqCst);
            Ok(())
        }

        /// Back in D0 from an armed idle.
        fn disarm_wake_from_s0(&self, _device: &Device<Self>) {
            self.armed_s0.store(false, Ordering::SeqCst);
        }

        /// Its wake signal brought it back from idle.
        fn wake_from_s0_triggered(&self, _device: &Device<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
        }

        /// The system is going to sleep and the toaster may wake it.
        fn arm_wake_from_sx(&self, _device: &Device<Self>) -> Result {
            self.armed_sx.store(true, Ordering::SeqCst);
            Ok(())
        }

        /// The system is back (or arming failed).
        fn disarm_wake_from_sx(&self, _device: &Device<Self>) {
            self.armed_sx.store(false, Ordering::SeqCst);
        }

        /// Its wake signal woke the system.
        fn wake_from_sx_triggered(&self, _device: &Device<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
        }

        /// The device object is being deleted.
        fn cleanup(&self, _device: &Device<Self>) {}
    }
}

kmdf::driver_entry!(ToasterDriver);
