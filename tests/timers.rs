//! Timers on the host runtime's virtual clock: start/stop/delete as `FxTimer` does them,
//! `DISPATCH_LEVEL` callbacks, and disposal with the parent device.

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::Rig;

use kmdf::host::{DeviceNode, LoadedDriver, ObjectKind, PnpAction, Runtime};
use kmdf::object::ObjectRef;
use kmdf::sync::{Irql, SpinLock, current_irql};
use kmdf::{
    Callback, Device, DeviceInit, Driver, NtError, PnpPowerCallbacks, Result, Timer,
    TimerCallbacks, WorkItem, WorkItemCallbacks,
};
use kmdf::{Enqueued, Started, Stopped};

const MS: Duration = Duration::from_millis(1);

type Behavior = Box<dyn Fn(&Timer<Tick>) + Send + Sync>;

/// What the next device's timer is: its period and what its callback does.
struct Plan {
    period: Option<Duration>,
    behavior: Behavior,
}

/// The test driver: its value carries the plan of its device's timer.
struct Lab {
    plan: Mutex<Option<Plan>>,
}

impl Driver for Lab {
    fn driver_entry() -> Result<Self> {
        Ok(Lab { plan: Mutex::new(None) })
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        let device = device_init.create(LabDevice { timer: SpinLock::new(None)? })?;
        let plan = self.plan.lock().unwrap().take().expect("a plan");
        let tick = Tick { behavior: plan.behavior };
        let timer = match plan.period {
            None => Timer::one_shot(device, tick)?,
            Some(period) => Timer::periodic(device, period, tick)?,
        };
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
    impl TimerCallbacks for Tick {
        type Parent = Device<LabDevice>;

        fn run(&self, timer: &Timer<Self>, _device: &Device<LabDevice>) {
            (self.behavior)(timer);
        }

        fn cleanup(&self, _timer: &Timer<Self>) {}
    }
}

/// The common fixture, with the device's timer at hand.
struct Timed {
    rig: Rig<Lab>,
    timer: ObjectRef<Timer<Tick>>,
}

impl Deref for Timed {
    type Target = Rig<Lab>;

    fn deref(&self) -> &Rig<Lab> {
        &self.rig
    }
}

/// A runtime with one device whose timer has `period` and runs `behavior`; the trace
/// starts empty.
fn lab(period: Option<Duration>, behavior: impl Fn(&Timer<Tick>) + Send + Sync + 'static) -> Timed {
    let plan = Plan { period, behavior: Box::new(behavior) };
    let rig = Rig::with(Lab { plan: Mutex::new(Some(plan)) }).quiet();
    let timer = rig.context(|d: &LabDevice| d.timer.lock().clone()).unwrap();
    Timed { rig, timer }
}

fn fired(runtime: &Runtime) -> usize {
    runtime.trace().count(Callback::TimerFunc)
}

#[test]
fn a_one_shot_timer_fires_once_when_due() {
    let f = lab(None, |_| {});
    assert_eq!(f.timer.start(10 * MS), Ok(Started::Set));
    f.runtime.advance(9 * MS).unwrap();
    assert_eq!(fired(&f.runtime), 0);
    f.runtime.advance(MS).unwrap();
    assert_eq!(fired(&f.runtime), 1);
    f.runtime.advance(100 * MS).unwrap();
    assert_eq!(fired(&f.runtime), 1);
    assert_eq!(f.runtime.now(), 110 * MS);
    assert_eq!(f.runtime.trace().lines(), ["EvtTimerFunc"]);
}

#[test]
fn a_periodic_timer_fires_every_period() {
    let f = lab(Some(10 * MS), |_| {});
    f.timer.start(5 * MS).unwrap();
    f.runtime.advance(36 * MS).unwrap(); // 5, 15, 25, 35
    assert_eq!(fired(&f.runtime), 4);
    // Stop reports that the timer was set, and cancels it.
    assert_eq!(f.timer.stop(), Ok(Stopped::Cancelled));
    assert_eq!(f.timer.stop(), Ok(Stopped::NotSet));
    f.runtime.advance(100 * MS).unwrap();
    assert_eq!(fired(&f.runtime), 4);
}

#[test]
fn start_again_replaces_the_setting() {
    let f = lab(None, |_| {});
    assert_eq!(f.timer.start(10 * MS), Ok(Started::Set));
    assert_eq!(f.timer.start(50 * MS), Ok(Started::WasSet), "already set");
    f.runtime.advance(49 * MS).unwrap();
    assert_eq!(fired(&f.runtime), 0);
    f.runtime.advance(MS).unwrap();
    assert_eq!(fired(&f.runtime), 1);
}

#[test]
fn the_callback_runs_at_dispatch_level_and_cannot_wait() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let f = lab(Some(MS), move |timer| {
        log.lock().unwrap().push((current_irql(), timer.stop_and_wait(), timer.start(MS)));
    });
    f.timer.start(MS).unwrap();
    f.runtime.advance(MS).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [(Irql::Dispatch, Err(NtError::WDF_INCOMPATIBLE_EXECUTION_LEVEL), Ok(Started::WasSet))]
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
        scope.spawn(move || runtime.advance(MS).unwrap());
        entered.recv().unwrap();
        let (done_tx, done) = mpsc::channel();
        let timer = f.timer.clone();
        scope.spawn(move || done_tx.send(timer.stop_and_wait()).unwrap());
        // The stop waits while the callback runs.
        while f.runtime.work_item_waiters() == 0 {
            std::thread::yield_now();
        }
        assert!(done.try_recv().is_err());
        release.send(()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(10)), Ok(Ok(Stopped::NotSet)));
    });
}

#[test]
fn a_start_while_stop_and_wait_runs_is_ignored() {
    // FxTimer::Start with m_StopThread set: "Ignoring the request to start timer", and the
    // stop then reports the timer as set (m_StartAborted).
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let restarts = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&restarts);
    let f = lab(None, move |timer| {
        let mut restarts = log.lock().unwrap();
        if restarts.is_empty() {
            entered_tx.send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
            restarts.push(timer.start(MS)); // re-arm from the callback, once
        }
    });
    f.timer.start(MS).unwrap();
    std::thread::scope(|scope| {
        let runtime = &f.runtime;
        scope.spawn(move || runtime.advance(MS).unwrap());
        entered.recv().unwrap();
        let (done_tx, done) = mpsc::channel();
        let timer = f.timer.clone();
        scope.spawn(move || done_tx.send(timer.stop_and_wait()).unwrap());
        while f.runtime.work_item_waiters() == 0 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(10)), Ok(Ok(Stopped::Cancelled)));
    });
    assert_eq!(*restarts.lock().unwrap(), [Ok(Started::Set)], "the start was ignored");
    // The timer is not set: it never fires again, and a later stop finds nothing.
    f.runtime.advance(10 * MS).unwrap();
    assert_eq!(fired(&f.runtime), 1);
    assert_eq!(f.timer.stop(), Ok(Stopped::NotSet));
    // Once the stop is over, starting works again.
    assert_eq!(f.timer.start(MS), Ok(Started::Set));
    f.runtime.advance(MS).unwrap();
    assert_eq!(fired(&f.runtime), 2);
}

#[test]
fn delete_stops_the_timer_for_good() {
    let f = lab(Some(MS), |_| {});
    f.timer.start(MS).unwrap();
    f.runtime.advance(MS).unwrap();
    f.timer.delete().unwrap();
    assert_eq!(f.timer.delete(), Err(NtError::DELETE_PENDING));
    assert_eq!(f.timer.start(MS), Err(NtError::DELETE_PENDING));
    assert_eq!(f.timer.stop_and_wait(), Ok(Stopped::NotSet));
    f.runtime.advance(10 * MS).unwrap();
    assert_eq!(f.runtime.trace().lines(), ["EvtTimerFunc", "EvtCleanupCallback(WDFTIMER)"]);
    assert!(f.node.with_context(|_: &LabDevice| ()).is_ok(), "the device is untouched");
}

#[test]
fn delete_from_the_callback_completes_when_it_returns() {
    let f = lab(Some(MS), |timer| {
        assert_eq!(timer.delete(), Ok(()));
        assert_eq!(timer.start(MS), Err(NtError::DELETE_PENDING));
    });
    f.timer.start(MS).unwrap();
    f.runtime.advance(5 * MS).unwrap();
    assert_eq!(f.runtime.trace().lines(), ["EvtTimerFunc", "EvtCleanupCallback(WDFTIMER)"]);
}

#[test]
fn the_parent_device_disposes_its_timer_first() {
    let f = lab(Some(MS), |_| {});
    f.timer.start(MS).unwrap();
    f.node.apply(PnpAction::Start).unwrap();
    f.runtime.advance(2 * MS).unwrap();
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
    f.runtime.advance(10 * MS).unwrap();
    assert_eq!(fired(&f.runtime), 0);
    assert_eq!(f.timer.start(MS), Err(NtError::DELETE_PENDING));
    let Timed { rig: Rig { runtime, .. }, timer } = f;
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
            // Zero, not whole milliseconds, over MAXLONG ms (fxtimerapi.cpp: WdfTimerCreate).
            let over_maxlong = Duration::from_millis(u64::from(i32::MAX.unsigned_abs()) + 1);
            for period in [
                Duration::ZERO,
                Duration::from_micros(1500),
                Duration::from_secs(5_000_000),
                over_maxlong,
            ] {
                assert_eq!(
                    Timer::periodic(device, period, tick()).map(|_| ()),
                    Err(NtError::INVALID_PARAMETER),
                    "{period:?}"
                );
            }
            assert!(Timer::periodic(device, Duration::from_millis(1), tick()).is_ok());
            let maxlong = Duration::from_millis(u64::from(i32::MAX.unsigned_abs()));
            assert!(Timer::periodic(device, maxlong, tick()).is_ok());
            Ok(())
        }
    }
    let runtime = Runtime::new();
    let driver = runtime.load::<Refuser>().unwrap();
    driver.add_device().unwrap();
}

// ----------------------------------------------------------------------------------------
// Determinism: `Runtime::advance` fires one expiry at a time and lets the work it handed on
// finish before the next (issue 11, B4). The driver: periodic timers, each enqueueing its
// own work item, which may enqueue itself again a few times (a chain).

/// What one timer of the relay device does: its period, and how many times its work item
/// enqueues itself again after the run the timer asked for.
#[derive(Clone, Copy)]
struct Relay {
    name: &'static str,
    period: Duration,
    chain: usize,
}

/// The test's own record of the callbacks, naming the timer or item.
type Record = Arc<Mutex<Vec<String>>>;

/// The test driver: its value carries the relays of its device and the test's record.
struct RelayDriver {
    relays: Vec<Relay>,
    record: Record,
}

impl Driver for RelayDriver {
    fn driver_entry() -> Result<Self> {
        Ok(RelayDriver { relays: Vec::new(), record: Record::default() })
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        let device = device_init.create(RelayDevice { items: SpinLock::new(Vec::new())? })?;
        for (index, &relay) in self.relays.iter().enumerate() {
            let record = Arc::clone(&self.record);
            let errand = Errand {
                relay,
                left: AtomicUsize::new(0),
                record: Arc::clone(&record),
                gate: Mutex::new(None),
            };
            device.context().items.lock().push(WorkItem::create(device, errand)?);
            let timer = Timer::periodic(device, relay.period, Ring { index, record })?;
            timer.start(relay.period)?;
        }
        Ok(())
    }
}

struct RelayDevice {
    items: SpinLock<Vec<ObjectRef<WorkItem<Errand>>>>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for RelayDevice {
        fn cleanup(&self, _device: &Device<Self>) {}
    }
}

/// A timer's context: which work item it hands its work to.
struct Ring {
    index: usize,
    record: Record,
}

kmdf::vtable! {
    impl TimerCallbacks for Ring {
        type Parent = Device<RelayDevice>;

        fn run(&self, _timer: &Timer<Self>, device: &Device<RelayDevice>) {
            let items = device.context().items.lock();
            let item = &items[self.index];
            let errand = item.context();
            self.record.lock().unwrap().push(format!("tick {}", errand.relay.name));
            errand.left.store(errand.relay.chain, Ordering::SeqCst);
            let _ = item.enqueue();
        }
    }
}

/// Where a run tells the test it started, and waits until the test lets it go.
type Gate = (mpsc::Sender<()>, mpsc::Receiver<()>);

/// A work item's context.
struct Errand {
    relay: Relay,
    /// Enqueues left in the current chain.
    left: AtomicUsize,
    record: Record,
    /// Taken by the next run, which then blocks until released.
    gate: Mutex<Option<Gate>>,
}

kmdf::vtable! {
    impl WorkItemCallbacks for Errand {
        type Parent = Device<RelayDevice>;

        fn run(&self, item: &WorkItem<Self>, _device: &Device<RelayDevice>) {
            self.record.lock().unwrap().push(format!("work {}", self.relay.name));
            let gate = self.gate.lock().unwrap().take();
            if let Some((entered, release)) = gate {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            if self.left.load(Ordering::SeqCst) > 0 {
                self.left.fetch_sub(1, Ordering::SeqCst);
                item.enqueue().unwrap();
            }
        }
    }
}

/// A runtime with one started relay device; returns it with the test's record.
fn relay(relays: &[Relay]) -> (Runtime, LoadedDriver<RelayDriver>, DeviceNode, Record) {
    let record = Record::default();
    let rig = Rig::with(RelayDriver { relays: relays.to_vec(), record: Arc::clone(&record) });
    rig.node.start().unwrap();
    let (runtime, driver, node) = rig.quiet().into_parts();
    (runtime, driver, node, record)
}

const HEATER: Relay = Relay { name: "heater", period: Duration::from_millis(100), chain: 0 };

#[test]
fn each_expiry_waits_for_the_work_it_handed_on() {
    // The scenario of issue 11 (B4): a 100 ms periodic timer that enqueues a work item,
    // advanced by one second. Before, the timer fired ten times while the first run was
    // still queued, and WdfWorkItemEnqueue ignores an enqueue while the item is queued
    // (docs/kmdf-behaviour.md section 4), so the item ran 1 to 10 times.
    let (runtime, _driver, node, record) = relay(&[HEATER]);
    runtime.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(runtime.now(), Duration::from_secs(1));
    let trace = runtime.take_trace();
    assert_eq!(trace.count(Callback::TimerFunc), 10);
    assert_eq!(trace.count(Callback::WorkItem), 10);
    assert_eq!(trace.lines(), ["EvtTimerFunc", "EvtWorkItem"].repeat(10));
    assert_eq!(record.lock().unwrap().len(), 20);
    node.remove().unwrap();
}

#[test]
fn a_chain_of_re_enqueues_finishes_before_the_next_expiry() {
    // Each tick's run enqueues the item twice more, one run after the other: the three runs
    // are the work the expiry handed on.
    let (runtime, _driver, node, record) = relay(&[Relay { chain: 2, ..HEATER }]);
    runtime.advance(Duration::from_millis(300)).unwrap();
    let tick = ["EvtTimerFunc", "EvtWorkItem", "EvtWorkItem", "EvtWorkItem"];
    assert_eq!(runtime.take_trace().lines(), tick.repeat(3));
    assert_eq!(
        *record.lock().unwrap(),
        ["tick heater", "work heater", "work heater", "work heater"].repeat(3)
    );
    node.remove().unwrap();
}

#[test]
fn the_same_scenario_gives_the_same_trace_every_time() {
    // Two timers due together at 300 ms, 600 ms and 900 ms fire in the order they were set
    // or re-armed: the fan was set at 0 ms (and re-armed at 300 and 600), the heater
    // re-armed at 200, 500 and 800 ms, so the fan fires first. Each expiry is followed by
    // its work, chains of re-enqueues included.
    let relays = [
        Relay { name: "heater", period: Duration::from_millis(100), chain: 1 },
        Relay { name: "fan", period: Duration::from_millis(300), chain: 2 },
    ];
    let play = || {
        let (runtime, _driver, node, record) = relay(&relays);
        runtime.advance(Duration::from_millis(250)).unwrap();
        runtime.advance(Duration::from_millis(750)).unwrap();
        let trace = runtime.take_trace().lines();
        node.remove().unwrap();
        let record = record.lock().unwrap().clone();
        (trace, record)
    };
    let (first_trace, first_record) = play();
    let heater = ["tick heater", "work heater", "work heater"];
    let fan = ["tick fan", "work fan", "work fan", "work fan"];
    let mut expected = Vec::new();
    for ms in (100..=1000).step_by(100) {
        if ms % 300 == 0 {
            expected.extend(fan);
        }
        expected.extend(heater);
    }
    assert_eq!(first_record, expected);
    assert_eq!(first_trace.len(), expected.len());
    // Under Miri, which interprets every step, a few runs; natively 200.
    let runs = if cfg!(miri) { 3 } else { 200 };
    for run in 1..runs {
        let (trace, record) = play();
        assert_eq!(record, first_record, "run {run}");
        assert_eq!(trace, first_trace, "run {run}");
    }
}

#[test]
fn with_the_workers_held_advance_fires_every_expiry_without_waiting() {
    // Held workers start nothing, so advance cannot wait for the work: it fires each due
    // expiry and returns. The run the first tick queued is still queued at the next ones,
    // and an enqueue while the item is queued does nothing (docs/kmdf-behaviour.md section 4):
    // one run serves all ten ticks, once the workers are released.
    let (runtime, _driver, node, record) = relay(&[HEATER]);
    let held = runtime.hold_workers();
    runtime.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(runtime.take_trace().lines(), ["EvtTimerFunc"].repeat(10));
    drop(held);
    runtime.wait_for_work_items().unwrap();
    assert_eq!(runtime.take_trace().lines(), ["EvtWorkItem"]);
    assert_eq!(record.lock().unwrap().len(), 11);
    node.remove().unwrap();
}

#[test]
fn advance_does_not_wait_for_work_no_expiry_handed_on() {
    // A work item the test enqueued, blocked until the test lets it go, is not the timers'
    // work: advancing while it runs returns (it would hang if advance waited for every work
    // item), and the timers' own work is still waited for.
    let blocker = Relay { name: "blocker", period: Duration::from_hours(1), chain: 0 };
    let (runtime, _driver, node, record) = relay(&[HEATER, blocker]);
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let item = node.with_context(|device: &RelayDevice| device.items.lock()[1].clone()).unwrap();
    *item.context().gate.lock().unwrap() = Some((entered_tx, release_rx));
    assert_eq!(item.enqueue(), Ok(Enqueued::Queued));
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    runtime.advance(Duration::from_millis(300)).unwrap();
    assert_eq!(
        record.lock().unwrap()[1..],
        ["tick heater", "work heater"].repeat(3),
        "the blocker ran first, then the timer's work, each tick's before the next"
    );
    release.send(()).unwrap();
    runtime.wait_for_work_items().unwrap();
    node.remove().unwrap();
}

#[test]
fn a_timer_registers_its_own_callbacks_only() {
    // Each callback trait has its own registration table: a timer's `run` is
    // `EvtTimerFunc`, never `EvtWorkItem`.
    let registered = <Tick as TimerCallbacks>::REGISTERED;
    assert_eq!(
        registered.iter().collect::<Vec<_>>(),
        [Callback::TimerFunc, Callback::ObjectCleanup]
    );
    assert!(!registered.contains(Callback::WorkItem));
}

#[test]
fn timers_due_at_the_same_time_all_fire() {
    // The clock's queue holds every set timer, even two due at the same instant
    // (`WdfTimerStart` on two timers with the same due time: both DPCs run).
    let runtime = Runtime::new();
    let driver = runtime.load_with(Lab { plan: Mutex::new(None) }).unwrap();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let mut timers = Vec::new();
    for name in ["a", "b", "c"] {
        let log = Arc::clone(&fired);
        let plan =
            Plan { period: None, behavior: Box::new(move |_| log.lock().unwrap().push(name)) };
        driver.with_driver(|lab| *lab.plan.lock().unwrap() = Some(plan)).unwrap();
        let node = driver.add_device().unwrap();
        timers.push(node.with_context(|d: &LabDevice| d.timer.lock().clone()).unwrap().unwrap());
    }
    for timer in &timers {
        assert_eq!(timer.start(10 * MS), Ok(Started::Set));
    }
    runtime.advance(10 * MS).unwrap();
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
    let Timed { rig: Rig { runtime, .. }, timer } = lab(None, move |_| {
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
            runtime.advance(MS).unwrap();
            fired_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            done_tx.send(timer.delete()).unwrap();
        })
    };
    fired_once.recv_timeout(Duration::from_secs(20)).expect("the first firing");
    timer.start(MS).unwrap();
    let advance = {
        let runtime = Arc::clone(&runtime);
        std::thread::spawn(move || runtime.advance(MS).unwrap())
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
    let Timed { rig: Rig { runtime, .. }, timer } = lab(Some(MS), move |timer| {
        log.lock().unwrap().push(timer.stop());
    });
    timer.start(MS).unwrap();
    let runtime = Arc::new(runtime);
    let (done_tx, done) = mpsc::channel();
    {
        let runtime = Arc::clone(&runtime);
        std::thread::spawn(move || {
            runtime.advance(10 * MS).unwrap();
            done_tx.send(()).unwrap();
        });
    }
    done.recv_timeout(Duration::from_secs(20)).expect("the advance returns");
    assert_eq!(*results.lock().unwrap(), [Ok(Stopped::Cancelled)]);
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
    f.runtime.wait_for_work_items().unwrap();
    assert_eq!(f.runtime.trace().lines(), ["EvtCleanupCallback(WDFTIMER)"]);
    f.runtime.advance(10 * MS).unwrap();
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
    f.runtime.advance(10 * MS).unwrap();
    assert_eq!(fired(&f.runtime), 0);
    assert!(f.runtime.trace().is_empty(), "the disposal waits for a worker");
    drop(held);
    f.runtime.wait_for_work_items().unwrap();
    assert_eq!(f.runtime.trace().lines(), ["EvtCleanupCallback(WDFTIMER)"]);
}

#[test]
fn the_drivers_cleanup_runs_once_when_the_timer_is_deleted_and_before_its_context_drops() {
    // docs/kmdf-behaviour.md section 5: EvtCleanupCallback when deletion starts, once; the context
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
        impl TimerCallbacks for Tock {
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
            *device.context().timer.lock() = Some(Timer::one_shot(device, Tock)?);
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
