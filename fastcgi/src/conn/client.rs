//! The web server's side of a connection: one request at a time under one request id.
//!
//! Sending: [`Client::begin`] (or [`encode_preamble`] once and [`Client::start`] per attempt)
//! writes BEGIN_REQUEST, the PARAMS stream and its empty record; the request body goes out as
//! STDIN records whose headers [`Client::stdin_headers`] makes while the content stays in the
//! caller's buffers ([`gathered`] lays both out for one gathered write), or, for a body that is
//! still arriving, through a [`StdinEncoder`]. Receiving: [`Client::feed`] what was read, then
//! [`Client::next_event`] until it returns `Ok(None)`.
//!
//! What is an error is what a proxy cannot recover from on this connection: bytes that do not
//! decode, a record for another request id, bytes after END_REQUEST, the peer closing before it.
//! Everything else is tolerated, as web servers do: records of unknown type or of the wrong
//! direction and management records other than GET_VALUES_RESULT are reported as
//! [`ClientEvent::Ignored`], and output after the empty STDOUT record is still output.

use std::io::IoSlice;

use bytes::Bytes;

use crate::decode::{DecodeError, Decoder};
use crate::encode::{self, ParamsWriter};
use crate::record::{Header, ProtocolStatus, Record, RecordType, Role};
use crate::{HEADER_LEN, KEEP_CONN, MAX_CONTENT_LEN, NULL_REQUEST_ID, VERSION_1};

/// Apache packs whole pairs into PARAMS records of at most this many bytes
/// (docs/reference/apache.md section 4.1); [`Client::begin`] does the same.
pub const PARAMS_RECORD_MAX: usize = 16384;

/// What arrived for the request (or the connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A non-empty STDOUT record's content.
    Stdout(Bytes),
    /// The empty STDOUT record.
    StdoutEnd,
    /// A non-empty STDERR record's content.
    Stderr(Bytes),
    /// The empty STDERR record.
    StderrEnd,
    /// END_REQUEST: the request is over. Nothing more is read after it.
    End {
        app_status: u32,
        protocol_status: ProtocolStatus,
    },
    /// FCGI_GET_VALUES_RESULT (a management record).
    GetValuesResult(Vec<(Bytes, Bytes)>),
    /// A record that carries no part of the response: another management record, or a record
    /// of a type an application does not send, for this request.
    Ignored(Record),
}

/// A fatal error: the connection cannot be trusted any more and should be closed. The machine
/// stays failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The bytes do not decode (bad version, bad GET_VALUES_RESULT body).
    Decode(DecodeError),
    /// A record for a request id that is neither this request's nor 0 (or for a request while
    /// none runs).
    WrongRequestId {
        record_type: RecordType,
        request_id: u16,
        expected: u16,
    },
    /// Bytes arrived after END_REQUEST (`bytes` of them so far).
    DataAfterEnd { bytes: usize },
    /// The peer closed the connection before END_REQUEST; `buffered` bytes of an unfinished
    /// record were left.
    ClosedBeforeEnd { buffered: usize },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Decode(e) => e.fmt(f),
            ClientError::WrongRequestId {
                record_type,
                request_id,
                expected,
            } => write!(
                f,
                "{} for request id {request_id} (expected {expected})",
                record_type.name()
            ),
            ClientError::DataAfterEnd { bytes } => {
                write!(f, "{bytes} bytes after FCGI_END_REQUEST")
            }
            ClientError::ClosedBeforeEnd { buffered: 0 } => {
                write!(f, "connection closed before FCGI_END_REQUEST")
            }
            ClientError::ClosedBeforeEnd { buffered } => write!(
                f,
                "connection closed before FCGI_END_REQUEST, inside a record ({buffered} bytes)"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No request sent yet.
    Idle,
    /// Request sent (at least begun); waiting for END_REQUEST.
    Running,
    /// END_REQUEST arrived.
    Ended,
    Failed(ClientError),
}

/// The client state machine. See the module documentation.
#[derive(Debug)]
pub struct Client {
    request_id: u16,
    decoder: Decoder,
    state: State,
    keep_conn: bool,
    /// The empty STDIN record was produced (or the caller said it was sent).
    stdin_closed: bool,
}

/// BEGIN_REQUEST (FCGI_KEEP_CONN set when `keep_conn`), the PARAMS records `pairs` writes
/// (whole pairs packed into records of at most [`PARAMS_RECORD_MAX`] bytes) and the empty PARAMS
/// record, appended to `out`. The result depends on no connection, so it can be encoded once and
/// sent on several connections, each announced with [`Client::start`].
pub fn encode_preamble<E>(
    out: &mut Vec<u8>,
    request_id: u16,
    role: Role,
    keep_conn: bool,
    pairs: impl FnOnce(&mut ParamsWriter<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let flags = if keep_conn { KEEP_CONN } else { 0 };
    encode::begin_request(out, request_id, role, flags);
    let mut writer = ParamsWriter::new(out, request_id, PARAMS_RECORD_MAX);
    pairs(&mut writer)?;
    writer.finish();
    encode::stream_end(out, RecordType::Params, request_id);
    Ok(())
}

/// The slices of one gathered write: `preamble`, then each STDIN record's header beside its
/// piece of the body (pieces over 65535 bytes span several records), then the empty STDIN
/// record. `headers` come from [`Client::stdin_headers`] over the same pieces.
pub fn gathered<'a, I>(
    preamble: &'a [u8],
    pieces: I,
    headers: &'a [[u8; HEADER_LEN]],
) -> Vec<IoSlice<'a>>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut slices = Vec::with_capacity(2 * headers.len() + 1);
    slices.push(IoSlice::new(preamble));
    for (h, record) in headers.iter().zip(records(pieces)) {
        slices.push(IoSlice::new(h));
        slices.push(IoSlice::new(record));
    }
    if let Some(end) = headers.last() {
        slices.push(IoSlice::new(end));
    }
    slices
}

/// Record-sized pieces of the body: no record carries more than 65535 bytes.
fn records<'a, I: IntoIterator<Item = &'a [u8]>>(pieces: I) -> impl Iterator<Item = &'a [u8]> {
    pieces.into_iter().flat_map(|p| p.chunks(MAX_CONTENT_LEN))
}

/// STDIN record headers for a body sent while it arrives: it needs no access to the [`Client`],
/// so a body can be written while the response is being read. When the empty record has been
/// sent, tell the client with [`Client::stdin_sent`].
#[derive(Debug, Clone, Copy)]
pub struct StdinEncoder {
    request_id: u16,
}

impl StdinEncoder {
    /// The header of a STDIN record of `len` content bytes (at most 65535; 0 ends the stream).
    pub fn header(&self, len: usize) -> [u8; HEADER_LEN] {
        debug_assert!(len <= MAX_CONTENT_LEN, "STDIN record of {len} bytes");
        Header {
            version: VERSION_1,
            record_type: RecordType::Stdin,
            request_id: self.request_id,
            content_length: len as u16,
            padding_length: 0,
        }
        .to_bytes()
    }

    /// The headers of the STDIN records carrying `data` (none for empty data, which would end
    /// the stream), each with its piece of `data`.
    pub fn records<'a>(
        &self,
        data: &'a [u8],
    ) -> impl Iterator<Item = ([u8; HEADER_LEN], &'a [u8])> {
        let e = *self;
        data.chunks(MAX_CONTENT_LEN)
            .map(move |c| (e.header(c.len()), c))
    }

    /// The empty STDIN record that ends the body.
    pub fn end(&self) -> [u8; HEADER_LEN] {
        self.header(0)
    }
}

impl Client {
    /// A client for requests under `request_id` (1 for one request at a time, as Apache and
    /// nginx use it).
    pub fn new(request_id: u16) -> Client {
        Client {
            request_id,
            decoder: Decoder::default(),
            state: State::Idle,
            keep_conn: false,
            stdin_closed: false,
        }
    }

    pub fn request_id(&self) -> u16 {
        self.request_id
    }

    /// Begins a request: appends its preamble (see [`encode_preamble`]) to `out`.
    pub fn begin<E>(
        &mut self,
        out: &mut Vec<u8>,
        role: Role,
        keep_conn: bool,
        pairs: impl FnOnce(&mut ParamsWriter<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        encode_preamble(out, self.request_id, role, keep_conn, pairs)?;
        self.start(keep_conn);
        Ok(())
    }

    /// Begins a request whose preamble was made by [`encode_preamble`] with this request id and
    /// `keep_conn`. Start a request only on a fresh client or after [`Client::reusable`].
    pub fn start(&mut self, keep_conn: bool) {
        self.state = State::Running;
        self.keep_conn = keep_conn;
        self.stdin_closed = false;
    }

    /// FCGI_GET_VALUES asking for `names` (a management record: any time, e.g. ahead of the
    /// request in the same write).
    pub fn get_values<N: AsRef<[u8]>>(&self, out: &mut Vec<u8>, names: &[N]) {
        encode::get_values(out, names);
    }

    /// FCGI_ABORT_REQUEST for the running request. The application still ends it with
    /// END_REQUEST, which [`Client::next_event`] reports as usual.
    pub fn abort(&self, out: &mut Vec<u8>) {
        encode::abort_request(out, self.request_id);
    }

    /// The encoder of this request's STDIN records, for a body written while it arrives.
    pub fn stdin_encoder(&self) -> StdinEncoder {
        StdinEncoder {
            request_id: self.request_id,
        }
    }

    /// The whole body, held in `pieces`: the headers of its STDIN records and of the empty
    /// record that ends the stream, to be sent with the pieces by [`gathered`]. The body is not
    /// copied.
    pub fn stdin_headers<'a, I>(&mut self, pieces: I) -> Vec<[u8; HEADER_LEN]>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let e = self.stdin_encoder();
        let headers = records(pieces)
            .map(|r| e.header(r.len()))
            .chain(std::iter::once(e.end()))
            .collect();
        self.stdin_closed = true;
        headers
    }

    /// The empty STDIN record made by a [`StdinEncoder`] was sent: the request is complete.
    pub fn stdin_sent(&mut self) {
        self.stdin_closed = true;
    }

    /// Appends bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.decoder.feed(bytes);
    }

    /// The peer closed the connection: the error that is, unless the request had ended.
    pub fn eof(&mut self) -> Result<(), ClientError> {
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            State::Ended | State::Idle if self.decoder.is_at_boundary() => Ok(()),
            _ => Err(self.fail(ClientError::ClosedBeforeEnd {
                buffered: self.decoder.buffered(),
            })),
        }
    }

    /// True once END_REQUEST has arrived.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Whether the connection may carry another request: END_REQUEST arrived for a request sent
    /// with FCGI_KEEP_CONN, the request was sent whole (STDIN ended), and nothing came after
    /// END_REQUEST.
    pub fn reusable(&self) -> bool {
        self.state == State::Ended
            && self.keep_conn
            && self.stdin_closed
            && self.decoder.is_at_boundary()
    }

    /// The next event from the bytes fed so far; `Ok(None)` when more are needed (or the
    /// request has ended and nothing followed).
    pub fn next_event(&mut self) -> Result<Option<ClientEvent>, ClientError> {
        match &self.state {
            State::Failed(e) => return Err(e.clone()),
            State::Ended if self.decoder.buffered() > 0 => {
                return Err(self.fail(ClientError::DataAfterEnd {
                    bytes: self.decoder.buffered(),
                }));
            }
            State::Ended => return Ok(None),
            State::Idle | State::Running => {}
        }
        let rec = match self.decoder.decode() {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail(ClientError::Decode(e))),
        };
        let ours = self.state == State::Running && rec.request_id() == self.request_id;
        let event = match rec {
            Record::Stream {
                record_type: t @ (RecordType::Stdout | RecordType::Stderr),
                content,
                ..
            } if ours => match (t, content.is_empty()) {
                (RecordType::Stdout, true) => ClientEvent::StdoutEnd,
                (RecordType::Stdout, false) => ClientEvent::Stdout(content),
                (_, true) => ClientEvent::StderrEnd,
                (_, false) => ClientEvent::Stderr(content),
            },
            Record::EndRequest {
                app_status,
                protocol_status,
                ..
            } if ours => {
                self.state = State::Ended;
                ClientEvent::End {
                    app_status,
                    protocol_status,
                }
            }
            Record::GetValuesResult { values } => ClientEvent::GetValuesResult(values),
            r if r.request_id() == NULL_REQUEST_ID || ours => ClientEvent::Ignored(r),
            r => {
                return Err(self.fail(ClientError::WrongRequestId {
                    record_type: r.record_type(),
                    request_id: r.request_id(),
                    expected: self.request_id,
                }));
            }
        };
        Ok(Some(event))
    }

    fn fail(&mut self, e: ClientError) -> ClientError {
        self.state = State::Failed(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> Client {
        let mut c = Client::new(1);
        let mut out = Vec::new();
        c.begin(&mut out, Role::Responder, true, |w| {
            w.pair(b"A", b"b");
            Ok::<(), ()>(())
        })
        .unwrap();
        c
    }

    fn events(c: &mut Client) -> Result<Vec<ClientEvent>, ClientError> {
        let mut v = Vec::new();
        while let Some(e) = c.next_event()? {
            v.push(e);
        }
        Ok(v)
    }

    fn end(out: &mut Vec<u8>, id: u16) {
        encode::end_request(out, id, 0, ProtocolStatus::RequestComplete);
    }

    #[test]
    fn wrong_request_id_is_fatal() {
        let mut c = running();
        let mut b = Vec::new();
        encode::stream(
            &mut b,
            RecordType::Stdout,
            2,
            b"x",
            10,
            encode::Padding::None,
        );
        c.feed(&b);
        let e = ClientError::WrongRequestId {
            record_type: RecordType::Stdout,
            request_id: 2,
            expected: 1,
        };
        assert_eq!(c.next_event(), Err(e.clone()));
        assert_eq!(e.to_string(), "FCGI_STDOUT for request id 2 (expected 1)");
        // Stays failed.
        end(&mut b, 1);
        c.feed(&b);
        assert_eq!(c.next_event(), Err(e));
        assert!(!c.reusable());
    }

    #[test]
    fn records_before_a_request_are_for_no_request() {
        let mut c = Client::new(1);
        let mut b = Vec::new();
        end(&mut b, 1);
        c.feed(&b);
        assert!(matches!(
            c.next_event(),
            Err(ClientError::WrongRequestId { request_id: 1, .. })
        ));
    }

    #[test]
    fn bad_version_is_fatal() {
        let mut c = running();
        c.feed(&[2, 6, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            c.next_event(),
            Err(ClientError::Decode(DecodeError::BadVersion { version: 2 }))
        );
    }

    #[test]
    fn bytes_after_end_are_an_error_and_spoil_reuse() {
        let mut c = running();
        c.stdin_sent();
        let mut b = Vec::new();
        end(&mut b, 1);
        c.feed(&b);
        assert!(matches!(c.next_event(), Ok(Some(ClientEvent::End { .. }))));
        assert!(c.reusable());
        assert_eq!(c.next_event(), Ok(None));
        c.feed(&[1, 6, 0]);
        assert!(!c.reusable());
        assert_eq!(c.next_event(), Err(ClientError::DataAfterEnd { bytes: 3 }));
    }

    #[test]
    fn reusable_needs_keep_conn_and_the_whole_request() {
        let mut b = Vec::new();
        end(&mut b, 1);
        // KEEP_CONN clear.
        let mut c = Client::new(1);
        c.begin(
            &mut Vec::new(),
            Role::Responder,
            false,
            |_| Ok::<(), ()>(()),
        )
        .unwrap();
        c.stdin_headers([]);
        c.feed(&b);
        let _ = events(&mut c);
        assert!(c.is_ended());
        assert!(!c.reusable());
        // STDIN never ended.
        let mut c = running();
        c.feed(&b);
        let _ = events(&mut c);
        assert!(c.is_ended());
        assert!(!c.reusable());
        // Both.
        let mut c = running();
        c.stdin_headers([&b"body"[..]]);
        c.feed(&b);
        let _ = events(&mut c);
        assert!(c.reusable());
    }

    #[test]
    fn closed_before_end() {
        let mut c = running();
        c.feed(&[1, 6, 0, 1]);
        assert_eq!(c.next_event(), Ok(None));
        assert_eq!(c.eof(), Err(ClientError::ClosedBeforeEnd { buffered: 4 }));
        let mut c = running();
        assert_eq!(c.eof(), Err(ClientError::ClosedBeforeEnd { buffered: 0 }));
        // After END a close is the normal end of a KEEP_CONN-less connection.
        let mut c = running();
        let mut b = Vec::new();
        end(&mut b, 1);
        c.feed(&b);
        let _ = events(&mut c);
        assert_eq!(c.eof(), Ok(()));
    }

    #[test]
    fn tolerated_records_are_ignored() {
        let mut c = running();
        let mut b = Vec::new();
        // Management record other than GET_VALUES_RESULT; unknown type for our request; a
        // record of the wrong direction for our request; unknown type on request id 0.
        encode::unknown_type(&mut b, 99);
        encode::record(
            &mut b,
            RecordType::Other(42),
            1,
            b"??",
            encode::Padding::None,
        );
        encode::stream(
            &mut b,
            RecordType::Stdin,
            1,
            b"x",
            10,
            encode::Padding::None,
        );
        encode::record(&mut b, RecordType::Other(42), 0, b"", encode::Padding::None);
        encode::get_values_result(&mut b, &[("FCGI_MAX_CONNS", "3")]);
        c.feed(&b);
        let ev = events(&mut c).unwrap();
        assert_eq!(ev.len(), 5);
        assert!(ev[..4].iter().all(|e| matches!(e, ClientEvent::Ignored(_))));
        assert_eq!(
            ev[4],
            ClientEvent::GetValuesResult(vec![(
                Bytes::from_static(b"FCGI_MAX_CONNS"),
                Bytes::from_static(b"3")
            )])
        );
    }

    #[test]
    fn output_after_its_end_is_still_output() {
        let mut c = running();
        let mut b = Vec::new();
        encode::stream_end(&mut b, RecordType::Stdout, 1);
        encode::stream(
            &mut b,
            RecordType::Stdout,
            1,
            b"late",
            10,
            encode::Padding::None,
        );
        c.feed(&b);
        assert_eq!(
            events(&mut c).unwrap(),
            vec![
                ClientEvent::StdoutEnd,
                ClientEvent::Stdout(Bytes::from_static(b"late"))
            ]
        );
    }

    #[test]
    fn abort_and_get_values_encode_their_records() {
        let c = Client::new(7);
        let mut out = Vec::new();
        c.abort(&mut out);
        assert_eq!(out, [1, 2, 0, 7, 0, 0, 0, 0]);
        out.clear();
        c.get_values(&mut out, &[crate::MAX_CONNS]);
        let mut d = Decoder::default();
        d.feed(&out);
        assert_eq!(
            d.decode(),
            Ok(Some(Record::GetValues {
                names: vec![(Bytes::from_static(b"FCGI_MAX_CONNS"), Bytes::new())]
            }))
        );
    }
}
