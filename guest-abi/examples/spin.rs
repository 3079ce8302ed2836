//! `spin`: a CPU-bound guest. Runs a linear congruential generator flat out;
//! every ~1M iterations it reads the clock (time page, no hypercall) and
//! takes its events (one hypercall), and every `report_s` seconds (default
//! 5) it prints
//!
//! ```text
//! spin: t=<s> iters=<total> rate=<iterations per second> x=<lcg state>
//! ```
//!
//! With `yields=N` it instead yields N times, prints
//! `spin: N yields in <ns> ns, <ns> ns/yield` and exits: with two such
//! domains side by side every yield is a domain switch (the bench's figure).
#![no_std]
#![no_main]

use guest_abi::rt::prelude::*;

guest_abi::main!(spin);

/// Iterations between looks at the clock and the events.
const BATCH: u64 = 1 << 20;

fn spin(env: &Env) -> i32 {
    let report_s = env.arg_u64_or("report_s", 5).max(1);
    let report_ns = report_s.saturating_mul(1_000_000_000);
    let mut x = env.arg_u64_or("seed", 1);
    println!("spin: start name={} report_s={report_s} seed={x}", env.name());
    if let Some(n) = env.arg_u64("yields") {
        let t0 = now();
        for _ in 0..n {
            yield_now();
        }
        let dt = now() - t0;
        println!("spin: {n} yields in {dt} ns, {} ns/yield", dt / n.max(1));
        return 0;
    }
    let start = now();
    let mut next_report = start.saturating_add(report_ns);
    let (mut iters, mut last_iters, mut last_t) = (0u64, 0u64, start);
    loop {
        for _ in 0..BATCH {
            // Knuth's MMIX LCG.
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        }
        x = core::hint::black_box(x);
        iters += BATCH;
        if events() & event::SHUTDOWN != 0 {
            println!("spin: total iters={iters} x={x:#018x}");
            println!("spin: shutting down");
            return 0;
        }
        let t = now();
        if t >= next_report {
            let dt = (t - last_t).max(1);
            let rate = (u128::from(iters - last_iters) * 1_000_000_000 / u128::from(dt)) as u64;
            println!("spin: t={} iters={iters} rate={rate} x={x:#018x}", (t - start) / 1_000_000_000);
            (last_iters, last_t) = (iters, t);
            while next_report <= t {
                next_report = next_report.saturating_add(report_ns);
            }
        }
    }
}
