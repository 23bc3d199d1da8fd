//! The kernel backend: a thin layer over `wdk-sys`.
//!
//! Every framework call is `call_unsafe_wdf_function_binding!`, the same indirect call
//! through the WDF function table a C driver makes. Nothing here allocates: a driver's Rust
//! values live in the context space KMDF allocates with each object.
//!
//! # Contexts
//!
//! Every object `kmdf` creates carries one context of the crate's single context type,
//! [`CONTEXT_TYPE`], sized per object with `ContextSizeOverride` to hold a [`Slot<T>`]: a
//! header and the driver's `T`. The `T` is written right after creation and dropped in the
//! object's `EvtDestroyCallback`. Which `T` an object holds is known statically from the
//! handle type (`Device<T>`), which only this backend creates, from handles of objects it
//! created with that `T`.

pub(crate) mod debug;
pub(crate) mod device;
pub(crate) mod entry;
pub(crate) mod file;
#[cfg(feature = "sys-harness")]
pub mod harness;
pub(crate) mod interface;
pub(crate) mod io_queue;
pub(crate) mod object;
pub(crate) mod power_policy;
pub(crate) mod raw;
pub(crate) mod request;
pub(crate) mod sync;
pub(crate) mod time;
pub(crate) mod timer;
pub(crate) mod work_item;

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomPinned;
use core::mem::size_of;
use core::ptr::{self, NonNull};

use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, PFN_WDF_OBJECT_CONTEXT_CLEANUP,
    WDF_OBJECT_ATTRIBUTES, WDF_OBJECT_CONTEXT_TYPE_INFO, WDFOBJECT,
    call_unsafe_wdf_function_binding,
};

pub(crate) use device::{RawDeviceInit, RawResources};
use raw::{Slot, SlotHeader};

/// What `&Device<T>` and `&Timer<T>` point at: nothing Rust may read. The address *is* the
/// WDF handle.
///
/// # Invariants
///
/// A `&RawObject` is only a handle *value*: its address is the handle of a live framework
/// object, and no memory is ever reached through it. It is zero-sized, so the reference
/// grants access to no bytes, and it needs none: a context is found by passing the handle
/// to `WdfObjectGetTypedContextWorker`, whose result is a pointer of its own (see [`slot`]),
/// not one derived from the reference. Objects whose methods reach memory through the
/// reference have a view type that covers that memory instead (a work item's
/// [`work_item::RawItem`]), and no `RawObject`: the two kinds of view are different types,
/// and only this one has a [`handle`](Self::handle).
#[repr(C)]
pub struct RawObject {
    _opaque: [u8; 0],
    _pinned: PhantomPinned,
}

impl RawObject {
    /// The WDF handle this reference stands for.
    pub(crate) fn handle(&self) -> WDFOBJECT {
        ptr::from_ref(self).cast_mut().cast()
    }
}

impl fmt::Debug for RawObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:p}", self.handle())
    }
}

/// `WDF_OBJECT_CONTEXT_TYPE_INFO` is plain data with pointers to static data, so sharing it
/// between threads is sound; the wrapper says so.
#[repr(transparent)]
pub(crate) struct ContextTypeInfo(UnsafeCell<WDF_OBJECT_CONTEXT_TYPE_INFO>);

// SAFETY: KMDF only reads the type info, and this crate never writes it after
// initialization, so shared access from any thread is a read of immutable data.
unsafe impl Sync for ContextTypeInfo {}

impl ContextTypeInfo {
    pub(crate) fn as_ptr(&self) -> *const WDF_OBJECT_CONTEXT_TYPE_INFO {
        self.0.get().cast_const()
    }
}

/// The one context type of every object `kmdf` creates. KMDF finds a context by the
/// address of its type info, so this must be a single static.
pub(crate) static CONTEXT_TYPE: ContextTypeInfo =
    ContextTypeInfo(UnsafeCell::new(WDF_OBJECT_CONTEXT_TYPE_INFO {
        Size: struct_size::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
        ContextName: c"kmdf::Slot".as_ptr(),
        ContextSize: size_of::<SlotHeader>(),
        // `ContextTypeInfo` is `repr(transparent)`, so its address is the info's address.
        UniqueType: (&raw const CONTEXT_TYPE).cast(),
        EvtDriverGetUniqueContextType: None,
    }));

/// `WDF_OBJECT_ATTRIBUTES_INIT` plus the crate's context type sized for `T`, its
/// `EvtDestroyCallback` (which drops the `T`) and an optional `EvtCleanupCallback`.
pub(crate) fn attributes_for<T: Send + Sync + 'static>(
    cleanup: PFN_WDF_OBJECT_CONTEXT_CLEANUP,
    parent: WDFOBJECT,
) -> WDF_OBJECT_ATTRIBUTES {
    let () = Slot::<T>::ALIGNMENT_OK;
    WDF_OBJECT_ATTRIBUTES {
        Size: struct_size::<WDF_OBJECT_ATTRIBUTES>(),
        EvtCleanupCallback: cleanup,
        EvtDestroyCallback: Some(destroy::<T>),
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ParentObject: parent,
        ContextSizeOverride: size_of::<Slot<T>>(),
        ContextTypeInfo: CONTEXT_TYPE.as_ptr(),
    }
}

/// The slot of an object created with [`attributes_for::<T>`].
fn slot<T>(object: WDFOBJECT) -> *mut Slot<T> {
    // SAFETY: `WdfObjectGetTypedContextWorker` accepts any live object handle and returns
    // NULL when the object has no context of this type; the callers pass handles of live
    // objects they created.
    let context = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfObjectGetTypedContextWorker,
            object,
            CONTEXT_TYPE.as_ptr()
        )
    };
    context.cast()
}

/// Writes `value` into the context of a freshly created object, and returns it in place.
///
/// # Safety
///
/// `object` was created with [`attributes_for::<T>`] an instant ago and its context has not
/// been written; no other thread can reach it yet. The object stays alive for `'a`.
pub(crate) unsafe fn write_context<'a, T>(object: WDFOBJECT, value: T) -> &'a T {
    // SAFETY: the caller's contract is `write_context_ptr`'s.
    let value = unsafe { write_context_ptr(object, value) };
    // SAFETY: from here on the value is only read (shared), until `destroy` drops it after
    // the object's last reference is gone, which is after `'a` (the caller's contract).
    unsafe { value.as_ref() }
}

/// [`write_context`], returning the value as a pointer with the provenance of the whole
/// value (from the context's `UnsafeCell`), for views that cover it (a work item's).
///
/// # Safety
///
/// As [`write_context`].
pub(crate) unsafe fn write_context_ptr<T>(object: WDFOBJECT, value: T) -> NonNull<T> {
    let slot = NonNull::new(slot::<T>(object)).expect("kmdf: object created without its context");
    // SAFETY: the slot is valid, zero-filled context memory sized and aligned for `Slot<T>`
    // (`attributes_for`), not written yet, that no other thread can reach (the caller's
    // contract).
    unsafe { Slot::write(slot, value) }
}

/// The value in an object's context.
///
/// # Safety
///
/// `object` was created with [`attributes_for::<T>`] and is alive for `'a`.
pub(crate) unsafe fn context<'a, T>(object: WDFOBJECT) -> &'a T {
    // SAFETY: the caller's contract is `try_context`'s.
    let value = unsafe { try_context(object) };
    value.expect("kmdf: context used before it was written (work enqueued during device creation?)")
}

/// The value in an object's context, or `None` when it has not been written yet.
///
/// # Safety
///
/// `object` was created with [`attributes_for::<T>`] and is alive for `'a`.
pub(crate) unsafe fn try_context<'a, T>(object: WDFOBJECT) -> Option<&'a T> {
    // SAFETY: the caller's contract is `try_context_ptr`'s.
    let value = unsafe { try_context_ptr::<T>(object) }?;
    // SAFETY: the value is only written before the object is published and only dropped in
    // `destroy`, after every reference to the object is gone: reading it is shared access.
    Some(unsafe { value.as_ref() })
}

/// The value in an object's context, as a pointer with the provenance of the whole value
/// (from the context's `UnsafeCell`), or `None` when it has not been written yet.
///
/// # Safety
///
/// `object` was created with [`attributes_for::<T>`] and is alive.
pub(crate) unsafe fn try_context_ptr<T>(object: WDFOBJECT) -> Option<NonNull<T>> {
    let slot = NonNull::new(slot::<T>(object)).expect("kmdf: object has no kmdf context");
    // SAFETY: the slot is a `Slot<T>` (`attributes_for::<T>`), zero-filled by KMDF or written
    // by `write_context_ptr`, valid while the object is (the caller's contract).
    unsafe { Slot::get(slot) }
}

/// The value in an object's context, as [`try_context_ptr`] returns it, or `None` when the
/// object has no context of the crate's type, or it has not been written.
///
/// # Safety
///
/// `object` is a live object; if it has a context of the crate's type, that is a
/// `Slot<T>`.
pub(crate) unsafe fn find_context_ptr<T>(object: WDFOBJECT) -> Option<NonNull<T>> {
    let slot = NonNull::new(slot::<T>(object))?;
    // SAFETY: the slot is a `Slot<T>` (the caller's contract), zero-filled by KMDF or
    // written by `write_context_ptr`, valid while the object is.
    unsafe { Slot::get(slot) }
}

/// `EvtDestroyCallback` of every `kmdf` object: drops the value, if it was written.
unsafe extern "C" fn destroy<T>(object: WDFOBJECT) {
    let Some(slot) = NonNull::new(slot::<T>(object)) else {
        return;
    };
    // SAFETY: KMDF calls the destroy callback once, when the last reference is gone, with
    // the context (a `Slot<T>`, zero-filled or written) still allocated; nothing else can
    // access it any more.
    unsafe { Slot::drop_value(slot) };
}

/// The `Size` field of a WDF structure.
#[allow(clippy::cast_possible_truncation, reason = "WDF structures are far smaller than 4 GiB")]
pub(crate) const fn struct_size<T>() -> u32 {
    size_of::<T>() as u32
}

/// Turns a `Result` into the `NTSTATUS` a callback returns.
pub(crate) fn status(result: crate::Result) -> wdk_sys::NTSTATUS {
    crate::NtStatus::from(result).to_raw()
}
