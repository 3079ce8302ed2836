//! Local APIC (x2APIC through MSRs when the CPU has it, xAPIC MMIO otherwise)
//! and its timer.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::cpu;

const IA32_APIC_BASE: u32 = 0x1B;
const REG_ID: u32 = 0x20;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CUR: u32 = 0x390;
const REG_TIMER_DIV: u32 = 0x3E0;

/// Vector of the APIC timer.
pub const TIMER_VECTOR: u8 = 0x20;
/// Vector of spurious interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xFF;
/// Vector of APIC errors.
pub const ERROR_VECTOR: u8 = 0xFE;

const MODE_NONE: u8 = 0;
const MODE_XAPIC: u8 = 1;
const MODE_X2APIC: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(MODE_NONE);
static MMIO: AtomicU64 = AtomicU64::new(0);
static TIMER_HZ: AtomicU32 = AtomicU32::new(0);

/// Which interface is in use ("x2APIC" / "xAPIC").
pub fn mode_name() -> &'static str {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => "x2APIC",
        MODE_XAPIC => "xAPIC",
        _ => "none",
    }
}

fn read(reg: u32) -> u32 {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => cpu::rdmsr(0x800 + (reg >> 4)) as u32,
        MODE_XAPIC => {
            let base = MMIO.load(Ordering::Relaxed);
            // SAFETY: `base` maps the APIC's 4 KiB register page uncached
            // (set up in `init`); reg < 0x400 is inside it and 16-byte aligned.
            unsafe { ((base + u64::from(reg)) as *const u32).read_volatile() }
        }
        _ => 0,
    }
}

fn write(reg: u32, v: u32) {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: x2APIC register MSRs only program the local APIC.
        MODE_X2APIC => unsafe { cpu::wrmsr(0x800 + (reg >> 4), u64::from(v)) },
        MODE_XAPIC => {
            let base = MMIO.load(Ordering::Relaxed);
            // SAFETY: as in `read`.
            unsafe { ((base + u64::from(reg)) as *mut u32).write_volatile(v) }
        }
        _ => {}
    }
}

/// Enables the local APIC. `map_mmio` maps a physical page uncached and
/// returns its virtual address (needed for xAPIC only).
pub fn init(map_mmio: impl FnOnce(u64) -> Option<u64>) -> Result<(), &'static str> {
    let f = cpu::cpuid(1, 0);
    if f.edx & (1 << 9) == 0 {
        return Err("CPU has no local APIC");
    }
    let base_msr = cpu::rdmsr(IA32_APIC_BASE);
    if f.ecx & (1 << 21) != 0 {
        // SAFETY: setting the enable and x2APIC bits switches the register
        // interface only; no memory is affected.
        unsafe { cpu::wrmsr(IA32_APIC_BASE, base_msr | (1 << 11) | (1 << 10)) };
        MODE.store(MODE_X2APIC, Ordering::Relaxed);
    } else {
        // SAFETY: as above, enable bit only.
        unsafe { cpu::wrmsr(IA32_APIC_BASE, base_msr | (1 << 11)) };
        let va = map_mmio(base_msr & 0x000F_FFFF_FFFF_F000).ok_or("cannot map the APIC registers")?;
        MMIO.store(va, Ordering::Relaxed);
        MODE.store(MODE_XAPIC, Ordering::Relaxed);
    }
    write(REG_TPR, 0);
    write(REG_LVT_TIMER, 1 << 16);
    write(REG_LVT_ERROR, u32::from(ERROR_VECTOR));
    // LINT0: masked (the legacy PIC is masked too); LINT1: NMI.
    write(REG_LVT_LINT0, 1 << 16);
    write(REG_LVT_LINT1, 4 << 8);
    write(REG_SVR, (1 << 8) | u32::from(SPURIOUS_VECTOR));
    eoi();
    Ok(())
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    let raw = read(REG_ID);
    if MODE.load(Ordering::Relaxed) == MODE_X2APIC {
        raw
    } else {
        raw >> 24
    }
}

/// Signals end of interrupt.
#[inline]
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Measures the timer's input clock against the TSC and starts it periodic at
/// `hz`. Returns the timer's input frequency in Hz.
pub fn start_timer(hz: u32, tsc_hz: u64) -> u64 {
    write(REG_TIMER_DIV, 0b1011); // divide by 1
    write(REG_LVT_TIMER, (1 << 16) | u32::from(TIMER_VECTOR)); // masked one-shot
    let window = tsc_hz / 100; // 10 ms
    write(REG_TIMER_INIT, u32::MAX);
    let t0 = cpu::rdtsc();
    while cpu::rdtsc().wrapping_sub(t0) < window {
        core::hint::spin_loop();
    }
    let elapsed = u32::MAX - read(REG_TIMER_CUR);
    let dt = cpu::rdtsc().wrapping_sub(t0).max(1);
    let bus_hz = (u128::from(elapsed) * u128::from(tsc_hz) / u128::from(dt)) as u64;
    let count = (bus_hz / u64::from(hz.max(1))).clamp(1, u64::from(u32::MAX)) as u32;
    write(REG_LVT_TIMER, (1 << 17) | u32::from(TIMER_VECTOR)); // periodic
    write(REG_TIMER_INIT, count);
    TIMER_HZ.store(hz, Ordering::Relaxed);
    bus_hz
}

/// The periodic timer rate, 0 before `start_timer`.
pub fn timer_hz() -> u32 {
    TIMER_HZ.load(Ordering::Relaxed)
}
