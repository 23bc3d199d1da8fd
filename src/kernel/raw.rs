//! The kernel backend's pointer logic, with no framework call in it: a context's layout
//! ([`Slot`]), the opaque view a reference to a work item is ([`Opaque`]), and the
//! intrusive list of the threads running a work item's callback ([`List`]).
//!
//! It uses `core` only, so it also compiles on the host: `tests/kernel_raw.rs` includes
//! this file and runs the tests below, under Miri too (`cargo +nightly miri test --test
//! kernel_raw`), with a zero-filled heap block standing for the context space KMDF
//! allocates with an object. What that cannot cover: the framework calls around this code
//! (that `WdfObjectGetTypedContextWorker` returns the block sized by `ContextSizeOverride`,
//! zero-filled and 16-byte aligned, and when `EvtDestroyCallback` runs), the spin lock
//! itself (the tests hold the list exclusively instead), and the kernel's threads.

use core::cell::UnsafeCell;
use core::marker::PhantomPinned;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, Ordering};

/// The start of every context: whether the value has been written.
#[repr(C)]
pub(crate) struct SlotHeader {
    initialized: AtomicBool,
}

/// An object's context: the header, then the driver's value.
#[repr(C)]
pub(crate) struct Slot<T> {
    header: SlotHeader,
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    /// KMDF aligns context space to `MEMORY_ALLOCATION_ALIGNMENT` (16 bytes on x64).
    pub(crate) const ALIGNMENT_OK: () = assert!(
        align_of::<Slot<T>>() <= 16,
        "kmdf: a context type may not need more than 16-byte alignment"
    );

    /// Writes `value` into a fresh slot, and returns where it is, as a pointer with the
    /// provenance of all of the value (from the slot's `UnsafeCell`).
    ///
    /// # Safety
    ///
    /// `slot` is valid, aligned, zero-filled memory for a `Slot<T>` that has not been
    /// written, and no other thread can reach it yet.
    pub(crate) unsafe fn write(slot: NonNull<Self>, value: T) -> NonNull<T> {
        // SAFETY: valid memory for a `Slot<T>` (the caller's contract), in which zero is a
        // valid header and an uninitialized value.
        let slot = unsafe { slot.as_ref() };
        let place: *mut T = slot.value.get().cast();
        // SAFETY: nothing else accesses the value yet (the caller's contract); the place is
        // valid and aligned for a `T` (in the slot, from its `UnsafeCell`).
        unsafe { place.write(value) };
        slot.header.initialized.store(true, Ordering::Release);
        NonNull::new(place).expect("kmdf: a place in a context is not null")
    }

    /// Where the value is, as [`write`](Self::write) returned it, or `None` when it has not
    /// been written (or was dropped).
    ///
    /// # Safety
    ///
    /// `slot` is valid memory for a `Slot<T>`, zero-filled or written by `write`.
    pub(crate) unsafe fn get(slot: NonNull<Self>) -> Option<NonNull<T>> {
        // SAFETY: valid memory for a `Slot<T>` (the caller's contract).
        let slot = unsafe { slot.as_ref() };
        if !slot.header.initialized.load(Ordering::Acquire) {
            return None;
        }
        NonNull::new(slot.value.get().cast())
    }

    /// Drops the value, if it was written (`EvtDestroyCallback`).
    ///
    /// # Safety
    ///
    /// `slot` is valid memory for a `Slot<T>`, zero-filled or written by `write`, and
    /// nothing else accesses it any more, nor will (the object's last reference is gone).
    pub(crate) unsafe fn drop_value(mut slot: NonNull<Self>) {
        // SAFETY: valid, and exclusively ours (the caller's contract).
        let slot = unsafe { slot.as_mut() };
        if *slot.header.initialized.get_mut() {
            *slot.header.initialized.get_mut() = false;
            // SAFETY: initialized (checked above), and dropped only here, once (the flag is
            // cleared above).
            unsafe { slot.value.get_mut().assume_init_drop() };
        }
    }
}

/// Memory that Rust only borrows and never owns, viewed in place: a reference to it covers
/// all of the `T` (so what is reached through it is inside the reference's provenance),
/// allows the `UnsafeCell`s inside to change, and asserts nothing else about the bytes
/// (`MaybeUninit`), as Rust-for-Linux's `Opaque<T>`. `!Unpin`: it never moves.
///
/// # Invariants
///
/// Never constructed as a value: a `&Opaque<T>` is only made by
/// [`from_ptr`](Self::from_ptr), over a `T` that is initialized and valid for the
/// reference's lifetime, and accessed only shared (but for its `UnsafeCell`s) meanwhile.
#[repr(transparent)]
pub(crate) struct Opaque<T> {
    value: UnsafeCell<MaybeUninit<T>>,
    _pinned: PhantomPinned,
}

impl<T> Opaque<T> {
    /// Views `value` in place.
    ///
    /// # Safety
    ///
    /// `value` points at an initialized `T`, with the provenance of all of it, that stays
    /// valid, and is only accessed shared (but for its `UnsafeCell`s), for `'a`.
    pub(crate) unsafe fn from_ptr<'a>(value: NonNull<T>) -> &'a Self {
        // INVARIANT: the caller's contract is the type invariant.
        // SAFETY: `Opaque<T>` is a `#[repr(transparent)]` cell around a possibly
        // uninitialized `T`, so it has `T`'s layout; the pointer covers the `T`, valid for
        // `'a` (the caller's contract).
        unsafe { value.cast::<Self>().as_ref() }
    }

    /// The value, shared.
    pub(crate) fn get(&self) -> &T {
        // SAFETY: initialized, valid for the borrow and only accessed shared (type
        // invariant); `UnsafeCell::get` keeps `self`'s provenance, which covers the `T`.
        unsafe { &*self.value.get().cast::<T>() }
    }
}

/// A node of a [`List`]: one thread running a callback.
pub(crate) struct Node<Id> {
    id: Id,
    next: *mut Node<Id>,
}

impl<Id> Node<Id> {
    /// An unlinked node for `id`.
    pub(crate) const fn new(id: Id) -> Self {
        Self { id, next: ptr::null_mut() }
    }
}

/// An intrusive singly linked list of nodes that live elsewhere (on the stacks of the
/// threads they name). It allocates nothing; the caller guards it (a spin lock in the
/// kernel).
///
/// # Invariants
///
/// Every node reachable from `head` is valid (linked by [`push`](Self::push), whose caller
/// keeps it valid and untouched until it is unlinked by [`unlink`](Self::unlink)).
pub(crate) struct List<Id> {
    head: *mut Node<Id>,
}

impl<Id: Copy + PartialEq> List<Id> {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self { head: ptr::null_mut() }
    }

    /// Links `node` in at the head.
    ///
    /// # Safety
    ///
    /// `node` is valid, not linked in any list, and stays valid and is not accessed other
    /// than through this list until [`unlink`](Self::unlink) removes it.
    pub(crate) unsafe fn push(&mut self, node: NonNull<Node<Id>>) {
        // SAFETY: valid and not linked (the caller's contract), so only this list writes it.
        unsafe { (*node.as_ptr()).next = self.head };
        // INVARIANT: the node is valid until it is unlinked (the caller's contract).
        self.head = node.as_ptr();
    }

    /// Whether a node for `id` is linked.
    pub(crate) fn contains(&self, id: Id) -> bool {
        let mut node = self.head;
        while !node.is_null() {
            // SAFETY: linked nodes are valid (type invariant).
            let current = unsafe { &*node };
            if current.id == id {
                return true;
            }
            node = current.next;
        }
        false
    }

    /// Unlinks `node`; returns whether it was linked.
    pub(crate) fn unlink(&mut self, node: NonNull<Node<Id>>) -> bool {
        let node = node.as_ptr();
        let mut link: *mut *mut Node<Id> = &raw mut self.head;
        loop {
            // SAFETY: `link` is the head or the `next` field of a linked node, both valid
            // (type invariant).
            let current = unsafe { *link };
            if current.is_null() {
                return false;
            }
            if current == node {
                // SAFETY: `node` is linked, so valid (type invariant).
                let next = unsafe { (*node).next };
                // SAFETY: `link` is valid as above; the node leaves the list here.
                unsafe { *link = next };
                return true;
            }
            // SAFETY: `current` is a linked node, valid (type invariant).
            link = unsafe { &raw mut (*current).next };
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::alloc::{Layout, alloc_zeroed, dealloc};
    use std::sync::Arc;
    use std::vec::Vec;

    use super::{List, Node, NonNull, Opaque, Slot};

    /// The context space KMDF allocates with an object: zero-filled, 16-byte aligned,
    /// sized for a `Slot<T>` (`ContextSizeOverride`); freed after the destroy callback.
    struct FakeAllocation<T> {
        slot: NonNull<Slot<T>>,
        layout: Layout,
    }

    impl<T> FakeAllocation<T> {
        fn new() -> Self {
            let () = Slot::<T>::ALIGNMENT_OK;
            let layout = Layout::from_size_align(size_of::<Slot<T>>(), 16).unwrap();
            // SAFETY: the layout has a non-zero size (the slot's header is one byte).
            let memory = unsafe { alloc_zeroed(layout) };
            Self { slot: NonNull::new(memory.cast()).expect("allocation failed"), layout }
        }

        /// `WdfObjectGetTypedContextWorker`: the same address for every lookup, a pointer
        /// of its own (not derived from any reference the driver holds).
        fn lookup(&self) -> NonNull<Slot<T>> {
            self.slot
        }
    }

    // SAFETY: the block is shared as KMDF's context space is: threads only read the pointer
    // and access the `T` through `Slot` and `Opaque`, whose contracts the tests keep; a `T`
    // reached from several threads must be `Sync`.
    unsafe impl<T: Sync> Sync for FakeAllocation<T> {}

    impl<T> Drop for FakeAllocation<T> {
        fn drop(&mut self) {
            // SAFETY: `EvtDestroyCallback`: every view of the object is gone.
            unsafe { Slot::drop_value(self.slot) };
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { dealloc(self.slot.as_ptr().cast(), self.layout) };
        }
    }

    /// Shaped as a work item's context: flags written through shared views, then the
    /// driver's value.
    struct Context {
        queued: AtomicBool,
        deleted: AtomicBool,
        value: Value,
    }

    /// A driver's value that counts its drops.
    struct Value {
        payload: [u64; 3],
        drops: Arc<AtomicUsize>,
    }

    impl Drop for Value {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn context(drops: &Arc<AtomicUsize>) -> Context {
        Context {
            queued: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            value: Value { payload: [1, 2, 3], drops: Arc::clone(drops) },
        }
    }

    #[test]
    fn a_context_is_read_only_once_written_and_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let object = FakeAllocation::<Context>::new();
        // SAFETY: the zero-filled block of `object`.
        assert!(unsafe { Slot::get(object.lookup()) }.is_none());
        // SAFETY: fresh, zero-filled, not written, on this thread only.
        let written = unsafe { Slot::write(object.lookup(), context(&drops)) };
        // SAFETY: written above.
        let found = unsafe { Slot::get(object.lookup()) }.expect("written");
        assert_eq!(found, written);
        drop(object);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_destroyed_context_that_was_never_written_drops_nothing() {
        let drops = Arc::new(AtomicUsize::new(0));
        drop(FakeAllocation::<Context>::new());
        assert_eq!(drops.load(Ordering::SeqCst), 0);
    }

    /// What a work item does: `create` views the context it wrote (the view an `ObjectRef`
    /// keeps, as an untyped pointer, and turns back into a reference), a callback views
    /// the context it looked up from the handle, and both write the flags through their
    /// views while the driver's value is read. Under Miri this checks that the views have
    /// the provenance they use (a zero-sized view would not).
    #[test]
    fn views_of_a_context_reach_all_of_it() {
        let drops = Arc::new(AtomicUsize::new(0));
        let object = FakeAllocation::<Context>::new();
        // SAFETY: fresh, zero-filled, not written, on this thread only.
        let written = unsafe { Slot::write(object.lookup(), context(&drops)) };
        // SAFETY: written, with the provenance of the value, alive until `object` drops.
        let created: &Opaque<Context> = unsafe { Opaque::from_ptr(written) };
        // `RawRef`: the view kept as an untyped pointer, then dereferenced again.
        let kept: NonNull<core::ffi::c_void> = NonNull::from(created).cast();
        // SAFETY: as `RawRef`'s deref: derived from a `&Opaque<Context>` of the live object.
        let deref: &Opaque<Context> = unsafe { kept.cast::<Opaque<Context>>().as_ref() };
        // SAFETY: the callback's lookup from the handle: the written value, alive.
        let looked_up = unsafe { Slot::get(object.lookup()) }.expect("written");
        // SAFETY: as above.
        let callback: &Opaque<Context> = unsafe { Opaque::from_ptr(looked_up) };

        assert!(!deref.get().queued.swap(true, Ordering::SeqCst));
        assert!(created.get().queued.load(Ordering::SeqCst));
        callback.get().queued.store(false, Ordering::SeqCst);
        assert!(!deref.get().queued.load(Ordering::SeqCst));
        assert!(!callback.get().deleted.swap(true, Ordering::SeqCst));
        assert!(created.get().deleted.load(Ordering::SeqCst));
        let sum: u64 = deref.get().value.payload.iter().sum();
        assert_eq!(sum + callback.get().value.payload[2], 9);
        drop(object);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// A context used from several threads through views made on each, as an item's runs
    /// and its `ObjectRef`s do.
    #[test]
    fn views_on_several_threads() {
        let drops = Arc::new(AtomicUsize::new(0));
        let object = FakeAllocation::<Context>::new();
        // SAFETY: fresh, zero-filled, not written, on this thread only.
        let written = unsafe { Slot::write(object.lookup(), context(&drops)) };
        // SAFETY: written, alive until `object` drops, after the scope's threads ended.
        let view: &Opaque<Context> = unsafe { Opaque::from_ptr(written) };
        let address = core::ptr::from_ref(view).addr();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    // The handle as another thread gets it: only an address, then a lookup.
                    let slot = object.lookup();
                    // SAFETY: written before the threads started, alive for the scope.
                    let found = unsafe { Slot::get(slot) }.expect("written");
                    assert_eq!(found.as_ptr().addr(), address);
                    // SAFETY: as above.
                    let mine: &Opaque<Context> = unsafe { Opaque::from_ptr(found) };
                    mine.get().queued.fetch_or(true, Ordering::SeqCst);
                    assert_eq!(mine.get().value.payload, [1, 2, 3]);
                });
            }
        });
        assert!(view.get().queued.load(Ordering::SeqCst));
        drop(object);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn runners_link_and_unlink_in_any_order() {
        let mut list = List::<usize>::new();
        let mut nodes: Vec<Node<usize>> = (0..4).map(Node::new).collect();
        let pointers: Vec<NonNull<Node<usize>>> = nodes.iter_mut().map(NonNull::from).collect();
        for &node in &pointers {
            // SAFETY: each node is valid, unlinked, and only reached through the list until
            // it is unlinked below (`nodes` is not touched meanwhile).
            unsafe { list.push(node) };
        }
        assert!((0..4).all(|id| list.contains(id)));
        assert!(!list.contains(4));
        // The middle, the head, the tail, then the last.
        for (index, &gone) in [1, 3, 0, 2].iter().enumerate() {
            assert!(list.unlink(pointers[gone]));
            assert!(!list.contains(gone));
            assert!(!list.unlink(pointers[gone]), "unlinked twice");
            let left = [1, 3, 0, 2][index + 1..].to_vec();
            assert!(left.iter().all(|&id| list.contains(id)));
        }
        assert!(list.head.is_null());
        drop(nodes);
    }

    /// As the trampoline does: a node on the running thread's stack, linked for the length
    /// of a call that may link another one (overlapping runs on one thread's stack do not
    /// happen in the kernel, but nested frames are the worst case for the pointers).
    #[test]
    fn runners_on_the_stack_nest() {
        fn run(list: &mut List<u32>, depth: u32) {
            let mut node = Node::new(depth);
            let pointer = NonNull::from(&mut node);
            // SAFETY: the node lives in this frame and is unlinked before it ends.
            unsafe { list.push(pointer) };
            assert!((0..=depth).all(|id| list.contains(id)));
            if depth < 3 {
                run(list, depth + 1);
            }
            assert!(!list.contains(depth + 1));
            assert!(list.unlink(pointer));
        }
        let mut list = List::new();
        run(&mut list, 0);
        assert!(list.head.is_null());
    }
}
