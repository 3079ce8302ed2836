//! The paravirtual ABI shared by the rhv hypervisor and its guests (v1).
//!
//! Everything here is plain data and arithmetic: it compiles for the host
//! (and is unit-tested there) as well as for `x86_64-unknown-none`. The
//! normative description is `docs/hypercall-abi.md`; this file is its code.
//!
//! A guest is a static x86_64 ELF running at CPL 3. Its virtual addresses are
//! its guest-physical addresses: memory `[0, mem_bytes)` with page 0 unmapped,
//! the [`StartInfo`] page at [`START_INFO_VA`], the per-vCPU [`VcpuTime`]
//! records at [`TIME_PAGE_VA`], and its image linked at [`IMAGE_BASE`].
#![no_std]
#![deny(unsafe_code)]

pub mod time;

/// The guest runtime (feature `rt`); its pure parts are unit-tested on the host.
#[cfg(any(feature = "rt", test))]
pub mod rt;

/// ABI version in [`StartInfo::abi_version`]; bumped on incompatible change.
pub const ABI_VERSION: u32 = 1;

/// Where the start-info page is mapped (read-only) in every guest.
pub const START_INFO_VA: u64 = 0x1000;
/// Where the time page is mapped (read-only): one [`VcpuTime`] per vCPU.
pub const TIME_PAGE_VA: u64 = 0x2000;
/// Lowest address a guest image may load at.
pub const IMAGE_BASE: u64 = 0x1_0000;
/// Most vCPUs a domain can have (one time record each in the time page).
pub const MAX_VCPUS: u32 = 64;
/// Size of the initial stack at the top of guest memory.
pub const INITIAL_STACK_BYTES: u64 = 64 * 1024;
/// Longest buffer one console or frame hypercall moves.
pub const MAX_IO_BYTES: u64 = 64 * 1024;

/// Hypercall numbers (in RAX; arguments in RDI, RSI, RDX, R10, R8, R9;
/// result in RAX: a value `>= 0` or a negated [`Error`]).
pub mod nr {
    /// `console_write(buf, len) -> bytes written`
    pub const CONSOLE_WRITE: u64 = 0;
    /// `console_read(buf, len) -> bytes read` (non-blocking, 0 if none)
    pub const CONSOLE_READ: u64 = 1;
    /// `clock_monotonic() -> ns` since domain creation (never goes back)
    pub const CLOCK_MONOTONIC: u64 = 2;
    /// `clock_wall() -> ns` since the Unix epoch
    pub const CLOCK_WALL: u64 = 3;
    /// `yield()` — give up the rest of the time slice
    pub const YIELD: u64 = 4;
    /// `block(deadline_ns) -> pending events` — sleep until the monotonic
    /// deadline passes or an event is pending (`u64::MAX`: no deadline)
    pub const BLOCK: u64 = 5;
    /// `exit(status)` — the domain ends (status 0 = clean poweroff); never returns
    pub const EXIT: u64 = 6;
    /// `vcpu_info() -> vcpu id` of the calling vCPU
    pub const VCPU_ID: u64 = 7;
    /// `events() -> bits` — take (and clear) pending [`event`] bits
    pub const EVENTS: u64 = 8;
    /// `vcpu_up(vcpu, rip, rsp, arg)` — start secondary vCPU `vcpu` at
    /// `rip` with stack `rsp` and `arg` in RDI
    pub const VCPU_UP: u64 = 9;
    /// `cpuid(leaf, subleaf, buf, len) -> 16`: CPUID as the domain's CPU
    /// policy allows it (EAX, EBX, ECX, EDX into `buf`, little-endian).
    pub const CPUID: u64 = 10;
    /// Reserved for the network issue: `net_info(buf, len)`.
    pub const NET_INFO: u64 = 16;
    /// Reserved: `net_write(frame, len)`.
    pub const NET_WRITE: u64 = 17;
    /// Reserved: `net_read(buf, len)`.
    pub const NET_READ: u64 = 18;
    /// Reserved for the block issue: `block_info(buf, len)`.
    pub const BLOCK_INFO: u64 = 24;
    /// Reserved: `block_read(sector, buf, len)`.
    pub const BLOCK_READ: u64 = 25;
    /// Reserved: `block_write(sector, buf, len)`.
    pub const BLOCK_WRITE: u64 = 26;
    /// Reserved: `block_flush()`.
    pub const BLOCK_FLUSH: u64 = 27;
}

/// Event bits returned by `events`/`block`.
pub mod event {
    /// The operator asked the domain to shut down (`shutdown` command).
    pub const SHUTDOWN: u64 = 1 << 0;
    /// Console input is waiting.
    pub const CONSOLE_INPUT: u64 = 1 << 1;
    /// A network frame is waiting (network issue).
    pub const NET_RX: u64 = 1 << 2;
    /// Time jumped: the domain moved hosts (migration issue); reread the time page.
    pub const TIME_CHANGED: u64 = 1 << 3;
}

/// Hypercall errors, returned negated in RAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum Error {
    /// A buffer is not entirely inside the guest's mapped memory.
    Fault = 1,
    /// An argument is out of range.
    Invalid = 2,
    /// Unknown or not-yet-implemented hypercall.
    NoSys = 3,
    /// Nothing to do now; try again.
    Again = 4,
    /// Out of memory.
    NoMem = 5,
    /// No such device.
    NoDev = 6,
    /// Device or back-end I/O error.
    Io = 7,
    /// A length is larger than the call allows ([`MAX_IO_BYTES`]).
    TooBig = 8,
}

impl Error {
    /// The raw RAX value for this error.
    pub const fn to_raw(self) -> i64 {
        -(self as i64)
    }

    /// Decodes a raw RAX value: `Ok(v)` for `v >= 0`. A negative code this
    /// ABI version does not know decodes as [`Error::Invalid`].
    pub const fn from_raw(raw: i64) -> Result<u64, Error> {
        if raw >= 0 {
            return Ok(raw as u64);
        }
        Err(match raw.unsigned_abs() {
            1 => Error::Fault,
            2 => Error::Invalid,
            3 => Error::NoSys,
            4 => Error::Again,
            5 => Error::NoMem,
            6 => Error::NoDev,
            7 => Error::Io,
            8 => Error::TooBig,
            _ => Error::Invalid,
        })
    }
}

/// `"RHVSTART"` little-endian, in [`StartInfo::magic`].
pub const START_MAGIC: u64 = u64::from_le_bytes(*b"RHVSTART");

/// The start-info page: what a guest knows about itself at entry. vCPU 0
/// starts at the ELF entry with RSP = `stack_top` and RDI = [`START_INFO_VA`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StartInfo {
    pub magic: u64,
    pub abi_version: u32,
    pub domid: u32,
    pub vcpus: u32,
    pub flags: u32,
    /// Guest memory size in bytes (addresses `[0, mem_bytes)`).
    pub mem_bytes: u64,
    /// Free memory for the guest's heap: after the image, below the stack.
    pub heap_start: u64,
    pub heap_end: u64,
    /// Initial stack top of vCPU 0 (= `mem_bytes`).
    pub stack_top: u64,
    /// Domain name, NUL-padded UTF-8.
    pub name: [u8; 64],
    /// Command line (`extra=`), NUL-padded UTF-8.
    pub cmdline: [u8; 1024],
}

/// Per-vCPU time record (pvclock style), 64 bytes, in the time page.
///
/// `ns = system_time_ns + ((rdtsc() - tsc_timestamp) scaled by mul/shift)`.
/// Readers loop: read `version`; if odd, retry; read the fields; reread
/// `version`; retry if it changed. `generation` changes when the domain
/// moves to another host (the TSC base and rate may change then).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct VcpuTime {
    pub version: u32,
    pub generation: u32,
    pub tsc_timestamp: u64,
    pub system_time_ns: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Unix time in ns at `system_time_ns == 0`.
    pub wall_base_ns: u64,
    pub _reserved: [u64; 3],
}

impl VcpuTime {
    /// Monotonic ns for a TSC value, from a consistent snapshot.
    pub fn ns_at(&self, tsc: u64) -> u64 {
        let s = time::TscScale { mul_frac: self.tsc_to_system_mul, shift: self.tsc_shift };
        self.system_time_ns.saturating_add(s.ticks_to_ns(tsc.saturating_sub(self.tsc_timestamp)))
    }
}

/// Interprets a NUL-padded byte field as text (up to the first NUL; invalid
/// UTF-8 ends the text where it starts).
pub fn field_str(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    match core::str::from_utf8(&bytes[..end]) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_stable() {
        assert_eq!(core::mem::size_of::<VcpuTime>(), 64);
        assert_eq!(core::mem::size_of::<StartInfo>(), 8 + 4 * 4 + 8 * 4 + 64 + 1024);
        assert!(core::mem::size_of::<StartInfo>() <= 4096);
        assert!(core::mem::size_of::<VcpuTime>() * MAX_VCPUS as usize <= 4096);
    }

    #[test]
    fn errors_round_trip() {
        for e in [
            Error::Fault,
            Error::Invalid,
            Error::NoSys,
            Error::Again,
            Error::NoMem,
            Error::NoDev,
            Error::Io,
            Error::TooBig,
        ] {
            assert_eq!(Error::from_raw(e.to_raw()), Err(e));
        }
        assert_eq!(Error::from_raw(42), Ok(42));
        assert_eq!(Error::from_raw(i64::MIN), Err(Error::Invalid), "no overflow on the most negative value");
        assert_eq!(Error::from_raw(-9), Err(Error::Invalid));
    }

    #[test]
    fn time_record_reads() {
        let s = time::TscScale::from_hz(1_000_000_000);
        let t = VcpuTime {
            tsc_timestamp: 1000,
            system_time_ns: 5,
            tsc_to_system_mul: s.mul_frac,
            tsc_shift: s.shift,
            ..Default::default()
        };
        assert_eq!(t.ns_at(2000), 1005);
        assert_eq!(t.ns_at(10), 5, "a TSC before the stamp never goes back");
    }

    #[test]
    fn field_str_stops_at_nul() {
        assert_eq!(field_str(b"rx7\0\0junk"), "rx7");
        assert_eq!(field_str(b"ab\xffcd"), "ab");
    }
}
