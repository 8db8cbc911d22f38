//! The proxy with its default pool settings (connection reuse on, no `worker.max`, no `workers`)
//! in front of a real php-fpm 8.2 pool that has fewer workers than there are concurrent requests.
//!
//! A php-fpm worker serves one accepted connection at a time and stays with it, idle, for as long
//! as the proxy keeps it open with FCGI_KEEP_CONN; connections beyond the free workers wait,
//! unanswered, in the listen backlog (docs/reference/backends.md has the observations). A proxy
//! that pools connections must therefore never leave a request waiting behind connections that
//! hold every worker while idle: every request here must get php-fpm's 200 quickly, no request
//! may run twice, and at rest the proxy must hold no more connections than there are workers.
//!
//! Each test starts its own php-fpm and proxy processes on free loopback ports, with the pool
//! written into a temp dir, and runs alone (the timing bounds assume an otherwise idle pair).
//! Every client wait is bounded: a request the proxy leaves hanging fails the test.
//!
//! Skipped with a message when php-fpm8.2 is not installed, unless `CI` is set (then it fails).

mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Proc, RawRequest};

/// How long the client waits for one response before calling the request hung. Above every
/// bound the tests check, well below the proxy's own backend timeout (60 s by default).
const HUNG: Duration = Duration::from_secs(3);

/// Sleeps 200 ms, then answers `ok TAG`.
const SLEEP_PHP: &str = r#"<?php
usleep(200000);
echo "ok ", $_GET['tag'] ?? '', "\n";
"#;

/// Appends the posted `tag` to `executions.log` next to the docroot first (so that an execution
/// cut short still counts), then sleeps 200 ms.
const APPEND_PHP: &str = r#"<?php
$tag = $_POST['tag'] ?? '(none)';
file_put_contents(dirname(__DIR__) . '/executions.log', $tag . "\n", FILE_APPEND | LOCK_EX);
usleep(200000);
echo "done ", $tag, "\n";
"#;

/// The tests run one at a time: their timing bounds assume the two cores are theirs.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn php_fpm_bin(test: &str) -> Option<PathBuf> {
    support::required_program(&["/usr/sbin/php-fpm8.2"], "php8.2-fpm", test)
}

// ---------------------------------------------------------------------------------------------
// php-fpm and proxies
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Pm {
    /// `pm = static` with this many workers.
    Static(u32),
    /// `pm = ondemand` with at most this many workers, idle ones ending after 10 s.
    Ondemand(u32),
}

/// A running php-fpm pool on a loopback TCP port, with its docroot in a temp dir.
struct Fpm {
    dir: tempfile::TempDir,
    docroot: PathBuf,
    port: u16,
    proc: Proc,
}

impl Fpm {
    fn start(bin: &Path, pm: Pm) -> Fpm {
        let dir = tempfile::Builder::new()
            .prefix("fpm-saturation-")
            .tempdir()
            .expect("tempdir");
        // Workers run as the invoking user (root: `-R`); they write executions.log here.
        let docroot = dir.path().join("docroot");
        std::fs::create_dir_all(&docroot).expect("docroot");
        std::fs::write(docroot.join("sleep.php"), SLEEP_PHP).expect("sleep.php");
        std::fs::write(docroot.join("append.php"), APPEND_PHP).expect("append.php");
        let port = support::free_port();
        let pm_lines = match pm {
            Pm::Static(n) => format!("pm = static\npm.max_children = {n}\n"),
            Pm::Ondemand(n) => {
                format!("pm = ondemand\npm.max_children = {n}\npm.process_idle_timeout = 10s\n")
            }
        };
        let d = dir.path().display();
        // The status page is under the proxied prefix: php-fpm matches it against the
        // SCRIPT_NAME the proxy sends, and going through the proxy uses its pooled connections
        // (a direct connection would wait in the backlog while they hold every worker).
        let conf = format!(
            "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n\n\
             [app]\nlisten = 127.0.0.1:{port}\n{pm_lines}pm.status_path = /app/fpm-status\n\
             catch_workers_output = yes\n"
        );
        let conf_path = dir.path().join("php-fpm.conf");
        std::fs::write(&conf_path, conf).expect("php-fpm.conf");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let proc = support::start_php_fpm(bin, &conf_path, dir.path(), addr);
        Fpm {
            dir,
            docroot,
            port,
            proc,
        }
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("php-fpm.log")).unwrap_or_default();
        format!("{}--- php-fpm.log ---\n{log}", self.proc.output())
    }

    fn executions(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("executions.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A running `fcgi-proxy --config` with the default pool settings and one route to `fpm`.
struct Proxy {
    addr: SocketAddr,
    admin: SocketAddr,
    proc: Proc,
}

impl Proxy {
    fn start(fpm: &Fpm, name: &str) -> Proxy {
        let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", support::free_port())
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
        let mut proc = support::start_proxy_toml(&conf_path, &log, addr)
            .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
        if let Err(e) = proc.wait_ready(admin, Some("admin on")) {
            panic!("{name}: no admin listener: {e}");
        }
        Proxy { addr, admin, proc }
    }

    /// The one worker's entry of `/status` (pool counters: `open`, `idle`, `opened`, `reused`).
    async fn worker_status(&self) -> Result<Value, String> {
        let req = RawRequest::whole(format!(
            "GET /status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin
        ));
        let resp = tokio::time::timeout(HUNG, support::exchange(self.admin, &req))
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

fn counter(worker: &Value, key: &str) -> u64 {
    worker[key]
        .as_u64()
        .unwrap_or_else(|| panic!("/status worker has no counter {key:?}: {worker}"))
}

// ---------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------

/// What one request got: the response (or why there was none) and how long it took.
struct Outcome {
    what: String,
    result: Result<support::HttpResponse, String>,
    took: Duration,
}

impl Outcome {
    /// php-fpm's answer: status 200 and the script's own body.
    fn ok(&self, body_prefix: &str) -> bool {
        matches!(&self.result, Ok(r) if r.status == 200 && r.body_text().starts_with(body_prefix))
    }

    fn describe(&self) -> String {
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

fn get_sleep(front: SocketAddr, tag: &str) -> RawRequest {
    RawRequest::whole(format!(
        "GET /app/sleep.php?tag={tag} HTTP/1.1\r\nHost: {front}\r\nConnection: close\r\n\r\n"
    ))
}

fn post_append(front: SocketAddr, tag: &str) -> RawRequest {
    let body = format!("tag={tag}");
    RawRequest::whole(format!(
        "POST /app/append.php HTTP/1.1\r\nHost: {front}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// Sends one request on its own connection, giving up after [`HUNG`].
async fn timed(front: SocketAddr, what: String, req: RawRequest) -> Outcome {
    let t0 = Instant::now();
    let result = match tokio::time::timeout(HUNG, support::exchange(front, &req)).await {
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
async fn concurrently(reqs: Vec<(SocketAddr, String, RawRequest)>) -> Vec<Outcome> {
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
async fn burst(front: SocketAddr, label: &str, n: usize) -> Vec<Outcome> {
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
fn failures(outcomes: &[Outcome], body_prefix: &str, max: Option<Duration>) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| !o.ok(body_prefix) || max.is_some_and(|m| o.took > m))
        .map(Outcome::describe)
        .collect()
}

fn summary(outcomes: &[Outcome], body_prefix: &str) -> String {
    let ok = outcomes.iter().filter(|o| o.ok(body_prefix)).count();
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    format!("{ok}/{} 200, slowest {slowest:.0?}", outcomes.len())
}

/// Everything worth seeing when a test fails: the pool counters, the backend connections the
/// machine has open, and the logs.
async fn diagnostics(fpm: &Fpm, proxies: &[&Proxy]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ESTABLISHED connections to php-fpm's port: {}",
        support::established_to_port(fpm.port)
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
async fn conclude(test: &str, problems: &[String], fpm: &Fpm, proxies: &[&Proxy]) {
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

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

/// 6 concurrent requests of 200 ms on a static pool of 2, three rounds one after another: every
/// request gets php-fpm's 200, none later than 1.5 s (three waves of two take 0.6 s).
#[test]
fn static_pool_of_two_serves_three_rounds_of_six() {
    const TEST: &str = "static_pool_of_two_serves_three_rounds_of_six";
    let Some(bin) = php_fpm_bin(TEST) else { return };
    let _serial = serial();
    runtime().block_on(async {
        let fpm = Fpm::start(&bin, Pm::Static(2));
        let proxy = Proxy::start(&fpm, "proxy");
        let mut problems = Vec::new();
        for round in 0..3 {
            let outcomes = burst(proxy.addr, &format!("r{round}"), 6).await;
            eprintln!("{TEST}: round {round}: {}", summary(&outcomes, "ok"));
            problems.extend(failures(&outcomes, "ok", Some(Duration::from_millis(1500))));
        }
        conclude(TEST, &problems, &fpm, &[&proxy]).await;
    });
}

/// 9 concurrent requests on an ondemand pool of at most 3 workers, two rounds: 18 of 18 get
/// php-fpm's 200. The ondemand master starts at most one worker per wakeup of its listening
/// socket, so connections opened together can leave one in the backlog below
/// `pm.max_children` (docs/reference/backends.md): a proxy must not wait on it forever either.
#[test]
fn ondemand_pool_of_three_serves_two_rounds_of_nine() {
    const TEST: &str = "ondemand_pool_of_three_serves_two_rounds_of_nine";
    let Some(bin) = php_fpm_bin(TEST) else { return };
    let _serial = serial();
    runtime().block_on(async {
        let fpm = Fpm::start(&bin, Pm::Ondemand(3));
        let proxy = Proxy::start(&fpm, "proxy");
        let mut problems = Vec::new();
        for round in 0..2 {
            let outcomes = burst(proxy.addr, &format!("r{round}"), 9).await;
            eprintln!("{TEST}: round {round}: {}", summary(&outcomes, "ok"));
            problems.extend(failures(&outcomes, "ok", None));
        }
        conclude(TEST, &problems, &fpm, &[&proxy]).await;
    });
}

/// Two proxy processes with the same configuration (their own listen ports) in front of one
/// static pool of 2, 4 concurrent requests to each at the same time: all 8 get php-fpm's 200.
/// Neither proxy can see the other's connections, so neither may keep php-fpm's workers to
/// itself while the other's requests wait.
#[test]
fn two_proxies_share_a_static_pool_of_two() {
    const TEST: &str = "two_proxies_share_a_static_pool_of_two";
    let Some(bin) = php_fpm_bin(TEST) else { return };
    let _serial = serial();
    runtime().block_on(async {
        let fpm = Fpm::start(&bin, Pm::Static(2));
        let a = Proxy::start(&fpm, "proxy-a");
        let b = Proxy::start(&fpm, "proxy-b");
        let reqs = [("a", a.addr), ("b", b.addr)]
            .into_iter()
            .flat_map(|(name, front)| {
                (0..4).map(move |i| {
                    let tag = format!("{name}-{i}");
                    (
                        front,
                        format!("GET {tag} via proxy {name}"),
                        get_sleep(front, &tag),
                    )
                })
            })
            .collect();
        let outcomes = concurrently(reqs).await;
        eprintln!("{TEST}: {}", summary(&outcomes, "ok"));
        let problems = failures(&outcomes, "ok", None);
        conclude(TEST, &problems, &fpm, &[&a, &b]).await;
    });
}

/// 8 concurrent POSTs to a script that logs one line per execution, on a static pool of 2: all
/// get php-fpm's 200 and each request ran exactly once (the proxy must not send a request it
/// has given to php-fpm again, e.g. after giving up on a connection waiting for a worker).
#[test]
fn posts_on_a_saturated_pool_run_exactly_once() {
    const TEST: &str = "posts_on_a_saturated_pool_run_exactly_once";
    let Some(bin) = php_fpm_bin(TEST) else { return };
    let _serial = serial();
    runtime().block_on(async {
        let fpm = Fpm::start(&bin, Pm::Static(2));
        let proxy = Proxy::start(&fpm, "proxy");
        let tags: Vec<String> = (0..8).map(|i| format!("post-{i}")).collect();
        let reqs = tags
            .iter()
            .map(|tag| {
                (
                    proxy.addr,
                    format!("POST {tag}"),
                    post_append(proxy.addr, tag),
                )
            })
            .collect();
        let outcomes = concurrently(reqs).await;
        eprintln!("{TEST}: {}", summary(&outcomes, "done"));
        let mut problems = failures(&outcomes, "done", None);
        // A request the client gave up on may still be running or queued: let it finish (or
        // not) before the log is read, so a late second execution is seen.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let log = fpm.executions();
        eprintln!("{TEST}: executions.log has {} line(s)", log.len());
        if log.len() != tags.len() {
            problems.push(format!(
                "executions.log has {} lines, want {}: {log:?}",
                log.len(),
                tags.len()
            ));
        }
        for tag in &tags {
            let n = log.iter().filter(|l| *l == tag).count();
            if n != 1 {
                problems.push(format!("{tag} ran {n} times (want once)"));
            }
        }
        if let Some(stray) = log.iter().find(|l| !tags.contains(l)) {
            problems.push(format!(
                "executions.log has a line no request sent: {stray:?}"
            ));
        }
        conclude(TEST, &problems, &fpm, &[&proxy]).await;
    });
}

/// After a burst of 6 on a static pool of 2 and 1 s of quiet, 10 sequential requests: they
/// reuse pooled connections (`reused` grows by at least 9: every one after the first), and at
/// the end the proxy holds at most 2 connections to php-fpm, by its own count (`open`) and by
/// the kernel's (ESTABLISHED sockets to php-fpm's port, accepted or in the backlog).
#[test]
fn at_rest_the_proxy_holds_no_more_connections_than_workers() {
    const TEST: &str = "at_rest_the_proxy_holds_no_more_connections_than_workers";
    let Some(bin) = php_fpm_bin(TEST) else { return };
    let _serial = serial();
    runtime().block_on(async {
        let fpm = Fpm::start(&bin, Pm::Static(2));
        let proxy = Proxy::start(&fpm, "proxy");
        let outcomes = burst(proxy.addr, "burst", 6).await;
        eprintln!("{TEST}: burst: {}", summary(&outcomes, "ok"));
        let mut problems = failures(&outcomes, "ok", None);

        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = match proxy.worker_status().await {
            Ok(v) => v,
            Err(e) => panic!("{TEST}: {e}\n{}", diagnostics(&fpm, &[&proxy]).await),
        };
        let mut sequential = Vec::new();
        for i in 0..10 {
            let tag = format!("seq-{i}");
            sequential.push(
                timed(
                    proxy.addr,
                    format!("GET {tag}"),
                    get_sleep(proxy.addr, &tag),
                )
                .await,
            );
        }
        eprintln!("{TEST}: sequential: {}", summary(&sequential, "ok"));
        problems.extend(failures(&sequential, "ok", None));

        let after = match proxy.worker_status().await {
            Ok(v) => v,
            Err(e) => panic!("{TEST}: {e}\n{}", diagnostics(&fpm, &[&proxy]).await),
        };
        let reused = counter(&after, "reused").saturating_sub(counter(&before, "reused"));
        let opened = counter(&after, "opened").saturating_sub(counter(&before, "opened"));
        let open = counter(&after, "open");
        let established = support::established_to_port(fpm.port);
        eprintln!(
            "{TEST}: during the 10 sequential requests: reused +{reused}, opened +{opened}; \
             at the end: open {open}, ESTABLISHED to php-fpm {established}"
        );
        // php-fpm's own view, through the proxy (for the record: `accepted conn` counts
        // requests, not connections; `max listen queue` is the deepest backlog seen).
        let status = timed(
            proxy.addr,
            "GET /app/fpm-status".into(),
            RawRequest::whole(format!(
                "GET /app/fpm-status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                proxy.addr
            )),
        )
        .await;
        match &status.result {
            Ok(r) if r.status == 200 => {
                let keep = [
                    "accepted conn",
                    "listen queue",
                    "max listen queue",
                    "idle processes",
                ];
                let lines: Vec<String> = r
                    .body_text()
                    .lines()
                    .filter(|l| keep.iter().any(|k| l.starts_with(&format!("{k}:"))))
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                    .collect();
                eprintln!("{TEST}: php-fpm status: {}", lines.join(", "));
            }
            _ => eprintln!("{TEST}: php-fpm status page: {}", status.describe()),
        }

        if reused < 9 {
            problems.push(format!(
                "the 10 sequential requests reused {reused} pooled connection(s), want at least 9 \
                 (reuse is on)"
            ));
        }
        if open > 2 {
            problems.push(format!(
                "the proxy's /status says {open} backend connections open at rest, want at most 2 \
                 (pm.max_children)"
            ));
        }
        if established > 2 {
            problems.push(format!(
                "{established} ESTABLISHED connections to php-fpm's port at rest, want at most 2 \
                 (pm.max_children)"
            ));
        }
        conclude(TEST, &problems, &fpm, &[&proxy]).await;
    });
}
