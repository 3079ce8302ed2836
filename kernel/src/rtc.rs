//! CMOS real-time-clock decoding and proleptic Gregorian calendar math.
//!
//! The binary reads the RTC registers (with port I/O, waiting for the update
//! cycle to finish) into an [`RtcRaw`]; everything after that is pure
//! arithmetic and lives here.

use core::fmt;

/// `status_b` bit: values are binary (otherwise BCD).
pub const STATUS_B_BINARY: u8 = 1 << 2;
/// `status_b` bit: 24-hour mode (otherwise 12-hour with a PM flag).
pub const STATUS_B_24H: u8 = 1 << 1;
/// In 12-hour mode, bit 7 of the hours register means PM.
pub const HOURS_PM: u8 = 1 << 7;

const SECS_PER_DAY: i64 = 86_400;
/// Days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar.
const DAYS_0000_03_01_TO_EPOCH: i64 = 719_468;
/// Days in a 400-year Gregorian cycle.
const DAYS_PER_ERA: i64 = 146_097;
/// Unix time of 0000-01-01 00:00:00, the earliest [`from_unix`] result.
const MIN_UNIX: i64 = -62_167_219_200;
/// Unix time of 9999-12-31 23:59:59, the latest [`from_unix`] result.
const MAX_UNIX: i64 = 253_402_300_799;

/// A calendar date and time of day in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of the month, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
}

/// The RTC registers as read from CMOS, undecoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtcRaw {
    /// Register 0x00.
    pub seconds: u8,
    /// Register 0x02.
    pub minutes: u8,
    /// Register 0x04 (bit 7 is the PM flag in 12-hour mode).
    pub hours: u8,
    /// Register 0x07, day of the month.
    pub day: u8,
    /// Register 0x08.
    pub month: u8,
    /// Register 0x09, year within the century.
    pub year: u8,
    /// The century register named by the FADT, or 0 if there is none.
    pub century: u8,
    /// Status register B (0x0B): data mode and hour format.
    pub status_b: u8,
}

/// Whether `year` is a Gregorian leap year.
pub const fn is_leap_year(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// Days in `month` (1..=12) of `year`; 0 for an invalid month.
pub const fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl DateTime {
    /// Whether every field is in range (including the day for the month).
    pub const fn is_valid(&self) -> bool {
        self.month >= 1
            && self.month <= 12
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour <= 23
            && self.minute <= 59
            && self.second <= 59
    }
}

impl fmt::Display for DateTime {
    /// Formats as `2026-11-27 05:22:54 UTC`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Decodes one BCD byte (both nibbles must be decimal digits).
fn from_bcd(v: u8) -> Option<u8> {
    let (hi, lo) = (v >> 4, v & 0x0f);
    if hi > 9 || lo > 9 {
        None
    } else {
        Some(hi * 10 + lo)
    }
}

/// Decodes raw RTC registers into a validated date and time.
///
/// Values are BCD unless `status_b` has [`STATUS_B_BINARY`]; hours are in
/// 12-hour format (1..=12, PM in bit 7) unless `status_b` has
/// [`STATUS_B_24H`]. A zero `century` means the machine has no century
/// register and the year is taken to be 20xx. Returns `None` if any field is
/// not a valid encoding or out of range (e.g. 0xFF from an absent RTC, or
/// February 30).
pub fn decode(raw: &RtcRaw) -> Option<DateTime> {
    let binary = raw.status_b & STATUS_B_BINARY != 0;
    let value = |v: u8| if binary { Some(v) } else { from_bcd(v) };

    let second = value(raw.seconds)?;
    let minute = value(raw.minutes)?;
    let hour = if raw.status_b & STATUS_B_24H != 0 {
        value(raw.hours)?
    } else {
        let pm = raw.hours & HOURS_PM != 0;
        let h = value(raw.hours & !HOURS_PM)?;
        if !(1..=12).contains(&h) {
            return None;
        }
        // 12 AM is 00, 12 PM is 12.
        h % 12 + if pm { 12 } else { 0 }
    };
    let day = value(raw.day)?;
    let month = value(raw.month)?;
    let year = value(raw.year)?;
    let century = if raw.century == 0 { 20 } else { value(raw.century)? };
    if year > 99 || !(1..=99).contains(&century) {
        return None;
    }
    let dt = DateTime { year: u16::from(century) * 100 + u16::from(year), month, day, hour, minute, second };
    dt.is_valid().then_some(dt)
}

/// Days since 1970-01-01 of the given proleptic Gregorian date
/// (`month` in 1..=12; `day` may be any value and is used as an offset).
fn days_from_civil(year: i64, month: u8, day: i64) -> i64 {
    // Count years from March so the leap day is the last day of the year.
    let (y, m) = if month <= 2 { (year - 1, i64::from(month) + 9) } else { (year, i64::from(month) - 3) };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400; // 0..=399
    let day_of_year = (153 * m + 2) / 5 + day - 1; // March-based
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - DAYS_0000_03_01_TO_EPOCH
}

/// Seconds since the Unix epoch (1970-01-01 00:00:00 UTC) of `dt`.
///
/// Does not validate: the month is clamped to 1..=12 and the other fields
/// are used as offsets, so e.g. day 32 of January is February 1st. Never
/// overflows (the year is at most 65535).
pub fn to_unix(dt: &DateTime) -> i64 {
    let month = dt.month.clamp(1, 12);
    let days = days_from_civil(i64::from(dt.year), month, i64::from(dt.day));
    days * SECS_PER_DAY + i64::from(dt.hour) * 3600 + i64::from(dt.minute) * 60 + i64::from(dt.second)
}

/// The UTC date and time `secs` seconds after the Unix epoch.
///
/// Results are clamped to 0000-01-01 00:00:00 ..= 9999-12-31 23:59:59.
pub fn from_unix(secs: i64) -> DateTime {
    let secs = secs.clamp(MIN_UNIX, MAX_UNIX);
    let days = secs.div_euclid(SECS_PER_DAY);
    let rem = secs.rem_euclid(SECS_PER_DAY);

    let z = days + DAYS_0000_03_01_TO_EPOCH;
    let era = z.div_euclid(DAYS_PER_ERA);
    let day_of_era = z - era * DAYS_PER_ERA; // 0..=146096
                                             // Years in the era, correcting for the 4/100/400-year leap rules.
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153; // March-based month, 0..=11
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + year_of_era + i64::from(month <= 2);

    // All values are in range after the clamp above; the fallbacks are
    // never taken.
    DateTime {
        year: u16::try_from(year).unwrap_or(0),
        month: u8::try_from(month).unwrap_or(1),
        day: u8::try_from(day).unwrap_or(1),
        hour: u8::try_from(rem / 3600).unwrap_or(0),
        minute: u8::try_from(rem % 3600 / 60).unwrap_or(0),
        second: u8::try_from(rem % 60).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn dt(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> DateTime {
        DateTime { year, month, day, hour, minute, second }
    }

    /// Registers in order: seconds, minutes, hours, day, month, year, century.
    fn bcd_raw([s, m, h, d, mo, y, c]: [u8; 7], status_b: u8) -> RtcRaw {
        RtcRaw { seconds: s, minutes: m, hours: h, day: d, month: mo, year: y, century: c, status_b }
    }

    #[test]
    fn decodes_bcd_24h() {
        // QEMU default: BCD, 24-hour (status B = 0x02).
        let raw = bcd_raw([0x54, 0x22, 0x05, 0x27, 0x11, 0x26, 0x20], STATUS_B_24H);
        assert_eq!(decode(&raw), Some(dt(2026, 11, 27, 5, 22, 54)));
        // Without a century register the century defaults to 20.
        let raw = RtcRaw { century: 0, ..raw };
        assert_eq!(decode(&raw), Some(dt(2026, 11, 27, 5, 22, 54)));
        let raw = RtcRaw { century: 0x19, year: 0x99, hours: 0x23, ..raw };
        assert_eq!(decode(&raw), Some(dt(1999, 11, 27, 23, 22, 54)));
    }

    #[test]
    fn decodes_binary_mode() {
        let raw = bcd_raw([59, 59, 23, 31, 12, 99, 20], STATUS_B_BINARY | STATUS_B_24H);
        assert_eq!(decode(&raw), Some(dt(2099, 12, 31, 23, 59, 59)));
        // 0x59 is not a valid binary second.
        let raw = RtcRaw { seconds: 0x59, ..raw };
        assert_eq!(decode(&raw), None);
    }

    #[test]
    fn decodes_12_hour_mode() {
        let at = |hours: u8, status_b: u8| decode(&bcd_raw([0, 0, hours, 1, 1, 0x24, 0], status_b)).map(|d| d.hour);
        // BCD 12-hour.
        assert_eq!(at(0x12, 0), Some(0)); // 12 AM
        assert_eq!(at(0x01, 0), Some(1));
        assert_eq!(at(0x11, 0), Some(11));
        assert_eq!(at(0x92, 0), Some(12)); // 12 PM
        assert_eq!(at(0x81, 0), Some(13));
        assert_eq!(at(0x91, 0), Some(23)); // 11 PM
        assert_eq!(at(0x00, 0), None);
        assert_eq!(at(0x13, 0), None);
        assert_eq!(at(0x80, 0), None);
        // Binary 12-hour.
        assert_eq!(at(12, STATUS_B_BINARY), Some(0));
        assert_eq!(at(0x80 | 12, STATUS_B_BINARY), Some(12));
        assert_eq!(at(0x80 | 7, STATUS_B_BINARY), Some(19));
        assert_eq!(at(13, STATUS_B_BINARY), None);
        // In 24-hour mode a set bit 7 is garbage.
        assert_eq!(at(0x81, STATUS_B_24H), None);
        assert_eq!(at(0x24, STATUS_B_24H), None);
    }

    #[test]
    fn rejects_invalid_values() {
        let good = bcd_raw([0x00, 0x00, 0x00, 0x28, 0x02, 0x23, 0x20], STATUS_B_24H);
        assert!(decode(&good).is_some());
        let bad = [
            RtcRaw { seconds: 0x60, ..good },
            RtcRaw { seconds: 0x0A, ..good }, // not BCD
            RtcRaw { minutes: 0x60, ..good },
            RtcRaw { day: 0x00, ..good },
            RtcRaw { day: 0x29, ..good }, // 2023 is not a leap year
            RtcRaw { day: 0x32, ..good },
            RtcRaw { month: 0x00, ..good },
            RtcRaw { month: 0x13, ..good },
            RtcRaw { year: 0xA0, ..good },
            RtcRaw { century: 0xA0, ..good },
            // An absent RTC reads as all ones.
            bcd_raw([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], 0xFF),
        ];
        for raw in bad {
            assert_eq!(decode(&raw), None, "{raw:?}");
        }
        // Leap day in a leap year is fine.
        assert_eq!(decode(&RtcRaw { day: 0x29, year: 0x24, ..good }), Some(dt(2024, 2, 29, 0, 0, 0)));
    }

    #[test]
    fn decode_never_panics() {
        // Exhaustive over the fields that interact with the mode bits.
        for status_b in [0u8, STATUS_B_24H, STATUS_B_BINARY, 0xFF] {
            for v in 0..=255u8 {
                let raw = RtcRaw {
                    seconds: v,
                    minutes: v,
                    hours: v,
                    day: v.wrapping_add(1),
                    month: v.wrapping_mul(7),
                    year: v,
                    century: v,
                    status_b,
                };
                if let Some(d) = decode(&raw) {
                    assert!(d.is_valid());
                }
            }
        }
    }

    #[test]
    fn unix_known_values() {
        assert_eq!(to_unix(&dt(1970, 1, 1, 0, 0, 0)), 0);
        assert_eq!(to_unix(&dt(2000, 1, 1, 0, 0, 0)), 946_684_800);
        assert_eq!(to_unix(&dt(2000, 2, 29, 12, 0, 0)), 951_825_600);
        assert_eq!(to_unix(&dt(2038, 1, 19, 3, 14, 7)), 2_147_483_647);
        assert_eq!(to_unix(&dt(1969, 12, 31, 23, 59, 59)), -1);
        assert_eq!(to_unix(&dt(1900, 3, 1, 0, 0, 0)), -2_203_891_200);
        assert_eq!(to_unix(&dt(2026, 11, 27, 5, 22, 54)), 1_795_756_974);
        assert_eq!(to_unix(&dt(0, 1, 1, 0, 0, 0)), MIN_UNIX);
        assert_eq!(to_unix(&dt(9999, 12, 31, 23, 59, 59)), MAX_UNIX);

        assert_eq!(from_unix(0), dt(1970, 1, 1, 0, 0, 0));
        assert_eq!(from_unix(-1), dt(1969, 12, 31, 23, 59, 59));
        assert_eq!(from_unix(951_825_600), dt(2000, 2, 29, 12, 0, 0));
        assert_eq!(from_unix(4_107_542_400), dt(2100, 3, 1, 0, 0, 0));
        assert_eq!(from_unix(4_107_542_399), dt(2100, 2, 28, 23, 59, 59));
    }

    #[test]
    fn unix_round_trip_every_day() {
        // Every day from 1900 to 2200 at a varying time of day.
        let mut expected_days = to_unix(&dt(1900, 1, 1, 0, 0, 0)) / SECS_PER_DAY;
        for year in 1900..=2200u16 {
            for month in 1..=12u8 {
                for day in 1..=days_in_month(year, month) {
                    let d = dt(year, month, day, day % 24, (day * 7) % 60, day.wrapping_mul(13) % 60);
                    let t = to_unix(&d);
                    assert_eq!(t.div_euclid(SECS_PER_DAY), expected_days, "{d}");
                    assert_eq!(from_unix(t), d);
                    expected_days += 1;
                }
            }
        }
    }

    #[test]
    fn from_unix_clamps_and_never_panics() {
        assert_eq!(from_unix(i64::MIN), dt(0, 1, 1, 0, 0, 0));
        assert_eq!(from_unix(i64::MAX), dt(9999, 12, 31, 23, 59, 59));
        for secs in [MIN_UNIX - 1, MIN_UNIX, MAX_UNIX, MAX_UNIX + 1] {
            assert!(from_unix(secs).is_valid());
        }
        // Arbitrary (invalid) DateTimes convert without panicking.
        for v in [0u8, 13, 99, 255] {
            let _ = to_unix(&dt(u16::MAX, v, v, v, v, v));
            let _ = to_unix(&dt(0, v, v, v, v, v));
        }
        // Out-of-range day is an offset: January 32nd is February 1st.
        assert_eq!(from_unix(to_unix(&dt(2025, 1, 32, 0, 0, 0))), dt(2025, 2, 1, 0, 0, 0));
    }

    #[test]
    fn display_format() {
        assert_eq!(dt(2026, 11, 27, 5, 22, 54).to_string(), "2026-11-27 05:22:54 UTC");
        assert_eq!(dt(7, 1, 2, 3, 4, 5).to_string(), "0007-01-02 03:04:05 UTC");
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2000));
        assert!(is_leap_year(2024));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2023));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2024, 0), 0);
        assert_eq!(days_in_month(2024, 13), 0);
    }
}
