//! Ethernet MAC addresses.

use core::fmt;
use core::str::FromStr;

/// A 48-bit Ethernet MAC address, most significant octet first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// `00:00:00:00:00:00` (never valid as a source).
    pub const ZERO: Mac = Mac([0; 6]);

    /// All ones.
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// Group bit set (this includes broadcast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Group bit clear (this includes the all-zero address).
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// All zeros.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// The U/L bit is set: not assigned by a vendor.
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// A deterministic, locally administered unicast address derived from
    /// `seed`: `02:72:68:xx:xx:xx` (`72:68` is "rh"), the last three octets
    /// from a 64-bit mix of the seed. Different seeds may (rarely) collide,
    /// so callers that need uniqueness must check it.
    pub fn generated(seed: u64) -> Mac {
        let h = mix64(seed);
        Mac([0x02, 0x72, 0x68, (h >> 40) as u8, (h >> 32) as u8, (h >> 24) as u8])
    }
}

/// SplitMix64's finaliser: a cheap, well-distributed bijection on `u64`.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Self {
        Mac(b)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(m: Mac) -> Self {
        m.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// Why a string is not a MAC address (Display gives a one-line message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacParseError;

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid MAC address (expected six hex octets separated by ':' or '-', e.g. 52:54:00:12:34:56)")
    }
}

impl core::error::Error for MacParseError {}

impl FromStr for Mac {
    type Err = MacParseError;

    /// Six groups of one or two hex digits, all separated by `:` or all by
    /// `-`; case-insensitive; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            let slot = out.get_mut(n).ok_or(MacParseError)?;
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(MacParseError);
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| MacParseError)?;
            n += 1;
        }
        if n != 6 {
            return Err(MacParseError);
        }
        Ok(Mac(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    #[test]
    fn display() {
        assert_eq!(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]).to_string(), "52:54:00:12:34:56");
        assert_eq!(Mac::BROADCAST.to_string(), "ff:ff:ff:ff:ff:ff");
        assert_eq!(format!("{}", Mac::ZERO), "00:00:00:00:00:00");
    }

    #[test]
    fn parse_ok() {
        let want = Mac([0x52, 0x54, 0, 0x12, 0xab, 0xcd]);
        for s in ["52:54:00:12:ab:cd", "52-54-00-12-AB-CD", "52:54:0:12:Ab:cD", "  52:54:00:12:ab:cd\n"] {
            assert_eq!(s.parse::<Mac>(), Ok(want), "{s}");
        }
        let m = Mac::generated(42);
        assert_eq!(m.to_string().parse::<Mac>(), Ok(m));
    }

    #[test]
    fn parse_err() {
        for s in [
            "",
            ":",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:",
            "52:54:00-12:34:56",
            "52:54:00:12:34:567",
            "52:54:00:12:34:5g",
            "525400123456",
            "+5:54:00:12:34:56",
            "52::54:00:12:34",
            "é2:54:00:12:34:56",
        ] {
            assert_eq!(s.parse::<Mac>(), Err(MacParseError), "{s:?}");
        }
        let msg = MacParseError.to_string();
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn classes() {
        assert!(Mac::BROADCAST.is_broadcast() && Mac::BROADCAST.is_multicast() && !Mac::BROADCAST.is_unicast());
        let mc = Mac([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(mc.is_multicast() && !mc.is_broadcast() && !mc.is_unicast());
        let qemu = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert!(qemu.is_unicast() && qemu.is_locally_administered() && !qemu.is_multicast());
        let intel = Mac([0x00, 0x1b, 0x21, 1, 2, 3]);
        assert!(intel.is_unicast() && !intel.is_locally_administered());
        assert!(Mac::ZERO.is_zero() && Mac::ZERO.is_unicast());
    }

    #[test]
    fn generated_is_local_unicast_and_deterministic() {
        let mut seen = alloc::collections::BTreeSet::new();
        for seed in 0..1000u64 {
            let m = Mac::generated(seed);
            assert!(m.is_unicast() && m.is_locally_administered() && !m.is_zero());
            assert_eq!(&m.0[..3], &[0x02, 0x72, 0x68]);
            assert_eq!(m, Mac::generated(seed));
            seen.insert(m);
        }
        // 24 random bits: 1000 seeds should essentially never collide.
        assert!(seen.len() >= 995);
    }
}
