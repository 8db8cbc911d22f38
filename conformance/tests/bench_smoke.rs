//! `cargo xtask bench --quick` end to end against fcgi-proxy and nginx: checks that it runs and
//! writes its results, not what the numbers are. Skips (with the reason printed) when wrk,
//! nginx, spawn-fcgi, cc or libfcgi-dev are missing, unless `FCGI_REQUIRE` (or `CI`) requires
//! them: then it fails (see the `programs` crate).

mod common;

use std::path::PathBuf;

use conformance::bench::{self, Options};
use conformance::peers::PeerKind;

/// `target/<profile>/fcgi-proxy` next to this test's `deps/` directory (`cargo test
/// --workspace` builds it).
fn proxy_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir.join("fcgi-proxy");
    bin.is_file().then_some(bin)
}

#[test]
fn quick_bench_runs_and_writes_results() {
    let missing = bench::missing_prerequisites();
    if !missing.is_empty() {
        for m in &missing {
            // `PROGRAM (apt-get install PACKAGE)`
            let (what, package) = m
                .strip_suffix(')')
                .and_then(|m| m.split_once(" (apt-get install "))
                .unwrap_or((m.as_str(), "?"));
            programs::missing(what, package);
        }
        return;
    }
    let bin = proxy_binary().unwrap_or_else(common::proxy_bin);
    let out = tempfile::tempdir().unwrap();
    let opts = Options {
        targets: vec![PeerKind::FcgiProxy, PeerKind::Nginx],
        proxy_bin: Some(bin),
        out_dir: out.path().to_path_buf(),
        ..Options::quick()
    };
    let report = bench::run(&opts).unwrap();
    println!("{}", report.render());

    let names: Vec<&str> = report.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "get-c4",
            "get-c64",
            "post64k-c16",
            "get-c16-noreuse",
            "get-c64-nolog",
            "idle-200"
        ]
    );
    for w in &report.workloads {
        assert_eq!(w.targets.len(), 2, "{}", w.name);
        for t in &w.targets {
            assert_eq!(t.runs.len(), 1, "{} {}", w.name, t.target);
            for r in &t.runs {
                assert!(r.error.is_none(), "{} {}: {:?}", w.name, t.target, r.error);
            }
        }
        let nginx = w.target("nginx").unwrap();
        assert_eq!(nginx.vs_nginx.peak_rss_mib, Some(1.0), "{}", w.name);
    }
    assert!(!report.goals.is_empty());
    assert!(report.configs.keys().any(|k| k.starts_with("fcgi-proxy")));
    let nolog = &report.configs["nginx (backend keep-alive, no access log)"];
    assert!(nolog.contains("access_log off;"), "{nolog}");
    let logged = &report.configs["nginx (backend keep-alive, access log)"];
    assert!(logged.contains("/access.log combined;"), "{logged}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json["workloads"].as_array().map(Vec::len), Some(6));
    assert!(
        json["machine"]["logical_cores"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(md.starts_with("machine: "), "{md}");
}
