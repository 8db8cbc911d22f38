//! HTTP/2 requests a client library would not send, written frame by frame (h2c with prior
//! knowledge: the same server code as h2 over TLS after the handshake). Malformed requests are
//! refused before any backend hears of them; a flood of streams opened and reset ("rapid
//! reset", CVE-2023-44487) loses its connection.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fcgi_mock::{MockHandle, MockServer, Script};
use support::Proc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use testkit::h2::{
    DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PREFACE, RST_STREAM, SETTINGS, frame,
};

/// A header block of literal fields without indexing (RFC 7541 6.2.2), names and values as
/// given.
fn block(fields: &[(&str, &[u8])]) -> Vec<u8> {
    testkit::h2::literal_block(fields.iter().map(|(n, v)| (n.as_bytes(), *v)))
}

/// Header fields in the order they are sent.
type Fields = Vec<(&'static str, &'static [u8])>;

fn get_fields(path: &'static str) -> Vec<(&'static str, &'static [u8])> {
    vec![
        (":method", b"GET"),
        (":scheme", b"http"),
        (":authority", b"h2.test"),
        (":path", path.as_bytes()),
    ]
}

/// What the server sent on a connection, frame types with their stream, until it closed or
/// went quiet for `quiet`.
async fn exchange(
    front: SocketAddr,
    frames: &[Vec<u8>],
    quiet: Duration,
) -> (Vec<(u8, u32, u8)>, bool) {
    exchange_paced(front, &[frames.concat()], Duration::ZERO, quiet).await
}

/// [`exchange`] with the frames written in `parts`, `pause` apart.
async fn exchange_paced(
    front: SocketAddr,
    parts: &[Vec<u8>],
    pause: Duration,
    quiet: Duration,
) -> (Vec<(u8, u32, u8)>, bool) {
    let (buf, closed) = exchange_bytes(front, parts, pause, quiet).await;
    (frames_of(&buf), closed)
}

/// What the server sent, as bytes.
async fn raw_exchange(front: SocketAddr, frames: &[Vec<u8>], quiet: Duration) -> Vec<u8> {
    exchange_bytes(front, &[frames.concat()], Duration::ZERO, quiet)
        .await
        .0
}

async fn exchange_bytes(
    front: SocketAddr,
    parts: &[Vec<u8>],
    pause: Duration,
    quiet: Duration,
) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(front).await.expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    // The server may close before reading all of it.
    let _ = s.write_all(&out).await;
    for p in parts {
        if s.write_all(p).await.is_err() {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    let mut buf = Vec::new();
    let mut closed = false;
    loop {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(quiet, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    (buf, closed)
}

/// The frames in `buf`: type, stream, first payload byte.
fn frames_of(buf: &[u8]) -> Vec<(u8, u32, u8)> {
    let mut seen = Vec::new();
    let mut i = 0;
    while i + 9 <= buf.len() {
        let len =
            (usize::from(buf[i]) << 16) | (usize::from(buf[i + 1]) << 8) | usize::from(buf[i + 2]);
        let stream =
            u32::from_be_bytes([buf[i + 5], buf[i + 6], buf[i + 7], buf[i + 8]]) & 0x7fff_ffff;
        // With the first byte of the payload: for a HEADERS frame, an indexed `:status`.
        seen.push((buf[i + 3], stream, buf.get(i + 9).copied().unwrap_or(0)));
        i += 9 + len;
    }
    seen
}

/// Whether a frame of this type came on this stream.
fn has(seen: &[(u8, u32, u8)], kind: u8, stream: u32) -> bool {
    seen.iter().any(|(t, s, _)| *t == kind && *s == stream)
}

fn goaway(seen: &[(u8, u32, u8)]) -> bool {
    seen.iter().any(|(t, _, _)| *t == GOAWAY)
}

/// Whether stream 1 was refused: reset, or the connection ended with GOAWAY, and no response
/// head came for it; or answered 400 (HPACK static index 12, `:status 400`), as nginx
/// refuses some of them.
fn refused(seen: &[(u8, u32, u8)]) -> bool {
    let reset = has(seen, RST_STREAM, 1) || goaway(seen);
    let head_400 = seen
        .iter()
        .any(|(t, s, first)| *t == HEADERS && *s == 1 && *first == 0x80 | 12);
    (reset && !has(seen, HEADERS, 1)) || head_400
}

struct Setup {
    _dir: tempfile::TempDir,
    proxy: Option<Proc>,
    front: SocketAddr,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(p) = self.proxy.take() {
            // Stopping waits; not on the runtime's threads.
            std::thread::spawn(move || drop(p)).join().ok();
        }
    }
}

async fn start(backend: &str, limits: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let conf = format!(
        r#"
workers = 1
[timeouts]
backend_io = "30s"
[limits]
{limits}

[[listener]]
addr = "127.0.0.1:{port}"
protocols = ["h2c", "http/1.1"]

[[route]]
path = "/"
target = "fcgi://{backend}/"
"#
    );
    let c = dir.path().join("proxy.toml");
    std::fs::write(&c, conf).expect("write config");
    let l = dir.path().join("proxy.log");
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let proxy = tokio::task::spawn_blocking(move || support::start_proxy_toml(&c, &l, front))
        .await
        .expect("blocking")
        .expect("proxy starts");
    Setup {
        _dir: dir,
        proxy: Some(proxy),
        front,
    }
}

fn backend_requests(m: &MockHandle) -> usize {
    m.journal().requests().len()
}

/// Malformed requests, each on a connection of its own, against `front` (after a good one,
/// which must be answered): for each, its name and whether it was refused without reaching the
/// backend.
async fn try_malformed(
    front: SocketAddr,
    mock: &MockHandle,
    who: &str,
) -> Vec<(&'static str, bool)> {
    let quiet = Duration::from_millis(500);
    let headers =
        |fields: &[(&str, &[u8])]| frame(HEADERS, END_STREAM | END_HEADERS, 1, &block(fields));

    // A well-formed one first: the frames are right and reach the backend.
    let (seen, _) = exchange(front, &[headers(&get_fields("/ok"))], quiet).await;
    assert!(
        has(&seen, HEADERS, 1),
        "{who}: no answer to a good request: {seen:?}"
    );
    assert_eq!(backend_requests(mock), 1, "{who}");

    let mut cases: Vec<(&'static str, Fields)> = Vec::new();
    let mut f = get_fields("/c");
    f.push(("connection", b"keep-alive"));
    cases.push(("connection-specific field", f));
    let mut f = get_fields("/t");
    f.push(("transfer-encoding", b"chunked"));
    cases.push(("transfer-encoding", f));
    let mut f = get_fields("/d");
    f.push((":path", b"/second"));
    cases.push(("two :path", f));
    let mut f: Vec<(&str, &[u8])> = vec![("x-early", b"1")];
    f.extend(get_fields("/late"));
    cases.push(("pseudo-header after a field", f));
    let mut f = get_fields("/u");
    f.push((":foo", b"bar"));
    cases.push(("unknown pseudo-header", f));
    cases.push((
        "no :path",
        vec![
            (":method", b"GET"),
            (":scheme", b"http"),
            (":authority", b"h2.test"),
        ],
    ));
    let mut f = get_fields("/crlf");
    f.push(("x-split", b"a\r\nInjected: 1"));
    cases.push(("CR LF in a value", f));
    let mut f = get_fields("/nul");
    f.push(("x-nul", b"a\0b"));
    cases.push(("NUL in a value", f));
    let mut f = get_fields("/upper");
    f.push(("X-Upper", b"1"));
    cases.push(("upper-case field name", f));
    let mut out = Vec::new();
    for (what, fields) in &cases {
        let before = backend_requests(mock);
        let (seen, _) = exchange(front, &[headers(fields)], quiet).await;
        out.push((*what, refused(&seen) && backend_requests(mock) == before));
    }

    // Content-Length 10, 5 bytes of DATA, end of stream.
    let post: Vec<(&str, &[u8])> = vec![
        (":method", b"POST"),
        (":scheme", b"http"),
        (":authority", b"h2.test"),
        (":path", b"/cl"),
        ("content-length", b"10"),
    ];
    let before = backend_requests(mock);
    let _ = exchange(
        front,
        &[
            frame(HEADERS, END_HEADERS, 1, &block(&post)),
            frame(DATA, END_STREAM, 1, b"hello"),
        ],
        quiet,
    )
    .await;
    out.push(("content-length mismatch", backend_requests(mock) == before));
    // An upload reset midway.
    let before = backend_requests(mock);
    let _ = exchange(
        front,
        &[
            frame(HEADERS, END_HEADERS, 1, &block(&post)),
            frame(DATA, 0, 1, b"hel"),
            frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()),
        ],
        quiet,
    )
    .await;
    out.push(("upload reset midway", backend_requests(mock) == before));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_h2_requests_never_reach_the_backend() {
    let mock = MockServer::bind_tcp("127.0.0.1:0", Script::default())
        .await
        .expect("mock");
    let setup = start(&mock.socket_addr().expect("tcp").to_string(), "").await;
    let results = try_malformed(setup.front, &mock, "fcgi-proxy").await;
    let passed: Vec<&str> = results
        .iter()
        .filter(|(_, refused)| !refused)
        .map(|(what, _)| *what)
        .collect();
    assert!(
        passed.is_empty(),
        "not refused, or reached the backend: {passed:?}"
    );
}

/// The same frames against nginx 1.22 (h2c, `fastcgi_pass` to the same kind of backend): it
/// refuses them too, but for `connection` and `transfer-encoding` fields and a pseudo-header
/// after a regular field, which it serves (RFC 9113 8.2.2 and 8.3 call such requests
/// malformed): fcgi-proxy is the stricter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_refuses_the_same_h2_requests() {
    let Some(nginx) = programs::require_program("nginx", "nginx") else {
        return;
    };
    let f = support::Fixture::new(Script::default()).await;
    let (mock, backend, port, front, dir) = (&f.mock, f.backend, f.port, f.front, &f.dir);
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
         fastcgi_temp_path {d}/fcgi;\n  proxy_temp_path {d}/proxy;\n  uwsgi_temp_path {d}/uwsgi;\n  \
         scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port} http2;\n    \
         location / {{\n      include /etc/nginx/fastcgi_params;\n      \
         fastcgi_pass {backend};\n    }}\n  }}\n}}\n"
    );
    let c = dir.path().join("nginx.conf");
    std::fs::write(&c, conf).expect("write config");
    let mut cmd = std::process::Command::new(&nginx);
    cmd.arg("-c").arg(&c).arg("-p").arg(dir.path());
    let log = dir.path().join("nginx.out");
    let proc = tokio::task::spawn_blocking(move || {
        let mut p = Proc::spawn("nginx", cmd, &log);
        p.wait_ready(front, None).map(|()| p)
    })
    .await
    .expect("blocking")
    .expect("nginx starts");
    let results = try_malformed(front, mock, "nginx").await;
    let lenient = [
        "connection-specific field",
        "transfer-encoding",
        "pseudo-header after a field",
    ];
    let unexpected: Vec<&(&str, bool)> = results
        .iter()
        .filter(|(what, refused)| *refused == lenient.contains(what))
        .collect();
    assert!(
        unexpected.is_empty(),
        "nginx did not behave as documented (case, refused): {unexpected:?}"
    );
    tokio::task::spawn_blocking(move || drop(proc))
        .await
        .expect("stop nginx");
}

/// Streams opened and reset at once, over and over: the connection is closed long before the
/// flood ends, and the backend hears of a bounded number of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_flood_loses_its_connection() {
    // A backend that accepts connections (into its backlog) and never answers: each request
    // is in flight until its stream is reset.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let setup = start(&silent.local_addr().expect("addr").to_string(), "").await;
    const STREAMS: u32 = 1000;
    let mut frames = Vec::new();
    for i in 0..STREAMS {
        let id = 1 + 2 * i;
        frames.push(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &block(&get_fields("/r")),
        ));
        frames.push(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let (seen, closed) = exchange(setup.front, &frames, Duration::from_secs(3)).await;
    assert!(
        closed || goaway(&seen),
        "the connection survived {STREAMS} reset streams"
    );
    // The proxy still serves others.
    let (seen, _) = exchange(
        setup.front,
        &[frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &block(&get_fields("/after")),
        )],
        Duration::from_millis(300),
    )
    .await;
    assert!(!goaway(&seen), "refused after the flood: {seen:?}");
    drop(silent);
}

/// Streams opened and reset one after another, each after its request has started (so the
/// HTTP/2 layer's own bound on streams reset before they are served does not apply): after
/// 100 such resets the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_resets_lose_their_connection() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    // No cap on requests per connection (MaxKeepAliveRequests 0), which would end the
    // connection after 100 requests as well.
    let setup = start(
        &silent.local_addr().expect("addr").to_string(),
        "max_keep_alive_requests = 0",
    )
    .await;
    const STREAMS: u32 = 160;
    let mut parts = Vec::new();
    for i in 0..STREAMS {
        let id = 1 + 2 * i;
        parts.push(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &block(&get_fields("/p")),
        ));
        parts.push(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let (seen, closed) = exchange_paced(
        setup.front,
        &parts,
        Duration::from_millis(3),
        Duration::from_secs(2),
    )
    .await;
    assert!(
        closed || goaway(&seen),
        "the connection survived {STREAMS} requests reset one by one"
    );
    drop(silent);
}

/// The `:status` of the response on stream 1 when it was sent as an indexed HPACK field
/// (RFC 7541 Appendix A: 8 = 200, 12 = 400, 13 = 404, 14 = 500); else `None`.
fn indexed_status(seen: &[(u8, u32, u8)]) -> Option<u16> {
    let first = seen
        .iter()
        .find(|(t, s, _)| *t == HEADERS && *s == 1)
        .map(|(_, _, b)| *b)?;
    Some(match first {
        0x88 => 200,
        0x89 => 204,
        0x8a => 206,
        0x8b => 304,
        0x8c => 400,
        0x8d => 404,
        0x8e => 500,
        _ => return None,
    })
}

/// The status of the proxy's own error page in `raw` (its `<title>` starts with it): the
/// head's `:status` may be Huffman-coded.
fn literal_status(raw: &[u8]) -> Option<u16> {
    let at = raw.windows(7).position(|w| w == b"<title>")? + 7;
    std::str::from_utf8(raw.get(at..at + 3)?).ok()?.parse().ok()
}

/// The HTTP/1.1 limits hold over HTTP/2: too many header fields is 431, a body over
/// `max_body` is 413, and neither reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_meet_the_http1_limits() {
    let mock = MockServer::bind_tcp("127.0.0.1:0", Script::default())
        .await
        .expect("mock");
    let setup = start(
        &mock.socket_addr().expect("tcp").to_string(),
        "max_headers = 8\nmax_body = 10",
    )
    .await;
    let quiet = Duration::from_millis(500);
    // 12 fields.
    let mut many = get_fields("/many");
    let names: [&'static str; 8] = ["x-a", "x-b", "x-c", "x-d", "x-e", "x-f", "x-g", "x-h"];
    for n in names {
        many.push((n, b"1"));
    }
    let raw = raw_exchange(
        setup.front,
        &[frame(HEADERS, END_STREAM | END_HEADERS, 1, &block(&many))],
        quiet,
    )
    .await;
    assert_eq!(literal_status(&raw), Some(431), "too many fields");
    // A declared body over max_body.
    let post: Fields = vec![
        (":method", b"POST"),
        (":scheme", b"http"),
        (":authority", b"h2.test"),
        (":path", b"/big"),
        ("content-length", b"20"),
    ];
    let raw = raw_exchange(
        setup.front,
        &[
            frame(HEADERS, END_HEADERS, 1, &block(&post)),
            frame(DATA, END_STREAM, 1, b"01234567890123456789"),
        ],
        quiet,
    )
    .await;
    assert_eq!(literal_status(&raw), Some(413), "body over max_body");
    assert_eq!(backend_requests(&mock), 0);
    // Within the limits, served.
    let (seen, _) = exchange(
        setup.front,
        &[frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &block(&get_fields("/ok")),
        )],
        quiet,
    )
    .await;
    assert_eq!(indexed_status(&seen), Some(200), "{seen:?}");
}

/// A client that gives no flow-control window holds its response for `client_write` at most
/// (then the connection closes), not for as long as it keeps answering pings; and an HTTP/2
/// connection that sends no request closes after `header_read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_stalls_and_idle_connections_are_bounded() {
    let mock = MockServer::bind_tcp("127.0.0.1:0", Script::default())
        .await
        .expect("mock");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let conf = format!(
        r#"
workers = 1
[timeouts]
client_write = "1s"
header_read = "1s"

[[listener]]
addr = "127.0.0.1:{port}"
protocols = ["h2c", "http/1.1"]

[[route]]
path = "/"
target = "fcgi://{}/"
"#,
        mock.socket_addr().expect("tcp")
    );
    let c = dir.path().join("proxy.toml");
    std::fs::write(&c, conf).expect("write config");
    let l = dir.path().join("proxy.log");
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let proxy = tokio::task::spawn_blocking(move || support::start_proxy_toml(&c, &l, front))
        .await
        .expect("blocking")
        .expect("proxy starts");

    // SETTINGS_INITIAL_WINDOW_SIZE = 0: the response head can come, its data cannot.
    let no_window = frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]);
    let t0 = std::time::Instant::now();
    let (seen, closed) = exchange(
        front,
        &[
            no_window,
            frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                1,
                &block(&get_fields("/w")),
            ),
        ],
        Duration::from_secs(4),
    )
    .await;
    assert!(has(&seen, HEADERS, 1), "no response head: {seen:?}");
    assert!(
        closed && t0.elapsed() < Duration::from_secs(4),
        "a response without window was held {:?} (closed: {closed})",
        t0.elapsed()
    );

    // Preface and SETTINGS, then nothing: GOAWAY after header_read (1 s), before the client
    // has been quiet for 2 s.
    let (seen, closed) = exchange(front, &[], Duration::from_millis(2000)).await;
    assert!(
        closed || goaway(&seen),
        "an idle HTTP/2 connection was not closed: {seen:?}"
    );
    std::thread::spawn(move || drop(proxy)).join().ok();
}
