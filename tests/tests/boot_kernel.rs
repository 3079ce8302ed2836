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
    for p in ["cpu:", "features:", "memory:", "uptime:"] {
        get(p);
    }
    let tsc = systest::Regex::new(r"^tsc: [0-9]+\.[0-9]{3} MHz").unwrap();
    assert!(tsc.is_match(get("tsc:")), "{}", get("tsc:"));
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
