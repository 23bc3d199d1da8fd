//! The end of a scenario on a bug check: the trace so far on stdout (as the host runner
//! prints it up to a bug check), then a readable report on stderr, and exit status 3.

use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use kmdf::host::Runtime;

use crate::pe::Symbols;

/// The scenario's runtime, for the trace; null once its teardown started.
pub static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());
/// The image's symbols (its link map), for addresses.
pub static SYMBOLS: OnceLock<Symbols> = OnceLock::new();

/// Exit status of a bug check.
pub const BUG_CHECK_EXIT: i32 = 3;

/// An address, with the image symbol there when the link map is known.
pub fn describe(address: usize) -> String {
    match SYMBOLS.get().and_then(|symbols| symbols.name(address)) {
        Some(name) => format!("{address:#x} ({name})"),
        None => format!("{address:#x}"),
    }
}

/// Ends the run: the machine bug-checked (or the harness found the driver misusing KMDF,
/// which a checked KMDF or the verifier would bug-check for).
pub fn bug_check(message: &str) -> ! {
    let mut out = std::io::stdout().lock();
    let runtime = RUNTIME.load(Ordering::SeqCst);
    let teardown = runtime.is_null();
    if !teardown {
        // SAFETY: the runtime outlives every use while the pointer is set: `main` nulls it
        // before the runtime is dropped.
        let runtime = unsafe { &*runtime };
        for line in runtime.trace().lines() {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = out.flush();
    let thread = std::thread::current();
    let _ = writeln!(
        std::io::stderr(),
        "sys-harness: BUG CHECK on thread {} (IRQL {}){}: {message}",
        thread.name().unwrap_or("?"),
        kmdf::host::raw::current_irql(),
        if teardown { ", in the runtime's teardown after the scenario" } else { "" },
    );
    // SAFETY: `_exit` ends the process at once, without running destructors or atexit
    // handlers that could wait for the thread that bug-checked.
    unsafe { libc::_exit(BUG_CHECK_EXIT) }
}
