//! PnP, power and self-managed I/O callbacks.
//!
//! A device's context type implements [`PnpPowerCallbacks`] through [`vtable!`](crate::vtable).
//! The framework calls the methods as the device starts, changes power state, stops for
//! rebalance and goes away; the order for every scenario is in `docs/kmdf-behaviour.md`
//! section 1 and the failure paths in section 2. Every method runs at `PASSIVE_LEVEL`.
//!
//! Only the methods written in the impl block are registered: a method you do not write is
//! not a no-op callback, it is *no* callback, exactly as a C driver that leaves the field of
//! `WDF_PNPPOWER_EVENT_CALLBACKS` NULL. This matters for self-managed I/O: KMDF creates the
//! self-managed I/O state machine only when at least one of its five callbacks is
//! registered.
//!
//! ```
//! use kmdf::{Device, DevicePowerState, PnpPowerCallbacks, Result};
//! use kmdf::sync::SpinLock;
//!
//! struct Lamp {
//!     powered: SpinLock<bool>,
//! }
//!
//! kmdf::vtable! {
//!     impl PnpPowerCallbacks for Lamp {
//!         fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
//!             *self.powered.lock() = true;
//!             Ok(())
//!         }
//!
//!         fn d0_exit(&self, _device: &Device<Self>, _target: DevicePowerState) -> Result {
//!             *self.powered.lock() = false;
//!             Ok(())
//!         }
//!     }
//! }
//! ```

use core::fmt;

use crate::backend;
use crate::callback::vtable;
pub use crate::callback::{Callback, UnknownCallback};
use crate::{Device, NtError, Result};

/// A device power state, as KMDF passes it to `EvtDeviceD0Entry` and `EvtDeviceD0Exit`
/// (`WDF_POWER_DEVICE_STATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum DevicePowerState {
    /// `WdfPowerDeviceD0`: working.
    D0 = 1,
    /// `WdfPowerDeviceD1`.
    D1 = 2,
    /// `WdfPowerDeviceD2`.
    D2 = 3,
    /// `WdfPowerDeviceD3`: off, but the device stays started (idle, system sleep).
    D3 = 4,
    /// `WdfPowerDeviceD3Final`: off for good (removal, rebalance stop, or a device that was
    /// never in D0).
    D3Final = 5,
    /// `WdfPowerDevicePrepareForHibernation`: off, but the device stays usable for writing
    /// the hibernation file.
    PrepareForHibernation = 6,
}

impl DevicePowerState {
    /// The state for a raw `WDF_POWER_DEVICE_STATE` value.
    ///
    /// # Errors
    ///
    /// `STATUS_INVALID_PARAMETER` for `WdfPowerDeviceInvalid`, `WdfPowerDeviceMaximum` and
    /// any other value that is not a device power state.
    pub const fn from_raw(raw: i32) -> Result<Self> {
        Ok(match raw {
            1 => Self::D0,
            2 => Self::D1,
            3 => Self::D2,
            4 => Self::D3,
            5 => Self::D3Final,
            6 => Self::PrepareForHibernation,
            _ => return Err(NtError::INVALID_PARAMETER),
        })
    }

    /// The raw `WDF_POWER_DEVICE_STATE` value.
    #[must_use]
    pub const fn to_raw(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for DevicePowerState {
    /// The short name used in traces: `D0`, `D3`, `D3Final`, `PrepareForHibernation`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The hardware resources the PnP manager assigned to a device, as passed to
/// `EvtDevicePrepareHardware` and `EvtDeviceReleaseHardware`: two lists of the same
/// resources, raw (as the bus sees them) and translated (as the processor reaches them).
/// `EvtDeviceReleaseHardware` only gets the translated list; its raw list is empty.
///
/// ```
/// # use kmdf::pnp::{HardwareResources, Resource};
/// fn find_registers(resources: &HardwareResources<'_>) -> Option<(u64, u32)> {
///     resources.translated().find_map(|resource| match resource {
///         Resource::Memory { start, length } => Some((start, length)),
///         _ => None,
///     })
/// }
/// ```
#[derive(Clone, Copy)]
pub struct HardwareResources<'a> {
    pub(crate) raw: backend::RawResources<'a>,
}

impl<'a> HardwareResources<'a> {
    /// How many descriptors the raw (bus-relative) resource list has.
    #[must_use]
    pub fn raw_count(&self) -> u32 {
        self.raw.raw_count()
    }

    /// How many descriptors the translated (system-relative) resource list has.
    #[must_use]
    pub fn translated_count(&self) -> u32 {
        self.raw.translated_count()
    }

    /// The raw list's descriptor at `index` (`WdfCmResourceListGetDescriptor`), or `None`
    /// past the end.
    #[must_use]
    pub fn raw_descriptor(&self, index: u32) -> Option<Resource> {
        self.raw.raw_descriptor(index)
    }

    /// The translated list's descriptor at `index`, or `None` past the end.
    #[must_use]
    pub fn translated_descriptor(&self, index: u32) -> Option<Resource> {
        self.raw.translated_descriptor(index)
    }

    /// The raw list, in order.
    pub fn raw(&self) -> impl Iterator<Item = Resource> + 'a {
        let this = *self;
        (0..self.raw_count()).filter_map(move |index| this.raw_descriptor(index))
    }

    /// The translated list, in order.
    pub fn translated(&self) -> impl Iterator<Item = Resource> + 'a {
        let this = *self;
        (0..self.translated_count()).filter_map(move |index| this.translated_descriptor(index))
    }
}

impl fmt::Debug for HardwareResources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HardwareResources")
            .field("raw_count", &self.raw_count())
            .field("translated_count", &self.translated_count())
            .finish()
    }
}

/// One hardware resource: a `CM_PARTIAL_RESOURCE_DESCRIPTOR`, by its `Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// `CmResourceTypePort`: an I/O port range (or, translated, the memory it is mapped at
    /// on platforms without I/O ports).
    Port {
        /// The first port (`u.Port.Start`).
        start: u64,
        /// How many ports (`u.Port.Length`).
        length: u32,
    },
    /// `CmResourceTypeMemory`: a memory range, such as a device's registers.
    Memory {
        /// The physical address of its first byte (`u.Memory.Start`).
        start: u64,
        /// Its length in bytes (`u.Memory.Length`).
        length: u32,
    },
    /// `CmResourceTypeInterrupt`: an interrupt, line-based or message-signaled.
    Interrupt {
        /// The vector (`u.Interrupt.Vector`).
        vector: u32,
        /// The processors it can be delivered to (`u.Interrupt.Affinity`).
        affinity: u64,
        /// A message-signaled interrupt (`CM_RESOURCE_INTERRUPT_MESSAGE` in `Flags`).
        message_signaled: bool,
    },
    /// A descriptor of another type (DMA, bus number, device-specific, ...), by its `Type`.
    Other {
        /// The `CmResourceType*` value.
        kind: u8,
    },
}

impl Resource {
    /// `CmResourceTypePort`.
    pub const TYPE_PORT: u8 = 1;
    /// `CmResourceTypeInterrupt`.
    pub const TYPE_INTERRUPT: u8 = 2;
    /// `CmResourceTypeMemory`.
    pub const TYPE_MEMORY: u8 = 3;
    /// `CM_RESOURCE_INTERRUPT_MESSAGE`, in the descriptor's `Flags`.
    pub const FLAG_INTERRUPT_MESSAGE: u16 = 2;

    /// The descriptor's `Type` (`CmResourceType*`).
    #[must_use]
    pub const fn kind(&self) -> u8 {
        match self {
            Resource::Port { .. } => Self::TYPE_PORT,
            Resource::Interrupt { .. } => Self::TYPE_INTERRUPT,
            Resource::Memory { .. } => Self::TYPE_MEMORY,
            Resource::Other { kind } => *kind,
        }
    }
}

/// The callbacks KMDF sends a device as it starts, changes power state and is removed:
/// `WDF_PNPPOWER_EVENT_CALLBACKS`, plus the device object's `EvtCleanupCallback`.
///
/// Implemented by a device's context type, always through [`vtable!`](crate::vtable), which
/// registers exactly the methods written in the impl block. Each method gets the context as
/// `&self` and the device; callbacks can run concurrently with work items and with
/// `surprise_removal`, so state they change lives in [`sync`](crate::sync) types.
///
/// Failures are reported by returning `Err(status)`. What KMDF does after each failure is
/// in the method's documentation (`docs/kmdf-behaviour.md` section 2).
pub trait PnpPowerCallbacks: Sized + Send + Sync + 'static {
    /// Which methods the impl block wrote: the callbacks registered for this type.
    ///
    /// Written by [`vtable!`](crate::vtable), the only way to implement this trait. Not part
    /// of the public API.
    #[doc(hidden)]
    const REGISTERED: crate::callback::vtable::PnpPowerCallbacks;

    /// `EvtDevicePrepareHardware`: the device got its hardware resources, before it first
    /// enters D0 (on first start and on a start after a rebalance stop).
    ///
    /// # Errors
    ///
    /// A failure fails the start: KMDF still calls `release_hardware` (the two are always
    /// paired), and no D0 entry or self-managed I/O callback follows.
    fn prepare_hardware(
        &self,
        _device: &Device<Self>,
        _resources: HardwareResources<'_>,
    ) -> Result {
        Ok(())
    }

    /// `EvtDeviceReleaseHardware`: the device gives its hardware resources back, after its
    /// last D0 exit (removal, surprise removal, rebalance stop) or after a failed start.
    ///
    /// # Errors
    ///
    /// During removal a failure is ignored and the removal goes on.
    fn release_hardware(
        &self,
        _device: &Device<Self>,
        _resources: HardwareResources<'_>,
    ) -> Result {
        Ok(())
    }

    /// `EvtDeviceD0Entry`: the device enters D0 from `previous` (`D3Final` on a start,
    /// the idle or sleep state when it wakes).
    ///
    /// # Errors
    ///
    /// On a start, a failure makes KMDF call `release_hardware` (never `d0_exit` for the
    /// failed entry). When returning from a low-power state the device is failed:
    /// `release_hardware`, `self_managed_io_flush`, later `self_managed_io_cleanup`.
    fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
        Ok(())
    }

    /// `EvtDeviceD0EntryPostInterruptsEnabled`: after `d0_entry`, once interrupts are
    /// connected.
    ///
    /// # Errors
    ///
    /// A failure makes KMDF call `d0_exit(D3Final)` (without
    /// `d0_exit_pre_interrupts_disabled`) and tear the device down.
    fn d0_entry_post_interrupts_enabled(
        &self,
        _device: &Device<Self>,
        _previous: DevicePowerState,
    ) -> Result {
        Ok(())
    }

    /// `EvtDeviceD0ExitPreInterruptsDisabled`: leaving D0 for `target`, before interrupts
    /// are disconnected. Only follows a successful `d0_entry_post_interrupts_enabled`.
    ///
    /// # Errors
    ///
    /// A failure fails the device.
    fn d0_exit_pre_interrupts_disabled(
        &self,
        _device: &Device<Self>,
        _target: DevicePowerState,
    ) -> Result {
        Ok(())
    }

    /// `EvtDeviceD0Exit`: the device leaves D0 for `target` (`D3` to idle or sleep,
    /// `D3Final` on removal or a rebalance stop). Runs after self-managed I/O was suspended
    /// and the power-managed queues stopped.
    ///
    /// # Errors
    ///
    /// A failure fails the device.
    fn d0_exit(&self, _device: &Device<Self>, _target: DevicePowerState) -> Result {
        Ok(())
    }

    /// `EvtDeviceQueryRemove`: the PnP manager asks whether the device may be removed.
    ///
    /// # Errors
    ///
    /// A failure vetoes the removal: nothing else is called and the device stays started.
    fn query_remove(&self, _device: &Device<Self>) -> Result {
        Ok(())
    }

    /// `EvtDeviceQueryStop`: the PnP manager asks whether the device may stop so its
    /// resources can be rebalanced.
    ///
    /// # Errors
    ///
    /// A failure vetoes the stop: nothing else is called and the device stays started.
    fn query_stop(&self, _device: &Device<Self>) -> Result {
        Ok(())
    }

    /// `EvtDeviceSurpriseRemoval`: the device is gone without warning. Not synchronized
    /// with the other PnP and power callbacks; the power-down and release that follow skip
    /// the hardware that is no longer there.
    fn surprise_removal(&self, _device: &Device<Self>) {}

    /// `EvtDeviceSelfManagedIoInit`: once per device, the first time it enters D0 and its
    /// queues are started. Start the I/O the driver drives itself (timers, work items,
    /// polling).
    ///
    /// # Errors
    ///
    /// A failure tears the device down: the power-managed queues stop, then
    /// `d0_exit_pre_interrupts_disabled(D3Final)`, `d0_exit(D3Final)`, `release_hardware`,
    /// `self_managed_io_flush`, `self_managed_io_cleanup`, but never
    /// `self_managed_io_suspend`.
    fn self_managed_io_init(&self, _device: &Device<Self>) -> Result {
        Ok(())
    }

    /// `EvtDeviceSelfManagedIoSuspend`: the device is about to leave D0 (idle, sleep,
    /// rebalance stop, removal): pause self-managed I/O. Runs before the queues stop and
    /// before `d0_exit`.
    ///
    /// # Errors
    ///
    /// The power-down goes on (`d0_exit_pre_interrupts_disabled`, `d0_exit`), then the
    /// device is failed: `release_hardware`, `self_managed_io_flush`,
    /// `self_managed_io_cleanup`; `self_managed_io_restart` is never called.
    fn self_managed_io_suspend(&self, _device: &Device<Self>) -> Result {
        Ok(())
    }

    /// `EvtDeviceSelfManagedIoRestart`: back in D0 after a successful
    /// `self_managed_io_suspend` (wake, resume, start after a rebalance stop): resume
    /// self-managed I/O.
    ///
    /// # Errors
    ///
    /// A failure tears the device down like a failed `self_managed_io_init`.
    fn self_managed_io_restart(&self, _device: &Device<Self>) -> Result {
        Ok(())
    }

    /// `EvtDeviceSelfManagedIoFlush`: the device is being removed (or failed): complete
    /// every request the driver still owns and flush its work items. Called at most once,
    /// and only if `self_managed_io_init` was called.
    fn self_managed_io_flush(&self, _device: &Device<Self>) {}

    /// `EvtDeviceSelfManagedIoCleanup`: after `self_managed_io_flush`, on the remove IRP:
    /// free what `self_managed_io_init` allocated. Called at most once, before the device's
    /// `cleanup`.
    fn self_managed_io_cleanup(&self, _device: &Device<Self>) {}

    /// `EvtDeviceArmWakeFromS0`: the device is about to idle armed for wake
    /// ([`IdleCaps::CanWakeFromS0`](crate::power_policy::IdleCaps::CanWakeFromS0)): after
    /// `self_managed_io_suspend`, before `d0_exit_pre_interrupts_disabled`. Enable the
    /// hardware's wake signal.
    ///
    /// # Errors
    ///
    /// Not a device failure: `disarm_wake_from_s0` is not called, the power-down finishes
    /// and the device comes straight back to D0 (docs/kmdf-behaviour.md section 10).
    fn arm_wake_from_s0(&self, _device: &Device<Self>) -> Result {
        Ok(())
    }

    /// `EvtDeviceDisarmWakeFromS0`: back in D0 from an armed idle, after
    /// `d0_entry_post_interrupts_enabled` (and `wake_from_s0_triggered`, when the wake
    /// signal brought it back), before `self_managed_io_restart`.
    fn disarm_wake_from_s0(&self, _device: &Device<Self>) {}

    /// `EvtDeviceWakeFromS0Triggered`: the device's wake signal brought it back from idle;
    /// before `disarm_wake_from_s0`.
    fn wake_from_s0_triggered(&self, _device: &Device<Self>) {}

    /// `EvtDeviceArmWakeFromSx`: the system is going to sleep and the device is armed to
    /// wake it ([`Device::assign_sx_wake_settings`](crate::Device::assign_sx_wake_settings)):
    /// after `self_managed_io_suspend`, before `d0_exit_pre_interrupts_disabled`.
    ///
    /// # Errors
    ///
    /// Not a device failure: `disarm_wake_from_sx` is called, then the device sleeps
    /// unarmed.
    fn arm_wake_from_sx(&self, _device: &Device<Self>) -> Result {
        Ok(())
    }

    /// `EvtDeviceDisarmWakeFromSx`: the system is back from a sleep the device was armed
    /// for, after `d0_entry_post_interrupts_enabled` (and `wake_from_sx_triggered`), before
    /// `self_managed_io_restart`; or arming failed.
    fn disarm_wake_from_sx(&self, _device: &Device<Self>) {}

    /// `EvtDeviceWakeFromSxTriggered`: the device's wake signal woke the system; before
    /// `disarm_wake_from_sx`.
    fn wake_from_sx_triggered(&self, _device: &Device<Self>) {}

    /// `EvtCleanupCallback` of the device object: the device is being deleted; its children
    /// (work items, ...) have already been disposed. The context itself is dropped later,
    /// when the last reference to the device goes (`EvtDestroyCallback`).
    fn cleanup(&self, _device: &Device<Self>) {}
}

/// The callbacks `T`'s [`PnpPowerCallbacks`] impl registers: ask it with `contains`, list
/// them with `iter`.
#[must_use]
pub const fn registered<T: PnpPowerCallbacks>() -> Registered {
    Registered(T::REGISTERED)
}

/// The callbacks a [`PnpPowerCallbacks`] impl registers (see [`registered`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Registered(vtable::PnpPowerCallbacks);

impl Registered {
    /// Whether `callback` is registered.
    #[must_use]
    pub const fn contains(&self, callback: Callback) -> bool {
        self.0.contains(callback)
    }

    /// Whether any self-managed I/O callback is registered: KMDF then creates the device's
    /// self-managed I/O state machine.
    #[must_use]
    pub const fn any_self_managed_io(&self) -> bool {
        self.0.any_self_managed_io()
    }

    /// The registered callbacks, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Callback> {
        self.0.iter()
    }
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
