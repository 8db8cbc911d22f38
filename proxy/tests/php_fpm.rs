//! Real php-fpm behind `fcgi-proxy --apache`: what PHP's `$_SERVER` ends up with (SCRIPT_NAME,
//! PATH_INFO, QUERY_STRING, REQUEST_METHOD) and whether request bodies arrive, over TCP and over
//! php-fpm's Unix socket. The expected values are the ones Apache httpd + php-fpm give (the
//! httpd-tests rows of docs/reference/apache.md §3.11); `apache_gives_php_the_expected_values`
//! checks them against real Apache with the same front-end config, so the expectations cannot drift
//! from the reference.
//!
//! Skipped (with a message) only when php-fpm8.2 is not installed; the Apache check also needs
//! apache2. A missing program fails the test instead when `FCGI_REQUIRE` (or `CI`) requires it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Proc, RawRequest};

const FPM_TEMPLATE: &str = include_str!("fixtures/php-fpm.conf.in");
const HTTPD_TEMPLATE: &str = include_str!("fixtures/php-httpd.conf.in");
const TEST_PHP: &str = include_str!("fixtures/php/sub/test.php");

/// An expected `$_SERVER`-derived value.
#[derive(Debug, Clone, Copy)]
enum Want {
    Str(&'static str),
    /// The docroot (temp dir) followed by this.
    UnderDocroot(&'static str),
    Null,
    /// A JSON value, written as JSON text.
    Json(&'static str),
}

#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    Whole(&'static str),
    /// Sent after the head, part by part, 300 ms apart: a slow client.
    Slow(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    line: &'static str,
    headers: &'static [&'static str],
    body: Body,
    status: u16,
    /// Checked fields of the JSON test.php prints (200 answers only).
    want: &'static [(&'static str, Want)],
    /// Where real Apache is known to give something else (the proxy must not): the fields and
    /// values Apache gives instead, with the reason.
    apache_instead: Option<(&'static [(&'static str, Want)], &'static str)>,
    /// Where real Apache answers with another status (php-fpm's 404 "File not found.").
    apache_status: Option<u16>,
}

const FORM: &[&str] = &[
    "Content-Type: application/x-www-form-urlencoded",
    "Content-Length: 11",
];
const CHUNKED_FORM: &[&str] = &[
    "Content-Type: application/x-www-form-urlencoded",
    "Transfer-Encoding: chunked",
];
const SLOW_CHUNKS: &[&str] = &["5\r\nhello\r\n", "6\r\n=world\r\n", "0\r\n\r\n"];

const PATHINFO_WANT: &[(&str, Want)] = &[
    ("SCRIPT_NAME", Want::Str("/app/sub/test.php")),
    ("PATH_INFO", Want::Str("/foo/bar")),
    ("PATH_TRANSLATED", Want::UnderDocroot("/foo/bar")),
    ("QUERY_STRING", Want::Str("q")),
    ("REQUEST_METHOD", Want::Str("GET")),
    ("REQUEST_URI", Want::Str("/app/sub/test.php/foo/bar?q")),
    ("SCRIPT_FILENAME", Want::UnderDocroot("/sub/test.php")),
    ("body", Want::Str("")),
];

const POSTED_WANT: &[(&str, Want)] = &[
    ("SCRIPT_NAME", Want::Str("/app/sub/test.php")),
    ("PATH_INFO", Want::Null),
    ("REQUEST_METHOD", Want::Str("POST")),
    ("CONTENT_LENGTH", Want::Str("11")),
    ("POST", Want::Json(r#"{"hello":"world"}"#)),
    ("body", Want::Str("hello=world")),
];

const CASES: &[Case] = &[
    Case {
        name: "tcp_script_with_path_info_and_query",
        line: "GET /app/sub/test.php/foo/bar?q HTTP/1.1",
        headers: &[],
        body: Body::None,
        status: 200,
        want: PATHINFO_WANT,
        apache_instead: None,
        apache_status: None,
    },
    Case {
        name: "tcp_script_alone",
        line: "GET /app/sub/test.php HTTP/1.1",
        headers: &[],
        body: Body::None,
        status: 200,
        want: &[
            ("SCRIPT_NAME", Want::Str("/app/sub/test.php")),
            ("PATH_INFO", Want::Null),
            ("PATH_TRANSLATED", Want::Null),
            ("QUERY_STRING", Want::Str("")),
            ("REQUEST_METHOD", Want::Str("GET")),
            ("SCRIPT_FILENAME", Want::UnderDocroot("/sub/test.php")),
        ],
        apache_instead: None,
        apache_status: None,
    },
    Case {
        name: "tcp_query_decoding",
        line: "GET /app/sub/test.php?a=%20b&c=d+e HTTP/1.1",
        headers: &[],
        body: Body::None,
        status: 200,
        want: &[
            ("SCRIPT_NAME", Want::Str("/app/sub/test.php")),
            ("QUERY_STRING", Want::Str("a=%20b&c=d+e")),
            ("GET", Want::Json(r#"{"a":" b","c":"d e"}"#)),
        ],
        apache_instead: None,
        apache_status: None,
    },
    Case {
        // php-fpm 8.2 derives PATH_INFO from SCRIPT_FILENAME. Apache decodes %2E (unreserved)
        // while normalising but sends %20 re-encoded there, so PHP sees `%20`; the proxy sends
        // the path as on disk (README, "Where it deliberately differs").
        name: "tcp_encoded_path_info",
        line: "GET /app/sub/test.php/a%20b/c%2Ed?x=%41 HTTP/1.1",
        headers: &[],
        body: Body::None,
        status: 200,
        want: &[
            ("SCRIPT_NAME", Want::Str("/app/sub/test.php")),
            ("PATH_INFO", Want::Str("/a b/c.d")),
            ("QUERY_STRING", Want::Str("x=%41")),
            ("GET", Want::Json(r#"{"x":"A"}"#)),
        ],
        apache_instead: Some((
            &[("PATH_INFO", Want::Str("/a%20b/c.d"))],
            "Apache sends SCRIPT_FILENAME %-encoded",
        )),
        apache_status: None,
    },
    Case {
        // A script whose name has a space: Apache sends `a%20b.php` and php-fpm finds no such
        // file ("File not found."); the proxy sends the name as on disk and the script runs.
        name: "tcp_script_name_with_space",
        line: "GET /app/sub/a%20b.php HTTP/1.1",
        headers: &[],
        body: Body::None,
        status: 200,
        want: &[("SCRIPT_FILENAME", Want::UnderDocroot("/sub/a b.php"))],
        apache_instead: None,
        apache_status: Some(404),
    },
    Case {
        name: "unix_script_name_not_ascii",
        line: "GET /appu/sub/caf%C3%A9.php HTTP/1.1",
        headers: &[],
        body: Body::None,
        status: 200,
        want: &[("SCRIPT_FILENAME", Want::UnderDocroot("/sub/caf\u{e9}.php"))],
        apache_instead: None,
        apache_status: Some(404),
    },
    Case {
        name: "tcp_post_form",
        line: "POST /app/sub/test.php HTTP/1.1",
        headers: FORM,
        body: Body::Whole("hello=world"),
        status: 200,
        want: POSTED_WANT,
        apache_instead: None,
        apache_status: None,
    },
    Case {
        name: "tcp_post_chunked_in_one_write",
        line: "POST /app/sub/test.php HTTP/1.1",
        headers: CHUNKED_FORM,
        body: Body::Whole("5\r\nhello\r\n6\r\n=world\r\n0\r\n\r\n"),
        status: 200,
        want: POSTED_WANT,
        apache_instead: None,
        apache_status: None,
    },
    Case {
        name: "tcp_post_chunked_slowly",
        line: "POST /app/sub/test.php HTTP/1.1",
        headers: CHUNKED_FORM,
        body: Body::Slow(SLOW_CHUNKS),
        status: 200,
        want: POSTED_WANT,
        apache_instead: Some((
            &[
                ("CONTENT_LENGTH", Want::Null),
                ("POST", Want::Json("[]")),
                ("body", Want::Str("")),
            ],
            "Apache streams a chunked body it has not fully received without CONTENT_LENGTH, so \
             PHP reads nothing (PR 57087)",
        )),
        apache_status: None,
    },
    Case {
        name: "tcp_put_raw_body",
        line: "PUT /app/sub/test.php HTTP/1.1",
        headers: &[
            "Content-Type: application/octet-stream",
            "Content-Length: 8",
        ],
        body: Body::Whole("raw body"),
        status: 200,
        want: &[
            ("REQUEST_METHOD", Want::Str("PUT")),
            ("CONTENT_LENGTH", Want::Str("8")),
            ("CONTENT_TYPE", Want::Str("application/octet-stream")),
            ("body", Want::Str("raw body")),
        ],
        apache_instead: None,
        apache_status: None,
    },
    Case {
        // php-fpm answers "Primary script unknown" with 404 "File not found."
        name: "tcp_missing_script",
        line: "GET /app/sub/missing.php HTTP/1.1",
        headers: &[],
        body: Body::None,
        status: 404,
        want: &[],
        apache_instead: None,
        apache_status: None,
    },
    Case {
        name: "unix_script_with_path_info_and_query",
        line: "GET /appu/sub/test.php/foo/bar?q HTTP/1.1",
        headers: &[],
        body: Body::None,
        status: 200,
        want: &[
            ("SCRIPT_NAME", Want::Str("/appu/sub/test.php")),
            ("PATH_INFO", Want::Str("/foo/bar")),
            ("PATH_TRANSLATED", Want::UnderDocroot("/foo/bar")),
            ("QUERY_STRING", Want::Str("q")),
            ("REQUEST_METHOD", Want::Str("GET")),
            ("SCRIPT_FILENAME", Want::UnderDocroot("/sub/test.php")),
        ],
        apache_instead: None,
        apache_status: None,
    },
    Case {
        name: "unix_script_alone",
        line: "GET /appu/sub/test.php HTTP/1.1",
        headers: &[],
        body: Body::None,
        status: 200,
        want: &[
            ("SCRIPT_NAME", Want::Str("/appu/sub/test.php")),
            ("PATH_INFO", Want::Null),
            ("PATH_TRANSLATED", Want::Null),
            ("QUERY_STRING", Want::Str("")),
        ],
        apache_instead: None,
        apache_status: None,
    },
    Case {
        name: "unix_post_form",
        line: "POST /appu/sub/test.php HTTP/1.1",
        headers: FORM,
        body: Body::Whole("hello=world"),
        status: 200,
        want: &[
            ("SCRIPT_NAME", Want::Str("/appu/sub/test.php")),
            ("REQUEST_METHOD", Want::Str("POST")),
            ("POST", Want::Json(r#"{"hello":"world"}"#)),
            ("body", Want::Str("hello=world")),
        ],
        apache_instead: None,
        apache_status: None,
    },
    Case {
        name: "unix_post_chunked_slowly",
        line: "POST /appu/sub/test.php HTTP/1.1",
        headers: CHUNKED_FORM,
        body: Body::Slow(SLOW_CHUNKS),
        status: 200,
        want: &[
            ("SCRIPT_NAME", Want::Str("/appu/sub/test.php")),
            ("CONTENT_LENGTH", Want::Str("11")),
            ("body", Want::Str("hello=world")),
        ],
        apache_instead: Some((
            &[("CONTENT_LENGTH", Want::Null), ("body", Want::Str(""))],
            "Apache streams a chunked body it has not fully received without CONTENT_LENGTH (PR 57087)",
        )),
        apache_status: None,
    },
];

fn build_request(case: &Case, front: SocketAddr) -> RawRequest {
    let mut head = format!(
        "{}\r\nHost: 127.0.0.1:{}\r\nUser-Agent: php-fpm-test/1\r\nConnection: close\r\n",
        case.line,
        front.port()
    );
    for h in case.headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    match case.body {
        Body::None => RawRequest::whole(head),
        Body::Whole(b) => RawRequest::whole(format!("{head}{b}")),
        Body::Slow(parts) => {
            let mut r = RawRequest::whole(head);
            r.parts.extend(parts.iter().map(|p| p.as_bytes().to_vec()));
            r.pause = Duration::from_millis(300);
            r
        }
    }
}

/// A running php-fpm with its docroot, and a front-end config for it.
struct Php {
    dir: tempfile::TempDir,
    docroot: PathBuf,
    front: SocketAddr,
    conf: PathBuf,
    _fpm: Proc,
}

fn start_php(fpm_bin: &Path) -> Php {
    let dir = tempfile::Builder::new()
        .prefix("php-fpm-test-")
        .tempdir()
        .expect("tempdir");
    // Apache's children (www-data under root) reach the socket through it.
    support::open_up_dir(dir.path());
    let docroot = dir.path().join("docroot");
    std::fs::create_dir_all(docroot.join("sub")).expect("docroot");
    std::fs::create_dir_all(dir.path().join("run")).expect("run dir");
    std::fs::write(docroot.join("sub/test.php"), TEST_PHP).expect("test.php");
    // Names Apache sends %-encoded to php-fpm.
    for name in ["a b.php", "caf\u{e9}.php"] {
        std::fs::write(docroot.join("sub").join(name), TEST_PHP).expect("test.php copy");
    }
    let sock = dir.path().join("php.sock");
    let fpm_port = support::free_port();
    let fpm_conf = dir.path().join("php-fpm.conf");
    std::fs::write(
        &fpm_conf,
        support::fill_template(
            FPM_TEMPLATE,
            &[
                ("DIR", dir.path().display().to_string()),
                ("FPM_PORT", fpm_port.to_string()),
            ],
        ),
    )
    .expect("php-fpm.conf");

    let mut cmd = std::process::Command::new(fpm_bin);
    // -n: no php.ini, so the test sees PHP's defaults (cgi.fix_pathinfo=1) whatever the host has.
    cmd.args(["-n", "-F", "-y"]).arg(&fpm_conf);
    if support::running_as_root() {
        cmd.arg("-R");
    }
    let mut fpm = Proc::spawn("php-fpm", cmd, &dir.path().join("php-fpm.out"));
    let fpm_addr: SocketAddr = format!("127.0.0.1:{fpm_port}").parse().expect("addr");
    if let Err(e) = fpm.wait_ready(fpm_addr, None) {
        let log = std::fs::read_to_string(dir.path().join("php-fpm.log")).unwrap_or_default();
        panic!("{e}\n--- php-fpm.log ---\n{log}");
    }
    let deadline = Instant::now() + support::START_TIMEOUT;
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "php-fpm did not listen on {}\n{}",
            sock.display(),
            fpm.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let front: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .expect("addr");
    let conf = dir.path().join("httpd.conf");
    std::fs::write(
        &conf,
        support::fill_template(
            HTTPD_TEMPLATE,
            &[
                ("DIR", dir.path().display().to_string()),
                ("LISTEN", front.port().to_string()),
                ("DOCROOT", docroot.display().to_string()),
                ("FPM_PORT", fpm_port.to_string()),
                ("SOCK", sock.display().to_string()),
            ],
        ),
    )
    .expect("httpd.conf");
    Php {
        dir,
        docroot,
        front,
        conf,
        _fpm: fpm,
    }
}

fn want_value(w: Want, docroot: &Path) -> Value {
    match w {
        Want::Str(s) => Value::String(s.to_string()),
        Want::UnderDocroot(s) => Value::String(format!("{}{s}", docroot.display())),
        Want::Null => Value::Null,
        Want::Json(j) => serde_json::from_str(j).expect("expected JSON in the case table"),
    }
}

/// Runs every case against `front`; returns one line per mismatch.
async fn run_cases(front: SocketAddr, docroot: &Path, as_apache: bool) -> Vec<String> {
    let mut problems = Vec::new();
    // Normally about 2 s; bounds a front end that times out on every request.
    let budget = support::Budget::new(Duration::from_secs(60));
    for case in CASES {
        let req = build_request(case, front);
        let resp = match budget.exchange(front, &req).await {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{}: {}: {e}", case.name, case.line));
                continue;
            }
        };
        let status = match case.apache_status {
            Some(s) if as_apache => s,
            _ => case.status,
        };
        if resp.status != status {
            problems.push(format!(
                "{}: {}: status {} (want {}); body: {}",
                case.name,
                case.line,
                resp.status,
                status,
                resp.body_text()
            ));
            continue;
        }
        if status == 404 {
            if !resp.body_text().contains("File not found.") {
                problems.push(format!(
                    "{}: the 404 does not come from php-fpm: {:?}",
                    case.name,
                    resp.body_text()
                ));
            }
            continue;
        }
        let got: Value = match serde_json::from_slice(&resp.body) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!(
                    "{}: body is not test.php's JSON ({e}): {:?}",
                    case.name,
                    resp.body_text()
                ));
                continue;
            }
        };
        let mut want: Vec<(&str, Want)> = case.want.to_vec();
        if as_apache && let Some((instead, _why)) = case.apache_instead {
            for (k, w) in instead {
                match want.iter_mut().find(|(n, _)| n == k) {
                    Some(slot) => slot.1 = *w,
                    None => want.push((k, *w)),
                }
            }
        }
        for (key, w) in want {
            let expected = want_value(w, docroot);
            let actual = got.get(key).cloned().unwrap_or(Value::Null);
            if actual != expected {
                problems.push(format!(
                    "{}: {}: {key} = {actual} (want {expected})",
                    case.name, case.line
                ));
            }
        }
    }
    problems
}

fn php_fpm_bin() -> Option<PathBuf> {
    programs::require_program("php-fpm8.2", "php8.2-fpm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_gives_php_the_right_server_vars() {
    let Some(fpm_bin) = php_fpm_bin() else {
        return;
    };
    let t0 = Instant::now();
    let php = tokio::task::spawn_blocking(move || start_php(&fpm_bin))
        .await
        .expect("start php-fpm");
    let (conf, dir, front) = (php.conf.clone(), php.dir.path().to_path_buf(), php.front);
    let proxy =
        tokio::task::spawn_blocking(move || support::start_proxy_apache(&conf, &dir, front))
            .await
            .expect("start proxy");
    let proxy = match proxy {
        Ok(p) => p,
        Err(e) => panic!("fcgi-proxy did not start: {e}"),
    };
    let problems = run_cases(php.front, &php.docroot, false).await;
    let output = proxy.output();
    tokio::task::spawn_blocking(move || drop(proxy))
        .await
        .expect("stop proxy");
    eprintln!(
        "php_fpm through fcgi-proxy: {} cases in {:.1?}",
        CASES.len(),
        t0.elapsed()
    );
    let fpm_log = std::fs::read_to_string(php.dir.path().join("php-fpm.log")).unwrap_or_default();
    assert!(
        problems.is_empty(),
        "PHP saw the wrong values through fcgi-proxy:\n  {}\n{output}\n--- php-fpm.log ---\n{fpm_log}",
        problems.join("\n  ")
    );
}

/// The expectations above, checked against real Apache httpd with the same config: if this
/// fails, the case table (not the proxy) is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_gives_php_the_expected_values() {
    let Some(fpm_bin) = php_fpm_bin() else {
        return;
    };
    let Some(apache) = programs::require_program("apache2", "apache2") else {
        return;
    };
    let t0 = Instant::now();
    let php = tokio::task::spawn_blocking(move || start_php(&fpm_bin))
        .await
        .expect("start php-fpm");
    let (conf, dir, front) = (php.conf.clone(), php.dir.path().to_path_buf(), php.front);
    let httpd =
        tokio::task::spawn_blocking(move || support::start_apache(&apache, &conf, &dir, front))
            .await
            .expect("start apache");
    let problems = run_cases(php.front, &php.docroot, true).await;
    tokio::task::spawn_blocking(move || drop(httpd))
        .await
        .expect("stop apache");
    eprintln!(
        "php_fpm through Apache: {} cases in {:.1?}",
        CASES.len(),
        t0.elapsed()
    );
    let errlog = std::fs::read_to_string(php.dir.path().join("error.log")).unwrap_or_default();
    assert!(
        problems.is_empty(),
        "real Apache + php-fpm disagree with the case table:\n  {}\n--- Apache error.log ---\n{errlog}",
        problems.join("\n  ")
    );
}
