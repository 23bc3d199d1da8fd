//! The runtime's verifier catches a deliberately broken driver: one that touches its work
//! item after `SelfManagedIoFlush`, which docs/kmdf-behaviour.md section 4 says drivers must not
//! let happen (KMDF would run it during removal, after the device's resources are gone).

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::Duration;

use kmdf::host::{PnpAction, PnpError, Runtime, Trace, Violation};
use kmdf::object::ObjectRef;
use kmdf::sync::SpinLock;
use kmdf::{
    Callback, Device, DeviceInit, Driver, PnpPowerCallbacks, Result, WorkItem, WorkItemCallbacks,
};

struct Leaky;

impl Driver for Leaky {
    fn driver_entry() -> Result<Self> {
        Ok(Leaky)
    }
    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        device_init.create(LeakyDevice { report: SpinLock::new(None)? })?;
        Ok(())
    }
}

struct LeakyDevice {
    report: SpinLock<Option<ObjectRef<WorkItem<Report>>>>,
}

struct Report;

kmdf::vtable! {
    impl WorkItemCallbacks for Report {
        type Parent = Device<LeakyDevice>;
        fn run(&self, _item: &WorkItem<Self>, _device: &Device<LeakyDevice>) {}
    }
}

kmdf::vtable! {
    impl PnpPowerCallbacks for LeakyDevice {
        fn self_managed_io_init(&self, device: &Device<Self>) -> Result {
            *self.report.lock() = Some(WorkItem::create(device, Report)?);
            Ok(())
        }

        fn self_managed_io_flush(&self, _device: &Device<Self>) {
            // Correct drivers flush their work items here. This one does not, and worse:
        }

        fn self_managed_io_cleanup(&self, _device: &Device<Self>) {
            // The bug: "one last report" after Flush, instead of deleting the item.
            if let Some(report) = self.report.lock().as_ref() {
                let _ = report.enqueue();
            }
        }
    }
}

#[test]
fn a_work_item_run_after_flush_is_reported() {
    let runtime = Runtime::new();
    let driver = runtime.load::<Leaky>().unwrap();
    let node = driver.add_device().unwrap();
    node.apply(PnpAction::Start).unwrap();

    let error = node.apply(PnpAction::Remove).unwrap_err();
    let PnpError::InvariantViolated { action, violations, trace } = &error else {
        panic!("expected a violation, got {error}");
    };
    assert_eq!(*action, PnpAction::Remove);
    assert_eq!(violations.len(), 1, "{violations:?}");
    let Violation::Verifier(finding) = &violations[0] else {
        panic!("expected a verifier finding, got {:?}", violations[0]);
    };
    assert_eq!((finding.device, finding.callback), (node.id(), Callback::WorkItem));
    assert_eq!(violations[0].invariant(), None);
    assert!(violations[0].to_string().starts_with(
        "EvtWorkItem ran after EvtDeviceSelfManagedIoFlush returned: the driver left it queued"
    ));
    // The report carries the device's trace, which shows the run after Flush.
    let lines = trace.lines();
    let flush = lines.iter().position(|l| l == "EvtDeviceSelfManagedIoFlush").unwrap();
    let run = lines.iter().position(|l| l == "EvtWorkItem").unwrap();
    assert!(flush < run);
    // Readable as a whole.
    let report = error.to_string();
    assert!(
        report.starts_with("after `remove`, KMDF invariants were violated:\n  - EvtWorkItem ran")
    );
    assert!(report.contains("trace of the device:\nEvtDriverDeviceAdd\n"));

    // The runtime keeps the finding too, and the removal itself completed.
    let findings = runtime.verifier_findings();
    assert_eq!(findings.len(), 1);
    assert_eq!((findings[0].device, findings[0].callback), (node.id(), Callback::WorkItem));
    assert!(node.is_removed());
    driver.unload().unwrap();
}

#[test]
fn a_driver_that_flushes_is_not_reported() {
    // The same device, flushing in SelfManagedIoFlush and deleting in Cleanup, as the
    // toaster sample does, is clean: its last run happens before Flush returns.
    struct Tidy;
    impl Driver for Tidy {
        fn driver_entry() -> Result<Self> {
            Ok(Tidy)
        }
        fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
            device_init.create(TidyDevice { report: SpinLock::new(None)? })?;
            Ok(())
        }
    }
    struct TidyDevice {
        report: SpinLock<Option<ObjectRef<WorkItem<TidyReport>>>>,
    }
    struct TidyReport;
    kmdf::vtable! {
        impl WorkItemCallbacks for TidyReport {
            type Parent = Device<TidyDevice>;
            fn run(&self, _item: &WorkItem<Self>, _device: &Device<TidyDevice>) {}
        }
    }
    kmdf::vtable! {
        impl PnpPowerCallbacks for TidyDevice {
            fn self_managed_io_init(&self, device: &Device<Self>) -> Result {
                let report = WorkItem::create(device, TidyReport)?;
                report.enqueue()?;
                *self.report.lock() = Some(report);
                Ok(())
            }
            fn self_managed_io_flush(&self, _device: &Device<Self>) {
                let report = self.report.lock().clone();
                if let Some(report) = report {
                    let _ = report.enqueue();
                    report.flush().unwrap();
                }
            }
            fn self_managed_io_cleanup(&self, _device: &Device<Self>) {
                if let Some(report) = self.report.lock().take() {
                    report.delete().unwrap();
                }
            }
        }
    }
    let runtime = Runtime::new();
    let driver = runtime.load::<Tidy>().unwrap();
    let node = driver.add_device().unwrap();
    node.apply(PnpAction::Start).unwrap();
    node.apply(PnpAction::Remove).unwrap();
    assert!(runtime.verifier_findings().is_empty());
}

#[test]
fn a_leaky_driver_left_to_the_runtimes_teardown_fails_the_drop() {
    // The runtime surprise-removes the device it still owns when dropped; what the checks
    // find then fails the drop, as it would fail the action.
    let payload = std::panic::catch_unwind(|| {
        let runtime = Runtime::new();
        let driver = runtime.load::<Leaky>().unwrap();
        driver.add_device().unwrap().start().unwrap();
    })
    .expect_err("the drop fails");
    let message = payload.downcast_ref::<String>().expect("a formatted message");
    assert!(
        message.starts_with(
            "kmdf host runtime: tearing down the devices left when it was dropped, after \
             `surprise-remove`, KMDF invariants were violated:\n  - EvtWorkItem ran after \
             EvtDeviceSelfManagedIoFlush returned"
        ),
        "{message}"
    );
}

/// The trace an action's `InvariantViolated` error carries.
fn violation_trace(error: PnpError) -> Trace {
    match error {
        PnpError::InvariantViolated { trace, .. } => trace,
        other => panic!("expected a violation, got {other}"),
    }
}

#[test]
fn the_report_carries_the_devices_whole_trace_however_the_runtime_trace_was_used() {
    // `PnpError::InvariantViolated` carries "the device's trace": every entry of the device,
    // from its EvtDriverDeviceAdd on, whatever the test did with the runtime's trace before
    // the device was added.

    // Tracing off while loading: the device's EvtDriverDeviceAdd is the runtime's first entry.
    let runtime = Runtime::new();
    runtime.set_tracing(false);
    let driver = runtime.load::<Leaky>().unwrap();
    runtime.set_tracing(true);
    let node = driver.add_device().unwrap();
    node.apply(PnpAction::Start).unwrap();
    let trace = violation_trace(node.apply(PnpAction::Remove).unwrap_err());
    assert_eq!(trace.lines()[0], "EvtDriverDeviceAdd");
    assert_eq!(trace.lines(), node.trace().lines());
    assert_eq!(runtime.trace().count(Callback::DriverEntry), 0, "loaded with tracing off");

    // Three entries taken, two more recorded, then the device is added.
    let runtime = Runtime::new();
    let driver = runtime.load::<Leaky>().unwrap();
    let _others = [driver.add_device().unwrap(), driver.add_device().unwrap()];
    assert_eq!(runtime.take_trace().len(), 3);
    let _more = [driver.add_device().unwrap(), driver.add_device().unwrap()];
    let node = driver.add_device().unwrap();
    node.apply(PnpAction::Start).unwrap();
    let trace = violation_trace(node.apply(PnpAction::Remove).unwrap_err());
    assert_eq!(trace.lines()[0], "EvtDriverDeviceAdd");
    assert_eq!(trace.lines(), node.trace().lines());
}

// ---- Findings belong to the action of their own device ---------------------------------

struct Gated;

impl Driver for Gated {
    fn driver_entry() -> Result<Self> {
        Ok(Gated)
    }
    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        device_init.create(GatedDevice {
            report: SpinLock::new(None)?,
            entered: Mutex::new(None),
            go: Mutex::new(None),
        })?;
        Ok(())
    }
}

/// `LeakyDevice` whose late report, when the test set the gate, says it started and waits
/// for the test to let it go.
struct GatedDevice {
    report: SpinLock<Option<ObjectRef<WorkItem<GatedReport>>>>,
    entered: Mutex<Option<Sender<()>>>,
    go: Mutex<Option<Receiver<()>>>,
}

struct GatedReport;

kmdf::vtable! {
    impl WorkItemCallbacks for GatedReport {
        type Parent = Device<GatedDevice>;
        fn run(&self, _item: &WorkItem<Self>, device: &Device<GatedDevice>) {
            let device = device.context();
            let entered = device.entered.lock().unwrap().take();
            if let Some(entered) = entered {
                entered.send(()).unwrap();
                let go = device.go.lock().unwrap().take().expect("a gate has both ends");
                go.recv_timeout(Duration::from_secs(20)).expect("the test lets the run go");
            }
        }
    }
}

kmdf::vtable! {
    impl PnpPowerCallbacks for GatedDevice {
        fn self_managed_io_init(&self, device: &Device<Self>) -> Result {
            *self.report.lock() = Some(WorkItem::create(device, GatedReport)?);
            Ok(())
        }

        fn self_managed_io_flush(&self, _device: &Device<Self>) {}

        fn self_managed_io_cleanup(&self, _device: &Device<Self>) {
            if let Some(report) = self.report.lock().as_ref() {
                let _ = report.enqueue();
            }
        }
    }
}

#[test]
fn a_finding_is_reported_by_its_own_devices_action_only() {
    let runtime = Runtime::new();
    let driver = runtime.load::<Gated>().unwrap();
    let leaky = driver.add_device().unwrap();
    let bystander = driver.add_device().unwrap();
    leaky.apply(PnpAction::Start).unwrap();
    bystander.apply(PnpAction::Start).unwrap();

    let (entered_tx, entered) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    leaky
        .with_context(|device: &GatedDevice| {
            *device.entered.lock().unwrap() = Some(entered_tx);
            *device.go.lock().unwrap() = Some(go_rx);
        })
        .unwrap();
    thread::scope(|scope| {
        let removal = scope.spawn(|| leaky.apply(PnpAction::Remove));
        // The late run has started: the verifier has its finding, and the removal waits for
        // the run (docs/kmdf-behaviour.md section 4: deletion waits for a running callback).
        entered.recv_timeout(Duration::from_secs(20)).expect("the late run starts");
        assert_eq!(runtime.verifier_findings().len(), 1);
        assert_eq!(runtime.verifier_findings()[0].device, leaky.id());
        // Another device's action meanwhile has nothing to report.
        let meanwhile = bystander.apply(PnpAction::Idle);
        go.send(()).unwrap();
        assert_eq!(meanwhile, Ok(()));
        let error = removal.join().unwrap().unwrap_err();
        let PnpError::InvariantViolated { violations, .. } = &error else {
            panic!("expected a violation, got {error}");
        };
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0]
                .to_string()
                .starts_with("EvtWorkItem ran after EvtDeviceSelfManagedIoFlush")
        );
    });
    // The bystander's own late run is its own finding, reported once, by its own removal.
    let error = bystander.apply(PnpAction::Remove).unwrap_err();
    let PnpError::InvariantViolated { violations, .. } = &error else {
        panic!("expected a violation, got {error}");
    };
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(runtime.verifier_findings().len(), 2);
}
