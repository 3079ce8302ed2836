//! The README's first command, `scripts/demo`: the seed scenario end to end
//! (an NFS share, two hypervisors, create rx7 from its xl.cfg, a cold
//! migration there and a live one back). Needs root like the other rig
//! tests: without it this prints SKIPPED, and with RHV_RIG_REQUIRED=1 it
//! fails instead.
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use systest::rig::Rig;
use systest::{images, repo_root, scaled, Error, Regex, TempDir};

/// The whole demo takes about 7 s under TCG; this leaves room for a
/// loaded machine.
const DEMO_LIMIT: Duration = Duration::from_secs(300);

#[test]
fn demo_runs_the_seed_scenario() -> Result<(), Error> {
    // The rig convention (root, tools, namespaces), checked by making an
    // empty rig; the demo makes its own.
    let Some(probe) = Rig::up_or_skip(0, "demo_runs_the_seed_scenario") else { return Ok(()) };
    drop(probe);
    images::elf()?;
    let dir = TempDir::new("demo").map_err(|e| Error::Setup(e.to_string()))?;
    let log_path = dir.path().join("demo.log");
    let log = File::create(&log_path).map_err(|e| Error::Setup(format!("{}: {e}", log_path.display())))?;
    let log2 = log.try_clone().map_err(|e| Error::Setup(e.to_string()))?;
    let start = Instant::now();
    // Its own process group, so that a timeout can stop the script, its
    // console driver and both QEMUs together (the script's trap then
    // removes the NFS server, the rig and the files).
    let mut child = Command::new(repo_root().join("scripts/demo"))
        .arg("--no-build")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Setup(format!("cannot run scripts/demo: {e}")))?;
    let limit = scaled(DEMO_LIMIT);
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| Error::Setup(e.to_string()))? {
            break Some(s);
        }
        if start.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100)); // polling a child process, nothing to wait on
    };
    let status = match status {
        Some(s) => s,
        None => {
            let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", child.id())]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            let out = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("scripts/demo did not finish within {limit:?}:\n{out}");
        }
    };
    let out = std::fs::read_to_string(&log_path).unwrap_or_default();
    let took = start.elapsed();
    assert!(status.success(), "scripts/demo failed ({status}) after {took:?}:\n{out}");
    let cold = Regex::new(
        r"(?m)^\[hostA\] migrate: rx7 done: cold, 1 round\(s\), \d+ pages, [0-9.]+ MiB sent, downtime \d+ ms, total [0-9.]+ s, now domain 1 there$",
    )
    .unwrap();
    let live = Regex::new(r"(?m)^\[hostB\] migrate: rx7 done: live, \d+ round\(s\), .* now domain 2 there$").unwrap();
    assert!(cold.is_match(&out), "no cold migration report:\n{out}");
    assert!(live.is_match(&out), "no live migration report:\n{out}");
    assert!(out.contains("demo: PASS"), "{out}");
    // The teardown left nothing behind.
    let rig = Regex::new(r"removed rig (\S+) \((rhv-\S+)\)").unwrap();
    let ns = rig.captures(&out).map(|c| c[2].to_string()).unwrap_or_else(|| panic!("no rig teardown:\n{out}"));
    assert!(!systest::rig::ns_exists(&ns), "{ns} is still there");
    let tmp = Regex::new(r"deleted (/\S+)").unwrap();
    let work = tmp.captures(&out).map(|c| c[1].to_string()).unwrap_or_else(|| panic!("no temp dir removal:\n{out}"));
    assert!(!std::path::Path::new(&work).exists(), "{work} is still there");
    println!("scripts/demo passed in {took:?}:\n{out}");
    Ok(())
}
