//! FastCGI 1.0 wire protocol, sans-IO.
//!
//! Bytes in, events out: [`Decoder`] turns a byte stream (split at any point) into [`Record`]s;
//! the functions in [`encode`] turn records and streams back into bytes. Name-value pairs
//! (spec section 3.4) are handled by [`nv`], including a streaming parser for PARAMS streams
//! whose pairs straddle record boundaries. Nothing here does IO or knows about time, so the same
//! code runs on tokio, in a simulation and under proptest.
//!
//! On top of those, [`conn`] holds the request lifecycle of one connection as two state
//! machines, so that its rules exist once:
//! - [`Client`], the web server's side, one request at a time under one request id:
//!   BEGIN_REQUEST (FCGI_KEEP_CONN), the PARAMS and STDIN streams out (STDIN as record headers
//!   beside the caller's own buffers, for a gathered write without copying the body), FCGI_GET_VALUES
//!   and FCGI_ABORT_REQUEST; STDOUT, STDERR, END_REQUEST and GET_VALUES_RESULT in as
//!   [`ClientEvent`]s; fatal errors (undecodable bytes, another request id, bytes after
//!   END_REQUEST, a close before it) as [`ClientError`]; and whether the connection may carry
//!   another request. `fcgi-proxy`'s `exchange` drives it for every backend request.
//! - [`Server`], the application's side, any number of multiplexed request ids: records in as
//!   [`ServerEvent`]s (BEGIN_REQUEST, PARAMS as name-value pairs however records cut them, STDIN,
//!   DATA, each stream's end, ABORT_REQUEST, GET_VALUES, unknown management types, records it
//!   drops and why), protocol errors as [`ServerError`], and the encoders of the answer records.
//!   `fcgi-mock` drives it for every connection (and so does the simulator, which runs the mock);
//!   the mock's deliberately malformed answers are its own bytes, written past the encoders.
//!
//! Spec: "FastCGI Specification", Mark R. Brown, Open Market, 1996 (version 1.0). Section numbers
//! in comments refer to it.

pub mod conn;
pub mod decode;
pub mod encode;
pub mod nv;
pub mod record;

pub use conn::{Client, ClientError, ClientEvent, Server, ServerError, ServerEvent};
pub use decode::{DecodeError, Decoder, Limits};
pub use encode::Padding;
pub use nv::{NvError, NvParser};
pub use record::{Header, ProtocolStatus, Record, RecordType, Role};

/// `FCGI_VERSION_1`: the only version this crate speaks.
pub const VERSION_1: u8 = 1;
/// Length of a record header (`FCGI_HEADER_LEN`).
pub const HEADER_LEN: usize = 8;
/// Largest content a single record can carry (16-bit length).
pub const MAX_CONTENT_LEN: usize = 65535;
/// Request id reserved for management records (`FCGI_NULL_REQUEST_ID`).
pub const NULL_REQUEST_ID: u16 = 0;
/// `FCGI_KEEP_CONN`: the only flag bit of BEGIN_REQUEST (section 5.1).
pub const KEEP_CONN: u8 = 1;

/// Variable names of FCGI_GET_VALUES (section 4.1).
pub const MAX_CONNS: &str = "FCGI_MAX_CONNS";
/// Variable names of FCGI_GET_VALUES (section 4.1).
pub const MAX_REQS: &str = "FCGI_MAX_REQS";
/// Variable names of FCGI_GET_VALUES (section 4.1).
pub const MPXS_CONNS: &str = "FCGI_MPXS_CONNS";
