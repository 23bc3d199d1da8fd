//! Framework objects: counted references, and which objects can parent which.
//!
//! KMDF owns its objects. A driver normally only borrows one for the length of a callback
//! (`&Device<T>` in a PnP callback). To keep an object it created, such as a
//! [`WorkItem`], past the call that created it, the driver holds an
//! [`ObjectRef`]: a counted reference (`WdfObjectReference`) that keeps the object's memory
//! and context alive until the last `ObjectRef` is dropped (`WdfObjectDereference`).
//!
//! A reference does not keep the object from being *deleted*: when its parent goes away,
//! the framework still disposes it (its cleanup callback runs). Methods called on a deleted
//! object through a reference are safe and report `STATUS_DELETE_PENDING` where KMDF would
//! have ignored the call; the context stays readable until the last reference goes, when
//! it is dropped (`EvtDestroyCallback`).
//!
//! A reference does not keep the object's *parent* alive either, so that a device can keep
//! references to its own work items in its context without a reference cycle. This is why a
//! work item reaches its parent only inside its own callbacks, where KMDF guarantees the
//! parent is there (see [`WorkItemCallbacks::run`]).

use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;

use crate::backend;
use crate::{Device, PnpPowerCallbacks, Timer, TimerCallbacks, WorkItem, WorkItemCallbacks};

pub(crate) mod sealed {
    use crate::backend::RawObject;

    /// A handle type of a framework object: `&Self` is how drivers reach the object.
    ///
    /// # Invariant
    ///
    /// Implemented only inside this crate, and only for `#[repr(transparent)]` structs whose
    /// one field that is not `PhantomData` is the backend's view of the object: a
    /// `backend::RawObject` for the [`Handle`] types, the backend's own view type for the
    /// others (a work item's `backend::work_item::RawItem<T>`, which in the kernel covers
    /// the item's context). The backends rely on it to view their view type as a `&Self`.
    pub trait Object {}

    /// A handle type whose reference *is* the framework handle: `&Self` views a
    /// `backend::RawObject`, whose address is the handle in the kernel.
    ///
    /// Not implemented by [`WorkItem`](crate::WorkItem): in the kernel a `&WorkItem<T>`
    /// points at the item's context, not at its handle, so it can be neither a parent nor
    /// viewed from a handle (`view_handle` requires this trait).
    ///
    /// # Invariant
    ///
    /// As [`Object`], with the field a `backend::RawObject`.
    pub trait Handle: Object {
        /// The handle this reference stands for.
        fn raw(&self) -> &RawObject;
    }
}

/// A framework object that can be held with an [`ObjectRef`].
///
/// Sealed: implemented by the crate's object handle types ([`WorkItem`], [`Timer`]).
pub trait FrameworkObject: sealed::Object {}

/// A framework object that can be the parent of a work item: a device (later, queues).
///
/// Sealed: implemented by [`Device<T>`]. A work item cannot parent anything, and its
/// reference is not a handle a parent could be made of:
///
/// ```compile_fail
/// # use kmdf::{Device, PnpPowerCallbacks, WorkItem, WorkItemCallbacks};
/// # struct Lamp;
/// # kmdf::vtable! { impl PnpPowerCallbacks for Lamp {} }
/// # struct Blink;
/// # kmdf::vtable! {
/// #     impl WorkItemCallbacks for Blink {
/// #         type Parent = Device<Lamp>;
/// #         fn run(&self, _item: &WorkItem<Self>, _lamp: &Device<Lamp>) {}
/// #     }
/// # }
/// fn parent<P: kmdf::object::ParentObject>() {}
/// parent::<WorkItem<Blink>>();
/// ```
pub trait ParentObject: sealed::Handle + Send + Sync + 'static {}

impl<T> sealed::Object for Device<T> {}

impl<T> sealed::Handle for Device<T> {
    fn raw(&self) -> &backend::RawObject {
        &self.raw
    }
}

impl<T: PnpPowerCallbacks> ParentObject for Device<T> {}

impl<T> sealed::Object for WorkItem<T> {}

impl<T: WorkItemCallbacks> FrameworkObject for WorkItem<T> {}

impl<T> sealed::Object for crate::IoQueue<T> {}

impl<T> sealed::Handle for crate::IoQueue<T> {
    fn raw(&self) -> &backend::RawObject {
        &self.raw
    }
}

impl<T: crate::IoQueueCallbacks> FrameworkObject for crate::IoQueue<T> {}

impl<T> sealed::Object for crate::FileObject<T> {}

impl<T> sealed::Handle for crate::FileObject<T> {
    fn raw(&self) -> &backend::RawObject {
        &self.raw
    }
}

impl<T> sealed::Object for Timer<T> {}

impl<T> sealed::Handle for Timer<T> {
    fn raw(&self) -> &backend::RawObject {
        &self.raw
    }
}

impl<T: TimerCallbacks> FrameworkObject for Timer<T> {}

/// A counted reference to a framework object (`WdfObjectReference`, released with
/// `WdfObjectDereference` when dropped).
///
/// Dereferences to the object. Cloning takes one more reference. It is `Send` and `Sync`
/// when the object is, so it can live in a device context and be used from any callback.
///
/// ```
/// # use kmdf::{Device, PnpPowerCallbacks, WorkItem, WorkItemCallbacks};
/// # use kmdf::object::ObjectRef;
/// # struct Lamp;
/// # kmdf::vtable! { impl PnpPowerCallbacks for Lamp {} }
/// # struct Blink;
/// # kmdf::vtable! {
/// #     impl WorkItemCallbacks for Blink {
/// #         type Parent = Device<Lamp>;
/// #         fn run(&self, _item: &WorkItem<Self>, _lamp: &Device<Lamp>) {}
/// #     }
/// # }
/// fn assert_shareable<R: Send + Sync + Clone>() {}
/// assert_shareable::<ObjectRef<WorkItem<Blink>>>();
/// ```
pub struct ObjectRef<O: FrameworkObject> {
    raw: backend::object::RawRef,
    _object: PhantomData<O>,
}

impl<O: FrameworkObject> ObjectRef<O> {
    /// Wraps a reference the backend took on an object whose handle type is `O`.
    pub(crate) fn from_raw(raw: backend::object::RawRef) -> Self {
        Self { raw, _object: PhantomData }
    }
}

impl<T: WorkItemCallbacks> From<&WorkItem<T>> for ObjectRef<WorkItem<T>> {
    /// Takes one more reference on a work item the caller borrows, for example in its own
    /// callback: `ObjectRef::from(item)` (or `item.to_ref()`).
    fn from(item: &WorkItem<T>) -> Self {
        Self::from_raw(backend::work_item::new_ref(item))
    }
}

impl<T: TimerCallbacks> From<&Timer<T>> for ObjectRef<Timer<T>> {
    /// Takes one more reference on a timer the caller borrows, for example in its own
    /// callback: `ObjectRef::from(timer)` (or `timer.to_ref()`).
    fn from(timer: &Timer<T>) -> Self {
        Self::from_raw(backend::timer::new_ref(timer))
    }
}

impl<O: FrameworkObject> Deref for ObjectRef<O> {
    type Target = O;

    fn deref(&self) -> &O {
        backend::object::deref(&self.raw)
    }
}

impl<O: FrameworkObject> Clone for ObjectRef<O> {
    fn clone(&self) -> Self {
        Self { raw: self.raw.clone(), _object: PhantomData }
    }
}

impl<O: FrameworkObject> fmt::Debug for ObjectRef<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRef({:?})", self.raw)
    }
}
