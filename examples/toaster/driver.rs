//! The toaster function driver, in the spirit of KMDF's toaster sample
//! (`general/toaster/toastDrv/kmdf/func/featured`) and of toastmon's query-remove handling.
//!
//! One source for both backends: `cargo run --example toaster` runs it on the host runtime,
//! and `examples/toaster/kmdf-driver` builds it as a KMDF driver with the WDK.
//!
//! An application opens the toaster by its device interface ([`GUID_DEVINTERFACE_TOASTER`],
//! the C sample's) and sends it requests on the default parallel queue, as the C toaster's
//! `ToasterEvtIoRead`, `ToasterEvtIoWrite` and `ToasterEvtIoDeviceControl` get them:
//!
//! * a **read** asks for toast: the driver keeps the request, marked cancelable, until the
//!   heating element has toasted it for [`HEAT_TICKS`] ticks, then completes it with the
//!   toast (its buffer filled, information = its length);
//! * a **write** puts bread in: completed at once with its length;
//! * a **device control**: [`IOCTL_TOASTER_PENDING`] (the number of reads pending, a
//!   little-endian `u32`), [`IOCTL_TOASTER_HEAT_TICKS`] (how many ticks a slice needs);
//!   any other code `STATUS_INVALID_DEVICE_REQUEST`;
//! * file create, cleanup and close (a file context per handle).
//!
//! The element is self-managed I/O: a periodic timer (`WDFTIMER`, at `DISPATCH_LEVEL`)
//! enqueues a work item (`WDFWORKITEM`, at `PASSIVE_LEVEL`) that heats the pending reads and
//! completes the ones that are done. Both are children of the device, created with it in
//! `device_add`.
//!
//! * `self_managed_io_init` starts the element;
//! * `self_managed_io_suspend` stops the timer, waiting for a running tick, and flushes the
//!   work item, so nothing heats while the toaster is out of D0; the queue then gives each
//!   pending read `EvtIoStop(Suspend)`, which the toaster acknowledges (it keeps the read),
//!   and `EvtIoResume` after the power-up;
//! * `self_managed_io_restart` starts the timer again;
//! * at the removal the framework cancels the pending reads (they are cancelable:
//!   `EvtRequestCancel` completes them `STATUS_CANCELLED`), and `self_managed_io_flush`
//!   fails what is left with `STATUS_DEVICE_REMOVED` and flushes the work item;
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
//! hardware to program. Its queue is power-managed, so a pending read holds the queue's
//! power reference: the toaster does not idle by itself with toast pending.

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;

use kmdf::file::{FileCallbacks, FileObject};
use kmdf::interface::{Access, Guid, TransferMethod, ctl_code};
use kmdf::io_queue::{Dispatch, IoQueue, IoQueueCallbacks, IoQueueConfig, IoStop};
use kmdf::object::ObjectRef;
use kmdf::pnp::HardwareResources;
use kmdf::power_policy::{IdleCaps, S0IdleSettings, SxWakeSettings};
use kmdf::request::{CancelableRequest, Marked, RequestId};
use kmdf::sync::SpinLock;
use kmdf::{
    Device, DeviceInit, DevicePowerState, Driver, NtStatus, PnpPowerCallbacks, Request, Result,
    Timer, TimerCallbacks, WorkItem, WorkItemCallbacks,
};

/// The toaster's device interface, the C sample's `GUID_DEVINTERFACE_TOASTER`.
pub const GUID_DEVINTERFACE_TOASTER: Guid = Guid::parse("{781EF630-72B2-11d2-B852-00C04FAD5171}");

/// The toaster's device type for its IOCTLs (`FILE_DEVICE_UNKNOWN`).
const FILE_DEVICE_TOASTER: u32 = 0x22;

/// How many reads are pending: a little-endian `u32` in an output buffer of at least 4 bytes.
pub const IOCTL_TOASTER_PENDING: u32 =
    ctl_code(FILE_DEVICE_TOASTER, 0x800, TransferMethod::Buffered, Access::Read);

/// How many ticks a slice needs ([`HEAT_TICKS`]): a little-endian `u32`, as above.
pub const IOCTL_TOASTER_HEAT_TICKS: u32 =
    ctl_code(FILE_DEVICE_TOASTER, 0x801, TransferMethod::Buffered, Access::Read);

/// The byte a read's buffer is filled with once toasted.
pub const TOAST: u8 = b'T';

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
    /// How the reads ended, kept past the devices so the runner and tests can check it.
    pub ledger: Arc<Ledger>,
}

impl Driver for ToasterDriver {
    fn driver_entry() -> Result<Self> {
        Ok(ToasterDriver { ledger: Arc::new(Ledger::new()) })
    }

    /// `EvtDriverDeviceAdd`: one toaster, its file objects, its interface, its default
    /// queue, its element, its context, every PnP/power callback, and its power policy.
    fn device_add(&self, mut device_init: DeviceInit<'_>) -> Result {
        device_init.set_file_object::<Slot>();
        let device = device_init.create_with(|device| {
            device.create_device_interface(&GUID_DEVINTERFACE_TOASTER, None)?;
            IoQueue::create(device, IoQueueConfig::default_queue(Dispatch::parallel()), Counter)?;
            Ok(Toaster {
                ledger: Arc::clone(&self.ledger),
                pending: SpinLock::new(VecDeque::new())?,
                timer: Timer::periodic(device, TICK, Thermostat)?,
                heater: WorkItem::create(device, Heater)?,
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

/// How the toaster's reads ended.
pub struct Ledger {
    reads: AtomicU64,
    toasted: AtomicU64,
    canceled: AtomicU64,
    flushed: AtomicU64,
}

impl Ledger {
    fn new() -> Self {
        Ledger {
            reads: AtomicU64::new(0),
            toasted: AtomicU64::new(0),
            canceled: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
        }
    }

    /// How many reads the toaster took (asked for toast).
    pub fn submitted(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// How many reads it completed with toast.
    pub fn completed(&self) -> u64 {
        self.toasted.load(Ordering::SeqCst)
    }

    /// How many reads its `EvtRequestCancel` completed `STATUS_CANCELLED`.
    pub fn canceled(&self) -> u64 {
        self.canceled.load(Ordering::SeqCst)
    }

    /// How many reads `self_managed_io_flush` failed.
    pub fn flushed(&self) -> u64 {
        self.flushed.load(Ordering::SeqCst)
    }
}

/// A read the driver owns: a slice waiting to be toasted.
#[derive(Debug)]
struct Slice {
    claim: CancelableRequest,
    length: usize,
    heat: u64,
}

/// The device context.
pub struct Toaster {
    ledger: Arc<Ledger>,
    /// Reads the driver owns until they are toasted, cancelled or flushed.
    pending: SpinLock<VecDeque<Slice>>,
    /// The heating element: a tick, and the heating it hands to a work item.
    timer: ObjectRef<Timer<Thermostat>>,
    heater: ObjectRef<WorkItem<Heater>>,
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
    /// How many reads are pending.
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

    /// A read asks for toast: kept, cancelable, until toasted.
    fn accept(&self, queue: &IoQueue<Counter>, request: Request, length: usize) {
        self.ledger.reads.fetch_add(1, Ordering::SeqCst);
        // Under the lock, so that the heater sees the slice only once it is recorded, and
        // a cancellation (which takes the lock) only after.
        let mut pending = self.pending.lock();
        match request.mark_cancelable(queue) {
            Marked::Cancelable(claim) => pending.push_back(Slice { claim, length, heat: 0 }),
            Marked::Canceled(request) => {
                drop(pending);
                self.ledger.canceled.fetch_add(1, Ordering::SeqCst);
                request.complete(NtStatus::CANCELLED);
            }
        }
    }

    /// `EvtRequestCancel`: the read `request` is no longer wanted.
    fn cancel(&self, request: Request) {
        let id: RequestId = request.id();
        self.pending.lock().retain(|slice| slice.claim.id() != id);
        self.ledger.canceled.fetch_add(1, Ordering::SeqCst);
        request.complete(NtStatus::CANCELLED);
    }
}

/// The file context: one handle of an application.
pub struct Slot;

kmdf::vtable! {
    impl FileCallbacks for Slot {
        type Device = Toaster;

        /// `EvtDeviceFileCreate`: the toaster opens for anyone.
        fn create(_device: &Device<Toaster>) -> Result<Self> {
            Ok(Slot)
        }

        /// `EvtFileCleanup`: the last handle of the file is closed.
        fn cleanup(&self, _file: &FileObject<Self>, _device: &Device<Toaster>) {}

        /// `EvtFileClose`: its requests are done.
        fn close(&self, _file: &FileObject<Self>, _device: &Device<Toaster>) {}
    }
}

/// The default queue's context.
pub struct Counter;

/// Writes `value` as a little-endian `u32` to the request's output buffer and completes it.
fn reply_u32(mut request: Request, value: u64) {
    let value = u32::try_from(value).unwrap_or(u32::MAX).to_le_bytes();
    match request.output_buffer(value.len()) {
        Ok(buffer) => {
            buffer[..value.len()].copy_from_slice(&value);
            if let Err(error) = request.complete_with_information(NtStatus::SUCCESS, value.len()) {
                error.request.complete(error.status.status());
            }
        }
        Err(status) => request.complete(status.status()),
    }
}

kmdf::vtable! {
    impl IoQueueCallbacks for Counter {
        type Device = Toaster;

        /// `EvtIoRead`: a request for toast, pending until toasted.
        fn read(&self, queue: &IoQueue<Self>, device: &Device<Toaster>, request: Request, length: usize) {
            device.context().accept(queue, request, length);
        }

        /// `EvtIoWrite`: bread in, taken at once.
        fn write(&self, _queue: &IoQueue<Self>, _device: &Device<Toaster>, request: Request, length: usize) {
            if let Err(error) = request.complete_with_information(NtStatus::SUCCESS, length) {
                error.request.complete(error.status.status());
            }
        }

        /// `EvtIoDeviceControl`: the toaster's IOCTLs.
        fn device_control(
            &self,
            _queue: &IoQueue<Self>,
            device: &Device<Toaster>,
            request: Request,
            _output_length: usize,
            _input_length: usize,
            code: u32,
        ) {
            match code {
                IOCTL_TOASTER_PENDING => reply_u32(request, device.context().pending() as u64),
                IOCTL_TOASTER_HEAT_TICKS => reply_u32(request, HEAT_TICKS),
                _ => request.complete(NtStatus::INVALID_DEVICE_REQUEST),
            }
        }

        /// `EvtIoStop`: the toaster leaves D0 (`Suspend`) and keeps its reads: nothing heats
        /// out of D0. A purge only reaches a read that is not cancelable, which the toaster
        /// never has; it is acknowledged too, and `self_managed_io_flush` fails it.
        fn stop(&self, _queue: &IoQueue<Self>, _device: &Device<Toaster>, stop: IoStop<'_>) {
            stop.acknowledge();
        }

        /// `EvtIoResume`: back in D0, the read heats again.
        fn resume(&self, _queue: &IoQueue<Self>, _device: &Device<Toaster>, _request: RequestId) {}

        /// `EvtRequestCancel`: the application cancelled a read, or the removal purges it.
        fn request_cancel(&self, _queue: &IoQueue<Self>, device: &Device<Toaster>, request: Request) {
            device.context().cancel(request);
        }
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
            let done: Vec<Slice> = {
                let mut pending = toaster.pending.lock();
                for slice in pending.iter_mut() {
                    slice.heat += 1;
                }
                let ready = pending.iter().take_while(|s| s.heat >= HEAT_TICKS).count();
                pending.drain(..ready).collect()
            };
            for slice in done {
                // None: it was cancelled meanwhile, and its EvtRequestCancel completes it.
                let Some(mut request) = slice.claim.unmark() else { continue };
                if let Ok(buffer) = request.output_buffer(slice.length) {
                    buffer.fill(TOAST);
                }
                match request.complete_with_information(NtStatus::SUCCESS, slice.length) {
                    Ok(()) => {
                        toaster.ledger.toasted.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(error) => error.request.complete(error.status.status()),
                }
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

        /// The toaster is going away: fail every read it still owns, and make sure the
        /// work item is not running or queued.
        fn self_managed_io_flush(&self, _device: &Device<Self>) {
            let _ = self.quiesce();
            let slices: Vec<Slice> = self.pending.lock().drain(..).collect();
            for slice in slices {
                // None: its EvtRequestCancel owns it and completes it.
                if let Some(request) = slice.claim.unmark() {
                    self.ledger.flushed.fetch_add(1, Ordering::SeqCst);
                    request.complete(NtStatus::DEVICE_REMOVED);
                }
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
