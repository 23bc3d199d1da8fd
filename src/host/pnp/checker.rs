//! The invariant checker: KMDF's invariants (docs/kmdf-behaviour.md section 3) over what the
//! model did.
//!
//! The checker lives outside the model it checks: it reads the model's log of callback
//! points ([`Machine::events`]) and the device's trace after each action, and never drives
//! the model. What it finds are typed [`Violation`]s.

use super::super::std;
use std::vec::Vec;

use super::super::object_kind::ObjectKind;
use super::super::shared::Shared;
use super::super::trace::{Trace, TraceEntry};
use super::machine::{Event, Machine};
use super::{InvariantViolation, NodeState, PnpAction, PnpError, Violation, ViolationKind};
use crate::Callback;

/// The checks after `action` was applied to the device of `node`: invariants 1 to 9 over
/// the model's log, the verifier's findings about the device, and, once the device is
/// removed, its object callbacks in the trace.
///
/// # Errors
///
/// [`PnpError::InvariantViolated`] with every violation, and the device's trace.
pub(crate) fn after_action(
    action: PnpAction,
    machine: &Machine,
    shared: &Shared,
    node: u64,
) -> core::result::Result<(), PnpError> {
    let removed = machine.state == NodeState::Removed;
    let device_trace = || {
        Trace::new(
            shared
                .trace_from(machine.trace_start)
                .into_iter()
                .filter(|entry| entry.device == Some(node))
                .collect(),
        )
    };
    let mut violations: Vec<Violation> =
        check(machine.events(), removed).into_iter().map(Violation::Invariant).collect();
    violations.extend(shared.report_findings(node).into_iter().map(Violation::Verifier));
    if removed {
        violations
            .extend(check_object_callbacks(&device_trace()).into_iter().map(Violation::Invariant));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(PnpError::InvariantViolated { action, violations, trace: device_trace() })
    }
}

/// Checks invariants 1 to 9 of docs/kmdf-behaviour.md section 3 over every callback point
/// reached so far; `removed` says whether the device is gone. Invariant 10 (PASSIVE_LEVEL)
/// holds by construction: callbacks run on the thread applying the action, under the
/// node's action mutex only, so at that thread's IRQL, which is PASSIVE_LEVEL unless the
/// test itself holds a spin lock. Invariant 11 is checked per object by
/// [`check_object_callbacks`].
#[allow(clippy::too_many_lines, reason = "one replay of the callback log, invariant by invariant")]
pub(crate) fn check(events: &[Event], removed: bool) -> Vec<InvariantViolation> {
    use ViolationKind as V;
    let mut violations = Vec::new();
    let mut fail = |what: ViolationKind, at: Option<usize>| {
        let violation = InvariantViolation::new(what, at);
        if !violations.contains(&violation) {
            violations.push(violation);
        }
    };
    let count = |callback| events.iter().filter(|e| e.callback == callback).count();

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
    // Wake: 12.
    let mut armed: Option<Callback> = None; // the successful ArmWake not yet disarmed
    let mut disarmed = false; // a DisarmWake since the last D0Entry
    for (index, event) in events.iter().enumerate() {
        let at = Some(index + 1);
        match event.callback {
            Callback::SelfManagedIoInit => {
                if init_seen {
                    fail(V::InitTwice, at);
                }
                if flush_seen || suspended_ok {
                    fail(V::InitNotFirst, at);
                }
                init_seen = true;
                running = event.ok;
                suspended_ok = false;
            }
            Callback::SelfManagedIoRestart => {
                if !suspended_ok {
                    fail(V::RestartWithoutSuspend, at);
                }
                if armed.is_some() {
                    fail(V::WorkingWhileArmed, at);
                }
                running = event.ok;
                suspended_ok = false;
            }
            Callback::SelfManagedIoSuspend => {
                if !running {
                    fail(V::SuspendWhileNotRunning, at);
                }
                running = false;
                suspended_ok = event.ok;
            }
            Callback::SelfManagedIoFlush => {
                if flush_seen {
                    fail(V::FlushTwice, at);
                }
                if !init_seen {
                    fail(V::FlushWithoutInit, at);
                }
                if !removed {
                    fail(V::FlushNotRemoved, at);
                }
                flush_seen = true;
                running = false;
                suspended_ok = false;
            }
            Callback::SelfManagedIoCleanup => {
                if cleanup_seen {
                    fail(V::CleanupTwice, at);
                }
                if !flush_seen {
                    fail(V::CleanupBeforeFlush, at);
                }
                cleanup_seen = true;
            }
            Callback::PrepareHardware => hardware += 1,
            Callback::ReleaseHardware => {
                hardware -= 1;
                if hardware < 0 {
                    fail(V::ReleaseWithoutPrepare, at);
                }
            }
            Callback::D0Entry => {
                if in_d0 {
                    fail(V::D0EntryTwice, at);
                }
                in_d0 = event.ok;
                disarmed = false;
            }
            Callback::D0EntryPostInterruptsEnabled => post_ok = event.ok,
            Callback::D0ExitPreInterruptsDisabled => {
                if !post_ok {
                    fail(V::ExitPreWithoutEntryPost, at);
                }
                post_ok = false;
            }
            Callback::ArmWakeFromS0 | Callback::ArmWakeFromSx => {
                if armed.is_some() {
                    fail(V::ArmedTwice, at);
                }
                if event.ok {
                    armed = Some(event.callback);
                }
            }
            Callback::DisarmWakeFromS0 | Callback::DisarmWakeFromSx => {
                let arm = if event.callback == Callback::DisarmWakeFromS0 {
                    Callback::ArmWakeFromS0
                } else {
                    Callback::ArmWakeFromSx
                };
                // A disarm without an arm is KMDF's (the wait-wake completed before the
                // arming); a disarm of the other kind is not.
                if armed.is_some_and(|armed| armed != arm) {
                    fail(V::DisarmOfTheOtherKind, at);
                }
                armed = None;
                disarmed = true;
            }
            Callback::WakeFromS0Triggered | Callback::WakeFromSxTriggered if disarmed => {
                fail(V::TriggeredAfterDisarm, at);
            }
            Callback::D0Exit => {
                if !in_d0 {
                    fail(V::D0ExitWithoutEntry, at);
                }
                if running {
                    fail(V::D0ExitWhileSmioRuns, at);
                }
                in_d0 = false;
                post_ok = false;
            }
            _ => {}
        }
    }
    if hardware > 1 {
        fail(V::PrepareTwice, None);
    }
    if removed && hardware != 0 {
        fail(V::RemovedWithoutRelease, None);
    }
    if removed && in_d0 {
        fail(V::RemovedInD0, None);
    }
    if count(Callback::SelfManagedIoCleanup) > 0 && !removed {
        fail(V::CleanupNotRemoved, None);
    }
    violations
}

/// Invariant 11 for the device object (its `EvtCleanupCallback` at most once, before its
/// `EvtDestroyCallback`) and the end of invariant 5 (SMIO Cleanup before the device's
/// `EvtCleanupCallback`), over the device's trace.
pub(crate) fn check_object_callbacks(trace: &Trace) -> Vec<InvariantViolation> {
    let of_device = |entry: &&TraceEntry, callback: Callback| {
        entry.callback == callback && entry.object == Some(ObjectKind::Device)
    };
    let position =
        |callback: Callback| trace.entries().iter().position(|e| of_device(&e, callback));
    let count =
        |callback: Callback| trace.entries().iter().filter(|e| of_device(e, callback)).count();
    let mut violations = Vec::new();
    let mut fail = |what| violations.push(InvariantViolation::new(what, None));
    if count(Callback::ObjectCleanup) > 1 {
        fail(ViolationKind::ObjectCleanupTwice);
    }
    if count(Callback::ObjectDestroy) > 1 {
        fail(ViolationKind::ObjectDestroyTwice);
    }
    if let (Some(cleanup), Some(destroy)) =
        (position(Callback::ObjectCleanup), position(Callback::ObjectDestroy))
        && destroy < cleanup
    {
        fail(ViolationKind::ObjectDestroyBeforeCleanup);
    }
    let smio_cleanup =
        trace.entries().iter().position(|e| e.callback == Callback::SelfManagedIoCleanup);
    if let (Some(smio), Some(cleanup)) = (smio_cleanup, position(Callback::ObjectCleanup))
        && cleanup < smio
    {
        fail(ViolationKind::ObjectCleanupBeforeSmioCleanup);
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::std;
    use super::{Callback, Event, InvariantViolation, NodeState, ViolationKind};
    use std::vec::Vec;

    /// The checker over a hand-written sequence of (callback, succeeded) points.
    fn check(state: NodeState, points: &[(Callback, bool)]) -> Vec<InvariantViolation> {
        let events: Vec<Event> =
            points.iter().map(|&(callback, ok)| Event { callback, ok }).collect();
        super::check(&events, state == NodeState::Removed)
    }

    fn violates(state: NodeState, points: &[(Callback, bool)], what: ViolationKind) {
        let violations = check(state, points);
        assert!(
            violations.iter().any(|v| v.what == what && v.invariant == what.invariant()),
            "expected {what:?} (invariant {}), got {violations:?}",
            what.invariant()
        );
    }

    use Callback::{
        D0Entry, D0EntryPostInterruptsEnabled as Post, D0Exit, D0ExitPreInterruptsDisabled as Pre,
        PrepareHardware, ReleaseHardware, SelfManagedIoCleanup as Cleanup,
        SelfManagedIoFlush as Flush, SelfManagedIoInit as Init, SelfManagedIoRestart as Restart,
        SelfManagedIoSuspend as Suspend,
    };

    #[test]
    fn invariant_12_wake_arming() {
        use Callback::{
            ArmWakeFromS0 as ArmS0, ArmWakeFromSx as ArmSx, DisarmWakeFromS0 as DisarmS0,
            DisarmWakeFromSx as DisarmSx, WakeFromS0Triggered as TriggeredS0,
        };
        use ViolationKind as V;
        let working = NodeState::Working;
        let idle = [(Init, true), (Suspend, true), (ArmS0, true), (Pre, true), (D0Exit, true)];
        let back = |tail: &[(Callback, bool)]| {
            let mut points = std::vec![(D0Entry, true), (Post, true)];
            points.extend_from_slice(&idle);
            points.extend([(D0Entry, true), (Post, true)]);
            points.extend_from_slice(tail);
            points
        };
        // Section 10's sequences pass: back by the wake signal, back by I/O.
        assert_eq!(
            check(working, &back(&[(TriggeredS0, true), (DisarmS0, true), (Restart, true)])),
            []
        );
        assert_eq!(check(working, &back(&[(DisarmS0, true), (Restart, true)])), []);
        // A disarm without an arm (the wait-wake completed before the arming) is KMDF's.
        assert_eq!(check(working, &[(D0Entry, true), (Post, true), (DisarmS0, true)]), []);
        violates(working, &back(&[(Restart, true)]), V::WorkingWhileArmed);
        violates(working, &back(&[(DisarmSx, true), (Restart, true)]), V::DisarmOfTheOtherKind);
        violates(working, &back(&[(DisarmS0, true), (TriggeredS0, true)]), V::TriggeredAfterDisarm);
        violates(working, &[(ArmS0, true), (ArmSx, true)], V::ArmedTwice);
        // A failed arm leaves the device unarmed.
        assert_eq!(check(working, &[(ArmS0, false), (ArmSx, true)]), []);
    }

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
        assert_eq!(check(NodeState::Removed, &life), Vec::new());
    }

    #[test]
    fn each_invariant_can_fail() {
        use ViolationKind as V;
        let working = NodeState::Working;
        violates(
            working,
            &[(Init, true), (Suspend, true), (Restart, true), (Init, true)],
            V::InitTwice,
        );
        violates(working, &[(Init, true), (Restart, true)], V::RestartWithoutSuspend);
        violates(
            working,
            &[(Init, true), (Suspend, false), (Restart, true)],
            V::RestartWithoutSuspend,
        );
        violates(working, &[(Init, false), (Suspend, true)], V::SuspendWhileNotRunning);
        violates(
            working,
            &[(Init, true), (Suspend, true), (Suspend, true)],
            V::SuspendWhileNotRunning,
        );
        violates(
            NodeState::Removed,
            &[(Init, true), (Suspend, true), (Flush, true), (Flush, true)],
            V::FlushTwice,
        );
        violates(NodeState::Removed, &[(Flush, true)], V::FlushWithoutInit);
        violates(working, &[(Init, true), (Suspend, true), (Flush, true)], V::FlushNotRemoved);
        violates(NodeState::Removed, &[(Init, false), (Cleanup, true)], V::CleanupBeforeFlush);
        violates(working, &[(ReleaseHardware, true)], V::ReleaseWithoutPrepare);
        violates(NodeState::Removed, &[(PrepareHardware, true)], V::RemovedWithoutRelease);
        violates(working, &[(D0Exit, true)], V::D0ExitWithoutEntry);
        violates(working, &[(D0Entry, false), (D0Exit, true)], V::D0ExitWithoutEntry);
        violates(working, &[(D0Entry, true), (D0Entry, true)], V::D0EntryTwice);
        violates(working, &[(D0Entry, true), (Pre, true)], V::ExitPreWithoutEntryPost);
        violates(
            working,
            &[(D0Entry, true), (Post, false), (Pre, true)],
            V::ExitPreWithoutEntryPost,
        );
        violates(
            working,
            &[(D0Entry, true), (Post, true), (Init, true), (Pre, true), (D0Exit, true)],
            V::D0ExitWhileSmioRuns,
        );
    }
    #[test]
    fn violations_print_as_they_always_did() {
        let twice = check(NodeState::Working, &[(Init, true), (Suspend, true), (Init, true)]);
        let lines: Vec<_> = twice.iter().map(std::string::ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "1: SelfManagedIoInit ran twice (callback 3)",
                "1: SelfManagedIoInit is not the first SMIO callback (3)"
            ]
        );
        let removed = check(NodeState::Removed, &[(PrepareHardware, true), (D0Entry, true)]);
        let lines: Vec<_> = removed.iter().map(std::string::ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "6: the device was removed without ReleaseHardware",
                "7: the device was removed in D0 (no D0Exit)"
            ]
        );
    }

    fn printed(violations: &[InvariantViolation]) -> Vec<std::string::String> {
        violations.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn violations_name_the_invariant_and_the_callbacks_position() {
        let working = NodeState::Working;
        // Positions count from 1 over the callback points reached.
        assert_eq!(
            printed(&check(working, &[(D0Exit, true)])),
            ["7: D0Exit without a successful D0Entry (1)"]
        );
        assert_eq!(
            printed(&check(working, &[(D0Entry, true), (Post, true), (Pre, true), (Pre, true)])),
            [
                "8: D0ExitPreInterruptsDisabled without a successful D0EntryPostInterruptsEnabled (4)"
            ]
        );
        // Init after a Flush is not the first SMIO callback, even with no Init before it.
        let late_init = printed(&check(NodeState::Removed, &[(Flush, true), (Init, true)]));
        assert!(
            late_init
                .iter()
                .any(|v| v == "1: SelfManagedIoInit is not the first SMIO callback (2)"),
            "{late_init:?}"
        );
        // Cleanup on a device that was not removed.
        let early = printed(&check(
            working,
            &[(Init, true), (Suspend, true), (Flush, true), (Cleanup, true)],
        ));
        assert!(
            early.iter().any(|v| v == "5: SelfManagedIoCleanup but the device was not removed"),
            "{early:?}"
        );
    }

    /// A trace of the device's object callbacks (and SMIO Cleanup), for invariant 11.
    fn objects(entries: &[(Callback, Option<super::ObjectKind>)]) -> super::Trace {
        super::Trace::new(
            entries
                .iter()
                .map(|&(callback, object)| super::TraceEntry {
                    object,
                    ..super::TraceEntry::new(callback, Some(1))
                })
                .collect(),
        )
    }

    #[test]
    fn the_object_callback_check_looks_at_the_device_object_only() {
        use super::check_object_callbacks;
        use Callback::{ObjectCleanup, ObjectDestroy};
        let (item, device) = (Some(super::ObjectKind::WorkItem), Some(super::ObjectKind::Device));
        // The removal of a device with a work item, in KMDF's order: clean.
        let removal = [
            (ObjectCleanup, item),
            (Cleanup, None),
            (ObjectCleanup, device),
            (ObjectDestroy, device),
            (ObjectDestroy, item),
        ];
        assert!(check_object_callbacks(&objects(&removal)).is_empty());
        // Each rule of invariant 11, and the end of invariant 5, alone.
        assert_eq!(
            printed(&check_object_callbacks(&objects(&[
                (ObjectCleanup, device),
                (ObjectCleanup, device),
                (ObjectDestroy, device)
            ]))),
            ["11: the device's EvtCleanupCallback ran more than once"]
        );
        assert_eq!(
            printed(&check_object_callbacks(&objects(&[
                (ObjectDestroy, device),
                (ObjectCleanup, device)
            ]))),
            ["11: the device's EvtDestroyCallback ran before its EvtCleanupCallback"]
        );
        assert_eq!(
            printed(&check_object_callbacks(&objects(&[(ObjectCleanup, device), (Cleanup, None)]))),
            ["5: the device's EvtCleanupCallback ran before SelfManagedIoCleanup"]
        );
    }
}
