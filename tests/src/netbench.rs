//! Helpers for the bench's network rows: hypervisors on a [`Rig`], a Linux
//! peer in a namespace of its own on the rig's bridge ([`Peer`]), shell
//! pipelines with a time limit ([`ns_sh`]) and parsers for the figures of
//! Linux's `ping` and rhv's `ping` / `netbench`.
//!
//! A [`Peer`] is namespace `rhv-bench-<pid>-<n>` with one end of a veth
//! pair; the other end is made inside the rig's namespace and attached to
//! its `br0`, so nothing is configured outside the two namespaces. Dropping
//! the [`Peer`] kills what runs inside it and deletes the namespace, which
//! destroys the veth pair. (A namespace left by a killed process carries
//! the rigs' `rhv-` prefix without an owner record, so `scripts/rig gc`
//! removes it once it is an hour old.)
use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::rig::Rig;
use crate::{images, timeouts, Error, Qemu, QemuBuilder, Regex};

/// Boots rhv (`-kernel`, TCG, 256M) inside `rig` on tap `i` with a NIC of
/// `model`, address `ip`/24 (gateway: the bridge), hostname `name` and the
/// named example guests as boot modules; waits for the prompt.
pub fn hypervisor(rig: &Rig, i: usize, model: &str, ip: &str, name: &str, guests: &[&str]) -> Result<Qemu, Error> {
    let mut b = QemuBuilder::kernel(images::elf()?)
        .append(format!("console=ttyS0 loglevel=info ip={ip}/24 gw={} hostname={name}", rig.bridge_ip()))
        .accel(crate::Accel::Tcg)
        .memory("256M")
        .name(name)
        .prefix(rig.qemu_prefix());
    for g in guests {
        b = b.initrd(images::guest(g)?);
    }
    for a in rig.nic_args(i, model) {
        b = b.arg(a);
    }
    let mut q = b.spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    Ok(q)
}

/// Runs `sh -c script` inside namespace `ns` under `timeout` (killed when
/// it runs longer); its stdout, or an error with its stderr when it fails.
pub fn ns_sh(ns: &str, script: &str, limit: Duration) -> Result<String, Error> {
    let secs = crate::scaled(limit).as_secs().max(1).to_string();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "-k", "5", &secs, "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Setup(format!("cannot run sh in {ns}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let why =
            if out.status.code() == Some(124) { format!("timed out after {secs} s") } else { out.status.to_string() };
        Err(Error::Setup(format!(
            "`{script}` in {ns} failed ({why}): {} {}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs `ip args...`; an error with its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Setup(format!("cannot run ip: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// A Linux host on a rig's bridge: a namespace of its own joined to `br0`
/// by a veth pair. Dropping it removes everything it made.
#[derive(Debug)]
pub struct Peer {
    ns: String,
    ip: String,
    /// The veth end inside the peer.
    dev: String,
}

impl Peer {
    /// Makes the peer with address `rig.ip(host)`/24 and waits until the
    /// rig's namespace reaches it by ping.
    pub fn up(rig: &Rig, host: u8) -> Result<Peer, Error> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let (pid, n) = (std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let ns = format!("{}bench-{pid}-{n}", crate::rig::NS_PREFIX);
        let (outer, inner) = (format!("rb-{pid}-{n}"), format!("rbp-{pid}-{n}"));
        if inner.len() > 15 {
            return Err(Error::Setup(format!("interface name {inner} too long")));
        }
        ip(&["netns", "add", &ns])?;
        // From here on, dropping `peer` deletes the namespace.
        let peer = Peer { ns, ip: rig.ip(host), dev: inner.clone() };
        let (rns, pns) = (rig.ns(), peer.ns.as_str());
        ip(&["-n", rns, "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", pns])?;
        ip(&["-n", rns, "link", "set", &outer, "master", "br0", "up"])?;
        ip(&["-n", pns, "link", "set", "lo", "up"])?;
        ip(&["-n", pns, "addr", "add", &format!("{}/24", peer.ip), "dev", &inner])?;
        ip(&["-n", pns, "link", "set", &inner, "up"])?;
        rig.wait_ping(&peer.ip, Duration::from_secs(10))?;
        Ok(peer)
    }

    /// The namespace, `rhv-bench-<pid>-<n>`.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The peer's address on the rig's subnet.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// `ip netns exec <ns> <argv...>`.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(argv);
        c
    }

    /// Starts `sh -c script` inside the peer in the background (stdout
    /// piped, stdin and stderr closed).
    pub fn spawn_sh(&self, script: &str) -> Result<Bg, Error> {
        let child = self
            .exec(&["sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Setup(format!("cannot start `{script}` in {}: {e}", self.ns)))?;
        Ok(Bg { child: Some(child) })
    }

    /// Waits up to `limit` until something in the peer listens on TCP `port`.
    pub fn wait_listening(&self, port: u16, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + crate::scaled(limit);
        let filter = format!(":{port}");
        loop {
            let out = self
                .exec(&["ss", "-Hltn", "sport", "=", &filter])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map_err(|e| Error::Setup(format!("cannot run ss in {}: {e}", self.ns)))?;
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Setup(format!("nothing listens on TCP port {port} in {} after {limit:?}", self.ns)));
            }
            std::thread::sleep(Duration::from_millis(20)); // polling a socket table, nothing to wait on
        }
    }

    /// Kills every process inside the namespace (all started by us),
    /// listing again until none is left (a process may be entering).
    fn kill_inside(&self) {
        for _ in 0..50 {
            let Ok(out) = Command::new("ip").args(["netns", "pids", &self.ns]).stdin(Stdio::null()).output() else {
                return;
            };
            let text = String::from_utf8_lossy(&out.stdout);
            let pids: Vec<&str> = text.split_whitespace().filter(|p| p.chars().all(|c| c.is_ascii_digit())).collect();
            if pids.is_empty() {
                return;
            }
            let _ = Command::new("kill").arg("-KILL").args(&pids).stderr(Stdio::null()).status();
            std::thread::sleep(Duration::from_millis(10)); // letting the kernel reap, nothing to wait on
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill_inside();
        // Deleting the pair now, not with the namespace: the kernel
        // dismantles a deleted namespace later, in the background.
        let _ = ip(&["-n", &self.ns, "link", "del", &self.dev]);
        if let Err(e) = ip(&["netns", "del", &self.ns]) {
            eprintln!("warning: removing {}: {e}", self.ns);
        }
    }
}

/// A background process in a [`Peer`]; dropping it kills it.
#[derive(Debug)]
pub struct Bg {
    child: Option<Child>,
}

impl Bg {
    /// Waits up to `limit` for the process to exit and returns its stdout.
    pub fn finish(mut self, limit: Duration) -> Result<String, Error> {
        let deadline = Instant::now() + crate::scaled(limit);
        let mut child = self.child.take().ok_or_else(|| Error::Setup("no process".into()))?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let mut out = String::new();
                    if let Some(mut s) = child.stdout.take() {
                        let _ = s.read_to_string(&mut out);
                    }
                    return if status.success() {
                        Ok(out)
                    } else {
                        Err(Error::Setup(format!("background process failed ({status}): {}", out.trim())))
                    };
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Setup(format!("background process still running after {limit:?}")));
                }
                Err(e) => return Err(Error::Setup(format!("waiting for background process: {e}"))),
            }
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Linux `ping -q` output: (transmitted, received, avg RTT in ms).
pub fn linux_ping(text: &str) -> Option<(u32, u32, f64)> {
    let counts = Regex::new(r"(\d+) packets transmitted, (\d+) received").ok()?.captures(text)?;
    let rtt = Regex::new(r"rtt min/avg/max/mdev = [0-9.]+/([0-9.]+)/").ok()?.captures(text)?;
    Some((counts[1].parse().ok()?, counts[2].parse().ok()?, rtt[1].parse().ok()?))
}

/// rhv `ping` output: (transmitted, received, avg RTT in ms).
pub fn rhv_ping(text: &str) -> Option<(u32, u32, f64)> {
    let counts = Regex::new(r"(\d+) packets transmitted, (\d+) received").ok()?.captures(text)?;
    let rtt = Regex::new(r"rtt min/avg/max = [0-9.]+/([0-9.]+)/").ok()?.captures(text)?;
    Some((counts[1].parse().ok()?, counts[2].parse().ok()?, rtt[1].parse().ok()?))
}

/// rhv `netbench send` output: (bytes, ms, MiB/s).
pub fn rhv_send(text: &str) -> Option<(u64, u64, f64)> {
    let c = Regex::new(r"sent (\d+) bytes in (\d+) ms: ([0-9.]+) MiB/s").ok()?.captures(text)?;
    Some((c[1].parse().ok()?, c[2].parse().ok()?, c[3].parse().ok()?))
}

/// rhv `netbench sink-bytes` output.
pub fn rhv_sink_bytes(text: &str) -> Option<u64> {
    Regex::new(r"sink: (\d+) bytes").ok()?.captures(text)?[1].parse().ok()
}

/// `ns=<nanoseconds>` as printed by the timing scripts ([`timed`]).
pub fn elapsed_ns(text: &str) -> Option<u64> {
    Regex::new(r"(?m)^ns=(\d+)$").ok()?.captures(text)?[1].parse().ok()
}

/// Wraps `cmd` in a shell script that prints `ns=<wall time>` after it
/// and ends with `cmd`'s success (so `&& more` can follow).
pub fn timed(cmd: &str) -> String {
    format!("s=$(date +%s%N); {cmd}; rc=$?; e=$(date +%s%N); echo \"ns=$((e - s))\"; test $rc -eq 0")
}

/// MiB/s of `bytes` moved in `ns` nanoseconds.
pub fn mib_per_s(bytes: u64, ns: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64 / (ns.max(1) as f64 / 1e9)
}

/// A TCP echo server for a [`Peer`] (`python3 -c`), one thread per
/// connection; it half-closes its side when the client has.
pub fn python_echo_script(port: u16) -> String {
    let python = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let code = format!(
        "import socket, threading\n\
         def serve(c):\n\
         \x20   while True:\n\
         \x20       b = c.recv(262144)\n\
         \x20       if not b:\n\
         \x20           break\n\
         \x20       c.sendall(b)\n\
         \x20   c.close()\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind((\"0.0.0.0\", {port}))\n\
         s.listen(8)\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   threading.Thread(target=serve, args=(c,), daemon=True).start()\n"
    );
    format!("exec {python} -c '{code}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_linux_ping() {
        let t = "--- 10.77.0.2 ping statistics ---\n20 packets transmitted, 19 received, 5% packet loss, time 998ms\n\
                 rtt min/avg/max/mdev = 0.412/0.873/2.001/0.300 ms\n";
        assert_eq!(linux_ping(t), Some((20, 19, 0.873)));
        assert_eq!(linux_ping("20 packets transmitted, 0 received, 100% packet loss"), None);
    }

    #[test]
    fn parses_rhv_output() {
        let t = "--- 10.77.0.3 ping statistics ---\n20 packets transmitted, 20 received, 0% packet loss\n\
                 rtt min/avg/max = 1.020/1.532/3.100 ms\n";
        assert_eq!(rhv_ping(t), Some((20, 20, 1.532)));
        assert_eq!(rhv_send("sent 67108864 bytes in 5123 ms: 12.49 MiB/s\n"), Some((67108864, 5123, 12.49)));
        assert_eq!(rhv_sink_bytes("sink: 64000000 bytes\n"), Some(64_000_000));
        assert_eq!(elapsed_ns("noise\nns=123456789\n"), Some(123_456_789));
    }

    /// Where rigs can be made: a peer answers ping and takes TCP from the
    /// rig, and dropping it kills what ran inside and removes the namespace.
    #[test]
    fn peer_up_talk_down() {
        let Some(rig) = Rig::up_or_skip(0, "peer_up_talk_down") else { return };
        let peer = Peer::up(&rig, 200).unwrap();
        let ns = peer.ns().to_string();
        assert!(crate::rig::ns_exists(&ns));
        let (sent, got, _) =
            linux_ping(&ns_sh(rig.ns(), "ping -n -q -c 3 -i 0.05 10.77.0.200", Duration::from_secs(10)).unwrap())
                .unwrap();
        assert_eq!((sent, got), (3, 3));
        let sink = peer.spawn_sh("nc -l -p 5001 < /dev/null | wc -c").unwrap();
        peer.wait_listening(5001, Duration::from_secs(10)).unwrap();
        let out =
            ns_sh(rig.ns(), &timed("head -c 100000 /dev/zero | nc -N -w 10 10.77.0.200 5001"), Duration::from_secs(20))
                .unwrap();
        assert!(elapsed_ns(&out).is_some(), "{out}");
        assert_eq!(sink.finish(Duration::from_secs(10)).unwrap().trim(), "100000");
        let mut sleeper = peer.exec(&["sleep", "60"]).spawn().unwrap();
        crate::rig::wait_pid_inside(&ns, sleeper.id(), Duration::from_secs(10)).unwrap();
        drop(peer);
        assert!(!crate::rig::ns_exists(&ns), "{ns} still exists");
        assert!(!sleeper.wait().unwrap().success(), "the process inside was killed");
        let links = ns_sh(rig.ns(), "ip -br link", Duration::from_secs(5)).unwrap();
        assert!(!links.contains("rb-"), "the veth pair is gone: {links}");
    }

    #[test]
    fn rates() {
        assert!((mib_per_s(1 << 20, 1_000_000_000) - 1.0).abs() < 1e-9);
        assert!((mib_per_s(64 << 20, 500_000_000) - 128.0).abs() < 1e-9);
        assert!(timed("true").contains("ns=$((e - s))"));
        let py = python_echo_script(7);
        assert!(py.contains("s.bind((\"0.0.0.0\", 7))") && py.matches('\'').count() == 2, "{py}");
    }
}
