//! A PE32+ loader for a driver image: maps the sections, applies the base relocations,
//! binds the imports by name to the harness's own functions, and finds the exports.

use std::collections::BTreeMap;
use std::fmt;
use std::ptr;

/// A loaded image.
pub struct Image {
    pub base: usize,
    pub size: usize,
    pub entry: usize,
    pub exports: BTreeMap<String, usize>,
}

/// Why an image cannot be loaded.
#[derive(Debug)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError(message.into()))
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, LoadError> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| LoadError(format!("truncated image at {at:#x}")))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, LoadError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| LoadError(format!("truncated image at {at:#x}")))
}

fn u64_at(data: &[u8], at: usize) -> Result<u64, LoadError> {
    data.get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| LoadError(format!("truncated image at {at:#x}")))
}

fn c_string(data: &[u8], at: usize) -> Result<String, LoadError> {
    let rest =
        data.get(at..).ok_or_else(|| LoadError(format!("name at {at:#x} out of the image")))?;
    let end =
        rest.iter().position(|&b| b == 0).ok_or_else(|| LoadError("unterminated name".into()))?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Loads `file` (the bytes of a `.sys`), resolving each import `(module, name)` with
/// `resolve`.
#[allow(clippy::too_many_lines, reason = "one pass over the image, in the format's order")]
pub fn load(
    file: &[u8],
    resolve: impl Fn(&str, &str) -> Option<usize>,
) -> Result<Image, LoadError> {
    if file.get(..2) != Some(b"MZ") {
        return err("not a PE image (no MZ header)");
    }
    let pe = u32_at(file, 0x3c)? as usize;
    if file.get(pe..pe + 4) != Some(b"PE\0\0") {
        return err("not a PE image (no PE signature)");
    }
    let coff = pe + 4;
    let machine = u16_at(file, coff)?;
    if machine != 0x8664 {
        return err(format!("machine {machine:#x}, not x86_64 (0x8664)"));
    }
    let sections = u16_at(file, coff + 2)? as usize;
    let optional_size = u16_at(file, coff + 16)? as usize;
    let opt = coff + 20;
    if u16_at(file, opt)? != 0x20b {
        return err("not a PE32+ image");
    }
    let entry_rva = u32_at(file, opt + 16)? as usize;
    let image_base = u64_at(file, opt + 24)?;
    let size = u32_at(file, opt + 56)? as usize;
    let headers = u32_at(file, opt + 60)? as usize;
    let directories = u32_at(file, opt + 108)? as usize;
    let directory = |index: usize| -> Result<(usize, usize), LoadError> {
        if index >= directories {
            return Ok((0, 0));
        }
        let at = opt + 112 + index * 8;
        Ok((u32_at(file, at)? as usize, u32_at(file, at + 4)? as usize))
    };

    // Map: read/write/execute (a dev-time tool: the image is trusted, its own build).
    // SAFETY: an anonymous private mapping of `size` bytes; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return err(format!("cannot map {size} bytes"));
    }
    // SAFETY: the mapping is `size` bytes long, readable and writable, and owned here (it
    // is never unmapped: the image lives as long as the process).
    let image: &mut [u8] = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), size) };
    let copy = |image: &mut [u8], to: usize, from: usize, len: usize| -> Result<(), LoadError> {
        let source = file
            .get(from..from + len)
            .ok_or_else(|| LoadError("section outside the file".into()))?;
        image
            .get_mut(to..to + len)
            .ok_or_else(|| LoadError("section outside the image".into()))?
            .copy_from_slice(source);
        Ok(())
    };
    copy(image, 0, 0, headers.min(file.len()))?;
    let table = opt + optional_size;
    for index in 0..sections {
        let header = table + index * 40;
        let virtual_size = u32_at(file, header + 8)? as usize;
        let rva = u32_at(file, header + 12)? as usize;
        let raw_size = u32_at(file, header + 16)? as usize;
        let raw = u32_at(file, header + 20)? as usize;
        copy(image, rva, raw, raw_size.min(virtual_size.max(raw_size)))?;
    }

    // Base relocations.
    let delta = (base as u64).wrapping_sub(image_base);
    let (reloc, reloc_size) = directory(5)?;
    let mut block = reloc;
    while block < reloc + reloc_size {
        let page = u32_at(image, block)? as usize;
        let block_size = u32_at(image, block + 4)? as usize;
        if block_size < 8 {
            return err("bad relocation block");
        }
        for entry in (block + 8..block + block_size).step_by(2) {
            let entry = u16_at(image, entry)?;
            let (kind, offset) = (entry >> 12, usize::from(entry & 0xfff));
            match kind {
                0 => {}
                10 => {
                    let at = page + offset;
                    let value = u64_at(image, at)?.wrapping_add(delta);
                    image[at..at + 8].copy_from_slice(&value.to_le_bytes());
                }
                other => return err(format!("relocation type {other} is not supported")),
            }
        }
        block += block_size;
    }

    // Imports.
    let mut missing = Vec::new();
    let (import, _) = directory(1)?;
    if import != 0 {
        let mut descriptor = import;
        loop {
            let lookup = u32_at(image, descriptor)? as usize;
            let name = u32_at(image, descriptor + 12)? as usize;
            let iat = u32_at(image, descriptor + 16)? as usize;
            if name == 0 {
                break;
            }
            let module = c_string(image, name)?;
            let mut slot = 0;
            loop {
                let thunk_at = if lookup != 0 { lookup } else { iat } + slot * 8;
                let thunk = u64_at(image, thunk_at)?;
                if thunk == 0 {
                    break;
                }
                if thunk >> 63 == 1 {
                    return err(format!(
                        "{module}: import by ordinal {} is not supported",
                        thunk & 0xffff
                    ));
                }
                let symbol = c_string(image, usize::try_from(thunk & 0x7fff_ffff).unwrap() + 2)?;
                match resolve(&module, &symbol) {
                    Some(address) => {
                        let at = iat + slot * 8;
                        image[at..at + 8].copy_from_slice(&(address as u64).to_le_bytes());
                    }
                    None => missing.push(format!("{module}!{symbol}")),
                }
                slot += 1;
            }
            descriptor += 20;
        }
    }
    if !missing.is_empty() {
        return err(format!("imports the harness does not provide: {}", missing.join(" ")));
    }

    // Exports.
    let mut exports = BTreeMap::new();
    let (export, _) = directory(0)?;
    if export != 0 {
        let names = u32_at(image, export + 24)? as usize;
        let functions = u32_at(image, export + 28)? as usize;
        let name_table = u32_at(image, export + 32)? as usize;
        let ordinals = u32_at(image, export + 36)? as usize;
        for index in 0..names {
            let name = c_string(image, u32_at(image, name_table + index * 4)? as usize)?;
            let ordinal = u16_at(image, ordinals + index * 2)? as usize;
            let rva = u32_at(image, functions + ordinal * 4)? as usize;
            exports.insert(name, base as usize + rva);
        }
    }
    Ok(Image { base: base as usize, size, entry: base as usize + entry_rva, exports })
}

/// The symbols of the image's link map (`deps/NAME.map`, MSVC style), by address in the
/// loaded image, for reports.
#[derive(Default)]
pub struct Symbols {
    by_address: BTreeMap<usize, Vec<String>>,
}

impl Symbols {
    /// Reads `map` for an image linked at `preferred` and loaded at `base`.
    pub fn read(map: &str, base: usize) -> Self {
        let mut by_address = BTreeMap::new();
        let mut preferred = None;
        for line in map.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(rest) = line.trim().strip_prefix("Preferred load address is ") {
                preferred = usize::from_str_radix(rest.trim(), 16).ok();
            }
            if words.len() >= 3
                && words[0].contains(':')
                && words[0].len() == 13
                && let (Ok(address), Some(preferred)) =
                    (usize::from_str_radix(words[2], 16), preferred)
            {
                {
                    if address >= preferred {
                        by_address
                            .entry(address - preferred + base)
                            .or_insert_with(Vec::new)
                            .push(words[1].to_owned());
                    }
                }
            }
        }
        Self { by_address }
    }

    /// The symbol at or before `address`, with the offset.
    pub fn name(&self, address: usize) -> Option<String> {
        let (start, names) = self.by_address.range(..=address).next_back()?;
        let offset = address - start;
        let name = names.join(" = ");
        Some(if offset == 0 { name } else { format!("{name}+{offset:#x}") })
    }

    /// Every name at exactly `address` (identical functions the linker folded share one).
    pub fn names_at(&self, address: usize) -> &[String] {
        self.by_address.get(&address).map_or(&[], Vec::as_slice)
    }

    /// The address of `name`.
    pub fn address(&self, name: &str) -> Option<usize> {
        self.by_address.iter().find(|(_, n)| n.iter().any(|n| n == name)).map(|(a, _)| *a)
    }
}
