//! Device interfaces: `WdfDeviceCreateDeviceInterface` and
//! `WdfDeviceSetDeviceInterfaceState`.
//!
//! The reference string is passed as a `UNICODE_STRING` built on the stack (nothing here
//! allocates): at most [`MAX_REFERENCE`] UTF-16 units.

use core::ptr;

use wdk_sys::{GUID, UNICODE_STRING, call_unsafe_wdf_function_binding};

use super::RawObject;
use super::sync::current_irql;
use crate::interface::Guid;
use crate::sync::Irql;
use crate::{NtError, NtStatus, Result};

/// The longest reference string, in UTF-16 units.
pub(crate) const MAX_REFERENCE: usize = 128;

fn guid(guid: Guid) -> GUID {
    GUID { Data1: guid.data1, Data2: guid.data2, Data3: guid.data3, Data4: guid.data4 }
}

/// Calls `f` with the reference string as a `UNICODE_STRING` (or NULL for none).
fn with_reference<R>(
    reference: Option<&str>,
    f: impl FnOnce(*const UNICODE_STRING) -> R,
) -> Result<R> {
    let Some(reference) = reference else {
        return Ok(f(ptr::null()));
    };
    let mut buffer = [0_u16; MAX_REFERENCE];
    let mut length = 0;
    for unit in reference.encode_utf16() {
        *buffer.get_mut(length).ok_or(NtError::INVALID_PARAMETER)? = unit;
        length += 1;
    }
    let bytes = u16::try_from(length * 2).map_err(|_| NtError::INVALID_PARAMETER)?;
    let string =
        UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: buffer.as_mut_ptr() };
    Ok(f(&raw const string))
}

pub(crate) fn create(device: &RawObject, class: Guid, reference: Option<&str>) -> Result {
    if current_irql() != Irql::Passive {
        return Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
    }
    let class = guid(class);
    let status = with_reference(reference, |reference| {
        // SAFETY: the device is live (borrowed); the GUID and the string outlive the call
        // (KMDF copies them); at PASSIVE_LEVEL (checked above).
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfDeviceCreateDeviceInterface,
                device.handle().cast(),
                &raw const class,
                reference,
            )
        }
    })?;
    NtStatus::from_raw(status).ok()
}

pub(crate) fn set_state(device: &RawObject, class: Guid, reference: Option<&str>, enabled: bool) {
    assert!(
        current_irql() == Irql::Passive,
        "kmdf: Device::set_device_interface_state above PASSIVE_LEVEL"
    );
    let class = guid(class);
    // A reference string too long for `create` names no interface: KMDF would ignore it.
    let _ = with_reference(reference, |reference| {
        // SAFETY: the device is live (borrowed); the GUID and the string outlive the call;
        // at PASSIVE_LEVEL (asserted above).
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfDeviceSetDeviceInterfaceState,
                device.handle().cast(),
                &raw const class,
                reference,
                u8::from(enabled),
            );
        }
    });
}
