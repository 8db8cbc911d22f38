//! Routing: ProxyPass prefix matching (alias_match), exclusions, ProxyPassMatch with and
//! without `$N`, nocanon, and the request-derived data that must never pick a backend.

mod cgi_support;

use cgi_support::{Req, get, run};
use fcgi_proxy::config::apache;
use fcgi_proxy::route::{Backend, Router, alias_match};
use fcgi_proxy::uri::{UriOptions, parse_target};
use proptest::prelude::*;

/// The routing part of an Apache 2.4.71 session on this machine (s4.conf in the notes).
const OBSERVED: &str = "Listen 80\n\
    ProxyPass /myapp/ fcgi://127.0.0.1:27001/\n\
    ProxyPass /nos fcgi://127.0.0.1:27001/n\n\
    ProxyPass /ex/no !\n\
    ProxyPass /ex fcgi://127.0.0.1:27001/e\n";

fn observed() -> fcgi_proxy::config::Config {
    apache::parse(OBSERVED, "s4.conf").unwrap().0
}

#[test]
fn prefix_matching_as_observed_on_apache() {
    let cfg = observed();
    let sf =
        |t: &str| run(&cfg, &Req::get(t)).map(|p| get(&p, "SCRIPT_FILENAME").unwrap().to_string());
    let ok = |s: &str| Ok(s.to_string());
    assert_eq!(sf("/myapp"), Err(404));
    assert_eq!(sf("/nos"), ok("proxy:fcgi://127.0.0.1:27001/n"));
    assert_eq!(sf("/nos2"), Err(404));
    assert_eq!(sf("/nos/"), ok("proxy:fcgi://127.0.0.1:27001/n/"));
    assert_eq!(sf("/nos//q"), ok("proxy:fcgi://127.0.0.1:27001/n/q"));
    assert_eq!(sf("/ex/no/x"), Err(404));
    assert_eq!(sf("/ex/nox"), ok("proxy:fcgi://127.0.0.1:27001/e/nox"));
    assert_eq!(sf("/ex/n"), ok("proxy:fcgi://127.0.0.1:27001/e/n"));
    assert_eq!(sf("//myapp//x"), ok("proxy:fcgi://127.0.0.1:27001/x"));
    assert_eq!(sf("/myapp/x/.."), ok("proxy:fcgi://127.0.0.1:27001/"));
    assert_eq!(sf("/myapp/a;b=c"), ok("proxy:fcgi://127.0.0.1:27001/a;b=c"));
    // Apache sends these %-encoded (`/%25`, `/%5Cx`, `/%C3%A9`); to an FPM backend the proxy
    // sends the name as on disk (README, "Where it deliberately differs").
    assert_eq!(sf("/myapp/%25"), ok("proxy:fcgi://127.0.0.1:27001/%"));
    assert_eq!(sf("/myapp/\\x"), ok("proxy:fcgi://127.0.0.1:27001/\\x"));
    assert_eq!(
        sf("/myapp/%c3%a9"),
        ok("proxy:fcgi://127.0.0.1:27001/\u{e9}")
    );
    assert_eq!(sf("/myapp/%7e%41"), ok("proxy:fcgi://127.0.0.1:27001/~A"));
}

#[test]
fn target_without_trailing_slash_is_a_500_like_apache() {
    // Observed: ProxyPass /t/ fcgi://127.0.0.1:27001 + "/t/x" → "…:27001x" → 500.
    let (cfg, _) = apache::parse(
        "Listen 80\nProxyPass /t/ fcgi://127.0.0.1:27001\n",
        "t.conf",
    )
    .unwrap();
    assert_eq!(run(&cfg, &Req::get("/t/x")).map(|_| ()), Err(500));
    let p = run(&cfg, &Req::get("/t/")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:27001/")
    );
}

#[test]
fn regex_routes_as_observed() {
    let (cfg, _) = apache::parse(
        "Listen 80\n\
         ProxyPassMatch \"^/pm/(.*\\.php)(/.*)?$\" \"fcgi://127.0.0.1:27001/var/www/$1\"\n\
         ProxyPassMatch \"^/pn/.*\\.php(/.*)?$\" \"fcgi://127.0.0.1:27001/var/www/\"\n\
         ProxyPassMatch \"^/rx/(.*)$\" \"fcgi://127.0.0.1:27001/r/$1\" nocanon\n\
         ProxyPassMatch \"^/(.*\\.php(/.*)?)$\" \"unix:/run/php.sock|fcgi://localhost/var/www/\"\n",
        "t.conf",
    )
    .unwrap();
    let p = run(&cfg, &Req::get("/pm/a/b.php/c/d?q")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:27001/var/www/a/b.php")
    );
    assert_eq!(get(&p, "SCRIPT_NAME"), Some("/pm/a/b.php/c/d"));
    // Apache: `…/var/www/a%20b.php`, which php-fpm does not find.
    let p = run(&cfg, &Req::get("/pm/a%20b.php?q")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:27001/var/www/a b.php")
    );
    // No $ in the target: the whole URI is appended (double slash).
    let p = run(&cfg, &Req::get("/pn/a/b.php/c")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:27001/var/www//pn/a/b.php/c")
    );
    // nocanon regex: the raw target (with query) is substituted; '?' → 403 for FPM.
    assert_eq!(run(&cfg, &Req::get("/rx/a%20b?q")).map(|_| ()), Err(403));
    let p = run(&cfg, &Req::get("/rx/a%20b")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:27001/r/a%20b")
    );
    let p = run(&cfg, &Req::get("/foo.php")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://localhost/var/www//foo.php")
    );
}

#[test]
fn request_data_never_selects_a_backend() {
    // CVE-2021-40438 / S10 / S16: unix: and URLs in the path, query or Host stay data.
    let (cfg, _) =
        apache::parse("Listen 80\nProxyPass / fcgi://127.0.0.1:9000/\n", "t.conf").unwrap();
    let router = Router::new(&cfg).unwrap();
    let o = UriOptions {
        max_len: 1 << 16,
        ..UriOptions::default()
    };
    for t in [
        format!("/x.php?unix:{}|fcgi://127.0.0.1:2/", "A".repeat(5000)),
        "/unix:AAAA|fcgi://127.0.0.1:2/x.php".to_string(),
        "/balancer://x/".to_string(),
    ] {
        let u = parse_target(&t, &o).unwrap();
        let m = router.route(&u).unwrap();
        assert_eq!(m.backend, Backend::Worker);
        assert!(m.filename.starts_with(b"fcgi://127.0.0.1:9000/"), "{t}");
        assert!(
            !m.filename.windows(5).any(|w| w == b"?unix"),
            "the query is never part of it"
        );
    }
    let p = run(
        &cfg,
        &Req::get("/unix:AAAA|fcgi://127.0.0.1:2/x.php").headers(&[("Host", "127.0.0.1:2")]),
    )
    .unwrap();
    // Data, as on disk (Apache: `…/unix:AAAA%7Cfcgi:/…`).
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:9000/unix:AAAA|fcgi:/127.0.0.1:2/x.php")
    );
}

#[test]
fn first_match_wins_in_config_order() {
    let (cfg, _) = apache::parse(
        "Listen 80\nProxyPass / fcgi://a:1/\nProxyPass /special/ fcgi://b:1/\n",
        "t.conf",
    )
    .unwrap();
    let p = run(&cfg, &Req::get("/special/x")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://a:1/special/x")
    );
}

fn simple_path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-c]{1,3}", 1..4).prop_map(|v| format!("/{}", v.join("/")))
}

proptest! {
    #[test]
    fn alias_match_never_panics(u in proptest::collection::vec(any::<u8>(), 0..20), a in proptest::collection::vec(any::<u8>(), 0..20)) {
        let n = alias_match(&u, &a);
        prop_assert!(n <= u.len());
    }

    #[test]
    fn alias_match_is_segment_prefix_without_double_slashes(u in simple_path(), a in simple_path(), slash in any::<bool>(), extra in any::<bool>()) {
        let a = if slash { format!("{a}/") } else { a };
        let u = if extra { format!("{u}/") } else { u };
        let expected = u.starts_with(&a)
            && (a.ends_with('/') || u.len() == a.len() || u.as_bytes()[a.len()] == b'/');
        let n = alias_match(u.as_bytes(), a.as_bytes());
        prop_assert_eq!(n > 0, expected, "uri {} alias {}", u, a);
        if expected {
            prop_assert_eq!(n, a.len());
        }
    }

    #[test]
    fn runs_of_slashes_match_each_other(u in simple_path(), k in 1usize..4) {
        let doubled = u.replace('/', &"/".repeat(k));
        prop_assert_eq!(alias_match(doubled.as_bytes(), u.as_bytes()), doubled.len());
        prop_assert_eq!(alias_match(u.as_bytes(), doubled.as_bytes()), u.len());
    }
}
