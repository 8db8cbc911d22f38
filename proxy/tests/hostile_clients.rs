//! Hostile clients (docs/reference/security.md S4, S5, S12, S13, S21, R8): malformed or ambiguous
//! request framing, oversized heads, bodies and targets, slowloris, slow readers and clients that
//! vanish. Each test checks what the client gets and, from the mock's journal, what the backend saw
//! (or that it saw nothing).

mod front;

use std::time::Duration;

use fcgi_mock::MockHandle;
use fcgi_mock::journal::ClosedBy;
use front::{Front, T, assert_pool_empty, conf, get, mock, send, start, talk, wait_closed, within};
use http::StatusCode;
use testkit::http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn uris_seen(m: &MockHandle) -> Vec<String> {
    m.journal()
        .snapshot()
        .requests
        .iter()
        .map(|r| r.param("REQUEST_URI").unwrap_or_default())
        .collect()
}

/// A GET for `path` on a new connection to the proxy; the response is not read.
async fn get_on_new_connection(f: &Front, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(&f.addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

/// Reads the first bytes of the response on `s`, which must be a 200; how many were read.
async fn read_start_of_200(s: &mut TcpStream) -> usize {
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .expect("the response starts in time")
        .unwrap();
    let head = http1::parse_head(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        head.is_some_and(|h| h.status == 200),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    n
}

/// Within `budget` the proxy, not the backend, closes the (only) backend connection, and
/// nothing is left in the pool.
async fn backend_freed(m: &MockHandle, f: &Front, budget: Duration) {
    let c = wait_closed(m, 0, budget).await;
    assert_ne!(c.closed_by, Some(ClosedBy::Backend), "{c:?}");
    assert_pool_empty(f);
}

/// Pipelined after every malformed request: it must never be served on that connection.
const CANARY: &[u8] = b"GET /app/canary HTTP/1.1\r\nHost: x\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Framing ambiguity (S4)

/// RFC 9112 6.1/6.3 and Apache's protocol.c: with both Transfer-Encoding and Content-Length the
/// chunked framing wins, the Content-Length is dropped and the connection is closed after the
/// response, so nothing the client sent after the chunked body is ever read as a request.
#[tokio::test]
async fn content_length_with_chunked_closes_and_nothing_smuggled_reaches_the_backend() {
    within(T, async {
        let m = mock("").await;
        let f = start(&conf(&m, ""), |_| {}).await;
        let smuggled = b"0\r\n\r\nGET /app/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        for (cl_first, te) in [(true, "chunked"), (false, "chunked"), (true, "Chunked")] {
            let cl = format!("Content-Length: {}\r\n", smuggled.len());
            let te = format!("Transfer-Encoding: {te}\r\n");
            let (a, b) = if cl_first { (&cl, &te) } else { (&te, &cl) };
            let mut req = format!("POST /app/post HTTP/1.1\r\nHost: x\r\n{a}{b}\r\n").into_bytes();
            req.extend_from_slice(smuggled);
            req.extend_from_slice(CANARY);
            let t = talk(&f.addr, &req, T).await;
            assert!(t.closed, "the connection is closed after the response");
            assert_eq!(t.statuses().len(), 1, "exactly one response: {}", t.text());
            let st = t.statuses()[0];
            assert!(st == 200 || st == 400, "{}", t.text());
            if st == 200 {
                assert!(
                    t.text().to_ascii_lowercase().contains("connection: close"),
                    "the response announces the close: {}",
                    t.text()
                );
            }
        }
        let seen = uris_seen(&m);
        assert!(
            seen.iter().all(|u| u == "/app/post"),
            "only the POST itself may reach the backend: {seen:?}"
        );
        for r in m.journal().snapshot().requests {
            // Chunked framing: an empty body, and CONTENT_LENGTH agrees with STDIN.
            assert_eq!(r.stdin_len, 0);
            assert!(matches!(
                r.param("CONTENT_LENGTH").as_deref(),
                None | Some("0")
            ));
        }
    })
    .await;
}

/// Requests whose framing or header syntax is invalid: 400, connection closed, the backend
/// never contacted, and the pipelined request after it never served.
#[tokio::test]
async fn malformed_heads_are_400_and_never_reach_the_backend() {
    within(Duration::from_secs(30), async {
        let m = mock("").await;
        let f = start(&conf(&m, ""), |_| {}).await;
        let cases: &[(&str, &[u8])] = &[
            (
                "differing duplicate Content-Length",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            ),
            (
                "Content-Length list",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
            ),
            (
                "Content-Length with sign",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
            ),
            (
                "Content-Length in hex",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
            ),
            (
                "empty Content-Length",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
            ),
            (
                "Transfer-Encoding not ending in chunked",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            ),
            (
                "chunked applied twice",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "chunked twice over two lines",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "a coding before chunked",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "unknown Transfer-Encoding",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "Transfer-Encoding on HTTP/1.0",
                b"POST /app/x HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "bad chunk size",
                b"POST /app/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nx\r\n0\r\n\r\n",
            ),
            (
                "obs-fold",
                b"GET /app/x HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
            ),
            (
                "obs-fold with tab",
                b"GET /app/x HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
            ),
            (
                "bare CR in a value",
                b"GET /app/x HTTP/1.1\r\nHost: x\r\nX-A: a\rSet-Cookie: b\r\n\r\n",
            ),
            (
                "bare CR as a line end",
                b"GET /app/x HTTP/1.1\r\nHost: x\rX-A: a\r\n\r\n",
            ),
            (
                "NUL in a value",
                b"GET /app/x HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
            ),
            (
                "non-token name",
                b"GET /app/x HTTP/1.1\r\nHost: x\r\nX-A@b: 1\r\n\r\n",
            ),
            (
                "8-bit name",
                b"GET /app/x HTTP/1.1\r\nHost: x\r\nX-\x80: 1\r\n\r\n",
            ),
            (
                "space before the colon",
                b"GET /app/x HTTP/1.1\r\nHost: x\r\nX-Foo : v\r\n\r\n",
            ),
            (
                "empty name",
                b"GET /app/x HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n",
            ),
            (
                "control character in the target",
                b"GET /app/x\x01y HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
        ];
        for (what, head) in cases {
            let mut req = head.to_vec();
            req.extend_from_slice(CANARY);
            let t = talk(&f.addr, &req, T).await;
            assert_eq!(
                t.statuses(),
                [400],
                "{what}: one 400 and nothing else: {}",
                t.text()
            );
            assert!(t.closed, "{what}: connection closed");
            let j = m.journal().snapshot();
            assert_eq!(j.connection_count(), 0, "{what}: the backend was contacted");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Size limits (S12)

#[tokio::test]
async fn oversized_heads_are_431_and_never_reach_the_backend() {
    within(T, async {
        let m = mock("").await;
        let f = start(&conf(&m, ""), |_| {}).await;
        // One 70,000-byte header (over the 64 KiB head limit).
        let big = format!(
            "GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "a".repeat(70_000)
        );
        let t = talk(&f.addr, big.as_bytes(), T).await;
        assert_eq!(
            t.statuses(),
            [431],
            "{}",
            &t.text()[..t.text().len().min(200)]
        );
        // One 9,000-byte field line (over LimitRequestFieldSize 8190, under the head limit).
        let line = format!(
            "GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Long: {}\r\n\r\n",
            "b".repeat(9_000)
        );
        let t = talk(&f.addr, line.as_bytes(), T).await;
        assert_eq!(
            t.statuses(),
            [431],
            "{}",
            &t.text()[..t.text().len().min(200)]
        );
        // Two field lines under LimitRequestFieldSize whose merged value (`a, b`, as the
        // backend would get it) is over it.
        let merged = format!(
            "GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Long: {}\r\nX-Long: {}\r\n\r\n",
            "c".repeat(7_854),
            "d".repeat(476)
        );
        let t = talk(&f.addr, merged.as_bytes(), T).await;
        assert_eq!(t.statuses(), [431], "merged value over the limit");
        // 101 headers (over LimitRequestFields 100).
        let mut many = String::from("GET /app/x HTTP/1.1\r\nHost: x\r\n");
        for i in 0..100 {
            many.push_str(&format!("X-H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        let t = talk(&f.addr, many.as_bytes(), T).await;
        assert_eq!(t.statuses(), [431], "{}", t.text());
        assert!(t.closed);
        // Just under both limits still works.
        let mut ok = String::from("GET /app/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 0..97 {
            ok.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(500)));
        }
        ok.push_str("\r\n");
        let t = talk(&f.addr, ok.as_bytes(), T).await;
        assert_eq!(
            t.statuses(),
            [200],
            "{}",
            &t.text()[..t.text().len().min(200)]
        );
        assert_eq!(uris_seen(&m), ["/app/ok"]);
    })
    .await;
}

#[tokio::test]
async fn overlong_target_is_414_and_never_reaches_the_backend() {
    within(T, async {
        let m = mock("").await;
        let f = start(&format!("LimitRequestLine 100\n{}", conf(&m, "")), |_| {}).await;
        let long = format!("/app/{}", "a".repeat(200));
        let t = talk(
            &f.addr,
            format!("GET {long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            T,
        )
        .await;
        assert_eq!(t.statuses(), [414], "{}", t.text());
        // Far beyond any limit (hyper's own bound on the target).
        let huge = format!("/app/{}", "a".repeat(70_000));
        let t = talk(
            &f.addr,
            format!("GET {huge} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            T,
        )
        .await;
        let st = t.statuses();
        assert!(st == [414] || st == [431], "{st:?}");
        // The limit is on the whole request line, as Apache measures it: with LimitRequestLine
        // 100 a 101-byte line is served, a 102-byte one is a 414 (the target alone is short).
        let line = |len: usize| {
            let target = format!("/app/{}", "a".repeat(len - "GET  HTTP/1.1".len() - 5));
            let line = format!("GET {target} HTTP/1.1");
            assert_eq!(line.len(), len);
            (
                target,
                format!("{line}\r\nHost: x\r\nConnection: close\r\n\r\n"),
            )
        };
        let (_, over) = line(102);
        let t = talk(&f.addr, over.as_bytes(), T).await;
        assert_eq!(t.statuses(), [414], "{}", t.text());
        let (at_limit, served) = line(101);
        let t = talk(&f.addr, served.as_bytes(), T).await;
        assert_eq!(t.statuses(), [200], "{}", t.text());
        assert_eq!(uris_seen(&m), [at_limit]);
    })
    .await;
}

/// LimitRequestBody: a declared body over the limit is refused with 413 before any backend
/// contact, whether it would have been buffered or streamed; a chunked body is cut off at the
/// limit; a body at the limit passes.
#[tokio::test]
async fn body_over_limit_request_body_is_413_without_backend_contact() {
    within(T, async {
        let m = mock("").await;
        let f = start(&format!("LimitRequestBody 100000\n{}", conf(&m, "")), |_| {}).await;
        let smuggle = b"GET /app/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        for declared in [100_001usize, 5_000_000] {
            let mut req = format!(
                "POST /app/big HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n"
            )
            .into_bytes();
            req.extend_from_slice(smuggle);
            let t = talk(&f.addr, &req, T).await;
            assert_eq!(t.statuses(), [413], "CL {declared}: {}", t.text());
        }
        // Chunked: 150,000 bytes in 1,000-byte chunks.
        let mut req =
            b"POST /app/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..150 {
            req.extend_from_slice(b"3e8\r\n");
            req.extend_from_slice(&[b'z'; 1000]);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let t = talk(&f.addr, &req, T).await;
        assert_eq!(t.statuses(), [413], "chunked: {}", t.text());
        assert_eq!(
            m.journal().snapshot().connection_count(),
            0,
            "the backend was contacted"
        );
        // Exactly at the limit: forwarded whole.
        let mut req = b"POST /app/fits HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n".to_vec();
        req.extend_from_slice(&[b'y'; 100_000]);
        let t = talk(&f.addr, &req, T).await;
        assert_eq!(t.statuses(), [200]);
        let j = m.journal().snapshot();
        assert_eq!(uris_seen(&m), ["/app/fits"]);
        assert_eq!(j.requests[0].stdin_len, 100_000);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Slow clients (S21)

/// A head trickled one byte at a time is cut off at `header_read` (a total deadline, not an idle
/// timeout), and no backend connection is ever made for it.
#[tokio::test]
async fn slowloris_head_is_cut_off_at_the_header_read_timeout() {
    within(T, async {
        let m = mock("").await;
        let f = start(&conf(&m, ""), |c| {
            c.timeouts.header_read = Duration::from_millis(600)
        })
        .await;
        let started = tokio::time::Instant::now();
        let mut s = TcpStream::connect(&f.addr).await.unwrap();
        s.write_all(b"GET /app/slow HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut closed_at = None;
        let mut buf = [0u8; 1024];
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"X").await.is_err() {
                closed_at = Some(started.elapsed());
                break;
            }
            // A close (with or without a 408) shows up as EOF on the read side.
            if tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf))
                .await
                .is_ok()
            {
                closed_at = Some(started.elapsed());
                break;
            }
        }
        let closed_at = closed_at.expect("the proxy never closed the slowloris connection");
        assert!(
            closed_at >= Duration::from_millis(500) && closed_at < Duration::from_millis(2000),
            "closed after {closed_at:?}"
        );
        assert_eq!(m.journal().snapshot().connection_count(), 0);
    })
    .await;
}

/// A connection that never sends a request is not kept forever.
#[tokio::test]
async fn silent_connection_is_closed() {
    within(T, async {
        let m = mock("").await;
        let f = start(&conf(&m, ""), |c| {
            c.timeouts.header_read = Duration::from_millis(500);
            c.timeouts.keep_alive = Duration::from_millis(500);
        })
        .await;
        let t = talk(&f.addr, b"", Duration::from_secs(5)).await;
        assert!(t.closed, "idle connection still open after {:?}", t.took);
        assert!(t.took < Duration::from_secs(3), "{:?}", t.took);
        // Also between requests on a kept-alive connection.
        let t = talk(
            &f.addr,
            b"GET /app/one HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(t.statuses(), [200]);
        assert!(
            t.closed,
            "kept-alive connection still open after {:?}",
            t.took
        );
    })
    .await;
}

/// The TCP state of the proxy's end of a loopback connection, from /proc/net/tcp (`01` is
/// ESTABLISHED). `None` when it is gone or /proc is not there.
fn proxy_side_state(proxy: &str, client: std::net::SocketAddr) -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |a: std::net::SocketAddr| -> Option<String> {
        let std::net::IpAddr::V4(ip) = a.ip() else {
            return None;
        };
        Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(ip.octets()),
            a.port()
        ))
    };
    let local = hex(proxy.parse().ok()?)?;
    let remote = hex(client)?;
    text.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str()) && cols.get(2) == Some(&remote.as_str()))
            .then(|| cols.get(3).map(|s| s.to_string()))
            .flatten()
    })
}

/// A client that stops reading a large response: the exchange gives up after the backend
/// timeout and closes the backend connection (it is not pooled), and the client connection is
/// closed after the send timeout instead of being held open forever.
#[tokio::test]
async fn slow_reader_frees_the_backend_and_is_disconnected() {
    within(Duration::from_secs(30), async {
        // 32 MiB: far more than socket buffers and the proxy's own buffers can hold.
        let m =
            mock("[default]\nbody = [{ data = \"0123456789abcdef\", repeat = 2097152 }]\n").await;
        let f = start(&format!("Timeout 1\n{}", conf(&m, "timeout=1")), |_| {}).await;
        let mut s = get_on_new_connection(&f, "/app/huge").await;
        // Read the head and a little body, then stop reading.
        let n = read_start_of_200(&mut s).await;
        // The backend connection is closed after the backend timeout.
        backend_freed(&m, &f, Duration::from_secs(8)).await;
        // The proxy's end of the client connection is no longer established: it gave up
        // sending (the kernel may still hold unsent bytes in FIN_WAIT1).
        let client = s.local_addr().unwrap();
        if std::fs::metadata("/proc/net/tcp").is_ok() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
            loop {
                let st = proxy_side_state(&f.addr, client);
                if st.as_deref() != Some("01") {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "client connection still established on the proxy side"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // What the client can still read is a truncated response, never the whole body.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(T, s.read_to_end(&mut rest)).await;
        assert!(n + rest.len() < 32 * 1024 * 1024, "the whole body was sent");
        // The next request is served on a fresh backend connection.
        assert_eq!(send(&f, get("/app/after")).await.status, StatusCode::OK,);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Clients that go away (S13, R8)

/// A client that vanishes in the middle of a streamed request body: the backend request is
/// aborted by closing its connection (no STDIN end-of-stream), and the connection is not pooled.
#[tokio::test]
async fn client_vanishing_mid_body_aborts_the_backend_request() {
    within(T, async {
        let m = mock("").await;
        let f = start(&conf(&m, ""), |_| {}).await;
        for half_close in [false, true] {
            let mut s = TcpStream::connect(&f.addr).await.unwrap();
            s.write_all(b"POST /app/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
                .await
                .unwrap();
            s.write_all(&[b'u'; 100_000]).await.unwrap();
            let conn = m.journal().snapshot().connection_count();
            // Wait until the backend has the request, then go away.
            tokio::time::timeout(
                T,
                m.journal()
                    .wait_for(|j| j.requests.len() > conn && j.requests[conn].stdin_len > 0),
            )
            .await
            .expect("the streamed request reached the backend");
            if half_close {
                s.shutdown().await.unwrap();
            } else {
                drop(s);
            }
            let c = wait_closed(&m, conn, Duration::from_secs(5)).await;
            assert_ne!(c.closed_by, Some(ClosedBy::Backend), "{c:?}");
            let r = m.journal().request(conn as u64 + 1).unwrap();
            assert!(!r.stdin_complete, "the backend got a complete short body");
            assert!(r.stdin_len < 1_000_000);
            assert_pool_empty(&f);
        }
        // A small body cut short never reaches the backend at all.
        let before = m.journal().snapshot().connection_count();
        let mut s = TcpStream::connect(&f.addr).await.unwrap();
        s.write_all(b"POST /app/small HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(T, s.read_to_end(&mut out)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(m.journal().snapshot().connection_count(), before);
        // And the proxy still serves.
        assert_eq!(send(&f, get("/app/next")).await.status, StatusCode::OK);
    })
    .await;
}

/// A client that goes away in the middle of a streamed response: the backend connection is
/// closed (never returned to the pool with a response still in flight), and the next request
/// gets a clean response on a new connection.
#[tokio::test]
async fn client_vanishing_mid_response_closes_the_backend_connection() {
    within(T, async {
        let m = mock(
            r#"
[[rule]]
match = { script_name_prefix = "/app/stream" }
body = [{ data = "first;" }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "tick;", delay_ms = 100 }, { data = "last", delay_ms = 100 }]
[default]
status = 200
body = [{ data = "clean" }]
"#,
        )
        .await;
        let f = start(&conf(&m, ""), |_| {}).await;
        let mut s = get_on_new_connection(&f, "/app/stream").await;
        read_start_of_200(&mut s).await;
        drop(s);
        backend_freed(&m, &f, Duration::from_secs(3)).await;
        let r = m.journal().request(1).unwrap();
        assert!(!r.is_finished() || r.aborted() || r.outcome != fcgi_mock::journal::Outcome::Complete);
        let r = send(&f, get("/app/clean")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.unwrap(), "clean", "no bytes of the aborted response");
        assert_eq!(m.journal().snapshot().connection_count(), 2);
    })
    .await;
}

/// A client that gives up while the backend is still working on its request: the backend
/// connection is closed at once (R8), not held until the backend answers or its timeout.
#[tokio::test]
async fn client_vanishing_before_the_response_frees_the_backend_at_once() {
    within(T, async {
        let m = mock("[default]\naction = \"never_answer\"\n").await;
        let f = start(&conf(&m, "timeout=30"), |_| {}).await;
        let s = get_on_new_connection(&f, "/app/think").await;
        tokio::time::timeout(T, m.journal().wait_for(|j| j.requests.len() == 1))
            .await
            .expect("the request reached the backend");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
        backend_freed(&m, &f, Duration::from_secs(3)).await;
    })
    .await;
}

/// The same once the head is out but the backend has gone quiet: the client's departure, not
/// the next body chunk or the backend timeout, ends the backend request.
#[tokio::test]
async fn client_vanishing_while_the_backend_is_quiet_frees_the_backend_at_once() {
    within(T, async {
        let m = mock(
            "[default]\nstatus = 200\nbody = [{ data = \"some-body\" }]\ncut = { after_body_bytes = 4, then = \"hang\" }\n",
        )
        .await;
        let f = start(&conf(&m, "timeout=30"), |_| {}).await;
        let mut s = get_on_new_connection(&f, "/app/quiet").await;
        read_start_of_200(&mut s).await;
        drop(s);
        backend_freed(&m, &f, Duration::from_secs(3)).await;
    })
    .await;
}

/// S21.3: idle connections do not starve real clients.
#[tokio::test]
async fn idle_connections_do_not_block_service() {
    within(T, async {
        let m = mock("").await;
        let f = start(&conf(&m, ""), |_| {}).await;
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(TcpStream::connect(&f.addr).await.unwrap());
        }
        // Some of them half-way through a head.
        for s in idle.iter_mut().take(100) {
            s.write_all(b"GET /app/idle HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        assert_eq!(send(&f, get("/app/served")).await.status, StatusCode::OK);
        assert_eq!(uris_seen(&m), ["/app/served"]);
        drop(idle);
    })
    .await;
}

/// S13: a chunked body whose last chunk has no final CRLF before the client half-closes is
/// incomplete: it never reaches the backend.
#[tokio::test]
async fn unterminated_chunked_body_never_reaches_the_backend() {
    within(T, async {
        let m = mock("").await;
        let f = start(&conf(&m, ""), |_| {}).await;
        for tail in [&b"5\r\nhello\r\n0\r\n"[..], b"5\r\nhel", b"5\r\nhello\r\n"] {
            let mut s = TcpStream::connect(&f.addr).await.unwrap();
            s.write_all(b"POST /app/cut HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            s.write_all(tail).await.unwrap();
            s.shutdown().await.unwrap();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(T, s.read_to_end(&mut out)).await;
            assert!(
                out.is_empty() || http1::parse_response(&out).is_ok_and(|r| r.status == 400),
                "{tail:?}: {}",
                String::from_utf8_lossy(&out)
            );
        }
        assert_eq!(m.journal().snapshot().connection_count(), 0);
    })
    .await;
}
