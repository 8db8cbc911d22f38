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
//! Skipped with a message when php-fpm8.2 is not installed, unless `FCGI_REQUIRE` (or `CI`)
//! requires it: then it fails.

mod support;

use std::time::Duration;

use support::RawRequest;
use support::fpm::{
    Fpm, Pm, Proxy, burst, conclude, concurrently, counter, diagnostics, failures, get_sleep,
    php_fpm_bin, post_append, runtime, serial, summary, timed,
};

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

/// 6 concurrent requests of 200 ms on a static pool of 2, three rounds one after another: every
/// request gets php-fpm's 200, none later than 1.5 s (three waves of two take 0.6 s).
#[test]
fn static_pool_of_two_serves_three_rounds_of_six() {
    const TEST: &str = "static_pool_of_two_serves_three_rounds_of_six";
    let Some(bin) = php_fpm_bin() else { return };
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
    let Some(bin) = php_fpm_bin() else { return };
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
    let Some(bin) = php_fpm_bin() else { return };
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
    let Some(bin) = php_fpm_bin() else { return };
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
    let Some(bin) = php_fpm_bin() else { return };
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
