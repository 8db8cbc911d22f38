//! Apache parity: the same Apache config file (`fixtures/parity-httpd.conf.in`) is served by real
//! Apache httpd 2.4 (`apache2 -f`) and by `fcgi-proxy --apache`, both in front of the same
//! `fcgi-mock` echo backends. The same request shapes go through each, one connection per
//! request, and what each backend request carried (params by name, KEEP_CONN, STDIN, connection
//! reuse) and the status the client saw are compared. A difference fails the test unless it is on
//! [`ALLOWED`], each entry with its reason. The params our proxy sent are also kept as insta
//! snapshots (`snapshots/apache_parity__*.snap`, ports and temp paths redacted) so that any change
//! shows up in review: `proxy_sends_what_its_snapshots_show` checks them without Apache, and
//! `every_snapshot_is_a_shape` that no snapshot is left of a shape that is gone.
//!
//! The proxy runs first and Apache second, on the same front port: SERVER_PORT and HTTP_HOST then
//! compare exactly, and Apache (which sets SO_REUSEADDR) binds past the proxy's TIME_WAIT sockets.
//! Requests are attributed to shapes by an `X-Parity-Case` header (param HTTP_X_PARITY_CASE), not
//! by arrival order, so a late or missing backend request cannot shift the comparison.
//!
//! The comparison is skipped (with a message) only when `apache2` is not installed, and fails
//! instead when `FCGI_REQUIRE` (or `CI`) requires it (see the `programs` crate). `PARITY_DUMP=1`
//! prints every param each backend received through each front end.

mod support;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fcgi_mock::{MockHandle, MockServer, RequestEntry, Script};
use serde_json::{Value, json};
use support::{HttpResponse, Proc, RawRequest};

const TEMPLATE: &str = include_str!("fixtures/parity-httpd.conf.in");
const MARKER_HEADER: &str = "X-Parity-Case";
const MARKER_PARAM: &str = "HTTP_X_PARITY_CASE";
/// Time for all the shapes through one front end (normally about 2 s).
const SIDE_BUDGET: Duration = Duration::from_secs(90);
/// Pause between the parts of a slow request.
const SLOW_PAUSE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Request shapes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Host {
    /// `Host: 127.0.0.1:<front port>`.
    Listen,
    Named(&'static str),
    Absent,
}

#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    /// Sent with the head in one write.
    Whole(&'static str),
    /// Sent after the head, part by part, [`SLOW_PAUSE`] apart.
    Slow(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    name: &'static str,
    /// Request line; `@HOST@` becomes `127.0.0.1:<front port>`.
    line: &'static str,
    host: Host,
    /// Extra header lines, sent in this order after Host, User-Agent and the case marker.
    headers: &'static [&'static str],
    body: Body,
    /// What real Apache answers (checked, so that a changed reference shows up as such).
    apache_status: u16,
    /// Whether real Apache contacts a backend for it.
    apache_reaches_backend: bool,
    /// Compare whether this request used the same backend connection as that earlier shape.
    same_conn_as: Option<&'static str>,
}

const fn get(name: &'static str, line: &'static str) -> Shape {
    Shape {
        name,
        line,
        host: Host::Listen,
        headers: &[],
        body: Body::None,
        apache_status: 200,
        apache_reaches_backend: true,
        same_conn_as: None,
    }
}

const fn not_found(name: &'static str, line: &'static str) -> Shape {
    Shape {
        apache_status: 404,
        apache_reaches_backend: false,
        ..get(name, line)
    }
}

const fn with_headers(s: Shape, headers: &'static [&'static str]) -> Shape {
    Shape { headers, ..s }
}

const fn with_body(s: Shape, headers: &'static [&'static str], body: Body) -> Shape {
    Shape { headers, body, ..s }
}

const fn same_conn_as(s: Shape, earlier: &'static str) -> Shape {
    Shape {
        same_conn_as: Some(earlier),
        ..s
    }
}

const AUTH_HEADERS: &[&str] = &[
    "Authorization: Basic dXNlcjpwYXNz",
    "Proxy-Authorization: Basic cHJveHk6c2VjcmV0",
];

const SHAPES: &[Shape] = &[
    // Prefix route, backend path "/".
    get(
        "prefix_pathinfo_query",
        "GET /app/index.php/extra/path?x=1 HTTP/1.1",
    ),
    get("prefix_dir", "GET /app/ HTTP/1.1"),
    get("prefix_no_query", "GET /app/plain HTTP/1.1"),
    get("prefix_empty_query", "GET /app/plain? HTTP/1.1"),
    get(
        "query_encoded",
        "GET /app/q.php?a=%20b&c=d+e&e=%C3%A9 HTTP/1.1",
    ),
    not_found("prefix_without_slash", "GET /app HTTP/1.1"),
    // Encoded and odd characters in the path.
    get("encoded_space", "GET /app/a%20b.php/p%20q?y=%20z HTTP/1.1"),
    get(
        "encoded_non_ascii",
        "GET /app/caf%C3%A9.php?n=%C3%A9 HTTP/1.1",
    ),
    get("plus_in_path", "GET /app/a+b.php?x=a+b HTTP/1.1"),
    get("encoded_percent", "GET /app/100%25.php HTTP/1.1"),
    get("encoded_question_mark", "GET /app/a%3Fb.php?c HTTP/1.1"),
    get("encoded_dot_segment", "GET /app/sub/%2e%2e/x.php HTTP/1.1"),
    get("encoded_tilde", "GET /app/%7Euser/x HTTP/1.1"),
    get("sub_delims", "GET /app/q(1)'!*$&=;:@,.php HTTP/1.1"),
    get("double_slashes", "GET /app//double//slash.php HTTP/1.1"),
    not_found("encoded_slash", "GET /app/a%2Fb HTTP/1.1"),
    not_found("dot_segment_leaves_route", "GET /app/%2e%2e/x HTTP/1.1"),
    // Prefix route with a path after the backend port; regex route.
    get("backend_path", "GET /www/index.php/extra?y=2 HTTP/1.1"),
    get(
        "regex_pathinfo",
        "GET /rx/dir/script.php/more/info?z=1 HTTP/1.1",
    ),
    get("regex_plain", "GET /rx/s.php HTTP/1.1"),
    not_found("regex_no_match", "GET /rx/readme.txt HTTP/1.1"),
    // GENERIC backend type.
    get("generic_pathinfo", "GET /gen/index.php/extra?q=1 HTTP/1.1"),
    get("generic_encoded", "GET /gen/a%20b.php HTTP/1.1"),
    get(
        "generic_query_with_question_mark",
        "GET /gen/x.php?a=b?c HTTP/1.1",
    ),
    // proxy-fcgi-pathinfo modes.
    get("pi_first_dot", "GET /pi-first/a.b/c.php/d/e?x HTTP/1.1"),
    get("pi_first_dot_no_dot", "GET /pi-first/nodot/x HTTP/1.1"),
    get("pi_last_dot", "GET /pi-last/a.b/c.php/d/e?x HTTP/1.1"),
    get("pi_unescape", "GET /pi-unesc/a%20b.php/p%20q HTTP/1.1"),
    get("pi_one", "GET /pi-one/index.php/extra HTTP/1.1"),
    get("pi_one_encoded", "GET /pi-one/a%20b.php/p%20q HTTP/1.1"),
    get(
        "pi_full_existing_file",
        "GET /pi-full/full.php/extra HTTP/1.1",
    ),
    get("pi_full_no_file", "GET /pi-full/nofile.php/extra HTTP/1.1"),
    // Headers.
    with_headers(
        get("headers_repeated", "GET /app/h HTTP/1.1"),
        &["X-Multi: a", "X-Multi: b", "Cookie: a=1", "Cookie: b=2"],
    ),
    with_headers(
        get("headers_odd", "GET /app/h HTTP/1.1"),
        &[
            "X_Under: 1",
            "Proxy: evil",
            "X.Dot: 1",
            "x-lower-case: v",
            "TE: trailers",
        ],
    ),
    with_headers(
        get("max_forwards", "GET /app/mf HTTP/1.1"),
        &["Max-Forwards: 5"],
    ),
    with_headers(
        get("auth_not_passed", "GET /app/auth HTTP/1.1"),
        AUTH_HEADERS,
    ),
    with_headers(
        get("auth_cgipassauth", "GET /auth/x HTTP/1.1"),
        AUTH_HEADERS,
    ),
    Shape {
        host: Host::Named("example.test"),
        ..get("host_without_port", "GET /app/hnp HTTP/1.1")
    },
    Shape {
        host: Host::Absent,
        ..get("http10_without_host", "GET /app/v10 HTTP/1.0")
    },
    get("absolute_form", "GET http://@HOST@/app/abs?x=1 HTTP/1.1"),
    // The host of an absolute-form target replaces the Host header (RFC 9112 §3.2.2).
    get(
        "absolute_form_other_host",
        "GET http://other.test/app/abs2 HTTP/1.1",
    ),
    // Methods and bodies.
    with_body(
        get("post_content_length", "POST /app/post HTTP/1.1"),
        &[
            "Content-Type: application/x-www-form-urlencoded",
            "Content-Length: 11",
        ],
        Body::Whole("hello=world"),
    ),
    with_body(
        get("post_empty", "POST /app/post0 HTTP/1.1"),
        &["Content-Length: 0"],
        Body::None,
    ),
    get("post_without_length", "POST /app/postn HTTP/1.1"),
    with_body(
        get("post_chunked_whole", "POST /app/chunk HTTP/1.1"),
        &["Transfer-Encoding: chunked", "Content-Type: text/plain"],
        Body::Whole("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    ),
    with_body(
        get("post_chunked_slow", "POST /app/chunks HTTP/1.1"),
        &["Transfer-Encoding: chunked", "Content-Type: text/plain"],
        Body::Slow(&["5\r\nhello\r\n", "6\r\n world\r\n", "0\r\n\r\n"]),
    ),
    with_body(
        get("post_expect_continue", "POST /app/expect HTTP/1.1"),
        &["Expect: 100-continue", "Content-Length: 4"],
        Body::Whole("ping"),
    ),
    with_body(
        get("put_body", "PUT /app/put.php HTTP/1.1"),
        &[
            "Content-Type: application/octet-stream",
            "Content-Length: 8",
        ],
        Body::Whole("raw body"),
    ),
    get("head", "HEAD /app/head.php HTTP/1.1"),
    get("options", "OPTIONS /app/opt HTTP/1.1"),
    Shape {
        apache_reaches_backend: false,
        ..get("options_asterisk", "OPTIONS * HTTP/1.1")
    },
    get("delete", "DELETE /app/del HTTP/1.1"),
    // Connection reuse: enablereuse=on keeps and reuses; disablereuse=on does not.
    get("reuse_first", "GET /reuse/one HTTP/1.1"),
    same_conn_as(
        get("reuse_second", "GET /reuse/two HTTP/1.1"),
        "reuse_first",
    ),
    get("noreuse_first", "GET /app/nr1 HTTP/1.1"),
    same_conn_as(
        get("noreuse_second", "GET /app/nr2 HTTP/1.1"),
        "noreuse_first",
    ),
    // Handler mode (SetHandler in <FilesMatch>): the URL mapped to a file as Apache's core
    // does.
    get("handler_root", "GET /index.php HTTP/1.1"),
    get("handler_subdir", "GET /sub/s.php HTTP/1.1"),
    get("handler_path_info", "GET /sub/s.php/x/y HTTP/1.1"),
    // PATH_TRANSLATED is what a sub-request for the path info maps to: the DocumentRoot's
    // index file for "/", the Alias's target under /al/.
    get("handler_path_info_slash", "GET /sub/s.php/ HTTP/1.1"),
    get(
        "handler_path_info_alias",
        "GET /index.php/al/s.php HTTP/1.1",
    ),
    get("handler_query", "GET /index.php?a=1&b=%20c HTTP/1.1"),
    get("handler_encoded_name", "GET /a%20b.php/p%20q HTTP/1.1"),
    get("handler_directory_index", "GET /sub/?i=1 HTTP/1.1"),
    get("handler_missing_file", "GET /nope.php/x HTTP/1.1"),
    get("handler_alias", "GET /al/s.php/pi HTTP/1.1"),
    with_body(
        get("handler_post", "POST /sub/s.php HTTP/1.1"),
        &[
            "Content-Type: application/x-www-form-urlencoded",
            "Content-Length: 3",
        ],
        Body::Whole("a=b"),
    ),
    Shape {
        apache_status: 301,
        apache_reaches_backend: false,
        ..get("handler_directory_slash", "GET /sub?x=1 HTTP/1.1")
    },
    not_found("handler_not_php", "GET /readme.txt/x HTTP/1.1"),
];

fn build_request(shape: &Shape, front: SocketAddr) -> RawRequest {
    let host = format!("127.0.0.1:{}", front.port());
    let mut head = shape.line.replace("@HOST@", &host);
    head.push_str("\r\n");
    match shape.host {
        Host::Listen => {
            let _ = write!(head, "Host: {host}\r\n");
        }
        Host::Named(h) => {
            let _ = write!(head, "Host: {h}\r\n");
        }
        Host::Absent => {}
    }
    let _ = write!(
        head,
        "User-Agent: parity/1\r\n{MARKER_HEADER}: {}\r\n",
        shape.name
    );
    for h in shape.headers {
        let _ = write!(head, "{h}\r\n");
    }
    if shape.line.ends_with("HTTP/1.1") {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut req = RawRequest::whole(head.clone());
    match shape.body {
        Body::None => {}
        Body::Whole(b) => req.parts = vec![format!("{head}{b}").into_bytes()],
        Body::Slow(parts) => {
            req.parts
                .extend(parts.iter().map(|p| p.as_bytes().to_vec()));
            req.pause = SLOW_PAUSE;
        }
    }
    req
}

// ---------------------------------------------------------------------------------------------
// The allow-list
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Both must send the param; the values may differ.
    ValueOnly,
    /// Presence and value may both differ.
    Anything,
}

#[derive(Debug)]
struct Allowance {
    field: &'static str,
    /// The shapes it applies to; empty means every shape.
    cases: &'static [&'static str],
    kind: Kind,
    reason: &'static str,
}

/// Every difference between Apache and the proxy that is accepted, and why. Keep it short: each
/// entry is a place where a user could notice the proxy is not Apache.
const ALLOWED: &[Allowance] = &[
    Allowance {
        field: "SERVER_SOFTWARE",
        cases: &[],
        kind: Kind::ValueOnly,
        reason: "product banner: Apache/2.4.x (Debian) vs the proxy's own name",
    },
    Allowance {
        field: "REMOTE_PORT",
        cases: &[],
        kind: Kind::ValueOnly,
        reason: "ephemeral port of each client connection",
    },
    Allowance {
        field: "SCRIPT_FILENAME",
        cases: &[
            "encoded_space",
            "encoded_non_ascii",
            "encoded_percent",
            "encoded_question_mark",
            "pi_unescape",
            "pi_one_encoded",
        ],
        kind: Kind::ValueOnly,
        reason: "FPM backends: Apache sends the path %-encoded and php-fpm then answers \"File not found.\" for a script whose name has a space or a non-ASCII character; the proxy sends the name as on disk (%2F and control characters stay encoded)",
    },
    Allowance {
        field: "CONTENT_LENGTH",
        cases: &["post_chunked_slow"],
        kind: Kind::Anything,
        reason: "Apache streams a chunked body that is not complete at prefetch without CONTENT_LENGTH (PR 57087: PHP then reads nothing); the proxy buffers it and sends the exact length",
    },
    Allowance {
        field: "HTTP_TRANSFER_ENCODING",
        cases: &["post_chunked_slow"],
        kind: Kind::Anything,
        reason: "same streamed-chunked case: Apache forwards Transfer-Encoding: chunked as a param; the proxy sends a de-chunked body with CONTENT_LENGTH",
    },
];

fn allowance(field: &str, case: &str) -> Option<&'static Allowance> {
    ALLOWED
        .iter()
        .find(|a| a.field == field && (a.cases.is_empty() || a.cases.contains(&case)))
}

// ---------------------------------------------------------------------------------------------
// Running one side
// ---------------------------------------------------------------------------------------------

/// The echo backends both front ends talk to.
struct Backends {
    /// (label, mock): P1 serves every route but /reuse/, P2 serves /reuse/.
    mocks: Vec<(&'static str, MockHandle)>,
}

impl Backends {
    fn counts(&self) -> Vec<usize> {
        self.mocks
            .iter()
            .map(|(_, m)| m.journal().requests().len())
            .collect()
    }

    /// Waits (bounded) until every request after `since` has finished.
    async fn settle(&self, since: &[usize]) {
        for ((_, m), &from) in self.mocks.iter().zip(since) {
            let done = m.journal().wait_for(|s| {
                s.requests
                    .iter()
                    .skip(from)
                    .all(fcgi_mock::RequestEntry::is_finished)
            });
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
    }

    /// The requests after `since`, with the backend label.
    fn since(&self, since: &[usize]) -> Vec<(&'static str, RequestEntry)> {
        self.mocks
            .iter()
            .zip(since)
            .flat_map(|((label, m), &from)| {
                m.journal()
                    .requests()
                    .into_iter()
                    .skip(from)
                    .map(move |r| (*label, r))
            })
            .collect()
    }
}

/// What one front end did with one shape.
#[derive(Debug, Default)]
struct Observed {
    response: Option<Result<HttpResponse, String>>,
    /// Backend requests carrying this shape's marker: (backend label, entry).
    backend: Vec<(&'static str, RequestEntry)>,
}

#[derive(Debug, Default)]
struct SideRun {
    observed: Vec<Observed>,
    /// Backend requests without a known marker.
    stray: Vec<(&'static str, RequestEntry)>,
}

async fn run_side(front: SocketAddr, backends: &Backends) -> SideRun {
    let start = backends.counts();
    let mut observed: Vec<Observed> = Vec::new();
    let budget = support::Budget::new(SIDE_BUDGET);
    for shape in SHAPES {
        let req = build_request(shape, front);
        let response = budget.exchange(front, &req).await;
        observed.push(Observed {
            response: Some(response),
            backend: Vec::new(),
        });
    }
    // A request a front end sent late still gets attributed to its shape.
    tokio::time::sleep(Duration::from_millis(300)).await;
    backends.settle(&start).await;
    let mut stray = Vec::new();
    for (label, entry) in backends.since(&start) {
        let marker = entry.param(MARKER_PARAM);
        match SHAPES
            .iter()
            .position(|s| Some(s.name) == marker.as_deref())
        {
            Some(i) => observed[i].backend.push((label, entry)),
            None => stray.push((label, entry)),
        }
    }
    SideRun { observed, stray }
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Same,
    Allowed(&'static str),
    Differs,
}

#[derive(Debug, Clone)]
struct Row {
    field: String,
    apache: String,
    proxy: String,
    verdict: Verdict,
}

fn show_values(values: &[String]) -> String {
    match values {
        [] => "—".to_string(),
        [one] => format!("{one:?}"),
        many => format!("{many:?}"),
    }
}

fn show_response(r: &Option<Result<HttpResponse, String>>) -> String {
    match r {
        None => "not sent".into(),
        Some(Ok(resp)) => resp.status.to_string(),
        Some(Err(e)) => format!("error: {e}"),
    }
}

/// Whether request `name`'s backend connection is the same as `earlier`'s, on one side.
fn same_conn(run: &SideRun, name: &str, earlier: &str) -> String {
    let find = |n: &str| {
        SHAPES
            .iter()
            .position(|s| s.name == n)
            .and_then(|i| run.observed[i].backend.first())
            .map(|(label, e)| (*label, e.connection))
    };
    match (find(name), find(earlier)) {
        (Some(a), Some(b)) => (a == b).to_string(),
        _ => "n/a".into(),
    }
}

fn compare(i: usize, apache: &SideRun, proxy: &SideRun) -> Vec<Row> {
    let shape = &SHAPES[i];
    let (a, p) = (&apache.observed[i], &proxy.observed[i]);
    let mut rows = Vec::new();
    let mut push = |field: &str, av: String, pv: String, present: (bool, bool)| {
        let verdict = if av == pv {
            Verdict::Same
        } else {
            match allowance(field, shape.name) {
                Some(al) if al.kind == Kind::Anything => Verdict::Allowed(al.reason),
                Some(al) if present.0 && present.1 => Verdict::Allowed(al.reason),
                _ => Verdict::Differs,
            }
        };
        rows.push(Row {
            field: field.to_string(),
            apache: av,
            proxy: pv,
            verdict,
        });
    };
    push(
        "(status)",
        show_response(&a.response),
        show_response(&p.response),
        (true, true),
    );
    push(
        "(backend requests)",
        a.backend.len().to_string(),
        p.backend.len().to_string(),
        (true, true),
    );
    if let (Some((al, ae)), Some((pl, pe))) = (a.backend.first(), p.backend.first()) {
        push("(backend)", al.to_string(), pl.to_string(), (true, true));
        push(
            "(KEEP_CONN)",
            ae.keep_conn.to_string(),
            pe.keep_conn.to_string(),
            (true, true),
        );
        push(
            "(request id)",
            ae.request_id.to_string(),
            pe.request_id.to_string(),
            (true, true),
        );
        push(
            "(role)",
            format!("{:?}", ae.role),
            format!("{:?}", pe.role),
            (true, true),
        );
        push(
            "(stdin)",
            format!("{:?}", ae.stdin_lossy()),
            format!("{:?}", pe.stdin_lossy()),
            (true, true),
        );
        // Every param name either sent, Apache's wire order first.
        let mut names: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        for (n, _) in ae.params_lossy().into_iter().chain(pe.params_lossy()) {
            if seen.insert(n.clone()) {
                names.push(n);
            }
        }
        for n in names {
            let av = ae.params_named(&n);
            let pv = pe.params_named(&n);
            let present = (!av.is_empty(), !pv.is_empty());
            push(&n, show_values(&av), show_values(&pv), present);
        }
    }
    if let Some(earlier) = shape.same_conn_as {
        push(
            &format!("(same backend connection as {earlier})"),
            same_conn(apache, shape.name, earlier),
            same_conn(proxy, shape.name, earlier),
            (true, true),
        );
    }
    rows
}

/// A readable table of the rows that are not identical.
fn table(rows: &[&Row]) -> String {
    const MAX: usize = 64;
    let clip = |s: &str| -> String {
        if s.chars().count() > MAX {
            let cut: String = s.chars().take(MAX - 1).collect();
            format!("{cut}…")
        } else {
            s.to_string()
        }
    };
    let w_field = rows.iter().map(|r| r.field.len()).max().unwrap_or(5).max(5);
    let w_a = rows
        .iter()
        .map(|r| clip(&r.apache).chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let w_p = rows
        .iter()
        .map(|r| clip(&r.proxy).chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "    {:w_field$} | {:w_a$} | {:w_p$} | verdict",
        "field", "apache", "proxy"
    );
    let _ = writeln!(
        out,
        "    {}-+-{}-+-{}-+--------",
        "-".repeat(w_field),
        "-".repeat(w_a),
        "-".repeat(w_p)
    );
    for r in rows {
        let verdict = match &r.verdict {
            Verdict::Same => "same".to_string(),
            Verdict::Allowed(reason) => format!("allowed: {reason}"),
            Verdict::Differs => "DIFFERS".to_string(),
        };
        let _ = writeln!(
            out,
            "    {:w_field$} | {:w_a$} | {:w_p$} | {verdict}",
            r.field,
            clip(&r.apache),
            clip(&r.proxy)
        );
    }
    out
}

/// The reference run must look like the fixture says; otherwise the environment changed and a
/// comparison against it would mislead.
fn check_reference(apache: &SideRun) -> Vec<String> {
    let mut problems = Vec::new();
    for (shape, obs) in SHAPES.iter().zip(&apache.observed) {
        let status = match &obs.response {
            Some(Ok(r)) => r.status.to_string(),
            other => show_response(other),
        };
        if status != shape.apache_status.to_string() {
            problems.push(format!(
                "{}: Apache answered {status}, the fixture expects {}",
                shape.name, shape.apache_status
            ));
        }
        let reached = !obs.backend.is_empty();
        if reached != shape.apache_reaches_backend || obs.backend.len() > 1 {
            problems.push(format!(
                "{}: Apache made {} backend request(s), the fixture expects {}",
                shape.name,
                obs.backend.len(),
                u8::from(shape.apache_reaches_backend)
            ));
        }
    }
    for (label, e) in &apache.stray {
        problems.push(format!(
            "Apache sent an unattributed request to {label}: REQUEST_URI={:?}",
            e.param("REQUEST_URI")
        ));
    }
    problems
}

/// Everything one side's backends received, shape by shape (`PARITY_DUMP=1`).
fn dump(side: &str, run: &SideRun) -> String {
    let mut out = format!("===== what the backends received through {side} =====\n");
    for (shape, obs) in SHAPES.iter().zip(&run.observed) {
        let _ = writeln!(
            out,
            "[{}] {} -> {}",
            shape.name,
            shape.line,
            show_response(&obs.response)
        );
        for (label, e) in &obs.backend {
            let _ = writeln!(
                out,
                "  backend {label} conn {} keep_conn {} stdin {:?}",
                e.connection,
                e.keep_conn,
                e.stdin_lossy()
            );
            for (n, v) in e.params_lossy() {
                let _ = writeln!(out, "    {n}={v:?}");
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Snapshots of what the proxy sent
// ---------------------------------------------------------------------------------------------

/// Replaces what changes from run to run (temp dir, ports) with stable names.
struct Redactor {
    rules: Vec<(regex::Regex, &'static str)>,
}

impl Redactor {
    fn new(env: &Env) -> Redactor {
        let port = |p: u16| regex::Regex::new(&format!(r"\b{p}\b")).expect("port regex");
        let dir = env.dir.path().display().to_string();
        Redactor {
            rules: vec![
                (
                    regex::Regex::new(&regex::escape(&dir)).expect("dir regex"),
                    "[DIR]",
                ),
                (port(env.front.port()), "[FRONT_PORT]"),
                (port(env.p1), "[P1_PORT]"),
                (port(env.p2), "[P2_PORT]"),
            ],
        }
    }

    fn apply(&self, s: &str) -> String {
        self.rules.iter().fold(s.to_string(), |acc, (re, to)| {
            re.replace_all(&acc, *to).into_owned()
        })
    }
}

fn snapshot_value(shape: &Shape, obs: &Observed, r: &Redactor) -> Value {
    let status = match &obs.response {
        Some(Ok(resp)) => json!(resp.status),
        other => json!(show_response(other)),
    };
    let backend: Vec<Value> = obs
        .backend
        .iter()
        .map(|(label, e)| {
            let params: Vec<Value> = e
                .params_lossy()
                .into_iter()
                .map(|(n, v)| {
                    // Random per run; the allow-list covers it and the snapshot must not churn.
                    let v = if n == "REMOTE_PORT" {
                        "[REMOTE_PORT]".to_string()
                    } else {
                        r.apply(&v)
                    };
                    json!([n, v])
                })
                .collect();
            json!({
                "backend": label,
                "keep_conn": e.keep_conn,
                "request_id": e.request_id,
                "params": params,
                "stdin": e.stdin_lossy(),
            })
        })
        .collect();
    json!({
        "request": r.apply(shape.line),
        "status": status,
        "backend_requests": backend,
    })
}

/// Asserts every snapshot (all of them, not stopping at the first mismatch); returns the names of
/// those that did not match.
fn assert_snapshots(proxy: &SideRun, env: &Env) -> Vec<&'static str> {
    let redactor = Redactor::new(env);
    let mut failed = Vec::new();
    for (shape, obs) in SHAPES.iter().zip(&proxy.observed) {
        let value = snapshot_value(shape, obs, &redactor);
        let mut settings = insta::Settings::clone_current();
        settings.set_omit_expression(true);
        settings.set_description(format!("params fcgi-proxy sent for: {}", shape.line));
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            settings.bind(|| insta::assert_yaml_snapshot!(shape.name, value));
        }));
        if ok.is_err() {
            failed.push(shape.name);
        }
    }
    failed
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

struct Env {
    dir: tempfile::TempDir,
    front: SocketAddr,
    conf: PathBuf,
    p1: u16,
    p2: u16,
}

fn write_config(dir: &Path, front: SocketAddr, p1: u16, p2: u16) -> PathBuf {
    let docroot = dir.join("docroot");
    std::fs::create_dir_all(&docroot).expect("docroot");
    std::fs::create_dir_all(dir.join("run")).expect("run dir");
    // The file `full` maps /pi-full/full.php/extra onto.
    std::fs::write(docroot.join("full.php"), "<?php\n").expect("full.php");
    // The files handler mode maps onto.
    std::fs::create_dir_all(docroot.join("sub")).expect("sub");
    for f in [
        "index.php",
        "a b.php",
        "sub/s.php",
        "sub/index.php",
        "readme.txt",
    ] {
        std::fs::write(docroot.join(f), "<?php\n").expect(f);
    }
    let conf = fill_config(dir, &docroot, front, p1, p2);
    let path = dir.join("httpd.conf");
    std::fs::write(&path, conf).expect("write httpd.conf");
    path
}

fn fill_config(dir: &Path, docroot: &Path, front: SocketAddr, p1: u16, p2: u16) -> String {
    support::fill_template(
        TEMPLATE,
        &[
            ("DIR", dir.display().to_string()),
            ("DOCROOT", docroot.display().to_string()),
            ("LISTEN", front.port().to_string()),
            ("P1", p1.to_string()),
            ("P2", p2.to_string()),
        ],
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// The config in a fresh temp dir, a free front port, and the two echo backends it names.
async fn setup() -> (Env, Backends) {
    let p1 = MockServer::bind_tcp("127.0.0.1:0", Script::default())
        .await
        .expect("mock P1");
    let p2 = MockServer::bind_tcp("127.0.0.1:0", Script::default())
        .await
        .expect("mock P2");
    let port_of = |m: &MockHandle| m.socket_addr().expect("tcp mock").port();
    let dir = tempfile::Builder::new()
        .prefix("apache-parity-")
        .tempdir()
        .expect("tempdir");
    support::open_up_dir(dir.path());
    let front: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .expect("addr");
    let env = Env {
        front,
        conf: write_config(dir.path(), front, port_of(&p1), port_of(&p2)),
        p1: port_of(&p1),
        p2: port_of(&p2),
        dir,
    };
    let backends = Backends {
        mocks: vec![("P1", p1), ("P2", p2)],
    };
    (env, backends)
}

/// Every shape through `fcgi-proxy --apache` on `env`'s config: what the backends received,
/// the proxy's output, and why it did not start if it did not.
async fn run_proxy(env: &Env, backends: &Backends) -> (SideRun, String, Option<String>) {
    let (conf, dpath, front) = (env.conf.clone(), env.dir.path().to_path_buf(), env.front);
    let started = blocking(move || support::start_proxy_apache(&conf, &dpath, front)).await;
    match started {
        Ok(proc) => {
            let run = run_side(env.front, backends).await;
            let output = proc.output();
            blocking(move || drop(proc)).await;
            (run, output, None)
        }
        Err(e) => (SideRun::default(), String::new(), Some(e)),
    }
}

/// Our proxy alone (no Apache needed): what it sent for each shape is what its snapshot holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_sends_what_its_snapshots_show() {
    let (env, backends) = setup().await;
    let (run, output, problem) = run_proxy(&env, &backends).await;
    if let Some(problem) = problem {
        panic!("fcgi-proxy did not start: {problem}\n{output}");
    }
    let failures = assert_snapshots(&run, &env);
    assert!(
        failures.is_empty(),
        "snapshots changed for: {} (review with cargo insta review)\n{output}",
        failures.join(", ")
    );
}

/// Every `apache_parity__<name>.snap` is the snapshot of a shape in [`SHAPES`], and every shape
/// has one: a shape renamed or removed leaves no snapshot behind.
#[test]
fn every_snapshot_is_a_shape() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let files: BTreeSet<String> = testkit::file_names(&dir)
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("apache_parity__")
                .and_then(|n| n.strip_suffix(".snap"))
                .map(str::to_owned)
        })
        .collect();
    let shapes: BTreeSet<String> = SHAPES.iter().map(|s| s.name.to_owned()).collect();
    assert_eq!(shapes.len(), SHAPES.len(), "two shapes share a name");
    let stale: Vec<&String> = files.difference(&shapes).collect();
    let absent: Vec<&String> = shapes.difference(&files).collect();
    assert!(
        stale.is_empty() && absent.is_empty(),
        "snapshots of no shape (delete them): {stale:?}; shapes without a snapshot (cargo insta \
         test, then review): {absent:?}"
    );
}

/// Our proxy and real Apache, same config, same front port, same backends: what each backend
/// request carried and what the client got compare, but for [`ALLOWED`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_sends_what_apache_sends() {
    let Some(apache) = programs::require_program("apache2", "apache2") else {
        return;
    };
    let (env, backends) = setup().await;
    let front = env.front;
    let t0 = std::time::Instant::now();

    // 1. The proxy.
    let (proxy_run, proxy_output, proxy_problem) = run_proxy(&env, &backends).await;
    let t_proxy = t0.elapsed();

    // 2. Real Apache, same config, same front port, same backends.
    let (conf, dpath) = (env.conf.clone(), env.dir.path().to_path_buf());
    let apache_proc: Proc =
        blocking(move || support::start_apache(&apache, &conf, &dpath, front)).await;
    let apache_run = run_side(env.front, &backends).await;
    blocking(move || drop(apache_proc)).await;
    let t_apache = t0.elapsed() - t_proxy;

    if std::env::var_os("PARITY_DUMP").is_some() {
        eprintln!("{}", dump("Apache", &apache_run));
        eprintln!("{}", dump("fcgi-proxy", &proxy_run));
    }
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Apache parity: {} request shapes (proxy {:.1?}, Apache {:.1?})",
        SHAPES.len(),
        t_proxy,
        t_apache
    );
    let reference = check_reference(&apache_run);
    if !reference.is_empty() {
        let _ = writeln!(
            report,
            "\nReal Apache did not behave as the fixture documents (environment changed?):"
        );
        for p in &reference {
            let _ = writeln!(report, "  - {p}");
        }
        let errlog = std::fs::read_to_string(env.dir.path().join("error.log")).unwrap_or_default();
        let _ = writeln!(report, "--- Apache error.log ---\n{errlog}");
    }

    if let Some(problem) = &proxy_problem {
        let _ = writeln!(report, "\nfcgi-proxy did not start: {problem}");
        eprintln!("{report}");
        panic!(
            "fcgi-proxy did not start; Apache reference problems: {}",
            reference.len()
        );
    }

    // Compare, shape by shape. Tables for the shapes that differ; allowed differences counted.
    let mut differing = Vec::new();
    let mut allowed_only = 0;
    // (field, reason) -> shapes where the allowance was used.
    let mut used: Vec<(&'static str, &'static str, usize)> = Vec::new();
    let mut tables = String::new();
    for (i, shape) in SHAPES.iter().enumerate() {
        let rows = compare(i, &apache_run, &proxy_run);
        let shown: Vec<&Row> = rows.iter().filter(|r| r.verdict != Verdict::Same).collect();
        for r in &shown {
            if let Verdict::Allowed(reason) = r.verdict {
                let field = ALLOWED
                    .iter()
                    .find(|a| a.reason == reason)
                    .map_or("?", |a| a.field);
                match used
                    .iter_mut()
                    .find(|(f, why, _)| *f == field && *why == reason)
                {
                    Some(u) => u.2 += 1,
                    None => used.push((field, reason, 1)),
                }
            }
        }
        if shown.iter().any(|r| r.verdict == Verdict::Differs) {
            differing.push(shape.name);
            let req = build_request(shape, env.front);
            let _ = writeln!(tables, "\n[{}] {}", shape.name, req.first_line());
            tables.push_str(&table(&shown));
        } else if !shown.is_empty() {
            allowed_only += 1;
        }
    }
    report.push_str(&tables);
    for (label, e) in &proxy_run.stray {
        let _ = writeln!(
            report,
            "\nfcgi-proxy sent an unattributed request to {label}: REQUEST_URI={:?}",
            e.param("REQUEST_URI")
        );
    }
    let _ = writeln!(
        report,
        "\nSummary: {} shapes; {} identical, {} with allowed differences only, {} differing{}",
        SHAPES.len(),
        SHAPES.len() - allowed_only - differing.len(),
        allowed_only,
        differing.len(),
        if differing.is_empty() {
            String::new()
        } else {
            format!(": {}", differing.join(", "))
        }
    );
    for (field, reason, n) in &used {
        let _ = writeln!(report, "  allowed {field} in {n} shape(s): {reason}");
    }
    let unused: Vec<String> = ALLOWED
        .iter()
        .filter(|a| {
            !used
                .iter()
                .any(|(f, why, _)| *f == a.field && *why == a.reason)
        })
        .map(|a| format!("{} ({})", a.field, a.cases.join(", ")))
        .collect();
    if !unused.is_empty() {
        let _ = writeln!(
            report,
            "  allow-list entries not needed this run: {}",
            unused.join("; ")
        );
    }
    if !differing.is_empty() {
        report.push_str(&proxy_output);
    }

    eprintln!("{report}");

    assert!(
        reference.is_empty(),
        "the Apache reference run changed; see the report above"
    );
    assert!(
        differing.is_empty() && proxy_run.stray.is_empty(),
        "fcgi-proxy differs from Apache for {} shape(s): {}; see the table above",
        differing.len(),
        differing.join(", ")
    );
}
