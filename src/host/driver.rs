//! Loaded drivers on the host: `DriverEntry`, `WdfDriverCreate`, the PnP manager adding
//! devices for a driver, and `EvtDriverUnload`.

use super::std;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::error::HarnessError;
use super::node::{DeviceNode, Node, add_device_on};
use super::object::{NewObject, RawObject};
use super::object_kind::ObjectKind;
use super::registry::{DriverSlot, Registry};
use super::resources::AssignedResources;
use super::trace::TraceEntry;
use crate::{Callback, DeviceInit, Driver, Result};

/// Runs `DriverEntry`, whose body is `entry` (the driver's [`Driver::driver_entry`], or a
/// value the test built), and creates the `WDFDRIVER` object with the driver value as its
/// context; the runtime owns the driver from then on.
///
/// # Errors
///
/// What `entry` returned (or a failure injected into `DriverEntry`): the driver is not
/// loaded.
pub(crate) fn load<D: Driver>(
    registry: &Arc<Registry>,
    entry: impl FnOnce() -> Result<D>,
) -> Result<LoadedDriver<D>> {
    let shared = registry.shared();
    let mut value = None;
    shared.invoke(TraceEntry::new(Callback::DriverEntry, None), || {
        value = Some(entry()?);
        Ok(())
    })?;
    let Some(value) = value else { unreachable!("driver_entry succeeded") };
    let object = RawObject::create(
        shared,
        NewObject {
            context: Some(std::boxed::Box::new(value)),
            ..NewObject::new(ObjectKind::Driver)
        },
    )?;
    let slot = registry.add_driver(object, unload_of::<D>);
    Ok(LoadedDriver { registry: Arc::clone(registry), slot, _driver: PhantomData })
}

/// A driver loaded into a [`Runtime`](super::Runtime).
///
/// The runtime owns the driver: the handle reaches it until [`unload`](Self::unload), after
/// which every call answers [`HarnessError::DriverUnloaded`]. Dropping the handle changes nothing;
/// a driver still loaded when the runtime is dropped is unloaded then, after its devices
/// are removed (see [`Runtime`](super::Runtime)'s `Drop`).
pub struct LoadedDriver<D> {
    registry: Arc<Registry>,
    slot: Arc<DriverSlot>,
    _driver: PhantomData<D>,
}

impl<D: Driver> LoadedDriver<D> {
    /// Calls `f` with the driver value [`Driver::driver_entry`] built.
    ///
    /// # Errors
    ///
    /// [`HarnessError::DriverUnloaded`] once the driver was unloaded.
    pub fn with_driver<R>(&self, f: impl FnOnce(&D) -> R) -> core::result::Result<R, HarnessError> {
        let object = self.slot.object()?;
        Ok(f(driver(&object)))
    }

    /// The PnP manager found a device for this driver: runs `EvtDriverDeviceAdd`
    /// ([`Driver::device_add`]) and returns the node the test drives.
    ///
    /// # Errors
    ///
    /// * [`HarnessError::Driver`] with what `device_add` returned; a device it had created
    ///   is deleted, as KMDF deletes it (its children are disposed and its cleanup
    ///   callbacks run).
    /// * [`HarnessError::NoDevice`] when `device_add` succeeded without creating a device:
    ///   KMDF accepts that (filters do it), but there is then nothing to drive.
    /// * [`HarnessError::DriverUnloaded`] when the driver has been unloaded.
    pub fn add_device(&self) -> core::result::Result<DeviceNode, HarnessError> {
        self.add_device_with(AssignedResources::new())
    }

    /// [`add_device`](Self::add_device) for hardware with `resources`: the device's
    /// `EvtDevicePrepareHardware` sees them (raw and translated), its
    /// `EvtDeviceReleaseHardware` the translated list.
    ///
    /// # Errors
    ///
    /// As [`add_device`](Self::add_device).
    pub fn add_device_with(
        &self,
        resources: AssignedResources,
    ) -> core::result::Result<DeviceNode, HarnessError> {
        let driver = self.slot.object()?;
        let shared = self.registry.shared();
        let id = shared.next_id();
        let trace_start = shared.trace_position();
        let resources = Arc::new(resources);
        let created = add_device_on(&driver, id, &resources, device_add_of::<D>)?;
        let node = Node::new(&driver, id, resources, device_add_of::<D>, created, trace_start);
        self.registry.add_node(&node);
        Ok(DeviceNode::new(node))
    }

    /// The driver's object, while loaded.
    #[cfg(feature = "sys-harness")]
    pub(crate) fn object(&self) -> core::result::Result<Arc<RawObject>, HarnessError> {
        self.slot.object()
    }

    /// Unloads the driver: `EvtDriverUnload` ([`Driver::unload`]), then the `WDFDRIVER` is
    /// deleted and its context dropped.
    ///
    /// # Errors
    ///
    /// [`HarnessError::DevicesRemain`] while any of its devices has not been removed: the
    /// driver stays loaded. [`HarnessError::DriverUnloaded`] when it was already unloaded.
    pub fn unload(&self) -> core::result::Result<(), HarnessError> {
        self.slot.unload_now()
    }
}

/// The driver value of a loaded driver's object.
fn driver<D: Driver>(object: &RawObject) -> &D {
    object.context::<D>().expect("a loaded driver has its context")
}

fn device_add_of<D: Driver>(object: &RawObject, init: DeviceInit<'_>) -> Result {
    driver::<D>(object).device_add(init)
}

fn unload_of<D: Driver>(object: &RawObject) {
    driver::<D>(object).unload();
}

impl<D> fmt::Debug for LoadedDriver<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoadedDriver<{}>({:?})", std::any::type_name::<D>(), self.slot)
    }
}
