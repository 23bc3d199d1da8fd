//! Requests, cancellation, file objects and device interfaces on the host runtime:
//! docs/kmdf-behaviour.md sections 9.4 to 9.6 (the shared reference's section 7,
//! "Completion and buffers", "Cancellation", "File objects", "Device interfaces").

mod io_common;

use io_common::{
    Dev, GUID_DEVINTERFACE_TEST, IOCTL_NEITHER, IOCTL_TOO_MUCH, OnRead, Plan, lines, rig, started,
    with_q,
};
use kmdf::host::ObjectKind;
use kmdf::interface::{Access, Guid, TransferMethod, ctl_code};
use kmdf::request::Marked;
use kmdf::{Callback, NtError, NtStatus};

/// Section 9.4: information larger than the buffer is refused, the request handed back
/// (the test driver then completes it with the error's status).
#[test]
fn information_larger_than_the_buffer_is_an_error() {
    let (_runtime, _node, handle) = started(Plan::default());
    let done = handle.ioctl(IOCTL_TOO_MUCH, b"", 4).unwrap();
    assert_eq!((done.status, done.information), (NtStatus::INVALID_PARAMETER, 0));
}

/// Section 9.4: no buffer for `METHOD_NEITHER` from an application.
#[test]
fn method_neither_has_no_buffer() {
    let (_runtime, _node, handle) = started(Plan::default());
    assert_eq!(
        handle.ioctl(IOCTL_NEITHER, b"x", 4).unwrap().status,
        NtStatus::INVALID_DEVICE_REQUEST
    );
}

/// Section 9.4: a read has no input buffer, a write no output buffer; an empty buffer is
/// too small even for a minimum of 0.
#[test]
fn buffers_follow_the_request_type() {
    let (_runtime, node, handle) = started(Plan { on_read: OnRead::Pend, ..Plan::default() });
    let read = handle.read_async(4);
    let mut request = with_q(&node, io_common::Q::take_oldest).unwrap();
    assert_eq!(request.input_buffer(0).err(), Some(NtError::INVALID_DEVICE_REQUEST));
    assert_eq!(request.output_buffer(5).err(), Some(NtError::BUFFER_TOO_SMALL));
    assert_eq!(request.output_buffer(4).map(|buffer| buffer.len()), Ok(4));
    request.output_buffer(4).unwrap().copy_from_slice(b"rust");
    request.complete_with_information(NtStatus::SUCCESS, 2).unwrap();
    let done = read.wait().unwrap();
    assert_eq!((done.information, done.data.as_slice()), (2, &b"ru"[..]));
}

/// Section 9.4 and 8.5: a request dropped without completion is completed
/// `STATUS_CANCELLED` and reported by the verifier.
#[test]
fn a_dropped_request_is_cancelled_and_reported() {
    let (runtime, node, handle) = started(Plan { on_read: OnRead::Drop, ..Plan::default() });
    let done = handle.read(4).unwrap();
    assert_eq!((done.status, done.information), (NtStatus::CANCELLED, 0));
    let findings = runtime.verifier_findings();
    assert_eq!(findings.len(), 1);
    assert_eq!((findings[0].device, findings[0].callback), (node.id(), Callback::IoRead));
    assert!(findings[0].message.contains("dropped"));
    // The next PnP action reports it as an error.
    assert!(node.apply(kmdf::host::PnpAction::Idle).is_err());
}

/// Section 9.5: a queued request the application cancels is completed `STATUS_CANCELLED`
/// by the framework, without a callback.
#[test]
fn cancelling_a_queued_request_needs_no_callback() {
    let plan = Plan {
        dispatch: kmdf::io_queue::Dispatch::Sequential,
        on_read: OnRead::Pend,
        ..Plan::default()
    };
    let (runtime, node, handle) = started(plan);
    let owned = handle.read_async(1);
    let queued = handle.read_async(2);
    let _ = runtime.take_trace();
    queued.cancel();
    assert_eq!(queued.status(), Some(NtStatus::CANCELLED));
    assert!(lines(&runtime).is_empty());
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(owned.status(), Some(NtStatus::SUCCESS));
    assert!(lines(&runtime).is_empty(), "the cancelled request is not presented");
}

/// Section 9.5: a cancelable request the driver owns gets `EvtRequestCancel` with the
/// request; unmarking it afterwards gives nothing back.
#[test]
fn cancelling_a_cancelable_request_calls_evt_request_cancel() {
    let (runtime, node, handle) = started(Plan { on_read: OnRead::Cancelable, ..Plan::default() });
    let read = handle.read_async(1);
    let id = with_q(&node, |q| q.cancelables.lock()[0].id());
    // The claim is the driver's; take it out before the cancel to unmark it later.
    let claim = with_q(&node, |q| q.take_cancelable(id)).unwrap();
    let _ = runtime.take_trace();
    read.cancel();
    assert_eq!(lines(&runtime), ["EvtRequestCancel"]);
    assert_eq!(read.status(), Some(NtStatus::CANCELLED));
    assert!(claim.unmark().is_none(), "the cancel callback owned it");
}

/// Section 9.5: unmarking before a cancellation gives the request back.
#[test]
fn unmarking_gives_the_request_back() {
    let (_runtime, node, handle) = started(Plan { on_read: OnRead::Cancelable, ..Plan::default() });
    let read = handle.read_async(1);
    let claim = with_q(&node, |q| q.cancelables.lock().pop()).unwrap();
    let request = claim.unmark().expect("not cancelled");
    read.cancel(); // now only marks it cancelled
    assert!(request.is_canceled());
    request.complete(NtStatus::CANCELLED);
    assert_eq!(read.status(), Some(NtStatus::CANCELLED));
}

/// Section 9.5: marking cancelable a request already cancelled gives it back.
#[test]
fn marking_a_cancelled_request_gives_it_back() {
    let (_runtime, node, handle) = started(Plan { on_read: OnRead::Pend, ..Plan::default() });
    let read = handle.read_async(1);
    read.cancel();
    node.with_context(|dev: &Dev| {
        let request = dev.q().context().take_oldest().unwrap();
        match request.mark_cancelable(dev.q()) {
            Marked::Canceled(request) => request.complete(NtStatus::CANCELLED),
            Marked::Cancelable(_) => panic!("the request was cancelled"),
        }
    })
    .unwrap();
    assert_eq!(read.status(), Some(NtStatus::CANCELLED));
}

/// Section 9.5: cancelling a completed request does nothing.
#[test]
fn cancelling_a_completed_request_does_nothing() {
    let (runtime, _node, handle) = started(Plan::default());
    let read = handle.read_async(1);
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
    let _ = runtime.take_trace();
    read.cancel();
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
    assert!(lines(&runtime).is_empty());
}

/// Section 9.5: forwarding to a queue that does not accept requests fails `STATUS_WDF_BUSY`
/// and the driver keeps the request; forwarding to the request's own queue is invalid.
#[test]
fn forward_checks_the_destination() {
    let (_runtime, node, handle) =
        started(Plan { on_read: OnRead::Pend, manual_reads: false, ..Plan::default() });
    let read = handle.read_async(1);
    node.with_context(|dev: &Dev| {
        let request = dev.q().context().take_oldest().unwrap();
        let error = request.forward(dev.q()).expect_err("its own queue");
        assert_eq!(error.status, NtError::INVALID_DEVICE_REQUEST);
        error.request.complete(NtStatus::SUCCESS);
    })
    .unwrap();
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
}

/// Section 9.6: open runs `EvtDeviceFileCreate`; close runs `EvtFileCleanup` at once and
/// `EvtFileClose` once the handle's requests are completed.
#[test]
fn close_waits_for_the_handles_requests() {
    let (runtime, node) = rig(Plan { on_read: OnRead::Pend, ..Plan::default() });
    node.start().unwrap();
    let _ = runtime.take_trace();
    let handle = runtime.open(&GUID_DEVINTERFACE_TEST).unwrap();
    assert_eq!(lines(&runtime), ["EvtDeviceFileCreate"]);
    let read = handle.read_async(1);
    handle.close();
    assert_eq!(lines(&runtime), ["EvtIoRead(1)", "EvtFileCleanup"]);
    with_q(&node, io_common::Q::take_oldest).unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
    assert_eq!(lines(&runtime), ["EvtFileClose", "EvtDestroyCallback(WDFFILEOBJECT)"]);
    assert!(!runtime.live_objects().contains(&ObjectKind::File));
}

/// Section 9.6: at cleanup the handle's *queued* requests are cancelled.
#[test]
fn cleanup_cancels_the_handles_queued_requests() {
    let (runtime, node) = rig(Plan { manual_reads: true, ..Plan::default() });
    node.start().unwrap();
    let handle = runtime.open(&GUID_DEVINTERFACE_TEST).unwrap();
    let read = handle.read_async(1);
    let _ = runtime.take_trace();
    handle.close();
    assert_eq!(read.status(), Some(NtStatus::CANCELLED));
    assert_eq!(
        lines(&runtime),
        ["EvtFileCleanup", "EvtFileClose", "EvtDestroyCallback(WDFFILEOBJECT)"]
    );
}

/// Section 9.6: a failed `EvtDeviceFileCreate` fails the open with its status.
#[test]
fn a_failed_file_create_fails_the_open() {
    let (runtime, node) = rig(Plan::default());
    node.start().unwrap();
    node.inject_failure(Callback::DeviceFileCreate, 1, NtError::ACCESS_DENIED).unwrap();
    assert_eq!(runtime.open(&GUID_DEVINTERFACE_TEST).err(), Some(NtError::ACCESS_DENIED));
    assert!(runtime.open(&GUID_DEVINTERFACE_TEST).is_ok(), "only the first");
}

/// Section 9.6: an exclusive device takes one handle at a time.
#[test]
fn an_exclusive_device_refuses_a_second_open() {
    let (runtime, node) = rig(Plan { exclusive: true, ..Plan::default() });
    node.start().unwrap();
    let first = runtime.open(&GUID_DEVINTERFACE_TEST).unwrap();
    assert_eq!(runtime.open(&GUID_DEVINTERFACE_TEST).err(), Some(NtError::ACCESS_DENIED));
    first.close();
    assert!(runtime.open(&GUID_DEVINTERFACE_TEST).is_ok());
}

/// Section 9.7: the interface is enabled at the end of the first start: no open before;
/// still enabled while idle; disabled by the removal.
#[test]
fn the_interface_is_enabled_by_the_first_start_and_disabled_by_removal() {
    let (runtime, node) = rig(Plan::default());
    assert_eq!(runtime.open(&GUID_DEVINTERFACE_TEST).err(), Some(NtError::OBJECT_NAME_NOT_FOUND));
    assert_eq!(node.open(&GUID_DEVINTERFACE_TEST).err(), Some(NtError::OBJECT_NAME_NOT_FOUND));
    node.start().unwrap();
    node.apply(kmdf::host::PnpAction::Idle).unwrap();
    // Creates run even in Dx.
    let handle = node.open(&GUID_DEVINTERFACE_TEST).unwrap();
    handle.close();
    let other = Guid::parse("00000000-0000-0000-0000-000000000001");
    assert_eq!(runtime.open(&other).err(), Some(NtError::OBJECT_NAME_NOT_FOUND));
    node.remove().unwrap();
    assert_eq!(runtime.open(&GUID_DEVINTERFACE_TEST).err(), Some(NtError::OBJECT_NAME_NOT_FOUND));
    assert_eq!(node.open(&GUID_DEVINTERFACE_TEST).err(), Some(NtError::NO_SUCH_DEVICE));
}

/// `Guid` parses its text form, braces or not, any case; `ctl_code` is `CTL_CODE`.
#[test]
fn guids_and_control_codes() {
    let text = "{781EF630-72B2-11d2-B852-00C04FAD5171}";
    let guid: Guid = text.parse().unwrap();
    assert_eq!(guid, Guid::parse(&text[1..37]));
    assert_eq!(guid.to_string(), text.to_lowercase());
    assert!("781EF630-72B2-11d2-B852-00C04FAD517".parse::<Guid>().is_err());
    assert!("781EF630+72B2-11d2-B852-00C04FAD5171".parse::<Guid>().is_err());
    assert!("781EF630-72B2-11d2-B852-00C04FAD517g".parse::<Guid>().is_err());
    // IOCTL_SERIAL_GET_BAUD_RATE = CTL_CODE(FILE_DEVICE_SERIAL_PORT, 20, METHOD_BUFFERED, FILE_ANY_ACCESS)
    assert_eq!(ctl_code(0x1B, 20, TransferMethod::Buffered, Access::Any), 0x001B_0050);
    assert_eq!(ctl_code(0x22, 0x800, TransferMethod::Neither, Access::ReadWrite), 0x0022_E003);
    assert_eq!(TransferMethod::of(0x0022_E003), TransferMethod::Neither);
}

/// Section 9.5: a request forwarded to a manual queue was presented before: cancelled
/// there, it gets `EvtIoCanceledOnQueue` (the driver completes it), not a silent
/// completion.
#[test]
fn a_forwarded_request_cancelled_in_its_new_queue_gets_evt_io_canceled_on_queue() {
    let (runtime, _node, handle) = started(Plan { manual_reads: true, ..Plan::default() });
    let parked = handle.ioctl_async(io_common::IOCTL_PARK, b"", 0);
    assert_eq!(lines(&runtime), ["EvtIoDeviceControl(0x8000200C, 0, 0)", "EvtIoQueueState"]);
    assert!(!parked.is_complete());
    parked.cancel();
    assert_eq!(lines(&runtime), ["EvtIoCanceledOnQueue"]);
    assert_eq!(parked.status(), Some(NtStatus::CANCELLED));
}

/// Section 9.5: a forwarded request is retrieved from its new queue.
#[test]
fn a_forwarded_request_is_retrieved_from_the_manual_queue() {
    let (_runtime, node, handle) = started(Plan { manual_reads: true, ..Plan::default() });
    let parked = handle.ioctl_async(io_common::IOCTL_PARK, b"", 0);
    node.with_context(|dev: &Dev| {
        let request = dev.manual.as_ref().unwrap().retrieve_next_request().unwrap();
        assert_eq!(request.parameters().request_type(), kmdf::request::RequestType::DeviceControl);
        request.complete(NtStatus::SUCCESS);
    })
    .unwrap();
    assert_eq!(parked.status(), Some(NtStatus::SUCCESS));
}

/// Section 9.7: an interface created after the first start stays disabled until the
/// driver enables it; enabling one the device never registered is a verifier finding.
#[test]
fn an_interface_created_after_the_first_start_waits_to_be_enabled() {
    let (runtime, node, _handle) = started(Plan::default());
    let late = Guid::parse("6a1d2f3e-4b5c-4d6e-8f70-8192a3b4c5d6");
    let create = |f: &dyn Fn(&kmdf::Device<Dev>) -> kmdf::Result| {
        node.with_device(|device: &kmdf::Device<Dev>| f(device)).unwrap()
    };
    create(&|device| device.create_device_interface(&late, None)).unwrap();
    assert_eq!(runtime.open(&late).err(), Some(NtError::OBJECT_NAME_NOT_FOUND));
    assert_eq!(
        create(&|device| device.create_device_interface(&late, None)),
        Err(NtError::INVALID_PARAMETER),
        "the same interface twice"
    );
    node.with_device(|device: &kmdf::Device<Dev>| {
        device.set_device_interface_state(&late, None, true);
    })
    .unwrap();
    assert!(runtime.open(&late).is_ok());
    assert!(runtime.verifier_findings().is_empty());
    // An interface the device never registered: KMDF ignores it (the DDI returns nothing);
    // the verifier reports it.
    let unknown = Guid::parse("00000000-0000-0000-0000-000000000002");
    node.with_device(|device: &kmdf::Device<Dev>| {
        device.set_device_interface_state(&unknown, None, true);
    })
    .unwrap();
    let findings = runtime.verifier_findings();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(findings[0].message.contains("WdfDeviceSetDeviceInterfaceState"), "{findings:?}");
    assert_eq!(runtime.open(&unknown).err(), Some(NtError::OBJECT_NAME_NOT_FOUND));
    // The next PnP action reports it as an error.
    assert!(node.remove().is_err());
}

/// Section 9.6: `EvtFileClose` runs at `PASSIVE_LEVEL` even when the handle's last request
/// is completed above it (under a spin lock): it is deferred to a worker thread.
#[test]
fn the_close_after_a_completion_at_dispatch_level_runs_at_passive_level() {
    let (runtime, node, handle) = started(Plan { on_read: OnRead::Pend, ..Plan::default() });
    let read = handle.read_async(1);
    handle.close();
    let request = with_q(&node, io_common::Q::take_oldest).unwrap();
    let lock = kmdf::sync::SpinLock::new(()).unwrap();
    let guard = lock.lock();
    request.complete(NtStatus::SUCCESS);
    drop(guard);
    runtime.wait_for_work_items().unwrap();
    assert_eq!(read.status(), Some(NtStatus::SUCCESS));
    let trace = lines(&runtime);
    assert!(trace.contains(&String::from("EvtFileClose")), "{trace:?}");
    assert!(runtime.panics().is_empty(), "{:?}", runtime.panics());
}

/// `DeviceInit::set_file_object::<F>` ties the device's context type to `F::Device`: a
/// device of another type is refused before anything is created.
#[test]
fn file_callbacks_for_another_device_type_are_refused() {
    struct Other;
    kmdf::vtable! { impl kmdf::PnpPowerCallbacks for Other {} }
    struct Mismatch;
    impl kmdf::Driver for Mismatch {
        fn driver_entry() -> kmdf::Result<Self> {
            Ok(Mismatch)
        }
        fn device_add(&self, mut init: kmdf::DeviceInit<'_>) -> kmdf::Result {
            init.set_file_object::<io_common::Handle>(); // written for `Dev`
            assert_eq!(init.create(Other).err(), Some(NtError::INVALID_PARAMETER));
            Err(NtError::INVALID_PARAMETER)
        }
    }
    let runtime = kmdf::host::Runtime::new();
    let driver = runtime.load::<Mismatch>().unwrap();
    assert!(driver.add_device().is_err());
    assert!(!runtime.live_objects().contains(&ObjectKind::Device));
}

/// `mark_cancelable` takes the request's own queue: another queue is a driver bug (the
/// cancel callback is the request's queue's), reported as a panic of the callback; the
/// request, dropped in the unwinding, is completed `STATUS_CANCELLED`.
#[test]
fn mark_cancelable_with_another_queue_panics() {
    use kmdf::io_queue::{Dispatch, IoQueue, IoQueueCallbacks, IoQueueConfig};
    use kmdf::object::ObjectRef;

    struct TwoQueues {
        other: ObjectRef<IoQueue<Reads>>,
    }
    kmdf::vtable! { impl kmdf::PnpPowerCallbacks for TwoQueues {} }
    struct Reads;
    kmdf::vtable! {
        impl IoQueueCallbacks for Reads {
            type Device = TwoQueues;
            fn read(
                &self,
                _queue: &IoQueue<Self>,
                device: &kmdf::Device<Self::Device>,
                request: kmdf::Request,
                _length: usize,
            ) {
                let other = device.context().other.clone();
                let _ = request.mark_cancelable(&other); // panics
            }
            fn request_cancel(
                &self,
                _queue: &IoQueue<Self>,
                _device: &kmdf::Device<Self::Device>,
                request: kmdf::Request,
            ) {
                request.complete(NtStatus::CANCELLED);
            }
        }
    }
    struct Driver;
    impl kmdf::Driver for Driver {
        fn driver_entry() -> kmdf::Result<Self> {
            Ok(Driver)
        }
        fn device_add(&self, init: kmdf::DeviceInit<'_>) -> kmdf::Result {
            let device = init.create_with(|device| {
                let other =
                    IoQueue::create(device, IoQueueConfig::new(Dispatch::parallel()), Reads)?;
                Ok(TwoQueues { other })
            })?;
            device.create_device_interface(&GUID_DEVINTERFACE_TEST, None)?;
            IoQueue::create(device, IoQueueConfig::default_queue(Dispatch::parallel()), Reads)?;
            Ok(())
        }
    }
    let runtime = kmdf::host::Runtime::new();
    let node = runtime.load::<Driver>().unwrap().add_device().unwrap();
    node.start().unwrap();
    let read = runtime.open(&GUID_DEVINTERFACE_TEST).unwrap().read(1).unwrap();
    assert_eq!(read.status, NtStatus::CANCELLED);
    let panics = runtime.take_panics();
    assert_eq!(panics.len(), 1);
    assert!(panics[0].message.contains("another queue"), "{}", panics[0].message);
    assert_eq!(panics[0].callback, Callback::IoRead);
    // The dropped request is a finding too, which the next action reports.
    assert!(runtime.verifier_findings()[0].message.contains("dropped"));
    assert!(node.remove().is_err());
}

/// Section 9.4: a `METHOD_BUFFERED` device control's output buffer starts with the input
/// bytes (in the kernel they are one system buffer); other methods' output starts zeroed.
#[test]
fn a_buffered_device_control_output_starts_with_its_input() {
    use kmdf::io_queue::{Dispatch, IoQueue, IoQueueCallbacks, IoQueueConfig};

    const BUFFERED: u32 = ctl_code(0x8000, 0x900, TransferMethod::Buffered, Access::Any);
    const OUT_DIRECT: u32 = ctl_code(0x8000, 0x901, TransferMethod::OutDirect, Access::Any);

    struct Bare;
    kmdf::vtable! { impl kmdf::PnpPowerCallbacks for Bare {} }
    /// Completes with the whole output, unwritten.
    struct Untouched;
    kmdf::vtable! {
        impl IoQueueCallbacks for Untouched {
            type Device = Bare;
            fn device_control(
                &self,
                _queue: &IoQueue<Self>,
                _device: &kmdf::Device<Self::Device>,
                mut request: kmdf::Request,
                output_length: usize,
                _input_length: usize,
                _code: u32,
            ) {
                let length = request.output_buffer(output_length).map(|b| b.len());
                assert_eq!(length, Ok(output_length));
                request.complete_with_information(NtStatus::SUCCESS, output_length).unwrap();
            }
        }
    }
    struct Driver;
    impl kmdf::Driver for Driver {
        fn driver_entry() -> kmdf::Result<Self> {
            Ok(Driver)
        }
        fn device_add(&self, init: kmdf::DeviceInit<'_>) -> kmdf::Result {
            let device = init.create(Bare)?;
            device.create_device_interface(&GUID_DEVINTERFACE_TEST, None)?;
            let config = IoQueueConfig::default_queue(Dispatch::parallel());
            IoQueue::create(device, config, Untouched)?;
            Ok(())
        }
    }
    let runtime = kmdf::host::Runtime::new();
    let node = runtime.load::<Driver>().unwrap().add_device().unwrap();
    node.start().unwrap();
    let handle = runtime.open(&GUID_DEVINTERFACE_TEST).unwrap();
    let done = handle.ioctl(BUFFERED, b"abc", 5).unwrap();
    assert_eq!((done.status, done.data.as_slice()), (NtStatus::SUCCESS, &b"abc\0\0"[..]));
    let done = handle.ioctl(BUFFERED, b"abcdef", 2).unwrap();
    assert_eq!(done.data.as_slice(), &b"ab"[..]);
    let done = handle.ioctl(OUT_DIRECT, b"abc", 3).unwrap();
    assert_eq!(done.data.as_slice(), &[0, 0, 0][..]);
}
