//! The HTTP/1.1 front end: accepts connections, serves them with hyper, and shuts down
//! gracefully (stop accepting, let in-flight requests finish, then close).
//!
//! An idle client connection is parked: hyper's connection state, with its 8 KiB read and
//! 8 KiB write buffers, is taken apart and only the socket is kept, waiting for the client's
//! next bytes; then hyper takes over again with what that read returned put back in front
//! (usually the whole request head, so hyper needs no read of its own). Ten thousand idle
//! keep-alive clients so cost their tasks and sockets (about 3 KiB each), not 160 MiB of
//! buffers. A connection parks right after its first answer, and after later ones once it has
//! been idle for [`PARK_AFTER`], so back-to-back requests share one hyper session.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::answers;
use crate::body::{BodyError, ProxyBody};
use crate::handler::Proxy;
use crate::net::{Acceptor, ConnInfo, Connector, read_on_stack};
use std::net::SocketAddr;

/// Front-end limits and timeouts.
#[derive(Debug, Clone)]
pub struct FrontSettings {
    /// Time allowed to receive a complete request head (slowloris guard).
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request (Apache
    /// `KeepAliveTimeout`).
    pub keep_alive_timeout: Duration,
    /// Longest a write to the client may make no progress (a client that stops reading); then
    /// the connection is dropped.
    pub client_write_timeout: Duration,
    /// Largest request head, in bytes (beyond: 431).
    pub max_header_bytes: usize,
    /// Most request header fields (beyond: 431).
    pub max_headers: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Date header on responses (off in the simulator, where wall time is not virtual).
    pub date_header: bool,
    /// Client keep-alive (Apache `KeepAlive`); off: one request per connection.
    pub keep_alive: bool,
    /// Requests per client connection (Apache `MaxKeepAliveRequests`); the last one is
    /// answered with `Connection: close`. 0 = unlimited.
    pub max_keep_alive_requests: u32,
    /// TLS on this listener (with the ALPN protocols it offers).
    pub tls: Option<crate::tls::Acceptor>,
    /// HTTP/2: negotiated by ALPN over TLS; without TLS, accepted with prior knowledge (h2c).
    pub h2: bool,
    /// A TLS handshake must be complete this long after the accept.
    pub tls_handshake_timeout: Duration,
    /// HTTP/2 streams open at once on one connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub h2_max_streams: u32,
}

impl Default for FrontSettings {
    fn default() -> Self {
        FrontSettings {
            header_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(5),
            client_write_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            shutdown_grace: Duration::from_secs(30),
            date_header: true,
            keep_alive: true,
            max_keep_alive_requests: 100,
            tls: None,
            h2: false,
            tls_handshake_timeout: Duration::from_secs(10),
            h2_max_streams: 100,
        }
    }
}

/// What a listener serves with; a reload replaces it as a whole. Connections accepted from
/// then on use the new one; those of an older one are told to finish (`stop`): what is in
/// flight completes on the configuration it started with, then they close.
pub struct Generation<C: Connector> {
    pub proxy: Arc<Proxy<C>>,
    /// Per listener, by its configured address. A listener whose address a new generation
    /// does not have stops accepting (and its socket closes) when that generation comes.
    pub fronts: Vec<(SocketAddr, FrontSettings)>,
    /// Turns true when this generation is replaced, or at shutdown.
    pub stop: watch::Receiver<bool>,
}

impl<C: Connector> std::fmt::Debug for Generation<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("fronts", &self.fronts)
            .finish_non_exhaustive()
    }
}

/// Serves `acceptor` until `shutdown` turns true, then drains connections.
pub async fn serve<A: Acceptor, C: Connector>(
    acceptor: A,
    proxy: Arc<Proxy<C>>,
    settings: FrontSettings,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let key = SocketAddr::from(([0, 0, 0, 0], 0));
    let (tx, rx) = watch::channel(Arc::new(Generation {
        proxy,
        fronts: vec![(key, settings)],
        stop: shutdown.clone(),
    }));
    let r = serve_generations(acceptor, key, rx, shutdown).await;
    drop(tx);
    r
}

/// The HTTP/1.1 session settings of a listener.
fn h1_builder(settings: &FrontSettings) -> Arc<http1::Builder> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Not hyper's header_read_timeout: hyper arms its timer each time it starts reading a
        // head, including right before the connection is parked; `serve_client` keeps the same
        // deadline itself, with a timer only while a head is actually awaited.
        .header_read_timeout(None)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .max_headers(settings.max_headers)
        .auto_date_header(settings.date_header)
        .keep_alive(true);
    Arc::new(builder)
}

/// The next generation, or never if no more can come.
async fn next_generation<C: Connector>(
    gens: &mut watch::Receiver<Arc<Generation<C>>>,
) -> Arc<Generation<C>> {
    if gens.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
    gens.borrow_and_update().clone()
}

/// What ends a connection: `stop` (shutdown: in-flight requests finish, idle connections
/// close) and `retire` (its generation was replaced by a reload, or shutdown: a kept-alive
/// HTTP/1 connection serves one more request, the one the client may be sending, and closes
/// with it, so no request crosses a close the client did not hear of; HTTP/2 sends GOAWAY).
#[derive(Debug, Clone)]
struct Stops {
    stop: watch::Receiver<bool>,
    retire: watch::Receiver<bool>,
}

/// What a client connection's task holds besides its stream: where the connection came from,
/// what serves it, what ends it, and its slot among `limits.max_connections` and in the
/// listener's shutdown wait (both freed when this is dropped, with the connection).
struct Client<C: Connector> {
    info: ConnInfo,
    proxy: Arc<Proxy<C>>,
    builder: Arc<http1::Builder>,
    stops: Stops,
    waits: Waits,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _done: tokio::sync::mpsc::Sender<()>,
}

/// The settings of the listener `key` in `g`, if it still has it.
fn front_of<C: Connector>(g: &Generation<C>, key: SocketAddr) -> Option<FrontSettings> {
    g.fronts
        .iter()
        .find(|(a, _)| *a == key)
        .map(|(_, f)| f.clone())
}

/// Serves `acceptor` (the listener configured as `key` in each generation's `fronts`) with the
/// current generation of `gens` until `shutdown` turns true or a generation without `key`
/// comes, then closes the listening socket and waits for open connections up to the grace
/// period.
pub async fn serve_generations<A: Acceptor, C: Connector>(
    acceptor: A,
    key: SocketAddr,
    mut gens: watch::Receiver<Arc<Generation<C>>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut current = gens.borrow_and_update().clone();
    let mut settings = front_of(&current, key).unwrap_or_default();
    let mut builder = h1_builder(&settings);
    let (conn_done_tx, mut conn_done_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        // A slot first: at `limits.max_connections` the listener pauses and new connections
        // wait in the kernel's backlog.
        let slot = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            g = next_generation(&mut gens) => {
                let Some(f) = front_of(&g, key) else {
                    // Not listened on any more.
                    break;
                };
                current = g;
                settings = f;
                builder = h1_builder(&settings);
                continue;
            }
            s = current.proxy.admission().connection_slot() => s,
        };
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            a = acceptor.accept() => a,
        };
        let (stream, info) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // A generation that came during the accept: this connection is served by it, or, if
        // it has no such listener any more, by the one before, and the listener stops.
        let mut retired = false;
        if gens.has_changed().unwrap_or(false) {
            let g = gens.borrow_and_update().clone();
            match front_of(&g, key) {
                Some(f) => {
                    current = g;
                    settings = f;
                    builder = h1_builder(&settings);
                }
                None => retired = true,
            }
        }
        let client = Client {
            info,
            proxy: current.proxy.clone(),
            builder: builder.clone(),
            stops: Stops {
                stop: shutdown.clone(),
                retire: current.stop.clone(),
            },
            waits: Waits {
                next: settings.keep_alive_timeout,
                head: settings.header_read_timeout,
                last_request: if !settings.keep_alive {
                    1
                } else {
                    u64::from(settings.max_keep_alive_requests)
                },
            },
            _slot: slot,
            _done: conn_done_tx.clone(),
        };
        let stream = SendTimeout::new(stream, settings.client_write_timeout);
        // Each kind of connection is its own task, allocated at its own future's size: a plain
        // HTTP/1.1 connection (the common and the idle case) does not carry the size of a TLS
        // handshake or an HTTP/2 connection, nor a wrapper around `serve_client`.
        match settings.tls.clone() {
            None if settings.h2 => {
                tokio::spawn(serve_plain_h2c(stream, client, settings.clone()));
            }
            None => {
                tokio::spawn(serve_client(
                    Rewind::new(Bytes::new(), stream),
                    client,
                    None,
                ));
            }
            Some(acceptor) => {
                tokio::spawn(serve_tls(stream, acceptor, client, settings.clone()));
            }
        }
        if retired {
            break;
        }
    }
    // New connections are refused from now on (not left in a backlog nobody accepts from);
    // open ones finish, up to the grace period.
    drop(acceptor);
    drop(conn_done_tx);
    let _ = tokio::time::timeout(settings.shutdown_grace, conn_done_rx.recv()).await;
    Ok(())
}

/// Requests on one client connection, for parking.
#[derive(Debug)]
struct Activity {
    /// Requests started so far.
    started: AtomicU64,
    /// Requests whose response hyper has not finished with.
    in_flight: AtomicUsize,
    /// A request in this hyper session had a body, or asked to close: hyper alone decides
    /// what happens after it (it may not be at a message boundary, or must close).
    unparkable: AtomicBool,
    /// When `in_flight` last fell to zero (milliseconds after `epoch`).
    idle_since_ms: AtomicU64,
    /// Bytes hyper has read from the socket in this connection's sessions.
    bytes_read: AtomicU64,
    /// `bytes_read` when `in_flight` last fell to zero: more since means the next request has
    /// begun to arrive.
    idle_bytes: AtomicU64,
    /// The request after which the connection closes (0: none); a retirement brings it nearer.
    last_at: AtomicU64,
    epoch: tokio::time::Instant,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Retired (see `Stops`): the request after those started so far is the last, unless one
    /// before it already is.
    fn retire(&self) {
        let next = self.started.load(Ordering::Relaxed) + 1;
        let _ = self
            .last_at
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                (l == 0 || l > next).then_some(next)
            });
    }
}

/// One request counted in `in_flight` until dropped (with the response body, or with the
/// handler if the client went away first).
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0
                .idle_since_ms
                .store(self.0.now_ms(), Ordering::Relaxed);
            self.0
                .idle_bytes
                .store(self.0.bytes_read.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// The response body hyper writes, holding the request's [`InFlight`] until hyper is done,
/// and its access log line until then (Apache logs a request when its response is done).
#[derive(Debug)]
struct CountedBody {
    body: ProxyBody,
    _in_flight: InFlight,
    log: Option<Box<PendingLog>>,
    /// HTTP/2: when the body last gave data that has not been asked for again (milliseconds
    /// after the connection's epoch, plus one; 0: not waiting). Data given and not asked for
    /// again means the stream waits for the client's flow-control window.
    stall: Option<Arc<AtomicU64>>,
}

/// An Apache-style access log line in the making.
#[derive(Debug)]
struct PendingLog {
    active: Arc<crate::access_log::Active>,
    record: crate::access_log::Record,
    started: tokio::time::Instant,
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        if let Some(mut l) = self.log.take() {
            l.record.taken = l.started.elapsed();
            crate::access_log::record(&l.active, &l.record);
        }
    }
}

/// What the access log needs of a request, when an Apache-style log is configured.
fn start_log<B>(
    req: &Request<B>,
    info: ConnInfo,
    keepalives: u64,
    keeps_open: bool,
    tls: bool,
) -> Option<Box<PendingLog>> {
    let active = crate::access_log::custom()?;
    let headers = req.headers();
    let request_headers = active
        .request_headers()
        .iter()
        .map(|h| headers.get(h).cloned())
        .collect();
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| crate::uri::parse_host(h.as_bytes()).ok());
    let target = match crate::access_log::origin_form(req.uri()) {
        Some(t) => t.to_owned(),
        None => req.uri().to_string(),
    };
    Some(Box::new(PendingLog {
        active,
        record: crate::access_log::Record {
            peer: info.peer,
            local: info.local,
            received: std::time::SystemTime::now(),
            taken: Duration::ZERO,
            method: req.method().clone(),
            target,
            version: req.version(),
            status: 0,
            body_bytes: 0,
            head_bytes: 0,
            request_headers,
            response_headers: Vec::new(),
            host_port: host.as_ref().and_then(|h| h.port),
            host: host.map(|h| h.host),
            tls,
            keepalives,
            // HTTP/1.0 closes unless it asked to be kept alive.
            keeps_open: keeps_open
                && (req.version() != http::Version::HTTP_10
                    || headers.get_all(http::header::CONNECTION).iter().any(|v| {
                        v.as_bytes()
                            .split(|&b| b == b',')
                            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"keep-alive"))
                    })),
        },
        started: tokio::time::Instant::now(),
    }))
}

/// The response's part of the line: status, logged fields, the size of its head (as HTTP/1.1
/// writes it, with the Date field hyper adds).
fn log_head(log: &mut PendingLog, resp: &Response<ProxyBody>) {
    let r = &mut log.record;
    r.status = resp.status().as_u16();
    r.response_headers = log
        .active
        .response_headers()
        .iter()
        .map(|h| resp.headers().get(h).cloned())
        .collect();
    let reason = resp.status().canonical_reason().unwrap_or("").len() as u64;
    // "HTTP/1.1 200 OK\r\n", the fields, "date: ...\r\n" (37 bytes), the blank line.
    let mut head = 13 + reason + 2 + 37 + 2;
    for (n, v) in resp.headers() {
        head += (n.as_str().len() + 2 + v.len() + 2) as u64;
    }
    r.head_bytes = head;
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if let (Some(log), Poll::Ready(Some(Ok(frame)))) = (&mut self.log, &r)
            && let Some(d) = frame.data_ref()
        {
            log.record.body_bytes += d.len() as u64;
        }
        if let Some(stall) = &self.stall {
            let at = match &r {
                Poll::Ready(Some(Ok(_))) => self._in_flight.0.now_ms() + 1,
                _ => 0,
            };
            stall.store(at, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// How long a connection waits for a request.
#[derive(Debug, Clone, Copy)]
struct Waits {
    /// For the first byte of a request on a kept-alive connection (`keep_alive`).
    next: Duration,
    /// A request head must be complete this long after hyper starts on it, and the first
    /// request's head this long after the accept (`header_read`).
    head: Duration,
    /// The request after which the connection is closed (0: none).
    last_request: u64,
}

type Handled = Pin<Box<dyn Future<Output = Result<Response<CountedBody>, Infallible>> + Send>>;

/// How long an answered connection that has been parked before keeps its hyper session (with
/// hyper's read and write buffers) waiting for the next request before it is parked again. A
/// client under keep-alive load sends its next request within microseconds to a few
/// milliseconds, and taking hyper's connection apart and building a new one for each request
/// was a large part of the proxy's own CPU per request; a client that pauses longer costs one
/// rebuild. The buffers of an idle connection are held this long at most. A connection's first
/// parking is immediate: most connections that stop after their first request (one-shot
/// clients, the bulk of many idle ones) never come back, and holding buffers for all of them at
/// once costs memory that the allocator does not get back.
const PARK_AFTER: Duration = Duration::from_millis(50);

/// What a hyper session with nothing in flight is waiting for, with the request count it
/// started at (a new request starts a new wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A request head being received: complete within `header_read`, or the connection ends.
    Head(u64),
    /// Nothing yet after an answer: parked after [`PARK_AFTER`] (or at the keep-alive deadline
    /// if that comes first).
    Park(u64),
}

/// Serves one client connection until the client closes, its wait for a request (`Waits`) passes without a
/// request head, or shutdown: parked (socket only) until a byte arrives, then hyper until the
/// connection has been idle (answered, nothing in flight, no new bytes) for [`PARK_AFTER`],
/// then parked again.
//
// Not an `async fn`: its arguments would be kept twice in the future (as arguments and as the
// body's locals), and a parked connection's memory is this future's size.
#[allow(clippy::manual_async_fn)]
fn serve_client<S, C>(
    mut io: Rewind<S>,
    mut client: Client<C>,
    tls: Option<Arc<crate::tls::ConnTls>>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Connector,
{
    async move {
        // The whole `client` goes into the future, not only the fields used below: its slot is
        // held until the connection ends. Its fields are reached through this one reference
        // rather than one each: every reference kept across an await is 8 bytes of every idle
        // connection's task (see the test at the end).
        let client = &mut client;
        let activity = io.activity.clone();
        // Retired (see `Stops`): the next request is the last.
        let mut retired = false;
        activity
            .last_at
            .store(client.waits.last_request, Ordering::Relaxed);
        // Where the deadline for a session's first head runs from, if not from the session's start:
        // the end of the last response, for part of a head hyper had already read when it parked.
        let mut head_from: Option<tokio::time::Instant> = None;
        // Parked before and back: from now on, parked only after PARK_AFTER idle.
        let mut returned = false;
        loop {
            if io.pre.is_empty() {
                // Parked. The deadline for the next request head runs from the end of the last
                // response (from the accept for the first), as it does under hyper.
                let idle_for = activity
                    .now_ms()
                    .saturating_sub(activity.idle_since_ms.load(Ordering::Relaxed));
                let limit = if activity.started.load(Ordering::Relaxed) == 0 {
                    client.waits.head
                } else {
                    client.waits.next
                };
                let remaining = limit.saturating_sub(Duration::from_millis(idle_for));
                // One end is watched at a time, which keeps a parked connection's task small:
                // shutdown retires every generation right after stopping (and an older generation
                // is retired already), so a connection not yet retired hears of a shutdown as a
                // retirement first, then, retired, of the stop.
                let first = {
                    let (end, stopping) = if retired {
                        (&mut client.stops.stop, true)
                    } else {
                        (&mut client.stops.retire, false)
                    };
                    tokio::select! {
                        biased;
                        () = stopped(end) => Err(stopping),
                        r = tokio::time::timeout(
                            remaining,
                            read_on_stack::<PARKED_READ, _, _>(&mut io.inner, Bytes::copy_from_slice),
                        ) => {
                            Ok(r.ok().and_then(Result::ok).filter(|b| !b.is_empty()))
                        }
                    }
                };
                let first = match first {
                    Ok(f) => f,
                    // Retired while idle: the next request is answered (on this configuration) and
                    // closes the connection; the keep-alive wait goes on meanwhile.
                    Err(false) => {
                        retired = true;
                        activity.retire();
                        continue;
                    }
                    // Stopping (shutdown, or a reload retiring this connection) while idle: a request
                    // already here is still answered (with `Connection: close`); otherwise the
                    // connection is closed gently, so that a request crossing the close meets an
                    // end of stream the client may retry on (RFC 9112 9.3.1), not a reset. Rare:
                    // boxed, to keep the parked task small.
                    Err(true) => match Box::pin(read_now_or_linger(io.inner)).await {
                        Some((b, inner)) => {
                            io.inner = inner;
                            Some(b)
                        }
                        None => return,
                    },
                };
                let Some(first) = first else {
                    return;
                };
                io.pre = first;
            }
            // The session lives in its own allocation: a parked connection's task keeps only what
            // the loop above needs, not hyper's connection state (idle connections cost memory
            // in proportion to the future a connection's task holds).
            let session = Box::pin(async {
            let info = client.info;
            let svc = {
                let proxy = client.proxy.clone();
                let activity = activity.clone();
                let tls = tls.clone();
                service_fn(move |req: Request<Incoming>| -> Handled {
                    let n = activity.started.fetch_add(1, Ordering::Relaxed) + 1;
                    activity.in_flight.fetch_add(1, Ordering::Relaxed);
                    let last_request = activity.last_at.load(Ordering::Relaxed);
                    let last = last_request != 0 && n >= last_request;
                    let closes = asks_to_close(req.headers());
                    if last
                        || !req.body().is_end_stream()
                        || req.version() != Version::HTTP_11
                        || closes
                    {
                        activity.unparkable.store(true, Ordering::Relaxed);
                    }
                    let in_flight = InFlight(activity.clone());
                    let proxy = proxy.clone();
                    let tls = tls.clone();
                    let mut log = start_log(
                        &req,
                        info,
                        n - 1,
                        !last && !closes,
                        tls.is_some(),
                    );
                    crate::box_in_place!(async move {
                        let mut resp = proxy.handle(req, info, tls.as_deref()).await;
                        if last {
                            // MaxKeepAliveRequests reached (or KeepAlive Off).
                            answers::close_after(&mut resp);
                        }
                        if let Some(l) = &mut log {
                            log_head(l, &resp);
                        }
                        Ok(resp.map(|body| CountedBody {
                            body,
                            _in_flight: in_flight,
                            log,
                            stall: None,
                        }))
                    })
                })
            };
            let mut conn = client.builder.serve_connection(TokioIo::new(io), svc);
            // While hyper serves, the connection's future is polled several times per request;
            // the stop and retire futures are polled again only when their channel changed (or
            // not yet), which these copies of the receivers tell with an atomic load.
            let (mut stop_seen, mut retire_seen) =
                (Seen::new(&client.stops.stop), Seen::new(&client.stops.retire));
            let stop_end = stopped(&mut client.stops.stop);
            tokio::pin!(stop_end);
            let retire_end = stopped(&mut client.stops.retire);
            tokio::pin!(retire_end);
            let served_before = activity.started.load(Ordering::Relaxed);
            activity.unparkable.store(false, Ordering::Relaxed);
            let (mut parking, mut stopping) = (false, false);
            // While no request is in flight: what hyper waits for, and the timer for it.
            let mut timer: Option<(Wait, Pin<Box<tokio::time::Sleep>>)> = None;
            let ended = std::future::poll_fn(|cx| {
                loop {
                    if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
                        return Poll::Ready(r.map_err(Ended::Hyper));
                    }
                    if !stopping && stop_seen.poll(stop_end.as_mut(), cx).is_ready() {
                        stopping = true;
                        Pin::new(&mut conn).graceful_shutdown();
                        continue;
                    }
                    if !retired && !stopping && retire_seen.poll(retire_end.as_mut(), cx).is_ready() {
                        retired = true;
                        activity.retire();
                        if activity.in_flight.load(Ordering::Relaxed) > 0 {
                            // Closes after the answer in flight (`Connection: close` when its
                            // head is not written yet).
                            stopping = true;
                            Pin::new(&mut conn).graceful_shutdown();
                        }
                        // Otherwise a request being received is the last; with none, the
                        // connection parks below and waits for one.
                        continue;
                    }
                    if parking || stopping || activity.in_flight.load(Ordering::Relaxed) > 0 {
                        return Poll::Pending;
                    }
                    let started = activity.started.load(Ordering::Relaxed);
                    // The session's first head, and every head in a session hyper alone keeps, must
                    // be complete within `header_read`; an answered parkable session waits
                    // PARK_AFTER for the next request to begin, then parks.
                    let wait = if started == served_before
                        || activity.unparkable.load(Ordering::Relaxed)
                        || activity.bytes_read.load(Ordering::Relaxed)
                            > activity.idle_bytes.load(Ordering::Relaxed)
                    {
                        Wait::Head(started)
                    } else {
                        Wait::Park(started)
                    };
                    if matches!(wait, Wait::Park(_)) && !returned {
                        // A connection's first parking is at once (see PARK_AFTER): hyper ends its
                        // side of the connection without touching the socket.
                        parking = true;
                        Pin::new(&mut conn).graceful_shutdown();
                        continue;
                    }
                    if timer.as_ref().is_none_or(|(w, _)| *w != wait) {
                        let deadline = match wait {
                            Wait::Head(_) if started == served_before => {
                                head_from.take().unwrap_or_else(tokio::time::Instant::now) + client.waits.head
                            }
                            Wait::Head(_) => tokio::time::Instant::now() + client.waits.head,
                            Wait::Park(_) => {
                                activity.epoch
                                    + Duration::from_millis(
                                        activity.idle_since_ms.load(Ordering::Relaxed),
                                    )
                                    + PARK_AFTER.min(client.waits.next)
                            }
                        };
                        match &mut timer {
                            Some((w, sleep)) => {
                                *w = wait;
                                sleep.as_mut().reset(deadline);
                            }
                            None => timer = Some((wait, Box::pin(tokio::time::sleep_until(deadline)))),
                        }
                    }
                    let Some((_, sleep)) = &mut timer else {
                        return Poll::Pending;
                    };
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    match wait {
                        Wait::Head(_) => return Poll::Ready(Err(Ended::HeadTimeout)),
                        Wait::Park(_) => {
                            // Idle for PARK_AFTER.
                            parking = true;
                            Pin::new(&mut conn).graceful_shutdown();
                        }
                    }
                }
            })
            .await;
            let failed = match ended {
                Ok(()) => false,
                Err(Ended::Hyper(e)) => {
                    tracing::debug!(peer = %info.peer, "client connection ended: {e}");
                    true
                }
                Err(Ended::HeadTimeout) => {
                    tracing::debug!(peer = %info.peer, "request head not complete within {:?}", client.waits.head);
                    return None;
                }
            };
            if failed || !parking || stopping {
                // The proxy ends the connection (a refused head, `Connection: close`, stopping) or
                // the client did. The client may still be sending: close gently so that the answer
                // already written is not destroyed by a reset (RFC 9112 9.6), nor a request that
                // crossed the close.
                let http1::Parts { io: done, .. } = conn.into_parts();
                linger(done.into_inner().inner).await;
                return None;
            }
            let http1::Parts {
                io: parked,
                read_buf,
                ..
            } = conn.into_parts();
            let mut io = parked.into_inner();
            // Part of the next request may have been read already (before the last response
            // ended: nothing came since): hyper gets it back first, its head deadline running
            // from the end of that response. Even empty, hyper's read buffer holds its allocation
            // until dropped.
            if !read_buf.is_empty() {
                head_from = Some(
                    activity.epoch
                        + Duration::from_millis(activity.idle_since_ms.load(Ordering::Relaxed)),
                );
            }
            io.prepend(read_buf);
            Some((io, head_from))
        })
        .await;
            let Some((parked, from)) = session else {
                return;
            };
            io = parked;
            head_from = from;
            returned = true;
        }
    }
}

/// The client connection preface of HTTP/2 (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A TLS connection: the handshake (within `tls_handshake_timeout`, or the connection is
/// dropped and its slot freed), then HTTP/2 if ALPN chose it, else HTTP/1.1.
async fn serve_tls<S, C>(
    stream: S,
    acceptor: crate::tls::Acceptor,
    mut client: Client<C>,
    settings: FrontSettings,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Connector,
{
    // A reload does not interrupt a handshake: the connection is retired after it.
    let handshake = tokio::select! {
        biased;
        _ = stopped(&mut client.stops.stop) => return,
        r = tokio::time::timeout(settings.tls_handshake_timeout, acceptor.0.accept(stream)) => r,
    };
    let tls = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(peer = %client.info.peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %client.info.peer, "TLS handshake not complete within {:?}", settings.tls_handshake_timeout);
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let facts = Arc::new(crate::tls::ConnTls {
        sni: conn.server_name().map(str::to_ascii_lowercase),
    });
    let h2 = conn.alpn_protocol() == Some(b"h2");
    let io = Rewind::new(Bytes::new(), tls);
    if h2 {
        serve_h2(io, client, &settings, Some(facts)).await;
    } else {
        serve_client(io, client, Some(facts)).await;
    }
}

/// A plain connection on a listener that also takes HTTP/2 with prior knowledge (h2c): the
/// first bytes decide.
async fn serve_plain_h2c<S, C>(mut stream: S, mut client: Client<C>, settings: FrontSettings)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Connector,
{
    let first = tokio::select! {
        biased;
        _ = stopped(&mut client.stops.stop) => return,
        r = tokio::time::timeout(
            client.waits.head,
            read_on_stack::<PARKED_READ, _, _>(&mut stream, Bytes::copy_from_slice),
        ) => r.ok().and_then(Result::ok).filter(|b| !b.is_empty()),
    };
    let Some(first) = first else {
        return;
    };
    let n = first.len().min(H2_PREFACE.len());
    let h2 = first[..n] == H2_PREFACE[..n];
    let io = Rewind::new(first, stream);
    if h2 {
        serve_h2(io, client, &settings, None).await;
    } else {
        serve_client(io, client, None).await;
    }
}

/// How long a closing HTTP/2 connection may take to finish its streams after GOAWAY when the
/// reason is the connection's own idleness (shutdown has its own grace period).
const H2_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// An HTTP/2 connection. The request path is the HTTP/1.1 one ([`Proxy::handle`]), with the
/// request in origin form and a Host field made from `:authority` (as mod_http2 does). Bounds:
/// `h2_max_streams` streams at once, hyper's bound on streams the client resets before they
/// are served (rapid reset), `max_header_bytes` of header list, the requests per connection of
/// `max_keep_alive_requests` (then GOAWAY), pings to find a dead peer, and an idle connection
/// (nothing in flight) closes after `keep_alive_timeout` (`header_read` before its first
/// request).
#[allow(clippy::too_many_arguments)]
async fn serve_h2<S, C>(
    io: Rewind<S>,
    mut client: Client<C>,
    settings: &FrontSettings,
    tls: Option<Arc<crate::tls::ConnTls>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Connector,
{
    let (info, waits, proxy) = (client.info, client.waits, client.proxy.clone());
    let shutdown = &mut client.stops.retire;
    let activity = io.activity.clone();
    let mut b = http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(H2_MAX_PENDING_RESETS))
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_RESETS))
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_INTERVAL)
        .auto_date_header(settings.date_header);
    let last_request = waits.last_request;
    // Requests the client reset before their answer (the handler's future dropped).
    let resets = Arc::new(AtomicU64::new(0));
    // The stall stamps of the responses in flight (see `CountedBody::stall`).
    let stalls: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>> = Arc::default();
    let max_headers = settings.max_headers;
    let svc = {
        let activity = activity.clone();
        let resets = resets.clone();
        let stalls = stalls.clone();
        service_fn(move |mut req: Request<Incoming>| -> Handled {
            let n = activity.started.fetch_add(1, Ordering::Relaxed) + 1;
            activity.in_flight.fetch_add(1, Ordering::Relaxed);
            let in_flight = InFlight(activity.clone());
            if last_request != 0 && n >= last_request {
                activity.unparkable.store(true, Ordering::Relaxed);
            }
            h2_to_origin_form(&mut req);
            let too_many = req.headers().len() > max_headers;
            let proxy = proxy.clone();
            let tls = tls.clone();
            let mut cancelled = Cancelled(Some(resets.clone()));
            let mut log = start_log(&req, info, n - 1, true, tls.is_some());
            let stall = Arc::new(AtomicU64::new(0));
            {
                let mut all = stalls.lock().unwrap_or_else(|p| p.into_inner());
                // Those of finished responses go.
                all.retain(|s| Arc::strong_count(s) > 1);
                all.push(stall.clone());
            }
            Box::pin(async move {
                let resp = if too_many {
                    // `LimitRequestFields`, which HTTP/1.1's parser enforces for the other path.
                    drop(req);
                    answers::error(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                } else {
                    proxy.handle(req, info, tls.as_deref()).await
                };
                cancelled.disarm();
                if let Some(l) = &mut log {
                    log_head(l, &resp);
                }
                Ok(resp.map(|body| CountedBody {
                    body,
                    _in_flight: in_flight,
                    log,
                    stall: Some(stall),
                }))
            })
        })
    };
    let conn = b.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    // Closing: GOAWAY sent, streams in flight finish; then this deadline (for idleness and the
    // request cap only).
    let mut closing: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut stopping = false;
    let mut idle: Option<(u64, Pin<Box<tokio::time::Sleep>>)> = None;
    let write_timeout_ms = settings.client_write_timeout.as_millis() as u64;
    let mut stall_check = tokio::time::interval(H2_STALL_CHECK);
    stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            // Only while responses are in flight: an idle connection has no timer running.
            while activity.in_flight.load(Ordering::Relaxed) > 0
                && stall_check.poll_tick(cx).is_ready()
            {
                let now = activity.now_ms();
                let stalled = stalls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .any(|s| {
                        let at = s.load(Ordering::Relaxed);
                        at != 0 && (now + 1).saturating_sub(at) > write_timeout_ms
                    });
                if stalled {
                    // nginx's send_timeout for HTTP/2: a client that gives no window for a
                    // response's data holds the response, and its backend, no longer.
                    tracing::info!(peer = %info.peer, "HTTP/2 connection closed: no flow-control window for {:?}", settings.client_write_timeout);
                    return Poll::Ready(Ok(()));
                }
            }
            if resets.load(Ordering::Relaxed) > H2_MAX_CLIENT_RESETS {
                // Streams opened and reset over and over (rapid reset): each one started a
                // request; the connection is dropped.
                tracing::info!(peer = %info.peer, "HTTP/2 connection closed: more than {H2_MAX_CLIENT_RESETS} requests reset by the client");
                return Poll::Ready(Ok(()));
            }
            if !stopping && stop.as_mut().poll(cx).is_ready() {
                stopping = true;
                closing = None;
                conn.as_mut().graceful_shutdown();
                continue;
            }
            if stopping {
                return Poll::Pending;
            }
            if let Some(c) = &mut closing {
                if c.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
            if activity.unparkable.load(Ordering::Relaxed) {
                // MaxKeepAliveRequests reached: no more streams.
                closing = Some(Box::pin(tokio::time::sleep(H2_CLOSE_GRACE)));
                conn.as_mut().graceful_shutdown();
                continue;
            }
            if activity.in_flight.load(Ordering::Relaxed) > 0 {
                idle = None;
                return Poll::Pending;
            }
            let started = activity.started.load(Ordering::Relaxed);
            if idle.as_ref().is_none_or(|(s, _)| *s != started) {
                let wait = if started == 0 { waits.head } else { waits.next };
                idle = Some((started, Box::pin(tokio::time::sleep(wait))));
            }
            let Some((_, sleep)) = &mut idle else {
                return Poll::Pending;
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            closing = Some(Box::pin(tokio::time::sleep(H2_CLOSE_GRACE)));
            conn.as_mut().graceful_shutdown();
        }
    })
    .await;
    if let Err(e) = ended {
        tracing::debug!(peer = %info.peer, "HTTP/2 connection ended: {e}");
    }
}

/// How often an HTTP/2 connection looks for responses stalled by flow control.
const H2_STALL_CHECK: Duration = Duration::from_millis(250);

/// Streams a client may reset before the server has served them, at once; beyond, the
/// connection ends with GOAWAY (the "rapid reset" attack, CVE-2023-44487).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Requests the client may reset before their answer on one connection; beyond, the connection
/// is closed. A browser resets a few (navigation away); a flood of them is an attack that costs
/// a backend request each.
const H2_MAX_CLIENT_RESETS: u64 = 100;

/// Counts a request whose handler was dropped before it answered.
struct Cancelled(Option<Arc<AtomicU64>>);

impl Cancelled {
    /// The request was answered.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Streams the server may reset for a client's errors on one connection; beyond, GOAWAY.
const H2_MAX_LOCAL_RESETS: usize = 200;
/// A ping this often while the connection is open; no answer within as long closes it.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);

/// An HTTP/2 request as the request path expects one: the target in origin form, and the
/// `:authority` as a Host field when the client sent none (RFC 9113 8.3.1).
fn h2_to_origin_form<B>(req: &mut Request<B>) {
    if !req.headers().contains_key(http::header::HOST)
        && let Some(a) = req.uri().authority()
        && let Ok(v) = http::HeaderValue::from_str(a.as_str())
    {
        req.headers_mut().insert(http::header::HOST, v);
    }
    if req.uri().scheme().is_some()
        && let Some(pq) = req.uri().path_and_query()
        && let Ok(u) = http::Uri::try_from(pq.as_str())
    {
        *req.uri_mut() = u;
    }
}

/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and dropped while lingering.
const LINGER_BYTES: usize = 1 << 20;

/// Closes the sending side, then reads and drops what the client sends until it closes, for at
/// most [`LINGER`] and [`LINGER_BYTES`]: closing a socket with unread input resets the
/// connection, and the reset can destroy a response the client has not read yet (a 400 or 431
/// for a request it is still writing).
/// A stopping idle connection: bytes that are already there (a request to answer), with the
/// stream back; else the connection is closed gently ([`linger`]) and `None`.
async fn read_now_or_linger<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> Option<(Bytes, S)> {
    let now = read_on_stack::<PARKED_READ, _, _>(&mut io, Bytes::copy_from_slice);
    match tokio::time::timeout(Duration::ZERO, now).await {
        Ok(Ok(b)) if !b.is_empty() => Some((b, io)),
        Ok(_) => None,
        Err(_) => {
            linger(io).await;
            None
        }
    }
}

async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    let deadline = tokio::time::Instant::now() + LINGER;
    if tokio::time::timeout_at(deadline, io.shutdown())
        .await
        .is_err()
    {
        return;
    }
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        let discard = read_on_stack::<PARKED_READ, _, _>(&mut io, <[u8]>::len);
        match tokio::time::timeout_at(deadline, discard).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => return,
        }
    }
}

/// Largest read on a parked connection (a whole request head usually comes in this one read,
/// and hyper then parses it without another), and while lingering.
const PARKED_READ: usize = 4096;

/// Why a hyper session ended other than cleanly.
enum Ended {
    Hyper(hyper::Error),
    /// A request head did not complete within `header_read`.
    HeadTimeout,
}

/// `Connection: close` (or any list naming `close`).
fn asks_to_close(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// A client stream with bytes already read from it put back in front.
#[derive(Debug)]
struct Rewind<S> {
    pre: Bytes,
    inner: S,
    /// Counts the bytes read from `inner`.
    activity: Arc<Activity>,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            unparkable: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            idle_bytes: AtomicU64::new(0),
            last_at: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
        })
    }
}

impl<S> Rewind<S> {
    /// `stream` with `pre` (bytes already read from it) in front, and a new [`Activity`].
    fn new(pre: Bytes, stream: S) -> Rewind<S> {
        Rewind {
            pre,
            inner: stream,
            activity: Activity::new(),
        }
    }

    fn prepend(&mut self, first: Bytes) {
        if first.is_empty() {
            return;
        }
        self.pre = if self.pre.is_empty() {
            first
        } else {
            let mut v = first.to_vec();
            v.extend_from_slice(&self.pre);
            Bytes::from(v)
        };
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity
                .bytes_read
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

crate::net::forward_async_write!(Rewind<S>, inner, S);

/// Serves the admin endpoints (`/metrics`, `/status`) on `acceptor` until shutdown.
pub async fn serve_admin<A: Acceptor, C: Connector>(
    acceptor: A,
    proxy: Arc<Proxy<C>>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(Arc::new(Generation {
        proxy,
        fronts: Vec::new(),
        stop: shutdown.clone(),
    }));
    let r = serve_admin_generations(acceptor, rx, shutdown).await;
    drop(tx);
    r
}

/// [`serve_admin`] answering from the current generation's proxy.
pub async fn serve_admin_generations<A: Acceptor, C: Connector>(
    acceptor: A,
    gens: watch::Receiver<Arc<Generation<C>>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => return Ok(()),
            a = acceptor.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let proxy = gens.borrow().proxy.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.admin(req.uri().path())) }
            });
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Resolves once shutdown is requested (or the controller is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Polls a [`stopped`] future only when it may have become ready: on the first poll (which
/// registers it for a wake-up), and when its channel has changed since. Polling a watch future
/// takes its lock; a connection's future is polled several times per request.
struct Seen {
    rx: watch::Receiver<bool>,
    polled: bool,
}

impl Seen {
    fn new(rx: &watch::Receiver<bool>) -> Seen {
        Seen {
            rx: rx.clone(),
            polled: false,
        }
    }

    fn poll<F: Future<Output = ()>>(&mut self, f: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<()> {
        // A closed channel (Err) resolves the future too.
        if self.polled && matches!(self.rx.has_changed(), Ok(false)) {
            return Poll::Pending;
        }
        // Marked before the poll: a change after it is seen by the next call (and wakes the
        // task through the future's registration).
        self.rx.mark_unchanged();
        self.polled = true;
        f.poll(cx)
    }
}

impl FrontSettings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        FrontSettings {
            header_read_timeout: c.timeouts.header_read,
            keep_alive_timeout: c.timeouts.keep_alive,
            client_write_timeout: c.timeouts.client_write,
            max_header_bytes: c.limits.max_header_bytes,
            max_headers: c.limits.max_headers,
            keep_alive: c.limits.keep_alive,
            max_keep_alive_requests: c.limits.max_keep_alive_requests,
            tls_handshake_timeout: c.timeouts.tls_handshake,
            shutdown_grace: c.timeouts.shutdown_grace,
            ..FrontSettings::default()
        }
    }
}

/// A client stream whose writes fail once they have made no progress for `timeout` (nginx's
/// `send_timeout`, Apache's `Timeout`): hyper then drops the connection, so a client that stops
/// reading cannot hold it, and the response behind it, forever (docs/reference/security.md S21).
#[derive(Debug)]
struct SendTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write is blocked; cleared by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> SendTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        SendTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Called when the inner write is pending: an error once the stall has lasted `timeout`.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("client did not read for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx),
        }
    }
}

crate::net::forward_async_read!(SendTimeout<S>, inner, S);

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function of three arguments returns.
    fn future_size<A, B, T, F: Future>(_: fn(A, B, T) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle keep-alive connection is its task and little else, so the task's size is what a
    /// connection costs. tokio allocates a task as one cell: a 32-byte header, the scheduler
    /// handle and task id (16), the future behind an 8-byte stage tag, a 48-byte trailer,
    /// aligned to 128 bytes. With a future of 664 bytes or less, the cell takes 768 bytes;
    /// 8 more, and it takes 896 (128 bytes more for each of 10,000 idle connections). Test
    /// builds lay the future out a little larger than release builds (632 against 624 bytes
    /// when this was written), so the bound holds for both.
    #[test]
    fn a_plain_connections_task_fits_768_bytes() {
        let size = future_size(
            serve_client::<SendTimeout<crate::spread::Stream>, crate::net::TokioConnector>,
        );
        assert!(size <= 664, "serve_client's future is {size} bytes");
    }
}
