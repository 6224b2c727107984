//! XDR (RFC 4506) as libvirt's RPC protocol uses it: big-endian 4-byte units, strings
//! and variable-length arrays after a length word, everything padded to 4 bytes.
//! [`Writer`] appends to a buffer; [`Reader`] walks a received message without copying
//! (strings are borrowed from it) and fails cleanly on a short or malformed one.

use thiserror::Error;

/// A received message that does not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum XdrError {
    #[error("the message ends early: {needed} more bytes needed at offset {at}")]
    Short { at: usize, needed: usize },
    #[error("{what} at offset {at} is {value}, at most {max} allowed")]
    TooLong {
        at: usize,
        what: &'static str,
        value: usize,
        max: usize,
    },
}

/// Bytes of padding after `len` bytes of data.
fn pad(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Appends XDR values to a buffer.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer that goes on at the end of `buf`.
    pub fn onto(buf: Vec<u8>) -> Self {
        Self { buf }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Overwrites the 4 bytes at `at` (a length word written before its message).
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        if let Some(slot) = self.buf.get_mut(at..at + 4) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Fixed-length opaque data (`opaque x[N]`), padded.
    pub fn fixed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(self.buf.len() + pad(bytes.len()), 0);
    }

    /// A string (`string<>`): length, bytes, padding.
    pub fn string(&mut self, s: &str) {
        self.u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
        self.fixed(s.as_bytes());
    }

    /// An optional string (`string *`): a presence word, then the string.
    pub fn opt_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u32(1);
                self.string(s);
            }
            None => self.u32(0),
        }
    }
}

/// Reads XDR values from a received message.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes, consumed.
    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let bytes = self
            .buf
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or(XdrError::Short {
                at: self.pos,
                needed: n - self.remaining().min(n),
            })?;
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], XdrError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u32(&mut self) -> Result<u32, XdrError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32, XdrError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// `unsigned hyper`.
    pub fn u64(&mut self) -> Result<u64, XdrError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// `hyper`.
    pub fn i64(&mut self) -> Result<i64, XdrError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub fn f64(&mut self) -> Result<f64, XdrError> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    /// Fixed-length opaque data of `N` bytes, padding skipped.
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], XdrError> {
        let out = self.array::<N>()?;
        self.take(pad(N))?;
        Ok(out)
    }

    /// A variable-length array's element count, at most `max` (what the protocol allows)
    /// and at most what the rest of the message could hold at `min_size` bytes each, so
    /// a corrupt count never reserves memory it cannot fill.
    pub fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_size: usize,
    ) -> Result<usize, XdrError> {
        let at = self.pos;
        let n = self.u32()? as usize;
        let fits = self.remaining() / min_size.max(1);
        if n > max || n > fits {
            return Err(XdrError::TooLong {
                at,
                what,
                value: n,
                max: max.min(fits),
            });
        }
        Ok(n)
    }

    /// A string's bytes (`string<>`), padding skipped.
    pub fn bytes(&mut self) -> Result<&'a [u8], XdrError> {
        let at = self.pos;
        let n = self.u32()? as usize;
        if n > self.remaining() {
            return Err(XdrError::Short {
                at,
                needed: n - self.remaining(),
            });
        }
        let bytes = self.take(n)?;
        self.take(pad(n))?;
        Ok(bytes)
    }

    /// An optional value's presence word (`T *`).
    pub fn present(&mut self) -> Result<bool, XdrError> {
        Ok(self.u32()? != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_big_endian_and_padded_to_four_bytes() {
        let mut w = Writer::default();
        w.u32(0x2000_8086);
        w.i32(-2);
        w.string("abcde");
        w.opt_string(None);
        w.opt_string(Some(""));
        w.fixed(&[9; 16]);
        let bytes = w.into_bytes();
        let mut want = vec![0x20, 0x00, 0x80, 0x86, 0xff, 0xff, 0xff, 0xfe];
        want.extend_from_slice(&[0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        want.extend_from_slice(&[9; 16]);
        assert_eq!(bytes, want);

        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32(), Ok(0x2000_8086));
        assert_eq!(r.i32(), Ok(-2));
        assert_eq!(r.bytes(), Ok(&b"abcde"[..]));
        assert_eq!(r.present(), Ok(false));
        assert_eq!(r.present(), Ok(true));
        assert_eq!(r.bytes(), Ok(&b""[..]));
        assert_eq!(r.fixed::<16>(), Ok([9; 16]));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn hypers_and_doubles_take_eight_bytes() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(-5i64).to_be_bytes());
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        bytes.extend_from_slice(&1.5f64.to_be_bytes());
        let mut r = Reader::new(&bytes);
        assert_eq!(r.i64(), Ok(-5));
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.f64(), Ok(1.5));
    }

    #[test]
    fn a_short_or_lying_message_is_an_error_not_a_panic() {
        assert_eq!(
            Reader::new(&[0, 0]).u32(),
            Err(XdrError::Short { at: 0, needed: 2 })
        );
        // A string claiming more bytes than the message has.
        let mut r = Reader::new(&[0, 0, 1, 0, b'x', 0, 0, 0]);
        assert!(matches!(r.bytes(), Err(XdrError::Short { at: 0, .. })));
        // A string whose padding is missing.
        assert!(Reader::new(&[0, 0, 0, 1, b'x']).bytes().is_err());
        // An array count beyond the protocol's limit, and beyond what the rest holds.
        let mut r = Reader::new(&[0, 0, 0, 9, 0, 0, 0, 0]);
        assert!(matches!(
            r.count("params", 8, 4),
            Err(XdrError::TooLong { value: 9, .. })
        ));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert!(matches!(
            r.count("records", usize::MAX, 4),
            Err(XdrError::TooLong { max: 1, .. })
        ));
    }
}
