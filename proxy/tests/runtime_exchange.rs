//! The pool and the exchange against the scriptable mock over real loopback TCP: what the
//! backend saw (from its journal) and what the client would get.

use std::time::Duration;

use bytes::Bytes;
use fcgi_mock::{MockHandle, MockServer, Script};
use fcgi_proxy::body::ProxyBody;
use fcgi_proxy::error::ErrorKind;
use fcgi_proxy::exchange::{Outcome, RequestBody};
use fcgi_proxy::handler::{Shape, Worker, forward};
use fcgi_proxy::net::{BackendAddr, TokioConnector};
use fcgi_proxy::pool::PoolSettings;
use http::StatusCode;
use http_body_util::BodyExt;

const T: Duration = Duration::from_secs(5);

async fn mock(script: &str) -> MockHandle {
    let script = Script::from_toml_str(script).expect("valid script");
    MockServer::bind_tcp("127.0.0.1:0", script)
        .await
        .expect("mock binds")
}

fn worker(
    m: &MockHandle,
    reuse: bool,
    io_timeout: Duration,
    max: Option<usize>,
) -> Worker<TokioConnector> {
    Worker::new(
        format!("fcgi://{}", m.addr()),
        TokioConnector,
        BackendAddr::Tcp(m.addr().to_string()),
        reuse,
        io_timeout,
        PoolSettings {
            max,
            default_max: 25,
            ttl: None,
            acquire: Some(Duration::from_millis(200)),
            connect_timeout: Duration::from_secs(1),
            reuse: true,
            max_waiting: 0,
        },
    )
}

fn params(uri: &str) -> Vec<fcgi_proxy::cgi::Param> {
    vec![
        ("REQUEST_METHOD".into(), b"GET".to_vec()),
        ("SCRIPT_NAME".into(), uri.as_bytes().to_vec()),
        ("REQUEST_URI".into(), uri.as_bytes().to_vec()),
        ("QUERY_STRING".into(), Vec::new()),
    ]
}

async fn get(
    w: &Worker<TokioConnector>,
    uri: &str,
) -> Result<Outcome, fcgi_proxy::error::ProxyError> {
    tokio::time::timeout(
        T,
        forward(
            w,
            fcgi_proxy::exchange::encode_preamble(&params(uri), w.reuse),
            RequestBody::Buffered(Bytes::new().into()),
            Shape::of(&http::Method::GET, 64 * 1024),
            None,
        ),
    )
    .await
    .expect("no hang")
}

async fn body_of(o: Outcome) -> Result<Bytes, String> {
    tokio::time::timeout(T, o.body.collect())
        .await
        .expect("body does not hang")
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string())
}

const HELLO: &str = r#"
[default]
status = 201
reason = "Made It"
headers = [["Content-Type", "text/plain"], ["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"], ["Content-Length", "999"]]
body = [{ data = "hello" }]
"#;

#[tokio::test]
async fn reply_is_mapped_and_complete_bodies_get_a_length() {
    let m = mock(HELLO).await;
    let w = worker(&m, true, T, None);
    let o = get(&w, "/x").await.expect("reply");
    assert_eq!(o.head.status, StatusCode::CREATED);
    assert_eq!(o.head.reason.as_deref(), Some("Made It"));
    let cookies: Vec<_> = o.head.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    // The backend's Content-Length is not trusted: the proxy frames the body itself.
    assert!(o.head.headers.get("content-length").is_none());
    assert!(
        matches!(o.body, ProxyBody::Full(_)),
        "whole response came in one read"
    );
    assert_eq!(body_of(o).await.unwrap(), "hello");
    let r = m.journal().request(1).expect("journaled");
    assert_eq!(r.param("SCRIPT_NAME").as_deref(), Some("/x"));
    assert!(r.keep_conn);
}

#[tokio::test]
async fn sequential_requests_share_one_connection_with_keep_conn() {
    let m = mock(HELLO).await;
    let w = worker(&m, true, T, None);
    for _ in 0..5 {
        let o = get(&w, "/x").await.expect("reply");
        body_of(o).await.unwrap();
    }
    let j = m.journal().snapshot();
    assert_eq!(
        j.connection_count(),
        1,
        "one backend connection for 5 requests"
    );
    assert_eq!(j.requests.len(), 5);
    assert!(j.requests.iter().all(|r| r.keep_conn));
    let s = w.pool.stats();
    assert_eq!((s.opened, s.reused), (1, 4));
}

#[tokio::test]
async fn disablereuse_opens_a_connection_per_request_without_keep_conn() {
    let m = mock(HELLO).await;
    let w = worker(&m, false, T, None);
    for _ in 0..4 {
        let o = get(&w, "/x").await.expect("reply");
        body_of(o).await.unwrap();
    }
    let j = m.journal().snapshot();
    assert_eq!(j.connection_count(), 4);
    assert!(j.requests.iter().all(|r| !r.keep_conn));
    assert_eq!(w.pool.stats().idle, 0);
}

#[tokio::test]
async fn idle_connection_closed_by_backend_is_not_used() {
    let m = mock(&format!("[server]\nidle_timeout_ms = 50\n{HELLO}")).await;
    let w = worker(&m, true, T, None);
    body_of(get(&w, "/a").await.expect("first")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = get(&w, "/b")
        .await
        .expect("second request succeeds on a new connection");
    assert_eq!(body_of(o).await.unwrap(), "hello");
    assert_eq!(m.journal().connection_count(), 2);
    let s = w.pool.stats();
    assert_eq!(
        s.closed_idle_by_backend, 1,
        "the idle watcher saw the close: {s:?}"
    );
    assert_eq!(s.reused, 0);
}

#[tokio::test]
async fn failure_on_a_reused_connection_is_retried_on_a_fresh_one() {
    // The second request is dropped by the backend without an answer, as a stale keep-alive
    // connection would be. The proxy retries it; the backend sees it again as request 3.
    let m = mock(&format!(
        "[[rule]]\nmatch = {{ request = 2 }}\naction = \"close\"\n{HELLO}"
    ))
    .await;
    let w = worker(&m, true, T, None);
    body_of(get(&w, "/a").await.expect("first")).await.unwrap();
    let o = get(&w, "/b").await.expect("retried transparently");
    assert_eq!(body_of(o).await.unwrap(), "hello");
    let j = m.journal().snapshot();
    assert_eq!(j.requests.len(), 3);
    assert_eq!(j.connection_count(), 2);
}

/// A worker that takes a fresh connection and drops it without output (a crash, a php-fpm child
/// told to quit as it reads): a GET gets one more try, not more.
#[tokio::test]
async fn a_get_broken_on_a_fresh_connection_is_sent_once_more() {
    let m = mock("[default]\naction = \"close\"\n").await;
    let w = worker(&m, true, T, None);
    let e = get(&w, "/a").await.expect_err("backend closed");
    assert_eq!(e.kind, ErrorKind::BackendClosed);
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(m.journal().snapshot().requests.len(), 2);
}

#[tokio::test]
async fn silent_backend_gives_504_within_the_timeout() {
    let m = mock("[default]\naction = \"never_answer\"\n").await;
    let w = worker(&m, true, Duration::from_millis(300), None);
    let started = tokio::time::Instant::now();
    let e = get(&w, "/a").await.expect_err("timeout");
    assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn refused_connection_gives_503() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let w = Worker::new(
        "dead".into(),
        TokioConnector,
        BackendAddr::Tcp(addr),
        true,
        T,
        PoolSettings {
            max: None,
            default_max: 25,
            ttl: None,
            acquire: None,
            connect_timeout: Duration::from_secs(1),
            reuse: true,
            max_waiting: 0,
        },
    );
    let e = get(&w, "/a").await.expect_err("refused");
    assert_eq!(e.kind, ErrorKind::ConnectFailed);
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn bad_backend_responses_are_502() {
    for (rule, what) in [
        ("reply_request_id = 9", "foreign request id"),
        ("omit_header_terminator = true", "headers never end"),
        ("bad_version = 2", "bad record version"),
    ] {
        let m = mock(&format!(
            "[default]\nheaders = [[\"Content-Type\", \"text/plain\"]]\nbody = [{{ data = \"x\" }}]\n{rule}\n"
        ))
        .await;
        let w = worker(&m, true, T, None);
        let e = get(&w, "/a").await.expect_err(what);
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY, "{what}: {e}");
    }
}

#[tokio::test]
async fn truncated_body_is_an_error_not_a_short_success() {
    let m = mock(
        r#"
[default]
headers = [["Content-Type", "text/plain"]]
body = [{ data = "0123456789", repeat = 10 }, { data = "late", delay_ms = 100 }]
cut = { after_body_bytes = 50, then = "close" }
"#,
    )
    .await;
    let w = worker(&m, true, T, None);
    let o = get(&w, "/a").await.expect("head arrives");
    assert_eq!(o.head.status, StatusCode::OK);
    let b = body_of(o).await;
    assert!(
        b.is_err(),
        "truncation must surface as a body error, got {b:?}"
    );
}

#[tokio::test]
async fn cap_reached_and_acquire_exceeded_is_503() {
    let m = mock("[default]\nbody = [{ data = \"slow\", delay_ms = 600 }]\n").await;
    let w = std::sync::Arc::new(worker(&m, true, T, Some(1)));
    let w2 = w.clone();
    let first = tokio::spawn(async move { body_of(get(&w2, "/slow").await.expect("first")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = get(&w, "/second")
        .await
        .expect_err("no slot within acquire");
    assert_eq!(e.kind, ErrorKind::AcquireTimeout);
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.await.unwrap().unwrap(), "slow");
    assert_eq!(w.pool.stats().acquire_timeouts, 1);
}

#[tokio::test]
async fn a_waiting_request_gets_the_connection_when_it_is_released() {
    let m = mock("[default]\nbody = [{ data = \"ok\", delay_ms = 100 }]\n").await;
    let mut w = worker(&m, true, T, Some(1));
    w.pool = fcgi_proxy::pool::Pool::new(
        TokioConnector,
        BackendAddr::Tcp(m.addr().to_string()),
        PoolSettings {
            max: Some(1),
            default_max: 25,
            ttl: None,
            acquire: Some(Duration::from_secs(3)),
            connect_timeout: Duration::from_secs(1),
            reuse: true,
            max_waiting: 0,
        },
    );
    let w = std::sync::Arc::new(w);
    let mut tasks = Vec::new();
    for i in 0..3 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            body_of(get(&w, &format!("/{i}")).await.expect("served")).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "ok");
    }
    assert_eq!(
        m.journal().connection_count(),
        1,
        "all three on the one allowed connection"
    );
}

#[tokio::test]
async fn backend_refusal_before_headers_is_503() {
    let m = mock("[default]\nprotocol_status = \"overloaded\"\nomit_header_terminator = true\nbody = []\nheaders = []\n").await;
    let w = worker(&m, true, T, None);
    let e = get(&w, "/a").await.expect_err("overloaded");
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e}");
}

#[tokio::test]
async fn a_post_the_backend_may_have_received_is_not_sent_again() {
    // docs/reference/security.md R2 (c): request 2 arrives on the reused connection and the
    // backend closes without answering. A GET would be retried; a POST must not be.
    let m = mock(&format!(
        "[[rule]]\nmatch = {{ request = 2 }}\naction = \"close\"\n{HELLO}"
    ))
    .await;
    let w = worker(&m, true, T, None);
    body_of(get(&w, "/a").await.expect("first")).await.unwrap();
    let e = tokio::time::timeout(
        T,
        forward(
            &w,
            fcgi_proxy::exchange::encode_preamble(&params("/post"), w.reuse),
            RequestBody::Buffered(Bytes::from_static(b"x=1").into()),
            Shape::of(&http::Method::POST, 64 * 1024),
            None,
        ),
    )
    .await
    .expect("no hang")
    .expect_err("not retried");
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        m.journal().snapshot().requests.len(),
        2,
        "the POST reached the backend once"
    );
}
