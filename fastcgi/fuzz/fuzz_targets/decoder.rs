//! The FastCGI decoder and the name-value parser on arbitrary bytes, split arbitrarily.
//!
//! Input layout: byte 0 = number of split points (mod 16), then two bytes per split point (an
//! offset into the stream, taken modulo its length), then the stream itself.
//!
//! Checked:
//! - decoding the stream whole and decoding it fed in chunks give the same records, the same
//!   fatal error and the same leftover;
//! - after a drain the decoder holds less than one maximal record (its memory bound);
//! - a failed decoder stays failed and drops further input;
//! - every decoded record encodes back to a record that decodes to itself;
//! - `NvParser` fed whole or in the same chunks gives the same pairs and the same verdict, and
//!   never accepts more than its limit.
#![no_main]

use fastcgi::{Decoder, HEADER_LEN, MAX_CONTENT_LEN, NvParser, Padding, Record};
use libfuzzer_sys::fuzz_target;

/// One record at most: header, content and padding.
const MAX_RECORD: usize = HEADER_LEN + MAX_CONTENT_LEN + 255;

#[derive(Debug, PartialEq)]
struct Run {
    records: Vec<Record>,
    error: Option<fastcgi::DecodeError>,
    buffered: usize,
}

fn split_input(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = (n % 16) as usize;
    let take = (2 * n).min(rest.len());
    let (raw, stream) = rest.split_at(take);
    let mut cuts: Vec<usize> = raw
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as usize)
        .map(|o| {
            if stream.is_empty() {
                0
            } else {
                o % (stream.len() + 1)
            }
        })
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    (cuts, stream)
}

fn chunks<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        out.push(&stream[at..c]);
        at = c;
    }
    out.push(&stream[at..]);
    out
}

fn decode(parts: &[&[u8]]) -> Run {
    let mut d = Decoder::default();
    let mut records = Vec::new();
    let mut error = None;
    for part in parts {
        d.feed(part);
        loop {
            match d.decode() {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {
                    assert!(
                        d.buffered() < MAX_RECORD,
                        "decoder holds {} bytes after a drain",
                        d.buffered()
                    );
                    break;
                }
                Err(e) => {
                    // Failed for good: more input is dropped and the error repeats.
                    let before = d.buffered();
                    d.feed(&[1; 64]);
                    assert_eq!(d.buffered(), before);
                    assert_eq!(d.decode().err(), Some(e.clone()));
                    assert_eq!(d.error(), Some(&e));
                    error = Some(e);
                    break;
                }
            }
        }
        if error.is_some() {
            break;
        }
    }
    Run {
        records,
        error,
        buffered: d.buffered(),
    }
}

fn roundtrip(rec: &Record) {
    let mut out = Vec::new();
    rec.encode(&mut out, Padding::Align8);
    let mut d = Decoder::default();
    d.feed(&out);
    assert_eq!(
        d.decode().as_ref(),
        Ok(&Some(rec.clone())),
        "re-encoded {out:?}"
    );
    assert!(d.is_at_boundary());
}

fn nv(
    parts: &[&[u8]],
    limit: usize,
) -> Result<Vec<(bytes::Bytes, bytes::Bytes)>, fastcgi::NvError> {
    let mut p = NvParser::new(limit);
    let mut pairs = Vec::new();
    for part in parts {
        p.feed(part)?;
        assert!(p.bytes_fed() <= limit);
        while let Some(pair) = p.next_pair() {
            pairs.push(pair);
        }
    }
    p.finish()?;
    Ok(pairs)
}

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = split_input(data);
    let parts = chunks(stream, &cuts);

    let whole = decode(&[stream]);
    let split = decode(&parts);
    // After an error the chunked run stops feeding, so the leftover may differ; the records and
    // the error may not.
    assert_eq!(whole.records, split.records);
    assert_eq!(whole.error, split.error);
    if whole.error.is_none() {
        assert_eq!(whole.buffered, split.buffered);
    }
    for rec in &whole.records {
        roundtrip(rec);
    }

    // The same bytes as a PARAMS stream, with a limit derived from the input.
    let limit = stream.len().saturating_sub(cuts.len());
    let a = nv(&[stream], limit);
    let b = nv(&parts, limit);
    assert_eq!(a, b);
    if let Ok(pairs) = &a {
        // Re-encoding the pairs and parsing them again gives them back.
        let enc = fastcgi::nv::encode_pairs(pairs);
        assert_eq!(fastcgi::nv::decode_all(&enc, enc.len()).as_ref(), Ok(pairs));
    }
});
