//! The proxy as a client sees it: real HTTP over loopback into the proxy, real FastCGI out to the
//! scriptable mock, configured from an Apache-style file. What the backend saw is read from the
//! mock's journal.

mod front;

use std::time::Duration;

use bytes::Bytes;
use fcgi_mock::MockHandle;
use front::{T, get, mock, send, start};
use http::{Request, StatusCode};
use http_body_util::Full;
use testkit::http1;

fn conf(mock: &MockHandle, extra: &str) -> String {
    format!(
        "Listen 127.0.0.1:0\nProxyPass /app/ fcgi://{a}/ {extra}\nProxyPass /off/ fcgi://{a}/off/ disablereuse=on\n",
        a = mock.addr()
    )
}

#[tokio::test]
async fn sequential_requests_reuse_one_backend_connection_by_default() {
    let m = mock("").await;
    let f = start(&conf(&m, ""), |_| {}).await;
    for i in 0..5 {
        let r = send(&f, get(&format!("/app/r{i}"))).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let j = m.journal().snapshot();
    assert_eq!(j.requests.len(), 5);
    assert_eq!(j.connection_count(), 1, "reuse is on by default");
    assert!(j.requests.iter().all(|r| r.keep_conn), "FCGI_KEEP_CONN set");
}

#[tokio::test]
async fn disablereuse_uses_a_connection_per_request_without_keep_conn() {
    let m = mock("").await;
    let f = start(&conf(&m, ""), |_| {}).await;
    for i in 0..4 {
        assert_eq!(
            send(&f, get(&format!("/off/r{i}"))).await.status,
            StatusCode::OK
        );
    }
    let j = m.journal().snapshot();
    assert_eq!(j.connection_count(), 4);
    assert!(j.requests.iter().all(|r| !r.keep_conn));
}

#[tokio::test]
async fn backend_closing_an_idle_connection_is_invisible_to_clients() {
    let m = mock("[server]\nidle_timeout_ms = 30\n").await;
    let f = start(&conf(&m, ""), |_| {}).await;
    for i in 0..3 {
        assert_eq!(
            send(&f, get(&format!("/app/i{i}"))).await.status,
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(m.journal().connection_count(), 3);
}

#[tokio::test]
async fn stalled_backend_gives_504_within_its_timeout() {
    let m = mock("[default]\naction = \"never_answer\"\n").await;
    let f = start(&conf(&m, "timeout=1"), |_| {}).await;
    let started = tokio::time::Instant::now();
    let r = send(&f, get("/app/stall")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn dead_backend_gives_503() {
    let m = mock("").await;
    let f = start(&conf(&m, ""), |_| {}).await;
    m.shutdown().await;
    let r = send(&f, get("/app/x")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&r.body.unwrap()).contains("503"),
        "templated error page"
    );
}

#[tokio::test]
async fn backend_dying_mid_response_truncates_visibly() {
    let m = mock(
        "[default]\nbody = [{ data = \"0123456789\", repeat = 20 }, { data = \"more\", delay_ms = 50 }]\ncut = { after_body_bytes = 100, then = \"close\" }\n",
    )
    .await;
    let f = start(&conf(&m, ""), |_| {}).await;
    let out = front::raw(&f, b"GET /app/cut HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // Either nothing usable or a chunked body without its terminating chunk: never a complete
    // response.
    let text = String::from_utf8_lossy(&out);
    let (responses, _) = http1::parse_responses(&out, true);
    for r in &responses {
        assert!(
            r.header("content-length").is_none(),
            "a short body must not carry a length: {text}"
        );
        assert!(
            r.framing == http1::Framing::Chunked && !r.complete,
            "looks complete: {text}"
        );
    }
}

#[tokio::test]
async fn chunked_post_reaches_the_backend_with_an_exact_content_length() {
    let m = mock("").await;
    let f = start(&conf(&m, ""), |_| {}).await;
    // A raw request so the body really is chunked on the wire.
    let out = front::raw(&f, b"POST /app/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").await;
    assert_eq!(front::response(&out).status, 200);
    let req = m.journal().request(1).expect("reached the backend");
    assert_eq!(req.param("CONTENT_LENGTH").as_deref(), Some("11"));
    assert_eq!(req.stdin_lossy(), "hello world");
}

#[tokio::test]
async fn chunked_body_over_the_buffer_limit_is_413() {
    let m = mock("").await;
    let f = start(&conf(&m, ""), |c| c.limits.max_body_buffer = 8).await;
    let out = front::raw(&f, b"POST /app/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n").await;
    assert_eq!(front::response(&out).status, 413);
    assert_eq!(
        m.journal().snapshot().requests.len(),
        0,
        "never reached the backend"
    );
}

/// RFC 9112 6.3: with both, Transfer-Encoding wins (hyper drops the Content-Length). The backend
/// must then see exactly the de-chunked body and its length, never the bogus Content-Length.
#[tokio::test]
async fn content_length_with_transfer_encoding_uses_the_chunked_framing() {
    let m = mock("").await;
    let f = start(&conf(&m, ""), |_| {}).await;
    let out = front::raw(&f, b"POST /app/smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n").await;
    assert_eq!(front::response(&out).status, 200);
    let req = m.journal().request(1).expect("reached the backend");
    assert_eq!(req.param("CONTENT_LENGTH").as_deref(), Some("5"));
    assert_eq!(req.stdin_lossy(), "hello");
}

#[tokio::test]
async fn status_location_and_head_are_mapped() {
    let m = mock(
        r#"
[[rule]]
match = { script_name_prefix = "/app/moved" }
headers = [["Location", "/new"]]
[[rule]]
match = { script_name_prefix = "/app/teapot" }
status = 418
reason = "Short And Stout"
headers = [["Content-Type", "text/plain"]]
body = [{ data = "tea" }]
"#,
    )
    .await;
    let f = start(&conf(&m, ""), |_| {}).await;
    let r = send(&f, get("/app/moved")).await;
    assert_eq!(
        r.status,
        StatusCode::FOUND,
        "Location without Status is a redirect"
    );
    assert_eq!(r.headers["location"], "/new");
    let r = send(&f, get("/app/teapot")).await;
    assert_eq!(r.status.as_u16(), 418);
    assert_eq!(r.body.unwrap(), "tea");
    let head = Request::head("/app/teapot")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&f, head).await;
    assert_eq!(r.status.as_u16(), 418);
    assert_eq!(r.body.unwrap(), "", "HEAD has no body");
    // The HEAD exchange completed cleanly, so its connection was reused for nothing else broken.
    assert_eq!(m.journal().connection_count(), 1);
}

#[tokio::test]
async fn custom_reason_phrase_reaches_the_client() {
    let m = mock("[default]\nstatus = 404\nreason = \"Nowhere To Be Found\"\n").await;
    let f = start(&conf(&m, ""), |_| {}).await;
    let out = front::raw(
        &f,
        b"GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = front::response(&out);
    assert_eq!((r.status, r.reason.as_str()), (404, "Nowhere To Be Found"));
}

#[tokio::test]
async fn too_many_request_headers_is_431_and_never_reaches_the_backend() {
    let m = mock("").await;
    let f = start(&conf(&m, ""), |c| c.limits.max_headers = 10).await;
    let mut req = String::from("GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..30 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let out = front::raw(&f, req.as_bytes()).await;
    assert_eq!(front::response(&out).status, 431);
    assert_eq!(m.journal().snapshot().requests.len(), 0);
}

#[tokio::test]
async fn decoded_newline_in_path_is_400_and_never_reaches_the_backend() {
    let m = mock("").await;
    let f = start(&conf(&m, ""), |_| {}).await;
    let r = send(&f, get("/app/a%0d%0aX-Injected:%201")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send(&f, get("/app/a%00b")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(m.journal().snapshot().requests.len(), 0);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let m = mock("[default]\nbody = [{ data = \"done\", delay_ms = 400 }]\n").await;
    let f = start(&conf(&m, ""), |_| {}).await;
    let addr = f.addr.clone();
    let inflight = tokio::spawn(async move { front::send_to(&addr, get("/app/slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.stop.send(true).unwrap();
    let r = inflight.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.unwrap(), "done");
    tokio::time::timeout(T, f.task)
        .await
        .expect("server stops after draining")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(&f.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_keep_alive_timeout() {
    let (_m, _f, mut s) = connected(Duration::from_millis(300), Duration::from_secs(20)).await;
    let started = tokio::time::Instant::now();
    answered_in_a_row(&mut s, 1, None).await;
    // EOF once the connection has been idle for keep_alive (not header_read).
    let took = closed_after(&mut s, started).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

/// Reads one whole response from `s` (nothing may follow it: no request was sent after it).
async fn read_one(s: &mut tokio::net::TcpStream) -> http1::Response {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some((r, used)) = http1::next_response(&all, false, false).unwrap()
            && r.complete
        {
            assert_eq!(used, all.len(), "{:?}", String::from_utf8_lossy(&all));
            return r;
        }
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&all));
        all.extend_from_slice(&buf[..n]);
    }
}

/// How long after `since` the proxy closes `s` (EOF or reset), reading and dropping anything.
async fn closed_after(s: &mut tokio::net::TcpStream, since: tokio::time::Instant) -> Duration {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(T, s.read(&mut buf))
            .await
            .expect("closed well before the test timeout")
        {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => {}
        }
    }
}

/// A mock, a proxy with these keep-alive and head deadlines in front of it, and a client
/// connection to the proxy.
async fn connected(
    keep_alive: Duration,
    header_read: Duration,
) -> (MockHandle, front::Front, tokio::net::TcpStream) {
    let m = mock("").await;
    let f = start(&conf(&m, ""), |c| {
        c.timeouts.keep_alive = keep_alive;
        c.timeouts.header_read = header_read;
    })
    .await;
    let s = tokio::net::TcpStream::connect(&f.addr).await.unwrap();
    (m, f, s)
}

/// Sends `n` GETs on `s`, one after the other, each answered 200; `pause` = (after which one,
/// how long) waits between two of them. The answers.
async fn answered_in_a_row(
    s: &mut tokio::net::TcpStream,
    n: usize,
    pause: Option<(usize, Duration)>,
) -> Vec<http1::Response> {
    use tokio::io::AsyncWriteExt;
    let mut heads = Vec::new();
    for i in 0..n {
        s.write_all(format!("GET /app/r{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let r = read_one(s).await;
        assert_eq!(r.status, 200, "{r:?}");
        heads.push(r);
        if let Some((after, d)) = pause
            && after == i
        {
            tokio::time::sleep(d).await;
        }
    }
    heads
}

/// Back-to-back requests keep the connection's hyper session between them; once it goes quiet
/// the keep-alive deadline still runs from the end of the last response.
#[tokio::test]
async fn back_to_back_requests_then_the_keep_alive_timeout() {
    let (m, _f, mut s) = connected(Duration::from_millis(300), Duration::from_secs(20)).await;
    // Long enough after the third for a kept session to be parked; the next request wakes it.
    answered_in_a_row(&mut s, 4, Some((2, Duration::from_millis(120)))).await;
    // Timed from before the last request, so that a late read of its answer cannot make the
    // close look early.
    let started = tokio::time::Instant::now();
    answered_in_a_row(&mut s, 1, None).await;
    let took = closed_after(&mut s, started).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    assert_eq!(m.journal().snapshot().requests.len(), 5);
}

/// A head that starts arriving right after an answer on a connection in use must still be
/// complete within `header_read` of its first bytes.
#[tokio::test]
async fn a_trickled_head_right_after_an_answer_is_cut_off_at_header_read() {
    use tokio::io::AsyncWriteExt;
    let (_m, _f, mut s) = connected(Duration::from_secs(20), Duration::from_millis(500)).await;
    answered_in_a_row(&mut s, 3, None).await;
    let started = tokio::time::Instant::now();
    s.write_all(b"GET /app/slow HTTP/1.1\r\n").await.unwrap();
    let trickle = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if s.write_all(b"X-A: b\r\n").await.is_err() {
                break;
            }
        }
    };
    // The proxy closes within header_read of the head's first bytes; writes then fail.
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    let took = closed_after(&mut s, started).await;
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
}

/// MaxKeepAliveRequests: the last request a connection may carry is answered with
/// `Connection: close` and the connection is closed; KeepAlive Off makes that the first.
#[tokio::test]
async fn a_connection_carries_at_most_max_keep_alive_requests() {
    for (keep_alive, max, served) in [(true, 3, 3), (false, 100, 1), (true, 0, 6)] {
        let m = mock("").await;
        let f = start(&conf(&m, ""), |c| {
            c.limits.keep_alive = keep_alive;
            c.limits.max_keep_alive_requests = max;
        })
        .await;
        let mut s = tokio::net::TcpStream::connect(&f.addr).await.unwrap();
        let heads = answered_in_a_row(&mut s, served, None).await;
        let closing: Vec<bool> = heads.iter().map(http1::Response::closes).collect();
        let mut want = vec![false; served];
        if max != 0 {
            want[served - 1] = true;
        }
        assert_eq!(closing, want, "KeepAlive {keep_alive}, max {max}");
        if max != 0 {
            let took = closed_after(&mut s, tokio::time::Instant::now()).await;
            assert!(took < Duration::from_secs(2), "closed after {took:?}");
        }
        assert_eq!(m.journal().snapshot().requests.len(), served);
    }
}
