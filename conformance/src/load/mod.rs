//! `cargo xtask load`: many concurrent client connections through the release proxy on loopback.
//!
//! - fcgi-proxy is built in release mode and started as its own process, through
//!   `sh -c 'ulimit -n ...; exec ...'` so that it may hold every client connection; its
//!   `/status` (admin listener) is polled during the run for each backend pool's open count and
//!   cap.
//! - The backends are fcgi-mock servers in this process, behind a `balancer://` route, each
//!   with a `worker.max` cap. Their journals give the exact peak of concurrent backend
//!   connections, which must not exceed the cap.
//! - The clients (this process, its open-file limit raised with `prlimit`) first open every
//!   connection and wait until all are established, then each sends its requests over HTTP/1.1
//!   keep-alive, then holds its connection until every client is done: all connections are open
//!   at once. Errors are counted by kind: a connect failure, a failed or non-200 response, a
//!   wrong body.
//! - Reported: errors, requests/s over the request phase, the pools' peak open connections
//!   against their caps (sampled and exact), the proxy's peak RSS (VmHWM) and RSS with every
//!   connection open.
//!
//! Everything is bounded: the connection count, the requests per connection and a deadline for
//! the whole run. Loopback only; the proxy is stopped by its PID.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::builder::RangedU64ValueParser;
use fcgi_mock::{MockHandle, MockServer, Script};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::bench::procfs;
use crate::peers::{Signal, is_alive, signal};

pub mod slow_bodies;

use slow_bodies::SlowBodies;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Client connections, all open at the same time.
    pub connections: usize,
    /// Requests on each connection (keep-alive).
    pub requests_per_connection: usize,
    /// fcgi-mock backends behind the balancer.
    pub backends: usize,
    /// `worker.max` of each backend: the pool cap under test.
    pub max_per_backend: usize,
    /// Time each backend takes per request.
    pub backend_delay_ms: u64,
    /// Connection attempts in flight at once while opening (the listen backlog is finite).
    pub connect_parallelism: usize,
    /// The whole run, building excluded.
    pub deadline: Duration,
    pub proxy_bin: Option<PathBuf>,
    /// Instead of GETs, one slow chunked POST per connection.
    pub slow_bodies: Option<SlowBodies>,
    /// `limits.body_buffer_budget` for the proxy (None: its default).
    pub body_budget: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            connections: 10_000,
            requests_per_connection: 5,
            backends: 2,
            max_per_backend: 32,
            backend_delay_ms: 1,
            connect_parallelism: 256,
            deadline: Duration::from_secs(300),
            proxy_bin: None,
            slow_bodies: None,
            body_budget: None,
        }
    }
}

/// `cargo xtask load`: the command line.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "N concurrent client connections through the release fcgi-proxy",
    after_help = "\
N concurrent client connections through the release fcgi-proxy to in-process fcgi-mock backends
on loopback: errors, requests/s, the pools' peak open connections against their caps, and the
proxy's peak RSS. Exit status 0 only with no errors and every pool within its cap.",
    args_override_self = true
)]
pub struct LoadArgs {
    /// Client connections, all open at once [default: 10000, 20000 with --slow-bodies]
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    pub connections: Option<usize>,
    /// Requests per connection, keep-alive
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub requests: usize,
    /// fcgi-mock backends behind the balancer
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least_one())]
    pub backends: usize,
    /// worker.max of each backend
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = at_least_one())]
    pub max: usize,
    /// Backend time per request
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub delay_ms: u64,
    /// Give up after this long
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub deadline: u64,
    /// This fcgi-proxy instead of `cargo build --release -p fcgi-proxy`
    #[arg(long, value_name = "PATH")]
    pub proxy_bin: Option<PathBuf>,
    /// Each connection sends one chunked POST body slowly instead of GETs
    #[arg(long)]
    pub slow_bodies: bool,
    /// Size of each slow body
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, requires = "slow_bodies", value_parser = at_least_one())]
    pub body_bytes: usize,
    /// Bytes per chunk of a slow body
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 10, requires = "slow_bodies", value_parser = at_least_one())]
    pub chunk_bytes: usize,
    /// Pause between two chunks of a slow body
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 500,
        requires = "slow_bodies"
    )]
    pub chunk_interval_ms: u64,
    /// The proxy's limits.body_buffer_budget [default: the proxy's default]
    #[arg(long, value_name = "BYTES")]
    pub body_budget: Option<u64>,
    /// Run only a shard of slow-body clients against this proxy address (used by the run itself)
    #[arg(long, value_name = "ADDR", hide = true, requires = "slow_bodies")]
    pub shard_of: Option<SocketAddr>,
    /// The first client number of the shard
    #[arg(long, value_name = "N", hide = true, default_value_t = 0)]
    pub shard_first: usize,
}

fn at_least_one() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

impl LoadArgs {
    /// The options these arguments ask for.
    pub fn options(&self) -> LoadOptions {
        let slow_bodies = self.slow_bodies.then_some(SlowBodies {
            body_bytes: self.body_bytes,
            chunk_bytes: self.chunk_bytes,
            interval: Duration::from_millis(self.chunk_interval_ms),
        });
        LoadOptions {
            connections: self
                .connections
                .unwrap_or(if self.slow_bodies { 20_000 } else { 10_000 }),
            requests_per_connection: if self.slow_bodies { 1 } else { self.requests },
            slow_bodies,
            body_budget: self.body_budget,
            backends: self.backends,
            max_per_backend: self.max,
            backend_delay_ms: self.delay_ms,
            deadline: Duration::from_secs(self.deadline),
            proxy_bin: self.proxy_bin.clone(),
            ..LoadOptions::default()
        }
    }
}

/// `cargo xtask load ...`
pub fn main(args: &LoadArgs) -> ExitCode {
    let opts = args.options();
    if let (Some(addr), Some(shape)) = (args.shard_of, opts.slow_bodies) {
        return shard_main(addr, args.shard_first, &opts, shape);
    }
    match run(&opts) {
        Ok(r) => {
            print!("{}", r.render(&opts));
            if r.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("xtask load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One pool as `/status` reports it, with the peak seen.
#[derive(Debug, Clone, Default)]
pub struct PoolPeak {
    pub name: String,
    pub cap: usize,
    /// Highest `open` sampled from `/status`.
    pub max_open_sampled: usize,
    /// Peak of concurrent connections the backend itself saw (from its journal).
    pub max_open_exact: usize,
    pub opened: u64,
    pub waits: u64,
    pub acquire_timeouts: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub connections_established: usize,
    /// Connections established on the proxy's side of loopback once every client was connected
    /// (from /proc/net/tcp; highest count seen while waiting for the proxy to accept them all).
    pub proxy_side_established: Option<usize>,
    pub requests_ok: u64,
    pub connect_errors: u64,
    pub request_errors: u64,
    pub status_errors: u64,
    pub body_errors: u64,
    pub first_errors: Vec<String>,
    pub backend_requests: u64,
    pub connect_phase: Duration,
    pub request_phase: Duration,
    pub pools: Vec<PoolPeak>,
    pub status_samples: usize,
    pub proxy_peak_rss_kib: u64,
    pub proxy_rss_all_open_kib: u64,
    pub client_nofile: u64,
    pub timed_out: bool,
    /// With `--slow-bodies`.
    pub slow: Option<SlowReport>,
}

/// Memory a client connection held at once may cost beyond the body budget: hyper's read buffer
/// (it grows up to the request head limit, 64 KiB by default) and write buffer, the tasks, and
/// the allocator's share. Measured on 2 cores with 20,000 slow 1 MiB bodies: about 19 KiB per
/// connection with the system allocator, 32 KiB with mimalloc (the default).
pub const PER_CONNECTION_KIB: u64 = 64;

/// What the slow-body run showed.
#[derive(Debug, Clone, Default)]
pub struct SlowReport {
    pub served: u64,
    pub refused: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub bytes_sent: u64,
    /// Bodies the backends received whole.
    pub backend_bodies_complete: u64,
    /// The proxy's count of buffered body bytes at its peak, and its budget (0: unlimited).
    pub body_peak: u64,
    pub budget: u64,
    pub proxy_refused: u64,
    /// The proxy's client connection limit, the most it held at once (sampled), and how often
    /// it paused accepting.
    pub max_client_connections: u64,
    pub peak_client_connections: u64,
    pub accept_pauses: u64,
    /// Resident memory the proxy added at its peak over what it used before the first client.
    pub rss_growth_kib: u64,
    pub phase: Duration,
}

impl SlowReport {
    /// What the proxy may add to its footprint: the body budget, plus for each client
    /// connection it holds at once [`PER_CONNECTION_KIB`] (a request in progress: hyper's read
    /// and write buffers, the connection's and the request's tasks), plus 32 MiB for the
    /// allocator and the runtime.
    pub fn memory_allowance_kib(&self) -> u64 {
        self.budget / 1024 + self.peak_client_connections * PER_CONNECTION_KIB + 32 * 1024
    }

    pub fn passed(&self) -> bool {
        self.errors == 0
            && self.served > 0
            && self.budget > 0
            && self.body_peak <= self.budget
            && self.backend_bodies_complete == self.served
            && self.peak_client_connections <= self.max_client_connections
            && self.rss_growth_kib <= self.memory_allowance_kib()
    }
}

impl LoadReport {
    pub fn errors(&self) -> u64 {
        self.connect_errors + self.request_errors + self.status_errors + self.body_errors
    }

    pub fn requests_per_second(&self) -> f64 {
        let s = self.request_phase.as_secs_f64();
        if s > 0.0 {
            self.requests_ok as f64 / s
        } else {
            0.0
        }
    }

    pub fn within_caps(&self) -> bool {
        !self.pools.is_empty()
            && self
                .pools
                .iter()
                .all(|p| p.max_open_sampled <= p.cap && p.max_open_exact <= p.cap)
    }

    pub fn passed(&self) -> bool {
        if let Some(slow) = &self.slow {
            return !self.timed_out
                && self.connect_errors == 0
                && self.request_errors == 0
                && slow.passed();
        }
        !self.timed_out && self.errors() == 0 && self.within_caps()
    }

    pub fn render(&self, o: &LoadOptions) -> String {
        use std::fmt::Write as _;
        if let Some(slow) = &self.slow {
            return self.render_slow(o, slow);
        }
        let mut s = String::new();
        let total = o.connections as u64 * o.requests_per_connection as u64;
        let _ = writeln!(
            s,
            "load: {} connections x {} requests, {} backends (worker.max={}, {} ms per request)",
            o.connections,
            o.requests_per_connection,
            o.backends,
            o.max_per_backend,
            o.backend_delay_ms
        );
        let _ = writeln!(
            s,
            "  connections open at once: {} (proxy side established: {})",
            self.connections_established,
            self.proxy_side_established
                .map_or("n/a".to_owned(), |n| n.to_string())
        );
        let _ = writeln!(
            s,
            "  requests ok: {} of {total}; backend saw {}",
            self.requests_ok, self.backend_requests
        );
        let _ = writeln!(
            s,
            "  errors: {} (connect {}, request {}, status {}, body {})",
            self.errors(),
            self.connect_errors,
            self.request_errors,
            self.status_errors,
            self.body_errors
        );
        for e in &self.first_errors {
            let _ = writeln!(s, "    {e}");
        }
        let _ = writeln!(
            s,
            "  connect phase: {:.2} s; request phase: {:.2} s; {:.0} requests/s",
            self.connect_phase.as_secs_f64(),
            self.request_phase.as_secs_f64(),
            self.requests_per_second()
        );
        let _ = writeln!(s, "  pools ({} /status samples):", self.status_samples);
        for p in &self.pools {
            let _ = writeln!(
                s,
                "    {}: cap {}, max open {} sampled / {} at the backend, opened {}, waits {}, acquire timeouts {}{}",
                p.name,
                p.cap,
                p.max_open_sampled,
                p.max_open_exact,
                p.opened,
                p.waits,
                p.acquire_timeouts,
                if p.max_open_sampled <= p.cap && p.max_open_exact <= p.cap {
                    ""
                } else {
                    "  OVER THE CAP"
                }
            );
        }
        let _ = writeln!(
            s,
            "  proxy RSS: peak {:.1} MiB, with every connection open {:.1} MiB",
            self.proxy_peak_rss_kib as f64 / 1024.0,
            self.proxy_rss_all_open_kib as f64 / 1024.0
        );
        let _ = writeln!(s, "  client open-file limit: {}", self.client_nofile);
        if self.timed_out {
            let _ = writeln!(s, "  TIMED OUT after {:?}", o.deadline);
        }
        let _ = writeln!(s, "{}", if self.passed() { "PASS" } else { "FAIL" });
        s
    }

    fn render_slow(&self, o: &LoadOptions, r: &SlowReport) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let shape = o.slow_bodies.unwrap_or_default();
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let _ = writeln!(
            s,
            "load --slow-bodies: {} connections, each one chunked POST of {} bytes in {}-byte chunks every {} ms",
            o.connections,
            shape.body_bytes,
            shape.chunk_bytes,
            shape.interval.as_millis()
        );
        let _ = writeln!(
            s,
            "  client connections: {} connected (connect errors {}); the proxy held at most {} at once (its limit {}), paused accepting {} times",
            self.connections_established,
            self.connect_errors,
            r.peak_client_connections,
            r.max_client_connections,
            r.accept_pauses
        );
        let _ = writeln!(
            s,
            "  bodies served {} (backend got {} whole), refused 503 {} (proxy counted {}), errors {}",
            r.served, r.backend_bodies_complete, r.refused, r.proxy_refused, r.errors
        );
        for e in &r.first_errors {
            let _ = writeln!(s, "    {e}");
        }
        let _ = writeln!(
            s,
            "  body phase {:.1} s, {:.1} MiB sent by the clients",
            r.phase.as_secs_f64(),
            mib(r.bytes_sent)
        );
        let _ = writeln!(
            s,
            "  buffered bodies at the peak: {:.1} MiB of a {:.1} MiB budget{}",
            mib(r.body_peak),
            mib(r.budget),
            if r.body_peak <= r.budget && r.budget > 0 {
                ""
            } else {
                "  OVER THE BUDGET"
            }
        );
        let allowance = r.memory_allowance_kib();
        let _ = writeln!(
            s,
            "  proxy RSS: {:.1} MiB before the first client, peak {:.1} MiB: +{:.1} MiB (allowed +{:.1} MiB: the body budget + {PER_CONNECTION_KIB} KiB per connection held + 32 MiB){}",
            self.proxy_rss_all_open_kib as f64 / 1024.0,
            self.proxy_peak_rss_kib as f64 / 1024.0,
            r.rss_growth_kib as f64 / 1024.0,
            allowance as f64 / 1024.0,
            if r.rss_growth_kib <= allowance {
                ""
            } else {
                "  OVER"
            }
        );
        let _ = writeln!(s, "  client open-file limit: {}", self.client_nofile);
        if self.timed_out {
            let _ = writeln!(s, "  TIMED OUT after {:?}", o.deadline);
        }
        let _ = writeln!(s, "{}", if self.passed() { "PASS" } else { "FAIL" });
        s
    }
}

/// The proxy as a child process, stopped (SIGTERM, then SIGKILL) by its PID on drop.
struct ProxyProcess {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        // `sh` exec'd the proxy, so the child's PID is the proxy's.
        signal(self.pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    signal(self.pid, Signal::SIGKILL);
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn proxy_config(backends: &[String], max: usize, body_budget: Option<u64>) -> String {
    let mut s = String::from(
        "listen = [\"127.0.0.1:0\"]\n\
         [timeouts]\n\
         header_read = \"120s\"\n\
         body_read = \"120s\"\n\
         client_write = \"120s\"\n\
         backend_io = \"120s\"\n",
    );
    // Every client's request waits for its turn here (the default, 1024 waiting per backend,
    // would answer most of 10,000 at once with 503).
    s.push_str("[limits]\nmax_waiting = 0\n");
    if let Some(b) = body_budget {
        s.push_str(&format!("body_buffer_budget = {b}\n"));
    }
    s.push_str(
        "[[route]]\npath = \"/load/\"\ntarget = \"balancer://loadpool/\"\n\
         [[balancer]]\nname = \"loadpool\"\n",
    );
    for b in backends {
        s.push_str(&format!(
            "[[balancer.member]]\nurl = \"fcgi://{b}\"\nworker.max = {max}\nworker.acquire = \"120s\"\n"
        ));
    }
    s
}

fn start_proxy(bin: &std::path::Path, config: &str, nofile: u64) -> Result<ProxyProcess, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let path = dir.path().join("load.toml");
    std::fs::write(&path, config).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let script = format!(
        "ulimit -n {nofile} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\""
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(bin)
        .args(["--config"])
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout from the proxy")?;
    // `listening on ADDR` and `admin on ADDR`, from a thread (with a deadline here).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut proc_ = ProxyProcess {
        child,
        pid,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut addr, mut admin) = (None, None);
    while addr.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .map_err(|_| "fcgi-proxy did not report its addresses in time".to_owned())?;
        if let Some(a) = line.strip_prefix("listening on ") {
            addr = a.trim().parse().ok();
        } else if let Some(a) = line.strip_prefix("admin on ") {
            admin = a.trim().parse().ok();
        }
    }
    proc_.addr = addr.unwrap_or(proc_.addr);
    proc_.admin = admin.unwrap_or(proc_.admin);
    // The reader thread keeps draining stdout; nothing more is expected on it.
    Ok(proc_)
}

/// `GET /status` from the admin listener (blocking, short timeouts; HTTP/1.0, so the admin
/// listener closes the connection after the response).
fn admin_status(admin: SocketAddr) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /status HTTP/1.0\r\nHost: admin\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let r = testkit::http1::parse_response(&out).ok()?;
    serde_json::from_slice(&r.body).ok()
}

/// Established TCP connections whose local port is `port` (from /proc/net/tcp).
fn established_on(port: u16) -> Option<usize> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!(":{port:04X}");
    Some(
        text.lines()
            .skip(1)
            .filter(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                c.get(1).is_some_and(|a| a.ends_with(&want)) && c.get(3) == Some(&"01")
            })
            .count(),
    )
}

/// Peak number of connections open at once, from a backend journal.
fn peak_concurrency(m: &MockHandle) -> usize {
    let mut events: Vec<(u64, i64)> = Vec::new();
    for c in m.journal().connections() {
        events.push((c.opened_ms, 1));
        events.push((c.closed_ms.unwrap_or(u64::MAX), -1));
    }
    // Closes before opens at the same millisecond: a replacement is not an overlap.
    events.sort_by_key(|&(t, d)| (t, d));
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, d) in events {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    connect_errors: AtomicU64,
    request_errors: AtomicU64,
    status_errors: AtomicU64,
    body_errors: AtomicU64,
    established: AtomicUsize,
    first_errors: std::sync::Mutex<Vec<String>>,
}

impl Counters {
    fn note(&self, what: String) {
        let mut v = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 5 {
            v.push(what);
        }
    }
}

const BODY: &str = "load-ok";

/// One client: connect, wait for everyone, send its requests, wait for everyone, close.
async fn client(
    i: usize,
    addr: SocketAddr,
    requests: usize,
    connect_gate: Arc<tokio::sync::Semaphore>,
    all_open: Arc<tokio::sync::Barrier>,
    all_done: Arc<tokio::sync::Barrier>,
    c: Arc<Counters>,
) {
    let stream = {
        let _permit = connect_gate.acquire().await;
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::net::TcpStream::connect(addr),
        )
        .await
    };
    let conn = match stream {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s))
                .await
                .ok()
        }
        Ok(Err(e)) => {
            c.note(format!("connect {i}: {e}"));
            None
        }
        Err(_) => {
            c.note(format!("connect {i}: timed out"));
            None
        }
    };
    let mut sender = match conn {
        Some((sender, driver)) => {
            tokio::spawn(driver);
            c.established.fetch_add(1, Ordering::Relaxed);
            Some(sender)
        }
        None => {
            c.connect_errors.fetch_add(1, Ordering::Relaxed);
            None
        }
    };
    all_open.wait().await;
    if let Some(tx) = sender.as_mut() {
        for r in 0..requests {
            let req = http::Request::get(format!("/load/c{i}/r{r}"))
                .header("host", "load.test")
                .body(Empty::<Bytes>::new())
                .unwrap_or_default();
            let resp = tokio::time::timeout(Duration::from_secs(120), tx.send_request(req)).await;
            let resp = match resp {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    c.request_errors.fetch_add(1, Ordering::Relaxed);
                    c.note(format!("request c{i}/r{r}: {e}"));
                    break;
                }
                Err(_) => {
                    c.request_errors.fetch_add(1, Ordering::Relaxed);
                    c.note(format!("request c{i}/r{r}: no response in 120 s"));
                    break;
                }
            };
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            match body {
                Err(e) => {
                    c.body_errors.fetch_add(1, Ordering::Relaxed);
                    c.note(format!("body c{i}/r{r}: {e}"));
                    break;
                }
                Ok(_) if status != http::StatusCode::OK => {
                    c.status_errors.fetch_add(1, Ordering::Relaxed);
                    c.note(format!("status c{i}/r{r}: {status}"));
                }
                Ok(b) if b != BODY.as_bytes() => {
                    c.body_errors.fetch_add(1, Ordering::Relaxed);
                    c.note(format!("body c{i}/r{r}: {:?}", String::from_utf8_lossy(&b)));
                }
                Ok(_) => {
                    c.ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    all_done.wait().await;
    drop(sender);
}

/// Runs the load and reports. Errors are setup failures (build, start), not load errors.
pub fn run(o: &LoadOptions) -> Result<LoadReport, String> {
    // Client sockets plus the backends' sockets plus slack; the proxy needs about the same.
    // Slow-body clients run in shards of their own processes.
    let clients_here = if o.slow_bodies.is_some() {
        o.connections.min(SHARD_MAX)
    } else {
        o.connections
    };
    let want_files = (clients_here + o.backends * o.max_per_backend + 1024) as u64;
    let nofile = procfs::raise_nofile(want_files);
    if nofile < want_files {
        return Err(format!(
            "{} connections need about {want_files} open files; this process may have {nofile} \
             (raise the hard limit, e.g. `ulimit -Hn`, or use --connections)",
            o.connections
        ));
    }
    let bin = match &o.proxy_bin {
        Some(p) => p.clone(),
        None => {
            eprintln!("load: building fcgi-proxy (cargo build --release -p fcgi-proxy)");
            crate::bench::build_proxy(&crate::bench::workspace_root())?
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(run_async(o, &bin, want_files, nofile))
}

async fn run_async(
    o: &LoadOptions,
    bin: &std::path::Path,
    want_files: u64,
    nofile: u64,
) -> Result<LoadReport, String> {
    // Slow bodies: the backends count STDIN bytes without keeping them.
    let script = format!(
        "{}[default]\nstatus = 200\nheaders = [[\"Content-Type\", \"text/plain\"]]\nbody = [{{ data = \"{BODY}\", delay_ms = {} }}]\n",
        if o.slow_bodies.is_some() {
            "[server]\nmax_stdin_bytes = 0\n"
        } else {
            ""
        },
        o.backend_delay_ms
    );
    let mut mocks = Vec::new();
    for _ in 0..o.backends {
        let s = Script::from_toml_str(&script).map_err(|e| format!("mock script: {e}"))?;
        mocks.push(
            MockServer::bind_tcp("127.0.0.1:0", s)
                .await
                .map_err(|e| format!("mock: {e}"))?,
        );
    }
    let addrs: Vec<String> = mocks.iter().map(|m| m.addr().to_owned()).collect();
    // The proxy's default connection limit keeps an eighth of its open-file limit for backends
    // and files: give it twice what the clients need.
    let proxy = start_proxy(
        bin,
        &proxy_config(&addrs, o.max_per_backend, o.body_budget),
        want_files * 2,
    )?;
    eprintln!(
        "load: fcgi-proxy pid {} on {} (admin {}); {} backends; client open-file limit {nofile}",
        proxy.pid, proxy.addr, proxy.admin, o.backends
    );
    let max_clients = admin_status(proxy.admin)
        .and_then(|v| v["admission"]["max_client_connections"].as_u64())
        .unwrap_or(0) as usize;
    // Slow-body clients beyond the proxy's limit wait for a slot: that is part of the test.
    if max_clients < o.connections && o.slow_bodies.is_none() {
        return Err(format!(
            "the proxy holds at most {max_clients} client connections (limits.max_connections from \
             its open-file limit); {} need a higher hard limit (`ulimit -Hn`)",
            o.connections
        ));
    }
    let mut report = LoadReport {
        client_nofile: nofile,
        ..LoadReport::default()
    };
    if let Some(shape) = o.slow_bodies {
        let r = run_slow(o, shape, &proxy, &mocks, report).await;
        drop(proxy);
        for m in mocks {
            m.shutdown().await;
        }
        return Ok(r);
    }

    // Sample /status until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let admin = proxy.admin;
        std::thread::spawn(move || {
            let mut peaks: Vec<PoolPeak> = Vec::new();
            let mut samples = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if let Some(v) = admin_status(admin) {
                    samples += 1;
                    for w in v["workers"].as_array().into_iter().flatten() {
                        let name = w["name"].as_str().unwrap_or("?").to_owned();
                        let i = match peaks.iter().position(|p| p.name == name) {
                            Some(i) => i,
                            None => {
                                peaks.push(PoolPeak {
                                    name,
                                    ..PoolPeak::default()
                                });
                                peaks.len() - 1
                            }
                        };
                        let p = &mut peaks[i];
                        let n = |k: &str| w[k].as_u64().unwrap_or(0);
                        p.cap = n("cap") as usize;
                        p.max_open_sampled = p.max_open_sampled.max(n("open") as usize);
                        p.opened = n("opened");
                        p.waits = n("waits");
                        p.acquire_timeouts = n("acquire_timeouts");
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (peaks, samples)
        })
    };

    let counters = Arc::new(Counters::default());
    let all_open = Arc::new(tokio::sync::Barrier::new(o.connections + 1));
    let all_done = Arc::new(tokio::sync::Barrier::new(o.connections + 1));
    let gate = Arc::new(tokio::sync::Semaphore::new(o.connect_parallelism.max(1)));
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..o.connections {
        tasks.spawn(client(
            i,
            proxy.addr,
            o.requests_per_connection,
            gate.clone(),
            all_open.clone(),
            all_done.clone(),
            counters.clone(),
        ));
    }
    let deadline = started + o.deadline;
    let phases = async {
        all_open.wait().await;
        let connect_phase = started.elapsed();
        // Every client connection is open. The proxy's side lags a little when its accept queue
        // was full (the kernel then holds the handshake): wait until it has them all (5 s at
        // most), and keep the highest count seen.
        let want = counters.established.load(Ordering::Relaxed);
        let settle = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut proxy_side = None;
        loop {
            let n = established_on(proxy.addr.port());
            proxy_side = proxy_side.max(n);
            if n.is_none_or(|n| n >= want) || tokio::time::Instant::now() >= settle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rss_open = procfs::memory(&[proxy.pid]).rss_kib;
        let req_started = tokio::time::Instant::now();
        all_done.wait().await;
        let request_phase = req_started.elapsed();
        (connect_phase, proxy_side, rss_open, request_phase)
    };
    match tokio::time::timeout_at(deadline, phases).await {
        Ok((connect_phase, proxy_side, rss_open, request_phase)) => {
            report.connect_phase = connect_phase;
            report.proxy_side_established = proxy_side;
            report.proxy_rss_all_open_kib = rss_open;
            report.request_phase = request_phase;
            while tasks.join_next().await.is_some() {}
        }
        Err(_) => {
            report.timed_out = true;
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut pools, samples) = sampler.join().unwrap_or_default();
    report.status_samples = samples;
    if !is_alive(proxy.pid) {
        report
            .first_errors
            .push("fcgi-proxy exited during the run".into());
        report.request_errors += 1;
    }
    report.proxy_peak_rss_kib = procfs::memory(&[proxy.pid]).hwm_kib;
    // Exact peaks from the backends: pool names are the member URLs.
    for (m, a) in mocks.iter().zip(&addrs) {
        let peak = peak_concurrency(m);
        report.backend_requests += m.journal().snapshot().requests.len() as u64;
        match pools.iter_mut().find(|p| p.name.contains(a.as_str())) {
            Some(p) => p.max_open_exact = peak,
            None => pools.push(PoolPeak {
                name: format!("fcgi://{a} (no /status sample)"),
                max_open_exact: peak,
                ..PoolPeak::default()
            }),
        }
    }
    report.pools = pools;
    let c = &counters;
    report.connections_established = c.established.load(Ordering::Relaxed);
    report.requests_ok = c.ok.load(Ordering::Relaxed);
    report.connect_errors = c.connect_errors.load(Ordering::Relaxed);
    report.request_errors += c.request_errors.load(Ordering::Relaxed);
    report.status_errors = c.status_errors.load(Ordering::Relaxed);
    report.body_errors = c.body_errors.load(Ordering::Relaxed);
    report.first_errors.extend(
        c.first_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..),
    );
    drop(proxy);
    for m in mocks {
        m.shutdown().await;
    }
    Ok(report)
}

/// Slow-body clients per process.
const SHARD_MAX: usize = 8000;

/// `load --slow-bodies --shard-of ADDR`: one shard of clients; its result as one JSON line.
fn shard_main(addr: SocketAddr, first: usize, o: &LoadOptions, shape: SlowBodies) -> ExitCode {
    let nofile = procfs::raise_nofile((o.connections + 256) as u64);
    if nofile < (o.connections + 64) as u64 {
        eprintln!(
            "xtask load shard: {} clients need more open files than {nofile}",
            o.connections
        );
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xtask load shard: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(slow_bodies::run_shard(
        addr,
        first,
        o.connections,
        o.connect_parallelism,
        shape,
        BODY,
        o.deadline,
    ));
    println!("{}", serde_json::to_string(&r).unwrap_or_default());
    ExitCode::SUCCESS
}

/// A shard process, killed by its PID if still running when dropped.
struct Shard {
    child: Child,
    out: std::sync::mpsc::Receiver<String>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.child.id(), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn start_shard(
    addr: SocketAddr,
    first: usize,
    n: usize,
    o: &LoadOptions,
    shape: SlowBodies,
) -> Result<Shard, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let mut child = Command::new(exe)
        .arg("load")
        .arg("--slow-bodies")
        .args(["--shard-of", &addr.to_string()])
        .args(["--shard-first", &first.to_string()])
        .args(["--connections", &n.to_string()])
        .args(["--body-bytes", &shape.body_bytes.to_string()])
        .args(["--chunk-bytes", &shape.chunk_bytes.to_string()])
        .args([
            "--chunk-interval-ms",
            &shape.interval.as_millis().to_string(),
        ])
        .args(["--deadline", &o.deadline.as_secs().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting a client shard: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout from a client shard")?;
    let (tx, out) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok(Shard { child, out })
}

/// The slow-body run: client shards (processes of their own) each connect their clients and
/// send every body slowly at once; outcomes, the proxy's peak of buffered body bytes and of
/// client connections, and its memory growth over its footprint before the first client.
async fn run_slow(
    o: &LoadOptions,
    shape: SlowBodies,
    proxy: &ProxyProcess,
    mocks: &[MockHandle],
    mut report: LoadReport,
) -> LoadReport {
    let base = procfs::memory(&[proxy.pid]).rss_kib;
    report.proxy_rss_all_open_kib = base;
    let started = tokio::time::Instant::now();
    let mut shards = Vec::new();
    let mut first = 0;
    while first < o.connections {
        let n = (o.connections - first).min(SHARD_MAX);
        match start_shard(proxy.addr, first, n, o, shape) {
            Ok(s) => shards.push(s),
            Err(e) => {
                report.request_errors += 1;
                report.first_errors.push(e);
            }
        }
        first += n;
    }
    // Sample /status for the peak of client connections while the shards run.
    let mut peak_clients = 0u64;
    let mut pauses = 0u64;
    let mut total = slow_bodies::ShardResult::default();
    let mut pending: Vec<&Shard> = shards.iter().collect();
    let deadline = started + o.deadline + Duration::from_secs(30);
    while !pending.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            report.timed_out = true;
            break;
        }
        if let Some(v) = admin_status(proxy.admin) {
            let a = &v["admission"];
            peak_clients = peak_clients.max(a["client_connections"].as_u64().unwrap_or(0));
            pauses = a["accept_pauses"].as_u64().unwrap_or(pauses);
        }
        pending.retain(|s| match s.out.try_recv() {
            Ok(line) => {
                match serde_json::from_str::<slow_bodies::ShardResult>(&line) {
                    Ok(r) => total.add(&r),
                    Err(e) => total.first_errors.push(format!("shard said {line:?}: {e}")),
                }
                false
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => true,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                total.errors += 1;
                total
                    .first_errors
                    .push("a client shard ended without a result".into());
                false
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(shards);
    let phase = started.elapsed();
    let status = admin_status(proxy.admin);
    if !is_alive(proxy.pid) || status.is_none() {
        report.request_errors += 1;
        report
            .first_errors
            .push("fcgi-proxy exited or stopped answering during the run".into());
    }
    let n = |k: &str| {
        status
            .as_ref()
            .and_then(|v| v["admission"][k].as_u64())
            .unwrap_or(0)
    };
    report.proxy_peak_rss_kib = procfs::memory(&[proxy.pid]).hwm_kib;
    report.connect_errors = total.connect_errors;
    report.connections_established = o.connections - total.connect_errors as usize;
    report.proxy_side_established = Some(peak_clients as usize);
    report.timed_out |= total.timed_out;
    let mut complete = 0u64;
    for m in mocks {
        let snap = m.journal().snapshot();
        report.backend_requests += snap.requests.len() as u64;
        complete += snap
            .requests
            .iter()
            .filter(|r| r.stdin_complete && r.stdin_len == shape.body_bytes as u64)
            .count() as u64;
    }
    report.slow = Some(SlowReport {
        served: total.served,
        refused: total.refused,
        errors: total.errors,
        first_errors: total.first_errors,
        bytes_sent: total.bytes_sent,
        backend_bodies_complete: complete,
        body_peak: n("body_buffer_bytes_peak"),
        budget: n("body_buffer_budget"),
        proxy_refused: n("body_buffer_refused"),
        max_client_connections: n("max_client_connections"),
        peak_client_connections: peak_clients.max(n("client_connections_peak")),
        accept_pauses: pauses.max(n("accept_pauses")),
        rss_growth_kib: report.proxy_peak_rss_kib.saturating_sub(base),
        phase,
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options from a command line after `load`.
    fn parse(line: &str) -> Result<LoadOptions, clap::Error> {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        Cli::try_parse_from(std::iter::once("load").chain(line.split_whitespace()))
            .map(|c| c.load.options())
    }

    #[test]
    fn args_and_defaults() {
        let o = parse("").unwrap();
        let d = LoadOptions::default();
        assert_eq!(o.connections, 10_000);
        assert_eq!(
            (o.requests_per_connection, o.backends, o.max_per_backend),
            (d.requests_per_connection, d.backends, d.max_per_backend)
        );
        assert_eq!(
            (o.backend_delay_ms, o.deadline),
            (d.backend_delay_ms, d.deadline)
        );
        let o = parse("--connections 50 --max 3").unwrap();
        assert_eq!((o.connections, o.max_per_backend), (50, 3));
        assert_eq!(
            parse("--help").unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
        for bad in ["--max 0", "--connections 0", "--bogus"] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn slow_body_args() {
        let o = parse("--slow-bodies").unwrap();
        assert_eq!((o.connections, o.requests_per_connection), (20_000, 1));
        assert_eq!(o.slow_bodies, Some(SlowBodies::default()));
        let o = parse("--slow-bodies --connections 5 --body-bytes 100 --chunk-bytes 10 --chunk-interval-ms 7 --body-budget 99").unwrap();
        assert_eq!(o.connections, 5);
        assert_eq!(
            o.slow_bodies,
            Some(SlowBodies {
                body_bytes: 100,
                chunk_bytes: 10,
                interval: Duration::from_millis(7)
            })
        );
        assert_eq!(o.body_budget, Some(99));
        for bad in ["--body-bytes 5", "--slow-bodies --chunk-bytes 0"] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn slow_report_fails_over_the_budget_or_the_memory_allowance() {
        let good = SlowReport {
            served: 10,
            refused: 90,
            backend_bodies_complete: 10,
            body_peak: 1 << 20,
            budget: 1 << 20,
            max_client_connections: 1000,
            peak_client_connections: 100,
            rss_growth_kib: 1024 + 100 * PER_CONNECTION_KIB,
            ..SlowReport::default()
        };
        assert!(good.passed());
        let fails = |f: fn(&mut SlowReport)| {
            let mut r = good.clone();
            f(&mut r);
            !r.passed()
        };
        assert!(fails(|r| r.body_peak += 1), "over the budget");
        assert!(fails(|r| r.rss_growth_kib = r.memory_allowance_kib() + 1));
        assert!(fails(|r| r.served = 0), "nothing served proves nothing");
        assert!(fails(|r| r.backend_bodies_complete -= 1), "a body lost");
        assert!(fails(|r| r.errors = 1));
        assert!(
            fails(|r| r.budget = 0),
            "an unlimited budget bounds nothing"
        );
        assert!(fails(|r| r.peak_client_connections = 1001));
    }

    #[test]
    fn config_caps_every_member() {
        let c = proxy_config(&["127.0.0.1:1".into(), "127.0.0.1:2".into()], 7, Some(5));
        assert_eq!(c.matches("worker.max = 7").count(), 2);
        let cfg = fcgi_proxy::config::Config::from_toml_str(&c, "load.toml").unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            (cfg.limits.max_waiting, cfg.limits.body_buffer_budget),
            (0, 5)
        );
        assert_eq!(cfg.balancers[0].members.len(), 2);
    }

    #[test]
    fn report_fails_over_the_cap_or_with_errors() {
        let mut r = LoadReport {
            pools: vec![PoolPeak {
                name: "a".into(),
                cap: 2,
                max_open_sampled: 2,
                max_open_exact: 2,
                ..PoolPeak::default()
            }],
            ..LoadReport::default()
        };
        assert!(r.passed());
        r.pools[0].max_open_exact = 3;
        assert!(!r.passed());
        r.pools[0].max_open_exact = 2;
        r.status_errors = 1;
        assert!(!r.passed());
    }
}
