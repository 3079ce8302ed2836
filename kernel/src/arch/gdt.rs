//! Global descriptor table and task state segment (IST stacks for double
//! fault, NMI and machine check; RSP0 for entries from ring 3).

use core::arch::asm;
use core::cell::UnsafeCell;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data/stack selector.
pub const KERNEL_DS: u16 = 0x10;
#[allow(dead_code)] // used once guests run in ring 3
/// User data selector (RPL 3), placed so `sysret` finds it at STAR+8.
pub const USER_DS: u16 = 0x20 | 3;
#[allow(dead_code)] // used once guests run in ring 3
/// User 64-bit code selector (RPL 3), at STAR+16.
pub const USER_CS: u16 = 0x28 | 3;
const TSS_SEL: u16 = 0x30;

/// IST slot numbers (1-based, as the IDT encodes them).
pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;

#[repr(C, packed)]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

struct Tables {
    gdt: [u64; 8],
    tss: Tss,
}

struct TablesCell(UnsafeCell<Tables>);
// SAFETY: one CPU; the tables are written only during `init` (interrupts off)
// and through `set_rsp0`, which writes one aligned word the CPU reads only on
// a privilege change.
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    gdt: [0; 8],
    tss: Tss { _reserved0: 0, rsp: [0; 3], _reserved1: 0, ist: [0; 7], _reserved2: 0, _reserved3: 0, iomap_base: 104 },
}));

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Builds and loads the GDT and TSS. `ist_tops` are the stack tops for IST
/// slots 1..=3.
pub fn init(ist_tops: [u64; 3]) {
    let t = TABLES.0.get();
    // SAFETY: single-threaded boot with interrupts off; nothing else holds a
    // reference into TABLES.
    unsafe {
        (*t).tss.ist[0] = ist_tops[0];
        (*t).tss.ist[1] = ist_tops[1];
        (*t).tss.ist[2] = ist_tops[2];
        let tss_addr = core::ptr::addr_of!((*t).tss) as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        let low = (limit & 0xFFFF)
            | ((tss_addr & 0xFF_FFFF) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xF) << 48)
            | (((tss_addr >> 24) & 0xFF) << 56);
        (*t).gdt = [
            0,
            0x00AF_9A00_0000_FFFF, // kernel code, 64-bit
            0x00CF_9200_0000_FFFF, // kernel data
            0x00CF_FA00_0000_FFFF, // user code, 32-bit (unused; keeps sysret layout)
            0x00CF_F200_0000_FFFF, // user data
            0x00AF_FA00_0000_FFFF, // user code, 64-bit
            low,
            tss_addr >> 32,
        ];
        let ptr = Pointer { limit: (8 * 8 - 1) as u16, base: core::ptr::addr_of!((*t).gdt) as u64 };
        asm!(
            "lgdt [{p}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:e}",
            "mov es, {ds:e}",
            "mov ss, {ds:e}",
            "ltr {tss:x}",
            p = in(reg) &ptr,
            cs = in(reg) u64::from(KERNEL_CS),
            ds = in(reg) u32::from(KERNEL_DS),
            tss = in(reg) TSS_SEL,
            tmp = out(reg) _,
        );
    }
}

/// Pages in each IST stack (what `main` allocates for them).
pub const IST_STACK_PAGES: u64 = 4;

/// The IST slot (1..=3) whose stack holds `addr`: tells a fatal report which
/// stack its handler runs on.
pub fn ist_slot_of(addr: u64) -> Option<u8> {
    (1..=3u8).find(|&slot| {
        // SAFETY: see `TablesCell`; a by-value unaligned read of one word of
        // the packed TSS, written only during `init`.
        let top = unsafe { core::ptr::addr_of!((*TABLES.0.get()).tss.ist[usize::from(slot) - 1]).read_unaligned() };
        top != 0 && addr < top && addr >= top - IST_STACK_PAGES * 4096
    })
}

/// Sets the stack the CPU switches to on an interrupt from ring 3.
#[allow(dead_code)]
pub fn set_rsp0(top: u64) {
    // SAFETY: see `TablesCell`; an unaligned write into the packed struct is
    // done with write_unaligned.
    unsafe { core::ptr::addr_of_mut!((*TABLES.0.get()).tss.rsp[0]).write_unaligned(top) };
}
