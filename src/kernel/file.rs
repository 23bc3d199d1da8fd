//! File objects: `WdfDeviceInitSetFileObjectConfig` with the `EvtDeviceFileCreate`,
//! `EvtFileCleanup` and `EvtFileClose` trampolines, and `DeviceInit`'s I/O settings.
//!
//! # The file's context, and its type tag
//!
//! KMDF allocates a file object's context itself, from the attributes given once for all
//! the device's file objects; `kmdf` sizes it for a [`FileContext<F>`]: a [`Tag`] naming
//! `F`, then the `F` that `EvtDeviceFileCreate` returns. `Request::file::<F>()` gets a
//! file object of *some* device, whose context type `F` is not known statically, so it
//! reads the tag first and views the context as an `F` only when the tag is `F`'s.
//!
//! The tag is at the same offset in every `Slot<FileContext<F>>`: `Tag` is aligned to 16
//! bytes, the most a context may need (`Slot::ALIGNMENT_OK`, checked at compile time for
//! every `F`), so `FileContext<F>` (`repr(C)`, the tag first) is 16-aligned whatever `F`
//! is, and starts at the same offset in the slot. A file object of a device without file
//! objects of `kmdf`'s (no `set_file_object`) has no context of the crate's type:
//! `WdfObjectGetTypedContextWorker` answers NULL, and `file` answers `None`.

use core::any::TypeId;
use core::ptr;

use wdk_sys::{
    _WDF_DEVICE_IO_TYPE, _WDF_FILEOBJECT_CLASS, _WDF_TRI_STATE, WDF_FILEOBJECT_CONFIG, WDFDEVICE,
    WDFFILEOBJECT, WDFOBJECT, WDFREQUEST, call_unsafe_wdf_function_binding,
};

use super::device::{RawDeviceInit, device_ref};
use super::object::view_handle;
use super::raw::Slot;
use super::{RawObject, attributes_for, struct_size, write_context};
use crate::file::{FileCallbacks, FileObject, IoType};
use crate::{Callback, Device, NtStatus};

/// A type's identity, aligned as much as any context may be (module docs).
#[repr(C, align(16))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag(TypeId);

/// The context of a file object of `kmdf`'s: the tag of `F`, then the `F`.
#[repr(C)]
pub(crate) struct FileContext<F> {
    tag: Tag,
    value: F,
}

impl<F: 'static> FileContext<F> {
    /// The compile-time check the tag's place relies on (module docs).
    const SAME_PLACE: () = {
        assert!(align_of::<FileContext<F>>() == align_of::<Tag>());
        assert!(align_of::<Slot<FileContext<F>>>() == align_of::<Slot<FileContext<()>>>());
    };
}

pub(crate) fn set_io_type(init: &mut RawDeviceInit<'_>, io_type: IoType) {
    let io_type = match io_type {
        IoType::Buffered => _WDF_DEVICE_IO_TYPE::WdfDeviceIoBuffered,
        IoType::Direct => _WDF_DEVICE_IO_TYPE::WdfDeviceIoDirect,
    };
    // SAFETY: the live PWDFDEVICE_INIT of this `EvtDriverDeviceAdd` (borrowed exclusively).
    unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitSetIoType, init.init, io_type) };
}

pub(crate) fn set_exclusive(init: &mut RawDeviceInit<'_>, exclusive: bool) {
    // SAFETY: as in `set_io_type`.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetExclusive,
            init.init,
            u8::from(exclusive)
        );
    }
}

pub(crate) fn set_file_object<F: FileCallbacks>(init: &mut RawDeviceInit<'_>) {
    let () = FileContext::<F>::SAME_PLACE;
    let on = |callback: Callback| F::REGISTERED.contains(callback);
    // WDF_FILEOBJECT_CONFIG_INIT: the callbacks, AutoForwardCleanupClose = WdfUseDefault,
    // FileObjectClass = WdfFileObjectWdfCannotUseFsContexts.
    let mut config = WDF_FILEOBJECT_CONFIG {
        Size: struct_size::<WDF_FILEOBJECT_CONFIG>(),
        EvtDeviceFileCreate: Some(create::<F>),
        EvtFileClose: on(Callback::FileClose).then_some(close::<F>),
        EvtFileCleanup: on(Callback::FileCleanup).then_some(cleanup::<F>),
        AutoForwardCleanupClose: _WDF_TRI_STATE::WdfUseDefault,
        FileObjectClass: _WDF_FILEOBJECT_CLASS::WdfFileObjectWdfCannotUseFsContexts,
    };
    // The file object's parent is its device (KMDF's, no other may be given).
    let mut attributes = attributes_for::<FileContext<F>>(None, ptr::null_mut());
    // SAFETY: as in `set_io_type`; the structures are initialized as their `_INIT`
    // functions do and KMDF copies them.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetFileObjectConfig,
            init.init,
            &raw mut config,
            &raw mut attributes,
        );
    }
    init.file_device = Some(TypeId::of::<F::Device>());
}

/// `EvtDeviceFileCreate`: builds the file's context, and completes the create request.
unsafe extern "C" fn create<F: FileCallbacks>(
    device: WDFDEVICE,
    request: WDFREQUEST,
    file: WDFFILEOBJECT,
) {
    // SAFETY: registered by `set_file_object::<F>` on a device whose context type is
    // `F::Device` (`create_with` checks it), alive for the call.
    let device = unsafe { device_ref::<F::Device>(device) };
    let status = match F::create(device) {
        Ok(value) => {
            // SAFETY: the file object KMDF created with `attributes_for::<FileContext<F>>`
            // for this create, not reachable by anyone else before the create request is
            // completed (below).
            unsafe { write_context(file, FileContext { tag: Tag(TypeId::of::<F>()), value }) };
            NtStatus::SUCCESS
        }
        Err(error) => error.into(),
    };
    // SAFETY: the create request is the callback's to complete, once.
    unsafe { call_unsafe_wdf_function_binding!(WdfRequestComplete, request, status.to_raw()) };
}

/// `EvtFileCleanup`.
unsafe extern "C" fn cleanup<F: FileCallbacks>(file: WDFFILEOBJECT) {
    // SAFETY: KMDF calls it with a live file object of this configuration, whose create
    // succeeded (its context is written), alive for the call.
    let Some(file) = (unsafe { file_of::<F>(file) }) else { return };
    file.context().cleanup(file, device_of(file));
}

/// `EvtFileClose`.
unsafe extern "C" fn close<F: FileCallbacks>(file: WDFFILEOBJECT) {
    // SAFETY: as in `cleanup`.
    let Some(file) = (unsafe { file_of::<F>(file) }) else { return };
    file.context().close(file, device_of(file));
}

/// The device of a file object in its callback (`WdfFileObjectGetDevice`): a file object's
/// cleanup and close run while its device exists, so it is lent for the callback.
fn device_of<F: FileCallbacks>(file: &FileObject<F>) -> &Device<F::Device> {
    // SAFETY: the file object is live (borrowed).
    let device =
        unsafe { call_unsafe_wdf_function_binding!(WdfFileObjectGetDevice, file.raw.handle()) };
    // SAFETY: file objects of `F` belong to devices of context `F::Device` (`create_with`
    // checks it); called only from the file's callbacks, while the device lives.
    unsafe { device_ref(device) }
}

/// The file object `file` as a `FileObject<F>`, if its context is an `F`.
///
/// # Safety
///
/// `file` is a live file object, alive for `'a`.
pub(crate) unsafe fn file_of<'a, F: FileCallbacks>(file: WDFOBJECT) -> Option<&'a FileObject<F>> {
    let () = FileContext::<F>::SAME_PLACE;
    // SAFETY: a live object (the caller's contract); NULL when it has no context of the
    // crate's type.
    let context = unsafe { super::find_context_ptr::<FileContext<()>>(file) }?;
    // SAFETY: a written context of the crate's type on a file object is a
    // `FileContext<G>` for some `G`, whose tag is at the same offset as in a
    // `FileContext<()>` (module docs): the place is inside the context, which the pointer
    // covers.
    let tag = unsafe { &raw const (*context.as_ptr()).tag };
    // SAFETY: that place holds the `Tag` written with the context, aligned (16 in every
    // `FileContext`), and only read after the write.
    let tag = unsafe { tag.read() };
    if tag != Tag(TypeId::of::<F>()) {
        return None;
    }
    // SAFETY: as above: a live file object with a context of `FileContext<F>` (its tag),
    // written, for `'a`.
    Some(unsafe { view_handle(file) })
}

pub(crate) fn context<F: FileCallbacks>(file: &RawObject) -> &F {
    // SAFETY: a `&FileObject<F>` only exists for a file object whose context is a written
    // `FileContext<F>` (`file_of`), alive for the borrow.
    let context: &FileContext<F> = unsafe { super::context(file.handle()) };
    &context.value
}
