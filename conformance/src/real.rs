//! The real runner: the same scenario files against a live proxy process on loopback.
//!
//! Backends are `fcgi-mock` servers in this process on ephemeral loopback ports; the target
//! proxy runs as a process with a config generated from the scenario's neutral topology
//! ([`targets`]); the clients are the simulator's, dialling real TCP with a real clock. What the
//! backends saw is normalised (each real `127.0.0.1:port` becomes the scenario's `name:port`) so
//! that expectations such as `SCRIPT_FILENAME = "proxy:fcgi://${app}/x"` read the same in both
//! modes, then judged by the same checks as a simulated run.
//!
//! Not expressible for real: link faults (hold, partition, latency) need the simulator; such
//! scenarios are SKIP with that reason.
//!
//! `topology.proxies = N`: for `ours`, N fcgi-proxy processes run on the same generated
//! configuration, each on its own listen port (instance `i > 0` in the subdirectory
//! `proxy<i+1>/` of the run's directory); each client dials its instance. Other targets run
//! one instance, so such scenarios are SKIP for them ([`Target::cannot_express`]).

pub mod backend;
pub mod cli;
mod keep;
pub mod peers_cli;
pub mod targets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fcgi_mock::{MockHandle, MockServer, Snapshot};

use crate::check;
use crate::report::Verdict;
use crate::scenario::{Fault, FaultAction, Scenario};
use crate::sim::client::{self, Dial, Results};
use crate::sim::net::AddrStats;
use crate::sim::trace::Trace;
use crate::sim::{BackendRun, Incarnation, Run};
pub use backend::BackendKind;
pub use keep::journal_text;
pub use targets::{External, Target};

/// How long a target may take to accept connections.
const READY: Duration = Duration::from_secs(10);
/// Allowed above an expected upper time bound: real processes on a shared machine are scheduled
/// late now and then; lower bounds stay exact (nothing happens early).
const TIMING_SLACK: Duration = Duration::from_millis(250);
/// After the clients are done: time for closes to reach the journals.
const SETTLE: Duration = Duration::from_millis(150);

/// What a real run produced: a verdict for the matrix, and the observations behind it.
#[derive(Debug)]
pub struct RealOutcome {
    pub verdict: Verdict,
    pub detail: String,
    pub run: Option<Run>,
}

impl RealOutcome {
    fn skip(reason: impl Into<String>) -> Self {
        RealOutcome {
            verdict: Verdict::Skip,
            detail: reason.into(),
            run: None,
        }
    }
}

/// Settings shared by every run.
#[derive(Debug, Clone)]
pub struct RealOptions {
    /// The `fcgi-proxy` binary (for [`Target::Ours`]).
    pub proxy_bin: PathBuf,
    /// The user's proxy (for [`Target::External`]).
    pub external: Option<External>,
    /// Keep each run's files (generated config, the target's log) and what the backends and
    /// clients saw (`journal.txt`) in `<keep>/<target>/<area>/<slug>/`.
    pub keep: Option<PathBuf>,
    /// The program behind the scenario's backends: the mock, or a real one ([`backend`]).
    pub backend: BackendKind,
}

/// Why a scenario cannot run for real, if it cannot.
pub fn unsupported(s: &Scenario) -> Option<String> {
    if let Some(why) = &s.sim.only {
        return Some(format!("simulator only: {why}"));
    }
    s.faults.iter().find_map(|f| match f.action {
        FaultAction::Crash | FaultAction::Restart => None,
        a => Some(format!(
            "fault {a:?} acts on a network link: simulator only"
        )),
    })
}

/// A child process stopped by its own PID when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// Processes the target started, seen while it ran.
    helpers: Vec<u32>,
}

impl Proc {
    /// How the process ended, if it did (reaps it).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(describe_exit(status)),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(c) => format!("exit status {c}"),
        None => status.to_string(),
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Helpers the target started (h2o's crash-handler process, workers) are stopped by
        // their own PIDs once the target is gone.
        let mut tree = crate::peers::process_tree(self.child.id());
        for &h in &self.helpers {
            if !tree.contains(&h) {
                tree.push(h);
            }
        }
        crate::peers::signal(self.child.id(), crate::peers::Signal::SIGTERM);
        let mut gone = false;
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !gone {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for &pid in tree.iter().skip(1) {
            for _ in 0..50 {
                if !crate::peers::is_alive(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if crate::peers::is_alive(pid) {
                crate::peers::signal(pid, crate::peers::Signal::SIGKILL);
            }
        }
    }
}

/// Backends of one run: the running mock per scenario backend, and the journals of earlier
/// incarnations.
struct Backends {
    /// (scenario name, scenario authority, real address).
    names: Vec<(String, String, SocketAddr)>,
    live: Vec<Option<MockHandle>>,
    started: Vec<tokio::time::Instant>,
    incarnations: Vec<Vec<Incarnation>>,
}

/// Runs `s` against `target`.
pub fn run(s: &Scenario, target: Target, opts: &RealOptions) -> RealOutcome {
    if let Some(why) = unsupported(s) {
        return RealOutcome::skip(why);
    }
    let kind = opts.backend;
    let original = s;
    // With a real backend program: what its execution log can judge.
    let judged;
    let s = if kind.is_real() {
        if let Some(why) = kind.missing() {
            return RealOutcome {
                verdict: Verdict::Fail,
                detail: format!("backend {}: {why}", kind.name()),
                run: None,
            };
        }
        if target == Target::External {
            return RealOutcome::skip(
                "the external proxy sends to the one backend address given with it (the mock)",
            );
        }
        if let Some(why) = backend::unsupported(s, kind) {
            return RealOutcome::skip(why);
        }
        judged = Scenario {
            expect: check::without_wire(&s.expect),
            ..s.clone()
        };
        if !check::expects_anything(&judged.expect) {
            return RealOutcome::skip(format!(
                "every expectation reads the FastCGI wire ({}), which {} does not record",
                check::wire_expectations(&s.expect).join(", "),
                kind.name()
            ));
        }
        &judged
    } else {
        s
    };
    if let Some(why) = target.unavailable(opts) {
        return RealOutcome::skip(why);
    }
    // What the proxy is asked to do is the original scenario's (a peer that cannot keep
    // connections open cannot run a reuse scenario, judged on the wire or not).
    if let Some(why) = target.cannot_express(original) {
        return RealOutcome::skip(why);
    }
    if let (Target::External, Some(e)) = (target, &opts.external)
        && let Err(why) = e.front_for(original)
    {
        return RealOutcome::skip(why);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return RealOutcome {
                verdict: Verdict::Fail,
                detail: format!("runtime: {e}"),
                run: None,
            };
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return RealOutcome::skip(format!("temp dir: {e}")),
    };
    // A real backend's script sits under this run's document root, where the target's
    // SCRIPT_FILENAME points.
    let docroot = dir.path().join("docroot");
    let routed;
    let s_run = if kind.is_real() {
        routed = backend::with_docroot(s, &docroot);
        &routed
    } else {
        s
    };
    let run = start_real(s_run, kind, dir.path(), &docroot)
        .and_then(|real| rt.block_on(run_async(s_run, target, opts, dir.path(), real)));
    if let Some(keep) = &opts.keep {
        let column = match kind {
            BackendKind::Mock => target.name().to_string(),
            k => format!("{}-{}", target.name(), k.name()),
        };
        keep::keep_run(&keep.join(column).join(&s.id), dir.path(), &run);
    }
    match run {
        Err(e) => RealOutcome {
            verdict: Verdict::Fail,
            detail: e,
            run: None,
        },
        Ok(run) => {
            let j = check::judge(s, &run);
            let mut reasons = j.reasons();
            let unjudged = check::wire_expectations(&original.expect);
            if kind.is_real() && !unjudged.is_empty() {
                reasons.push(format!(
                    "not judged with {} (the FastCGI wire is not recorded): {}",
                    kind.name(),
                    unjudged.join(", ")
                ));
            }
            RealOutcome {
                verdict: j.verdict(s.level),
                detail: reasons.join("; "),
                run: Some(run),
            }
        }
    }
}

/// The real backend programs of `s` (none for the mock), each with its files in
/// `dir/backend-<name>/` and its script under `docroot`.
fn start_real(
    s: &Scenario,
    kind: BackendKind,
    dir: &Path,
    docroot: &Path,
) -> Result<Vec<backend::RealBackend>, String> {
    if !kind.is_real() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(docroot).map_err(|e| format!("{}: {e}", docroot.display()))?;
    let scripts = backend::script_paths(s);
    if scripts.is_empty() {
        return Err("no request path to put the backend's script at".into());
    }
    s.backends
        .iter()
        .map(|b| {
            let plan = backend::plan(b, kind)?;
            backend::start(
                kind,
                &plan,
                &dir.join(format!("backend-{}", b.name)),
                &scripts,
            )
        })
        .collect()
}

async fn run_async(
    s: &Scenario,
    target: Target,
    opts: &RealOptions,
    dir: &Path,
    real: Vec<backend::RealBackend>,
) -> Result<Run, String> {
    let wall = std::time::Instant::now();
    let mut b = Backends {
        names: Vec::new(),
        live: Vec::new(),
        started: Vec::new(),
        incarnations: Vec::new(),
    };
    let external = match target {
        Target::External => opts.external.clone(),
        _ => None,
    };
    for (backend, r) in s.backends.iter().zip(&real) {
        b.names
            .push((backend.name.clone(), backend.authority(), r.addr));
        b.live.push(None);
        b.started.push(tokio::time::Instant::now());
        b.incarnations.push(Vec::new());
    }
    for backend in s.backends.iter().skip(real.len()) {
        let script = backend.mock_script()?;
        // The user's proxy sends to one fixed address; every other mock takes a free port.
        let bind = match &external {
            Some(e) => e.backend.to_string(),
            None => "127.0.0.1:0".to_string(),
        };
        let m = MockServer::bind_tcp(&bind, script)
            .await
            .map_err(|e| format!("backend {} on {bind}: {e}", backend.name))?;
        let addr = m
            .socket_addr()
            .ok_or_else(|| format!("backend {}: no address", backend.name))?;
        b.names
            .push((backend.name.clone(), backend.authority(), addr));
        b.live.push(Some(m));
        b.started.push(tokio::time::Instant::now());
        b.incarnations.push(Vec::new());
    }
    let log = dir.join("target.log");
    // One listen address and process per instance (the external proxy: its one address).
    let mut listens: Vec<SocketAddr> = Vec::new();
    let mut procs: Vec<(PathBuf, Proc)> = Vec::new();
    match &external {
        Some(e) => {
            let front = e.front_for(s)?;
            wait_ready(front, &log).await?;
            listens.push(front);
        }
        None => {
            let addrs: BTreeMap<String, SocketAddr> =
                b.names.iter().map(|(n, _, a)| (n.clone(), *a)).collect();
            for i in 0..s.topology.proxies.max(1) as usize {
                let dir_i = instance_dir(dir, i);
                std::fs::create_dir_all(&dir_i).map_err(|e| format!("{}: {e}", dir_i.display()))?;
                let listen = listen_port()?;
                let log_i = dir_i.join("target.log");
                let proc = start_target(s, target, opts, &dir_i, &addrs, listen, &log_i).await?;
                listens.push(listen);
                procs.push((dir_i, proc));
            }
        }
    }

    // Faults at time zero happen before any traffic, as in the simulator: a backend that is
    // down from the start must not serve the first request by winning a race.
    let mut faults = s.faults.clone();
    faults.sort_by_key(|f| f.at);
    let boot = tokio::time::Instant::now();
    let later = faults.split_off(faults.partition_point(|f| f.at.0.is_zero()));
    for f in &faults {
        apply_fault(s, &mut b, f, boot).await?;
    }
    let faults = later;

    // Traffic, and the backend faults at their times.
    let start = tokio::time::Instant::now();
    // The real backends' execution logs are in wall time.
    let origin = SystemTime::now();
    let planned = s.planned_requests();
    let results: Results = Arc::new(Mutex::new(vec![None; planned.len()]));
    let trace = Trace::default();
    let addresses: Vec<(String, String)> = b
        .names
        .iter()
        .map(|(n, _, a)| (n.clone(), a.to_string()))
        .collect();
    let dials: Vec<Dial> = listens
        .iter()
        .map(|&addr| Dial::Real { addr, start })
        .collect();
    let clients: Vec<_> = client::runs(s, &planned, &dials, &addresses, &results, &trace)
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                // Failures are recorded per request in `results`.
                let _ = client::run(c).await;
            })
        })
        .collect();
    let longest = s
        .clients
        .iter()
        .map(|c| {
            c.start.0
                + c.timeout.0
                    * (c.requests.iter().map(|r| r.repeat.max(1)).sum::<usize>() as u32 + 1)
        })
        .max()
        .unwrap_or_default();
    let all_done = async {
        for c in clients {
            let _ = c.await;
        }
    };
    tokio::pin!(all_done);
    for f in faults {
        let at = start + f.at.0;
        tokio::select! {
            biased;
            _ = &mut all_done => break,
            _ = tokio::time::sleep_until(at) => {}
        }
        apply_fault(s, &mut b, &f, start).await?;
    }
    if tokio::time::timeout(longest + Duration::from_secs(5), &mut all_done)
        .await
        .is_err()
    {
        return Err("clients did not finish in time".into());
    }
    let clients_done_at = start.elapsed();
    settle(s, &b).await;
    let several = procs.len() > 1;
    let exited = procs.iter_mut().enumerate().find_map(|(i, (dir_i, p))| {
        p.exited().map(|how| {
            let which = if several {
                format!("instance {i}: ")
            } else {
                String::new()
            };
            format!("{which}{how}; its log: {}", log_tail(dir_i))
        })
    });
    // The journals as they stand with the proxy still running (as the simulator reads them):
    // stopping the proxy closes its pooled connections, which is not part of the scenario.
    for i in 0..b.live.len() {
        end_incarnation(&mut b, i, start).await;
    }
    for (i, r) in real.iter().enumerate() {
        b.incarnations[i].push(Incarnation {
            started_at: Duration::ZERO,
            ended_at: None,
            journal: r.journal(origin),
        });
    }
    drop(procs);
    drop(real);
    let backends: Vec<BackendRun> = b
        .names
        .iter()
        .zip(b.incarnations)
        .map(|((name, authority, _), mut incarnations)| {
            for inc in &mut incarnations {
                normalise(&mut inc.journal, &b.names);
            }
            BackendRun {
                name: name.clone(),
                authority: authority.clone(),
                incarnations,
                partitioned: false,
            }
        })
        .collect();
    let net = backends
        .iter()
        .map(|b| (b.authority.clone(), journal_stats(b)))
        .collect();
    let requests = results.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let config = crate::ours::config(s).unwrap_or_default();
    Ok(Run {
        id: s.id.clone(),
        seed: 0,
        config,
        requests,
        labels: planned.iter().map(|p| p.label.clone()).collect(),
        backends,
        workers: Vec::new(),
        net,
        pool_cap_violations: Vec::new(),
        trace: trace.lines(),
        error: exited.map(|e| format!("the target crashed or exited during the run: {e}")),
        settled: true,
        connections_observed: false,
        timing_slack: TIMING_SLACK,
        clients_done_at,
        virtual_time: clients_done_at,
        wall_time: wall.elapsed(),
    })
}

/// The directory of proxy instance `i`: the run's own for instance 0, `proxy<i+1>/` in it for
/// the others.
fn instance_dir(dir: &Path, i: usize) -> PathBuf {
    if i == 0 {
        dir.to_path_buf()
    } else {
        dir.join(crate::scenario::proxy_host(i))
    }
}

/// Writes the target's configuration into `dir`, starts it there in the foreground with its
/// output in `log`, and waits until it accepts connections on `listen`.
pub async fn start_target(
    s: &Scenario,
    target: Target,
    opts: &RealOptions,
    dir: &Path,
    backends: &BTreeMap<String, SocketAddr>,
    listen: SocketAddr,
    log: &Path,
) -> Result<Proc, String> {
    let generated = target.config(s, backends, listen, dir, opts)?;
    let file = dir.join(generated.file_name);
    std::fs::write(&file, &generated.text).map_err(|e| format!("{}: {e}", file.display()))?;
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    // By its path: the sbin directories where Debian puts the peers may not be on PATH.
    let mut cmd = Command::new(programs::program_path(&generated.command[0]));
    cmd.args(&generated.command[1..])
        .envs(generated.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", generated.command[0]))?;
    let mut proc = Proc {
        child,
        helpers: Vec::new(),
    };
    wait_ready(listen, log).await?;
    if let Some(how) = proc.exited() {
        return Err(format!(
            "the target exited right after starting ({how}): {}",
            log_tail(dir)
        ));
    }
    proc.helpers = crate::peers::process_tree(proc.child.id());
    Ok(proc)
}

async fn end_incarnation(b: &mut Backends, i: usize, start: tokio::time::Instant) {
    if let Some(m) = b.live[i].take() {
        let journal = m.journal().snapshot();
        let started_at = b.started[i].saturating_duration_since(start);
        let ended_at = Some(start.elapsed());
        m.shutdown().await;
        b.incarnations[i].push(Incarnation {
            started_at,
            ended_at,
            journal,
        });
    }
}

/// After the clients: give closes time to reach the journals. When a backend closes idle
/// connections itself, wait for that, until every connection is closed or the scenario's settle
/// time runs out.
async fn settle(s: &Scenario, b: &Backends) {
    let idle = s
        .backends
        .iter()
        .filter_map(|x| x.idle_timeout.map(|d| d.0))
        .max();
    let Some(idle) = idle else {
        tokio::time::sleep(SETTLE).await;
        return;
    };
    let deadline = tokio::time::Instant::now() + (idle + SETTLE).min(s.sim.settle.0);
    while tokio::time::Instant::now() < deadline {
        let open: usize = b
            .live
            .iter()
            .flatten()
            .map(|m| crate::sim::served_open(&m.journal().snapshot()))
            .sum();
        if open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A backend fault, now: a crash ends the mock's incarnation, a restart starts a new one on the
/// same address. Link faults are refused before a real run starts.
async fn apply_fault(
    s: &Scenario,
    b: &mut Backends,
    f: &Fault,
    start: tokio::time::Instant,
) -> Result<(), String> {
    let host = f.host.clone().unwrap_or_default();
    let Some(i) = b.names.iter().position(|(n, _, _)| *n == host) else {
        return Ok(());
    };
    match f.action {
        FaultAction::Crash => end_incarnation(b, i, start).await,
        FaultAction::Restart => {
            end_incarnation(b, i, start).await;
            let backend = &s.backends[i];
            let m = MockServer::bind_tcp(&b.names[i].2.to_string(), backend.mock_script()?)
                .await
                .map_err(|e| format!("restart {host}: {e}"))?;
            b.live[i] = Some(m);
            b.started[i] = tokio::time::Instant::now();
        }
        _ => {}
    }
    Ok(())
}

/// Rewrites every real backend address in the params to the scenario's `name:port`.
fn normalise(j: &mut Snapshot, names: &[(String, String, SocketAddr)]) {
    for r in &mut j.requests {
        for (_, v) in &mut r.params {
            let mut text = String::from_utf8_lossy(v).into_owned();
            let mut changed = false;
            for (_, authority, real) in names {
                let real = real.to_string();
                if text.contains(&real) {
                    text = text.replace(&real, authority);
                    changed = true;
                }
            }
            if changed {
                *v = Bytes::from(text);
            }
        }
    }
}

/// Connection counts from a backend's journals (the proxy's side is not observable for real).
fn journal_stats(b: &BackendRun) -> AddrStats {
    let mut events: Vec<(Duration, i64)> = Vec::new();
    let mut opened = 0;
    for inc in &b.incarnations {
        for c in &inc.journal.connections {
            opened += 1;
            events.push((inc.at(c.opened_ms), 1));
            events.push((inc.at(c.closed_ms.unwrap_or(u64::MAX / 4)), -1));
        }
    }
    events.sort();
    let (mut live, mut max_live) = (0i64, 0i64);
    for (_, d) in events {
        live += d;
        max_live = max_live.max(live);
    }
    AddrStats {
        attempts: opened,
        opened,
        failed: 0,
        live: 0,
        connecting: 0,
        max_live: max_live as usize,
    }
}

/// A port for the target to listen on. Below Linux's ephemeral range (32768 and up), where the
/// mocks' and clients' ports come from, and distinct across the runs of this process, so two
/// scenarios running at once never pick the same one.
pub fn listen_port() -> Result<SocketAddr, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20000 + (std::process::id() % 50) * 200;
    for _ in 0..2000 {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 10000;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if std::net::TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    Err("no free port below 32768 on 127.0.0.1".into())
}

/// The last lines the target wrote: its output (`target.log`) and the error log some targets
/// write into the run directory themselves.
pub fn log_tail(dir: &Path) -> String {
    let mut text = String::new();
    for name in ["target.log", "error.log"] {
        if let Ok(t) = std::fs::read_to_string(dir.join(name)) {
            text.push_str(&t);
        }
    }
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(15)
        .collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

async fn wait_ready(addr: SocketAddr, log: &Path) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + READY;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the target did not accept connections on {addr} within {READY:?}: {}",
                log.parent().map(log_tail).unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
