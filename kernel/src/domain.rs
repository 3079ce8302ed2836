//! Domain bookkeeping for the shell: the table of domains with their names
//! and IDs, the `xl`-style state flags, `list` output and `create` arguments.
//!
//! Domain IDs count up from 1 and are never reused while the hypervisor runs;
//! ID 0 ([`HYPERVISOR_ID`], name [`HYPERVISOR_NAME`]) stands for the
//! hypervisor itself and is never allocated. Names are unique, 1 to 63
//! characters of `[A-Za-z0-9_.-]`, and never look like an ID, so a word the
//! operator types is unambiguously one or the other.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use core::fmt::{self, Write};

use crate::sched::DEFAULT_WEIGHT;
use crate::shell::sanitize;

/// A domain ID.
pub type DomId = u32;

/// The ID that stands for the hypervisor (never allocated to a domain).
pub const HYPERVISOR_ID: DomId = 0;
/// The name reserved for the hypervisor's row in `list` (as in Xen).
pub const HYPERVISOR_NAME: &str = "Domain-0";
/// The longest domain name, in characters (= bytes: names are ASCII).
pub const MAX_NAME_LEN: usize = 63;
/// Guest memory when `create` is not given `memory=`.
pub const DEFAULT_MEMORY_MIB: u64 = 16;
/// The largest `memory=` accepted, in MiB.
pub const MAX_MEMORY_MIB: u64 = 65536;
/// vCPUs when `create` is not given `vcpus=`.
pub const DEFAULT_VCPUS: u32 = 1;
/// The longest `extra=` command line: the start-info field holds 1024 bytes
/// including a terminating NUL.
pub const MAX_EXTRA_BYTES: usize = 1023;
/// The synopsis of the `create` command.
pub const CREATE_USAGE: &str =
    "create <module-or-path> [name=NAME] [memory=MiB] [vcpus=N] [extra=\"ARGS\"] [weight=N] [vif=mac=MAC] [cpuid=POLICY]";

/// How many characters of an offending word error messages show.
const SHOWN_CHARS: usize = 40;

/// What is wrong with a domain name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name has this many characters, more than [`MAX_NAME_LEN`].
    TooLong(usize),
    /// The name contains a character outside `[A-Za-z0-9_.-]`.
    BadChar(char),
    /// The name starts with `-` or `.`.
    BadStart(char),
    /// The name is all digits, so it would read as an ID.
    AllDigits,
    /// The name is [`HYPERVISOR_NAME`] (in any letter case).
    Reserved,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong(n) => write!(f, "it has {n} characters (at most {MAX_NAME_LEN})"),
            Self::BadChar(c) if c == ' ' || c.is_ascii_graphic() => {
                write!(f, "'{c}' is not allowed (use letters, digits, '_', '.' and '-')")
            }
            Self::BadChar(c) => {
                write!(f, "character U+{:04X} is not allowed (use letters, digits, '_', '.' and '-')", u32::from(c))
            }
            Self::BadStart(c) => write!(f, "it starts with '{c}' (not allowed first)"),
            Self::AllDigits => f.write_str("it is all digits (that would read as an ID)"),
            Self::Reserved => f.write_str("it is reserved for the hypervisor"),
        }
    }
}

/// Why a domain operation failed. `Display` gives one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainError {
    /// No domain has this name.
    NoSuchName(String),
    /// Another domain already has this name.
    NameInUse(String),
    /// The name is not a valid domain name.
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// No domain has this ID.
    NoSuchId(DomId),
    /// Every ID up to `u32::MAX` has been handed out.
    IdsExhausted,
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchName(n) => write!(f, "no domain named '{}'", sanitize(n, SHOWN_CHARS)),
            Self::NameInUse(n) => write!(f, "domain name '{}' is already in use", sanitize(n, SHOWN_CHARS)),
            Self::InvalidName { name, problem } => {
                write!(f, "invalid domain name '{}': {problem}", sanitize(name, SHOWN_CHARS))
            }
            Self::NoSuchId(id) => write!(f, "no domain with ID {id}"),
            Self::IdsExhausted => f.write_str("domain IDs exhausted"),
        }
    }
}

fn name_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Checks a domain name: 1 to [`MAX_NAME_LEN`] characters of
/// `[A-Za-z0-9_.-]`, not starting with `-` or `.`, not all digits, and not
/// [`HYPERVISOR_NAME`] in any letter case.
pub fn validate_name(name: &str) -> Result<(), DomainError> {
    let problem = if name.is_empty() {
        Some(NameProblem::Empty)
    } else if let Some(c) = name.chars().find(|&c| !name_char_ok(c)) {
        Some(NameProblem::BadChar(c))
    } else if name.len() > MAX_NAME_LEN {
        Some(NameProblem::TooLong(name.len()))
    } else if let Some(c) = name.chars().next().filter(|c| matches!(c, '-' | '.')) {
        Some(NameProblem::BadStart(c))
    } else if name.bytes().all(|b| b.is_ascii_digit()) {
        Some(NameProblem::AllDigits)
    } else if name.eq_ignore_ascii_case(HYPERVISOR_NAME) {
        Some(NameProblem::Reserved)
    } else {
        None
    };
    match problem {
        Some(problem) => Err(DomainError::InvalidName { name: name.to_owned(), problem }),
        None => Ok(()),
    }
}

struct Entry<T> {
    name: String,
    value: T,
}

/// The domains, keyed by ID, each with a unique name and a value `T` owned
/// by the table.
pub struct DomainTable<T> {
    entries: BTreeMap<DomId, Entry<T>>,
    /// The next ID to hand out; `None` once `u32::MAX` has been used.
    next_id: Option<DomId>,
}

impl<T> Default for DomainTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> DomainTable<T> {
    /// An empty table; the first domain gets ID 1.
    pub fn new() -> Self {
        Self { entries: BTreeMap::new(), next_id: Some(1) }
    }

    /// Adds a domain called `name` whose value `make(id)` builds from its
    /// new ID. IDs count up and are never reused. `make` is called only
    /// once the name has been accepted and an ID is available.
    pub fn insert(&mut self, name: &str, make: impl FnOnce(DomId) -> T) -> Result<DomId, DomainError> {
        validate_name(name)?;
        if self.find_name(name).is_some() {
            return Err(DomainError::NameInUse(name.to_owned()));
        }
        let id = self.next_id.ok_or(DomainError::IdsExhausted)?;
        self.next_id = id.checked_add(1);
        let value = make(id);
        self.entries.insert(id, Entry { name: name.to_owned(), value });
        Ok(id)
    }

    /// Removes domain `id` and returns its value.
    pub fn remove(&mut self, id: DomId) -> Option<T> {
        self.entries.remove(&id).map(|e| e.value)
    }

    /// The value of domain `id`.
    pub fn get(&self, id: DomId) -> Option<&T> {
        self.entries.get(&id).map(|e| &e.value)
    }

    /// The value of domain `id`, mutably.
    pub fn get_mut(&mut self, id: DomId) -> Option<&mut T> {
        self.entries.get_mut(&id).map(|e| &mut e.value)
    }

    /// Whether domain `id` exists.
    pub fn contains(&self, id: DomId) -> bool {
        self.entries.contains_key(&id)
    }

    /// Finds a domain by what the operator typed: a decimal ID (`4`, also
    /// `004`) or a name (`rx7`). Names are never all digits, so a number is
    /// always taken as an ID.
    pub fn resolve(&self, name_or_id: &str) -> Result<DomId, DomainError> {
        if !name_or_id.is_empty() && name_or_id.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(id) = name_or_id.parse::<DomId>() {
                return if self.contains(id) { Ok(id) } else { Err(DomainError::NoSuchId(id)) };
            }
        }
        self.find_name(name_or_id).ok_or_else(|| DomainError::NoSuchName(name_or_id.to_owned()))
    }

    /// The name of domain `id`.
    pub fn name(&self, id: DomId) -> Option<&str> {
        self.entries.get(&id).map(|e| e.name.as_str())
    }

    /// Renames domain `id` to `new` (a valid name not used by another
    /// domain; renaming a domain to its own name is allowed).
    pub fn rename(&mut self, id: DomId, new: &str) -> Result<(), DomainError> {
        validate_name(new)?;
        if !self.contains(id) {
            return Err(DomainError::NoSuchId(id));
        }
        if self.find_name(new).is_some_and(|other| other != id) {
            return Err(DomainError::NameInUse(new.to_owned()));
        }
        if let Some(e) = self.entries.get_mut(&id) {
            new.clone_into(&mut e.name);
        }
        Ok(())
    }

    /// `base` if no domain uses it, otherwise `base-2`, `base-3`, ... (with
    /// `base` shortened so the result stays within [`MAX_NAME_LEN`]).
    /// `base` should be valid (see [`default_name`]); the result is then
    /// valid too.
    pub fn unique_name(&self, base: &str) -> String {
        if self.find_name(base).is_none() {
            return base.to_owned();
        }
        // Among len + 1 candidates at least one is free.
        for n in 2..=self.entries.len().saturating_add(2) {
            let suffix = format!("-{n}");
            let keep = base.floor_char_boundary(MAX_NAME_LEN.saturating_sub(suffix.len()));
            let candidate = format!("{}{suffix}", base.get(..keep).unwrap_or(""));
            if self.find_name(&candidate).is_none() {
                return candidate;
            }
        }
        base.to_owned()
    }

    /// Every domain as `(id, name, value)`, in ID order.
    pub fn iter(&self) -> impl Iterator<Item = (DomId, &str, &T)> + '_ {
        self.entries.iter().map(|(&id, e)| (id, e.name.as_str(), &e.value))
    }

    /// Every domain as `(id, name, value)` with mutable values, in ID order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (DomId, &str, &mut T)> + '_ {
        self.entries.iter_mut().map(|(&id, e)| (id, e.name.as_str(), &mut e.value))
    }

    /// How many domains there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no domains.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find_name(&self, name: &str) -> Option<DomId> {
        self.entries.iter().find(|(_, e)| e.name == name).map(|(&id, _)| id)
    }
}

/// A domain's state as `xl list` shows it: six positions, each a letter when
/// set and `-` otherwise (`r-----`, `-b----`, `--p---`, `---s--`, `----c-`,
/// `-----d`, or combinations such as `--ps--`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateFlags {
    /// A vCPU is on a CPU right now.
    pub running: bool,
    /// Every vCPU is blocked waiting for an event.
    pub blocked: bool,
    /// Paused by the operator.
    pub paused: bool,
    /// The guest shut down (cleanly) and awaits destruction.
    pub shutdown: bool,
    /// The guest crashed.
    pub crashed: bool,
    /// Being torn down.
    pub dying: bool,
}

impl fmt::Display for StateFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = [
            (self.running, 'r'),
            (self.blocked, 'b'),
            (self.paused, 'p'),
            (self.shutdown, 's'),
            (self.crashed, 'c'),
            (self.dying, 'd'),
        ];
        for (set, c) in flags {
            f.write_char(if set { c } else { '-' })?;
        }
        Ok(())
    }
}

/// One domain in `list` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListRow<'a> {
    /// The domain's name.
    pub name: &'a str,
    /// The domain's ID.
    pub id: DomId,
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// State flags.
    pub state: StateFlags,
    /// CPU time used so far, in ns.
    pub cpu_time_ns: u64,
}

/// The header line of [`format_list`] (as `xm list` printed it).
pub const LIST_HEADER: &str = "Name                                      ID Mem(MiB) VCPUs State   Time(s)";

/// Seconds with one decimal, rounded to nearest, in integer arithmetic.
fn seconds_1dp(ns: u64) -> String {
    let tenths = (u128::from(ns) + 50_000_000) / 100_000_000;
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// `text` with every control character (C0, DEL, C1) replaced by `?`, so it
/// cannot drive a terminal or break a line.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The `list` table: [`LIST_HEADER`], then one line per row with the name
/// padded to 40 characters (longer names push the other columns right, as
/// in `xm`), the ID in 3, memory in 8, vCPUs in 5, the 6-character state
/// and the CPU time in seconds with one decimal in 9. Every line ends in
/// `\n`.
pub fn format_list(rows: &[ListRow<'_>]) -> String {
    let mut out = String::from(LIST_HEADER);
    out.push('\n');
    for r in rows {
        let _ = writeln!(
            out,
            "{:<40} {:>3} {:>8} {:>5} {:<6} {:>9}",
            printable(r.name),
            r.id,
            r.mem_mib,
            r.vcpus,
            r.state,
            seconds_1dp(r.cpu_time_ns)
        );
    }
    out
}

/// The `list -l` output: per domain a block of `key: value` lines — `name`,
/// `id`, `memory` (`16 MiB`), `vcpus`, `state`, `cpu_time` (`1.5 s`), then
/// the caller's `extra[i]` pairs for row `i` (such as weight, cmdline, image
/// or crash reason; rows without an entry get none) — with a blank line
/// between blocks. Control characters in keys and values become `?`.
pub fn format_list_long<E, K, V>(rows: &[ListRow<'_>], extra: &[E]) -> String
where
    E: AsRef<[(K, V)]>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "name: {}", printable(r.name));
        let _ = writeln!(out, "id: {}", r.id);
        let _ = writeln!(out, "memory: {} MiB", r.mem_mib);
        let _ = writeln!(out, "vcpus: {}", r.vcpus);
        let _ = writeln!(out, "state: {}", r.state);
        let _ = writeln!(out, "cpu_time: {} s", seconds_1dp(r.cpu_time_ns));
        for (k, v) in extra.get(i).map_or(&[][..], AsRef::as_ref) {
            let _ = writeln!(out, "{}: {}", printable(k.as_ref()), printable(v.as_ref()));
        }
    }
    out
}

/// The arguments of `create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateArgs {
    /// The boot module name or path of the guest image.
    pub image: String,
    /// `name=`, already validated; `None` means "derive one from the image"
    /// ([`default_name`]).
    pub name: Option<String>,
    /// `memory=` in MiB, 1..=[`MAX_MEMORY_MIB`]; default [`DEFAULT_MEMORY_MIB`].
    pub memory_mib: u64,
    /// `vcpus=`, 1..=[`guest_abi::MAX_VCPUS`]; default [`DEFAULT_VCPUS`].
    pub vcpus: u32,
    /// `extra=`: the guest's command line (at most [`MAX_EXTRA_BYTES`], no
    /// control characters); default empty.
    pub extra: String,
    /// `weight=`, 1..=65535; default [`DEFAULT_WEIGHT`].
    pub weight: u16,
    /// `vif=`: give the domain a network interface; the value lists
    /// `key=value` settings separated by commas (`mac=02:…`), or is empty
    /// for a generated MAC. Checked by the network code.
    pub vif: Option<String>,
    /// The config's `cpuid=` (CPU feature levelling); `None`: the host's.
    pub cpuid: Option<String>,
    /// What to do when the guest exits (`on_poweroff`), default destroy.
    pub on_poweroff: crate::xlcfg::Action,
    /// What to do when it crashes (`on_crash`), default preserve.
    pub on_crash: crate::xlcfg::Action,
}

/// A decimal number of ASCII digits only (no sign, no spaces).
fn parse_number(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Parses a `key=value` number in `min..=max`, or says what is allowed.
fn number_option(key: &str, what: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    parse_number(value)
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{key}= must be {what} from {min} to {max} (got '{}')", sanitize(value, SHOWN_CHARS)))
}

/// Parses the words after `create` (quotes already removed by the shell's
/// tokenizer, so `extra="a b"` arrives as the word `extra=a b`).
///
/// The image is the one word that is not `key=value` (a word whose part
/// before `=` is not a plain identifier, such as a path containing `=`,
/// counts as the image); options may come in any order, each at most once.
/// Errors are one line naming the option and what it allows, or the usage
/// line when the image is missing.
pub fn parse_create(words: &[&str]) -> Result<CreateArgs, String> {
    let mut image: Option<&str> = None;
    let mut args = CreateArgs {
        image: String::new(),
        name: None,
        memory_mib: DEFAULT_MEMORY_MIB,
        vcpus: DEFAULT_VCPUS,
        extra: String::new(),
        weight: DEFAULT_WEIGHT,
        vif: None,
        cpuid: None,
        on_poweroff: crate::xlcfg::Action::Destroy,
        on_crash: crate::xlcfg::Action::Preserve,
    };
    let mut seen = [false; 7];
    for &word in words {
        let option = word.split_once('=').filter(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        let Some((key, value)) = option else {
            if let Some(first) = image {
                return Err(format!(
                    "unexpected argument '{}' (the image is '{}'; options are key=value)",
                    sanitize(word, SHOWN_CHARS),
                    sanitize(first, SHOWN_CHARS)
                ));
            }
            image = Some(word);
            continue;
        };
        let slot = match key {
            "name" => 0,
            "memory" => 1,
            "vcpus" => 2,
            "extra" => 3,
            "weight" => 4,
            "vif" => 5,
            "cpuid" => 6,
            _ => {
                return Err(format!(
                    "unknown option '{}' (expected name=, memory=, vcpus=, extra=, weight=, vif=, cpuid=)",
                    sanitize(key, SHOWN_CHARS)
                ))
            }
        };
        if let Some(seen) = seen.get_mut(slot) {
            if *seen {
                return Err(format!("option '{key}=' given more than once"));
            }
            *seen = true;
        }
        match slot {
            0 => {
                validate_name(value).map_err(|e| format!("name=: {e}"))?;
                args.name = Some(value.to_owned());
            }
            1 => {
                args.memory_mib = number_option(key, "a whole number of MiB", value, 1, MAX_MEMORY_MIB)?;
            }
            2 => {
                let n = number_option(key, "a number", value, 1, u64::from(guest_abi::MAX_VCPUS))?;
                args.vcpus = u32::try_from(n).unwrap_or(DEFAULT_VCPUS);
            }
            3 => {
                if value.len() > MAX_EXTRA_BYTES {
                    return Err(format!("extra= is too long ({} bytes, at most {MAX_EXTRA_BYTES})", value.len()));
                }
                if value.chars().any(char::is_control) {
                    return Err("extra= must not contain control characters".to_owned());
                }
                value.clone_into(&mut args.extra);
            }
            4 => {
                let n = number_option(key, "a number", value, 1, u64::from(u16::MAX))?;
                args.weight = u16::try_from(n).unwrap_or(DEFAULT_WEIGHT);
            }
            5 => {
                if value.len() > 128 || value.chars().any(char::is_control) {
                    return Err("vif= must be a short list like mac=02:00:00:00:00:01".to_owned());
                }
                args.vif = Some(value.to_owned());
            }
            _ => {
                if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
                    return Err("cpuid= must be a short policy like x86-64-v2 or host,avx=0".to_owned());
                }
                args.cpuid = Some(value.to_owned());
            }
        }
    }
    match image {
        Some(image) if !image.is_empty() => {
            image.clone_into(&mut args.image);
            Ok(args)
        }
        _ => Err(format!("usage: {CREATE_USAGE}")),
    }
}

/// A valid domain name derived from an image reference: the file name of
/// its first word (module command lines may carry arguments) without
/// directory and extension, with characters outside `[A-Za-z0-9_.-]` turned
/// into `_`, leading `-`/`.` removed and cut to [`MAX_NAME_LEN`]. A result
/// that would be all digits or reserved gets a `dom-` prefix; an empty one
/// becomes `domain`. `/boot/rx7.elf` → `rx7`.
pub fn default_name(image: &str) -> String {
    let first = image.split_whitespace().next().unwrap_or("");
    let path = first.trim_end_matches('/');
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = match base.rfind('.') {
        Some(i) if i > 0 => base.get(..i).unwrap_or(base),
        _ => base,
    };
    let cleaned: String = stem.chars().map(|c| if name_char_ok(c) { c } else { '_' }).collect();
    let mut name: String = cleaned.trim_start_matches(['-', '.']).chars().take(MAX_NAME_LEN).collect();
    if name.is_empty() {
        name.push_str("domain");
    }
    if validate_name(&name).is_err() {
        name = format!("dom-{name}");
        name.truncate(name.floor_char_boundary(MAX_NAME_LEN));
    }
    if validate_name(&name).is_err() {
        name = String::from("domain");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    fn table(names: &[&str]) -> DomainTable<String> {
        let mut t = DomainTable::new();
        for n in names {
            t.insert(n, |id| format!("value of {id}")).unwrap();
        }
        t
    }

    #[test]
    fn ids_count_up_from_one_and_are_not_reused() {
        let mut t = table(&["a", "b", "c"]);
        assert_eq!(t.resolve("a"), Ok(1));
        assert_eq!(t.resolve("c"), Ok(3));
        assert_eq!(t.get(2).map(String::as_str), Some("value of 2"));
        assert_eq!(t.remove(3).as_deref(), Some("value of 3"));
        assert_eq!(t.remove(3), None);
        assert_eq!(t.insert("c", |id| id.to_string()), Ok(4));
        assert_eq!(t.get(4).map(String::as_str), Some("4"));
        assert_eq!(t.len(), 3);
        assert!(!t.is_empty());
        assert!(t.get(0).is_none(), "ID 0 is the hypervisor");
    }

    #[test]
    fn ids_exhausted() {
        let mut t: DomainTable<()> = DomainTable { next_id: Some(u32::MAX - 1), ..DomainTable::default() };
        assert_eq!(t.insert("a", |_| ()), Ok(u32::MAX - 1));
        assert_eq!(t.insert("b", |_| ()), Ok(u32::MAX));
        let mut called = false;
        assert_eq!(t.insert("c", |_| called = true), Err(DomainError::IdsExhausted));
        assert!(!called);
        t.remove(u32::MAX);
        assert_eq!(t.insert("c", |_| ()), Err(DomainError::IdsExhausted));
        assert_eq!(DomainError::IdsExhausted.to_string(), "domain IDs exhausted");
        assert_eq!(t.resolve("4294967295").unwrap_err().to_string(), "no domain with ID 4294967295");
        assert_eq!(t.resolve("4294967294"), Ok(u32::MAX - 1));
    }

    #[test]
    fn names_are_unique() {
        let mut t = table(&["rx7"]);
        let mut called = false;
        let e = t.insert("rx7", |_| {
            called = true;
            String::new()
        });
        assert_eq!(e.unwrap_err().to_string(), "domain name 'rx7' is already in use");
        assert!(!called);
        // Names are case-sensitive, like xl's.
        assert!(t.insert("RX7", |_| String::new()).is_ok());
        // A refused insert does not consume an ID.
        assert_eq!(t.insert("next", |_| String::new()), Ok(3));
    }

    #[test]
    fn name_validation() {
        for ok in ["a", "rx7", "web_1.test-2", "A-", "0x1", "1.5", &"n".repeat(63)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        let problem = |name: &str| match validate_name(name) {
            Err(DomainError::InvalidName { problem, .. }) => problem,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(problem(""), NameProblem::Empty);
        assert_eq!(problem(&"n".repeat(64)), NameProblem::TooLong(64));
        assert_eq!(problem("a b"), NameProblem::BadChar(' '));
        assert_eq!(problem("a/b"), NameProblem::BadChar('/'));
        assert_eq!(problem("é"), NameProblem::BadChar('é'));
        assert_eq!(problem("a\x1b[2J"), NameProblem::BadChar('\x1b'));
        assert_eq!(problem("-x"), NameProblem::BadStart('-'));
        assert_eq!(problem(".x"), NameProblem::BadStart('.'));
        assert_eq!(problem("42"), NameProblem::AllDigits);
        assert_eq!(problem("Domain-0"), NameProblem::Reserved);
        assert_eq!(problem("domain-0"), NameProblem::Reserved);

        let msg = |name: &str| validate_name(name).unwrap_err().to_string();
        assert_eq!(msg(""), "invalid domain name '': it is empty");
        assert_eq!(msg("a/b"), "invalid domain name 'a/b': '/' is not allowed (use letters, digits, '_', '.' and '-')");
        assert_eq!(
            msg("a\x1b[2J"),
            "invalid domain name 'a?[2J': character U+001B is not allowed (use letters, \
             digits, '_', '.' and '-')"
        );
        assert_eq!(msg("-x"), "invalid domain name '-x': it starts with '-' (not allowed first)");
        assert_eq!(msg("42"), "invalid domain name '42': it is all digits (that would read as an ID)");
        assert_eq!(msg("Domain-0"), "invalid domain name 'Domain-0': it is reserved for the hypervisor");
        assert_eq!(
            msg(&"n".repeat(100)),
            format!("invalid domain name '{}...': it has 100 characters (at most 63)", "n".repeat(40))
        );
        // Invalid names are refused by insert and rename.
        let mut t = table(&["a"]);
        assert!(matches!(t.insert("1", |_| String::new()), Err(DomainError::InvalidName { .. })));
        assert!(matches!(t.rename(1, "x y"), Err(DomainError::InvalidName { .. })));
        assert_eq!(t.name(1), Some("a"));
    }

    #[test]
    fn resolve_by_name_or_id() {
        let t = table(&["rx7", "web"]);
        assert_eq!(t.resolve("rx7"), Ok(1));
        assert_eq!(t.resolve("2"), Ok(2));
        assert_eq!(t.resolve("002"), Ok(2));
        assert_eq!(t.resolve("9").unwrap_err().to_string(), "no domain with ID 9");
        assert_eq!(t.resolve("0"), Err(DomainError::NoSuchId(0)));
        assert_eq!(t.resolve("x").unwrap_err().to_string(), "no domain named 'x'");
        assert_eq!(t.resolve("").unwrap_err().to_string(), "no domain named ''");
        assert_eq!(t.resolve("+2"), Err(DomainError::NoSuchName("+2".into())));
        assert_eq!(t.resolve(" 2"), Err(DomainError::NoSuchName(" 2".into())));
        // Too large for an ID: reported as a name (it cannot be one either).
        assert_eq!(t.resolve("99999999999"), Err(DomainError::NoSuchName("99999999999".into())));
        assert_eq!(t.resolve("\x1b]0;pwned\x07").unwrap_err().to_string(), "no domain named '?]0;pwned?'");
    }

    #[test]
    fn rename() {
        let mut t = table(&["a", "b"]);
        assert_eq!(t.rename(1, "c"), Ok(()));
        assert_eq!(t.name(1), Some("c"));
        assert_eq!(t.resolve("c"), Ok(1));
        assert!(t.resolve("a").is_err());
        assert_eq!(t.rename(1, "c"), Ok(()), "its own name");
        assert_eq!(t.rename(1, "b").unwrap_err().to_string(), "domain name 'b' is already in use");
        assert_eq!(t.rename(7, "z"), Err(DomainError::NoSuchId(7)));
        // The old name is free again.
        assert!(t.insert("a", |_| String::new()).is_ok());
    }

    #[test]
    fn iteration_is_in_id_order() {
        let mut t = table(&["z", "y", "x"]);
        t.remove(2);
        t.insert("w", |_| String::from("new")).unwrap();
        let seen: Vec<(DomId, &str)> = t.iter().map(|(id, n, _)| (id, n)).collect();
        assert_eq!(seen, [(1, "z"), (3, "x"), (4, "w")]);
        for (id, _, v) in t.iter_mut() {
            *v = id.to_string();
        }
        assert_eq!(t.get(3).map(String::as_str), Some("3"));
        *t.get_mut(4).unwrap() = String::from("changed");
        assert_eq!(t.get(4).map(String::as_str), Some("changed"));
        assert!(t.get_mut(2).is_none());
    }

    #[test]
    fn unique_names() {
        let mut t = table(&["rx7", "rx7-2"]);
        assert_eq!(t.unique_name("web"), "web");
        assert_eq!(t.unique_name("rx7"), "rx7-3");
        let long = "n".repeat(63);
        t.insert(&long, |_| String::new()).unwrap();
        let u = t.unique_name(&long);
        assert_eq!(u, format!("{}-2", "n".repeat(61)));
        assert_eq!(validate_name(&u), Ok(()));
        for _ in 0..20 {
            let u = t.unique_name("rx7");
            assert_eq!(validate_name(&u), Ok(()));
            t.insert(&u, |_| String::new()).unwrap();
        }
    }

    #[test]
    fn state_flags() {
        let s = |f: fn(&mut StateFlags)| {
            let mut flags = StateFlags::default();
            f(&mut flags);
            flags.to_string()
        };
        assert_eq!(s(|_| {}), "------");
        assert_eq!(s(|f| f.running = true), "r-----");
        assert_eq!(s(|f| f.blocked = true), "-b----");
        assert_eq!(s(|f| f.paused = true), "--p---");
        assert_eq!(s(|f| f.shutdown = true), "---s--");
        assert_eq!(s(|f| f.crashed = true), "----c-");
        assert_eq!(s(|f| f.dying = true), "-----d");
        assert_eq!(
            s(|f| {
                f.paused = true;
                f.shutdown = true;
                f.dying = true
            }),
            "--ps-d"
        );
        let all = StateFlags { running: true, blocked: true, paused: true, shutdown: true, crashed: true, dying: true };
        assert_eq!(all.to_string(), "rbpscd");
    }

    fn row(name: &str, id: DomId, cpu_time_ns: u64) -> ListRow<'_> {
        ListRow {
            name,
            id,
            mem_mib: 16,
            vcpus: 1,
            state: StateFlags { blocked: true, ..StateFlags::default() },
            cpu_time_ns,
        }
    }

    #[test]
    fn list_layout() {
        let dom0 = ListRow {
            name: HYPERVISOR_NAME,
            id: 0,
            mem_mib: 3968,
            vcpus: 4,
            state: StateFlags { running: true, ..StateFlags::default() },
            cpu_time_ns: 1_234_560_000_000,
        };
        let out = format_list(&[dom0, row("rx7", 4, 150_000_000)]);
        assert_eq!(
            out,
            "Name                                      ID Mem(MiB) VCPUs State   Time(s)\n\
             Domain-0                                   0     3968     4 r-----    1234.6\n\
             rx7                                        4       16     1 -b----       0.2\n"
        );
        assert_eq!(format_list(&[]), format!("{LIST_HEADER}\n"));
    }

    #[test]
    fn list_long_names_push_columns() {
        let name = "n".repeat(45);
        let out = format_list(&[row(&name, 12, 0)]);
        let line = out.lines().nth(1).unwrap();
        assert_eq!(line, format!("{name}  12       16     1 -b----       0.0"));
        let name40 = "m".repeat(40);
        let out = format_list(&[row(&name40, 3, 0)]);
        assert_eq!(out.lines().nth(1).unwrap(), format!("{name40}   3       16     1 -b----       0.0"));
    }

    #[test]
    fn list_times_round_to_tenths() {
        for (ns, shown) in [
            (0, "0.0"),
            (49_999_999, "0.0"),
            (50_000_000, "0.1"),
            (999_999_999, "1.0"),
            (12_345_000_000, "12.3"),
            (12_350_000_000, "12.4"),
            (u64::MAX, "18446744073.7"),
        ] {
            assert_eq!(seconds_1dp(ns), shown, "{ns}");
        }
        // Wider than the column: pushes rather than truncates.
        let out = format_list(&[row("big", 1, u64::MAX)]);
        assert!(out.ends_with(" -b---- 18446744073.7\n"), "{out}");
    }

    #[test]
    fn list_hides_control_characters() {
        let out = format_list(&[row("evil\x1b[2J\r", 1, 0)]);
        assert!(!out.contains('\x1b') && !out.contains('\r'));
        assert!(out.contains("evil?[2J?"));
    }

    #[test]
    fn list_long_blocks() {
        let rows = [row("rx7", 4, 1_500_000_000), row("web", 5, 0)];
        let extra = vec![vec![("weight", String::from("256")), ("cmdline", String::from("a b\nc"))]];
        let out = format_list_long(&rows, &extra);
        assert_eq!(
            out,
            "name: rx7\nid: 4\nmemory: 16 MiB\nvcpus: 1\nstate: -b----\ncpu_time: 1.5 s\n\
             weight: 256\ncmdline: a b?c\n\
             \n\
             name: web\nid: 5\nmemory: 16 MiB\nvcpus: 1\nstate: -b----\ncpu_time: 0.0 s\n"
        );
        let extra: [&[(&str, &str)]; 2] = [&[], &[("crash", "triple fault")]];
        let out = format_list_long(&rows, &extra);
        assert!(out.ends_with("cpu_time: 0.0 s\ncrash: triple fault\n"), "{out}");
        let none: &[[(&str, &str); 0]] = &[];
        assert_eq!(format_list_long(&[], none), "");
    }

    #[test]
    fn create_defaults() {
        let a = parse_create(&["rx7.elf"]).unwrap();
        assert_eq!(
            a,
            CreateArgs {
                image: "rx7.elf".into(),
                name: None,
                memory_mib: 16,
                vcpus: 1,
                extra: String::new(),
                weight: 256,
                vif: None,
                cpuid: None,
                on_poweroff: crate::xlcfg::Action::Destroy,
                on_crash: crate::xlcfg::Action::Preserve,
            }
        );
    }

    #[test]
    fn create_vif() {
        assert_eq!(parse_create(&["e", "vif="]).unwrap().vif.as_deref(), Some(""));
        assert_eq!(
            parse_create(&["e", "vif=mac=02:00:00:00:00:01"]).unwrap().vif.as_deref(),
            Some("mac=02:00:00:00:00:01")
        );
        assert!(parse_create(&["e", "vif=a", "vif=b"]).is_err());
    }

    #[test]
    fn create_options() {
        let a =
            parse_create(&["/boot/rx7.elf", "name=web", "memory=64", "vcpus=4", "extra=a b  c", "weight=512"]).unwrap();
        assert_eq!(a.image, "/boot/rx7.elf");
        assert_eq!(a.name.as_deref(), Some("web"));
        assert_eq!(a.memory_mib, 64);
        assert_eq!(a.vcpus, 4);
        assert_eq!(a.extra, "a b  c");
        assert_eq!(a.weight, 512);
        // Any order; `=` inside a value is kept; limits are inclusive.
        let a = parse_create(&["extra=root=/dev/x", "memory=65536", "vcpus=64", "weight=65535", "img"]).unwrap();
        assert_eq!(a.image, "img");
        assert_eq!(a.extra, "root=/dev/x");
        assert_eq!((a.memory_mib, a.vcpus, a.weight), (65536, 64, 65535));
        let a = parse_create(&["img", "memory=1", "vcpus=1", "weight=1", "extra="]).unwrap();
        assert_eq!((a.memory_mib, a.vcpus, a.weight), (1, 1, 1));
        assert_eq!(a.extra, "");
        // A path whose `=` is not after an identifier is the image.
        assert_eq!(parse_create(&["/mnt/a=b.elf"]).unwrap().image, "/mnt/a=b.elf");
        assert_eq!(parse_create(&["(hd0)/x"]).unwrap().image, "(hd0)/x");
    }

    #[test]
    fn create_errors() {
        let err = |w: &[&str]| parse_create(w).unwrap_err();
        let usage = format!("usage: {CREATE_USAGE}");
        assert_eq!(err(&[]), usage);
        assert_eq!(err(&["name=x"]), usage);
        assert_eq!(err(&[""]), usage);
        assert_eq!(
            err(&["img", "foo=1"]),
            "unknown option 'foo' (expected name=, memory=, vcpus=, extra=, weight=, vif=, cpuid=)"
        );
        assert_eq!(parse_create(&["img", "cpuid=x86-64-v2,avx=0"]).unwrap().cpuid.as_deref(), Some("x86-64-v2,avx=0"));
        assert!(err(&["img", "cpuid="]).starts_with("cpuid= must be"));
        assert_eq!(
            err(&["img", "Memory=1"]),
            "unknown option 'Memory' (expected name=, memory=, vcpus=, extra=, weight=, vif=, cpuid=)"
        );
        for bad in ["0", "65537", "", "-1", "+5", "16M", "1.5", "99999999999999999999999"] {
            assert_eq!(
                err(&["img", &format!("memory={bad}")]),
                format!("memory= must be a whole number of MiB from 1 to 65536 (got '{bad}')")
            );
        }
        for bad in ["0", "65", "x"] {
            assert_eq!(
                err(&["img", &format!("vcpus={bad}")]),
                format!("vcpus= must be a number from 1 to 64 (got '{bad}')")
            );
        }
        for bad in ["0", "65536", " 5"] {
            assert_eq!(
                err(&["img", &format!("weight={bad}")]),
                format!("weight= must be a number from 1 to 65535 (got '{bad}')")
            );
        }
        assert_eq!(
            err(&["img", "name=42"]),
            "name=: invalid domain name '42': it is all digits (that would read as an ID)"
        );
        assert_eq!(err(&["img", "memory=1", "memory=2"]), "option 'memory=' given more than once");
        assert_eq!(err(&["img", "other"]), "unexpected argument 'other' (the image is 'img'; options are key=value)");
        let long = format!("extra={}", "x".repeat(1024));
        assert_eq!(err(&["img", &long]), "extra= is too long (1024 bytes, at most 1023)");
        assert!(parse_create(&["img", &long[..long.len() - 1]]).is_ok());
        assert_eq!(err(&["img", "extra=a\x1bb"]), "extra= must not contain control characters");
        // Hostile text in errors is made printable and shortened.
        let e = err(&["img", "memory=\x1b[31m"]);
        assert!(!e.contains('\x1b'), "{e}");
        let e = err(&["img", &format!("{}=1", "k".repeat(200))]);
        assert!(e.len() < 150, "{e}");
    }

    #[test]
    fn default_names() {
        for (image, name) in [
            ("rx7.elf", "rx7"),
            ("/boot/rx7.elf", "rx7"),
            ("(hd0,1)/boot/guests/web-server.v2.elf", "web-server.v2"),
            ("/boot/rx7.elf console=1", "rx7"),
            ("rx7", "rx7"),
            ("/boot/dir/", "dir"),
            (".hidden", "hidden"),
            ("-x.elf", "x"),
            ("my guest.elf", "my"),
            ("/boot/my%guest!.elf", "my_guest_"),
            ("/boot/héllo.elf", "h_llo"),
            ("42.elf", "dom-42"),
            ("/boot/Domain-0", "dom-Domain-0"),
            ("", "domain"),
            ("/", "domain"),
            ("....", "domain"),
            (".elf", "elf"),
        ] {
            assert_eq!(default_name(image), name, "{image:?}");
        }
        assert_eq!(default_name(&"x".repeat(100)), "x".repeat(63));
        assert_eq!(default_name(&"7".repeat(100)), format!("dom-{}", "7".repeat(59)));
    }

    use crate::testutil::Rng;

    #[test]
    fn random_words_never_panic() {
        const PIECES: &[&str] = &[
            "a", "7", "-", ".", "/", "=", "é", "\x1b", " ", "name", "memory", "vcpus", "extra", "weight", "Domain-0",
            "0", "65536", "\u{9b}", "_",
        ];
        let mut rng = Rng(0x1234_5678_9ABC_DEF0);
        let mut t: DomainTable<u32> = DomainTable::new();
        for _ in 0..3000 {
            if t.len() > 200 {
                t = DomainTable::new();
            }
            let word: String =
                (0..rng.next() % 12).map(|_| PIECES[(rng.next() % PIECES.len() as u64) as usize]).collect();
            let name = default_name(&word);
            assert_eq!(validate_name(&name), Ok(()), "{word:?} -> {name:?}");
            let _ = parse_create(&[&word]);
            let _ = parse_create(&["img", &word]);
            if let Ok(id) = t.insert(&word, |id| id) {
                assert_eq!(t.resolve(&word), Ok(id));
            }
            let _ = t.resolve(&word);
            let unique = t.unique_name(&name);
            assert_eq!(validate_name(&unique), Ok(()));
            assert!(t.insert(&unique, |id| id).is_ok());
            let _ = validate_name(&word).map_err(|e| e.to_string());
        }
    }
}
