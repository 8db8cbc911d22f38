//! `--backend php-fpm`: a saturation scenario against our proxy with real php-fpm 8.2 behind it
//! instead of fcgi-mock. Checks the machinery (the pool is started with the scenario's capacity,
//! the script is found through the proxy's SCRIPT_FILENAME, every execution is logged and
//! judged, wire-level expectations are named as not judged), not the verdict: the scenario's
//! outcome is the proxy's business.
//!
//! A missing program skips the test with a message, or fails it when `FCGI_REQUIRE` (or `CI`)
//! requires it (see the `programs` crate).

mod common;

use std::path::Path;

use conformance::real::{self, BackendKind, Target, backend};
use conformance::report::Verdict;
use conformance::scenario::Scenario;

/// A scenario file of the suite, as users run it.
fn scenario(path: &str) -> Scenario {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    Scenario::parse(&text, path).unwrap_or_else(|e| panic!("{e}"))
}

/// The backend's programs are there; or the test is skipped, or fails when they are required.
fn require(kind: BackendKind) -> bool {
    kind.programs()
        .iter()
        .all(|(program, package)| programs::require_program(program, package).is_some())
        && (kind != BackendKind::Libfcgi
            || programs::require_file(Path::new(backend::FCGI_HEADER), "libfcgi-dev"))
}

/// saturation/reuse-trap-avoided with real php-fpm (one worker, reuse on, a warm pooled
/// connection, then two clients at once): our proxy passes it, and the execution log shows each
/// request ran once, in the one worker.
#[test]
fn the_reuse_trap_is_avoided_with_real_php_fpm() {
    if !require(BackendKind::PhpFpm) {
        return;
    }
    let s = scenario("scenarios/saturation/reuse-trap-avoided.toml");
    let mut opts = common::real_options();
    opts.backend = BackendKind::PhpFpm;
    let o = real::run(&s, Target::Ours, &opts);
    assert_eq!(o.verdict, Verdict::Pass, "{}", o.detail);
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
    assert_eq!(executed.len(), 3, "{executed:?}");
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
    eprintln!("ours with php-fpm: {} {}", o.verdict.as_str(), o.detail);
}

#[test]
fn wire_only_scenarios_are_skipped_with_real_backends() {
    if !require(BackendKind::Libfcgi) {
        return;
    }
    // Only expectations a real backend cannot give: the FastCGI wire.
    let mut s = scenario("scenarios/saturation/reuse-trap-avoided.toml");
    s.expect.requests.clear();
    s.expect.statuses.clear();
    for b in &mut s.expect.backends {
        b.requests = None;
        b.connections = Some(conformance::scenario::Count::Exactly(2));
    }
    let mut opts = common::real_options();
    opts.backend = BackendKind::Libfcgi;
    let o = real::run(&s, Target::Ours, &opts);
    assert_eq!(o.verdict, Verdict::Skip, "{}", o.detail);
    assert!(o.detail.contains("connections"), "{}", o.detail);
}
