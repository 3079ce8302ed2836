//! A fixed-capacity ring of log records for `dmesg`.
//!
//! The logger writes into it, possibly while the heap is busy, so pushing
//! never allocates: records live in a `[u8; N]` circular buffer as a
//! 10-byte header (timestamp, level, message length) followed by the message
//! bytes, and the oldest records are evicted to make room for new ones.

use core::fmt;
use log::Level;

/// The longest message stored, in bytes; longer ones are cut at a char
/// boundary.
pub const MAX_MSG: usize = 255;

/// Header bytes per record: timestamp (8, little endian), level (1), length (1).
const HEADER: usize = 10;
const _: () = assert!(MAX_MSG <= u8::MAX as usize, "lengths are stored in one byte");

/// A ring of log records in `N` bytes of storage.
///
/// Each record takes 10 bytes plus its message. A message that cannot fit
/// even in an empty ring is cut to fit; if `N` is smaller than a header,
/// every push is counted as dropped.
#[derive(Clone)]
pub struct LogRing<const N: usize> {
    buf: [u8; N],
    /// Offset of the oldest record's header; always `< N` when `N > 0`.
    head: usize,
    /// Bytes occupied by records, `<= N`.
    used: usize,
    /// Number of records stored.
    len: usize,
    /// Records evicted or refused so far.
    dropped: u64,
}

impl<const N: usize> LogRing<N> {
    /// An empty ring; `const` so it can initialise a `static`.
    pub const fn new() -> Self {
        Self { buf: [0; N], head: 0, used: 0, len: 0, dropped: 0 }
    }

    /// Appends a record, evicting the oldest ones until it fits. `msg` is cut
    /// to [`MAX_MSG`] bytes (or what fits in `N`) at a char boundary.
    pub fn push(&mut self, ts_ns: u64, level: Level, msg: &str) {
        let Some(room) = N.checked_sub(HEADER) else {
            self.dropped += 1;
            return;
        };
        let msg = msg.get(..msg.floor_char_boundary(room.min(MAX_MSG))).unwrap_or("");
        let size = HEADER + msg.len();
        while N - self.used < size && self.evict_oldest() {}

        let mut header = [0; HEADER];
        let (ts, rest) = header.split_at_mut(8);
        ts.copy_from_slice(&ts_ns.to_le_bytes());
        // `log::Level` discriminants are 1 (Error) ..= 5 (Trace); the length
        // fits a byte because it is at most MAX_MSG.
        rest.copy_from_slice(&[level as u8, msg.len() as u8]);

        let tail = self.wrap(self.head + self.used);
        let tail = self.write_at(tail, &header);
        self.write_at(tail, msg.as_bytes());
        self.used += size;
        self.len += 1;
    }

    /// The number of records stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no records are stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many records were evicted (or could not be stored) so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Removes all records; [`dropped`](Self::dropped) is kept.
    pub fn clear(&mut self) {
        self.head = 0;
        self.used = 0;
        self.len = 0;
    }

    /// Calls `f(ts_ns, level, msg)` for every record, oldest first.
    pub fn for_each(&self, mut f: impl FnMut(u64, Level, &str)) {
        let mut pos = self.head;
        for _ in 0..self.len {
            let (ts_ns, level, len) = self.header_at(pos);
            pos = self.wrap(pos + HEADER);
            let mut bytes = [0; MAX_MSG];
            let Some(msg) = bytes.get_mut(..len) else {
                return;
            };
            pos = self.read_at(pos, msg);
            f(ts_ns, level, core::str::from_utf8(msg).unwrap_or("<corrupt>"));
        }
    }

    /// Drops the oldest record; false if there was none.
    fn evict_oldest(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        let (_, _, len) = self.header_at(self.head);
        let size = HEADER + len;
        self.head = self.wrap(self.head + size);
        self.used = self.used.saturating_sub(size);
        self.len -= 1;
        self.dropped += 1;
        if self.len == 0 {
            self.head = 0;
            self.used = 0;
        }
        true
    }

    /// Decodes the header at `pos` into (timestamp, level, message length).
    fn header_at(&self, pos: usize) -> (u64, Level, usize) {
        let mut header = [0; HEADER];
        self.read_at(pos, &mut header);
        let [ts @ .., level, len] = header;
        let level = match level {
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => Level::Trace,
        };
        (u64::from_le_bytes(ts), level, usize::from(len))
    }

    /// Maps an offset in `0..2N` into the buffer.
    fn wrap(&self, pos: usize) -> usize {
        if pos >= N {
            pos - N
        } else {
            pos
        }
    }

    /// Copies `bytes` (at most `N`) into the ring at `pos` (`< N`), wrapping
    /// at the end; returns the offset just past them.
    fn write_at(&mut self, pos: usize, bytes: &[u8]) -> usize {
        let (first, second) = bytes.split_at(bytes.len().min(N - pos));
        self.buf[pos..pos + first.len()].copy_from_slice(first);
        self.buf[..second.len()].copy_from_slice(second);
        self.wrap(pos + bytes.len())
    }

    /// Fills `out` (at most `N` bytes) from the ring at `pos` (`< N`),
    /// wrapping at the end; returns the offset just past them.
    fn read_at(&self, pos: usize, out: &mut [u8]) -> usize {
        let len = out.len();
        let (first, second) = out.split_at_mut(len.min(N - pos));
        first.copy_from_slice(&self.buf[pos..pos + first.len()]);
        second.copy_from_slice(&self.buf[..second.len()]);
        self.wrap(pos + len)
    }
}

impl<const N: usize> Default for LogRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes one record in Linux `dmesg` style, without a line ending:
/// `[    5.123456] INFO  message` (seconds right-aligned in 5 columns,
/// microseconds, the level padded to 5 columns).
pub fn format_record(out: &mut impl fmt::Write, ts_ns: u64, level: Level, msg: &str) -> fmt::Result {
    let secs = ts_ns / 1_000_000_000;
    let micros = ts_ns % 1_000_000_000 / 1000;
    write!(out, "[{secs:>5}.{micros:06}] {:<5} {msg}", level.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    type Record = (u64, Level, String);

    fn records<const N: usize>(ring: &LogRing<N>) -> Vec<Record> {
        let mut out = Vec::new();
        ring.for_each(|ts, level, msg| out.push((ts, level, msg.to_string())));
        out
    }

    fn formatted(ts_ns: u64, level: Level, msg: &str) -> String {
        let mut s = String::new();
        format_record(&mut s, ts_ns, level, msg).unwrap();
        s
    }

    #[test]
    fn empty() {
        let ring = LogRing::<128>::new();
        assert!(ring.is_empty());
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.dropped(), 0);
        assert!(records(&ring).is_empty());
    }

    #[test]
    fn works_in_a_static_mutex() {
        static RING: spin::Mutex<LogRing<64>> = spin::Mutex::new(LogRing::new());
        RING.lock().push(1, Level::Warn, "hi");
        assert_eq!(records(&RING.lock()), [(1, Level::Warn, "hi".to_string())]);
    }

    #[test]
    fn keeps_order_and_fields() {
        let mut ring = LogRing::<1024>::default();
        let levels = [Level::Error, Level::Warn, Level::Info, Level::Debug, Level::Trace];
        for (i, level) in levels.into_iter().enumerate() {
            ring.push(u64::MAX - i as u64, level, &"x".repeat(i));
        }
        ring.push(0, Level::Info, "");
        let got = records(&ring);
        assert_eq!(got.len(), 6);
        assert_eq!(ring.len(), 6);
        for (i, level) in levels.into_iter().enumerate() {
            assert_eq!(got[i], (u64::MAX - i as u64, level, "x".repeat(i)));
        }
        assert_eq!(got[5], (0, Level::Info, String::new()));
        assert_eq!(ring.dropped(), 0);
    }

    #[test]
    fn evicts_oldest_when_full() {
        // Each record is 10 + 10 = 20 bytes; 64 bytes hold 3 of them.
        let mut ring = LogRing::<64>::new();
        for i in 0..5u64 {
            ring.push(i, Level::Info, &alloc::format!("message {i}."));
        }
        let got: Vec<u64> = records(&ring).iter().map(|r| r.0).collect();
        assert_eq!(got, [2, 3, 4]);
        assert_eq!(ring.dropped(), 2);
        // A record needing 40 bytes evicts two more.
        ring.push(9, Level::Error, &"y".repeat(30));
        let got: Vec<u64> = records(&ring).iter().map(|r| r.0).collect();
        assert_eq!(got, [4, 9]);
        assert_eq!(ring.dropped(), 4);
    }

    #[test]
    fn exact_fit_evicts_nothing() {
        let mut ring = LogRing::<40>::new();
        ring.push(1, Level::Info, "0123456789");
        ring.push(2, Level::Info, "abcdefghij");
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.dropped(), 0);
        ring.push(3, Level::Info, "");
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.dropped(), 1);
    }

    #[test]
    fn truncates_to_255_bytes_at_char_boundaries() {
        let mut ring = LogRing::<4096>::new();
        ring.push(0, Level::Info, &"a".repeat(300));
        ring.push(1, Level::Info, &"é".repeat(128)); // 256 bytes of 2-byte chars
        ring.push(2, Level::Info, &"€".repeat(100)); // 3-byte chars, 255 fits exactly
        ring.push(3, Level::Info, &"🦀".repeat(64)); // 4-byte chars
        let got = records(&ring);
        assert_eq!(got[0].2, "a".repeat(255));
        assert_eq!(got[1].2, "é".repeat(127));
        assert_eq!(got[2].2, "€".repeat(85));
        assert_eq!(got[3].2, "🦀".repeat(63));
        assert_eq!(ring.dropped(), 0);
    }

    #[test]
    fn record_larger_than_the_ring_is_cut_to_fit() {
        let mut ring = LogRing::<32>::new();
        ring.push(1, Level::Info, "old");
        ring.push(2, Level::Warn, &"z".repeat(100));
        assert_eq!(records(&ring), [(2, Level::Warn, "z".repeat(22))]);
        assert_eq!(ring.dropped(), 1);
        // Cutting respects char boundaries too: 22 bytes hold seven 3-byte chars.
        ring.push(3, Level::Info, &"€".repeat(10));
        assert_eq!(records(&ring), [(3, Level::Info, "€".repeat(7))]);
    }

    #[test]
    fn tiny_rings() {
        let mut none = LogRing::<0>::new();
        none.push(1, Level::Info, "x");
        assert!(none.is_empty());
        assert_eq!(none.dropped(), 1);
        assert!(records(&none).is_empty());

        let mut small = LogRing::<9>::new();
        small.push(1, Level::Info, "");
        assert!(small.is_empty());
        assert_eq!(small.dropped(), 1);

        let mut header_only = LogRing::<10>::new();
        header_only.push(1, Level::Info, "abc");
        header_only.push(2, Level::Debug, "");
        assert_eq!(records(&header_only), [(2, Level::Debug, String::new())]);
        assert_eq!(header_only.dropped(), 1);
    }

    #[test]
    fn clear_keeps_dropped() {
        let mut ring = LogRing::<32>::new();
        for i in 0..4 {
            ring.push(i, Level::Info, "abcdef");
        }
        assert_eq!(ring.dropped(), 2);
        ring.clear();
        assert!(ring.is_empty());
        assert_eq!(ring.dropped(), 2);
        ring.push(7, Level::Info, "again");
        assert_eq!(records(&ring), [(7, Level::Info, "again".to_string())]);
    }

    /// Checks the ring against a simple model over many wrap-arounds, with
    /// records of varying size straddling the end of the buffer.
    #[test]
    fn wraps_around_many_times() {
        const N: usize = 257;
        let mut ring = LogRing::<N>::new();
        let mut model: VecDeque<Record> = VecDeque::new();
        let mut dropped = 0u64;
        let mut seed = 0x1234_5678u32;
        let alphabet = ['a', 'é', '€', '🦀', 'z'];
        for ts in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let chars = seed as usize % 90;
            let msg: String = (0..chars).map(|i| alphabet[(i + ts as usize) % 5]).collect();
            let level = [Level::Error, Level::Warn, Level::Info, Level::Debug, Level::Trace][ts as usize % 5];
            ring.push(ts, level, &msg);

            let stored = &msg[..msg.floor_char_boundary(MAX_MSG.min(N - HEADER))];
            let size = |m: &str| HEADER + m.len();
            while N - model.iter().map(|r| size(&r.2)).sum::<usize>() < size(stored) {
                model.pop_front();
                dropped += 1;
            }
            model.push_back((ts, level, stored.to_string()));
            if ts % 97 == 0 || ts > 19_990 {
                assert_eq!(records(&ring), Vec::from(model.clone()), "after {ts}");
            }
            assert_eq!(ring.len(), model.len());
            assert_eq!(ring.dropped(), dropped);
        }
        assert!(dropped > 10_000);
    }

    #[test]
    fn formats_like_dmesg() {
        assert_eq!(formatted(5_123_456_789, Level::Info, "message"), "[    5.123456] INFO  message");
        assert_eq!(formatted(0, Level::Error, "boom"), "[    0.000000] ERROR boom");
        assert_eq!(formatted(999, Level::Warn, ""), "[    0.000000] WARN  ");
        assert_eq!(formatted(1_000, Level::Debug, "d"), "[    0.000001] DEBUG d");
        assert_eq!(formatted(123_456_000_001_000, Level::Trace, "t"), "[123456.000001] TRACE t");
        assert_eq!(formatted(u64::MAX, Level::Info, "max"), "[18446744073.709551] INFO  max");
    }
}
