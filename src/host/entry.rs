//! What [`driver_entry!`](crate::driver_entry) expands to on the host.

/// On the host a driver is loaded by `kmdf::host::Runtime::load`; the macro checks the type.
#[doc(hidden)]
#[macro_export]
macro_rules! __kmdf_backend_driver_entry {
    ($driver:ty) => {
        const _: () = {
            const fn assert_driver<D: $crate::Driver>() {}
            assert_driver::<$driver>();
        };
    };
}
