//! The serial shell: commands, their formats, and line editing.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use systest::contract::{help_line_re, interrupt_count, parse_dmesg, parse_mem, parse_uptime, COMMANDS};
use systest::{boot_kernel, timeouts, Error, Qemu, Regex, PROMPT};

const CMD: Duration = timeouts::COMMAND;

fn boot() -> Result<Qemu, Error> {
    Ok(boot_kernel("console=ttyS0 loglevel=info")?.0)
}

/// Waits for `help`'s output (its `poweroff` line, which no echo contains)
/// and the prompt after it; returns everything consumed.
fn expect_help_output(q: &mut Qemu) -> Result<String, Error> {
    let re = Regex::new(&help_line_re("poweroff")).unwrap();
    let mut text = q.expect(&re, CMD)?;
    text.push_str(&q.expect(PROMPT, CMD)?);
    Ok(text)
}

#[test]
fn help_lists_every_command_with_a_summary() -> Result<(), Error> {
    let mut q = boot()?;
    let help = q.command("help", CMD)?;
    for name in COMMANDS {
        let re = Regex::new(&help_line_re(name)).unwrap();
        assert!(re.is_match(&help), "no help line for '{name}':\n{help}");
    }
    // Exactly these: each help line starts with a command of the list.
    let listed: Vec<&str> = help
        .lines()
        .filter(|l| l.starts_with("  ") && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut want: Vec<&str> = COMMANDS.to_vec();
    let mut got = listed.clone();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "help lists other commands than the contract:\n{help}");
    Ok(())
}

#[test]
fn typed_input_arrives_by_interrupt() -> Result<(), Error> {
    let mut q = boot()?;
    let serial = |q: &mut Qemu| -> Result<(u64, String), Error> {
        let out = q.command("interrupts", CMD)?;
        let n = interrupt_count(&out, "serial console receive").unwrap_or_else(|| panic!("no serial line:\n{out}"));
        Ok((n, out))
    };
    let (before, out) = serial(&mut q)?;
    assert!(interrupt_count(&out, "local APIC timer").is_some(), "no timer line:\n{out}");
    assert!(out.lines().any(|l| l.starts_with("hypercalls: ")), "{out}");
    // Each line is typed after the previous prompt. The UART interrupts at
    // 14 bytes in its FIFO, or after a character timeout, which the shell's
    // own polling can beat for a short line; a line of 18 bytes crosses the
    // trigger level, so each one raises at least one interrupt.
    for _ in 0..5 {
        q.command("help sched-credit", CMD)?;
    }
    let (after, out) = serial(&mut q)?;
    assert!(
        after >= before + 5,
        "serial receive interrupts went from {before} to {after} over five long lines:\n{out}"
    );
    Ok(())
}

#[test]
fn unknown_commands_are_reported_with_suggestion() -> Result<(), Error> {
    let mut q = boot()?;
    let out = q.command("hepl", CMD)?;
    assert_eq!(out.trim_end(), "error: unknown command 'hepl' (try 'help'); did you mean 'help'?");
    let out = q.command("xyzzy", CMD)?;
    assert_eq!(out.trim_end(), "error: unknown command 'xyzzy' (try 'help')");
    // An empty line is no error.
    let out = q.command("", CMD)?;
    assert!(!out.contains("error"), "{out:?}");
    Ok(())
}

#[test]
fn arrows_move_the_cursor_and_insert() -> Result<(), Error> {
    let mut q = boot()?;
    // "hlp", cursor left twice (between h and l), insert "e" -> "help".
    q.send(b"hlp\x1b[D\x1b[De\r")?;
    let text = expect_help_output(&mut q)?;
    assert!(!text.contains("unknown command"), "{text}");
    // Right arrow moves back: "hel" + left + right + "p" -> "help".
    q.send(b"hel\x1b[D\x1b[Cp\r")?;
    let text = expect_help_output(&mut q)?;
    assert!(!text.contains("unknown command"), "{text}");
    Ok(())
}

#[test]
fn backspace_and_ctrl_u_edit_the_line() -> Result<(), Error> {
    let mut q = boot()?;
    q.send(b"helpx\x7f\r")?;
    let text = expect_help_output(&mut q)?;
    assert!(!text.contains("unknown command"), "{text}");
    q.send(b"garbage words\x15help\r")?;
    let text = expect_help_output(&mut q)?;
    assert!(!text.contains("unknown command"), "{text}");
    Ok(())
}

#[test]
fn ctrl_c_abandons_the_line() -> Result<(), Error> {
    let mut q = boot()?;
    q.send(b"bogus command\x03")?;
    let text = q.expect("^C", CMD)?;
    assert!(!text.contains("unknown command"), "{text}");
    q.expect(PROMPT, CMD)?;
    let help = q.command("help", CMD)?;
    assert!(!help.contains("unknown command"), "{help}");
    assert!(help.contains("poweroff"), "{help}");
    Ok(())
}

#[test]
fn history_recalls_earlier_commands() -> Result<(), Error> {
    let mut q = boot()?;
    let uptime = Regex::new(r"up \d+:\d\d:\d\d\.\d{3}, since").unwrap();
    let first = q.command("uptime", CMD)?;
    assert!(uptime.is_match(&first), "{first}");
    // Up arrow + Enter repeats it.
    q.send(b"\x1b[A\r")?;
    let text = q.expect(&uptime, CMD)?;
    assert!(!text.contains("unknown command"), "{text}");
    q.expect(PROMPT, CMD)?;

    // mem, then uptime: up, up (mem), down (uptime), Enter -> uptime.
    q.command("mem", CMD)?;
    q.command("uptime", CMD)?;
    q.send(b"\x1b[A\x1b[A\x1b[B\r")?;
    let text = q.expect(PROMPT, CMD)?;
    let out = systest::qemu::command_output(&text);
    assert!(uptime.is_match(&out), "expected uptime output, got:\n{out}");
    assert!(!out.contains("memory:"), "{out}");
    Ok(())
}

#[test]
fn overlong_line_is_refused_with_bell_and_shell_recovers() -> Result<(), Error> {
    let mut q = boot()?;
    let mut line = vec![b'a'; 300];
    line.push(b'\r');
    q.send(&line)?;
    let text = q.expect(PROMPT, CMD)?;
    let bell = text.find('\x07').unwrap_or_else(|| panic!("no bell for a 300-character line:\n{text:?}"));
    let echoed = text[..bell].matches('a').count();
    assert!((200..=256).contains(&echoed), "{echoed} characters accepted before the bell (limit 256)");
    let help = q.command("help", CMD)?;
    assert!(help.contains("poweroff"), "{help}");
    Ok(())
}

#[test]
fn uptime_parses_and_increases() -> Result<(), Error> {
    let mut q = boot()?;
    let t0 = Instant::now();
    let a = q.command("uptime", CMD)?;
    let u1 = parse_uptime(&a).unwrap_or_else(|| panic!("uptime format: {a:?}"));
    // Let measurable time pass (this is the quantity under test, not a
    // synchronisation).
    std::thread::sleep(Duration::from_millis(30));
    let b = q.command("uptime", CMD)?;
    let host = t0.elapsed();
    let u2 = parse_uptime(&b).unwrap_or_else(|| panic!("uptime format: {b:?}"));
    assert!(u2.up > u1.up, "{u1:?} then {u2:?}");
    assert!(
        u2.up - u1.up <= host + Duration::from_secs(1),
        "guest clock ran faster than the host: {:?} vs {host:?}",
        u2.up - u1.up
    );
    assert!(u2.up < Duration::from_secs(600), "{u2:?}");
    // The boot time is stable and agrees with the host's clock (QEMU's RTC
    // starts at host UTC).
    assert!((u2.since_unix - u1.since_unix).abs() <= 1, "{u1:?} {u2:?}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let boot_host = now - u2.up.as_secs() as i64;
    assert!((u2.since_unix - boot_host).abs() <= 120, "since {} vs host boot {}", u2.since_unix, boot_host);
    Ok(())
}

#[test]
fn mem_reports_consistent_sizes() -> Result<(), Error> {
    let mut q = boot()?;
    let out = q.command("mem", CMD)?;
    let m = parse_mem(&out).unwrap_or_else(|| panic!("mem format:\n{out}"));
    let mib = 1024.0 * 1024.0;
    // -m 256M: the usable RAM is a bit less than 256 MiB.
    assert!(m.total > 200.0 * mib && m.total <= 256.0 * mib, "{m:?}");
    assert!(m.free > 0.0 && m.used > 0.0, "{m:?}");
    // One decimal of rounding per figure.
    assert!((m.free + m.used - m.total).abs() <= 0.3 * mib, "{m:?}");
    assert!(m.heap_size > 0.0 && m.heap_used <= m.heap_size, "{m:?}");
    Ok(())
}

#[test]
fn dmesg_lines_are_timestamped() -> Result<(), Error> {
    let mut q = boot()?;
    let out = q.command("dmesg", CMD)?;
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    let parsed = parse_dmesg(&out);
    assert!(parsed.len() >= 3, "too few log lines:\n{out}");
    assert_eq!(parsed.len(), lines.len(), "lines not in '[    0.012345] LEVEL message' form:\n{out}");
    assert!(parsed.windows(2).all(|w| w[0].time <= w[1].time), "timestamps go backwards:\n{out}");
    assert!(parsed.iter().any(|l| l.level == "INFO"), "{out}");
    Ok(())
}
