//! Queue dispatch on the host runtime: docs/kmdf-behaviour.md section 9.2 (the shared
//! reference's section 7, "Routing", "Queue configuration", "Presentation", "Manual queues
//! and queue state APIs").

mod io_common;

use std::num::NonZeroU32;

use io_common::{
    Dev, GUID_DEVINTERFACE_TEST, IOCTL_ECHO, OnRead, Plan, lines, rig, started, with_q,
};
use kmdf::host::Runtime;
use kmdf::io_queue::{Dispatch, IoQueue, IoQueueCallbacks, IoQueueConfig};
use kmdf::request::RequestType;
use kmdf::{Device, DeviceInit, Driver, NtError, NtStatus, PnpPowerCallbacks, Request, Result};

#[test]
fn a_read_is_presented_to_evt_io_read_and_completed_inline() {
    let (runtime, _node, handle) = started(Plan::default());
    let read = handle.read(4).expect("completed inline");
    assert_eq!(read.status, NtStatus::SUCCESS);
    assert_eq!(read.information, 4);
    assert_eq!(read.data, [0xAB; 4]);
    assert_eq!(lines(&runtime), ["EvtIoRead(4)"]);
}

#[test]
fn device_control_is_traced_with_code_output_and_input_lengths() {
    let (runtime, _node, handle) = started(Plan::default());
    let echo = handle.ioctl(IOCTL_ECHO, b"toast", 8).expect("completed inline");
    assert_eq!(
        (echo.status, echo.information, echo.data.as_slice()),
        (NtStatus::SUCCESS, 5, &b"toast"[..])
    );
    assert_eq!(lines(&runtime), ["EvtIoDeviceControl(0x80002000, 8, 5)"]);
}

#[test]
fn a_write_is_traced_with_its_length() {
    let (runtime, _node, handle) = started(Plan::default());
    let write = handle.write(b"abc").expect("completed inline");
    assert_eq!((write.status, write.information, write.data.len()), (NtStatus::SUCCESS, 3, 0));
    assert_eq!(lines(&runtime), ["EvtIoWrite(3)"]);
}

/// Section 9.2: no handler for the type and no `EvtIoDefault`: completed
/// `STATUS_INVALID_DEVICE_REQUEST` without a callback.
#[test]
fn a_request_without_a_handler_is_invalid_device_request() {
    let plan = Plan { with_stop: false, ..Plan::default() }; // the `Plain` queue: reads only
    let (runtime, _node, handle) = started(plan);
    let write = handle.write(b"x").expect("completed at once");
    assert_eq!(write.status, NtStatus::INVALID_DEVICE_REQUEST);
    assert_eq!(write.information, 0);
    assert!(lines(&runtime).is_empty(), "no callback");
}

/// Section 9.2: a zero-length read is completed with success and never presented unless
/// the queue allows zero-length requests.
#[test]
fn zero_length_reads_are_presented_only_when_allowed() {
    let (runtime, _node, handle) = started(Plan::default());
    let read = handle.read(0).expect("completed at once");
    assert_eq!((read.status, read.information), (NtStatus::SUCCESS, 0));
    assert!(lines(&runtime).is_empty());

    let (runtime, _node, handle) = started(Plan { allow_zero_length: true, ..Plan::default() });
    let read = handle.read(0).expect("completed inline");
    assert_eq!(read.status, NtStatus::SUCCESS);
    assert_eq!(lines(&runtime), ["EvtIoRead(0)"]);
}

/// Section 9.2: a sequential queue presents the next request only once the driver no
/// longer owns the previous one; first in, first out.
#[test]
fn a_sequential_queue_presents_one_request_at_a_time() {
    let plan = Plan { dispatch: Dispatch::Sequential, on_read: OnRead::Pend, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let first = handle.read_async(1);
    let second = handle.read_async(2);
    assert_eq!(lines(&runtime), ["EvtIoRead(1)"]);
    let request = with_q(&node, io_common::Q::take_oldest).expect("the first read");
    assert_eq!(request.id().clone(), request.id());
    request.complete(NtStatus::SUCCESS);
    assert_eq!(first.status(), Some(NtStatus::SUCCESS));
    assert_eq!(lines(&runtime), ["EvtIoRead(2)"]);
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::UNSUCCESSFUL);
    assert_eq!(second.status(), Some(NtStatus::UNSUCCESSFUL));
}

/// Section 9.2: a parallel queue presents while the driver owns fewer than its limit.
#[test]
fn a_parallel_queue_respects_its_presentation_limit() {
    let limit = NonZeroU32::new(2);
    let plan =
        Plan { dispatch: Dispatch::Parallel { limit }, on_read: OnRead::Pend, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let pending: Vec<_> = (1..=3).map(|n| handle.read_async(n)).collect();
    assert_eq!(lines(&runtime), ["EvtIoRead(1)", "EvtIoRead(2)"]);
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(lines(&runtime), ["EvtIoRead(3)"]);
    assert!(pending[0].is_complete() && !pending[1].is_complete() && !pending[2].is_complete());
    while let Some(request) = with_q(&node, io_common::Q::take_oldest) {
        request.complete(NtStatus::SUCCESS);
    }
    assert!(pending.iter().all(kmdf::host::PendingIo::is_complete));
}

/// Section 9.2: `WdfIoQueueRetrieveNextRequest` on a sequential queue takes the next
/// queued request even while the driver owns the one the queue presented:
/// `FxIoQueue::GetRequest` checks the dispatch type, the power state and whether the queue
/// dispatches, never the requests the driver owns.
#[test]
fn a_sequential_queue_gives_the_next_request_to_retrieve_while_it_presented_one() {
    let plan = Plan { dispatch: Dispatch::Sequential, on_read: OnRead::Pend, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let first = handle.read_async(3);
    let second = handle.read_async(4);
    assert_eq!(lines(&runtime), ["EvtIoRead(3)"], "one at a time");
    let retrieved = node
        .with_context(|dev: &Dev| dev.q().retrieve_next_request())
        .unwrap()
        .expect("the queued read");
    assert_eq!(retrieved.parameters(), kmdf::request::Parameters::Read { length: 4 });
    retrieved.complete(NtStatus::SUCCESS);
    assert_eq!(second.status(), Some(NtStatus::SUCCESS));
    assert!(!first.is_complete());
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(first.status(), Some(NtStatus::SUCCESS));
}

/// Section 9.2: a parallel queue without a limit presents everything at once.
#[test]
fn a_parallel_queue_without_a_limit_presents_everything() {
    let (runtime, node, handle) = started(Plan { on_read: OnRead::Pend, ..Plan::default() });
    let pending: Vec<_> = (1..=5).map(|n| handle.read_async(n)).collect();
    assert_eq!(lines(&runtime).len(), 5);
    assert_eq!(with_q(&node, |q| q.pending.lock().len()), 5);
    while let Some(request) = with_q(&node, io_common::Q::take_oldest) {
        request.complete(NtStatus::SUCCESS);
    }
    assert!(pending.iter().all(kmdf::host::PendingIo::is_complete));
}

/// Section 9.2: a manual queue never presents; the driver retrieves, and the ready
/// notification runs when it goes from empty to not empty.
#[test]
fn a_manual_queue_is_retrieved_from() {
    let (runtime, node, handle) = started(Plan { manual_reads: true, ..Plan::default() });
    let manual = |f: &dyn Fn(&IoQueue<io_common::M>)| {
        node.with_context(|dev: &Dev| f(dev.manual.as_ref().unwrap())).unwrap();
    };
    manual(&|queue| {
        assert_eq!(queue.retrieve_next_request().err(), Some(NtError::NO_MORE_ENTRIES));
    });
    let first = handle.read_async(3);
    let second = handle.read_async(4);
    assert_eq!(lines(&runtime), ["EvtIoQueueState"], "once, from empty to not empty");
    manual(&|queue| {
        let request = queue.retrieve_next_request().expect("the first read");
        assert_eq!(request.parameters(), kmdf::request::Parameters::Read { length: 3 });
        // Requeue puts it back at the head: retrieved again first.
        request.requeue().expect("from a manual queue");
        let request = queue.retrieve_next_request().expect("the first read again");
        assert_eq!(request.parameters(), kmdf::request::Parameters::Read { length: 3 });
        request.complete(NtStatus::SUCCESS);
    });
    assert_eq!(first.status(), Some(NtStatus::SUCCESS));
    assert!(!second.is_complete());
    manual(&|queue| queue.retrieve_next_request().unwrap().complete(NtStatus::SUCCESS));
    assert_eq!(second.status(), Some(NtStatus::SUCCESS));
}

/// Section 9.2: `WdfIoQueueRetrieveNextRequest` on a parallel queue is
/// `STATUS_INVALID_DEVICE_STATE`; requeue of a request that is not from a manual queue is
/// refused, the request given back.
#[test]
fn retrieve_and_requeue_are_refused_where_kmdf_refuses_them() {
    let (_runtime, node, handle) = started(Plan { on_read: OnRead::Pend, ..Plan::default() });
    node.with_context(|dev: &Dev| {
        assert_eq!(dev.q().retrieve_next_request().err(), Some(NtError::INVALID_DEVICE_STATE));
    })
    .unwrap();
    let read = handle.read_async(1);
    let request = with_q(&node, io_common::Q::take_oldest).unwrap();
    let error = request.requeue().expect_err("not a manual queue");
    assert_eq!(error.status, NtError::INVALID_DEVICE_REQUEST);
    error.request.complete(NtStatus::SUCCESS);
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
}

/// Section 9.2: a purged queue refuses new requests with `STATUS_INVALID_DEVICE_STATE`
/// until it is started again; a stopped queue keeps accepting but does not present.
#[test]
fn purge_stop_and_start() {
    let (runtime, node, handle) = started(Plan::default());
    node.with_context(|dev: &Dev| dev.q().purge()).unwrap();
    let refused = handle.read(1).expect("completed at once");
    assert_eq!(refused.status, NtStatus::INVALID_DEVICE_STATE);
    node.with_context(|dev: &Dev| dev.q().start()).unwrap();
    assert_eq!(handle.read(1).unwrap().status, NtStatus::SUCCESS);
    node.with_context(|dev: &Dev| dev.q().stop()).unwrap();
    let _ = runtime.take_trace();
    let held = handle.read_async(2);
    assert!(!held.is_complete());
    assert!(lines(&runtime).is_empty(), "a stopped queue does not present");
    node.with_context(|dev: &Dev| dev.q().start()).unwrap();
    assert_eq!(held.status(), Some(NtStatus::SUCCESS));
    assert_eq!(lines(&runtime), ["EvtIoRead(2)"]);
}

/// Section 9.2: the synchronous forms wait, so they are for `PASSIVE_LEVEL` only: from a
/// request callback (at `DISPATCH_LEVEL` on the host) they fail instead of waiting.
#[test]
fn synchronous_queue_operations_refuse_dispatch_level() {
    let (_runtime, node, _handle) = started(Plan::default());
    let at_dispatch = node
        .with_context(|dev: &Dev| {
            let lock = kmdf::sync::SpinLock::new(()).unwrap();
            let _guard = lock.lock();
            dev.q().stop_synchronously()
        })
        .unwrap();
    assert_eq!(at_dispatch, Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL));
    // At PASSIVE_LEVEL, with nothing owned, it returns at once.
    assert_eq!(node.with_context(|dev: &Dev| dev.q().stop_synchronously()).unwrap(), Ok(()));
}

/// On the host a synchronous wait that nothing could end is an error, not a hang.
#[test]
fn a_synchronous_purge_that_cannot_end_is_reported() {
    let (_runtime, node, handle) = started(Plan { on_read: OnRead::Pend, ..Plan::default() });
    let read = handle.read_async(1);
    let purge = node.with_context(|dev: &Dev| dev.q().purge_synchronously()).unwrap();
    assert_eq!(purge, Err(NtError::POSSIBLE_DEADLOCK));
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
    assert_eq!(node.with_context(|dev: &Dev| dev.q().purge_synchronously()).unwrap(), Ok(()));
}

// ---- configuration ---------------------------------------------------------------------

struct NoHandler;
kmdf::vtable! {
    impl IoQueueCallbacks for NoHandler {
        type Device = Bare;
    }
}

struct ReadOnly;
kmdf::vtable! {
    impl IoQueueCallbacks for ReadOnly {
        type Device = Bare;
        fn read(
            &self,
            _queue: &IoQueue<Self>,
            _device: &Device<Self::Device>,
            request: Request,
            _length: usize,
        ) {
            request.complete(NtStatus::SUCCESS);
        }
    }
}

struct Bare;
kmdf::vtable! { impl PnpPowerCallbacks for Bare {} }

struct ConfigDriver;
impl Driver for ConfigDriver {
    fn driver_entry() -> Result<Self> {
        Ok(ConfigDriver)
    }
    fn device_add(&self, init: DeviceInit<'_>) -> Result {
        let device: &Device<Bare> = init.create(Bare)?;
        // Section 9.2: a non-manual queue needs a handler; a manual one must have none.
        let parallel = IoQueueConfig::new(Dispatch::parallel());
        assert_eq!(
            IoQueue::create(device, parallel, NoHandler).err(),
            Some(NtError::WDF_NO_CALLBACK)
        );
        let manual = IoQueueConfig::new(Dispatch::Manual);
        assert_eq!(
            IoQueue::create(device, manual, ReadOnly).err(),
            Some(NtError::INVALID_PARAMETER)
        );
        // One default queue.
        let default = IoQueueConfig::default_queue(Dispatch::Sequential);
        let queue = IoQueue::create(device, default, ReadOnly)?;
        assert_eq!(IoQueue::create(device, default, ReadOnly).err(), Some(NtError::UNSUCCESSFUL));
        // The default queue cannot be configured for a type; a queue without the type's
        // handler (and no EvtIoDefault) neither; a type goes to one queue.
        assert_eq!(
            queue.configure_dispatching(device, RequestType::Read),
            Err(NtError::INVALID_DEVICE_REQUEST)
        );
        let other = IoQueue::create(device, parallel, ReadOnly)?;
        assert_eq!(
            other.configure_dispatching(device, RequestType::Write),
            Err(NtError::INVALID_DEVICE_REQUEST)
        );
        assert_eq!(other.configure_dispatching(device, RequestType::Read), Ok(()));
        let third = IoQueue::create(device, parallel, ReadOnly)?;
        assert_eq!(third.configure_dispatching(device, RequestType::Read), Err(NtError::WDF_BUSY));
        Ok(())
    }
}

#[test]
fn queue_configuration_is_checked_as_kmdf_checks_it() {
    let runtime = Runtime::new();
    runtime.load::<ConfigDriver>().unwrap().add_device().unwrap();
}

/// Section 9.2: a request type with no queue (no default queue, none configured) is
/// completed `STATUS_INVALID_DEVICE_REQUEST`.
#[test]
fn a_request_type_without_a_queue_is_invalid_device_request() {
    struct NoDefault;
    impl Driver for NoDefault {
        fn driver_entry() -> Result<Self> {
            Ok(NoDefault)
        }
        fn device_add(&self, init: DeviceInit<'_>) -> Result {
            let device = init.create(Bare)?;
            device.create_device_interface(&GUID_DEVINTERFACE_TEST, None)?;
            let reads =
                IoQueue::create(device, IoQueueConfig::new(Dispatch::parallel()), ReadOnly)?;
            reads.configure_dispatching(device, RequestType::Read)?;
            Ok(())
        }
    }
    let runtime = Runtime::new();
    let node = runtime.load::<NoDefault>().unwrap().add_device().unwrap();
    node.start().unwrap();
    let handle = runtime.open(&GUID_DEVINTERFACE_TEST).unwrap();
    assert_eq!(handle.read(1).unwrap().status, NtStatus::SUCCESS);
    assert_eq!(handle.write(b"x").unwrap().status, NtStatus::INVALID_DEVICE_REQUEST);
    assert_eq!(handle.ioctl(IOCTL_ECHO, b"", 0).unwrap().status, NtStatus::INVALID_DEVICE_REQUEST);
    let _ = rig; // the shared rig is not used here
}

/// Section 9.2: a drained queue refuses new requests but still presents the queued ones;
/// the synchronous drain returns once none is queued or the driver's.
#[test]
fn drain_presents_what_is_queued_and_refuses_the_rest() {
    let plan = Plan { dispatch: Dispatch::Sequential, on_read: OnRead::Pend, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let first = handle.read_async(1);
    let second = handle.read_async(2);
    node.with_context(|dev: &Dev| dev.q().drain()).unwrap();
    assert_eq!(handle.read(3).unwrap().status, NtStatus::INVALID_DEVICE_STATE);
    let _ = runtime.take_trace();
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(lines(&runtime), ["EvtIoRead(2)"], "the queued one is still presented");
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert!(first.is_complete() && second.is_complete());
    assert_eq!(node.with_context(|dev: &Dev| dev.q().drain_synchronously()).unwrap(), Ok(()));
}

/// Section 9.2: stop-and-purge cancels the queued requests and the cancelable ones the
/// driver owns, and keeps accepting: a new request waits for the start.
#[test]
fn stop_and_purge_cancels_and_keeps_accepting() {
    let plan =
        Plan { dispatch: Dispatch::Sequential, on_read: OnRead::Cancelable, ..Plan::default() };
    let (runtime, node, handle) = started(plan);
    let owned = handle.read_async(1);
    let queued = handle.read_async(2);
    let _ = runtime.take_trace();
    node.with_context(|dev: &Dev| dev.q().stop_and_purge()).unwrap();
    assert_eq!(queued.status(), Some(NtStatus::CANCELLED));
    assert_eq!(owned.status(), Some(NtStatus::CANCELLED));
    assert_eq!(lines(&runtime), ["EvtRequestCancel"]);
    let later = handle.read_async(3);
    assert!(!later.is_complete() && lines(&runtime).is_empty());
    node.with_context(|dev: &Dev| dev.q().start()).unwrap();
    assert_eq!(lines(&runtime), ["EvtIoRead(3)"]);
    later.cancel();
    assert_eq!(later.status(), Some(NtStatus::CANCELLED));
}

/// Section 9.1 and 9.4: an internal device control (from another driver) goes to
/// `EvtIoInternalDeviceControl`, traced with its code and lengths; `METHOD_NEITHER` has
/// buffers there (kernel-mode sender).
#[test]
fn an_internal_device_control_reaches_its_own_handler() {
    let (runtime, _node, handle) = started(Plan::default());
    let done = handle.internal_ioctl_async(io_common::IOCTL_NEITHER, b"abc", 3).wait().unwrap();
    assert_eq!((done.status, done.data.as_slice()), (NtStatus::SUCCESS, &b"abc"[..]));
    assert_eq!(lines(&runtime), ["EvtIoInternalDeviceControl(0x8000200B, 3, 3)"]);
}

/// Section 9.1: `configure_dispatching` is lent the queue's device (a queue does not keep
/// its device); another device is refused `STATUS_INVALID_DEVICE_REQUEST`.
#[test]
fn configure_dispatching_refuses_another_device() {
    use kmdf::object::ObjectRef;
    use std::sync::Mutex;

    static FIRST: Mutex<Option<ObjectRef<IoQueue<ReadOnly>>>> = Mutex::new(None);
    struct TwoDevices;
    impl Driver for TwoDevices {
        fn driver_entry() -> Result<Self> {
            Ok(TwoDevices)
        }
        fn device_add(&self, init: DeviceInit<'_>) -> Result {
            let device = init.create(Bare)?;
            let queue =
                IoQueue::create(device, IoQueueConfig::new(Dispatch::parallel()), ReadOnly)?;
            let mut first = FIRST.lock().unwrap();
            match first.take() {
                None => *first = Some(queue),
                Some(other) => {
                    assert_eq!(
                        other.configure_dispatching(device, RequestType::Read),
                        Err(NtError::INVALID_DEVICE_REQUEST)
                    );
                    assert_eq!(queue.configure_dispatching(device, RequestType::Read), Ok(()));
                }
            }
            Ok(())
        }
    }
    let runtime = Runtime::new();
    let driver = runtime.load::<TwoDevices>().unwrap();
    driver.add_device().unwrap();
    driver.add_device().unwrap();
    assert!(FIRST.lock().unwrap().is_none());
}

/// Section 8 (objects) and 9.3: a queue's `EvtCleanupCallback` runs once when its device is
/// removed, and gets the device, still there.
#[test]
fn a_queue_cleanup_runs_with_its_device_at_the_removal() {
    use std::sync::atomic::{AtomicU32, Ordering};

    static CLEANUPS: AtomicU32 = AtomicU32::new(0);
    struct Tidy;
    kmdf::vtable! {
        impl IoQueueCallbacks for Tidy {
            type Device = Bare;
            fn read(
                &self,
                _queue: &IoQueue<Self>,
                _device: &Device<Self::Device>,
                request: Request,
                _length: usize,
            ) {
                request.complete(NtStatus::SUCCESS);
            }
            fn cleanup(&self, _queue: &IoQueue<Self>, device: &Device<Self::Device>) {
                let _: &Bare = device.context();
                CLEANUPS.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    struct TidyDriver;
    impl Driver for TidyDriver {
        fn driver_entry() -> Result<Self> {
            Ok(TidyDriver)
        }
        fn device_add(&self, init: DeviceInit<'_>) -> Result {
            let device = init.create(Bare)?;
            IoQueue::create(device, IoQueueConfig::default_queue(Dispatch::parallel()), Tidy)?;
            Ok(())
        }
    }
    let runtime = Runtime::new();
    let node = runtime.load::<TidyDriver>().unwrap().add_device().unwrap();
    node.start().unwrap();
    assert_eq!(CLEANUPS.load(Ordering::SeqCst), 0);
    node.remove().unwrap();
    assert_eq!(CLEANUPS.load(Ordering::SeqCst), 1);
    assert!(runtime.take_panics().is_empty());
}
