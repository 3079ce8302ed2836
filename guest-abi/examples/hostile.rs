//! `hostile`: everything a malicious guest would try.
//!
//! Part 1 (skipped with `calls=0`): hypercalls with bad arguments — null,
//! kernel-half, non-canonical and out-of-memory pointers, huge and wrapping
//! lengths, unknown numbers, bad vCPU starts, odd register state at the
//! `syscall`, and a storm of null hypercalls. Each must come back with an
//! error code (or a harmless success) while the guest goes on:
//!
//! ```text
//! hostile: <test> -> <raw result> (<Error> | ok)
//! ```
//!
//! Part 2: ONE fatal action chosen with `fault=<name>` (default `none`),
//! which must get the domain crashed by the hypervisor:
//!
//! ```text
//! hostile: attempting <name>
//! hostile: <name> was NOT stopped        (only if the action returned; exit 1)
//! ```
//! `fault=list` prints the names. With `fault=none` the guest prints
//! `hostile: done` and exits 0. Two more choices exercise the runtime
//! rather than the hypervisor: `fault=panic` (panic message, exit status
//! 101) and `fault=oom` (allocation failure, exit status 102).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use core::arch::asm;

use guest_abi::rt::prelude::*;
use guest_abi::rt::raw::hypercall6;
use guest_abi::{nr, MAX_IO_BYTES, START_INFO_VA, TIME_PAGE_VA};

guest_abi::main!(hostile);

const KERNEL_DIRECT_MAP: u64 = 0xffff_8000_0000_0000;
const KERNEL_IMAGE: u64 = 0xffff_ffff_8000_0000;
const KERNEL_TEXT: u64 = 0xffff_ffff_8010_0000;
const NON_CANONICAL: [u64; 3] = [0x0000_8000_0000_0000, 0x8000_0000_0000_0000, 0xdead_beef_0000_0000];

/// A message for calls that, wrongly accepted, should show on the console.
static BUG_TEXT: &[u8] = b"hostile: BUG: this text should not have been printed\n";

/// Makes a hypercall with arguments the hypervisor must reject (or that
/// refer only to memory this program does not rely on).
fn hc(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
    // SAFETY: every caller passes addresses that are either invalid (the
    // hypervisor must refuse them without touching memory — what this guest
    // tests), read-only for the guest (a write there is refused too), or
    // valid buffers the call only reads. `exit` is never called here.
    unsafe { hypercall6(nr, a1, a2, a3, a4, 0, 0) }
}

/// The error name of a raw result (`None` for a success).
fn error_name(raw: i64) -> Option<&'static str> {
    if raw >= 0 {
        return None;
    }
    if raw < Error::TooBig.to_raw() {
        return Some("unknown error");
    }
    Some(match Error::from_raw(raw) {
        Err(Error::Fault) => "Fault",
        Err(Error::Invalid) => "Invalid",
        Err(Error::NoSys) => "NoSys",
        Err(Error::Again) => "Again",
        Err(Error::NoMem) => "NoMem",
        Err(Error::NoDev) => "NoDev",
        Err(Error::Io) => "Io",
        Err(Error::TooBig) => "TooBig",
        Ok(_) => "?",
    })
}

struct Tally {
    calls: u64,
    accepted: u64,
}

impl Tally {
    /// Prints one result. `expect_ok`: whether success is the right answer.
    fn show(&mut self, test: &str, raw: i64, expect_ok: bool) {
        self.calls += 1;
        match error_name(raw) {
            Some(e) => println!("hostile: {test} -> {raw} ({e})"),
            None if expect_ok => println!("hostile: {test} -> {raw} (ok)"),
            None => {
                self.accepted += 1;
                println!("hostile: {test} -> {raw} (ok) UNEXPECTED SUCCESS");
            }
        }
    }
}

/// Never run: the target of `vcpu_up` calls that must fail.
extern "C" fn rogue_vcpu(arg: u64) -> ! {
    println!("hostile: BUG: a vCPU started from a rejected vcpu_up (arg {arg:#x})");
    exit(1)
}

/// A legitimately started secondary vCPU: idles for good, leaving events
/// to vCPU 0.
extern "C" fn idle_vcpu(_: u64) -> ! {
    loop {
        if block_until(u64::MAX) != 0 {
            yield_now();
        }
    }
}

/// A fresh 16 KiB stack for a vCPU (leaked); returns its 16-byte aligned
/// top.
fn new_stack() -> u64 {
    let stack: &'static mut [u64] = Box::leak(alloc::vec![0u64; 2048].into_boxed_slice());
    (stack.as_ptr() as u64 + 2048 * 8) & !15
}

/// Hypercall `nr` made with RSP = `rsp`: the hypervisor must not use the
/// guest's stack pointer.
fn syscall_with_rsp(nr: u64, rsp: u64) -> i64 {
    let ret: i64;
    // SAFETY: RSP is saved in R12 and restored right after the `syscall`;
    // nothing in between touches the stack (an interrupt at CPL 3 switches
    // to the hypervisor's stack). `nr` takes no memory arguments.
    unsafe {
        asm!(
            "mov r12, rsp",
            "mov rsp, {rsp}",
            "syscall",
            "mov rsp, r12",
            rsp = in(reg) rsp,
            inlateout("rax") nr as i64 => ret,
            out("rcx") _,
            out("r11") _,
            out("r12") _,
        );
    }
    ret
}

/// `console_write(buf, len)` made with RFLAGS bits `set` (DF, AC, NT) set
/// at the `syscall`; cleared again right after.
fn syscall_with_flags(set: u64, buf: &[u8]) -> i64 {
    let ret: i64;
    // SAFETY: the flags are set just before the `syscall` and cleared just
    // after (DF/AC/NT only change how string instructions, alignment checks
    // and IRET behave; no code runs in between). The call only reads `buf`.
    unsafe {
        asm!(
            "pushfq",
            "or qword ptr [rsp], {set}",
            "popfq",
            "syscall",
            "pushfq",
            "not {set}",
            "and qword ptr [rsp], {set}",
            "popfq",
            set = inout(reg) set => _,
            inlateout("rax") nr::CONSOLE_WRITE as i64 => ret,
            in("rdi") buf.as_ptr(),
            in("rsi") buf.len(),
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

/// RFLAGS after trying to clear IF and raise IOPL with POPFQ.
fn popf_probe() -> u64 {
    let flags: u64;
    // SAFETY: POPFQ at CPL 3 silently keeps IF and IOPL; the original flags
    // are restored from the stack afterwards.
    unsafe {
        asm!(
            "pushfq",
            "pushfq",
            "and qword ptr [rsp], ~0x200",
            "or qword ptr [rsp], 0x3000",
            "popfq",
            "pushfq",
            "pop {f}",
            "popfq",
            f = out(reg) flags,
        );
    }
    flags
}

fn hypercall_tests(env: &Env) {
    let mem = env.mem_bytes();
    let vcpus = u64::from(env.vcpus());
    let mut t = Tally { calls: 0, accepted: 0 };
    let text = BUG_TEXT.as_ptr() as u64;
    let cw = nr::CONSOLE_WRITE;
    let cr = nr::CONSOLE_READ;

    // console_write: bad buffers.
    t.show("console_write null len=16", hc(cw, 0, 16, 0, 0), false);
    t.show("console_write null len=0", hc(cw, 0, 0, 0, 0), false);
    t.show("console_write valid len=0", hc(cw, text, 0, 0, 0), true);
    t.show("console_write kernel len=0", hc(cw, KERNEL_TEXT, 0, 0, 0), false);
    t.show("console_write page0 0x800", hc(cw, 0x800, 16, 0, 0), false);
    t.show("console_write page0..page1 0xff8", hc(cw, 0xff8, 16, 0, 0), false);
    t.show("console_write kernel 0xffff800000000000", hc(cw, KERNEL_DIRECT_MAP, 16, 0, 0), false);
    t.show("console_write kernel 0xffffffff80000000", hc(cw, KERNEL_IMAGE, 16, 0, 0), false);
    t.show("console_write kernel 0xffffffff80100000", hc(cw, KERNEL_TEXT, 16, 0, 0), false);
    for a in NON_CANONICAL {
        t.show(&fmt_test("console_write non-canonical", a), hc(cw, a, 16, 0, 0), false);
    }
    t.show("console_write canonical-edge 0x7ffffffffff8 len=16", hc(cw, 0x7fff_ffff_fff8, 16, 0, 0), false);
    t.show("console_write beyond-memory ptr=mem_bytes", hc(cw, mem, 16, 0, 0), false);
    t.show("console_write above-memory ptr=mem_bytes+2MiB", hc(cw, mem + (2 << 20), 16, 0, 0), false);
    t.show("console_write straddles-end ptr=mem_bytes-8 len=16", hc(cw, mem - 8, 16, 0, 0), false);
    // Lengths.
    t.show("console_write len=MAX_IO_BYTES+1", hc(cw, text, MAX_IO_BYTES + 1, 0, 0), false);
    t.show("console_write len=1<<40", hc(cw, text, 1 << 40, 0, 0), false);
    t.show("console_write wrap ptr=0x200000 len=u64::MAX", hc(cw, 0x20_0000, u64::MAX, 0, 0), false);
    t.show("console_write wrap ptr=u64::MAX-15 len=32", hc(cw, u64::MAX - 15, 32, 0, 0), false);
    t.show("console_write wrap ptr=mem_bytes-8 len=u64::MAX-7", hc(cw, mem - 8, u64::MAX - 7, 0, 0), false);

    // console_read: into nothing, into read-only pages, into the kernel.
    let text_fn = hostile as *const () as u64;
    // SAFETY: reads 16 bytes of this program's own code (mapped readable).
    let before: [u8; 16] = unsafe { core::ptr::read_volatile(text_fn as *const [u8; 16]) };
    t.show("console_read null len=16", hc(cr, 0, 16, 0, 0), false);
    t.show("console_read start-info (read-only)", hc(cr, START_INFO_VA, 16, 0, 0), false);
    t.show("console_read time-page (read-only)", hc(cr, TIME_PAGE_VA, 16, 0, 0), false);
    t.show("console_read own-text (read-only)", hc(cr, text_fn, 16, 0, 0), false);
    t.show("console_read rodata (read-only)", hc(cr, text, 16, 0, 0), false);
    t.show("console_read kernel 0xffffffff80100000", hc(cr, KERNEL_TEXT, 16, 0, 0), false);
    t.show("console_read kernel 0xffff800000000000", hc(cr, KERNEL_DIRECT_MAP, 16, 0, 0), false);
    t.show("console_read non-canonical", hc(cr, NON_CANONICAL[0], 16, 0, 0), false);
    t.show("console_read beyond-memory", hc(cr, mem, 16, 0, 0), false);
    t.show("console_read len=u64::MAX", hc(cr, 0x20_0000, u64::MAX, 0, 0), false);
    // SAFETY: as above.
    let after: [u8; 16] = unsafe { core::ptr::read_volatile(text_fn as *const [u8; 16]) };
    println!("hostile: own text after console_read -> {}", if before == after { "unchanged" } else { "MODIFIED" });

    // Unknown numbers: the gaps between the assigned ones (docs/hypercall-abi.md
    // section 6: 0-10, 16-18, 24-27), past the last, and ones that truncate
    // to valid numbers (1 << 32 is console_write in 32 bits).
    for n in [11, 12, 13, 14, 15, 19, 23, 28, 999, 0xffff_ffff, 1 << 32, 0x8000_0000_0000_0000, u64::MAX] {
        t.show(&fmt_test("unknown hypercall nr", n), hc(n, text, BUG_TEXT.len() as u64, 0, 0), false);
    }

    // vcpu_up with bad vCPU numbers (the target would print a BUG line).
    let rip = rogue_vcpu as *const () as u64;
    let rsp = new_stack();
    for v in [0, vcpus, 64, u64::from(u32::MAX), (1 << 32) | 1, u64::MAX] {
        t.show(&fmt_test("vcpu_up vcpu", v), hc(nr::VCPU_UP, v, rip, rsp, v), false);
    }
    if vcpus > 1 {
        // Bad RIP/RSP for a real, not yet started vCPU.
        let v = vcpus - 1;
        println!("hostile: (vcpu_up tests on vCPU {v}: a crash now means a bad RIP/RSP was accepted)");
        let data = BUG_TEXT.as_ptr() as u64;
        for bad in [0, data, KERNEL_IMAGE, NON_CANONICAL[0], mem + 0x1000] {
            t.show(&fmt_test("vcpu_up bad rip", bad), hc(nr::VCPU_UP, v, bad, rsp, 0), false);
        }
        for bad in [rsp - 8, KERNEL_IMAGE, NON_CANONICAL[0], mem + 0x1000] {
            t.show(&fmt_test("vcpu_up bad rsp", bad), hc(nr::VCPU_UP, v, rip, bad, 0), false);
        }
        let top = new_stack() as *mut u8;
        // SAFETY: a fresh, leaked stack owned by nothing else; `idle_vcpu`
        // never returns.
        let r = unsafe { guest_abi::rt::vcpu_up(v as u32, idle_vcpu, top, 0) };
        match r {
            Ok(()) => t.show("vcpu_up good (idle vCPU)", 0, true),
            Err(e) => t.show("vcpu_up good (idle vCPU)", e.to_raw(), true),
        }
        t.show("vcpu_up same vCPU again", hc(nr::VCPU_UP, v, rip, rsp, 0), false);
    }

    // The time page agrees with the clock hypercalls (informational).
    let (t1, h, t2) = (now(), guest_abi::rt::clock_monotonic(), now());
    let inside = t1 <= h + 1_000_000 && h <= t2 + 1_000_000;
    println!(
        "hostile: time page vs clock_monotonic -> {} (page {t1}..{t2} ns, hypercall {h} ns)",
        if inside { "consistent" } else { "INCONSISTENT" }
    );
    let (w, hw) = (wall_ns(), guest_abi::rt::clock_wall());
    println!("hostile: time page vs clock_wall -> differ by {} us", w.abs_diff(hw) / 1000);

    // Blocking with deadlines in the past.
    let t0 = now();
    let r = block_until(0);
    println!("hostile: block_until(0) -> {r:#x} after {} us", (now() - t0) / 1000);
    let t0 = now();
    let r = block_until(t0.saturating_sub(1));
    println!("hostile: block_until(now-1) -> {r:#x} after {} us", (now() - t0) / 1000);

    // Register state at the syscall.
    for (what, rsp) in
        [("0", 0), ("kernel", KERNEL_IMAGE), ("non-canonical", NON_CANONICAL[0]), ("unmapped", mem + 0x10_0000)]
    {
        let r = syscall_with_rsp(nr::VCPU_ID, rsp);
        t.show(&fmt_str("vcpu_id with rsp", what), r, true);
    }
    let msg = b"hostile: (console_write with DF set)\n";
    t.show("console_write with DF set", syscall_with_flags(1 << 10, msg), true);
    let msg = b"hostile: (console_write with AC set)\n";
    t.show("console_write with AC set", syscall_with_flags(1 << 18, msg), true);
    let msg = b"hostile: (console_write with NT set)\n";
    t.show("console_write with NT set", syscall_with_flags(1 << 14, msg), true);
    let f = popf_probe();
    println!("hostile: popf clear IF / set IOPL -> IF={} IOPL={}", (f >> 9) & 1, (f >> 12) & 3);

    // A storm of null hypercalls.
    const STORM: u64 = 100_000;
    let t0 = now();
    let mut bad = 0u64;
    for _ in 0..STORM {
        if hc(nr::VCPU_ID, 0, 0, 0, 0) < 0 {
            bad += 1;
        }
    }
    let dt = (now() - t0).max(1);
    println!(
        "hostile: storm {STORM} x vcpu_id -> {} ms, {} calls/s, {} ns/call, {bad} errors",
        dt / 1_000_000,
        u128::from(STORM) * 1_000_000_000 / u128::from(dt),
        dt / STORM
    );

    println!("hostile: hypercall tests done: {} calls, {} unexpectedly accepted", t.calls, t.accepted);
}

/// `"<what> <value as hex>"` in a small stack buffer.
fn fmt_test(what: &str, v: u64) -> TestName {
    let mut n = TestName::new();
    let _ = core::fmt::write(&mut n, format_args!("{what} {v:#x}"));
    n
}

fn fmt_str(what: &str, v: &str) -> TestName {
    let mut n = TestName::new();
    let _ = core::fmt::write(&mut n, format_args!("{what}={v}"));
    n
}

/// A short string on the stack.
struct TestName {
    buf: [u8; 96],
    len: usize,
}

impl TestName {
    fn new() -> Self {
        TestName { buf: [0; 96], len: 0 }
    }
}

impl core::ops::Deref for TestName {
    type Target = str;
    fn deref(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for TestName {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Fatal actions.

const FAULTS: &[&str] = &[
    "cli",
    "hlt",
    "in",
    "out",
    "rdmsr",
    "wrmsr",
    "movcr3",
    "lgdt",
    "lidt",
    "invlpg",
    "wbinvd",
    "swapgs",
    "mov-dr7",
    "xsetbv",
    "int80",
    "iret-kernel",
    "read-kernel",
    "write-kernel",
    "read-unmapped",
    "write-unmapped",
    "write-text",
    "write-rodata",
    "write-startinfo",
    "write-timepage",
    "exec-data",
    "exec-stack",
    "exec-heap",
    "exec-null",
    "div0",
    "int3",
    "ud2",
    "trap-flag",
    "stack-overflow",
    "nullptr",
];

/// Not hypervisor faults: runtime paths that end the domain with an exit
/// status (`panic` → 101, `oom` → 102).
const RUNTIME_FAULTS: &[&str] = &["panic", "oom"];

/// `ret` bytes in `.data` (RW, so NX).
static mut DATA_CODE: [u8; 16] = [0xc3; 16];

/// Calls code at `addr` (which must be a `ret`, if it runs at all).
fn call_at(addr: u64) {
    // SAFETY: the target is a `ret` sequence in non-executable memory (or
    // address 0); the call is expected to fault before executing. If it does
    // run, `ret` returns here with every register intact except the
    // declared clobbers.
    unsafe { asm!("call {a}", a = in(reg) addr, clobber_abi("C")) };
}

fn read_at(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: a load from an address that must fault (kernel, unmapped or
    // null); if the hypervisor lets it through, only a value is read.
    unsafe { asm!("mov {v}, qword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly)) };
    v
}

fn write_at(addr: u64) {
    // SAFETY: a store to an address that must fault (kernel, read-only,
    // unmapped); if it does not, it changes one byte nobody relies on after
    // this point (the guest exits right after).
    unsafe { asm!("mov byte ptr [{a}], 0xcc", a = in(reg) addr, options(nostack)) };
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let pad = core::hint::black_box([depth; 64]);
    if core::hint::black_box(depth) == u64::MAX {
        return pad[0];
    }
    recurse(depth + 1).wrapping_add(pad[1])
}

fn attempt(name: &str, env: &Env) -> bool {
    let unmapped = env.mem_bytes().next_multiple_of(4096);
    // SAFETY (for all the blocks below): each executes one instruction that
    // must trap at CPL 3 (privileged, I/O, or a debug/divide/invalid-opcode
    // exception). If the hypervisor failed to stop it, it has no effect the
    // compiler relies on: every register it writes is declared.
    match name {
        // SAFETY: see above.
        "cli" => unsafe { asm!("cli", options(nostack)) },
        // SAFETY: see above.
        "hlt" => unsafe { asm!("hlt", options(nostack)) },
        // SAFETY: see above.
        "in" => unsafe { asm!("in al, dx", in("dx") 0x80u16, out("al") _, options(nostack)) },
        // SAFETY: see above.
        "out" => unsafe { asm!("out dx, al", in("dx") 0x80u16, in("al") 0u8, options(nostack)) },
        // SAFETY: see above.
        "rdmsr" => unsafe { asm!("rdmsr", in("ecx") 0xc000_0082u32, out("eax") _, out("edx") _, options(nostack)) },
        // SAFETY: see above.
        "wrmsr" => unsafe { asm!("wrmsr", in("ecx") 0xc000_0082u32, in("eax") 0, in("edx") 0, options(nostack)) },
        // SAFETY: see above.
        "movcr3" => unsafe { asm!("mov cr3, {z}", z = in(reg) 0u64, options(nostack)) },
        "lgdt" | "lidt" => {
            let desc = [0u64; 2];
            if name == "lgdt" {
                // SAFETY: see above; reads the zeroed descriptor.
                unsafe { asm!("lgdt [{d}]", d = in(reg) desc.as_ptr(), options(nostack)) };
            } else {
                // SAFETY: see above; reads the zeroed descriptor.
                unsafe { asm!("lidt [{d}]", d = in(reg) desc.as_ptr(), options(nostack)) };
            }
        }
        // SAFETY: see above.
        "invlpg" => unsafe { asm!("invlpg [{a}]", a = in(reg) 0x20_0000u64, options(nostack)) },
        // SAFETY: see above.
        "wbinvd" => unsafe { asm!("wbinvd", options(nostack)) },
        // SAFETY: see above.
        "swapgs" => unsafe { asm!("swapgs", options(nostack)) },
        // SAFETY: see above.
        "mov-dr7" => unsafe { asm!("mov dr7, {z}", z = in(reg) 0u64, options(nostack)) },
        // SAFETY: see above.
        "xsetbv" => unsafe { asm!("xsetbv", in("ecx") 0, in("eax") 1, in("edx") 0, options(nostack)) },
        // SAFETY: see above.
        "int80" => unsafe { asm!("int 0x80", clobber_abi("C")) },
        // SAFETY: see above: IRETQ to a ring-0 code selector (0x08) must
        // #GP at CPL 3; the frame is built on the stack and, were it taken,
        // would never come back, so this arm does not return either way.
        "iret-kernel" => unsafe {
            asm!(
                "mov rax, rsp",
                "push 0x10",
                "push rax",
                "pushfq",
                "push 0x08",
                "lea rax, [rip + 2f]",
                "push rax",
                "iretq",
                "2:",
                out("rax") _,
            )
        },
        "read-kernel" => {
            read_at(KERNEL_TEXT);
        }
        "write-kernel" => write_at(KERNEL_TEXT),
        "read-unmapped" => {
            read_at(unmapped);
        }
        "write-unmapped" => write_at(unmapped),
        "write-text" => write_at(recurse as *const () as u64),
        "write-rodata" => write_at(BUG_TEXT.as_ptr() as u64),
        "write-startinfo" => write_at(START_INFO_VA),
        "write-timepage" => write_at(TIME_PAGE_VA),
        "exec-data" => call_at(core::ptr::addr_of_mut!(DATA_CODE) as u64),
        "exec-stack" => {
            let code = core::hint::black_box([0xc3u8; 16]);
            call_at(code.as_ptr() as u64);
        }
        "exec-heap" => {
            let code = Box::leak(Box::new([0xc3u8; 16]));
            call_at(code.as_ptr() as u64);
        }
        "exec-null" => call_at(0),
        // SAFETY: see above.
        "div0" => unsafe {
            asm!("div {d}", d = in(reg) 0u64, inout("rax") 1u64 => _, inout("rdx") 0u64 => _, options(nostack))
        },
        // SAFETY: see above.
        "int3" => unsafe { asm!("int3", options(nostack)) },
        // SAFETY: see above.
        "ud2" => unsafe { asm!("ud2", options(nostack)) },
        // SAFETY: see above: with TF set the CPU raises #DB after the next
        // instruction; TF is cleared again if that did not happen.
        "trap-flag" => unsafe {
            asm!(
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "nop",
                "pushfq",
                "and qword ptr [rsp], ~0x100",
                "popfq",
            )
        },
        "stack-overflow" => {
            let r = recurse(0);
            println!("hostile: recursion ended ({r})");
        }
        "nullptr" => {
            read_at(0);
        }
        "panic" => panic!("hostile: deliberate panic (fault=panic)"),
        "oom" => {
            let huge = env.mem_bytes() as usize;
            let v: alloc::vec::Vec<u8> = alloc::vec::Vec::with_capacity(huge);
            println!("hostile: allocated {} bytes?", v.capacity());
        }
        _ => return false,
    }
    true
}

/// With a network interface: frames claiming another source MAC. The
/// hypervisor takes them (net_write returns the length) and its bridge drops
/// them, counting each in `network-list`'s Spoofed column.
fn spoof_frames() {
    let Ok(info) = guest_abi::rt::net::info() else { return };
    let forged = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x00];
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&forged);
    frame[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut taken = 0;
    for _ in 0..8 {
        if guest_abi::rt::net::send(&frame).is_ok() {
            taken += 1;
        }
    }
    let own = info.mac;
    println!(
        "hostile: net_write with a forged source MAC (own {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}) -> {taken} of 8 taken",
        own[0], own[1], own[2], own[3], own[4], own[5]
    );
}

fn hostile(env: &Env) -> i32 {
    let fault = env.arg("fault").unwrap_or("none");
    let calls = env.arg_u64_or("calls", 1) != 0;
    println!(
        "hostile: start name={} mem_bytes={:#x} vcpus={} fault={fault} calls={}",
        env.name(),
        env.mem_bytes(),
        env.vcpus(),
        u8::from(calls)
    );
    if fault == "list" {
        for f in FAULTS {
            println!("hostile: fault {f}");
        }
        for f in RUNTIME_FAULTS {
            println!("hostile: fault {f} (runtime: exit status, no crash)");
        }
        return 0;
    }
    if fault != "none" && !FAULTS.contains(&fault) && !RUNTIME_FAULTS.contains(&fault) {
        println!("hostile: unknown fault '{fault}' (fault=list names them)");
        return 2;
    }
    if calls {
        hypercall_tests(env);
    }
    spoof_frames();
    if events() & event::SHUTDOWN != 0 {
        println!("hostile: shutting down");
        return 0;
    }
    if fault == "none" {
        println!("hostile: done");
        return 0;
    }
    println!("hostile: attempting {fault}");
    attempt(fault, env);
    println!("hostile: {fault} was NOT stopped");
    1
}
