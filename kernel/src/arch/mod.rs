//! The architecture layer: everything that executes privileged instructions
//! or touches hardware tables. Small safe wrappers; unsafe stays in here and
//! in `drivers/` and `mm.rs`.

pub mod apic;
pub mod cpu;
pub mod cpuid_fault;
pub mod fpu;
pub mod gdt;
pub mod idt;
pub mod ioapic;
pub mod legacy;
pub mod paging;
pub mod sync;
pub mod syscall;
pub mod trap;

core::arch::global_asm!(include_str!("boot.S"), options(att_syntax));
core::arch::global_asm!(include_str!("trap.S"), options(att_syntax));
core::arch::global_asm!(include_str!("switch.S"), options(att_syntax));

extern "C" {
    static boot_tsc: u64;
}

/// TSC value at the image's first instruction.
pub fn boot_tsc_value() -> u64 {
    // SAFETY: written once by the entry code before any Rust runs; read-only after.
    unsafe { core::ptr::addr_of!(boot_tsc).read_volatile() }
}

/// Switches to the stack whose top is `top` and calls `f` there; never returns.
pub fn run_on_stack(top: u64, f: extern "C" fn() -> !) -> ! {
    // SAFETY: `top` is the top of a mapped, otherwise unused kernel stack
    // (16-byte aligned); `f` never returns, so nothing on the old stack is
    // used again.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {f}",
            "ud2",
            top = in(reg) top,
            f = in(reg) f,
            options(noreturn)
        )
    }
}

/// Turns on SMEP (no executing user pages in ring 0), SMAP (no touching user
/// pages from ring 0: guest memory is copied through the direct map instead)
/// and UMIP (no SGDT/SIDT and friends from ring 3) where the CPU has them.
pub fn enable_cpu_protections() {
    if cpu::cpuid(0, 0).eax < 7 {
        return;
    }
    let l7 = cpu::cpuid(7, 0);
    let mut cr4 = cpu::read_cr4();
    if l7.ebx & (1 << 7) != 0 {
        cr4 |= 1 << 20;
    }
    if l7.ecx & (1 << 2) != 0 {
        cr4 |= 1 << 11;
    }
    if l7.ebx & (1 << 20) != 0 {
        cr4 |= 1 << 21; // SMAP: guest memory is only ever reached through the direct map
    }
    // SAFETY: SMEP and UMIP only restrict what ring 3 pages and code may do;
    // the hypervisor never executes user pages or relies on those instructions
    // from ring 3.
    unsafe { cpu::write_cr4(cr4) };
}

/// Whether SMEP and SMAP are on.
pub fn smep_smap_enabled() -> (bool, bool) {
    let cr4 = cpu::read_cr4();
    (cr4 & (1 << 20) != 0, cr4 & (1 << 21) != 0)
}
