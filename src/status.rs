//! `NTSTATUS` values, and [`NtError`], the error of every fallible `kmdf` call.
//!
//! KMDF reports every outcome as an `NTSTATUS`, a signed 32-bit value whose top two bits give
//! its severity: `00` success, `01` informational, `10` warning, `11` error. [`NtStatus`]
//! keeps any such value unchanged (so it crosses the FFI boundary for free) and adds names for
//! the codes a driver meets, so logs and test failures read `STATUS_DELETE_PENDING` rather
//! than `-1073741738`.
//!
//! A failure is an [`NtError`]: an `NTSTATUS` of warning or error severity, and nothing
//! else. [`Result`] carries it, so a callback cannot report "failure: success" (which the
//! framework would take as a success while the driver meant a failure): `Ok(())` is the one
//! way to succeed, and a trampoline hands KMDF `STATUS_SUCCESS` for it.
//!
//! ```compile_fail
//! // An error that means success does not type-check.
//! let _: kmdf::Result = Err(kmdf::NtStatus::SUCCESS);
//! ```
//!
//! ```
//! use kmdf::{NtError, NtStatus};
//!
//! assert_eq!(NtStatus::SUCCESS.ok(), Ok(()));
//! assert_eq!(NtStatus::CANCELLED.ok(), Err(NtError::CANCELLED));
//! assert_eq!(NtError::new(NtStatus::PENDING), None); // a success code is no error
//! assert_eq!(NtError::CANCELLED.to_string(), "STATUS_CANCELLED");
//! // The niche of `NtError` keeps `Result<(), NtError>` one `NTSTATUS` wide.
//! assert_eq!(size_of::<kmdf::Result>(), 4);
//! ```
//!
//! ```
//! use kmdf::NtStatus;
//!
//! let status = NtStatus::DEVICE_NOT_READY;
//! assert!(status.is_error());
//! assert_eq!(status.to_string(), "STATUS_DEVICE_NOT_READY");
//! assert_eq!(format!("{status:?}"), "STATUS_DEVICE_NOT_READY (0xC00000A3)");
//! assert_eq!(NtStatus::from_raw(0x1234_5678).to_string(), "NTSTATUS 0x12345678");
//! ```

use core::fmt;
use core::num::NonZeroI32;

/// The result of a `kmdf` call: `Ok` or the failure, an [`NtError`].
pub type Result<T = ()> = core::result::Result<T, NtError>;

/// An `NTSTATUS` code.
///
/// A transparent wrapper over the raw `i32`, so it is what the kernel passes and returns.
/// [`NtStatus::is_success`] follows `NT_SUCCESS`: success and informational codes are
/// successes, warnings and errors are failures.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct NtStatus(i32);

/// One table drives the constants and their names, so a name cannot drift from its value.
/// Failure codes get an [`NtError`] constant of the same name too.
macro_rules! status_codes {
    (
        success { $($(#[$sdoc:meta])* $sname:ident = $svalue:literal,)* }
        failure { $($(#[$fdoc:meta])* $fname:ident = $fvalue:literal,)* }
    ) => {
        impl NtStatus {
            $(
                $(#[$sdoc])*
                pub const $sname: Self = Self::from_u32($svalue);
            )*
            $(
                $(#[$fdoc])*
                pub const $fname: Self = Self::from_u32($fvalue);
            )*
        }

        impl NtError {
            $(
                $(#[$fdoc])*
                pub const $fname: Self = Self::from_failure(NtStatus::$fname);
            )*
        }

        /// The symbolic name of a known code, as the WDK headers spell it.
        const fn known_name(status: NtStatus) -> Option<&'static str> {
            match status.0.cast_unsigned() {
                $($svalue => Some(concat!("STATUS_", stringify!($sname))),)*
                $($fvalue => Some(concat!("STATUS_", stringify!($fname))),)*
                _ => None,
            }
        }
    };
}

status_codes! {
    success {
    /// `STATUS_SUCCESS`: the operation completed.
    SUCCESS = 0x0000_0000,
    /// `STATUS_TIMEOUT`: a wait ended because its timeout expired (a success code).
    TIMEOUT = 0x0000_0102,
    /// `STATUS_PENDING`: the operation will complete later (a success code).
    PENDING = 0x0000_0103,
    /// `STATUS_OBJECT_NAME_EXISTS`: the name (or context type) already exists (informational).
    OBJECT_NAME_EXISTS = 0x4000_0000,
    /// `STATUS_WDF_QUEUED`: the framework queued the operation (informational).
    WDF_QUEUED = 0x4020_0000,
    }
    failure {
    /// `STATUS_NO_MORE_ENTRIES`: nothing left to return (a warning, so a failure), for
    /// example an empty manual queue.
    NO_MORE_ENTRIES = 0x8000_001A,
    /// `STATUS_DEVICE_BUSY`: the device is busy (a warning, so a failure).
    DEVICE_BUSY = 0x8000_0011,
    /// `STATUS_UNSUCCESSFUL`: the operation failed, no further detail.
    UNSUCCESSFUL = 0xC000_0001,
    /// `STATUS_NOT_IMPLEMENTED`: the operation is not implemented.
    NOT_IMPLEMENTED = 0xC000_0002,
    /// `STATUS_INFO_LENGTH_MISMATCH`: a structure's size field is wrong.
    INFO_LENGTH_MISMATCH = 0xC000_0004,
    /// `STATUS_INVALID_HANDLE`: the handle does not name a live object.
    INVALID_HANDLE = 0xC000_0008,
    /// `STATUS_INVALID_PARAMETER`: a parameter is invalid.
    INVALID_PARAMETER = 0xC000_000D,
    /// `STATUS_NO_SUCH_DEVICE`: the device does not exist.
    NO_SUCH_DEVICE = 0xC000_000E,
    /// `STATUS_INVALID_DEVICE_REQUEST`: the request is not valid for this device or object.
    INVALID_DEVICE_REQUEST = 0xC000_0010,
    /// `STATUS_NO_MEMORY`: not enough memory.
    NO_MEMORY = 0xC000_0017,
    /// `STATUS_ACCESS_DENIED`: access denied.
    ACCESS_DENIED = 0xC000_0022,
    /// `STATUS_BUFFER_TOO_SMALL`: the buffer is too small.
    BUFFER_TOO_SMALL = 0xC000_0023,
    /// `STATUS_OBJECT_TYPE_MISMATCH`: the object is not of the expected type, or does not
    /// carry the expected context type.
    OBJECT_TYPE_MISMATCH = 0xC000_0024,
    /// `STATUS_OBJECT_NAME_NOT_FOUND`: the name was not found.
    OBJECT_NAME_NOT_FOUND = 0xC000_0034,
    /// `STATUS_DELETE_PENDING`: the object is being deleted (or was deleted).
    DELETE_PENDING = 0xC000_0056,
    /// `STATUS_INSUFFICIENT_RESOURCES`: the system lacks the resources to do it.
    INSUFFICIENT_RESOURCES = 0xC000_009A,
    /// `STATUS_DEVICE_NOT_READY`: the device is not ready.
    DEVICE_NOT_READY = 0xC000_00A3,
    /// `STATUS_NOT_SUPPORTED`: the request is not supported.
    NOT_SUPPORTED = 0xC000_00BB,
    /// `STATUS_INTERNAL_ERROR`: an internal error.
    INTERNAL_ERROR = 0xC000_00E5,
    /// `STATUS_CANCELLED`: the operation was cancelled.
    CANCELLED = 0xC000_0120,
    /// `STATUS_INVALID_DEVICE_STATE`: the device (or object) is not in a state that allows
    /// the operation.
    INVALID_DEVICE_STATE = 0xC000_0184,
    /// `STATUS_POSSIBLE_DEADLOCK`: the call would wait on itself, for example a work item
    /// flushed from its own callback.
    POSSIBLE_DEADLOCK = 0xC000_0194,
    /// `STATUS_DEVICE_POWER_FAILURE`: the device failed to change power state.
    DEVICE_POWER_FAILURE = 0xC000_028E,
    /// `STATUS_DEVICE_REMOVED`: the device was removed.
    DEVICE_REMOVED = 0xC000_02B6,
    /// `STATUS_POWER_STATE_INVALID`: the power state is not valid for the device, or the
    /// device's power policy does not allow the operation now.
    POWER_STATE_INVALID = 0xC000_02D3,
    /// `STATUS_WDF_INTERNAL_ERROR`: an internal framework error.
    WDF_INTERNAL_ERROR = 0xC020_0201,
    /// `STATUS_WDF_PAUSED`: the queue is stopped or powered off.
    WDF_PAUSED = 0xC020_0203,
    /// `STATUS_WDF_BUSY`: the framework object is busy.
    WDF_BUSY = 0xC020_0204,
    /// `STATUS_WDF_NO_CALLBACK`: a required callback was not supplied.
    WDF_NO_CALLBACK = 0xC020_020B,
    /// `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL`: the object's execution level does not
    /// allow the operation (for example a passive-level operation at `DISPATCH_LEVEL`).
    WDF_INCOMPATIBLE_EXECUTION_LEVEL = 0xC020_020C,
    /// `STATUS_WDF_PARENT_ASSIGNMENT_NOT_ALLOWED`: the object cannot be the parent.
    WDF_PARENT_ASSIGNMENT_NOT_ALLOWED = 0xC020_020F,
    /// `STATUS_WDF_PARENT_NOT_SPECIFIED`: the object needs a parent and none was given.
    WDF_PARENT_NOT_SPECIFIED = 0xC020_0212,
    }
}

impl NtStatus {
    /// Wraps a raw `NTSTATUS` value.
    #[must_use]
    pub const fn from_raw(raw: i32) -> Self {
        Self(raw)
    }

    /// Wraps a code written the way the WDK headers write it, as an unsigned hex literal.
    #[must_use]
    pub const fn from_u32(code: u32) -> Self {
        Self(code.cast_signed())
    }

    /// The raw `NTSTATUS` value.
    #[must_use]
    pub const fn to_raw(self) -> i32 {
        self.0
    }

    /// `NT_SUCCESS`: success or informational severity.
    #[must_use]
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// The opposite of [`is_success`](Self::is_success): warning or error severity.
    #[must_use]
    pub const fn is_failure(self) -> bool {
        !self.is_success()
    }

    /// `NT_INFORMATION`: informational severity (a success).
    #[must_use]
    pub const fn is_information(self) -> bool {
        self.severity() == 1
    }

    /// `NT_WARNING`: warning severity (a failure).
    #[must_use]
    pub const fn is_warning(self) -> bool {
        self.severity() == 2
    }

    /// `NT_ERROR`: error severity.
    #[must_use]
    pub const fn is_error(self) -> bool {
        self.severity() == 3
    }

    /// The symbolic name, when the code is one of the constants of this type.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        known_name(self)
    }

    /// `Ok(())` for a success code, `Err` for a failure code.
    ///
    /// # Errors
    ///
    /// `self` as an [`NtError`], when it is a failure code.
    pub const fn ok(self) -> Result {
        match NtError::new(self) {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }

    const fn severity(self) -> u32 {
        self.0.cast_unsigned() >> 30
    }
}

impl From<NtStatus> for i32 {
    fn from(status: NtStatus) -> Self {
        status.0
    }
}

impl From<i32> for NtStatus {
    fn from(raw: i32) -> Self {
        Self(raw)
    }
}

impl From<Result> for NtStatus {
    /// The status a callback hands back to the framework: `STATUS_SUCCESS` or the error.
    fn from(result: Result) -> Self {
        match result {
            Ok(()) => Self::SUCCESS,
            Err(error) => error.status(),
        }
    }
}

impl fmt::Display for NtStatus {
    /// The symbolic name, or `NTSTATUS 0x…` for a code this type has no name for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "NTSTATUS {:#010X}", self.0.cast_unsigned()),
        }
    }
}

impl fmt::Debug for NtStatus {
    /// The name and the hex code, e.g. `STATUS_CANCELLED (0xC0000120)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#010X})", self.0.cast_unsigned()),
            None => write!(f, "NTSTATUS {:#010X}", self.0.cast_unsigned()),
        }
    }
}

impl core::error::Error for NtStatus {}

/// A failure: an `NTSTATUS` of warning or error severity (`!NT_SUCCESS`), the error of
/// every fallible `kmdf` call.
///
/// It cannot hold a success code, so `Err` always means failure. Failure codes are negative,
/// so never 0: the niche keeps `Result<(), NtError>` as small as an `NTSTATUS`. It has a
/// constant for each failure code [`NtStatus`] names, under the same name, and prints as
/// `NtStatus` does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct NtError(NonZeroI32);

// `Err` costs no space: the niche (0 is no failure) holds `Ok(())`.
const _: () = assert!(size_of::<core::result::Result<(), NtError>>() == 4);

impl NtError {
    /// The error for `status`, or `None` when it is a success (or informational) code.
    #[must_use]
    pub const fn new(status: NtStatus) -> Option<Self> {
        if status.is_failure() {
            // A failure code is negative, so never zero.
            match NonZeroI32::new(status.0) {
                Some(raw) => Some(Self(raw)),
                None => None,
            }
        } else {
            None
        }
    }

    /// The error for a raw `NTSTATUS` value, or `None` when it is not a failure code.
    #[must_use]
    pub const fn from_raw(raw: i32) -> Option<Self> {
        Self::new(NtStatus::from_raw(raw))
    }

    /// The constant of a code known to be a failure; fails the build otherwise.
    const fn from_failure(status: NtStatus) -> Self {
        match Self::new(status) {
            Some(error) => error,
            None => panic!("an NtError constant must be a failure code"),
        }
    }

    /// The failure as an [`NtStatus`].
    #[must_use]
    pub const fn status(self) -> NtStatus {
        NtStatus(self.0.get())
    }

    /// The raw `NTSTATUS` value (negative).
    #[must_use]
    pub const fn to_raw(self) -> i32 {
        self.0.get()
    }

    /// The symbolic name, when the code is one of the constants of this type.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        known_name(self.status())
    }
}

impl From<NtError> for NtStatus {
    fn from(error: NtError) -> Self {
        error.status()
    }
}

impl From<NtError> for i32 {
    fn from(error: NtError) -> Self {
        error.to_raw()
    }
}

impl TryFrom<NtStatus> for NtError {
    /// The success (or informational) code that is no error.
    type Error = NtStatus;

    fn try_from(status: NtStatus) -> core::result::Result<Self, NtStatus> {
        Self::new(status).ok_or(status)
    }
}

impl PartialEq<NtStatus> for NtError {
    fn eq(&self, other: &NtStatus) -> bool {
        self.status() == *other
    }
}

impl PartialEq<NtError> for NtStatus {
    fn eq(&self, other: &NtError) -> bool {
        *self == other.status()
    }
}

impl fmt::Display for NtError {
    /// As [`NtStatus`]: the symbolic name, or `NTSTATUS 0x…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.status(), f)
    }
}

impl fmt::Debug for NtError {
    /// As [`NtStatus`]: the name and the hex code, e.g. `STATUS_CANCELLED (0xC0000120)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.status(), f)
    }
}

impl core::error::Error for NtError {}
