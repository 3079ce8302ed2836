//! Domain configuration files in Xen's `xl.cfg` format, for
//! `create /var/xen/rx7.cfg`.
//!
//! The syntax is the Python-like subset that `xl` reads: one `key = value`
//! assignment per line (or several separated by `;`), `#` comments to the
//! end of the line, blank lines, and values that are
//!
//! * integers: decimal (`512`, `-1`) or hexadecimal (`0x200`); a decimal
//!   with a leading zero (`010`) is refused because `xl` would read it as
//!   octal;
//! * strings in `'single'` or `"double"` quotes with the escapes `\n`,
//!   `\t`, `\\`, `\'`, `\"` and `\xHH` (`\xHH` is the character U+00HH, as
//!   in Python); a string ends on its line;
//! * lists `[ value, value, ]` of numbers and strings (not of lists), which
//!   may span lines and hold comments; a trailing comma is allowed.
//!
//! A key given twice is an error, and so is `key += value`. [`parse`] only
//! reads the syntax; [`domain_config`] turns the assignments into a
//! [`DomainConfig`], checking every value. Keys it does not use are not
//! errors: each becomes a warning such as
//! `rx7.cfg:4: maxmem: not supported by rhv; ignored`.
//!
//! Every error is a [`ConfigError`] naming the file, the line and (once it
//! is known) the key; its `Display` is one line. Nothing here panics, on
//! any input.
//!
//! Differences from `xl` worth knowing:
//!
//! * `on_crash` defaults to `preserve` (xl: `destroy`) so that a crashed
//!   domain stays around for inspection; `on_poweroff` defaults to
//!   `destroy` and `on_reboot` to `restart`, as in xl. `soft-reset` is not
//!   supported.
//! * `weight` is rhv's name for the scheduler weight; xl's `cpu_weight` is
//!   accepted as the same setting (giving both is an error).
//! * Numeric keys also accept a quoted number (`memory = "512"`), as xl
//!   does; string keys do not accept a bare number.
//! * `type` must be `"pv"` if given (rhv runs only paravirtual guests);
//!   `builder = "hvm"` is refused, other `builder` values are ignored with a
//!   warning.
//! * Disks are raw image files only: `phy:`, `tap:…`, `qcow2:` and other
//!   prefixes or formats, CD-ROMs and disk scripts are refused with a
//!   message saying so. The disk target must be an absolute path.
//! * `cpuid` is kept as a string for later CPU feature levelling; the old
//!   list form is refused.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::iter::Peekable;
use core::str::Chars;

use crate::domain::{validate_name, MAX_EXTRA_BYTES, MAX_MEMORY_MIB};
use crate::sched::DEFAULT_WEIGHT;
use crate::shell::sanitize;

/// `memory` when the file does not set it, in MiB (xl's default).
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// `vcpus` when the file does not set it.
pub const DEFAULT_VCPUS: u32 = 1;
/// The longest path accepted for `kernel` and disk targets, in bytes.
pub const MAX_PATH_BYTES: usize = 4095;
/// The longest `cpuid` string accepted, in bytes.
pub const MAX_CPUID_BYTES: usize = 4096;
/// The longest `vif` entry accepted, in bytes (as for `create … vif=`).
pub const MAX_VIF_BYTES: usize = 128;
/// The longest bridge name (Linux `IFNAMSIZ` - 1).
pub const MAX_BRIDGE_LEN: usize = 15;
/// The longest virtual disk device name (`xvda`, …).
pub const MAX_VDEV_LEN: usize = 15;

/// How much of a user-supplied value an error message shows.
const SHOWN_CHARS: usize = 40;

/// A value on the right of `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A decimal or `0x` hexadecimal integer.
    Int(i64),
    /// A quoted string, escapes resolved.
    Str(String),
    /// `[ … ]`: numbers and strings.
    List(Vec<Value>),
}

impl Value {
    /// What kind of value this is, for error messages: "a number 7",
    /// "a string 'abc'", "a list".
    fn describe(&self) -> String {
        match self {
            Self::Int(n) => format!("the number {n}"),
            Self::Str(s) => format!("the string '{}'", sanitize(s, SHOWN_CHARS)),
            Self::List(_) => "a list".to_owned(),
        }
    }
}

/// A problem in a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given to [`parse`] / [`domain_config`].
    pub file: String,
    /// The line, counting from 1.
    pub line: usize,
    /// The key the error is about, once known.
    pub key: Option<String>,
    /// What is wrong (one line; user text in it is already sanitized).
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `rx7.cfg:12: memory: expected a number, found 'lots'`, or without
    /// the `memory: ` part when there is no key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", sanitize(&self.file, 256), self.line)?;
        if let Some(key) = &self.key {
            write!(f, "{}: ", sanitize(key, SHOWN_CHARS))?;
        }
        f.write_str(&sanitize(&self.message, 512))
    }
}

/// One assignment as read, with the line of the key and, for a list, the
/// line of each element.
struct Entry {
    key: String,
    value: Value,
    line: usize,
    item_lines: Vec<usize>,
}

/// A character reader that counts lines.
struct Lexer<'a> {
    file: &'a str,
    chars: Peekable<Chars<'a>>,
    line: usize,
}

impl<'a> Lexer<'a> {
    fn new(file: &'a str, text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Self { file, chars: text.chars().peekable(), line: 1 }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line = self.line.saturating_add(1);
        }
        c
    }

    fn error(&self, line: usize, key: Option<&str>, message: String) -> ConfigError {
        ConfigError { file: self.file.to_owned(), line, key: key.map(ToOwned::to_owned), message }
    }

    /// Skips spaces, tabs and carriage returns (not newlines).
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r' | '\u{c}' | '\u{b}')) {
            self.bump();
        }
    }

    /// Skips a `#` comment up to (not including) the newline.
    fn skip_comment(&mut self) {
        if self.peek() == Some('#') {
            while !matches!(self.peek(), None | Some('\n')) {
                self.bump();
            }
        }
    }

    /// Skips blanks, comments and newlines (inside a list).
    fn skip_space(&mut self) {
        loop {
            self.skip_blanks();
            self.skip_comment();
            if self.peek() == Some('\n') {
                self.bump();
            } else {
                return;
            }
        }
    }

    /// A run of characters that could belong to a bare word, for messages.
    fn word(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if c.is_whitespace() || matches!(c, ',' | ']' | '[' | '#' | ';' | '=' | '"' | '\'') {
                break;
            }
            out.push(c);
            self.bump();
            if out.len() > 64 {
                break;
            }
        }
        out
    }

    fn key(&mut self) -> Result<String, ConfigError> {
        let line = self.line;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
            _ => {
                let found = self.word();
                let found = if found.is_empty() { self.peek().map(String::from).unwrap_or_default() } else { found };
                return Err(self.error(
                    line,
                    None,
                    format!("expected a key name, found '{}'", sanitize(&found, SHOWN_CHARS)),
                ));
            }
        }
        let mut key = String::new();
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
            key.push(c);
            self.bump();
        }
        Ok(key)
    }

    fn value(&mut self, key: &str, in_list: bool) -> Result<(Value, Vec<usize>), ConfigError> {
        let line = self.line;
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.bump();
                Ok((Value::Str(self.string(key, q, line)?), Vec::new()))
            }
            Some('[') if in_list => Err(self.error(line, Some(key), "lists cannot be nested".to_owned())),
            Some('[') => {
                self.bump();
                self.list(key, line)
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => {
                let word = self.word();
                Ok((Value::Int(parse_int(&word).map_err(|m| self.error(line, Some(key), m))?), Vec::new()))
            }
            None | Some('\n' | '#' | ';') => Err(self.error(line, Some(key), "missing value after '='".to_owned())),
            Some(_) => {
                let word = self.word();
                let word = if word.is_empty() { self.peek().map(String::from).unwrap_or_default() } else { word };
                Err(self.error(
                    line,
                    Some(key),
                    format!(
                        "expected a value (a number, a quoted string or a [list]), found '{}'{}",
                        sanitize(&word, SHOWN_CHARS),
                        if word.chars().all(|c| c.is_alphanumeric() || "_-./:".contains(c)) {
                            " (strings must be quoted)"
                        } else {
                            ""
                        }
                    ),
                ))
            }
        }
    }

    /// The rest of a string after its opening quote `q`.
    fn string(&mut self, key: &str, q: char, start: usize) -> Result<String, ConfigError> {
        let mut out = String::new();
        loop {
            let line = self.line;
            match self.bump() {
                None | Some('\n') => {
                    return Err(self.error(start, Some(key), format!("unterminated string (no closing {q})")));
                }
                Some(c) if c == q => return Ok(out),
                Some('\\') => {
                    let esc = self.bump();
                    let c = match esc {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some(c @ ('\\' | '\'' | '"')) => c,
                        Some('x') => {
                            let hi = self.bump().and_then(|c| c.to_digit(16));
                            let lo = self.bump().and_then(|c| c.to_digit(16));
                            match (hi, lo) {
                                (Some(hi), Some(lo)) => char::from((hi * 16 + lo) as u8),
                                _ => {
                                    return Err(self.error(
                                        line,
                                        Some(key),
                                        "\\x must be followed by two hex digits".to_owned(),
                                    ))
                                }
                            }
                        }
                        Some('\n') | None => {
                            return Err(self.error(start, Some(key), format!("unterminated string (no closing {q})")))
                        }
                        Some(other) => {
                            return Err(self.error(
                                line,
                                Some(key),
                                format!(
                                    "unknown escape '\\{}' (use \\n, \\t, \\\\, \\', \\\" or \\xHH)",
                                    sanitize(&String::from(other), 1)
                                ),
                            ))
                        }
                    };
                    out.push(c);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// The rest of a list after its `[`, opened on line `start`.
    fn list(&mut self, key: &str, start: usize) -> Result<(Value, Vec<usize>), ConfigError> {
        let mut items = Vec::new();
        let mut lines = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                Some(']') => {
                    self.bump();
                    return Ok((Value::List(items), lines));
                }
                None => {
                    return Err(self.error(
                        self.line,
                        Some(key),
                        format!("list opened on line {start} is not closed with ']'"),
                    ))
                }
                Some(',') => {
                    return Err(self.error(self.line, Some(key), "missing list element before ','".to_owned()))
                }
                Some(_) => {}
            }
            lines.push(self.line);
            let (item, _) = self.value(key, true)?;
            items.push(item);
            self.skip_space();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {}
                None => {
                    return Err(self.error(
                        self.line,
                        Some(key),
                        format!("list opened on line {start} is not closed with ']'"),
                    ))
                }
                Some(_) => {
                    let line = self.line;
                    let word = self.word();
                    let word = if word.is_empty() { self.peek().map(String::from).unwrap_or_default() } else { word };
                    return Err(self.error(
                        line,
                        Some(key),
                        format!("expected ',' or ']' in the list, found '{}'", sanitize(&word, SHOWN_CHARS)),
                    ));
                }
            }
        }
    }

    /// After a value: blanks, an optional comment, then a newline, `;` or
    /// the end.
    fn end_of_statement(&mut self, key: &str) -> Result<(), ConfigError> {
        self.skip_blanks();
        self.skip_comment();
        match self.peek() {
            None => Ok(()),
            Some('\n' | ';') => {
                self.bump();
                Ok(())
            }
            Some(_) => {
                let line = self.line;
                let word = self.word();
                let word = if word.is_empty() { self.peek().map(String::from).unwrap_or_default() } else { word };
                Err(self.error(
                    line,
                    Some(key),
                    format!(
                        "unexpected '{}' after the value (one assignment per line; strings must be quoted)",
                        sanitize(&word, SHOWN_CHARS)
                    ),
                ))
            }
        }
    }
}

/// An integer token: `[+-]` then decimal digits or `0x` hex digits.
fn parse_int(word: &str) -> Result<i64, String> {
    let bad = || format!("expected a number, found '{}'", sanitize(word, SHOWN_CHARS));
    let (negative, digits) = match word.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, word.strip_prefix('+').unwrap_or(word)),
    };
    let (radix, digits) = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => (16, hex),
        None => (10, digits),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    if radix == 10 && digits.len() > 1 && digits.starts_with('0') {
        return Err(format!(
            "'{}': a leading zero is ambiguous (xl reads it as octal); write the number without it",
            sanitize(word, SHOWN_CHARS)
        ));
    }
    let magnitude = u64::from_str_radix(digits, radix)
        .map_err(|_| format!("number too large: '{}'", sanitize(word, SHOWN_CHARS)))?;
    let value = if negative { 0i64.checked_sub_unsigned(magnitude) } else { i64::try_from(magnitude).ok() };
    value.ok_or_else(|| format!("number too large: '{}'", sanitize(word, SHOWN_CHARS)))
}

fn parse_entries(file: &str, text: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut lx = Lexer::new(file, text);
    let mut out: Vec<Entry> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        // Blank lines, comments and empty statements.
        loop {
            lx.skip_blanks();
            lx.skip_comment();
            if matches!(lx.peek(), Some('\n' | ';')) {
                lx.bump();
            } else {
                break;
            }
        }
        if lx.peek().is_none() {
            return Ok(out);
        }
        let line = lx.line;
        let key = lx.key()?;
        lx.skip_blanks();
        match lx.peek() {
            Some('=') => {
                lx.bump();
            }
            Some('+') => {
                lx.bump();
                let message = if lx.peek() == Some('=') {
                    "'+=' is not supported by rhv; give the whole value with '='".to_owned()
                } else {
                    "expected '=' after the key".to_owned()
                };
                return Err(lx.error(line, Some(&key), message));
            }
            _ => return Err(lx.error(line, Some(&key), "expected '=' after the key".to_owned())),
        }
        lx.skip_blanks();
        let (value, item_lines) = lx.value(&key, false)?;
        lx.end_of_statement(&key)?;
        if let Some(first) = seen.get(&key) {
            return Err(lx.error(line, Some(&key), format!("set twice (first on line {first})")));
        }
        seen.insert(key.clone(), line);
        out.push(Entry { key, value, line, item_lines });
    }
}

/// Reads the assignments of an xl.cfg file, in file order, as
/// `(key, value, line of the key)`. `file` is only used in errors.
pub fn parse(file: &str, text: &str) -> Result<Vec<(String, Value, usize)>, ConfigError> {
    Ok(parse_entries(file, text)?.into_iter().map(|e| (e.key, e.value, e.line)).collect())
}

/// What to do when a domain crashes, powers off or reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `destroy`: tear the domain down.
    Destroy,
    /// `restart`: destroy it and create it again from the same config.
    Restart,
    /// `preserve`: keep it (not running) for inspection.
    Preserve,
    /// `coredump-destroy`: dump its memory, then destroy it.
    CoredumpDestroy,
    /// `coredump-restart`: dump its memory, then restart it.
    CoredumpRestart,
    /// `rename-restart`: rename the old domain, keep it, start a new one.
    RenameRestart,
}

impl Action {
    const ALL: [Self; 6] = [
        Self::Destroy,
        Self::Restart,
        Self::Preserve,
        Self::CoredumpDestroy,
        Self::CoredumpRestart,
        Self::RenameRestart,
    ];

    /// The xl name (`coredump-destroy`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Destroy => "destroy",
            Self::Restart => "restart",
            Self::Preserve => "preserve",
            Self::CoredumpDestroy => "coredump-destroy",
            Self::CoredumpRestart => "coredump-restart",
            Self::RenameRestart => "rename-restart",
        }
    }

    /// The action with xl name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Its number in the migration stream (the order above, from 0).
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|&a| a == self).unwrap_or(0) as u8
    }

    /// The action numbered `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Does the domain come back after this action?
    pub fn restarts(self) -> bool {
        matches!(self, Self::Restart | Self::CoredumpRestart | Self::RenameRestart)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `vif` entry: `mac=00:16:3e:01:02:03,bridge=xenbr0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifSpec {
    /// `mac=`, checked (six `:`-separated hex pairs, not multicast) and in
    /// lower case; `None` to generate one.
    pub mac: Option<String>,
    /// `bridge=`.
    pub bridge: Option<String>,
    /// The whole entry as written, other keys (`ip=`, `model=`, …)
    /// included; those are warned about.
    pub raw: String,
}

/// Read-write or read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `w` / `rw` (the default).
    ReadWrite,
    /// `r` / `ro`.
    ReadOnly,
}

/// A `disk` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The image file, an absolute path (`/var/xen/rx7.img`).
    pub target: String,
    /// The image format; always `raw`.
    pub format: String,
    /// The guest's device name (`xvda`).
    pub vdev: String,
    /// Read-write or read-only.
    pub access: Access,
}

/// A checked domain configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// `name`, required, a valid domain name.
    pub name: String,
    /// `memory` in MiB, 1..=[`MAX_MEMORY_MIB`]; default [`DEFAULT_MEMORY_MIB`].
    pub memory_mib: u64,
    /// `vcpus`, 1..=[`guest_abi::MAX_VCPUS`]; default [`DEFAULT_VCPUS`].
    pub vcpus: u32,
    /// `kernel`, required: the guest image path.
    pub kernel: String,
    /// `extra` (or xl's `cmdline`): the guest command line; default empty.
    pub extra: String,
    /// `vif`: the network interfaces.
    pub vifs: Vec<VifSpec>,
    /// `disk`: the disks, each with a different `vdev`.
    pub disks: Vec<DiskSpec>,
    /// `on_crash`; default [`Action::Preserve`] (xl: destroy).
    pub on_crash: Action,
    /// `on_poweroff`; default [`Action::Destroy`].
    pub on_poweroff: Action,
    /// `on_reboot`; default [`Action::Restart`].
    pub on_reboot: Action,
    /// `weight` (or xl's `cpu_weight`), 1..=65535; default [`DEFAULT_WEIGHT`].
    pub weight: u16,
    /// `cpuid`, the string form, kept for CPU feature levelling.
    pub cpuid: Option<String>,
    /// One line per ignored key or setting, `rx7.cfg:4: maxmem: not
    /// supported by rhv; ignored`.
    pub warnings: Vec<String>,
}

/// xl keys that rhv does not implement (ignored with a warning).
const XL_UNSUPPORTED: &[&str] = &[
    "acpi",
    "altp2m",
    "apic",
    "bootloader",
    "bootloader_args",
    "boot",
    "builder",
    "cap",
    "channel",
    "claim_mode",
    "cpus",
    "cpus_soft",
    "device_model_override",
    "device_model_version",
    "device_tree",
    "driver_domain",
    "dtdev",
    "e820_host",
    "gic_version",
    "hap",
    "init_seclabel",
    "iomem",
    "ioports",
    "irqs",
    "keymap",
    "localtime",
    "max_event_channels",
    "max_grant_frames",
    "max_maptrack_frames",
    "maxmem",
    "maxvcpus",
    "nestedhvm",
    "nomigrate",
    "on_soft_reset",
    "on_watchdog",
    "p9",
    "pae",
    "pci",
    "pci_permissive",
    "pool",
    "pvcalls",
    "ramdisk",
    "rdm",
    "root",
    "rtc_timeoffset",
    "sdl",
    "seclabel",
    "serial",
    "soundhw",
    "stdvga",
    "tsc_mode",
    "usbctrl",
    "usbdev",
    "uuid",
    "vdispl",
    "vfb",
    "viridian",
    "vkb",
    "vnc",
    "vncdisplay",
    "vnclisten",
    "vnuma",
    "vsnd",
    "vtpm",
    "videoram",
];

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A number from an `Int` or a quoted number, in `min..=max`.
fn number(value: &Value, min: u64, max: u64) -> Result<u64, String> {
    let n = match value {
        Value::Int(n) => *n,
        Value::Str(s) => parse_int(s.trim())?,
        Value::List(_) => return Err("expected a number, found a list".to_owned()),
    };
    u64::try_from(n)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("must be from {min} to {max} (got {n})"))
}

fn string(value: &Value) -> Result<&str, String> {
    match value {
        Value::Str(s) => Ok(s),
        other => Err(format!("expected a quoted string, found {}", other.describe())),
    }
}

/// A path: non-empty, at most [`MAX_PATH_BYTES`], no control characters.
fn path(value: &Value) -> Result<String, String> {
    let s = string(value)?;
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else if s.len() > MAX_PATH_BYTES {
        Err(format!("path too long ({} bytes, at most {MAX_PATH_BYTES})", s.len()))
    } else if has_control(s) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

fn action(value: &Value) -> Result<Action, String> {
    let s = string(value)?;
    if s == "soft-reset" {
        return Err("'soft-reset' is not supported by rhv".to_owned());
    }
    Action::from_name(s).ok_or_else(|| {
        format!(
            "unknown action '{}' (expected destroy, restart, preserve, coredump-destroy, coredump-restart or rename-restart)",
            sanitize(s, SHOWN_CHARS)
        )
    })
}

/// The strings of a list, each with its line.
fn string_list<'v>(
    value: &'v Value,
    lines: &[usize],
    line: usize,
    example: &str,
) -> Result<Vec<(&'v str, usize)>, String> {
    let Value::List(items) = value else {
        return Err(format!("expected a list of strings like [ '{example}' ], found {}", value.describe()));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Str(s) => Ok((s.as_str(), lines.get(i).copied().unwrap_or(line))),
            other => {
                Err(format!("entry {}: expected a quoted string, found {}", i.saturating_add(1), other.describe()))
            }
        })
        .collect()
}

/// Checks `aa:bb:cc:dd:ee:ff` (hex, not multicast) and lowercases it.
fn check_mac(mac: &str) -> Result<String, String> {
    let bad = || {
        format!("invalid MAC address '{}' (expected six hex pairs like 00:16:3e:01:02:03)", sanitize(mac, SHOWN_CHARS))
    };
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6 || !parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit())) {
        return Err(bad());
    }
    let first = parts.first().and_then(|p| u8::from_str_radix(p, 16).ok()).ok_or_else(bad)?;
    if first & 1 != 0 {
        return Err(format!("MAC address '{}' is a multicast address", sanitize(mac, SHOWN_CHARS)));
    }
    Ok(mac.to_ascii_lowercase())
}

/// Parses one `vif` entry; warnings (without the location prefix) go to
/// `warn`.
pub fn parse_vif(spec: &str, warn: &mut Vec<String>) -> Result<VifSpec, String> {
    if spec.len() > MAX_VIF_BYTES {
        return Err(format!("too long ({} bytes, at most {MAX_VIF_BYTES})", spec.len()));
    }
    if has_control(spec) {
        return Err("must not contain control characters".to_owned());
    }
    let mut vif = VifSpec { mac: None, bridge: None, raw: spec.to_owned() };
    let mut seen: Vec<&str> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!("'{}' is not key=value", sanitize(part, SHOWN_CHARS)));
        };
        let (key, value) = (key.trim(), value.trim());
        if seen.contains(&key) {
            return Err(format!("'{}' given twice", sanitize(key, SHOWN_CHARS)));
        }
        seen.push(key);
        match key {
            "mac" => vif.mac = Some(check_mac(value)?),
            "bridge" => {
                let ok = !value.is_empty()
                    && value.len() <= MAX_BRIDGE_LEN
                    && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                if !ok {
                    return Err(format!(
                        "invalid bridge name '{}' (1 to {MAX_BRIDGE_LEN} characters of A-Z a-z 0-9 _ . -)",
                        sanitize(value, SHOWN_CHARS)
                    ));
                }
                vif.bridge = Some(value.to_owned());
            }
            _ => warn.push(format!("'{}' is not supported by rhv; ignored", sanitize(key, SHOWN_CHARS))),
        }
    }
    Ok(vif)
}

fn check_format(format: &str) -> Result<(), String> {
    if format == "raw" {
        Ok(())
    } else {
        Err(format!("format '{}' is not supported by rhv; only raw image files", sanitize(format, SHOWN_CHARS)))
    }
}

/// Removes a deprecated `prefix:` from a disk target; returns the target
/// and whether a `file:`/`raw:` prefix set the format.
fn strip_disk_prefix(target: &str) -> Result<(&str, bool), String> {
    if target.starts_with('/') {
        return Ok((target, false));
    }
    let Some((prefix, rest)) = target.split_once(':') else {
        return Ok((target, false));
    };
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Ok((target, false));
    }
    match prefix {
        "file" | "raw" => Ok((rest, true)),
        "phy" => {
            Err("'phy:' (block devices) is not supported by rhv; use an image file: 'file:/path/to.img,xvda,w'"
                .to_owned())
        }
        other => Err(format!(
            "'{}:' disks are not supported by rhv; only raw image files ('file:/path/to.img,xvda,w')",
            sanitize(other, SHOWN_CHARS)
        )),
    }
}

/// Parses one `disk` entry: positional `file:/x.img,xvda,w` /
/// `/x.img,raw,xvda,rw`, or keywords `format=raw, vdev=xvda, access=rw,
/// target=/x.img` (`target=` last: the rest of the entry is the path).
pub fn parse_disk(spec: &str) -> Result<DiskSpec, String> {
    if has_control(spec) {
        return Err("must not contain control characters".to_owned());
    }
    // target, format, vdev, access: None = not given; Some("") = default.
    let mut slots: [Option<String>; 4] = Default::default();
    const NAMES: [&str; 4] = ["target", "format", "vdev", "access"];
    let mut rest = spec;
    loop {
        let (part, next) = match rest.split_once(',') {
            Some((p, n)) => (p, Some(n)),
            None => (rest, None),
        };
        let part = part.trim();
        if let Some((key, value)) = part.split_once('=') {
            let key = key.trim();
            let value = value.trim();
            if key == "target" {
                // Everything after `target=` is the path, commas included.
                let whole = rest.trim_start();
                let value = whole.split_once('=').map_or("", |(_, v)| v).trim();
                set_slot(&mut slots, 0, value)?;
                break;
            }
            match NAMES.iter().position(|n| *n == key) {
                Some(i) => set_slot(&mut slots, i, value)?,
                None if key == "devtype" && value == "disk" => {}
                None if key == "devtype" => return Err("CD-ROMs are not supported by rhv".to_owned()),
                None => return Err(format!("disk parameter '{}' is not supported by rhv", sanitize(key, SHOWN_CHARS))),
            }
        } else if matches!(part, "cdrom" | "empty") {
            return Err("CD-ROMs are not supported by rhv".to_owned());
        } else if next.is_some() || !part.is_empty() {
            match slots.iter().position(Option::is_none) {
                Some(i) => set_slot(&mut slots, i, part)?,
                None if part.is_empty() => {}
                None => {
                    return Err(format!(
                        "unexpected '{}' (target, format, vdev and access are all given)",
                        sanitize(part, SHOWN_CHARS)
                    ))
                }
            }
        }
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    let [target, format, vdev, access] = slots;
    let target = target.unwrap_or_default();
    if target.is_empty() {
        return Err("no target (the image file): 'file:/path/to.img,xvda,w'".to_owned());
    }
    if !target.starts_with('/') {
        return Err(format!("target '{}' must be an absolute path", sanitize(&target, SHOWN_CHARS)));
    }
    if target.len() > MAX_PATH_BYTES {
        return Err(format!("target too long ({} bytes, at most {MAX_PATH_BYTES})", target.len()));
    }
    let format = format.filter(|f| !f.is_empty()).unwrap_or_else(|| "raw".to_owned());
    check_format(&format)?;
    let vdev = vdev.unwrap_or_default();
    if vdev.is_empty() {
        return Err("no vdev (the guest's device name, such as xvda)".to_owned());
    }
    let vdev_ok = vdev.len() <= MAX_VDEV_LEN
        && vdev.starts_with(|c: char| c.is_ascii_lowercase())
        && vdev.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !vdev_ok {
        return Err(format!(
            "invalid vdev '{}' (a device name such as xvda: lower-case letters and digits)",
            sanitize(&vdev, SHOWN_CHARS)
        ));
    }
    let access = match access.as_deref() {
        None | Some("" | "w" | "rw") => Access::ReadWrite,
        Some("r" | "ro") => Access::ReadOnly,
        Some(other) => {
            return Err(format!("invalid access '{}' (expected rw, w, ro or r)", sanitize(other, SHOWN_CHARS)))
        }
    };
    Ok(DiskSpec { target, format, vdev, access })
}

/// Sets positional/named disk parameter `i`; the target may carry a
/// deprecated prefix that also sets the format.
fn set_slot(slots: &mut [Option<String>; 4], i: usize, value: &str) -> Result<(), String> {
    let names = ["target", "format", "vdev", "access"];
    let name = names.get(i).copied().unwrap_or("parameter");
    let Some(slot) = slots.get_mut(i) else { return Ok(()) };
    if slot.is_some() {
        return Err(format!("{name} given twice"));
    }
    if i != 0 {
        *slot = Some(value.to_owned());
        return Ok(());
    }
    let (target, set_format) = strip_disk_prefix(value)?;
    *slot = Some(target.to_owned());
    if set_format {
        if let Some(format) = slots.get_mut(1) {
            match format {
                Some(f) if !f.is_empty() && f != "raw" => {
                    return Err(format!("format '{}' conflicts with the file: prefix", sanitize(f, SHOWN_CHARS)))
                }
                Some(_) => {}
                None => *format = Some("raw".to_owned()),
            }
        }
    }
    Ok(())
}

/// Reads and checks an xl.cfg domain configuration. `file` names the file
/// in errors and warnings.
pub fn domain_config(file: &str, text: &str) -> Result<DomainConfig, ConfigError> {
    let entries = parse_entries(file, text)?;
    let mut cfg = DomainConfig {
        name: String::new(),
        memory_mib: DEFAULT_MEMORY_MIB,
        vcpus: DEFAULT_VCPUS,
        kernel: String::new(),
        extra: String::new(),
        vifs: Vec::new(),
        disks: Vec::new(),
        on_crash: Action::Preserve,
        on_poweroff: Action::Destroy,
        on_reboot: Action::Restart,
        weight: DEFAULT_WEIGHT,
        cpuid: None,
        warnings: Vec::new(),
    };
    let mut have_name = false;
    let mut have_kernel = false;
    let mut extra_key: Option<(&str, usize)> = None;
    let mut weight_key: Option<(&str, usize)> = None;
    for e in &entries {
        let err =
            |message: String| ConfigError { file: file.to_owned(), line: e.line, key: Some(e.key.clone()), message };
        let warn = |what: &str| format!("{}:{}: {}: {what}", sanitize(file, 256), e.line, e.key);
        match e.key.as_str() {
            "name" => {
                let name = string(&e.value).map_err(err)?;
                validate_name(name).map_err(|x| err(format!("{x}")))?;
                name.clone_into(&mut cfg.name);
                have_name = true;
            }
            "memory" => cfg.memory_mib = number(&e.value, 1, MAX_MEMORY_MIB).map_err(err)?,
            "vcpus" => {
                let n = number(&e.value, 1, u64::from(guest_abi::MAX_VCPUS)).map_err(err)?;
                cfg.vcpus = u32::try_from(n).unwrap_or(DEFAULT_VCPUS);
            }
            "kernel" => {
                cfg.kernel = path(&e.value).map_err(err)?;
                have_kernel = true;
            }
            "extra" | "cmdline" => {
                if let Some((other, line)) = extra_key {
                    return Err(err(format!(
                        "'{other}' was already given on line {line}; use only one of extra and cmdline"
                    )));
                }
                extra_key = Some((e.key.as_str(), e.line));
                let s = string(&e.value).map_err(err)?;
                if s.len() > MAX_EXTRA_BYTES {
                    return Err(err(format!("too long ({} bytes, at most {MAX_EXTRA_BYTES})", s.len())));
                }
                if has_control(s) {
                    return Err(err("must not contain control characters".to_owned()));
                }
                s.clone_into(&mut cfg.extra);
            }
            "weight" | "cpu_weight" => {
                if let Some((other, line)) = weight_key {
                    return Err(err(format!(
                        "'{other}' was already given on line {line}; use only one of weight and cpu_weight"
                    )));
                }
                weight_key = Some((e.key.as_str(), e.line));
                let n = number(&e.value, 1, u64::from(u16::MAX)).map_err(err)?;
                cfg.weight = u16::try_from(n).unwrap_or(DEFAULT_WEIGHT);
            }
            "on_crash" => cfg.on_crash = action(&e.value).map_err(err)?,
            "on_poweroff" => cfg.on_poweroff = action(&e.value).map_err(err)?,
            "on_reboot" => cfg.on_reboot = action(&e.value).map_err(err)?,
            "cpuid" => {
                let s = match &e.value {
                    Value::List(_) => {
                        return Err(err(
                            "the list form of cpuid is not supported; use the string form 'host,feature=0,...'"
                                .to_owned(),
                        ))
                    }
                    v => string(v).map_err(err)?,
                };
                if s.len() > MAX_CPUID_BYTES || has_control(s) {
                    return Err(err(format!("must be at most {MAX_CPUID_BYTES} bytes without control characters")));
                }
                cfg.cpuid = Some(s.to_owned());
            }
            "type" => {
                let s = string(&e.value).map_err(err)?;
                if s != "pv" {
                    return Err(err(format!(
                        "type '{}' is not supported; rhv runs only paravirtual guests (type = \"pv\")",
                        sanitize(s, SHOWN_CHARS)
                    )));
                }
            }
            "builder" if e.value == Value::Str("hvm".to_owned()) => {
                return Err(err("builder 'hvm' is not supported; rhv runs only paravirtual guests".to_owned()));
            }
            "vif" => {
                let items =
                    string_list(&e.value, &e.item_lines, e.line, "mac=00:16:3e:00:00:01,bridge=xenbr0").map_err(err)?;
                for (i, (spec, line)) in items.into_iter().enumerate() {
                    let n = i.saturating_add(1);
                    let mut w = Vec::new();
                    let vif =
                        parse_vif(spec, &mut w).map_err(|m| ConfigError { line, ..err(format!("entry {n}: {m}")) })?;
                    cfg.warnings
                        .extend(w.into_iter().map(|m| format!("{}:{line}: vif: entry {n}: {m}", sanitize(file, 256))));
                    cfg.vifs.push(vif);
                }
            }
            "disk" => {
                let items =
                    string_list(&e.value, &e.item_lines, e.line, "file:/var/xen/guest.img,xvda,w").map_err(err)?;
                for (i, (spec, line)) in items.into_iter().enumerate() {
                    let n = i.saturating_add(1);
                    let at = |m: String| ConfigError { line, ..err(format!("entry {n}: {m}")) };
                    let disk = parse_disk(spec).map_err(at)?;
                    if cfg.disks.iter().any(|d| d.vdev == disk.vdev) {
                        return Err(at(format!("vdev '{}' is used twice", disk.vdev)));
                    }
                    cfg.disks.push(disk);
                }
            }
            key if XL_UNSUPPORTED.contains(&key) => cfg.warnings.push(warn("not supported by rhv; ignored")),
            _ => cfg.warnings.push(warn("unknown key; ignored")),
        }
    }
    let end = |key: &str, message: &str| ConfigError {
        file: file.to_owned(),
        line: text.lines().count().max(1),
        key: Some(key.to_owned()),
        message: message.to_owned(),
    };
    if !have_name {
        return Err(end("name", "missing: every domain needs a name (name = \"rx7\")"));
    }
    if !have_kernel {
        return Err(end("kernel", "missing: the guest image to boot (kernel = \"/var/xen/rx7.elf\")"));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;
    use alloc::string::ToString;
    use alloc::vec;

    use crate::samples::XLCFG_RX7 as SEED;

    fn cfg(text: &str) -> DomainConfig {
        domain_config("rx7.cfg", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> ConfigError {
        match domain_config("rx7.cfg", text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e,
        }
    }

    /// The error as displayed.
    fn msg(text: &str) -> String {
        err(text).to_string()
    }

    const MIN: &str = "name = 'a'\nkernel = '/k'\n";

    fn with(extra_lines: &str) -> String {
        format!("{MIN}{extra_lines}")
    }

    #[test]
    fn action_codes_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_code(a.code()), Some(a));
        }
        assert_eq!(Action::from_code(6), None);
        assert!(Action::Restart.restarts() && !Action::Preserve.restarts());
    }

    #[test]
    fn seed_config() {
        let c = cfg(SEED);
        assert_eq!(c.name, "rx7");
        assert_eq!(c.memory_mib, 512);
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.kernel, "/var/xen/rx7.elf");
        assert_eq!(c.extra, "console=hvc0 period_ms=500");
        assert_eq!(
            c.vifs,
            vec![VifSpec {
                mac: Some("00:16:3e:00:00:07".into()),
                bridge: Some("xenbr0".into()),
                raw: "mac=00:16:3e:00:00:07,bridge=xenbr0".into()
            }]
        );
        assert_eq!(
            c.disks,
            vec![DiskSpec {
                target: "/var/xen/rx7.img".into(),
                format: "raw".into(),
                vdev: "xvda".into(),
                access: Access::ReadWrite
            }]
        );
        assert_eq!(c.on_crash, Action::Preserve);
        assert_eq!(c.on_poweroff, Action::Destroy);
        assert_eq!(c.on_reboot, Action::Restart);
        assert_eq!(c.weight, 256);
        assert_eq!(c.cpuid, None);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn seed_parse_lines() {
        let p = parse("rx7.cfg", SEED).unwrap();
        let keys: Vec<(&str, usize)> = p.iter().map(|(k, _, l)| (k.as_str(), *l)).collect();
        assert_eq!(
            keys,
            vec![
                ("name", 1),
                ("memory", 2),
                ("vcpus", 3),
                ("kernel", 4),
                ("extra", 5),
                ("vif", 6),
                ("disk", 7),
                ("on_crash", 8)
            ]
        );
        assert_eq!(p[1].1, Value::Int(512));
    }

    #[test]
    fn defaults() {
        let c = cfg(MIN);
        assert_eq!((c.memory_mib, c.vcpus, c.weight), (DEFAULT_MEMORY_MIB, 1, DEFAULT_WEIGHT));
        assert_eq!(c.memory_mib, 128);
        assert_eq!((c.on_crash, c.on_poweroff, c.on_reboot), (Action::Preserve, Action::Destroy, Action::Restart));
        assert!(c.extra.is_empty() && c.vifs.is_empty() && c.disks.is_empty() && c.warnings.is_empty());
    }

    #[test]
    fn values_and_quoting() {
        let p = parse(
            "t.cfg",
            "a = 'it''s'\n", // adjacent strings are not concatenated
        );
        assert!(p.is_err());
        let p = parse(
            "t.cfg",
            concat!(
                "a = 'sq \"dq\" \\' \\\\ \\n\\t\\x41\\x7e'\n",
                "b = \"dq 'sq' \\\" # not a comment\" # a comment\n",
                "c = 0x1F\n",
                "d = -5\n",
                "e = 0\n",
                "f = ''\n",
                "g=9223372036854775807\n",
                "h = -9223372036854775808\n",
                "i = '\\xe9'\n",
                "j = +3;k = 4 ; l = [];\n",
            ),
        )
        .unwrap();
        let v: Vec<&Value> = p.iter().map(|(_, v, _)| v).collect();
        assert_eq!(*v[0], Value::Str("sq \"dq\" ' \\ \n\tA~".into()));
        assert_eq!(*v[1], Value::Str("dq 'sq' \" # not a comment".into()));
        assert_eq!(*v[2], Value::Int(31));
        assert_eq!(*v[3], Value::Int(-5));
        assert_eq!(*v[4], Value::Int(0));
        assert_eq!(*v[5], Value::Str(String::new()));
        assert_eq!(*v[6], Value::Int(i64::MAX));
        assert_eq!(*v[7], Value::Int(i64::MIN));
        assert_eq!(*v[8], Value::Str("é".into()));
        assert_eq!(*v[9], Value::Int(3));
        assert_eq!((p[10].0.as_str(), &p[10].1, p[10].2), ("k", &Value::Int(4), 10));
        assert_eq!(p[11].1, Value::List(vec![]));
    }

    #[test]
    fn multiline_lists_with_comments() {
        let text = "# header\r\n\r\nname = 'rx7'   # the name\r\nkernel='/k'\ndisk = [ # disks\n  'file:/a.img,xvda,w',  # first\n\n  # a comment line\n  '/b.img,,xvdb,ro' ,\n  'format=raw, vdev=xvdc, access=r, target=/c,d.img',\n]\nvif = [\n'bridge=br0',\n'', ]\n";
        let c = cfg(text);
        assert_eq!(c.disks.len(), 3);
        assert_eq!(c.disks[1].target, "/b.img");
        assert_eq!(c.disks[1].access, Access::ReadOnly);
        assert_eq!(c.disks[2].target, "/c,d.img");
        assert_eq!(c.disks[2].vdev, "xvdc");
        assert_eq!(c.vifs.len(), 2);
        assert_eq!(c.vifs[1], VifSpec { mac: None, bridge: None, raw: String::new() });
        let p = parse("t", "x = [\n1,\n\n 'two' # c\n , 3 ]\ny = 1").unwrap();
        assert_eq!(p[0].1, Value::List(vec![Value::Int(1), Value::Str("two".into()), Value::Int(3)]));
        assert_eq!(p[1].2, 6);
        // An error in the third disk reports the line of that entry.
        let e = err("name='a'\nkernel='/k'\ndisk = [\n '/a,,xvda',\n\n 'phy:/dev/sdb,xvdb,w',\n]\n");
        assert_eq!((e.line, e.key.as_deref()), (6, Some("disk")));
        assert!(e.message.starts_with("entry 2: 'phy:'"), "{e}");
    }

    #[test]
    fn disk_forms() {
        let d = |s: &str| parse_disk(s);
        let want =
            DiskSpec { target: "/x.img".into(), format: "raw".into(), vdev: "xvda".into(), access: Access::ReadWrite };
        for s in [
            "file:/x.img,xvda,w",
            "raw:/x.img,xvda,rw",
            "/x.img,,xvda",
            "/x.img,raw,xvda,rw",
            "format=raw, vdev=xvda, access=rw, target=/x.img",
            "vdev=xvda,target=/x.img",
            " /x.img , raw , xvda , w ",
            "devtype=disk,/x.img,,xvda",
        ] {
            assert_eq!(d(s), Ok(want.clone()), "{s}");
        }
        assert_eq!(d("/x.img,,xvdb,r").map(|x| x.access), Ok(Access::ReadOnly));
        for (s, m) in [
            ("phy:/dev/sda,xvda,w", "'phy:' (block devices)"),
            ("tap:aio:/x.img,xvda,w", "'tap:' disks"),
            ("tap2:vhd:/x.img,xvda,w", "'tap2:' disks"),
            ("qcow2:/x.img,xvda,w", "'qcow2:' disks"),
            ("/x.img,qcow2,xvda", "format 'qcow2'"),
            ("/x.img,,hdc,cdrom", "CD-ROMs"),
            ("/x.img,,hdc,devtype=cdrom", "CD-ROMs"),
            ("/x.img,,xvda,w,script=block", "disk parameter 'script'"),
            ("/x.img,,xvda,wx", "invalid access 'wx'"),
            ("/x.img,,xvda,w,extra", "unexpected 'extra'"),
            ("x.img,,xvda", "must be an absolute path"),
            ("", "no target"),
            (",,xvda", "no target"),
            ("/x.img", "no vdev"),
            ("/x.img,,hdc:cdrom", "invalid vdev"),
            ("/x.img,,xvda,vdev=xvdb", "vdev given twice"),
            // file: already set the format, so the next positional is vdev.
            ("file:/x.img,qcow2,xvda", "invalid access 'xvda'"),
            ("format=qcow2,file:/x.img,xvda", "conflicts"),
            ("/x\n.img,,xvda", "control characters"),
        ] {
            let e = d(s).unwrap_err();
            assert!(e.contains(m), "{s}: {e}");
        }
    }

    #[test]
    fn vif_forms() {
        let mut w = Vec::new();
        let v = parse_vif("mac=00:16:3E:0a:0B:0c, bridge = xenbr0, ip=10.0.0.2, model=e1000", &mut w).unwrap();
        assert_eq!(v.mac.as_deref(), Some("00:16:3e:0a:0b:0c"));
        assert_eq!(v.bridge.as_deref(), Some("xenbr0"));
        assert_eq!(v.raw, "mac=00:16:3E:0a:0B:0c, bridge = xenbr0, ip=10.0.0.2, model=e1000");
        assert_eq!(w, vec!["'ip' is not supported by rhv; ignored", "'model' is not supported by rhv; ignored"]);
        for (s, m) in [
            ("mac=01:16:3e:00:00:01", "multicast"),
            ("mac=00:16:3e:00:00", "invalid MAC"),
            ("mac=00:16:3e:00:00:0g", "invalid MAC"),
            ("mac=000:16:3e:00:00:0", "invalid MAC"),
            ("bridge=", "invalid bridge"),
            ("bridge=a b", "invalid bridge"),
            ("bridge=0123456789abcdef", "invalid bridge"),
            ("xenbr0", "not key=value"),
            ("bridge=a,bridge=b", "given twice"),
        ] {
            let e = parse_vif(s, &mut Vec::new()).unwrap_err();
            assert!(e.contains(m), "{s}: {e}");
        }
        let long = format!("bridge=br0,{}", "x=1,".repeat(40));
        assert!(parse_vif(&long, &mut Vec::new()).unwrap_err().contains("too long"));
    }

    #[test]
    fn warnings() {
        let c = cfg(&with(
            "maxmem = 1024\nfrobnicate = 'x'\nvif = ['bridge=br0,ip=1.2.3.4']\nbuilder='generic'\ntype='pv'\n",
        ));
        assert_eq!(
            c.warnings,
            vec![
                "rx7.cfg:3: maxmem: not supported by rhv; ignored",
                "rx7.cfg:4: frobnicate: unknown key; ignored",
                "rx7.cfg:5: vif: entry 1: 'ip' is not supported by rhv; ignored",
                "rx7.cfg:6: builder: not supported by rhv; ignored",
            ]
        );
    }

    #[test]
    fn actions_and_aliases() {
        for a in Action::ALL {
            let c = cfg(&with(&format!("on_crash='{a}'\non_poweroff=\"{}\"\non_reboot='{}'\n", a.name(), a.name())));
            assert_eq!((c.on_crash, c.on_poweroff, c.on_reboot), (a, a, a));
        }
        let c = cfg(&with("cmdline = 'a=b'\ncpu_weight = 0x200\nmemory = \"64\"\ncpuid = 'host,tm=0'\n"));
        assert_eq!((c.extra.as_str(), c.weight, c.memory_mib), ("a=b", 512, 64));
        assert_eq!(c.cpuid.as_deref(), Some("host,tm=0"));
        let c = cfg(&with("memory = 65536\nvcpus = 64\nweight = 65535\n"));
        assert_eq!((c.memory_mib, c.vcpus, c.weight), (65536, 64, 65535));
    }

    /// (config, line, key, message fragment) for every error path.
    #[test]
    fn error_paths() {
        let cases: &[(&str, usize, Option<&str>, &str)] = &[
            // Syntax.
            ("name = 'a'\n = 3\n", 2, None, "expected a key name, found"),
            ("9x = 3\n", 1, None, "expected a key name, found '9x'"),
            ("name 'a'\n", 1, Some("name"), "expected '='"),
            ("name\n", 1, Some("name"), "expected '='"),
            ("name += 'a'\n", 1, Some("name"), "'+=' is not supported"),
            ("name + 'a'\n", 1, Some("name"), "expected '='"),
            ("\n\nname =\n", 3, Some("name"), "missing value"),
            ("name = # c\n", 1, Some("name"), "missing value"),
            ("name = rx7\n", 1, Some("name"), "found 'rx7' (strings must be quoted)"),
            ("name = 'rx7\n", 1, Some("name"), "unterminated string (no closing ')"),
            ("name = \"rx7", 1, Some("name"), "unterminated string"),
            ("name = 'a\\q'\n", 1, Some("name"), "unknown escape '\\q'"),
            ("name = 'a\\x4'\n", 1, Some("name"), "two hex digits"),
            ("name = 'a\\", 1, Some("name"), "unterminated string"),
            ("name = 'a' 'b'\n", 1, Some("name"), "unexpected ''' after the value"),
            ("name = 'a' b\n", 1, Some("name"), "unexpected 'b' after the value"),
            ("memory = 12M\n", 1, Some("memory"), "expected a number, found '12M'"),
            ("memory = 0x\n", 1, Some("memory"), "expected a number, found '0x'"),
            ("memory = 010\n", 1, Some("memory"), "leading zero"),
            ("memory = 9223372036854775808\n", 1, Some("memory"), "number too large"),
            ("memory = -9223372036854775809\n", 1, Some("memory"), "number too large"),
            ("memory = 99999999999999999999999\n", 1, Some("memory"), "number too large"),
            ("memory = -\n", 1, Some("memory"), "expected a number, found '-'"),
            ("disk = [\n'a',\n'b'\n", 4, Some("disk"), "list opened on line 3 is not closed"),
            ("disk = [\n'a',\n", 3, Some("disk"), "list opened on line 3 is not closed"),
            ("disk = [\n'a' 'b' ]\n", 2, Some("disk"), "expected ',' or ']'"),
            ("disk = [ 'a',, ]\n", 1, Some("disk"), "missing list element"),
            ("disk = [ , ]\n", 1, Some("disk"), "missing list element"),
            ("disk = [ ['a'] ]\n", 1, Some("disk"), "cannot be nested"),
            ("disk = [ a ]\n", 1, Some("disk"), "strings must be quoted"),
            ("name = 'a'\nkernel='/k'\nname = 'b'\n", 3, Some("name"), "set twice (first on line 1)"),
            // Semantics.
            ("kernel = '/k'\n", 1, Some("name"), "missing"),
            ("name = 'a'\n", 1, Some("kernel"), "missing"),
            ("", 1, Some("name"), "missing"),
            ("name = 7\n", 1, Some("name"), "expected a quoted string, found the number 7"),
            ("name = 'a b'\n", 1, Some("name"), "invalid domain name 'a b'"),
            ("name = ''\n", 1, Some("name"), "invalid domain name"),
            ("name = 'Domain-0'\n", 1, Some("name"), "invalid domain name"),
            ("name = ['a']\n", 1, Some("name"), "found a list"),
            ("kernel = ''\n", 1, Some("kernel"), "must not be empty"),
            ("kernel = '/a\\nb'\n", 1, Some("kernel"), "control characters"),
            ("memory = 'lots'\n", 1, Some("memory"), "expected a number, found 'lots'"),
            ("memory = 0\n", 1, Some("memory"), "must be from 1 to 65536 (got 0)"),
            ("memory = 65537\n", 1, Some("memory"), "must be from 1 to 65536"),
            ("memory = -1\n", 1, Some("memory"), "must be from 1 to 65536 (got -1)"),
            ("memory = [1]\n", 1, Some("memory"), "found a list"),
            ("vcpus = 65\n", 1, Some("vcpus"), "must be from 1 to 64"),
            ("vcpus = 0\n", 1, Some("vcpus"), "must be from 1 to 64"),
            ("weight = 0\n", 1, Some("weight"), "must be from 1 to 65535"),
            ("weight = 65536\n", 1, Some("weight"), "must be from 1 to 65535"),
            ("weight = 1\ncpu_weight = 2\n", 2, Some("cpu_weight"), "'weight' was already given on line 3"),
            ("extra = 'a'\ncmdline = 'b'\n", 2, Some("cmdline"), "'extra' was already given on line 3"),
            ("extra = 'a\\tb'\n", 1, Some("extra"), "control characters"),
            ("extra = 5\n", 1, Some("extra"), "expected a quoted string"),
            ("on_crash = 'explode'\n", 1, Some("on_crash"), "unknown action 'explode'"),
            ("on_reboot = 'soft-reset'\n", 1, Some("on_reboot"), "'soft-reset' is not supported"),
            ("on_poweroff = destroy\n", 1, Some("on_poweroff"), "strings must be quoted"),
            ("cpuid = ['0x1:ecx=x']\n", 1, Some("cpuid"), "list form of cpuid"),
            ("cpuid = 'a\\x01'\n", 1, Some("cpuid"), "without control characters"),
            ("type = 'hvm'\n", 1, Some("type"), "only paravirtual"),
            ("builder = 'hvm'\n", 1, Some("builder"), "only paravirtual"),
            ("vif = 'bridge=br0'\n", 1, Some("vif"), "expected a list of strings like"),
            ("vif = [ 1 ]\n", 1, Some("vif"), "entry 1: expected a quoted string, found the number 1"),
            ("vif = [ 'bridge=b',\n 'mac=zz' ]\n", 2, Some("vif"), "entry 2: invalid MAC address 'zz'"),
            ("disk = '/a,,xvda'\n", 1, Some("disk"), "expected a list of strings"),
            ("disk = [ '/a,,xvda', '/b,,xvda' ]\n", 1, Some("disk"), "entry 2: vdev 'xvda' is used twice"),
            ("disk = [ 'tap:aio:/a,xvda,w' ]\n", 1, Some("disk"), "entry 1: 'tap:' disks are not supported"),
        ];
        for &(body, line, key, fragment) in cases {
            // Semantic checks need the required keys; put them first and
            // shift the expected line.
            let prepend = !(body.is_empty() || body.contains("name") || body.contains("kernel"));
            let text = if prepend { format!("{MIN}{body}") } else { body.to_owned() };
            let line = if prepend { line + 2 } else { line };
            let e = match domain_config("rx7.cfg", &text) {
                Ok(c) => panic!("accepted {body:?}: {c:?}"),
                Err(e) => e,
            };
            // Missing name/kernel are reported on the last line.
            let want_line = if fragment == "missing" { text.lines().count().max(1) } else { line };
            assert_eq!((e.line, e.key.as_deref()), (want_line, key), "{body:?}: {e}");
            assert!(e.message.contains(fragment), "{body:?}: {e}");
            assert_eq!(e.file, "rx7.cfg");
            let shown = e.to_string();
            assert!(!shown.contains('\n'), "{shown}");
            let prefix = match key {
                Some(k) => format!("rx7.cfg:{}: {k}: ", e.line),
                None => format!("rx7.cfg:{}: ", e.line),
            };
            assert!(shown.starts_with(&prefix), "{shown}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            msg("name='a'\nkernel='/k'\nmemory = 'lots'\n"),
            "rx7.cfg:3: memory: expected a number, found 'lots'"
        );
        let e = ConfigError { file: "f\n.cfg".into(), line: 2, key: None, message: "x\ny".into() };
        assert_eq!(e.to_string(), "f?.cfg:2: x?y");
        // Long values are cut in messages.
        let long = "z".repeat(500);
        let m = msg(&format!("name = '{long}'\nkernel='/k'\n"));
        assert!(m.len() < 200, "{m}");
    }

    const MUTATION_BYTES: &[u8] = b" \t\n\r#'\"\\[],=;+-0x19azAZ_:/\xc3\xa9\x00";

    fn no_panic(text: &str) {
        let shown = match domain_config("fuzz.cfg", text) {
            Ok(c) => {
                assert!(!c.name.is_empty() && !c.kernel.is_empty());
                return;
            }
            Err(e) => e.to_string(),
        };
        assert!(!shown.contains('\n') && shown.starts_with("fuzz.cfg:"), "{shown:?}");
        let _ = parse("fuzz.cfg", text);
    }

    #[test]
    fn fuzz_random_bytes() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let len = (rng.next() % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if r.is_multiple_of(2) {
                        MUTATION_BYTES[(r >> 8) as usize % MUTATION_BYTES.len()]
                    } else {
                        (r >> 16) as u8
                    }
                })
                .collect();
            no_panic(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn fuzz_mutated_seed() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let richer = format!(
            "{SEED}disk = [ 'format=raw, vdev=xvdb, access=ro, target=/b.img', # c\n '/c.img,,xvdc' ]\ncpu_weight = 0x100\nmaxmem = 1\n"
        )
        .replace("disk = [ 'file", "disk2 = [ 'file");
        assert!(domain_config("fuzz.cfg", &richer).is_ok());
        let mut ok = 0;
        for _ in 0..20000 {
            let mut bytes = richer.clone().into_bytes();
            let edits = 1 + rng.next() % 4;
            for _ in 0..edits {
                let r = rng.next();
                let at = (r >> 8) as usize % (bytes.len() + 1);
                let b = MUTATION_BYTES[(r >> 32) as usize % MUTATION_BYTES.len()];
                match r % 4 {
                    0 => bytes.insert(at, b),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    2 if at < bytes.len() => bytes[at] = b,
                    _ => {
                        // Duplicate a random slice.
                        let end = (at + (r >> 40) as usize % 16).min(bytes.len());
                        let slice = bytes[at..end].to_vec();
                        bytes.splice(at..at, slice);
                    }
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if domain_config("fuzz.cfg", &text).is_ok() {
                ok += 1;
            }
            no_panic(&text);
        }
        // Some mutations (in comments, paths, the command line) keep the
        // file valid; most break it.
        assert!(ok > 100 && ok < 20000, "{ok}");
    }
}
