//! FastCGI 1.0 wire protocol, sans-IO.
//!
//! Bytes in, events out: [`Decoder`] turns a byte stream (split at any point) into [`Record`]s;
//! the functions in [`encode`] turn records and streams back into bytes. Name-value pairs
//! (spec section 3.4) are handled by [`nv`], including a streaming parser for PARAMS streams
//! whose pairs straddle record boundaries. Nothing here does IO or knows about time, so the same
//! code runs on tokio, in a simulation and under proptest.
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
