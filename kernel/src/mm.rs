//! Memory management glue: the hypervisor's page tables, the physical frame
//! allocator, the kernel heap (growing on demand) and guarded stacks.

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hypervisor::bootinfo::{BootInfo, PhysMem};
use hypervisor::frames::{self, BumpFrames, FrameAllocator, Range, RegionKind, PAGE_SIZE};
use linked_list_allocator::Heap;

use crate::arch::cpu;
use crate::arch::paging::{
    self, Mapper, DIRECT_MAP_BASE, HEAP_BASE, HEAP_LIMIT, KERNEL_VMA, MMIO_BASE, MMIO_LIMIT, STACK_BASE, STACK_LIMIT,
};
use crate::arch::sync::IrqMutex;

extern "C" {
    static __image_phys_start: u8;
    static __image_phys_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __bss_end: u8;
    static boot_stack_guard: u8;
}

fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// Physical range of the loaded image (multiboot headers to end of .bss).
pub fn image_range() -> Range {
    // SAFETY: linker-defined symbols; only their addresses are used.
    unsafe { Range { start: sym(&__image_phys_start), end: sym(&__image_phys_end) } }
}

// ---------------------------------------------------------------- heap --

const EARLY_HEAP_SIZE: usize = 512 * 1024;
const HEAP_INITIAL: u64 = 1 << 20;
const HEAP_GROW_MIN: u64 = 1 << 20;

#[repr(align(4096))]
#[allow(dead_code)] // only its address is used
struct EarlyArena([u8; EARLY_HEAP_SIZE]);
static mut EARLY_ARENA: EarlyArena = EarlyArena([0; EARLY_HEAP_SIZE]);

struct KernelHeap {
    early: IrqMutex<Heap>,
    main: IrqMutex<Heap>,
    main_ready: AtomicBool,
    early_init: AtomicBool,
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap {
    early: IrqMutex::new(Heap::empty()),
    main: IrqMutex::new(Heap::empty()),
    main_ready: AtomicBool::new(false),
    early_init: AtomicBool::new(false),
};

/// Bytes the heap region has mapped (grows by whole pages).
static HEAP_MAPPED: AtomicU64 = AtomicU64::new(0);

fn early_range() -> (u64, u64) {
    let start = core::ptr::addr_of!(EARLY_ARENA) as u64;
    (start, start + EARLY_HEAP_SIZE as u64)
}

/// Makes the static early heap usable (before any page table work).
pub fn init_early_heap() {
    if HEAP.early_init.swap(true, Ordering::SeqCst) {
        return;
    }
    let (start, _) = early_range();
    // SAFETY: EARLY_ARENA is a static buffer used only by this heap, handed
    // over exactly once (guarded by `early_init`).
    unsafe { HEAP.early.lock().init(start as *mut u8, EARLY_HEAP_SIZE) };
}

// SAFETY: both arenas are linked_list_allocator heaps over memory owned by
// this allocator; `dealloc` returns each block to the arena it came from.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.main_ready.load(Ordering::Acquire) {
            let mut h = self.main.lock();
            if let Ok(p) = h.allocate_first_fit(layout) {
                return p.as_ptr();
            }
            let want = (layout.size() as u64 + layout.align() as u64 + 4096).max(HEAP_GROW_MIN);
            if grow_heap(&mut h, want) {
                if let Ok(p) = h.allocate_first_fit(layout) {
                    return p.as_ptr();
                }
            }
        }
        match self.early.lock().allocate_first_fit(layout) {
            Ok(p) => p.as_ptr(),
            Err(()) => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let (es, ee) = early_range();
        let a = ptr as u64;
        let Some(nn) = NonNull::new(ptr) else { return };
        // SAFETY: `ptr` came from `alloc` with this layout (GlobalAlloc
        // contract) and the address range tells which arena owns it.
        unsafe {
            if a >= es && a < ee {
                self.early.lock().deallocate(nn, layout);
            } else {
                self.main.lock().deallocate(nn, layout);
            }
        }
    }
}

/// Maps more pages at the top of the heap region and hands them to `h`.
fn grow_heap(h: &mut Heap, bytes: u64) -> bool {
    let bytes = bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let top = HEAP_BASE + HEAP_MAPPED.load(Ordering::Relaxed);
    if top + bytes > HEAP_LIMIT {
        return false;
    }
    let mut done = 0;
    while done < bytes {
        if map_fresh_page(top + done, paging::data_flags()).is_err() {
            break;
        }
        done += PAGE_SIZE;
    }
    if done == 0 {
        return false;
    }
    HEAP_MAPPED.fetch_add(done, Ordering::Relaxed);
    // SAFETY: [top, top+done) was just mapped for the heap's exclusive use and
    // is contiguous with the heap's current end.
    unsafe { h.extend(done as usize) };
    done == bytes
}

/// Heap statistics: (used bytes, size bytes) across both arenas.
pub fn heap_stats() -> (u64, u64) {
    let e = HEAP.early.lock();
    let m = HEAP.main.lock();
    ((e.used() + m.used()) as u64, (e.size() + m.size()) as u64)
}

// -------------------------------------------------------------- frames --

static FRAMES: IrqMutex<Option<FrameAllocator<'static>>> = IrqMutex::new(None);
static KERNEL_PT: IrqMutex<Option<Mapper>> = IrqMutex::new(None);
/// Ranges of physical memory reachable through the direct map.
static DIRECT: IrqMutex<Vec<Range>> = IrqMutex::new(Vec::new());
/// Ranges never handed out: image, modules, boot info.
static RESERVED: IrqMutex<Vec<Range>> = IrqMutex::new(Vec::new());
static TOTAL_RAM: AtomicU64 = AtomicU64::new(0);

/// Allocates one zeroed physical frame.
pub fn alloc_frame() -> Option<u64> {
    let pa = FRAMES.lock().as_mut()?.alloc()?;
    zero_frame(pa);
    Some(pa)
}

/// Returns a frame to the pool.
pub fn free_frame(pa: u64) -> Result<(), frames::FrameError> {
    match FRAMES.lock().as_mut() {
        Some(f) => f.free(pa),
        None => Ok(()),
    }
}

/// (total usable RAM, free bytes, managed bytes).
pub fn frame_stats() -> (u64, u64, u64) {
    let f = FRAMES.lock();
    let (free, managed) = f.as_ref().map_or((0, 0), |f| (f.free_frames() * PAGE_SIZE, f.total_frames() * PAGE_SIZE));
    (TOTAL_RAM.load(Ordering::Relaxed), free, managed)
}

/// Physical ranges kept out of the allocator.
pub fn reserved_ranges() -> Vec<Range> {
    RESERVED.lock().clone()
}

fn zero_frame(pa: u64) {
    // SAFETY: `pa` is a whole frame owned by the caller, reachable through the
    // direct map (every managed frame is in it).
    unsafe { core::ptr::write_bytes(paging::phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
}

/// Maps a fresh zeroed frame at `va` in the kernel address space.
pub fn map_fresh_page(va: u64, flags: u64) -> Result<u64, paging::MapError> {
    let pa = alloc_frame().ok_or(paging::MapError::OutOfFrames)?;
    let mut pt = KERNEL_PT.lock();
    let Some(m) = pt.as_mut() else { return Err(paging::MapError::OutOfFrames) };
    if let Err(e) = m.map(va, pa, flags, &mut || alloc_frame()) {
        drop(pt);
        let _ = free_frame(pa);
        return Err(e);
    }
    Ok(pa)
}

/// Unmaps `va` and frees the frame behind it.
pub fn unmap_and_free(va: u64) -> bool {
    let pa = KERNEL_PT.lock().as_mut().and_then(|m| m.unmap(va));
    match pa {
        Some(pa) => free_frame(pa).is_ok(),
        None => false,
    }
}

/// Physical address and flags behind a kernel virtual address.
pub fn translate(va: u64) -> Option<(u64, u64)> {
    KERNEL_PT.lock().as_ref()?.translate(va)
}

/// The hypervisor's own page tables: their root, and how many lower-half
/// PML4 slots they use (none once the boot identity map is gone).
pub fn kernel_root_and_lower_slots() -> Option<(u64, usize)> {
    KERNEL_PT.lock().as_ref().map(|m| (m.root(), m.lower_half_slots()))
}

// ---------------------------------------------------- stacks and MMIO --

static NEXT_STACK: AtomicU64 = AtomicU64::new(STACK_BASE);
static NEXT_MMIO: AtomicU64 = AtomicU64::new(MMIO_BASE);

/// Freed stack slots (guard VA, pages), reused before new address space is
/// taken, so create/destroy cycles do not grow the kernel page tables.
static FREE_STACKS: IrqMutex<Vec<(u64, u64)>> = IrqMutex::new(Vec::new());

/// Maps a kernel stack of `pages` pages with an unmapped guard page below it;
/// returns the stack top (16-byte aligned).
pub fn alloc_stack(pages: u64) -> Option<u64> {
    let reused = {
        let mut free = FREE_STACKS.lock();
        free.iter().position(|&(_, p)| p == pages).map(|i| free.swap_remove(i).0)
    };
    let base = match reused {
        Some(b) => b,
        None => {
            let slot = (pages + 1) * PAGE_SIZE;
            let base = NEXT_STACK.fetch_add(slot, Ordering::Relaxed);
            if base + slot > STACK_LIMIT {
                return None;
            }
            base
        }
    };
    let bottom = base + PAGE_SIZE; // base itself is the guard page
    for i in 0..pages {
        if map_fresh_page(bottom + i * PAGE_SIZE, paging::data_flags()).is_err() {
            for j in 0..i {
                unmap_and_free(bottom + j * PAGE_SIZE);
            }
            FREE_STACKS.lock().push((base, pages));
            return None;
        }
    }
    Some(bottom + pages * PAGE_SIZE)
}

/// Unmaps a stack from `alloc_stack`, frees its frames and keeps its slot.
pub fn free_stack(top: u64, pages: u64) {
    let bottom = top - pages * PAGE_SIZE;
    for i in 0..pages {
        unmap_and_free(bottom + i * PAGE_SIZE);
    }
    FREE_STACKS.lock().push((bottom - PAGE_SIZE, pages));
}

/// Is `va` inside the stack region but unmapped (a guard page)?
pub fn is_stack_guard(va: u64) -> bool {
    // SAFETY: linker symbol; only its address is used.
    let boot_guard = unsafe { sym(&boot_stack_guard) };
    if (boot_guard..boot_guard + PAGE_SIZE).contains(&va) {
        return true;
    }
    if !(STACK_BASE..NEXT_STACK.load(Ordering::Relaxed)).contains(&va) {
        return false;
    }
    // Never block on the page-table lock from a fault handler.
    match KERNEL_PT.try_lock() {
        Some(pt) => pt.as_ref().is_some_and(|m| m.translate(va).is_none()),
        None => true,
    }
}

/// Maps `len` bytes of device registers at physical `pa`, uncached.
pub fn map_mmio(pa: u64, len: u64) -> Option<u64> {
    let offset = pa & (PAGE_SIZE - 1);
    let pages = (offset + len).div_ceil(PAGE_SIZE);
    let va = NEXT_MMIO.fetch_add(pages * PAGE_SIZE, Ordering::Relaxed);
    if va + pages * PAGE_SIZE > MMIO_LIMIT {
        return None;
    }
    let mut pt = KERNEL_PT.lock();
    let m = pt.as_mut()?;
    for i in 0..pages {
        m.map(va + i * PAGE_SIZE, (pa - offset) + i * PAGE_SIZE, paging::mmio_flags(), &mut || alloc_frame()).ok()?;
    }
    Some(va + offset)
}

// ------------------------------------------------------ physical reads --

/// Physical memory through the boot identity map (first 4 GiB), for parsing
/// boot information before the kernel's own tables exist.
pub struct IdentityPhys;

impl PhysMem for IdentityPhys {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = paddr.checked_add(buf.len() as u64) else { return false };
        if end > (4 << 30) || paddr == 0 && buf.is_empty() {
            return false;
        }
        // SAFETY: the boot tables identity-map 0..4 GiB and the range is
        // inside it; firmware/loader memory is plain RAM to read.
        unsafe { core::ptr::copy_nonoverlapping(paddr as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }
}

/// Physical memory through the direct map; refuses anything outside it.
pub struct DirectPhys;

impl PhysMem for DirectPhys {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = paddr.checked_add(buf.len() as u64) else { return false };
        let ok = DIRECT.lock().iter().any(|r| r.start <= paddr && end <= r.end);
        if !ok {
            return false;
        }
        // SAFETY: [paddr, end) lies in a direct-mapped range (checked above).
        unsafe {
            core::ptr::copy_nonoverlapping(paging::phys_to_virt(paddr) as *const u8, buf.as_mut_ptr(), buf.len())
        };
        true
    }
}

// ------------------------------------------------------------- set-up --

/// Builds the hypervisor's page tables from the boot information and
/// switches to them; then brings up the frame allocator and the main heap.
/// Runs on the boot stack with the boot identity map still live.
pub fn init(info: &BootInfo) -> Result<(), &'static str> {
    let nx = cpu::cpuid(0x8000_0001, 0).edx & (1 << 20) != 0;
    paging::set_nx_supported(nx);

    let mut reserved = alloc::vec![image_range()];
    reserved.extend(info.modules.iter().map(|m| Range { start: m.start, end: m.end.max(m.start + 1) }));
    reserved.extend(info.reserved.iter().copied());
    let free = frames::free_ranges(&info.memory, &reserved);
    if free.is_empty() {
        return Err("no usable memory in the memory map");
    }
    TOTAL_RAM
        .store(info.memory.iter().filter(|r| r.kind == RegionKind::Usable).map(|r| r.len).sum(), Ordering::Relaxed);

    // Page-table pages for the new tables come from low free memory, written
    // through the boot identity map.
    let mut bump = BumpFrames::new(free, 4 << 30);
    let pml4 = bump.alloc().ok_or("out of memory for page tables")?;
    // SAFETY: pml4 is a free frame below 4 GiB, identity-mapped right now.
    unsafe { core::ptr::write_bytes(pml4 as *mut u8, 0, PAGE_SIZE as usize) };
    // SAFETY: the tree is built from fresh frames below 4 GiB, all reachable
    // at offset 0 through the boot identity map.
    let mut m = unsafe { Mapper::new(pml4, 0) };
    let mut take = || -> Option<u64> {
        let pa = bump.alloc()?;
        Some(pa)
    };

    // Shared upper-half slots get their PDPT now, so their PML4 entries never
    // change (guest address spaces can copy them).
    let chunks = direct_chunks(info);
    let direct_end = chunks.last().map_or(4 << 30, |r| r.end);
    let direct_slots = direct_end.div_ceil(512 << 30).max(1) as usize;
    for slot in (256..256 + direct_slots).chain([384, 416, 448, 511]) {
        m.ensure_pdpt(slot, &mut take).map_err(|_| "out of memory for page tables")?;
    }

    // Kernel image, per section.
    // SAFETY: linker symbols; only addresses are used.
    let (text, text_end, ro, ro_end, data, bss_end) = unsafe {
        (
            sym(&__text_start),
            sym(&__text_end),
            sym(&__rodata_start),
            sym(&__rodata_end),
            sym(&__data_start),
            sym(&__bss_end),
        )
    };
    // SAFETY: linker symbol; only its address is used.
    let guard = unsafe { sym(&boot_stack_guard) };
    let g = paging::GLOBAL;
    let sections = [(text, text_end, g), (ro, ro_end, g | paging::nx()), (data, bss_end, paging::data_flags())];
    for (start, end, flags) in sections {
        let mut va = start;
        while va < end {
            if va != guard {
                m.map(va, va - KERNEL_VMA, flags, &mut take).map_err(|_| "cannot map the image")?;
            }
            va += PAGE_SIZE;
        }
    }

    // Direct map with 2 MiB pages.
    for r in &chunks {
        let mut pa = r.start;
        while pa < r.end {
            m.map_2m(DIRECT_MAP_BASE + pa, pa, paging::data_flags(), &mut take)
                .map_err(|_| "cannot build the direct map")?;
            pa += 2 << 20;
        }
    }
    let mut remaining = bump.into_remaining();

    // SAFETY: the new tables map the running image (text/rodata/data/bss,
    // including the boot stack in .bss) at the same virtual addresses and the
    // GDT/IDT live in .bss; nothing uses the identity map after this point
    // except through the direct map.
    unsafe {
        cpu::write_cr3(m.root());
        m.set_phys_offset(DIRECT_MAP_BASE);
        // CR4.PGE: global pages for the kernel half.
        cpu::write_cr4(cpu::read_cr4() | (1 << 7));
    }
    *DIRECT.lock() = chunks;
    *KERNEL_PT.lock() = Some(m);
    *RESERVED.lock() = reserved;

    // Frame allocator: its bitmap lives in a carved-out free range.
    let words = frames::bitmap_words(&remaining);
    let at = frames::carve(&mut remaining, (words * 8) as u64, u64::MAX).ok_or("no room for the frame bitmap")?;
    // SAFETY: [at, at + words*8) was removed from the free list, so nothing
    // else will use it; it is RAM inside the direct map.
    let storage = unsafe { core::slice::from_raw_parts_mut(paging::phys_to_virt(at) as *mut u64, words) };
    let fa = FrameAllocator::new(&remaining, storage).ok_or("frame bitmap too small")?;
    *FRAMES.lock() = Some(fa);

    // Main heap.
    let mut h = HEAP.main.lock();
    let mut va = HEAP_BASE;
    while va < HEAP_BASE + HEAP_INITIAL {
        let pa = FRAMES.lock().as_mut().and_then(|f| f.alloc()).ok_or("out of memory for the heap")?;
        KERNEL_PT
            .lock()
            .as_mut()
            .ok_or("no page tables")?
            .map(va, pa, paging::data_flags(), &mut || FRAMES.lock().as_mut().and_then(|f| f.alloc()))
            .map_err(|_| "cannot map the heap")?;
        va += PAGE_SIZE;
    }
    HEAP_MAPPED.store(HEAP_INITIAL, Ordering::Relaxed);
    // SAFETY: [HEAP_BASE, +HEAP_INITIAL) is freshly mapped and owned by the heap.
    unsafe { h.init(HEAP_BASE as *mut u8, HEAP_INITIAL as usize) };
    drop(h);
    HEAP.main_ready.store(true, Ordering::Release);
    Ok(())
}

fn direct_chunks_iter(info: &BootInfo) -> impl Iterator<Item = Range> + '_ {
    const TWO_M: u64 = 2 << 20;
    // RAM, ACPI tables/NVS, and firmware-reserved areas outside the 32-bit
    // device window (which holds MMIO: APICs, flash) — plus the first 2 MiB
    // (BIOS data, EBDA, the RSDP scan area).
    info.memory
        .iter()
        .filter(|r| r.len > 0)
        .filter(|r| match r.kind {
            RegionKind::Usable | RegionKind::AcpiReclaimable | RegionKind::AcpiNvs => true,
            RegionKind::Reserved => r.start < 0xF000_0000 && r.start.saturating_add(r.len) <= 0xF000_0000,
            RegionKind::Bad => false,
        })
        .map(|r| Range { start: r.start & !(TWO_M - 1), end: r.start.saturating_add(r.len).div_ceil(TWO_M) * TWO_M })
        .chain(core::iter::once(Range { start: 0, end: TWO_M }))
        .filter(|r| r.end <= (1u64 << 46))
}

/// Sorted, merged 2 MiB-aligned ranges to direct-map.
fn direct_chunks(info: &BootInfo) -> Vec<Range> {
    let mut v: Vec<Range> = direct_chunks_iter(info).collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Whether `va` is mapped, without waiting for the page-table lock (false if
/// it is busy): for the fault path.
pub fn translate_nolock(va: u64) -> bool {
    KERNEL_PT.try_lock().is_some_and(|pt| pt.as_ref().and_then(|m| m.translate(va)).is_some())
}

/// Copies the kernel's upper-half PML4 entries (slots 256..512) into a new
/// address space's PML4 page. They never change after boot, so the copy stays
/// valid; ring 3 cannot use them (no USER bit).
pub fn copy_kernel_half(pml4: u64) {
    let root = KERNEL_PT.lock().as_ref().map_or(0, |m| m.root());
    if root == 0 {
        return;
    }
    // SAFETY: both are page-table pages reachable through the direct map;
    // `pml4` is a fresh frame owned by the caller.
    unsafe {
        let src = paging::phys_to_virt(root) as *const u64;
        let dst = paging::phys_to_virt(pml4) as *mut u64;
        for i in 256..512 {
            dst.add(i).write(src.add(i).read());
        }
    }
}

/// Bytes of a boot module through the direct map.
pub fn module_bytes(m: &hypervisor::bootinfo::Module) -> Option<&'static [u8]> {
    let len = m.end.checked_sub(m.start)?;
    let ok = DIRECT.lock().iter().any(|r| r.start <= m.start && m.end <= r.end);
    if !ok {
        return None;
    }
    // SAFETY: the module's range is reserved (never allocated or written by
    // the kernel) and direct-mapped for the whole run.
    Some(unsafe { core::slice::from_raw_parts(paging::phys_to_virt(m.start) as *const u8, len as usize) })
}

/// Allocates `bytes` (rounded up to pages) of physically contiguous, zeroed
/// memory for device DMA; returns (physical, virtual) addresses. The memory
/// is ordinary write-back RAM seen through the direct map (x86 DMA is
/// cache-coherent).
pub fn alloc_dma(bytes: u64) -> Option<(u64, u64)> {
    let frames = bytes.div_ceil(PAGE_SIZE).max(1) as usize;
    let pa = FRAMES.lock().as_mut()?.alloc_contiguous(frames, 1)?;
    let va = paging::phys_to_virt(pa);
    // SAFETY: the frames were just taken from the allocator for the caller
    // alone and lie in the direct map.
    unsafe { core::ptr::write_bytes(va as *mut u8, 0, frames * PAGE_SIZE as usize) };
    Some((pa, va))
}

/// Returns memory from `alloc_dma` (the device must no longer use it).
pub fn free_dma(pa: u64, bytes: u64) {
    let frames = bytes.div_ceil(PAGE_SIZE).max(1);
    for i in 0..frames {
        let _ = free_frame(pa + i * PAGE_SIZE);
    }
}
