//! The hypervisor among real Linux hosts, on the network rig (a namespace
//! with a Linux bridge and taps; needs root — without it these tests print
//! SKIPPED, and with RHV_RIG_REQUIRED=1 they fail instead).
use std::process::Stdio;
use std::time::Duration;

use systest::rig::Rig;
use systest::{images, repo_root, timeouts, Error, Qemu, QemuBuilder, Regex};

const CMD: Duration = timeouts::COMMAND;

/// A hypervisor on tap `i` of the rig with `ip` as its address and the
/// example guests as modules.
fn hypervisor(rig: &Rig, i: usize, nic: &str, ip: &str, name: &str) -> Result<Qemu, Error> {
    let mut b = QemuBuilder::kernel(images::elf()?)
        .append(format!("console=ttyS0 ip={ip}/24 gw={} hostname={name}", rig.bridge_ip()))
        .memory("256M")
        .name(name)
        .prefix(rig.qemu_prefix())
        .initrd(images::guest("echo-server")?)
        .initrd(images::guest("heartbeat")?);
    for a in rig.nic_args(i, nic) {
        b = b.arg(a);
    }
    let mut q = b.spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    Ok(q)
}

fn ping_summary(q: &mut Qemu, ip: &str, count: u32) -> Result<(u32, u32), Error> {
    let out = q.command(&format!("ping {ip} {count}"), Duration::from_secs(u64::from(count) * 2 + 10))?;
    let c = Regex::new(r"(\d+) packets transmitted, (\d+) received").unwrap().captures(&out);
    let c = c.unwrap_or_else(|| panic!("no ping summary:\n{out}"));
    Ok((c[1].parse().unwrap(), c[2].parse().unwrap()))
}

#[test]
fn linux_pings_both_hypervisors_and_they_ping_each_other() -> Result<(), Error> {
    let Some(rig) = Rig::up_or_skip(2, "linux_pings_both_hypervisors_and_they_ping_each_other") else { return Ok(()) };
    let (ip_a, ip_b) = (rig.ip(2), rig.ip(3));
    let mut a = hypervisor(&rig, 0, "e1000", &ip_a, "hostA")?;
    let mut b = hypervisor(&rig, 1, "virtio-net-pci", &ip_b, "hostB")?;
    rig.wait_ping(&ip_a, Duration::from_secs(20))?;
    rig.wait_ping(&ip_b, Duration::from_secs(20))?;
    let out = rig.run(&["ping", "-n", "-c", "5", "-i", "0.2", &ip_a])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("5 received"), "Linux → hostA:\n{text}");
    let (sent, got) = ping_summary(&mut a, &ip_b, 4)?;
    assert!(sent == 4 && got >= 3, "hostA → hostB: {got}/{sent}");
    let (sent, got) = ping_summary(&mut b, rig.bridge_ip(), 4)?;
    assert!(sent == 4 && got >= 3, "hostB → Linux: {got}/{sent}");
    Ok(())
}

/// Runs a shell pipeline inside the rig, with a timeout, and returns stdout.
fn sh(rig: &Rig, script: &str, secs: u64) -> Result<String, Error> {
    let out = rig
        .exec(&["timeout", &secs.to_string(), "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Setup(format!("sh in rig: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[test]
fn linux_exchanges_10_mb_with_the_echo_guest_and_survives_a_frame_storm() -> Result<(), Error> {
    let Some(rig) = Rig::up_or_skip(1, "linux_exchanges_10_mb_with_the_echo_guest") else { return Ok(()) };
    let hv_ip = rig.ip(2);
    let guest_ip = rig.ip(10);
    let mut q = hypervisor(&rig, 0, "e1000", &hv_ip, "rhv")?;
    q.command("create heartbeat extra=\"period_ms=100\"", CMD)?;
    let out = q.command(
        &format!(
            "create echo-server vif=mac=02:00:00:77:00:10 extra=\"ip={guest_ip}/24 gw={} port=7\"",
            rig.bridge_ip()
        ),
        CMD,
    )?;
    assert!(out.contains("created domain 2 (echo-server)"), "{out}");
    let out = q.command("network-list echo-server", CMD)?;
    assert!(out.contains("02:00:00:77:00:10"), "{out}");
    rig.wait_ping(&guest_ip, Duration::from_secs(20))?;

    // 10 MB of random bytes there and back; every byte compared.
    let dir = systest::TempDir::new("rig-echo").map_err(|e| Error::Setup(e.to_string()))?;
    let (inp, outp) = (dir.path().join("in"), dir.path().join("out"));
    let script = format!(
        "head -c 10000000 /dev/urandom > {i} && nc -N {guest_ip} 7 < {i} > {o} && sha256sum < {i} && sha256sum < {o} && wc -c < {o}",
        i = inp.display(),
        o = outp.display()
    );
    let out = sh(&rig, &script, 120)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], lines[1], "the echo differs from what was sent");
    assert_eq!(lines[2].trim(), "10000000");
    // UDP echo too.
    let out = sh(&rig, &format!("echo hello-udp | nc -u -w 2 {guest_ip} 7"), 10)?;
    assert!(out.contains("hello-udp"), "{out}");

    // A storm of ARP requests from random MACs, random garbage and lying
    // IPv4 headers from the Linux side.
    let storm = repo_root().join("tests/tools/framestorm.py");
    // Jumbo MTU on the Linux side so oversized frames reach the NIC.
    sh(&rig, &format!("ip link set {} mtu 9000 && ip link set br0 mtu 9000", rig.taps()[0]), 10)?;
    let out = sh(&rig, &format!("python3 {} br0 3000 7", storm.display()), 120)?;
    assert!(out.contains("framestorm: sent"), "{out}");
    // Everything still answers: the hypervisor, the guest, the shell.
    rig.wait_ping(&hv_ip, Duration::from_secs(20))?;
    rig.wait_ping(&guest_ip, Duration::from_secs(20))?;
    let out = sh(&rig, &format!("echo after-storm | nc -N {guest_ip} 7"), 20)?;
    assert!(out.contains("after-storm"), "{out}");
    let out = q.command("list", CMD)?;
    assert!(out.contains("echo-server") && out.contains("heartbeat"), "{out}");
    assert!(!out.contains("----c-"), "nothing crashed: {out}");
    let out = q.command("ifconfig", CMD)?;
    assert!(out.contains("link up"), "{out}");
    Ok(())
}
