//! Child objects built with the device in hand (`DeviceInit::create_with`), and counted
//! references taken from a borrowed object (`ObjectRef::from`).

use std::sync::Mutex;

use kmdf::host::{HarnessError, ObjectKind, Runtime};
use kmdf::object::ObjectRef;
use kmdf::{Device, DeviceInit, Driver, NtError, PnpPowerCallbacks, Result, WorkItem};
use kmdf::{Timer, TimerCallbacks, WorkItemCallbacks};

/// What `device_add` does, chosen by the test.
#[derive(Clone, Copy, PartialEq)]
enum Plan {
    Build,
    ReadContextWhileBuilding,
    FailAfterChild,
}

static PLAN: Mutex<Plan> = Mutex::new(Plan::Build);

struct Lab;

impl Driver for Lab {
    fn driver_entry() -> Result<Self> {
        Ok(Lab)
    }

    fn device_add(&self, init: DeviceInit<'_>) -> Result {
        let plan = *PLAN.lock().unwrap();
        init.create_with(|device: &Device<Bench>| {
            let poller = WorkItem::create(device, Poll)?;
            let ticker = Timer::one_shot(device, Tick)?;
            match plan {
                Plan::Build => {}
                Plan::ReadContextWhileBuilding => {
                    let _ = device.context();
                }
                Plan::FailAfterChild => return Err(NtError::INSUFFICIENT_RESOURCES),
            }
            Ok(Bench { poller, ticker, kept: Mutex::new(None) })
        })?;
        Ok(())
    }
}

struct Bench {
    poller: ObjectRef<WorkItem<Poll>>,
    ticker: ObjectRef<Timer<Tick>>,
    kept: Mutex<Option<ObjectRef<WorkItem<Poll>>>>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Bench {
        fn cleanup(&self, _device: &Device<Self>) {}
    }
}

struct Poll;

kmdf::vtable! {
    impl WorkItemCallbacks for Poll {
        type Parent = Device<Bench>;

        fn run(&self, item: &WorkItem<Self>, bench: &Device<Bench>) {
            // A reference from the borrowed item, kept past the callback.
            *bench.context().kept.lock().unwrap() = Some(ObjectRef::from(item));
        }

        fn cleanup(&self, _item: &WorkItem<Self>) {}
    }
}

struct Tick;

kmdf::vtable! {
    impl TimerCallbacks for Tick {
        type Parent = Device<Bench>;

        fn run(&self, timer: &Timer<Self>, _bench: &Device<Bench>) {
            let _kept: ObjectRef<Timer<Self>> = timer.to_ref();
        }
    }
}

/// The tests share `PLAN`: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn with_plan(plan: Plan) -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *PLAN.lock().unwrap() = plan;
    guard
}

#[test]
fn children_built_in_the_closure_are_the_devices() {
    let _serial = with_plan(Plan::Build);
    let runtime = Runtime::new();
    let driver = runtime.load::<Lab>().unwrap();
    let node = driver.add_device().unwrap();
    let live = runtime.live_objects();
    assert!(live.contains(&ObjectKind::WorkItem) && live.contains(&ObjectKind::Timer));
    node.with_context(|bench: &Bench| bench.poller.enqueue().unwrap()).unwrap();
    runtime.wait_for_work_items().unwrap();
    let kept = node.with_context(|bench: &Bench| bench.kept.lock().unwrap().clone()).unwrap();
    let kept = kept.expect("the item kept a reference to itself");
    node.with_context(|bench: &Bench| bench.ticker.start(std::time::Duration::from_millis(1)))
        .unwrap()
        .unwrap();
    runtime.advance(std::time::Duration::from_millis(1)).unwrap();
    node.remove().unwrap();
    // The children were deleted with their parent, before the device's own cleanup.
    let lines = runtime.trace().lines();
    let item_cleanup = lines.iter().position(|l| l == "EvtCleanupCallback(WDFWORKITEM)");
    let device_cleanup = lines.iter().position(|l| l == "EvtCleanupCallback(WDFDEVICE)");
    assert!(item_cleanup.unwrap() < device_cleanup.unwrap(), "{lines:?}");
    // The reference taken from `&WorkItem` still reaches the (deleted) item.
    assert_eq!(kept.enqueue(), Err(NtError::DELETE_PENDING));
    drop(kept);
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver]);
}

#[test]
fn the_context_cannot_be_read_while_it_is_built() {
    let _serial = with_plan(Plan::ReadContextWhileBuilding);
    let runtime = Runtime::new();
    let driver = runtime.load::<Lab>().unwrap();
    // The panic fails EvtDriverDeviceAdd (as a bug check would stop the kernel).
    assert_eq!(driver.add_device().unwrap_err(), HarnessError::Driver(NtError::UNSUCCESSFUL));
    let panics = runtime.take_panics();
    assert_eq!(panics.len(), 1);
    assert!(panics[0].message.contains("before its context exists"), "{}", panics[0].message);
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver]);
}

#[test]
fn a_failed_build_deletes_the_device_and_its_children() {
    let _serial = with_plan(Plan::FailAfterChild);
    let runtime = Runtime::new();
    let driver = runtime.load::<Lab>().unwrap();
    assert_eq!(
        driver.add_device().unwrap_err(),
        HarnessError::Driver(NtError::INSUFFICIENT_RESOURCES)
    );
    let lines = runtime.trace().lines();
    assert!(lines.iter().any(|l| l == "EvtCleanupCallback(WDFWORKITEM)"), "{lines:?}");
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver]);
}
