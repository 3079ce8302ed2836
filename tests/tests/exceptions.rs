//! `crash KIND` raises a CPU exception in the hypervisor; the report and the
//! panic policy (halt or reboot) are checked.
use std::time::Duration;

use systest::qmp::{Qmp, QmpSocket};
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
    assert_full_report(&q, kind, &report);
    Ok((q, report))
}

/// One report, with every part the issue names: the error code, RIP, CR2,
/// the control and general registers, the handler's stack and a backtrace
/// that goes past the faulting frame.
fn assert_full_report(q: &Qemu, kind: &str, report: &str) {
    let fields = [
        "error",
        "RIP=",
        "RSP=",
        "RFLAGS=",
        "CR0=",
        "CR2=",
        "CR3=",
        "CR4=",
        "RAX=",
        "RBX=",
        "RCX=",
        "RDX=",
        "RSI=",
        "RDI=",
        "RBP=",
        "R8 =",
        "R9 =",
        "R10=",
        "R11=",
        "R12=",
        "R13=",
        "R14=",
        "R15=",
        "handler stack:",
        "backtrace:",
        "#0 ",
        "#1 ",
    ];
    for field in fields {
        assert!(report.contains(field), "no {field} in the {kind} report:\n{report}");
    }
    let reports = q.transcript().matches("*** exception:").count();
    assert_eq!(reports, 1, "{kind}: {reports} reports printed:\n{}", q.transcript());
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
    assert!(report.contains("handler stack: IST1 (double fault)"), "{report}");
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

/// Boots with a QMP socket, lets `inject` act on the machine from outside,
/// and returns the report from `header` to `system halted`.
fn injected(header: &str, inject: impl FnOnce(&mut Qmp) -> Result<String, Error>) -> Result<(Qemu, String), Error> {
    let sock = QmpSocket::new()?;
    let [a, b] = sock.args();
    let mut q = QemuBuilder::kernel(images::elf()?)
        .accel(Accel::Tcg)
        .arg(a)
        .arg(b)
        .append("console=ttyS0 loglevel=info panic=halt")
        .spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    let mut qmp = Qmp::connect(&sock, timeouts::COMMAND)?;
    inject(&mut qmp)?;
    q.expect(&*format!("*** exception: {header}"), REPORT)?;
    let report = q.expect("system halted", REPORT)?;
    assert_full_report(&q, header, &report);
    Ok((q, report))
}

#[test]
fn nmi_is_reported_on_its_own_ist_stack() -> Result<(), Error> {
    let (mut q, report) = injected("NMI non-maskable interrupt", |m| m.execute("inject-nmi", None))?;
    assert!(report.contains("handler stack: IST2 (NMI)"), "{report}");
    assert_halted(&mut q);
    Ok(())
}

#[test]
fn machine_check_is_reported_with_its_bank_on_its_own_ist_stack() -> Result<(), Error> {
    // Bank 1: valid, uncorrected, enabled, context corrupt, address valid;
    // MCG_STATUS: RIPV and MCIP. QEMU raises #MC only if the kernel enabled
    // the bank (MCi_CTL) and CR4.MCE, as its machine-check set-up does.
    let (mut q, report) = injected("#MC machine check", |m| m.hmp("mce 0 1 0xbe00000000800400 0x5 0x12345000 0x86"))?;
    assert!(report.contains("handler stack: IST3 (machine check)"), "{report}");
    assert!(report.contains("MCG_STATUS=0x5 (RIPV 1, EIPV 0, MCIP 1)"), "{report}");
    assert!(
        report.contains(
            "bank 1: MCi_STATUS=0xbe00000000800400 (uncorrected, context corrupt) MCA code 0x0400 addr 0x12345000"
        ),
        "{report}"
    );
    assert_halted(&mut q);
    Ok(())
}
