//! The four message flows of appendix B ("Typical Protocol Message Flow") of the FastCGI 1.0
//! specification, written out byte by byte by hand from the spec's symbolic notation.
//!
//! Notation of the spec: `{type, requestId, contentData}`; the version and padding are omitted,
//! so the hand-written records use version 1 and no padding. A string ending in `" ... "` is "too
//! long to display, so only a prefix is shown": the records here carry exactly the prefix shown.
//! The PARAMS prefix `"\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42"` is two whole
//! pairs (octal 013 = 11, 002 = 2, 016 = 14).
//!
//! Each example is two byte streams, web server to application and back; each is decoded with
//! its own decoder, and also produced with the crate's encoders and compared byte for byte.

mod common;

use bytes::Bytes;
use common::*;
use fastcgi::nv::NvParser;
use fastcgi::{KEEP_CONN, Limits, Padding, ProtocolStatus, Record, RecordType, Role, encode};

/// `\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42`: 15 + 27 = 42 bytes.
const PARAMS: &[u8] = b"\x0b\x02SERVER_PORT80\x0b\x0eSERVER_ADDR199.170.183.42";
/// `Content-type: text/html\r\n\r\n<html>\n<head>`: 27 + 13 = 40 bytes.
const PAGE: &[u8] = b"Content-type: text/html\r\n\r\n<html>\n<head>";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// Expected records.

fn begin(id: u16, flags: u8) -> Record {
    Record::BeginRequest {
        request_id: id,
        role: Role::Responder,
        flags,
    }
}

fn stream(t: RecordType, id: u16, content: &'static [u8]) -> Record {
    Record::Stream {
        record_type: t,
        request_id: id,
        content: Bytes::from_static(content),
    }
}

fn end(id: u16, app_status: u32) -> Record {
    Record::EndRequest {
        request_id: id,
        app_status,
        protocol_status: ProtocolStatus::RequestComplete,
    }
}

use RecordType::{Params, Stderr, Stdin, Stdout};

/// Checks one direction of an example: hand-written bytes decode to `records`, whole, in every
/// two-piece split and byte by byte; and the encoder output equals the hand-written bytes.
fn check(hand: &[u8], records: &[Record], encoded: &[u8]) {
    assert_eq!(decode_ok(hand), records);
    for cut in 0..=hand.len() {
        let d = decode_chunked(hand, &[cut, usize::MAX], Limits::default());
        assert_eq!(d.error, None, "cut at {cut}");
        assert_eq!(d.records, records, "cut at {cut}");
        assert!(d.at_boundary);
    }
    let d = decode_chunked(hand, &[1], Limits::default());
    assert_eq!(d.records, records, "byte by byte");

    assert_eq!(
        encoded, hand,
        "encoder output differs from the spec's bytes"
    );

    // Re-encoding the decoded records gives the same bytes again.
    let mut again = Vec::new();
    for r in records {
        r.encode(&mut again, Padding::None);
    }
    assert_eq!(again, hand);
}

/// The pairs of the examples' PARAMS stream.
fn params_pairs() -> [(&'static [u8], &'static [u8]); 2] {
    [(b"SERVER_PORT", b"80"), (b"SERVER_ADDR", b"199.170.183.42")]
}

fn check_params_content(contents: &[&[u8]]) {
    let mut p = NvParser::new(Limits::default().max_nv_bytes);
    let mut got = Vec::new();
    for c in contents {
        p.feed(c).unwrap();
        got.extend(std::iter::from_fn(|| p.next_pair()));
    }
    assert_eq!(p.finish(), Ok(()));
    let want: Vec<(Bytes, Bytes)> = params_pairs()
        .iter()
        .map(|(n, v)| (Bytes::from_static(n), Bytes::from_static(v)))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn hand_written_constants_have_the_stated_lengths() {
    assert_eq!(PARAMS.len(), 42);
    assert_eq!(PAGE.len(), 40);
    check_params_content(&[PARAMS]);
}

/// Example 1: a simple request with no data on stdin, and a successful response.
///
/// ```text
/// {FCGI_BEGIN_REQUEST,   1, {FCGI_RESPONDER, 0}}
/// {FCGI_PARAMS,          1, "\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42 ... "}
/// {FCGI_PARAMS,          1, ""}
/// {FCGI_STDIN,           1, ""}
///
///     {FCGI_STDOUT,      1, "Content-type: text/html\r\n\r\n<html>\n<head> ... "}
///     {FCGI_STDOUT,      1, ""}
///     {FCGI_END_REQUEST, 1, {0, FCGI_REQUEST_COMPLETE}}
/// ```
#[test]
fn appendix_b_example_1() {
    let to_app = cat(&[
        &[1, 1, 0, 1, 0, 8, 0, 0],  // FCGI_BEGIN_REQUEST, id 1, 8 bytes
        &[0, 1, 0, 0, 0, 0, 0, 0],  //   role FCGI_RESPONDER, flags 0, reserved
        &[1, 4, 0, 1, 0, 42, 0, 0], // FCGI_PARAMS, id 1, 42 bytes
        PARAMS,
        &[1, 4, 0, 1, 0, 0, 0, 0], // FCGI_PARAMS, id 1, empty
        &[1, 5, 0, 1, 0, 0, 0, 0], // FCGI_STDIN, id 1, empty
    ]);
    let to_ws = cat(&[
        &[1, 6, 0, 1, 0, 40, 0, 0], // FCGI_STDOUT, id 1, 40 bytes
        PAGE,
        &[1, 6, 0, 1, 0, 0, 0, 0], // FCGI_STDOUT, id 1, empty
        &[1, 3, 0, 1, 0, 8, 0, 0], // FCGI_END_REQUEST, id 1, 8 bytes
        &[0, 0, 0, 0, 0, 0, 0, 0], //   appStatus 0, FCGI_REQUEST_COMPLETE, reserved
    ]);

    let mut enc_app = Vec::new();
    encode::begin_request(&mut enc_app, 1, Role::Responder, 0);
    encode::params(&mut enc_app, 1, &params_pairs(), 65_535);
    encode::stream_end(&mut enc_app, Params, 1);
    encode::stream_end(&mut enc_app, Stdin, 1);
    check(
        &to_app,
        &[
            begin(1, 0),
            stream(Params, 1, PARAMS),
            stream(Params, 1, b""),
            stream(Stdin, 1, b""),
        ],
        &enc_app,
    );

    let mut enc_ws = Vec::new();
    encode::stream(&mut enc_ws, Stdout, 1, PAGE, 65_535, Padding::None);
    encode::stream_end(&mut enc_ws, Stdout, 1);
    encode::end_request(&mut enc_ws, 1, 0, ProtocolStatus::RequestComplete);
    check(
        &to_ws,
        &[stream(Stdout, 1, PAGE), stream(Stdout, 1, b""), end(1, 0)],
        &enc_ws,
    );
}

/// Example 2: data on stdin, and the parameters sent in more PARAMS records, cut inside a name.
///
/// ```text
/// {FCGI_BEGIN_REQUEST,   1, {FCGI_RESPONDER, 0}}
/// {FCGI_PARAMS,          1, "\013\002SERVER_PORT80\013\016SER"}
/// {FCGI_PARAMS,          1, "VER_ADDR199.170.183.42 ... "}
/// {FCGI_PARAMS,          1, ""}
/// {FCGI_STDIN,           1, "quantity=100&item=3047936"}
/// {FCGI_STDIN,           1, ""}
///
///     {FCGI_STDOUT,      1, "Content-type: text/html\r\n\r\n<html>\n<head> ... "}
///     {FCGI_STDOUT,      1, ""}
///     {FCGI_END_REQUEST, 1, {0, FCGI_REQUEST_COMPLETE}}
/// ```
#[test]
fn appendix_b_example_2() {
    let params_a: &[u8] = b"\x0b\x02SERVER_PORT80\x0b\x0eSER"; // 20 bytes
    let params_b: &[u8] = b"VER_ADDR199.170.183.42"; // 22 bytes
    let stdin: &[u8] = b"quantity=100&item=3047936"; // 25 bytes
    let to_app = cat(&[
        &[1, 1, 0, 1, 0, 8, 0, 0],
        &[0, 1, 0, 0, 0, 0, 0, 0],
        &[1, 4, 0, 1, 0, 20, 0, 0],
        params_a,
        &[1, 4, 0, 1, 0, 22, 0, 0],
        params_b,
        &[1, 4, 0, 1, 0, 0, 0, 0],
        &[1, 5, 0, 1, 0, 25, 0, 0],
        stdin,
        &[1, 5, 0, 1, 0, 0, 0, 0],
    ]);
    let to_ws = cat(&[
        &[1, 6, 0, 1, 0, 40, 0, 0],
        PAGE,
        &[1, 6, 0, 1, 0, 0, 0, 0],
        &[1, 3, 0, 1, 0, 8, 0, 0],
        &[0, 0, 0, 0, 0, 0, 0, 0],
    ]);

    let mut enc_app = Vec::new();
    encode::begin_request(&mut enc_app, 1, Role::Responder, 0);
    let pairs = fastcgi::nv::encode_pairs(&params_pairs());
    assert_eq!(pairs, PARAMS);
    encode::record(&mut enc_app, Params, 1, &pairs[..20], Padding::None);
    encode::record(&mut enc_app, Params, 1, &pairs[20..], Padding::None);
    encode::stream_end(&mut enc_app, Params, 1);
    encode::stream(&mut enc_app, Stdin, 1, stdin, 65_535, Padding::None);
    encode::stream_end(&mut enc_app, Stdin, 1);
    check(
        &to_app,
        &[
            begin(1, 0),
            stream(Params, 1, b"\x0b\x02SERVER_PORT80\x0b\x0eSER"),
            stream(Params, 1, b"VER_ADDR199.170.183.42"),
            stream(Params, 1, b""),
            stream(Stdin, 1, b"quantity=100&item=3047936"),
            stream(Stdin, 1, b""),
        ],
        &enc_app,
    );

    // The pair cut by the record boundary comes out whole, once its second half arrives.
    let mut p = NvParser::new(1000);
    p.feed(params_a).unwrap();
    assert_eq!(
        p.next_pair(),
        Some((
            Bytes::from_static(b"SERVER_PORT"),
            Bytes::from_static(b"80")
        ))
    );
    assert_eq!(p.next_pair(), None);
    assert_eq!(p.finish(), Err(fastcgi::NvError::Truncated));
    p.feed(params_b).unwrap();
    assert_eq!(
        p.next_pair(),
        Some((
            Bytes::from_static(b"SERVER_ADDR"),
            Bytes::from_static(b"199.170.183.42")
        ))
    );
    assert_eq!(p.finish(), Ok(()));
    check_params_content(&[params_a, params_b]);

    let mut enc_ws = Vec::new();
    encode::stream(&mut enc_ws, Stdout, 1, PAGE, 65_535, Padding::None);
    encode::stream_end(&mut enc_ws, Stdout, 1);
    encode::end_request(&mut enc_ws, 1, 0, ProtocolStatus::RequestComplete);
    check(
        &to_ws,
        &[stream(Stdout, 1, PAGE), stream(Stdout, 1, b""), end(1, 0)],
        &enc_ws,
    );
}

/// Example 3: the application logs to stderr, sends the page in several STDOUT records and
/// exits with a non-zero status.
///
/// ```text
/// {FCGI_BEGIN_REQUEST,   1, {FCGI_RESPONDER, 0}}
/// {FCGI_PARAMS,          1, "\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42 ... "}
/// {FCGI_PARAMS,          1, ""}
/// {FCGI_STDIN,           1, ""}
///
///     {FCGI_STDOUT,      1, "Content-type: text/html\r\n\r\n<ht"}
///     {FCGI_STDERR,      1, "config error: missing SI_UID\n"}
///     {FCGI_STDOUT,      1, "ml>\n<head> ... "}
///     {FCGI_STDOUT,      1, ""}
///     {FCGI_STDERR,      1, ""}
///     {FCGI_END_REQUEST, 1, {938, FCGI_REQUEST_COMPLETE}}
/// ```
#[test]
fn appendix_b_example_3() {
    let to_app = cat(&[
        &[1, 1, 0, 1, 0, 8, 0, 0],
        &[0, 1, 0, 0, 0, 0, 0, 0],
        &[1, 4, 0, 1, 0, 42, 0, 0],
        PARAMS,
        &[1, 4, 0, 1, 0, 0, 0, 0],
        &[1, 5, 0, 1, 0, 0, 0, 0],
    ]);
    let out_a: &[u8] = b"Content-type: text/html\r\n\r\n<ht"; // 30 bytes
    let err: &[u8] = b"config error: missing SI_UID\n"; // 29 bytes
    let out_b: &[u8] = b"ml>\n<head>"; // 10 bytes
    let to_ws = cat(&[
        &[1, 6, 0, 1, 0, 30, 0, 0], // FCGI_STDOUT
        out_a,
        &[1, 7, 0, 1, 0, 29, 0, 0], // FCGI_STDERR
        err,
        &[1, 6, 0, 1, 0, 10, 0, 0], // FCGI_STDOUT
        out_b,
        &[1, 6, 0, 1, 0, 0, 0, 0],       // FCGI_STDOUT, empty
        &[1, 7, 0, 1, 0, 0, 0, 0],       // FCGI_STDERR, empty
        &[1, 3, 0, 1, 0, 8, 0, 0],       // FCGI_END_REQUEST
        &[0, 0, 0x03, 0xaa, 0, 0, 0, 0], //   appStatus 938 = 0x3aa, FCGI_REQUEST_COMPLETE
    ]);

    let mut enc_app = Vec::new();
    encode::begin_request(&mut enc_app, 1, Role::Responder, 0);
    encode::params(&mut enc_app, 1, &params_pairs(), 65_535);
    encode::stream_end(&mut enc_app, Params, 1);
    encode::stream_end(&mut enc_app, Stdin, 1);
    check(
        &to_app,
        &[
            begin(1, 0),
            stream(Params, 1, PARAMS),
            stream(Params, 1, b""),
            stream(Stdin, 1, b""),
        ],
        &enc_app,
    );

    let mut enc_ws = Vec::new();
    encode::stream(&mut enc_ws, Stdout, 1, out_a, 65_535, Padding::None);
    encode::stream(&mut enc_ws, Stderr, 1, err, 65_535, Padding::None);
    encode::stream(&mut enc_ws, Stdout, 1, out_b, 65_535, Padding::None);
    encode::stream_end(&mut enc_ws, Stdout, 1);
    encode::stream_end(&mut enc_ws, Stderr, 1);
    encode::end_request(&mut enc_ws, 1, 938, ProtocolStatus::RequestComplete);
    let records = [
        stream(Stdout, 1, b"Content-type: text/html\r\n\r\n<ht"),
        stream(Stderr, 1, b"config error: missing SI_UID\n"),
        stream(Stdout, 1, b"ml>\n<head>"),
        stream(Stdout, 1, b""),
        stream(Stderr, 1, b""),
        end(1, 938),
    ];
    check(&to_ws, &records, &enc_ws);

    // Stdout reassembles to the page, stderr to the message.
    let collect = |t: RecordType| -> Vec<u8> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Stream {
                    record_type,
                    content,
                    ..
                } if *record_type == t => Some(content.to_vec()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat()
    };
    assert_eq!(collect(Stdout), PAGE);
    assert_eq!(collect(Stderr), err);
}

/// Example 4: two instances of example 1 multiplexed on one connection (request ids 1 and 2,
/// FCGI_KEEP_CONN), finished out of order.
///
/// ```text
/// {FCGI_BEGIN_REQUEST,   1, {FCGI_RESPONDER, FCGI_KEEP_CONN}}
/// {FCGI_PARAMS,          1, "\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42 ... "}
/// {FCGI_PARAMS,          1, ""}
/// {FCGI_BEGIN_REQUEST,   2, {FCGI_RESPONDER, FCGI_KEEP_CONN}}
/// {FCGI_PARAMS,          2, "\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42 ... "}
/// {FCGI_STDIN,           1, ""}
///
///     {FCGI_STDOUT,      1, "Content-type: text/html\r\n\r\n"}
///
/// {FCGI_PARAMS,          2, ""}
/// {FCGI_STDIN,           2, ""}
///
///     {FCGI_STDOUT,      2, "Content-type: text/html\r\n\r\n<html>\n<head> ... "}
///     {FCGI_STDOUT,      2, ""}
///     {FCGI_END_REQUEST, 2, {0, FCGI_REQUEST_COMPLETE}}
///     {FCGI_STDOUT,      1, "<html>\n<head> ... "}
///     {FCGI_STDOUT,      1, ""}
///     {FCGI_END_REQUEST, 1, {0, FCGI_REQUEST_COMPLETE}}
/// ```
#[test]
fn appendix_b_example_4_multiplexed() {
    let to_app = cat(&[
        &[1, 1, 0, 1, 0, 8, 0, 0],  // FCGI_BEGIN_REQUEST, id 1
        &[0, 1, 1, 0, 0, 0, 0, 0],  //   FCGI_RESPONDER, FCGI_KEEP_CONN
        &[1, 4, 0, 1, 0, 42, 0, 0], // FCGI_PARAMS, id 1
        PARAMS,
        &[1, 4, 0, 1, 0, 0, 0, 0],  // FCGI_PARAMS, id 1, empty
        &[1, 1, 0, 2, 0, 8, 0, 0],  // FCGI_BEGIN_REQUEST, id 2
        &[0, 1, 1, 0, 0, 0, 0, 0],  //   FCGI_RESPONDER, FCGI_KEEP_CONN
        &[1, 4, 0, 2, 0, 42, 0, 0], // FCGI_PARAMS, id 2
        PARAMS,
        &[1, 5, 0, 1, 0, 0, 0, 0], // FCGI_STDIN, id 1, empty
        &[1, 4, 0, 2, 0, 0, 0, 0], // FCGI_PARAMS, id 2, empty
        &[1, 5, 0, 2, 0, 0, 0, 0], // FCGI_STDIN, id 2, empty
    ]);
    let head: &[u8] = b"Content-type: text/html\r\n\r\n"; // 27 bytes
    let body: &[u8] = b"<html>\n<head>"; // 13 bytes
    let to_ws = cat(&[
        &[1, 6, 0, 1, 0, 27, 0, 0], // FCGI_STDOUT, id 1
        head,
        &[1, 6, 0, 2, 0, 40, 0, 0], // FCGI_STDOUT, id 2
        PAGE,
        &[1, 6, 0, 2, 0, 0, 0, 0], // FCGI_STDOUT, id 2, empty
        &[1, 3, 0, 2, 0, 8, 0, 0], // FCGI_END_REQUEST, id 2
        &[0, 0, 0, 0, 0, 0, 0, 0],
        &[1, 6, 0, 1, 0, 13, 0, 0], // FCGI_STDOUT, id 1
        body,
        &[1, 6, 0, 1, 0, 0, 0, 0], // FCGI_STDOUT, id 1, empty
        &[1, 3, 0, 1, 0, 8, 0, 0], // FCGI_END_REQUEST, id 1
        &[0, 0, 0, 0, 0, 0, 0, 0],
    ]);

    let mut enc_app = Vec::new();
    encode::begin_request(&mut enc_app, 1, Role::Responder, KEEP_CONN);
    encode::params(&mut enc_app, 1, &params_pairs(), 65_535);
    encode::stream_end(&mut enc_app, Params, 1);
    encode::begin_request(&mut enc_app, 2, Role::Responder, KEEP_CONN);
    encode::params(&mut enc_app, 2, &params_pairs(), 65_535);
    encode::stream_end(&mut enc_app, Stdin, 1);
    encode::stream_end(&mut enc_app, Params, 2);
    encode::stream_end(&mut enc_app, Stdin, 2);
    check(
        &to_app,
        &[
            begin(1, KEEP_CONN),
            stream(Params, 1, PARAMS),
            stream(Params, 1, b""),
            begin(2, KEEP_CONN),
            stream(Params, 2, PARAMS),
            stream(Stdin, 1, b""),
            stream(Params, 2, b""),
            stream(Stdin, 2, b""),
        ],
        &enc_app,
    );

    let mut enc_ws = Vec::new();
    encode::stream(&mut enc_ws, Stdout, 1, head, 65_535, Padding::None);
    encode::stream(&mut enc_ws, Stdout, 2, PAGE, 65_535, Padding::None);
    encode::stream_end(&mut enc_ws, Stdout, 2);
    encode::end_request(&mut enc_ws, 2, 0, ProtocolStatus::RequestComplete);
    encode::stream(&mut enc_ws, Stdout, 1, body, 65_535, Padding::None);
    encode::stream_end(&mut enc_ws, Stdout, 1);
    encode::end_request(&mut enc_ws, 1, 0, ProtocolStatus::RequestComplete);
    let records = [
        stream(Stdout, 1, b"Content-type: text/html\r\n\r\n"),
        stream(Stdout, 2, PAGE),
        stream(Stdout, 2, b""),
        end(2, 0),
        stream(Stdout, 1, b"<html>\n<head>"),
        stream(Stdout, 1, b""),
        end(1, 0),
    ];
    check(&to_ws, &records, &enc_ws);

    // Demultiplexed by request id, both requests get the same page; request 2 ends first.
    let decoded = decode_ok(&to_ws);
    let page_of = |id: u16| -> Vec<u8> {
        decoded
            .iter()
            .filter(|r| r.request_id() == id)
            .filter_map(|r| match r {
                Record::Stream { content, .. } => Some(content.to_vec()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat()
    };
    assert_eq!(page_of(1), PAGE);
    assert_eq!(page_of(2), PAGE);
    let end_order: Vec<u16> = decoded
        .iter()
        .filter(|r| r.record_type() == RecordType::EndRequest)
        .map(Record::request_id)
        .collect();
    assert_eq!(end_order, [2, 1]);
}

/// The notation example of section 3.3, `{FCGI_END_REQUEST, 1, {FCGI_REQUEST_COMPLETE,0}}`,
/// with the body written in END_REQUEST's field order.
#[test]
fn section_3_3_end_request() {
    let bytes = [1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(decode_ok(&bytes), [end(1, 0)]);
}
