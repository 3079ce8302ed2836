//! The hypervisor on the network: NIC drivers, its own stack, ping, and
//! two hypervisors talking to each other. These need no root: QEMU's user
//! network (slirp) stands in for a LAN with a DHCP server, and two QEMUs are
//! linked by `-netdev stream` / `-netdev dgram` over unix sockets
//! (`systest::rig::VmLink`). Tests against real Linux hosts use the rig
//! (tests/tests/rig_net.rs).
use std::time::Duration;

use systest::rig::VmLink;
use systest::{images, timeouts, Error, Qemu, QemuBuilder, Regex};

const CMD: Duration = timeouts::COMMAND;

fn host(cmdline: &str, netdev: &str, nic: &str, mac: &str) -> Result<Qemu, Error> {
    host_args(cmdline, &["-netdev".into(), netdev.into(), "-device".into(), format!("{nic},netdev=n0,mac={mac}")], &[])
}

/// A hypervisor with `args` (its NIC) and `guests` as boot modules.
fn host_args(cmdline: &str, args: &[String], guests: &[&str]) -> Result<Qemu, Error> {
    let mut b = QemuBuilder::kernel(images::elf()?).append(cmdline).memory("128M");
    for a in args {
        b = b.arg(a);
    }
    for g in guests {
        b = b.initrd(images::guest(g)?);
    }
    let mut q = b.spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    Ok(q)
}

/// Two hypervisors on `link`: A listens (for a stream link), B connects.
fn pair(link: &VmLink, cmd_a: &str, cmd_b: &str, guests_b: &[&str]) -> Result<(Qemu, Qemu), Error> {
    let a = host_args(cmd_a, link.a(), &[])?;
    link.wait_listening(Duration::from_secs(10))?;
    let b = host_args(cmd_b, link.b(), guests_b)?;
    Ok((a, b))
}

/// Pings and returns (transmitted, received).
fn ping(q: &mut Qemu, ip: &str, count: u32) -> Result<(u32, u32), Error> {
    let (sent, got, _) = ping_out(q, ip, count)?;
    Ok((sent, got))
}

/// Pings; (transmitted, received, the command's output).
fn ping_out(q: &mut Qemu, ip: &str, count: u32) -> Result<(u32, u32, String), Error> {
    let out = q.command(&format!("ping {ip} {count}"), Duration::from_secs(u64::from(count) * 2 + 10))?;
    let re = Regex::new(r"(\d+) packets transmitted, (\d+) received").unwrap();
    let c = re.captures(&out).unwrap_or_else(|| panic!("no ping summary:\n{out}"));
    Ok((c[1].parse().unwrap(), c[2].parse().unwrap(), out))
}

/// eth0's counters from `ifconfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NicCounters {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    interrupts: u64,
}

fn eth0_counters(ifconfig: &str) -> NicCounters {
    let re = Regex::new(
        r"RX packets (\d+) bytes (\d+) dropped \d+\s+TX packets (\d+) bytes (\d+) dropped \d+ full \d+\s+interrupts (\d+)",
    )
    .unwrap();
    let c = re.captures(ifconfig).unwrap_or_else(|| panic!("no eth0 counters:\n{ifconfig}"));
    let n = |i: usize| c[i].parse::<u64>().unwrap();
    NicCounters { rx_packets: n(1), rx_bytes: n(2), tx_packets: n(3), tx_bytes: n(4), interrupts: n(5) }
}

/// Waits (polling `ifconfig`) for the DHCP lease from QEMU's user network;
/// returns the last `ifconfig` output.
fn wait_dhcp(q: &mut Qemu) -> Result<String, Error> {
    let mut out = String::new();
    for _ in 0..75 {
        out = q.command("ifconfig", CMD)?;
        if out.contains("bound to 10.0.2.15/24") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200)); // polling DHCP state, not synchronising
    }
    Ok(out)
}

/// Checks ping's per-reply lines and summary: one `time=` line per reply,
/// and min/avg/max when anything came back.
fn assert_ping_report(out: &str, ip: &str, got: u32) {
    let reply =
        Regex::new(&format!(r"\d+ bytes from {}: icmp_seq=\d+ time=\d+\.\d{{3}} ms", regex_lite::escape(ip))).unwrap();
    assert_eq!(reply.find_iter(out).count(), got as usize, "one line with an RTT per reply:\n{out}");
    let summary = Regex::new(r"rtt min/avg/max = (\d+\.\d{3})/(\d+\.\d{3})/(\d+\.\d{3}) ms").unwrap();
    let c = summary.captures(out).unwrap_or_else(|| panic!("no rtt summary:\n{out}"));
    let v: Vec<f64> = (1..=3).map(|i| c[i].parse().unwrap()).collect();
    assert!(v[0] <= v[1] && v[1] <= v[2], "min <= avg <= max:\n{out}");
}

/// One boot per NIC model on QEMU's user network (DHCP), in turn: the
/// device is named, its MAC read from the device, its registers mapped
/// uncached (read back from the page tables), DHCP and ping work, the
/// counters move and receive is interrupt-driven.
#[test]
fn every_nic_model_gets_dhcp_pings_and_counts() -> Result<(), Error> {
    // (QEMU device, driver, lspci name, the BAR the driver maps)
    let models = [
        ("e1000", "e1000", "Intel 82540EM Gigabit Ethernet [8086:100e]", "BAR0 mem "),
        ("e1000-82545em", "e1000", "Intel 82545EM Gigabit Ethernet [8086:100f]", "BAR0 mem "),
        ("virtio-net-pci", "virtio-net", "Red Hat virtio network device (transitional) [1af4:1000]", "BAR4 mem64 "),
        (
            "virtio-net-pci,disable-legacy=on",
            "virtio-net",
            "Red Hat virtio network device (modern) [1af4:1041]",
            "BAR4 mem64 ",
        ),
    ];
    let uncached = Regex::new(r"0x[0-9a-f]+ \d+ [KM]iB uncached \(\d+ pages mapped, PCD\+PWT set\)$").unwrap();
    for (i, (device, driver, name, bar)) in models.iter().enumerate() {
        let mac = format!("52:54:00:12:34:{:02x}", 0x60 + i);
        let mut q = host("console=ttyS0 ip=dhcp", "user,id=n0", device, &mac)?;
        let out = q.command("lspci -v", CMD)?;
        let mut lines = out.lines().skip_while(|l| !l.contains(name));
        let head = lines.next().unwrap_or_else(|| panic!("{device}: lspci does not name it:\n{out}"));
        assert!(head.contains("Ethernet controller [0200]"), "{device}: {head}");
        let bars: Vec<&str> = lines.take_while(|l| l.starts_with(' ')).map(str::trim).collect();
        let mapped = bars.iter().find(|l| l.starts_with(bar)).unwrap_or_else(|| panic!("{device}: no {bar}:\n{out}"));
        assert!(uncached.is_match(mapped), "{device}: {mapped}\n{out}");
        assert!(!out.contains("CACHED"), "{device}: a BAR page without PCD:\n{out}");

        let before = wait_dhcp(&mut q)?;
        let eth0 = before.lines().find(|l| l.starts_with("eth0:")).unwrap_or_else(|| panic!("{before}"));
        assert!(eth0.starts_with(&format!("eth0: {driver} at ")), "{device}: {eth0}");
        assert!(eth0.contains(&format!(", mac {mac}, link up, irq ")), "{device}: {eth0}");
        assert!(!eth0.contains("irq polled"), "{device}: interrupts routed: {eth0}");
        assert!(before.contains("inet 10.0.2.15/24 netmask 255.255.255.0 gw 10.0.2.2"), "{device}:\n{before}");
        assert!(before.contains(&format!("rhv0: mac {mac} ")), "{device}: the stack uses the NIC's MAC:\n{before}");
        let c0 = eth0_counters(&before);

        let (sent, got, out) = ping_out(&mut q, "10.0.2.2", 3)?;
        assert!(sent == 3 && got >= 2, "{device}: {got} of {sent}:\n{out}");
        assert_ping_report(&out, "10.0.2.2", got);

        let after = q.command("ifconfig", CMD)?;
        let c1 = eth0_counters(&after);
        assert!(c1.rx_packets >= c0.rx_packets + u64::from(got), "{device}: RX packets {c0:?} -> {c1:?}");
        assert!(c1.tx_packets >= c0.tx_packets + u64::from(sent), "{device}: TX packets {c0:?} -> {c1:?}");
        assert!(c1.rx_bytes > c0.rx_bytes && c1.tx_bytes > c0.tx_bytes, "{device}: bytes {c0:?} -> {c1:?}");
        assert!(c1.interrupts > c0.interrupts, "{device}: receive raised interrupts {c0:?} -> {c1:?}");
    }
    Ok(())
}

/// `nic-irq=off` forces the polling fallback: no interrupt is routed, the
/// timer tick's poll still gets DHCP and ping through.
#[test]
fn nic_irq_off_polls_and_still_works() -> Result<(), Error> {
    let mac = "52:54:00:12:34:70";
    let mut q = host("console=ttyS0 ip=dhcp nic-irq=off", "user,id=n0", "e1000", mac)?;
    let log = q.command("dmesg", CMD)?;
    assert!(log.contains("nic-irq=off; polled on the timer tick"), "{log}");
    let out = wait_dhcp(&mut q)?;
    assert!(out.contains("eth0: e1000 at ") && out.contains(&format!("mac {mac}, link up, irq polled")), "{out}");
    assert!(out.contains("inet 10.0.2.15/24 netmask 255.255.255.0 gw 10.0.2.2"), "DHCP polled:\n{out}");
    let c0 = eth0_counters(&out);
    let (sent, got, report) = ping_out(&mut q, "10.0.2.2", 3)?;
    assert!(sent == 3 && got >= 2, "{got} of {sent}:\n{report}");
    assert_ping_report(&report, "10.0.2.2", got);
    let c1 = eth0_counters(&q.command("ifconfig", CMD)?);
    assert!(c1.rx_packets >= c0.rx_packets + u64::from(got), "{c0:?} -> {c1:?}");
    assert_eq!((c0.interrupts, c1.interrupts), (0, 0), "no NIC interrupt was taken");
    Ok(())
}

/// Both directions over `link`, the hypervisors' own stacks on 10.88.0.0/24.
fn ping_both_ways(link: &VmLink, driver: &str) -> Result<(), Error> {
    let (mut a, mut b) = pair(
        link,
        "console=ttyS0 ip=10.88.0.1/24 hostname=hostA",
        "console=ttyS0 ip=10.88.0.2/24 hostname=hostB",
        &[],
    )?;
    let (sent, got) = ping(&mut a, "10.88.0.2", 4)?;
    assert!(sent == 4 && got >= 3, "A→B: {got} of {sent}");
    let (sent, got) = ping(&mut b, "10.88.0.1", 4)?;
    assert!(sent == 4 && got >= 3, "B→A: {got} of {sent}");
    for (q, ip) in [(&mut a, "10.88.0.1"), (&mut b, "10.88.0.2")] {
        let out = q.command("ifconfig", CMD)?;
        assert!(out.contains(&format!("eth0: {driver} at ")) && out.contains("link up"), "{out}");
        assert!(out.contains(&format!("inet {ip}/24 netmask 255.255.255.0")), "{out}");
    }
    // No reply from an address nobody has: a clean report, no hang.
    let (sent, got) = ping(&mut a, "10.88.0.99", 2)?;
    assert_eq!((sent, got), (2, 0));
    Ok(())
}

#[test]
fn two_hypervisors_ping_each_other() -> Result<(), Error> {
    ping_both_ways(&VmLink::stream("virtio-net-pci")?, "virtio-net")
}

#[test]
fn two_hypervisors_ping_each_other_over_dgram() -> Result<(), Error> {
    ping_both_ways(&VmLink::dgram("e1000")?, "e1000")
}

/// A guest behind a virtio-net uplink receives frames for its own MAC (not
/// the NIC's): the device must be promiscuous without a control queue. Host
/// A's ping goes A's stack → wire → B's NIC → B's bridge → the guest, whose
/// smoltcp answers.
#[test]
fn a_guest_behind_virtio_gets_unicast_frames() -> Result<(), Error> {
    let link = VmLink::stream("virtio-net-pci")?;
    let (mut a, mut b) = pair(
        &link,
        "console=ttyS0 ip=10.88.1.1/24 hostname=hostA",
        "console=ttyS0 ip=10.88.1.2/24 hostname=hostB",
        &["echo-server"],
    )?;
    let guest_mac = "02:00:00:00:0b:01";
    let out =
        b.command(&format!("create echo-server name=echo vif=mac={guest_mac} extra=\"ip=10.88.1.10/24\""), CMD)?;
    assert!(out.contains("(echo)"), "{out}");
    b.on_console(
        "echo",
        format!("echo-server: listening on 10.88.1.10:7 (tcp, udp) mac={guest_mac}").as_str(),
        Duration::from_secs(30),
    )?;
    let before = b.command("network-list echo", CMD)?;
    let (sent, got, out) = ping_out(&mut a, "10.88.1.10", 4)?;
    assert!(sent == 4 && got >= 3, "A→guest on B: {got} of {sent}:\n{out}");
    assert_ping_report(&out, "10.88.1.10", got);
    let after = b.command("network-list echo", CMD)?;
    let rx = |t: &str| -> u64 {
        let row = t.lines().find(|l| l.contains(guest_mac)).unwrap_or_else(|| panic!("{t}"));
        row.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert!(rx(&after) >= rx(&before) + u64::from(got), "the guest received the echo requests:\n{before}\n{after}");
    Ok(())
}

/// `vif=` with no MAC: a generated, locally administered unicast address
/// (`02:72:68:…`, net/src/mac.rs), a different one per guest.
#[test]
fn an_empty_vif_gets_a_generated_local_mac() -> Result<(), Error> {
    let mut q = host_args("console=ttyS0", &[], &["heartbeat"])?;
    let mut macs = Vec::new();
    for name in ["g1", "g2"] {
        let out = q.command(&format!("create heartbeat name={name} vif="), CMD)?;
        assert!(out.contains(&format!("({name})")), "{out}");
        let out = q.command(&format!("network-list {name}"), CMD)?;
        let re = Regex::new(r"(?m)^0\s+(02:72:68:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2})\s").unwrap();
        let c = re.captures(&out).unwrap_or_else(|| panic!("no generated 02:72:68 MAC:\n{out}"));
        macs.push(c[1].to_string());
    }
    assert_ne!(macs[0], macs[1], "each guest gets its own address");
    let log = q.command("dmesg", CMD)?;
    assert!(log.contains(&format!("vif mac {}", macs[0])), "{log}");
    Ok(())
}

/// A bad `ip=` is named in the log and leaves the hypervisor without an
/// address; ping says so instead of hanging. (DHCP, lspci and ping per NIC
/// model: `every_nic_model_gets_dhcp_pings_and_counts`.)
#[test]
fn bad_ip_option_and_ping_usage() -> Result<(), Error> {
    let mut q = host("console=ttyS0 ip=10.0.0.300/24", "user,id=n0", "virtio-net-pci", "52:54:00:12:34:57")?;
    let log = q.command("dmesg", CMD)?;
    assert!(log.contains("net: ip=10.0.0.300/24:"), "a bad ip= is named: {log}");
    let out = q.command("ping 10.0.2.2 1", CMD)?;
    assert!(out.contains("error: ping 10.0.2.2:"), "{out}");
    let out = q.command("ping 10.0.2", CMD)?;
    assert_eq!(out.trim(), "usage: ping <a.b.c.d> [count]");
    let out = q.command("lspci -x", CMD)?;
    assert_eq!(out.trim(), "usage: lspci [-v]");
    Ok(())
}

#[test]
fn a_guest_cannot_send_with_a_forged_source_mac() -> Result<(), Error> {
    // No NIC needed: the bridge and the guest's vif exist regardless.
    let mut q = QemuBuilder::kernel(images::elf()?)
        .append("console=ttyS0")
        .initrd(images::guest("hostile")?)
        .arg("-cpu")
        .arg("max")
        .spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    let out = q.command("create hostile name=spoofer vif=mac=02:00:00:00:0a:01 extra=\"fault=hlt\"", CMD)?;
    assert!(out.contains("created domain 1 (spoofer)"), "{out}");
    q.expect("(spoofer): crashed: #GP", Duration::from_secs(60))?;
    let out = q.command("network-list spoofer", CMD)?;
    let row = out.lines().find(|l| l.contains("02:00:00:00:0a:01")).unwrap_or_else(|| panic!("{out}"));
    let spoofed: u64 = row.split_whitespace().last().unwrap().parse().unwrap();
    assert_eq!(spoofed, 8, "all 8 forged frames dropped and counted:\n{out}");
    // The guest's own address is taken; a second vif with it is refused.
    let out = q.command("create hostile name=twin vif=mac=02:00:00:00:0a:01", CMD)?;
    assert!(out.contains("is already in use"), "{out}");
    let out = q.command("create hostile name=bad vif=mac=ff:ff:ff:ff:ff:ff", CMD)?;
    assert!(out.contains("not a unicast address"), "{out}");
    Ok(())
}
