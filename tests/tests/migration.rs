//! Migration between two hypervisors on the network rig: cold and live,
//! authenticated relocation, CPU and time safety, save/restore.
use std::time::Duration;

use systest::rig::Rig;
use systest::{images, timeouts, Error, Qemu, QemuBuilder, Regex};

const CMD: Duration = timeouts::COMMAND;

/// Every test here runs two QEMUs at once; with the harness's limit of two
/// QEMUs per process, two such tests at a time would each hold one slot and
/// wait forever for a second. They take turns.
static TWO_HOSTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TWO_HOSTS.lock().unwrap_or_else(|p| p.into_inner())
}
const KEY: &str = "rhv-test-cluster-key-0123456789";

/// A hypervisor on tap `i` with relocation on (and `extra` options).
fn host(rig: &Rig, i: usize, name: &str, cpu: Option<&str>, extra: &str) -> Result<Qemu, Error> {
    host_mem(rig, i, name, cpu, extra, "512M")
}

fn host_mem(rig: &Rig, i: usize, name: &str, cpu: Option<&str>, extra: &str, mem: &str) -> Result<Qemu, Error> {
    let ip = rig.ip(2 + i as u8);
    let mut b = QemuBuilder::kernel(images::elf()?)
        .append(format!("console=ttyS0 ip={ip}/24 hostname={name} relocation=on relocation-key={KEY} {extra}"))
        .memory(mem)
        .name(name)
        .prefix(rig.qemu_prefix())
        .initrd(images::guest("heartbeat")?)
        .initrd(images::guest("memdirty")?)
        .initrd(images::guest("echo-server")?);
    if let Some(c) = cpu {
        b = b.arg("-cpu").arg(c);
    }
    for a in rig.nic_args(i, "virtio-net-pci") {
        b = b.arg(a);
    }
    let mut q = b.spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    Ok(q)
}

/// The `list` row of `name`: (id, state), if present.
fn row(q: &mut Qemu, name: &str) -> Result<Option<(u32, String)>, Error> {
    let out = q.command("list", CMD)?;
    Ok(out.lines().find(|l| l.split_whitespace().next() == Some(name)).map(|l| {
        let c: Vec<&str> = l.split_whitespace().collect();
        (c[1].parse().unwrap(), c[4].to_string())
    }))
}

/// The last heartbeat sequence number and its guest time (ms) on the console.
fn last_beat(q: &mut Qemu, dom: &str, after: u64) -> Result<(u64, f64), Error> {
    q.send_line(&format!("console {dom}"))?;
    let re = Regex::new(&format!(r"heartbeat {dom} seq=(\d+) t=([0-9.]+)")).unwrap();
    let mut last = (0, 0.0);
    while last.0 <= after {
        let line = q.expect(re.clone(), Duration::from_secs(30))?;
        let c = re.captures(&line).unwrap();
        last = (c[1].parse().unwrap(), c[2].parse().unwrap());
    }
    q.send(b"\x1d")?;
    q.expect(systest::PROMPT, CMD)?;
    Ok(last)
}

#[test]
fn cold_then_live_migration_keeps_the_guest_running() -> Result<(), Error> {
    let _turn = turn();
    let Some(rig) = Rig::up_or_skip(2, "cold_then_live_migration_keeps_the_guest_running") else { return Ok(()) };
    let allow = "\"relocation-hosts-allow=^10\\\\.77\\\\.0\\\\.\"";
    let mut a = host(&rig, 0, "hostA", None, allow)?;
    let mut b = host(&rig, 1, "hostB", None, allow)?;
    rig.wait_ping(&rig.ip(2), Duration::from_secs(20))?;
    rig.wait_ping(&rig.ip(3), Duration::from_secs(20))?;
    let out = a.command("info", CMD)?;
    assert!(out.contains("relocation: port 8002"), "{out}");
    let out = a.command("create heartbeat name=rx7 extra=\"period_ms=100\"", CMD)?;
    assert!(out.contains("created domain 1 (rx7)"), "{out}");
    let (seq0, _) = last_beat(&mut a, "rx7", 3)?;

    // Cold: gone here, present there with a new ID, still beating.
    let out = a.command(&format!("migrate rx7 {}", rig.ip(3)), Duration::from_secs(120))?;
    let done = Regex::new(r"migrate: rx7 done: cold, 1 round\(s\), \d+ pages, [0-9.]+ MiB sent, downtime \d+ ms, total [0-9.]+ s, now domain 1 there").unwrap();
    assert!(done.is_match(&out), "{out}");
    assert_eq!(row(&mut a, "rx7")?, None, "gone from hostA");
    let (id, _) = row(&mut b, "rx7")?.expect("present on hostB");
    assert_eq!(id, 1);
    let (seq1, _) = last_beat(&mut b, "rx7", seq0 + 3)?;
    assert!(seq1 > seq0);

    // Live, back again: the destination gives a new ID (2 on hostA).
    let out = b.command(&format!("migrate --live rx7 {}", rig.ip(2)), Duration::from_secs(120))?;
    assert!(out.contains("migrate: round 1:"), "{out}");
    let done =
        Regex::new(r"migrate: rx7 done: live, (\d+) round\(s\), .* downtime (\d+) ms, .* now domain 2 there").unwrap();
    let c = done.captures(&out).unwrap_or_else(|| panic!("{out}"));
    assert!(c[1].parse::<u32>().unwrap() >= 2, "{out}");
    let downtime: f64 = c[2].parse().unwrap();
    assert_eq!(row(&mut b, "rx7")?, None);
    assert_eq!(row(&mut a, "rx7")?.map(|r| r.0), Some(2));
    let (seq2, _) = last_beat(&mut a, "rx7", seq1 + 3)?;
    assert!(seq2 > seq1);

    // Time safety: every beat of the guest's life, from both consoles (a
    // detached console's backlog travels with the guest and is shown at
    // the next attach): seq never skips or repeats, the guest clock never
    // goes back, and no gap exceeds a period plus the downtime (plus
    // scheduling slack under emulation).
    let (_, _) = last_beat(&mut a, "rx7", seq2 + 2)?;
    let re = Regex::new(r"heartbeat rx7 seq=(\d+) t=([0-9.]+)").unwrap();
    let mut beats: Vec<(u64, f64)> = Vec::new();
    for text in [a.transcript(), b.transcript()] {
        beats.extend(re.captures_iter(&text).map(|c| (c[1].parse::<u64>().unwrap(), c[2].parse::<f64>().unwrap())));
    }
    beats.sort_by_key(|b| b.0);
    beats.dedup_by_key(|b| b.0);
    assert!(beats.len() as u64 >= seq2 && beats[0].0 == 1, "every beat seen once: {beats:?}");
    for w in beats.windows(2) {
        let ((s0, t0), (s1, t1)) = (w[0], w[1]);
        assert_eq!(s1, s0 + 1, "seq skipped or repeated: {w:?}");
        assert!(t1 > t0, "the guest clock went back: {w:?}");
        assert!(t1 - t0 <= 100.0 + downtime + 400.0, "a gap beyond the downtime ({downtime} ms): {w:?}");
    }
    Ok(())
}

/// Runs a shell script inside the rig (with a timeout); stdout.
fn sh(rig: &Rig, script: &str, secs: u64) -> Result<String, Error> {
    let out = rig
        .exec(&["timeout", &secs.to_string(), "sh", "-c", script])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Setup(format!("sh in rig: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_destination_refuses_a_cpu_it_cannot_honour_before_any_page_moves() -> Result<(), Error> {
    let _turn = turn();
    let Some(rig) = Rig::up_or_skip(2, "the_destination_refuses_a_cpu_it_cannot_honour") else { return Ok(()) };
    // hostA has a rich CPU, hostB QEMU's minimal qemu64.
    let mut a = host(&rig, 0, "hostA", Some("max"), "")?;
    let mut b = host(&rig, 1, "hostB", Some("qemu64"), "")?;
    rig.wait_ping(&rig.ip(2), Duration::from_secs(20))?;
    rig.wait_ping(&rig.ip(3), Duration::from_secs(20))?;
    a.command("create heartbeat name=wide extra=\"period_ms=100\"", CMD)?;
    let (seq0, _) = last_beat(&mut a, "wide", 2)?;
    let out = a.command(&format!("migrate --live wide {}", rig.ip(3)), Duration::from_secs(60))?;
    assert!(
        out.contains("error: migrate wide: refused: this host's CPU lacks features the domain's policy needs: ")
            && out.contains("ssse3")
            && out.contains("; the domain stays here"),
        "{out}"
    );
    assert!(!out.contains("migrate: round"), "no page moved: {out}");
    // Still here, still running; nothing there.
    assert!(row(&mut a, "wide")?.is_some());
    assert_eq!(row(&mut b, "wide")?, None);
    let (seq1, _) = last_beat(&mut a, "wide", seq0 + 2)?;
    assert!(seq1 > seq0);
    let out = b.command("mem", CMD)?;
    assert!(!out.is_empty());

    // Levelled down to the pool's baseline, the domain sees only that and moves.
    a.command("create heartbeat name=level cpuid=x86-64-v1 extra=\"period_ms=100 show_cpu=1\"", CMD)?;
    let line =
        a.on_console("level", Regex::new(r"heartbeat: cpuid 1.ecx=([0-9a-f]{8})").unwrap(), Duration::from_secs(30))?;
    let ecx = u32::from_str_radix(&line[line.len() - 8..], 16).unwrap();
    assert_eq!(
        ecx & ((1 << 0) | (1 << 9) | (1 << 19) | (1 << 20) | (1 << 23)),
        0,
        "sse3/ssse3/sse4/popcnt hidden: {line}"
    );
    // -p: it arrives paused, and runs on when unpaused there.
    let out = a.command(&format!("migrate -p level {}", rig.ip(3)), Duration::from_secs(60))?;
    assert!(out.contains("migrate: level done: cold"), "{out}");
    let (_, state) = row(&mut b, "level")?.expect("level arrived");
    assert!(state.contains('p'), "paused at the destination: {state}");
    b.command("unpause level", CMD)?;
    last_beat(&mut b, "level", 3)?;
    Ok(())
}

#[test]
fn relocation_admits_only_allowed_hosts_with_the_key() -> Result<(), Error> {
    let _turn = turn();
    let Some(rig) = Rig::up_or_skip(2, "relocation_admits_only_allowed_hosts_with_the_key") else { return Ok(()) };
    // hostA allows only hypervisor addresses; hostB has another key.
    let mut a = host(&rig, 0, "hostA", None, "\"relocation-hosts-allow=^10\\\\.77\\\\.0\\\\.[2-9]$\"")?;
    let mut b = host(&rig, 1, "hostB", None, "relocation-key=some-other-cluster-key-42")?;
    rig.wait_ping(&rig.ip(2), Duration::from_secs(20))?;
    rig.wait_ping(&rig.ip(3), Duration::from_secs(20))?;
    // Linux (10.77.0.1) is not on hostA's list: told why, logged.
    let out = sh(&rig, &format!("nc -w 5 {} 8002 < /dev/null | strings", rig.ip(2)), 15)?;
    assert!(out.contains("not in relocation-hosts-allow"), "{out}");
    a.expect(format!("relocation: {}: refused: not in relocation-hosts-allow", rig.bridge_ip()).as_str(), CMD)?;
    // Wrong key both ways: refused, the domain stays.
    a.command("create heartbeat name=hb extra=\"period_ms=100\"", CMD)?;
    let out = a.command(&format!("migrate hb {}", rig.ip(3)), Duration::from_secs(60))?;
    assert!(out.contains(&format!("error: migrate hb: refused by {}: bad key", rig.ip(3))), "{out}");
    assert!(row(&mut a, "hb")?.is_some());
    b.command("create heartbeat name=hb2 extra=\"period_ms=100\"", CMD)?;
    let out = b.command(&format!("migrate hb2 {}", rig.ip(2)), Duration::from_secs(60))?;
    assert!(out.contains("error: migrate hb2: refused by") && out.contains("bad key"), "{out}");
    // Garbage, a silent half-open peer and a port scan do not wedge hostB.
    // (The server takes one connection at a time, so a try may meet no
    // listener; it is repeated until the server has read and refused one.)
    let refused = Regex::new(&format!(r"relocation: {}: refused: ", rig.bridge_ip())).unwrap();
    let mut seen = false;
    for _ in 0..5 {
        sh(&rig, &format!("head -c 1000000 /dev/urandom | nc -w 3 {} 8002 | wc -c", rig.ip(3)), 20)?;
        if b.expect(refused.clone(), Duration::from_secs(5)).is_ok() {
            seen = true;
            break;
        }
    }
    assert!(seen, "hostB never refused the garbage");
    let silent = rig
        .exec(&["timeout", "20", "nc", &rig.ip(3), "8002"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Error::Setup(e.to_string()))?;
    b.expect("handshake: timed out waiting for the peer", Duration::from_secs(40))?;
    drop(silent);
    for port in [8001u16, 8002, 8003] {
        let _ = sh(&rig, &format!("nc -z -w 1 {} {port}", rig.ip(3)), 5)?;
    }
    let out = b.command("list", CMD)?;
    assert!(out.contains("hb2"), "{out}");
    let out = b.command("mem", CMD)?;
    assert!(out.contains("heap"), "{out}");
    Ok(())
}

#[test]
fn live_migration_keeps_tcp_streams_memory_and_disks() -> Result<(), Error> {
    let _turn = turn();
    let Some(rig) = Rig::up_or_skip(2, "live_migration_keeps_tcp_streams_memory_and_disks") else { return Ok(()) };
    let mut a = host(&rig, 0, "hostA", None, "")?;
    let mut b = host(&rig, 1, "hostB", None, "")?;
    rig.wait_ping(&rig.ip(2), Duration::from_secs(20))?;
    rig.wait_ping(&rig.ip(3), Duration::from_secs(20))?;
    let guest_ip = rig.ip(10);
    let out = a.command(
        &format!("create echo-server name=echo vif=mac=02:00:00:77:00:10 extra=\"ip={guest_ip}/24 port=7\""),
        CMD,
    )?;
    assert!(out.contains("(echo)"), "{out}");
    a.command("create memdirty name=dirty memory=32 extra=\"mib=16 rate=4 report_s=1\"", CMD)?;
    rig.wait_ping(&guest_ip, Duration::from_secs(20))?;
    // A Linux client streams through the echo guest while it moves A → B → A.
    let tool = systest::repo_root().join("tests/tools/echostream.py");
    let client = rig
        .exec(&["timeout", "300", "python3", tool.to_str().unwrap(), &guest_ip, "7", "25", "128"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Setup(e.to_string()))?;
    a.on_console("echo", "echo-server: tcp open", Duration::from_secs(30))?; // the stream runs
    let done = Regex::new(r"migrate: (\w+) done: live, (\d+) round\(s\), .* downtime (\d+) ms").unwrap();
    let out = a.command(&format!("migrate --live echo {}", rig.ip(3)), Duration::from_secs(120))?;
    assert!(done.is_match(&out), "{out}");
    let out = a.command(&format!("migrate --live dirty {}", rig.ip(3)), Duration::from_secs(180))?;
    assert!(done.is_match(&out), "{out}");
    b.on_console("dirty", "memdirty: verify ok", Duration::from_secs(60))?;
    let out = b.command(&format!("migrate --live echo {}", rig.ip(2)), Duration::from_secs(120))?;
    assert!(done.is_match(&out), "{out}");
    let res = client.wait_with_output().map_err(|e| Error::Setup(e.to_string()))?;
    let text = String::from_utf8_lossy(&res.stdout).to_string() + &String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success() && text.contains("echostream: sent="), "the TCP stream broke: {text}");
    let c = Regex::new(r"sent=(\d+) verified=(\d+)").unwrap().captures(&text).unwrap();
    assert_eq!(&c[1], &c[2], "{text}");
    assert!(c[1].parse::<u64>().unwrap() > 1_000_000, "{text}");
    Ok(())
}

#[test]
fn disk_writes_are_committed_before_the_destination_resumes() -> Result<(), Error> {
    let _turn = turn();
    let Some(rig) = Rig::up_or_skip(2, "disk_writes_are_committed_before_the_destination_resumes") else {
        return Ok(());
    };
    let dir = systest::TempDir::new("mig-disk").map_err(|e| Error::Setup(e.to_string()))?;
    let export = dir.path().join("xen");
    std::fs::create_dir_all(export.join("images")).unwrap();
    std::fs::copy(images::guest("blklog")?, export.join("images/blklog.elf")).unwrap();
    std::fs::write(export.join("log.img"), vec![0u8; 1 << 20]).unwrap();
    let cfg = |extra: &str| {
        format!(
            "name = \"logger\"\nmemory = 16\nkernel = \"/var/xen/images/blklog.elf\"\nextra = \"{extra}\"\n\
             disk = [ 'file:/var/xen/log.img,xvda,w' ]\n"
        )
    };
    std::fs::write(export.join("log.cfg"), cfg("append=3 msg=moved flush=0")).unwrap();
    std::fs::write(export.join("again.cfg"), cfg("append=1 msg=again")).unwrap();
    let server = systest::nfsbench::NfsServer::start(&rig, &export, &dir.path().join("state"))?;
    let mount = format!("nfs={}@/var/xen", server.spec());
    let mut a = host(&rig, 0, "hostA", None, &mount)?;
    let mut b = host(&rig, 1, "hostB", None, &mount)?;
    rig.wait_ping(&rig.ip(3), Duration::from_secs(20))?;
    let out = a.command("create /var/xen/log.cfg", Duration::from_secs(60))?;
    assert!(out.contains("(logger)"), "{out}");
    a.on_console("logger", "blklog: appended 3, not flushed, now 3 entries", Duration::from_secs(60))?;
    // Written, but only into hostA's write-back cache so far.
    assert_eq!(&std::fs::read(export.join("log.img")).unwrap()[..8], &[0u8; 8]);
    let out = a.command(&format!("migrate --live logger {}", rig.ip(3)), Duration::from_secs(120))?;
    assert!(out.contains("migrate: logger done: live"), "{out}");
    // Committed before hostB resumed the guest.
    let img = std::fs::read(export.join("log.img")).unwrap();
    assert_eq!(&img[..8], b"RHVBLKLG");
    let text = String::from_utf8_lossy(&img[512..2048]).to_string();
    assert!(text.contains("seq=3 dom=logger") && text.contains("moved"), "{text}");
    // The guest's disk works there: a new domain on hostB reads the log.
    let out = b.command("block-list logger", CMD)?;
    assert!(out.contains("xvda") && out.contains("/var/xen/log.img"), "{out}");
    b.command("destroy logger", CMD)?;
    b.command("create /var/xen/again.cfg", Duration::from_secs(60))?;
    let got = b.on_console("logger", "blklog: appended 1, flushed, now 4 entries", Duration::from_secs(60))?;
    assert!(got.contains("blklog: found 3 entries"), "{got}");
    Ok(())
}

#[test]
fn save_and_restore_through_the_share() -> Result<(), Error> {
    let _turn = turn();
    let Some(rig) = Rig::up_or_skip(1, "save_and_restore_through_the_share") else { return Ok(()) };
    let dir = systest::TempDir::new("mig-save").map_err(|e| Error::Setup(e.to_string()))?;
    let export = dir.path().join("xen");
    std::fs::create_dir_all(&export).unwrap();
    let server = systest::nfsbench::NfsServer::start(&rig, &export, &dir.path().join("state"))?;
    let mut a = host(&rig, 0, "hostA", None, &format!("nfs={}@/var/xen", server.spec()))?;
    a.command("create memdirty name=md memory=32 extra=\"mib=8 rate=2 report_s=1\"", CMD)?;
    a.on_console("md", "memdirty: verify ok", Duration::from_secs(60))?;
    let out = a.command("save md /var/xen/md.save", Duration::from_secs(120))?;
    let saved = Regex::new(r"saved domain 1 to /var/xen/md.save: \d+ pages, [0-9.]+ MiB in [0-9.]+ s").unwrap();
    assert!(saved.is_match(&out), "{out}");
    assert_eq!(row(&mut a, "md")?, None, "save destroys the domain");
    let size = std::fs::metadata(export.join("md.save")).unwrap().len();
    assert!(size > 8 << 20, "the file holds the dirtied memory: {size} bytes");
    let out = a.command("restore /var/xen/md.save", Duration::from_secs(120))?;
    assert!(out.contains("restored domain 2 (md)"), "{out}");
    a.on_console("md", "memdirty: verify ok", Duration::from_secs(60))?;
    // A damaged file is refused with a clear error and leaves nothing behind.
    let mut bytes = std::fs::read(export.join("md.save")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(export.join("half.save"), &bytes).unwrap();
    let before = a.command("mem", CMD)?;
    a.command("destroy md", CMD)?;
    let out = a.command("restore /var/xen/half.save", Duration::from_secs(120))?;
    assert!(out.starts_with("error: restore /var/xen/half.save:"), "{out}");
    assert_eq!(row(&mut a, "md")?, None);
    let after = a.command("mem", CMD)?;
    assert!(!before.is_empty() && !after.is_empty());
    Ok(())
}

/// `mem`'s figures in KiB: (free frames + the heap's size, heap in use).
/// The heap grows from free frames and keeps them, so frames given back
/// by a destroyed domain show in the sum.
fn free_kib(q: &mut Qemu) -> Result<(u64, u64), Error> {
    let out = q.command("mem", CMD)?;
    let kib = |v: &str, unit: &str| {
        let x: f64 = v.parse().unwrap();
        (x * match unit {
            "GiB" => 1048576.0,
            "MiB" => 1024.0,
            "KiB" => 1.0,
            _ => 1.0 / 1024.0,
        }) as u64
    };
    let f = Regex::new(r"free ([0-9.]+) (\w+)").unwrap().captures(&out).unwrap_or_else(|| panic!("{out}"));
    let h = Regex::new(r"heap: used ([0-9.]+) (\w+) of ([0-9.]+) (\w+)").unwrap().captures(&out).unwrap();
    Ok((kib(&f[1], &f[2]) + kib(&h[3], &h[4]), kib(&h[1], &h[2])))
}

#[test]
fn the_source_keeps_its_domain_when_the_destination_refuses_aborts_or_dies() -> Result<(), Error> {
    let _turn = turn();
    let Some(rig) = Rig::up_or_skip(2, "the_source_keeps_its_domain_when_the_destination_refuses") else {
        return Ok(());
    };
    let mut a = host(&rig, 0, "hostA", None, "")?;
    let mut b = host_mem(&rig, 1, "hostB", None, "", "128M")?;
    rig.wait_ping(&rig.ip(3), Duration::from_secs(20))?;
    let free_b = free_kib(&mut b)?;
    // Too big for hostB: refused before any page moves.
    a.command("create memdirty name=big memory=200 extra=\"mib=16 rate=2 report_s=1\"", CMD)?;
    let out = a.command(&format!("migrate --live big {}", rig.ip(3)), Duration::from_secs(60))?;
    assert!(out.contains("error: migrate big: refused: not enough memory: domain needs 200 MiB"), "{out}");
    assert!(!out.contains("round 1"), "{out}");
    a.command("destroy big", CMD)?;
    // The operator interrupts a live migration: both sides clean up.
    a.command("create memdirty name=mid memory=96 extra=\"mib=64 rate=8 report_s=1\"", CMD)?;
    a.on_console("mid", "memdirty: verify ok", Duration::from_secs(60))?;
    a.send_line(&format!("migrate --live mid {}", rig.ip(3)))?;
    a.expect("migrate: round 1:", Duration::from_secs(120))?;
    a.send(b"\x03")?;
    a.expect("error: migrate mid: interrupted (Ctrl-C); the domain stays here", Duration::from_secs(60))?;
    a.expect(systest::PROMPT, CMD)?;
    // (The interrupt may cut a page batch short; then the destination
    // sees the connection end rather than the source's Abort record.)
    b.expect(
        Regex::new(&format!(r"relocation: {}: (the source aborted|connection closed by the peer)", rig.ip(2))).unwrap(),
        Duration::from_secs(60),
    )?;
    // The server drops the connection's buffers once it has closed it
    // (within a second); poll `mem` until then.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (free, heap_used) = loop {
        let (free, heap_used) = free_kib(&mut b)?;
        if heap_used <= free_b.1 + 512 || std::time::Instant::now() > deadline {
            break (free, heap_used);
        }
        // Polling; back-to-back commands would keep hostB's shell (which
        // input preempts everything for) from letting the server run.
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(free.abs_diff(free_b.0) <= 200, "hostB freed every frame of the partial domain: {free} vs {free_b:?} KiB");
    assert!(heap_used <= free_b.1 + 512, "and every buffer: heap {heap_used} KiB in use vs {free_b:?}");
    assert_eq!(row(&mut b, "mid")?, None);
    // The destination dies in the middle: the domain runs on here.
    a.send_line(&format!("migrate --live mid {}", rig.ip(3)))?;
    a.expect("migrate: round 1:", Duration::from_secs(120))?;
    drop(b);
    a.expect(Regex::new(r"error: migrate mid: .*; the domain stays here").unwrap(), Duration::from_secs(120))?;
    a.expect(systest::PROMPT, CMD)?;
    let (_, state) = row(&mut a, "mid")?.expect("still on hostA");
    assert!(!state.contains('p'), "running again, not paused: {state}");
    a.on_console("mid", "memdirty: verify ok", Duration::from_secs(60))?;
    Ok(())
}

#[test]
fn repeated_migrations_return_every_frame() -> Result<(), Error> {
    let _turn = turn();
    let Some(rig) = Rig::up_or_skip(2, "repeated_migrations_return_every_frame") else { return Ok(()) };
    let mut a = host(&rig, 0, "hostA", None, "")?;
    let mut b = host(&rig, 1, "hostB", None, "")?;
    rig.wait_ping(&rig.ip(3), Duration::from_secs(20))?;
    let (free_a, _) = free_kib(&mut a)?;
    let (free_b, _) = free_kib(&mut b)?;
    a.command("create memdirty name=pp memory=64 extra=\"mib=16 rate=2 report_s=1\"", CMD)?;
    for i in 0..3 {
        let out = a.command(&format!("migrate --live pp {}", rig.ip(3)), Duration::from_secs(120))?;
        assert!(out.contains("migrate: pp done: live"), "round {i} A→B: {out}");
        let out = b.command(&format!("migrate --live pp {}", rig.ip(2)), Duration::from_secs(120))?;
        assert!(out.contains("migrate: pp done: live"), "round {i} B→A: {out}");
    }
    a.on_console("pp", "memdirty: verify ok", Duration::from_secs(60))?;
    a.command("destroy pp", CMD)?;
    // Frames (free + the heap, which keeps what it grew by) are all back on
    // both hosts after six migrations.
    let (after_a, _) = free_kib(&mut a)?;
    let (after_b, _) = free_kib(&mut b)?;
    assert!(after_a.abs_diff(free_a) <= 200, "hostA: {free_a} KiB before, {after_a} KiB after");
    assert!(after_b.abs_diff(free_b) <= 200, "hostB: {free_b} KiB before, {after_b} KiB after");
    Ok(())
}
