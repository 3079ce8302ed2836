//! `smp`: starts vCPUs 1..N (N = the domain's vCPU count) with
//! `spawn_vcpu`; each counts in a shared atomic, while vCPU 0 prints the
//! counts every second for `secs` seconds (default 3):
//!
//! ```text
//! smp: start name=<name> vcpus=<N> secs=<s>
//! smp: vcpu <i> up (hypercall id <j>, runtime id <k>)
//! smp: t=<s> counts=<c0>,<c1>,...
//! smp: all <N> vCPUs ran            (or: smp: vCPUs that did not run: <list>)
//! ```
//! Exit status 0 if every vCPU's count advanced, 1 otherwise.
#![no_std]
#![no_main]

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use guest_abi::rt::prelude::*;
use guest_abi::rt::StackWriter;
use guest_abi::MAX_VCPUS;

guest_abi::main!(smp);

static COUNTS: [AtomicU64; MAX_VCPUS as usize] = [const { AtomicU64::new(0) }; MAX_VCPUS as usize];
static STOP: AtomicBool = AtomicBool::new(false);

fn worker(id: u64) {
    let hc = vcpu_id();
    let rt = current_vcpu();
    println!("smp: vcpu {id} up (hypercall id {hc}, runtime id {})", rt.map_or(-1, i64::from));
    if u64::from(hc) != id || rt != Some(hc) {
        println!("smp: vcpu {id}: id MISMATCH");
    }
    let mut x = id;
    while !STOP.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = core::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        COUNTS[id as usize].fetch_add(1, Ordering::Relaxed);
    }
}

fn print_counts(t: u64, n: u32) {
    let mut line: StackWriter<_, 1024> = StackWriter::new(guest_abi::rt::write_all);
    let _ = write!(line, "smp: t={t} counts=");
    for v in 0..n {
        let sep = if v + 1 < n { "," } else { "\n" };
        let _ = write!(line, "{}{sep}", COUNTS[v as usize].load(Ordering::Relaxed));
    }
    line.finish();
}

fn smp(env: &Env) -> i32 {
    let n = env.vcpus().clamp(1, MAX_VCPUS);
    let secs = env.arg_u64_or("secs", 3).max(1);
    println!("smp: start name={} vcpus={n} secs={secs}", env.name());
    let mut started = 1;
    for v in 1..n {
        if let Err(e) = spawn_vcpu(v, worker, u64::from(v)) {
            println!("smp: cannot start vCPU {v}: {e:?}");
            break;
        }
        started += 1;
    }
    let start = now();
    for s in 1..=secs {
        COUNTS[0].fetch_add(1, Ordering::Relaxed);
        let deadline = start + s * 1_000_000_000;
        let mut ev = 0;
        while now() < deadline && ev & event::SHUTDOWN == 0 {
            ev |= wait_until(deadline);
        }
        if ev & event::SHUTDOWN != 0 {
            STOP.store(true, Ordering::Relaxed);
            println!("smp: shutting down");
            return 0;
        }
        print_counts(s, n);
    }
    STOP.store(true, Ordering::Relaxed);
    let mut line: StackWriter<_, 1024> = StackWriter::new(guest_abi::rt::write_all);
    let mut missing = 0;
    for v in 0..n {
        if COUNTS[v as usize].load(Ordering::Relaxed) == 0 {
            if missing == 0 {
                let _ = write!(line, "smp: vCPUs that did not run:");
            }
            let _ = write!(line, " {v}");
            missing += 1;
        }
    }
    if missing == 0 && started == n {
        println!("smp: all {n} vCPUs ran");
        0
    } else {
        let _ = writeln!(line);
        line.finish();
        1
    }
}
