//! Device interfaces and I/O control codes: how applications find a device and talk to it.
//!
//! A device registers a *device interface* ([`Device::create_device_interface`](crate::Device::create_device_interface),
//! `WdfDeviceCreateDeviceInterface`), a class named by a [`Guid`]; applications open the
//! device through it and send it requests, among them device I/O control requests whose
//! code [`ctl_code`] builds (`CTL_CODE`).
//!
//! ```
//! use kmdf::interface::{Access, Guid, TransferMethod, ctl_code};
//!
//! const GUID_DEVINTERFACE_TOASTER: Guid = Guid::parse("781EF630-72B2-11d2-B852-00C04FAD5171");
//! const IOCTL_TOASTER_DONENESS: u32 =
//!     ctl_code(0x8000, 0x800, TransferMethod::Buffered, Access::Any);
//!
//! assert_eq!(GUID_DEVINTERFACE_TOASTER.to_string(), "{781ef630-72b2-11d2-b852-00c04fad5171}");
//! assert_eq!(IOCTL_TOASTER_DONENESS, 0x8000_2000);
//! ```
//!
//! # The rules (docs/kmdf-behaviour.md section 9; the shared reference's section 7)
//!
//! KMDF registers an interface disabled and enables it once, at the end of the device's
//! *first* start (after `EvtDeviceSelfManagedIoInit`); idle, sleep and a rebalance stop do
//! not disable it; removal does, after `EvtDeviceReleaseHardware` and before the queues
//! are purged (`FxPkgPnp::PnpEnableInterfacesAndRegisterWmi`, `PnpDisableInterfaces`). An
//! interface created after the first start stays disabled until
//! [`Device::set_device_interface_state`](crate::Device::set_device_interface_state) enables it. An application cannot open the device
//! through a disabled interface.

use core::fmt;
use core::str::FromStr;

/// A GUID, such as a device interface class (`GUID_DEVINTERFACE_*`).
///
/// Built from its text form at compile time with [`Guid::parse`], or at run time with
/// [`FromStr`]. Printed in the registry's form, lower case in braces.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid {
    /// `Data1`.
    pub data1: u32,
    /// `Data2`.
    pub data2: u16,
    /// `Data3`.
    pub data3: u16,
    /// `Data4`.
    pub data4: [u8; 8],
}

/// The error of parsing a [`Guid`] from text that is not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidGuid;

impl fmt::Display for InvalidGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not a GUID: expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex digits), \
             optionally in braces",
        )
    }
}

impl core::error::Error for InvalidGuid {}

const fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

impl Guid {
    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits of either case), with or
    /// without braces, in a `const` context:
    ///
    /// ```
    /// # use kmdf::interface::Guid;
    /// const G: Guid = Guid::parse("{781EF630-72B2-11d2-B852-00C04FAD5171}");
    /// assert_eq!(G.data1, 0x781E_F630);
    /// assert_eq!(G.data4, [0xB8, 0x52, 0x00, 0xC0, 0x4F, 0xAD, 0x51, 0x71]);
    /// ```
    ///
    /// Text that is not a GUID does not compile in a constant:
    ///
    /// ```compile_fail
    /// # use kmdf::interface::Guid;
    /// const G: Guid = Guid::parse("781EF630-72B2-11d2-B852");
    /// ```
    ///
    /// # Panics
    ///
    /// When `text` is not a GUID (at compile time in a constant); [`Guid::try_parse`] and
    /// [`FromStr`] return an error instead.
    #[must_use]
    pub const fn parse(text: &str) -> Guid {
        match Guid::try_parse(text) {
            Some(guid) => guid,
            None => panic!("not a GUID: expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"),
        }
    }

    /// Parses a GUID as [`parse`](Self::parse) does; `None` when `text` is not one.
    #[must_use]
    pub const fn try_parse(text: &str) -> Option<Guid> {
        let mut bytes = text.as_bytes();
        if let [b'{', inner @ .., b'}'] = bytes {
            bytes = inner;
        }
        if bytes.len() != 36 {
            return None;
        }
        let mut value = [0u8; 16];
        let mut digit = 0; // hex digits read
        let mut i = 0;
        while i < 36 {
            let byte = bytes[i];
            if i == 8 || i == 13 || i == 18 || i == 23 {
                if byte != b'-' {
                    return None;
                }
            } else {
                let Some(nibble) = hex(byte) else { return None };
                value[digit / 2] = (value[digit / 2] << 4) | nibble;
                digit += 1;
            }
            i += 1;
        }
        Some(Guid {
            data1: u32::from_be_bytes([value[0], value[1], value[2], value[3]]),
            data2: u16::from_be_bytes([value[4], value[5]]),
            data3: u16::from_be_bytes([value[6], value[7]]),
            data4: [
                value[8], value[9], value[10], value[11], value[12], value[13], value[14],
                value[15],
            ],
        })
    }
}

impl FromStr for Guid {
    type Err = InvalidGuid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Guid::try_parse(text).ok_or(InvalidGuid)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// How the buffers of a device I/O control request are passed (`METHOD_*`): the low two
/// bits of the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum TransferMethod {
    /// `METHOD_BUFFERED`: input and output share one system buffer.
    Buffered = 0,
    /// `METHOD_IN_DIRECT`: the output buffer is mapped through an MDL, read by the driver.
    InDirect = 1,
    /// `METHOD_OUT_DIRECT`: the output buffer is mapped through an MDL, written by the driver.
    OutDirect = 2,
    /// `METHOD_NEITHER`: the caller's raw pointers; `kmdf` gives no buffer for them from
    /// user mode (`STATUS_INVALID_DEVICE_REQUEST`, as KMDF).
    Neither = 3,
}

impl TransferMethod {
    /// The method of an I/O control code.
    #[must_use]
    pub const fn of(code: u32) -> TransferMethod {
        match code & 3 {
            0 => TransferMethod::Buffered,
            1 => TransferMethod::InDirect,
            2 => TransferMethod::OutDirect,
            _ => TransferMethod::Neither,
        }
    }
}

/// The access a caller needs to send a device I/O control request (`FILE_*_ACCESS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Access {
    /// `FILE_ANY_ACCESS`.
    Any = 0,
    /// `FILE_READ_ACCESS`.
    Read = 1,
    /// `FILE_WRITE_ACCESS`.
    Write = 2,
    /// `FILE_READ_ACCESS | FILE_WRITE_ACCESS`.
    ReadWrite = 3,
}

/// An I/O control code (`CTL_CODE(DeviceType, Function, Method, Access)`):
/// `DeviceType << 16 | Access << 14 | Function << 2 | Method`.
///
/// `device_type` is 16 bits (vendor types from `0x8000`), `function` 12 bits (vendor
/// functions from `0x800`); wider values do not compile in a constant:
///
/// ```compile_fail
/// # use kmdf::interface::{Access, TransferMethod, ctl_code};
/// const BAD: u32 = ctl_code(0x8000, 0x1000, TransferMethod::Buffered, Access::Any);
/// ```
///
/// # Panics
///
/// When `device_type` exceeds 16 bits or `function` 12 bits.
#[must_use]
pub const fn ctl_code(
    device_type: u32,
    function: u32,
    method: TransferMethod,
    access: Access,
) -> u32 {
    assert!(device_type <= 0xFFFF, "CTL_CODE: the device type is 16 bits");
    assert!(function <= 0xFFF, "CTL_CODE: the function is 12 bits");
    (device_type << 16) | ((access as u32) << 14) | (function << 2) | method as u32
}

impl<T> crate::Device<T> {
    /// Registers a device interface of class `guid`, with an optional reference string
    /// (`WdfDeviceCreateDeviceInterface`). It is registered disabled; KMDF enables it at the
    /// end of the device's first start, or, when created after it, when
    /// [`set_device_interface_state`](Self::set_device_interface_state) enables it.
    ///
    /// Callable at `PASSIVE_LEVEL`, typically in `device_add`. In the kernel the reference
    /// string is at most 128 UTF-16 units (it is converted on the stack).
    ///
    /// # Errors
    ///
    /// * `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL` above `PASSIVE_LEVEL`.
    /// * `STATUS_INVALID_PARAMETER` when the device registered the same class and
    ///   reference string already.
    /// * `STATUS_DELETE_PENDING` once the device is being removed.
    /// * In the kernel, `STATUS_INVALID_PARAMETER` for a reference string longer than 128
    ///   UTF-16 units.
    pub fn create_device_interface(&self, guid: &Guid, reference: Option<&str>) -> crate::Result {
        crate::backend::interface::create(&self.raw, *guid, reference)
    }

    /// Enables or disables a device interface the device registered
    /// (`WdfDeviceSetDeviceInterfaceState`). Disabling it keeps new opens out; handles
    /// already open stay open.
    ///
    /// Returns nothing, as the DDI: KMDF ignores an interface the device did not register.
    /// The host runtime reports that as a driver bug (a verifier finding, see
    /// [`Runtime::verifier_findings`](crate::host::Runtime::verifier_findings)); in the kernel
    /// nothing happens, as in C (also for a reference string longer than 128 UTF-16 units,
    /// which [`create_device_interface`](Self::create_device_interface) refuses).
    ///
    /// # Panics
    ///
    /// Above `PASSIVE_LEVEL` (KMDF's verifier bug-checks): on the host runtime every I/O
    /// callback runs at `DISPATCH_LEVEL`, so call it from a work item or a PnP callback.
    pub fn set_device_interface_state(&self, guid: &Guid, reference: Option<&str>, enabled: bool) {
        crate::backend::interface::set_state(&self.raw, *guid, reference, enabled);
    }
}
