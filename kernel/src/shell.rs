//! Shell helpers that need no hardware: splitting a command line into words,
//! command metadata and `help` output, "did you mean" suggestions, and
//! human-readable durations and sizes.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

/// The most words [`tokenize`] accepts on one line.
pub const MAX_WORDS: usize = 64;

/// How many characters of an offending word error messages show.
const SHOWN_CHARS: usize = 32;

/// Why a command line could not be split into words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizeError {
    /// A `"` or `'` quote was opened and never closed.
    UnterminatedQuote,
    /// The line has more than [`MAX_WORDS`] words.
    TooManyWords,
}

impl fmt::Display for TokenizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnterminatedQuote => f.write_str("unterminated quote"),
            Self::TooManyWords => write!(f, "too many words (at most {MAX_WORDS})"),
        }
    }
}

/// Splits `line` into whitespace-separated words.
///
/// `"double"` and `'single'` quotes group text into one word and are removed;
/// `""` yields an empty word. Outside single quotes a backslash makes the next
/// character literal (a trailing backslash is kept as is).
pub fn tokenize(line: &str) -> Result<Vec<String>, TokenizeError> {
    let mut words = Vec::new();
    // `Some` while inside a word, which may be empty (`""`).
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.get_or_insert_default().push(c),
            (_, '\\') => word.get_or_insert_default().push(chars.next().unwrap_or('\\')),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (None, c) if c.is_ascii_whitespace() => {
                if let Some(w) = word.take() {
                    push_word(&mut words, w)?;
                }
            }
            (_, c) => word.get_or_insert_default().push(c),
        }
    }
    if quote.is_some() {
        return Err(TokenizeError::UnterminatedQuote);
    }
    if let Some(w) = word {
        push_word(&mut words, w)?;
    }
    Ok(words)
}

fn push_word(words: &mut Vec<String>, word: String) -> Result<(), TokenizeError> {
    if words.len() >= MAX_WORDS {
        return Err(TokenizeError::TooManyWords);
    }
    words.push(word);
    Ok(())
}

/// Metadata for one shell command, as listed by `help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    /// What the user types, e.g. `"dmesg"`.
    pub name: &'static str,
    /// The synopsis, e.g. `"dmesg [-c]"`.
    pub usage: &'static str,
    /// A one-line description.
    pub summary: &'static str,
}

/// The Damerau-Levenshtein distance (optimal string alignment variant)
/// between `a` and `b`, ignoring ASCII case: the number of single-character
/// insertions, deletions, substitutions and adjacent transpositions needed.
///
/// Takes `O(len(a) * len(b))` time; callers bound the input lengths.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Rows i-1, i and i+1 of the (len(a)+1) x (len(b)+1) distance matrix.
    let mut two_back = alloc::vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = alloc::vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            let mut d = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
            if i > 0 && j > 0 && ca == b[j - 1] && a[i - 1] == cb {
                d = d.min(two_back[j - 1] + 1);
            }
            cur[j + 1] = d;
        }
        core::mem::swap(&mut two_back, &mut prev);
        core::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Suggests the command the user probably meant by `word`.
///
/// Prefers the only name that `word` is a prefix of (ignoring ASCII case),
/// otherwise the closest name whose [`edit_distance`] is at most
/// `max(1, min(2, len / 3))` (the earliest in `names` on a tie). Returns
/// `None` for an empty word or one longer than 64 characters.
pub fn suggest<'a>(word: &str, names: &[&'a str]) -> Option<&'a str> {
    let len = word.chars().count();
    if len == 0 || len > 64 {
        return None;
    }
    let lower = word.to_ascii_lowercase();
    let mut prefixed = names.iter().filter(|name| name.to_ascii_lowercase().starts_with(&lower));
    if let (Some(&only), None) = (prefixed.next(), prefixed.next()) {
        return Some(only);
    }
    let max = (len / 3).clamp(1, 2);
    names
        .iter()
        .map(|&name| (edit_distance(word, name), name))
        .filter(|&(d, _)| d <= max)
        .min_by_key(|&(d, _)| d)
        .map(|(_, name)| name)
}

/// The error line for an unknown command, with a suggestion when there is
/// one: `error: unknown command 'hepl' (try 'help'); did you mean 'help'?`.
pub fn unknown_command_message(word: &str, names: &[&str]) -> String {
    let mut msg = format!("error: unknown command '{}' (try 'help')", sanitize(word, SHOWN_CHARS));
    if let Some(name) = suggest(word, names) {
        let _ = write!(msg, "; did you mean '{name}'?");
    }
    msg
}

/// Makes untrusted text safe to echo on a terminal: every character other
/// than printable ASCII becomes `?`, and text longer than `max_chars`
/// characters is cut there and ends in `...`.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out: String =
        text.chars().take(max_chars).map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect();
    if text.chars().nth(max_chars).is_some() {
        out.push_str("...");
    }
    out
}

/// The `help` listing: per command, two spaces, the usage padded to the
/// widest usage, two spaces and the summary, each line ending in `\n`.
pub fn format_help(cmds: &[CommandInfo]) -> String {
    let width = cmds.iter().map(|c| c.usage.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for cmd in cmds {
        let _ = write!(out, "  {:<width$}  {}", cmd.usage, cmd.summary);
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
    }
    out
}

/// Formats nanoseconds as `h:mm:ss.mmm` (milliseconds truncated), with a
/// day count in front once it reaches a day: `2d 3:04:05.006`.
pub fn format_duration(ns: u64) -> String {
    let ms = ns / 1_000_000;
    let secs = ms / 1000;
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    let clock = format!("{}:{:02}:{:02}.{:03}", hours % 24, mins % 60, secs % 60, ms % 1000);
    if days > 0 {
        format!("{days}d {clock}")
    } else {
        clock
    }
}

/// Formats a byte count: plain bytes below 1 KiB (`512 B`), otherwise one
/// rounded decimal in the largest binary unit that keeps the value below
/// 1024 (`4.0 KiB`, `1.5 MiB`, `24.0 GiB`).
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // `n / 2^shift` in tenths, rounded half up; u128 so `n * 10` cannot overflow.
    let tenths = |shift: u32| (u128::from(n) * 10 + (1u128 << (shift - 1))) >> shift;
    let mut shift = 10;
    let mut unit = UNITS[0];
    for next in UNITS.iter().skip(1) {
        if tenths(shift) < 10_240 {
            break;
        }
        shift += 10;
        unit = next;
    }
    let t = tenths(shift);
    format!("{}.{} {unit}", t / 10, t % 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const NAMES: &[&str] = &["help", "info", "dmesg", "reboot", "halt", "mem", "memmap", "cpus", "uptime"];

    fn words(line: &str) -> Vec<String> {
        tokenize(line).unwrap()
    }

    #[test]
    fn tokenize_splits_on_whitespace() {
        assert_eq!(words("  dmesg \t -c  "), ["dmesg", "-c"]);
        assert!(words("").is_empty());
        assert!(words(" \t\r\n").is_empty());
    }

    #[test]
    fn tokenize_quotes_group_and_are_removed() {
        assert_eq!(words(r#"echo "a b"  'c  d'"#), ["echo", "a b", "c  d"]);
        assert_eq!(words(r#"x"y z"w"#), ["xy zw"]);
        assert_eq!(words(r#"'it"s' "it's""#), [r#"it"s"#, "it's"]);
        assert_eq!(words(r#"a "" ''"#), ["a", "", ""]);
    }

    #[test]
    fn tokenize_backslash_escapes_outside_single_quotes() {
        assert_eq!(words(r"a\ b"), ["a b"]);
        assert_eq!(words(r#""say \"hi\"""#), [r#"say "hi""#]);
        assert_eq!(words(r"'a\b'"), [r"a\b"]);
        assert_eq!(words(r"\'x"), ["'x"]);
        assert_eq!(words(r"end\"), [r"end\"]);
    }

    #[test]
    fn tokenize_errors() {
        assert_eq!(tokenize("echo \"abc"), Err(TokenizeError::UnterminatedQuote));
        assert_eq!(tokenize("'"), Err(TokenizeError::UnterminatedQuote));
        let ok = vec!["w"; MAX_WORDS].join(" ");
        assert_eq!(words(&ok).len(), MAX_WORDS);
        let too_many = vec!["w"; MAX_WORDS + 1].join(" ");
        assert_eq!(tokenize(&too_many), Err(TokenizeError::TooManyWords));
        assert_eq!(TokenizeError::UnterminatedQuote.to_string(), "unterminated quote");
        assert_eq!(TokenizeError::TooManyWords.to_string(), "too many words (at most 64)");
    }

    #[test]
    fn tokenize_handles_unicode() {
        assert_eq!(words("écho 'ünï cödé'"), ["écho", "ünï cödé"]);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("help", "help"), 0);
        assert_eq!(edit_distance("HeLP", "help"), 0);
        assert_eq!(edit_distance("hepl", "help"), 1);
        assert_eq!(edit_distance("hlp", "help"), 1);
        assert_eq!(edit_distance("helpp", "help"), 1);
        assert_eq!(edit_distance("halp", "help"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        // Optimal string alignment, not full Damerau-Levenshtein.
        assert_eq!(edit_distance("ca", "abc"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
    }

    #[test]
    fn edit_distance_is_symmetric() {
        let samples = ["", "a", "ab", "ba", "dmesg", "desmg", "reboot", "rbeoot", "xyz"];
        for a in samples {
            for b in samples {
                assert_eq!(edit_distance(a, b), edit_distance(b, a), "{a} {b}");
            }
        }
    }

    #[test]
    fn suggest_by_distance() {
        assert_eq!(suggest("hepl", NAMES), Some("help"));
        assert_eq!(suggest("dmseg", NAMES), Some("dmesg"));
        assert_eq!(suggest("rebot", NAMES), Some("reboot"));
        assert_eq!(suggest("HELP", NAMES), Some("help"));
        // len 6 allows distance 2.
        assert_eq!(suggest("rbeoto", NAMES), Some("reboot"));
        // len 4 allows only distance 1.
        assert_eq!(suggest("hlap", NAMES), None);
        assert_eq!(suggest("xyzzy", NAMES), None);
    }

    #[test]
    fn suggest_by_unique_prefix() {
        assert_eq!(suggest("reb", NAMES), Some("reboot"));
        assert_eq!(suggest("upt", NAMES), Some("uptime"));
        // "mem" is a prefix of both "mem" and "memmap"; the exact name wins.
        assert_eq!(suggest("mem", NAMES), Some("mem"));
        // Ambiguous prefix and no close name.
        assert_eq!(suggest("me", &["memmap", "memstat"]), None);
    }

    #[test]
    fn suggest_rejects_empty_and_long_words() {
        assert_eq!(suggest("", NAMES), None);
        let long = "h".repeat(65);
        assert_eq!(suggest(&long, &[long.as_str()]), None);
        let max = "h".repeat(64);
        assert_eq!(suggest(&max, &[max.as_str()]), Some(max.as_str()));
        assert_eq!(suggest("help", &[]), None);
    }

    #[test]
    fn suggest_tie_takes_first() {
        assert_eq!(suggest("bat", &["cat", "bar"]), Some("cat"));
        assert_eq!(suggest("bat", &["bar", "cat"]), Some("bar"));
    }

    #[test]
    fn unknown_command_messages() {
        assert_eq!(
            unknown_command_message("hepl", NAMES),
            "error: unknown command 'hepl' (try 'help'); did you mean 'help'?"
        );
        assert_eq!(unknown_command_message("xyzzy", NAMES), "error: unknown command 'xyzzy' (try 'help')");
        assert_eq!(unknown_command_message("a\x1b[2Jb\u{e9}", NAMES), "error: unknown command 'a?[2Jb?' (try 'help')");
        let long = "x".repeat(100);
        assert_eq!(
            unknown_command_message(&long, NAMES),
            format!("error: unknown command '{}...' (try 'help')", "x".repeat(32))
        );
    }

    #[test]
    fn sanitize_truncates_by_chars() {
        assert_eq!(sanitize("abc", 3), "abc");
        assert_eq!(sanitize("abcd", 3), "abc...");
        assert_eq!(sanitize("ééééé", 3), "???...");
        assert_eq!(sanitize("tab\there", 32), "tab?here");
        assert_eq!(sanitize("", 0), "");
        assert_eq!(sanitize("a", 0), "...");
    }

    #[test]
    fn help_is_aligned() {
        let cmds = [
            CommandInfo { name: "help", usage: "help", summary: "list commands" },
            CommandInfo { name: "dmesg", usage: "dmesg [-c]", summary: "show the log" },
            CommandInfo { name: "halt", usage: "halt", summary: "" },
        ];
        assert_eq!(format_help(&cmds), "  help        list commands\n  dmesg [-c]  show the log\n  halt\n");
        assert_eq!(format_help(&[]), "");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0), "0:00:00.000");
        assert_eq!(format_duration(999_999), "0:00:00.000");
        assert_eq!(format_duration(5_123_000_000), "0:00:05.123");
        assert_eq!(format_duration(3_723_004_000_000), "1:02:03.004");
        assert_eq!(format_duration(86_399_999_000_000), "23:59:59.999");
        assert_eq!(format_duration(86_400_000_000_000), "1d 0:00:00.000");
        let two_days = 2 * 86_400 + 3 * 3600 + 4 * 60 + 5;
        assert_eq!(format_duration(two_days * 1_000_000_000 + 6_000_000), "2d 3:04:05.006");
        assert_eq!(format_duration(u64::MAX), "213503d 23:34:33.709");
    }

    #[test]
    fn bytes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(4096), "4.0 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 << 19), "1.5 MiB");
        assert_eq!(format_bytes(24 << 30), "24.0 GiB");
        assert_eq!(format_bytes((1 << 20) - 1), "1.0 MiB");
        assert_eq!(format_bytes((1 << 20) - 52 * 1024), "972.0 KiB");
        assert_eq!(format_bytes(1 << 40), "1.0 TiB");
        assert_eq!(format_bytes(1 << 50), "1.0 PiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }
}
