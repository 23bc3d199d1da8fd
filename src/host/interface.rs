//! Device interfaces on the host: registered in the device's I/O package (`io.rs`), which
//! enables them at the first start and disables them on removal.

use super::device::io;
use super::object::RawObject;
use super::sync::current_irql;
use crate::interface::Guid;
use crate::sync::Irql;
use crate::{NtError, Result};

pub(crate) fn create(device: &RawObject, guid: Guid, reference: Option<&str>) -> Result {
    if current_irql() != Irql::Passive {
        return Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
    }
    io(device).create_interface(guid, reference)
}

pub(crate) fn set_state(device: &RawObject, guid: Guid, reference: Option<&str>, enabled: bool) {
    assert!(
        current_irql() == Irql::Passive,
        "kmdf: Device::set_device_interface_state above PASSIVE_LEVEL"
    );
    io(device).set_interface_state(guid, reference, enabled);
}
