//! Cross-checks against what real Apache 2.4.71 sent (docs/reference/peers.md §4: the params of
//! configurations A and C, the path table, the header cases), using the same configurations
//! imported with the Apache importer. Configuration B (SetHandler on files) has no equivalent: the
//! importer reports it.

mod cgi_support;

use cgi_support::{Req, get, run};
use fcgi_proxy::cgi::SERVER_SOFTWARE;
use fcgi_proxy::config::{Config, apache};

fn fixture(name: &str) -> Config {
    let path = format!(
        "{}/tests/config_fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    apache::parse(&text, &path).unwrap().0
}

/// The headline request of docs/reference/peers.md §4.1, on the port Apache listened on.
fn headline(target: &str, remote_port: u16) -> Req {
    let mut r = Req::get(target).headers(&[
        ("Host", "127.0.0.1:28081"),
        ("Proxy", "evil"),
        ("X_Under", "1"),
        ("X-Multi", "a"),
        ("X-Multi", "b"),
        ("User-Agent", "probe"),
        ("Connection", "close"),
    ]);
    r.remote = format!("127.0.0.1:{remote_port}").parse().unwrap();
    r.local = "127.0.0.1:28081".parse().unwrap();
    r.process_path = Some("/usr/sbin:/usr/bin:/bin".into());
    r
}

/// Parse an appendix block (`NAME=value` lines), skipping the bookkeeping lines.
fn appendix(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("backend ")
                && !l.starts_with("records(")
                && !l.starts_with("stdin_len")
        })
        .map(|l| {
            let (n, v) = l.split_once('=').unwrap();
            let v = if n == "SERVER_SOFTWARE" {
                SERVER_SOFTWARE
            } else {
                v
            };
            (n.to_string(), v.to_string())
        })
        .collect()
}

const APACHE_A: &str = r"
backend A conn=1 req_on_conn=1 request_id=1 keep_conn=False role=1
HTTP_HOST=127.0.0.1:28081
HTTP_X_MULTI=a, b
HTTP_USER_AGENT=probe
HTTP_CONNECTION=close
PATH=/usr/sbin:/usr/bin:/bin
SERVER_SIGNATURE=
SERVER_SOFTWARE=Apache/2.4.71 (Debian)
SERVER_NAME=127.0.0.1
SERVER_ADDR=127.0.0.1
SERVER_PORT=28081
REMOTE_ADDR=127.0.0.1
DOCUMENT_ROOT=/srv/peers/docroot
REQUEST_SCHEME=http
CONTEXT_PREFIX=
CONTEXT_DOCUMENT_ROOT=/srv/peers/docroot
SERVER_ADMIN=[no address given]
SCRIPT_FILENAME=proxy:fcgi://127.0.0.1:27001/index.php/extra/path
REMOTE_PORT=48792
GATEWAY_INTERFACE=CGI/1.1
SERVER_PROTOCOL=HTTP/1.1
REQUEST_METHOD=GET
QUERY_STRING=x=1
REQUEST_URI=/myapp/index.php/extra/path?x=1
SCRIPT_NAME=/myapp/index.php/extra/path
records(type:id/len)=BEGIN:1/8 PARAMS:1/649 PARAMS:1/0 STDIN:1/0
";

const APACHE_C: &str = r"
backend A conn=1 req_on_conn=1 request_id=1 keep_conn=True role=1
proxy-fcgi-pathinfo=1
proxy-sendcl=1
BALANCER_NAME=balancer://fcgipool
BALANCER_WORKER_NAME=fcgi://127.0.0.1:27001
BALANCER_WORKER_ROUTE=
HTTP_HOST=127.0.0.1:28081
HTTP_X_MULTI=a, b
HTTP_USER_AGENT=probe
HTTP_CONNECTION=close
PATH=/usr/sbin:/usr/bin:/bin
SERVER_SIGNATURE=
SERVER_SOFTWARE=Apache/2.4.71 (Debian)
SERVER_NAME=127.0.0.1
SERVER_ADDR=127.0.0.1
SERVER_PORT=28081
REMOTE_ADDR=127.0.0.1
DOCUMENT_ROOT=/srv/peers/docroot
REQUEST_SCHEME=http
CONTEXT_PREFIX=
CONTEXT_DOCUMENT_ROOT=/srv/peers/docroot
SERVER_ADMIN=[no address given]
SCRIPT_FILENAME=/index.php/extra/path
REMOTE_PORT=32926
GATEWAY_INTERFACE=CGI/1.1
SERVER_PROTOCOL=HTTP/1.1
REQUEST_METHOD=GET
QUERY_STRING=x=1
REQUEST_URI=/myapp/index.php/extra/path?x=1
SCRIPT_NAME=/myapp
PATH_INFO=/index.php/extra/path
PATH_TRANSLATED=/srv/peers/docroot/index.php/extra/path
records(type:id/len)=BEGIN:1/8 PARAMS:1/823 PARAMS:1/0 STDIN:1/0
";

#[test]
fn apache_a_verbatim() {
    let cfg = fixture("httpd.conf");
    let got = run(&cfg, &headline("/myapp/index.php/extra/path?x=1", 48792)).unwrap();
    assert_eq!(got, appendix(APACHE_A));
}

#[test]
fn apache_c_verbatim() {
    let cfg = fixture("httpd-c.conf");
    let got = run(&cfg, &headline("/myapp/index.php/extra/path?x=1", 32926)).unwrap();
    assert_eq!(got, appendix(APACHE_C));
    // The second member gets its own worker name (2.4.62+: SCRIPT_FILENAME per member).
    let mut req = headline("/myapp/index.php/extra/path?x=1", 32926);
    req.member = 1;
    let got = run(&cfg, &req).unwrap();
    assert_eq!(
        get(&got, "BALANCER_WORKER_NAME"),
        Some("fcgi://127.0.0.1:27002")
    );
}

/// docs/reference/peers.md §4.2 rows for A and C (SCRIPT_NAME, PATH_INFO, SCRIPT_FILENAME,
/// PATH_TRANSLATED, or the status when Apache answered without contacting the app).
#[test]
fn path_table_rows() {
    type Row = (
        &'static str,
        &'static str,
        Result<[Option<&'static str>; 4], u16>,
    );
    let a = fixture("httpd.conf");
    let c = fixture("httpd-c.conf");
    let rows: Vec<(&Config, Row)> = vec![
        (
            &a,
            (
                "dir",
                "/myapp/",
                Ok([
                    Some("/myapp/"),
                    None,
                    Some("proxy:fcgi://127.0.0.1:27001/"),
                    None,
                ]),
            ),
        ),
        (
            &a,
            (
                "nophp",
                "/myapp/sub/thing?z",
                Ok([
                    Some("/myapp/sub/thing"),
                    None,
                    Some("proxy:fcgi://127.0.0.1:27001/sub/thing"),
                    None,
                ]),
            ),
        ),
        (
            &a,
            ("encoded", "/myapp/a%20b.php/p%2Fq%0Ar?y=%20z", Err(404)),
        ),
        (
            &a,
            ("encoded_sp", "/myapp/a%20b.php/x%2Fy?y=%20z", Err(404)),
        ),
        // Deliberate deviation: Apache passes the decoded LF (200); we answer 400.
        (
            &a,
            ("encoded_nl", "/myapp/a%20b.php/p%0Aq?y=%20z", Err(400)),
        ),
        (
            &c,
            (
                "dir",
                "/myapp/",
                Ok([
                    Some("/myapp"),
                    Some("/"),
                    Some("/"),
                    Some("/srv/peers/docroot/"),
                ]),
            ),
        ),
        (
            &c,
            (
                "nophp",
                "/myapp/sub/thing?z",
                Ok([
                    Some("/myapp"),
                    Some("/sub/thing"),
                    Some("/sub/thing"),
                    Some("/srv/peers/docroot/sub/thing"),
                ]),
            ),
        ),
        (
            &c,
            ("encoded", "/myapp/a%20b.php/p%2Fq%0Ar?y=%20z", Err(404)),
        ),
        (
            &c,
            (
                "dotdot",
                "/myapp/../myapp/./index.php/%2e%2e/x",
                Ok([
                    Some("/myapp"),
                    Some("/x"),
                    Some("/x"),
                    Some("/srv/peers/docroot/x"),
                ]),
            ),
        ),
        (
            &c,
            (
                "unicode_split",
                "/myapp/%C8%BA%C8%BA/index.php/extra",
                Ok([
                    Some("/myapp/\u{23a}\u{23a}"),
                    Some("/%C8%BA%C8%BA/index.php/extra"),
                    Some("/%C8%BA%C8%BA/index.php/extra"),
                    Some("/srv/peers/docroot/%C8%BA%C8%BA/index.php/extra"),
                ]),
            ),
        ),
        // Deliberate deviation: Apache answers 404 to a decoded NUL; we answer 400.
        (&c, ("nul", "/myapp/index.php%00.txt/x", Err(400))),
        (&c, ("fragment", "/myapp/index.php#frag", Err(400))),
    ];
    for (cfg, (case, target, want)) in rows {
        let got = run(cfg, &headline(target, 40000));
        match want {
            Err(status) => assert_eq!(got.map(|_| ()), Err(status), "{case}"),
            Ok([sn, pi, sf, pt]) => {
                let p = got.unwrap_or_else(|s| panic!("{case}: {s}"));
                assert_eq!(get(&p, "SCRIPT_NAME"), sn, "{case}");
                assert_eq!(get(&p, "PATH_INFO"), pi, "{case}");
                assert_eq!(get(&p, "SCRIPT_FILENAME"), sf, "{case}");
                assert_eq!(get(&p, "PATH_TRANSLATED"), pt, "{case}");
            }
        }
    }
}

/// docs/reference/peers.md §4.3 header cases for Apache.
#[test]
fn header_cases() {
    let a = fixture("httpd.conf");
    let req = Req::get("/myapp/x").headers(&[
        ("Host", "127.0.0.1:28081"),
        ("Authorization", "Basic dXNlcjpwYXNz"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
    ]);
    let p = run(&a, &req).unwrap();
    assert_eq!(get(&p, "HTTP_AUTHORIZATION"), None);
    assert_eq!(get(&p, "HTTP_COOKIE"), Some("a=1, b=2"));
    let req = Req::get("/myapp/x").headers(&[
        ("Host", "127.0.0.1:28081"),
        ("X_Under", "underscore"),
        ("X-Under", "dash"),
    ]);
    let p = run(&a, &req).unwrap();
    assert_eq!(get(&p, "HTTP_X_UNDER"), Some("dash"));
}
