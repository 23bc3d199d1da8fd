//! What a runtime owns: its loaded drivers and its device nodes, and their teardown when
//! the [`Runtime`](super::Runtime) is dropped.
//!
//! The handles a test holds ([`LoadedDriver`](super::LoadedDriver),
//! [`DeviceNode`](super::DeviceNode)) only point into the registry: dropping one changes
//! nothing, as closing a handle does not unload a driver. Dropping the runtime is the end of
//! the machine: [`Registry::tear_down`] removes what is left in KMDF's order, children
//! before parents:
//!
//! 1. each device still present, newest first ([`Node::tear_down`]): a device that never
//!    started is removed, a started one surprise-removed (its PnP, power, self-managed I/O
//!    and object callbacks run as for that action, the device's children are disposed
//!    before the device's own cleanup);
//! 2. then each driver still loaded, newest first: `EvtDriverUnload`, then the `WDFDRIVER`
//!    is deleted and, with its last reference, its context dropped: after every device's
//!    (a device holds its driver until the device object is destroyed).
//!
//! (Windows does not remove devices at system shutdown; it powers off. The runtime tears
//! down anyway so that every object's cleanup and destroy run and the driver's state is
//! dropped in the order a driver unload would give, which is what a test observes.)

use super::std;
use std::sync::Arc;

use super::sync_shim::Mutex;
use std::vec::Vec;

use super::error::HarnessError;
use super::mutex::lock;
use super::node::Node;
use super::object::RawObject;
use super::pnp::PnpError;
use super::shared::Shared;
use super::trace::TraceEntry;
use crate::Callback;

/// The drivers and device nodes of one runtime.
pub(crate) struct Registry {
    shared: Arc<Shared>,
    drivers: Mutex<Vec<Arc<DriverSlot>>>,
    nodes: Mutex<Vec<Arc<Node>>>,
}

/// A loaded driver: its `WDFDRIVER` until it is unloaded.
pub(crate) struct DriverSlot {
    object: Mutex<Option<Arc<RawObject>>>,
    /// `EvtDriverUnload`, monomorphized for the driver's type.
    unload: fn(&RawObject),
}

impl DriverSlot {
    /// The `WDFDRIVER`, while the driver is loaded.
    ///
    /// # Errors
    ///
    /// [`HarnessError::DriverUnloaded`] once the driver was unloaded.
    pub(crate) fn object(&self) -> core::result::Result<Arc<RawObject>, HarnessError> {
        lock(&self.object).clone().ok_or(HarnessError::DriverUnloaded)
    }

    /// Unloads the driver: `EvtDriverUnload`, then the `WDFDRIVER` is deleted and its
    /// context dropped with its last reference.
    ///
    /// # Errors
    ///
    /// [`HarnessError::DevicesRemain`] while any of its devices has not been removed (unless
    /// `force`: the teardown, after it removed them all); [`HarnessError::DriverUnloaded`]
    /// when it was already unloaded.
    fn unload(&self, force: bool) -> core::result::Result<(), HarnessError> {
        let mut slot = lock(&self.object);
        if !force && slot.as_ref().is_some_and(|driver| driver.has_children()) {
            return Err(HarnessError::DevicesRemain);
        }
        let driver = slot.take().ok_or(HarnessError::DriverUnloaded)?;
        drop(slot);
        let unload = self.unload;
        driver.shared().invoke_void(TraceEntry::new(Callback::DriverUnload, None), || {
            unload(&driver);
        });
        driver.delete();
        // The last reference (devices hold theirs until they are destroyed): the driver
        // object is destroyed and its context dropped.
        drop(driver);
        Ok(())
    }

    /// [`unload`](Self::unload) as `LoadedDriver::unload` asks for it.
    ///
    /// # Errors
    ///
    /// As [`unload`](Self::unload) without `force`.
    pub(crate) fn unload_now(&self) -> core::result::Result<(), HarnessError> {
        self.unload(false)
    }
}

impl core::fmt::Debug for DriverSlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", lock(&self.object))
    }
}

impl Registry {
    pub(crate) fn new(shared: Arc<Shared>) -> Arc<Self> {
        Arc::new(Self { shared, drivers: Mutex::default(), nodes: Mutex::default() })
    }

    /// The runtime's shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Takes ownership of a driver just loaded as `object`, whose `EvtDriverUnload` is
    /// `unload`.
    pub(crate) fn add_driver(
        &self,
        object: Arc<RawObject>,
        unload: fn(&RawObject),
    ) -> Arc<DriverSlot> {
        let slot = Arc::new(DriverSlot { object: Mutex::new(Some(object)), unload });
        lock(&self.drivers).push(Arc::clone(&slot));
        slot
    }

    /// Takes ownership of a device node just added, and lets go of the nodes whose device
    /// is gone (the test's handles keep those alive as long as it needs them).
    pub(crate) fn add_node(&self, node: &Arc<Node>) {
        let mut nodes = lock(&self.nodes);
        nodes.retain(|node| !node.is_surely_removed());
        nodes.push(Arc::clone(node));
    }

    /// Removes every device left, then unloads every driver left (see the module's
    /// documentation). Returns what the checks found on the way; the teardown goes on
    /// after a finding.
    pub(crate) fn tear_down(&self) -> Vec<PnpError> {
        let nodes = std::mem::take(&mut *lock(&self.nodes));
        let mut findings = Vec::new();
        for node in nodes.iter().rev() {
            if let Err(error) = node.tear_down() {
                findings.push(error);
            }
        }
        let drivers = std::mem::take(&mut *lock(&self.drivers));
        for driver in drivers.iter().rev() {
            // Unloaded already: nothing left to do.
            let _ = driver.unload(true);
        }
        findings
    }
}
