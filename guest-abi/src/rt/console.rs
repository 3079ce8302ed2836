//! Console output: `print!`/`println!` format into a stack buffer and hand
//! it to the `console_write` hypercall in chunks.

use core::fmt;

use super::sync::YieldLock;

/// Bytes formatted on the stack before each `console_write`.
const CHUNK: usize = 512;

/// Serializes `print!`s of different vCPUs so their lines do not interleave.
static CONSOLE: YieldLock<()> = YieldLock::new(());

/// A [`fmt::Write`] that formats into an `N`-byte buffer on the stack and
/// passes every full buffer (and the rest at [`finish`](Self::finish)) to
/// `flush`.
pub struct StackWriter<F: FnMut(&[u8]), const N: usize = CHUNK> {
    buf: [u8; N],
    len: usize,
    flush: F,
}

impl<F: FnMut(&[u8]), const N: usize> StackWriter<F, N> {
    /// An empty writer that sends its output to `flush`.
    pub fn new(flush: F) -> Self {
        StackWriter { buf: [0; N], len: 0, flush }
    }

    /// Passes what is buffered to `flush`.
    pub fn flush(&mut self) {
        if self.len > 0 {
            (self.flush)(&self.buf[..self.len]);
            self.len = 0;
        }
    }

    /// Flushes and drops the writer.
    pub fn finish(mut self) {
        self.flush();
    }

    /// Appends bytes, flushing whenever the buffer fills.
    pub fn write_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.len == N {
                self.flush();
            }
            let n = bytes.len().min(N - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
    }
}

impl<F: FnMut(&[u8]), const N: usize> fmt::Write for StackWriter<F, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Writes all of `bytes` to the console, one `console_write` per chunk the
/// hypervisor accepts. Output is dropped if the console reports an error.
pub(crate) fn write_all_unlocked(mut bytes: &[u8]) {
    let mut stalls = 0;
    while !bytes.is_empty() {
        match super::console_write(bytes) {
            Ok(0) => {
                // Nothing taken: let the console drain, but never hang.
                stalls += 1;
                if stalls > 100 {
                    return;
                }
                super::yield_now();
            }
            Ok(n) => bytes = &bytes[n.min(bytes.len())..],
            Err(_) => return,
        }
    }
}

/// Writes formatted text to the console without taking the console lock
/// (panic path).
pub(crate) fn write_fmt_unlocked(args: fmt::Arguments<'_>) {
    let mut w: StackWriter<_> = StackWriter::new(write_all_unlocked);
    let _ = fmt::write(&mut w, args);
    w.finish();
}

/// Writes all of `bytes` to the console.
pub fn write_all(bytes: &[u8]) {
    let _guard = CONSOLE.lock();
    write_all_unlocked(bytes);
}

/// Writes formatted text to the console (what `print!` expands to). Output
/// of one call is not interleaved with other vCPUs' prints.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    let _guard = CONSOLE.lock();
    write_fmt_unlocked(args);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::fmt::Write;
    use std::vec::Vec;

    #[test]
    fn chunks_long_output() {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut w: StackWriter<_, 8> = StackWriter::new(|b: &[u8]| chunks.push(b.to_vec()));
        let word = "abcdefghij";
        write!(w, "{word}-{}", 12345).unwrap();
        w.finish();
        assert!(chunks.iter().all(|c| c.len() <= 8 && !c.is_empty()));
        assert_eq!(chunks.concat(), b"abcdefghij-12345");
        assert_eq!(chunks.len(), 2);
    }

    #[test]
    fn empty_writes_nothing() {
        let mut n = 0;
        let w: StackWriter<_, 16> = StackWriter::new(|_: &[u8]| n += 1);
        w.finish();
        assert_eq!(n, 0);
    }
}
