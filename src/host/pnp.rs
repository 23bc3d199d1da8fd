//! The PnP manager's actions and KMDF's PnP, power and self-managed I/O state machines.
//!
//! Each [`PnpAction`] applied to a [`DeviceNode`](super::DeviceNode) produces exactly the
//! driver callbacks KMDF would invoke (kmdf-semantics.md section 1), including the failure
//! paths of section 2: a failure that tears the device down runs the whole teardown, down
//! to the device object's deletion, within the action that hit it. An action the device's
//! state does not allow is refused with [`PnpError::InvalidAction`] and changes nothing.
//!
//! The model, with the KMDF source it follows (`pnpstatemachine.cpp`, `powerstatemachine.cpp`,
//! `selfmanagediostatemachine.cpp`):
//!
//! * Power-up (start, wake, resume, the wake-up that query-remove and query-stop force):
//!   `D0Entry`, `D0EntryPostInterruptsEnabled`, then self-managed I/O Init (first start) or
//!   Restart. A failed `D0Entry` gets no `D0Exit`; a failed `D0EntryPost` gets `D0Exit`
//!   without `D0ExitPre`; a failed Init/Restart gets `D0ExitPre` and `D0Exit` (`D3Final`)
//!   without Suspend.
//! * Power-down (idle, sleep, stop, remove, surprise removal in D0): self-managed I/O
//!   Suspend, `D0ExitPre`, `D0Exit`. A failure does not stop the power-down.
//! * A failure during a start (the start IRP fails) makes the PnP manager remove the device:
//!   `ReleaseHardware`, self-managed I/O Flush and Cleanup, object cleanup. A failure while
//!   the device runs (idle, wake, sleep, resume, stop) fails the device
//!   (`PnpEventFailedPowerPolicyRemoved` invalidates its state), so the PnP manager sends a
//!   surprise removal before the remove (`PnpEventFailedSurpriseRemoved`):
//!   `ReleaseHardware`, Flush, `SurpriseRemoval`, Cleanup, object cleanup.
//! * The self-managed I/O machine exists only when the driver registered one of its
//!   callbacks (`fxpkgpnp.cpp: RegisterCallbacks`); its transitions are the table of
//!   section 3, and events it does not expect are dropped.

use super::std;
use std::fmt;
use std::format;
use std::string::String;
use std::vec::Vec;

use super::device::{CreatedDevice, PnpCall};
use super::object::Shared;
use super::trace::Trace;
use crate::{Callback, DevicePowerState, NtStatus, Result};

/// An action of the PnP manager (or of the power manager) on a device.
///
/// The names are the ones the sample runner takes on its command line:
///
/// ```
/// use kmdf::host::PnpAction;
///
/// assert_eq!("query-remove".parse::<PnpAction>(), Ok(PnpAction::QueryRemove));
/// assert_eq!(PnpAction::SurpriseRemove.to_string(), "surprise-remove");
/// assert!("unplug".parse::<PnpAction>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PnpAction {
    /// `IRP_MN_START_DEVICE`: first start, or start again after a rebalance stop.
    Start,
    /// The device idles out: to D3 while the system stays in S0.
    Idle,
    /// The idle device is needed again: back to D0.
    Wake,
    /// The system goes to sleep (S3): a device in D0 goes to D3; an idle one stays in D3.
    Sleep,
    /// The system resumes: a device that was in D0 returns to D0; one that was idle stays
    /// idle (it could not wake).
    Resume,
    /// `IRP_MN_QUERY_REMOVE_DEVICE`.
    QueryRemove,
    /// `IRP_MN_CANCEL_REMOVE_DEVICE`.
    CancelRemove,
    /// An orderly removal (`IRP_MN_REMOVE_DEVICE`), preceded by a query-remove unless one is
    /// outstanding; a vetoed query ends the action with the device still started.
    Remove,
    /// `IRP_MN_SURPRISE_REMOVAL`, followed by the final `IRP_MN_REMOVE_DEVICE`.
    SurpriseRemove,
    /// `IRP_MN_QUERY_STOP_DEVICE`.
    QueryStop,
    /// `IRP_MN_CANCEL_STOP_DEVICE`.
    CancelStop,
    /// A rebalance stop (`IRP_MN_STOP_DEVICE`), preceded by a query-stop unless one is
    /// outstanding; a vetoed query ends the action with the device still started.
    Stop,
}

impl PnpAction {
    /// Every action.
    pub const ALL: [PnpAction; 12] = [
        PnpAction::Start,
        PnpAction::Idle,
        PnpAction::Wake,
        PnpAction::Sleep,
        PnpAction::Resume,
        PnpAction::QueryRemove,
        PnpAction::CancelRemove,
        PnpAction::Remove,
        PnpAction::SurpriseRemove,
        PnpAction::QueryStop,
        PnpAction::CancelStop,
        PnpAction::Stop,
    ];

    /// The action's command-line name, e.g. `surprise-remove`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            PnpAction::Start => "start",
            PnpAction::Idle => "idle",
            PnpAction::Wake => "wake",
            PnpAction::Sleep => "sleep",
            PnpAction::Resume => "resume",
            PnpAction::QueryRemove => "query-remove",
            PnpAction::CancelRemove => "cancel-remove",
            PnpAction::Remove => "remove",
            PnpAction::SurpriseRemove => "surprise-remove",
            PnpAction::QueryStop => "query-stop",
            PnpAction::CancelStop => "cancel-stop",
            PnpAction::Stop => "stop",
        }
    }
}

impl fmt::Display for PnpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`PnpAction`] from an unknown name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownAction(pub String);

impl fmt::Display for UnknownAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown PnP action `{}`; the actions are:", self.0)?;
        for action in PnpAction::ALL {
            write!(f, " {action}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownAction {}

impl std::str::FromStr for PnpAction {
    type Err = UnknownAction;

    fn from_str(name: &str) -> core::result::Result<Self, Self::Err> {
        PnpAction::ALL
            .into_iter()
            .find(|action| action.name() == name)
            .ok_or_else(|| UnknownAction(name.into()))
    }
}

/// Where a device is in its life, as the PnP manager sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// `EvtDriverDeviceAdd` created the device; it has not started.
    Added,
    /// Started, in D0.
    Working,
    /// Started, idle in D3 while the system runs.
    Idle,
    /// Started, in D3 because the system sleeps; `was_idle` says whether it was idle before.
    Asleep {
        /// The device was idle (in D3) when the system went to sleep.
        was_idle: bool,
    },
    /// A query-remove succeeded; the device is in D0 and waits for remove or cancel.
    QueryRemovePending,
    /// A query-stop succeeded; the device is in D0 and waits for stop or cancel.
    QueryStopPending,
    /// Stopped for rebalance: hardware released, waiting to start again.
    Stopped,
    /// The device object is gone (removed, surprise-removed, or torn down after a failure).
    Removed,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Added => "added, not started",
            NodeState::Working => "started in D0",
            NodeState::Idle => "idle in D3",
            NodeState::Asleep { .. } => "asleep in D3",
            NodeState::QueryRemovePending => "query-remove pending",
            NodeState::QueryStopPending => "query-stop pending",
            NodeState::Stopped => "stopped for rebalance",
            NodeState::Removed => "removed",
        })
    }
}

/// Why a PnP action failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PnpError {
    /// The action is not valid in the device's state; nothing was done.
    InvalidAction {
        /// The refused action.
        action: PnpAction,
        /// The state the device is in.
        state: NodeState,
    },
    /// The action ran, and the callback sequence broke one of KMDF's invariants
    /// (kmdf-semantics.md section 3), or the runtime's verifier caught the driver breaking a
    /// rule (a work item or timer running after `SelfManagedIoFlush`).
    InvariantViolated {
        /// The action after which the check failed.
        action: PnpAction,
        /// What was violated.
        violations: Vec<String>,
        /// The device's trace.
        trace: Trace,
    },
}

impl fmt::Display for PnpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PnpError::InvalidAction { action, state } => {
                write!(f, "`{action}` is not valid for a device that is {state}")
            }
            PnpError::InvariantViolated { action, violations, trace } => {
                writeln!(f, "after `{action}`, KMDF invariants were violated:")?;
                for violation in violations {
                    writeln!(f, "  - {violation}")?;
                }
                write!(f, "trace of the device:\n{trace}")
            }
        }
    }
}

impl std::error::Error for PnpError {}

/// The self-managed I/O state machine (section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Smio {
    Created,
    Started,
    Stopped,
    InitFailed,
    Failed,
    Flushed,
    Final,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SmioEvent {
    Start,
    Suspend,
    Flush,
    Cleanup,
}

/// One callback point the framework reached, registered or not, for the invariant checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    callback: Callback,
    ok: bool,
}

/// The model of one device: KMDF's state for it and what happened so far.
pub(crate) struct Machine {
    pub(crate) state: NodeState,
    smio: Option<Smio>,
    /// PrepareHardware was called (even if it failed) and ReleaseHardware not yet.
    owns_hardware: bool,
    events: Vec<Event>,
    /// Where the device's entries start in the runtime's trace.
    trace_start: usize,
}

/// How a failure while powering up or down ends.
#[derive(Clone, Copy)]
enum Teardown {
    /// The start IRP failed: the PnP manager removes the device.
    StartFailed,
    /// The running device failed: a surprise removal, then the remove.
    DeviceFailed,
}

impl Machine {
    /// The model of a device `EvtDriverDeviceAdd` just created; its trace entries start at
    /// `trace_start` (a [`Shared::trace_position`]).
    pub(crate) fn new(device: &CreatedDevice, trace_start: usize) -> Self {
        Self {
            state: NodeState::Added,
            smio: device.callbacks.registered.any_self_managed_io().then_some(Smio::Created),
            owns_hardware: false,
            events: Vec::new(),
            trace_start,
        }
    }

    /// Applies `action`. On return the device is in its new state; when the action tore the
    /// device down, `device` was deleted and taken.
    pub(crate) fn apply(
        &mut self,
        action: PnpAction,
        shared: &Shared,
        node: u64,
        device: &mut Option<CreatedDevice>,
    ) -> core::result::Result<(), PnpError> {
        let invalid = PnpError::InvalidAction { action, state: self.state };
        let Some(created) = device.as_ref() else { return Err(invalid) };
        let mut run = Run { machine: self, shared, node, device: created, removed: false };
        match (action, run.machine.state) {
            (PnpAction::Start, NodeState::Added | NodeState::Stopped) => run.start(),
            (PnpAction::Idle, NodeState::Working) => run.power_down_while_running(false),
            (PnpAction::Wake, NodeState::Idle) => run.wake(NodeState::Working),
            (PnpAction::Sleep, NodeState::Working) => run.power_down_while_running(true),
            (PnpAction::Sleep, NodeState::Idle) => {
                run.machine.state = NodeState::Asleep { was_idle: true };
            }
            (PnpAction::Resume, NodeState::Asleep { was_idle: true }) => {
                run.machine.state = NodeState::Idle;
            }
            (PnpAction::Resume, NodeState::Asleep { was_idle: false }) => {
                run.wake(NodeState::Working);
            }
            (PnpAction::QueryRemove, NodeState::Working | NodeState::Idle) => {
                run.query(Callback::QueryRemove, NodeState::QueryRemovePending);
            }
            (PnpAction::CancelRemove, NodeState::QueryRemovePending)
            | (PnpAction::CancelStop, NodeState::QueryStopPending) => {
                run.machine.state = NodeState::Working;
            }
            (PnpAction::Remove, NodeState::Added) => run.remove(),
            (PnpAction::Remove, NodeState::Working | NodeState::Idle) => {
                if run.query(Callback::QueryRemove, NodeState::QueryRemovePending) {
                    run.orderly_remove();
                }
            }
            (PnpAction::Remove, NodeState::QueryRemovePending) => run.orderly_remove(),
            (
                PnpAction::SurpriseRemove,
                state @ (NodeState::Working
                | NodeState::Idle
                | NodeState::QueryRemovePending
                | NodeState::QueryStopPending
                | NodeState::Stopped),
            ) => run.surprise_remove(state),
            (PnpAction::QueryStop, NodeState::Working | NodeState::Idle) => {
                run.query(Callback::QueryStop, NodeState::QueryStopPending);
            }
            (PnpAction::Stop, NodeState::Working | NodeState::Idle) => {
                if run.query(Callback::QueryStop, NodeState::QueryStopPending) {
                    run.stop();
                }
            }
            (PnpAction::Stop, NodeState::QueryStopPending) => run.stop(),
            _ => return Err(invalid),
        }
        if run.removed {
            if let Some(created) = device.take() {
                created.object.delete();
            }
            self.state = NodeState::Removed;
        }
        let device_trace = || {
            Trace::new(
                shared
                    .trace_from(self.trace_start)
                    .into_iter()
                    .filter(|entry| entry.device == Some(node))
                    .collect(),
            )
        };
        let mut violations = self.check();
        violations.extend(shared.report_findings(node).into_iter().map(|f| f.message));
        if self.state == NodeState::Removed {
            violations.extend(check_object_callbacks(&device_trace()));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(PnpError::InvariantViolated { action, violations, trace: device_trace() })
        }
    }

    /// Checks invariants 1 to 9 of kmdf-semantics.md section 3 over every callback point
    /// reached so far. Invariant 10 (PASSIVE_LEVEL) holds by construction: callbacks run on
    /// the thread applying the action, under the node's action mutex only, so at that
    /// thread's IRQL, which is PASSIVE_LEVEL unless the test itself holds a spin lock.
    /// Invariant 11 is checked per object by [`check_object_callbacks`].
    #[allow(
        clippy::too_many_lines,
        reason = "one replay of the callback log, invariant by invariant"
    )]
    fn check(&self) -> Vec<String> {
        let mut violations = Vec::new();
        let mut fail = |message: String| {
            if !violations.contains(&message) {
                violations.push(message);
            }
        };
        let count = |callback| self.events.iter().filter(|e| e.callback == callback).count();

        // SMIO: 1-5, replayed.
        let mut running = false; // Init or Restart succeeded, no Suspend since
        let mut suspended_ok = false; // the last SMIO callback was a successful Suspend
        let mut init_seen = false;
        let mut flush_seen = false;
        let mut cleanup_seen = false;
        // Power: 6-9.
        let mut in_d0 = false; // a successful D0Entry, no D0Exit since
        let mut post_ok = false; // a successful D0EntryPost, no D0ExitPre since
        let mut hardware = 0_i32;
        for (index, event) in self.events.iter().enumerate() {
            let at = index + 1;
            match event.callback {
                Callback::SelfManagedIoInit => {
                    if init_seen {
                        fail(format!("1: SelfManagedIoInit ran twice (callback {at})"));
                    }
                    if flush_seen || suspended_ok {
                        fail(format!("1: SelfManagedIoInit is not the first SMIO callback ({at})"));
                    }
                    init_seen = true;
                    running = event.ok;
                    suspended_ok = false;
                }
                Callback::SelfManagedIoRestart => {
                    if !suspended_ok {
                        fail(format!(
                            "2: SelfManagedIoRestart without a successful Suspend ({at})"
                        ));
                    }
                    running = event.ok;
                    suspended_ok = false;
                }
                Callback::SelfManagedIoSuspend => {
                    if !running {
                        fail(format!("3: SelfManagedIoSuspend while SMIO is not running ({at})"));
                    }
                    running = false;
                    suspended_ok = event.ok;
                }
                Callback::SelfManagedIoFlush => {
                    if flush_seen {
                        fail(format!("4: SelfManagedIoFlush ran twice ({at})"));
                    }
                    if !init_seen {
                        fail(format!("4: SelfManagedIoFlush without SelfManagedIoInit ({at})"));
                    }
                    if self.state != NodeState::Removed {
                        fail(format!(
                            "4: SelfManagedIoFlush but the device was not removed ({at})"
                        ));
                    }
                    flush_seen = true;
                    running = false;
                    suspended_ok = false;
                }
                Callback::SelfManagedIoCleanup => {
                    if cleanup_seen {
                        fail(format!("5: SelfManagedIoCleanup ran twice ({at})"));
                    }
                    if !flush_seen {
                        fail(format!("5: SelfManagedIoCleanup before SelfManagedIoFlush ({at})"));
                    }
                    cleanup_seen = true;
                }
                Callback::PrepareHardware => hardware += 1,
                Callback::ReleaseHardware => {
                    hardware -= 1;
                    if hardware < 0 {
                        fail(format!("6: ReleaseHardware without PrepareHardware ({at})"));
                    }
                }
                Callback::D0Entry => {
                    if in_d0 {
                        fail(format!("7: D0Entry twice without D0Exit ({at})"));
                    }
                    in_d0 = event.ok;
                }
                Callback::D0EntryPostInterruptsEnabled => post_ok = event.ok,
                Callback::D0ExitPreInterruptsDisabled => {
                    if !post_ok {
                        fail(format!(
                            "8: D0ExitPreInterruptsDisabled without a successful \
                             D0EntryPostInterruptsEnabled ({at})"
                        ));
                    }
                    post_ok = false;
                }
                Callback::D0Exit => {
                    if !in_d0 {
                        fail(format!("7: D0Exit without a successful D0Entry ({at})"));
                    }
                    if running {
                        fail(format!("9: D0Exit while SMIO runs (no Suspend first) ({at})"));
                    }
                    in_d0 = false;
                    post_ok = false;
                }
                _ => {}
            }
        }
        if hardware > 1 {
            fail("6: PrepareHardware twice without ReleaseHardware".into());
        }
        if self.state == NodeState::Removed && hardware != 0 {
            fail("6: the device was removed without ReleaseHardware".into());
        }
        if self.state == NodeState::Removed && in_d0 {
            fail("7: the device was removed in D0 (no D0Exit)".into());
        }
        if count(Callback::SelfManagedIoCleanup) > 0 && self.state != NodeState::Removed {
            fail("5: SelfManagedIoCleanup but the device was not removed".into());
        }
        violations
    }
}

/// Invariant 11 for the device object (its `EvtCleanupCallback` at most once, before its
/// `EvtDestroyCallback`) and the end of invariant 5 (SMIO Cleanup before the device's
/// `EvtCleanupCallback`), over the device's trace.
fn check_object_callbacks(trace: &Trace) -> Vec<String> {
    let device = Some("WDFDEVICE");
    let position = |callback: Callback| {
        trace.entries().iter().position(|e| e.callback == callback && e.args.as_deref() == device)
    };
    let count = |callback: Callback| {
        trace
            .entries()
            .iter()
            .filter(|e| e.callback == callback && e.args.as_deref() == device)
            .count()
    };
    let mut violations = Vec::new();
    if count(Callback::ObjectCleanup) > 1 {
        violations.push("11: the device's EvtCleanupCallback ran more than once".into());
    }
    if count(Callback::ObjectDestroy) > 1 {
        violations.push("11: the device's EvtDestroyCallback ran more than once".into());
    }
    if let (Some(cleanup), Some(destroy)) =
        (position(Callback::ObjectCleanup), position(Callback::ObjectDestroy))
        && destroy < cleanup
    {
        violations
            .push("11: the device's EvtDestroyCallback ran before its EvtCleanupCallback".into());
    }
    let smio_cleanup =
        trace.entries().iter().position(|e| e.callback == Callback::SelfManagedIoCleanup);
    if let (Some(smio), Some(cleanup)) = (smio_cleanup, position(Callback::ObjectCleanup))
        && cleanup < smio
    {
        violations
            .push("5: the device's EvtCleanupCallback ran before SelfManagedIoCleanup".into());
    }
    violations
}

/// One action in progress.
struct Run<'a> {
    machine: &'a mut Machine,
    shared: &'a Shared,
    node: u64,
    device: &'a CreatedDevice,
    /// The device was torn down; the caller deletes the object.
    removed: bool,
}

impl Run<'_> {
    /// Calls one PnP/power callback if the driver registered it (KMDF skips NULL ones, which
    /// count as success), and logs the point for the checks.
    fn call(&mut self, call: PnpCall) -> Result {
        let callback = call.callback();
        let result = if self.device.callbacks.registered.contains(callback) {
            let args = call.power_state().map(|state| format!("{state}"));
            let object = &self.device.object;
            let dispatch = self.device.callbacks.dispatch;
            if call.returns_status() {
                self.shared.invoke(callback, args, Some(self.node), || dispatch(object, call))
            } else {
                // Returns nothing in KMDF: even a panic cannot change what follows.
                self.shared.invoke_void(callback, args, Some(self.node), || {
                    let _ = dispatch(object, call);
                });
                Ok(())
            }
        } else {
            Ok(())
        };
        self.machine.events.push(Event { callback, ok: result.is_ok() });
        result
    }

    /// Sends an event to the self-managed I/O machine (section 3's table).
    fn smio(&mut self, event: SmioEvent) -> Result {
        let Some(state) = self.machine.smio else { return Ok(()) };
        let (call, ok, failed) = match (state, event) {
            (Smio::Created, SmioEvent::Start) => {
                (PnpCall::SelfManagedIoInit, Smio::Started, Smio::InitFailed)
            }
            (Smio::Stopped, SmioEvent::Start) => {
                (PnpCall::SelfManagedIoRestart, Smio::Started, Smio::Failed)
            }
            (Smio::Started, SmioEvent::Suspend) => {
                (PnpCall::SelfManagedIoSuspend, Smio::Stopped, Smio::Failed)
            }
            (Smio::Stopped | Smio::InitFailed | Smio::Failed, SmioEvent::Flush) => {
                (PnpCall::SelfManagedIoFlush, Smio::Flushed, Smio::Flushed)
            }
            (Smio::Flushed, SmioEvent::Cleanup) => {
                (PnpCall::SelfManagedIoCleanup, Smio::Final, Smio::Final)
            }
            // Created + Flush/Cleanup, and any other pair: no callback, event dropped.
            _ => return Ok(()),
        };
        let result = self.call(call);
        self.machine.smio = Some(if result.is_ok() { ok } else { failed });
        if call == PnpCall::SelfManagedIoFlush {
            self.shared.note_flushed(self.node);
        }
        result
    }

    /// `start`: PrepareHardware, then the power-up from D3Final.
    fn start(&mut self) {
        self.machine.owns_hardware = true;
        if self.call(PnpCall::PrepareHardware).is_err() {
            return self.teardown(Teardown::StartFailed);
        }
        match self.power_up(DevicePowerState::D3Final) {
            Ok(()) => self.machine.state = NodeState::Working,
            Err(()) => self.teardown(Teardown::StartFailed),
        }
    }

    /// D0Entry, D0EntryPost, SMIO Init/Restart; on a failure, undoes what the failure path
    /// of section 2 undoes and returns `Err`.
    fn power_up(&mut self, previous: DevicePowerState) -> core::result::Result<(), ()> {
        if self.call(PnpCall::D0Entry(previous)).is_err() {
            return Err(());
        }
        if self.call(PnpCall::D0EntryPostInterruptsEnabled(previous)).is_err() {
            let _ = self.call(PnpCall::D0Exit(DevicePowerState::D3Final));
            return Err(());
        }
        if self.smio(SmioEvent::Start).is_err() {
            let _ = self.call(PnpCall::D0ExitPreInterruptsDisabled(DevicePowerState::D3Final));
            let _ = self.call(PnpCall::D0Exit(DevicePowerState::D3Final));
            return Err(());
        }
        Ok(())
    }

    /// SMIO Suspend, D0ExitPre, D0Exit; a failure does not stop the power-down.
    fn power_down(&mut self, target: DevicePowerState) -> Result {
        let suspend = self.smio(SmioEvent::Suspend);
        let pre = self.call(PnpCall::D0ExitPreInterruptsDisabled(target));
        let exit = self.call(PnpCall::D0Exit(target));
        suspend.and(pre).and(exit)
    }

    /// `idle` or `sleep` from D0.
    fn power_down_while_running(&mut self, sleep: bool) {
        match self.power_down(DevicePowerState::D3) {
            Ok(()) if sleep => self.machine.state = NodeState::Asleep { was_idle: false },
            Ok(()) => self.machine.state = NodeState::Idle,
            Err(_) => {
                // D0Exit ran: the device is off; it is failed with its hardware still owned.
                self.teardown(Teardown::DeviceFailed);
            }
        }
    }

    /// Back to D0 from D3 (wake, resume, or the wake-up a query forces).
    fn wake(&mut self, then: NodeState) {
        match self.power_up(DevicePowerState::D3) {
            Ok(()) => self.machine.state = then,
            Err(()) => self.teardown(Teardown::DeviceFailed),
        }
    }

    /// `query-remove` or `query-stop`: asks the driver, then makes sure the device is in D0.
    /// Returns whether the query succeeded (and the device is still there).
    fn query(&mut self, callback: Callback, pending: NodeState) -> bool {
        let call = if callback == Callback::QueryRemove {
            PnpCall::QueryRemove
        } else {
            PnpCall::QueryStop
        };
        if self.call(call).is_err() {
            return false; // vetoed: nothing else, the device stays as it was
        }
        if self.machine.state == NodeState::Idle {
            self.wake(pending);
        } else {
            self.machine.state = pending;
        }
        !self.removed
    }

    /// The orderly removal of a started device whose query-remove succeeded.
    fn orderly_remove(&mut self) {
        let _ = self.power_down(DevicePowerState::D3Final);
        self.release_hardware();
        let _ = self.smio(SmioEvent::Flush);
        self.remove();
    }

    /// The remove IRP: SMIO Cleanup, then the device object is deleted (by the caller).
    fn remove(&mut self) {
        let _ = self.smio(SmioEvent::Cleanup);
        self.removed = true;
    }

    fn surprise_remove(&mut self, state: NodeState) {
        let _ = self.call(PnpCall::SurpriseRemoval);
        match state {
            NodeState::Working | NodeState::QueryRemovePending | NodeState::QueryStopPending => {
                let _ = self.power_down(DevicePowerState::D3Final);
                self.release_hardware();
            }
            NodeState::Idle => self.release_hardware(),
            _ => {}
        }
        let _ = self.smio(SmioEvent::Flush);
        self.remove();
    }

    /// The rebalance stop of a device whose query-stop succeeded.
    fn stop(&mut self) {
        if self.power_down(DevicePowerState::D3Final).is_err() {
            return self.teardown(Teardown::DeviceFailed);
        }
        self.machine.owns_hardware = false;
        if self.call(PnpCall::ReleaseHardware).is_err() {
            return self.teardown(Teardown::DeviceFailed);
        }
        self.machine.state = NodeState::Stopped;
    }

    fn release_hardware(&mut self) {
        if std::mem::take(&mut self.machine.owns_hardware) {
            // A failure is ignored during removal (section 2).
            let _ = self.call(PnpCall::ReleaseHardware);
        }
    }

    /// The failure paths of section 2, down to the device object's deletion.
    fn teardown(&mut self, how: Teardown) {
        self.release_hardware();
        let _ = self.smio(SmioEvent::Flush);
        if let Teardown::DeviceFailed = how {
            let _ = self.call(PnpCall::SurpriseRemoval);
        }
        self.remove();
    }
}

/// Whether a failure with `status` can be injected into `callback`: only fallible callbacks
/// can fail, and only with a failure status.
#[allow(clippy::needless_pass_by_value, reason = "NtStatus is a Copy i32")]
pub(crate) fn check_injectable(callback: Callback, status: NtStatus) -> Result {
    let fallible = matches!(
        callback,
        Callback::DriverEntry
            | Callback::DriverDeviceAdd
            | Callback::PrepareHardware
            | Callback::ReleaseHardware
            | Callback::D0Entry
            | Callback::D0EntryPostInterruptsEnabled
            | Callback::D0ExitPreInterruptsDisabled
            | Callback::D0Exit
            | Callback::QueryRemove
            | Callback::QueryStop
            | Callback::SelfManagedIoInit
            | Callback::SelfManagedIoSuspend
            | Callback::SelfManagedIoRestart
    );
    if fallible && status.is_failure() { Ok(()) } else { Err(NtStatus::INVALID_PARAMETER) }
}

#[cfg(test)]
mod tests {
    use super::std;
    use super::{Callback, Event, Machine, NodeState};
    use std::vec::Vec;

    /// The checker over a hand-written sequence of (callback, succeeded) points.
    fn check(state: NodeState, points: &[(Callback, bool)]) -> Vec<std::string::String> {
        let machine = Machine {
            state,
            smio: None,
            owns_hardware: false,
            events: points.iter().map(|&(callback, ok)| Event { callback, ok }).collect(),
            trace_start: 0,
        };
        machine.check()
    }

    fn violates(state: NodeState, points: &[(Callback, bool)], invariant: &str) {
        let violations = check(state, points);
        assert!(
            violations.iter().any(|v| v.starts_with(invariant)),
            "expected a violation of {invariant}, got {violations:?}"
        );
    }

    use Callback::{
        D0Entry, D0EntryPostInterruptsEnabled as Post, D0Exit, D0ExitPreInterruptsDisabled as Pre,
        PrepareHardware, ReleaseHardware, SelfManagedIoCleanup as Cleanup,
        SelfManagedIoFlush as Flush, SelfManagedIoInit as Init, SelfManagedIoRestart as Restart,
        SelfManagedIoSuspend as Suspend,
    };

    #[test]
    fn a_correct_life_passes() {
        let life = [
            (PrepareHardware, true),
            (D0Entry, true),
            (Post, true),
            (Init, true),
            (Suspend, true),
            (Pre, true),
            (D0Exit, true),
            (ReleaseHardware, true),
            (Flush, true),
            (Cleanup, true),
        ];
        assert_eq!(check(NodeState::Removed, &life), Vec::<std::string::String>::new());
    }

    #[test]
    fn each_invariant_can_fail() {
        let working = NodeState::Working;
        violates(working, &[(Init, true), (Suspend, true), (Restart, true), (Init, true)], "1:");
        violates(working, &[(Init, true), (Restart, true)], "2:");
        violates(working, &[(Init, true), (Suspend, false), (Restart, true)], "2:");
        violates(working, &[(Init, false), (Suspend, true)], "3:");
        violates(working, &[(Init, true), (Suspend, true), (Suspend, true)], "3:");
        violates(
            NodeState::Removed,
            &[(Init, true), (Suspend, true), (Flush, true), (Flush, true)],
            "4:",
        );
        violates(NodeState::Removed, &[(Flush, true)], "4:");
        violates(working, &[(Init, true), (Suspend, true), (Flush, true)], "4:");
        violates(NodeState::Removed, &[(Init, false), (Cleanup, true)], "5:");
        violates(working, &[(ReleaseHardware, true)], "6:");
        violates(NodeState::Removed, &[(PrepareHardware, true)], "6:");
        violates(working, &[(D0Exit, true)], "7:");
        violates(working, &[(D0Entry, false), (D0Exit, true)], "7:");
        violates(working, &[(D0Entry, true), (D0Entry, true)], "7:");
        violates(working, &[(D0Entry, true), (Pre, true)], "8:");
        violates(working, &[(D0Entry, true), (Post, false), (Pre, true)], "8:");
        violates(
            working,
            &[(D0Entry, true), (Post, true), (Init, true), (Pre, true), (D0Exit, true)],
            "9:",
        );
    }

    #[test]
    fn violations_name_the_invariant_and_the_callbacks_position() {
        use std::string::String;
        let working = NodeState::Working;
        // Positions count from 1 over the callback points reached.
        assert_eq!(
            check(working, &[(D0Exit, true)]),
            ["7: D0Exit without a successful D0Entry (1)"]
        );
        assert_eq!(
            check(working, &[(D0Entry, true), (Post, true), (Pre, true), (Pre, true)]),
            [String::from(
                "8: D0ExitPreInterruptsDisabled without a successful D0EntryPostInterruptsEnabled (4)"
            )]
        );
        // Init after a Flush is not the first SMIO callback, even with no Init before it.
        let late_init = check(NodeState::Removed, &[(Flush, true), (Init, true)]);
        assert!(
            late_init
                .iter()
                .any(|v| v == "1: SelfManagedIoInit is not the first SMIO callback (2)"),
            "{late_init:?}"
        );
        // Cleanup on a device that was not removed.
        let early =
            check(working, &[(Init, true), (Suspend, true), (Flush, true), (Cleanup, true)]);
        assert!(
            early.iter().any(|v| v == "5: SelfManagedIoCleanup but the device was not removed"),
            "{early:?}"
        );
    }

    /// A trace of the device's object callbacks (and SMIO Cleanup), for invariant 11.
    fn objects(entries: &[(Callback, &str)]) -> super::Trace {
        super::Trace::new(
            entries
                .iter()
                .map(|&(callback, args)| super::super::trace::TraceEntry {
                    callback,
                    args: (!args.is_empty()).then(|| args.into()),
                    status: None,
                    device: Some(1),
                    injected: false,
                    panicked: false,
                })
                .collect(),
        )
    }

    #[test]
    fn the_object_callback_check_looks_at_the_device_object_only() {
        use super::check_object_callbacks;
        use Callback::{ObjectCleanup, ObjectDestroy};
        let (item, device) = ("WDFWORKITEM", "WDFDEVICE");
        // The removal of a device with a work item, in KMDF's order: clean.
        let removal = [
            (ObjectCleanup, item),
            (Cleanup, ""),
            (ObjectCleanup, device),
            (ObjectDestroy, device),
            (ObjectDestroy, item),
        ];
        assert!(check_object_callbacks(&objects(&removal)).is_empty());
        // Each rule of invariant 11, and the end of invariant 5, alone.
        assert_eq!(
            check_object_callbacks(&objects(&[
                (ObjectCleanup, device),
                (ObjectCleanup, device),
                (ObjectDestroy, device)
            ])),
            ["11: the device's EvtCleanupCallback ran more than once"]
        );
        assert_eq!(
            check_object_callbacks(&objects(&[(ObjectDestroy, device), (ObjectCleanup, device)])),
            ["11: the device's EvtDestroyCallback ran before its EvtCleanupCallback"]
        );
        assert_eq!(
            check_object_callbacks(&objects(&[(ObjectCleanup, device), (Cleanup, "")])),
            ["5: the device's EvtCleanupCallback ran before SelfManagedIoCleanup"]
        );
    }
}
