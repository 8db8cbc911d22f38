//! `cargo xtask bench`: fcgi-proxy side by side with nginx, HAProxy and Apache in front of one
//! FastCGI backend.
//!
//! - The backend is a minimal libfcgi responder (`responder.c`, compiled at bench time) run as
//!   many processes by spawn-fcgi, more than any proxy opens connections, so no proxy
//!   saturates it.
//! - Every target runs with the access log it has by default (fcgi-proxy's line per request
//!   on stderr, nginx's and Apache's `combined` log to a file; HAProxy has none without a
//!   `log` target). `get-c64-nolog` turns the logs off.
//! - Each workload runs every target in turn, round after round (A B C D A B C D ...), each
//!   run on a freshly started peer: warm-up, then the measured wrk run. Medians over rounds;
//!   ratios against nginx.
//! - Proxy CPU is utime + stime of the peer's process tree (from /proc) before and after the
//!   measured run, divided by the requests wrk completed. Peak RSS is the sum of VmHWM over
//!   the tree.
//! - Results: the machine line and a table on stdout, and `target/bench/results.json` (plus
//!   `results.md` and the peer configs in `target/bench/configs/`).
//!
//! The machine is shared and small (2 cores carry wrk, the backend and the proxy together):
//! single runs are noisy, which is why targets alternate and medians are reported.

pub mod backend;
pub mod idle;
pub mod machine;
pub mod procfs;
pub mod report;
pub mod wrk;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::peers::{BackendAddr, PeerKind, PeerOptions, RunningPeer, find_program, signal};
use backend::Backend;
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
            backend_processes: 160,
            targets: PeerKind::ALL.to_vec(),
            workloads: None,
            proxy_bin: None,
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
            backend_processes: 160,
            ..Options::full()
        }
    }
}

const USAGE: &str = "\
cargo xtask bench [OPTIONS]

fcgi-proxy (release build) side by side with nginx, HAProxy and Apache in front of one libfcgi
backend; wrk for load. Results: a table here and target/bench/results.json.

OPTIONS:
    --quick              1 s runs, one round, 200 idle connections (a smoke run)
    --duration SECS      measured seconds per run (default 5)
    --warmup SECS        warm-up seconds per run (default 1)
    --rounds N           rounds of every load workload (default 3)
    --idle N             idle connections for the memory workload (default 10000)
    --targets LIST       comma-separated: fcgi-proxy,nginx,haproxy,apache (default all)
    --workloads LIST     comma-separated workload names (default all; see below)
    --proxy-bin PATH     use this fcgi-proxy instead of `cargo build --release -p fcgi-proxy`
    --out DIR            results directory (default target/bench)

WORKLOADS:
    get-c4, get-c64      small GET over 4 / 64 client connections, backend keep-alive on
    post64k-c16          POST with a 64 KiB body over 16 connections
    get-c16-noreuse      small GET over 16 connections, backend connection reuse off
    get-c64-nolog        get-c64 with every access log off (the others log as by default)
    idle                 N idle HTTP/1.1 keep-alive client connections: the proxy's memory
";

/// Parses the bench's command line (after `bench`).
pub fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = if args.iter().any(|a| a == "--quick") {
        Options::quick()
    } else {
        Options::full()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let secs = |v: String, name: &str| {
            v.parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| format!("{name}: whole seconds expected, got {v:?}"))
        };
        let count = |v: String, name: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name}: a positive number expected, got {v:?}"))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => {}
            "--duration" => o.duration = secs(value(a)?, a)?.max(Duration::from_secs(1)),
            "--warmup" => o.warmup = secs(value(a)?, a)?,
            "--rounds" => o.rounds = count(value(a)?, a)?,
            "--idle" => o.idle_connections = count(value(a)?, a)?,
            "--targets" => {
                let v = value(a)?;
                o.targets = v
                    .split(',')
                    .map(|n| {
                        PeerKind::ALL
                            .into_iter()
                            .find(|k| k.name() == n.trim())
                            .ok_or_else(|| format!("unknown target {n:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--workloads" => {
                let v = value(a)?;
                o.workloads = Some(v.split(',').map(|s| s.trim().to_owned()).collect());
            }
            "--proxy-bin" => {
                // Peers start in their own directories: a relative path must not follow them.
                let p = PathBuf::from(value(a)?);
                o.proxy_bin = Some(std::path::absolute(&p).unwrap_or(p));
            }
            "--out" => o.out_dir = PathBuf::from(value(a)?),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(Some(o))
}

/// Tools the bench cannot run without, as `what (how to install)`.
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    for (prog, pkg) in [
        ("wrk", "wrk"),
        ("cc", "gcc"),
        ("spawn-fcgi", "spawn-fcgi"),
        ("nginx", "nginx"),
        ("prlimit", "util-linux"),
    ] {
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
pub fn main(args: &[String]) -> ExitCode {
    let opts = match parse_args(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let missing = missing_prerequisites();
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
fn stop_children_on_signal() {
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
                signal(p, "TERM");
            }
            eprintln!(
                "bench: interrupted; sent SIGTERM to {} child processes",
                pids.len()
            );
            std::process::exit(130);
        });
    });
}

/// One workload definition.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub description: String,
    pub kind: WorkloadKind,
    pub connections: usize,
    pub shape: RequestShape,
    pub backend_keepalive: bool,
    /// Access logs as each target has them by default (false: off for all).
    pub access_log: bool,
}

/// What every report says about access logs.
pub const ACCESS_LOG_NOTE: &str = "every workload but get-c64-nolog runs each target with the \
    access log it has by default: fcgi-proxy one line per request on stderr (no RUST_LOG), sent \
    to a file; nginx and Apache the combined format to access.log; HAProxy logs nothing without \
    a `log` target and runs without one. get-c64-nolog turns them off (fcgi-proxy \
    RUST_LOG=warn, nginx access_log off, Apache without CustomLog)";

/// The workloads of a run, in order.
pub fn workloads(o: &Options) -> Vec<Workload> {
    let wrk = |name: &str, desc: &str, c: usize, shape: RequestShape, ka: bool| Workload {
        name: name.to_owned(),
        description: desc.to_owned(),
        kind: WorkloadKind::Wrk,
        connections: c,
        shape,
        backend_keepalive: ka,
        access_log: true,
    };
    let (thousands, rest) = (o.idle_connections / 1000, o.idle_connections % 1000);
    let idle_name = if thousands > 0 && rest == 0 {
        format!("idle-{thousands}k")
    } else {
        format!("idle-{}", o.idle_connections)
    };
    let all = vec![
        wrk(
            "get-c4",
            "GET, 4 client connections, backend keep-alive",
            4,
            RequestShape::Get,
            true,
        ),
        wrk(
            "get-c64",
            "GET, 64 client connections, backend keep-alive",
            64,
            RequestShape::Get,
            true,
        ),
        wrk(
            "post64k-c16",
            "POST with a 64 KiB body, 16 client connections, backend keep-alive",
            16,
            RequestShape::Post(64 * 1024),
            true,
        ),
        wrk(
            "get-c16-noreuse",
            "GET, 16 client connections, backend connection reuse off",
            16,
            RequestShape::Get,
            false,
        ),
        Workload {
            access_log: false,
            ..wrk(
                "get-c64-nolog",
                "get-c64 with every access log off (fcgi-proxy RUST_LOG=warn, nginx \
                 access_log off, Apache without CustomLog; HAProxy has none anyway)",
                64,
                RequestShape::Get,
                true,
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
            shape: RequestShape::Get,
            backend_keepalive: true,
            access_log: true,
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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
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

/// One GET through a peer (Connection: close); Ok when it answered 200 with the backend's
/// body.
pub fn check_get(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        wrk::PATH
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    if text.starts_with("HTTP/1.1 200") && text.contains(backend::RESPONSE_BODY) {
        Ok(())
    } else {
        Err(format!(
            "check request answered {:?}",
            text.chars().take(300).collect::<String>()
        ))
    }
}

fn command_line(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog).args(args).output().ok()?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!t.is_empty()).then_some(t)
}

/// Everything shared by the runs.
struct Bench<'a> {
    opts: &'a Options,
    backend: Backend,
    proxy_bin: PathBuf,
    clk_tck: u64,
    configs: BTreeMap<String, String>,
    idle_rt: tokio::runtime::Runtime,
    started: Instant,
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
    let mut bench = Bench {
        opts,
        backend,
        proxy_bin,
        clk_tck: procfs::clock_ticks_per_second(),
        configs: BTreeMap::new(),
        idle_rt,
        started,
    };
    let targets: Vec<PeerKind> = opts
        .targets
        .iter()
        .copied()
        .filter(
            |k| match k.unavailable(&bench.peer_options(true, true, 0)) {
                None => true,
                Some(why) => {
                    progress(opts, &format!("skipping {}: {why}", k.name()));
                    false
                }
            },
        )
        .collect();
    let mut results = Vec::new();
    for w in workloads(opts) {
        results.push(bench.workload(&w, &targets)?);
    }
    let meta = bench.meta(&targets, nofile);
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
    fn peer_options(&self, keepalive: bool, access_log: bool, idle: usize) -> PeerOptions {
        PeerOptions {
            backend: BackendAddr::Tcp(self.backend.addr),
            backend_keepalive: Some(keepalive),
            access_log,
            max_client_connections: idle.max(1024 - 256) + 256,
            keepalive_timeout: Duration::from_secs(60),
            workers: 2,
            document_root: "/srv/app".to_owned(),
            fcgi_proxy_bin: Some(self.proxy_bin.clone()),
            env: Vec::new(),
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
            access_log: w.access_log,
            targets: targets
                .iter()
                .map(|k| TargetResult {
                    target: k.name().to_owned(),
                    runs: Vec::new(),
                    median: Metrics::default(),
                    vs_nginx: Metrics::default(),
                })
                .collect(),
        };
        let rounds = match w.kind {
            WorkloadKind::Wrk => self.opts.rounds,
            WorkloadKind::Idle => self.opts.idle_rounds,
        };
        for round in 0..rounds {
            for (i, &kind) in targets.iter().enumerate() {
                let run = match w.kind {
                    WorkloadKind::Wrk => self.wrk_run(w, kind, round, &script),
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
                self.backend
                    .check()
                    .map_err(|e| format!("backend broke after {}: {e}", kind.name()))?;
            }
        }
        result.aggregate();
        Ok(result)
    }

    fn start_peer(
        &mut self,
        kind: PeerKind,
        o: &PeerOptions,
        variant: &str,
    ) -> Result<RunningPeer, String> {
        let peer = kind.start(o).map_err(|e| format!("start: {e}"))?;
        register(&peer.pids());
        self.configs
            .entry(format!("{} ({variant})", kind.name()))
            .or_insert_with(|| peer.config().text.clone());
        if let Err(e) = check_get(peer.addr()) {
            let tail = peer.log_tail(1000);
            stop_peer(peer);
            return Err(format!("{e}; peer output: {tail}"));
        }
        Ok(peer)
    }

    fn wrk_run(&mut self, w: &Workload, kind: PeerKind, round: usize, script: &Path) -> Run {
        let mut run = Run {
            round,
            metrics: Metrics::default(),
            wrk: None,
            cpu_seconds: None,
            processes: 0,
            note: None,
            error: None,
        };
        let o = self.peer_options(w.backend_keepalive, w.access_log, 0);
        let variant = format!(
            "{}, {}",
            if w.backend_keepalive {
                "backend keep-alive"
            } else {
                "backend reuse off"
            },
            if w.access_log {
                "access log"
            } else {
                "no access log"
            }
        );
        let peer = match self.start_peer(kind, &o, &variant) {
            Ok(p) => p,
            Err(e) => {
                run.error = Some(e);
                return run;
            }
        };
        if !self.opts.warmup.is_zero()
            && let Err(e) = wrk::run(peer.addr(), w.connections, self.opts.warmup, script)
        {
            run.note = Some(format!("warm-up: {e}"));
        }
        let before = procfs::cpu_ticks(&peer.pids());
        let result = wrk::run(peer.addr(), w.connections, self.opts.duration, script);
        let pids = peer.pids();
        let after = procfs::cpu_ticks(&pids);
        let mem = procfs::memory(&pids);
        stop_peer(peer);
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
            note: None,
            error: None,
        };
        let o = self.peer_options(true, w.access_log, w.connections);
        let variant = format!("{} idle connections", w.connections);
        let peer = match self.start_peer(kind, &o, &variant) {
            Ok(p) => p,
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
                "libfcgi responder (responder.c), {} processes via spawn-fcgi",
                o.backend_processes
            ),
        );
        put("open_file_limit", nofile.to_string());
        put("access_logs", ACCESS_LOG_NOTE.to_owned());
        put("fcgi_proxy_bin", self.proxy_bin.display().to_string());
        put(
            "wrk",
            command_line("wrk", &["-v"])
                .and_then(|s| s.lines().next().map(str::to_owned))
                .unwrap_or_default(),
        );
        let popts = self.peer_options(true, true, 0);
        for k in targets {
            put(
                &format!("version_{}", k.name()),
                k.version(&popts).unwrap_or_default(),
            );
        }
        put(
            "method",
            "targets alternate within each round (A B C D A B C D); every run starts the peer \
             afresh, warms up, then measures; medians over rounds; CPU = utime+stime of the \
             peer's process tree before/after the measured run / requests; peak RSS = sum of \
             VmHWM over the tree; all processes share 2 cores, so single runs are noisy"
                .to_owned(),
        );
        m
    }
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

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_options() {
        let o = parse_args(&args(
            "--quick --targets fcgi-proxy,nginx --workloads get-c4,idle",
        ))
        .unwrap()
        .unwrap();
        assert!(o.quick);
        assert_eq!(o.targets, [PeerKind::FcgiProxy, PeerKind::Nginx]);
        let names: Vec<String> = workloads(&o).into_iter().map(|w| w.name).collect();
        assert_eq!(names, ["get-c4", "idle-200"]);

        let o = parse_args(&args("--duration 7 --rounds 5 --idle 10000"))
            .unwrap()
            .unwrap();
        assert_eq!(o.duration, Duration::from_secs(7));
        assert_eq!(o.rounds, 5);
        let names: Vec<String> = workloads(&o).into_iter().map(|w| w.name).collect();
        assert_eq!(
            names,
            [
                "get-c4",
                "get-c64",
                "post64k-c16",
                "get-c16-noreuse",
                "get-c64-nolog",
                "idle-10k"
            ]
        );

        assert!(parse_args(&args("--help")).unwrap().is_none());
        assert!(parse_args(&args("--targets lighttpd")).is_err());
        assert!(parse_args(&args("--rounds 0")).is_err());
        assert!(parse_args(&args("--bogus")).is_err());
    }
}
