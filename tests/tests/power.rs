//! `reboot` and `poweroff`.
use systest::{images, timeouts, Error, QemuBuilder};

#[test]
fn reboot_boots_again_without_no_reboot() -> Result<(), Error> {
    let mut q = QemuBuilder::kernel(images::elf()?).append("console=ttyS0 loglevel=info").no_reboot(false).spawn()?;
    let first = q.wait_ready(timeouts::KERNEL_BOOT)?;
    q.send_line("reboot")?;
    let second = q.wait_ready(timeouts::KERNEL_BOOT)?;
    assert_eq!(first.build, second.build);
    assert_eq!(q.transcript().matches("rhv v0.1.0 (build").count(), 2);
    // And the rebooted shell works.
    let out = q.command("uptime", timeouts::COMMAND)?;
    assert!(out.contains("up "), "{out}");
    Ok(())
}

#[test]
fn reboot_with_no_reboot_ends_qemu() -> Result<(), Error> {
    let (mut q, _) = systest::boot_kernel("console=ttyS0")?;
    q.send_line("reboot")?;
    let status = q.expect_exit(timeouts::EXIT)?;
    assert!(status.success(), "{status}");
    assert_eq!(q.transcript().matches("rhv v0.1.0 (build").count(), 1);
    Ok(())
}

#[test]
fn poweroff_exits_qemu_with_status_0() -> Result<(), Error> {
    let (mut q, _) = systest::boot_kernel("console=ttyS0")?;
    q.send_line("poweroff")?;
    let status = q.expect_exit(timeouts::EXIT)?;
    assert_eq!(status.code(), Some(0), "{status}");
    Ok(())
}
