//! HTTP/2 frames written byte by byte (RFC 9113 4.1) with header blocks of HPACK literal fields
//! (RFC 7541 6.2.2): for clients that send what no HTTP/2 library would (upper-case names,
//! connection-specific fields, misplaced pseudo-header fields, CR/LF/NUL in values).

/// The client connection preface (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame: the 9-byte header and the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = Vec::with_capacity(9 + n);
    f.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags]);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1), `flags` in the bits above it.
pub fn integer(out: &mut Vec<u8>, n: u32, flags: u8, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman coding: names and
/// values reach the server byte for byte, whatever they hold.
pub fn literal_block<'a>(fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in fields {
        b.push(0);
        integer(&mut b, 7, 0, name.len());
        b.extend_from_slice(name);
        integer(&mut b, 7, 0, value.len());
        b.extend_from_slice(value);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_use_the_prefix_then_seven_bit_groups() {
        // RFC 7541 C.1.1 and C.1.2.
        let mut v = Vec::new();
        integer(&mut v, 5, 0, 10);
        assert_eq!(v, [10]);
        let mut v = Vec::new();
        integer(&mut v, 5, 0, 1337);
        assert_eq!(v, [31, 154, 10]);
        let mut v = Vec::new();
        integer(&mut v, 7, 0, 127);
        assert_eq!(v, [127, 0]);
    }

    #[test]
    fn literal_fields_keep_their_bytes() {
        let b = literal_block([(&b"X-Up"[..], &b"a\0b"[..])]);
        assert_eq!(b, b"\x00\x04X-Up\x03a\0b");
        let long = vec![b'v'; 300];
        let b = literal_block([(&b"n"[..], &long[..])]);
        assert_eq!(&b[..5], b"\x00\x01n\x7f\xad");
        assert_eq!(b.len(), 5 + 1 + 300);
    }

    #[test]
    fn frames_have_the_nine_byte_header() {
        assert_eq!(
            frame(0x3, 0, 3, &8u32.to_be_bytes()),
            [0, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 8]
        );
    }
}
