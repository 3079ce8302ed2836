//! XDR (RFC 4506) encoding and decoding.
//!
//! [`XdrWriter`] appends big-endian 4-byte units to a `Vec<u8>`;
//! [`XdrReader`] reads them back from a borrowed slice. Every variable-length
//! item is read against a caller-supplied maximum, so hostile input can never
//! make the reader allocate or index beyond what it was given.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// A decoding failure; `field` names what was being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdrError {
    /// The input ended inside `field`.
    Truncated { field: &'static str },
    /// A length prefix of `field` exceeds its maximum.
    TooLong { field: &'static str, len: u32, max: u32 },
    /// A boolean or optional discriminant of `field` was neither 0 nor 1.
    BadBool { field: &'static str, value: u32 },
    /// An enum or union discriminant of `field` is not one we know.
    BadDiscriminant { field: &'static str, value: u32 },
    /// Padding bytes after `field` were not zero.
    BadPadding { field: &'static str },
    /// A string in `field` was not valid UTF-8.
    BadUtf8 { field: &'static str },
    /// A list in `field` had more entries than allowed.
    TooMany { field: &'static str, max: u32 },
    /// Bytes were left over after a complete `field`.
    Trailing { field: &'static str, extra: usize },
}

impl fmt::Display for XdrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            XdrError::Truncated { field } => write!(f, "xdr: input truncated in {field}"),
            XdrError::TooLong { field, len, max } => write!(f, "xdr: {field} length {len} exceeds {max}"),
            XdrError::BadBool { field, value } => write!(f, "xdr: {field} bool/optional is {value}, not 0 or 1"),
            XdrError::BadDiscriminant { field, value } => write!(f, "xdr: {field} has unknown value {value}"),
            XdrError::BadPadding { field } => write!(f, "xdr: non-zero padding after {field}"),
            XdrError::BadUtf8 { field } => write!(f, "xdr: {field} is not valid UTF-8"),
            XdrError::TooMany { field, max } => write!(f, "xdr: {field} has more than {max} entries"),
            XdrError::Trailing { field, extra } => write!(f, "xdr: {extra} trailing bytes after {field}"),
        }
    }
}

/// Number of zero bytes that pad `len` to a multiple of four.
pub const fn pad_len(len: usize) -> usize {
    (4 - (len & 3)) & 3
}

/// Appends XDR items to a byte vector.
#[derive(Clone, Debug, Default)]
pub struct XdrWriter {
    buf: Vec<u8>,
}

impl XdrWriter {
    /// An empty writer.
    pub fn new() -> Self {
        XdrWriter { buf: Vec::new() }
    }

    /// An empty writer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        XdrWriter { buf: Vec::with_capacity(cap) }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The finished encoding.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// `unsigned int`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// `int`.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// `unsigned hyper`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// `hyper`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// `bool`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(v as u32)
    }

    /// Fixed-length `opaque[n]`: the bytes and zero padding, no length.
    pub fn opaque_fixed(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(&[0u8; 3][..pad_len(data.len())]);
        self
    }

    /// Variable-length `opaque<>`: length, bytes, padding.
    ///
    /// Lengths beyond `u32::MAX` cannot be expressed; callers keep their
    /// data far below that (the protocol layers cap everything).
    pub fn opaque_var(&mut self, data: &[u8]) -> &mut Self {
        self.u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
        self.opaque_fixed(data)
    }

    /// `string<>`.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.opaque_var(s.as_bytes())
    }

    /// Optional data (`*T`): a bool, then the item if present.
    pub fn optional<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) -> &mut Self {
        match v {
            Some(x) => {
                self.bool(true);
                f(self, x);
            }
            None => {
                self.bool(false);
            }
        }
        self
    }

    /// Raw bytes, already XDR-encoded.
    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self
    }
}

/// Reads XDR items from a byte slice.
#[derive(Clone, Debug)]
pub struct XdrReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> XdrReader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        XdrReader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The unread rest of the input.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// Fails unless all input has been consumed.
    pub fn finish(&self, field: &'static str) -> Result<(), XdrError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(XdrError::Trailing { field, extra }),
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], XdrError> {
        let end = self.pos.checked_add(n).ok_or(XdrError::Truncated { field })?;
        let s = self.buf.get(self.pos..end).ok_or(XdrError::Truncated { field })?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], XdrError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    /// `unsigned int`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, XdrError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// `int`.
    pub fn i32(&mut self, field: &'static str) -> Result<i32, XdrError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    /// `unsigned hyper`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, XdrError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// `hyper`.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, XdrError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// `bool` (only 0 and 1 are accepted).
    pub fn bool(&mut self, field: &'static str) -> Result<bool, XdrError> {
        match self.u32(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(XdrError::BadBool { field, value }),
        }
    }

    /// Fixed-length `opaque[n]` with its padding.
    pub fn opaque_fixed(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], XdrError> {
        let data = self.take(n, field)?;
        let pad = self.take(pad_len(n), field)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(XdrError::BadPadding { field });
        }
        Ok(data)
    }

    /// Variable-length `opaque<max>`.
    pub fn opaque_var(&mut self, max: u32, field: &'static str) -> Result<&'a [u8], XdrError> {
        let len = self.u32(field)?;
        if len > max {
            return Err(XdrError::TooLong { field, len, max });
        }
        let n = usize::try_from(len).map_err(|_| XdrError::TooLong { field, len, max })?;
        if n > self.remaining() {
            return Err(XdrError::Truncated { field });
        }
        self.opaque_fixed(n, field)
    }

    /// `string<max>`, borrowed (must be UTF-8).
    pub fn str(&mut self, max: u32, field: &'static str) -> Result<&'a str, XdrError> {
        let b = self.opaque_var(max, field)?;
        core::str::from_utf8(b).map_err(|_| XdrError::BadUtf8 { field })
    }

    /// `string<max>`, owned.
    pub fn string(&mut self, max: u32, field: &'static str) -> Result<String, XdrError> {
        self.str(max, field).map(String::from)
    }

    /// Optional data (`*T`).
    pub fn optional<T>(
        &mut self,
        field: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, XdrError>,
    ) -> Result<Option<T>, XdrError> {
        if self.bool(field)? {
            f(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A counted array `T<max>`, each element read by `f`.
    pub fn array_var<T>(
        &mut self,
        max: u32,
        field: &'static str,
        mut f: impl FnMut(&mut Self) -> Result<T, XdrError>,
    ) -> Result<Vec<T>, XdrError> {
        let len = self.u32(field)?;
        if len > max {
            return Err(XdrError::TooLong { field, len, max });
        }
        // Each element takes at least four bytes: do not trust `len` for
        // the allocation beyond what the input could hold.
        let cap = (len as usize).min(self.remaining() / 4);
        let mut v = Vec::with_capacity(cap);
        for _ in 0..len {
            v.push(f(self)?);
        }
        Ok(v)
    }
}

/// Helpers shared by the protocol tests: a xorshift PRNG and a driver
/// that feeds a decoder truncated and mutated inputs.
#[cfg(test)]
pub(crate) mod testutil {
    use alloc::vec::Vec;

    /// xorshift64*.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Every strict prefix of `valid` must fail to decode; `iters` random
    /// mutations must not panic (their result does not matter).
    pub fn hammer<T>(valid: &[u8], iters: usize, seed: u64, decode: impl Fn(&[u8]) -> Result<T, super::XdrError>) {
        assert!(decode(valid).is_ok(), "the unmutated input must decode");
        for n in 0..valid.len() {
            assert!(decode(&valid[..n]).is_err(), "prefix of {n}/{} bytes decoded", valid.len());
        }
        let mut rng = Rng(seed | 1);
        for _ in 0..iters {
            let mut m: Vec<u8> = valid.to_vec();
            for _ in 0..=rng.below(4) {
                match rng.below(6) {
                    0 if !m.is_empty() => {
                        let i = rng.below(m.len());
                        m[i] = rng.next() as u8;
                    }
                    1 if !m.is_empty() => {
                        // Overwrite an aligned word with an extreme value.
                        let i = rng.below(m.len()) & !3;
                        let v = [0u32, 1, 2, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000, 64, 65][rng.below(8)];
                        for (k, b) in v.to_be_bytes().iter().enumerate() {
                            if let Some(x) = m.get_mut(i + k) {
                                *x = *b;
                            }
                        }
                    }
                    2 => {
                        let n = rng.below(m.len() + 1);
                        m.truncate(n);
                    }
                    3 => {
                        for _ in 0..rng.below(9) {
                            m.push(rng.next() as u8);
                        }
                    }
                    4 if !m.is_empty() => {
                        let i = rng.below(m.len());
                        m.remove(i);
                    }
                    _ => {
                        let i = rng.below(m.len() + 1);
                        m.insert(i, rng.next() as u8);
                    }
                }
            }
            let _ = decode(&m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn round_trip_scalars() {
        let mut w = XdrWriter::new();
        w.u32(0xdead_beef).i32(-2).u64(0x0102_0304_0506_0708).i64(-1).bool(true).bool(false);
        let b = w.into_bytes();
        assert_eq!(b.len(), 4 + 4 + 8 + 8 + 4 + 4);
        assert_eq!(&b[..4], &[0xde, 0xad, 0xbe, 0xef]);
        let mut r = XdrReader::new(&b);
        assert_eq!(r.u32("a").unwrap(), 0xdead_beef);
        assert_eq!(r.i32("b").unwrap(), -2);
        assert_eq!(r.u64("c").unwrap(), 0x0102_0304_0506_0708);
        assert_eq!(r.i64("d").unwrap(), -1);
        assert!(r.bool("e").unwrap());
        assert!(!r.bool("f").unwrap());
        assert_eq!(r.remaining(), 0);
        r.finish("all").unwrap();
        assert_eq!(r.u32("g"), Err(XdrError::Truncated { field: "g" }));
    }

    #[test]
    fn round_trip_opaque_string_optional() {
        let mut w = XdrWriter::new();
        w.opaque_var(b"abcde").string("hi").opaque_fixed(b"xyz").optional(Some(7u32), |w, v| {
            w.u32(v);
        });
        w.optional(None::<u32>, |w, v| {
            w.u32(v);
        });
        w.opaque_var(b"");
        let b = w.into_bytes();
        assert_eq!(b.len(), 4 + 8 + 4 + 4 + 4 + 8 + 4 + 4);
        let mut r = XdrReader::new(&b);
        assert_eq!(r.opaque_var(5, "o").unwrap(), b"abcde");
        assert_eq!(r.str(10, "s").unwrap(), "hi");
        assert_eq!(r.opaque_fixed(3, "f").unwrap(), b"xyz");
        assert_eq!(r.optional("p", |r| r.u32("v")).unwrap(), Some(7));
        assert_eq!(r.optional("q", |r| r.u32("v")).unwrap(), None);
        assert_eq!(r.opaque_var(0, "e").unwrap(), b"");
        r.finish("all").unwrap();
    }

    #[test]
    fn rejects_bad_input() {
        let b = [0, 0, 0, 6, b'a', b'b', b'c', b'd', b'e', b'f', 0, 0];
        assert_eq!(XdrReader::new(&b).opaque_var(5, "x"), Err(XdrError::TooLong { field: "x", len: 6, max: 5 }));
        assert_eq!(XdrReader::new(&b[..9]).opaque_var(6, "x"), Err(XdrError::Truncated { field: "x" }));
        let mut bad = b;
        bad[11] = 1;
        assert_eq!(XdrReader::new(&bad).opaque_var(6, "x"), Err(XdrError::BadPadding { field: "x" }));
        assert_eq!(XdrReader::new(&[0, 0, 0, 2]).bool("b"), Err(XdrError::BadBool { field: "b", value: 2 }));
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(XdrReader::new(&huge).opaque_var(u32::MAX, "h").is_err());
        assert!(XdrReader::new(&huge).array_var(u32::MAX, "h", |r| r.u32("e")).is_err());
        let s = [0, 0, 0, 1, 0xff, 0, 0, 0];
        assert_eq!(XdrReader::new(&s).str(4, "s"), Err(XdrError::BadUtf8 { field: "s" }));
        let v = vec![0u8; 4];
        assert_eq!(XdrReader::new(&v[..3]).u32("t"), Err(XdrError::Truncated { field: "t" }));
        assert_eq!(XdrReader::new(&v).finish("z"), Err(XdrError::Trailing { field: "z", extra: 4 }));
    }

    #[test]
    fn display_names_field() {
        let e = XdrError::TooLong { field: "fhandle", len: 99, max: 64 };
        assert_eq!(alloc::format!("{e}"), "xdr: fhandle length 99 exceeds 64");
    }
}
