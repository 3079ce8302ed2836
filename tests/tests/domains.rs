//! Paravirtual domains: lifecycle commands, the xm `list` layout, ELF
//! validation, memory accounting, scheduling weights, FPU and SMP state, and
//! isolation from a hostile guest.
use std::time::Duration;

use systest::contract::parse_mem;
use systest::{boot_with_guests, timeouts, Error, Qemu, Regex};

const CMD: Duration = timeouts::COMMAND;

/// A `list` row: name, ID, Mem(MiB), VCPUs, State, Time(s).
type Row = (String, u32, u64, u32, String, f64);

/// `list` rows.
fn list(q: &mut Qemu) -> Result<Vec<Row>, Error> {
    let out = q.command("list", CMD)?;
    let mut lines = out.lines().skip_while(|l| !l.starts_with("Name "));
    let header = lines.next().unwrap_or_default();
    assert_eq!(header, "Name                                      ID Mem(MiB) VCPUs State   Time(s)");
    let row = Regex::new(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([rbpscd-]{6})\s+(\d+\.\d)$").unwrap();
    Ok(lines
        .filter_map(|l| row.captures(l))
        .map(|c| {
            (
                c[1].to_string(),
                c[2].parse().unwrap(),
                c[3].parse().unwrap(),
                c[4].parse().unwrap(),
                c[5].to_string(),
                c[6].parse().unwrap(),
            )
        })
        .collect())
}

fn row<'a>(
    rows: &'a [(String, u32, u64, u32, String, f64)],
    name: &str,
) -> Option<&'a (String, u32, u64, u32, String, f64)> {
    rows.iter().find(|r| r.0 == name)
}

fn free_mib(q: &mut Qemu) -> Result<f64, Error> {
    let out = q.command("mem", CMD)?;
    Ok(parse_mem(&out).unwrap_or_else(|| panic!("mem did not parse: {out}")).free / (1024.0 * 1024.0))
}

#[test]
fn lifecycle_list_pause_rename_shutdown_destroy() -> Result<(), Error> {
    let mut q = boot_with_guests(&["heartbeat", "spin"], "qemu64", "256M")?;
    let out = q.command("create heartbeat name=rx7 memory=8 extra=\"period_ms=100\"", CMD)?;
    assert!(out.contains("created domain 1 (rx7)"), "{out}");
    let rows = list(&mut q)?;
    let dom0 = &rows[0];
    assert_eq!((dom0.0.as_str(), dom0.1, dom0.3, dom0.4.as_str()), ("Domain-0", 0, 1, "r-----"));
    let rx7 = row(&rows, "rx7").expect("rx7 listed");
    assert_eq!((rx7.1, rx7.2, rx7.3), (1, 8, 1));
    assert!(rx7.4 == "-b----" || rx7.4 == "r-----", "{rx7:?}");

    q.command("pause rx7", CMD)?;
    assert_eq!(row(&list(&mut q)?, "rx7").unwrap().4, "--p---");
    q.command("unpause 1", CMD)?;
    assert_ne!(row(&list(&mut q)?, "rx7").unwrap().4, "--p---");

    let out = q.command("rename rx7 www", CMD)?;
    assert!(!out.contains("error"), "{out}");
    let out = q.command("create spin name=www", CMD)?;
    assert!(out.contains("error: create spin: domain name 'www' is already in use"), "{out}");
    let out = q.command("create spin name=mail", CMD)?;
    assert!(out.contains("created domain 2 (mail)"), "{out}");

    // A clean shutdown: the guest sees the event and exits by itself.
    q.command("shutdown www", CMD)?;
    q.expect("domain 1 (www): exited with status 0", CMD)?;
    q.command("destroy mail", CMD)?;
    let rows = list(&mut q)?;
    assert_eq!(rows.len(), 1, "only Domain-0 left: {rows:?}");
    // IDs are never reused.
    let out = q.command("create heartbeat", CMD)?;
    assert!(out.contains("created domain 3 (heartbeat)"), "{out}");
    let out = q.command("destroy nosuch", CMD)?;
    assert_eq!(out.trim(), "error: no domain named 'nosuch'");
    // A domain that cannot answer (paused) is destroyed when the grace
    // period ends.
    q.command("pause heartbeat", CMD)?;
    let out = q.command("shutdown heartbeat", CMD)?;
    assert!(out.contains("asked domain 3 to shut down"), "{out}");
    assert_eq!(row(&list(&mut q)?, "heartbeat").map(|r| r.4.as_str()), Some("--ps--"));
    q.expect("domain 3: did not shut down within 10 s; destroyed", Duration::from_secs(30))?;
    assert_eq!(list(&mut q)?.len(), 1);
    Ok(())
}

#[test]
fn console_keeps_output_while_detached_and_ctrl_bracket_returns() -> Result<(), Error> {
    let mut q = boot_with_guests(&["heartbeat"], "qemu64", "256M")?;
    q.command("create heartbeat extra=\"period_ms=50\"", CMD)?;
    // Let it print while nobody is attached, then attach: the backlog shows.
    q.command("uptime", CMD)?;
    std::thread::sleep(Duration::from_millis(600)); // guest time passes; output is buffered, not awaited
    q.send_line("console heartbeat")?;
    q.expect("[attached to domain 1", CMD)?;
    let backlog = q.expect("heartbeat heartbeat seq=8 ", CMD)?;
    assert!(backlog.contains("heartbeat: start"), "the start line was kept: {backlog}");
    q.send(b"\x1d")?;
    q.expect(systest::PROMPT, CMD)?;
    let out = q.command("list", CMD)?;
    assert!(out.contains("heartbeat"), "{out}");
    Ok(())
}

#[test]
fn bad_images_and_arguments_are_refused_without_leaks() -> Result<(), Error> {
    // A non-ELF module (the kernel's own file is an ELF of the wrong kind:
    // it loads below the image base).
    let mut q = systest::QemuBuilder::kernel(systest::images::elf()?)
        .append("console=ttyS0")
        .initrd(systest::repo_root().join("README.md"))
        .initrd(systest::images::elf()?)
        .initrd(systest::images::guest("heartbeat")?)
        .spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    let before = free_mib(&mut q)?;
    let out = q.command("create README", CMD)?;
    assert!(out.contains("error: create README: README: not an ELF file"), "{out}");
    let out = q.command("create hypervisor", CMD)?;
    // The kernel's own ELF is linked in the top 2 GiB: far outside any domain.
    assert!(
        out.contains("error: create hypervisor: hypervisor: segment 1 needs")
            && out.contains("but the domain has 16 MiB"),
        "{out}"
    );
    let out = q.command("create nosuch", CMD)?;
    assert!(out.contains("error: no boot module named 'nosuch'"), "{out}");
    for (args, want) in [
        ("memory=0", "memory"),
        ("memory=999999", "memory"),
        ("vcpus=0", "vcpus"),
        ("vcpus=65", "vcpus"),
        ("bogus=1", "unknown option 'bogus'"),
        ("name=9", "name"),
    ] {
        let out = q.command(&format!("create heartbeat {args}"), CMD)?;
        assert!(out.starts_with("error:") && out.contains(want), "create heartbeat {args}: {out}");
    }
    let out = q.command("create heartbeat memory=100000", CMD)?;
    assert!(out.contains("error"), "{out}");
    let out = q.command("create heartbeat memory=1024", CMD)?;
    assert!(out.contains("not enough memory"), "{out}");
    assert_eq!(free_mib(&mut q)?, before, "a refused create leaked memory");
    Ok(())
}

#[test]
fn hundred_create_destroy_cycles_return_all_memory() -> Result<(), Error> {
    let mut q = boot_with_guests(&["heartbeat"], "qemu64", "256M")?;
    let before = free_mib(&mut q)?;
    for i in 0..100 {
        let out = q.command("create heartbeat name=c vcpus=2", CMD)?;
        assert!(out.contains("created domain"), "cycle {i}: {out}");
        q.command("destroy c", CMD)?;
    }
    let out = q.command("list", CMD)?;
    assert!(!out.lines().any(|l| l.starts_with("c ")), "{out}");
    assert_eq!(free_mib(&mut q)?, before, "memory lost over 100 cycles");
    let out = q.command("create heartbeat", CMD)?;
    assert!(out.contains("created domain 101 "), "IDs keep counting: {out}");
    Ok(())
}

#[test]
fn weights_share_the_cpu_one_to_two() -> Result<(), Error> {
    let mut q = boot_with_guests(&["spin"], "qemu64", "256M")?;
    q.command("create spin name=light", CMD)?;
    q.command("create spin name=heavy", CMD)?;
    q.command("sched-credit -d heavy -w 512", CMD)?;
    let out = q.command("sched-credit", CMD)?;
    assert!(out.lines().any(|l| l.starts_with("heavy") && l.trim_end().ends_with("512")), "{out}");
    let t0 = list(&mut q)?;
    // Ten seconds of guest time by the hypervisor's own clock.
    let start = q.command("uptime", CMD)?;
    let secs = |s: &str| -> f64 {
        let c = Regex::new(r"up (\d+):(\d+):(\d+)\.(\d+)").unwrap().captures(s).map(|c| {
            c[1].parse::<f64>().unwrap() * 3600.0
                + c[2].parse::<f64>().unwrap() * 60.0
                + c[3].parse::<f64>().unwrap()
                + c[4].parse::<f64>().unwrap() / 1000.0
        });
        c.unwrap_or(0.0)
    };
    let s0 = secs(&start);
    loop {
        let out = q.command("uptime", CMD)?;
        if secs(&out) - s0 >= 10.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500)); // polling the guest clock, not synchronising
    }
    let t1 = list(&mut q)?;
    let used = |n: &str| row(&t1, n).unwrap().5 - row(&t0, n).unwrap().5;
    let (light, heavy) = (used("light"), used("heavy"));
    assert!(light + heavy > 8.0, "the two guests got {light} + {heavy} s of 10 s");
    let ratio = heavy / light;
    assert!((1.7..=2.3).contains(&ratio), "weights 256:512 gave {light:.1} s : {heavy:.1} s (ratio {ratio:.2})");
    Ok(())
}

#[test]
fn fpu_state_is_per_vcpu_and_smp_guests_run_every_vcpu() -> Result<(), Error> {
    let mut q = boot_with_guests(&["fpu", "smp"], "max", "256M")?;
    q.command("create fpu name=f1 extra=\"seed=11 ms=2000\"", CMD)?;
    q.command("create fpu name=f2 extra=\"seed=22 ms=2000\"", CMD)?;
    q.expect("domain 1 (f1): exited with status 0", CMD)?;
    q.expect("domain 2 (f2): exited with status 0", CMD)?;
    q.send_line("create -c smp vcpus=4 memory=32 extra=\"secs=2\"")?;
    q.expect("smp: all 4 vCPUs ran", CMD)?;
    q.expect("exited with status 0", CMD)?;
    Ok(())
}

/// The hostile guest's fatal actions, each of which must crash only it.
const FATAL: [&str; 19] = [
    "cli",
    "hlt",
    "in",
    "out",
    "rdmsr",
    "wrmsr",
    "movcr3",
    "lgdt",
    "invlpg",
    "read-kernel",
    "write-kernel",
    "read-unmapped",
    "write-text",
    "exec-data",
    "div0",
    "int3",
    "ud2",
    "stack-overflow",
    "nullptr",
];

#[test]
fn hostile_guest_is_contained_and_heartbeat_keeps_beating() -> Result<(), Error> {
    let mut q = boot_with_guests(&["heartbeat", "hostile"], "max", "512M")?;
    let info = q.command("info", CMD)?;
    assert!(info.contains("NX on, SMEP on, SMAP on"), "-cpu max has SMEP and SMAP: {info}");
    q.command("create heartbeat extra=\"period_ms=100\"", CMD)?;
    // Hypercalls with wild arguments: every one refused, nothing accepted.
    q.send_line("create -c hostile name=probe extra=\"fault=none\"")?;
    let report = q.expect(
        Regex::new(r"hostile: hypercall tests done: \d+ calls, \d+ unexpectedly accepted").unwrap(),
        Duration::from_secs(60),
    )?;
    assert!(report.contains(", 0 unexpectedly accepted"), "{report}");
    q.expect("exited with status 0", CMD)?;
    // The console was attached: it returns to the shell with a fresh prompt.
    q.expect("[domain 2 is gone; back to rhv]", CMD)?;
    q.expect(systest::PROMPT, CMD)?;
    for f in FATAL {
        q.command(&format!("create hostile name=h-{f} extra=\"fault={f}\""), CMD)?;
    }
    // Every one crashed, with a one-line reason in the log.
    let mut rows = list(&mut q)?;
    for _ in 0..50 {
        if FATAL.iter().all(|f| row(&rows, &format!("h-{f}")).is_some_and(|r| r.4 == "----c-")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200)); // polling domain state, not synchronising
        rows = list(&mut q)?;
    }
    let log = q.command("dmesg", CMD)?;
    for f in FATAL {
        let re = Regex::new(&format!(r"\(h-{f}\): crashed: #[^\n]+")).unwrap();
        assert!(re.is_match(&log), "no crash line for h-{f}:\n{log}");
    }
    for f in FATAL {
        assert_eq!(row(&rows, &format!("h-{f}")).map(|r| r.4.as_str()), Some("----c-"), "h-{f}: {rows:?}");
    }
    let out = q.command("list -l", CMD)?;
    assert!(out.contains("crash: #PF page fault: read of 0x0"), "{out}");
    // The heartbeat never missed a beat: consecutive numbers, and no gap
    // between beats much beyond its 100 ms period.
    q.send_line("console heartbeat")?;
    q.expect("[attached to domain 1", CMD)?;
    let text = q.expect(Regex::new(r"seq=60 t=").unwrap(), Duration::from_secs(60))?;
    q.send(b"\x1d")?;
    systest::contract::assert_heartbeat_steady(&text, 30, 160.0);
    Ok(())
}
