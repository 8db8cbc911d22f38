//! Helpers and proptest strategies shared by the integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use fastcgi::{DecodeError, Decoder, Limits, Padding, ProtocolStatus, Record, RecordType, Role};
use proptest::prelude::*;

/// Deterministic pseudo-random bytes (xorshift64*), so large payloads cost one strategy draw
/// instead of one per byte.
pub fn pseudo_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Result of feeding a byte stream to a decoder in chunks.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub records: Vec<Record>,
    pub error: Option<DecodeError>,
    /// `Decoder::is_at_boundary` after the last chunk (meaningless if `error` is set).
    pub at_boundary: bool,
}

/// Feeds `stream` in chunks whose sizes cycle through `sizes` (0 is read as 1), draining the
/// decoder after every chunk. Stops at the first error.
pub fn decode_chunked(stream: &[u8], sizes: &[usize], limits: Limits) -> Decoded {
    let mut dec = Decoder::new(limits);
    let mut records = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    loop {
        loop {
            match dec.decode() {
                Ok(Some(r)) => records.push(r),
                Ok(None) => break,
                Err(e) => {
                    return Decoded {
                        records,
                        error: Some(e),
                        at_boundary: dec.is_at_boundary(),
                    };
                }
            }
        }
        if pos == stream.len() {
            break;
        }
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(usize::MAX)
            .max(1)
            .min(stream.len() - pos);
        dec.feed(&stream[pos..pos + n]);
        pos += n;
        i += 1;
    }
    Decoded {
        records,
        error: None,
        at_boundary: dec.is_at_boundary(),
    }
}

/// Feeds the whole stream at once.
pub fn decode_whole(stream: &[u8]) -> Decoded {
    decode_chunked(stream, &[usize::MAX], Limits::default())
}

/// Decodes a stream that must be valid and complete.
pub fn decode_ok(stream: &[u8]) -> Vec<Record> {
    let d = decode_whole(stream);
    assert_eq!(d.error, None, "unexpected decode error");
    assert!(d.at_boundary, "stream ends inside a record");
    d.records
}

/// A name-value pair as owned bytes.
pub type Pair = (Vec<u8>, Vec<u8>);

/// An independent reference parser for name-value pairs (spec section 3.4): the complete pairs
/// at the front of `data` and how many bytes they take.
pub fn reference_nv(data: &[u8]) -> (Vec<Pair>, usize) {
    fn len_at(data: &[u8], pos: usize) -> Option<(usize, usize)> {
        let b0 = *data.get(pos)?;
        if b0 < 0x80 {
            Some((b0 as usize, pos + 1))
        } else {
            let b = data.get(pos..pos + 4)?;
            let n = ((b[0] as usize & 0x7f) << 24)
                | ((b[1] as usize) << 16)
                | ((b[2] as usize) << 8)
                | b[3] as usize;
            Some((n, pos + 4))
        }
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some((nl, p)) = len_at(data, pos) {
        let Some((vl, p)) = len_at(data, p) else {
            break;
        };
        if data.len() - p < nl + vl {
            break;
        }
        out.push((data[p..p + nl].to_vec(), data[p + nl..p + nl + vl].to_vec()));
        pos = p + nl + vl;
    }
    (out, pos)
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

pub fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        Just(Padding::None),
        Just(Padding::Align8),
        Just(Padding::Fixed(0)),
        Just(Padding::Fixed(255)),
        any::<u8>().prop_map(Padding::Fixed),
    ]
}

/// Record content: mostly small, sometimes up to the 65535 maximum.
pub fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..=64),
        3 => prop::collection::vec(any::<u8>(), 0..=1024),
        1 => (0..=65535usize, any::<u64>()).prop_map(|(n, s)| pseudo_bytes(n, s)),
        1 => (65500..=65535usize, any::<u64>()).prop_map(|(n, s)| pseudo_bytes(n, s)),
    ]
}

/// A name or value length for name-value pairs, weighted towards the 1-byte/4-byte boundary.
pub fn nv_len(large: bool) -> BoxedStrategy<usize> {
    let small = prop_oneof![
        4 => 0..=16usize,
        4 => 120..=136usize,
        1 => Just(127usize),
        1 => Just(128usize),
        2 => 137..=600usize,
    ];
    if large {
        prop_oneof![
            8 => small,
            1 => 60_000..=140_000usize,
        ]
        .boxed()
    } else {
        small.boxed()
    }
}

pub fn nv_bytes(large: bool) -> impl Strategy<Value = Vec<u8>> {
    (nv_len(large), any::<u64>()).prop_map(|(n, s)| pseudo_bytes(n, s))
}

pub fn nv_pairs(max: usize, large: bool) -> impl Strategy<Value = Vec<Pair>> {
    prop::collection::vec((nv_bytes(large), nv_bytes(large)), 0..=max)
}

fn to_bytes_pairs(pairs: Vec<Pair>) -> Vec<(Bytes, Bytes)> {
    pairs
        .into_iter()
        .map(|(n, v)| (Bytes::from(n), Bytes::from(v)))
        .collect()
}

pub fn stream_type() -> impl Strategy<Value = RecordType> {
    prop_oneof![
        Just(RecordType::Params),
        Just(RecordType::Stdin),
        Just(RecordType::Stdout),
        Just(RecordType::Stderr),
        Just(RecordType::Data),
    ]
}

/// Type bytes with no meaning in FastCGI 1.0 (section 8 defines 1..=11).
pub fn other_type() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0u8), Just(12u8), Just(255u8), 12u8..=255]
}

pub fn request_id() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), Just(1u16), Just(u16::MAX), any::<u16>()]
}

/// Records that decode as `Record::Unknown`: unknown type values, and known fixed-size types
/// whose body has the wrong size.
pub fn unknown_record() -> impl Strategy<Value = Record> {
    let fixed8 = prop_oneof![
        Just(RecordType::BeginRequest),
        Just(RecordType::EndRequest),
        Just(RecordType::UnknownType),
    ];
    prop_oneof![
        (other_type(), request_id(), content()).prop_map(|(t, request_id, c)| {
            Record::Unknown {
                record_type: RecordType::from_u8(t),
                request_id,
                content: c.into(),
            }
        }),
        (
            fixed8,
            request_id(),
            prop::collection::vec(any::<u8>(), 0..=20).prop_filter("not 8 bytes", |c| c.len() != 8)
        )
            .prop_map(|(t, request_id, c)| Record::Unknown {
                record_type: t,
                request_id,
                content: c.into(),
            }),
        (request_id(), prop::collection::vec(any::<u8>(), 1..=20)).prop_map(|(request_id, c)| {
            Record::Unknown {
                record_type: RecordType::AbortRequest,
                request_id,
                content: c.into(),
            }
        }),
    ]
}

/// Any record, in the canonical form the decoder produces (so that decode(encode(r)) == r).
pub fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        1 => (request_id(), any::<u16>(), any::<u8>()).prop_map(|(request_id, role, flags)| {
            Record::BeginRequest {
                request_id,
                role: Role::from_u16(role),
                flags,
            }
        }),
        1 => request_id().prop_map(|request_id| Record::AbortRequest { request_id }),
        1 => (request_id(), any::<u32>(), any::<u8>()).prop_map(|(request_id, app_status, ps)| {
            Record::EndRequest {
                request_id,
                app_status,
                protocol_status: ProtocolStatus::from_u8(ps),
            }
        }),
        3 => (stream_type(), request_id(), content()).prop_map(|(t, request_id, c)| {
            Record::Stream {
                record_type: t,
                request_id,
                content: c.into(),
            }
        }),
        1 => nv_pairs(8, false).prop_map(|p| Record::GetValues {
            names: to_bytes_pairs(p)
        }),
        1 => nv_pairs(8, false).prop_map(|p| Record::GetValuesResult {
            values: to_bytes_pairs(p)
        }),
        1 => any::<u8>().prop_map(|unknown_type| Record::UnknownType { unknown_type }),
        2 => unknown_record(),
    ]
}

/// Content length a record takes on the wire.
pub fn wire_content_len(r: &Record) -> usize {
    let mut out = Vec::new();
    r.encode(&mut out, Padding::None);
    out.len() - fastcgi::HEADER_LEN
}
