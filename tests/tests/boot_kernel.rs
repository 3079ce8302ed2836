//! Booting with QEMU's `-kernel` (multiboot1): banner, prompt, `info`, the
//! command line as given, unknown-option warnings, and `-initrd` modules.
use systest::{images, timeouts, Error, QemuBuilder, TempDir};

/// The line of `text` starting with `prefix`, if any.
fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().map(str::trim_end).find(|l| l.starts_with(prefix))
}

#[test]
fn boots_to_prompt_and_info_reports_multiboot1_and_cmdline() -> Result<(), Error> {
    let cmdline = "console=ttyS0 loglevel=debug marker=77";
    let mut q = QemuBuilder::kernel(images::elf()?).append(cmdline).spawn()?;
    let banner = q.wait_ready(timeouts::KERNEL_BOOT)?;
    assert_eq!(banner.version, "0.1.0");
    assert!(banner.ms > 0.0 && banner.ms < 10_000.0, "{banner:?}");
    eprintln!("-kernel boot: {:?} wall, kernel says {} ms", q.elapsed(), banner.ms);

    // The unknown option is warned about during boot, before the banner.
    let transcript = q.transcript();
    let warning = transcript
        .find("unknown option 'marker' ignored")
        .unwrap_or_else(|| panic!("no warning for 'marker' in:\n{transcript}"));
    let banner_at = transcript.find("rhv v0.1.0 (build").unwrap();
    assert!(warning < banner_at, "warning after the banner:\n{transcript}");
    // Known options are not warned about.
    for known in ["console", "loglevel"] {
        assert!(!transcript.contains(&format!("unknown option '{known}'")), "{transcript}");
    }

    let info = q.command("info", timeouts::COMMAND)?;
    let get = |p: &str| line(&info, p).unwrap_or_else(|| panic!("no '{p}' line in info:\n{info}"));
    assert_eq!(get("cmdline:"), format!("cmdline: {cmdline}"));
    let boot = get("boot:");
    assert!(boot.starts_with("boot: multiboot1 via "), "{boot}");
    assert!(boot.len() > "boot: multiboot1 via ".len(), "{boot}");
    assert_eq!(get("version:"), format!("version: rhv v0.1.0 build {}", banner.build));
    for p in ["features:", "memory:", "uptime:"] {
        get(p);
    }
    // Vendor, brand and family/model/stepping from CPUID.
    let cpu = systest::Regex::new(
        r"^cpu: (GenuineIntel|AuthenticAMD) \S.* \(family 0x[0-9a-f]+ model 0x[0-9a-f]+ stepping \d+\)$",
    )
    .unwrap();
    assert!(cpu.is_match(get("cpu:")), "{}", get("cpu:"));
    // TCG has no TSC leaf: the PIT calibrates it.
    let tsc = systest::Regex::new(r"^tsc: [0-9]+\.[0-9]{3} MHz \((calibrated against the PIT|CPUID leaf 0x15|hypervisor CPUID leaf 0x40000010)\)$").unwrap();
    assert!(tsc.is_match(get("tsc:")), "{}", get("tsc:"));
    assert!(get("apic:").starts_with("apic: xAPIC id 0, timer 100 Hz"), "{}", get("apic:"));
    // loglevel=debug shows debug records on the console, among them the
    // legacy PIC being masked and the UART's receive interrupt being routed.
    for debug in [
        "DEBUG pic: legacy 8259 pair remapped to vectors 0x20-0x2f and every line masked",
        "DEBUG serial: 0x3f8 receive interrupt on IRQ 4",
    ] {
        assert!(transcript.contains(debug), "no '{debug}' in:\n{transcript}");
    }
    assert_eq!(get("modules:"), "modules: 0");
    Ok(())
}

#[test]
fn initrd_files_show_as_modules() -> Result<(), Error> {
    let dir = TempDir::new("initrd")?;
    let a = dir.path().join("first-module.bin");
    let b = dir.path().join("second-module.txt");
    std::fs::write(&a, vec![0xA5u8; 8192])?;
    std::fs::write(&b, b"hello from module two\n")?;
    let mut q =
        QemuBuilder::kernel(images::elf()?).append("console=ttyS0 loglevel=info").initrd(&a).initrd(&b).spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    let info = q.command("info", timeouts::COMMAND)?;
    let lines: Vec<&str> = info.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_end() == "modules: 2")
        .unwrap_or_else(|| panic!("no 'modules: 2' in info:\n{info}"));
    let listed = &lines[at + 1..];
    assert!(listed.len() >= 2, "module lines missing:\n{info}");
    assert!(listed[0].contains("first-module.bin"), "{info}");
    assert!(listed[1].contains("second-module.txt"), "{info}");
    Ok(())
}

#[test]
fn loglevel_warn_keeps_info_off_the_console_but_dmesg_has_it() -> Result<(), Error> {
    let mut q = QemuBuilder::kernel(images::elf()?).append("console=ttyS0 loglevel=warn bogus=1").spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    let boot = q.transcript();
    // Warnings still come: the level filters, it does not mute.
    assert!(
        boot.lines().any(|l| l.contains(" WARN ") && l.contains("unknown option 'bogus' ignored")),
        "no WARN line for 'bogus':\n{boot}"
    );
    assert!(!boot.contains(" INFO "), "INFO records on the console with loglevel=warn:\n{boot}");
    let dmesg = q.command("dmesg", timeouts::COMMAND)?;
    assert!(dmesg.contains("INFO  boot: multiboot1"), "dmesg lacks the INFO records:\n{dmesg}");
    Ok(())
}

#[test]
fn console_on_ttys1_moves_the_shell_to_com2() -> Result<(), Error> {
    let dir = TempDir::new("com2")?;
    let com2 = dir.path().join("com2.txt");
    let mut q = QemuBuilder::kernel(images::elf()?)
        .arg("-serial")
        .arg(format!("file:{}", com2.display()))
        .append("console=ttyS1 loglevel=info")
        .spawn()?;
    let deadline = std::time::Instant::now() + systest::scaled(timeouts::KERNEL_BOOT);
    let text = loop {
        let text = std::fs::read_to_string(&com2).unwrap_or_default();
        if text.contains(systest::PROMPT) || std::time::Instant::now() >= deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        text.contains("rhv v0.1.0 (build") && text.contains(systest::PROMPT),
        "no banner and prompt on COM2:\n{text}"
    );
    assert!(q.wait_exit(std::time::Duration::from_millis(10)).is_none(), "QEMU exited");
    assert!(!q.transcript().contains(systest::PROMPT), "the prompt also came on COM1:\n{}", q.transcript());
    Ok(())
}
