//! Name-value pairs (section 3.4): lengths of 0..=127 take one byte, longer ones four bytes with
//! the high bit set (a 31-bit length). A PARAMS stream is a concatenation of pairs that may be cut
//! anywhere by record boundaries, hence the streaming [`NvParser`].

use bytes::{Buf, Bytes, BytesMut};

/// Largest length the 4-byte form can express.
pub const MAX_LEN: usize = 0x7fff_ffff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvError {
    /// The stream holds more bytes than the configured limit.
    TooLarge { limit: usize },
    /// The stream ended in the middle of a pair.
    Truncated,
}

impl std::fmt::Display for NvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NvError::TooLarge { limit } => {
                write!(f, "name-value data exceeds the limit of {limit} bytes")
            }
            NvError::Truncated => write!(f, "name-value stream ends inside a pair"),
        }
    }
}

impl std::error::Error for NvError {}

/// Bytes needed to encode a length.
pub fn len_size(len: usize) -> usize {
    if len <= 127 { 1 } else { 4 }
}

/// Encoded size of one pair.
pub fn encoded_len(name: &[u8], value: &[u8]) -> usize {
    len_size(name.len()) + len_size(value.len()) + name.len() + value.len()
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    assert!(len <= MAX_LEN, "name-value length {len} exceeds 2^31-1");
    if len <= 127 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// Appends one encoded pair.
///
/// # Panics
/// If a length exceeds 2^31-1, which no caller can reach with in-memory data of sane size.
pub fn encode_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    encode_pair_sized(out, name, value, encoded_len(name, value));
}

/// [`encode_pair`] with its [`encoded_len`] already known (a PARAMS writer computes it to
/// place the pair): a request writes some 25 pairs, where the lengths counted twice showed.
#[inline]
pub(crate) fn encode_pair_sized(out: &mut Vec<u8>, name: &[u8], value: &[u8], encoded: usize) {
    out.reserve(encoded);
    if name.len() <= 127 && value.len() <= 127 {
        out.push(name.len() as u8);
        out.push(value.len() as u8);
    } else {
        put_len(out, name.len());
        put_len(out, value.len());
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// Encodes pairs back to back.
pub fn encode_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in pairs {
        encode_pair(&mut out, n.as_ref(), v.as_ref());
    }
    out
}

/// Decodes a complete buffer of pairs (the body of a GET_VALUES record, or a whole PARAMS stream).
pub fn decode_all(data: &[u8], limit: usize) -> Result<Vec<(Bytes, Bytes)>, NvError> {
    decode_shared(&Bytes::copy_from_slice(data), limit)
}

/// [`decode_all`] over bytes already shared: names and values are slices of `data`, nothing
/// is copied.
pub fn decode_shared(data: &Bytes, limit: usize) -> Result<Vec<(Bytes, Bytes)>, NvError> {
    if data.len() > limit {
        return Err(NvError::TooLarge { limit });
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let (lens, nlen, vlen) = pair_at(&data[at..]).ok_or(NvError::Truncated)?;
        let name_at = at + lens;
        out.push((
            data.slice(name_at..name_at + nlen),
            data.slice(name_at + nlen..name_at + nlen + vlen),
        ));
        at = name_at + nlen + vlen;
    }
    Ok(out)
}

/// The pair at the start of `buf`, if `buf` holds all of it: the size of its two length
/// fields, then the name's and the value's lengths.
fn pair_at(buf: &[u8]) -> Option<(usize, usize, usize)> {
    let (nlen, a) = peek_len(buf)?;
    let (vlen, b) = peek_len(&buf[a..])?;
    let total = a.checked_add(b)?.checked_add(nlen)?.checked_add(vlen)?;
    (buf.len() >= total).then_some((a + b, nlen, vlen))
}

/// A length field (1 byte below 128, else 4 with the top bit set) and its size.
fn peek_len(buf: &[u8]) -> Option<(usize, usize)> {
    let first = *buf.first()?;
    if first & 0x80 == 0 {
        Some((first as usize, 1))
    } else if buf.len() >= 4 {
        let v = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) & 0x7fff_ffff;
        Some((v as usize, 4))
    } else {
        None
    }
}

/// Streaming parser for a name-value stream. Feed it chunks in any split; take pairs out as they
/// complete. The total fed is bounded by `limit`, so a hostile peer cannot make it grow without
/// bound.
#[derive(Debug)]
pub struct NvParser {
    buf: BytesMut,
    fed: usize,
    limit: usize,
}

impl NvParser {
    pub fn new(limit: usize) -> Self {
        NvParser {
            buf: BytesMut::new(),
            fed: 0,
            limit,
        }
    }

    /// Total bytes fed so far.
    pub fn bytes_fed(&self) -> usize {
        self.fed
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), NvError> {
        self.fed = self.fed.saturating_add(chunk.len());
        if self.fed > self.limit {
            return Err(NvError::TooLarge { limit: self.limit });
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The next complete pair, if the buffered bytes hold one.
    pub fn next_pair(&mut self) -> Option<(Bytes, Bytes)> {
        let (lens, nlen, vlen) = pair_at(&self.buf)?;
        self.buf.advance(lens);
        let name = self.buf.split_to(nlen).freeze();
        let value = self.buf.split_to(vlen).freeze();
        Some((name, value))
    }

    /// Call at the end of the stream: leftover bytes mean a truncated pair.
    pub fn finish(&self) -> Result<(), NvError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(NvError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_len_forms() {
        assert_eq!(peek_len(&[]), None);
        assert_eq!(peek_len(&[0]), Some((0, 1)));
        assert_eq!(peek_len(&[127, 0xff]), Some((127, 1)));
        // The 4-byte form needs all four bytes.
        assert_eq!(peek_len(&[0x80]), None);
        assert_eq!(peek_len(&[0x80, 0, 0]), None);
        assert_eq!(peek_len(&[0x80, 0, 0, 0x80]), Some((128, 4)));
        assert_eq!(peek_len(&[0x81, 2, 3, 4]), Some((0x0102_0304, 4)));
        assert_eq!(peek_len(&[0xff, 0xff, 0xff, 0xff]), Some((MAX_LEN, 4)));
    }

    #[test]
    fn put_len_forms() {
        let enc = |n| {
            let mut v = Vec::new();
            put_len(&mut v, n);
            v
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [127]);
        assert_eq!(enc(128), [0x80, 0, 0, 0x80]);
        assert_eq!(enc(65_536), [0x80, 1, 0, 0]);
        assert_eq!(enc(MAX_LEN), [0xff, 0xff, 0xff, 0xff]);
        assert_eq!(len_size(0), 1);
        assert_eq!(len_size(127), 1);
        assert_eq!(len_size(128), 4);
        assert_eq!(len_size(MAX_LEN), 4);
    }

    #[test]
    #[should_panic(expected = "exceeds 2^31-1")]
    fn put_len_rejects_more_than_31_bits() {
        put_len(&mut Vec::new(), MAX_LEN + 1);
    }
}
