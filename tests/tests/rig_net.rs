//! The hypervisor among real Linux hosts, on the network rig (a namespace
//! with a Linux bridge and taps; needs root — without it these tests print
//! SKIPPED, and with RHV_RIG_REQUIRED=1 they fail instead).
use std::process::Stdio;
use std::time::Duration;

use systest::rig::Rig;
use systest::rng::Rng;
use systest::{images, repo_root, timeouts, Error, Qemu, QemuBuilder, Regex};

const CMD: Duration = timeouts::COMMAND;

/// Tests here that run two QEMUs at once take turns: with the harness's
/// limit of two QEMUs per process, two of them at a time would each hold
/// one slot and wait for a second.
static TWO_HOSTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TWO_HOSTS.lock().unwrap_or_else(|p| p.into_inner())
}

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

/// Creates an `echo-server` guest `name` with vif MAC `mac`, address
/// `ip`/24, TCP and UDP echo on port 7 and `extra` parameters, and waits
/// for it to listen.
fn echo_guest(q: &mut Qemu, name: &str, mac: &str, ip: &str, extra: &str) -> Result<(), Error> {
    let out =
        q.command(&format!("create echo-server name={name} vif=mac={mac} extra=\"ip={ip}/24 port=7 {extra}\""), CMD)?;
    assert!(out.contains(&format!("({name})")) && out.contains("created domain"), "{out}");
    q.on_console(name, format!("echo-server: listening on {ip}:7"), Duration::from_secs(30))?;
    Ok(())
}

/// The `echo-server: probe ok|failed ...` line of guest `dom` (a `probe=`
/// guest), waiting up to `timeout` for it.
fn probe_result(q: &mut Qemu, dom: &str, timeout: Duration) -> Result<String, Error> {
    // Up to the line's end: the console may have delivered half of it.
    let re = Regex::new(r"echo-server: probe (?:ok|failed) [^\r\n]*\r?\n").unwrap();
    let got = q.on_console(dom, &re, timeout)?;
    Ok(re.find_iter(&got).last().map(|m| m.as_str().trim_end().to_string()).unwrap_or_default())
}

fn ping_summary(q: &mut Qemu, ip: &str, count: u32) -> Result<(u32, u32), Error> {
    let out = q.command(&format!("ping {ip} {count}"), Duration::from_secs(u64::from(count) * 2 + 10))?;
    let c = Regex::new(r"(\d+) packets transmitted, (\d+) received").unwrap().captures(&out);
    let c = c.unwrap_or_else(|| panic!("no ping summary:\n{out}"));
    Ok((c[1].parse().unwrap(), c[2].parse().unwrap()))
}

/// Two hypervisors (e1000, virtio-net) on the rig: Linux pings both, they
/// ping each other both ways and Linux; and a guest on hostB checks the
/// path to a guest on hostA (guest → bridge → wire → bridge → guest).
#[test]
fn linux_pings_both_hypervisors_and_they_ping_each_other() -> Result<(), Error> {
    let _turn = turn();
    let Some(rig) = Rig::up_or_skip(2, "linux_pings_both_hypervisors_and_they_ping_each_other") else { return Ok(()) };
    let (ip_a, ip_b) = (rig.ip(2), rig.ip(3));
    let mut a = hypervisor(&rig, 0, "e1000", &ip_a, "hostA")?;
    let mut b = hypervisor(&rig, 1, "virtio-net-pci", &ip_b, "hostB")?;
    rig.wait_ping(&ip_a, Duration::from_secs(20))?;
    rig.wait_ping(&ip_b, Duration::from_secs(20))?;
    for ip in [&ip_a, &ip_b] {
        let out = rig.run(&["ping", "-n", "-c", "5", "-i", "0.2", ip])?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains("5 received"), "Linux → {ip}:\n{text}");
    }
    let (sent, got) = ping_summary(&mut a, &ip_b, 4)?;
    assert!(sent == 4 && got >= 3, "hostA → hostB: {got}/{sent}");
    let (sent, got) = ping_summary(&mut b, &ip_a, 4)?;
    assert!(sent == 4 && got >= 3, "hostB → hostA: {got}/{sent}");
    let (sent, got) = ping_summary(&mut b, rig.bridge_ip(), 4)?;
    assert!(sent == 4 && got >= 3, "hostB → Linux: {got}/{sent}");

    // Guest to guest across the two hosts.
    let (guest_a, guest_b) = (rig.ip(10), rig.ip(11));
    echo_guest(&mut a, "ga", "02:00:00:77:00:10", &guest_a, "")?;
    echo_guest(&mut b, "gb", "02:00:00:77:00:11", &guest_b, &format!("probe={guest_a}:7"))?;
    let line = probe_result(&mut b, "gb", Duration::from_secs(60))?;
    assert_eq!(line, format!("echo-server: probe ok 4/4 to {guest_a}:7"), "guest on hostB → guest on hostA");
    Ok(())
}

/// Inside one hypervisor: its own stack pings an `echo-server` guest
/// through the bridge (the guest's smoltcp answers), and a second guest's
/// UDP probe gets every datagram back byte for byte from the first. A
/// probe of an address nobody has fails, so `probe ok` means something.
#[test]
fn the_hypervisor_pings_its_guest_and_guests_echo_each_other() -> Result<(), Error> {
    let Some(rig) = Rig::up_or_skip(1, "the_hypervisor_pings_its_guest_and_guests_echo_each_other") else {
        return Ok(());
    };
    let (hv_ip, g1, g2, nobody) = (rig.ip(2), rig.ip(10), rig.ip(11), rig.ip(99));
    let mut q = hypervisor(&rig, 0, "e1000", &hv_ip, "rhv")?;
    // No guest yet: nobody answers.
    let (sent, got) = ping_summary(&mut q, &g1, 1)?;
    assert!(sent == 1 && got == 0, "a reply from {g1} before its guest exists: {got}/{sent}");

    echo_guest(&mut q, "e1", "02:00:00:77:00:10", &g1, "")?;
    let (sent, got) = ping_summary(&mut q, &g1, 4)?;
    assert!(sent == 4 && got >= 3, "hypervisor → its guest {g1}: {got}/{sent}");

    echo_guest(&mut q, "lost", "02:00:00:77:00:12", &rig.ip(12), &format!("probe={nobody}:7 probes=1"))?;
    echo_guest(&mut q, "e2", "02:00:00:77:00:11", &g2, &format!("probe={g1}:7 probes=6"))?;
    let line = probe_result(&mut q, "e2", Duration::from_secs(60))?;
    assert_eq!(line, format!("echo-server: probe ok 6/6 to {g1}:7"), "guest → guest on one host");
    let line = probe_result(&mut q, "lost", Duration::from_secs(60))?;
    assert_eq!(line, format!("echo-server: probe failed 0/1 to {nobody}:7 (no echo of datagram 1 after 20 sends)"));

    // The probing guest still serves echo, and the hypervisor pings it too.
    let (sent, got) = ping_summary(&mut q, &g2, 4)?;
    assert!(sent == 4 && got >= 3, "hypervisor → {g2}: {got}/{sent}");
    echo_exact(&rig, &g2, 3000, 2)?;
    Ok(())
}

/// The NIC's received-frame count from `ifconfig` (its first `RX packets`).
fn nic_rx_packets(q: &mut Qemu) -> Result<u64, Error> {
    let out = q.command("ifconfig", CMD)?;
    let c = Regex::new(r"RX packets (\d+)").unwrap().captures(&out);
    Ok(c.unwrap_or_else(|| panic!("no RX packets in ifconfig:\n{out}"))[1].parse().unwrap())
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

/// Sends `len` pseudo-random bytes (from `seed`) to the TCP echo at
/// `ip`:7 with `nc` from the rig and asserts exactly those bytes come back.
fn echo_exact(rig: &Rig, ip: &str, len: usize, seed: u64) -> Result<(), Error> {
    let dir = systest::TempDir::new("rig-echo-exact").map_err(|e| Error::Setup(e.to_string()))?;
    let file = dir.path().join("in");
    let data = Rng::new(seed).bytes(len);
    std::fs::write(&file, &data).map_err(|e| Error::Setup(format!("writing {}: {e}", file.display())))?;
    let input = std::fs::File::open(&file).map_err(|e| Error::Setup(format!("{}: {e}", file.display())))?;
    let out = rig
        .exec(&["timeout", "20", "nc", "-N", ip, "7"])
        .stdin(input)
        .output()
        .map_err(|e| Error::Setup(format!("nc in rig: {e}")))?;
    assert!(out.status.success(), "nc {ip} 7 failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), len, "{ip} echoed {} bytes of {len}", out.stdout.len());
    assert!(out.stdout == data, "{ip} echoed {len} bytes, but not the ones sent");
    Ok(())
}

/// The ARP/broadcast storm and the malformed, truncated and oversized
/// frames reach both NIC models: hostA (e1000) and hostB (virtio-net), each
/// with an echo guest. Afterwards both hypervisors answer ping and their
/// shell, and both guests echo byte for byte.
#[test]
fn linux_exchanges_10_mb_with_the_echo_guest_and_survives_a_frame_storm() -> Result<(), Error> {
    let _turn = turn();
    let Some(rig) = Rig::up_or_skip(2, "linux_exchanges_10_mb_with_the_echo_guest") else { return Ok(()) };
    let hv_ip = rig.ip(2);
    let guest_ip = rig.ip(10);
    let (hv_b_ip, guest_b_ip) = (rig.ip(3), rig.ip(11));
    let mut q = hypervisor(&rig, 0, "e1000", &hv_ip, "rhv")?;
    let mut b = hypervisor(&rig, 1, "virtio-net-pci", &hv_b_ip, "rhvB")?;
    echo_guest(&mut b, "echoB", "02:00:00:77:00:11", &guest_b_ip, "")?;
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

    // hostB's guest works before the storm.
    rig.wait_ping(&guest_b_ip, Duration::from_secs(20))?;
    echo_exact(&rig, &guest_b_ip, 4096, 3)?;

    // A storm of ARP requests from random MACs, random garbage and lying
    // IPv4 headers from the Linux side, sent on the bridge: broadcast and
    // unknown destinations go out of both taps, to both NICs.
    let storm = repo_root().join("tests/tools/framestorm.py");
    // Jumbo MTU on the Linux side so oversized frames reach the NICs (the
    // bridge takes no MTU above its ports').
    sh(&rig, "ip link set tap0 mtu 9000 && ip link set tap1 mtu 9000 && ip link set br0 mtu 9000", 10)?;
    let rx_before = [nic_rx_packets(&mut q)?, nic_rx_packets(&mut b)?];
    let out = sh(&rig, &format!("python3 {} br0 3000 7", storm.display()), 120)?;
    let c = Regex::new(r"framestorm: sent \d+ frames \(arp=(\d+) random=(\d+) ipv4=(\d+) oversized=(\d+)\)")
        .unwrap()
        .captures(&out)
        .unwrap_or_else(|| panic!("no framestorm summary:\n{out}"));
    let sent: Vec<u32> = (1..=4).map(|i| c[i].parse().unwrap()).collect();
    assert_eq!(sent, [3000, 3000, 3000, 300], "every frame went out: {out}");
    // Both NICs saw the storm (at least its 3000 broadcast ARP requests).
    let rx_after = [nic_rx_packets(&mut q)?, nic_rx_packets(&mut b)?];
    for (i, nic) in ["e1000", "virtio-net"].iter().enumerate() {
        let got = rx_after[i] - rx_before[i];
        assert!(got >= 3000, "{nic} received {got} frames during the storm, expected at least 3000");
    }

    // Everything still answers on both hosts: the hypervisor (ping and
    // shell), the guest (ping and echo, byte for byte).
    let hosts = [(&mut q, &hv_ip, "echo-server", &guest_ip, 4), (&mut b, &hv_b_ip, "echoB", &guest_b_ip, 5)];
    for (h, hv, dom, guest, seed) in hosts {
        rig.wait_ping(hv, Duration::from_secs(20))?;
        rig.wait_ping(guest, Duration::from_secs(20))?;
        echo_exact(&rig, guest, 4096, seed)?;
        let out = h.command("list", CMD)?;
        assert!(out.contains(dom), "{hv}: {out}");
        assert!(!out.contains("----c-"), "{hv}: nothing crashed: {out}");
        let out = h.command("ifconfig", CMD)?;
        assert!(out.contains("link up"), "{hv}: {out}");
        let (sent, got) = ping_summary(h, rig.bridge_ip(), 2)?;
        assert!(sent == 2 && got >= 1, "{hv} → Linux after the storm: {got}/{sent}");
    }
    let out = q.command("list", CMD)?;
    assert!(out.contains("heartbeat"), "{out}");
    Ok(())
}
