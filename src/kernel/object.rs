//! Counted object references (`WdfObjectReferenceActual`) and views of handles as the
//! crate's handle types.

use core::ffi::c_void;
use core::fmt;
use core::ptr::{self, NonNull};

use wdk_sys::{WDFOBJECT, call_unsafe_wdf_function_binding};

use super::RawObject;
use crate::object::sealed;

/// One reference on a framework object, as `ObjectRef<O>` holds it.
///
/// The object is known by its handle (for the reference count) and by its view, where the
/// `&O` the reference dereferences to points: the handle itself for the [`sealed::Handle`]
/// types (a zero-sized [`RawObject`], never read through), the object's context for work
/// items (a [`RawItem`](super::work_item::RawItem) covering it), so that their calls reach
/// their state without a context lookup.
///
/// # Invariants
///
/// `handle` is the handle of a framework object on which this value owns one reference,
/// released in `Drop`. `view` was derived from a `&O` of that object, for the `O` of the
/// `ObjectRef<O>` that holds this value, with that reference's provenance (it covers what
/// the `&O` covers); the object's memory, and so what `view` points at, stays valid until
/// the reference is released.
pub(crate) struct RawRef {
    handle: NonNull<c_void>,
    view: NonNull<c_void>,
}

// SAFETY: a WDF object reference can be taken, used and released on any thread (the
// reference DDIs are callable at IRQL <= DISPATCH_LEVEL from any thread); `RawRef` is only
// the handle plus that ownership, and a view of an object whose handle types are `Sync`.
unsafe impl Send for RawRef {}
// SAFETY: shared access only reads the handle and the view's address.
unsafe impl Sync for RawRef {}

impl RawRef {
    /// Takes a reference on the object whose handle `view` is.
    pub(crate) fn new<O: sealed::Handle>(view: &O) -> Self {
        Self::with_view(view.raw().handle(), view)
    }

    /// Takes a reference on `handle`'s object (`WdfObjectReferenceActual`, no tag, line or
    /// file: what `WdfObjectReference` passes without `WDF_OBJECT_REFERENCE_TAG` debugging);
    /// the reference dereferences to `view`, the same object as the handle type `O`, which
    /// lives as long as the object.
    pub(crate) fn with_view<O: sealed::Object>(handle: WDFOBJECT, view: &O) -> Self {
        // `NonNull::from` keeps the reference's provenance: all of what `&O` covers.
        Self::take(handle, NonNull::from(view).cast())
    }

    fn take(handle: WDFOBJECT, view: NonNull<c_void>) -> Self {
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
        // INVARIANT: the reference taken just above is owned by the new value; `view` is
        // derived from a `&O` of the object (`with_view`, or a clone of a `RawRef`).
        Self { handle, view }
    }
}

impl Clone for RawRef {
    fn clone(&self) -> Self {
        // The object is alive (this value's reference), so its handle is valid.
        Self::take(self.handle.as_ptr(), self.view)
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

impl fmt::Debug for RawRef {
    /// The handle, whatever the view.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:p}", self.handle)
    }
}

/// The object a reference of an `ObjectRef<O>` points at, as `&O`, borrowed for as long as
/// the reference.
pub(crate) fn deref<O: sealed::Object>(raw: &RawRef) -> &O {
    // SAFETY: `view` was derived from a `&O` of this object with its provenance, and the
    // reference keeps what it points at valid while `raw` lives (type invariant); `O` is
    // the `O` of the `ObjectRef<O>` holding `raw` (`ObjectRef::from_raw` is only called with
    // a reference made for its `O`).
    unsafe { raw.view.cast::<O>().as_ref() }
}

/// Views a handle as the handle type `O`.
pub(crate) fn view<O: sealed::Handle>(raw: &RawObject) -> &O {
    const {
        assert!(size_of::<O>() == size_of::<RawObject>());
        assert!(align_of::<O>() == align_of::<RawObject>());
    }
    // SAFETY: `O` is a `#[repr(transparent)]` struct whose only field that is not
    // `PhantomData` is a `RawObject` (the invariant of the sealed `Handle` trait,
    // implemented only in this crate): the same zero-sized view of the same handle, with
    // `raw`'s lifetime.
    unsafe { &*ptr::from_ref(raw).cast::<O>() }
}

/// Views a handle as the handle type `O`: only types whose reference is the handle
/// ([`sealed::Handle`]), never a work item, whose reference is its context.
///
/// # Safety
///
/// `handle` is a live framework object of the kind `O` stands for (and with the context
/// type `O` expects), and stays alive for `'a`.
pub(crate) unsafe fn view_handle<'a, O: sealed::Handle>(handle: WDFOBJECT) -> &'a O {
    assert!(!handle.is_null(), "kmdf: NULL framework object handle");
    // SAFETY: a non-null handle of a live object (the caller's contract); `RawObject` is
    // zero-sized and never read through (its invariant), so the reference is valid for
    // `'a` and needs access to no memory.
    let raw: &'a RawObject = unsafe { &*handle.cast_const().cast::<RawObject>() };
    view(raw)
}
