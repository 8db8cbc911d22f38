//! Apache-style access logs: the same configuration file (`LogFormat`, `CustomLog`) read by
//! real Apache and by `fcgi-proxy --apache`, the same requests through each, and the lines each
//! wrote compared byte for byte (the time of `%t` and the durations of `%D`/`%T` checked for
//! their shape, as two runs cannot share them; `%t`'s offset from UTC compared too). Then, without Apache: JSON lines, and the log
//! file reopened at SIGUSR1 after logrotate moved it.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fcgi_mock::{MockServer, Script};
use support::{Proc, Signal};

const WAIT: Duration = Duration::from_secs(10);

/// Sends raw requests on one connection, each after the answer to the one before (the
/// last asks to close), and reads to the end.
fn exchange(front: SocketAddr, requests: &[Vec<u8>]) -> String {
    let mut s = std::net::TcpStream::connect(front).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut out = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        s.write_all(r).expect("write");
        if i + 1 < requests.len() {
            // The answer's end: the body every answer here has, whole or as the last chunk.
            while !(out.ends_with(b"hello, log\n") || out.ends_with(b"hello, log\n\r\n0\r\n\r\n")) {
                let mut buf = [0u8; 4096];
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        }
    }
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn request(line: &str, headers: &[&[u8]], close: bool) -> Vec<u8> {
    let mut r = format!("{line}\r\nHost: log.test\r\n").into_bytes();
    for h in headers {
        r.extend_from_slice(h);
        r.extend_from_slice(b"\r\n");
    }
    if close {
        r.extend_from_slice(b"Connection: close\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r
}

/// The client traffic: one kept-alive connection with two requests, and single ones.
fn traffic(front: SocketAddr) {
    let _ = exchange(
        front,
        &[
            request(
                "GET /app/one.php?x=1&y=%20z HTTP/1.1",
                &[b"User-Agent: test/1.0", b"Referer: http://ref.test/page"],
                false,
            ),
            request(
                "GET /app/two.php HTTP/1.1",
                &[b"User-Agent: quote \" and \xe9 and \\ back"],
                true,
            ),
        ],
    );
    let _ = exchange(front, &[request("HEAD /app/head.php HTTP/1.1", &[], true)]);
    let _ = exchange(front, &[request("GET /app/old.php HTTP/1.0", &[], false)]);
}

/// Waits until `path` has `n` lines.
fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read(path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text).into_owned();
        let l: Vec<String> = text.lines().map(str::to_owned).collect();
        if l.len() >= n {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, not {n}:\n{text}",
            path.display(),
            l.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `%t` (but for its offset from UTC: both write local time, in the same zone, `LOG_TZ`),
/// `%D` and `%T` as placeholders, after checking their shape.
fn mask(line: &str) -> String {
    let t = regex::Regex::new(r"\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} ([+-]\d{4})\]")
        .expect("regex");
    let d = regex::Regex::new(r" D=\d+ T=\d+$").expect("regex");
    assert!(t.is_match(line), "no %t in {line:?}");
    assert!(d.is_match(line), "no %D/%T in {line:?}");
    d.replace(&t.replace(line, "[TIME $1]"), " D=? T=?")
        .into_owned()
}

const FORMAT: &str = r#"%h %l %u %t \"%r\" %>s %b %B \"%{Referer}i\" \"%{User-Agent}i\" %H %m %U%q %p %{local}p %A %k %X %{Content-Type}o D=%D T=%T"#;

#[test]
fn log_lines_match_apache() {
    let Some(apache) = programs::require_program("apache2", "apache2") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let script = Script::from_toml_str(
        "[default]\nstatus = 200\nheaders = [[\"Content-Type\", \"text/plain\"]]\nbody = [{ data = \"hello, log\\n\" }]\n",
    )
    .expect("script");
    let mock = rt
        .block_on(MockServer::bind_tcp("127.0.0.1:0", script))
        .expect("mock");
    let backend = mock.socket_addr().expect("tcp");
    let dir = tempfile::Builder::new()
        .prefix("access-log-")
        .tempdir()
        .expect("tempdir");
    support::open_up_dir(dir.path());
    let port = support::free_port();
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let d = dir.path().display();
    let conf = format!(
        "ServerRoot \"{d}\"\nPidFile \"{d}/httpd.pid\"\nDefaultRuntimeDir \"{d}\"\n\
         ErrorLog \"{d}/error.log\"\nLogLevel warn\nMutex file:{d} default\nUser www-data\nGroup www-data\n\
         LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
         LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
         LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so\n\
         LoadModule proxy_fcgi_module /usr/lib/apache2/modules/mod_proxy_fcgi.so\n\
         Listen 127.0.0.1:{port}\nServerName log.test\nDocumentRoot \"{d}\"\n\
         LogFormat \"{FORMAT}\" parity\nCustomLog \"{d}/access.log\" parity\n\
         ProxyPass \"/app/\" \"fcgi://{backend}/\" disablereuse=on\n"
    );
    let conf_path = dir.path().join("httpd.conf");
    std::fs::write(&conf_path, conf).expect("write config");
    let log = dir.path().join("access.log");

    let proxy = support::start_proxy_apache(&conf_path, dir.path(), front).expect("proxy");
    // The readiness probe connected without a request: not a line.
    traffic(front);
    let ours = lines(&log, 4);
    drop(proxy);
    std::fs::remove_file(&log).expect("remove log");

    let httpd: Proc = support::start_apache(&apache, &conf_path, dir.path(), front);
    traffic(front);
    let theirs = lines(&log, 4);
    drop(httpd);

    // Each serving thread writes its own lines: the order between connections is not kept.
    let sorted = |l: &[String]| {
        let mut v: Vec<String> = l.iter().map(|l| mask(l)).collect();
        v.sort();
        v
    };
    let (ours, theirs) = (sorted(&ours), sorted(&theirs));
    assert_eq!(
        ours, theirs,
        "access lines differ\n  fcgi-proxy: {ours:#?}\n  Apache:     {theirs:#?}"
    );
    drop(mock);
}

#[test]
fn json_lines_and_reopen_at_sigusr1() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mock = rt
        .block_on(MockServer::bind_tcp("127.0.0.1:0", Script::default()))
        .expect("mock");
    let backend = mock.socket_addr().expect("tcp");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let log = dir.path().join("access.log");
    let conf = dir.path().join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\n[access_log]\njson = true\npath = \"{}\"\n\
             [[route]]\npath = \"/app/\"\ntarget = \"fcgi://{backend}/\"\n",
            log.display()
        ),
    )
    .expect("write");
    let mut proxy =
        support::start_proxy_toml(&conf, &dir.path().join("proxy.err"), front).expect("proxy");
    let _ = exchange(
        front,
        &[request(
            "GET /app/j.php?q=1 HTTP/1.1",
            &[b"User-Agent: json \"agent\""],
            true,
        )],
    );
    let first = lines(&log, 1);
    let v: serde_json::Value = serde_json::from_str(&first[0]).expect("a JSON line");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/app/j.php?q=1");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["user_agent"], "json \"agent\"");
    assert_eq!(v["remote_addr"], "127.0.0.1");
    assert!(v["body_bytes"].as_u64().is_some_and(|b| b > 0), "{v}");

    // logrotate: the file is moved, SIGUSR1, the next line goes to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    proxy.signal(Signal::SIGUSR1).expect("SIGUSR1");
    let deadline = Instant::now() + WAIT;
    while !log.exists() {
        assert!(Instant::now() < deadline, "the log was not reopened");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = exchange(front, &[request("GET /app/after.php HTTP/1.1", &[], true)]);
    let after = lines(&log, 1);
    assert!(after[0].contains("/app/after.php"), "{after:?}");
    assert_eq!(
        lines(&rotated, 1).len(),
        1,
        "the rotated file got more lines"
    );
    drop(proxy);
    drop(mock);
}
