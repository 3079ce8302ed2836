//! Secondary vCPUs, and knowing which vCPU code runs on without a hypercall.
//!
//! Every stack the runtime manages is `VCPU_STACK_BYTES` long and aligned to
//! its size, and its lowest bytes hold a [`VcpuLocal`] block: rounding the
//! stack pointer down finds the block, and in it the vCPU id (used to pick
//! the vCPU's time record). vCPU 0 uses its initial stack this way when the
//! hypervisor placed it suitably (a 64 KiB-aligned `stack_top`).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, IMAGE_BASE, INITIAL_STACK_BYTES, MAX_VCPUS};

/// Stack size (and alignment) of vCPUs started with [`spawn_vcpu`].
pub const VCPU_STACK_BYTES: usize = 64 * 1024;

const _: () = assert!(VCPU_STACK_BYTES as u64 == INITIAL_STACK_BYTES);

/// `"RHVVCPU\0"`: marks a live [`VcpuLocal`].
const LOCAL_MAGIC: u64 = u64::from_le_bytes(*b"RHVVCPU\0");

/// Per-vCPU data at the bottom of a runtime-managed stack.
#[repr(C, align(64))]
pub(crate) struct VcpuLocal {
    magic: AtomicU64,
    /// The block's own address: a second check against stale or forged
    /// magic.
    self_addr: AtomicU64,
    id: AtomicU64,
    /// `fn(u64)` to run and its argument (secondary vCPUs).
    func: AtomicU64,
    arg: AtomicU64,
}

/// Writes a [`VcpuLocal`] for vCPU `id` at `base`.
///
/// # Safety
///
/// `base` must be aligned to `VCPU_STACK_BYTES` and the lowest
/// `size_of::<VcpuLocal>()` bytes there must be writable memory reserved for
/// this block (the bottom of the vCPU's stack).
pub(crate) unsafe fn install_local(base: *mut u8, id: u32, func: u64, arg: u64) {
    let local = base.cast::<VcpuLocal>();
    // SAFETY: the caller reserves this aligned, writable memory for the
    // block; the fields are atomics, so later racy readers are sound.
    unsafe {
        local.write(VcpuLocal {
            magic: AtomicU64::new(0),
            self_addr: AtomicU64::new(base as u64),
            id: AtomicU64::new(u64::from(id)),
            func: AtomicU64::new(func),
            arg: AtomicU64::new(arg),
        });
        (*local).magic.store(LOCAL_MAGIC, Ordering::Release);
    }
}

/// The id of the vCPU this runs on, if the current stack is one the runtime
/// manages (vCPU 0's initial stack, [`spawn_vcpu`] stacks); `None`
/// otherwise ([`vcpu_id`](super::vcpu_id) asks the hypervisor).
pub fn current_vcpu() -> Option<u32> {
    let marker = 0u8;
    let sp = core::hint::black_box(core::ptr::addr_of!(marker)) as u64;
    let base = sp & !(VCPU_STACK_BYTES as u64 - 1);
    if base < IMAGE_BASE {
        // Not a runtime stack (those live in the heap or at the top of
        // memory), and below the image there may be nothing readable.
        return None;
    }
    if let Some(env) = super::env::try_env() {
        // Between the heap and vCPU 0's stack lies an unmapped guard page.
        let stack_base = env.stack_top().wrapping_sub(INITIAL_STACK_BYTES);
        if base >= env.heap().1 && base < stack_base {
            return None;
        }
    }
    let local = base as *const VcpuLocal;
    // SAFETY: `base` lies between the image and the stack pointer, in
    // guest memory that is mapped readable (ABI v1: all of
    // `[IMAGE_BASE, mem_bytes)` except the guard page excluded above), and
    // is 64-byte aligned. Atomic
    // loads make a concurrent write elsewhere harmless; what is read is only
    // trusted if both the magic and the self address match.
    let (magic, self_addr, id) = unsafe {
        (
            (*local).magic.load(Ordering::Acquire),
            (*local).self_addr.load(Ordering::Relaxed),
            (*local).id.load(Ordering::Relaxed),
        )
    };
    (magic == LOCAL_MAGIC && self_addr == base && id < u64::from(MAX_VCPUS)).then_some(id as u32)
}

/// Where a secondary vCPU started by [`spawn_vcpu`] begins: runs the
/// function, then idles for good (ABI v1 has no per-vCPU exit).
extern "C" fn vcpu_main(local: u64) -> ! {
    let local = local as *const VcpuLocal;
    // SAFETY: `spawn_vcpu` passes the block it installed at the bottom of
    // this vCPU's stack; it stays valid for as long as the vCPU runs.
    let (func, arg) = unsafe { ((*local).func.load(Ordering::Acquire), (*local).arg.load(Ordering::Relaxed)) };
    // SAFETY: `spawn_vcpu` stored a `fn(u64)` here.
    let f: fn(u64) = unsafe { core::mem::transmute::<usize, fn(u64)>(func as usize) };
    f(arg);
    loop {
        // Pending events are vCPU 0's to take (`wait_until`); until it does,
        // `block` returns at once, so let it run.
        if super::block_until(u64::MAX) != 0 {
            super::yield_now();
        }
    }
}

/// Starts secondary vCPU `vcpu` running `f(arg)` on a fresh 64 KiB stack
/// from the heap. When `f` returns the vCPU idles in `block` forever
/// (leaving the domain's events to vCPU 0).
///
/// Errors: `NoMem` if the stack cannot be allocated; what `vcpu_up` returns
/// (`Invalid` for vCPU 0, an id `>= vcpus`, or a vCPU already started).
pub fn spawn_vcpu(vcpu: u32, f: fn(u64), arg: u64) -> Result<(), Error> {
    use super::alloc::alloc::{alloc, dealloc};
    use core::alloc::Layout;
    let layout = Layout::from_size_align(VCPU_STACK_BYTES, VCPU_STACK_BYTES).map_err(|_| Error::Invalid)?;
    // SAFETY: the layout has a non-zero size.
    let base = unsafe { alloc(layout) };
    if base.is_null() {
        return Err(Error::NoMem);
    }
    // SAFETY: `base` is a fresh allocation of VCPU_STACK_BYTES aligned to
    // its size; its lowest bytes become the block.
    unsafe { install_local(base, vcpu, f as usize as u64, arg) };
    let local = base.cast::<VcpuLocal>();
    // SAFETY: the stack is owned by nothing else and handed to the new vCPU
    // for good (it is never freed once the vCPU runs); `vcpu_main` never
    // returns and reads the block passed as its argument.
    let top = unsafe { base.add(VCPU_STACK_BYTES) };
    // SAFETY: as above.
    match unsafe { super::vcpu_up(vcpu, vcpu_main, top, local as u64) } {
        Ok(()) => Ok(()),
        Err(e) => {
            // SAFETY: the vCPU did not start; the stack is ours again.
            unsafe { dealloc(base, layout) };
            Err(e)
        }
    }
}
