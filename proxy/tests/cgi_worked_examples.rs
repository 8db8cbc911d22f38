//! The worked examples of docs/reference/apache.md §3.7 (A, B, and C with `nocanon`) for every
//! `proxy-fcgi-pathinfo` mode, both backend types, as tables. Expected values are Apache
//! 2.4.71's (see the comments on C and `full`).

mod cgi_support;

use cgi_support::{FakeFs, Outcome, Req, get, render, run_with_fs, toml_config};
use fcgi_proxy::config::Config;

/// `ProxyPass "/myapp/" "<target>"` on example.com:80, DocumentRoot /var/www/html, the mode set
/// with `SetEnvIf Request_URI . proxy-fcgi-pathinfo=<mode>`.
fn config(target: &str, mode: Option<&str>, generic: bool, nocanon: bool) -> Config {
    let mut t = String::from(
        "listen = [\"198.51.100.1:80\"]\nserver_name = \"example.com\"\ndocument_root = \"/var/www/html\"\n",
    );
    if let Some(m) = mode {
        t.push_str(&format!(
            "[[setenvif]]\nattribute = \"Request_URI\"\nregex = \".\"\nset = [\"proxy-fcgi-pathinfo={m}\"]\n"
        ));
    }
    t.push_str(&format!(
        "[[route]]\npath = \"/myapp/\"\ntarget = \"{target}\"\n"
    ));
    if generic {
        t.push_str("backend_type = \"generic\"\n");
    }
    if nocanon {
        t.push_str("nocanon = true\n");
    }
    toml_config(&t)
}

struct Row {
    mode: Option<&'static str>,
    generic: bool,
    script_filename: &'static str,
    script_name: &'static str,
    path_info: Option<&'static str>,
    path_translated: Option<&'static str>,
}

const fn row(
    mode: Option<&'static str>,
    generic: bool,
    script_filename: &'static str,
    script_name: &'static str,
    path_info: Option<&'static str>,
    path_translated: Option<&'static str>,
) -> Row {
    Row {
        mode,
        generic,
        script_filename,
        script_name,
        path_info,
        path_translated,
    }
}

fn check(target: &str, req: &Req, rows: &[Row], fs: &FakeFs, nocanon: bool) {
    for r in rows {
        let cfg = config(target, r.mode, r.generic, nocanon);
        let out: Outcome = run_with_fs(&cfg, req, fs);
        let p = out.unwrap_or_else(|s| panic!("{:?} generic={} → {s}", r.mode, r.generic));
        let ctx = format!(
            "target={target} request={} mode={:?} generic={}\n{}",
            req.target,
            r.mode,
            r.generic,
            render(&p)
        );
        assert_eq!(get(&p, "SCRIPT_FILENAME"), Some(r.script_filename), "{ctx}");
        assert_eq!(get(&p, "SCRIPT_NAME"), Some(r.script_name), "{ctx}");
        assert_eq!(get(&p, "PATH_INFO"), r.path_info, "{ctx}");
        assert_eq!(get(&p, "PATH_TRANSLATED"), r.path_translated, "{ctx}");
        assert_eq!(get(&p, "REQUEST_URI"), Some(req.target.as_str()), "{ctx}");
        assert_eq!(get(&p, "DOCUMENT_ROOT"), Some("/var/www/html"), "{ctx}");
        assert_eq!(
            get(&p, "CONTEXT_DOCUMENT_ROOT"),
            Some("/var/www/html"),
            "{ctx}"
        );
        assert_eq!(get(&p, "CONTEXT_PREFIX"), Some(""), "{ctx}");
        assert_eq!(get(&p, "proxy-fcgi-pathinfo"), r.mode, "{ctx}");
    }
}

const A_FPM: &str = "proxy:fcgi://localhost:4000/foo.php/extra/path";
const A_GEN: &str = "/foo.php/extra/path";

#[test]
fn example_a_every_mode() {
    let req = Req::get("/myapp/foo.php/extra/path?x=1");
    let pt_full = Some("/var/www/html/foo.php/extra/path");
    let pt_dot = Some("/var/www/html/extra/path");
    let mut rows = Vec::new();
    for generic in [false, true] {
        let sf = if generic { A_GEN } else { A_FPM };
        rows.extend([
            row(None, generic, sf, "/myapp/foo.php/extra/path", None, None),
            row(
                Some("1"),
                generic,
                sf,
                "/myapp",
                Some("/foo.php/extra/path"),
                pt_full,
            ),
            row(
                Some("yes"),
                generic,
                sf,
                "/myapp",
                Some("/foo.php/extra/path"),
                pt_full,
            ),
            row(
                Some("unescape"),
                generic,
                sf,
                "/myapp",
                Some("/foo.php/extra/path"),
                pt_full,
            ),
            // SCRIPT_FILENAME keeps the path-info tail (Apache's truncation is dead code).
            row(
                Some("first-dot"),
                generic,
                sf,
                "/myapp/foo.php",
                Some("/extra/path"),
                pt_dot,
            ),
            row(
                Some("last-dot"),
                generic,
                sf,
                "/myapp/foo.php",
                Some("/extra/path"),
                pt_dot,
            ),
            row(
                Some("First-Dot"),
                generic,
                sf,
                "/myapp/foo.php",
                Some("/extra/path"),
                pt_dot,
            ),
            // Nothing on disk: full falls back to the default.
            row(
                Some("full"),
                generic,
                sf,
                "/myapp/foo.php/extra/path",
                None,
                None,
            ),
        ]);
    }
    check(
        "fcgi://localhost:4000/",
        &req,
        &rows,
        &FakeFs::default(),
        false,
    );
    let q = run_with_fs(
        &config("fcgi://localhost:4000/", None, false, false),
        &req,
        &FakeFs::default(),
    )
    .unwrap();
    assert_eq!(get(&q, "QUERY_STRING"), Some("x=1"));
}

#[test]
fn example_a_full_maps_to_the_filesystem() {
    // /var/www/html/foo.php exists: walked under DOCUMENT_ROOT (after "/foo.php" at the root
    // fails); SCRIPT_FILENAME is the real file in both modes (no proxy: prefix).
    let fs = FakeFs::with_files(&["/var/www/html/foo.php"]);
    let req = Req::get("/myapp/foo.php/extra/path?x=1");
    let rows = [false, true].map(|generic| {
        row(
            Some("full"),
            generic,
            "/var/www/html/foo.php",
            "/myapp/foo.php",
            Some("/extra/path"),
            Some("/var/www/html/extra/path"),
        )
    });
    check("fcgi://localhost:4000/", &req, &rows, &fs, false);
    // A directory on the way is not a script: fall back.
    let fs = FakeFs {
        files: vec![],
        dirs: vec!["/var/www/html/foo.php".into()],
    };
    let rows = [row(
        Some("full"),
        false,
        A_FPM,
        "/myapp/foo.php/extra/path",
        None,
        None,
    )];
    check("fcgi://localhost:4000/", &req, &rows, &fs, false);
    // The backend path is walked from the filesystem root first.
    let fs = FakeFs::with_files(&["/srv/app/foo.php"]);
    let rows = [row(
        Some("full"),
        false,
        "/srv/app/foo.php",
        "/myapp/foo.php",
        Some("/extra/path"),
        Some("/var/www/html/extra/path"),
    )];
    check("fcgi://localhost:4000/srv/app/", &req, &rows, &fs, false);
    // Exactly the file: no PATH_INFO.
    let req = Req::get("/myapp/foo.php");
    let fs = FakeFs::with_files(&["/var/www/html/foo.php"]);
    let rows = [row(
        Some("full"),
        false,
        "/var/www/html/foo.php",
        "/myapp/foo.php",
        None,
        None,
    )];
    check("fcgi://localhost:4000/", &req, &rows, &fs, false);
    // Trailing slash after the file: PATH_INFO "/".
    let req = Req::get("/myapp/foo.php/");
    let rows = [row(
        Some("full"),
        false,
        "/var/www/html/foo.php",
        "/myapp/foo.php",
        Some("/"),
        Some("/var/www/html/"),
    )];
    check("fcgi://localhost:4000/", &req, &rows, &fs, false);
}

#[test]
fn example_a_with_backend_path_and_port_8000() {
    let req = Req::get("/myapp/foo.php/extra/path?x=1");
    let sf = "proxy:fcgi://localhost:4000/app/foo.php/extra/path";
    let rows = [
        row(None, false, sf, "/myapp/foo.php/extra/path", None, None),
        row(
            None,
            true,
            "/app/foo.php/extra/path",
            "/myapp/foo.php/extra/path",
            None,
            None,
        ),
        // Backwards match stops at 'y' vs '/', then advances to the next '/'.
        row(
            Some("1"),
            false,
            sf,
            "/myapp",
            Some("/app/foo.php/extra/path"),
            Some("/var/www/html/app/foo.php/extra/path"),
        ),
        row(
            Some("first-dot"),
            false,
            sf,
            "/myapp/foo.php",
            Some("/extra/path"),
            Some("/var/www/html/extra/path"),
        ),
    ];
    check(
        "fcgi://localhost:4000/app/",
        &req,
        &rows,
        &FakeFs::default(),
        false,
    );
    let rows = [row(
        None,
        false,
        "proxy:fcgi://localhost/foo.php/extra/path",
        "/myapp/foo.php/extra/path",
        None,
        None,
    )];
    check(
        "fcgi://LocalHost:8000/",
        &req,
        &rows,
        &FakeFs::default(),
        false,
    );
}

#[test]
fn example_b_every_mode() {
    let req = Req::get("/myapp/a%20b");
    let mut rows = Vec::new();
    for generic in [false, true] {
        // Apache sends `proxy:fcgi://localhost:4000/a%20b` to FPM backends too; the proxy sends
        // the name as on disk there (README, "Where it deliberately differs").
        let sf = if generic {
            "/a%20b"
        } else {
            "proxy:fcgi://localhost:4000/a b"
        };
        rows.extend([
            row(None, generic, sf, "/myapp/a b", None, None),
            // PATH_INFO stays encoded; find_path_info mismatches: SCRIPT_NAME = whole uri.
            row(
                Some("1"),
                generic,
                sf,
                "/myapp/a b",
                Some("/a%20b"),
                Some("/var/www/html/a%20b"),
            ),
            row(
                Some("unescape"),
                generic,
                sf,
                "/myapp",
                Some("/a b"),
                Some("/var/www/html/a b"),
            ),
            row(Some("first-dot"), generic, sf, "/myapp/a b", None, None),
            row(Some("last-dot"), generic, sf, "/myapp/a b", None, None),
            row(Some("full"), generic, sf, "/myapp/a b", None, None),
        ]);
    }
    check(
        "fcgi://localhost:4000/",
        &req,
        &rows,
        &FakeFs::default(),
        false,
    );
    let p = run_with_fs(
        &config("fcgi://localhost:4000/", None, false, false),
        &req,
        &FakeFs::default(),
    )
    .unwrap();
    assert_eq!(
        get(&p, "QUERY_STRING"),
        Some(""),
        "QUERY_STRING is present and empty"
    );
    // full finds "/var/www/html/a b" (decoded) when it exists.
    let fs = FakeFs::with_files(&["/var/www/html/a b"]);
    let rows = [row(
        Some("full"),
        false,
        "/var/www/html/a b",
        "/myapp/a b",
        None,
        None,
    )];
    check("fcgi://localhost:4000/", &req, &rows, &fs, false);
}

#[test]
fn example_c_nocanon() {
    // Apache 2.4.71 (observed): with nocanon the raw remainder is passed; a raw '?' is refused
    // with 403 (AH10414) when the backend may be FPM (docs/reference/apache.md §3.7).
    let req = Req::get("/myapp/foo.php/extra/path?x=1");
    let fpm = config("fcgi://localhost:4000/", None, false, true);
    assert_eq!(run_with_fs(&fpm, &req, &FakeFs::default()), Err(403));
    // GENERIC strips the trailing ?x=1 (equal to the query) from SCRIPT_FILENAME.
    let rows = [
        row(
            None,
            true,
            "/foo.php/extra/path",
            "/myapp/foo.php/extra/path",
            None,
            None,
        ),
        row(
            Some("1"),
            true,
            "/foo.php/extra/path",
            "/myapp/foo.php/extra/path",
            Some("/foo.php/extra/path?x=1"),
            Some("/var/www/html/foo.php/extra/path?x=1"),
        ),
        // PATH_INFO ends in "?x=1" so find_path_info finds no common tail (observed).
        row(
            Some("first-dot"),
            true,
            "/foo.php/extra/path",
            "/myapp/foo.php/extra/path",
            Some("/extra/path?x=1"),
            Some("/var/www/html/extra/path?x=1"),
        ),
    ];
    check(
        "fcgi://localhost:4000/",
        &req,
        &rows,
        &FakeFs::default(),
        true,
    );
    // B with nocanon: the raw %20 is passed through unchanged.
    let req = Req::get("/myapp/a%20b");
    let rows = [
        row(
            None,
            false,
            "proxy:fcgi://localhost:4000/a%20b",
            "/myapp/a b",
            None,
            None,
        ),
        row(None, true, "/a%20b", "/myapp/a b", None, None),
        row(
            Some("unescape"),
            false,
            "proxy:fcgi://localhost:4000/a%20b",
            "/myapp",
            Some("/a b"),
            Some("/var/www/html/a b"),
        ),
    ];
    check(
        "fcgi://localhost:4000/",
        &req,
        &rows,
        &FakeFs::default(),
        true,
    );
}

#[test]
fn nocanon_is_dropped_when_raw_and_decoded_match_differently() {
    // Observed: "/myapp//a%2e/b?q" → AH01136 "ignoring unsafe nocanon": canonical encoding.
    let cfg = config("fcgi://127.0.0.1:27001/", None, false, true);
    let p = run_with_fs(&cfg, &Req::get("/myapp//a%2e/b?q"), &FakeFs::default()).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:27001/a./b")
    );
    assert_eq!(get(&p, "SCRIPT_NAME"), Some("/myapp/a./b"));
}

#[test]
fn example_a_full_param_list_snapshot() {
    let cfg = config("fcgi://localhost:4000/", None, false, false);
    let req = Req::get("/myapp/foo.php/extra/path?x=1")
        .header("User-Agent", "probe")
        .header("Accept", "*/*");
    let p = run_with_fs(&cfg, &req, &FakeFs::default()).unwrap();
    insta::assert_snapshot!("example_a_default_fpm", render(&p));
    let cfg = config("fcgi://localhost:4000/", Some("first-dot"), true, false);
    let p = run_with_fs(&cfg, &req, &FakeFs::default()).unwrap();
    insta::assert_snapshot!("example_a_first_dot_generic", render(&p));
}
