//! Each backend model next to the program it models: the same FastCGI conversations against
//! the real backend and against the mock, and what the client sees must be the same.
//!
//! - php-fpm 8.2 (`php-fpm8.2 -F`, `pm = static`, 2 children, `pm.max_requests = 3`) against
//!   `model = "php-fpm"`, `max_conns = 2`, `overflow = "backlog"`, `max_requests = 3`.
//! - a libfcgi responder (`conformance/src/bench/responder.c`) run by `spawn-fcgi -F 2`
//!   against `model = "libfcgi"`, `max_conns = 2`, `overflow = "backlog"`.
//!
//! A missing program skips the test, unless `FCGI_REQUIRE` (or `CI`) requires it: then the test
//! fails and names the package to install (see the `programs` crate). Processes are stopped by their own PIDs.
//! Everything is on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, T, mock};
use fastcgi::{KEEP_CONN, Record, RecordType, encode};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const ASKED: [&str; 3] = ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"];

/// How long "no answer" is watched for.
const SILENCE: Duration = Duration::from_millis(500);

const PHP_FPM_MODEL: &str = r#"
[server]
model = "php-fpm"
max_conns = 2
overflow = "backlog"
max_requests = 3
"#;

const LIBFCGI_MODEL: &str = r#"
[server]
model = "libfcgi"
max_conns = 2
overflow = "backlog"
"#;

const RESPONDER_C: &str = include_str!("../../conformance/src/bench/responder.c");

// ---- processes, stopped by PID ----

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the parenthesised command name.
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// `pid` and its descendants, parents first.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    out
}

/// By PID, never by name; a process that is gone already is not an error.
fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// TERM to each, then KILL to those still running after 2 s.
fn stop(pids: &[u32]) {
    for &p in pids {
        signal(p, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in pids {
        if alive(p) {
            signal(p, Signal::SIGKILL);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Waits until something listens on `addr`.
async fn wait_listening(addr: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + T;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} is not listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running php-fpm master (in the foreground) and its children.
struct PhpFpm {
    addr: String,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl PhpFpm {
    async fn start(exe: &Path) -> PhpFpm {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("sleep.php"),
            "<?php usleep(200000); echo \"ok\\n\";\n",
        )
        .expect("write the php script");
        let conf = dir.path().join("php-fpm.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\nerror_log = {d}/php-fpm.log\ndaemonize = no\npid = {d}/php-fpm.pid\n\n\
                 [models]\nuser = root\ngroup = root\nlisten = 127.0.0.1:{port}\npm = static\n\
                 pm.max_children = 2\npm.max_requests = 3\n"
            ),
        )
        .expect("write the php-fpm config");
        let child = Command::new(exe)
            .arg("-F")
            .arg("-n")
            .arg("-y")
            .arg(&conf)
            .arg("-R")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start php-fpm");
        let fpm = PhpFpm {
            addr: format!("127.0.0.1:{port}"),
            child,
            dir,
        };
        wait_listening(&fpm.addr, "php-fpm").await;
        fpm
    }

    fn script(&self) -> String {
        self.dir.path().join("sleep.php").display().to_string()
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        stop(&process_tree(self.child.id()));
        let _ = self.child.wait();
    }
}

/// libfcgi responder processes started by spawn-fcgi (which exits once they run).
struct Responders {
    addr: String,
    pids: Vec<u32>,
    _dir: tempfile::TempDir,
}

impl Responders {
    fn start(spawn_fcgi: &Path, processes: usize) -> Responders {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("responder.c");
        let exe = dir.path().join("responder");
        std::fs::write(&src, RESPONDER_C).expect("write responder.c");
        let out = Command::new(programs::program_path("cc"))
            .arg("-O2")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .arg("-lfcgi")
            .output()
            .expect("run cc");
        assert!(
            out.status.success(),
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let pid_file = dir.path().join("pids");
        let out = Command::new(spawn_fcgi)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-F", &processes.to_string()])
            .arg("-P")
            .arg(&pid_file)
            .arg("--")
            .arg(&exe)
            .stdin(Stdio::null())
            .output()
            .expect("run spawn-fcgi");
        let pids: Vec<u32> = std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let r = Responders {
            addr: format!("127.0.0.1:{port}"),
            pids,
            _dir: dir,
        };
        assert!(
            out.status.success() && r.pids.len() == processes,
            "spawn-fcgi started {:?}: {}",
            r.pids,
            String::from_utf8_lossy(&out.stderr)
        );
        r
    }
}

impl Drop for Responders {
    fn drop(&mut self) {
        stop(&self.pids);
    }
}

// ---- the client side ----

/// What the conversation needs: the script to run (php-fpm needs a real file).
#[derive(Clone)]
struct Target {
    addr: String,
    script: String,
    /// Part of the body a real backend sends (none for the mock).
    body: Option<&'static str>,
}

impl Target {
    fn params(&self) -> Vec<(&str, &str)> {
        vec![
            ("SCRIPT_FILENAME", self.script.as_str()),
            ("SCRIPT_NAME", "/sleep.php"),
            ("REQUEST_URI", "/sleep.php"),
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", ""),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
        ]
    }

    fn request_bytes(&self, id: u16, flags: u8) -> Vec<u8> {
        let mut out = Client::<tokio::net::TcpStream>::begin_bytes(id, flags, &self.params());
        encode::stream_end(&mut out, RecordType::Stdin, id);
        out
    }

    async fn connect(&self) -> Client {
        Client::connect(&self.addr).await
    }
}

fn get_values() -> Vec<u8> {
    let mut out = Vec::new();
    encode::get_values(&mut out, &ASKED);
    out
}

/// What the client saw first on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum First {
    Values(Vec<(String, String)>),
    /// Another record (its type name).
    Other(String),
    Eof,
    /// Nothing within the wait.
    Nothing,
}

async fn first(c: &mut Client, wait: Duration) -> First {
    match tokio::time::timeout(wait, c.next_record()).await {
        Err(_) => First::Nothing,
        Ok(Ok(None)) => First::Eof,
        Ok(Err(e)) => First::Other(format!("error {:?}", e.kind())),
        Ok(Ok(Some(r))) => First::of(&r),
    }
}

impl First {
    fn of(r: &Record) -> First {
        match r {
            Record::GetValuesResult { values } => First::Values(
                values
                    .iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        )
                    })
                    .collect(),
            ),
            r => First::Other(r.record_type().name()),
        }
    }
}

/// Reads the answer to request `id`: the first record that came, and whether the request was
/// served (END_REQUEST rather than EOF or an error). The body of a real backend's answer is
/// checked, so that a served request is one the program ran.
async fn answer(t: &Target, c: &mut Client, id: u16) -> (First, bool) {
    let r = c.response(id).await;
    let first = r.records.first().map_or(First::Eof, First::of);
    if r.end.is_some()
        && let Some(want) = t.body
    {
        assert!(
            r.stdout_text().contains(want),
            "{} answered {:?}",
            t.addr,
            r.stdout_text()
        );
    }
    (first, r.end.is_some())
}

async fn is_served(t: &Target, c: &mut Client, id: u16) -> bool {
    answer(t, c, id).await.1
}

/// Whether the peer closes `c` within `wait` (a clean EOF or a reset).
async fn closes_within(c: &mut Client, wait: Duration) -> bool {
    matches!(
        tokio::time::timeout(wait, c.next_record()).await,
        Ok(Ok(None) | Err(_))
    )
}

#[derive(Debug, PartialEq, Eq)]
struct GetValuesSeen {
    /// GET_VALUES alone on a fresh connection: what comes first.
    lone: First,
    /// The same connection then gets a request (KEEP_CONN): what comes first, and whether the
    /// response follows.
    after_request: First,
    served: bool,
    /// A second connection: GET_VALUES and a request in one write.
    pipelined: First,
    pipelined_served: bool,
}

async fn get_values_seen(t: &Target) -> GetValuesSeen {
    let mut c = t.connect().await;
    c.send(&get_values()).await;
    let lone = first(&mut c, SILENCE).await;
    c.send(&t.request_bytes(1, KEEP_CONN)).await;
    let (after_request, served) = answer(t, &mut c, 1).await;
    drop(c);

    let mut c = t.connect().await;
    let mut out = get_values();
    out.extend(t.request_bytes(1, 0));
    c.send(&out).await;
    let (pipelined, pipelined_served) = answer(t, &mut c, 1).await;
    GetValuesSeen {
        lone,
        after_request,
        served,
        pipelined,
        pipelined_served,
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ThirdSeen {
    /// A third connection's GET_VALUES + request while two kept connections are open.
    while_two_open: First,
    /// Once the first connection is closed by the client.
    after_one_closed: First,
    /// Served within 2 s of that close.
    served: bool,
}

async fn third_seen(t: &Target) -> ThirdSeen {
    let mut kept = Vec::new();
    for _ in 0..2 {
        let mut c = t.connect().await;
        c.send(&t.request_bytes(1, KEEP_CONN)).await;
        assert!(
            is_served(t, &mut c, 1).await,
            "a kept connection was not served"
        );
        kept.push(c);
    }
    let mut c = t.connect().await;
    let mut out = get_values();
    out.extend(t.request_bytes(1, KEEP_CONN));
    c.send(&out).await;
    let while_two_open = first(&mut c, SILENCE).await;
    kept.remove(0);
    let closed = Instant::now();
    let (after_one_closed, served) = answer(t, &mut c, 1).await;
    let served = served && closed.elapsed() < Duration::from_secs(2);
    drop(kept);
    ThirdSeen {
        while_two_open,
        after_one_closed,
        served,
    }
}

/// For each of `n` requests on one kept connection: served, and whether the backend closed
/// the connection right after it.
async fn closes_after(t: &Target, n: u16) -> Vec<(bool, bool)> {
    let mut c = t.connect().await;
    let mut seen = Vec::new();
    for id in 1..=n {
        c.send(&t.request_bytes(id, KEEP_CONN)).await;
        let ok = is_served(t, &mut c, id).await;
        let closed = closes_within(&mut c, Duration::from_millis(300)).await;
        seen.push((ok, closed));
        if closed {
            break;
        }
    }
    seen
}

fn values(p: &[(&str, &str)]) -> First {
    First::Values(
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

// ---- php-fpm ----

fn php_fpm() -> Option<PathBuf> {
    programs::find_program("php-fpm8.2")
        .or_else(|| programs::find_program("php-fpm"))
        .or_else(|| programs::require_program("php-fpm8.2", "php8.2-fpm"))
}

/// Runs `check` against a fresh php-fpm and a fresh mock; returns (real, mock).
async fn php_fpm_both<R, F, Fut>(exe: &Path, check: F) -> (R, R)
where
    F: Fn(Target) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let real = {
        let fpm = PhpFpm::start(exe).await;
        check(Target {
            addr: fpm.addr.clone(),
            script: fpm.script(),
            body: Some("ok\n"),
        })
        .await
    };
    let m = mock(PHP_FPM_MODEL).await;
    let model = check(Target {
        addr: m.addr().to_string(),
        script: "/srv/sleep.php".into(),
        body: None,
    })
    .await;
    m.shutdown().await;
    (real, model)
}

#[tokio::test]
async fn php_fpm_get_values() {
    let Some(exe) = php_fpm() else { return };
    let (real, model) = php_fpm_both(&exe, |t| async move { get_values_seen(&t).await }).await;
    let mpxs = values(&[("FCGI_MPXS_CONNS", "0")]);
    assert_eq!(
        real,
        GetValuesSeen {
            lone: mpxs.clone(),
            after_request: First::Other("FCGI_STDOUT".into()),
            served: true,
            pipelined: mpxs,
            pipelined_served: true,
        },
        "php-fpm"
    );
    assert_eq!(model, real, "the php-fpm model differs from php-fpm");
}

#[tokio::test]
async fn php_fpm_two_kept_connections_block_a_third() {
    let Some(exe) = php_fpm() else { return };
    let (real, model) = php_fpm_both(&exe, |t| async move { third_seen(&t).await }).await;
    assert_eq!(
        real,
        ThirdSeen {
            while_two_open: First::Nothing,
            after_one_closed: values(&[("FCGI_MPXS_CONNS", "0")]),
            served: true,
        },
        "php-fpm"
    );
    assert_eq!(model, real, "the php-fpm model differs from php-fpm");
}

#[tokio::test]
async fn php_fpm_max_requests_closes_after_the_third_request() {
    let Some(exe) = php_fpm() else { return };
    let (real, model) = php_fpm_both(&exe, |t| async move { closes_after(&t, 4).await }).await;
    assert_eq!(
        real,
        vec![(true, false), (true, false), (true, true)],
        "php-fpm"
    );
    assert_eq!(model, real, "the php-fpm model differs from php-fpm");
}

// ---- libfcgi ----

/// spawn-fcgi, once cc and the libfcgi header are there too.
fn libfcgi() -> Option<PathBuf> {
    let spawn_fcgi = programs::require_program("spawn-fcgi", "spawn-fcgi")?;
    programs::require_program("cc", "gcc")?;
    programs::require_file(Path::new("/usr/include/fcgi_stdio.h"), "libfcgi-dev")
        .then_some(spawn_fcgi)
}

async fn libfcgi_both<R, F, Fut>(spawn_fcgi: &Path, check: F) -> (R, R)
where
    F: Fn(Target) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let real = {
        let r = Responders::start(spawn_fcgi, 2);
        wait_listening(&r.addr, "the libfcgi responders").await;
        check(Target {
            addr: r.addr.clone(),
            script: "/srv/responder".into(),
            body: Some("Hello, world\n"),
        })
        .await
    };
    let m = mock(LIBFCGI_MODEL).await;
    let model = check(Target {
        addr: m.addr().to_string(),
        script: "/srv/responder".into(),
        body: None,
    })
    .await;
    m.shutdown().await;
    (real, model)
}

#[tokio::test]
async fn libfcgi_get_values_lone_and_pipelined() {
    let Some(spawn_fcgi) = libfcgi() else { return };
    let (real, model) =
        libfcgi_both(&spawn_fcgi, |t| async move { get_values_seen(&t).await }).await;
    let announced = values(&[
        ("FCGI_MAX_CONNS", "1"),
        ("FCGI_MAX_REQS", "1"),
        ("FCGI_MPXS_CONNS", "0"),
    ]);
    assert_eq!(
        real,
        GetValuesSeen {
            lone: First::Nothing,
            after_request: announced.clone(),
            served: true,
            pipelined: announced,
            pipelined_served: true,
        },
        "libfcgi"
    );
    assert_eq!(model, real, "the libfcgi model differs from libfcgi");
}

#[tokio::test]
async fn libfcgi_two_kept_connections_block_a_third() {
    let Some(spawn_fcgi) = libfcgi() else { return };
    let (real, model) = libfcgi_both(&spawn_fcgi, |t| async move { third_seen(&t).await }).await;
    assert_eq!(
        real,
        ThirdSeen {
            while_two_open: First::Nothing,
            after_one_closed: values(&[
                ("FCGI_MAX_CONNS", "1"),
                ("FCGI_MAX_REQS", "1"),
                ("FCGI_MPXS_CONNS", "0"),
            ]),
            served: true,
        },
        "libfcgi"
    );
    assert_eq!(model, real, "the libfcgi model differs from libfcgi");
}
