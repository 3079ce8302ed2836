//! `memdirty`: keeps memory changing, for live-migration tests.
//!
//! Allocates `mib` MiB (default 8), fills every 4 KiB page with a pattern
//! derived from `seed` and remembers its checksum, then dirties `rate` MiB/s
//! (default 4; 0 = none) by writing one word (the first) of each page in
//! turn, paced with `wait_until` in 10 ms steps. Every `report_s` seconds
//! (default 5) it prints statistics and re-verifies everything:
//!
//! ```text
//! memdirty: start name=<name> mib=<m> rate=<r> seed=<s> pages=<n>
//! memdirty: verify ok
//! memdirty: t=<s> dirtied=<pages> pass=<p> rate_kib=<KiB/s> heap_used=<bytes>
//! memdirty: verify ok                 (or: verify FAILED bad=<words> ...)
//! memdirty: shutting down
//! ```
//!
//! The verification checks the checksum of the pattern words and, word by
//! word, that each page's first word holds the stamp of the last pass that
//! wrote it: a page lost or rolled back by a migration shows up as FAILED.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use guest_abi::rt::prelude::*;

guest_abi::main!(memdirty);

const PAGE_WORDS: usize = 4096 / 8;
const TICK_NS: u64 = 10_000_000;

fn mix(mut z: u64) -> u64 {
    // splitmix64's finalizer.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The pattern word `w` (>= 1) of page `p`.
fn pattern(seed: u64, p: usize, w: usize) -> u64 {
    mix(seed ^ ((p as u64) << 9 | w as u64))
}

/// What the dirty word of page `p` holds after pass `pass` wrote it.
fn stamp(pass: u64, p: usize) -> u64 {
    (pass << 32) | p as u64
}

struct Region<'a> {
    pages: &'a mut [u64],
    n: usize,
    seed: u64,
    checksum: u64,
    /// Current pass (1, 2, ...) and the next page it will write.
    pass: u64,
    cursor: usize,
}

impl Region<'_> {
    fn fill(&mut self) {
        let mut sum = 0u64;
        for p in 0..self.n {
            let page = &mut self.pages[p * PAGE_WORDS..(p + 1) * PAGE_WORDS];
            page[0] = stamp(0, p);
            for (w, word) in page.iter_mut().enumerate().skip(1) {
                *word = pattern(self.seed, p, w);
                sum = sum.rotate_left(1) ^ *word;
            }
        }
        self.checksum = sum;
    }

    fn dirty(&mut self, count: u64) {
        for _ in 0..count {
            let p = self.cursor;
            self.pages[p * PAGE_WORDS] = stamp(self.pass, p);
            self.cursor += 1;
            if self.cursor == self.n {
                self.cursor = 0;
                self.pass += 1;
            }
        }
    }

    /// Number of wrong words (pattern checksum mismatch counts as one more),
    /// and the first wrong (page, word).
    fn verify(&self) -> (u64, Option<(usize, usize)>) {
        let mut sum = 0u64;
        let mut bad = 0u64;
        let mut first = None;
        for p in 0..self.n {
            let page = &self.pages[p * PAGE_WORDS..(p + 1) * PAGE_WORDS];
            let want = if p < self.cursor { stamp(self.pass, p) } else { stamp(self.pass - 1, p) };
            let mut check = |ok: bool, w: usize| {
                if !ok {
                    bad += 1;
                    first.get_or_insert((p, w));
                }
            };
            check(page[0] == want, 0);
            for (w, &word) in page.iter().enumerate().skip(1) {
                sum = sum.rotate_left(1) ^ word;
                check(word == pattern(self.seed, p, w), w);
            }
        }
        if sum != self.checksum {
            bad += 1;
        }
        (bad, first)
    }
}

fn report_verify(r: &Region<'_>) -> bool {
    match r.verify() {
        (0, _) => {
            println!("memdirty: verify ok");
            true
        }
        (bad, first) => {
            let (p, w) = first.unwrap_or((0, 0));
            println!(
                "memdirty: verify FAILED bad={bad} first_page={p} first_word={w} pass={} cursor={}",
                r.pass, r.cursor
            );
            false
        }
    }
}

fn memdirty(env: &Env) -> i32 {
    let mib = env.arg_u64_or("mib", 8).max(1);
    let rate = env.arg_u64_or("rate", 4);
    let seed = env.arg_u64_or("seed", 0x5eed);
    let report_s = env.arg_u64_or("report_s", 5).max(1);
    let n = (mib * 256) as usize;
    println!("memdirty: start name={} mib={mib} rate={rate} seed={seed} pages={n}", env.name());

    // One extra page of words so the region can start page-aligned.
    let mut backing: Vec<u64> = Vec::new();
    if backing.try_reserve_exact((n + 1) * PAGE_WORDS).is_err() {
        println!("memdirty: cannot allocate {mib} MiB");
        return 1;
    }
    backing.resize((n + 1) * PAGE_WORDS, 0);
    let skip = backing.as_ptr().align_offset(4096);
    let mut r = Region { pages: &mut backing[skip..skip + n * PAGE_WORDS], n, seed, checksum: 0, pass: 1, cursor: 0 };
    r.fill();
    let mut ok = report_verify(&r);

    let pages_per_s = rate * 256;
    let start = now();
    let report_ns = report_s * 1_000_000_000;
    let mut next_report = start + report_ns;
    let (mut done, mut last_done, mut last_t) = (0u64, 0u64, start);
    let mut tick = 0u64;
    loop {
        tick += 1;
        let deadline = start + tick * TICK_NS;
        let mut ev = 0;
        while now() < deadline {
            ev |= wait_until(deadline);
            if ev & event::SHUTDOWN != 0 {
                break;
            }
        }
        if ev & event::SHUTDOWN != 0 {
            ok &= report_verify(&r);
            println!("memdirty: shutting down");
            return if ok { 0 } else { 1 };
        }
        let t = now();
        // Pages due by now; after a long pause catch up at most one second.
        let target = (u128::from(pages_per_s) * u128::from(t - start) / 1_000_000_000) as u64;
        done = done.max(target.saturating_sub(pages_per_s));
        let count = target.saturating_sub(done);
        r.dirty(count);
        done += count;
        if t >= next_report {
            let dt = (t - last_t).max(1);
            let rate_kib = u128::from(done - last_done) * 4 * 1_000_000_000 / u128::from(dt);
            println!(
                "memdirty: t={} dirtied={done} pass={} rate_kib={rate_kib} heap_used={}",
                (t - start) / 1_000_000_000,
                r.pass,
                guest_abi::rt::heap_stats().used
            );
            ok &= report_verify(&r);
            (last_done, last_t) = (done, t);
            while next_report <= t {
                next_report += report_ns;
            }
        }
        // After a pause, skip the missed ticks (the deadlines stay on the
        // grid of the start time).
        tick = tick.max((t - start) / TICK_NS);
    }
}
