//! [`HarnessError`]: a test drove the runtime wrongly, or asked for what is not there.

use core::fmt;

use crate::{Callback, NtError};

/// Why the runtime refused a test's request (loading, adding, reading a context,
/// injecting), as opposed to a driver callback's failure, which is the `NtError` in
/// [`HarnessError::Driver`].
///
/// These are not `NTSTATUS` codes: no KMDF call is behind them, only the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HarnessError {
    /// A driver callback (`DriverEntry`, `EvtDriverDeviceAdd`) failed with this status.
    Driver(NtError),
    /// The device's context is not of the type asked for.
    WrongContextType,
    /// There is no device: `EvtDriverDeviceAdd` succeeded without creating one, or the
    /// node's device was removed.
    NoDevice,
    /// The driver was unloaded.
    DriverUnloaded,
    /// The driver still has devices that were not removed, so it cannot be unloaded.
    DevicesRemain,
    /// The callback cannot fail (it returns nothing in KMDF), or is not a device's callback
    /// where a device's calls are counted: no failure can be injected into it.
    NotInjectable(Callback),
    /// Calls are counted from 1: there is no 0th call.
    ZerothCall,
}

impl From<NtError> for HarnessError {
    fn from(error: NtError) -> Self {
        Self::Driver(error)
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Driver(error) => write!(f, "the driver failed with {error}"),
            Self::WrongContextType => f.write_str("the context is not of the type asked for"),
            Self::NoDevice => {
                f.write_str("there is no device (none was created, or it was removed)")
            }
            Self::DriverUnloaded => f.write_str("the driver was unloaded"),
            Self::DevicesRemain => f.write_str("the driver still has devices"),
            Self::NotInjectable(callback) => {
                write!(f, "no failure can be injected into {callback}")
            }
            Self::ZerothCall => f.write_str("calls are counted from 1"),
        }
    }
}

impl core::error::Error for HarnessError {}
