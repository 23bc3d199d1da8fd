//! The toaster sample driver on the kmdf host runtime.
//!
//! ```text
//! cargo run --example toaster -- [ACTION ...] [--fail CALLBACK[@N]] [--late-work]
//! ```
//!
//! The driver is `driver.rs`; `kmdf-driver/` builds the same file as a KMDF driver.

mod driver;
mod runner;

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = runner::run(&args);
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    ExitCode::from(outcome.code)
}
