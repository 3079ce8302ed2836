//! The kernel command line, parsed into typed [`Options`].
//!
//! Words are separated by spaces or tabs (CR and LF count as well); a word is
//! `key` or `key=value`. Double quotes in a value group text containing
//! spaces and are removed (`extra="a b c"`); `\"` and `\\` stand for `"`
//! and `\`. Parsing never fails: problems become [`Warning`]s and the
//! affected option keeps its default.

use crate::shell::sanitize;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use log::LevelFilter;

/// At most this many warnings are reported, then one saying the rest were
/// suppressed.
pub const MAX_WARNINGS: usize = 16;

/// How many characters of a key or value warnings quote.
const SHOWN_CHARS: usize = 32;

const CONSOLE_EXPECTED: &str = "ttyS0-ttyS3 or com1-com4, optionally ,BAUD";
const LOGLEVEL_EXPECTED: &str = "off|error|warn|info|debug|trace or 0-5";
const PANIC_EXPECTED: &str = "halt|reboot";
const BOOL_EXPECTED: &str = "1|0|on|off|yes|no|true|false";
const SELFTEST_EXPECTED: &str = "1|0|on|off|yes|no|true|false|fail";

/// What to do after a panic has been reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicAction {
    /// Stop the CPU (the default).
    Halt,
    /// Reset the machine.
    Reboot,
}

/// The serial port used as console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialConsole {
    /// The UART's I/O port base, e.g. `0x3F8` for ttyS0.
    pub port: u16,
    /// The line speed in bits per second; always divides 115200.
    pub baud: u32,
}

impl SerialConsole {
    /// The fastest (and default) line speed, the UART's base clock.
    pub const MAX_BAUD: u32 = 115_200;
    /// I/O port bases of ttyS0..ttyS3 (com1..com4).
    pub const PORTS: [u16; 4] = [0x3F8, 0x2F8, 0x3E8, 0x2E8];
}

impl Default for SerialConsole {
    fn default() -> Self {
        Self { port: Self::PORTS[0], baud: Self::MAX_BAUD }
    }
}

/// Everything the command line configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The kernel image path some loaders (QEMU's multiboot1) put first.
    pub image_path: Option<String>,
    /// `console=`: the serial console, ttyS0 at 115200 by default.
    pub console: SerialConsole,
    /// `loglevel=`: the maximum level logged, `Info` by default.
    pub loglevel: LevelFilter,
    /// `panic=`: what to do after a panic, `Halt` by default.
    pub panic: PanicAction,
    /// `selftest`: run the built-in self tests at boot.
    pub selftest: bool,
    /// `selftest=fail`: the self tests plus one that always fails, which
    /// shows the failure report and exit status.
    pub selftest_fail: bool,
    /// `hostname=`: the name `list` shows for the hypervisor itself (ID 0).
    pub hostname: String,
    /// `ip=`: `dhcp` or `A.B.C.D/N` for the hypervisor's own address (checked
    /// by the network code, which names a bad value).
    pub ip: Option<String>,
    /// `gw=`: the default gateway with a static `ip=`.
    pub gw: Option<String>,
    /// `nic-irq=off`: leave NIC interrupts unrouted, so the drivers run on
    /// the timer tick's poll only (the polling fallback, forced).
    pub nic_irq: bool,
    /// `nfs=SERVER:/export@/mount/point`, once per export to mount at boot.
    pub nfs: Vec<String>,
    /// `relocation=on|off`: serve the relocation (migration) port; off by default.
    pub relocation: bool,
    /// `relocation-port=N`, 8002 by default (xend's).
    pub relocation_port: u16,
    /// `relocation-hosts-allow="re1 re2"`: xend's allow-list of regular
    /// expressions matched against the peer's address; empty allows any.
    pub relocation_hosts_allow: String,
    /// `relocation-key=SECRET`: the cluster's pre-shared key.
    pub relocation_key: Option<String>,
    /// `relocation-key-file=/var/xen/relocation.key`: the key, read from a
    /// mounted share once the boot mounts are up.
    pub relocation_key_file: Option<String>,
    /// `relocation-crypto=on|off`: off lets peers ask for an unencrypted
    /// (still authenticated) stream, for benchmarks; on by default.
    pub relocation_crypto: bool,
    /// The line as given, trimmed and without the image path.
    pub raw: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            image_path: None,
            console: SerialConsole::default(),
            loglevel: LevelFilter::Info,
            panic: PanicAction::Halt,
            selftest: false,
            selftest_fail: false,
            hostname: String::from("Domain-0"),
            ip: None,
            gw: None,
            nic_irq: true,
            nfs: Vec::new(),
            relocation: false,
            relocation_port: 8002,
            relocation_hosts_allow: String::new(),
            relocation_key: None,
            relocation_key_file: None,
            relocation_crypto: true,
            raw: String::new(),
        }
    }
}

/// One problem found on the command line, as a human-readable line such as
/// `cmdline: unknown option 'foo' ignored`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a command line. Never fails: unknown keys, bad values and syntax
/// problems are reported as warnings (at most [`MAX_WARNINGS`] plus one
/// saying more were suppressed) and leave the defaults in place. When a key
/// is repeated the last occurrence wins.
pub fn parse(line: &str) -> (Options, Vec<Warning>) {
    let mut warnings = Warnings::default();
    let (image_path, rest) = split_image_path(line);
    let mut opts = Options {
        image_path: image_path.map(String::from),
        raw: rest.trim_matches(is_separator).into(),
        ..Options::default()
    };
    let (words, unterminated) = split_words(rest);
    if unterminated {
        if let Some((key, _)) = words.last() {
            warnings.push(format!(
                "cmdline: unterminated quote in value of '{}'; using the rest of the line",
                sanitize(key, SHOWN_CHARS)
            ));
        }
    }
    for (key, value) in &words {
        apply(&mut opts, key, value.as_deref(), &mut warnings);
    }
    (opts, warnings.list)
}

/// Sets the option `key` from `value` (`None` for a bare key).
///
/// To add an option: add a field to [`Options`] and an arm here that
/// converts the value, returning `Err(expected)` to keep the default.
const HOSTNAME_EXPECTED: &str = "1-63 letters, digits, '-', '_' or '.'";

fn parse_hostname(v: &str) -> Option<String> {
    let ok = !v.is_empty() && v.len() <= 63 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then(|| String::from(v))
}

fn apply(opts: &mut Options, key: &str, value: Option<&str>, warnings: &mut Warnings) {
    let result = match key {
        "console" => {
            with_value(value, CONSOLE_EXPECTED, |v| parse_console(v, warnings)).map(|console| opts.console = console)
        }
        "loglevel" => with_value(value, LOGLEVEL_EXPECTED, parse_loglevel).map(|level| opts.loglevel = level),
        "panic" => with_value(value, PANIC_EXPECTED, parse_panic).map(|p| opts.panic = p),
        "selftest" => match value {
            Some("fail") => {
                (opts.selftest, opts.selftest_fail) = (true, true);
                Ok(())
            }
            _ => value.map_or(Some(true), parse_bool).ok_or(SELFTEST_EXPECTED).map(|on| {
                (opts.selftest, opts.selftest_fail) = (on, false);
            }),
        },
        "hostname" => with_value(value, HOSTNAME_EXPECTED, parse_hostname).map(|h| opts.hostname = h),
        "ip" => with_value(value, "dhcp or A.B.C.D/N", |v| Some(String::from(v))).map(|v| opts.ip = Some(v)),
        "gw" => with_value(value, "A.B.C.D", |v| Some(String::from(v))).map(|v| opts.gw = Some(v)),
        "nic-irq" => with_value(value, BOOL_EXPECTED, parse_bool).map(|on| opts.nic_irq = on),
        "nfs" => with_value(value, "SERVER:/export@/mount/point", |v| v.contains('@').then(|| String::from(v)))
            .map(|v| opts.nfs.push(v)),
        "relocation" => value.map_or(Some(true), parse_bool).ok_or(BOOL_EXPECTED).map(|on| opts.relocation = on),
        "relocation-port" => with_value(value, "a TCP port 1-65535", |v| v.parse::<u16>().ok().filter(|p| *p != 0))
            .map(|p| opts.relocation_port = p),
        "relocation-hosts-allow" => {
            with_value(value, "space-separated regular expressions", |v| Some(String::from(v.trim())))
                .map(|v| opts.relocation_hosts_allow = v)
        }
        "relocation-key" => {
            with_value(value, "a secret of 16 or more characters", |v| (v.len() >= 16).then(|| String::from(v)))
                .map(|v| opts.relocation_key = Some(v))
        }
        "relocation-key-file" => {
            with_value(value, "an absolute path on a mounted share", |v| v.starts_with('/').then(|| String::from(v)))
                .map(|v| opts.relocation_key_file = Some(v))
        }
        "relocation-crypto" => {
            value.map_or(Some(true), parse_bool).ok_or(BOOL_EXPECTED).map(|on| opts.relocation_crypto = on)
        }
        "" => {
            warnings.push("cmdline: option without a name ignored".into());
            return;
        }
        _ => {
            warnings.push(format!("cmdline: unknown option '{}' ignored", sanitize(key, SHOWN_CHARS)));
            return;
        }
    };
    if let Err(expected) = result {
        warnings.push(match value {
            Some(v) => format!("cmdline: bad value '{}' for {key} (expected {expected})", sanitize(v, SHOWN_CHARS)),
            None => format!("cmdline: option '{key}' needs a value (expected {expected})"),
        });
    }
}

/// Converts a required value with `convert`; `Err(expected)` if the value is
/// missing or invalid.
fn with_value<T>(
    value: Option<&str>,
    expected: &'static str,
    convert: impl FnOnce(&str) -> Option<T>,
) -> Result<T, &'static str> {
    value.and_then(convert).ok_or(expected)
}

/// `ttyS0`..`ttyS3` or `com1`..`com4` (any case), optionally followed by
/// `,BAUD` (an optional `n8` suffix is accepted: 8N1 is all we do). A bad
/// baud rate is warned about here and replaced by 115200.
fn parse_console(value: &str, warnings: &mut Warnings) -> Option<SerialConsole> {
    let (device, baud) = match value.split_once(',') {
        Some((device, baud)) => (device, Some(baud)),
        None => (value, None),
    };
    let index = ["ttyS0", "ttyS1", "ttyS2", "ttyS3"]
        .iter()
        .position(|name| name.eq_ignore_ascii_case(device))
        .or_else(|| ["com1", "com2", "com3", "com4"].iter().position(|name| name.eq_ignore_ascii_case(device)))?;
    let port = *SerialConsole::PORTS.get(index)?;
    let baud = baud.map_or(SerialConsole::MAX_BAUD, |text| {
        parse_baud(text).unwrap_or_else(|| {
            warnings.push(format!(
                "cmdline: bad baud rate '{}' for console (expected a divisor of 115200, e.g. 9600); using 115200",
                sanitize(text, SHOWN_CHARS)
            ));
            SerialConsole::MAX_BAUD
        })
    });
    Some(SerialConsole { port, baud })
}

/// A decimal baud rate that divides 115200.
fn parse_baud(text: &str) -> Option<u32> {
    let digits = text.strip_suffix("n8").unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let baud: u32 = digits.parse().ok()?;
    // `is_multiple_of(0)` is false, so 0 is rejected too.
    SerialConsole::MAX_BAUD.is_multiple_of(baud).then_some(baud)
}

/// A level name (any case) or a digit 0 (off) to 5 (trace).
fn parse_loglevel(value: &str) -> Option<LevelFilter> {
    const LEVELS: [(&str, LevelFilter); 6] = [
        ("off", LevelFilter::Off),
        ("error", LevelFilter::Error),
        ("warn", LevelFilter::Warn),
        ("info", LevelFilter::Info),
        ("debug", LevelFilter::Debug),
        ("trace", LevelFilter::Trace),
    ];
    let entry = match value.as_bytes() {
        [digit @ b'0'..=b'5'] => LEVELS.get(usize::from(digit - b'0')),
        _ => LEVELS.iter().find(|(name, _)| name.eq_ignore_ascii_case(value)),
    };
    entry.map(|&(_, level)| level)
}

fn parse_panic(value: &str) -> Option<PanicAction> {
    if value.eq_ignore_ascii_case("halt") {
        Some(PanicAction::Halt)
    } else if value.eq_ignore_ascii_case("reboot") {
        Some(PanicAction::Reboot)
    } else {
        None
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    let is = |names: [&str; 4]| names.iter().any(|n| n.eq_ignore_ascii_case(value));
    if is(["1", "on", "yes", "true"]) {
        Some(true)
    } else if is(["0", "off", "no", "false"]) {
        Some(false)
    } else {
        None
    }
}

/// Collects warnings up to the cap.
#[derive(Default)]
struct Warnings {
    list: Vec<Warning>,
}

impl Warnings {
    fn push(&mut self, message: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(Warning(message));
        } else if self.list.len() == MAX_WARNINGS {
            self.list.push(Warning("cmdline: further warnings suppressed".into()));
        }
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits off a leading kernel image path: a first word without `=` that
/// contains `/` or ends in `.elf`. Returns it and the rest of the line.
fn split_image_path(line: &str) -> (Option<&str>, &str) {
    let line = line.trim_start_matches(is_separator);
    let (first, rest) = line.split_once(is_separator).unwrap_or((line, ""));
    if !first.contains('=') && (first.contains('/') || first.ends_with(".elf")) {
        (Some(first), rest)
    } else {
        (None, line)
    }
}

/// Splits a command line into `(key, value)` words; `value` is `None` for a
/// bare `key` and `Some("")` for `key=`. See the module docs for quoting.
pub fn words(line: &str) -> Vec<(String, Option<String>)> {
    split_words(line).0
}

/// [`words`], plus whether the last value had an unterminated quote (in
/// which case it extends to the end of the line).
fn split_words(line: &str) -> (Vec<(String, Option<String>)>, bool) {
    let mut words = Vec::new();
    let mut unterminated = false;
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|&c| is_separator(c)).is_some() {}
        if chars.peek().is_none() {
            return (words, unterminated);
        }
        if chars.next_if_eq(&'"').is_some() {
            // GRUB's multiboot2 loader quotes a whole word that contains a
            // space ("extra=a b c") and backslash-escapes quotes and
            // backslashes inside it.
            let mut text = String::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => text.push(chars.next().unwrap_or('\\')),
                    c => text.push(c),
                }
            }
            while let Some(c) = chars.next_if(|&c| !is_separator(c)) {
                text.push(c);
            }
            unterminated = !closed;
            words.push(match text.split_once('=') {
                Some((k, v)) => (k.into(), Some(v.into())),
                None => (text, None),
            });
            continue;
        }
        let mut key = String::new();
        let mut value = None;
        while let Some(c) = chars.next_if(|&c| !is_separator(c)) {
            if c == '=' {
                let mut text = String::new();
                let mut quoted = false;
                while let Some(c) = chars.next_if(|&c| quoted || !is_separator(c)) {
                    match c {
                        '"' => quoted = !quoted,
                        '\\' => match chars.next_if(|&c| matches!(c, '"' | '\\')) {
                            Some(escaped) => text.push(escaped),
                            None => text.push('\\'),
                        },
                        c => text.push(c),
                    }
                }
                unterminated = quoted;
                value = Some(text);
                break;
            }
            key.push(c);
        }
        words.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn word(key: &str, value: Option<&str>) -> (String, Option<String>) {
        (key.to_string(), value.map(String::from))
    }

    fn texts(warnings: &[Warning]) -> Vec<&str> {
        warnings.iter().map(|w| w.0.as_str()).collect()
    }

    /// Parses a line expected to produce no warnings.
    fn clean(line: &str) -> Options {
        let (opts, warnings) = parse(line);
        assert!(warnings.is_empty(), "{line:?}: {warnings:?}");
        opts
    }

    #[test]
    fn empty_line_gives_defaults() {
        for line in ["", "   ", "\t \r\n"] {
            assert_eq!(clean(line), Options::default());
        }
        let d = Options::default();
        assert_eq!(d.console, SerialConsole { port: 0x3F8, baud: 115_200 });
        assert_eq!(d.loglevel, LevelFilter::Info);
        assert_eq!(d.panic, PanicAction::Halt);
        assert!(!d.selftest);
        assert_eq!(d.image_path, None);
    }

    #[test]
    fn tokenizer() {
        assert_eq!(
            words(" a=1\tb  c= d=\"x y\" e=\"\" "),
            [word("a", Some("1")), word("b", None), word("c", Some("")), word("d", Some("x y")), word("e", Some("")),]
        );
        assert_eq!(words(r#"k="say \"hi\" \\ \x""#), [word("k", Some(r#"say "hi" \ \x"#))]);
        assert_eq!(words("k=a\"b c\"d e"), [word("k", Some("ab cd")), word("e", None)]);
        assert_eq!(words("k=a=b"), [word("k", Some("a=b"))]);
        assert_eq!(words("=v"), [word("", Some("v"))]);
        assert_eq!(words("k=\"open x=1"), [word("k", Some("open x=1"))]);
        assert_eq!(words("ключ=значение"), [word("ключ", Some("значение"))]);
        assert!(words("").is_empty());
    }

    #[test]
    fn image_path_is_split_off() {
        let (opts, warnings) = parse("/path/target/image/hypervisor.elf loglevel=debug");
        assert!(warnings.is_empty());
        assert_eq!(opts.image_path.as_deref(), Some("/path/target/image/hypervisor.elf"));
        assert_eq!(opts.loglevel, LevelFilter::Debug);
        assert_eq!(opts.raw, "loglevel=debug");

        let opts = clean("  hypervisor.elf  ");
        assert_eq!(opts.image_path.as_deref(), Some("hypervisor.elf"));
        assert_eq!(opts.raw, "");
        assert_eq!(clean("boot/rhv").image_path.as_deref(), Some("boot/rhv"));

        // Only the first word, and only without '='.
        let opts = clean(" loglevel=warn  selftest ");
        assert_eq!(opts.image_path, None);
        assert_eq!(opts.raw, "loglevel=warn  selftest");
        let (opts, warnings) = parse("selftest /x.elf");
        assert_eq!(opts.image_path, None);
        assert_eq!(texts(&warnings), ["cmdline: unknown option '/x.elf' ignored"]);
        let (opts, _) = parse("nfs=host:/export");
        assert_eq!(opts.image_path, None);
    }

    #[test]
    fn console() {
        let cases = [
            ("console=ttyS0", 0x3F8, 115_200),
            ("console=ttyS1", 0x2F8, 115_200),
            ("console=ttyS2", 0x3E8, 115_200),
            ("console=ttyS3", 0x2E8, 115_200),
            ("console=com1", 0x3F8, 115_200),
            ("console=COM4", 0x2E8, 115_200),
            ("console=ttyS1,9600", 0x2F8, 9600),
            ("console=ttys2,38400", 0x3E8, 38_400),
            ("console=ttyS0,115200n8", 0x3F8, 115_200),
            ("console=com2,1200", 0x2F8, 1200),
        ];
        for (line, port, baud) in cases {
            assert_eq!(clean(line).console, SerialConsole { port, baud }, "{line}");
        }
    }

    #[test]
    fn console_bad_baud_keeps_port() {
        for bad in ["7", "0", "", "fast", "99999999999", "-9600", "9600n1"] {
            let (opts, warnings) = parse(&format!("console=ttyS1,{bad}"));
            assert_eq!(opts.console, SerialConsole { port: 0x2F8, baud: 115_200 });
            assert_eq!(
                texts(&warnings),
                [format!(
                    "cmdline: bad baud rate '{bad}' for console (expected a divisor of 115200, e.g. 9600); using 115200"
                )]
            );
        }
    }

    #[test]
    fn console_bad_device_keeps_default() {
        for bad in ["ttyS4", "tty0", "com0", "", "ttyS1x,9600"] {
            let (opts, warnings) = parse(&format!("console=ttyS1 console={bad}"));
            assert_eq!(opts.console.port, 0x2F8, "{bad}");
            assert_eq!(
                texts(&warnings),
                [format!(
                    "cmdline: bad value '{bad}' for console (expected ttyS0-ttyS3 or com1-com4, optionally ,BAUD)"
                )]
            );
        }
    }

    #[test]
    fn loglevel() {
        let cases = [
            ("off", LevelFilter::Off),
            ("ERROR", LevelFilter::Error),
            ("Warn", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("trace", LevelFilter::Trace),
            ("0", LevelFilter::Off),
            ("1", LevelFilter::Error),
            ("2", LevelFilter::Warn),
            ("3", LevelFilter::Info),
            ("4", LevelFilter::Debug),
            ("5", LevelFilter::Trace),
        ];
        for (value, level) in cases {
            assert_eq!(clean(&format!("loglevel={value}")).loglevel, level, "{value}");
        }
        for bad in ["x", "6", "03", "", "warning", "9999999999999999999999"] {
            let (opts, warnings) = parse(&format!("loglevel=debug loglevel={bad}"));
            assert_eq!(opts.loglevel, LevelFilter::Debug);
            assert_eq!(
                texts(&warnings),
                [format!("cmdline: bad value '{bad}' for loglevel (expected off|error|warn|info|debug|trace or 0-5)")]
            );
        }
    }

    #[test]
    fn panic_action() {
        assert_eq!(clean("panic=reboot").panic, PanicAction::Reboot);
        assert_eq!(clean("panic=REBOOT panic=halt").panic, PanicAction::Halt);
        let (opts, warnings) = parse("panic=reboot panic=explode");
        assert_eq!(opts.panic, PanicAction::Reboot);
        assert_eq!(texts(&warnings), ["cmdline: bad value 'explode' for panic (expected halt|reboot)"]);
    }

    #[test]
    fn grub_quoted_words() {
        // What GRUB passes for `extra="a b c"` and for a value with a quote.
        assert_eq!(
            words(r#"loglevel=info "extra=a b c" "x=say \"hi\"" y"#),
            vec![
                ("loglevel".into(), Some("info".into())),
                ("extra".into(), Some("a b c".into())),
                ("x".into(), Some("say \"hi\"".into())),
                ("y".into(), None),
            ]
        );
        let (_, warnings) = parse(r#""hostname=h1" "unterminated=x"#);
        assert!(warnings.iter().any(|w| w.0.contains("unknown option 'unterminated'")), "{warnings:?}");
    }

    #[test]
    fn nfs_options_accumulate() {
        let o = clean("nfs=10.0.0.1:/a@/var/xen nfs=10.0.0.1:/b@/srv");
        assert_eq!(o.nfs, vec!["10.0.0.1:/a@/var/xen".to_string(), "10.0.0.1:/b@/srv".to_string()]);
        let (o, w) = parse("nfs=10.0.0.1:/a");
        assert!(o.nfs.is_empty() && w.len() == 1, "{w:?}");
    }

    #[test]
    fn relocation_options() {
        let (o, w) = parse(
            "relocation=on relocation-port=9002 \"relocation-hosts-allow=^10\\.77\\.0\\.2$ ^localhost$\" \
             relocation-key=0123456789abcdef relocation-crypto=off",
        );
        assert!(w.is_empty(), "{w:?}");
        assert!(o.relocation && !o.relocation_crypto);
        assert_eq!(o.relocation_port, 9002);
        // Backslash escapes are undone as GRUB's are: `\\.` on the line is `\.`.
        assert_eq!(o.relocation_hosts_allow, "^10.77.0.2$ ^localhost$");
        assert_eq!(o.relocation_key.as_deref(), Some("0123456789abcdef"));
        let (o, _) = parse("relocation-hosts-allow=^10\\\\.77\\\\.");
        assert_eq!(o.relocation_hosts_allow, "^10\\.77\\.");
        let (o, w) = parse("relocation relocation-key=short relocation-port=0 relocation-key-file=rel");
        assert!(o.relocation && o.relocation_key.is_none() && o.relocation_port == 8002);
        assert!(o.relocation_key_file.is_none() && w.len() == 3, "{w:?}");
        let (o, _) = parse("");
        assert!(!o.relocation && o.relocation_crypto && o.relocation_hosts_allow.is_empty());
    }

    #[test]
    fn selftest_fail_option() {
        let o = clean("selftest=fail");
        assert!(o.selftest && o.selftest_fail);
        let o = clean("selftest=fail selftest=on");
        assert!(o.selftest && !o.selftest_fail, "the last one wins");
        let o = clean("selftest=off");
        assert!(!o.selftest && !o.selftest_fail);
        let (o, warnings) = parse("selftest=sometimes");
        assert!(!o.selftest && !o.selftest_fail);
        assert_eq!(
            texts(&warnings),
            ["cmdline: bad value 'sometimes' for selftest (expected 1|0|on|off|yes|no|true|false|fail)"]
        );
    }

    #[test]
    fn nic_irq_option() {
        assert!(clean("ip=dhcp").nic_irq, "interrupts by default");
        assert!(!clean("ip=dhcp nic-irq=off").nic_irq);
        assert!(clean("nic-irq=off nic-irq=on").nic_irq);
        assert!(!clean("nic-irq=0").nic_irq);
        let (opts, warnings) = parse("nic-irq=maybe");
        assert!(opts.nic_irq, "a bad value keeps the default");
        assert_eq!(
            texts(&warnings),
            ["cmdline: bad value 'maybe' for nic-irq (expected 1|0|on|off|yes|no|true|false)"]
        );
        let (opts, warnings) = parse("nic-irq");
        assert!(opts.nic_irq);
        assert_eq!(
            texts(&warnings),
            ["cmdline: option 'nic-irq' needs a value (expected 1|0|on|off|yes|no|true|false)"]
        );
    }

    #[test]
    fn hostname_option() {
        assert_eq!(clean("").hostname, "Domain-0");
        assert_eq!(clean("hostname=Host2").hostname, "Host2");
        let (opts, warnings) = parse("hostname=bad/name");
        assert_eq!(opts.hostname, "Domain-0");
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn selftest_flag() {
        assert!(clean("selftest").selftest);
        for on in ["1", "on", "YES", "true"] {
            assert!(clean(&format!("selftest={on}")).selftest, "{on}");
        }
        for off in ["0", "off", "no", "False"] {
            assert!(!clean(&format!("selftest={off}")).selftest, "{off}");
        }
        let (opts, warnings) = parse("selftest selftest=maybe");
        assert!(opts.selftest);
        assert_eq!(
            texts(&warnings),
            ["cmdline: bad value 'maybe' for selftest (expected 1|0|on|off|yes|no|true|false|fail)"]
        );
    }

    #[test]
    fn last_duplicate_wins() {
        let opts = clean("loglevel=trace panic=reboot loglevel=2 console=com2 console=ttyS3,300");
        assert_eq!(opts.loglevel, LevelFilter::Warn);
        assert_eq!(opts.console, SerialConsole { port: 0x2E8, baud: 300 });
        assert!(!clean("selftest selftest=off").selftest);
    }

    #[test]
    fn bare_key_needing_a_value() {
        let (opts, warnings) = parse("loglevel panic console");
        assert_eq!(opts, Options { raw: "loglevel panic console".into(), ..Options::default() });
        assert_eq!(
            texts(&warnings),
            [
                "cmdline: option 'loglevel' needs a value (expected off|error|warn|info|debug|trace or 0-5)",
                "cmdline: option 'panic' needs a value (expected halt|reboot)",
                "cmdline: option 'console' needs a value (expected ttyS0-ttyS3 or com1-com4, optionally ,BAUD)",
            ]
        );
    }

    #[test]
    fn unknown_and_nameless_options() {
        let (opts, warnings) = parse("foo bar=1 =x loglevel=warn");
        assert_eq!(opts.loglevel, LevelFilter::Warn);
        assert_eq!(
            texts(&warnings),
            [
                "cmdline: unknown option 'foo' ignored",
                "cmdline: unknown option 'bar' ignored",
                "cmdline: option without a name ignored",
            ]
        );
    }

    #[test]
    fn warnings_quote_sanitized_text() {
        let (_, warnings) = parse(&format!("{}\x07 loglevel=\u{e9}", "k".repeat(40)));
        assert_eq!(
            texts(&warnings),
            [
                format!("cmdline: unknown option '{}...' ignored", "k".repeat(32)),
                "cmdline: bad value '?' for loglevel (expected off|error|warn|info|debug|trace or 0-5)".to_string(),
            ]
        );
    }

    #[test]
    fn quoted_values() {
        let (opts, warnings) = parse(r#"extra="a b c" loglevel="debug""#);
        assert_eq!(opts.loglevel, LevelFilter::Debug);
        assert_eq!(texts(&warnings), ["cmdline: unknown option 'extra' ignored"]);
        assert_eq!(opts.raw, r#"extra="a b c" loglevel="debug""#);
    }

    #[test]
    fn unterminated_quote_takes_rest_of_line() {
        let (opts, warnings) = parse("selftest extra=\"a b loglevel=trace");
        assert!(opts.selftest);
        assert_eq!(opts.loglevel, LevelFilter::Info);
        assert_eq!(
            texts(&warnings),
            [
                "cmdline: unterminated quote in value of 'extra'; using the rest of the line",
                "cmdline: unknown option 'extra' ignored",
            ]
        );
        let (opts, warnings) = parse("loglevel=\"debug");
        assert_eq!(opts.loglevel, LevelFilter::Debug);
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn warnings_are_capped() {
        let line = (0..40).map(|i| format!("bad{i}")).collect::<Vec<_>>().join(" ");
        let (_, warnings) = parse(&line);
        assert_eq!(warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(warnings[0].0, "cmdline: unknown option 'bad0' ignored");
        assert_eq!(warnings[15].0, "cmdline: unknown option 'bad15' ignored");
        assert_eq!(warnings[16].0, "cmdline: further warnings suppressed");
        assert_eq!(warnings[16].to_string(), warnings[16].0);

        let exactly: Vec<_> = (0..MAX_WARNINGS).map(|i| format!("bad{i}")).collect();
        assert_eq!(parse(&exactly.join(" ")).1.len(), MAX_WARNINGS);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let mut seed = 0x9E37_79B9u32;
        let pieces = [
            "=", "\"", "\\", " ", "\t", "console", "loglevel", "selftest", "panic", ",", "ttyS1", "9600", "é", "🦀",
            "/", ".elf", "\0", "\x1b", "x",
        ];
        for _ in 0..5_000 {
            let mut line = String::new();
            for _ in 0..(seed % 24) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                line.push_str(pieces[seed as usize % pieces.len()]);
            }
            let (opts, warnings) = parse(&line);
            assert!(warnings.len() <= MAX_WARNINGS + 1);
            assert_eq!(SerialConsole::MAX_BAUD % opts.console.baud, 0);
            assert!(SerialConsole::PORTS.contains(&opts.console.port));
        }
    }
}
