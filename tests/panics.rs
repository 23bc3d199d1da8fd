//! A panicking callback on the host runtime: caught at the callback boundary, the device
//! fails the way a failing callback would, the report names the callback, and every other
//! device keeps working; a panic in deferred work fails the test's next call, and one nobody
//! looked at fails the runtime's drop.

use std::sync::atomic::{AtomicUsize, Ordering};

mod common;

use kmdf::host::{NodeState, PnpAction, Runtime};
use kmdf::{
    Callback, Device, DeviceInit, DevicePowerState, Driver, NtStatus, PnpPowerCallbacks, Result,
};

struct Fragile {
    devices: AtomicUsize,
}

impl Driver for Fragile {
    fn driver_entry() -> Result<Self> {
        Ok(Fragile { devices: AtomicUsize::new(0) })
    }
    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        // The first device's hardware is broken: its D0 entry panics.
        let broken = self.devices.fetch_add(1, Ordering::SeqCst) == 0;
        device_init.create(FragileDevice { broken })?;
        Ok(())
    }
}

struct FragileDevice {
    broken: bool,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for FragileDevice {
        fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
            assert!(!self.broken, "register read returned 0xFFFFFFFF");
            Ok(())
        }
        fn surprise_removal(&self, _device: &Device<Self>) {
            panic!("surprise removal of a {} device", if self.broken { "broken" } else { "good" });
        }
        fn release_hardware(&self, _device: &Device<Self>, _r: kmdf::pnp::HardwareResources<'_>) -> Result {
            Ok(())
        }
    }
}

#[test]
fn a_panicking_callback_fails_only_its_device() {
    let runtime = Runtime::new();
    let driver = runtime.load::<Fragile>().unwrap();
    let broken = driver.add_device().unwrap();
    let good = driver.add_device().unwrap();
    let _ = runtime.take_trace();

    broken.start().unwrap();
    // Failed like a D0Entry returning an error on first start: ReleaseHardware, then removal.
    assert_eq!(
        runtime.take_trace().lines(),
        [
            "EvtDeviceD0Entry(D3Final) -> STATUS_UNSUCCESSFUL (panicked)",
            "EvtDeviceReleaseHardware",
            "EvtDestroyCallback(WDFDEVICE)",
        ]
    );
    assert_eq!(broken.state(), NodeState::Removed);
    let panics = runtime.panics();
    assert_eq!(panics.len(), 1);
    assert_eq!(panics[0].callback, Callback::D0Entry);
    assert_eq!(panics[0].device, Some(broken.id()));
    assert_eq!(
        panics[0].to_string(),
        format!(
            "EvtDeviceD0Entry panicked on device {}: register read returned 0xFFFFFFFF",
            broken.id()
        )
    );

    // The other device is unaffected.
    good.start().unwrap();
    good.apply(PnpAction::Idle).unwrap();
    good.apply(PnpAction::Wake).unwrap();
    assert_eq!(good.state(), NodeState::Working);

    // A panic in a callback that returns nothing cannot change KMDF's course: the surprise
    // removal completes.
    let _ = runtime.take_trace();
    good.apply(PnpAction::SurpriseRemove).unwrap();
    assert_eq!(
        runtime.take_trace().lines(),
        [
            "EvtDeviceSurpriseRemoval (panicked)",
            "EvtDeviceReleaseHardware",
            "EvtDestroyCallback(WDFDEVICE)",
        ]
    );
    assert_eq!(runtime.panics().len(), 2);
    assert_eq!(good.state(), NodeState::Removed);
    driver.unload().unwrap();
    assert!(runtime.live_objects().is_empty());
}

#[test]
fn a_panicking_driver_entry_does_not_load() {
    struct Doomed;
    impl Driver for Doomed {
        fn driver_entry() -> Result<Self> {
            panic!("no memory for the lookaside list")
        }
        fn device_add(&self, _device_init: DeviceInit<'_>) -> Result {
            Ok(())
        }
    }
    let runtime = Runtime::new();
    assert_eq!(runtime.load::<Doomed>().unwrap_err(), NtStatus::UNSUCCESSFUL);
    assert_eq!(runtime.trace().lines(), ["DriverEntry -> STATUS_UNSUCCESSFUL (panicked)"]);
    assert_eq!(runtime.panics()[0].message, "no memory for the lookaside list");
}

// ----------------------------------------------------------------------------------------
// Panics in deferred work (issue 11, B3): a work item's or timer's callback, or a cleanup
// run from one, panics on a worker thread or on the advancing thread, where no call of the
// test returns it. In the kernel it is a bug check; on the host the next action, wait or
// advance fails, and a runtime dropped with a panic nobody looked at panics.

mod deferred {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Mutex;
    use std::time::Duration;

    use std::ops::Deref;

    use kmdf::host::{CallbackPanicked, NodeState, PnpAction, PnpError};
    use kmdf::object::ObjectRef;
    use kmdf::sync::SpinLock;
    use kmdf::{Timer, TimerCallbacks, WorkItem, WorkItemCallbacks};

    use super::*;

    /// What a callback does on its next call: panic with this message.
    type Fuse = Mutex<Option<&'static str>>;

    fn blow(fuse: &Fuse) {
        // Taken before the panic, so that the lock is not poisoned.
        let message = fuse.lock().unwrap().take();
        if let Some(message) = message {
            panic!("{message}");
        }
    }

    struct Bomb;

    impl Driver for Bomb {
        fn driver_entry() -> Result<Self> {
            Ok(Bomb)
        }
        fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
            let device = device_init.create(BombDevice { parts: SpinLock::new(None)? })?;
            let chore = Chore {
                run: Mutex::new(None),
                cleanup: Mutex::new(None),
                delete_itself: Mutex::new(false),
            };
            let item = WorkItem::create(device, chore)?;
            let timer =
                Timer::periodic(device, Duration::from_millis(10), Alarm(Mutex::new(None)))?;
            *device.context().parts.lock() = Some((item, timer));
            Ok(())
        }
    }

    /// The device's work item and timer.
    type Parts = (ObjectRef<WorkItem<Chore>>, ObjectRef<Timer<Alarm>>);

    struct BombDevice {
        parts: SpinLock<Option<Parts>>,
    }

    kmdf::vtable! {
        impl PnpPowerCallbacks for BombDevice {
            fn self_managed_io_suspend(&self, _device: &Device<Self>) -> Result {
                // Flushes the work item: its run is work this callback waits for.
                let item = self.parts.lock().as_ref().map(|(item, _)| item.clone());
                item.map_or(Ok(()), |item| item.flush())
            }
        }
    }

    struct Chore {
        run: Fuse,
        cleanup: Fuse,
        delete_itself: Mutex<bool>,
    }

    kmdf::vtable! {
        impl WorkItemCallbacks for Chore {
            type Parent = Device<BombDevice>;

            fn run(&self, item: &WorkItem<Self>, _device: &Device<BombDevice>) {
                if *self.delete_itself.lock().unwrap() {
                    // The disposal completes on the worker once this run returns.
                    item.delete().unwrap();
                }
                blow(&self.run);
            }

            fn cleanup(&self, _item: &WorkItem<Self>) {
                blow(&self.cleanup);
            }
        }
    }

    struct Alarm(Fuse);

    kmdf::vtable! {
        impl TimerCallbacks for Alarm {
            type Parent = Device<BombDevice>;

            fn run(&self, _timer: &Timer<Self>, _device: &Device<BombDevice>) {
                blow(&self.0);
            }
        }
    }

    /// The common fixture, with the device's work item and timer at hand.
    struct Armed {
        rig: common::Rig<Bomb>,
        item: ObjectRef<WorkItem<Chore>>,
        timer: ObjectRef<Timer<Alarm>>,
    }

    impl Deref for Armed {
        type Target = common::Rig<Bomb>;

        fn deref(&self) -> &common::Rig<Bomb> {
            &self.rig
        }
    }

    /// A runtime with one started device; the trace starts empty.
    fn rig() -> Armed {
        let rig = common::Rig::<Bomb>::new();
        let (item, timer) = rig.context(|device: &BombDevice| device.parts.lock().clone()).unwrap();
        rig.node.start().unwrap();
        Armed { rig: rig.quiet(), item, timer }
    }

    fn arm(fuse: &Fuse, message: &'static str) {
        *fuse.lock().unwrap() = Some(message);
    }

    /// The one panic an error carries: (callback, device, message).
    fn only(panics: &CallbackPanicked) -> (Callback, Option<u64>, &str) {
        let [panic] = panics.panics() else { panic!("one panic expected: {panics}") };
        (panic.callback, panic.device, panic.message.as_str())
    }

    #[test]
    fn a_panicking_work_item_fails_the_next_action_which_is_not_applied() {
        let rig = rig();
        arm(&rig.item.context().run, "index out of bounds");
        rig.item.enqueue().unwrap();
        rig.item.flush().unwrap();
        assert_eq!(rig.runtime.trace().lines(), ["EvtWorkItem (panicked)"]);
        let _ = rig.runtime.take_trace();

        let error = rig.node.apply(PnpAction::Idle).unwrap_err();
        let PnpError::CallbackPanicked { action, applied, panics } = &error else {
            panic!("{error}")
        };
        assert_eq!((*action, *applied), (PnpAction::Idle, false));
        assert_eq!(only(panics), (Callback::WorkItem, Some(rig.node.id()), "index out of bounds"));
        assert_eq!(
            error.to_string(),
            format!(
                "`idle` was not applied: EvtWorkItem panicked on device {}: index out of bounds \
                 (a bug check in the kernel)",
                rig.node.id()
            )
        );
        assert!(std::error::Error::source(&error).is_some());
        // Refused: nothing was called and nothing changed.
        assert!(rig.runtime.trace().is_empty());
        assert_eq!(rig.node.state(), NodeState::Working);

        // Reported once: the next calls succeed, and the runtime drops quietly.
        rig.node.apply(PnpAction::Idle).unwrap();
        rig.runtime.wait_for_work_items().unwrap();
        rig.runtime.advance(Duration::from_millis(1)).unwrap();
        assert_eq!(rig.node.state(), NodeState::Idle);
    }

    #[test]
    fn a_panic_in_work_an_action_waited_for_fails_that_action_which_completes() {
        // SelfManagedIoSuspend flushes the work item, whose queued run panics.
        let rig = rig();
        arm(&rig.item.context().run, "heater shorted");
        let held = rig.runtime.hold_workers();
        rig.item.enqueue().unwrap();
        std::thread::scope(|scope| {
            let idling = scope.spawn(|| rig.node.apply(PnpAction::Idle));
            while rig.runtime.work_item_waiters() == 0 {
                std::thread::yield_now();
            }
            drop(held);
            let error = idling.join().unwrap().unwrap_err();
            let PnpError::CallbackPanicked { action, applied, panics } = &error else {
                panic!("{error}")
            };
            assert_eq!((*action, *applied), (PnpAction::Idle, true));
            assert_eq!(only(panics).2, "heater shorted");
            assert!(error.to_string().starts_with("while `idle` ran, EvtWorkItem panicked"));
        });
        // The action completed: the device is idle.
        assert_eq!(rig.node.state(), NodeState::Idle);
        assert_eq!(
            rig.runtime.trace().lines(),
            ["EvtDeviceSelfManagedIoSuspend", "EvtWorkItem (panicked)"]
        );
    }

    #[test]
    fn a_panicking_timer_fails_advance_and_stops_the_clock_there() {
        // The 10 ms periodic timer panics on its second expiry: advance fires it and stops,
        // as a bug check would; later expiries wait for the next advance.
        let rig = rig();
        rig.timer.start(Duration::from_millis(10)).unwrap();
        rig.runtime.advance(Duration::from_millis(10)).unwrap();
        arm(&rig.timer.context().0, "divide by zero");
        let panics = rig.runtime.advance(Duration::from_millis(100)).unwrap_err();
        assert_eq!(only(&panics), (Callback::TimerFunc, Some(rig.node.id()), "divide by zero"));
        assert_eq!(
            panics.to_string(),
            format!(
                "EvtTimerFunc panicked on device {}: divide by zero (a bug check in the kernel)",
                rig.node.id()
            )
        );
        assert_eq!(rig.runtime.now(), Duration::from_millis(20));
        assert_eq!(rig.runtime.take_trace().lines(), ["EvtTimerFunc", "EvtTimerFunc (panicked)"]);
        // Reported: the timer, re-armed before its callback ran, fires again.
        rig.runtime.advance(Duration::from_millis(10)).unwrap();
        assert_eq!(rig.runtime.take_trace().lines(), ["EvtTimerFunc"]);
        rig.timer.stop_and_wait().unwrap();
    }

    #[test]
    fn a_panic_before_advance_keeps_the_clock_still() {
        let rig = rig();
        arm(&rig.item.context().run, "early");
        rig.item.enqueue().unwrap();
        rig.item.flush().unwrap();
        rig.timer.start(Duration::from_millis(10)).unwrap();
        assert_eq!(only(&rig.runtime.advance(Duration::from_secs(1)).unwrap_err()).2, "early");
        assert_eq!(rig.runtime.now(), Duration::ZERO);
        assert_eq!(rig.runtime.trace().count(Callback::TimerFunc), 0);
        rig.timer.stop_and_wait().unwrap();
    }

    #[test]
    fn wait_for_work_items_reports_panics_once() {
        let rig = rig();
        arm(&rig.item.context().run, "null dereference");
        rig.item.enqueue().unwrap();
        let panics = rig.runtime.wait_for_work_items().unwrap_err();
        assert_eq!(only(&panics), (Callback::WorkItem, Some(rig.node.id()), "null dereference"));
        rig.runtime.wait_for_work_items().unwrap();
        // Reported panics stay listed until taken.
        assert_eq!(rig.runtime.panics(), panics.panics());
    }

    #[test]
    fn several_panics_are_reported_together() {
        let rig = rig();
        for message in ["first", "second"] {
            arm(&rig.item.context().run, message);
            rig.item.enqueue().unwrap();
            rig.item.flush().unwrap();
        }
        let panics = rig.runtime.wait_for_work_items().unwrap_err();
        let device = rig.node.id();
        assert_eq!(
            panics.to_string(),
            format!(
                "2 driver callbacks panicked (a bug check in the kernel):\n  - EvtWorkItem \
                 panicked on device {device}: first\n  - EvtWorkItem panicked on device {device}: \
                 second"
            )
        );
    }

    #[test]
    fn a_panicking_cleanup_run_from_deferred_work_fails_the_next_call() {
        // The item deletes itself from its callback: its disposal, and so its cleanup
        // callback, runs on the worker when the callback returns.
        let rig = rig();
        *rig.item.context().delete_itself.lock().unwrap() = true;
        arm(&rig.item.context().cleanup, "double free");
        rig.item.enqueue().unwrap();
        let panics = rig.runtime.wait_for_work_items().unwrap_err();
        assert_eq!(only(&panics), (Callback::ObjectCleanup, Some(rig.node.id()), "double free"));
        assert_eq!(
            rig.runtime.trace().lines(),
            ["EvtWorkItem", "EvtCleanupCallback(WDFWORKITEM) (panicked)"]
        );
    }

    #[test]
    fn a_panicking_pnp_callback_fails_no_later_call_but_must_be_acknowledged() {
        // Kept from before: the callback fails as if it returned STATUS_UNSUCCESSFUL, the
        // device takes KMDF's failure path within the action, which returns Ok.
        let runtime = Runtime::new();
        let driver = runtime.load::<Fragile>().unwrap();
        let broken = driver.add_device().unwrap();
        let good = driver.add_device().unwrap();
        broken.start().unwrap();
        assert_eq!(broken.state(), NodeState::Removed);
        good.start().unwrap();
        runtime.wait_for_work_items().unwrap();
        runtime.advance(Duration::from_millis(1)).unwrap();
        // Taken: acknowledged and forgotten.
        let taken = runtime.take_panics();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].callback, Callback::D0Entry);
        assert!(runtime.panics().is_empty());
        assert!(runtime.take_panics().is_empty());
        // Removed in order: the runtime's teardown would surprise-remove it, and this
        // driver's surprise removal panics.
        good.remove().unwrap();
    }

    #[test]
    fn reading_the_panics_acknowledges_them() {
        let rig = rig();
        arm(&rig.item.context().run, "seen");
        rig.item.enqueue().unwrap();
        rig.item.flush().unwrap();
        assert_eq!(rig.runtime.panics().len(), 1);
        // The test looked at it: no call fails for it.
        rig.runtime.wait_for_work_items().unwrap();
        rig.node.apply(PnpAction::Idle).unwrap();
    }

    /// The message a closure panicked with.
    fn panic_message(run: impl FnOnce()) -> String {
        let payload = catch_unwind(AssertUnwindSafe(run)).expect_err("a panic");
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap()
    }

    #[test]
    fn dropping_a_runtime_with_an_unreported_work_item_panic_panics() {
        let mut device = 0;
        let message = panic_message(|| {
            let rig = rig();
            device = rig.node.id();
            arm(&rig.item.context().run, "left behind");
            rig.item.enqueue().unwrap();
            rig.item.flush().unwrap();
            let Armed { rig: common::Rig { runtime, driver, node }, item, timer } = rig;
            drop((driver, node, item, timer));
            drop(runtime);
        });
        assert_eq!(
            message,
            format!(
                "kmdf host runtime dropped with driver callback panics that no call reported and \
                 no Runtime::panics or take_panics acknowledged: EvtWorkItem panicked on device \
                 {device}: left behind (a bug check in the kernel)"
            )
        );
    }

    #[test]
    fn dropping_a_runtime_with_an_unacknowledged_pnp_panic_panics() {
        let message = panic_message(|| {
            let runtime = Runtime::new();
            let driver = runtime.load::<Fragile>().unwrap();
            driver.add_device().unwrap().start().unwrap();
        });
        assert!(
            message.ends_with(": register read returned 0xFFFFFFFF (a bug check in the kernel)"),
            "{message}"
        );
        assert!(message.contains("EvtDeviceD0Entry panicked on device"), "{message}");
    }

    #[test]
    fn a_runtime_dropped_while_the_test_panics_does_not_panic_again() {
        // A second panic during unwinding would abort the whole test binary; the test's own
        // failure is the one that counts.
        let message = panic_message(|| {
            let rig = rig();
            arm(&rig.item.context().run, "unreported");
            rig.item.enqueue().unwrap();
            rig.item.flush().unwrap();
            panic!("the test failed");
        });
        assert_eq!(message, "the test failed");
    }
}
