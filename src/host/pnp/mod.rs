//! The PnP manager's actions on a device, and what can go wrong with them.
//!
//! Each [`PnpAction`] applied to a [`DeviceNode`](super::DeviceNode) produces exactly the
//! driver callbacks KMDF would invoke (docs/kmdf-behaviour.md section 1), including the failure
//! paths of section 2: a failure that tears the device down runs the whole teardown, down
//! to the device object's deletion, within the action that hit it. An action the device's
//! state does not allow is refused with [`PnpError::InvalidAction`] and changes nothing.
//!
//! The PnP house has three rooms, each depending only on the ones before it:
//!
//! * this module: the vocabulary ([`PnpAction`], [`NodeState`], [`PnpError`] and the typed
//!   [`Violation`]s it carries);
//! * [`machine`]: the model, KMDF's PnP, power and self-managed I/O state machines, which
//!   run the driver's callbacks and log every callback point it reached;
//! * [`checker`]: the invariant checker, which reads that log (and the trace) after each
//!   action and never drives the model.

use super::std;
use std::fmt;
use std::string::String;
use std::vec::Vec;

use super::trace::{CallbackPanicked, Trace, VerifierFinding};
use crate::Callback;

pub(crate) mod checker;
pub(crate) mod machine;

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
#[non_exhaustive]
pub enum PnpAction {
    /// `IRP_MN_START_DEVICE`: first start, start again after a rebalance stop, or the restart
    /// of a started device with new resources.
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
    /// The device signals wake (the bus completes its wait-wake request): an idle device
    /// armed for wake from S0 comes back to D0 (`EvtDeviceWakeFromS0Triggered`); a device
    /// asleep armed for wake from Sx wakes the system, and its resume reports it
    /// (`EvtDeviceWakeFromSxTriggered`). Valid only while armed (docs/kmdf-behaviour.md
    /// section 10).
    SignalWake,
}

impl PnpAction {
    /// Every action.
    pub const ALL: [PnpAction; 13] = [
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
        PnpAction::SignalWake,
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
            PnpAction::SignalWake => "signal-wake",
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
#[non_exhaustive]
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
    /// Started but failed, waiting for the PnP manager's surprise removal: a query-remove or
    /// query-stop forced the idle device back to D0, the power-up failed, and the query was
    /// then cancelled (KMDF reported the device failed with `IoInvalidateDeviceState`; the
    /// PnP manager answers with `IRP_MN_SURPRISE_REMOVAL`). `surprise-remove` removes it; the
    /// cancels are taken without a callback; a query (or `remove`, `stop`) asks the driver,
    /// then fails because the device cannot be powered up; nothing else is accepted.
    Failed,
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
            NodeState::Failed => "failed, waiting for its surprise removal",
            NodeState::Removed => "removed",
        })
    }
}

/// Why a PnP action failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PnpError {
    /// The action is not valid in the device's state; nothing was done.
    InvalidAction {
        /// The refused action.
        action: PnpAction,
        /// The state the device is in.
        state: NodeState,
    },
    /// The action ran, and the callback sequence broke one of KMDF's invariants
    /// (docs/kmdf-behaviour.md section 3), or the runtime's verifier caught the driver breaking a
    /// rule (a work item or timer running after `SelfManagedIoFlush`).
    InvariantViolated {
        /// The action after which the check failed.
        action: PnpAction,
        /// What was violated, in the order the checks found it.
        violations: Vec<Violation>,
        /// The device's trace.
        trace: Trace,
    },
    /// A work item's or timer's callback (or an object's cleanup run from one) panicked, on
    /// any device of the runtime, and no call reported it yet: in the kernel, a bug check.
    /// (A panic in a PnP callback is not reported this way: that callback fails as if it
    /// returned `STATUS_UNSUCCESSFUL`, the device takes KMDF's failure path, and the
    /// action's trace shows `(panicked)`.)
    CallbackPanicked {
        /// The action.
        action: PnpAction,
        /// `false` when the panics came before the action, which was then refused: nothing
        /// was called and nothing changed. `true` when they came while it ran (in work its
        /// callbacks waited for): the action completed.
        applied: bool,
        /// The panics.
        panics: CallbackPanicked,
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
            PnpError::CallbackPanicked { action, applied: false, panics } => {
                write!(f, "`{action}` was not applied: {panics}")
            }
            PnpError::CallbackPanicked { action, applied: true, panics } => {
                write!(f, "while `{action}` ran, {panics}")
            }
        }
    }
}

impl std::error::Error for PnpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PnpError::CallbackPanicked { panics, .. } => Some(panics),
            PnpError::InvalidAction { .. } | PnpError::InvariantViolated { .. } => None,
        }
    }
}

/// One broken rule that [`PnpError::InvariantViolated`] reports.
///
/// Printed, it is the line the error prints for it, e.g.
/// `7: D0Exit without a successful D0Entry (4)`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The callback sequence broke one of KMDF's invariants (docs/kmdf-behaviour.md section 3).
    Invariant(InvariantViolation),
    /// The runtime's verifier caught the driver breaking a rule (a work item or timer
    /// running after `SelfManagedIoFlush`).
    Verifier(VerifierFinding),
}

impl Violation {
    /// The number of the invariant of docs/kmdf-behaviour.md section 3 that was broken, or
    /// `None` for a verifier finding.
    #[must_use]
    pub fn invariant(&self) -> Option<u8> {
        match self {
            Violation::Invariant(violation) => Some(violation.invariant),
            Violation::Verifier(_) => None,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Invariant(violation) => violation.fmt(f),
            Violation::Verifier(finding) => f.write_str(&finding.message),
        }
    }
}

/// A broken invariant of docs/kmdf-behaviour.md section 3: which, what and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct InvariantViolation {
    /// The invariant's number in docs/kmdf-behaviour.md section 3 (1 to 12).
    pub invariant: u8,
    /// What happened.
    pub what: ViolationKind,
    /// The position (counting from 1) of the offending callback among the callback points
    /// the device reached, when one callback is to blame; `None` for what is wrong with
    /// the sequence as a whole (a device removed in D0, ...).
    pub at: Option<usize>,
}

impl InvariantViolation {
    pub(crate) fn new(what: ViolationKind, at: Option<usize>) -> Self {
        Self { invariant: what.invariant(), what, at }
    }
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.what)?;
        match self.at {
            // The oldest message names what the number counts; kept as it always read.
            Some(at) if self.what == ViolationKind::InitTwice => write!(f, " (callback {at})"),
            Some(at) => write!(f, " ({at})"),
            None => Ok(()),
        }
    }
}

/// What a broken invariant of docs/kmdf-behaviour.md section 3 consists of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// 1: `SelfManagedIoInit` ran twice.
    InitTwice,
    /// 1: `SelfManagedIoInit` came after another SMIO callback.
    InitNotFirst,
    /// 2: `SelfManagedIoRestart` without a successful Suspend before it.
    RestartWithoutSuspend,
    /// 3: `SelfManagedIoSuspend` while SMIO was not running.
    SuspendWhileNotRunning,
    /// 4: `SelfManagedIoFlush` ran twice.
    FlushTwice,
    /// 4: `SelfManagedIoFlush` without `SelfManagedIoInit`.
    FlushWithoutInit,
    /// 4: `SelfManagedIoFlush` of a device that was not removed.
    FlushNotRemoved,
    /// 5: `SelfManagedIoCleanup` ran twice.
    CleanupTwice,
    /// 5: `SelfManagedIoCleanup` before `SelfManagedIoFlush`.
    CleanupBeforeFlush,
    /// 5: `SelfManagedIoCleanup` of a device that was not removed.
    CleanupNotRemoved,
    /// 5: the device's `EvtCleanupCallback` ran before `SelfManagedIoCleanup`.
    ObjectCleanupBeforeSmioCleanup,
    /// 6: `ReleaseHardware` without `PrepareHardware`.
    ReleaseWithoutPrepare,
    /// 6: `PrepareHardware` twice without `ReleaseHardware`.
    PrepareTwice,
    /// 6: the device was removed without `ReleaseHardware`.
    RemovedWithoutRelease,
    /// 7: `D0Entry` twice without `D0Exit`.
    D0EntryTwice,
    /// 7: `D0Exit` without a successful `D0Entry`.
    D0ExitWithoutEntry,
    /// 7: the device was removed in D0.
    RemovedInD0,
    /// 8: `D0ExitPreInterruptsDisabled` without a successful `D0EntryPostInterruptsEnabled`.
    ExitPreWithoutEntryPost,
    /// 9: `D0Exit` while SMIO was running.
    D0ExitWhileSmioRuns,
    /// 11: the device's `EvtCleanupCallback` ran more than once.
    ObjectCleanupTwice,
    /// 11: the device's `EvtDestroyCallback` ran more than once.
    ObjectDestroyTwice,
    /// 11: the device's `EvtDestroyCallback` ran before its `EvtCleanupCallback`.
    ObjectDestroyBeforeCleanup,
    /// 12: an `ArmWake` callback while the device was armed already.
    ArmedTwice,
    /// 12: self-managed I/O restarted while the device was still armed for wake (no
    /// `DisarmWake` on the way back to D0).
    WorkingWhileArmed,
    /// 12: a `DisarmWakeFromS0` of a device armed for Sx, or the reverse.
    DisarmOfTheOtherKind,
    /// 12: a `WakeFrom*Triggered` after the `DisarmWake` of the same power-up.
    TriggeredAfterDisarm,
}

impl ViolationKind {
    /// The invariant of docs/kmdf-behaviour.md section 3 it breaks.
    #[must_use]
    pub const fn invariant(self) -> u8 {
        match self {
            ViolationKind::InitTwice | ViolationKind::InitNotFirst => 1,
            ViolationKind::RestartWithoutSuspend => 2,
            ViolationKind::SuspendWhileNotRunning => 3,
            ViolationKind::FlushTwice
            | ViolationKind::FlushWithoutInit
            | ViolationKind::FlushNotRemoved => 4,
            ViolationKind::CleanupTwice
            | ViolationKind::CleanupBeforeFlush
            | ViolationKind::CleanupNotRemoved
            | ViolationKind::ObjectCleanupBeforeSmioCleanup => 5,
            ViolationKind::ReleaseWithoutPrepare
            | ViolationKind::PrepareTwice
            | ViolationKind::RemovedWithoutRelease => 6,
            ViolationKind::D0EntryTwice
            | ViolationKind::D0ExitWithoutEntry
            | ViolationKind::RemovedInD0 => 7,
            ViolationKind::ExitPreWithoutEntryPost => 8,
            ViolationKind::D0ExitWhileSmioRuns => 9,
            ViolationKind::ObjectCleanupTwice
            | ViolationKind::ObjectDestroyTwice
            | ViolationKind::ObjectDestroyBeforeCleanup => 11,
            ViolationKind::ArmedTwice
            | ViolationKind::WorkingWhileArmed
            | ViolationKind::DisarmOfTheOtherKind
            | ViolationKind::TriggeredAfterDisarm => 12,
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ViolationKind::InitTwice => "SelfManagedIoInit ran twice",
            ViolationKind::InitNotFirst => "SelfManagedIoInit is not the first SMIO callback",
            ViolationKind::RestartWithoutSuspend => {
                "SelfManagedIoRestart without a successful Suspend"
            }
            ViolationKind::SuspendWhileNotRunning => {
                "SelfManagedIoSuspend while SMIO is not running"
            }
            ViolationKind::FlushTwice => "SelfManagedIoFlush ran twice",
            ViolationKind::FlushWithoutInit => "SelfManagedIoFlush without SelfManagedIoInit",
            ViolationKind::FlushNotRemoved => "SelfManagedIoFlush but the device was not removed",
            ViolationKind::CleanupTwice => "SelfManagedIoCleanup ran twice",
            ViolationKind::CleanupBeforeFlush => "SelfManagedIoCleanup before SelfManagedIoFlush",
            ViolationKind::CleanupNotRemoved => {
                "SelfManagedIoCleanup but the device was not removed"
            }
            ViolationKind::ObjectCleanupBeforeSmioCleanup => {
                "the device's EvtCleanupCallback ran before SelfManagedIoCleanup"
            }
            ViolationKind::ReleaseWithoutPrepare => "ReleaseHardware without PrepareHardware",
            ViolationKind::PrepareTwice => "PrepareHardware twice without ReleaseHardware",
            ViolationKind::RemovedWithoutRelease => {
                "the device was removed without ReleaseHardware"
            }
            ViolationKind::D0EntryTwice => "D0Entry twice without D0Exit",
            ViolationKind::D0ExitWithoutEntry => "D0Exit without a successful D0Entry",
            ViolationKind::RemovedInD0 => "the device was removed in D0 (no D0Exit)",
            ViolationKind::ExitPreWithoutEntryPost => {
                "D0ExitPreInterruptsDisabled without a successful D0EntryPostInterruptsEnabled"
            }
            ViolationKind::D0ExitWhileSmioRuns => "D0Exit while SMIO runs (no Suspend first)",
            ViolationKind::ObjectCleanupTwice => {
                "the device's EvtCleanupCallback ran more than once"
            }
            ViolationKind::ObjectDestroyTwice => {
                "the device's EvtDestroyCallback ran more than once"
            }
            ViolationKind::ObjectDestroyBeforeCleanup => {
                "the device's EvtDestroyCallback ran before its EvtCleanupCallback"
            }
            ViolationKind::ArmedTwice => "ArmWake while the device was armed already",
            ViolationKind::WorkingWhileArmed => {
                "SelfManagedIoRestart while the device was armed for wake (no DisarmWake)"
            }
            ViolationKind::DisarmOfTheOtherKind => {
                "DisarmWake of the other kind than the ArmWake (S0 and Sx)"
            }
            ViolationKind::TriggeredAfterDisarm => {
                "WakeTriggered after the DisarmWake of the same power-up"
            }
        })
    }
}

/// Whether a failure can be injected into the `nth` call of `callback`, counted over the
/// runtime or, with `on_device`, on one device: only fallible callbacks can fail, a device
/// has no `DriverEntry` or `EvtDriverDeviceAdd` of its own, and calls count from 1.
pub(crate) fn check_injectable(
    callback: Callback,
    nth: u64,
    on_device: bool,
) -> core::result::Result<(), super::error::HarnessError> {
    use super::error::HarnessError;
    let driver_wide = matches!(callback, Callback::DriverEntry | Callback::DriverDeviceAdd);
    if !callback.is_fallible() || (on_device && driver_wide) {
        Err(HarnessError::NotInjectable(callback))
    } else if nth == 0 {
        Err(HarnessError::ZerothCall)
    } else {
        Ok(())
    }
}
