//! Helpers for the bench's migration rows: two relocation hosts on a
//! [`Rig`] ([`Lab`]), live and cold migrations of guests of a given size
//! and load measured against the link's raw TCP rate ([`Lab::case`]), and a
//! ping-pong soak of live migrations under a verified TCP echo stream
//! ([`Lab::soak`]); parsers for `migrate`'s output ([`parse_migrate`]) and
//! the soak client's ([`parse_client_line`]).
//!
//! The hosts are rhv A (10.77.0.2) and B (.3), both on virtio-net-pci,
//! 1 GiB of RAM each (a 256 MiB guest arrives while its source still
//! holds it), booted with `relocation=on` and a shared key; they are
//! booted once and shared by the rows, and booted again after a harness
//! failure (a timeout leaves a shell in an unknown state). Every guest of a
//! case is created on A, migrated to B and shut down there; its exit status
//! tells whether the guest found its memory intact (`memdirty` verifies
//! every page on shutdown). Field order drops the QEMUs before the rig.
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::rig::Rig;
use crate::{images, netbench, scaled, timeouts, Error, Qemu, QemuBuilder, Regex};

/// The hosts' shared relocation key.
const KEY: &str = "rhv-bench-cluster-key-0123456789";
/// RAM of each host.
const HOST_MEMORY: &str = "1G";
/// MiB per raw TCP measurement (`netbench send`).
pub const RAW_MIB: u64 = 32;
/// Longest a single migration may take (a 256 MiB guest under TCG).
const MIGRATE_WAIT: Duration = Duration::from_secs(900);
/// Longest a guest may take to come up (a memdirty fill of 128 MiB).
const READY_WAIT: Duration = Duration::from_secs(180);
/// Longest a guest may take to exit after `shutdown` (rhv forces it after 10 s).
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// The echo guest of the soak: address (host part), MAC, TCP port.
const ECHO_HOST: u8 = 10;
const ECHO_MAC: &str = "02:00:00:77:00:10";
const ECHO_PORT: u16 = 7;
/// Payload rate of the soak's Linux client, bytes/s.
pub const SOAK_RATE: u64 = 1 << 20;
/// Echoed bytes that must arrive (verified) after each migration before
/// the next one starts: proof the stream runs through the new host.
pub const SOAK_PROGRESS: u64 = 256 << 10;
/// Longest wait for that progress.
const SOAK_PROGRESS_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for one soak migration.
const SOAK_MIGRATE_WAIT: Duration = Duration::from_secs(180);

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// What runs in the migrated guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// `heartbeat`: one console line a second, memory untouched (zero).
    Idle,
    /// `memdirty` filling half the guest's memory with a pattern and
    /// dirtying this many MiB/s of it (0: filled, never dirtied).
    Dirty(u64),
}

impl Load {
    pub fn describe(self, mib: u64) -> String {
        match self {
            Load::Idle => "idle (heartbeat, memory untouched)".into(),
            Load::Dirty(0) => format!("memdirty, {} MiB filled, not dirtied", mib / 2),
            Load::Dirty(r) => format!("memdirty, {} MiB filled, dirtying {r} MiB/s", mib / 2),
        }
    }
}

/// One migration to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// Guest memory, MiB.
    pub mib: u64,
    pub load: Load,
    pub live: bool,
    /// Both hosts booted with `relocation-crypto=off`: the stream goes
    /// unencrypted (otherwise AEAD).
    pub plain: bool,
}

/// One pre-copy round as `migrate` printed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    pub n: u32,
    pub pages: u64,
    /// Of them zero pages (sent without data), where rhv says.
    pub zero: Option<u64>,
    pub mib: f64,
    pub ms: u64,
    pub rate: f64,
}

/// `migrate`'s summary line (and its round lines).
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub live: bool,
    pub rounds: u32,
    pub pages: u64,
    pub mib_sent: f64,
    pub downtime_ms: u64,
    pub total_s: f64,
    pub new_id: u32,
    pub round_lines: Vec<Round>,
}

/// Parses the output of `migrate [--live] <name> <ip>`: the summary, or
/// the error line (or the whole output when neither is there).
pub fn parse_migrate(name: &str, text: &str) -> Result<Migration, String> {
    let esc = regex_escape(name);
    let done = Regex::new(&format!(
        r"migrate: {esc} done: (cold|live), (\d+) round\(s\), (\d+) pages, ([0-9.]+) MiB sent, downtime (\d+) ms, total ([0-9.]+) s, now domain (\d+) there"
    ))
    .map_err(err)?;
    let Some(c) = done.captures(text) else {
        let fail = Regex::new(&format!(r"error: migrate {esc}: [^\r\n]*")).map_err(err)?;
        return Err(match fail.find(text) {
            Some(m) => m.as_str().to_string(),
            None => format!("no summary from migrate: {}", text.trim()),
        });
    };
    let num = |i: usize| c[i].parse::<u64>().map_err(|_| format!("bad figure {:?}", &c[i]));
    let float = |i: usize| c[i].parse::<f64>().map_err(|_| format!("bad figure {:?}", &c[i]));
    let round = Regex::new(
        r"migrate: round (\d+): (\d+) pages(?: \((\d+) zero\))?, ([0-9.]+) MiB in (\d+) ms \(([0-9.]+) MiB/s\)",
    )
    .map_err(err)?;
    let round_lines = round
        .captures_iter(text)
        .filter_map(|r| {
            Some(Round {
                n: r[1].parse().ok()?,
                pages: r[2].parse().ok()?,
                zero: r.get(3).and_then(|z| z.as_str().parse().ok()),
                mib: r[4].parse().ok()?,
                ms: r[5].parse().ok()?,
                rate: r[6].parse().ok()?,
            })
        })
        .collect();
    Ok(Migration {
        live: &c[1] == "live",
        rounds: num(2)? as u32,
        pages: num(3)?,
        mib_sent: float(4)?,
        downtime_ms: num(5)?,
        total_s: float(6)?,
        new_id: num(7)? as u32,
        round_lines,
    })
}

/// `s` with the regex metacharacters escaped.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Median of `v` (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Two relocation hosts on a rig.
struct Pair {
    a: Qemu,
    b: Qemu,
    rig: Rig,
    plain: bool,
}

impl Pair {
    fn up(plain: bool) -> Result<Pair, String> {
        if crate::slots::limit() < 2 {
            return Err("needs two QEMUs at once (RHV_QEMU_JOBS=2)".into());
        }
        let rig = Rig::up(2).map_err(|e| format!("no network rig: {}", err(e)))?;
        let a = host(&rig, 0, "hostA", plain).map_err(err)?;
        let b = host(&rig, 1, "hostB", plain).map_err(err)?;
        rig.wait_ping(&rig.ip(2), Duration::from_secs(20)).map_err(err)?;
        rig.wait_ping(&rig.ip(3), Duration::from_secs(20)).map_err(err)?;
        let mut p = Pair { a, b, rig, plain };
        let want = if plain { "AEAD or plain" } else { "AEAD" };
        for q in [&mut p.a, &mut p.b] {
            let out = q.command("info", timeouts::COMMAND).map_err(err)?;
            if !out.lines().any(|l| l.contains("relocation: port 8002") && l.trim_end().ends_with(want)) {
                return Err(format!("relocation is not on ({want}): {}", out.trim()));
            }
        }
        Ok(p)
    }

    /// Host `i` (0: A, 1: B).
    fn q(&mut self, i: usize) -> &mut Qemu {
        if i == 0 {
            &mut self.a
        } else {
            &mut self.b
        }
    }
}

/// rhv (`-kernel`, TCG) on tap `i` with relocation on, the heartbeat,
/// memdirty and echo-server guests as modules, waiting for the prompt.
fn host(rig: &Rig, i: usize, name: &str, plain: bool) -> Result<Qemu, Error> {
    let ip = rig.ip(2 + i as u8);
    let crypto = if plain { " relocation-crypto=off" } else { "" };
    let mut b = QemuBuilder::kernel(images::elf()?)
        .append(format!(
            "console=ttyS0 loglevel=info ip={ip}/24 gw={} hostname={name} relocation=on relocation-key={KEY}{crypto}",
            rig.bridge_ip()
        ))
        .accel(crate::Accel::Tcg)
        .memory(HOST_MEMORY)
        .name(name)
        .prefix(rig.qemu_prefix())
        .initrd(images::guest("heartbeat")?)
        .initrd(images::guest("memdirty")?)
        .initrd(images::guest("echo-server")?);
    for a in rig.nic_args(i, "virtio-net-pci") {
        b = b.arg(a);
    }
    let mut q = b.spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    Ok(q)
}

/// A failure: `host` ones (the harness timed out or QEMU died) leave a
/// shell in an unknown state, so the pair is booted again.
enum Fail {
    Host(String),
    Guest(String),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Host(err(e))
    }
}

impl Fail {
    fn text(self) -> String {
        match self {
            Fail::Host(s) | Fail::Guest(s) => s,
        }
    }
}

/// How long `migrate` is tried again while the destination refuses the
/// connection (see [`migrate`]).
const REFUSED_RETRY_FOR: Duration = Duration::from_secs(10);

/// Runs `migrate [--live] <name> <ip>` on `src` and, when it worked, waits
/// for `dst` to log the arrival: (the output, refusals before it worked).
///
/// rhv's relocation server listens again only once it has finished the
/// previous arrival (MAC announcements, ~0.75 s, then closing, up to
/// 0.5 s); until then a connection is refused and the domain stays at the
/// source. Waiting for the arrival line covers most of that; nothing tells
/// when the server listens again, so a refused command is tried again
/// every 100 ms for up to [`REFUSED_RETRY_FOR`], and the refusals are
/// counted for the row.
fn migrate(
    src: &mut Qemu,
    dst: &mut Qemu,
    name: &str,
    ip: &str,
    live: bool,
    wait: Duration,
) -> Result<(String, u32), Error> {
    let cmd = format!("migrate {}{name} {ip}", if live { "--live " } else { "" });
    let deadline = Instant::now() + scaled(REFUSED_RETRY_FOR);
    let mut refused = 0;
    loop {
        let out = src.command(&cmd, wait)?;
        if out.contains(": connection refused; the domain stays here") && Instant::now() < deadline {
            refused += 1;
            std::thread::sleep(Duration::from_millis(100)); // a listener coming back has no message to await
            continue;
        }
        if out.contains(&format!("migrate: {name} done:")) {
            let arrived = Regex::new(&format!(r"relocation: domain '{}' arrived from [^\r\n]*", regex_escape(name)))
                .map_err(|e| Error::Setup(e.to_string()))?;
            dst.expect(&arrived, Duration::from_secs(60))?;
        }
        return Ok((out, refused));
    }
}

/// Waits on `q`'s console for `re` (after attaching), then detaches:
/// the first capture.
fn on_console(q: &mut Qemu, dom: &str, re: &Regex, wait: Duration) -> Result<String, Error> {
    let text = q.on_console(dom, re.clone(), wait)?;
    Ok(re.captures(&text).and_then(|c| c.get(1)).map(|m| m.as_str().to_string()).unwrap_or_default())
}

/// Asks `dom` on `q` to shut down and waits for the log's exit line: the
/// exit status, or how it ended otherwise.
fn shut_down(q: &mut Qemu, dom: &str) -> Result<Result<i64, String>, Error> {
    let esc = regex_escape(dom);
    let re = Regex::new(&format!(
        r"domain (\d+) \({esc}\): (?:exited with status (-?\d+)|crashed: ([^\r\n]*))|domain (\d+): did not shut down within"
    ))
    .map_err(|e| Error::Setup(e.to_string()))?;
    let out = q.command(&format!("shutdown {dom}"), timeouts::COMMAND)?;
    if !out.contains("to shut down") {
        return Ok(Err(format!("shutdown {dom}: {}", out.trim())));
    }
    // The exit line may have come before the prompt.
    let caps: Vec<String> = match re.captures(&out) {
        Some(c) => c.iter().map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default()).collect(),
        None => q.expect_captures(&re, EXIT_WAIT)?,
    };
    Ok(if !caps[2].is_empty() {
        caps[2].parse::<i64>().map_err(|_| format!("bad exit status {:?}", caps[2]))
    } else if !caps[3].is_empty() {
        Err(format!("crashed: {}", caps[3]))
    } else {
        Err("did not shut down within the grace period (destroyed)".into())
    })
}

/// The raw TCP rate A → B and what a case measured.
pub struct CaseResult {
    pub m: Migration,
    /// MiB/s: the median of the raw runs.
    pub raw: f64,
    /// Attempts the destination refused (still busy with the previous
    /// arrival) before the one measured.
    pub refused: u32,
    /// Whether the guest found its memory intact (exit status 0 after the
    /// shutdown on B), or what happened.
    pub guest: Result<(), String>,
}

impl CaseResult {
    /// `memory ÷ raw`, seconds: the ideal of a stream of the whole memory.
    pub fn ideal_s(&self, mib: u64) -> f64 {
        mib as f64 / self.raw
    }
}

/// The migration hosts, booted on first use and shared by the rows.
pub struct Lab {
    runs: usize,
    pair: Option<Pair>,
    raw: Option<Result<Vec<f64>, String>>,
    seq: u32,
}

impl Lab {
    /// `runs`: raw TCP measurements to take the median of.
    pub fn new(runs: usize) -> Lab {
        Lab { runs, pair: None, raw: None, seq: 0 }
    }

    /// Shuts the hosts down (the next use boots them again).
    pub fn close(&mut self) {
        self.pair = None;
    }

    fn pair(&mut self, plain: bool) -> Result<&mut Pair, String> {
        if self.pair.as_ref().is_some_and(|p| p.plain != plain) {
            self.pair = None;
        }
        if self.pair.is_none() {
            eprintln!("bench: booting two relocation hosts ({})", if plain { "plain allowed" } else { "AEAD" });
            self.pair = Some(Pair::up(plain)?);
        }
        Ok(self.pair.as_mut().expect("just made"))
    }

    /// The raw TCP rate A → B per run (`netbench send` of [`RAW_MIB`]
    /// into `netbench sink`, byte count checked), measured once.
    pub fn raw(&mut self) -> Result<Vec<f64>, String> {
        if self.raw.is_none() {
            let plain = self.pair.as_ref().is_some_and(|p| p.plain);
            let runs = self.runs;
            let r = match self.pair(plain) {
                Ok(p) => {
                    let r = measure_raw(p, runs);
                    if matches!(r, Err(Fail::Host(_))) {
                        self.pair = None;
                    }
                    r.map_err(Fail::text)
                }
                Err(e) => Err(e),
            };
            self.raw = Some(r);
        }
        self.raw.clone().expect("just measured")
    }

    /// `runs` times: creates a guest for `case` on A, migrates it to B,
    /// shuts it down there and checks its exit status. Stops at the first
    /// failure that is not the guest's check.
    pub fn case(&mut self, case: Case) -> Result<Vec<CaseResult>, String> {
        let raw = median(&self.raw()?);
        let (mut v, runs) = (Vec::new(), self.runs);
        for i in 0..runs {
            self.seq += 1;
            let name = format!("m{}-{}", case.mib, self.seq);
            let p = self.pair(case.plain)?;
            eprintln!(
                "bench: migration run {}/{}: {} {} MiB, {}",
                i + 1,
                runs,
                if case.live { "live" } else { "cold" },
                case.mib,
                case.load.describe(case.mib)
            );
            let run = format!("run {}/{runs}", i + 1);
            match run_case(p, &name, case).map_err(|f| cleanup(p, &name, f)) {
                Ok((m, refused, guest)) => v.push(CaseResult { m, raw, refused, guest }),
                Err(Fail::Host(e)) => {
                    self.pair = None;
                    return Err(format!("{run}: {e}"));
                }
                Err(Fail::Guest(e)) => return Err(format!("{run}: {e}")),
            }
        }
        Ok(v)
    }

    /// The ping-pong soak: the echo-server guest (vif, on A) serves a Linux
    /// client in the rig that streams [`SOAK_RATE`] bytes/s and checks every
    /// echoed byte, while the guest migrates live A → B → A … up to
    /// `rounds` times within `limit`. Boots fresh hosts and shuts them
    /// down after.
    pub fn soak(&mut self, rounds: u32, limit: Duration) -> Result<Soak, String> {
        self.pair = None;
        let r = self.pair(false).and_then(|p| run_soak(p, rounds, limit).map_err(Fail::text));
        self.pair = None;
        r
    }
}

/// Destroys `name` on both hosts after a failed case (a hypervisor's
/// refusal leaves the guest on A; one half-arrived is B's to clean up).
fn cleanup(p: &mut Pair, name: &str, f: Fail) -> Fail {
    if let Fail::Guest(_) = f {
        for i in 0..2 {
            if let Err(e) = p.q(i).command(&format!("destroy {name}"), timeouts::COMMAND) {
                return Fail::Host(format!("{} (and cleaning up: {})", f.text(), err(e)));
            }
        }
    }
    f
}

/// Polls `netbench sink-bytes` on `q` until it shows `want` (or 10 s pass).
fn sink_bytes(q: &mut Qemu, want: u64) -> Result<(), Fail> {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    loop {
        let out = q.command("netbench sink-bytes", timeouts::COMMAND)?;
        let got = netbench::rhv_sink_bytes(&out).ok_or_else(|| Fail::Guest(format!("sink-bytes: {}", out.trim())))?;
        if got == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Fail::Guest(format!("the sink got {got} bytes, not {want}")));
        }
        std::thread::sleep(Duration::from_millis(100)); // the sink counts as rhv polls its stack
    }
}

fn measure_raw(p: &mut Pair, runs: usize) -> Result<Vec<f64>, Fail> {
    let ip_b = p.rig.ip(3);
    let mut v = Vec::new();
    for i in 0..runs {
        eprintln!("bench: raw TCP rhv A → rhv B run {}/{runs}", i + 1);
        let out = p.b.command("netbench sink 5001", timeouts::COMMAND)?;
        if !out.contains("sink listening on TCP port 5001") {
            return Err(Fail::Guest(format!("netbench sink: {}", out.trim())));
        }
        let out = p.a.command(&format!("netbench send {ip_b} 5001 {RAW_MIB}"), Duration::from_secs(600))?;
        let (bytes, _, rate) =
            netbench::rhv_send(&out).ok_or_else(|| Fail::Guest(format!("netbench send: {}", out.trim())))?;
        if bytes != RAW_MIB << 20 {
            return Err(Fail::Guest(format!("netbench send sent {bytes} bytes")));
        }
        sink_bytes(&mut p.b, RAW_MIB << 20)?;
        v.push(rate);
    }
    Ok(v)
}

fn run_case(p: &mut Pair, name: &str, case: Case) -> Result<(Migration, u32, Result<(), String>), Fail> {
    let Case { mib, load, live, .. } = case;
    let (create, ready) = match load {
        Load::Idle => (
            format!("create heartbeat name={name} memory={mib}"),
            format!(r"(heartbeat: start name={})", regex_escape(name)),
        ),
        Load::Dirty(rate) => (
            format!("create memdirty name={name} memory={mib} extra=\"mib={} rate={rate} report_s=3600\"", mib / 2),
            r"memdirty: (verify (?:ok|FAILED[^\r\n]*))".to_string(),
        ),
    };
    let out = p.a.command(&create, Duration::from_secs(60))?;
    if !out.contains("created domain") {
        return Err(Fail::Guest(format!("{create}: {}", out.trim())));
    }
    let ready = Regex::new(&ready).map_err(|e| Fail::Host(e.to_string()))?;
    let first = on_console(&mut p.a, name, &ready, READY_WAIT)?;
    if first.contains("FAILED") {
        return Err(Fail::Guest(format!("before migrating: memdirty: {first}")));
    }
    let ip_b = p.rig.ip(3);
    let (out, refused) = migrate(&mut p.a, &mut p.b, name, &ip_b, live, MIGRATE_WAIT)?;
    let m = parse_migrate(name, &out).map_err(|e| Fail::Guest(format!("`migrate` on A: {e}")))?;
    let guest = match shut_down(&mut p.b, name)? {
        Ok(0) => Ok(()),
        Ok(st) => Err(format!("the guest exited with status {st} on B (memdirty: a page was lost or stale)")),
        Err(e) => Err(e),
    };
    Ok((m, refused, guest))
}

// -- The soak ----------------------------------------------------------------

/// The soak's outcome.
#[derive(Debug, Clone)]
pub struct Soak {
    /// Migrations asked for and done.
    pub asked: u32,
    pub done: Vec<Migration>,
    /// Attempts refused by a destination still busy with an arrival.
    pub refused: u32,
    /// Echoed bytes verified and sent by the client, its longest stall
    /// (ms between two arrivals), and wall time of the stream.
    pub verified: u64,
    pub sent: u64,
    pub max_gap_ms: u64,
    pub stream_s: f64,
    /// Whether the client finished with every sent byte echoed (its last
    /// line), and the first error, if any.
    pub complete: bool,
    pub error: Option<String>,
    /// The time limit cut the rounds short.
    pub timed_out: bool,
}

/// A line of the soak client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientLine {
    /// `progress|done verified=V sent=S maxgap_ms=G`.
    Progress { done: bool, verified: u64, sent: u64, max_gap_ms: u64 },
    /// `MISMATCH ...` or `ERROR ...`.
    Failed(String),
}

/// Parses one line of the soak client's output.
pub fn parse_client_line(line: &str) -> Option<ClientLine> {
    let line = line.trim();
    if line.starts_with("MISMATCH") || line.starts_with("ERROR") {
        return Some(ClientLine::Failed(line.to_string()));
    }
    let c = Regex::new(r"^(progress|done) verified=(\d+) sent=(\d+) maxgap_ms=(\d+)$").ok()?.captures(line)?;
    Some(ClientLine::Progress {
        done: &c[1] == "done",
        verified: c[2].parse().ok()?,
        sent: c[3].parse().ok()?,
        max_gap_ms: c[4].parse().ok()?,
    })
}

/// The soak client (`python3 -c`, args: host port rate seed): a sender
/// thread paced at `rate` bytes/s (at most one second of catch-up after a
/// stall) writes 16 KiB blocks of a seeded pseudo-random stream until its
/// stdin closes, then half-closes; the main thread reads the echo and
/// compares every byte against the same stream. Prints `progress` lines
/// about five times a second, then `done` (exit 0 if everything sent came
/// back), or `MISMATCH`/`ERROR` (exit 1/3).
pub fn client_script() -> String {
    "import random, socket, sys, threading, time\n\
     host, port, rate, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])\n\
     BLOCK = 16384\n\
     def block(k):\n\
     \x20   return random.Random(seed * 1000003 + k).randbytes(BLOCK)\n\
     s = socket.create_connection((host, port), timeout=30)\n\
     s.settimeout(120)\n\
     stop = threading.Event()\n\
     st = {'sent': 0, 'err': None, 'gap': 0.0}\n\
     def watch():\n\
     \x20   sys.stdin.buffer.read()\n\
     \x20   stop.set()\n\
     def send():\n\
     \x20   k, tokens, last = 0, 0.0, time.monotonic()\n\
     \x20   try:\n\
     \x20       while not stop.is_set():\n\
     \x20           now = time.monotonic()\n\
     \x20           tokens, last = min(tokens + (now - last) * rate, float(rate)), now\n\
     \x20           if tokens < BLOCK:\n\
     \x20               time.sleep((BLOCK - tokens) / rate)\n\
     \x20               continue\n\
     \x20           s.sendall(block(k))\n\
     \x20           k += 1\n\
     \x20           st['sent'] += BLOCK\n\
     \x20           tokens -= BLOCK\n\
     \x20       s.shutdown(socket.SHUT_WR)\n\
     \x20   except OSError as e:\n\
     \x20       st['err'] = 'send: %s' % e\n\
     \x20       stop.set()\n\
     def line(kind, verified):\n\
     \x20   print('%s verified=%d sent=%d maxgap_ms=%d' % (kind, verified, st['sent'], st['gap'] * 1000), flush=True)\n\
     threading.Thread(target=watch, daemon=True).start()\n\
     threading.Thread(target=send, daemon=True).start()\n\
     expected, ek, verified = bytearray(), 0, 0\n\
     last_rx = last_print = time.monotonic()\n\
     while True:\n\
     \x20   try:\n\
     \x20       data = s.recv(262144)\n\
     \x20   except OSError as e:\n\
     \x20       print('ERROR recv after %d bytes: %s' % (verified, e), flush=True)\n\
     \x20       sys.exit(3)\n\
     \x20   now = time.monotonic()\n\
     \x20   if not data:\n\
     \x20       break\n\
     \x20   if not stop.is_set():\n\
     \x20       st['gap'] = max(st['gap'], now - last_rx)\n\
     \x20   last_rx = now\n\
     \x20   while len(expected) < len(data):\n\
     \x20       expected += block(ek)\n\
     \x20       ek += 1\n\
     \x20   if expected[:len(data)] != data:\n\
     \x20       i = next(i for i in range(len(data)) if data[i] != expected[i])\n\
     \x20       print('MISMATCH at byte %d of the stream' % (verified + i), flush=True)\n\
     \x20       sys.exit(1)\n\
     \x20   del expected[:len(data)]\n\
     \x20   verified += len(data)\n\
     \x20   if now - last_print >= 0.2:\n\
     \x20       line('progress', verified)\n\
     \x20       last_print = now\n\
     if st['err']:\n\
     \x20   print('ERROR %s after %d bytes verified' % (st['err'], verified), flush=True)\n\
     \x20   sys.exit(3)\n\
     line('done', verified)\n\
     sys.exit(0 if verified == st['sent'] else 2)\n"
        .to_string()
}

/// What the client reported so far.
#[derive(Debug, Default)]
struct ClientState {
    verified: u64,
    sent: u64,
    max_gap_ms: u64,
    done: bool,
    failed: Option<String>,
    /// Its stdout closed (it exited).
    eof: bool,
}

/// The soak client running in the rig; dropping it kills it.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    state: Arc<(Mutex<ClientState>, Condvar)>,
    started: Instant,
}

impl Client {
    fn start(rig: &Rig, ip: &str) -> Result<Client, String> {
        let python = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
        let script = client_script();
        let (port, rate) = (ECHO_PORT.to_string(), SOAK_RATE.to_string());
        let mut child = rig
            .exec(&[python, "-c", &script, ip, &port, &rate, "7"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the soak client: {e}"))?;
        let state = Arc::new((Mutex::new(ClientState::default()), Condvar::new()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let s = Arc::clone(&state);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut st = s.0.lock().unwrap_or_else(|p| p.into_inner());
                match parse_client_line(&line) {
                    Some(ClientLine::Progress { done, verified, sent, max_gap_ms }) => {
                        (st.verified, st.sent, st.max_gap_ms) = (verified, sent, max_gap_ms);
                        st.done |= done;
                    }
                    Some(ClientLine::Failed(why)) => {
                        st.failed.get_or_insert(why);
                    }
                    None => {}
                }
                s.1.notify_all();
            }
            s.0.lock().unwrap_or_else(|p| p.into_inner()).eof = true;
            s.1.notify_all();
        });
        Ok(Client { child, stdin, state, started: Instant::now() })
    }

    /// Waits up to `limit` (scaled) until `cond` holds or the client
    /// failed or exited: the state's (verified, failure).
    fn wait(&self, limit: Duration, cond: impl Fn(&ClientState) -> bool) -> (u64, Result<(), String>) {
        let deadline = Instant::now() + scaled(limit);
        let mut st = self.state.0.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(f) = &st.failed {
                return (st.verified, Err(format!("the client: {f}")));
            }
            if cond(&st) {
                return (st.verified, Ok(()));
            }
            if st.eof {
                return (st.verified, Err(format!("the client exited early at {} bytes verified", st.verified)));
            }
            let now = Instant::now();
            if now >= deadline {
                return (st.verified, Err(format!("no echo progress within {limit:?} (at {} bytes)", st.verified)));
            }
            st = self.state.1.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn verified(&self) -> u64 {
        self.state.0.lock().unwrap_or_else(|p| p.into_inner()).verified
    }

    /// Closes its stdin (it stops sending and half-closes) and waits for
    /// its last line and exit.
    fn finish(&mut self, limit: Duration) -> Result<(), String> {
        self.stdin = None;
        let (_, r) = self.wait(limit, |st| st.done && st.eof);
        r?;
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("the client ended with {s}")),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)), // reaping
                Ok(None) => return Err("the client did not exit".into()),
                Err(e) => return Err(format!("waiting for the client: {e}")),
            }
        }
    }

    fn snapshot(&self) -> (u64, u64, u64, bool) {
        let st = self.state.0.lock().unwrap_or_else(|p| p.into_inner());
        (st.verified, st.sent, st.max_gap_ms, st.done)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_soak(p: &mut Pair, rounds: u32, limit: Duration) -> Result<Soak, Fail> {
    let guest_ip = p.rig.ip(ECHO_HOST);
    let ips = [p.rig.ip(2), p.rig.ip(3)];
    let create = format!(
        "create echo-server name=echo vif=mac={ECHO_MAC} extra=\"ip={guest_ip}/24 gw={} port={ECHO_PORT}\"",
        p.rig.bridge_ip()
    );
    let out = p.a.command(&create, timeouts::COMMAND)?;
    if !out.contains("created domain") {
        return Err(Fail::Guest(format!("{create}: {}", out.trim())));
    }
    p.rig.wait_ping(&guest_ip, Duration::from_secs(20))?;
    let mut client = Client::start(&p.rig, &guest_ip).map_err(Fail::Guest)?;
    let (_, first) = client.wait(Duration::from_secs(30), |st| st.verified >= SOAK_PROGRESS);
    first.map_err(|e| Fail::Guest(format!("before migrating: {e}")))?;
    let deadline = Instant::now() + scaled(limit);
    let (mut done, mut error, mut timed_out, mut refused) = (Vec::new(), None, false, 0);
    let mut here = 0;
    for n in 1..=rounds {
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        let there = 1 - here;
        let cmd = format!("migrate --live echo {}", ips[there]);
        eprintln!("bench: soak migration {n}/{rounds}: {cmd} on host {}", ["A", "B"][here]);
        let (src, dst) = if here == 0 { (&mut p.a, &mut p.b) } else { (&mut p.b, &mut p.a) };
        let (out, r) = migrate(src, dst, "echo", &ips[there], true, SOAK_MIGRATE_WAIT)?;
        refused += r;
        match parse_migrate("echo", &out) {
            Ok(m) => done.push(m),
            Err(e) => {
                error = Some(format!("migration {n} ({cmd} on host {}): {e}", ["A", "B"][here]));
                break;
            }
        }
        here = there;
        let v0 = client.verified();
        let (_, r) = client.wait(SOAK_PROGRESS_WAIT, |st| st.verified >= v0 + SOAK_PROGRESS);
        if let Err(e) = r {
            error = Some(format!("after migration {n}: {e}"));
            break;
        }
    }
    let stream_s = client.started.elapsed().as_secs_f64();
    let complete = match client.finish(Duration::from_secs(120)) {
        Ok(()) => true,
        Err(e) => {
            error.get_or_insert(format!("ending the stream: {e}"));
            false
        }
    };
    let (verified, sent, max_gap_ms, _) = client.snapshot();
    Ok(Soak { asked: rounds, done, refused, verified, sent, max_gap_ms, stream_s, complete, error, timed_out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_migrate_output() {
        let t = "migrate: m16-1 (domain 1) to 10.77.0.3 (live)\n\
                 migrate: round 1: 4096 pages, 16.1 MiB in 1500 ms (10.7 MiB/s)\n\
                 migrate: round 2: 12 pages, 0.0 MiB in 3 ms (15.0 MiB/s)\n\
                 migrate: m16-1 done: live, 3 round(s), 4120 pages, 16.2 MiB sent, downtime 40 ms, total 1.612 s, now domain 1 there\n";
        let m = parse_migrate("m16-1", t).unwrap();
        assert_eq!((m.live, m.rounds, m.pages, m.downtime_ms, m.new_id), (true, 3, 4120, 40, 1));
        assert_eq!((m.mib_sent, m.total_s), (16.2, 1.612));
        assert_eq!(m.round_lines.len(), 2);
        assert_eq!(m.round_lines[0], Round { n: 1, pages: 4096, zero: None, mib: 16.1, ms: 1500, rate: 10.7 });
        let t2 = t.replace("round 2: 12 pages,", "round 2: 12 pages (3 zero),");
        let m = parse_migrate("m16-1", &t2).unwrap();
        assert_eq!(m.round_lines[1], Round { n: 2, pages: 12, zero: Some(3), mib: 0.0, ms: 3, rate: 15.0 });
        let e = parse_migrate("m16-1", "error: migrate m16-1: refused: not enough memory; the domain stays here\n");
        assert_eq!(e.unwrap_err(), "error: migrate m16-1: refused: not enough memory; the domain stays here");
        assert!(parse_migrate("x", "garbage").unwrap_err().contains("no summary"));
        // Another domain's summary does not count.
        assert!(parse_migrate("m1", &t.replace("m16-1 done", "m2 done")).is_err());
    }

    #[test]
    fn parses_client_lines() {
        assert_eq!(
            parse_client_line("progress verified=16384 sent=32768 maxgap_ms=15\n"),
            Some(ClientLine::Progress { done: false, verified: 16384, sent: 32768, max_gap_ms: 15 })
        );
        assert_eq!(
            parse_client_line("done verified=5 sent=5 maxgap_ms=0"),
            Some(ClientLine::Progress { done: true, verified: 5, sent: 5, max_gap_ms: 0 })
        );
        assert_eq!(
            parse_client_line("MISMATCH at byte 7 of the stream"),
            Some(ClientLine::Failed("MISMATCH at byte 7 of the stream".into()))
        );
        assert_eq!(parse_client_line("hello"), None);
    }

    #[test]
    fn escapes_names() {
        assert_eq!(regex_escape("m16-1"), "m16\\-1");
        assert!(Regex::new(&regex_escape("a.b(c)")).unwrap().is_match("a.b(c)"));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    /// The client against a Python echo server on a peer: the stream is
    /// verified end to end and stopping it ends with `done`.
    #[test]
    fn client_verifies_an_echo() {
        let Some(rig) = Rig::up_or_skip(0, "client_verifies_an_echo") else { return };
        let peer = netbench::Peer::up(&rig, 200).unwrap();
        let _server = peer.spawn_sh(&netbench::python_echo_script(ECHO_PORT)).unwrap();
        peer.wait_listening(ECHO_PORT, Duration::from_secs(10)).unwrap();
        let mut c = Client::start(&rig, peer.ip()).unwrap();
        let (_, r) = c.wait(Duration::from_secs(30), |st| st.verified >= SOAK_PROGRESS);
        r.unwrap();
        c.finish(Duration::from_secs(30)).unwrap();
        let (verified, sent, _, done) = c.snapshot();
        assert!(done && verified == sent && verified >= SOAK_PROGRESS, "{verified} {sent}");
    }
}
