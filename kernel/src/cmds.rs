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
    CommandInfo {
        name: "interrupts",
        usage: "interrupts",
        summary: "interrupts and traps taken per vector since boot, and hypercalls",
    },
    CommandInfo {
        name: "loglevel",
        usage: "loglevel [off|error|warn|info|debug|trace]",
        summary: "show or set what the log prints on the console",
    },
    CommandInfo {
        name: "create",
        usage:
            "create [-c] <module|/path/x.cfg|/path/x.elf> [name=N] [memory=MiB] [vcpus=N] [weight=W] [extra=\"...\"]",
        summary: "start a domain from a guest image",
    },
    CommandInfo { name: "list", usage: "list [-l]", summary: "list domains (xm layout; -l for details)" },
    CommandInfo { name: "console", usage: "console <dom>", summary: "attach to a domain's console (Ctrl-] returns)" },
    CommandInfo { name: "pause", usage: "pause <dom>", summary: "stop scheduling a domain" },
    CommandInfo { name: "unpause", usage: "unpause <dom>", summary: "resume a paused domain" },
    CommandInfo {
        name: "shutdown",
        usage: "shutdown <dom>",
        summary: "ask a domain to shut down (destroyed after 10 s)",
    },
    CommandInfo { name: "destroy", usage: "destroy <dom>", summary: "stop a domain at once and free its memory" },
    CommandInfo { name: "rename", usage: "rename <dom> <new-name>", summary: "rename a domain" },
    CommandInfo {
        name: "migrate",
        usage: "migrate [--live] [-p] <dom> <host[:port]>",
        summary: "move a domain to another host (cold, or live with pre-copy)",
    },
    CommandInfo { name: "save", usage: "save <dom> <file>", summary: "save a domain's state to a file and destroy it" },
    CommandInfo { name: "restore", usage: "restore [-p] <file>", summary: "create a domain from a saved state" },
    CommandInfo { name: "vcpu-list", usage: "vcpu-list [dom]", summary: "list vCPUs with state and CPU time" },
    CommandInfo {
        name: "sched-credit",
        usage: "sched-credit [-d <dom> [-w <weight>]]",
        summary: "show or set scheduling weights",
    },
    CommandInfo {
        name: "block-list",
        usage: "block-list <dom>",
        summary: "a domain's disks: image, size, I/O counters",
    },
    CommandInfo {
        name: "network-list",
        usage: "network-list <dom>",
        summary: "a domain's virtual interface and its counters",
    },
    CommandInfo {
        name: "lspci",
        usage: "lspci [-v]",
        summary: "list PCI devices (-v: each BAR and how its mapping is cached, read back from the page tables)",
    },
    CommandInfo { name: "ifconfig", usage: "ifconfig", summary: "NICs and the hypervisor's own address with counters" },
    CommandInfo {
        name: "ping",
        usage: "ping <a.b.c.d> [count]",
        summary: "send ICMP echo requests from the hypervisor (Ctrl-C stops)",
    },
    CommandInfo {
        name: "netbench",
        usage: "netbench sink [port] | send <a.b.c.d> <port> <MiB>",
        summary: "TCP throughput: count what arrives, or send a pattern",
    },
    CommandInfo {
        name: "mount",
        usage: "mount [SERVER:/export DIR [mountport=N] [nfsport=N]]",
        summary: "mount an NFSv3 export (no arguments: list mounts)",
    },
    CommandInfo { name: "umount", usage: "umount DIR", summary: "unmount an NFS export" },
    CommandInfo { name: "df", usage: "df", summary: "size and use of the mounted exports" },
    CommandInfo { name: "ls", usage: "ls [-l] PATH", summary: "list a directory on a mounted export" },
    CommandInfo { name: "cat", usage: "cat PATH", summary: "print a file from a mounted export (first 64 KiB)" },
    CommandInfo { name: "cp", usage: "cp SRC DST", summary: "copy a file on a mounted export" },
    CommandInfo { name: "sha256sum", usage: "sha256sum PATH", summary: "SHA-256 of a file on a mounted export" },
    CommandInfo {
        name: "nfsbench",
        usage: "nfsbench read PATH | write PATH MiB",
        summary: "NFS throughput: read a file, or write a new one",
    },
    CommandInfo { name: "reboot", usage: "reboot", summary: "reset the machine" },
    CommandInfo { name: "poweroff", usage: "poweroff", summary: "power the machine off (ACPI S5)" },
    CommandInfo {
        name: "crash",
        usage: "crash pf|ud|de|gp|bp|stack",
        summary: "diagnostic: raise that exception in the hypervisor",
    },
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
        "interrupts" => interrupts(),
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
        "create" => create(&args),
        "list" => list(&args),
        "console" => console(&args),
        "pause" => pause(&args, true),
        "unpause" => pause(&args, false),
        "shutdown" => shutdown(&args),
        "destroy" => destroy(&args),
        "rename" => rename(&args),
        "migrate" => migrate(&args),
        "save" => save(&args),
        "restore" => restore(&args),
        "vcpu-list" => vcpu_list(&args),
        "sched-credit" => sched_credit(&args),
        "lspci" => lspci(&args),
        "ifconfig" => ifconfig(),
        "ping" => ping(&args),
        "network-list" => network_list(&args),
        "block-list" => block_list(&args),
        "netbench" => netbench(&args),
        "mount" => mount(&args),
        "umount" => umount(&args),
        "df" => df(),
        "ls" => ls(&args),
        "cat" => cat(&args),
        "cp" => cp(&args),
        "sha256sum" => sha256sum(&args),
        "nfsbench" => nfsbench(&args),
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
    let model = if base_family == 0x6 || base_family == 0xF {
        ((f >> 4) & 0xF) | (((f >> 16) & 0xF) << 4)
    } else {
        (f >> 4) & 0xF
    };
    (vendor, String::from(brand.trim()), (family, model, f & 0xF))
}

/// Names of the CPU features the hypervisor cares about, as present.
pub fn cpu_features() -> Vec<&'static str> {
    let l1 = cpu::cpuid(1, 0);
    let max = cpu::cpuid(0, 0).eax;
    let l7 = if max >= 7 { cpu::cpuid(7, 0) } else { cpu::Cpuid::default() };
    let ext =
        if cpu::cpuid(0x8000_0000, 0).eax >= 0x8000_0001 { cpu::cpuid(0x8000_0001, 0) } else { cpu::Cpuid::default() };
    let table: &[(&str, u32, u32)] = &[
        ("fpu", l1.edx, 0),
        ("tsc", l1.edx, 4),
        ("msr", l1.edx, 5),
        ("pae", l1.edx, 6),
        ("apic", l1.edx, 9),
        ("pge", l1.edx, 13),
        ("pat", l1.edx, 16),
        ("clflush", l1.edx, 19),
        ("fxsr", l1.edx, 24),
        ("sse", l1.edx, 25),
        ("sse2", l1.edx, 26),
        ("sse3", l1.ecx, 0),
        ("pclmulqdq", l1.ecx, 1),
        ("vmx", l1.ecx, 5),
        ("ssse3", l1.ecx, 9),
        ("cx16", l1.ecx, 13),
        ("pcid", l1.ecx, 17),
        ("sse4_1", l1.ecx, 19),
        ("sse4_2", l1.ecx, 20),
        ("x2apic", l1.ecx, 21),
        ("movbe", l1.ecx, 22),
        ("popcnt", l1.ecx, 23),
        ("tsc_deadline", l1.ecx, 24),
        ("aes", l1.ecx, 25),
        ("xsave", l1.ecx, 26),
        ("avx", l1.ecx, 28),
        ("f16c", l1.ecx, 29),
        ("rdrand", l1.ecx, 30),
        ("hypervisor", l1.ecx, 31),
        ("fsgsbase", l7.ebx, 0),
        ("bmi1", l7.ebx, 3),
        ("avx2", l7.ebx, 5),
        ("smep", l7.ebx, 7),
        ("bmi2", l7.ebx, 8),
        ("erms", l7.ebx, 9),
        ("invpcid", l7.ebx, 10),
        ("avx512f", l7.ebx, 16),
        ("rdseed", l7.ebx, 18),
        ("adx", l7.ebx, 19),
        ("smap", l7.ebx, 20),
        ("sha", l7.ebx, 29),
        ("umip", l7.ecx, 2),
        ("pku", l7.ecx, 3),
        ("svm", ext.ecx, 2),
        ("lahf_lm", ext.ecx, 0),
        ("abm", ext.ecx, 5),
        ("syscall", ext.edx, 11),
        ("nx", ext.edx, 20),
        ("pdpe1gb", ext.edx, 26),
        ("rdtscp", ext.edx, 27),
        ("lm", ext.edx, 29),
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
    println!("fpu: guest state saved with {}", crate::arch::fpu::mechanism());
    println!(
        "cpu policy: {}; guest cpuid {}",
        crate::domains::host_policy().summary(),
        if crate::arch::cpuid_fault::enabled() {
            "trapped (CPUID faulting)"
        } else {
            "native (use the cpuid hypercall)"
        }
    );
    println!("relocation: {}", crate::migrate::status());
    let onoff = |b: bool| if b { "on" } else { "unavailable" };
    let (smep, smap) = crate::arch::smep_smap_enabled();
    println!(
        "protection: NX {}, SMEP {}, SMAP {}, W^X image, guard pages under stacks",
        onoff(crate::arch::paging::nx() != 0),
        onoff(smep),
        onoff(smap)
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
        println!(
            "acpi: rev {} OEM '{}', {} CPU(s), {} I/O APIC(s)",
            a.revision,
            a.oem_id,
            a.cpus.len(),
            a.ioapics.len()
        );
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

/// What raises a vector, for `interrupts`.
fn vector_source(v: u8) -> String {
    use crate::arch::trap;
    let nic = crate::network::NIC_VECTOR_BASE;
    match v {
        0..=31 => {
            let (mnemonic, name) = trap::exception_name(u64::from(v));
            alloc::format!("{mnemonic} {name} (guest exceptions, recovered faults)")
        }
        apic::TIMER_VECTOR => alloc::format!("local APIC timer ({} Hz)", apic::timer_hz()),
        trap::SERIAL_VECTOR => "serial console receive (16550 through the I/O APIC)".into(),
        v if (nic..nic + 8).contains(&v) => alloc::format!("NIC {} receive (PCI INTx)", v - nic),
        apic::SPURIOUS_VECTOR => "spurious".into(),
        _ => "unassigned".into(),
    }
}

fn interrupts() {
    let counts = crate::arch::trap::vector_counts();
    println!("vector        count  source");
    for (v, &n) in counts.iter().enumerate() {
        let v = v as u8;
        // The timer and the console are always listed, even at zero.
        if n != 0 || v == apic::TIMER_VECTOR || v == crate::arch::trap::SERIAL_VECTOR {
            println!("  {v:#04x} {n:>12}  {}", vector_source(v));
        }
    }
    println!("hypercalls: {}", crate::arch::trap::hypercalls());
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
            unsafe {
                core::arch::asm!("xor edx, edx", "div ecx", in("ecx") 0u32, inout("eax") 1u32 => _, out("edx") _)
            };
        }
        Some("stack") => {
            let r = recurse(0);
            println!("{r}");
        }
        _ => println!("usage: crash pf|ud|de|gp|bp|stack"),
    }
}

// ------------------------------------------------------------ domains --

/// Boot modules by name: the module's command line (GRUB `module2 FILE
/// NAME`), else the file's base name without extension.
fn find_module(name: &str) -> Option<(String, &'static [u8])> {
    let b = crate::boot();
    let want = name.trim_start_matches("module:");
    b.info.modules.iter().find_map(|m| {
        let label = m.cmdline.split_whitespace().next().unwrap_or("");
        let base = label.rsplit('/').next().unwrap_or(label);
        let stem = base.split('.').next().unwrap_or(base);
        (label == want || base == want || stem == want)
            .then(|| Some((String::from(stem), mm::module_bytes(m)?)))
            .flatten()
    })
}

fn resolve(arg: Option<&&str>) -> Option<hypervisor::domain::DomId> {
    let Some(arg) = arg else {
        println!("error: which domain? (name or ID)");
        return None;
    };
    match crate::domains::with_table(|t| t.resolve(arg)) {
        Ok(id) => Some(id),
        Err(e) => {
            println!("error: {e}");
            None
        }
    }
}

/// Largest guest image read from a share.
const MAX_IMAGE: u64 = 64 << 20;

/// Reads an xl.cfg from a share and the kernel it names; returns the create
/// arguments, the kernel image and the opened disks.
fn config_args(path: &str) -> Result<(hypervisor::domain::CreateArgs, Vec<u8>, Vec<crate::blk::OpenDisk>), String> {
    let text = crate::storage::read_file(path, 256 * 1024)?;
    let text = core::str::from_utf8(&text).map_err(|_| alloc::format!("{path}: not UTF-8 text"))?;
    let file = path.rsplit('/').next().unwrap_or(path);
    let cfg = hypervisor::xlcfg::domain_config(file, text).map_err(|e| alloc::format!("{e}"))?;
    for w in &cfg.warnings {
        log::warn!("{w}");
    }
    if cfg.disks.len() > crate::blk::MAX_DISKS {
        return Err(alloc::format!("{file}: disk: at most {} disks per domain", crate::blk::MAX_DISKS));
    }
    let vif = cfg.vifs.first().map(|v| v.mac.as_ref().map(|m| alloc::format!("mac={m}")).unwrap_or_default());
    let kernel =
        crate::storage::read_file(&cfg.kernel, MAX_IMAGE).map_err(|e| alloc::format!("{file}: kernel: {e}"))?;
    let args = hypervisor::domain::CreateArgs {
        image: cfg.kernel.clone(),
        name: Some(cfg.name.clone()),
        memory_mib: cfg.memory_mib,
        vcpus: cfg.vcpus,
        extra: cfg.extra.clone(),
        weight: cfg.weight,
        vif,
        cpuid: cfg.cpuid.clone(),
        on_poweroff: cfg.on_poweroff,
        on_crash: cfg.on_crash,
    };
    let mut disks = Vec::new();
    for d in &cfg.disks {
        let writable = d.access == hypervisor::xlcfg::Access::ReadWrite;
        disks.push(crate::blk::open(&d.target, &d.vdev, writable).map_err(|e| alloc::format!("{file}: disk: {e}"))?);
    }
    Ok((args, kernel, disks))
}

/// Creates a domain again after `on_poweroff`/`on_crash` = restart: its
/// image is read again (boot module or share), its disks reopened.
pub fn respawn(r: crate::domains::Respawn) {
    let name = r.args.name.clone().unwrap_or_default();
    // As xl: a domain that comes back within 10 s of its last restart is
    // failing at start-up; it is not restarted again.
    static LAST: spin::Mutex<Vec<(String, u64)>> = spin::Mutex::new(Vec::new());
    let now = time::now_ns();
    {
        let mut last = LAST.lock();
        if last.iter().any(|(n, t)| *n == name && now.saturating_sub(*t) < 10_000_000_000) {
            log::error!("domain {name}: restarting too fast (twice within 10 s); not restarted");
            return;
        }
        last.retain(|(n, _)| *n != name);
        last.push((name.clone(), now));
    }
    let image: Result<(String, Vec<u8>), String> = match find_module(&r.args.image) {
        Some((stem, bytes)) => Ok((stem, bytes.to_vec())),
        None if r.args.image.starts_with('/') => crate::storage::read_file(&r.args.image, MAX_IMAGE)
            .map(|b| (hypervisor::domain::default_name(&r.args.image), b)),
        None => Err(alloc::format!("no boot module '{}'", r.args.image)),
    };
    let mut disks = Vec::new();
    let result = image.and_then(|(stem, bytes)| {
        for (target, vdev, writable) in &r.disks {
            disks.push(crate::blk::open(target, vdev, *writable)?);
        }
        crate::domains::create(&r.args, &stem, &bytes, disks)
    });
    match result {
        Ok(id) => log::info!("domain {id} ({name}): restarted"),
        Err(e) => log::error!("domain {name}: restart failed: {e}"),
    }
}

fn create(args: &[&str]) {
    // `-c` (as in xl): attach to the new domain's console right away.
    let attach = args.contains(&"-c");
    let args: Vec<&str> = args.iter().copied().filter(|a| *a != "-c").collect();
    let a = match hypervisor::domain::parse_create(&args) {
        Ok(a) => a,
        Err(e) => {
            println!("error: {e}");
            return;
        }
    };
    // An image on a mounted export: an xl.cfg file or a guest ELF.
    let mut a = a;
    let loaded: Vec<u8>;
    let mut disks: Vec<crate::blk::OpenDisk> = Vec::new();
    let (stem, bytes): (String, &[u8]) = if a.image.starts_with('/') && find_module(&a.image).is_none() {
        if a.image.ends_with(".cfg") {
            if args.len() > 1 {
                println!("error: create {}: a config file takes no further options (edit the file)", a.image);
                return;
            }
            match config_args(&a.image) {
                Ok((args_from_cfg, kernel, opened)) => {
                    a = args_from_cfg;
                    loaded = kernel;
                    disks = opened;
                }
                Err(e) => {
                    println!("error: create {e}");
                    return;
                }
            }
        } else {
            match crate::storage::read_file(&a.image, MAX_IMAGE) {
                Ok(k) => loaded = k,
                Err(e) => {
                    println!("error: create {e}");
                    return;
                }
            }
        }
        (hypervisor::domain::default_name(&a.image), &loaded)
    } else {
        match find_module(&a.image) {
            Some((stem, bytes)) => (stem, bytes),
            None => {
                let b = crate::boot();
                let names: Vec<&str> = b.info.modules.iter().map(|m| m.cmdline.as_str()).collect();
                if names.is_empty() {
                    println!("error: no boot module named '{}' (none were loaded)", a.image);
                } else {
                    println!("error: no boot module named '{}' (have: {})", a.image, names.join(", "));
                }
                return;
            }
        }
    };
    let t0 = time::now_ns();
    match crate::domains::create(&a, &stem, bytes, disks) {
        Ok(id) => {
            let us = (time::now_ns() - t0) / 1000;
            let name = crate::domains::with_table(|t| t.name(id).map(String::from)).unwrap_or_default();
            println!("created domain {id} ({name}) in {}.{:03} ms", us / 1000, us % 1000);
            if attach {
                console(&[name.as_str()]);
            }
        }
        Err(e) => println!("error: create {}: {e}", a.image),
    }
}

fn hypervisor_cpu_ns() -> u64 {
    let guests: u64 = crate::domains::with_table(|t| t.iter().map(|(_, _, d)| d.cpu_time_ns()).sum());
    time::now_ns().saturating_sub(crate::vcpu::idle_ns()).saturating_sub(guests)
}

/// One domain's `list` data, copied out of the table: name, ID, MiB,
/// vCPUs, state, CPU ns and the `list -l` extras.
type ListEntry = (String, u32, u64, u32, hypervisor::domain::StateFlags, u64, Vec<(String, String)>);

fn list(args: &[&str]) {
    let long = args.first() == Some(&"-l");
    let (total, _, _) = mm::frame_stats();
    let host = crate::boot().opts.hostname.clone();
    let rows: Vec<ListEntry> = crate::domains::with_table(|t| {
        t.iter()
            .map(|(id, name, d)| {
                let mut extra = alloc::vec![
                    (String::from("image"), d.image.clone()),
                    (String::from("cmdline"), d.cmdline.clone()),
                    (String::from("weight"), alloc::format!("{}", d.weight)),
                ];
                if let Some(crate::domains::Stop::Crashed(r)) = &d.stop {
                    extra.push((String::from("crash"), r.clone()));
                }
                extra.push((String::from("console"), alloc::format!("{} bytes buffered", d.console.len())));
                (String::from(name), id, d.mem_bytes >> 20, d.vcpus.len() as u32, d.flags(), d.cpu_time_ns(), extra)
            })
            .collect()
    });
    let guest_mem: u64 = rows.iter().map(|r| r.2).sum();
    let dom0 = hypervisor::domain::ListRow {
        name: &host,
        id: 0,
        mem_mib: (total >> 20).saturating_sub(guest_mem),
        vcpus: 1,
        state: hypervisor::domain::StateFlags { running: true, ..Default::default() },
        cpu_time_ns: hypervisor_cpu_ns(),
    };
    let mut list_rows = alloc::vec![dom0];
    for r in &rows {
        list_rows.push(hypervisor::domain::ListRow {
            name: &r.0,
            id: r.1,
            mem_mib: r.2,
            vcpus: r.3,
            state: r.4,
            cpu_time_ns: r.5,
        });
    }
    if long {
        let mut extras: Vec<Vec<(&str, &str)>> = alloc::vec![Vec::new()];
        for r in &rows {
            extras.push(r.6.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect());
        }
        print!("{}", hypervisor::domain::format_list_long(&list_rows, &extras));
    } else {
        print!("{}", hypervisor::domain::format_list(&list_rows));
    }
}

fn destroy(args: &[&str]) {
    if let Some(id) = resolve(args.first()) {
        if crate::domains::destroy(id) {
            log::info!("domain {id}: destroyed");
        }
    }
}

fn pause(args: &[&str], paused: bool) {
    if let Some(id) = resolve(args.first()) {
        if let Err(e) = crate::domains::set_paused(id, paused) {
            println!("error: {e}");
        }
    }
}

fn shutdown(args: &[&str]) {
    if let Some(id) = resolve(args.first()) {
        match crate::domains::request_shutdown(id) {
            Ok(()) => println!("asked domain {id} to shut down (forced in 10 s)"),
            Err(e) => println!("error: {e}"),
        }
    }
}

fn console(args: &[&str]) {
    let Some(id) = resolve(args.first()) else { return };
    let backlog = crate::domains::with_table(|t| {
        t.get_mut(id).map(|d| {
            let mut raw = Vec::new();
            d.console.drain_into(&mut raw);
            let mut out = Vec::new();
            d.out_filter.feed(&raw, &mut out);
            out
        })
    });
    let Some(backlog) = backlog else { return };
    println!("[attached to domain {id}; Ctrl-] returns to {}]", hypervisor::NAME);
    crate::console::write_bytes(&backlog);
    crate::hypercall::attach_console(id);
}

/// Operator keystrokes for an attached guest console.
pub fn console_input(id: hypervisor::domain::DomId, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    crate::domains::with_table(|t| {
        if let Some(d) = t.get_mut(id) {
            // Bounded: a guest that never reads cannot make the host grow.
            let room = 4096usize.saturating_sub(d.input.len());
            d.input.extend(bytes.iter().take(room));
        }
    });
    crate::domains::post_event(id, guest_abi::event::CONSOLE_INPUT);
}

fn vcpu_list(args: &[&str]) {
    let filter = match args.first() {
        Some(_) => match resolve(args.first()) {
            Some(id) => Some(id),
            None => return,
        },
        None => None,
    };
    println!("Name                                ID  VCPU   CPU State   Time(s)");
    crate::domains::with_table(|t| {
        for (id, name, d) in t.iter() {
            if filter.is_some_and(|f| f != id) {
                continue;
            }
            for (i, v) in d.vcpus.iter().enumerate() {
                let st = if d.stop.is_some() || d.paused || !v.started {
                    "-p-"
                } else if crate::vcpu::is_running(v.thread)
                    || crate::vcpu::state(v.thread) == Some(hypervisor::sched::State::Runnable)
                {
                    "r--"
                } else {
                    "-b-"
                };
                let ns = crate::vcpu::cpu_time_ns(v.thread);
                println!(
                    "{name:<32} {id:>5} {i:>5} {:>5} {st:<5} {:>9}.{}",
                    0,
                    ns / 1_000_000_000,
                    (ns / 100_000_000) % 10
                );
            }
        }
    });
}

fn rename(args: &[&str]) {
    let (Some(_), Some(new)) = (args.first(), args.get(1)) else {
        println!("usage: rename <domain> <new-name>");
        return;
    };
    if let Some(id) = resolve(args.first()) {
        if let Err(e) = crate::domains::with_table(|t| t.rename(id, new)) {
            println!("error: {e}");
        }
    }
}

fn sched_credit(args: &[&str]) {
    // sched-credit [-d <dom> [-w <weight>]]
    let mut dom = None;
    let mut weight = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-d" => dom = it.next().copied(),
            "-w" => weight = it.next().copied(),
            other => {
                println!("error: unknown option '{other}' (usage: sched-credit [-d <dom> [-w <weight>]])");
                return;
            }
        }
    }
    match (dom, weight) {
        (None, _) => {
            println!("Name                                ID Weight");
            crate::domains::with_table(|t| {
                for (id, name, d) in t.iter() {
                    println!("{name:<32} {id:>5} {:>6}", d.weight);
                }
            });
        }
        (Some(d), None) => {
            if let Some(id) = resolve(Some(&d)) {
                let w = crate::domains::with_table(|t| t.get(id).map(|d| d.weight)).unwrap_or(0);
                println!("Name                                ID Weight");
                let name = crate::domains::with_table(|t| t.name(id).map(String::from)).unwrap_or_default();
                println!("{name:<32} {id:>5} {w:>6}");
            }
        }
        (Some(d), Some(w)) => {
            let Some(id) = resolve(Some(&d)) else { return };
            let w: u16 = match w.parse() {
                Ok(v) if v >= 1 => v,
                _ => {
                    println!("error: bad weight '{w}' (expected 1-65535)");
                    return;
                }
            };
            crate::domains::with_table(|t| {
                if let Some(d) = t.get_mut(id) {
                    d.weight = w;
                    for v in &d.vcpus {
                        crate::vcpu::set_weight(v.thread, w);
                    }
                }
            });
        }
    }
}

// ------------------------------------------------------------ network --

fn lspci(args: &[&str]) {
    let verbose = match args {
        [] => false,
        ["-v"] => true,
        _ => {
            println!("usage: lspci [-v]");
            return;
        }
    };
    for l in crate::network::lspci(verbose) {
        println!("{l}");
    }
}

fn ifconfig() {
    for l in crate::network::ifconfig() {
        println!("{l}");
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn migrate(args: &[&str]) {
    let live = args.contains(&"--live") || args.contains(&"-l");
    let paused = args.contains(&"-p");
    let rest: Vec<&str> = args.iter().copied().filter(|a| !a.starts_with('-')).collect();
    if rest.len() != 2 || args.iter().any(|a| a.starts_with('-') && !["--live", "-l", "-p"].contains(a)) {
        println!("usage: migrate [--live] [-p] <dom> <host[:port]>");
        return;
    }
    let Some(id) = resolve(rest.first()) else { return };
    let name = crate::domains::with_table(|t| t.name(id).map(String::from)).unwrap_or_default();
    let req = crate::migrate::Request { live, paused_at_dest: paused };
    println!("migrate: {name} (domain {id}) to {} ({})", rest[1], if live { "live" } else { "cold" });
    match crate::migrate::migrate(id, rest[1], &req) {
        Ok(r) => println!(
            "migrate: {name} done: {}, {} round(s), {} pages, {:.1} MiB sent, downtime {} ms, total {}.{:03} s, now domain {} there",
            if live { "live" } else { "cold" },
            r.rounds,
            r.pages,
            mib(r.bytes),
            r.downtime_ms,
            r.total_ms / 1000,
            r.total_ms % 1000,
            r.new_id.unwrap_or(0)
        ),
        Err(e) => println!("error: migrate {name}: {e}; the domain stays here"),
    }
}

fn save(args: &[&str]) {
    if args.len() != 2 {
        println!("usage: save <dom> <file>");
        return;
    }
    let Some(id) = resolve(args.first()) else { return };
    match crate::migrate::save(id, args[1]) {
        Ok(r) => println!(
            "saved domain {id} to {}: {} pages, {:.1} MiB in {}.{:03} s",
            args[1],
            r.pages,
            mib(r.bytes),
            r.total_ms / 1000,
            r.total_ms % 1000
        ),
        Err(e) => println!("error: save: {e}; the domain stays"),
    }
}

fn restore(args: &[&str]) {
    let paused = args.contains(&"-p");
    let rest: Vec<&str> = args.iter().copied().filter(|a| *a != "-p").collect();
    if rest.len() != 1 {
        println!("usage: restore [-p] <file>");
        return;
    }
    match crate::migrate::restore(rest[0], paused) {
        Ok((id, msg)) => {
            let name = crate::domains::with_table(|t| t.name(id).map(String::from)).unwrap_or_default();
            println!("restored domain {id} ({name}): {msg}");
        }
        Err(e) => println!("error: restore {}: {e}", rest[0]),
    }
}

fn block_list(args: &[&str]) {
    let Some(id) = resolve(args.first()) else { return };
    let disks = crate::blk::list(id);
    if disks.is_empty() {
        println!("domain {id} has no disks");
        return;
    }
    println!(
        "{:<4} {:<6} {:<3} {:>9} {:>9} {:>9} {:>8} {:>9} {:>7}  Image",
        "Idx", "Vdev", "RW", "Size(MiB)", "Reads", "Writes", "Flushes", "Dirty(KiB)", "Errors"
    );
    for (i, d) in disks.iter().enumerate() {
        println!(
            "{:<4} {:<6} {:<3} {:>9} {:>9} {:>9} {:>8} {:>9} {:>7}  nfs://{}{}",
            i,
            d.vdev,
            if d.writable { "w" } else { "r" },
            d.size >> 20,
            d.reads,
            d.writes,
            d.flushes,
            d.dirty_bytes >> 10,
            d.errors,
            net::stack::fmt_ipv4(d.server),
            d.target
        );
    }
}

fn network_list(args: &[&str]) {
    if let Some(id) = resolve(args.first()) {
        for l in crate::network::network_list(id) {
            println!("{l}");
        }
    }
}

fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Waits a little (runs guests or halts until the next interrupt); true if
/// the operator pressed Ctrl-C meanwhile.
pub fn wait_interruptible() -> bool {
    crate::vcpu::shell_idle();
    let mut buf = [0u8; 16];
    let n = crate::drivers::serial::read(&mut buf);
    buf[..n].contains(&0x03)
}

fn ping(args: &[&str]) {
    let Some(dst) = args.first().and_then(|a| parse_ipv4(a)) else {
        println!("usage: ping <a.b.c.d> [count]");
        return;
    };
    let count: u16 = match args.get(1) {
        None => 4,
        Some(c) => match c.parse() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                println!("error: bad count '{c}' (expected 1-10000)");
                return;
            }
        },
    };
    let ip = alloc::format!("{}.{}.{}.{}", dst[0], dst[1], dst[2], dst[3]);
    let ident = (crate::arch::cpu::rdtsc() & 0xFFFF) as u16;
    println!("PING {ip}: 56 data bytes");
    let (mut sent, mut received) = (0u32, 0u32);
    let mut rtts: Vec<u64> = Vec::new();
    let mut interrupted = false;
    'outer: for seq in 1..=count {
        let t0 = time::now_ns();
        match crate::network::with_stack(|s| s.ping_send(dst, ident, seq, 56, t0 / 1000)) {
            None => {
                println!("error: the hypervisor has no network (boot with ip=dhcp or ip=A.B.C.D/N and a NIC)");
                return;
            }
            Some(Err(e)) => {
                println!("error: ping {ip}: {e}");
                return;
            }
            Some(Ok(())) => {}
        }
        sent += 1;
        crate::network::pump();
        let mut replied = false;
        loop {
            let now = time::now_ns();
            if let Some(r) = crate::network::with_stack(|s| s.ping_recv(now / 1000)).flatten() {
                if r.seq == seq {
                    replied = true;
                    received += 1;
                    rtts.push(r.rtt_us);
                    println!(
                        "{} bytes from {ip}: icmp_seq={seq} time={}.{:03} ms",
                        r.bytes,
                        r.rtt_us / 1000,
                        r.rtt_us % 1000
                    );
                }
                continue;
            }
            if replied && seq == count {
                break;
            }
            if now - t0 >= 1_000_000_000 {
                if !replied {
                    println!("no reply from {ip}: icmp_seq={seq}");
                }
                break;
            }
            if wait_interruptible() {
                interrupted = true;
                break 'outer;
            }
        }
    }
    if interrupted {
        println!("^C");
    }
    let loss = ((sent - received) * 100).checked_div(sent).unwrap_or(0);
    println!("--- {ip} ping statistics ---");
    println!("{sent} packets transmitted, {received} received, {loss}% packet loss");
    if let (Some(min), Some(max)) = (rtts.iter().min(), rtts.iter().max()) {
        let avg = rtts.iter().sum::<u64>() / rtts.len() as u64;
        let f = |us: u64| alloc::format!("{}.{:03}", us / 1000, us % 1000);
        println!("rtt min/avg/max = {}/{}/{} ms", f(*min), f(avg), f(*max));
    }
}

fn netbench(args: &[&str]) {
    const USAGE: &str = "usage: netbench sink [port] | send <a.b.c.d> <port> <MiB>";
    match args {
        ["sink"] | ["sink", _] => {
            let port = match args.get(1).map(|p| p.parse::<u16>()) {
                None => 5001,
                Some(Ok(p)) if p > 0 => p,
                _ => {
                    println!("error: bad port (expected 1-65535)");
                    return;
                }
            };
            let before = crate::network::with_stack(|s| {
                let b = s.sink_bytes();
                s.sink_listen(port);
                b
            });
            match before {
                Some(b) => println!("sink listening on TCP port {port} ({b} bytes received before)"),
                None => println!("error: the hypervisor has no network (boot with ip=... and a NIC)"),
            }
        }
        ["sink-bytes"] => match crate::network::with_stack(|s| s.sink_bytes()) {
            Some(b) => println!("sink: {b} bytes"),
            None => println!("error: no network"),
        },
        ["send", ip, port, mib] => {
            let (Some(dst), Ok(port), Ok(mib)) = (parse_ipv4(ip), port.parse::<u16>(), mib.parse::<u64>()) else {
                println!("{USAGE}");
                return;
            };
            if !(1..=65536).contains(&mib) {
                println!("error: MiB must be 1-65536");
                return;
            }
            let t0 = time::now_ns();
            let started = crate::network::with_stack(|s| s.source_start(dst, port, mib << 20, t0 / 1_000_000));
            match started {
                None => {
                    println!("error: the hypervisor has no network");
                    return;
                }
                Some(Err(e)) => {
                    println!("error: netbench send: {e}");
                    return;
                }
                Some(Ok(())) => {}
            }
            crate::network::pump();
            loop {
                let p = crate::network::with_stack(|s| s.source_progress()).flatten();
                match p {
                    Some(p) if p.done => {
                        let ns = (time::now_ns() - t0).max(1);
                        match p.error {
                            Some(e) => println!("error: netbench send: {e} after {} bytes", p.sent),
                            None => {
                                let kib_s = p.sent * 1_000_000_000 / 1024 / ns;
                                println!(
                                    "sent {} bytes in {} ms: {}.{:02} MiB/s",
                                    p.sent,
                                    ns / 1_000_000,
                                    kib_s / 1024,
                                    (kib_s % 1024) * 100 / 1024
                                );
                            }
                        }
                        return;
                    }
                    None => {
                        println!("error: netbench send: no transfer");
                        return;
                    }
                    Some(_) => {}
                }
                if wait_interruptible() {
                    println!("^C");
                    return;
                }
            }
        }
        _ => println!("{USAGE}"),
    }
}

// ------------------------------------------------------------ storage --

fn mount(args: &[&str]) {
    let [spec, at, opts @ ..] = args else {
        if args.is_empty() {
            for l in crate::storage::list() {
                println!("{l}");
            }
        } else {
            println!("usage: mount SERVER:/export DIR [mountport=N] [nfsport=N]");
        }
        return;
    };
    let (mut mport, mut nport) = (0u16, 0u16);
    for o in opts {
        let parsed = match o.split_once('=') {
            Some(("mountport", v)) => v.parse().map(|p| mport = p).is_ok(),
            Some(("nfsport", v)) => v.parse().map(|p| nport = p).is_ok(),
            _ => false,
        };
        if !parsed {
            println!("error: mount: bad option '{o}' (expected mountport=N or nfsport=N)");
            return;
        }
    }
    if let Err(e) = crate::storage::mount(spec, at, mport, nport, None) {
        println!("error: mount {spec}: {e}");
    }
}

fn umount(args: &[&str]) {
    match args.first() {
        Some(at) => {
            if let Err(e) = crate::storage::umount(at) {
                println!("error: umount: {e}");
            }
        }
        None => println!("usage: umount DIR"),
    }
}

fn df() {
    for l in crate::storage::df() {
        println!("{l}");
    }
}

fn ls(args: &[&str]) {
    let long = args.first() == Some(&"-l");
    let Some(path) = args.iter().find(|a| !a.starts_with('-')) else {
        println!("usage: ls [-l] PATH");
        return;
    };
    let r = crate::storage::with_path(path, |nfs, rel| {
        let (fh, attr) = nfs.lookup(rel)?;
        if attr.ftype != net::nfs3::FType3::Dir {
            return Ok(alloc::vec![(String::from(*path), Some(attr))]);
        }
        let mut entries: Vec<(String, Option<net::nfs3::Fattr3>)> = nfs
            .readdir(&fh)?
            .into_iter()
            .filter(|e| e.name != "." && e.name != "..")
            .map(|e| (e.name, e.attr))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    });
    match r {
        Err(e) => println!("error: ls {e}"),
        Ok(entries) => {
            for (name, attr) in entries {
                match (long, attr) {
                    (true, Some(a)) => {
                        let kind = if a.ftype == net::nfs3::FType3::Dir { 'd' } else { '-' };
                        println!("{kind}{:04o} {:>5} {:>5} {:>12} {name}", a.mode & 0o7777, a.uid, a.gid, a.size);
                    }
                    _ => println!("{name}"),
                }
            }
        }
    }
}

fn cat(args: &[&str]) {
    const MAX: u64 = 64 * 1024;
    let Some(path) = args.first() else {
        println!("usage: cat PATH");
        return;
    };
    match crate::storage::read_file(path, MAX + 1) {
        Err(e) => println!("error: cat {e}"),
        Ok(data) => {
            let shown = &data[..data.len().min(MAX as usize)];
            let mut out = Vec::with_capacity(shown.len() + 16);
            hypervisor::conring::sanitize_guest_output(shown, &mut out);
            crate::console::write_bytes(&out);
            if !shown.ends_with(b"\n") {
                println!();
            }
            if data.len() as u64 > MAX {
                println!("[cat: output stopped after 64 KiB]");
            }
        }
    }
}

fn cp(args: &[&str]) {
    let [src, dst] = args else {
        println!("usage: cp SRC DST");
        return;
    };
    let t0 = time::now_ns();
    match crate::storage::copy(src, dst) {
        Ok(n) => {
            let ms = ((time::now_ns() - t0) / 1_000_000).max(1);
            println!("copied {n} bytes in {ms} ms");
        }
        Err(e) => println!("error: {e}"),
    }
}

fn sha256sum(args: &[&str]) {
    let Some(path) = args.first() else {
        println!("usage: sha256sum PATH");
        return;
    };
    let t0 = time::now_ns();
    match crate::storage::sha256(path) {
        Ok((h, n)) => {
            let hex: String = h.iter().map(|b| alloc::format!("{b:02x}")).collect();
            let ms = ((time::now_ns() - t0) / 1_000_000).max(1);
            println!("{hex}  {path}");
            log::info!("sha256sum: {n} bytes in {ms} ms ({} KiB/s)", n * 1000 / 1024 / ms);
        }
        Err(e) => println!("error: sha256sum {e}"),
    }
}

fn nfsbench(args: &[&str]) {
    let t0 = time::now_ns();
    let r = match args {
        ["read", path] => crate::storage::read_discard(path),
        ["write", path, mib] => match mib.parse::<u64>() {
            Ok(m) if (1..=4096).contains(&m) => crate::storage::write_pattern(path, m << 20),
            _ => Err(String::from("MiB must be 1-4096")),
        },
        _ => {
            println!("usage: nfsbench read PATH | write PATH MiB");
            return;
        }
    };
    match r {
        Ok(n) => {
            let ns = (time::now_ns() - t0).max(1);
            let kib_s = n * 1_000_000_000 / 1024 / ns;
            println!(
                "nfsbench: {} {n} bytes in {} ms: {}.{:02} MiB/s",
                args[0],
                ns / 1_000_000,
                kib_s / 1024,
                (kib_s % 1024) * 100 / 1024
            );
        }
        Err(e) => println!("error: nfsbench {e}"),
    }
}
