//! Configuration: one model ([`Config`]) with two front ends, TOML ([`Config::from_toml_str`])
//! and an importer for the mod_proxy subset of an Apache `httpd.conf` ([`apache::parse`]),
//! plus validation ([`Config::validate`]) and a human summary ([`Config::describe`]).

pub mod apache;
pub mod duration;
pub mod expr;
pub mod log;
mod model;
pub mod read;
pub mod site;
pub mod site_toml;
pub mod tls;
pub mod toml;
pub mod url;

use core::fmt;
use std::net::SocketAddr;
use std::path::Path;

pub use expr::{
    Attribute, Condition, Env, EnvAction, ExprVars, FcgiAction, FcgiSetEnvIf, RequestFacts,
    ServerVar, SetEnv, SetEnvIf, ValueExpr,
};
pub use model::*;
pub use url::{BackendSocket, BalancerUrl, FCGI_DEFAULT_PORT, Target, WorkerUrl};

/// A configuration error, naming where it is when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl ConfigError {
    /// An error without a position.
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// An error at `file:line`.
    pub fn at(file: Option<&str>, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.map(str::to_owned),
            line: Some(line),
            column: None,
            message: message.into(),
        }
    }

    fn located(origin: Option<&Origin>, file: Option<&str>, message: String) -> ConfigError {
        match origin {
            Some(o) => ConfigError::at(Some(&o.file), o.line, message),
            None => ConfigError {
                file: file.map(str::to_owned),
                line: None,
                column: None,
                message,
            },
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}:")?;
        }
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(col) = self.column {
                write!(f, "{col}:")?;
            }
        }
        if self.file.is_some() || self.line.is_some() {
            f.write_str(" ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Something worth telling the operator that does not stop the configuration from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

impl Warning {
    fn located(origin: Option<&Origin>, file: Option<&str>, message: String) -> Warning {
        match origin {
            Some(o) => Warning {
                file: Some(o.file.clone()),
                line: Some(o.line),
                message,
            },
            None => Warning {
                file: file.map(str::to_owned),
                line: None,
                message,
            },
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: warning: {}", self.message),
            (Some(file), None) => write!(f, "{file}: warning: {}", self.message),
            _ => write!(f, "warning: {}", self.message),
        }
    }
}

/// A loaded configuration and its warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Load a file: `*.toml` as TOML, anything else as an Apache httpd.conf. Validated.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("{name}: cannot read: {e}")))?;
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if is_toml {
        let config = Config::from_toml_str(&text, &name)?;
        let warnings = config.validate()?;
        Ok(Loaded { config, warnings })
    } else {
        let (config, mut warnings) = apache::parse(&text, &name)?;
        warnings.extend(config.validate()?);
        Ok(Loaded { config, warnings })
    }
}

/// Parse a `Listen`-style address: `8080`, `*:8080`, `127.0.0.1:8080`, `[::1]:8080`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = t
            .parse()
            .map_err(|_| format!("invalid listen port '{s}'"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Some(port) = t.strip_prefix("*:") {
        return parse_listen(port);
    }
    t.parse::<SocketAddr>().map_err(|_| {
        format!("invalid listen address '{s}' (expected PORT, IP:PORT or [IPv6]:PORT)")
    })
}

const KNOWN_PATHINFO: &[&str] = &["first-dot", "last-dot", "full", "unescape"];

impl Config {
    /// Parse a TOML document (unknown keys are errors; errors name `origin:line:col`) and
    /// validate it. Use [`Config::validate`] again to get the warnings.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::parse(text, origin)
    }

    /// Serving threads: `workers`, else the number of available cores.
    pub fn worker_threads(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// The listen addresses, parsed.
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.listen
            .iter()
            .map(|l| parse_listen(l).map_err(|e| self.err(e)))
            .collect()
    }

    /// Request-target options derived from the configuration (limits, encoded slashes, slash
    /// merging) for [`crate::uri::parse_target`].
    pub fn uri_options(&self) -> crate::uri::UriOptions {
        crate::uri::UriOptions {
            max_len: self.limits.max_request_line,
            encoded_slashes: self.allow_encoded_slashes,
            merge_slashes: self.merge_slashes,
        }
    }

    /// The balancer a route targets, if any.
    pub fn balancer(&self, name: &str) -> Option<&Balancer> {
        self.balancers
            .iter()
            .find(|b| b.name.eq_ignore_ascii_case(name))
    }

    fn err(&self, message: String) -> ConfigError {
        ConfigError::located(None, self.origin.as_deref(), message)
    }

    /// Check everything that cannot work; return warnings for what is suspicious.
    pub fn validate(&self) -> Result<Vec<Warning>, ConfigError> {
        let file = self.origin.as_deref();
        let mut warnings = Vec::new();
        if self.listen.is_empty() && self.listeners.is_empty() {
            return Err(self.err(
                "no listen address configured (listen = [\"127.0.0.1:8080\"] or Apache Listen)"
                    .into(),
            ));
        }
        self.listen_addrs()?;
        self.front_listeners()?;
        if !self.document_root.starts_with('/') {
            return Err(self.err(format!(
                "document_root must be an absolute path, found '{}'",
                self.document_root
            )));
        }
        if let Some(e) = &self.error_log {
            e.filter_level().map_err(|m| self.err(m))?;
        }
        if let Some(name) = &self.server_name {
            crate::uri::parse_host(name.as_bytes())
                .map_err(|_| self.err(format!("invalid server_name '{name}'")))?;
        }
        let l = &self.limits;
        for (what, v) in [
            ("limits.max_request_line", l.max_request_line),
            ("limits.max_header_line", l.max_header_line),
            ("limits.max_headers", l.max_headers),
            ("limits.max_header_bytes", l.max_header_bytes),
        ] {
            if v == 0 {
                return Err(self.err(format!("{what} must be at least 1")));
            }
        }
        if l.default_max_connections == 0 {
            return Err(self.err("limits.default_max_connections must be at least 1".into()));
        }
        if self.workers == Some(0) {
            return Err(self.err("workers must be at least 1".into()));
        }
        let serves = |c: &Config| !c.routes.is_empty() || c.site.serves_files();
        if !serves(self) && self.vhosts.iter().all(|v| !serves(&v.config)) {
            warnings.push(Warning::located(
                None,
                file,
                "no routes: every request will be answered 404".into(),
            ));
        }
        for (i, r) in self.routes.iter().enumerate() {
            let origin = r.origin.as_ref();
            let rerr = |m: String| {
                ConfigError::located(
                    origin,
                    file,
                    format!("route #{} ({}): {m}", i + 1, r.describe_match()),
                )
            };
            let rwarn = |m: String| {
                Warning::located(
                    origin,
                    file,
                    format!("route #{} ({}): {m}", i + 1, r.describe_match()),
                )
            };
            match (&r.path, &r.regex) {
                (Some(_), Some(_)) => {
                    return Err(rerr("give either path or regex, not both".into()));
                }
                (None, None) => return Err(rerr("give a path (prefix) or a regex".into())),
                (Some(p), None) => {
                    if !p.starts_with('/') {
                        return Err(rerr(format!("path must start with '/', found '{p}'")));
                    }
                    if r.target.path().contains('$') {
                        warnings.push(rwarn(
                            "'$' in the target of a prefix route is taken literally (use regex for $N)".into(),
                        ));
                    }
                    let tp = r.target.path();
                    if p.ends_with('/') && r.target != Target::Exclude && !tp.ends_with('/') {
                        warnings.push(rwarn(format!(
                            "the path ends with '/' but the target '{}' does not: the request \
                             remainder is appended without a separator",
                            r.target
                        )));
                    }
                }
                (None, Some(_)) => {}
            }
            if let Target::Balancer(b) = &r.target {
                if self.balancer(&b.name).is_none() {
                    return Err(rerr(format!("unknown balancer '{}'", b.name)));
                }
                if r.worker != WorkerParams::default() {
                    warnings.push(rwarn(
                        "worker parameters on a balancer route are ignored; set them on the members".into(),
                    ));
                }
            }
            if r.target == Target::Exclude && r.worker != WorkerParams::default() {
                warnings.push(rwarn(
                    "worker parameters on an exclusion are ignored".into(),
                ));
            }
            if let Some(pi) = &r.pathinfo {
                if pi.is_empty() {
                    return Err(rerr("pathinfo must not be empty".into()));
                }
                if !KNOWN_PATHINFO.iter().any(|k| k.eq_ignore_ascii_case(pi)) && pi != "1" {
                    warnings.push(rwarn(format!(
                        "pathinfo '{pi}' is not first-dot, last-dot, full or unescape: \
                         PATH_INFO will be the whole backend path (like '1')"
                    )));
                }
            }
            check_worker(&r.worker).map_err(rerr)?;
        }
        let mut seen: Vec<&str> = Vec::new();
        for b in &self.balancers {
            let origin = b.origin.as_ref();
            let berr = |m: String| {
                ConfigError::located(origin, file, format!("balancer '{}': {m}", b.name))
            };
            if b.name.is_empty()
                || !b
                    .name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            {
                return Err(berr("invalid name (letters, digits, '-', '_', '.')".into()));
            }
            if seen.iter().any(|s| s.eq_ignore_ascii_case(&b.name)) {
                return Err(berr("defined twice".into()));
            }
            seen.push(&b.name);
            if b.members.is_empty() {
                return Err(berr("has no members".into()));
            }
            let mut routes: Vec<&str> = Vec::new();
            for (j, m) in b.members.iter().enumerate() {
                let merr = |e: String| berr(format!("member #{} ({}): {e}", j + 1, m.url));
                if m.url.path.contains('$') {
                    return Err(merr("'$' is not allowed in a member URL".into()));
                }
                if m.lbset > 99 {
                    return Err(merr(format!("lbset must be 0..99, found {}", m.lbset)));
                }
                if LoadFactor::from_hundredths(m.loadfactor.0).is_none() {
                    return Err(merr("loadfactor must be from 1 to 100".into()));
                }
                check_worker(&m.worker).map_err(merr)?;
                if let Some(rt) = &m.route {
                    if routes.contains(&rt.as_str()) {
                        warnings.push(Warning::located(
                            origin,
                            file,
                            format!("balancer '{}': route '{rt}' used by two members", b.name),
                        ));
                    }
                    routes.push(rt);
                }
            }
            if let Some((cookie, param)) = b.sticky_names()
                && (cookie.is_empty() || param.is_empty())
            {
                return Err(berr(
                    "sticky_session needs a cookie name, and after a '|' a URL parameter name"
                        .into(),
                ));
            }
            for m in &b.members {
                if let Some(rd) = &m.redirect {
                    if b.sticky_session.is_none() {
                        return Err(berr(format!(
                            "member {}: redirect '{rd}' has no effect without sticky_session \
                             (stickysession): a redirect takes over only the requests whose \
                             session route names this member",
                            m.url
                        )));
                    }
                    if !b.members.iter().any(|o| o.route.as_deref() == Some(rd)) {
                        return Err(berr(format!("redirect '{rd}' names no member route")));
                    }
                }
            }
            if b.nofailover && b.sticky_session.is_none() {
                return Err(berr(
                    "nofailover has no effect without sticky_session (stickysession): it only \
                     stops a request whose session route names an unusable member from going \
                     to another member"
                        .into(),
                ));
            }
            if b.sticky_session.is_some() && b.members.iter().all(|m| m.route.is_none()) {
                warnings.push(Warning::located(
                    origin,
                    file,
                    format!(
                        "balancer '{}': sticky_session is set but no member has a route, so no \
                         session can stick",
                        b.name
                    ),
                ));
            }
            if b.members.iter().all(|m| !m.status.usable()) {
                warnings.push(Warning::located(
                    origin,
                    file,
                    format!("balancer '{}': every member is disabled or stopped", b.name),
                ));
            }
            let used = self
                .routes
                .iter()
                .any(|r| matches!(&r.target, Target::Balancer(u) if u.name.eq_ignore_ascii_case(&b.name)));
            if !used {
                warnings.push(Warning::located(
                    origin,
                    file,
                    format!("balancer '{}' is not used by any route", b.name),
                ));
            }
        }
        for v in &self.vhosts {
            for w in v.config.validate()? {
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
        }
        Ok(warnings)
    }

    /// `--listen`: these addresses instead of the configured ones. `<VirtualHost>` addresses
    /// then match a connection on any port (their ports named the configured ones).
    pub fn override_listen(&mut self, listen: Vec<String>) {
        for v in &mut self.vhosts {
            for a in &mut v.addrs {
                a.port = None;
            }
            v.config.listen.clone_from(&listen);
        }
        self.listen = listen;
        self.listeners.clear();
    }

    /// A human summary for `fcgi-proxy check-config`: per route the match, target, effective
    /// reuse, `max` cap and timeouts.
    pub fn describe(&self) -> String {
        use fmt::Write;
        let mut s = String::new();
        let d = duration::format_duration;
        let _ = writeln!(
            s,
            "configuration{}",
            self.origin
                .as_deref()
                .map(|o| format!(" from {o}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  listen: {}{}",
            self.listen.join(", "),
            self.workers
                .map(|n| format!("; workers: {n}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  server_name: {}; server_admin: {}; document_root: {}",
            self.server_name.as_deref().unwrap_or("(local address)"),
            self.server_admin.as_deref().unwrap_or("[no address given]"),
            self.document_root
        );
        let _ = writeln!(
            s,
            "  defaults: backend_type {}, pass_authorization {}, allow_encoded_slashes {:?}, merge_slashes {}",
            self.backend_type,
            onoff(self.pass_authorization),
            self.allow_encoded_slashes,
            onoff(self.merge_slashes)
        );
        let t = &self.timeouts;
        let _ = writeln!(
            s,
            "  timeouts: header_read {}, body_read {}, client_write {}, keep_alive {}, backend_io {}, backend_connect {}",
            d(t.header_read),
            d(t.body_read),
            d(t.client_write),
            d(t.keep_alive),
            d(t.backend_io),
            d(t.backend_connect.unwrap_or(t.backend_io))
        );
        let l = &self.limits;
        let _ = writeln!(
            s,
            "  limits: request_line {}, header_line {}, headers {}, header_bytes {}, body_buffer {}, body {}, keep_alive {} ({} requests)",
            l.max_request_line,
            l.max_header_line,
            l.max_headers,
            l.max_header_bytes,
            l.max_body_buffer,
            if l.max_body == 0 {
                "unlimited".to_string()
            } else {
                l.max_body.to_string()
            },
            onoff(l.keep_alive),
            l.max_keep_alive_requests
        );
        let unlimited = |n: u64| {
            if n == 0 {
                "unlimited".to_string()
            } else {
                n.to_string()
            }
        };
        let _ = writeln!(
            s,
            "  admission: client connections {}, waiting per backend {}, buffered bodies {} bytes",
            if l.max_connections == 0 {
                "auto (the open-file limit less an eighth and 128, at most 65536)".to_string()
            } else {
                l.max_connections.to_string()
            },
            unlimited(u64::from(l.max_waiting)),
            unlimited(l.body_buffer_budget)
        );
        if !self.setenvif.is_empty() || !self.setenv.is_empty() || !self.fcgi_setenvif.is_empty() {
            let _ = writeln!(
                s,
                "  server env rules: {} SetEnvIf, {} SetEnv, {} ProxyFCGISetEnvIf",
                self.setenvif.len(),
                self.setenv.len(),
                self.fcgi_setenvif.len()
            );
        }
        let _ = writeln!(s, "routes (first match wins):");
        if self.routes.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        for (i, r) in self.routes.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {}. {} -> {}{}",
                i + 1,
                r.describe_match(),
                r.target,
                r.origin
                    .as_ref()
                    .map(|o| format!("  ({o})"))
                    .unwrap_or_default()
            );
            match &r.target {
                Target::Exclude => {
                    let _ = writeln!(s, "       not proxied");
                    continue;
                }
                Target::Worker(w) => {
                    let _ = writeln!(s, "       backend {}", w.socket);
                    let _ = writeln!(
                        s,
                        "       {}",
                        describe_worker(&r.worker, &r.worker.effective(self))
                    );
                }
                Target::Balancer(b) => {
                    let _ = writeln!(s, "       balancer {} (members listed below)", b.name);
                }
            }
            let _ = writeln!(
                s,
                "       backend_type {}, pathinfo {}, pass_authorization {}",
                r.backend_type(self),
                r.pathinfo.as_deref().unwrap_or("(unset)"),
                onoff(r.pass_authorization(self))
            );
            if !r.setenvif.is_empty() || !r.setenv.is_empty() || !r.fcgi_setenvif.is_empty() {
                let _ = writeln!(
                    s,
                    "       env rules: {} SetEnvIf, {} SetEnv, {} ProxyFCGISetEnvIf",
                    r.setenvif.len(),
                    r.setenv.len(),
                    r.fcgi_setenvif.len()
                );
            }
        }
        describe_site(&mut s, &self.site, 0);
        for v in &self.vhosts {
            let _ = writeln!(
                s,
                "virtual host {} ({}){}: document_root {}, {} route(s)",
                v.names.first().map_or("(no ServerName)", String::as_str),
                v.addrs
                    .iter()
                    .map(|a| format!(
                        "{}:{}",
                        a.ip.map_or("*".to_string(), |i| i.to_string()),
                        a.port.map_or("*".to_string(), |p| p.to_string())
                    ))
                    .collect::<Vec<_>>()
                    .join(" "),
                v.origin
                    .as_ref()
                    .map(|o| format!(" at {o}"))
                    .unwrap_or_default(),
                v.config.document_root,
                v.config.routes.len()
            );
            if v.names.len() > 1 {
                let _ = writeln!(s, "  also named: {}", v.names[1..].join(", "));
            }
            // Its own sections; the main server's and the .htaccess files', listed above, are
            // its too.
            let main = self.site.sections.iter().filter(|x| !x.htaccess).count();
            describe_site(&mut s, &v.config.site, main);
        }
        if !self.balancers.is_empty() {
            let _ = writeln!(s, "balancers:");
        }
        for b in &self.balancers {
            let n = b.members.len();
            let _ = writeln!(
                s,
                "  {} ({}, maxattempts {}, forcerecovery {}, timeout {})",
                b.url_name(),
                b.lbmethod,
                b.max_attempts.map_or(n.saturating_sub(1), |m| m as usize),
                onoff(b.force_recovery),
                b.timeout
                    .filter(|t| !t.is_zero())
                    .map(|t| format!("{} (wait for a usable member)", d(t)))
                    .unwrap_or_else(|| "none (no wait)".into())
            );
            if let Some((cookie, param)) = b.sticky_names() {
                let _ = writeln!(
                    s,
                    "    sticky sessions: cookie {cookie}, URL parameter {param}{}, {}, \
                     nofailover {}",
                    if b.scolon_path_delim {
                        " (ended by ';' too)"
                    } else {
                        ""
                    },
                    match b.sticky_session_sep.0 {
                        Some(c) => format!("route after the first '{c}' of the value"),
                        None => "route: the whole value".to_string(),
                    },
                    onoff(b.nofailover)
                );
            }
            for m in &b.members {
                let _ = writeln!(
                    s,
                    "    - {} [{}] loadfactor {}, lbset {}, status {}{}{}",
                    m.url,
                    m.url.socket,
                    m.loadfactor,
                    m.lbset,
                    m.status,
                    m.route
                        .as_deref()
                        .map(|r| format!(", route {r}"))
                        .unwrap_or_default(),
                    m.redirect
                        .as_deref()
                        .map(|r| format!(", redirect {r}"))
                        .unwrap_or_default()
                );
                let _ = writeln!(
                    s,
                    "      {}",
                    describe_worker(&m.worker, &m.worker.effective(self))
                );
            }
        }
        s
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The handlers of a server's sections, for `check-config`.
fn describe_site(s: &mut String, site: &site::Site, skip: usize) {
    use fmt::Write;
    for sec in site
        .sections
        .iter()
        .skip(skip)
        .filter(|x| skip == 0 || !x.htaccess)
    {
        let mut parts = Vec::new();
        let mut show = |d: &site::DirSettings, prefix: &str| {
            if let Some(site::Handler::Proxy { url, defined, .. }) = &d.handler {
                parts.push(format!(
                    "{prefix}handler {url}{}",
                    if *defined { "" } else { " (default worker)" }
                ));
            }
            if let Some(a) = d.describe_access() {
                parts.push(format!("{prefix}access: {a}"));
            }
        };
        show(&sec.settings, "");
        for i in &sec.ifs {
            show(&i.settings, "if -f/-d/-e: ");
        }
        if parts.is_empty() {
            continue;
        }
        let what = match &sec.matcher {
            site::Matcher::Path(p) => p.clone(),
            site::Matcher::Regex(r) => format!("~ {}", r.as_str()),
        };
        let _ = writeln!(
            s,
            "  <{} {what}> ({}): {}",
            sec.kind,
            sec.origin,
            parts.join("; ")
        );
    }
}

fn onoff(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn describe_worker(p: &WorkerParams, w: &EffectiveWorker) -> String {
    let d = duration::format_duration;
    // The cap is what keeps reused connections from saturating a backend with a fixed number
    // of workers: say where it comes from.
    let max = if p.max.is_some() {
        format!("{} (configured)", w.max)
    } else {
        format!(
            "{} (default bound; below it the limit is learned from the backend: what it \
             accepts at once, FCGI_MAX_CONNS as a hint)",
            w.max
        )
    };
    format!(
        "reuse {}, max {}, timeout {}, connect {}, acquire {}, retry {}, ttl {}, flushpackets {}",
        if w.reuse {
            "on (KEEP_CONN)"
        } else {
            "off (one connection per request)"
        },
        max,
        d(w.io_timeout),
        d(w.connect_timeout),
        w.acquire.map(d).unwrap_or_else(|| "wait".into()),
        d(w.retry),
        w.ttl
            .map(d)
            .unwrap_or_else(|| format!("{} (default)", d(crate::pool::DEFAULT_IDLE_TTL))),
        p.flush_packets
    )
}

fn check_worker(w: &WorkerParams) -> Result<(), String> {
    if w.max == Some(0) {
        return Err("max must be at least 1".into());
    }
    if let Some(a) = w.acquire
        && a.as_millis() < 1
    {
        return Err("acquire must be at least 1ms".into());
    }
    if let Some(why) = w.flush_packets.unsupported() {
        return Err(format!(
            "flush_packets = \"{}\" (flushpackets) is not supported: {why}",
            w.flush_packets
        ));
    }
    if w.flush_wait.is_some() {
        return Err(format!(
            "flush_wait (flushwait) is not supported: {}",
            apache::FLUSH_WAIT_WHY
        ));
    }
    for (what, v) in [
        ("timeout", w.timeout),
        ("connection_timeout", w.connection_timeout),
    ] {
        if v.is_some_and(|v| v.is_zero()) {
            return Err(format!("{what} must be greater than 0"));
        }
    }
    Ok(())
}
