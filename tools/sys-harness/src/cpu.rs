//! What user mode does not let the driver's code do: read and write CR8 (the IRQL on x64,
//! which the kernel backend reads inline) and break into a debugger (`int3`, wdk-panic's
//! `dbg_break` in debug builds).
//!
//! `mov reg, cr8` and `mov cr8, reg` fault in user mode (#GP, delivered as SIGSEGV): the
//! handler decodes the instruction at the faulting address, reads or writes the faulting
//! thread's IRQL *in the host runtime's model* (`kmdf::host::raw::current_irql`, the same
//! per-thread IRQL the runtime's spin locks, timers and checks use), and skips it. `int3`
//! (SIGTRAP) is skipped. Any other fault ends the run with a report naming the address and
//! the image's symbol there.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::report;

/// How many `mov reg, cr8` and `mov cr8, reg` the handler emulated.
pub static CR8_READS: AtomicU64 = AtomicU64::new(0);
/// See [`CR8_READS`].
pub static CR8_WRITES: AtomicU64 = AtomicU64::new(0);

/// The image's address range and symbols, for fault reports.
pub static IMAGE: OnceLock<(usize, usize)> = OnceLock::new();

/// Installs the handlers.
pub fn install() {
    for signal in [libc::SIGSEGV, libc::SIGILL, libc::SIGTRAP, libc::SIGBUS] {
        // SAFETY: a zeroed `sigaction` is a valid value to fill in.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        // SAFETY: installs a handler with the three-argument signature SA_SIGINFO asks for;
        // `action` is valid for the call.
        let installed = unsafe { libc::sigaction(signal, &raw const action, std::ptr::null_mut()) };
        assert_eq!(installed, 0, "sigaction");
    }
}

/// The registers of `mcontext_t.gregs` in the order the `x86_64` ModR/M encoding numbers
/// them (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15).
const GREGS: [libc::c_int; 16] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_RSP,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
    libc::REG_R8,
    libc::REG_R9,
    libc::REG_R10,
    libc::REG_R11,
    libc::REG_R12,
    libc::REG_R13,
    libc::REG_R14,
    libc::REG_R15,
];

extern "C" fn handler(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler, for the
    // handler's duration; only this thread touches it.
    let gregs = unsafe { &mut (*context).uc_mcontext.gregs };
    let rip = gregs[libc::REG_RIP as usize].cast_unsigned() as usize;
    if signal == libc::SIGTRAP {
        return; // int3: RIP is past it already
    }
    let in_image = IMAGE.get().is_some_and(|&(base, size)| rip >= base && rip < base + size);
    if in_image && (signal == libc::SIGSEGV || signal == libc::SIGILL) {
        // SAFETY: RIP points into the mapped image (checked), whose code is readable; the
        // longest form decoded is 4 bytes, within the image's last page at worst.
        let bytes = unsafe { std::ptr::read_unaligned(rip as *const [u8; 4]) };
        // REX.W/R (0x44..0x4f with R set), 0F 20 (mov r64, crN) or 0F 22 (mov crN, r64),
        // ModR/M with mod = 11 and reg = 0 (CR8 with REX.R).
        let rex = bytes[0];
        let is_rex_r = rex & 0xf0 == 0x40 && rex & 0x04 != 0;
        if is_rex_r
            && bytes[1] == 0x0f
            && (bytes[2] == 0x20 || bytes[2] == 0x22)
            && bytes[3] & 0xf8 == 0xc0
        {
            let register = usize::from(bytes[3] & 7) + if rex & 1 == 1 { 8 } else { 0 };
            let greg = GREGS[register].cast_unsigned() as usize;
            if bytes[2] == 0x20 {
                CR8_READS.fetch_add(1, Ordering::Relaxed);
                gregs[greg] = i64::from(kmdf::host::raw::current_irql());
            } else {
                CR8_WRITES.fetch_add(1, Ordering::Relaxed);
                kmdf::host::raw::set_irql(u8::try_from(gregs[greg]).unwrap_or(u8::MAX));
            }
            gregs[libc::REG_RIP as usize] += 4;
            return;
        }
    }
    // SAFETY: `info` is valid for an SA_SIGINFO handler.
    let info = unsafe { &*info };
    // SAFETY: a SIGSEGV/SIGILL/SIGBUS siginfo carries the faulting address.
    let address = unsafe { info.si_addr() } as usize;
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV (access violation)",
        libc::SIGILL => "SIGILL (illegal instruction)",
        libc::SIGBUS => "SIGBUS",
        _ => "a signal",
    };
    report::bug_check(&format!(
        "{name} at {} (faulting address {address:#x})",
        report::describe(rip)
    ));
}
