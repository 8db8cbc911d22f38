//! Encoders. Every function appends to a `Vec<u8>`; none allocates per record beyond that.
//! Stream data larger than one record's 65535 bytes is split over several records.

use crate::nv;
use crate::record::{Header, ProtocolStatus, Record, RecordType, Role};
use crate::{HEADER_LEN, MAX_CONTENT_LEN, NULL_REQUEST_ID, VERSION_1};

/// How much padding to add after each record's content (section 3.3 recommends 8-byte
/// alignment; most web servers send none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    #[default]
    None,
    /// Pad content to a multiple of 8 bytes.
    Align8,
    /// Always this many padding bytes.
    Fixed(u8),
}

impl Padding {
    fn for_len(self, len: usize) -> u8 {
        match self {
            Padding::None => 0,
            Padding::Align8 => ((8 - len % 8) % 8) as u8,
            Padding::Fixed(n) => n,
        }
    }
}

/// Appends one record.
///
/// # Panics
/// If `content` is longer than 65535 bytes; use [`stream`] for longer data.
pub fn record(
    out: &mut Vec<u8>,
    record_type: RecordType,
    request_id: u16,
    content: &[u8],
    padding: Padding,
) {
    assert!(
        content.len() <= MAX_CONTENT_LEN,
        "record content of {} bytes exceeds 65535",
        content.len()
    );
    let pad = padding.for_len(content.len());
    let h = Header {
        version: VERSION_1,
        record_type,
        request_id,
        content_length: content.len() as u16,
        padding_length: pad,
    };
    out.reserve(HEADER_LEN + content.len() + pad as usize);
    out.extend_from_slice(&h.to_bytes());
    out.extend_from_slice(content);
    out.resize(out.len() + pad as usize, 0);
}

pub fn begin_request(out: &mut Vec<u8>, request_id: u16, role: Role, flags: u8) {
    let r = role.as_u16().to_be_bytes();
    record(
        out,
        RecordType::BeginRequest,
        request_id,
        &[r[0], r[1], flags, 0, 0, 0, 0, 0],
        Padding::None,
    );
}

pub fn abort_request(out: &mut Vec<u8>, request_id: u16) {
    record(
        out,
        RecordType::AbortRequest,
        request_id,
        &[],
        Padding::None,
    );
}

pub fn end_request(
    out: &mut Vec<u8>,
    request_id: u16,
    app_status: u32,
    protocol_status: ProtocolStatus,
) {
    let a = app_status.to_be_bytes();
    let body = [a[0], a[1], a[2], a[3], protocol_status.as_u8(), 0, 0, 0];
    record(
        out,
        RecordType::EndRequest,
        request_id,
        &body,
        Padding::None,
    );
}

/// Appends `data` as stream records of at most `max_record` content bytes each (clamped to
/// 1..=65535). Empty `data` appends nothing: close the stream with [`stream_end`].
pub fn stream(
    out: &mut Vec<u8>,
    record_type: RecordType,
    request_id: u16,
    data: &[u8],
    max_record: usize,
    padding: Padding,
) {
    let max = max_record.clamp(1, MAX_CONTENT_LEN);
    for chunk in data.chunks(max) {
        record(out, record_type, request_id, chunk, padding);
    }
}

/// The empty record that closes a stream.
pub fn stream_end(out: &mut Vec<u8>, record_type: RecordType, request_id: u16) {
    record(out, record_type, request_id, &[], Padding::None);
}

/// Appends PARAMS records holding `pairs`, packing whole pairs into records of at most
/// `max_record` bytes; a single pair larger than that is split over records, as the spec
/// allows. Does not close the stream.
pub fn params<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    request_id: u16,
    pairs: &[(N, V)],
    max_record: usize,
) {
    params_from(
        out,
        request_id,
        pairs.iter().map(|(n, v)| (n.as_ref(), v.as_ref())),
        max_record,
    );
}

/// [`params`] from any sequence of pairs.
pub fn params_from<'a>(
    out: &mut Vec<u8>,
    request_id: u16,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    max_record: usize,
) {
    let mut w = ParamsWriter::new(out, request_id, max_record);
    for (n, v) in pairs {
        w.pair(n, v);
    }
    w.finish();
}

/// Appends PARAMS records one pair at a time, as [`params`] does. Records are written in place
/// (the header first, its length filled in when the record is full), so each pair is copied
/// once. Call [`ParamsWriter::finish`] at the end; it does not close the stream.
#[derive(Debug)]
pub struct ParamsWriter<'a> {
    out: &'a mut Vec<u8>,
    request_id: u16,
    max: usize,
    /// Where the header of the record being filled starts.
    open: Option<usize>,
}

impl<'a> ParamsWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>, request_id: u16, max_record: usize) -> ParamsWriter<'a> {
        ParamsWriter {
            out,
            request_id,
            max: max_record.clamp(1, MAX_CONTENT_LEN),
            open: None,
        }
    }

    /// One name-value pair.
    pub fn pair(&mut self, n: &[u8], v: &[u8]) {
        let len = nv::encoded_len(n, v);
        if let Some(h) = self.open
            && self.out.len() - h - HEADER_LEN + len > self.max
        {
            close_params(self.out, h);
            self.open = None;
        }
        if len > self.max {
            let mut body = Vec::with_capacity(len);
            nv::encode_pair(&mut body, n, v);
            stream(
                self.out,
                RecordType::Params,
                self.request_id,
                &body,
                self.max,
                Padding::None,
            );
            return;
        }
        self.open_record();
        nv::encode_pair_sized(self.out, n, v, len);
    }

    /// Pairs encoded beforehand with [`nv::encode_pair`], back to back. When they all fit in
    /// the record being filled (or in a new one) they are appended in one copy, which is what
    /// [`ParamsWriter::pair`] would write for each of them; otherwise `one_by_one` writes them
    /// as separate pairs, so that records still break between pairs.
    pub fn encoded_pairs(&mut self, encoded: &[u8], one_by_one: impl FnOnce(&mut Self)) {
        let fits = match self.open {
            Some(h) => self.out.len() - h - HEADER_LEN + encoded.len() <= self.max,
            None => encoded.len() <= self.max,
        };
        if !fits {
            one_by_one(self);
            return;
        }
        if encoded.is_empty() {
            return;
        }
        self.open_record();
        self.out.extend_from_slice(encoded);
    }

    fn open_record(&mut self) {
        if self.open.is_none() {
            self.open = Some(self.out.len());
            let h = Header {
                version: VERSION_1,
                record_type: RecordType::Params,
                request_id: self.request_id,
                content_length: 0,
                padding_length: 0,
            };
            self.out.extend_from_slice(&h.to_bytes());
        }
    }

    /// Closes the record being filled.
    pub fn finish(self) {
        if let Some(h) = self.open {
            close_params(self.out, h);
        }
    }
}

/// Writes the content length of the record whose header starts at `h` (content runs to the end).
fn close_params(out: &mut [u8], h: usize) {
    let len = (out.len() - h - HEADER_LEN) as u16;
    // contentLengthB1, contentLengthB0 follow version, type and the request id.
    out[h + 4..h + 6].copy_from_slice(&len.to_be_bytes());
}

/// FCGI_GET_VALUES asking for `names` (values are sent empty).
pub fn get_values<N: AsRef<[u8]>>(out: &mut Vec<u8>, names: &[N]) {
    let mut body = Vec::new();
    for n in names {
        nv::encode_pair(&mut body, n.as_ref(), b"");
    }
    record(
        out,
        RecordType::GetValues,
        NULL_REQUEST_ID,
        &body,
        Padding::None,
    );
}

pub fn get_values_result<N: AsRef<[u8]>, V: AsRef<[u8]>>(out: &mut Vec<u8>, values: &[(N, V)]) {
    let body = nv::encode_pairs(values);
    record(
        out,
        RecordType::GetValuesResult,
        NULL_REQUEST_ID,
        &body,
        Padding::None,
    );
}

pub fn unknown_type(out: &mut Vec<u8>, unknown: u8) {
    record(
        out,
        RecordType::UnknownType,
        NULL_REQUEST_ID,
        &[unknown, 0, 0, 0, 0, 0, 0, 0],
        Padding::None,
    );
}

impl Record {
    /// Encodes this record as exactly one record on the wire.
    ///
    /// # Panics
    /// If its content does not fit one record (more than 65535 bytes).
    pub fn encode(&self, out: &mut Vec<u8>, padding: Padding) {
        let mut body = Vec::new();
        let content: &[u8] = match self {
            Record::BeginRequest { role, flags, .. } => {
                let r = role.as_u16().to_be_bytes();
                body.extend_from_slice(&[r[0], r[1], *flags, 0, 0, 0, 0, 0]);
                &body
            }
            Record::AbortRequest { .. } => &[],
            Record::EndRequest {
                app_status,
                protocol_status,
                ..
            } => {
                body.extend_from_slice(&app_status.to_be_bytes());
                body.extend_from_slice(&[protocol_status.as_u8(), 0, 0, 0]);
                &body
            }
            Record::Stream { content, .. } | Record::Unknown { content, .. } => content,
            Record::GetValues { names: pairs } | Record::GetValuesResult { values: pairs } => {
                body = nv::encode_pairs(pairs);
                &body
            }
            Record::UnknownType { unknown_type } => {
                body.extend_from_slice(&[*unknown_type, 0, 0, 0, 0, 0, 0, 0]);
                &body
            }
        };
        record(out, self.record_type(), self.request_id(), content, padding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_pairs_write_what_pair_by_pair_writes() {
        let before: [(&[u8], &[u8]); 2] = [(b"A", b"1"), (b"LONGER_NAME", b"some value")];
        let run: [(&[u8], &[u8]); 3] = [(b"B", b""), (b"CC", b"22"), (b"DDD", &[b'x'; 130])];
        let mut encoded = Vec::new();
        for (n, v) in run {
            nv::encode_pair(&mut encoded, n, v);
        }
        // Record sizes where the run fits after the first pairs, only in a record of its own,
        // or not at all (then it is split between pairs, as pair by pair).
        for max in [1, 5, 20, 40, 150, 160, 175, 200, 1000] {
            for lead in 0..=before.len() {
                let mut want = Vec::new();
                let mut w = ParamsWriter::new(&mut want, 1, max);
                for (n, v) in &before[..lead] {
                    w.pair(n, v);
                }
                for (n, v) in run {
                    w.pair(n, v);
                }
                w.pair(b"Z", b"end");
                w.finish();
                let mut got = Vec::new();
                let mut w = ParamsWriter::new(&mut got, 1, max);
                for (n, v) in &before[..lead] {
                    w.pair(n, v);
                }
                w.encoded_pairs(&encoded, |w| {
                    for (n, v) in run {
                        w.pair(n, v);
                    }
                });
                w.pair(b"Z", b"end");
                w.finish();
                assert_eq!(got, want, "max {max}, {lead} pairs before");
            }
        }
    }

    #[test]
    fn padding_for_len() {
        let align: Vec<u8> = (0..=17).map(|n| Padding::Align8.for_len(n)).collect();
        assert_eq!(
            align,
            [0, 7, 6, 5, 4, 3, 2, 1, 0, 7, 6, 5, 4, 3, 2, 1, 0, 7]
        );
        assert_eq!(Padding::Align8.for_len(MAX_CONTENT_LEN), 1);
        assert_eq!(Padding::None.for_len(5), 0);
        assert_eq!(Padding::Fixed(0).for_len(5), 0);
        assert_eq!(Padding::Fixed(255).for_len(0), 255);
        assert_eq!(Padding::default(), Padding::None);
    }
}
