//! Lets wdk-build configure the driver's link (kernel libraries, entry point, `.sys`).
//!
//! Keyed on the target, not on the host: scripts/check-kernel builds and links the driver
//! for Windows from Linux too.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "windows")
        && let Err(error) = wdk_build::configure_wdk_binary_build()
    {
        panic!("wdk-build could not configure the driver build: {error}");
    }
}
