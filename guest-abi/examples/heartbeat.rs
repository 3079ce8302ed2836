//! `heartbeat`: prints a numbered line every `period_ms` (default 1000).
//!
//! ```text
//! heartbeat: start name=<name> domid=<id> period_ms=<p>
//! heartbeat: cpuid 1.ecx=<hex> 1.edx=<hex> 7.ebx=<hex>   (with show_cpu=1)
//! heartbeat <name> seq=<n> t=<ms>.<3 digits> wall=<unix s>
//! heartbeat <name> time-changed
//! heartbeat: shutting down
//! ```
//!
//! Beat `n` (1, 2, ...) is due at `start + n * period` on the monotonic
//! clock, so the beats do not drift; `t` is the monotonic time at the beat
//! in milliseconds with three decimals (microseconds), `wall` the Unix time
//! in whole seconds. `seq` never skips: a beat whose time passed while the
//! domain was not running (a migration) is printed as soon as it runs again,
//! so `seq` counts every period since the start. The format is stable
//! (docs/hypercall-abi.md, "Example guests").
#![no_std]
#![no_main]

use guest_abi::rt::prelude::*;

guest_abi::main!(heartbeat);

fn heartbeat(env: &Env) -> i32 {
    let period_ms = env.arg_u64_or("period_ms", 1000).max(1);
    let period_ns = period_ms.saturating_mul(1_000_000);
    let name = match env.name() {
        "" => "-",
        n => n,
    };
    println!("heartbeat: start name={name} domid={} period_ms={period_ms}", env.domid());
    if env.arg_u64_or("show_cpu", 0) == 1 {
        // What the domain's CPU policy lets it see (the cpuid hypercall).
        if let (Ok(l1), Ok(l7)) = (guest_abi::rt::cpuid(1, 0), guest_abi::rt::cpuid(7, 0)) {
            println!("heartbeat: cpuid 1.ecx={:08x} 1.edx={:08x} 7.ebx={:08x}", l1[2], l1[3], l7[1]);
        }
    }
    let start = now();
    let mut seq: u64 = 0;
    loop {
        let deadline = start.saturating_add((seq + 1).saturating_mul(period_ns));
        while now() < deadline {
            let ev = wait_until(deadline);
            if ev & event::SHUTDOWN != 0 {
                println!("heartbeat: shutting down");
                return 0;
            }
            if ev & event::TIME_CHANGED != 0 {
                println!("heartbeat {name} time-changed");
            }
        }
        seq += 1;
        let t = now();
        let wall_s = wall_ns() / 1_000_000_000;
        println!("heartbeat {name} seq={seq} t={}.{:03} wall={wall_s}", t / 1_000_000, (t / 1_000) % 1_000);
    }
}
