//! Random power-policy storms: random S0 idle and Sx wake settings (or none), a random bus
//! wake capability, and random sequences of every PnP action (wake signals included), clock
//! advances that let the idle timeout fire, power references taken and released, and
//! injected failures of every fallible callback (the arming callbacks included).
//!
//! After every step the runtime's checks hold (docs/kmdf-behaviour.md section 3, invariant 12
//! for the wake arming; section 10 for the policy), a refused action changes nothing, a device
//! never idles while a power reference is held, and an accepted wake signal brings an idle
//! device back to D0 (no lost wake). At the end nothing is left. `KMDF_STORM_CASES` sets the
//! number of sequences (default 10,000, as `tests/storm.rs`; a tenth of it here since each
//! sequence also runs worker threads).

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use kmdf::host::{AssignedResources, NodeState, PnpAction, PnpError, Runtime};
use kmdf::object::ObjectRef;
use kmdf::power_policy::{IdleCaps, S0IdleSettings, SxWakeSettings};
use kmdf::{
    Callback, Device, DeviceInit, DevicePowerState, Driver, NtError, PnpPowerCallbacks, Result,
    WorkItem, WorkItemCallbacks,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const TIMEOUT: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug)]
struct Settings {
    s0: Option<IdleCaps>,
    power_up_on_system_wake: bool,
    sx: bool,
    device_wake: Option<DevicePowerState>,
}

struct StormDriver(Settings);

impl Driver for StormDriver {
    fn driver_entry() -> Result<Self> {
        Err(NtError::NOT_SUPPORTED) // loaded with a value
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        let device = device_init.create_with(|device| {
            Ok(Dev { reference: WorkItem::create(device, Reference)?, hold: Mutex::new(None) })
        })?;
        let settings = self.0;
        if let Some(caps) = settings.s0 {
            let mut s0 = S0IdleSettings::new(caps).idle_timeout(TIMEOUT);
            if !caps.can_wake() {
                s0 = s0.power_up_on_system_wake(settings.power_up_on_system_wake);
            }
            // Refused on a device that cannot wake: it then has no S0 idle policy.
            let _ = device.assign_s0_idle_settings(&s0);
        }
        if settings.sx {
            let _ = device.assign_sx_wake_settings(&SxWakeSettings::new());
        }
        Ok(())
    }
}

struct Dev {
    reference: ObjectRef<WorkItem<Reference>>,
    /// Where the work item says whether it took a reference, and waits to release it.
    hold: Mutex<Option<(mpsc::Sender<bool>, mpsc::Receiver<()>)>>,
}

macro_rules! ok {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        kmdf::vtable! {
            impl PnpPowerCallbacks for Dev {
                $(fn $name(&self, _device: &Device<Self> $(, $arg: $ty)*) -> Result {
                    $(let _ = $arg;)*
                    Ok(())
                })*
                fn disarm_wake_from_s0(&self, _device: &Device<Self>) {}
                fn wake_from_s0_triggered(&self, _device: &Device<Self>) {}
                fn disarm_wake_from_sx(&self, _device: &Device<Self>) {}
                fn wake_from_sx_triggered(&self, _device: &Device<Self>) {}
                fn self_managed_io_flush(&self, _device: &Device<Self>) {}
            }
        }
    };
}

ok! {
    d0_entry(previous: DevicePowerState);
    d0_exit(target: DevicePowerState);
    d0_entry_post_interrupts_enabled(previous: DevicePowerState);
    d0_exit_pre_interrupts_disabled(target: DevicePowerState);
    self_managed_io_init();
    self_managed_io_suspend();
    self_managed_io_restart();
    arm_wake_from_s0();
    arm_wake_from_sx();
}

/// A work item that takes a power reference (waiting for D0) and holds it until told.
struct Reference;

kmdf::vtable! {
    impl WorkItemCallbacks for Reference {
        type Parent = Device<Dev>;

        fn run(&self, _item: &WorkItem<Self>, device: &Device<Dev>) {
            let Some((taken, release)) = device.context().hold.lock().unwrap().take() else {
                return;
            };
            match device.stop_idle(true) {
                Ok(reference) => {
                    let _ = taken.send(true);
                    let _ = release.recv();
                    drop(reference);
                }
                Err(_) => {
                    let _ = taken.send(false);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Action(PnpAction),
    /// Advance the clock by this many timeouts' quarters.
    Advance(u8),
    /// Take a power reference and keep it (a second take while one is held is skipped).
    Take,
    /// Release the held power reference.
    Release,
}

const FALLIBLE: [Callback; 9] = [
    Callback::D0Entry,
    Callback::D0EntryPostInterruptsEnabled,
    Callback::D0ExitPreInterruptsDisabled,
    Callback::D0Exit,
    Callback::SelfManagedIoInit,
    Callback::SelfManagedIoSuspend,
    Callback::SelfManagedIoRestart,
    Callback::ArmWakeFromS0,
    Callback::ArmWakeFromSx,
];

#[derive(Clone, Debug)]
struct Storm {
    settings: Settings,
    steps: Vec<Step>,
    failures: Vec<(Callback, u64)>,
}

fn storm() -> impl Strategy<Value = Storm> {
    let caps = proptest::option::of(proptest::sample::select(vec![
        IdleCaps::CannotWakeFromS0,
        IdleCaps::CanWakeFromS0,
    ]));
    let wake = proptest::sample::select(vec![
        None,
        Some(DevicePowerState::D2),
        Some(DevicePowerState::D3),
    ]);
    let settings = (caps, any::<bool>(), any::<bool>(), wake).prop_map(
        |(s0, power_up_on_system_wake, sx, device_wake)| Settings {
            s0,
            power_up_on_system_wake,
            sx,
            device_wake,
        },
    );
    let step = prop_oneof![
        4 => proptest::sample::select(PnpAction::ALL.to_vec()).prop_map(Step::Action),
        2 => Just(Step::Action(PnpAction::SignalWake)),
        3 => (1_u8..8).prop_map(Step::Advance),
        1 => Just(Step::Take),
        1 => Just(Step::Release),
    ];
    let failure = (proptest::sample::select(FALLIBLE.to_vec()), 1_u64..4);
    (settings, proptest::collection::vec(step, 1..40), proptest::collection::vec(failure, 0..3))
        .prop_map(|(settings, steps, failures)| Storm { settings, steps, failures })
}

fn play(storm: &Storm) -> std::result::Result<(), TestCaseError> {
    let runtime = Runtime::new();
    for &(callback, nth) in &storm.failures {
        runtime.inject_failure(callback, nth, NtError::UNSUCCESSFUL).unwrap();
    }
    let driver = runtime.load_with(StormDriver(storm.settings)).unwrap();
    let node = driver
        .add_device_with(AssignedResources::new().device_wake(storm.settings.device_wake))
        .unwrap();
    let mut held: Option<mpsc::Sender<()>> = None;
    // Every sequence starts the device: the power policy runs only on a started device (the
    // actions refused before a start are `tests/storm.rs`'s).
    node.start().map_err(|error| TestCaseError::fail(error.to_string()))?;
    for (index, &step) in storm.steps.iter().enumerate() {
        match step {
            Step::Action(action) => {
                // A reference is held across clock advances only: an action may remove the
                // device, whose removal waits for the work item holding it (a deadlock in
                // KMDF too).
                if let Some(release) = held.take() {
                    let _ = release.send(());
                    runtime.wait_for_work_items().unwrap();
                }
                let state = node.state();
                let trace = runtime.trace().len();
                match node.apply(action) {
                    Ok(()) => {
                        if action == PnpAction::SignalWake && state == NodeState::Idle {
                            prop_assert!(
                                matches!(node.state(), NodeState::Working | NodeState::Removed),
                                "step {}: an accepted wake signal left the device {:?}",
                                index,
                                node.state()
                            );
                        }
                    }
                    Err(PnpError::InvalidAction { .. }) => {
                        prop_assert_eq!(node.state(), state, "step {}: refused but changed", index);
                        prop_assert_eq!(runtime.trace().len(), trace, "step {}", index);
                    }
                    Err(error) => {
                        return Err(TestCaseError::fail(format!("step {index}: {error}")));
                    }
                }
            }
            Step::Advance(quarters) => {
                let before = node.state();
                runtime.advance(TIMEOUT / 4 * u32::from(quarters)).unwrap();
                if held.is_some() && before == NodeState::Working {
                    prop_assert_eq!(
                        node.state(),
                        NodeState::Working,
                        "step {}: idled with a power reference held",
                        index
                    );
                }
            }
            Step::Take => {
                if held.is_none() && !node.is_removed() {
                    let (release, wait_for_release) = mpsc::channel();
                    let (taken_tx, taken) = mpsc::channel();
                    node.with_context(|dev: &Dev| {
                        *dev.hold.lock().unwrap() = Some((taken_tx, wait_for_release));
                        dev.reference.enqueue().unwrap();
                    })
                    .unwrap();
                    // The reference is held (or was refused) once the work item says so.
                    let took =
                        taken.recv_timeout(Duration::from_secs(10)).expect("the work item ran");
                    if took {
                        held = Some(release);
                    } else {
                        // Refused: the run ends now, and what it did (a power-up that failed
                        // and tore the device down, the item's own disposal) completes
                        // before the next step looks at the trace.
                        runtime.wait_for_work_items().unwrap();
                    }
                }
            }
            Step::Release => {
                if let Some(release) = held.take() {
                    let _ = release.send(());
                    runtime.wait_for_work_items().unwrap();
                }
            }
        }
    }
    if let Some(release) = held.take() {
        let _ = release.send(());
    }
    runtime.wait_for_work_items().unwrap();
    drop(node);
    drop(driver);
    drop(runtime); // tears down what is left; a finding would panic here
    Ok(())
}

#[test]
fn power_policy_storms_keep_every_invariant() {
    let cases = std::env::var("KMDF_STORM_CASES")
        .ok()
        .and_then(|cases| cases.parse::<u32>().ok())
        .unwrap_or(10_000)
        / 10;
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    runner.run(&storm(), |storm| play(&storm)).unwrap();
}
