//! Networking for rhv (`no_std` + `alloc`, no unsafe code):
//!
//! * [`mac`]: Ethernet MAC addresses;
//! * [`bridge`]: the learning switch that connects the physical NICs, the
//!   hypervisor's own stack and the guests' virtual interfaces;
//! * [`stack`]: the hypervisor's own IPv4 endpoint on smoltcp (DHCP or
//!   static address, ping, TCP sink and source for benchmarks).
//!
//! Everything here is pure logic driven by the caller (frames in, frames
//! out, time passed in), so it is tested on the host. Nothing panics on
//! frames from the wire or from guests.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

pub mod bridge;
pub mod mac;
pub mod mount3;
pub mod nfs;
pub mod nfs3;
pub mod portmap;
pub mod rpc;
pub mod stack;
pub mod xdr;

pub use mac::Mac;
