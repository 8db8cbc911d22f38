//! Boundary values, checked byte for byte: name-value length forms at 127/128, record content at
//! 65535/65536, padding 0/255 and 8-byte alignment, request ids 0 and 65535.

mod common;

use bytes::Bytes;
use common::*;
use fastcgi::nv::{self, NvError, NvParser};
use fastcgi::{
    Decoder, HEADER_LEN, MAX_CONTENT_LEN, Padding, ProtocolStatus, Record, RecordType, Role, encode,
};

// ---------------------------------------------------------------------------------------------
// Name-value length forms (section 3.4)
// ---------------------------------------------------------------------------------------------

#[test]
fn nv_len_127_uses_one_byte() {
    let name = vec![b'n'; 127];
    let value = vec![b'v'; 127];
    let mut out = Vec::new();
    nv::encode_pair(&mut out, &name, &value);
    assert_eq!(out.len(), 2 + 127 + 127);
    assert_eq!(&out[..2], &[0x7f, 0x7f]);
    assert_eq!(&out[2..129], &name[..]);
    assert_eq!(&out[129..], &value[..]);
    assert_eq!(nv::len_size(127), 1);
    assert_eq!(nv::encoded_len(&name, &value), out.len());
    assert_eq!(
        nv::decode_all(&out, out.len()),
        Ok(vec![(Bytes::from(name), Bytes::from(value))])
    );
}

#[test]
fn nv_len_128_uses_four_bytes_with_high_bit() {
    let name = vec![b'n'; 128];
    let value = vec![b'v'; 128];
    let mut out = Vec::new();
    nv::encode_pair(&mut out, &name, &value);
    assert_eq!(out.len(), 8 + 128 + 128);
    assert_eq!(&out[..8], &[0x80, 0x00, 0x00, 0x80, 0x80, 0x00, 0x00, 0x80]);
    assert_eq!(nv::len_size(128), 4);
    assert_eq!(nv::encoded_len(&name, &value), out.len());
    assert_eq!(
        nv::decode_all(&out, out.len()),
        Ok(vec![(Bytes::from(name), Bytes::from(value))])
    );
}

/// The 11/14/41/44 forms of section 3.4: each length picks its form independently.
#[test]
fn nv_mixed_forms() {
    let short = b"SERVER_PORT".to_vec(); // 11
    let long = vec![b'x'; 300]; // 0x12c
    let cases: [(&[u8], &[u8], &[u8]); 4] = [
        (&short, b"80", &[11, 2]),
        (&short, &long, &[11, 0x80, 0x00, 0x01, 0x2c]),
        (&long, &short, &[0x80, 0x00, 0x01, 0x2c, 11]),
        (
            &long,
            &long,
            &[0x80, 0x00, 0x01, 0x2c, 0x80, 0x00, 0x01, 0x2c],
        ),
    ];
    for (name, value, prefix) in cases {
        let mut out = Vec::new();
        nv::encode_pair(&mut out, name, value);
        assert_eq!(&out[..prefix.len()], prefix);
        assert_eq!(out.len(), prefix.len() + name.len() + value.len());
        let got = nv::decode_all(&out, usize::MAX).unwrap();
        assert_eq!(
            got,
            vec![(Bytes::copy_from_slice(name), Bytes::copy_from_slice(value))]
        );
    }
}

#[test]
fn nv_large_lengths() {
    for len in [255usize, 256, 65_535, 65_536, 100_000] {
        let value = pseudo_bytes(len, len as u64);
        let mut out = Vec::new();
        nv::encode_pair(&mut out, b"K", &value);
        let want = (len as u32 | 0x8000_0000).to_be_bytes();
        assert_eq!(out[0], 1);
        assert_eq!(&out[1..5], &want, "length prefix of {len}");
        assert_eq!(out[5], b'K');
        assert_eq!(&out[6..], &value[..]);
        let got = nv::decode_all(&out, usize::MAX).unwrap();
        assert_eq!(got, vec![(Bytes::from_static(b"K"), Bytes::from(value))]);
    }
    // 65536 = 0x00010000.
    let mut out = Vec::new();
    nv::encode_pair(&mut out, &[], &vec![0; 65_536]);
    assert_eq!(&out[..5], &[0, 0x80, 0x01, 0x00, 0x00]);
}

/// The 4-byte form is accepted for small lengths too (the spec does not require the shortest
/// form), and the high bit is masked off.
#[test]
fn nv_four_byte_form_for_small_length_is_accepted() {
    let data = [0x80, 0, 0, 3, 0x80, 0, 0, 0, b'a', b'b', b'c'];
    assert_eq!(
        nv::decode_all(&data, usize::MAX),
        Ok(vec![(Bytes::from_static(b"abc"), Bytes::new())])
    );
}

/// The largest 31-bit length: the parser waits for the data rather than failing or allocating.
#[test]
fn nv_max_31_bit_length_waits_for_data() {
    let mut p = NvParser::new(usize::MAX);
    p.feed(&[0xff, 0xff, 0xff, 0xff, 0x00, b'x']).unwrap();
    assert_eq!(p.next_pair(), None);
    assert_eq!(p.finish(), Err(NvError::Truncated));
}

#[test]
fn nv_empty_name_and_value() {
    let out = nv::encode_pairs(&[(b"", b""), (b"", b"")]);
    assert_eq!(out, [0, 0, 0, 0]);
    assert_eq!(
        nv::decode_all(&out, 4),
        Ok(vec![
            (Bytes::new(), Bytes::new()),
            (Bytes::new(), Bytes::new())
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Record content length (section 3.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn content_65535_is_one_record() {
    let data = pseudo_bytes(MAX_CONTENT_LEN, 7);
    let mut out = Vec::new();
    encode::stream(
        &mut out,
        RecordType::Stdout,
        1,
        &data,
        MAX_CONTENT_LEN,
        Padding::None,
    );
    assert_eq!(out.len(), HEADER_LEN + 65_535);
    assert_eq!(&out[..8], &[1, 6, 0, 1, 0xff, 0xff, 0, 0]);
    assert_eq!(
        decode_ok(&out),
        vec![Record::Stream {
            record_type: RecordType::Stdout,
            request_id: 1,
            content: data.into(),
        }]
    );
}

#[test]
fn content_65536_is_two_records() {
    let data = pseudo_bytes(65_536, 8);
    let mut out = Vec::new();
    // usize::MAX is clamped to the 65535 maximum.
    encode::stream(
        &mut out,
        RecordType::Stdin,
        0x0102,
        &data,
        usize::MAX,
        Padding::None,
    );
    assert_eq!(out.len(), 2 * HEADER_LEN + 65_536);
    assert_eq!(&out[..8], &[1, 5, 1, 2, 0xff, 0xff, 0, 0]);
    let second = HEADER_LEN + 65_535;
    assert_eq!(&out[second..second + 8], &[1, 5, 1, 2, 0, 1, 0, 0]);
    assert_eq!(out[second + 8], data[65_535]);
    assert_eq!(
        decode_ok(&out),
        vec![
            Record::Stream {
                record_type: RecordType::Stdin,
                request_id: 0x0102,
                content: Bytes::copy_from_slice(&data[..65_535]),
            },
            Record::Stream {
                record_type: RecordType::Stdin,
                request_id: 0x0102,
                content: Bytes::copy_from_slice(&data[65_535..]),
            },
        ]
    );
}

#[test]
#[should_panic(expected = "exceeds 65535")]
fn record_rejects_65536_bytes_of_content() {
    let mut out = Vec::new();
    encode::record(&mut out, RecordType::Stdout, 1, &[0; 65_536], Padding::None);
}

#[test]
fn params_with_value_over_65535_spans_records() {
    let value = pseudo_bytes(70_000, 3);
    let mut out = Vec::new();
    encode::params(
        &mut out,
        1,
        &[(b"BIG".as_slice(), value.as_slice())],
        65_535,
    );
    let recs = decode_ok(&out);
    // 1 + 4 + 3 + 70000 = 70008 bytes: one full record and 4473 bytes.
    let lens: Vec<usize> = recs
        .iter()
        .map(|r| match r {
            Record::Stream { content, .. } => content.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(lens, [65_535, 4_473]);
    let mut p = NvParser::new(usize::MAX);
    for r in &recs {
        if let Record::Stream { content, .. } = r {
            p.feed(content).unwrap();
        }
    }
    assert_eq!(
        p.next_pair(),
        Some((Bytes::from_static(b"BIG"), Bytes::from(value)))
    );
    assert_eq!(p.next_pair(), None);
    assert_eq!(p.finish(), Ok(()));
}

/// Two pairs of 60 bytes with a 100-byte maximum go in two records; with 120 in one.
#[test]
fn params_packs_whole_pairs() {
    let v = vec![b'v'; 56]; // 1 + 1 + 2 + 56 = 60 bytes per pair
    let pairs = [
        (b"A1".as_slice(), v.as_slice()),
        (b"A2".as_slice(), v.as_slice()),
    ];
    for (max, want) in [
        (100usize, vec![60usize, 60]),
        (120, vec![120]),
        (119, vec![60, 60]),
    ] {
        let mut out = Vec::new();
        encode::params(&mut out, 9, &pairs, max);
        let lens: Vec<usize> = decode_ok(&out)
            .iter()
            .map(|r| match r {
                Record::Stream {
                    record_type: RecordType::Params,
                    request_id: 9,
                    content,
                } => content.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lens, want, "max {max}");
    }
    // No pairs: no records at all (the caller closes the stream).
    let mut out = Vec::new();
    encode::params::<&[u8], &[u8]>(&mut out, 1, &[], 100);
    assert!(out.is_empty());
}

#[test]
fn stream_of_empty_data_writes_nothing_and_stream_end_writes_empty_record() {
    let mut out = Vec::new();
    encode::stream(&mut out, RecordType::Stdout, 1, &[], 100, Padding::Align8);
    assert!(out.is_empty());
    encode::stream_end(&mut out, RecordType::Stdout, 1);
    assert_eq!(out, [1, 6, 0, 1, 0, 0, 0, 0]);
}

// ---------------------------------------------------------------------------------------------
// Padding (section 3.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn padding_0_and_255() {
    let content = b"hello";
    for (padding, pad) in [
        (Padding::None, 0usize),
        (Padding::Fixed(0), 0),
        (Padding::Fixed(255), 255),
    ] {
        let mut out = Vec::new();
        encode::record(&mut out, RecordType::Stderr, 3, content, padding);
        assert_eq!(&out[..8], &[1, 7, 0, 3, 0, 5, pad as u8, 0]);
        assert_eq!(&out[8..13], content);
        assert_eq!(out.len(), 8 + 5 + pad);
        assert!(out[13..].iter().all(|&b| b == 0));

        // Followed by another record: the padding must be skipped exactly.
        encode::abort_request(&mut out, 3);
        assert_eq!(
            decode_ok(&out),
            vec![
                Record::Stream {
                    record_type: RecordType::Stderr,
                    request_id: 3,
                    content: Bytes::from_static(content),
                },
                Record::AbortRequest { request_id: 3 },
            ]
        );
    }
}

/// Padding bytes are ignored whatever their value (a sender need not zero them).
#[test]
fn nonzero_padding_bytes_are_skipped() {
    let mut data = vec![1, 6, 0, 1, 0, 2, 255, 0, b'o', b'k'];
    data.extend(std::iter::repeat_n(0xaa, 255));
    data.extend_from_slice(&[1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        decode_ok(&data),
        vec![
            Record::Stream {
                record_type: RecordType::Stdout,
                request_id: 1,
                content: Bytes::from_static(b"ok"),
            },
            Record::EndRequest {
                request_id: 1,
                app_status: 0,
                protocol_status: ProtocolStatus::RequestComplete,
            },
        ]
    );
}

#[test]
fn padding_align8() {
    for len in 0..=33usize {
        let content = vec![b'a'; len];
        let mut out = Vec::new();
        encode::record(&mut out, RecordType::Data, 1, &content, Padding::Align8);
        let pad = (8 - len % 8) % 8;
        assert_eq!(out[6] as usize, pad, "len {len}");
        assert_eq!(out.len(), 8 + len + pad);
        assert_eq!(out.len() % 8, 0);
    }
    // Known values.
    let pad_of = |len: usize| {
        let mut out = Vec::new();
        encode::record(
            &mut out,
            RecordType::Data,
            1,
            &vec![0; len],
            Padding::Align8,
        );
        out[6]
    };
    assert_eq!(
        [
            pad_of(0),
            pad_of(1),
            pad_of(7),
            pad_of(8),
            pad_of(9),
            pad_of(65_535)
        ],
        [0, 7, 1, 0, 7, 1]
    );
}

#[test]
fn align8_stream_keeps_every_record_aligned() {
    let data = pseudo_bytes(1000, 1);
    let mut out = Vec::new();
    encode::stream(&mut out, RecordType::Stdout, 2, &data, 333, Padding::Align8);
    // 333, 333, 333, 1 bytes -> padding 3, 3, 3, 7.
    assert_eq!(out.len(), 4 * 8 + 336 * 3 + 8);
    assert_eq!(out.len() % 8, 0);
    let recs = decode_ok(&out);
    assert_eq!(recs.len(), 4);
    let joined: Vec<u8> = recs
        .iter()
        .flat_map(|r| match r {
            Record::Stream { content, .. } => content.to_vec(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(joined, data);
}

// ---------------------------------------------------------------------------------------------
// Fixed bodies and header fields (sections 4.2, 5.1, 5.5, 8)
// ---------------------------------------------------------------------------------------------

#[test]
fn fixed_bodies_exact_bytes() {
    let mut out = Vec::new();
    encode::begin_request(&mut out, 0xffff, Role::Filter, fastcgi::KEEP_CONN);
    assert_eq!(out, [1, 1, 0xff, 0xff, 0, 8, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0]);

    out.clear();
    encode::begin_request(&mut out, 1, Role::Other(0x1234), 0xfe);
    assert_eq!(
        out,
        [1, 1, 0, 1, 0, 8, 0, 0, 0x12, 0x34, 0xfe, 0, 0, 0, 0, 0]
    );

    out.clear();
    encode::end_request(&mut out, 0x0100, 0xdead_beef, ProtocolStatus::Overloaded);
    assert_eq!(
        out,
        [1, 3, 1, 0, 0, 8, 0, 0, 0xde, 0xad, 0xbe, 0xef, 2, 0, 0, 0]
    );

    out.clear();
    encode::abort_request(&mut out, 7);
    assert_eq!(out, [1, 2, 0, 7, 0, 0, 0, 0]);

    out.clear();
    encode::unknown_type(&mut out, 200);
    assert_eq!(out, [1, 11, 0, 0, 0, 8, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0]);

    out.clear();
    encode::get_values(&mut out, &[fastcgi::MAX_CONNS, fastcgi::MPXS_CONNS]);
    let mut want = vec![1, 9, 0, 0, 0, 33, 0, 0, 14, 0];
    want.extend_from_slice(b"FCGI_MAX_CONNS");
    want.extend_from_slice(&[15, 0]);
    want.extend_from_slice(b"FCGI_MPXS_CONNS");
    assert_eq!(out, want);

    out.clear();
    encode::get_values_result(&mut out, &[(fastcgi::MAX_REQS, "10")]);
    let mut want = vec![1, 10, 0, 0, 0, 17, 0, 0, 13, 2];
    want.extend_from_slice(b"FCGI_MAX_REQS10");
    assert_eq!(out, want);
    assert_eq!(
        decode_ok(&out),
        vec![Record::GetValuesResult {
            values: vec![(
                Bytes::from_static(b"FCGI_MAX_REQS"),
                Bytes::from_static(b"10")
            )],
        }]
    );
}

/// Reserved bytes of fixed bodies are ignored on input.
#[test]
fn reserved_bytes_are_ignored() {
    let data = [
        1, 1, 0, 1, 0, 8, 0, 0xee, 0, 2, 0, 9, 9, 9, 9, 9, // BEGIN_REQUEST, junk reserved
        1, 3, 0, 1, 0, 8, 0, 0xee, 0, 0, 0, 1, 3, 9, 9, 9, // END_REQUEST, junk reserved
        1, 11, 0, 0, 0, 8, 0, 0, 42, 9, 9, 9, 9, 9, 9, 9, // UNKNOWN_TYPE, junk reserved
    ];
    assert_eq!(
        decode_ok(&data),
        vec![
            Record::BeginRequest {
                request_id: 1,
                role: Role::Authorizer,
                flags: 0,
            },
            Record::EndRequest {
                request_id: 1,
                app_status: 1,
                protocol_status: ProtocolStatus::UnknownRole,
            },
            Record::UnknownType { unknown_type: 42 },
        ]
    );
}

#[test]
fn section_8_constants() {
    let types = [
        (1u8, RecordType::BeginRequest, "FCGI_BEGIN_REQUEST"),
        (2, RecordType::AbortRequest, "FCGI_ABORT_REQUEST"),
        (3, RecordType::EndRequest, "FCGI_END_REQUEST"),
        (4, RecordType::Params, "FCGI_PARAMS"),
        (5, RecordType::Stdin, "FCGI_STDIN"),
        (6, RecordType::Stdout, "FCGI_STDOUT"),
        (7, RecordType::Stderr, "FCGI_STDERR"),
        (8, RecordType::Data, "FCGI_DATA"),
        (9, RecordType::GetValues, "FCGI_GET_VALUES"),
        (10, RecordType::GetValuesResult, "FCGI_GET_VALUES_RESULT"),
        (11, RecordType::UnknownType, "FCGI_UNKNOWN_TYPE"),
    ];
    for (b, t, name) in types {
        assert_eq!(RecordType::from_u8(b), t);
        assert_eq!(t.as_u8(), b);
        assert_eq!(t.name(), name);
        assert_eq!(t.is_management(), (9..=11).contains(&b), "{name}");
        assert_eq!(t.is_stream(), (4..=8).contains(&b), "{name}");
    }
    for b in (0..=255u8).filter(|b| !(1..=11).contains(b)) {
        let t = RecordType::from_u8(b);
        assert_eq!(t, RecordType::Other(b));
        assert_eq!(t.as_u8(), b);
        assert_eq!(t.name(), format!("type {b}"));
        assert!(!t.is_management() && !t.is_stream());
    }
    for v in 0..=u16::MAX {
        assert_eq!(Role::from_u16(v).as_u16(), v);
    }
    assert_eq!(
        [1, 2, 3, 0].map(Role::from_u16),
        [
            Role::Responder,
            Role::Authorizer,
            Role::Filter,
            Role::Other(0)
        ]
    );
    for b in 0..=255u8 {
        assert_eq!(ProtocolStatus::from_u8(b).as_u8(), b);
    }
    assert_eq!(
        [0, 1, 2, 3, 4].map(ProtocolStatus::from_u8),
        [
            ProtocolStatus::RequestComplete,
            ProtocolStatus::CantMpxConn,
            ProtocolStatus::Overloaded,
            ProtocolStatus::UnknownRole,
            ProtocolStatus::Other(4),
        ]
    );
    assert_eq!(fastcgi::VERSION_1, 1);
    assert_eq!(fastcgi::HEADER_LEN, 8);
    assert_eq!(fastcgi::KEEP_CONN, 1);
    assert_eq!(fastcgi::NULL_REQUEST_ID, 0);
    assert_eq!(fastcgi::MAX_CONNS, "FCGI_MAX_CONNS");
    assert_eq!(fastcgi::MAX_REQS, "FCGI_MAX_REQS");
    assert_eq!(fastcgi::MPXS_CONNS, "FCGI_MPXS_CONNS");
}

#[test]
fn record_accessors() {
    let recs = [
        (
            Record::BeginRequest {
                request_id: 5,
                role: Role::Responder,
                flags: 0,
            },
            RecordType::BeginRequest,
            5,
        ),
        (
            Record::AbortRequest { request_id: 6 },
            RecordType::AbortRequest,
            6,
        ),
        (
            Record::GetValues { names: vec![] },
            RecordType::GetValues,
            0,
        ),
        (
            Record::UnknownType { unknown_type: 99 },
            RecordType::UnknownType,
            0,
        ),
        (
            Record::Unknown {
                record_type: RecordType::Other(77),
                request_id: 8,
                content: Bytes::new(),
            },
            RecordType::Other(77),
            8,
        ),
    ];
    for (r, t, id) in recs {
        assert_eq!(r.record_type(), t);
        assert_eq!(r.request_id(), id);
    }
}

/// Request ids 0 and 65535 survive the header.
#[test]
fn request_id_extremes() {
    for id in [0u16, 1, 0x00ff, 0xff00, 0xffff] {
        let mut out = Vec::new();
        encode::stream_end(&mut out, RecordType::Params, id);
        assert_eq!(&out[2..4], &id.to_be_bytes());
        let mut d = Decoder::default();
        d.feed(&out);
        assert_eq!(
            d.decode(),
            Ok(Some(Record::Stream {
                record_type: RecordType::Params,
                request_id: id,
                content: Bytes::new(),
            }))
        );
    }
}
