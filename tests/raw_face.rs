//! The host runtime's raw face (`kmdf::host::raw`, feature `sys-harness`): a driver whose
//! callbacks are hooks rather than trait methods gets the runtime's own models, with the
//! same trace as a typed driver. Run with `cargo test --features sys-harness --test raw_face`.

#![cfg(feature = "sys-harness")]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use kmdf::host::raw::{self, Cleanup, DriverHooks, Hooks, Object, RawDriver};
use kmdf::host::{AssignedResources, PnpAction, Runtime};
use kmdf::{Callback, DeviceInit, DevicePowerState, NtError, Result};

/// What the hooks saw.
static WORK_IRQL: AtomicU8 = AtomicU8::new(u8::MAX);
static TIMER_IRQL: AtomicU8 = AtomicU8::new(u8::MAX);
static ITEM_CLEANUPS: AtomicU32 = AtomicU32::new(0);
static CHILDREN: Mutex<Vec<Object>> = Mutex::new(Vec::new());

struct Driver;

impl DriverHooks for Driver {
    fn device_add(&self, init: DeviceInit<'_>) -> Result {
        let registered = [Callback::D0Entry, Callback::D0Exit, Callback::SelfManagedIoInit];
        let device = raw::create_device(init, &registered, Cleanup::Traced, Box::new(Dev))?;
        let item = raw::create_work_item(&device, Cleanup::Untraced, Box::new(Item))?;
        let timer = raw::create_timer(&device, 0, Cleanup::None, Box::new(Tick))?;
        CHILDREN.lock().unwrap().extend([item, timer]);
        Ok(())
    }
}

struct Dev;

impl Hooks for Dev {
    fn pnp(
        &self,
        _device: &Object,
        callback: Callback,
        power_state: Option<DevicePowerState>,
        _resources: &AssignedResources,
    ) -> Result {
        if callback == Callback::SelfManagedIoInit {
            let children = CHILDREN.lock().unwrap();
            raw::timer_start(&children[1], Duration::from_millis(10))?;
        }
        assert_eq!(power_state.is_some(), matches!(callback, Callback::D0Entry | Callback::D0Exit));
        Ok(())
    }

    fn cleanup(&self, _object: &Object) {}
}

struct Item;

impl Hooks for Item {
    fn run(&self, _object: &Object, _parent: &Object) {
        WORK_IRQL.store(raw::current_irql(), Ordering::SeqCst);
    }

    fn cleanup(&self, _object: &Object) {
        ITEM_CLEANUPS.fetch_add(1, Ordering::SeqCst);
    }
}

struct Tick;

impl Hooks for Tick {
    fn run(&self, _object: &Object, _parent: &Object) {
        TIMER_IRQL.store(raw::current_irql(), Ordering::SeqCst);
        let item = CHILDREN.lock().unwrap()[0].clone();
        assert_eq!(raw::enqueue(&item), Ok(true));
    }
}

/// One test: the hooks' statics are shared.
#[test]
fn a_raw_driver_lives_on_the_runtime_s_models() {
    let runtime = Runtime::new();
    // A failure injected into DriverEntry fails it without running it (section 8.3).
    runtime.inject_failure(Callback::DriverEntry, 1, NtError::UNSUCCESSFUL).unwrap();
    let mut ran = false;
    let failed = raw::load(&runtime, || {
        ran = true;
        Ok(RawDriver::new(Box::new(Driver)))
    });
    assert!(failed.is_err() && !ran);
    let driver = raw::load(&runtime, || Ok(RawDriver::new(Box::new(Driver)))).unwrap();
    assert!(raw::driver_object(&driver).is_ok());
    let node = driver.add_device().unwrap();
    assert!(raw::with_device(&node, |_: &Dev| ()).is_ok());
    assert!(raw::with_device(&node, |_: &Item| ()).is_err(), "the device's hooks are a Dev");
    node.start().unwrap();
    // The timer fires at DISPATCH_LEVEL and its work item runs at PASSIVE_LEVEL (section 6).
    runtime.advance(Duration::from_millis(10)).unwrap();
    runtime.wait_for_work_items().unwrap();
    assert_eq!(TIMER_IRQL.load(Ordering::SeqCst), 2);
    assert_eq!(WORK_IRQL.load(Ordering::SeqCst), 0);
    node.apply(PnpAction::Remove).unwrap();
    CHILDREN.lock().unwrap().clear();
    // The work item's untraced cleanup ran, once, without a trace line; the device's traced
    // one has its line; every object's destroy is traced when its last reference goes
    // (section 5): the device's with its removal, its children's when the references the
    // test held on them go.
    assert_eq!(ITEM_CLEANUPS.load(Ordering::SeqCst), 1);
    assert_eq!(
        runtime.trace().lines(),
        [
            "DriverEntry -> STATUS_UNSUCCESSFUL (injected)",
            "DriverEntry",
            "EvtDriverDeviceAdd",
            "EvtDeviceD0Entry(D3Final)",
            "EvtDeviceSelfManagedIoInit",
            "EvtTimerFunc",
            "EvtWorkItem",
            "EvtDeviceD0Exit(D3Final)",
            "EvtCleanupCallback(WDFDEVICE)",
            "EvtDestroyCallback(WDFDEVICE)",
            "EvtDestroyCallback(WDFWORKITEM)",
            "EvtDestroyCallback(WDFTIMER)",
        ]
    );
}

/// What `Idler::device_add` got from the power-policy calls.
static ASSIGNED: Mutex<Vec<Result>> = Mutex::new(Vec::new());

/// A raw driver whose device idles armed for wake (docs/kmdf-behaviour.md section 10).
struct Idler;

impl DriverHooks for Idler {
    fn device_add(&self, init: DeviceInit<'_>) -> Result {
        use kmdf::power_policy::{IdleCaps, S0IdleSettings, SxWakeSettings};
        let registered = [
            Callback::D0Entry,
            Callback::ArmWakeFromS0,
            Callback::DisarmWakeFromS0,
            Callback::WakeFromS0Triggered,
        ];
        let device = raw::create_device(init, &registered, Cleanup::None, Box::new(Armed))?;
        let item = raw::create_work_item(&device, Cleanup::None, Box::new(Armed))?;
        let settings =
            S0IdleSettings::new(IdleCaps::CanWakeFromS0).idle_timeout(Duration::from_millis(100));
        let mut assigned = ASSIGNED.lock().unwrap();
        assigned.extend([
            // KMDF's checks, as the typed face makes them.
            raw::assign_s0_idle_settings(&device, &settings.power_up_on_system_wake(false)),
            raw::assign_s0_idle_settings(&item, &settings),
            raw::assign_sx_wake_settings(&item, SxWakeSettings::new()),
            raw::assign_s0_idle_settings(&device, &settings),
            raw::assign_sx_wake_settings(&device, SxWakeSettings::new()),
        ]);
        Ok(())
    }
}

struct Armed;

impl Hooks for Armed {
    fn pnp(
        &self,
        _device: &Object,
        callback: Callback,
        power_state: Option<DevicePowerState>,
        _resources: &AssignedResources,
    ) -> Result {
        assert_eq!(power_state.is_some(), callback == Callback::D0Entry);
        Ok(())
    }
}

#[test]
fn a_raw_device_s_power_policy_is_the_runtime_s() {
    let runtime = Runtime::new();
    let driver = raw::load(&runtime, || Ok(RawDriver::new(Box::new(Idler)))).unwrap();
    let node = driver.add_device().unwrap();
    assert_eq!(
        *ASSIGNED.lock().unwrap(),
        [
            Err(NtError::INVALID_PARAMETER),
            Err(NtError::INVALID_DEVICE_REQUEST),
            Err(NtError::INVALID_DEVICE_REQUEST),
            Ok(()),
            Ok(()),
        ]
    );
    node.start().unwrap();
    // Idles at its timeout, armed; the wake signal brings it back (section 10's rows).
    runtime.advance(Duration::from_millis(99)).unwrap();
    assert_eq!(node.state(), kmdf::host::NodeState::Working);
    runtime.advance(Duration::from_millis(1)).unwrap();
    assert_eq!(node.state(), kmdf::host::NodeState::Idle);
    node.signal_wake().unwrap();
    assert_eq!(
        runtime.trace().lines(),
        [
            "DriverEntry",
            "EvtDriverDeviceAdd",
            "EvtDeviceD0Entry(D3Final)",
            "EvtDeviceArmWakeFromS0",
            "EvtDeviceD0Entry(D3)",
            "EvtDeviceWakeFromS0Triggered",
            "EvtDeviceDisarmWakeFromS0",
        ]
    );
    node.apply(PnpAction::Remove).unwrap();
}

// ---- File objects and device interfaces (docs/kmdf-behaviour.md sections 9.6, 9.7) -------

const GUID_RAW: kmdf::interface::Guid =
    kmdf::interface::Guid::parse("{5a0d4f36-1b7e-4c2a-9d3e-7f1a2b3c4d5e}");

struct FileDriver;

impl DriverHooks for FileDriver {
    fn device_add(&self, mut init: DeviceInit<'_>) -> Result {
        raw::set_file_object(
            &mut init,
            &[Callback::DeviceFileCreate, Callback::FileCleanup, Callback::FileClose],
        );
        let device = raw::create_device(init, &[], Cleanup::None, Box::new(FileDev))?;
        raw::create_device_interface(&device, &GUID_RAW, None)?;
        assert_eq!(
            raw::create_device_interface(&device, &GUID_RAW, None),
            Err(NtError::INVALID_PARAMETER),
            "section 9.7: the same interface twice"
        );
        Ok(())
    }
}

/// Refuses the second open (`STATUS_DEVICE_BUSY`).
struct FileDev;

static OPENS: AtomicU32 = AtomicU32::new(0);

impl Hooks for FileDev {
    fn file_create(&self, device: &Object, _file: &Object) -> Result<Box<dyn Hooks>> {
        assert_eq!(device.kind(), kmdf::host::ObjectKind::Device);
        if OPENS.fetch_add(1, Ordering::SeqCst) == 1 {
            return Err(NtError::DEVICE_BUSY);
        }
        Ok(Box::new(Handle))
    }
}

struct Handle;

impl Hooks for Handle {
    fn file_cleanup(&self, file: &Object, device: &Object) {
        assert_eq!(
            (file.kind(), device.kind()),
            (kmdf::host::ObjectKind::File, kmdf::host::ObjectKind::Device)
        );
    }

    fn file_close(&self, file: &Object, _device: &Object) {
        assert!(file.hooks::<Handle>().is_some());
    }
}

/// Section 9.7: a raw device's interface is enabled at its first start, so an open before
/// fails `STATUS_OBJECT_NAME_NOT_FOUND`; section 9.6: each open is `EvtDeviceFileCreate`
/// with the hooks' status, a close `EvtFileCleanup` then `EvtFileClose`.
#[test]
fn a_raw_device_s_files_and_interface_are_the_runtime_s() {
    let runtime = Runtime::new();
    let driver = raw::load(&runtime, || Ok(RawDriver::new(Box::new(FileDriver)))).unwrap();
    let node = driver.add_device().unwrap();
    assert_eq!(runtime.open(&GUID_RAW).err(), Some(NtError::OBJECT_NAME_NOT_FOUND));
    node.apply(PnpAction::Start).unwrap();
    let _ = runtime.take_trace();
    let handle = runtime.open(&GUID_RAW).unwrap();
    assert_eq!(runtime.open(&GUID_RAW).err(), Some(NtError::DEVICE_BUSY));
    handle.close();
    assert_eq!(
        runtime.take_trace().lines(),
        [
            "EvtDeviceFileCreate",
            // The refused open's file object goes without a line, as on the typed face.
            "EvtDeviceFileCreate -> STATUS_DEVICE_BUSY",
            "EvtFileCleanup",
            "EvtFileClose",
            "EvtDestroyCallback(WDFFILEOBJECT)",
        ]
    );
    node.apply(PnpAction::Remove).unwrap();
    assert_eq!(node.open(&GUID_RAW).err(), Some(NtError::NO_SUCH_DEVICE));
    assert!(runtime.verifier_findings().is_empty(), "{:?}", runtime.verifier_findings());
}

// ---- Queues (docs/kmdf-behaviour.md sections 9.1, 9.2, 9.4) -----------------------------

const GUID_QUEUE: kmdf::interface::Guid =
    kmdf::interface::Guid::parse("{6b1e5047-2c8f-4d3b-8e4f-8a2b3c4d5e6f}");

struct QueueDriver;

impl DriverHooks for QueueDriver {
    fn device_add(&self, init: DeviceInit<'_>) -> Result {
        use kmdf::io_queue::{Dispatch, IoQueueConfig};
        let device = raw::create_device(init, &[], Cleanup::None, Box::new(QueueDev))?;
        raw::create_device_interface(&device, &GUID_QUEUE, None)?;
        let parallel = Dispatch::parallel();
        // Section 9.2: a queue that presents needs a handler, a manual queue has none.
        assert_eq!(
            raw::create_queue(
                &device,
                IoQueueConfig::new(parallel),
                &[],
                Cleanup::None,
                Box::new(Queue)
            )
            .err(),
            Some(NtError::WDF_NO_CALLBACK)
        );
        assert_eq!(
            raw::create_queue(
                &device,
                IoQueueConfig::new(Dispatch::Manual),
                &[Callback::IoRead],
                Cleanup::None,
                Box::new(Queue)
            )
            .err(),
            Some(NtError::INVALID_PARAMETER)
        );
        let config = IoQueueConfig::default_queue(parallel);
        let queue = raw::create_queue(
            &device,
            config,
            &[Callback::IoRead],
            Cleanup::Traced,
            Box::new(Queue),
        )?;
        assert_eq!(queue.kind(), kmdf::host::ObjectKind::Queue);
        // Section 9.2: one default queue per device.
        assert_eq!(
            raw::create_queue(&device, config, &[Callback::IoRead], Cleanup::None, Box::new(Queue))
                .err(),
            Some(NtError::UNSUCCESSFUL)
        );
        Ok(())
    }
}

struct QueueDev;
impl Hooks for QueueDev {}

static PRESENTED: Mutex<Vec<Callback>> = Mutex::new(Vec::new());
static CLAIMS: Mutex<Vec<raw::Cancelable>> = Mutex::new(Vec::new());

struct Queue;

impl Hooks for Queue {
    fn queue(&self, queue: &Object, device: &Object, event: raw::QueueEvent<'_>) {
        assert!(queue.hooks::<Queue>().is_some());
        assert_eq!(device.kind(), kmdf::host::ObjectKind::Device);
        PRESENTED.lock().unwrap().push(event.callback());
        match event {
            // The first read is kept cancelable, the second one answered at once.
            raw::QueueEvent::Read(mut request, length) => {
                assert_eq!(request.parameters(), kmdf::request::Parameters::Read { length });
                assert!(request.file().is_some(), "sent on a file object");
                if CLAIMS.lock().unwrap().is_empty() {
                    let claim = request.mark_cancelable(queue).unwrap();
                    CLAIMS.lock().unwrap().push(claim);
                    return;
                }
                request.output_buffer(length).unwrap().fill(b'T');
                // Section 9.4: a success's information is at most the buffer's length.
                let (request, error) = request
                    .complete_with_information(kmdf::NtStatus::SUCCESS, length + 1)
                    .unwrap_err();
                assert_eq!(error, NtError::INVALID_PARAMETER);
                request.complete_with_information(kmdf::NtStatus::SUCCESS, length).unwrap();
            }
            // Section 9.5: the cancelled request is the driver's again; its claim is gone.
            raw::QueueEvent::Cancel(request) => {
                let claim = CLAIMS.lock().unwrap().pop().unwrap();
                assert_eq!(claim.id(), request.id());
                assert!(claim.unmark().is_none(), "its cancellation has it");
                request.complete(kmdf::NtStatus::CANCELLED, 0);
            }
            other => panic!("not registered: {other:?}"),
        }
    }
}

/// Section 9.1: reads go to the default queue, which presents them to the queue's hooks
/// (`EvtIoRead`, with the queue and its device); section 9.5: a request marked cancelable
/// comes back in `EvtRequestCancel` when the application cancels it; the queue's cleanup at
/// the removal.
#[test]
fn a_raw_queue_presents_requests_to_its_hooks() {
    let runtime = Runtime::new();
    let driver = raw::load(&runtime, || Ok(RawDriver::new(Box::new(QueueDriver)))).unwrap();
    let node = driver.add_device().unwrap();
    node.apply(PnpAction::Start).unwrap();
    let _ = runtime.take_trace();
    let handle = runtime.open(&GUID_QUEUE).unwrap();
    let pending = handle.read(8).unwrap_err();
    let done = handle.read(8).unwrap();
    assert_eq!(
        (done.status, done.information, done.data),
        (kmdf::NtStatus::SUCCESS, 8, vec![b'T'; 8])
    );
    pending.cancel();
    assert_eq!(pending.wait().unwrap().status, kmdf::NtStatus::CANCELLED);
    assert_eq!(
        PRESENTED.lock().unwrap().as_slice(),
        [Callback::IoRead, Callback::IoRead, Callback::RequestCancel]
    );
    handle.close();
    node.apply(PnpAction::Remove).unwrap();
    let trace = runtime.take_trace().lines();
    assert_eq!(trace[..3], ["EvtIoRead(8)", "EvtIoRead(8)", "EvtRequestCancel"], "{trace:?}");
    assert!(trace.iter().any(|line| line == "EvtCleanupCallback(WDFQUEUE)"), "{trace:?}");
    assert!(runtime.verifier_findings().is_empty(), "{:?}", runtime.verifier_findings());
}
