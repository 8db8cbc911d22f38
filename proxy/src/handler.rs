//! The request path, end to end: route, CGI params, body, pool, exchange, response.
//!
//! client -> route picks a Route -> cgi builds params -> pool checks out a connection (reused or
//! not) -> exchange runs the FastCGI conversation -> response head mapped -> body streamed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::admission::{Admission, BodyBudget, BodyCharge};
use crate::answers;
use crate::balancer::BalancerState;
use crate::body::ProxyBody;
use crate::cgi::{self, BalancerVars, CgiInput, ProbeMemo};
use crate::config::site::{DirSettings, Handler, VhostAddr};
use crate::config::{BackendSocket, Config, ConfigError, Member, Target, WorkerUrl};
use crate::error::{ErrorKind, ProxyError};
use crate::exchange::{self, BodyBytes, ExchangeOptions, Outcome, RequestBody};
use crate::metrics::{self, Metrics, WorkerView};
use crate::net::{BackendAddr, ConnInfo, Connector};
use crate::pool::{Pool, PoolSettings};
use crate::route::{Backend, Router};
use crate::site::Decision;
use crate::site::{Fs, RealFs};
use crate::uri::{self, UriOptions};

/// Bodies up to this size are read before the backend is contacted, so they can be sent again
/// if a reused connection turns out to be dead (Apache prefetches 16 KiB for the same reason).
const PREFETCH_MAX: u64 = 64 * 1024;
/// Attempts on reused connections that failed before any response byte.
const MAX_ATTEMPTS: usize = 3;

/// One backend as the request path uses it: its pool and its per-request settings.
#[derive(Debug)]
pub struct Worker<C: Connector> {
    /// The worker URL as configured, for logs and status.
    pub name: String,
    pub pool: Pool<C>,
    /// Send FCGI_KEEP_CONN and return connections to the pool.
    pub reuse: bool,
    /// `timeout=`: longest wait for progress from the backend.
    pub io_timeout: Duration,
}

impl<C: Connector> Worker<C> {
    pub fn new(
        name: String,
        connector: C,
        addr: BackendAddr,
        reuse: bool,
        io_timeout: Duration,
        settings: PoolSettings,
    ) -> Self {
        Worker {
            name,
            pool: Pool::new(connector, addr, settings),
            reuse,
            io_timeout,
        }
    }
}

/// Limits on the request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest chunked body buffered to compute CONTENT_LENGTH (beyond: 413).
    pub max_buffered: u64,
    /// Largest request body at all (`LimitRequestBody`; beyond: 413). 0: unlimited.
    pub max_body: u64,
    /// Largest response header block accepted from a backend.
    pub max_response_header_bytes: usize,
    /// What a request whose body is being read is charged to the body budget besides the bytes
    /// it holds: its connection's read buffer, which grows up to the request head limit (the
    /// `max_buf_size` hyper is given: `limits.max_header_bytes`, at least 8 KiB), and with it
    /// the write buffer and the task, which are smaller.
    pub read_buffers_charge: usize,
}

/// How the request body reaches the exchange, and the CONTENT_LENGTH it gets.
#[derive(Debug)]
pub struct PreparedBody {
    pub body: RequestBody,
    pub content_length: Option<u64>,
    /// The buffered body's share of the memory budget, held while the request is served.
    pub charge: Option<BodyCharge>,
}

/// Reads or wraps the client's body. Chunked bodies are buffered (up to a limit) because
/// php-fpm reads nothing without CONTENT_LENGTH; small bodies are buffered so a retry can
/// resend them; large ones with a Content-Length are streamed.
pub async fn prepare_body(
    headers: &HeaderMap,
    body: Incoming,
    limits: BodyLimits,
    read_timeout: Duration,
    budget: &Arc<BodyBudget>,
) -> Result<PreparedBody, StatusCode> {
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(StatusCode::BAD_REQUEST)?,
        ),
    };
    if chunked && declared.is_some() {
        // Request smuggling shape (RFC 9112 6.1): refuse rather than pick one.
        return Err(StatusCode::BAD_REQUEST);
    }
    let max_body = if limits.max_body == 0 {
        u64::MAX
    } else {
        limits.max_body
    };
    if declared.is_some_and(|n| n > max_body) {
        // Refused before any backend contact, as Apache's LimitRequestBody does.
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    if !chunked && declared.unwrap_or(0) == 0 {
        // No body (RFC 9112 6.3): nothing to read or hold.
        return Ok(PreparedBody {
            body: RequestBody::Buffered(BodyBytes::default()),
            content_length: declared,
            charge: None,
        });
    }
    // A body is read through the connection's buffers, held while it lasts: charged first.
    let mut charge = BodyCharge::new(budget);
    if !charge.grow(limits.read_buffers_charge) {
        return Err(over_budget(budget));
    }
    match declared {
        Some(n) if n > PREFETCH_MAX => Ok(PreparedBody {
            body: RequestBody::Streaming(body),
            content_length: Some(n),
            charge: Some(charge),
        }),
        Some(_) => {
            let data = collect(body, PREFETCH_MAX, read_timeout, &mut charge).await?;
            Ok(PreparedBody {
                body: RequestBody::Buffered(data),
                content_length: declared,
                charge: Some(charge),
            })
        }
        None => {
            let limit = limits.max_buffered.min(max_body);
            let data = collect(body, limit, read_timeout, &mut charge).await?;
            Ok(PreparedBody {
                content_length: Some(data.len() as u64),
                body: RequestBody::Buffered(data),
                charge: Some(charge),
            })
        }
    }
}

/// The request headers as the CGI layer reads them, borrowed from hyper's map.
fn borrowed_headers(h: &HeaderMap) -> Vec<(&str, &[u8])> {
    h.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect()
}

/// Runs `encode` with a filesystem that answers from what it learned. Without a walk of the
/// filesystem (`proxy-fcgi-pathinfo=full` walks a path a component at a time) it runs once and
/// touches no filesystem. With one, the first lookup asks `lookups` where it may run: on the
/// serving thread, that run walks the real filesystem and is the only one; else each path it
/// asked about and did not know is looked up on a blocking-pool thread, and it runs again with
/// what was learned.
async fn encode_probing(
    lookups: &Arc<crate::mounts::LookupPlace>,
    mut encode: impl FnMut(&dyn Fs) -> Result<exchange::Preamble, StatusCode>,
) -> Result<exchange::Preamble, StatusCode> {
    /// More components than any real path has: a walk is cut short beyond.
    const MAX_LOOKUPS: usize = 256;
    let mut memo = ProbeMemo::default();
    let (mut out, inline) = {
        let first = FirstLookup {
            memo: &memo,
            lookups,
            inline: std::cell::Cell::new(None),
        };
        (encode(&first), first.inline.get())
    };
    if inline == Some(true) {
        return out;
    }
    for _ in 0..MAX_LOOKUPS {
        let Some(path) = memo.take_wanted() else {
            return out;
        };
        let lookup = path.clone();
        let kind = tokio::task::spawn_blocking(move || RealFs.kind(&lookup))
            .await
            .unwrap_or(crate::config::site::PathKind::Missing);
        memo.learn(path, kind);
        out = encode(&memo);
    }
    tracing::info!("request refused: path info walk deeper than {MAX_LOOKUPS} components");
    Err(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The first run's filesystem in [`encode_probing`]: at its first lookup it asks where lookups
/// may run, then answers every lookup of that run from the real filesystem or from `memo`.
struct FirstLookup<'a> {
    memo: &'a ProbeMemo,
    lookups: &'a Arc<crate::mounts::LookupPlace>,
    inline: std::cell::Cell<Option<bool>>,
}

impl Fs for FirstLookup<'_> {
    fn kind(&self, path: &[u8]) -> crate::config::site::PathKind {
        let inline = match self.inline.get() {
            Some(i) => i,
            None => {
                let i = self.lookups.inline();
                self.inline.set(Some(i));
                i
            }
        };
        if inline {
            RealFs.kind(path)
        } else {
            self.memo.kind(path)
        }
    }
}

/// The blocks a slow body is copied into (see [`collect`]); at least [`BodyBytes::KEEP`], so
/// each is kept as it is.
const COPY_BLOCK: usize = 32 * 1024;

/// How long a body may pause before what was read of it is copied out of hyper's read buffers
/// (see [`collect`]): a body still on its way from a near client (the rest of a 64 KiB POST a
/// read behind) completes within it and is never copied.
const COPY_AFTER: Duration = Duration::from_millis(2);

fn over_budget(budget: &BodyBudget) -> StatusCode {
    tracing::info!(
        "request body refused: {} bytes of bodies buffered (limits.body_buffer_budget)",
        budget.used()
    );
    StatusCode::SERVICE_UNAVAILABLE
}

/// Reads the whole body (at most `limit` bytes), keeping the pieces hyper read, each charged to
/// `charge` (no room: 503, and what was read is freed at once).
async fn collect(
    mut body: Incoming,
    limit: u64,
    t: Duration,
    charge: &mut BodyCharge,
) -> Result<BodyBytes, StatusCode> {
    let mut out = BodyBytes::default();
    // Pieces read since the body last paused. Each is a slice of one of hyper's read buffers and
    // keeps all of it alive: when a piece comes after a pause of COPY_AFTER or more, it and those
    // before it are copied into buffers of their own size, so that what a slow body holds while
    // it waits on is what the budget counts. A body that arrives at once keeps hyper's pieces (no
    // copy). The pause is told by the clock when the piece comes, not by a timer: a timer as near
    // as COPY_AFTER wakes the runtime's driver through its eventfd when it is armed, a system
    // call for every body that had to wait at all.
    let mut fresh: Vec<Bytes> = Vec::new();
    // Copies go into blocks of one size, filled in turn: slow bodies then cost whole blocks of
    // a single size class instead of many odd-sized buffers (the allocator keeps them apart).
    let mut block = BytesMut::new();
    loop {
        let mut next = std::pin::pin!(body.frame());
        let ready = std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await;
        let (frame, paused) = match ready {
            Poll::Ready(f) => (Ok(f), false),
            Poll::Pending => {
                let since = tokio::time::Instant::now();
                let f = tokio::time::timeout(t, next).await;
                (f, since.elapsed() >= COPY_AFTER)
            }
        };
        match frame {
            Err(_) => return Err(StatusCode::REQUEST_TIMEOUT),
            Ok(None) => {
                if !block.is_empty() {
                    out.push(block.freeze());
                }
                for piece in fresh {
                    out.push(piece);
                }
                return Ok(out);
            }
            Ok(Some(Err(_))) => return Err(StatusCode::BAD_REQUEST),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    let held = out.len() + fresh.iter().map(Bytes::len).sum::<usize>();
                    if held as u64 + d.len() as u64 > limit {
                        return Err(StatusCode::PAYLOAD_TOO_LARGE);
                    }
                    if !charge.grow(d.len()) {
                        return Err(over_budget(charge.budget()));
                    }
                    fresh.push(d);
                    if paused {
                        copy_out(&mut fresh, &mut block, &mut out);
                    }
                }
            }
        }
    }
}

/// Copies `fresh` pieces into `block`, a new one of [`COPY_BLOCK`] bytes each time it is full
/// (the full ones go to `out`), and lets the pieces (and hyper's buffers they keep) go.
fn copy_out(fresh: &mut Vec<Bytes>, block: &mut BytesMut, out: &mut BodyBytes) {
    for piece in fresh.drain(..) {
        let mut rest = &piece[..];
        while !rest.is_empty() {
            if block.capacity() == block.len() {
                if !block.is_empty() {
                    out.push(block.split().freeze());
                }
                *block = BytesMut::with_capacity(COPY_BLOCK);
            }
            let n = rest.len().min(block.capacity() - block.len());
            block.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
}

/// Something held until the exchange ends, body included (e.g. a balancer member's busy count).
pub type Hold = Box<dyn std::any::Any + Send>;

/// A forwarded request's answer, with the route and the worker or member that served it.
type Proxied<'a> = (Response<ProxyBody>, Option<usize>, Option<&'a str>);

/// What the filesystem trip of a request no route takes found: a file to serve, opened, or
/// what else to do.
enum Mapped {
    Opened(crate::static_files::Opened),
    Decided(Decision),
}

/// Maps a request no route takes (`uri`: its decoded path) and opens the file it names, if
/// any. `on_serving_thread`: nothing may wait but for a local filesystem; `None` when a
/// question needs the blocking pool (ask again there).
fn map(
    cfg: &Config,
    uri: &[u8],
    remote: std::net::IpAddr,
    local: std::net::IpAddr,
    method: &Method,
    on_serving_thread: bool,
) -> Option<Mapped> {
    use crate::static_files::{Reading, open};
    let decision = if on_serving_thread {
        let fs = crate::site::ServingThreadFs::default();
        let d = crate::site::decide(cfg, uri, remote, local, &fs);
        if fs.needs_pool() {
            return None;
        }
        d
    } else {
        crate::site::decide(cfg, uri, remote, local, &RealFs)
    };
    let reading = if on_serving_thread {
        Reading::CachedOnly
    } else {
        Reading::MayWait
    };
    Some(match decision {
        Decision::File(file) => Mapped::Opened(open(file, method, reading)),
        d => Mapped::Decided(d),
    })
}

/// What the request path knows about a request when it forwards it.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// HEAD: the response has no body.
    pub head_only: bool,
    /// The method may be sent twice (RFC 9110 9.2.2): only then is a request that a backend may
    /// already have received sent again.
    pub idempotent: bool,
    pub max_header_bytes: usize,
}

impl Shape {
    pub fn of(method: &Method, max_header_bytes: usize) -> Self {
        Shape {
            head_only: method == Method::HEAD,
            idempotent: matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            ),
            max_header_bytes,
        }
    }
}

/// Runs the exchange on `worker`, sending the request again on another connection when the
/// connection broke before any response byte and the body can be sent again, if the method is
/// idempotent or the backend provably never read the request (a POST the backend may have
/// received is never sent twice). docs/architecture.md, "Resending".
pub async fn forward<C: Connector>(
    worker: &Worker<C>,
    preamble: exchange::Preamble,
    body: RequestBody,
    shape: Shape,
    hold: Option<Hold>,
) -> Result<Outcome, ProxyError> {
    let mut hold = hold;
    let replay = body.replayable();
    let mut body = Some(body);
    let opts = ExchangeOptions {
        keep_conn: worker.reuse,
        io_timeout: worker.io_timeout,
        head_only: shape.head_only,
        max_header_bytes: shape.max_header_bytes,
        prove_delivery: !shape.idempotent && replay.is_some() && worker.reuse,
    };
    let mut attempt = 0;
    let mut resent_fresh = false;
    // After a pooled connection turned out closed, the next try goes on a new one if it may.
    let mut stale = false;
    loop {
        attempt += 1;
        let conn = if stale {
            worker.pool.checkout_fresh(worker.io_timeout).await?
        } else {
            worker.pool.checkout(worker.io_timeout).await?
        };
        let b = match (body.take(), &replay) {
            (Some(b), _) => b,
            (None, Some(r)) => RequestBody::Buffered(r.clone()),
            (None, None) => unreachable_body(),
        };
        match exchange::exchange(&worker.pool, conn, preamble.clone(), b, opts, hold.take()).await {
            Err(e)
                if e.may_resend(shape.idempotent, resent_fresh)
                    && replay.is_some()
                    && attempt < MAX_ATTEMPTS =>
            {
                resent_fresh |= e.spends_fresh_retry();
                stale = e.reused;
                tracing::info!(worker = %worker.name, "sending the request again on another connection: {e}");
            }
            r => return r,
        }
    }
}

fn unreachable_body() -> RequestBody {
    // A retry happens only when the body is replayable, so `replay` is set whenever the
    // original body was consumed.
    RequestBody::Buffered(BodyBytes::default())
}

/// Turns an exchange result into the client's response.
pub fn respond(result: Result<Outcome, ProxyError>, worker: &str) -> Response<ProxyBody> {
    match result {
        Ok(Outcome { head, body }) => {
            let mut r = Response::new(body);
            *r.status_mut() = head.status;
            *r.headers_mut() = head.headers;
            if let Some(reason) = head
                .reason
                .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.into_bytes()).ok())
            {
                r.extensions_mut().insert(reason);
            }
            r
        }
        Err(e) => {
            if matches!(e.kind, ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout) {
                // The pool logs these, once in a while rather than once per request.
                tracing::debug!(worker, "backend error: {e}");
            } else {
                tracing::warn!(worker, "backend error: {e}");
            }
            answers::error(e.status())
        }
    }
}

/// The proxy: configuration compiled into a router, one worker (pool) per backend URL, and
/// balancer state.
#[derive(Debug)]
pub struct Proxy<C: Connector> {
    config: Arc<Config>,
    /// The main server, then each `<VirtualHost>`.
    hosts: Vec<Host>,
    workers: Vec<Worker<C>>,
    /// `SetHandler "proxy:…"` URLs (as written) and their workers.
    handler_workers: BTreeMap<String, usize>,
    balancers: Vec<Arc<BalancerState>>,
    uri_opts: UriOptions,
    limits: BodyLimits,
    process_path: Option<Vec<u8>>,
    metrics: Metrics,
    admission: Admission,
    /// Where filesystem lookups run: a site's, and the walks of routes with
    /// `proxy-fcgi-pathinfo=full`.
    lookups: Arc<crate::mounts::LookupPlace>,
}

/// One server: the main one or a virtual host, with its own routes and filesystem sections.
#[derive(Debug)]
struct Host {
    config: Arc<Config>,
    router: Router,
    /// Per route: its worker (None for balancer routes and exclusions).
    route_workers: Vec<Option<usize>>,
    /// Requests no route takes are mapped to the filesystem (a handler is configured).
    files: bool,
    /// `<Location>` sections restrict access: routed requests are checked against them.
    route_access: bool,
    addrs: Vec<VhostAddr>,
    names: Vec<String>,
    /// The CGI variables its routed requests share, encoded once.
    fixed: cgi::FixedParams,
}

/// Workers are shared by URL between the routes of every host, as in Apache; the first
/// definition's parameters win.
fn shared_worker<C: Connector>(
    workers: &mut Vec<Worker<C>>,
    by_name: &mut BTreeMap<String, usize>,
    url: &WorkerUrl,
    params: &crate::config::WorkerParams,
    config: &Config,
    connector: &C,
) -> usize {
    let name = url.name();
    *by_name.entry(name.clone()).or_insert_with(|| {
        workers.push(make_worker(name, url, params, config, connector));
        workers.len() - 1
    })
}

fn backend_addr(url: &WorkerUrl) -> BackendAddr {
    match &url.socket {
        BackendSocket::Tcp { host, port } if host.contains(':') => {
            BackendAddr::Tcp(format!("[{host}]:{port}"))
        }
        BackendSocket::Tcp { host, port } => BackendAddr::Tcp(format!("{host}:{port}")),
        BackendSocket::Unix { path } => BackendAddr::Unix(path.clone()),
    }
}

fn make_worker<C: Connector>(
    name: String,
    url: &WorkerUrl,
    params: &crate::config::WorkerParams,
    config: &Config,
    connector: &C,
) -> Worker<C> {
    let e = params.effective(config);
    Worker {
        name,
        pool: Pool::per_thread(
            connector.clone(),
            backend_addr(url),
            PoolSettings {
                max: params.max.map(|m| m as usize),
                default_max: e.max as usize,
                ttl: e.ttl,
                acquire: e.acquire,
                connect_timeout: e.connect_timeout,
                reuse: e.reuse,
                max_waiting: config.limits.max_waiting as usize,
            },
            config.worker_threads(),
        ),
        reuse: e.reuse,
        io_timeout: e.io_timeout,
    }
}

/// Why a balancer request moves on to another member: the member could not be reached, or it
/// broke the connection before any response byte and the request may be sent again (docs/reference/apache.md §6.4: failover on the
/// handler's 503; a non-idempotent request it may have received is not sent again).
fn fails_over(e: &ProxyError, shape: Shape) -> bool {
    // A member with a full queue is busy, not down: the next one may have room.
    e.member_is_down() || e.kind == ErrorKind::QueueFull || e.may_resend(shape.idempotent, false)
}

impl<C: Connector> Proxy<C> {
    pub fn new(config: Arc<Config>, connector: C) -> Result<Self, ConfigError> {
        let mut workers: Vec<Worker<C>> = Vec::new();
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        let mut handler_workers: BTreeMap<String, usize> = BTreeMap::new();
        let mut hosts = Vec::with_capacity(1 + config.vhosts.len());
        let process_path =
            std::env::var_os("PATH").map(|p| p.to_string_lossy().into_owned().into_bytes());
        let servers = std::iter::once((config.clone(), Vec::new(), Vec::new())).chain(
            config.vhosts.iter().map(|v| {
                (
                    Arc::new((*v.config).clone()),
                    v.addrs.clone(),
                    v.names.clone(),
                )
            }),
        );
        for (cfg, addrs, names) in servers {
            let router = Router::new(&cfg)?;
            let mut route_workers = Vec::with_capacity(cfg.routes.len());
            for r in &cfg.routes {
                route_workers.push(match &r.target {
                    Target::Worker(url) => Some(shared_worker(
                        &mut workers,
                        &mut by_name,
                        url,
                        &r.worker,
                        &cfg,
                        &connector,
                    )),
                    Target::Balancer(_) | Target::Exclude => None,
                });
            }
            let files = cfg.site.serves_files();
            let route_access = cfg.site.locations_restrict();
            let mut handlers = Vec::new();
            let mut note = |d: &DirSettings| {
                if let Some(Handler::Proxy { url, worker, .. }) = &d.handler {
                    handlers.push((url.clone(), worker.clone()));
                }
            };
            note(&cfg.site.base);
            for s in &cfg.site.sections {
                note(&s.settings);
                for i in &s.ifs {
                    note(&i.settings);
                }
            }
            for (url, params) in handlers {
                let w = shared_worker(&mut workers, &mut by_name, &url, &params, &cfg, &connector);
                handler_workers.entry(url.raw.clone()).or_insert(w);
            }
            hosts.push(Host {
                fixed: cgi::FixedParams::new(&cfg, process_path.as_deref()),
                config: cfg,
                router,
                route_workers,
                files,
                route_access,
                addrs,
                names,
            });
        }
        let mut balancers = Vec::new();
        for b in &config.balancers {
            let mut members = Vec::new();
            for m in &b.members {
                workers.push(make_worker(
                    m.url.name(),
                    &m.url,
                    &m.worker,
                    &config,
                    &connector,
                ));
                members.push(workers.len() - 1);
            }
            let cfg = &config;
            balancers.push(Arc::new(BalancerState::new(b, members, |m| {
                m.worker.effective(cfg).retry
            })));
        }
        let uri_opts = UriOptions {
            max_len: config.limits.max_request_line,
            encoded_slashes: config.allow_encoded_slashes,
            merge_slashes: config.merge_slashes,
        };
        let limits = BodyLimits {
            max_buffered: config.limits.max_body_buffer,
            max_body: config.limits.max_body,
            max_response_header_bytes: 64 * 1024,
            read_buffers_charge: config.limits.max_header_bytes.max(8 * 1024),
        };
        let nofile = crate::admission::open_file_limit().unwrap_or(1024);
        let admission = Admission::new(&config.limits, nofile);
        // Read at load for a site (every request of it looks up); for routes only when one
        // first walks the filesystem.
        let lookups = if hosts.iter().any(|h| h.files) {
            crate::mounts::LookupPlace::new(config.filesystem_lookups)
        } else {
            crate::mounts::LookupPlace::lazy(config.filesystem_lookups)
        };
        Ok(Proxy {
            config,
            hosts,
            workers,
            handler_workers,
            balancers,
            uri_opts,
            limits,
            process_path,
            metrics: Metrics::default(),
            admission,
            lookups,
        })
    }

    /// Takes over from `previous` (the configuration a reload replaces) what it can go on
    /// using: the pool of each worker whose backend and pool settings did not change (its idle
    /// connections are reused, in-flight ones come back to it), and the admission counts.
    /// Workers are matched by URL, in order, so two workers of one URL keep two pools.
    pub fn carry_from(&mut self, previous: &Proxy<C>) {
        let mut taken = vec![false; previous.workers.len()];
        for w in &mut self.workers {
            let found = previous.workers.iter().enumerate().find(|(i, p)| {
                !taken[*i] && p.name == w.name && p.reuse == w.reuse && p.pool.same_as(&w.pool)
            });
            if let Some((i, p)) = found {
                taken[i] = true;
                w.pool = p.pool.clone();
            }
        }
        self.admission.carry_from(&previous.admission);
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn workers(&self) -> &[Worker<C>] {
        &self.workers
    }

    pub fn balancers(&self) -> &[Arc<BalancerState>] {
        &self.balancers
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The request body read or wrapped (see [`prepare_body`]) with this proxy's limits.
    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Incoming,
    ) -> Result<PreparedBody, StatusCode> {
        prepare_body(
            headers,
            body,
            self.limits,
            self.config.timeouts.body_read,
            self.admission.body_budget(),
        )
        .await
    }

    /// What the proxy takes on at once: client connections, buffered bodies.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    fn worker_views(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|w| WorkerView {
                name: w.name.clone(),
                reuse: w.reuse,
                stats: w.pool.stats(),
            })
            .collect()
    }

    /// The admin listener's answers: `/metrics` (Prometheus text) and `/status` (JSON).
    pub fn admin(&self, path: &str) -> Response<ProxyBody> {
        let balancers: Vec<&BalancerState> = self.balancers.iter().map(|b| &**b).collect();
        let (body, ctype) = match path {
            "/metrics" => (
                metrics::prometheus(
                    &self.metrics,
                    &self.worker_views(),
                    &balancers,
                    &self.admission.stats(),
                ),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            "/status" => (
                metrics::status_json(
                    &self.worker_views(),
                    &balancers,
                    &self.admission.stats(),
                    self.lookups.describe(),
                ),
                "application/json",
            ),
            _ => return answers::error(StatusCode::NOT_FOUND),
        };
        let mut r = Response::new(ProxyBody::full(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
        r
    }

    /// Serves one client request. Never fails: errors become error responses.
    //
    // Not an `async fn`, nor `proxy` below: an async fn's future keeps its arguments twice (as
    // arguments and as the body's locals), and this future is moved into a box per request.
    #[allow(clippy::manual_async_fn)]
    pub fn handle<'a>(
        &'a self,
        req: Request<Incoming>,
        info: ConnInfo,
        tls: Option<&'a crate::tls::ConnTls>,
    ) -> impl Future<Output = Response<ProxyBody>> + 'a {
        async move {
            // What the access line needs, only if it is written.
            let access = crate::access_log::enabled().then(|| {
                (
                    tokio::time::Instant::now(),
                    req.method().clone(),
                    req.uri().clone(),
                )
            });
            let (resp, route, member) = if !transfer_coding_is_plain_chunked(req.headers()) {
                // The body's framing is in doubt, so nothing after it on this connection can be
                // trusted to be a request.
                let mut r = answers::error(StatusCode::BAD_REQUEST);
                answers::close_after(&mut r);
                (r, None, None)
            } else {
                match self.proxy(req, info, tls).await {
                    Ok(x) => x,
                    Err(status) => {
                        let mut r = answers::error(status);
                        if refused_mid_body(status) {
                            // The rest of the body was not read: nothing after it can be trusted
                            // to be a request, and a refused client should come back later.
                            answers::close_after(&mut r);
                        }
                        (r, None, None)
                    }
                }
            };
            let status = resp.status().as_u16();
            self.metrics.request(route, status, member);
            if let Some((started, method, target)) = access {
                crate::access_log::line(
                    info.peer,
                    &method,
                    &target,
                    status,
                    started.elapsed(),
                    member,
                );
            }
            resp
        }
    }

    #[allow(clippy::manual_async_fn)]
    fn proxy<'a>(
        &'a self,
        req: Request<Incoming>,
        info: ConnInfo,
        tls: Option<&'a crate::tls::ConnTls>,
    ) -> impl Future<Output = Result<Proxied<'a>, StatusCode>> + 'a {
        async move {
            if let Some(refused) = head_over_limits(req.headers(), &self.config.limits) {
                return Err(refused);
            }
            let target = match crate::access_log::origin_form(req.uri()) {
                Some(t) => std::borrow::Cow::Borrowed(t),
                None => std::borrow::Cow::Owned(req.uri().to_string()),
            };
            if target == "*" && req.method() == Method::OPTIONS {
                // A question about the server itself (RFC 9110 9.3.7): answered here, as Apache does.
                return Ok((Response::new(ProxyBody::empty()), None, None));
            }
            if request_line_len(req.method(), &target) > self.config.limits.max_request_line + 1 {
                return Err(StatusCode::URI_TOO_LONG);
            }
            let uri = uri::parse_target(&target, &self.uri_opts).map_err(|e| status(e.status))?;
            let host = self.host_for(req.headers(), &uri, info.local);
            let m = match host.router.route(&uri) {
                Some(m) => m,
                // ProxyPass first (translate_name), then the filesystem.
                // Boxed: its future is large, and inline it would make every request's as large.
                None if host.files => {
                    return Box::pin(self.serve_file(host, req, info, tls, uri)).await;
                }
                None => return Err(StatusCode::NOT_FOUND),
            };
            if host.route_access {
                let (remote, local) = (
                    info.peer.ip().to_canonical(),
                    info.local.ip().to_canonical(),
                );
                // Only a host-name rule (it asks the resolver) goes off the serving thread.
                let fs = crate::site::ServingThreadFs::default();
                let mut refused =
                    crate::site::route_access(&host.config, &uri.path, remote, local, &fs);
                if fs.needs_pool() {
                    let (cfg, path) = (host.config.clone(), uri.path.clone());
                    refused = tokio::task::spawn_blocking(move || {
                        crate::site::route_access(&cfg, &path, remote, local, &RealFs)
                    })
                    .await
                    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                }
                if let Some(s) = refused {
                    return Err(status(s));
                }
            }
            let (parts, body) = req.into_parts();
            let headers = borrowed_headers(&parts.headers);
            let prepared = self.read_body(&parts.headers, body).await?;
            // Given back when the request is answered (the exchange has sent the body by then, or
            // holds only what it still sends).
            let _charge = prepared.charge;
            let creq = cgi_request(&parts, &uri, &headers, info, tls, prepared.content_length);
            let env = cgi::request_env(&host.config, &m, &creq);
            let shape = Shape::of(&parts.method, self.limits.max_response_header_bytes);
            // BEGIN_REQUEST and PARAMS, encoded once per member (and kept for a resend).
            let preamble_for =
                |member: Option<&Member>, balancer: BalancerVars, keep_conn: bool, fs: &dyn Fs| {
                    let input = CgiInput {
                        config: &host.config,
                        route_match: &m,
                        member,
                        balancer,
                        request: &creq,
                        env: &env,
                        process_path: self.process_path.as_deref(),
                        fs,
                        fixed: Some(&host.fixed),
                    };
                    cgi::encode_params(&input, keep_conn).map_err(|e| {
                        tracing::info!("request refused: {e}");
                        status(e.status)
                    })
                };
            let route = Some(m.route);
            match &m.backend {
                Backend::Worker => {
                    let worker =
                        &self.workers[host.route_workers[m.route].ok_or(StatusCode::NOT_FOUND)?];
                    let preamble = encode_probing(&self.lookups, |fs| {
                        preamble_for(None, BalancerVars::default(), worker.reuse, fs)
                    })
                    .await?;
                    let result = forward(worker, preamble, prepared.body, shape, None).await;
                    Ok((
                        respond(result, &worker.name),
                        route,
                        Some(worker.name.as_str()),
                    ))
                }
                Backend::Balancer { index, .. } => {
                    let b = &self.balancers[*index];
                    let cfg = &self.config.balancers[*index];
                    let replay = prepared.body.replayable();
                    let mut body = Some(prepared.body);
                    let mut tried = Vec::new();
                    let session = b.session(&m.filename, &parts.headers);
                    // Whether a route change was noted, and on the first attempt.
                    let mut changed: Option<(bool, bool)> = None;
                    loop {
                        let Ok(picked) = b.choose(session.as_ref(), &tried).await else {
                            return Ok((
                                answers::error(StatusCode::SERVICE_UNAVAILABLE),
                                route,
                                None,
                            ));
                        };
                        let (mi, guard) = (picked.member, picked.guard);
                        let member = &b.members[mi];
                        let worker = &self.workers[member.worker];
                        let (any, first) =
                            *changed.get_or_insert((picked.route_changed, picked.route_changed));
                        let any = any || picked.route_changed;
                        changed = Some((any, first));
                        let vars = BalancerVars {
                            route_changed: any,
                            route_changed_late: any && !first,
                            session: session.as_ref(),
                        };
                        let preamble = encode_probing(&self.lookups, |fs| {
                            preamble_for(Some(&cfg.members[mi]), vars, worker.reuse, fs)
                        })
                        .await?;
                        let this_body = match (body.take(), &replay) {
                            (Some(x), _) => x,
                            (None, Some(r)) => RequestBody::Buffered(r.clone()),
                            (None, None) => unreachable_body(),
                        };
                        let result =
                            forward(worker, preamble, this_body, shape, Some(Box::new(guard)))
                                .await;
                        match result {
                            Err(e) if fails_over(&e, shape) => {
                                if e.member_is_down() {
                                    b.mark_error(mi);
                                }
                                tried.push(mi);
                                // With nofailover, the next pick refuses a session whose member
                                // failed.
                                let more = tried.len() <= b.max_attempts && replay.is_some();
                                if more {
                                    tracing::info!(balancer = %b.name, member = %member.name, "failing over: {e}");
                                    continue;
                                }
                                return Ok((
                                    respond(Err(e), &member.name),
                                    route,
                                    Some(member.name.as_str()),
                                ));
                            }
                            r => {
                                return Ok((
                                    respond(r, &member.name),
                                    route,
                                    Some(member.name.as_str()),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
}

impl<C: Connector> Proxy<C> {
    /// The server a request is for: with virtual hosts, those whose address matches the
    /// connection's local address (an exact IP before `*`), then the first named by the Host
    /// (ServerName, ServerAlias with wildcards), else the first of them; no virtual host for
    /// the address: the main server.
    fn host_for(&self, headers: &HeaderMap, uri: &uri::RequestUri, local: SocketAddr) -> &Host {
        if self.hosts.len() == 1 {
            return &self.hosts[0];
        }
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        let vhosts = &self.hosts[1..];
        let exact: Vec<&Host> = vhosts
            .iter()
            .filter(|h| h.addrs.iter().any(|a| a.ip.is_some() && a.matches(local)))
            .collect();
        let candidates = if exact.is_empty() {
            vhosts
                .iter()
                .filter(|h| h.addrs.iter().any(|a| a.ip.is_none() && a.matches(local)))
                .collect()
        } else {
            exact
        };
        let Some(first) = candidates.first() else {
            return &self.hosts[0];
        };
        let named = match &uri.form {
            uri::TargetForm::Absolute { authority, .. } => Some(authority.as_bytes()),
            _ => headers.get(header::HOST).map(http::HeaderValue::as_bytes),
        }
        .and_then(|h| uri::parse_host(h).ok());
        if let Some(hp) = named
            && let Some(h) = candidates.iter().find(|h| {
                h.names
                    .iter()
                    .any(|n| crate::config::read::fnmatch(n.as_bytes(), hp.host.as_bytes()))
            })
        {
            return h;
        }
        first
    }

    /// A request no route takes, on a server with handlers: mapped to the filesystem ([`map`]),
    /// then handed to its FastCGI handler, redirected or refused.
    async fn serve_file(
        &self,
        host: &Host,
        req: Request<Incoming>,
        info: ConnInfo,
        tls: Option<&crate::tls::ConnTls>,
        uri: uri::RequestUri,
    ) -> Result<(Response<ProxyBody>, Option<usize>, Option<&str>), StatusCode> {
        let (remote, local) = (
            info.peer.ip().to_canonical(),
            info.local.ip().to_canonical(),
        );
        // The decision and, for a file, opening (and reading) it: on the serving thread when
        // the filesystems are local, else (or when a host name must be looked up) in one trip
        // to the blocking pool.
        let inline = self.lookups.inline();
        let mapped = inline
            .then(|| map(&host.config, &uri.path, remote, local, req.method(), true))
            .flatten();
        let mapped = match mapped {
            Some(m) => m,
            None => {
                let (cfg, path, method) =
                    (host.config.clone(), uri.path.clone(), req.method().clone());
                tokio::task::spawn_blocking(move || map(&cfg, &path, remote, local, &method, false))
                    .await
                    .ok()
                    .flatten()
                    .ok_or(StatusCode::INTERNAL_SERVER_ERROR)?
            }
        };
        let target = match mapped {
            Mapped::Opened(opened) => {
                let r = crate::static_files::respond(opened, req.headers());
                return Ok((r, None, None));
            }
            // Opened above.
            Mapped::Decided(Decision::File(_)) => return Err(StatusCode::INTERNAL_SERVER_ERROR),
            Mapped::Decided(Decision::Status(s)) => return Err(status(s)),
            Mapped::Decided(Decision::Redirect(to)) => {
                let mut location = uri::escape_uri(&to);
                if let Some(q) = uri.query() {
                    location.push('?');
                    location.push_str(q);
                }
                if let Some(h) = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| uri::parse_host(h.as_bytes()).ok())
                {
                    // The scheme the client used (Apache: the server's, https under mod_ssl).
                    let scheme = crate::tls::scheme(tls);
                    location = format!("{scheme}://{}{location}", h.to_header_value());
                }
                let mut r = answers::error(StatusCode::MOVED_PERMANENTLY);
                let v = http::HeaderValue::from_str(&location)
                    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                r.headers_mut().insert(header::LOCATION, v);
                return Ok((r, None, None));
            }
            Mapped::Decided(Decision::Handler(t)) => t,
        };
        let wi = *self
            .handler_workers
            .get(&target.worker.raw)
            .ok_or(StatusCode::INTERNAL_SERVER_ERROR)?;
        let worker = &self.workers[wi];
        let (parts, body) = req.into_parts();
        let headers = borrowed_headers(&parts.headers);
        let prepared = self.read_body(&parts.headers, body).await?;
        let _charge = prepared.charge;
        let creq = cgi_request(&parts, &uri, &headers, info, tls, prepared.content_length);
        let facts = cgi::HandlerFacts {
            worker: &target.worker,
            filename: &target.filename,
            path_info: &target.path_info,
            script_uri: &target.script_uri,
            context_prefix: &target.context_prefix,
            context_document_root: &target.context_document_root,
            default_worker: target.default_worker,
            path_translated: target.path_translated.as_deref(),
        };
        let env = cgi::handler_env(&host.config, &creq, &facts);
        let preamble = cgi::encode_handler_params(
            &host.config,
            &creq,
            &facts,
            &env,
            self.process_path.as_deref(),
            worker.reuse,
        )
        .map_err(|e| {
            tracing::info!("request refused: {e}");
            status(e.status)
        })?;
        let shape = Shape::of(&parts.method, self.limits.max_response_header_bytes);
        let result = forward(worker, preamble, prepared.body, shape, None).await;
        Ok((
            respond(result, &worker.name),
            None,
            Some(worker.name.as_str()),
        ))
    }
}

/// The request as the CGI layer reads it.
fn cgi_request<'a>(
    parts: &'a http::request::Parts,
    uri: &'a uri::RequestUri,
    headers: &'a [(&'a str, &'a [u8])],
    info: ConnInfo,
    tls: Option<&'a crate::tls::ConnTls>,
    content_length: Option<u64>,
) -> cgi::Request<'a> {
    cgi::Request {
        method: parts.method.as_str(),
        protocol: protocol_name(parts.version),
        uri,
        headers,
        remote: info.peer,
        local: info.local,
        tls,
        content_length,
    }
}

fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The header limits hyper enforces only roughly (its read buffer bound is approximate): a field
/// line longer than `LimitRequestFieldSize`, or header lines adding up to more than
/// `max_header_bytes`, are refused with 431 before anything else happens.
/// The length of the request line `METHOD target HTTP/x.y` (an HTTP/2 request as if written
/// as one). Apache measures LimitRequestLine on the whole line, and its line buffer lets one
/// byte more through: with `LimitRequestLine 100` a 101-byte line is served and a 102-byte one
/// is a 414 (Apache 2.4.71, docs/reference/apache.md).
fn request_line_len(method: &Method, target: &str) -> usize {
    method.as_str().len() + 1 + target.len() + 1 + "HTTP/1.1".len()
}

fn head_over_limits(headers: &HeaderMap, limits: &crate::config::Limits) -> Option<StatusCode> {
    let mut total = 0usize;
    // Repeated fields are merged into one value (`a, b`) for the backend, and Apache refuses a
    // merged value over LimitRequestFieldSize too (its 400; a 431 here, like every header
    // limit). A HeaderMap yields a name's values one after another.
    let mut merged = 0usize;
    let mut previous: Option<&header::HeaderName> = None;
    for (name, value) in headers {
        // `Name: value` as it came, without its CRLF.
        let line = name.as_str().len() + 2 + value.len();
        total += line + 2;
        merged = if previous == Some(name) {
            merged + 2 + value.len()
        } else {
            value.len()
        };
        previous = Some(name);
        if line > limits.max_header_line
            || merged > limits.max_header_line
            || total > limits.max_header_bytes
        {
            return Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
    }
    None
}

/// Whether the request's Transfer-Encoding, if any, is exactly `chunked`. hyper accepts any list
/// ending in `chunked` (`chunked, chunked`, `gzip, chunked`) and de-chunks once; chunked applied
/// twice is invalid (RFC 9112 7.1) and other codings cannot be passed to a CGI backend, so both
/// are refused before the body is read, as Apache's `ap_is_chunked` does.
fn transfer_coding_is_plain_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(c), None) => c.eq_ignore_ascii_case(b"chunked"),
        (Some(_), Some(_)) => false,
    }
}

/// Statuses the request path gives before the whole body was read: the body limit, the memory
/// budget, a body read timeout.
fn refused_mid_body(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::REQUEST_TIMEOUT
    )
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
