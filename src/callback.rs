//! Names of the driver callbacks the framework invokes.
//!
//! [`Callback`] names every callback `kmdf` can register, by its KMDF name
//! (`EvtDeviceSelfManagedIoFlush`) and by the Rust method that implements it
//! (`self_managed_io_flush`). The host runtime's trace and failure injection speak in these
//! names; [`CallbackSet`] is what [`vtable!`](crate::vtable) derives from an impl block.

use core::fmt;
use core::str::FromStr;

macro_rules! callbacks {
    ($($(#[$doc:meta])* $variant:ident = $kmdf:literal, $method:literal;)*) => {
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
        }
    };
}

callbacks! {
    /// `DriverEntry`: the driver is loaded ([`Driver::driver_entry`](crate::Driver::driver_entry)).
    DriverEntry = "DriverEntry", "";
    /// `EvtDriverDeviceAdd` ([`Driver::device_add`](crate::Driver::device_add)).
    DriverDeviceAdd = "EvtDriverDeviceAdd", "";
    /// `EvtDriverUnload` ([`Driver::unload`](crate::Driver::unload)).
    DriverUnload = "EvtDriverUnload", "";
    /// `EvtDevicePrepareHardware`.
    PrepareHardware = "EvtDevicePrepareHardware", "prepare_hardware";
    /// `EvtDeviceReleaseHardware`.
    ReleaseHardware = "EvtDeviceReleaseHardware", "release_hardware";
    /// `EvtDeviceD0Entry`.
    D0Entry = "EvtDeviceD0Entry", "d0_entry";
    /// `EvtDeviceD0EntryPostInterruptsEnabled`.
    D0EntryPostInterruptsEnabled =
        "EvtDeviceD0EntryPostInterruptsEnabled", "d0_entry_post_interrupts_enabled";
    /// `EvtDeviceD0ExitPreInterruptsDisabled`.
    D0ExitPreInterruptsDisabled =
        "EvtDeviceD0ExitPreInterruptsDisabled", "d0_exit_pre_interrupts_disabled";
    /// `EvtDeviceD0Exit`.
    D0Exit = "EvtDeviceD0Exit", "d0_exit";
    /// `EvtDeviceQueryRemove`.
    QueryRemove = "EvtDeviceQueryRemove", "query_remove";
    /// `EvtDeviceQueryStop`.
    QueryStop = "EvtDeviceQueryStop", "query_stop";
    /// `EvtDeviceSurpriseRemoval`.
    SurpriseRemoval = "EvtDeviceSurpriseRemoval", "surprise_removal";
    /// `EvtDeviceSelfManagedIoInit`.
    SelfManagedIoInit = "EvtDeviceSelfManagedIoInit", "self_managed_io_init";
    /// `EvtDeviceSelfManagedIoSuspend`.
    SelfManagedIoSuspend = "EvtDeviceSelfManagedIoSuspend", "self_managed_io_suspend";
    /// `EvtDeviceSelfManagedIoRestart`.
    SelfManagedIoRestart = "EvtDeviceSelfManagedIoRestart", "self_managed_io_restart";
    /// `EvtDeviceSelfManagedIoFlush`.
    SelfManagedIoFlush = "EvtDeviceSelfManagedIoFlush", "self_managed_io_flush";
    /// `EvtDeviceSelfManagedIoCleanup`.
    SelfManagedIoCleanup = "EvtDeviceSelfManagedIoCleanup", "self_managed_io_cleanup";
    /// `EvtCleanupCallback`: an object's deletion has started.
    ObjectCleanup = "EvtCleanupCallback", "cleanup";
    /// `EvtDestroyCallback`: an object's last reference is gone; its context is dropped.
    ObjectDestroy = "EvtDestroyCallback", "";
    /// `EvtTimerFunc`: a timer's callback.
    TimerFunc = "EvtTimerFunc", "";
    /// `EvtWorkItem`: a work item's callback
    /// ([`WorkItemCallback::run`](crate::WorkItemCallback::run)).
    WorkItem = "EvtWorkItem", "run";
    /// Not a callback: a debug print of the driver (`DbgPrintEx`, see
    /// [`debug_print!`](crate::debug_print)), which the host runtime records in its trace
    /// with the text as the argument: `DbgPrintEx(toaster: heating)`.
    DebugPrint = "DbgPrintEx", "";
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

    const fn bit(self) -> u32 {
        1 << self as u32
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

/// A set of [`Callback`]s: the callbacks a type registers.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CallbackSet(u32);

impl CallbackSet {
    /// The empty set.
    pub const EMPTY: Self = Self(0);

    /// The set of callbacks implemented by the methods named in `methods`, as
    /// [`vtable!`](crate::vtable) lists them.
    ///
    /// # Panics
    ///
    /// At compile time (it is evaluated in a constant) when a name is not the method of an
    /// optional callback: `vtable!` was used on a trait it does not serve.
    #[must_use]
    pub const fn from_methods(methods: &[&str]) -> Self {
        let mut set = 0;
        let mut i = 0;
        while i < methods.len() {
            set |= Self::method_bit(methods[i]);
            i += 1;
        }
        Self(set)
    }

    /// Whether `callback` is in the set.
    #[must_use]
    pub const fn contains(self, callback: Callback) -> bool {
        self.0 & callback.bit() != 0
    }

    /// Whether any self-managed I/O callback is in the set. KMDF creates a device's
    /// self-managed I/O state machine only then.
    #[must_use]
    pub const fn any_self_managed_io(self) -> bool {
        let mut i = 0;
        while i < Callback::ALL.len() {
            if Callback::ALL[i].is_self_managed_io() && self.contains(Callback::ALL[i]) {
                return true;
            }
            i += 1;
        }
        false
    }

    /// The callbacks in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Callback> {
        Callback::ALL.iter().copied().filter(move |c| self.contains(*c))
    }

    const fn method_bit(method: &str) -> u32 {
        let mut i = 0;
        while i < Callback::ALL.len() {
            if let Some(name) = Callback::ALL[i].method_name()
                && const_str_eq(name, method)
            {
                return Callback::ALL[i].bit();
            }
            i += 1;
        }
        panic!("kmdf::vtable!: a method is not an optional kmdf callback")
    }
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl fmt::Debug for CallbackSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Registers exactly the optional callbacks an impl block defines.
///
/// KMDF behaves differently depending on which callbacks a driver registers: once any
/// self-managed I/O callback is registered, the device gets a self-managed I/O state
/// machine (kmdf-semantics section 3). A trait with default methods cannot tell which ones
/// a driver wrote, so traits with optional callbacks, such as
/// [`PnpPowerCallbacks`](crate::PnpPowerCallbacks), require a constant listing them, and this
/// macro writes it from the impl block itself: what is written is registered, nothing else.
/// Implementing such a trait without the macro fails to compile (the constant is missing).
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
///     }
/// }
///
/// let callbacks = registered::<Blinker>();
/// assert!(callbacks.contains(Callback::SelfManagedIoFlush));
/// assert!(!callbacks.contains(Callback::D0Entry));
/// ```
///
/// Associated types, such as a work item's `Parent`, come first in the block:
///
/// ```
/// use kmdf::{Callback, Device, PnpPowerCallbacks, WorkItem, WorkItemCallback};
///
/// struct Lamp;
/// kmdf::vtable! { impl PnpPowerCallbacks for Lamp {} }
///
/// struct Blink;
///
/// kmdf::vtable! {
///     impl WorkItemCallback for Blink {
///         type Parent = Device<Lamp>;
///
///         fn run(&self, _item: &WorkItem<Self>, _lamp: &Device<Lamp>) {}
///     }
/// }
///
/// // `run` is what registers `EvtWorkItem`.
/// assert_eq!(Callback::WorkItem.method_name(), Some("run"));
/// ```
#[macro_export]
macro_rules! vtable {
    (
        $(#[$impl_attr:meta])*
        impl $($trait_:ident)::+ for $ty:ty {
            $(type $assoc:ident = $assoc_ty:ty;)*
            $(
                $(#[$attr:meta])*
                fn $name:ident $params:tt $(-> $ret:ty)? $body:block
            )*
        }
    ) => {
        $(#[$impl_attr])*
        impl $($trait_)::+ for $ty {
            const IMPLEMENTED: &'static [&'static str] = &[$(::core::stringify!($name)),*];
            $(type $assoc = $assoc_ty;)*
            $(
                $(#[$attr])*
                fn $name $params $(-> $ret)? $body
            )*
        }
    };
}
