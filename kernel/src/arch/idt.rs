//! Interrupt descriptor table: every vector goes to its stub in trap.S, which
//! calls `trap::dispatch`.

use core::arch::asm;
use core::cell::UnsafeCell;

use super::gdt;

extern "C" {
    static trap_stubs: u8;
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    _zero: u32,
}

struct IdtCell(UnsafeCell<[Entry; 256]>);
// SAFETY: written once during boot with interrupts off, read only by the CPU.
unsafe impl Sync for IdtCell {}

static IDT: IdtCell = IdtCell(UnsafeCell::new(
    [Entry { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, _zero: 0 }; 256],
));

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Fills and loads the IDT.
pub fn init() {
    let base = core::ptr::addr_of!(trap_stubs) as u64;
    // SAFETY: boot, interrupts off; no other reference into IDT exists.
    let idt = unsafe { &mut *IDT.0.get() };
    for (v, e) in idt.iter_mut().enumerate() {
        let addr = base + 32 * v as u64;
        let ist = match v {
            2 => gdt::IST_NMI,
            8 => gdt::IST_DOUBLE_FAULT,
            18 => gdt::IST_MACHINE_CHECK,
            _ => 0,
        };
        *e = Entry {
            offset_low: addr as u16,
            selector: gdt::KERNEL_CS,
            ist,
            type_attr: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (addr >> 16) as u16,
            offset_high: (addr >> 32) as u32,
            _zero: 0,
        };
    }
    let ptr = Pointer { limit: (256 * 16 - 1) as u16, base: IDT.0.get() as u64 };
    // SAFETY: the IDT is fully initialised and lives for the whole run.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(nostack, readonly)) };
}

/// Loads an empty IDT and raises an exception: the CPU triple-faults and
/// resets. The last-resort reboot.
pub fn triple_fault() -> ! {
    let ptr = Pointer { limit: 0, base: 0 };
    // SAFETY: deliberately resets the machine; nothing runs after.
    unsafe { asm!("lidt [{}]", "int3", in(reg) &ptr, options(nostack)) };
    super::cpu::halt_forever()
}
