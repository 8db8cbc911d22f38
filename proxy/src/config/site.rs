//! What an Apache configuration says about the filesystem and virtual hosts: `<Directory>`,
//! `<DirectoryMatch>`, `<Files>`, `<FilesMatch>`, `<Location>`, `<LocationMatch>` and `<If>`
//! sections kept as sections, `Alias`/`AliasMatch`, and name-based `<VirtualHost>`s. The
//! sections are merged per request in Apache's order ([`Site::merge`]).

use core::fmt;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use super::model::{Config, Origin, Pattern, WorkerParams};
use super::read::fnmatch;
use super::url::WorkerUrl;

/// `SetHandler`.
#[derive(Debug, Clone, PartialEq)]
pub enum Handler {
    /// `proxy:fcgi://…` or `proxy:unix:/path|fcgi://…`: FastCGI to this worker.
    Proxy {
        url: Arc<WorkerUrl>,
        /// The parameters of the worker definition the URL falls under (`<Proxy>`, `ProxySet`,
        /// a `ProxyPass` to a prefix of it), else the defaults.
        worker: Arc<WorkerParams>,
        /// Whether such a definition exists. Without one Apache uses its default reverse
        /// worker and adds `proxy-nokeepalive=1` to the request's environment.
        defined: bool,
    },
    /// `SetHandler none` / `default-handler`: the file itself.
    Default,
    /// Another handler (`server-status`, ...): not available here, answered 404.
    Other(String),
}

/// What an access rule tests about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// `all` (`Require all granted` / `Allow from all`); `false`: `Require all denied`.
    All(bool),
    /// `Require local`: a loopback address or the server's own address.
    Local,
    /// `Require ip` / `Allow from` address forms.
    Ip(Vec<IpNet>),
    /// `Require host` / `Allow from` names: the client's double-reverse-resolved name equals
    /// one of them or ends with `.` + one of them.
    Host(Vec<String>),
}

/// An address and a prefix length (`10.1`, `10.1.0.0/16`, `10.1.0.0/255.255.0.0`, `::1`,
/// `2001:db8::/32`), as `apr_ipsubnet_create` reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub bits: u8,
}

impl IpNet {
    /// Parse one address form; `None` when it is not one (then it is a host name).
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, mask) = match s.split_once('/') {
            Some((a, m)) => (a, Some(m)),
            None => (s, None),
        };
        let (addr, implied) = if let Ok(ip) = a.parse::<IpAddr>() {
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        } else if mask.is_none() || a.contains('.') {
            // A partial IPv4 address: `10.1` is 10.1.0.0/16.
            let parts: Vec<&str> = a.trim_end_matches('.').split('.').collect();
            if parts.is_empty() || parts.len() > 3 {
                return None;
            }
            let mut o = [0u8; 4];
            for (i, p) in parts.iter().enumerate() {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                o[i] = p.parse().ok()?;
            }
            let bits = u8::try_from(parts.len() * 8).ok()?;
            (IpAddr::from(o), bits)
        } else {
            return None;
        };
        let bits = match mask {
            None => implied,
            Some(m) if m.bytes().all(|b| b.is_ascii_digit()) && !m.is_empty() => {
                let b: u8 = m.parse().ok()?;
                if b > if addr.is_ipv4() { 32 } else { 128 } {
                    return None;
                }
                b
            }
            Some(m) => {
                let m: std::net::Ipv4Addr = m.parse().ok()?;
                let v = u32::from(m);
                if !addr.is_ipv4() || v.leading_ones() + v.trailing_zeros() != 32 {
                    return None;
                }
                u8::try_from(v.leading_ones()).ok()?
            }
        };
        Some(IpNet { addr, bits })
    }

    /// Whether `ip` is in it (an IPv4-mapped IPv6 client matches IPv4 forms).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What access rules need to know about a request.
#[allow(missing_debug_implementations)]
pub struct Client<'a> {
    pub remote: IpAddr,
    pub local: IpAddr,
    /// The client's double-reverse-resolved host name, asked only when a rule needs it.
    pub host: &'a dyn Fn() -> Option<String>,
}

impl Who {
    /// Whether the client is one of these.
    pub fn matches(&self, c: &Client<'_>) -> bool {
        match self {
            Who::All(g) => *g,
            Who::Local => {
                let r = match c.remote {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(c.remote, IpAddr::V4),
                    v4 => v4,
                };
                r.is_loopback() || c.remote == c.local
            }
            Who::Ip(nets) => nets.iter().any(|n| n.contains(c.remote)),
            Who::Host(names) => (c.host)().is_some_and(|h| {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                names.iter().any(|n| {
                    let n = n.trim_start_matches('.').to_ascii_lowercase();
                    h == n
                        || (h.len() > n.len()
                            && h.ends_with(&n)
                            && h.as_bytes()[h.len() - n.len() - 1] == b'.')
                })
            }),
        }
    }
}

/// mod_authz_core's result of a rule or container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzResult {
    Granted,
    Denied,
    Neutral,
}

/// `Require` directives and `<RequireAll>`/`<RequireAny>`/`<RequireNone>` containers. The
/// directives of one section form an implicit `<RequireAny>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authz {
    /// `Require [not] …`.
    Rule { who: Who, negate: bool },
    /// `all`: `<RequireAll>`, else `<RequireAny>`; `negate`: `<RequireNone>` (an any, negated).
    Group {
        all: bool,
        negate: bool,
        children: Vec<Authz>,
    },
}

impl Authz {
    /// mod_authz_core's evaluation: a container stops at the first child that decides it
    /// (denied for all, granted for any) and is neutral when every child is; a negation turns
    /// granted into denied and denied into neutral.
    pub fn eval(&self, c: &Client<'_>) -> AuthzResult {
        let (r, negate) = match self {
            Authz::Rule { who, negate } => (
                if who.matches(c) {
                    AuthzResult::Granted
                } else {
                    AuthzResult::Denied
                },
                *negate,
            ),
            Authz::Group {
                all,
                negate,
                children,
            } => {
                let mut r = AuthzResult::Neutral;
                for ch in children {
                    let x = ch.eval(c);
                    if x == AuthzResult::Neutral {
                        continue;
                    }
                    if *all && x == AuthzResult::Denied || !*all && x == AuthzResult::Granted {
                        r = x;
                        break;
                    }
                    if r == AuthzResult::Neutral {
                        r = x;
                    }
                }
                (r, *negate)
            }
        };
        match (r, negate) {
            (AuthzResult::Granted, true) => AuthzResult::Denied,
            (AuthzResult::Denied, true) => AuthzResult::Neutral,
            (r, _) => r,
        }
    }

    /// Whether it can grant at all (a container of negations only cannot: Apache refuses it).
    pub fn has_positive(&self) -> bool {
        match self {
            Authz::Rule { negate, .. } => !negate,
            Authz::Group {
                negate, children, ..
            } => !negate && children.iter().any(Authz::has_positive),
        }
    }
}

/// `AuthMerging`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMerging {
    Off,
    And,
    Or,
}

/// `Order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    DenyAllow,
    AllowDeny,
    MutualFailure,
}

/// mod_access_compat: `Order`, `Allow from`, `Deny from` and `Satisfy` of one section (a
/// section that sets any of them replaces all of what it inherits, as Apache 2.4.71 does: a
/// section with only `Satisfy Any` lets everyone through).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compat {
    pub order: Order,
    pub allow: Vec<Who>,
    pub deny: Vec<Who>,
    /// `Satisfy Any`: either module's consent suffices.
    pub satisfy_any: bool,
}

impl Compat {
    /// `check_dir_access`: whether the client passes.
    pub fn passes(&self, c: &Client<'_>) -> bool {
        let any = |l: &[Who]| {
            // Addresses first: a name costs a lookup and the outcome is the same.
            l.iter().any(|w| !matches!(w, Who::Host(_)) && w.matches(c))
                || l.iter().any(|w| matches!(w, Who::Host(_)) && w.matches(c))
        };
        match self.order {
            Order::AllowDeny => any(&self.allow) && !any(&self.deny),
            Order::DenyAllow => !any(&self.deny) || any(&self.allow),
            Order::MutualFailure => any(&self.allow) && !any(&self.deny),
        }
    }
}

/// `Redirect`/`RedirectMatch` with a status and no URL (`RedirectMatch 404 /\.git`): the
/// request is answered with the status.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRule {
    pub matcher: Matcher,
    pub status: u16,
    pub origin: Origin,
}

impl StatusRule {
    pub fn matches(&self, uri: &[u8]) -> bool {
        match &self.matcher {
            Matcher::Path(p) => crate::route::alias_match(uri, p.as_bytes()) > 0,
            Matcher::Regex(re) => re.regex().is_match(uri),
        }
    }
}

/// `AcceptPathInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptPathInfo {
    On,
    Off,
    /// The handler decides: a proxy handler accepts path info, the file handler does not.
    Default,
}

/// Per-directory settings (a section's contents, or the server's defaults).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DirSettings {
    pub handler: Option<Handler>,
    /// `DirectoryIndex`; empty: `disabled`.
    pub directory_index: Option<Arc<[String]>>,
    /// `FallbackResource`; `Some(None)`: `disabled`.
    pub fallback_resource: Option<Option<Arc<str>>>,
    pub accept_path_info: Option<AcceptPathInfo>,
    /// `Options FollowSymLinks` (on by default, as in Apache).
    pub follow_symlinks: Option<bool>,
    /// `DirectorySlash` (on by default).
    pub directory_slash: Option<bool>,
    /// `Require` directives (with their containers).
    pub authz: Option<Arc<Authz>>,
    /// `AuthMerging` of this section.
    pub auth_merging: Option<AuthMerging>,
    /// `Order`/`Allow`/`Deny`/`Satisfy`.
    pub compat: Option<Compat>,
    /// Status-only `Redirect`/`RedirectMatch` (per-directory: applied after access control).
    pub status_rules: Vec<StatusRule>,
    /// `AllowOverride`: what `.htaccess` files may say (`None` when nothing), with where it
    /// was said.
    pub allow_override: Option<(Overrides, Origin)>,
}

/// `AllowOverride` classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides {
    pub auth_config: bool,
    pub file_info: bool,
    pub indexes: bool,
    pub limit: bool,
    pub options: bool,
}

impl Overrides {
    pub const ALL: Overrides = Overrides {
        auth_config: true,
        file_info: true,
        indexes: true,
        limit: true,
        options: true,
    };

    pub fn any(&self) -> bool {
        *self != Overrides::default()
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::All(true) => f.write_str("all granted"),
            Who::All(false) => f.write_str("all denied"),
            Who::Local => f.write_str("local"),
            Who::Ip(n) => {
                f.write_str("ip")?;
                for x in n {
                    write!(f, " {}/{}", x.addr, x.bits)?;
                }
                Ok(())
            }
            Who::Host(h) => write!(f, "host {}", h.join(" ")),
        }
    }
}

impl fmt::Display for Authz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authz::Rule { who, negate } => {
                write!(f, "{}{who}", if *negate { "not " } else { "" })
            }
            Authz::Group {
                all,
                negate,
                children,
            } => {
                let name = match (all, negate) {
                    (_, true) => "none",
                    (true, false) => "all",
                    (false, false) => "any",
                };
                if !*all && !*negate && children.len() == 1 {
                    return write!(f, "{}", children[0]);
                }
                write!(f, "{name}(")?;
                for (i, c) in children.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl DirSettings {
    /// The access rules it sets, for `check-config` (`None` when it sets none).
    pub fn describe_access(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(a) = &self.authz {
            parts.push(format!("require {a}"));
        }
        if let Some(c) = &self.compat {
            let list = |l: &[Who]| {
                l.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            parts.push(format!(
                "order {:?}, allow [{}], deny [{}], satisfy {}",
                c.order,
                list(&c.allow),
                list(&c.deny),
                if c.satisfy_any { "any" } else { "all" }
            ));
        }
        for r in &self.status_rules {
            let m = match &r.matcher {
                Matcher::Path(p) => p.clone(),
                Matcher::Regex(re) => format!("~ {}", re.as_str()),
            };
            parts.push(format!("{} for {m}", r.status));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Access control as Apache decides it: mod_access_compat (`Order`/`Allow`/`Deny`, passes
    /// when none is set) and mod_authz_core (`Require`, granted when none applies), both
    /// needed under `Satisfy All`, either under `Satisfy Any`.
    pub fn allows(&self, c: &Client<'_>) -> bool {
        let compat = self.compat.as_ref().is_none_or(|x| x.passes(c));
        let authz = || {
            self.authz
                .as_ref()
                .is_none_or(|a| a.eval(c) == AuthzResult::Granted)
        };
        if self.compat.as_ref().is_some_and(|c| c.satisfy_any) {
            compat || authz()
        } else {
            compat && authz()
        }
    }
}

impl DirSettings {
    /// Apache's per-directory merge: what `over` sets replaces what `self` has.
    pub fn merge(&mut self, over: &DirSettings) {
        if over.handler.is_some() {
            self.handler.clone_from(&over.handler);
        }
        if over.directory_index.is_some() {
            self.directory_index.clone_from(&over.directory_index);
        }
        if over.fallback_resource.is_some() {
            self.fallback_resource.clone_from(&over.fallback_resource);
        }
        if over.accept_path_info.is_some() {
            self.accept_path_info = over.accept_path_info;
        }
        if over.follow_symlinks.is_some() {
            self.follow_symlinks = over.follow_symlinks;
        }
        if over.directory_slash.is_some() {
            self.directory_slash = over.directory_slash;
        }
        if let Some(a) = &over.authz {
            // AuthMerging Off (the default): the later section's rules replace the earlier.
            self.authz = Some(match (self.authz.take(), over.auth_merging) {
                (Some(old), Some(m @ (AuthMerging::And | AuthMerging::Or))) => {
                    Arc::new(Authz::Group {
                        all: m == AuthMerging::And,
                        negate: false,
                        children: vec![Arc::unwrap_or_clone(old), Authz::clone(a)],
                    })
                }
                _ => Arc::clone(a),
            });
        }
        if over.compat.is_some() {
            self.compat.clone_from(&over.compat);
        }
        if !over.status_rules.is_empty() {
            // mod_alias: the later section's redirects are tried first.
            let mut v = over.status_rules.clone();
            v.append(&mut self.status_rules);
            self.status_rules = v;
        }
        if over.allow_override.is_some() {
            self.allow_override.clone_from(&over.allow_override);
        }
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == DirSettings::default()
    }
}

/// The kind of a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    Directory,
    DirectoryMatch,
    Files,
    FilesMatch,
    Location,
    LocationMatch,
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionKind::Directory => "Directory",
            SectionKind::DirectoryMatch => "DirectoryMatch",
            SectionKind::Files => "Files",
            SectionKind::FilesMatch => "FilesMatch",
            SectionKind::Location => "Location",
            SectionKind::LocationMatch => "LocationMatch",
        })
    }
}

/// What a section matches: a path or name (wildcards allowed for Directory and Files), or a
/// regular expression (`…Match`, or `~`).
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    Path(String),
    Regex(Pattern),
}

/// `<If "expr">` tests understood: `-f`, `-d`, `-e` on `%{REQUEST_FILENAME}`, optionally
/// negated with `!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTest {
    /// `f` (regular file), `d` (directory) or `e` (exists).
    pub op: char,
    pub negate: bool,
}

impl FileTest {
    /// Parse the expression of an `<If>`.
    pub fn parse(expr: &str) -> Option<FileTest> {
        let t = expr.trim();
        let (negate, t) = match t.strip_prefix('!') {
            Some(r) => (true, r.trim()),
            None => (false, t),
        };
        let t = t
            .strip_prefix('(')
            .and_then(|x| x.strip_suffix(')'))
            .map_or(t, str::trim);
        let mut words = t.split_whitespace();
        let (op, var) = (words.next()?, words.next()?);
        if words.next().is_some() || var != "%{REQUEST_FILENAME}" {
            return None;
        }
        let op = match op {
            "-f" => 'f',
            "-d" => 'd',
            "-e" => 'e',
            _ => return None,
        };
        Some(FileTest { op, negate })
    }

    /// Whether it holds for a path of this kind.
    pub fn holds(&self, kind: PathKind) -> bool {
        let v = match self.op {
            'f' => kind == PathKind::File,
            'd' => kind == PathKind::Directory,
            _ => kind != PathKind::Missing,
        };
        v != self.negate
    }
}

/// What a filesystem path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    File,
    Directory,
    /// Exists but is neither (a device, a socket...).
    Other,
    Missing,
}

/// An `<If>` inside a section.
#[derive(Debug, Clone, PartialEq)]
pub struct IfBlock {
    pub test: FileTest,
    pub settings: DirSettings,
    pub origin: Origin,
}

/// A configuration section.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub kind: SectionKind,
    pub matcher: Matcher,
    pub settings: DirSettings,
    /// `<If>` blocks inside it, merged after every section when the section applies.
    pub ifs: Vec<IfBlock>,
    /// For a `<Files>`/`<FilesMatch>` inside a `<Directory>`: that section's index; it applies
    /// only where its parent does.
    pub parent: Option<usize>,
    /// Read from an `.htaccess` file (a `Directory` section for its directory, merged after
    /// the configuration's sections of the same depth, or a `<Files>` in it).
    pub htaccess: bool,
    pub origin: Origin,
}

/// `Alias` / `AliasMatch`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    pub from: Matcher,
    pub to: String,
    pub origin: Origin,
}

/// The filesystem side of one server (the main server or a virtual host).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Site {
    /// Server-level settings (`DirectoryIndex` outside any section, ...).
    pub base: DirSettings,
    /// Sections in configuration order (the main server's first for a virtual host).
    pub sections: Vec<Section>,
    /// `Alias`/`AliasMatch` in order (the virtual host's first, then the main server's).
    pub aliases: Vec<Alias>,
    /// `AccessFileName` (default `.htaccess`).
    pub access_file: Option<String>,
    /// Declared as a site (TOML `[[site]]`): its files are served even without a handler.
    pub declared: bool,
}

impl Site {
    /// Whether requests that no route takes are mapped to the filesystem at all: the site was
    /// declared as one, or some handler is configured (an Apache configuration that only
    /// proxies keeps answering 404 outside its routes).
    pub fn serves_files(&self) -> bool {
        let has = |d: &DirSettings| matches!(d.handler, Some(Handler::Proxy { .. }));
        self.declared
            || has(&self.base)
            || self
                .sections
                .iter()
                .any(|s| has(&s.settings) || s.ifs.iter().any(|i| has(&i.settings)))
    }

    /// The settings for a request: `uri` (decoded path), `file` (the filesystem path it maps
    /// to, without path info) and what `file` is. Apache's order: the server's settings,
    /// `<Directory>` (not regex, fewer components first), `<DirectoryMatch>`, `<Files>` and
    /// `<FilesMatch>`, `<Location>` and `<LocationMatch>` (each in configuration order, later
    /// wins), then the `<If>` blocks of the sections that applied.
    pub fn merge(&self, uri: &[u8], file: &[u8], kind: PathKind) -> DirSettings {
        let mut out = self.base.clone();
        // The directory the file is in (the path itself for a directory), with a trailing '/'.
        let dir: Cow<'_, [u8]> = if kind == PathKind::Directory {
            if file.last() == Some(&b'/') {
                Cow::Borrowed(file)
            } else {
                let mut d = Vec::with_capacity(file.len() + 1);
                d.extend_from_slice(file);
                d.push(b'/');
                Cow::Owned(d)
            }
        } else {
            match file.iter().rposition(|&c| c == b'/') {
                Some(i) => Cow::Borrowed(&file[..=i]),
                None => Cow::Borrowed(b"/"),
            }
        };
        let base_name: &[u8] = {
            let f = file.strip_suffix(b"/").unwrap_or(file);
            f.rsplit(|&c| c == b'/').next().unwrap_or(b"")
        };
        let mut order: Vec<usize> = Vec::new();
        let mut dirs: Vec<(usize, bool, usize)> = self
            .sections
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match (&s.kind, &s.matcher) {
                (SectionKind::Directory, Matcher::Path(p)) => Some((components(p), s.htaccess, i)),
                _ => None,
            })
            .collect();
        // Apache walks the path: at each depth the <Directory> sections, then that
        // directory's .htaccess.
        dirs.sort_by_key(|&(c, h, i)| (c, h, i));
        for (_, _, i) in dirs {
            if let Matcher::Path(p) = &self.sections[i].matcher
                && dir_covers(p.as_bytes(), &dir)
            {
                order.push(i);
            }
        }
        for (i, s) in self.sections.iter().enumerate() {
            let hit = match (&s.kind, &s.matcher) {
                (SectionKind::Directory, Matcher::Regex(re))
                | (SectionKind::DirectoryMatch, Matcher::Regex(re)) => {
                    dir_prefixes(&dir).any(|d| re.regex().is_match(d))
                }
                _ => false,
            };
            if hit {
                order.push(i);
            }
        }
        for (i, s) in self.sections.iter().enumerate() {
            let hit = match (&s.kind, &s.matcher) {
                (SectionKind::Files, Matcher::Path(p)) => fnmatch(p.as_bytes(), base_name),
                (SectionKind::Files | SectionKind::FilesMatch, Matcher::Regex(re)) => {
                    re.regex().is_match(base_name)
                }
                _ => false,
            };
            if hit && s.parent.is_none_or(|p| order.contains(&p)) {
                order.push(i);
            }
        }
        for (i, s) in self.sections.iter().enumerate() {
            let hit = match (&s.kind, &s.matcher) {
                (SectionKind::Location, Matcher::Path(p)) => location_covers(p.as_bytes(), uri),
                (SectionKind::Location | SectionKind::LocationMatch, Matcher::Regex(re)) => {
                    re.regex().is_match(uri)
                }
                _ => false,
            };
            if hit {
                order.push(i);
            }
        }
        for &i in &order {
            out.merge(&self.sections[i].settings);
        }
        for &i in &order {
            for b in &self.sections[i].ifs {
                if b.test.holds(kind) {
                    out.merge(&b.settings);
                }
            }
        }
        out
    }

    /// Whether any `<Location>`/`<LocationMatch>` restricts access: requests a `ProxyPass`
    /// route takes are then checked against them ([`Site::merge_locations`]).
    pub fn locations_restrict(&self) -> bool {
        self.sections.iter().any(|s| {
            matches!(s.kind, SectionKind::Location | SectionKind::LocationMatch)
                && (s.settings.authz.is_some()
                    || s.settings.compat.is_some()
                    || !s.settings.status_rules.is_empty())
        })
    }

    /// The access settings for a request a `ProxyPass` route takes: Apache maps it to no file
    /// (`proxy:…`), so only the server's settings and the `<Location>`/`<LocationMatch>`
    /// sections covering `uri` apply, in configuration order.
    pub fn merge_locations(&self, uri: &[u8]) -> DirSettings {
        let mut out = self.base.clone();
        for s in &self.sections {
            let hit = match (&s.kind, &s.matcher) {
                (SectionKind::Location, Matcher::Path(p)) => location_covers(p.as_bytes(), uri),
                (SectionKind::Location | SectionKind::LocationMatch, Matcher::Regex(re)) => {
                    re.regex().is_match(uri)
                }
                _ => false,
            };
            if hit {
                out.merge(&s.settings);
            }
        }
        out
    }

    /// Map a decoded URL path with `Alias`/`AliasMatch` (mod_alias), else onto `document_root`:
    /// (filesystem path, CONTEXT_PREFIX, CONTEXT_DOCUMENT_ROOT).
    pub fn translate(&self, uri: &[u8], document_root: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        for a in &self.aliases {
            match &a.from {
                Matcher::Path(p) => {
                    let n = crate::route::alias_match(uri, p.as_bytes());
                    if n > 0 {
                        let mut f = a.to.as_bytes().to_vec();
                        f.extend_from_slice(&uri[n..]);
                        return (f, p.as_bytes().to_vec(), a.to.as_bytes().to_vec());
                    }
                }
                Matcher::Regex(re) => {
                    if let Some(caps) = re.regex().captures(uri) {
                        let f = super::expr::pregsub(&a.to, Some(&caps));
                        let m = caps.get(0).map_or(&b""[..], |m| m.as_bytes());
                        return (f.clone(), m.to_vec(), f);
                    }
                }
            }
        }
        let mut f = document_root.trim_end_matches('/').as_bytes().to_vec();
        f.extend_from_slice(uri);
        (f, Vec::new(), document_root.as_bytes().to_vec())
    }
}

/// Path components of a `<Directory>` path (`/` has none).
fn components(p: &str) -> usize {
    p.split('/').filter(|c| !c.is_empty()).count()
}

/// Whether `<Directory pattern>` covers directory `dir` (which ends with '/'): each component
/// of the pattern matches (wildcards allowed) the component of `dir` in the same place.
fn dir_covers(pattern: &[u8], dir: &[u8]) -> bool {
    let pat: Vec<&[u8]> = pattern
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let d: Vec<&[u8]> = dir
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    pat.len() <= d.len() && pat.iter().zip(&d).all(|(p, x)| fnmatch(p, x))
}

/// `/a/b/` -> `/`, `/a/`, `/a/b/`.
fn dir_prefixes(dir: &[u8]) -> impl Iterator<Item = &[u8]> {
    dir.iter()
        .enumerate()
        .filter(|&(_, &c)| c == b'/')
        .map(move |(i, _)| &dir[..=i])
}

/// `<Location /p>`: `/p`, `/p/...`, not `/px`; `<Location /p/>`: `/p/` and below.
fn location_covers(p: &[u8], uri: &[u8]) -> bool {
    if p == b"/" {
        return true;
    }
    uri.starts_with(p) && (p.ends_with(b"/") || uri.len() == p.len() || uri[p.len()] == b'/')
}

/// A `<VirtualHost>` address: `*`, `_default_`, an IP, each with an optional port (`*` for
/// any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VhostAddr {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

impl VhostAddr {
    /// Parse `*:80`, `_default_:80`, `127.0.0.1:8080`, `[::1]:80`, `*`.
    pub fn parse(s: &str) -> Result<VhostAddr, String> {
        let bad = || format!("invalid <VirtualHost> address '{s}'");
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once(']').ok_or_else(bad)?;
            (h, p.strip_prefix(':'))
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None | Some("*") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad())?),
        };
        let ip = match host {
            "*" | "_default_" => None,
            h => Some(h.parse::<IpAddr>().map_err(|_| {
                format!(
                    "<VirtualHost {s}>: only IP addresses, '*' and '_default_' are supported \
                     (no name lookups)"
                )
            })?),
        };
        Ok(VhostAddr { ip, port })
    }

    /// Whether a connection to `local` is for this address.
    pub fn matches(&self, local: std::net::SocketAddr) -> bool {
        self.port.is_none_or(|p| p == local.port()) && self.ip.is_none_or(|ip| ip == local.ip())
    }
}

/// A name-based virtual host with its own effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHost {
    pub addrs: Vec<VhostAddr>,
    /// `ServerName` (host part, lower case), then each `ServerAlias` (wildcards allowed).
    pub names: Vec<String>,
    /// The main server's configuration with this host's settings over it: its own
    /// `server_name`, `document_root`, routes and `site`.
    pub config: Box<Config>,
    pub origin: Option<Origin>,
}

impl VirtualHost {
    /// Whether `host` (lower case, no port) is one of its names.
    pub fn is_named(&self, host: &[u8]) -> bool {
        self.names.iter().any(|n| fnmatch(n.as_bytes(), host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(granted: bool) -> Option<Arc<Authz>> {
        Some(Arc::new(Authz::Group {
            all: false,
            negate: false,
            children: vec![Authz::Rule {
                who: Who::All(granted),
                negate: false,
            }],
        }))
    }

    fn dir(p: &str, authz: Option<Arc<Authz>>) -> Section {
        Section {
            kind: SectionKind::Directory,
            matcher: Matcher::Path(p.into()),
            settings: DirSettings {
                authz,
                ..DirSettings::default()
            },
            ifs: Vec::new(),
            parent: None,
            htaccess: false,
            origin: Origin::default(),
        }
    }

    #[test]
    fn directory_sections_merge_shortest_first_whatever_the_order() {
        let site = Site {
            sections: vec![dir("/var/www/", all(true)), dir("/", all(false))],
            ..Site::default()
        };
        let m = site.merge(b"/x", b"/var/www/html/x", PathKind::File);
        assert_eq!(m.authz, all(true));
        let m = site.merge(b"/x", b"/etc/passwd", PathKind::File);
        assert_eq!(m.authz, all(false));
    }

    #[test]
    fn files_then_location_then_if() {
        let mut f = dir("", all(false));
        f.kind = SectionKind::FilesMatch;
        f.matcher = Matcher::Regex(Pattern::new(r"^\.ht", false).unwrap());
        let mut l = dir("/pub/", all(true));
        l.kind = SectionKind::Location;
        let site = Site {
            sections: vec![f, l],
            ..Site::default()
        };
        assert_eq!(
            site.merge(b"/.htpasswd", b"/d/.htpasswd", PathKind::File)
                .authz,
            all(false)
        );
        assert_eq!(
            site.merge(b"/pub/.htx", b"/d/pub/.htx", PathKind::File)
                .authz,
            all(true),
            "Location is merged after Files"
        );
        assert!(location_covers(b"/p", b"/p/x") && !location_covers(b"/p", b"/px"));
    }

    #[test]
    fn if_tests() {
        let t = FileTest::parse("-f %{REQUEST_FILENAME}").unwrap();
        assert!(t.holds(PathKind::File) && !t.holds(PathKind::Missing));
        let t = FileTest::parse("!-d %{REQUEST_FILENAME}").unwrap();
        assert!(t.holds(PathKind::File) && !t.holds(PathKind::Directory));
        assert!(FileTest::parse("%{HTTP_HOST} == 'x'").is_none());
    }

    #[test]
    fn vhost_addresses() {
        let a = VhostAddr::parse("*:80").unwrap();
        assert!(a.matches("127.0.0.1:80".parse().unwrap()));
        assert!(!a.matches("127.0.0.1:81".parse().unwrap()));
        let a = VhostAddr::parse("127.0.0.2").unwrap();
        assert!(!a.matches("127.0.0.1:80".parse().unwrap()));
        assert!(VhostAddr::parse("[::1]:8080").unwrap().port == Some(8080));
        assert!(VhostAddr::parse("example.com:80").is_err());
    }
}
