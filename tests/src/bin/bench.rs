//! `bench`: size and boot-time figures for rhv as a markdown table.
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

use systest::qemu::kvm_usable;
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

fn kvm_iso(ctx: &mut Ctx) -> Cell {
    if std::env::var("RHV_BENCH_KVM_ISO").is_ok_and(|v| v == "1") {
        wall(ctx, Setup::KvmIso)
    } else {
        Cell::skipped("kvm_pvm: GRUB ~60 s; RHV_BENCH_KVM_ISO=1 runs it")
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
    let mut ctx = Ctx { runs, cache: HashMap::new() };
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
