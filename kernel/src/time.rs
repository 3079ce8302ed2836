//! Time: TSC frequency, the monotonic nanosecond clock and wall time.

use core::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};

use guest_abi::time::TscScale;

use crate::arch::{cpu, legacy};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static SCALE_MUL: AtomicU64 = AtomicU64::new(0);
static SCALE_SHIFT: AtomicU8 = AtomicU8::new(0);
static BOOT_UNIX: AtomicI64 = AtomicI64::new(0);
static SOURCE: AtomicU8 = AtomicU8::new(0);

const SOURCES: [&str; 4] =
    ["not calibrated", "CPUID leaf 0x15", "hypervisor CPUID leaf 0x40000010", "calibrated against the PIT"];

/// Determines the TSC frequency: CPUID leaf 0x15, else the hypervisor timing
/// leaf, else a PIT measurement.
pub fn init() {
    // No x86_64 TSC runs below 50 MHz or above 20 GHz: anything outside is
    // a broken source (a missing PIT reads as instantly expired).
    let plausible = |hz: &u64| (50_000_000..=20_000_000_000).contains(hz);
    let (hz, src) = if let Some(hz) = cpuid_tsc_hz().filter(plausible) {
        (hz, 1)
    } else if let Some(hz) = hypervisor_tsc_hz().filter(plausible) {
        (hz, 2)
    } else if let Some(hz) = legacy::calibrate_tsc_with_pit().filter(plausible) {
        (hz, 3)
    } else {
        log::warn!("time: no TSC frequency source; assuming 1 GHz");
        (1_000_000_000, 0)
    };
    set_hz(hz);
    SOURCE.store(src, Ordering::Relaxed);
}

fn set_hz(hz: u64) {
    let s = TscScale::from_hz(hz);
    SCALE_MUL.store(u64::from(s.mul_frac), Ordering::Relaxed);
    SCALE_SHIFT.store(s.shift as u8, Ordering::Relaxed);
    TSC_HZ.store(hz, Ordering::Relaxed);
}

fn cpuid_tsc_hz() -> Option<u64> {
    if cpu::cpuid(0, 0).eax < 0x15 {
        return None;
    }
    let l = cpu::cpuid(0x15, 0);
    if l.eax == 0 || l.ebx == 0 || l.ecx == 0 {
        return None;
    }
    Some(u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax))
}

fn hypervisor_tsc_hz() -> Option<u64> {
    if cpu::cpuid(1, 0).ecx & (1 << 31) == 0 || cpu::cpuid(0x4000_0000, 0).eax < 0x4000_0010 {
        return None;
    }
    let khz = cpu::cpuid(0x4000_0010, 0).eax;
    (khz != 0).then(|| u64::from(khz) * 1000)
}

/// TSC frequency in Hz (0 before `init`).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Where the TSC frequency came from.
pub fn tsc_source() -> &'static str {
    SOURCES[usize::from(SOURCE.load(Ordering::Relaxed)).min(3)]
}

/// Converts a TSC delta to nanoseconds (0 before `init`).
pub fn ticks_to_ns(ticks: u64) -> u64 {
    let mul = SCALE_MUL.load(Ordering::Relaxed);
    if mul == 0 {
        return 0;
    }
    TscScale { mul_frac: mul as u32, shift: SCALE_SHIFT.load(Ordering::Relaxed) as i8 }.ticks_to_ns(ticks)
}

/// Nanoseconds since the image's first instruction.
pub fn now_ns() -> u64 {
    ticks_to_ns(cpu::rdtsc().wrapping_sub(crate::arch::boot_tsc_value()))
}

/// Reads the RTC once and anchors wall time to the monotonic clock.
pub fn init_wall_clock(century_reg: u8) {
    let Some(raw) = legacy::read_rtc(century_reg) else {
        log::warn!("time: no CMOS clock; wall time starts at 1970");
        return;
    };
    match hypervisor::rtc::decode(&raw) {
        Some(dt) => {
            let boot = hypervisor::rtc::to_unix(&dt) - (now_ns() / 1_000_000_000) as i64;
            BOOT_UNIX.store(boot, Ordering::Relaxed);
        }
        None => log::warn!("time: the CMOS clock holds an invalid date; wall time starts at 1970"),
    }
}

/// Unix time (seconds) of boot.
pub fn boot_unix() -> i64 {
    BOOT_UNIX.load(Ordering::Relaxed)
}
