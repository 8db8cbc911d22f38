//! A backend that cannot be reached (a Unix socket that is missing or that nothing listens on,
//! a TCP port with no listener): every request gets 503 at once, and the log says so in one
//! line per backend, naming the address and what to check, not one line per request. The log
//! goes to a file here, so it must carry no terminal colour codes.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{RawRequest, free_port, start_proxy_toml};

/// Starts the proxy with one route to `target`, sends `n` requests one after another and
/// returns their statuses, the longest time one took, and the proxy's log.
fn run(dir: &Path, target: &str, n: usize) -> (Vec<u16>, Duration, String) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let conf = dir.join("proxy.toml");
    std::fs::write(
        &conf,
        format!("listen = [\"{addr}\"]\n\n[[route]]\npath = \"/app/\"\ntarget = \"{target}\"\n"),
    )
    .unwrap();
    let log = dir.join("proxy.log");
    let mut proxy = start_proxy_toml(&conf, &log, addr).expect("the proxy starts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let req = RawRequest::whole(format!(
            "GET /app/index.php?{i} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ));
        let started = Instant::now();
        let r = rt
            .block_on(support::exchange(addr, &req))
            .expect("an answer");
        slowest = slowest.max(started.elapsed());
        statuses.push(r.status);
    }
    proxy.stop();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    (statuses, slowest, text)
}

fn unreachable_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("backend unreachable"))
        .collect()
}

fn check(dir: &Path, target: &str, names: &str, says: &str) {
    let (statuses, slowest, log) = run(dir, target, 12);
    assert!(statuses.iter().all(|&s| s == 503), "{statuses:?}\n{log}");
    assert!(slowest < Duration::from_secs(2), "took {slowest:?}");
    let lines = unreachable_lines(&log);
    assert_eq!(lines.len(), 1, "one line for 12 failed requests:\n{log}");
    assert!(lines[0].contains(names), "names the backend: {}", lines[0]);
    assert!(lines[0].contains(says), "says what to check: {}", lines[0]);
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes in a log file:\n{log}"
    );
}

#[test]
fn a_missing_unix_socket_is_503_and_one_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("php8.2-fpm.sock");
    check(
        dir.path(),
        &format!("unix:{}|fcgi://localhost/var/www/html/", sock.display()),
        &format!("unix:{}", sock.display()),
        "the socket does not exist",
    );
}

#[test]
fn a_unix_socket_nothing_listens_on_is_503_and_one_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    // A socket file left behind by a backend that is gone.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    check(
        dir.path(),
        &format!("unix:{}|fcgi://localhost/var/www/html/", sock.display()),
        &format!("unix:{}", sock.display()),
        "nothing listens on it",
    );
}

#[test]
fn a_tcp_port_nothing_listens_on_is_503_and_one_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    check(
        dir.path(),
        &format!("fcgi://127.0.0.1:{port}/var/www/html/"),
        &format!("127.0.0.1:{port}"),
        "nothing listens on this address",
    );
}
