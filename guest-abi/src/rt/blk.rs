//! The paravirtual block device: ABI v1 hypercalls `block_info`,
//! `block_read`, `block_write` and `block_flush` (docs/hypercall-abi.md,
//! section 14). Disk `n` is the domain's `n`-th `disk=` entry.
//!
//! Reads and writes move whole 512-byte sectors, at most
//! [`MAX_IO_BYTES`](crate::MAX_IO_BYTES) per call, and block the calling
//! vCPU until the hypervisor is done (other vCPUs keep running). A write is
//! durable only after [`flush`] returns `Ok`.

use super::raw::hypercall;
use crate::{nr, Error};

/// Sector size of every v1 disk.
pub const SECTOR_BYTES: usize = 512;
/// Size of [`BlockInfo`] in ABI v1.
pub const BLOCK_INFO_BYTES: usize = 24;
/// [`BlockInfo::flags`] bit 0: the disk is read-only.
pub const BLOCK_READ_ONLY: u32 = 1 << 0;

/// What `block_info` reports: 24 bytes, little-endian.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | `sectors`: disk size in sectors |
/// | 8 | 4 | `sector_size`: 512 |
/// | 12 | 4 | `max_io`: largest `len` one read or write takes |
/// | 16 | 4 | `flags`: bit 0 [`BLOCK_READ_ONLY`] |
/// | 20 | 4 | reserved, 0 |
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockInfo {
    /// Disk size in sectors.
    pub sectors: u64,
    /// Bytes per sector (512).
    pub sector_size: u32,
    /// Largest transfer per call, in bytes.
    pub max_io: u32,
    /// [`BLOCK_READ_ONLY`] and future bits.
    pub flags: u32,
}

impl BlockInfo {
    /// Decodes the record.
    pub fn from_bytes(b: &[u8; BLOCK_INFO_BYTES]) -> BlockInfo {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[0..8]);
        BlockInfo { sectors: u64::from_le_bytes(s), sector_size: u32_at(8), max_io: u32_at(12), flags: u32_at(16) }
    }

    /// Disk size in bytes.
    pub fn bytes(&self) -> u64 {
        self.sectors.saturating_mul(u64::from(self.sector_size))
    }

    /// Is the disk read-only?
    pub fn read_only(&self) -> bool {
        self.flags & BLOCK_READ_ONLY != 0
    }
}

/// Describes disk `disk` (`Err(NoDev)`: no such disk).
pub fn info(disk: u32) -> Result<BlockInfo, Error> {
    let mut buf = [0u8; BLOCK_INFO_BYTES];
    // SAFETY: `buf` is a live, writable local of the length passed.
    let raw = unsafe { hypercall(nr::BLOCK_INFO, u64::from(disk), buf.as_mut_ptr() as u64, buf.len() as u64, 0) };
    Error::from_raw(raw)?;
    Ok(BlockInfo::from_bytes(&buf))
}

/// Reads `buf.len()` bytes (a multiple of 512) from sector `sector`.
pub fn read(disk: u32, sector: u64, buf: &mut [u8]) -> Result<(), Error> {
    // SAFETY: `buf` is a live, writable buffer of the length passed.
    let raw = unsafe { hypercall(nr::BLOCK_READ, u64::from(disk), sector, buf.as_mut_ptr() as u64, buf.len() as u64) };
    Error::from_raw(raw).map(|_| ())
}

/// Writes `data` (a multiple of 512 bytes) at sector `sector`.
pub fn write(disk: u32, sector: u64, data: &[u8]) -> Result<(), Error> {
    // SAFETY: `data` is a live buffer of the length passed; the hypervisor
    // only reads it.
    let raw = unsafe { hypercall(nr::BLOCK_WRITE, u64::from(disk), sector, data.as_ptr() as u64, data.len() as u64) };
    Error::from_raw(raw).map(|_| ())
}

/// Makes every completed write to `disk` durable on the server.
pub fn flush(disk: u32) -> Result<(), Error> {
    // SAFETY: no memory is passed.
    let raw = unsafe { hypercall(nr::BLOCK_FLUSH, u64::from(disk), 0, 0, 0) };
    Error::from_raw(raw).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_decodes() {
        let mut b = [0u8; BLOCK_INFO_BYTES];
        b[0..8].copy_from_slice(&2048u64.to_le_bytes());
        b[8..12].copy_from_slice(&512u32.to_le_bytes());
        b[12..16].copy_from_slice(&65536u32.to_le_bytes());
        b[16..20].copy_from_slice(&1u32.to_le_bytes());
        let i = BlockInfo::from_bytes(&b);
        assert_eq!(i, BlockInfo { sectors: 2048, sector_size: 512, max_io: 65536, flags: 1 });
        assert_eq!(i.bytes(), 1 << 20);
        assert!(i.read_only());
    }
}
