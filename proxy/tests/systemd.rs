//! systemd integration, with systemd's own `systemd-socket-activate` as the service manager:
//! the proxy serves on the listening socket it is passed (LISTEN_FDS), and reports READY=1 when
//! serving, RELOADING=1 then READY=1 around a reload, STOPPING=1 at SIGTERM, over NOTIFY_SOCKET.

mod support;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use fcgi_mock::Script;
use support::{Proc, Signal};

const WAIT: Duration = Duration::from_secs(10);

/// The next notification, within [`WAIT`].
fn next_notice(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let n = sock.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn get(front: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(front).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET /app/x HTTP/1.1\r\nHost: sd.test\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_and_notifications() {
    let Some(activate) = programs::require_program("systemd-socket-activate", "systemd") else {
        return;
    };
    let f = support::Fixture::new(Script::default()).await;
    let (backend, port, front, dir) = (f.backend, f.port, f.front, &f.dir);
    let conf = dir.path().join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "workers = 2\nlisten = [\"127.0.0.1:{port}\"]\n[timeouts]\nshutdown_grace = \"2s\"\n\
             [[route]]\npath = \"/app/\"\ntarget = \"fcgi://{backend}/\"\n"
        ),
    )
    .expect("write");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");

    let log = dir.path().join("proxy.log");
    let (c, n) = (conf.clone(), notify_path.clone());
    let mut proxy: Proc = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(activate);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            // The activator gives its child only the environment it is told to (-E).
            .arg("-E")
            .arg(format!("NOTIFY_SOCKET={}", n.display()))
            .arg("-l")
            .arg(front.to_string())
            .arg(support::proxy_bin())
            .arg("--config")
            .arg(&c);
        Proc::spawn_capturing_stdout("fcgi-proxy", cmd, &log)
    })
    .await
    .expect("blocking");
    // systemd-socket-activate binds at once and starts the proxy at the first connection.
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(front).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {front}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = tokio::task::spawn_blocking(move || get(front))
        .await
        .expect("blocking");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}\n{}",
        proxy.output()
    );
    assert_eq!(next_notice(&notify), "READY=1");
    assert!(
        proxy
            .stdout_lines()
            .iter()
            .any(|l| l == &format!("listening on {front} (from systemd)")),
        "{}",
        proxy.output()
    );

    proxy.signal(Signal::SIGHUP).expect("SIGHUP");
    assert_eq!(next_notice(&notify), "RELOADING=1");
    assert_eq!(next_notice(&notify), "READY=1");
    let answer = tokio::task::spawn_blocking(move || get(front))
        .await
        .expect("blocking");
    assert!(answer.starts_with("HTTP/1.1 200"), "after reload: {answer}");

    proxy.signal(Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(next_notice(&notify), "STOPPING=1");
    let status = proxy.wait_exit(WAIT).expect("exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", proxy.output());
}
