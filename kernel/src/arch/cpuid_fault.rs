//! CPUID faulting: with it on, a `cpuid` instruction at CPL 3 raises #GP,
//! so the hypervisor answers guests' CPUID from their domain's CPU policy
//! (`hypercall::emulate_cpuid`) instead of letting them see the host's
//! features. Probed as Intel documents it (MSR_PLATFORM_INFO bit 31) with
//! guarded MSR accesses, since not every CPU or emulator has the MSRs.

use core::sync::atomic::{AtomicBool, Ordering};

use super::cpu;

const MSR_PLATFORM_INFO: u32 = 0xCE;
const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;
const PLATFORM_INFO_CPUID_FAULTING: u64 = 1 << 31;
const MISC_CPUID_FAULTING: u64 = 1 << 0;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns CPUID faulting on where the CPU has it; true if it is on.
pub fn init() -> bool {
    let supported = cpu::rdmsr_safe(MSR_PLATFORM_INFO).is_some_and(|v| v & PLATFORM_INFO_CPUID_FAULTING != 0);
    let on = supported
        && cpu::rdmsr_safe(MSR_MISC_FEATURES_ENABLES).is_some_and(|v| {
            // SAFETY: bit 0 only makes CPL>0 CPUID fault; the kernel runs at
            // CPL 0 and is unaffected.
            unsafe { cpu::wrmsr_safe(MSR_MISC_FEATURES_ENABLES, v | MISC_CPUID_FAULTING) }
        })
        && cpu::rdmsr_safe(MSR_MISC_FEATURES_ENABLES).is_some_and(|v| v & MISC_CPUID_FAULTING != 0);
    ENABLED.store(on, Ordering::Relaxed);
    on
}

/// Is CPUID faulting on?
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}
