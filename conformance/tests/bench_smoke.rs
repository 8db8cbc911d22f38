//! `cargo xtask bench --quick` end to end against fcgi-proxy and nginx, every workload (the
//! Unix-socket and php-fpm ones included): checks that it runs and writes its results, not what
//! the numbers are. Skips (with the reason printed) when wrk, nginx, spawn-fcgi, cc or
//! libfcgi-dev are missing, and leaves out `fpm-c16` when php-fpm 8.2 is, unless `FCGI_REQUIRE`
//! (or `CI`) requires them: then it fails (see the `programs` crate).

mod common;

use std::path::PathBuf;

use conformance::bench::{self, Options, fpm};
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
    let php_fpm = programs::require_program(fpm::PHP_FPM, fpm::PACKAGE).is_some();
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
    let mut want = vec![
        "get-c4",
        "get-c64",
        "get-c256",
        "post64k-c16",
        "post64k-c64",
        "get-c16-noreuse",
        "unix-c64",
        "fpm-c16",
        "get-c64-nolog",
        "static-4k-c64",
        "static-1m-c16",
        "idle-200",
    ];
    if !php_fpm {
        want.retain(|w| *w != "fpm-c16");
        assert!(
            report.meta["skipped"].contains("fpm-c16"),
            "{:?}",
            report.meta
        );
    }
    assert_eq!(names, want);
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
    assert!(report.goals.iter().any(|g| g.workload == "unix-c64"));
    assert!(report.configs.keys().any(|k| k.starts_with("fcgi-proxy")));
    // The Unix-socket configs name the socket; logs on and off as the workloads say.
    let unix = &report.configs["nginx (libfcgi unix, backend keep-alive, access log)"];
    assert!(unix.contains("server unix:/"), "{unix}");
    let ours = &report.configs["fcgi-proxy (libfcgi unix, backend keep-alive, access log)"];
    assert!(ours.contains("target = \"unix:/"), "{ours}");
    let nolog = &report.configs["nginx (libfcgi tcp, backend keep-alive, no access log)"];
    assert!(nolog.contains("access_log off;"), "{nolog}");
    let logged = &report.configs["nginx (libfcgi tcp, backend keep-alive, access log)"];
    assert!(logged.contains("/access.log combined;"), "{logged}");
    // The static workloads: files, no backend.
    let ours = &report.configs["fcgi-proxy (static files, access log)"];
    assert!(ours.contains("[[site]]\nroot = \"/"), "{ours}");
    let files = &report.configs["nginx (static files, access log)"];
    assert!(
        files.contains("sendfile on;") && !files.contains("fastcgi_pass"),
        "{files}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json["workloads"].as_array().map(Vec::len), Some(want.len()));
    assert!(
        json["machine"]["logical_cores"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(md.starts_with("machine: "), "{md}");
}
