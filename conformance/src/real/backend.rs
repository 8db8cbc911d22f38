//! Real FastCGI backend programs in place of `fcgi-mock` (`--backend php-fpm|libfcgi`).
//!
//! A scenario `[[backend]]` becomes a php-fpm 8.2 pool running a generated PHP script, or a
//! generated libfcgi responder (C, compiled with `cc`) run as several processes by spawn-fcgi:
//!
//! - `capacity = K` is the number of workers: php-fpm `pm.max_children = K` (`pm = static`, or
//!   `ondemand` when the backend has `spawn_delay`), `spawn-fcgi -F K`; without a capacity,
//!   [`DEFAULT_WORKERS`]. `max_requests` is php-fpm's `pm.max_requests`. Connections beyond the
//!   workers wait in the kernel backlog, whatever `overflow` says.
//! - The answer is the backend's `[backend.script.default]`: `status`, `reason`, `headers` and
//!   `body` chunks (`data`, `repeat`, `delay_ms`), or the echo of what the program saw (the mock's
//!   default). Rules, other actions and byte-level behaviour have no equivalent: such scenarios
//!   are SKIP for these backends.
//! - Every execution appends one line to the backend's execution log: the wall time, the
//!   process id, REQUEST_METHOD, SCRIPT_NAME and the request's tag. The runner turns the log into
//!   a journal with one request per execution (no connections: the FastCGI wire is not
//!   recorded), so which backend ran a request, how often, and request counts are judged as for
//!   the mock; the expectations that read the wire are not (see [`crate::check::without_wire`]).
//!
//! The target proxies get a backend path (Apache's `fcgi://host:port/PATH`, the peers' document
//! root) under the run's document root, and the script is written at every path a target may
//! name in SCRIPT_FILENAME for the scenario's requests (see [`with_docroot`], [`script_paths`]).
//! Processes are stopped by their own PIDs; every wait has a deadline.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fcgi_mock::{Outcome, RequestEntry, Snapshot};

use crate::peers::{Signal, find_program, is_alive, process_tree, signal};
use crate::scenario::{Backend, Scenario};
use crate::sim::client::TAG_PARAM;

/// Workers of a backend without a `capacity` (the mock's is unlimited).
pub const DEFAULT_WORKERS: u32 = 16;
/// The php-fpm program (Debian php8.2-fpm).
pub const PHP_FPM: &str = "php-fpm8.2";
/// The libfcgi header the responder needs (Debian libfcgi-dev).
pub const FCGI_HEADER: &str = "/usr/include/fcgi_stdio.h";
/// How long a backend may take to start (php-fpm's master and workers, spawn-fcgi, cc).
const START: Duration = Duration::from_secs(20);

/// Which program answers the scenario's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum BackendKind {
    /// `fcgi-mock`, in the runner's process, journaling every record.
    #[default]
    Mock,
    /// php-fpm 8.2 running a generated PHP script.
    PhpFpm,
    /// A generated libfcgi responder under spawn-fcgi.
    Libfcgi,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] =
        [BackendKind::Mock, BackendKind::PhpFpm, BackendKind::Libfcgi];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Mock => "mock",
            BackendKind::PhpFpm => "php-fpm",
            BackendKind::Libfcgi => "libfcgi",
        }
    }

    pub fn parse(s: &str) -> Option<BackendKind> {
        BackendKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// A real program rather than the mock.
    pub fn is_real(self) -> bool {
        self != BackendKind::Mock
    }

    /// The programs this backend runs, each with the Debian package it comes in (libfcgi also
    /// needs [`FCGI_HEADER`], from libfcgi-dev).
    pub fn programs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            BackendKind::Mock => &[],
            BackendKind::PhpFpm => &[(PHP_FPM, "php8.2-fpm")],
            BackendKind::Libfcgi => &[("spawn-fcgi", "spawn-fcgi"), ("cc", "gcc")],
        }
    }

    /// What is missing to run this backend here, with the install hint.
    pub fn missing(self) -> Option<String> {
        let mut missing: Vec<String> = self
            .programs()
            .iter()
            .filter(|(bin, _)| find_program(bin).is_none())
            .map(|(bin, package)| format!("{bin} not installed (apt-get install {package})"))
            .collect();
        if self == BackendKind::Libfcgi && !Path::new(FCGI_HEADER).is_file() {
            missing.push(format!(
                "{FCGI_HEADER} not installed (apt-get install libfcgi-dev)"
            ));
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }
}

/// One chunk of the answer body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub data: String,
    pub delay_ms: u64,
}

/// What the backend answers every request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// The body is a JSON echo of the CGI variables (`{"params": [[name, value], ...]}`), as the
    /// mock's `action = "echo"`; `chunks` are then empty.
    pub echo: bool,
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<Chunk>,
}

/// How a scenario backend runs as a real program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The scenario backend's name.
    pub name: String,
    /// php-fpm `pm.max_children`, spawn-fcgi `-F`.
    pub workers: u32,
    /// php-fpm `pm = ondemand` (otherwise `static`).
    pub ondemand: bool,
    /// php-fpm `pm.max_requests`.
    pub max_requests: Option<u32>,
    pub reply: Reply,
}

/// The real-program version of scenario backend `b`, or why there is none.
pub fn plan(b: &Backend, kind: BackendKind) -> Result<Plan, String> {
    let prog = kind.name();
    if b.idle_timeout.is_some() {
        return Err(format!(
            "backend {}: {prog} does not close idle kept-open connections (idle_timeout)",
            b.name
        ));
    }
    if kind == BackendKind::Libfcgi {
        if b.max_requests.is_some() {
            return Err(format!(
                "backend {}: spawn-fcgi does not replace a responder after max_requests",
                b.name
            ));
        }
        if b.spawn_delay.is_some() {
            return Err(format!(
                "backend {}: spawn-fcgi has no on-demand workers (spawn_delay)",
                b.name
            ));
        }
    }
    let script = b.script.clone().unwrap_or_default();
    let mut reply = Reply {
        echo: true,
        ..Reply::default()
    };
    for (key, value) in &script {
        match key.as_str() {
            "server" => {
                let keys: Vec<&String> = value
                    .as_table()
                    .map(|t| t.keys().collect())
                    .unwrap_or_default();
                if let Some(k) = keys.first() {
                    return Err(format!(
                        "backend {}: script.server.{k} has no equivalent in {prog}",
                        b.name
                    ));
                }
            }
            "default" => {
                let t = value
                    .as_table()
                    .ok_or_else(|| format!("backend {}: script.default is not a table", b.name))?;
                reply = default_reply(t).map_err(|e| format!("backend {}: {e}", b.name))?;
            }
            "rule" => {
                return Err(format!(
                    "backend {}: [[rule]]s pick answers per request; the {prog} backend gives \
                     every request the one plain answer of [default]",
                    b.name
                ));
            }
            other => {
                return Err(format!(
                    "backend {}: script.{other} has no equivalent in {prog}",
                    b.name
                ));
            }
        }
    }
    Ok(Plan {
        name: b.name.clone(),
        workers: b.capacity.unwrap_or(DEFAULT_WORKERS).max(1),
        ondemand: b.spawn_delay.is_some(),
        max_requests: b.max_requests,
        reply,
    })
}

fn default_reply(t: &toml::Table) -> Result<Reply, String> {
    let mut r = Reply::default();
    let action = t
        .get("action")
        .and_then(toml::Value::as_str)
        .unwrap_or("reply");
    match action {
        "reply" => {}
        "echo" => r.echo = true,
        other => {
            return Err(format!(
                "action {other:?}: a real backend program only replies or echoes"
            ));
        }
    }
    for (key, value) in t {
        match key.as_str() {
            "name" | "action" => {}
            "status" => {
                let code = value
                    .as_integer()
                    .and_then(|c| u16::try_from(c).ok())
                    .ok_or("status is not a status code")?;
                r.status = Some(code);
            }
            "reason" => r.reason = value.as_str().map(str::to_string),
            "headers" => {
                for h in value.as_array().ok_or("headers is not an array")? {
                    let pair = h.as_array().filter(|p| p.len() == 2);
                    let (Some(n), Some(v)) = (
                        pair.and_then(|p| p[0].as_str()),
                        pair.and_then(|p| p[1].as_str()),
                    ) else {
                        return Err("headers: each is [name, value]".into());
                    };
                    r.headers.push((n.to_string(), v.to_string()));
                }
            }
            "body" if !r.echo => {
                for c in value.as_array().ok_or("body is not an array")? {
                    let c = c.as_table().ok_or("a body chunk is not a table")?;
                    let mut chunk = Chunk {
                        data: String::new(),
                        delay_ms: 0,
                    };
                    let mut repeat = 1usize;
                    for (k, v) in c {
                        match k.as_str() {
                            "data" => chunk.data = v.as_str().unwrap_or_default().to_string(),
                            "repeat" => {
                                repeat = v
                                    .as_integer()
                                    .and_then(|n| usize::try_from(n).ok())
                                    .ok_or("repeat is not a count")?;
                            }
                            "delay_ms" => {
                                chunk.delay_ms = v
                                    .as_integer()
                                    .and_then(|n| u64::try_from(n).ok())
                                    .ok_or("delay_ms is not a count")?;
                            }
                            other => {
                                return Err(format!(
                                    "body chunk key {other:?}: a real backend program writes \
                                     plain data"
                                ));
                            }
                        }
                    }
                    chunk.data = chunk.data.repeat(repeat);
                    r.chunks.push(chunk);
                }
            }
            "body" => {}
            other => {
                return Err(format!(
                    "script.default.{other} controls the FastCGI bytes; a real backend program \
                     writes its own"
                ));
            }
        }
    }
    Ok(r)
}

/// Why scenario `s` cannot run with `kind` backends, if it cannot.
pub fn unsupported(s: &Scenario, kind: BackendKind) -> Option<String> {
    if !s.faults.is_empty() {
        return Some(format!(
            "faults (crash, restart) act on the mock backend; not run with {}",
            kind.name()
        ));
    }
    s.backends.iter().find_map(|b| plan(b, kind).err())
}

/// `s` with every route's backend path under `root` (`/` becomes `root/`, `/x/` becomes
/// `root/x/`): Apache and fcgi-proxy put it in SCRIPT_FILENAME after `proxy:fcgi://host:port`,
/// which php-fpm strips; the peers use it as their document root.
pub fn with_docroot(s: &Scenario, root: &Path) -> Scenario {
    let mut s = s.clone();
    let root = root.display().to_string();
    let root = root.trim_end_matches('/');
    for r in &mut s.topology.routes {
        let path = r.backend_path.as_deref().unwrap_or("/");
        r.backend_path = Some(format!("{root}{path}"));
    }
    s
}

/// Every file a target may name in SCRIPT_FILENAME for the requests of `s` (already passed
/// through [`with_docroot`]): the backend path followed by the request path with the route's
/// prefix removed (Apache, fcgi-proxy) and by the whole request path (the peers' document root
/// followed by SCRIPT_NAME). Request paths with `..` or `%` are left out.
pub fn script_paths(s: &Scenario) -> Vec<PathBuf> {
    let mut out = BTreeSet::new();
    for p in s.planned_requests() {
        let path = p.spec.target.split(['?', '#']).next().unwrap_or_default();
        if !path.starts_with('/')
            || path.contains("..")
            || path.contains('%')
            || path.ends_with('/')
        {
            continue;
        }
        for r in &s.topology.routes {
            let base = r
                .backend_path
                .as_deref()
                .unwrap_or("/")
                .trim_end_matches('/');
            if base.is_empty() || base.contains('$') {
                continue;
            }
            out.insert(PathBuf::from(format!("{base}{path}")));
            if let Some(prefix) = &r.path
                && let Some(rest) = path.strip_prefix(prefix.as_str())
                && !rest.is_empty()
            {
                let rest = rest.trim_start_matches('/');
                out.insert(PathBuf::from(format!("{base}/{rest}")));
            }
        }
    }
    out.into_iter().collect()
}

/// A PHP single-quoted string literal of `s`.
fn php_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A C string literal of `s` (every byte outside printable ASCII as an octal escape).
fn c_str(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' | b'\\' | b'?' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:03o}");
            }
        }
    }
    out.push('"');
    out
}

fn reason_of(reply: &Reply, code: u16) -> String {
    reply.reason.clone().unwrap_or_else(|| {
        http::StatusCode::from_u16(code)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("Unknown")
            .to_string()
    })
}

/// The PHP script php-fpm runs for every request: log the execution, then answer `reply`.
pub fn php_script(reply: &Reply, log: &Path) -> String {
    let mut p = String::from(
        "<?php\n// Generated by the conformance suite: one execution-log line, then the scripted answer.\n",
    );
    p.push_str("ini_set('default_mimetype', '');\n");
    p.push_str(
        "$v = static function (string $k): string {\n    \
         return strtr((string) ($_SERVER[$k] ?? ''), \"\\t\\r\\n\", '   ');\n};\n",
    );
    let _ = writeln!(
        p,
        "file_put_contents({}, sprintf(\"%.6f\\t%d\\t%s\\t%s\\t%s\\n\", microtime(true), \
         getmypid(), $v('REQUEST_METHOD'), $v('SCRIPT_NAME'), $v({})), FILE_APPEND | LOCK_EX);",
        php_str(&log.display().to_string()),
        php_str(TAG_PARAM)
    );
    if let Some(code) = reply.status {
        match &reply.reason {
            None => {
                let _ = writeln!(p, "http_response_code({code});");
            }
            Some(_) => {
                let _ = writeln!(
                    p,
                    "header({});",
                    php_str(&format!("HTTP/1.1 {code} {}", reason_of(reply, code)))
                );
            }
        }
    }
    for (n, v) in &reply.headers {
        let _ = writeln!(p, "header({}, false);", php_str(&format!("{n}: {v}")));
    }
    if reply.echo {
        p.push_str(
            "header('Content-Type: application/json');\n$params = [];\n\
             foreach ($_SERVER as $k => $x) {\n    if (is_string($x)) {\n        \
             $params[] = [(string) $k, $x];\n    }\n}\n\
             echo json_encode(['params' => $params, 'pid' => getmypid()]);\n",
        );
    }
    for c in &reply.chunks {
        if c.delay_ms > 0 {
            let _ = writeln!(p, "usleep({});", c.delay_ms * 1000);
        }
        if !c.data.is_empty() {
            let _ = writeln!(p, "echo {};\nflush();", php_str(&c.data));
        }
    }
    p
}

/// The libfcgi responder's C source: for every request, log the execution, read the body,
/// answer `reply`.
pub fn c_source(reply: &Reply, log: &Path) -> String {
    let mut c = String::from(
        "/* Generated by the conformance suite: a libfcgi responder that logs every execution and\n \
         * gives the scripted answer. Built with cc ... -lfcgi, run by spawn-fcgi. */\n\
         #include <fcgi_stdio.h>\n#include <fcntl.h>\n#include <stdlib.h>\n#include <string.h>\n\
         #include <sys/time.h>\n#include <time.h>\n#include <unistd.h>\n\n\
         extern char **environ;\n\n",
    );
    let _ = writeln!(
        c,
        "static const char LOG_PATH[] = {};\n",
        c_str(&log.display().to_string())
    );
    c.push_str(
        "static void clean(char *dst, size_t n, const char *src) {\n\
         \x20   size_t i = 0;\n\
         \x20   for (; src && src[i] && i + 1 < n; i++)\n\
         \x20       dst[i] = (src[i] == '\\t' || src[i] == '\\r' || src[i] == '\\n') ? ' ' : src[i];\n\
         \x20   dst[i] = 0;\n}\n\n\
         static void log_execution(void) {\n\
         \x20   char m[64], sn[900], tag[900], line[2048];\n\
         \x20   struct timeval tv;\n\
         \x20   gettimeofday(&tv, NULL);\n\
         \x20   clean(m, sizeof m, getenv(\"REQUEST_METHOD\"));\n\
         \x20   clean(sn, sizeof sn, getenv(\"SCRIPT_NAME\"));\n",
    );
    let _ = writeln!(
        c,
        "    clean(tag, sizeof tag, getenv({}));",
        c_str(TAG_PARAM)
    );
    c.push_str(
        "    int len = snprintf(line, sizeof line, \"%lld.%06ld\\t%ld\\t%s\\t%s\\t%s\\n\",\n\
         \x20                      (long long)tv.tv_sec, (long)tv.tv_usec, (long)getpid(), m, sn, tag);\n\
         \x20   if (len < 0) return;\n\
         \x20   if ((size_t)len >= sizeof line) len = sizeof line - 1;\n\
         \x20   int fd = open(LOG_PATH, O_WRONLY | O_APPEND | O_CREAT, 0644);\n\
         \x20   if (fd < 0) return;\n\
         \x20   ssize_t w = write(fd, line, (size_t)len);\n\
         \x20   (void)w;\n\
         \x20   close(fd);\n}\n\n\
         static void sleep_ms(long ms) {\n\
         \x20   struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};\n\
         \x20   while (nanosleep(&ts, &ts) != 0) {\n\
         \x20   }\n}\n\n\
         static void json_str(const char *s, size_t n) {\n\
         \x20   putchar('\"');\n\
         \x20   for (size_t i = 0; i < n; i++) {\n\
         \x20       unsigned char ch = (unsigned char)s[i];\n\
         \x20       if (ch == '\"' || ch == '\\\\') printf(\"\\\\%c\", ch);\n\
         \x20       else if (ch < 0x20) printf(\"\\\\u%04x\", ch);\n\
         \x20       else putchar(ch);\n\
         \x20   }\n\
         \x20   putchar('\"');\n}\n\n\
         static void echo_params(void) {\n\
         \x20   printf(\"{\\\"params\\\":[\");\n\
         \x20   for (char **e = environ; e && *e; e++) {\n\
         \x20       const char *eq = strchr(*e, '=');\n\
         \x20       if (!eq) continue;\n\
         \x20       if (e != environ) putchar(',');\n\
         \x20       putchar('[');\n\
         \x20       json_str(*e, (size_t)(eq - *e));\n\
         \x20       putchar(',');\n\
         \x20       json_str(eq + 1, strlen(eq + 1));\n\
         \x20       putchar(']');\n\
         \x20   }\n\
         \x20   printf(\"],\\\"pid\\\":%ld}\", (long)getpid());\n}\n\n\
         int main(void) {\n\
         \x20   static char buf[65536];\n\
         \x20   while (FCGI_Accept() >= 0) {\n\
         \x20       log_execution();\n\
         \x20       while (fread(buf, 1, sizeof buf, stdin) > 0) {\n\
         \x20       }\n",
    );
    let mut head = String::new();
    if let Some(code) = reply.status {
        let _ = write!(head, "Status: {code} {}\r\n", reason_of(reply, code));
    }
    for (n, v) in &reply.headers {
        let _ = write!(head, "{n}: {v}\r\n");
    }
    if reply.echo {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str("\r\n");
    let _ = writeln!(
        c,
        "        fwrite({0}, 1, sizeof {0} - 1, stdout);\n        fflush(stdout);",
        c_str(&head)
    );
    if reply.echo {
        c.push_str("        echo_params();\n");
    }
    for ch in &reply.chunks {
        if ch.delay_ms > 0 {
            let _ = writeln!(c, "        sleep_ms({});", ch.delay_ms);
        }
        if !ch.data.is_empty() {
            let _ = writeln!(
                c,
                "        fwrite({0}, 1, sizeof {0} - 1, stdout);\n        fflush(stdout);",
                c_str(&ch.data)
            );
        }
    }
    c.push_str("    }\n    return 0;\n}\n");
    c
}

/// The php-fpm configuration of one pool for `plan`, everything under `dir`.
pub fn php_fpm_conf(plan: &Plan, listen: SocketAddr, dir: &Path) -> String {
    let d = dir.display();
    let pm = if plan.ondemand { "ondemand" } else { "static" };
    let mut c = format!(
        "; Generated by the conformance suite for backend {name}.\n[global]\n\
         pid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\nlog_level = notice\ndaemonize = no\n\n\
         [{pool}]\nlisten = {listen}\nlisten.backlog = 511\npm = {pm}\n\
         pm.max_children = {workers}\npm.max_requests = {max_requests}\n",
        name = plan.name,
        pool = plan.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        workers = plan.workers,
        max_requests = plan.max_requests.unwrap_or(0),
    );
    if plan.ondemand {
        c.push_str("pm.process_idle_timeout = 10s\n");
    }
    c.push_str(
        "catch_workers_output = yes\nphp_admin_value[output_buffering] = 0\n\
         security.limit_extensions = .php\n",
    );
    c
}

/// A running backend program: where it listens, its execution log, its processes.
#[derive(Debug)]
pub struct RealBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// The php-fpm master (stopped first), if any.
    master: Option<Child>,
    /// Every other process: php-fpm's workers, spawn-fcgi's responders.
    pids: Vec<u32>,
}

impl RealBackend {
    /// The php-fpm master (if any), then every other process.
    pub fn pids(&self) -> Vec<u32> {
        self.master
            .iter()
            .map(Child::id)
            .chain(self.pids.iter().copied())
            .collect()
    }

    /// The execution log as a journal: one request per execution, in log order, begun at its
    /// time since `origin` (the scenario's start).
    pub fn journal(&self, origin: SystemTime) -> Snapshot {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        journal(&parse_log(&text), origin)
    }

    fn stop(&mut self) {
        if let Some(m) = &mut self.master {
            signal(m.id(), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && !matches!(m.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !matches!(m.try_wait(), Ok(Some(_))) {
                let _ = m.kill();
                let _ = m.wait();
            }
        }
        for &p in &self.pids {
            signal(p, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.pids.iter().any(|&p| is_alive(p)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        for &p in &self.pids {
            if is_alive(p) {
                signal(p, Signal::SIGKILL);
            }
        }
        self.pids.clear();
        self.master = None;
    }
}

impl Drop for RealBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `plan` as a `kind` program on a free loopback port, with its files in `dir` and the
/// PHP script (php-fpm) at every path of `scripts`.
pub fn start(
    kind: BackendKind,
    plan: &Plan,
    dir: &Path,
    scripts: &[PathBuf],
) -> Result<RealBackend, String> {
    if let Some(why) = kind.missing() {
        return Err(why);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = dir.join("executions.log");
    std::fs::write(&log, "").map_err(|e| format!("{}: {e}", log.display()))?;
    // A port found free can be taken before the program binds it (an outgoing connection's
    // ephemeral port, another check's listener): then another port, a few times.
    let mut tries = 0;
    loop {
        let addr = crate::peers::free_loopback_port().map_err(|e| format!("free port: {e}"))?;
        let started = match kind {
            BackendKind::Mock => Err("the mock is not a program".into()),
            BackendKind::PhpFpm => start_php_fpm(plan, dir, scripts, addr, log.clone()),
            BackendKind::Libfcgi => start_libfcgi(plan, dir, addr, log.clone()),
        };
        match started {
            Err(e) if e.contains("Address already in use") && tries < PORT_TRIES => tries += 1,
            other => return other,
        }
    }
}

/// Ports tried after the first when the one found free was taken meanwhile.
const PORT_TRIES: usize = 3;

fn start_php_fpm(
    plan: &Plan,
    dir: &Path,
    scripts: &[PathBuf],
    addr: SocketAddr,
    log: PathBuf,
) -> Result<RealBackend, String> {
    let php = php_script(&plan.reply, &log);
    for path in scripts {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(path, &php).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut b = start_php_fpm_pool(plan, dir, addr, crate::peers::Session::Callers)?;
    b.log = log;
    Ok(b)
}

/// Starts php-fpm 8.2 in the foreground with one pool for `plan` listening on `addr` (its
/// config, log and output in `dir`) and waits until it is ready to handle connections. The
/// scripts it runs are the caller's; its `log` is `dir/executions.log`, which only the
/// conformance suite's scripts write. Stopped by its own PID (the master first, then any worker
/// left) when dropped.
pub fn start_php_fpm_pool(
    plan: &Plan,
    dir: &Path,
    addr: SocketAddr,
    session: crate::peers::Session,
) -> Result<RealBackend, String> {
    let bin = find_program(PHP_FPM)
        .ok_or_else(|| format!("{PHP_FPM} not installed (apt-get install php8.2-fpm)"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let conf = dir.join("php-fpm.conf");
    std::fs::write(&conf, php_fpm_conf(plan, addr, dir))
        .map_err(|e| format!("{}: {e}", conf.display()))?;
    let out = std::fs::File::create(dir.join("php-fpm.out")).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    // The bench's php-fpm gets a session of its own, as systemd starts it.
    let mut cmd = session.command(&bin);
    cmd.arg("-F").arg("-y").arg(&conf);
    if crate::peers::running_as_root() {
        cmd.arg("-R");
    }
    let child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {PHP_FPM}: {e}"))?;
    let mut b = RealBackend {
        name: plan.name.clone(),
        addr,
        log: dir.join("executions.log"),
        master: Some(child),
        pids: Vec::new(),
    };
    let fpm_log = dir.join("php-fpm.log");
    let deadline = Instant::now() + START;
    loop {
        let text = std::fs::read_to_string(&fpm_log).unwrap_or_default();
        if text.contains("ready to handle connections") {
            break;
        }
        let exited = b.master.as_mut().and_then(|m| m.try_wait().ok().flatten());
        if exited.is_some() || Instant::now() > deadline {
            let out = std::fs::read_to_string(dir.join("php-fpm.out")).unwrap_or_default();
            return Err(format!(
                "{PHP_FPM} for backend {} did not get ready ({}): {} {}",
                plan.name,
                exited.map_or_else(|| format!("not within {START:?}"), |s| s.to_string()),
                tail(&text),
                tail(&out)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(m) = &b.master {
        session.check(m.id())?;
        b.pids = process_tree(m.id()).into_iter().skip(1).collect();
    }
    Ok(b)
}

fn start_libfcgi(
    plan: &Plan,
    dir: &Path,
    addr: SocketAddr,
    log: PathBuf,
) -> Result<RealBackend, String> {
    let src = dir.join("responder.c");
    let exe = dir.join("responder");
    std::fs::write(&src, c_source(&plan.reply, &log))
        .map_err(|e| format!("{}: {e}", src.display()))?;
    let mut cc = Command::new(programs::program_path("cc"));
    cc.arg("-O2").arg("-o").arg(&exe).arg(&src).arg("-lfcgi");
    let (ok, output) = run_bounded(cc, dir, "cc")?;
    if !ok {
        return Err(format!("cc failed on {}: {output}", src.display()));
    }
    let pid_file = dir.join("responders.pid");
    let mut sp = Command::new(programs::program_path("spawn-fcgi"));
    sp.arg("-a")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .arg("-F")
        .arg(plan.workers.to_string())
        .arg("-b")
        .arg("511")
        .arg("-P")
        .arg(&pid_file)
        .arg("--")
        .arg(&exe);
    let (ok, output) = run_bounded(sp, dir, "spawn-fcgi")?;
    let pids: Vec<u32> = std::fs::read_to_string(&pid_file)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let b = RealBackend {
        name: plan.name.clone(),
        addr,
        log,
        master: None,
        pids,
    };
    if !ok || b.pids.len() != plan.workers as usize {
        return Err(format!(
            "spawn-fcgi started {} of {} responders for backend {}: {output}",
            b.pids.len(),
            plan.workers,
            plan.name
        ));
    }
    Ok(b)
}

/// Runs a short-lived command to its end (at most [`START`]); its success and output.
fn run_bounded(mut cmd: Command, dir: &Path, what: &str) -> Result<(bool, String), String> {
    let out_path = dir.join(format!("{what}.out"));
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let deadline = Instant::now() + START;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not finish within {START:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    Ok((status.success(), tail(&text)))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// One line of an execution log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// Wall time, microseconds since the Unix epoch.
    pub at_us: u64,
    pub pid: u32,
    pub method: String,
    pub script_name: String,
    pub tag: String,
}

/// The lines of an execution log (`SECONDS.MICROS\tPID\tMETHOD\tSCRIPT_NAME\tTAG`); malformed
/// lines (a write cut short) are left out.
pub fn parse_log(text: &str) -> Vec<Execution> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [t, pid, method, script_name, tag] = f[..] else {
                return None;
            };
            let (s, us) = t.split_once('.')?;
            let us = format!("{us:0<6}");
            let at_us = s.parse::<u64>().ok()? * 1_000_000 + us.get(..6)?.parse::<u64>().ok()?;
            Some(Execution {
                at_us,
                pid: pid.parse().ok()?,
                method: method.to_string(),
                script_name: script_name.to_string(),
                tag: tag.to_string(),
            })
        })
        .collect()
}

/// Executions as a journal: a request each (REQUEST_METHOD, SCRIPT_NAME, the tag and the
/// process id as params), begun at its time since `origin`, in time order.
pub fn journal(execs: &[Execution], origin: SystemTime) -> Snapshot {
    let origin_us = origin
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut execs: Vec<&Execution> = execs.iter().collect();
    execs.sort_by_key(|e| e.at_us);
    let requests = execs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let p = |n: &str, v: &str| (Bytes::from(n.to_string()), Bytes::from(v.to_string()));
            RequestEntry {
                seq: i as u64 + 1,
                connection: 0,
                request_id: 1,
                role: fastcgi::Role::Responder,
                flags: 0,
                keep_conn: false,
                params: vec![
                    p("REQUEST_METHOD", &e.method),
                    p("SCRIPT_NAME", &e.script_name),
                    p(TAG_PARAM, &e.tag),
                    p("PID", &e.pid.to_string()),
                ],
                params_records: Vec::new(),
                params_complete: true,
                stdin: Vec::new(),
                stdin_len: 0,
                stdin_records: Vec::new(),
                stdin_complete: true,
                data_len: 0,
                data_records: Vec::new(),
                abort_ms: None,
                begin_ms: e.at_us.saturating_sub(origin_us) / 1000,
                end_ms: None,
                rule: None,
                outcome: Outcome::Complete,
            }
        })
        .collect();
    Snapshot {
        connections: Vec::new(),
        requests,
        management: Vec::new(),
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(extra: &str) -> Backend {
        let text = format!("name = \"app\"\n{extra}");
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn kinds_parse_back() {
        for k in BackendKind::ALL {
            assert_eq!(BackendKind::parse(k.name()), Some(k));
        }
        assert_eq!(BackendKind::parse("127.0.0.1:9001"), None);
        assert!(!BackendKind::Mock.is_real() && BackendKind::PhpFpm.is_real());
        assert_eq!(BackendKind::Mock.missing(), None);
    }

    #[test]
    fn capacity_max_requests_and_spawn_delay_map_onto_the_pool() {
        let b = backend(
            "capacity = 3\nmax_requests = 50\n\
             [script.default]\nstatus = 200\nheaders = [[\"Content-Type\", \"text/plain\"]]\n\
             body = [{ data = \"ab\", delay_ms = 200 }, { data = \"c\", repeat = 3 }]\n",
        );
        let p = plan(&b, BackendKind::PhpFpm).unwrap();
        assert_eq!(p.workers, 3);
        assert!(!p.ondemand);
        assert_eq!(p.max_requests, Some(50));
        assert_eq!(
            p.reply,
            Reply {
                echo: false,
                status: Some(200),
                reason: None,
                headers: vec![("Content-Type".into(), "text/plain".into())],
                chunks: vec![
                    Chunk {
                        data: "ab".into(),
                        delay_ms: 200
                    },
                    Chunk {
                        data: "ccc".into(),
                        delay_ms: 0
                    },
                ],
            }
        );
        let conf = php_fpm_conf(&p, "127.0.0.1:9123".parse().unwrap(), Path::new("/d"));
        for line in [
            "listen = 127.0.0.1:9123",
            "pm = static",
            "pm.max_children = 3",
            "pm.max_requests = 50",
            "error_log = /d/php-fpm.log",
        ] {
            assert!(conf.contains(line), "{line}\n{conf}");
        }
        // No capacity: the default number of workers; spawn_delay: ondemand.
        let p = plan(&backend("spawn_delay = \"50ms\""), BackendKind::PhpFpm).unwrap();
        assert_eq!(p.workers, DEFAULT_WORKERS);
        assert!(p.ondemand && p.reply.echo);
        let conf = php_fpm_conf(&p, "127.0.0.1:9123".parse().unwrap(), Path::new("/d"));
        assert!(conf.contains("pm = ondemand"), "{conf}");
        assert!(conf.contains("pm.max_requests = 0"), "{conf}");
        // libfcgi has neither.
        let err = plan(&backend("spawn_delay = \"50ms\""), BackendKind::Libfcgi).unwrap_err();
        assert!(err.contains("on-demand"), "{err}");
        let err = plan(&backend("max_requests = 5"), BackendKind::Libfcgi).unwrap_err();
        assert!(err.contains("max_requests"), "{err}");
    }

    #[test]
    fn mock_only_behaviour_has_no_plan() {
        for (extra, why) in [
            ("idle_timeout = \"1s\"", "idle"),
            ("[[script.rule]]\nstatus = 500\n", "[[rule]]"),
            ("[script.server]\nalways_close = true\n", "always_close"),
            (
                "[script.default]\naction = \"never_answer\"\n",
                "never_answer",
            ),
            ("[script.default]\nsplit_every = 3\n", "split_every"),
            (
                "[script.default]\nbody = [{ data_hex = \"00\" }]\n",
                "data_hex",
            ),
        ] {
            let err = plan(&backend(extra), BackendKind::PhpFpm).unwrap_err();
            assert!(err.contains(why), "{extra}: {err}");
        }
    }

    #[test]
    fn php_script_logs_then_answers() {
        let reply = Reply {
            echo: false,
            status: Some(503),
            reason: None,
            headers: vec![("X-A".into(), "it's".into())],
            chunks: vec![
                Chunk {
                    data: "slow\\".into(),
                    delay_ms: 2000,
                },
                Chunk {
                    data: String::new(),
                    delay_ms: 5,
                },
            ],
        };
        let php = php_script(&reply, Path::new("/run/x/executions.log"));
        assert!(php.starts_with("<?php\n"), "{php}");
        let log = php
            .find("file_put_contents('/run/x/executions.log'")
            .expect("log line");
        let status = php.find("http_response_code(503);").expect("status");
        assert!(log < status, "{php}");
        assert!(php.contains("$v('HTTP_X_REQUEST_TAG')"), "{php}");
        assert!(php.contains("header('X-A: it\\'s', false);"), "{php}");
        assert!(
            php.contains("usleep(2000000);\necho 'slow\\\\';\nflush();"),
            "{php}"
        );
        assert!(php.contains("usleep(5000);\n"), "{php}");
        let with_reason = Reply {
            status: Some(200),
            reason: Some("Fine".into()),
            ..Reply::default()
        };
        assert!(php_script(&with_reason, Path::new("/l")).contains("header('HTTP/1.1 200 Fine');"));
        let echo = php_script(
            &Reply {
                echo: true,
                ..Reply::default()
            },
            Path::new("/l"),
        );
        assert!(echo.contains("json_encode(['params' => $params"), "{echo}");
    }

    #[test]
    fn c_source_logs_then_answers() {
        let reply = Reply {
            echo: false,
            status: Some(200),
            reason: None,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            chunks: vec![Chunk {
                data: "a\"b\n".into(),
                delay_ms: 200,
            }],
        };
        let c = c_source(&reply, Path::new("/run/x/executions.log"));
        assert!(
            c.contains("static const char LOG_PATH[] = \"/run/x/executions.log\";"),
            "{c}"
        );
        assert!(c.contains("getenv(\"HTTP_X_REQUEST_TAG\")"), "{c}");
        let log = c.find("log_execution();\n").expect("log call");
        let head = c
            .find("\"Status: 200 OK\\015\\012Content-Type: text/plain\\015\\012\\015\\012\"")
            .expect("head");
        let delay = c.find("sleep_ms(200);").expect("delay");
        let body = c.find("\"a\\\"b\\012\"").expect("body");
        assert!(log < head && head < delay && delay < body, "{c}");
        let echo = c_source(
            &Reply {
                echo: true,
                ..Reply::default()
            },
            Path::new("/l"),
        );
        assert!(echo.contains("        echo_params();\n"), "{echo}");
        assert!(
            echo.contains("Content-Type: application/json\\015\\012"),
            "{echo}"
        );
    }

    #[test]
    fn the_log_becomes_a_journal_in_scenario_time() {
        let origin = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let text = "1700000000.250000\t41\tGET\t/app/index.php\tc2.1\n\
                    1700000000.100500\t40\tGET\t/app/index.php\tc1.1\n\
                    1700000000.3\t4";
        let execs = parse_log(text);
        assert_eq!(execs.len(), 2, "the cut line is left out");
        let j = journal(&execs, origin);
        assert_eq!(j.requests.len(), 2);
        assert_eq!(j.requests[0].param(TAG_PARAM).as_deref(), Some("c1.1"));
        assert_eq!(j.requests[0].begin_ms, 100);
        assert_eq!(j.requests[1].begin_ms, 250);
        assert_eq!(j.requests[1].param("PID").as_deref(), Some("41"));
        assert!(j.connections.is_empty());
    }

    #[test]
    fn routes_point_into_the_docroot_and_scripts_sit_where_targets_look() {
        let path = crate::sim::suite::scenarios_dir().join("saturation/acquire-exceeded-503.toml");
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let s = with_docroot(&s, Path::new("/tmp/run/docroot/"));
        assert_eq!(
            s.topology.routes[0].backend_path.as_deref(),
            Some("/tmp/run/docroot/")
        );
        assert_eq!(
            script_paths(&s),
            vec![
                PathBuf::from("/tmp/run/docroot/app/index.php"),
                PathBuf::from("/tmp/run/docroot/index.php"),
            ]
        );
        assert_eq!(unsupported(&s, BackendKind::PhpFpm), None);
        assert_eq!(unsupported(&s, BackendKind::Libfcgi), None);
    }
}
