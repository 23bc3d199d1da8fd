//! The ntoskrnl.exe (and HAL) functions a driver image imports, with the Windows calling
//! convention, on the host: pool allocations on the C heap, spin locks with the host
//! runtime's IRQL model, thread and processor identities, the C memory functions, and
//! `KeBugCheckEx`, which ends the scenario with a report.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use kmdf::host::raw;

use crate::report;

/// The import `module!name`, if the harness provides it.
pub fn resolve(module: &str, name: &str) -> Option<usize> {
    let module = module.to_ascii_lowercase();
    if module == "wdfldr.sys" {
        return crate::wdf::resolve_loader(name);
    }
    if module != "ntoskrnl.exe" && module != "hal.dll" {
        return None;
    }
    Some(match name {
        "ExAllocatePool2" => ex_allocate_pool2 as *const () as usize,
        "ExFreePool" => ex_free_pool as *const () as usize,
        "KeAcquireSpinLockRaiseToDpc" => ke_acquire_spin_lock_raise_to_dpc as *const () as usize,
        "KeReleaseSpinLock" => ke_release_spin_lock as *const () as usize,
        "KeBugCheckEx" => ke_bug_check_ex as *const () as usize,
        "KeGetCurrentProcessorNumberEx" => ke_get_current_processor_number_ex as *const () as usize,
        "PsGetCurrentThreadId" => ps_get_current_thread_id as *const () as usize,
        "memcpy" => memcpy as *const () as usize,
        "memmove" => memmove as *const () as usize,
        "memset" => memset as *const () as usize,
        _ => return None,
    })
}

/// `POOL_FLAG_UNINITIALIZED`: without it, `ExAllocatePool2` zeroes the allocation.
const POOL_FLAG_UNINITIALIZED: u64 = 0x2;

extern "win64" fn ex_allocate_pool2(flags: u64, size: usize, _tag: u32) -> *mut c_void {
    let _ = flags & POOL_FLAG_UNINITIALIZED; // zeroed either way
    // SAFETY: calloc with any size; glibc's allocations are 16-byte aligned, as pool
    // allocations on x64 are.
    unsafe { libc::calloc(1, size.max(1)) }
}

extern "win64" fn ex_free_pool(pointer: *mut c_void) {
    if pointer.is_null() {
        report::bug_check("ExFreePool(NULL) (BAD_POOL_CALLER)");
    }
    // SAFETY: the driver frees what ExAllocatePool2 (calloc) returned, once.
    unsafe { libc::free(pointer) }
}

const DISPATCH_LEVEL: u8 = 2;

extern "win64" fn ke_acquire_spin_lock_raise_to_dpc(lock: *mut usize) -> u8 {
    let old = raw::current_irql();
    if old > DISPATCH_LEVEL {
        report::bug_check(&format!(
            "KeAcquireSpinLockRaiseToDpc at IRQL {old} (IRQL_NOT_LESS_OR_EQUAL)"
        ));
    }
    raw::set_irql(DISPATCH_LEVEL);
    // SAFETY: a KSPIN_LOCK is a pointer-sized, pointer-aligned word the driver owns.
    let word = unsafe { AtomicUsize::from_ptr(lock) };
    while word.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::hint::spin_loop();
    }
    old
}

extern "win64" fn ke_release_spin_lock(lock: *mut usize, old: u8) {
    // SAFETY: as in KeAcquireSpinLockRaiseToDpc.
    let word = unsafe { AtomicUsize::from_ptr(lock) };
    if word.swap(0, Ordering::Release) != 1 {
        report::bug_check("KeReleaseSpinLock of a lock that is not held (SPIN_LOCK_NOT_OWNED)");
    }
    raw::set_irql(old);
}

extern "win64" fn ke_bug_check_ex(code: u32, p1: usize, p2: usize, p3: usize, p4: usize) -> ! {
    // wdk-panic: 'RPNC', the panic's file (pointer, length), line and column.
    if code == u32::from_be_bytes(*b"RPNC") {
        let file = if p1 == 0 {
            String::from("?")
        } else {
            // SAFETY: wdk-panic passes the location's file name as pointer and length, a
            // string in the image's read-only data.
            let bytes = unsafe { std::slice::from_raw_parts(p1 as *const u8, p2) };
            String::from_utf8_lossy(bytes).into_owned()
        };
        report::bug_check(&format!(
            "KeBugCheckEx(0x{code:08X} RUST_PANIC): a Rust panic in the driver at {file}:{p3}:{p4}"
        ));
    }
    report::bug_check(&format!("KeBugCheckEx(0x{code:08X}, {p1:#x}, {p2:#x}, {p3:#x}, {p4:#x})"));
}

thread_local! {
    /// Each host thread is its own processor: the kernel backend keeps per-processor state
    /// that only the processor's own thread touches at DISPATCH_LEVEL.
    static PROCESSOR: Cell<u32> = const { Cell::new(u32::MAX) };
}

static NEXT_PROCESSOR: AtomicU32 = AtomicU32::new(0);

extern "win64" fn ke_get_current_processor_number_ex(_number: *mut c_void) -> u32 {
    PROCESSOR.with(|processor| {
        if processor.get() == u32::MAX {
            let next = NEXT_PROCESSOR.fetch_add(1, Ordering::Relaxed);
            if next >= 2048 {
                report::bug_check("more than 2048 host threads ran driver code (MAX_PROCESSORS)");
            }
            processor.set(next);
        }
        processor.get()
    })
}

extern "win64" fn ps_get_current_thread_id() -> usize {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    usize::try_from(tid).unwrap_or(0) * 4
}

extern "win64" fn memcpy(to: *mut c_void, from: *const c_void, len: usize) -> *mut c_void {
    // SAFETY: the driver's memcpy call, with its contract.
    unsafe { libc::memcpy(to, from, len) }
}

extern "win64" fn memmove(to: *mut c_void, from: *const c_void, len: usize) -> *mut c_void {
    // SAFETY: the driver's memmove call, with its contract.
    unsafe { libc::memmove(to, from, len) }
}

extern "win64" fn memset(to: *mut c_void, value: i32, len: usize) -> *mut c_void {
    // SAFETY: the driver's memset call, with its contract.
    unsafe { libc::memset(to, value, len) }
}
