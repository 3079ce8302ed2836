//! Trap dispatch: interrupts go to their handlers; an exception taken in the
//! hypervisor prints one decoded report and then halts or reboots as the
//! `panic=` option says.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{apic, cpu};

/// Register state pushed by trap.S (lowest address first).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Pseudo-vector the syscall entry stores for a hypercall.
pub const HYPERCALL_VECTOR: u64 = 0x100;

/// Vector the UART's IRQ is routed to.
pub const SERIAL_VECTOR: u8 = 0x24;

static TICKS: AtomicU64 = AtomicU64::new(0);
static SPURIOUS: AtomicU64 = AtomicU64::new(0);
/// Traps taken per vector (exceptions, interrupts), for `interrupts`.
static PER_VECTOR: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
static HYPERCALLS: AtomicU64 = AtomicU64::new(0);

/// How many times each vector was taken since boot (index = vector).
pub fn vector_counts() -> [u64; 256] {
    core::array::from_fn(|v| PER_VECTOR[v].load(Ordering::Relaxed))
}

/// Hypercalls taken since boot.
pub fn hypercalls() -> u64 {
    HYPERCALLS.load(Ordering::Relaxed)
}

/// Timer interrupts since the timer started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

const NAMES: [(&str, &str); 32] = [
    ("#DE", "divide error"),
    ("#DB", "debug"),
    ("NMI", "non-maskable interrupt"),
    ("#BP", "breakpoint"),
    ("#OF", "overflow"),
    ("#BR", "bound range exceeded"),
    ("#UD", "invalid opcode"),
    ("#NM", "device not available"),
    ("#DF", "double fault"),
    ("#MF", "coprocessor segment overrun"),
    ("#TS", "invalid TSS"),
    ("#NP", "segment not present"),
    ("#SS", "stack-segment fault"),
    ("#GP", "general protection"),
    ("#PF", "page fault"),
    ("#15", "reserved"),
    ("#MF", "x87 floating-point error"),
    ("#AC", "alignment check"),
    ("#MC", "machine check"),
    ("#XM", "SIMD floating-point error"),
    ("#VE", "virtualization exception"),
    ("#CP", "control protection"),
    ("#22", "reserved"),
    ("#23", "reserved"),
    ("#24", "reserved"),
    ("#25", "reserved"),
    ("#26", "reserved"),
    ("#27", "reserved"),
    ("#HV", "hypervisor injection"),
    ("#VC", "VMM communication"),
    ("#SX", "security exception"),
    ("#31", "reserved"),
];

/// Mnemonic and name of an exception vector.
pub fn exception_name(v: u64) -> (&'static str, &'static str) {
    NAMES.get(v as usize).copied().unwrap_or(("#??", "unknown"))
}

#[no_mangle]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    match PER_VECTOR.get(frame.vector as usize) {
        Some(c) => c.fetch_add(1, Ordering::Relaxed),
        None => HYPERCALLS.fetch_add(1, Ordering::Relaxed),
    };
    match frame.vector {
        // An NMI or a machine check is the machine's, not the guest's, even
        // when it arrives while a guest runs.
        2 | 18 => fatal_exception(frame),
        0..=31 if frame.cs & 3 == 3 => {
            if !crate::hypercall::emulate_cpuid(frame) {
                crate::hypercall::guest_exception(frame)
            }
        }
        13 if frame.cs & 3 == 0 && super::cpu::msr_fixup(frame.rip).is_some() => {
            frame.rip = super::cpu::msr_fixup(frame.rip).unwrap_or(frame.rip);
        }
        0..=31 => fatal_exception(frame),
        HYPERCALL_VECTOR => crate::hypercall::dispatch(frame),
        v if v == u64::from(apic::TIMER_VECTOR) => {
            TICKS.fetch_add(1, Ordering::Relaxed);
            apic::eoi();
            // Polling fallback and protocol timers (ARP, DHCP, TCP).
            crate::network::pump();
            crate::vcpu::on_tick();
        }
        v if v == u64::from(SERIAL_VECTOR) => {
            crate::drivers::serial::poll_rx();
            apic::eoi();
            crate::vcpu::on_device_interrupt();
        }
        v if (u64::from(crate::network::NIC_VECTOR_BASE)..u64::from(crate::network::NIC_VECTOR_BASE) + 8)
            .contains(&v) =>
        {
            // Level-triggered: the driver clears the device's cause first.
            crate::network::on_irq();
            apic::eoi();
            crate::vcpu::on_device_interrupt();
        }
        v if v == u64::from(apic::SPURIOUS_VECTOR) => {
            SPURIOUS.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            SPURIOUS.fetch_add(1, Ordering::Relaxed);
            apic::eoi();
        }
    }
}

/// Writes straight to the UART: the fatal path must not wait on any lock.
struct Raw;

impl Write for Raw {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        crate::console::write_raw(s.as_bytes());
        Ok(())
    }
}

fn page_fault_detail(err: u64) -> (&'static str, &'static str, &'static str) {
    (
        if err & 2 != 0 {
            "write"
        } else if err & 16 != 0 {
            "instruction fetch"
        } else {
            "read"
        },
        if err & 1 != 0 { "protection violation" } else { "not-present page" },
        if err & 4 != 0 { "user" } else { "supervisor" },
    )
}

fn fatal_exception(f: &TrapFrame) -> ! {
    let (mn, name) = exception_name(f.vector);
    let cr2 = cpu::read_cr2();
    let mut w = Raw;
    let whose = if f.cs & 3 == 3 { "while a guest ran" } else { "in the hypervisor" };
    let _ = write!(w, "\r\n*** exception: {mn} {name} (vector {}) {whose}\r\n", f.vector);
    if f.vector == 14 {
        let (op, why, mode) = page_fault_detail(f.error_code);
        let _ = write!(w, "    error {:#x}: {op}, {why}, {mode} mode, address {cr2:#018x}\r\n", f.error_code);
    } else {
        let _ = write!(w, "    error code {:#x}\r\n", f.error_code);
    }
    if (f.vector == 8 || f.vector == 14) && crate::mm::is_stack_guard(cr2) {
        let _ = write!(w, "    kernel stack overflow: CR2 {cr2:#018x} is a stack guard page\r\n");
    }
    let _ = write!(w, "    RIP={:#018x} CS={:#06x} RFLAGS={:#018x}\r\n", f.rip, f.cs, f.rflags);
    let _ = write!(w, "    RSP={:#018x} SS={:#06x} CR2={cr2:#018x}\r\n", f.rsp, f.ss);
    let _ =
        write!(w, "    CR0={:#018x} CR3={:#018x} CR4={:#018x}\r\n", cpu::read_cr0(), cpu::read_cr3(), cpu::read_cr4());
    let regs = [
        ("RAX", f.rax),
        ("RBX", f.rbx),
        ("RCX", f.rcx),
        ("RDX", f.rdx),
        ("RSI", f.rsi),
        ("RDI", f.rdi),
        ("RBP", f.rbp),
        ("R8 ", f.r8),
        ("R9 ", f.r9),
        ("R10", f.r10),
        ("R11", f.r11),
        ("R12", f.r12),
        ("R13", f.r13),
        ("R14", f.r14),
        ("R15", f.r15),
    ];
    for row in regs.chunks(4) {
        let _ = write!(w, "   ");
        for (n, v) in row {
            let _ = write!(w, " {n}={v:#018x}");
        }
        let _ = write!(w, "\r\n");
    }
    let here = cpu::frame_pointer();
    match super::gdt::ist_slot_of(here) {
        Some(slot) => {
            let _ = write!(
                w,
                "    handler stack: IST{slot} ({})\r\n",
                ["double fault", "NMI", "machine check"][usize::from(slot) - 1]
            );
        }
        None => {
            let _ = write!(w, "    handler stack: a kernel stack (no IST)\r\n");
        }
    }
    if f.vector == 18 {
        super::cpu::machine_check_report(&mut w);
    }
    backtrace(&mut w, f.rip, f.rbp);
    crate::power::fatal_stop()
}

/// Prints a frame-pointer backtrace starting at `rip`/`rbp`.
pub fn backtrace(w: &mut dyn Write, rip: u64, mut rbp: u64) {
    let _ = write!(w, "backtrace:\r\n    #0  {rip:#018x}\r\n");
    for depth in 1..24 {
        if rbp == 0 || !rbp.is_multiple_of(8) || rbp < super::paging::DIRECT_MAP_BASE || !frame_readable(rbp) {
            break;
        }
        // SAFETY: rbp points at a mapped, 8-aligned kernel stack slot
        // (checked with `frame_readable`) holding [saved rbp, return address].
        let (next, ret) = unsafe { ((rbp as *const u64).read(), ((rbp + 8) as *const u64).read()) };
        if ret == 0 {
            break;
        }
        let _ = write!(w, "    #{depth:<2} {ret:#018x}\r\n");
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}

fn frame_readable(va: u64) -> bool {
    let page = va & !0xFFF;
    let ok = |p: u64| crate::mm::translate_nolock(p);
    ok(page) && ok((va + 15) & !0xFFF)
}
