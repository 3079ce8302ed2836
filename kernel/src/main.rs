//! rhv: the bare-metal hypervisor image.
//!
//! Boot order: the entry code (arch/boot.S) enters long mode on boot page
//! tables and calls `kmain` on the boot stack. `kmain` brings up the console,
//! parses the boot information and command line, builds the hypervisor's own
//! page tables, frame allocator and heap, and moves to a guarded stack where
//! `kmain2` sets up descriptor tables, ACPI, interrupts and timers, then runs
//! the self-test or the shell.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the rhv image runs on bare metal only: build it with scripts/build");
}

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
#[macro_use]
mod console;
#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod blk;
#[cfg(target_os = "none")]
mod cmds;
#[cfg(target_os = "none")]
mod domains;
#[cfg(target_os = "none")]
mod drivers;
#[cfg(target_os = "none")]
mod hypercall;
#[cfg(target_os = "none")]
mod logger;
#[cfg(target_os = "none")]
mod migrate;
#[cfg(target_os = "none")]
mod mm;
#[cfg(target_os = "none")]
mod network;
#[cfg(target_os = "none")]
mod power;
#[cfg(target_os = "none")]
mod selftest;
#[cfg(target_os = "none")]
mod storage;
#[cfg(target_os = "none")]
mod time;
#[cfg(target_os = "none")]
mod vcpu;

#[cfg(target_os = "none")]
pub use kernel::*;

#[cfg(target_os = "none")]
mod kernel {
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicU64, Ordering};

    use hypervisor::acpi::{self, AcpiInfo};
    use hypervisor::bootinfo::{self, BootInfo};
    use hypervisor::cmdline::{self, Options};
    use hypervisor::lineedit::{Event, LineEditor};

    use crate::arch::{self, apic, cpu, gdt, idt, ioapic, legacy, trap};
    use crate::drivers::serial;
    use crate::{console, logger, mm, power, time};

    /// Version string.
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    /// Git commit of the build (with `-dirty` for local changes).
    pub const BUILD_ID: &str = env!("RHV_BUILD_ID");

    /// What the boot established; read-only after `kmain`.
    pub struct Boot {
        pub info: BootInfo,
        pub opts: Options,
    }

    static BOOT: spin::Once<Boot> = spin::Once::new();
    static ACPI: spin::Once<Option<AcpiInfo>> = spin::Once::new();
    static IST_TOPS: spin::Once<[u64; 3]> = spin::Once::new();
    static PROMPT_NS: AtomicU64 = AtomicU64::new(0);

    /// Boot information and options.
    pub fn boot() -> &'static Boot {
        BOOT.get().unwrap_or_else(|| fatal("boot state used before kmain set it"))
    }

    /// ACPI tables, if the firmware has them.
    pub fn acpi_info() -> Option<&'static AcpiInfo> {
        ACPI.get().and_then(|a| a.as_ref())
    }

    /// Nanoseconds from image entry to the first prompt.
    pub fn prompt_ns() -> u64 {
        PROMPT_NS.load(Ordering::Relaxed)
    }

    fn fatal(msg: &str) -> ! {
        console::write_raw(b"\n*** fatal: ");
        console::write_raw(msg.as_bytes());
        console::write_raw(b"\n");
        power::fatal_stop()
    }

    #[no_mangle]
    extern "C" fn kmain(magic: u32, info_pa: u32) -> ! {
        serial::init(0x3F8, 115_200);
        mm::init_early_heap();
        logger::init();

        let info = match bootinfo::parse(&mm::IdentityPhys, magic, u64::from(info_pa)) {
            Ok(i) => i,
            Err(e) => {
                println!("rhv: cannot read the boot information: {e}");
                fatal("no usable boot information (boot rhv with GRUB multiboot2, multiboot1 or QEMU -kernel)")
            }
        };
        let (opts, warnings) = cmdline::parse(&info.cmdline);
        if opts.console.port != 0x3F8 || opts.console.baud != 115_200 {
            serial::init(opts.console.port, opts.console.baud);
        }
        logger::set_console_level(opts.loglevel);
        power::set_panic_action(opts.panic);
        for w in &warnings {
            log::warn!("{}", w.0);
        }
        if let Err(e) = mm::init(&info) {
            fatal(e);
        }
        BOOT.call_once(|| Boot { info, opts });

        let stack = mm::alloc_stack(16).unwrap_or_else(|| fatal("cannot allocate the kernel stack"));
        let ist = [
            mm::alloc_stack(gdt::IST_STACK_PAGES).unwrap_or_else(|| fatal("cannot allocate IST stacks")),
            mm::alloc_stack(gdt::IST_STACK_PAGES).unwrap_or_else(|| fatal("cannot allocate IST stacks")),
            mm::alloc_stack(gdt::IST_STACK_PAGES).unwrap_or_else(|| fatal("cannot allocate IST stacks")),
        ];
        IST_TOPS.call_once(|| ist);
        arch::run_on_stack(stack, kmain2)
    }

    extern "C" fn kmain2() -> ! {
        let ist = *IST_TOPS.get().unwrap_or(&[0; 3]);
        gdt::init(ist);
        idt::init();
        let b = boot();

        arch::enable_cpu_protections();
        match arch::cpu::init_machine_check() {
            Some(banks) => log::info!("mca: machine checks reported ({banks} banks)"),
            None => log::info!("mca: no machine-check architecture; #MC stays off"),
        }
        arch::fpu::init();
        arch::syscall::init();
        let acpi = load_acpi(&b.info);
        ACPI.call_once(|| acpi);
        legacy::mask_pic();
        log::debug!("pic: legacy 8259 pair remapped to vectors 0x20-0x2f and every line masked");
        time::init();
        if let Err(e) = apic::init(|pa| mm::map_mmio(pa, 4096)) {
            fatal(e);
        }
        setup_serial_irq(b.opts.console.port);
        let bus_hz = apic::start_timer(100, time::tsc_hz());
        serial::enable_rx_interrupt();
        cpu::sti();
        time::init_wall_clock(acpi_info().and_then(|a| a.fadt.as_ref()).map_or(0, |f| f.century));

        let (total, free, _) = mm::frame_stats();
        log::info!(
            "boot: {} via {}, {} module(s)",
            match b.info.loader {
                bootinfo::Loader::Multiboot1 => "multiboot1",
                bootinfo::Loader::Multiboot2 => "multiboot2",
            },
            b.info.bootloader_name.as_deref().unwrap_or("unknown loader"),
            b.info.modules.len()
        );
        log::info!(
            "mem: {} usable, {} free after boot",
            hypervisor::shell::format_bytes(total),
            hypervisor::shell::format_bytes(free)
        );
        log::info!(
            "cpu: TSC {}.{:03} MHz ({}), {} timer {} MHz at {} Hz",
            time::tsc_hz() / 1_000_000,
            (time::tsc_hz() / 1000) % 1000,
            time::tsc_source(),
            apic::mode_name(),
            bus_hz / 1_000_000,
            apic::timer_hz()
        );

        crate::vcpu::init();
        if crate::arch::cpuid_fault::init() {
            log::info!("cpu: CPUID faulting on (guests see their CPU policy)");
        }
        crate::network::init(b.opts.ip.as_deref(), b.opts.gw.as_deref(), b.opts.nic_irq);
        crate::blk::start();
        cpu::sti();
        crate::storage::mount_boot_options(&b.opts.nfs);
        crate::migrate::init();
        if b.opts.selftest {
            crate::selftest::run()
        }
        shell()
    }

    fn load_acpi(info: &BootInfo) -> Option<AcpiInfo> {
        let parsed = match &info.rsdp {
            Some(bytes) => acpi::parse_rsdp_bytes(&mm::DirectPhys, bytes),
            None => match acpi::find_rsdp(&mm::DirectPhys) {
                Some(at) => acpi::parse_rsdp_at(&mm::DirectPhys, at),
                None => {
                    log::warn!("acpi: no RSDP found; using PC defaults");
                    return None;
                }
            },
        };
        match parsed {
            Ok(a) => {
                log::info!(
                    "acpi: rev {} OEM '{}', {} CPU(s), {} I/O APIC(s)",
                    a.revision,
                    a.oem_id,
                    a.cpus.len(),
                    a.ioapics.len()
                );
                Some(a)
            }
            Err(e) => {
                log::warn!("acpi: {e}; using PC defaults");
                None
            }
        }
    }

    /// Routes the console UART's ISA IRQ through the I/O APIC.
    fn setup_serial_irq(port: u16) {
        let (addr, gsi_base) =
            acpi_info().and_then(|a| a.ioapics.first().map(|io| (io.addr, io.gsi_base))).unwrap_or((0xFEC0_0000, 0));
        let Some(va) = mm::map_mmio(addr, 0x20) else {
            log::warn!("ioapic: cannot map {addr:#x}; serial input is polled");
            return;
        };
        ioapic::init(va, gsi_base);
        let irq = if port == 0x3F8 || port == 0x3E8 { 4 } else { 3 };
        let (gsi, flags) = acpi_info().map_or((u32::from(irq), 0), |a| a.gsi_for_isa_irq(irq));
        if ioapic::route(gsi, trap::SERIAL_VECTOR, flags, apic::id()) {
            log::debug!(
                "serial: {port:#x} receive interrupt on IRQ {irq} (GSI {gsi}), vector {:#x}",
                trap::SERIAL_VECTOR
            );
        } else {
            log::warn!("ioapic: GSI {gsi} is not routable; serial input is polled");
        }
    }

    fn shell() -> ! {
        let ns = time::now_ns();
        PROMPT_NS.store(ns, Ordering::Relaxed);
        println!(
            "{} v{} (build {}) up in {}.{:03} ms",
            hypervisor::NAME,
            VERSION,
            BUILD_ID,
            ns / 1_000_000,
            (ns / 1000) % 1000
        );
        print!("{}", hypervisor::PROMPT);
        let mut ed = LineEditor::new(256, 64);
        let mut out: Vec<u8> = Vec::with_capacity(512);
        let mut buf = [0u8; 64];
        loop {
            for r in crate::domains::reap() {
                crate::cmds::respawn(r);
            }
            serial::poll_rx();
            let n = serial::read(&mut buf);
            if n == 0 {
                crate::vcpu::shell_idle();
                continue;
            }
            let mut bytes = &buf[..n];
            if let Some(dom) = crate::hypercall::attached() {
                // Console mode: everything goes to the guest until Ctrl-].
                match bytes.iter().position(|&b| b == 0x1d) {
                    Some(i) => {
                        crate::cmds::console_input(dom, &bytes[..i]);
                        crate::hypercall::attach_console(0);
                        println!();
                        print!("{}", hypervisor::PROMPT);
                        bytes = &bytes[i + 1..];
                    }
                    None => {
                        crate::cmds::console_input(dom, bytes);
                        continue;
                    }
                }
            }
            let mut i = 0;
            while i < bytes.len() {
                let byte = bytes[i];
                i += 1;
                out.clear();
                let ev = ed.feed(byte, &mut out);
                if !out.is_empty() {
                    console::write_bytes(&out);
                }
                match ev {
                    Some(Event::Line(line)) => {
                        crate::cmds::run(&line);
                        if let Some(dom) = crate::hypercall::attached() {
                            // `console`: the rest of this read is the guest's.
                            crate::cmds::console_input(dom, &bytes[i..]);
                            break;
                        }
                        print!("{}", hypervisor::PROMPT);
                    }
                    Some(Event::Cancelled) => print!("{}", hypervisor::PROMPT),
                    None => {}
                }
            }
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        cpu::cli();
        let mut w = logger::FixedBuf::<512>::new();
        let _ = core::fmt::write(&mut w, format_args!("\n*** panic: {}\n", info));
        console::write_raw(w.as_str().as_bytes());
        struct Raw;
        impl core::fmt::Write for Raw {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                console::write_raw(s.as_bytes());
                Ok(())
            }
        }
        trap::backtrace(&mut Raw, 0, cpu::frame_pointer());
        power::fatal_stop()
    }
}
