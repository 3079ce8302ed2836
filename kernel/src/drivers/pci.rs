//! PCI configuration access (mechanism #1, ports 0xCF8/0xCFC), bus
//! enumeration with BAR sizing, and the small MMIO/DMA helpers the PCI
//! drivers share.
//!
//! Enumeration starts at bus 0 and follows every PCI-PCI bridge's secondary
//! bus (as numbered by firmware), plus the extra root buses announced by a
//! multi-function host bridge at 00:00 (function N is the host bridge of bus
//! N). It does not scan all 256 buses: each probe is a port access, which is
//! an exit under virtualization.
//!
//! BAR sizing turns the function's memory and I/O decoding off for a moment
//! (host bridges excepted), with interrupts off: call [`scan`] once at boot,
//! before drivers start, and keep its result (for `lspci` too).

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use hypervisor::pci::{self as decode, cmd, reg, Bar, ConfigSpace, Identity, PteCache, CONFIG_SIZE};

use crate::arch::cpu::{inb, inl, inw, outl, outw};
use crate::arch::sync::IrqMutex;
use crate::mm;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// Serializes the two-step address/data access (and BAR sizing windows).
static CONFIG: IrqMutex<()> = IrqMutex::new(());

/// A register window mapped from a BAR, for `lspci -v`.
#[derive(Debug, Clone, Copy)]
struct Mapped {
    loc: (u8, u8, u8),
    bar: usize,
    va: u64,
    len: u64,
}

/// Every window `map_bar_range` mapped (never unmapped).
static MAPPED: IrqMutex<Vec<Mapped>> = IrqMutex::new(Vec::new());

/// Largest BAR `map_bar` maps whole (bigger ones: map a range).
#[allow(dead_code, reason = "used by `map_bar` only")]
const MAP_BAR_MAX: u64 = 64 << 20;

fn address(bus: u8, dev: u8, func: u8, off: u8) -> u32 {
    0x8000_0000
        | (u32::from(bus) << 16)
        | (u32::from(dev & 0x1F) << 11)
        | (u32::from(func & 0x7) << 8)
        | u32::from(off & 0xFC)
}

/// Reads the configuration dword at `off` (rounded down to 4).
pub fn read32(bus: u8, dev: u8, func: u8, off: u8) -> u32 {
    let _g = CONFIG.lock();
    outl(CONFIG_ADDRESS, address(bus, dev, func, off));
    inl(CONFIG_DATA)
}

/// Writes the configuration dword at `off` (rounded down to 4).
pub fn write32(bus: u8, dev: u8, func: u8, off: u8, v: u32) {
    let _g = CONFIG.lock();
    outl(CONFIG_ADDRESS, address(bus, dev, func, off));
    outl(CONFIG_DATA, v);
}

/// Reads the configuration word at `off` (rounded down to 2).
pub fn read16(bus: u8, dev: u8, func: u8, off: u8) -> u16 {
    let _g = CONFIG.lock();
    outl(CONFIG_ADDRESS, address(bus, dev, func, off));
    inw(CONFIG_DATA + u16::from(off & 2))
}

/// Writes the configuration word at `off` (rounded down to 2) with a 16-bit
/// access, so neighbouring registers (the status register's write-1-to-clear
/// bits next to the command register) are untouched.
pub fn write16(bus: u8, dev: u8, func: u8, off: u8, v: u16) {
    let _g = CONFIG.lock();
    outl(CONFIG_ADDRESS, address(bus, dev, func, off));
    outw(CONFIG_DATA + u16::from(off & 2), v);
}

/// Reads the configuration byte at `off`.
pub fn read8(bus: u8, dev: u8, func: u8, off: u8) -> u8 {
    let _g = CONFIG.lock();
    outl(CONFIG_ADDRESS, address(bus, dev, func, off));
    inb(CONFIG_DATA + u16::from(off & 3))
}

/// One PCI function.
#[derive(Debug, Clone)]
pub struct PciDevice {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    /// Header type including the multi-function bit (0x80).
    pub header_type: u8,
    /// Interrupt line as assigned by firmware (0xFF: none).
    pub irq_line: u8,
    /// Interrupt pin: 0 none, 1..=4 INTA#..INTD#.
    pub irq_pin: u8,
    pub bars: [Bar; 6],
    /// (subsystem vendor, subsystem ID); zero for bridges.
    pub subsystem: (u16, u16),
}

impl PciDevice {
    /// Reads this function's configuration dword at `off`.
    pub fn read32(&self, off: u8) -> u32 {
        read32(self.bus, self.dev, self.func, off)
    }

    /// Reads this function's configuration word at `off`.
    pub fn read16(&self, off: u8) -> u16 {
        read16(self.bus, self.dev, self.func, off)
    }

    /// Writes this function's configuration word at `off`.
    pub fn write16(&self, off: u8, v: u16) {
        write16(self.bus, self.dev, self.func, off, v)
    }

    /// Turns on memory decoding, I/O decoding and bus mastering as asked
    /// (never turns any off), and clears INTx-disable so the legacy interrupt
    /// works.
    pub fn enable(&self, mem: bool, io: bool, bus_master: bool) {
        let old = self.read16(reg::COMMAND);
        let mut v = old & !cmd::INTX_DISABLE;
        if mem {
            v |= cmd::MEMORY;
        }
        if io {
            v |= cmd::IO;
        }
        if bus_master {
            v |= cmd::BUS_MASTER;
        }
        if v != old {
            self.write16(reg::COMMAND, v);
        }
    }

    /// Turns off bus mastering (stops the device's DMA).
    pub fn disable_bus_master(&self) {
        let v = self.read16(reg::COMMAND);
        self.write16(reg::COMMAND, v & !cmd::BUS_MASTER);
    }

    /// Maps memory BAR `i` whole, uncached; returns its virtual address.
    /// None for I/O or unassigned BARs and for BARs over 64 MiB (map a range
    /// of those with [`PciDevice::map_bar_range`]).
    #[allow(dead_code, reason = "PCI API for callers outside the NIC drivers, which use `map_bar_range`")]
    pub fn map_bar(&self, i: usize) -> Option<u64> {
        let bar = self.bars.get(i)?;
        let size = bar.size();
        if size > MAP_BAR_MAX {
            log::warn!("pci {}: BAR{i} is {size:#x} bytes; not mapped whole", self.location());
            return None;
        }
        self.map_bar_range(i, 0, size).map(|r| r.va)
    }

    /// Maps `len` bytes at `offset` of memory BAR `i`, uncached, as a
    /// bounds-checked register window.
    pub fn map_bar_range(&self, i: usize, offset: u64, len: u64) -> Option<Mmio> {
        let bar = self.bars.get(i)?;
        let base = bar.mem_addr()?;
        if len == 0 || !bar.contains(offset, len) {
            return None;
        }
        let va = mm::map_mmio(base + offset, len)?;
        MAPPED.lock().push(Mapped { loc: (self.bus, self.dev, self.func), bar: i, va, len });
        Some(Mmio { va, len })
    }

    /// `lspci -v` lines for this function's BARs: each memory BAR with the
    /// cache bits of every page mapped from it, read back from the kernel's
    /// page tables (not assumed from the flags asked for).
    pub fn bar_lines(&self) -> Vec<String> {
        let windows: Vec<Mapped> =
            MAPPED.lock().iter().filter(|m| m.loc == (self.bus, self.dev, self.func)).copied().collect();
        let mut out = Vec::new();
        for (i, bar) in self.bars.iter().enumerate() {
            let mut pages = Vec::new();
            for w in windows.iter().filter(|w| w.bar == i) {
                let first = w.va & !(hypervisor::frames::PAGE_SIZE - 1);
                let mut va = first;
                while va < w.va + w.len {
                    if let Some((_, flags)) = mm::translate(va) {
                        let (pcd, pwt) = crate::arch::paging::cache_bits(flags);
                        pages.push(PteCache { pcd, pwt });
                    }
                    va += hypervisor::frames::PAGE_SIZE;
                }
            }
            out.extend(decode::bar_line(i, bar, &pages));
        }
        out
    }

    /// The whole 256-byte configuration space.
    pub fn config_space(&self) -> ConfigSpace {
        let mut c = [0u8; CONFIG_SIZE];
        for (i, chunk) in c.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&self.read32((i * 4) as u8).to_le_bytes());
        }
        c
    }

    /// Capability list: (ID, offset) pairs.
    #[allow(dead_code, reason = "PCI API; the NIC drivers parse `config_space` directly")]
    pub fn capabilities(&self) -> Vec<(u8, u8)> {
        decode::capabilities(&self.config_space())
    }

    /// `bb:dd.f`.
    pub fn location(&self) -> String {
        decode::location(self.bus, self.dev, self.func)
    }

    /// Vendor, device and class, for naming.
    pub fn identity(&self) -> Identity {
        Identity {
            vendor: self.vendor,
            device: self.device,
            class: self.class,
            subclass: self.subclass,
            prog_if: self.prog_if,
            subsystem: self.subsystem,
        }
    }

    /// The firmware-assigned legacy interrupt line, if the function has an
    /// interrupt pin and a line was assigned.
    pub fn legacy_irq(&self) -> Option<u8> {
        (self.irq_pin != 0 && self.irq_line != 0 && self.irq_line != 0xFF).then_some(self.irq_line)
    }
}

/// Every function on every bus reachable from bus 0, sorted by location.
pub fn scan() -> Vec<PciDevice> {
    let mut out = Vec::new();
    let mut visited = [false; 256];
    let mut pending: Vec<u8> = Vec::from([0]);
    // Extra root buses: functions of a multi-function host bridge at 00:00.
    if read16(0, 0, 0, reg::VENDOR_ID) != 0xFFFF && read8(0, 0, 0, reg::HEADER_TYPE) & decode::HEADER_MULTIFUNCTION != 0
    {
        for f in 1..8u8 {
            if read16(0, 0, f, reg::VENDOR_ID) != 0xFFFF && read16(0, 0, f, reg::SUBCLASS) == 0x0600 {
                pending.push(f);
            }
        }
    }
    while let Some(bus) = pending.pop() {
        if core::mem::replace(&mut visited[usize::from(bus)], true) {
            continue;
        }
        scan_bus(bus, &mut out, &mut pending);
    }
    out.sort_by_key(|d| (d.bus, d.dev, d.func));
    out
}

fn scan_bus(bus: u8, out: &mut Vec<PciDevice>, pending: &mut Vec<u8>) {
    for dev in 0..32u8 {
        if read16(bus, dev, 0, reg::VENDOR_ID) == 0xFFFF {
            continue;
        }
        let functions = if read8(bus, dev, 0, reg::HEADER_TYPE) & decode::HEADER_MULTIFUNCTION != 0 { 8 } else { 1 };
        for func in 0..functions {
            if func > 0 && read16(bus, dev, func, reg::VENDOR_ID) == 0xFFFF {
                continue;
            }
            let d = read_function(bus, dev, func);
            if d.header_type & !decode::HEADER_MULTIFUNCTION == decode::HEADER_BRIDGE {
                let secondary = read8(bus, dev, func, reg::SECONDARY_BUS);
                if secondary != 0 {
                    pending.push(secondary);
                }
            }
            out.push(d);
        }
    }
}

fn read_function(bus: u8, dev: u8, func: u8) -> PciDevice {
    let id = read32(bus, dev, func, reg::VENDOR_ID);
    let class = read32(bus, dev, func, reg::REVISION);
    let header_type = read8(bus, dev, func, reg::HEADER_TYPE);
    let irq = read16(bus, dev, func, reg::IRQ_LINE);
    let subsystem = if header_type & !decode::HEADER_MULTIFUNCTION == decode::HEADER_GENERAL {
        let s = read32(bus, dev, func, reg::SUBSYSTEM_VENDOR);
        (s as u16, (s >> 16) as u16)
    } else {
        (0, 0)
    };
    let (class_code, subclass) = ((class >> 24) as u8, (class >> 16) as u8);
    let host_bridge = class_code == 0x06 && subclass == 0x00;
    PciDevice {
        bus,
        dev,
        func,
        vendor: id as u16,
        device: (id >> 16) as u16,
        class: class_code,
        subclass,
        prog_if: (class >> 8) as u8,
        revision: class as u8,
        header_type,
        irq_line: irq as u8,
        irq_pin: (irq >> 8) as u8,
        bars: size_bars(bus, dev, func, decode::bar_count(header_type), host_bridge),
        subsystem,
    }
}

/// Sizes the BARs by writing all-ones and reading back, restoring each.
/// Decoding is off meanwhile (except for host bridges, which may be decoding
/// memory the CPU needs) and interrupts are off throughout.
fn size_bars(bus: u8, dev: u8, func: u8, count: usize, host_bridge: bool) -> [Bar; 6] {
    let mut bars = [Bar::None; 6];
    if count == 0 {
        return bars;
    }
    let _irqs_off = SIZING.lock();
    let command = read16(bus, dev, func, reg::COMMAND);
    if !host_bridge && command & (cmd::MEMORY | cmd::IO) != 0 {
        write16(bus, dev, func, reg::COMMAND, command & !(cmd::MEMORY | cmd::IO));
    }
    let probe = |off: u8| {
        let orig = read32(bus, dev, func, off);
        write32(bus, dev, func, off, 0xFFFF_FFFF);
        let v = read32(bus, dev, func, off);
        write32(bus, dev, func, off, orig);
        (orig, v)
    };
    let mut i = 0;
    while i < count.min(6) {
        let off = reg::BAR0 + 4 * i as u8;
        let (orig, mask) = probe(off);
        if decode::bar_type(orig) == decode::BarType::Mem64 && i + 1 < count {
            let (orig_hi, mask_hi) = probe(off + 4);
            bars[i] = decode::decode_bar(orig, mask, orig_hi, mask_hi);
            i += 2;
        } else {
            bars[i] = decode::decode_bar(orig, mask, 0, 0);
            i += 1;
        }
    }
    if !host_bridge && command & (cmd::MEMORY | cmd::IO) != 0 {
        write16(bus, dev, func, reg::COMMAND, command);
    }
    bars
}

/// Keeps interrupts off across a BAR-sizing window (no handler may touch a
/// device whose decoding is off). Separate from `CONFIG`, which the
/// individual accesses inside the window take.
static SIZING: IrqMutex<()> = IrqMutex::new(());

/// `lspci` lines, one per function; with `verbose`, each followed by its
/// BAR lines (indented).
pub fn lspci_lines(devs: &[PciDevice], verbose: bool) -> Vec<String> {
    let mut out = Vec::new();
    for d in devs {
        out.push(decode::lspci_line(&d.location(), &d.identity(), d.legacy_irq()));
        if verbose {
            out.extend(d.bar_lines().into_iter().map(|l| alloc::format!("        {l}")));
        }
    }
    out
}

// ------------------------------------------------------------- MMIO --

/// A mapped, uncached register window. Accesses outside it or misaligned
/// read as all-ones and are dropped on write.
#[derive(Debug)]
pub struct Mmio {
    va: u64,
    len: u64,
}

impl Mmio {
    /// Length of the window in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    fn ok(&self, off: u64, size: u64) -> bool {
        off.is_multiple_of(size) && off.checked_add(size).is_some_and(|end| end <= self.len)
    }

    pub fn read8(&self, off: u64) -> u8 {
        if !self.ok(off, 1) {
            return 0xFF;
        }
        // SAFETY: `va..va+len` is an uncached device mapping made by
        // `map_bar_range` for this window and never unmapped; `off` is
        // inside it.
        unsafe { ((self.va + off) as *const u8).read_volatile() }
    }

    pub fn read16(&self, off: u64) -> u16 {
        if !self.ok(off, 2) {
            return 0xFFFF;
        }
        // SAFETY: as in `read8`; the access is aligned and inside the window.
        unsafe { ((self.va + off) as *const u16).read_volatile() }
    }

    pub fn read32(&self, off: u64) -> u32 {
        if !self.ok(off, 4) {
            return 0xFFFF_FFFF;
        }
        // SAFETY: as in `read8`; the access is aligned and inside the window.
        unsafe { ((self.va + off) as *const u32).read_volatile() }
    }

    pub fn write8(&self, off: u64, v: u8) {
        if self.ok(off, 1) {
            // SAFETY: as in `read8`.
            unsafe { ((self.va + off) as *mut u8).write_volatile(v) }
        }
    }

    pub fn write16(&self, off: u64, v: u16) {
        if self.ok(off, 2) {
            // SAFETY: as in `read16`.
            unsafe { ((self.va + off) as *mut u16).write_volatile(v) }
        }
    }

    pub fn write32(&self, off: u64, v: u32) {
        if self.ok(off, 4) {
            // SAFETY: as in `read32`.
            unsafe { ((self.va + off) as *mut u32).write_volatile(v) }
        }
    }
}

// -------------------------------------------------------------- DMA --

/// Physically contiguous memory from `mm::alloc_dma`, accessed only through
/// bounds-checked volatile accessors (the device writes it concurrently).
/// Freed on drop: the owner must stop the device's DMA into it first.
#[derive(Debug)]
pub struct Dma {
    pa: u64,
    va: u64,
    len: usize,
}

impl Dma {
    /// `len` zeroed bytes (whole pages).
    pub fn new(len: usize) -> Option<Dma> {
        let (pa, va) = mm::alloc_dma(len as u64)?;
        Some(Dma { pa, va, len })
    }

    /// Physical (bus) address of byte `off`.
    pub fn pa(&self, off: usize) -> u64 {
        self.pa + off as u64
    }

    fn ok(&self, off: usize, size: usize) -> bool {
        off.is_multiple_of(size) && off.checked_add(size).is_some_and(|end| end <= self.len)
    }

    pub fn read8(&self, off: usize) -> u8 {
        if !self.ok(off, 1) {
            return 0;
        }
        // SAFETY: `va..va+len` is direct-mapped RAM owned by this region
        // (from `alloc_dma`, freed only on drop); `off` is inside it.
        unsafe { ((self.va + off as u64) as *const u8).read_volatile() }
    }

    pub fn read16(&self, off: usize) -> u16 {
        if !self.ok(off, 2) {
            return 0;
        }
        // SAFETY: as in `read8`; aligned and inside the region.
        unsafe { ((self.va + off as u64) as *const u16).read_volatile() }
    }

    pub fn read32(&self, off: usize) -> u32 {
        if !self.ok(off, 4) {
            return 0;
        }
        // SAFETY: as in `read8`; aligned and inside the region.
        unsafe { ((self.va + off as u64) as *const u32).read_volatile() }
    }

    pub fn write16(&self, off: usize, v: u16) {
        if self.ok(off, 2) {
            // SAFETY: as in `read16`.
            unsafe { ((self.va + off as u64) as *mut u16).write_volatile(v) }
        }
    }

    pub fn write32(&self, off: usize, v: u32) {
        if self.ok(off, 4) {
            // SAFETY: as in `read32`.
            unsafe { ((self.va + off as u64) as *mut u32).write_volatile(v) }
        }
    }

    pub fn write64(&self, off: usize, v: u64) {
        if self.ok(off, 8) {
            // SAFETY: as in `read8`; 8-byte aligned and inside the region.
            unsafe { ((self.va + off as u64) as *mut u64).write_volatile(v) }
        }
    }

    /// Copies `src` into the region at `off`; false (nothing copied) if it
    /// does not fit.
    pub fn copy_in(&self, off: usize, src: &[u8]) -> bool {
        if off.checked_add(src.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // SAFETY: the destination range is inside the region (checked
        // above) and cannot overlap `src`, which is ordinary kernel memory.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), (self.va + off as u64) as *mut u8, src.len()) };
        true
    }

    /// Copies `dst.len()` bytes at `off` out of the region; false (nothing
    /// copied) if the range is not inside it.
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) -> bool {
        if off.checked_add(dst.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // The device must be done with these bytes before they are read.
        fence(Ordering::Acquire);
        // SAFETY: the source range is inside the region (checked above) and
        // cannot overlap `dst`, which is ordinary kernel memory.
        unsafe { core::ptr::copy_nonoverlapping((self.va + off as u64) as *const u8, dst.as_mut_ptr(), dst.len()) };
        true
    }
}

impl Drop for Dma {
    fn drop(&mut self) {
        mm::free_dma(self.pa, self.len as u64);
    }
}

// ------------------------------------------------------------- time --

/// Polls `cond` until it holds or `timeout_us` microseconds pass; true if it
/// held. Bounded by an iteration cap too, in case the clock does not run.
pub fn wait_until(timeout_us: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = crate::time::now_ns().saturating_add(timeout_us.saturating_mul(1000));
    let max_iterations = timeout_us.saturating_mul(100).max(1000);
    for _ in 0..max_iterations {
        if cond() {
            return true;
        }
        if crate::time::now_ns() >= deadline {
            return cond();
        }
        core::hint::spin_loop();
    }
    cond()
}

/// Busy-waits about `us` microseconds.
pub fn delay_us(us: u64) {
    wait_until(us, || false);
}
