//! The `syscall` instruction as the hypercall gate, and FS/GS base access.

use super::{cpu, gdt};

const EFER: u32 = 0xC000_0080;
const STAR: u32 = 0xC000_0081;
const LSTAR: u32 = 0xC000_0082;
const SFMASK: u32 = 0xC000_0084;
const FS_BASE: u32 = 0xC000_0100;
const GS_BASE: u32 = 0xC000_0101;

extern "C" {
    fn rhv_syscall_entry();
    static mut rhv_kstack_top: u64;
}

/// Enables SYSCALL with entry `rhv_syscall_entry`; IF, TF, DF, AC and NT are
/// cleared on entry.
pub fn init() {
    // SAFETY: EFER.SCE only enables the instruction; STAR selectors match the
    // GDT layout (kernel CS 0x08, user base 0x18 so SS=0x23, CS=0x2b); LSTAR
    // points at the entry stub, which switches to the current kernel stack
    // before touching memory.
    unsafe {
        cpu::wrmsr(EFER, cpu::rdmsr(EFER) | 1);
        cpu::wrmsr(STAR, (u64::from(gdt::KERNEL_CS) << 32) | (0x18u64 << 48));
        cpu::wrmsr(LSTAR, rhv_syscall_entry as *const () as u64);
        cpu::wrmsr(SFMASK, (1 << 8) | (1 << 9) | (1 << 10) | (1 << 14) | (1 << 18));
    }
    if cpu::cpuid(0, 0).eax >= 7 && cpu::cpuid(7, 0).ebx & 1 != 0 {
        // SAFETY: CR4.FSGSBASE lets ring 3 set its own FS/GS base; the
        // hypervisor does not use FS or GS.
        unsafe { cpu::write_cr4(cpu::read_cr4() | (1 << 16)) };
    }
}

/// Sets the stack the syscall entry and ring-3 interrupts switch to.
pub fn set_kernel_stack(top: u64) {
    // SAFETY: single CPU; the entry stub reads this word only while IF is
    // clear, and it is written here with interrupts off (callers switch
    // threads with interrupts disabled).
    unsafe { core::ptr::addr_of_mut!(rhv_kstack_top).write_volatile(top) };
    gdt::set_rsp0(top);
}

const TSC_AUX: u32 = 0xC000_0103;

/// Whether the CPU has RDTSCP (and so the TSC_AUX MSR).
fn has_rdtscp() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    static CACHED: AtomicU8 = AtomicU8::new(0);
    match CACHED.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = cpu::cpuid(0x8000_0000, 0).eax >= 0x8000_0001 && cpu::cpuid(0x8000_0001, 0).edx & (1 << 27) != 0;
            CACHED.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Sets what RDTSCP returns in ECX (the running vCPU's index).
pub fn set_tsc_aux(v: u32) {
    if has_rdtscp() {
        // SAFETY: TSC_AUX only feeds RDTSCP/RDPID; nothing in the hypervisor
        // depends on it.
        unsafe { cpu::wrmsr(TSC_AUX, u64::from(v)) };
    }
}

/// Reads FS and GS base.
pub fn fs_gs_base() -> (u64, u64) {
    (cpu::rdmsr(FS_BASE), cpu::rdmsr(GS_BASE))
}

/// Writes FS and GS base (any value: a non-canonical one makes the write
/// fault, so callers pass values the guest itself could have set).
pub fn set_fs_gs_base(fs: u64, gs: u64) {
    let canon = |v: u64| ((v as i64) << 16 >> 16) as u64 == v;
    // SAFETY: FS/GS bases only affect FS:/GS:-relative accesses, which the
    // hypervisor does not make; non-canonical values are replaced by 0.
    unsafe {
        cpu::wrmsr(FS_BASE, if canon(fs) { fs } else { 0 });
        cpu::wrmsr(GS_BASE, if canon(gs) { gs } else { 0 });
    }
}
