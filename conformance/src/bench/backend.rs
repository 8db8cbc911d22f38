//! The FastCGI backend every proxy is measured against: `responder.c` (libfcgi), compiled at
//! bench time and run as several processes by `spawn-fcgi` on one loopback port, or on a Unix
//! socket (`spawn-fcgi -s`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::peers::{BackendAddr, Signal, free_loopback_port, is_alive, signal};

/// The responder's C source.
pub const RESPONDER_C: &str = include_str!("responder.c");
/// The response body every request gets.
pub const RESPONSE_BODY: &str = "Hello, world\n";
/// The header `cc` needs (from libfcgi-dev).
pub const FCGI_HEADER: &str = "/usr/include/fcgi_stdio.h";

/// Compiles the responder into `dir` and returns the executable.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = dir.join("responder.c");
    let exe = dir.join("fcgi-responder");
    std::fs::write(&src, RESPONDER_C).map_err(|e| format!("{}: {e}", src.display()))?;
    let out = Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg("-lfcgi")
        .output()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(exe)
}

/// The running responder processes. Stopped by PID (from spawn-fcgi's PID file) on drop.
#[derive(Debug)]
pub struct Backend {
    pub addr: BackendAddr,
    pub pids: Vec<u32>,
    /// The Unix socket's directory, removed after the processes stopped.
    socket_dir: Option<tempfile::TempDir>,
}

impl Backend {
    /// Starts `processes` copies of `exe` sharing one listening socket on a free loopback port.
    pub fn start(exe: &Path, processes: usize, work_dir: &Path) -> Result<Backend, String> {
        let addr = free_loopback_port().map_err(|e| e.to_string())?;
        let listen = [
            "-a".to_owned(),
            addr.ip().to_string(),
            "-p".to_owned(),
            addr.port().to_string(),
        ];
        Self::spawn(
            exe,
            processes,
            &work_dir.join("backend.pids"),
            &listen,
            BackendAddr::Tcp(addr),
            None,
        )
    }

    /// Starts `processes` copies of `exe` sharing one Unix socket, `fcgi.sock` in a new
    /// directory under the system's temp dir (a short path, and one every peer's worker can
    /// reach whatever user it runs as: the directory is 0755 and the socket 0666).
    pub fn start_unix(exe: &Path, processes: usize, work_dir: &Path) -> Result<Backend, String> {
        let dir = tempfile::Builder::new()
            .prefix("bench-fcgi-")
            .tempdir()
            .map_err(|e| format!("socket directory: {e}"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", dir.path().display()))?;
        let socket = dir.path().join("fcgi.sock");
        let listen = [
            "-s".to_owned(),
            socket.display().to_string(),
            "-M".to_owned(),
            "0666".to_owned(),
        ];
        Self::spawn(
            exe,
            processes,
            &work_dir.join("backend-unix.pids"),
            &listen,
            BackendAddr::Unix(socket),
            Some(dir),
        )
    }

    fn spawn(
        exe: &Path,
        processes: usize,
        pid_file: &Path,
        listen: &[String],
        addr: BackendAddr,
        socket_dir: Option<tempfile::TempDir>,
    ) -> Result<Backend, String> {
        let _ = std::fs::remove_file(pid_file);
        let out = Command::new(programs::program_path("spawn-fcgi"))
            .args(listen)
            .arg("-F")
            .arg(processes.to_string())
            .arg("-b")
            .arg("1024")
            .arg("-P")
            .arg(pid_file)
            .arg("--")
            .arg(exe)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run spawn-fcgi: {e}"))?;
        let pids: Vec<u32> = std::fs::read_to_string(pid_file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let backend = Backend {
            addr,
            pids,
            socket_dir,
        };
        if !out.status.success() || backend.pids.len() != processes {
            return Err(format!(
                "spawn-fcgi started {} of {processes} processes ({}): {}",
                backend.pids.len(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        backend.check()?;
        Ok(backend)
    }

    /// One FastCGI request straight to the backend, so a broken backend is not blamed on a
    /// proxy.
    pub fn check(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fcgi_get(&self.addr, "/srv/app/check") {
                Ok(body) if body.contains(RESPONSE_BODY) => return Ok(()),
                Ok(body) => return Err(format!("backend answered {body:?}")),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("backend at {} not answering: {e}", self.addr));
                }
                Err(_) => sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Processes still running.
    pub fn alive(&self) -> usize {
        self.pids.iter().filter(|&&p| is_alive(p)).count()
    }

    fn stop_inner(&mut self) {
        for &p in &self.pids {
            signal(p, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.alive() > 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        for &p in &self.pids {
            if is_alive(p) {
                signal(p, Signal::SIGKILL);
            }
        }
        self.pids.clear();
        // The socket goes once nothing listens on it.
        if let Some(d) = self.socket_dir.take() {
            let _ = d.close();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// A minimal FastCGI GET of `script_filename` (BEGIN_REQUEST, a few PARAMS, empty STDIN) over
/// TCP or a Unix socket; returns the STDOUT text.
pub fn fcgi_get(addr: &BackendAddr, script_filename: &str) -> io::Result<String> {
    let timeout = Some(Duration::from_secs(2));
    match addr {
        BackendAddr::Tcp(a) => {
            let s = TcpStream::connect_timeout(a, Duration::from_secs(2))?;
            s.set_read_timeout(timeout)?;
            exchange(s, script_filename)
        }
        BackendAddr::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_read_timeout(timeout)?;
            exchange(s, script_filename)
        }
    }
}

fn exchange(mut s: impl Read + Write, script_filename: &str) -> io::Result<String> {
    let mut req = Vec::new();
    fastcgi::encode::begin_request(&mut req, 1, fastcgi::Role::Responder, 0);
    let params = [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_FILENAME", script_filename),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ];
    fastcgi::encode::params(&mut req, 1, &params, 16384);
    fastcgi::encode::stream_end(&mut req, fastcgi::RecordType::Params, 1);
    fastcgi::encode::stream_end(&mut req, fastcgi::RecordType::Stdin, 1);
    s.write_all(&req)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let mut dec = fastcgi::Decoder::default();
    dec.feed(&raw);
    let mut out = Vec::new();
    while let Ok(Some(rec)) = dec.decode() {
        if let fastcgi::Record::Stream {
            record_type: fastcgi::RecordType::Stdout,
            content,
            ..
        } = rec
        {
            out.extend_from_slice(&content);
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
