//! The object life cycle on the host runtime (kmdf-semantics.md section 5) where deletions
//! meet: a deletion reached again on the thread that is disposing the object, and the
//! framework objects as a test prints them.

use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use kmdf::host::{DeviceNode, NodeState, Runtime};
use kmdf::object::ObjectRef;
use kmdf::sync::SpinLock;
use kmdf::{Device, DeviceInit, Driver, PnpPowerCallbacks, Result, WorkItem, WorkItemCallback};

/// The hang guard: far longer than any of these tests takes.
const TIMEOUT: Duration = Duration::from_secs(20);

struct Lab;

impl Driver for Lab {
    fn driver_entry() -> Result<Self> {
        Ok(Lab)
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        let device = device_init.create(LabDevice { item: SpinLock::new(None)? })?;
        let item = WorkItem::create(device, Hooked { on_cleanup: Mutex::new(None) })?;
        *device.context().item.lock() = Some(item);
        Ok(())
    }
}

struct LabDevice {
    item: SpinLock<Option<ObjectRef<WorkItem<Hooked>>>>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for LabDevice {
        fn cleanup(&self, _device: &Device<Self>) {}
    }
}

type Hook = Box<dyn FnOnce() + Send>;

/// A work item whose cleanup callback runs what the test gave it.
struct Hooked {
    on_cleanup: Mutex<Option<Hook>>,
}

kmdf::vtable! {
    impl WorkItemCallback for Hooked {
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

fn lab() -> (Runtime, kmdf::host::LoadedDriver<Lab>, DeviceNode, ObjectRef<WorkItem<Hooked>>) {
    let runtime = Runtime::new();
    let driver = runtime.load::<Lab>().unwrap();
    let node = driver.add_device().unwrap();
    let item = node.with_context(|d: &LabDevice| d.item.lock().clone()).unwrap().unwrap();
    let _ = runtime.take_trace();
    (runtime, driver, node, item)
}

#[test]
fn a_deletion_reached_again_on_the_disposing_thread_does_not_wait_for_itself() {
    // The work item's cleanup removes its parent device: the device's deletion disposes its
    // children first and reaches the item, whose disposal this very thread is running. It
    // must go on (`RawObject::delete`: "on the disposing thread itself ... it does nothing"),
    // not wait for a disposal that can only finish after it.
    let (runtime, _driver, node, item) = lab();
    let hook_node = node.clone();
    let (removed_tx, removed) = mpsc::channel();
    item.context().on_cleanup.lock().unwrap().replace(Box::new(move || {
        removed_tx.send(hook_node.remove()).unwrap();
    }));
    let deleter = {
        let item = item.clone();
        thread::spawn(move || item.delete())
    };
    assert_eq!(removed.recv_timeout(TIMEOUT).expect("the removal returns"), Ok(()));
    assert_eq!(deleter.join().unwrap(), Ok(()));
    assert_eq!(node.state(), NodeState::Removed);
    assert_eq!(
        runtime.take_trace().lines(),
        [
            "EvtCleanupCallback(WDFWORKITEM)",
            "EvtCleanupCallback(WDFDEVICE)",
            // The item's disposal, once complete, released the device's last reference.
            "EvtDestroyCallback(WDFDEVICE)",
        ]
    );
    drop(item);
}
