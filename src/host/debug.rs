//! `DbgPrintEx` on the host: a line of the trace, or of standard error outside callbacks.

use super::shared;
use super::std;

pub(crate) fn print(args: core::fmt::Arguments<'_>) {
    let mut message = Some(std::fmt::format(args));
    let recorded = shared::with_current(|shared, device| {
        shared.record_print(device, message.take().unwrap_or_default());
    });
    if recorded.is_none() {
        std::eprintln!("{}", message.unwrap_or_default());
    }
}
