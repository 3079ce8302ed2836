//! The raw hypercall: the only `syscall` instruction in the runtime.

use core::arch::asm;

/// Makes hypercall `nr` with six arguments and returns RAX as the hypervisor
/// left it: a value `>= 0`, or a negated [`Error`](crate::Error) (decode it
/// with [`Error::from_raw`](crate::Error::from_raw)).
///
/// Arguments a call does not use are ignored by the hypervisor. RCX and R11
/// are clobbered by `syscall`; every other register is preserved.
///
/// # Safety
///
/// A hypercall may write guest memory (`console_read` fills a buffer) or
/// start code (`vcpu_up`) at any address it is given, and `exit` never
/// returns. The caller must make sure that, for the call `nr` names, the
/// arguments do not make the hypervisor write to memory Rust code owns or
/// borrows, nor start a vCPU on code or a stack that is not meant for it.
/// Invalid addresses (null, kernel half, non-canonical, beyond guest memory)
/// are safe: the hypervisor rejects them with an error.
#[inline(always)]
pub unsafe fn hypercall6(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64) -> i64 {
    let ret: i64;
    // SAFETY: `syscall` enters the hypervisor, which returns to the next
    // instruction with the result in RAX, RCX and R11 overwritten and all
    // other registers (and the stack, which it never touches) preserved. No
    // `nomem`: the call may read or write guest memory through its
    // arguments, which the caller vouches for (see the function's contract).
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as i64 => ret,
            in("rdi") a1,
            in("rsi") a2,
            in("rdx") a3,
            in("r10") a4,
            in("r8") a5,
            in("r9") a6,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// [`hypercall6`] with unused arguments zero.
///
/// # Safety
///
/// As for [`hypercall6`].
#[inline(always)]
pub unsafe fn hypercall(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall6(nr, a1, a2, a3, a4, 0, 0) }
}
