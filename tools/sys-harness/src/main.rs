//! `sys-harness`: runs a KMDF driver's real `.sys` (the kmdf kernel backend, linked by
//! `scripts/check-kernel --link`) in this Linux process, against the kmdf host runtime, and
//! prints what the sample's host runner prints for the same arguments.
//!
//! ```text
//! sys-harness SAMPLE IMAGE.sys [ACTION ...] [--fail CALLBACK[@N]] [--late-work]
//! ```
//!
//! Standard output and exit codes are the host runner's (`cargo run --example SAMPLE`); a
//! bug check (the driver's `KeBugCheckEx`, a fault, a KMDF rule the harness enforces, a DDI
//! it does not implement) prints the trace so far and a report on stderr, exit status 3.
//! Exit status 4: the image could not be loaded.
//!
//! See README.md for what this proves and what it does not.

#![allow(clippy::cast_possible_truncation, reason = "x86_64 only: usize and u64 are one size")]

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("sys-harness runs x86_64 Windows driver code: x86_64 Linux only");

mod cpu;
mod ntos;
mod pe;
mod report;
mod runner;
mod wdf;

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sample, image, rest @ ..] = args.as_slice() else {
        eprintln!("usage: sys-harness SAMPLE IMAGE.sys [ARGS ...]   (SAMPLE: toaster)");
        return ExitCode::from(2);
    };
    if sample != "toaster" {
        eprintln!("sys-harness: unknown sample `{sample}` (the samples: toaster)");
        return ExitCode::from(2);
    }
    let outcome = runner::run(image, rest);
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    let _ = std::io::stdout().flush();
    // The runtime's teardown (the devices left, the driver's unload) runs the driver's code
    // too: a bug check there ends the process with status 3 after the output above.
    runner::tear_down();
    wdf::print_counts();
    ExitCode::from(outcome.code)
}
