//! Legacy PC devices used at boot: the 8259 PICs (remapped, then masked), the
//! 8254 PIT (TSC calibration) and the CMOS real-time clock.

use super::cpu::{inb, outb, rdtsc};

/// Remaps both 8259s away from the exception vectors and masks every line;
/// interrupts come through the I/O APIC instead.
pub fn mask_pic() {
    outb(0x20, 0x11);
    outb(0xA0, 0x11);
    outb(0x21, 0xF0);
    outb(0xA1, 0xF8);
    outb(0x21, 4);
    outb(0xA1, 2);
    outb(0x21, 1);
    outb(0xA1, 1);
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}

const PIT_HZ: u64 = 1_193_182;

/// Counts TSC ticks across `ms` milliseconds of PIT channel 2, or None if the
/// PIT never finished (no PIT).
fn pit_window(ms: u64) -> Option<u64> {
    let count = PIT_HZ * ms / 1000;
    let gate = inb(0x61);
    outb(0x61, (gate & !0x02) | 0x01); // gate on, speaker off
    outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0
    outb(0x42, count as u8);
    outb(0x42, (count >> 8) as u8);
    let t0 = rdtsc();
    let mut spins: u64 = 0;
    while inb(0x61) & 0x20 == 0 {
        spins += 1;
        if spins > 50_000_000 {
            outb(0x61, gate);
            return None;
        }
    }
    let t1 = rdtsc();
    outb(0x61, gate);
    Some(t1.wrapping_sub(t0))
}

/// TSC frequency in Hz measured against the PIT: the smallest of three 10 ms
/// windows (the one least disturbed).
pub fn calibrate_tsc_with_pit() -> Option<u64> {
    // No PIT (e.g. QEMU microvm): port 0x61 floats to 0xFF.
    if inb(0x61) == 0xFF {
        return None;
    }
    let mut best: Option<u64> = None;
    for _ in 0..3 {
        let t = pit_window(10)?;
        best = Some(best.map_or(t, |b| b.min(t)));
    }
    best.map(|t| t * 100)
}

fn cmos(reg: u8) -> u8 {
    outb(0x70, 0x80 | reg); // keep NMI disabled while addressing
    inb(0x71)
}

/// Reads the RTC registers consistently (twice, until two reads agree, never
/// during an update); None when there is no RTC. `century_reg` is the FADT's
/// century register or 0.
pub fn read_rtc(century_reg: u8) -> Option<hypervisor::rtc::RtcRaw> {
    // No RTC (e.g. QEMU microvm): the ports float to 0xFF.
    if cmos(0x0A) == 0xFF && cmos(0x0B) == 0xFF {
        return None;
    }
    let read = || {
        // An update takes under 2 ms; bound the wait so a broken RTC cannot
        // stall the boot.
        let mut spins = 0u32;
        while cmos(0x0A) & 0x80 != 0 && spins < 20_000 {
            spins += 1;
        }
        hypervisor::rtc::RtcRaw {
            seconds: cmos(0x00),
            minutes: cmos(0x02),
            hours: cmos(0x04),
            day: cmos(0x07),
            month: cmos(0x08),
            year: cmos(0x09),
            century: if century_reg != 0 { cmos(century_reg) } else { 0 },
            status_b: cmos(0x0B),
        }
    };
    let mut last = read();
    for _ in 0..5 {
        let next = read();
        if (next.seconds, next.minutes, next.hours, next.day, next.month, next.year)
            == (last.seconds, last.minutes, last.hours, last.day, last.month, last.year)
        {
            return Some(next);
        }
        last = next;
    }
    Some(last)
}
