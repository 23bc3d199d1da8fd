//! The power-policy calls on the host (`WdfDeviceAssignS0IdleSettings`,
//! `WdfDeviceAssignSxWakeSettings`, `WdfDeviceStopIdle`, `WdfDeviceResumeIdle`): each finds
//! the device's policy ([`super::policy`]) and asks it.

use super::device::DeviceState;
use super::object::RawObject;
use super::policy::PowerPolicy;
use crate::Result;
use crate::power_policy::{S0IdleSettings, SxWakeSettings};

fn policy(device: &RawObject) -> &PowerPolicy {
    &device.state::<DeviceState>().expect("a Device<T> views a device object").power_policy
}

pub(crate) fn assign_s0_idle_settings(device: &RawObject, settings: &S0IdleSettings) -> Result {
    policy(device).assign_s0(settings)
}

pub(crate) fn assign_sx_wake_settings(device: &RawObject, settings: SxWakeSettings) -> Result {
    policy(device).assign_sx(settings)
}

pub(crate) fn stop_idle(device: &RawObject, wait_for_d0: bool) -> Result<bool> {
    policy(device).stop_idle(wait_for_d0)
}

pub(crate) fn resume_idle(device: &RawObject) {
    policy(device).resume_idle();
}
