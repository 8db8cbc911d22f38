//! The proxy in-process on a loopback port, fed from an Apache-style config, and a small HTTP
//! client that uses one connection per request; raw connections and what the mock's journal and
//! the pool say afterwards.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fcgi_mock::journal::ConnectionEntry;
use fcgi_mock::{MockHandle, MockServer, Script};
use fcgi_proxy::config::{self, Config};
use fcgi_proxy::handler::Proxy;
use fcgi_proxy::net::TokioConnector;
use fcgi_proxy::pool::PoolStats;
use fcgi_proxy::server::{self, FrontSettings};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use testkit::http1;
use tokio::sync::watch;

pub const T: Duration = Duration::from_secs(10);

pub struct Front {
    pub addr: String,
    pub proxy: Arc<Proxy<TokioConnector>>,
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// `/app/` proxied to the FastCGI backend at `addr`, with `extra` ProxyPass parameters.
pub fn conf_at(addr: &str, extra: &str) -> String {
    format!("Listen 127.0.0.1:0\nProxyPass /app/ fcgi://{addr}/ {extra}\n")
}

/// `/app/` proxied to the mock `m`, with `extra` ProxyPass parameters.
pub fn conf(m: &MockHandle, extra: &str) -> String {
    conf_at(m.addr(), extra)
}

/// Runs `f` with a time budget, so that no test can hang.
pub async fn within<F: std::future::Future>(budget: Duration, f: F) -> F::Output {
    tokio::time::timeout(budget, f)
        .await
        .expect("test finished within its time budget")
}

pub async fn start(conf: &str, tweak: impl FnOnce(&mut Config)) -> Front {
    // The listener is made here; the config only needs to pass validation.
    let conf = if conf.contains("Listen ") {
        conf.to_string()
    } else {
        format!("Listen 127.0.0.1:0\n{conf}")
    };
    let (mut cfg, _warnings) = config::apache::parse(&conf, "test.conf").expect("config parses");
    tweak(&mut cfg);
    cfg.validate().expect("valid config");
    let front = FrontSettings::from_config(&cfg);
    let proxy = Arc::new(Proxy::new(Arc::new(cfg), TokioConnector).expect("proxy builds"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(server::serve(listener, proxy.clone(), front, rx));
    Front {
        addr,
        proxy,
        stop,
        task,
    }
}

/// A mock on a given address (to bring a backend back on the port it had).
pub async fn mock_at(addr: &str, script: &str) -> MockHandle {
    MockServer::bind_tcp(addr, Script::from_toml_str(script).expect("valid script"))
        .await
        .expect("mock binds")
}

pub async fn mock(script: &str) -> MockHandle {
    MockServer::bind_tcp(
        "127.0.0.1:0",
        Script::from_toml_str(script).expect("valid script"),
    )
    .await
    .expect("mock binds")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Result<Bytes, String>,
}

/// One request on its own client connection.
pub async fn send(front: &Front, req: Request<Full<Bytes>>) -> Reply {
    send_to(&front.addr, req).await
}

/// One request on its own connection to `addr`.
pub async fn send_to(addr: &str, req: Request<Full<Bytes>>) -> Reply {
    tokio::time::timeout(T, async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        reply(tx.send_request(req).await.expect("response head")).await
    })
    .await
    .expect("request finishes within the test timeout")
}

/// GETs `paths` one after the other on one client connection.
pub async fn on_one_connection(addr: &str, paths: &[&str]) -> Vec<Reply> {
    tokio::time::timeout(T, async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let mut out = Vec::new();
        for p in paths {
            out.push(reply(tx.send_request(get(p)).await.expect("response head")).await);
        }
        conn.abort();
        out
    })
    .await
    .expect("requests finish within the test timeout")
}

/// The status, headers and whole body of `resp`.
async fn reply(resp: http::Response<hyper::body::Incoming>) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    Reply {
        status,
        headers,
        body,
    }
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "example.test")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The one response in `out` (what a raw connection got before it closed); the test fails when
/// it is not one whole response.
pub fn response(out: &[u8]) -> http1::Response {
    http1::parse_response(out).unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(out)))
}

/// Writes `bytes` on a fresh connection and reads until the proxy closes it.
pub async fn raw(front: &Front, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&front.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .expect("the proxy answers and closes within the test timeout");
    out
}

/// What came back on one raw connection.
pub struct Talk {
    pub out: Vec<u8>,
    /// The proxy closed the connection (EOF or reset) within the wait.
    pub closed: bool,
    pub took: Duration,
}

impl Talk {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Status codes of the responses in the output, in order (interim ones left out). Bytes
    /// after them that are not a response fail the test.
    pub fn statuses(&self) -> Vec<u16> {
        let (responses, rest) = http1::parse_responses(&self.out, self.closed);
        assert_eq!(
            rest,
            0,
            "bytes after the responses that are no response: {}",
            self.text()
        );
        responses.iter().map(|r| r.status).collect()
    }
}

/// Writes `bytes` (write errors ignored: the proxy may close early) and reads until the proxy
/// closes the connection or `wait` passes.
pub async fn talk(addr: &str, bytes: &[u8], wait: Duration) -> Talk {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = tokio::time::Instant::now();
    let mut s = tokio::time::timeout(T, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let _ = tokio::time::timeout(T, s.write_all(bytes)).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = started + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    Talk {
        out,
        closed,
        took: started.elapsed(),
    }
}

/// Waits up to `budget` for the mock's backend connection `conn` (0-based) to close; its entry.
pub async fn wait_closed(m: &MockHandle, conn: usize, budget: Duration) -> ConnectionEntry {
    let j = m.journal();
    tokio::time::timeout(
        budget,
        j.wait_for(|s| s.connections.get(conn).is_some_and(|c| !c.is_open())),
    )
    .await
    .unwrap_or_else(|_| panic!("backend connection {conn} still open: {:?}", j.snapshot()));
    j.snapshot().connections[conn].clone()
}

/// The pool of the first (only) worker.
pub fn pool_stats(f: &Front) -> PoolStats {
    f.proxy.workers()[0].pool.stats()
}

/// No backend connection is open, in use or idle.
pub fn assert_pool_empty(f: &Front) {
    let stats = pool_stats(f);
    assert_eq!((stats.open, stats.idle), (0, 0), "{stats:?}");
}
