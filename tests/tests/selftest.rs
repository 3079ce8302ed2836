//! `selftest` on the command line: in-kernel checks, then isa-debug-exit.
use systest::{images, timeouts, Error, QemuBuilder};

#[test]
fn selftest_passes_and_exits_33() -> Result<(), Error> {
    let mut q = QemuBuilder::kernel(images::elf()?).append("console=ttyS0 loglevel=info selftest").spawn()?;
    let out = q.expect("selftest: PASS", timeouts::KERNEL_BOOT)?;
    assert!(!out.contains("selftest: FAIL"), "{out}");
    let status = q.expect_exit(timeouts::EXIT)?;
    // isa-debug-exit: status (v << 1) | 1; the kernel writes 0x10 for pass.
    assert_eq!(status.code(), Some(33), "exit status {status}");
    Ok(())
}
