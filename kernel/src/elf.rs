//! Validates a guest ELF image and describes what to load where.
//!
//! A guest image is a static, non-PIE x86_64 ELF64 executable linked at or
//! above [`guest_abi::IMAGE_BASE`] (guest ABI v1). [`parse`] checks every
//! header field the loader relies on against the file and the domain's memory
//! size and returns the loadable segments; it copies and maps nothing. Any
//! input, however malformed, yields an [`ElfError`] with a one-line
//! explanation, never a panic.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use guest_abi::{IMAGE_BASE, INITIAL_STACK_BYTES};

/// Page size the loader maps segments with.
pub const PAGE_SIZE: u64 = 4096;
/// Most program headers an image may have.
pub const MAX_PHNUM: u16 = 32;
/// Most non-empty `PT_LOAD` segments an image may have.
pub const MAX_SEGMENTS: usize = 16;

/// Size of the ELF64 file header.
const EHDR_SIZE: usize = 64;
/// Size of one ELF64 program header.
const PHDR_SIZE: usize = 56;

const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// One loadable segment: `file_size` bytes from `file_offset` go to `vaddr`,
/// and the rest up to `mem_size` is zero-filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest address of the first byte (guest-virtual = guest-physical).
    pub vaddr: u64,
    /// Bytes of guest memory the segment covers (`> 0`).
    pub mem_size: u64,
    /// Where the segment's data starts in the file.
    pub file_offset: u64,
    /// Bytes of data in the file (`<= mem_size`); the rest is zero.
    pub file_size: u64,
    /// Mapped readable (`PF_R`).
    pub read: bool,
    /// Mapped writable (`PF_W`).
    pub write: bool,
    /// Mapped executable (`PF_X`).
    pub exec: bool,
}

impl Segment {
    /// One past the last byte (`vaddr + mem_size`; [`parse`] guarantees no
    /// overflow for the segments it returns).
    pub fn end(&self) -> u64 {
        self.vaddr.saturating_add(self.mem_size)
    }

    /// The page-aligned range `[start, end)` the segment touches.
    pub fn page_range(&self) -> (u64, u64) {
        (align_down(self.vaddr), align_up(self.end()).unwrap_or(!(PAGE_SIZE - 1)))
    }

    fn same_permissions(&self, other: &Segment) -> bool {
        (self.read, self.write, self.exec) == (other.read, other.write, other.exec)
    }
}

/// A validated guest image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfImage {
    /// Where vCPU 0 starts (inside an executable segment).
    pub entry: u64,
    /// The non-empty `PT_LOAD` segments, in program header order.
    pub segments: Vec<Segment>,
    /// The highest `vaddr + mem_size` of any segment, rounded up to a page:
    /// the guest's heap may start here.
    pub image_end: u64,
}

/// Why an image was refused. `Display` gives one line; segment numbers are
/// program header indices (as `readelf -l` counts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    /// The file is shorter than an ELF64 header.
    TooShort {
        /// File length in bytes.
        len: usize,
    },
    /// The first four bytes are not `\x7fELF`.
    BadMagic,
    /// `EI_CLASS` is not ELFCLASS64.
    NotElf64(u8),
    /// `EI_DATA` is not little-endian.
    NotLittleEndian(u8),
    /// `EI_VERSION` or `e_version` is not 1.
    BadVersion(u32),
    /// `e_type` is ET_DYN (a PIE or shared object).
    PositionIndependent,
    /// `e_type` is neither ET_EXEC nor ET_DYN.
    NotExecutable(u16),
    /// `e_machine` is not EM_X86_64.
    WrongMachine(u16),
    /// `e_ehsize` is below 64 or beyond the end of the file.
    BadHeaderSize(u16),
    /// `e_phentsize` is not 56.
    BadPhentsize(u16),
    /// `e_phnum` is 0 or more than [`MAX_PHNUM`].
    BadPhnum(u16),
    /// The program header table does not fit in the file.
    PhdrsOutsideFile {
        /// `e_phoff`.
        offset: u64,
        /// `e_phnum`.
        count: u16,
        /// File length in bytes.
        file_len: usize,
    },
    /// A `PT_INTERP` or `PT_DYNAMIC` header is present.
    Dynamic,
    /// A segment's `p_filesz` exceeds its `p_memsz`.
    FileSizeExceedsMemSize {
        /// Program header index.
        index: usize,
        /// `p_filesz`.
        file_size: u64,
        /// `p_memsz`.
        mem_size: u64,
    },
    /// A segment's file data lies (partly) beyond the end of the file.
    DataOutsideFile {
        /// Program header index.
        index: usize,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        file_size: u64,
        /// File length in bytes.
        file_len: usize,
    },
    /// A segment starts below [`guest_abi::IMAGE_BASE`].
    BelowBase {
        /// Program header index.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
    },
    /// `p_vaddr + p_memsz` (rounded up to a page) overflows 64 bits.
    Wraps {
        /// Program header index.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
        /// `p_memsz`.
        mem_size: u64,
    },
    /// A segment reaches into the initial stack or beyond guest memory.
    TooLarge {
        /// Program header index.
        index: usize,
        /// Guest memory the segment needs: its page-rounded end plus the
        /// initial stack.
        needs: u64,
        /// The domain's memory size.
        mem_bytes: u64,
    },
    /// `p_offset` and `p_vaddr` differ modulo the page size, so the data
    /// cannot be mapped page by page.
    Misaligned {
        /// Program header index.
        index: usize,
        /// `p_offset`.
        offset: u64,
        /// `p_vaddr`.
        vaddr: u64,
    },
    /// More than [`MAX_SEGMENTS`] non-empty loadable segments.
    TooManySegments,
    /// Two segments with different permissions share a page.
    Overlap {
        /// Program header index of the earlier segment.
        first: usize,
        /// Program header index of the later segment.
        second: usize,
        /// The first page both touch.
        addr: u64,
    },
    /// No non-empty `PT_LOAD` segment.
    NoSegments,
    /// `e_entry` is not inside an executable segment.
    EntryNotExecutable(u64),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => write!(f, "file too short for an ELF header ({len} bytes, need {EHDR_SIZE})"),
            Self::BadMagic => f.write_str("not an ELF file (bad magic)"),
            Self::NotElf64(c) => write!(f, "not a 64-bit ELF file (class {c})"),
            Self::NotLittleEndian(d) => {
                write!(f, "not a little-endian ELF file (data encoding {d})")
            }
            Self::BadVersion(v) => write!(f, "unsupported ELF version {v} (need 1)"),
            Self::PositionIndependent => f.write_str("position-independent images are not supported"),
            Self::NotExecutable(t) => write!(f, "not an executable ELF file (type {t})"),
            Self::WrongMachine(m) => write!(f, "wrong machine {m:#x} (need x86_64)"),
            Self::BadHeaderSize(s) => write!(f, "ELF header size {s} is invalid"),
            Self::BadPhentsize(s) => {
                write!(f, "program header size {s} is invalid (need {PHDR_SIZE})")
            }
            Self::BadPhnum(n) => {
                write!(f, "{n} program headers (need 1 to {MAX_PHNUM})")
            }
            Self::PhdrsOutsideFile { offset, count, file_len } => write!(
                f,
                "{count} program headers at offset {offset:#x} extend past the end of \
                 the file ({file_len} bytes)"
            ),
            Self::Dynamic => f.write_str("dynamically linked images are not supported"),
            Self::FileSizeExceedsMemSize { index, file_size, mem_size } => write!(
                f,
                "segment {index} has more file data ({file_size:#x} bytes) than memory \
                 ({mem_size:#x} bytes)"
            ),
            Self::DataOutsideFile { index, offset, file_size, file_len } => write!(
                f,
                "segment {index} data ({file_size:#x} bytes at offset {offset:#x}) extends \
                 past the end of the file ({file_len} bytes)"
            ),
            Self::BelowBase { index, vaddr } => {
                write!(f, "segment {index} at {vaddr:#x} is below the image base {IMAGE_BASE:#x}")
            }
            Self::Wraps { index, vaddr, mem_size } => write!(
                f,
                "segment {index} at {vaddr:#x} ({mem_size:#x} bytes) wraps around the \
                 address space"
            ),
            Self::TooLarge { index, needs, mem_bytes } => {
                write!(f, "segment {index} needs {} but the domain has {}", Size(needs), Size(mem_bytes))
            }
            Self::Misaligned { index, offset, vaddr } => write!(
                f,
                "segment {index} file offset {offset:#x} and address {vaddr:#x} differ \
                 modulo the page size ({PAGE_SIZE})"
            ),
            Self::TooManySegments => {
                write!(f, "too many loadable segments (at most {MAX_SEGMENTS})")
            }
            Self::Overlap { first, second, addr } => write!(f, "segments {first} and {second} overlap at {addr:#x}"),
            Self::NoSegments => f.write_str("no loadable segments"),
            Self::EntryNotExecutable(e) => {
                write!(f, "entry point {e:#x} is not in an executable segment")
            }
        }
    }
}

/// A byte count for error messages: whole MiB (`16 MiB`) when exact and
/// below 1 GiB, otherwise one decimal in the largest binary unit, rounded up
/// so a requirement is never understated (`3.0 GiB`, `16.1 MiB`).
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1 << 20;
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let n = self.0;
        if n.is_multiple_of(MIB) && n > 0 && n < 1 << 30 {
            return write!(f, "{} MiB", n / MIB);
        }
        if n < 1024 {
            return write!(f, "{n} bytes");
        }
        let mut shift = 10u32;
        let mut unit = 0;
        while unit + 1 < UNITS.len() && n >> (shift + 10) != 0 {
            shift += 10;
            unit += 1;
        }
        // Tenths of the unit, rounded up; u128 so `n * 10` cannot overflow.
        let div = 1u128 << shift;
        let tenths = (u128::from(n) * 10).div_ceil(div);
        let name = UNITS.get(unit).copied().unwrap_or("EiB");
        write!(f, "{}.{} {name}", tenths / 10, tenths % 10)
    }
}

fn align_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

fn align_up(x: u64) -> Option<u64> {
    Some(x.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}

fn read_u16(b: &[u8], off: usize) -> u16 {
    b.get(off..).and_then(|s| s.first_chunk::<2>()).map_or(0, |a| u16::from_le_bytes(*a))
}

fn read_u32(b: &[u8], off: usize) -> u32 {
    b.get(off..).and_then(|s| s.first_chunk::<4>()).map_or(0, |a| u32::from_le_bytes(*a))
}

fn read_u64(b: &[u8], off: usize) -> u64 {
    b.get(off..).and_then(|s| s.first_chunk::<8>()).map_or(0, |a| u64::from_le_bytes(*a))
}

/// One raw program header.
struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    file_size: u64,
    mem_size: u64,
}

impl Phdr {
    fn decode(b: &[u8]) -> Self {
        Self {
            p_type: read_u32(b, 0),
            flags: read_u32(b, 4),
            offset: read_u64(b, 8),
            vaddr: read_u64(b, 16),
            file_size: read_u64(b, 32),
            mem_size: read_u64(b, 40),
        }
    }
}

/// Validates `file` as a guest image for a domain with `mem_bytes` of memory
/// and describes its loadable segments.
///
/// Every segment must lie in `[IMAGE_BASE, mem_bytes - INITIAL_STACK_BYTES)`
/// at page granularity, its file data inside `file`, with `p_offset` and
/// `p_vaddr` congruent modulo [`PAGE_SIZE`]. Segments may share a page only
/// if their permissions are identical. The entry point must lie in an
/// executable segment. Program header types other than `PT_LOAD` are ignored,
/// except `PT_INTERP` and `PT_DYNAMIC`, which are refused.
pub fn parse(file: &[u8], mem_bytes: u64) -> Result<ElfImage, ElfError> {
    let ehdr = file.get(..EHDR_SIZE).ok_or(ElfError::TooShort { len: file.len() })?;
    if !ehdr.starts_with(b"\x7fELF") {
        return Err(ElfError::BadMagic);
    }
    let ident = |i: usize| ehdr.get(i).copied().unwrap_or(0);
    if ident(4) != ELFCLASS64 {
        return Err(ElfError::NotElf64(ident(4)));
    }
    if ident(5) != ELFDATA2LSB {
        return Err(ElfError::NotLittleEndian(ident(5)));
    }
    if ident(6) != EV_CURRENT {
        return Err(ElfError::BadVersion(u32::from(ident(6))));
    }
    let e_type = read_u16(ehdr, 16);
    let e_machine = read_u16(ehdr, 18);
    let e_version = read_u32(ehdr, 20);
    let e_entry = read_u64(ehdr, 24);
    let e_phoff = read_u64(ehdr, 32);
    let e_ehsize = read_u16(ehdr, 52);
    let e_phentsize = read_u16(ehdr, 54);
    let e_phnum = read_u16(ehdr, 56);
    match e_type {
        ET_EXEC => {}
        ET_DYN => return Err(ElfError::PositionIndependent),
        t => return Err(ElfError::NotExecutable(t)),
    }
    if e_machine != EM_X86_64 {
        return Err(ElfError::WrongMachine(e_machine));
    }
    if e_version != u32::from(EV_CURRENT) {
        return Err(ElfError::BadVersion(e_version));
    }
    if usize::from(e_ehsize) < EHDR_SIZE || usize::from(e_ehsize) > file.len() {
        return Err(ElfError::BadHeaderSize(e_ehsize));
    }
    if usize::from(e_phentsize) != PHDR_SIZE {
        return Err(ElfError::BadPhentsize(e_phentsize));
    }
    if e_phnum == 0 || e_phnum > MAX_PHNUM {
        return Err(ElfError::BadPhnum(e_phnum));
    }
    let phdrs = usize::try_from(e_phoff)
        .ok()
        .and_then(|start| {
            let end = start.checked_add(usize::from(e_phnum) * PHDR_SIZE)?;
            file.get(start..end)
        })
        .ok_or(ElfError::PhdrsOutsideFile { offset: e_phoff, count: e_phnum, file_len: file.len() })?;

    // Everything the image may occupy ends where the initial stack starts.
    let limit = align_down(mem_bytes.saturating_sub(INITIAL_STACK_BYTES));
    let mut segments: Vec<Segment> = Vec::new();
    let mut indices: Vec<usize> = Vec::new();
    for (index, raw) in phdrs.chunks_exact(PHDR_SIZE).enumerate() {
        let ph = Phdr::decode(raw);
        match ph.p_type {
            PT_LOAD => {}
            PT_INTERP | PT_DYNAMIC => return Err(ElfError::Dynamic),
            _ => continue,
        }
        if ph.file_size > ph.mem_size {
            return Err(ElfError::FileSizeExceedsMemSize { index, file_size: ph.file_size, mem_size: ph.mem_size });
        }
        if ph.mem_size == 0 {
            continue;
        }
        let data_fits = ph.offset.checked_add(ph.file_size).is_some_and(|end| end <= file.len() as u64);
        if !data_fits {
            return Err(ElfError::DataOutsideFile {
                index,
                offset: ph.offset,
                file_size: ph.file_size,
                file_len: file.len(),
            });
        }
        if ph.vaddr < IMAGE_BASE {
            return Err(ElfError::BelowBase { index, vaddr: ph.vaddr });
        }
        let Some(page_end) = ph.vaddr.checked_add(ph.mem_size).and_then(align_up) else {
            return Err(ElfError::Wraps { index, vaddr: ph.vaddr, mem_size: ph.mem_size });
        };
        if page_end > limit {
            return Err(ElfError::TooLarge { index, needs: page_end.saturating_add(INITIAL_STACK_BYTES), mem_bytes });
        }
        if ph.offset % PAGE_SIZE != ph.vaddr % PAGE_SIZE {
            return Err(ElfError::Misaligned { index, offset: ph.offset, vaddr: ph.vaddr });
        }
        if segments.len() == MAX_SEGMENTS {
            return Err(ElfError::TooManySegments);
        }
        segments.push(Segment {
            vaddr: ph.vaddr,
            mem_size: ph.mem_size,
            file_offset: ph.offset,
            file_size: ph.file_size,
            read: ph.flags & PF_R != 0,
            write: ph.flags & PF_W != 0,
            exec: ph.flags & PF_X != 0,
        });
        indices.push(index);
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }

    for (i, a) in segments.iter().enumerate() {
        for (j, b) in segments.iter().enumerate().skip(i + 1) {
            let (a_start, a_end) = a.page_range();
            let (b_start, b_end) = b.page_range();
            if a_start < b_end && b_start < a_end && !a.same_permissions(b) {
                return Err(ElfError::Overlap {
                    first: indices.get(i).copied().unwrap_or(i),
                    second: indices.get(j).copied().unwrap_or(j),
                    addr: a_start.max(b_start),
                });
            }
        }
    }

    if !segments.iter().any(|s| s.exec && s.vaddr <= e_entry && e_entry < s.end()) {
        return Err(ElfError::EntryNotExecutable(e_entry));
    }
    let image_end = segments.iter().map(|s| s.page_range().1).max().unwrap_or(IMAGE_BASE);
    Ok(ElfImage { entry: e_entry, segments, image_end })
}

/// A short human-readable summary of a segment's permissions, `r-x` style.
pub fn permissions(seg: &Segment) -> String {
    let mut s = String::with_capacity(3);
    s.push(if seg.read { 'r' } else { '-' });
    s.push(if seg.write { 'w' } else { '-' });
    s.push(if seg.exec { 'x' } else { '-' });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const MIB: u64 = 1 << 20;
    const MEM: u64 = 16 * MIB;

    /// A program header for the builder.
    #[derive(Clone, Copy)]
    struct Ph {
        p_type: u32,
        flags: u32,
        offset: u64,
        vaddr: u64,
        file_size: u64,
        mem_size: u64,
    }

    fn load(flags: u32, offset: u64, vaddr: u64, file_size: u64, mem_size: u64) -> Ph {
        Ph { p_type: PT_LOAD, flags, offset, vaddr, file_size, mem_size }
    }

    fn other(p_type: u32) -> Ph {
        Ph { p_type, flags: PF_R, offset: 0, vaddr: 0, file_size: 0, mem_size: 0 }
    }

    /// Builds ELF64 images in memory: a header at 0, program headers at 64,
    /// and the file padded to `len` bytes.
    struct Builder {
        class: u8,
        data: u8,
        ident_version: u8,
        e_type: u16,
        machine: u16,
        version: u32,
        entry: u64,
        phoff: u64,
        ehsize: u16,
        phentsize: u16,
        phnum: Option<u16>,
        phdrs: Vec<Ph>,
        len: usize,
    }

    impl Builder {
        /// A valid image: text (r-x) at 0x200000 from offset 0 (0x1800 bytes
        /// in the file), data (rw-) at 0x202000 from offset 0x2000, 0x500
        /// bytes of data and 0x3000 of memory.
        fn new() -> Self {
            Self {
                class: ELFCLASS64,
                data: ELFDATA2LSB,
                ident_version: 1,
                e_type: ET_EXEC,
                machine: EM_X86_64,
                version: 1,
                entry: 0x200100,
                phoff: 64,
                ehsize: 64,
                phentsize: 56,
                phnum: None,
                phdrs: vec![
                    load(PF_R | PF_X, 0, 0x200000, 0x1800, 0x1800),
                    load(PF_R | PF_W, 0x2000, 0x202000, 0x500, 0x3000),
                    other(0x6474_e551), // PT_GNU_STACK
                ],
                len: 0x2500,
            }
        }

        fn phdrs(mut self, phdrs: Vec<Ph>) -> Self {
            self.phdrs = phdrs;
            self
        }

        fn build(&self) -> Vec<u8> {
            let table_end = 64 + self.phdrs.len() * PHDR_SIZE;
            let mut f = vec![0u8; self.len.max(table_end)];
            f[..4].copy_from_slice(b"\x7fELF");
            f[4] = self.class;
            f[5] = self.data;
            f[6] = self.ident_version;
            f[16..18].copy_from_slice(&self.e_type.to_le_bytes());
            f[18..20].copy_from_slice(&self.machine.to_le_bytes());
            f[20..24].copy_from_slice(&self.version.to_le_bytes());
            f[24..32].copy_from_slice(&self.entry.to_le_bytes());
            f[32..40].copy_from_slice(&self.phoff.to_le_bytes());
            f[52..54].copy_from_slice(&self.ehsize.to_le_bytes());
            f[54..56].copy_from_slice(&self.phentsize.to_le_bytes());
            let phnum = self.phnum.unwrap_or(self.phdrs.len() as u16);
            f[56..58].copy_from_slice(&phnum.to_le_bytes());
            for (i, p) in self.phdrs.iter().enumerate() {
                let o = 64 + i * PHDR_SIZE;
                f[o..o + 4].copy_from_slice(&p.p_type.to_le_bytes());
                f[o + 4..o + 8].copy_from_slice(&p.flags.to_le_bytes());
                f[o + 8..o + 16].copy_from_slice(&p.offset.to_le_bytes());
                f[o + 16..o + 24].copy_from_slice(&p.vaddr.to_le_bytes());
                f[o + 24..o + 32].copy_from_slice(&p.vaddr.to_le_bytes()); // p_paddr
                f[o + 32..o + 40].copy_from_slice(&p.file_size.to_le_bytes());
                f[o + 40..o + 48].copy_from_slice(&p.mem_size.to_le_bytes());
                f[o + 48..o + 56].copy_from_slice(&PAGE_SIZE.to_le_bytes());
            }
            f
        }

        fn parse(&self) -> Result<ElfImage, ElfError> {
            parse(&self.build(), MEM)
        }

        fn err(&self) -> String {
            self.parse().unwrap_err().to_string()
        }
    }

    #[test]
    fn valid_image_is_described() {
        let img = Builder::new().parse().unwrap();
        assert_eq!(img.entry, 0x200100);
        assert_eq!(
            img.segments,
            vec![
                Segment {
                    vaddr: 0x200000,
                    mem_size: 0x1800,
                    file_offset: 0,
                    file_size: 0x1800,
                    read: true,
                    write: false,
                    exec: true,
                },
                Segment {
                    vaddr: 0x202000,
                    mem_size: 0x3000,
                    file_offset: 0x2000,
                    file_size: 0x500,
                    read: true,
                    write: true,
                    exec: false,
                },
            ]
        );
        assert_eq!(img.image_end, 0x205000);
        assert_eq!(permissions(&img.segments[0]), "r-x");
        assert_eq!(permissions(&img.segments[1]), "rw-");
    }

    #[test]
    fn image_end_is_page_rounded() {
        let b = Builder::new().phdrs(vec![load(PF_R | PF_X, 0, 0x200000, 0x10, 0x1001)]);
        assert_eq!(b.parse().unwrap().image_end, 0x202000);
    }

    #[test]
    fn header_errors() {
        assert_eq!(parse(&[], MEM).unwrap_err().to_string(), "file too short for an ELF header (0 bytes, need 64)");
        let mut f = Builder::new().build();
        assert!(matches!(parse(&f[..63], MEM), Err(ElfError::TooShort { len: 63 })));
        f[1] = b'X';
        assert_eq!(parse(&f, MEM).unwrap_err().to_string(), "not an ELF file (bad magic)");

        let mut b = Builder::new();
        b.class = 1;
        assert_eq!(b.err(), "not a 64-bit ELF file (class 1)");
        let mut b = Builder::new();
        b.data = 2;
        assert_eq!(b.err(), "not a little-endian ELF file (data encoding 2)");
        let mut b = Builder::new();
        b.ident_version = 0;
        assert_eq!(b.err(), "unsupported ELF version 0 (need 1)");
        let mut b = Builder::new();
        b.version = 2;
        assert_eq!(b.err(), "unsupported ELF version 2 (need 1)");
        let mut b = Builder::new();
        b.e_type = ET_DYN;
        assert_eq!(b.err(), "position-independent images are not supported");
        let mut b = Builder::new();
        b.e_type = 1;
        assert_eq!(b.err(), "not an executable ELF file (type 1)");
        let mut b = Builder::new();
        b.machine = 0x28;
        assert_eq!(b.err(), "wrong machine 0x28 (need x86_64)");
        let mut b = Builder::new();
        b.ehsize = 52;
        assert_eq!(b.err(), "ELF header size 52 is invalid");
        b.ehsize = 0x3000;
        assert_eq!(b.err(), "ELF header size 12288 is invalid");
        let mut b = Builder::new();
        b.phentsize = 32;
        assert_eq!(b.err(), "program header size 32 is invalid (need 56)");
    }

    #[test]
    fn program_header_table_errors() {
        let mut b = Builder::new();
        b.phnum = Some(0);
        assert_eq!(b.err(), "0 program headers (need 1 to 32)");
        b.phnum = Some(33);
        assert_eq!(b.err(), "33 program headers (need 1 to 32)");
        let mut b = Builder::new();
        b.phoff = 0x2500 - 100;
        assert_eq!(b.err(), "3 program headers at offset 0x249c extend past the end of the file (9472 bytes)");
        b.phoff = u64::MAX - 10;
        assert!(matches!(b.parse(), Err(ElfError::PhdrsOutsideFile { .. })));
        // The table may sit anywhere inside the file.
        let mut b = Builder::new();
        let mut f = b.build();
        let table: Vec<u8> = f[64..64 + 3 * PHDR_SIZE].to_vec();
        f[0x1000..0x1000 + table.len()].copy_from_slice(&table);
        f[32..40].copy_from_slice(&0x1000u64.to_le_bytes());
        f[64..64 + 3 * PHDR_SIZE].fill(0);
        assert!(parse(&f, MEM).is_ok());
        // Exactly 32 headers are fine.
        let mut phdrs = vec![other(4); 30];
        phdrs.extend(Builder::new().phdrs[..2].iter().copied());
        b.phdrs = phdrs;
        b.len = 0x2500;
        assert!(b.parse().is_ok());
    }

    #[test]
    fn dynamic_images_are_refused() {
        for t in [PT_INTERP, PT_DYNAMIC] {
            let mut phdrs = Builder::new().phdrs;
            phdrs.push(other(t));
            assert_eq!(Builder::new().phdrs(phdrs).err(), "dynamically linked images are not supported");
        }
    }

    #[test]
    fn other_header_types_are_ignored() {
        let mut phdrs = Builder::new().phdrs;
        // PT_NOTE, PT_PHDR, PT_TLS, PT_GNU_RELRO with garbage fields.
        for t in [4, 6, 7, 0x6474_e552] {
            let mut p = other(t);
            p.vaddr = 5;
            p.offset = u64::MAX;
            p.file_size = u64::MAX;
            phdrs.push(p);
        }
        assert_eq!(Builder::new().phdrs(phdrs).parse().unwrap().segments.len(), 2);
    }

    #[test]
    fn segment_file_errors() {
        let b = Builder::new().phdrs(vec![load(PF_R | PF_X, 0, 0x200000, 0x2000, 0x1000)]);
        assert_eq!(b.err(), "segment 0 has more file data (0x2000 bytes) than memory (0x1000 bytes)");
        let b = Builder::new().phdrs(vec![
            load(PF_R | PF_X, 0, 0x200000, 0x1000, 0x1000),
            load(PF_R | PF_W, 0x2000, 0x202000, 0x600, 0x1000),
        ]);
        assert_eq!(
            b.err(),
            "segment 1 data (0x600 bytes at offset 0x2000) extends past the end of the file \
             (9472 bytes)"
        );
        let b = Builder::new().phdrs(vec![load(PF_R | PF_X, u64::MAX - 0xfff, 0x200000, 0x2000, 0x2000)]);
        assert!(matches!(b.parse(), Err(ElfError::DataOutsideFile { .. })));
        // Data ending exactly at the end of the file is fine.
        let b = Builder::new().phdrs(vec![load(PF_R | PF_X, 0x2000, 0x202000, 0x500, 0x500)]);
        let mut b = b;
        b.entry = 0x202000;
        assert!(b.parse().is_ok());
    }

    #[test]
    fn segment_placement_errors() {
        let b = Builder::new().phdrs(vec![
            load(PF_R | PF_X, 0, 0x200000, 0x1000, 0x1000),
            load(PF_R, 0, 0x201000, 0, 0x1000),
            load(PF_R | PF_W, 0x1000, 0x1000, 0x100, 0x1000),
        ]);
        assert_eq!(b.err(), "segment 2 at 0x1000 is below the image base 0x10000");
        let b = Builder::new().phdrs(vec![load(
            PF_R | PF_X,
            0,
            0x200000,
            0x1000,
            3 * 1024 * MIB - 0x200000 - INITIAL_STACK_BYTES,
        )]);
        assert_eq!(b.err(), "segment 0 needs 3.0 GiB but the domain has 16 MiB");
        let b = Builder::new().phdrs(vec![load(PF_R | PF_X, 0, 0x200000, 0x1000, u64::MAX)]);
        assert_eq!(b.err(), "segment 0 at 0x200000 (0xffffffffffffffff bytes) wraps around the address space");
        let b = Builder::new().phdrs(vec![load(PF_R | PF_X, 0, 0xffff_ffff_ffff_f000, 0x800, 0x800)]);
        assert!(matches!(b.parse(), Err(ElfError::Wraps { .. })));
    }

    #[test]
    fn segments_must_leave_room_for_the_stack() {
        let top = MEM - INITIAL_STACK_BYTES;
        let ok = Builder::new().phdrs(vec![load(PF_R | PF_X, 0, 0x200000, 0x1000, top - 0x200000)]);
        assert_eq!(ok.parse().unwrap().image_end, top);
        let bad = Builder::new().phdrs(vec![load(PF_R | PF_X, 0, 0x200000, 0x1000, top - 0x200000 + 1)]);
        assert_eq!(bad.err(), "segment 0 needs 16.1 MiB but the domain has 16 MiB");
        assert!(matches!(
            bad.parse(),
            Err(ElfError::TooLarge { index: 0, needs, mem_bytes: MEM }) if needs == MEM + PAGE_SIZE
        ));
        // A domain too small for even the stack and the image (the
        // builder's image starts at 0x200000).
        let f = Builder::new().build();
        let base = 0x200000;
        for mem in [0, 1, INITIAL_STACK_BYTES, IMAGE_BASE, base, base + INITIAL_STACK_BYTES] {
            assert!(matches!(parse(&f, mem), Err(ElfError::TooLarge { .. })), "{mem}");
        }
        // An unaligned memory size: the last partial page is not usable.
        assert!(parse(&f, base + 0x5000 + INITIAL_STACK_BYTES).is_ok());
        assert!(parse(&f, base + 0x4fff + INITIAL_STACK_BYTES).is_err());
        assert!(parse(&f, u64::MAX).is_ok());
    }

    #[test]
    fn misaligned_segments_are_refused() {
        let b = Builder::new().phdrs(vec![load(PF_R | PF_X, 0x10, 0x200000, 0x100, 0x100)]);
        assert_eq!(b.err(), "segment 0 file offset 0x10 and address 0x200000 differ modulo the page size (4096)");
        // Unaligned but congruent is fine.
        let mut b = Builder::new().phdrs(vec![load(PF_R | PF_X, 0x1010, 0x201010, 0x100, 0x100)]);
        b.entry = 0x201010;
        assert!(b.parse().is_ok());
    }

    #[test]
    fn empty_segments_are_skipped() {
        let mut phdrs = Builder::new().phdrs;
        // Would be below the base and outside the file, but it is empty.
        phdrs.insert(0, load(PF_R, u64::MAX, 0, 0, 0));
        assert_eq!(Builder::new().phdrs(phdrs).parse().unwrap().segments.len(), 2);
        let b = Builder::new().phdrs(vec![load(PF_R | PF_X, 0, 0x200000, 0, 0)]);
        assert_eq!(b.err(), "no loadable segments");
        let b = Builder::new().phdrs(vec![other(4)]);
        assert_eq!(b.err(), "no loadable segments");
    }

    #[test]
    fn at_most_sixteen_segments() {
        let seg = |i: u64| load(PF_R | PF_X, 0, 0x200000 + i * 0x1000, 0x200, 0x200);
        let b = Builder::new().phdrs((0..16).map(seg).collect());
        assert_eq!(b.parse().unwrap().segments.len(), 16);
        let b = Builder::new().phdrs((0..17).map(seg).collect());
        assert_eq!(b.err(), "too many loadable segments (at most 16)");
        // Empty ones do not count.
        let mut phdrs: Vec<Ph> = (0..16).map(seg).collect();
        phdrs.push(load(PF_R, 0, 0x300000, 0, 0));
        assert!(Builder::new().phdrs(phdrs).parse().is_ok());
    }

    #[test]
    fn overlaps() {
        // Different permissions sharing a page (0x203000).
        let b = Builder::new().phdrs(vec![
            other(4),
            load(PF_R | PF_X, 0, 0x200000, 0x1000, 0x3800),
            load(PF_R | PF_W, 0x1800, 0x203800, 0x100, 0x1000),
        ]);
        assert_eq!(b.err(), "segments 1 and 2 overlap at 0x203000");
        // Fully contained, reported with the later page start.
        let b = Builder::new()
            .phdrs(vec![load(PF_R | PF_X, 0, 0x200000, 0x1000, 0x10000), load(PF_R, 0x1000, 0x205000, 0x100, 0x100)]);
        assert_eq!(b.err(), "segments 0 and 1 overlap at 0x205000");
        // Identical permissions may share pages.
        let b = Builder::new().phdrs(vec![
            load(PF_R | PF_X, 0, 0x200000, 0x100, 0x800),
            load(PF_R | PF_X, 0x900, 0x200900, 0x100, 0x100),
        ]);
        assert!(b.parse().is_ok());
        // Adjacent pages do not overlap.
        let b = Builder::new().phdrs(vec![
            load(PF_R | PF_X, 0, 0x200000, 0x100, 0x1000),
            load(PF_R | PF_W, 0x1000, 0x201000, 0x100, 0x1000),
        ]);
        assert!(b.parse().is_ok());
        // Later segments below earlier ones are compared too.
        let b = Builder::new().phdrs(vec![
            load(PF_R | PF_W, 0x1000, 0x201000, 0x100, 0x1000),
            load(PF_R | PF_X, 0, 0x200000, 0x100, 0x1001),
        ]);
        assert_eq!(b.err(), "segments 0 and 1 overlap at 0x201000");
    }

    #[test]
    fn entry_must_be_executable() {
        let mut b = Builder::new();
        b.entry = 0x123;
        assert_eq!(b.err(), "entry point 0x123 is not in an executable segment");
        b.entry = 0x202000; // the data segment
        assert!(matches!(b.parse(), Err(ElfError::EntryNotExecutable(0x202000))));
        b.entry = 0x201800; // one past the text segment
        assert!(b.parse().is_err());
        b.entry = 0x2017ff;
        assert!(b.parse().is_ok());
        b.entry = 0x200000;
        assert!(b.parse().is_ok());
    }

    #[test]
    fn size_formatting() {
        assert_eq!(Size(16 * MIB).to_string(), "16 MiB");
        assert_eq!(Size(3 << 30).to_string(), "3.0 GiB");
        assert_eq!(Size(MIB + 1).to_string(), "1.1 MiB");
        assert_eq!(Size(1023).to_string(), "1023 bytes");
        assert_eq!(Size(1536).to_string(), "1.5 KiB");
        assert_eq!(Size(u64::MAX).to_string(), "16.0 EiB");
        assert_eq!(Size(0).to_string(), "0 bytes");
    }

    use crate::testutil::Rng;

    fn check_invariants(img: &ElfImage, file: &[u8], mem: u64) {
        assert!(!img.segments.is_empty() && img.segments.len() <= MAX_SEGMENTS);
        assert!(img.image_end <= mem - INITIAL_STACK_BYTES);
        assert_eq!(img.image_end % PAGE_SIZE, 0);
        for s in &img.segments {
            assert!(s.vaddr >= IMAGE_BASE && s.mem_size > 0 && s.file_size <= s.mem_size);
            assert!(s.end() <= img.image_end);
            assert!(s.file_offset + s.file_size <= file.len() as u64);
            assert_eq!(s.file_offset % PAGE_SIZE, s.vaddr % PAGE_SIZE);
        }
        assert!(img.segments.iter().any(|s| s.exec && (s.vaddr..s.end()).contains(&img.entry)));
    }

    #[test]
    fn mutated_images_never_panic() {
        let base = Builder::new().build();
        let mut rng = Rng(0x5EED_0FE1_F012_3400);
        let mut accepted = 0;
        for round in 0..5000 {
            let mut f = base.clone();
            for _ in 0..1 + rng.next() % 4 {
                // Mostly mutate the headers, sometimes anywhere.
                let span = if rng.next().is_multiple_of(4) { f.len() } else { 64 + 3 * PHDR_SIZE };
                let at = (rng.next() % span as u64) as usize;
                match rng.next() % 4 {
                    0 => {
                        if let Some(b) = f.get_mut(at) {
                            *b = rng.next() as u8;
                        }
                    }
                    1 => {
                        if let Some(b) = f.get_mut(at) {
                            *b ^= 1 << (rng.next() % 8);
                        }
                    }
                    2 => {
                        // A whole little-endian field at an 8-byte boundary.
                        let at = at & !7;
                        let v = match rng.next() % 4 {
                            0 => 0,
                            1 => u64::MAX,
                            2 => rng.next() % 0x40_0000,
                            _ => rng.next(),
                        };
                        if let Some(d) = f.get_mut(at..at + 8) {
                            d.copy_from_slice(&v.to_le_bytes());
                        }
                    }
                    _ => f.truncate(rng.next() as usize % (f.len() + 1)),
                }
            }
            let mem = match round % 3 {
                0 => MEM,
                1 => rng.next(),
                _ => rng.next() % (64 * MIB),
            };
            match parse(&f, mem) {
                Ok(img) => {
                    accepted += 1;
                    check_invariants(&img, &f, mem);
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(!msg.is_empty() && !msg.contains('\n'));
                }
            }
        }
        // The mutations must leave some images valid, or the test proves little.
        assert!(accepted > 100, "only {accepted} images accepted");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(42);
        for _ in 0..2000 {
            let len = (rng.next() % 512) as usize;
            let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len >= 64 && rng.next().is_multiple_of(2) {
                f[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
                f[16..20].copy_from_slice(&[2, 0, 62, 0]);
            }
            let _ = parse(&f, rng.next());
        }
    }
}
