//! The FastCGI backend every proxy is measured against: `responder.c` (libfcgi), compiled at
//! bench time and run as several processes by `spawn-fcgi` on one loopback port.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::peers::{free_loopback_port, is_alive, signal};

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
    pub addr: SocketAddr,
    pub pids: Vec<u32>,
}

impl Backend {
    /// Starts `processes` copies of `exe` sharing one listening socket.
    pub fn start(exe: &Path, processes: usize, work_dir: &Path) -> Result<Backend, String> {
        let addr = free_loopback_port().map_err(|e| e.to_string())?;
        let pid_file = work_dir.join("backend.pids");
        let _ = std::fs::remove_file(&pid_file);
        let out = Command::new("spawn-fcgi")
            .arg("-a")
            .arg(addr.ip().to_string())
            .arg("-p")
            .arg(addr.port().to_string())
            .arg("-F")
            .arg(processes.to_string())
            .arg("-b")
            .arg("1024")
            .arg("-P")
            .arg(&pid_file)
            .arg("--")
            .arg(exe)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run spawn-fcgi: {e}"))?;
        let pids: Vec<u32> = std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let backend = Backend { addr, pids };
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
            match fcgi_get(self.addr) {
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
            signal(p, "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.alive() > 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        for &p in &self.pids {
            if is_alive(p) {
                signal(p, "KILL");
            }
        }
        self.pids.clear();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// A minimal FastCGI GET (BEGIN_REQUEST, a few PARAMS, empty STDIN); returns the STDOUT text.
pub fn fcgi_get(addr: SocketAddr) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::new();
    fastcgi::encode::begin_request(&mut req, 1, fastcgi::Role::Responder, 0);
    let params = [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_FILENAME", "/srv/app/check"),
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
