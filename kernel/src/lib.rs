//! The host-testable core of the rhv hypervisor: parsers, codecs, state
//! machines and allocators with no hardware access. Everything that touches
//! the CPU or devices lives in the binary (`main.rs` and `arch/`), which uses
//! this library. No `unsafe` here.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod acpi;
pub mod blkcache;
pub mod bootinfo;
pub mod cmdline;
pub mod conring;
pub mod cpupolicy;
pub mod domain;
pub mod elf;
pub mod frames;
pub mod lineedit;
pub mod logring;
pub mod migstream;
pub mod pci;
pub mod relocauth;
pub mod rtc;
#[cfg(any(test, feature = "samples"))]
pub mod samples;
pub mod sched;
pub mod shell;
#[cfg(test)]
mod testutil;
pub mod xlcfg;

/// The product name printed in the banner, `info` and the prompt.
pub const NAME: &str = "rhv";
/// The shell prompt.
pub const PROMPT: &str = "rhv> ";
