//! I/O APIC: routes legacy device interrupts (here: the UART) to vectors.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

static BASE: AtomicU64 = AtomicU64::new(0);
static GSI_BASE: AtomicU32 = AtomicU32::new(0);
static ENTRIES: AtomicU32 = AtomicU32::new(0);

fn reg_write(reg: u32, v: u32) {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    // SAFETY: `base` maps the I/O APIC's register window uncached (`init`);
    // IOREGSEL is at +0 and IOWIN at +0x10.
    unsafe {
        (base as *mut u32).write_volatile(reg);
        ((base + 0x10) as *mut u32).write_volatile(v);
    }
}

fn reg_read(reg: u32) -> u32 {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return 0;
    }
    // SAFETY: as in `reg_write`.
    unsafe {
        (base as *mut u32).write_volatile(reg);
        ((base + 0x10) as *const u32).read_volatile()
    }
}

/// Takes the I/O APIC mapped at `va` (serving GSIs from `gsi_base`) and masks
/// every input. Returns the number of inputs.
pub fn init(va: u64, gsi_base: u32) -> u32 {
    BASE.store(va, Ordering::Relaxed);
    GSI_BASE.store(gsi_base, Ordering::Relaxed);
    let n = ((reg_read(1) >> 16) & 0xFF) + 1;
    ENTRIES.store(n, Ordering::Relaxed);
    for i in 0..n {
        reg_write(0x10 + 2 * i, 1 << 16);
        reg_write(0x11 + 2 * i, 0);
    }
    n
}

/// Routes `gsi` to `vector` on the CPU with APIC ID `dest`. `flags` are the
/// MADT MPS INTI flags (polarity bits 0-1, trigger bits 2-3; 0 = bus default,
/// which for ISA is active-high edge). Returns false if the GSI is not ours.
pub fn route(gsi: u32, vector: u8, flags: u16, dest: u32) -> bool {
    let base = GSI_BASE.load(Ordering::Relaxed);
    let Some(pin) = gsi.checked_sub(base).filter(|p| *p < ENTRIES.load(Ordering::Relaxed)) else {
        return false;
    };
    let mut low = u32::from(vector);
    if flags & 0b11 == 0b11 {
        low |= 1 << 13; // active low
    }
    if (flags >> 2) & 0b11 == 0b11 {
        low |= 1 << 15; // level triggered
    }
    reg_write(0x11 + 2 * pin, (dest & 0xFF) << 24);
    reg_write(0x10 + 2 * pin, low);
    true
}
