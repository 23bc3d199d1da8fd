//! `DbgPrintEx` in the kernel: the text is formatted into a stack buffer, since the crate
//! does not allocate.

use core::fmt::{self, Write as _};

/// `DPFLTR_IHVDRIVER_ID` (`DPFLTR_TYPE`, dpfilter.h): the component of hardware vendors'
/// drivers.
const DPFLTR_IHVDRIVER_ID: u32 = 77;
/// `DPFLTR_INFO_LEVEL`.
const DPFLTR_INFO_LEVEL: u32 = 3;

/// A NUL-terminated line of at most 511 bytes; longer text is cut.
struct Line {
    bytes: [u8; 512],
    len: usize,
}

impl fmt::Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - 1 - self.len;
        let take = text.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

pub(crate) fn print(args: fmt::Arguments<'_>) {
    let mut line = Line { bytes: [0; 512], len: 0 };
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    line.bytes[line.len.min(511)] = 0;
    // SAFETY: the format is a static C string with one `%s`, matched by a pointer to a
    // NUL-terminated buffer that lives across the call; DbgPrintEx may be called at any
    // IRQL up to DIRQL for `%s` of nonpaged (stack) memory.
    unsafe {
        wdk_sys::ntddk::DbgPrintEx(
            DPFLTR_IHVDRIVER_ID,
            DPFLTR_INFO_LEVEL,
            c"%s".as_ptr(),
            line.bytes.as_ptr(),
        );
    }
}
