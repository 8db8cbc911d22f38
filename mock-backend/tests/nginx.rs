//! Real nginx in front of the mock: the params nginx sends reach the journal, and the scripted
//! answer reaches the HTTP client.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{T, mock, within};
use fcgi_mock::ClosedBy;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use testkit::http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Stops nginx by its own PID, also when the test panics: SIGTERM (the master then stops its
/// workers), SIGKILL if it has not exited after a while.
struct NginxGuard {
    child: Child,
    log: std::path::PathBuf,
}

impl NginxGuard {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NginxGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

fn write_config(dir: &Path, http_port: u16, mock_addr: &str) -> std::path::PathBuf {
    let root = dir.join("docroot");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let conf = format!(
        r#"
worker_processes 1;
pid nginx.pid;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path tmp/body;
  fastcgi_temp_path     tmp/fastcgi;
  proxy_temp_path       tmp/proxy;
  scgi_temp_path        tmp/scgi;
  uwsgi_temp_path       tmp/uwsgi;
  server {{
    listen 127.0.0.1:{http_port};
    root {root};
    location /app/ {{
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
      fastcgi_pass {mock_addr};
    }}
  }}
}}
"#,
        root = root.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// Sends `request` (HTTP/1.0: nginx closes after the response) and parses what came back.
async fn http(port: u16, request: &str) -> http1::Response {
    let mut s = within("connect to nginx", TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect to nginx");
    within("send", s.write_all(request.as_bytes()))
        .await
        .expect("send");
    let mut out = Vec::new();
    within("read response", s.read_to_end(&mut out))
        .await
        .expect("read");
    http1::parse_response(&out).unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_forwards_and_the_journal_shows_its_params() {
    let Some(nginx) = programs::require_program("nginx", "nginx") else {
        return;
    };
    let m = mock(
        r#"
        [[rule]]
        name = "app"
        match = { script_name_prefix = "/app/" }
        status = 201
        headers = [["Content-Type", "text/plain"], ["X-Mock", "yes"]]
        body = [{ data = "hello " }, { data = "through nginx" }]
        "#,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = write_config(dir.path(), port, m.addr());
    let log = dir.path().join("stderr.log");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(format!("{}/", dir.path().display()))
        .arg("-c")
        .arg(&conf)
        .args(["-e", "stderr", "-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("spawn nginx");
    let mut guard = NginxGuard { child, log };

    // Ready once it accepts: nginx binds only after the config is read.
    let deadline = Instant::now() + T;
    loop {
        if let Ok(Some(status)) = guard.child.try_wait() {
            panic!("nginx exited early ({status}):\n{}", guard.log());
        }
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nginx not ready:\n{}",
            guard.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let get = http(
        port,
        "GET /app/index.php?x=1&y=2 HTTP/1.0\r\nHost: localhost\r\nX-Test: a\r\n\r\n",
    )
    .await;
    assert_eq!(get.status, 201, "{get:?}\n{}", guard.log());
    assert_eq!(get.header("x-mock"), Some("yes"), "{get:?}");
    assert_eq!(get.body_text(), "hello through nginx", "{get:?}");

    let post = http(
        port,
        "POST /app/form.php HTTP/1.0\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(post.status, 201, "{post:?}");

    let j = m.journal();
    within(
        "both requests done",
        j.wait_for(|s| s.finished_requests() == 2),
    )
    .await;
    let get = j.request(1).unwrap();
    let root = dir.path().join("docroot");
    assert_eq!(get.param("REQUEST_METHOD").as_deref(), Some("GET"));
    assert_eq!(
        get.param("REQUEST_URI").as_deref(),
        Some("/app/index.php?x=1&y=2")
    );
    assert_eq!(get.param("QUERY_STRING").as_deref(), Some("x=1&y=2"));
    assert_eq!(get.param("SCRIPT_NAME").as_deref(), Some("/app/index.php"));
    assert_eq!(
        get.param("SCRIPT_FILENAME"),
        Some(format!("{}/app/index.php", root.display()))
    );
    assert_eq!(get.param("HTTP_X_TEST").as_deref(), Some("a"));
    assert_eq!(get.param("GATEWAY_INTERFACE").as_deref(), Some("CGI/1.1"));
    assert_eq!(get.request_id, 1, "nginx always uses request id 1");
    assert!(!get.keep_conn, "no keepalive configured");
    assert_eq!(get.rule.as_deref(), Some("app"));

    let post = j.request(2).unwrap();
    assert_eq!(post.param("REQUEST_METHOD").as_deref(), Some("POST"));
    assert_eq!(post.param("CONTENT_LENGTH").as_deref(), Some("3"));
    assert_eq!(post.param("CONTENT_TYPE").as_deref(), Some("text/plain"));
    assert_eq!(post.stdin_lossy(), "abc");

    // Without KEEP_CONN each request had its own connection, closed by the mock.
    within("closes", j.wait_for(|s| s.open_connections() == 0)).await;
    let s = j.snapshot();
    assert_eq!(s.connection_count(), 2);
    for c in &s.connections {
        assert_eq!(c.requests.len(), 1);
        assert_eq!(c.closed_by, Some(ClosedBy::Backend));
        assert_eq!(c.close_reason.as_deref(), Some("keep_conn_clear"));
    }
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    drop(guard);
}
