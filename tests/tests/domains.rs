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
    Ok(lines.filter_map(|l| row.captures(l)).map(|c| six_columns(&c)).collect())
}

/// `list` and `vcpu-list` rows have the same shape: a name, three
/// numbers, the state flags and the CPU time.
fn six_columns<A: std::str::FromStr, B: std::str::FromStr, C: std::str::FromStr>(
    c: &systest::Captures<'_>,
) -> (String, A, B, C, String, f64)
where
    A::Err: std::fmt::Debug,
    B::Err: std::fmt::Debug,
    C::Err: std::fmt::Debug,
{
    (
        c[1].to_string(),
        c[2].parse().unwrap(),
        c[3].parse().unwrap(),
        c[4].parse().unwrap(),
        c[5].to_string(),
        c[6].parse().unwrap(),
    )
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

/// Runs two `fpu` guests at once (domains `id` and `id + 1`), each with its
/// own values; each exits with status 0 only if every check passed.
fn two_fpu_guests_keep_their_values(q: &mut Qemu, id: u32) -> Result<(), Error> {
    q.command("create fpu name=f1 extra=\"seed=11 ms=2000\"", CMD)?;
    q.command("create fpu name=f2 extra=\"seed=22 ms=2000\"", CMD)?;
    // Both end after 2 s of their own time, in either order.
    let exit = Regex::new(r"domain (\d+) \((f[12])\): exited with status (\d+)").unwrap();
    let mut ended = Vec::new();
    for _ in 0..2 {
        let c = q.expect_captures(&exit, CMD)?;
        assert_eq!(c[3], *"0", "{} failed its FPU check", c[2]);
        ended.push((c[1].parse::<u32>().unwrap(), c[2].to_string()));
    }
    ended.sort();
    assert_eq!(ended, [(id, "f1".to_string()), (id + 1, "f2".to_string())]);
    Ok(())
}

/// `fpu regs=1` guests at once, ending one after the other; attaches to
/// each in turn and returns its result line's (checks, preempted rounds,
/// FS/GS base wording).
fn regs_guests(q: &mut Qemu, copies: u32) -> Result<Vec<(u64, u64, String)>, Error> {
    for i in 1..=copies {
        let ms = 3000 * i;
        q.command(&format!("create fpu name=r{i} extra=\"regs=1 seed={} ms={ms}\"", 100 + i), CMD)?;
    }
    let mut results = Vec::new();
    for i in 1..=copies {
        // A guest that found a register changed exits at once (status 1),
        // maybe before the attach: then the log says so.
        let line = Regex::new(&format!(
            r"fpu: regs seed=\d+ (ok after (\d+) checks, (\d+) preempted, fs/gs base (checked|not checked \(no FSGSBASE\))|CORRUPTED[^\r\n]*)|error: no domain named 'r{i}'"
        ))
        .unwrap();
        q.send_line(&format!("console r{i}"))?;
        let c = q.expect_captures(&line, Duration::from_secs(60))?;
        q.expect(systest::PROMPT, CMD)?; // the domain exited: back to the shell
        if c[2].is_empty() {
            let log = q.command("dmesg", CMD)?;
            panic!("r{i}: {}\n{log}", c[0]);
        }
        eprintln!("r{i}: {}", c[1]);
        results.push((c[2].parse().unwrap(), c[3].parse().unwrap(), c[4].clone()));
    }
    let log = q.command("dmesg", CMD)?;
    for i in 1..=copies {
        assert!(Regex::new(&format!(r"\(r{i}\): exited with status 0")).unwrap().is_match(&log), "r{i}:\n{log}");
    }
    Ok(results)
}

#[test]
fn fpu_state_is_per_vcpu_and_smp_guests_run_every_vcpu() -> Result<(), Error> {
    let mut q = boot_with_guests(&["fpu", "smp"], "max", "256M")?;
    let info = q.command("info", CMD)?;
    assert!(info.contains("fpu: guest state saved with XSAVE"), "-cpu max has XSAVE: {info}");
    two_fpu_guests_keep_their_values(&mut q, 1)?;
    q.send_line("create -c smp vcpus=4 memory=32 extra=\"secs=2\"")?;
    q.expect("smp: all 4 vCPUs ran", CMD)?;
    q.expect("exited with status 0", CMD)?;
    q.expect(systest::PROMPT, CMD)?;
    // General registers, CF/DF and FS/GS base: three guests with different
    // values, preempted by each other (10 ms slices) many times.
    for (i, (checks, preempted, base)) in regs_guests(&mut q, 3)?.into_iter().enumerate() {
        assert_eq!(base, "checked", "r{}: -cpu max has FSGSBASE", i + 1);
        assert!(checks >= 20, "r{}: only {checks} checks", i + 1);
        assert!(preempted >= 10, "r{}: only {preempted} of {checks} rounds were preempted", i + 1);
    }
    Ok(())
}

#[test]
fn fpu_state_is_kept_with_fxsave_on_a_cpu_without_xsave() -> Result<(), Error> {
    let mut q = boot_with_guests(&["fpu"], "qemu64", "256M")?;
    let info = q.command("info", CMD)?;
    let features = info.lines().find(|l| l.starts_with("features: ")).unwrap_or_default();
    assert!(!features.split(' ').any(|f| f == "xsave"), "qemu64 has no XSAVE: {info}");
    assert!(info.contains("fpu: guest state saved with FXSAVE"), "{info}");
    two_fpu_guests_keep_their_values(&mut q, 1)?;
    for (i, (checks, _, base)) in regs_guests(&mut q, 2)?.into_iter().enumerate() {
        assert_eq!(base, "not checked (no FSGSBASE)", "r{}", i + 1);
        assert!(checks >= 20, "r{}: only {checks} checks", i + 1);
    }
    Ok(())
}

/// The hostile guest's fatal actions (all of hostile.rs's `FAULTS`), each
/// of which must crash only it.
const FATAL: [&str; 34] = [
    "cli",
    "hlt",
    "in",
    "out",
    "rdmsr",
    "wrmsr",
    "movcr3",
    "lgdt",
    "lidt",
    "invlpg",
    "wbinvd",
    "swapgs",
    "mov-dr7",
    "xsetbv",
    "int80",
    "iret-kernel",
    "read-kernel",
    "write-kernel",
    "read-unmapped",
    "write-unmapped",
    "write-text",
    "write-rodata",
    "write-startinfo",
    "write-timepage",
    "exec-data",
    "exec-stack",
    "exec-heap",
    "exec-null",
    "div0",
    "int3",
    "ud2",
    "trap-flag",
    "stack-overflow",
    "nullptr",
];

/// Seconds since boot of the first `dmesg` line matching `re`.
fn logged_at(log: &str, re: &str) -> f64 {
    let re = Regex::new(re).unwrap();
    systest::contract::parse_dmesg(log)
        .into_iter()
        .find(|l| re.is_match(&l.message))
        .unwrap_or_else(|| panic!("no log line /{re}/ in:\n{log}", re = re.as_str()))
        .time
}

#[test]
fn hostile_guest_is_contained_and_heartbeat_keeps_beating() -> Result<(), Error> {
    let mut q = boot_with_guests(&["heartbeat", "hostile"], "max", "512M")?;
    let info = q.command("info", CMD)?;
    assert!(info.contains("NX on, SMEP on, SMAP on"), "-cpu max has SMEP and SMAP: {info}");
    q.command("create heartbeat extra=\"period_ms=100\"", CMD)?;
    // Its first beats (attaching takes the console's backlog, so the rest
    // comes with the next attach).
    let mut beats = q.on_console("heartbeat", Regex::new(r"seq=2 t=\d+\.\d+").unwrap(), CMD)?;
    // The list of fatal actions here is the guest's own.
    q.send_line("create -c hostile name=lister extra=\"fault=list\"")?;
    let listed = q.expect("[domain 2 is gone; back to rhv]", CMD)?;
    let names: Vec<&str> = Regex::new(r"hostile: fault (\S+)\r?\n")
        .unwrap()
        .captures_iter(&listed)
        .map(|c| c.get(1).unwrap().as_str())
        .filter(|n| *n != "panic" && *n != "oom")
        .collect();
    assert_eq!(names, FATAL, "the guest's fatal actions");
    q.expect(systest::PROMPT, CMD)?;
    // Hypercalls with wild arguments: every one refused, nothing accepted.
    q.send_line("create -c hostile name=probe extra=\"fault=none\"")?;
    let report = q.expect(
        Regex::new(r"hostile: hypercall tests done: \d+ calls, \d+ unexpectedly accepted").unwrap(),
        Duration::from_secs(60),
    )?;
    assert!(report.contains(", 0 unexpectedly accepted"), "{report}");
    // Numbers outside the ABI's table are NoSys, never truncated.
    for n in [
        "0xb",
        "0xc",
        "0xd",
        "0xe",
        "0xf",
        "0x13",
        "0x17",
        "0x1c",
        "0x3e7",
        "0xffffffff",
        "0x100000000",
        "0x8000000000000000",
        "0xffffffffffffffff",
    ] {
        let want = format!("hostile: unknown hypercall nr {n} -> -3 (NoSys)");
        assert!(report.contains(&want), "{want}:\n{report}");
    }
    assert!(!report.contains("BUG"), "{report}");
    // The probe's own self-checks.
    assert!(report.contains("hostile: own text after console_read -> unchanged"), "{report}");
    assert!(report.contains("hostile: time page vs clock_monotonic -> consistent"), "{report}");
    let storm = Regex::new(r"hostile: storm 100000 x vcpu_id -> \d+ ms, \d+ calls/s, \d+ ns/call, 0 errors").unwrap();
    assert!(storm.is_match(&report), "{report}");
    let popf = Regex::new(r"hostile: popf clear IF / set IOPL -> IF=1 IOPL=0").unwrap();
    assert!(popf.is_match(&report), "{report}");
    q.expect("exited with status 0", CMD)?;
    // The console was attached: it returns to the shell with a fresh prompt.
    q.expect("[domain 3 is gone; back to rhv]", CMD)?;
    q.expect(systest::PROMPT, CMD)?;
    for f in FATAL {
        q.command(&format!("create hostile name=h-{f} memory=8 extra=\"fault={f} calls=0\""), CMD)?;
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
    assert!(q.command("uptime", CMD)?.contains("up "), "the hypervisor still answers");
    // The heartbeat never missed a beat from before the first hostile domain
    // was created until after the last one crashed: its clock starts at its
    // own creation, so the log's times map onto its `t=`.
    let born = logged_at(&log, r"^domain 1 \(heartbeat\): created ");
    let from_ms = (logged_at(&log, r"^domain 2 \(lister\): created ") - born) * 1000.0;
    let last_crash = FATAL.iter().map(|f| logged_at(&log, &format!(r"\(h-{f}\): crashed: "))).fold(0.0, f64::max);
    let to_ms = (last_crash - born) * 1000.0;
    eprintln!("attack window: {from_ms:.0}..{to_ms:.0} ms of the heartbeat's time");
    let last = Regex::new(&format!(r"seq={} t=\d+\.\d+", (to_ms / 100.0) as u64 + 3)).unwrap();
    beats += &q.on_console("heartbeat", last, CMD)?;
    let beat = Regex::new(r"seq=\d+ t=(\d+\.\d+)").unwrap();
    let times: Vec<f64> = beat.captures_iter(&beats).map(|c| c[1].parse().unwrap()).collect();
    assert!(times.first().is_some_and(|&t| t <= from_ms), "beats from {from_ms:.0} ms on: {times:?}");
    assert!(times.last().is_some_and(|&t| t >= to_ms), "beats up to {to_ms:.0} ms: {times:?}");
    systest::contract::assert_heartbeat_steady(&beats, ((to_ms - from_ms) / 100.0) as usize, 160.0);
    Ok(())
}

#[test]
fn guest_panic_and_out_of_memory_end_with_their_documented_status() -> Result<(), Error> {
    let mut q = boot_with_guests(&["hostile"], "qemu64", "256M")?;
    // A panic: `panic: <message> at <file>:<line>` on the guest's console,
    // then exit status 101 (docs/hypercall-abi.md section 12).
    q.send_line("create -c hostile name=p extra=\"fault=panic calls=0\"")?;
    let c = q.expect_captures(
        &Regex::new(r"panic: hostile: deliberate panic \(fault=panic\) at (\S+):(\d+)\r?\n").unwrap(),
        CMD,
    )?;
    assert!(c[1].ends_with("examples/hostile.rs"), "{}", c[0]);
    let source = std::fs::read_to_string(systest::repo_root().join("guest-abi/examples/hostile.rs")).unwrap();
    let line: usize = c[2].parse().unwrap();
    assert!(source.lines().nth(line - 1).is_some_and(|l| l.contains("panic!(")), "{} is not the panic! line", c[0]);
    q.expect("[domain 1 is gone; back to rhv]", CMD)?;
    q.expect(systest::PROMPT, CMD)?;
    // An allocation the heap cannot satisfy: `alloc error: ...`, status 102.
    q.send_line("create -c hostile name=o extra=\"fault=oom calls=0\"")?;
    q.expect("alloc error: memory allocation of 16777216 bytes failed", CMD)?;
    q.expect("[domain 2 is gone; back to rhv]", CMD)?;
    q.expect(systest::PROMPT, CMD)?;
    // The exit lines may come before the console output or after it: the
    // log has both, as exits (not crashes), and both domains are gone.
    let log = q.command("dmesg", CMD)?;
    assert!(log.contains("domain 1 (p): exited with status 101"), "{log}");
    assert!(log.contains("domain 2 (o): exited with status 102"), "{log}");
    assert!(!log.contains("crashed"), "{log}");
    assert_eq!(list(&mut q)?.len(), 1, "only Domain-0 is left");
    Ok(())
}

/// A `vcpu-list` row: name, ID, VCPU, CPU, State, Time(s).
type VcpuRow = (String, u32, u32, u32, String, f64);

fn vcpu_list(q: &mut Qemu, args: &str) -> Result<Vec<VcpuRow>, Error> {
    let out = q.command(format!("vcpu-list {args}").trim_end(), CMD)?;
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("Name                                ID  VCPU   CPU State   Time(s)"), "{out}");
    let row = Regex::new(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(r--|-b-|-p-)\s+(\d+\.\d)$").unwrap();
    Ok(lines
        .map(|l| {
            let c = row.captures(l).unwrap_or_else(|| panic!("vcpu-list row {l:?} in:\n{out}"));
            six_columns(&c)
        })
        .collect())
}

#[test]
fn blocked_domains_show_b_vcpu_list_rows_and_memdirty_keeps_its_rate() -> Result<(), Error> {
    let mut q = boot_with_guests(&["heartbeat", "smp", "memdirty"], "qemu64", "256M")?;
    // A heartbeat with an hour's period sleeps in `block` all the time:
    // exactly `-b----` (r means running or runnable).
    q.command("create heartbeat name=hb extra=\"period_ms=3600000\"", CMD)?;
    q.on_console("hb", "heartbeat: start name=hb", CMD)?;
    // Right after its start it may still be runnable; once it sleeps it
    // stays blocked.
    for _ in 0..50 {
        if row(&list(&mut q)?, "hb").is_some_and(|r| r.4 == "-b----") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100)); // polling domain state, not synchronising
    }
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(100)); // spacing the samples, not synchronising
        let rows = list(&mut q)?;
        assert_eq!(rows[0].4, "r-----", "Domain-0 runs the shell: {rows:?}");
        let hb = row(&rows, "hb").expect("hb listed");
        assert_eq!((hb.4.as_str(), hb.5), ("-b----", 0.0), "{rows:?}");
    }
    let rows = vcpu_list(&mut q, "")?;
    assert_eq!(rows, [("hb".to_string(), 1, 0, 0, "-b-".to_string(), 0.0)]);

    // Four vCPUs: one row each, numbered 0..3 on physical CPU 0; the three
    // workers spin (running or runnable), vCPU 0 sleeps between reports.
    q.command("create smp name=s4 vcpus=4 memory=32 extra=\"secs=60\"", CMD)?;
    q.on_console("s4", "smp: t=2 counts=", Duration::from_secs(30))?;
    let rows = vcpu_list(&mut q, "s4")?;
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!((r.0.as_str(), r.1, r.2, r.3), ("s4", 2, i as u32, 0), "{rows:?}");
    }
    for r in &rows[1..] {
        assert_eq!(r.4, "r--", "a spinning vCPU: {rows:?}");
        assert!(r.5 > 0.0, "a spinning vCPU used CPU time: {rows:?}");
    }
    assert!(rows[0].4 == "r--" || rows[0].4 == "-b-", "{rows:?}");
    let all = vcpu_list(&mut q, "")?;
    assert_eq!(all.len(), 5, "hb's and s4's rows: {all:?}");
    let sum: f64 = rows.iter().map(|r| r.5).sum();
    let listed = row(&list(&mut q)?, "s4").unwrap().5;
    assert!((listed - sum).abs() <= 0.5, "list's Time(s) {listed} is the vCPUs' sum {sum}: {rows:?}");
    q.command("pause s4", CMD)?;
    assert!(vcpu_list(&mut q, "s4")?.iter().all(|r| r.4 == "-p-"), "paused vCPUs");
    q.command("destroy s4", CMD)?;
    let out = q.command("vcpu-list nosuch", CMD)?;
    assert_eq!(out.trim(), "error: no domain named 'nosuch'");

    // memdirty dirties the MiB per second it is asked for: every one-second
    // report within 25 %, at two rates.
    q.command("create memdirty name=m4 memory=32 extra=\"mib=8 rate=4 report_s=1\"", CMD)?;
    q.command("create memdirty name=m16 memory=32 extra=\"mib=8 rate=16 report_s=1\"", CMD)?;
    let report = Regex::new(r"memdirty: t=(\d+) dirtied=\d+ pass=\d+ rate_kib=(\d+)").unwrap();
    for (name, mib_s) in [("m4", 4.0), ("m16", 16.0)] {
        let text = q.on_console(name, Regex::new(r"memdirty: t=4 [^\n]*\n").unwrap(), Duration::from_secs(60))?;
        assert!(!text.contains("FAILED"), "{text}");
        let rates: Vec<f64> = report.captures_iter(&text).map(|c| c[2].parse().unwrap()).collect();
        assert_eq!(rates.len(), 4, "{text}");
        for kib in rates {
            let want = mib_s * 1024.0;
            assert!((kib - want).abs() <= want * 0.25, "{name}: {kib} KiB/s, want {want} ±25%:\n{text}");
        }
    }
    Ok(())
}

/// QEMU's CPU time (user + system, all threads) in seconds.
fn qemu_cpu_s(q: &Qemu) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", q.pid())).unwrap();
    // Fields after the parenthesised command: state is field 3, utime 14,
    // stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    ticks as f64 / hz
}

/// Nanoseconds QEMU's threads spent waiting for a host CPU while runnable
/// (`/proc/<pid>/task/*/schedstat`, second field): what other load on the
/// host took from it.
fn qemu_wait_s(q: &Qemu) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", q.pid())).unwrap();
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split(' ').nth(1)?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// Over `secs` seconds of wall time: the share of one host core QEMU used,
/// and the share it used or waited for.
fn qemu_cpu_share(q: &Qemu, secs: u64) -> (f64, f64) {
    let (c0, w0, t0) = (qemu_cpu_s(q), qemu_wait_s(q), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(secs)); // measuring over wall time, not synchronising
    let (used, waited) = (qemu_cpu_s(q) - c0, qemu_wait_s(q) - w0);
    let wall = t0.elapsed().as_secs_f64();
    (used / wall, (used + waited) / wall)
}

#[test]
fn a_blocked_vcpu_costs_nothing_and_the_idle_loop_halts() -> Result<(), Error> {
    let mut q = boot_with_guests(&["heartbeat", "spin"], "qemu64", "256M")?;
    q.command("create heartbeat name=hb extra=\"period_ms=100\"", CMD)?;
    q.on_console("hb", "heartbeat hb seq=3 ", CMD)?;
    // Only a 100 ms heartbeat: the CPU halts between beats, so QEMU (TCG)
    // sleeps too.
    let (idle, _) = qemu_cpu_share(&q, 5);
    let hb = row(&list(&mut q)?, "hb").unwrap().5;
    eprintln!("QEMU used {:.0} % of a core with only a heartbeat; the heartbeat {hb} s", idle * 100.0);
    assert!(idle < 0.25, "idle QEMU used {:.0} % of a core", idle * 100.0);
    assert!(hb <= 0.2, "the heartbeat used {hb} s of CPU in ~6 s");
    // A spinning guest never halts the CPU: QEMU burns a core, or waits for
    // one when other work on the host has it.
    q.command("create spin name=sp", CMD)?;
    let (busy, wanted) = qemu_cpu_share(&q, 5);
    eprintln!(
        "QEMU used {:.0} % (used or waited for {:.0} %) of a core with a spin guest",
        busy * 100.0,
        wanted * 100.0
    );
    assert!(
        wanted > 0.7,
        "QEMU used {:.0} % and waited {:.0} % with a spin guest",
        busy * 100.0,
        (wanted - busy) * 100.0
    );
    let rows = list(&mut q)?;
    assert!(row(&rows, "sp").unwrap().5 >= 3.0, "{rows:?}");
    assert!(row(&rows, "hb").unwrap().5 <= 0.3, "{rows:?}");
    Ok(())
}
