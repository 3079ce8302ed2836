//! `bench`: size, boot-time, guest and network figures for rhv as a
//! markdown table.
//!
//! The network rows need the rig (root; see `systest::rig`) and show
//! `n/a` with the reason without it; beside each rhv figure they show the
//! same path between two Linux hosts on the rig's bridge and the ratio.
//!
//! usage: bench [--runs N] [--only TEXT]
//!
//! Each row is a name and a function in [`ROWS`]; boots are shared between
//! rows through [`Ctx::series`], so adding a row is one line plus (maybe) a
//! new [`Setup`]. Run through scripts/bench, which builds the images first.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use systest::migbench::{self, Lab, Load};
use systest::netbench::{self, ns_sh, Peer};
use systest::nfsbench::{self, NfsServer};
use systest::qemu::kvm_usable;
use systest::rig::Rig;
use systest::{images, timeouts, Accel, QemuBuilder, TempDir};

/// One table cell pair: the figure and a note.
struct Cell {
    value: String,
    note: String,
}

impl Cell {
    fn ok(value: String, note: impl Into<String>) -> Self {
        Cell { value, note: note.into() }
    }
    fn na(reason: impl Into<String>) -> Self {
        Cell { value: "n/a".into(), note: reason.into() }
    }
    fn skipped(reason: impl Into<String>) -> Self {
        Cell { value: "skipped".into(), note: reason.into() }
    }
}

/// How a boot series is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Setup {
    TcgKernel,
    TcgIso,
    TcgPxe,
    KvmKernel,
    KvmIso,
}

impl Setup {
    fn builder(self) -> Result<QemuBuilder, String> {
        let err = |e: systest::Error| e.to_string();
        let cmdline = "console=ttyS0 loglevel=info";
        Ok(match self {
            Setup::TcgKernel => QemuBuilder::kernel(images::elf().map_err(err)?).append(cmdline).accel(Accel::Tcg),
            Setup::KvmKernel => QemuBuilder::kernel(images::elf().map_err(err)?).append(cmdline).accel(Accel::Kvm),
            Setup::TcgIso => QemuBuilder::iso(images::iso().map_err(err)?).accel(Accel::Tcg),
            Setup::KvmIso => QemuBuilder::iso(images::iso().map_err(err)?).accel(Accel::Kvm),
            Setup::TcgPxe => QemuBuilder::pxe(images::pxe().map_err(err)?).accel(Accel::Tcg),
        })
    }

    fn timeout(self) -> Duration {
        match self {
            Setup::TcgKernel => timeouts::KERNEL_BOOT,
            Setup::KvmKernel => Duration::from_secs(60),
            Setup::TcgIso => timeouts::ISO_BOOT,
            Setup::KvmIso => Duration::from_secs(180),
            Setup::TcgPxe => timeouts::PXE_BOOT,
        }
    }

    fn is_kvm(self) -> bool {
        matches!(self, Setup::KvmKernel | Setup::KvmIso)
    }
}

/// Boot measurements of one setup, in milliseconds.
#[derive(Debug, Clone, Default)]
struct Series {
    /// QEMU launch to the prompt, host wall clock.
    wall_ms: Vec<f64>,
    /// Kernel entry to prompt, from the banner.
    kernel_ms: Vec<f64>,
}

struct Ctx {
    runs: usize,
    cache: HashMap<Setup, Result<Series, String>>,
    /// Linux → Linux figures over the rig's bridge, shared between rows.
    linux: HashMap<LinuxPath, Result<Vec<f64>, String>>,
    /// The two relocation hosts of the migration rows, shared between them.
    mig: Lab,
}

impl Ctx {
    /// Boots `setup` `runs` times (once per setup; rows share the result).
    fn series(&mut self, setup: Setup) -> Result<Series, String> {
        if let Some(r) = self.cache.get(&setup) {
            return r.clone();
        }
        let r = self.measure(setup);
        self.cache.insert(setup, r.clone());
        r
    }

    fn measure(&self, setup: Setup) -> Result<Series, String> {
        if setup.is_kvm() && !kvm_usable() {
            return Err("/dev/kvm missing or not usable".into());
        }
        let mut s = Series::default();
        for i in 0..self.runs {
            eprintln!("bench: {setup:?} run {}/{}", i + 1, self.runs);
            let mut q = setup.builder()?.spawn().map_err(|e| first_line(&e))?;
            let banner = q.wait_ready(setup.timeout()).map_err(|e| first_line(&e))?;
            s.wall_ms.push(q.elapsed().as_secs_f64() * 1000.0);
            s.kernel_ms.push(banner.ms);
        }
        Ok(s)
    }
}

fn first_line(e: &systest::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// Median of `v` (mean of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn spread(v: &[f64], unit: &str, decimals: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("median of {}; min {min:.decimals$} {unit}, max {max:.decimals$} {unit}", v.len())
}

/// Launch→prompt wall time of `setup`.
fn wall(ctx: &mut Ctx, setup: Setup) -> Cell {
    match ctx.series(setup) {
        Ok(s) => Cell::ok(format!("{:.0} ms", median(&s.wall_ms)), spread(&s.wall_ms, "ms", 0)),
        Err(e) => Cell::na(e),
    }
}

/// Kernel entry→prompt of `setup`, as the banner reports it.
fn kernel(ctx: &mut Ctx, setup: Setup) -> Cell {
    match ctx.series(setup) {
        Ok(s) => Cell::ok(format!("{:.3} ms", median(&s.kernel_ms)), spread(&s.kernel_ms, "ms", 3)),
        Err(e) => Cell::na(e),
    }
}

fn stripped_size(_: &mut Ctx) -> Cell {
    let elf = match images::elf() {
        Ok(p) => p,
        Err(e) => return Cell::na(e.to_string()),
    };
    let dir = match TempDir::new("bench") {
        Ok(d) => d,
        Err(e) => return Cell::na(format!("temp dir: {e}")),
    };
    let out = dir.path().join("hypervisor.stripped");
    let status = Command::new("objcopy").arg("--strip-all").arg(&elf).arg(&out).status();
    match (status, std::fs::metadata(&out)) {
        (Ok(s), Ok(m)) if s.success() => {
            let unstripped = std::fs::metadata(&elf).map(|m| m.len()).unwrap_or(0);
            Cell::ok(
                format!("{} bytes ({:.1} KiB)", m.len(), m.len() as f64 / 1024.0),
                format!("objcopy --strip-all; unstripped {:.1} KiB", unstripped as f64 / 1024.0),
            )
        }
        (Ok(s), _) => Cell::na(format!("objcopy failed: {s}")),
        (Err(e), _) => Cell::na(format!("objcopy: {e} (install binutils)")),
    }
}

/// GRUB under KVM, where KVM is usable for it: not on kvm_pvm (no VMX/SVM;
/// its real-mode emulation makes GRUB take about a minute), unless
/// `RHV_BENCH_KVM_ISO=1` insists.
fn kvm_iso(ctx: &mut Ctx) -> Cell {
    let forced = std::env::var("RHV_BENCH_KVM_ISO").is_ok_and(|v| v == "1");
    if kvm_usable() && systest::qemu::kvm_is_pvm() && !forced {
        Cell::skipped("kvm_pvm: GRUB ~60 s; RHV_BENCH_KVM_ISO=1 runs it")
    } else {
        wall(ctx, Setup::KvmIso)
    }
}

/// Boots `-kernel` (TCG, qemu64) with the named example guests as modules.
fn boot_guests(guests: &[&str], mem: &str) -> Result<systest::Qemu, String> {
    systest::boot_with_guests(guests, "qemu64", mem).map_err(|e| e.to_string())
}

/// Runs a command and returns the first capture of `re` in its output.
fn capture(q: &mut systest::Qemu, cmd: &str, re: &str, wait: Duration) -> Result<String, String> {
    let re = systest::Regex::new(re).map_err(|e| e.to_string())?;
    q.send_line(cmd).map_err(|e| e.to_string())?;
    let caps = q.expect_captures(&re, wait).map_err(|e| e.to_string())?;
    caps.get(1).cloned().ok_or_else(|| "no capture".to_string())
}

fn null_hypercall(ctx: &mut Ctx) -> Cell {
    let run = || -> Result<Vec<f64>, String> {
        let mut q = boot_guests(&["hostile"], "256M")?;
        let mut v = Vec::new();
        for i in 0..ctx.runs {
            let ns = capture(
                &mut q,
                &format!("create -c hostile name=n{i} extra=\"fault=none\""),
                r"storm 100000 x vcpu_id -> \d+ ms, \d+ calls/s, (\d+) ns/call",
                Duration::from_secs(60),
            )?;
            v.push(ns.parse().map_err(|_| "bad figure")?);
            q.expect(systest::PROMPT, Duration::from_secs(30)).map_err(|e| e.to_string())?;
        }
        Ok(v)
    };
    match run().map(|v| (!v.is_empty()).then(|| median(&v))) {
        Ok(Some(ns)) => {
            Cell::ok(format!("{ns:.0} ns"), "syscall + dispatch + iretq, 100 000 VCPU_ID calls from ring 3 (TCG)")
        }
        Ok(None) => Cell::na("no figures"),
        Err(e) => Cell::na(e),
    }
}

fn domain_switch(ctx: &mut Ctx) -> Cell {
    let run = || -> Result<(f64, f64), String> {
        let mut q = boot_guests(&["spin"], "256M")?;
        let re = r"spin: \d+ yields in \d+ ns, (\d+) ns/yield";
        let alone = capture(&mut q, "create -c spin name=alone extra=\"yields=200000\"", re, Duration::from_secs(120))?;
        q.expect(systest::PROMPT, Duration::from_secs(30)).map_err(|e| e.to_string())?;
        let mut pairs = Vec::new();
        for i in 0..ctx.runs {
            // The partner yields twice as often, so it outlives the measured run.
            q.command(&format!("create spin name=partner{i} extra=\"yields=400000\""), timeouts::COMMAND)
                .map_err(|e| e.to_string())?;
            let ns = capture(
                &mut q,
                &format!("create -c spin name=pp{i} extra=\"yields=200000\""),
                re,
                Duration::from_secs(120),
            )?;
            q.expect(systest::PROMPT, Duration::from_secs(30)).map_err(|e| e.to_string())?;
            q.command(&format!("destroy partner{i}"), timeouts::COMMAND).map_err(|e| e.to_string())?;
            pairs.push(ns.parse::<f64>().map_err(|_| "bad figure")?);
        }
        Ok((alone.parse().map_err(|_| "bad figure")?, median(&pairs)))
    };
    match run() {
        Ok((alone, pair)) => Cell::ok(
            format!("{:.0} ns", pair / 2.0),
            format!("two domains yielding to each other: {pair:.0} ns per yield = 2 switches; one domain alone: {alone:.0} ns per yield (TCG)"),
        ),
        Err(e) => Cell::na(e),
    }
}

fn create_16mib(ctx: &mut Ctx) -> Cell {
    let run = || -> Result<Vec<f64>, String> {
        let mut q = boot_guests(&["heartbeat"], "256M")?;
        let mut v = Vec::new();
        for i in 0..ctx.runs {
            let ms = capture(
                &mut q,
                &format!("create heartbeat name=c{i} memory=16"),
                r"created domain \d+ \(\S+\) in ([0-9.]+) ms",
                timeouts::COMMAND,
            )?;
            q.expect(systest::PROMPT, timeouts::COMMAND).map_err(|e| e.to_string())?;
            q.command(&format!("destroy c{i}"), timeouts::COMMAND).map_err(|e| e.to_string())?;
            v.push(ms.parse().map_err(|_| "bad figure")?);
        }
        Ok(v)
    };
    match run().map(|v| (!v.is_empty()).then(|| median(&v))) {
        Ok(Some(ms)) => {
            Cell::ok(format!("{ms:.2} ms"), "ELF check, 4096 frames zeroed and mapped, image copied, vCPU made (TCG)")
        }
        Ok(None) => Cell::na("no figures"),
        Err(e) => Cell::na(e),
    }
}

fn one_mib_guests(_: &mut Ctx) -> Cell {
    let run = || -> Result<usize, String> {
        let mut q = boot_guests(&["heartbeat"], "256M")?;
        for n in 0..4096 {
            let out = q
                .command(&format!("create heartbeat memory=1 name=g{n}"), timeouts::COMMAND)
                .map_err(|e| e.to_string())?;
            if !out.contains("created domain") {
                return if out.contains("not enough memory") { Ok(n) } else { Err(out) };
            }
        }
        Ok(4096)
    };
    match run() {
        Ok(n) => Cell::ok(
            format!("{n}"),
            "heartbeat guests of memory=1 created until memory ran out, all running (QEMU -m 256M)",
        ),
        Err(e) => Cell::na(e),
    }
}

// -- network rows ---------------------------------------------------------
//
// Each row makes its own rig (a namespace with bridge br0, 10.77.0.1, and
// taps; see systest::rig) with rhv at .2 (and .3), and where Linux can do
// the same thing, a Linux peer at .200 on that bridge (a namespace of its
// own on a veth pair, see systest::netbench::Peer). Linux tools run in the
// rig's namespace, i.e. on the bridge's side. Rigs, peers and QEMUs are
// removed by Drop, on errors too.

/// The Linux peer's host number on the rig's subnet.
const PEER_HOST: u8 = 200;
/// TCP payload Linux sends to a sink.
const SINK_BYTES: u64 = 64_000_000;
/// MiB a hypervisor sends to another.
const HV_SEND_MIB: u64 = 64;
/// Payload sent through an echo server (and back).
const ECHO_BYTES: u64 = 16_000_000;
/// Pings per run.
const PINGS: u32 = 20;

/// A Linux → Linux path over a rig's bridge (the rig's namespace to a
/// [`Peer`]), measured once per bench and shown beside rhv's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LinuxPath {
    /// Avg RTT of `ping -c 20 -i 0.05`, ms.
    Ping,
    /// `nc -N` of 64 MB into `nc -l`, MiB/s.
    TcpSink,
    /// 16 MB through a TCP echo server (python3), MiB/s each way.
    Echo,
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// The rig, or why there is none (not root, tools missing).
fn rig(hosts: usize) -> Result<Rig, String> {
    Rig::up(hosts).map_err(|e| format!("no network rig: {}", err(e)))
}

/// `ping -c 20 -i 0.05` from the rig's namespace: (sent, received, avg ms).
fn linux_ping(rig: &Rig, ip: &str) -> Result<(u32, u32, f64), String> {
    let out =
        ns_sh(rig.ns(), &format!("ping -n -q -c {PINGS} -i 0.05 -w 30 {ip}"), Duration::from_secs(40)).map_err(err)?;
    netbench::linux_ping(&out).ok_or_else(|| format!("no ping summary from Linux: {}", out.trim()))
}

/// Times `head -c SINK_BYTES /dev/zero | nc -N ip port` in the rig's
/// namespace: nanoseconds until the receiver has closed.
fn linux_send(rig: &Rig, ip: &str, port: u16) -> Result<u64, String> {
    let script = netbench::timed(&format!("head -c {SINK_BYTES} /dev/zero | nc -N -w 30 {ip} {port}"));
    let out = ns_sh(rig.ns(), &script, Duration::from_secs(600)).map_err(err)?;
    netbench::elapsed_ns(&out).ok_or_else(|| format!("no timing: {}", out.trim()))
}

/// Sends `ECHO_BYTES` of `dir/in` through the echo server at `ip:port`
/// and checks every byte came back: MiB/s of payload each way.
fn echo_through(rig: &Rig, dir: &TempDir, ip: &str, port: u16) -> Result<f64, String> {
    let (inp, outp) = (dir.path().join("in"), dir.path().join("out"));
    let (i, o) = (inp.display(), outp.display());
    let script = format!(
        "rm -f {o}; {} && cmp {i} {o} && echo verified",
        netbench::timed(&format!("nc -N -w 30 {ip} {port} < {i} > {o}"))
    );
    let out = ns_sh(rig.ns(), &script, Duration::from_secs(600)).map_err(err)?;
    let ns = netbench::elapsed_ns(&out).ok_or_else(|| format!("no timing: {}", out.trim()))?;
    if !out.contains("verified") {
        return Err(format!("echo differs: {}", out.trim()));
    }
    Ok(netbench::mib_per_s(ECHO_BYTES, ns))
}

/// `ECHO_BYTES` random bytes in `dir/in`.
fn echo_input(rig: &Rig, dir: &TempDir) -> Result<(), String> {
    let script = format!("head -c {ECHO_BYTES} /dev/urandom > {}", dir.path().join("in").display());
    ns_sh(rig.ns(), &script, Duration::from_secs(60)).map(drop).map_err(err)
}

/// Measures `path` `runs` times between `rig` and `peer`.
fn measure_linux(path: LinuxPath, rig: &Rig, peer: &Peer, runs: usize) -> Result<Vec<f64>, String> {
    let mut v = Vec::new();
    match path {
        LinuxPath::Ping => {
            for _ in 0..runs {
                let (sent, got, avg) = linux_ping(rig, peer.ip())?;
                if got < sent {
                    return Err(format!("Linux → Linux lost {} of {sent} pings", sent - got));
                }
                v.push(avg);
            }
        }
        LinuxPath::TcpSink => {
            for _ in 0..runs {
                let sink = peer.spawn_sh("nc -l -p 5001 < /dev/null | wc -c").map_err(err)?;
                peer.wait_listening(5001, Duration::from_secs(10)).map_err(err)?;
                let ns = linux_send(rig, peer.ip(), 5001)?;
                let got = sink.finish(Duration::from_secs(20)).map_err(err)?;
                if got.trim() != SINK_BYTES.to_string() {
                    return Err(format!("Linux sink got {} bytes, not {SINK_BYTES}", got.trim()));
                }
                v.push(netbench::mib_per_s(SINK_BYTES, ns));
            }
        }
        LinuxPath::Echo => {
            let _server = peer.spawn_sh(&netbench::python_echo_script(7)).map_err(err)?;
            peer.wait_listening(7, Duration::from_secs(10)).map_err(err)?;
            let dir = TempDir::new("bench-echo").map_err(err)?;
            echo_input(rig, &dir)?;
            for _ in 0..runs {
                v.push(echo_through(rig, &dir, peer.ip(), 7)?);
            }
        }
    }
    Ok(v)
}

/// The Linux → Linux figure of `path` (median), measured on `here` (a rig
/// and a peer already up) or on a rig of its own, once per bench.
fn linux_figure(ctx: &mut Ctx, path: LinuxPath, here: Option<(&Rig, &Peer)>) -> Result<f64, String> {
    if !ctx.linux.contains_key(&path) {
        eprintln!("bench: Linux → Linux {path:?}");
        let r = match here {
            Some((rig, peer)) => measure_linux(path, rig, peer, ctx.runs),
            None => (|| {
                let rig = rig(0)?;
                let peer = Peer::up(&rig, PEER_HOST).map_err(err)?;
                measure_linux(path, &rig, &peer, ctx.runs)
            })(),
        };
        ctx.linux.insert(path, r);
    }
    ctx.linux[&path].clone().map(|v| median(&v))
}

/// Like [`linux_figure`] with a peer made on `rig` first.
fn linux_figure_on(ctx: &mut Ctx, path: LinuxPath, rig: &Rig) -> Result<f64, String> {
    if ctx.linux.contains_key(&path) {
        return linux_figure(ctx, path, None);
    }
    match Peer::up(rig, PEER_HOST) {
        Ok(peer) => linux_figure(ctx, path, Some((rig, &peer))),
        Err(e) => {
            let e = format!("Linux peer: {}", err(e));
            ctx.linux.insert(path, Err(e.clone()));
            Err(e)
        }
    }
}

/// "; Linux → Linux <what>: X unit, rhv N× slower" (or why it is missing).
fn beside_linux(what: &str, rhv: f64, linux: &Result<f64, String>, unit: &str, decimals: usize, rate: bool) -> String {
    match linux {
        Ok(l) => {
            let ratio = if rate { l / rhv } else { rhv / l };
            let (how, ratio) = if ratio >= 1.0 { ("slower", ratio) } else { ("faster", 1.0 / ratio) };
            format!("; Linux → Linux {what}: {l:.decimals$} {unit} (rhv {ratio:.1}× {how})")
        }
        Err(e) => format!("; Linux → Linux {what}: n/a ({e})"),
    }
}

/// What a network row measured: rhv's figure per run, pings lost, and the
/// Linux → Linux figure beside it.
struct NetFigures {
    v: Vec<f64>,
    lost: u32,
    linux: Result<f64, String>,
}

/// Two hypervisors at once need two QEMU slots.
fn two_slots() -> Result<(), String> {
    if systest::slots::limit() < 2 {
        return Err("needs two QEMUs at once (RHV_QEMU_JOBS=2)".into());
    }
    Ok(())
}

fn ping_linux_hv(ctx: &mut Ctx) -> Cell {
    let run = |ctx: &mut Ctx| -> Result<NetFigures, String> {
        let rig = rig(1)?;
        let ip = rig.ip(2);
        let _q = netbench::hypervisor(&rig, 0, "e1000", &ip, "rhv", &[]).map_err(err)?;
        rig.wait_ping(&ip, Duration::from_secs(20)).map_err(err)?;
        let (mut v, mut lost) = (Vec::new(), 0);
        for i in 0..ctx.runs {
            eprintln!("bench: ping Linux → rhv run {}/{}", i + 1, ctx.runs);
            let (sent, got, avg) = linux_ping(&rig, &ip)?;
            lost += sent - got;
            v.push(avg);
        }
        let linux = linux_figure_on(ctx, LinuxPath::Ping, &rig);
        Ok(NetFigures { v, lost, linux })
    };
    match run(ctx) {
        Ok(NetFigures { v, lost, linux }) => {
            let rtt = median(&v);
            let lost = if lost > 0 { format!(", {lost} lost") } else { String::new() };
            Cell::ok(
                format!("{rtt:.3} ms"),
                format!(
                    "`ping -c {PINGS} -i 0.05` from the rig's bridge to rhv (e1000 on a tap, TCG), avg RTT, {}{lost}{}",
                    spread(&v, "ms", 3),
                    beside_linux("(bridge → veth namespace)", rtt, &linux, "ms", 3, false)
                ),
            )
        }
        Err(e) => Cell::na(e),
    }
}

fn ping_hv_hv(ctx: &mut Ctx) -> Cell {
    let run = |ctx: &mut Ctx| -> Result<NetFigures, String> {
        two_slots()?;
        let rig = rig(2)?;
        let (ip_a, ip_b) = (rig.ip(2), rig.ip(3));
        let mut a = netbench::hypervisor(&rig, 0, "e1000", &ip_a, "hostA", &[]).map_err(err)?;
        let _b = netbench::hypervisor(&rig, 1, "virtio-net-pci", &ip_b, "hostB", &[]).map_err(err)?;
        rig.wait_ping(&ip_b, Duration::from_secs(20)).map_err(err)?;
        // Resolve B's MAC before measuring.
        a.command(&format!("ping {ip_b} 1"), Duration::from_secs(15)).map_err(err)?;
        let (mut v, mut lost) = (Vec::new(), 0);
        for i in 0..ctx.runs {
            eprintln!("bench: ping rhv → rhv run {}/{}", i + 1, ctx.runs);
            let out = a
                .command(&format!("ping {ip_b} {PINGS}"), Duration::from_secs(u64::from(PINGS) * 2 + 10))
                .map_err(err)?;
            let (sent, got, avg) =
                netbench::rhv_ping(&out).ok_or_else(|| format!("no ping summary: {}", out.trim()))?;
            lost += sent - got;
            v.push(avg);
        }
        let linux = linux_figure_on(ctx, LinuxPath::Ping, &rig);
        Ok(NetFigures { v, lost, linux })
    };
    match run(ctx) {
        Ok(NetFigures { v, lost, linux }) => {
            let rtt = median(&v);
            let lost = if lost > 0 { format!(", {lost} lost") } else { String::new() };
            Cell::ok(
                format!("{rtt:.3} ms"),
                format!(
                    "`ping <B> {PINGS}` in rhv A's shell (e1000) to rhv B (virtio-net-pci), both on the rig's bridge (TCG), avg RTT, {}{lost}{}",
                    spread(&v, "ms", 3),
                    beside_linux("on the same bridge", rtt, &linux, "ms", 3, false)
                ),
            )
        }
        Err(e) => Cell::na(e),
    }
}

/// Polls `netbench sink-bytes` until it shows `want` (or 10 s pass).
fn sink_bytes(q: &mut systest::Qemu, want: u64) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = q.command("netbench sink-bytes", timeouts::COMMAND).map_err(err)?;
        let got = netbench::rhv_sink_bytes(&out).ok_or_else(|| format!("netbench sink-bytes: {}", out.trim()))?;
        if got == want {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("the sink got {got} bytes, not {want}"));
        }
        std::thread::sleep(Duration::from_millis(100)); // the sink counts as rhv polls its stack
    }
}

/// `netbench sink 5001` (which also zeroes the count).
fn start_sink(q: &mut systest::Qemu) -> Result<(), String> {
    let out = q.command("netbench sink 5001", timeouts::COMMAND).map_err(err)?;
    if out.contains("sink listening on TCP port 5001") {
        Ok(())
    } else {
        Err(format!("netbench sink: {}", out.trim()))
    }
}

fn tcp_linux_hv(ctx: &mut Ctx) -> Cell {
    let run = |ctx: &mut Ctx| -> Result<NetFigures, String> {
        let rig = rig(1)?;
        let ip = rig.ip(2);
        let mut q = netbench::hypervisor(&rig, 0, "e1000", &ip, "rhv", &[]).map_err(err)?;
        rig.wait_ping(&ip, Duration::from_secs(20)).map_err(err)?;
        let mut v = Vec::new();
        for i in 0..ctx.runs {
            eprintln!("bench: TCP Linux → rhv run {}/{}", i + 1, ctx.runs);
            start_sink(&mut q)?;
            let ns = linux_send(&rig, &ip, 5001)?;
            sink_bytes(&mut q, SINK_BYTES)?;
            v.push(netbench::mib_per_s(SINK_BYTES, ns));
        }
        let linux = linux_figure_on(ctx, LinuxPath::TcpSink, &rig);
        Ok(NetFigures { v, lost: 0, linux })
    };
    match run(ctx) {
        Ok(NetFigures { v, linux, .. }) => {
            let rate = median(&v);
            Cell::ok(
                format!("{rate:.2} MiB/s"),
                format!(
                    "`head -c 64000000 /dev/zero | nc -N` from the rig's bridge into `netbench sink` on rhv (e1000, TCG), timed until rhv closed, byte count checked, {}{}",
                    spread(&v, "MiB/s", 2),
                    beside_linux("(into `nc -l` in a veth namespace)", rate, &linux, "MiB/s", 1, true)
                ),
            )
        }
        Err(e) => Cell::na(e),
    }
}

fn tcp_hv_hv(ctx: &mut Ctx) -> Cell {
    let run = |ctx: &mut Ctx| -> Result<NetFigures, String> {
        two_slots()?;
        let rig = rig(2)?;
        let (ip_a, ip_b) = (rig.ip(2), rig.ip(3));
        let mut a = netbench::hypervisor(&rig, 0, "e1000", &ip_a, "hostA", &[]).map_err(err)?;
        let mut b = netbench::hypervisor(&rig, 1, "virtio-net-pci", &ip_b, "hostB", &[]).map_err(err)?;
        rig.wait_ping(&ip_b, Duration::from_secs(20)).map_err(err)?;
        let mut v = Vec::new();
        for i in 0..ctx.runs {
            eprintln!("bench: TCP rhv → rhv run {}/{}", i + 1, ctx.runs);
            start_sink(&mut b)?;
            let out = a
                .command(&format!("netbench send {ip_b} 5001 {HV_SEND_MIB}"), Duration::from_secs(600))
                .map_err(err)?;
            let (bytes, _, rate) = netbench::rhv_send(&out).ok_or_else(|| format!("netbench send: {}", out.trim()))?;
            if bytes != HV_SEND_MIB << 20 {
                return Err(format!("netbench send sent {bytes} bytes"));
            }
            sink_bytes(&mut b, HV_SEND_MIB << 20)?;
            v.push(rate);
        }
        let linux = linux_figure_on(ctx, LinuxPath::TcpSink, &rig);
        Ok(NetFigures { v, lost: 0, linux })
    };
    match run(ctx) {
        Ok(NetFigures { v, linux, .. }) => {
            let rate = median(&v);
            Cell::ok(
                format!("{rate:.2} MiB/s"),
                format!(
                    "`netbench send <B> 5001 {HV_SEND_MIB}` on rhv A (e1000) into `netbench sink` on rhv B (virtio-net-pci), both on the rig's bridge (TCG), byte count checked, {}{}",
                    spread(&v, "MiB/s", 2),
                    beside_linux("on the same bridge (nc → nc -l, 64 MB)", rate, &linux, "MiB/s", 1, true)
                ),
            )
        }
        Err(e) => Cell::na(e),
    }
}

fn echo_linux_guest(ctx: &mut Ctx) -> Cell {
    let run = |ctx: &mut Ctx| -> Result<NetFigures, String> {
        let rig = rig(1)?;
        let (ip, guest) = (rig.ip(2), rig.ip(10));
        let mut q = netbench::hypervisor(&rig, 0, "e1000", &ip, "rhv", &["echo-server"]).map_err(err)?;
        let out = q
            .command(
                &format!(
                    "create echo-server vif=mac=02:00:00:77:00:10 extra=\"ip={guest}/24 gw={} port=7\"",
                    rig.bridge_ip()
                ),
                timeouts::COMMAND,
            )
            .map_err(err)?;
        if !out.contains("created domain") {
            return Err(format!("create echo-server: {}", out.trim()));
        }
        rig.wait_ping(&guest, Duration::from_secs(20)).map_err(err)?;
        let dir = TempDir::new("bench-echo").map_err(err)?;
        echo_input(&rig, &dir)?;
        let mut v = Vec::new();
        for i in 0..ctx.runs {
            eprintln!("bench: TCP echo Linux ↔ guest run {}/{}", i + 1, ctx.runs);
            v.push(echo_through(&rig, &dir, &guest, 7)?);
        }
        let linux = linux_figure_on(ctx, LinuxPath::Echo, &rig);
        Ok(NetFigures { v, lost: 0, linux })
    };
    match run(ctx) {
        Ok(NetFigures { v, linux, .. }) => {
            let rate = median(&v);
            Cell::ok(
                format!("{rate:.2} MiB/s"),
                format!(
                    "16 MB of random bytes through the echo-server guest's TCP echo (vif on rhv's e1000, TCG) with `nc -N` from the rig's bridge, payload rate each way, echo verified with cmp, {}{}",
                    spread(&v, "MiB/s", 2),
                    beside_linux("(python3 echo in a veth namespace)", rate, &linux, "MiB/s", 1, true)
                ),
            )
        }
        Err(e) => Cell::na(e),
    }
}

// -- NFS rows -------------------------------------------------------------
//
// nfs-ganesha (scripts/nfs-server) serves a temporary directory on the
// rig's bridge address inside the rig's namespace; rhv (e1000, TCG) mounts
// it at /var/xen. Beside rhv's NFS figure: the raw TCP rate Linux → rhv on
// the same boot, and libnfs's `nfs-cp` run in the rig's namespace against
// the same server. QEMU, ganesha and the rig go away on drop, errors too.

/// Bytes of the file rhv reads and of the file libnfs writes (64 MiB).
const NFS_BYTES: u64 = 64 << 20;
/// MiB `nfsbench write` writes.
const NFS_WRITE_MIB: u64 = 64;
/// rhv's NIC in the NFS rows (as in "TCP Linux → hypervisor sink").
const NFS_NIC: &str = "e1000";
/// A 64 MiB read or write under TCG.
const NFS_WAIT: Duration = Duration::from_secs(600);

/// A rig with ganesha serving `dir/xen` and rhv at .2 with it mounted on
/// /var/xen. Fields drop in order: QEMU, ganesha, the rig, the files.
struct NfsRig {
    q: systest::Qemu,
    server: NfsServer,
    rig: Rig,
    dir: TempDir,
}

impl NfsRig {
    /// `files`: names (in the export, or `../NAME` beside it) filled with
    /// `NFS_BYTES` random bytes before the server starts.
    fn up(files: &[&str]) -> Result<NfsRig, String> {
        let rig = rig(1)?;
        let dir = TempDir::new("bench-nfs").map_err(err)?;
        let export = dir.path().join("xen");
        std::fs::create_dir_all(&export).map_err(|e| format!("{}: {e}", export.display()))?;
        for f in files {
            let script = format!("head -c {NFS_BYTES} /dev/urandom > {}", export.join(f).display());
            ns_sh(rig.ns(), &script, Duration::from_secs(120)).map_err(err)?;
        }
        let server = NfsServer::start(&rig, &export, &dir.path().join("state"))
            .map_err(|e| format!("no NFS server: {}", err(e)))?;
        let ip = rig.ip(2);
        let mut q = netbench::hypervisor(&rig, 0, NFS_NIC, &ip, "rhv", &[]).map_err(err)?;
        rig.wait_ping(&ip, Duration::from_secs(20)).map_err(err)?;
        let out = q.command(&format!("mount {} /var/xen", server.spec()), Duration::from_secs(60)).map_err(err)?;
        if out.contains("error") {
            return Err(format!("mount: {}", out.trim()));
        }
        Ok(NfsRig { q, server, rig, dir })
    }

    fn export(&self) -> std::path::PathBuf {
        self.dir.path().join("xen")
    }

    /// `nfsbench OP...` on rhv: MiB/s, after checking the byte count.
    fn rhv(&mut self, args: &str, bytes: u64) -> Result<f64, String> {
        let out = self.q.command(&format!("nfsbench {args}"), NFS_WAIT).map_err(err)?;
        let (_, n, _, rate) = nfsbench::rhv_nfsbench(&out).ok_or_else(|| format!("nfsbench {args}: {}", out.trim()))?;
        if n != bytes {
            return Err(format!("nfsbench {args} moved {n} bytes, not {bytes}"));
        }
        Ok(rate)
    }

    /// Times `nfs-cp src dst` in the rig's namespace and checks that
    /// `check` (the local path of `dst`, new) then has `NFS_BYTES`: MiB/s.
    fn libnfs(&self, src: &str, dst: &str, check: &std::path::Path) -> Result<f64, String> {
        let script = netbench::timed(&format!("nfs-cp '{src}' '{dst}' > /dev/null"));
        let out = ns_sh(self.rig.ns(), &script, NFS_WAIT).map_err(err)?;
        let ns = netbench::elapsed_ns(&out).ok_or_else(|| format!("no timing: {}", out.trim()))?;
        let len = std::fs::metadata(check).map_err(|e| format!("nfs-cp left no {}: {e}", check.display()))?.len();
        if len != NFS_BYTES {
            return Err(format!("nfs-cp made {len} bytes, not {NFS_BYTES}"));
        }
        Ok(netbench::mib_per_s(NFS_BYTES, ns))
    }
}

/// Per-run figures of a comparison, or why there are none.
type Figures = Result<Vec<f64>, String>;

/// "; <what>: X MiB/s (rhv's NFS figure is P% of it)" or why it is missing.
fn nfs_beside(what: &str, rhv: f64, other: &Figures) -> String {
    match other {
        Ok(v) if !v.is_empty() => {
            let m = median(v);
            format!(
                "; {what}: {m:.2} MiB/s, {} (rhv's NFS rate is {:.0}% of it, {:.2}×)",
                spread(v, "MiB/s", 2),
                rhv / m * 100.0,
                rhv / m
            )
        }
        Ok(_) => format!("; {what}: n/a (no figures)"),
        Err(e) => format!("; {what}: n/a ({e})"),
    }
}

/// Runs `f` `runs` times, labelled for the progress output.
fn repeat(runs: usize, label: &str, mut f: impl FnMut() -> Result<f64, String>) -> Result<Vec<f64>, String> {
    (0..runs)
        .map(|i| {
            eprintln!("bench: {label} run {}/{runs}", i + 1);
            f()
        })
        .collect()
}

fn nfs_read(ctx: &mut Ctx) -> Cell {
    let run = |ctx: &mut Ctx| -> Result<(Vec<f64>, Figures, Figures), String> {
        let mut n = NfsRig::up(&["f"])?;
        let v = repeat(ctx.runs, "NFS read into rhv", || n.rhv("read /var/xen/f", NFS_BYTES))?;
        let ip = n.rig.ip(2);
        let tcp = repeat(ctx.runs, "TCP Linux → rhv (NFS row)", || {
            start_sink(&mut n.q)?;
            let ns = linux_send(&n.rig, &ip, 5001)?;
            sink_bytes(&mut n.q, SINK_BYTES)?;
            Ok(netbench::mib_per_s(SINK_BYTES, ns))
        });
        let url = n.server.url("f");
        let mut i = 0;
        let libnfs = repeat(ctx.runs, "libnfs read", || {
            i += 1;
            let copy = n.dir.path().join(format!("copy{i}"));
            let r = n.libnfs(&url, &copy.display().to_string(), &copy);
            let _ = std::fs::remove_file(&copy);
            r
        });
        Ok((v, tcp, libnfs))
    };
    match run(ctx) {
        Ok((v, tcp, libnfs)) => {
            let rate = median(&v);
            Cell::ok(
                format!("{rate:.2} MiB/s"),
                format!(
                    "`nfsbench read` of a 64 MiB random file on nfs-ganesha (NFSv3/TCP, in the rig's namespace on the bridge address) mounted at /var/xen, rhv on {NFS_NIC} (TCG), {}{}{}",
                    spread(&v, "MiB/s", 2),
                    nfs_beside("raw TCP Linux → rhv on the same boot (`head -c 64000000 /dev/zero | nc -N` into `netbench sink 5001`)", rate, &tcp),
                    nfs_beside("libnfs `nfs-cp nfs://… /tmp/…` of the same file from the rig's namespace", rate, &libnfs),
                ),
            )
        }
        Err(e) => Cell::na(e),
    }
}

fn nfs_write(ctx: &mut Ctx) -> Cell {
    let run = |ctx: &mut Ctx| -> Result<(Vec<f64>, Figures), String> {
        let mut n = NfsRig::up(&["../src"])?;
        let w = n.export().join("w");
        let v = repeat(ctx.runs, "NFS write from rhv", || {
            let rate = n.rhv(&format!("write /var/xen/w {NFS_WRITE_MIB}"), NFS_WRITE_MIB << 20)?;
            let len = std::fs::metadata(&w).map_err(|e| format!("{}: {e}", w.display()))?.len();
            if len != NFS_WRITE_MIB << 20 {
                return Err(format!("the server has {len} bytes in w, not {}", NFS_WRITE_MIB << 20));
            }
            Ok(rate)
        })?;
        // A new file per run: ganesha caches directory entries, so one
        // removed behind its back would still exist for CREATE.
        let src = n.dir.path().join("src").display().to_string();
        let mut i = 0;
        let libnfs = repeat(ctx.runs, "libnfs write", || {
            i += 1;
            let name = format!("w-libnfs{i}");
            n.libnfs(&src, &n.server.url(&name), &n.export().join(&name))
        });
        Ok((v, libnfs))
    };
    match run(ctx) {
        Ok((v, libnfs)) => {
            let rate = median(&v);
            Cell::ok(
                format!("{rate:.2} MiB/s"),
                format!(
                    "`nfsbench write /var/xen/w {NFS_WRITE_MIB}` (file created or truncated, UNSTABLE writes + COMMIT, size checked on the server) to nfs-ganesha (NFSv3/TCP, in the rig's namespace), rhv on {NFS_NIC} (TCG), {}{}",
                    spread(&v, "MiB/s", 2),
                    nfs_beside("libnfs `nfs-cp /tmp/… nfs://…` of 64 MiB from the rig's namespace", rate, &libnfs),
                ),
            )
        }
        Err(e) => Cell::na(e),
    }
}

// -- migration rows -------------------------------------------------------
//
// Two rhv hosts with relocation on, A (.2) and B (.3), virtio-net-pci on the
// rig's bridge, 1 GiB each, TCG (systest::migbench::Lab, booted on first use
// and shared by these rows). Each case creates a guest on A, migrates it to
// B once, and shuts it down there: `memdirty` verifies every page on
// shutdown and exits 1 if one was lost or stale. Beside the figures: the
// link's raw TCP rate A → B on the same boot and the ideal time of a plain
// copy, memory ÷ that rate (total ÷ ideal is the ratio that noise moves
// least). The soak boots fresh hosts and shuts them down after.

/// Live migrations in the ping-pong soak, and its time limit.
const SOAK_ROUNDS: u32 = 50;
const SOAK_LIMIT: Duration = Duration::from_secs(1200);

/// The raw TCP rate A → B that the migration rows compare against.
fn mig_raw(ctx: &mut Ctx) -> Cell {
    match ctx.mig.raw() {
        Ok(v) => {
            let rate = median(&v);
            Cell::ok(
                format!("{rate:.2} MiB/s"),
                format!(
                    "`netbench send <B> 5001 {}` on rhv A into `netbench sink` on rhv B, both virtio-net-pci on the rig's bridge with relocation on (TCG), byte count checked, {}; the migration rows' ideal time is memory ÷ this",
                    migbench::RAW_MIB,
                    spread(&v, "MiB/s", 2)
                ),
            )
        }
        Err(e) => Cell::na(e),
    }
}

/// `runs` migrations of a `mib` MiB guest under `load` A → B: medians.
fn mig_case(ctx: &mut Ctx, mib: u64, load: Load, live: bool, plain: bool) -> Cell {
    let case = migbench::Case { mib, load, live, plain };
    let runs = match ctx.mig.case(case) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return Cell::na("no figures"),
        Err(e) => return Cell::na(e),
    };
    let raw = runs[0].raw;
    let ideal = runs[0].ideal_s(mib);
    let pick = |f: &dyn Fn(&migbench::CaseResult) -> f64| -> Vec<f64> { runs.iter().map(f).collect() };
    let total = pick(&|r| r.m.total_s);
    let down = pick(&|r| r.m.downtime_ms as f64);
    let sent = pick(&|r| r.m.mib_sent);
    let rounds = pick(&|r| f64::from(r.m.rounds));
    let rate1 = pick(&|r| r.m.round_lines.first().map_or(f64::NAN, |f| f.rate));
    let ratio: Vec<f64> = total.iter().map(|t| t / ideal).collect();
    let wire = median(&sent) / raw;
    let failed: Vec<&String> = runs.iter().filter_map(|r| r.guest.as_ref().err()).collect();
    let refused: u32 = runs.iter().map(|r| r.refused).sum();
    let n = runs.len();
    let guest = match failed.first() {
        None if matches!(load, Load::Dirty(_)) => {
            "guest intact on B every run (memdirty verified every page on shutdown, exit 0)".to_string()
        }
        None => "guest ran on B and exited 0 on shutdown every run".to_string(),
        Some(e) => format!("GUEST CHECK FAILED in {} of {n} runs: {e}", failed.len()),
    };
    let flag = if failed.is_empty() { String::new() } else { format!(" (guest FAILED {}/{n})", failed.len()) };
    let zero = match runs[0].m.round_lines.first() {
        Some(migbench::Round { pages, zero: Some(z), .. }) => format!(" ({z} of its {pages} pages zero)"),
        _ => String::new(),
    };
    let live_rounds =
        if live { format!(", round 1 at {:.1} MiB/s (median){zero}", median(&rate1)) } else { String::new() };
    let refused = match refused {
        0 => String::new(),
        k => format!("; B refused {k} attempt(s) while still finishing the previous arrival (tried again)"),
    };
    Cell::ok(
        format!("{:.2} s, down {:.0} ms, {:.1} MiB{flag}", median(&total), median(&down), median(&sent)),
        format!(
            "total, downtime and MiB sent of `migrate{} <dom> <B>` on rhv A, {}; {}; medians of {n} runs (total {}, downtime {}, sent {}); {:.0} round(s){live_rounds}; ideal {mib} MiB ÷ raw {raw:.2} MiB/s = {ideal:.2} s, total {:.2}× of it ({}); MiB sent ÷ raw = {wire:.3} s, total {:.1}× of that; {guest}{refused} (TCG)",
            if live { " --live" } else { "" },
            if plain { "plain stream (relocation-crypto=off)" } else { "AEAD stream" },
            load.describe(mib),
            range(&total, "s", 2),
            range(&down, "ms", 0),
            range(&sent, "MiB", 1),
            median(&rounds),
            median(&ratio),
            range(&ratio, "×", 2),
            median(&total) / wire.max(1e-9),
        ),
    )
}

/// "min–max unit".
fn range(v: &[f64], unit: &str, decimals: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.decimals$}–{max:.decimals$} {unit}")
}

fn mig_soak(ctx: &mut Ctx) -> Cell {
    let s = match ctx.mig.soak(SOAK_ROUNDS, SOAK_LIMIT) {
        Ok(s) => s,
        Err(e) => return Cell::na(e),
    };
    let down: Vec<f64> = s.done.iter().map(|m| m.downtime_ms as f64).collect();
    let total: Vec<f64> = s.done.iter().map(|m| m.total_s).collect();
    let rounds: Vec<f64> = s.done.iter().map(|m| f64::from(m.rounds)).collect();
    let ok = s.error.is_none() && s.complete && s.done.len() as u32 == s.asked;
    let verdict = match (&s.error, s.timed_out) {
        (Some(e), _) => format!("FAILED: {e}"),
        (None, true) => format!("stopped by the {} s limit", SOAK_LIMIT.as_secs()),
        (None, false) => "no error".to_string(),
    };
    let figures = if s.done.is_empty() {
        String::new()
    } else {
        format!(
            "; downtime median {:.0} ms, max {:.0} ms; migration total median {:.2} s, max {:.2} s; rounds per migration median {:.0}, max {:.0}",
            median(&down),
            down.iter().copied().fold(0.0, f64::max),
            median(&total),
            total.iter().copied().fold(0.0, f64::max),
            median(&rounds),
            rounds.iter().copied().fold(0.0, f64::max),
        )
    };
    Cell::ok(
        format!("{}/{} migrations, {:.1} MiB verified{}", s.done.len(), s.asked, s.verified as f64 / 1048576.0, if ok { "" } else { " (FAILED)" }),
        format!(
            "the echo-server guest (vif) migrated live A → B → A … while a Linux client in the rig streamed {} KiB/s over one TCP connection to it and compared every echoed byte; after each migration {} KiB more had to come back before the next; {:.1} MiB sent, {:.1} MiB echoed and verified{} in {:.0} s; longest stall of the echo seen by Linux {} ms{figures}{}; {verdict} (TCG)",
            migbench::SOAK_RATE >> 10,
            migbench::SOAK_PROGRESS >> 10,
            s.sent as f64 / 1048576.0,
            s.verified as f64 / 1048576.0,
            if s.complete { " (all of it, stream closed cleanly)" } else { "" },
            s.stream_s,
            s.max_gap_ms,
            if s.refused > 0 { format!("; {} attempt(s) refused by a destination still finishing an arrival", s.refused) } else { String::new() },
        ),
    )
}

type Measure = fn(&mut Ctx) -> Cell;

/// The table, in order. Add a row here.
const ROWS: &[(&str, Measure)] = &[
    ("image size, stripped", stripped_size),
    ("kernel entry → prompt (-kernel, TCG)", |c| kernel(c, Setup::TcgKernel)),
    ("QEMU launch → prompt (-kernel, TCG)", |c| wall(c, Setup::TcgKernel)),
    ("QEMU launch → prompt (GRUB ISO, TCG)", |c| wall(c, Setup::TcgIso)),
    ("QEMU launch → prompt (PXE, TCG)", |c| wall(c, Setup::TcgPxe)),
    ("kernel entry → prompt (-kernel, KVM)", |c| kernel(c, Setup::KvmKernel)),
    ("QEMU launch → prompt (-kernel, KVM)", |c| wall(c, Setup::KvmKernel)),
    ("QEMU launch → prompt (GRUB ISO, KVM)", kvm_iso),
    ("null hypercall round trip", null_hypercall),
    ("domain switch", domain_switch),
    ("create a 16 MiB guest", create_16mib),
    ("1 MiB guests on a 256 MiB host", one_mib_guests),
    ("ping RTT, Linux → hypervisor", ping_linux_hv),
    ("ping RTT, hypervisor → hypervisor", ping_hv_hv),
    ("TCP Linux → hypervisor sink", tcp_linux_hv),
    ("TCP hypervisor → hypervisor", tcp_hv_hv),
    ("TCP echo Linux ↔ guest", echo_linux_guest),
    ("NFS sequential read into the hypervisor", nfs_read),
    ("NFS sequential write from the hypervisor", nfs_write),
    ("migration: raw TCP A → B (the link)", mig_raw),
    ("migration: live 16 MiB idle", |c| mig_case(c, 16, Load::Idle, true, false)),
    ("migration: live 16 MiB memdirty 2 MiB/s", |c| mig_case(c, 16, Load::Dirty(2), true, false)),
    ("migration: live 16 MiB memdirty 8 MiB/s", |c| mig_case(c, 16, Load::Dirty(8), true, false)),
    ("migration: cold 16 MiB idle", |c| mig_case(c, 16, Load::Idle, false, false)),
    ("migration: live 64 MiB idle", |c| mig_case(c, 64, Load::Idle, true, false)),
    ("migration: live 64 MiB memdirty 2 MiB/s", |c| mig_case(c, 64, Load::Dirty(2), true, false)),
    ("migration: live 64 MiB memdirty 8 MiB/s", |c| mig_case(c, 64, Load::Dirty(8), true, false)),
    ("migration: cold 64 MiB idle", |c| mig_case(c, 64, Load::Idle, false, false)),
    ("migration: live 256 MiB idle", |c| mig_case(c, 256, Load::Idle, true, false)),
    ("migration: live 256 MiB memdirty 2 MiB/s", |c| mig_case(c, 256, Load::Dirty(2), true, false)),
    ("migration: live 256 MiB memdirty 8 MiB/s", |c| mig_case(c, 256, Load::Dirty(8), true, false)),
    ("migration: cold 256 MiB idle", |c| mig_case(c, 256, Load::Idle, false, false)),
    ("migration: cold 256 MiB, 128 MiB filled, AEAD", |c| mig_case(c, 256, Load::Dirty(0), false, false)),
    ("migration: cold 256 MiB, 128 MiB filled, plain", |c| mig_case(c, 256, Load::Dirty(0), false, true)),
    ("migration: ping-pong soak under a TCP echo stream", mig_soak),
];

const USAGE: &str = "usage: bench [--runs N] [--only TEXT]\n  \
    --runs N     boots per figure (default 5); the median is shown\n  \
    --only TEXT  only rows whose name contains TEXT\n";

fn parse_args() -> Result<(usize, Option<String>), String> {
    let mut runs = 5;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .ok_or("--runs needs a positive number")?;
            }
            "--only" => only = Some(args.next().ok_or("--only needs a value")?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok((runs, only))
}

fn qemu_version() -> String {
    Command::new(QemuBuilder::program())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let (runs, only) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut ctx = Ctx { runs, cache: HashMap::new(), linux: HashMap::new(), mig: Lab::new(runs) };
    let mut table = Vec::new();
    for (name, measure) in ROWS {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        table.push((*name, measure(&mut ctx)));
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("rhv bench: {runs} runs per figure, {cpus} host CPUs, {}", qemu_version());
    println!();
    println!("| metric | value | notes |");
    println!("|---|---|---|");
    for (name, cell) in table {
        println!("| {name} | {} | {} |", cell.value, cell.note.replace('|', "\\|"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn rows_have_unique_names() {
        let mut names: Vec<&str> = ROWS.iter().map(|r| r.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ROWS.len());
    }
}
