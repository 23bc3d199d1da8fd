//! Timers on the host runtime's virtual clock: start/stop/delete as `FxTimer` does them,
//! `DISPATCH_LEVEL` callbacks, and disposal with the parent device.

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kmdf::host::{DeviceNode, LoadedDriver, ObjectKind, PnpAction, Runtime};
use kmdf::object::ObjectRef;
use kmdf::sync::{Irql, SpinLock, current_irql};
use kmdf::{
    Callback, Device, DeviceInit, Driver, NtStatus, PnpPowerCallbacks, Result, Timer, TimerCallback,
};

const MS: Duration = Duration::from_millis(1);

type Behavior = Box<dyn Fn(&Timer<Tick>) + Send + Sync>;

/// What the next device's timer is: its period and what its callback does.
struct Plan {
    period: Option<Duration>,
    behavior: Behavior,
}

std::thread_local! {
    static PLAN: RefCell<Option<Plan>> = const { RefCell::new(None) };
}

struct Lab;

impl Driver for Lab {
    fn driver_entry() -> Result<Self> {
        Ok(Lab)
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        let device = device_init.create(LabDevice { timer: SpinLock::new(None)? })?;
        let plan = PLAN.with(|plan| plan.borrow_mut().take()).expect("a plan");
        let timer = Timer::create(device, plan.period, Tick { behavior: plan.behavior })?;
        *device.context().timer.lock() = Some(timer);
        Ok(())
    }
}

struct LabDevice {
    timer: SpinLock<Option<ObjectRef<Timer<Tick>>>>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for LabDevice {
        fn cleanup(&self, _device: &Device<Self>) {}
    }
}

struct Tick {
    behavior: Behavior,
}

kmdf::vtable! {
    impl TimerCallback for Tick {
        type Parent = Device<LabDevice>;

        fn run(&self, timer: &Timer<Self>, _device: &Device<LabDevice>) {
            (self.behavior)(timer);
        }

        fn cleanup(&self, _timer: &Timer<Self>) {}
    }
}

struct Fixture {
    runtime: Runtime,
    _driver: LoadedDriver<Lab>,
    node: DeviceNode,
    timer: ObjectRef<Timer<Tick>>,
}

fn lab(
    period: Option<Duration>,
    behavior: impl Fn(&Timer<Tick>) + Send + Sync + 'static,
) -> Fixture {
    PLAN.with(|plan| *plan.borrow_mut() = Some(Plan { period, behavior: Box::new(behavior) }));
    let runtime = Runtime::new();
    let driver = runtime.load::<Lab>().unwrap();
    let node = driver.add_device().unwrap();
    let timer = node.with_context(|d: &LabDevice| d.timer.lock().clone()).unwrap().unwrap();
    let _ = runtime.take_trace();
    Fixture { runtime, _driver: driver, node, timer }
}

fn fired(runtime: &Runtime) -> usize {
    runtime.trace().count(Callback::TimerFunc)
}

#[test]
fn a_one_shot_timer_fires_once_when_due() {
    let f = lab(None, |_| {});
    assert_eq!(f.timer.start(10 * MS), Ok(false));
    f.runtime.advance(9 * MS);
    assert_eq!(fired(&f.runtime), 0);
    f.runtime.advance(MS);
    assert_eq!(fired(&f.runtime), 1);
    f.runtime.advance(100 * MS);
    assert_eq!(fired(&f.runtime), 1);
    assert_eq!(f.runtime.now(), 110 * MS);
    assert_eq!(f.runtime.trace().lines(), ["EvtTimerFunc"]);
}

#[test]
fn a_periodic_timer_fires_every_period() {
    let f = lab(Some(10 * MS), |_| {});
    f.timer.start(5 * MS).unwrap();
    f.runtime.advance(36 * MS); // 5, 15, 25, 35
    assert_eq!(fired(&f.runtime), 4);
    // Stop reports that the timer was set, and cancels it.
    assert_eq!(f.timer.stop(false), Ok(true));
    assert_eq!(f.timer.stop(false), Ok(false));
    f.runtime.advance(100 * MS);
    assert_eq!(fired(&f.runtime), 4);
}

#[test]
fn start_again_replaces_the_setting() {
    let f = lab(None, |_| {});
    assert_eq!(f.timer.start(10 * MS), Ok(false));
    assert_eq!(f.timer.start(50 * MS), Ok(true), "already set");
    f.runtime.advance(49 * MS);
    assert_eq!(fired(&f.runtime), 0);
    f.runtime.advance(MS);
    assert_eq!(fired(&f.runtime), 1);
}

#[test]
fn the_callback_runs_at_dispatch_level_and_cannot_wait() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let f = lab(Some(MS), move |timer| {
        log.lock().unwrap().push((current_irql(), timer.stop(true), timer.start(MS)));
    });
    f.timer.start(MS).unwrap();
    f.runtime.advance(MS);
    assert_eq!(
        *seen.lock().unwrap(),
        [(Irql::Dispatch, Err(NtStatus::WDF_INCOMPATIBLE_EXECUTION_LEVEL), Ok(true))]
    );
    assert_eq!(current_irql(), Irql::Passive, "the advancing thread is back at PASSIVE_LEVEL");
}

#[test]
fn stop_and_wait_waits_for_a_running_callback() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let f = lab(None, move |_| {
        entered_tx.send(()).unwrap();
        release_rx.lock().unwrap().recv().unwrap();
    });
    f.timer.start(MS).unwrap();
    std::thread::scope(|scope| {
        let runtime = &f.runtime;
        scope.spawn(move || runtime.advance(MS));
        entered.recv().unwrap();
        let (done_tx, done) = mpsc::channel();
        let timer = f.timer.clone();
        scope.spawn(move || done_tx.send(timer.stop(true)).unwrap());
        // The stop waits while the callback runs.
        while f.runtime.work_item_waiters() == 0 {
            std::thread::yield_now();
        }
        assert!(done.try_recv().is_err());
        release.send(()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(10)), Ok(Ok(false)));
    });
}

#[test]
fn delete_stops_the_timer_for_good() {
    let f = lab(Some(MS), |_| {});
    f.timer.start(MS).unwrap();
    f.runtime.advance(MS);
    f.timer.delete().unwrap();
    assert_eq!(f.timer.delete(), Err(NtStatus::DELETE_PENDING));
    assert_eq!(f.timer.start(MS), Err(NtStatus::DELETE_PENDING));
    assert_eq!(f.timer.stop(true), Ok(false));
    f.runtime.advance(10 * MS);
    assert_eq!(f.runtime.trace().lines(), ["EvtTimerFunc", "EvtCleanupCallback(WDFTIMER)"]);
    assert!(f.node.with_context(|_: &LabDevice| ()).is_ok(), "the device is untouched");
}

#[test]
fn delete_from_the_callback_completes_when_it_returns() {
    let f = lab(Some(MS), |timer| {
        assert_eq!(timer.delete(), Ok(()));
        assert_eq!(timer.start(MS), Err(NtStatus::DELETE_PENDING));
    });
    f.timer.start(MS).unwrap();
    f.runtime.advance(5 * MS);
    assert_eq!(f.runtime.trace().lines(), ["EvtTimerFunc", "EvtCleanupCallback(WDFTIMER)"]);
}

#[test]
fn the_parent_device_disposes_its_timer_first() {
    let f = lab(Some(MS), |_| {});
    f.timer.start(MS).unwrap();
    f.node.apply(PnpAction::Start).unwrap();
    f.runtime.advance(2 * MS);
    let _ = f.runtime.take_trace();
    f.node.apply(PnpAction::Remove).unwrap();
    // The timer released its parent at its rundown, so the device is destroyed at once;
    // the timer itself lives on while the test holds a reference, and never fires again.
    assert_eq!(
        f.runtime.take_trace().lines(),
        [
            "EvtCleanupCallback(WDFTIMER)",
            "EvtCleanupCallback(WDFDEVICE)",
            "EvtDestroyCallback(WDFDEVICE)"
        ]
    );
    f.runtime.advance(10 * MS);
    assert_eq!(fired(&f.runtime), 0);
    assert_eq!(f.timer.start(MS), Err(NtStatus::DELETE_PENDING));
    let Fixture { runtime, timer, .. } = f;
    drop(timer);
    assert_eq!(runtime.trace().lines(), ["EvtDestroyCallback(WDFTIMER)"]);
    assert_eq!(runtime.live_objects(), [ObjectKind::Driver]);
}

#[test]
fn periods_kmdf_cannot_express_are_refused() {
    struct Refuser;
    impl Driver for Refuser {
        fn driver_entry() -> Result<Self> {
            Ok(Refuser)
        }
        fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
            let device = device_init.create(LabDevice { timer: SpinLock::new(None)? })?;
            let tick = || Tick { behavior: Box::new(|_| {}) };
            for period in
                [Duration::ZERO, Duration::from_micros(1500), Duration::from_secs(5_000_000)]
            {
                assert_eq!(
                    Timer::create(device, Some(period), tick()).map(|_| ()),
                    Err(NtStatus::INVALID_PARAMETER),
                    "{period:?}"
                );
            }
            assert!(Timer::create(device, Some(Duration::from_millis(1)), tick()).is_ok());
            Ok(())
        }
    }
    let runtime = Runtime::new();
    let driver = runtime.load::<Refuser>().unwrap();
    driver.add_device().unwrap();
}

#[test]
fn timers_due_at_the_same_time_all_fire() {
    // The clock's queue holds every set timer, even two due at the same instant
    // (`WdfTimerStart` on two timers with the same due time: both DPCs run).
    let runtime = Runtime::new();
    let driver = runtime.load::<Lab>().unwrap();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let mut timers = Vec::new();
    for name in ["a", "b", "c"] {
        let log = Arc::clone(&fired);
        PLAN.with(|plan| {
            *plan.borrow_mut() = Some(Plan {
                period: None,
                behavior: Box::new(move |_| log.lock().unwrap().push(name)),
            });
        });
        let node = driver.add_device().unwrap();
        timers.push(node.with_context(|d: &LabDevice| d.timer.lock().clone()).unwrap().unwrap());
    }
    for timer in &timers {
        assert_eq!(timer.start(10 * MS), Ok(false));
    }
    runtime.advance(10 * MS);
    let mut names = fired.lock().unwrap().clone();
    names.sort_unstable();
    assert_eq!(names, ["a", "b", "c"], "each timer fires once");
}

#[test]
fn delete_while_the_callback_runs_elsewhere_waits_for_it() {
    // `FxTimer::FlushAndRundown`: the deletion stops the timer and waits (`Stop(TRUE)`) for
    // a callback running on another processor before the timer's cleanup runs. The deleting
    // thread fired the timer itself earlier: that run is over and does not count.
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let firings = std::sync::atomic::AtomicUsize::new(0);
    let Fixture { runtime, timer, .. } = lab(None, move |_| {
        if firings.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            entered_tx.send(()).unwrap();
            release_rx.lock().unwrap().recv_timeout(Duration::from_secs(20)).unwrap();
        }
    });
    let runtime = Arc::new(runtime);
    // Threads that are not scoped: a deletion that never returned must fail the test, not
    // hang it.
    let (fired_tx, fired_once) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let (done_tx, done) = mpsc::channel();
    let deleter = {
        let (runtime, timer) = (Arc::clone(&runtime), timer.clone());
        std::thread::spawn(move || {
            timer.start(MS).unwrap();
            runtime.advance(MS);
            fired_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            done_tx.send(timer.delete()).unwrap();
        })
    };
    fired_once.recv_timeout(Duration::from_secs(20)).expect("the first firing");
    timer.start(MS).unwrap();
    let advance = {
        let runtime = Arc::clone(&runtime);
        std::thread::spawn(move || runtime.advance(MS))
    };
    entered.recv_timeout(Duration::from_secs(20)).expect("the second firing runs");
    go.send(()).unwrap();
    // The deletion waits while the callback runs (or, wrongly, returns at once).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut early = None;
    while runtime.work_item_waiters() == 0 && std::time::Instant::now() < deadline {
        if let Ok(result) = done.try_recv() {
            early = Some(result);
            break;
        }
        std::thread::yield_now();
    }
    let waited = runtime.work_item_waiters();
    let trace_meanwhile = runtime.trace().lines();
    release.send(()).unwrap();
    assert_eq!(early, None, "the deletion returned while the callback ran");
    assert_eq!(waited, 1, "the deletion waits for the callback");
    assert_eq!(trace_meanwhile, ["EvtTimerFunc", "EvtTimerFunc"]);
    assert_eq!(done.recv_timeout(Duration::from_secs(20)), Ok(Ok(())));
    deleter.join().unwrap();
    advance.join().unwrap();
    assert_eq!(
        runtime.trace().lines(),
        ["EvtTimerFunc", "EvtTimerFunc", "EvtCleanupCallback(WDFTIMER)"]
    );
}

#[test]
fn stop_without_waiting_from_the_callback_cancels_a_periodic_timer() {
    // WdfTimerStop(Wait = FALSE) is legal at DISPATCH_LEVEL, in the timer's own callback:
    // it returns at once, TRUE since a periodic timer stays set while its callback runs,
    // and the timer fires no more.
    let results = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&results);
    let Fixture { runtime, timer, .. } = lab(Some(MS), move |timer| {
        log.lock().unwrap().push(timer.stop(false));
    });
    timer.start(MS).unwrap();
    let runtime = Arc::new(runtime);
    let (done_tx, done) = mpsc::channel();
    {
        let runtime = Arc::clone(&runtime);
        std::thread::spawn(move || {
            runtime.advance(10 * MS);
            done_tx.send(()).unwrap();
        });
    }
    done.recv_timeout(Duration::from_secs(20)).expect("the advance returns");
    assert_eq!(*results.lock().unwrap(), [Ok(true)]);
    assert_eq!(fired(&runtime), 1);
}

#[test]
fn delete_at_dispatch_level_with_nothing_running_completes_on_a_worker() {
    // KMDF defers the disposal of an object deleted above PASSIVE_LEVEL to a passive-level
    // worker (fxobjectstatemachine.cpp, ShouldDeferDisposeLocked): the timer is stopped for
    // good at once, and its cleanup runs on the worker.
    let f = lab(Some(MS), |_| {});
    f.timer.start(MS).unwrap();
    let lock = SpinLock::new(()).unwrap();
    {
        let _guard = lock.lock();
        assert_eq!(f.timer.delete(), Ok(()));
    }
    f.runtime.wait_for_work_items();
    assert_eq!(f.runtime.trace().lines(), ["EvtCleanupCallback(WDFTIMER)"]);
    f.runtime.advance(10 * MS);
    assert_eq!(fired(&f.runtime), 0);
}

#[test]
fn a_timer_deleted_at_dispatch_level_never_fires_while_its_disposal_waits_for_a_worker() {
    // WdfObjectDelete stops the timer at once (`FxTimer::Stop`, then the deferred dispose):
    // while the disposal still waits for a worker, the clock passes its due time and the
    // timer does not fire.
    let f = lab(Some(MS), |_| {});
    f.timer.start(MS).unwrap();
    let lock = SpinLock::new(()).unwrap();
    let held = f.runtime.hold_workers();
    {
        let _guard = lock.lock();
        assert_eq!(f.timer.delete(), Ok(()));
    }
    f.runtime.advance(10 * MS);
    assert_eq!(fired(&f.runtime), 0);
    assert!(f.runtime.trace().is_empty(), "the disposal waits for a worker");
    drop(held);
    f.runtime.wait_for_work_items();
    assert_eq!(f.runtime.trace().lines(), ["EvtCleanupCallback(WDFTIMER)"]);
}

#[test]
fn the_drivers_cleanup_runs_once_when_the_timer_is_deleted_and_before_its_context_drops() {
    // kmdf-semantics.md section 5: EvtCleanupCallback when deletion starts, once; the context
    // is freed later, with the last reference (EvtDestroyCallback).
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CLEANUPS: AtomicUsize = AtomicUsize::new(0);
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    static CLEANUPS_BEFORE_DROP: AtomicUsize = AtomicUsize::new(0);

    struct Tock;
    impl Drop for Tock {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    kmdf::vtable! {
        impl TimerCallback for Tock {
            type Parent = Device<ClockDevice>;
            fn run(&self, _timer: &Timer<Self>, _device: &Device<ClockDevice>) {}
            fn cleanup(&self, _timer: &Timer<Self>) {
                CLEANUPS.fetch_add(1, Ordering::SeqCst);
                if DROPS.load(Ordering::SeqCst) == 0 {
                    CLEANUPS_BEFORE_DROP.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
    struct ClockDevice {
        timer: SpinLock<Option<ObjectRef<Timer<Tock>>>>,
    }
    kmdf::vtable! {
        impl PnpPowerCallbacks for ClockDevice {}
    }
    struct Clocked;
    impl Driver for Clocked {
        fn driver_entry() -> Result<Self> {
            Ok(Clocked)
        }
        fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
            let device = device_init.create(ClockDevice { timer: SpinLock::new(None)? })?;
            *device.context().timer.lock() = Some(Timer::create(device, None, Tock)?);
            Ok(())
        }
    }

    let runtime = Runtime::new();
    let driver = runtime.load::<Clocked>().unwrap();
    let node = driver.add_device().unwrap();
    let timer = node.with_context(|d: &ClockDevice| d.timer.lock().take()).unwrap().unwrap();
    timer.delete().unwrap();
    assert_eq!(CLEANUPS.load(Ordering::SeqCst), 1);
    assert_eq!(DROPS.load(Ordering::SeqCst), 0, "the test still holds a reference");
    drop(timer);
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    node.remove().unwrap();
    assert_eq!(CLEANUPS.load(Ordering::SeqCst), 1, "not again with the parent");
    assert_eq!(CLEANUPS_BEFORE_DROP.load(Ordering::SeqCst), 1);
}
