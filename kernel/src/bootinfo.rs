//! Multiboot 1 and Multiboot 2 boot information, copied into owned data.
//!
//! The boot loader leaves a structure in physical memory describing the
//! memory map, the command line and the loaded modules. [`parse`] reads it
//! through [`PhysMem`] and copies everything into a [`BootInfo`], so the
//! memory it occupied can be reused afterwards (its extent is listed in
//! [`BootInfo::reserved`] so it is not handed out before that).
//!
//! The structure is treated as hostile input: every pointer, length and
//! count is bounds-checked, counts and sizes are capped, and a malformed
//! structure yields a [`BootInfoError`] naming the field and address.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::frames::{MemRegion, Range, RegionKind};

/// The value a Multiboot 1 loader passes in EAX.
pub const MB1_MAGIC: u32 = 0x2BAD_B002;
/// The value a Multiboot 2 loader passes in EAX.
pub const MB2_MAGIC: u32 = 0x36D7_6289;
/// At most this many memory map entries are accepted.
pub const MAX_MEMORY_ENTRIES: usize = 512;
/// At most this many modules are accepted.
pub const MAX_MODULES: usize = 64;
/// Strings (command lines, loader name) are truncated to this many bytes.
pub const MAX_STRING: usize = 4096;
/// Largest Multiboot 2 information structure accepted.
pub const MAX_MB2_SIZE: u32 = 1 << 20;
/// Largest RSDP copy kept from a Multiboot 2 ACPI tag.
pub const MAX_RSDP_COPY: usize = 4096;

/// Size of the Multiboot 1 information structure up to and including the
/// framebuffer fields (the last ones the specification defines).
const MB1_INFO_SIZE: u64 = 116;
/// Size of one Multiboot 1 module list entry.
const MB1_MODULE_SIZE: u64 = 16;
/// A memory map entry needs base (8), length (8) and type (4).
const MIN_MMAP_ENTRY: u32 = 20;

// Multiboot 1 `flags` bits.
const MB1_FLAG_MEM: u32 = 1 << 0;
const MB1_FLAG_CMDLINE: u32 = 1 << 2;
const MB1_FLAG_MODS: u32 = 1 << 3;
const MB1_FLAG_MMAP: u32 = 1 << 6;
const MB1_FLAG_LOADER_NAME: u32 = 1 << 9;

// Multiboot 2 tag types.
const MB2_TAG_END: u32 = 0;
const MB2_TAG_CMDLINE: u32 = 1;
const MB2_TAG_LOADER_NAME: u32 = 2;
const MB2_TAG_MODULE: u32 = 3;
const MB2_TAG_BASIC_MEMINFO: u32 = 4;
const MB2_TAG_MMAP: u32 = 6;
const MB2_TAG_ACPI_OLD: u32 = 14;
const MB2_TAG_ACPI_NEW: u32 = 15;

/// Read-only access to physical memory (the kernel implements it over its
/// identity/direct map; tests over a `Vec`).
pub trait PhysMem {
    /// Fills `buf` with the bytes at `paddr..paddr + buf.len()`; returns
    /// false (with `buf` in an unspecified state) if any part of the range
    /// is not readable.
    fn read(&self, paddr: u64, buf: &mut [u8]) -> bool;
}

/// Physical memory backed by a byte slice that starts at physical address
/// `base`; everything outside the slice is unreadable.
#[derive(Debug, Clone, Copy)]
pub struct SliceMem<'a> {
    /// Physical address of `bytes[0]`.
    pub base: u64,
    /// The memory contents.
    pub bytes: &'a [u8],
}

impl PhysMem for SliceMem<'_> {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
        let Some(off) = paddr.checked_sub(self.base) else {
            return false;
        };
        let Ok(off) = usize::try_from(off) else {
            return false;
        };
        match off.checked_add(buf.len()).and_then(|end| self.bytes.get(off..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

fn read_array<const N: usize, M: PhysMem + ?Sized>(mem: &M, paddr: u64) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    mem.read(paddr, &mut buf).then_some(buf)
}

/// Reads a byte.
pub fn read_u8<M: PhysMem + ?Sized>(mem: &M, paddr: u64) -> Option<u8> {
    read_array::<1, M>(mem, paddr).map(|b| b[0])
}

/// Reads a little-endian `u16`.
pub fn read_u16<M: PhysMem + ?Sized>(mem: &M, paddr: u64) -> Option<u16> {
    read_array(mem, paddr).map(u16::from_le_bytes)
}

/// Reads a little-endian `u32`.
pub fn read_u32<M: PhysMem + ?Sized>(mem: &M, paddr: u64) -> Option<u32> {
    read_array(mem, paddr).map(u32::from_le_bytes)
}

/// Reads a little-endian `u64`.
pub fn read_u64<M: PhysMem + ?Sized>(mem: &M, paddr: u64) -> Option<u64> {
    read_array(mem, paddr).map(u64::from_le_bytes)
}

/// Copies `len` bytes at `paddr` into a new vector.
///
/// The caller bounds `len`; the vector is allocated before reading.
pub fn read_bytes<M: PhysMem + ?Sized>(mem: &M, paddr: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    mem.read(paddr, &mut buf).then_some(buf)
}

/// Reads the bytes of a NUL-terminated string at `paddr`, at most `max_len`
/// of them. Returns the bytes (without the NUL) and whether a NUL was
/// found; `None` if memory before the end of the string is unreadable.
fn read_cstr_raw<M: PhysMem + ?Sized>(mem: &M, paddr: u64, max_len: usize) -> Option<(Vec<u8>, bool)> {
    const CHUNK: usize = 64;
    let mut out = Vec::new();
    let mut addr = paddr;
    while out.len() < max_len {
        let want = CHUNK.min(max_len - out.len());
        let mut buf = [0u8; CHUNK];
        let chunk = buf.get_mut(..want)?;
        if mem.read(addr, chunk) {
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(chunk.get(..nul)?);
                return Some((out, true));
            }
            out.extend_from_slice(chunk);
            addr = addr.checked_add(want as u64)?;
        } else {
            // The chunk crosses into unreadable memory: go byte by byte, the
            // string may end before it.
            let b = read_u8(mem, addr)?;
            if b == 0 {
                return Some((out, true));
            }
            out.push(b);
            addr = addr.checked_add(1)?;
        }
    }
    Some((out, false))
}

/// Reads a NUL-terminated string at `paddr`: stops at the NUL or after
/// `max_len` bytes, whichever comes first; invalid UTF-8 is replaced
/// (lossy). `None` if memory before the end of the string is unreadable.
pub fn read_cstr<M: PhysMem + ?Sized>(mem: &M, paddr: u64, max_len: usize) -> Option<String> {
    read_cstr_raw(mem, paddr, max_len).map(|(bytes, _)| lossy(&bytes))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Which boot protocol handed over control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// Multiboot 1 (e.g. QEMU `-kernel`).
    Multiboot1,
    /// Multiboot 2 (e.g. GRUB `multiboot2`).
    Multiboot2,
}

/// A module (initial ramdisk, guest image) loaded by the boot loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Physical address of the first byte.
    pub start: u64,
    /// Physical address past the last byte (`end >= start`).
    pub end: u64,
    /// The module's command line (may be empty).
    pub cmdline: String,
}

/// Everything the kernel needs from the boot loader, in owned memory.
#[derive(Debug, Clone)]
pub struct BootInfo {
    /// The protocol used.
    pub loader: Loader,
    /// The boot loader's name, if it gave one.
    pub bootloader_name: Option<String>,
    /// The kernel command line (empty if none).
    pub cmdline: String,
    /// The firmware memory map (at most [`MAX_MEMORY_ENTRIES`] entries,
    /// zero-length entries dropped), or regions synthesized from the basic
    /// lower/upper memory sizes if there was no map.
    pub memory: Vec<MemRegion>,
    /// Loaded modules (at most [`MAX_MODULES`]).
    pub modules: Vec<Module>,
    /// Multiboot 2 only: a copy of the RSDP from the "ACPI new" tag, or
    /// failing that the "ACPI old" tag. Not validated here.
    pub rsdp: Option<Vec<u8>>,
    /// Every physical range the boot information itself occupies (info
    /// structure, memory map, strings, module list), to be kept out of the
    /// allocator until it has been parsed. The modules' contents are not
    /// included: see [`modules`](Self::modules).
    pub reserved: Vec<Range>,
}

impl BootInfo {
    fn new(loader: Loader) -> BootInfo {
        BootInfo {
            loader,
            bootloader_name: None,
            cmdline: String::new(),
            memory: Vec::new(),
            modules: Vec::new(),
            rsdp: None,
            reserved: Vec::new(),
        }
    }

    fn reserve(&mut self, start: u64, len: u64) {
        if len > 0 {
            self.reserved.push(Range { start, end: start.saturating_add(len) });
        }
    }

    /// Adds regions for basic lower/upper memory sizes (in KiB).
    fn synthesize_memory(&mut self, lower_kib: u32, upper_kib: u32) {
        for (start, kib) in [(0, lower_kib), (0x10_0000, upper_kib)] {
            if kib != 0 {
                self.memory.push(MemRegion { start, len: u64::from(kib) * 1024, kind: RegionKind::Usable });
            }
        }
    }
}

/// Why the boot information could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootInfoError {
    /// The loader magic is neither [`MB1_MAGIC`] nor [`MB2_MAGIC`].
    BadMagic(u32),
    /// A structure or string lies in memory that cannot be read.
    Unreadable {
        /// What was being read.
        what: &'static str,
        /// Its physical address.
        addr: u64,
    },
    /// A field has an impossible value.
    Malformed {
        /// The structure or field.
        what: &'static str,
        /// Its physical address.
        addr: u64,
        /// What is wrong with it.
        reason: &'static str,
        /// The offending value.
        value: u64,
    },
    /// A list has more entries than the kernel accepts.
    TooMany {
        /// The list.
        what: &'static str,
        /// Its physical address.
        addr: u64,
        /// The limit that was exceeded.
        max: usize,
    },
    /// Neither a memory map nor basic memory sizes were provided.
    NoMemoryInfo,
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::BadMagic(m) => write!(
                f,
                "unknown boot loader magic {m:#010x} (expected Multiboot {MB1_MAGIC:#010x} \
                 or Multiboot2 {MB2_MAGIC:#010x})"
            ),
            BootInfoError::Unreadable { what, addr } => {
                write!(f, "cannot read {what} at {addr:#x}")
            }
            BootInfoError::Malformed { what, addr, reason, value } => {
                write!(f, "{what} at {addr:#x}: {reason} (value {value:#x})")
            }
            BootInfoError::TooMany { what, addr, max } => {
                write!(f, "{what} at {addr:#x} has more than {max} entries")
            }
            BootInfoError::NoMemoryInfo => {
                write!(f, "boot information has neither a memory map nor memory sizes")
            }
        }
    }
}

type Result<T> = core::result::Result<T, BootInfoError>;

/// Maps a Multiboot memory type to a region kind.
fn region_kind(ty: u32) -> RegionKind {
    match ty {
        1 => RegionKind::Usable,
        3 => RegionKind::AcpiReclaimable,
        4 => RegionKind::AcpiNvs,
        5 => RegionKind::Bad,
        _ => RegionKind::Reserved,
    }
}

/// Parses the boot information at `info_paddr`, as announced by `magic`
/// (the value the loader left in EAX).
pub fn parse(mem: &dyn PhysMem, magic: u32, info_paddr: u64) -> Result<BootInfo> {
    match magic {
        MB1_MAGIC => parse_mb1(mem, info_paddr),
        MB2_MAGIC => parse_mb2(mem, info_paddr),
        other => Err(BootInfoError::BadMagic(other)),
    }
}

/// Reads a `u32` at `base + off`, naming `what` on failure.
fn field_u32(mem: &dyn PhysMem, base: u64, off: u64, what: &'static str) -> Result<u32> {
    let addr = base.checked_add(off).ok_or(BootInfoError::Unreadable { what, addr: base })?;
    read_u32(mem, addr).ok_or(BootInfoError::Unreadable { what, addr })
}

fn field_u64(mem: &dyn PhysMem, base: u64, off: u64, what: &'static str) -> Result<u64> {
    let addr = base.checked_add(off).ok_or(BootInfoError::Unreadable { what, addr: base })?;
    read_u64(mem, addr).ok_or(BootInfoError::Unreadable { what, addr })
}

/// Reads a string the structure points to, reserving the bytes it occupies.
fn pointed_string(mem: &dyn PhysMem, bi: &mut BootInfo, paddr: u32, what: &'static str) -> Result<String> {
    let addr = u64::from(paddr);
    let (bytes, terminated) = read_cstr_raw(mem, addr, MAX_STRING).ok_or(BootInfoError::Unreadable { what, addr })?;
    bi.reserve(addr, bytes.len() as u64 + u64::from(terminated));
    Ok(lossy(&bytes))
}

fn parse_mb1(mem: &dyn PhysMem, info: u64) -> Result<BootInfo> {
    let mut bi = BootInfo::new(Loader::Multiboot1);
    let flags = field_u32(mem, info, 0, "multiboot1 info flags")?;
    bi.reserve(info, MB1_INFO_SIZE);

    if flags & MB1_FLAG_CMDLINE != 0 {
        let p = field_u32(mem, info, 16, "multiboot1 cmdline pointer")?;
        bi.cmdline = pointed_string(mem, &mut bi, p, "multiboot1 cmdline")?;
    }
    if flags & MB1_FLAG_LOADER_NAME != 0 {
        let p = field_u32(mem, info, 64, "multiboot1 boot_loader_name pointer")?;
        bi.bootloader_name = Some(pointed_string(mem, &mut bi, p, "multiboot1 boot loader name")?);
    }
    if flags & MB1_FLAG_MODS != 0 {
        parse_mb1_modules(mem, info, &mut bi)?;
    }
    if flags & MB1_FLAG_MMAP != 0 {
        parse_mb1_mmap(mem, info, &mut bi)?;
    }
    if bi.memory.is_empty() && flags & MB1_FLAG_MEM != 0 {
        let lower = field_u32(mem, info, 4, "multiboot1 mem_lower")?;
        let upper = field_u32(mem, info, 8, "multiboot1 mem_upper")?;
        bi.synthesize_memory(lower, upper);
    }
    if bi.memory.is_empty() {
        return Err(BootInfoError::NoMemoryInfo);
    }
    Ok(bi)
}

fn parse_mb1_modules(mem: &dyn PhysMem, info: u64, bi: &mut BootInfo) -> Result<()> {
    let count = field_u32(mem, info, 20, "multiboot1 mods_count")?;
    let list = u64::from(field_u32(mem, info, 24, "multiboot1 mods_addr")?);
    if count as usize > MAX_MODULES {
        return Err(BootInfoError::TooMany { what: "multiboot1 module list", addr: list, max: MAX_MODULES });
    }
    bi.reserve(list, u64::from(count) * MB1_MODULE_SIZE);
    for i in 0..u64::from(count) {
        const WHAT: &str = "multiboot1 module entry";
        let entry = list + i * MB1_MODULE_SIZE; // < 2^32 + 64 * 16
        let start = field_u32(mem, entry, 0, WHAT)?;
        let end = field_u32(mem, entry, 4, WHAT)?;
        let string = field_u32(mem, entry, 8, WHAT)?;
        if end < start {
            return Err(BootInfoError::Malformed {
                what: WHAT,
                addr: entry,
                reason: "mod_end is below mod_start",
                value: u64::from(end),
            });
        }
        let cmdline = pointed_string(mem, bi, string, "multiboot1 module string")?;
        bi.modules.push(Module { start: u64::from(start), end: u64::from(end), cmdline });
    }
    Ok(())
}

fn parse_mb1_mmap(mem: &dyn PhysMem, info: u64, bi: &mut BootInfo) -> Result<()> {
    const WHAT: &str = "multiboot1 memory map entry";
    let len = u64::from(field_u32(mem, info, 44, "multiboot1 mmap_length")?);
    let base = u64::from(field_u32(mem, info, 48, "multiboot1 mmap_addr")?);
    bi.reserve(base, len);
    let mut off = 0u64;
    let mut entries = 0usize;
    // Every entry advances `off` by at least 24, so this terminates within
    // 2^32 / 24 steps, and the cap stops it far earlier.
    while off < len {
        let entry = base + off; // both < 2^32
        if entries == MAX_MEMORY_ENTRIES {
            return Err(BootInfoError::TooMany { what: "multiboot1 memory map", addr: base, max: MAX_MEMORY_ENTRIES });
        }
        if len - off < 4 {
            return Err(BootInfoError::Malformed {
                what: WHAT,
                addr: entry,
                reason: "entry header runs past mmap_length",
                value: len,
            });
        }
        let size = field_u32(mem, entry, 0, WHAT)?;
        if size < MIN_MMAP_ENTRY {
            return Err(BootInfoError::Malformed {
                what: WHAT,
                addr: entry,
                reason: "size is below 20",
                value: u64::from(size),
            });
        }
        let next = off + 4 + u64::from(size);
        if next > len {
            return Err(BootInfoError::Malformed {
                what: WHAT,
                addr: entry,
                reason: "entry runs past mmap_length",
                value: u64::from(size),
            });
        }
        let start = field_u64(mem, entry, 4, WHAT)?;
        let length = field_u64(mem, entry, 12, WHAT)?;
        let ty = field_u32(mem, entry, 20, WHAT)?;
        if length != 0 {
            bi.memory.push(MemRegion { start, len: length, kind: region_kind(ty) });
        }
        entries += 1;
        off = next;
    }
    Ok(())
}

fn le32(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn le64(bytes: &[u8], off: usize) -> Option<u64> {
    let b = bytes.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// A string stored inline in a tag: up to the NUL, the tag end or
/// [`MAX_STRING`] bytes.
fn inline_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()).min(MAX_STRING);
    lossy(bytes.get(..end).unwrap_or_default())
}

fn parse_mb2(mem: &dyn PhysMem, info: u64) -> Result<BootInfo> {
    let total = field_u32(mem, info, 0, "multiboot2 total_size")?;
    if !(16..=MAX_MB2_SIZE).contains(&total) {
        return Err(BootInfoError::Malformed {
            what: "multiboot2 info",
            addr: info,
            reason: "total_size is not between 16 bytes and 1 MiB",
            value: u64::from(total),
        });
    }
    // Copy the whole structure once: a consistent snapshot, and all further
    // bounds checks are slice bounds.
    let blob = read_bytes(mem, info, total as usize)
        .ok_or(BootInfoError::Unreadable { what: "multiboot2 info", addr: info })?;
    let mut bi = BootInfo::new(Loader::Multiboot2);
    bi.reserve(info, u64::from(total));

    let mut basic: Option<(u32, u32)> = None;
    let mut rsdp_old: Option<Vec<u8>> = None;
    let mut rsdp_new: Option<Vec<u8>> = None;
    let mut off = 8usize;
    loop {
        let tag_addr = info.saturating_add(off as u64);
        let malformed =
            |what, reason, value: usize| BootInfoError::Malformed { what, addr: tag_addr, reason, value: value as u64 };
        let (Some(ty), Some(size)) = (le32(&blob, off), le32(&blob, off.saturating_add(4))) else {
            return Err(malformed("multiboot2 tags", "no end tag before total_size", total as usize));
        };
        let size = size as usize;
        if size < 8 {
            return Err(malformed("multiboot2 tag", "size is below 8", size));
        }
        let Some(body) = off.checked_add(size).and_then(|end| blob.get(off + 8..end)) else {
            return Err(malformed("multiboot2 tag", "tag runs past total_size", size));
        };
        match ty {
            MB2_TAG_END => break,
            MB2_TAG_CMDLINE => bi.cmdline = inline_string(body),
            MB2_TAG_LOADER_NAME => bi.bootloader_name = Some(inline_string(body)),
            MB2_TAG_MODULE => {
                let (Some(start), Some(end)) = (le32(body, 0), le32(body, 4)) else {
                    return Err(malformed("multiboot2 module tag", "shorter than 16 bytes", size));
                };
                if end < start {
                    return Err(malformed("multiboot2 module tag", "mod_end is below mod_start", end as usize));
                }
                if bi.modules.len() == MAX_MODULES {
                    return Err(BootInfoError::TooMany {
                        what: "multiboot2 module tags",
                        addr: info,
                        max: MAX_MODULES,
                    });
                }
                bi.modules.push(Module {
                    start: u64::from(start),
                    end: u64::from(end),
                    cmdline: inline_string(body.get(8..).unwrap_or_default()),
                });
            }
            MB2_TAG_BASIC_MEMINFO => {
                let (Some(lower), Some(upper)) = (le32(body, 0), le32(body, 4)) else {
                    return Err(malformed("multiboot2 basic meminfo tag", "shorter than 16 bytes", size));
                };
                basic = Some((lower, upper));
            }
            MB2_TAG_MMAP => parse_mb2_mmap(body, tag_addr, &mut bi)?,
            MB2_TAG_ACPI_OLD => {
                rsdp_old = Some(body.get(..MAX_RSDP_COPY).unwrap_or(body).to_vec());
            }
            MB2_TAG_ACPI_NEW => {
                rsdp_new = Some(body.get(..MAX_RSDP_COPY).unwrap_or(body).to_vec());
            }
            _ => {}
        }
        // Tags start on 8-byte boundaries; size >= 8 guarantees progress.
        off = match off.checked_add(size).and_then(|e| e.checked_next_multiple_of(8)) {
            Some(next) => next,
            None => return Err(malformed("multiboot2 tag", "tag runs past total_size", size)),
        };
    }

    if bi.memory.is_empty() {
        if let Some((lower, upper)) = basic {
            bi.synthesize_memory(lower, upper);
        }
    }
    if bi.memory.is_empty() {
        return Err(BootInfoError::NoMemoryInfo);
    }
    bi.rsdp = rsdp_new.or(rsdp_old);
    Ok(bi)
}

fn parse_mb2_mmap(body: &[u8], tag_addr: u64, bi: &mut BootInfo) -> Result<()> {
    const WHAT: &str = "multiboot2 memory map tag";
    let Some(entry_size) = le32(body, 0) else {
        return Err(BootInfoError::Malformed {
            what: WHAT,
            addr: tag_addr,
            reason: "shorter than 16 bytes",
            value: body.len() as u64 + 8,
        });
    };
    if entry_size < MIN_MMAP_ENTRY {
        return Err(BootInfoError::Malformed {
            what: WHAT,
            addr: tag_addr,
            reason: "entry_size is below 20",
            value: u64::from(entry_size),
        });
    }
    let entries = body.get(8..).unwrap_or_default();
    let count = entries.len() / entry_size as usize;
    if bi.memory.len().saturating_add(count) > MAX_MEMORY_ENTRIES {
        return Err(BootInfoError::TooMany { what: "multiboot2 memory map", addr: tag_addr, max: MAX_MEMORY_ENTRIES });
    }
    for entry in entries.chunks_exact(entry_size as usize) {
        let (Some(start), Some(len), Some(ty)) = (le64(entry, 0), le64(entry, 8), le32(entry, 16)) else {
            continue; // unreachable: entry_size >= 20
        };
        if len != 0 {
            bi.memory.push(MemRegion { start, len, kind: region_kind(ty) });
        }
    }
    Ok(())
}

/// Sparse physical memory for unit tests (shared with the ACPI tests).
#[cfg(test)]
pub(crate) mod testmem {
    use super::PhysMem;
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;

    const PAGE: u64 = 4096;

    /// Page-granular sparse memory: pages that were never written are
    /// unreadable.
    #[derive(Default, Clone)]
    pub(crate) struct SparseMem {
        pages: BTreeMap<u64, Box<[u8; PAGE as usize]>>,
    }

    impl SparseMem {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        /// Writes `bytes` at `addr`, creating (zeroed) pages as needed.
        pub(crate) fn write(&mut self, addr: u64, bytes: &[u8]) {
            for (i, &b) in bytes.iter().enumerate() {
                let a = addr + i as u64;
                let page = self.pages.entry(a / PAGE).or_insert_with(|| Box::new([0; PAGE as usize]));
                page[(a % PAGE) as usize] = b;
            }
        }

        pub(crate) fn write_u16(&mut self, addr: u64, v: u16) {
            self.write(addr, &v.to_le_bytes());
        }

        pub(crate) fn write_u32(&mut self, addr: u64, v: u32) {
            self.write(addr, &v.to_le_bytes());
        }

        /// Makes `[addr, addr + len)` readable (zero-filled where new).
        pub(crate) fn map(&mut self, addr: u64, len: u64) {
            let mut page = addr / PAGE;
            while page * PAGE < addr + len {
                self.pages.entry(page).or_insert_with(|| Box::new([0; PAGE as usize]));
                page += 1;
            }
        }
    }

    impl PhysMem for SparseMem {
        fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
            let mut done = 0usize;
            while done < buf.len() {
                let Some(a) = paddr.checked_add(done as u64) else {
                    return false;
                };
                let Some(page) = self.pages.get(&(a / PAGE)) else {
                    return false;
                };
                let off = (a % PAGE) as usize;
                let n = (PAGE as usize - off).min(buf.len() - done);
                buf[done..done + n].copy_from_slice(&page[off..off + n]);
                done += n;
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testmem::SparseMem;
    use super::*;
    use alloc::string::ToString;

    // ---- helpers ----------------------------------------------------------

    fn mmap_entry(base: u64, len: u64, ty: u32) -> [u8; 24] {
        let mut e = [0u8; 24];
        e[0..4].copy_from_slice(&20u32.to_le_bytes());
        e[4..12].copy_from_slice(&base.to_le_bytes());
        e[12..20].copy_from_slice(&len.to_le_bytes());
        e[20..24].copy_from_slice(&ty.to_le_bytes());
        e
    }

    /// The E820 map QEMU reports for `-m 128M`, as (base, len, type).
    const QEMU_E820: [(u64, u64, u32); 6] = [
        (0, 0x9fc00, 1),
        (0x9fc00, 0x400, 2),
        (0xf0000, 0x10000, 2),
        (0x100000, 0x7ee0000, 1),
        (0x7fe0000, 0x20000, 2),
        (0xfffc0000, 0x40000, 2),
    ];

    const MB1_INFO: u64 = 0x9500;
    const MB1_CMDLINE: u64 = 0x9600;
    const MB1_NAME: u64 = 0x9700;
    const MB1_MODS: u64 = 0x9800;
    const MB1_MODSTR: u64 = 0x9900;
    const MB1_MMAP: u64 = 0x9a00;

    /// A Multiboot 1 image laid out the way QEMU's `-kernel` loader does.
    fn qemu_mb1() -> SparseMem {
        let mut m = SparseMem::new();
        let flags = MB1_FLAG_MEM | 1 << 1 | MB1_FLAG_CMDLINE | MB1_FLAG_MODS | MB1_FLAG_MMAP | MB1_FLAG_LOADER_NAME;
        m.map(MB1_INFO, 0x800);
        m.write_u32(MB1_INFO, flags);
        m.write_u32(MB1_INFO + 4, 639);
        m.write_u32(MB1_INFO + 8, 130_944);
        m.write_u32(MB1_INFO + 12, 0x8000_ffff);
        m.write_u32(MB1_INFO + 16, MB1_CMDLINE as u32);
        m.write_u32(MB1_INFO + 20, 2);
        m.write_u32(MB1_INFO + 24, MB1_MODS as u32);
        m.write_u32(MB1_INFO + 44, (QEMU_E820.len() * 24) as u32);
        m.write_u32(MB1_INFO + 48, MB1_MMAP as u32);
        m.write_u32(MB1_INFO + 64, MB1_NAME as u32);
        m.write(MB1_CMDLINE, b"/boot/rhv console=com1 loglevel=debug\0");
        m.write(MB1_NAME, b"qemu\0");
        // Two modules: the second has an empty command line.
        m.write_u32(MB1_MODS, 0x200000);
        m.write_u32(MB1_MODS + 4, 0x234567);
        m.write_u32(MB1_MODS + 8, MB1_MODSTR as u32);
        m.write_u32(MB1_MODS + 16, 0x235000);
        m.write_u32(MB1_MODS + 20, 0x235000);
        m.write_u32(MB1_MODS + 24, MB1_MODSTR as u32 + 0x20);
        m.write(MB1_MODSTR, b"guest.elf mem=64M\0");
        m.write(MB1_MODSTR + 0x20, b"\0");
        for (i, (base, len, ty)) in QEMU_E820.iter().enumerate() {
            m.write(MB1_MMAP + i as u64 * 24, &mmap_entry(*base, *len, *ty));
        }
        m
    }

    fn expected_qemu_memory() -> Vec<MemRegion> {
        QEMU_E820.iter().map(|&(start, len, ty)| MemRegion { start, len, kind: region_kind(ty) }).collect()
    }

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    fn mb1_err(m: &SparseMem) -> BootInfoError {
        parse(m, MB1_MAGIC, MB1_INFO).unwrap_err()
    }

    // ---- PhysMem helpers --------------------------------------------------

    #[test]
    fn readers_are_little_endian_and_bounded() {
        let bytes = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let m = SliceMem { base: 0x1000, bytes: &bytes };
        assert_eq!(read_u8(&m, 0x1000), Some(1));
        assert_eq!(read_u16(&m, 0x1000), Some(0x0201));
        assert_eq!(read_u32(&m, 0x1001), Some(0x0504_0302));
        assert_eq!(read_u64(&m, 0x1001), Some(0x0908_0706_0504_0302));
        assert_eq!(read_u64(&m, 0x1002), None);
        assert_eq!(read_u8(&m, 0xfff), None);
        assert_eq!(read_u8(&m, 0x1009), None);
        assert_eq!(read_u32(&m, u64::MAX - 1), None);
        assert_eq!(read_bytes(&m, 0x1007, 2), Some(vec![8, 9]));
        assert_eq!(read_bytes(&m, 0x1007, 3), None);
        let dynm: &dyn PhysMem = &m;
        assert_eq!(read_u16(dynm, 0x1007), Some(0x0908));
    }

    #[test]
    fn read_cstr_cases() {
        let mut bytes = vec![b'x'; 200];
        bytes[..6].copy_from_slice(b"hello\0");
        bytes[10..14].copy_from_slice(b"\xffok\0");
        let m = SliceMem { base: 0, bytes: &bytes };
        assert_eq!(read_cstr(&m, 0, 100).as_deref(), Some("hello"));
        assert_eq!(read_cstr(&m, 0, 3).as_deref(), Some("hel"));
        assert_eq!(read_cstr(&m, 0, 0).as_deref(), Some(""));
        assert_eq!(read_cstr(&m, 10, 100).as_deref(), Some("\u{fffd}ok"));
        // Unterminated but capped before the end of memory.
        assert_eq!(read_cstr(&m, 20, 150).map(|s| s.len()), Some(150));
        // Unterminated, running into unreadable memory.
        assert_eq!(read_cstr(&m, 20, 1000), None);
        // Terminated just before unreadable memory (the chunked read fails).
        let short = b"abc\0";
        let m = SliceMem { base: 0x5000, bytes: short };
        assert_eq!(read_cstr(&m, 0x5000, 4096).as_deref(), Some("abc"));
        assert_eq!(read_cstr(&m, 0x4fff, 4096), None);
        assert_eq!(read_cstr(&m, u64::MAX, 4096), None);
    }

    // ---- Multiboot 1 ------------------------------------------------------

    #[test]
    fn mb1_qemu() {
        let m = qemu_mb1();
        let bi = parse(&m, MB1_MAGIC, MB1_INFO).unwrap();
        assert_eq!(bi.loader, Loader::Multiboot1);
        assert_eq!(bi.bootloader_name.as_deref(), Some("qemu"));
        assert_eq!(bi.cmdline, "/boot/rhv console=com1 loglevel=debug");
        assert_eq!(bi.memory, expected_qemu_memory());
        assert_eq!(
            bi.modules,
            vec![
                Module { start: 0x200000, end: 0x234567, cmdline: "guest.elf mem=64M".into() },
                Module { start: 0x235000, end: 0x235000, cmdline: String::new() },
            ]
        );
        assert_eq!(bi.rsdp, None);
        assert_eq!(
            bi.reserved,
            vec![
                r(MB1_INFO, MB1_INFO + 116),
                r(MB1_CMDLINE, MB1_CMDLINE + 38),
                r(MB1_NAME, MB1_NAME + 5),
                r(MB1_MODS, MB1_MODS + 32),
                r(MB1_MODSTR, MB1_MODSTR + 18),
                r(MB1_MODSTR + 0x20, MB1_MODSTR + 0x21),
                r(MB1_MMAP, MB1_MMAP + 144),
            ]
        );
    }

    #[test]
    fn mb1_minimal_flags_use_basic_meminfo() {
        let mut m = qemu_mb1();
        m.write_u32(MB1_INFO, MB1_FLAG_MEM);
        let bi = parse(&m, MB1_MAGIC, MB1_INFO).unwrap();
        assert_eq!(bi.cmdline, "");
        assert_eq!(bi.bootloader_name, None);
        assert!(bi.modules.is_empty());
        assert_eq!(
            bi.memory,
            vec![
                MemRegion { start: 0, len: 639 * 1024, kind: RegionKind::Usable },
                MemRegion { start: 0x100000, len: 130_944 * 1024, kind: RegionKind::Usable },
            ]
        );
        // An empty memory map also falls back.
        let mut m = qemu_mb1();
        m.write_u32(MB1_INFO + 44, 0);
        let bi = parse(&m, MB1_MAGIC, MB1_INFO).unwrap();
        assert_eq!(bi.memory.len(), 2);
        // Nothing at all is an error.
        m.write_u32(MB1_INFO, MB1_FLAG_MMAP);
        assert_eq!(mb1_err(&m), BootInfoError::NoMemoryInfo);
    }

    #[test]
    fn mb1_mmap_with_larger_entries_and_zero_lengths() {
        // Entries with size 24 (padding after type) are walked by size.
        let mut m = qemu_mb1();
        let mut map = Vec::new();
        for (base, len, ty) in [(0x100000u64, 0x1000u64, 1u32), (0x200000, 0, 1), (0x300000, 0x2000, 3)] {
            map.extend_from_slice(&24u32.to_le_bytes());
            map.extend_from_slice(&base.to_le_bytes());
            map.extend_from_slice(&len.to_le_bytes());
            map.extend_from_slice(&ty.to_le_bytes());
            map.extend_from_slice(&[0xAA; 4]);
        }
        m.write(MB1_MMAP, &map);
        m.write_u32(MB1_INFO + 44, map.len() as u32);
        let bi = parse(&m, MB1_MAGIC, MB1_INFO).unwrap();
        assert_eq!(
            bi.memory,
            vec![
                MemRegion { start: 0x100000, len: 0x1000, kind: RegionKind::Usable },
                MemRegion { start: 0x300000, len: 0x2000, kind: RegionKind::AcpiReclaimable },
            ]
        );
    }

    #[test]
    fn mb1_hostile() {
        // Unreadable info structure.
        let m = SparseMem::new();
        assert_eq!(mb1_err(&m), BootInfoError::Unreadable { what: "multiboot1 info flags", addr: MB1_INFO });
        // Huge module count.
        let mut m = qemu_mb1();
        m.write_u32(MB1_INFO + 20, u32::MAX);
        assert!(matches!(mb1_err(&m), BootInfoError::TooMany { max: MAX_MODULES, .. }));
        // Module list pointing at unmapped memory.
        let mut m = qemu_mb1();
        m.write_u32(MB1_INFO + 24, 0x7000_0000);
        assert!(matches!(mb1_err(&m), BootInfoError::Unreadable { addr: 0x7000_0000, .. }));
        // Module ending before it starts.
        let mut m = qemu_mb1();
        m.write_u32(MB1_MODS + 4, 0x100);
        assert!(matches!(mb1_err(&m), BootInfoError::Malformed { addr: MB1_MODS, .. }));
        // Zero-size mmap entry (would loop forever walking by size + 4 = 4
        // if accepted, and reads garbage).
        let mut m = qemu_mb1();
        m.write_u32(MB1_MMAP + 24, 0);
        assert!(matches!(
            mb1_err(&m),
            BootInfoError::Malformed { addr, value: 0, .. } if addr == MB1_MMAP + 24
        ));
        // Entry running past mmap_length.
        let mut m = qemu_mb1();
        m.write_u32(MB1_INFO + 44, 24 * 2 + 10);
        assert!(matches!(mb1_err(&m), BootInfoError::Malformed { .. }));
        // Trailing bytes too short for an entry header.
        let mut m = qemu_mb1();
        m.write_u32(MB1_INFO + 44, 24 * 6 + 2);
        assert!(matches!(mb1_err(&m), BootInfoError::Malformed { .. }));
        // Huge mmap_length: the walk runs into zeroed memory (size 0)...
        let mut m = qemu_mb1();
        m.write_u32(MB1_INFO + 44, u32::MAX);
        assert!(matches!(
            mb1_err(&m),
            BootInfoError::Malformed { addr, .. } if addr == MB1_MMAP + 144
        ));
        // ...or into unmapped memory.
        m.write_u32(MB1_INFO + 48, 0xffa0);
        for i in 0..4 {
            m.write(0xffa0 + i * 24, &mmap_entry(i << 20, 0x1000, 1));
        }
        assert!(matches!(mb1_err(&m), BootInfoError::Unreadable { addr: 0x10000, .. }));
        // Huge mmap_length over readable memory: the entry cap stops it.
        let mut m = qemu_mb1();
        m.write_u32(MB1_INFO + 44, u32::MAX);
        m.write_u32(MB1_INFO + 48, 0x10_0000);
        for i in 0..600u64 {
            m.write(0x10_0000 + i * 24, &mmap_entry(i << 20, 0x1000, 1));
        }
        assert!(matches!(mb1_err(&m), BootInfoError::TooMany { max: MAX_MEMORY_ENTRIES, .. }));
        // Unterminated command line: truncated at MAX_STRING.
        let mut m = qemu_mb1();
        m.write_u32(MB1_INFO + 16, 0x20_0000);
        m.write(0x20_0000, &[b'A'; 3 * MAX_STRING]);
        let bi = parse(&m, MB1_MAGIC, MB1_INFO).unwrap();
        assert_eq!(bi.cmdline.len(), MAX_STRING);
        assert!(bi.reserved.contains(&r(0x20_0000, 0x20_0000 + MAX_STRING as u64)));
        // Command line at the very end of memory.
        let mut m = qemu_mb1();
        m.write_u32(MB1_INFO + 16, 0xffff_fffe);
        m.write(0xffff_fffe, b"ab");
        assert!(matches!(mb1_err(&m), BootInfoError::Unreadable { what: "multiboot1 cmdline", .. }));
        // Info structure at the top of the address space.
        assert!(parse(&m, MB1_MAGIC, u64::MAX - 2).is_err());
    }

    // ---- Multiboot 2 ------------------------------------------------------

    const MB2_INFO: u64 = 0x10000;

    fn tag(ty: u32, body: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&ty.to_le_bytes());
        t.extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
        t.extend_from_slice(body);
        while !t.len().is_multiple_of(8) {
            t.push(0);
        }
        t
    }

    fn mb2_image(tags: &[Vec<u8>]) -> Vec<u8> {
        let mut img = vec![0u8; 8];
        for t in tags {
            img.extend_from_slice(t);
        }
        let total = img.len() as u32;
        img[0..4].copy_from_slice(&total.to_le_bytes());
        img
    }

    fn mb2_mmap_tag(entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&24u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        for &(base, len, ty) in entries {
            body.extend_from_slice(&base.to_le_bytes());
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(&ty.to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
        }
        tag(MB2_TAG_MMAP, &body)
    }

    fn module_tag(start: u32, end: u32, s: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&start.to_le_bytes());
        body.extend_from_slice(&end.to_le_bytes());
        body.extend_from_slice(s);
        tag(MB2_TAG_MODULE, &body)
    }

    fn rsdp_v1() -> Vec<u8> {
        let mut r = b"RSD PTR \0BOCHS \0\0\0\0\0\0".to_vec();
        r[16..20].copy_from_slice(&0x7fe1234u32.to_le_bytes());
        r
    }

    /// The tags GRUB 2 emits for `multiboot2 /rhv ...; module2 /guest ...`
    /// on a BIOS machine, in its order.
    fn grub_tags() -> Vec<Vec<u8>> {
        let mut basic = Vec::new();
        basic.extend_from_slice(&639u32.to_le_bytes());
        basic.extend_from_slice(&130_944u32.to_le_bytes());
        let bootdev = [0xffu8, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        vec![
            tag(21, &0x100000u32.to_le_bytes()), // load base address
            tag(MB2_TAG_CMDLINE, b"console=com1 quiet\0"),
            tag(MB2_TAG_LOADER_NAME, b"GRUB 2.12\0"),
            module_tag(0x135000, 0x1b8f00, b"/guest.elf guest=1\0"),
            module_tag(0x1b9000, 0x1ba000, b"\0"),
            tag(MB2_TAG_BASIC_MEMINFO, &basic),
            tag(5, &bootdev),
            mb2_mmap_tag(&QEMU_E820),
            tag(9, &[0u8; 20]),  // ELF sections: ignored
            tag(10, &[0u8; 20]), // APM: ignored
            tag(8, &[0u8; 24]),  // framebuffer: ignored
            tag(MB2_TAG_ACPI_OLD, &rsdp_v1()),
            tag(MB2_TAG_END, &[]),
        ]
    }

    fn mem_with(img: &[u8]) -> SparseMem {
        let mut m = SparseMem::new();
        m.write(MB2_INFO, img);
        m
    }

    fn mb2(img: &[u8]) -> Result<BootInfo> {
        parse(&mem_with(img), MB2_MAGIC, MB2_INFO)
    }

    #[test]
    fn mb2_grub() {
        let img = mb2_image(&grub_tags());
        let bi = mb2(&img).unwrap();
        assert_eq!(bi.loader, Loader::Multiboot2);
        assert_eq!(bi.cmdline, "console=com1 quiet");
        assert_eq!(bi.bootloader_name.as_deref(), Some("GRUB 2.12"));
        assert_eq!(bi.memory, expected_qemu_memory());
        assert_eq!(bi.modules.len(), 2);
        assert_eq!(bi.modules[0], Module { start: 0x135000, end: 0x1b8f00, cmdline: "/guest.elf guest=1".into() });
        assert_eq!(bi.modules[1].cmdline, "");
        assert_eq!(bi.rsdp, Some(rsdp_v1()));
        assert_eq!(bi.reserved, vec![r(MB2_INFO, MB2_INFO + img.len() as u64)]);
    }

    #[test]
    fn mb2_prefers_new_rsdp_and_falls_back_to_basic_meminfo() {
        let new_rsdp = [7u8; 36];
        let mut tags: Vec<Vec<u8>> = grub_tags().into_iter().filter(|t| le32(t, 0) != Some(MB2_TAG_MMAP)).collect();
        let end = tags.pop().unwrap();
        tags.push(tag(MB2_TAG_ACPI_NEW, &new_rsdp));
        tags.push(end);
        let bi = mb2(&mb2_image(&tags)).unwrap();
        assert_eq!(bi.rsdp.as_deref(), Some(&new_rsdp[..]));
        assert_eq!(
            bi.memory,
            vec![
                MemRegion { start: 0, len: 639 * 1024, kind: RegionKind::Usable },
                MemRegion { start: 0x100000, len: 130_944 * 1024, kind: RegionKind::Usable },
            ]
        );
        // No memory information at all.
        let img = mb2_image(&[tag(MB2_TAG_CMDLINE, b"x\0"), tag(MB2_TAG_END, &[])]);
        assert_eq!(mb2(&img).unwrap_err(), BootInfoError::NoMemoryInfo);
    }

    #[test]
    fn mb2_total_size_limits() {
        let good = mb2_image(&[mb2_mmap_tag(&QEMU_E820), tag(MB2_TAG_END, &[])]);
        assert!(mb2(&good).is_ok());
        for bad_total in [0u32, 8, 15, MAX_MB2_SIZE + 1, u32::MAX] {
            let mut img = good.clone();
            img[0..4].copy_from_slice(&bad_total.to_le_bytes());
            let err = mb2(&img).unwrap_err();
            assert!(matches!(err, BootInfoError::Malformed { addr: MB2_INFO, .. }), "{bad_total}: {err}");
        }
        // total_size larger than the readable memory.
        let mut img = good.clone();
        img[0..4].copy_from_slice(&0x8000u32.to_le_bytes());
        assert!(matches!(mb2(&img).unwrap_err(), BootInfoError::Unreadable { .. }));
        // Info at the top of the address space.
        assert!(parse(&mem_with(&good), MB2_MAGIC, u64::MAX - 3).is_err());
    }

    #[test]
    fn mb2_hostile_tags() {
        let mmap = mb2_mmap_tag(&QEMU_E820);
        let end = tag(MB2_TAG_END, &[]);
        // A zero-size (or too small) tag would never advance: rejected.
        for size in [0u32, 4, 7] {
            let mut bad = tag(MB2_TAG_CMDLINE, b"abc\0");
            bad[4..8].copy_from_slice(&size.to_le_bytes());
            let img = mb2_image(&[mmap.clone(), bad, end.clone()]);
            let err = mb2(&img).unwrap_err();
            assert!(matches!(err, BootInfoError::Malformed { reason: "size is below 8", .. }), "{err}");
        }
        // A tag running past total_size.
        let mut bad = tag(MB2_TAG_CMDLINE, b"abc\0");
        bad[4..8].copy_from_slice(&0x1000u32.to_le_bytes());
        let img = mb2_image(&[mmap.clone(), bad, end.clone()]);
        assert!(matches!(mb2(&img).unwrap_err(), BootInfoError::Malformed { reason: "tag runs past total_size", .. }));
        // Missing end tag.
        let img = mb2_image(core::slice::from_ref(&mmap));
        assert!(matches!(
            mb2(&img).unwrap_err(),
            BootInfoError::Malformed { reason: "no end tag before total_size", .. }
        ));
        // An oversized tag swallowing the next ones: they are not parsed
        // (tags cannot overlap in a walk by size).
        let mut swallow = tag(MB2_TAG_CMDLINE, b"outer\0");
        let inner = module_tag(0x100000, 0x200000, b"inner\0");
        let new_size = swallow.len() + inner.len();
        swallow[4..8].copy_from_slice(&(new_size as u32).to_le_bytes());
        let img = mb2_image(&[mmap.clone(), swallow, inner, end.clone()]);
        let bi = mb2(&img).unwrap();
        assert_eq!(bi.cmdline, "outer");
        assert!(bi.modules.is_empty());
        // An unterminated string ends at the tag end, not in the next tag.
        let img = mb2_image(&[tag(MB2_TAG_CMDLINE, b"abcdefgh"), mmap.clone(), end.clone()]);
        assert_eq!(mb2(&img).unwrap().cmdline, "abcdefgh");
        // Very long command line: truncated.
        let long = vec![b'z'; 10_000];
        let img = mb2_image(&[tag(MB2_TAG_CMDLINE, &long), mmap.clone(), end.clone()]);
        assert_eq!(mb2(&img).unwrap().cmdline.len(), MAX_STRING);
        // Short module and meminfo tags.
        for ty in [MB2_TAG_MODULE, MB2_TAG_BASIC_MEMINFO, MB2_TAG_MMAP] {
            let img = mb2_image(&[mmap.clone(), tag(ty, &[1, 2, 3]), end.clone()]);
            assert!(matches!(mb2(&img).unwrap_err(), BootInfoError::Malformed { .. }), "{ty}");
        }
        // Module ending before it starts.
        let img = mb2_image(&[mmap.clone(), module_tag(0x2000, 0x1000, b"\0"), end.clone()]);
        assert!(matches!(mb2(&img).unwrap_err(), BootInfoError::Malformed { .. }));
        // Too many modules.
        let mut tags = vec![mmap.clone()];
        tags.extend((0..=MAX_MODULES as u32).map(|i| module_tag(i << 12, (i + 1) << 12, b"m\0")));
        tags.push(end.clone());
        assert!(matches!(mb2(&mb2_image(&tags)).unwrap_err(), BootInfoError::TooMany { max: MAX_MODULES, .. }));
    }

    #[test]
    fn mb2_hostile_mmap() {
        let end = tag(MB2_TAG_END, &[]);
        // entry_size 0 (division by zero) and too small.
        for entry_size in [0u32, 8, 19] {
            let mut t = mb2_mmap_tag(&QEMU_E820);
            t[8..12].copy_from_slice(&entry_size.to_le_bytes());
            let err = mb2(&mb2_image(&[t, end.clone()])).unwrap_err();
            assert!(matches!(err, BootInfoError::Malformed { value, .. } if value == u64::from(entry_size)), "{err}");
        }
        // Larger entry_size: walked by entry_size.
        let mut body = Vec::new();
        body.extend_from_slice(&32u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        for (base, len, ty) in [(0x100000u64, 0x5000u64, 1u32), (0x200000, 0x1000, 4)] {
            body.extend_from_slice(&base.to_le_bytes());
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(&ty.to_le_bytes());
            body.extend_from_slice(&[0xEE; 12]);
        }
        body.extend_from_slice(&[0xEE; 20]); // partial trailing entry: ignored
        let bi = mb2(&mb2_image(&[tag(MB2_TAG_MMAP, &body), end.clone()])).unwrap();
        assert_eq!(bi.memory.len(), 2);
        assert_eq!(bi.memory[1].kind, RegionKind::AcpiNvs);
        // Too many entries, in one tag or across several.
        let many: Vec<(u64, u64, u32)> = (0..MAX_MEMORY_ENTRIES as u64 + 1).map(|i| (i << 20, 0x1000, 1)).collect();
        assert!(matches!(
            mb2(&mb2_image(&[mb2_mmap_tag(&many), end.clone()])).unwrap_err(),
            BootInfoError::TooMany { .. }
        ));
        let half = &many[..MAX_MEMORY_ENTRIES / 2 + 1];
        assert!(matches!(
            mb2(&mb2_image(&[mb2_mmap_tag(half), mb2_mmap_tag(half), end.clone()])).unwrap_err(),
            BootInfoError::TooMany { .. }
        ));
        // Exactly at the cap is fine.
        let bi = mb2(&mb2_image(&[mb2_mmap_tag(&many[..MAX_MEMORY_ENTRIES]), end])).unwrap();
        assert_eq!(bi.memory.len(), MAX_MEMORY_ENTRIES);
    }

    #[test]
    fn bad_magic_and_error_display() {
        let m = qemu_mb1();
        let err = parse(&m, 0x1234_5678, MB1_INFO).unwrap_err();
        assert_eq!(err, BootInfoError::BadMagic(0x1234_5678));
        assert!(err.to_string().contains("0x12345678"));
        // Every message is one line naming the place.
        let errs = [
            err,
            BootInfoError::Unreadable { what: "multiboot1 cmdline", addr: 0x9600 },
            BootInfoError::Malformed { what: "multiboot2 tag", addr: 0x10010, reason: "size is below 8", value: 0 },
            BootInfoError::TooMany { what: "multiboot1 module list", addr: 0x9800, max: 64 },
            BootInfoError::NoMemoryInfo,
        ];
        for e in &errs {
            let s = e.to_string();
            assert!(!s.contains('\n') && !s.is_empty(), "{s}");
        }
        assert_eq!(errs[1].to_string(), "cannot read multiboot1 cmdline at 0x9600");
        assert_eq!(errs[2].to_string(), "multiboot2 tag at 0x10010: size is below 8 (value 0x0)");
    }

    use crate::testutil::Rng;

    #[test]
    fn mutated_images_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mb2_img = mb2_image(&grub_tags());
        for _ in 0..3000 {
            let mut img = mb2_img.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() % img.len() as u64) as usize;
                img[i] = rng.next() as u8;
            }
            if let Ok(bi) = mb2(&img) {
                assert!(bi.memory.len() <= MAX_MEMORY_ENTRIES);
                assert!(bi.modules.iter().all(|m| m.end >= m.start));
            }
        }
        let base = qemu_mb1();
        for _ in 0..3000 {
            let mut m = base.clone();
            for _ in 0..1 + rng.next() % 4 {
                let addr = MB1_INFO + rng.next() % 0x600;
                m.write(addr, &[rng.next() as u8]);
            }
            if let Ok(bi) = parse(&m, MB1_MAGIC, MB1_INFO) {
                assert!(bi.cmdline.len() <= MAX_STRING * 3);
                assert!(bi.modules.len() <= MAX_MODULES);
            }
        }
    }
}
