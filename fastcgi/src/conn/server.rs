//! The application's side of a connection: any number of requests, each under its own id
//! (multiplexed when the peer sends several; whether to serve them is the caller's choice).
//!
//! [`Server::feed`] the bytes read, then [`Server::next_event`] until `Ok(None)`. A request is
//! tracked from its BEGIN_REQUEST until the caller ends it, with [`Server::end_request`] or, when
//! it wrote END_REQUEST some other way (a backend that misbehaves on purpose writes its own
//! bytes), [`Server::finish`]. The encoders for the answer records are methods too, so that a
//! well-behaved application needs nothing else.
//!
//! Fatal ([`ServerError`]): bytes that do not decode, BEGIN_REQUEST on id 0 or on an active id,
//! a known record type with a body of the wrong size, a stream record after its stream ended,
//! a PARAMS stream that is not valid name-value pairs or exceeds the limit. Tolerated and
//! reported ([`ServerEvent::Ignored`]): records of unknown type for a request, records an
//! application does not receive, records for a request id that is not active.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::decode::{DecodeError, Decoder};
use crate::encode::{self, Padding};
use crate::nv::{NvError, NvParser};
use crate::record::{ProtocolStatus, Record, RecordType, Role};
use crate::{MAX_CONTENT_LEN, NULL_REQUEST_ID};

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A new request, now active.
    BeginRequest {
        request_id: u16,
        role: Role,
        flags: u8,
    },
    /// A non-empty PARAMS record of `len` bytes, and the pairs it completed (a pair may
    /// straddle records: it comes with the record that completes it).
    Params {
        request_id: u16,
        len: usize,
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// The empty PARAMS record: every pair has been delivered.
    ParamsEnd {
        request_id: u16,
    },
    Stdin {
        request_id: u16,
        data: Bytes,
    },
    StdinEnd {
        request_id: u16,
    },
    Data {
        request_id: u16,
        data: Bytes,
    },
    DataEnd {
        request_id: u16,
    },
    /// FCGI_ABORT_REQUEST for an active request. It stays active until the caller ends it.
    Abort {
        request_id: u16,
    },
    /// FCGI_GET_VALUES: answer with [`Server::get_values_result`].
    GetValues {
        names: Vec<(Bytes, Bytes)>,
    },
    /// A management record of a type this side does not know: answer with
    /// [`Server::unknown_type`] (section 4.2).
    UnknownType {
        record_type: u8,
    },
    /// A record that was dropped, and why.
    Ignored(Ignored),
}

/// Records a server drops without failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// A record of unknown type for a request (not id 0).
    UnknownType {
        record_type: u8,
        request_id: u16,
        len: usize,
    },
    /// A record type an application does not receive (END_REQUEST, STDOUT, ...).
    NotForApplication {
        record_type: RecordType,
        request_id: u16,
    },
    /// ABORT_REQUEST for a request id that is not active.
    AbortInactive { request_id: u16 },
    /// A PARAMS, STDIN or DATA record for a request id that is not active.
    StreamInactive {
        record_type: RecordType,
        request_id: u16,
        len: usize,
    },
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ignored::UnknownType {
                record_type,
                request_id,
                len,
            } => write!(
                f,
                "record of unknown type {record_type} for request {request_id} ({len} bytes)"
            ),
            Ignored::NotForApplication {
                record_type,
                request_id,
            } => write!(
                f,
                "{} record for request {request_id} is not for an application",
                record_type.name()
            ),
            Ignored::AbortInactive { request_id } => {
                write!(f, "ABORT_REQUEST for inactive request id {request_id}")
            }
            Ignored::StreamInactive {
                record_type,
                request_id,
                len,
            } => write!(
                f,
                "{} record for inactive request id {request_id} ({len} bytes)",
                record_type.name()
            ),
        }
    }
}

/// A fatal protocol error: the connection should be closed. The machine stays failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerError {
    /// The bytes do not decode.
    Decode(DecodeError),
    /// BEGIN_REQUEST with request id 0, which is reserved for management records.
    NullRequestId,
    /// BEGIN_REQUEST for a request id that is already active.
    BeginActive { request_id: u16 },
    /// A known record type whose body has the wrong size.
    Malformed {
        record_type: RecordType,
        request_id: u16,
        len: usize,
    },
    /// A PARAMS, STDIN or DATA record after the empty record that ended that stream.
    StreamAfterEnd {
        record_type: RecordType,
        request_id: u16,
    },
    /// The PARAMS stream is too large ([`NvError::TooLarge`], at a non-empty record) or ends
    /// inside a pair ([`NvError::Truncated`], at the empty record).
    Params { request_id: u16, error: NvError },
    /// The peer closed the connection with part of a record buffered.
    ClosedInsideRecord { buffered: usize },
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Decode(e) => write!(f, "undecodable input: {e}"),
            ServerError::NullRequestId => {
                write!(f, "BEGIN_REQUEST with the null request id 0")
            }
            ServerError::BeginActive { request_id } => {
                write!(f, "BEGIN_REQUEST for active request id {request_id}")
            }
            ServerError::Malformed {
                record_type,
                request_id,
                len,
            } => write!(
                f,
                "malformed {} record for request {request_id}: {len} content bytes",
                record_type.name()
            ),
            ServerError::StreamAfterEnd {
                record_type,
                request_id,
            } => {
                let name = record_type.name();
                let short = name.strip_prefix("FCGI_").unwrap_or(&name);
                write!(
                    f,
                    "{name} for request {request_id} after its {short} stream ended"
                )
            }
            ServerError::Params { request_id, error } => {
                write!(f, "FCGI_PARAMS of request {request_id}: {error}")
            }
            ServerError::ClosedInsideRecord { buffered } => write!(
                f,
                "peer closed the connection inside a record ({buffered} bytes buffered)"
            ),
        }
    }
}

impl std::error::Error for ServerError {}

/// The input side of one active request.
#[derive(Debug)]
struct Request {
    params: NvParser,
    params_done: bool,
    stdin_done: bool,
    data_done: bool,
}

/// The server state machine. See the module documentation.
#[derive(Debug)]
pub struct Server {
    decoder: Decoder,
    requests: BTreeMap<u16, Request>,
    max_params_bytes: usize,
    failed: Option<ServerError>,
}

impl Server {
    /// A server that accepts PARAMS streams of up to `max_params_bytes` per request.
    pub fn new(max_params_bytes: usize) -> Server {
        Server {
            decoder: Decoder::default(),
            requests: BTreeMap::new(),
            max_params_bytes,
            failed: None,
        }
    }

    /// Appends bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.decoder.feed(bytes);
    }

    /// Bytes received that do not yet make a whole record.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// The peer closed the connection: an error if it did so inside a record.
    pub fn eof(&self) -> Result<(), ServerError> {
        if self.decoder.is_at_boundary() {
            Ok(())
        } else {
            Err(ServerError::ClosedInsideRecord {
                buffered: self.decoder.buffered(),
            })
        }
    }

    /// Whether `request_id` is active (begun and not ended by the caller).
    pub fn is_active(&self, request_id: u16) -> bool {
        self.requests.contains_key(&request_id)
    }

    /// Whether any request is active.
    pub fn has_requests(&self) -> bool {
        !self.requests.is_empty()
    }

    /// Forgets request `request_id`: the caller wrote its END_REQUEST itself.
    pub fn finish(&mut self, request_id: u16) {
        self.requests.remove(&request_id);
    }

    /// The next event from the bytes fed so far; `Ok(None)` when more are needed.
    pub fn next_event(&mut self) -> Result<Option<ServerEvent>, ServerError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let rec = match self.decoder.decode() {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail(ServerError::Decode(e))),
        };
        self.on_record(rec).map(Some).map_err(|e| self.fail(e))
    }

    fn on_record(&mut self, rec: Record) -> Result<ServerEvent, ServerError> {
        Ok(match rec {
            Record::BeginRequest {
                request_id,
                role,
                flags,
            } => {
                if request_id == NULL_REQUEST_ID {
                    return Err(ServerError::NullRequestId);
                }
                if self.is_active(request_id) {
                    return Err(ServerError::BeginActive { request_id });
                }
                self.requests.insert(
                    request_id,
                    Request {
                        params: NvParser::new(self.max_params_bytes),
                        params_done: false,
                        stdin_done: false,
                        data_done: false,
                    },
                );
                ServerEvent::BeginRequest {
                    request_id,
                    role,
                    flags,
                }
            }
            Record::AbortRequest { request_id } if self.is_active(request_id) => {
                ServerEvent::Abort { request_id }
            }
            Record::AbortRequest { request_id } => {
                ServerEvent::Ignored(Ignored::AbortInactive { request_id })
            }
            Record::Stream {
                record_type: t @ (RecordType::Params | RecordType::Stdin | RecordType::Data),
                request_id,
                content,
            } => return self.stream(t, request_id, content),
            Record::GetValues { names } => ServerEvent::GetValues { names },
            Record::Unknown {
                record_type: RecordType::Other(t),
                request_id: NULL_REQUEST_ID,
                ..
            } => ServerEvent::UnknownType { record_type: t },
            Record::Unknown {
                record_type: RecordType::Other(t),
                request_id,
                content,
            } => ServerEvent::Ignored(Ignored::UnknownType {
                record_type: t,
                request_id,
                len: content.len(),
            }),
            Record::Unknown {
                record_type,
                request_id,
                content,
            } => {
                return Err(ServerError::Malformed {
                    record_type,
                    request_id,
                    len: content.len(),
                });
            }
            other => ServerEvent::Ignored(Ignored::NotForApplication {
                record_type: other.record_type(),
                request_id: other.request_id(),
            }),
        })
    }

    fn stream(
        &mut self,
        t: RecordType,
        request_id: u16,
        content: Bytes,
    ) -> Result<ServerEvent, ServerError> {
        let Some(r) = self.requests.get_mut(&request_id) else {
            return Ok(ServerEvent::Ignored(Ignored::StreamInactive {
                record_type: t,
                request_id,
                len: content.len(),
            }));
        };
        let done = match t {
            RecordType::Params => &mut r.params_done,
            RecordType::Stdin => &mut r.stdin_done,
            _ => &mut r.data_done,
        };
        if *done {
            return Err(ServerError::StreamAfterEnd {
                record_type: t,
                request_id,
            });
        }
        *done = content.is_empty();
        let params_error = |error| ServerError::Params { request_id, error };
        Ok(match (t, content.is_empty()) {
            (RecordType::Params, true) => {
                r.params.finish().map_err(params_error)?;
                ServerEvent::ParamsEnd { request_id }
            }
            (RecordType::Params, false) => {
                r.params.feed(&content).map_err(params_error)?;
                let mut pairs = Vec::new();
                while let Some(p) = r.params.next_pair() {
                    pairs.push(p);
                }
                ServerEvent::Params {
                    request_id,
                    len: content.len(),
                    pairs,
                }
            }
            (RecordType::Stdin, true) => ServerEvent::StdinEnd { request_id },
            (RecordType::Stdin, false) => ServerEvent::Stdin {
                request_id,
                data: content,
            },
            (_, true) => ServerEvent::DataEnd { request_id },
            (_, false) => ServerEvent::Data {
                request_id,
                data: content,
            },
        })
    }

    fn fail(&mut self, e: ServerError) -> ServerError {
        self.failed = Some(e.clone());
        e
    }

    /// STDOUT records carrying `data` (nothing for empty data: see [`Server::stdout_end`]).
    pub fn stdout(&self, out: &mut Vec<u8>, request_id: u16, data: &[u8]) {
        encode::stream(
            out,
            RecordType::Stdout,
            request_id,
            data,
            MAX_CONTENT_LEN,
            Padding::None,
        );
    }

    /// The empty STDOUT record.
    pub fn stdout_end(&self, out: &mut Vec<u8>, request_id: u16) {
        encode::stream_end(out, RecordType::Stdout, request_id);
    }

    /// STDERR records carrying `data`.
    pub fn stderr(&self, out: &mut Vec<u8>, request_id: u16, data: &[u8]) {
        encode::stream(
            out,
            RecordType::Stderr,
            request_id,
            data,
            MAX_CONTENT_LEN,
            Padding::None,
        );
    }

    /// The empty STDERR record.
    pub fn stderr_end(&self, out: &mut Vec<u8>, request_id: u16) {
        encode::stream_end(out, RecordType::Stderr, request_id);
    }

    /// END_REQUEST for `request_id`, which is no longer active. Also the answer that refuses
    /// a request just begun (FCGI_CANT_MPX_CONN, FCGI_OVERLOADED, FCGI_UNKNOWN_ROLE).
    pub fn end_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u16,
        app_status: u32,
        protocol_status: ProtocolStatus,
    ) {
        self.requests.remove(&request_id);
        encode::end_request(out, request_id, app_status, protocol_status);
    }

    /// FCGI_GET_VALUES_RESULT with `values`.
    pub fn get_values_result<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        out: &mut Vec<u8>,
        values: &[(N, V)],
    ) {
        encode::get_values_result(out, values);
    }

    /// FCGI_UNKNOWN_TYPE for a management record of type `record_type`.
    pub fn unknown_type(&self, out: &mut Vec<u8>, record_type: u8) {
        encode::unknown_type(out, record_type);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(bytes: &[u8]) -> Server {
        let mut s = Server::new(1024);
        s.feed(bytes);
        s
    }

    fn events(s: &mut Server) -> Result<Vec<ServerEvent>, ServerError> {
        let mut v = Vec::new();
        while let Some(e) = s.next_event()? {
            v.push(e);
        }
        Ok(v)
    }

    fn begin(out: &mut Vec<u8>, id: u16) {
        encode::begin_request(out, id, Role::Responder, 0);
    }

    #[test]
    fn begin_on_null_id_is_fatal() {
        let mut b = Vec::new();
        begin(&mut b, 0);
        let mut s = fed(&b);
        assert_eq!(s.next_event(), Err(ServerError::NullRequestId));
        assert_eq!(
            ServerError::NullRequestId.to_string(),
            "BEGIN_REQUEST with the null request id 0"
        );
        // Stays failed.
        begin(&mut b, 1);
        s.feed(&b);
        assert_eq!(s.next_event(), Err(ServerError::NullRequestId));
    }

    #[test]
    fn begin_on_active_id_is_fatal_until_ended() {
        let mut b = Vec::new();
        begin(&mut b, 3);
        begin(&mut b, 4);
        let mut s = fed(&b);
        assert_eq!(events(&mut s).unwrap().len(), 2);
        s.end_request(&mut Vec::new(), 3, 0, ProtocolStatus::RequestComplete);
        s.finish(4);
        assert!(!s.has_requests());
        let mut b = Vec::new();
        begin(&mut b, 3);
        begin(&mut b, 3);
        s.feed(&b);
        assert!(matches!(
            s.next_event(),
            Ok(Some(ServerEvent::BeginRequest { request_id: 3, .. }))
        ));
        assert_eq!(
            s.next_event(),
            Err(ServerError::BeginActive { request_id: 3 })
        );
    }

    #[test]
    fn stream_after_its_end_is_fatal() {
        for t in [RecordType::Params, RecordType::Stdin, RecordType::Data] {
            let mut b = Vec::new();
            begin(&mut b, 1);
            encode::stream_end(&mut b, t, 1);
            encode::stream_end(&mut b, t, 1);
            let mut s = fed(&b);
            let e = events(&mut s).unwrap_err();
            assert_eq!(
                e,
                ServerError::StreamAfterEnd {
                    record_type: t,
                    request_id: 1
                }
            );
            if t == RecordType::Stdin {
                assert_eq!(
                    e.to_string(),
                    "FCGI_STDIN for request 1 after its STDIN stream ended"
                );
            }
        }
    }

    #[test]
    fn params_errors() {
        // Ends inside a pair.
        let mut b = Vec::new();
        begin(&mut b, 1);
        encode::stream(
            &mut b,
            RecordType::Params,
            1,
            &[5, 1, b'a'],
            100,
            Padding::None,
        );
        encode::stream_end(&mut b, RecordType::Params, 1);
        let mut s = fed(&b);
        assert_eq!(
            events(&mut s),
            Err(ServerError::Params {
                request_id: 1,
                error: NvError::Truncated
            })
        );
        // Over the limit.
        let mut b = Vec::new();
        begin(&mut b, 1);
        encode::stream(&mut b, RecordType::Params, 1, &[0; 600], 600, Padding::None);
        encode::stream(&mut b, RecordType::Params, 1, &[0; 600], 600, Padding::None);
        let mut s = fed(&b);
        let e = events(&mut s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "FCGI_PARAMS of request 1: name-value data exceeds the limit of 1024 bytes"
        );
    }

    #[test]
    fn malformed_known_record_is_fatal() {
        let mut b = Vec::new();
        encode::record(&mut b, RecordType::BeginRequest, 1, &[0, 1], Padding::None);
        let mut s = fed(&b);
        assert_eq!(
            s.next_event(),
            Err(ServerError::Malformed {
                record_type: RecordType::BeginRequest,
                request_id: 1,
                len: 2
            })
        );
    }

    #[test]
    fn bad_version_is_fatal() {
        let mut s = fed(&[0]);
        assert_eq!(
            s.next_event().unwrap_err().to_string(),
            "undecodable input: unsupported FastCGI version 0 (expected 1)"
        );
    }

    #[test]
    fn closed_inside_a_record() {
        let s = fed(&[1, 1, 0]);
        assert_eq!(
            s.eof(),
            Err(ServerError::ClosedInsideRecord { buffered: 3 })
        );
        assert_eq!(fed(&[]).eof(), Ok(()));
    }

    #[test]
    fn dropped_records_are_reported() {
        let mut b = Vec::new();
        encode::abort_request(&mut b, 9);
        encode::stream(&mut b, RecordType::Stdin, 9, b"x", 10, Padding::None);
        encode::record(&mut b, RecordType::Other(77), 9, b"xy", Padding::None);
        encode::end_request(&mut b, 9, 0, ProtocolStatus::RequestComplete);
        encode::record(&mut b, RecordType::Other(77), 0, b"", Padding::None);
        let mut s = fed(&b);
        assert_eq!(
            events(&mut s).unwrap(),
            vec![
                ServerEvent::Ignored(Ignored::AbortInactive { request_id: 9 }),
                ServerEvent::Ignored(Ignored::StreamInactive {
                    record_type: RecordType::Stdin,
                    request_id: 9,
                    len: 1
                }),
                ServerEvent::Ignored(Ignored::UnknownType {
                    record_type: 77,
                    request_id: 9,
                    len: 2
                }),
                ServerEvent::Ignored(Ignored::NotForApplication {
                    record_type: RecordType::EndRequest,
                    request_id: 9
                }),
                ServerEvent::UnknownType { record_type: 77 },
            ]
        );
    }

    #[test]
    fn abort_of_an_active_request() {
        let mut b = Vec::new();
        begin(&mut b, 2);
        encode::abort_request(&mut b, 2);
        let mut s = fed(&b);
        let ev = events(&mut s).unwrap();
        assert_eq!(ev[1], ServerEvent::Abort { request_id: 2 });
        // Still active until ended.
        assert!(s.is_active(2));
    }
}
