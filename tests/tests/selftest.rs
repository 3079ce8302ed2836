//! `selftest` on the command line: in-kernel checks, then isa-debug-exit.
use systest::{images, timeouts, Error, QemuBuilder};

#[test]
fn selftest_passes_and_exits_33() -> Result<(), Error> {
    let mut q = QemuBuilder::kernel(images::elf()?).append("console=ttyS0 loglevel=info selftest").spawn()?;
    let out = q.expect("selftest: PASS (9 checks)", timeouts::KERNEL_BOOT)?;
    assert!(!out.contains("selftest: FAIL"), "{out}");
    // Every check ran and passed, the boot identity map's removal among them.
    for check in [
        "frame allocator",
        "heap growth",
        "page tables",
        "upper half only",
        "W^X and NX",
        "stack guard pages",
        "monotonic clock",
        "timer interrupts",
        "guarded MSR access",
    ] {
        assert!(out.contains(&format!("selftest: {check} ok")), "no '{check} ok' in:\n{out}");
    }
    let status = q.expect_exit(timeouts::EXIT)?;
    // isa-debug-exit: status (v << 1) | 1; the kernel writes 0x10 for pass.
    assert_eq!(status.code(), Some(33), "exit status {status}");
    Ok(())
}

#[test]
fn a_failing_check_is_reported_and_exits_35() -> Result<(), Error> {
    let mut q = QemuBuilder::kernel(images::elf()?).append("console=ttyS0 loglevel=info selftest=fail").spawn()?;
    let out = q.expect("selftest: FAIL (1 of 10 checks failed)", timeouts::KERNEL_BOOT)?;
    assert!(out.contains("selftest: injected failure FAILED: injected by selftest=fail"), "{out}");
    // The real checks still ran and passed.
    assert!(out.contains("selftest: upper half only ok"), "{out}");
    assert!(!out.contains("selftest: PASS"), "{out}");
    let status = q.expect_exit(timeouts::EXIT)?;
    // isa-debug-exit: (0x11 << 1) | 1 for fail.
    assert_eq!(status.code(), Some(35), "exit status {status}");
    Ok(())
}
