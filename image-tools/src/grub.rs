//! The grub.cfg that boots rhv, and quoting for GRUB's script parser.
use std::borrow::Cow;

use crate::{Config, Error, KERNEL_IMAGE_PATH, MODULE_IMAGE_DIR};

/// Characters that GRUB's lexer takes literally in an unquoted word. Anything
/// else (space, quotes, `\`, `$`, `;`, `|`, `&`, `<`, `>`, `{`, `}`, `#`,
/// wildcards, ...) gets the word single-quoted.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.,:/=+@%".contains(c)
}

/// Quotes one word for GRUB's script parser so that the command receives it
/// unchanged. Single quotes keep everything literal except `'` itself, which
/// is written as `'\''` (close, escaped quote, reopen), as in a POSIX shell.
pub fn quote_word(word: &str) -> Cow<'_, str> {
    if !word.is_empty() && word.chars().all(is_plain) {
        return Cow::Borrowed(word);
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// Checks a kernel command line: printable ASCII only (GRUB and the kernel's
/// parser work on bytes; a newline would end the GRUB command early).
pub fn validate_cmdline(cmdline: &str) -> Result<(), Error> {
    if let Some(c) = cmdline.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t')) {
        return Err(Error::Input(format!("--cmdline may hold printable ASCII only, found {c:?}")));
    }
    Ok(())
}

/// Splits a command line into words the way the rhv kernel reads it:
/// spaces and tabs separate words; double quotes group text with spaces and
/// are removed (`extra="a b c"` is the one word `extra=a b c`); `\"` and
/// `\\` stand for `"` and `\`. An unterminated quote runs to the end.
/// Each word becomes one argument of GRUB's `multiboot2` command.
pub fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = cmdline.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                continue;
            }
            '"' => quoted = !quoted,
            '\\' => match chars.next_if(|&n| n == '"' || n == '\\') {
                Some(escaped) => word.push(escaped),
                None => word.push('\\'),
            },
            c => word.push(c),
        }
        in_word = true;
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The command line GRUB 2's multiboot loaders hand to the kernel for these
/// arguments (grub-core/lib/cmdline.c): arguments joined by spaces, `\`,
/// `'` and `"` escaped with a backslash, and an argument containing a space
/// wrapped in double quotes as a whole (`"key=a b"`).
pub fn grub_loader_cmdline(words: &[String]) -> String {
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let space = w.contains(' ');
        if space {
            out.push('"');
        }
        for c in w.chars() {
            if matches!(c, '\\' | '\'' | '"') {
                out.push('\\');
            }
            out.push(c);
        }
        if space {
            out.push('"');
        }
    }
    out
}

/// Notes about how GRUB will change a command line on its way to the kernel
/// (quotes, backslashes, values with spaces; see [`grub_loader_cmdline`]).
/// Empty when the kernel gets it as written (up to runs of spaces).
pub fn cmdline_warnings(cmdline: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let written = cmdline.split_whitespace().collect::<Vec<_>>().join(" ");
    let passed = grub_loader_cmdline(&split_cmdline(cmdline));
    if passed != written {
        warnings.push(format!("GRUB passes the command line to the kernel as: {passed}"));
    }
    if cmdline.chars().filter(|&c| c == '"').count() % 2 == 1 {
        warnings.push("the command line has an unterminated double quote".into());
    }
    warnings
}

/// A module name is used as a file name and as the module string: 1 to 64
/// characters from `[A-Za-z0-9._+-]`, not starting with `.` or `-`.
pub fn valid_module_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// Renders the grub.cfg for `config`: serial console at 115200 (so GRUB and
/// rhv share COM1), no menu delay, the kernel with its command line (one
/// GRUB word per command-line word as [`split_cmdline`] finds them, quoted
/// for GRUB's parser with [`quote_word`]), one `module2` line per
/// module with the module's name as its string, then `boot`.
///
/// The same file serves the ISO and the PXE tree: a network-booted GRUB's
/// root is the TFTP server, so `/boot/...` resolves alike.
pub fn grub_cfg(config: &Config) -> String {
    let mut cfg = String::new();
    cfg.push_str("# Written by rhv-image: boot rhv straight away on the serial console.\n");
    cfg.push_str("serial --unit=0 --speed=115200\n");
    cfg.push_str("terminal_input serial console\n");
    cfg.push_str("terminal_output serial console\n");
    cfg.push_str("set timeout=0\n");
    cfg.push_str("echo 'rhv-image: loading ");
    cfg.push_str(KERNEL_IMAGE_PATH);
    cfg.push_str("'\n");
    cfg.push_str("multiboot2 ");
    cfg.push_str(KERNEL_IMAGE_PATH);
    for word in split_cmdline(&config.cmdline) {
        cfg.push(' ');
        cfg.push_str(&quote_word(&word));
    }
    cfg.push('\n');
    for module in &config.modules {
        let name = quote_word(&module.name);
        cfg.push_str(&format!("module2 {MODULE_IMAGE_DIR}/{name} {name}\n"));
    }
    cfg.push_str("boot\n");
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Module;
    use std::path::PathBuf;

    fn config(cmdline: &str, modules: &[&str]) -> Config {
        Config {
            kernel: PathBuf::from("k.elf"),
            cmdline: cmdline.into(),
            modules: modules
                .iter()
                .map(|n| Module { path: PathBuf::from(format!("/src/{n}")), name: n.to_string() })
                .collect(),
        }
    }

    #[test]
    fn plain_words_are_not_quoted() {
        assert_eq!(quote_word("console=ttyS0"), "console=ttyS0");
        assert_eq!(quote_word("a.b-c_d,e:f/g+h@i%j"), "a.b-c_d,e:f/g+h@i%j");
    }

    #[test]
    fn special_words_are_single_quoted() {
        assert_eq!(quote_word(""), "''");
        assert_eq!(quote_word("a$b"), "'a$b'");
        assert_eq!(quote_word("x;reboot"), "'x;reboot'");
        assert_eq!(quote_word("{a}"), "'{a}'");
        assert_eq!(quote_word("#c"), "'#c'");
        assert_eq!(quote_word("a b"), "'a b'");
        assert_eq!(quote_word("w*"), "'w*'");
        assert_eq!(quote_word("p|q&r<s>t"), "'p|q&r<s>t'");
        assert_eq!(quote_word(r"back\slash"), r"'back\slash'");
        assert_eq!(quote_word(r#"say="hi""#), r#"'say="hi"'"#);
    }

    #[test]
    fn single_quote_is_closed_escaped_and_reopened() {
        assert_eq!(quote_word("it's"), r"'it'\''s'");
        assert_eq!(quote_word("'"), r"''\'''");
    }

    #[test]
    fn default_config_is_exact() {
        let cfg = grub_cfg(&config("console=ttyS0 loglevel=info", &[]));
        assert_eq!(
            cfg,
            "# Written by rhv-image: boot rhv straight away on the serial console.\n\
             serial --unit=0 --speed=115200\n\
             terminal_input serial console\n\
             terminal_output serial console\n\
             set timeout=0\n\
             echo 'rhv-image: loading /boot/hypervisor.elf'\n\
             multiboot2 /boot/hypervisor.elf console=ttyS0 loglevel=info\n\
             boot\n"
        );
    }

    #[test]
    fn cmdline_words_are_split_and_quoted() {
        let cfg = grub_cfg(&config("  console=ttyS0\tmsg=$HOME  x;y ", &[]));
        assert!(cfg.contains("\nmultiboot2 /boot/hypervisor.elf console=ttyS0 'msg=$HOME' 'x;y'\n"), "{cfg}");
    }

    #[test]
    fn empty_cmdline_has_bare_kernel_line() {
        let cfg = grub_cfg(&config("", &[]));
        assert!(cfg.contains("\nmultiboot2 /boot/hypervisor.elf\n"), "{cfg}");
    }

    #[test]
    fn module_lines_follow_kernel_in_order_then_boot() {
        let cfg = grub_cfg(&config("console=ttyS0", &["guest1", "disk.img"]));
        let lines: Vec<&str> = cfg.lines().collect();
        let n = lines.len();
        assert_eq!(lines[n - 4], "multiboot2 /boot/hypervisor.elf console=ttyS0");
        assert_eq!(lines[n - 3], "module2 /boot/modules/guest1 guest1");
        assert_eq!(lines[n - 2], "module2 /boot/modules/disk.img disk.img");
        assert_eq!(lines[n - 1], "boot");
    }

    #[test]
    fn serial_is_set_up_before_anything_prints() {
        let cfg = grub_cfg(&config("x", &[]));
        let serial = cfg.find("serial --unit=0 --speed=115200").unwrap();
        let input = cfg.find("terminal_input serial console").unwrap();
        let output = cfg.find("terminal_output serial console").unwrap();
        let echo = cfg.find("echo ").unwrap();
        assert!(serial < input && input < output && output < echo);
        assert!(cfg.contains("\nset timeout=0\n"));
    }

    #[test]
    fn module_names() {
        for ok in ["guest1", "a", "disk.img", "x-y_z+1", &"n".repeat(64)] {
            assert!(valid_module_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a b", "a/b", "a'b", "é", &"n".repeat(65)] {
            assert!(!valid_module_name(bad), "{bad}");
        }
    }

    #[test]
    fn cmdline_validation() {
        assert!(validate_cmdline("console=ttyS0 loglevel=debug x=\"q\"").is_ok());
        assert!(validate_cmdline("").is_ok());
        assert!(validate_cmdline("a\nboot").is_err());
        assert!(validate_cmdline("caf\u{e9}").is_err());
    }

    #[test]
    fn split_follows_the_kernel_syntax() {
        let w = |s: &str| split_cmdline(s);
        assert_eq!(w("  a=1\tb  c=\r\n"), ["a=1", "b", "c="]);
        assert_eq!(w(r#"extra="a b c" x"#), ["extra=a b c", "x"]);
        assert_eq!(w(r#"q=\"hi\" bs=a\\b other=a\nb"#), [r#"q="hi""#, r"bs=a\b", r"other=a\nb"]);
        assert_eq!(w(r#"e="" f"#), ["e=", "f"]);
        assert_eq!(w(r#"open="a b"#), ["open=a b"]);
        assert!(w("").is_empty() && w("   ").is_empty());
    }

    #[test]
    fn value_with_spaces_is_one_grub_word() {
        let cfg = grub_cfg(&config(r#"console=ttyS0 extra="a b c""#, &[]));
        assert!(cfg.contains("\nmultiboot2 /boot/hypervisor.elf console=ttyS0 'extra=a b c'\n"), "{cfg}");
    }

    #[test]
    fn grub_loader_cmdline_matches_grub() {
        // Observed from GRUB 2.06 booting a probe kernel with
        // `multiboot2 K 'msg=hello world' msg2="x y" 'q=a"b' 'bs=a\b'`.
        let words: Vec<String> =
            ["msg=hello world", "msg2=x y", "q=a\"b", r"bs=a\b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(grub_loader_cmdline(&words), r#""msg=hello world" "msg2=x y" q=a\"b bs=a\\b"#);
        assert_eq!(grub_loader_cmdline(&["it's".to_string()]), r"it\'s");
        assert_eq!(grub_loader_cmdline(&[]), "");
    }

    #[test]
    fn warnings_only_when_grub_changes_the_line() {
        assert!(cmdline_warnings("console=ttyS0  a=$b;c").is_empty());
        let w = cmdline_warnings(r#"x="y z" ok"#);
        assert_eq!(w, [r#"GRUB passes the command line to the kernel as: "x=y z" ok"#]);
        let w = cmdline_warnings(r#"x="y"#);
        assert!(w.iter().any(|m| m.contains("unterminated")), "{w:?}");
    }
}
