//! The console contract of the rhv kernel (banner, prompt, command output
//! formats) as patterns and parsers, so tests and the bench read it alike.
use std::time::Duration;

use regex_lite::Regex;

/// The shell prompt; no newline follows it.
pub const PROMPT: &str = "rhv> ";

/// The boot banner, printed once when the shell is ready.
pub const BANNER_RE: &str = r"rhv v(\S+) \(build (\S+)\) up in ([0-9.]+) ms";

/// A size as the kernel prints it: `253.4 MiB`, `12.0 KiB`, `512 B`.
pub const SIZE_RE: &str = r"[0-9]+(?:\.[0-9]+)? (?:B|KiB|MiB|GiB|TiB)";

/// Compiles one of this module's patterns (they are known to be valid).
pub fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad pattern {pattern:?}: {e}"))
}

/// The parsed boot banner.
#[derive(Debug, Clone, PartialEq)]
pub struct Banner {
    /// e.g. `0.1.0`.
    pub version: String,
    /// The build id (a git hash, maybe with `-dirty`).
    pub build: String,
    /// Kernel entry to prompt, as the kernel measured it.
    pub ms: f64,
}

/// Finds and parses the banner in `text`.
pub fn parse_banner(text: &str) -> Option<Banner> {
    let c = re(BANNER_RE).captures(text)?;
    Some(Banner { version: c[1].to_string(), build: c[2].to_string(), ms: c[3].parse().ok()? })
}

/// `uptime`'s output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uptime {
    /// Time since boot.
    pub up: Duration,
    /// The boot time as Unix seconds (UTC).
    pub since_unix: i64,
}

/// Parses `up H:MM:SS.mmm, since YYYY-MM-DD HH:MM:SS UTC`.
pub fn parse_uptime(text: &str) -> Option<Uptime> {
    let c =
        re(r"up (\d+):(\d\d):(\d\d)\.(\d{3}), since (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) UTC").captures(text)?;
    let n = |i: usize| c[i].parse::<i64>().ok();
    let (h, m, s, ms) = (n(1)?, n(2)?, n(3)?, n(4)?);
    if m > 59 || s > 59 {
        return None;
    }
    let up = Duration::from_millis(((h * 60 + m) * 60 + s) as u64 * 1000 + ms as u64);
    let (year, month, day) = (n(5)?, n(6)?, n(7)?);
    let (hh, mm, ss) = (n(8)?, n(9)?, n(10)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let since_unix = days_from_civil(year, month, day) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(Uptime { up, since_unix })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// well-known algorithm, written out here).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a size like `253.4 MiB` into bytes.
pub fn parse_size(text: &str) -> Option<f64> {
    let (num, unit) = text.trim().split_once(' ')?;
    let num: f64 = num.parse().ok()?;
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(num * scale)
}

/// `mem`'s output, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mem {
    /// Physical memory in all.
    pub total: f64,
    /// Free physical memory.
    pub free: f64,
    /// Used physical memory.
    pub used: f64,
    /// Kernel heap in use.
    pub heap_used: f64,
    /// Kernel heap size.
    pub heap_size: f64,
}

/// Parses `memory: total X, free Y, used Z` and `heap: used A of B`.
pub fn parse_mem(text: &str) -> Option<Mem> {
    let mem = re(&format!(r"(?m)^memory: total ({SIZE_RE}), free ({SIZE_RE}), used ({SIZE_RE})\s*$")).captures(text)?;
    let heap = re(&format!(r"(?m)^heap: used ({SIZE_RE}) of ({SIZE_RE})\s*$")).captures(text)?;
    Some(Mem {
        total: parse_size(&mem[1])?,
        free: parse_size(&mem[2])?,
        used: parse_size(&mem[3])?,
        heap_used: parse_size(&heap[1])?,
        heap_size: parse_size(&heap[2])?,
    })
}

/// One `dmesg` line: `[    0.012345] INFO  message`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Seconds since boot.
    pub time: f64,
    /// TRACE, DEBUG, INFO, WARN or ERROR.
    pub level: String,
    /// The message.
    pub message: String,
}

/// Parses every well-formed log line in `text`.
pub fn parse_dmesg(text: &str) -> Vec<LogLine> {
    let line = re(r"^\[\s*(\d+\.\d{6})\] (TRACE|DEBUG|INFO|WARN|ERROR)\s+(\S.*?)\s*$");
    text.lines()
        .filter_map(|l| {
            let c = line.captures(l)?;
            Some(LogLine { time: c[1].parse().ok()?, level: c[2].to_string(), message: c[3].to_string() })
        })
        .collect()
}

/// Every command: `help` must list exactly these (a new command is added
/// here too, or the help test fails).
pub const COMMANDS: [&str; 37] = [
    "help",
    "info",
    "dmesg",
    "uptime",
    "mem",
    "interrupts",
    "loglevel",
    "create",
    "list",
    "console",
    "pause",
    "unpause",
    "shutdown",
    "destroy",
    "rename",
    "migrate",
    "save",
    "restore",
    "vcpu-list",
    "sched-credit",
    "block-list",
    "network-list",
    "lspci",
    "ifconfig",
    "ping",
    "netbench",
    "mount",
    "umount",
    "df",
    "ls",
    "cat",
    "cp",
    "sha256sum",
    "nfsbench",
    "reboot",
    "poweroff",
    "crash",
];

/// The count on the `interrupts` line whose source starts with `source`.
pub fn interrupt_count(out: &str, source: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let (_vector, count) = (words.next()?, words.next()?.parse().ok()?);
        let rest: Vec<&str> = words.collect();
        rest.join(" ").starts_with(source).then_some(count)
    })
}

/// A pattern for `name`'s line in `help` output (the name first on a line,
/// then a usage/summary). Never matches the echo of a typed command.
pub fn help_line_re(name: &str) -> String {
    format!(r"(?m)^[ \t]*{name}\b[ \t]+\S")
}

/// Checks heartbeat output (`heartbeat NAME seq=N t=MS.mmm ...` lines): at
/// least `min_beats` beats, consecutive sequence numbers, and no gap between
/// beats of `max_gap_ms` or more. Panics with the offending pair.
pub fn assert_heartbeat_steady(text: &str, min_beats: usize, max_gap_ms: f64) {
    let beat = re(r"seq=(\d+) t=(\d+)\.(\d+)");
    let beats: Vec<(u64, f64)> = beat
        .captures_iter(text)
        .map(|c| (c[1].parse().unwrap_or(0), format!("{}.{}", &c[2], &c[3]).parse().unwrap_or(0.0)))
        .collect();
    assert!(beats.len() >= min_beats, "only {} beats:\n{text}", beats.len());
    for w in beats.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "a beat is missing: {w:?}");
        assert!(w[1].1 - w[0].1 < max_gap_ms, "heartbeat gap of {:.1} ms: {w:?}", w[1].1 - w[0].1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner() {
        let b = parse_banner("junk\r\nrhv v0.1.0 (build 1a2b3c4d5e6f-dirty) up in 12.345 ms\r\nrhv> ").unwrap();
        assert_eq!(b.version, "0.1.0");
        assert_eq!(b.build, "1a2b3c4d5e6f-dirty");
        assert!((b.ms - 12.345).abs() < 1e-9);
        assert!(parse_banner("rhv v0.1.0 up in 1 ms").is_none());
    }

    #[test]
    fn uptime() {
        let u = parse_uptime("up 1:02:03.456, since 2026-11-27 05:30:00 UTC").unwrap();
        assert_eq!(u.up, Duration::from_millis(3_723_456));
        assert_eq!(u.since_unix, 1_795_757_400);
        assert!(parse_uptime("up 0:61:00.000, since 2026-11-27 05:30:00 UTC").is_none());
        assert!(parse_uptime("up 0:00:00.000, since 2026-13-27 05:30:00 UTC").is_none());
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn sizes_and_mem() {
        assert_eq!(parse_size("12.0 KiB"), Some(12288.0));
        assert_eq!(parse_size("512 B"), Some(512.0));
        assert_eq!(parse_size("1.5 GiB"), Some(1.5 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_size("3 MB"), None);
        let m =
            parse_mem("memory: total 253.4 MiB, free 250.0 MiB, used 3.4 MiB\r\nheap: used 12.0 KiB of 1.0 MiB\r\n")
                .unwrap();
        assert!((m.total - 253.4 * 1048576.0).abs() < 1.0);
        assert_eq!(m.heap_used, 12288.0);
        assert_eq!(m.heap_size, 1048576.0);
        assert!(parse_mem("memory: total 1 MiB\nheap: used 1 B of 2 B").is_none());
    }

    #[test]
    fn dmesg_lines() {
        let lines = parse_dmesg(
            "[    0.012345] INFO  rhv starting\n[    1.500000] WARN  cmdline: unknown option 'x' ignored\nnoise\n[0.1] INFO short",
        );
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].time, 0.012345);
        assert_eq!(lines[1].level, "WARN");
        assert_eq!(lines[1].message, "cmdline: unknown option 'x' ignored");
    }

    #[test]
    fn help_lines() {
        let r = re(&help_line_re("poweroff"));
        assert!(r.is_match("help\n  poweroff        power off (ACPI S5)\n"));
        assert!(r.is_match("poweroff - ACPI S5 power off"));
        assert!(!r.is_match("rhv> poweroff"));
        assert!(!r.is_match("poweroff\n"));
        assert!(!r.is_match("poweroff\r\n"));
        assert!(r.is_match("\r\n  poweroff   off (ACPI S5)\r\n"));
        assert!(!r.is_match("  poweroffx  blah"));
    }
}
