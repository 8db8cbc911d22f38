//! Record types, the 8-byte header and the decoded record (spec sections 3.3, 5, 8).

use bytes::Bytes;

/// The record type byte. Known types have names; any other value is kept as `Other` so that
/// unknown records can be reported rather than treated as a stream error (section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordType {
    BeginRequest,
    AbortRequest,
    EndRequest,
    Params,
    Stdin,
    Stdout,
    Stderr,
    Data,
    GetValues,
    GetValuesResult,
    UnknownType,
    Other(u8),
}

impl RecordType {
    pub fn from_u8(b: u8) -> Self {
        match b {
            1 => Self::BeginRequest,
            2 => Self::AbortRequest,
            3 => Self::EndRequest,
            4 => Self::Params,
            5 => Self::Stdin,
            6 => Self::Stdout,
            7 => Self::Stderr,
            8 => Self::Data,
            9 => Self::GetValues,
            10 => Self::GetValuesResult,
            11 => Self::UnknownType,
            other => Self::Other(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Self::BeginRequest => 1,
            Self::AbortRequest => 2,
            Self::EndRequest => 3,
            Self::Params => 4,
            Self::Stdin => 5,
            Self::Stdout => 6,
            Self::Stderr => 7,
            Self::Data => 8,
            Self::GetValues => 9,
            Self::GetValuesResult => 10,
            Self::UnknownType => 11,
            Self::Other(b) => b,
        }
    }

    /// The spec's name, e.g. `FCGI_STDOUT`, or `type N` for unknown values.
    pub fn name(self) -> String {
        let s = match self {
            Self::BeginRequest => "FCGI_BEGIN_REQUEST",
            Self::AbortRequest => "FCGI_ABORT_REQUEST",
            Self::EndRequest => "FCGI_END_REQUEST",
            Self::Params => "FCGI_PARAMS",
            Self::Stdin => "FCGI_STDIN",
            Self::Stdout => "FCGI_STDOUT",
            Self::Stderr => "FCGI_STDERR",
            Self::Data => "FCGI_DATA",
            Self::GetValues => "FCGI_GET_VALUES",
            Self::GetValuesResult => "FCGI_GET_VALUES_RESULT",
            Self::UnknownType => "FCGI_UNKNOWN_TYPE",
            Self::Other(b) => return format!("type {b}"),
        };
        s.to_string()
    }

    /// Management records travel with request id 0 (section 3.3).
    pub fn is_management(self) -> bool {
        matches!(
            self,
            Self::GetValues | Self::GetValuesResult | Self::UnknownType
        )
    }

    /// Stream records: a run of non-empty records closed by an empty one (section 3.3).
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            Self::Params | Self::Stdin | Self::Stdout | Self::Stderr | Self::Data
        )
    }
}

/// The application role requested by BEGIN_REQUEST (section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Responder,
    Authorizer,
    Filter,
    Other(u16),
}

impl Role {
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::Responder,
            2 => Self::Authorizer,
            3 => Self::Filter,
            other => Self::Other(other),
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            Self::Responder => 1,
            Self::Authorizer => 2,
            Self::Filter => 3,
            Self::Other(v) => v,
        }
    }
}

/// protocolStatus of END_REQUEST (section 5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolStatus {
    RequestComplete,
    CantMpxConn,
    Overloaded,
    UnknownRole,
    Other(u8),
}

impl ProtocolStatus {
    pub fn from_u8(b: u8) -> Self {
        match b {
            0 => Self::RequestComplete,
            1 => Self::CantMpxConn,
            2 => Self::Overloaded,
            3 => Self::UnknownRole,
            other => Self::Other(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Self::RequestComplete => 0,
            Self::CantMpxConn => 1,
            Self::Overloaded => 2,
            Self::UnknownRole => 3,
            Self::Other(b) => b,
        }
    }
}

/// The fixed 8-byte record header (section 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub record_type: RecordType,
    pub request_id: u16,
    pub content_length: u16,
    pub padding_length: u8,
}

impl Header {
    pub fn parse(b: &[u8; crate::HEADER_LEN]) -> Self {
        Header {
            version: b[0],
            record_type: RecordType::from_u8(b[1]),
            request_id: u16::from_be_bytes([b[2], b[3]]),
            content_length: u16::from_be_bytes([b[4], b[5]]),
            padding_length: b[6],
        }
    }

    pub fn to_bytes(&self) -> [u8; crate::HEADER_LEN] {
        let id = self.request_id.to_be_bytes();
        let len = self.content_length.to_be_bytes();
        [
            self.version,
            self.record_type.as_u8(),
            id[0],
            id[1],
            len[0],
            len[1],
            self.padding_length,
            0,
        ]
    }
}

/// One decoded record. Stream records carry their content as it came (a chunk of the stream;
/// empty content closes the stream). GET_VALUES bodies are decoded into pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    BeginRequest {
        request_id: u16,
        role: Role,
        flags: u8,
    },
    AbortRequest {
        request_id: u16,
    },
    EndRequest {
        request_id: u16,
        app_status: u32,
        protocol_status: ProtocolStatus,
    },
    /// PARAMS, STDIN, STDOUT, STDERR or DATA.
    Stream {
        record_type: RecordType,
        request_id: u16,
        content: Bytes,
    },
    GetValues {
        names: Vec<(Bytes, Bytes)>,
    },
    GetValuesResult {
        values: Vec<(Bytes, Bytes)>,
    },
    UnknownType {
        unknown_type: u8,
    },
    /// A record of a type this crate does not know (or a known type whose body has the wrong
    /// size). Reported, not fatal: the peer decides what to do.
    Unknown {
        record_type: RecordType,
        request_id: u16,
        content: Bytes,
    },
}

impl Record {
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::BeginRequest { .. } => RecordType::BeginRequest,
            Record::AbortRequest { .. } => RecordType::AbortRequest,
            Record::EndRequest { .. } => RecordType::EndRequest,
            Record::Stream { record_type, .. } | Record::Unknown { record_type, .. } => {
                *record_type
            }
            Record::GetValues { .. } => RecordType::GetValues,
            Record::GetValuesResult { .. } => RecordType::GetValuesResult,
            Record::UnknownType { .. } => RecordType::UnknownType,
        }
    }

    pub fn request_id(&self) -> u16 {
        match self {
            Record::BeginRequest { request_id, .. }
            | Record::AbortRequest { request_id }
            | Record::EndRequest { request_id, .. }
            | Record::Stream { request_id, .. }
            | Record::Unknown { request_id, .. } => *request_id,
            Record::GetValues { .. }
            | Record::GetValuesResult { .. }
            | Record::UnknownType { .. } => crate::NULL_REQUEST_ID,
        }
    }
}
