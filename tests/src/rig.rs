//! Network test rigs: Linux peers for rhv's network tests.
//!
//! [`Rig::up`] runs `scripts/rig up`: a network namespace `rhv-<name>` of
//! its own holding bridge `br0` (10.77.X.1/24) and tap devices
//! `tap0..tapN-1`. QEMU runs inside the namespace ([`Rig::qemu_prefix`],
//! [`Rig::nic_args`]) to open the taps; Linux tools run there with
//! [`Rig::exec`] (`ping`, `nc`). Dropping the [`Rig`] runs `scripts/rig
//! down`, which kills what still runs inside and deletes the namespace with
//! every device in it. If the test process dies without unwinding (SIGKILL,
//! Ctrl-C), the script's watcher removes the rig within seconds, and the
//! first [`Rig::up`] of every test process runs `scripts/rig gc` for what
//! even that missed. Nothing outside the namespace is ever configured.
//!
//! Rigs need root, iproute2, iputils-ping and netcat-openbsd. Without them
//! [`Rig::up`] fails with [`Error::Setup`]; [`Rig::up_or_skip`] turns that
//! into a visible `SKIPPED: ...` line on stderr (a failure when
//! `RHV_RIG_REQUIRED=1`).
//!
//! Tests that need no Linux peer can connect two QEMUs without root:
//! [`VmLink::dgram`] and [`VmLink::stream`].
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::{repo_root, scaled, Error, TempDir};

/// Prefix of every rig's namespace.
pub const NS_PREFIX: &str = "rhv-";

/// Commands the rigs and the network tests use, with their Debian package.
pub const TOOLS: &[(&str, &str)] =
    &[("ip", "iproute2"), ("bridge", "iproute2"), ("ping", "iputils-ping"), ("nc", "netcat-openbsd")];

/// `scripts/rig`.
pub fn script() -> PathBuf {
    repo_root().join("scripts/rig")
}

/// A live rig; dropping it tears it down.
#[derive(Debug)]
pub struct Rig {
    name: String,
    ns: String,
    bridge_ip: String,
    subnet: String,
    taps: Vec<String>,
    macs: Vec<String>,
    torn_down: bool,
}

impl Rig {
    /// A rig with `hosts` taps on subnet 10.77.0.0/24, named after this
    /// process and a counter (unique among concurrently running tests).
    pub fn up(hosts: usize) -> Result<Rig, Error> {
        Rig::up_on(hosts, 0)
    }

    /// Like [`Rig::up`] on subnet 10.77.`third`.0/24 (the bridge is
    /// 10.77.`third`.1).
    pub fn up_on(hosts: usize, third: u8) -> Result<Rig, Error> {
        preflight()?;
        static GC: Once = Once::new();
        GC.call_once(|| {
            // Stale rigs of killed runs; rigs of live processes are kept.
            if let Err(e) = run_script(&["gc"]) {
                eprintln!("warning: scripts/rig gc: {e}");
            }
        });
        let name = fresh_name();
        let hosts_s = hosts.to_string();
        let subnet = format!("10.77.{third}");
        let out = run_script(&["up", "--name", &name, "--hosts", &hosts_s, "--subnet", &subnet])?;
        let mut rig = Rig {
            ns: format!("{NS_PREFIX}{name}"),
            name,
            bridge_ip: String::new(),
            subnet: String::new(),
            taps: Vec::new(),
            macs: Vec::new(),
            torn_down: false,
        };
        // From here on, dropping `rig` removes it again.
        let vars = parse_vars(&out);
        let get = |k: &str| vars.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        match (get("RIG_NS"), get("RIG_BRIDGE_IP"), get("RIG_SUBNET"), get("RIG_TAPS"), get("RIG_MACS")) {
            (Some(ns), Some(ip), Some(subnet), Some(taps), Some(macs)) if ns == rig.ns => {
                rig.bridge_ip = ip;
                rig.subnet = subnet;
                rig.taps = taps.split_whitespace().map(String::from).collect();
                rig.macs = macs.split_whitespace().map(String::from).collect();
            }
            _ => return Err(Error::Setup(format!("scripts/rig up printed something unexpected:\n{out}"))),
        }
        if rig.taps.len() != hosts || rig.macs.len() != hosts {
            return Err(Error::Setup(format!("scripts/rig up made {} taps, not {hosts}:\n{out}", rig.taps.len())));
        }
        Ok(rig)
    }

    /// [`Rig::up`], or `None` after printing `SKIPPED: <test>: <why>` to
    /// stderr (shown even while the test harness captures output) when rigs cannot be made here (not root, tools or namespaces
    /// missing). With `RHV_RIG_REQUIRED=1` that panics instead, so CI
    /// cannot pass by skipping.
    pub fn up_or_skip(hosts: usize, test: &str) -> Option<Rig> {
        match Rig::up(hosts) {
            Ok(rig) => Some(rig),
            Err(e) => {
                skip(test, &e);
                None
            }
        }
    }

    /// The rig's name (`scripts/rig exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace, `rhv-<name>`.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The bridge's address, 10.77.X.1 (a Linux peer for the guests).
    pub fn bridge_ip(&self) -> &str {
        &self.bridge_ip
    }

    /// `10.77.X`: the first three octets of the rig's /24.
    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    /// `10.77.X.host`, an address on the rig's subnet.
    pub fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.subnet)
    }

    /// The tap devices, `tap0..tapN-1`.
    pub fn taps(&self) -> &[String] {
        &self.taps
    }

    /// A MAC address for the QEMU NIC on tap `i` (`52:54:00:77:X:i+1`).
    pub fn mac(&self, i: usize) -> &str {
        &self.macs[i]
    }

    /// `ip netns exec <ns> <argv...>`: a command that runs inside the rig.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(argv);
        c
    }

    /// Runs `argv` inside the rig and waits for it (stdin closed).
    pub fn run<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output, Error> {
        let shown: Vec<String> = argv.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        self.exec(argv)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Setup(format!("cannot run {shown:?} in {}: {e}", self.ns)))
    }

    /// What goes before the QEMU program so that it runs inside the rig:
    /// `ip netns exec <ns>` (which execs QEMU under the same PID, so the
    /// harness kills QEMU itself).
    pub fn qemu_prefix(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns.clone()]
    }

    /// QEMU arguments for a NIC of `model` (`e1000`, `virtio-net-pci`) on
    /// tap `i`, with [`Rig::mac`]`(i)`.
    pub fn nic_args(&self, i: usize, model: &str) -> Vec<String> {
        vec![
            "-netdev".into(),
            format!("tap,id=n{i},ifname={},script=no,downscript=no", self.taps[i]),
            "-device".into(),
            format!("{model},netdev=n{i},mac={}", self.macs[i]),
        ]
    }

    /// Pings `ip` from inside the rig once a second until it answers or
    /// `timeout` (scaled) passes.
    pub fn wait_ping(&self, ip: &str, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let out = self.run(&["ping", "-n", "-c", "1", "-W", "1", ip])?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let last = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
                return Err(Error::Setup(format!("{ip} did not answer ping from {} in {timeout:?}:\n{last}", self.ns)));
            }
        }
    }

    /// Tears the rig down now, reporting failure (dropping does the same
    /// silently).
    pub fn down(mut self) -> Result<(), Error> {
        self.torn_down = true;
        run_script(&["down", &self.name]).map(drop)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if !self.torn_down {
            if let Err(e) = run_script(&["down", &self.name]) {
                eprintln!("warning: tearing down rig {}: {e}", self.name);
            }
        }
    }
}

/// A rig name unique among concurrently running tests: `t<pid>-<n>`.
fn fresh_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("t{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Prints `SKIPPED: <test>: <why>` to stderr, or panics with
/// `RHV_RIG_REQUIRED=1` (CI cannot pass by skipping).
fn skip(test: &str, why: &Error) {
    if std::env::var("RHV_RIG_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{test}: network rig required (RHV_RIG_REQUIRED=1) but unavailable: {why}");
    }
    // Straight to the stderr stream, not `eprintln!`: the test harness
    // captures that, and a skip must show.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}

/// Whether the namespace `ns` exists.
pub fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Waits up to `limit` until process `pid` runs inside namespace `ns`
/// (`ip netns exec` enters it only after `spawn` has returned; a teardown
/// racing that entry would miss the process).
pub fn wait_pid_inside(ns: &str, pid: u32, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + crate::scaled(limit);
    let want = pid.to_string();
    loop {
        let out = Command::new("ip")
            .args(["netns", "pids", ns])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| Error::Setup(format!("cannot run ip netns pids {ns}: {e}")))?;
        if String::from_utf8_lossy(&out.stdout).split_whitespace().any(|p| p == want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Setup(format!("process {pid} did not enter {ns} within {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(10)); // polling the process table, nothing to wait on
    }
}

/// Root and the tools, checked before the script runs (for a clear
/// message).
fn preflight() -> Result<(), Error> {
    if !is_root() {
        return Err(Error::Setup("network rigs need root (network namespaces, bridges, taps)".into()));
    }
    let missing: Vec<&str> = TOOLS.iter().filter(|(cmd, _)| !on_path(cmd)).map(|(_, pkg)| *pkg).collect();
    if !missing.is_empty() {
        let mut pkgs = missing.clone();
        pkgs.dedup();
        return Err(Error::Setup(format!(
            "network rigs need {} (apt-get install {})",
            TOOLS.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", "),
            pkgs.join(" ")
        )));
    }
    Ok(())
}

/// The effective user id is 0 (from /proc: the crate has no libc).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(String::from))
        })
        .is_some_and(|euid| euid == "0")
}

/// Whether `cmd` is an executable on PATH (or in /usr/sbin and /sbin,
/// where iproute2 lives and which non-login shells may lack).
fn on_path(cmd: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| std::fs::metadata(d.join(cmd)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Runs `scripts/rig args...`; its stdout, or its stderr as the error.
fn run_script(args: &[&str]) -> Result<String, Error> {
    let out = Command::new(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Setup(format!("cannot run scripts/rig: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Setup(format!(
            "scripts/rig {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `KEY=value` and `KEY="value"` lines of `scripts/rig up`.
fn parse_vars(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(|(k, v)| {
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Two QEMUs wired back to back without root, through sockets in a
/// temporary directory (removed on drop): give [`VmLink::a`] to one
/// machine and [`VmLink::b`] to the other. Both are a NIC of the chosen
/// model with MAC `52:54:00:77:ff:01` (a) or `:02` (b).
///
/// QEMU 7.2 has both backends used here (`stream` and `dgram` are new in
/// 7.2; `-netdev socket` is the older way over TCP/UDP ports).
#[derive(Debug)]
pub struct VmLink {
    dir: TempDir,
    a: Vec<String>,
    b: Vec<String>,
    listener: Option<PathBuf>,
}

/// The MACs of a [`VmLink`]'s two NICs.
pub const LINK_MACS: [&str; 2] = ["52:54:00:77:ff:01", "52:54:00:77:ff:02"];

impl VmLink {
    /// `-netdev dgram` over two unix datagram sockets: each side sends to
    /// the other's path. Either machine may start first (frames sent before
    /// the other side exists are lost, as on a cable).
    pub fn dgram(model: &str) -> Result<VmLink, Error> {
        let dir = TempDir::new("link")?;
        let (pa, pb) = (path_arg(&dir.path().join("a.sock"))?, path_arg(&dir.path().join("b.sock"))?);
        let netdev = |local: &str, remote: &str| {
            format!("dgram,id=l0,local.type=unix,local.path={local},remote.type=unix,remote.path={remote}")
        };
        Ok(VmLink {
            a: link_args(netdev(&pa, &pb), model, LINK_MACS[0]),
            b: link_args(netdev(&pb, &pa), model, LINK_MACS[1]),
            dir,
            listener: None,
        })
    }

    /// `-netdev stream` over a unix stream socket: `a` listens, `b`
    /// connects. Start `a` first and call [`VmLink::wait_listening`]
    /// before starting `b` (QEMU 7.2 connects once, at start-up, and does
    /// not retry).
    pub fn stream(model: &str) -> Result<VmLink, Error> {
        let dir = TempDir::new("link")?;
        let sock = dir.path().join("s.sock");
        let p = path_arg(&sock)?;
        Ok(VmLink {
            a: link_args(format!("stream,id=l0,server=on,addr.type=unix,addr.path={p}"), model, LINK_MACS[0]),
            b: link_args(format!("stream,id=l0,server=off,addr.type=unix,addr.path={p}"), model, LINK_MACS[1]),
            dir,
            listener: Some(sock),
        })
    }

    /// QEMU arguments for the first machine (the listener of a stream link).
    pub fn a(&self) -> &[String] {
        &self.a
    }

    /// QEMU arguments for the second machine.
    pub fn b(&self) -> &[String] {
        &self.b
    }

    /// The directory holding the sockets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// For a stream link: waits up to `timeout` (scaled) for machine `a`'s
    /// socket to exist. A dgram link needs no waiting.
    pub fn wait_listening(&self, timeout: Duration) -> Result<(), Error> {
        let Some(sock) = &self.listener else { return Ok(()) };
        let deadline = Instant::now() + scaled(timeout);
        while !sock.exists() {
            if Instant::now() >= deadline {
                return Err(Error::Setup(format!("QEMU did not create {} in {timeout:?}", sock.display())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// A socket path as a QEMU option value (no commas: they separate options).
fn path_arg(p: &Path) -> Result<String, Error> {
    let s = p.to_string_lossy().into_owned();
    if s.contains(',') {
        return Err(Error::Setup(format!("socket path may not contain ',': {s}")));
    }
    Ok(s)
}

fn link_args(netdev: String, model: &str, mac: &str) -> Vec<String> {
    vec!["-netdev".into(), netdev, "-device".into(), format!("{model},netdev=l0,mac={mac}")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_scripts_output() {
        let out = "RIG_NAME=t1-0\nRIG_NS=rhv-t1-0\nRIG_TAPS=\"tap0 tap1\"\nRIG_MACS=\"\"\nnoise\n";
        let v = parse_vars(out);
        assert_eq!(v[0], ("RIG_NAME".into(), "t1-0".into()));
        assert_eq!(v[2], ("RIG_TAPS".into(), "tap0 tap1".into()));
        assert_eq!(v[3], ("RIG_MACS".into(), "".into()));
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn link_args_are_well_formed() {
        let l = VmLink::dgram("e1000").unwrap();
        let a = l.a().join(" ");
        assert!(a.starts_with("-netdev dgram,id=l0,local.type=unix,local.path="), "{a}");
        assert!(a.ends_with("-device e1000,netdev=l0,mac=52:54:00:77:ff:01"), "{a}");
        assert!(l.b().join(" ").contains("b.sock,remote.type=unix"));
        assert!(l.wait_listening(Duration::ZERO).is_ok());
        let s = VmLink::stream("virtio-net-pci").unwrap();
        assert!(s.a()[1].contains("server=on") && s.b()[1].contains("server=off"));
        assert!(s.wait_listening(Duration::from_millis(10)).is_err(), "nobody listens");
        let dir = s.dir().to_path_buf();
        drop(s);
        assert!(!dir.exists(), "the socket directory goes with the link");
    }

    /// The real thing, where it can run: up, ping the bridge from inside,
    /// a tap per host on the bridge, down, nothing left.
    #[test]
    fn rig_up_ping_down() {
        let Some(rig) = Rig::up_or_skip(2, "rig_up_ping_down") else { return };
        let ns = rig.ns().to_string();
        assert!(ns_exists(&ns));
        assert_eq!(rig.bridge_ip(), "10.77.0.1");
        assert_eq!(rig.taps(), ["tap0", "tap1"]);
        assert_eq!(rig.mac(1), "52:54:00:77:00:02");
        assert_eq!(rig.ip(10), "10.77.0.10");
        rig.wait_ping(rig.bridge_ip(), Duration::from_secs(5)).unwrap();
        let links = rig.run(&["bridge", "link"]).unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(links.contains("tap0") && links.contains("tap1") && links.contains("master br0"), "{links}");
        assert_eq!(rig.qemu_prefix(), ["ip", "netns", "exec", ns.as_str()]);
        assert_eq!(
            rig.nic_args(1, "e1000").join(" "),
            "-netdev tap,id=n1,ifname=tap1,script=no,downscript=no -device e1000,netdev=n1,mac=52:54:00:77:00:02"
        );
        // A process left running inside is killed by the teardown.
        let mut sleeper = rig.exec(&["sleep", "60"]).spawn().unwrap();
        wait_pid_inside(&ns, sleeper.id(), Duration::from_secs(10)).unwrap();
        rig.down().unwrap();
        assert!(!ns_exists(&ns), "{ns} still exists");
        let status = sleeper.wait().unwrap();
        assert!(!status.success(), "the process inside was killed");
    }

    /// Whether rigs can be made here; otherwise skips `test` (see
    /// [`Rig::up_or_skip`]).
    fn rigs_or_skip(test: &str) -> bool {
        match preflight() {
            Ok(()) => true,
            Err(e) => {
                skip(test, &e);
                false
            }
        }
    }

    /// A rig made with `scripts/rig up` by hand, for an owner process of
    /// the test's own (`sleep 600`). Dropping it kills the owner if still
    /// alive and removes the rig, so a failing test leaves nothing.
    struct Owned {
        name: String,
        owner: Option<std::process::Child>,
    }

    impl Owned {
        /// `scripts/rig up --name <fresh> --hosts <hosts> <args...>`, with
        /// `--owner <pid>` of a new `sleep 600` unless `owner` is false.
        fn up(hosts: usize, owner: bool, args: &[&str]) -> Owned {
            let mut rig = Owned { name: fresh_name(), owner: None };
            let mut argv =
                vec!["up".to_string(), "--name".into(), rig.name.clone(), "--hosts".into(), hosts.to_string()];
            if owner {
                let child = Command::new("sleep").arg("600").stdin(Stdio::null()).spawn().expect("spawn sleep");
                argv.extend(["--owner".into(), child.id().to_string()]);
                rig.owner = Some(child);
            }
            argv.extend(args.iter().map(|a| a.to_string()));
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = run_script(&argv).unwrap_or_else(|e| panic!("{e}"));
            assert!(out.contains(&format!("RIG_NS={NS_PREFIX}{}", rig.name)), "{out}");
            assert!(ns_exists(&rig.ns()));
            rig
        }

        fn ns(&self) -> String {
            format!("{NS_PREFIX}{}", self.name)
        }

        /// The owner's PID.
        fn owner_pid(&self) -> u32 {
            self.owner.as_ref().expect("an owner").id()
        }

        /// SIGKILLs the owner and reaps it (a zombie would still look
        /// alive to the script: its /proc entry stays until reaped).
        fn kill_owner(&mut self) {
            let mut child = self.owner.take().expect("an owner");
            child.kill().unwrap();
            child.wait().unwrap();
        }

        /// This rig's line of `scripts/rig list`.
        fn listed(&self) -> String {
            let out = run_script(&["list"]).unwrap();
            let ns = self.ns();
            out.lines()
                .find(|l| l.split_whitespace().next() == Some(ns.as_str()))
                .unwrap_or_else(|| panic!("{ns} not in scripts/rig list:\n{out}"))
                .to_string()
        }

        /// The state record `scripts/rig` keeps for the rig.
        fn record(&self) -> Option<String> {
            let dir = std::env::var("RHV_RIG_STATE_DIR").unwrap_or_else(|_| "/run/rhv-rig".into());
            std::fs::read_to_string(Path::new(&dir).join(&self.name)).ok()
        }

        /// Waits up to `limit` (scaled) for the namespace to be gone.
        fn wait_gone(&self, limit: Duration) -> Result<Duration, String> {
            let start = Instant::now();
            let deadline = start + scaled(limit);
            while ns_exists(&self.ns()) {
                if Instant::now() >= deadline {
                    return Err(format!("{} still exists {limit:?} after its owner died", self.ns()));
                }
                std::thread::sleep(Duration::from_millis(100)); // polling a file; nothing to wait on
            }
            Ok(start.elapsed())
        }
    }

    impl Drop for Owned {
        fn drop(&mut self) {
            if let Some(mut c) = self.owner.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = run_script(&["down", &self.name]);
        }
    }

    /// The watcher of `up --owner PID` removes the rig (namespace and
    /// record) soon after that process is SIGKILLed, and not while it lives.
    #[test]
    fn a_rig_goes_when_its_owner_is_killed() {
        if !rigs_or_skip("a_rig_goes_when_its_owner_is_killed") {
            return;
        }
        let mut rig = Owned::up(1, true, &[]);
        let line = rig.listed();
        assert!(line.contains(&format!(" {} ", rig.owner_pid())) && line.contains(" alive "), "{line}");
        assert!(rig.record().is_some_and(|r| r.starts_with(&format!("{} ", rig.owner_pid()))), "{:?}", rig.record());
        rig.kill_owner();
        rig.wait_gone(Duration::from_secs(15)).unwrap();
        assert_eq!(rig.record(), None, "the record goes with the rig");
    }

    /// A QEMU still running inside (holding a tap) when the owner dies is
    /// killed by the watcher's teardown, and the rig goes all the same.
    #[test]
    fn a_dead_owners_rig_is_removed_with_the_qemu_inside() {
        if !rigs_or_skip("a_dead_owners_rig_is_removed_with_the_qemu_inside") {
            return;
        }
        let mut rig = Owned::up(1, true, &[]);
        // A real QEMU on tap0, stopped before its first instruction (-S):
        // no image needed; it holds the tap open like a test's QEMU.
        let mut qemu = Command::new("ip")
            .args(["netns", "exec", &rig.ns(), &crate::QemuBuilder::program()])
            .args(["-S", "-display", "none", "-nodefaults", "-monitor", "none", "-serial", "none"])
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no", "-device", "e1000,netdev=n0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_pid_inside(&rig.ns(), qemu.id(), Duration::from_secs(10)).unwrap();
        // QEMU has opened the tap once the kernel says it has a carrier.
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        loop {
            let out = Command::new("ip").args(["-n", &rig.ns(), "link", "show", "tap0"]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !text.contains("NO-CARRIER") && text.contains("tap0") {
                break;
            }
            if let Some(status) = qemu.try_wait().unwrap() {
                panic!("QEMU exited early ({status}); is it installed?");
            }
            assert!(Instant::now() < deadline, "QEMU did not open tap0:\n{text}");
            std::thread::sleep(Duration::from_millis(50)); // polling link state
        }
        rig.kill_owner();
        rig.wait_gone(Duration::from_secs(20)).unwrap();
        // The teardown killed QEMU (by signal) before deleting the namespace.
        let deadline = Instant::now() + scaled(Duration::from_secs(5));
        let status = loop {
            if let Some(s) = qemu.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = qemu.kill();
                let _ = qemu.wait();
                panic!("QEMU still runs after its rig was removed");
            }
            std::thread::sleep(Duration::from_millis(50)); // polling the child's status
        };
        // QEMU exits with 0 on SIGTERM, saying so; SIGKILL leaves a signal.
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut qemu.stderr.take().unwrap(), &mut stderr).unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert!(
            status.signal().is_some() || stderr.contains("terminating on signal"),
            "QEMU was not killed ({status}): {stderr}"
        );
    }

    /// `gc` and ownerless rigs: a `--no-watch` rig stays while its owner
    /// lives and `gc` removes it once the owner is gone; a `--keep` rig has
    /// no owner, so `gc` keeps it until it is older than `--max-age`. Every
    /// `gc` here names its rigs, so other runs' rigs are never touched.
    #[test]
    fn gc_removes_rigs_of_dead_owners_and_old_kept_ones() {
        if !rigs_or_skip("gc_removes_rigs_of_dead_owners_and_old_kept_ones") {
            return;
        }
        let mut orphan = Owned::up(0, true, &["--no-watch"]);
        let kept = Owned::up(0, false, &["--keep"]);
        assert_eq!(kept.record().as_deref(), Some("keep\n"));
        assert!(kept.listed().contains(" kept "), "{}", kept.listed());

        // Live owner, young kept rig: gc keeps both.
        let out = run_script(&["gc", &orphan.name, &kept.name]).unwrap();
        assert!(out.is_empty(), "{out}");
        assert!(ns_exists(&orphan.ns()) && ns_exists(&kept.ns()), "gc removed a rig it should keep");

        // No watcher: the rig outlives its owner until gc.
        orphan.kill_owner();
        run_script(&["gc", &orphan.name, &kept.name]).unwrap();
        assert!(!ns_exists(&orphan.ns()), "gc left the rig of a dead owner");
        assert_eq!(orphan.record(), None);
        assert!(ns_exists(&kept.ns()), "gc removed a kept rig younger than --max-age");

        // Old enough for --max-age 0: the kept rig goes too.
        run_script(&["gc", "--max-age", "0", &kept.name]).unwrap();
        assert!(!ns_exists(&kept.ns()), "gc --max-age 0 left a kept rig");
        assert_eq!(kept.record(), None);
    }

    #[test]
    fn dropping_a_rig_removes_it() {
        let Some(rig) = Rig::up_or_skip(0, "dropping_a_rig_removes_it") else { return };
        let ns = rig.ns().to_string();
        assert!(ns_exists(&ns) && rig.taps().is_empty());
        drop(rig);
        assert!(!ns_exists(&ns));
    }
}
