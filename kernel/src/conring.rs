//! Per-domain console output: a bounded byte ring, and the filter that makes
//! guest text safe to show on the operator's terminal.
//!
//! A guest's `console_write` bytes go into its [`ConsoleRing`], which keeps
//! only the newest `capacity` bytes (counting what it drops), so a chatty
//! or hostile guest cannot make the hypervisor use more memory. When the
//! operator looks at the console the bytes pass through
//! [`sanitize_guest_output`] (or a [`GuestOutputFilter`], which also keeps
//! UTF-8 characters split across writes): a guest must not be able to send
//! terminal control sequences to the operator's terminal.

use alloc::vec;
use alloc::vec::Vec;

/// A fixed-capacity ring of bytes on the heap: pushing beyond the capacity
/// evicts the oldest bytes.
#[derive(Debug, Clone)]
pub struct ConsoleRing {
    /// Storage; its length is the capacity.
    buf: Vec<u8>,
    /// Index of the oldest byte; `< buf.len()` when the capacity is non-zero.
    head: usize,
    /// Bytes stored, `<= buf.len()`.
    len: usize,
    /// Bytes evicted or never stored.
    dropped: u64,
}

impl ConsoleRing {
    /// An empty ring holding up to `cap` bytes (allocated now). A ring of
    /// capacity 0 drops everything.
    pub fn new(cap: usize) -> Self {
        Self { buf: vec![0; cap], head: 0, len: 0, dropped: 0 }
    }

    /// Appends `bytes`, evicting the oldest bytes as needed so the newest
    /// `capacity` bytes are kept; evicted and skipped bytes count as
    /// [`dropped`](Self::dropped).
    pub fn push(&mut self, bytes: &[u8]) {
        let cap = self.buf.len();
        // Only the last `cap` bytes of the input can survive.
        let skip = bytes.len().saturating_sub(cap);
        self.count_dropped(skip);
        let bytes = bytes.get(skip..).unwrap_or(&[]);
        if bytes.is_empty() {
            return;
        }
        let evict = (self.len + bytes.len()).saturating_sub(cap);
        if evict > 0 {
            self.head = (self.head + evict) % cap;
            self.len -= evict;
            self.count_dropped(evict);
        }
        let tail = (self.head + self.len) % cap;
        let (first, second) = bytes.split_at(bytes.len().min(cap - tail));
        if let Some(dst) = self.buf.get_mut(tail..tail + first.len()) {
            dst.copy_from_slice(first);
        }
        if let Some(dst) = self.buf.get_mut(..second.len()) {
            dst.copy_from_slice(second);
        }
        self.len += bytes.len();
    }

    /// Moves every stored byte, oldest first, to the end of `out`.
    pub fn drain_into(&mut self, out: &mut Vec<u8>) {
        self.peek_all(out);
        self.clear();
    }

    /// Moves up to `max` of the oldest bytes to the end of `out` (for a
    /// writer that can take only so much at a time); returns how many.
    pub fn drain_up_to(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        let n = self.len.min(max);
        let (first, second) = self.slices();
        let from_first = n.min(first.len());
        out.extend_from_slice(first.get(..from_first).unwrap_or(&[]));
        out.extend_from_slice(second.get(..n - from_first).unwrap_or(&[]));
        self.len -= n;
        self.head = if self.len == 0 { 0 } else { (self.head + n) % self.buf.len() };
        n
    }

    /// Copies every stored byte, oldest first, to the end of `out`, leaving
    /// the ring as it is.
    pub fn peek_all(&self, out: &mut Vec<u8>) {
        let (first, second) = self.slices();
        out.reserve(self.len);
        out.extend_from_slice(first);
        out.extend_from_slice(second);
    }

    /// Discards every stored byte (not counted as dropped).
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// How many bytes are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most bytes the ring holds.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// How many bytes were evicted or could not be stored, in total.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The stored bytes as (older part, newer part).
    fn slices(&self) -> (&[u8], &[u8]) {
        let cap = self.buf.len();
        let first_len = self.len.min(cap - self.head.min(cap));
        let first = self.buf.get(self.head..self.head + first_len).unwrap_or(&[]);
        let second = self.buf.get(..self.len - first_len).unwrap_or(&[]);
        (first, second)
    }

    fn count_dropped(&mut self, n: usize) {
        self.dropped = self.dropped.saturating_add(n as u64);
    }
}

/// Whether a decoded character may reach the operator's terminal (`\n` is
/// handled by the caller).
fn char_allowed(c: char) -> bool {
    match c {
        '\t' => true,
        // C0 controls (ESC, BEL, BS, CR, ...), DEL and the C1 controls
        // U+0080..U+009F (U+009B is a one-character CSI on some terminals).
        c if c.is_control() => false,
        // Bidirectional embeddings, overrides and isolates: they would
        // reorder how later text (the operator's own) is displayed.
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => false,
        _ => true,
    }
}

fn emit_char(c: char, out: &mut Vec<u8>) {
    if c == '\n' {
        out.extend_from_slice(b"\r\n");
    } else if char_allowed(c) {
        let mut utf8 = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }
}

/// Appends guest console text to `out` in a form safe for the operator's
/// terminal: printable ASCII, `\t`, and valid UTF-8 characters are kept,
/// `\n` becomes `\r\n`; ESC and every other control character (C0, DEL, C1,
/// `\r`) and the Unicode bidirectional-override controls are dropped, as
/// are bytes that are not valid UTF-8 (including a character cut off at the
/// end of `bytes` — use a [`GuestOutputFilter`] to keep those).
pub fn sanitize_guest_output(bytes: &[u8], out: &mut Vec<u8>) {
    let mut filter = GuestOutputFilter::new();
    filter.feed(bytes, out);
}

/// [`sanitize_guest_output`] for a stream: a UTF-8 character whose bytes
/// arrive in separate writes is kept (up to 3 bytes are held back until the
/// rest arrives or turns out not to). Feeding a stream in any pieces gives
/// the same output as sanitizing it in one piece.
#[derive(Debug, Clone, Default)]
pub struct GuestOutputFilter {
    /// The start of an incomplete UTF-8 sequence from the last write.
    pending: [u8; 4],
    pending_len: usize,
}

impl GuestOutputFilter {
    /// A filter with nothing held back.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sanitizes `bytes` (the next part of the stream) onto `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut rest = bytes;
        if self.pending_len > 0 {
            let need = utf8_len(self.pending[0]);
            while self.pending_len < need {
                match rest.split_first() {
                    Some((&b, tail)) if is_continuation(b) => {
                        if let Some(slot) = self.pending.get_mut(self.pending_len) {
                            *slot = b;
                        }
                        self.pending_len += 1;
                        rest = tail;
                    }
                    Some(_) => break,
                    // Still incomplete: wait for more.
                    None => return,
                }
            }
            let seq = self.pending.get(..self.pending_len).unwrap_or(&[]);
            if let Ok(s) = core::str::from_utf8(seq) {
                s.chars().for_each(|c| emit_char(c, out));
            }
            self.pending_len = 0;
        }
        let mut chunks = rest.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            chunk.valid().chars().for_each(|c| emit_char(c, out));
            let invalid = chunk.invalid();
            let at_end = chunks.peek().is_none();
            // A valid but incomplete sequence at the very end: hold it back.
            if at_end && !invalid.is_empty() && core::str::from_utf8(invalid).is_err_and(|e| e.error_len().is_none()) {
                if let Some(dst) = self.pending.get_mut(..invalid.len()) {
                    dst.copy_from_slice(invalid);
                    self.pending_len = invalid.len();
                }
            }
        }
    }

    /// Whether bytes of an incomplete character are held back.
    pub fn has_pending(&self) -> bool {
        self.pending_len > 0
    }

    /// Forgets a held-back incomplete character.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// The length of the UTF-8 sequence a lead byte starts (1 if it is not a
/// multi-byte lead byte).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;

    fn contents(r: &ConsoleRing) -> Vec<u8> {
        let mut v = Vec::new();
        r.peek_all(&mut v);
        v
    }

    #[test]
    fn push_and_drain() {
        let mut r = ConsoleRing::new(8);
        assert!(r.is_empty());
        assert_eq!(r.capacity(), 8);
        r.push(b"abc");
        r.push(b"");
        r.push(b"de");
        assert_eq!(r.len(), 5);
        assert_eq!(contents(&r), b"abcde");
        assert_eq!(r.len(), 5, "peeking keeps the bytes");
        let mut out = b"> ".to_vec();
        r.drain_into(&mut out);
        assert_eq!(out, b"> abcde");
        assert!(r.is_empty());
        assert_eq!(r.dropped(), 0);
    }

    #[test]
    fn keeps_the_newest_bytes() {
        let mut r = ConsoleRing::new(8);
        r.push(b"0123456");
        r.push(b"789");
        assert_eq!(contents(&r), b"23456789");
        assert_eq!(r.dropped(), 2);
        r.push(b"abcdefghijkl");
        assert_eq!(contents(&r), b"efghijkl");
        assert_eq!(r.dropped(), 2 + 8 + 4);
        r.push(b"XY");
        assert_eq!(contents(&r), b"ghijklXY");
        let mut out = Vec::new();
        r.drain_into(&mut out);
        assert_eq!(out, b"ghijklXY");
        r.push(b"12345678");
        assert_eq!(contents(&r), b"12345678");
        assert_eq!(r.dropped(), 16);
    }

    #[test]
    fn wraps_around() {
        let mut r = ConsoleRing::new(5);
        r.push(b"abc");
        let mut out = Vec::new();
        assert_eq!(r.drain_up_to(&mut out, 2), 2);
        assert_eq!(out, b"ab");
        r.push(b"defg"); // storage "fgcde", head at c
        assert_eq!(contents(&r), b"cdefg");
        assert_eq!(r.dropped(), 0);
        r.push(b"h");
        assert_eq!(contents(&r), b"defgh");
        assert_eq!(r.dropped(), 1);
    }

    #[test]
    fn drain_up_to_takes_the_oldest() {
        let mut r = ConsoleRing::new(6);
        r.push(b"abcdef");
        r.push(b"gh"); // wraps: storage "ghcdef", head at c
        let mut out = Vec::new();
        assert_eq!(r.drain_up_to(&mut out, 3), 3);
        assert_eq!(out, b"cde");
        assert_eq!(r.drain_up_to(&mut out, 0), 0);
        assert_eq!(r.drain_up_to(&mut out, 100), 3);
        assert_eq!(out, b"cdefgh");
        assert_eq!(r.drain_up_to(&mut out, 100), 0);
        assert!(r.is_empty());
    }

    #[test]
    fn zero_capacity_drops_everything() {
        let mut r = ConsoleRing::new(0);
        r.push(b"hello");
        assert!(r.is_empty());
        assert_eq!(r.dropped(), 5);
        let mut out = Vec::new();
        r.drain_into(&mut out);
        assert_eq!(r.drain_up_to(&mut out, 10), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn clear_is_not_dropping() {
        let mut r = ConsoleRing::new(4);
        r.push(b"abcdef");
        r.clear();
        assert!(r.is_empty());
        assert_eq!(r.dropped(), 2);
        r.push(b"xy");
        assert_eq!(contents(&r), b"xy");
    }

    use crate::testutil::Rng;

    #[test]
    fn matches_a_simple_model() {
        let mut rng = Rng(0xFEED_5EED_0000_0001);
        for cap in [0usize, 1, 2, 3, 7, 16, 100] {
            let mut r = ConsoleRing::new(cap);
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut dropped = 0u64;
            for _ in 0..3000 {
                match rng.next() % 5 {
                    0 | 1 => {
                        let n = (rng.next() % (2 * cap as u64 + 3)) as usize;
                        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                        r.push(&bytes);
                        for &b in &bytes {
                            model.push_back(b);
                            if model.len() > cap {
                                model.pop_front();
                                dropped += 1;
                            }
                        }
                    }
                    2 => {
                        let max = (rng.next() % (cap as u64 + 2)) as usize;
                        let mut out = Vec::new();
                        let n = r.drain_up_to(&mut out, max);
                        assert_eq!(n, max.min(model.len()));
                        assert_eq!(out, model.drain(..n).collect::<Vec<u8>>());
                    }
                    3 if rng.next().is_multiple_of(4) => {
                        let mut out = Vec::new();
                        r.drain_into(&mut out);
                        assert_eq!(out, model.drain(..).collect::<Vec<u8>>());
                    }
                    _ => {
                        assert_eq!(contents(&r), model.iter().copied().collect::<Vec<u8>>());
                    }
                }
                assert_eq!(r.len(), model.len());
                assert_eq!(r.dropped(), dropped);
            }
        }
    }

    fn sanitized(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        sanitize_guest_output(bytes, &mut out);
        out
    }

    #[test]
    fn printable_text_passes() {
        assert_eq!(sanitized(b"Hello, world! ~{}[]"), b"Hello, world! ~{}[]");
        assert_eq!(sanitized(b"a\tb"), b"a\tb");
        let all: Vec<u8> = (0x20..0x7F).collect();
        assert_eq!(sanitized(&all), all);
        let mut out = b"kept ".to_vec();
        sanitize_guest_output(b"x", &mut out);
        assert_eq!(out, b"kept x", "appends");
    }

    #[test]
    fn newlines_become_crlf() {
        assert_eq!(sanitized(b"a\nb\n"), b"a\r\nb\r\n");
        assert_eq!(sanitized(b"a\r\nb"), b"a\r\nb");
        assert_eq!(sanitized(b"a\rb"), b"ab", "a lone CR is dropped");
        assert_eq!(sanitized(b"\n\n"), b"\r\n\r\n");
        assert_eq!(sanitized(b"\r\r\n\r"), b"\r\n");
    }

    #[test]
    fn control_bytes_are_dropped() {
        assert_eq!(sanitized(b"\x1b[2J\x1b]0;title\x07x"), b"[2J]0;titlex");
        assert_eq!(sanitized(b"\x00\x01\x08\x0b\x0c\x7f\x1b"), b"");
        let c0: Vec<u8> = (0u8..0x20).filter(|&b| b != b'\t' && b != b'\n').collect();
        assert_eq!(sanitized(&c0), b"");
        // C1 controls, raw and UTF-8 encoded (U+009B is an 8-bit CSI).
        assert_eq!(sanitized(b"\x9b31m"), b"31m");
        assert_eq!(sanitized("\u{9b}31m\u{85}".as_bytes()), b"31m");
        // Bidi overrides.
        assert_eq!(sanitized("a\u{202E}b\u{2066}c".as_bytes()), b"abc");
    }

    #[test]
    fn utf8_is_kept_when_valid() {
        let text = "héllo wörld € 𝄞 日本 🙂";
        assert_eq!(sanitized(text.as_bytes()), text.as_bytes());
        // Invalid: stray continuation, bad lead bytes, overlong encodings,
        // surrogates, beyond U+10FFFF, a truncated character.
        assert_eq!(sanitized(b"a\x80b\xffc\xfe"), b"abc");
        assert_eq!(sanitized(b"\xc0\xafx\xe0\x80\xafy"), b"xy");
        assert_eq!(sanitized(b"\xed\xa0\x80z"), b"z");
        assert_eq!(sanitized(b"\xf4\x90\x80\x80q"), b"q");
        assert_eq!(sanitized(b"ok\xe2\x82"), b"ok");
        assert_eq!(sanitized(b"\xe2\x82x\xe2\x82\xac"), "x€".as_bytes());
    }

    #[test]
    fn filter_keeps_characters_split_across_writes() {
        let text = "a€b🙂\n";
        let mut f = GuestOutputFilter::new();
        let mut out = Vec::new();
        for b in text.bytes() {
            f.feed(&[b], &mut out);
        }
        assert_eq!(out, b"a\xe2\x82\xacb\xf0\x9f\x99\x82\r\n");
        assert!(!f.has_pending());
        // An incomplete character followed by something else is dropped.
        let mut out = Vec::new();
        f.feed(b"x\xe2\x82", &mut out);
        assert!(f.has_pending());
        f.feed(b"y", &mut out);
        assert_eq!(out, b"xy");
        // reset forgets the held bytes.
        f.feed(b"\xf0\x9f", &mut out);
        f.reset();
        f.feed(b"\x99\x82z", &mut out);
        assert_eq!(out, b"xyz");
        // A held lead byte followed by an invalid continuation.
        let mut out = Vec::new();
        f.feed(b"\xe0", &mut out);
        f.feed(b"\x80\x80w", &mut out);
        assert_eq!(out, b"w");
    }

    #[test]
    fn filter_matches_one_shot_sanitizing() {
        const PIECES: &[&[u8]] = &[
            b"a",
            b"\n",
            b"\r",
            b"\t",
            b"\x1b",
            b"\x7f",
            b"\x80",
            b"\xbf",
            b"\xc3",
            b"\xa9",
            b"\xe2",
            b"\x82",
            b"\xac",
            b"\xf0",
            b"\x9f",
            b"\x99",
            b"\xed",
            b"\xa0",
            b"\xe0",
            b"\xf4",
            b"\x90",
            b"\xff",
            b"\xc2\x9b",
            "€".as_bytes(),
            "🙂".as_bytes(),
        ];
        let mut rng = Rng(77);
        for _ in 0..3000 {
            let stream: Vec<u8> = (0..rng.next() % 40)
                .flat_map(|_| PIECES[(rng.next() % PIECES.len() as u64) as usize].iter().copied())
                .collect();
            let expected = sanitized(&stream);
            let mut f = GuestOutputFilter::new();
            let mut out = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = 1 + (rng.next() % 5) as usize;
                let (head, tail) = rest.split_at(n.min(rest.len()));
                f.feed(head, &mut out);
                rest = tail;
            }
            assert_eq!(out, expected, "{stream:x?}");
            // Whatever comes out is valid UTF-8 without control characters
            // other than tab and CR LF pairs.
            let s = core::str::from_utf8(&out).unwrap();
            assert!(s.replace("\r\n", "").chars().all(|c| c == '\t' || !c.is_control()));
        }
    }
}
