//! A client host: sends its sequence of requests to the proxy with hyper over turmoil TCP, one
//! HTTP connection for the sequence (`keep-alive`) or one per request, and records what came
//! back and when (virtual time). Every wait is bounded by the client's timeout.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, timeout_at};

use super::h2 as h2raw;
use super::raw::{self, RawOutcome};
use super::trace::Trace;
use crate::scenario::{
    ClientConnection, ClientOutcome, PlannedRequest, RequestSpec, Scenario, Transport,
};

/// The header that tags every request with its label, so that the request can be found in the
/// backends' journals (it arrives as the CGI param `HTTP_X_REQUEST_TAG`).
pub const TAG_HEADER: &str = "X-Request-Tag";
/// The CGI param the tag header becomes.
pub const TAG_PARAM: &str = "HTTP_X_REQUEST_TAG";
/// Where the proxy listens (instance 0; instance `i` is the host
/// [`crate::scenario::proxy_host`]`(i)` on the same port).
pub const PROXY_ADDR: &str = "proxy:80";
/// The port every simulated proxy instance listens on.
pub const PROXY_PORT: u16 = 80;

/// What happened to one request, as the client saw it.
#[derive(Debug, Clone)]
pub struct RequestResult {
    pub label: String,
    pub client: String,
    pub method: String,
    pub target: String,
    /// Scenario time the request was handed to the connection.
    pub sent_at: Duration,
    /// Virtual time the response head arrived.
    pub head_at: Option<Duration>,
    /// Virtual time the first byte of the response body arrived (not recorded for `raw`).
    pub first_body_at: Option<Duration>,
    /// Virtual time the request was resolved (complete body, error or timeout).
    pub done_at: Duration,
    pub outcome: ClientOutcome,
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub error: Option<String>,
    /// How many times a result was recorded for this request (exactly once is an invariant).
    pub resolutions: usize,
    /// For a raw request: the status of every response head on its connection.
    pub responses: Vec<u16>,
    /// For a raw request: the proxy closed the connection.
    pub closed: bool,
}

impl RequestResult {
    pub fn elapsed(&self) -> Duration {
        self.done_at.saturating_sub(self.sent_at)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Results by planned-request index.
pub type Results = Arc<Mutex<Vec<Option<RequestResult>>>>;

/// A request body: known length (Content-Length) or chunked.
#[derive(Debug)]
pub struct ReqBody {
    chunks: VecDeque<Bytes>,
    exact: Option<u64>,
}

impl ReqBody {
    fn new(spec: &RequestSpec) -> ReqBody {
        let data = Bytes::from(spec.body_bytes());
        match spec.chunked {
            Some(n) => ReqBody {
                chunks: data.chunks(n.max(1)).map(Bytes::copy_from_slice).collect(),
                exact: None,
            },
            None => ReqBody {
                exact: Some(data.len() as u64),
                chunks: if data.is_empty() {
                    VecDeque::new()
                } else {
                    VecDeque::from([data])
                },
            },
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .chunks
                .pop_front()
                .map(|c| Ok(Frame::data(c))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.exact.is_some()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Where a client's connections go, and the clock scenario time is read from. The same client
/// runs in the simulator and against a real proxy process.
#[derive(Debug, Clone, Copy)]
pub enum Dial {
    /// The simulated proxy host of instance `instance`; scenario time is virtual time since the
    /// boot ended at `t0`.
    Sim { t0: Duration, instance: usize },
    /// A real proxy listening at `addr`; scenario time is real time since `start`.
    Real {
        addr: std::net::SocketAddr,
        start: Instant,
    },
}

impl Dial {
    /// Scenario time now.
    fn now(&self) -> Duration {
        match self {
            Dial::Sim { t0, .. } => turmoil::sim_elapsed()
                .unwrap_or_default()
                .saturating_sub(*t0),
            Dial::Real { start, .. } => start.elapsed(),
        }
    }

    /// A raw exchange on a new connection.
    async fn raw(
        &self,
        bytes: &[u8],
        sending: raw::Sending,
        quiet: Duration,
        deadline: Instant,
    ) -> RawOutcome {
        match self {
            Dial::Sim { instance, .. } => {
                let connect = turmoil::net::TcpStream::connect(sim_addr(*instance));
                raw_exchange(connect, bytes, sending, quiet, deadline).await
            }
            Dial::Real { addr, .. } => {
                let connect = tokio::net::TcpStream::connect(*addr);
                raw_exchange(connect, bytes, sending, quiet, deadline).await
            }
        }
    }

    /// An HTTP/2 exchange written frame by frame on a new connection.
    async fn h2_frames(&self, plan: &h2raw::Plan, deadline: Instant) -> h2raw::Outcome {
        let failed = |outcome: ClientOutcome, e: String| h2raw::Outcome {
            timed_out: outcome == ClientOutcome::Timeout,
            error: Some(e),
            ..h2raw::Outcome::default()
        };
        match self {
            Dial::Sim { instance, .. } => {
                let connect = turmoil::net::TcpStream::connect(sim_addr(*instance));
                match open(deadline, connect).await {
                    Ok(s) => h2raw::exchange(s, plan, deadline).await,
                    Err((o, e)) => failed(o, e),
                }
            }
            Dial::Real { addr, .. } => {
                let connect = tokio::net::TcpStream::connect(*addr);
                match open(deadline, connect).await {
                    Ok(s) => h2raw::exchange(s, plan, deadline).await,
                    Err((o, e)) => failed(o, e),
                }
            }
        }
    }

    /// A new connection to the proxy speaking `transport`.
    async fn connect(
        &self,
        transport: Transport,
        deadline: Instant,
    ) -> Result<Sender, (ClientOutcome, String)> {
        match self {
            Dial::Sim { instance, .. } => {
                handshake(
                    transport,
                    deadline,
                    turmoil::net::TcpStream::connect(sim_addr(*instance)),
                )
                .await
            }
            Dial::Real { addr, .. } => {
                handshake(transport, deadline, tokio::net::TcpStream::connect(*addr)).await
            }
        }
    }
}

/// A client connection: HTTP/1.1, or HTTP/2 with prior knowledge.
#[derive(Debug)]
pub enum Sender {
    Http1(SendRequest<ReqBody>),
    H2c(hyper::client::conn::http2::SendRequest<ReqBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::H2c(s) => s.is_closed(),
        }
    }

    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::Http1(s) => s.ready().await,
            Sender::H2c(s) => s.ready().await,
        }
    }

    async fn send_request(
        &mut self,
        req: hyper::Request<ReqBody>,
    ) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::Http1(s) => s.send_request(req).await,
            Sender::H2c(s) => s.send_request(req).await,
        }
    }
}

/// `host:port` of simulated proxy instance `instance`.
fn sim_addr(instance: usize) -> String {
    if instance == 0 {
        PROXY_ADDR.to_string()
    } else {
        format!("{}:{PROXY_PORT}", crate::scenario::proxy_host(instance))
    }
}

/// The connection `connect` makes, by `deadline`.
async fn open<S, F>(deadline: Instant, connect: F) -> Result<S, (ClientOutcome, String)>
where
    F: std::future::Future<Output = std::io::Result<S>>,
{
    match timeout_at(deadline, connect).await {
        Err(_) => Err((ClientOutcome::Timeout, "connect timed out".into())),
        Ok(Err(e)) => Err((ClientOutcome::Error, format!("connect: {e}"))),
        Ok(Ok(s)) => Ok(s),
    }
}

/// A raw exchange on the connection `connect` makes.
async fn raw_exchange<S, F>(
    connect: F,
    bytes: &[u8],
    sending: raw::Sending,
    quiet: Duration,
    deadline: Instant,
) -> RawOutcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: std::future::Future<Output = std::io::Result<S>>,
{
    match open(deadline, connect).await {
        Ok(s) => raw::talk(s, bytes, sending, quiet, deadline).await,
        Err((outcome, e)) => RawOutcome {
            timed_out: outcome == ClientOutcome::Timeout,
            error: Some(e),
            ..RawOutcome::default()
        },
    }
}

async fn handshake<S, F>(
    transport: Transport,
    deadline: Instant,
    connect: F,
) -> Result<Sender, (ClientOutcome, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: std::future::Future<Output = std::io::Result<S>>,
{
    let stream = open(deadline, connect).await?;
    let failed = |e: hyper::Error| (ClientOutcome::Error, format!("handshake: {e}"));
    let timed_out = || (ClientOutcome::Timeout, "handshake timed out".to_string());
    match transport {
        Transport::Http1 => {
            let hs = hyper::client::conn::http1::handshake::<_, ReqBody>(TokioIo::new(stream));
            let (s, conn) = timeout_at(deadline, hs)
                .await
                .map_err(|_| timed_out())?
                .map_err(failed)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::Http1(s))
        }
        Transport::H2c => {
            let hs = hyper::client::conn::http2::handshake::<_, _, ReqBody>(
                hyper_util::rt::TokioExecutor::new(),
                TokioIo::new(stream),
            );
            let (s, conn) = timeout_at(deadline, hs)
                .await
                .map_err(|_| timed_out())?
                .map_err(failed)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H2c(s))
        }
    }
}

/// What a client host runs.
#[derive(Debug)]
pub struct ClientRun {
    pub name: String,
    /// Where to connect, and the scenario clock.
    pub dial: Dial,
    /// Scenario time the client starts.
    pub start: Duration,
    pub connection: ClientConnection,
    pub transport: Transport,
    /// Per request.
    pub timeout: Duration,
    /// (index into the results, request), in sending order.
    pub plan: Vec<(usize, PlannedRequest)>,
    /// `${name}` -> the address the proxy reaches that backend at, for request targets,
    /// header values and raw requests.
    pub addresses: Vec<(String, String)>,
    pub results: Results,
    pub trace: Trace,
}

/// What each of the scenario's clients runs: its requests out of `planned` (with their indexes
/// into `results`), connecting as `dials[client.proxy]` says (one per proxy instance),
/// `${name}` standing for the address in `addresses`.
pub fn runs(
    s: &Scenario,
    planned: &[PlannedRequest],
    dials: &[Dial],
    addresses: &[(String, String)],
    results: &Results,
    trace: &Trace,
) -> Vec<ClientRun> {
    s.clients
        .iter()
        .enumerate()
        .map(|(ci, c)| ClientRun {
            name: c.name.clone(),
            dial: dials.get(c.proxy as usize).copied().unwrap_or(dials[0]),
            start: c.start.0,
            connection: c.connection,
            transport: c.transport,
            timeout: c.timeout.0,
            plan: planned
                .iter()
                .enumerate()
                .filter(|(_, p)| p.client == ci)
                .map(|(i, p)| (i, p.clone()))
                .collect(),
            addresses: addresses.to_vec(),
            results: results.clone(),
            trace: trace.clone(),
        })
        .collect()
}

/// One client's whole sequence.
pub async fn run(c: ClientRun) -> turmoil::Result {
    let ClientRun {
        name,
        dial,
        start,
        connection,
        transport,
        timeout,
        plan,
        addresses,
        results,
        trace,
    } = c;
    let expand =
        |text: &str| crate::scenario::expand_names(text, addresses.iter().map(|(n, a)| (n, a)));
    tokio::time::sleep(start.saturating_sub(dial.now())).await;
    let mut sender: Option<Sender> = None;
    for (index, p) in plan {
        if let Some(at) = p.spec.at {
            tokio::time::sleep(at.0.saturating_sub(dial.now())).await;
        }
        if let Some(after) = p.spec.after {
            tokio::time::sleep(after.0).await;
        }
        let deadline = Instant::now() + timeout;
        let sent_at = dial.now();
        // A header block written field by field says its own method (if any).
        let method = p
            .spec
            .fields
            .as_ref()
            .and_then(|f| f.iter().find(|(n, _)| n == ":method"))
            .map_or_else(|| p.spec.method.clone(), |(_, v)| v.clone());
        let mut result = RequestResult {
            label: p.label.clone(),
            client: name.clone(),
            method: method.clone(),
            target: p.spec.target.clone(),
            sent_at,
            head_at: None,
            first_body_at: None,
            done_at: sent_at,
            outcome: ClientOutcome::Error,
            status: None,
            headers: Vec::new(),
            body: Vec::new(),
            error: None,
            resolutions: 1,
            responses: Vec::new(),
            closed: false,
        };
        trace.log(
            &name,
            &format!("-> {method} {} [{}]", p.spec.target, p.label),
        );
        let mut p = p;
        p.spec.target = expand(&p.spec.target);
        for (n, v) in &mut p.spec.headers {
            *n = expand(n);
            *v = expand(v);
        }
        let keep = match (&p.spec.raw, &p.spec.fields) {
            (_, Some(fields)) => {
                let plan = h2_plan(&p, fields, &expand);
                let o = dial.h2_frames(&plan, deadline).await;
                record_h2(&mut result, o, dial);
                // The exchange had a connection of its own.
                true
            }
            (Some(text), None) => {
                let bytes = raw::with_tag(expand(text).as_bytes(), TAG_HEADER, &p.label);
                let quiet = p.spec.quiet.map_or(RAW_QUIET, |d| d.0);
                let sending = raw::Sending {
                    half_close: p.spec.half_close,
                    trickle: p.spec.trickle.map(|d| d.0),
                };
                let o = dial.raw(&bytes, sending, quiet, deadline).await;
                record_raw(&mut result, o, dial);
                // A kept connection is left alone: the raw request had its own.
                true
            }
            (None, None) => exchange(&mut sender, transport, &p, deadline, dial, &mut result).await,
        };
        result.done_at = dial.now();
        trace.log(&name, &describe(&result));
        if !keep || connection == ClientConnection::PerRequest {
            sender = None;
        }
        let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = all.get_mut(index) {
            match slot {
                Some(prev) => prev.resolutions += 1,
                None => *slot = Some(result),
            }
        }
    }
    Ok(())
}

/// The frames of an h2c request given as `fields`: the block as written (each name and value
/// with `${...}` expanded) and the tag last; after a reset or a flood, a well-formed GET of the
/// target whose answer is the request's.
fn h2_plan(
    p: &PlannedRequest,
    fields: &[(String, String)],
    expand: &dyn Fn(&str) -> String,
) -> h2raw::Plan {
    let mut block: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .map(|(n, v)| (expand(n).into_bytes(), expand(v).into_bytes()))
        .collect();
    let tag = |suffix: &str| format!("{}{suffix}", p.label).into_bytes();
    let flood = p.spec.rapid_reset.unwrap_or(0);
    let (own, follow) = if p.spec.reset {
        (tag(".reset"), true)
    } else {
        (tag(""), flood > 0)
    };
    block.push((TAG_HEADER.to_ascii_lowercase().into_bytes(), own));
    let authority = fields
        .iter()
        .find(|(n, _)| n == ":authority")
        .map_or_else(|| "example.com".to_string(), |(_, v)| expand(v));
    h2raw::Plan {
        fields: block,
        body: p.spec.body_bytes(),
        reset: p.spec.reset,
        rapid_reset: flood,
        follow_up: follow.then(|| h2raw::follow_up(&authority, &p.spec.target, &p.label)),
    }
}

/// An h2c exchange's outcome as the request's result.
fn record_h2(r: &mut RequestResult, o: h2raw::Outcome, dial: Dial) {
    r.closed = o.closed || o.goaway.is_some();
    r.error = o.why();
    r.status = o.status;
    r.headers = o.headers;
    r.body = o.body;
    if r.status.is_some() {
        r.head_at = Some(dial.now());
        r.responses = r.status.into_iter().collect();
    }
    r.outcome = match (o.status, o.complete) {
        (Some(_), true) => ClientOutcome::Complete,
        (Some(_), false) => ClientOutcome::Truncated,
        (None, _) if o.timed_out => ClientOutcome::Timeout,
        (None, _) => ClientOutcome::Error,
    };
    if r.outcome == ClientOutcome::Complete {
        r.error = None;
    }
}

/// How long a raw exchange waits for more after a complete response.
const RAW_QUIET: Duration = Duration::from_millis(500);

/// A raw exchange's outcome as the request's result: the first response counts as the answer.
fn record_raw(r: &mut RequestResult, o: RawOutcome, dial: Dial) {
    r.responses = o.responses.iter().map(|x| x.status).collect();
    r.closed = o.closed;
    r.error = o.error;
    match o.responses.into_iter().next() {
        Some(first) => {
            r.head_at = Some(dial.now());
            r.status = Some(first.status);
            r.headers = first.headers;
            r.body = first.body;
            r.outcome = if first.complete {
                ClientOutcome::Complete
            } else {
                ClientOutcome::Truncated
            };
        }
        None if o.timed_out => r.outcome = ClientOutcome::Timeout,
        None => {
            r.outcome = ClientOutcome::Error;
            if r.error.is_none() {
                r.error = Some(if o.garbage > 0 {
                    format!("{} bytes that are no HTTP response", o.garbage)
                } else {
                    "closed without a response".into()
                });
            }
        }
    }
}

fn describe(r: &RequestResult) -> String {
    let what = match (r.outcome, r.status) {
        (ClientOutcome::Complete, Some(s)) => format!("{s} ({} body bytes)", r.body.len()),
        (ClientOutcome::Truncated, Some(s)) => {
            format!("{s} truncated after {} body bytes", r.body.len())
        }
        (o, _) => format!("{o:?}"),
    };
    match &r.error {
        Some(e) => format!("<- {what} [{}]: {e}", r.label),
        None => format!("<- {what} [{}]", r.label),
    }
}

/// Sends one request and reads the response. Returns whether the connection may carry the
/// next request.
async fn exchange(
    sender: &mut Option<Sender>,
    transport: Transport,
    p: &PlannedRequest,
    deadline: Instant,
    dial: Dial,
    r: &mut RequestResult,
) -> bool {
    let fail = |r: &mut RequestResult, outcome: ClientOutcome, e: String| {
        r.outcome = outcome;
        r.error = Some(e);
        false
    };
    // A kept connection the proxy closed is replaced, as a browser would.
    if let Some(s) = sender.as_mut() {
        let ready = !s.is_closed()
            && timeout_at(deadline, s.ready())
                .await
                .is_ok_and(|x| x.is_ok());
        if !ready {
            *sender = None;
        }
    }
    if sender.is_none() {
        match dial.connect(transport, deadline).await {
            Ok(s) => *sender = Some(s),
            Err((outcome, e)) => return fail(r, outcome, e),
        }
    }
    let Some(s) = sender.as_mut() else {
        return false;
    };
    let host = p
        .spec
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.as_str());
    let mut req = hyper::Request::builder().method(p.spec.method.as_str());
    match transport {
        Transport::Http1 => {
            req = req.uri(p.spec.target.as_str());
            if host.is_none() {
                req = req.header("Host", "example.com");
            }
            for (n, v) in &p.spec.headers {
                req = req.header(n.as_str(), v.as_str());
            }
        }
        Transport::H2c => {
            // The Host becomes `:authority` (RFC 9113 8.3.1).
            let host = host.unwrap_or("example.com");
            req = req.uri(format!("http://{host}{}", p.spec.target));
            for (n, v) in &p.spec.headers {
                if !n.eq_ignore_ascii_case("host") {
                    req = req.header(n.as_str(), v.as_str());
                }
            }
        }
    }
    req = req.header(TAG_HEADER, p.label.as_str());
    let req = match req.body(ReqBody::new(&p.spec)) {
        Ok(req) => req,
        Err(e) => return fail(r, ClientOutcome::Error, format!("bad request: {e}")),
    };
    let resp = match timeout_at(deadline, s.send_request(req)).await {
        Err(_) => return fail(r, ClientOutcome::Timeout, "no response head in time".into()),
        Ok(Err(e)) => return fail(r, ClientOutcome::Error, format!("{e}")),
        Ok(Ok(resp)) => resp,
    };
    r.head_at = Some(dial.now());
    r.status = Some(resp.status().as_u16());
    r.headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let close = r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let mut body = resp.into_body();
    loop {
        match timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return fail(
                    r,
                    ClientOutcome::Timeout,
                    "body not complete in time".into(),
                );
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return fail(r, ClientOutcome::Truncated, format!("{e}")),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    if r.first_body_at.is_none() && !d.is_empty() {
                        r.first_body_at = Some(dial.now());
                    }
                    r.body.extend_from_slice(&d);
                }
            }
        }
    }
    r.outcome = ClientOutcome::Complete;
    !close
}
