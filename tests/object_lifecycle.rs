//! The object life cycle on the host runtime (docs/kmdf-behaviour.md section 5) where deletions
//! meet: a deletion reached again on the thread that is disposing the object, a deletion
//! reached on another thread while one is under way, and the framework objects as a test
//! prints them.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use kmdf::host::{DeviceNode, LoadedDriver, NodeState, Runtime};
use kmdf::object::ObjectRef;
use kmdf::sync::SpinLock;
use kmdf::{Device, DeviceInit, Driver, PnpPowerCallbacks, Result, WorkItem, WorkItemCallbacks};

/// The hang guard: far longer than any of these tests takes.
const TIMEOUT: Duration = Duration::from_secs(20);

type Log = Arc<Mutex<Vec<&'static str>>>;

struct Lab;

impl Driver for Lab {
    fn driver_entry() -> Result<Self> {
        Ok(Lab)
    }

    /// A device with two work items, `first` and `second`, created in that order.
    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        let device =
            device_init.create(LabDevice { log: Log::default(), items: SpinLock::new(None)? })?;
        let item = || WorkItem::create(device, Hooked { on_cleanup: Mutex::new(None) });
        *device.context().items.lock() = Some([item()?, item()?]);
        Ok(())
    }
}

struct LabDevice {
    log: Log,
    items: SpinLock<Option<[ObjectRef<WorkItem<Hooked>>; 2]>>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for LabDevice {
        fn cleanup(&self, _device: &Device<Self>) {
            self.log.lock().unwrap().push("device cleanup");
        }
    }
}

type Hook = Box<dyn FnOnce() + Send>;

/// A work item whose cleanup callback runs what the test gave it.
struct Hooked {
    on_cleanup: Mutex<Option<Hook>>,
}

kmdf::vtable! {
    impl WorkItemCallbacks for Hooked {
        type Parent = Device<LabDevice>;

        fn run(&self, _item: &WorkItem<Self>, _device: &Device<LabDevice>) {}

        fn cleanup(&self, _item: &WorkItem<Self>) {
            let hook = self.on_cleanup.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
        }
    }
}

impl Hooked {
    fn on_cleanup(&self, hook: impl FnOnce() + Send + 'static) {
        *self.on_cleanup.lock().unwrap() = Some(Box::new(hook));
    }
}

struct Fixture {
    runtime: Runtime,
    driver: LoadedDriver<Lab>,
    node: DeviceNode,
    log: Log,
    first: ObjectRef<WorkItem<Hooked>>,
    second: ObjectRef<WorkItem<Hooked>>,
}

fn lab() -> Fixture {
    let runtime = Runtime::new();
    let driver = runtime.load::<Lab>().unwrap();
    let node = driver.add_device().unwrap();
    let (log, [first, second]) = node
        .with_context(|d: &LabDevice| (Arc::clone(&d.log), d.items.lock().clone().unwrap()))
        .unwrap();
    let _ = runtime.take_trace();
    Fixture { runtime, driver, node, log, first, second }
}

#[test]
fn a_deletion_reached_again_on_the_disposing_thread_does_not_wait_for_itself() {
    // The second item's cleanup removes its parent device: the device's deletion disposes
    // its children first and reaches the item whose disposal this very thread is running.
    // It must go on (`RawObject::delete`: "on the disposing thread itself ... it does
    // nothing"), not wait for a disposal that can only finish after it.
    let f = lab();
    let node = f.node.clone();
    let (removed_tx, removed) = mpsc::channel();
    f.second.context().on_cleanup(move || removed_tx.send(node.remove()).unwrap());
    let deleter = {
        let second = f.second.clone();
        thread::spawn(move || second.delete())
    };
    assert_eq!(removed.recv_timeout(TIMEOUT).expect("the removal returns"), Ok(()));
    assert_eq!(deleter.join().unwrap(), Ok(()));
    assert_eq!(f.node.state(), NodeState::Removed);
    // Each cleanup once; the device is destroyed when the item's disposal, once complete,
    // releases its last reference.
    assert_eq!(
        f.runtime.take_trace().lines(),
        [
            "EvtCleanupCallback(WDFWORKITEM)",
            "EvtCleanupCallback(WDFWORKITEM)",
            "EvtCleanupCallback(WDFDEVICE)",
            "EvtDestroyCallback(WDFDEVICE)",
        ]
    );
}

#[test]
fn a_deletion_reached_while_another_thread_disposes_the_object_waits_for_it() {
    // The driver deletes `second` on one thread; while its cleanup runs, the device is
    // removed on another. The removal disposes the children first (`first`, then `second`)
    // and finds `second` being disposed: it waits for that disposal, so the device's cleanup
    // comes after `second`'s (docs/kmdf-behaviour.md section 5: children clean up before their
    // parent).
    let f = lab();
    let (entered_tx, entered) = mpsc::channel();
    let (first_done_tx, first_done) = mpsc::channel();
    f.first.context().on_cleanup(move || first_done_tx.send(()).unwrap());
    let log = Arc::clone(&f.log);
    f.second.context().on_cleanup(move || {
        entered_tx.send(()).unwrap();
        // The removal has disposed `first` and goes on to `second`.
        first_done.recv_timeout(TIMEOUT).expect("the removal disposes `first`");
        // Its wait for this disposal cannot be observed; a removal that did not wait would
        // run the device's cleanup now. Give it the time to show (correct code never does,
        // whatever the timing).
        for _ in 0..10_000 {
            if log.lock().unwrap().contains(&"device cleanup") {
                break;
            }
            thread::yield_now();
        }
        log.lock().unwrap().push("second cleanup");
    });
    let deleter = {
        let second = f.second.clone();
        thread::spawn(move || second.delete())
    };
    entered.recv_timeout(TIMEOUT).expect("the deletion of `second` reaches its cleanup");
    assert_eq!(f.node.remove(), Ok(()));
    assert_eq!(deleter.join().unwrap(), Ok(()));
    assert_eq!(*f.log.lock().unwrap(), ["second cleanup", "device cleanup"]);
    assert_eq!(
        f.runtime.take_trace().lines(),
        [
            "EvtCleanupCallback(WDFWORKITEM)",
            "EvtCleanupCallback(WDFWORKITEM)",
            "EvtCleanupCallback(WDFDEVICE)",
            "EvtDestroyCallback(WDFDEVICE)",
        ]
    );
}

#[test]
fn handles_print_their_object_kind_and_identity() {
    let f = lab();
    let first = format!("{:?}", f.first);
    let second = format!("{:?}", f.second);
    assert!(first.starts_with("ObjectRef(WDFWORKITEM#"), "{first}");
    assert!(second.starts_with("ObjectRef(WDFWORKITEM#"), "{second}");
    assert_ne!(first, second, "each object has its own number");
    assert!(format!("{:?}", *f.first).contains("(WDFWORKITEM#"), "{:?}", *f.first);
    assert!(format!("{:?}", f.driver).ends_with("(Some(WDFDRIVER#1))"), "{:?}", f.driver);
}
