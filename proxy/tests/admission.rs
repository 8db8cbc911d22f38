//! Admission control (docs/reference/security.md R-series: bounded resources): the client
//! connection limit pauses accepting, the buffered-body budget answers 503 and frees what it
//! held, and a backend's waiting queue is bounded. Each test checks what clients get, what the
//! backend saw, and what `/status` reports.

mod front;

use std::time::Duration;

use front::{T, get, mock, send, start, talk, within};
use http::StatusCode;
use testkit::http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn status_json(f: &front::Front) -> serde_json::Value {
    let r = f.proxy.admin("/status");
    let fcgi_proxy::body::ProxyBody::Full(Some(b)) = r.body() else {
        panic!("status has a body")
    };
    serde_json::from_slice(b).expect("status is JSON")
}

/// Reads one whole response (Content-Length framed) from `s`.
async fn read_response(s: &mut TcpStream) -> http1::Response {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(r) = http1::parse_response(&out) {
            return r;
        }
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {out:?}");
        out.extend_from_slice(&buf[..n]);
    }
}

/// At `limits.max_connections` a further client is not accepted (its request waits in the
/// backlog, unanswered) until an open connection closes; then it is served.
#[tokio::test]
async fn connection_limit_pauses_accepting_until_one_closes() {
    within(T * 2, async {
        let m = mock("").await;
        let f = start(&front::conf(&m, ""), |c| c.limits.max_connections = 2).await;
        let mut open = Vec::new();
        for i in 0..2 {
            let mut s = TcpStream::connect(&f.addr).await.unwrap();
            s.write_all(format!("GET /app/k{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(read_response(&mut s).await.status, 200);
            open.push(s);
        }
        let a = &status_json(&f)["admission"];
        assert_eq!(a["client_connections"], 2, "{a}");
        assert_eq!(a["max_client_connections"], 2, "{a}");

        let mut third = TcpStream::connect(&f.addr).await.unwrap();
        third
            .write_all(b"GET /app/third HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
        assert!(
            early.is_err(),
            "the third connection is not served while two are open"
        );
        assert_eq!(m.journal().snapshot().requests.len(), 2);
        assert!(status_json(&f)["admission"]["accept_pauses"].as_u64() >= Some(1));

        drop(open.remove(0));
        assert_eq!(read_response(&mut third).await.status, 200);
        assert_eq!(m.journal().snapshot().requests.len(), 3);
    })
    .await;
}

/// Bodies buffered at once share `limits.body_buffer_budget`: a chunked body that does not fit
/// is answered 503 and its connection closed, the backend never sees it, and its bytes are
/// given back; the body that fitted is served, and afterwards the budget is whole again. Each
/// body being read is also charged `limits.max_header_bytes` (64 KiB) for its connection's buffers.
const BUDGET: u64 = (64 + 64 + 100) * 1024;
const A_HELD: u64 = (64 + 80) * 1024;

#[tokio::test]
async fn body_budget_refuses_what_does_not_fit_and_gives_it_back() {
    within(T * 2, async {
        let m = mock("").await;
        let f = start(&front::conf(&m, ""), |c| {
            c.limits.body_buffer_budget = BUDGET;
        })
        .await;
        // A: 80 KiB of a chunked body, then it pauses.
        let mut a = TcpStream::connect(&f.addr).await.unwrap();
        a.write_all(b"POST /app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let piece = vec![b'a'; 80 * 1024];
        a.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        a.write_all(&piece).await.unwrap();
        a.write_all(b"\r\n").await.unwrap();
        // Wait until the proxy holds A's 80 KiB (and its 64 KiB of buffers).
        let deadline = tokio::time::Instant::now() + T;
        while status_json(&f)["admission"]["body_buffer_bytes"].as_u64() < Some(A_HELD) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "A's body was not read"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // B: 64 + 40 KiB more does not fit.
        let b_body = vec![b'b'; 40 * 1024];
        let mut b_req =
            b"POST /app/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        b_req.extend_from_slice(format!("{:x}\r\n", b_body.len()).as_bytes());
        b_req.extend_from_slice(&b_body);
        b_req.extend_from_slice(b"\r\n0\r\n\r\n");
        let b = talk(&f.addr, &b_req, T).await;
        assert!(b.closed, "the connection is closed after the refusal");
        let r = http1::parse_response(&b.out).unwrap_or_else(|e| panic!("{e}: {}", b.text()));
        assert_eq!(r.status, 503, "{}", b.text());
        let adm = status_json(&f)["admission"].clone();
        assert_eq!(adm["body_buffer_refused"], 1, "{adm}");
        assert_eq!(
            adm["body_buffer_bytes"], A_HELD,
            "B's bytes were given back: {adm}"
        );

        // A finishes and is served.
        a.write_all(b"0\r\n\r\n").await.unwrap();
        assert_eq!(read_response(&mut a).await.status, 200);
        let seen: Vec<String> = m
            .journal()
            .snapshot()
            .requests
            .iter()
            .map(|r| r.param("REQUEST_URI").unwrap_or_default())
            .collect();
        assert_eq!(
            seen,
            ["/app/a"],
            "the refused body never reached the backend"
        );
        let deadline = tokio::time::Instant::now() + T;
        while status_json(&f)["admission"]["body_buffer_bytes"] != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "budget not given back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // B's first pieces were held until one did not fit: the peak is within the budget.
        let peak = status_json(&f)["admission"]["body_buffer_bytes_peak"]
            .as_u64()
            .unwrap_or(0);
        assert!((A_HELD..=BUDGET).contains(&peak), "peak {peak}");
        // With the budget free again, B fits.
        let again = talk(&f.addr, &b_req, Duration::from_millis(500)).await;
        assert_eq!(again.statuses().first(), Some(&200), "{}", again.text());
    })
    .await;
}

/// `limits.max_waiting` requests may wait for a backend at its cap; one more is answered 503
/// at once (no wait for `acquire`) and never reaches the backend.
#[tokio::test]
async fn waiting_queue_is_bounded() {
    within(T * 2, async {
        let m =
            mock("[default]\nstatus = 200\nbody = [{ data = \"slow\", delay_ms = 400 }]\n").await;
        let f = start(&front::conf(&m, "max=1 acquire=5000"), |c| {
            c.limits.max_waiting = 1;
        })
        .await;
        let first = tokio::spawn({
            let addr = f.addr.clone();
            async move { front::send_to(&addr, get("/app/1")).await }
        });
        // The first holds the only connection; the second waits.
        let deadline = tokio::time::Instant::now() + T;
        while m.journal().snapshot().requests.is_empty() {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = tokio::spawn({
            let addr = f.addr.clone();
            async move { front::send_to(&addr, get("/app/2")).await }
        });
        while f.proxy.workers()[0].pool.stats().waiting == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the second never waited"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = tokio::time::Instant::now();
        let third = send(&f, get("/app/3")).await;
        assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "refused at once, not after acquire"
        );
        assert_eq!(first.await.unwrap().status, StatusCode::OK);
        assert_eq!(second.await.unwrap().status, StatusCode::OK);
        let s = f.proxy.workers()[0].pool.stats();
        assert_eq!((s.queue_full, s.waiting), (1, 0), "{s:?}");
        let uris: Vec<String> = m
            .journal()
            .snapshot()
            .requests
            .iter()
            .map(|r| r.param("REQUEST_URI").unwrap_or_default())
            .collect();
        assert_eq!(uris, ["/app/1", "/app/2"]);
        let w = &status_json(&f)["workers"][0];
        assert_eq!(w["queue_full"], 1, "{w}");
    })
    .await;
}
