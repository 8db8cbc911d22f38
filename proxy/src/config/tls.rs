//! Listeners with TLS and HTTP/2: the `[[listener]]` tables of TOML, and what an Apache
//! configuration's `SSLEngine`, `SSLCertificate*`, `SSLProtocol` and `Protocols` say, turned into
//! one plan per listening address ([`Config::front_listeners`]).

use core::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, parse_listen};

/// `[[listener]]`: an address served with TLS, or with HTTP/2 without it.
///
/// ```toml
/// [[listener]]
/// addr = "0.0.0.0:443"
/// protocols = ["h2", "http/1.1"]        # offered by ALPN, in this order (the default)
/// tls = { cert = "/etc/ssl/site.pem", key = "/etc/ssl/site.key" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `PORT`, `IP:PORT` or `[IPv6]:PORT`, as in `listen`.
    pub addr: String,
    /// TLS on this address; absent: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// With TLS, the protocols offered by ALPN (`h2`, `http/1.1`); default both, h2 first.
    /// Without TLS, `h2c` accepts HTTP/2 with prior knowledge besides HTTP/1.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
}

/// A certificate and its key, PEM files (Apache `SSLCertificateFile`, `SSLCertificateKeyFile`,
/// `SSLCertificateChainFile`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate, optionally followed by its chain (leaf first).
    pub cert: String,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC). Default: in `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// More chain certificates, sent after those in `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// `["TLSv1.2", "TLSv1.3"]` (the default); Apache's `SSLProtocol` syntax is read too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<String>>,
    /// Certificates chosen by the name the client asks for (SNI); the one above otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<SniCert>,
}

/// `[[listener.tls.sni]]`: the certificate for these names (`*` and `?` wildcards).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCert {
    pub names: Vec<String>,
    pub cert: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}

/// The files of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: String,
    pub key: String,
    pub chain: Option<String>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        })
    }
}

/// What TLS a listener does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    /// For a client that names no host, or one no entry of `sni` has.
    pub default: CertFiles,
    /// Name patterns (lower case) and their certificate, first match wins.
    pub sni: Vec<(Vec<String>, CertFiles)>,
    /// Versions accepted (at least one).
    pub versions: Vec<TlsVersion>,
}

/// One listening address and how it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontListener {
    pub addr: SocketAddr,
    /// As written (for messages).
    pub spec: String,
    pub tls: Option<TlsPlan>,
    /// HTTP/2: over TLS, offered by ALPN; without TLS, accepted with prior knowledge (h2c).
    pub h2: bool,
    /// HTTP/1.1 offered by ALPN (always accepted without TLS).
    pub http1: bool,
}

/// `SSLProtocol` (`all -SSLv3 -TLSv1 +TLSv1.3`, ...) or TOML's `versions` list: what is on.
pub fn parse_versions(args: &[String]) -> Result<Vec<TlsVersion>, String> {
    let mut on: Vec<TlsVersion> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let (op, name) = match a.as_bytes().first() {
            Some(b'+') => (Some(true), &a[1..]),
            Some(b'-') => (Some(false), &a[1..]),
            _ => (None, a.as_str()),
        };
        let set: Vec<TlsVersion> = match name.to_ascii_lowercase().as_str() {
            "all" => vec![TlsVersion::Tls12, TlsVersion::Tls13],
            "tlsv1.2" | "1.2" => vec![TlsVersion::Tls12],
            "tlsv1.3" | "1.3" => vec![TlsVersion::Tls13],
            // Never offered here: turning them off changes nothing, asking for them is refused.
            "sslv3" | "tlsv1" | "tlsv1.1" | "1.0" | "1.1" if op == Some(false) => Vec::new(),
            "sslv3" | "tlsv1" | "tlsv1.1" | "1.0" | "1.1" if args.len() > 1 || i > 0 => {
                // `SSLProtocol TLSv1.2 TLSv1.1`: the old one is not available; the rest stands.
                Vec::new()
            }
            _ => {
                return Err(format!(
                    "TLS protocol '{a}' is not supported (TLSv1.2 and TLSv1.3 are)"
                ));
            }
        };
        match op {
            // A bare name (Apache: the first sets, the following add).
            None if i == 0 => on = set,
            None | Some(true) => on.extend(set),
            Some(false) => on.retain(|v| !set.contains(v)),
        }
    }
    on.sort();
    on.dedup();
    if on.is_empty() {
        return Err(format!(
            "no TLS protocol left by '{}' (TLSv1.2 and TLSv1.3 are supported)",
            args.join(" ")
        ));
    }
    Ok(on)
}

/// `protocols` / Apache `Protocols`: (h2, http/1.1) for a TLS listener, (h2c, _) for a plain one.
fn parse_protocols(list: &[String], tls: bool) -> Result<(bool, bool), String> {
    let (mut h2, mut h1) = (false, false);
    for p in list {
        match p.to_ascii_lowercase().as_str() {
            "h2" => h2 |= tls,
            "h2c" => h2 |= !tls,
            "http/1.1" => h1 = true,
            other => return Err(format!("unknown protocol '{other}' (h2, h2c, http/1.1)")),
        }
    }
    if tls && !h2 && !h1 {
        return Err("a TLS listener needs h2 or http/1.1 among its protocols".into());
    }
    Ok((h2, h1 || !tls))
}

fn files(cert: &str, key: Option<&str>, chain: Option<&str>) -> CertFiles {
    CertFiles {
        cert: cert.to_owned(),
        key: key.unwrap_or(cert).to_owned(),
        chain: chain.map(str::to_owned),
    }
}

impl Config {
    /// Every listening address with how it is served: `listen` (plain HTTP/1.1, or as its
    /// Apache virtual hosts say), then `[[listener]]`. With Apache virtual hosts, an address
    /// whose first `<VirtualHost>` (by port) has `SSLEngine on` is a TLS listener; the
    /// certificate a client gets is that of the first virtual host with TLS named by its SNI,
    /// else the first one's.
    pub fn front_listeners(&self) -> Result<Vec<FrontListener>, ConfigError> {
        let mut out = Vec::new();
        for spec in &self.listen {
            let addr = parse_listen(spec).map_err(|e| self.tls_err(e))?;
            out.push(self.apache_listener(spec, addr)?);
        }
        for l in &self.listeners {
            let addr = parse_listen(&l.addr).map_err(|e| self.tls_err(e))?;
            let tls = match &l.tls {
                None => None,
                Some(t) => Some(TlsPlan {
                    default: files(&t.cert, t.key.as_deref(), t.chain.as_deref()),
                    sni: t
                        .sni
                        .iter()
                        .map(|s| {
                            (
                                s.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                                files(&s.cert, s.key.as_deref(), s.chain.as_deref()),
                            )
                        })
                        .collect(),
                    versions: match &t.versions {
                        Some(v) => parse_versions(v)
                            .map_err(|e| self.tls_err(format!("listener {}: {e}", l.addr)))?,
                        None => vec![TlsVersion::Tls12, TlsVersion::Tls13],
                    },
                }),
            };
            let default = ["h2".to_owned(), "http/1.1".to_owned()];
            let (h2, http1) = parse_protocols(
                l.protocols.as_deref().unwrap_or(if tls.is_some() {
                    &default
                } else {
                    &default[1..]
                }),
                tls.is_some(),
            )
            .map_err(|e| self.tls_err(format!("listener {}: {e}", l.addr)))?;
            out.push(FrontListener {
                addr,
                spec: l.addr.clone(),
                tls,
                h2,
                http1,
            });
        }
        for (i, a) in out.iter().enumerate() {
            if out[..i].iter().any(|b| b.addr == a.addr) {
                return Err(self.tls_err(format!("{} is listened on twice", a.spec)));
            }
        }
        Ok(out)
    }

    /// A `listen` address: TLS when the server, or the first virtual host of its port, has TLS
    /// on.
    fn apache_listener(&self, spec: &str, addr: SocketAddr) -> Result<FrontListener, ConfigError> {
        let hosts: Vec<&Config> = self
            .vhosts
            .iter()
            .filter(|v| {
                v.addrs
                    .iter()
                    .any(|a| a.port.is_none_or(|p| p == addr.port()))
            })
            .map(|v| &*v.config)
            .collect();
        let names = |c: &Config| -> Vec<String> {
            self.vhosts
                .iter()
                .find(|v| std::ptr::eq(&*v.config, c))
                .map(|v| v.names.clone())
                .unwrap_or_default()
        };
        let with_tls: Vec<&Config> = if hosts.is_empty() {
            self.tls.iter().map(|_| self).collect()
        } else {
            hosts.iter().copied().filter(|c| c.tls.is_some()).collect()
        };
        // The first server of the address (Apache's default server for it) decides whether its
        // connections are TLS and their protocols; SNI then picks among the TLS ones.
        let first = hosts.first().copied().unwrap_or(self);
        let lead = first.tls.as_ref().map(|_| first);
        let Some(lead) = lead else {
            let (h2, http1) = match &first.protocols {
                Some(p) => parse_protocols(p, false).map_err(|e| first.tls_err(e))?,
                None => (false, true),
            };
            return Ok(FrontListener {
                addr,
                spec: spec.to_owned(),
                tls: None,
                h2,
                http1,
            });
        };
        let plan_of = |c: &Config| -> Result<(CertFiles, Vec<TlsVersion>), ConfigError> {
            let t = c.tls.as_ref().expect("filtered on tls");
            let versions = match &t.versions {
                Some(v) => parse_versions(v).map_err(|e| c.tls_err(e))?,
                None => vec![TlsVersion::Tls12, TlsVersion::Tls13],
            };
            Ok((
                files(&t.cert, t.key.as_deref(), t.chain.as_deref()),
                versions,
            ))
        };
        let (default, versions) = plan_of(lead)?;
        let mut sni = Vec::new();
        for c in &with_tls {
            let (f, _) = plan_of(c)?;
            let n = names(c);
            if !n.is_empty() {
                sni.push((n, f));
            }
        }
        let (h2, http1) = match &first.protocols {
            Some(p) => parse_protocols(p, true).map_err(|e| first.tls_err(e))?,
            None => (false, true),
        };
        Ok(FrontListener {
            addr,
            spec: spec.to_owned(),
            tls: Some(TlsPlan {
                default,
                sni,
                versions,
            }),
            h2,
            http1,
        })
    }

    fn tls_err(&self, message: String) -> ConfigError {
        ConfigError::located(None, self.origin.as_deref(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Result<Vec<TlsVersion>, String> {
        parse_versions(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ssl_protocol_syntax() {
        use TlsVersion::*;
        assert_eq!(v(&["all", "-SSLv3"]), Ok(vec![Tls12, Tls13]));
        assert_eq!(
            v(&["all", "-SSLv3", "-TLSv1", "-TLSv1.1", "-TLSv1.2"]),
            Ok(vec![Tls13])
        );
        assert_eq!(v(&["TLSv1.2"]), Ok(vec![Tls12]));
        assert_eq!(v(&["-all", "+TLSv1.3"]), Ok(vec![Tls13]));
        assert_eq!(v(&["TLSv1.3", "+TLSv1.2"]), Ok(vec![Tls12, Tls13]));
        assert!(v(&["SSLv3"]).is_err());
        assert!(v(&["all", "-TLSv1.2", "-TLSv1.3"]).is_err());
        assert!(v(&["TLSv9"]).is_err());
    }

    #[test]
    fn protocols() {
        let p = |l: &[&str], tls| {
            parse_protocols(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>(), tls)
        };
        assert_eq!(p(&["h2", "http/1.1"], true), Ok((true, true)));
        assert_eq!(p(&["h2c", "http/1.1"], true), Ok((false, true)));
        assert_eq!(p(&["h2c"], false), Ok((true, true)));
        assert_eq!(p(&["h2"], false), Ok((false, true)));
        assert!(p(&["spdy"], true).is_err());
        assert!(p(&["h2c"], true).is_err());
    }

    fn toml(text: &str) -> Result<Vec<FrontListener>, ConfigError> {
        let cfg = crate::config::toml::parse_unvalidated(text, "t.toml")?;
        cfg.front_listeners()
    }

    #[test]
    fn toml_listeners() {
        let l = toml(
            r#"
listen = ["127.0.0.1:8080"]
[[listener]]
addr = "127.0.0.1:8443"
tls = { cert = "/c.pem", key = "/k.pem", versions = ["TLSv1.3"], sni = [{ names = ["A.example"], cert = "/a.pem" }] }
[[listener]]
addr = "127.0.0.1:8081"
protocols = ["h2c", "http/1.1"]
"#,
        )
        .unwrap();
        assert_eq!(l.len(), 3);
        assert!(l[0].tls.is_none() && !l[0].h2 && l[0].http1);
        let t = l[1].tls.as_ref().unwrap();
        assert_eq!(t.default.key, "/k.pem");
        assert_eq!(t.versions, vec![TlsVersion::Tls13]);
        // Names lower case; the key defaults to the certificate's file.
        assert_eq!(t.sni[0].0, vec!["a.example".to_owned()]);
        assert_eq!(t.sni[0].1.key, "/a.pem");
        assert!(l[1].h2 && l[1].http1);
        assert!(l[2].tls.is_none() && l[2].h2);
    }

    #[test]
    fn toml_listener_errors() {
        let twice = toml("listen = [\"127.0.0.1:1\"]\n[[listener]]\naddr = \"127.0.0.1:1\"\n");
        assert!(twice.unwrap_err().message.contains("twice"));
        let unknown = toml("[[listener]]\naddr = \"127.0.0.1:1\"\ncert = \"x\"\n");
        assert!(unknown.is_err());
        let proto = toml(
            "[[listener]]\naddr = \"127.0.0.1:1\"\nprotocols = [\"h2c\"]\ntls = { cert = \"/c\" }\n",
        );
        assert!(proto.unwrap_err().message.contains("h2 or http/1.1"));
    }

    #[test]
    fn apache_ssl_per_virtual_host() {
        let conf = "Listen 8443 https\nListen 8080\nSSLProtocol all -SSLv3 -TLSv1.2\n\
                    <VirtualHost *:8443>\nServerName a.example\nSSLEngine on\n\
                    SSLCertificateFile /a.crt\nSSLCertificateKeyFile /a.key\n\
                    SSLCertificateChainFile /chain.crt\nProtocols h2 http/1.1\n</VirtualHost>\n\
                    <VirtualHost *:8443>\nServerName b.example\nServerAlias *.b.example\n\
                    SSLEngine on\nSSLCertificateFile /b.pem\n</VirtualHost>\n\
                    <VirtualHost *:8080>\nServerName plain.example\n</VirtualHost>\n";
        let (cfg, _) = crate::config::apache::parse(conf, "/etc/x/httpd.conf").unwrap();
        let l = cfg.front_listeners().unwrap();
        let t = l[0].tls.as_ref().expect("8443 is TLS");
        assert_eq!(t.default.cert, "/a.crt");
        assert_eq!(t.default.chain.as_deref(), Some("/chain.crt"));
        assert_eq!(
            t.versions,
            vec![TlsVersion::Tls13],
            "SSLProtocol of the main server"
        );
        assert_eq!(t.sni.len(), 2);
        assert_eq!(
            t.sni[1].0,
            vec!["b.example".to_owned(), "*.b.example".to_owned()]
        );
        assert_eq!(t.sni[1].1.key, "/b.pem");
        assert!(l[0].h2, "Protocols of the first virtual host");
        assert!(l[1].tls.is_none() && !l[1].h2);
    }

    #[test]
    fn first_virtual_host_decides() {
        // Debian's layout with default-ssl enabled, read with --listen: every virtual host
        // then matches the one address, and the first (plain) decides.
        let conf = "Listen 80\nListen 443\n<VirtualHost *:80>\nServerName a\n</VirtualHost>\n\
                    <VirtualHost *:443>\nServerName a\nSSLEngine on\nSSLCertificateFile /c\n\
                    </VirtualHost>\n";
        let (mut cfg, _) = crate::config::apache::parse(conf, "h.conf").unwrap();
        let l = cfg.front_listeners().unwrap();
        assert!(l[0].tls.is_none() && l[1].tls.is_some());
        cfg.override_listen(vec!["127.0.0.1:8080".into()]);
        assert!(cfg.front_listeners().unwrap()[0].tls.is_none());
    }

    #[test]
    fn apache_ssl_errors() {
        let no_cert = "Listen 443\n<VirtualHost *:443>\nSSLEngine on\n</VirtualHost>\n";
        let e = crate::config::apache::parse(no_cert, "h.conf").unwrap_err();
        assert!(e.message.contains("SSLCertificateFile"), "{e}");
        let old = "Listen 443\nSSLProtocol SSLv3\n";
        assert!(crate::config::apache::parse(old, "h.conf").is_err());
        let optional = "Listen 443\nSSLEngine optional\n";
        assert!(crate::config::apache::parse(optional, "h.conf").is_err());
    }
}
