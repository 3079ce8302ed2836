//! Booting through GRUB (multiboot2) from an ISO and over PXE, under TCG.
use std::path::Path;

use systest::{images, rhv_image, timeouts, Error, QemuBuilder, TempDir};

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .map(str::trim_end)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' line in:\n{text}"))
}

/// The command line scripts/build baked into its images (it records it).
fn built_cmdline(stamp: &str) -> String {
    std::fs::read_to_string(images::dir().join(stamp)).unwrap_or_else(|_| "console=ttyS0 loglevel=info".into())
}

fn assert_grub_boot(info: &str, cmdline: &str) {
    let boot = line(info, "boot:");
    assert!(boot.starts_with("boot: multiboot2 via "), "{boot}");
    assert!(boot.contains("GRUB"), "loader name should name GRUB: {boot}");
    assert_eq!(line(info, "cmdline:"), format!("cmdline: {cmdline}"));
}

#[test]
fn custom_iso_with_module_boots_via_grub() -> Result<(), Error> {
    let dir = TempDir::new("iso-boot")?;
    let module = dir.path().join("payload.bin");
    std::fs::write(&module, vec![0x5Au8; 3000])?;
    let iso = dir.path().join("custom.iso");
    let cmdline = "console=ttyS0 loglevel=info isomarker=5";
    let elf = images::elf()?;
    rhv_image(&[
        "iso",
        "--kernel",
        path(&elf),
        "--out",
        path(&iso),
        "--cmdline",
        cmdline,
        "--module",
        &format!("{}=guest1", module.display()),
    ])?;

    let mut q = QemuBuilder::iso(&iso).spawn()?;
    let banner = q.wait_ready(timeouts::ISO_BOOT)?;
    eprintln!("GRUB ISO boot (TCG): {:.2} s launch to prompt, kernel {} ms", q.elapsed().as_secs_f64(), banner.ms);
    assert!(q.transcript().contains("unknown option 'isomarker' ignored"));
    let info = q.command("info", timeouts::COMMAND)?;
    assert_grub_boot(&info, cmdline);
    let lines: Vec<&str> = info.lines().map(str::trim_end).collect();
    let at = lines.iter().position(|l| *l == "modules: 1").unwrap_or_else(|| panic!("no 'modules: 1' in:\n{info}"));
    assert!(lines.get(at + 1).is_some_and(|l| l.contains("guest1")), "module line should name guest1:\n{info}");
    Ok(())
}

#[test]
fn built_iso_boots() -> Result<(), Error> {
    let mut q = QemuBuilder::iso(images::iso()?).spawn()?;
    q.wait_ready(timeouts::ISO_BOOT)?;
    let info = q.command("info", timeouts::COMMAND)?;
    assert_grub_boot(&info, &built_cmdline(".hypervisor.iso.cmdline"));
    assert_example_guests(&info);
    // A guest from the ISO's modules runs.
    q.send_line("create -c heartbeat extra=\"period_ms=100\"")?;
    q.expect("heartbeat heartbeat seq=2 ", timeouts::COMMAND)?;
    Ok(())
}

/// The built images carry every example guest as a named boot module.
fn assert_example_guests(info: &str) {
    let guests = ["heartbeat", "spin", "memdirty", "hostile", "fpu", "smp", "echo-server", "blklog"];
    assert_eq!(line(info, "modules:"), format!("modules: {}", guests.len()));
    for g in guests {
        assert!(
            info.lines().any(|l| l.trim_start().starts_with('[') && l.contains(&format!("] {g} ("))),
            "no module {g}:\n{info}"
        );
    }
}

#[test]
fn pxe_tree_boots_over_tftp() -> Result<(), Error> {
    let mut q = QemuBuilder::pxe(images::pxe()?).spawn()?;
    let banner = q.wait_ready(timeouts::PXE_BOOT)?;
    eprintln!("PXE boot (TCG): {:.2} s launch to prompt, kernel {} ms", q.elapsed().as_secs_f64(), banner.ms);
    let info = q.command("info", timeouts::COMMAND)?;
    assert_grub_boot(&info, &built_cmdline(".pxe.cmdline"));
    assert_example_guests(&info);
    Ok(())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
