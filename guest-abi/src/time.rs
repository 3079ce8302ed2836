//! Time-stamp-counter scaling in the pvclock representation.
//!
//! The hypervisor measures the TSC frequency once and publishes a
//! [`TscScale`]; the hypervisor and its guests then convert TSC deltas to
//! nanoseconds with one shift and one 32x64-bit multiply, exactly as the
//! Xen/KVM pvclock ABI does (`tsc_to_system_mul`, `tsc_shift`):
//!
//! ```text
//! shifted = if shift >= 0 { ticks << shift } else { ticks >> -shift }
//! ns      = (shifted * mul_frac) >> 32
//! ```
//!
//! `mul_frac` is a 0.32 fixed-point fraction in `[0.5, 1)`, so it always uses
//! its full 32 bits of precision and the relative error of the conversion is
//! below 2^-31 (about 0.5 ppb) for every frequency from 1 Hz upwards.

/// Nanoseconds per second.
pub const NSEC_PER_SEC: u64 = 1_000_000_000;

/// Shifts tried by [`TscScale::from_hz`]; -63 is far enough for any `u64`
/// frequency and 31 for 1 Hz, so the search always succeeds for `hz >= 1`.
const MIN_SHIFT: i32 = -63;
const MAX_SHIFT: i32 = 31;

/// A pvclock-style TSC-to-nanoseconds conversion factor.
///
/// Every value of this type is safe to use: the conversions saturate instead
/// of overflowing, even for `shift` values [`TscScale::from_hz`] never
/// produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscScale {
    /// Multiplier, a 0.32 fixed-point fraction (`mul_frac / 2^32`).
    pub mul_frac: u32,
    /// Binary shift applied to the tick count before multiplying:
    /// left if positive, right if negative.
    pub shift: i8,
}

impl TscScale {
    /// The scale for a TSC running at `tsc_hz` ticks per second.
    ///
    /// Picks the smallest `shift` for which the multiplier fits in 32 bits,
    /// which puts `mul_frac` in `[2^31, 2^32)` (full precision). The
    /// multiplier is rounded down, so converted times never run ahead.
    /// `tsc_hz == 0` yields a scale that converts everything to 0 ns.
    pub const fn from_hz(tsc_hz: u64) -> TscScale {
        if tsc_hz == 0 {
            return TscScale { mul_frac: 0, shift: 0 };
        }
        let mut shift = MIN_SHIFT;
        while shift <= MAX_SHIFT {
            // mul = 1e9 * 2^(32 - shift) / hz; 32 - shift is in 1..=95 and
            // 1e9 < 2^30, so the numerator stays below 2^125.
            let numerator = (NSEC_PER_SEC as u128) << ((32 - shift) as u32);
            let mul = numerator / tsc_hz as u128;
            if mul <= u32::MAX as u128 {
                return TscScale { mul_frac: mul as u32, shift: shift as i8 };
            }
            shift += 1;
        }
        // Unreachable for tsc_hz >= 1 (shift 31 gives mul <= 2e9), kept so
        // the function is total.
        TscScale { mul_frac: u32::MAX, shift: MAX_SHIFT as i8 }
    }

    /// Converts a TSC delta to nanoseconds (rounded down, saturating at
    /// `u64::MAX`). The 128-bit intermediate means deltas of centuries are
    /// converted exactly as precisely as short ones.
    pub const fn ticks_to_ns(&self, ticks: u64) -> u64 {
        let shifted: u128 = if self.shift >= 0 {
            let s = self.shift as u32;
            if s >= 64 {
                if ticks == 0 {
                    return 0;
                }
                return u64::MAX;
            }
            (ticks as u128) << s
        } else {
            let s = self.shift.unsigned_abs() as u32;
            if s >= 64 {
                0
            } else {
                (ticks >> s) as u128
            }
        };
        // shifted < 2^127 and mul_frac < 2^32: the product may exceed u128
        // only for out-of-spec shifts; saturate then.
        match shifted.checked_mul(self.mul_frac as u128) {
            Some(product) => {
                let ns = product >> 32;
                if ns > u64::MAX as u128 {
                    u64::MAX
                } else {
                    ns as u64
                }
            }
            None => u64::MAX,
        }
    }

    /// Converts nanoseconds to TSC ticks (approximate inverse of
    /// [`ticks_to_ns`](Self::ticks_to_ns), saturating at `u64::MAX`).
    ///
    /// Rounds up, so `ticks_to_ns(ns_to_ticks(ns)) >= ns`: a timer
    /// programmed with the result never fires early. A zero multiplier
    /// (from `from_hz(0)`) yields `u64::MAX`.
    pub const fn ns_to_ticks(&self, ns: u64) -> u64 {
        if self.mul_frac == 0 {
            return u64::MAX;
        }
        let mul = self.mul_frac as u128;
        // ceil(ns * 2^32 / mul): numerator < 2^96 + 2^32, no overflow.
        let shifted = ((ns as u128) << 32).div_ceil(mul);
        let ticks: u128 = if self.shift >= 0 {
            // ceil(shifted / 2^shift); shift <= 127 for an i8.
            shifted.div_ceil(1u128 << (self.shift as u32))
        } else {
            let s = self.shift.unsigned_abs() as u32;
            if shifted == 0 {
                0
            } else if s >= shifted.leading_zeros() {
                u128::MAX
            } else {
                shifted << s
            }
        };
        if ticks > u64::MAX as u128 {
            u64::MAX
        } else {
            ticks as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FREQS: [u64; 9] = [
        1_000_000,
        3_579_545,
        14_318_180,
        1_000_000_000,
        2_500_000_000,
        3_123_456_789,
        4_294_967_296,
        10_000_000_000,
        20_000_000_000,
    ];

    /// Exact ns = ticks * 1e9 / hz, rounded down.
    fn exact_ns(ticks: u64, hz: u64) -> u128 {
        ticks as u128 * NSEC_PER_SEC as u128 / hz as u128
    }

    /// |got - want| must be within 1 ppm of `want`, plus `abs` ns of
    /// granularity slack for short intervals.
    fn assert_close(got: u64, want: u128, abs: u128, hz: u64, input: u64) {
        let got = got as u128;
        let diff = got.abs_diff(want);
        assert!(
            diff * 1_000_000 <= want || diff <= abs,
            "hz {hz}, input {input}: got {got}, want {want} (diff {diff})"
        );
    }

    #[test]
    fn multiplier_uses_full_precision() {
        for hz in FREQS.iter().copied().chain([1, 2, 999, u64::MAX]) {
            let s = TscScale::from_hz(hz);
            assert!(s.mul_frac >= 1 << 31, "hz {hz}: {s:?}");
        }
    }

    #[test]
    fn known_shifts() {
        // 1 GHz: 1 ns per tick = 0.5 * 2^1.
        assert_eq!(TscScale::from_hz(1_000_000_000), TscScale { mul_frac: 1 << 31, shift: 1 });
        // 1 MHz: 1000 ns per tick = (1000/1024) * 2^10.
        assert_eq!(TscScale::from_hz(1_000_000).shift, 10);
        // 20 GHz: 0.05 ns per tick = 0.8 * 2^-4.
        assert_eq!(TscScale::from_hz(20_000_000_000).shift, -4);
        // 2.5 GHz: 0.4 ns per tick = 0.8 * 2^-1.
        assert_eq!(TscScale::from_hz(2_500_000_000).shift, -1);
    }

    #[test]
    fn accurate_below_one_ppm() {
        for hz in FREQS {
            let s = TscScale::from_hz(hz);
            for ticks in [1u64, 7, 999, hz / 1000, hz, hz + 12_345, hz * 60, hz * 3600 + 17] {
                // A right shift loses up to 2^-shift ticks; allow that much
                // (plus 1 ns of rounding) in absolute terms.
                let granularity = if s.shift < 0 { exact_ns(1u64 << s.shift.unsigned_abs(), hz) + 2 } else { 1 };
                assert_close(s.ticks_to_ns(ticks), exact_ns(ticks, hz), granularity, hz, ticks);
            }
        }
    }

    #[test]
    fn exact_for_one_ghz() {
        let s = TscScale::from_hz(1_000_000_000);
        for t in [0u64, 1, 2, 1_000_000_007, u64::MAX / 4] {
            assert_eq!(s.ticks_to_ns(t), t);
        }
    }

    #[test]
    fn large_deltas_years() {
        const YEAR_S: u64 = 365 * 24 * 3600;
        for hz in FREQS {
            let s = TscScale::from_hz(hz);
            // As many years as fit in u64 ticks, capped at 25.
            let years = (u64::MAX / hz / YEAR_S).min(25);
            let ticks = hz * YEAR_S * years + 123_456_789;
            let want = exact_ns(ticks, hz);
            let got = s.ticks_to_ns(ticks);
            assert_close(got, want, 0, hz, ticks);
            // The truncated multiplier bounds the relative error by
            // 2^-31, i.e. about 0.5 ppb (0.4 s over 25 years).
            assert!((got as u128).abs_diff(want) * 2_000_000_000 <= want, "hz {hz}");
        }
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        // 2^64 ticks at 1 MHz is ~1.8e22 ns, beyond u64.
        let s = TscScale::from_hz(1_000_000);
        assert_eq!(s.ticks_to_ns(u64::MAX), u64::MAX);
        // Out-of-spec scales never panic.
        for shift in [i8::MIN, -64, -63, 0, 31, 32, 63, 64, i8::MAX] {
            for mul_frac in [0, 1, u32::MAX] {
                let s = TscScale { mul_frac, shift };
                for v in [0, 1, 12345, u64::MAX] {
                    let _ = s.ticks_to_ns(v);
                    let _ = s.ns_to_ticks(v);
                }
            }
        }
        let zero = TscScale::from_hz(0);
        assert_eq!(zero.ticks_to_ns(1_000_000), 0);
        assert_eq!(zero.ns_to_ticks(1), u64::MAX);
    }

    #[test]
    fn monotonic_in_ticks() {
        for hz in FREQS {
            let s = TscScale::from_hz(hz);
            for base in [0u64, hz, 1 << 40, u64::MAX - 10_000] {
                let mut prev = s.ticks_to_ns(base);
                for t in base..base + 5000 {
                    let ns = s.ticks_to_ns(t);
                    assert!(ns >= prev, "hz {hz} t {t}");
                    prev = ns;
                }
            }
            // Coarse sweep across the whole range.
            let mut prev = 0;
            let mut t: u64 = 1;
            while let Some(next) = t.checked_mul(3) {
                let ns = s.ticks_to_ns(t);
                assert!(ns >= prev);
                prev = ns;
                t = next;
            }
        }
    }

    #[test]
    fn ns_to_ticks_inverts() {
        for hz in FREQS {
            let s = TscScale::from_hz(hz);
            for ns in [0u64, 1, 10, 1_000, 1_000_000, 999_999_999, 86_400 * NSEC_PER_SEC] {
                let ticks = s.ns_to_ticks(ns);
                let back = s.ticks_to_ns(ticks);
                assert!(back >= ns, "hz {hz}: {ns} ns -> {ticks} -> {back}");
                // Never more than a tick (plus the shift granularity) late.
                let slack = exact_ns(1, hz) as u64 * 2 + 2 + (ns / 1_000_000);
                let slack =
                    if s.shift < 0 { slack + exact_ns(1u64 << s.shift.unsigned_abs(), hz) as u64 } else { slack };
                assert!(back - ns <= slack, "hz {hz}: {ns} ns -> {back}");
                // And close to the exact tick count.
                let want = ns as u128 * hz as u128 / NSEC_PER_SEC as u128;
                assert_close(ticks, want, (1u128 << s.shift.unsigned_abs()) + 1, hz, ns);
            }
        }
        assert_eq!(TscScale::from_hz(1_000_000).ns_to_ticks(u64::MAX), u64::MAX / 1000 + 1);
        assert_eq!(TscScale::from_hz(20_000_000_000).ns_to_ticks(u64::MAX), u64::MAX);
    }
}
