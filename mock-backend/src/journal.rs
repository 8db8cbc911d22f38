//! The journal: everything the mock saw and did, queryable while the server runs and written as
//! JSON lines to an optional sink.
//!
//! Times are milliseconds since the journal was created (the server start), read from
//! `tokio::time::Instant` only, so that they are virtual under a simulation. Everything is kept in
//! `Vec`s in arrival order: nothing that reaches the output depends on hash order.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fastcgi::Role;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// The mock closed it (see the reason), including a scripted reset.
    Backend,
    /// The peer closed it (EOF, or a broken pipe on write).
    Peer,
    /// The peer reset it (ECONNRESET).
    Reset,
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::Backend => "backend",
            ClosedBy::Peer => "peer",
            ClosedBy::Reset => "reset",
        }
    }
}

/// One accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionEntry {
    /// 1-based, in accept order.
    pub id: u64,
    pub peer: String,
    pub opened_ms: u64,
    /// When the mock started reading it (later than `opened_ms` when held at capacity).
    pub served_ms: Option<u64>,
    pub closed_ms: Option<u64>,
    pub closed_by: Option<ClosedBy>,
    /// Why it closed, e.g. `keep_conn_clear`, `idle_timeout`, `eof`, `protocol_error`.
    pub close_reason: Option<String>,
    /// Request numbers seen on it, in order.
    pub requests: Vec<u64>,
}

impl ConnectionEntry {
    pub fn is_open(&self) -> bool {
        self.closed_ms.is_none()
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished yet.
    InProgress,
    /// END_REQUEST sent after the scripted answer.
    Complete,
    /// Refused with END_REQUEST{CANT_MPX_CONN}.
    CantMpxConn,
    /// Refused with END_REQUEST{UNKNOWN_ROLE}.
    UnknownRole,
    /// ABORT_REQUEST received and answered with END_REQUEST.
    Aborted,
    /// The script closed the connection before END_REQUEST.
    BackendClosed,
    /// The script reset the connection before END_REQUEST.
    BackendReset,
    /// The script stopped answering (never_answer, or a cut with `then = "hang"`), and the
    /// connection ended later.
    Hung,
    /// The connection ended (peer close, error, shutdown) while the request was active.
    ConnectionEnded,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Complete => "complete",
            Outcome::CantMpxConn => "cant_mpx_conn",
            Outcome::UnknownRole => "unknown_role",
            Outcome::Aborted => "aborted",
            Outcome::BackendClosed => "backend_closed",
            Outcome::BackendReset => "backend_reset",
            Outcome::Hung => "hung",
            Outcome::ConnectionEnded => "connection_ended",
        }
    }
}

/// One request (one BEGIN_REQUEST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEntry {
    /// The request number: 1-based, over all connections, in BEGIN_REQUEST order.
    pub seq: u64,
    pub connection: u64,
    pub request_id: u16,
    pub role: Role,
    pub flags: u8,
    pub keep_conn: bool,
    /// In wire order, duplicates kept.
    pub params: Vec<(Bytes, Bytes)>,
    /// Content length of each PARAMS record, the closing empty one included.
    pub params_records: Vec<usize>,
    pub params_complete: bool,
    /// STDIN bytes (up to `max_stdin_bytes`).
    pub stdin: Vec<u8>,
    /// All STDIN bytes received, kept or not.
    pub stdin_len: u64,
    /// Content length of each STDIN record, the closing empty one included.
    pub stdin_records: Vec<usize>,
    pub stdin_complete: bool,
    pub data_len: u64,
    pub data_records: Vec<usize>,
    pub abort_ms: Option<u64>,
    pub begin_ms: u64,
    pub end_ms: Option<u64>,
    /// Label of the rule that answered, once chosen.
    pub rule: Option<String>,
    pub outcome: Outcome,
}

impl RequestEntry {
    /// The first value of a param, lossily decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of a param, in wire order.
    pub fn params_named(&self, name: &str) -> Vec<String> {
        self.params
            .iter()
            .filter(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// All params, lossily decoded, in wire order.
    pub fn params_lossy(&self) -> Vec<(String, String)> {
        self.params
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    pub fn stdin_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdin).into_owned()
    }

    pub fn aborted(&self) -> bool {
        self.abort_ms.is_some()
    }

    pub fn is_finished(&self) -> bool {
        self.outcome != Outcome::InProgress
    }

    pub fn to_json(&self) -> Value {
        let role = match self.role {
            Role::Responder => json!("responder"),
            Role::Authorizer => json!("authorizer"),
            Role::Filter => json!("filter"),
            Role::Other(n) => json!(n),
        };
        let params: Vec<Value> = self
            .params_lossy()
            .into_iter()
            .map(|(n, v)| json!([n, v]))
            .collect();
        json!({
            "event": "request",
            "request": self.seq,
            "conn": self.connection,
            "request_id": self.request_id,
            "role": role,
            "flags": self.flags,
            "keep_conn": self.keep_conn,
            "params": params,
            "params_records": self.params_records,
            "stdin": self.stdin_lossy(),
            "stdin_len": self.stdin_len,
            "stdin_records": self.stdin_records,
            "data_len": self.data_len,
            "data_records": self.data_records,
            "abort": self.aborted(),
            "abort_ms": self.abort_ms,
            "begin_ms": self.begin_ms,
            "end_ms": self.end_ms,
            "rule": self.rule,
            "outcome": self.outcome.as_str(),
        })
    }
}

/// A management record received (request id 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementEntry {
    pub connection: u64,
    pub at_ms: u64,
    pub kind: ManagementKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagementKind {
    /// FCGI_GET_VALUES: the names asked and the pairs answered.
    GetValues {
        names: Vec<String>,
        reply: Vec<(String, String)>,
    },
    /// A management record of an unknown type, answered with FCGI_UNKNOWN_TYPE.
    UnknownType { record_type: u8 },
}

impl ManagementEntry {
    pub fn to_json(&self) -> Value {
        match &self.kind {
            ManagementKind::GetValues { names, reply } => json!({
                "event": "management",
                "conn": self.connection,
                "at_ms": self.at_ms,
                "type": "get_values",
                "names": names,
                "reply": reply.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            }),
            ManagementKind::UnknownType { record_type } => json!({
                "event": "management",
                "conn": self.connection,
                "at_ms": self.at_ms,
                "type": "unknown_type",
                "record_type": record_type,
            }),
        }
    }
}

/// Something worth knowing that is neither a connection nor a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// Malformed input from the peer; the connection was closed.
    ProtocolError,
    /// A record the mock ignored (inactive request id, wrong direction).
    Ignored,
    /// A server-side problem (accept failed, journal sink failed).
    ServerError,
    /// The backend model acted: a worker started (spawn delay) or exited (max_requests), a
    /// FCGI_GET_VALUES answer was held or sent late.
    Model,
}

impl NoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::ProtocolError => "protocol_error",
            NoteKind::Ignored => "ignored",
            NoteKind::ServerError => "server_error",
            NoteKind::Model => "model",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: NoteKind,
    /// 0 when not tied to a connection.
    pub connection: u64,
    pub at_ms: u64,
    pub message: String,
}

/// A copy of the journal's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub connections: Vec<ConnectionEntry>,
    pub requests: Vec<RequestEntry>,
    pub management: Vec<ManagementEntry>,
    pub notes: Vec<Note>,
}

impl Snapshot {
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub fn connection(&self, id: u64) -> Option<&ConnectionEntry> {
        self.connections
            .get(usize::try_from(id).ok()?.checked_sub(1)?)
    }

    /// Request number `seq` (1-based).
    pub fn request(&self, seq: u64) -> Option<&RequestEntry> {
        self.requests
            .get(usize::try_from(seq).ok()?.checked_sub(1)?)
    }

    pub fn requests_on(&self, connection: u64) -> Vec<&RequestEntry> {
        self.requests
            .iter()
            .filter(|r| r.connection == connection)
            .collect()
    }

    pub fn open_connections(&self) -> usize {
        self.connections.iter().filter(|c| c.is_open()).count()
    }

    pub fn finished_requests(&self) -> usize {
        self.requests.iter().filter(|r| r.is_finished()).count()
    }

    pub fn protocol_errors(&self) -> Vec<&Note> {
        self.notes
            .iter()
            .filter(|n| n.kind == NoteKind::ProtocolError)
            .collect()
    }
}

/// The shared journal. Cloning gives another handle on the same journal.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    start: Instant,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    snap: Snapshot,
    lines: Vec<String>,
    sink: Option<Box<dyn Write + Send>>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Journal")
            .field("connections", &st.snap.connections.len())
            .field("requests", &st.snap.requests.len())
            .field("sink", &st.sink.is_some())
            .finish()
    }
}

impl Default for Journal {
    fn default() -> Self {
        Journal::new()
    }
}

impl Journal {
    /// A journal whose clock starts now.
    pub fn new() -> Self {
        Journal {
            inner: Arc::new(Inner {
                start: Instant::now(),
                state: Mutex::new(State {
                    snap: Snapshot::default(),
                    lines: Vec::new(),
                    sink: None,
                }),
                changed: Notify::new(),
            }),
        }
    }

    /// A journal that also writes each JSON line to `sink` as it happens.
    pub fn with_sink(sink: Box<dyn Write + Send>) -> Self {
        let j = Journal::new();
        j.lock().sink = Some(sink);
        j
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not hide the journal from the test that reads it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Milliseconds since the journal was created.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A copy of everything so far.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().snap.clone()
    }

    /// Runs `f` on the current contents without copying them.
    pub fn with<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.lock().snap)
    }

    /// The JSON lines written so far (also when there is no sink).
    pub fn lines(&self) -> Vec<String> {
        self.lock().lines.clone()
    }

    pub fn connection_count(&self) -> usize {
        self.with(|s| s.connection_count())
    }

    pub fn connections(&self) -> Vec<ConnectionEntry> {
        self.with(|s| s.connections.clone())
    }

    pub fn requests(&self) -> Vec<RequestEntry> {
        self.with(|s| s.requests.clone())
    }

    /// Request number `seq` (1-based).
    pub fn request(&self, seq: u64) -> Option<RequestEntry> {
        self.with(|s| s.request(seq).cloned())
    }

    pub fn requests_on(&self, connection: u64) -> Vec<RequestEntry> {
        self.with(|s| s.requests_on(connection).into_iter().cloned().collect())
    }

    pub fn management(&self) -> Vec<ManagementEntry> {
        self.with(|s| s.management.clone())
    }

    pub fn notes(&self) -> Vec<Note> {
        self.with(|s| s.notes.clone())
    }

    /// Waits until `pred` holds. Wrap it in a timeout: it waits forever otherwise.
    pub async fn wait_for(&self, mut pred: impl FnMut(&Snapshot) -> bool) {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            // Registering before checking means no change can slip between check and wait.
            notified.as_mut().enable();
            if self.with(&mut pred) {
                return;
            }
            notified.await;
        }
    }

    fn emit(&self, st: &mut State, line: Value) {
        let text = line.to_string();
        if let Some(sink) = st.sink.as_mut() {
            let ok = writeln!(sink, "{text}").and_then(|()| sink.flush());
            if ok.is_err() {
                // A broken sink must not take the server down; keep the in-memory journal.
                st.sink = None;
            }
        }
        st.lines.push(text);
    }

    fn changed(&self) {
        self.inner.changed.notify_waiters();
    }

    pub(crate) fn open_connection(&self, peer: &str) -> u64 {
        let at = self.now_ms();
        let mut st = self.lock();
        let id = st.snap.connections.len() as u64 + 1;
        st.snap.connections.push(ConnectionEntry {
            id,
            peer: peer.to_string(),
            opened_ms: at,
            served_ms: None,
            closed_ms: None,
            closed_by: None,
            close_reason: None,
            requests: Vec::new(),
        });
        let line = json!({"event": "connection_open", "conn": id, "peer": peer, "at_ms": at});
        self.emit(&mut st, line);
        drop(st);
        self.changed();
        id
    }

    pub(crate) fn serve_connection(&self, id: u64) {
        let at = self.now_ms();
        self.update_conn(id, |c| c.served_ms = Some(at));
        self.changed();
    }

    fn update_conn(&self, id: u64, f: impl FnOnce(&mut ConnectionEntry)) {
        let mut st = self.lock();
        let idx = usize::try_from(id).ok().and_then(|i| i.checked_sub(1));
        if let Some(c) = idx.and_then(|i| st.snap.connections.get_mut(i)) {
            f(c);
        }
    }

    /// Records the close and ends every request still active on the connection.
    pub(crate) fn close_connection(&self, id: u64, by: ClosedBy, reason: &str) {
        let at = self.now_ms();
        let mut st = self.lock();
        let Some(idx) = usize::try_from(id).ok().and_then(|i| i.checked_sub(1)) else {
            return;
        };
        let Some(c) = st.snap.connections.get_mut(idx) else {
            return;
        };
        if c.closed_ms.is_some() {
            return;
        }
        c.closed_ms = Some(at);
        c.closed_by = Some(by);
        c.close_reason = Some(reason.to_string());
        let line = json!({
            "event": "connection_close",
            "conn": id,
            "peer": c.peer,
            "opened_ms": c.opened_ms,
            "served_ms": c.served_ms,
            "closed_ms": at,
            "closed_by": by.as_str(),
            "reason": reason,
            "requests": c.requests,
        });
        let open: Vec<usize> = st
            .snap
            .requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.connection == id && !r.is_finished())
            .map(|(i, _)| i)
            .collect();
        for i in open {
            let r = &mut st.snap.requests[i];
            r.end_ms = Some(at);
            r.outcome = Outcome::ConnectionEnded;
            let l = r.to_json();
            self.emit(&mut st, l);
        }
        self.emit(&mut st, line);
        drop(st);
        self.changed();
    }

    pub(crate) fn begin_request(&self, conn: u64, request_id: u16, role: Role, flags: u8) -> u64 {
        let at = self.now_ms();
        let mut st = self.lock();
        let seq = st.snap.requests.len() as u64 + 1;
        st.snap.requests.push(RequestEntry {
            seq,
            connection: conn,
            request_id,
            role,
            flags,
            keep_conn: flags & fastcgi::KEEP_CONN != 0,
            params: Vec::new(),
            params_records: Vec::new(),
            params_complete: false,
            stdin: Vec::new(),
            stdin_len: 0,
            stdin_records: Vec::new(),
            stdin_complete: false,
            data_len: 0,
            data_records: Vec::new(),
            abort_ms: None,
            begin_ms: at,
            end_ms: None,
            rule: None,
            outcome: Outcome::InProgress,
        });
        if let Some(c) = usize::try_from(conn)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| st.snap.connections.get_mut(i))
        {
            c.requests.push(seq);
        }
        drop(st);
        self.changed();
        seq
    }

    /// Applies `f` to request `seq`; returns its result, if the request exists.
    pub(crate) fn update_request<R>(
        &self,
        seq: u64,
        f: impl FnOnce(&mut RequestEntry) -> R,
    ) -> Option<R> {
        let mut st = self.lock();
        let idx = usize::try_from(seq).ok()?.checked_sub(1)?;
        let r = st.snap.requests.get_mut(idx).map(f);
        drop(st);
        self.changed();
        r
    }

    pub(crate) fn abort_request(&self, seq: u64) {
        let at = self.now_ms();
        self.update_request(seq, |r| r.abort_ms = Some(at));
    }

    /// Ends request `seq` with `outcome` and writes its line (once).
    pub(crate) fn end_request(&self, seq: u64, outcome: Outcome) {
        let at = self.now_ms();
        let mut st = self.lock();
        let Some(idx) = usize::try_from(seq).ok().and_then(|i| i.checked_sub(1)) else {
            return;
        };
        let Some(r) = st.snap.requests.get_mut(idx) else {
            return;
        };
        if r.is_finished() {
            return;
        }
        r.end_ms = Some(at);
        r.outcome = outcome;
        let line = r.to_json();
        self.emit(&mut st, line);
        drop(st);
        self.changed();
    }

    pub(crate) fn record_management(&self, conn: u64, kind: ManagementKind) {
        let entry = ManagementEntry {
            connection: conn,
            at_ms: self.now_ms(),
            kind,
        };
        let mut st = self.lock();
        let line = entry.to_json();
        st.snap.management.push(entry);
        self.emit(&mut st, line);
        drop(st);
        self.changed();
    }

    pub(crate) fn note(&self, kind: NoteKind, conn: u64, message: impl Into<String>) {
        let note = Note {
            kind,
            connection: conn,
            at_ms: self.now_ms(),
            message: message.into(),
        };
        let line = json!({
            "event": kind.as_str(),
            "conn": conn,
            "at_ms": note.at_ms,
            "message": note.message,
        });
        let mut st = self.lock();
        st.snap.notes.push(note);
        self.emit(&mut st, line);
        drop(st);
        self.changed();
    }

    /// Writes a free-form line (e.g. `listening`).
    pub fn log(&self, line: Value) {
        let mut st = self.lock();
        self.emit(&mut st, line);
    }
}
