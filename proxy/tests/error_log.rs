//! The error log (`[error_log]`, Apache's `ErrorLog` and `LogLevel`): the proxy's own messages
//! go to the file from the level configured, the built-in access line stays on stderr, the file
//! is reopened at SIGUSR1 after logrotate moved it, and a reload changes the level.
//! (A backend that cannot be reached is logged once, not at every request.)

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::Signal;

const WAIT: Duration = Duration::from_secs(10);

fn get(front: SocketAddr, path: &str) -> String {
    send(
        front,
        &format!("GET {path} HTTP/1.1\r\nHost: log.test\r\nConnection: close\r\n\r\n"),
    )
}

fn send(front: SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(front).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn config(port: u16, down: SocketAddr, log: &Path, level: &str) -> String {
    format!(
        "listen = [\"127.0.0.1:{port}\"]\n\
         [error_log]\npath = \"{}\"\nlevel = \"{level}\"\n\
         [[route]]\npath = \"/app/\"\ntarget = \"fcgi://{down}/\"\n",
        log.display()
    )
}

/// Waits until `path` holds a line containing `what`.
fn wait_for_line(path: &Path, what: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no line with {what:?} in {}: {text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn messages_go_to_the_error_log_from_its_level() {
    // A backend address nothing listens on: each request logs "backend unreachable" (error).
    let down = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let down_addr = down.local_addr().expect("addr");
    drop(down);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let log = dir.path().join("error.log");
    let conf = dir.path().join("proxy.toml");
    std::fs::write(&conf, config(port, down_addr, &log, "warn")).expect("write");
    let stderr = dir.path().join("proxy.err");
    let mut proxy = support::start_proxy_toml(&conf, &stderr, front).expect("proxy");

    // An HTTP/1.1 request without Host is refused with an `info` message, below `warn`.
    let refused = send(
        front,
        "GET /app/a.php HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    let answer = get(front, "/app/a.php");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let text = wait_for_line(&log, "backend unreachable");
    assert!(!text.contains("request refused"), "{text}");
    // The access line is not an error message: stderr, not the error log.
    let err = wait_for_line(&stderr, "/app/a.php");
    assert!(!err.contains("backend unreachable"), "{err}");
    assert!(!text.contains("/app/a.php\""), "{text}");

    // logrotate: the file moved, SIGUSR1, the next message goes to a new file.
    let rotated = dir.path().join("error.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    proxy.signal(Signal::SIGUSR1).expect("SIGUSR1");
    let deadline = Instant::now() + WAIT;
    while !log.exists() {
        assert!(Instant::now() < deadline, "the error log was not reopened");
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = std::fs::read_to_string(&rotated).expect("rotated");
    // A reload at the same level (the route moved, so it shows when it is done): its
    // "configuration reloaded" is `info`, not written.
    std::fs::write(
        &conf,
        config(port, down_addr, &log, "warn").replace("path = \"/app/\"", "path = \"/moved/\""),
    )
    .expect("write");
    proxy.signal(Signal::SIGHUP).expect("SIGHUP");
    let deadline = Instant::now() + WAIT;
    while !get(front, "/app/a.php").starts_with("HTTP/1.1 404") {
        assert!(Instant::now() < deadline, "the reload was not made");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("configuration reloaded"), "{text}");
    // A configuration that does not load: the reload is refused, an error.
    std::fs::write(&conf, "listen = [").expect("write");
    proxy.signal(Signal::SIGHUP).expect("SIGHUP");
    wait_for_line(&log, "reload refused");
    assert_eq!(
        std::fs::read_to_string(&rotated).expect("rotated"),
        before,
        "the rotated file got more lines"
    );

    // A reload to `info`: the reload's own message is written now.
    std::fs::write(&conf, config(port, down_addr, &log, "info")).expect("write");
    proxy.signal(Signal::SIGHUP).expect("SIGHUP");
    wait_for_line(&log, "configuration reloaded");
    drop(proxy);
}
