//! Backend URLs as written in `ProxyPass`/`BalancerMember`/TOML `target`:
//! `fcgi://host[:port][/path]`, `unix:/path/to.sock|fcgi://host[/path]`, `balancer://name[/path]`
//! and the exclusion `!`. They only ever come from configuration (CVE-2021-40438).

use core::fmt;
use std::path::PathBuf;

/// The default port of the `fcgi` scheme in Apache (`ap_proxy_port_of_scheme("fcgi")`). It is
/// omitted from SCRIPT_FILENAME.
pub const FCGI_DEFAULT_PORT: u16 = 8000;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSocket {
    /// TCP: host name or IP literal (no brackets) and port.
    Tcp { host: String, port: u16 },
    /// Unix domain socket path.
    Unix { path: PathBuf },
}

impl fmt::Display for BackendSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendSocket::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp [{host}]:{port}")
            }
            BackendSocket::Tcp { host, port } => write!(f, "tcp {host}:{port}"),
            BackendSocket::Unix { path } => write!(f, "unix {}", path.display()),
        }
    }
}

/// A FastCGI worker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerUrl {
    /// As written in the configuration.
    pub raw: String,
    /// Where to connect.
    pub socket: BackendSocket,
    /// The `fcgi://` host as canonicalised by Apache: lower-cased, IPv6 in brackets. For a
    /// `unix:` URL this is the host after `|fcgi://` (usually `localhost`), used only in
    /// SCRIPT_FILENAME.
    pub host: String,
    /// The `fcgi://` port (8000 when absent).
    pub port: u16,
    /// Whether a port was written.
    pub explicit_port: bool,
    /// The path after the authority: empty or starting with `/`. In a regex route it may hold
    /// `$N` references.
    pub path: String,
}

impl WorkerUrl {
    /// Appends `fcgi://host[:port]` as it appears in SCRIPT_FILENAME (port omitted when 8000).
    pub fn push_canonical_authority(&self, out: &mut String) {
        out.push_str("fcgi://");
        out.push_str(&self.host);
        if self.port != FCGI_DEFAULT_PORT {
            out.push(':');
            out.push_str(itoa::Buffer::new().format(self.port));
        }
    }

    /// The worker name Apache reports in `BALANCER_WORKER_NAME`: scheme and host lower-cased,
    /// the rest as written.
    pub fn name(&self) -> String {
        let port = if self.explicit_port {
            format!(":{}", self.port)
        } else {
            String::new()
        };
        let fcgi = format!("fcgi://{}{}{}", self.host, port, self.path);
        match &self.socket {
            BackendSocket::Unix { path } => format!("unix:{}|{}", path.display(), fcgi),
            BackendSocket::Tcp { .. } => fcgi,
        }
    }
}

impl fmt::Display for WorkerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// `balancer://name[/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerUrl {
    /// As written.
    pub raw: String,
    /// Balancer name, lower-cased (Apache compares balancer names case-insensitively).
    pub name: String,
    /// The path after the name: empty or starting with `/`.
    pub path: String,
}

/// A route target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A single FastCGI worker.
    Worker(WorkerUrl),
    /// A `<Proxy balancer://…>` group.
    Balancer(BalancerUrl),
    /// `ProxyPass /path !`: not proxied.
    Exclude,
}

impl Target {
    /// Parse a target as written after the route path.
    pub fn parse(s: &str) -> Result<Target, String> {
        let t = s.trim();
        if t == "!" {
            return Ok(Target::Exclude);
        }
        if starts_with_ci(t, "balancer:") {
            return parse_balancer(t).map(Target::Balancer);
        }
        WorkerUrl::parse(t).map(Target::Worker)
    }

    /// The text form (what was written).
    pub fn as_str(&self) -> &str {
        match self {
            Target::Worker(w) => &w.raw,
            Target::Balancer(b) => &b.raw,
            Target::Exclude => "!",
        }
    }

    /// The path part that `$N` substitution and request remainders are appended to.
    pub fn path(&self) -> &str {
        match self {
            Target::Worker(w) => &w.path,
            Target::Balancer(b) => &b.path,
            Target::Exclude => "",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Target::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for WorkerUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for WorkerUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WorkerUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn check_path(path: &str, what: &str) -> Result<(), String> {
    if path.contains('?') || path.contains('#') {
        return Err(format!("{what} must not contain a query or fragment"));
    }
    if path.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

fn parse_balancer(t: &str) -> Result<BalancerUrl, String> {
    let rest = t
        .get("balancer:".len()..)
        .and_then(|r| r.strip_prefix("//"))
        .ok_or_else(|| format!("invalid balancer URL '{t}' (expected balancer://name/...)"))?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (name, path) = rest.split_at(end);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "invalid balancer name in '{t}' (letters, digits, '-', '_' and '.' only; no '$')"
        ));
    }
    check_path(path, "a balancer URL")?;
    Ok(BalancerUrl {
        raw: t.to_owned(),
        name: name.to_ascii_lowercase(),
        path: path.to_owned(),
    })
}

impl WorkerUrl {
    /// Parse `fcgi://host[:port][/path]` or `unix:/socket|fcgi://host[/path]`.
    pub fn parse(t: &str) -> Result<WorkerUrl, String> {
        let t = t.trim();
        if starts_with_ci(t, "unix:") {
            let bar = t.find('|').ok_or_else(|| {
                format!("invalid UDS URL '{t}' (expected unix:/path|fcgi://host/)")
            })?;
            let mut sock = &t["unix:".len()..bar];
            // `unix:///run/x.sock` (empty hostname) means `unix:/run/x.sock` (Apache 2.4.50).
            if let Some(s) = sock.strip_prefix("//") {
                sock = s;
            }
            if !sock.starts_with('/') || sock.len() < 2 {
                return Err(format!("the socket path in '{t}' must be absolute"));
            }
            if sock.contains('$') {
                return Err(format!(
                    "'$' substitution is not allowed in the socket path of '{t}'"
                ));
            }
            check_path(sock, "a socket path")?;
            let inner = &t[bar + 1..];
            let (host, port, explicit_port, path) = parse_fcgi(inner, true)?;
            return Ok(WorkerUrl {
                raw: t.to_owned(),
                socket: BackendSocket::Unix {
                    path: PathBuf::from(sock),
                },
                host,
                port,
                explicit_port,
                path,
            });
        }
        if !starts_with_ci(t, "fcgi:") {
            return Err(format!(
                "unsupported backend URL '{t}': expected fcgi://host:port/path, \
                 unix:/path/to.sock|fcgi://localhost/path, balancer://name/path or !"
            ));
        }
        let (host, port, explicit_port, path) = parse_fcgi(t, false)?;
        let connect_host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host)
            .to_owned();
        Ok(WorkerUrl {
            raw: t.to_owned(),
            socket: BackendSocket::Tcp {
                host: connect_host,
                port,
            },
            host,
            port,
            explicit_port,
            path,
        })
    }
}

/// Returns (canonical host, port, explicit port?, path).
fn parse_fcgi(t: &str, uds: bool) -> Result<(String, u16, bool, String), String> {
    if !starts_with_ci(t, "fcgi:") {
        return Err(format!("expected an fcgi:// URL, found '{t}'"));
    }
    let after = &t["fcgi:".len()..];
    let Some(rest) = after.strip_prefix("//") else {
        if uds && (after.is_empty() || after.starts_with('/')) {
            // A bare `fcgi:` or `fcgi:/path` after `unix:…|` is completed with `//localhost`.
            check_path(after, "a backend URL path")?;
            return Ok(("localhost".into(), FCGI_DEFAULT_PORT, false, after.into()));
        }
        return Err(format!(
            "invalid fcgi URL '{t}' (expected fcgi://host:port/path)"
        ));
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('$') {
        return Err(format!(
            "'$' substitution is only allowed in the path of '{t}', never in host or port"
        ));
    }
    if authority.contains('@') {
        return Err(format!("user information is not allowed in '{t}'"));
    }
    check_path(path, "a backend URL path")?;
    let (host, port_str) = if let Some(r) = authority.strip_prefix('[') {
        let close = r
            .find(']')
            .ok_or_else(|| format!("unterminated IPv6 literal in '{t}'"))?;
        let lit = &r[..close];
        if lit.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 literal in '{t}'"));
        }
        let after = &r[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("invalid authority in '{t}'")),
        };
        (format!("[{}]", lit.to_ascii_lowercase()), port)
    } else {
        let (h, p) = match authority.rfind(':') {
            Some(i) => (&authority[..i], Some(&authority[i + 1..])),
            None => (authority, None),
        };
        if h.is_empty() && !uds {
            return Err(format!("no host in '{t}'"));
        }
        if !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(format!("invalid host '{h}' in '{t}'"));
        }
        let h = if h.is_empty() { "localhost" } else { h };
        (h.to_ascii_lowercase(), p)
    };
    let (port, explicit) = match port_str {
        None | Some("") => (FCGI_DEFAULT_PORT, false),
        Some(p) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|n| *n > 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("invalid port '{p}' in '{t}'"))?;
            (n, true)
        }
    };
    Ok((host, port, explicit, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(w: &WorkerUrl) -> String {
        let mut s = String::new();
        w.push_canonical_authority(&mut s);
        s
    }

    #[test]
    fn tcp_worker() {
        let w = WorkerUrl::parse("fcgi://LocalHost:4000/App/").unwrap();
        assert_eq!(w.host, "localhost");
        assert_eq!(w.port, 4000);
        assert_eq!(w.path, "/App/");
        assert_eq!(
            w.socket,
            BackendSocket::Tcp {
                host: "localhost".into(),
                port: 4000
            }
        );
        assert_eq!(authority(&w), "fcgi://localhost:4000");
        assert_eq!(w.name(), "fcgi://localhost:4000/App/");
    }

    #[test]
    fn port_8000_is_omitted_and_default() {
        let w = WorkerUrl::parse("FCGI://h:8000").unwrap();
        assert_eq!(authority(&w), "fcgi://h");
        assert_eq!(w.path, "");
        let w = WorkerUrl::parse("fcgi://h/x").unwrap();
        assert_eq!(w.port, 8000);
        assert!(!w.explicit_port);
    }

    #[test]
    fn ipv6() {
        let w = WorkerUrl::parse("fcgi://[::1]:9000/").unwrap();
        assert_eq!(w.host, "[::1]");
        assert_eq!(
            w.socket,
            BackendSocket::Tcp {
                host: "::1".into(),
                port: 9000
            }
        );
    }

    #[test]
    fn uds() {
        let w = WorkerUrl::parse("unix:/run/php.sock|fcgi://localhost/var/www/").unwrap();
        assert_eq!(
            w.socket,
            BackendSocket::Unix {
                path: "/run/php.sock".into()
            }
        );
        assert_eq!(w.host, "localhost");
        assert_eq!(w.path, "/var/www/");
        let w = WorkerUrl::parse("unix:///run/php.sock|fcgi://").unwrap();
        assert_eq!(
            w.socket,
            BackendSocket::Unix {
                path: "/run/php.sock".into()
            }
        );
        assert_eq!(w.host, "localhost");
        let w = WorkerUrl::parse("unix:/run/php.sock|fcgi:/x").unwrap();
        assert_eq!((w.host.as_str(), w.path.as_str()), ("localhost", "/x"));
    }

    #[test]
    fn rejects() {
        for bad in [
            "http://h/",
            "fcgi://",
            "fcgi://h:0/",
            "fcgi://h:99999/",
            "fcgi://h:x/",
            "fcgi://$1:9000/",
            "fcgi://h:$1/",
            "fcgi://u@h/",
            "fcgi://h/a?b",
            "fcgi://h/a\tb",
            "fcgi://h<>/",
            "unix:rel.sock|fcgi://h/",
            "unix:/x.sock",
            "unix:/$1.sock|fcgi://h/",
            "fcgi:h",
        ] {
            assert!(WorkerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets() {
        assert_eq!(Target::parse("!").unwrap(), Target::Exclude);
        match Target::parse("balancer://MyPool/sub/").unwrap() {
            Target::Balancer(b) => {
                assert_eq!(b.name, "mypool");
                assert_eq!(b.path, "/sub/");
            }
            other => panic!("{other:?}"),
        }
        assert!(Target::parse("balancer://").is_err());
        assert!(Target::parse("balancer://a$1/").is_err());
        assert!(matches!(
            Target::parse("fcgi://h:1/x/$1").unwrap(),
            Target::Worker(_)
        ));
    }
}
