//! ACPI: just what a hypervisor needs.
//!
//! Finds the RSDP, walks the RSDT/XSDT and extracts the interrupt topology
//! (MADT), the power-management and reset registers (FADT), the `\_S5`
//! sleep type for power-off (DSDT) and the HPET base address.
//!
//! Tables are read in place through [`PhysMem`] with small stack buffers;
//! nothing is copied wholesale, so a huge (hostile or real) DSDT costs no
//! heap. Every table is validated (length, checksum) before use; a bad table
//! is recorded in [`AcpiInfo::skipped`] and otherwise ignored.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::bootinfo::{read_u16, read_u32, PhysMem};

/// The local APIC address used when the MADT does not say otherwise.
pub const DEFAULT_LAPIC_ADDR: u64 = 0xFEE0_0000;
/// Tables longer than this are rejected.
pub const MAX_TABLE_LEN: u32 = 1 << 20;
/// At most this many RSDT/XSDT entries are examined.
pub const MAX_TABLES: usize = 256;
/// At most this many processors are recorded from the MADT.
pub const MAX_CPUS: usize = 4096;
/// At most this many I/O APICs are recorded.
pub const MAX_IOAPICS: usize = 128;
/// At most this many interrupt source overrides are recorded.
pub const MAX_OVERRIDES: usize = 256;

const RSDP_SIGNATURE: [u8; 8] = *b"RSD PTR ";
const RSDP_V1_LEN: usize = 20;
const RSDP_V2_LEN: usize = 36;
/// Largest extended RSDP length accepted (the spec defines 36 bytes).
const RSDP_MAX_LEN: usize = 1024;
/// Length of the common table header.
const HEADER_LEN: u32 = 36;
/// FADT bytes parsed (through X_PM1b_CNT_BLK); later fields are unused.
const FADT_PARSED_LEN: usize = 196;

/// A Generic Address Structure (ACPI 5.2.3.2): a register in some address
/// space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GenericAddress {
    /// Address space: 0 system memory, 1 system I/O, 2 PCI configuration.
    pub space: u8,
    /// Register width in bits.
    pub width: u8,
    /// Register bit offset.
    pub offset: u8,
    /// Access size: 0 undefined, 1 byte, 2 word, 3 dword, 4 qword.
    pub access: u8,
    /// Address within the space.
    pub address: u64,
}

impl GenericAddress {
    /// Address space ID of system I/O ports.
    pub const SPACE_IO: u8 = 1;

    fn from_bytes(b: &[u8]) -> Option<GenericAddress> {
        Some(GenericAddress {
            space: *b.first()?,
            width: *b.get(1)?,
            offset: *b.get(2)?,
            access: *b.get(3)?,
            address: le64(b, 4)?,
        })
    }
}

/// An I/O APIC (MADT entry type 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApic {
    /// I/O APIC ID.
    pub id: u8,
    /// Physical MMIO base address.
    pub addr: u64,
    /// First global system interrupt it handles.
    pub gsi_base: u32,
}

/// An ISA interrupt source override (MADT entry type 2, bus 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqOverride {
    /// The ISA IRQ.
    pub source_irq: u8,
    /// The global system interrupt it is wired to.
    pub gsi: u32,
    /// MPS INTI flags: bits 0-1 polarity (0 bus default, 1 high, 3 low),
    /// bits 2-3 trigger mode (0 bus default, 1 edge, 3 level).
    pub flags: u16,
}

/// A processor (MADT entry type 0, local APIC, or 9, local x2APIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalApic {
    /// ACPI processor UID.
    pub processor_id: u32,
    /// (x2)APIC ID.
    pub apic_id: u32,
    /// Whether the processor is usable now (flags bit 0).
    pub enabled: bool,
}

/// The FADT fields a hypervisor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fadt {
    /// PM1a control block I/O port (from X_PM1a_CNT_BLK if the legacy
    /// field is 0).
    pub pm1a_cnt: u32,
    /// PM1b control block I/O port, 0 if none.
    pub pm1b_cnt: u32,
    /// The reset register, if the FADT has one and flags RESET_REG_SUP.
    pub reset: Option<GenericAddress>,
    /// Value to write to the reset register.
    pub reset_value: u8,
    /// CMOS index of the RTC century register, 0 if none.
    pub century: u8,
    /// Physical address of the DSDT (X_DSDT preferred).
    pub dsdt: u64,
    /// SCI interrupt (an ISA IRQ or GSI).
    pub sci_irq: u16,
    /// SMI command port, 0 if ACPI is always enabled.
    pub smi_cmd: u32,
    /// Value to write to `smi_cmd` to enable ACPI.
    pub acpi_enable: u8,
}

/// A table that was listed but not used, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkippedTable {
    /// Physical address of the table.
    pub addr: u64,
    /// Its signature, if the header could be read.
    pub signature: Option<[u8; 4]>,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for SkippedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.signature {
            Some(sig) => write!(f, "ACPI table {} at {:#x}: {}", Sig(sig), self.addr, self.reason),
            None => write!(f, "ACPI table at {:#x}: {}", self.addr, self.reason),
        }
    }
}

/// Displays a table signature, replacing non-printable bytes with `?`.
struct Sig([u8; 4]);

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            let c = if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// What the hypervisor learned from ACPI.
#[derive(Debug, Clone)]
pub struct AcpiInfo {
    /// RSDP revision (0 for ACPI 1.0, 2 for 2.0+).
    pub revision: u8,
    /// OEM ID from the RSDP (trailing spaces removed).
    pub oem_id: String,
    /// Every valid table listed by the RSDT/XSDT, plus the DSDT:
    /// (signature, physical address).
    pub tables: Vec<([u8; 4], u64)>,
    /// Local APIC base (MADT, honoring the 64-bit override entry type 5).
    pub lapic_addr: u64,
    /// I/O APICs.
    pub ioapics: Vec<IoApic>,
    /// ISA interrupt source overrides.
    pub overrides: Vec<IrqOverride>,
    /// Processors, in MADT order, one entry per APIC ID.
    pub cpus: Vec<LocalApic>,
    /// The FADT, if present and valid.
    pub fadt: Option<Fadt>,
    /// SLP_TYPa and SLP_TYPb from `\_S5` in the DSDT.
    pub s5: Option<(u8, u8)>,
    /// HPET MMIO base address.
    pub hpet: Option<u64>,
    /// Tables that were listed but rejected (bad header, checksum, ...).
    pub skipped: Vec<SkippedTable>,
}

impl Default for AcpiInfo {
    fn default() -> Self {
        AcpiInfo {
            revision: 0,
            oem_id: String::new(),
            tables: Vec::new(),
            lapic_addr: DEFAULT_LAPIC_ADDR,
            ioapics: Vec::new(),
            overrides: Vec::new(),
            cpus: Vec::new(),
            fadt: None,
            s5: None,
            hpet: None,
            skipped: Vec::new(),
        }
    }
}

impl AcpiInfo {
    /// The GSI and MPS INTI flags for ISA IRQ `irq`: from an interrupt
    /// source override if there is one, else identity-mapped with flags 0
    /// (ISA defaults: edge-triggered, active high).
    pub fn gsi_for_isa_irq(&self, irq: u8) -> (u32, u16) {
        self.overrides.iter().find(|o| o.source_irq == irq).map_or((u32::from(irq), 0), |o| (o.gsi, o.flags))
    }

    /// The address of the first valid table with signature `sig`.
    pub fn find_table(&self, sig: &[u8; 4]) -> Option<u64> {
        self.tables.iter().find(|(s, _)| s == sig).map(|&(_, a)| a)
    }
}

/// Why ACPI could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcpiError {
    /// Memory that must be read is not readable.
    Unreadable {
        /// What was being read.
        what: &'static str,
        /// Its physical address.
        addr: u64,
    },
    /// The RSDP is invalid.
    BadRsdp(&'static str),
    /// Neither the XSDT nor the RSDT is usable.
    BadRootTable {
        /// Physical address of the (last) root table tried.
        addr: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcpiError::Unreadable { what, addr } => {
                write!(f, "cannot read ACPI {what} at {addr:#x}")
            }
            AcpiError::BadRsdp(reason) => write!(f, "invalid ACPI RSDP: {reason}"),
            AcpiError::BadRootTable { addr, reason } => {
                write!(f, "invalid ACPI root table (RSDT/XSDT) at {addr:#x}: {reason}")
            }
        }
    }
}

fn le16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

fn le64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

// ---- RSDP ----------------------------------------------------------------

/// Scans the BIOS areas for the RSDP: the first KiB of the EBDA (whose
/// segment is stored at 0x40E) and 0xE0000..0x100000, on 16-byte
/// boundaries. A candidate needs the signature `"RSD PTR "`, a valid
/// checksum and, for revision 2+, a valid extended checksum.
pub fn find_rsdp(mem: &dyn PhysMem) -> Option<u64> {
    if let Some(segment) = read_u16(mem, 0x40E) {
        let ebda = u64::from(segment) << 4;
        // The EBDA lives between the BIOS data area and the VGA hole.
        if (0x500..0xA0000).contains(&ebda) {
            if let Some(found) = scan_rsdp(mem, ebda, ebda + 1024) {
                return Some(found);
            }
        }
    }
    scan_rsdp(mem, 0xE0000, 0x10_0000)
}

fn scan_rsdp(mem: &dyn PhysMem, start: u64, end: u64) -> Option<u64> {
    let mut addr = start.checked_next_multiple_of(16)?;
    while addr < end {
        let mut sig = [0u8; 8];
        if mem.read(addr, &mut sig) && sig == RSDP_SIGNATURE && read_rsdp(mem, addr).is_ok() {
            return Some(addr);
        }
        addr += 16;
    }
    None
}

/// Reads and validates the RSDP at `addr` (20 bytes, or its extended
/// length for revision 2+).
fn read_rsdp(mem: &dyn PhysMem, addr: u64) -> Result<Vec<u8>, AcpiError> {
    let unreadable = AcpiError::Unreadable { what: "RSDP", addr };
    let mut head = [0u8; RSDP_V2_LEN];
    let v1 = head.get_mut(..RSDP_V1_LEN).ok_or(AcpiError::BadRsdp("internal"))?;
    if !mem.read(addr, v1) {
        return Err(unreadable);
    }
    let v1 = v1.to_vec();
    let Rsdp { revision, .. } = validate_rsdp(&v1)?;
    if revision < 2 {
        return Ok(v1);
    }
    let len = read_u32(mem, addr.checked_add(20).ok_or(unreadable.clone())?).ok_or(unreadable.clone())? as usize;
    if !(RSDP_V2_LEN..=RSDP_MAX_LEN).contains(&len) {
        return Err(AcpiError::BadRsdp("extended length out of range"));
    }
    let mut full = alloc::vec![0u8; len];
    if !mem.read(addr, &mut full) {
        return Err(unreadable);
    }
    validate_rsdp(&full)?;
    Ok(full)
}

struct Rsdp {
    revision: u8,
    oem_id: String,
    rsdt: u64,
    /// 0 if the RSDP has no (usable) XSDT address.
    xsdt: u64,
}

/// Validates RSDP bytes. Revision 2+ RSDPs given with fewer than 36 bytes
/// (e.g. a Multiboot 2 "ACPI old" copy) are used as revision 1.
fn validate_rsdp(b: &[u8]) -> Result<Rsdp, AcpiError> {
    let v1 = b.get(..RSDP_V1_LEN).ok_or(AcpiError::BadRsdp("shorter than 20 bytes"))?;
    if v1.get(..8) != Some(&RSDP_SIGNATURE[..]) {
        return Err(AcpiError::BadRsdp("signature is not \"RSD PTR \""));
    }
    if checksum(v1) != 0 {
        return Err(AcpiError::BadRsdp("checksum mismatch"));
    }
    let revision = v1.get(15).copied().unwrap_or(0);
    let oem = v1.get(9..15).unwrap_or_default();
    let oem_id = String::from_utf8_lossy(oem).trim_end_matches([' ', '\0']).into();
    let rsdt = u64::from(le32(v1, 16).unwrap_or(0));
    let mut xsdt = 0;
    if revision >= 2 && b.len() >= RSDP_V2_LEN {
        let len = le32(b, 20).unwrap_or(0) as usize;
        let Some(full) = b.get(..len).filter(|_| len >= RSDP_V2_LEN) else {
            return Err(AcpiError::BadRsdp("extended length out of range"));
        };
        if checksum(full) != 0 {
            return Err(AcpiError::BadRsdp("extended checksum mismatch"));
        }
        xsdt = le64(b, 24).unwrap_or(0);
    }
    Ok(Rsdp { revision, oem_id, rsdt, xsdt })
}

// ---- tables ----------------------------------------------------------------

/// A table whose header, length and checksum have been validated.
#[derive(Debug, Clone, Copy)]
struct Table {
    addr: u64,
    len: u32,
    sig: [u8; 4],
}

impl Table {
    /// Reads `buf.len()` bytes at offset `off` inside the table.
    fn read(&self, mem: &dyn PhysMem, off: u32, buf: &mut [u8]) -> bool {
        let Ok(n) = u32::try_from(buf.len()) else {
            return false;
        };
        match off.checked_add(n) {
            Some(end) if end <= self.len => mem.read(self.addr + u64::from(off), buf),
            _ => false,
        }
    }
}

/// Validates the table at `addr`: readable header, 36 <= length <= 1 MiB,
/// whole table readable, bytes sum to zero.
fn check_table(mem: &dyn PhysMem, addr: u64) -> Result<Table, SkippedTable> {
    let skip = |signature, reason| SkippedTable { addr, signature, reason };
    let mut header = [0u8; HEADER_LEN as usize];
    if !mem.read(addr, &mut header) {
        return Err(skip(None, "header is unreadable"));
    }
    let sig: [u8; 4] = [header[0], header[1], header[2], header[3]];
    let len = le32(&header, 4).unwrap_or(0);
    if len < HEADER_LEN {
        return Err(skip(Some(sig), "length is below 36 bytes"));
    }
    if len > MAX_TABLE_LEN {
        return Err(skip(Some(sig), "length is above 1 MiB"));
    }
    if addr.checked_add(u64::from(len)).is_none() {
        return Err(skip(Some(sig), "table runs past the end of the address space"));
    }
    // Stream the checksum through a small buffer.
    let mut sum = 0u8;
    let mut buf = [0u8; 512];
    let mut off = 0u32;
    while off < len {
        let n = (len - off).min(buf.len() as u32) as usize;
        let Some(chunk) = buf.get_mut(..n) else { break };
        if !mem.read(addr + u64::from(off), chunk) {
            return Err(skip(Some(sig), "table body is unreadable"));
        }
        sum = sum.wrapping_add(checksum(chunk));
        off += n as u32;
    }
    if sum != 0 {
        return Err(skip(Some(sig), "checksum mismatch"));
    }
    Ok(Table { addr, len, sig })
}

/// Validates a root table and returns its entries (at most [`MAX_TABLES`]).
fn root_entries(
    mem: &dyn PhysMem,
    addr: u64,
    sig: &[u8; 4],
    entry_size: u32,
) -> Result<(Table, Vec<u64>), SkippedTable> {
    let table = check_table(mem, addr)?;
    if &table.sig != sig {
        return Err(SkippedTable {
            addr,
            signature: Some(table.sig),
            reason: if entry_size == 8 {
                "XSDT pointer does not point to an XSDT"
            } else {
                "RSDT pointer does not point to an RSDT"
            },
        });
    }
    let count = ((table.len - HEADER_LEN) / entry_size) as usize;
    let mut entries = Vec::with_capacity(count.min(MAX_TABLES));
    for i in 0..count.min(MAX_TABLES) as u32 {
        let off = HEADER_LEN + i * entry_size;
        let mut raw = [0u8; 8];
        let Some(slot) = raw.get_mut(..entry_size as usize) else {
            break;
        };
        if !table.read(mem, off, slot) {
            break;
        }
        entries.push(u64::from_le_bytes(raw));
    }
    Ok((table, entries))
}

/// Parses ACPI starting from the RSDP at `rsdp_paddr`.
pub fn parse_rsdp_at(mem: &dyn PhysMem, rsdp_paddr: u64) -> Result<AcpiInfo, AcpiError> {
    let bytes = read_rsdp(mem, rsdp_paddr)?;
    parse_rsdp_bytes(mem, &bytes)
}

/// Parses ACPI starting from a copy of the RSDP (as Multiboot 2 provides);
/// the tables themselves are read from `mem`.
///
/// Uses the XSDT when the revision is 2+ and its address is nonzero (the
/// RSDT if the XSDT is invalid), else the RSDT. Individual bad tables are
/// recorded in [`AcpiInfo::skipped`]; only an invalid RSDP or the absence
/// of any valid root table is an error.
pub fn parse_rsdp_bytes(mem: &dyn PhysMem, rsdp: &[u8]) -> Result<AcpiInfo, AcpiError> {
    let r = validate_rsdp(rsdp)?;
    let mut info = AcpiInfo { revision: r.revision, oem_id: r.oem_id, ..AcpiInfo::default() };

    let mut root = None;
    if r.xsdt != 0 {
        match root_entries(mem, r.xsdt, b"XSDT", 8) {
            Ok(found) => root = Some(found),
            Err(skipped) => info.skipped.push(skipped),
        }
    }
    if root.is_none() && r.rsdt != 0 {
        match root_entries(mem, r.rsdt, b"RSDT", 4) {
            Ok(found) => root = Some(found),
            Err(skipped) => info.skipped.push(skipped),
        }
    }
    let Some((root, entries)) = root else {
        return Err(match info.skipped.last() {
            Some(s) => AcpiError::BadRootTable { addr: s.addr, reason: s.reason },
            None => AcpiError::BadRootTable { addr: 0, reason: "the RSDP has no RSDT or XSDT address" },
        });
    };

    let mut seen: Vec<u64> = Vec::with_capacity(entries.len() + 1);
    seen.push(root.addr);
    for addr in entries {
        if addr == 0 || seen.contains(&addr) {
            continue; // null or duplicate entry (also breaks self-references)
        }
        seen.push(addr);
        let table = match check_table(mem, addr) {
            Ok(t) => t,
            Err(skipped) => {
                info.skipped.push(skipped);
                continue;
            }
        };
        info.tables.push((table.sig, addr));
        let first = info.tables.iter().filter(|(s, _)| *s == table.sig).count() == 1;
        if !first {
            continue; // only the first MADT/FADT/HPET counts
        }
        match &table.sig {
            b"APIC" => parse_madt(mem, &table, &mut info),
            b"FACP" => parse_fadt(mem, &table, &mut info),
            b"HPET" => parse_hpet(mem, &table, &mut info),
            _ => {}
        }
    }
    Ok(info)
}

/// MADT: local APIC address, processors, I/O APICs, ISA overrides.
fn parse_madt(mem: &dyn PhysMem, t: &Table, info: &mut AcpiInfo) {
    let mut fixed = [0u8; 8];
    if !t.read(mem, HEADER_LEN, &mut fixed) {
        info.skipped.push(SkippedTable {
            addr: t.addr,
            signature: Some(t.sig),
            reason: "MADT is shorter than 44 bytes",
        });
        return;
    }
    let mut lapic = u64::from(le32(&fixed, 0).unwrap_or(0));
    let mut off = HEADER_LEN + 8;
    // Each step advances by at least 2 bytes within a table of at most
    // 1 MiB, so the walk is bounded.
    while off.checked_add(2).is_some_and(|end| end <= t.len) {
        let mut head = [0u8; 2];
        if !t.read(mem, off, &mut head) {
            break;
        }
        let [ty, len] = head;
        if len < 2 || off + u32::from(len) > t.len {
            break;
        }
        let mut buf = [0u8; 255];
        let Some(entry) = buf.get_mut(..usize::from(len)) else {
            break;
        };
        if !t.read(mem, off, entry) {
            break;
        }
        let entry: &[u8] = entry;
        let byte = |i: usize| entry.get(i).copied().unwrap_or(0);
        match ty {
            0 if len >= 8 => {
                let flags = le32(entry, 4).unwrap_or(0);
                add_cpu(info, u32::from(byte(2)), u32::from(byte(3)), flags);
            }
            1 if len >= 12 && info.ioapics.len() < MAX_IOAPICS => info.ioapics.push(IoApic {
                id: byte(2),
                addr: u64::from(le32(entry, 4).unwrap_or(0)),
                gsi_base: le32(entry, 8).unwrap_or(0),
            }),
            // Only bus 0 (ISA) overrides exist in practice.
            2 if len >= 10 && byte(2) == 0 && info.overrides.len() < MAX_OVERRIDES => {
                info.overrides.push(IrqOverride {
                    source_irq: byte(3),
                    gsi: le32(entry, 4).unwrap_or(0),
                    flags: le16(entry, 8).unwrap_or(0),
                })
            }
            5 if len >= 12 => {
                if let Some(a) = le64(entry, 4).filter(|&a| a != 0) {
                    lapic = a;
                }
            }
            9 if len >= 16 => {
                let apic_id = le32(entry, 4).unwrap_or(0);
                let flags = le32(entry, 8).unwrap_or(0);
                add_cpu(info, le32(entry, 12).unwrap_or(0), apic_id, flags);
            }
            _ => {} // other types, or too short for their type
        }
        off += u32::from(len);
    }
    info.lapic_addr = if lapic != 0 { lapic } else { DEFAULT_LAPIC_ADDR };
}

fn add_cpu(info: &mut AcpiInfo, processor_id: u32, apic_id: u32, flags: u32) {
    // Some firmware lists a processor both as xAPIC and x2APIC.
    if info.cpus.len() < MAX_CPUS && !info.cpus.iter().any(|c| c.apic_id == apic_id) {
        info.cpus.push(LocalApic { processor_id, apic_id, enabled: flags & 1 != 0 });
    }
}

/// FADT: power management, reset register, century, DSDT (and `\_S5`).
fn parse_fadt(mem: &dyn PhysMem, t: &Table, info: &mut AcpiInfo) {
    // Fields past the table's length read as zero, as the spec intends for
    // older, shorter FADTs.
    let mut f = [0u8; FADT_PARSED_LEN];
    let len = (t.len as usize).min(FADT_PARSED_LEN);
    let Some(prefix) = f.get_mut(..len) else { return };
    if !t.read(mem, 0, prefix) {
        return;
    }
    let f = &f[..];
    let u8_at = |off: usize| f.get(off).copied().unwrap_or(0);
    let u32_at = |off: usize| le32(f, off).unwrap_or(0);

    // The extended (X_) block address, if it is an I/O port.
    let x_port = |off: usize| {
        GenericAddress::from_bytes(f.get(off..off + 12).unwrap_or_default())
            .filter(|g| g.space == GenericAddress::SPACE_IO)
            .and_then(|g| u32::try_from(g.address).ok())
            .unwrap_or(0)
    };
    let mut pm1a_cnt = u32_at(64);
    if pm1a_cnt == 0 && len >= 184 {
        pm1a_cnt = x_port(172);
    }
    let mut pm1b_cnt = u32_at(68);
    if pm1b_cnt == 0 && len >= 196 {
        pm1b_cnt = x_port(184);
    }
    const RESET_REG_SUP: u32 = 1 << 10;
    let reset = if len >= 129 && u32_at(112) & RESET_REG_SUP != 0 {
        GenericAddress::from_bytes(f.get(116..128).unwrap_or_default()).filter(|g| g.address != 0)
    } else {
        None
    };
    let x_dsdt = if len >= 148 { le64(f, 140).unwrap_or(0) } else { 0 };
    let dsdt = if x_dsdt != 0 { x_dsdt } else { u64::from(u32_at(40)) };

    info.fadt = Some(Fadt {
        pm1a_cnt,
        pm1b_cnt,
        reset,
        reset_value: u8_at(128),
        century: u8_at(108),
        dsdt,
        sci_irq: le16(f, 46).unwrap_or(0),
        smi_cmd: u32_at(48),
        acpi_enable: u8_at(52),
    });

    if dsdt == 0 {
        return;
    }
    match check_table(mem, dsdt) {
        Ok(d) if &d.sig == b"DSDT" => {
            if !info.tables.contains(&(d.sig, d.addr)) {
                info.tables.push((d.sig, d.addr));
            }
            info.s5 = find_s5(mem, &d);
        }
        Ok(d) => info.skipped.push(SkippedTable {
            addr: dsdt,
            signature: Some(d.sig),
            reason: "FADT DSDT pointer does not point to a DSDT",
        }),
        Err(skipped) => info.skipped.push(skipped),
    }
}

/// HPET: the event timer block's base address.
fn parse_hpet(mem: &dyn PhysMem, t: &Table, info: &mut AcpiInfo) {
    let mut gas = [0u8; 12];
    if t.read(mem, 40, &mut gas) {
        info.hpet = GenericAddress::from_bytes(&gas).map(|g| g.address).filter(|&a| a != 0);
    }
}

// ---- \_S5 ------------------------------------------------------------------

const AML_NAME_OP: u8 = 0x08;
const AML_ROOT_CHAR: u8 = b'\\';
const AML_PACKAGE_OP: u8 = 0x12;
const AML_BYTE_PREFIX: u8 = 0x0A;
const AML_ZERO_OP: u8 = 0x00;
const AML_ONE_OP: u8 = 0x01;

/// Finds `Name(_S5_, Package(){a, b, ...})` in the DSDT body and returns
/// `(a, b)`.
///
/// This is the common minimal approach, not an AML interpreter: the bytes
/// `_S5_` must be preceded by NameOp (optionally with a root prefix `\`)
/// and followed by PackageOp; the package's PkgLength (1-4 bytes) and
/// NumElements (at least 2) are skipped and the first two elements must be
/// BytePrefix + byte, ZeroOp or OneOp. Occurrences that do not fit are
/// skipped; `None` if none fits.
fn find_s5(mem: &dyn PhysMem, dsdt: &Table) -> Option<(u8, u8)> {
    const CHUNK: u32 = 512;
    let mut buf = [0u8; CHUNK as usize];
    let mut pos = HEADER_LEN;
    while pos.checked_add(4)? <= dsdt.len {
        let n = (dsdt.len - pos).min(CHUNK);
        let chunk = buf.get_mut(..n as usize)?;
        if !dsdt.read(mem, pos, chunk) {
            return None;
        }
        let chunk: &[u8] = chunk;
        for (i, w) in chunk.windows(4).enumerate() {
            if w == b"_S5_" {
                if let Some(found) = parse_s5_at(mem, dsdt, pos + i as u32) {
                    return Some(found);
                }
            }
        }
        if pos + n >= dsdt.len {
            break;
        }
        // Overlap by 3 bytes so a name straddling chunks is seen once.
        pos += n - 3;
    }
    None
}

/// Parses the `_S5_` package whose name starts at `name_off` in the DSDT.
fn parse_s5_at(mem: &dyn PhysMem, dsdt: &Table, name_off: u32) -> Option<(u8, u8)> {
    // Window: 2 bytes before the name, 4 name bytes, PackageOp, up to 4
    // PkgLength bytes, NumElements and two 2-byte integers = 20 bytes.
    const BEFORE: u32 = 2;
    const WINDOW: u32 = 20;
    let start = name_off.checked_sub(BEFORE)?.max(HEADER_LEN);
    let end = name_off.checked_add(WINDOW)?.min(dsdt.len);
    let mut buf = [0u8; (BEFORE + WINDOW) as usize];
    let w = buf.get_mut(..end.checked_sub(start)? as usize)?;
    if !dsdt.read(mem, start, w) {
        return None;
    }
    let w: &[u8] = w;
    let name = (name_off - start) as usize;

    // NameOp, or NameOp + root prefix, right before the name.
    let prev = |back: usize| name.checked_sub(back).and_then(|i| w.get(i)).copied();
    let named = prev(1) == Some(AML_NAME_OP) || (prev(1) == Some(AML_ROOT_CHAR) && prev(2) == Some(AML_NAME_OP));
    if !named {
        return None;
    }
    let mut p = name + 4;
    if *w.get(p)? != AML_PACKAGE_OP {
        return None;
    }
    p += 1;
    // PkgLength: bits 7-6 of the lead byte count the bytes that follow.
    let lead = *w.get(p)?;
    p += 1 + usize::from(lead >> 6);
    let num_elements = *w.get(p)?;
    if num_elements < 2 {
        return None;
    }
    p += 1;
    let a = aml_small_int(w, &mut p)?;
    let b = aml_small_int(w, &mut p)?;
    Some((a, b))
}

/// Decodes BytePrefix + byte, ZeroOp or OneOp at `*p`, advancing `*p`.
fn aml_small_int(w: &[u8], p: &mut usize) -> Option<u8> {
    match *w.get(*p)? {
        AML_BYTE_PREFIX => {
            let v = *w.get(*p + 1)?;
            *p += 2;
            Some(v)
        }
        AML_ZERO_OP => {
            *p += 1;
            Some(0)
        }
        AML_ONE_OP => {
            *p += 1;
            Some(1)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootinfo::testmem::SparseMem;
    use alloc::string::ToString;
    use alloc::vec;

    const RSDP_ADDR: u64 = 0xF5A40;
    const RSDT: u64 = 0x7FE1000;
    const XSDT: u64 = 0x7FE1100;
    const FACP: u64 = 0x7FE1200;
    const DSDT: u64 = 0x7FE1400;
    const APIC: u64 = 0x7FE1800;
    const HPET: u64 = 0x7FE1900;
    const SSDT: u64 = 0x7FE1A00;

    // ---- builders --------------------------------------------------------

    fn fix_checksum(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        bytes[at] = 0u8.wrapping_sub(checksum(bytes));
    }

    fn table(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(sig);
        t.extend_from_slice(&(36 + body.len() as u32).to_le_bytes());
        t.push(revision);
        t.push(0); // checksum
        t.extend_from_slice(b"BOCHS ");
        t.extend_from_slice(b"BXPC    ");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(b"BXPC");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(body);
        fix_checksum(&mut t, 9);
        t
    }

    fn rsdp(revision: u8, rsdt: u32, xsdt: u64) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(b"RSD PTR ");
        r.push(0);
        r.extend_from_slice(b"BOCHS ");
        r.push(revision);
        r.extend_from_slice(&rsdt.to_le_bytes());
        if revision >= 2 {
            r.extend_from_slice(&36u32.to_le_bytes());
            r.extend_from_slice(&xsdt.to_le_bytes());
            r.extend_from_slice(&[0, 0, 0, 0]);
            fix_checksum(&mut r, 32);
        }
        // The v1 checksum covers the first 20 bytes only; fixing it
        // changes the extended sum, so fix that one again.
        let mut v1 = r[..20].to_vec();
        fix_checksum(&mut v1, 8);
        r[8] = v1[8];
        if revision >= 2 {
            fix_checksum(&mut r, 32);
        }
        r
    }

    fn root(sig: &[u8; 4], entries: &[u64], wide: bool) -> Vec<u8> {
        let mut body = Vec::new();
        for &e in entries {
            if wide {
                body.extend_from_slice(&e.to_le_bytes());
            } else {
                body.extend_from_slice(&(e as u32).to_le_bytes());
            }
        }
        table(sig, 1, &body)
    }

    fn madt_entries() -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // CPU 0, APIC 0, enabled
        e.extend_from_slice(&[0, 8, 1, 1, 1, 0, 0, 0]); // CPU 1, APIC 1, enabled
        e.extend_from_slice(&[1, 12, 0, 0]); // I/O APIC 0
        e.extend_from_slice(&0xFEC0_0000u32.to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(&[2, 10, 0, 0]); // IRQ0 -> GSI2
        e.extend_from_slice(&2u32.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(&[2, 10, 0, 9]); // IRQ9 -> GSI9, level, active high
        e.extend_from_slice(&9u32.to_le_bytes());
        e.extend_from_slice(&0x000Du16.to_le_bytes());
        e.extend_from_slice(&[4, 6, 0xFF, 0, 0, 1]); // local APIC NMI: ignored
        e
    }

    fn madt(entries: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0xFEE0_0000u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
        body.extend_from_slice(entries);
        table(b"APIC", 1, &body)
    }

    /// An ACPI 2.0-style FADT (244 bytes) like QEMU's q35 one.
    fn fadt(len: usize, dsdt32: u32, x_dsdt: u64) -> Vec<u8> {
        let mut f = vec![0u8; len - 36];
        let mut put = |off: usize, bytes: &[u8]| {
            if off + bytes.len() <= len {
                f[off - 36..off - 36 + bytes.len()].copy_from_slice(bytes);
            }
        };
        put(40, &dsdt32.to_le_bytes());
        put(46, &9u16.to_le_bytes()); // SCI
        put(48, &0xB2u32.to_le_bytes()); // SMI_CMD
        put(52, &[0xF1]); // ACPI_ENABLE
        put(56, &0x600u32.to_le_bytes()); // PM1a_EVT
        put(64, &0x604u32.to_le_bytes()); // PM1a_CNT
        put(108, &[0x32]); // CENTURY
        put(112, &(1u32 << 10).to_le_bytes()); // RESET_REG_SUP
        put(116, &[1, 8, 0, 0]); // reset register: I/O, 8 bits
        put(120, &0xCF9u64.to_le_bytes());
        put(128, &[0x0F]); // RESET_VALUE
        put(140, &x_dsdt.to_le_bytes());
        table(b"FACP", 3, &f)
    }

    fn dsdt(aml: &[u8]) -> Vec<u8> {
        table(b"DSDT", 2, aml)
    }

    /// AML for `Name(\_S5, Package(0x04){0x05, 0x05, Zero, Zero})` preceded
    /// by unrelated bytes and a decoy reference to `_S5_`.
    fn s5_aml() -> Vec<u8> {
        let mut a = vec![0x10, 0x05, 0x5C, 0x00]; // Scope(\) ...
        a.extend_from_slice(b"\x70_S5_\x60"); // Store(_S5_, Local0): decoy
        a.extend_from_slice(&[0x08, b'\\']);
        a.extend_from_slice(b"_S5_");
        a.extend_from_slice(&[0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00]);
        a.extend_from_slice(&[0xA4, 0x00]); // Return(Zero)
        a
    }

    fn hpet() -> Vec<u8> {
        let mut body = vec![0u8; 20];
        body[0..4].copy_from_slice(&0x8086_A201u32.to_le_bytes());
        body[4..8].copy_from_slice(&[0, 0, 0, 0]); // GAS: memory
        body[8..16].copy_from_slice(&0xFED0_0000u64.to_le_bytes());
        table(b"HPET", 1, &body)
    }

    /// A QEMU-like machine: RSDP v2 in the BIOS area, RSDT and XSDT, FADT,
    /// DSDT with `\_S5`, MADT with two CPUs, one I/O APIC and overrides,
    /// HPET and an SSDT.
    fn machine() -> SparseMem {
        let mut m = SparseMem::new();
        m.map(0xE0000, 0x20000);
        m.map(0x7FE0000, 0x4000);
        m.write(RSDP_ADDR, &rsdp(2, RSDT as u32, XSDT));
        let list = [FACP, APIC, HPET, SSDT];
        m.write(RSDT, &root(b"RSDT", &list, false));
        m.write(XSDT, &root(b"XSDT", &list, true));
        m.write(FACP, &fadt(244, DSDT as u32, DSDT));
        m.write(DSDT, &dsdt(&s5_aml()));
        m.write(APIC, &madt(&madt_entries()));
        m.write(HPET, &hpet());
        m.write(SSDT, &table(b"SSDT", 1, &[0xA3; 16]));
        m
    }

    fn parse_machine(m: &SparseMem) -> AcpiInfo {
        parse_rsdp_at(m, RSDP_ADDR).unwrap()
    }

    // ---- happy paths -------------------------------------------------------

    #[test]
    fn parses_a_qemu_like_machine() {
        let m = machine();
        assert_eq!(find_rsdp(&m), Some(RSDP_ADDR));
        let info = parse_machine(&m);
        assert_eq!(info.revision, 2);
        assert_eq!(info.oem_id, "BOCHS");
        assert_eq!(
            info.tables,
            vec![(*b"FACP", FACP), (*b"DSDT", DSDT), (*b"APIC", APIC), (*b"HPET", HPET), (*b"SSDT", SSDT)]
        );
        assert!(info.skipped.is_empty(), "{:?}", info.skipped);
        assert_eq!(info.lapic_addr, 0xFEE0_0000);
        assert_eq!(
            info.cpus,
            vec![
                LocalApic { processor_id: 0, apic_id: 0, enabled: true },
                LocalApic { processor_id: 1, apic_id: 1, enabled: true },
            ]
        );
        assert_eq!(info.ioapics, vec![IoApic { id: 0, addr: 0xFEC0_0000, gsi_base: 0 }]);
        assert_eq!(info.overrides.len(), 2);
        assert_eq!(info.gsi_for_isa_irq(0), (2, 0));
        assert_eq!(info.gsi_for_isa_irq(9), (9, 0x000D));
        assert_eq!(info.gsi_for_isa_irq(4), (4, 0));
        let fadt = info.fadt.unwrap();
        assert_eq!(
            fadt,
            Fadt {
                pm1a_cnt: 0x604,
                pm1b_cnt: 0,
                reset: Some(GenericAddress { space: 1, width: 8, offset: 0, access: 0, address: 0xCF9 }),
                reset_value: 0x0F,
                century: 0x32,
                dsdt: DSDT,
                sci_irq: 9,
                smi_cmd: 0xB2,
                acpi_enable: 0xF1,
            }
        );
        assert_eq!(info.s5, Some((5, 5)));
        assert_eq!(info.hpet, Some(0xFED0_0000));
        assert_eq!(info.find_table(b"SSDT"), Some(SSDT));
        assert_eq!(info.find_table(b"MCFG"), None);
    }

    #[test]
    fn rsdp_v1_uses_rsdt() {
        let mut m = machine();
        m.write(RSDP_ADDR, &rsdp(0, RSDT as u32, 0));
        m.write(XSDT, &[0xFF; 36]); // XSDT garbage: must not be looked at
        let info = parse_machine(&m);
        assert_eq!(info.revision, 0);
        assert!(info.skipped.is_empty());
        assert_eq!(info.cpus.len(), 2);
        assert_eq!(info.s5, Some((5, 5)));
    }

    #[test]
    fn multiboot2_rsdp_copies() {
        let m = machine();
        // "ACPI new" tag: full 36-byte copy.
        let info = parse_rsdp_bytes(&m, &rsdp(2, RSDT as u32, XSDT)).unwrap();
        assert_eq!(info.cpus.len(), 2);
        // A revision-2 RSDP truncated to 20 bytes falls back to the RSDT.
        let mut m2 = machine();
        m2.write(XSDT, &[0xFF; 36]);
        let v2 = rsdp(2, RSDT as u32, XSDT);
        let info = parse_rsdp_bytes(&m2, &v2[..20]).unwrap();
        assert!(info.skipped.is_empty());
        assert_eq!(info.s5, Some((5, 5)));
        // Too short / wrong signature / bad checksums.
        assert_eq!(parse_rsdp_bytes(&m, &v2[..19]).unwrap_err(), AcpiError::BadRsdp("shorter than 20 bytes"));
        let mut bad = v2.clone();
        bad[0] = b'X';
        assert!(matches!(parse_rsdp_bytes(&m, &bad), Err(AcpiError::BadRsdp(_))));
        let mut bad = v2.clone();
        bad[16] ^= 1;
        assert_eq!(parse_rsdp_bytes(&m, &bad).unwrap_err(), AcpiError::BadRsdp("checksum mismatch"));
        let mut bad = v2.clone();
        bad[24] ^= 1;
        assert_eq!(parse_rsdp_bytes(&m, &bad).unwrap_err(), AcpiError::BadRsdp("extended checksum mismatch"));
        // Extended length pointing past the copy.
        let mut bad = v2.clone();
        bad[20] = 200;
        fix_checksum(&mut bad, 32);
        assert!(matches!(parse_rsdp_bytes(&m, &bad), Err(AcpiError::BadRsdp(_))));
    }

    #[test]
    fn finds_rsdp_in_ebda_first() {
        let mut m = machine();
        m.map(0x400, 0x100);
        m.write_u16(0x40E, 0x9FC0);
        let ebda_rsdp = 0x9FC00 + 0x30;
        m.write(ebda_rsdp, &rsdp(0, RSDT as u32, 0));
        assert_eq!(find_rsdp(&m), Some(ebda_rsdp));
        // A corrupt candidate in the EBDA is skipped.
        m.write(ebda_rsdp + 16, b"RSD PTR ");
        m.write(ebda_rsdp, &[0; 20]);
        assert_eq!(find_rsdp(&m), Some(RSDP_ADDR));
        // Only 16-byte aligned signatures count.
        let mut m = SparseMem::new();
        m.map(0xE0000, 0x20000);
        m.write(0xE0008, &rsdp(0, 0x1000, 0));
        assert_eq!(find_rsdp(&m), None);
        // Bad checksum, then a good one later in the BIOS area.
        let mut bad = rsdp(0, 0x1000, 0);
        bad[8] ^= 0x55;
        m.write(0xE0010, &bad);
        m.write(0xFFFE0, &rsdp(2, 0x1000, 0x2000));
        assert_eq!(find_rsdp(&m), Some(0xFFFE0));
        // A v2 RSDP whose extended checksum is wrong is not accepted.
        let mut bad2 = rsdp(2, 0x1000, 0x2000);
        bad2[24] ^= 1;
        m.write(0xFFFE0, &bad2);
        assert_eq!(find_rsdp(&m), None);
        // Nothing readable at all.
        assert_eq!(find_rsdp(&SparseMem::new()), None);
        // An absurd EBDA segment is ignored.
        let mut m = machine();
        m.map(0x400, 0x100);
        m.write_u16(0x40E, 0xFFFF);
        assert_eq!(find_rsdp(&m), Some(RSDP_ADDR));
    }

    // ---- hostile tables --------------------------------------------------

    #[test]
    fn bad_xsdt_falls_back_to_rsdt() {
        let mut m = machine();
        let mut x = root(b"XSDT", &[FACP], true);
        x[9] ^= 1; // bad checksum
        m.write(XSDT, &x);
        let info = parse_machine(&m);
        assert_eq!(info.cpus.len(), 2);
        assert_eq!(
            info.skipped,
            vec![SkippedTable { addr: XSDT, signature: Some(*b"XSDT"), reason: "checksum mismatch" }]
        );
        // Both bad: an error naming the RSDT.
        let mut r = root(b"RSDT", &[FACP], false);
        r[4] = 8; // length below 36
        m.write(RSDT, &r);
        let err = parse_machine_err(&m);
        assert_eq!(err, AcpiError::BadRootTable { addr: RSDT, reason: "length is below 36 bytes" });
        assert!(err.to_string().contains("0x7fe1000"));
        // RSDP with no root table address at all.
        let m = machine();
        let err = parse_rsdp_bytes(&m, &rsdp(0, 0, 0)).unwrap_err();
        assert!(matches!(err, AcpiError::BadRootTable { addr: 0, .. }));
        // Root pointer pointing at some other table.
        let err = parse_rsdp_bytes(&m, &rsdp(0, FACP as u32, 0)).unwrap_err();
        assert!(matches!(err, AcpiError::BadRootTable { addr: FACP, .. }));
    }

    fn parse_machine_err(m: &SparseMem) -> AcpiError {
        parse_rsdp_at(m, RSDP_ADDR).unwrap_err()
    }

    #[test]
    fn bad_tables_are_skipped_and_recorded() {
        let mut m = machine();
        let bad_sum = 0x7FE2000;
        let too_long = 0x7FE2100;
        let short = 0x7FE2200;
        let past_end = 0x7FE3F00;
        let mut t = table(b"MCFG", 1, &[0; 8]);
        t[20] ^= 1;
        m.write(bad_sum, &t);
        let mut t = table(b"BGRT", 1, &[]);
        t[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        m.write(too_long, &t);
        let mut t = table(b"WAET", 1, &[]);
        t[4..8].copy_from_slice(&35u32.to_le_bytes());
        m.write(short, &t);
        // Header readable, body runs into unmapped memory.
        let mut t = table(b"SRAT", 1, &[]);
        t[4..8].copy_from_slice(&0x1000u32.to_le_bytes());
        m.write(past_end, &t);
        let list = [bad_sum, FACP, too_long, 0, APIC, short, 0x1234_5678, past_end, u64::MAX - 8];
        m.write(XSDT, &root(b"XSDT", &list, true));
        let info = parse_machine(&m);
        assert_eq!(info.cpus.len(), 2);
        assert_eq!(info.s5, Some((5, 5)));
        let reasons: Vec<_> = info.skipped.iter().map(|s| (s.addr, s.reason)).collect();
        assert_eq!(
            reasons,
            vec![
                (bad_sum, "checksum mismatch"),
                (too_long, "length is above 1 MiB"),
                (short, "length is below 36 bytes"),
                (0x1234_5678, "header is unreadable"),
                (past_end, "table body is unreadable"),
                (u64::MAX - 8, "header is unreadable"),
            ]
        );
        assert_eq!(info.skipped[0].to_string(), "ACPI table MCFG at 0x7fe2000: checksum mismatch");
    }

    #[test]
    fn cyclic_and_duplicate_entries() {
        let mut m = machine();
        // The XSDT lists itself, the RSDT, and the FADT and MADT twice.
        let list = [XSDT, RSDT, FACP, APIC, FACP, APIC, XSDT];
        m.write(XSDT, &root(b"XSDT", &list, true));
        let info = parse_machine(&m);
        assert_eq!(info.tables, vec![(*b"RSDT", RSDT), (*b"FACP", FACP), (*b"DSDT", DSDT), (*b"APIC", APIC)]);
        assert_eq!(info.cpus.len(), 2);
        assert_eq!(info.overrides.len(), 2);

        // A second MADT at another address is listed but not merged.
        let other = 0x7FE2000;
        m.write(other, &madt(&[0, 8, 7, 7, 1, 0, 0, 0]));
        m.write(XSDT, &root(b"XSDT", &[APIC, other], true));
        let info = parse_machine(&m);
        assert_eq!(info.tables.len(), 2);
        assert_eq!(info.cpus.len(), 2);
    }

    #[test]
    fn huge_root_table_is_capped() {
        let mut m = machine();
        // A 1 MiB XSDT whose entries all point at the MADT.
        let big = 0x1000_0000;
        let entries = vec![APIC; ((MAX_TABLE_LEN - 36) / 8) as usize];
        let x = root(b"XSDT", &entries, true);
        assert_eq!(x.len() as u32, MAX_TABLE_LEN - 4);
        m.write(big, &x);
        let info = parse_rsdp_bytes(&m, &rsdp(2, 0, big)).unwrap();
        assert_eq!(info.tables, vec![(*b"APIC", APIC)]);
    }

    #[test]
    fn madt_hostile_entries() {
        // Entry length 0 stops the walk (it would never advance).
        let mut e = madt_entries();
        let stop = e.len();
        e.extend_from_slice(&[0, 0, 5, 5, 1, 0, 0, 0]);
        e.extend_from_slice(&[0, 8, 6, 6, 1, 0, 0, 0]);
        let info = madt_info(&e);
        assert_eq!(info.cpus.len(), 2, "walk must stop at the zero-length entry");
        // Length 1 also stops it.
        e[stop + 1] = 1;
        assert_eq!(madt_info(&e).cpus.len(), 2);
        // An entry running past the table end is ignored.
        let mut e = madt_entries();
        e.extend_from_slice(&[1, 12, 3, 0, 0, 0]);
        let info = madt_info(&e);
        assert_eq!(info.ioapics.len(), 1);
        // Entries too short for their type are skipped, the walk goes on.
        let mut e = vec![1, 4, 9, 0, 2, 6, 0, 0, 0, 0, 0, 3, 0];
        e.extend_from_slice(&madt_entries());
        let info = madt_info(&e);
        assert_eq!(info.ioapics.len(), 1);
        assert_eq!(info.overrides.len(), 2);
        assert_eq!(info.cpus.len(), 2);
        // Non-ISA overrides are ignored.
        let info = madt_info(&[2, 10, 1, 5, 20, 0, 0, 0, 0, 0]);
        assert!(info.overrides.is_empty());
        // A MADT too short for its fixed fields.
        let mut m = machine();
        m.write(APIC, &table(b"APIC", 1, &[0; 4]));
        let info = parse_machine(&m);
        assert!(info.cpus.is_empty());
        assert_eq!(info.lapic_addr, DEFAULT_LAPIC_ADDR);
        assert!(info.skipped.iter().any(|s| s.addr == APIC));
    }

    fn madt_info(entries: &[u8]) -> AcpiInfo {
        let mut m = machine();
        m.write(APIC, &madt(entries));
        let info = parse_machine(&m);
        assert!(info.skipped.is_empty());
        info
    }

    #[test]
    fn madt_x2apic_and_lapic_override() {
        let mut e = Vec::new();
        e.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // APIC 0
        e.extend_from_slice(&[0, 8, 1, 1, 0, 0, 0, 0]); // APIC 1 disabled
                                                        // x2APIC 300, UID 2, enabled.
        e.extend_from_slice(&[9, 16, 0, 0]);
        e.extend_from_slice(&300u32.to_le_bytes());
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&2u32.to_le_bytes());
        // x2APIC duplicate of APIC 0: not listed twice.
        e.extend_from_slice(&[9, 16, 0, 0]);
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        // 64-bit local APIC address override.
        e.extend_from_slice(&[5, 12, 0, 0]);
        e.extend_from_slice(&0x1_FEE0_0000u64.to_le_bytes());
        let info = madt_info(&e);
        assert_eq!(info.lapic_addr, 0x1_FEE0_0000);
        assert_eq!(
            info.cpus,
            vec![
                LocalApic { processor_id: 0, apic_id: 0, enabled: true },
                LocalApic { processor_id: 1, apic_id: 1, enabled: false },
                LocalApic { processor_id: 2, apic_id: 300, enabled: true },
            ]
        );
    }

    #[test]
    fn madt_counts_are_capped() {
        // 20000 distinct x2APIC entries in one (valid) MADT.
        let mut e = Vec::new();
        for id in 0..20_000u32 {
            e.extend_from_slice(&[9, 16, 0, 0]);
            e.extend_from_slice(&id.to_le_bytes());
            e.extend_from_slice(&1u32.to_le_bytes());
            e.extend_from_slice(&id.to_le_bytes());
        }
        for _ in 0..1000 {
            e.extend_from_slice(&[2, 10, 0, 0, 2, 0, 0, 0, 0, 0]);
            e.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0]);
        }
        let mut m = machine();
        let big = 0x1000_0000;
        m.write(big, &madt(&e));
        m.write(XSDT, &root(b"XSDT", &[big], true));
        let info = parse_machine(&m);
        assert_eq!(info.cpus.len(), MAX_CPUS);
        assert_eq!(info.overrides.len(), MAX_OVERRIDES);
        assert_eq!(info.ioapics.len(), MAX_IOAPICS);
    }

    #[test]
    fn fadt_variants() {
        // ACPI 1.0 FADT (116 bytes): no reset register, no X_DSDT.
        let mut m = machine();
        m.write(FACP, &fadt(116, DSDT as u32, 0));
        let f = parse_machine(&m).fadt.unwrap();
        assert_eq!(f.reset, None);
        assert_eq!(f.century, 0x32);
        assert_eq!(f.dsdt, DSDT);
        assert_eq!(f.pm1a_cnt, 0x604);
        // X_DSDT wins over DSDT; a bad DSDT is skipped, not fatal.
        let other = 0x7FE2000;
        m.write(FACP, &fadt(244, 0x1234, other));
        m.write(other, &dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x02, 0x01, 0x00]));
        let info = parse_machine(&m);
        assert_eq!(info.fadt.unwrap().dsdt, other);
        assert_eq!(info.s5, Some((1, 0)));
        let mut d = dsdt(&s5_aml());
        d[40] ^= 0xFF;
        m.write(other, &d);
        let info = parse_machine(&m);
        assert_eq!(info.s5, None);
        assert!(info.fadt.is_some());
        assert_eq!(info.skipped[0].addr, other);
        // DSDT pointer to a non-DSDT table.
        m.write(FACP, &fadt(244, 0, APIC));
        let info = parse_machine(&m);
        assert_eq!(info.s5, None);
        assert_eq!(info.skipped[0].reason, "FADT DSDT pointer does not point to a DSDT");
        // Reset register present but not flagged as supported.
        let mut f = fadt(244, DSDT as u32, 0);
        f[112..116].copy_from_slice(&0u32.to_le_bytes());
        fix_checksum(&mut f, 9);
        m.write(FACP, &f);
        assert_eq!(parse_machine(&m).fadt.unwrap().reset, None);
        // PM1a control block only in X_PM1a_CNT_BLK (I/O space).
        let mut f = fadt(244, DSDT as u32, 0);
        f[64..68].copy_from_slice(&0u32.to_le_bytes());
        f[172..176].copy_from_slice(&[1, 16, 0, 2]);
        f[176..184].copy_from_slice(&0xB004u64.to_le_bytes());
        fix_checksum(&mut f, 9);
        m.write(FACP, &f);
        assert_eq!(parse_machine(&m).fadt.unwrap().pm1a_cnt, 0xB004);
        // A bare header: parsed as all zeros.
        m.write(FACP, &table(b"FACP", 1, &[]));
        let info = parse_machine(&m);
        assert_eq!(info.fadt, Some(Fadt::default()));
        assert_eq!(info.s5, None);
    }

    fn s5_of(aml: &[u8]) -> Option<(u8, u8)> {
        let mut m = machine();
        m.write(DSDT, &dsdt(aml));
        parse_machine(&m).s5
    }

    #[test]
    fn s5_encodings() {
        let name = |prefix: &[u8], pkg: &[u8]| {
            let mut a = prefix.to_vec();
            a.extend_from_slice(b"_S5_");
            a.extend_from_slice(pkg);
            a
        };
        // QEMU: Name(_S5, Package(4){Zero, Zero, Zero, Zero})
        assert_eq!(s5_of(&name(&[0x08], &[0x12, 0x06, 0x04, 0, 0, 0, 0])), Some((0, 0)));
        // Root prefix, BytePrefix values.
        assert_eq!(s5_of(&name(&[0x08, b'\\'], &[0x12, 0x0A, 0x04, 0x0A, 0x07, 0x0A, 0x07, 0, 0])), Some((7, 7)));
        // OneOp.
        assert_eq!(s5_of(&name(&[0x08], &[0x12, 0x05, 0x02, 0x01, 0x0A, 0x03])), Some((1, 3)));
        // Two-byte PkgLength (bits 7-6 = 01).
        assert_eq!(s5_of(&name(&[0x08], &[0x12, 0x40 | 0x0A, 0x00, 0x02, 0x0A, 0x06, 0x0A, 0x02])), Some((6, 2)));
        // Four-byte PkgLength (bits 7-6 = 11).
        assert_eq!(s5_of(&name(&[0x08], &[0x12, 0xC0, 0, 0, 0, 0x02, 0x00, 0x0A, 0x05])), Some((0, 5)));
        // Only the first occurrence that parses counts.
        let mut two = name(&[0x70], &[0x60]); // Store(_S5_, Local0)
        two.extend(name(&[0x08], &[0x12, 0x06, 0x04, 0x0A, 0x03, 0x0A, 0x04, 0, 0]));
        two.extend(name(&[0x08], &[0x12, 0x06, 0x04, 0x0A, 0x01, 0x0A, 0x01, 0, 0]));
        assert_eq!(s5_of(&two), Some((3, 4)));
    }

    #[test]
    fn s5_malformed() {
        let with = |pkg: &[u8]| {
            let mut a = vec![0x08];
            a.extend_from_slice(b"_S5_");
            a.extend_from_slice(pkg);
            a
        };
        assert_eq!(s5_of(&[]), None);
        assert_eq!(s5_of(b"_S5_"), None); // at the end of the table
        assert_eq!(s5_of(&with(&[])), None);
        assert_eq!(s5_of(&with(&[0x13, 0x06, 0x04, 0, 0, 0, 0])), None); // not a package
        assert_eq!(s5_of(&with(&[0x12, 0x06, 0x01, 0x0A, 0x05])), None); // one element
        assert_eq!(s5_of(&with(&[0x12, 0x06, 0x04, 0x0B, 0x05, 0x00])), None); // WordPrefix
        assert_eq!(s5_of(&with(&[0x12, 0x06, 0x04, 0xFF, 0x00])), None); // OnesOp
        assert_eq!(s5_of(&with(&[0x12, 0x06, 0x04, 0x0A])), None); // truncated
        assert_eq!(s5_of(&with(&[0x12, 0x06, 0x04, 0x0A, 0x05, 0x0A])), None); // truncated
        assert_eq!(s5_of(&with(&[0x12, 0xC0, 0x00])), None); // PkgLength past the end
                                                             // No NameOp before the name.
        let mut a = vec![0x5C];
        a.extend_from_slice(b"_S5_");
        a.extend_from_slice(&[0x12, 0x06, 0x04, 0, 0, 0, 0]);
        assert_eq!(s5_of(&a), None);
    }

    #[test]
    fn s5_across_chunk_boundaries() {
        // Put the name at every offset around the 512-byte chunk edges.
        for pad in 440..=520 {
            let mut aml = vec![0xA3u8; pad]; // Noop
            aml.extend_from_slice(&[0x08]);
            aml.extend_from_slice(b"_S5_");
            aml.extend_from_slice(&[0x12, 0x06, 0x04, 0x0A, 0x05, 0x0A, 0x06, 0, 0]);
            assert_eq!(s5_of(&aml), Some((5, 6)), "pad {pad}");
        }
    }

    #[test]
    fn hpet_variants() {
        let mut m = machine();
        let mut h = hpet();
        h[44..52].copy_from_slice(&0u64.to_le_bytes());
        fix_checksum(&mut h, 9);
        m.write(HPET, &h);
        assert_eq!(parse_machine(&m).hpet, None);
        m.write(HPET, &table(b"HPET", 1, &[0; 8])); // too short
        assert_eq!(parse_machine(&m).hpet, None);
    }

    #[test]
    fn error_display_is_one_line() {
        let errs = [
            AcpiError::Unreadable { what: "RSDP", addr: 0xF5A40 },
            AcpiError::BadRsdp("checksum mismatch"),
            AcpiError::BadRootTable { addr: 0x7FE1000, reason: "checksum mismatch" },
        ];
        for e in errs {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'));
        }
        assert_eq!(
            AcpiError::Unreadable { what: "RSDP", addr: 0xF5A40 }.to_string(),
            "cannot read ACPI RSDP at 0xf5a40"
        );
        assert_eq!(
            parse_rsdp_at(&SparseMem::new(), 0x1000).unwrap_err().to_string(),
            "cannot read ACPI RSDP at 0x1000"
        );
        let s = SkippedTable { addr: 0x10, signature: Some([0, b'A', 0xFF, b'B']), reason: "checksum mismatch" };
        assert_eq!(s.to_string(), "ACPI table ?A?B at 0x10: checksum mismatch");
    }

    use crate::testutil::Rng;

    #[test]
    fn mutated_tables_never_panic() {
        let base = machine();
        let mut rng = Rng(0xDEAD_BEEF_1234_5678);
        let areas = [(RSDP_ADDR, 36u64), (RSDT, 52), (XSDT, 68), (FACP, 244), (DSDT, 64), (APIC, 110), (HPET, 56)];
        for _ in 0..2000 {
            let mut m = base.clone();
            for _ in 0..1 + rng.next() % 3 {
                let (start, len) = areas[(rng.next() % areas.len() as u64) as usize];
                let addr = start + rng.next() % len;
                m.write(addr, &[rng.next() as u8]);
            }
            // Re-fix some checksums so mutations get past validation.
            if rng.next().is_multiple_of(2) {
                for (start, _) in &areas[1..] {
                    let len = read_u32(&m, start + 4).unwrap().min(512) as usize;
                    if len >= 36 {
                        let mut t = crate::bootinfo::read_bytes(&m, *start, len).unwrap();
                        fix_checksum(&mut t, 9);
                        m.write(*start, &t);
                    }
                }
            }
            if let Ok(info) = parse_rsdp_at(&m, RSDP_ADDR) {
                assert!(info.cpus.len() <= MAX_CPUS);
                let _ = info.gsi_for_isa_irq(0);
            }
            if rng.next().is_multiple_of(16) {
                let _ = find_rsdp(&m);
            }
        }
    }
}
