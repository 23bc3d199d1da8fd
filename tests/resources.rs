//! Hardware resources: what a test assigns to a device node is what
//! `EvtDevicePrepareHardware` (raw and translated lists) and `EvtDeviceReleaseHardware`
//! (the translated list only, as KMDF passes it) see.

use kmdf::host::{AssignedResources, PnpAction, Runtime};
use kmdf::pnp::{HardwareResources, Resource};
use kmdf::sync::SpinLock;
use kmdf::{Device, DeviceInit, Driver, PnpPowerCallbacks, Result};

struct Board;

impl Driver for Board {
    fn driver_entry() -> Result<Self> {
        Ok(Board)
    }

    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        device_init.create(Registers { seen: SpinLock::new(Vec::new())? })?;
        Ok(())
    }
}

type Lists = (Vec<Resource>, Vec<Resource>);

struct Registers {
    /// (callback, raw list, translated list), per call.
    seen: SpinLock<Vec<(&'static str, Lists)>>,
}

fn lists(resources: &HardwareResources<'_>) -> Lists {
    assert_eq!(resources.raw().count(), resources.raw_count() as usize);
    assert_eq!(resources.raw_descriptor(resources.raw_count()), None, "past the end");
    (resources.raw().collect(), resources.translated().collect())
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Registers {
        fn prepare_hardware(&self, _device: &Device<Self>, resources: HardwareResources<'_>) -> Result {
            self.seen.lock().push(("prepare", lists(&resources)));
            Ok(())
        }

        fn release_hardware(&self, _device: &Device<Self>, resources: HardwareResources<'_>) -> Result {
            self.seen.lock().push(("release", lists(&resources)));
            Ok(())
        }
    }
}

#[test]
fn prepare_hardware_sees_the_assigned_resources_and_release_the_translated_ones() {
    let memory = Resource::Memory { start: 0xFEB0_0000, length: 0x1000 };
    let port = Resource::Port { start: 0x300, length: 8 };
    let line = Resource::Interrupt { vector: 11, affinity: 1, message_signaled: false };
    let routed = Resource::Interrupt { vector: 0x91, affinity: 0b1111, message_signaled: false };
    let msi = Resource::Interrupt { vector: 0xA0, affinity: 0b11, message_signaled: true };
    let resources = AssignedResources::new()
        .with(memory)
        .with(port)
        .with_translated(line, routed)
        .with(msi)
        .with(Resource::Other { kind: 4 }); // CmResourceTypeDma
    let runtime = Runtime::new();
    let driver = runtime.load::<Board>().unwrap();
    let node = driver.add_device_with(resources).unwrap();
    node.start().unwrap();
    node.apply(PnpAction::Stop).unwrap();
    node.start().unwrap(); // the same hardware again after the rebalance
    let raw = vec![memory, port, line, msi, Resource::Other { kind: 4 }];
    let translated = vec![memory, port, routed, msi, Resource::Other { kind: 4 }];
    let calls = node.with_context(|registers: &Registers| registers.seen.lock().clone()).unwrap();
    assert_eq!(
        calls,
        [
            ("prepare", (raw.clone(), translated.clone())),
            ("release", (Vec::new(), translated.clone())),
            ("prepare", (raw, translated)),
        ]
    );
    assert_eq!(Resource::Other { kind: 4 }.kind(), 4);
    assert_eq!(memory.kind(), Resource::TYPE_MEMORY);
}

#[test]
fn a_device_added_without_resources_sees_empty_lists() {
    let runtime = Runtime::new();
    let driver = runtime.load::<Board>().unwrap();
    let node = driver.add_device().unwrap();
    node.start().unwrap();
    let calls = node.with_context(|registers: &Registers| registers.seen.lock().clone()).unwrap();
    assert_eq!(calls, [("prepare", (Vec::new(), Vec::new()))]);
}
