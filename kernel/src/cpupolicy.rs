//! CPU feature policies: which CPUID features a domain may see, and whether
//! a host can run it.
//!
//! The seed setup this hypervisor replaces crashed a guest (soft lockup)
//! after migrating it to a host with a different CPU: the guest had chosen
//! code paths at boot for features the new host lacked. rhv gives every
//! domain a [`CpuPolicy`]:
//!
//! * by default the creating host's features ([`CpuPolicy::from_cpuid`]);
//! * levelled down by the domain config's `cpuid=` string ([`parse_spec`]),
//!   e.g. to a psABI baseline (`x86-64-v2`) shared by a pool of hosts
//!   ([`CpuPolicy::intersect`] computes such a pool baseline);
//! * checked by a migration destination against its own host policy
//!   ([`CpuPolicy::missing_on`]) before any page moves, the policy having
//!   travelled in the migration stream as [`CpuPolicy::encode`]'s blob;
//! * enforced where the hypervisor can: the CPUID hypercall answers with
//!   [`CpuPolicy::filter_leaf`]'s output and the domain's XCR0 is limited to
//!   [`CpuPolicy::xcr0`]. Hiding a CPUID bit does not stop a guest executing
//!   the instruction anyway; only the XCR0-gated state (AVX, AVX-512) is
//!   really withheld.
//!
//! Only the features in [`FEATURES`] are tracked; their names are the ones
//! Linux shows in `/proc/cpuinfo` (with `sse3`, `sha` and `prefetchw` for
//! Linux's `pni`, `sha_ni` and `3dnowprefetch`, which are accepted as
//! aliases in specs, as are `lzcnt` for `abm` and Xen's `lahfsahf` and
//! `page1gb`).
//!
//! Every policy this module builds, and every blob [`CpuPolicy::decode`]
//! accepts, keeps two invariants:
//!
//! * it is closed under the feature dependencies (`avx` needs `xsave`, `avx2`
//!   needs `avx`, `sse4_2` needs `sse4_1`, …; see `DEPS`): removing a
//!   feature removes what depends on it;
//! * `xcr0` is exactly x87 | SSE, plus AVX if `avx` is in the policy, plus
//!   the three AVX-512 components (opmask, ZMM_Hi256, Hi16_ZMM) if `avx512f`
//!   is.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::shell::sanitize;

/// XCR0 bit of the x87 state component.
pub const XCR0_X87: u64 = 1 << 0;
/// XCR0 bit of the SSE (XMM) state component.
pub const XCR0_SSE: u64 = 1 << 1;
/// XCR0 bit of the AVX (YMM upper halves) state component.
pub const XCR0_AVX: u64 = 1 << 2;
/// XCR0 bits of the AVX-512 state components: opmask, ZMM_Hi256, Hi16_ZMM.
pub const XCR0_AVX512: u64 = 0b111 << 5;

/// Largest blob [`CpuPolicy::encode`] produces and [`CpuPolicy::decode`]
/// accepts, in bytes.
pub const MAX_BLOB_BYTES: usize = 512;
/// The blob format version [`CpuPolicy::encode`] writes.
pub const BLOB_VERSION: u8 = 1;

/// Bytes of one word in a blob: leaf u32, subleaf u32, register u8, bits u32.
const WORD_BYTES: usize = 13;

/// A CPUID output register, numbered as in the `[eax, ebx, ecx, edx]`
/// arrays this module uses (and in the blob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    /// EAX (index 0).
    Eax = 0,
    /// EBX (index 1).
    Ebx = 1,
    /// ECX (index 2).
    Ecx = 2,
    /// EDX (index 3).
    Edx = 3,
}

impl Reg {
    /// The register's lower-case name, e.g. `"ecx"`.
    pub fn name(self) -> &'static str {
        match self {
            Reg::Eax => "eax",
            Reg::Ebx => "ebx",
            Reg::Ecx => "ecx",
            Reg::Edx => "edx",
        }
    }
}

/// One named CPUID feature bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// The name operators know it by (Linux `/proc/cpuinfo` style).
    pub name: &'static str,
    /// CPUID leaf (EAX input).
    pub leaf: u32,
    /// CPUID subleaf (ECX input); 0 for leaves without subleaves.
    pub subleaf: u32,
    /// The output register holding the bit.
    pub reg: Reg,
    /// Bit number in that register (0..=31).
    pub bit: u8,
    /// Index of the (leaf, subleaf, reg) word in [`WORDS`].
    word: u8,
}

/// The (leaf, subleaf, register) words a policy holds, in blob order.
const WORDS: [(u32, u32, Reg); NWORDS] = [
    (1, 0, Reg::Ecx),
    (1, 0, Reg::Edx),
    (7, 0, Reg::Ebx),
    (7, 0, Reg::Ecx),
    (7, 0, Reg::Edx),
    (0x8000_0001, 0, Reg::Ecx),
    (0x8000_0001, 0, Reg::Edx),
    (0xD, 1, Reg::Eax),
];
const NWORDS: usize = 8;

const fn word_index(leaf: u32, subleaf: u32, reg: Reg) -> usize {
    let mut i = 0;
    while i < NWORDS {
        let (l, s, r) = WORDS[i];
        if l == leaf && s == subleaf && r as u8 == reg as u8 {
            return i;
        }
        i += 1;
    }
    NWORDS
}

/// Builds a table entry; a word missing from [`WORDS`] or a bad bit number
/// fails the build.
const fn feat(name: &'static str, leaf: u32, subleaf: u32, reg: Reg, bit: u8) -> Feature {
    let word = word_index(leaf, subleaf, reg);
    assert!(word < NWORDS && bit < 32);
    Feature { name, leaf, subleaf, reg, bit, word: word as u8 }
}

const L1: u32 = 1;
const L7: u32 = 7;
const LX: u32 = 0x8000_0001;
const LD: u32 = 0xD;

/// Every feature a policy tracks, in display order (grouped by word, by bit
/// within a word).
pub const FEATURES: &[Feature] = &[
    // Leaf 1 ECX.
    feat("sse3", L1, 0, Reg::Ecx, 0),
    feat("pclmulqdq", L1, 0, Reg::Ecx, 1),
    feat("ssse3", L1, 0, Reg::Ecx, 9),
    feat("fma", L1, 0, Reg::Ecx, 12),
    feat("cx16", L1, 0, Reg::Ecx, 13),
    feat("pcid", L1, 0, Reg::Ecx, 17),
    feat("sse4_1", L1, 0, Reg::Ecx, 19),
    feat("sse4_2", L1, 0, Reg::Ecx, 20),
    feat("x2apic", L1, 0, Reg::Ecx, 21),
    feat("movbe", L1, 0, Reg::Ecx, 22),
    feat("popcnt", L1, 0, Reg::Ecx, 23),
    feat("aes", L1, 0, Reg::Ecx, 25),
    feat("xsave", L1, 0, Reg::Ecx, 26),
    feat("avx", L1, 0, Reg::Ecx, 28),
    feat("f16c", L1, 0, Reg::Ecx, 29),
    feat("rdrand", L1, 0, Reg::Ecx, 30),
    // Leaf 1 EDX.
    feat("fpu", L1, 0, Reg::Edx, 0),
    feat("tsc", L1, 0, Reg::Edx, 4),
    feat("msr", L1, 0, Reg::Edx, 5),
    feat("cx8", L1, 0, Reg::Edx, 8),
    feat("cmov", L1, 0, Reg::Edx, 15),
    feat("clflush", L1, 0, Reg::Edx, 19),
    feat("mmx", L1, 0, Reg::Edx, 23),
    feat("fxsr", L1, 0, Reg::Edx, 24),
    feat("sse", L1, 0, Reg::Edx, 25),
    feat("sse2", L1, 0, Reg::Edx, 26),
    // Leaf 7 subleaf 0 EBX.
    feat("fsgsbase", L7, 0, Reg::Ebx, 0),
    feat("bmi1", L7, 0, Reg::Ebx, 3),
    feat("avx2", L7, 0, Reg::Ebx, 5),
    feat("smep", L7, 0, Reg::Ebx, 7),
    feat("bmi2", L7, 0, Reg::Ebx, 8),
    feat("erms", L7, 0, Reg::Ebx, 9),
    feat("invpcid", L7, 0, Reg::Ebx, 10),
    feat("avx512f", L7, 0, Reg::Ebx, 16),
    feat("avx512dq", L7, 0, Reg::Ebx, 17),
    feat("rdseed", L7, 0, Reg::Ebx, 18),
    feat("adx", L7, 0, Reg::Ebx, 19),
    feat("smap", L7, 0, Reg::Ebx, 20),
    feat("clflushopt", L7, 0, Reg::Ebx, 23),
    feat("clwb", L7, 0, Reg::Ebx, 24),
    feat("avx512cd", L7, 0, Reg::Ebx, 28),
    feat("sha", L7, 0, Reg::Ebx, 29),
    feat("avx512bw", L7, 0, Reg::Ebx, 30),
    feat("avx512vl", L7, 0, Reg::Ebx, 31),
    // Leaf 7 subleaf 0 ECX.
    feat("umip", L7, 0, Reg::Ecx, 2),
    feat("pku", L7, 0, Reg::Ecx, 3),
    feat("gfni", L7, 0, Reg::Ecx, 8),
    feat("vaes", L7, 0, Reg::Ecx, 9),
    feat("vpclmulqdq", L7, 0, Reg::Ecx, 10),
    feat("rdpid", L7, 0, Reg::Ecx, 22),
    // Leaf 7 subleaf 0 EDX.
    feat("fsrm", L7, 0, Reg::Edx, 4),
    feat("md_clear", L7, 0, Reg::Edx, 10),
    // Leaf 0x80000001 ECX.
    feat("lahf_lm", LX, 0, Reg::Ecx, 0),
    feat("abm", LX, 0, Reg::Ecx, 5),
    feat("sse4a", LX, 0, Reg::Ecx, 6),
    feat("prefetchw", LX, 0, Reg::Ecx, 8),
    // Leaf 0x80000001 EDX.
    feat("syscall", LX, 0, Reg::Edx, 11),
    feat("nx", LX, 0, Reg::Edx, 20),
    feat("pdpe1gb", LX, 0, Reg::Edx, 26),
    feat("rdtscp", LX, 0, Reg::Edx, 27),
    feat("lm", LX, 0, Reg::Edx, 29),
    // Leaf 0xD subleaf 1 EAX.
    feat("xsaveopt", LD, 1, Reg::Eax, 0),
    feat("xsavec", LD, 1, Reg::Eax, 1),
    feat("xgetbv1", LD, 1, Reg::Eax, 2),
    feat("xsaves", LD, 1, Reg::Eax, 3),
];

/// Other spellings accepted in specs: (alias, table name).
const ALIASES: &[(&str, &str)] = &[
    ("pni", "sse3"),
    ("sha_ni", "sha"),
    ("3dnowprefetch", "prefetchw"),
    ("lzcnt", "abm"),
    ("lahfsahf", "lahf_lm"),
    ("page1gb", "pdpe1gb"),
];

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Index of a table feature by exact name; a missing name fails the build
/// when used in a constant.
const fn idx(name: &str) -> usize {
    let mut i = 0;
    while i < FEATURES.len() {
        if str_eq(FEATURES[i].name, name) {
            return i;
        }
        i += 1;
    }
    panic!("not a feature in the table");
}

const XSAVE: usize = idx("xsave");
const AVX: usize = idx("avx");
const AVX512F: usize = idx("avx512f");
const PKU: usize = idx("pku");

/// Feature dependencies: (feature, what it needs). A policy never holds a
/// feature without what it needs.
const DEPS: &[(usize, usize)] = &[
    (idx("sse"), idx("fxsr")),
    (idx("sse2"), idx("sse")),
    (idx("sse3"), idx("sse2")),
    (idx("ssse3"), idx("sse3")),
    (idx("sse4_1"), idx("ssse3")),
    (idx("sse4_2"), idx("sse4_1")),
    (idx("sse4a"), idx("sse3")),
    (idx("pclmulqdq"), idx("sse2")),
    (idx("aes"), idx("sse2")),
    (idx("sha"), idx("sse2")),
    (idx("gfni"), idx("sse2")),
    (idx("xsaveopt"), XSAVE),
    (idx("xsavec"), XSAVE),
    (idx("xgetbv1"), XSAVE),
    (idx("xsaves"), XSAVE),
    (AVX, XSAVE),
    (AVX, idx("sse2")),
    (idx("fma"), AVX),
    (idx("f16c"), AVX),
    (idx("avx2"), AVX),
    (idx("vaes"), AVX),
    (idx("vaes"), idx("aes")),
    (idx("vpclmulqdq"), AVX),
    (idx("vpclmulqdq"), idx("pclmulqdq")),
    (AVX512F, idx("avx2")),
    (idx("avx512dq"), AVX512F),
    (idx("avx512cd"), AVX512F),
    (idx("avx512bw"), AVX512F),
    (idx("avx512vl"), AVX512F),
];

/// x86-64-v1 (the psABI baseline).
const V1: &[usize] = &[
    idx("fpu"),
    idx("tsc"),
    idx("msr"),
    idx("cx8"),
    idx("cmov"),
    idx("clflush"),
    idx("mmx"),
    idx("fxsr"),
    idx("sse"),
    idx("sse2"),
    idx("syscall"),
    idx("nx"),
    idx("lm"),
];
/// What x86-64-v2 adds to v1.
const V2: &[usize] =
    &[idx("cx16"), idx("lahf_lm"), idx("popcnt"), idx("sse3"), idx("sse4_1"), idx("sse4_2"), idx("ssse3")];
/// What x86-64-v3 adds to v2.
const V3: &[usize] = &[
    idx("avx"),
    idx("avx2"),
    idx("bmi1"),
    idx("bmi2"),
    idx("f16c"),
    idx("fma"),
    idx("abm"),
    idx("movbe"),
    idx("xsave"),
];
/// What x86-64-v4 adds to v3.
const V4: &[usize] = &[idx("avx512f"), idx("avx512bw"), idx("avx512cd"), idx("avx512dq"), idx("avx512vl")];

/// The psABI levels, lowest first: (name, features added to the level below).
const LEVELS: [(&str, &[usize]); 4] = [("x86-64-v1", V1), ("x86-64-v2", V2), ("x86-64-v3", V3), ("x86-64-v4", V4)];

/// Leaf 1 ECX OSXSAVE (mirrors the guest's CR4.OSXSAVE).
const OSXSAVE_BIT: u32 = 1 << 27;
/// Leaf 7.0 ECX OSPKE (mirrors the guest's CR4.PKE).
const OSPKE_BIT: u32 = 1 << 4;
/// Leaf 0x80000001 EDX bits that AMD CPUs mirror from leaf 1 EDX, as
/// (bit, feature): fpu, tsc, msr, cx8, cmov, mmx, fxsr.
const AMD_MIRRORS: &[(u8, usize)] = &[
    (0, idx("fpu")),
    (4, idx("tsc")),
    (5, idx("msr")),
    (8, idx("cx8")),
    (15, idx("cmov")),
    (23, idx("mmx")),
    (24, idx("fxsr")),
];

/// Bits of each word that the table names.
const MASKS: [u32; NWORDS] = {
    let mut m = [0u32; NWORDS];
    let mut i = 0;
    while i < FEATURES.len() {
        m[FEATURES[i].word as usize] |= 1 << FEATURES[i].bit;
        i += 1;
    }
    m
};

/// Whether a leaf's output depends on the subleaf (ECX input). Other
/// leaves' words apply whatever the subleaf.
fn indexed(leaf: u32) -> bool {
    leaf == L7 || leaf == LD
}

/// Lower case, with `-` and `.` read as `_` (`sse4.1` = `sse4_1`).
fn normalize(name: &str) -> String {
    name.chars().map(|c| if c == '-' || c == '.' { '_' } else { c.to_ascii_lowercase() }).collect()
}

/// The table index of a feature name or alias, in any case.
fn lookup(name: &str) -> Option<usize> {
    let n = normalize(name);
    let n = ALIASES.iter().find(|(a, _)| *a == n).map_or(n.as_str(), |(_, t)| t);
    FEATURES.iter().position(|f| f.name == n)
}

/// Levenshtein distance between two short byte strings.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = Vec::with_capacity(b.len() + 1);
    for (i, &ca) in a.iter().enumerate() {
        cur.clear();
        cur.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        core::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `name`, if it is close: at most one edit per
/// three characters of `name`.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let n = normalize(name);
    if n.is_empty() || n.len() > 64 {
        return None;
    }
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(n.as_bytes(), c.as_bytes());
        if d * 3 <= n.len() && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Joins names with `", "`.
fn join(names: &[&str]) -> String {
    names.join(", ")
}

/// The CPU features a domain may use: one bit word per (leaf, subleaf,
/// register) of [`FEATURES`] plus the XSAVE components it may enable.
///
/// See the module documentation for the invariants every policy keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuPolicy {
    words: [u32; NWORDS],
    /// The XSAVE state components the domain may enable in XCR0: always
    /// [`XCR0_X87`] | [`XCR0_SSE`], plus [`XCR0_AVX`] exactly when `avx` is
    /// in the policy and [`XCR0_AVX512`] exactly when `avx512f` is.
    pub xcr0: u64,
}

impl CpuPolicy {
    /// A policy with no features (and XCR0 x87 | SSE).
    fn empty() -> CpuPolicy {
        CpuPolicy { words: [0; NWORDS], xcr0: XCR0_X87 | XCR0_SSE }
    }

    fn has_idx(&self, i: usize) -> bool {
        let f = &FEATURES[i];
        self.words[usize::from(f.word)] & (1 << f.bit) != 0
    }

    fn set_idx(&mut self, i: usize, on: bool) {
        let f = &FEATURES[i];
        let w = &mut self.words[usize::from(f.word)];
        if on {
            *w |= 1 << f.bit;
        } else {
            *w &= !(1 << f.bit);
        }
    }

    /// The XCR0 the features call for (see [`CpuPolicy::xcr0`]).
    fn derived_xcr0(&self) -> u64 {
        let mut x = XCR0_X87 | XCR0_SSE;
        if self.has_idx(AVX) {
            x |= XCR0_AVX;
        }
        if self.has_idx(AVX512F) {
            x |= XCR0_AVX512;
        }
        x
    }

    /// Removes every feature whose dependencies are missing (repeatedly,
    /// so removals cascade), then sets `xcr0` from the features.
    fn close(&mut self) {
        loop {
            let mut changed = false;
            for &(f, needs) in DEPS {
                if self.has_idx(f) && !self.has_idx(needs) {
                    self.set_idx(f, false);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        self.xcr0 = self.derived_xcr0();
    }

    /// The policy of a host: its CPUID features that [`FEATURES`] names.
    ///
    /// `cpuid(leaf, subleaf)` returns `[eax, ebx, ecx, edx]`. Leaves above
    /// the maximum basic leaf (leaf 0 EAX) or extended leaf (leaf
    /// 0x80000000 EAX, if that is in 0x80000000..=0x8000FFFF) are not asked
    /// for and read as zero. `host_xcr0` is the XCR0 the hypervisor runs
    /// with (0 if it did not enable XSAVE): without x87 | SSE in it `xsave`
    /// is dropped, without AVX `avx`, without all three AVX-512 components
    /// `avx512f`; then everything depending on a dropped feature goes too.
    pub fn from_cpuid(cpuid: impl Fn(u32, u32) -> [u32; 4], host_xcr0: u64) -> CpuPolicy {
        let max_basic = cpuid(0, 0)[0];
        let max_ext = cpuid(0x8000_0000, 0)[0];
        let max_ext = if (0x8000_0000..=0x8000_FFFF).contains(&max_ext) { max_ext } else { 0 };
        let mut p = CpuPolicy::empty();
        for (w, &(leaf, subleaf, reg)) in WORDS.iter().enumerate() {
            let present = if leaf >= 0x8000_0000 { leaf <= max_ext } else { leaf <= max_basic };
            if present {
                p.words[w] = cpuid(leaf, subleaf)[reg as usize] & MASKS[w];
            }
        }
        if host_xcr0 & (XCR0_X87 | XCR0_SSE) != XCR0_X87 | XCR0_SSE {
            p.set_idx(XSAVE, false);
        }
        if host_xcr0 & XCR0_AVX == 0 {
            p.set_idx(AVX, false);
        }
        if host_xcr0 & XCR0_AVX512 != XCR0_AVX512 {
            p.set_idx(AVX512F, false);
        }
        p.close();
        p
    }

    /// The policy of a psABI baseline: `x86-64` (= `x86-64-v1`),
    /// `x86-64-v1` … `x86-64-v4` (any case, `_` for `-` accepted), or `None`
    /// for any other name. Not limited to any host.
    pub fn baseline(name: &str) -> Option<CpuPolicy> {
        let n: String = name.chars().map(|c| if c == '_' { '-' } else { c.to_ascii_lowercase() }).collect();
        let n = if n == "x86-64" { "x86-64-v1" } else { n.as_str() };
        let top = LEVELS.iter().position(|(l, _)| *l == n)?;
        let mut p = CpuPolicy::empty();
        for (_, feats) in &LEVELS[..=top] {
            for &i in *feats {
                p.set_idx(i, true);
            }
        }
        p.close();
        Some(p)
    }

    /// Whether the policy holds the named feature (table name or alias, any
    /// case); false for unknown names.
    pub fn has(&self, name: &str) -> bool {
        lookup(name).is_some_and(|i| self.has_idx(i))
    }

    /// How many table features the policy holds.
    pub fn count(&self) -> usize {
        (0..FEATURES.len()).filter(|&i| self.has_idx(i)).count()
    }

    /// The names of the features in the policy, in [`FEATURES`] order.
    pub fn names(&self) -> Vec<&'static str> {
        FEATURES.iter().enumerate().filter(|&(i, _)| self.has_idx(i)).map(|(_, f)| f.name).collect()
    }

    /// Whether every feature of `other` is in `self`.
    fn contains(&self, other: &CpuPolicy) -> bool {
        self.words.iter().zip(&other.words).all(|(s, o)| o & !s == 0)
    }

    /// The highest psABI level whose features the policy all holds:
    /// `"x86-64-v1"` … `"x86-64-v4"`, or `"below x86-64-v1"`.
    pub fn level(&self) -> &'static str {
        let mut level = "below x86-64-v1";
        for (name, _) in LEVELS {
            match CpuPolicy::baseline(name) {
                Some(b) if self.contains(&b) => level = name,
                _ => break,
            }
        }
        level
    }

    /// One line for display: the baseline's name if the policy is exactly a
    /// psABI level (`"x86-64-v2"`), else `"custom, N features (L)"` where L
    /// is [`CpuPolicy::level`] with `+` appended when it is a level
    /// (`"custom, 47 features (x86-64-v3+)"`).
    pub fn summary(&self) -> String {
        for (name, _) in LEVELS {
            if CpuPolicy::baseline(name).as_ref() == Some(self) {
                return String::from(name);
            }
        }
        let level = self.level();
        let plus = if level.starts_with("x86") { "+" } else { "" };
        format!("custom, {} features ({level}{plus})", self.count())
    }

    /// The features of `self` that `host` lacks, in [`FEATURES`] order:
    /// what a migration destination with policy `host` cannot honour. Then
    /// `"xsave-avx"` if `self.xcr0` has AVX and `host.xcr0` does not, and
    /// `"xsave-avx512"` if `self.xcr0` has an AVX-512 component that
    /// `host.xcr0` lacks. Empty when `host` can run the domain.
    pub fn missing_on(&self, host: &CpuPolicy) -> Vec<&'static str> {
        let mut out: Vec<&'static str> =
            (0..FEATURES.len()).filter(|&i| self.has_idx(i) && !host.has_idx(i)).map(|i| FEATURES[i].name).collect();
        if self.xcr0 & XCR0_AVX & !host.xcr0 != 0 {
            out.push("xsave-avx");
        }
        if self.xcr0 & XCR0_AVX512 & !host.xcr0 != 0 {
            out.push("xsave-avx512");
        }
        out
    }

    /// The features both policies hold (a pool baseline), with the XCR0
    /// they call for.
    pub fn intersect(&self, other: &CpuPolicy) -> CpuPolicy {
        let mut p = self.clone();
        for (w, o) in p.words.iter_mut().zip(&other.words) {
            *w &= o;
        }
        // Both inputs are closed, so the intersection is; closing again is
        // cheap insurance.
        p.close();
        p
    }

    /// The CPUID answer a guest under this policy sees, given the
    /// hardware's answer `regs` (`[eax, ebx, ecx, edx]`) for `leaf` and
    /// `subleaf`. It only ever clears bits, never sets them:
    ///
    /// * every [`FEATURES`] bit of this leaf that the policy lacks is
    ///   cleared; the subleaf matters for leaves 7 and 0xD only (leaves 1 and
    ///   0x80000001 ignore ECX);
    /// * leaf 1 ECX bit 27 (OSXSAVE) is cleared if `xsave` is not in the
    ///   policy, and leaf 7.0 ECX bit 4 (OSPKE) if `pku` is not;
    /// * leaf 0x80000001 EDX bits 0, 4, 5, 8, 15, 23, 24 (AMD's copies of
    ///   fpu, tsc, msr, cx8, cmov, mmx, fxsr) are cleared with the leaf 1
    ///   feature;
    /// * leaf 0xD: every subleaf is all zeros if `xsave` is not in the
    ///   policy. Otherwise subleaf 0 EAX and EDX (the XCR0 bits the CPU
    ///   supports) are ANDed with [`CpuPolicy::xcr0`], EBX and ECX (save
    ///   area sizes; ECX stays a safe upper bound) pass unchanged; subleaf
    ///   1 has its EAX filtered as above and ECX/EDX (supported IA32_XSS
    ///   bits) cleared, as no supervisor state is offered; subleaf n ≥ 2 is
    ///   all zeros unless bit n of `xcr0` is set (n ≥ 64: zeros);
    /// * every other bit passes unchanged.
    pub fn filter_leaf(&self, leaf: u32, subleaf: u32, regs: [u32; 4]) -> [u32; 4] {
        let mut out = regs;
        if leaf == LD {
            if !self.has_idx(XSAVE) {
                return [0; 4];
            }
            match subleaf {
                0 => {
                    out[0] &= self.xcr0 as u32;
                    out[3] &= (self.xcr0 >> 32) as u32;
                }
                1 => {
                    out[2] = 0;
                    out[3] = 0;
                }
                n if n >= 64 || self.xcr0 & (1 << n) == 0 => return [0; 4],
                _ => {}
            }
        }
        for (w, &(l, s, reg)) in WORDS.iter().enumerate() {
            if l == leaf && (!indexed(leaf) || s == subleaf) {
                out[reg as usize] &= !(MASKS[w] & !self.words[w]);
            }
        }
        if leaf == L1 && !self.has_idx(XSAVE) {
            out[Reg::Ecx as usize] &= !OSXSAVE_BIT;
        }
        if leaf == L7 && subleaf == 0 && !self.has_idx(PKU) {
            out[Reg::Ecx as usize] &= !OSPKE_BIT;
        }
        if leaf == LX {
            for &(bit, f) in AMD_MIRRORS {
                if !self.has_idx(f) {
                    out[Reg::Edx as usize] &= !(1 << bit);
                }
            }
        }
        out
    }

    /// The policy as a blob for the migration stream, all integers little
    /// endian: version byte [`BLOB_VERSION`] (1), a count byte, then per
    /// word leaf u32, subleaf u32, register u8 (0 eax … 3 edx) and bits
    /// u32, then `xcr0` u64. Every word of the table is written, in table
    /// order (114 bytes today, at most [`MAX_BLOB_BYTES`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + NWORDS * WORD_BYTES + 8);
        out.push(BLOB_VERSION);
        out.push(NWORDS as u8);
        for (w, &(leaf, subleaf, reg)) in WORDS.iter().enumerate() {
            out.extend_from_slice(&leaf.to_le_bytes());
            out.extend_from_slice(&subleaf.to_le_bytes());
            out.push(reg as u8);
            out.extend_from_slice(&self.words[w].to_le_bytes());
        }
        out.extend_from_slice(&self.xcr0.to_le_bytes());
        out
    }

    /// Reads a blob written by [`CpuPolicy::encode`] (possibly by another
    /// host). Words may come in any order and a word left out means no
    /// features in it. Refused, with a one-line reason: a blob longer than
    /// [`MAX_BLOB_BYTES`], a version other than 1, a length that does not
    /// match the count, a (leaf, subleaf, register) this version does not
    /// know or that appears twice, a bit this version has no feature for
    /// (it could not honour it), a feature without one it depends on, and
    /// an `xcr0` other than the one the features call for.
    pub fn decode(bytes: &[u8]) -> Result<CpuPolicy, String> {
        if bytes.len() > MAX_BLOB_BYTES {
            return Err(format!("cpu policy: blob is {} bytes, more than the {MAX_BLOB_BYTES} allowed", bytes.len()));
        }
        let [version, count, rest @ ..] = bytes else {
            return Err(format!("cpu policy: blob is {} bytes, too short for a header", bytes.len()));
        };
        if *version != BLOB_VERSION {
            return Err(format!("cpu policy: unknown blob version {version} (this host reads {BLOB_VERSION})"));
        }
        let want = usize::from(*count) * WORD_BYTES + 8;
        if rest.len() != want {
            return Err(format!("cpu policy: blob is {} bytes but {count} words need {}", bytes.len(), want + 2));
        }
        let (words, xcr0) = rest.split_at(rest.len() - 8);
        let mut p = CpuPolicy::empty();
        let mut seen = [false; NWORDS];
        for chunk in words.chunks_exact(WORD_BYTES) {
            let u32_at = |at: usize| u32::from_le_bytes([chunk[at], chunk[at + 1], chunk[at + 2], chunk[at + 3]]);
            let (leaf, subleaf, reg, bits) = (u32_at(0), u32_at(4), chunk[8], u32_at(9));
            let w = WORDS.iter().position(|&(l, s, r)| l == leaf && s == subleaf && r as u8 == reg);
            let Some(w) = w else {
                return Err(format!(
                    "cpu policy: unknown word leaf {leaf:#x} subleaf {subleaf} register {reg} (not in blob version 1)"
                ));
            };
            let what = format!("leaf {leaf:#x} subleaf {subleaf} {}", WORDS[w].2.name());
            if core::mem::replace(&mut seen[w], true) {
                return Err(format!("cpu policy: word {what} appears twice"));
            }
            if bits & !MASKS[w] != 0 {
                return Err(format!("cpu policy: word {what} has unknown feature bits {:#x}", bits & !MASKS[w]));
            }
            p.words[w] = bits;
        }
        for &(f, needs) in DEPS {
            if p.has_idx(f) && !p.has_idx(needs) {
                return Err(format!("cpu policy: {} without {}", FEATURES[f].name, FEATURES[needs].name));
            }
        }
        let xcr0 = u64::from_le_bytes(xcr0.try_into().unwrap_or([0; 8]));
        let want_xcr0 = p.derived_xcr0();
        if xcr0 != want_xcr0 {
            return Err(format!("cpu policy: xcr0 {xcr0:#x} does not match the features (expected {want_xcr0:#x})"));
        }
        p.xcr0 = xcr0;
        Ok(p)
    }
}

/// The base names a spec may start with.
const BASES: &[&str] = &["host", "x86-64", "x86-64-v1", "x86-64-v2", "x86-64-v3", "x86-64-v4"];

/// Most names an error message lists before `…`.
const MAX_LISTED: usize = 8;

/// Lists user-given items, sanitized, at most [`MAX_LISTED`].
fn list_user(items: &[String]) -> String {
    let mut out = items.iter().take(MAX_LISTED).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    if items.len() > MAX_LISTED {
        out.push_str(", …");
    }
    out
}

/// Makes a domain's policy from its config's `cpuid=` string (libxl-like)
/// on a host whose policy is `host`.
///
/// The spec is a comma-separated list; whitespace around items and empty
/// items are ignored, and an empty spec is the host's policy. The first
/// item may be a base (any case, `_` for `-` accepted):
///
/// * `host`: the host's policy (also the base when none is given);
/// * `x86-64` or `x86-64-v1`, `x86-64-v2`, `x86-64-v3`, `x86-64-v4`: that
///   psABI level, which the host must hold entirely.
///
/// Every other item is `name=0` (remove the feature and everything that
/// depends on it) or `name=1` (add it; the host must have it), applied in
/// order; names are [`FEATURES`] names or their aliases, in any case, with
/// `.` or `-` accepted for `_` (`sse4.1`). A feature added with `=1` must
/// end up with everything it depends on (`x86-64-v2,avx2=1` is refused:
/// add `xsave=1,avx=1` too). Errors are one line starting `cpuid: `, e.g.
/// `cpuid: avx512f=1 but this host lacks avx512f` or `cpuid: unknown
/// feature avx512 (did you mean avx512f?)`. Xen's legacy
/// `leaf:register=bits` form is refused.
pub fn parse_spec(spec: &str, host: &CpuPolicy) -> Result<CpuPolicy, String> {
    let mut items = spec.split(',').map(str::trim).filter(|s| !s.is_empty()).peekable();
    let mut policy = host.clone();
    if let Some(first) = items.next_if(|s| !s.contains('=')) {
        let base = first.to_ascii_lowercase().replace('_', "-");
        if base != "host" {
            let Some(b) = CpuPolicy::baseline(&base) else {
                if lookup(first).is_some() {
                    return Err(format!("cpuid: {} needs =0 or =1", sanitize(first, 40)));
                }
                let hint = closest(&base, BASES.iter().rev().copied())
                    .map_or(String::new(), |c| format!(" (did you mean {c}?)"));
                return Err(format!(
                    "cpuid: unknown base {}{hint}; expected host or x86-64-v1 … x86-64-v4",
                    sanitize(first, 40)
                ));
            };
            // The feature names say it all; the XCR0 components follow them.
            let mut missing = b.missing_on(host);
            if missing.iter().any(|m| !m.starts_with("xsave-")) {
                missing.retain(|m| !m.starts_with("xsave-"));
            }
            if !missing.is_empty() {
                let name = if base == "x86-64" { "x86-64-v1" } else { base.as_str() };
                return Err(format!("cpuid: {name} needs {}, which this host lacks", join(&missing)));
            }
            policy = b;
        }
    }
    let mut edits: Vec<(usize, bool)> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut unknown_names: Vec<String> = Vec::new();
    for item in items {
        let Some((name, value)) = item.split_once('=') else {
            let base = item.to_ascii_lowercase().replace('_', "-");
            if BASES.contains(&base.as_str()) {
                return Err(format!("cpuid: the base {} must be the first item", sanitize(item, 40)));
            }
            return Err(format!("cpuid: {} needs =0 or =1", sanitize(item, 40)));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.contains(':') {
            return Err(format!(
                "cpuid: {}: Xen's leaf:register=bits form is not supported; use feature names, e.g. avx=0",
                sanitize(item, 40)
            ));
        }
        if name.is_empty() {
            return Err(format!("cpuid: {} has no feature name before '='", sanitize(item, 40)));
        }
        let on = match value {
            "0" => false,
            "1" => true,
            _ => return Err(format!("cpuid: {}: the value must be 0 or 1", sanitize(item, 40))),
        };
        match lookup(name) {
            Some(i) => edits.push((i, on)),
            None => {
                let shown = sanitize(name, 40);
                // Past MAX_LISTED names only "there are more" matters.
                if unknown.len() <= MAX_LISTED && !unknown_names.contains(&shown) {
                    let hint = closest(name, FEATURES.iter().map(|f| f.name))
                        .map_or(String::new(), |c| format!(" (did you mean {c}?)"));
                    unknown.push(format!("{shown}{hint}"));
                    unknown_names.push(shown);
                }
            }
        }
    }
    if !unknown.is_empty() {
        let s = if unknown.len() == 1 { "" } else { "s" };
        return Err(format!("cpuid: unknown feature{s} {}", list_user(&unknown)));
    }
    let mut lacking: Vec<usize> = Vec::new();
    for &(i, on) in &edits {
        if on && !host.has_idx(i) && !lacking.contains(&i) {
            lacking.push(i);
        }
    }
    if !lacking.is_empty() {
        let asked: Vec<String> = lacking.iter().map(|&i| format!("{}=1", FEATURES[i].name)).collect();
        let names: Vec<&str> = lacking.iter().map(|&i| FEATURES[i].name).collect();
        return Err(format!("cpuid: {} but this host lacks {}", list_user(&asked), join(&names)));
    }
    for &(i, on) in &edits {
        policy.set_idx(i, on);
    }
    policy.close();
    // A feature the spec ends up asking for (its last edit is =1) but that
    // closing removed lacks something it depends on.
    let mut last = [false; FEATURES.len()];
    for &(i, on) in &edits {
        last[i] = on;
    }
    let mut problems: Vec<String> = Vec::new();
    for (i, &on) in last.iter().enumerate() {
        if on && !policy.has_idx(i) {
            let needs: Vec<&str> =
                all_deps(i).into_iter().filter(|&d| !policy.has_idx(d)).map(|d| FEATURES[d].name).collect();
            problems.push(format!("{}=1 needs {}", FEATURES[i].name, join(&needs)));
        }
    }
    if !problems.is_empty() {
        return Err(format!("cpuid: {}, which the policy lacks", problems.join("; ")));
    }
    Ok(policy)
}

/// Everything feature `i` depends on, directly or not, in table order.
fn all_deps(i: usize) -> Vec<usize> {
    let mut set = [false; FEATURES.len()];
    let mut stack = Vec::from([i]);
    while let Some(f) = stack.pop() {
        for &(g, needs) in DEPS {
            if g == f && !set[needs] {
                set[needs] = true;
                stack.push(needs);
            }
        }
    }
    (0..FEATURES.len()).filter(|&d| set[d]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::{bits, cpuid_qemu64 as qemu64, cpuid_skylake as skylake};
    use crate::testutil::Rng;
    use alloc::vec;

    fn sky() -> CpuPolicy {
        CpuPolicy::from_cpuid(skylake, 0xE7)
    }

    fn qemu() -> CpuPolicy {
        CpuPolicy::from_cpuid(qemu64, 0)
    }

    const SKYLAKE_NAMES: &[&str] = &[
        "sse3",
        "pclmulqdq",
        "ssse3",
        "fma",
        "cx16",
        "pcid",
        "sse4_1",
        "sse4_2",
        "x2apic",
        "movbe",
        "popcnt",
        "aes",
        "xsave",
        "avx",
        "f16c",
        "rdrand",
        "fpu",
        "tsc",
        "msr",
        "cx8",
        "cmov",
        "clflush",
        "mmx",
        "fxsr",
        "sse",
        "sse2",
        "fsgsbase",
        "bmi1",
        "avx2",
        "smep",
        "bmi2",
        "erms",
        "invpcid",
        "avx512f",
        "avx512dq",
        "rdseed",
        "adx",
        "smap",
        "clflushopt",
        "clwb",
        "avx512cd",
        "avx512bw",
        "avx512vl",
        "pku",
        "md_clear",
        "lahf_lm",
        "abm",
        "prefetchw",
        "syscall",
        "nx",
        "pdpe1gb",
        "rdtscp",
        "lm",
        "xsaveopt",
        "xsavec",
        "xgetbv1",
        "xsaves",
    ];

    const QEMU_NAMES: &[&str] = &[
        "sse3", "cx16", "fpu", "tsc", "msr", "cx8", "cmov", "clflush", "mmx", "fxsr", "sse", "sse2", "lahf_lm",
        "syscall", "nx", "lm",
    ];

    fn v(names: &[&str]) -> Vec<&'static str> {
        names.iter().map(|n| FEATURES[lookup(n).unwrap()].name).collect()
    }

    #[test]
    fn table_is_consistent() {
        for (i, f) in FEATURES.iter().enumerate() {
            assert_eq!(lookup(f.name), Some(i), "{}", f.name);
            assert_eq!(WORDS[usize::from(f.word)], (f.leaf, f.subleaf, f.reg));
            for g in &FEATURES[i + 1..] {
                assert_ne!(f.name, g.name);
                assert!(f.word != g.word || f.bit != g.bit, "{} and {} share a bit", f.name, g.name);
            }
        }
        for (a, t) in ALIASES {
            assert!(lookup(a).is_some() && FEATURES.iter().all(|f| f.name != *a), "{a} -> {t}");
        }
        // Every word has a feature; the baselines are closed.
        assert!(MASKS.iter().all(|&m| m != 0));
        for (name, _) in LEVELS {
            let b = CpuPolicy::baseline(name).unwrap();
            let mut c = b.clone();
            c.close();
            assert_eq!(b, c, "{name} is not closed under DEPS");
        }
        assert_eq!(CpuPolicy::empty().encode().len(), 2 + NWORDS * WORD_BYTES + 8);
        assert!(CpuPolicy::empty().encode().len() <= MAX_BLOB_BYTES);
    }

    #[test]
    fn skylake_host() {
        let p = sky();
        assert_eq!(p.names(), v(SKYLAKE_NAMES));
        assert_eq!(p.xcr0, 0xE7);
        assert_eq!(p.level(), "x86-64-v4");
        assert_eq!(p.summary(), format!("custom, {} features (x86-64-v4+)", SKYLAKE_NAMES.len()));
        assert!(p.has("avx512f") && p.has("PNI") && p.has("lzcnt") && p.has("sse4.2") && !p.has("sha"));
        assert!(!p.has("no-such-thing"));
    }

    #[test]
    fn qemu64_host() {
        let p = qemu();
        assert_eq!(p.names(), v(QEMU_NAMES));
        assert_eq!(p.xcr0, XCR0_X87 | XCR0_SSE);
        assert_eq!(p.level(), "x86-64-v1");
        assert_eq!(p.count(), 16);
    }

    #[test]
    fn missing_leaves_read_as_zero() {
        // Max basic leaf 1, no extended leaves; every other leaf answers
        // all ones, as garbage would.
        let cpu = |leaf: u32, _| match leaf {
            0 => [1, 0, 0, 0],
            0x8000_0000 => [0x1234, 0, 0, 0],
            _ => [u32::MAX; 4],
        };
        let p = CpuPolicy::from_cpuid(cpu, 0x7);
        assert_eq!(p.words[2..], [0; 6]);
        assert_eq!(p.words[0], MASKS[0]);
        assert_eq!(p.words[1], MASKS[1]);
        assert_eq!(p.xcr0, 0x7);
        // Max extended 0x80000000: leaf 0x80000001 not read.
        let cpu = |leaf: u32, _| match leaf {
            0 => [7, 0, 0, 0],
            0x8000_0000 => [0x8000_0000, 0, 0, 0],
            _ => [u32::MAX; 4],
        };
        let p = CpuPolicy::from_cpuid(cpu, 0xE7);
        assert!(p.has("avx512vl") && !p.has("lm") && !p.has("xsaveopt"));
    }

    #[test]
    fn xcr0_rules() {
        // The host did not enable AVX: no avx or anything needing it.
        let p = CpuPolicy::from_cpuid(skylake, 0x3);
        assert!(p.has("xsave") && p.has("xsaveopt") && !p.has("avx"));
        for gone in ["fma", "f16c", "avx2", "avx512f", "avx512vl"] {
            assert!(!p.has(gone), "{gone}");
        }
        assert_eq!(p.xcr0, 0x3);
        assert_eq!(p.level(), "x86-64-v2");
        // AVX but only part of AVX-512.
        let p = CpuPolicy::from_cpuid(skylake, 0x67);
        assert!(p.has("avx2") && !p.has("avx512f") && !p.has("avx512bw"));
        assert_eq!(p.xcr0, 0x7);
        assert_eq!(p.level(), "x86-64-v3");
        // No XSAVE at all.
        let p = CpuPolicy::from_cpuid(skylake, 0);
        assert!(!p.has("xsave") && !p.has("xsaves") && !p.has("avx") && p.has("sse4_2") && p.has("aes"));
        assert_eq!(p.xcr0, 0x3);
        // Baselines.
        assert_eq!(CpuPolicy::baseline("x86-64-v2").unwrap().xcr0, 0x3);
        assert_eq!(CpuPolicy::baseline("x86-64-v3").unwrap().xcr0, 0x7);
        assert_eq!(CpuPolicy::baseline("x86-64-v4").unwrap().xcr0, 0xE7);
        // Removing avx512f drops its components.
        let p = parse_spec("avx512f=0", &sky()).unwrap();
        assert_eq!(p.xcr0, 0x7);
        assert!(!p.has("avx512dq") && p.has("avx2"));
    }

    #[test]
    fn baselines() {
        let host = sky();
        let v1 = parse_spec("x86-64-v1", &host).unwrap();
        assert_eq!(
            v1.names(),
            v(&["fpu", "tsc", "msr", "cx8", "cmov", "clflush", "mmx", "fxsr", "sse", "sse2", "syscall", "nx", "lm"])
        );
        assert_eq!(parse_spec("x86-64", &host).unwrap(), v1);
        assert_eq!(parse_spec(" X86_64 ", &host).unwrap(), v1);
        let v2 = parse_spec("x86-64-v2", &host).unwrap();
        assert_eq!(
            v2.names(),
            v(&[
                "sse3", "ssse3", "cx16", "sse4_1", "sse4_2", "popcnt", "fpu", "tsc", "msr", "cx8", "cmov", "clflush",
                "mmx", "fxsr", "sse", "sse2", "lahf_lm", "syscall", "nx", "lm"
            ])
        );
        let v3 = parse_spec("x86-64-v3", &host).unwrap();
        assert_eq!(v3.count(), v2.count() + 9);
        assert!(v3.has("avx2") && v3.has("abm") && v3.has("xsave") && !v3.has("xsaveopt") && !v3.has("aes"));
        let v4 = parse_spec("x86-64-v4", &host).unwrap();
        assert_eq!(v4.count(), v3.count() + 5);
        for (p, name) in [(&v1, "x86-64-v1"), (&v2, "x86-64-v2"), (&v3, "x86-64-v3"), (&v4, "x86-64-v4")] {
            assert_eq!(p.level(), name);
            assert_eq!(p.summary(), name);
            assert!(p.missing_on(&host).is_empty());
        }
        assert_eq!(parse_spec("x86-64-v1", &qemu()).unwrap(), v1);
        assert_eq!(CpuPolicy::empty().level(), "below x86-64-v1");
        assert_eq!(CpuPolicy::empty().summary(), "custom, 0 features (below x86-64-v1)");
        assert_eq!(CpuPolicy::baseline("x86-64-v5"), None);
    }

    #[test]
    fn host_base_and_edits() {
        let host = sky();
        for spec in ["", "host", " host ", "HOST,", ",,", "host, ,"] {
            assert_eq!(parse_spec(spec, &host).unwrap(), host, "{spec:?}");
        }
        let p = parse_spec("x86-64-v2, aes=1 ,pclmulqdq=1,popcnt=0", &host).unwrap();
        assert!(p.has("aes") && p.has("pclmulqdq") && !p.has("popcnt"));
        assert_eq!(p.level(), "x86-64-v1");
        assert_eq!(p.summary(), "custom, 21 features (x86-64-v1+)");
        // Without a base, edits apply to the host.
        let p = parse_spec("avx=0", &host).unwrap();
        for gone in ["avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl"] {
            assert!(!p.has(gone), "{gone}");
        }
        assert!(p.has("xsave") && p.has("bmi2"));
        assert_eq!(p.xcr0, 0x3);
        // Aliases, case and separators; the last edit wins.
        let p = parse_spec("x86-64-v3,SSE4.2=0,lzcnt=0,pni=1,sse4-1=1,avx2=0,avx2=1", &host).unwrap();
        assert!(!p.has("sse4_2") && !p.has("abm") && p.has("sse3") && p.has("sse4_1") && p.has("avx2"));
        // Cascading removal: sse2=0 takes everything SSE-based with it.
        let p = parse_spec("sse2=0", &host).unwrap();
        assert!(p.has("sse") && !p.has("sse4_2") && !p.has("avx") && !p.has("aes") && p.has("xsave"));
        // Adding the dependencies too is fine, in any order.
        let p = parse_spec("x86-64-v2,avx2=1,avx=1,xsave=1", &host).unwrap();
        assert!(p.has("avx2"));
        assert_eq!(p.xcr0, 0x7);
    }

    #[test]
    fn spec_errors() {
        let host = sky();
        let err = |spec: &str| parse_spec(spec, &host).unwrap_err();
        assert_eq!(err("host,tm=0"), "cpuid: unknown feature tm");
        assert_eq!(err("avx512=0"), "cpuid: unknown feature avx512 (did you mean avx512f?)");
        assert_eq!(err("sse41=1,foo=0,sse41=0"), "cpuid: unknown features sse41 (did you mean sse4_1?), foo");
        assert_eq!(err("sha=1"), "cpuid: sha=1 but this host lacks sha");
        assert_eq!(err("x86-64-v2,sha_ni=1,umip=1"), "cpuid: sha=1, umip=1 but this host lacks sha, umip");
        assert_eq!(err("x86-64-v2,avx2=1"), "cpuid: avx2=1 needs xsave, avx, which the policy lacks");
        assert_eq!(err("xsave=0,avx=1"), "cpuid: avx=1 needs xsave, which the policy lacks");
        assert_eq!(err("avx=1,avx=0,fma=1"), "cpuid: fma=1 needs avx, which the policy lacks");
        assert_eq!(
            err("x86-64-v5"),
            "cpuid: unknown base x86-64-v5 (did you mean x86-64-v4?); expected host or x86-64-v1 … x86-64-v4"
        );
        assert_eq!(err("avx"), "cpuid: avx needs =0 or =1");
        assert_eq!(err("host,avx"), "cpuid: avx needs =0 or =1");
        assert_eq!(err("avx=0,x86-64-v2"), "cpuid: the base x86-64-v2 must be the first item");
        assert_eq!(err("avx=2"), "cpuid: avx=2: the value must be 0 or 1");
        assert_eq!(err("avx=yes"), "cpuid: avx=yes: the value must be 0 or 1");
        assert_eq!(err("=1"), "cpuid: =1 has no feature name before '='");
        assert!(err("host,0x00000001:ecx=xxxxxxxxxxxxxxxxxxxxxxxxxxxx0xxx").contains("Xen's leaf:register=bits form"));
        let q = qemu();
        assert_eq!(parse_spec("avx=1", &q).unwrap_err(), "cpuid: avx=1 but this host lacks avx");
        assert_eq!(
            parse_spec("x86-64-v2", &q).unwrap_err(),
            "cpuid: x86-64-v2 needs ssse3, sse4_1, sse4_2, popcnt, which this host lacks"
        );
        assert_eq!(
            parse_spec("x86-64-v4", &CpuPolicy::from_cpuid(skylake, 0x7)).unwrap_err(),
            "cpuid: x86-64-v4 needs avx512f, avx512dq, avx512cd, avx512bw, avx512vl, which this host lacks"
        );
        // Hostile text stays on one line and bounded.
        let long = format!("{}=1", "\n".repeat(1000));
        let e = err(&long);
        assert!(!e.contains('\n') && e.len() < 200, "{e}");
        assert_eq!(err("a\nb=1"), "cpuid: unknown feature a?b");
        let e = err(&format!("{}=1", "y".repeat(5000)));
        assert!(e.len() < 100, "{e}");
        let many: Vec<String> = (0..100).map(|i| format!("f{i}=1")).collect();
        let e = err(&many.join(","));
        assert!(e.ends_with(", …") && e.len() < 200, "{e}");
    }

    #[test]
    fn migration_check() {
        let (s, q) = (sky(), qemu());
        let mut want: Vec<&str> = SKYLAKE_NAMES.iter().copied().filter(|n| !QEMU_NAMES.contains(n)).collect();
        want.extend(["xsave-avx", "xsave-avx512"]);
        assert_eq!(s.missing_on(&q), want);
        assert_eq!(&s.missing_on(&q)[..6], &["pclmulqdq", "ssse3", "fma", "pcid", "sse4_1", "sse4_2"], "table order");
        assert!(q.missing_on(&s).is_empty());
        assert!(s.missing_on(&s).is_empty());
        // A v2 domain fits a v2-capable host, not qemu64.
        let d = parse_spec("x86-64-v2", &s).unwrap();
        assert_eq!(d.missing_on(&q), vec!["ssse3", "sse4_1", "sse4_2", "popcnt"]);
        // XCR0 alone: a host whose XCR0 lacks AVX-512 but claims the bits.
        let mut odd = s.clone();
        odd.xcr0 = 0x7;
        assert_eq!(s.missing_on(&odd), vec!["xsave-avx512"]);
        // Pool baseline.
        assert_eq!(s.intersect(&q), q);
        assert_eq!(q.intersect(&s), q);
        let no512 = CpuPolicy::from_cpuid(skylake, 0x7);
        let pool = s.intersect(&no512);
        assert_eq!(pool, no512);
        assert_eq!(pool.xcr0, 0x7);
        assert!(pool.missing_on(&no512).is_empty());
    }

    #[test]
    fn filter_hides_what_the_policy_lacks() {
        let host = sky();
        let v2 = parse_spec("x86-64-v2", &host).unwrap();
        let l1 = v2.filter_leaf(1, 0, skylake(1, 0));
        let ecx = l1[2];
        assert_eq!(ecx & (1 << 28), 0, "avx");
        assert_eq!(ecx & (1 << 26), 0, "xsave");
        assert_eq!(ecx & OSXSAVE_BIT, 0, "osxsave");
        assert_eq!(ecx & (1 << 25), 0, "aes");
        assert_eq!(ecx, bits(&[0, 3, 5, 9, 13, 19, 20, 23, 24]), "sse3 ssse3 cx16 sse4 popcnt + non-table bits");
        assert_eq!(l1[0], skylake(1, 0)[0]);
        assert_eq!(l1[1], skylake(1, 0)[1]);
        assert_eq!(l1[3], skylake(1, 0)[3], "every table EDX bit is in v2; others pass");
        // Leaf 1 ignores the subleaf.
        assert_eq!(v2.filter_leaf(1, 5, skylake(1, 0)), l1);
        let l7 = v2.filter_leaf(7, 0, skylake(7, 0));
        assert_eq!(l7[1], bits(&[1, 4, 11, 14, 25]), "avx2, bmi, avx512 gone; non-table bits pass");
        assert_eq!(l7[2], 0, "pku gone");
        assert_eq!(l7[3], bits(&[26, 27, 28, 29, 31]), "md_clear gone; spec-ctrl bits pass");
        // Leaf 7 subleaf 1 is not a policy word.
        assert_eq!(v2.filter_leaf(7, 1, [u32::MAX; 4]), [u32::MAX; 4]);
        for sub in 0..4 {
            assert_eq!(v2.filter_leaf(0xD, sub, skylake(0xD, sub)), [0; 4], "no xsave: leaf 0xD hidden");
        }
        let lx = v2.filter_leaf(0x8000_0001, 0, skylake(0x8000_0001, 0));
        assert_eq!(lx, [0, 0, bits(&[0]), bits(&[11, 20, 29])]);
        // Leaves the table does not cover pass unchanged.
        assert_eq!(v2.filter_leaf(0, 0, skylake(0, 0)), skylake(0, 0));
        assert_eq!(v2.filter_leaf(0x4000_0000, 0, [1, 2, 3, 4]), [1, 2, 3, 4]);
        // The host policy hides only what is outside the table's knowledge... not at all.
        assert_eq!(host.filter_leaf(1, 0, skylake(1, 0)), skylake(1, 0));
        assert_eq!(host.filter_leaf(7, 0, skylake(7, 0)), skylake(7, 0));
        // Filtering never sets bits.
        assert_eq!(host.filter_leaf(1, 0, [0; 4]), [0; 4]);
    }

    #[test]
    fn filter_leaf_0xd() {
        let host = sky();
        let v3 = parse_spec("x86-64-v3", &host).unwrap();
        assert_eq!(v3.filter_leaf(0xD, 0, skylake(0xD, 0)), [0x7, 0xA88, 0xA88, 0]);
        assert_eq!(v3.filter_leaf(0xD, 1, skylake(0xD, 1)), [0, 0xA88, 0, 0], "no xsaveopt.., no XSS");
        assert_eq!(v3.filter_leaf(0xD, 2, skylake(0xD, 2)), skylake(0xD, 2), "AVX component");
        for sub in [3, 5, 6, 7, 9, 63, 64, 1000, u32::MAX] {
            assert_eq!(v3.filter_leaf(0xD, sub, [1, 2, 3, 4]), [0; 4], "subleaf {sub}");
        }
        assert_eq!(host.filter_leaf(0xD, 0, skylake(0xD, 0)), [0xE7, 0xA88, 0xA88, 0], "no MPX, no PKRU");
        assert_eq!(host.filter_leaf(0xD, 1, skylake(0xD, 1)), [0xF, 0xA88, 0, 0]);
        assert_eq!(host.filter_leaf(0xD, 6, skylake(0xD, 6)), skylake(0xD, 6));
        let p = parse_spec("xsaveopt=0,xsaves=0", &host).unwrap();
        assert_eq!(p.filter_leaf(0xD, 1, skylake(0xD, 1)), [0b0110, 0xA88, 0, 0]);
        // qemu64 policy on AMD-mirror bits: only table features it lacks go.
        let q = qemu();
        let ext = q.filter_leaf(0x8000_0001, 0, qemu64(0x8000_0001, 0));
        assert_eq!(ext, qemu64(0x8000_0001, 0));
        let p = parse_spec("mmx=0", &q).unwrap();
        let ext = p.filter_leaf(0x8000_0001, 0, qemu64(0x8000_0001, 0));
        assert_eq!(ext[3], qemu64(0x8000_0001, 0)[3] & !(1 << 23));
        assert_eq!(p.filter_leaf(1, 0, qemu64(1, 0))[3], qemu64(1, 0)[3] & !(1 << 23));
        // OSPKE goes with pku.
        let mut regs = skylake(7, 0);
        regs[2] |= OSPKE_BIT;
        assert_eq!(host.filter_leaf(7, 0, regs)[2], bits(&[3, 4]));
        assert_eq!(parse_spec("pku=0", &host).unwrap().filter_leaf(7, 0, regs)[2], 0);
    }

    #[test]
    fn encode_decode_round_trip() {
        let host = sky();
        let mut policies = vec![host.clone(), qemu(), CpuPolicy::empty(), CpuPolicy::from_cpuid(skylake, 0x3)];
        for spec in ["x86-64-v1", "x86-64-v2", "x86-64-v3", "x86-64-v4", "avx=0,aes=0", "x86-64-v2,aes=1"] {
            policies.push(parse_spec(spec, &host).unwrap());
        }
        for p in &policies {
            let blob = p.encode();
            assert_eq!(blob.len(), 114);
            assert_eq!(blob[0], 1);
            assert_eq!(&CpuPolicy::decode(&blob).unwrap(), p);
        }
        // Words in another order, and zero words left out.
        let q = qemu();
        let blob = q.encode();
        let words: Vec<&[u8]> = blob[2..blob.len() - 8].chunks(WORD_BYTES).collect();
        let mut shuffled = vec![1u8, 0];
        for w in words.iter().rev() {
            if w[9..] != [0, 0, 0, 0] {
                shuffled.extend_from_slice(w);
                shuffled[1] += 1;
            }
        }
        shuffled.extend_from_slice(&blob[blob.len() - 8..]);
        assert_eq!(shuffled[1], 4);
        assert_eq!(CpuPolicy::decode(&shuffled).unwrap(), q);
        // Just a header and xcr0: the empty policy.
        assert_eq!(CpuPolicy::decode(&[1, 0, 3, 0, 0, 0, 0, 0, 0, 0]).unwrap(), CpuPolicy::empty());
    }

    #[test]
    fn decode_errors() {
        let good = sky().encode();
        let err = |b: &[u8]| CpuPolicy::decode(b).unwrap_err();
        assert_eq!(err(&[]), "cpu policy: blob is 0 bytes, too short for a header");
        assert_eq!(err(&[1]), "cpu policy: blob is 1 bytes, too short for a header");
        let mut b = good.clone();
        b[0] = 2;
        assert_eq!(err(&b), "cpu policy: unknown blob version 2 (this host reads 1)");
        assert_eq!(err(&good[..good.len() - 1]), "cpu policy: blob is 113 bytes but 8 words need 114");
        let mut b = good.clone();
        b.push(0);
        assert_eq!(err(&b), "cpu policy: blob is 115 bytes but 8 words need 114");
        assert_eq!(err(&[0; 600]), "cpu policy: blob is 600 bytes, more than the 512 allowed");
        // Duplicate word: the first word again, in place of the second.
        let mut b = good.clone();
        b.copy_within(2..2 + WORD_BYTES, 2 + WORD_BYTES);
        assert_eq!(err(&b), "cpu policy: word leaf 0x1 subleaf 0 ecx appears twice");
        // Unknown (leaf, subleaf, register).
        let mut b = good.clone();
        b[2 + 8] = 4;
        assert_eq!(err(&b), "cpu policy: unknown word leaf 0x1 subleaf 0 register 4 (not in blob version 1)");
        let mut b = good.clone();
        b[2 + 4] = 1;
        assert!(err(&b).starts_with("cpu policy: unknown word leaf 0x1 subleaf 1"));
        // A bit the table has no feature for (leaf 1 ECX bit 27, OSXSAVE).
        let mut b = good.clone();
        b[2 + 9 + 3] |= 1 << 3;
        assert_eq!(err(&b), "cpu policy: word leaf 0x1 subleaf 0 ecx has unknown feature bits 0x8000000");
        // avx2 without avx.
        let mut b = good.clone();
        b[2 + 9 + 3] &= !(1 << 4);
        assert_eq!(err(&b), "cpu policy: fma without avx");
        // xcr0 not matching.
        let mut b = good.clone();
        let n = b.len();
        b[n - 8] = 0x07;
        assert_eq!(err(&b), "cpu policy: xcr0 0x7 does not match the features (expected 0xe7)");
        let mut b = good.clone();
        b[n - 1] = 0x80;
        assert!(err(&b).starts_with("cpu policy: xcr0 0x80000000000000e7 does not match"));
    }

    #[test]
    fn decode_of_random_and_mutated_bytes_never_panics() {
        let mut rng = Rng(0xC0FF_EE12_3456_789A);
        let bases = [sky().encode(), qemu().encode(), parse_spec("x86-64-v3", &sky()).unwrap().encode()];
        let mut accepted = 0;
        for round in 0..20_000 {
            let mut b = bases[round % bases.len()].clone();
            for _ in 0..1 + rng.next() % 3 {
                let at = (rng.next() % (b.len() as u64 + 1)) as usize;
                match rng.next() % 6 {
                    0 => {
                        if let Some(x) = b.get_mut(at) {
                            *x = rng.next() as u8;
                        }
                    }
                    1 | 2 => {
                        if let Some(x) = b.get_mut(at) {
                            *x ^= 1 << (rng.next() % 8);
                        }
                    }
                    3 => b.truncate(at),
                    4 => b.insert(at, rng.next() as u8),
                    _ => {
                        // Drop one whole word and fix the count.
                        let n = usize::from(b.get(1).copied().unwrap_or(0));
                        if n > 0 && b.len() == 2 + n * WORD_BYTES + 8 {
                            let w = (rng.next() as usize) % n;
                            b.drain(2 + w * WORD_BYTES..2 + (w + 1) * WORD_BYTES);
                            b[1] -= 1;
                        }
                    }
                }
            }
            match CpuPolicy::decode(&b) {
                Ok(p) => {
                    accepted += 1;
                    assert_eq!(CpuPolicy::decode(&p.encode()).unwrap(), p);
                    let mut c = p.clone();
                    c.close();
                    assert_eq!(c, p, "decode accepted an unclosed policy");
                }
                Err(e) => assert!(!e.is_empty() && !e.contains('\n') && e.len() < 200, "{e}"),
            }
        }
        assert!(accepted > 500, "only {accepted} accepted");
        for _ in 0..5000 {
            let len = (rng.next() % 600) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len > 2 && rng.next().is_multiple_of(2) {
                b[0] = 1;
                b[1] = ((len.saturating_sub(10)) / WORD_BYTES) as u8;
            }
            if let Err(e) = CpuPolicy::decode(&b) {
                assert!(!e.contains('\n'));
            }
        }
    }

    #[test]
    fn random_specs_never_panic() {
        let mut rng = Rng(7);
        let pieces = ["host", "x86-64-v2", "avx", "=", "0", "1", ",", " ", "sse4.1", ":", "é", "\n", "avx512f", "x"];
        let hosts = [sky(), qemu(), CpuPolicy::empty()];
        for round in 0..5000 {
            let spec: String =
                (0..rng.next() % 12).map(|_| pieces[(rng.next() % pieces.len() as u64) as usize]).collect();
            let host = &hosts[round % hosts.len()];
            match parse_spec(&spec, host) {
                Ok(p) => {
                    assert!(p.missing_on(host).is_empty(), "{spec:?}");
                    let mut c = p.clone();
                    c.close();
                    assert_eq!(c, p);
                }
                Err(e) => assert!(e.starts_with("cpuid: ") && !e.contains('\n'), "{e}"),
            }
        }
    }

    #[test]
    fn huge_specs_stay_cheap() {
        let host = sky();
        let spec = "avx=0,avx=1,".repeat(50_000);
        assert_eq!(parse_spec(&spec, &host).unwrap(), host);
        let spec: String = (0..50_000).map(|i| format!("nosuch{i}=1,")).collect();
        let e = parse_spec(&spec, &host).unwrap_err();
        assert!(e.starts_with("cpuid: unknown features nosuch0, nosuch1,") && e.ends_with(", …"), "{e}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("avx512", FEATURES.iter().map(|f| f.name)), Some("avx512f"));
        assert_eq!(closest("ssse", FEATURES.iter().map(|f| f.name)), Some("ssse3"));
        assert_eq!(closest("tm", FEATURES.iter().map(|f| f.name)), None);
        assert_eq!(closest("", FEATURES.iter().map(|f| f.name)), None);
        assert_eq!(edit_distance(b"kitten", b"sitting"), 3);
        let mut want =
            vec![idx("fxsr"), idx("sse"), idx("sse2"), idx("xsave"), idx("avx"), idx("avx2"), idx("avx512f")];
        want.sort();
        assert_eq!(all_deps(idx("avx512vl")), want);
    }
}
