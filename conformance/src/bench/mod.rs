//! `cargo xtask bench`: fcgi-proxy side by side with nginx, HAProxy and Apache in front of one
//! FastCGI backend.
//!
//! - The backend is a minimal libfcgi responder (`responder.c`, compiled at bench time) run as
//!   many processes by spawn-fcgi, more than any proxy opens connections, so no proxy
//!   saturates it; `unix-c64` runs a second set of them on a Unix socket, and `fpm-c16` runs
//!   php-fpm 8.2 with a hello-world script instead.
//! - Every target runs as its users leave it: fcgi-proxy with its defaults, and every target
//!   with its default access log (fcgi-proxy's line per request on stderr, nginx's and
//!   Apache's `combined` log to a file; HAProxy has none without a `log` target).
//!   `get-c64-nolog` turns the logs off.
//! - Each workload runs every target in turn, round after round, every other round in reverse
//!   (A B C D, D C B A, A B C D ...): no target always follows the same one, and a drift of
//!   the machine over the run weighs on all alike. Each run is on a freshly started peer, after
//!   the page cache's dirty pages (the last run's access log) are written out: warm-up, then
//!   the measured wrk run. Medians over rounds; ratios against nginx.
//! - Proxy CPU is utime + stime of the peer's process tree (from /proc) before and after the
//!   measured run, divided by the requests wrk completed. Peak RSS is the sum of VmHWM over
//!   the tree.
//! - Results: the machine line and a table on stdout, and `target/bench/results.json` (plus
//!   `results.md` and the peer configs in `target/bench/configs/`).
//!
//! The machine is shared and small (2 cores carry wrk, the backend and the proxy together):
//! single runs are noisy, which is why targets alternate and medians are reported.

pub mod backend;
pub mod fpm;
pub mod h2load;
pub mod idle;
pub mod machine;
pub mod pgo;
pub mod procfs;
pub mod report;
pub mod tls;
pub mod wrk;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;

use crate::peers::{BackendAddr, PeerKind, PeerOptions, RunningPeer, Signal, find_program, signal};
use backend::Backend;
use fpm::Fpm;
use machine::Machine;
use report::{Metrics, Report, Run, TargetResult, WorkloadKind, WorkloadResult};
use wrk::RequestShape;

/// The idle-connection memory goal for our proxy.
pub const IDLE_GOAL_MIB: f64 = 64.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    /// Measured part of each wrk run (whole seconds).
    pub duration: Duration,
    /// wrk run before the measured one, on the same peer process.
    pub warmup: Duration,
    pub rounds: usize,
    /// Rounds of the idle-connection workload (memory varies little).
    pub idle_rounds: usize,
    pub idle_connections: usize,
    pub backend_processes: usize,
    pub targets: Vec<PeerKind>,
    /// Only these workloads (by name); None: all.
    pub workloads: Option<Vec<String>>,
    /// Use this fcgi-proxy binary instead of building it in release mode.
    pub proxy_bin: Option<PathBuf>,
    /// Extra environment for every target process (the profile file of a `cargo xtask pgo`
    /// training run).
    pub peer_env: Vec<(String, String)>,
    /// Where the backend is built and results are written.
    pub out_dir: PathBuf,
    /// Print progress lines on stderr.
    pub progress: bool,
}

/// The workspace root (where `cargo build` runs).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

impl Options {
    /// The full run: 5 s measured + 1 s warm-up, 3 rounds, 10k idle connections.
    pub fn full() -> Options {
        Options {
            quick: false,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            rounds: 3,
            idle_rounds: 2,
            idle_connections: 10_000,
            backend_processes: 320,
            targets: PeerKind::ALL.to_vec(),
            workloads: None,
            proxy_bin: None,
            peer_env: Vec::new(),
            out_dir: workspace_root().join("target").join("bench"),
            progress: true,
        }
    }

    /// A smoke run: 1 s per run, one round, 200 idle connections, no warm-up.
    pub fn quick() -> Options {
        Options {
            quick: true,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            rounds: 1,
            idle_rounds: 1,
            idle_connections: 200,
            ..Options::full()
        }
    }
}

const AFTER_HELP: &str = "\
fcgi-proxy (release build) side by side with nginx, HAProxy and Apache in front of one FastCGI
backend; wrk for load. Every target runs with its default access log. Results: the machine, a
table here, and target/bench/results.json (results.md, configs/).

WORKLOADS (libfcgi responder over loopback TCP, backend keep-alive, access logs on, unless
said otherwise):
    get-c4, get-c64, get-c256
                         small GET over 4 / 64 / 256 client connections
    post64k-c16, post64k-c64
                         POST with a 64 KiB body over 16 / 64 connections
    get-c16-noreuse      small GET over 16 connections, backend connection reuse off
    unix-c64             small GET over 64 connections, the responder on a Unix socket
    fpm-c16              a hello-world PHP script on php-fpm 8.2 (pm = static, 8 children),
                         16 connections, each target's default backend reuse (skipped when
                         php-fpm8.2 is not installed)
    site-fpm-c16         fpm-c16 through each target's PHP site set-up (the script looked up
                         on disk first): fcgi-proxy a [[site]] with php, nginx Debian's
                         fastcgi-php.conf (try_files), Apache SetHandler as Debian's
                         php8.2-fpm.conf; HAProxy maps no request to a file and sits it out
    get-c64-nolog        get-c64 with every access log off
    static-4k-c64, static-1m-c16
                         GET of a 4 KiB / 1 MiB file over 64 / 16 connections, served from
                         a document root the bench writes (no request reaches a backend):
                         fcgi-proxy a [[site]] root, nginx root (sendfile on, as Debian ships
                         it), Apache DocumentRoot; HAProxy cannot serve files and sits them out
    https-get-c16        small GET over HTTP/1.1 and TLS, 16 connections (wrk, no ALPN)
    h2-get-c16           small GET over HTTP/2 and TLS, 16 connections x 4 streams (h2load,
                         ALPN h2; skipped when h2load, from nghttp2-client, is not installed)
                         Both: one self-signed ECDSA P-256 certificate per run, every target
                         listening with TLS 1.2/1.3 and h2 + http/1.1 by ALPN, the clients
                         offering one cipher suite, TLS_AES_128_GCM_SHA256
    idle                 N idle HTTP/1.1 keep-alive client connections: the proxy's memory

A full run (3 rounds x (5 s + 1 s warm-up) per target per workload) takes about 18 minutes
on 2 cores (measured: 17 min 29 s).
";

/// `cargo xtask bench`: the command line. Unset options take their values from
/// [`Options::full`], or [`Options::quick`] with `--quick`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    about = "fcgi-proxy side by side with nginx, HAProxy and Apache",
    after_help = AFTER_HELP,
    args_override_self = true
)]
pub struct BenchArgs {
    /// 1 s runs, one round, 200 idle connections (a smoke run)
    #[arg(long)]
    pub quick: bool,
    /// Measured seconds per run (default 5)
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Warm-up seconds per run (default 1)
    #[arg(long, value_name = "SECS")]
    pub warmup: Option<u64>,
    /// Rounds of every load workload (default 3; the idle one: 2)
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub rounds: Option<usize>,
    /// Idle connections for the memory workload (default 10000)
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub idle: Option<usize>,
    /// Comma-separated: fcgi-proxy (or ours),nginx,haproxy,apache (default all)
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_target)]
    pub targets: Vec<PeerKind>,
    /// Comma-separated workload names (default all; see below)
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_workload)]
    pub workloads: Vec<String>,
    /// This fcgi-proxy instead of `cargo build --release -p fcgi-proxy`
    #[arg(long, value_name = "PATH")]
    pub proxy_bin: Option<PathBuf>,
    /// Results directory (default target/bench)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

fn parse_target(name: &str) -> Result<PeerKind, String> {
    // `ours`, as `cargo xtask conformance --target` calls it.
    if name.trim() == "ours" {
        return Ok(PeerKind::FcgiProxy);
    }
    PeerKind::ALL
        .into_iter()
        .find(|k| k.name() == name.trim())
        .ok_or_else(|| {
            format!(
                "unknown target {name:?} (known: {})",
                PeerKind::ALL.map(PeerKind::name).join(", ")
            )
        })
}

pub(crate) fn parse_workload(name: &str) -> Result<String, String> {
    let name = name.trim();
    let known: Vec<String> = workloads(&Options::full())
        .into_iter()
        .filter(|w| w.kind == WorkloadKind::Wrk)
        .map(|w| w.name)
        .collect();
    if name == "idle" || known.iter().any(|k| k == name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "unknown workload {name:?} (known: {}, idle)",
            known.join(", ")
        ))
    }
}

impl BenchArgs {
    /// The options these arguments ask for.
    pub fn options(&self) -> Options {
        let mut o = if self.quick {
            Options::quick()
        } else {
            Options::full()
        };
        if let Some(d) = self.duration {
            o.duration = Duration::from_secs(d.max(1));
        }
        if let Some(w) = self.warmup {
            o.warmup = Duration::from_secs(w);
        }
        if let Some(n) = self.rounds {
            o.rounds = n;
        }
        if let Some(n) = self.idle {
            o.idle_connections = n;
        }
        if !self.targets.is_empty() {
            o.targets = self.targets.clone();
        }
        if !self.workloads.is_empty() {
            o.workloads = Some(self.workloads.clone());
        }
        if let Some(p) = &self.proxy_bin {
            // Peers start in their own directories: a relative path must not follow them.
            o.proxy_bin = Some(std::path::absolute(p).unwrap_or_else(|_| p.clone()));
        }
        if let Some(d) = &self.out {
            o.out_dir = d.clone();
        }
        o
    }
}

/// Tools a bench of `targets` cannot run without, as `what (how to install)`: nginx only when
/// it is one of them (the reference the ratios are taken against).
pub fn missing_prerequisites(targets: &[PeerKind]) -> Vec<String> {
    let mut missing = Vec::new();
    for (prog, pkg) in [
        ("wrk", "wrk"),
        ("cc", "gcc"),
        ("spawn-fcgi", "spawn-fcgi"),
        ("nginx", "nginx"),
        ("prlimit", "util-linux"),
        ("setsid", "util-linux"),
    ] {
        if prog == "nginx" && !targets.contains(&PeerKind::Nginx) {
            continue;
        }
        if find_program(prog).is_none() {
            missing.push(format!("{prog} (apt-get install {pkg})"));
        }
    }
    if !Path::new(backend::FCGI_HEADER).is_file() {
        missing.push(format!(
            "{} (apt-get install libfcgi-dev)",
            backend::FCGI_HEADER
        ));
    }
    missing
}

/// `cargo xtask bench ...`.
pub fn main(args: &BenchArgs) -> ExitCode {
    let opts = args.options();
    let missing = missing_prerequisites(&opts.targets);
    if !missing.is_empty() {
        eprintln!("bench: missing: {}", missing.join(", "));
        return ExitCode::FAILURE;
    }
    stop_children_on_signal();
    match run(&opts) {
        Ok(report) => {
            println!("{}", report.render());
            println!("results: {}", opts.out_dir.join("results.json").display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// PIDs to stop if the bench itself is interrupted (peers, backend processes).
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn register(pids: &[u32]) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend_from_slice(pids);
}

fn unregister(pids: &[u32]) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| !pids.contains(p));
}

/// On SIGINT or SIGTERM: SIGTERM every registered child by PID, then exit.
pub(crate) fn stop_children_on_signal() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal as sig};
            let (Ok(mut term), Ok(mut int)) =
                (sig(SignalKind::terminate()), sig(SignalKind::interrupt()))
            else {
                return;
            };
            tokio::select! {
                biased;
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let pids = CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for &p in &pids {
                signal(p, Signal::SIGTERM);
            }
            eprintln!(
                "bench: interrupted; sent SIGTERM to {} child processes",
                pids.len()
            );
            std::process::exit(130);
        });
    });
}

/// The backend program a workload runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// The libfcgi responders on a loopback port, started once for the whole run.
    Libfcgi,
    /// As many of the same responders on a Unix socket, started for the workload.
    LibfcgiUnix,
    /// php-fpm 8.2 running a hello-world script, started for the workload.
    PhpFpm,
    /// No backend: the peers serve files from a document root written for the workload.
    Static,
}

impl BackendChoice {
    /// In reports.
    pub fn label(self) -> &'static str {
        match self {
            BackendChoice::Libfcgi => "libfcgi responder, loopback TCP",
            BackendChoice::LibfcgiUnix => "libfcgi responder, Unix socket",
            BackendChoice::PhpFpm => "php-fpm 8.2, hello-world script, loopback TCP",
            BackendChoice::Static => "none: static files from a document root the bench writes",
        }
    }
}

/// One workload definition.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub description: String,
    pub kind: WorkloadKind,
    pub connections: usize,
    pub shape: RequestShape,
    /// The request path.
    pub path: &'static str,
    pub backend: BackendChoice,
    /// Each target serves a PHP site (see `PeerOptions::php_site`) instead of passing every
    /// request to the backend.
    pub php_site: bool,
    /// Backend reuse for every target; None: each target's own default.
    pub backend_keepalive: Option<bool>,
    /// Access logs as each target has them by default (false: off for all).
    pub access_log: bool,
    /// How the clients speak to the targets.
    pub protocol: Protocol,
}

/// The client side of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 over TCP (wrk).
    Http1,
    /// HTTP/1.1 over TLS (wrk, which offers no ALPN).
    Https,
    /// HTTP/2 over TLS, ALPN h2 (h2load).
    H2,
}

impl Protocol {
    pub fn tls(self) -> bool {
        self != Protocol::Http1
    }
}

impl Workload {
    /// Why `kind` sits this workload out (not a failure): HAProxy cannot serve files.
    pub fn not_applicable(&self, kind: PeerKind) -> Option<String> {
        if kind != PeerKind::Haproxy {
            return None;
        }
        if self.backend == BackendChoice::Static {
            Some("cannot serve files".to_owned())
        } else if self.php_site {
            Some("maps no request to a file".to_owned())
        } else {
            None
        }
    }

    /// Why this workload cannot run here, if it cannot (a program it needs is missing).
    pub fn missing(&self) -> Option<String> {
        self.needs()
            .into_iter()
            .find(|(prog, _)| find_program(prog).is_none())
            .map(|(prog, pkg)| format!("{prog} not installed (apt-get install {pkg})"))
    }

    /// The programs this workload needs beyond the bench's own prerequisites, with their
    /// Debian packages.
    pub fn needs(&self) -> Vec<(&'static str, &'static str)> {
        let mut v = Vec::new();
        if self.backend == BackendChoice::PhpFpm {
            v.push((fpm::PHP_FPM, fpm::PACKAGE));
        }
        if self.protocol.tls() {
            v.push((tls::OPENSSL, "openssl"));
        }
        if self.protocol == Protocol::H2 {
            v.push((h2load::H2LOAD, h2load::PACKAGE));
        }
        v
    }
}

/// How the processes of a run are grouped for the scheduler (see `crate::peers::Session`).
const SESSIONS_NOTE: &str = "every target and php-fpm started in a session of its own (setsid), as \
     a service manager starts a server; each spawn-fcgi responder is a session of its own (spawn-fcgi \
     does that); wrk and h2load run in the bench's session";

/// What every report says about access logs.
const ACCESS_LOG_NOTE: &str = "every workload but get-c64-nolog runs each target with the \
    access log it has by default: fcgi-proxy one line per request on stderr (no RUST_LOG), sent \
    to a file; nginx and Apache the combined format to access.log; HAProxy logs nothing without \
    a `log` target and runs without one. get-c64-nolog turns them off (fcgi-proxy \
    RUST_LOG=warn, nginx access_log off, Apache without CustomLog)";

/// What every report with a TLS workload says about how TLS is set up.
pub const TLS_NOTE: &str = "https-get-c16 and h2-get-c16: one self-signed ECDSA P-256 \
    certificate per run (target/bench/tls/); every target listens with TLS (TLSv1.2 and \
    TLSv1.3) offering h2 and http/1.1 by ALPN, its defaults otherwise: fcgi-proxy a \
    [[listener]] with `tls` (rustls); nginx `listen ... ssl http2` with Debian's \
    ssl_prefer_server_ciphers on and no ssl_session_cache (nginx's default); HAProxy `bind ... \
    ssl crt ... alpn h2,http/1.1`; Apache mod_ssl with Debian's ssl.conf settings and mod_http2 \
    (`Protocols h2 http/1.1`). wrk offers no ALPN (HTTP/1.1); h2load offers h2, 4 streams per \
    connection; every client offers one TLS 1.3 cipher suite, TLS_AES_128_GCM_SHA256 (wrk and \
    s_client through OPENSSL_CONF, h2load --tls13-ciphers)";

/// The workloads of a run, in order.
pub fn workloads(o: &Options) -> Vec<Workload> {
    let wrk = |name: &str, desc: &str, c: usize, shape: RequestShape| Workload {
        name: name.to_owned(),
        description: desc.to_owned(),
        kind: WorkloadKind::Wrk,
        connections: c,
        shape,
        path: wrk::PATH,
        backend: BackendChoice::Libfcgi,
        php_site: false,
        backend_keepalive: Some(true),
        access_log: true,
        protocol: Protocol::Http1,
    };
    let (thousands, rest) = (o.idle_connections / 1000, o.idle_connections % 1000);
    let idle_name = if thousands > 0 && rest == 0 {
        format!("idle-{thousands}k")
    } else {
        format!("idle-{}", o.idle_connections)
    };
    let post = RequestShape::Post(64 * 1024);
    let all = vec![
        wrk(
            "get-c4",
            "GET, 4 client connections, backend keep-alive",
            4,
            RequestShape::Get,
        ),
        wrk(
            "get-c64",
            "GET, 64 client connections, backend keep-alive",
            64,
            RequestShape::Get,
        ),
        wrk(
            "get-c256",
            "GET, 256 client connections, backend keep-alive",
            256,
            RequestShape::Get,
        ),
        wrk(
            "post64k-c16",
            "POST with a 64 KiB body, 16 client connections, backend keep-alive",
            16,
            post,
        ),
        wrk(
            "post64k-c64",
            "POST with a 64 KiB body, 64 client connections, backend keep-alive",
            64,
            post,
        ),
        Workload {
            backend_keepalive: Some(false),
            ..wrk(
                "get-c16-noreuse",
                "GET, 16 client connections, backend connection reuse off",
                16,
                RequestShape::Get,
            )
        },
        Workload {
            backend: BackendChoice::LibfcgiUnix,
            ..wrk(
                "unix-c64",
                "GET, 64 client connections, the libfcgi responder on a Unix socket, backend \
                 keep-alive",
                64,
                RequestShape::Get,
            )
        },
        Workload {
            backend: BackendChoice::PhpFpm,
            path: fpm::PATH,
            backend_keepalive: None,
            ..wrk(
                "fpm-c16",
                &format!(
                    "GET of a hello-world PHP script, 16 client connections, php-fpm 8.2 \
                     (pm = static, {} children); backend reuse as each target has it by \
                     default: fcgi-proxy reuses connections, nginx, HAProxy and Apache open one \
                     per request",
                    fpm::CHILDREN
                ),
                16,
                RequestShape::Get,
            )
        },
        Workload {
            backend: BackendChoice::PhpFpm,
            php_site: true,
            path: fpm::PATH,
            backend_keepalive: None,
            ..wrk(
                "site-fpm-c16",
                &format!(
                    "fpm-c16 through each target's PHP site set-up, as Debian has it: the \
                     script is looked up in the document root before php-fpm gets it \
                     (fcgi-proxy a [[site]] with php; nginx snippets/fastcgi-php.conf, \
                     try_files $fastcgi_script_name =404; Apache php8.2-fpm.conf, \
                     <FilesMatch> SetHandler proxy:fcgi://); php-fpm 8.2 (pm = static, {} \
                     children), backend reuse as each target has it by default; HAProxy maps \
                     no request to a file",
                    fpm::CHILDREN
                ),
                16,
                RequestShape::Get,
            )
        },
        Workload {
            access_log: false,
            ..wrk(
                "get-c64-nolog",
                "get-c64 with every access log off (fcgi-proxy RUST_LOG=warn, nginx \
                 access_log off, Apache without CustomLog; HAProxy has none anyway)",
                64,
                RequestShape::Get,
            )
        },
        Workload {
            backend: BackendChoice::Static,
            path: STATIC_4K_PATH,
            backend_keepalive: None,
            ..wrk(
                "static-4k-c64",
                "GET of a 4 KiB file, 64 client connections, no request reaches a backend: \
                 fcgi-proxy a [[site]] root, nginx root (sendfile on), Apache DocumentRoot, each \
                 with its defaults; HAProxy cannot serve files",
                64,
                RequestShape::Get,
            )
        },
        Workload {
            backend: BackendChoice::Static,
            path: STATIC_1M_PATH,
            backend_keepalive: None,
            ..wrk(
                "static-1m-c16",
                "GET of a 1 MiB file, 16 client connections, no request reaches a backend: \
                 fcgi-proxy a [[site]] root, nginx root (sendfile on), Apache DocumentRoot, each \
                 with its defaults; HAProxy cannot serve files",
                16,
                RequestShape::Get,
            )
        },
        Workload {
            protocol: Protocol::Https,
            ..wrk(
                "https-get-c16",
                "GET over HTTP/1.1 and TLS 1.3 (wrk: no ALPN; TLS_AES_128_GCM_SHA256), 16 client \
                 connections, backend keep-alive",
                16,
                RequestShape::Get,
            )
        },
        Workload {
            protocol: Protocol::H2,
            ..wrk(
                "h2-get-c16",
                &format!(
                    "GET over HTTP/2 and TLS 1.3 (h2load, ALPN h2; TLS_AES_128_GCM_SHA256), 16 \
                     client connections x {} streams, backend keep-alive",
                    h2load::STREAMS
                ),
                16,
                RequestShape::Get,
            )
        },
        Workload {
            name: idle_name,
            description: format!(
                "{} idle HTTP/1.1 keep-alive client connections (one GET each), proxy memory",
                o.idle_connections
            ),
            kind: WorkloadKind::Idle,
            connections: o.idle_connections,
            ..wrk("", "", 0, RequestShape::Get)
        },
    ];
    match &o.workloads {
        None => all,
        Some(names) => all
            .into_iter()
            .filter(|w| {
                names
                    .iter()
                    .any(|n| *n == w.name || (n == "idle" && w.kind == WorkloadKind::Idle))
            })
            .collect(),
    }
}

/// Builds fcgi-proxy in release mode and returns its path.
pub fn build_proxy(workspace: &Path) -> Result<PathBuf, String> {
    cargo_release(workspace, Command::new(cargo()), &[])
}

/// Builds fcgi-proxy in release mode for `target` (a triple) into `target_dir`, with
/// `rustflag` added to the caller's own flags, for its crates only (`--target` keeps them from
/// build scripts and proc macros), and returns its path.
pub fn build_release(
    workspace: &Path,
    target_dir: &Path,
    target: &str,
    rustflag: &str,
) -> Result<PathBuf, String> {
    let env = |k: &str| std::env::var(k).ok();
    let flags = with_rustflag(
        env("CARGO_ENCODED_RUSTFLAGS").as_deref(),
        env("RUSTFLAGS").as_deref(),
        rustflag,
    );
    let mut cmd = Command::new(cargo());
    cmd.env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env_remove("RUSTFLAGS");
    cargo_release(workspace, cmd, &["--target", target])
}

/// The compiler flags a build runs with: the caller's own (`CARGO_ENCODED_RUSTFLAGS`, which
/// cargo reads first, else `RUSTFLAGS`), then `flag`, in cargo's encoding (one flag per field,
/// separated by 0x1f), so that a flag holding a path with spaces stays one flag.
fn with_rustflag(encoded: Option<&str>, plain: Option<&str>, flag: &str) -> String {
    let mut flags: Vec<&str> = match (encoded, plain) {
        (Some(e), _) => e.split('\x1f').filter(|f| !f.is_empty()).collect(),
        (None, Some(p)) => p.split_whitespace().collect(),
        (None, None) => Vec::new(),
    };
    flags.push(flag);
    flags.join("\x1f")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// `cmd` (cargo, with what the caller set) building fcgi-proxy in release mode, `extra`
/// arguments last: its path.
fn cargo_release(workspace: &Path, mut cmd: Command, extra: &[&str]) -> Result<PathBuf, String> {
    let out = cmd
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            "fcgi-proxy",
            "--bin",
            "fcgi-proxy",
            "--message-format=json-render-diagnostics",
        ])
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err("cargo build --release -p fcgi-proxy failed".to_owned());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "fcgi-proxy")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo did not report the fcgi-proxy executable".to_owned())
}

/// The files of the static workloads, in the document root the bench writes.
pub const STATIC_4K_PATH: &str = "/static-4k.txt";
pub const STATIC_1M_PATH: &str = "/static-1m.txt";
/// Every static file starts with this line (what the check request looks for).
pub const STATIC_MARKER: &str = "fcgi-proxy bench static file\n";

/// A static file of exactly `size` bytes: the marker, then lines of text (the same bytes for
/// every target and run).
pub fn static_file(size: usize) -> Vec<u8> {
    let mut out = STATIC_MARKER.as_bytes().to_vec();
    let mut n = 0u64;
    while out.len() < size {
        out.extend_from_slice(format!("{n:015} abcdefghijklmnopqrstuvwxyz0123456789\n").as_bytes());
        n += 1;
    }
    out.truncate(size);
    out
}

/// Writes the static workloads' files into `dir`, readable by every peer (Apache's children
/// run as www-data when the bench runs as root).
pub fn write_static_root(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| err(dir, e))?;
    for (path, size) in [(STATIC_4K_PATH, 4096), (STATIC_1M_PATH, 1024 * 1024)] {
        let file = dir.join(path.trim_start_matches('/'));
        std::fs::write(&file, static_file(size)).map_err(|e| err(&file, e))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| err(&file, e))?;
    }
    Ok(())
}

/// What a correct answer through a peer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Text the body holds.
    pub body: &'static str,
    /// The start of the Content-Type value.
    pub content_type: &'static str,
}

/// The libfcgi responder's answer.
pub const LIBFCGI_ANSWER: Expect = Expect {
    body: backend::RESPONSE_BODY,
    content_type: "text/plain",
};

/// The PHP script's answer: its output, with PHP's default Content-Type (the responder's is
/// text/plain, so this one can only come from php-fpm).
pub const PHP_ANSWER: Expect = Expect {
    body: fpm::OUTPUT,
    content_type: "text/html",
};

/// A static file's answer (`.txt`: every target's MIME types say text/plain).
pub const STATIC_ANSWER: Expect = Expect {
    body: STATIC_MARKER,
    content_type: "text/plain",
};

/// Whether a raw HTTP/1.x response (everything read until the connection closed) is a 200 with
/// the expected Content-Type and body.
pub fn answer_matches(response: &[u8], expect: Expect) -> bool {
    let Ok(r) = testkit::http1::parse_response(response) else {
        return false;
    };
    expect_matches(
        r.status,
        r.header("content-type").unwrap_or_default(),
        &r.body_text(),
        expect,
    )
}

/// Whether a response's status, Content-Type and body are `expect`'s (200).
pub fn expect_matches(status: u16, content_type: &str, body: &str, expect: Expect) -> bool {
    status == 200
        && content_type
            .to_ascii_lowercase()
            .starts_with(expect.content_type)
        && body.contains(expect.body)
}

/// One GET of `path` through a peer (Connection: close); Ok when it answered as `expect`s.
pub fn check_get(addr: SocketAddr, path: &str, expect: Expect) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| format!("read: {e}"))?;
    if answer_matches(&resp, expect) {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&resp);
        Err(format!(
            "check request for {path} answered {:?} (expected 200, Content-Type {}, a body \
             with {:?})",
            text.chars().take(300).collect::<String>(),
            expect.content_type,
            expect.body
        ))
    }
}

/// Runs `cmd` (stdin empty, stdout and stderr collected) and stops it by its PID if it is still
/// running after `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Result<std::process::Output, String> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let pid = child.id();
    register(&[pid]);
    // Read on threads of their own: a child blocked on a full pipe would never exit.
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("{prog} still running after {limit:?}; stopped"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break Err(format!("{prog}: {e}")),
        }
    };
    unregister(&[pid]);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    status.map(|status| std::process::Output {
        status,
        stdout,
        stderr,
    })
}

fn command_line(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog).args(args).output().ok()?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!t.is_empty()).then_some(t)
}

/// A backend started for one workload (the shared TCP responders serve the others).
enum OwnBackend {
    Unix(Backend),
    Fpm(Fpm),
    /// The static workloads' document root (removed when dropped).
    Static(tempfile::TempDir),
}

impl OwnBackend {
    fn pids(&self) -> Vec<u32> {
        match self {
            OwnBackend::Unix(b) => b.pids.clone(),
            OwnBackend::Fpm(f) => f.pids(),
            OwnBackend::Static(_) => Vec::new(),
        }
    }
}

/// Everything shared by the runs.
struct Bench<'a> {
    opts: &'a Options,
    /// The libfcgi responders on a loopback port.
    backend: Backend,
    /// The responder's executable (for the Unix-socket instance).
    responder: PathBuf,
    proxy_bin: PathBuf,
    clk_tck: u64,
    configs: BTreeMap<String, String>,
    idle_rt: tokio::runtime::Runtime,
    started: Instant,
    /// The TLS workloads' certificate (generated once per run) and client configuration.
    tls: Option<tls::TlsSetup>,
}

/// Runs the benchmark and writes the results. Errors only for set-up failures (build,
/// backend); a peer that fails shows up as failed runs.
pub fn run(opts: &Options) -> Result<Report, String> {
    let started = Instant::now();
    let workspace = workspace_root();
    let machine = Machine::detect(&workspace);
    progress(opts, &machine.line());
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| format!("{}: {e}", opts.out_dir.display()))?;
    let proxy_bin = match &opts.proxy_bin {
        Some(p) => p.clone(),
        None => {
            progress(
                opts,
                "building fcgi-proxy (cargo build --release -p fcgi-proxy)",
            );
            build_proxy(&workspace)?
        }
    };
    // 10k client sockets here, as many in the proxy: children inherit the raised limit.
    let nofile = procfs::raise_nofile((opts.idle_connections as u64) * 2 + 4096);
    let responder = backend::build(&opts.out_dir)?;
    let backend = Backend::start(&responder, opts.backend_processes, &opts.out_dir)?;
    register(&backend.pids);
    progress(
        opts,
        &format!(
            "backend: {} libfcgi processes on {} (spawn-fcgi); open-file limit {nofile}",
            backend.pids.len(),
            backend.addr
        ),
    );
    let idle_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let tls = if workloads(opts).iter().any(|w| w.protocol.tls()) {
        let dir = opts.out_dir.join("tls");
        let made = tls::write_certificate(&dir)?;
        progress(
            opts,
            &format!(
                "TLS: a new self-signed ECDSA P-256 certificate for {} and 127.0.0.1 in {}",
                tls::SERVER_NAME,
                dir.display()
            ),
        );
        Some(made)
    } else {
        None
    };
    let mut bench = Bench {
        opts,
        backend,
        responder,
        proxy_bin,
        clk_tck: procfs::clock_ticks_per_second(),
        configs: BTreeMap::new(),
        idle_rt,
        started,
        tls,
    };
    let targets: Vec<PeerKind> = opts
        .targets
        .iter()
        .copied()
        .filter(|k| match k.unavailable(&bench.base_options()) {
            None => true,
            Some(why) => {
                progress(opts, &format!("skipping {}: {why}", k.name()));
                false
            }
        })
        .collect();
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for w in workloads(opts) {
        if let Some(why) = w.missing() {
            progress(opts, &format!("skipping workload {}: {why}", w.name));
            skipped.push(format!("{} ({why})", w.name));
            continue;
        }
        results.push(bench.workload(&w, &targets)?);
    }
    let mut meta = bench.meta(&targets, nofile);
    if !skipped.is_empty() {
        meta.insert("skipped".to_owned(), skipped.join("; "));
    }
    let goals = report::goals(&results, IDLE_GOAL_MIB);
    let report = Report {
        machine,
        meta,
        configs: std::mem::take(&mut bench.configs),
        workloads: results,
        goals,
    };
    unregister(&bench.backend.pids);
    drop(bench);
    write_outputs(opts, &report)?;
    Ok(report)
}

fn write_outputs(opts: &Options, report: &Report) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    let path = opts.out_dir.join("results.json");
    std::fs::write(&path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    let md = opts.out_dir.join("results.md");
    std::fs::write(&md, report.render()).map_err(|e| format!("{}: {e}", md.display()))?;
    let dir = opts.out_dir.join("configs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, text) in &report.configs {
        let file: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let _ = std::fs::write(dir.join(format!("{file}.conf")), text);
    }
    Ok(())
}

fn progress(opts: &Options, line: &str) {
    if opts.progress {
        eprintln!("bench: {line}");
    }
}

impl Bench<'_> {
    /// What every peer shares: the binary, the limits, the workers.
    fn base_options(&self) -> PeerOptions {
        PeerOptions {
            backend: self.backend.addr.clone(),
            backend_keepalive: Some(true),
            access_log: true,
            max_client_connections: 1024,
            keepalive_timeout: Duration::from_secs(60),
            workers: 2,
            document_root: "/srv/app".to_owned(),
            static_root: None,
            php_site: false,
            fcgi_proxy_bin: Some(self.proxy_bin.clone()),
            tls: None,
            env: self.opts.peer_env.clone(),
            // Not in the load generator's session: see `crate::peers::Session`.
            session: crate::peers::Session::Own,
        }
    }

    /// The peer options of workload `w` (against `own`, its own backend, if it has one) with
    /// room for `idle` idle client connections.
    fn peer_options(&self, w: &Workload, own: Option<&OwnBackend>, idle: usize) -> PeerOptions {
        let mut o = self.base_options();
        o.backend_keepalive = w.backend_keepalive;
        o.access_log = w.access_log;
        o.php_site = w.php_site;
        o.max_client_connections = idle.max(1024 - 256) + 256;
        if w.protocol.tls() {
            o.tls = self.tls.as_ref().map(|t| t.files.clone());
        }
        match own {
            None => {}
            Some(OwnBackend::Unix(b)) => o.backend = b.addr.clone(),
            Some(OwnBackend::Fpm(f)) => {
                o.backend = f.addr();
                o.document_root = f.document_root();
            }
            Some(OwnBackend::Static(d)) => o.static_root = Some(d.path().to_path_buf()),
        }
        o
    }

    /// Starts the backend `w` needs beyond the shared one.
    fn own_backend(&self, w: &Workload) -> Result<Option<OwnBackend>, String> {
        let own = match w.backend {
            BackendChoice::Libfcgi => return Ok(None),
            BackendChoice::LibfcgiUnix => OwnBackend::Unix(Backend::start_unix(
                &self.responder,
                self.opts.backend_processes,
                &self.opts.out_dir,
            )?),
            BackendChoice::PhpFpm => OwnBackend::Fpm(Fpm::start()?),
            BackendChoice::Static => {
                let dir = tempfile::Builder::new()
                    .prefix("bench-static-")
                    .tempdir()
                    .map_err(|e| format!("document root: {e}"))?;
                write_static_root(dir.path())?;
                OwnBackend::Static(dir)
            }
        };
        register(&own.pids());
        let (n, addr): (String, BackendAddr) = match &own {
            OwnBackend::Unix(b) => (
                format!("{} libfcgi processes", b.pids.len()),
                b.addr.clone(),
            ),
            OwnBackend::Fpm(f) => (
                format!(
                    "php-fpm (master + {} children, files in {})",
                    f.pids().len().saturating_sub(1),
                    f.dir().display()
                ),
                f.addr(),
            ),
            OwnBackend::Static(d) => {
                progress(
                    self.opts,
                    &format!("{}: files in {}", w.name, d.path().display()),
                );
                return Ok(Some(own));
            }
        };
        progress(self.opts, &format!("{}: {n} on {addr}", w.name));
        Ok(Some(own))
    }

    /// One request straight to the workload's backend.
    fn check_backend(&self, own: Option<&OwnBackend>) -> Result<(), String> {
        match own {
            None => self.backend.check(),
            Some(OwnBackend::Unix(b)) => b.check(),
            Some(OwnBackend::Fpm(f)) => f.check(),
            Some(OwnBackend::Static(_)) => Ok(()),
        }
    }

    fn workload(&mut self, w: &Workload, targets: &[PeerKind]) -> Result<WorkloadResult, String> {
        let script = self.opts.out_dir.join(format!("{}.lua", w.name));
        std::fs::write(&script, wrk::script(w.shape))
            .map_err(|e| format!("{}: {e}", script.display()))?;
        let mut result = WorkloadResult {
            name: w.name.clone(),
            description: w.description.clone(),
            kind: w.kind,
            connections: w.connections,
            backend_keepalive: w.backend_keepalive,
            backend: w.backend.label().to_owned(),
            access_log: w.access_log,
            targets: targets
                .iter()
                .map(|k| TargetResult {
                    target: k.name().to_owned(),
                    runs: Vec::new(),
                    median: Metrics::default(),
                    vs_nginx: Metrics::default(),
                    not_applicable: w.not_applicable(*k),
                })
                .collect(),
        };
        let own = match self.own_backend(w) {
            Ok(own) => own,
            Err(e) => {
                // Every target fails this workload; the others still run.
                progress(
                    self.opts,
                    &format!("{}: backend failed to start: {e}", w.name),
                );
                for t in result
                    .targets
                    .iter_mut()
                    .filter(|t| t.not_applicable.is_none())
                {
                    t.runs.push(Run {
                        round: 0,
                        metrics: Metrics::default(),
                        wrk: None,
                        cpu_seconds: None,
                        processes: 0,
                        tls: None,
                        note: None,
                        error: Some(format!("backend failed to start: {e}")),
                    });
                }
                result.aggregate();
                return Ok(result);
            }
        };
        let rounds = match w.kind {
            WorkloadKind::Wrk => self.opts.rounds,
            WorkloadKind::Idle => self.opts.idle_rounds,
        };
        for round in 0..rounds {
            for i in round_order(targets.len(), round) {
                let kind = targets[i];
                if result.targets[i].not_applicable.is_some() {
                    continue;
                }
                let run = match w.kind {
                    WorkloadKind::Wrk => self.wrk_run(w, own.as_ref(), kind, round, &script),
                    WorkloadKind::Idle => self.idle_run(w, kind, round),
                };
                progress(
                    self.opts,
                    &format!(
                        "[{:>4}s] {} round {}/{rounds} {}: {}",
                        self.started.elapsed().as_secs(),
                        w.name,
                        round + 1,
                        kind.name(),
                        describe(&run)
                    ),
                );
                result.targets[i].runs.push(run);
                // A dead backend would blame every following peer.
                self.check_backend(own.as_ref())
                    .map_err(|e| format!("backend broke after {}: {e}", kind.name()))?;
            }
        }
        if let Some(own) = own {
            let pids = own.pids();
            drop(own);
            unregister(&pids);
        }
        result.aggregate();
        Ok(result)
    }

    /// Starts `kind` (after a `sync`) and checks one request through it over `protocol`; over
    /// TLS, also what `openssl s_client` negotiates (returned, for the report).
    fn start_peer(
        &mut self,
        kind: PeerKind,
        o: &PeerOptions,
        variant: &str,
        (path, expect, protocol): (&str, Expect, Protocol),
    ) -> Result<(RunningPeer, Option<String>), String> {
        // The previous run's access log, written out by the kernel's flusher during this run,
        // would be charged to the machine while this target is measured.
        nix::unistd::sync();
        let peer = kind.start(o).map_err(|e| format!("start: {e}"))?;
        register(&peer.pids());
        self.configs
            .entry(format!("{} ({variant})", kind.name()))
            .or_insert_with(|| peer.config().text.clone());
        match self.check_peer(peer.addr(), path, expect, protocol) {
            Ok(negotiated) => Ok((peer, negotiated)),
            Err(e) => {
                let tail = peer.log_tail(1000);
                stop_peer(peer);
                Err(format!("{e}; peer output: {tail}"))
            }
        }
    }

    fn check_peer(
        &self,
        addr: SocketAddr,
        path: &str,
        expect: Expect,
        protocol: Protocol,
    ) -> Result<Option<String>, String> {
        let setup = match (protocol, &self.tls) {
            (Protocol::Http1, _) => return check_get(addr, path, expect).map(|()| None),
            (_, None) => return Err("no TLS certificate was made for this run".to_owned()),
            (_, Some(t)) => t,
        };
        let cert = &setup.cert;
        let alpn = match protocol {
            Protocol::H2 => {
                self.idle_rt
                    .block_on(tls::check_h2(addr, cert, path, expect))?;
                Some("h2")
            }
            _ => {
                self.idle_rt
                    .block_on(tls::check_https(addr, cert, path, expect))?;
                None
            }
        };
        let n = tls::probe(addr, alpn, &setup.client_conf)?;
        if n.cipher != tls::CLIENT_SUITE {
            return Err(format!(
                "openssl s_client offering only {} negotiated {n}",
                tls::CLIENT_SUITE
            ));
        }
        if protocol == Protocol::H2 && n.alpn.as_deref() != Some("h2") {
            return Err(format!("openssl s_client offering h2 negotiated {n}"));
        }
        Ok(Some(n.to_string()))
    }

    fn wrk_run(
        &mut self,
        w: &Workload,
        own: Option<&OwnBackend>,
        kind: PeerKind,
        round: usize,
        script: &Path,
    ) -> Run {
        let mut run = Run {
            round,
            metrics: Metrics::default(),
            wrk: None,
            cpu_seconds: None,
            processes: 0,
            tls: None,
            note: None,
            error: None,
        };
        let o = self.peer_options(w, own, 0);
        let expect = match w.backend {
            BackendChoice::PhpFpm => PHP_ANSWER,
            BackendChoice::Static => STATIC_ANSWER,
            _ => LIBFCGI_ANSWER,
        };
        let peer = match self.start_peer(kind, &o, &variant(w), (w.path, expect, w.protocol)) {
            Ok((p, negotiated)) => {
                run.tls = negotiated;
                p
            }
            Err(e) => {
                run.error = Some(e);
                return run;
            }
        };
        let h2_log = self.opts.out_dir.join(format!("{}-h2load.log", w.name));
        let client_conf = self.tls.as_ref().map(|t| t.client_conf.as_path());
        // What h2load itself reports having negotiated (TLS version and cipher suite).
        let h2_tls = std::cell::RefCell::new(None::<String>);
        let wrk = |d: Duration| match w.protocol {
            Protocol::Http1 | Protocol::Https => wrk::run(
                peer.addr(),
                client_conf.filter(|_| w.protocol == Protocol::Https),
                w.path,
                w.connections,
                d,
                script,
            ),
            Protocol::H2 => {
                h2load::run(peer.addr(), w.path, w.connections, d, &h2_log).map(|(h, s)| {
                    *h2_tls.borrow_mut() = Some(format!(
                        "{} {}",
                        h.tls_protocol.unwrap_or_default(),
                        h.cipher.unwrap_or_default()
                    ));
                    s
                })
            }
        };
        if !self.opts.warmup.is_zero()
            && let Err(e) = wrk(self.opts.warmup)
        {
            run.note = Some(format!("warm-up: {e}"));
        }
        let before = procfs::cpu_ticks(&peer.pids());
        let result = wrk(self.opts.duration);
        let pids = peer.pids();
        let after = procfs::cpu_ticks(&pids);
        let mem = procfs::memory(&pids);
        stop_peer(peer);
        if let (Some(probed), Some(seen)) = (&run.tls, h2_tls.borrow().as_deref())
            && !probed.starts_with(&format!("{seen},"))
        {
            let note = format!("h2load negotiated {seen}, openssl s_client {probed}");
            run.note = Some(match run.note.take() {
                Some(n) => format!("{n}; {note}"),
                None => note,
            });
        }
        match result {
            Err(e) => run.error = Some(e),
            Ok(s) => {
                let cpu = procfs::cpu_delta(&before, &after) as f64 / self.clk_tck as f64;
                run.cpu_seconds = Some(cpu);
                run.processes = pids.len();
                run.metrics = Metrics {
                    rps: Some(s.requests_per_second()),
                    p50_ms: Some(s.p50_us as f64 / 1000.0),
                    p99_ms: Some(s.p99_us as f64 / 1000.0),
                    cpu_us_per_req: (s.requests > 0).then(|| cpu * 1e6 / s.requests as f64),
                    peak_rss_mib: Some(mem.hwm_kib as f64 / 1024.0),
                    errors: Some(s.errors() as f64),
                    ..Metrics::default()
                };
                run.wrk = Some(s);
                if s.requests == 0 {
                    run.error = Some("no request completed".to_owned());
                }
            }
        }
        run
    }

    fn idle_run(&mut self, w: &Workload, kind: PeerKind, round: usize) -> Run {
        let mut run = Run {
            round,
            metrics: Metrics::default(),
            wrk: None,
            cpu_seconds: None,
            processes: 0,
            tls: None,
            note: None,
            error: None,
        };
        let o = self.peer_options(w, None, w.connections);
        let variant = format!("{} idle connections", w.connections);
        let check = (w.path, LIBFCGI_ANSWER, Protocol::Http1);
        let peer = match self.start_peer(kind, &o, &variant, check) {
            Ok((p, _)) => p,
            Err(e) => {
                run.error = Some(e);
                return run;
            }
        };
        let before = procfs::memory(&peer.pids());
        let conns = self
            .idle_rt
            .block_on(idle::open(peer.addr(), w.connections, 32));
        // Let every peer settle (finish writing, park idle connections) before measuring.
        std::thread::sleep(if self.opts.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(3)
        });
        let pids = peer.pids();
        let mem = procfs::memory(&pids);
        let open = conns.still_open();
        let failed = conns.failed;
        let first_error = conns.first_error.clone();
        drop(conns);
        stop_peer(peer);
        let mib = |k: u64| k as f64 / 1024.0;
        run.processes = pids.len();
        run.metrics = Metrics {
            rss_mib: Some(mib(mem.rss_kib)),
            pss_mib: Some(mib(mem.pss_kib)),
            peak_rss_mib: Some(mib(mem.hwm_kib)),
            kib_per_conn: (open > 0)
                .then(|| mem.rss_kib.saturating_sub(before.rss_kib) as f64 / open as f64),
            held: Some(open as f64),
            errors: Some((w.connections - open) as f64),
            ..Metrics::default()
        };
        if failed > 0 || open < w.connections {
            run.note = Some(format!(
                "{failed} failed to open, {} closed by the peer{}",
                w.connections - failed - open,
                first_error
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default()
            ));
        }
        if open == 0 {
            run.error = Some(run.note.clone().unwrap_or_default());
        }
        run
    }

    fn meta(&self, targets: &[PeerKind], nofile: u64) -> BTreeMap<String, String> {
        let o = self.opts;
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_owned(), v);
        };
        put("mode", if o.quick { "quick" } else { "full" }.to_owned());
        put(
            "date",
            command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
        );
        put(
            "git",
            command_line(
                "git",
                &[
                    "-C",
                    &workspace_root().display().to_string(),
                    "describe",
                    "--always",
                    "--dirty",
                ],
            )
            .unwrap_or_default(),
        );
        put("duration_s", o.duration.as_secs().to_string());
        put("warmup_s", o.warmup.as_secs().to_string());
        put("rounds", o.rounds.to_string());
        put("idle_rounds", o.idle_rounds.to_string());
        put(
            "backend",
            format!(
                "libfcgi responder (responder.c), {} processes via spawn-fcgi, on a loopback \
                 port (unix-c64: as many on a Unix socket); fpm-c16: php-fpm 8.2, pm = static, \
                 {} children, a hello-world script",
                o.backend_processes,
                fpm::CHILDREN
            ),
        );
        put("access_logs", ACCESS_LOG_NOTE.to_owned());
        put("sessions", SESSIONS_NOTE.to_owned());
        put("open_file_limit", nofile.to_string());
        put("fcgi_proxy_bin", self.proxy_bin.display().to_string());
        put(
            "wrk",
            command_line("wrk", &["-v"])
                .and_then(|s| s.lines().next().map(str::to_owned))
                .unwrap_or_default(),
        );
        if let Some(v) = find_program(h2load::H2LOAD)
            .and_then(|p| command_line(&p.display().to_string(), &["--version"]))
        {
            put("h2load", v);
        }
        if self.tls.is_some() {
            put("tls", TLS_NOTE.to_owned());
        }
        if let Some(v) = find_program(fpm::PHP_FPM)
            .and_then(|p| command_line(&p.display().to_string(), &["-v"]))
            .and_then(|s| s.lines().next().map(str::to_owned))
        {
            put("version_php_fpm", v);
        }
        let popts = self.base_options();
        for k in targets {
            put(
                &format!("version_{}", k.name()),
                k.version(&popts).unwrap_or_default(),
            );
        }
        put(
            "method",
            "targets alternate within each round, every other round reversed (A B C D, \
             D C B A, ...); every run starts the peer afresh after a sync(2), warms up, then \
             measures; medians over rounds; CPU = utime+stime of the \
             peer's process tree before/after the measured run / requests; peak RSS = sum of \
             VmHWM over the tree; wrk, the backend and the peer share the machine's cores, so \
             single runs are noisy"
                .to_owned(),
        );
        m
    }
}

/// The order round `round` runs `n` targets in: as given in even rounds, reversed in odd ones.
fn round_order(n: usize, round: usize) -> Vec<usize> {
    let order = 0..n;
    if round.is_multiple_of(2) {
        order.collect()
    } else {
        order.rev().collect()
    }
}

/// What sets a workload's peer configs apart (the key of `configs` in the report).
fn variant(w: &Workload) -> String {
    let reuse = match w.backend_keepalive {
        Some(true) => "backend keep-alive",
        Some(false) => "backend reuse off",
        None => "default backend reuse",
    };
    let backend = match w.backend {
        BackendChoice::Libfcgi => "libfcgi tcp",
        BackendChoice::LibfcgiUnix => "libfcgi unix",
        BackendChoice::PhpFpm => "php-fpm",
        BackendChoice::Static => "static files",
    };
    let log = if w.access_log {
        "access log"
    } else {
        "no access log"
    };
    let tls = if w.protocol.tls() {
        ", TLS (h2 and http/1.1 by ALPN)"
    } else {
        ""
    };
    if w.backend == BackendChoice::Static {
        // No backend to reuse connections to.
        return format!("{backend}, {log}{tls}");
    }
    let backend = if w.php_site {
        format!("{backend}, PHP site")
    } else {
        backend.to_owned()
    };
    format!("{backend}, {reuse}, {log}{tls}")
}

fn stop_peer(peer: RunningPeer) {
    let pids = peer.pids();
    peer.stop();
    unregister(&pids);
}

fn describe(r: &Run) -> String {
    if let Some(e) = &r.error {
        return format!("FAILED: {e}");
    }
    let m = &r.metrics;
    let f = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
    let mut s = if m.rps.is_some() {
        format!(
            "{} req/s, p50 {} ms, p99 {} ms, {} us CPU/req, peak RSS {} MiB, {} errors",
            f(m.rps, 0),
            f(m.p50_ms, 3),
            f(m.p99_ms, 3),
            f(m.cpu_us_per_req, 1),
            f(m.peak_rss_mib, 1),
            f(m.errors, 0)
        )
    } else {
        format!(
            "{} held, RSS {} MiB, PSS {} MiB, {} KiB/conn",
            f(m.held, 0),
            f(m.rss_mib, 1),
            f(m.pss_mib, 1),
            f(m.kib_per_conn, 2)
        )
    };
    if let Some(n) = &r.note {
        s.push_str(&format!(" ({n})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options from a command line after `bench`.
    fn parse(line: &str) -> Result<Options, clap::Error> {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        Cli::try_parse_from(std::iter::once("bench").chain(line.split_whitespace()))
            .map(|c| c.bench.options())
    }

    #[test]
    fn a_build_flag_is_added_to_the_callers_own() {
        let f = "-Cprofile-use=/tmp/a b/x.profdata";
        assert_eq!(with_rustflag(None, None, f), f);
        assert_eq!(
            with_rustflag(None, Some(" -Ctarget-cpu=native  -g "), f),
            format!("-Ctarget-cpu=native\x1f-g\x1f{f}")
        );
        // cargo reads the encoded variable first, so it wins over the plain one.
        assert_eq!(
            with_rustflag(Some("-Ca=b c\x1f-g"), Some("-Cignored"), f),
            format!("-Ca=b c\x1f-g\x1f{f}")
        );
        assert_eq!(with_rustflag(Some(""), Some("-Cignored"), f), f);
    }

    #[test]
    fn rounds_alternate_their_order() {
        let orders: Vec<Vec<usize>> = (0..3).map(|r| round_order(4, r)).collect();
        assert_eq!(orders, [[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]]);
        // A lone target runs alone either way.
        assert_eq!(round_order(1, 1), [0]);
    }

    #[test]
    fn parses_options() {
        let o = parse("--quick --targets fcgi-proxy,nginx --workloads get-c4,idle").unwrap();
        assert!(o.quick);
        assert_eq!(o.targets, [PeerKind::FcgiProxy, PeerKind::Nginx]);
        let names: Vec<String> = workloads(&o).into_iter().map(|w| w.name).collect();
        assert_eq!(names, ["get-c4", "idle-200"]);

        let o = parse("--targets ours,nginx").unwrap();
        assert_eq!(o.targets, [PeerKind::FcgiProxy, PeerKind::Nginx]);

        let o = parse("--duration 7 --rounds 5 --idle 10000").unwrap();
        assert_eq!(o.duration, Duration::from_secs(7));
        assert_eq!(o.rounds, 5);
        let names: Vec<String> = workloads(&o).into_iter().map(|w| w.name).collect();
        assert_eq!(
            names,
            [
                "get-c4",
                "get-c64",
                "get-c256",
                "post64k-c16",
                "post64k-c64",
                "get-c16-noreuse",
                "unix-c64",
                "fpm-c16",
                "site-fpm-c16",
                "get-c64-nolog",
                "static-4k-c64",
                "static-1m-c16",
                "https-get-c16",
                "h2-get-c16",
                "idle-10k"
            ]
        );

        let o = parse("--workloads unix-c64,fpm-c16,get-c64-nolog").unwrap();
        let w = workloads(&o);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].backend, BackendChoice::LibfcgiUnix);
        assert_eq!(w[0].backend_keepalive, Some(true));
        assert_eq!(w[1].backend, BackendChoice::PhpFpm);
        assert_eq!(w[1].path, fpm::PATH);
        assert_eq!(w[1].backend_keepalive, None, "each target's default");
        assert!(!w[2].access_log);
        assert!(w[..2].iter().all(|w| w.access_log));

        let err = parse("--workloads get-c4,get-c8").unwrap_err().to_string();
        assert!(
            err.contains("\"get-c8\"") && err.contains("fpm-c16"),
            "{err}"
        );
        assert_eq!(
            parse("--help").unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
        for bad in ["--targets lighttpd", "--rounds 0", "--bogus"] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn the_default_run_fits_in_twenty_five_minutes() {
        let o = Options::full();
        let per_run = o.duration + o.warmup + Duration::from_secs(2); // start, check, stop
        let targets = o.targets.len() as u32;
        let mut total = Duration::ZERO;
        for w in workloads(&o) {
            total += match w.kind {
                WorkloadKind::Wrk => per_run * (o.rounds as u32) * targets,
                WorkloadKind::Idle => Duration::from_secs(15) * (o.idle_rounds as u32) * targets,
            };
        }
        assert!(total < Duration::from_secs(25 * 60), "{total:?}");
    }

    #[test]
    fn answers_are_told_apart() {
        let plain = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n\
                     Hello, world\n";
        let php = "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=UTF-8\r\n\
                   transfer-encoding: chunked\r\n\r\nd\r\nHello, world\n\r\n0\r\n\r\n";
        assert!(answer_matches(plain.as_bytes(), LIBFCGI_ANSWER));
        assert!(!answer_matches(plain.as_bytes(), PHP_ANSWER));
        assert!(answer_matches(php.as_bytes(), PHP_ANSWER));
        assert!(!answer_matches(php.as_bytes(), LIBFCGI_ANSWER));
        let not_found =
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\nFile not found.\n";
        assert!(!answer_matches(not_found.as_bytes(), PHP_ANSWER));
        assert!(!answer_matches(b"HTTP/1.1 200 OK\r\n", LIBFCGI_ANSWER));
    }

    #[test]
    fn variants_name_what_differs() {
        let o = Options::quick();
        let v: Vec<String> = workloads(&o).iter().map(variant).collect();
        assert_eq!(v[0], "libfcgi tcp, backend keep-alive, access log");
        assert!(v.contains(&"libfcgi unix, backend keep-alive, access log".to_owned()));
        assert!(v.contains(&"php-fpm, default backend reuse, access log".to_owned()));
        assert!(v.contains(&"libfcgi tcp, backend keep-alive, no access log".to_owned()));
        assert!(v.contains(&"libfcgi tcp, backend reuse off, access log".to_owned()));
        assert!(v.contains(&"static files, access log".to_owned()));
        assert!(
            v.contains(
                &"libfcgi tcp, backend keep-alive, access log, TLS (h2 and http/1.1 by ALPN)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn tls_workloads_speak_https_and_h2_with_their_tools() {
        let o = parse("--workloads https-get-c16,h2-get-c16").unwrap();
        let w = workloads(&o);
        let got: Vec<(&str, usize, Protocol)> = w
            .iter()
            .map(|w| (w.name.as_str(), w.connections, w.protocol))
            .collect();
        assert_eq!(
            got,
            [
                ("https-get-c16", 16, Protocol::Https),
                ("h2-get-c16", 16, Protocol::H2)
            ]
        );
        for w in &w {
            assert!(w.protocol.tls());
            assert_eq!(w.backend, BackendChoice::Libfcgi);
            assert_eq!(w.backend_keepalive, Some(true));
            assert_eq!(w.path, wrk::PATH);
            assert!(
                report::GOAL_WORKLOADS.contains(&w.name.as_str()),
                "{}",
                w.name
            );
            for k in PeerKind::ALL {
                assert_eq!(w.not_applicable(k), None, "{}", k.name());
            }
        }
        assert_eq!(w[0].needs(), [(tls::OPENSSL, "openssl")]);
        assert_eq!(
            w[1].needs(),
            [(tls::OPENSSL, "openssl"), (h2load::H2LOAD, h2load::PACKAGE)]
        );
        // Plain workloads need neither.
        let get = workloads(&parse("--workloads get-c4").unwrap());
        assert_eq!(get[0].protocol, Protocol::Http1);
        assert!(get[0].needs().is_empty());
    }

    #[test]
    fn a_command_that_overruns_is_stopped() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let started = Instant::now();
        let err = output_within(c, Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("still running"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let mut c = Command::new("echo");
        c.arg("hi");
        let out = output_within(c, Duration::from_secs(5)).unwrap();
        assert_eq!(out.stdout, b"hi\n");
        assert!(output_within(Command::new("/nonexistent/prog"), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn static_workloads_serve_files_without_haproxy() {
        let o = parse("--workloads static-4k-c64,static-1m-c16").unwrap();
        let w = workloads(&o);
        let got: Vec<(&str, usize, &str)> = w
            .iter()
            .map(|w| (w.name.as_str(), w.connections, w.path))
            .collect();
        assert_eq!(
            got,
            [
                ("static-4k-c64", 64, STATIC_4K_PATH),
                ("static-1m-c16", 16, STATIC_1M_PATH)
            ]
        );
        for w in &w {
            assert_eq!(w.backend, BackendChoice::Static);
            assert!(w.access_log);
            assert_eq!(w.missing(), None);
            assert_eq!(
                w.not_applicable(PeerKind::Haproxy).as_deref(),
                Some("cannot serve files")
            );
            for k in [PeerKind::FcgiProxy, PeerKind::Nginx, PeerKind::Apache] {
                assert_eq!(w.not_applicable(k), None, "{}", k.name());
            }
        }
        let get = workloads(&parse("--workloads get-c64").unwrap());
        assert_eq!(get[0].not_applicable(PeerKind::Haproxy), None);

        let dir = tempfile::tempdir().unwrap();
        write_static_root(dir.path()).unwrap();
        for (path, size) in [(STATIC_4K_PATH, 4096), (STATIC_1M_PATH, 1 << 20)] {
            let bytes = std::fs::read(dir.path().join(&path[1..])).unwrap();
            assert_eq!(bytes.len(), size, "{path}");
            assert_eq!(bytes, static_file(size), "the same bytes every time");
            assert!(bytes.starts_with(STATIC_MARKER.as_bytes()));
        }
        let file = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4096\r\n\r\n{}",
            String::from_utf8(static_file(4096)).unwrap()
        );
        assert!(answer_matches(file.as_bytes(), STATIC_ANSWER));
        assert!(!answer_matches(file.as_bytes(), LIBFCGI_ANSWER));
    }
}
