//! Safe wrappers, one per hypercall of ABI v1.

use super::raw::hypercall;
use crate::{nr, Error, MAX_IO_BYTES};

fn result(raw: i64) -> Result<u64, Error> {
    // `from_raw` negates its argument; keep i64::MIN (never a valid result)
    // from overflowing in debug builds.
    Error::from_raw(raw.max(-i64::MAX))
}

/// Writes (up to [`MAX_IO_BYTES`] of) `buf` to the console; returns how many
/// bytes were taken. [`write_all`](super::write_all) writes everything.
pub fn console_write(buf: &[u8]) -> Result<usize, Error> {
    if buf.is_empty() {
        // An empty slice's pointer need not be a valid address (ABI v1
        // checks it even for length 0).
        return Ok(0);
    }
    let len = buf.len().min(MAX_IO_BYTES as usize);
    // SAFETY: the hypervisor only reads `[buf, buf + len)`, a live borrow.
    let raw = unsafe { hypercall(nr::CONSOLE_WRITE, buf.as_ptr() as u64, len as u64, 0, 0) };
    result(raw).map(|n| n as usize)
}

/// Reads waiting console input into `buf` without blocking; `Ok(0)` when
/// there is none. Wait for [`event::CONSOLE_INPUT`](crate::event) with
/// [`block_until`].
pub fn console_read(buf: &mut [u8]) -> Result<usize, Error> {
    if buf.is_empty() {
        return Ok(0);
    }
    let len = buf.len().min(MAX_IO_BYTES as usize);
    // SAFETY: the hypervisor writes at most `len` bytes into `buf`, which we
    // borrow mutably for the call.
    let raw = unsafe { hypercall(nr::CONSOLE_READ, buf.as_mut_ptr() as u64, len as u64, 0, 0) };
    result(raw).map(|n| n as usize)
}

/// The `clock_monotonic` hypercall: ns since domain creation.
/// [`now`](super::now) reads the same clock without a hypercall.
pub fn clock_monotonic() -> u64 {
    // SAFETY: no memory arguments.
    let raw = unsafe { hypercall(nr::CLOCK_MONOTONIC, 0, 0, 0, 0) };
    result(raw).unwrap_or(0)
}

/// The `clock_wall` hypercall: ns since the Unix epoch.
pub fn clock_wall() -> u64 {
    // SAFETY: no memory arguments.
    let raw = unsafe { hypercall(nr::CLOCK_WALL, 0, 0, 0, 0) };
    result(raw).unwrap_or(0)
}

/// Gives up the rest of this vCPU's time slice.
pub fn yield_now() {
    // SAFETY: no memory arguments.
    unsafe { hypercall(nr::YIELD, 0, 0, 0, 0) };
}

/// Sleeps until the monotonic clock reaches `deadline_ns` or the domain has
/// a pending event, and returns the pending [`event`](crate::event) bits
/// without taking them (0: the deadline passed). While any bit is pending it
/// returns at once: take them with [`events`], or use
/// [`wait_until`](super::wait_until). `u64::MAX` waits for an event only; a
/// deadline in the past returns at once.
pub fn block_until(deadline_ns: u64) -> u64 {
    // SAFETY: no memory arguments.
    let raw = unsafe { hypercall(nr::BLOCK, deadline_ns, 0, 0, 0) };
    result(raw).unwrap_or(0)
}

/// Takes (and clears) the domain's pending [`event`](crate::event) bits.
pub fn events() -> u64 {
    // SAFETY: no memory arguments.
    let raw = unsafe { hypercall(nr::EVENTS, 0, 0, 0, 0) };
    result(raw).unwrap_or(0)
}

/// Ends the domain with `status` (0 = clean poweroff); all vCPUs stop.
pub fn exit(status: i32) -> ! {
    loop {
        // SAFETY: no memory arguments; `exit` does not return.
        unsafe { hypercall(nr::EXIT, status as i64 as u64, 0, 0, 0) };
        // Unreachable with a conforming hypervisor; never run on regardless.
        block_until(u64::MAX);
    }
}

/// The calling vCPU's id (the `vcpu_id` hypercall;
/// [`current_vcpu`](super::current_vcpu) answers without one on
/// runtime-managed stacks).
pub fn vcpu_id() -> u32 {
    // SAFETY: no memory arguments.
    let raw = unsafe { hypercall(nr::VCPU_ID, 0, 0, 0, 0) };
    result(raw).unwrap_or(0) as u32
}

// Where `vcpu_up` starts a secondary vCPU: RSP is 16-byte aligned and
// points at [entry, 0]. Popping the entry leaves the null word as a return
// address, so `entry` starts as if called (RSP = 8 mod 16), with RDI = arg
// and RBP = 0 ending backtraces.
core::arch::global_asm!(
    ".pushsection .text.__rhv_vcpu_start, \"ax\", @progbits",
    ".globl __rhv_vcpu_start",
    ".type __rhv_vcpu_start, @function",
    "__rhv_vcpu_start:",
    "    xor ebp, ebp",
    "    pop rax",
    "    jmp rax",
    ".size __rhv_vcpu_start, . - __rhv_vcpu_start",
    ".popsection",
);

extern "C" {
    fn __rhv_vcpu_start();
}

/// Starts secondary vCPU `vcpu` in `entry(arg)` on the stack ending at
/// `stack_top`. [`spawn_vcpu`](super::spawn_vcpu) is the safe way.
///
/// `stack_top` must be 16-byte aligned (else `Err(Invalid)`). The vCPU
/// enters a small trampoline that calls `entry` with the stack alignment a
/// called function expects; the trampoline uses the top 16 bytes.
///
/// # Safety
///
/// `[stack_top - 16, stack_top)` must be writable, and the memory below
/// `stack_top` must be usable by the new vCPU as its stack for as long as it
/// runs (which is until the domain ends), owned by nothing else.
pub unsafe fn vcpu_up(vcpu: u32, entry: extern "C" fn(u64) -> !, stack_top: *mut u8, arg: u64) -> Result<(), Error> {
    if !(stack_top as usize).is_multiple_of(16) {
        return Err(Error::Invalid);
    }
    let rsp = stack_top.wrapping_sub(16).cast::<u64>();
    // SAFETY: the caller guarantees the 16 bytes below `stack_top` are
    // writable stack memory for the new vCPU; they are 16-byte aligned.
    unsafe {
        rsp.write(entry as usize as u64);
        rsp.add(1).write(0);
    }
    // SAFETY: starts the trampoline (in this image's text) on a stack the
    // caller hands over; it jumps to `entry`, a Rust function that never
    // returns.
    let raw = unsafe { hypercall(nr::VCPU_UP, u64::from(vcpu), __rhv_vcpu_start as *const () as u64, rsp as u64, arg) };
    result(raw).map(|_| ())
}

/// CPUID leaf `leaf`/`subleaf` as the hypervisor lets this domain see it
/// (its CPU policy: features the domain must not rely on are cleared, so
/// they stay valid on every host it may migrate to). `[eax, ebx, ecx, edx]`.
pub fn cpuid(leaf: u32, subleaf: u32) -> Result<[u32; 4], Error> {
    let mut b = [0u8; 16];
    // SAFETY: `b` is a live, writable local of the length passed.
    let raw = unsafe {
        super::raw::hypercall(crate::nr::CPUID, u64::from(leaf), u64::from(subleaf), b.as_mut_ptr() as u64, 16)
    };
    Error::from_raw(raw)?;
    let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Ok([w(0), w(4), w(8), w(12)])
}
