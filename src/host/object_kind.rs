//! The kinds of framework objects, as the trace and the live-object table name them.

use core::fmt;

/// The kind of a framework object, printed as its handle type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// `WDFDRIVER`.
    Driver,
    /// `WDFDEVICE`.
    Device,
    /// `WDFWORKITEM`.
    WorkItem,
    /// `WDFTIMER`.
    Timer,
    /// `WDFQUEUE`.
    Queue,
    /// `WDFFILEOBJECT`.
    File,
}

impl ObjectKind {
    /// The KMDF handle type, e.g. `WDFDEVICE`.
    #[must_use]
    pub const fn handle_type(self) -> &'static str {
        match self {
            ObjectKind::Driver => "WDFDRIVER",
            ObjectKind::Device => "WDFDEVICE",
            ObjectKind::WorkItem => "WDFWORKITEM",
            ObjectKind::Timer => "WDFTIMER",
            ObjectKind::Queue => "WDFQUEUE",
            ObjectKind::File => "WDFFILEOBJECT",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.handle_type())
    }
}
