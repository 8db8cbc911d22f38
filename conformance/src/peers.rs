//! Peer proxies as processes: nginx, HAProxy, Apache httpd (mod_proxy_fcgi) and our own
//! `fcgi-proxy`, each started in the foreground from a config generated into a temp dir, in
//! front of one FastCGI backend address, on a loopback port.
//!
//! - Ready when a TCP connect to its listener succeeds (every peer binds only after its config
//!   parsed; docs/reference/peers.md §2).
//! - Stopped by its own PID: SIGTERM, a grace period, then SIGKILL for the process and any
//!   descendant still there. Never by name. [`RunningPeer`] does this on drop too.
//! - [`RunningPeer::pids`] lists the peer's process tree (nginx master + workers, Apache parent
//!   + children), for CPU and memory sampling.

use std::fs::File;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The proxies this module can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    /// Our proxy, `fcgi-proxy`, from a TOML config.
    FcgiProxy,
    /// nginx with `fastcgi_pass` to an `upstream`.
    Nginx,
    /// HAProxy with an `fcgi-app` backend.
    Haproxy,
    /// Apache httpd 2.4, event MPM, `ProxyPass` to `fcgi://`.
    Apache,
}

/// Where the FastCGI backend listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendAddr {
    /// A TCP address (loopback here).
    Tcp(SocketAddr),
    /// A Unix domain socket.
    Unix(PathBuf),
}

impl std::fmt::Display for BackendAddr {
    /// `127.0.0.1:9000`, or `unix:/path/to/socket`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAddr::Tcp(a) => write!(f, "{a}"),
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What a peer's config is generated from.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The FastCGI backend.
    pub backend: BackendAddr,
    /// Keep backend connections open and reuse them (FCGI_KEEP_CONN), or one per request;
    /// `None` leaves each peer's own default (fcgi-proxy reuses; nginx, HAProxy and Apache
    /// open a connection per request).
    pub backend_keepalive: Option<bool>,
    /// Log every request as the peer does by default: fcgi-proxy's access line on stderr
    /// (no `RUST_LOG` override), nginx's and Apache's `combined` log in `access.log` in the
    /// peer's directory. HAProxy logs nothing without a `log` target, so either way it logs
    /// nothing. When false: fcgi-proxy gets `RUST_LOG=warn`, nginx `access_log off`, Apache no
    /// `CustomLog`.
    pub access_log: bool,
    /// Client connections the peer must be able to hold at once (sizes nginx
    /// `worker_connections`, HAProxy `maxconn`, Apache's async connection factor).
    pub max_client_connections: usize,
    /// Idle client keep-alive timeout.
    pub keepalive_timeout: Duration,
    /// Worker processes or threads (nginx `worker_processes`, HAProxy `nbthread`, fcgi-proxy
    /// `workers`). Apache runs 2 processes of 64 threads whatever this says.
    pub workers: usize,
    /// DOCUMENT_ROOT / SCRIPT_FILENAME prefix sent to the backend (not read by the peers; a
    /// php-fpm backend runs the script found there).
    pub document_root: String,
    /// Serve the files under this directory instead of proxying to the backend: fcgi-proxy a
    /// `[[site]]` with this `root`, nginx `root`, Apache `DocumentRoot`, each with its defaults
    /// otherwise. HAProxy cannot serve files: its config ignores this.
    pub static_root: Option<PathBuf>,
    /// Serve a PHP site from `document_root` as its users set one up: a request for a `.php`
    /// file that is there goes to the backend (fcgi-proxy a `[[site]]` with `php`; nginx
    /// Debian's `snippets/fastcgi-php.conf`, `try_files $fastcgi_script_name =404`; Apache
    /// Debian's `php8.2-fpm.conf`, `<FilesMatch>` with `SetHandler "proxy:fcgi://..."`).
    /// HAProxy maps nothing to files: its config ignores this.
    pub php_site: bool,
    /// The `fcgi-proxy` binary (required for [`PeerKind::FcgiProxy`]).
    pub fcgi_proxy_bin: Option<PathBuf>,
    /// Serve TLS with this certificate on the listener, offering h2 and http/1.1 by ALPN
    /// (TLSv1.2 and TLSv1.3); each peer's defaults otherwise.
    pub tls: Option<TlsFiles>,
    /// Extra environment for the peer process (applied last: it overrides what `access_log`
    /// sets).
    pub env: Vec<(String, String)>,
    /// The session the peer starts in: its own (`setsid`), as a service manager starts a
    /// server, or the caller's. See [`Session`].
    pub session: Session,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            backend: BackendAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 9000))),
            backend_keepalive: Some(true),
            access_log: true,
            max_client_connections: 1024,
            keepalive_timeout: Duration::from_secs(60),
            workers: 2,
            document_root: "/srv/app".to_owned(),
            static_root: None,
            php_site: false,
            fcgi_proxy_bin: None,
            tls: None,
            env: Vec::new(),
            session: Session::Callers,
        }
    }
}

/// A certificate and its key as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate followed by the key (HAProxy's `crt` takes one file).
    pub cert_and_key: PathBuf,
}

/// A generated config: the file to write and the command line that runs it.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// File name inside the peer's temp dir.
    pub file_name: &'static str,
    /// The config text (also what reports show).
    pub text: String,
    /// Program and arguments; `{dir}` and `{config}` are replaced by the temp dir and the
    /// config path.
    pub command: Vec<String>,
}

impl PeerKind {
    /// Every peer, ours first.
    pub const ALL: [PeerKind; 4] = [
        PeerKind::FcgiProxy,
        PeerKind::Nginx,
        PeerKind::Haproxy,
        PeerKind::Apache,
    ];

    /// Short name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::FcgiProxy => "fcgi-proxy",
            PeerKind::Nginx => "nginx",
            PeerKind::Haproxy => "haproxy",
            PeerKind::Apache => "apache",
        }
    }

    /// The Debian package that ships the peer (None for ours).
    pub fn package(self) -> Option<&'static str> {
        match self {
            PeerKind::FcgiProxy => None,
            PeerKind::Nginx => Some("nginx"),
            PeerKind::Haproxy => Some("haproxy"),
            PeerKind::Apache => Some("apache2"),
        }
    }

    /// The program to run, if installed.
    pub fn binary(self, opts: &PeerOptions) -> Option<PathBuf> {
        match self {
            PeerKind::FcgiProxy => opts.fcgi_proxy_bin.clone().filter(|p| p.is_file()),
            PeerKind::Nginx => find_program("nginx"),
            PeerKind::Haproxy => find_program("haproxy"),
            PeerKind::Apache => find_program("apache2"),
        }
    }

    /// Why the peer cannot run here, if it cannot.
    pub fn unavailable(self, opts: &PeerOptions) -> Option<String> {
        if self.binary(opts).is_some() {
            if self == PeerKind::Apache && !Path::new(APACHE_MODULES).is_dir() {
                return Some(format!(
                    "{APACHE_MODULES} missing (apt-get install apache2)"
                ));
            }
            return None;
        }
        Some(match self.package() {
            Some(p) => format!("{} not installed (apt-get install {p})", self.name()),
            None => "fcgi-proxy binary not built".to_owned(),
        })
    }

    /// The version line the peer prints (for reports).
    pub fn version(self, opts: &PeerOptions) -> Option<String> {
        let bin = self.binary(opts)?;
        let arg = match self {
            PeerKind::FcgiProxy => "--version",
            PeerKind::Nginx | PeerKind::Apache => "-v",
            PeerKind::Haproxy => "-v",
        };
        let out = Command::new(bin).arg(arg).output().ok()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
    }

    /// The config for listening on `listen`, with paths under `dir`.
    pub fn config(self, opts: &PeerOptions, listen: SocketAddr, dir: &Path) -> PeerConfig {
        match self {
            PeerKind::FcgiProxy => fcgi_proxy_config(opts, listen),
            PeerKind::Nginx => nginx_config(opts, listen, dir),
            PeerKind::Haproxy => haproxy_config(opts, listen),
            PeerKind::Apache => apache_config(opts, listen, dir),
        }
    }

    /// Writes the config into a new temp dir, starts the peer on a free loopback port and
    /// waits until it accepts connections.
    pub fn start(self, opts: &PeerOptions) -> io::Result<RunningPeer> {
        if let Some(why) = self.unavailable(opts) {
            return Err(io::Error::new(io::ErrorKind::NotFound, why));
        }
        let bin = self
            .binary(opts)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "binary not found"))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("peer-{}-", self.name()))
            .tempdir()?;
        // nginx wants its temp dirs' parent; Apache its run dir and an existing DocumentRoot.
        for sub in ["tmp", "run", "docroot"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        let listen = free_loopback_port()?;
        let config = self.config(opts, listen, dir.path());
        let config_path = dir.path().join(config.file_name);
        std::fs::write(&config_path, &config.text)?;
        // stdout and stderr (fcgi-proxy's access lines, every peer's errors) go to a file in
        // the peer's directory: a pipe nobody reads would block a logging peer.
        let log_path = dir.path().join("output.log");
        let log = File::create(&log_path)?;
        let dir_s = format!("{}/", dir.path().display());
        let cfg_s = config_path.display().to_string();
        let args: Vec<String> = config
            .command
            .iter()
            .map(|a| a.replace("{dir}", &dir_s).replace("{config}", &cfg_s))
            .collect();
        let mut cmd = opts.session.command(&bin);
        cmd.args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self == PeerKind::FcgiProxy {
            // Its access log is on unless RUST_LOG filters it out: what a user gets is no
            // RUST_LOG at all, whatever this process was started with.
            if opts.access_log {
                cmd.env_remove("RUST_LOG");
            } else {
                cmd.env("RUST_LOG", "warn");
            }
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn()?;
        let mut peer = RunningPeer {
            kind: self,
            child: Some(child),
            addr: listen,
            config,
            log_path,
            dir,
        };
        peer.wait_ready(Duration::from_secs(10))?;
        opts.session
            .check(peer.pid().unwrap_or(0))
            .map_err(io::Error::other)?;
        Ok(peer)
    }
}

/// The session a server process starts in.
///
/// On Linux with `kernel.sched_autogroup_enabled=1` (the default on Debian), the scheduler
/// shares CPU between sessions first and between processes within a session second. A server
/// started from the load generator's session competes inside that group with the load
/// generator, while every backend process spawn-fcgi starts is a session of its own: the
/// server then gets a fraction of the CPU no service manager would give it, and requests wait
/// for a backend process that waits for a CPU (docs/bench.md, "Sessions"). The bench starts
/// its servers in sessions of their own; the conformance suite in its own session, where CPU
/// fairness does not matter and Ctrl-C reaches them directly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Session {
    /// The caller's session.
    #[default]
    Callers,
    /// A new session, through `setsid`, which calls setsid(2) and execs in place (a spawned
    /// child is not a process group leader): the PID spawned is the program's, stopped and
    /// measured by that PID as before; [`Session::check`] verifies it.
    Own,
}

impl Session {
    /// The command that runs `program` in this session.
    pub fn command(self, program: &Path) -> Command {
        match self {
            Session::Callers => Command::new(program),
            Session::Own => {
                let mut cmd = Command::new(programs::program_path("setsid"));
                cmd.arg(program);
                cmd
            }
        }
    }

    /// After the start: that process `pid` is where this session puts it.
    pub fn check(self, pid: u32) -> Result<(), String> {
        match self {
            Session::Callers => Ok(()),
            Session::Own => check_own_session(pid),
        }
    }
}

/// Whether process `pid` leads a session of its own (started in [`Session::Own`], with `setsid`
/// replaced by the program itself).
fn check_own_session(pid: u32) -> Result<(), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("process {pid}: {e}"))?;
    // Fields after the name: state, ppid, pgrp, session.
    let session = stat_fields(&stat)
        .and_then(|f| f.get(3).and_then(|s| s.parse::<u32>().ok()))
        .ok_or_else(|| format!("process {pid}: unreadable /proc/{pid}/stat"))?;
    if session == pid {
        Ok(())
    } else {
        Err(format!(
            "process {pid} is in session {session}, not a session of its own: setsid forked \
             instead of running the program in place"
        ))
    }
}

/// A started peer. Stops it (by PID) when dropped.
#[derive(Debug)]
pub struct RunningPeer {
    kind: PeerKind,
    child: Option<Child>,
    addr: SocketAddr,
    config: PeerConfig,
    log_path: PathBuf,
    // Dropped last: the config and logs live here.
    dir: tempfile::TempDir,
}

impl RunningPeer {
    pub fn kind(&self) -> PeerKind {
        self.kind
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The config it runs with.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Its temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PID of the process we started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process we started and all its descendants, parents first.
    pub fn pids(&self) -> Vec<u32> {
        self.pid().map(process_tree).unwrap_or_default()
    }

    /// The peer's stdout and stderr so far (last `max` bytes).
    pub fn log_tail(&self, max: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        if s.len() > max {
            let mut cut = s.len() - max;
            while !s.is_char_boundary(cut) {
                cut += 1;
            }
            s = s[cut..].to_owned();
        }
        s
    }

    fn wait_ready(&mut self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "{} exited during start-up ({status}): {}",
                    self.kind.name(),
                    self.log_tail(2000)
                )));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail(2000);
                self.stop_inner();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} not accepting on {} after {limit:?}: {tail}",
                        self.kind.name(),
                        self.addr
                    ),
                ));
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, up to 5 s for it to exit, then SIGKILL for whatever of its tree is left.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let tree = process_tree(child.id());
        signal(child.id(), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => sleep(Duration::from_millis(10)),
            }
        }
        // Children that outlived their parent (none expected): by PID, after a short grace.
        let left: Vec<u32> = tree[1..].iter().copied().filter(|&p| is_alive(p)).collect();
        if !left.is_empty() {
            sleep(Duration::from_millis(200));
            for p in left {
                if is_alive(p) {
                    signal(p, Signal::SIGKILL);
                }
            }
        }
    }
}

impl Drop for RunningPeer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

pub use nix::sys::signal::Signal;

/// Sends `sig` to the process `pid` (by PID, never by name). A process that is gone already, or
/// a PID out of range, is not an error: the callers stop processes and then check `is_alive`.
pub fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// A process still exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => stat_fields(&s).is_some_and(|f| f.first() != Some(&"Z")),
        Err(_) => false,
    }
}

/// `pid` and all its descendants (from `/proc/PID/task/*/children`), parents first.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                    for c in s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                        if !out.contains(&c) {
                            out.push(c);
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out
}

/// The fields of `/proc/PID/stat` after the command name: index 0 is the state (field 3).
pub fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let close = stat.rfind(')')?;
    Some(stat[close + 1..].split_whitespace().collect())
}

/// A loopback port nobody listens on right now.
pub fn free_loopback_port() -> io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

/// Looks `name` up in PATH, then in the sbin directories (not always on a user's PATH); see
/// the `programs` crate.
pub use programs::find_program;

/// Running as root (Apache then needs `User`/`Group` for its children).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

/// How a config comment names the backend keep-alive setting.
fn keepalive_words(k: Option<bool>) -> &'static str {
    match k {
        Some(true) => "on",
        Some(false) => "off",
        None => "left at its default",
    }
}

/// Apache's and fcgi-proxy's URL of the backend itself: `fcgi://HOST:PORT`, or
/// `unix:/PATH|fcgi://localhost` for a Unix socket.
fn backend_url(o: &PeerOptions) -> String {
    match &o.backend {
        BackendAddr::Tcp(a) => format!("fcgi://{a}"),
        BackendAddr::Unix(p) => format!("unix:{}|fcgi://localhost", p.display()),
    }
}

/// The backend URL of a route: [`backend_url`] with `/ROOT/`.
fn fcgi_url(o: &PeerOptions) -> String {
    format!("{}{}/", backend_url(o), o.document_root)
}

/// fcgi-proxy's listening address: `listen = [...]` (a top-level key) for plain HTTP/1.1, or a
/// `[[listener]]` table with `tls` (its default protocols: h2 and http/1.1 by ALPN, TLSv1.2
/// and TLSv1.3). Returns (top-level lines, tables).
fn fcgi_proxy_listen(o: &PeerOptions, listen: SocketAddr) -> (String, String) {
    match &o.tls {
        None => (format!("listen = [\"{listen}\"]\n"), String::new()),
        Some(t) => (
            String::new(),
            format!(
                "\n[[listener]]\n\
                 addr = \"{listen}\"\n\
                 tls = {{ cert = \"{}\", key = \"{}\" }}\n",
                t.cert.display(),
                t.key.display()
            ),
        ),
    }
}

/// What a config's first comment says about TLS.
fn tls_words(o: &PeerOptions) -> &'static str {
    if o.tls.is_some() {
        "; TLS (h2 and http/1.1 by ALPN)"
    } else {
        ""
    }
}

fn fcgi_proxy_config(o: &PeerOptions, listen: SocketAddr) -> PeerConfig {
    if let Some(root) = &o.static_root {
        return fcgi_proxy_site_config(o, listen, &root.display().to_string(), None);
    }
    if o.php_site {
        return fcgi_proxy_site_config(o, listen, &o.document_root, Some(backend_url(o)));
    }
    let log = if o.access_log {
        "one line per request on stderr (no RUST_LOG)"
    } else {
        "off (RUST_LOG=warn)"
    };
    let reuse = match o.backend_keepalive {
        Some(r) => format!("worker.reuse = {r}\n"),
        None => String::new(),
    };
    let (listen_key, listener) = fcgi_proxy_listen(o, listen);
    let text = format!(
        "# fcgi-proxy: one prefix route, backend keep-alive {ka}{tls};\n\
         # access log {log};\n\
         # serving threads and the backend connection limit are the defaults a user gets (one\n\
         # thread per core; the limit learned from the backend)\n\
         {listen_key}\
         document_root = \"{root}\"\n\
         {listener}\
         \n\
         [timeouts]\n\
         keep_alive = \"{kat}s\"\n\
         \n\
         [limits]\n\
         max_keep_alive_requests = 0   # unlimited, like the others here\n\
         \n\
         [[route]]\n\
         path = \"/\"\n\
         target = \"{target}\"\n\
         {reuse}",
        ka = keepalive_words(o.backend_keepalive),
        tls = tls_words(o),
        root = o.document_root,
        kat = o.keepalive_timeout.as_secs(),
        target = fcgi_url(o),
    );
    PeerConfig {
        file_name: "proxy.toml",
        text,
        command: vec!["--config".into(), "{config}".into()],
    }
}

fn nginx_config(o: &PeerOptions, listen: SocketAddr, dir: &Path) -> PeerConfig {
    if let Some(root) = &o.static_root {
        return nginx_static_config(o, listen, dir, root);
    }
    let per_worker = o.max_client_connections + 256;
    let (keepalive, keep_conn) = if o.backend_keepalive == Some(true) {
        ("    keepalive 64;\n", "      fastcgi_keep_conn on;\n")
    } else {
        ("", "")
    };
    let (what, location) = if o.php_site {
        (
            "a PHP site as Debian's snippets/fastcgi-php.conf has it",
            // Debian's snippet, with its relative include made absolute (the config is not
            // in /etc/nginx); the default site includes it in `location ~ \.php$`.
            "\x20   index index.php index.html;\n\
             \x20   location ~ \\.php$ {\n\
             \x20     fastcgi_split_path_info ^(.+?\\.php)(/.*)$;\n\
             \x20     try_files $fastcgi_script_name =404;\n\
             \x20     set $path_info $fastcgi_path_info;\n\
             \x20     fastcgi_param PATH_INFO $path_info;\n\
             \x20     fastcgi_index index.php;\n\
             \x20     include /etc/nginx/fastcgi.conf;\n",
        )
    } else {
        (
            "fastcgi_pass to one upstream",
            "\x20   location / {\n\
             \x20     include /etc/nginx/fastcgi_params;\n\
             \x20     fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n",
        )
    };
    let access_log = if o.access_log {
        // nginx's default (logs/access.log combined), in the peer's directory.
        format!("{} combined", dir.join("access.log").display())
    } else {
        "off".to_owned()
    };
    let (listen_params, ssl) = nginx_tls(o);
    let text = format!(
        "# nginx: {what}, backend keep-alive {ka}{tls}\n\
         worker_processes {workers};\n\
         worker_rlimit_nofile {nofile};\n\
         pid nginx.pid;\n\
         error_log stderr notice;\n\
         events {{ worker_connections {per_worker}; }}\n\
         http {{\n\
         \x20 access_log {access_log};\n\
         \x20 client_body_temp_path tmp/body;\n\
         \x20 fastcgi_temp_path     tmp/fastcgi;\n\
         \x20 proxy_temp_path       tmp/proxy;\n\
         \x20 scgi_temp_path        tmp/scgi;\n\
         \x20 uwsgi_temp_path       tmp/uwsgi;\n\
         \x20 keepalive_timeout {kat}s;\n\
         \x20 keepalive_requests 1000000;\n\
         \x20 client_body_buffer_size 128k;   # 64 KiB POST bodies stay in memory\n\
         \x20 upstream fcgi_backend {{\n\
         \x20   server {backend};\n\
         {keepalive}\
         \x20 }}\n\
         \x20 server {{\n\
         \x20   listen {listen}{listen_params};\n\
         {ssl}\
         \x20   root {root};\n\
         {location}\
         {keep_conn}\
         \x20     fastcgi_pass fcgi_backend;\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n",
        ka = keepalive_words(o.backend_keepalive),
        tls = tls_words(o),
        workers = o.workers,
        nofile = per_worker * 2 + 1024,
        kat = o.keepalive_timeout.as_secs(),
        // `unix:/path` is nginx's own syntax for a socket.
        backend = o.backend,
        root = o.document_root,
    );
    PeerConfig {
        file_name: "nginx.conf",
        text,
        command: [
            "-p",
            "{dir}",
            "-c",
            "{config}",
            "-e",
            "stderr",
            "-g",
            "daemon off;",
        ]
        .map(String::from)
        .to_vec(),
    }
}

/// nginx's TLS: the `listen` parameters and the `server` lines. nginx 1.22 (Debian 12) turns
/// HTTP/2 on with the `listen` parameter (`http2 on;` came in 1.25.1). Debian's nginx.conf adds
/// `ssl_prefer_server_ciphers on` and no `ssl_session_cache` (nginx's default: none; session
/// tickets on).
fn nginx_tls(o: &PeerOptions) -> (&'static str, String) {
    match &o.tls {
        None => ("", String::new()),
        Some(t) => (
            " ssl http2",
            format!(
                "\x20   ssl_certificate     {};\n\
                 \x20   ssl_certificate_key {};\n\
                 \x20   ssl_protocols TLSv1.2 TLSv1.3;\n\
                 \x20   ssl_prefer_server_ciphers on;\n",
                t.cert.display(),
                t.key.display()
            ),
        ),
    }
}

fn haproxy_config(o: &PeerOptions, listen: SocketAddr) -> PeerConfig {
    let (keep, reuse) = match o.backend_keepalive {
        Some(true) => ("    option keep-conn\n", "    http-reuse always\n"),
        Some(false) => ("    no option keep-conn\n", "    http-reuse never\n"),
        // keep-conn off, http-reuse safe.
        None => ("", ""),
    };
    let server = match &o.backend {
        BackendAddr::Tcp(a) => a.to_string(),
        BackendAddr::Unix(p) => format!("unix@{}", p.display()),
    };
    let kat = o.keepalive_timeout.as_secs();
    let text = format!(
        "# HAProxy: fcgi-app backend, backend keep-alive {ka}{tls}; no `log` target, so no access\n\
         # log (HAProxy logs nothing by default)\n\
         global\n\
         \x20   maxconn {maxconn}\n\
         \x20   nbthread {workers}\n\
         defaults\n\
         \x20   mode http\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client  {kat}s\n\
         \x20   timeout server  60s\n\
         \x20   timeout http-keep-alive {kat}s\n\
         fcgi-app app\n\
         \x20   docroot {root}\n\
         {keep}\
         frontend fe\n\
         \x20   bind {listen}{bind_tls}\n\
         \x20   default_backend be_fcgi\n\
         backend be_fcgi\n\
         {reuse}\
         \x20   use-fcgi-app app\n\
         \x20   server s1 {server} proto fcgi\n",
        ka = keepalive_words(o.backend_keepalive),
        tls = tls_words(o),
        // HAProxy's session cache and tickets at their defaults.
        bind_tls = match &o.tls {
            None => String::new(),
            Some(t) => format!(
                " ssl crt {} alpn h2,http/1.1 ssl-min-ver TLSv1.2",
                t.cert_and_key.display()
            ),
        },
        maxconn = haproxy_maxconn(o.max_client_connections + 256, open_file_limit()),
        workers = o.workers,
        root = o.document_root,
    );
    PeerConfig {
        file_name: "haproxy.cfg",
        text,
        command: ["-db", "-f", "{config}"].map(String::from).to_vec(),
    }
}

/// HAProxy reserves two descriptors per connection (client and server side) and refuses to
/// start when `maxconn` needs more than the open-file limit it cannot raise.
fn haproxy_maxconn(wanted: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => wanted.min((n.saturating_sub(64) / 2) as usize).max(64),
        None => wanted,
    }
}

/// The soft open-file limit of this process (peers inherit it).
pub fn open_file_limit() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn apache_config(o: &PeerOptions, listen: SocketAddr, dir: &Path) -> PeerConfig {
    let d = dir.display();
    let user = if running_as_root() {
        "User www-data\nGroup www-data\n"
    } else {
        ""
    };
    let reuse = match o.backend_keepalive {
        Some(true) => " enablereuse=on",
        Some(false) => " disablereuse=on",
        // mod_proxy_fcgi closes the connection after each request.
        None => "",
    };
    let access_log = if o.access_log {
        // Debian's LogFormat and its default site's CustomLog.
        format!(
            "LogFormat \"%h %l %u %t \\\"%r\\\" %>s %O \\\"%{{Referer}}i\\\" \\\"%{{User-Agent}}i\\\"\" \
             combined\nCustomLog {d}/access.log combined\n"
        )
    } else {
        String::new()
    };
    // A fixed pool of 2 processes x 64 threads (no spawning or reaping of children during a
    // run: reaping a child closes its keep-alive connections). A process accepts while its
    // connections stay under ThreadsPerChild + AsyncRequestWorkerFactor * idle threads, and
    // idle keep-alive connections hold no thread, so the factor lets the two processes hold
    // `max_client_connections` between them.
    let factor = o.max_client_connections / (2 * 64) + 2;
    let (what, serve) = match &o.static_root {
        // mod_mime with the system's types, as Debian enables it; sendfile at Apache's default.
        Some(root) => (
            "static files from DocumentRoot".to_owned(),
            format!(
                "LoadModule mime_module       {APACHE_MODULES}/mod_mime.so\n\
                 TypesConfig /etc/mime.types\n\
                 DocumentRoot {r}\n\
                 <Directory {r}>\n    Require all granted\n</Directory>\n",
                r = root.display()
            ),
        ),
        None if o.php_site => {
            // Debian's php8.2-fpm.conf, on the backend's address.
            let handler = format!("proxy:{}", backend_url(o));
            let worker = match o.backend_keepalive {
                Some(true) => format!(
                    "<Proxy \"{}\">\n    ProxySet enablereuse=on\n</Proxy>\n",
                    handler.trim_start_matches("proxy:")
                ),
                _ => String::new(),
            };
            (
                format!(
                    "a PHP site, SetHandler as Debian's php8.2-fpm.conf has it, backend reuse {}",
                    keepalive_words(o.backend_keepalive)
                ),
                format!(
                    "DocumentRoot {r}\n\
                     <Directory {r}>\n    Require all granted\n</Directory>\n\
                     <FilesMatch \".+\\.ph(?:ar|p|tml)$\">\n    SetHandler \"{handler}\"\n</FilesMatch>\n\
                     {worker}",
                    r = o.document_root
                ),
            )
        }
        None => (
            format!(
                "ProxyPass to fcgi://, backend reuse {}",
                keepalive_words(o.backend_keepalive)
            ),
            format!(
                "DocumentRoot {d}/docroot\nProxyPass \"/\" \"{}\"{reuse}\n",
                fcgi_url(o)
            ),
        ),
    };
    let ssl = apache_tls(o, dir);
    let text = format!(
        "# Apache httpd: event MPM, 2 processes x 64 threads, {what}{tls}\n\
         ServerRoot {d}\n\
         ServerName 127.0.0.1\n\
         Listen {listen}\n\
         PidFile {d}/run/httpd.pid\n\
         DefaultRuntimeDir {d}/run\n\
         ErrorLog /dev/stderr\n\
         LogLevel warn\n\
         {access_log}\
         {user}\
         LoadModule mpm_event_module  {m}/mod_mpm_event.so\n\
         LoadModule authz_core_module {m}/mod_authz_core.so\n\
         LoadModule proxy_module      {m}/mod_proxy.so\n\
         LoadModule proxy_fcgi_module {m}/mod_proxy_fcgi.so\n\
         StartServers 2\n\
         ServerLimit 2\n\
         ThreadLimit 64\n\
         ThreadsPerChild 64\n\
         MaxRequestWorkers 128\n\
         MinSpareThreads 1\n\
         MaxSpareThreads 128\n\
         MaxConnectionsPerChild 0\n\
         AsyncRequestWorkerFactor {factor}\n\
         KeepAlive On\n\
         MaxKeepAliveRequests 0\n\
         KeepAliveTimeout {kat}\n\
         {ssl}\
         {serve}",
        tls = tls_words(o),
        m = APACHE_MODULES,
        kat = o.keepalive_timeout.as_secs(),
    );
    PeerConfig {
        file_name: "httpd.conf",
        text,
        command: ["-f", "{config}", "-DFOREGROUND"]
            .map(String::from)
            .to_vec(),
    }
}

/// Apache's TLS: mod_ssl with Debian's `ssl.conf` settings (its session cache, ciphers, no
/// session tickets), TLSv1.2 and TLSv1.3, and mod_http2 offering h2 and http/1.1 by ALPN.
fn apache_tls(o: &PeerOptions, dir: &Path) -> String {
    let Some(t) = &o.tls else {
        return String::new();
    };
    format!(
        "LoadModule socache_shmcb_module {m}/mod_socache_shmcb.so\n\
         LoadModule ssl_module        {m}/mod_ssl.so\n\
         LoadModule http2_module      {m}/mod_http2.so\n\
         SSLSessionCache shmcb:{d}/run/ssl_scache(512000)\n\
         SSLSessionCacheTimeout 300\n\
         SSLCipherSuite HIGH:!aNULL\n\
         SSLSessionTickets off\n\
         SSLProtocol -all +TLSv1.2 +TLSv1.3\n\
         SSLEngine on\n\
         SSLCertificateFile {cert}\n\
         SSLCertificateKeyFile {key}\n\
         Protocols h2 http/1.1\n",
        m = APACHE_MODULES,
        d = dir.display(),
        cert = t.cert.display(),
        key = t.key.display(),
    )
}

/// fcgi-proxy serving a `[[site]]` under `root`, its defaults otherwise. With `php` (a PHP
/// site), the `.php` files found there go to that backend (its connections reused); without
/// (static files), the declared site serves its files with no backend at all.
fn fcgi_proxy_site_config(
    o: &PeerOptions,
    listen: SocketAddr,
    root: &str,
    php: Option<String>,
) -> PeerConfig {
    let log = if o.access_log {
        "one line per request on stderr (no RUST_LOG)"
    } else {
        "off (RUST_LOG=warn)"
    };
    let (what, php) = match php {
        Some(url) => (
            "a PHP site, a [[site]] with `php`",
            format!("php = \"{url}\"\n"),
        ),
        None => ("static files from a [[site]] root", String::new()),
    };
    let (listen_key, listener) = fcgi_proxy_listen(o, listen);
    let text = format!(
        "# fcgi-proxy: {what}, its defaults otherwise{tls};\n\
         # access log {log}\n\
         {listen_key}\
         {listener}\
         \n\
         [timeouts]\n\
         keep_alive = \"{kat}s\"\n\
         \n\
         [limits]\n\
         max_keep_alive_requests = 0   # unlimited, like the others here\n\
         \n\
         [[site]]\n\
         root = \"{root}\"\n\
         {php}",
        tls = tls_words(o),
        kat = o.keepalive_timeout.as_secs(),
    );
    PeerConfig {
        file_name: "proxy.toml",
        text,
        command: vec!["--config".into(), "{config}".into()],
    }
}

/// nginx serving the files under `root`, as Debian's nginx.conf has it: `sendfile on`, the
/// MIME types of /etc/nginx/mime.types.
fn nginx_static_config(o: &PeerOptions, listen: SocketAddr, dir: &Path, root: &Path) -> PeerConfig {
    let per_worker = o.max_client_connections + 256;
    let access_log = if o.access_log {
        format!("{} combined", dir.join("access.log").display())
    } else {
        "off".to_owned()
    };
    let (listen_params, ssl) = nginx_tls(o);
    let text = format!(
        "# nginx: static files from root, sendfile on and mime.types as Debian ships them{tls}\n\
         worker_processes {workers};\n\
         worker_rlimit_nofile {nofile};\n\
         pid nginx.pid;\n\
         error_log stderr notice;\n\
         events {{ worker_connections {per_worker}; }}\n\
         http {{\n\
         \x20 sendfile on;\n\
         \x20 include /etc/nginx/mime.types;\n\
         \x20 default_type application/octet-stream;\n\
         \x20 access_log {access_log};\n\
         \x20 client_body_temp_path tmp/body;\n\
         \x20 fastcgi_temp_path     tmp/fastcgi;\n\
         \x20 proxy_temp_path       tmp/proxy;\n\
         \x20 scgi_temp_path        tmp/scgi;\n\
         \x20 uwsgi_temp_path       tmp/uwsgi;\n\
         \x20 keepalive_timeout {kat}s;\n\
         \x20 keepalive_requests 1000000;\n\
         \x20 server {{\n\
         \x20   listen {listen}{listen_params};\n\
         {ssl}\
         \x20   root {root};\n\
         \x20 }}\n\
         }}\n",
        tls = tls_words(o),
        workers = o.workers,
        nofile = per_worker * 2 + 1024,
        kat = o.keepalive_timeout.as_secs(),
        root = root.display(),
    );
    PeerConfig {
        file_name: "nginx.conf",
        text,
        command: [
            "-p",
            "{dir}",
            "-c",
            "{config}",
            "-e",
            "stderr",
            "-g",
            "daemon off;",
        ]
        .map(String::from)
        .to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program started in `Session::Own` leads a session of its own under the PID that
    /// was spawned (so it is stopped and measured by that PID); one in `Session::Callers` does not.
    #[test]
    fn own_session_runs_the_program_in_place_in_a_new_session() {
        let sleep_bin = find_program("sleep").expect("sleep");
        let mut own = Session::Own
            .command(&sleep_bin)
            .arg("30")
            .spawn()
            .expect("setsid sleep");
        let mut plain = Session::Callers
            .command(&sleep_bin)
            .arg("30")
            .spawn()
            .expect("sleep");
        // Until setsid has exec'd, the process may still be setsid itself.
        let deadline = Instant::now() + Duration::from_secs(5);
        let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm"));
        while comm(own.id()).is_ok_and(|c| c.trim() != "sleep") && Instant::now() < deadline {
            sleep(Duration::from_millis(5));
        }
        let own_check = Session::Own.check(own.id());
        let plain_check = Session::Own.check(plain.id());
        for c in [&mut own, &mut plain] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(comm(own.id()).ok(), None, "stopped by its own PID");
        own_check.expect("a session of its own");
        assert!(plain_check.is_err(), "{plain_check:?}");
    }

    #[test]
    fn stat_fields_skip_the_command_name() {
        let s = "42 (a b) c) S 1 42 42 0 -1 4194560 1 0 0 0 7 3 0 0";
        let f = stat_fields(s).unwrap();
        assert_eq!(f[0], "S");
        // utime and stime are fields 14 and 15: indices 11 and 12 here.
        assert_eq!(f[11], "7");
        assert_eq!(f[12], "3");
    }

    #[test]
    fn process_tree_of_self_starts_with_self() {
        let me = std::process::id();
        assert_eq!(process_tree(me)[0], me);
        assert!(is_alive(me));
    }

    #[test]
    fn haproxy_maxconn_fits_the_open_file_limit() {
        assert_eq!(haproxy_maxconn(1024, Some(20000)), 1024);
        assert_eq!(haproxy_maxconn(10256, Some(20000)), 9968);
        assert_eq!(haproxy_maxconn(10256, None), 10256);
        assert!(open_file_limit().is_some());
    }

    fn config(k: PeerKind, o: &PeerOptions) -> String {
        k.config(o, "127.0.0.1:28090".parse().unwrap(), Path::new("/tmp/x"))
            .text
    }

    #[test]
    fn configs_point_at_the_backend_and_listener() {
        let o = PeerOptions {
            backend: BackendAddr::Tcp("127.0.0.1:29001".parse().unwrap()),
            ..PeerOptions::default()
        };
        for k in PeerKind::ALL {
            let c = config(k, &o);
            assert!(c.contains("127.0.0.1:29001"), "{c}");
            assert!(c.contains("127.0.0.1:28090"), "{c}");
        }
        assert!(
            config(PeerKind::FcgiProxy, &o)
                .contains("target = \"fcgi://127.0.0.1:29001/srv/app/\"\nworker.reuse = true\n")
        );
        assert!(
            config(PeerKind::Apache, &o)
                .contains("\"fcgi://127.0.0.1:29001/srv/app/\" enablereuse=on\n")
        );
        assert!(
            config(PeerKind::Nginx, &o)
                .contains("    server 127.0.0.1:29001;\n    keepalive 64;\n")
        );
        assert!(config(PeerKind::Haproxy, &o).contains("    option keep-conn\n"));
        assert!(config(PeerKind::Haproxy, &o).contains("server s1 127.0.0.1:29001 proto fcgi\n"));
        let off = PeerOptions {
            backend_keepalive: Some(false),
            ..o.clone()
        };
        assert!(!config(PeerKind::Nginx, &off).contains("keepalive 64"));
        assert!(config(PeerKind::Apache, &off).contains("disablereuse=on"));
        assert!(config(PeerKind::Haproxy, &off).contains("no option keep-conn"));
        assert!(config(PeerKind::FcgiProxy, &off).contains("worker.reuse = false"));
    }

    #[test]
    fn peer_defaults_leave_backend_reuse_unset() {
        let o = PeerOptions {
            backend_keepalive: None,
            ..PeerOptions::default()
        };
        for k in PeerKind::ALL {
            let c = config(k, &o);
            for set in ["reuse", "keep-conn", "keepalive 64", "fastcgi_keep_conn"] {
                let lines: Vec<&str> = c
                    .lines()
                    .filter(|l| !l.starts_with('#') && l.contains(set))
                    .collect();
                assert!(lines.is_empty(), "{}: {lines:?}", k.name());
            }
        }
    }

    #[test]
    fn unix_socket_configs_name_the_socket() {
        let o = PeerOptions {
            backend: BackendAddr::Unix(PathBuf::from("/tmp/b/fcgi.sock")),
            ..PeerOptions::default()
        };
        assert_eq!(o.backend.to_string(), "unix:/tmp/b/fcgi.sock");
        let want = [
            (
                PeerKind::FcgiProxy,
                "target = \"unix:/tmp/b/fcgi.sock|fcgi://localhost/srv/app/\"\n",
            ),
            (PeerKind::Nginx, "    server unix:/tmp/b/fcgi.sock;\n"),
            (
                PeerKind::Haproxy,
                "    server s1 unix@/tmp/b/fcgi.sock proto fcgi\n",
            ),
            (
                PeerKind::Apache,
                "ProxyPass \"/\" \"unix:/tmp/b/fcgi.sock|fcgi://localhost/srv/app/\" enablereuse=on\n",
            ),
        ];
        for (k, line) in want {
            let c = config(k, &o);
            assert!(c.contains(line), "{}: {line:?} in\n{c}", k.name());
            assert!(!c.contains("127.0.0.1:9000"), "{c}");
        }
    }

    #[test]
    fn access_logs_as_each_peer_has_them_by_default() {
        let on = PeerOptions::default();
        assert!(on.access_log);
        let nginx = config(PeerKind::Nginx, &on);
        assert!(
            nginx.contains("  access_log /tmp/x/access.log combined;\n"),
            "{nginx}"
        );
        let apache = config(PeerKind::Apache, &on);
        assert!(
            apache.contains("CustomLog /tmp/x/access.log combined\n"),
            "{apache}"
        );
        assert!(
            apache.contains(
                "LogFormat \"%h %l %u %t \\\"%r\\\" %>s %O \\\"%{Referer}i\\\" \\\"%{User-Agent}i\\\"\" combined\n"
            ),
            "{apache}"
        );
        let ours = config(PeerKind::FcgiProxy, &on);
        assert!(ours.contains("access log one line per request"), "{ours}");
        let haproxy = config(PeerKind::Haproxy, &on);
        assert!(!haproxy.lines().any(|l| l.trim_start().starts_with("log ")));

        let off = PeerOptions {
            access_log: false,
            ..PeerOptions::default()
        };
        assert!(config(PeerKind::Nginx, &off).contains("  access_log off;\n"));
        let apache = config(PeerKind::Apache, &off);
        assert!(!apache.contains("CustomLog") && !apache.contains("LogFormat"));
        assert!(config(PeerKind::FcgiProxy, &off).contains("access log off (RUST_LOG=warn)"));
    }
    #[test]
    fn tls_configs_listen_with_the_certificate_and_offer_h2() {
        let files = TlsFiles {
            cert: PathBuf::from("/tmp/t/cert.pem"),
            key: PathBuf::from("/tmp/t/key.pem"),
            cert_and_key: PathBuf::from("/tmp/t/cert-key.pem"),
        };
        let o = PeerOptions {
            tls: Some(files),
            ..PeerOptions::default()
        };
        let ours = config(PeerKind::FcgiProxy, &o);
        assert!(!ours.contains("listen = "), "{ours}");
        assert!(
            ours.contains(
                "[[listener]]\naddr = \"127.0.0.1:28090\"\ntls = { cert = \"/tmp/t/cert.pem\", \
                 key = \"/tmp/t/key.pem\" }\n"
            ),
            "{ours}"
        );
        // What fcgi-proxy makes of it: one TLS listener offering h2 and http/1.1, the route kept.
        let cfg = fcgi_proxy::config::Config::from_toml_str(&ours, "proxy.toml").unwrap();
        let l = cfg.front_listeners().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].addr, "127.0.0.1:28090".parse().unwrap());
        let plan = l[0].tls.as_ref().expect("TLS");
        assert_eq!(plan.default.cert, "/tmp/t/cert.pem");
        assert_eq!(plan.default.key, "/tmp/t/key.pem");
        assert!(l[0].h2 && l[0].http1);
        assert!(
            ours.contains("target = \"fcgi://127.0.0.1:9000/srv/app/\""),
            "{ours}"
        );

        let nginx = config(PeerKind::Nginx, &o);
        for line in [
            "    listen 127.0.0.1:28090 ssl http2;\n",
            "    ssl_certificate     /tmp/t/cert.pem;\n",
            "    ssl_certificate_key /tmp/t/key.pem;\n",
            "    ssl_protocols TLSv1.2 TLSv1.3;\n",
        ] {
            assert!(nginx.contains(line), "{line:?} in\n{nginx}");
        }
        assert!(
            !nginx.contains("ssl_session_cache"),
            "nginx's default: {nginx}"
        );
        let haproxy = config(PeerKind::Haproxy, &o);
        assert!(
            haproxy.contains(
                "    bind 127.0.0.1:28090 ssl crt /tmp/t/cert-key.pem alpn h2,http/1.1 \
                 ssl-min-ver TLSv1.2\n"
            ),
            "{haproxy}"
        );
        let apache = config(PeerKind::Apache, &o);
        for line in [
            "/mod_ssl.so\n",
            "/mod_http2.so\n",
            "SSLEngine on\n",
            "SSLCertificateFile /tmp/t/cert.pem\n",
            "SSLCertificateKeyFile /tmp/t/key.pem\n",
            "SSLSessionCache shmcb:/tmp/x/run/ssl_scache(512000)\n",
            "SSLProtocol -all +TLSv1.2 +TLSv1.3\n",
            "Protocols h2 http/1.1\n",
        ] {
            assert!(apache.contains(line), "{line:?} in\n{apache}");
        }
        // The static-file configs too.
        let files = PeerOptions {
            static_root: Some(PathBuf::from("/tmp/docroot")),
            ..o.clone()
        };
        assert!(
            config(PeerKind::Nginx, &files).contains("    listen 127.0.0.1:28090 ssl http2;\n")
        );
        let ours = config(PeerKind::FcgiProxy, &files);
        let cfg = fcgi_proxy::config::Config::from_toml_str(&ours, "proxy.toml").unwrap();
        assert!(cfg.front_listeners().unwrap()[0].tls.is_some(), "{ours}");

        // Without TLS nothing of it.
        let plain = PeerOptions::default();
        for k in PeerKind::ALL {
            let c = config(k, &plain);
            for tls in ["ssl", "SSL", "[[listener]]", "cert", "h2", "Protocols"] {
                assert!(!c.contains(tls), "{}: {tls} in\n{c}", k.name());
            }
        }
        let cfg = fcgi_proxy::config::Config::from_toml_str(
            &config(PeerKind::FcgiProxy, &plain),
            "proxy.toml",
        )
        .unwrap();
        assert!(cfg.front_listeners().unwrap()[0].tls.is_none());
    }

    #[test]
    fn static_root_serves_files_without_the_backend() {
        let o = PeerOptions {
            static_root: Some(PathBuf::from("/tmp/docroot")),
            ..PeerOptions::default()
        };
        let ours = config(PeerKind::FcgiProxy, &o);
        assert!(
            ours.contains("[[site]]\nroot = \"/tmp/docroot\"\n"),
            "{ours}"
        );
        assert!(
            !ours.contains("[[route]]") && !ours.contains("php"),
            "{ours}"
        );
        let nginx = config(PeerKind::Nginx, &o);
        assert!(nginx.contains("    root /tmp/docroot;\n"), "{nginx}");
        assert!(nginx.contains("  sendfile on;\n"), "{nginx}");
        let apache = config(PeerKind::Apache, &o);
        assert!(apache.contains("DocumentRoot /tmp/docroot\n"), "{apache}");
        assert!(apache.contains("mod_mpm_event.so"), "{apache}");
        for k in [PeerKind::Nginx, PeerKind::Apache] {
            let c = config(k, &o);
            assert!(c.contains("127.0.0.1:28090"), "{c}");
            for proxying in ["9000", "fcgi://", "fastcgi_pass", "ProxyPass", "[[route]]"] {
                assert!(!c.contains(proxying), "{}: {proxying} in\n{c}", k.name());
            }
        }
        // Without a static root nothing changes.
        let apache = config(PeerKind::Apache, &PeerOptions::default());
        assert!(
            apache.contains("DocumentRoot /tmp/x/docroot\nProxyPass \"/\""),
            "{apache}"
        );
        assert!(!config(PeerKind::Nginx, &PeerOptions::default()).contains("sendfile"));
    }

    /// A PHP site: each target looks the script up under the document root before the backend
    /// gets it, as its users' configuration does, and forwards nothing else.
    #[test]
    fn php_site_looks_scripts_up_before_passing_them() {
        let o = PeerOptions {
            php_site: true,
            document_root: "/tmp/site".to_owned(),
            backend_keepalive: None,
            ..PeerOptions::default()
        };
        let ours = config(PeerKind::FcgiProxy, &o);
        assert!(
            ours.contains("[[site]]\nroot = \"/tmp/site\"\nphp = \"fcgi://127.0.0.1:9000\"\n"),
            "{ours}"
        );
        assert!(!ours.contains("[[route]]"), "{ours}");
        let nginx = config(PeerKind::Nginx, &o);
        for line in [
            "    root /tmp/site;\n",
            "    location ~ \\.php$ {\n",
            "      try_files $fastcgi_script_name =404;\n",
            "      include /etc/nginx/fastcgi.conf;\n",
            "      fastcgi_pass fcgi_backend;\n",
        ] {
            assert!(nginx.contains(line), "{line} in\n{nginx}");
        }
        assert!(
            !nginx.contains("location / ") && !nginx.contains("keepalive 64"),
            "{nginx}"
        );
        let apache = config(PeerKind::Apache, &o);
        assert!(apache.contains("DocumentRoot /tmp/site\n"), "{apache}");
        assert!(
            apache.contains("    SetHandler \"proxy:fcgi://127.0.0.1:9000\"\n"),
            "{apache}"
        );
        assert!(
            !apache.contains("ProxyPass") && !apache.contains("enablereuse"),
            "{apache}"
        );
        // Reuse asked for: Apache's worker for the handler's URL gets it.
        let apache = config(
            PeerKind::Apache,
            &PeerOptions {
                backend_keepalive: Some(true),
                ..o
            },
        );
        assert!(
            apache.contains("<Proxy \"fcgi://127.0.0.1:9000\">\n    ProxySet enablereuse=on\n"),
            "{apache}"
        );
    }
}
