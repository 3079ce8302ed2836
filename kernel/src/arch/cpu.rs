//! Thin safe wrappers over single CPU instructions: port I/O, CPUID, MSRs,
//! control registers, TSC, interrupt flag and halting.
//!
//! Port I/O and MSR reads have device or fault side effects but no effect on
//! Rust memory safety, so they are safe functions here. Writes that change the
//! memory model (CR0/CR3/CR4, EFER, …) stay `unsafe`.

use core::arch::asm;

/// Reads a byte from an I/O port.
#[inline]
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port input touches no memory; ring 0 has I/O privilege.
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes a byte to an I/O port.
#[inline]
pub fn outb(port: u16, v: u8) {
    // SAFETY: port output touches no memory; ring 0 has I/O privilege.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) };
}

/// Reads a 16-bit word from an I/O port.
#[inline]
pub fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: as for `inb`.
    unsafe { asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes a 16-bit word to an I/O port.
#[inline]
pub fn outw(port: u16, v: u16) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags)) };
}

/// Reads a 32-bit doubleword from an I/O port.
#[inline]
pub fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as for `inb`.
    unsafe { asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes a 32-bit doubleword to an I/O port.
#[inline]
pub fn outl(port: u16, v: u32) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags)) };
}

/// The four registers CPUID returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes CPUID for `leaf`/`subleaf`.
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: CPUID only writes the named registers; rbx is saved around it
    // because LLVM reserves it.
    unsafe {
        asm!(
            "mov {tmp:r}, rbx",
            "cpuid",
            "xchg {tmp:r}, rbx",
            tmp = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags)
        )
    };
    Cpuid { eax, ebx, ecx, edx }
}

/// Reads a model-specific register. A non-existent MSR raises #GP, which the
/// hypervisor reports as a fatal exception: callers check CPUID first.
#[inline]
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDMSR writes only eax/edx.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// Some MSRs change how the CPU treats memory, paging or system calls; the
/// caller must know the write keeps the kernel's invariants.
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller upholds this function's contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

extern "C" {
    fn rhv_rdmsr_safe(msr: u32, out: *mut u64) -> u64;
    fn rhv_wrmsr_safe(msr: u32, value: u64) -> u64;
    static rhv_rdmsr_insn: u8;
    static rhv_rdmsr_fixup: u8;
    static rhv_wrmsr_insn: u8;
    static rhv_wrmsr_fixup: u8;
}

/// Reads an MSR the CPU may not have: `None` instead of a #GP.
pub fn rdmsr_safe(msr: u32) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: reading an MSR has no side effects on the MSRs probed here;
    // a #GP is turned into the error return by `msr_fixup`.
    let r = unsafe { rhv_rdmsr_safe(msr, &mut v) };
    (r == 0).then_some(v)
}

/// Writes an MSR the CPU may not have; false on #GP.
///
/// # Safety
/// As for [`wrmsr`]: the value must not break the kernel's assumptions.
pub unsafe fn wrmsr_safe(msr: u32, value: u64) -> bool {
    // SAFETY: the caller's contract; a #GP is recovered by `msr_fixup`.
    unsafe { rhv_wrmsr_safe(msr, value) == 0 }
}

/// Where a #GP at kernel address `rip` continues, if `rip` is one of the
/// guarded MSR instructions.
pub fn msr_fixup(rip: u64) -> Option<u64> {
    // Only the addresses of the asm labels are taken (no read).
    let (ri, rf, wi, wf) = (
        core::ptr::addr_of!(rhv_rdmsr_insn) as u64,
        core::ptr::addr_of!(rhv_rdmsr_fixup) as u64,
        core::ptr::addr_of!(rhv_wrmsr_insn) as u64,
        core::ptr::addr_of!(rhv_wrmsr_fixup) as u64,
    );
    if rip == ri {
        Some(rf)
    } else if rip == wi {
        Some(wf)
    } else {
        None
    }
}

/// A hardware random number (RDRAND), if the CPU has the instruction and
/// it delivers within ten tries.
pub fn rdrand() -> Option<u64> {
    if cpuid(1, 0).ecx & (1 << 30) == 0 {
        return None;
    }
    for _ in 0..10 {
        let (v, ok): (u64, u8);
        // SAFETY: CPUID says RDRAND exists; it writes only the output
        // register and CF (read by setc).
        unsafe { asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack)) };
        if ok != 0 {
            return Some(v);
        }
    }
    None
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC writes only eax/edx.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

macro_rules! read_cr {
    ($name:ident, $reg:literal) => {
        #[doc = concat!("Reads ", $reg, ".")]
        #[inline]
        pub fn $name() -> u64 {
            let v: u64;
            // SAFETY: reading a control register has no side effects.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
    };
}
read_cr!(read_cr0, "cr0");
read_cr!(read_cr2, "cr2");
read_cr!(read_cr3, "cr3");
read_cr!(read_cr4, "cr4");

/// Loads CR3 (switches address space, flushes non-global TLB entries).
///
/// # Safety
/// `pml4` must be the physical address of a valid PML4 that maps the running
/// code, stack and all memory the kernel will touch.
#[inline]
pub unsafe fn write_cr3(pml4: u64) {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) };
}

/// Writes CR4.
///
/// # Safety
/// The new value must keep paging and the kernel's memory model valid.
#[inline]
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Flushes the TLB entry for one virtual address.
#[inline]
pub fn invlpg(va: u64) {
    // SAFETY: dropping a TLB entry cannot break memory safety; the next access
    // re-walks the page tables.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// Is the interrupt flag set?
#[inline]
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: pushfq/pop only use the stack slot they push.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Disables maskable interrupts.
#[inline]
pub fn cli() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Enables maskable interrupts.
#[inline]
pub fn sti() {
    // SAFETY: the IDT is loaded before the first `sti` (see `arch::init`), so
    // every interrupt lands in a handler.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Enables interrupts and halts until the next one, atomically (no wake-up
/// can be lost between the two instructions).
#[inline]
pub fn sti_hlt() {
    // SAFETY: as for `sti`; `hlt` only waits.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) };
}

/// Halts with interrupts off, forever.
pub fn halt_forever() -> ! {
    loop {
        cli();
        // SAFETY: hlt only waits; with IF clear only NMI/SMI wake it.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}

/// Reads the current frame pointer (for backtraces).
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let v: u64;
    // SAFETY: copying rbp into a register has no side effects.
    unsafe { asm!("mov {}, rbp", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

const MSR_MCG_CAP: u32 = 0x179;
const MSR_MCG_STATUS: u32 = 0x17A;
const MSR_MCG_CTL: u32 = 0x17B;
const MSR_MC0_CTL: u32 = 0x400;
/// Banks reported (MCG_CAP.Count is 8 bits; real parts have up to ~32).
const MAX_MC_BANKS: u32 = 32;

/// Machine-check architecture, as the SDM's initialisation sequence (vol. 3
/// 17.8) has it: every error-reporting bank enabled, stale status cleared,
/// then CR4.MCE, so a machine check becomes #MC (a report on its own IST
/// stack) instead of a silent shutdown. Returns the number of banks, or
/// `None` without MCE/MCA.
pub fn init_machine_check() -> Option<u32> {
    let edx = cpuid(1, 0).edx;
    if edx & (1 << 7) == 0 {
        return None;
    }
    let mut banks = 0;
    if edx & (1 << 14) != 0 {
        let cap = rdmsr_safe(MSR_MCG_CAP)?;
        banks = (cap & 0xFF) as u32;
        // SAFETY: MCG_CTL and MCi_CTL only select which errors are reported,
        // MCi_STATUS only logs them; none touches memory or paging. A #GP
        // (an emulator without the MSR) is recovered.
        unsafe {
            if cap & (1 << 8) != 0 {
                wrmsr_safe(MSR_MCG_CTL, u64::MAX);
            }
            for i in 0..banks.min(MAX_MC_BANKS) {
                wrmsr_safe(MSR_MC0_CTL + 4 * i, u64::MAX);
                wrmsr_safe(MSR_MC0_CTL + 4 * i + 1, 0);
            }
        }
    }
    // SAFETY: CR4.MCE only enables the #MC exception, whose IDT entry (on
    // its own IST stack) is installed before this runs.
    unsafe { write_cr4(read_cr4() | (1 << 6)) };
    Some(banks)
}

/// Writes MCG_STATUS and every bank holding a valid error, for the #MC
/// report.
pub fn machine_check_report(w: &mut dyn core::fmt::Write) {
    let status = rdmsr_safe(MSR_MCG_STATUS).unwrap_or(0);
    let _ = write!(
        w,
        "    MCG_STATUS={status:#x} (RIPV {}, EIPV {}, MCIP {})\r\n",
        status & 1,
        (status >> 1) & 1,
        (status >> 2) & 1
    );
    let banks = rdmsr_safe(MSR_MCG_CAP).map_or(0, |c| (c & 0xFF) as u32);
    for i in 0..banks.min(MAX_MC_BANKS) {
        let Some(st) = rdmsr_safe(MSR_MC0_CTL + 4 * i + 1) else { continue };
        if st & (1 << 63) == 0 {
            continue;
        }
        let addr = if st & (1 << 58) != 0 { rdmsr_safe(MSR_MC0_CTL + 4 * i + 2).unwrap_or(0) } else { 0 };
        let _ = write!(
            w,
            "    bank {i}: MCi_STATUS={st:#018x} ({}{}{}) MCA code {:#06x} addr {addr:#x}\r\n",
            if st & (1 << 61) != 0 { "uncorrected" } else { "corrected" },
            if st & (1 << 57) != 0 { ", context corrupt" } else { "" },
            if st & (1 << 62) != 0 { ", overflow" } else { "" },
            st & 0xFFFF
        );
    }
}
