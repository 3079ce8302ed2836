//! The ELF entry point, the start-up sequence and the panic handler.

use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use super::console::write_fmt_unlocked;
use super::env::{set_env, Env};
use super::vcpu::{install_local, VCPU_STACK_BYTES};
use super::{exit, heap, STATUS_ALLOC, STATUS_BAD_START, STATUS_PANIC};
use crate::{StartInfo, ABI_VERSION, INITIAL_STACK_BYTES, START_INFO_VA, START_MAGIC};

// vCPU 0 enters here with RSP = stack_top (16-byte aligned) and RDI =
// START_INFO_VA. Clearing RBP ends frame-pointer backtraces; the call
// leaves RSP = 8 (mod 16), as a function expects at entry.
core::arch::global_asm!(
    ".pushsection .text._start, \"ax\", @progbits",
    ".globl _start",
    ".type _start, @function",
    "_start:",
    "    xor ebp, ebp",
    "    call {entry}",
    "    ud2",
    ".size _start, . - _start",
    ".popsection",
    entry = sym rt_start,
);

extern "Rust" {
    /// The program's main, defined by `guest_abi::main!`.
    fn __rhv_guest_main(env: &Env) -> i32;
}

extern "C" {
    /// End of the image (page aligned), from `guest.ld`.
    static __image_end: u8;
}

extern "C" fn rt_start(info: u64) -> ! {
    if info != START_INFO_VA {
        write_fmt_unlocked(format_args!(
            "rhv-rt: entered with RDI={info:#x}, expected the start-info page at {START_INFO_VA:#x}\n"
        ));
        exit(STATUS_BAD_START);
    }
    let page = START_INFO_VA as *const StartInfo;
    // SAFETY: the start-info page is mapped readable at START_INFO_VA in
    // every guest (ABI v1); magic and version come first in every version.
    let (magic, version) = unsafe {
        (core::ptr::addr_of!((*page).magic).read_volatile(), core::ptr::addr_of!((*page).abi_version).read_volatile())
    };
    if magic != START_MAGIC || version != ABI_VERSION {
        write_fmt_unlocked(format_args!(
            "rhv-rt: bad start info: magic {magic:#018x} abi_version {version} (want {START_MAGIC:#018x} v{ABI_VERSION})\n"
        ));
        exit(STATUS_BAD_START);
    }
    // SAFETY: as above; the magic and version say the page holds a v1
    // StartInfo, which fits in the page. Its contents never change (ABI v1),
    // so a plain copy is enough (a volatile one would be byte-wise code).
    let info: StartInfo = unsafe { page.read() };
    let env = set_env(Env::from_start_info(info));

    // vCPU 0's initial stack doubles as a runtime stack when it is aligned
    // like one: the lowest bytes then hold its vCPU-local block.
    let stack_base = info.stack_top.wrapping_sub(INITIAL_STACK_BYTES);
    let own_stack = info.stack_top.is_multiple_of(VCPU_STACK_BYTES as u64)
        && info.stack_top <= info.mem_bytes
        && info.stack_top >= INITIAL_STACK_BYTES
        && stack_base >= info.heap_end;
    if own_stack {
        // SAFETY: [stack_base, stack_top) is the initial stack, above the
        // heap; we run near its top, far from its lowest bytes.
        unsafe { install_local(stack_base as *mut u8, 0, 0, 0) };
    }

    // The heap, trimmed to lie above the image and below the stack.
    let image_end = core::ptr::addr_of!(__image_end) as u64;
    let start = info.heap_start.max(image_end);
    let end = info.heap_end.min(stack_base).min(info.mem_bytes);
    // SAFETY: per ABI v1, [heap_start, heap_end) is free RW memory for the
    // guest; the trimming keeps it clear of the image and the stack. Nothing
    // has allocated yet.
    unsafe { heap::init(start, end) };

    // SAFETY: `guest_abi::main!` defines this function with this signature.
    let status = unsafe { __rhv_guest_main(env) };
    exit(status)
}

/// Keeps the first bytes written to it (to classify a panic message).
struct Prefix {
    buf: [u8; 32],
    len: usize,
}

impl Write for Prefix {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::Relaxed) {
        // A second vCPU panicking at the same time: give the first a moment
        // to print its report (it exits the domain). A panic while printing
        // the report ends here too, and exits after the pause.
        super::block_until(super::clock_monotonic().saturating_add(200_000_000));
        exit(STATUS_PANIC);
    }
    let message = info.message();
    // The default allocation-error handler panics with this message.
    let mut prefix = Prefix { buf: [0; 32], len: 0 };
    let _ = write!(prefix, "{message}");
    if prefix.buf[..prefix.len].starts_with(b"memory allocation of ") {
        write_fmt_unlocked(format_args!("alloc error: {message}\n"));
        exit(STATUS_ALLOC);
    }
    match info.location() {
        Some(loc) => write_fmt_unlocked(format_args!("panic: {message} at {}:{}\n", loc.file(), loc.line())),
        None => write_fmt_unlocked(format_args!("panic: {message}\n")),
    }
    exit(STATUS_PANIC)
}
