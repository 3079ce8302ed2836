//! The global allocator: `linked_list_allocator` over the heap range of the
//! start-info page, behind a [`YieldLock`].

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use linked_list_allocator::Heap;

use super::sync::YieldLock;

struct GuestHeap(YieldLock<Heap>);

#[global_allocator]
static HEAP: GuestHeap = GuestHeap(YieldLock::new(Heap::empty()));

// SAFETY: `Heap` hands out disjoint blocks of the memory it was given,
// aligned as the layout asks, and the lock serializes all use of it.
unsafe impl GlobalAlloc for GuestHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.0.lock().allocate_first_fit(layout) {
            Ok(p) => p.as_ptr(),
            Err(()) => ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with
            // this layout.
            unsafe { self.0.lock().deallocate(p, layout) };
        }
    }
}

/// Gives the allocator `[start, end)`.
///
/// # Safety
///
/// Once, before any allocation; the range must be writable guest memory
/// used by nothing else for the rest of the domain's life.
pub(crate) unsafe fn init(start: u64, end: u64) {
    if end <= start {
        return;
    }
    // SAFETY: the caller hands over the range for good.
    unsafe { HEAP.0.lock().init(start as *mut u8, (end - start) as usize) };
}

/// Heap usage in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Size of the heap.
    pub size: usize,
    /// Bytes allocated (including allocator overhead).
    pub used: usize,
    /// Bytes free.
    pub free: usize,
}

pub(crate) fn stats() -> HeapStats {
    let h = HEAP.0.lock();
    HeapStats { size: h.size(), used: h.used(), free: h.free() }
}
