//! A small seeded PRNG (xorshift64*), so "random" test input is the same on
//! every run and a failure can be replayed.

/// xorshift64* (Vigna); fine for test data, not for anything else.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        // Spread the seed so small seeds do not start with small outputs.
        let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
        if s == 0 {
            s = 0x2545_F491_4F6C_DD1D;
        }
        Rng(s)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_spread() {
        let a = Rng::new(7).bytes(1 << 16);
        assert_eq!(a, Rng::new(7).bytes(1 << 16));
        assert_ne!(a, Rng::new(8).bytes(1 << 16));
        let mut counts = [0usize; 256];
        for &b in &a {
            counts[b as usize] += 1;
        }
        // 65536 bytes over 256 values: each ~256; all present, none wild.
        assert!(counts.iter().all(|&c| (150..400).contains(&c)), "{counts:?}");
        assert_eq!(Rng::new(1).bytes(13).len(), 13);
    }
}
