//! The hypervisor on the network: NIC drivers, its own stack, ping, and
//! two hypervisors talking to each other. These need no root: the two QEMUs
//! are linked by a socket netdev on loopback. Tests against real Linux hosts
//! use the rig (tests/tests/rig_net.rs).
use std::net::TcpListener;
use std::time::Duration;

use systest::{images, timeouts, Error, Qemu, QemuBuilder, Regex};

const CMD: Duration = timeouts::COMMAND;

/// A free loopback TCP port for QEMU's socket netdev.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

fn host(cmdline: &str, netdev: &str, nic: &str, mac: &str) -> Result<Qemu, Error> {
    let mut q = QemuBuilder::kernel(images::elf()?)
        .append(cmdline)
        .memory("128M")
        .arg("-netdev")
        .arg(netdev)
        .arg("-device")
        .arg(format!("{nic},netdev=n0,mac={mac}"))
        .spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    Ok(q)
}

/// Pings and returns (transmitted, received).
fn ping(q: &mut Qemu, ip: &str, count: u32) -> Result<(u32, u32), Error> {
    let out = q.command(&format!("ping {ip} {count}"), Duration::from_secs(u64::from(count) * 2 + 10))?;
    let re = Regex::new(r"(\d+) packets transmitted, (\d+) received").unwrap();
    let c = re.captures(&out).unwrap_or_else(|| panic!("no ping summary:\n{out}"));
    Ok((c[1].parse().unwrap(), c[2].parse().unwrap()))
}

#[test]
fn two_hypervisors_ping_each_other() -> Result<(), Error> {
    let port = free_port();
    let mut a = host(
        "console=ttyS0 ip=10.88.0.1/24 hostname=hostA",
        &format!("socket,id=n0,listen=127.0.0.1:{port}"),
        "virtio-net-pci",
        "52:54:00:88:00:01",
    )?;
    let mut b = host(
        "console=ttyS0 ip=10.88.0.2/24 hostname=hostB",
        &format!("socket,id=n0,connect=127.0.0.1:{port}"),
        "e1000",
        "52:54:00:88:00:02",
    )?;
    let (sent, got) = ping(&mut a, "10.88.0.2", 4)?;
    assert!(sent == 4 && got >= 3, "A→B: {got} of {sent} replies");
    let (sent, got) = ping(&mut b, "10.88.0.1", 4)?;
    assert!(sent == 4 && got >= 3, "B→A: {got} of {sent} replies");
    let out = a.command("ifconfig", CMD)?;
    assert!(out.contains("eth0: virtio-net at ") && out.contains("link up"), "{out}");
    assert!(out.contains("inet 10.88.0.1/24"), "{out}");
    let out = b.command("ifconfig", CMD)?;
    assert!(out.contains("eth0: e1000 at "), "{out}");
    // No reply from an address nobody has: a clean report, no hang.
    let (sent, got) = ping(&mut a, "10.88.0.99", 2)?;
    assert_eq!((sent, got), (2, 0));
    Ok(())
}

#[test]
fn dhcp_lspci_and_bad_options() -> Result<(), Error> {
    let mut q = host("console=ttyS0 ip=dhcp", "user,id=n0", "e1000", "52:54:00:12:34:56")?;
    let out = q.command("lspci", CMD)?;
    assert!(out.contains("Ethernet controller [0200]: Intel 82540EM Gigabit Ethernet [8086:100e]"), "{out}");
    // QEMU's user network hands out 10.0.2.15 and answers ping at 10.0.2.2.
    let mut bound = String::new();
    for _ in 0..50 {
        bound = q.command("ifconfig", CMD)?;
        if bound.contains("bound to 10.0.2.15/24") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200)); // polling DHCP state, not synchronising
    }
    assert!(bound.contains("inet 10.0.2.15/24 gw 10.0.2.2"), "{bound}");
    let (sent, got) = ping(&mut q, "10.0.2.2", 3)?;
    assert!(sent == 3 && got >= 2, "{got} of {sent}");
    let out = q.command("ping 10.0.2", CMD)?;
    assert_eq!(out.trim(), "usage: ping <a.b.c.d> [count]");
    drop(q);

    let mut q = host("console=ttyS0 ip=10.0.0.300/24", "user,id=n0", "virtio-net-pci", "52:54:00:12:34:57")?;
    let log = q.command("dmesg", CMD)?;
    assert!(log.contains("net: ip=10.0.0.300/24:"), "a bad ip= is named: {log}");
    let out = q.command("ping 10.0.2.2 1", CMD)?;
    assert!(out.contains("error: ping 10.0.2.2:"), "{out}");
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
