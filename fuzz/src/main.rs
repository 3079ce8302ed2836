//! `rhv-fuzz`: fuzzes rhv's decoders for a bounded time (see the library
//! documentation). Exits non-zero (by aborting) when a decoder panics,
//! after printing the target and the input.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rhv_fuzz::{exec, find, fuzz, install_panic_hook, select, unhex, Target, TARGETS};

const USAGE: &str = "\
usage: rhv-fuzz [--seconds N | --total-seconds N] [--seed S] [-j JOBS] [-v] [TARGET...]
       rhv-fuzz --list
       rhv-fuzz --repro TARGET HEX

Fuzzes each TARGET (a name from --list, or a prefix such as nfs3::; none
means all) for N seconds (default 2), or so that the whole run takes N
seconds, JOBS targets at a time (default: one per CPU), and prints per
target: execs, corpus size, outcome classes, time. S (default: from the
clock, printed) fixes each target's mutation sequence. -v also lists each
target's outcome classes. --repro runs one input given in hex (as a panic
report prints it) and prints its outcome.";

struct Args {
    per_target: Option<f64>,
    total: Option<f64>,
    seed: Option<u64>,
    jobs: Option<usize>,
    verbose: bool,
    list: bool,
    repro: Option<(String, String)>,
    patterns: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        per_target: None,
        total: None,
        seed: None,
        jobs: None,
        verbose: false,
        list: false,
        repro: None,
        patterns: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    let seconds = |v: Option<String>, opt: &str| -> Result<f64, String> {
        let v = v.ok_or(format!("{opt} needs a value"))?;
        match v.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
            _ => Err(format!("{opt}: '{v}' is not a number of seconds")),
        }
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => a.per_target = Some(seconds(it.next(), "--seconds")?),
            "--total-seconds" => a.total = Some(seconds(it.next(), "--total-seconds")?),
            "--seed" => {
                let v = it.next().ok_or("--seed needs a value")?;
                a.seed = Some(v.parse().map_err(|_| format!("--seed: '{v}' is not a number"))?);
            }
            "-j" | "--jobs" => {
                let v = it.next().ok_or("--jobs needs a value")?;
                a.jobs = Some(v.parse().map_err(|_| format!("--jobs: '{v}' is not a number"))?);
            }
            "-v" | "--verbose" => a.verbose = true,
            "--list" => a.list = true,
            "--repro" => {
                let name = it.next().ok_or("--repro needs a target and a hex input")?;
                let input = it.next().ok_or("--repro needs a target and a hex input")?;
                a.repro = Some((name, input));
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => a.patterns.push(arg),
        }
    }
    if a.per_target.is_some() && a.total.is_some() {
        return Err("give --seconds or --total-seconds, not both".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("rhv-fuzz: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if e.is_empty() { 0 } else { 2 });
        }
    };
    if args.list {
        for t in TARGETS {
            println!("{}", t.name);
        }
        return ExitCode::SUCCESS;
    }
    install_panic_hook();
    if let Some((name, input)) = &args.repro {
        let Some(t) = find(name) else {
            eprintln!("rhv-fuzz: no target {name} (see --list)");
            return ExitCode::from(2);
        };
        let Some(bytes) = unhex(input) else {
            eprintln!("rhv-fuzz: the input is not hex");
            return ExitCode::from(2);
        };
        println!("{}: {}", t.name, exec(t, &bytes));
        return ExitCode::SUCCESS;
    }

    let mut targets: Vec<&'static Target> = Vec::new();
    for p in &args.patterns {
        let found = select(p);
        if found.is_empty() {
            eprintln!("rhv-fuzz: no target matches {p} (see --list)");
            return ExitCode::from(2);
        }
        for t in found {
            if !targets.iter().any(|x| x.name == t.name) {
                targets.push(t);
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().collect();
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, targets.len());
    // With a total budget, each of the ceil(targets / jobs) rounds gets an
    // equal share of it.
    let per = match (args.per_target, args.total) {
        (_, Some(total)) => total / targets.len().div_ceil(jobs) as f64,
        (Some(s), None) => s,
        (None, None) => 2.0,
    };
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64) % 1_000_000_000
    });
    println!(
        "rhv-fuzz: {} targets, {per:.2} s each, {jobs} at a time, seed {seed} (--seed {seed} repeats the mutations)",
        targets.len()
    );
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let execs = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while let Some(t) = targets.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let t0 = Instant::now();
                    let st = fuzz(t, Duration::from_secs_f64(per), seed);
                    let secs = t0.elapsed().as_secs_f64();
                    execs.fetch_add(st.execs, Ordering::Relaxed);
                    let mut report = format!(
                        "{}: {} execs, {} corpus, {} outcome classes, {secs:.1} s ({:.0} execs/s)\n",
                        t.name,
                        st.execs,
                        st.corpus,
                        st.outcomes,
                        st.execs as f64 / secs.max(1e-9)
                    );
                    if args.verbose {
                        for (class, n) in &st.classes {
                            report.push_str(&format!("    {n:>10}  {class}\n"));
                        }
                    }
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(report.as_bytes());
                    let _ = out.flush();
                }
            });
        }
    });
    println!(
        "rhv-fuzz: {} targets, {} execs in {:.1} s, no panics",
        targets.len(),
        execs.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
