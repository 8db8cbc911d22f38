//! Graceful reload: under steady load (kept-alive connections), the configuration is changed
//! and reloaded 20 times (`fcgi-proxy reload --pid-file`, i.e. SIGHUP); no request fails, a
//! request in flight across a reload finishes on the configuration it started with, new
//! connections get the new one, and a configuration that does not load is refused with the
//! reason in the log while the last good one keeps serving. A kept-alive connection of a
//! replaced configuration serves its next request and closes with it (`Connection: close`), so
//! a client never has to resend one; the count of resends is printed.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fcgi_mock::{MockServer, Script};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::Proc;

const WAIT: Duration = Duration::from_secs(10);

fn config(port: u16, backend: SocketAddr, generation: u32) -> String {
    format!(
        r#"workers = 2
listen = ["127.0.0.1:{port}"]

[[setenv]]
name = "GEN"
value = "{generation}"

[[route]]
path = "/app/"
target = "fcgi://{backend}/"
"#
    )
}

/// The GEN param the backend echoed in a response body, if any.
fn generation_of(body: &[u8]) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["params"]
        .as_array()?
        .iter()
        .find(|p| p[0] == "GEN")
        .and_then(|p| p[1].as_str())
        .and_then(|s| s.parse().ok())
}

#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// A kept-alive connection the proxy closed just as the next request went out (no byte
    /// of answer): sent again on a new connection, as clients do (RFC 9112 9.3.1).
    resent: AtomicU64,
    /// The highest generation seen in an answer.
    newest: AtomicU64,
}

/// One client: kept-alive connections, one request at a time, until `stop`.
async fn client(
    front: SocketAddr,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
) {
    'conn: while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = tokio::net::TcpStream::connect(front).await else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            errors.lock().unwrap().push("connect failed".into());
            continue;
        };
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
        else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        tokio::spawn(conn);
        let mut on_this = 0u32;
        while !stop.load(Ordering::Relaxed) {
            if send.ready().await.is_err() {
                continue 'conn;
            }
            let req = hyper::Request::get("/app/x.php")
                .header("host", "reload.test")
                .body(Empty::<Bytes>::new())
                .expect("request");
            let r = tokio::time::timeout(WAIT, send.send_request(req)).await;
            match r {
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                    match (status.as_u16(), body) {
                        (200, Ok(b)) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                            if let Some(g) = generation_of(&b) {
                                tally.newest.fetch_max(u64::from(g), Ordering::Relaxed);
                            }
                        }
                        (s, b) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("status {s}, body {:?}", b.map(|b| b.len())));
                        }
                    }
                }
                Ok(Err(e)) if on_this > 0 && (e.is_canceled() || e.is_incomplete_message()) => {
                    tally.resent.fetch_add(1, Ordering::Relaxed);
                    continue 'conn;
                }
                Ok(Err(e)) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("request {on_this} on its connection: {e:?}"));
                    continue 'conn;
                }
                Err(_) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    errors.lock().unwrap().push("no answer in time".into());
                    continue 'conn;
                }
            }
            on_this += 1;
        }
    }
}

/// Starts the proxy on `conf` with `--pid-file` (its stderr in `log`) and waits until it
/// listens on `front`.
async fn start(conf: &Path, pid_file: &Path, log: &Path, front: SocketAddr) -> Proc {
    let (c, p, l) = (conf.to_owned(), pid_file.to_owned(), log.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(support::proxy_bin());
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .arg("--config")
            .arg(&c)
            .arg("--pid-file")
            .arg(&p);
        let mut proc = Proc::spawn_capturing_stdout("fcgi-proxy", cmd, &l);
        proc.wait_ready(front, Some("listening on")).map(|()| proc)
    })
    .await
    .expect("blocking")
    .expect("proxy starts")
}

/// A mock backend and the proxy in front of it, started on `config(port, backend, 1)` and
/// serving generation 1.
struct Running {
    f: support::Fixture,
    conf: std::path::PathBuf,
    pid_file: std::path::PathBuf,
    proxy: Proc,
}

async fn running(config: impl Fn(u16, SocketAddr, u32) -> String) -> Running {
    let f = support::Fixture::new(Script::default()).await;
    let conf = f.path("proxy.toml");
    std::fs::write(&conf, config(f.port, f.backend, 1)).expect("write");
    let pid_file = f.path("proxy.pid");
    let proxy = start(&conf, &pid_file, &f.path("proxy.log"), f.front).await;
    wait_for_generation(f.front, 1).await;
    Running {
        f,
        conf,
        pid_file,
        proxy,
    }
}

fn reload(pid_file: &Path) {
    let out = std::process::Command::new(support::proxy_bin())
        .arg("reload")
        .arg("--pid-file")
        .arg(pid_file)
        .output()
        .expect("run fcgi-proxy reload");
    assert!(
        out.status.success(),
        "fcgi-proxy reload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn get(front: SocketAddr, path: &str) -> (u16, Bytes) {
    let tcp = tokio::net::TcpStream::connect(front)
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "reload.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().collect().await.expect("body").to_bytes(),
    )
}

async fn wait_for_generation(front: SocketAddr, generation: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        // Not listening yet (a reload in progress) counts as not yet.
        let last = if tokio::net::TcpStream::connect(front).await.is_ok() {
            let (status, body) = get(front, "/app/probe.php").await;
            if status == 200 && generation_of(&body) == Some(generation) {
                return;
            }
            format!("{status} {:?}", generation_of(&body))
        } else {
            "connection refused".to_owned()
        };
        assert!(
            Instant::now() < deadline,
            "generation {generation} not served on {front} (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request() {
    let script = Script::from_toml_str(
        r#"
[[rule]]
match = { request_uri_prefix = "/app/slow" }
status = 200
headers = [["Content-Type", "text/plain"]]
body = [{ data = "part-one;" }, { data = "part-two", delay_ms = 1500 }]
"#,
    )
    .expect("script");
    let f = support::Fixture::new(script).await;
    let (backend, port, front) = (f.backend, f.port, f.front);
    let conf = f.path("proxy.toml");
    std::fs::write(&conf, config(port, backend, 0)).expect("write");
    let pid_file = f.path("proxy.pid");
    let log = f.path("proxy.log");
    let mut proxy = start(&conf, &pid_file, &log, front).await;
    let deadline = Instant::now() + WAIT;
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "no pid file");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for_generation(front, 0).await;

    // A slow request started on generation 0 finishes on it, across the reloads.
    let slow = tokio::spawn(async move { get(front, "/app/slow.php").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..6)
        .map(|_| tokio::spawn(client(front, tally.clone(), stop.clone(), errors.clone())))
        .collect();
    for generation in 1..=20u32 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        std::fs::write(&conf, config(port, backend, generation)).expect("write");
        let p = pid_file.clone();
        tokio::task::spawn_blocking(move || reload(&p))
            .await
            .expect("reload");
    }
    wait_for_generation(front, 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let (ok, failed, resent) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.resent.load(Ordering::Relaxed),
    );
    eprintln!(
        "reload under load: {ok} answered, {failed} failed, {resent} resent on a new connection"
    );
    assert_eq!(failed, 0, "failed requests: {:?}", errors.lock().unwrap());
    assert!(ok > 100, "too little load to show anything: {ok}");
    assert_eq!(tally.newest.load(Ordering::Relaxed), 20);

    let (status, body) = slow.await.expect("slow request");
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"part-one;part-two");

    // A configuration that does not load: refused, the reason logged, generation 20 serves on.
    std::fs::write(&conf, "listen = [\"127.0.0.1:1\"\n").expect("write");
    let p = pid_file.clone();
    tokio::task::spawn_blocking(move || reload(&p))
        .await
        .expect("reload");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("reload refused") {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = get(front, "/app/after.php").await;
    assert_eq!((status, generation_of(&body)), (200, Some(20)));
    assert!(proxy.exited().is_none(), "the proxy exited");
    tokio::task::spawn_blocking(move || drop(proxy))
        .await
        .expect("stop");
}

fn config_on(ports: &[u16], backend: SocketAddr, generation: u32) -> String {
    let listen: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "workers = 2\nlisten = [{}]\n[[setenv]]\nname = \"GEN\"\nvalue = \"{generation}\"\n\
         [[route]]\npath = \"/app/\"\ntarget = \"fcgi://{backend}/\"\n",
        listen.join(", ")
    )
}

/// A reload that adds a listen address starts listening there; one that drops an address
/// stops listening there (connections are refused, not left in a backlog), the others serve on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_listeners() {
    let mock = MockServer::bind_tcp("127.0.0.1:0", Script::default())
        .await
        .expect("mock");
    let backend = mock.socket_addr().expect("tcp");
    let dir = tempfile::tempdir().expect("tempdir");
    let (p1, p2) = (support::free_port(), support::free_port());
    let (a1, a2): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{p1}").parse().expect("addr"),
        format!("127.0.0.1:{p2}").parse().expect("addr"),
    );
    let conf = dir.path().join("proxy.toml");
    std::fs::write(&conf, config_on(&[p1], backend, 1)).expect("write");
    let pid_file = dir.path().join("proxy.pid");
    let log = dir.path().join("proxy.log");
    let proxy = start(&conf, &pid_file, &log, a1).await;
    wait_for_generation(a1, 1).await;
    assert!(
        tokio::net::TcpStream::connect(a2).await.is_err(),
        "{a2} open before"
    );

    std::fs::write(&conf, config_on(&[p1, p2], backend, 2)).expect("write");
    let p = pid_file.clone();
    tokio::task::spawn_blocking(move || reload(&p))
        .await
        .expect("reload");
    wait_for_generation(a2, 2).await;
    wait_for_generation(a1, 2).await;

    std::fs::write(&conf, config_on(&[p2], backend, 3)).expect("write");
    let p = pid_file.clone();
    tokio::task::spawn_blocking(move || reload(&p))
        .await
        .expect("reload");
    wait_for_generation(a2, 3).await;
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(a1).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{a1} still accepts after its removal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::spawn_blocking(move || drop(proxy))
        .await
        .expect("stop");
}

/// A kept-alive connection idle across a reload: its next request is answered on the old
/// configuration with `Connection: close` (not met by a close), and the connection then ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connection_serves_one_more_request_after_a_reload() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Running {
        f,
        conf,
        pid_file,
        proxy,
    } = running(config).await;
    let (backend, port, front) = (f.backend, f.port, f.front);

    let mut old = tokio::net::TcpStream::connect(front)
        .await
        .expect("connect");
    let req = b"GET /app/k.php HTTP/1.1\r\nHost: reload.test\r\n\r\n";
    old.write_all(req).await.expect("write");
    let first = read_answer(&mut old).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("[\"GEN\",\"1\"]"), "{first}");

    std::fs::write(&conf, config(port, backend, 2)).expect("write");
    let p = pid_file.clone();
    tokio::task::spawn_blocking(move || reload(&p))
        .await
        .expect("reload");
    wait_for_generation(front, 2).await;

    old.write_all(req)
        .await
        .expect("write on the old connection");
    let second = read_answer(&mut old).await;
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "the old connection's next request: {second:?}"
    );
    assert!(second.contains("[\"GEN\",\"1\"]"), "{second}");
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "{second}"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, old.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(n, 0, "more after the last answer: {rest:?}");
    tokio::task::spawn_blocking(move || drop(proxy))
        .await
        .expect("stop");
}

/// One answer on a kept-alive connection whose body is the echo JSON (ends with `}`).
async fn read_answer(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("answer in time")
            .expect("read");
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.ends_with(b"}") || buf.ends_with(b"}\n") {
            return String::from_utf8_lossy(&buf).into_owned();
        }
    }
}

/// The backend connections of a backend the reload leaves as it was are kept: the requests of
/// the new configuration go on over the connection the old one opened. A backend whose pool
/// settings changed gets a new pool, and the old pool's idle connection is closed once the old
/// configuration is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_pools_of_unchanged_backends() {
    // One serving thread: one pool shard, so every request finds the idle connection.
    let one_thread = |port, backend, generation| {
        config(port, backend, generation).replace("workers = 2", "workers = 1")
    };
    let Running {
        f,
        conf,
        pid_file,
        proxy,
    } = running(one_thread).await;
    let (mock, backend, port, front) = (&f.mock, f.backend, f.port, f.front);
    let config =
        |generation: u32, worker_max: &str| one_thread(port, backend, generation) + worker_max;
    let reload_to = |generation: u32, worker_max: &'static str| {
        std::fs::write(&conf, config(generation, worker_max)).expect("write");
        let p = pid_file.clone();
        async move {
            tokio::task::spawn_blocking(move || reload(&p))
                .await
                .expect("reload");
            wait_for_generation(front, generation).await;
        }
    };
    let opened = || mock.journal().snapshot().connections.len();
    assert_eq!(opened(), 1);

    // Same backend, same settings (only a param changed): the connection goes on.
    reload_to(2, "").await;
    assert_eq!(get(front, "/app/a.php").await.0, 200);
    let snap = mock.journal().snapshot();
    assert_eq!(snap.connections.len(), 1, "{:?}", snap.connections);
    assert!(snap.connections[0].closed_ms.is_none());
    assert!(snap.requests.len() >= 3);

    // The pool's settings changed: a new pool, a new connection; the old one is closed.
    reload_to(3, "worker.max = 7\n").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let snap = mock.journal().snapshot();
        let done = snap.connections.len() == 2 && snap.connections[0].closed_ms.is_some();
        if done {
            assert_ne!(
                snap.connections[0].closed_by,
                Some(fcgi_mock::journal::ClosedBy::Backend)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old pool's connection is closed and a new one opened: {:?}",
            snap.connections
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::spawn_blocking(move || drop(proxy))
        .await
        .expect("stop");
}
