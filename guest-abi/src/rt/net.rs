//! The paravirtual network interface (vif): ABI v1 hypercalls `net_info`,
//! `net_write` and `net_read` (docs/hypercall-abi.md, section 13), and with
//! feature `net` a smoltcp [`Device`](smoltcp::phy::Device) over them,
//! [`VifDevice`].
//!
//! A domain created with a vif sends and receives whole Ethernet frames
//! (destination, source, EtherType, payload; no preamble, no FCS), one per
//! hypercall. Receiving never blocks: wait for
//! [`event::NET_RX`](crate::event::NET_RX) with
//! [`wait_until`](super::wait_until), then call [`recv`] until it returns
//! `Ok(None)`.
//!
//! ```ignore
//! let info = guest_abi::rt::net::info()?; // Err(NoDev): no vif
//! let mut frame = [0u8; MAX_FRAME_BYTES];
//! while let Some(n) = guest_abi::rt::net::recv(&mut frame)? {
//!     handle(&frame[..n]);
//! }
//! ```

use core::fmt;

use super::raw::hypercall;
use crate::{nr, Error, MAX_IO_BYTES};

/// Size of [`NetInfo`]: what `net_info` writes in ABI v1.
pub const NET_INFO_BYTES: usize = 16;
/// [`NetInfo::flags`] bit 0: the link is up.
pub const NET_LINK_UP: u32 = 1 << 0;
/// Length of an Ethernet header (destination, source, EtherType).
pub const ETH_HEADER_BYTES: usize = 14;
/// Shortest frame `net_write` takes: a bare header. The hypervisor pads
/// frames shorter than Ethernet's 60-byte minimum on the wire.
pub const MIN_FRAME_BYTES: usize = ETH_HEADER_BYTES;
/// The MTU (largest IP packet) of a v1 vif.
pub const DEFAULT_MTU: u32 = 1500;
/// Longest frame of a v1 vif: header + [`DEFAULT_MTU`]. A buffer this
/// long always holds a whole received frame.
pub const MAX_FRAME_BYTES: usize = ETH_HEADER_BYTES + DEFAULT_MTU as usize;

/// What `net_info` reports about the domain's vif: 16 bytes, little-endian.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 6 | `mac`: the vif's MAC address, the only valid source of its frames |
/// | 6 | 2 | padding, 0 |
/// | 8 | 4 | `mtu`: largest IP packet; frames are at most `14 + mtu` bytes |
/// | 12 | 4 | `flags`: bit 0 [`NET_LINK_UP`]; other bits 0 (ignore them) |
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetInfo {
    /// The vif's MAC address.
    pub mac: [u8; 6],
    /// Padding (0).
    pub _pad: [u8; 2],
    /// Largest IP packet (1500 in v1).
    pub mtu: u32,
    /// [`NET_LINK_UP`] and future bits.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<NetInfo>() == NET_INFO_BYTES);

impl NetInfo {
    /// Decodes the 16 bytes `net_info` writes.
    pub fn from_bytes(b: &[u8; NET_INFO_BYTES]) -> NetInfo {
        let mut mac = [0; 6];
        mac.copy_from_slice(&b[..6]);
        NetInfo {
            mac,
            _pad: [b[6], b[7]],
            mtu: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// The 16-byte encoding (what the hypervisor writes).
    pub fn to_bytes(&self) -> [u8; NET_INFO_BYTES] {
        let mut b = [0; NET_INFO_BYTES];
        b[..6].copy_from_slice(&self.mac);
        b[6..8].copy_from_slice(&self._pad);
        b[8..12].copy_from_slice(&self.mtu.to_le_bytes());
        b[12..].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// Whether the link is up.
    pub fn link_up(&self) -> bool {
        self.flags & NET_LINK_UP != 0
    }

    /// The longest frame `net_write` takes and `net_read` returns:
    /// `14 + mtu` (at most [`MAX_IO_BYTES`]; [`MAX_FRAME_BYTES`] if the MTU
    /// is 0).
    pub fn max_frame(&self) -> usize {
        if self.mtu == 0 {
            return MAX_FRAME_BYTES;
        }
        (ETH_HEADER_BYTES + self.mtu as usize).min(MAX_IO_BYTES as usize)
    }

    /// The MAC address, printable as `52:54:00:12:34:56`.
    pub fn mac(&self) -> Mac {
        Mac(self.mac)
    }
}

/// A MAC address that prints as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

fn result(raw: i64) -> Result<u64, Error> {
    Error::from_raw(raw.max(-i64::MAX))
}

/// The vif's MAC address, MTU and link state (the `net_info` hypercall).
///
/// Errors: `NoDev` if the domain has no vif, `NoSys` on a hypervisor
/// without networking.
pub fn info() -> Result<NetInfo, Error> {
    let mut buf = [0u8; NET_INFO_BYTES];
    // SAFETY: the hypervisor writes at most `buf.len()` bytes into `buf`, a
    // local array borrowed mutably for the call.
    let raw = unsafe { hypercall(nr::NET_INFO, buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0) };
    decode_info(result(raw)?, &buf)
}

/// `net_info`'s result: the count written must cover the v1 record.
fn decode_info(written: u64, buf: &[u8; NET_INFO_BYTES]) -> Result<NetInfo, Error> {
    if written < NET_INFO_BYTES as u64 {
        return Err(Error::Io);
    }
    Ok(NetInfo::from_bytes(buf))
}

/// Sends one Ethernet frame (the `net_write` hypercall). `frame` starts
/// with the destination MAC; its source MAC must be the vif's (the bridge
/// silently drops other frames, and this still returns `Ok`).
///
/// Errors: `Invalid` for a frame shorter than [`MIN_FRAME_BYTES`] (checked
/// here, no hypercall), `TooBig` for one longer than
/// [`NetInfo::max_frame`], `Again` while the hypervisor's transmit queue
/// for the vif is full (nothing was sent: try again after
/// [`yield_now`](super::yield_now)), `NoDev` without a vif.
pub fn send(frame: &[u8]) -> Result<(), Error> {
    if frame.len() < MIN_FRAME_BYTES {
        return Err(Error::Invalid);
    }
    if frame.len() as u64 > MAX_IO_BYTES {
        return Err(Error::TooBig);
    }
    // SAFETY: the hypervisor only reads `[frame, frame + len)`, a live borrow.
    let raw = unsafe { hypercall(nr::NET_WRITE, frame.as_ptr() as u64, frame.len() as u64, 0, 0) };
    result(raw).map(|_| ())
}

/// Takes the oldest received frame, if any, into `buf` without blocking
/// (the `net_read` hypercall): `Ok(Some(len))` with the frame in
/// `buf[..len]`, `Ok(None)` when none is waiting.
///
/// A frame longer than `buf` is consumed all the same (the hypervisor
/// copies what fits and reports the full length) and reported as
/// `Err(TooBig)`: a buffer of [`NetInfo::max_frame`] bytes never loses one.
/// Errors: `Invalid` for an empty `buf` (no hypercall), `NoDev` without a
/// vif.
pub fn recv(buf: &mut [u8]) -> Result<Option<usize>, Error> {
    if buf.is_empty() {
        return Err(Error::Invalid);
    }
    let len = buf.len().min(MAX_IO_BYTES as usize);
    // SAFETY: the hypervisor writes at most `len` bytes into `buf`, which
    // we borrow mutably for the call.
    let raw = unsafe { hypercall(nr::NET_READ, buf.as_mut_ptr() as u64, len as u64, 0, 0) };
    decode_read(result(raw)?, len)
}

/// `net_read`'s result for a `len`-byte buffer: 0 is "no frame", a length
/// above `len` a truncated (and lost) frame.
fn decode_read(frame_len: u64, len: usize) -> Result<Option<usize>, Error> {
    match frame_len {
        0 => Ok(None),
        n if n <= len as u64 => Ok(Some(n as usize)),
        _ => Err(Error::TooBig),
    }
}

#[cfg(feature = "net")]
pub use device::{VifDevice, VifRxToken, VifStats, VifTxToken};

#[cfg(feature = "net")]
mod device {
    use super::super::alloc::{vec, vec::Vec};
    use super::{info, recv, send, NetInfo};
    use crate::Error;
    use smoltcp::phy::{self, DeviceCapabilities, Medium};
    use smoltcp::time::Instant;
    use smoltcp::wire::EthernetAddress;

    /// How often a frame is offered again while the hypervisor's transmit
    /// queue is full (`Again`), yielding in between, before it is dropped
    /// (TCP sends it again; other protocols lose it).
    const TX_TRIES: u32 = 256;
    /// Oversized frames skipped in one [`receive`](phy::Device::receive).
    const RX_SKIPS: u32 = 8;

    /// Counters of a [`VifDevice`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct VifStats {
        /// Frames received and handed to smoltcp.
        pub rx_frames: u64,
        /// Their bytes.
        pub rx_bytes: u64,
        /// Frames lost on receive (longer than the buffer, read errors).
        pub rx_errors: u64,
        /// Frames the hypervisor took.
        pub tx_frames: u64,
        /// Their bytes.
        pub tx_bytes: u64,
        /// Frames dropped: queue full for too long, refused lengths.
        pub tx_dropped: u64,
        /// `Again` answers seen (each followed by a yield and a retry).
        pub tx_again: u64,
    }

    /// The domain's vif as a smoltcp Ethernet device. Each
    /// [`receive`](phy::Device::receive) takes one waiting frame with
    /// `net_read` (none waiting: `None`); each transmit token sends its
    /// frame with `net_write` when consumed.
    #[derive(Debug)]
    pub struct VifDevice {
        info: NetInfo,
        rx_buf: Vec<u8>,
        tx_buf: Vec<u8>,
        stats: VifStats,
    }

    impl VifDevice {
        /// Opens the vif (`net_info`). Errors: `NoDev` (no vif), `NoSys`
        /// (no networking in this hypervisor).
        pub fn new() -> Result<VifDevice, Error> {
            Ok(VifDevice::with_info(info()?))
        }

        /// A device for a vif described by `info` (already queried).
        pub fn with_info(info: NetInfo) -> VifDevice {
            let max = info.max_frame();
            VifDevice { info, rx_buf: vec![0; max], tx_buf: vec![0; max], stats: VifStats::default() }
        }

        /// What `net_info` said when the device was opened.
        pub fn info(&self) -> &NetInfo {
            &self.info
        }

        /// The vif's MAC address, for smoltcp's interface configuration.
        pub fn ethernet_address(&self) -> EthernetAddress {
            EthernetAddress(self.info.mac)
        }

        /// The counters so far.
        pub fn stats(&self) -> VifStats {
            self.stats
        }
    }

    /// A received frame.
    pub struct VifRxToken<'a> {
        frame: &'a [u8],
    }

    /// Permission to send one frame.
    pub struct VifTxToken<'a> {
        buf: &'a mut Vec<u8>,
        stats: &'a mut VifStats,
    }

    impl phy::Device for VifDevice {
        type RxToken<'a>
            = VifRxToken<'a>
        where
            Self: 'a;
        type TxToken<'a>
            = VifTxToken<'a>
        where
            Self: 'a;

        fn receive(&mut self, _timestamp: Instant) -> Option<(VifRxToken<'_>, VifTxToken<'_>)> {
            let mut tries = 0;
            let len = loop {
                match recv(&mut self.rx_buf) {
                    Ok(Some(n)) => break n,
                    Ok(None) => return None,
                    // A frame longer than the MTU, truncated and gone: count
                    // it and take the next one (a few times at most).
                    Err(Error::TooBig) if tries < RX_SKIPS => {
                        tries += 1;
                        self.stats.rx_errors += 1;
                    }
                    Err(_) => {
                        self.stats.rx_errors += 1;
                        return None;
                    }
                }
            };
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += len as u64;
            let VifDevice { rx_buf, tx_buf, stats, .. } = self;
            Some((VifRxToken { frame: &rx_buf[..len] }, VifTxToken { buf: tx_buf, stats }))
        }

        fn transmit(&mut self, _timestamp: Instant) -> Option<VifTxToken<'_>> {
            Some(VifTxToken { buf: &mut self.tx_buf, stats: &mut self.stats })
        }

        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = self.info.max_frame();
            caps.max_burst_size = None;
            caps
        }
    }

    impl phy::RxToken for VifRxToken<'_> {
        fn consume<R, F>(self, f: F) -> R
        where
            F: FnOnce(&[u8]) -> R,
        {
            f(self.frame)
        }
    }

    impl phy::TxToken for VifTxToken<'_> {
        fn consume<R, F>(self, len: usize, f: F) -> R
        where
            F: FnOnce(&mut [u8]) -> R,
        {
            if self.buf.len() < len {
                // Longer than the MTU smoltcp was given: build it anyway,
                // the hypervisor refuses it below (counted as dropped).
                self.buf.resize(len, 0);
            }
            let frame = &mut self.buf[..len];
            let r = f(frame);
            let mut tries = 0;
            loop {
                match send(frame) {
                    Ok(()) => {
                        self.stats.tx_frames += 1;
                        self.stats.tx_bytes += len as u64;
                        break;
                    }
                    Err(Error::Again) if tries < TX_TRIES => {
                        tries += 1;
                        self.stats.tx_again += 1;
                        super::super::yield_now();
                    }
                    Err(_) => {
                        self.stats.tx_dropped += 1;
                        break;
                    }
                }
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn net_info_layout() {
        assert_eq!(core::mem::size_of::<NetInfo>(), 16);
        assert_eq!(core::mem::align_of::<NetInfo>(), 4);
        assert_eq!(core::mem::offset_of!(NetInfo, mac), 0);
        assert_eq!(core::mem::offset_of!(NetInfo, mtu), 8);
        assert_eq!(core::mem::offset_of!(NetInfo, flags), 12);
        let bytes = [0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0, 0xdc, 0x05, 0, 0, 1, 0, 0, 0];
        let i = NetInfo::from_bytes(&bytes);
        assert_eq!(i, NetInfo { mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56], _pad: [0; 2], mtu: 1500, flags: 1 });
        assert!(i.link_up());
        assert_eq!(i.max_frame(), 1514);
        assert_eq!(i.to_bytes(), bytes);
        assert_eq!(std::format!("{}", i.mac()), "52:54:00:12:34:56");
    }

    #[test]
    fn net_info_edge_cases() {
        let down = NetInfo { flags: 0xfffe, ..NetInfo::default() };
        assert!(!down.link_up(), "only bit 0 means link up");
        assert_eq!(down.max_frame(), MAX_FRAME_BYTES, "MTU 0: the v1 default");
        let huge = NetInfo { mtu: u32::MAX, ..NetInfo::default() };
        assert_eq!(huge.max_frame(), MAX_IO_BYTES as usize);
        let buf = [0u8; NET_INFO_BYTES];
        assert_eq!(decode_info(15, &buf), Err(Error::Io), "a short record is not trusted");
        assert_eq!(decode_info(16, &buf), Ok(NetInfo::default()));
    }

    #[test]
    fn read_results() {
        assert_eq!(decode_read(0, 1514), Ok(None));
        assert_eq!(decode_read(60, 1514), Ok(Some(60)));
        assert_eq!(decode_read(1514, 1514), Ok(Some(1514)));
        assert_eq!(decode_read(1514, 100), Err(Error::TooBig), "truncated");
    }

    #[test]
    fn refused_before_the_hypercall() {
        // These never reach `syscall` (which would be a Linux system call
        // in a host test).
        assert_eq!(send(&[0; 13]), Err(Error::Invalid));
        assert_eq!(send(&[]), Err(Error::Invalid));
        assert_eq!(recv(&mut []), Err(Error::Invalid));
        let big = std::vec![0u8; MAX_IO_BYTES as usize + 1];
        assert_eq!(send(&big), Err(Error::TooBig));
    }
}
