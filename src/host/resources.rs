//! Hardware resources on the host: what a test assigns to a device node, and the lists
//! `EvtDevicePrepareHardware` and `EvtDeviceReleaseHardware` see.

use super::std;
use std::vec::Vec;

use crate::DevicePowerState;
use crate::pnp::Resource;

/// The hardware resources a test gives a device when it adds it
/// ([`LoadedDriver::add_device_with`](super::LoadedDriver::add_device_with)), as the PnP
/// manager assigns them: each resource in its raw form (as the bus sees it) and its
/// translated form (as the processor reaches it).
///
/// ```
/// use kmdf::host::AssignedResources;
/// use kmdf::pnp::Resource;
///
/// let resources = AssignedResources::new()
///     .with(Resource::Memory { start: 0xFEB0_0000, length: 0x1000 })
///     .with(Resource::Port { start: 0x300, length: 8 })
///     // An interrupt whose translated vector differs from the bus's.
///     .with_translated(
///         Resource::Interrupt { vector: 11, affinity: 1, message_signaled: false },
///         Resource::Interrupt { vector: 0x91, affinity: 0b1111, message_signaled: false },
///     );
/// assert_eq!(resources.raw().len(), 3);
/// ```
///
/// It also carries what the bus reports of the device's power capabilities
/// (`DEVICE_CAPABILITIES.DeviceWake`), which the power policy checks
/// ([`device_wake`](Self::device_wake)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssignedResources {
    raw: Vec<Resource>,
    translated: Vec<Resource>,
    device_wake: DeviceWake,
}

/// `DEVICE_CAPABILITIES.DeviceWake`: the deepest state the device can wake from, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DeviceWake(Option<DevicePowerState>);

impl Default for DeviceWake {
    /// A device that can signal wake from D3 (and the system from S3).
    fn default() -> Self {
        Self(Some(DevicePowerState::D3))
    }
}

impl AssignedResources {
    /// No resources (what [`LoadedDriver::add_device`](super::LoadedDriver::add_device)
    /// assigns).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a resource whose raw and translated forms are the same.
    #[must_use]
    pub fn with(self, resource: Resource) -> Self {
        self.with_translated(resource, resource)
    }

    /// Adds a resource with its raw and translated forms.
    #[must_use]
    pub fn with_translated(mut self, raw: Resource, translated: Resource) -> Self {
        self.raw.push(raw);
        self.translated.push(translated);
        self
    }

    /// The raw list.
    #[must_use]
    pub fn raw(&self) -> &[Resource] {
        &self.raw
    }

    /// The translated list.
    #[must_use]
    pub fn translated(&self) -> &[Resource] {
        &self.translated
    }

    /// With the bus's `DeviceWake` capability: the deepest state the device can signal wake
    /// from (`D1`, `D2` or `D3`), or `None` when it cannot wake at all. The default is `D3`.
    ///
    /// ```
    /// use kmdf::DevicePowerState;
    /// use kmdf::host::AssignedResources;
    ///
    /// let no_wake = AssignedResources::new().device_wake(None);
    /// assert_eq!(no_wake.wake_capability(), None);
    /// assert_eq!(AssignedResources::new().wake_capability(), Some(DevicePowerState::D3));
    /// ```
    #[must_use]
    pub fn device_wake(mut self, deepest: Option<DevicePowerState>) -> Self {
        self.device_wake = DeviceWake(deepest);
        self
    }

    /// The bus's `DeviceWake` capability ([`device_wake`](Self::device_wake)).
    #[must_use]
    pub fn wake_capability(&self) -> Option<DevicePowerState> {
        self.device_wake.0
    }

    /// The lists a callback sees; `EvtDeviceReleaseHardware` gets no raw list.
    pub(crate) fn lists(&self, with_raw: bool) -> RawResources<'_> {
        RawResources { raw: if with_raw { &self.raw } else { &[] }, translated: &self.translated }
    }
}

/// The resource lists as the handle types reach them.
#[derive(Clone, Copy, Default)]
pub(crate) struct RawResources<'a> {
    raw: &'a [Resource],
    translated: &'a [Resource],
}

#[allow(clippy::cast_possible_truncation, reason = "a test assigns far fewer than 2^32")]
impl RawResources<'_> {
    pub(crate) fn raw_count(self) -> u32 {
        self.raw.len() as u32
    }

    pub(crate) fn translated_count(self) -> u32 {
        self.translated.len() as u32
    }

    pub(crate) fn raw_descriptor(self, index: u32) -> Option<Resource> {
        self.raw.get(usize::try_from(index).ok()?).copied()
    }

    pub(crate) fn translated_descriptor(self, index: u32) -> Option<Resource> {
        self.translated.get(usize::try_from(index).ok()?).copied()
    }
}
