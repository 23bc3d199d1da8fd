//! A small KMDF 1.31 driver over kmdf: one device per `EvtDriverDeviceAdd`, with a
//! `EvtDeviceD0Entry` that does nothing, file objects, a device interface, a default queue
//! and a manual one. It exists so that `scripts/check-kernel` builds (and with `--link`
//! links) a driver whose KMDF minor version differs from the toaster sample's, and one
//! whose I/O code (every queue and file trampoline, the request DDIs) is instantiated.

#![no_std]

use kmdf::file::{FileCallbacks, FileObject, IoType};
use kmdf::interface::{Access, Guid, TransferMethod, ctl_code};
use kmdf::io_queue::{Dispatch, IoQueue, IoQueueCallbacks, IoQueueConfig, IoStop, StopAction};
use kmdf::object::ObjectRef;
use kmdf::request::{CancelableRequest, Marked, RequestId, RequestType};
use kmdf::sync::SpinLock;
use kmdf::{
    Device, DeviceInit, DevicePowerState, Driver, NtStatus, PnpPowerCallbacks, Request, Result,
};

/// The device interface applications open.
pub const GUID_DEVINTERFACE_LAMP: Guid = Guid::parse("0c9c3a8e-1b7d-4d0e-9a53-2f6b8f0e4d11");
/// Echoes its input into its output.
pub const IOCTL_LAMP_ECHO: u32 = ctl_code(0x8000, 0x800, TransferMethod::Buffered, Access::Any);
/// Parks the request in the manual queue.
pub const IOCTL_LAMP_PARK: u32 = ctl_code(0x8000, 0x801, TransferMethod::Buffered, Access::Any);

/// The driver: no state.
pub struct MinimalDriver;

impl Driver for MinimalDriver {
    fn driver_entry() -> Result<Self> {
        Ok(MinimalDriver)
    }

    fn device_add(&self, mut device_init: DeviceInit<'_>) -> Result {
        device_init.set_io_type(IoType::Buffered);
        device_init.set_exclusive(false);
        device_init.set_file_object::<Handle>();
        device_init.create_with(|device| {
            device.create_device_interface(&GUID_DEVINTERFACE_LAMP, None)?;
            let config = IoQueueConfig::default_queue(Dispatch::parallel());
            IoQueue::create(device, config, Lamps { pending: SpinLock::new(None)? })?;
            let parked = IoQueue::create(device, IoQueueConfig::new(Dispatch::Manual), Parked)?;
            parked.configure_dispatching(device, RequestType::InternalDeviceControl)?;
            Ok(Lamp { parked })
        })?;
        Ok(())
    }
}

/// The device's context.
pub struct Lamp {
    parked: ObjectRef<IoQueue<Parked>>,
}

kmdf::vtable! {
    impl PnpPowerCallbacks for Lamp {
        /// Nothing to power up.
        fn d0_entry(&self, _device: &Device<Self>, _previous: DevicePowerState) -> Result {
            Ok(())
        }
    }
}

/// An open handle.
pub struct Handle;

kmdf::vtable! {
    impl FileCallbacks for Handle {
        type Device = Lamp;

        fn create(_device: &Device<Lamp>) -> Result<Self> {
            Ok(Handle)
        }

        fn cleanup(&self, _file: &FileObject<Self>, _device: &Device<Lamp>) {}

        fn close(&self, _file: &FileObject<Self>, _device: &Device<Lamp>) {}
    }
}

/// The default queue's context: one read kept cancelable.
pub struct Lamps {
    pending: SpinLock<Option<CancelableRequest>>,
}

kmdf::vtable! {
    impl IoQueueCallbacks for Lamps {
        type Device = Lamp;

        fn read(
            &self,
            queue: &IoQueue<Self>,
            _device: &Device<Lamp>,
            request: Request,
            _len: usize,
        ) {
            if request.file::<Handle>().is_none() {
                request.complete(NtStatus::INVALID_DEVICE_REQUEST);
                return;
            }
            match request.mark_cancelable(queue) {
                Marked::Cancelable(claim) => {
                    let previous = self.pending.lock().replace(claim);
                    if let Some(request) = previous.and_then(CancelableRequest::unmark) {
                        request.complete(NtStatus::CANCELLED);
                    }
                }
                Marked::Canceled(request) => request.complete(NtStatus::CANCELLED),
            }
        }

        fn write(
            &self,
            _queue: &IoQueue<Self>,
            _device: &Device<Lamp>,
            request: Request,
            len: usize,
        ) {
            let _ = request.input_buffer(len).map(<[u8]>::len);
            if let Err(error) = request.complete_with_information(NtStatus::SUCCESS, len) {
                error.request.complete(error.status.status());
            }
        }

        fn device_control(
            &self,
            _queue: &IoQueue<Self>,
            device: &Device<Lamp>,
            mut request: Request,
            output_length: usize,
            _input_length: usize,
            code: u32,
        ) {
            match code {
                IOCTL_LAMP_ECHO => {
                    let mut first = 0;
                    if let Ok(input) = request.input_buffer(1) {
                        first = input[0];
                    }
                    let n = match request.output_buffer(1) {
                        Ok(output) => {
                            output[0] = first;
                            1
                        }
                        Err(_) => 0,
                    };
                    let _ = output_length;
                    if let Err(error) = request.complete_with_information(NtStatus::SUCCESS, n) {
                        error.request.complete(error.status.status());
                    }
                }
                IOCTL_LAMP_PARK => {
                    if let Err(error) = request.forward(&device.context().parked) {
                        error.request.complete(error.status.status());
                    }
                }
                _ => request.complete(NtStatus::INVALID_DEVICE_REQUEST),
            }
        }

        fn stop(&self, _queue: &IoQueue<Self>, _device: &Device<Lamp>, stop: IoStop<'_>) {
            match stop.action() {
                StopAction::Suspend => stop.acknowledge(),
                StopAction::Purge => {
                    let claim = self.pending.lock().take();
                    if let Some(request) = claim.and_then(CancelableRequest::unmark) {
                        request.complete(NtStatus::CANCELLED);
                    }
                }
            }
        }

        fn resume(&self, _queue: &IoQueue<Self>, _device: &Device<Lamp>, _request: RequestId) {}

        fn request_cancel(&self, _queue: &IoQueue<Self>, _device: &Device<Lamp>, request: Request) {
            let _ = self.pending.lock().take();
            request.complete(NtStatus::CANCELLED);
        }

        fn cleanup(&self, _queue: &IoQueue<Self>, _device: &Device<Lamp>) {}
    }
}

/// The manual queue's context: what it gets is completed at its ready notification.
pub struct Parked;

kmdf::vtable! {
    impl IoQueueCallbacks for Parked {
        type Device = Lamp;

        fn ready_notify(&self, queue: &IoQueue<Self>, _device: &Device<Lamp>) {
            while let Ok(request) = queue.retrieve_next_request() {
                let status =
                    if request.is_canceled() { NtStatus::CANCELLED } else { NtStatus::SUCCESS };
                request.complete(status);
            }
        }

        fn canceled_on_queue(
            &self,
            _queue: &IoQueue<Self>,
            _device: &Device<Lamp>,
            request: Request,
        ) {
            request.complete(NtStatus::CANCELLED);
        }
    }
}

kmdf::driver_entry!(MinimalDriver);
