//! Physical memory planning and the physical frame allocator.
//!
//! Boot flow: the boot information's memory map and the ranges that must be
//! kept (kernel image, modules, boot info) go through [`free_ranges`]; the
//! first page tables come from a [`BumpFrames`]; storage for the bitmap is
//! [`carve`]d out of the remaining ranges ([`bitmap_words`] sizes it); then a
//! [`FrameAllocator`] manages everything that is left.

use alloc::vec::Vec;
use core::fmt;

/// Size of a physical frame (a 4 KiB page).
pub const PAGE_SIZE: u64 = 4096;
/// Memory below this address (real-mode IVT, BIOS data, EBDA, option ROMs)
/// is never handed out.
pub const LOW_MEMORY_END: u64 = 0x10_0000;
/// Usable RAM above this address (the architectural 52-bit physical address
/// limit) is ignored: firmware claiming it is broken, and a bitmap spanning
/// it could not be allocated.
pub const MAX_PHYS_ADDR: u64 = 1 << 52;

const PAGE_MASK: u64 = PAGE_SIZE - 1;

/// What a memory map entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM free for the OS.
    Usable,
    /// Not RAM, or RAM the firmware keeps.
    Reserved,
    /// RAM holding ACPI tables; reusable once they have been parsed.
    AcpiReclaimable,
    /// ACPI non-volatile storage: must be preserved.
    AcpiNvs,
    /// RAM reported defective.
    Bad,
}

/// One entry of a firmware memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRegion {
    /// Physical start address.
    pub start: u64,
    /// Length in bytes (firmware may report zero or absurd values).
    pub len: u64,
    /// What the range holds.
    pub kind: RegionKind,
}

impl MemRegion {
    /// The exclusive end address, or `None` if `start + len` wraps.
    pub fn end(&self) -> Option<u64> {
        self.start.checked_add(self.len)
    }
}

/// A half-open physical address range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First address in the range.
    pub start: u64,
    /// First address past the range.
    pub end: u64,
}

impl Range {
    /// Length in bytes (0 if `end <= start`).
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no address.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `addr` lies in the range.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether the two ranges share at least one address.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end && !self.is_empty() && !other.is_empty()
    }
}

/// Errors from [`FrameAllocator::free`]; each carries the offending address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The address is not 4 KiB aligned.
    Misaligned(u64),
    /// The frame was never managed by this allocator.
    OutOfRange(u64),
    /// The frame is already free.
    DoubleFree(u64),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Misaligned(a) => write!(f, "frame address {a:#x} is not page aligned"),
            FrameError::OutOfRange(a) => {
                write!(f, "frame {a:#x} is not managed by the frame allocator")
            }
            FrameError::DoubleFree(a) => write!(f, "frame {a:#x} freed twice"),
        }
    }
}

const fn align_down(x: u64) -> u64 {
    x & !PAGE_MASK
}

/// Rounds up to a page boundary; `None` on overflow.
const fn align_up(x: u64) -> Option<u64> {
    match x.checked_add(PAGE_MASK) {
        Some(v) => Some(v & !PAGE_MASK),
        None => None,
    }
}

/// The whole frames inside `r` as `[first, end)` frame numbers, if any.
fn frame_span(r: &Range) -> Option<(u64, u64)> {
    let first = r.start.div_ceil(PAGE_SIZE);
    let end = r.end / PAGE_SIZE;
    (first < end).then_some((first, end))
}

/// Drops empty ranges, sorts, and merges overlapping or adjacent ones.
fn normalize(mut v: Vec<Range>) -> Vec<Range> {
    v.retain(|r| !r.is_empty());
    v.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `src` minus `holes`; both sorted and merged, so is the result.
fn subtract(src: &[Range], holes: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    let mut first_hole = 0;
    for r in src {
        let mut cur = r.start;
        // Holes ending before this range cannot touch later ranges either.
        while holes.get(first_hole).is_some_and(|h| h.end <= cur) {
            first_hole += 1;
        }
        for h in holes.iter().skip(first_hole) {
            if h.start >= r.end || cur >= r.end {
                break;
            }
            if h.start > cur {
                out.push(Range { start: cur, end: h.start });
            }
            cur = cur.max(h.end);
        }
        if cur < r.end {
            out.push(Range { start: cur, end: r.end });
        }
    }
    out
}

/// Widens a range outward to page boundaries (saturating at the top of the
/// address space).
fn widen(start: u64, end: u64) -> Range {
    Range { start: align_down(start), end: align_up(end).unwrap_or(u64::MAX) }
}

/// Computes the RAM the frame allocator may hand out.
///
/// Usable RAM minus `reserved` (each reserved range is widened to page
/// boundaries), minus everything below [`LOW_MEMORY_END`], with usable
/// ranges shrunk to page boundaries; also minus any part of a usable region
/// that another map entry marks non-usable (firmware maps overlap). The
/// result is sorted, merged, non-empty and page-aligned.
///
/// Hostile entries are handled conservatively: zero-length entries are
/// ignored, a usable entry whose end wraps past 2^64 is dropped entirely,
/// usable RAM is cut at [`MAX_PHYS_ADDR`], and a non-usable entry that wraps
/// covers everything up to the top of the address space.
pub fn free_ranges(map: &[MemRegion], reserved: &[Range]) -> Vec<Range> {
    let mut usable = Vec::new();
    let mut holes = Vec::new();
    for r in map.iter().filter(|r| r.len != 0) {
        if r.kind == RegionKind::Usable {
            let Some(end) = r.end() else { continue };
            let Some(start) = align_up(r.start.max(LOW_MEMORY_END)) else {
                continue;
            };
            let end = align_down(end.min(MAX_PHYS_ADDR));
            if start < end {
                usable.push(Range { start, end });
            }
        } else {
            holes.push(widen(r.start, r.end().unwrap_or(u64::MAX)));
        }
    }
    for r in reserved.iter().filter(|r| !r.is_empty()) {
        holes.push(widen(r.start, r.end));
    }
    subtract(&normalize(usable), &normalize(holes))
}

/// Removes `bytes` (rounded up to whole pages) from the lowest free range
/// that can hold it with the whole block below `limit`, and returns the
/// block's (page-aligned) start.
///
/// `free` is expected to come from [`free_ranges`] (or a previous `carve`);
/// it stays sorted and empty ranges are removed. Returns `None` for
/// `bytes == 0` or if no range fits.
pub fn carve(free: &mut Vec<Range>, bytes: u64, limit: u64) -> Option<u64> {
    if bytes == 0 {
        return None;
    }
    let size = align_up(bytes)?;
    let mut best: Option<(usize, u64)> = None;
    for (i, r) in free.iter().enumerate() {
        let Some(start) = align_up(r.start) else {
            continue;
        };
        let Some(end) = start.checked_add(size) else {
            continue;
        };
        if end <= r.end && end <= limit && best.is_none_or(|(_, b)| start < b) {
            best = Some((i, start));
        }
    }
    let (i, start) = best?;
    let r = free.get_mut(i)?;
    r.start = start.checked_add(size)?;
    if r.is_empty() {
        free.remove(i);
    }
    Some(start)
}

/// Lowest and (exclusive) highest frame number over all whole frames in
/// `free`.
fn frame_bounds(free: &[Range]) -> Option<(u64, u64)> {
    free.iter().filter_map(frame_span).fold(None, |acc, (s, e)| match acc {
        None => Some((s, e)),
        Some((ls, le)) => Some((ls.min(s), le.max(e))),
    })
}

/// The number of `u64` words a [`FrameAllocator`] bitmap for `free` needs
/// (one bit per frame from the lowest to the highest free frame).
pub fn bitmap_words(free: &[Range]) -> usize {
    match frame_bounds(free) {
        None => 0,
        Some((lo, hi)) => usize::try_from((hi - lo).div_ceil(64)).unwrap_or(usize::MAX),
    }
}

/// A bitmap allocator for 4 KiB physical frames.
///
/// One bit per frame over `[lowest free frame, highest free frame]`, set
/// while the frame is free. Frames that were not free at creation (holes
/// between the ranges) are never handed out and cannot be freed into it.
/// Allocation is next-fit: the search resumes at the word of the last
/// allocation and skips fully allocated words.
pub struct FrameAllocator<'a> {
    /// Exactly as many words as the span needs; bit set = free.
    bits: &'a mut [u64],
    /// Frame number of bit 0.
    base_frame: u64,
    /// Number of frames the bitmap spans.
    span: u64,
    /// The page-aligned ranges that were free at creation, sorted, merged.
    managed: Vec<Range>,
    free: u64,
    total: u64,
    /// Word index where the next single-frame search starts.
    hint: usize,
}

impl<'a> FrameAllocator<'a> {
    /// Creates an allocator managing the whole frames inside `free`, using
    /// `storage` (at least [`bitmap_words`]`(free)` words) for the bitmap.
    ///
    /// Returns `None` if `storage` is too small. Overlapping or unsorted
    /// ranges are fine; partial frames at unaligned edges are ignored.
    pub fn new(free: &[Range], storage: &'a mut [u64]) -> Option<Self> {
        let managed = normalize(
            free.iter()
                .filter_map(frame_span)
                .map(|(s, e)| Range { start: s * PAGE_SIZE, end: e * PAGE_SIZE })
                .collect(),
        );
        let (base_frame, end_frame) = frame_bounds(&managed).unwrap_or((0, 0));
        let span = end_frame - base_frame;
        let words = usize::try_from(span.div_ceil(64)).ok()?;
        let bits = storage.get_mut(..words)?;
        bits.fill(0);
        let mut alloc = FrameAllocator { bits, base_frame, span, managed, free: 0, total: 0, hint: 0 };
        for i in 0..alloc.managed.len() {
            let Some(r) = alloc.managed.get(i).copied() else {
                break;
            };
            let from = r.start / PAGE_SIZE - base_frame;
            let to = r.end / PAGE_SIZE - base_frame;
            alloc.fill(from, to, true);
        }
        let free_count: u64 = alloc.bits.iter().map(|w| u64::from(w.count_ones())).sum();
        alloc.free = free_count;
        alloc.total = free_count;
        Some(alloc)
    }

    /// Sets (`free == true`) or clears the bits of frame indices `[from, to)`.
    fn fill(&mut self, from: u64, to: u64, free: bool) {
        let mut i = from;
        while i < to {
            let bit = i % 64;
            let n = (64 - bit).min(to - i);
            let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << bit };
            let Some(word) = usize::try_from(i / 64).ok().and_then(|w| self.bits.get_mut(w)) else {
                return;
            };
            if free {
                *word |= mask;
            } else {
                *word &= !mask;
            }
            i += n;
        }
    }

    /// The first index in `[from, to)` whose frame is not free.
    fn first_used(&self, from: u64, to: u64) -> Option<u64> {
        let mut i = from;
        while i < to {
            let bit = i % 64;
            let n = (64 - bit).min(to - i);
            let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << bit };
            let word = usize::try_from(i / 64).ok().and_then(|w| self.bits.get(w)).copied().unwrap_or(0);
            let used = !word & mask;
            if used != 0 {
                return Some(i - bit + u64::from(used.trailing_zeros()));
            }
            i += n;
        }
        None
    }

    /// The first index `>= from` whose frame is free.
    fn first_free(&self, from: u64) -> Option<u64> {
        let mut w = usize::try_from(from / 64).ok()?;
        let mut mask = u64::MAX << (from % 64);
        while let Some(&word) = self.bits.get(w) {
            let hits = word & mask;
            if hits != 0 {
                let idx = (w as u64) * 64 + u64::from(hits.trailing_zeros());
                return (idx < self.span).then_some(idx);
            }
            mask = u64::MAX;
            w += 1;
        }
        None
    }

    /// The physical address of bitmap index `idx`.
    fn addr_of(&self, idx: u64) -> Option<u64> {
        self.base_frame.checked_add(idx)?.checked_mul(PAGE_SIZE)
    }

    /// The bitmap index of a page-aligned address, if it is managed.
    fn index_of(&self, paddr: u64) -> Option<u64> {
        let idx = (paddr / PAGE_SIZE).checked_sub(self.base_frame)?;
        if idx >= self.span {
            return None;
        }
        let i = self.managed.partition_point(|r| r.end <= paddr);
        self.managed.get(i).filter(|r| r.contains(paddr)).map(|_| idx)
    }

    /// Allocates one frame and returns its physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        if self.free == 0 {
            return None;
        }
        let n = self.bits.len();
        for k in 0..n {
            let w = (self.hint + k) % n;
            let Some(word) = self.bits.get_mut(w) else {
                continue;
            };
            if *word == 0 {
                continue;
            }
            let bit = word.trailing_zeros();
            *word &= !(1u64 << bit);
            self.free -= 1;
            self.hint = w;
            return self.addr_of((w as u64) * 64 + u64::from(bit));
        }
        None
    }

    /// Allocates `frames` physically contiguous frames whose first frame's
    /// address is a multiple of `align_frames` frames (0 means 1), and
    /// returns that address. Lowest fit first. `None` for `frames == 0` or
    /// if no such run is free.
    pub fn alloc_contiguous(&mut self, frames: usize, align_frames: usize) -> Option<u64> {
        let count = u64::try_from(frames).ok().filter(|&c| c > 0)?;
        if count > self.free {
            return None;
        }
        let align = u64::try_from(align_frames.max(1)).ok()?;
        let aligned_index = |idx: u64| -> Option<u64> {
            let frame = self.base_frame.checked_add(idx)?;
            frame.checked_next_multiple_of(align)?.checked_sub(self.base_frame)
        };
        let mut i = aligned_index(self.first_free(0)?)?;
        loop {
            let end = i.checked_add(count)?;
            if end > self.span {
                return None;
            }
            match self.first_used(i, end) {
                None => {
                    self.fill(i, end, false);
                    self.free -= count;
                    return self.addr_of(i);
                }
                Some(used) => i = aligned_index(self.first_free(used.checked_add(1)?)?)?,
            }
        }
    }

    /// Returns a frame obtained from [`alloc`](Self::alloc) or
    /// [`alloc_contiguous`](Self::alloc_contiguous) (one frame per call).
    pub fn free(&mut self, paddr: u64) -> Result<(), FrameError> {
        if paddr & PAGE_MASK != 0 {
            return Err(FrameError::Misaligned(paddr));
        }
        let idx = self.index_of(paddr).ok_or(FrameError::OutOfRange(paddr))?;
        let word =
            usize::try_from(idx / 64).ok().and_then(|w| self.bits.get_mut(w)).ok_or(FrameError::OutOfRange(paddr))?;
        let mask = 1u64 << (idx % 64);
        if *word & mask != 0 {
            return Err(FrameError::DoubleFree(paddr));
        }
        *word |= mask;
        self.free += 1;
        Ok(())
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Frames that were free when the allocator was created.
    pub fn total_frames(&self) -> u64 {
        self.total
    }

    /// Whether the frame containing `paddr` is managed and currently free.
    pub fn is_free(&self, paddr: u64) -> bool {
        self.index_of(paddr & !PAGE_MASK).is_some_and(|idx| {
            usize::try_from(idx / 64)
                .ok()
                .and_then(|w| self.bits.get(w))
                .is_some_and(|word| word & (1u64 << (idx % 64)) != 0)
        })
    }

    /// The page-aligned ranges this allocator manages (sorted, merged).
    pub fn managed(&self) -> &[Range] {
        &self.managed
    }
}

/// A bump allocator for the frames needed before the bitmap exists (the
/// first page tables, the bitmap's own mappings).
#[derive(Debug, Clone)]
pub struct BumpFrames {
    /// Whole-frame ranges, sorted and merged; handed-out frames are cut off
    /// their fronts.
    free: Vec<Range>,
    limit: u64,
    allocated: u64,
}

impl BumpFrames {
    /// Hands out the whole frames of `free` that lie entirely below `limit`,
    /// lowest first.
    pub fn new(free: Vec<Range>, limit: u64) -> BumpFrames {
        let free = normalize(
            free.iter()
                .filter_map(frame_span)
                .map(|(s, e)| Range { start: s * PAGE_SIZE, end: e * PAGE_SIZE })
                .collect(),
        );
        BumpFrames { free, limit, allocated: 0 }
    }

    /// The lowest free frame below the limit, removed from the free ranges.
    pub fn alloc(&mut self) -> Option<u64> {
        for r in self.free.iter_mut() {
            let end = r.start.checked_add(PAGE_SIZE)?;
            if end > self.limit {
                // Ranges are sorted: nothing later is below the limit.
                return None;
            }
            if end <= r.end {
                let frame = r.start;
                r.start = end;
                self.allocated += 1;
                return Some(frame);
            }
        }
        None
    }

    /// How many frames have been handed out.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// The free ranges minus everything handed out (sorted, merged,
    /// non-empty, page-aligned).
    pub fn into_remaining(self) -> Vec<Range> {
        let mut free = self.free;
        free.retain(|r| !r.is_empty());
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const MIB: u64 = 1 << 20;

    fn region(start: u64, end: u64, kind: RegionKind) -> MemRegion {
        MemRegion { start, len: end - start, kind }
    }

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    /// The E820 map QEMU's SeaBIOS reports for `-m 128M`.
    fn qemu_map() -> Vec<MemRegion> {
        use RegionKind::*;
        vec![
            region(0, 0x9fc00, Usable),
            region(0x9fc00, 0xa0000, Reserved),
            region(0xf0000, 0x100000, Reserved),
            region(0x100000, 0x7fe0000, Usable),
            region(0x7fe0000, 0x8000000, Reserved),
            MemRegion { start: 0xfffc0000, len: 0x40000, kind: Reserved },
        ]
    }

    /// Kernel image, one module and the boot info, deliberately unaligned.
    fn qemu_reserved() -> Vec<Range> {
        vec![
            r(0x100000, 0x1a3456),       // kernel image
            r(0x400010, 0x534567),       // module
            r(0x600800, 0x600a00),       // boot info
            r(0x9000, 0x9100),           // boot info in low memory
            r(0x7000_0000, 0x7000_0000), // empty: ignored
        ]
    }

    fn assert_well_formed(ranges: &[Range]) {
        for w in ranges.windows(2) {
            assert!(w[0].end < w[1].start, "not sorted/merged: {ranges:x?}");
        }
        for x in ranges {
            assert!(x.start < x.end, "empty range in {ranges:x?}");
            assert_eq!(x.start % PAGE_SIZE, 0);
            assert_eq!(x.end % PAGE_SIZE, 0);
            assert!(x.start >= LOW_MEMORY_END);
        }
    }

    /// Every non-usable map entry and every reserved range.
    fn forbidden(map: &[MemRegion], reserved: &[Range]) -> Vec<Range> {
        map.iter()
            .filter(|m| m.kind != RegionKind::Usable)
            .map(|m| r(m.start, m.end().unwrap_or(u64::MAX)))
            .chain(reserved.iter().copied())
            .chain([r(0, LOW_MEMORY_END)])
            .collect()
    }

    fn assert_frame_allowed(frame: u64, map: &[MemRegion], reserved: &[Range]) {
        let page = r(frame, frame + PAGE_SIZE);
        for f in forbidden(map, reserved) {
            assert!(!page.overlaps(&f), "frame {frame:#x} overlaps {f:x?}");
        }
        let in_usable = map
            .iter()
            .any(|m| m.kind == RegionKind::Usable && m.start <= frame && m.end().is_some_and(|e| page.end <= e));
        assert!(in_usable, "frame {frame:#x} is not in usable RAM");
    }

    #[test]
    fn qemu_free_ranges() {
        let free = free_ranges(&qemu_map(), &qemu_reserved());
        // Kernel, module and boot info are widened to whole pages.
        assert_eq!(free, vec![r(0x1a4000, 0x400000), r(0x535000, 0x600000), r(0x601000, 0x7fe0000)]);
        // Without reservations only the first MiB and the map's holes go.
        assert_eq!(free_ranges(&qemu_map(), &[]), vec![r(0x100000, 0x7fe0000)]);
    }

    #[test]
    fn allocating_everything_never_hands_out_reserved_bytes() {
        let map = qemu_map();
        let reserved = qemu_reserved();
        let free = free_ranges(&map, &reserved);
        assert_well_formed(&free);
        let expected: u64 = free.iter().map(|x| x.len() / PAGE_SIZE).sum();

        let mut storage = vec![0u64; bitmap_words(&free)];
        let mut fa = FrameAllocator::new(&free, &mut storage).unwrap();
        assert_eq!(fa.total_frames(), expected);
        assert_eq!(fa.free_frames(), expected);

        let mut seen = alloc::collections::BTreeSet::new();
        while let Some(frame) = fa.alloc() {
            assert_eq!(frame % PAGE_SIZE, 0);
            assert_frame_allowed(frame, &map, &reserved);
            assert!(seen.insert(frame), "frame {frame:#x} handed out twice");
            assert!(!fa.is_free(frame));
        }
        assert_eq!(seen.len() as u64, expected);
        assert_eq!(fa.free_frames(), 0);
        assert_eq!(fa.alloc_contiguous(1, 1), None);
    }

    #[test]
    fn overlapping_and_unsorted_maps() {
        use RegionKind::*;
        // A usable region overlapped by a reserved one, listed out of order,
        // with a duplicate usable entry and an unaligned ACPI NVS hole.
        let map = vec![
            region(0x800000, 0x1000000, Usable),
            region(0x200000, 0x900000, Usable),
            region(0x400000, 0x500000, Reserved),
            region(0x200000, 0x300000, Usable),
            region(0x600800, 0x600900, AcpiNvs),
            region(0xa00000, 0xb00000, Bad),
            region(0xf00000, 0x2000000, AcpiReclaimable),
        ];
        let free = free_ranges(&map, &[]);
        assert_well_formed(&free);
        assert_eq!(
            free,
            vec![r(0x200000, 0x400000), r(0x500000, 0x600000), r(0x601000, 0xa00000), r(0xb00000, 0xf00000),]
        );
        // Order of the map does not matter.
        let mut reversed = map.clone();
        reversed.reverse();
        assert_eq!(free_ranges(&reversed, &[]), free);
    }

    #[test]
    fn zero_length_and_wrapping_entries() {
        use RegionKind::*;
        let map = vec![
            region(0x100000, 0x400000, Usable),
            MemRegion { start: 0x200000, len: 0, kind: Reserved },
            MemRegion { start: 0x300000, len: 0, kind: Usable },
            // Usable entry that wraps: dropped, not "everything is RAM".
            MemRegion { start: 0x1000_0000, len: u64::MAX, kind: Usable },
            // Usable entry far beyond any real physical address: cut off.
            MemRegion { start: u64::MAX - 0xfff, len: 0x1000, kind: Usable },
            MemRegion { start: 1 << 60, len: 1 << 40, kind: Usable },
        ];
        assert_eq!(free_ranges(&map, &[]), vec![r(0x100000, 0x400000)]);

        // A reserved entry that wraps removes everything above its start.
        let map =
            vec![region(0x100000, 0x800000, Usable), MemRegion { start: 0x400123, len: u64::MAX, kind: Reserved }];
        assert_eq!(free_ranges(&map, &[]), vec![r(0x100000, 0x400000)]);
        // So does a reserved range ending at the very top.
        assert_eq!(free_ranges(&map[..1], &[r(0x300001, u64::MAX)]), vec![r(0x100000, 0x300000)]);
        // Inverted reserved ranges are empty.
        assert_eq!(free_ranges(&map[..1], &[r(0x500000, 0x200000)]), vec![r(0x100000, 0x800000)]);
        // Unaligned usable edges shrink inward.
        let map = vec![region(0x100001, 0x204fff, Usable)];
        assert_eq!(free_ranges(&map, &[]), vec![r(0x101000, 0x204000)]);
        // A usable sliver smaller than a page vanishes.
        let map = vec![region(0x100001, 0x100fff, Usable)];
        assert!(free_ranges(&map, &[]).is_empty());
        assert!(free_ranges(&[], &[]).is_empty());
    }

    #[test]
    fn low_memory_is_excluded() {
        let map = vec![region(0, 0x200000, RegionKind::Usable)];
        assert_eq!(free_ranges(&map, &[]), vec![r(0x100000, 0x200000)]);
        let map = vec![region(0, 0x9fc00, RegionKind::Usable)];
        assert!(free_ranges(&map, &[]).is_empty());
    }

    #[test]
    fn carve_lowest_fit_below_limit() {
        let mut free = vec![r(0x100000, 0x102000), r(0x200000, 0x400000), r(0x800000, 0x900000)];
        // Too big for the first range: comes from the second.
        assert_eq!(carve(&mut free, 0x2001, u64::MAX), Some(0x200000));
        assert_eq!(free[1], r(0x203000, 0x400000));
        // Fits the first exactly: the range disappears.
        assert_eq!(carve(&mut free, 0x2000, u64::MAX), Some(0x100000));
        assert_eq!(free, vec![r(0x203000, 0x400000), r(0x800000, 0x900000)]);
        // The limit applies to the whole block.
        assert_eq!(carve(&mut free, 0x1000, 0x203fff), None);
        assert_eq!(carve(&mut free, 0x1000, 0x204000), Some(0x203000));
        assert_eq!(carve(&mut free, 0x300000, u64::MAX), None);
        // Lowest range that can hold it, even if a later one also could.
        assert_eq!(carve(&mut free, 0x100000, u64::MAX), Some(0x204000));
        assert_eq!(carve(&mut free, 0x100000, u64::MAX), Some(0x800000));
        assert_eq!(carve(&mut free, 0, u64::MAX), None);
        assert_eq!(carve(&mut free, u64::MAX, u64::MAX), None);
        assert_eq!(free, vec![r(0x304000, 0x400000)]);
    }

    #[test]
    fn bitmap_sizing() {
        assert_eq!(bitmap_words(&[]), 0);
        assert_eq!(bitmap_words(&[r(0x100000, 0x101000)]), 1);
        // 64 frames fit one word, 65 need two.
        assert_eq!(bitmap_words(&[r(0x100000, 0x100000 + 64 * PAGE_SIZE)]), 1);
        assert_eq!(bitmap_words(&[r(0x100000, 0x100000 + 65 * PAGE_SIZE)]), 2);
        // Spans the hole between ranges; order does not matter.
        assert_eq!(bitmap_words(&[r(0x40000000, 0x40001000), r(0x100000, 0x101000)]), 4093);

        let free = vec![r(0x100000, 0x200000)];
        let mut small = vec![0u64; bitmap_words(&free) - 1];
        assert!(FrameAllocator::new(&free, &mut small).is_none());
        let mut empty: [u64; 0] = [];
        let fa = FrameAllocator::new(&[], &mut empty).unwrap();
        assert_eq!(fa.total_frames(), 0);
    }

    #[test]
    fn holes_between_ranges_are_never_handed_out() {
        let free = vec![r(0x100000, 0x103000), r(0x180000, 0x181000), r(0x300000, 0x302000)];
        let mut storage = vec![u64::MAX; bitmap_words(&free) + 3]; // dirty storage
        let mut fa = FrameAllocator::new(&free, &mut storage).unwrap();
        assert_eq!(fa.total_frames(), 6);
        let mut got = Vec::new();
        while let Some(f) = fa.alloc() {
            got.push(f);
        }
        got.sort_unstable();
        assert_eq!(got, vec![0x100000, 0x101000, 0x102000, 0x180000, 0x300000, 0x301000]);
        assert_eq!(fa.free(0x200000), Err(FrameError::OutOfRange(0x200000)));
        assert_eq!(fa.free(0x0), Err(FrameError::OutOfRange(0)));
        assert_eq!(fa.free(0x400000), Err(FrameError::OutOfRange(0x400000)));
        assert_eq!(fa.free(!PAGE_MASK), Err(FrameError::OutOfRange(!PAGE_MASK)));
        assert!(!fa.is_free(0x200000));
    }

    #[test]
    fn alloc_free_cycles_restore_count() {
        let free = vec![r(0x100000, 0x500000)];
        let mut storage = vec![0u64; bitmap_words(&free)];
        let mut fa = FrameAllocator::new(&free, &mut storage).unwrap();
        let total = fa.total_frames();
        assert_eq!(total, 0x400);
        for round in 0..5 {
            let n = 100 + round * 137;
            let frames: Vec<u64> = (0..n).map(|_| fa.alloc().unwrap()).collect();
            assert_eq!(fa.free_frames(), total - n as u64);
            // Free in a scrambled order.
            let mut order: Vec<usize> = (0..frames.len()).collect();
            order.sort_by_key(|&i| (i * 7919) % frames.len());
            for &i in &order {
                fa.free(frames[i]).unwrap();
            }
            assert_eq!(fa.free_frames(), total);
        }
    }

    #[test]
    fn free_errors() {
        let free = vec![r(0x100000, 0x110000)];
        let mut storage = vec![0u64; bitmap_words(&free)];
        let mut fa = FrameAllocator::new(&free, &mut storage).unwrap();
        let f = fa.alloc().unwrap();
        assert_eq!(fa.free(f + 8), Err(FrameError::Misaligned(f + 8)));
        assert_eq!(fa.free(f), Ok(()));
        assert_eq!(fa.free(f), Err(FrameError::DoubleFree(f)));
        // Never allocated at all: also a double free.
        assert_eq!(fa.free(0x10f000), Err(FrameError::DoubleFree(0x10f000)));
        assert_eq!(fa.free_frames(), fa.total_frames());
        assert_eq!(FrameError::DoubleFree(0x1000).to_string(), "frame 0x1000 freed twice");
        assert_eq!(FrameError::Misaligned(0x1008).to_string(), "frame address 0x1008 is not page aligned");
        assert!(FrameError::OutOfRange(0).to_string().contains("not managed"));
    }

    #[test]
    fn next_fit_skips_full_words() {
        let free = vec![r(0x100000, 0x100000 + 256 * PAGE_SIZE)];
        let mut storage = vec![0u64; bitmap_words(&free)];
        let mut fa = FrameAllocator::new(&free, &mut storage).unwrap();
        let first: Vec<u64> = (0..130).map(|_| fa.alloc().unwrap()).collect();
        // Handed out in ascending order from a fresh allocator.
        assert!(first.windows(2).all(|w| w[1] == w[0] + PAGE_SIZE));
        // Freeing a low frame: next-fit continues where it was, then wraps.
        fa.free(first[3]).unwrap();
        assert_eq!(fa.alloc(), Some(0x100000 + 130 * PAGE_SIZE));
        while fa.free_frames() > 1 {
            fa.alloc().unwrap();
        }
        assert_eq!(fa.alloc(), Some(first[3]));
        assert_eq!(fa.alloc(), None);
    }

    #[test]
    fn contiguous_allocation_alignment() {
        // Starts at an odd frame so alignment is relative to physical
        // addresses, not to the bitmap.
        let free = vec![r(0x101000, 0x101000 + 4096 * PAGE_SIZE)];
        let mut storage = vec![0u64; bitmap_words(&free)];
        let mut fa = FrameAllocator::new(&free, &mut storage).unwrap();
        let total = fa.total_frames();

        let a = fa.alloc_contiguous(512, 512).unwrap(); // 2 MiB aligned 2 MiB
        assert_eq!(a % (2 * MIB), 0);
        assert_eq!(a, 0x200000);
        for i in 0..512 {
            assert!(!fa.is_free(a + i * PAGE_SIZE));
        }
        assert!(fa.is_free(a - PAGE_SIZE));
        assert!(fa.is_free(a + 512 * PAGE_SIZE));

        let b = fa.alloc_contiguous(3, 16).unwrap();
        assert_eq!(b % (16 * PAGE_SIZE), 0);
        assert_eq!(b, 0x110000); // lowest aligned fit
        let c = fa.alloc_contiguous(1, 0).unwrap(); // align 0 means 1
        assert_eq!(c, 0x101000);
        assert_eq!(fa.free_frames(), total - 516);

        // A run blocked by an allocated frame moves past it.
        let single = fa.alloc().unwrap();
        let d = fa.alloc_contiguous(8, 1).unwrap();
        assert!(d > single || d + 8 * PAGE_SIZE <= single);

        // Impossible requests.
        assert_eq!(fa.alloc_contiguous(0, 1), None);
        assert_eq!(fa.alloc_contiguous(4097, 1), None);
        assert_eq!(fa.alloc_contiguous(1, 1 << 40), None);
        assert_eq!(fa.alloc_contiguous(usize::MAX, usize::MAX), None);
        assert_eq!(fa.alloc_contiguous(1, usize::MAX), None);

        for i in 0..512 {
            fa.free(a + i * PAGE_SIZE).unwrap();
        }
        // The 2 MiB block is reusable.
        assert_eq!(fa.alloc_contiguous(512, 512), Some(0x200000));
    }

    #[test]
    fn contiguous_respects_holes() {
        // Two ranges with a one-frame hole: an 8-frame run cannot span it.
        let free = vec![r(0x100000, 0x105000), r(0x106000, 0x10f000)];
        let mut storage = vec![0u64; bitmap_words(&free)];
        let mut fa = FrameAllocator::new(&free, &mut storage).unwrap();
        assert_eq!(fa.alloc_contiguous(8, 1), Some(0x106000));
        assert_eq!(fa.alloc_contiguous(6, 1), None);
        assert_eq!(fa.alloc_contiguous(5, 1), Some(0x100000));
    }

    #[test]
    fn overlapping_input_ranges_count_once() {
        let free = vec![r(0x200000, 0x300000), r(0x100000, 0x280000), r(0x100800, 0x101800)];
        let mut storage = vec![0u64; bitmap_words(&free)];
        let fa = FrameAllocator::new(&free, &mut storage).unwrap();
        assert_eq!(fa.total_frames(), 0x200);
        assert_eq!(fa.managed(), &[r(0x100000, 0x300000)]);
    }

    #[test]
    fn bump_then_bitmap() {
        let free = free_ranges(&qemu_map(), &qemu_reserved());
        let mut bump = BumpFrames::new(free.clone(), 0x1a6000);
        assert_eq!(bump.alloc(), Some(0x1a4000));
        assert_eq!(bump.alloc(), Some(0x1a5000));
        assert_eq!(bump.alloc(), None); // limit reached
        assert_eq!(bump.allocated(), 2);
        let rest = bump.into_remaining();
        assert_eq!(rest[0], r(0x1a6000, 0x400000));
        assert_eq!(rest[1..], free[1..]);

        // Carve the bitmap out of what is left, then manage the rest.
        let mut rest = rest;
        let words = bitmap_words(&rest);
        let at = carve(&mut rest, (words * 8) as u64, 0x4000_0000).unwrap();
        assert_eq!(at, 0x1a6000);
        let mut storage = vec![0u64; bitmap_words(&rest)];
        let fa = FrameAllocator::new(&rest, &mut storage).unwrap();
        assert!(!fa.is_free(0x1a4000));
        assert!(!fa.is_free(0x400000));
        assert!(fa.is_free(0x535000));
        assert!(!fa.is_free(at));
        assert!(fa.is_free(0x7fdf000));
        assert!(!fa.is_free(0x7fe0000));
    }

    #[test]
    fn bump_skips_small_and_high_ranges() {
        let mut bump =
            BumpFrames::new(vec![r(0x300000, 0x302000), r(0x100800, 0x101800), r(0x200000, 0x201000)], 0x301000);
        // The unaligned range holds no whole frame.
        assert_eq!(bump.alloc(), Some(0x200000));
        assert_eq!(bump.alloc(), Some(0x300000));
        assert_eq!(bump.alloc(), None);
        assert_eq!(bump.into_remaining(), vec![r(0x301000, 0x302000)]);

        let mut top = BumpFrames::new(vec![r(!PAGE_MASK, u64::MAX)], u64::MAX);
        assert_eq!(top.alloc(), None);
        let mut none = BumpFrames::new(Vec::new(), u64::MAX);
        assert_eq!(none.alloc(), None);
    }

    #[test]
    fn range_helpers() {
        let a = r(0x1000, 0x3000);
        assert_eq!(a.len(), 0x2000);
        assert!(a.contains(0x1000) && a.contains(0x2fff) && !a.contains(0x3000));
        assert!(a.overlaps(&r(0x2fff, 0x4000)));
        assert!(!a.overlaps(&r(0x3000, 0x4000)));
        assert!(!a.overlaps(&r(0x2000, 0x2000)));
        assert!(r(5, 1).is_empty());
        assert_eq!(r(5, 1).len(), 0);
    }
}
