//! The guest runtime: everything a small `#![no_std]` Rust program needs to
//! run as an rhv guest (feature `rt`, target `x86_64-unknown-none`).
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use guest_abi::rt::prelude::*;
//!
//! guest_abi::main!(my_main);
//!
//! fn my_main(env: &Env) -> i32 {
//!     println!("hello from {} ({} vCPUs)", env.name(), env.vcpus());
//!     0
//! }
//! ```
//!
//! What the runtime provides:
//! * `_start`, the ELF entry: checks the [`StartInfo`](crate::StartInfo)
//!   magic and ABI version (a mismatch prints one line and exits with status
//!   2), puts the heap `[heap_start, heap_end)` under a
//!   `linked_list_allocator` as the `#[global_allocator]`, calls the
//!   program's main and exits with its status.
//! * Safe hypercall wrappers ([`console_write`](crate::rt::console_write),
//!   [`block_until`](crate::rt::block_until), [`exit`](crate::rt::exit),
//!   ...); the one raw `syscall` is
//!   [`raw::hypercall6`](crate::rt::raw::hypercall6).
//! * [`print!`](crate::print) / [`println!`](crate::println) through the
//!   console.
//! * A panic handler (`panic: <message> at <file>:<line>`, exit status 101;
//!   a failed allocation exits with 102).
//! * [`spawn_vcpu`](crate::rt::spawn_vcpu) to run a function on a secondary
//!   vCPU.
//! * Time from the time page ([`now`](crate::rt::now),
//!   [`wall_ns`](crate::rt::wall_ns)) without hypercalls.
//!
//! Events belong to the domain: [`block_until`](crate::rt::block_until)
//! reports pending bits without clearing them and
//! [`events`](crate::rt::events) takes them. The runtime handles them on
//! vCPU 0: [`wait_until`](crate::rt::wait_until) and
//! [`sleep`](crate::rt::sleep) take the bits there and leave them (yielding)
//! on other vCPUs; idle secondary vCPUs never take them.
//!
//! On the host (unit tests) only the pure parts are exercised; the entry
//! point, panic handler and allocator exist for `target_os = "none"` only.
#![allow(unsafe_code)]

extern crate alloc;

pub mod blk;
mod console;
mod env;
#[cfg(target_os = "none")]
mod heap;
mod hypercalls;
pub mod net;
pub mod raw;
#[cfg(target_os = "none")]
mod start;
mod sync;
mod time;
mod vcpu;

pub use console::{write_all, write_fmt, StackWriter};
pub use env::{env, Arg, Args, Env};
pub use hypercalls::{
    block_until, clock_monotonic, clock_wall, console_read, console_write, cpuid, events, exit, vcpu_id, vcpu_up,
    yield_now,
};
pub use sync::YieldLock;
pub use time::{now, read_time_record, sleep, sleep_ms, sleep_ns, wait_until, wall_ns};
pub use vcpu::{current_vcpu, spawn_vcpu, VCPU_STACK_BYTES};

#[cfg(target_os = "none")]
pub use heap::HeapStats;

/// Exit status when the start-info page is not what this runtime expects.
pub const STATUS_BAD_START: i32 = 2;
/// Exit status after a panic.
pub const STATUS_PANIC: i32 = 101;
/// Exit status after a failed allocation.
pub const STATUS_ALLOC: i32 = 102;

/// Heap usage (bytes in use and free).
#[cfg(target_os = "none")]
pub fn heap_stats() -> HeapStats {
    heap::stats()
}

/// Everything a guest program usually needs: `use guest_abi::rt::prelude::*;`.
pub mod prelude {
    pub use super::{
        block_until, console_read, console_write, current_vcpu, env, events, exit, now, sleep, sleep_ms, sleep_ns,
        spawn_vcpu, vcpu_id, wait_until, wall_ns, yield_now, Env,
    };
    pub use crate::event;
    pub use crate::Error;
    pub use crate::{print, println};
    pub use core::time::Duration;
}

/// Declares the guest's main function: `guest_abi::main!(my_main);` where
/// `fn my_main(env: &Env) -> i32`. The returned value is the exit status
/// (0 = clean poweroff).
#[macro_export]
macro_rules! main {
    ($f:path) => {
        /// The program's main, called by the runtime on vCPU 0.
        #[unsafe(no_mangle)]
        pub fn __rhv_guest_main(env: &$crate::rt::Env) -> i32 {
            let f: fn(&$crate::rt::Env) -> i32 = $f;
            f(env)
        }
    };
}

/// Prints to the guest console (no newline added).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::rt::write_fmt(::core::format_args!($($arg)*))
    };
}

/// Prints a line to the guest console.
#[macro_export]
macro_rules! println {
    () => {
        $crate::rt::write_all(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::rt::write_fmt(::core::format_args!("{}\n", ::core::format_args!($($arg)*)))
    };
}
