//! What the decoder and the name-value parser refuse, and what they report without refusing.

mod common;

use bytes::Bytes;
use common::*;
use fastcgi::nv::{self, NvError, NvParser};
use fastcgi::{DecodeError, Decoder, Limits, Padding, Record, RecordType, encode};

fn end_request_bytes(id: u16) -> Vec<u8> {
    let mut out = Vec::new();
    encode::end_request(&mut out, id, 0, fastcgi::ProtocolStatus::RequestComplete);
    out
}

// ---------------------------------------------------------------------------------------------
// Version
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_version_is_fatal_and_sticky() {
    for version in [0u8, 2, 0x7f, 0xff] {
        let mut bytes = end_request_bytes(1);
        bytes[0] = version;
        let mut d = Decoder::default();
        d.feed(&bytes);
        let want = DecodeError::BadVersion { version };
        assert_eq!(d.decode(), Err(want.clone()));
        // The decoder stays failed, even when valid records follow.
        d.feed(&end_request_bytes(1));
        assert_eq!(d.decode(), Err(want.clone()));
        assert_eq!(d.decode(), Err(want.clone()));
        let mut fresh = Decoder::default();
        fresh.feed(&end_request_bytes(1));
        assert!(matches!(
            fresh.decode(),
            Ok(Some(Record::EndRequest { .. }))
        ));
    }
}

/// The version byte alone is enough to reject a stream: no need to wait for the whole header.
#[test]
fn bad_version_detected_from_first_byte() {
    let mut d = Decoder::default();
    assert_eq!(d.decode(), Ok(None));
    d.feed(&[2]);
    assert_eq!(d.decode(), Err(DecodeError::BadVersion { version: 2 }));

    // Version 1 on its own waits for more.
    let mut d = Decoder::default();
    d.feed(&[1, 6, 0]);
    assert_eq!(d.decode(), Ok(None));
    assert_eq!(d.buffered(), 3);
    assert!(!d.is_at_boundary());
}

/// Records before the bad one are delivered; the bad one fails the decoder.
#[test]
fn bad_version_after_good_records() {
    let mut bytes = end_request_bytes(1);
    let mut bad = end_request_bytes(2);
    bad[0] = 0;
    bytes.extend_from_slice(&bad);
    bytes.extend_from_slice(&end_request_bytes(3));
    for sizes in [&[usize::MAX][..], &[1], &[5, 3]] {
        let d = decode_chunked(&bytes, sizes, Limits::default());
        assert_eq!(d.records.len(), 1, "{sizes:?}");
        assert_eq!(d.records[0].request_id(), 1);
        assert_eq!(d.error, Some(DecodeError::BadVersion { version: 0 }));
    }
}

/// Junk after a padded record is seen as a bad version: padding is skipped exactly, no more.
#[test]
fn padding_is_not_over_skipped() {
    let mut bytes = Vec::new();
    encode::record(&mut bytes, RecordType::Stdout, 1, b"x", Padding::Fixed(3));
    bytes.push(9);
    let d = decode_whole(&bytes);
    assert_eq!(d.records.len(), 1);
    assert_eq!(d.error, Some(DecodeError::BadVersion { version: 9 }));
}

// ---------------------------------------------------------------------------------------------
// GET_VALUES / GET_VALUES_RESULT bodies
// ---------------------------------------------------------------------------------------------

fn get_values_with_body(t: RecordType, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode::record(&mut out, t, 0, body, Padding::None);
    out
}

#[test]
fn get_values_over_limit_is_rejected() {
    let body = nv::encode_pairs(&[("FCGI_MAX_CONNS", ""), ("FCGI_MAX_REQS", "")]); // 31 bytes
    assert_eq!(body.len(), 31);
    for t in [RecordType::GetValues, RecordType::GetValuesResult] {
        let bytes = get_values_with_body(t, &body);

        // Exactly at the limit: accepted.
        let mut d = Decoder::new(Limits { max_nv_bytes: 31 });
        d.feed(&bytes);
        let rec = d.decode().unwrap().unwrap();
        assert_eq!(rec.record_type(), t);

        // One byte over: rejected, and the decoder stays failed.
        let mut d = Decoder::new(Limits { max_nv_bytes: 30 });
        d.feed(&bytes);
        let want = DecodeError::BadNameValues(NvError::TooLarge { limit: 30 });
        assert_eq!(d.decode(), Err(want.clone()));
        d.feed(&end_request_bytes(1));
        assert_eq!(d.decode(), Err(want));
    }
}

#[test]
fn get_values_default_limit_accepts_the_largest_record() {
    assert_eq!(Limits::default().max_nv_bytes, 65_535);
    // One pair filling a whole record: 4 + 1 + 65403 + 127 = 65535 bytes.
    let pairs = [(vec![b'n'; 65_403], vec![b'v'; 127])];
    let body = nv::encode_pairs(&pairs);
    assert_eq!(body.len(), 65_535);
    let bytes = get_values_with_body(RecordType::GetValues, &body);
    assert_eq!(
        decode_ok(&bytes),
        vec![Record::GetValues {
            names: vec![(
                Bytes::from(pairs[0].0.clone()),
                Bytes::from(pairs[0].1.clone())
            )],
        }]
    );
}

#[test]
fn get_values_truncated_body_is_rejected() {
    let cases: [&[u8]; 4] = [
        &[5],                      // name length only
        &[0x80, 0, 1],             // inside a 4-byte length
        &[3, 0, b'a', b'b'],       // name cut short
        &[1, 0, b'a', 1, 1, b'b'], // second pair cut short
    ];
    for body in cases {
        let d = decode_whole(&get_values_with_body(RecordType::GetValues, body));
        assert_eq!(
            d.error,
            Some(DecodeError::BadNameValues(NvError::Truncated)),
            "{body:?}"
        );
        assert!(d.records.is_empty());
    }
}

#[test]
fn get_values_empty_body_and_names() {
    let mut bytes = get_values_with_body(RecordType::GetValues, &[]);
    encode::get_values(
        &mut bytes,
        &[fastcgi::MAX_CONNS, fastcgi::MAX_REQS, fastcgi::MPXS_CONNS],
    );
    let recs = decode_ok(&bytes);
    assert_eq!(recs[0], Record::GetValues { names: vec![] });
    let Record::GetValues { names } = &recs[1] else {
        panic!("{:?}", recs[1]);
    };
    let names: Vec<&[u8]> = names.iter().map(|(n, _)| n.as_ref()).collect();
    assert_eq!(
        names,
        [&b"FCGI_MAX_CONNS"[..], b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"]
    );
}

// ---------------------------------------------------------------------------------------------
// Unknown types and wrong body sizes: reported, not fatal
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_types_are_reported() {
    for t in [0u8, 12, 13, 100, 255] {
        let mut bytes = Vec::new();
        encode::record(
            &mut bytes,
            RecordType::Other(t),
            0x0203,
            b"abc",
            Padding::Fixed(5),
        );
        bytes.extend_from_slice(&end_request_bytes(1));
        let recs = decode_ok(&bytes);
        assert_eq!(
            recs[0],
            Record::Unknown {
                record_type: RecordType::Other(t),
                request_id: 0x0203,
                content: Bytes::from_static(b"abc"),
            }
        );
        // Decoding carries on.
        assert_eq!(recs[1].record_type(), RecordType::EndRequest);
    }
}

#[test]
fn wrong_body_sizes_are_reported_as_unknown() {
    let cases: [(RecordType, &[u8]); 8] = [
        (RecordType::BeginRequest, &[0, 1, 0, 0, 0, 0, 0]), // 7 bytes
        (RecordType::BeginRequest, &[0, 1, 0, 0, 0, 0, 0, 0, 0]), // 9 bytes
        (RecordType::BeginRequest, &[]),
        (RecordType::EndRequest, &[0, 0, 0, 0, 0, 0, 0]),
        (RecordType::EndRequest, &[0; 16]),
        (RecordType::AbortRequest, &[0]),
        (RecordType::UnknownType, &[7]),
        (RecordType::UnknownType, &[7, 0, 0, 0, 0, 0, 0, 0, 0]),
    ];
    for (t, body) in cases {
        let mut bytes = Vec::new();
        encode::record(&mut bytes, t, 1, body, Padding::None);
        bytes.extend_from_slice(&end_request_bytes(1));
        let recs = decode_ok(&bytes);
        assert_eq!(
            recs[0],
            Record::Unknown {
                record_type: t,
                request_id: 1,
                content: Bytes::copy_from_slice(body),
            },
            "{t:?} with {} bytes",
            body.len()
        );
        assert_eq!(recs[1].record_type(), RecordType::EndRequest);
    }
}

#[test]
fn decode_error_messages() {
    assert_eq!(
        DecodeError::BadVersion { version: 3 }.to_string(),
        "unsupported FastCGI version 3 (expected 1)"
    );
    assert_eq!(
        DecodeError::BadNameValues(NvError::TooLarge { limit: 10 }).to_string(),
        "bad name-value body: name-value data exceeds the limit of 10 bytes"
    );
    assert_eq!(
        NvError::Truncated.to_string(),
        "name-value stream ends inside a pair"
    );
}

// ---------------------------------------------------------------------------------------------
// NvParser
// ---------------------------------------------------------------------------------------------

#[test]
fn nv_parser_limit() {
    let data = nv::encode_pairs(&[("A", "1"), ("B", "2")]); // 8 bytes
    let mut p = NvParser::new(8);
    p.feed(&data[..5]).unwrap();
    p.feed(&data[5..]).unwrap();
    assert_eq!(p.bytes_fed(), 8);
    assert_eq!(p.next_pair().unwrap().0, Bytes::from_static(b"A"));
    assert_eq!(p.next_pair().unwrap().0, Bytes::from_static(b"B"));
    assert_eq!(p.finish(), Ok(()));

    // One byte more than the limit: the chunk is refused, and so is everything after it.
    let mut p = NvParser::new(7);
    p.feed(&data[..4]).unwrap();
    assert_eq!(p.feed(&data[4..]), Err(NvError::TooLarge { limit: 7 }));
    assert_eq!(p.feed(&[]), Err(NvError::TooLarge { limit: 7 }));
    assert_eq!(p.feed(&[0]), Err(NvError::TooLarge { limit: 7 }));
    // The accepted pair is still there; the refused bytes were not buffered.
    assert_eq!(
        p.next_pair(),
        Some((Bytes::from_static(b"A"), Bytes::from_static(b"1")))
    );
    assert_eq!(p.next_pair(), None);
    assert_eq!(p.finish(), Ok(()));

    assert_eq!(
        nv::decode_all(&data, 7),
        Err(NvError::TooLarge { limit: 7 })
    );
    assert_eq!(nv::decode_all(&data, 8).map(|v| v.len()), Ok(2));

    // A zero limit accepts only an empty stream.
    let mut p = NvParser::new(0);
    assert_eq!(p.feed(&[]), Ok(()));
    assert_eq!(p.finish(), Ok(()));
    assert_eq!(p.feed(&[0]), Err(NvError::TooLarge { limit: 0 }));
}

#[test]
fn nv_parser_truncation() {
    let data = nv::encode_pairs(&[(&b"NAME"[..], &[b'v'; 200][..])]); // 1 + 4 + 4 + 200
    assert_eq!(data.len(), 209);
    // Every proper prefix is a truncated pair; the whole is fine.
    for cut in 1..data.len() {
        let mut p = NvParser::new(usize::MAX);
        p.feed(&data[..cut]).unwrap();
        assert_eq!(p.next_pair(), None, "cut {cut}");
        assert_eq!(p.finish(), Err(NvError::Truncated), "cut {cut}");
        assert_eq!(
            nv::decode_all(&data[..cut], usize::MAX),
            Err(NvError::Truncated)
        );
        // The rest completes it.
        p.feed(&data[cut..]).unwrap();
        let (n, v) = p.next_pair().unwrap();
        assert_eq!((n.len(), v.len()), (4, 200));
        assert_eq!(p.finish(), Ok(()));
    }
    let mut p = NvParser::new(usize::MAX);
    assert_eq!(p.finish(), Ok(()));
    assert_eq!(p.next_pair(), None);
}
