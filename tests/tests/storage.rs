//! Shared storage without dom0: the hypervisor mounts a real NFSv3 server
//! (nfs-ganesha, started inside the rig's namespace) by itself.
use std::time::Duration;

use systest::nfsbench::NfsServer;
use systest::rig::Rig;
use systest::{images, timeouts, Error, Qemu, QemuBuilder, TempDir};

const CMD: Duration = timeouts::COMMAND;

/// sha256sum of a file, computed by Linux.
fn sha256_hex(rig: &Rig, path: &std::path::Path) -> Result<String, Error> {
    let out = rig.run(&["sha256sum".as_ref(), path.as_os_str()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().next().unwrap_or_default().to_string())
}

/// Waits until some NFS connection of the rig's server has had `bytes`
/// of its data acknowledged by the client (from `ss -ti` in the rig);
/// returns the count.
fn wait_nfs_bytes_acked(rig: &Rig, bytes: u64, timeout: Duration) -> Result<u64, Error> {
    let deadline = std::time::Instant::now() + systest::scaled(timeout);
    let acked_re = systest::Regex::new(r"bytes_acked:(\d+)").unwrap();
    loop {
        let out = rig.run(&["ss", "-tinH", "( sport = :2049 )"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let acked = acked_re.captures_iter(&text).filter_map(|c| c[1].parse::<u64>().ok()).max().unwrap_or(0);
        if acked >= bytes {
            return Ok(acked);
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Setup(format!("the NFS server had only {acked} bytes acknowledged after {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(10)); // polling a counter, not waiting blind
    }
}

/// A temporary directory and, in it, the export directory `xen/`.
fn new_export(prefix: &str) -> Result<(TempDir, std::path::PathBuf), Error> {
    let dir = TempDir::new(prefix).map_err(|e| Error::Setup(e.to_string()))?;
    let export = dir.path().join("xen");
    std::fs::create_dir_all(&export).map_err(|e| Error::Setup(format!("{}: {e}", export.display())))?;
    Ok((dir, export))
}

/// Mounts the rig server's `export` on /var/xen in rhv (a mount error
/// fails the test); returns the `server:/path` it mounted.
fn mount_share(q: &mut Qemu, rig: &Rig, export: &std::path::Path) -> Result<String, Error> {
    let spec = format!("{}:{}", rig.bridge_ip(), export.display());
    let out = q.command(&format!("mount {spec} /var/xen"), Duration::from_secs(60))?;
    assert!(!out.contains("error"), "{out}");
    Ok(spec)
}

fn hypervisor(rig: &Rig) -> Result<Qemu, Error> {
    let mut b = QemuBuilder::kernel(images::elf()?)
        .append(format!("console=ttyS0 ip={}/24", rig.ip(2)))
        .memory("256M")
        .prefix(rig.qemu_prefix());
    for a in rig.nic_args(0, "virtio-net-pci") {
        b = b.arg(a);
    }
    let mut q = b.spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    Ok(q)
}

#[test]
fn mounts_a_real_nfs_export_and_reads_it() -> Result<(), Error> {
    let Some(rig) = Rig::up_or_skip(1, "mounts_a_real_nfs_export_and_reads_it") else { return Ok(()) };
    let (dir, export) = new_export("nfs")?;
    std::fs::create_dir_all(export.join("images")).unwrap();
    std::fs::copy(images::guest("heartbeat")?, export.join("images/heartbeat.elf")).unwrap();
    std::fs::write(
        export.join("rx7.cfg"),
        "# the seed's guest\nname = \"rx7\"\nmemory = 16\nvcpus = 2\nkernel = \"/var/xen/images/heartbeat.elf\"\n\
         extra = \"period_ms=100\"\nvif = [ 'mac=00:16:3e:00:00:07' ]\non_crash = \"preserve\"\n",
    )
    .unwrap();
    std::fs::write(export.join("bad.cfg"), "name = \"bad\"\nmemory = lots\n").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[(i % 27) as usize]).collect();
    std::fs::write(export.join("images/big.txt"), &big).unwrap();
    let _server = NfsServer::start(&rig, &export, &dir.path().join("state"))?;
    let mut q = hypervisor(&rig)?;
    rig.wait_ping(&rig.ip(2), Duration::from_secs(20))?;
    let spec = mount_share(&mut q, &rig, &export)?;
    let out = q.command("mount", CMD)?;
    assert!(out.contains(&format!("{spec} on /var/xen type nfs3")), "{out}");
    let out = q.command("ls /var/xen", Duration::from_secs(30))?;
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["bad.cfg", "images", "rx7.cfg"], "{out}");
    let out = q.command("ls -l /var/xen/images", Duration::from_secs(30))?;
    assert!(out.contains("300000 big.txt"), "{out}");
    let out = q.command("cat /var/xen/rx7.cfg", Duration::from_secs(30))?;
    assert!(out.starts_with("# the seed's guest\nname = \"rx7\"\n"), "{out}");
    // A domain from a config on the share, its kernel read over NFS.
    let out = q.command("create /var/xen/rx7.cfg", Duration::from_secs(60))?;
    assert!(out.contains("created domain 1 (rx7)"), "{out}");
    let out = q.command("list", CMD)?;
    let row = out.lines().find(|l| l.starts_with("rx7 ")).unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols[1], cols[2], cols[3]), ("1", "16", "2"), "{row}");
    let out = q.command("network-list rx7", CMD)?;
    assert!(out.contains("00:16:3e:00:00:07"), "{out}");
    q.on_console("rx7", "heartbeat rx7 seq=2 ", Duration::from_secs(30))?;
    let out = q.command("create /var/xen/bad.cfg", Duration::from_secs(30))?;
    assert!(out.starts_with("error: create bad.cfg:2: memory:"), "errors name file, line and key: {out}");
    let out = q.command("create /var/xen/nosuch.cfg", Duration::from_secs(30))?;
    assert!(out.contains("no such file or directory"), "{out}");
    // A file larger than one READ: the first 64 KiB, byte-exact.
    let out = q.command("cat /var/xen/images/big.txt", Duration::from_secs(60))?;
    let expect = String::from_utf8(big[..65536].to_vec()).unwrap();
    assert!(out.starts_with(&expect), "cat differs");
    assert!(out.contains("[cat: output stopped after 64 KiB]"));
    let out = q.command("cat /var/xen/nosuch", Duration::from_secs(30))?;
    assert!(out.starts_with("error: cat /var/xen/nosuch:") && out.contains("no such file or directory"), "{out}");
    // 64 MiB through the hypervisor's NFS client, compared by checksum.
    let r64: Vec<u8> = {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..64 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    std::fs::write(export.join("images/r64"), &r64).unwrap();
    let want = sha256_hex(&rig, &export.join("images/r64"))?;
    let out = q.command("sha256sum /var/xen/images/r64", Duration::from_secs(300))?;
    assert_eq!(out.lines().next(), Some(format!("{want}  /var/xen/images/r64").as_str()), "{out}");
    // The hypervisor writes; Linux's libnfs reads back the same bytes.
    let out = q.command("cp /var/xen/images/big.txt /var/xen/images/copy.txt", Duration::from_secs(120))?;
    assert!(out.starts_with("copied 300000 bytes"), "{out}");
    let url = format!("nfs://{}{}/images/copy.txt?nfsport=2049&mountport=20048", rig.bridge_ip(), export.display());
    let got = rig.run(&["nfs-cat", &url])?;
    assert!(got.status.success(), "nfs-cat: {}", String::from_utf8_lossy(&got.stderr));
    assert!(got.stdout == big, "nfs-cat read {} bytes that differ from what was written", got.stdout.len());
    let out = q.command("df", Duration::from_secs(30))?;
    assert!(out.lines().any(|l| l.ends_with(" /var/xen") && l.contains('%')), "{out}");
    let out = q.command("umount /var/xen", Duration::from_secs(30))?;
    assert!(!out.contains("error"), "{out}");
    let out = q.command("ls /var/xen", CMD)?;
    assert!(out.contains("not on a mounted file system"), "{out}");
    Ok(())
}

#[test]
fn read_only_exports_and_a_server_restart_mid_read() -> Result<(), Error> {
    let Some(rig) = Rig::up_or_skip(1, "read_only_exports_and_a_server_restart_mid_read") else { return Ok(()) };
    let (dir, export) = new_export("nfs-faults")?;
    std::fs::write(export.join("small.txt"), "keep me\n").unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<u8> = (0..48 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(export.join("big"), &data).unwrap();
    let want = sha256_hex(&rig, &export.join("big"))?;
    let state = dir.path().join("state");

    // Read-only: reads work, writes fail with a clear error.
    let server = NfsServer::start_with(&rig, &export, &state, &["--ro"])?;
    let mut q = hypervisor(&rig)?;
    rig.wait_ping(&rig.ip(2), Duration::from_secs(20))?;
    mount_share(&mut q, &rig, &export)?;
    let out = q.command("cat /var/xen/small.txt", Duration::from_secs(30))?;
    assert_eq!(out, "keep me\n");
    let out = q.command("cp /var/xen/small.txt /var/xen/copy.txt", Duration::from_secs(30))?;
    assert!(out.starts_with("error: cp ") && out.contains("read-only file system"), "{out}");
    q.command("umount /var/xen", Duration::from_secs(30))?;
    drop(server);

    // Read-write again; the server restarts in the middle of a large read:
    // the client reconnects, resends, and the checksum is still right.
    let server = NfsServer::start(&rig, &export, &state)?;
    mount_share(&mut q, &rig, &export)?;
    q.send_line("sha256sum /var/xen/big")?;
    // Mid-read: once the server has had 8 of the 48 MiB acknowledged. (A
    // fixed wait raced the read: at ~21 MiB/s it had finished.)
    wait_nfs_bytes_acked(&rig, 8 << 20, Duration::from_secs(60))?;
    drop(server);
    let _server = NfsServer::start(&rig, &export, &state)?;
    q.expect(
        format!("nfs: connection to {}:2049 lost; reconnecting", rig.bridge_ip()).as_str(),
        Duration::from_secs(60),
    )?;
    let line = q.expect(systest::Regex::new(r"[0-9a-f]{64}  /var/xen/big").unwrap(), Duration::from_secs(300))?;
    assert!(line.ends_with(&format!("{want}  /var/xen/big")), "checksum after a server restart differs: {line}");
    Ok(())
}

#[test]
fn exports_are_mounted_from_the_command_line() -> Result<(), Error> {
    let Some(rig) = Rig::up_or_skip(1, "exports_are_mounted_from_the_command_line") else { return Ok(()) };
    let (dir, export) = new_export("nfs-boot")?;
    std::fs::write(export.join("hello.txt"), "mounted at boot\n").unwrap();
    let _server = NfsServer::start(&rig, &export, &dir.path().join("state"))?;
    // One reachable export and one on a host that does not exist: the
    // second fails after its deadline, with a clear line, and boot goes on.
    let mut b = QemuBuilder::kernel(images::elf()?)
        .append(format!(
            "console=ttyS0 ip={}/24 nfs={}:{}@/var/xen nfs={}:/nowhere@/mnt",
            rig.ip(2),
            rig.bridge_ip(),
            export.display(),
            rig.ip(99)
        ))
        .prefix(rig.qemu_prefix());
    for a in rig.nic_args(0, "e1000") {
        b = b.arg(a);
    }
    let mut q = b.spawn()?;
    q.expect(format!("nfs: boot mount {}:/nowhere@/mnt failed:", rig.ip(99)).as_str(), Duration::from_secs(120))?;
    q.wait_ready(Duration::from_secs(60))?;
    let out = q.command("mount", CMD)?;
    assert!(out.contains(&format!("{}:{} on /var/xen type nfs3", rig.bridge_ip(), export.display())), "{out}");
    assert!(!out.contains("/mnt"), "{out}");
    let out = q.command("cat /var/xen/hello.txt", Duration::from_secs(30))?;
    assert_eq!(out, "mounted at boot\n");
    Ok(())
}

#[test]
fn a_vanished_server_is_reported_while_guests_keep_running() -> Result<(), Error> {
    let Some(rig) = Rig::up_or_skip(1, "a_vanished_server_is_reported_while_guests_keep_running") else {
        return Ok(());
    };
    let (dir, export) = new_export("nfs-gone")?;
    std::fs::write(export.join("a.txt"), "before\n").unwrap();
    let state = dir.path().join("state");
    let server = NfsServer::start(&rig, &export, &state)?;
    let mut b = QemuBuilder::kernel(images::elf()?)
        .append(format!("console=ttyS0 ip={}/24", rig.ip(2)))
        .initrd(images::guest("heartbeat")?)
        .prefix(rig.qemu_prefix());
    for a in rig.nic_args(0, "e1000") {
        b = b.arg(a);
    }
    let mut q = b.spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    q.command("create heartbeat extra=\"period_ms=100\"", CMD)?;
    mount_share(&mut q, &rig, &export)?;
    drop(server);
    // The call waits for the server, says so once, and Ctrl-C gives up.
    q.send_line("cat /var/xen/a.txt")?;
    q.expect(
        format!("nfs: server {}:2049 not responding, still trying", rig.bridge_ip()).as_str(),
        Duration::from_secs(60),
    )?;
    q.send(b"\x03")?;
    let out = q.expect(systest::PROMPT, CMD)?;
    assert!(out.contains("error: cat /var/xen/a.txt:") && out.contains("interrupted"), "{out}");
    // The server returns: the same mount works again.
    let _server = NfsServer::start(&rig, &export, &state)?;
    let out = q.command("cat /var/xen/a.txt", Duration::from_secs(60))?;
    assert!(out.ends_with("before\n"), "{out}");
    // The guest ran throughout: consecutive beats, no gap beyond its period.
    q.send_line("console heartbeat")?;
    let text = q.expect(systest::Regex::new(r"seq=40 t=").unwrap(), Duration::from_secs(60))?;
    q.send(b"\x1d")?;
    systest::contract::assert_heartbeat_steady(&text, 30, 200.0);
    Ok(())
}

#[test]
fn guest_disks_live_on_the_share() -> Result<(), Error> {
    let Some(rig) = Rig::up_or_skip(1, "guest_disks_live_on_the_share") else { return Ok(()) };
    let (dir, export) = new_export("nfs-disks")?;
    std::fs::create_dir_all(export.join("images")).unwrap();
    std::fs::copy(images::guest("blklog")?, export.join("images/blklog.elf")).unwrap();
    std::fs::write(export.join("log.img"), vec![0u8; 1 << 20]).unwrap();
    let cfg = |name: &str, extra: &str, disk: &str| {
        format!(
            "name = \"{name}\"\nmemory = 16\nkernel = \"/var/xen/images/blklog.elf\"\nextra = \"{extra}\"\n\
             disk = [ '{disk}' ]\n"
        )
    };
    std::fs::write(export.join("log-a.cfg"), cfg("logger", "append=3 msg=first", "file:/var/xen/log.img,xvda,w"))
        .unwrap();
    std::fs::write(export.join("log-b.cfg"), cfg("logger", "append=3 msg=second", "file:/var/xen/log.img,xvda,w"))
        .unwrap();
    std::fs::write(export.join("sum.cfg"), cfg("summer", "mode=sha256 stay=0", "file:/var/xen/images/data.img,xvda,r"))
        .unwrap();
    let _server = NfsServer::start(&rig, &export, &dir.path().join("state"))?;
    let mut q = hypervisor(&rig)?;
    rig.wait_ping(&rig.ip(2), Duration::from_secs(20))?;
    mount_share(&mut q, &rig, &export)?;

    // An append-only log on a disk image on the share.
    let out = q.command("create /var/xen/log-a.cfg", Duration::from_secs(60))?;
    assert!(out.contains("created domain 1 (logger)"), "{out}");
    let got = q.on_console("logger", "blklog: appended 3, flushed, now 3 entries", Duration::from_secs(60))?;
    assert!(got.contains("blklog: empty disk, formatting"), "{got}");
    let out = q.command("block-list logger", CMD)?;
    let row = out.lines().find(|l| l.starts_with("0 ")).unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols[1], cols[2], cols[3]), ("xvda", "w", "1"), "{out}");
    assert!(cols[4].parse::<u64>().unwrap() >= 1 && cols[6].parse::<u64>().unwrap() >= 1, "reads, flushes: {out}");
    assert!(row.ends_with(&format!("nfs://{}/var/xen/log.img", rig.bridge_ip())), "{out}");
    // What was written and flushed survives destroy and re-create.
    let out = q.command("destroy logger", CMD)?;
    assert!(!out.contains("error"), "{out}");
    let out = q.command("create /var/xen/log-b.cfg", Duration::from_secs(60))?;
    assert!(out.contains("created domain 2 (logger)"), "{out}");
    let got = q.on_console("logger", "blklog: appended 3, flushed, now 6 entries", Duration::from_secs(60))?;
    assert!(got.contains("blklog: found 3 entries"), "{got}");
    for s in 1..=3 {
        assert!(got.contains(&format!("blklog: entry seq={s} dom=logger t=")), "entry {s}: {got}");
    }
    assert!(got.contains("first\r\n") || got.contains("first\n"), "{got}");
    q.command("destroy logger", CMD)?;
    // The server's file holds all six entries (flushed = committed).
    let img = std::fs::read(export.join("log.img")).unwrap();
    let text = String::from_utf8_lossy(&img[512..4096]);
    assert!(
        text.contains("seq=3 dom=logger") && text.contains("seq=6 dom=logger") && text.contains("second"),
        "{text}"
    );
    assert_eq!(&img[0..8], b"RHVBLKLG");

    // Files written by Linux's libnfs read back identically through `cat`
    // and through a guest's (read-only) disk.
    let mut x = 0x0123_4567_89AB_CDEFu64;
    let data: Vec<u8> = (0..2 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let local = dir.path().join("data.img");
    std::fs::write(&local, &data).unwrap();
    let text: String = (0..400).map(|i| format!("line {i} written by nfs-cp\n")).collect();
    let local_txt = dir.path().join("notes.txt");
    std::fs::write(&local_txt, &text).unwrap();
    let url = |p: &str| format!("nfs://{}{}/{p}?nfsport=2049&mountport=20048", rig.bridge_ip(), export.display());
    for (src, dst) in [(&local, "images/data.img"), (&local_txt, "notes.txt")] {
        let out = rig.run(&["nfs-cp".as_ref(), src.as_os_str(), url(dst).as_ref()])?;
        assert!(out.status.success(), "nfs-cp: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = q.command("cat /var/xen/notes.txt", Duration::from_secs(30))?;
    assert_eq!(out.replace("\r\n", "\n"), text);
    let want = sha256_hex(&rig, &local)?;
    let out = q.command("create /var/xen/sum.cfg", Duration::from_secs(60))?;
    assert!(out.contains("(summer)"), "{out}");
    let line = q.on_console("summer", "bytes=2097152", Duration::from_secs(120))?;
    assert!(line.contains(&format!("blklog: sha256 {want} bytes=2097152")), "guest disk differs: {line}");
    Ok(())
}

#[test]
fn on_crash_and_on_poweroff_are_applied() -> Result<(), Error> {
    let Some(rig) = Rig::up_or_skip(1, "on_crash_and_on_poweroff_are_applied") else { return Ok(()) };
    let (dir, export) = new_export("nfs-actions")?;
    std::fs::create_dir_all(export.join("images")).unwrap();
    std::fs::copy(images::guest("hostile")?, export.join("images/hostile.elf")).unwrap();
    std::fs::copy(images::guest("heartbeat")?, export.join("images/heartbeat.elf")).unwrap();
    let cfg = |name: &str, kernel: &str, extra: &str, actions: &str| {
        format!(
            "name = \"{name}\"\nmemory = 16\nkernel = \"/var/xen/images/{kernel}\"\nextra = \"{extra}\"\n{actions}\n"
        )
    };
    std::fs::write(export.join("gone.cfg"), cfg("gone", "hostile.elf", "fault=hlt", "on_crash = \"destroy\"")).unwrap();
    std::fs::write(export.join("kept.cfg"), cfg("kept", "hostile.elf", "fault=hlt", "on_crash = \"preserve\""))
        .unwrap();
    std::fs::write(
        export.join("again.cfg"),
        cfg("again", "heartbeat.elf", "period_ms=100", "on_poweroff = \"restart\"\non_crash = \"destroy\""),
    )
    .unwrap();
    let _server = NfsServer::start(&rig, &export, &dir.path().join("state"))?;
    let mut q = hypervisor(&rig)?;
    rig.wait_ping(&rig.ip(2), Duration::from_secs(20))?;
    mount_share(&mut q, &rig, &export)?;
    let out = q.command("create /var/xen/gone.cfg", Duration::from_secs(60))?;
    assert!(out.contains("created domain 1 (gone)"), "{out}");
    q.expect("domain 1: on_crash=destroy: destroyed", Duration::from_secs(30))?;
    let out = q.command("create /var/xen/kept.cfg", Duration::from_secs(60))?;
    assert!(out.contains("created domain 2 (kept)"), "{out}");
    q.expect("domain 2 (kept): crashed:", Duration::from_secs(30))?;
    let out = q.command("list", CMD)?;
    assert!(!out.contains("gone "), "on_crash=destroy: {out}");
    let kept = out.lines().find(|l| l.starts_with("kept ")).unwrap_or_else(|| panic!("{out}"));
    assert!(kept.contains("c"), "on_crash=preserve keeps it crashed: {kept}");
    // on_poweroff=restart: a clean exit brings the domain back with a new ID.
    let out = q.command("create /var/xen/again.cfg", Duration::from_secs(60))?;
    assert!(out.contains("created domain 3 (again)"), "{out}");
    q.command("shutdown again", CMD)?;
    q.expect("domain 4 (again): restarted", Duration::from_secs(60))?;
    let out = q.command("list", CMD)?;
    let row = out.lines().find(|l| l.starts_with("again ")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(row.split_whitespace().nth(1), Some("4"), "{out}");
    Ok(())
}
