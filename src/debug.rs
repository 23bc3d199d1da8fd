//! Debug output: `DbgPrintEx`.
//!
//! [`debug_print!`](crate::debug_print) formats like `format!` and prints one line. In the
//! kernel it goes to the kernel debugger through `DbgPrintEx` (component
//! `DPFLTR_IHVDRIVER_ID`, level `DPFLTR_INFO_LEVEL`; enable it with the debugger's
//! `ed nt!Kd_IHVDRIVER_Mask 0xf` or the `Debug Print Filter` registry key), formatted on the
//! stack and cut at 511 bytes. On the host runtime it becomes a line of the trace,
//! `DbgPrintEx(TEXT)`, attributed to the device whose callback printed it; printed outside
//! any callback, it goes to standard error.

use core::fmt;

use crate::backend;

/// Prints one line of debug output; see the [module documentation](self).
/// [`debug_print!`](crate::debug_print) is the usual way to call it.
pub fn print(args: fmt::Arguments<'_>) {
    backend::debug::print(args);
}

/// Prints one line of debug output (`DbgPrintEx`), formatted like `format!`.
///
/// ```
/// let slices = 2;
/// kmdf::debug_print!("toaster: {slices} slices ready");
/// ```
#[macro_export]
macro_rules! debug_print {
    ($($arg:tt)*) => {
        $crate::debug::print(::core::format_args!($($arg)*))
    };
}
