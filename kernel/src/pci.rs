//! PCI decoding with no hardware access: BAR decoding from configuration
//! values, capability-list walking and virtio capability parsing over a
//! snapshot of a function's configuration space, names for `lspci`, and the
//! ring arithmetic the NIC drivers share (virtqueue layout, used-ring checks).
//!
//! Everything here takes values read from a device and never trusts them:
//! pointers are bounded to the 256-byte configuration space, loops are
//! bounded, sizes are checked for overflow.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Bytes of configuration space reachable through the 0xCF8/0xCFC mechanism.
pub const CONFIG_SIZE: usize = 256;

/// A function's configuration space as read from the device.
pub type ConfigSpace = [u8; CONFIG_SIZE];

/// Offsets in the configuration-space header (PCI Local Bus spec §6.1).
pub mod reg {
    pub const VENDOR_ID: u8 = 0x00;
    pub const DEVICE_ID: u8 = 0x02;
    pub const COMMAND: u8 = 0x04;
    pub const STATUS: u8 = 0x06;
    pub const REVISION: u8 = 0x08;
    pub const PROG_IF: u8 = 0x09;
    pub const SUBCLASS: u8 = 0x0A;
    pub const CLASS: u8 = 0x0B;
    pub const HEADER_TYPE: u8 = 0x0E;
    pub const BAR0: u8 = 0x10;
    /// Type 1 (PCI-PCI bridge): secondary bus number.
    pub const SECONDARY_BUS: u8 = 0x19;
    /// Type 2 (CardBus bridge): capabilities pointer.
    pub const CARDBUS_CAP_PTR: u8 = 0x14;
    /// Type 0: subsystem vendor ID.
    pub const SUBSYSTEM_VENDOR: u8 = 0x2C;
    /// Type 0: subsystem ID.
    pub const SUBSYSTEM_ID: u8 = 0x2E;
    /// Types 0 and 1: capabilities pointer.
    pub const CAP_PTR: u8 = 0x34;
    pub const IRQ_LINE: u8 = 0x3C;
    pub const IRQ_PIN: u8 = 0x3D;
}

/// Command register bits.
pub mod cmd {
    pub const IO: u16 = 1 << 0;
    pub const MEMORY: u16 = 1 << 1;
    pub const BUS_MASTER: u16 = 1 << 2;
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// Status register: the function has a capabilities list.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// Header type (without the multi-function bit).
pub const HEADER_GENERAL: u8 = 0;
pub const HEADER_BRIDGE: u8 = 1;
pub const HEADER_CARDBUS: u8 = 2;
/// Header-type bit 7: the device has more than one function.
pub const HEADER_MULTIFUNCTION: u8 = 0x80;

/// Capability IDs.
pub const CAP_ID_MSI: u8 = 0x05;
pub const CAP_ID_VENDOR: u8 = 0x09;
pub const CAP_ID_PCIE: u8 = 0x10;
pub const CAP_ID_MSIX: u8 = 0x11;

/// A decoded base address register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bar {
    /// Not implemented, reserved type, or the upper half of a 64-bit BAR.
    #[default]
    None,
    /// I/O space.
    Io { port: u32, size: u32 },
    /// Memory space; `wide` for a 64-bit BAR (which uses the next slot too).
    Memory { addr: u64, size: u64, prefetchable: bool, wide: bool },
}

impl Bar {
    /// Size in bytes (0 for `None`).
    pub fn size(&self) -> u64 {
        match *self {
            Bar::None => 0,
            Bar::Io { size, .. } => u64::from(size),
            Bar::Memory { size, .. } => size,
        }
    }

    /// Physical address of a memory BAR that firmware has assigned.
    pub fn mem_addr(&self) -> Option<u64> {
        match *self {
            Bar::Memory { addr, size, .. } if addr != 0 && size != 0 => Some(addr),
            _ => None,
        }
    }

    /// Port of an assigned I/O BAR within the 16-bit x86 port space.
    pub fn io_port(&self) -> Option<u16> {
        match *self {
            Bar::Io { port, size } if port != 0 && size != 0 => u16::try_from(port).ok(),
            _ => None,
        }
    }

    /// Does `[offset, offset + len)` lie inside this BAR?
    pub fn contains(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.size())
    }
}

/// What the low bits of a BAR say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarType {
    Io,
    Mem32,
    Mem64,
    /// Memory type 11b: reserved, ignored.
    Reserved,
}

/// The type of a BAR from its (original) value.
pub fn bar_type(raw: u32) -> BarType {
    if raw & 1 != 0 {
        return BarType::Io;
    }
    match (raw >> 1) & 0b11 {
        0b00 | 0b01 => BarType::Mem32, // 01: "below 1 MiB" (PCI 2.x), a 32-bit BAR
        0b10 => BarType::Mem64,
        _ => BarType::Reserved,
    }
}

/// How many BAR slots a header type has.
pub fn bar_count(header_type: u8) -> usize {
    match header_type & !HEADER_MULTIFUNCTION {
        HEADER_GENERAL => 6,
        HEADER_BRIDGE => 2,
        HEADER_CARDBUS => 1,
        _ => 0,
    }
}

/// Decodes a BAR from its original value and the value read back after
/// writing all-ones (`probe`); for a 64-bit BAR also the upper dword's
/// original and probe values (ignored otherwise).
///
/// The size is the lowest set bit of the writable address mask, so a device
/// that returns a malformed mask still yields a power of two.
pub fn decode_bar(orig: u32, probe: u32, orig_hi: u32, probe_hi: u32) -> Bar {
    match bar_type(orig) {
        BarType::Io => {
            let mut mask = probe & 0xFFFF_FFFC;
            if mask == 0 {
                return Bar::None;
            }
            // Devices that decode only 16 bits of I/O address may return 0
            // in the upper half.
            if mask & 0xFFFF_0000 == 0 {
                mask |= 0xFFFF_0000;
            }
            Bar::Io { port: orig & 0xFFFF_FFFC, size: mask & mask.wrapping_neg() }
        }
        BarType::Mem32 => {
            let mask = probe & 0xFFFF_FFF0;
            if mask == 0 {
                return Bar::None;
            }
            Bar::Memory {
                addr: u64::from(orig & 0xFFFF_FFF0),
                size: u64::from(mask & mask.wrapping_neg()),
                prefetchable: orig & 0x8 != 0,
                wide: false,
            }
        }
        BarType::Mem64 => {
            let mask = (u64::from(probe_hi) << 32) | u64::from(probe & 0xFFFF_FFF0);
            if mask == 0 {
                return Bar::None;
            }
            Bar::Memory {
                addr: (u64::from(orig_hi) << 32) | u64::from(orig & 0xFFFF_FFF0),
                size: mask & mask.wrapping_neg(),
                prefetchable: orig & 0x8 != 0,
                wide: true,
            }
        }
        BarType::Reserved => Bar::None,
    }
}

/// Little-endian u16 at `off` of a configuration snapshot (0 past the end).
pub fn cfg_u16(cfg: &ConfigSpace, off: usize) -> u16 {
    match cfg.get(off..off + 2) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]),
        None => 0,
    }
}

/// Little-endian u32 at `off` of a configuration snapshot (0 past the end).
pub fn cfg_u32(cfg: &ConfigSpace, off: usize) -> u32 {
    match cfg.get(off..off + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

/// The capability list of a function: (ID, offset) pairs in list order.
/// Pointers below 0x40 end the list; a loop or more than 48 entries (the
/// most that fit in 192 bytes) ends it too.
pub fn capabilities(cfg: &ConfigSpace) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    if cfg_u16(cfg, usize::from(reg::STATUS)) & STATUS_CAP_LIST == 0 {
        return out;
    }
    let ptr_at = match cfg[usize::from(reg::HEADER_TYPE)] & !HEADER_MULTIFUNCTION {
        HEADER_GENERAL | HEADER_BRIDGE => reg::CAP_PTR,
        HEADER_CARDBUS => reg::CARDBUS_CAP_PTR,
        _ => return out,
    };
    let mut seen = [false; CONFIG_SIZE / 4];
    let mut ptr = cfg[usize::from(ptr_at)] & 0xFC;
    while ptr >= 0x40 && out.len() < 48 {
        let slot = usize::from(ptr) / 4;
        if seen[slot] {
            break;
        }
        seen[slot] = true;
        let at = usize::from(ptr);
        out.push((cfg[at], ptr));
        ptr = cfg[at + 1] & 0xFC;
    }
    out
}

// ------------------------------------------------------------- virtio --

/// virtio PCI capability types (`cfg_type`, virtio 1.x §4.1.4).
pub mod virtio_cap {
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const ISR: u8 = 3;
    pub const DEVICE: u8 = 4;
    pub const PCI_CFG: u8 = 5;
}

/// Where one virtio structure lives: a BAR, an offset and a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioRegion {
    pub bar: u8,
    pub offset: u32,
    pub length: u32,
}

/// The virtio structures a modern (1.x) device advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VirtioCaps {
    pub common: Option<VirtioRegion>,
    /// The notification region and its `notify_off_multiplier`.
    pub notify: Option<(VirtioRegion, u32)>,
    pub isr: Option<VirtioRegion>,
    pub device: Option<VirtioRegion>,
}

/// Parses the vendor-specific capabilities of a virtio PCI function. The
/// first capability of each type with a valid BAR (0..=5) and length is used
/// (§4.1.4: drivers use the first one they can support).
pub fn virtio_caps(cfg: &ConfigSpace) -> VirtioCaps {
    let mut caps = VirtioCaps::default();
    for (id, ptr) in capabilities(cfg) {
        if id != CAP_ID_VENDOR {
            continue;
        }
        let at = usize::from(ptr);
        let cap_len = usize::from(cfg[at + 2]);
        if cap_len < 16 || at + 16 > CONFIG_SIZE {
            continue;
        }
        let cfg_type = cfg[at + 3];
        let bar = cfg[at + 4];
        if bar > 5 {
            continue;
        }
        let region = VirtioRegion { bar, offset: cfg_u32(cfg, at + 8), length: cfg_u32(cfg, at + 12) };
        match cfg_type {
            virtio_cap::COMMON if caps.common.is_none() => caps.common = Some(region),
            // The notify capability carries notify_off_multiplier after the
            // common fields.
            virtio_cap::NOTIFY if caps.notify.is_none() && cap_len >= 20 && at + 20 <= CONFIG_SIZE => {
                caps.notify = Some((region, cfg_u32(cfg, at + 16)));
            }
            virtio_cap::ISR if caps.isr.is_none() => caps.isr = Some(region),
            virtio_cap::DEVICE if caps.device.is_none() => caps.device = Some(region),
            _ => {}
        }
    }
    caps
}

/// Byte layout of a split virtqueue of `size` entries in one allocation
/// (virtio 1.x §2.7): descriptor table (16-byte aligned, at 0), driver area
/// ("available ring", 2-byte aligned), device area ("used ring", 4-byte
/// aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtqLayout {
    pub size: u16,
    pub desc: usize,
    pub avail: usize,
    pub used: usize,
    pub total: usize,
}

impl VirtqLayout {
    /// Layout for `size` entries (a power of two, 1..=32768).
    pub fn new(size: u16) -> Option<VirtqLayout> {
        if size == 0 || !size.is_power_of_two() {
            return None;
        }
        let n = usize::from(size);
        let desc = 0;
        let avail = 16 * n;
        let avail_len = 6 + 2 * n; // flags, idx, ring[n], used_event
        let used = (avail + avail_len).next_multiple_of(4);
        let used_len = 6 + 8 * n; // flags, idx, ring[n] {id, len}, avail_event
        Some(VirtqLayout { size, desc, avail, used, total: used + used_len })
    }

    /// Offset of descriptor `i`.
    pub fn desc_at(&self, i: u16) -> usize {
        self.desc + 16 * usize::from(i % self.size)
    }

    /// Offset of the available ring's `idx` field.
    pub fn avail_idx(&self) -> usize {
        self.avail + 2
    }

    /// Offset of available-ring slot for running index `idx`.
    pub fn avail_slot(&self, idx: u16) -> usize {
        self.avail + 4 + 2 * usize::from(idx % self.size)
    }

    /// Offset of the used ring's `flags` field.
    pub fn used_flags(&self) -> usize {
        self.used
    }

    /// Offset of the used ring's `idx` field.
    pub fn used_idx(&self) -> usize {
        self.used + 2
    }

    /// Offset of the used-ring element for running index `idx`.
    pub fn used_slot(&self, idx: u16) -> usize {
        self.used + 4 + 8 * usize::from(idx % self.size)
    }
}

/// The queue size to use: at most `want`, at most what the device offers,
/// a power of two. None if the device offers no queue (size 0).
pub fn pick_queue_size(device_max: u16, want: u16) -> Option<u16> {
    let n = device_max.min(want);
    if n == 0 {
        return None;
    }
    Some(1 << (15 - n.leading_zeros().min(15)))
}

/// How many used-ring entries are new, given the device's `used_idx` and the
/// driver's last seen index; None if the device claims more than the queue
/// holds (a broken or hostile device).
pub fn used_pending(used_idx: u16, last_seen: u16, size: u16) -> Option<u16> {
    let n = used_idx.wrapping_sub(last_seen);
    (n <= size).then_some(n)
}

/// What a used-ring element says, checked against the queue and buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsedElem {
    /// Descriptor `id` with `len` bytes written, within the buffer.
    Ok(u16, u32),
    /// A descriptor of this queue, but a length past the buffer.
    Overlong(u16, u32),
    /// An ID outside the queue.
    BadId(u32),
}

/// Checks one used-ring element: the descriptor ID must be inside the queue
/// and the written length must fit the buffer of `buf_len` bytes.
pub fn check_used_elem(id: u32, len: u32, size: u16, buf_len: u32) -> UsedElem {
    match u16::try_from(id).ok().filter(|i| *i < size) {
        None => UsedElem::BadId(id),
        Some(i) if len <= buf_len => UsedElem::Ok(i, len),
        Some(i) => UsedElem::Overlong(i, len),
    }
}

/// Index after `i` in a ring of `n` entries.
pub fn ring_next(i: usize, n: usize) -> usize {
    if i + 1 >= n {
        0
    } else {
        i + 1
    }
}

/// Entries between `from` and `to` going forward in a ring of `n`.
pub fn ring_distance(from: usize, to: usize, n: usize) -> usize {
    if to >= from {
        to - from
    } else {
        n - from + to
    }
}

// ------------------------------------------------- e1000 descriptors --

/// The 8254x legacy receive descriptor checks (8254x SDM §3.2.3), kept
/// pure so hostile values can be tested: the driver reads status, errors
/// and length from the descriptor and lets this decide.
pub mod e1000desc {
    /// Status bit DD: the device is done with the descriptor.
    pub const RX_STATUS_DD: u8 = 1 << 0;
    /// Status bit EOP: last descriptor of a packet.
    pub const RX_STATUS_EOP: u8 = 1 << 1;
    /// Error bits CE, SE, SEQ, CXE, RXE (TCPE/IPE are checksum-offload
    /// results, unused).
    pub const RX_ERRORS: u8 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 4) | (1 << 7);
    /// Shortest frame handed on: an Ethernet header.
    pub const MIN_FRAME: usize = 14;

    /// What to do with one receive descriptor the device marked done.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Rx {
        /// A whole frame of this many bytes, inside the buffer.
        Frame(usize),
        /// Refused and counted as a drop (why, for the log).
        Drop(&'static str),
        /// The tail of a frame already dropped: give the buffer back, count
        /// nothing more.
        Skip,
    }

    /// Judges a done receive descriptor. `skipping` says an earlier
    /// descriptor of the same frame lacked EOP; the returned flag is the
    /// new `skipping` (true until a descriptor with EOP ends the chain).
    /// Frames never span descriptors with long packets off, so a chain is
    /// the device misbehaving: the whole chain is dropped once.
    pub fn check_rx(status: u8, errors: u8, len: u16, buf_size: usize, skipping: bool) -> (Rx, bool) {
        let eop = status & RX_STATUS_EOP != 0;
        let verdict = if skipping {
            Rx::Skip
        } else if !eop {
            Rx::Drop("chained (no EOP)")
        } else if errors & RX_ERRORS != 0 {
            Rx::Drop("error bits")
        } else if usize::from(len) < MIN_FRAME {
            Rx::Drop("too short")
        } else if usize::from(len) > buf_size {
            Rx::Drop("longer than the buffer")
        } else {
            Rx::Frame(usize::from(len))
        };
        (verdict, !eop)
    }

    /// A head or tail register value as a ring index: None if the device
    /// reports a position outside a ring of `count` descriptors.
    pub fn ring_index(raw: u32, count: usize) -> Option<usize> {
        usize::try_from(raw).ok().filter(|&i| i < count)
    }

    /// Free transmit descriptors between the oldest one in flight (`clean`)
    /// and the next to fill (`tail`); one always stays empty so the tail
    /// never catches the head. None if either index is outside the ring.
    pub fn tx_free(clean: usize, tail: usize, count: usize) -> Option<usize> {
        if clean >= count || tail >= count || count == 0 {
            return None;
        }
        Some(count - 1 - super::ring_distance(clean, tail, count))
    }
}

// ------------------------------------------------------ BAR mappings --

/// How a page of a BAR is mapped, as read back from its page-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PteCache {
    /// PCD: caching disabled.
    pub pcd: bool,
    /// PWT: write-through.
    pub pwt: bool,
}

/// The `lspci -v` line of memory BAR `i`: address, size and how its mapped
/// pages are cached. `pages` holds the read-back of every mapped page (empty:
/// the BAR is not mapped); a BAR counts as uncached only if every mapped
/// page has PCD set.
pub fn bar_line(i: usize, bar: &Bar, pages: &[PteCache]) -> Option<String> {
    let (addr, size, kind) = match *bar {
        Bar::Memory { addr, size, wide, prefetchable } => (
            addr,
            size,
            if wide {
                "mem64"
            } else if prefetchable {
                "mem pref"
            } else {
                "mem"
            },
        ),
        Bar::Io { port, size } => return Some(format!("BAR{i} io {port:#x} {size} ports")),
        Bar::None => return None,
    };
    let mapping = if pages.is_empty() {
        String::from("not mapped")
    } else if pages.iter().all(|p| p.pcd) {
        format!(
            "uncached ({} pages mapped, PCD{} set)",
            pages.len(),
            if pages.iter().all(|p| p.pwt) { "+PWT" } else { "" }
        )
    } else {
        format!("CACHED ({} of {} pages without PCD)", pages.iter().filter(|p| !p.pcd).count(), pages.len())
    };
    Some(format!("BAR{i} {kind} {addr:#x} {} {mapping}", size_text(size)))
}

/// `4 KiB`, `128 KiB`, `16 MiB`, `12 B`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes;
    let mut u = 0;
    while u + 1 < UNITS.len() && v >= 1024 && v.is_multiple_of(1024) {
        v /= 1024;
        u += 1;
    }
    format!("{v} {}", UNITS[u])
}

// ------------------------------------------------------------- names --

/// Identification of a function, for naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity {
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub subsystem: (u16, u16),
}

/// Name of a class/subclass (PCI Code and ID Assignment spec).
pub fn class_name(class: u8, subclass: u8) -> &'static str {
    match (class, subclass) {
        (0x00, 0x01) => "VGA compatible unclassified device",
        (0x00, _) => "Unclassified device",
        (0x01, 0x00) => "SCSI storage controller",
        (0x01, 0x01) => "IDE interface",
        (0x01, 0x02) => "Floppy disk controller",
        (0x01, 0x04) => "RAID bus controller",
        (0x01, 0x05) => "ATA controller",
        (0x01, 0x06) => "SATA controller",
        (0x01, 0x07) => "Serial Attached SCSI controller",
        (0x01, 0x08) => "Non-Volatile memory controller",
        (0x01, _) => "Mass storage controller",
        (0x02, 0x00) => "Ethernet controller",
        (0x02, 0x01) => "Token ring network controller",
        (0x02, 0x02) => "FDDI network controller",
        (0x02, 0x03) => "ATM network controller",
        (0x02, 0x07) => "InfiniBand controller",
        (0x02, _) => "Network controller",
        (0x03, 0x00) => "VGA compatible controller",
        (0x03, 0x01) => "XGA compatible controller",
        (0x03, 0x02) => "3D controller",
        (0x03, _) => "Display controller",
        (0x04, 0x00) => "Multimedia video controller",
        (0x04, 0x01) => "Multimedia audio controller",
        (0x04, 0x03) => "Audio device",
        (0x04, _) => "Multimedia controller",
        (0x05, 0x00) => "RAM memory",
        (0x05, 0x01) => "FLASH memory",
        (0x05, _) => "Memory controller",
        (0x06, 0x00) => "Host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x02) => "EISA bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, 0x05) => "PCMCIA bridge",
        (0x06, 0x07) => "CardBus bridge",
        (0x06, 0x09) => "Semi-transparent PCI-to-PCI bridge",
        (0x06, _) => "Bridge",
        (0x07, 0x00) => "Serial controller",
        (0x07, 0x01) => "Parallel controller",
        (0x07, 0x03) => "Modem",
        (0x07, _) => "Communication controller",
        (0x08, 0x00) => "PIC",
        (0x08, 0x01) => "DMA controller",
        (0x08, 0x02) => "Timer",
        (0x08, 0x03) => "RTC",
        (0x08, 0x05) => "SD Host controller",
        (0x08, 0x06) => "IOMMU",
        (0x08, _) => "System peripheral",
        (0x09, _) => "Input device controller",
        (0x0A, _) => "Docking station",
        (0x0B, _) => "Processor",
        (0x0C, 0x00) => "FireWire (IEEE 1394)",
        (0x0C, 0x03) => "USB controller",
        (0x0C, 0x04) => "Fibre Channel",
        (0x0C, 0x05) => "SMBus",
        (0x0C, _) => "Serial bus controller",
        (0x0D, _) => "Wireless controller",
        (0x0E, _) => "Intelligent controller",
        (0x0F, _) => "Satellite communications controller",
        (0x10, _) => "Encryption controller",
        (0x11, _) => "Signal processing controller",
        (0x12, _) => "Processing accelerators",
        (0x13, _) => "Non-Essential Instrumentation",
        (0x40, _) => "Coprocessor",
        _ => "Unassigned class",
    }
}

/// Short vendor name, for the vendors a hypervisor host typically has.
pub fn vendor_name(vendor: u16) -> Option<&'static str> {
    Some(match vendor {
        0x8086 => "Intel",
        0x1AF4 | 0x1B36 => "Red Hat",
        0x1234 => "QEMU",
        0x1022 => "AMD",
        0x1002 => "AMD/ATI",
        0x10DE => "NVIDIA",
        0x10EC => "Realtek",
        0x14E4 => "Broadcom",
        0x15AD => "VMware",
        0x80EE => "VirtualBox",
        0x1D0F => "Amazon",
        0x15B3 => "Mellanox",
        0x19A2 => "Emulex",
        0x1077 => "QLogic",
        _ => return None,
    })
}

/// Name of a virtio device type (virtio 1.x §5).
fn virtio_type_name(t: u16) -> &'static str {
    match t {
        1 => "network",
        2 => "block",
        3 => "console",
        4 => "entropy",
        5 => "memory balloon",
        8 => "SCSI",
        9 => "9P transport",
        16 => "GPU",
        18 => "input",
        19 => "socket",
        26 => "file system",
        _ => "unknown",
    }
}

/// Device name for (vendor, device) where known.
pub fn device_name(vendor: u16, device: u16) -> Option<String> {
    let s = match (vendor, device) {
        (0x8086, 0x100E) => "82540EM Gigabit Ethernet",
        (0x8086, 0x100F) => "82545EM Gigabit Ethernet",
        (0x8086, 0x10D3) => "82574L Gigabit Ethernet",
        (0x8086, 0x1237) => "440FX host bridge",
        (0x8086, 0x7000) => "PIIX3 ISA bridge",
        (0x8086, 0x7010) => "PIIX3 IDE",
        (0x8086, 0x7020) => "PIIX3 USB",
        (0x8086, 0x7113) => "PIIX4 ACPI",
        (0x8086, 0x29C0) => "Q35 host bridge",
        (0x8086, 0x2918) => "ICH9 LPC bridge",
        (0x8086, 0x2922) => "ICH9 AHCI",
        (0x8086, 0x2930) => "ICH9 SMBus",
        (0x8086, 0x2668) => "ICH6 HD audio",
        (0x8086, 0x293E) => "ICH9 HD audio",
        (0x1234, 0x1111) => "standard VGA",
        (0x1B36, 0x0001) => "PCI-PCI bridge",
        (0x1B36, 0x0008) => "PCIe host bridge",
        (0x1B36, 0x000C) => "PCIe root port",
        (0x1B36, 0x000D) => "XHCI host controller",
        (0x1AF4, d @ 0x1000..=0x103F) => {
            // Transitional IDs: 0x1000 + (type - 1) for the classic types.
            let t = match d {
                0x1000 => 1,
                0x1001 => 2,
                0x1002 => 5,
                0x1003 => 3,
                0x1004 => 8,
                0x1005 => 4,
                0x1009 => 9,
                _ => 0,
            };
            return Some(format!("virtio {} device (transitional)", virtio_type_name(t)));
        }
        (0x1AF4, d @ 0x1040..=0x107F) => {
            return Some(format!("virtio {} device (modern)", virtio_type_name(d - 0x1040)));
        }
        _ => return None,
    };
    Some(String::from(s))
}

/// `bb:dd.f`.
pub fn location(bus: u8, dev: u8, func: u8) -> String {
    format!("{bus:02x}:{dev:02x}.{func}")
}

/// One `lspci` line: `00:03.0 Ethernet controller [0200]: Intel 82540EM
/// Gigabit Ethernet [8086:100e] irq 11`.
pub fn lspci_line(location: &str, id: &Identity, irq: Option<u8>) -> String {
    let class = class_name(id.class, id.subclass);
    let vendor = vendor_name(id.vendor).map_or_else(|| format!("Vendor {:04x}", id.vendor), String::from);
    let device = device_name(id.vendor, id.device).unwrap_or_else(|| format!("Device {:04x}", id.device));
    let mut line = format!(
        "{location} {class} [{:02x}{:02x}]: {vendor} {device} [{:04x}:{:04x}]",
        id.class, id.subclass, id.vendor, id.device
    );
    if let Some(irq) = irq {
        line.push_str(&format!(" irq {irq}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_io_bar() {
        // 32 ports at 0xC000; the device decodes 32-bit I/O addresses.
        assert_eq!(decode_bar(0xC001, 0xFFFF_FFE1, 0, 0), Bar::Io { port: 0xC000, size: 32 });
        // Same, but the device returns 0 in the upper half.
        assert_eq!(decode_bar(0xC001, 0x0000_FFE1, 0, 0), Bar::Io { port: 0xC000, size: 32 });
        assert_eq!(Bar::Io { port: 0xC000, size: 32 }.io_port(), Some(0xC000));
        // Not implemented.
        assert_eq!(decode_bar(0, 0, 0, 0), Bar::None);
    }

    #[test]
    fn decodes_mem32_bar() {
        // 128 KiB at 0xFEB8_0000, not prefetchable (e1000 BAR0).
        let b = decode_bar(0xFEB8_0000, 0xFFFE_0000, 0, 0);
        assert_eq!(b, Bar::Memory { addr: 0xFEB8_0000, size: 0x20000, prefetchable: false, wide: false });
        assert_eq!(b.mem_addr(), Some(0xFEB8_0000));
        assert!(b.contains(0x1_FFFC, 4));
        assert!(!b.contains(0x1_FFFC, 8));
        assert!(!b.contains(u64::MAX, 2));
        // Prefetchable, "below 1 MiB" type.
        let b = decode_bar(0x000A_000A, 0xFFFF_0002, 0, 0);
        assert_eq!(b, Bar::Memory { addr: 0xA_0000, size: 0x10000, prefetchable: true, wide: false });
        // Unassigned: no address to map.
        assert_eq!(decode_bar(0, 0xFFFF_F000, 0, 0).mem_addr(), None);
    }

    #[test]
    fn decodes_mem64_bar() {
        // 16 KiB prefetchable at 0x8_0000_4000 (virtio-pci modern BAR 4).
        let b = decode_bar(0x0000_400C, 0xFFFF_C00C, 0x8, 0xFFFF_FFFF);
        assert_eq!(b, Bar::Memory { addr: 0x8_0000_4000, size: 0x4000, prefetchable: true, wide: true });
        // 8 GiB: the size comes from the upper dword.
        let b = decode_bar(0x4, 0x4, 0x4, 0xFFFF_FFFE);
        assert_eq!(b.size(), 8 << 30);
        // Malformed (non-contiguous) mask: lowest writable bit wins.
        let b = decode_bar(0x0, 0xF0F0_1000, 0, 0);
        assert_eq!(b.size(), 0x1000);
        // Reserved type.
        assert_eq!(decode_bar(0x6, 0xFFFF_FFF6, 0, 0), Bar::None);
    }

    #[test]
    fn bar_counts() {
        assert_eq!(bar_count(0x00), 6);
        assert_eq!(bar_count(0x80), 6);
        assert_eq!(bar_count(0x01), 2);
        assert_eq!(bar_count(0x02), 1);
        assert_eq!(bar_count(0x7F), 0);
    }

    fn cfg_with_caps(caps: &[(u8, u8, &[u8])]) -> ConfigSpace {
        // caps: (offset, id, body after the id/next bytes)
        let mut c = [0u8; CONFIG_SIZE];
        c[6] = STATUS_CAP_LIST as u8;
        c[usize::from(reg::CAP_PTR)] = caps.first().map_or(0, |x| x.0);
        for (i, (off, id, body)) in caps.iter().enumerate() {
            let at = usize::from(*off);
            c[at] = *id;
            c[at + 1] = caps.get(i + 1).map_or(0, |x| x.0);
            c[at + 2..at + 2 + body.len()].copy_from_slice(body);
        }
        c
    }

    #[test]
    fn walks_capabilities() {
        let c = cfg_with_caps(&[(0x40, CAP_ID_MSIX, &[]), (0x50, CAP_ID_VENDOR, &[]), (0x60, CAP_ID_PCIE, &[])]);
        assert_eq!(capabilities(&c), [(CAP_ID_MSIX, 0x40), (CAP_ID_VENDOR, 0x50), (CAP_ID_PCIE, 0x60)]);
        // No capability-list bit: nothing.
        let mut d = c;
        d[6] = 0;
        assert!(capabilities(&d).is_empty());
        // A loop ends the walk.
        let mut e = c;
        e[0x61] = 0x40;
        assert_eq!(capabilities(&e).len(), 3);
        // A pointer into the header ends it; low bits are masked.
        let mut f = c;
        f[0x41] = 0x20;
        assert_eq!(capabilities(&f).len(), 1);
        let mut g = c;
        g[usize::from(reg::CAP_PTR)] = 0x43;
        assert_eq!(capabilities(&g)[0], (CAP_ID_MSIX, 0x40));
        // The last byte of config space as a capability does not overrun.
        let mut h = [0u8; CONFIG_SIZE];
        h[6] = STATUS_CAP_LIST as u8;
        h[usize::from(reg::CAP_PTR)] = 0xFC;
        h[0xFC] = CAP_ID_VENDOR;
        h[0xFD] = 0xFC;
        assert_eq!(capabilities(&h), [(CAP_ID_VENDOR, 0xFC)]);
        assert_eq!(virtio_caps(&h), VirtioCaps::default());
    }

    fn vcap(cap_len: u8, cfg_type: u8, bar: u8, offset: u32, length: u32, extra: Option<u32>) -> Vec<u8> {
        let mut v = vec![cap_len, cfg_type, bar, 0, 0, 0];
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&length.to_le_bytes());
        if let Some(x) = extra {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    #[test]
    fn parses_virtio_caps() {
        // As QEMU's virtio-net-pci lays them out (BAR 4), plus an MSI-X cap.
        let common = vcap(16, virtio_cap::COMMON, 4, 0, 0x1000, None);
        let isr = vcap(16, virtio_cap::ISR, 4, 0x1000, 0x1000, None);
        let device = vcap(16, virtio_cap::DEVICE, 4, 0x2000, 0x1000, None);
        let notify = vcap(20, virtio_cap::NOTIFY, 4, 0x3000, 0x1000, Some(4));
        let pcicfg = vcap(20, virtio_cap::PCI_CFG, 0, 0, 0, Some(0));
        let second_common = vcap(16, virtio_cap::COMMON, 2, 0, 0x1000, None);
        let c = cfg_with_caps(&[
            (0x98, CAP_ID_MSIX, &[]),
            (0x84, CAP_ID_VENDOR, &pcicfg),
            (0x70, CAP_ID_VENDOR, &notify),
            (0x60, CAP_ID_VENDOR, &device),
            (0x50, CAP_ID_VENDOR, &isr),
            (0x40, CAP_ID_VENDOR, &common),
            (0xA8, CAP_ID_VENDOR, &second_common),
        ]);
        let caps = virtio_caps(&c);
        assert_eq!(caps.common, Some(VirtioRegion { bar: 4, offset: 0, length: 0x1000 }));
        assert_eq!(caps.isr, Some(VirtioRegion { bar: 4, offset: 0x1000, length: 0x1000 }));
        assert_eq!(caps.device, Some(VirtioRegion { bar: 4, offset: 0x2000, length: 0x1000 }));
        assert_eq!(caps.notify, Some((VirtioRegion { bar: 4, offset: 0x3000, length: 0x1000 }, 4)));
    }

    #[test]
    fn rejects_bad_virtio_caps() {
        let short = vcap(12, virtio_cap::COMMON, 4, 0, 0x1000, None);
        let bad_bar = vcap(16, virtio_cap::ISR, 6, 0, 0x1000, None);
        let short_notify = vcap(16, virtio_cap::NOTIFY, 4, 0x3000, 0x1000, None);
        let c = cfg_with_caps(&[
            (0x40, CAP_ID_VENDOR, &short),
            (0x50, CAP_ID_VENDOR, &bad_bar),
            (0x60, CAP_ID_VENDOR, &short_notify),
        ]);
        assert_eq!(virtio_caps(&c), VirtioCaps::default());
        // A capability whose body would run past the end of config space.
        let mut e = [0u8; CONFIG_SIZE];
        e[6] = STATUS_CAP_LIST as u8;
        e[usize::from(reg::CAP_PTR)] = 0xF4;
        e[0xF4] = CAP_ID_VENDOR;
        e[0xF6] = 20;
        e[0xF7] = virtio_cap::NOTIFY;
        assert_eq!(virtio_caps(&e), VirtioCaps::default());
    }

    #[test]
    fn virtqueue_layout() {
        let l = VirtqLayout::new(256).unwrap();
        assert_eq!(l.desc, 0);
        assert_eq!(l.avail, 4096);
        assert_eq!(l.used, 4096 + 6 + 512 + 2); // 4616, 4-byte aligned
        assert_eq!(l.used % 4, 0);
        assert_eq!(l.total, l.used + 6 + 8 * 256);
        assert_eq!(l.desc_at(3), 48);
        assert_eq!(l.avail_slot(257), 4096 + 4 + 2);
        assert_eq!(l.used_slot(256), l.used + 4);
        let l = VirtqLayout::new(1).unwrap();
        assert_eq!((l.avail, l.used, l.total), (16, 24, 38));
        assert!(VirtqLayout::new(0).is_none());
        assert!(VirtqLayout::new(96).is_none());
        assert!(VirtqLayout::new(32768).is_some());
    }

    #[test]
    fn queue_sizes() {
        assert_eq!(pick_queue_size(1024, 256), Some(256));
        assert_eq!(pick_queue_size(256, 256), Some(256));
        assert_eq!(pick_queue_size(128, 256), Some(128));
        assert_eq!(pick_queue_size(100, 256), Some(64));
        assert_eq!(pick_queue_size(1, 256), Some(1));
        assert_eq!(pick_queue_size(0, 256), None);
        assert_eq!(pick_queue_size(u16::MAX, u16::MAX), Some(32768));
    }

    #[test]
    fn used_ring_checks() {
        assert_eq!(used_pending(5, 3, 256), Some(2));
        assert_eq!(used_pending(2, 65534, 256), Some(4));
        assert_eq!(used_pending(3, 3, 256), Some(0));
        assert_eq!(used_pending(300, 3, 256), None);
        assert_eq!(used_pending(2, 3, 256), None);
        assert_eq!(check_used_elem(7, 1526, 256, 2048), UsedElem::Ok(7, 1526));
        assert_eq!(check_used_elem(255, 0, 256, 2048), UsedElem::Ok(255, 0));
        assert_eq!(check_used_elem(256, 64, 256, 2048), UsedElem::BadId(256));
        assert_eq!(check_used_elem(0x1_0001, 64, 256, 2048), UsedElem::BadId(0x1_0001));
        assert_eq!(check_used_elem(3, 2049, 256, 2048), UsedElem::Overlong(3, 2049));
    }

    #[test]
    fn ring_arithmetic() {
        assert_eq!(ring_next(0, 256), 1);
        assert_eq!(ring_next(255, 256), 0);
        assert_eq!(ring_distance(10, 10, 256), 0);
        assert_eq!(ring_distance(10, 20, 256), 10);
        assert_eq!(ring_distance(250, 4, 256), 10);
    }

    #[test]
    fn e1000_rx_descriptor_checks() {
        use e1000desc::*;
        let ok = RX_STATUS_DD | RX_STATUS_EOP;
        assert_eq!(check_rx(ok, 0, 60, 2048, false), (Rx::Frame(60), false));
        assert_eq!(check_rx(ok, 0, 2048, 2048, false), (Rx::Frame(2048), false));
        assert_eq!(check_rx(ok, 0, 14, 2048, false), (Rx::Frame(14), false));
        // Hostile lengths: 0, short, past the buffer, the largest u16.
        assert!(matches!(check_rx(ok, 0, 0, 2048, false), (Rx::Drop(_), false)));
        assert!(matches!(check_rx(ok, 0, 13, 2048, false), (Rx::Drop(_), false)));
        assert!(matches!(check_rx(ok, 0, 2049, 2048, false), (Rx::Drop(_), false)));
        assert!(matches!(check_rx(ok, 0, u16::MAX, 2048, false), (Rx::Drop(_), false)));
        // Every error bit on its own drops the frame; checksum results do not.
        for bit in [0u8, 1, 2, 4, 7] {
            assert!(matches!(check_rx(ok, 1 << bit, 60, 2048, false), (Rx::Drop("error bits"), false)), "bit {bit}");
        }
        assert_eq!(check_rx(ok, (1 << 5) | (1 << 6), 60, 2048, false), (Rx::Frame(60), false));
        // A chain: the first descriptor (no EOP) is dropped and counted,
        // the middle and the last (EOP) are skipped, then normal again.
        let (v, skip) = check_rx(RX_STATUS_DD, 0, 2048, 2048, false);
        assert_eq!((v, skip), (Rx::Drop("chained (no EOP)"), true));
        let (v, skip) = check_rx(RX_STATUS_DD, 0, 2048, 2048, skip);
        assert_eq!((v, skip), (Rx::Skip, true));
        let (v, skip) = check_rx(ok, 0, 100, 2048, skip);
        assert_eq!((v, skip), (Rx::Skip, false));
        assert_eq!(check_rx(ok, 0, 100, 2048, skip), (Rx::Frame(100), false));
        // A skipped tail with error bits or a bad length is still just skipped.
        assert_eq!(check_rx(ok, 0xFF, 0, 2048, true), (Rx::Skip, false));
    }

    #[test]
    fn e1000_ring_indices() {
        use e1000desc::*;
        assert_eq!(ring_index(0, 256), Some(0));
        assert_eq!(ring_index(255, 256), Some(255));
        assert_eq!(ring_index(256, 256), None);
        assert_eq!(ring_index(u32::MAX, 256), None);
        assert_eq!(tx_free(0, 0, 256), Some(255));
        assert_eq!(tx_free(0, 255, 256), Some(0));
        assert_eq!(tx_free(10, 9, 256), Some(0));
        assert_eq!(tx_free(250, 4, 256), Some(245));
        assert_eq!(tx_free(256, 0, 256), None);
        assert_eq!(tx_free(0, 300, 256), None);
        assert_eq!(tx_free(0, 0, 0), None);
    }

    #[test]
    fn bar_lines() {
        let bar = Bar::Memory { addr: 0xFEBC_0000, size: 0x20000, prefetchable: false, wide: false };
        let uc = PteCache { pcd: true, pwt: true };
        assert_eq!(
            bar_line(0, &bar, &[uc; 6]).unwrap(),
            "BAR0 mem 0xfebc0000 128 KiB uncached (6 pages mapped, PCD+PWT set)"
        );
        assert_eq!(bar_line(0, &bar, &[]).unwrap(), "BAR0 mem 0xfebc0000 128 KiB not mapped");
        let wb = PteCache { pcd: false, pwt: false };
        assert_eq!(
            bar_line(0, &bar, &[uc, wb]).unwrap(),
            "BAR0 mem 0xfebc0000 128 KiB CACHED (1 of 2 pages without PCD)"
        );
        let wide = Bar::Memory { addr: 0xFE00_0000, size: 0x4000, prefetchable: true, wide: true };
        assert_eq!(
            bar_line(4, &wide, &[PteCache { pcd: true, pwt: false }]).unwrap(),
            "BAR4 mem64 0xfe000000 16 KiB uncached (1 pages mapped, PCD set)"
        );
        assert_eq!(bar_line(1, &Bar::Io { port: 0xC000, size: 64 }, &[]).unwrap(), "BAR1 io 0xc000 64 ports");
        assert_eq!(bar_line(2, &Bar::None, &[]), None);
        assert_eq!(size_text(4096), "4 KiB");
        assert_eq!(size_text(12), "12 B");
        assert_eq!(size_text(3 << 20), "3 MiB");
        assert_eq!(size_text(1536), "1536 B");
    }

    #[test]
    fn names() {
        let e1000 = Identity { vendor: 0x8086, device: 0x100E, class: 2, subclass: 0, ..Default::default() };
        assert_eq!(
            lspci_line("00:03.0", &e1000, Some(11)),
            "00:03.0 Ethernet controller [0200]: Intel 82540EM Gigabit Ethernet [8086:100e] irq 11"
        );
        let vnet = Identity { vendor: 0x1AF4, device: 0x1041, class: 2, subclass: 0, ..Default::default() };
        assert_eq!(
            lspci_line("00:04.0", &vnet, None),
            "00:04.0 Ethernet controller [0200]: Red Hat virtio network device (modern) [1af4:1041]"
        );
        assert_eq!(device_name(0x1AF4, 0x1000).as_deref(), Some("virtio network device (transitional)"));
        assert_eq!(device_name(0x1AF4, 0x1042).as_deref(), Some("virtio block device (modern)"));
        let odd = Identity { vendor: 0xABCD, device: 0x1234, class: 0xEE, subclass: 1, ..Default::default() };
        assert_eq!(
            lspci_line("1f:1f.7", &odd, None),
            "1f:1f.7 Unassigned class [ee01]: Vendor abcd Device 1234 [abcd:1234]"
        );
        assert_eq!(location(0, 31, 3), "00:1f.3");
        assert_eq!(class_name(6, 4), "PCI bridge");
    }
}
