//! The paravirtual ABI shared by the rhv hypervisor and its guests.
//!
//! Everything here is plain data and arithmetic: it compiles for the host
//! (and is unit-tested there) as well as for `x86_64-unknown-none`.
#![no_std]
#![deny(unsafe_code)]

pub mod time;
