//! Names of the driver callbacks the framework invokes.
//!
//! [`Callback`] names every callback `kmdf` can register, by its KMDF name
//! (`EvtDeviceSelfManagedIoFlush`) and by the Rust method that implements it
//! (`self_managed_io_flush`). The host runtime's trace and failure injection speak in these
//! names. The same table says which callbacks can fail ([`Callback::is_fallible`]).
//!
//! Each callback trait has its own registration table (module `vtable`, hidden): a `bool`
//! per optional method, which [`vtable!`](crate::vtable) fills from the impl block, so new
//! traits (I/O queues, files) add tables of their own rather than bits to a shared set.

use core::fmt;
use core::str::FromStr;

macro_rules! callbacks {
    ($($(#[$doc:meta])* $variant:ident = $kmdf:literal, $method:literal, $fallible:literal;)*) => {
        /// A driver callback, named as KMDF names it.
        ///
        /// `Display` and [`FromStr`] use the KMDF name:
        ///
        /// ```
        /// use kmdf::Callback;
        ///
        /// let flush: Callback = "EvtDeviceSelfManagedIoFlush".parse().unwrap();
        /// assert_eq!(flush, Callback::SelfManagedIoFlush);
        /// assert_eq!(flush.method_name(), Some("self_managed_io_flush"));
        /// assert!(!flush.is_fallible()); // it returns VOID
        /// assert!("EvtDeviceFlush".parse::<Callback>().is_err());
        /// ```
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Callback {
            $($(#[$doc])* $variant,)*
        }

        impl Callback {
            /// Every callback, in declaration order.
            pub const ALL: &'static [Callback] = &[$(Callback::$variant,)*];

            /// The KMDF name, e.g. `EvtDeviceD0Entry`.
            #[must_use]
            pub const fn kmdf_name(self) -> &'static str {
                match self {
                    $(Callback::$variant => $kmdf,)*
                }
            }

            /// The trait method that implements the callback, when it is a method registered
            /// through [`vtable!`](crate::vtable).
            #[must_use]
            pub const fn method_name(self) -> Option<&'static str> {
                let name = match self {
                    $(Callback::$variant => $method,)*
                };
                if name.is_empty() { None } else { Some(name) }
            }

            /// Whether the callback can fail: KMDF's callback returns an `NTSTATUS` (the
            /// trait method a `Result`), rather than `VOID`; or, for `EvtDeviceFileCreate`,
            /// its trait method returns the status the create request is completed with. This table is the one place that
            /// says so: the kernel trampolines are checked against it at compile time, and
            /// the host runtime's trace and failure injection read it.
            #[must_use]
            pub const fn is_fallible(self) -> bool {
                match self {
                    $(Callback::$variant => $fallible,)*
                }
            }
        }
    };
}

callbacks! {
    /// `DriverEntry`: the driver is loaded ([`Driver::driver_entry`](crate::Driver::driver_entry)).
    DriverEntry = "DriverEntry", "", true;
    /// `EvtDriverDeviceAdd` ([`Driver::device_add`](crate::Driver::device_add)).
    DriverDeviceAdd = "EvtDriverDeviceAdd", "", true;
    /// `EvtDriverUnload` ([`Driver::unload`](crate::Driver::unload)).
    DriverUnload = "EvtDriverUnload", "", false;
    /// `EvtDevicePrepareHardware`.
    PrepareHardware = "EvtDevicePrepareHardware", "prepare_hardware", true;
    /// `EvtDeviceReleaseHardware`.
    ReleaseHardware = "EvtDeviceReleaseHardware", "release_hardware", true;
    /// `EvtDeviceD0Entry`.
    D0Entry = "EvtDeviceD0Entry", "d0_entry", true;
    /// `EvtDeviceD0EntryPostInterruptsEnabled`.
    D0EntryPostInterruptsEnabled =
        "EvtDeviceD0EntryPostInterruptsEnabled", "d0_entry_post_interrupts_enabled", true;
    /// `EvtDeviceD0ExitPreInterruptsDisabled`.
    D0ExitPreInterruptsDisabled =
        "EvtDeviceD0ExitPreInterruptsDisabled", "d0_exit_pre_interrupts_disabled", true;
    /// `EvtDeviceD0Exit`.
    D0Exit = "EvtDeviceD0Exit", "d0_exit", true;
    /// `EvtDeviceQueryRemove`.
    QueryRemove = "EvtDeviceQueryRemove", "query_remove", true;
    /// `EvtDeviceQueryStop`.
    QueryStop = "EvtDeviceQueryStop", "query_stop", true;
    /// `EvtDeviceSurpriseRemoval`.
    SurpriseRemoval = "EvtDeviceSurpriseRemoval", "surprise_removal", false;
    /// `EvtDeviceSelfManagedIoInit`.
    SelfManagedIoInit = "EvtDeviceSelfManagedIoInit", "self_managed_io_init", true;
    /// `EvtDeviceSelfManagedIoSuspend`.
    SelfManagedIoSuspend = "EvtDeviceSelfManagedIoSuspend", "self_managed_io_suspend", true;
    /// `EvtDeviceSelfManagedIoRestart`.
    SelfManagedIoRestart = "EvtDeviceSelfManagedIoRestart", "self_managed_io_restart", true;
    /// `EvtDeviceSelfManagedIoFlush`.
    SelfManagedIoFlush = "EvtDeviceSelfManagedIoFlush", "self_managed_io_flush", false;
    /// `EvtDeviceSelfManagedIoCleanup`.
    SelfManagedIoCleanup = "EvtDeviceSelfManagedIoCleanup", "self_managed_io_cleanup", false;
    /// `EvtDeviceArmWakeFromS0`: arm the device to wake from its idle Dx state.
    ArmWakeFromS0 = "EvtDeviceArmWakeFromS0", "arm_wake_from_s0", true;
    /// `EvtDeviceDisarmWakeFromS0`: the device is back in D0 from an armed idle.
    DisarmWakeFromS0 = "EvtDeviceDisarmWakeFromS0", "disarm_wake_from_s0", false;
    /// `EvtDeviceWakeFromS0Triggered`: the device's wake signal brought it back from idle.
    WakeFromS0Triggered = "EvtDeviceWakeFromS0Triggered", "wake_from_s0_triggered", false;
    /// `EvtDeviceArmWakeFromSx`: arm the device to wake the sleeping system.
    ArmWakeFromSx = "EvtDeviceArmWakeFromSx", "arm_wake_from_sx", true;
    /// `EvtDeviceDisarmWakeFromSx`: the system is back from a sleep the device was armed
    /// for (or arming failed).
    DisarmWakeFromSx = "EvtDeviceDisarmWakeFromSx", "disarm_wake_from_sx", false;
    /// `EvtDeviceWakeFromSxTriggered`: the device's wake signal woke the system.
    WakeFromSxTriggered = "EvtDeviceWakeFromSxTriggered", "wake_from_sx_triggered", false;
    /// `EvtCleanupCallback`: an object's deletion has started.
    ObjectCleanup = "EvtCleanupCallback", "cleanup", false;
    /// `EvtDestroyCallback`: an object's last reference is gone; its context is dropped.
    ObjectDestroy = "EvtDestroyCallback", "", false;
    /// `EvtTimerFunc`: a timer's callback ([`TimerCallbacks::run`](crate::TimerCallbacks::run)).
    TimerFunc = "EvtTimerFunc", "run", false;
    /// `EvtWorkItem`: a work item's callback
    /// ([`WorkItemCallbacks::run`](crate::WorkItemCallbacks::run)).
    WorkItem = "EvtWorkItem", "run", false;
    /// `EvtDeviceFileCreate`: an application opened the device
    /// ([`FileCallbacks::create`](crate::file::FileCallbacks::create)); the create request is
    /// completed with what it returns.
    DeviceFileCreate = "EvtDeviceFileCreate", "create", true;
    /// `EvtFileCleanup`: the last handle of a file object was closed.
    FileCleanup = "EvtFileCleanup", "cleanup", false;
    /// `EvtFileClose`: every request of a closed file object is completed.
    FileClose = "EvtFileClose", "close", false;
    /// `EvtIoRead`: a read request presented by a queue.
    IoRead = "EvtIoRead", "read", false;
    /// `EvtIoWrite`: a write request presented by a queue.
    IoWrite = "EvtIoWrite", "write", false;
    /// `EvtIoDeviceControl`: a device I/O control request presented by a queue.
    IoDeviceControl = "EvtIoDeviceControl", "device_control", false;
    /// `EvtIoInternalDeviceControl`: an internal device I/O control request.
    IoInternalDeviceControl = "EvtIoInternalDeviceControl", "internal_device_control", false;
    /// `EvtIoDefault`: a request whose type has no handler of its own.
    IoDefault = "EvtIoDefault", "default", false;
    /// `EvtIoStop`: a power-managed queue stops (or a queue is purged) while the driver owns
    /// one of its requests.
    IoStop = "EvtIoStop", "stop", false;
    /// `EvtIoResume`: a request acknowledged without requeue in `EvtIoStop` is the driver's
    /// again after the power-up.
    IoResume = "EvtIoResume", "resume", false;
    /// `EvtIoCanceledOnQueue`: a request presented before and back in its queue was
    /// cancelled there.
    IoCanceledOnQueue = "EvtIoCanceledOnQueue", "canceled_on_queue", false;
    /// `EvtIoQueueState`: a manual queue has requests ready (`WdfIoQueueReadyNotify`).
    IoQueueState = "EvtIoQueueState", "ready_notify", false;
    /// `EvtRequestCancel`: a cancelable request the driver owns was cancelled.
    RequestCancel = "EvtRequestCancel", "request_cancel", false;
    /// Not a callback: a debug print of the driver (`DbgPrintEx`, see
    /// [`debug_print!`](crate::debug_print)), which the host runtime records in its trace
    /// with the text as the argument: `DbgPrintEx(toaster: heating)`.
    DebugPrint = "DbgPrintEx", "", false;
}

impl Callback {
    /// Whether this is one of the five self-managed I/O callbacks.
    #[must_use]
    pub const fn is_self_managed_io(self) -> bool {
        matches!(
            self,
            Callback::SelfManagedIoInit
                | Callback::SelfManagedIoSuspend
                | Callback::SelfManagedIoRestart
                | Callback::SelfManagedIoFlush
                | Callback::SelfManagedIoCleanup
        )
    }
}

impl fmt::Display for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kmdf_name())
    }
}

/// The error of parsing a [`Callback`] from a name that is not a KMDF callback name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCallback;

impl fmt::Display for UnknownCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a KMDF callback name that kmdf registers")
    }
}

impl core::error::Error for UnknownCallback {}

impl FromStr for Callback {
    type Err = UnknownCallback;

    fn from_str(name: &str) -> core::result::Result<Self, Self::Err> {
        Callback::ALL
            .iter()
            .copied()
            .find(|callback| callback.kmdf_name() == name)
            .ok_or(UnknownCallback)
    }
}

/// Generates one trait's registration table: a `bool` per optional method, named as the
/// method (Rust-for-Linux's `HAS_*` constants, gathered in one value per trait), and the
/// KMDF callback each one registers.
macro_rules! registration {
    ($(#[$doc:meta])* $name:ident { $($method:ident => $callback:ident,)* }) => {
        $(#[$doc])*
        ///
        /// Written by [`vtable!`](crate::vtable) from the methods of the impl block: a field is
        /// `true` when its method is written (and not disabled by `#[cfg]`). Not part of the
        /// public API.
        #[doc(hidden)]
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types, clippy::struct_excessive_bools)]
        pub struct $name {
            $(#[doc = concat!("`", stringify!($method), "` is written.")] pub $method: bool,)*
            _sealed: Sealed,
        }

        impl $name {
            /// No method written: what `vtable!` starts from.
            pub const NONE: Self = Self { $($method: false,)* _sealed: Sealed };

            /// Whether `callback` is registered.
            #[must_use]
            pub const fn contains(&self, callback: Callback) -> bool {
                match callback {
                    $(Callback::$callback => self.$method,)*
                    _ => false,
                }
            }

            /// The table with `callback` registered too (the host's raw face builds a
            /// table from the callbacks a C driver registered).
            #[cfg(all(kmdf_host, feature = "sys-harness"))]
            #[must_use]
            #[allow(dead_code, reason = "only the PnP/power table is built this way")]
            pub(crate) const fn with(mut self, callback: Callback) -> Self {
                match callback {
                    $(Callback::$callback => self.$method = true,)*
                    _ => {}
                }
                self
            }

            /// Whether any self-managed I/O callback is registered. KMDF creates a device's
            /// self-managed I/O state machine only then.
            #[must_use]
            pub const fn any_self_managed_io(&self) -> bool {
                $((Callback::$callback.is_self_managed_io() && self.$method) ||)* false
            }

            /// The registered callbacks, in declaration order.
            pub fn iter(self) -> impl Iterator<Item = Callback> {
                [$((Callback::$callback, self.$method),)*]
                    .into_iter()
                    .filter_map(|(callback, on)| on.then_some(callback))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_set().entries(self.iter()).finish()
            }
        }
    };
}

/// Keeps the tables' fields from being written as a struct literal outside this crate:
/// [`vtable!`](crate::vtable) starts from `NONE`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Sealed;

/// The registration tables, one per callback trait, named as the trait.
pub mod vtable {
    use super::{Callback, Sealed, fmt};

    registration! {
        /// [`PnpPowerCallbacks`](crate::PnpPowerCallbacks): `WDF_PNPPOWER_EVENT_CALLBACKS`,
        /// `WDF_POWER_POLICY_EVENT_CALLBACKS` and the device's `EvtCleanupCallback`.
        PnpPowerCallbacks {
            prepare_hardware => PrepareHardware,
            release_hardware => ReleaseHardware,
            d0_entry => D0Entry,
            d0_entry_post_interrupts_enabled => D0EntryPostInterruptsEnabled,
            d0_exit_pre_interrupts_disabled => D0ExitPreInterruptsDisabled,
            d0_exit => D0Exit,
            query_remove => QueryRemove,
            query_stop => QueryStop,
            surprise_removal => SurpriseRemoval,
            self_managed_io_init => SelfManagedIoInit,
            self_managed_io_suspend => SelfManagedIoSuspend,
            self_managed_io_restart => SelfManagedIoRestart,
            self_managed_io_flush => SelfManagedIoFlush,
            self_managed_io_cleanup => SelfManagedIoCleanup,
            arm_wake_from_s0 => ArmWakeFromS0,
            disarm_wake_from_s0 => DisarmWakeFromS0,
            wake_from_s0_triggered => WakeFromS0Triggered,
            arm_wake_from_sx => ArmWakeFromSx,
            disarm_wake_from_sx => DisarmWakeFromSx,
            wake_from_sx_triggered => WakeFromSxTriggered,
            cleanup => ObjectCleanup,
        }
    }

    registration! {
        /// [`WorkItemCallbacks`](crate::WorkItemCallbacks): `EvtWorkItem` and the item's
        /// `EvtCleanupCallback`.
        WorkItemCallbacks {
            run => WorkItem,
            cleanup => ObjectCleanup,
        }
    }

    registration! {
        /// [`IoQueueCallbacks`](crate::io_queue::IoQueueCallbacks): `WDF_IO_QUEUE_CONFIG`'s
        /// callbacks, `EvtRequestCancel` and the queue's `EvtCleanupCallback`.
        IoQueueCallbacks {
            read => IoRead,
            write => IoWrite,
            device_control => IoDeviceControl,
            internal_device_control => IoInternalDeviceControl,
            default => IoDefault,
            stop => IoStop,
            resume => IoResume,
            canceled_on_queue => IoCanceledOnQueue,
            ready_notify => IoQueueState,
            request_cancel => RequestCancel,
            cleanup => ObjectCleanup,
        }
    }

    registration! {
        /// [`FileCallbacks`](crate::file::FileCallbacks): `WDF_FILEOBJECT_CONFIG`'s callbacks.
        FileCallbacks {
            create => DeviceFileCreate,
            cleanup => FileCleanup,
            close => FileClose,
        }
    }

    registration! {
        /// [`TimerCallbacks`](crate::TimerCallbacks): `EvtTimerFunc` and the timer's
        /// `EvtCleanupCallback`.
        TimerCallbacks {
            run => TimerFunc,
            cleanup => ObjectCleanup,
        }
    }
}

/// Registers exactly the optional callbacks an impl block defines.
///
/// KMDF behaves differently depending on which callbacks a driver registers: once any
/// self-managed I/O callback is registered, the device gets a self-managed I/O state
/// machine (docs/kmdf-behaviour.md section 3). A trait with default methods cannot tell which ones
/// a driver wrote, so each callback trait, such as
/// [`PnpPowerCallbacks`](crate::PnpPowerCallbacks), requires a hidden registration table,
/// and this macro writes it from the impl block itself: what is written is registered,
/// nothing else. A method disabled with `#[cfg]` is not registered.
///
/// ```
/// use kmdf::{Device, PnpPowerCallbacks, Result};
/// use kmdf::{Callback, pnp::registered};
///
/// struct Blinker;
///
/// kmdf::vtable! {
///     impl PnpPowerCallbacks for Blinker {
///         fn self_managed_io_flush(&self, _device: &Device<Self>) {}
///
///         #[cfg(any())] // compiled out: not registered, and no self-managed I/O Init
///         fn self_managed_io_init(&self, _device: &Device<Self>) -> Result {
///             Ok(())
///         }
///     }
/// }
///
/// let callbacks = registered::<Blinker>();
/// assert!(callbacks.contains(Callback::SelfManagedIoFlush));
/// assert!(!callbacks.contains(Callback::SelfManagedIoInit));
/// assert!(!callbacks.contains(Callback::D0Entry));
/// ```
///
/// Implementing a callback trait without the macro does not compile, whatever the impl
/// writes by hand (the table's type cannot be built outside `vtable!`):
///
/// ```compile_fail,E0046
/// use kmdf::{Device, PnpPowerCallbacks};
///
/// struct ByHand;
///
/// impl PnpPowerCallbacks for ByHand {
///     const IMPLEMENTED: &'static [&'static str] = &[]; // the old way: no such item
///     fn self_managed_io_flush(&self, _device: &Device<Self>) {}
/// }
/// ```
///
/// Nor does writing the table rustc asks for (its type is hidden; its fields can only be
/// set by `vtable!`, starting from an empty table):
///
/// ```compile_fail,E0451
/// use kmdf::{Device, PnpPowerCallbacks};
/// use kmdf::__private::vtable;
///
/// struct ByHand;
///
/// impl PnpPowerCallbacks for ByHand {
///     const REGISTERED: vtable::PnpPowerCallbacks = vtable::PnpPowerCallbacks {
///         self_managed_io_flush: true,
///         ..vtable::PnpPowerCallbacks::NONE
///     };
///     fn self_managed_io_flush(&self, _device: &Device<Self>) {}
/// }
/// ```
///
/// Associated types, such as a work item's `Parent`, come first in the block:
///
/// ```
/// use kmdf::{Callback, Device, PnpPowerCallbacks, WorkItem, WorkItemCallbacks};
///
/// struct Lamp;
/// kmdf::vtable! { impl PnpPowerCallbacks for Lamp {} }
///
/// struct Blink;
///
/// kmdf::vtable! {
///     impl WorkItemCallbacks for Blink {
///         type Parent = Device<Lamp>;
///
///         fn run(&self, _item: &WorkItem<Self>, _lamp: &Device<Lamp>) {}
///     }
/// }
///
/// // `run` is what registers `EvtWorkItem`.
/// assert_eq!(Callback::WorkItem.method_name(), Some("run"));
/// ```
///
/// The trait is named by its name, or by a path to it (`kmdf::PnpPowerCallbacks`,
/// `kmdf::pnp::PnpPowerCallbacks`).
#[macro_export]
macro_rules! vtable {
    ($(#[$impl_attr:meta])* impl $trait_:ident for $ty:ty { $($body:tt)* }) => {
        $crate::__kmdf_vtable_impl! { [$(#[$impl_attr])*] [$trait_] [$trait_] [$ty] $($body)* }
    };
    ($(#[$impl_attr:meta])* impl $a:ident :: $trait_:ident for $ty:ty { $($body:tt)* }) => {
        $crate::__kmdf_vtable_impl! {
            [$(#[$impl_attr])*] [$a :: $trait_] [$trait_] [$ty] $($body)*
        }
    };
    (
        $(#[$impl_attr:meta])*
        impl $a:ident :: $b:ident :: $trait_:ident for $ty:ty { $($body:tt)* }
    ) => {
        $crate::__kmdf_vtable_impl! {
            [$(#[$impl_attr])*] [$a :: $b :: $trait_] [$trait_] [$ty] $($body)*
        }
    };
}

/// The body of [`vtable!`]: the impl, with its registration table.
#[doc(hidden)]
#[macro_export]
macro_rules! __kmdf_vtable_impl {
    (
        [$($impl_attr:tt)*] [$($path:tt)*] [$trait_:ident] [$ty:ty]
        $(type $assoc:ident = $assoc_ty:ty;)*
        $(
            $(#[$($attr:tt)*])*
            fn $name:ident $params:tt $(-> $ret:ty)? $body:block
        )*
    ) => {
        $($impl_attr)*
        impl $($path)* for $ty {
            const REGISTERED: $crate::__private::vtable::$trait_ = {
                #[allow(unused_mut)]
                let mut registered = $crate::__private::vtable::$trait_::NONE;
                $($crate::__kmdf_register!(registered.$name [] $(#[$($attr)*])*);)*
                registered
            };
            $(type $assoc = $assoc_ty;)*
            $(
                $(#[$($attr)*])*
                fn $name $params $(-> $ret)? $body
            )*
        }
    };
}

/// Marks one method registered, under the method's own `#[cfg]`s (its other attributes,
/// such as doc comments, are dropped).
#[doc(hidden)]
#[macro_export]
macro_rules! __kmdf_register {
    ($table:ident . $name:ident [$($cfg:tt)*]) => {
        $(#[cfg $cfg])* { $table.$name = true; }
    };
    ($table:ident . $name:ident [$($cfg:tt)*] #[cfg $pred:tt] $($rest:tt)*) => {
        $crate::__kmdf_register!($table.$name [$($cfg)* $pred] $($rest)*)
    };
    ($table:ident . $name:ident [$($cfg:tt)*] #[$($other:tt)*] $($rest:tt)*) => {
        $crate::__kmdf_register!($table.$name [$($cfg)*] $($rest)*)
    };
}
