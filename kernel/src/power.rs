//! Reboot, power-off and the end of a fatal error.

use core::sync::atomic::{AtomicBool, Ordering};

use hypervisor::cmdline::PanicAction;

use crate::arch::{cpu, idt};

static REBOOT_ON_PANIC: AtomicBool = AtomicBool::new(false);

/// Records what a fatal error does (`panic=`).
pub fn set_panic_action(a: PanicAction) {
    REBOOT_ON_PANIC.store(a == PanicAction::Reboot, Ordering::Relaxed);
}

/// After a fatal report: halt or reboot as configured.
pub fn fatal_stop() -> ! {
    if REBOOT_ON_PANIC.load(Ordering::Relaxed) {
        crate::console::write_raw(b"rebooting (panic=reboot)\n");
        reset()
    } else {
        crate::console::write_raw(b"system halted (panic=halt)\n");
        cpu::halt_forever()
    }
}

/// Resets the machine: ACPI reset register, then the keyboard controller,
/// then a triple fault.
pub fn reset() -> ! {
    cpu::cli();
    if let Some(acpi) = crate::acpi_info() {
        if let Some(fadt) = &acpi.fadt {
            if let Some(r) = &fadt.reset {
                if r.space == 1 && r.address <= 0xFFFF {
                    cpu::outb(r.address as u16, fadt.reset_value);
                }
            }
        }
    }
    for _ in 0..1000 {
        if cpu::inb(0x64) & 0x02 == 0 {
            break;
        }
    }
    cpu::outb(0x64, 0xFE);
    // Some boards need a moment; then force it.
    let t0 = cpu::rdtsc();
    while cpu::rdtsc().wrapping_sub(t0) < 100_000_000 {
        core::hint::spin_loop();
    }
    idt::triple_fault()
}

/// Powers off through ACPI S5. Returns an error line if the platform gives
/// no way to do it.
pub fn poweroff() -> Result<(), &'static str> {
    let acpi = crate::acpi_info().ok_or("poweroff: no ACPI tables")?;
    let fadt = acpi.fadt.as_ref().ok_or("poweroff: no FADT")?;
    let (typ_a, typ_b) = acpi.s5.ok_or("poweroff: no \\_S5 object in the DSDT")?;
    if fadt.pm1a_cnt == 0 || fadt.pm1a_cnt > 0xFFFF {
        return Err("poweroff: no PM1a control block");
    }
    cpu::cli();
    // Enable ACPI mode if firmware left it off (SCI_EN clear).
    if cpu::inw(fadt.pm1a_cnt as u16) & 1 == 0 && fadt.smi_cmd != 0 && fadt.smi_cmd <= 0xFFFF && fadt.acpi_enable != 0 {
        cpu::outb(fadt.smi_cmd as u16, fadt.acpi_enable);
        let t0 = cpu::rdtsc();
        while cpu::inw(fadt.pm1a_cnt as u16) & 1 == 0 && cpu::rdtsc().wrapping_sub(t0) < 3_000_000_000 {
            core::hint::spin_loop();
        }
    }
    cpu::outw(fadt.pm1a_cnt as u16, (u16::from(typ_a) << 10) | (1 << 13));
    if fadt.pm1b_cnt != 0 && fadt.pm1b_cnt <= 0xFFFF {
        cpu::outw(fadt.pm1b_cnt as u16, (u16::from(typ_b) << 10) | (1 << 13));
    }
    let t0 = cpu::rdtsc();
    while cpu::rdtsc().wrapping_sub(t0) < 3_000_000_000 {
        core::hint::spin_loop();
    }
    cpu::sti();
    Err("poweroff: the machine did not power off")
}

/// QEMU's isa-debug-exit device (port 0xf4): the process exits with status
/// `(code << 1) | 1`. Used by the self-test.
pub fn qemu_exit(code: u8) {
    cpu::outb(0xF4, code);
}
