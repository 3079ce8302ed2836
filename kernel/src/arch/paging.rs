//! 4-level page tables: the hypervisor's own address space.
//!
//! Upper-half layout (PML4 slots 256..512); the lower half is left for guests:
//! - `DIRECT_MAP_BASE`: all RAM (+ firmware tables), 2 MiB pages, NX
//! - `HEAP_BASE`: the kernel heap, 4 KiB pages grown on demand, NX
//! - `STACK_BASE`: kernel stacks, each with an unmapped guard page below, NX
//! - `MMIO_BASE`: device registers, uncached, NX
//! - `KERNEL_VMA`: the image, per section: text RX, rodata R/NX, data+bss RW/NX
//!
//! Page-table pages are reached through `phys_offset`: 0 while the boot
//! identity map is live, `DIRECT_MAP_BASE` afterwards.

use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu;

pub const DIRECT_MAP_BASE: u64 = 0xFFFF_8000_0000_0000;
pub const HEAP_BASE: u64 = 0xFFFF_C000_0000_0000;
pub const HEAP_LIMIT: u64 = HEAP_BASE + (64 << 30);
pub const STACK_BASE: u64 = 0xFFFF_D000_0000_0000;
pub const STACK_LIMIT: u64 = STACK_BASE + (64 << 30);
pub const MMIO_BASE: u64 = 0xFFFF_E000_0000_0000;
pub const MMIO_LIMIT: u64 = MMIO_BASE + (64 << 30);
pub const KERNEL_VMA: u64 = 0xFFFF_FFFF_8000_0000;

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const WRITE_THROUGH: u64 = 1 << 3;
pub const NO_CACHE: u64 = 1 << 4;
pub const HUGE: u64 = 1 << 7;
pub const GLOBAL: u64 = 1 << 8;
/// Set by the CPU in a leaf entry when the page is written.
pub const DIRTY: u64 = 1 << 6;
const NX_BIT: u64 = 1 << 63;
/// The physical-address bits of an entry (and of CR3).
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

static NX: AtomicU64 = AtomicU64::new(0);

/// Enables NX bits in new mappings (called once EFER.NXE is known set).
pub fn set_nx_supported(yes: bool) {
    NX.store(if yes { NX_BIT } else { 0 }, Ordering::Relaxed);
}

/// The NX flag, or 0 on a CPU without NX.
pub fn nx() -> u64 {
    NX.load(Ordering::Relaxed)
}

/// Virtual address of physical `pa` in the direct map.
#[inline]
pub fn phys_to_virt(pa: u64) -> u64 {
    DIRECT_MAP_BASE + pa
}

/// Why a mapping failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    OutOfFrames,
    AlreadyMapped,
    HugePageInTheWay,
}

/// A page-table tree rooted at `pml4` (physical).
pub struct Mapper {
    pml4: u64,
    phys_offset: u64,
}

impl Mapper {
    /// Wraps an existing, zeroed or populated PML4 page.
    ///
    /// # Safety
    /// `pml4` must be a page-table page owned by this mapper, and every table
    /// page reachable from it must be accessible at `phys_offset + pa`.
    pub unsafe fn new(pml4: u64, phys_offset: u64) -> Self {
        Mapper { pml4, phys_offset }
    }

    /// The root's physical address (for CR3).
    pub fn root(&self) -> u64 {
        self.pml4
    }

    /// Switches to reaching table pages through a new offset.
    ///
    /// # Safety
    /// All table pages must be accessible at `phys_offset + pa` from now on.
    pub unsafe fn set_phys_offset(&mut self, phys_offset: u64) {
        self.phys_offset = phys_offset;
    }

    fn entry_ptr(&self, table: u64, idx: usize) -> *mut u64 {
        (self.phys_offset + table + (idx as u64) * 8) as *mut u64
    }

    fn get(&self, table: u64, idx: usize) -> u64 {
        // SAFETY: `table` is a table page of this tree (constructor contract)
        // and idx < 512.
        unsafe { self.entry_ptr(table, idx & 511).read_volatile() }
    }

    fn set(&mut self, table: u64, idx: usize, v: u64) {
        // SAFETY: as for `get`; the mapper has exclusive access (`&mut self`).
        unsafe { self.entry_ptr(table, idx & 511).write_volatile(v) }
    }

    fn zero_page(&mut self, pa: u64) {
        for i in 0..512 {
            self.set(pa, i, 0);
        }
    }

    /// Next-level table under `table[idx]`, created if missing.
    fn next(
        &mut self,
        table: u64,
        idx: usize,
        user: bool,
        alloc: &mut dyn FnMut() -> Option<u64>,
    ) -> Result<u64, MapError> {
        let e = self.get(table, idx);
        if e & PRESENT != 0 {
            if e & HUGE != 0 {
                return Err(MapError::HugePageInTheWay);
            }
            if user && e & USER == 0 {
                self.set(table, idx, e | USER);
            }
            return Ok(e & ADDR_MASK);
        }
        let pa = alloc().ok_or(MapError::OutOfFrames)?;
        self.zero_page(pa);
        self.set(table, idx, pa | PRESENT | WRITABLE | if user { USER } else { 0 });
        Ok(pa)
    }

    /// Ensures the PDPT under PML4 slot `slot` exists (so the slot's PML4
    /// entry never changes later and can be shared by other address spaces).
    pub fn ensure_pdpt(&mut self, slot: usize, alloc: &mut dyn FnMut() -> Option<u64>) -> Result<(), MapError> {
        self.next(self.pml4, slot, false, alloc).map(|_| ())
    }

    /// Maps one 4 KiB page.
    pub fn map(
        &mut self,
        va: u64,
        pa: u64,
        flags: u64,
        alloc: &mut dyn FnMut() -> Option<u64>,
    ) -> Result<(), MapError> {
        let user = flags & USER != 0;
        let pdpt = self.next(self.pml4, idx(va, 39), user, alloc)?;
        let pd = self.next(pdpt, idx(va, 30), user, alloc)?;
        let pt = self.next(pd, idx(va, 21), user, alloc)?;
        if self.get(pt, idx(va, 12)) & PRESENT != 0 {
            return Err(MapError::AlreadyMapped);
        }
        self.set(pt, idx(va, 12), (pa & ADDR_MASK) | flags | PRESENT);
        Ok(())
    }

    /// Maps one 2 MiB page (`va`, `pa` 2 MiB aligned).
    pub fn map_2m(
        &mut self,
        va: u64,
        pa: u64,
        flags: u64,
        alloc: &mut dyn FnMut() -> Option<u64>,
    ) -> Result<(), MapError> {
        let pdpt = self.next(self.pml4, idx(va, 39), false, alloc)?;
        let pd = self.next(pdpt, idx(va, 30), false, alloc)?;
        if self.get(pd, idx(va, 21)) & PRESENT != 0 {
            return Err(MapError::AlreadyMapped);
        }
        self.set(pd, idx(va, 21), (pa & ADDR_MASK) | flags | PRESENT | HUGE);
        Ok(())
    }

    /// Removes a 4 KiB mapping; returns the physical address it pointed to.
    pub fn unmap(&mut self, va: u64) -> Option<u64> {
        let pt = self.leaf_table(va)?;
        let e = self.get(pt, idx(va, 12));
        if e & PRESENT == 0 {
            return None;
        }
        self.set(pt, idx(va, 12), 0);
        cpu::invlpg(va);
        Some(e & ADDR_MASK)
    }

    fn leaf_table(&self, va: u64) -> Option<u64> {
        let mut table = self.pml4;
        for shift in [39, 30, 21] {
            let e = self.get(table, idx(va, shift));
            if e & PRESENT == 0 || e & HUGE != 0 {
                return None;
            }
            table = e & ADDR_MASK;
        }
        Some(table)
    }

    /// Clears the dirty bit of the 4 KiB mapping of `va`; true if it was set
    /// (the page was written since the last call). Call it while this tree is
    /// not the active CR3, or flush the TLB afterwards: a cached translation
    /// would not set the bit again.
    pub fn take_dirty(&mut self, va: u64) -> bool {
        let Some(pt) = self.leaf_table(va) else { return false };
        let e = self.get(pt, idx(va, 12));
        if e & PRESENT == 0 || e & DIRTY == 0 {
            return false;
        }
        self.set(pt, idx(va, 12), e & !DIRTY);
        true
    }

    /// How many of the 256 lower-half PML4 slots (the guests' half) are
    /// present in this tree.
    pub fn lower_half_slots(&self) -> usize {
        (0..256).filter(|&i| self.get(self.pml4, i) & PRESENT != 0).count()
    }

    /// Physical address and leaf flags for `va`, if mapped.
    pub fn translate(&self, va: u64) -> Option<(u64, u64)> {
        let mut table = self.pml4;
        for shift in [39u32, 30, 21, 12] {
            let e = self.get(table, idx(va, shift));
            if e & PRESENT == 0 {
                return None;
            }
            if shift == 12 || (shift != 39 && e & HUGE != 0) {
                let size = 1u64 << shift;
                let base = e & ADDR_MASK & !(size - 1);
                return Some((base + (va & (size - 1)), e & !ADDR_MASK));
            }
            table = e & ADDR_MASK;
        }
        None
    }
}

fn idx(va: u64, shift: u32) -> usize {
    ((va >> shift) & 511) as usize
}

/// Flags for a leaf that is writable data (RW, NX, global).
pub fn data_flags() -> u64 {
    WRITABLE | GLOBAL | nx()
}

/// The cache-control bits of a leaf entry's flags (as `translate` returns
/// them): (PCD, PWT). With the default PAT, PCD+PWT is UC, PCD alone UC-.
pub fn cache_bits(flags: u64) -> (bool, bool) {
    (flags & NO_CACHE != 0, flags & WRITE_THROUGH != 0)
}

/// Flags for device registers (RW, uncached, NX).
pub fn mmio_flags() -> u64 {
    WRITABLE | NO_CACHE | WRITE_THROUGH | GLOBAL | nx()
}
