//! Sanity checks on the kernel file before it goes onto an image.
use std::io::Read;
use std::path::Path;

use crate::Error;

/// The multiboot2 header magic (Multiboot2 spec, 3.1.1).
pub const MULTIBOOT2_MAGIC: u32 = 0xE852_50D6;
/// The multiboot2 header must lie in the first 32 KiB, 8-byte aligned.
pub const MULTIBOOT2_SEARCH: usize = 32 * 1024;

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Finds a valid multiboot2 header (magic, architecture, length and a
/// checksum making the four sum to zero) in `image`'s first 32 KiB; returns
/// its offset.
pub fn find_multiboot2_header(image: &[u8]) -> Option<usize> {
    let end = image.len().min(MULTIBOOT2_SEARCH);
    (0..end).step_by(8).find(|&at| {
        let field = |i: usize| le32(image, at + 4 * i);
        match (field(0), field(1), field(2), field(3)) {
            (Some(MULTIBOOT2_MAGIC), Some(arch), Some(len), Some(sum)) => {
                len >= 16 && MULTIBOOT2_MAGIC.wrapping_add(arch).wrapping_add(len).wrapping_add(sum) == 0
            }
            _ => false,
        }
    })
}

/// Checks that `path` is a readable ELF file. Returns a warning (not an
/// error: the tool also serves experiments) when it has no multiboot2
/// header, since GRUB's `multiboot2` command would refuse it at boot time.
pub fn check_kernel(path: &Path) -> Result<Option<String>, Error> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Input(format!("kernel ELF {shown} not readable ({e}); build it first (scripts/build)")))?;
    if !meta.is_file() {
        return Err(Error::Input(format!("kernel ELF {shown} is not a file")));
    }
    let mut head = Vec::with_capacity(MULTIBOOT2_SEARCH);
    std::fs::File::open(path)
        .and_then(|f| f.take(MULTIBOOT2_SEARCH as u64).read_to_end(&mut head))
        .map_err(|e| Error::io(format!("read {shown}"), e))?;
    if !head.starts_with(b"\x7fELF") {
        return Err(Error::Input(format!("kernel {shown} is not an ELF file")));
    }
    Ok(match find_multiboot2_header(&head) {
        Some(_) => None,
        None => Some(format!("{shown} has no multiboot2 header in its first 32 KiB: GRUB will not boot it")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multiboot2 header (magic, arch 0, length 24, checksum, end tag).
    fn header() -> Vec<u8> {
        let len = 24u32;
        let sum = 0u32.wrapping_sub(MULTIBOOT2_MAGIC.wrapping_add(len));
        let mut h = Vec::new();
        for v in [MULTIBOOT2_MAGIC, 0, len, sum, 0, 8] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    #[test]
    fn finds_aligned_header_with_good_checksum() {
        let mut image = vec![0u8; 4096];
        image[..4].copy_from_slice(b"\x7fELF");
        let h = header();
        image[1024..1024 + h.len()].copy_from_slice(&h);
        assert_eq!(find_multiboot2_header(&image), Some(1024));
    }

    #[test]
    fn ignores_misaligned_bad_checksum_and_late_headers() {
        let h = header();
        let mut misaligned = vec![0u8; 4096];
        misaligned[1028..1028 + h.len()].copy_from_slice(&h);
        assert_eq!(find_multiboot2_header(&misaligned), None);

        let mut bad = vec![0u8; 4096];
        bad[1024..1024 + h.len()].copy_from_slice(&h);
        bad[1024 + 12] ^= 1;
        assert_eq!(find_multiboot2_header(&bad), None);

        let mut late = vec![0u8; MULTIBOOT2_SEARCH + 64];
        late[MULTIBOOT2_SEARCH..MULTIBOOT2_SEARCH + h.len()].copy_from_slice(&h);
        assert_eq!(find_multiboot2_header(&late), None);

        let truncated = &h[..12];
        assert_eq!(find_multiboot2_header(truncated), None);
    }

    #[test]
    fn check_kernel_errors_and_warnings() {
        let dir = crate::tempdir::TempDir::new("elf-test").unwrap();
        let missing = dir.path().join("nope.elf");
        let e = check_kernel(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.elf") && e.contains("scripts/build"), "{e}");

        let not_elf = dir.path().join("x.bin");
        std::fs::write(&not_elf, b"MZ....").unwrap();
        assert!(check_kernel(&not_elf).unwrap_err().to_string().contains("not an ELF"));

        let plain = dir.path().join("plain.elf");
        std::fs::write(&plain, b"\x7fELF\x02\x01\x01").unwrap();
        assert!(check_kernel(&plain).unwrap().unwrap().contains("multiboot2"));

        let good = dir.path().join("good.elf");
        let mut image = b"\x7fELF\x02\x01\x01\x00".to_vec();
        image.extend_from_slice(&header());
        std::fs::write(&good, image).unwrap();
        assert_eq!(check_kernel(&good).unwrap(), None);
    }
}
