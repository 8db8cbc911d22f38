//! The streaming record decoder: bytes in (split anywhere), records out.
//!
//! Drained after every [`Decoder::feed`], it holds at most one partial record (under
//! 8 + 65535 + 255 bytes) plus the bytes of that feed. Once failed it drops whatever it is fed.
//! Content of a stream record is handed out whole, as one `Bytes`, zero-copy from the buffer.

use bytes::{Buf, BytesMut};

use crate::nv::{self, NvError};
use crate::record::{Header, ProtocolStatus, Record, RecordType, Role};
use crate::{HEADER_LEN, VERSION_1};

/// Bounds the decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest name-value body accepted in a GET_VALUES or GET_VALUES_RESULT record.
    pub max_nv_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_nv_bytes: crate::MAX_CONTENT_LEN,
        }
    }
}

/// A fatal decoding error: after it the byte stream cannot be trusted and the connection should
/// be closed. The decoder stays in the error state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The version byte was not 1.
    BadVersion { version: u8 },
    /// A GET_VALUES(_RESULT) body was not a valid name-value sequence, or too large.
    BadNameValues(NvError),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadVersion { version } => {
                write!(f, "unsupported FastCGI version {version} (expected 1)")
            }
            DecodeError::BadNameValues(e) => write!(f, "bad name-value body: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Streaming decoder. Feed bytes with [`Decoder::feed`], then call [`Decoder::decode`] until it
/// returns `Ok(None)`.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    limits: Limits,
    failed: Option<DecodeError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            buf: BytesMut::new(),
            limits,
            failed: None,
        }
    }

    /// Appends received bytes. After a fatal error they are discarded: the stream cannot be
    /// trusted any more, and a peer that keeps sending must not grow the buffer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The fatal error this decoder stopped at, if any.
    pub fn error(&self) -> Option<&DecodeError> {
        self.failed.as_ref()
    }

    /// Bytes received but not yet part of a complete record.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when no partial record is buffered: a clean place for the stream to end.
    pub fn is_at_boundary(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete record, `Ok(None)` if more bytes are needed.
    pub fn decode(&mut self) -> Result<Option<Record>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() < HEADER_LEN {
            // The version byte alone is enough to reject a stream early.
            if let Some(&v) = self.buf.first().filter(|&&v| v != VERSION_1) {
                return Err(self.fail(DecodeError::BadVersion { version: v }));
            }
            return Ok(None);
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.buf[..HEADER_LEN]);
        let h = Header::parse(&hb);
        if h.version != VERSION_1 {
            return Err(self.fail(DecodeError::BadVersion { version: h.version }));
        }
        let total = HEADER_LEN + h.content_length as usize + h.padding_length as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let content = self.buf.split_to(h.content_length as usize).freeze();
        self.buf.advance(h.padding_length as usize);
        let id = h.request_id;
        let unknown = |content| Record::Unknown {
            record_type: h.record_type,
            request_id: id,
            content,
        };
        let rec = match h.record_type {
            RecordType::BeginRequest if content.len() == 8 => Record::BeginRequest {
                request_id: id,
                role: Role::from_u16(u16::from_be_bytes([content[0], content[1]])),
                flags: content[2],
            },
            RecordType::AbortRequest if content.is_empty() => {
                Record::AbortRequest { request_id: id }
            }
            RecordType::EndRequest if content.len() == 8 => Record::EndRequest {
                request_id: id,
                app_status: u32::from_be_bytes([content[0], content[1], content[2], content[3]]),
                protocol_status: ProtocolStatus::from_u8(content[4]),
            },
            t if t.is_stream() => Record::Stream {
                record_type: t,
                request_id: id,
                content,
            },
            RecordType::GetValues => Record::GetValues {
                names: self.pairs(&content)?,
            },
            RecordType::GetValuesResult => Record::GetValuesResult {
                values: self.pairs(&content)?,
            },
            RecordType::UnknownType if content.len() == 8 => Record::UnknownType {
                unknown_type: content[0],
            },
            _ => unknown(content),
        };
        Ok(Some(rec))
    }

    fn pairs(
        &mut self,
        content: &bytes::Bytes,
    ) -> Result<Vec<(bytes::Bytes, bytes::Bytes)>, DecodeError> {
        nv::decode_shared(content, self.limits.max_nv_bytes)
            .map_err(|e| self.fail(DecodeError::BadNameValues(e)))
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_decoder_drops_input() {
        let mut d = Decoder::default();
        assert_eq!(d.error(), None);
        d.feed(&[7, 1, 0, 1]);
        let e = DecodeError::BadVersion { version: 7 };
        assert_eq!(d.decode(), Err(e.clone()));
        assert_eq!(d.error(), Some(&e));
        let before = d.buffered();
        d.feed(&[1; 100_000]);
        assert_eq!(d.buffered(), before);
        assert_eq!(d.decode(), Err(e));
    }

    #[test]
    fn waits_for_padding_before_delivering() {
        let mut d = Decoder::default();
        // STDOUT, id 1, 2 bytes of content, 3 of padding.
        d.feed(&[1, 6, 0, 1, 0, 2, 3, 0, b'o', b'k', 0, 0]);
        assert_eq!(d.decode(), Ok(None));
        assert_eq!(d.buffered(), 12);
        d.feed(&[0]);
        assert!(matches!(d.decode(), Ok(Some(Record::Stream { .. }))));
        assert!(d.is_at_boundary());
    }
}
