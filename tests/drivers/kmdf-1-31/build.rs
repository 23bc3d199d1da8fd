//! Lets wdk-build configure the driver's link (kernel libraries, entry point, `.sys`).

fn main() {
    #[cfg(windows)]
    if let Err(error) = wdk_build::configure_wdk_binary_build() {
        panic!("wdk-build could not configure the driver build: {error}");
    }
}
