//! Migration between two hypervisors on the network rig: cold and live,
//! authenticated relocation, CPU and time safety, save/restore.
use std::time::Duration;

use systest::rig::Rig;
use systest::{images, timeouts, Error, Qemu, QemuBuilder, Regex};

const CMD: Duration = timeouts::COMMAND;
const KEY: &str = "rhv-test-cluster-key-0123456789";

/// A hypervisor on tap `i` with relocation on (and `extra` options).
fn host(rig: &Rig, i: usize, name: &str, cpu: Option<&str>, extra: &str) -> Result<Qemu, Error> {
    let ip = rig.ip(2 + i as u8);
    let mut b = QemuBuilder::kernel(images::elf()?)
        .append(format!("console=ttyS0 ip={ip}/24 hostname={name} relocation=on relocation-key={KEY} {extra}"))
        .memory("512M")
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
    assert_eq!(row(&mut b, "rx7")?, None);
    assert_eq!(row(&mut a, "rx7")?.map(|r| r.0), Some(2));
    let (seq2, _) = last_beat(&mut a, "rx7", seq1 + 3)?;
    assert!(seq2 > seq1);
    Ok(())
}
