//! The proxy with its default configuration in front of a real php-fpm 8.2 pool that is reloaded
//! or restarted while clients keep sending requests: the clients must not see it.
//!
//! - A graceful reload (SIGUSR2 to the master) re-executes the master under the same PID;
//!   it keeps its listening socket, the old workers finish and exit and new ones start. Idle
//!   connections the proxy pools to old workers are closed under it, and with `pm = dynamic`
//!   only `pm.start_servers` workers exist afterwards. Every request sent during reloads must
//!   get php-fpm's 200, and every POST answered 200 must have run exactly once.
//! - `pm.max_requests` recycles a worker (it closes its connection) after that many requests.
//! - A restart (master stopped, 1 s of nothing on the port, a new master on the same port) may
//!   cost the requests sent while nothing listens, but only as the proxy's 503, and the first
//!   200 must come as soon as the new php-fpm accepts connections.
//!
//! Each test starts its own php-fpm and proxy processes on free loopback ports, runs alone, has
//! a wall-time bound, and bounds every network wait: a hung request is counted, not waited for.
//! Skipped with a message when php-fpm8.2 is not installed, unless `FCGI_REQUIRE` (or `CI`)
//! requires it: then it fails.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::fpm::{
    Fpm, FpmConf, HUNG, Pm, Proxy, conclude, php_fpm_bin, post_append_with, runtime, serial, timed,
};
use support::{KeepAlive, RawRequest, Signal};

/// Each test's whole run must end within this.
const WALL: Duration = Duration::from_secs(60);

/// The load tests: how long the clients send, and the reloads during it.
const LOAD_FOR: Duration = Duration::from_secs(5);
const RELOADS: u32 = 5;
const FIRST_RELOAD_AT: Duration = Duration::from_millis(500);
const RELOAD_EVERY: Duration = Duration::from_millis(800);

/// php-fpm's graceful reload lets running requests finish only with a `process_control_timeout`:
/// with its default of 0 the master follows the workers' SIGQUIT with a SIGTERM at once
/// (`fpm_pctl_action_next`), which kills the requests running at that moment. Observed here
/// with the default: 10 of 52 POSTs of 200 ms cut short by the 5 reloads, each answered 502 by
/// the proxy (php-fpm reset the connection mid-request) after the script had run; no proxy can
/// hide that, as the request ran and must not be sent again. The pools here therefore set it,
/// as a deployment that reloads under traffic has to.
const GRACEFUL: &str = "process_control_timeout = 10s\n";

/// A pool with a graceful reload ([`GRACEFUL`]) and `pool_extra` lines.
fn graceful(pm: Pm, pool_extra: &str) -> FpmConf {
    FpmConf {
        pm,
        global_extra: GRACEFUL.into(),
        pool_extra: pool_extra.into(),
    }
}

/// `pm = dynamic` as a small production pool would have it.
const DYNAMIC: Pm = Pm::Dynamic {
    max_children: 5,
    start_servers: 2,
    min_spare: 1,
    max_spare: 3,
};

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// What a client task sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    /// GET hello.php (answers `hello`).
    Hello,
    /// POST a unique tag to append.php (logs it, sleeps 200 ms, answers `done TAG`).
    Append,
}

/// One request as the client saw it.
#[derive(Debug, Clone)]
struct Record {
    client: usize,
    /// The tag of a POST.
    tag: Option<String>,
    /// When it was sent and when its answer (or the error) came, since the run started.
    sent: Duration,
    done: Duration,
    /// The status, or the transport error (connect, write, read, closed, hung).
    result: Result<u16, String>,
    /// The body is the script's own answer.
    body_ok: bool,
}

impl Record {
    fn ok(&self) -> bool {
        self.result == Ok(200) && self.body_ok
    }

    fn describe(&self) -> String {
        let what = match &self.tag {
            Some(t) => format!("client {} POST {t}", self.client),
            None => format!("client {} GET hello", self.client),
        };
        let result = match &self.result {
            Ok(s) if self.body_ok => format!("{s}"),
            Ok(s) => format!("{s} (not the script's body)"),
            Err(e) => format!("error: {e}"),
        };
        format!(
            "{what} sent at {:.3}s: {result} after {:.0?}",
            self.sent.as_secs_f64(),
            self.done - self.sent
        )
    }
}

/// Sends requests back to back on a keep-alive HTTP/1.1 connection (a new one when the proxy
/// closed it or an error left it unusable), pausing `pause` between them, until `until` or
/// until `stop` is set.
async fn client(
    front: SocketAddr,
    id: usize,
    send: Send,
    t0: Instant,
    until: Instant,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<Record> {
    let mut records = Vec::new();
    let mut conn: Option<KeepAlive> = None;
    let mut n = 0u32;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        n += 1;
        let sent = t0.elapsed();
        let (req, tag, body) = match send {
            Send::Hello => (
                RawRequest::whole(format!(
                    "GET /app/hello.php HTTP/1.1\r\nHost: {front}\r\n\r\n"
                )),
                None,
                "hello\n".to_string(),
            ),
            Send::Append => {
                let tag = format!("c{id}-{n}");
                (
                    post_append_with(front, &tag, ""),
                    Some(tag.clone()),
                    format!("done {tag}\n"),
                )
            }
        };
        let result = async {
            if conn.is_none() {
                let c = tokio::time::timeout(HUNG, KeepAlive::connect(front))
                    .await
                    .map_err(|_| format!("connect: no answer within {HUNG:?} (hung)"))??;
                conn = Some(c);
            }
            let c = conn.as_mut().expect("connected");
            tokio::time::timeout(HUNG, c.send(&req))
                .await
                .map_err(|_| format!("no response within {HUNG:?} (hung)"))?
        }
        .await;
        if !(result.is_ok() && conn.as_ref().is_some_and(KeepAlive::is_open)) {
            conn = None;
        }
        records.push(Record {
            client: id,
            tag,
            sent,
            done: t0.elapsed(),
            body_ok: matches!(&result, Ok(r) if r.body_text() == body),
            result: result.map(|r| r.status),
        });
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    records
}

/// Counts by status (`200`, `503`, ...) and by transport error.
fn tally(records: &[Record]) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for r in records {
        let key = match &r.result {
            Ok(s) if r.body_ok || *s != 200 => s.to_string(),
            Ok(s) => format!("{s} with another body"),
            Err(e) => format!("error {}", e.split(':').next().unwrap_or(e)),
        };
        *t.entry(key).or_insert(0) += 1;
    }
    t
}

fn latency_summary(records: &[Record]) -> String {
    let mut took: Vec<Duration> = records.iter().map(|r| r.done - r.sent).collect();
    took.sort();
    if took.is_empty() {
        return "no requests".into();
    }
    let pct = |p: f64| took[((took.len() - 1) as f64 * p).round() as usize];
    format!(
        "latency p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        pct(0.5),
        pct(0.99),
        took[took.len() - 1]
    )
}

/// The pool counters worth reporting from `/status`.
async fn pool_line(proxy: &Proxy) -> String {
    match proxy.worker_status().await {
        Ok(w) => [
            "opened",
            "reused",
            "open",
            "idle",
            "accepted",
            "pending",
            "limit",
            "saturations",
            "yields",
            "probes",
            "closed_by_backend",
            "probes_accepted",
            "waits",
            "acquire_timeouts",
        ]
        .iter()
        .map(|k| format!("{k} {}", w[*k]))
        .collect::<Vec<_>>()
        .join(", "),
        Err(e) => e,
    }
}

/// The whole proxy log's lines other than access lines for a 200: warnings, errors, retries,
/// and the access lines of other statuses.
fn proxy_warnings(proxy: &Proxy) -> Vec<String> {
    std::fs::read_to_string(proxy.proc.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| !(l.contains(" INFO access: ") && l.contains("\" 200 ")))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reloads under load
// ---------------------------------------------------------------------------------------------

/// 4 clients (those given by `sends`) for [`LOAD_FOR`] with [`RELOADS`] graceful reloads: no
/// request may get anything but php-fpm's 200, and every POST answered 200 ran exactly once.
fn reloads_under_load(test: &str, conf: FpmConf, sends: [Send; 4]) {
    let Some(bin) = php_fpm_bin() else { return };
    let _serial = serial();
    runtime().block_on(async {
        let run = async {
            let mut fpm = Fpm::start(&bin, conf.clone());
            let proxy = Proxy::start(&fpm, "proxy");
            let master = fpm.pid();
            let t0 = Instant::now();
            let until = t0 + LOAD_FOR;
            let tasks: Vec<_> = sends
                .iter()
                .enumerate()
                .map(|(id, &send)| {
                    let never = Arc::new(AtomicBool::new(false));
                    tokio::spawn(client(
                        proxy.addr,
                        id,
                        send,
                        t0,
                        until,
                        Duration::ZERO,
                        never,
                    ))
                })
                .collect();

            // The clients run on the runtime's workers; this thread only signals.
            let mut problems = Vec::new();
            let mut reloads = Vec::new();
            for i in 0..RELOADS {
                let at = t0 + FIRST_RELOAD_AT + RELOAD_EVERY * i;
                tokio::time::sleep_until(at.into()).await;
                match fpm.reload() {
                    Ok(()) => reloads.push(t0.elapsed()),
                    Err(e) => problems.push(format!("reload {}: {e}", i + 1)),
                }
            }
            let mut records = Vec::new();
            for t in tasks {
                records.extend(t.await.expect("client task"));
            }
            if fpm.pid() != master {
                problems.push(format!(
                    "php-fpm's master changed PID: {master} -> {}",
                    fpm.pid()
                ));
            }

            let tally = tally(&records);
            eprintln!(
                "{test}: {} requests in {:.1?} by {} clients ({sends:?}): {tally:?}; {}",
                records.len(),
                LOAD_FOR,
                sends.len(),
                latency_summary(&records)
            );
            for (i, send) in sends.iter().enumerate() {
                let mine: Vec<Record> = records.iter().filter(|r| r.client == i).cloned().collect();
                eprintln!(
                    "{test}:   client {i} ({send:?}): {} requests, {:?}, {}",
                    mine.len(),
                    self::tally(&mine),
                    latency_summary(&mine)
                );
            }
            eprintln!(
                "{test}: USR2 sent at {:?} s; php-fpm.log: {} \"Reloading in progress\", {} \
                 \"ready to handle connections\"",
                reloads
                    .iter()
                    .map(|t| format!("{:.2}", t.as_secs_f64()))
                    .collect::<Vec<_>>(),
                fpm.log_lines("Reloading in progress").len(),
                fpm.log_lines("ready to handle connections").len()
            );
            eprintln!("{test}: proxy pool: {}", pool_line(&proxy).await);
            for w in proxy_warnings(&proxy) {
                eprintln!("{test}: proxy log: {w}");
            }

            // How often each POST's tag ran (read after the stragglers had time to finish).
            let runs: BTreeMap<String, usize> = if sends.contains(&Send::Append) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut runs = BTreeMap::new();
                for line in fpm.executions() {
                    *runs.entry(line).or_insert(0) += 1;
                }
                runs
            } else {
                BTreeMap::new()
            };
            // A POST that php-fpm reset on a reused connection after answering FCGI_GET_VALUES
            // (a worker leaving on the reload) cannot be proven unread, so it is not sent again:
            // its 502 is the right answer when the script never ran it, or ran it once and its
            // worker left before the answer was out (the answer is lost; a resend would run it
            // twice).
            let declined = |r: &Record| {
                r.result == Ok(502)
                    && r.tag
                        .as_deref()
                        .is_some_and(|t| runs.get(t).copied().unwrap_or(0) <= 1)
            };
            let n_declined = records.iter().filter(|r| declined(r)).count();
            for r in records.iter().filter(|r| declined(r)) {
                eprintln!("{test}: declined, ran at most once: {}", r.describe());
            }
            // The race needs a reload to meet a POST on a kept connection: rare, never routine.
            if n_declined > 2 {
                problems.push(format!(
                    "{n_declined} POSTs declined with 502 (want at most 2: the race is rare)"
                ));
            }
            let bad: Vec<&Record> = records.iter().filter(|r| !r.ok() && !declined(r)).collect();
            if !bad.is_empty() {
                problems.push(format!(
                    "{} of {} requests did not get php-fpm's 200 (want 0): {tally:?}",
                    bad.len(),
                    records.len()
                ));
                problems.extend(bad.iter().take(20).map(|r| r.describe()));
            }
            if records.iter().filter(|r| r.ok()).count() < 20 * sends.len() {
                problems.push(format!(
                    "only {} requests answered 200 in {LOAD_FOR:?}: the clients hardly ran",
                    records.iter().filter(|r| r.ok()).count()
                ));
            }

            if sends.contains(&Send::Append) {
                // A request cut short may still be running or queued: it had 500 ms to finish
                // (or not) before the log was read above, so that a late second execution is
                // seen.
                let posts: Vec<&Record> = records.iter().filter(|r| r.tag.is_some()).collect();
                let answered: Vec<&str> = posts
                    .iter()
                    .filter(|r| r.ok())
                    .filter_map(|r| r.tag.as_deref())
                    .collect();
                eprintln!(
                    "{test}: {} POSTs, {} answered 200; executions.log has {} lines, {} tags",
                    posts.len(),
                    answered.len(),
                    runs.values().sum::<usize>(),
                    runs.len()
                );
                for tag in &answered {
                    let n = runs.get(*tag).copied().unwrap_or(0);
                    if n != 1 {
                        problems.push(format!("POST {tag} answered 200 but ran {n} times"));
                    }
                }
                for (tag, n) in &runs {
                    if *n > 1 {
                        problems.push(format!("POST {tag} ran {n} times"));
                    }
                    if !posts.iter().any(|r| r.tag.as_deref() == Some(tag.as_str())) {
                        problems.push(format!("executions.log has a tag no POST sent: {tag:?}"));
                    }
                }
            }
            conclude(test, &problems, &fpm, &[&proxy]).await;
        };
        if tokio::time::timeout(WALL, run).await.is_err() {
            panic!("{test}: did not finish within {WALL:?}");
        }
    });
}

/// `pm = dynamic` (5 / 2 / 1 / 3): after each reload only 2 workers exist and php-fpm grows
/// the pool again while 4 clients send GETs back to back.
#[test]
fn dynamic_pool_reloads_under_load() {
    reloads_under_load(
        "dynamic_pool_reloads_under_load",
        graceful(DYNAMIC, ""),
        [Send::Hello; 4],
    );
}

/// `pm = static` 4 with `pm.max_requests = 5`: besides the reloads, every worker closes its
/// connection after 5 requests.
///
/// Observed: fails in about half the runs with 1 or 2 GETs of ~6000 answered 502, each sent
/// within a few ms of a USR2. The proxy log shows the request failing on a reused connection
/// (php-fpm reset it, nothing read back), the retry on a fresh connection then also reset
/// ("read from backend: Connection reset by peer", not reused, so not retried again). The same
/// load without reloads, or the reloads without `pm.max_requests`, gave no error in a dozen
/// runs each. [`posts_during_reloads_with_max_requests`] shows the requests so reset never ran.
#[test]
fn static_pool_with_max_requests_reloads_under_load() {
    reloads_under_load(
        "static_pool_with_max_requests_reloads_under_load",
        graceful(Pm::Static(4), "pm.max_requests = 5\n"),
        [Send::Hello; 4],
    );
}

/// `pm = dynamic`, 2 clients sending GETs and 2 sending POSTs that log a unique tag (and take
/// 200 ms, so reloads catch some running): every POST answered 200 ran exactly once, none twice.
/// Every GET gets 200; a POST may get 502 only if it never ran: when a worker leaving on the
/// reload answers FCGI_GET_VALUES on a reused connection and then resets it, the proxy cannot
/// prove the POST unread and does not send it twice (seen about once in a few hundred POSTs on a
/// loaded machine).
#[test]
fn posts_during_reloads_run_exactly_once() {
    reloads_under_load(
        "posts_during_reloads_run_exactly_once",
        graceful(DYNAMIC, ""),
        [Send::Hello, Send::Append, Send::Hello, Send::Append],
    );
}

// ---------------------------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------------------------

/// How soon after php-fpm accepts connections again the first 200 must come.
const BACK_WITHIN: Duration = Duration::from_millis(100);

/// One client, a request every 20 ms; php-fpm stopped (SIGQUIT, waited for), 1 s later started
/// again on the same port. Only the requests sent between the stop and the moment the new
/// php-fpm accepts connections may fail, each with the proxy's 503 (not a hang, a 502 or a
/// 504), and the first 200 comes within [`BACK_WITHIN`] of php-fpm accepting.
#[test]
fn restart_costs_only_503s_while_down() {
    const TEST: &str = "restart_costs_only_503s_while_down";
    let Some(bin) = php_fpm_bin() else { return };
    let _serial = serial();
    runtime().block_on(async {
        let run = async {
            let mut fpm = Fpm::start(&bin, graceful(DYNAMIC, ""));
            let proxy = Proxy::start(&fpm, "proxy");
            let t0 = Instant::now();
            // Stopped once php-fpm is back for a while; `until` bounds a restart gone wrong.
            let stop = Arc::new(AtomicBool::new(false));
            let task = tokio::spawn(client(
                proxy.addr,
                0,
                Send::Hello,
                t0,
                t0 + Duration::from_secs(30),
                Duration::from_millis(20),
                stop.clone(),
            ));

            let mut problems = Vec::new();
            tokio::time::sleep(Duration::from_secs(1)).await;
            // The blocking waits below are on this thread; the client runs on the workers.
            let stop_at = t0.elapsed();
            let exited_at = match fpm.stop_master(Signal::SIGQUIT, Duration::from_secs(10)) {
                Ok(_) => t0.elapsed(),
                Err(e) => panic!("{TEST}: {e}\n{}", fpm.log()),
            };
            let refused = !fpm.accepts_connect(Duration::from_millis(100));
            tokio::time::sleep(Duration::from_secs(1)).await;
            let spawn_at = t0.elapsed();
            fpm.spawn_again();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut polls = 0u32;
            let back_at = loop {
                polls += 1;
                if fpm.accepts_connect(Duration::from_millis(50)) {
                    break t0.elapsed();
                }
                if let Some(status) = fpm.proc.exited() {
                    panic!("{TEST}: the new php-fpm exited ({status})\n{}", fpm.log());
                }
                if Instant::now() > deadline {
                    panic!("{TEST}: the new php-fpm did not listen within 10 s\n{}", fpm.log());
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            // One request of its own on a fresh client connection at once, whatever the
            // client's 20 ms rhythm: php-fpm binds before its workers run, so this one may
            // wait in its backlog for the first worker.
            let probe = timed(
                proxy.addr,
                "GET hello.php as soon as php-fpm accepts".into(),
                RawRequest::whole(format!(
                    "GET /app/hello.php HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    proxy.addr
                )),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stop.store(true, Ordering::Relaxed);
            let records = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the client ends within 10 s")
                .expect("client task");

            let ms = |d: Duration| format!("{:.3}s", d.as_secs_f64());
            let tally = tally(&records);
            eprintln!(
                "{TEST}: {} requests: {tally:?}; {}",
                records.len(),
                latency_summary(&records)
            );
            eprintln!(
                "{TEST}: SIGQUIT at {}, master exited at {} (port refused after: {refused}), \
                 new master started at {}, port accepted at {} ({polls} polls, {:.1?} after the \
                 start)",
                ms(stop_at),
                ms(exited_at),
                ms(spawn_at),
                ms(back_at),
                back_at - spawn_at
            );
            let first_fail = records.iter().find(|r| !r.ok());
            let last_fail = records.iter().rev().find(|r| !r.ok());
            let first_200_after = records
                .iter()
                .filter(|r| r.ok() && r.done > exited_at)
                .min_by_key(|r| r.done);
            if let (Some(f), Some(l)) = (first_fail, last_fail) {
                eprintln!(
                    "{TEST}: first non-200 sent at {}, last non-200 sent at {} (answered at {})",
                    ms(f.sent),
                    ms(l.sent),
                    ms(l.done)
                );
            }
            match first_200_after {
                Some(r) => eprintln!(
                    "{TEST}: first 200 of the client after the master exited: sent at {}, answered at {} = {:+.1} ms \
                     after the port accepted",
                    ms(r.sent),
                    ms(r.done),
                    (r.done.as_secs_f64() - back_at.as_secs_f64()) * 1000.0
                ),
                None => problems.push("no 200 at all after the restart".into()),
            }
            eprintln!("{TEST}: proxy pool: {}", pool_line(&proxy).await);
            for w in proxy_warnings(&proxy) {
                eprintln!("{TEST}: proxy log: {w}");
            }

            for r in records.iter().filter(|r| !r.ok()) {
                if r.sent < stop_at || r.sent > back_at {
                    problems.push(format!(
                        "outside the down window ({} .. {}): {}",
                        ms(stop_at),
                        ms(back_at),
                        r.describe()
                    ));
                } else if r.result != Ok(503) {
                    problems.push(format!("not the proxy's 503: {}", r.describe()));
                }
            }
            eprintln!(
                "{TEST}: the request sent as soon as php-fpm accepted: {}",
                probe.describe()
            );
            if !probe.ok("hello") || probe.took > BACK_WITHIN {
                problems.push(format!(
                    "the request sent as soon as php-fpm accepted connections did not get a 200 \
                     within {BACK_WITHIN:?}: {}",
                    probe.describe()
                ));
            }
            if let Some(r) = first_200_after
                && r.done > back_at + BACK_WITHIN
            {
                let mut s = String::new();
                let _ = write!(
                    s,
                    "the first 200 came {:.1?} after php-fpm accepted connections again, want at \
                     most {BACK_WITHIN:?}: {}",
                    r.done - back_at,
                    r.describe()
                );
                problems.push(s);
            }
            conclude(TEST, &problems, &fpm, &[&proxy]).await;
        };
        if tokio::time::timeout(WALL, run).await.is_err() {
            panic!("{TEST}: did not finish within {WALL:?}");
        }
    });
}

/// Like [`posts_during_reloads_run_exactly_once`] with `pm = static` 4 and `pm.max_requests =
/// 5`, all 4 clients sending POSTs. At a reload php-fpm's idle children exit as a POST arrives on
/// their kept connection and reset it unread (about 10 of 114 POSTs per run). The proxy asks
/// FCGI_GET_VALUES ahead of a POST on a pooled connection, so nothing back proves no worker
/// read it, and sends it again: every POST gets 200 and runs once.
#[test]
fn posts_during_reloads_with_max_requests() {
    reloads_under_load(
        "posts_during_reloads_with_max_requests",
        graceful(Pm::Static(4), "pm.max_requests = 5\n"),
        [Send::Append; 4],
    );
}
