//! The serial shell's commands.

use alloc::string::String;
use alloc::vec::Vec;

use hypervisor::shell::{self, CommandInfo};

use crate::arch::{apic, cpu};
use crate::{logger, mm, power, time};

/// Every command, in `help` order.
pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo { name: "help", usage: "help [command]", summary: "list the commands, or show how to use one" },
    CommandInfo { name: "info", usage: "info", summary: "CPU, features, TSC, memory, uptime, command line, version" },
    CommandInfo { name: "dmesg", usage: "dmesg", summary: "show the log since boot with timestamps" },
    CommandInfo { name: "uptime", usage: "uptime", summary: "time since boot and the boot date" },
    CommandInfo { name: "mem", usage: "mem", summary: "physical memory and heap use" },
    CommandInfo { name: "loglevel", usage: "loglevel [off|error|warn|info|debug|trace]", summary: "show or set what the log prints on the console" },
    CommandInfo { name: "reboot", usage: "reboot", summary: "reset the machine" },
    CommandInfo { name: "poweroff", usage: "poweroff", summary: "power the machine off (ACPI S5)" },
    CommandInfo { name: "crash", usage: "crash pf|ud|de|gp|bp|stack", summary: "diagnostic: raise that exception in the hypervisor" },
];

fn names() -> Vec<&'static str> {
    COMMANDS.iter().map(|c| c.name).collect()
}

/// Runs one command line.
pub fn run(line: &str) {
    let words = match shell::tokenize(line) {
        Ok(w) => w,
        Err(e) => {
            println!("error: {e}");
            return;
        }
    };
    let Some(cmd) = words.first() else { return };
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    match cmd.as_str() {
        "help" => help(&args),
        "info" => info(),
        "dmesg" => logger::dump(),
        "uptime" => uptime(),
        "mem" => mem(),
        "loglevel" => loglevel(&args),
        "reboot" => {
            println!("rebooting");
            power::reset()
        }
        "poweroff" => {
            println!("powering off");
            if let Err(e) = power::poweroff() {
                println!("error: {e}");
            }
        }
        "crash" => crash(&args),
        other => println!("{}", shell::unknown_command_message(other, &names())),
    }
}

fn help(args: &[&str]) {
    match args.first() {
        None => print!("{}", shell::format_help(COMMANDS)),
        Some(name) => match COMMANDS.iter().find(|c| c.name == *name) {
            Some(c) => println!("usage: {}\n  {}", c.usage, c.summary),
            None => println!("{}", shell::unknown_command_message(name, &names())),
        },
    }
}

fn uptime() {
    let ns = time::now_ns();
    let since = hypervisor::rtc::from_unix(time::boot_unix());
    println!("up {}, since {}", shell::format_duration(ns), since);
}

fn mem() {
    let (total, free, managed) = mm::frame_stats();
    let used = managed.saturating_sub(free);
    let (hused, hsize) = mm::heap_stats();
    println!(
        "memory: total {}, free {}, used {}",
        shell::format_bytes(total),
        shell::format_bytes(free),
        shell::format_bytes(used + total.saturating_sub(managed))
    );
    println!("heap: used {} of {}", shell::format_bytes(hused), shell::format_bytes(hsize));
}

fn loglevel(args: &[&str]) {
    match args.first() {
        None => println!("loglevel: {}", level_name(logger::console_level())),
        Some(v) => {
            let (opts, warnings) = hypervisor::cmdline::parse(&alloc::format!("loglevel={v}"));
            if let Some(w) = warnings.first() {
                println!("error: {}", w.0.trim_start_matches("cmdline: "));
            } else {
                logger::set_console_level(opts.loglevel);
                println!("loglevel: {}", level_name(opts.loglevel));
            }
        }
    }
}

fn level_name(l: log::LevelFilter) -> &'static str {
    match l {
        log::LevelFilter::Off => "off",
        log::LevelFilter::Error => "error",
        log::LevelFilter::Warn => "warn",
        log::LevelFilter::Info => "info",
        log::LevelFilter::Debug => "debug",
        log::LevelFilter::Trace => "trace",
    }
}

/// CPU vendor, brand string and family/model/stepping.
pub fn cpu_identity() -> (String, String, (u32, u32, u32)) {
    let v = cpu::cpuid(0, 0);
    let mut vendor = String::new();
    for r in [v.ebx, v.edx, v.ecx] {
        for b in r.to_le_bytes() {
            vendor.push(char::from(b));
        }
    }
    let mut brand = String::new();
    if cpu::cpuid(0x8000_0000, 0).eax >= 0x8000_0004 {
        for leaf in 0x8000_0002..=0x8000_0004u32 {
            let r = cpu::cpuid(leaf, 0);
            for w in [r.eax, r.ebx, r.ecx, r.edx] {
                for b in w.to_le_bytes() {
                    if b != 0 {
                        brand.push(char::from(b));
                    }
                }
            }
        }
    }
    let f = cpu::cpuid(1, 0).eax;
    let base_family = (f >> 8) & 0xF;
    let family = if base_family == 0xF { base_family + ((f >> 20) & 0xFF) } else { base_family };
    let model = if base_family == 0x6 || base_family == 0xF { ((f >> 4) & 0xF) | (((f >> 16) & 0xF) << 4) } else { (f >> 4) & 0xF };
    (vendor, String::from(brand.trim()), (family, model, f & 0xF))
}

/// Names of the CPU features the hypervisor cares about, as present.
pub fn cpu_features() -> Vec<&'static str> {
    let l1 = cpu::cpuid(1, 0);
    let max = cpu::cpuid(0, 0).eax;
    let l7 = if max >= 7 { cpu::cpuid(7, 0) } else { cpu::Cpuid::default() };
    let ext = if cpu::cpuid(0x8000_0000, 0).eax >= 0x8000_0001 { cpu::cpuid(0x8000_0001, 0) } else { cpu::Cpuid::default() };
    let table: &[(&str, u32, u32)] = &[
        ("fpu", l1.edx, 0), ("tsc", l1.edx, 4), ("msr", l1.edx, 5), ("pae", l1.edx, 6), ("apic", l1.edx, 9),
        ("pge", l1.edx, 13), ("pat", l1.edx, 16), ("clflush", l1.edx, 19), ("fxsr", l1.edx, 24), ("sse", l1.edx, 25),
        ("sse2", l1.edx, 26), ("sse3", l1.ecx, 0), ("pclmulqdq", l1.ecx, 1), ("vmx", l1.ecx, 5), ("ssse3", l1.ecx, 9),
        ("cx16", l1.ecx, 13), ("pcid", l1.ecx, 17), ("sse4_1", l1.ecx, 19), ("sse4_2", l1.ecx, 20), ("x2apic", l1.ecx, 21),
        ("movbe", l1.ecx, 22), ("popcnt", l1.ecx, 23), ("tsc_deadline", l1.ecx, 24), ("aes", l1.ecx, 25),
        ("xsave", l1.ecx, 26), ("avx", l1.ecx, 28), ("f16c", l1.ecx, 29), ("rdrand", l1.ecx, 30), ("hypervisor", l1.ecx, 31),
        ("fsgsbase", l7.ebx, 0), ("bmi1", l7.ebx, 3), ("avx2", l7.ebx, 5), ("smep", l7.ebx, 7), ("bmi2", l7.ebx, 8),
        ("erms", l7.ebx, 9), ("invpcid", l7.ebx, 10), ("avx512f", l7.ebx, 16), ("rdseed", l7.ebx, 18), ("adx", l7.ebx, 19),
        ("smap", l7.ebx, 20), ("sha", l7.ebx, 29), ("umip", l7.ecx, 2), ("pku", l7.ecx, 3),
        ("svm", ext.ecx, 2), ("lahf_lm", ext.ecx, 0), ("abm", ext.ecx, 5), ("syscall", ext.edx, 11), ("nx", ext.edx, 20),
        ("pdpe1gb", ext.edx, 26), ("rdtscp", ext.edx, 27), ("lm", ext.edx, 29),
    ];
    table.iter().filter(|(_, reg, bit)| reg & (1 << bit) != 0).map(|(n, _, _)| *n).collect()
}

fn info() {
    let b = crate::boot();
    let (vendor, brand, (fam, model, step)) = cpu_identity();
    println!("cpu: {vendor} {brand} (family {fam:#x} model {model:#x} stepping {step})");
    println!("features: {}", cpu_features().join(" "));
    let hz = time::tsc_hz();
    println!("tsc: {}.{:03} MHz ({})", hz / 1_000_000, (hz / 1000) % 1000, time::tsc_source());
    println!("apic: {} id {}, timer {} Hz", apic::mode_name(), apic::id(), apic::timer_hz());
    println!(
        "protection: NX {}, SMEP {}, W^X image, guard pages under stacks",
        if crate::arch::paging::nx() != 0 { "on" } else { "unavailable" },
        if crate::arch::smep_enabled() { "on" } else { "unavailable" }
    );
    let (total, free, _) = mm::frame_stats();
    println!("memory: {} usable, {} free", shell::format_bytes(total), shell::format_bytes(free));
    println!("uptime: {}", shell::format_duration(time::now_ns()));
    println!("cmdline: {}", b.opts.raw);
    println!("version: {} v{} build {}", hypervisor::NAME, crate::VERSION, crate::BUILD_ID);
    println!(
        "boot: {} via {}, entry to prompt {}.{:03} ms",
        match b.info.loader {
            hypervisor::bootinfo::Loader::Multiboot1 => "multiboot1",
            hypervisor::bootinfo::Loader::Multiboot2 => "multiboot2",
        },
        b.info.bootloader_name.as_deref().unwrap_or("unknown loader"),
        crate::prompt_ns() / 1_000_000,
        (crate::prompt_ns() / 1000) % 1000
    );
    if let Some(a) = crate::acpi_info() {
        println!("acpi: rev {} OEM '{}', {} CPU(s), {} I/O APIC(s)", a.revision, a.oem_id, a.cpus.len(), a.ioapics.len());
    }
    println!("modules: {}", b.info.modules.len());
    for (i, m) in b.info.modules.iter().enumerate() {
        println!(
            "  [{i}] {} ({}, at {:#x})",
            if m.cmdline.is_empty() { "(unnamed)" } else { m.cmdline.as_str() },
            shell::format_bytes(m.end - m.start),
            m.start
        );
    }
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point: overflow the stack
fn recurse(depth: u64) -> u64 {
    let buf = [depth; 64];
    core::hint::black_box(&buf);
    recurse(depth + 1) + core::hint::black_box(buf[3])
}

fn crash(args: &[&str]) {
    match args.first().copied() {
        Some("pf") => {
            // SAFETY: deliberately reads an unmapped lower-half address to
            // raise #PF; the handler never returns here.
            let v = unsafe { core::ptr::read_volatile(0x0000_0dea_d000_0000 as *const u64) };
            println!("read {v}");
        }
        Some("gp") => {
            // SAFETY: deliberately reads a non-canonical address to raise #GP.
            let v = unsafe { core::ptr::read_volatile(0x8000_0000_0000_0000 as *const u64) };
            println!("read {v}");
        }
        // SAFETY: ud2 raises #UD; the handler never returns here.
        Some("ud") => unsafe { core::arch::asm!("ud2") },
        // SAFETY: int3 raises #BP; the handler never returns here.
        Some("bp") => unsafe { core::arch::asm!("int3") },
        Some("de") => {
            // SAFETY: dividing by zero raises #DE; registers are declared clobbered.
            unsafe { core::arch::asm!("xor edx, edx", "div ecx", in("ecx") 0u32, inout("eax") 1u32 => _, out("edx") _) };
        }
        Some("stack") => {
            let r = recurse(0);
            println!("{r}");
        }
        _ => println!("usage: crash pf|ud|de|gp|bp|stack"),
    }
}
