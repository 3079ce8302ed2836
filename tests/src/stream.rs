//! A growing transcript of one output stream (QEMU's serial console or its
//! stderr), filled by a reader thread and waited on with a condition
//! variable.
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Decodes bytes into text incrementally: valid UTF-8 passes through, an
/// invalid byte becomes U+FFFD, and a sequence split across two reads is
/// held back until its end arrives.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Appends the decodable part of `pending + bytes` to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[n..];
                        }
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
    }

    /// Flushes an incomplete trailing sequence (at end of stream).
    pub fn finish(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
            self.pending.clear();
        }
    }
}

/// The state behind the mutex.
#[derive(Debug, Default)]
pub struct State {
    /// Everything received so far, decoded.
    pub text: String,
    /// The writer closed its end (the process exited).
    pub eof: bool,
    decoder: Utf8Decoder,
    /// For the echo: the last byte echoed was not a newline.
    mid_line: bool,
}

/// A transcript shared between a reader thread and the test.
#[derive(Debug, Default)]
pub struct Stream {
    state: Mutex<State>,
    cond: Condvar,
    /// Echo everything received to stderr with this prefix.
    echo: Option<String>,
}

impl Stream {
    /// A new, empty stream; `echo` mirrors it to stderr (for debugging).
    pub fn new(echo: Option<String>) -> Arc<Self> {
        Arc::new(Stream { echo, ..Default::default() })
    }

    /// Locks the state (a poisoned lock still holds a usable transcript).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends received bytes and wakes waiters.
    pub fn push(&self, bytes: &[u8]) {
        let mut st = self.lock();
        if let Some(prefix) = &self.echo {
            // Prefix each line, not each read.
            let mut shown = String::new();
            for piece in String::from_utf8_lossy(bytes).split_inclusive('\n') {
                if !st.mid_line {
                    shown.push_str(prefix);
                }
                shown.push_str(piece);
                st.mid_line = !piece.ends_with('\n');
            }
            eprint!("{shown}");
        }
        let State { text, decoder, .. } = &mut *st;
        decoder.push(bytes, text);
        drop(st);
        self.cond.notify_all();
    }

    /// Marks the end of the stream and wakes waiters.
    pub fn close(&self) {
        let mut st = self.lock();
        let State { text, decoder, .. } = &mut *st;
        decoder.finish(text);
        st.eof = true;
        drop(st);
        self.cond.notify_all();
    }

    /// Waits until `done(state)` holds or `deadline` passes; returns the
    /// guard either way, and whether `done` held.
    pub fn wait_until<'a>(
        &'a self,
        deadline: Instant,
        mut done: impl FnMut(&State) -> bool,
    ) -> (MutexGuard<'a, State>, bool) {
        let mut st = self.lock();
        loop {
            if done(&st) {
                return (st, true);
            }
            let now = Instant::now();
            if now >= deadline {
                return (st, false);
            }
            st = self.cond.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Copies everything from `reader` into the stream until EOF or error.
    pub fn pump(self: Arc<Self>, mut reader: impl Read) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.close();
    }
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn decoder_handles_split_and_invalid_sequences() {
        let mut d = Utf8Decoder::default();
        let mut s = String::new();
        let euro = "€".as_bytes(); // 3 bytes
        d.push(b"a", &mut s);
        d.push(&euro[..1], &mut s);
        assert_eq!(s, "a");
        d.push(&euro[1..], &mut s);
        assert_eq!(s, "a€");
        d.push(b"\xff\xfeb", &mut s);
        assert_eq!(s, "a€\u{fffd}\u{fffd}b");
        d.push(&euro[..2], &mut s);
        d.finish(&mut s);
        assert_eq!(s, "a€\u{fffd}\u{fffd}b\u{fffd}");
    }

    #[test]
    fn decoder_byte_by_byte_matches_lossy() {
        let mut bytes = Vec::new();
        let mut x = 12345u32;
        for _ in 0..5000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            bytes.push((x >> 16) as u8);
        }
        bytes.extend_from_slice("ok ü €".as_bytes());
        let mut d = Utf8Decoder::default();
        let mut s = String::new();
        for b in &bytes {
            d.push(std::slice::from_ref(b), &mut s);
        }
        d.finish(&mut s);
        assert_eq!(s, String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn tail_cuts_at_char_boundary() {
        assert_eq!(tail("hello", 3), "llo");
        assert_eq!(tail("hi", 10), "hi");
        assert_eq!(tail("a€b", 2), "b");
    }

    #[test]
    fn pump_fills_and_closes() {
        let s = Stream::new(None);
        let s2 = Arc::clone(&s);
        let t = std::thread::spawn(move || s2.pump(&b"line one\r\nline two"[..]));
        let deadline = Instant::now() + Duration::from_secs(5);
        let (st, ok) = s.wait_until(deadline, |st| st.eof);
        assert!(ok);
        assert_eq!(st.text, "line one\r\nline two");
        drop(st);
        t.join().unwrap();
    }

    #[test]
    fn wait_until_times_out() {
        let s = Stream::new(None);
        let start = Instant::now();
        let (guard, ok) = s.wait_until(start + Duration::from_millis(50), |st| st.eof);
        drop(guard);
        assert!(!ok);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
