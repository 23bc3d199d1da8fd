//! Counted object references (`WdfObjectReferenceActual`) and views of handles as the
//! crate's handle types.

use core::ptr::{self, NonNull};

use wdk_sys::{WDFOBJECT, call_unsafe_wdf_function_binding};

use super::RawObject;
use crate::object::sealed;

/// One reference on a framework object, as `ObjectRef` holds it.
///
/// The object is known by its handle (for the reference count) and by its view, the address
/// `&O` points at: the handle itself for most objects, the object's context for work items,
/// so that their calls reach their state without a context lookup.
///
/// # Invariants
///
/// `handle` is the handle of a framework object on which this value owns one reference,
/// released in `Drop`; the object's memory (and so `view`, the handle or a place in the
/// object's context) stays valid until then.
pub(crate) struct RawRef {
    handle: NonNull<core::ffi::c_void>,
    view: NonNull<RawObject>,
}

// SAFETY: a WDF object reference can be taken, used and released on any thread (the
// reference DDIs are callable at IRQL <= DISPATCH_LEVEL from any thread); `RawRef` is only
// the handle plus that ownership.
unsafe impl Send for RawRef {}
// SAFETY: shared access only reads the handle.
unsafe impl Sync for RawRef {}

impl RawRef {
    /// Takes a reference on the object whose handle `view` is.
    pub(crate) fn new(view: &RawObject) -> Self {
        Self::with_view(view.handle(), view)
    }

    /// Takes a reference on `handle`'s object (`WdfObjectReferenceActual`, no tag, line or
    /// file: what `WdfObjectReference` passes without `WDF_OBJECT_REFERENCE_TAG` debugging);
    /// the reference dereferences to `view`, which lives as long as the object.
    pub(crate) fn with_view(handle: WDFOBJECT, view: &RawObject) -> Self {
        let handle = NonNull::new(handle).expect("kmdf: NULL framework object handle");
        // SAFETY: `view` borrows a live framework object (the caller's use of this crate's
        // views), so its handle is valid.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfObjectReferenceActual,
                handle.as_ptr(),
                ptr::null_mut(),
                0,
                ptr::null(),
            );
        }
        // INVARIANT: the reference taken just above is owned by the new value.
        Self { handle, view: NonNull::from(view) }
    }
}

impl Clone for RawRef {
    fn clone(&self) -> Self {
        Self::with_view(self.handle.as_ptr(), raw_of(self))
    }
}

impl Drop for RawRef {
    fn drop(&mut self) {
        let handle: WDFOBJECT = self.handle.as_ptr();
        // SAFETY: releases the reference this value owns (type invariant); the object may be
        // destroyed by it, and nothing uses the handle afterwards.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfObjectDereferenceActual,
                handle,
                ptr::null_mut(),
                0,
                ptr::null(),
            );
        }
    }
}

/// The object a reference points at, borrowed for as long as the reference.
pub(crate) fn raw_of(raw: &RawRef) -> &RawObject {
    // SAFETY: the reference keeps the object valid while `raw` lives (type invariant), and
    // `RawObject` is never read through: it only stands for the handle.
    unsafe { raw.view.as_ref() }
}

/// Views an object as the handle type `O`.
pub(crate) fn view<O: sealed::Object>(raw: &RawObject) -> &O {
    const {
        assert!(size_of::<O>() == size_of::<RawObject>());
        assert!(align_of::<O>() == align_of::<RawObject>());
    }
    // SAFETY: `O` is a `#[repr(transparent)]` struct whose only non-zero-sized field is a
    // `RawObject` (the invariant of the sealed `Object` trait, implemented only in this
    // crate): the same zero-sized view of the same handle, with `raw`'s lifetime.
    unsafe { &*ptr::from_ref(raw).cast::<O>() }
}

/// Views a handle as the handle type `O`.
///
/// # Safety
///
/// `handle` is a live framework object of the kind `O` stands for (and with the context
/// type `O` expects), and stays alive for `'a`.
pub(crate) unsafe fn view_handle<'a, O: sealed::Object>(handle: WDFOBJECT) -> &'a O {
    assert!(!handle.is_null(), "kmdf: NULL framework object handle");
    // SAFETY: a non-null handle of a live object (the caller's contract); `RawObject` is
    // zero-sized and never read through, so the reference is valid for `'a`.
    let raw: &'a RawObject = unsafe { &*handle.cast_const().cast::<RawObject>() };
    view(raw)
}
