//! `rhv-fuzz`: a small, dependency-free mutation fuzzer for the decoders
//! that read untrusted bytes (NFS/MOUNT/portmap/RPC replies from the
//! network, guest ELF images, configuration files from a share, the kernel
//! command line, and for migration: the migration stream, the relocation
//! port's handshake and channel, CPU policy blobs and `cpuid=` strings). It
//! runs on stable Rust: there is no libFuzzer and no coverage
//! instrumentation.
//!
//! How it works: each [`Target`] supplies a few *valid* encodings as seeds
//! and a `run` function that decodes one input and returns its
//! [`Outcome`], a short class such as `ok`, `ok: NFSERR_STALE: stale file
//! handle` or `err: xdr: fattr.type has unknown value ` (numbers stripped,
//! see [`class`]). [`fuzz`] mutates corpus entries with a deterministic
//! [`Mutator`] (bit flips, interesting bytes, big- and little-endian words
//! with interesting and length-like values, truncation, extension, chunk
//! duplication, splicing, tokens taken from the seeds) and keeps an input in
//! the corpus when it produces an outcome class not seen before: for XDR
//! decoders the error names the field where decoding stopped, so a new class
//! usually means a new path. A panic anywhere in `run` is a bug: the hook
//! from [`install_panic_hook`] prints the target and the input in hex before
//! the process aborts (`panic = "abort"`), and `rhv-fuzz --repro TARGET HEX`
//! replays it.
//!
//! # Adding a target
//!
//! Append five lines to [`targets::TARGETS`] (in `targets.rs`):
//!
//! ```text
//! Target {
//!     name: "portmap::decode_getport_result",
//!     seeds: seeds::getport,
//!     run: |b| outcome(portmap::decode_getport_result(b)),
//! },
//! ```
//!
//! and write `seeds::getport() -> Vec<Vec<u8>>` in `seeds.rs`, returning a
//! few valid encodings (built with the module's own encoder where there is
//! one), so that mutation starts deep inside the format. [`outcome`] turns
//! any `Result<T, E: Display>` into a class; a target with more to say
//! (a status inside an `Ok`, invariants to check) gets a small `fn` in
//! `targets.rs` instead of the closure. The unit tests then check that every
//! seed's outcome starts with `ok` and smoke-fuzz the new target, and
//! `scripts/test` fuzzes it within the total time budget.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{self, Display, Write as _};
use std::sync::Once;
use std::time::{Duration, Instant};

pub mod seeds;
pub mod targets;

pub use targets::TARGETS;

/// What a decoder made of one input: one class (see [`class`]) or several,
/// one per line, for a target that reports separate features (each warning
/// of a text parser, say) rather than their combination. The first line
/// starts with `ok` for an input decoded without complaint (the unit tests
/// require that of every seed).
pub type Outcome = String;

/// One decoder to fuzz.
#[derive(Clone, Copy)]
pub struct Target {
    /// `module::function`, as `--list` shows it.
    pub name: &'static str,
    /// Valid encodings to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Decodes one input; must not panic on any input.
    pub run: fn(&[u8]) -> Outcome,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The targets whose name equals `pattern` or starts with it (so `nfs3::`
/// selects all NFSv3 decoders).
pub fn select(pattern: &str) -> Vec<&'static Target> {
    TARGETS.iter().filter(|t| t.name == pattern || t.name.starts_with(pattern)).collect()
}

/// The target called exactly `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

// ---- outcome classes ----

/// Longest class kept (longer ones are cut).
const MAX_CLASS: usize = 160;

/// A message with the parts that vary with the input removed, so that it
/// names a code path rather than a value: decimal digits, `0x…` hex numbers,
/// `U+…` code points, and quoted user text (text parsers echo it in `'…'`,
/// and it may itself hold quotes, spaces and punctuation): everything from
/// the first quote that opens (after a space, bracket or `=`) to the last
/// one that closes (before a space, punctuation or the end) becomes `''`.
pub fn class(message: impl Display) -> String {
    let text: Vec<char> = message.to_string().chars().collect();
    let opens = |i: usize| text[i] == '\'' && (i == 0 || matches!(text[i - 1], ' ' | '(' | '[' | '='));
    let closes = |j: usize| {
        text[j] == '\'' && text.get(j + 1).is_none_or(|n| matches!(n, ' ' | ';' | ',' | ')' | ']' | ':' | '.'))
    };
    let mut out = String::with_capacity(text.len().min(MAX_CLASS));
    match (0..text.len()).find(|&i| opens(i)).and_then(|i| Some((i, (i + 1..text.len()).rev().find(|&j| closes(j))?))) {
        Some((i, j)) => {
            strip_numbers(&text[..i], &mut out);
            out.push_str("''");
            strip_numbers(&text[j + 1..], &mut out);
        }
        None => strip_numbers(&text, &mut out),
    }
    if out.len() > MAX_CLASS {
        let mut cut = MAX_CLASS;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// Appends `text` without numbers (see [`class`]).
fn strip_numbers(text: &[char], out: &mut String) {
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if (c == '0' && text.get(i + 1) == Some(&'x')) || (c == 'U' && text.get(i + 1) == Some(&'+')) {
            i += 2;
            while text.get(i).is_some_and(char::is_ascii_hexdigit) {
                i += 1;
            }
            continue;
        }
        if !c.is_ascii_digit() {
            out.push(c);
        }
        i += 1;
    }
}

/// `ok`, or `err: ` and the [`class`] of the error.
pub fn outcome<T, E: Display>(r: Result<T, E>) -> Outcome {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => err(e),
    }
}

/// `err: ` and the [`class`] of `e`.
pub fn err(e: impl Display) -> Outcome {
    let mut s = String::from("err: ");
    s.push_str(&class(e));
    s
}

// ---- randomness and mutation ----

/// xorshift64*, seeded through splitmix64 (so any seed, 0 included, works).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// A stable 64-bit hash of a name (FNV-1a), to give each target its own
/// random stream for one seed.
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

const INTERESTING_U8: [u8; 4] = [0, 0xff, 0x7f, 0x80];

/// Word values that sit on boundaries: limits of the protocols' caps
/// (64-byte handles, 255/1024-byte names, 400-byte auth bodies), sign bits,
/// all-ones.
const INTERESTING_U32: [u32; 24] = [
    0,
    1,
    2,
    3,
    4,
    8,
    16,
    32,
    64,
    65,
    255,
    256,
    400,
    401,
    1024,
    1025,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0x8000_0001,
    0xffff_fffe,
    0xffff_ffff,
];

const INTERESTING_U64: [u64; 12] = [
    0,
    1,
    0xfff,
    0x1000,
    0x1_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0xffff_ffff_ffff_f000,
    0xffff_ffff_ffff_fffe,
    0xffff_ffff_ffff_ffff,
];

/// Tokens offered to every target: the punctuation of the text formats.
const BASE_TOKENS: [&[u8]; 14] =
    [b"=", b"\"", b"'", b"[", b"]", b",", b"#", b"\n", b";", b"\\", b" ", b"\\x", b"0x", b":"];

/// Applies random mutations; the same seed and inputs give the same output.
#[derive(Clone, Debug)]
pub struct Mutator {
    rng: Rng,
    dict: Vec<Vec<u8>>,
    max_len: usize,
}

impl Mutator {
    /// A mutator for a target with these seeds: inputs are kept below four
    /// times the longest seed (at least 256 bytes), and runs of
    /// identifier-like bytes in the seeds become dictionary tokens.
    pub fn new(seed: u64, seeds: &[Vec<u8>]) -> Self {
        let longest = seeds.iter().map(Vec::len).max().unwrap_or(0);
        let mut dict: Vec<Vec<u8>> = BASE_TOKENS.iter().map(|t| t.to_vec()).collect();
        for s in seeds {
            let is_word = |b: &u8| b.is_ascii_alphanumeric() || b"_-./:".contains(b);
            for word in s.split(|b| !is_word(b)) {
                if (2..=24).contains(&word.len()) && !dict.iter().any(|d| d == word) && dict.len() < 512 {
                    dict.push(word.to_vec());
                }
            }
        }
        Mutator { rng: Rng::new(seed), dict, max_len: (4 * longest).clamp(256, 1 << 20) }
    }

    /// The length inputs are cut to.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Applies one to eight stacked mutations to `data` (mostly few);
    /// `corpus` is the pool splicing takes from.
    pub fn mutate(&mut self, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let n = 1 + self.rng.below(8).min(self.rng.below(8));
        for _ in 0..n {
            self.mutate_once(data, corpus);
        }
        data.truncate(self.max_len);
    }

    /// A length-like value for a word at `at`: how many bytes follow it,
    /// nearby values and the whole length.
    fn lenish(&mut self, len: usize, at: usize) -> u32 {
        let rest = len.saturating_sub(at + 4) as u32;
        match self.rng.below(5) {
            0 => rest,
            1 => rest.wrapping_add(1),
            2 => rest.wrapping_sub(1),
            3 => rest.wrapping_add(4),
            _ => len as u32,
        }
    }

    fn word(&mut self, len: usize, at: usize) -> u32 {
        if self.rng.one_in(3) {
            self.lenish(len, at)
        } else {
            self.rng.pick(&INTERESTING_U32)
        }
    }

    fn mutate_once(&mut self, d: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let len = d.len();
        match self.rng.below(14) {
            0 if len > 0 => {
                let i = self.rng.below(len);
                d[i] ^= 1 << self.rng.below(8);
            }
            1 if len > 0 => {
                let i = self.rng.below(len);
                d[i] = self.rng.pick(&INTERESTING_U8);
            }
            2 if len > 0 => {
                let i = self.rng.below(len);
                d[i] = self.rng.next_u64() as u8;
            }
            3 if len > 0 => {
                // Big-endian word at a 4-aligned offset (XDR fields).
                let at = self.rng.below(len) & !3;
                let v = self.word(len, at);
                put(d, at, &v.to_be_bytes());
            }
            4 if len > 0 => {
                // Big-endian word anywhere.
                let at = self.rng.below(len);
                let v = self.word(len, at);
                put(d, at, &v.to_be_bytes());
            }
            5 if len > 0 => {
                // Little-endian word, aligned or not (ELF fields).
                let at = if self.rng.one_in(2) { self.rng.below(len) & !3 } else { self.rng.below(len) };
                let v = self.word(len, at);
                put(d, at, &v.to_le_bytes());
            }
            6 if len > 0 => {
                let at = if self.rng.one_in(2) { self.rng.below(len) & !7 } else { self.rng.below(len) };
                let v = self.rng.pick(&INTERESTING_U64);
                let bytes = if self.rng.one_in(2) { v.to_le_bytes() } else { v.to_be_bytes() };
                put(d, at, &bytes);
            }
            7 if len > 0 => {
                // Small arithmetic on an aligned big-endian word.
                let at = self.rng.below(len) & !3;
                let mut w = [0u8; 4];
                for (k, b) in w.iter_mut().enumerate() {
                    *b = d.get(at + k).copied().unwrap_or(0);
                }
                let delta = 1 + self.rng.below(16) as u32;
                let v = u32::from_be_bytes(w);
                let v = if self.rng.one_in(2) { v.wrapping_add(delta) } else { v.wrapping_sub(delta) };
                put(d, at, &v.to_be_bytes());
            }
            8 => {
                if self.rng.one_in(2) || len < 2 {
                    let n = self.rng.below(len + 1);
                    d.truncate(n);
                } else {
                    // Remove a chunk (often one XDR word).
                    let at = self.rng.below(len);
                    let n = if self.rng.one_in(2) { 4 } else { 1 + self.rng.below(16) };
                    let end = (at + n).min(len);
                    d.drain(at..end);
                }
            }
            9 => {
                let n = if self.rng.one_in(2) { 4 } else { 1 + self.rng.below(16) };
                let at = if self.rng.one_in(2) { len } else { self.rng.below(len + 1) };
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                d.splice(at..at, bytes);
            }
            10 if len > 0 => {
                // Duplicate a chunk (a list entry, a fragment) somewhere.
                let from = self.rng.below(len);
                let n = 1 + self.rng.below((len - from).min(128));
                let chunk = d[from..from + n].to_vec();
                let at = if self.rng.one_in(2) { from + n } else { self.rng.below(len + 1) };
                d.splice(at..at, chunk);
            }
            11 if !corpus.is_empty() => {
                // Splice: our prefix, another entry's suffix.
                let other = &corpus[self.rng.below(corpus.len())];
                let cut = self.rng.below(len + 1);
                let from = self.rng.below(other.len() + 1);
                d.truncate(cut);
                d.extend_from_slice(&other[from..]);
            }
            12 if !self.dict.is_empty() => {
                let t = self.rng.below(self.dict.len());
                let at = self.rng.below(len + 1);
                let token = self.dict[t].clone();
                if self.rng.one_in(2) {
                    d.splice(at..at, token);
                } else {
                    put(d, at, &token);
                }
            }
            _ => {
                // Replace a chunk with a copy from elsewhere in the input.
                if len >= 2 {
                    let from = self.rng.below(len);
                    let to = self.rng.below(len);
                    let n = 1 + self.rng.below((len - from).min(len - to).min(32));
                    d.copy_within(from..from + n, to);
                }
            }
        }
    }
}

/// Overwrites `d[at..]` with `bytes`, extending `d` when needed.
fn put(d: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let end = at + bytes.len();
    if d.len() < end {
        d.resize(end, 0);
    }
    d[at..end].copy_from_slice(bytes);
}

/// Splits a stream into chunks as a network would deliver it; `selector`
/// (a byte of the input) picks the chunk size range and the split points,
/// so the same input always splits the same way.
pub fn chunks(stream: &[u8], selector: u8) -> Vec<&[u8]> {
    let max = [1, 2, 3, 4, 7, 16, 64, usize::MAX][usize::from(selector & 7)];
    let mut rng = Rng::new(u64::from(selector >> 3));
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = if max == usize::MAX { rest.len() } else { 1 + rng.below(max.min(rest.len())) };
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

// ---- the fuzz loop ----

/// Most corpus entries kept per target (seeds included).
pub const MAX_CORPUS: usize = 256;

/// When a run stops.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// After this much time.
    Time(Duration),
    /// After this many mutated executions (deterministic).
    Execs(u64),
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Inputs decoded (seeds included).
    pub execs: u64,
    /// Corpus entries at the end.
    pub corpus: usize,
    /// Distinct outcome classes seen (lines of [`Outcome`]s).
    pub outcomes: usize,
    /// Each class with how many inputs produced it, most frequent first.
    pub classes: Vec<(String, u64)>,
}

struct Current {
    name: &'static str,
    input: Vec<u8>,
    active: bool,
}

thread_local! {
    static CURRENT: RefCell<Current> = const { RefCell::new(Current { name: "", input: Vec::new(), active: false }) };
}

/// Runs `target` on `input`, recording both for the panic hook.
pub fn exec(target: &Target, input: &[u8]) -> Outcome {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        c.name = target.name;
        c.input.clear();
        c.input.extend_from_slice(input);
        c.active = true;
    });
    let out = (target.run)(input);
    CURRENT.with(|c| c.borrow_mut().active = false);
    out
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses [`hex`] output (whitespace ignored).
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok()).collect()
}

/// Installs (once) a panic hook that, after the usual message, names the
/// target being fuzzed on this thread and prints the failing input in hex
/// with the command that replays it. With `panic = "abort"` the process
/// then dies, failing the test suite.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            let _ = CURRENT.try_with(|c| {
                if let Ok(c) = c.try_borrow() {
                    if c.active {
                        let h = hex(&c.input);
                        eprintln!("rhv-fuzz: target {} PANICKED on a {}-byte input:", c.name, c.input.len());
                        eprintln!("rhv-fuzz: input (hex): {h}");
                        eprintln!("rhv-fuzz: replay with: cargo run -p rhv-fuzz -- --repro {} {h}", c.name);
                    }
                }
            });
        }));
    });
}

/// Counts each line of `out` as a class; true if one was new.
fn record(classes: &mut HashMap<String, u64>, out: &str) -> bool {
    let mut new = false;
    for line in out.split('\n') {
        if let Some(n) = classes.get_mut(line) {
            *n += 1;
        } else {
            classes.insert(line.to_owned(), 1);
            new = true;
        }
    }
    new
}

/// Fuzzes `target` for `duration`; `seed` fixes the mutation sequence.
pub fn fuzz(target: &Target, duration: Duration, seed: u64) -> Stats {
    fuzz_budget(target, Budget::Time(duration), seed)
}

/// Fuzzes `target` until `budget` is spent. Every seed runs first; then
/// each round mutates a random corpus entry and keeps the result if an
/// outcome class in it is new (replacing a random non-seed entry once the corpus
/// holds [`MAX_CORPUS`]).
pub fn fuzz_budget(target: &Target, budget: Budget, seed: u64) -> Stats {
    let seeds = (target.seeds)();
    let mut corpus: Vec<Vec<u8>> = if seeds.is_empty() { vec![Vec::new()] } else { seeds.clone() };
    corpus.truncate(MAX_CORPUS);
    let n_seeds = corpus.len();
    let mut m = Mutator::new(seed ^ name_hash(target.name), &seeds);
    let mut classes: HashMap<String, u64> = HashMap::new();
    let mut execs = 0u64;
    for s in &corpus {
        record(&mut classes, &exec(target, s));
        execs += 1;
    }
    let start = Instant::now();
    let mut mutated = 0u64;
    let mut buf = Vec::new();
    loop {
        let done = match budget {
            Budget::Execs(n) => mutated >= n,
            Budget::Time(d) => mutated.is_multiple_of(64) && start.elapsed() >= d,
        };
        if done {
            break;
        }
        let i = m.rng.below(corpus.len());
        buf.clear();
        buf.extend_from_slice(&corpus[i]);
        m.mutate(&mut buf, &corpus);
        let out = exec(target, &buf);
        mutated += 1;
        if record(&mut classes, &out) {
            if corpus.len() < MAX_CORPUS {
                corpus.push(buf.clone());
            } else if n_seeds < MAX_CORPUS {
                let j = n_seeds + m.rng.below(MAX_CORPUS - n_seeds);
                corpus[j].clone_from(&buf);
            }
        }
    }
    execs += mutated;
    let mut classes: Vec<(String, u64)> = classes.into_iter().collect();
    classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Stats { execs, corpus: corpus.len(), outcomes: classes.len(), classes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_strips_values() {
        assert_eq!(class("xdr: fhandle length 99 exceeds 64"), "xdr: fhandle length  exceeds ");
        assert_eq!(class("segment 1 at 0x20ff00 is below 0x10000"), "segment  at  is below ");
        assert_eq!(class("unknown option 'foo9' ignored"), "unknown option '' ignored");
        assert_eq!(class("unknown option 'a'b c' ignored"), "unknown option '' ignored");
        assert_eq!(class("bad 'x' (expected '-', '_')"), "bad '')");
        assert_eq!(class("type '',  # x' is not supported"), "type '' is not supported");
        assert_eq!(class("expected ',' or ']' in the list, found ''x) #'"), "expected ''");
        assert_eq!(class("'it's'"), "''");
        assert_eq!(class("nfsstat3 70: unknown error"), "nfsstat : unknown error");
        assert_eq!(class("character U+FFFD is not allowed"), "character  is not allowed");
        assert_eq!(class("x".repeat(500)).len(), MAX_CLASS);
        assert_eq!(outcome(Ok::<(), &str>(())), "ok");
        assert_eq!(outcome(Err::<(), _>("bad 7")), "err: bad ");
    }

    #[test]
    fn mutator_is_deterministic() {
        let corpus = vec![b"name = 'rx7'\nmemory = 512\n".to_vec(), vec![0, 0, 0, 1, 0x80, 0, 0, 4, 1, 2, 3, 4]];
        let run = |seed: u64| {
            let mut m = Mutator::new(seed, &corpus);
            (0..2000)
                .map(|i| {
                    let mut d = corpus[i % 2].clone();
                    m.mutate(&mut d, &corpus);
                    d
                })
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        // Every kind of change happens: shorter, longer, same length.
        assert!(a.iter().any(|d| d.len() < corpus[1].len()));
        assert!(a.iter().any(|d| d.len() > corpus[0].len()));
        assert!(a.iter().all(|d| d.len() <= 256));
    }

    #[test]
    fn fuzz_is_deterministic_for_an_exec_budget() {
        let t = find("nfs3::decode_lookup_result").unwrap();
        let a = fuzz_budget(t, Budget::Execs(3000), 7);
        assert_eq!(a, fuzz_budget(t, Budget::Execs(3000), 7));
        assert_eq!(a.execs, 3000 + (t.seeds)().len() as u64);
        assert!(a.outcomes > 3, "{:?}", a.classes);
        assert!(a.corpus <= MAX_CORPUS);
    }

    #[test]
    fn chunks_cover_the_stream() {
        let s: Vec<u8> = (0..=255).collect();
        for sel in 0..=255u8 {
            let c = chunks(&s, sel);
            assert_eq!(c.concat(), s);
            assert_eq!(c, chunks(&s, sel));
        }
        assert!(chunks(&[], 3).is_empty());
    }

    #[test]
    fn hex_round_trip() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex("00 01ab\nff").unwrap(), b);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn select_by_prefix() {
        assert!(select("nfs3::").len() >= 16);
        assert_eq!(select("rpc::decode_reply").len(), 1);
        assert!(select("nope").is_empty());
        let mut names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TARGETS.len(), "target names must be unique");
    }
}
