//! A real php-fpm 8.2 pool and `fcgi-proxy` processes in front of it, for the tests that check
//! the proxy against php-fpm's own behaviour (`fpm_saturation.rs`, `fpm_reload.rs`): pools and
//! proxies written as config files into a temp dir and started on free loopback ports, requests
//! sent concurrently with a bound on every wait, and what a failing test should show.
//!
//! The tests using this run one at a time ([`serial`]): their timing bounds assume the two
//! cores are theirs.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Proc, RawRequest, Signal};

/// How long the client waits for one response before calling the request hung. Above every
/// bound the tests check, well below the proxy's own backend timeout (60 s by default).
pub const HUNG: Duration = Duration::from_secs(3);

/// Sleeps 200 ms, then answers `ok TAG`.
pub const SLEEP_PHP: &str = r#"<?php
usleep(200000);
echo "ok ", $_GET['tag'] ?? '', "\n";
"#;

/// Appends the posted `tag` to `executions.log` next to the docroot first (so that an execution
/// cut short still counts), then sleeps 200 ms.
pub const APPEND_PHP: &str = r#"<?php
$tag = $_POST['tag'] ?? '(none)';
file_put_contents(dirname(__DIR__) . '/executions.log', $tag . "\n", FILE_APPEND | LOCK_EX);
usleep(200000);
echo "done ", $tag, "\n";
"#;

/// Answers `hello` at once.
pub const HELLO_PHP: &str = "<?php\necho \"hello\\n\";\n";

/// The tests run one at a time: their timing bounds assume the two cores are theirs.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// php-fpm 8.2, or `None` after saying the test is skipped (a failure when `FCGI_REQUIRE` or
/// `CI` requires it; see the `programs` crate).
pub fn php_fpm_bin() -> Option<PathBuf> {
    programs::require_program("php-fpm8.2", "php8.2-fpm")
}

// ---------------------------------------------------------------------------------------------
// php-fpm and proxies
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub enum Pm {
    /// `pm = static` with this many workers.
    Static(u32),
    /// `pm = ondemand` with at most this many workers, idle ones ending after 10 s.
    Ondemand(u32),
    /// `pm = dynamic`.
    Dynamic {
        max_children: u32,
        start_servers: u32,
        min_spare: u32,
        max_spare: u32,
    },
}

/// A php-fpm pool's configuration: the process manager plus any further lines for the
/// `[global]` section and for the pool.
#[derive(Debug, Clone)]
pub struct FpmConf {
    pub pm: Pm,
    pub global_extra: String,
    pub pool_extra: String,
}

impl From<Pm> for FpmConf {
    fn from(pm: Pm) -> FpmConf {
        FpmConf {
            pm,
            global_extra: String::new(),
            pool_extra: String::new(),
        }
    }
}

/// A running php-fpm pool on a loopback TCP port, with its docroot in a temp dir.
pub struct Fpm {
    pub dir: tempfile::TempDir,
    pub docroot: PathBuf,
    pub port: u16,
    pub proc: Proc,
    bin: PathBuf,
    conf_path: PathBuf,
    /// How many masters have been started (the first is 1); each has its own output file.
    starts: u32,
}

impl Fpm {
    pub fn start(bin: &Path, conf: impl Into<FpmConf>) -> Fpm {
        let conf = conf.into();
        let dir = tempfile::Builder::new()
            .prefix("fpm-test-")
            .tempdir()
            .expect("tempdir");
        // Workers run as the invoking user (root: `-R`); they write executions.log here.
        let docroot = dir.path().join("docroot");
        std::fs::create_dir_all(&docroot).expect("docroot");
        std::fs::write(docroot.join("sleep.php"), SLEEP_PHP).expect("sleep.php");
        std::fs::write(docroot.join("append.php"), APPEND_PHP).expect("append.php");
        std::fs::write(docroot.join("hello.php"), HELLO_PHP).expect("hello.php");
        let port = super::free_port();
        let pm_lines = match conf.pm {
            Pm::Static(n) => format!("pm = static\npm.max_children = {n}\n"),
            Pm::Ondemand(n) => {
                format!("pm = ondemand\npm.max_children = {n}\npm.process_idle_timeout = 10s\n")
            }
            Pm::Dynamic {
                max_children,
                start_servers,
                min_spare,
                max_spare,
            } => format!(
                "pm = dynamic\npm.max_children = {max_children}\n\
                 pm.start_servers = {start_servers}\npm.min_spare_servers = {min_spare}\n\
                 pm.max_spare_servers = {max_spare}\n"
            ),
        };
        let d = dir.path().display();
        // The status page is under the proxied prefix: php-fpm matches it against the
        // SCRIPT_NAME the proxy sends, and going through the proxy uses its pooled connections
        // (a direct connection would wait in the backlog while they hold every worker).
        let text = format!(
            "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n{}\n\
             [app]\nlisten = 127.0.0.1:{port}\n{pm_lines}{}pm.status_path = /app/fpm-status\n\
             catch_workers_output = yes\n",
            conf.global_extra, conf.pool_extra
        );
        let conf_path = dir.path().join("php-fpm.conf");
        std::fs::write(&conf_path, text).expect("php-fpm.conf");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let proc = super::start_php_fpm(bin, &conf_path, dir.path(), addr);
        Fpm {
            dir,
            docroot,
            port,
            proc,
            bin: bin.to_path_buf(),
            conf_path,
            starts: 1,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The master's PID.
    pub fn pid(&self) -> u32 {
        self.proc.pid().expect("php-fpm master is running")
    }

    /// Graceful reload: SIGUSR2 to the master (it re-executes itself under the same PID and
    /// keeps its listening socket; the old workers finish and exit, new ones start).
    pub fn reload(&mut self) -> Result<(), String> {
        self.proc.signal(Signal::SIGUSR2)
    }

    /// Stops the master with `signal` (`SIGQUIT`: graceful, `SIGTERM`: fast) and waits up to
    /// `timeout` for it to exit. The time it took, or why it did not.
    pub fn stop_master(&mut self, signal: Signal, timeout: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        self.proc.signal(signal)?;
        match self.proc.wait_exit(timeout) {
            Some(_) => Ok(t0.elapsed()),
            None => Err(format!(
                "php-fpm master (pid {}) still running {timeout:?} after {signal}",
                self.pid()
            )),
        }
    }

    /// Starts a new master on the same configuration (and port) without waiting for it to
    /// listen: the caller watches for that. The previous master must have exited.
    pub fn spawn_again(&mut self) {
        assert!(
            self.proc.exited().is_some(),
            "the previous php-fpm master is still running"
        );
        self.starts += 1;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-n", "-F", "-y"]).arg(&self.conf_path);
        if super::running_as_root() {
            cmd.arg("-R");
        }
        let out = self.dir.path().join(format!("php-fpm-{}.out", self.starts));
        // The old Proc has exited; dropping it only reaps it.
        self.proc = Proc::spawn("php-fpm", cmd, &out);
    }

    /// Whether a plain TCP connect to php-fpm's port succeeds within `timeout`.
    pub fn accepts_connect(&self, timeout: Duration) -> bool {
        TcpStream::connect_timeout(&self.addr(), timeout).is_ok()
    }

    /// Lines of php-fpm's error log containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("php-fpm.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("php-fpm.log")).unwrap_or_default();
        format!("{}--- php-fpm.log ---\n{log}", self.proc.output())
    }

    pub fn executions(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("executions.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A running `fcgi-proxy --config` with the default pool settings and one route to `fpm`.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub proc: Proc,
}

impl Proxy {
    pub fn start(fpm: &Fpm, name: &str) -> Proxy {
        let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port())
            .parse()
            .expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", super::free_port())
            .parse()
            .expect("addr");
        // Nothing but the listeners and the route: reuse on, no `worker.max`, no `workers`,
        // default timeouts.
        let conf = format!(
            "listen = [\"{addr}\"]\nadmin_listen = \"{admin}\"\n\n\
             [[route]]\npath = \"/app/\"\ntarget = \"fcgi://127.0.0.1:{}{}/\"\n",
            fpm.port,
            fpm.docroot.display()
        );
        let conf_path = fpm.dir.path().join(format!("{name}.toml"));
        std::fs::write(&conf_path, conf).expect("proxy toml");
        let log = fpm.dir.path().join(format!("{name}.err"));
        let mut proc = super::start_proxy_toml(&conf_path, &log, addr)
            .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
        if let Err(e) = proc.wait_ready(admin, Some("admin on")) {
            panic!("{name}: no admin listener: {e}");
        }
        Proxy { addr, admin, proc }
    }

    /// The one worker's entry of `/status` (pool counters: `open`, `idle`, `opened`, `reused`,
    /// `accepted`, `pending`, `limit`, `saturations`, `yields`, `probes`, ...).
    pub async fn worker_status(&self) -> Result<Value, String> {
        let req = RawRequest::whole(format!(
            "GET /status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin
        ));
        let resp = tokio::time::timeout(HUNG, super::exchange(self.admin, &req))
            .await
            .map_err(|_| format!("/status: no answer within {HUNG:?}"))??;
        let v: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| format!("/status is not JSON ({e}): {}", resp.body_text()))?;
        v["workers"]
            .as_array()
            .and_then(|w| w.first())
            .cloned()
            .ok_or_else(|| format!("/status has no worker: {v}"))
    }
}

pub fn counter(worker: &Value, key: &str) -> u64 {
    worker[key]
        .as_u64()
        .unwrap_or_else(|| panic!("/status worker has no counter {key:?}: {worker}"))
}

// ---------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------

/// What one request got: the response (or why there was none) and how long it took.
pub struct Outcome {
    pub what: String,
    pub result: Result<super::HttpResponse, String>,
    pub took: Duration,
}

impl Outcome {
    /// php-fpm's answer: status 200 and the script's own body.
    pub fn ok(&self, body_prefix: &str) -> bool {
        matches!(&self.result, Ok(r) if r.status == 200 && r.body_text().starts_with(body_prefix))
    }

    pub fn describe(&self) -> String {
        match &self.result {
            Ok(r) => format!(
                "{}: {} after {:.0?}: {:?}",
                self.what,
                r.status,
                self.took,
                r.body_text().chars().take(120).collect::<String>()
            ),
            Err(e) => format!("{}: {e} after {:.0?}", self.what, self.took),
        }
    }
}

pub fn get_sleep(front: SocketAddr, tag: &str) -> RawRequest {
    RawRequest::whole(format!(
        "GET /app/sleep.php?tag={tag} HTTP/1.1\r\nHost: {front}\r\nConnection: close\r\n\r\n"
    ))
}

pub fn post_append(front: SocketAddr, tag: &str) -> RawRequest {
    post_append_with(front, tag, "Connection: close\r\n")
}

/// A POST of `tag=TAG` to append.php with `extra` header lines (each ending in CRLF).
pub fn post_append_with(front: SocketAddr, tag: &str, extra: &str) -> RawRequest {
    let body = format!("tag={tag}");
    RawRequest::whole(format!(
        "POST /app/append.php HTTP/1.1\r\nHost: {front}\r\n{extra}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// Sends one request on its own connection, giving up after [`HUNG`].
pub async fn timed(front: SocketAddr, what: String, req: RawRequest) -> Outcome {
    let t0 = Instant::now();
    let result = match tokio::time::timeout(HUNG, super::exchange(front, &req)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no response within {HUNG:?} (hung)")),
    };
    Outcome {
        what,
        result,
        took: t0.elapsed(),
    }
}

/// Sends all of `reqs` at once, each on its own connection; the outcomes in the same order.
pub async fn concurrently(reqs: Vec<(SocketAddr, String, RawRequest)>) -> Vec<Outcome> {
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|(front, what, req)| tokio::spawn(timed(front, what, req)))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// `n` concurrent GETs of sleep.php, tagged `{label}-{i}`.
pub async fn burst(front: SocketAddr, label: &str, n: usize) -> Vec<Outcome> {
    concurrently(
        (0..n)
            .map(|i| {
                let tag = format!("{label}-{i}");
                (front, format!("GET {tag}"), get_sleep(front, &tag))
            })
            .collect(),
    )
    .await
}

/// The failures among `outcomes` (not php-fpm's 200, or slower than `max` when given).
pub fn failures(outcomes: &[Outcome], body_prefix: &str, max: Option<Duration>) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| !o.ok(body_prefix) || max.is_some_and(|m| o.took > m))
        .map(Outcome::describe)
        .collect()
}

pub fn summary(outcomes: &[Outcome], body_prefix: &str) -> String {
    let ok = outcomes.iter().filter(|o| o.ok(body_prefix)).count();
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    format!("{ok}/{} 200, slowest {slowest:.0?}", outcomes.len())
}

/// Everything worth seeing when a test fails: the pool counters, the backend connections the
/// machine has open, and the logs.
pub async fn diagnostics(fpm: &Fpm, proxies: &[&Proxy]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ESTABLISHED connections to php-fpm's port: {}",
        super::established_to_port(fpm.port)
    );
    for p in proxies {
        let _ = writeln!(
            s,
            "proxy {} /status worker: {}",
            p.addr,
            match p.worker_status().await {
                Ok(v) => v.to_string(),
                Err(e) => e,
            }
        );
    }
    for p in proxies {
        s.push_str(&p.proc.output());
    }
    s.push_str(&fpm.log());
    s
}

/// Fails the test with `problems`, if any, and the diagnostics.
pub async fn conclude(test: &str, problems: &[String], fpm: &Fpm, proxies: &[&Proxy]) {
    if problems.is_empty() {
        return;
    }
    let diag = diagnostics(fpm, proxies).await;
    panic!(
        "{test}: {} problem(s):\n  {}\n{diag}",
        problems.len(),
        problems.join("\n  ")
    );
}
