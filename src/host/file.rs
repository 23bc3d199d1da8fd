//! File objects on the host: the `WDFFILEOBJECT` object kind, `DeviceInit`'s I/O
//! configuration, and the open of a handle (`IRP_MJ_CREATE`, `EvtDeviceFileCreate`).

use super::std;
use std::sync::Arc;

use super::device::{RawDeviceInit, device_ref};
use super::io::{FileTable, IoPackage};
use super::object::{KindState, NewObject, RawObject, StateSlot, view};
use super::object_kind::ObjectKind;
use super::trace::TraceEntry;
use crate::file::{FileCallbacks, FileObject, IoType};
use crate::interface::Guid;
use crate::{Callback, Result};

/// What a `WDFFILEOBJECT` adds to the common object: its kind. Its callbacks are lent the
/// device by the I/O package, which holds it for the call.
struct FileState;

impl KindState for FileState {
    fn kind(&self) -> ObjectKind {
        ObjectKind::File
    }
}

pub(crate) fn set_io_type(init: &mut RawDeviceInit<'_>, io_type: IoType) {
    init.io.io_type = io_type;
}

pub(crate) fn set_exclusive(init: &mut RawDeviceInit<'_>, exclusive: bool) {
    init.io.exclusive = exclusive;
}

pub(crate) fn set_file_object<F: FileCallbacks>(init: &mut RawDeviceInit<'_>) {
    init.io.file = Some(FileTable {
        registered: F::REGISTERED,
        device: core::any::TypeId::of::<F::Device>(),
        create: create::<F>,
        cleanup: cleanup::<F>,
        close: close::<F>,
    });
}

fn create<F: FileCallbacks>(device: &RawObject, file: &RawObject) -> Result {
    let context = F::create(device_ref::<F::Device>(device))?;
    file.set_context(context);
    Ok(())
}

fn cleanup<F: FileCallbacks>(device: &RawObject, file: &RawObject) {
    let file = view::<FileObject<F>>(file);
    file.context().cleanup(file, device_ref::<F::Device>(device));
}

fn close<F: FileCallbacks>(device: &RawObject, file: &RawObject) {
    let file = view::<FileObject<F>>(file);
    file.context().close(file, device_ref::<F::Device>(device));
}

pub(crate) fn context<F: FileCallbacks>(file: &RawObject) -> &F {
    file.expect_context::<F>()
}

/// Opens a handle on the device of `io` through an interface of class `guid`: the file
/// object is created, then `EvtDeviceFileCreate` builds its context or fails the open.
pub(crate) fn open(io: &Arc<IoPackage>, guid: &Guid) -> Result<Arc<RawObject>> {
    io.reserve_open(guid)?;
    let opened = (|| {
        let device = io.device().ok_or(crate::NtError::NO_SUCH_DEVICE)?;
        let file = RawObject::create(
            device.shared(),
            NewObject {
                parent: Some(&device),
                state: Some(StateSlot::new(Arc::new(FileState))),
                ..NewObject::new(ObjectKind::File)
            },
        )?;
        if let Some(table) = io.init.file {
            let entry = TraceEntry::new(Callback::DeviceFileCreate, Some(io.node));
            if let Err(status) = io.shared.invoke(entry, || (table.create)(&device, &file)) {
                file.delete();
                return Err(status);
            }
        }
        Ok(file)
    })();
    match opened {
        Ok(file) => {
            io.opened(&file);
            Ok(file)
        }
        Err(status) => {
            io.unreserve_open();
            Err(status)
        }
    }
}
