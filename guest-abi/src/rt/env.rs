//! What a guest knows about itself: a copy of its start-info page, and its
//! command line split into arguments.

use super::sync::SetOnce;
use crate::{field_str, StartInfo};

/// The guest's environment, handed to its main: a copy of the
/// [`StartInfo`] page taken at entry (the page itself never changes).
#[derive(Clone, Copy)]
pub struct Env {
    info: StartInfo,
}

static ENV: SetOnce<Env> = SetOnce::new();

/// The environment of this guest (also available on secondary vCPUs).
///
/// # Panics
///
/// Before the runtime has read the start-info page (never, in a guest:
/// main is called after that).
pub fn env() -> &'static Env {
    ENV.get().expect("guest_abi::rt::env() before start")
}

/// The environment, if the runtime has read it already.
pub(crate) fn try_env() -> Option<&'static Env> {
    ENV.get()
}

/// Stores the environment once, at start (vCPU 0, before main).
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
pub(crate) fn set_env(value: Env) -> &'static Env {
    match ENV.set(value) {
        Ok(e) => e,
        Err(_) => env(),
    }
}

impl Env {
    /// Wraps a start-info record (the runtime copies the real one at entry;
    /// tests make their own).
    pub fn from_start_info(info: StartInfo) -> Env {
        Env { info }
    }

    /// The raw start-info record.
    pub fn start_info(&self) -> &StartInfo {
        &self.info
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        field_str(&self.info.name)
    }

    /// The command line (`extra=` in the domain configuration).
    pub fn cmdline(&self) -> &str {
        field_str(&self.info.cmdline)
    }

    /// The domain id at creation.
    pub fn domid(&self) -> u32 {
        self.info.domid
    }

    /// How many vCPUs the domain has (ids `0..vcpus`).
    pub fn vcpus(&self) -> u32 {
        self.info.vcpus
    }

    /// Guest memory size: addresses `[0, mem_bytes)`.
    pub fn mem_bytes(&self) -> u64 {
        self.info.mem_bytes
    }

    /// The heap range `[heap_start, heap_end)` the runtime allocates from.
    pub fn heap(&self) -> (u64, u64) {
        (self.info.heap_start, self.info.heap_end)
    }

    /// Top of vCPU 0's initial stack.
    pub fn stack_top(&self) -> u64 {
        self.info.stack_top
    }

    /// The command line's whitespace-separated words, each a `key=value`
    /// pair or a bare word.
    pub fn args(&self) -> Args<'_> {
        Args::new(self.cmdline())
    }

    /// The value of the last `key=value` argument named `key`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args().filter(|a| a.key == key).filter_map(|a| a.value).last()
    }

    /// `key`'s value as a number (decimal, or hex with `0x`; `_` allowed
    /// between digits); `None` if absent or not a number.
    pub fn arg_u64(&self, key: &str) -> Option<u64> {
        self.arg(key).and_then(parse_u64)
    }

    /// `key`'s value as a number, or `default`.
    pub fn arg_u64_or(&self, key: &str, default: u64) -> u64 {
        self.arg_u64(key).unwrap_or(default)
    }

    /// Whether the bare word `word` (or `word=...`) is on the command line.
    pub fn has(&self, word: &str) -> bool {
        self.args().any(|a| a.key == word)
    }
}

/// One command-line argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg<'a> {
    /// The text before the first `=`, or the whole word.
    pub key: &'a str,
    /// The text after the first `=`; `None` for a bare word.
    pub value: Option<&'a str>,
}

/// Iterator over the arguments of a command line.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    words: core::str::SplitAsciiWhitespace<'a>,
}

impl<'a> Args<'a> {
    /// Splits `cmdline` into arguments.
    pub fn new(cmdline: &'a str) -> Args<'a> {
        Args { words: cmdline.split_ascii_whitespace() }
    }
}

impl<'a> Iterator for Args<'a> {
    type Item = Arg<'a>;

    fn next(&mut self) -> Option<Arg<'a>> {
        let word = self.words.next()?;
        Some(match word.split_once('=') {
            Some((key, value)) => Arg { key, value: Some(value) },
            None => Arg { key: word, value: None },
        })
    }
}

/// Parses `123`, `1_000`, `0x1f`; `None` for anything else or on overflow.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') {
        return None;
    }
    let mut v: u64 = 0;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(radix)?;
        v = v.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{ABI_VERSION, START_MAGIC};
    use std::vec::Vec;

    fn env_with(name: &str, cmdline: &str) -> Env {
        let mut info = StartInfo {
            magic: START_MAGIC,
            abi_version: ABI_VERSION,
            domid: 7,
            vcpus: 2,
            flags: 0,
            mem_bytes: 32 << 20,
            heap_start: 0x30_0000,
            heap_end: (32 << 20) - 0x1_0000,
            stack_top: 32 << 20,
            name: [0; 64],
            cmdline: [0; 1024],
        };
        info.name[..name.len()].copy_from_slice(name.as_bytes());
        info.cmdline[..cmdline.len()].copy_from_slice(cmdline.as_bytes());
        Env::from_start_info(info)
    }

    #[test]
    fn splits_arguments() {
        let e = env_with("rx7", "  period_ms=250 verbose\tfault=cli  x= ");
        let args: Vec<Arg<'_>> = e.args().collect();
        assert_eq!(
            args,
            [
                Arg { key: "period_ms", value: Some("250") },
                Arg { key: "verbose", value: None },
                Arg { key: "fault", value: Some("cli") },
                Arg { key: "x", value: Some("") },
            ]
        );
        assert_eq!(e.name(), "rx7");
        assert_eq!(e.domid(), 7);
        assert_eq!(e.vcpus(), 2);
        assert_eq!(e.arg_u64("period_ms"), Some(250));
        assert_eq!(e.arg_u64_or("missing", 1000), 1000);
        assert_eq!(e.arg("fault"), Some("cli"));
        assert_eq!(e.arg("verbose"), None);
        assert!(e.has("verbose") && e.has("fault") && !e.has("cli"));
    }

    #[test]
    fn last_value_wins() {
        let e = env_with("a", "n=1 n=2 n=0x10");
        assert_eq!(e.arg_u64("n"), Some(16));
    }

    #[test]
    fn empty_cmdline() {
        let e = env_with("", "");
        assert_eq!(e.args().count(), 0);
        assert_eq!(e.name(), "");
        assert_eq!(e.arg_u64_or("seed", 3), 3);
    }

    #[test]
    fn a_value_may_contain_equals() {
        let e = env_with("a", "k=a=b");
        assert_eq!(e.arg("k"), Some("a=b"));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("1_000_000"), Some(1_000_000));
        assert_eq!(parse_u64("0xfF"), Some(255));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "0x", "-1", "1e3", "_1", "1_", "18446744073709551616", "12ms"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }
}
