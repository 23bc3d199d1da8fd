//! The model: KMDF's PnP, power and self-managed I/O state machines for one device.
//!
//! The model follows the KMDF source (`pnpstatemachine.cpp`, `powerstatemachine.cpp`,
//! `selfmanagediostatemachine.cpp`):
//!
//! * Power-up (start, wake, resume, the wake-up that query-remove and query-stop force):
//!   `D0Entry`, `D0EntryPostInterruptsEnabled`, then self-managed I/O Init (first start) or
//!   Restart. A failed `D0Entry` gets no `D0Exit`; a failed `D0EntryPost` gets `D0Exit`
//!   without `D0ExitPre`; a failed Init/Restart gets `D0ExitPre` and `D0Exit` (`D3Final`)
//!   without Suspend.
//! * Power-down (idle, sleep, stop, remove, surprise removal in D0): self-managed I/O
//!   Suspend, `D0ExitPre`, `D0Exit`. A failure does not stop the power-down.
//! * A failure before any start completed (the first start IRP fails) makes the PnP manager
//!   remove the device: `ReleaseHardware`, self-managed I/O Flush and Cleanup, object
//!   cleanup. Any later failure (idle, wake, sleep, resume, stop, and the start that follows a
//!   rebalance stop) fails a device that ran (`PnpEventFailedPowerPolicyRemoved` invalidates
//!   its state), so the PnP manager sends a surprise removal that arrives after the teardown
//!   (`PnpEventFailedSurpriseRemoved`): `ReleaseHardware`, Flush, `SurpriseRemoval`, Cleanup,
//!   object cleanup. `Run::fail` is the one place that decides.
//! * A failed power-up that a query-remove or query-stop forces on an idle device does not
//!   fail the query (`FxPowerIdleMachine::PowerFailed` still reports D0): the device waits in
//!   the query's pending state, off and failed. A remove then runs the remove tail without a
//!   power-down or surprise removal; a cancel leaves it [`NodeState::Failed`] until the
//!   surprise removal, which runs `SurpriseRemoval`, then the tail.
//! * The cancels are taken in the started state with no callback, also after a vetoed query
//!   (`m_PnpStartedOtherStates`: `StartedCancelRemove`, `StartedCancelStop`).
//! * The self-managed I/O machine exists only when the driver registered one of its
//!   callbacks (`fxpkgpnp.cpp: RegisterCallbacks`); its transitions are the table of
//!   section 3, and events it does not expect are dropped.
//!
//! The model checks nothing: it logs each callback point it reaches ([`Event`]) for the
//! [`checker`](super::checker), which reads the log after the action.

use super::super::std;
use std::format;
use std::vec::Vec;

use super::super::device::{CreatedDevice, PnpCall};
use super::super::policy::PowerPolicy;
use super::super::shared::Shared;
use super::super::trace::TraceEntry;
use super::{NodeState, PnpAction, PnpError};
use crate::{Callback, DevicePowerState, Result};

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

/// What a device in Dx is armed to wake from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Armed {
    /// `EvtDeviceArmWakeFromS0` succeeded before the idle power-down.
    S0,
    /// `EvtDeviceArmWakeFromSx` succeeded before the sleep power-down.
    Sx,
}

/// One callback point the framework reached, registered or not, for the invariant checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    pub(crate) callback: Callback,
    /// The callback succeeded (or returns nothing, or was not registered).
    pub(crate) ok: bool,
}

/// The model of one device: KMDF's state for it and what happened so far.
#[allow(clippy::struct_excessive_bools, reason = "independent facts KMDF keeps as flags too")]
pub(crate) struct Machine {
    pub(crate) state: NodeState,
    smio: Option<Smio>,
    /// PrepareHardware was called (even if it failed) and ReleaseHardware not yet.
    owns_hardware: bool,
    /// A start completed: from now on a failure fails a running device (a late surprise
    /// removal) instead of failing a start IRP.
    started_once: bool,
    /// A power-up that a query-remove or query-stop forced failed
    /// (`FxPowerIdleMachine::PowerFailed`): the device is off and failed, but the query
    /// succeeded; what follows runs without a power-down.
    power_failed: bool,
    /// What the device is armed for while in Dx (docs/kmdf-behaviour.md section 10).
    armed: Option<Armed>,
    /// The armed device signalled wake; its power-up reports it (`WakeFrom*Triggered`).
    wake_signalled: bool,
    /// The low-power state the device is in while idle or asleep: what `D0Entry` gets.
    dx: DevicePowerState,
    events: Vec<Event>,
    /// Where the device's entries start in the runtime's trace.
    pub(crate) trace_start: usize,
}

impl Machine {
    /// The model of a device `EvtDriverDeviceAdd` just created; its trace entries start at
    /// `trace_start` (a [`Shared::trace_position`]).
    pub(crate) fn new(device: &CreatedDevice, trace_start: usize) -> Self {
        Self {
            state: NodeState::Added,
            smio: device
                .state()
                .callbacks
                .registered
                .any_self_managed_io()
                .then_some(Smio::Created),
            owns_hardware: false,
            started_once: false,
            power_failed: false,
            armed: None,
            wake_signalled: false,
            dx: DevicePowerState::D3,
            events: Vec::new(),
            trace_start,
        }
    }

    /// The callback points reached so far, oldest first: the checker's input.
    pub(crate) fn events(&self) -> &[Event] {
        &self.events
    }

    /// Applies `action`. On return the device is in its new state; when the action tore the
    /// device down, `device` was deleted and taken. The caller then runs the checker.
    ///
    /// # Errors
    ///
    /// [`PnpError::InvalidAction`] when the device's state does not allow `action`: nothing
    /// was called and nothing changed.
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
            // A start of a started device (new resources, `PNP_RESOURCE_REQUIREMENTS_CHANGED`):
            // `m_PnpStartedOtherStates` -> `PnpEventRestart`.
            (PnpAction::Start, state @ (NodeState::Working | NodeState::Idle)) => {
                run.restart(state);
            }
            // The failed device of a failed forced power-up: the driver is asked, then the
            // power reference the query takes fails (`FxPowerIdleMachine::IoIncrementWithFlags`
            // with `FxPowerIdlePowerFailed`), which fails the query: nothing else changes.
            (PnpAction::QueryRemove | PnpAction::Remove, NodeState::Failed) => {
                let _ = run.call(PnpCall::QueryRemove);
            }
            (PnpAction::QueryStop | PnpAction::Stop, NodeState::Failed) => {
                let _ = run.call(PnpCall::QueryStop);
            }
            (PnpAction::Idle, NodeState::Working) => run.power_down_while_running(false),
            (PnpAction::Wake, NodeState::Idle) => run.wake(NodeState::Working),
            (PnpAction::Sleep, NodeState::Working) => run.power_down_while_running(true),
            (PnpAction::Sleep, NodeState::Idle) => run.sleep_while_idle(),
            (PnpAction::Resume, NodeState::Asleep { was_idle }) => run.resume(was_idle),
            (PnpAction::SignalWake, NodeState::Idle) if run.machine.armed == Some(Armed::S0) => {
                run.machine.wake_signalled = true;
                run.wake(NodeState::Working);
            }
            (PnpAction::SignalWake, NodeState::Asleep { .. })
                if run.machine.armed == Some(Armed::Sx) =>
            {
                run.machine.wake_signalled = true;
            }
            (PnpAction::QueryRemove, NodeState::Working | NodeState::Idle) => {
                run.query(Callback::QueryRemove, NodeState::QueryRemovePending);
            }
            (PnpAction::CancelRemove, NodeState::QueryRemovePending)
            | (PnpAction::CancelStop, NodeState::QueryStopPending) => run.cancel_query(),
            // The PnP manager cancels a query that a driver vetoed too; KMDF's started state
            // takes the cancel without a driver callback (`m_PnpStartedOtherStates`:
            // StartedCancelRemove, StartedCancelStop). A device never started takes a
            // query-remove and its cancel without a callback (`m_PnpInitOtherStates` ->
            // `PnpEventInitQueryRemove`, `PnpEventInitQueryRemoveCanceled`); a remove then
            // deletes it as from `Added`.
            (
                PnpAction::CancelRemove | PnpAction::CancelStop,
                NodeState::Working | NodeState::Idle | NodeState::Failed,
            )
            | (PnpAction::QueryRemove | PnpAction::CancelRemove, NodeState::Added) => {}
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
                | NodeState::Stopped
                | NodeState::Failed),
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
        Ok(())
    }
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

impl<'a> Run<'a> {
    /// Calls one PnP/power callback if the driver registered it (KMDF skips NULL ones, which
    /// count as success), and logs the point for the checks.
    fn call(&mut self, call: PnpCall) -> Result {
        let callback = call.callback();
        let state = self.device.state();
        let result = if state.callbacks.registered.contains(callback) {
            let mut entry = TraceEntry::new(callback, Some(self.node));
            if let Some(power) = call.power_state() {
                entry = entry.with_args(format!("{power}"));
            }
            let object = &self.device.object;
            let dispatch = state.callbacks.dispatch;
            let resources = &*state.resources;
            if call.returns_status() {
                self.shared.invoke(entry, || dispatch(object, call, resources))
            } else {
                // Returns nothing in KMDF: even a panic cannot change what follows.
                self.shared.invoke_void(entry, || {
                    let _ = dispatch(object, call, resources);
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

    /// `start`: PrepareHardware, then the power-up from D3Final. The first start or a start
    /// after a rebalance stop; a failure takes [`fail`](Self::fail)'s path for each.
    fn start(&mut self) {
        self.machine.owns_hardware = true;
        if self.call(PnpCall::PrepareHardware).is_err() {
            return self.fail();
        }
        // The power policy starts with the power-up (`PowerPolStarting`).
        self.policy().set_started(true);
        match self.power_up(DevicePowerState::D3Final) {
            Ok(()) => {
                self.machine.state = NodeState::Working;
                self.machine.started_once = true;
                // The end of the first start enables the device interfaces
                // (`PnpEventEnableInterfaces`); a later start enables nothing.
                self.io().first_start_done();
            }
            Err(()) => self.fail(),
        }
    }

    /// The restart of a started device (`PnpEventRestart`): power policy stops it as for a
    /// rebalance, without a query (an idle device is first brought back to D0,
    /// `PwrPolStoppingResetDevice`), it releases its hardware
    /// (`PnpEventRestartReleaseHardware`), then starts again with the new resources
    /// (`PnpEventRestartHardwareAvailable`): PrepareHardware, D0Entry(D3Final), SmioRestart.
    fn restart(&mut self, state: NodeState) {
        if state == NodeState::Idle && self.power_up(self.machine.dx).is_err() {
            return self.fail();
        }
        if self.power_down(DevicePowerState::D3Final).is_err() {
            return self.fail();
        }
        self.machine.owns_hardware = false;
        if self.call(PnpCall::ReleaseHardware).is_err() {
            return self.fail();
        }
        self.start();
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
        self.disarm();
        self.policy().set_in_dx(false);
        // `IoResume`: the power-managed queues resume after the disarming, before SMIO
        // Init/Restart.
        self.io().power_up();
        if self.smio(SmioEvent::Start).is_err() {
            // `IoStop` again, before the power-down of the failure (section 2's table).
            self.io().power_down();
            let _ = self.call(PnpCall::D0ExitPreInterruptsDisabled(DevicePowerState::D3Final));
            let _ = self.call(PnpCall::D0Exit(DevicePowerState::D3Final));
            return Err(());
        }
        Ok(())
    }

    /// The device's power policy.
    fn policy(&self) -> &'a PowerPolicy {
        &self.device.state().power_policy
    }

    /// Back in D0 (after `D0EntryPost`), a device that was armed is disarmed, after the
    /// wake-triggered callback when its wake signal brought it back (section 10).
    fn disarm(&mut self) {
        let signalled = std::mem::take(&mut self.machine.wake_signalled);
        match self.machine.armed.take() {
            Some(Armed::S0) => {
                if signalled {
                    let _ = self.call(PnpCall::WakeFromS0Triggered);
                }
                let _ = self.call(PnpCall::DisarmWakeFromS0);
            }
            Some(Armed::Sx) => {
                if signalled {
                    let _ = self.call(PnpCall::WakeFromSxTriggered);
                }
                let _ = self.call(PnpCall::DisarmWakeFromSx);
            }
            None => {}
        }
    }

    /// SMIO Suspend, D0ExitPre, D0Exit; a failure does not stop the power-down.
    fn power_down(&mut self, target: DevicePowerState) -> Result {
        self.power_down_arming(target, None).0
    }

    /// SMIO Suspend, the arming for wake if `arm` (section 10: after Suspend, before
    /// D0ExitPre), D0ExitPre, D0Exit to `target` (or D3 when arming for Sx failed). Returns
    /// the power-down's result and what the device is armed for.
    fn power_down_arming(
        &mut self,
        target: DevicePowerState,
        arm: Option<Armed>,
    ) -> (Result, Option<Armed>) {
        let suspend = self.smio(SmioEvent::Suspend);
        // `IoStop`: the power-managed queues stop right after SMIO Suspend, before the
        // arming for wake.
        self.io().power_down();
        let mut target = target;
        let armed = match arm {
            Some(Armed::S0) => self.call(PnpCall::ArmWakeFromS0).is_ok().then_some(Armed::S0),
            Some(Armed::Sx) => {
                if self.call(PnpCall::ArmWakeFromSx).is_ok() {
                    Some(Armed::Sx)
                } else {
                    // `PowerPolSleepingWakeRevertArmWake`: disarmed, then sleeps unarmed.
                    let _ = self.call(PnpCall::DisarmWakeFromSx);
                    target = DevicePowerState::D3;
                    None
                }
            }
            None => None,
        };
        let pre = self.call(PnpCall::D0ExitPreInterruptsDisabled(target));
        let exit = self.call(PnpCall::D0Exit(target));
        self.machine.dx = target;
        (suspend.and(pre).and(exit), armed)
    }

    /// `idle` or `sleep` from D0, armed for wake as the power policy says (section 10).
    fn power_down_while_running(&mut self, sleep: bool) {
        let policy = self.policy();
        let (target, arm) = if sleep {
            match policy.sx() {
                Some(sx) if sx.enabled => (sx.dx, Some(Armed::Sx)),
                _ => (DevicePowerState::D3, None),
            }
        } else {
            match policy.s0() {
                Some(s0) => (s0.dx, s0.can_wake.then_some(Armed::S0)),
                None => (DevicePowerState::D3, None),
            }
        };
        let (result, armed) = self.power_down_arming(target, arm);
        if result.is_err() {
            // D0Exit ran: the device is off; it is failed with its hardware still owned.
            return self.fail();
        }
        self.machine.armed = armed;
        self.policy().set_in_dx(true);
        if sleep {
            self.machine.state = NodeState::Asleep { was_idle: false };
        } else if arm.is_some() && armed.is_none() {
            // `EvtDeviceArmWakeFromS0` failed: not a device failure; the power-down
            // finishes and the device comes straight back (section 10).
            self.wake(NodeState::Working);
        } else {
            self.machine.state = NodeState::Idle;
        }
    }

    /// Back to D0 from the low-power state (wake, resume, a wake signal).
    fn wake(&mut self, then: NodeState) {
        match self.power_up(self.machine.dx) {
            Ok(()) => self.machine.state = then,
            Err(()) => self.fail(),
        }
    }

    /// `sleep` of an idle device (section 10): armed for S0, or armable for Sx, it comes
    /// back to D0 first, then takes the Sx power-down; otherwise it sleeps where it is.
    fn sleep_while_idle(&mut self) {
        let armable_sx = self.policy().sx().is_some_and(|sx| sx.enabled);
        if self.machine.armed == Some(Armed::S0) || armable_sx {
            if self.power_up(self.machine.dx).is_err() {
                return self.fail();
            }
            self.machine.state = NodeState::Working;
            self.power_down_while_running(true);
        } else {
            self.machine.state = NodeState::Asleep { was_idle: true };
        }
    }

    /// `resume` (section 10): a device armed for Sx comes back to D0 and is disarmed; an
    /// unarmed one stays in Dx when its S0 idle policy would idle it anyway
    /// (`PowerPolSystemWakeQueryIdle`: idle enabled, cannot wake from S0, no power-up on
    /// system wake, no power reference), else it comes back to D0. Without S0 idle settings
    /// the runtime keeps the hand-applied model: an idle device stays idle.
    fn resume(&mut self, was_idle: bool) {
        let policy = self.policy();
        let stays = self.machine.armed.is_none()
            && match policy.s0() {
                None => was_idle,
                Some(s0) => {
                    s0.enabled
                        && !s0.can_wake
                        && !s0.power_up_on_system_wake
                        && !policy.referenced()
                }
            };
        if stays {
            self.machine.state = NodeState::Idle;
        } else {
            self.wake(NodeState::Working);
        }
    }

    /// `query-remove` or `query-stop`: asks the driver, then makes sure the device is in D0.
    /// Returns whether the query succeeded.
    ///
    /// A failure of the power-up the query forces does not fail the query: KMDF's idle
    /// machine reports the device in D0 even then (`FxPowerIdleMachine::PowerFailed` sends
    /// the D0 notification), so the PnP machine leaves `Pnp*EnsureDeviceAwake` for the
    /// pending state, and the power-up failure it is sent later is dropped there
    /// (`m_PnpQueryRemovePendingOtherStates` has no entry for `PnpEventPowerUpFailed`). The
    /// device is left off and failed ([`Machine::power_failed`]).
    fn query(&mut self, callback: Callback, pending: NodeState) -> bool {
        let call = if callback == Callback::QueryRemove {
            PnpCall::QueryRemove
        } else {
            PnpCall::QueryStop
        };
        if self.call(call).is_err() {
            return false; // vetoed: nothing else, the device stays as it was
        }
        if self.machine.state == NodeState::Idle && self.power_up(self.machine.dx).is_err() {
            self.machine.power_failed = true;
        }
        self.machine.state = pending;
        true
    }

    /// `cancel-remove` or `cancel-stop` of a query that succeeded: no driver callback
    /// (`PnpEventQueryCanceled`). A device whose forced power-up failed goes back to the
    /// started state failed, and waits for the surprise removal the PnP manager sends for
    /// a failed device.
    fn cancel_query(&mut self) {
        self.machine.state =
            if self.machine.power_failed { NodeState::Failed } else { NodeState::Working };
    }

    /// The orderly removal of a started device whose query-remove succeeded (the remove
    /// tail: no power-down when the device is already off after a failed power-up).
    fn orderly_remove(&mut self) {
        self.policy().set_started(false);
        if !self.machine.power_failed {
            let _ = self.power_down(DevicePowerState::D3Final);
        }
        self.flush_for_removal();
        self.remove();
    }

    /// The removal's part up to SMIO Flush: ReleaseHardware, the interfaces disabled, the
    /// power-managed queues purged, SMIO Flush (`PnpCleanupForRemove`), then the verifier's
    /// check that the driver owns none of their requests.
    fn flush_for_removal(&mut self) {
        self.release_hardware();
        self.io().disable_interfaces();
        self.io().purge_for_removal(true);
        let _ = self.smio(SmioEvent::Flush);
        self.io().check_after_flush();
    }

    /// The remove IRP: the queues not purged yet (the non-power-managed ones) are purged,
    /// SMIO Cleanup, then the device object is deleted (by the caller).
    fn remove(&mut self) {
        self.policy().set_started(false);
        let io = std::sync::Arc::clone(self.io());
        io.disable_interfaces();
        io.purge_for_removal(true);
        io.purge_for_removal(false);
        let _ = self.smio(SmioEvent::Cleanup);
        io.mark_removed();
        self.removed = true;
    }

    /// The device's I/O package.
    fn io(&self) -> &std::sync::Arc<super::super::io::IoPackage> {
        &self.device.state().io
    }

    /// `IRP_MN_SURPRISE_REMOVAL` (the callback first: `PnpEventSurpriseRemoveIoStarted`),
    /// the power-down of a device in D0, then the remove IRP.
    fn surprise_remove(&mut self, state: NodeState) {
        self.policy().set_started(false);
        let _ = self.call(PnpCall::SurpriseRemoval);
        let in_d0 = matches!(
            state,
            NodeState::Working | NodeState::QueryRemovePending | NodeState::QueryStopPending
        ) && !self.machine.power_failed;
        if in_d0 {
            let _ = self.power_down(DevicePowerState::D3Final);
        }
        self.flush_for_removal();
        self.remove();
    }

    /// The rebalance stop of a device whose query-stop succeeded. A device whose forced
    /// power-up failed is already off: it releases its hardware, then is removed as a failed
    /// device (KMDF set `m_InternalFailure` when the power-up failed).
    fn stop(&mut self) {
        self.policy().set_started(false);
        if !self.machine.power_failed && self.power_down(DevicePowerState::D3Final).is_err() {
            return self.fail();
        }
        self.machine.owns_hardware = false;
        if self.call(PnpCall::ReleaseHardware).is_err() || self.machine.power_failed {
            return self.fail();
        }
        self.machine.state = NodeState::Stopped;
    }

    fn release_hardware(&mut self) {
        if std::mem::take(&mut self.machine.owns_hardware) {
            // A failure is ignored during removal (section 2).
            let _ = self.call(PnpCall::ReleaseHardware);
        }
    }

    /// The failure paths of section 2, down to the device object's deletion. Which one is
    /// decided here and only here: a failure before any start completed fails the start IRP
    /// (the PnP manager removes the device directly, no surprise removal); any later failure
    /// (idle, wake, sleep, resume, stop, or the start that follows a stop) fails a device
    /// that ran, which KMDF reports with `IoInvalidateDeviceState`
    /// (`PnpEventFailedPowerPolicyRemoved`), so the PnP manager sends a surprise removal that
    /// arrives after the teardown (`PnpEventFailedSurpriseRemoved`).
    fn fail(&mut self) {
        self.policy().set_started(false);
        self.flush_for_removal();
        if self.machine.started_once {
            let _ = self.call(PnpCall::SurpriseRemoval);
        }
        self.remove();
    }
}
