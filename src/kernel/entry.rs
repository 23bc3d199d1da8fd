//! `DriverEntry` and the driver-wide callbacks.

use core::any::TypeId;
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

pub use wdk_sys::{NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT};
use wdk_sys::{WDF_DRIVER_CONFIG, WDFDEVICE_INIT, WDFDRIVER, call_unsafe_wdf_function_binding};

pub use wdk_alloc::WdkAllocator;
// Links wdk-panic's panic handler into every driver: a panic is a bug check.
use wdk_panic as _;

use super::{attributes_for, context, status, struct_size, write_context};
use crate::{DeviceInit, Driver};

/// The body of the `DriverEntry` that [`driver_entry!`](crate::driver_entry) exports.
///
/// # Safety
///
/// Called only by the kernel's driver loader, as `DriverEntry`, with its arguments.
pub unsafe fn driver_entry<D: Driver>(
    driver_object: PDRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    let mut config = WDF_DRIVER_CONFIG {
        Size: struct_size::<WDF_DRIVER_CONFIG>(),
        EvtDriverDeviceAdd: Some(device_add::<D>),
        EvtDriverUnload: Some(unload::<D>),
        DriverInitFlags: 0,
        DriverPoolTag: 0,
    };
    let mut attributes = attributes_for::<D>(None, ptr::null_mut());
    let mut driver: WDFDRIVER = ptr::null_mut();
    // SAFETY: the loader's arguments are passed on unchanged; the structures are initialized
    // as their `_INIT` functions do and outlive the call.
    let created = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver_object,
            registry_path,
            &raw mut attributes,
            &raw mut config,
            &raw mut driver,
        )
    };
    if created < 0 {
        return created;
    }
    // The driver value is built after WdfDriverCreate: what `driver_entry` creates (a lock,
    // say) is a framework object, and the framework is only ready once the driver object
    // exists. On failure the framework deletes the driver object when DriverEntry returns
    // the error; its context was never written, so the destroy callback drops nothing.
    let value = match D::driver_entry() {
        Ok(value) => value,
        Err(error) => return error.to_raw(),
    };
    // SAFETY: the driver object was just created with `attributes_for::<D>`; no device can
    // be added before `DriverEntry` returns.
    unsafe { write_context(driver.cast(), value) };
    DRIVER_TYPE
        .store((type_id_of::<D> as fn() -> TypeId as *const ()).cast_mut(), Ordering::Release);
    0
}

/// The type of the `WDFDRIVER`'s context, as a `type_id_of::<D>` function: a binary has one
/// driver, set once by `DriverEntry`.
static DRIVER_TYPE: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

fn type_id_of<D: 'static>() -> TypeId {
    TypeId::of::<D>()
}

/// The driver value (`WdfGetDriver`'s context), if it is a `D`.
pub(crate) fn driver<'a, D: Driver>() -> Option<&'a D> {
    let stored = DRIVER_TYPE.load(Ordering::Acquire);
    if stored.is_null() {
        return None;
    }
    // SAFETY: the only value ever stored is a `type_id_of::<_>` function pointer, cast to a
    // data pointer above; casting it back gives that function.
    let type_id_of_driver: fn() -> TypeId = unsafe { core::mem::transmute(stored) };
    if type_id_of_driver() != TypeId::of::<D>() {
        return None;
    }
    // SAFETY: the KMDF stub sets the globals pointer before `DriverEntry` and never
    // changes it again, so this read of the static races with no write.
    let globals = unsafe { wdk_sys::WdfDriverGlobals };
    // SAFETY: `WdfGetDriver` is this read (wdfdriver.h: `WdfDriverGlobals->Driver`); the
    // globals live as long as the driver is loaded, and WdfDriverCreate, which succeeded
    // before DRIVER_TYPE was set, wrote `Driver`.
    let handle = unsafe { (*globals).Driver };
    // SAFETY: the driver object was created with `attributes_for::<D>` (its type is `D`,
    // checked above) and stays loaded while any of its devices, through which callers
    // reach it, exists.
    Some(unsafe { context(handle.cast()) })
}

/// `EvtDriverDeviceAdd`.
unsafe extern "C" fn device_add<D: Driver>(
    driver: WDFDRIVER,
    device_init: *mut WDFDEVICE_INIT,
) -> NTSTATUS {
    // SAFETY: KMDF passes the driver created in `driver_entry::<D>`, alive while loaded.
    let this: &D = unsafe { context(driver.cast()) };
    let init = DeviceInit {
        raw: super::RawDeviceInit { init: device_init, file_device: None, _scope: PhantomData },
    };
    status(this.device_add(init))
}

/// `EvtDriverUnload`.
unsafe extern "C" fn unload<D: Driver>(driver: WDFDRIVER) {
    // SAFETY: as in `device_add`; the context is dropped after this, in the destroy callback.
    let this: &D = unsafe { context(driver.cast()) };
    // From here on the framework deletes the driver's locks with the driver object.
    super::sync::driver_unloading();
    this.unload();
}

/// What [`driver_entry!`](crate::driver_entry) expands to in the kernel.
#[doc(hidden)]
#[macro_export]
macro_rules! __kmdf_backend_driver_entry {
    ($driver:ty) => {
        /// The driver's entry point, called by the kernel's driver loader.
        ///
        /// # Safety
        ///
        /// Only the loader calls it.
        #[unsafe(export_name = "DriverEntry")]
        pub unsafe extern "system" fn __kmdf_driver_entry(
            driver_object: $crate::__private::PDRIVER_OBJECT,
            registry_path: $crate::__private::PCUNICODE_STRING,
        ) -> $crate::__private::NTSTATUS {
            // SAFETY: this is `DriverEntry`, called by the loader with its arguments.
            unsafe { $crate::__private::driver_entry::<$driver>(driver_object, registry_path) }
        }

        #[global_allocator]
        static __KMDF_GLOBAL_ALLOCATOR: $crate::__private::WdkAllocator =
            $crate::__private::WdkAllocator;
    };
}
