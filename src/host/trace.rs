//! The callback trace: every driver callback the runtime invoked, in order.

use super::std;

use std::fmt;
use std::string::{String, ToString};
use std::vec::Vec;

use super::object_kind::ObjectKind;
use crate::{Callback, NtStatus};

/// One driver callback the runtime invoked.
///
/// Printed (`Display`), it is one line that begins with the KMDF callback name, followed by
/// the callback's arguments (or the object it belongs to) in parentheses where it has any,
/// and, when a fallible callback
/// failed, ` -> ` and the status: `EvtDeviceD0Exit(D3Final)`,
/// `EvtDeviceSelfManagedIoInit -> STATUS_UNSUCCESSFUL`, then ` (injected)` when the runtime
/// injected that failure or ` (panicked)` when the driver's code panicked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// The callback.
    pub callback: Callback,
    /// Its arguments as printed in the parentheses, when it has any worth printing (a power
    /// state, a debug print's message).
    pub args: Option<String>,
    /// For an object's own callback (`EvtCleanupCallback`, `EvtDestroyCallback`), the kind
    /// of the object, printed in the parentheses as its handle type: `WDFDEVICE`.
    pub object: Option<ObjectKind>,
    /// What a fallible callback returned; `None` for callbacks that return nothing, and
    /// while the callback is still running.
    pub status: Option<NtStatus>,
    /// The device node the callback belongs to (`None` for driver-wide callbacks).
    pub device: Option<u64>,
    /// The failure was injected ([`Runtime::inject_failure`](super::Runtime::inject_failure)):
    /// the framework reached the callback, and the runtime failed it without running the
    /// driver's code.
    pub injected: bool,
    /// The driver's code panicked; the runtime caught the panic at the callback boundary
    /// and reported a failure (see [`Runtime::panics`](super::Runtime::panics)).
    pub panicked: bool,
}

impl TraceEntry {
    /// The entry of `callback` on `device`, before it ran.
    pub(crate) fn new(callback: Callback, device: Option<u64>) -> Self {
        Self {
            callback,
            args: None,
            object: None,
            status: None,
            device,
            injected: false,
            panicked: false,
        }
    }

    /// The entry with its arguments as printed.
    #[must_use]
    pub(crate) fn with_args(self, args: String) -> Self {
        Self { args: Some(args), ..self }
    }

    /// The entry of a callback of an object of `kind`.
    #[must_use]
    pub(crate) fn of_object(self, kind: ObjectKind) -> Self {
        Self { object: Some(kind), ..self }
    }

    /// Whether the callback returned a failure status.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.status.is_some_and(NtStatus::is_failure)
    }
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.callback.kmdf_name())?;
        if let Some(args) = &self.args {
            write!(f, "({args})")?;
        }
        if let Some(kind) = self.object {
            write!(f, "({kind})")?;
        }
        match self.status {
            Some(status) if status.is_failure() => write!(f, " -> {status}")?,
            _ => {}
        }
        if self.injected {
            f.write_str(" (injected)")?;
        }
        if self.panicked {
            f.write_str(" (panicked)")?;
        }
        Ok(())
    }
}

/// A snapshot of the callback trace.
///
/// `Display` prints one [`TraceEntry`] per line; nothing else in it begins with `Evt`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    entries: Vec<TraceEntry>,
}

impl Trace {
    pub(crate) fn new(entries: Vec<TraceEntry>) -> Self {
        Self { entries }
    }

    /// The entries, in invocation order.
    #[must_use]
    pub fn entries(&self) -> &[TraceEntry] {
        &self.entries
    }

    /// The callbacks, in invocation order: what scenario tests compare.
    #[must_use]
    pub fn callbacks(&self) -> Vec<Callback> {
        self.entries.iter().map(|entry| entry.callback).collect()
    }

    /// The printed lines.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.entries.iter().map(ToString::to_string).collect()
    }

    /// How many times `callback` was invoked.
    #[must_use]
    pub fn count(&self, callback: Callback) -> usize {
        self.entries.iter().filter(|entry| entry.callback == callback).count()
    }

    /// Whether the trace is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for entry in &self.entries {
            writeln!(f, "{entry}")?;
        }
        Ok(())
    }
}

/// A panic the runtime caught at a callback boundary.
///
/// In the kernel a panic is a bug check (`wdk-panic`); on the host the runtime catches it,
/// fails the callback as if it had returned `STATUS_UNSUCCESSFUL` (so the device takes KMDF's
/// failure path) and keeps every other device working, but the test fails unless it
/// acknowledges the panic: see [`Runtime::panics`](super::Runtime::panics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicReport {
    /// The callback that panicked.
    pub callback: Callback,
    /// The device node it belongs to (`None` for driver-wide callbacks).
    pub device: Option<u64>,
    /// The panic message.
    pub message: String,
}

impl fmt::Display for PanicReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} panicked", self.callback)?;
        if let Some(device) = self.device {
            write!(f, " on device {device}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The error of a runtime call that found driver callbacks panicked in *deferred work*
/// (a work item's or a timer's callback, or an object's cleanup run from one) since the last
/// call that reported panics: returned by [`Runtime::advance`](super::Runtime::advance),
/// [`Runtime::wait_for_work_items`](super::Runtime::wait_for_work_items) and, inside
/// [`PnpError::CallbackPanicked`](super::PnpError::CallbackPanicked),
/// [`DeviceNode::apply`](super::DeviceNode::apply).
///
/// In the kernel each of these panics is a bug check. Once returned, the panics count as
/// reported: they fail no further call, and dropping the runtime does not complain of them.
///
/// Printed, it names each callback, its device and the panic message:
/// `EvtWorkItem panicked on device 2: index out of bounds (a bug check in the kernel)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackPanicked {
    panics: Vec<PanicReport>,
}

impl CallbackPanicked {
    pub(crate) fn new(panics: Vec<PanicReport>) -> Self {
        debug_assert!(!panics.is_empty());
        Self { panics }
    }

    /// The panics, oldest first; never empty.
    #[must_use]
    pub fn panics(&self) -> &[PanicReport] {
        &self.panics
    }

    /// The panics, oldest first; never empty.
    #[must_use]
    pub fn into_panics(self) -> Vec<PanicReport> {
        self.panics
    }
}

impl fmt::Display for CallbackPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [panic] = self.panics.as_slice() {
            write!(f, "{panic} (a bug check in the kernel)")
        } else {
            write!(
                f,
                "{} driver callbacks panicked (a bug check in the kernel):",
                self.panics.len()
            )?;
            for panic in &self.panics {
                write!(f, "\n  - {panic}")?;
            }
            Ok(())
        }
    }
}

impl std::error::Error for CallbackPanicked {}

/// A driver bug the runtime's verifier caught: something KMDF allows but that breaks the
/// rules drivers must follow, as Driver Verifier reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierFinding {
    /// The device node concerned.
    pub device: u64,
    /// The callback that should not have run.
    pub callback: Callback,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for VerifierFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "verifier (device {}): {}", self.device, self.message)
    }
}
