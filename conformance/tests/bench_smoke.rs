//! `cargo xtask bench --quick` end to end against fcgi-proxy and nginx, every workload (the
//! Unix-socket, php-fpm, HTTPS and HTTP/2 ones included): checks that it runs and writes its
//! results, not what the numbers are. Skips (with the reason printed) when wrk, nginx,
//! spawn-fcgi, cc or libfcgi-dev are missing, and leaves out `fpm-c16` and `site-fpm-c16`
//! when php-fpm 8.2 is, the TLS workloads without openssl and `h2-get-c16` without h2load
//! (nghttp2-client), unless `FCGI_REQUIRE` (or `CI`) requires them: then it fails (see the
//! `programs` crate).

mod common;

use std::path::PathBuf;

use conformance::bench::{self, Options, fpm, h2load, tls};
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
    let missing = bench::missing_prerequisites(&[PeerKind::FcgiProxy, PeerKind::Nginx]);
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
    let openssl = programs::require_program(tls::OPENSSL, "openssl").is_some();
    let h2load = programs::require_program(h2load::H2LOAD, h2load::PACKAGE).is_some();
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
        "site-fpm-c16",
        "get-c64-nolog",
        "static-4k-c64",
        "static-1m-c16",
        "https-get-c16",
        "h2-get-c16",
        "idle-200",
    ];
    if !php_fpm {
        want.retain(|w| !w.ends_with("fpm-c16"));
        assert!(
            report.meta["skipped"].contains("site-fpm-c16"),
            "{:?}",
            report.meta
        );
    }
    if !openssl {
        want.retain(|w| *w != "https-get-c16");
    }
    if !openssl || !h2load {
        want.retain(|w| *w != "h2-get-c16");
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

    // The PHP site: the script looked up on disk by each target before php-fpm gets it.
    if php_fpm {
        let site = "php-fpm, PHP site, default backend reuse, access log";
        let ours = &report.configs[&format!("fcgi-proxy ({site})")];
        assert!(
            ours.contains("[[site]]\nroot = \"/") && ours.contains("php = \"fcgi://127.0.0.1:"),
            "{ours}"
        );
        let nginx = &report.configs[&format!("nginx ({site})")];
        assert!(
            nginx.contains("try_files $fastcgi_script_name =404;"),
            "{nginx}"
        );
    }

    // The TLS workloads: both targets listen with TLS and the check went over the workload's
    // protocol (h2 negotiated by ALPN for h2-get-c16, none for wrk's HTTPS).
    if openssl {
        let tls = "libfcgi tcp, backend keep-alive, access log, TLS (h2 and http/1.1 by ALPN)";
        let nginx = &report.configs[&format!("nginx ({tls})")];
        assert!(nginx.contains(" ssl http2;"), "{nginx}");
        let ours = &report.configs[&format!("fcgi-proxy ({tls})")];
        assert!(ours.contains("[[listener]]"), "{ours}");
        for w in report
            .workloads
            .iter()
            .filter(|w| w.name.contains("-get-c16"))
        {
            let alpn = if w.name.starts_with("h2") {
                "ALPN h2"
            } else {
                "ALPN none"
            };
            for t in &w.targets {
                let n = t.runs[0].tls.as_deref().unwrap_or_default();
                assert!(
                    n.starts_with("TLSv1.3 TLS_AES_128_GCM_SHA256,") && n.ends_with(alpn),
                    "{n}"
                );
            }
        }
        assert!(out.path().join("tls/cert.pem").is_file());
    }

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
