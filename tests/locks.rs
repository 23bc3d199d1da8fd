//! Lock checking on the host runtime (issue 11, B1 and B2): a lock taken twice by one
//! thread, and lock-order inversions through locks and through waits for a work item's
//! callback, are reported by a panic before the thread blocks, instead of hanging.
//!
//! The rules: KMDF's verifier bug checks on a recursive acquisition (`WDF_RECURSIVE_LOCK`,
//! `FxVerifierLock::Lock`); `WdfWaitLockAcquire` with a zero timeout times out on a lock the
//! thread holds (`FxWaitLockInternal::AcquireLock`); a flush waits for the item's callback
//! (`WdfWorkItemFlush`, docs/kmdf-behaviour.md section 4), so holding a lock the callback takes
//! while flushing deadlocks, which Linux's lockdep reports through the work's `lockdep_map`
//! (`flush_work`). See docs/kmdf-behaviour.md section 7 and `src/host/lockdep.rs`.
//!
//! Every scenario that hung before runs on its own thread under a watchdog
//! ([`within_a_second`]): a regression fails the test instead of hanging it.
//!
//! Lock classes are process-wide and keyed by creation site: each test creates its locks,
//! work items and timers at its own lines ([`Dev::new`] is `#[track_caller]`), so the
//! orders one test takes never meet another test's.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

type Log = Arc<Mutex<Vec<String>>>;
use std::thread;
use std::time::{Duration, Instant};

mod common;

use kmdf::host::{DeviceNode, LoadedDriver, NodeState, PanicReport, PnpAction, PnpError, Runtime};
use kmdf::object::ObjectRef;
use kmdf::sync::{Irql, SpinLock, WaitLock, current_irql};
use kmdf::{
    Callback, Device, DeviceInit, Driver, PnpPowerCallbacks, Result, Timer, TimerCallbacks,
    WorkItem, WorkItemCallbacks,
};

/// What each scenario must finish within (it takes a few milliseconds; before lockdep it
/// never finished). Miri interprets every step: it is allowed far longer.
const LIMIT: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 1 });

/// Runs `scenario` on its own thread and returns its result, failing if it takes over
/// [`LIMIT`] (a deadlock, since the thread would never return).
fn within_a_second<R: Send + 'static>(scenario: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, result) = mpsc::channel();
    let started = Instant::now();
    thread::spawn(move || {
        let _ = done.send(scenario());
    });
    match result.recv_timeout(LIMIT) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the scenario hung (over {LIMIT:?})"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the scenario panicked after {:?} (see above)", started.elapsed())
        }
    }
}

// ----------------------------------------------------------------------------------------
// The test driver: one device whose context, work item and timer each test builds, with
// hooks for the callbacks the scenarios use.

/// Guarded types, named in the messages.
struct Queue(#[allow(dead_code, reason = "only the type name matters")] Vec<u32>);
struct State(u32);
struct Left;
struct Right;

type Hook = Box<dyn Fn(&Dev) -> Result + Send + Sync>;

/// The device context: its locks, its work item and timer, and what some callbacks do.
struct Dev {
    queue: SpinLock<Queue>,
    state: WaitLock<State>,
    left: WaitLock<Left>,
    right: WaitLock<Right>,
    item: OnceLock<ObjectRef<WorkItem<Job>>>,
    timer: OnceLock<ObjectRef<Timer<Tick>>>,
    hooks: Mutex<Vec<(Callback, Hook)>>,
    /// What the hooks saw, for the assertions.
    seen: Mutex<Vec<String>>,
}

impl Dev {
    /// Every lock created at the caller's line: a class of its own for each test.
    #[track_caller]
    fn new() -> Result<Self> {
        Ok(Dev {
            queue: SpinLock::new(Queue(Vec::new()))?,
            state: WaitLock::new(State(0))?,
            left: WaitLock::new(Left)?,
            right: WaitLock::new(Right)?,
            item: OnceLock::new(),
            timer: OnceLock::new(),
            hooks: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn on(&self, callback: Callback, hook: impl Fn(&Dev) -> Result + Send + Sync + 'static) {
        self.hooks.lock().unwrap().push((callback, Box::new(hook)));
    }

    fn run(&self, callback: Callback) -> Result {
        let hooks = self.hooks.lock().unwrap();
        for (_, hook) in hooks.iter().filter(|(c, _)| *c == callback) {
            hook(self)?;
        }
        Ok(())
    }

    fn see(&self, what: impl Into<String>) {
        self.seen.lock().unwrap().push(what.into());
    }

    fn item(&self) -> &WorkItem<Job> {
        self.item.get().expect("the test created the work item")
    }

    fn timer(&self) -> &Timer<Tick> {
        self.timer.get().expect("the test created the timer")
    }
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Dev {
        fn d0_entry(&self, _device: &Device<Self>, _previous: kmdf::DevicePowerState) -> Result {
            self.run(Callback::D0Entry)
        }
        fn self_managed_io_init(&self, _device: &Device<Self>) -> Result {
            self.run(Callback::SelfManagedIoInit)
        }
        fn self_managed_io_suspend(&self, _device: &Device<Self>) -> Result {
            self.run(Callback::SelfManagedIoSuspend)
        }
    }
}

type Body = Box<dyn Fn(&Dev) + Send + Sync>;

/// The work item's context: what its callback does with the device.
struct Job(Body);

kmdf::vtable! {
    impl WorkItemCallbacks for Job {
        type Parent = Device<Dev>;

        fn run(&self, _item: &WorkItem<Self>, device: &Device<Dev>) {
            (self.0)(device.context());
        }
    }
}

/// The timer's context: what its callback does with the device, at `DISPATCH_LEVEL`.
struct Tick(Body);

kmdf::vtable! {
    impl TimerCallbacks for Tick {
        type Parent = Device<Dev>;

        fn run(&self, _timer: &Timer<Self>, device: &Device<Dev>) {
            (self.0)(device.context());
        }
    }
}

type Setup = Box<dyn for<'a> FnOnce(DeviceInit<'a>) -> Result + Send>;

/// The driver; `device_add` runs the setup the test built it with.
struct TestDriver {
    setup: Mutex<Option<Setup>>,
}

impl Driver for TestDriver {
    fn driver_entry() -> Result<Self> {
        Ok(TestDriver { setup: Mutex::new(None) })
    }

    fn device_add(&self, init: DeviceInit<'_>) -> Result {
        let setup = self.setup.lock().unwrap().take().expect("device() hands a setup over");
        setup(init)
    }
}

/// A runtime with one device, added by `setup`: it creates the device with a context
/// built by [`Dev::new`] *in the test's closure*, so that the test's locks are classes of
/// their own, and creates what else it needs.
fn device(
    setup: impl for<'a> FnOnce(DeviceInit<'a>) -> Result + Send + 'static,
) -> (Runtime, LoadedDriver<TestDriver>, DeviceNode) {
    common::Rig::with(TestDriver { setup: Mutex::new(Some(Box::new(setup))) }).into_parts()
}

/// Calls `f` with the device context.
fn with<R>(node: &DeviceNode, f: impl FnOnce(&Dev) -> R) -> R {
    node.with_context(f).unwrap()
}

fn seen(node: &DeviceNode) -> Vec<String> {
    with(node, |dev| dev.seen.lock().unwrap().clone())
}

/// The one panic the runtime caught, checking its callback.
fn the_panic(runtime: &Runtime, callback: Callback) -> String {
    let panics: Vec<PanicReport> = runtime.panics();
    assert_eq!(panics.len(), 1, "{panics:#?}");
    assert_eq!(panics[0].callback, callback, "{panics:#?}");
    panics[0].message.clone()
}

fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "`{part}` missing from:\n{message}");
    }
}

// ----------------------------------------------------------------------------------------
// B1: recursive acquisition.

#[test]
fn a_spin_lock_taken_twice_in_a_pnp_callback_panics_naming_the_lock_and_the_callback() {
    let (message, irql, state) = within_a_second(|| {
        let (runtime, _driver, node) = device(|init| {
            let dev = init.create(Dev::new()?)?;
            dev.context().on(Callback::SelfManagedIoSuspend, |dev| {
                let _queue = dev.queue.lock();
                let _again = dev.queue.lock(); // hung forever before
                Ok(())
            });
            Ok(())
        });
        node.start().unwrap();
        node.apply(PnpAction::Idle).unwrap();
        let message = the_panic(&runtime, Callback::SelfManagedIoSuspend);
        // The unwind released the first guard: the test thread is at PASSIVE_LEVEL again.
        (message, current_irql(), node.state())
    });
    assert_contains(
        &message,
        &[
            "recursive acquisition of SpinLock<locks::Queue> (created at tests/locks.rs:",
            "in EvtDeviceSelfManagedIoSuspend",
            "WDF_RECURSIVE_LOCK",
        ],
    );
    assert_eq!(irql, Irql::Passive);
    // A failed SmioSuspend fails the device (docs/kmdf-behaviour.md section 2): like any panic.
    assert_eq!(state, NodeState::Removed);
}

#[test]
fn a_wait_lock_taken_twice_panics_but_try_lock_only_returns_none() {
    let log = Log::default();
    let seen = Arc::clone(&log);
    let (message, state) = within_a_second(move || {
        let (runtime, _driver, node) = device(move |init| {
            let dev = init.create(Dev::new()?)?;
            dev.context().on(Callback::SelfManagedIoInit, move |dev| {
                let _state = dev.state.lock();
                // WdfWaitLockAcquire with a zero timeout: STATUS_TIMEOUT, no verifier break.
                let tried = dev.state.try_lock().is_some();
                seen.lock().unwrap().push(format!("try_lock: {tried}"));
                let _again = dev.state.lock(); // hung forever before
                seen.lock().unwrap().push(String::from("not reached"));
                Ok(())
            });
            Ok(())
        });
        node.start().unwrap();
        (the_panic(&runtime, Callback::SelfManagedIoInit), node.state())
    });
    assert_contains(
        &message,
        &[
            "recursive acquisition of WaitLock<locks::State> (created at tests/locks.rs:",
            "in EvtDeviceSelfManagedIoInit",
            "(acquired at tests/locks.rs:",
        ],
    );
    assert_eq!(*log.lock().unwrap(), ["try_lock: false"]);
    // A failed SmioInit on the first start removes the device (docs/kmdf-behaviour.md section 2).
    assert_eq!(state, NodeState::Removed);
}

#[test]
fn try_lock_on_a_wait_lock_the_thread_holds_returns_none_outside_callbacks_too() {
    let (message, value) = within_a_second(|| {
        let lock = WaitLock::new(State(1)).unwrap();
        let held = lock.lock();
        assert!(lock.try_lock().is_none(), "WdfWaitLockAcquire(timeout 0) times out");
        drop(held);
        let again = lock.try_lock().expect("free again");
        // A lock taken by try_lock counts as held: taking it again is recursion.
        let message = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(lock.lock())))
            .err()
            .and_then(|payload| payload.downcast::<String>().ok())
            .expect("recursion panics");
        (message, again.0)
    });
    assert_contains(
        &message,
        &["recursive acquisition of WaitLock<locks::State>", "in the test thread"],
    );
    assert_eq!(value, 1);
}

#[test]
fn a_spin_lock_taken_twice_in_a_timer_callback_names_evt_timer_func() {
    let (message, advanced) = within_a_second(|| {
        let (runtime, _driver, node) = device(|init| {
            let dev = init.create(Dev::new()?)?;
            let tick = Tick(Box::new(|dev| {
                let _queue = dev.queue.lock();
                let _again = dev.queue.lock();
            }));
            let timer = Timer::one_shot(dev, tick)?;
            timer.start(Duration::from_millis(5))?;
            let _ = dev.context().timer.set(timer);
            Ok(())
        });
        node.start().unwrap();
        // A panic in a timer callback fails the advance (README, Reliability).
        let advanced = runtime.advance(Duration::from_millis(5)).expect_err("the panic fails it");
        assert_eq!(current_irql(), Irql::Passive);
        (the_panic(&runtime, Callback::TimerFunc), advanced.to_string())
    });
    assert_contains(
        &message,
        &["recursive acquisition of SpinLock<locks::Queue>", "in EvtTimerFunc"],
    );
    assert_contains(&advanced, &["EvtTimerFunc panicked", "recursive acquisition of SpinLock"]);
}

// ----------------------------------------------------------------------------------------
// B2: order inversions, through locks and through waits.

/// The item's callback takes the state lock. (The item is created at the caller's line.)
#[track_caller]
fn item_taking_state(dev: &Device<Dev>) -> Result {
    let job = Job(Box::new(|dev| {
        dev.state.lock().0 += 1;
    }));
    let _ = dev.context().item.set(WorkItem::create(dev, job)?);
    Ok(())
}

/// SmioSuspend holds the state lock while it queues the item and flushes it: the run waits
/// for the lock, the flush for the run.
fn suspend_flushing_under_the_lock(dev: &Dev) -> Result {
    let _state = dev.state.lock();
    dev.item().enqueue()?;
    dev.item().flush()
}

/// The same, with a first flush before the enqueue: the order "state lock, then a wait for
/// the item" is seen before the item can run, so the run is what closes the cycle.
fn suspend_flushing_twice_under_the_lock(dev: &Dev) -> Result {
    let _state = dev.state.lock();
    dev.item().flush()?;
    dev.item().enqueue()?;
    dev.item().flush()
}

#[test]
fn suspend_holding_a_lock_while_flushing_an_item_that_takes_it_is_reported_at_the_flush() {
    let (message, state, runs, idle) = within_a_second(|| {
        let (runtime, _driver, node) = device(|init| {
            let dev = init.create(Dev::new()?)?;
            item_taking_state(dev)?;
            dev.context().on(Callback::SelfManagedIoSuspend, suspend_flushing_under_the_lock);
            Ok(())
        });
        node.start().unwrap();
        // The item ran once already: lockdep knows "the callback takes the state lock".
        with(&node, |dev| {
            dev.item().enqueue().unwrap();
            dev.item().flush().unwrap();
        });
        // Hung forever before. The panic fails SmioSuspend, so the device is torn down; the
        // run Suspend queued goes when the lock is free, before or after SmioFlush (then the
        // verifier reports it: the driver left it queued).
        let idle = node.apply(PnpAction::Idle).err().map(|error| error.to_string());
        runtime.wait_for_work_items().unwrap();
        let message = the_panic(&runtime, Callback::SelfManagedIoSuspend);
        let runs = runtime.trace().lines().iter().filter(|l| *l == "EvtWorkItem").count();
        (message, node.state(), runs, idle)
    });
    assert_contains(
        &message,
        &[
            "possible deadlock",
            "now in EvtDeviceSelfManagedIoSuspend: holding WaitLock<locks::State> (created at tests/locks.rs:",
            "waits for the callback of WorkItem<locks::Job> (created at tests/locks.rs:",
            "(WorkItem::flush at tests/locks.rs:",
            "in EvtWorkItem: running the callback of WorkItem<locks::Job>",
            "acquired WaitLock<locks::State>",
        ],
    );
    // The panic unwound the flush and released the lock: the queued run went ahead (it
    // takes the lock too) before the failed device's items were run down.
    assert_eq!(runs, 2);
    assert_eq!(state, NodeState::Removed);
    if let Some(idle) = idle {
        assert_contains(&idle, &["EvtWorkItem ran after EvtDeviceSelfManagedIoFlush returned"]);
    }
}

#[test]
fn suspend_holding_a_lock_while_flushing_an_item_that_never_ran_is_reported_in_the_item() {
    let (message, state) = within_a_second(|| {
        let (runtime, _driver, node) = device(|init| {
            let dev = init.create(Dev::new()?)?;
            item_taking_state(dev)?;
            dev.context().on(Callback::SelfManagedIoSuspend, suspend_flushing_twice_under_the_lock);
            Ok(())
        });
        node.start().unwrap();
        // First the flush under the lock is seen (no cycle yet), then the run taking the
        // lock closes it: the run panics instead of waiting, so the second flush returns.
        // Hung forever before. The item's panic fails the action (README, Reliability),
        // which itself went through: the device is idle.
        let idle = node.apply(PnpAction::Idle).expect_err("the item's panic is reported");
        assert!(matches!(idle, PnpError::CallbackPanicked { applied: true, .. }), "{idle:?}");
        (the_panic(&runtime, Callback::WorkItem), node.state())
    });
    assert_contains(
        &message,
        &[
            "now in EvtWorkItem: running the callback of WorkItem<locks::Job>",
            "acquires WaitLock<locks::State>",
            "in EvtDeviceSelfManagedIoSuspend: holding WaitLock<locks::State>",
            "waited for the callback of WorkItem<locks::Job>",
        ],
    );
    assert_eq!(state, NodeState::Idle);
}

#[test]
fn an_inversion_on_two_threads_is_reported_though_they_never_overlapped() {
    let message = within_a_second(|| {
        let (runtime, _driver, node) = device(|init| {
            let dev = init.create(Dev::new()?)?;
            // D0Entry, on the test's thread: left, then right.
            dev.context().on(Callback::D0Entry, |dev| {
                let _left = dev.left.lock();
                let _right = dev.right.lock();
                Ok(())
            });
            // The work item, on a worker thread: right, then left.
            let job = Job(Box::new(|dev| {
                let _right = dev.right.lock();
                let _left = dev.left.lock();
                dev.see("both taken");
            }));
            let _ = dev.context().item.set(WorkItem::create(dev, job)?);
            Ok(())
        });
        node.start().unwrap();
        // Strictly after D0Entry returned: the two never run at the same time.
        with(&node, |dev| {
            dev.item().enqueue().unwrap();
            dev.item().flush().unwrap();
        });
        assert!(seen(&node).is_empty(), "the run stopped at the inverted acquisition");
        the_panic(&runtime, Callback::WorkItem)
    });
    assert_contains(
        &message,
        &[
            "now in EvtWorkItem: holding WaitLock<locks::Right> (created at tests/locks.rs:",
            "acquires WaitLock<locks::Left> (created at tests/locks.rs:",
            "but earlier (the opposite order):",
            "in EvtDeviceD0Entry: holding WaitLock<locks::Left>",
            "acquired WaitLock<locks::Right>",
        ],
    );
}

#[test]
fn stopping_a_timer_with_wait_under_a_lock_its_callback_only_try_locks_is_not_reported() {
    // A timer callback runs at DISPATCH_LEVEL: it cannot wait for a wait lock (that panics
    // on the IRQL), only try it, so holding one while `stop(true)` waits for the callback
    // cannot deadlock. The wait is recorded (lockdep's timer pseudo-lock), and correctly
    // finds no cycle; with a spin lock held, `stop(true)` is refused on the IRQL.
    let (panics, seen) = within_a_second(|| {
        let (runtime, _driver, node) = device(|init| {
            let dev = init.create(Dev::new()?)?;
            let tick = Tick(Box::new(|dev| {
                let _queue = dev.queue.lock();
                dev.see(format!("tick, state free: {}", dev.state.try_lock().is_some()));
            }));
            let timer = Timer::periodic(dev, Duration::from_millis(10), tick)?;
            timer.start(Duration::from_millis(10))?;
            let _ = dev.context().timer.set(timer);
            dev.context().on(Callback::SelfManagedIoSuspend, |dev| {
                let _state = dev.state.lock();
                dev.timer().stop_and_wait()?;
                let queue = dev.queue.lock();
                let refused = dev.timer().stop_and_wait();
                drop(queue);
                dev.see(format!("stop(true) under the spin lock: {refused:?}"));
                Ok(())
            });
            Ok(())
        });
        node.start().unwrap();
        runtime.advance(Duration::from_millis(10)).unwrap();
        node.apply(PnpAction::Idle).unwrap();
        (runtime.panics(), seen(&node))
    });
    assert!(panics.is_empty(), "{panics:#?}");
    assert_eq!(
        seen,
        [
            "tick, state free: true",
            "stop(true) under the spin lock: Err(STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL (0xC020020C))",
        ]
    );
}

#[test]
fn the_same_order_everywhere_is_not_reported() {
    let (panics, state, seen) = within_a_second(|| {
        let (runtime, _driver, node) = device(|init| {
            let dev = init.create(Dev::new()?)?;
            dev.context().on(Callback::D0Entry, |dev| {
                let _left = dev.left.lock();
                let _right = dev.right.lock();
                let _queue = dev.queue.lock();
                Ok(())
            });
            let job = Job(Box::new(|dev| {
                let _left = dev.left.lock();
                let _right = dev.right.lock();
                dev.queue.lock().0.push(1);
                dev.see("ran");
            }));
            let _ = dev.context().item.set(WorkItem::create(dev, job)?);
            // Holding the state lock (which the callback never takes) while flushing.
            dev.context().on(Callback::SelfManagedIoSuspend, |dev| {
                let _state = dev.state.lock();
                dev.item().enqueue()?;
                dev.item().flush()
            });
            Ok(())
        });
        node.start().unwrap();
        // The two orders (D0Entry's, the item's) on two threads at once, repeatedly.
        for _ in 0..20 {
            with(&node, |dev| dev.item().enqueue().unwrap());
            node.apply(PnpAction::Idle).unwrap();
            node.apply(PnpAction::Wake).unwrap();
        }
        runtime.wait_for_work_items().unwrap();
        (runtime.panics(), node.state(), seen(&node))
    });
    assert!(panics.is_empty(), "{panics:#?}");
    assert_eq!(state, NodeState::Working);
    assert!(seen.len() >= 20, "{seen:?}");
}

#[test]
fn deleting_an_item_under_a_lock_its_callback_takes_is_reported() {
    let message = within_a_second(|| {
        let (runtime, _driver, node) = device(|init| {
            let dev = init.create(Dev::new()?)?;
            item_taking_state(dev)?;
            dev.context().on(Callback::SelfManagedIoSuspend, |dev| {
                let _state = dev.state.lock();
                dev.item().delete() // waits for a queued or running callback
            });
            Ok(())
        });
        node.start().unwrap();
        with(&node, |dev| {
            dev.item().enqueue().unwrap();
            dev.item().flush().unwrap();
        });
        node.apply(PnpAction::Idle).unwrap();
        the_panic(&runtime, Callback::SelfManagedIoSuspend)
    });
    assert_contains(
        &message,
        &["waits for the callback of WorkItem<locks::Job>", "(WorkItem::delete at"],
    );
}

#[test]
fn an_inversion_is_reported_before_the_threads_deadlock_when_they_do_overlap() {
    // Two threads that would really deadlock: the test thread holds `left` and takes
    // `right`, the item holds `right` and takes `left`. Whichever acquisition comes second
    // in the graph closes the cycle and panics instead of waiting, and the other goes on.
    let (test_thread_reported, panics, waited_failed) = within_a_second(|| {
        let (runtime, _driver, node) = device(|init| {
            let dev = init.create(Dev::new()?)?;
            let job = Job(Box::new(|dev| {
                let _right = dev.right.lock();
                dev.see("right taken");
                let _left = dev.left.lock();
            }));
            let _ = dev.context().item.set(WorkItem::create(dev, job)?);
            Ok(())
        });
        node.start().unwrap();
        let reported = with(&node, |dev| {
            let left = dev.left.lock();
            dev.item().enqueue().unwrap();
            // Wait (not with a flush, which lockdep would see) for the run to hold `right`.
            while dev.seen.lock().unwrap().is_empty() {
                thread::yield_now();
            }
            let right = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(dev.right.lock());
            }));
            drop(left);
            right.is_err()
        });
        // A report in the item fails the wait (README, Reliability).
        let waited = runtime.wait_for_work_items().is_err();
        (reported, runtime.panics(), waited)
    });
    let reports = usize::from(test_thread_reported) + panics.len();
    assert_eq!(reports, 1, "one report, on one side: {test_thread_reported} {panics:#?}");
    assert_eq!(waited_failed, !panics.is_empty());
    if let Some(report) = panics.first() {
        assert_eq!(report.callback, Callback::WorkItem);
        assert_contains(&report.message, &["now in EvtWorkItem: holding WaitLock<locks::Right>"]);
    }
}

#[test]
fn lock_classes_are_per_creation_site_and_type() {
    // Two devices' locks created at one site are one class: an order seen on one device
    // and its inversion on the other are reported. (`left` and `right`, created at the same
    // line by `Dev::new`, are two classes: their types differ.)
    let message = within_a_second(|| {
        let make = || Dev::new().unwrap();
        let (one, two) = (make(), make());
        {
            let _left = one.left.lock();
            let _right = one.right.lock();
        }
        let _right = two.right.lock();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(two.left.lock())))
            .err()
            .and_then(|payload| payload.downcast::<String>().ok())
            .expect("reported")
    });
    assert_contains(
        &message,
        &[
            "now in the test thread: holding WaitLock<locks::Right>",
            "acquires WaitLock<locks::Left>",
            "in the test thread: holding WaitLock<locks::Left>",
        ],
    );
}

#[test]
fn an_item_deleting_itself_under_a_lock_it_takes_is_not_reported() {
    // From its own callback the deletion does not wait (it completes when the callback
    // returns, docs/kmdf-behaviour.md section 4): holding a lock then is no inversion.
    let (panics, seen) = within_a_second(|| {
        let (runtime, _driver, node) = device(|init| {
            let dev = init.create(Dev::new()?)?;
            let job = Job(Box::new(|dev| {
                let _state = dev.state.lock();
                dev.see(format!("delete: {:?}", dev.item().delete()));
            }));
            let _ = dev.context().item.set(WorkItem::create(dev, job)?);
            Ok(())
        });
        node.start().unwrap();
        with(&node, |dev| {
            dev.item().enqueue().unwrap();
            dev.item().flush().unwrap();
        });
        runtime.wait_for_work_items().unwrap();
        (runtime.panics(), seen(&node))
    });
    assert!(panics.is_empty(), "{panics:#?}");
    assert_eq!(seen, ["delete: Ok(())"]);
}

#[test]
fn spin_lock_guards_released_out_of_order_keep_dispatch_level_until_the_last() {
    // KeReleaseSpinLock restores the IRQL the lock raised from: releasing the outer lock
    // first must not lower the thread while it still holds the inner one.
    let outer = SpinLock::new(1_u32).unwrap();
    let inner = SpinLock::new(2_u32).unwrap();
    let outer_guard = outer.lock();
    let inner_guard = inner.lock();
    assert_eq!(current_irql(), Irql::Dispatch);
    drop(outer_guard);
    assert_eq!(current_irql(), Irql::Dispatch, "a spin lock is still held");
    assert_eq!(*inner_guard, 2);
    drop(inner_guard);
    assert_eq!(current_irql(), Irql::Passive);
    // In order, as before.
    let outer_guard = outer.lock();
    let inner_guard = inner.lock();
    drop(inner_guard);
    assert_eq!(current_irql(), Irql::Dispatch);
    drop(outer_guard);
    assert_eq!(current_irql(), Irql::Passive);
}
