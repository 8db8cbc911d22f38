//! Importer for an Apache httpd 2.4 configuration: the mod_proxy directives, virtual hosts,
//! and the filesystem sections of a site served through `SetHandler "proxy:…"`. The text is
//! first read as Apache reads it ([`super::read`]: includes, definitions, `<IfModule>`,
//! `<IfDefine>`).
//!
//! Understood: `Listen`, `ServerName`, `ServerAdmin`, `DocumentRoot`, `Timeout`,
//! `ProxyTimeout`, `KeepAlive*`, `LimitRequest*`, `AllowEncodedSlashes`, `MergeSlashes`,
//! `ProxyPass`/`ProxyPassMatch` (server level and inside `<Location>`/`<LocationMatch>`),
//! `ProxyPass /x !`, `SetEnvIf`/`SetEnvIfNoCase`/`BrowserMatch[NoCase]`, `SetEnv`,
//! `ProxyFCGIBackendType`, `ProxyFCGISetEnvIf`, `CGIPassAuth`, `<Proxy balancer://…>` with
//! `BalancerMember` and `ProxySet`, `<Proxy fcgi://…>`/`ProxySet url` worker parameters,
//! `BalancerMember balancer://… url` outside a section; `<VirtualHost>` (each its own server
//! over the main one), `ServerAlias`, `Alias`, `AliasMatch`, `AccessFileName`; `<Directory>`,
//! `<DirectoryMatch>`, `<Files>`, `<FilesMatch>`, `<Location>`, `<LocationMatch>` and `<If>`
//! (file tests) kept as sections ([`super::site`]) with `SetHandler`, `DirectoryIndex`,
//! `FallbackResource`, `AcceptPathInfo`, `DirectorySlash`, `Options [+-]FollowSymLinks`,
//! `AllowOverride`, `Require all granted|denied` and `Require local`. Other access control is
//! refused with its place. `<IfVersion>` contents are processed. Everything else is reported
//! in **one** warning with file and line numbers.
//!
//! Route order: routes from `<Location>` blocks come first, later blocks before earlier ones
//! (Apache merges Location sections in order, so the last matching one's ProxyPass wins), then
//! server-level `ProxyPass`/`ProxyPassMatch` in file order. `<Location>` settings without a
//! ProxyPass apply to every route whose URL space the location covers.
//!
//! Connection reuse is on unless `disablereuse=on`/`enablereuse=off` (product decision; Apache
//! defaults to off for fcgi).

use core::time::Duration;
use std::sync::Arc;

use super::duration::parse_duration;
use super::expr::{EnvAction, FcgiSetEnvIf, SetEnv, SetEnvIf};
use super::model::{
    BackendType, Balancer, Config, FlushPackets, LbMethod, LoadFactor, Member, MemberStatus,
    Origin, Pattern, Route, StickySep, WorkerParams,
};
use super::read::SourceLine;
use super::site::{
    AcceptPathInfo, Alias, AuthMerging, Authz, Compat, DirSettings, FileTest, Handler, IfBlock,
    IpNet, Matcher, Order, Overrides, PathKind, Section, SectionKind, Site, StatusRule, VhostAddr,
    VirtualHost, Who,
};
use super::url::{BackendSocket, Target, WorkerUrl};
use super::{ConfigError, Warning};
use crate::uri::EncodedSlashes;

/// Parse an httpd.conf text. `origin` names the file in messages (and its directory is the
/// default `ServerRoot`).
pub fn parse(text: &str, origin: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    parse_with(text, origin, &[])
}

/// [`parse`] with definitions given on the command line (`-D NAME[=VALUE]`).
pub fn parse_with(
    text: &str,
    origin: &str,
    defines: &[(String, String)],
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let read = super::read::read(origin, text, defines)?;
    let mut imp = Importer::new(origin);
    imp.modules = (read.modules.clone(), read.modules_known);
    imp.server_root.clone_from(&read.server_root);
    for (what, file, line) in &read.undecided {
        imp.file = file.to_string();
        imp.ignore(what, *line);
    }
    for (file, line, note) in &read.notes {
        imp.warnings.push(Warning {
            file: Some(file.to_string()),
            line: Some(*line),
            message: note.clone(),
        });
    }
    imp.run(&read.lines)?;
    imp.file = origin.to_owned();
    let tls = imp.tls.clone();
    let main_file = imp.main_file.clone();
    let access_log = imp.access_log();
    let error_log = imp.log.error.clone();
    let (mut cfg, warnings) = imp.finish()?;
    let mut with_tls = Importer::new(&main_file);
    with_tls.tls = tls;
    with_tls.apply_tls(&mut cfg)?;
    cfg.access_log = access_log;
    cfg.error_log = error_log;
    Ok((cfg, warnings))
}

/// `ap_getword_conf`: whitespace-separated words; `"…"` or `'…'` group words (a backslash
/// before the quote character escapes it).
pub(crate) fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let mut w = String::new();
        if c == '"' || c == '\'' {
            chars.next();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == '\\' && chars.peek() == Some(&c) {
                    w.push(c);
                    chars.next();
                } else if ch == c {
                    closed = true;
                    break;
                } else {
                    w.push(ch);
                }
            }
            if !closed {
                return Err(format!("unterminated {c}quote{c}"));
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                w.push(ch);
                chars.next();
            }
        }
        words.push(w);
    }
    Ok(words)
}

/// Worker parameters as written (only what was set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct WorkerSet {
    reuse: Option<bool>,
    max: Option<u32>,
    ttl: Option<Duration>,
    timeout: Option<Duration>,
    connection_timeout: Option<Duration>,
    acquire: Option<Duration>,
    retry: Option<Duration>,
    flush_packets: Option<FlushPackets>,
}

impl WorkerSet {
    fn apply(&self, w: &mut WorkerParams) {
        if let Some(v) = self.reuse {
            w.reuse = v;
        }
        if let Some(v) = self.max {
            w.max = Some(v);
        }
        if let Some(v) = self.ttl {
            w.ttl = Some(v);
        }
        if let Some(v) = self.timeout {
            w.timeout = Some(v);
        }
        if let Some(v) = self.connection_timeout {
            w.connection_timeout = Some(v);
        }
        if let Some(v) = self.acquire {
            w.acquire = Some(v);
        }
        if let Some(v) = self.retry {
            w.retry = Some(v);
        }
        if let Some(v) = self.flush_packets {
            w.flush_packets = v;
        }
    }
}

/// Balancer parameters as written.
#[derive(Debug, Clone, Default)]
struct BalancerSet {
    lbmethod: Option<LbMethod>,
    max_attempts: Option<u32>,
    sticky_session: Option<String>,
    sticky_session_sep: Option<StickySep>,
    scolon_path_delim: Option<bool>,
    nofailover: Option<bool>,
    force_recovery: Option<bool>,
    timeout: Option<Duration>,
}

impl BalancerSet {
    fn apply(&self, b: &mut Balancer) {
        if let Some(v) = self.lbmethod {
            b.lbmethod = v;
        }
        if let Some(v) = self.max_attempts {
            b.max_attempts = Some(v);
        }
        if let Some(v) = &self.sticky_session {
            b.sticky_session = Some(v.clone());
        }
        if let Some(v) = self.sticky_session_sep {
            b.sticky_session_sep = v;
        }
        if let Some(v) = self.scolon_path_delim {
            b.scolon_path_delim = v;
        }
        if let Some(v) = self.nofailover {
            b.nofailover = v;
        }
        if let Some(v) = self.force_recovery {
            b.force_recovery = v;
        }
        if let Some(v) = self.timeout {
            b.timeout = Some(v);
        }
    }
}

/// Member-only parameters as written.
#[derive(Debug, Clone, Default)]
struct MemberSet {
    loadfactor: Option<LoadFactor>,
    lbset: Option<u8>,
    status: Option<String>,
    route: Option<String>,
    redirect: Option<String>,
}

/// Keys of `ProxyPass`, `BalancerMember` and `ProxySet`, sorted by what they configure.
#[derive(Debug, Clone, Default)]
struct Keys {
    worker: WorkerSet,
    balancer: BalancerSet,
    member: MemberSet,
    nocanon: bool,
    noquery: bool,
    /// Keys Apache knows that we accept and ignore.
    ignored: Vec<String>,
    /// Whether any balancer key was given.
    has_balancer: bool,
    has_member: bool,
}

/// The one argument of `name`, lower case.
fn one_lower(imp: &Importer, name: &str, args: &[String], n: usize) -> Result<String, ConfigError> {
    imp.need_args(name, args, 1, 1, n)?;
    Ok(args[0].to_ascii_lowercase())
}

fn on_off(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{key} must be On or Off, found '{v}'")),
    }
}

fn number<T: core::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{key} must be a number, found '{v}'"))
}

const IGNORED_WORKER_KEYS: &[&str] = &[
    "min",
    "smax",
    "keepalive",
    "iobuffersize",
    "receivebuffersize",
    "ping",
    "addressttl",
    "hcmethod",
    "hcinterval",
    "hcpasses",
    "hcfails",
    "hcuri",
    "hcexpr",
    "hctemplate",
    "secret",
    "upgrade",
    "responsefieldsize",
    "disablereuse_set",
    "interpolate",
    "mapping",
    "failonstatus",
    "failontimeout",
    "nonce",
    "growth",
    "lbpriority",
];

/// Why `flushwait=` is refused.
pub(crate) const FLUSH_WAIT_WHY: &str = "it applies only to flushpackets=auto, and response data \
    is written to the client as soon as it arrives from the backend (what flushpackets=on does)";

fn parse_keys(args: &[String]) -> Result<Keys, String> {
    let mut k = Keys::default();
    for a in args {
        let lower = a.to_ascii_lowercase();
        match lower.as_str() {
            "nocanon" => {
                k.nocanon = true;
                continue;
            }
            "noquery" => {
                k.noquery = true;
                continue;
            }
            "interpolate" => {
                k.ignored.push(a.clone());
                continue;
            }
            _ => {}
        }
        let Some((key, v)) = a.split_once('=') else {
            return Err(format!("invalid parameter '{a}' (expected key=value)"));
        };
        let key_l = key.to_ascii_lowercase();
        let w = &mut k.worker;
        match key_l.as_str() {
            "enablereuse" => w.reuse = Some(on_off(key, v)?),
            "disablereuse" => w.reuse = Some(!on_off(key, v)?),
            "max" | "hmax" => {
                let n: u32 = number(key, v)?;
                if n == 0 {
                    return Err("max must be at least 1".into());
                }
                w.max = Some(n);
            }
            "ttl" => w.ttl = Some(parse_duration(v, "s")?),
            "timeout" => {
                // On a balancer URL this is the balancer's wait; decided by the caller.
                let d = parse_duration(v, "s")?;
                w.timeout = Some(d);
                k.balancer.timeout = Some(d);
            }
            "connectiontimeout" => w.connection_timeout = Some(parse_duration(v, "s")?),
            "acquire" => w.acquire = Some(parse_duration(v, "ms")?),
            "retry" => w.retry = Some(parse_duration(v, "s")?),
            "flushpackets" => {
                let f = match v.to_ascii_lowercase().as_str() {
                    "on" => FlushPackets::On,
                    "off" => FlushPackets::Off,
                    "auto" => FlushPackets::Auto,
                    _ => return Err(format!("flushpackets must be on, off or auto, found '{v}'")),
                };
                if let Some(why) = f.unsupported() {
                    return Err(format!("{key}={v} is not supported: {why}"));
                }
                w.flush_packets = Some(f);
            }
            "flushwait" => return Err(format!("{key}={v} is not supported: {FLUSH_WAIT_WHY}")),
            "lbmethod" => {
                k.has_balancer = true;
                k.balancer.lbmethod = Some(match v.to_ascii_lowercase().as_str() {
                    "byrequests" => LbMethod::Byrequests,
                    "bybusyness" => LbMethod::Bybusyness,
                    other => {
                        return Err(format!(
                            "lbmethod '{other}' is not supported (byrequests or bybusyness)"
                        ));
                    }
                });
            }
            "maxattempts" => {
                k.has_balancer = true;
                k.balancer.max_attempts = Some(number(key, v)?);
            }
            "stickysession" => {
                k.has_balancer = true;
                k.balancer.sticky_session = Some(v.to_owned());
            }
            "stickysessionsep" => {
                k.has_balancer = true;
                k.balancer.sticky_session_sep = Some(StickySep::parse(v)?);
            }
            "scolonpathdelim" => {
                k.has_balancer = true;
                k.balancer.scolon_path_delim = Some(on_off(key, v)?);
            }
            "nofailover" => {
                k.has_balancer = true;
                k.balancer.nofailover = Some(on_off(key, v)?);
            }
            "forcerecovery" => {
                k.has_balancer = true;
                k.balancer.force_recovery = Some(on_off(key, v)?);
            }
            "loadfactor" => {
                k.has_member = true;
                k.member.loadfactor = Some(LoadFactor::parse(v)?);
            }
            "lbset" => {
                k.has_member = true;
                let n: u8 = number(key, v)?;
                if n > 99 {
                    return Err(format!("lbset must be 0..99, found {n}"));
                }
                k.member.lbset = Some(n);
            }
            "status" => {
                k.has_member = true;
                MemberStatus::parse(v)?;
                k.member.status = Some(v.to_owned());
            }
            "route" => {
                k.has_member = true;
                k.member.route = Some(v.to_owned());
            }
            "redirect" => {
                k.has_member = true;
                k.member.redirect = Some(v.to_owned());
            }
            _ if IGNORED_WORKER_KEYS.contains(&key_l.as_str()) => k.ignored.push(a.clone()),
            _ => return Err(format!("unknown parameter '{key}'")),
        }
    }
    Ok(k)
}

#[derive(Debug, Clone)]
enum Ctx {
    /// Server level (also `<VirtualHost>`, `<IfVersion>`).
    Server,
    /// `<Location>` / `<LocationMatch>`: index into the scope's `locations`.
    Location(usize),
    /// `<Directory>`, `<DirectoryMatch>`, `<Files>`, `<FilesMatch>`: index into the scope's
    /// `site.sections`.
    Section(usize),
    /// `<If>` inside a section: (section, index into its `ifs`).
    If(usize, usize),
    /// `<Proxy balancer://…>`: index into `balancers`.
    BalancerSection(usize),
    /// `<Proxy fcgi://…>`: index into `worker_defs`.
    WorkerSection(usize),
    /// Contents not understood (a section fcgi-proxy does not know, an `<If>` expression it
    /// cannot evaluate): skipped, but access restrictions in it are refused.
    Skip,
    /// `<RequireAll>`/`<RequireAny>`/`<RequireNone>` (the innermost open one is the last of
    /// `Importer::authz_open`) inside this context.
    Require(Box<Ctx>),
}

#[derive(Debug, Clone)]
struct LocationBlock {
    path: String,
    regex: Option<Pattern>,
    line: usize,
    route: Option<Route>,
    setenvif: Vec<SetEnvIf>,
    setenv: Vec<SetEnv>,
    fcgi_setenvif: Vec<FcgiSetEnvIf>,
    backend_type: Option<BackendType>,
    pass_authorization: Option<bool>,
    /// Its section in the scope's `site.sections` (handler, access, ...).
    section: usize,
    file: String,
}

impl LocationBlock {
    fn has_settings(&self) -> bool {
        !self.setenvif.is_empty()
            || !self.setenv.is_empty()
            || !self.fcgi_setenvif.is_empty()
            || self.backend_type.is_some()
            || self.pass_authorization.is_some()
    }
}

/// A route with the worker keys it was given (worker definitions merge under them).
#[derive(Debug, Clone)]
struct PendingRoute {
    route: Route,
    worker: WorkerSet,
}

#[derive(Debug, Clone)]
struct PendingMember {
    member: Member,
    worker: WorkerSet,
}

#[derive(Debug, Clone)]
struct PendingBalancer {
    balancer: Balancer,
    members: Vec<PendingMember>,
}

#[derive(Debug, Clone)]
struct WorkerDef {
    url: WorkerUrl,
    worker: WorkerSet,
}

/// What one server (the main server or a `<VirtualHost>`) says.
#[derive(Debug, Clone, Default)]
struct Scope {
    server_name: Option<String>,
    server_admin: Option<String>,
    document_root: Option<String>,
    backend_type: Option<BackendType>,
    pass_authorization: Option<bool>,
    setenvif: Vec<SetEnvIf>,
    setenv: Vec<SetEnv>,
    fcgi_setenvif: Vec<FcgiSetEnvIf>,
    server_routes: Vec<PendingRoute>,
    location_routes: Vec<(usize, PendingRoute)>,
    locations: Vec<LocationBlock>,
    site: Site,
    /// `ServerAlias` names (lower case).
    aliases: Vec<String>,
    addrs: Vec<VhostAddr>,
    origin: Option<Origin>,
}

struct Importer {
    /// The file of the line being read (the main file otherwise).
    file: String,
    main_file: String,
    /// `ServerRoot` as last read (relative file names are below it); none: the main file's
    /// directory.
    server_root: Option<String>,
    cfg: Config,
    warnings: Vec<Warning>,
    ignored: Vec<(String, Vec<(String, usize)>)>,
    main: Scope,
    hosts: Vec<Scope>,
    /// Inside this `<VirtualHost>`.
    in_host: Option<usize>,
    balancers: Vec<PendingBalancer>,
    worker_defs: Vec<WorkerDef>,
    timeout: Option<Duration>,
    proxy_timeout: Option<Duration>,
    /// Open `<Require…>` containers: (all, negate, children, line).
    authz_open: Vec<(bool, bool, Vec<Authz>, usize)>,
    /// Reading an `.htaccess` file: what its directory's `AllowOverride` lets it say.
    htaccess: Option<(Overrides, Origin)>,
    /// The modules the configuration loads, and whether it has `LoadModule` lines.
    modules: (Vec<String>, bool),
    /// mod_ssl and mod_http2 settings: the main server's, then one per `<VirtualHost>`.
    tls: Vec<TlsScope>,
    /// mod_log_config: `LogFormat` by nickname (a format without one is the default), then
    /// the first `CustomLog` (path, format or nickname).
    log: LogScope,
}

#[derive(Debug, Clone, Default)]
struct LogScope {
    formats: Vec<(String, String)>,
    default_format: Option<String>,
    custom: Option<(String, Option<String>)>,
    /// `ErrorLog` and `LogLevel` of the main server.
    error: Option<super::log::ErrorLog>,
}

/// What one server says about TLS and protocols (merged over the main server's at the end).
#[derive(Debug, Clone, Default)]
struct TlsScope {
    engine: Option<bool>,
    cert: Option<(String, usize)>,
    key: Option<String>,
    chain: Option<String>,
    versions: Option<Vec<String>>,
    protocols: Option<Vec<String>>,
    line: usize,
}

/// Directives that restrict who may see what. Dropping one would serve what Apache refuses, so
/// one that is not implemented stops the configuration from loading.
fn restricts_access(lname: &str) -> bool {
    matches!(
        lname,
        "require" | "order" | "allow" | "deny" | "satisfy" | "authtype" | "authname"
    ) || lname.starts_with("auth")
        || lname.starts_with("authz")
        || lname.starts_with("authn")
}

/// `Require all granted`: grants what is not otherwise denied, safe to leave out where it
/// cannot be placed.
fn is_require_granted(lname: &str, args: &[String]) -> bool {
    lname == "require"
        && args.len() == 2
        && args[0].eq_ignore_ascii_case("all")
        && args[1].eq_ignore_ascii_case("granted")
}

/// Directives an `.htaccess` file may hold that never restrict access: they are ignored with a
/// warning like unknown directives of the main configuration. Any other directive fcgi-proxy
/// does not implement stops the start.
const HTACCESS_HARMLESS: &[&str] = &[
    "options",
    "addtype",
    "adddefaultcharset",
    "addcharset",
    "addlanguage",
    "addencoding",
    "defaulttype",
    "errordocument",
    "expiresactive",
    "expiresbytype",
    "expiresdefault",
    "header",
    "fileetag",
    "indexoptions",
    "indexignore",
    "adddescription",
    "languagepriority",
    "forcelanguagepriority",
    "setenv",
    "setenvif",
    "setenvifnocase",
    "browsermatch",
    "browsermatchnocase",
    "contentdigest",
    "limitrequestbody",
];

const ACCESS_SECTIONS: &[&str] = &[
    "limit",
    "limitexcept",
    "authnprovideralias",
    "authzprovideralias",
];

impl Importer {
    fn new(file: &str) -> Importer {
        Importer {
            file: file.to_owned(),
            main_file: file.to_owned(),
            server_root: None,
            cfg: Config {
                origin: Some(file.to_owned()),
                ..Config::default()
            },
            warnings: Vec::new(),
            ignored: Vec::new(),
            main: Scope::default(),
            hosts: Vec::new(),
            in_host: None,
            balancers: Vec::new(),
            worker_defs: Vec::new(),
            timeout: None,
            proxy_timeout: None,
            authz_open: Vec::new(),
            htaccess: None,
            modules: (Vec::new(), false),
            tls: vec![TlsScope::default()],
            log: LogScope::default(),
        }
    }

    fn scope(&mut self) -> &mut Scope {
        match self.in_host {
            Some(i) => &mut self.hosts[i],
            None => &mut self.main,
        }
    }

    fn scope_ref(&self) -> &Scope {
        match self.in_host {
            Some(i) => &self.hosts[i],
            None => &self.main,
        }
    }

    fn err(&self, line: usize, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(Some(&self.file), line, msg)
    }

    fn warn(&mut self, line: usize, msg: impl Into<String>) {
        self.warnings.push(Warning {
            file: Some(self.file.clone()),
            line: Some(line),
            message: msg.into(),
        });
    }

    fn ignore(&mut self, name: &str, line: usize) {
        let at = (self.file.clone(), line);
        match self.ignored.iter_mut().find(|(n, _)| n == name) {
            Some((_, lines)) => lines.push(at),
            None => self.ignored.push((name.to_owned(), vec![at])),
        }
    }

    fn origin(&self, line: usize) -> Origin {
        Origin {
            file: self.file.clone(),
            line,
        }
    }

    /// The per-directory settings a directive in `ctx` sets.
    fn dir_mut(&mut self, ctx: &Ctx) -> Option<&mut DirSettings> {
        if let Ctx::Require(inner) = ctx {
            return self.dir_mut(&inner.clone());
        }
        let scope = self.scope();
        match *ctx {
            Ctx::Server => Some(&mut scope.site.base),
            Ctx::Section(i) => Some(&mut scope.site.sections[i].settings),
            Ctx::If(i, j) => Some(&mut scope.site.sections[i].ifs[j].settings),
            Ctx::Location(i) => {
                let s = scope.locations[i].section;
                Some(&mut scope.site.sections[s].settings)
            }
            _ => None,
        }
    }

    fn run(&mut self, lines: &[SourceLine]) -> Result<(), ConfigError> {
        self.run_in(lines, Ctx::Server)
    }

    /// Read `lines` in context `base` (an `.htaccess` file's lines are in its directory's).
    fn run_in(&mut self, lines: &[SourceLine], base: Ctx) -> Result<(), ConfigError> {
        // Stack of (section name lower-case, context, line).
        let mut stack: Vec<(String, Ctx, usize)> = Vec::new();
        let mut last_file = String::new();
        for line in lines {
            if *line.file != *last_file {
                last_file = line.file.to_string();
                self.file = last_file.clone();
            }
            let n = line.number;
            let t = line.text.as_str();
            let ctx = stack
                .last()
                .map_or_else(|| base.clone(), |(_, c, _)| c.clone());
            if let Some(close) = t.strip_prefix("</") {
                let name = close.trim_end_matches('>').trim().to_ascii_lowercase();
                match stack.pop() {
                    Some((open, popped, _)) if open == name => {
                        if name == "virtualhost" {
                            self.in_host = None;
                        }
                        if let Ctx::Require(inner) = popped {
                            self.close_require(&inner, &name, n)?;
                        }
                    }
                    Some((open, _, l)) => {
                        return Err(self.err(
                            n,
                            format!("</{name}> does not close <{open}> (opened at line {l})"),
                        ));
                    }
                    None => return Err(self.err(n, format!("</{name}> without matching <{name}>"))),
                }
                continue;
            }
            if let Some(open) = t.strip_prefix('<') {
                let Some(inner) = open.strip_suffix('>') else {
                    return Err(self.err(n, format!("section header '{t}' does not end with '>'")));
                };
                let words = split_words(inner).map_err(|e| self.err(n, e))?;
                let Some(name) = words.first() else {
                    return Err(self.err(n, "empty section header"));
                };
                let lname = name.to_ascii_lowercase();
                if ACCESS_SECTIONS.contains(&lname.as_str()) {
                    return Err(self.refuse(n, &format!("<{name}>")));
                }
                if matches!(lname.as_str(), "requireall" | "requireany" | "requirenone") {
                    let inner = match &ctx {
                        Ctx::Require(i) => (**i).clone(),
                        c @ (Ctx::Section(_) | Ctx::If(..) | Ctx::Location(_)) => c.clone(),
                        _ => return Err(self.refuse(n, &format!("<{name}>"))),
                    };
                    self.need_args(name, &words[1..], 0, 0, n)?;
                    self.authz_open.push((
                        lname == "requireall",
                        lname == "requirenone",
                        Vec::new(),
                        n,
                    ));
                    stack.push((lname, Ctx::Require(Box::new(inner)), n));
                    continue;
                }
                let new_ctx = if matches!(ctx, Ctx::Skip) {
                    Ctx::Skip
                } else if matches!(ctx, Ctx::Require(_)) {
                    return Err(self.err(n, format!("<{name}> is not allowed in <Require…>")));
                } else {
                    self.open_section(&lname, name, &words[1..], &ctx, n)?
                };
                stack.push((lname, new_ctx, n));
                continue;
            }
            let words = split_words(t).map_err(|e| self.err(n, e))?;
            let Some((name, args)) = words.split_first() else {
                continue;
            };
            if matches!(ctx, Ctx::Require(_)) && !name.eq_ignore_ascii_case("require") {
                return Err(self.err(
                    n,
                    format!("{name} is not allowed in <RequireAll>/<RequireAny>/<RequireNone>"),
                ));
            }
            if matches!(ctx, Ctx::Skip) {
                let lname = name.to_ascii_lowercase();
                if restricts_access(&lname) && !is_require_granted(&lname, args)
                    || self.htaccess.is_some() && !HTACCESS_HARMLESS.contains(&lname.as_str())
                {
                    return Err(self.refuse(n, &format!("{name} {}", args.join(" "))));
                }
                if lname == "sethandler" {
                    self.warn(
                        n,
                        format!(
                            "SetHandler {} ignored: it is inside a section fcgi-proxy does not \
                             evaluate",
                            args.join(" ")
                        ),
                    );
                }
                continue;
            }
            self.directive(name, args, &ctx, n)?;
        }
        if let Some((name, _, l)) = stack.last() {
            return Err(self.err(*l, format!("<{name}> is never closed")));
        }
        Ok(())
    }

    fn refuse(&self, n: usize, what: &str) -> ConfigError {
        self.err(
            n,
            format!(
                "{what}: access control other than Require (all, local, ip, host, not; \
                 <RequireAll>/<RequireAny>/<RequireNone>), Order/Allow/Deny and Satisfy is not \
                 implemented here; refusing to start rather than serve what Apache would refuse"
            ),
        )
    }

    /// Place a rule or container: in the innermost open container, else in the section's
    /// implicit `<RequireAny>`. Apache refuses what cannot have an effect there.
    fn add_authz(&mut self, ctx: &Ctx, a: Authz, n: usize) -> Result<(), ConfigError> {
        let (parent_any, parent_none) = match ctx {
            Ctx::Require(_) => {
                let top = self.authz_open.last().expect("an open container");
                (!top.0 && !top.1, top.1)
            }
            _ => (true, false),
        };
        match &a {
            Authz::Rule { negate: true, .. } if parent_none => {
                return Err(self.err(
                    n,
                    "negative Require directive has no effect in <RequireNone> directive",
                ));
            }
            Authz::Rule { negate: true, .. } if parent_any => {
                return Err(self.err(
                    n,
                    "negative Require directive has no effect in <RequireAny> directive",
                ));
            }
            Authz::Group { negate: true, .. } if parent_any => {
                return Err(self.err(
                    n,
                    "<RequireNone> directive has no effect in <RequireAny> directive",
                ));
            }
            _ => {}
        }
        if let Ctx::Require(_) = ctx {
            if let Some(top) = self.authz_open.last_mut() {
                top.2.push(a);
            }
            return Ok(());
        }
        let Some(d) = self.dir_mut(ctx) else {
            return Err(self.err(n, "Require is not allowed here"));
        };
        match d.authz.as_mut().map(Arc::make_mut) {
            Some(Authz::Group {
                all: false,
                negate: false,
                children,
            }) => children.push(a),
            _ => {
                d.authz = Some(Arc::new(Authz::Group {
                    all: false,
                    negate: false,
                    children: vec![a],
                }));
            }
        }
        Ok(())
    }

    fn close_require(&mut self, inner: &Ctx, name: &str, n: usize) -> Result<(), ConfigError> {
        let Some((all, negate, children, line)) = self.authz_open.pop() else {
            return Ok(());
        };
        if children.is_empty() {
            return Err(self.err(line, format!("<{name}> holds no authorization directives")));
        }
        let g = Authz::Group {
            all,
            negate,
            children,
        };
        if all && !g.has_positive() {
            return Err(self.err(
                line,
                "<RequireAll> directive contains only negative authorization directives",
            ));
        }
        let parent = if self.authz_open.is_empty() {
            inner.clone()
        } else {
            Ctx::Require(Box::new(inner.clone()))
        };
        self.add_authz(&parent, g, n)
    }

    /// `Require [not] provider args…`.
    fn require(&mut self, args: &[String], ctx: &Ctx, n: usize) -> Result<(), ConfigError> {
        let refuse = |imp: &Self| imp.refuse(n, &format!("Require {}", args.join(" ")));
        let (negate, rest) = match args.split_first() {
            Some((not, rest)) if not.eq_ignore_ascii_case("not") => (true, rest),
            _ => (false, args),
        };
        let Some((provider, list)) = rest.split_first() else {
            return Err(self.err(n, "Require needs a provider"));
        };
        let who = match provider.to_ascii_lowercase().as_str() {
            "all" => match list {
                [g] if g.eq_ignore_ascii_case("granted") => Who::All(true),
                [d] if d.eq_ignore_ascii_case("denied") => Who::All(false),
                _ => return Err(self.err(n, "'Require all' takes 'granted' or 'denied'")),
            },
            "local" if list.is_empty() => Who::Local,
            "ip" if !list.is_empty() => {
                let nets = list
                    .iter()
                    .map(|a| {
                        IpNet::parse(a).ok_or_else(|| {
                            self.err(n, format!("Require ip: '{a}' is not an address or network"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Who::Ip(nets)
            }
            "host" if !list.is_empty() => {
                Who::Host(list.iter().map(|h| h.to_ascii_lowercase()).collect())
            }
            _ => return Err(refuse(self)),
        };
        match ctx {
            Ctx::WorkerSection(_) | Ctx::BalancerSection(_) if who == Who::All(true) && !negate => {
                Ok(())
            }
            Ctx::Section(_) | Ctx::If(..) | Ctx::Location(_) | Ctx::Require(_) => {
                self.add_authz(ctx, Authz::Rule { who, negate }, n)
            }
            _ => Err(refuse(self)),
        }
    }

    /// `Allow from …` / `Deny from …` words.
    fn hosts(&self, name: &str, args: &[String], n: usize) -> Result<Vec<Who>, ConfigError> {
        let Some((from, list)) = args.split_first() else {
            return Err(self.err(n, format!("{name} needs 'from' and hosts")));
        };
        if !from.eq_ignore_ascii_case("from") || list.is_empty() {
            return Err(self.err(n, format!("{name} must be followed by 'from' and hosts")));
        }
        list.iter()
            .map(|w| {
                if w.eq_ignore_ascii_case("all") {
                    Ok(Who::All(true))
                } else if w.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("env=")) {
                    Err(self.refuse(n, &format!("{name} from {w}")))
                } else if let Some(net) = IpNet::parse(w) {
                    Ok(Who::Ip(vec![net]))
                } else if w.contains('/') {
                    Err(self.err(n, format!("{name} from {w}: not an address or network")))
                } else {
                    Ok(Who::Host(vec![w.to_ascii_lowercase()]))
                }
            })
            .collect()
    }

    /// In an `.htaccess` file: whether its `AllowOverride` lets it use a directive of `class`
    /// (Apache answers 500 for every request in the directory otherwise; refused here).
    fn overridable(
        &self,
        name: &str,
        allowed: bool,
        class: &str,
        n: usize,
    ) -> Result<(), ConfigError> {
        match &self.htaccess {
            Some((_, o)) if !allowed => Err(self.err(
                n,
                format!(
                    "{name} is not allowed here: AllowOverride at {o} does not include {class} \
                     (Apache answers 500 for the directory's requests)"
                ),
            )),
            _ => Ok(()),
        }
    }

    fn new_section(
        &mut self,
        kind: SectionKind,
        matcher: Matcher,
        parent: Option<usize>,
        n: usize,
    ) -> usize {
        let origin = self.origin(n);
        let htaccess = self.htaccess.is_some();
        let sections = &mut self.scope().site.sections;
        sections.push(Section {
            kind,
            matcher,
            settings: DirSettings::default(),
            ifs: Vec::new(),
            parent,
            htaccess,
            origin,
        });
        sections.len() - 1
    }

    fn open_section(
        &mut self,
        lname: &str,
        name: &str,
        args: &[String],
        ctx: &Ctx,
        n: usize,
    ) -> Result<Ctx, ConfigError> {
        let regex = |imp: &Self, re: &str| Pattern::new(re, false).map_err(|e| imp.err(n, e));
        match lname {
            "ifversion" => Ok(ctx.clone()),
            "virtualhost" => {
                if !matches!(ctx, Ctx::Server) || self.in_host.is_some() {
                    return Err(self.err(n, "<VirtualHost> is only allowed at server level"));
                }
                if args.is_empty() {
                    return Err(self.err(n, "<VirtualHost> needs an address"));
                }
                let addrs = args
                    .iter()
                    .map(|a| VhostAddr::parse(a).map_err(|e| self.err(n, e)))
                    .collect::<Result<Vec<_>, _>>()?;
                let origin = Some(self.origin(n));
                self.hosts.push(Scope {
                    addrs,
                    origin,
                    ..Scope::default()
                });
                self.in_host = Some(self.hosts.len() - 1);
                self.tls.push(TlsScope::default());
                Ok(Ctx::Server)
            }
            "directory" | "directorymatch" => {
                if !matches!(ctx, Ctx::Server) {
                    return Err(self.err(n, format!("<{name}> is only allowed at server level")));
                }
                let matcher = match (lname, args) {
                    ("directory", [p]) => Matcher::Path(p.clone()),
                    ("directory", [tilde, re]) if tilde == "~" => Matcher::Regex(regex(self, re)?),
                    ("directorymatch", [re]) => Matcher::Regex(regex(self, re)?),
                    _ => return Err(self.err(n, format!("<{name}> takes one argument"))),
                };
                if let Matcher::Path(p) = &matcher
                    && !p.starts_with('/')
                {
                    return Err(self.err(n, format!("<{name} {p}>: the path must be absolute")));
                }
                let kind = if lname == "directory" {
                    SectionKind::Directory
                } else {
                    SectionKind::DirectoryMatch
                };
                Ok(Ctx::Section(self.new_section(kind, matcher, None, n)))
            }
            "files" | "filesmatch" => {
                let parent = match ctx {
                    Ctx::Server => None,
                    Ctx::Section(i)
                        if matches!(
                            self.scope_ref().site.sections[*i].kind,
                            SectionKind::Directory | SectionKind::DirectoryMatch
                        ) =>
                    {
                        Some(*i)
                    }
                    _ => return Err(self.err(n, format!("<{name}> is not allowed here"))),
                };
                let matcher = match (lname, args) {
                    ("files", [p]) => Matcher::Path(p.clone()),
                    ("files", [tilde, re]) if tilde == "~" => Matcher::Regex(regex(self, re)?),
                    ("filesmatch", [re]) => Matcher::Regex(regex(self, re)?),
                    _ => return Err(self.err(n, format!("<{name}> takes one argument"))),
                };
                let kind = if lname == "files" {
                    SectionKind::Files
                } else {
                    SectionKind::FilesMatch
                };
                Ok(Ctx::Section(self.new_section(kind, matcher, parent, n)))
            }
            "if" => {
                let expr = args.join(" ");
                let target = match ctx {
                    Ctx::Section(i) => Some(*i),
                    Ctx::Location(i) => Some(self.scope_ref().locations[*i].section),
                    _ => None,
                };
                match (target, FileTest::parse(&expr)) {
                    (Some(i), Some(test)) => {
                        let origin = self.origin(n);
                        let ifs = &mut self.scope().site.sections[i].ifs;
                        ifs.push(IfBlock {
                            test,
                            settings: DirSettings::default(),
                            origin,
                        });
                        Ok(Ctx::If(i, ifs.len() - 1))
                    }
                    _ => {
                        self.warn(
                            n,
                            format!(
                                "<If \"{expr}\"> ignored with its contents: only -f, -d and -e \
                                 on %{{REQUEST_FILENAME}} inside a section are evaluated"
                            ),
                        );
                        Ok(Ctx::Skip)
                    }
                }
            }
            "location" | "locationmatch" => {
                if !matches!(ctx, Ctx::Server) {
                    return Err(self.err(n, format!("<{name}> cannot be nested")));
                }
                let (path, regex) = match (lname, args) {
                    ("location", [p]) => (p.clone(), None),
                    ("location", [tilde, re]) if tilde == "~" => {
                        (re.clone(), Some(regex(self, re)?))
                    }
                    ("locationmatch", [re]) => (re.clone(), Some(regex(self, re)?)),
                    _ => return Err(self.err(n, format!("<{name}> takes one path argument"))),
                };
                if regex.is_none() && !path.starts_with('/') {
                    return Err(self.err(
                        n,
                        format!(
                            "<Location {path}>: only URL paths starting with '/' are supported"
                        ),
                    ));
                }
                let (kind, matcher) = match &regex {
                    Some(re) => (SectionKind::LocationMatch, Matcher::Regex(re.clone())),
                    None => (SectionKind::Location, Matcher::Path(path.clone())),
                };
                let section = self.new_section(kind, matcher, None, n);
                let file = self.file.clone();
                let locations = &mut self.scope().locations;
                locations.push(LocationBlock {
                    path,
                    regex,
                    line: n,
                    route: None,
                    setenvif: Vec::new(),
                    setenv: Vec::new(),
                    fcgi_setenvif: Vec::new(),
                    backend_type: None,
                    pass_authorization: None,
                    section,
                    file,
                });
                Ok(Ctx::Location(locations.len() - 1))
            }
            "proxy" => {
                if !matches!(ctx, Ctx::Server) {
                    return Err(self.err(n, "<Proxy> is only allowed at server level"));
                }
                let Some((url, keys)) = args.split_first() else {
                    return Err(self.err(n, "<Proxy> needs a URL"));
                };
                if url == "*" {
                    // Forward proxying, which fcgi-proxy does not do.
                    self.ignore("<Proxy *>", n);
                    return Ok(Ctx::Skip);
                }
                let keys =
                    parse_keys(keys).map_err(|e| self.err(n, format!("<Proxy {url}>: {e}")))?;
                if url
                    .get(..9)
                    .is_some_and(|p| p.eq_ignore_ascii_case("balancer:"))
                {
                    let b = match Target::parse(url) {
                        Ok(Target::Balancer(b)) => b,
                        Ok(_) => return Err(self.err(n, format!("invalid balancer URL '{url}'"))),
                        Err(e) => return Err(self.err(n, e)),
                    };
                    let idx = self.balancer_index(&b.name, n);
                    keys.balancer.apply(&mut self.balancers[idx].balancer);
                    Ok(Ctx::BalancerSection(idx))
                } else {
                    let w = WorkerUrl::parse(url).map_err(|e| self.err(n, e))?;
                    self.worker_defs.push(WorkerDef {
                        url: w,
                        worker: keys.worker,
                    });
                    Ok(Ctx::WorkerSection(self.worker_defs.len() - 1))
                }
            }
            _ if self.htaccess.is_some() => Err(self.err(
                n,
                format!("<{name}> in an .htaccess file is not implemented; refusing to start"),
            )),
            _ => {
                self.ignore(&format!("<{name}>"), n);
                Ok(Ctx::Skip)
            }
        }
    }

    fn balancer_index(&mut self, name: &str, line: usize) -> usize {
        let name = name.to_ascii_lowercase();
        if let Some(i) = self.balancers.iter().position(|b| b.balancer.name == name) {
            return i;
        }
        let mut b = Balancer::new(&name);
        b.origin = Some(self.origin(line));
        self.balancers.push(PendingBalancer {
            balancer: b,
            members: Vec::new(),
        });
        self.balancers.len() - 1
    }

    fn need_args(
        &self,
        name: &str,
        args: &[String],
        min: usize,
        max: usize,
        n: usize,
    ) -> Result<(), ConfigError> {
        if args.len() < min || args.len() > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.err(
                n,
                format!("{name} takes {want} argument(s), found {}", args.len()),
            ));
        }
        Ok(())
    }

    fn server_only(&self, name: &str, ctx: &Ctx, n: usize) -> Result<(), ConfigError> {
        if matches!(ctx, Ctx::Server) {
            Ok(())
        } else {
            Err(self.err(n, format!("{name} is not allowed here (server level only)")))
        }
    }

    fn directive(
        &mut self,
        name: &str,
        args: &[String],
        ctx: &Ctx,
        n: usize,
    ) -> Result<(), ConfigError> {
        let lname = name.to_ascii_lowercase();
        match lname.as_str() {
            "listen" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 2, n)?;
                let addr = &args[0];
                super::parse_listen(addr).map_err(|e| self.err(n, e))?;
                // `https` names what the address serves; TLS itself is `SSLEngine on` in the
                // server (or virtual host) of the address, as in Apache.
                if args.len() == 2
                    && !args[1].eq_ignore_ascii_case("http")
                    && !args[1].eq_ignore_ascii_case("https")
                {
                    self.warn(
                        n,
                        format!("Listen protocol '{}' ignored: http or https only", args[1]),
                    );
                }
                self.cfg.listen.push(addr.clone());
            }
            "servername" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 1, n)?;
                let mut v = args[0].as_str();
                for scheme in ["http://", "https://"] {
                    if v.len() > scheme.len()
                        && v.get(..scheme.len())
                            .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
                    {
                        v = &v[scheme.len()..];
                    }
                }
                crate::uri::parse_host(v.as_bytes())
                    .map_err(|_| self.err(n, format!("invalid ServerName '{}'", args[0])))?;
                let host = v.rsplit_once(':').map_or(v, |(h, p)| {
                    if p.bytes().all(|b| b.is_ascii_digit()) {
                        h
                    } else {
                        v
                    }
                });
                let scope = self.scope();
                scope.server_name = Some(v.to_owned());
                scope.aliases.insert(0, host.to_ascii_lowercase());
            }
            "serveradmin" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 1, n)?;
                self.scope().server_admin = Some(args[0].clone());
            }
            "documentroot" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 1, n)?;
                if !args[0].starts_with('/') {
                    return Err(self.err(n, "DocumentRoot must be an absolute path"));
                }
                self.scope().document_root = Some(args[0].clone());
            }
            "timeout" | "proxytimeout" | "keepalivetimeout" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 1, n)?;
                let d = parse_duration(&args[0], "s")
                    .map_err(|e| self.err(n, format!("{name}: {e}")))?;
                match lname.as_str() {
                    "timeout" => self.timeout = Some(d),
                    "proxytimeout" => self.proxy_timeout = Some(d),
                    _ => self.cfg.timeouts.keep_alive = d,
                }
            }
            "keepalive" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 1, n)?;
                self.cfg.limits.keep_alive = on_off(name, &args[0]).map_err(|e| self.err(n, e))?;
            }
            "maxkeepaliverequests" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 1, n)?;
                self.cfg.limits.max_keep_alive_requests =
                    number(name, &args[0]).map_err(|e| self.err(n, e))?;
            }
            "limitrequestline" | "limitrequestfieldsize" | "limitrequestfields" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 1, n)?;
                let v: usize = number(name, &args[0]).map_err(|e| self.err(n, e))?;
                match lname.as_str() {
                    "limitrequestline" => self.cfg.limits.max_request_line = v,
                    "limitrequestfieldsize" => self.cfg.limits.max_header_line = v,
                    _ => self.cfg.limits.max_headers = v,
                }
            }
            "limitrequestbody" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 1, n)?;
                self.cfg.limits.max_body = number(name, &args[0]).map_err(|e| self.err(n, e))?;
            }
            "allowencodedslashes" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 1, n)?;
                self.cfg.allow_encoded_slashes = match args[0].to_ascii_lowercase().as_str() {
                    "on" => EncodedSlashes::On,
                    "off" => EncodedSlashes::Off,
                    "nodecode" => EncodedSlashes::NoDecode,
                    _ => return Err(self.err(n, "AllowEncodedSlashes must be On, Off or NoDecode")),
                };
            }
            "mergeslashes" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 1, 1, n)?;
                self.cfg.merge_slashes = on_off(name, &args[0]).map_err(|e| self.err(n, e))?;
            }
            "proxypass" | "proxypassmatch" => self.proxy_pass(name, &lname, args, ctx, n)?,
            "balancermember" => self.balancer_member(args, ctx, n)?,
            "proxyset" => self.proxy_set(args, ctx, n)?,
            "setenvif" | "setenvifnocase" | "browsermatch" | "browsermatchnocase" => {
                let browser = lname.starts_with("browser");
                let min = if browser { 2 } else { 3 };
                self.need_args(name, args, min, usize::MAX, n)?;
                let (attr, rest) = if browser {
                    ("User-Agent", args)
                } else {
                    (args[0].as_str(), &args[1..])
                };
                let actions = rest[1..]
                    .iter()
                    .map(|a| EnvAction::parse(a))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| self.err(n, format!("{name}: {e}")))?;
                let rule = SetEnvIf::new(attr, &rest[0], lname.ends_with("nocase"), actions)
                    .map_err(|e| self.err(n, format!("{name}: {e}")))?;
                match ctx {
                    Ctx::Location(i) => self.scope().locations[*i].setenvif.push(rule),
                    Ctx::Server => self.scope().setenvif.push(rule),
                    Ctx::Section(_) | Ctx::If(..) => self.ignore(name, n),
                    _ => return Err(self.err(n, format!("{name} is not allowed here"))),
                }
            }
            "setenv" => {
                self.need_args(name, args, 1, 2, n)?;
                let e = SetEnv {
                    name: args[0].clone(),
                    value: args.get(1).cloned().unwrap_or_default(),
                };
                match ctx {
                    Ctx::Location(i) => self.scope().locations[*i].setenv.push(e),
                    Ctx::Server => self.scope().setenv.push(e),
                    Ctx::Section(_) | Ctx::If(..) => self.ignore(name, n),
                    _ => return Err(self.err(n, format!("{name} is not allowed here"))),
                }
            }
            "proxyfcgibackendtype" => {
                self.need_args(name, args, 1, 1, n)?;
                let t = match args[0].to_ascii_uppercase().as_str() {
                    "FPM" => BackendType::Fpm,
                    "GENERIC" => BackendType::Generic,
                    _ => {
                        return Err(self.err(
                            n,
                            "ProxyFCGIBackendType requires one of the following arguments: 'GENERIC', 'FPM'",
                        ));
                    }
                };
                match ctx {
                    Ctx::Location(i) => self.scope().locations[*i].backend_type = Some(t),
                    Ctx::Server => self.scope().backend_type = Some(t),
                    Ctx::Section(_) | Ctx::If(..) => self.ignore(name, n),
                    _ => return Err(self.err(n, format!("{name} is not allowed here"))),
                }
            }
            "proxyfcgisetenvif" => {
                self.need_args(name, args, 2, 3, n)?;
                let e = FcgiSetEnvIf::new(&args[0], &args[1], args.get(2).map(String::as_str))
                    .map_err(|e| self.err(n, e))?;
                match ctx {
                    Ctx::Location(i) => self.scope().locations[*i].fcgi_setenvif.push(e),
                    Ctx::Server => self.scope().fcgi_setenvif.push(e),
                    Ctx::Section(_) | Ctx::If(..) => self.ignore(name, n),
                    _ => return Err(self.err(n, format!("{name} is not allowed here"))),
                }
            }
            "cgipassauth" => {
                self.need_args(name, args, 1, 1, n)?;
                let v = on_off(name, &args[0]).map_err(|e| self.err(n, e))?;
                match ctx {
                    Ctx::Location(i) => self.scope().locations[*i].pass_authorization = Some(v),
                    Ctx::Server => self.scope().pass_authorization = Some(v),
                    Ctx::Section(_) | Ctx::If(..) => self.ignore(name, n),
                    _ => return Err(self.err(n, format!("{name} is not allowed here"))),
                }
            }
            "sslengine"
            | "sslcertificatefile"
            | "sslcertificatekeyfile"
            | "sslcertificatechainfile"
            | "sslprotocol"
            | "protocols" => self.tls_directive(&lname, name, args, ctx, n)?,
            "logformat" | "customlog" | "transferlog" => {
                self.log_directive(&lname, name, args, ctx, n)?;
            }
            "errorlog" | "loglevel" => self.error_log_directive(&lname, name, args, ctx, n)?,
            _ if self.dir_directive(&lname, name, args, ctx, n)? => {}
            _ if self.htaccess.is_some() && !HTACCESS_HARMLESS.contains(&lname.as_str()) => {
                return Err(self.err(
                    n,
                    format!(
                        "{name} in an .htaccess file is not implemented; refusing to start \
                         rather than ignore what may restrict access"
                    ),
                ));
            }
            _ => self.ignore(name, n),
        }
        Ok(())
    }

    /// mod_ssl's certificate directives and mod_http2's `Protocols`, per server.
    fn tls_directive(
        &mut self,
        lname: &str,
        name: &str,
        args: &[String],
        ctx: &Ctx,
        n: usize,
    ) -> Result<(), ConfigError> {
        self.server_only(name, ctx, n)?;
        let i = self.in_host.map_or(0, |h| h + 1);
        match lname {
            "sslengine" => {
                self.need_args(name, args, 1, 1, n)?;
                let on = match args[0].to_ascii_lowercase().as_str() {
                    "on" => true,
                    "off" => false,
                    "optional" | "addr" => {
                        return Err(self.err(
                            n,
                            format!("SSLEngine {} is not supported (on or off)", args[0]),
                        ));
                    }
                    _ => return Err(self.err(n, "SSLEngine must be on or off")),
                };
                self.tls[i].engine = Some(on);
                self.tls[i].line = n;
            }
            "sslcertificatefile" => {
                self.need_args(name, args, 1, 1, n)?;
                self.tls[i].cert = Some((self.server_relative(&args[0]), n));
            }
            "sslcertificatekeyfile" => {
                self.need_args(name, args, 1, 1, n)?;
                self.tls[i].key = Some(self.server_relative(&args[0]));
            }
            "sslcertificatechainfile" => {
                self.need_args(name, args, 1, 1, n)?;
                self.tls[i].chain = Some(self.server_relative(&args[0]));
            }
            "sslprotocol" => {
                if args.is_empty() {
                    return Err(self.err(n, "SSLProtocol needs at least one protocol"));
                }
                super::tls::parse_versions(args).map_err(|e| self.err(n, e))?;
                self.tls[i].versions = Some(args.to_vec());
            }
            _ => {
                if args.is_empty() {
                    return Err(self.err(n, "Protocols needs at least one protocol"));
                }
                for p in args {
                    let l = p.to_ascii_lowercase();
                    if !matches!(l.as_str(), "h2" | "h2c" | "http/1.1") {
                        return Err(self.err(
                            n,
                            format!("Protocols: unknown protocol '{p}' (h2, h2c, http/1.1)"),
                        ));
                    }
                }
                self.tls[i].protocols = Some(args.to_vec());
            }
        }
        Ok(())
    }

    /// mod_log_config's `LogFormat`, `CustomLog` and `TransferLog`: one access log, the first
    /// `CustomLog` read (any server's); the others are named in a warning.
    fn log_directive(
        &mut self,
        lname: &str,
        name: &str,
        args: &[String],
        ctx: &Ctx,
        n: usize,
    ) -> Result<(), ConfigError> {
        self.server_only(name, ctx, n)?;
        match lname {
            "logformat" => {
                self.need_args(name, args, 1, 2, n)?;
                match args.get(1) {
                    Some(nick) => self.log.formats.push((nick.clone(), args[0].clone())),
                    None => self.log.default_format = Some(args[0].clone()),
                }
            }
            _ => {
                let (min, max) = if lname == "customlog" { (1, 3) } else { (1, 1) };
                self.need_args(name, args, min, max, n)?;
                if args[0].starts_with('|') {
                    self.warn(n, format!("{name} to a program ignored: a file only"));
                    return Ok(());
                }
                if args.len() == 3 {
                    self.warn(
                        n,
                        format!(
                            "{name}: condition '{}' ignored: every request is logged",
                            args[2]
                        ),
                    );
                }
                if self.log.custom.is_some() {
                    self.warn(
                        n,
                        format!("{name} ignored: fcgi-proxy writes one access log (the first)"),
                    );
                    return Ok(());
                }
                let path = self.server_relative(&args[0]);
                let spec = if lname == "customlog" {
                    args.get(1).cloned()
                } else {
                    None
                };
                self.log.custom = Some((path, spec));
            }
        }
        Ok(())
    }

    /// `ErrorLog FILE` and `LogLevel LEVEL [module:level ...]` of the main server. A virtual
    /// host's own, a per-module level, a piped or syslog error log are left out with a warning:
    /// the proxy writes one error log.
    fn error_log_directive(
        &mut self,
        lname: &str,
        name: &str,
        args: &[String],
        ctx: &Ctx,
        n: usize,
    ) -> Result<(), ConfigError> {
        if self.in_host.is_some() {
            self.warn(
                n,
                format!("{name} in a virtual host ignored: fcgi-proxy writes one error log"),
            );
            return Ok(());
        }
        if !matches!(ctx, Ctx::Server) {
            self.ignore(name, n);
            return Ok(());
        }
        if lname == "errorlog" {
            self.need_args(name, args, 1, 1, n)?;
            let to = &args[0];
            if to.starts_with('|') || to.starts_with("syslog") {
                self.warn(
                    n,
                    format!("{name} {to} ignored: a file only (stderr meanwhile)"),
                );
                return Ok(());
            }
            let path = self.server_relative(to);
            self.log.error.get_or_insert_with(Default::default).path = Some(path);
            return Ok(());
        }
        self.need_args(name, args, 1, usize::MAX, n)?;
        let mut level = None;
        for a in args {
            if a.contains(':') {
                self.warn(
                    n,
                    format!("{name} {a} ignored: one level for every message"),
                );
            } else {
                level = Some(a.clone());
            }
        }
        if let Some(level) = level {
            let e = super::log::ErrorLog {
                path: None,
                level: Some(level),
            };
            e.filter_level().map_err(|m| self.err(n, m))?;
            self.log.error.get_or_insert_with(Default::default).level = e.level;
        }
        Ok(())
    }

    /// A file name as Apache reads it: relative names are below `ServerRoot`.
    fn server_relative(&self, p: &str) -> String {
        if p.starts_with('/') {
            return p.to_owned();
        }
        match &self.server_root {
            Some(root) => std::path::Path::new(root).join(p).display().to_string(),
            None => std::path::Path::new(&self.main_file)
                .parent()
                .map_or_else(|| p.to_owned(), |d| d.join(p).display().to_string()),
        }
    }

    /// The access log the `CustomLog` read names, its format resolved (a nickname not defined
    /// by `LogFormat` is a format itself, as in Apache; none: the default `LogFormat`, else
    /// Apache's `%h %l %u %t "%r" %>s %b`).
    fn access_log(&self) -> Option<super::log::AccessLog> {
        let (path, spec) = self.log.custom.clone()?;
        let format = match spec {
            Some(s) => self
                .log
                .formats
                .iter()
                .rev()
                .find(|(nick, _)| *nick == s)
                .map_or(s, |(_, f)| f.clone()),
            None => self
                .log
                .default_format
                .clone()
                .unwrap_or_else(|| "%h %l %u %t \"%r\" %>s %b".to_owned()),
        };
        Some(super::log::AccessLog {
            format: Some(format),
            json: false,
            path: Some(path),
        })
    }

    /// The TLS and protocols of each server, the main server's settings under a virtual host's.
    fn apply_tls(&self, cfg: &mut Config) -> Result<(), ConfigError> {
        let main = self.tls[0].clone();
        let mut scopes = vec![(main.clone(), None::<usize>)];
        for (h, t) in self.tls[1..].iter().enumerate() {
            scopes.push((
                TlsScope {
                    engine: t.engine.or(main.engine),
                    cert: t.cert.clone().or(main.cert.clone()),
                    key: t.key.clone().or(main.key.clone()),
                    chain: t.chain.clone().or(main.chain.clone()),
                    versions: t.versions.clone().or(main.versions.clone()),
                    protocols: t.protocols.clone().or(main.protocols.clone()),
                    line: if t.engine.is_some() {
                        t.line
                    } else {
                        main.line
                    },
                },
                Some(h),
            ));
        }
        for (t, host) in scopes {
            let tls = if t.engine == Some(true) {
                let Some((cert, _)) = t.cert.clone() else {
                    return Err(ConfigError::at(
                        Some(&self.main_file),
                        t.line,
                        "SSLEngine on without SSLCertificateFile",
                    ));
                };
                Some(super::tls::TlsConfig {
                    cert,
                    key: t.key.clone(),
                    chain: t.chain.clone(),
                    versions: t.versions.clone(),
                    sni: Vec::new(),
                })
            } else {
                None
            };
            let target = match host {
                None => &mut *cfg,
                Some(h) => match cfg.vhosts.get_mut(h) {
                    Some(v) => &mut *v.config,
                    None => continue,
                },
            };
            target.tls = tls;
            target.protocols.clone_from(&t.protocols);
        }
        Ok(())
    }

    /// Directives about files and access; `Ok(false)` when `lname` is none of them.
    fn dir_directive(
        &mut self,
        lname: &str,
        name: &str,
        args: &[String],
        ctx: &Ctx,
        n: usize,
    ) -> Result<bool, ConfigError> {
        let ov = self.htaccess.as_ref().map_or(Overrides::ALL, |h| h.0);
        let in_section = matches!(ctx, Ctx::Section(_) | Ctx::If(..) | Ctx::Location(_));
        match lname {
            "require" => {
                self.overridable(name, ov.auth_config, "AuthConfig", n)?;
                self.require(args, ctx, n)?;
                return Ok(true);
            }
            "authmerging" if in_section => {
                self.overridable(name, ov.auth_config, "AuthConfig", n)?;
                let m = match one_lower(self, name, args, n)?.as_str() {
                    "off" => AuthMerging::Off,
                    "and" => AuthMerging::And,
                    "or" => AuthMerging::Or,
                    _ => return Err(self.err(n, "AuthMerging must be Off, And or Or")),
                };
                if let Some(d) = self.dir_mut(ctx) {
                    d.auth_merging = Some(m);
                }
                return Ok(true);
            }
            "satisfy" if in_section => {
                self.overridable(name, ov.auth_config, "AuthConfig", n)?;
                let any = match one_lower(self, name, args, n)?.as_str() {
                    "any" => true,
                    "all" => false,
                    _ => return Err(self.err(n, "Satisfy must be Any or All")),
                };
                if let Some(d) = self.dir_mut(ctx) {
                    d.compat.get_or_insert_with(Compat::default).satisfy_any = any;
                }
                return Ok(true);
            }
            "order" if in_section => {
                self.overridable(name, ov.limit, "Limit", n)?;
                let order = match one_lower(self, name, args, n)?.as_str() {
                    "allow,deny" => Order::AllowDeny,
                    "deny,allow" => Order::DenyAllow,
                    "mutual-failure" => Order::MutualFailure,
                    _ => {
                        return Err(self.err(
                            n,
                            "unknown order (allow,deny, deny,allow or mutual-failure)",
                        ));
                    }
                };
                if let Some(d) = self.dir_mut(ctx) {
                    d.compat.get_or_insert_with(Compat::default).order = order;
                }
                return Ok(true);
            }
            "allow" | "deny" if in_section => {
                self.overridable(name, ov.limit, "Limit", n)?;
                let who = self.hosts(name, args, n)?;
                if let Some(d) = self.dir_mut(ctx) {
                    let c = d.compat.get_or_insert_with(Compat::default);
                    if lname == "allow" {
                        c.allow.extend(who);
                    } else {
                        c.deny.extend(who);
                    }
                }
                return Ok(true);
            }
            _ if restricts_access(lname) => {
                return Err(self.refuse(n, &format!("{name} {}", args.join(" "))));
            }
            "redirect" | "redirectmatch" | "redirectpermanent" | "redirecttemp" => {
                let status = args
                    .first()
                    .and_then(|a| match a.to_ascii_lowercase().as_str() {
                        "gone" => Some(410),
                        x => x.parse::<u16>().ok(),
                    });
                if let (Some(st), 2, "redirect" | "redirectmatch") = (status, args.len(), lname)
                    && !(300..400).contains(&st)
                    && (in_section || matches!(ctx, Ctx::Server))
                {
                    self.overridable(name, ov.file_info, "FileInfo", n)?;
                    let matcher = if lname == "redirect" {
                        Matcher::Path(args[1].clone())
                    } else {
                        Matcher::Regex(Pattern::new(&args[1], false).map_err(|e| self.err(n, e))?)
                    };
                    let origin = self.origin(n);
                    if let Some(d) = self.dir_mut(ctx) {
                        d.status_rules.push(StatusRule {
                            matcher,
                            status: st,
                            origin,
                        });
                    }
                    return Ok(true);
                }
                if self.htaccess.is_some() {
                    return Err(self.refuse(n, &format!("{name} {}", args.join(" "))));
                }
                return Ok(false);
            }
            "rewriteengine" | "rewriterule" | "rewritecond" | "rewritebase" | "rewriteoptions"
                if self.htaccess.is_some() =>
            {
                if lname == "rewriteengine"
                    && args.len() == 1
                    && args[0].eq_ignore_ascii_case("off")
                {
                    return Ok(true);
                }
                return Err(self.err(
                    n,
                    format!(
                        "{name}: mod_rewrite in .htaccess files is not implemented; refusing to \
                         start rather than serve what the rules would send elsewhere or refuse"
                    ),
                ));
            }
            _ => {}
        }
        let one = |imp: &Self| -> Result<String, ConfigError> {
            imp.need_args(name, args, 1, 1, n)?;
            Ok(args[0].clone())
        };
        if self.htaccess.is_some() {
            let (allowed, class) = match lname {
                "sethandler" | "acceptpathinfo" => (ov.file_info, "FileInfo"),
                "directoryindex" | "fallbackresource" | "directoryslash" => (ov.indexes, "Indexes"),
                "options" => (ov.options, "Options"),
                "allowoverride" | "allowoverridelist" | "alias" | "aliasmatch" | "serveralias"
                | "accessfilename" => {
                    return Err(self.err(n, format!("{name} is not allowed in an .htaccess file")));
                }
                _ => (true, ""),
            };
            self.overridable(name, allowed, class, n)?;
        }
        let in_dir = matches!(
            ctx,
            Ctx::Server | Ctx::Section(_) | Ctx::If(..) | Ctx::Location(_)
        );
        match lname {
            "sethandler" if in_dir => {
                let h = one(self)?;
                let handler = if h.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("proxy:")) {
                    let url = WorkerUrl::parse(&h[6..])
                        .map_err(|e| self.err(n, format!("SetHandler \"{h}\": {e}")))?;
                    if !url.path.is_empty() && url.path != "/" {
                        return Err(self.err(
                            n,
                            format!(
                                "SetHandler \"{h}\": a path after the backend address is not \
                                 supported (the file's path is appended)"
                            ),
                        ));
                    }
                    Handler::Proxy {
                        url: Arc::new(url),
                        worker: Arc::default(),
                        defined: false,
                    }
                } else if h.eq_ignore_ascii_case("none")
                    || h.eq_ignore_ascii_case("default-handler")
                {
                    Handler::Default
                } else {
                    Handler::Other(h)
                };
                if let Some(d) = self.dir_mut(ctx) {
                    d.handler = Some(handler);
                }
            }
            "directoryindex" if in_dir => {
                self.need_args(name, args, 1, usize::MAX, n)?;
                let list = if args.len() == 1 && args[0].eq_ignore_ascii_case("disabled") {
                    Vec::new()
                } else {
                    args.to_vec()
                };
                if let Some(d) = self.dir_mut(ctx) {
                    d.directory_index = Some(list.into());
                }
            }
            "fallbackresource" if in_dir => {
                let v = one(self)?;
                let v = (!v.eq_ignore_ascii_case("disabled")).then_some(v);
                if let Some(d) = self.dir_mut(ctx) {
                    d.fallback_resource = Some(v.map(Arc::from));
                }
            }
            "acceptpathinfo" if in_dir => {
                let v = match one(self)?.to_ascii_lowercase().as_str() {
                    "on" => AcceptPathInfo::On,
                    "off" => AcceptPathInfo::Off,
                    "default" => AcceptPathInfo::Default,
                    _ => return Err(self.err(n, "AcceptPathInfo must be On, Off or Default")),
                };
                if let Some(d) = self.dir_mut(ctx) {
                    d.accept_path_info = Some(v);
                }
            }
            "directoryslash" if in_dir => {
                let v = on_off(name, &one(self)?).map_err(|e| self.err(n, e))?;
                if let Some(d) = self.dir_mut(ctx) {
                    d.directory_slash = Some(v);
                }
            }
            "options" if in_dir => {
                let mut follow: Option<bool> = None;
                let mut absolute = false;
                for a in args {
                    let l = a.to_ascii_lowercase();
                    match l.as_str() {
                        "followsymlinks" => {
                            absolute = true;
                            follow = Some(true);
                        }
                        "+followsymlinks" => follow = Some(true),
                        "-followsymlinks" => follow = Some(false),
                        "all" => {
                            absolute = true;
                            follow = Some(true);
                        }
                        "none" => {
                            absolute = true;
                            follow = Some(false);
                        }
                        _ if !l.starts_with('+') && !l.starts_with('-') => absolute = true,
                        _ => {}
                    }
                }
                // A list without +/- replaces every option: FollowSymLinks is off unless named.
                let v = follow.or(absolute.then_some(false));
                if let (Some(v), Some(d)) = (v, self.dir_mut(ctx)) {
                    d.follow_symlinks = Some(v);
                }
            }
            "allowoverride" | "allowoverridelist" if in_dir => {
                self.need_args(name, args, 1, usize::MAX, n)?;
                let none = args.len() == 1 && args[0].eq_ignore_ascii_case("none");
                let mut ov = Overrides::default();
                if lname == "allowoverridelist" {
                    // Directives by name: treated as every class (what they allow is read).
                    if !none {
                        ov = Overrides::ALL;
                    }
                } else {
                    for a in args {
                        let a = a.to_ascii_lowercase();
                        let class = a.split('=').next().unwrap_or("");
                        match class {
                            "none" => {}
                            "all" => ov = Overrides::ALL,
                            "authconfig" => ov.auth_config = true,
                            "fileinfo" => ov.file_info = true,
                            "indexes" => ov.indexes = true,
                            "limit" => ov.limit = true,
                            "options" => ov.options = true,
                            "nonfatal" => {}
                            _ => {
                                return Err(
                                    self.err(n, format!("AllowOverride: unknown class '{a}'"))
                                );
                            }
                        }
                    }
                }
                let origin = self.origin(n);
                if let Some(d) = self.dir_mut(ctx) {
                    match (&d.allow_override, none) {
                        // AllowOverrideList None leaves AllowOverride as it was.
                        (Some(_), true) if lname == "allowoverridelist" => {}
                        _ => d.allow_override = Some((ov, origin)),
                    }
                }
            }
            "alias" | "aliasmatch" => {
                self.server_only(name, ctx, n)?;
                self.need_args(name, args, 2, 2, n)?;
                let from = if lname == "alias" {
                    Matcher::Path(args[0].clone())
                } else {
                    Matcher::Regex(Pattern::new(&args[0], false).map_err(|e| self.err(n, e))?)
                };
                let origin = self.origin(n);
                self.scope().site.aliases.push(Alias {
                    from,
                    to: args[1].clone(),
                    origin,
                });
            }
            "serveralias" => {
                if self.in_host.is_none() {
                    return Err(self.err(n, "ServerAlias is only allowed in <VirtualHost>"));
                }
                let names = args.iter().map(|a| a.to_ascii_lowercase());
                self.scope().aliases.extend(names);
            }
            "accessfilename" => {
                self.server_only(name, ctx, n)?;
                let v = one(self)?;
                self.scope().site.access_file = Some(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn proxy_pass(
        &mut self,
        name: &str,
        lname: &str,
        args: &[String],
        ctx: &Ctx,
        n: usize,
    ) -> Result<(), ConfigError> {
        let is_match = lname == "proxypassmatch";
        let (path, regex, url, keys, loc) = match ctx {
            Ctx::Server => {
                self.need_args(name, args, 2, usize::MAX, n)?;
                if is_match {
                    let re = Pattern::new(&args[0], false).map_err(|e| self.err(n, e))?;
                    (None, Some(re), &args[1], &args[2..], None)
                } else {
                    if !args[0].starts_with('/') {
                        return Err(self.err(
                            n,
                            format!("ProxyPass path must start with '/', found '{}'", args[0]),
                        ));
                    }
                    (Some(args[0].clone()), None, &args[1], &args[2..], None)
                }
            }
            Ctx::Location(i) => {
                self.need_args(name, args, 1, usize::MAX, n)?;
                if args[0].starts_with('/') && !is_match {
                    return Err(self.err(
                        n,
                        "inside <Location> ProxyPass takes no path (the location's path is used)",
                    ));
                }
                let loc = &self.scope_ref().locations[*i];
                if loc.route.is_some() {
                    return Err(self.err(n, "only one ProxyPass per <Location>"));
                }
                match &loc.regex {
                    Some(re) => (None, Some(re.clone()), &args[0], &args[1..], Some(*i)),
                    None => {
                        if is_match {
                            return Err(self
                                .err(n, "ProxyPassMatch inside <Location> needs <LocationMatch>"));
                        }
                        (Some(loc.path.clone()), None, &args[0], &args[1..], Some(*i))
                    }
                }
            }
            _ => return Err(self.err(n, format!("{name} is not allowed here"))),
        };
        let target = Target::parse(url).map_err(|e| self.err(n, format!("{name}: {e}")))?;
        if regex.is_none()
            && let Target::Worker(w) = &target
            && w.path.contains('$')
        {
            self.warn(
                n,
                format!(
                    "{name}: '$' in '{url}' is taken literally (only ProxyPassMatch substitutes $N)"
                ),
            );
        }
        let keys = parse_keys(keys).map_err(|e| self.err(n, format!("{name} {url}: {e}")))?;
        if !keys.ignored.is_empty() {
            self.warn(
                n,
                format!("{name}: parameters ignored: {}", keys.ignored.join(" ")),
            );
        }
        if keys.has_member {
            self.warn(n, format!("{name}: member parameters (loadfactor, lbset, status, route, redirect) only apply to BalancerMember; ignored"));
        }
        if let Target::Balancer(b) = &target {
            let idx = self.balancer_index(&b.name, n);
            if keys.has_balancer || keys.balancer.timeout.is_some() {
                keys.balancer.apply(&mut self.balancers[idx].balancer);
            }
        } else if keys.has_balancer {
            self.warn(
                n,
                format!("{name}: balancer parameters on a non-balancer URL ignored"),
            );
        }
        let mut route = Route::prefix("/", target.clone());
        route.path = path;
        route.regex = regex;
        route.nocanon = keys.nocanon;
        route.noquery = keys.noquery;
        route.origin = Some(self.origin(n));
        let mut worker = keys.worker.clone();
        if matches!(target, Target::Balancer(_)) {
            // timeout= on a balancer URL is the balancer's wait, not a worker parameter.
            worker = WorkerSet::default();
        }
        let pending = PendingRoute { route, worker };
        match loc {
            Some(i) => {
                let scope = self.scope();
                scope.locations[i].route = Some(pending.route.clone());
                scope.location_routes.push((i, pending));
            }
            None => self.scope().server_routes.push(pending),
        }
        Ok(())
    }

    fn balancer_member(&mut self, args: &[String], ctx: &Ctx, n: usize) -> Result<(), ConfigError> {
        let (idx, url, keys) = match ctx {
            Ctx::BalancerSection(i) => {
                self.need_args("BalancerMember", args, 1, usize::MAX, n)?;
                (*i, &args[0], &args[1..])
            }
            Ctx::Server => {
                self.need_args("BalancerMember", args, 2, usize::MAX, n)?;
                let b = match Target::parse(&args[0]) {
                    Ok(Target::Balancer(b)) => b,
                    _ => {
                        return Err(self.err(
                            n,
                            "BalancerMember outside <Proxy balancer://…> needs the balancer URL first",
                        ));
                    }
                };
                (self.balancer_index(&b.name, n), &args[1], &args[2..])
            }
            _ => return Err(self.err(n, "BalancerMember is not allowed here")),
        };
        let url = WorkerUrl::parse(url).map_err(|e| self.err(n, format!("BalancerMember: {e}")))?;
        if url.path.contains('$') {
            return Err(self.err(n, "BalancerMember: '$' is not allowed in a member URL"));
        }
        let keys = parse_keys(keys)
            .map_err(|e| self.err(n, format!("BalancerMember {}: {e}", url.raw)))?;
        if !keys.ignored.is_empty() {
            self.warn(
                n,
                format!(
                    "BalancerMember: parameters ignored: {}",
                    keys.ignored.join(" ")
                ),
            );
        }
        if keys.has_balancer {
            return Err(self.err(n, "BalancerMember: balancer parameters (lbmethod, stickysession, ...) belong in ProxySet"));
        }
        let mut m = Member::new(url);
        if let Some(v) = keys.member.loadfactor {
            m.loadfactor = v;
        }
        if let Some(v) = keys.member.lbset {
            m.lbset = v;
        }
        if let Some(v) = &keys.member.status {
            m.status.apply(v).map_err(|e| self.err(n, e))?;
        }
        m.route = keys.member.route.clone();
        m.redirect = keys.member.redirect.clone();
        self.balancers[idx].members.push(PendingMember {
            member: m,
            worker: keys.worker,
        });
        Ok(())
    }

    fn proxy_set(&mut self, args: &[String], ctx: &Ctx, n: usize) -> Result<(), ConfigError> {
        match ctx {
            Ctx::BalancerSection(i) => {
                let i = *i;
                self.need_args("ProxySet", args, 1, usize::MAX, n)?;
                let keys = parse_keys(args).map_err(|e| self.err(n, format!("ProxySet: {e}")))?;
                if keys.worker != WorkerSet::default() && !only_timeout(&keys.worker) {
                    return Err(self.err(n, "ProxySet in a balancer section takes balancer parameters (lbmethod, maxattempts, stickysession, nofailover, timeout, forcerecovery)"));
                }
                keys.balancer.apply(&mut self.balancers[i].balancer);
            }
            Ctx::WorkerSection(i) => {
                let i = *i;
                let keys = parse_keys(args).map_err(|e| self.err(n, format!("ProxySet: {e}")))?;
                merge_set(&mut self.worker_defs[i].worker, &keys.worker);
            }
            Ctx::Server => {
                self.need_args("ProxySet", args, 2, usize::MAX, n)?;
                let url = &args[0];
                let keys = parse_keys(&args[1..])
                    .map_err(|e| self.err(n, format!("ProxySet {url}: {e}")))?;
                match Target::parse(url).map_err(|e| self.err(n, format!("ProxySet: {e}")))? {
                    Target::Balancer(b) => {
                        let idx = self.balancer_index(&b.name, n);
                        keys.balancer.apply(&mut self.balancers[idx].balancer);
                    }
                    Target::Worker(w) => self.worker_defs.push(WorkerDef {
                        url: w,
                        worker: keys.worker,
                    }),
                    Target::Exclude => return Err(self.err(n, "ProxySet needs a URL")),
                }
            }
            _ => return Err(self.err(n, "ProxySet is not allowed here")),
        }
        Ok(())
    }

    /// Worker definitions (`<Proxy fcgi://…>`, `ProxySet url`) whose URL is a prefix of `w`,
    /// applied in definition order under the explicit keys.
    fn resolve_worker(&self, w: &WorkerUrl, explicit: &WorkerSet) -> WorkerParams {
        let mut p = WorkerParams::default();
        for d in &self.worker_defs {
            if worker_matches(&d.url, w) {
                d.worker.apply(&mut p);
            }
        }
        explicit.apply(&mut p);
        p
    }

    /// Routes of a server from its scopes (the main server's, then a virtual host's):
    /// Location routes, later blocks first; then server-level routes; Location settings onto
    /// the routes they cover.
    fn build_routes(&self, scopes: &[&Scope]) -> (Vec<Route>, Vec<Warning>) {
        let mut warnings = Vec::new();
        let mut locations: Vec<&LocationBlock> = Vec::new();
        let mut location_routes: Vec<(usize, &PendingRoute)> = Vec::new();
        let mut server_routes: Vec<&PendingRoute> = Vec::new();
        for s in scopes {
            let off = locations.len();
            locations.extend(s.locations.iter());
            location_routes.extend(s.location_routes.iter().map(|(i, p)| (i + off, p)));
            server_routes.extend(s.server_routes.iter());
        }
        let mut pending: Vec<(Option<usize>, &PendingRoute)> = location_routes
            .iter()
            .rev()
            .map(|(i, p)| (Some(*i), *p))
            .collect();
        pending.extend(server_routes.iter().map(|p| (None, *p)));
        let mut routes = Vec::with_capacity(pending.len());
        for (_, p) in &pending {
            let mut r = p.route.clone();
            if let Target::Worker(w) = &r.target {
                r.worker = self.resolve_worker(w, &p.worker);
            }
            routes.push(r);
        }
        // Location settings onto the routes they cover, in file order.
        let mut partial: Vec<Warning> = Vec::new();
        for (li, loc) in locations.iter().enumerate() {
            if !loc.has_settings() {
                continue;
            }
            let mut applied = false;
            let mut partly = false;
            for (ri, (own, _)) in pending.iter().enumerate() {
                let r = &mut routes[ri];
                let covers = *own == Some(li) || location_covers(loc, r);
                if !covers {
                    if location_overlaps(loc, r) {
                        partly = true;
                        partial.push(Warning {
                            file: Some(loc.file.clone()),
                            line: None,
                            message: format!(
                                "<Location {}> (line {}) covers only part of route {} (line {}): its settings are not applied to it",
                                loc.path,
                                loc.line,
                                r.describe_match(),
                                r.origin.as_ref().map_or(0, |o| o.line)
                            ),
                        });
                    }
                    continue;
                }
                applied = true;
                r.setenvif.extend(loc.setenvif.iter().cloned());
                r.setenv.extend(loc.setenv.iter().cloned());
                r.fcgi_setenvif.extend(loc.fcgi_setenvif.iter().cloned());
                if loc.backend_type.is_some() {
                    r.backend_type = loc.backend_type;
                }
                if loc.pass_authorization.is_some() {
                    r.pass_authorization = loc.pass_authorization;
                }
            }
            if !applied && !partly {
                warnings.push(Warning {
                    file: Some(loc.file.clone()),
                    line: Some(loc.line),
                    message: format!("<Location {}> settings apply to no route", loc.path),
                });
            }
        }
        warnings.extend(partial);
        (routes, warnings)
    }

    /// The filesystem side of a server from its scopes.
    fn build_site(&self, scopes: &[&Scope], routes: &[Route]) -> Site {
        let mut site = Site::default();
        for s in scopes {
            site.base.merge(&s.site.base);
            let off = site.sections.len();
            site.sections
                .extend(s.site.sections.iter().cloned().map(|mut x| {
                    x.parent = x.parent.map(|p| p + off);
                    x
                }));
            if s.site.access_file.is_some() {
                site.access_file.clone_from(&s.site.access_file);
            }
        }
        // mod_alias: the virtual host's aliases before the main server's.
        for s in scopes.iter().rev() {
            site.aliases.extend(s.site.aliases.iter().cloned());
        }
        let resolve = |d: &mut DirSettings| {
            if let Some(Handler::Proxy {
                url,
                worker,
                defined,
            }) = &mut d.handler
            {
                let (w, d) = self.handler_worker(url, routes);
                (*worker, *defined) = (Arc::new(w), d);
            }
        };
        resolve(&mut site.base);
        for s in &mut site.sections {
            resolve(&mut s.settings);
            for i in &mut s.ifs {
                resolve(&mut i.settings);
            }
        }
        site
    }

    /// The worker a `SetHandler proxy:…` URL uses, as `ap_proxy_get_worker` finds it: a
    /// `ProxyPass` to the same backend (with no path, or `/`), else `<Proxy>`/`ProxySet`
    /// definitions covering it; without either, Apache's default reverse worker.
    fn handler_worker(&self, url: &WorkerUrl, routes: &[Route]) -> (WorkerParams, bool) {
        for r in routes {
            if let Target::Worker(w) = &r.target
                && worker_matches(w, url)
            {
                return (r.worker.clone(), true);
            }
        }
        let defined = self.worker_defs.iter().any(|d| worker_matches(&d.url, url));
        (self.resolve_worker(url, &WorkerSet::default()), defined)
    }

    fn finish(mut self) -> Result<(Config, Vec<Warning>), ConfigError> {
        if let Some(d) = self.timeout {
            self.cfg.timeouts.body_read = d;
            self.cfg.timeouts.client_write = d;
            self.cfg.timeouts.backend_io = d;
        }
        if let Some(d) = self.proxy_timeout {
            self.cfg.timeouts.backend_io = d;
        }
        // Balancers.
        let mut balancers = Vec::new();
        for pb in &self.balancers {
            let mut b = pb.balancer.clone();
            for pm in &pb.members {
                let mut m = pm.member.clone();
                m.worker = self.resolve_worker(&m.url, &pm.worker);
                b.members.push(m);
            }
            balancers.push(b);
        }
        self.cfg.balancers = balancers;
        let main = self.main.clone();
        let (routes, w) = self.build_routes(&[&main]);
        self.warnings.extend(w);
        let mut cfg = self.cfg.clone();
        apply_scope(&mut cfg, &main);
        cfg.site = self.build_site(&[&main], &routes);
        cfg.routes = routes;
        let mut vhosts = Vec::new();
        for host in &self.hosts {
            let (routes, w) = self.build_routes(&[&main, host]);
            self.warnings.extend(w);
            let mut c = cfg.clone();
            apply_scope(&mut c, host);
            c.site = self.build_site(&[&main, host], &routes);
            c.routes = routes;
            vhosts.push(VirtualHost {
                addrs: host.addrs.clone(),
                names: host.aliases.clone(),
                config: Box::new(c),
                origin: host.origin.clone(),
            });
        }
        cfg.vhosts = vhosts;
        // The main server's own sections (a virtual host's follow them; .htaccess ones last).
        let main_sections = cfg.site.sections.len();
        let w = load_htaccess(&mut cfg, &self.modules)?;
        self.warnings.extend(w);
        let own = std::iter::once(&cfg.site.sections[..]).chain(
            cfg.vhosts
                .iter()
                .map(|v| &v.config.site.sections[main_sections..]),
        );
        for sections in own {
            for s in sections {
                if let Some(Handler::Other(h)) = &s.settings.handler {
                    self.warnings.push(Warning {
                        file: Some(s.origin.file.clone()),
                        line: Some(s.origin.line),
                        message: format!(
                            "SetHandler {h} is not available in fcgi-proxy: the requests it would handle are answered 404"
                        ),
                    });
                }
            }
        }
        if !self.ignored.is_empty() {
            let count: usize = self.ignored.iter().map(|(_, l)| l.len()).sum();
            let list = self
                .ignored
                .iter()
                .map(|(name, lines)| {
                    const SHOWN: usize = 6;
                    let at: Vec<String> = lines
                        .iter()
                        .take(SHOWN)
                        .map(|(f, l)| {
                            if *f == self.main_file {
                                l.to_string()
                            } else {
                                format!("{f}:{l}")
                            }
                        })
                        .collect();
                    let more = if lines.len() > SHOWN {
                        format!(" and {} more", lines.len() - SHOWN)
                    } else {
                        String::new()
                    };
                    let word = if lines.iter().any(|(f, _)| *f != self.main_file) {
                        "at"
                    } else if lines.len() > 1 {
                        "lines"
                    } else {
                        "line"
                    };
                    format!("{name} ({word} {}{more})", at.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ");
            self.warnings.push(Warning {
                file: Some(self.main_file.clone()),
                line: None,
                message: format!("ignored {count} directive(s) fcgi-proxy does not use: {list}"),
            });
        }
        // Sort warnings by file and line for stable, readable output (the ignored list stays
        // last); a virtual host repeats the main server's, once is enough.
        let (mut located, rest): (Vec<Warning>, Vec<Warning>) =
            self.warnings.into_iter().partition(|w| w.line.is_some());
        let main_file = self.main_file;
        located.sort_by(|a, b| {
            (a.file.as_deref() != Some(&main_file), &a.file, a.line).cmp(&(
                b.file.as_deref() != Some(&main_file),
                &b.file,
                b.line,
            ))
        });
        located.extend(rest);
        let mut out: Vec<Warning> = Vec::with_capacity(located.len());
        for w in located {
            if !out.contains(&w) {
                out.push(w);
            }
        }
        Ok((cfg, out))
    }
}

/// A server's own settings over the configuration it inherits.
fn apply_scope(cfg: &mut Config, s: &Scope) {
    if s.server_name.is_some() {
        cfg.server_name.clone_from(&s.server_name);
    }
    if s.server_admin.is_some() {
        cfg.server_admin.clone_from(&s.server_admin);
    }
    if let Some(d) = &s.document_root {
        cfg.document_root.clone_from(d);
    }
    if let Some(t) = s.backend_type {
        cfg.backend_type = t;
    }
    if let Some(p) = s.pass_authorization {
        cfg.pass_authorization = p;
    }
    cfg.setenvif.extend(s.setenvif.iter().cloned());
    cfg.setenv.extend(s.setenv.iter().cloned());
    cfg.fcgi_setenvif.extend(s.fcgi_setenvif.iter().cloned());
}

/// Most files and directories looked at for `.htaccess` files under one root.
const OVERRIDE_SCAN_LIMIT: usize = 20_000;

/// `AllowOverride` other than `None` lets `.htaccess` files change the configuration: those
/// under a DocumentRoot or an Alias target, where it applies, are read now (a file added or
/// changed later is seen on the next start or reload). Each becomes a `<Directory>` section
/// for its directory, merged after the configuration's sections of the same depth, as Apache
/// merges it; what it says that fcgi-proxy does not implement and could restrict access stops
/// the start with its file and line.
fn load_htaccess(
    cfg: &mut Config,
    modules: &(Vec<String>, bool),
) -> Result<Vec<Warning>, ConfigError> {
    // (directory, file, what AllowOverride allows, where it is said), each file once.
    let mut found: Vec<(String, std::path::PathBuf, Overrides, Origin)> = Vec::new();
    for c in std::iter::once(&*cfg).chain(cfg.vhosts.iter().map(|v| &*v.config)) {
        let site = &c.site;
        let any = site
            .sections
            .iter()
            .any(|s| matches!(&s.settings.allow_override, Some((o, _)) if o.any()))
            || matches!(&site.base.allow_override, Some((o, _)) if o.any());
        if !any {
            continue;
        }
        let name = site.access_file.as_deref().unwrap_or(".htaccess");
        let mut roots = vec![std::path::PathBuf::from(&c.document_root)];
        for a in &site.aliases {
            match a.from {
                Matcher::Path(_) => roots.push(std::path::PathBuf::from(&a.to)),
                // `AliasMatch … /x/y/$1`: everything it can reach is under `/x/y/`.
                Matcher::Regex(_) => {
                    let fixed = a.to.split('$').next().unwrap_or("");
                    if let Some(i) = fixed.rfind('/') {
                        roots.push(std::path::PathBuf::from(&fixed[..=i]));
                    }
                }
            }
        }
        for root in roots {
            let mut seen = 0usize;
            // Each directory with the real paths of the directories above it: a symbolic link
            // back to one of them is a loop, not walked again.
            let mut todo = vec![(root, Vec::<std::path::PathBuf>::new())];
            while let Some((dir, mut above)) = todo.pop() {
                match std::fs::canonicalize(&dir) {
                    Ok(real) if above.contains(&real) => continue,
                    Ok(real) => above.push(real),
                    Err(_) => continue,
                }
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<std::fs::DirEntry> = entries.filter_map(Result::ok).collect();
                names.sort_by_key(std::fs::DirEntry::file_name);
                for e in names {
                    seen += 1;
                    if seen > OVERRIDE_SCAN_LIMIT {
                        return Err(ConfigError::new(format!(
                            "AllowOverride: more than {OVERRIDE_SCAN_LIMIT} files under {} \
                                 to look for {name} files in; refusing to start rather than \
                                 miss one (AllowOverride None)",
                            dir.display()
                        )));
                    }
                    let Ok(ft) = e.file_type() else { continue };
                    // A linked directory is walked under its name here: Apache reads the
                    // access files along the path as requested.
                    let is_dir = ft.is_dir() || ft.is_symlink() && e.path().is_dir();
                    if is_dir {
                        todo.push((e.path(), above.clone()));
                    } else if e.file_name() == name {
                        let d = dir.to_string_lossy().trim_end_matches('/').to_owned();
                        let merged =
                            site.merge(b"", format!("{d}/").as_bytes(), PathKind::Directory);
                        if let Some((ov, o)) = merged.allow_override
                            && ov.any()
                            && !found.iter().any(|f| f.0 == d)
                        {
                            found.push((d, e.path(), ov, o));
                        }
                    }
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sections: Vec<Section> = Vec::new();
    let mut warnings = Vec::new();
    for (dir, path, ov, origin) in found {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            file: Some(file.clone()),
            line: None,
            column: None,
            message: format!("cannot read it: {e} (AllowOverride at {origin})"),
        })?;
        let read = super::read::read_htaccess(&file, &text, &modules.0, modules.1)?;
        let mut imp = Importer::new(&file);
        imp.htaccess = Some((ov, origin));
        let dir_path = if dir.is_empty() {
            "/".to_owned()
        } else {
            format!("{dir}/")
        };
        let top = imp.new_section(SectionKind::Directory, Matcher::Path(dir_path), None, 0);
        imp.run_in(&read.lines, Ctx::Section(top))?;
        imp.file.clone_from(&file);
        let off = sections.len();
        sections.extend(imp.main.site.sections.into_iter().map(|mut x| {
            x.parent = x.parent.map(|p| p + off);
            x
        }));
        warnings.extend(imp.warnings);
        for (name, lines) in imp.ignored {
            let at: Vec<String> = lines.iter().map(|(_, l)| l.to_string()).collect();
            warnings.push(Warning {
                file: Some(file.clone()),
                line: None,
                message: format!(
                    "ignored {name} (line {}): fcgi-proxy does not use it",
                    at.join(", ")
                ),
            });
        }
    }
    if sections.is_empty() {
        return Ok(warnings);
    }
    let add = |site: &mut Site| {
        let off = site.sections.len();
        site.sections.extend(sections.iter().cloned().map(|mut x| {
            x.parent = x.parent.map(|p| p + off);
            x
        }));
    };
    add(&mut cfg.site);
    for v in &mut cfg.vhosts {
        add(&mut v.config.site);
    }
    Ok(warnings)
}

fn only_timeout(w: &WorkerSet) -> bool {
    WorkerSet {
        timeout: None,
        ..w.clone()
    } == WorkerSet::default()
}

fn merge_set(into: &mut WorkerSet, from: &WorkerSet) {
    let mut p = WorkerSet::default();
    core::mem::swap(&mut p, into);
    *into = WorkerSet {
        reuse: from.reuse.or(p.reuse),
        max: from.max.or(p.max),
        ttl: from.ttl.or(p.ttl),
        timeout: from.timeout.or(p.timeout),
        connection_timeout: from.connection_timeout.or(p.connection_timeout),
        acquire: from.acquire.or(p.acquire),
        retry: from.retry.or(p.retry),
        flush_packets: from.flush_packets.or(p.flush_packets),
    };
}

/// The part of a worker URL Apache matches `<Proxy>` definitions against: for `unix:` URLs the
/// part after the `|` unless the definition is itself a `unix:` URL.
fn worker_matches(def: &WorkerUrl, w: &WorkerUrl) -> bool {
    let def_unix = matches!(def.socket, BackendSocket::Unix { .. });
    let (d, x) = if def_unix {
        (def.name(), w.name())
    } else {
        (fcgi_part(def), fcgi_part(w))
    };
    let d = d.trim_end_matches('/');
    x == d || x.starts_with(&format!("{d}/"))
}

fn fcgi_part(w: &WorkerUrl) -> String {
    let n = w.name();
    match n.find('|') {
        Some(i) => n[i + 1..].to_owned(),
        None => n,
    }
}

/// Does `<Location>` `loc` match every request that `route` matches?
fn location_covers(loc: &LocationBlock, route: &Route) -> bool {
    if loc.regex.is_some() {
        return false;
    }
    let l = loc.path.as_str();
    if l == "/" {
        return true;
    }
    match &route.path {
        Some(p) => {
            p.starts_with(l)
                && (l.ends_with('/') || p.len() == l.len() || p.as_bytes()[l.len()] == b'/')
        }
        None => false,
    }
}

/// Does `loc` match some (but not all) of the requests `route` matches?
fn location_overlaps(loc: &LocationBlock, route: &Route) -> bool {
    if loc.regex.is_some() {
        return route.regex.is_some() || route.path.is_some();
    }
    match &route.path {
        Some(p) => {
            let l = loc.path.as_str();
            let p_trim = p.trim_end_matches('/');
            l.starts_with(p_trim)
                && (p_trim.is_empty()
                    || l.len() == p_trim.len()
                    || l.as_bytes()[p_trim.len()] == b'/')
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_quotes() {
        assert_eq!(
            split_words(r#"ProxyPass "/my app/" 'fcgi://h/' a=b"#).unwrap(),
            vec!["ProxyPass", "/my app/", "fcgi://h/", "a=b"]
        );
        assert_eq!(split_words(r#""a \" b""#).unwrap(), vec![r#"a " b"#]);
        assert_eq!(split_words(r"a\b c").unwrap(), vec![r"a\b", "c"]);
        assert!(split_words(r#""open"#).is_err());
    }

    #[test]
    fn continuation_and_comments() {
        let lines = super::super::read::logical_lines(
            "# c\n  ProxyPass /a \\\n   fcgi://h/\n\nListen 80\r\n",
        );
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, 2);
        assert_eq!(lines[0].1, "ProxyPass /a    fcgi://h/");
        assert_eq!(lines[1].0, 5);
    }

    #[test]
    fn keys() {
        let k = parse_keys(&[
            "enablereuse=on".into(),
            "max=10".into(),
            "acquire=250".into(),
            "timeout=5".into(),
            "connectiontimeout=100ms".into(),
            "retry=0".into(),
            "ttl=30".into(),
            "flushpackets=on".into(),
            "nocanon".into(),
        ])
        .unwrap();
        assert_eq!(k.worker.reuse, Some(true));
        assert_eq!(k.worker.max, Some(10));
        assert_eq!(k.worker.acquire, Some(Duration::from_millis(250)));
        assert_eq!(k.worker.timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            k.worker.connection_timeout,
            Some(Duration::from_millis(100))
        );
        assert_eq!(k.worker.retry, Some(Duration::ZERO));
        assert_eq!(k.worker.ttl, Some(Duration::from_secs(30)));
        assert_eq!(k.worker.flush_packets, Some(FlushPackets::On));
        for refused in ["flushpackets=off", "flushpackets=Auto", "flushwait=20"] {
            let e = parse_keys(&[refused.into()]).unwrap_err();
            assert!(e.contains("not supported: "), "{refused}: {e}");
        }
        assert!(k.nocanon);
        assert_eq!(
            parse_keys(&["disablereuse=On".into()])
                .unwrap()
                .worker
                .reuse,
            Some(false)
        );
        assert!(parse_keys(&["bogus=1".into()]).is_err());
        assert!(parse_keys(&["max=0".into()]).is_err());
        assert!(parse_keys(&["enablereuse=yes".into()]).is_err());
        assert!(parse_keys(&["loadfactor=101".into()]).is_err());
        assert!(parse_keys(&["lbmethod=bytraffic".into()]).is_err());
        assert!(parse_keys(&["novalue".into()]).is_err());
    }
}
