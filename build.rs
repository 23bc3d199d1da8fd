//! Selects the backend and, for the kernel backend, lets `wdk-build` configure the WDK.
//!
//! * `kmdf_kernel`: building for Windows without the `host-runtime` feature. The crate is a
//!   thin layer over `wdk-sys`.
//! * `kmdf_host`: everything else. The crate carries the host runtime, a user-mode model of
//!   KMDF that runs drivers under `cargo test`.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CARGO_FEATURE_HOST_RUNTIME");
    let windows = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "windows");
    let host_runtime = std::env::var_os("CARGO_FEATURE_HOST_RUNTIME").is_some();
    if windows && !host_runtime {
        println!("cargo::rustc-cfg=kmdf_kernel");
        configure_wdk();
    } else {
        println!("cargo::rustc-cfg=kmdf_host");
    }
}

/// `wdk-build` is a build-dependency only when the build script itself runs on Windows
/// (Cargo matches build-dependency platforms against the host); it does not compile on other
/// hosts. Checking the kernel backend from Linux (`scripts/check-kernel`) needs nothing from
/// it here: `wdk-sys`'s own build script generates the bindings.
#[cfg(windows)]
fn configure_wdk() {
    if let Err(error) = wdk_build::configure_wdk_library_build() {
        panic!("wdk-build could not configure the WDK: {error}");
    }
}

#[cfg(not(windows))]
fn configure_wdk() {}
