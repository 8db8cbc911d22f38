//! The scenario model: one TOML file per scenario under `scenarios/<area>/<slug>.toml`.
//!
//! A scenario says what is tested (id, description, the requirement quoted with its source and
//! level), the topology in proxy-neutral terms (routes, reuse, balancer members and methods,
//! pathinfo mode, backend type), the backends (mock scripts, capacities), the client traffic
//! (sequences, concurrency, timed steps), faults at virtual times, and the expectations as sets
//! of acceptable outcomes. Nothing in a scenario is specific to one proxy: a runner translates the
//! topology into the configuration of the proxy under test ([`crate::ours`] for fcgi-proxy).
//!
//! Every scenario also carries `[[mutant]]`s: small edits of the scenario itself (a wrong proxy
//! setting, a different backend behaviour) under which the scenario must FAIL. They prove that
//! the expectations can fail at all.
//!
//! Unknown keys are errors everywhere, so a typo cannot silently weaken a check.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// A parsed scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// `<area>/<slug>`, equal to the file's path under `scenarios/` without `.toml`.
    pub id: String,
    /// What the scenario does, in a sentence or two.
    pub description: String,
    pub level: Level,
    /// The requirement, quoted, with its source.
    pub requirement: Requirement,
    pub topology: Topology,
    #[serde(rename = "backend")]
    pub backends: Vec<Backend>,
    #[serde(rename = "client")]
    pub clients: Vec<Client>,
    #[serde(rename = "fault", default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    pub expect: Expect,
    #[serde(default)]
    pub sim: SimSettings,
    /// Edits under which the scenario must fail.
    #[serde(rename = "mutant", default, skip_serializing_if = "Vec::is_empty")]
    pub mutants: Vec<Mutant>,
}

/// How strong the requirement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
pub enum Level {
    /// A specification says MUST (or the behaviour is what makes the feature work at all).
    #[serde(rename = "MUST")]
    Must,
    /// A specification says SHOULD.
    #[serde(rename = "SHOULD")]
    Should,
    /// What Apache httpd mod_proxy_fcgi does, without a specification behind it.
    #[serde(rename = "COMPAT")]
    Compat,
    /// Informational.
    #[serde(rename = "INFO")]
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::Compat => "COMPAT",
            Level::Info => "INFO",
        })
    }
}

/// The requirement a scenario checks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// The requirement, quoted from its source.
    pub quote: String,
    /// The document, in free text: a specification (`RFC 3875`, `RFC 9110`, `FastCGI 1.0`),
    /// a project's documentation, or a document of this repository named by its path from the
    /// workspace root (`docs/reference/apache.md`: those are checked against the document when
    /// scenario files are loaded, [`Requirement::check_against`]).
    pub source: String,
    /// The section (or anchor) in that document, e.g. `4.1.7` or `5`; several are separated by
    /// commas (`2.3, 3.6`).
    pub section: String,
    /// Where the document can be read (`https://...`), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Requirement {
    /// Whether `file` is meant as one of the suite's own documents (a path under `docs/` or
    /// `scenarios/` ending in `.md`): such a source that names no document of the suite is a
    /// mistake, not free text.
    pub fn names_reference_doc(file: &str) -> bool {
        file.ends_with(".md") && (file.starts_with("docs/") || file.starts_with("scenarios/"))
    }

    /// `RFC 3875 4.1.7`.
    pub fn anchor(&self) -> String {
        format!("{} {}", self.source, self.section)
    }

    /// The repository file the requirement is quoted from (a path from the workspace root), if
    /// its source is one.
    pub fn repository_file(&self) -> Option<&str> {
        self.source.ends_with(".md").then_some(self.source.as_str())
    }

    /// Checks the requirement against the text of its repository file: each section names a
    /// heading of the file (`3.6` matches `### 3.6 SCRIPT_NAME...`, `S1` matches `### S1.
    /// httpoxy`, a whole title matches a heading of that title), and the quote is in the file.
    /// `[...]` in a quote stands for text left out; the pieces around it must appear in order.
    /// Line breaks, list bullets and Markdown decoration (backticks, `*`) are not compared.
    pub fn check_against(&self, doc: &str) -> Result<(), String> {
        let headings: Vec<String> = doc
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| plain(l.trim_start_matches('#')))
            .collect();
        let names = |section: &str| {
            headings.iter().any(|h| {
                h == section
                    || h.strip_prefix(section)
                        .is_some_and(|rest| rest.starts_with(['.', ' ']))
            })
        };
        // A whole title may hold commas itself; otherwise commas separate sections.
        let whole = plain(&self.section);
        let sections: Vec<String> = if names(&whole) {
            vec![whole]
        } else {
            self.section.split(',').map(plain).collect()
        };
        for section in sections {
            if section.is_empty() || !names(&section) {
                return Err(format!(
                    "requirement.section {section:?} is not a heading of {}",
                    self.source
                ));
            }
        }
        let text = plain(doc);
        let mut from = 0;
        for piece in self.quote.split("[...]").map(plain) {
            if piece.is_empty() {
                continue;
            }
            match text[from..].find(&piece) {
                Some(at) => from += at + piece.len(),
                None => {
                    return Err(format!(
                        "requirement.quote: {piece:?} is not in {} (after the earlier pieces)",
                        self.source
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Text as compared by [`Requirement::check_against`]: list bullets, backticks and `*` removed,
/// every run of white space one space.
fn plain(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("- ").unwrap_or(line);
        for word in line.split_whitespace() {
            let word: String = word.chars().filter(|c| !matches!(c, '`' | '*')).collect();
            if word.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&word);
        }
    }
    out
}

/// Routes and balancers, in proxy-neutral terms.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// DOCUMENT_ROOT of the front end (default `/var/www/html`, as in the worked examples of
    /// `docs/reference/apache.md` §3.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_root: Option<String>,
    /// The longest a client may take to send a whole request head (Apache mod_reqtimeout
    /// `header=`, nginx `client_header_timeout`). Default: each proxy's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<Dur>,
    /// How many instances of the proxy under test run with this configuration, each with its
    /// own pools, in front of the same backends (default 1). Clients pick theirs with `proxy`.
    /// In the simulator instance 0 is the host `proxy`, instance `i` the host `proxy{i+1}`.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub proxies: u32,
    #[serde(rename = "route")]
    pub routes: Vec<Route>,
    #[serde(rename = "balancer", default, skip_serializing_if = "Vec::is_empty")]
    pub balancers: Vec<Balancer>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            document_root: None,
            header_timeout: None,
            proxies: 1,
            routes: Vec::new(),
            balancers: Vec::new(),
        }
    }
}

/// The simulator's host name of proxy instance `i` (0-based): `proxy`, `proxy2`, `proxy3`, ...
pub fn proxy_host(i: usize) -> String {
    if i == 0 {
        "proxy".to_string()
    } else {
        format!("proxy{}", i + 1)
    }
}

/// Connection handling towards one backend (a route's own, or a balancer member's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Keep backend connections open (FCGI_KEEP_CONN) and reuse them. Required on every route
    /// with a backend and on every balancer: proxies disagree on the default.
    pub reuse: Option<bool>,
    /// At most this many connections to the backend at once.
    pub max: Option<u32>,
    /// How long a request waits for a free connection when `max` are busy.
    pub acquire: Option<Dur>,
    /// Longest wait for progress from the backend.
    pub timeout: Option<Dur>,
    /// Longest wait for a connection to be established.
    pub connect_timeout: Option<Dur>,
    /// Idle connections older than this are not reused.
    pub ttl: Option<Dur>,
    /// How long a failed balancer member stays out of rotation.
    pub retry: Option<Dur>,
}

impl WorkerSettings {
    /// `self` with unset fields taken from `base`.
    pub fn or(&self, base: &WorkerSettings) -> WorkerSettings {
        WorkerSettings {
            reuse: self.reuse.or(base.reuse),
            max: self.max.or(base.max),
            acquire: self.acquire.or(base.acquire),
            timeout: self.timeout.or(base.timeout),
            connect_timeout: self.connect_timeout.or(base.connect_timeout),
            ttl: self.ttl.or(base.ttl),
            retry: self.retry.or(base.retry),
        }
    }
}

/// A mapping from request paths to a backend or balancer.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Prefix match on the decoded path (Apache `ProxyPass path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Regex match on the decoded path (Apache `ProxyPassMatch`); `$1`.. may appear in
    /// `backend_path`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "match")]
    pub regex: Option<String>,
    /// The backend (a `[[backend]]` name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The balancer (a `[[topology.balancer]]` name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<String>,
    /// The path part of the target URL (`fcgi://host:port/<backend_path>`). Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_path: Option<String>,
    /// Apache's `proxy-fcgi-pathinfo`: `first-dot`, `last-dot`, `full`, `unescape` or any other
    /// value. Absent: PATH_INFO is not computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pathinfo: Option<String>,
    /// `fpm` (SCRIPT_FILENAME keeps the `proxy:fcgi://` prefix) or `generic`. Default `fpm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<BackendType>,
    /// Pass `Authorization` to the backend (Apache `CGIPassAuth`). Default off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_authorization: Option<bool>,
    /// Extra variables set for every request on this route (Apache `SetEnv`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// CGI params the proxy sets last, overriding what it computed (Apache
    /// `ProxyFCGISetEnvIf "true" NAME "value"`, nginx `fastcgi_param NAME value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fcgi_set: BTreeMap<String, String>,
    /// CGI params the proxy removes last (Apache `ProxyFCGISetEnvIf "true" !NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fcgi_unset: Vec<String>,
    /// Pass response data to the client as it arrives from the backend (Apache
    /// `flushpackets=on`, nginx `fastcgi_buffering off`, Caddy `flush_interval -1`, lighttpd
    /// `server.stream-response-body = 2`; fcgi-proxy always does). Default: each proxy's own
    /// behaviour.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flush: bool,
    /// Keep backend connections open (FCGI_KEEP_CONN) and reuse them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<bool>,
    /// At most this many connections to the backend at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// How long a request waits for a free connection when `max` are busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire: Option<Dur>,
    /// Longest wait for progress from the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Longest wait for a connection to be established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Dur>,
    /// Idle connections older than this are not reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Dur>,
    /// How long a failed balancer member stays out of rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Dur>,
}

impl Route {
    /// The connection settings given here.
    pub fn worker(&self) -> WorkerSettings {
        WorkerSettings {
            reuse: self.reuse,
            max: self.max,
            acquire: self.acquire,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            ttl: self.ttl,
            retry: self.retry,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendType {
    Fpm,
    Generic,
}

/// A group of backends behind one name.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Balancer {
    pub name: String,
    /// `byrequests` (weighted round robin with credits) or `bybusyness`.
    #[serde(default)]
    pub method: LbMethod,
    /// Failover attempts after the first member failed (default: members - 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Sticky sessions (Apache `stickysession`): the cookie whose value, after its first `.`,
    /// names the member `route` a request goes to; `COOKIE|param` also reads the URL path
    /// parameter `;param=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_session: Option<String>,
    /// A request whose session route names an unusable member fails (503) instead of going to
    /// another member (Apache `nofailover=On`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofailover: Option<bool>,
    /// When every member is in error, release them all at once (Apache `forcerecovery`,
    /// default on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_recovery: Option<bool>,
    /// How long a request waits for a usable member when there is none, then 503 (Apache's
    /// balancer `timeout`; default: no wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Dur>,
    #[serde(rename = "member")]
    pub members: Vec<Member>,
    // Settings shared by every member (a member's own settings win).
    /// Keep backend connections open (FCGI_KEEP_CONN) and reuse them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<bool>,
    /// At most this many connections to the backend at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// How long a request waits for a free connection when `max` are busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire: Option<Dur>,
    /// Longest wait for progress from the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Longest wait for a connection to be established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Dur>,
    /// Idle connections older than this are not reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Dur>,
    /// How long a failed balancer member stays out of rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Dur>,
}

impl Balancer {
    /// The connection settings given here.
    pub fn worker(&self) -> WorkerSettings {
        WorkerSettings {
            reuse: self.reuse,
            max: self.max,
            acquire: self.acquire,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            ttl: self.ttl,
            retry: self.retry,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LbMethod {
    #[default]
    Byrequests,
    Bybusyness,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The backend (a `[[backend]]` name).
    pub backend: String,
    /// Relative weight, 1..=100.
    #[serde(default = "one")]
    pub loadfactor: u32,
    /// Lower sets are used first.
    #[serde(default)]
    pub lbset: u8,
    /// Status flags: `H` hot standby, `D` disabled, `S` stopped, `I` ignore errors,
    /// `R` hot spare, `E` in error, `N` drain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// The member's session route (Apache `route`): requests whose sticky session names it
    /// go here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The route of the member that takes this one's sessions while it is unusable (Apache
    /// `redirect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// Keep backend connections open (FCGI_KEEP_CONN) and reuse them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<bool>,
    /// At most this many connections to the backend at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// How long a request waits for a free connection when `max` are busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire: Option<Dur>,
    /// Longest wait for progress from the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Longest wait for a connection to be established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Dur>,
    /// Idle connections older than this are not reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Dur>,
    /// How long a failed balancer member stays out of rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Dur>,
}

impl Member {
    /// The connection settings given here.
    pub fn worker(&self) -> WorkerSettings {
        WorkerSettings {
            reuse: self.reuse,
            max: self.max,
            acquire: self.acquire,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            ttl: self.ttl,
            retry: self.retry,
        }
    }
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// A mock FastCGI backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Host name (also the name expectations use).
    pub name: String,
    /// Listening port. Avoid 8000: Apache omits the default fcgi port from SCRIPT_FILENAME.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Connections served at once (a php-fpm pool of this many workers). Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// Beyond `capacity`: `backlog` (connections wait unaccepted) or `hold` (accepted, as a
    /// kernel backlog completes the handshake, but not read until a worker frees up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
    /// Behave like a real backend: `php-fpm`, `libfcgi` or `threaded` (FCGI_GET_VALUES answers
    /// and when they are sent; the mock's `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A worker serves at most this many requests, then exits and closes its connection
    /// (php-fpm `pm.max_requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// A connection given a worker that never served, or whose worker exited, waits this long
    /// before it is read (a fork; php-fpm `pm = ondemand`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_delay: Option<Dur>,
    /// Close a kept-open connection idle this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Dur>,
    /// FCGI_GET_VALUES answers, e.g. `FCGI_MAX_CONNS = "1"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    /// The rest of the mock script (`[[rule]]`, `[default]`, other `[server]` keys), in the
    /// format of `mock-backend/src/script_format.txt`. Default: echo every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<toml::Table>,
}

fn default_port() -> u16 {
    9000
}

impl Backend {
    /// `name:port`, as a proxy's target URL names it.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.name, self.port)
    }

    /// The full mock script, the shortcuts merged into `[server]`.
    pub fn mock_script(&self) -> Result<fcgi_mock::Script, String> {
        let mut table = self.script.clone().unwrap_or_default();
        let server = table
            .entry("server")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(server) = server.as_table_mut() else {
            return Err(format!(
                "backend {}: script.server is not a table",
                self.name
            ));
        };
        let mut put = |key: &str, value: toml::Value| {
            if server.insert(key.to_string(), value).is_some() {
                Err(format!(
                    "backend {}: `{key}` is given both as a shortcut and in script.server",
                    self.name
                ))
            } else {
                Ok(())
            }
        };
        if let Some(c) = self.capacity {
            put("max_conns", toml::Value::Integer(i64::from(c)))?;
        }
        if let Some(o) = &self.overflow {
            put("overflow", toml::Value::String(o.clone()))?;
        }
        if let Some(m) = &self.model {
            put("model", toml::Value::String(m.clone()))?;
        }
        if let Some(n) = self.max_requests {
            put("max_requests", toml::Value::Integer(i64::from(n)))?;
        }
        if let Some(t) = self.spawn_delay {
            let ms = i64::try_from(t.0.as_millis()).unwrap_or(i64::MAX);
            put("spawn_delay_ms", toml::Value::Integer(ms))?;
        }
        if let Some(t) = self.idle_timeout {
            let ms = i64::try_from(t.0.as_millis()).unwrap_or(i64::MAX);
            put("idle_timeout_ms", toml::Value::Integer(ms))?;
        }
        if !self.values.is_empty() {
            let v: toml::Table = self
                .values
                .iter()
                .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
                .collect();
            put("values", toml::Value::Table(v))?;
        }
        let text = toml::to_string(&table).map_err(|e| e.to_string())?;
        fcgi_mock::Script::parse(&text, &format!("backend {}", self.name))
            .map_err(|e| e.to_string())
    }
}

/// A client host sending a sequence of requests.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub name: String,
    /// When the client starts (virtual time).
    #[serde(default, skip_serializing_if = "Dur::is_zero")]
    pub start: Dur,
    /// `keep-alive`: the sequence shares one HTTP connection (reopened if the proxy closed it);
    /// `per-request`: a new connection for every request.
    #[serde(default)]
    pub connection: ClientConnection,
    /// How long the client waits for each complete response.
    #[serde(default = "default_client_timeout")]
    pub timeout: Dur,
    /// The proxy instance the client talks to (0-based, below `topology.proxies`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub proxy: u32,
    /// The protocol the client speaks: HTTP/1.1 (default) or HTTP/2 with prior knowledge on the
    /// plain listener (`h2c`).
    #[serde(default, skip_serializing_if = "Transport::is_http1")]
    pub transport: Transport,
    #[serde(rename = "request")]
    pub requests: Vec<RequestSpec>,
}

/// A client's protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Transport {
    #[default]
    #[serde(rename = "http/1.1")]
    Http1,
    /// HTTP/2 over cleartext TCP, the connection preface sent at once (RFC 9113 3.3).
    #[serde(rename = "h2c")]
    H2c,
}

impl Transport {
    pub fn is_http1(&self) -> bool {
        *self == Transport::Http1
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_client_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientConnection {
    #[default]
    KeepAlive,
    PerRequest,
}

/// One request (or `repeat` identical ones) of a client's sequence.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Name used by expectations. Default `<client>.<n>` (1-based position in the sequence,
    /// repeats counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Not sent before this virtual time (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Dur>,
    /// Pause after the previous response, before sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Dur>,
    #[serde(default = "get")]
    pub method: String,
    /// The request target as sent on the request line (raw: `%`-escapes stay as written).
    pub target: String,
    /// Header fields in order; repeats allowed. `Host: example.com` is added when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Send the body with `Transfer-Encoding: chunked` (in chunks of this many bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunked: Option<usize>,
    /// A body of this many `x` bytes (instead of `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size: Option<usize>,
    /// Send this many identical requests in a row.
    #[serde(default = "one_usize")]
    pub repeat: usize,
    /// The exact bytes to send, on a connection of their own, instead of a request built from
    /// `method`, `target`, `headers` and `body` (for requests no HTTP library would write:
    /// smuggling shapes, malformed heads, pipelined requests). The tag header is inserted after
    /// the first line. `${backend}` becomes the address the proxy reaches that backend at.
    /// Every response on the connection is read, until the proxy closes it or sends nothing
    /// more for `quiet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// After sending `raw`, shut down the sending side (a client that will send no more).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub half_close: bool,
    /// Send `raw` one byte at a time, pausing this long after each (a slowloris client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trickle: Option<Dur>,
    /// How long a `raw` exchange waits for more bytes after a complete response (default 500ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet: Option<Dur>,
    /// `h2c` clients: the exact header block of the request, pseudo-header fields included, in
    /// this order, names and values byte for byte (HPACK literals, RFC 7541 6.2.2), on an
    /// HTTP/2 connection of its own; the body (`body`, `body_size`) follows in DATA frames.
    /// For requests no HTTP/2 library would send. The tag field `x-request-tag` is added last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<(String, String)>>,
    /// `h2c`, with `fields`: the stream is reset (RST_STREAM, CANCEL) after its header block
    /// and body, without END_STREAM (an upload abandoned midway), tagged `<label>.reset`; then
    /// a well-formed GET of `target` on the same connection is the request's answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// `h2c`, with `fields`: first open this many streams with the header block, each reset at
    /// once (rapid reset, CVE-2023-44487), tagged `<label>.flood`; then a well-formed GET of
    /// `target` on the same connection is the request's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rapid_reset: Option<u32>,
}

impl RequestSpec {
    /// The request body's bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        match self.body_size {
            Some(n) => vec![b'x'; n],
            None => self.body.clone().unwrap_or_default().into_bytes(),
        }
    }
}

fn get() -> String {
    "GET".into()
}

fn one_usize() -> usize {
    1
}

/// Something done to the network or a host at a virtual time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub at: Dur,
    pub action: FaultAction,
    /// The two hosts of a link fault (`proxy`, a backend or a client name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between: Option<(String, String)>,
    /// The host of `crash` / `restart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// For `latency`: the fixed one-way latency of the link from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultAction {
    /// Queue every segment on the link until `release`.
    Hold,
    Release,
    /// Drop every segment on the link (new connections are refused) until `repair`.
    Partition,
    Repair,
    /// Fix the link's latency.
    Latency,
    /// Stop the host's software: its sockets close, later connection attempts go unanswered.
    Crash,
    /// Start the host's software again (a fresh process).
    Restart,
}

/// Simulation settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimSettings {
    /// Virtual time budget; running out is a failure.
    #[serde(default = "default_duration")]
    pub duration: Dur,
    /// Per-message latency drawn between these bounds (seeded).
    #[serde(default = "default_latency")]
    pub latency: (Dur, Dur),
    /// After the last client finished, how long connections may take to settle before the
    /// leak check.
    #[serde(default = "default_settle")]
    pub settle: Dur,
    /// Why this scenario runs only in the simulator (its expectations depend on the simulated
    /// network, e.g. a crashed host that answers nothing, where a real crashed process refuses
    /// connections). The real runner reports it as SKIP with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
}

fn default_duration() -> Dur {
    Dur(Duration::from_secs(60))
}

fn default_latency() -> (Dur, Dur) {
    (Dur(Duration::ZERO), Dur(Duration::from_millis(5)))
}

fn default_settle() -> Dur {
    Dur(Duration::from_secs(3))
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            duration: default_duration(),
            latency: default_latency(),
            settle: default_settle(),
            only: None,
        }
    }
}

/// Expectations. Every field is optional; each given one must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Per request (or per group of requests selected by a label pattern).
    #[serde(rename = "request", default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestExpect>,
    /// Per backend: connections and requests seen.
    #[serde(rename = "backend", default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendExpect>,
    /// Which backend served each request of a sequence, in order.
    #[serde(rename = "sequence", default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<SequenceExpect>,
    /// How many requests of a group got each status (for races with several acceptable
    /// winners).
    #[serde(rename = "statuses", default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<StatusCountExpect>,
    /// How many requests of a group one backend answered.
    #[serde(rename = "served", default, skip_serializing_if = "Vec::is_empty")]
    pub served: Vec<ServedCountExpect>,
}

/// What the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientOutcome {
    /// A complete response.
    Complete,
    /// A response head, then the body broke off (connection closed or reset early).
    Truncated,
    /// No response head: the connection failed.
    Error,
    /// Nothing within the client's timeout.
    Timeout,
}

/// Expectations on the requests whose labels match `requests` (`*` matches any run of
/// characters).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestExpect {
    pub requests: String,
    /// Apply only to the matched requests that got one of these statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_status: Option<Vec<u16>>,
    /// Acceptable statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<u16>>,
    /// Acceptable outcomes. Default: `complete` when `status` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Vec<ClientOutcome>>,
    /// Acceptable backends for the one that answered (`none`: no backend saw the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<Vec<String>>,
    /// Bounds on the time from sending to the complete response (virtual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed: Option<Bounds>,
    /// Bounds on the time from sending to the first byte of the response body (not for `raw`
    /// requests): whether the proxy passes data on before the response is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_body_byte: Option<Bounds>,
    /// The FCGI_KEEP_CONN flag of the BEGIN_REQUEST the backend answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_conn: Option<bool>,
    /// How many times the request reached a backend (retries count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Count>,
    /// CGI params the backend received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<ParamExpect>,
    /// The request body as the backend received it on FCGI_STDIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The response body contains this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// The response body does not contain this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_lacks: Option<String>,
    /// The response body has exactly this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_length: Option<usize>,
    /// Response headers (name, value), compared case-insensitively on the name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Response headers that must not be there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_absent: Vec<String>,
    /// For a `raw` request: how many response heads came back on its connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<Count>,
    /// For a `raw` request: whether the proxy closed the connection (rather than waiting for
    /// another request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<bool>,
}

/// CGI param expectations. Values may use `${backend}` for a backend's `name:port`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParamExpect {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub present: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub equal: BTreeMap<String, String>,
    /// Each name appears at most once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
    /// No value of the param equals this (absent is fine).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub not_equal: BTreeMap<String, String>,
    /// No value of the param contains this (absent is fine).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lacks: BTreeMap<String, String>,
    /// The param is present and starts with this.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub starts_with: BTreeMap<String, String>,
    /// The param is present and ends with this.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ends_with: BTreeMap<String, String>,
    /// The param is present and its value has exactly this many bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub length: BTreeMap<String, usize>,
    /// No param name or value holds a CR, LF or NUL byte.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_control: bool,
}

/// Expectations on one backend over the whole run.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendExpect {
    pub backend: String,
    /// Connections accepted (all incarnations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Count>,
    /// Requests begun (BEGIN_REQUEST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Count>,
    /// Requests per connection, in connection order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_connection: Option<Vec<usize>>,
    /// Most connections from the proxy open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_connections: Option<Count>,
    /// The FCGI_KEEP_CONN flag on every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_conn: Option<bool>,
    /// Acceptable reasons for each closed connection (`keep_conn_clear`, `idle_timeout`,
    /// `max_requests`, `eof`, ...); connections still open are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reasons: Option<Vec<String>>,
    /// FCGI_GET_VALUES queries received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get_values: Option<Count>,
    /// Every request arrived well formed: no connection was closed for a protocol error
    /// (`protocol_error`), every request id is non-zero, PARAMS and STDIN both ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub well_formed: bool,
    /// No request reached this backend whose SCRIPT_NAME, SCRIPT_FILENAME, PATH_INFO or
    /// PATH_TRANSLATED contains any of these (a smuggled request, an escaped path). REQUEST_URI
    /// is not looked at: it is the raw target, as the client sent it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths_absent: Vec<String>,
    /// Every request that declared a CONTENT_LENGTH and whose STDIN ended (the empty STDIN
    /// record) carried exactly that many bytes: a short body is never passed on as complete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_matches_content_length: bool,
}

/// The backends that served the matched requests, in request order.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceExpect {
    pub requests: String,
    pub served_by: Vec<String>,
}

/// How many of the matched requests got each status (`"200" = 1`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCountExpect {
    pub requests: String,
    pub counts: BTreeMap<String, usize>,
}

/// How many of the matched requests `backend` answered.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServedCountExpect {
    pub requests: String,
    pub backend: String,
    pub count: Count,
}

/// An exact count, a set of acceptable counts, or bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Count {
    Exactly(usize),
    OneOf(Vec<usize>),
    Range {
        #[serde(skip_serializing_if = "Option::is_none")]
        min: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
}

impl Count {
    pub fn accepts(&self, n: usize) -> bool {
        match self {
            Count::Exactly(e) => n == *e,
            Count::OneOf(v) => v.contains(&n),
            Count::Range { min, max } => min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m),
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Exactly(n) => write!(f, "{n}"),
            Count::OneOf(v) => write!(f, "one of {v:?}"),
            Count::Range { min, max } => match (min, max) {
                (Some(a), Some(b)) => write!(f, "{a}..={b}"),
                (Some(a), None) => write!(f, ">= {a}"),
                (None, Some(b)) => write!(f, "<= {b}"),
                (None, None) => f.write_str("any"),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(usize),
            V(Vec<usize>),
            R {
                #[serde(default)]
                min: Option<usize>,
                #[serde(default)]
                max: Option<usize>,
            },
        }
        Ok(match Raw::deserialize(d)? {
            Raw::N(n) => Count::Exactly(n),
            Raw::V(v) => Count::OneOf(v),
            Raw::R { min, max } => Count::Range { min, max },
        })
    }
}

/// Time bounds (virtual).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Dur>,
}

impl Bounds {
    pub fn accepts(&self, d: Duration) -> bool {
        self.accepts_within(d, Duration::ZERO)
    }

    /// With `slack` more allowed above `max` (real runs: scheduling noise of a loaded machine;
    /// the simulator's clock is exact and uses none).
    pub fn accepts_within(&self, d: Duration, slack: Duration) -> bool {
        self.min.is_none_or(|m| d >= m.0) && self.max.is_none_or(|m| d <= m.0 + slack)
    }
}

/// An edit of the scenario under which it must fail.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mutant {
    /// What is wrong in this variant, e.g. "a proxy that never reuses connections".
    pub why: String,
    /// Values to set, by dotted path into the scenario (`topology.route.0.reuse`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, toml::Value>,
    /// Paths to remove (`fault.1`, `backend.0.script.rule.0.body`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A duration written as `"250ms"`, `"2s"` or `"1.5s"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn parse(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        let bad = || format!("bad duration {s:?}: write e.g. \"250ms\", \"2s\" or \"1.5s\"");
        let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
            (n, 1_000_000u128)
        } else if let Some(n) = s.strip_suffix("us") {
            (n, 1_000)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1_000_000_000)
        } else {
            return Err(bad());
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
            return Err(bad());
        }
        let int: u128 = int.parse().map_err(|_| bad())?;
        let mut nanos = int * unit;
        let mut scale = unit;
        for d in frac.bytes() {
            scale /= 10;
            nanos += u128::from(d - b'0') * scale;
        }
        let nanos = u64::try_from(nanos).map_err(|_| bad())?;
        Ok(Dur(Duration::from_nanos(nanos)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_secs_f64() * 1000.0;
        if self.0.subsec_nanos() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else if self.0.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", self.0.as_millis())
        } else {
            write!(f, "{ms:.3}ms")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A scenario that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub origin: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// One request of the expanded traffic.
#[derive(Debug, Clone)]
pub struct PlannedRequest {
    pub label: String,
    pub client: usize,
    pub spec: RequestSpec,
}

impl Scenario {
    /// Parses and validates a scenario. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        // Straight from the text, so that a mistyped or unknown key is reported at its line
        // and column.
        let s: Scenario = toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;
        s.validate().map_err(|message| ScenarioError {
            origin: origin.to_string(),
            message,
        })?;
        Ok(s)
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        Scenario::parse(&text, &origin)
    }

    /// Builds a scenario from its TOML table (for mutants) and validates it.
    pub fn from_table(table: toml::Table, origin: &str) -> Result<Scenario, ScenarioError> {
        let err = |message: String| ScenarioError {
            origin: origin.to_string(),
            message,
        };
        let s: Scenario = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| err(e.message().trim().to_string()))?;
        s.validate().map_err(err)?;
        Ok(s)
    }

    /// The scenario with a mutant applied (from the scenario's source text).
    pub fn mutated(text: &str, origin: &str, mutant: &Mutant) -> Result<Scenario, ScenarioError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;
        let err = |message: String| ScenarioError {
            origin: format!("{origin} (mutant: {})", mutant.why),
            message,
        };
        table.remove("mutant");
        for path in &mutant.remove {
            remove_path(&mut table, path).map_err(err)?;
        }
        for (path, value) in &mutant.set {
            set_path(&mut table, path, value.clone()).map_err(err)?;
        }
        let origin = format!("{origin} (mutant: {})", mutant.why);
        Scenario::from_table(table, &origin)
    }

    /// The area: the part of the id before `/`.
    pub fn area(&self) -> &str {
        self.id.split('/').next().unwrap_or("")
    }

    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// The balancer of that name.
    pub fn balancer(&self, name: &str) -> Option<&Balancer> {
        self.topology.balancers.iter().find(|b| b.name == name)
    }

    /// Every request of the traffic, repeats expanded, labels assigned.
    pub fn planned_requests(&self) -> Vec<PlannedRequest> {
        let mut out = Vec::new();
        for (ci, c) in self.clients.iter().enumerate() {
            let mut n = 0;
            for spec in &c.requests {
                for k in 0..spec.repeat.max(1) {
                    n += 1;
                    let label = match (&spec.label, spec.repeat) {
                        (Some(l), 1) => l.clone(),
                        (Some(l), _) => format!("{l}.{}", k + 1),
                        (None, _) => format!("{}.{n}", c.name),
                    };
                    out.push(PlannedRequest {
                        label,
                        client: ci,
                        spec: spec.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether a client speaks HTTP/2 with prior knowledge, so the proxy's plain listener must
    /// take it.
    pub fn speaks_h2c(&self) -> bool {
        self.clients.iter().any(|c| c.transport == Transport::H2c)
    }

    /// Replaces `${backend}` with that backend's `name:port`, and `${c*N}` runs.
    pub fn expand(&self, text: &str) -> String {
        expand_names(text, self.backends.iter().map(|b| (&b.name, b.authority())))
    }

    /// Checks what serde cannot: references, names, required settings.
    pub fn validate(&self) -> Result<(), String> {
        let mut parts = self.id.split('/');
        let (Some(area), Some(slug), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("id {:?} is not <area>/<slug>", self.id));
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !name_ok(area) || !name_ok(slug) {
            return Err(format!(
                "id {:?}: area and slug are lower-case words joined by '-'",
                self.id
            ));
        }
        let r = &self.requirement;
        for (field, value) in [
            ("quote", &r.quote),
            ("source", &r.source),
            ("section", &r.section),
        ] {
            if value.trim().is_empty() {
                return Err(format!("requirement.{field} is empty"));
            }
        }
        if let Some(url) = &r.url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!("requirement.url {url:?} is not an http(s) URL"));
        }
        if self.topology.proxies == 0 {
            return Err("topology.proxies: at least 1".into());
        }
        let proxy_hosts: Vec<String> = (0..self.topology.proxies as usize)
            .map(proxy_host)
            .collect();
        let mut hosts: Vec<&str> = proxy_hosts.iter().map(String::as_str).collect();
        for b in &self.backends {
            if hosts.contains(&b.name.as_str()) {
                return Err(format!("host name {:?} is used twice", b.name));
            }
            if !name_ok(&b.name) {
                return Err(format!(
                    "backend name {:?}: lower-case letters, digits, '-'",
                    b.name
                ));
            }
            hosts.push(&b.name);
            b.mock_script()?;
        }
        for c in &self.clients {
            if hosts.contains(&c.name.as_str()) {
                return Err(format!("host name {:?} is used twice", c.name));
            }
            if !name_ok(&c.name) {
                return Err(format!(
                    "client name {:?}: lower-case letters, digits, '-'",
                    c.name
                ));
            }
            hosts.push(&c.name);
            if c.proxy >= self.topology.proxies {
                return Err(format!(
                    "client {}: proxy = {} but topology.proxies = {} (instances are numbered \
                     from 0)",
                    c.name, c.proxy, self.topology.proxies
                ));
            }
            if c.requests.is_empty() {
                return Err(format!("client {} sends no request", c.name));
            }
            for r in &c.requests {
                let what = format!("client {} request {}", c.name, r.target);
                if r.raw.is_some()
                    && (r.body.is_some()
                        || r.body_size.is_some()
                        || r.chunked.is_some()
                        || !r.headers.is_empty())
                {
                    return Err(format!(
                        "{what}: `raw` is the whole request; no body, chunked or headers with it"
                    ));
                }
                if r.raw.is_none() && (r.half_close || r.quiet.is_some() || r.trickle.is_some()) {
                    return Err(format!(
                        "{what}: `half_close`, `trickle` and `quiet` need `raw`"
                    ));
                }
                if r.body.is_some() && r.body_size.is_some() {
                    return Err(format!("{what}: give `body` or `body_size`, not both"));
                }
                match c.transport {
                    Transport::Http1 => {
                        if r.fields.is_some() || r.reset || r.rapid_reset.is_some() {
                            return Err(format!(
                                "{what}: `fields`, `reset` and `rapid_reset` need \
                                 `transport = \"h2c\"`"
                            ));
                        }
                    }
                    Transport::H2c => {
                        if r.raw.is_some() || r.chunked.is_some() {
                            return Err(format!(
                                "{what}: `raw` and `chunked` are HTTP/1.1; an h2c client's \
                                 malformed requests are `fields`"
                            ));
                        }
                        if r.fields.is_some() && !r.headers.is_empty() {
                            return Err(format!(
                                "{what}: `fields` is the whole header block; no `headers` with it"
                            ));
                        }
                        if (r.reset || r.rapid_reset.is_some()) && r.fields.is_none() {
                            return Err(format!("{what}: `reset` and `rapid_reset` need `fields`"));
                        }
                        if r.reset && r.rapid_reset.is_some() {
                            return Err(format!("{what}: give `reset` or `rapid_reset`, not both"));
                        }
                    }
                }
            }
        }
        if self.clients.is_empty() {
            return Err("no [[client]]".into());
        }
        let balancer = |n: &str| self.topology.balancers.iter().find(|b| b.name == n);
        for (i, r) in self.topology.routes.iter().enumerate() {
            if r.path.is_some() == r.regex.is_some() {
                return Err(format!("route {i}: give exactly one of `path` and `match`"));
            }
            match (&r.backend, &r.balancer) {
                (Some(b), None) => {
                    if self.backend(b).is_none() {
                        return Err(format!("route {i}: no backend named {b:?}"));
                    }
                    if r.reuse.is_none() {
                        return Err(format!(
                            "route {i}: say `reuse = true|false` (proxies differ on the default)"
                        ));
                    }
                }
                (None, Some(b)) => {
                    if balancer(b).is_none() {
                        return Err(format!("route {i}: no balancer named {b:?}"));
                    }
                }
                _ => {
                    return Err(format!(
                        "route {i}: give exactly one of `backend` and `balancer`"
                    ));
                }
            }
            if let Some(p) = &r.backend_path
                && !p.starts_with('/')
            {
                return Err(format!("route {i}: backend_path must start with '/'"));
            }
            if r.flush && r.backend.is_none() {
                return Err(format!("route {i}: `flush` is for a route to a backend"));
            }
        }
        for b in &self.topology.balancers {
            if b.members.is_empty() {
                return Err(format!("balancer {}: no member", b.name));
            }
            for m in &b.members {
                if self.backend(&m.backend).is_none() {
                    return Err(format!(
                        "balancer {}: no backend named {:?}",
                        b.name, m.backend
                    ));
                }
                if m.worker().or(&b.worker()).reuse.is_none() {
                    return Err(format!(
                        "balancer {}: say `reuse = true|false` (proxies differ on the default)",
                        b.name
                    ));
                }
                if !(1..=100).contains(&m.loadfactor) {
                    return Err(format!("balancer {}: loadfactor is 1..=100", b.name));
                }
                if let Some(rd) = &m.redirect
                    && !b.members.iter().any(|o| o.route.as_ref() == Some(rd))
                {
                    return Err(format!(
                        "balancer {}: redirect {rd:?} names no member's route",
                        b.name
                    ));
                }
            }
            let routes_used =
                b.members.iter().any(|m| m.redirect.is_some()) || b.nofailover.is_some();
            if routes_used && b.sticky_session.is_none() {
                return Err(format!(
                    "balancer {}: redirect and nofailover act on sticky sessions; give \
                     sticky_session",
                    b.name
                ));
            }
        }
        let mut labels: Vec<String> = Vec::new();
        for p in self.planned_requests() {
            if labels.contains(&p.label) {
                return Err(format!("request label {:?} is used twice", p.label));
            }
            labels.push(p.label);
        }
        let matches_any = |pat: &str| labels.iter().any(|l| glob_match(pat, l));
        for e in &self.expect.requests {
            if !matches_any(&e.requests) {
                return Err(format!(
                    "expect.request {:?} matches no request",
                    e.requests
                ));
            }
        }
        for e in &self.expect.sequences {
            if !matches_any(&e.requests) {
                return Err(format!(
                    "expect.sequence {:?} matches no request",
                    e.requests
                ));
            }
        }
        for e in &self.expect.statuses {
            if !matches_any(&e.requests) {
                return Err(format!(
                    "expect.statuses {:?} matches no request",
                    e.requests
                ));
            }
        }
        for e in &self.expect.served {
            if !matches_any(&e.requests) {
                return Err(format!("expect.served {:?} matches no request", e.requests));
            }
            if self.backend(&e.backend).is_none() && e.backend != "none" {
                return Err(format!("expect.served: no backend named {:?}", e.backend));
            }
        }
        for e in &self.expect.backends {
            if self.backend(&e.backend).is_none() {
                return Err(format!("expect.backend: no backend named {:?}", e.backend));
            }
        }
        for f in &self.faults {
            let needs_link = matches!(
                f.action,
                FaultAction::Hold
                    | FaultAction::Release
                    | FaultAction::Partition
                    | FaultAction::Repair
                    | FaultAction::Latency
            );
            if needs_link {
                let Some((a, b)) = &f.between else {
                    return Err(format!("fault at {}: {:?} needs `between`", f.at, f.action));
                };
                for h in [a, b] {
                    if !hosts.contains(&h.as_str()) {
                        return Err(format!("fault at {}: no host named {h:?}", f.at));
                    }
                }
                if f.action == FaultAction::Latency && f.latency.is_none() {
                    return Err(format!("fault at {}: latency needs `latency`", f.at));
                }
            } else {
                let Some(h) = &f.host else {
                    return Err(format!("fault at {}: {:?} needs `host`", f.at, f.action));
                };
                if self.backend(h).is_none() {
                    return Err(format!(
                        "fault at {}: only backends crash and restart, not {h:?}",
                        f.at
                    ));
                }
            }
        }
        // Only a raw exchange sees every response and the close; on any other request these
        // would hold whatever the proxy did.
        let planned = self.planned_requests();
        for e in &self.expect.requests {
            if e.first_body_byte.is_some()
                && let Some(p) = planned
                    .iter()
                    .find(|p| glob_match(&e.requests, &p.label) && p.spec.raw.is_some())
            {
                return Err(format!(
                    "expect.request {:?}: `first_body_byte` is not recorded for `raw` requests \
                     ({})",
                    e.requests, p.label
                ));
            }
            if e.responses.is_none() && e.closed.is_none() {
                continue;
            }
            if let Some(p) = planned
                .iter()
                .find(|p| glob_match(&e.requests, &p.label) && p.spec.raw.is_none())
            {
                return Err(format!(
                    "expect.request {:?}: `responses` and `closed` need `raw` requests; {} is not one",
                    e.requests, p.label
                ));
            }
        }
        Ok(())
    }
}

/// `text` with its `${c*N}` runs expanded and each `${name}` replaced with that name's value.
pub fn expand_names<N, V>(text: &str, names: impl IntoIterator<Item = (N, V)>) -> String
where
    N: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = repeat_runs(text);
    for (name, value) in names {
        out = out.replace(&format!("${{{}}}", name.as_ref()), value.as_ref());
    }
    out
}

/// `${c*N}` (one character, a count) becomes `c` repeated N times: long header values and
/// targets without writing them out.
pub fn repeat_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let mut chars = after.chars();
        let run = chars.next().and_then(|c| {
            let tail = chars.as_str().strip_prefix('*')?;
            let end = tail.find('}')?;
            let n: usize = tail[..end].parse().ok()?;
            Some((c, n, &tail[end + 1..]))
        });
        match run {
            Some((c, n, tail)) => {
                out.extend(std::iter::repeat_n(c, n));
                rest = tail;
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `*` matches any run of characters; everything else literally.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((c, rest)) => s
                .split_first()
                .is_some_and(|(d, srest)| c == d && go(rest, srest)),
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> ScenarioError {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(":{line}:{col}")
    });
    ScenarioError {
        origin: format!("{origin}{}", at.unwrap_or_default()),
        message: e.message().trim().to_string(),
    }
}

fn step<'a>(v: &'a mut toml::Value, key: &str, path: &str) -> Result<&'a mut toml::Value, String> {
    match v {
        toml::Value::Table(t) => t
            .get_mut(key)
            .ok_or_else(|| format!("{path}: no key {key:?}")),
        toml::Value::Array(a) => {
            let i: usize = key
                .parse()
                .map_err(|_| format!("{path}: {key:?} is not an index"))?;
            let n = a.len();
            a.get_mut(i)
                .ok_or_else(|| format!("{path}: index {i} out of {n}"))
        }
        _ => Err(format!("{path}: {key:?} is below a plain value")),
    }
}

/// Sets `value` at a dotted path; the last key may be new (tables) or one past the end (arrays).
fn set_path(root: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let keys: Vec<&str> = path.split('.').collect();
    let (last, parents) = keys.split_last().ok_or("empty path")?;
    let mut cur = root
        .entry(parents.first().copied().unwrap_or(last).to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if parents.is_empty() {
        *cur = value;
        return Ok(());
    }
    for k in &parents[1..] {
        if let toml::Value::Table(t) = cur
            && !t.contains_key(*k)
        {
            t.insert((*k).to_string(), toml::Value::Table(toml::Table::new()));
        }
        cur = step(cur, k, path)?;
    }
    match cur {
        toml::Value::Table(t) => {
            t.insert((*last).to_string(), value);
            Ok(())
        }
        toml::Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("{path}: {last:?} is not an index"))?;
            match i.cmp(&a.len()) {
                std::cmp::Ordering::Less => a[i] = value,
                std::cmp::Ordering::Equal => a.push(value),
                std::cmp::Ordering::Greater => return Err(format!("{path}: index {i} too far")),
            }
            Ok(())
        }
        _ => Err(format!("{path}: parent is a plain value")),
    }
}

fn remove_path(root: &mut toml::Table, path: &str) -> Result<(), String> {
    let keys: Vec<&str> = path.split('.').collect();
    let (last, parents) = keys.split_last().ok_or("empty path")?;
    if parents.is_empty() {
        return root
            .remove(*last)
            .map(drop)
            .ok_or_else(|| format!("{path}: no key {last:?}"));
    }
    let mut cur = root
        .get_mut(parents[0])
        .ok_or_else(|| format!("{path}: no key {:?}", parents[0]))?;
    for k in &parents[1..] {
        cur = step(cur, k, path)?;
    }
    match cur {
        toml::Value::Table(t) => t
            .remove(*last)
            .map(drop)
            .ok_or_else(|| format!("{path}: no key {last:?}")),
        toml::Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("{path}: {last:?} is not an index"))?;
            if i < a.len() {
                a.remove(i);
                Ok(())
            } else {
                Err(format!("{path}: index {i} out of {}", a.len()))
            }
        }
        _ => Err(format!("{path}: parent is a plain value")),
    }
}

/// Every `*.toml` under `path` (a file or a directory, recursively), sorted.
pub fn find_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(out);
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.is_dir() {
                // `expected/` holds per-target deviation lists, not scenarios.
                if p.file_name().is_some_and(|n| n == "expected") {
                    continue;
                }
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The scenario id a file must carry: its path relative to the `scenarios/` directory above it,
/// without `.toml`.
pub fn id_from_path(path: &Path) -> Option<String> {
    let comps: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let at = comps.iter().rposition(|c| c == "scenarios")?;
    let rest = &comps[at + 1..];
    let joined = rest.join("/");
    joined.strip_suffix(".toml").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_model_shortcuts_reach_the_mock_server_settings() {
        let b: Backend = toml::from_str(
            r#"
            name = "fpm"
            capacity = 2
            overflow = "hold"
            model = "php-fpm"
            max_requests = 3
            spawn_delay = "40ms"
            "#,
        )
        .unwrap();
        let s = b.mock_script().unwrap().server;
        assert_eq!(s.max_conns.map(|n| n.get()), Some(2));
        assert_eq!(s.model, Some(fcgi_mock::script::Model::PhpFpm));
        assert_eq!(s.max_requests.map(|n| n.get()), Some(3));
        assert_eq!(s.spawn_delay_ms, 40);

        let b: Backend = toml::from_str("name = \"x\"\nmodel = \"lighttpd\"\n").unwrap();
        let e = b.mock_script().unwrap_err();
        assert!(e.contains("lighttpd"), "{e}");

        let b: Backend =
            toml::from_str("name = \"x\"\nmax_requests = 2\n[script.server]\nmax_requests = 3\n")
                .unwrap();
        let e = b.mock_script().unwrap_err();
        assert!(e.contains("max_requests"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur::parse("2s").unwrap().0, Duration::from_secs(2));
        assert_eq!(Dur::parse("1.5s").unwrap().0, Duration::from_millis(1500));
        assert_eq!(Dur::parse("0ms").unwrap().0, Duration::ZERO);
        for bad in ["", "5", "s", "1.s5", "-1s", "1m"] {
            assert!(Dur::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(Dur(Duration::from_secs(2)).to_string(), "2s");
    }

    #[test]
    fn runs_expand_and_other_text_stays() {
        assert_eq!(repeat_runs("a${x*3}b${Q*0}c"), "axxxbc");
        assert_eq!(repeat_runs("${app}:${x*2}"), "${app}:xx");
        assert_eq!(repeat_runs("${x*}${"), "${x*}${");
    }

    #[test]
    fn globs() {
        assert!(glob_match("c1.*", "c1.2"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("c1.*", "c2.1"));
        assert!(glob_match("c1.1", "c1.1"));
        assert!(!glob_match("c1.1", "c1.10"));
    }

    #[test]
    fn counts() {
        let c: Count = toml::from_str::<toml::Table>("c = 2").unwrap()["c"]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(c, Count::Exactly(2));
        let c: Count = toml::from_str::<toml::Table>("c = [1, 2]").unwrap()["c"]
            .clone()
            .try_into()
            .unwrap();
        assert!(c.accepts(1) && c.accepts(2) && !c.accepts(3));
        let c: Count = toml::from_str::<toml::Table>("c = { max = 2 }").unwrap()["c"]
            .clone()
            .try_into()
            .unwrap();
        assert!(c.accepts(0) && !c.accepts(3));
    }

    #[test]
    fn paths() {
        let mut t: toml::Table =
            toml::from_str("[[route]]\nreuse = true\n[[fault]]\nat = \"1s\"\n").unwrap();
        set_path(&mut t, "route.0.reuse", toml::Value::Boolean(false)).unwrap();
        assert_eq!(t["route"][0]["reuse"].as_bool(), Some(false));
        set_path(&mut t, "route.0.max", toml::Value::Integer(3)).unwrap();
        assert_eq!(t["route"][0]["max"].as_integer(), Some(3));
        remove_path(&mut t, "fault.0").unwrap();
        assert_eq!(t["fault"].as_array().map(Vec::len), Some(0));
        assert!(remove_path(&mut t, "route.3").is_err());
        set_path(&mut t, "sim.settle", toml::Value::String("1s".into())).unwrap();
        assert_eq!(t["sim"]["settle"].as_str(), Some("1s"));
    }

    #[test]
    fn ids_from_paths() {
        assert_eq!(
            id_from_path(Path::new("/w/scenarios/reuse/one.toml")).as_deref(),
            Some("reuse/one")
        );
        assert_eq!(id_from_path(Path::new("x/one.toml")), None);
    }

    #[test]
    fn proxy_instances_are_counted_and_named() {
        let text = |proxies: &str, client: &str, fault: &str| {
            format!(
                r#"
id = "saturation/x"
description = "d"
level = "SHOULD"
[requirement]
quote = "q"
source = "docs/reference/apache.md"
section = "5"
[topology]
{proxies}
[[topology.route]]
path = "/app/"
backend = "app"
reuse = true
[[backend]]
name = "app"
[[client]]
name = "c1"
{client}
[[client.request]]
target = "/app/x"
[expect]
{fault}
"#
            )
        };
        let one = Scenario::parse(&text("", "", ""), "default").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.topology.proxies, 1);
        assert_eq!(one.clients[0].proxy, 0);
        let two = Scenario::parse(&text("proxies = 2", "proxy = 1", ""), "two")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((two.topology.proxies, two.clients[0].proxy), (2, 1));
        let err = Scenario::parse(&text("proxies = 0", "", ""), "zero").unwrap_err();
        assert!(err.message.contains("at least 1"), "{err}");
        let err = Scenario::parse(&text("", "proxy = 1", ""), "beyond").unwrap_err();
        assert!(err.message.contains("topology.proxies = 1"), "{err}");
        // Link faults may name any instance's host, and only existing ones.
        let fault = "[[fault]]\nat = \"1s\"\naction = \"hold\"\nbetween = [\"proxy2\", \"app\"]";
        assert!(Scenario::parse(&text("proxies = 2", "", fault), "fault").is_ok());
        assert!(Scenario::parse(&text("", "", fault), "no proxy2").is_err());
        assert_eq!(proxy_host(0), "proxy");
        assert_eq!(proxy_host(2), "proxy3");
    }

    #[test]
    fn closed_and_responses_need_raw_requests() {
        let text = |request: &str| {
            format!(
                r#"
id = "security/x"
description = "d"
level = "MUST"
[requirement]
quote = "q"
source = "docs/reference/apache.md"
section = "5"
[topology]
[[topology.route]]
path = "/app/"
backend = "app"
reuse = true
[[backend]]
name = "app"
[[client]]
name = "c1"
[[client.request]]
{request}
[[expect.request]]
requests = "c1.1"
closed = true
"#
            )
        };
        let raw = r#"target = "/app/x"
raw = "GET /app/x HTTP/1.1\r\nHost: x\r\n\r\n""#;
        if let Err(e) = Scenario::parse(&text(raw), "raw") {
            panic!("{e}");
        }
        let err = Scenario::parse(&text(r#"target = "/app/x""#), "plain").unwrap_err();
        assert!(err.message.contains("need `raw`"), "{err}");
    }

    #[test]
    fn http2_requests_need_an_h2c_client_and_fields_for_resets() {
        let text = |transport: &str, request: &str| {
            format!(
                r#"
id = "security/x"
description = "d"
level = "MUST"
[requirement]
quote = "q"
source = "RFC 9113"
section = "8.3"
[topology]
[[topology.route]]
path = "/app/"
backend = "app"
reuse = true
[[backend]]
name = "app"
[[client]]
name = "c1"
{transport}
[[client.request]]
target = "/app/x"
{request}
[expect]
"#
            )
        };
        let fields = r#"fields = [[":method", "GET"], [":path", "/app/x"]]"#;
        let h2c = r#"transport = "h2c""#;
        let ok = Scenario::parse(&text(h2c, fields), "ok").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.clients[0].transport, Transport::H2c);
        assert!(ok.speaks_h2c());
        let plain = Scenario::parse(&text("", ""), "plain").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain.clients[0].transport, Transport::Http1);
        assert!(!plain.speaks_h2c());
        let bad = [
            ("", fields.to_string(), "need `transport = \"h2c\"`"),
            ("", "reset = true".to_string(), "need `transport"),
            (h2c, "rapid_reset = 10".to_string(), "need `fields`"),
            (
                h2c,
                format!("{fields}\nreset = true\nrapid_reset = 3"),
                "not both",
            ),
            (
                h2c,
                format!("{fields}\nheaders = [[\"a\", \"b\"]]"),
                "no `headers`",
            ),
            (
                h2c,
                "raw = \"GET / HTTP/1.1\\r\\n\\r\\n\"".to_string(),
                "HTTP/1.1",
            ),
            (h2c, "chunked = 4\nbody = \"abcd\"".to_string(), "HTTP/1.1"),
        ];
        for (transport, request, why) in bad {
            let e = Scenario::parse(&text(transport, &request), "bad").unwrap_err();
            assert!(e.message.contains(why), "{request}: {e}");
        }
        let e = Scenario::parse(&text(r#"transport = "h3""#, ""), "h3").unwrap_err();
        assert!(e.message.contains("h3"), "{e}");
    }

    #[test]
    fn requirements_from_repository_files_are_checked_against_them() {
        let doc = "# Title\n\n## 2. Paths\n\n### 2.3 `proxy-fcgi-pathinfo`\n\n- `first-dot` splits\n  at the slash *after* the dot.\n\nThen more text.\n\n### S1. httpoxy\n\n## One worker, one connection\n";
        let req = |section: &str, quote: &str| Requirement {
            quote: quote.into(),
            source: "docs/reference/apache.md".into(),
            section: section.into(),
            url: None,
        };
        assert_eq!(
            req("x", "q").repository_file(),
            Some("docs/reference/apache.md")
        );
        let ok = [
            ("2.3", "first-dot splits at the slash after the dot."),
            (
                "2, 2.3",
                "first-dot splits [...] after the dot. [...] more text",
            ),
            ("S1", "Then more text."),
            ("One worker, one connection", "more"),
        ];
        for (section, quote) in ok {
            if let Err(e) = req(section, quote).check_against(doc) {
                panic!("{section} / {quote}: {e}");
            }
        }
        let bad = [
            ("2.4", "Then more text.", "not a heading"),
            ("S", "Then more text.", "not a heading"),
            ("2.3, ", "Then more text.", "not a heading"),
            ("2.3", "first-dot splits at the dot", "not in"),
            ("2.3", "more text [...] first-dot", "not in"),
        ];
        for (section, quote, why) in bad {
            let e = req(section, quote).check_against(doc).unwrap_err();
            assert!(e.contains(why), "{section} / {quote}: {e}");
        }
        let spec = Requirement {
            quote: "q".into(),
            source: "RFC 3875".into(),
            section: "4.1.7".into(),
            url: None,
        };
        assert_eq!(spec.repository_file(), None);
    }

    #[test]
    fn a_mistyped_key_is_reported_at_its_line_and_column() {
        let text = std::fs::read_to_string(
            crate::sim::suite::scenarios_dir().join("cgi/meta-variables.toml"),
        )
        .unwrap();
        let broken = text.replacen("\ndescription =", "\ndescriptoin =", 1);
        let line = broken
            .lines()
            .position(|l| l.starts_with("descriptoin"))
            .unwrap()
            + 1;
        let e = Scenario::parse(&broken, "x.toml").unwrap_err();
        assert_eq!(e.origin, format!("x.toml:{line}:1"), "{e}");
        assert!(e.message.contains("descriptoin"), "{e}");
        // A wrong value deep in the file, too.
        let broken = text.replacen("reuse = true", "reuse = \"yes\"", 1);
        let e = Scenario::parse(&broken, "x.toml").unwrap_err();
        assert!(e.origin.starts_with("x.toml:"), "{e}");
        assert_ne!(e.origin, "x.toml", "{e}");
    }

    #[test]
    fn the_source_is_free_text_with_an_optional_url() {
        let text = std::fs::read_to_string(
            crate::sim::suite::scenarios_dir().join("cgi/meta-variables.toml"),
        )
        .unwrap();
        let source = text
            .lines()
            .find(|l| l.starts_with("source = "))
            .unwrap()
            .to_string();
        let free = text.replacen(
            &source,
            "source = \"My proxy's handbook\"\nurl = \"https://example.org/handbook#cgi\"",
            1,
        );
        let s = Scenario::parse(&free, "x.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.requirement.source, "My proxy's handbook");
        assert_eq!(
            s.requirement.url.as_deref(),
            Some("https://example.org/handbook#cgi")
        );
        let bad = free.replacen("https://example.org", "example.org", 1);
        let e = Scenario::parse(&bad, "x.toml").unwrap_err();
        assert!(e.message.contains("requirement.url"), "{e}");
        assert!(Requirement::names_reference_doc("docs/reference/apahce.md"));
        assert!(!Requirement::names_reference_doc("CHANGES.md"));
    }
}
