//! `--backend php-fpm`: a saturation scenario against our proxy with real php-fpm 8.2 behind it
//! instead of fcgi-mock. Checks the machinery (the pool is started with the scenario's capacity,
//! the script is found through the proxy's SCRIPT_FILENAME, every execution is logged and
//! judged, wire-level expectations are named as not judged), not the verdict: the scenario's
//! outcome is the proxy's business.
//!
//! Skipped (with a message) when php-fpm8.2 is not installed, unless CI is set: then it fails.

mod common;

use conformance::real::{self, BackendKind, Target};
use conformance::report::Verdict;
use conformance::scenario::Scenario;

/// saturation/reuse-capacity-one-504: one php-fpm worker, reuse on, a warm pooled connection,
/// then two clients at once.
const SCENARIO: &str = r#"
id = "saturation/reuse-capacity-one-504"
description = "A single-worker backend, reuse on, two clients after a warm-up request."
level = "MUST"

[requirement]
quote = "New connections from other children or threads then sit in the backend's listen backlog."
source = "apache.md"
section = "5"

[topology]
[[topology.route]]
path = "/app/"
backend = "app"
reuse = true
timeout = "2s"

[[backend]]
name = "app"
capacity = 1
overflow = "hold"
[backend.script.default]
status = 200
body = [{ data = "served", delay_ms = 200 }]

[[client]]
name = "warm"
[[client.request]]
target = "/app/index.php"

[[client]]
name = "c1"
start = "300ms"
[[client.request]]
target = "/app/index.php"

[[client]]
name = "c2"
start = "300ms"
[[client.request]]
target = "/app/index.php"

[[expect.request]]
requests = "warm.1"
status = [200]
body_contains = "served"

[[expect.statuses]]
requests = "c*"
counts = { "200" = 1, "504" = 1 }

[[expect.backend]]
backend = "app"
connections = 2
requests = 2
"#;

#[test]
fn a_saturation_scenario_runs_against_ours_with_php_fpm() {
    if let Some(why) = BackendKind::PhpFpm.missing() {
        if std::env::var_os("CI").is_some() {
            panic!("CI must run the php-fpm backend: {why}");
        }
        eprintln!("SKIPPED real_backends: {why}");
        return;
    }
    let s = Scenario::parse(SCENARIO, "reuse-capacity-one-504.toml").expect("scenario");
    let mut opts = common::real_options();
    opts.backend = BackendKind::PhpFpm;
    let o = real::run(&s, Target::Ours, &opts);
    assert_ne!(o.verdict, Verdict::Skip, "{}", o.detail);
    let run = o.run.unwrap_or_else(|| panic!("no run: {}", o.detail));
    // Every request got an answer from the proxy (the verdict on which one is the scenario's).
    for r in &run.requests {
        let r = r.as_ref().expect("every request resolved");
        assert!(r.status.is_some(), "{}: {:?}", r.label, r.error);
    }
    let warm = run.requests[0].as_ref().expect("warm.1");
    assert_eq!(warm.status, Some(200));
    assert_eq!(String::from_utf8_lossy(&warm.body), "served");
    // The execution log: php-fpm ran the warm-up once, in its one worker, as tagged.
    let app = &run.backends[0];
    let executed: Vec<_> = app
        .incarnations
        .iter()
        .flat_map(|i| &i.journal.requests)
        .collect();
    assert!(!executed.is_empty() && executed.len() <= 3, "{executed:?}");
    let tags: Vec<String> = executed
        .iter()
        .map(|e| e.param("HTTP_X_REQUEST_TAG").unwrap_or_default())
        .collect();
    assert_eq!(tags[0], "warm.1", "{tags:?}");
    let mut unique = tags.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), tags.len(), "a request ran twice: {tags:?}");
    let pids: Vec<String> = executed
        .iter()
        .map(|e| e.param("PID").unwrap_or_default())
        .collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "one worker: {pids:?}");
    // Judged: statuses and counts; named as not judged: the connection count.
    assert!(
        o.detail
            .contains("not judged with php-fpm (the FastCGI wire is not recorded): connections"),
        "{}",
        o.detail
    );
    eprintln!("ours with php-fpm: {} {}", o.verdict.as_str(), o.detail);
}

#[test]
fn wire_only_scenarios_are_skipped_with_real_backends() {
    let text = SCENARIO
        .replace(
            "[[expect.request]]\nrequests = \"warm.1\"\nstatus = [200]\nbody_contains = \"served\"\n",
            "",
        )
        .replace(
            "[[expect.statuses]]\nrequests = \"c*\"\ncounts = { \"200\" = 1, \"504\" = 1 }\n",
            "",
        )
        .replace("requests = 2\n", "");
    let s = Scenario::parse(&text, "wire-only.toml").expect("scenario");
    let mut opts = common::real_options();
    opts.backend = BackendKind::Libfcgi;
    if BackendKind::Libfcgi.missing().is_some() {
        return;
    }
    let o = real::run(&s, Target::Ours, &opts);
    assert_eq!(o.verdict, Verdict::Skip, "{}", o.detail);
    assert!(o.detail.contains("connections"), "{}", o.detail);
}
