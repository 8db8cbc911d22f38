//! Turning a rule and a request into the exact bytes, pauses and ending of the answer.
//!
//! [`plan`] builds a [`Program`] up front: the answer is fully determined by the script and what
//! the request carried, so the connection loop only has to play it back (write, sleep, finish).
//! Keeping this pure makes every byte-level behaviour unit-testable without sockets.

mod cgi;
mod echo;
mod wire;

use std::collections::VecDeque;
use std::time::Duration;

use fastcgi::RecordType;

use crate::journal::RequestEntry;
use crate::script::{Action, Chunk, ChunkStream, CutThen, Rule};

pub use cgi::{header_block, reason_phrase};
pub use echo::echo_body;

/// One step of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// One write call on the connection.
    Write(Vec<u8>),
    /// Wait before the next step.
    Sleep(Duration),
    /// The answer is over.
    Finish(Finish),
}

/// How an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// END_REQUEST was written: the request is complete.
    Complete,
    /// Close the connection.
    Close,
    /// Reset the connection.
    Reset,
    /// Stay silent; keep the connection until the peer closes.
    Hang,
}

/// The steps of one answer, in order; the last is always a [`Step::Finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub steps: VecDeque<Step>,
}

impl Program {
    /// All bytes the program writes, concatenated.
    pub fn bytes(&self) -> Vec<u8> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Write(b) => Some(b.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    pub fn finish(&self) -> Option<Finish> {
        match self.steps.back() {
            Some(Step::Finish(f)) => Some(*f),
            _ => None,
        }
    }
}

/// The answer `rule` gives to `req`.
pub fn plan(rule: &Rule, req: &RequestEntry) -> Program {
    let done = |f| Program {
        steps: VecDeque::from([Step::Finish(f)]),
    };
    let (head, chunks) = match rule.action {
        Action::Close => return done(Finish::Close),
        Action::Reset => return done(Finish::Reset),
        Action::NeverAnswer => return done(Finish::Hang),
        Action::Reply => (header_block(rule, &[]), rule.body.clone()),
        Action::Echo => (
            header_block(rule, &[("Content-Type", "application/json")]),
            vec![Chunk::stdout(echo_body(req))],
        ),
    };
    let mut out = wire::Output::new(rule, req.request_id);
    if let Some(t) = rule.unknown_record_type {
        out.record(RecordType::from_u8(t), b"mock");
    }
    out.stream(RecordType::Stdout, &head);
    let mut body_sent = 0usize;
    for c in &chunks {
        if c.delay_ms > 0 {
            out.sleep(Duration::from_millis(c.delay_ms));
        }
        match (c.stream, rule.cut) {
            (ChunkStream::Stderr, _) => out.stream(RecordType::Stderr, &c.bytes),
            (ChunkStream::Stdout, None) => out.stream(RecordType::Stdout, &c.bytes),
            (ChunkStream::Stdout, Some(cut)) => {
                let room = cut.after_body_bytes.saturating_sub(body_sent);
                let take = room.min(c.bytes.len());
                out.stream(RecordType::Stdout, &c.bytes[..take]);
                body_sent += take;
                if take < c.bytes.len() {
                    return out.finish(cut_finish(cut.then));
                }
            }
        }
    }
    if let Some(cut) = rule.cut {
        return out.finish(cut_finish(cut.then));
    }
    out.end_stream(RecordType::Stdout);
    out.end_request(rule.app_status, rule.protocol_status);
    out.finish(Finish::Complete)
}

fn cut_finish(then: CutThen) -> Finish {
    match then {
        CutThen::Close => Finish::Close,
        CutThen::Reset => Finish::Reset,
        CutThen::Hang => Finish::Hang,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Script;
    use fastcgi::{Decoder, ProtocolStatus, Record, Role};

    fn req() -> RequestEntry {
        RequestEntry {
            seq: 7,
            connection: 2,
            request_id: 1,
            role: Role::Responder,
            flags: 1,
            keep_conn: true,
            params: vec![("A".into(), "1".into()), ("A".into(), "2".into())],
            params_records: vec![8, 0],
            params_complete: true,
            stdin: b"hi".to_vec(),
            stdin_len: 2,
            stdin_records: vec![2, 0],
            stdin_complete: true,
            data_len: 0,
            data_records: vec![],
            abort_ms: None,
            begin_ms: 0,
            end_ms: None,
            rule: None,
            outcome: crate::journal::Outcome::InProgress,
        }
    }

    fn rule(toml: &str) -> Rule {
        Script::from_toml_str(&format!("[default]\n{toml}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .default
    }

    fn decode(bytes: &[u8]) -> Vec<Record> {
        let mut d = Decoder::default();
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(r) = d.decode().unwrap() {
            out.push(r);
        }
        assert!(d.is_at_boundary());
        out
    }

    fn stdout_of(records: &[Record]) -> Vec<u8> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Stream {
                    record_type: RecordType::Stdout,
                    content,
                    ..
                } => Some(content.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn reply_is_one_write_with_headers_body_and_end() {
        let r = rule(
            r#"status = 404
headers = [["X-A", "1"], ["X-A", "2"]]
body = [{ data = "nope" }, { stderr = "err" }]
app_status = 3"#,
        );
        let p = plan(&r, &req());
        assert_eq!(p.steps.len(), 2, "{p:?}");
        assert_eq!(p.finish(), Some(Finish::Complete));
        let recs = decode(&p.bytes());
        assert_eq!(
            stdout_of(&recs),
            b"Status: 404 Not Found\r\nX-A: 1\r\nX-A: 2\r\n\r\nnope".to_vec()
        );
        assert!(recs.contains(&Record::Stream {
            record_type: RecordType::Stderr,
            request_id: 1,
            content: "err".into()
        }));
        assert_eq!(
            recs.last(),
            Some(&Record::EndRequest {
                request_id: 1,
                app_status: 3,
                protocol_status: ProtocolStatus::RequestComplete
            })
        );
    }

    #[test]
    fn delays_and_splits_become_sleeps_between_writes() {
        let r = rule(
            r#"body = [{ data = "abc" }, { data = "def", delay_ms = 30 }]
split_at = [2]
split_pause_ms = 5
omit_header_terminator = true"#,
        );
        let p = plan(&r, &req());
        let shape: Vec<String> = p
            .steps
            .iter()
            .map(|s| match s {
                Step::Write(b) => format!("w{}", b.len()),
                Step::Sleep(d) => format!("s{}", d.as_millis()),
                Step::Finish(_) => "f".into(),
            })
            .collect();
        // 2 bytes, pause, rest of record 1 (header 8 + "abc" 3 = 11, minus 2 = 9), delay, rest.
        assert_eq!(shape, vec!["w2", "s5", "w9", "s30", "w35", "f"]);
    }

    #[test]
    fn split_every_and_padding_and_wrong_id() {
        let r = rule(
            r#"body = [{ data = "abc" }]
split_every = 1
padding = "align8"
reply_request_id = 9"#,
        );
        let p = plan(&r, &req());
        let bytes = p.bytes();
        assert!(
            p.steps.iter().all(
                |s| matches!(s, Step::Write(b) if b.len() == 1) || !matches!(s, Step::Write(_))
            )
        );
        assert_eq!(bytes.len() % 8, 0);
        for r in decode(&bytes) {
            assert_eq!(r.request_id(), 9);
        }
    }

    #[test]
    fn cut_stops_after_body_bytes() {
        let r = rule(
            r#"headers = [["A", "b"]]
body = [{ data = "0123" }, { data = "4567" }]
cut = { after_body_bytes = 6, then = "reset" }"#,
        );
        let p = plan(&r, &req());
        assert_eq!(p.finish(), Some(Finish::Reset));
        let recs = decode(&p.bytes());
        assert_eq!(stdout_of(&recs), b"A: b\r\n\r\n012345".to_vec());
        assert!(!recs.iter().any(|r| matches!(r, Record::EndRequest { .. })));
    }

    #[test]
    fn unknown_record_and_bad_version() {
        let r = rule("unknown_record_type = 42\nbad_version = 2");
        let bytes = plan(&r, &req()).bytes();
        assert_eq!(bytes[0], 2);
        assert_eq!(bytes[1], 42);
        let mut fixed = bytes.clone();
        fixed[0] = 1;
        let recs = decode(&fixed);
        assert!(matches!(
            recs[0],
            Record::Unknown {
                record_type: RecordType::Other(42),
                ..
            }
        ));
    }

    #[test]
    fn echo_describes_the_request() {
        let p = plan(&Rule::echo(), &req());
        let out = stdout_of(&decode(&p.bytes()));
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(head, "Content-Type: application/json");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["params"], serde_json::json!([["A", "1"], ["A", "2"]]));
        assert_eq!(v["stdin"], "hi");
        assert_eq!(v["stdin_len"], 2);
        assert_eq!(v["keep_conn"], true);
        assert_eq!(v["connection"], 2);
        assert_eq!(v["request"], 7);
    }

    #[test]
    fn header_block_variants() {
        let r = rule("status = 299\nheaders = [[\"X\", \"y\"]]\nomit_header_terminator = true");
        assert_eq!(header_block(&r, &[]), b"Status: 299\r\nX: y\r\n".to_vec());
        let r = rule("status = 200\nreason = \"Fine\"\nnewline = \"lf\"");
        assert_eq!(
            header_block(&r, &[("A", "b")]),
            b"Status: 200 Fine\nA: b\n\n".to_vec()
        );
        assert_eq!(header_block(&Rule::default(), &[]), b"\r\n".to_vec());
    }

    #[test]
    fn large_body_is_split_into_records() {
        let r = rule("body = [{ data = \"x\", repeat = 70000 }]\nrecord_size = 30000");
        let recs = decode(&plan(&r, &req()).bytes());
        let sizes: Vec<usize> = recs
            .iter()
            .filter_map(|r| match r {
                Record::Stream { content, .. } => Some(content.len()),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![2, 30000, 30000, 10000, 0]);
    }

    #[test]
    fn silent_actions() {
        assert_eq!(
            plan(&rule("action = \"never_answer\""), &req()).finish(),
            Some(Finish::Hang)
        );
        assert_eq!(
            plan(&rule("action = \"reset\""), &req()).bytes(),
            Vec::<u8>::new()
        );
    }
}
