//! The kernel backend's pointer logic (`src/kernel/raw.rs`: a context's layout, the opaque
//! view of a work item's context, the runners' intrusive list) compiled and tested on the
//! host, where Miri can check it: `cargo +nightly miri test --test kernel_raw`. The tests
//! are in that file; the rest of `src/kernel` calls the framework and only builds for
//! Windows.

#[path = "../src/kernel/raw.rs"]
mod raw;
