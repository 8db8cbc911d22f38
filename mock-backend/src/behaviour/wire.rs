//! Record encoding with the script's wire quirks (padding, request id, version byte) and the
//! split of the resulting byte stream into writes.

use std::collections::VecDeque;
use std::time::Duration;

use fastcgi::{Header, Padding, ProtocolStatus, RecordType, VERSION_1};

use super::{Finish, Program, Step};
use crate::script::Rule;

/// Accumulates an answer: records in, [`Step`]s out.
pub(super) struct Output {
    steps: VecDeque<Step>,
    pending: Vec<u8>,
    /// Bytes of the answer produced so far.
    offset: usize,
    split_at: Vec<usize>,
    split_every: Option<usize>,
    pause: Duration,
    /// Whether the last step is a split pause (dropped before the finish: nothing follows it).
    trailing_pause: bool,
    request_id: u16,
    padding: Padding,
    first_version: Option<u8>,
    records: usize,
    record_size: usize,
}

impl Output {
    pub(super) fn new(rule: &Rule, request_id: u16) -> Self {
        let mut split_at = rule.split_at.clone();
        split_at.sort_unstable();
        split_at.dedup();
        Output {
            steps: VecDeque::new(),
            pending: Vec::new(),
            offset: 0,
            split_at,
            split_every: rule.split_every.map(|n| n.get()),
            pause: Duration::from_millis(rule.split_pause_ms),
            trailing_pause: false,
            request_id: rule.reply_request_id.unwrap_or(request_id),
            padding: rule.padding,
            first_version: rule.bad_version,
            records: 0,
            record_size: rule
                .record_size
                .map_or(fastcgi::MAX_CONTENT_LEN, |n| usize::from(n.get())),
        }
    }

    /// One record; `content` must fit (callers chunk by `record_size` <= 65535).
    pub(super) fn record(&mut self, record_type: RecordType, content: &[u8]) {
        let pad = match self.padding {
            Padding::None => 0,
            Padding::Align8 => ((8 - content.len() % 8) % 8) as u8,
            Padding::Fixed(n) => n,
        };
        let version = match (self.records, self.first_version) {
            (0, Some(v)) => v,
            _ => VERSION_1,
        };
        self.records += 1;
        let header = Header {
            version,
            record_type,
            request_id: self.request_id,
            content_length: u16::try_from(content.len()).unwrap_or(u16::MAX),
            padding_length: pad,
        };
        let mut rec = Vec::with_capacity(8 + content.len() + usize::from(pad));
        rec.extend_from_slice(&header.to_bytes());
        rec.extend_from_slice(content);
        rec.resize(rec.len() + usize::from(pad), 0);
        self.bytes(&rec);
    }

    /// Stream data as records of at most `record_size` bytes; nothing for empty data (an empty
    /// record would end the stream).
    pub(super) fn stream(&mut self, record_type: RecordType, data: &[u8]) {
        for chunk in data.chunks(self.record_size.max(1)) {
            self.record(record_type, chunk);
        }
    }

    pub(super) fn end_stream(&mut self, record_type: RecordType) {
        self.record(record_type, &[]);
    }

    pub(super) fn end_request(&mut self, app_status: u32, protocol_status: u8) {
        let a = app_status.to_be_bytes();
        let p = ProtocolStatus::from_u8(protocol_status).as_u8();
        self.record(
            RecordType::EndRequest,
            &[a[0], a[1], a[2], a[3], p, 0, 0, 0],
        );
    }

    pub(super) fn sleep(&mut self, d: Duration) {
        self.flush();
        self.steps.push_back(Step::Sleep(d));
        self.trailing_pause = false;
    }

    pub(super) fn finish(mut self, f: Finish) -> Program {
        self.flush();
        if self.trailing_pause {
            self.steps.pop_back();
        }
        self.steps.push_back(Step::Finish(f));
        Program { steps: self.steps }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.steps
                .push_back(Step::Write(std::mem::take(&mut self.pending)));
            self.trailing_pause = false;
        }
    }

    /// The next forced write boundary after the current offset.
    fn next_boundary(&self) -> Option<usize> {
        let at = self.split_at.iter().copied().find(|&b| b > self.offset);
        let every = self.split_every.map(|k| (self.offset / k + 1) * k);
        match (at, every) {
            (Some(a), Some(e)) => Some(a.min(e)),
            (a, e) => a.or(e),
        }
    }

    fn bytes(&mut self, mut rest: &[u8]) {
        while !rest.is_empty() {
            match self.next_boundary() {
                Some(b) if b - self.offset <= rest.len() => {
                    let n = b - self.offset;
                    self.pending.extend_from_slice(&rest[..n]);
                    self.offset += n;
                    rest = &rest[n..];
                    self.flush();
                    if !self.pause.is_zero() {
                        self.steps.push_back(Step::Sleep(self.pause));
                        self.trailing_pause = true;
                    }
                }
                _ => {
                    self.pending.extend_from_slice(rest);
                    self.offset += rest.len();
                    rest = &[];
                }
            }
        }
    }
}
