//! `crash KIND` raises a CPU exception in the hypervisor; the report and the
//! panic policy (halt or reboot) are checked.
use std::time::Duration;

use systest::{images, timeouts, Accel, Error, Qemu, QemuBuilder, PROMPT};

const REPORT: Duration = Duration::from_secs(20);

/// Boots with `panic=<policy>`, runs `crash <kind>`, waits for the report
/// header and returns the rest of the report up to `end`.
fn crash(kind: &str, policy: &str, header: &str, end: &str) -> Result<(Qemu, String), Error> {
    let q = QemuBuilder::kernel(images::elf()?);
    crash_on(q, kind, policy, header, end)
}

fn crash_on(q: QemuBuilder, kind: &str, policy: &str, header: &str, end: &str) -> Result<(Qemu, String), Error> {
    let mut q = q.append(format!("console=ttyS0 loglevel=info panic={policy}")).spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    q.send_line(&format!("crash {kind}"))?;
    q.expect(&*format!("*** exception: {header}"), REPORT)?;
    let report = q.expect(end, REPORT)?;
    for field in ["RIP=", "CR2=", "backtrace:"] {
        assert!(report.contains(field), "no {field} in the {kind} report:\n{report}");
    }
    Ok((q, report))
}

/// After `system halted` the machine stays put: no prompt, no exit.
fn assert_halted(q: &mut Qemu) {
    assert!(q.expect(PROMPT, Duration::from_secs(1)).is_err(), "a prompt came back after 'system halted'");
    assert!(q.wait_exit(Duration::from_millis(200)).is_none(), "QEMU exited after 'system halted'");
}

#[test]
fn page_fault_report_then_halt() -> Result<(), Error> {
    let (mut q, _) = crash("pf", "halt", "#PF page fault", "system halted")?;
    assert_halted(&mut q);
    Ok(())
}

#[test]
fn stack_overflow_is_a_double_fault_on_its_own_stack() -> Result<(), Error> {
    let (mut q, report) = crash("stack", "halt", "#DF double fault", "system halted")?;
    assert!(report.contains("kernel stack overflow"), "{report}");
    assert_halted(&mut q);
    Ok(())
}

#[test]
fn invalid_opcode_with_panic_reboot_resets() -> Result<(), Error> {
    // -no-reboot (the harness default): the reset ends QEMU.
    let (mut q, _) = crash("ud", "reboot", "#UD invalid opcode", "rebooting")?;
    let status = q.expect_exit(timeouts::EXIT)?;
    assert!(status.success(), "QEMU exit status after reset: {status}");
    Ok(())
}

#[test]
fn divide_error_report() -> Result<(), Error> {
    crash("de", "halt", "#DE divide error", "system halted").map(drop)
}

#[test]
fn general_protection_report() -> Result<(), Error> {
    crash("gp", "halt", "#GP general protection", "system halted").map(drop)
}

#[test]
fn breakpoint_report() -> Result<(), Error> {
    // Always TCG: kvm_pvm cannot emulate the int3 (QEMU stops with "KVM
    // internal error ... emulation failure"), a host limitation.
    let q = QemuBuilder::kernel(images::elf()?).accel(Accel::Tcg);
    crash_on(q, "bp", "halt", "#BP breakpoint", "system halted").map(drop)
}
