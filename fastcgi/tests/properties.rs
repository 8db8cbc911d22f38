//! Property tests: record and name-value round trips, split invariance of the decoder,
//! robustness against arbitrary input, and the splitting done by `encode::stream`/`params`.

mod common;

use bytes::Bytes;
use common::*;
use fastcgi::nv::{self, NvError, NvParser};
use fastcgi::{Decoder, HEADER_LEN, Limits, MAX_CONTENT_LEN, Padding, Record, RecordType, encode};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Checks the framing of one encoded record (header fields, padding rule, zero padding bytes)
/// and returns its content length.
fn check_framing(bytes: &[u8], padding: Padding) -> usize {
    assert_eq!(bytes[0], 1, "version");
    assert_eq!(bytes[7], 0, "reserved");
    let len = u16::from_be_bytes([bytes[4], bytes[5]]) as usize;
    let pad = bytes[6] as usize;
    assert_eq!(bytes.len(), HEADER_LEN + len + pad);
    match padding {
        Padding::None => assert_eq!(pad, 0),
        Padding::Align8 => {
            assert!(pad < 8);
            assert_eq!((len + pad) % 8, 0);
        }
        Padding::Fixed(n) => assert_eq!(pad, n as usize),
    }
    assert!(bytes[HEADER_LEN + len..].iter().all(|&b| b == 0));
    len
}

proptest! {
    #![proptest_config(config(512))]

    /// decode(encode(r)) == r for every record type, with any padding.
    #[test]
    fn record_roundtrip(rec in record(), padding in padding()) {
        let mut out = Vec::new();
        rec.encode(&mut out, padding);
        let len = check_framing(&out, padding);
        prop_assert_eq!(out[1], rec.record_type().as_u8());
        prop_assert_eq!(u16::from_be_bytes([out[2], out[3]]), rec.request_id());
        prop_assert_eq!(len, wire_content_len(&rec));

        let mut dec = Decoder::default();
        dec.feed(&out);
        prop_assert_eq!(dec.decode(), Ok(Some(rec)));
        prop_assert_eq!(dec.decode(), Ok(None));
        prop_assert!(dec.is_at_boundary());
        prop_assert_eq!(dec.buffered(), 0);
    }

    /// The header survives parse/to_bytes for every field value.
    #[test]
    fn header_roundtrip(mut b in any::<[u8; 8]>()) {
        b[7] = 0;
        let h = fastcgi::Header::parse(&b);
        prop_assert_eq!(h.to_bytes(), b);
        prop_assert_eq!(h.version, b[0]);
        prop_assert_eq!(h.record_type.as_u8(), b[1]);
        prop_assert_eq!(h.request_id, u16::from_be_bytes([b[2], b[3]]));
        prop_assert_eq!(h.content_length, u16::from_be_bytes([b[4], b[5]]));
        prop_assert_eq!(h.padding_length, b[6]);
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// The same byte stream gives the same records however it is cut: all at once, in arbitrary
    /// chunks, and one byte at a time.
    #[test]
    fn decoder_split_invariance(
        recs in prop::collection::vec((record(), padding()), 0..10),
        sizes in prop::collection::vec(1..=300usize, 1..20),
    ) {
        let mut stream = Vec::new();
        for (r, p) in &recs {
            r.encode(&mut stream, *p);
        }
        let expected: Vec<Record> = recs.into_iter().map(|(r, _)| r).collect();

        let whole = decode_whole(&stream);
        prop_assert_eq!(&whole.records, &expected);
        prop_assert_eq!(&whole.error, &None);
        prop_assert!(whole.at_boundary);

        let chunked = decode_chunked(&stream, &sizes, Limits::default());
        prop_assert_eq!(&chunked, &whole);

        let bytewise = decode_chunked(&stream, &[1], Limits::default());
        prop_assert_eq!(&bytewise, &whole);
    }

    /// A truncated stream yields exactly the records that are complete, and the decoder reports
    /// it is inside a record.
    #[test]
    fn decoder_truncated_stream(
        recs in prop::collection::vec((record(), padding()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for (r, p) in &recs {
            r.encode(&mut stream, *p);
            ends.push(stream.len());
        }
        let cut = cut.index(stream.len() + 1);
        let d = decode_chunked(&stream[..cut], &[7, 1, 4096], Limits::default());
        let complete = ends.iter().filter(|&&e| e <= cut).count();
        prop_assert_eq!(d.error, None);
        prop_assert_eq!(d.records.len(), complete);
        for (got, (want, _)) in d.records.iter().zip(&recs) {
            prop_assert_eq!(got, want);
        }
        prop_assert_eq!(d.at_boundary, cut == 0 || ends.contains(&cut));
    }
}

/// Header-shaped garbage: version 1 (mostly), any type, small declared lengths, and content
/// whose real length may disagree with the header.
fn structured_garbage() -> impl Strategy<Value = Vec<u8>> {
    let fragment = (
        prop_oneof![20 => Just(1u8), 1 => any::<u8>()],
        0u8..=13,
        any::<u16>(),
        0u16..=40,
        prop_oneof![Just(0u8), 0u8..=9],
        prop::collection::vec(any::<u8>(), 0..=48),
    )
        .prop_map(|(v, t, id, len, pad, body)| {
            let id = id.to_be_bytes();
            let len = len.to_be_bytes();
            let mut f = vec![v, t, id[0], id[1], len[0], len[1], pad, 0];
            f.extend_from_slice(&body);
            f
        });
    prop::collection::vec(fragment, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bytes never panic the decoder, and its output (records and the error, if any)
    /// does not depend on how the bytes are cut.
    #[test]
    fn decoder_arbitrary_bytes(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            structured_garbage(),
        ],
        sizes in prop::collection::vec(1..=64usize, 1..8),
        max_nv in prop_oneof![Just(usize::MAX), 0..64usize],
    ) {
        let limits = Limits { max_nv_bytes: max_nv };
        let whole = decode_chunked(&data, &[usize::MAX], limits);
        let chunked = decode_chunked(&data, &sizes, limits);
        let bytewise = decode_chunked(&data, &[1], limits);
        prop_assert_eq!(&chunked.records, &whole.records);
        prop_assert_eq!(&chunked.error, &whole.error);
        prop_assert_eq!(&bytewise.records, &whole.records);
        prop_assert_eq!(&bytewise.error, &whole.error);
        if whole.error.is_none() {
            prop_assert_eq!(chunked.at_boundary, whole.at_boundary);
            prop_assert_eq!(bytewise.at_boundary, whole.at_boundary);
        }
    }

    /// Arbitrary bytes never panic the name-value parser, and it agrees with an independent
    /// reference parser and with its own limit, however the bytes are cut.
    #[test]
    fn nv_parser_arbitrary_bytes(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            // Mostly small lengths, so that complete pairs actually occur.
            prop::collection::vec(prop_oneof![4 => 0u8..8, 1 => any::<u8>()], 0..256),
        ],
        sizes in prop::collection::vec(1..=32usize, 1..8),
        limit in prop_oneof![Just(usize::MAX), 0..300usize],
    ) {
        let mut p = NvParser::new(limit);
        let mut pairs = Vec::new();
        let mut accepted = 0;
        let mut failed = false;
        let mut pos = 0;
        let mut i = 0;
        while pos < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - pos);
            let res = p.feed(&data[pos..pos + n]);
            if pos + n <= limit {
                prop_assert_eq!(res, Ok(()));
                prop_assert!(!failed);
                accepted = pos + n;
            } else {
                prop_assert_eq!(res, Err(NvError::TooLarge { limit }));
                failed = true;
            }
            while let Some((name, value)) = p.next_pair() {
                pairs.push((name.to_vec(), value.to_vec()));
            }
            pos += n;
            i += 1;
        }
        prop_assert_eq!(p.bytes_fed(), data.len());
        let (want, used) = reference_nv(&data[..accepted]);
        prop_assert_eq!(&pairs, &want);
        let finished = p.finish();
        if used == accepted {
            prop_assert_eq!(finished, Ok(()));
        } else {
            prop_assert_eq!(finished, Err(NvError::Truncated));
        }

        let all = nv::decode_all(&data, limit);
        if data.len() > limit {
            prop_assert_eq!(all, Err(NvError::TooLarge { limit }));
        } else if used == data.len() {
            let all: Vec<Pair> =
                all.unwrap().into_iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(all, want);
        } else {
            prop_assert_eq!(all, Err(NvError::Truncated));
        }
    }
}

/// Checks the length prefix at `pos` and returns the position after it.
fn check_len_prefix(bytes: &[u8], pos: usize, len: usize) -> usize {
    if len <= 127 {
        assert_eq!(bytes[pos] as usize, len);
        pos + 1
    } else {
        let want = (len as u32 | 0x8000_0000).to_be_bytes();
        assert_eq!(&bytes[pos..pos + 4], &want);
        pos + 4
    }
}

proptest! {
    #![proptest_config(config(96))]

    /// Pairs of any length (around 127/128 and beyond 65535) encode with the right length forms
    /// and decode back, whole or cut anywhere.
    #[test]
    fn nv_roundtrip(
        pairs in nv_pairs(6, true),
        sizes in prop::collection::vec(1..=70_000usize, 1..6),
    ) {
        let enc = nv::encode_pairs(&pairs);
        let total: usize = pairs.iter().map(|(n, v)| nv::encoded_len(n, v)).sum();
        prop_assert_eq!(enc.len(), total);

        let mut pos = 0;
        for (n, v) in &pairs {
            pos = check_len_prefix(&enc, pos, n.len());
            pos = check_len_prefix(&enc, pos, v.len());
            prop_assert_eq!(&enc[pos..pos + n.len()], &n[..]);
            pos += n.len();
            prop_assert_eq!(&enc[pos..pos + v.len()], &v[..]);
            pos += v.len();
        }
        prop_assert_eq!(pos, enc.len());

        let want: Vec<(Bytes, Bytes)> = pairs
            .iter()
            .map(|(n, v)| (Bytes::from(n.clone()), Bytes::from(v.clone())))
            .collect();
        prop_assert_eq!(nv::decode_all(&enc, enc.len()), Ok(want.clone()));

        let mut p = NvParser::new(usize::MAX);
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < enc.len() {
            let n = sizes[i % sizes.len()].min(enc.len() - pos);
            p.feed(&enc[pos..pos + n]).unwrap();
            got.extend(std::iter::from_fn(|| p.next_pair()));
            pos += n;
            i += 1;
        }
        prop_assert_eq!(p.finish(), Ok(()));
        prop_assert_eq!(got, want);
    }

    /// `encode::stream` cuts data into records of at most `max_record` (clamped to 1..=65535)
    /// bytes, all full except the last, which reassemble to the data.
    #[test]
    fn stream_splitting(
        (len, max_record) in prop_oneof![
            // Small data: any maximum, including 0 (clamped to 1) and huge (clamped to 65535).
            (0..=300usize, prop_oneof![Just(0usize), 1..=100usize, 60_000..=70_000usize, Just(usize::MAX)]),
            // Data around and beyond one record: maxima that give a handful of records.
            (
                prop_oneof![65_530..=65_540usize, 65_535..=200_000usize],
                prop_oneof![Just(usize::MAX), Just(65_535usize), 20_000..=70_000usize],
            ),
        ],
        seed in any::<u64>(),
        record_type in stream_type(),
        id in request_id(),
        padding in padding(),
    ) {
        let data = pseudo_bytes(len, seed);
        let mut out = Vec::new();
        encode::stream(&mut out, record_type, id, &data, max_record, padding);
        let max = max_record.clamp(1, MAX_CONTENT_LEN);

        // Check each record's framing on the raw bytes.
        let mut pos = 0;
        let mut sizes = Vec::new();
        while pos < out.len() {
            let len = u16::from_be_bytes([out[pos + 4], out[pos + 5]]) as usize;
            let end = pos + HEADER_LEN + len + out[pos + 6] as usize;
            check_framing(&out[pos..end], padding);
            sizes.push(len);
            pos = end;
        }
        prop_assert_eq!(sizes.len(), len.div_ceil(max));

        let recs = decode_ok(&out);
        let mut joined = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            let Record::Stream { record_type: t, request_id, content } = r else {
                panic!("not a stream record: {r:?}");
            };
            prop_assert_eq!(*t, record_type);
            prop_assert_eq!(*request_id, id);
            prop_assert!(!content.is_empty());
            if i + 1 < recs.len() {
                prop_assert_eq!(content.len(), max);
            } else {
                prop_assert!(content.len() <= max);
            }
            joined.extend_from_slice(content);
        }
        prop_assert_eq!(joined, data);
    }

    /// `encode::params` packs whole pairs into records of at most `max_record` bytes, starts a
    /// new record only when the next pair does not fit, splits only pairs larger than the
    /// maximum, and the records reassemble to the pairs.
    #[test]
    fn params_splitting(
        pairs in nv_pairs(8, true),
        max_record in prop_oneof![Just(0usize), 1..=40usize, 100..=1000usize, 60_000..=70_000usize],
        id in request_id(),
    ) {
        let mut out = Vec::new();
        encode::params(&mut out, id, &pairs, max_record);
        let max = max_record.clamp(1, MAX_CONTENT_LEN);

        let recs = decode_ok(&out);
        let mut contents = Vec::new();
        for r in &recs {
            let Record::Stream { record_type, request_id, content } = r else {
                panic!("not a stream record: {r:?}");
            };
            prop_assert_eq!(*record_type, RecordType::Params);
            prop_assert_eq!(*request_id, id);
            prop_assert!(!content.is_empty(), "params must not close the stream");
            prop_assert!(content.len() <= max);
            contents.push(content.clone());
        }
        let joined: Vec<u8> = contents.concat();
        prop_assert_eq!(&joined, &nv::encode_pairs(&pairs));

        // Pair boundaries (offsets in the joined stream) and sizes.
        let mut starts = Vec::new();
        let mut off = 0;
        for (n, v) in &pairs {
            starts.push(off);
            off += nv::encoded_len(n, v);
        }
        let sizes: Vec<usize> = pairs.iter().map(|(n, v)| nv::encoded_len(n, v)).collect();

        let mut rec_start = 0;
        for c in &contents {
            let rec_end = rec_start + c.len();
            // A cut inside a pair is only allowed when that pair is larger than the maximum.
            if rec_end < joined.len() {
                match starts.binary_search(&rec_end) {
                    Ok(_) => {}
                    Err(k) => {
                        let pair = k - 1;
                        prop_assert!(sizes[pair] > max,
                            "pair {} of {} bytes split although max is {}", pair, sizes[pair], max);
                    }
                }
            }
            // A record of whole pairs ends only when the next pair does not fit.
            if let (Ok(_), Ok(next)) = (starts.binary_search(&rec_start), starts.binary_search(&rec_end)) {
                prop_assert!(c.len() + sizes[next] > max,
                    "record of {} bytes closed although the next pair ({} bytes) fits in {}",
                    c.len(), sizes[next], max);
            }
            rec_start = rec_end;
        }

        let mut p = NvParser::new(usize::MAX);
        let mut got = Vec::new();
        for c in &contents {
            p.feed(c).unwrap();
            got.extend(std::iter::from_fn(|| p.next_pair()));
        }
        prop_assert_eq!(p.finish(), Ok(()));
        let got: Vec<Pair> = got.into_iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(got, pairs);
    }
}
