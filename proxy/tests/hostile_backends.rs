//! Hostile backends (docs/reference/security.md S14, S17, S18, S19, S20, R3): malformed records,
//! foreign request ids, oversized or endless headers, CR/LF/NUL in header values, STDERR floods and
//! responses that never end. The client gets a 502/503/504 (or a visibly truncated response once
//! the head is out), the backend connection is closed rather than pooled, and nothing from a bad
//! response reaches another request.
//!
//! Memory per request is bounded whatever the backend sends (see `proxy/src/exchange.rs`): the
//! record decoder holds at most one record (8 + 65535 + 255 bytes) beyond one 16 KiB read; the
//! CGI header block is refused past 64 KiB (so at most 64 KiB + one record is held); STDERR is
//! logged up to 8 KiB and otherwise dropped record by record; a streamed body holds at most 8
//! records (8 x 64 KiB) in the channel to the client. About 0.8 MiB in the worst case, plus
//! hyper's write buffer towards the client.

mod front;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fastcgi::{Decoder, Padding, ProtocolStatus, Record, RecordType, encode};
use fcgi_mock::MockHandle;
use fcgi_mock::journal::ClosedBy;
use front::{
    T, assert_pool_empty, conf, conf_at, get, mock, on_one_connection, pool_stats, send, start,
    talk, wait_closed, within,
};
use http::StatusCode;
use testkit::http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Scripted rule for one path prefix plus a clean default answer.
async fn mock_with(rule: &str) -> MockHandle {
    mock(&format!(
        "[[rule]]\nmatch = {{ script_name_prefix = \"/app/bad\" }}\n{rule}\n[default]\nstatus = 200\nbody = [{{ data = \"clean\" }}]\n"
    ))
    .await
}

/// The rule answers `/app/bad`: the client gets `expect`, the backend connection that carried it
/// is closed by the proxy, not pooled, and a following request is clean on a new connection.
async fn bad_answer_is_contained(rule: &str, expect: &[StatusCode]) -> front::Reply {
    let m = mock_with(rule).await;
    let f = start(&conf(&m, "timeout=2"), |_| {}).await;
    // A pooled connection first, so the bad answer comes on a reused one.
    let r = send(&f, get("/app/ok")).await;
    assert_eq!(r.status, StatusCode::OK);
    let bad = send(&f, get("/app/bad")).await;
    assert!(
        expect.contains(&bad.status),
        "{rule}: {} {:?}",
        bad.status,
        bad.body
    );
    let c = wait_closed(&m, 0, Duration::from_secs(5)).await;
    assert_ne!(c.closed_by, Some(ClosedBy::Backend), "{rule}: {c:?}");
    let after = send(&f, get("/app/after")).await;
    assert_eq!(after.status, StatusCode::OK, "{rule}");
    assert_eq!(after.body.as_deref().unwrap(), b"clean", "{rule}");
    let j = m.journal().snapshot();
    assert_eq!(
        j.connection_count(),
        2,
        "{rule}: the bad connection was reused"
    );
    assert_eq!(
        j.requests.len(),
        3,
        "{rule}: the bad request was sent again"
    );
    bad
}

// ---------------------------------------------------------------------------------------------
// Malformed records (S17)

#[tokio::test]
async fn malformed_records_are_502_and_close_the_connection() {
    within(Duration::from_secs(30), async {
        let cases = [
            "bad_version = 2\nbody = [{ data = \"EVIL\" }]",
            "bad_version = 0\nbody = [{ data = \"EVIL\" }]",
            // Every record of the answer for another request id.
            "reply_request_id = 2\nbody = [{ data = \"EVIL\" }]",
        ];
        for rule in cases {
            let bad = bad_answer_is_contained(rule, &[StatusCode::BAD_GATEWAY]).await;
            let body = bad.body.unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&body).contains("EVIL"),
                "{rule}: backend bytes reached the client"
            );
        }
        // Every record on the management id 0: skipped as not part of the response, so the
        // request ends at the backend timeout.
        let bad = bad_answer_is_contained(
            "reply_request_id = 0\nbody = [{ data = \"EVIL\" }]",
            &[StatusCode::GATEWAY_TIMEOUT, StatusCode::BAD_GATEWAY],
        )
        .await;
        assert!(!String::from_utf8_lossy(&bad.body.unwrap_or_default()).contains("EVIL"));
    })
    .await;
}

#[tokio::test]
async fn unknown_record_types_are_skipped_without_stray_bytes() {
    within(T, async {
        for t in [42u8, 11, 12, 255] {
            let m = mock_with(&format!(
                "unknown_record_type = {t}\nstatus = 200\nbody = [{{ data = \"exact\" }}]\npadding = 7"
            ))
            .await;
            let f = start(&conf(&m, ""), |_| {}).await;
            let r = send(&f, get("/app/bad")).await;
            assert_eq!(r.status, StatusCode::OK, "type {t}");
            assert_eq!(r.body.unwrap(), "exact", "type {t}");
            let r = send(&f, get("/app/next")).await;
            assert_eq!(r.body.unwrap(), "clean", "type {t}");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Headers (S14)

#[tokio::test]
async fn oversized_and_endless_headers_are_502() {
    within(Duration::from_secs(30), async {
        let huge_line = format!("headers = [[\"X-Big\", \"{}\"]]", "a".repeat(1 << 20));
        let many = format!(
            "headers = [{}]",
            (0..10_000)
                .map(|i| format!("[\"X-H{i}\", \"v\"]"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // The header block never ends: 8 MB of header lines and no blank line.
        let endless = "omit_header_terminator = true\nbody = [{ data = \"X-More: yes\\r\\n\", repeat = 700000 }]";
        for rule in [huge_line.as_str(), many.as_str(), endless] {
            let bad = bad_answer_is_contained(rule, &[StatusCode::BAD_GATEWAY]).await;
            assert!(bad.headers.get("x-big").is_none());
        }
    })
    .await;
}

#[tokio::test]
async fn unsafe_header_bytes_are_502_and_reach_no_client() {
    within(Duration::from_secs(60), async {
        let cases = [
            // A bare CR inside a value (S14.1).
            r#"headers = [["X-A", "1\rSet-Cookie: evil=1"]]
body = [{ data = "EVIL" }]"#,
            r#"headers = [["X-A", "1\u0000Set-Cookie: evil=1"]]
body = [{ data = "EVIL" }]"#,
            r#"headers = [["X-A", "a\u0001b"]]
body = [{ data = "EVIL" }]"#,
            // A line without a colon (S14.3).
            r#"headers = [["BAD\r\nX", "y"]]
body = [{ data = "EVIL" }]"#,
            // obs-fold from the backend.
            r#"headers = [["X-A", "1\r\n folded"]]
body = [{ data = "EVIL" }]"#,
            // A name that is not a token.
            r#"headers = [["Bad Name", "x"]]
body = [{ data = "EVIL" }]"#,
            r#"headers = [["X-\u00e9", "x"]]
body = [{ data = "EVIL" }]"#,
            // Status that is not a status (S14.8).
            r#"headers = [["Status", "abc"]]
body = [{ data = "EVIL" }]"#,
            r#"headers = [["Status", "99"]]
body = [{ data = "EVIL" }]"#,
            r#"headers = [["Status", "100 Continue"]]
body = [{ data = "EVIL" }]"#,
            r#"headers = [["Status", "200 OK\u0000"]]
body = [{ data = "EVIL" }]"#,
        ];
        for rule in cases {
            let bad = bad_answer_is_contained(rule, &[StatusCode::BAD_GATEWAY]).await;
            assert!(bad.headers.get("set-cookie").is_none(), "{rule}");
            let body = bad.body.unwrap_or_default();
            assert!(!String::from_utf8_lossy(&body).contains("EVIL"), "{rule}");
        }
    })
    .await;
}

/// The control cases: LF-only framing is legal CGI, framing headers from the backend never reach
/// the client, and duplicate Status lines give one status line.
#[tokio::test]
async fn backend_framing_headers_never_desync_the_client() {
    within(T, async {
        let m = mock(
            r#"
[[rule]]
match = { script_name_prefix = "/app/lf" }
newline = "lf"
headers = [["X-A", "1"], ["Set-Cookie", "ok=1"]]
body = [{ data = "lf" }]
[[rule]]
match = { script_name_prefix = "/app/cl" }
headers = [["Content-Length", "2"]]
body = [{ data = "HTTP/1.1 200 OK\r\nX-Smuggled: 1\r\n\r\n" }]
[[rule]]
match = { script_name_prefix = "/app/te" }
headers = [["Transfer-Encoding", "chunked"], ["Connection", "close"]]
body = [{ data = "5\r\nhello\r\n0\r\n\r\n" }]
[[rule]]
match = { script_name_prefix = "/app/two" }
headers = [["Status", "200 OK"], ["Status", "302 Found"], ["Location", "/x"]]
[default]
status = 200
body = [{ data = "canary" }]
"#,
        )
        .await;
        let f = start(&conf(&m, ""), |_| {}).await;
        let r = send(&f, get("/app/lf")).await;
        assert_eq!(r.headers["set-cookie"], "ok=1");
        assert_eq!(r.body.unwrap(), "lf");
        // One client connection: if any response were mis-framed, the next would be garbage.
        let rs =
            on_one_connection(&f.addr, &["/app/cl", "/app/te", "/app/two", "/app/canary"]).await;
        let r = &rs[0];
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.body.as_ref().unwrap(),
            "HTTP/1.1 200 OK\r\nX-Smuggled: 1\r\n\r\n",
            "passed as body bytes"
        );
        assert!(r.headers.get("x-smuggled").is_none());
        assert_ne!(
            r.headers.get("content-length").map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        let r = &rs[1];
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.body.as_ref().unwrap(),
            "5\r\nhello\r\n0\r\n\r\n",
            "the backend's chunking is not interpreted"
        );
        assert!(r.headers.get("connection").is_none());
        let r = &rs[2];
        assert_eq!(
            r.status,
            StatusCode::FOUND,
            "one status line, the last Status wins (Apache)"
        );
        assert!(r.headers.get("status").is_none());
        assert_eq!(r.headers["location"], "/x");
        let r = &rs[3];
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.as_ref().unwrap(), "canary");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// STDERR flood (S20)

#[tokio::test]
async fn stderr_flood_is_dropped_and_the_response_is_correct() {
    within(Duration::from_secs(30), async {
        let e = "E".repeat(65535);
        // 16 MiB of STDERR before the headers and again inside the body.
        let m = mock(&format!(
            "[default]\nstatus = 200\nbody = [{{ stderr = \"{e}\", repeat = 128 }}, {{ data = \"ok\" }}, {{ stderr = \"{e}\", repeat = 128 }}, {{ data = \"!\" }}]\n"
        ))
        .await;
        let f = start(&conf(&m, ""), |_| {}).await;
        for _ in 0..2 {
            let r = send(&f, get("/app/noisy")).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.body.unwrap(), "ok!");
        }
        assert_eq!(m.journal().snapshot().connection_count(), 1, "still reusable");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Responses that never end (S19)

#[tokio::test]
async fn silent_backend_is_504_and_its_connection_closed() {
    within(T, async {
        let m = mock_with("action = \"never_answer\"").await;
        let f = start(&conf(&m, "timeout=1"), |_| {}).await;
        let started = tokio::time::Instant::now();
        let r = send(&f, get("/app/bad")).await;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(started.elapsed() < Duration::from_secs(3));
        let c = wait_closed(&m, 0, Duration::from_secs(5)).await;
        assert_ne!(c.closed_by, Some(ClosedBy::Backend), "{c:?}");
        assert_pool_empty(&f);
    })
    .await;
}

#[tokio::test]
async fn backend_stalling_after_the_head_truncates_visibly() {
    within(T, async {
        let m = mock_with(
            "status = 200\nbody = [{ data = \"partial-body\" }]\ncut = { after_body_bytes = 7, then = \"hang\" }",
        )
        .await;
        let f = start(&conf(&m, "timeout=1"), |_| {}).await;
        let t = talk(
            &f.addr,
            b"GET /app/bad HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        let text = t.text();
        assert!(t.closed, "client connection left hanging: {text}");
        assert!(t.took < Duration::from_secs(4));
        let (responses, rest) = http1::parse_responses(&t.out, true);
        assert_eq!((responses.len(), rest), (1, 0), "{text}");
        let r = &responses[0];
        assert_eq!(r.status, 200, "{text}");
        assert!(r.body_text().contains("partial"), "{text}");
        assert!(!r.complete, "looks complete: {text}");
        let c = wait_closed(&m, 0, Duration::from_secs(5)).await;
        assert_ne!(c.closed_by, Some(ClosedBy::Backend), "{c:?}");
        assert_pool_empty(&f);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// A raw backend for what the mock's script cannot say.

/// What the raw backend does for one request: `(delay before, bytes)` writes, then keep the
/// connection or close it.
struct Answer {
    writes: Vec<(u64, Vec<u8>)>,
    close: bool,
}

impl Answer {
    /// `bytes` at once, the connection kept.
    fn kept(bytes: Vec<u8>) -> Answer {
        Answer {
            writes: vec![(0, bytes)],
            close: false,
        }
    }
}

struct Raw {
    addr: String,
    accepted: Arc<AtomicUsize>,
    /// Connections that ended by the proxy closing them.
    peer_closed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type AnswerFn = dyn Fn(usize, usize) -> Answer + Send + Sync;

/// A FastCGI backend speaking raw records: for request `r` on connection `c` (both 0-based) it
/// plays `answer(c, r)`.
async fn raw_backend(answer: Arc<AnswerFn>) -> Raw {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let peer_closed = Arc::new(AtomicUsize::new(0));
    let (a, p) = (accepted.clone(), peer_closed.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let c = a.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            let p = p.clone();
            tokio::spawn(async move {
                let mut d = Decoder::default();
                let mut buf = vec![0u8; 65536];
                let mut r = 0;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            p.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(n) => n,
                    };
                    d.feed(&buf[..n]);
                    while let Ok(Some(rec)) = d.decode() {
                        let stdin_end = matches!(
                            &rec,
                            Record::Stream { record_type: RecordType::Stdin, content, .. } if content.is_empty()
                        );
                        if !stdin_end {
                            continue;
                        }
                        let a = answer(c, r);
                        r += 1;
                        for (delay, bytes) in a.writes {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            if s.write_all(&bytes).await.is_err() {
                                p.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                        if a.close {
                            return;
                        }
                    }
                }
            });
        }
    });
    Raw {
        addr,
        accepted,
        peer_closed,
        task,
    }
}

/// Waits (up to 3 s) for `cond`.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stdout(id: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode::stream(&mut out, RecordType::Stdout, id, data, 65535, Padding::None);
    out
}

fn end(id: u16, status: ProtocolStatus) -> Vec<u8> {
    let mut out = Vec::new();
    encode::stream_end(&mut out, RecordType::Stdout, id);
    encode::end_request(&mut out, id, 0, status);
    out
}

fn response(body: &str) -> Vec<u8> {
    let mut out = stdout(1, format!("Status: 200 OK\r\n\r\n{body}").as_bytes());
    out.extend(end(1, ProtocolStatus::RequestComplete));
    out
}

/// docs/reference/security.md R3, S17: STDOUT after END_REQUEST on a kept-alive connection is
/// never attributed to the next request, whether it comes in the same packet or a moment later.
#[tokio::test]
async fn data_after_end_request_never_reaches_the_next_request() {
    within(T, async {
        for delayed in [false, true] {
            let b = raw_backend(Arc::new(move |c, r| {
                let answer = response(&format!("response-{r}"));
                let junk = stdout(1, b"junk-after-end");
                match c {
                    // Only the first connection misbehaves.
                    0 if delayed => Answer {
                        writes: vec![(0, answer), (10, junk)],
                        close: false,
                    },
                    0 => Answer::kept([answer, junk].concat()),
                    _ => Answer::kept(answer),
                }
            }))
            .await;
            let f = start(&conf_at(&b.addr, ""), |_| {}).await;
            let r = send(&f, get("/app/one")).await;
            assert_eq!(r.body.unwrap(), "response-0");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let r = send(&f, get("/app/two")).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(
                r.body.unwrap(),
                "response-0",
                "delayed={delayed}: the second request must get the first answer of a new connection"
            );
            assert_eq!(b.accepted.load(Ordering::SeqCst), 2, "delayed={delayed}");
            assert_eq!(pool_stats(&f).open, 1, "only the clean connection stays");
            eventually("the proxy closed the dirty connection", || {
                b.peer_closed.load(Ordering::SeqCst) == 1
            })
            .await;
        }
    })
    .await;
}

/// S17.2: records for another request id are never delivered, even when a correct response
/// follows them; S17.4/5: management records in the middle of a response are skipped.
#[tokio::test]
async fn foreign_and_management_records_mid_response() {
    within(T, async {
        // The first connection sends a foreign id and is closed; the second behaves.
        let b = raw_backend(Arc::new(|c, _r| {
            let mut out = Vec::new();
            if c == 0 {
                out.extend(stdout(2, b"Status: 200 OK\r\n\r\nEVIL"));
                out.extend(response("after-evil"));
            } else {
                out.extend(stdout(1, b"Status: 200 OK\r\n\r\nfirst,"));
                encode::get_values_result(&mut out, &[("FCGI_MPXS_CONNS", "0")]);
                encode::unknown_type(&mut out, 99);
                out.extend(stdout(1, b"second"));
                out.extend(end(1, ProtocolStatus::RequestComplete));
            }
            Answer::kept(out)
        }))
        .await;
        let f = start(&conf_at(&b.addr, ""), |_| {}).await;
        let r = send(&f, get("/app/evil")).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(!String::from_utf8_lossy(&r.body.unwrap()).contains("EVIL"));
        let r = send(&f, get("/app/mgmt")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.unwrap(), "first,second");
        assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
        eventually("the proxy closed the first connection", || {
            b.peer_closed.load(Ordering::SeqCst) == 1
        })
        .await;
    })
    .await;
}

/// S17.6/7, S18: a bad END_REQUEST, refusals before any STDOUT, and maximal content + padding.
#[tokio::test]
async fn end_request_abuse_and_maximal_records() {
    within(T, async {
        let big = "x".repeat(65535 - "Status: 200 OK\r\n\r\n".len());
        let big2 = big.clone();
        // One connection per request (disablereuse): connection `c` carries request `c`.
        let b = raw_backend(Arc::new(move |c, _r| {
            let mut out = Vec::new();
            match c {
                // END_REQUEST with a 4-byte body, then the backend hangs up.
                0 => {
                    out.extend(stdout(1, b"Status: 200 OK\r\n\r\nshort"));
                    encode::record(
                        &mut out,
                        RecordType::EndRequest,
                        1,
                        &[0, 0, 0, 0],
                        Padding::None,
                    );
                    Answer {
                        writes: vec![(0, out)],
                        close: true,
                    }
                }
                // Refused before any STDOUT.
                1 => {
                    encode::end_request(&mut out, 1, 0, ProtocolStatus::Overloaded);
                    Answer::kept(out)
                }
                // END_REQUEST before any STDOUT, complete: no response at all.
                2 => {
                    encode::end_request(&mut out, 1, 0, ProtocolStatus::RequestComplete);
                    Answer::kept(out)
                }
                // 65535 bytes of content and 255 of padding, header split a byte at a time.
                _ => {
                    let head = format!("Status: 200 OK\r\n\r\n{big2}");
                    encode::record(
                        &mut out,
                        RecordType::Stdout,
                        1,
                        head.as_bytes(),
                        Padding::Fixed(255),
                    );
                    let mut writes: Vec<(u64, Vec<u8>)> =
                        out.iter().take(8).map(|&b| (5, vec![b])).collect();
                    writes.push((0, out[8..].to_vec()));
                    let mut tail = Vec::new();
                    encode::record(
                        &mut tail,
                        RecordType::Stderr,
                        1,
                        &[b'e'; 65535],
                        Padding::Fixed(255),
                    );
                    tail.extend(end(1, ProtocolStatus::RequestComplete));
                    writes.push((5, tail));
                    Answer {
                        writes,
                        close: false,
                    }
                }
            }
        }))
        .await;
        // One connection per request, so each request meets the answer of its number.
        let f = start(&conf_at(&b.addr, "disablereuse=on timeout=2"), |_| {}).await;
        let t = talk(
            &f.addr,
            b"GET /app/end4 HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        let text = t.text();
        // Nothing, a 502, or a chunked 200 that visibly lacks its last chunk; never one that
        // looks complete (a Content-Length body, or a chunked one with its last chunk).
        let (responses, _) = http1::parse_responses(&t.out, true);
        assert!(
            t.out.is_empty()
                || responses
                    .first()
                    .is_some_and(|r| r.status == 502
                        || (r.framing == http1::Framing::Chunked && !r.complete)),
            "a response without a proper END_REQUEST looks complete: {text}"
        );
        assert!(t.closed, "{text}");
        let r = send(&f, get("/app/overloaded")).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        let r = send(&f, get("/app/empty")).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        let r = send(&f, get("/app/big")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.unwrap(), big);
    })
    .await;
}
