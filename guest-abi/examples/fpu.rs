//! `fpu`: proves that the hypervisor saves and restores FPU/SSE state per
//! vCPU. Loads xmm0–xmm15, the eight x87 registers, MXCSR and the x87
//! control word with values derived from `seed=` (default 1), yields and
//! spins (`spin=` iterations, default 2000000) so other vCPUs and domains
//! run and timer preemptions hit, and checks every register still holds its
//! value; repeats for `ms` milliseconds (default 3000). With more than one
//! vCPU every vCPU runs the same check with its own values (`seed + id`).
//!
//! ```text
//! fpu: start name=<name> seed=<s> ms=<ms> spin=<n> vcpus=<v>
//! fpu: seed=<s> ok after <n> checks
//! fpu: seed=<s> CORRUPTED vcpu=<i> <register> want=<hex> got=<hex> after <n> checks
//! ```
//! Exit status 0 if every check passed, 1 otherwise.
//!
//! With `regs=1` it checks the general registers instead, on vCPU 0: loads
//! rax, rbx, rcx, rdx, rsi, rdi, rbp and r8–r15 with values derived from
//! `seed`, sets DF and CF in RFLAGS and (where CPUID reports FSGSBASE) the
//! FS and GS base, then spins `spin` iterations (default 200000) with no
//! hypercall, so only timer preemptions take it off the CPU, and checks
//! every one; repeats for `ms` milliseconds. A round that took 5 ms longer
//! than the quickest one counts as preempted (a time slice is 10 ms):
//!
//! ```text
//! fpu: regs seed=<s> ok after <n> checks, <p> preempted, fs/gs base checked|not checked (no FSGSBASE)
//! fpu: regs seed=<s> CORRUPTED <register> want=<hex> got=<hex> after <n> checks
//! ```
//!
//! The target is soft-float: compiled Rust never touches these registers, so
//! the check is one `asm!` block per round that works through memory only
//! (no xmm-class operands). It saves the caller's state with FXSAVE first and
//! restores it with FXRSTOR last, so it clobbers nothing it does not declare.
#![no_std]
#![no_main]

extern crate alloc;

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use guest_abi::nr;
use guest_abi::rt::prelude::*;

guest_abi::main!(fpu);

/// Register values for one round: loaded before, read back after.
#[repr(C, align(16))]
#[derive(Clone, Copy, PartialEq, Eq)]
struct Regs {
    xmm: [[u64; 2]; 16],
    x87: [u64; 8],
    mxcsr: u32,
    fcw: u16,
    _pad: [u8; 10],
}

const XMM_OFF: usize = 0;
const X87_OFF: usize = 256;
const MXCSR_OFF: usize = 320;
const FCW_OFF: usize = 324;

const _: () = {
    assert!(core::mem::offset_of!(Regs, xmm) == XMM_OFF);
    assert!(core::mem::offset_of!(Regs, x87) == X87_OFF);
    assert!(core::mem::offset_of!(Regs, mxcsr) == MXCSR_OFF);
    assert!(core::mem::offset_of!(Regs, fcw) == FCW_OFF);
};

/// FXSAVE area (512 bytes, 16-byte aligned).
#[repr(C, align(16))]
struct FxArea([u8; 512]);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Regs {
    fn from_seed(seed: u64) -> Regs {
        let mut r = Regs { xmm: [[0; 2]; 16], x87: [0; 8], mxcsr: 0, fcw: 0, _pad: [0; 10] };
        for (i, x) in r.xmm.iter_mut().enumerate() {
            *x = [mix(seed ^ ((i as u64) << 8)), mix(!seed ^ ((i as u64) << 16))];
        }
        for (i, f) in r.x87.iter_mut().enumerate() {
            // A normal double in [1, 2): loads and stores back exactly.
            *f = 0x3ff0_0000_0000_0000 | (mix(seed ^ 0xf00 ^ i as u64) & 0x000f_ffff_ffff_ffff);
        }
        let rc = (seed & 3) as u32;
        // All exceptions masked, rounding control from the seed, FZ set for
        // odd seeds (DAZ left alone: not every CPU has it).
        r.mxcsr = 0x1f80 | (rc << 13) | (((seed >> 2) & 1) as u32) << 15;
        // All exceptions masked, 64-bit precision, rounding from the seed.
        r.fcw = 0x037f | ((rc as u16) << 10);
        r
    }
}

/// Loads `want`, yields, spins `spin` iterations, yields again, and stores
/// the registers into `got`.
fn round(want: &Regs, got: &mut Regs, spin: u64) {
    let mut save = FxArea([0; 512]);
    // SAFETY: reads `want` and writes `got` and `save` (valid, aligned as
    // FXSAVE/MOVDQU/FSTP need) and nothing else; every register it changes
    // is either declared (rax, rcx, r11 for `syscall`, rcx for the spin) or
    // restored by the final FXRSTOR (x87, MXCSR, xmm0–15). The hypercalls
    // are `yield`, which takes no memory arguments.
    unsafe {
        asm!(
            "fxsave [{save}]",
            "fninit",
            "fldcw [{want} + {fcw}]",
            "ldmxcsr [{want} + {mxcsr}]",
            "movdqu xmm0, [{want} + {xmm} + 0]",
            "movdqu xmm1, [{want} + {xmm} + 16]",
            "movdqu xmm2, [{want} + {xmm} + 32]",
            "movdqu xmm3, [{want} + {xmm} + 48]",
            "movdqu xmm4, [{want} + {xmm} + 64]",
            "movdqu xmm5, [{want} + {xmm} + 80]",
            "movdqu xmm6, [{want} + {xmm} + 96]",
            "movdqu xmm7, [{want} + {xmm} + 112]",
            "movdqu xmm8, [{want} + {xmm} + 128]",
            "movdqu xmm9, [{want} + {xmm} + 144]",
            "movdqu xmm10, [{want} + {xmm} + 160]",
            "movdqu xmm11, [{want} + {xmm} + 176]",
            "movdqu xmm12, [{want} + {xmm} + 192]",
            "movdqu xmm13, [{want} + {xmm} + 208]",
            "movdqu xmm14, [{want} + {xmm} + 224]",
            "movdqu xmm15, [{want} + {xmm} + 240]",
            "fld qword ptr [{want} + {x87} + 0]",
            "fld qword ptr [{want} + {x87} + 8]",
            "fld qword ptr [{want} + {x87} + 16]",
            "fld qword ptr [{want} + {x87} + 24]",
            "fld qword ptr [{want} + {x87} + 32]",
            "fld qword ptr [{want} + {x87} + 40]",
            "fld qword ptr [{want} + {x87} + 48]",
            "fld qword ptr [{want} + {x87} + 56]",
            // yield, spin (timer preemptions land here), yield
            "mov eax, {yield_nr}",
            "syscall",
            "mov rcx, {spin}",
            "2:",
            "sub rcx, 1",
            "jnc 2b",
            "mov eax, {yield_nr}",
            "syscall",
            "fstp qword ptr [{got} + {x87} + 56]",
            "fstp qword ptr [{got} + {x87} + 48]",
            "fstp qword ptr [{got} + {x87} + 40]",
            "fstp qword ptr [{got} + {x87} + 32]",
            "fstp qword ptr [{got} + {x87} + 24]",
            "fstp qword ptr [{got} + {x87} + 16]",
            "fstp qword ptr [{got} + {x87} + 8]",
            "fstp qword ptr [{got} + {x87} + 0]",
            "movdqu [{got} + {xmm} + 0], xmm0",
            "movdqu [{got} + {xmm} + 16], xmm1",
            "movdqu [{got} + {xmm} + 32], xmm2",
            "movdqu [{got} + {xmm} + 48], xmm3",
            "movdqu [{got} + {xmm} + 64], xmm4",
            "movdqu [{got} + {xmm} + 80], xmm5",
            "movdqu [{got} + {xmm} + 96], xmm6",
            "movdqu [{got} + {xmm} + 112], xmm7",
            "movdqu [{got} + {xmm} + 128], xmm8",
            "movdqu [{got} + {xmm} + 144], xmm9",
            "movdqu [{got} + {xmm} + 160], xmm10",
            "movdqu [{got} + {xmm} + 176], xmm11",
            "movdqu [{got} + {xmm} + 192], xmm12",
            "movdqu [{got} + {xmm} + 208], xmm13",
            "movdqu [{got} + {xmm} + 224], xmm14",
            "movdqu [{got} + {xmm} + 240], xmm15",
            "stmxcsr [{got} + {mxcsr}]",
            "fnstcw [{got} + {fcw}]",
            "fxrstor [{save}]",
            want = in(reg) want as *const Regs,
            got = in(reg) got as *mut Regs,
            save = in(reg) &mut save as *mut FxArea,
            spin = in(reg) spin,
            yield_nr = const nr::YIELD,
            xmm = const XMM_OFF,
            x87 = const X87_OFF,
            mxcsr = const MXCSR_OFF,
            fcw = const FCW_OFF,
            out("rax") _,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
}

/// The first register that differs, with wanted and found values.
fn first_diff(want: &Regs, got: &Regs) -> Option<(&'static str, usize, u128, u128)> {
    let wide = |x: [u64; 2]| u128::from(x[1]) << 64 | u128::from(x[0]);
    if let Some(i) = (0..16).find(|&i| want.xmm[i] != got.xmm[i]) {
        return Some(("xmm", i, wide(want.xmm[i]), wide(got.xmm[i])));
    }
    if let Some(i) = (0..8).find(|&i| want.x87[i] != got.x87[i]) {
        return Some(("x87-", i, want.x87[i].into(), got.x87[i].into()));
    }
    // Bits 0-5 are sticky exception flags; none should be raised, compare all.
    if want.mxcsr != got.mxcsr {
        return Some(("mxcsr", 0, want.mxcsr.into(), got.mxcsr.into()));
    }
    // Bits 6, 13-15 of the control word are reserved; compare the rest.
    if want.fcw & 0x1f3f != got.fcw & 0x1f3f {
        return Some(("fcw", 0, want.fcw.into(), got.fcw.into()));
    }
    None
}

/// Per-vCPU outcome: checks passed, or `u64::MAX` once corrupted.
static CHECKS: [AtomicU64; guest_abi::MAX_VCPUS as usize] =
    [const { AtomicU64::new(0) }; guest_abi::MAX_VCPUS as usize];
/// Per-vCPU "finished" flags.
static DONE: [AtomicU64; guest_abi::MAX_VCPUS as usize] = [const { AtomicU64::new(0) }; guest_abi::MAX_VCPUS as usize];

/// Runs checks on the calling vCPU until `until` (monotonic ns); returns
/// false (having printed why) on corruption.
fn check_loop(vcpu: u32, seed: u64, spin: u64, until: u64) -> bool {
    let want = Regs::from_seed(seed);
    let mut got = want;
    let mut n = 0u64;
    let ok = loop {
        got.xmm = [[0; 2]; 16];
        got.x87 = [0; 8];
        round(&want, &mut got, spin);
        if let Some((reg, i, w, g)) = first_diff(&want, &got) {
            let reg_i = if reg == "xmm" || reg == "x87-" { i as i64 } else { -1 };
            if reg_i >= 0 {
                println!("fpu: seed={seed} CORRUPTED vcpu={vcpu} {reg}{reg_i} want={w:#x} got={g:#x} after {n} checks");
            } else {
                println!("fpu: seed={seed} CORRUPTED vcpu={vcpu} {reg} want={w:#x} got={g:#x} after {n} checks");
            }
            break false;
        }
        n += 1;
        CHECKS[vcpu as usize].store(n, Ordering::Relaxed);
        if now() >= until {
            break true;
        }
    };
    if !ok {
        CHECKS[vcpu as usize].store(u64::MAX, Ordering::Relaxed);
    }
    DONE[vcpu as usize].store(1, Ordering::Release);
    ok
}

/// (seed, spin, until) for the secondary vCPUs.
static PARAMS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

fn secondary(vcpu: u64) {
    let seed = PARAMS[0].load(Ordering::Acquire).wrapping_add(vcpu);
    check_loop(vcpu as u32, seed, PARAMS[1].load(Ordering::Relaxed), PARAMS[2].load(Ordering::Relaxed));
}

/// General registers for [`gpr_round`], in this order: rax, rbx, rcx, rdx,
/// rsi, rdi, rbp, r8–r15, then FS base, GS base, RFLAGS.
const GPR_NAMES: [&str; 18] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "fs_base",
    "gs_base", "rflags",
];

/// What [`gpr_round`] reads and writes (offsets fixed for the `asm!`).
#[repr(C)]
struct GprFrame {
    /// Values to load (RFLAGS: unused).
    want: [u64; 18],
    /// Values found after the spin.
    got: [u64; 18],
    /// Spin iterations.
    spin: u64,
    /// Non-zero: set and check FS/GS base (CR4.FSGSBASE is on).
    fsgs: u64,
    /// FS and GS base before the round, restored after it.
    saved: [u64; 2],
}

const GPR_WANT: usize = 0;
const GPR_GOT: usize = 18 * 8;
const GPR_SPIN: usize = 36 * 8;
const GPR_FSGS: usize = 37 * 8;
const GPR_SAVED: usize = 38 * 8;

const _: () = {
    assert!(core::mem::offset_of!(GprFrame, want) == GPR_WANT);
    assert!(core::mem::offset_of!(GprFrame, got) == GPR_GOT);
    assert!(core::mem::offset_of!(GprFrame, spin) == GPR_SPIN);
    assert!(core::mem::offset_of!(GprFrame, fsgs) == GPR_FSGS);
    assert!(core::mem::offset_of!(GprFrame, saved) == GPR_SAVED);
};

/// RFLAGS bits the round sets and expects back: CF (bit 0) and DF (bit 10).
const GPR_FLAGS: u64 = (1 << 0) | (1 << 10);

/// Loads every general register (and FS/GS base when `fsgs`) from
/// `f.want`, sets CF and DF, spins `f.spin` iterations with nothing but a
/// counter in memory, and stores what the registers hold into `f.got`.
fn gpr_round(f: &mut GprFrame) {
    // SAFETY: the block reads and writes only `*f` (through RDI, kept on the
    // stack while every register holds a pattern) and its own stack slots,
    // which it pops again. RBX and RBP, which cannot be declared, are pushed
    // first and popped last; every other register it changes is declared.
    // DF is cleared again before it ends (the ABI needs DF clear), the
    // arithmetic flags are declared clobbered (no `preserves_flags`), and
    // FS/GS base are put back as they were (the runtime does not use them
    // anyway). WRFSBASE/RDFSBASE run only when `fsgs` says CR4.FSGSBASE is
    // on (CPUID reports FSGSBASE).
    unsafe {
        asm!(
            "push rbx",
            "push rbp",
            "push rdi",
            "push qword ptr [rdi + {spin}]",
            // Stack: [rsp] = counter, [rsp + 8] = frame pointer.
            "cmp qword ptr [rdi + {fsgs}], 0",
            "je 3f",
            "rdfsbase rax",
            "mov [rdi + {saved}], rax",
            "rdgsbase rax",
            "mov [rdi + {saved} + 8], rax",
            "mov rax, [rdi + {want} + 15 * 8]",
            "wrfsbase rax",
            "mov rax, [rdi + {want} + 16 * 8]",
            "wrgsbase rax",
            "3:",
            "std",
            "stc",
            "mov rax, [rdi + {want} + 0 * 8]",
            "mov rbx, [rdi + {want} + 1 * 8]",
            "mov rcx, [rdi + {want} + 2 * 8]",
            "mov rdx, [rdi + {want} + 3 * 8]",
            "mov rsi, [rdi + {want} + 4 * 8]",
            "mov rbp, [rdi + {want} + 6 * 8]",
            "mov r8, [rdi + {want} + 7 * 8]",
            "mov r9, [rdi + {want} + 8 * 8]",
            "mov r10, [rdi + {want} + 9 * 8]",
            "mov r11, [rdi + {want} + 10 * 8]",
            "mov r12, [rdi + {want} + 11 * 8]",
            "mov r13, [rdi + {want} + 12 * 8]",
            "mov r14, [rdi + {want} + 13 * 8]",
            "mov r15, [rdi + {want} + 14 * 8]",
            "mov rdi, [rdi + {want} + 5 * 8]",
            // The spin: DEC leaves CF alone; timer interrupts land here.
            "2:",
            "dec qword ptr [rsp]",
            "jnz 2b",
            "pushfq",
            // Stack: [rsp] = RFLAGS, [rsp + 8] = counter, [rsp + 16] = frame.
            "xchg rdi, [rsp + 16]",
            "mov [rdi + {got} + 0 * 8], rax",
            "mov [rdi + {got} + 1 * 8], rbx",
            "mov [rdi + {got} + 2 * 8], rcx",
            "mov [rdi + {got} + 3 * 8], rdx",
            "mov [rdi + {got} + 4 * 8], rsi",
            "mov [rdi + {got} + 6 * 8], rbp",
            "mov [rdi + {got} + 7 * 8], r8",
            "mov [rdi + {got} + 8 * 8], r9",
            "mov [rdi + {got} + 9 * 8], r10",
            "mov [rdi + {got} + 10 * 8], r11",
            "mov [rdi + {got} + 11 * 8], r12",
            "mov [rdi + {got} + 12 * 8], r13",
            "mov [rdi + {got} + 13 * 8], r14",
            "mov [rdi + {got} + 14 * 8], r15",
            "mov rax, [rsp + 16]",
            "mov [rdi + {got} + 5 * 8], rax",
            "pop rax",
            "mov [rdi + {got} + 17 * 8], rax",
            "cld",
            "cmp qword ptr [rdi + {fsgs}], 0",
            "je 4f",
            "rdfsbase rax",
            "mov [rdi + {got} + 15 * 8], rax",
            "rdgsbase rax",
            "mov [rdi + {got} + 16 * 8], rax",
            "mov rax, [rdi + {saved}]",
            "wrfsbase rax",
            "mov rax, [rdi + {saved} + 8]",
            "wrgsbase rax",
            "4:",
            "add rsp, 16",
            "pop rbp",
            "pop rbx",
            inout("rdi") f as *mut GprFrame => _,
            want = const GPR_WANT,
            got = const GPR_GOT,
            spin = const GPR_SPIN,
            fsgs = const GPR_FSGS,
            saved = const GPR_SAVED,
            out("rax") _,
            out("rcx") _,
            out("rdx") _,
            out("rsi") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
        );
    }
}

/// The `regs=1` mode: general registers, RFLAGS and FS/GS base across
/// preemptions.
fn gpr_check(seed: u64, ms: u64, spin: u64) -> i32 {
    // FSGSBASE as the domain's CPU policy reports it (the hypervisor turns
    // CR4.FSGSBASE on whenever the CPU has it).
    let fsgs = guest_abi::rt::cpuid(7, 0).is_ok_and(|l7| l7[1] & 1 != 0);
    let mut f = GprFrame { want: [0; 18], got: [0; 18], spin: spin.max(1), fsgs: u64::from(fsgs), saved: [0; 2] };
    for (i, w) in f.want.iter_mut().enumerate().take(15) {
        *w = mix(seed ^ ((i as u64) << 12));
    }
    // Canonical user-half addresses for FS and GS base.
    f.want[15] = 0x0000_1000_0000_0000 | (mix(seed ^ 0xf5) & 0x0000_0fff_ffff_f000);
    f.want[16] = 0x0000_2000_0000_0000 | (mix(seed ^ 0x65) & 0x0000_0fff_ffff_f000);
    let until = now().saturating_add(ms.saturating_mul(1_000_000));
    let mut times: alloc::vec::Vec<u64> = alloc::vec::Vec::new();
    let mut n = 0u64;
    loop {
        f.got = [0; 18];
        let t0 = now();
        gpr_round(&mut f);
        times.push(now() - t0);
        let check = |i: usize, want: u64, got: u64| {
            if want != got {
                println!(
                    "fpu: regs seed={seed} CORRUPTED {} want={want:#x} got={got:#x} after {n} checks",
                    GPR_NAMES[i]
                );
                return false;
            }
            true
        };
        let regs = if fsgs { 17 } else { 15 };
        if !(0..regs).all(|i| check(i, f.want[i], f.got[i])) || !check(17, GPR_FLAGS, f.got[17] & GPR_FLAGS) {
            return 1;
        }
        n += 1;
        if now() >= until {
            break;
        }
    }
    let quickest = times.iter().copied().min().unwrap_or(0);
    let preempted = times.iter().filter(|&&t| t > quickest + 5_000_000).count();
    let base = if fsgs { "checked" } else { "not checked (no FSGSBASE)" };
    println!("fpu: regs seed={seed} ok after {n} checks, {preempted} preempted, fs/gs base {base}");
    0
}

fn fpu(env: &Env) -> i32 {
    let seed = env.arg_u64_or("seed", 1);
    if env.arg_u64_or("regs", 0) == 1 {
        let ms = env.arg_u64_or("ms", 3000);
        let spin = env.arg_u64_or("spin", 200_000);
        println!("fpu: regs start name={} seed={seed} ms={ms} spin={spin}", env.name());
        return gpr_check(seed, ms, spin);
    }
    let ms = env.arg_u64_or("ms", 3000);
    let spin = env.arg_u64_or("spin", 2_000_000);
    let vcpus = env.vcpus().clamp(1, guest_abi::MAX_VCPUS);
    println!("fpu: start name={} seed={seed} ms={ms} spin={spin} vcpus={vcpus}", env.name());
    let until = now().saturating_add(ms.saturating_mul(1_000_000));
    PARAMS[1].store(spin, Ordering::Relaxed);
    PARAMS[2].store(until, Ordering::Relaxed);
    PARAMS[0].store(seed, Ordering::Release);
    let mut started = 1;
    for v in 1..vcpus {
        match spawn_vcpu(v, secondary, u64::from(v)) {
            Ok(()) => started += 1,
            Err(e) => {
                println!("fpu: cannot start vCPU {v}: {e:?}");
                break;
            }
        }
    }
    let mut ok = check_loop(0, seed, spin, until);
    // Wait for the others (they stop at the same deadline), a few seconds
    // of grace at most.
    let grace = now().saturating_add(5_000_000_000);
    while (1..started).any(|v| DONE[v as usize].load(Ordering::Acquire) == 0) && now() < grace {
        if sleep_ms(10) & event::SHUTDOWN != 0 {
            println!("fpu: shutting down");
            return 1;
        }
    }
    let mut total = 0u64;
    for v in 0..started {
        match CHECKS[v as usize].load(Ordering::Relaxed) {
            u64::MAX => ok = false,
            0 => {
                println!("fpu: seed={seed} vCPU {v} made no check");
                ok = false;
            }
            n => total += n,
        }
    }
    if ok {
        println!("fpu: seed={seed} ok after {total} checks");
        0
    } else {
        1
    }
}
