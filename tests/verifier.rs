//! The runtime's verifier catches a deliberately broken driver: one that touches its work
//! item after `SelfManagedIoFlush`, which docs/kmdf-behaviour.md section 4 says drivers must not
//! let happen (KMDF would run it during removal, after the device's resources are gone).

use kmdf::host::{PnpAction, PnpError, Runtime, Violation};
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
