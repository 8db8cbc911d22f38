//! One served connection: decode records, track requests, play their answers back, and decide
//! when the connection ends.
//!
//! The FastCGI rules (request ids, streams and their ends, what is a protocol error) are
//! `fastcgi::conn::Server`'s; this module adds the script, the journal, the timing and the
//! misbehaviour. Answers are written as the script's bytes ([`behaviour`]), which may be
//! malformed on purpose, so they bypass the machine's encoders; the refusals and management
//! answers go through them.
//!
//! Everything happens on one task with a `biased` select over (shutdown, a due answer step, input,
//! idle timeout), so a run is deterministic under a simulated clock. Answers are precomputed
//! [`Program`]s; a step that sleeps just sets the request's due time.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::time::Duration;

use bytes::Bytes;
use fastcgi::conn::{Server, ServerError, ServerEvent};
use fastcgi::nv::NvError;
use fastcgi::{ProtocolStatus, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::behaviour::{self, Finish, Step};
use crate::journal::{ClosedBy, ManagementKind, NoteKind, Outcome};
use crate::net::Connection;
use crate::script::{Action, ReplyAfter, RuleRef};
use crate::server::Shared;

/// Whether the connection goes on, and if not, how it ends.
#[derive(Debug)]
enum Ctl {
    Continue,
    Close(ClosedBy, &'static str),
    Reset(&'static str),
}

impl Ctl {
    fn from_io(e: &io::Error) -> Ctl {
        match e.kind() {
            io::ErrorKind::ConnectionReset => Ctl::Close(ClosedBy::Reset, "connection_reset"),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
                Ctl::Close(ClosedBy::Peer, "broken_pipe")
            }
            _ => Ctl::Close(ClosedBy::Peer, "io_error"),
        }
    }
}

enum Event {
    Shutdown,
    Due,
    Read(io::Result<usize>),
    Idle,
}

/// A request between BEGIN_REQUEST and its end.
struct Active {
    seq: u64,
    keep_conn: bool,
    role: Role,
    stdin_done: bool,
    data_done: bool,
    rule: Option<RuleRef>,
    started: bool,
    program: Option<VecDeque<Step>>,
    due: Instant,
    hung: bool,
}

/// A FCGI_GET_VALUES_RESULT not sent yet (model libfcgi: it goes out once the header of the
/// next record has arrived).
struct HeldValues {
    bytes: Vec<u8>,
    /// The journal says it is held (it was still held when the input ran out).
    noted: bool,
}

pub(crate) struct Conn<'a> {
    id: u64,
    /// Index of the worker serving this connection.
    worker: usize,
    shared: &'a Shared,
    server: Server,
    /// The requests the server machine tracks, with what the script made of them.
    active: BTreeMap<u16, Active>,
    last_activity: Instant,
    held_values: Option<HeldValues>,
    /// BEGIN_REQUESTs received on this connection.
    begun: u64,
}

impl<'a> Conn<'a> {
    pub(crate) fn new(id: u64, worker: usize, shared: &'a Shared) -> Self {
        Conn {
            id,
            worker,
            shared,
            server: Server::new(shared.script.server.max_params_bytes),
            active: BTreeMap::new(),
            last_activity: Instant::now(),
            held_values: None,
            begun: 0,
        }
    }

    pub(crate) async fn run<S: Connection>(
        mut self,
        mut stream: S,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        let ctl = loop {
            let due = self.next_due();
            let idle = self.idle_deadline();
            // Disabled select branches still build their future; give them a harmless deadline.
            let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
            let event = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => Event::Shutdown,
                () = sleep_until(due.unwrap_or(far)), if due.is_some() => Event::Due,
                r = stream.read(&mut buf) => Event::Read(r),
                () = sleep_until(idle.unwrap_or(far)), if idle.is_some() => Event::Idle,
            };
            let ctl = match event {
                Event::Shutdown => Ctl::Close(ClosedBy::Backend, "shutdown"),
                Event::Due => self.run_due(&mut stream).await,
                Event::Read(Ok(0)) => self.eof(),
                Event::Read(Ok(_)) if self.exits_before_reading() => {
                    // The worker exits with the bytes unread: the kernel resets the connection.
                    Ctl::Reset("dropped_unread")
                }
                Event::Read(Ok(n)) => self.input(&buf[..n], &mut stream).await,
                Event::Read(Err(e)) => Ctl::from_io(&e),
                Event::Idle => Ctl::Close(ClosedBy::Backend, "idle_timeout"),
            };
            if !matches!(ctl, Ctl::Continue) {
                break ctl;
            }
        };
        self.close(stream, ctl).await;
    }

    /// `drop_unread_after`: the connection has carried its requests and sits idle, and the
    /// worker leaves as the next bytes come (php-fpm's idle child told to exit by a reload).
    fn exits_before_reading(&self) -> bool {
        self.shared
            .script
            .server
            .drop_unread_after
            .is_some_and(|n| self.begun >= n && self.active.is_empty())
    }

    fn journal(&self) -> &crate::journal::Journal {
        &self.shared.journal
    }

    fn next_due(&self) -> Option<Instant> {
        self.active
            .values()
            .filter(|a| a.program.is_some())
            .map(|a| a.due)
            .min()
    }

    fn idle_deadline(&self) -> Option<Instant> {
        let t = self.shared.script.server.idle_timeout_ms?;
        self.active
            .is_empty()
            .then(|| self.last_activity + Duration::from_millis(t))
    }

    async fn close<S: Connection>(self, mut stream: S, ctl: Ctl) {
        for a in self.active.values().filter(|a| a.hung) {
            self.journal().end_request(a.seq, Outcome::Hung);
        }
        // Close first, journal second: once the journal says closed, the socket is.
        match ctl {
            Ctl::Continue => {}
            Ctl::Close(ClosedBy::Backend, reason) => {
                let _ = stream.shutdown().await;
                drop(stream);
                self.journal()
                    .close_connection(self.id, ClosedBy::Backend, reason);
            }
            Ctl::Close(by, reason) => {
                drop(stream);
                self.journal().close_connection(self.id, by, reason);
            }
            Ctl::Reset(reason) => {
                stream.reset();
                self.journal()
                    .close_connection(self.id, ClosedBy::Backend, reason);
            }
        }
    }

    fn eof(&self) -> Ctl {
        if let Err(e) = self.server.eof() {
            self.journal()
                .note(NoteKind::ProtocolError, self.id, e.to_string());
        }
        Ctl::Close(ClosedBy::Peer, "eof")
    }

    fn protocol_error(&self, message: String) -> Ctl {
        self.journal()
            .note(NoteKind::ProtocolError, self.id, message);
        Ctl::Close(ClosedBy::Backend, "protocol_error")
    }

    fn ignored(&self, message: String) -> Ctl {
        self.journal().note(NoteKind::Ignored, self.id, message);
        Ctl::Continue
    }

    async fn write<S: Connection>(stream: &mut S, bytes: &[u8]) -> Ctl {
        match stream.write_all(bytes).await {
            Ok(()) => Ctl::Continue,
            Err(e) => Ctl::from_io(&e),
        }
    }

    async fn input<S: Connection>(&mut self, data: &[u8], stream: &mut S) -> Ctl {
        self.last_activity = Instant::now();
        self.server.feed(data);
        loop {
            if self.server.buffered() >= fastcgi::HEADER_LEN
                && let Some(held) = self.held_values.take()
            {
                if held.noted {
                    self.journal().note(
                        NoteKind::Model,
                        self.id,
                        "held FCGI_GET_VALUES_RESULT sent: the next record header arrived",
                    );
                }
                let ctl = Self::write(stream, &held.bytes).await;
                if !matches!(ctl, Ctl::Continue) {
                    return ctl;
                }
            }
            match self.server.next_event() {
                Ok(Some(event)) => {
                    let ctl = self.event(event, stream).await;
                    if !matches!(ctl, Ctl::Continue) {
                        return ctl;
                    }
                }
                Ok(None) => {
                    if let Some(held) = self.held_values.as_mut().filter(|h| !h.noted) {
                        held.noted = true;
                        self.journal().note(
                            NoteKind::Model,
                            self.id,
                            "FCGI_GET_VALUES_RESULT held until the next record header arrives \
                             (model libfcgi)",
                        );
                    }
                    return Ctl::Continue;
                }
                Err(e) => return self.server_error(&e),
            }
        }
    }

    /// A protocol error the server machine found: noted, and the connection closed.
    fn server_error(&self, e: &ServerError) -> Ctl {
        if let ServerError::Params {
            request_id,
            error: NvError::Truncated,
        } = e
            && let Some(a) = self.active.get(request_id)
        {
            // The empty record that ended the stream arrived: the journal shows it.
            self.journal().update_request(a.seq, |r| {
                r.params_records.push(0);
                r.params_complete = true;
            });
        }
        self.protocol_error(e.to_string())
    }

    async fn event<S: Connection>(&mut self, event: ServerEvent, stream: &mut S) -> Ctl {
        match event {
            ServerEvent::BeginRequest {
                request_id,
                role,
                flags,
            } => {
                self.begun += 1;
                self.begin(request_id, role, flags, stream).await
            }
            ServerEvent::Abort { request_id } => self.abort(request_id, stream).await,
            ServerEvent::Params {
                request_id,
                len,
                pairs,
            } => {
                self.update(request_id, |r| {
                    r.params_records.push(len);
                    r.params.extend(pairs);
                });
                self.maybe_start(request_id);
                Ctl::Continue
            }
            ServerEvent::ParamsEnd { request_id } => {
                self.update(request_id, |r| {
                    r.params_records.push(0);
                    r.params_complete = true;
                });
                self.choose_rule(request_id);
                self.maybe_start(request_id);
                Ctl::Continue
            }
            ServerEvent::Stdin { request_id, data } => self.stdin(request_id, &data),
            ServerEvent::StdinEnd { request_id } => self.stdin(request_id, &[]),
            ServerEvent::Data { request_id, data } => self.data(request_id, data.len()),
            ServerEvent::DataEnd { request_id } => self.data(request_id, 0),
            ServerEvent::GetValues { names } => self.get_values(names, stream).await,
            ServerEvent::UnknownType { record_type } => {
                self.journal()
                    .record_management(self.id, ManagementKind::UnknownType { record_type });
                let mut out = Vec::new();
                self.server.unknown_type(&mut out, record_type);
                Self::write(stream, &out).await
            }
            ServerEvent::Ignored(why) => self.ignored(why.to_string()),
        }
    }

    /// Updates the journal entry of active request `id`.
    fn update(&self, id: u16, f: impl FnOnce(&mut crate::journal::RequestEntry)) {
        if let Some(a) = self.active.get(&id) {
            self.journal().update_request(a.seq, f);
        }
    }

    async fn begin<S: Connection>(
        &mut self,
        id: u16,
        role: Role,
        flags: u8,
        stream: &mut S,
    ) -> Ctl {
        let seq = self.journal().begin_request(self.id, id, role, flags);
        let keep_conn = flags & fastcgi::KEEP_CONN != 0;
        if !self.shared.script.server.multiplex && !self.active.is_empty() {
            // The only connection-level refusal that leaves the active request alone.
            let mut out = Vec::new();
            self.server
                .end_request(&mut out, id, 0, ProtocolStatus::CantMpxConn);
            self.journal().end_request(seq, Outcome::CantMpxConn);
            return Self::write(stream, &out).await;
        }
        self.shared.workers().count_request(self.worker);
        if let Role::Other(_) = role {
            let mut out = Vec::new();
            self.server
                .end_request(&mut out, id, 0, ProtocolStatus::UnknownRole);
            let ctl = Self::write(stream, &out).await;
            self.journal().end_request(seq, Outcome::UnknownRole);
            if !matches!(ctl, Ctl::Continue) {
                return ctl;
            }
            return self.after_end(keep_conn);
        }
        self.active.insert(
            id,
            Active {
                seq,
                keep_conn,
                role,
                stdin_done: false,
                data_done: false,
                rule: None,
                started: false,
                program: None,
                due: Instant::now(),
                hung: false,
            },
        );
        Ctl::Continue
    }

    async fn abort<S: Connection>(&mut self, id: u16, stream: &mut S) -> Ctl {
        let Some(a) = self.active.get(&id) else {
            return self.ignored(format!("ABORT_REQUEST for inactive request id {id}"));
        };
        self.journal().abort_request(a.seq);
        let rule = a.rule.map(|r| self.shared.script.rule(r));
        if a.hung || rule.is_some_and(|r| r.action == Action::NeverAnswer) {
            return Ctl::Continue;
        }
        let app_status = rule.map_or(0, |r| r.app_status);
        let (seq, keep_conn) = (a.seq, a.keep_conn);
        self.active.remove(&id);
        let mut out = Vec::new();
        self.server
            .end_request(&mut out, id, app_status, ProtocolStatus::RequestComplete);
        let ctl = Self::write(stream, &out).await;
        self.journal().end_request(seq, Outcome::Aborted);
        if !matches!(ctl, Ctl::Continue) {
            return ctl;
        }
        self.after_end(keep_conn)
    }

    /// A STDIN record of request `id` (empty: the end of the stream).
    fn stdin(&mut self, id: u16, content: &[u8]) -> Ctl {
        let limit = self.shared.script.server.max_stdin_bytes;
        let len = content.len();
        if let Some(a) = self.active.get_mut(&id) {
            a.stdin_done = len == 0;
        }
        self.update(id, |r| {
            r.stdin_records.push(len);
            r.stdin_len += len as u64;
            r.stdin_complete = len == 0;
            let room = limit.saturating_sub(r.stdin.len());
            r.stdin.extend_from_slice(&content[..len.min(room)]);
        });
        self.maybe_start(id);
        Ctl::Continue
    }

    /// A DATA record of request `id` of `len` bytes (0: the end of the stream).
    fn data(&mut self, id: u16, len: usize) -> Ctl {
        if let Some(a) = self.active.get_mut(&id) {
            a.data_done = len == 0;
        }
        self.update(id, |r| {
            r.data_records.push(len);
            r.data_len += len as u64;
        });
        self.maybe_start(id);
        Ctl::Continue
    }

    fn choose_rule(&mut self, id: u16) {
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        let script = &self.shared.script;
        let journal = &self.shared.journal;
        let rule = journal
            .with(|s| s.request(a.seq).map(|r| script.select(r.seq, &r.params)))
            .unwrap_or(RuleRef::Default);
        a.rule = Some(rule);
        let label = script.label(rule);
        journal.update_request(a.seq, |r| r.rule = Some(label));
    }

    /// Builds the answer once the request has what its rule waits for.
    fn maybe_start(&mut self, id: u16) {
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        let Some(rule_ref) = a.rule else {
            return;
        };
        if a.started {
            return;
        }
        let rule = self.shared.script.rule(rule_ref);
        let ready = match rule.reply_after {
            ReplyAfter::Params => true,
            ReplyAfter::Stdin => a.stdin_done && (a.role != Role::Filter || a.data_done),
        };
        if !ready {
            return;
        }
        let Some(entry) = self.shared.journal.request(a.seq) else {
            return;
        };
        a.started = true;
        a.program = Some(behaviour::plan(rule, &entry).steps);
        a.due = Instant::now();
    }

    async fn get_values<S: Connection>(
        &mut self,
        names: Vec<(Bytes, Bytes)>,
        stream: &mut S,
    ) -> Ctl {
        let settings = &self.shared.script.server;
        let values = settings.get_values_table();
        let asked: Vec<String> = names
            .iter()
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect();
        let reply: Vec<(String, String)> = asked
            .iter()
            .filter_map(|n| values.get(n).map(|v| (n.clone(), v.clone())))
            .collect();
        let mut out = Vec::new();
        self.server.get_values_result(&mut out, &reply);
        self.journal().record_management(
            self.id,
            ManagementKind::GetValues {
                names: asked,
                reply,
            },
        );
        if settings.ignore_get_values {
            return Ctl::Continue;
        }
        if settings.get_values_waits_for_next_header() {
            // Sent by `input` once the next record header is buffered (at once if it already is).
            self.held_values = Some(HeldValues {
                bytes: out,
                noted: false,
            });
            return Ctl::Continue;
        }
        Self::write(stream, &out).await
    }

    /// Plays back every answer that is due, in request-id order.
    async fn run_due<S: Connection>(&mut self, stream: &mut S) -> Ctl {
        let now = Instant::now();
        let due: Vec<u16> = self
            .active
            .iter()
            .filter(|(_, a)| a.program.is_some() && a.due <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let ctl = self.play(id, stream).await;
            if !matches!(ctl, Ctl::Continue) {
                return ctl;
            }
        }
        Ctl::Continue
    }

    /// Runs request `id`'s answer until it sleeps or ends.
    async fn play<S: Connection>(&mut self, id: u16, stream: &mut S) -> Ctl {
        loop {
            let Some(a) = self.active.get_mut(&id) else {
                return Ctl::Continue;
            };
            let seq = a.seq;
            let Some(step) = a.program.as_mut().and_then(|p| p.pop_front()) else {
                a.program = None;
                return Ctl::Continue;
            };
            match step {
                Step::Write(bytes) => {
                    let ctl = Self::write(stream, &bytes).await;
                    if !matches!(ctl, Ctl::Continue) {
                        return ctl;
                    }
                }
                Step::Sleep(d) if d.is_zero() => {}
                Step::Sleep(d) => {
                    a.due = Instant::now() + d;
                    return Ctl::Continue;
                }
                Step::Finish(Finish::Complete) => {
                    let keep_conn = a.keep_conn;
                    self.active.remove(&id);
                    // The script wrote END_REQUEST (its own bytes, maybe not for this id).
                    self.server.finish(id);
                    self.journal().end_request(seq, Outcome::Complete);
                    return self.after_end(keep_conn);
                }
                Step::Finish(Finish::Close) => {
                    self.journal().end_request(seq, Outcome::BackendClosed);
                    return Ctl::Close(ClosedBy::Backend, "script_close");
                }
                Step::Finish(Finish::Reset) => {
                    self.journal().end_request(seq, Outcome::BackendReset);
                    return Ctl::Reset("script_reset");
                }
                Step::Finish(Finish::Hang) => {
                    a.program = None;
                    a.hung = true;
                    return Ctl::Continue;
                }
            }
        }
    }

    /// After an END_REQUEST: FCGI_KEEP_CONN clear means the application closes (spec 5.1); a
    /// worker that served its `max_requests` exits, closing the connection.
    fn after_end(&mut self, keep_conn: bool) -> Ctl {
        self.last_activity = Instant::now();
        if !keep_conn {
            Ctl::Close(ClosedBy::Backend, "keep_conn_clear")
        } else if self.active.is_empty() && self.shared.worker_done(self.worker) {
            Ctl::Close(ClosedBy::Backend, "max_requests")
        } else if self.shared.script.server.always_close {
            Ctl::Close(ClosedBy::Backend, "always_close")
        } else {
            Ctl::Continue
        }
    }
}
