//! Shared harness for the tests that run the proxy next to real servers (Apache httpd, php-fpm):
//! child processes stopped by their own PID, readiness polling, config templates, and a raw
//! HTTP/1.1 client that can send what a polite client would not.
//!
//! Every wait has a deadline, so a misbehaving proxy fails the test instead of hanging it.

#![allow(dead_code)] // each test binary uses a part of this module

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use testkit::http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod fpm;

/// How long a server may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one HTTP exchange may take, pauses included.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopped process may take to exit before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What most proxy tests start from: a mock FastCGI backend, a temporary directory and a free
/// loopback address for the proxy to listen on.
pub struct Fixture {
    pub mock: fcgi_mock::MockHandle,
    pub backend: SocketAddr,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub front: SocketAddr,
}

impl Fixture {
    pub async fn new(script: fcgi_mock::Script) -> Fixture {
        let mock = fcgi_mock::MockServer::bind_tcp("127.0.0.1:0", script)
            .await
            .expect("mock");
        let backend = mock.socket_addr().expect("tcp");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let front = SocketAddr::from(([127, 0, 0, 1], port));
        Fixture {
            mock,
            backend,
            dir,
            port,
            front,
        }
    }

    /// `name` in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The proxy binary under test.
pub fn proxy_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fcgi-proxy"))
}

/// Whether this process runs as root (servers then need `-R`, a `User`, world-readable paths).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Replaces every `@NAME@` placeholder; panics if one is left unfilled.
pub fn fill_template(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("@{name}@"), value);
    }
    let left = regex::Regex::new(r"@[A-Z0-9_]+@").expect("regex");
    if let Some(m) = left.find(&out) {
        panic!("template placeholder {} was not filled", m.as_str());
    }
    out
}

/// Makes `dir` and its ancestors traversable by other users: Apache's children and php-fpm's
/// workers run as `www-data` when the test runs as root, and tempfile makes 0700 directories.
pub fn open_up_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
}

/// A child process owned by the test: stopped (SIGTERM to its own PID, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    /// Where its stderr (and stdout, unless captured) goes.
    log: PathBuf,
    /// Lines read from its stdout when captured.
    stdout_lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            stdout_lines: Arc::default(),
        }
    }

    /// Starts `cmd` with stderr to `log` and stdout read line by line (kept, and copied to the
    /// log), so that a readiness line such as `listening on ADDR` can be awaited.
    pub fn spawn_capturing_stdout(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let err = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        // Ends by itself at EOF, i.e. when the child exits.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            stdout_lines: lines,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file its stderr (and stdout, unless captured) goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The log so far, plus any captured stdout, for failure messages.
    pub fn output(&self) -> String {
        let mut s = String::new();
        let mut log = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut log);
        }
        let _ = writeln!(
            s,
            "--- {} log ({}) ---\n{}",
            self.name,
            self.log.display(),
            tail(&log, 60)
        );
        let out = self.stdout_lines();
        if !out.is_empty() {
            let _ = writeln!(
                s,
                "--- {} stdout ---\n{}",
                self.name,
                tail(&out.join("\n"), 60)
            );
        }
        s
    }

    /// Waits until `addr` accepts a connection, or (when `ready_line` is given) until stdout has a
    /// line starting with it. Fails if the process exits first or the deadline passes.
    pub fn wait_ready(&mut self, addr: SocketAddr, ready_line: Option<&str>) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(prefix) = ready_line
                && self.stdout_lines().iter().any(|l| l.starts_with(prefix))
            {
                return Ok(());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} exited ({status}) before listening on {addr}\n{}",
                    self.name,
                    self.output()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen on {addr} within {START_TIMEOUT:?}\n{}",
                    self.name,
                    self.output()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`SIGUSR2`, `SIGQUIT`, ...) to its own PID.
    pub fn signal(&mut self, signal: Signal) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Err(format!("{} was stopped already", self.name));
        };
        if let Some(status) = child.try_wait().ok().flatten() {
            return Err(format!("{} exited already ({status})", self.name));
        }
        send_signal(child.id(), signal).map_err(|e| format!("{signal} to {}: {e}", child.id()))
    }

    /// Waits up to `timeout` for it to exit by itself; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGTERM to its own PID, wait, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = send_signal(child.id(), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} (pid {}) ignored SIGTERM; killing it",
            self.name,
            child.id()
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `signal` to the process `pid`: by PID, never by name.
pub fn send_signal(pid: u32, signal: Signal) -> Result<(), String> {
    let pid = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| e.to_string())
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts Apache httpd in the foreground on `conf`, with a clean environment (Apache passes its
/// own environment, e.g. PATH, to FastCGI applications), and waits until `addr` accepts.
/// The time zone Apache and the proxy run in when started on the same Apache configuration:
/// not UTC, so that access log times show that both write local time with its offset.
pub const LOG_TZ: &str = "CET-1CEST,M3.5.0,M10.5.0/3";

pub fn start_apache(apache: &Path, conf: &Path, dir: &Path, addr: SocketAddr) -> Proc {
    let check = Command::new(apache)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/bin")
        .arg("-t")
        .arg("-f")
        .arg(conf)
        .output()
        .expect("run apache2 -t");
    assert!(
        check.status.success(),
        "apache2 -t rejected {}:\n{}{}",
        conf.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut cmd = Command::new(apache);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/bin")
        .env("TZ", LOG_TZ)
        .arg("-f")
        .arg(conf)
        .arg("-DFOREGROUND");
    let mut p = Proc::spawn("apache2", cmd, &dir.join("apache2.out"));
    if let Err(e) = p.wait_ready(addr, None) {
        let errlog = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        panic!("{e}\n--- error.log ---\n{errlog}");
    }
    p
}

/// Starts `fcgi-proxy --apache conf` and waits for `listening on` (or a successful connect).
pub fn start_proxy_apache(conf: &Path, dir: &Path, addr: SocketAddr) -> Result<Proc, String> {
    let mut cmd = Command::new(proxy_bin());
    // The same environment as Apache's: like Apache, the proxy passes its PATH to applications.
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/bin")
        .env("TZ", LOG_TZ)
        .arg("--apache")
        .arg(conf);
    let mut p = Proc::spawn_capturing_stdout("fcgi-proxy", cmd, &dir.join("fcgi-proxy.err"));
    p.wait_ready(addr, Some("listening on"))?;
    Ok(p)
}

/// Starts `fcgi-proxy --config conf` (a TOML file) with its log in `log`, and waits for
/// `listening on` (or a successful connect to `addr`).
pub fn start_proxy_toml(conf: &Path, log: &Path, addr: SocketAddr) -> Result<Proc, String> {
    let mut cmd = Command::new(proxy_bin());
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/bin")
        .arg("--config")
        .arg(conf);
    let mut p = Proc::spawn_capturing_stdout("fcgi-proxy", cmd, log);
    p.wait_ready(addr, Some("listening on"))?;
    Ok(p)
}

/// Starts php-fpm in the foreground on `conf` (`-n`: no php.ini, PHP's defaults whatever the
/// host has; `-R` when running as root), with its stdout and stderr in `dir/php-fpm.out`, and
/// waits until `addr` accepts. The pool's own error log is whatever `conf` says.
pub fn start_php_fpm(fpm: &Path, conf: &Path, dir: &Path, addr: SocketAddr) -> Proc {
    let mut cmd = Command::new(fpm);
    cmd.args(["-n", "-F", "-y"]).arg(conf);
    if running_as_root() {
        cmd.arg("-R");
    }
    let mut p = Proc::spawn("php-fpm", cmd, &dir.join("php-fpm.out"));
    if let Err(e) = p.wait_ready(addr, None) {
        let log = std::fs::read_to_string(dir.join("php-fpm.log")).unwrap_or_default();
        panic!("{e}\n--- php-fpm.log ---\n{log}");
    }
    p
}

/// How many IPv4 TCP connections on this machine are ESTABLISHED to `port` on their remote
/// side (from `/proc/net/tcp`): for a backend port only the proxy connects to, the backend
/// connections the proxy holds, accepted by the backend or still in its listen backlog.
pub fn established_to_port(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; addresses are HEX_IP:HEX_PORT, st 01 is ESTABLISHED.
            f.len() > 3
                && f[3] == "01"
                && f[2]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// A request as bytes: sent as `parts`, with `pause` between parts (a slow client).
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub parts: Vec<Vec<u8>>,
    pub pause: Duration,
    /// A HEAD request: the response has no body whatever its headers say.
    pub head: bool,
}

impl RawRequest {
    pub fn whole(bytes: impl Into<Vec<u8>>) -> RawRequest {
        let bytes = bytes.into();
        let head = bytes.starts_with(b"HEAD ");
        RawRequest {
            parts: vec![bytes],
            pause: Duration::ZERO,
            head,
        }
    }

    /// The first line, for messages.
    pub fn first_line(&self) -> String {
        let first = self.parts.first().map(Vec::as_slice).unwrap_or_default();
        let end = first
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(first.len());
        String::from_utf8_lossy(&first[..end]).into_owned()
    }
}

/// A response read by the raw client: status, headers, body.
pub type HttpResponse = testkit::http1::Response;

/// Sends `req` on a new connection to `addr` and reads one response (interim 1xx responses are
/// skipped), all within [`EXCHANGE_TIMEOUT`].
pub async fn exchange(addr: SocketAddr, req: &RawRequest) -> Result<HttpResponse, String> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange_inner(addr, req))
        .await
        .map_err(|_| format!("no complete response within {EXCHANGE_TIMEOUT:?}"))?
}

/// A time budget for a series of exchanges, so that a front end that times out on every request
/// ends the test in bounded time instead of after N x [`EXCHANGE_TIMEOUT`].
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: tokio::time::Instant,
}

impl Budget {
    pub fn new(total: Duration) -> Budget {
        Budget {
            deadline: tokio::time::Instant::now() + total,
        }
    }

    /// [`exchange`], unless the budget is spent (then an error without sending anything).
    pub async fn exchange(
        &self,
        addr: SocketAddr,
        req: &RawRequest,
    ) -> Result<HttpResponse, String> {
        if tokio::time::Instant::now() >= self.deadline {
            return Err("not sent: the time budget of this run was spent".into());
        }
        tokio::time::timeout_at(self.deadline, exchange(addr, req))
            .await
            .map_err(|_| "no response before the time budget of this run was spent".to_string())?
    }
}

async fn exchange_inner(addr: SocketAddr, req: &RawRequest) -> Result<HttpResponse, String> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    let mut reader = Reader {
        s,
        buf: Vec::new(),
        eof: false,
    };
    send_and_read(&mut reader, req).await
}

/// An HTTP/1.1 client connection kept open between requests (keep-alive), for a client that
/// sends request after request on one connection as browsers and load balancers do.
pub struct KeepAlive {
    reader: Reader,
    open: bool,
}

impl KeepAlive {
    /// Connects to `addr`, within [`EXCHANGE_TIMEOUT`].
    pub async fn connect(addr: SocketAddr) -> Result<KeepAlive, String> {
        let s = tokio::time::timeout(EXCHANGE_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect {addr}: no answer within {EXCHANGE_TIMEOUT:?}"))?
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        Ok(KeepAlive {
            reader: Reader {
                s,
                buf: Vec::new(),
                eof: false,
            },
            open: true,
        })
    }

    /// Sends `req` and reads its response. Afterwards [`KeepAlive::is_open`] says whether the
    /// connection can carry another request (the server did not close it or say it would).
    /// The caller bounds the wait.
    pub async fn send(&mut self, req: &RawRequest) -> Result<HttpResponse, String> {
        if !self.open {
            return Err("the connection was closed by the previous response".into());
        }
        self.open = false;
        let resp = send_and_read(&mut self.reader, req).await?;
        let close = resp
            .header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        self.open = !close && !self.reader.eof && self.reader.buf.is_empty();
        Ok(resp)
    }

    pub fn is_open(&self) -> bool {
        self.open
    }
}

async fn send_and_read(reader: &mut Reader, req: &RawRequest) -> Result<HttpResponse, String> {
    for (i, part) in req.parts.iter().enumerate() {
        if i > 0 && !req.pause.is_zero() {
            tokio::time::sleep(req.pause).await;
        }
        reader
            .s
            .write_all(part)
            .await
            .map_err(|e| format!("write part {i}: {e}"))?;
    }
    reader.read_response(req.head).await
}

struct Reader {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Reader {
    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self
            .s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// One final response, interim ones skipped: its head parsed once, then read until its
    /// body is all there by its framing.
    async fn read_response(&mut self, head_request: bool) -> Result<HttpResponse, String> {
        loop {
            let head = loop {
                if let Some(head) = http1::parse_head(&self.buf)? {
                    break head;
                }
                if self.eof {
                    return Err(format!(
                        "connection closed before a complete response head ({} bytes: {:?})",
                        self.buf.len(),
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                self.fill().await?;
            };
            if head.is_interim() {
                self.buf.drain(..head.len);
                continue;
            }
            let framing = head.framing(head_request)?;
            let end = loop {
                let body = &self.buf[head.len..];
                if let Some(end) = http1::body_end(framing, body, self.eof)? {
                    break head.len + end;
                }
                if self.eof {
                    let body = http1::read_body(framing, body, true);
                    return Err(HttpResponse::new(head, framing, body).missing());
                }
                self.fill().await?;
            };
            let body = http1::read_body(framing, &self.buf[head.len..end], true);
            self.buf.drain(..end);
            return Ok(HttpResponse::new(head, framing, body));
        }
    }
}

/// Copies a directory tree, symbolic links as links.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}
