//! The configuration model shared by the TOML loader and the Apache importer.

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::{serde_duration, serde_opt_duration};
use super::expr::{FcgiSetEnvIf, SetEnv, SetEnvIf};
use super::site::{Site, VirtualHost};
use super::url::{Target, WorkerUrl};
use crate::uri::EncodedSlashes;

/// Where something was defined: file and line (for messages).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: the whole file (an `.htaccess` file's own section).
        if self.line == 0 {
            return f.write_str(&self.file);
        }
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The whole configuration. TOML spelling in the field docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `listen = ["127.0.0.1:8080", "[::1]:8080", "8080"]` (Apache `Listen`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// `server_name = "example.com[:port]"` (Apache `ServerName`): SERVER_NAME/SERVER_PORT when
    /// the request has no Host. Default: the local address of the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// `server_admin` (SERVER_ADMIN; Apache prints `[no address given]` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_admin: Option<String>,
    /// `document_root` (DOCUMENT_ROOT, CONTEXT_DOCUMENT_ROOT, PATH_TRANSLATED prefix).
    #[serde(default = "default_document_root")]
    pub document_root: String,
    /// Server-wide `ProxyFCGIBackendType` (default FPM).
    #[serde(default)]
    pub backend_type: BackendType,
    /// Server-wide `CGIPassAuth` (default off).
    #[serde(default)]
    pub pass_authorization: bool,
    /// `AllowEncodedSlashes` (off | on | nodecode).
    #[serde(default)]
    pub allow_encoded_slashes: EncodedSlashes,
    /// `MergeSlashes` (default true).
    #[serde(default = "yes")]
    pub merge_slashes: bool,
    /// `[timeouts]`.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// `[limits]`.
    #[serde(default)]
    pub limits: Limits,
    /// Server-level `[[setenvif]]` rules (run before route-level ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setenvif: Vec<SetEnvIf>,
    /// Server-level `[[setenv]]` (Apache `SetEnv`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setenv: Vec<SetEnv>,
    /// Server-level `[[fcgi_setenvif]]` (`ProxyFCGISetEnvIf`; run before route-level ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fcgi_setenvif: Vec<FcgiSetEnvIf>,
    /// `[[route]]`, in order; the first match wins.
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    /// `[[balancer]]`.
    #[serde(default, rename = "balancer", skip_serializing_if = "Vec::is_empty")]
    pub balancers: Vec<Balancer>,
    /// `admin_listen = "127.0.0.1:9180"`: serve `/metrics` (Prometheus text) and `/status`
    /// (JSON, read-only, like balancer-manager) on this address. Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// `workers = 4`: serving threads, each with its own runtime and its own listening socket
    /// (SO_REUSEPORT) on every address, so a connection and its backend exchanges stay on one
    /// thread. Default: the number of available cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// `filesystem_lookups = "auto" | "pool" | "serving-thread"`: where a site's filesystem
    /// lookups (mapping a request to a file, opening it) run. `auto`: on the serving thread
    /// while every mounted filesystem is local, else in the blocking pool; `pool`: always in
    /// the pool; `serving-thread`: always on the serving thread.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub filesystem_lookups: crate::mounts::LookupMode,
    /// `[[listener]]`: addresses served with TLS, or with HTTP/2 without it (`listen`
    /// addresses are plain HTTP/1.1).
    #[serde(default, rename = "listener", skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<super::tls::Listener>,
    /// `[access_log]` (Apache `CustomLog` with its `LogFormat`): format and file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<super::log::AccessLog>,
    /// `[error_log]` (Apache `ErrorLog` and `LogLevel`): the proxy's own messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_log: Option<super::log::ErrorLog>,
    /// TLS of this server (Apache `SSLEngine on` with `SSLCertificateFile`, ...): in a
    /// `<VirtualHost>`, the certificate of the names it serves (SNI).
    #[serde(skip)]
    pub tls: Option<super::tls::TlsConfig>,
    /// Apache `Protocols` (mod_http2) of this server: `h2`, `h2c`, `http/1.1`.
    #[serde(skip)]
    pub protocols: Option<Vec<String>>,
    /// The file this came from (for messages).
    #[serde(skip)]
    pub origin: Option<String>,
    /// Filesystem sections, aliases and handlers (Apache configurations only).
    /// `[[site]]` tables of a TOML configuration (turned into `site` and `vhosts` on load).
    #[serde(default, rename = "site", skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<super::site_toml::SiteSpec>,
    #[serde(skip)]
    pub site: Site,
    /// Name-based virtual hosts (Apache configurations only), each with its whole effective
    /// configuration. Empty: every request is served by this configuration.
    #[serde(skip)]
    pub vhosts: Vec<VirtualHost>,
}

fn yes() -> bool {
    true
}

fn is_auto(m: &crate::mounts::LookupMode) -> bool {
    *m == crate::mounts::LookupMode::Auto
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Default DocumentRoot (Debian's).
pub fn default_document_root() -> String {
    "/var/www/html".to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            server_name: None,
            server_admin: None,
            document_root: default_document_root(),
            backend_type: BackendType::Fpm,
            pass_authorization: false,
            allow_encoded_slashes: EncodedSlashes::Off,
            merge_slashes: true,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            setenvif: Vec::new(),
            setenv: Vec::new(),
            fcgi_setenvif: Vec::new(),
            routes: Vec::new(),
            balancers: Vec::new(),
            admin_listen: None,
            workers: None,
            filesystem_lookups: crate::mounts::LookupMode::Auto,
            listeners: Vec::new(),
            access_log: None,
            error_log: None,
            tls: None,
            protocols: None,
            origin: None,
            sites: Vec::new(),
            site: Site::default(),
            vhosts: Vec::new(),
        }
    }
}

/// `ProxyFCGIBackendType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BackendType {
    /// SCRIPT_FILENAME keeps the `proxy:fcgi://host:port` prefix (PHP-FPM strips it).
    #[default]
    #[serde(rename = "fpm", alias = "FPM")]
    Fpm,
    /// SCRIPT_FILENAME is the path only.
    #[serde(rename = "generic", alias = "GENERIC")]
    Generic,
}

impl fmt::Display for BackendType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendType::Fpm => "FPM",
            BackendType::Generic => "GENERIC",
        })
    }
}

/// `[timeouts]`. Durations are `"5s"`, `"250ms"` or numbers of seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Deadline for the whole request head (mod_reqtimeout `header=20`). Default 20s.
    #[serde(default = "d20", with = "serde_duration")]
    pub header_read: Duration,
    /// Idle timeout while reading a request body (Apache `Timeout`). Default 60s.
    #[serde(default = "d60", with = "serde_duration")]
    pub body_read: Duration,
    /// Idle timeout while writing to the client (Apache `Timeout`). Default 60s.
    #[serde(default = "d60", with = "serde_duration")]
    pub client_write: Duration,
    /// Idle client keep-alive (Apache `KeepAliveTimeout`). Default 5s.
    #[serde(default = "d5", with = "serde_duration")]
    pub keep_alive: Duration,
    /// Default backend I/O timeout (Apache `ProxyTimeout`, else `Timeout`). Default 60s.
    #[serde(default = "d60", with = "serde_duration")]
    pub backend_io: Duration,
    /// Default backend connect timeout. Default: `backend_io`.
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_connect: Option<Duration>,
    /// A TLS handshake must be complete this long after the accept, or the connection is
    /// closed (and its slot freed). Default 10s.
    #[serde(default = "d10", with = "serde_duration")]
    pub tls_handshake: Duration,
    /// At SIGTERM, how long in-flight requests may take to finish before the process exits
    /// (systemd's `TimeoutStopSec` should be longer). Default 30s.
    #[serde(default = "d30", with = "serde_duration")]
    pub shutdown_grace: Duration,
}

fn d30() -> Duration {
    Duration::from_secs(30)
}

fn d10() -> Duration {
    Duration::from_secs(10)
}

fn d5() -> Duration {
    Duration::from_secs(5)
}
fn d20() -> Duration {
    Duration::from_secs(20)
}
fn d60() -> Duration {
    Duration::from_secs(60)
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: d20(),
            body_read: d60(),
            client_write: d60(),
            keep_alive: d5(),
            backend_io: d60(),
            backend_connect: None,
            tls_handshake: d10(),
            shutdown_grace: d30(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest request line (Apache `LimitRequestLine`, 8190). Also bounds the target.
    #[serde(default = "l8190")]
    pub max_request_line: usize,
    /// Longest header line (Apache `LimitRequestFieldSize`, 8190).
    #[serde(default = "l8190")]
    pub max_header_line: usize,
    /// Most request header fields (Apache `LimitRequestFields`, 100).
    #[serde(default = "l100")]
    pub max_headers: usize,
    /// Total bytes of the request head. Default 64 KiB.
    #[serde(default = "l65536")]
    pub max_header_bytes: usize,
    /// Largest chunked request body buffered to compute CONTENT_LENGTH. Default 8 MiB.
    #[serde(default = "l8m")]
    pub max_body_buffer: u64,
    /// Largest request body (Apache `LimitRequestBody`, 1 GiB since 2.4.54). 0 = unlimited.
    #[serde(default = "l1g")]
    pub max_body: u64,
    /// Requests per client connection (Apache `MaxKeepAliveRequests`, 100). 0 = unlimited.
    #[serde(default = "l100u32")]
    pub max_keep_alive_requests: u32,
    /// Client keep-alive (Apache `KeepAlive`, on).
    #[serde(default = "yes")]
    pub keep_alive: bool,
    /// Hard bound on backend connections per worker when a route/member sets no `max`. Below
    /// it the pool learns the backend's real capacity (pool.rs), so this only bounds a backend
    /// that keeps accepting.
    #[serde(default = "l256")]
    pub default_max_connections: u32,
    /// Client connections open at once; at the limit the listeners stop accepting (new
    /// connections wait in the kernel's backlog) until one closes. 0: derived from the
    /// open-file limit ([`Limits::client_connections`]).
    #[serde(default)]
    pub max_connections: u32,
    /// Requests waiting for a connection to one backend (its pool at its cap or its learned
    /// limit); one more is answered 503 at once instead of queueing. 0: unlimited.
    #[serde(default = "l1024u32")]
    pub max_waiting: u32,
    /// All request bodies buffered in memory at once, in bytes (bodies read before the backend
    /// is contacted: small ones and chunked ones). A body that would go beyond is answered 503.
    /// 0: unlimited.
    #[serde(default = "l256m")]
    pub body_buffer_budget: u64,
}

/// The most client connections [`Limits::client_connections`] derives from the open-file limit.
pub const AUTO_MAX_CONNECTIONS: u64 = 65536;

impl Limits {
    /// `max_connections`, or when 0, what the open-file limit `nofile` allows: an eighth and
    /// 128 more kept for backend connections, logs and files, at most
    /// [`AUTO_MAX_CONNECTIONS`], at least 16.
    pub fn client_connections(&self, nofile: u64) -> usize {
        if self.max_connections > 0 {
            return self.max_connections as usize;
        }
        let spare = nofile / 8 + 128;
        nofile.saturating_sub(spare).clamp(16, AUTO_MAX_CONNECTIONS) as usize
    }
}

fn l8190() -> usize {
    8190
}
fn l100() -> usize {
    100
}
fn l100u32() -> u32 {
    100
}
fn l256() -> u32 {
    256
}
fn l65536() -> usize {
    65536
}
fn l1024u32() -> u32 {
    1024
}
fn l256m() -> u64 {
    256 * 1024 * 1024
}
fn l8m() -> u64 {
    8 * 1024 * 1024
}
fn l1g() -> u64 {
    1024 * 1024 * 1024
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: l8190(),
            max_header_line: l8190(),
            max_headers: l100(),
            max_header_bytes: l65536(),
            max_body_buffer: l8m(),
            max_body: l1g(),
            max_keep_alive_requests: l100u32(),
            keep_alive: true,
            default_max_connections: l256(),
            max_connections: 0,
            max_waiting: l1024u32(),
            body_buffer_budget: l256m(),
        }
    }
}

/// `flushpackets=` of a worker. The proxy writes response data to the client as it arrives
/// from the backend, which is `on`; `off` (Apache's default: data collects until 4 KiB or the
/// end of the response) and `auto` (collect until the backend is silent for `flushwait`) are
/// refused by [`Config::validate`](super::Config::validate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushPackets {
    /// Every STDOUT record's data goes to the client at once (the default here).
    #[default]
    On,
    /// Apache: let output collect, written at its buffer size (refused).
    Off,
    /// Apache: flush when no more backend data arrives within `flushwait` (refused).
    Auto,
}

impl FlushPackets {
    /// Why a value cannot be had here, if it cannot.
    pub fn unsupported(self) -> Option<&'static str> {
        match self {
            FlushPackets::On => None,
            FlushPackets::Off | FlushPackets::Auto => Some(
                "response data is written to the client as soon as it arrives from the backend \
                 (what flushpackets=on does); there is no mode that holds it back",
            ),
        }
    }
}

impl fmt::Display for FlushPackets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlushPackets::On => "on",
            FlushPackets::Off => "off",
            FlushPackets::Auto => "auto",
        })
    }
}

/// Worker (backend pool) parameters, set per route and per balancer member. TOML: a
/// `worker` sub-table, e.g. `worker.max = 10`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerParams {
    /// Keep backend connections open (FCGI_KEEP_CONN) and reuse them. Default **true**
    /// (product decision; Apache's `enablereuse=on`); `disablereuse=on` → false.
    #[serde(default = "yes")]
    pub reuse: bool,
    /// Pool cap: at most this many concurrent backend connections (Apache `max=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// Idle pooled connections at least this old are closed, not reused (Apache `ttl=`).
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    /// Backend I/O timeout (Apache `timeout=`). Default: `timeouts.backend_io`.
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Connect timeout (Apache `connectiontimeout=`). Default: the I/O timeout.
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub connection_timeout: Option<Duration>,
    /// Wait for a free pool slot at most this long, then 503 (Apache `acquire=`, in ms there).
    /// Default: wait as long as the request lives.
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub acquire: Option<Duration>,
    /// Error-state hold-off for balancer members (Apache `retry=`, default 60s).
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry: Option<Duration>,
    /// `flushpackets=`: only `on`, which is what the proxy does (see [`FlushPackets`]).
    #[serde(default)]
    pub flush_packets: FlushPackets,
    /// `flushwait=`: refused, it applies only to `flushpackets=auto`.
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub flush_wait: Option<Duration>,
}

impl Default for WorkerParams {
    fn default() -> Self {
        WorkerParams {
            reuse: true,
            max: None,
            ttl: None,
            timeout: None,
            connection_timeout: None,
            acquire: None,
            retry: None,
            flush_packets: FlushPackets::On,
            flush_wait: None,
        }
    }
}

impl WorkerParams {
    /// Resolve defaults against the server settings.
    pub fn effective(&self, cfg: &Config) -> EffectiveWorker {
        let io = self.timeout.unwrap_or(cfg.timeouts.backend_io);
        EffectiveWorker {
            reuse: self.reuse,
            max: self.max.unwrap_or(cfg.limits.default_max_connections),
            ttl: self.ttl,
            io_timeout: io,
            connect_timeout: self
                .connection_timeout
                .or(cfg.timeouts.backend_connect)
                .unwrap_or(io),
            acquire: self.acquire,
            retry: self.retry.unwrap_or(Duration::from_secs(60)),
        }
    }
}

/// Worker parameters with every default resolved: what the pool and exchange use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveWorker {
    pub reuse: bool,
    pub max: u32,
    pub ttl: Option<Duration>,
    pub io_timeout: Duration,
    pub connect_timeout: Duration,
    pub acquire: Option<Duration>,
    pub retry: Duration,
}

/// A compiled regular expression (matched against bytes) that remembers its source.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    nocase: bool,
    regex: regex::bytes::Regex,
}

impl Pattern {
    /// Compile `source` (PCRE-like syntax of the `regex` crate; ASCII semantics like PCRE's
    /// default; `.` matches any byte except `\n`).
    pub fn new(source: &str, nocase: bool) -> Result<Pattern, String> {
        let regex = regex::bytes::RegexBuilder::new(source)
            .unicode(false)
            .case_insensitive(nocase)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("invalid regular expression '{source}': {e}"))?;
        Ok(Pattern {
            source: source.to_owned(),
            nocase,
            regex,
        })
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Case-insensitive?
    pub fn nocase(&self) -> bool {
        self.nocase
    }

    /// The compiled regex.
    pub fn regex(&self) -> &regex::bytes::Regex {
        &self.regex
    }

    /// Replace the remembered source text (the compiled regex is unchanged).
    pub(crate) fn set_source(&mut self, source: &str) {
        self.source = source.to_owned();
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Pattern({:?}{})",
            self.source,
            if self.nocase { ", nocase" } else { "" }
        )
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.nocase == other.nocase
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::new(&s, false).map_err(serde::de::Error::custom)
    }
}

/// A route: `ProxyPass`/`ProxyPassMatch` plus the `<Location>` settings that apply to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Prefix match (`ProxyPass path url`), Apache `alias_match` semantics. Exactly one of
    /// `path` and `regex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Regex match on the decoded path (`ProxyPassMatch`), `$0`..`$9` in the target path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<Pattern>,
    /// `fcgi://host:port/path`, `unix:/sock|fcgi://host/path`, `balancer://name/path` or `!`.
    pub target: Target,
    /// Shorthand for a route-level SetEnvIf setting `proxy-fcgi-pathinfo` on every request:
    /// `first-dot`, `last-dot`, `full`, `unescape`, or any other value (= `1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pathinfo: Option<String>,
    /// `ProxyFCGIBackendType` for this route (default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<BackendType>,
    /// `CGIPassAuth` for this route (default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_authorization: Option<bool>,
    /// Route-level `SetEnvIf` rules (after the server's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setenvif: Vec<SetEnvIf>,
    /// Route-level `SetEnv` (after the server's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setenv: Vec<SetEnv>,
    /// Route-level `ProxyFCGISetEnvIf` (after the server's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fcgi_setenvif: Vec<FcgiSetEnvIf>,
    /// Apache `nocanon`: pass the raw (still encoded) request path instead of re-encoding the
    /// decoded one. A raw control character or space (and `?` for FPM) then answers 403.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nocanon: bool,
    /// Apache `noquery`: cut SCRIPT_FILENAME at the first `?`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub noquery: bool,
    /// Worker parameters (`worker.max = 10`, ...). Ignored for balancer targets (members carry
    /// their own) and exclusions.
    #[serde(default)]
    pub worker: WorkerParams,
    /// Where the route was defined.
    #[serde(skip)]
    pub origin: Option<Origin>,
}

impl Route {
    /// A prefix route with defaults.
    pub fn prefix(path: &str, target: Target) -> Route {
        Route {
            path: Some(path.to_owned()),
            regex: None,
            target,
            pathinfo: None,
            backend_type: None,
            pass_authorization: None,
            setenvif: Vec::new(),
            setenv: Vec::new(),
            fcgi_setenvif: Vec::new(),
            nocanon: false,
            noquery: false,
            worker: WorkerParams::default(),
            origin: None,
        }
    }

    /// A regex route with defaults.
    pub fn regex(regex: Pattern, target: Target) -> Route {
        Route {
            path: None,
            regex: Some(regex),
            ..Route::prefix("/", target)
        }
    }

    /// Effective backend type.
    pub fn backend_type(&self, cfg: &Config) -> BackendType {
        self.backend_type.unwrap_or(cfg.backend_type)
    }

    /// Effective `CGIPassAuth`.
    pub fn pass_authorization(&self, cfg: &Config) -> bool {
        self.pass_authorization.unwrap_or(cfg.pass_authorization)
    }

    /// `"prefix /x/"` or `"regex ^/x"` for messages.
    pub fn describe_match(&self) -> String {
        match (&self.path, &self.regex) {
            (Some(p), _) => format!("prefix {p}"),
            (None, Some(r)) => format!("regex {}", r.as_str()),
            (None, None) => "(no match)".to_owned(),
        }
    }
}

/// Balancer method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbMethod {
    /// Weighted round robin with credits (mod_lbmethod_byrequests).
    #[default]
    Byrequests,
    /// Fewest in-flight requests, ties by credits (mod_lbmethod_bybusyness).
    Bybusyness,
}

impl fmt::Display for LbMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LbMethod::Byrequests => "byrequests",
            LbMethod::Bybusyness => "bybusyness",
        })
    }
}

/// A `<Proxy balancer://name>` group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balancer {
    /// The name after `balancer://` (compared case-insensitively; stored lower-case).
    pub name: String,
    /// `lbmethod`.
    #[serde(default)]
    pub lbmethod: LbMethod,
    /// `[[balancer.member]]`, in order.
    #[serde(default, rename = "member")]
    pub members: Vec<Member>,
    /// `maxattempts`: failover attempts (default: members − 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// `stickysession`: `COOKIE` or `COOKIE|PARAM`. A request's session value comes from the
    /// URL path parameter `PARAM=value` (`PARAM` is `COOKIE` without a `|`), else from the cookie
    /// `COOKIE`; the part after the first `sticky_session_sep` is the route of the member it
    /// goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_session: Option<String>,
    /// `stickysessionsep`: the character before the route in a session value (default `.`);
    /// `"off"`: the whole value is the route.
    #[serde(default, skip_serializing_if = "StickySep::is_default")]
    pub sticky_session_sep: StickySep,
    /// `scolonpathdelim`: a `;` also ends a session value found in the URL.
    #[serde(default, skip_serializing_if = "is_false")]
    pub scolon_path_delim: bool,
    /// `nofailover`: a request whose session route names an unusable member gets 503 instead of
    /// going to another member. Needs `sticky_session`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nofailover: bool,
    /// `forcerecovery` (default on).
    #[serde(default = "yes")]
    pub force_recovery: bool,
    /// `timeout`: when no member is usable, wait up to this long for one to become usable (a
    /// member in error whose `retry` passes), then 503 (default: don't wait).
    #[serde(
        default,
        with = "serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Where the balancer was defined.
    #[serde(skip)]
    pub origin: Option<Origin>,
}

impl Balancer {
    /// An empty byrequests balancer.
    pub fn new(name: &str) -> Balancer {
        Balancer {
            name: name.to_ascii_lowercase(),
            lbmethod: LbMethod::Byrequests,
            members: Vec::new(),
            max_attempts: None,
            sticky_session: None,
            sticky_session_sep: StickySep::default(),
            scolon_path_delim: false,
            nofailover: false,
            force_recovery: true,
            timeout: None,
            origin: None,
        }
    }

    /// `balancer://name` (BALANCER_NAME).
    pub fn url_name(&self) -> String {
        format!("balancer://{}", self.name)
    }

    /// The cookie and URL parameter names of `sticky_session` (Apache splits at the first `|`;
    /// without one both are the same name).
    pub fn sticky_names(&self) -> Option<(&str, &str)> {
        let s = self.sticky_session.as_deref()?;
        Some(s.split_once('|').unwrap_or((s, s)))
    }
}

/// `stickysessionsep`: one character, or none (`"off"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StickySep(pub Option<char>);

impl Default for StickySep {
    fn default() -> Self {
        StickySep(Some('.'))
    }
}

impl StickySep {
    fn is_default(&self) -> bool {
        *self == StickySep::default()
    }

    /// Apache's values: a single character, or `Off`.
    pub fn parse(v: &str) -> Result<StickySep, String> {
        let mut chars = v.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Ok(StickySep(Some(c))),
            _ if v.eq_ignore_ascii_case("off") => Ok(StickySep(None)),
            _ => Err(format!(
                "stickysessionsep must be a single character or off, found '{v}'"
            )),
        }
    }
}

impl fmt::Display for StickySep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(c) => write!(f, "{c}"),
            None => f.write_str("off"),
        }
    }
}

impl Serialize for StickySep {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for StickySep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StickySep::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A balancer member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// `fcgi://…` or `unix:…|fcgi://…`.
    pub url: WorkerUrl,
    /// `loadfactor` 1..100, decimals allowed (Apache multiplies by 100 internally).
    #[serde(default)]
    pub loadfactor: LoadFactor,
    /// `lbset` 0..99 (lower sets are tried first).
    #[serde(default)]
    pub lbset: u8,
    /// `status` flags, e.g. `"+H"` (hot standby: used only when no other member of its lbset
    /// is usable), `"+R"` (hot spare: takes the place of one unusable member of its lbset),
    /// `"D"` (disabled), `"N"` (drain: only sessions routed to it).
    #[serde(default)]
    pub status: MemberStatus,
    /// `route`: the session route that sends a request here (sticky sessions), and the value
    /// of BALANCER_WORKER_ROUTE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// `redirect`: the route of the member that takes the sessions routed to this one while it
    /// is unusable (disabled, stopped, in error). Needs the balancer's `sticky_session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// Worker parameters of this member.
    #[serde(default)]
    pub worker: WorkerParams,
}

impl Member {
    /// A member with defaults.
    pub fn new(url: WorkerUrl) -> Member {
        Member {
            url,
            loadfactor: LoadFactor::default(),
            lbset: 0,
            status: MemberStatus::default(),
            route: None,
            redirect: None,
            worker: WorkerParams::default(),
        }
    }
}

/// `loadfactor`, stored in hundredths (Apache's `lbfactor`): 100..=10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LoadFactor(pub u32);

impl Default for LoadFactor {
    fn default() -> Self {
        LoadFactor(100)
    }
}

impl LoadFactor {
    /// Parse `"1"`, `"70"`, `"1.5"` (at most two decimals, Apache's `ap_proxy_parse_wstatus`
    /// style). Range 1..100.
    pub fn parse(s: &str) -> Result<LoadFactor, String> {
        let s = s.trim();
        let bad = || format!("loadfactor must be a number from 1 to 100, found '{s}'");
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || int.len() > 4
        {
            return Err(bad());
        }
        let mut hundredths: u32 = int.parse::<u32>().map_err(|_| bad())? * 100;
        let mut digits = frac.bytes();
        if let Some(d) = digits.next() {
            hundredths += u32::from(d - b'0') * 10;
        }
        if let Some(d) = digits.next() {
            hundredths += u32::from(d - b'0');
        }
        LoadFactor::from_hundredths(hundredths).ok_or_else(bad)
    }

    /// Validated constructor.
    pub fn from_hundredths(h: u32) -> Option<LoadFactor> {
        (100..=10_000).contains(&h).then_some(LoadFactor(h))
    }

    /// The internal `lbfactor` (loadfactor × 100).
    pub fn lbfactor(self) -> u32 {
        self.0
    }
}

impl fmt::Display for LoadFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(100) {
            write!(f, "{}", self.0 / 100)
        } else {
            let s = format!("{}.{:02}", self.0 / 100, self.0 % 100);
            f.write_str(s.trim_end_matches('0'))
        }
    }
}

impl Serialize for LoadFactor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(100) {
            s.serialize_u32(self.0 / 100)
        } else {
            s.serialize_f64(f64::from(self.0) / 100.0)
        }
    }
}

impl<'de> Deserialize<'de> for LoadFactor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LoadFactor;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a load factor from 1 to 100")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<LoadFactor, E> {
                u32::try_from(v)
                    .ok()
                    .and_then(|v| v.checked_mul(100))
                    .and_then(LoadFactor::from_hundredths)
                    .ok_or_else(|| {
                        E::custom(format!("loadfactor must be from 1 to 100, found {v}"))
                    })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<LoadFactor, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<LoadFactor, E> {
                if !(1.0..=100.0).contains(&v) {
                    return Err(E::custom(format!(
                        "loadfactor must be from 1 to 100, found {v}"
                    )));
                }
                LoadFactor::from_hundredths((v * 100.0).round() as u32)
                    .ok_or_else(|| E::custom("loadfactor out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LoadFactor, E> {
                LoadFactor::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Member status flags (Apache `status=`): `D` disabled, `S` stopped, `I` ignore errors,
/// `H` hot standby, `R` hot spare, `E` in error, `N` drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberStatus {
    pub disabled: bool,
    pub stopped: bool,
    pub ignore_errors: bool,
    pub hot_standby: bool,
    pub hot_spare: bool,
    pub in_error: bool,
    pub drain: bool,
}

impl MemberStatus {
    /// Apply a `status=` value such as `+H`, `D`, `-I+H` to the flags (Apache: `+` sets, `-`
    /// clears, a bare letter sets).
    pub fn apply(&mut self, spec: &str) -> Result<(), String> {
        let mut set = true;
        for c in spec.chars() {
            match c {
                '+' => set = true,
                '-' => set = false,
                _ => {
                    let flag = match c.to_ascii_uppercase() {
                        'D' => &mut self.disabled,
                        'S' => &mut self.stopped,
                        'I' => &mut self.ignore_errors,
                        'H' => &mut self.hot_standby,
                        'R' => &mut self.hot_spare,
                        'E' => &mut self.in_error,
                        'N' => &mut self.drain,
                        _ => {
                            return Err(format!(
                                "unknown status flag '{c}' in '{spec}' (use D, S, I, H, R, E or N)"
                            ));
                        }
                    };
                    *flag = set;
                }
            }
        }
        Ok(())
    }

    /// Parse a status spec from scratch.
    pub fn parse(spec: &str) -> Result<MemberStatus, String> {
        let mut s = MemberStatus::default();
        s.apply(spec)?;
        Ok(s)
    }

    /// Usable for normal balancing (none of D, S, E).
    pub fn usable(&self) -> bool {
        !(self.disabled || self.stopped || self.in_error)
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        for (on, c) in [
            (self.disabled, 'D'),
            (self.stopped, 'S'),
            (self.ignore_errors, 'I'),
            (self.hot_standby, 'H'),
            (self.hot_spare, 'R'),
            (self.in_error, 'E'),
            (self.drain, 'N'),
        ] {
            if on {
                s.push('+');
                s.push(c);
            }
        }
        if s.is_empty() {
            f.write_str("ok")
        } else {
            f.write_str(&s)
        }
    }
}

impl Serialize for MemberStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.to_string();
        s.serialize_str(if text == "ok" { "" } else { &text })
    }
}

impl<'de> Deserialize<'de> for MemberStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MemberStatus::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadfactor_parsing() {
        assert_eq!(LoadFactor::parse("1").unwrap().lbfactor(), 100);
        assert_eq!(LoadFactor::parse("70").unwrap().lbfactor(), 7000);
        assert_eq!(LoadFactor::parse("1.5").unwrap().lbfactor(), 150);
        assert_eq!(LoadFactor::parse("2.25").unwrap().lbfactor(), 225);
        assert_eq!(LoadFactor::parse("100").unwrap().lbfactor(), 10000);
        for bad in ["0", "0.5", "101", "100.01", "-1", "x", "", "1e2", ".5"] {
            assert!(LoadFactor::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(LoadFactor(150).to_string(), "1.5");
        assert_eq!(LoadFactor(7000).to_string(), "70");
    }

    #[test]
    fn status_flags() {
        let s = MemberStatus::parse("+H").unwrap();
        assert!(s.hot_standby && s.usable());
        let s = MemberStatus::parse("D").unwrap();
        assert!(s.disabled && !s.usable());
        let mut s = MemberStatus::parse("+H+I").unwrap();
        s.apply("-H").unwrap();
        assert!(!s.hot_standby && s.ignore_errors);
        assert!(MemberStatus::parse("+X").is_err());
        assert_eq!(MemberStatus::parse("RN").unwrap().to_string(), "+R+N");
    }

    #[test]
    fn effective_worker_defaults() {
        let cfg = Config::default();
        let e = WorkerParams::default().effective(&cfg);
        assert!(e.reuse);
        assert_eq!(e.max, 256);
        assert_eq!(e.io_timeout, Duration::from_secs(60));
        assert_eq!(e.connect_timeout, Duration::from_secs(60));
        assert_eq!(e.retry, Duration::from_secs(60));
        assert_eq!(e.acquire, None);
        let w = WorkerParams {
            timeout: Some(Duration::from_secs(5)),
            ..WorkerParams::default()
        };
        assert_eq!(w.effective(&cfg).connect_timeout, Duration::from_secs(5));
    }
}
