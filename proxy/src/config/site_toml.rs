//! `[[site]]` in a TOML configuration: a PHP site in a few lines, as Caddy's `php_fastcgi`
//! does it, turned into the same sections an Apache configuration gives ([`super::site`]):
//!
//! ```toml
//! [[site]]
//! prefix = "/dokuwiki"                     # URL prefix (default "/")
//! root = "/usr/share/dokuwiki"             # the files
//! index = ["doku.php", "index.php"]        # DirectoryIndex
//! try_files = "/doku.php"                  # front controller for what does not exist
//! php = "unix:/run/php/php8.2-fpm.sock"    # *.php goes to this FastCGI server
//! deny = ["/inc/", "/data/", ".ht*"]       # 403: URL paths under the prefix, or file names
//! allow = ["127.0.0.1", "::1"]             # only these clients (default: everyone)
//! host = ["wiki.example.com"]              # a virtual host (default: the main server)
//! ```
//!
//! Everything outside the site's `root` is refused (403), as Debian's `<Directory />
//! Require all denied`.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::model::{Origin, Pattern};
use super::site::{
    Alias, Authz, DirSettings, Handler, IpNet, Matcher, Section, SectionKind, Site, VhostAddr,
    VirtualHost, Who,
};
use super::url::WorkerUrl;
use super::{Config, ConfigError};

/// One `[[site]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    pub root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub try_files: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub php: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<String>,
}

fn rule(who: Who) -> Authz {
    Authz::Group {
        all: false,
        negate: false,
        children: vec![Authz::Rule { who, negate: false }],
    }
}

fn section(kind: SectionKind, matcher: Matcher, settings: DirSettings, origin: &Origin) -> Section {
    Section {
        kind,
        matcher,
        settings,
        ifs: Vec::new(),
        parent: None,
        htaccess: false,
        origin: origin.clone(),
    }
}

/// A glob (`*`, `?`, `[...]` within one path component) as a regular expression body.
fn glob_regex(g: &str) -> String {
    let mut out = String::new();
    for c in g.chars() {
        match c {
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out
}

impl SiteSpec {
    /// The sections and aliases of this site (added to `site`).
    fn build(&self, site: &mut Site, origin: &Origin) -> Result<(), String> {
        if !self.root.starts_with('/') {
            return Err(format!(
                "site.root must be an absolute path, found '{}'",
                self.root
            ));
        }
        let prefix = self.prefix.as_deref().unwrap_or("/");
        if !prefix.starts_with('/') {
            return Err(format!("site.prefix must start with '/', found '{prefix}'"));
        }
        let prefix = prefix.trim_end_matches('/');
        let root = format!("{}/", self.root.trim_end_matches('/'));
        site.declared = true;
        // Nothing outside the roots; the root itself granted (or to `allow` only).
        site.sections.push(section(
            SectionKind::Directory,
            Matcher::Path("/".into()),
            DirSettings {
                authz: Some(Arc::new(rule(Who::All(false)))),
                ..DirSettings::default()
            },
            origin,
        ));
        let who = if self.allow.is_empty() {
            Who::All(true)
        } else {
            let nets = self
                .allow
                .iter()
                .map(|a| {
                    IpNet::parse(a)
                        .ok_or_else(|| format!("site.allow: '{a}' is not an address or network"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Who::Ip(nets)
        };
        let mut dir = DirSettings {
            authz: Some(Arc::new(rule(who))),
            ..DirSettings::default()
        };
        if !self.index.is_empty() {
            dir.directory_index = Some(self.index.clone().into());
        }
        if let Some(t) = &self.try_files {
            if !t.starts_with('/') {
                return Err(format!("site.try_files must start with '/', found '{t}'"));
            }
            dir.fallback_resource = Some(Some(format!("{prefix}{t}").into()));
        }
        site.sections.push(section(
            SectionKind::Directory,
            Matcher::Path(root.clone()),
            dir,
            origin,
        ));
        let parent = site.sections.len() - 1;
        if let Some(php) = &self.php {
            let raw = if php.starts_with("unix:") && !php.contains('|') {
                format!("{php}|fcgi://localhost")
            } else {
                php.clone()
            };
            let url = WorkerUrl::parse(&raw).map_err(|e| format!("site.php: {e}"))?;
            let mut s = section(
                SectionKind::FilesMatch,
                Matcher::Regex(Pattern::new(r".+\.php$", false)?),
                DirSettings {
                    handler: Some(Handler::Proxy {
                        url: Arc::new(url),
                        worker: Arc::default(),
                        defined: false,
                    }),
                    ..DirSettings::default()
                },
                origin,
            );
            s.parent = Some(parent);
            site.sections.push(s);
        }
        let denied = || DirSettings {
            authz: Some(Arc::new(rule(Who::All(false)))),
            ..DirSettings::default()
        };
        for d in &self.deny {
            if let Some(rel) = d.strip_prefix('/') {
                // A URL path under the prefix: it and everything below it.
                let body = glob_regex(rel.trim_end_matches('/'));
                let re = format!("^{}/{body}(/|$)", regex::escape(prefix));
                site.sections.push(section(
                    SectionKind::LocationMatch,
                    Matcher::Regex(Pattern::new(&re, false)?),
                    denied(),
                    origin,
                ));
            } else if !d.is_empty() && !d.contains('/') {
                // A file name anywhere in the site.
                let mut s = section(
                    SectionKind::FilesMatch,
                    Matcher::Regex(Pattern::new(&format!("^{}$", glob_regex(d)), false)?),
                    denied(),
                    origin,
                );
                s.parent = Some(parent);
                site.sections.push(s);
            } else {
                return Err(format!(
                    "site.deny: '{d}' is neither a URL path ('/data/') nor a file name ('.ht*')"
                ));
            }
        }
        if !prefix.is_empty() {
            site.aliases.push(Alias {
                from: Matcher::Path(prefix.into()),
                to: root.trim_end_matches('/').to_owned(),
                origin: origin.clone(),
            });
        }
        Ok(())
    }
}

/// Turn `cfg.sites` into the main server's site and virtual hosts.
pub fn apply(cfg: &mut Config, lines: &[usize]) -> Result<(), ConfigError> {
    // Kept in `sites` too, so that the configuration serializes back to what was read.
    let specs = cfg.sites.clone();
    let file = cfg.origin.clone().unwrap_or_default();
    let mut hosts = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let origin = Origin {
            file: file.clone(),
            line: lines.get(i).copied().unwrap_or(0),
        };
        let err = |m: String| ConfigError::at(Some(&file), origin.line, m);
        if spec.host.is_empty() {
            spec.build(&mut cfg.site, &origin).map_err(err)?;
            if spec
                .prefix
                .as_deref()
                .unwrap_or("/")
                .trim_end_matches('/')
                .is_empty()
            {
                cfg.document_root = spec.root.trim_end_matches('/').to_owned();
            }
        } else {
            let mut c = cfg.clone();
            c.site = Site::default();
            spec.build(&mut c.site, &origin).map_err(err)?;
            if spec
                .prefix
                .as_deref()
                .unwrap_or("/")
                .trim_end_matches('/')
                .is_empty()
            {
                c.document_root = spec.root.trim_end_matches('/').to_owned();
            }
            hosts.push(VirtualHost {
                addrs: vec![VhostAddr {
                    ip: None,
                    port: None,
                }],
                names: spec.host.iter().map(|h| h.to_ascii_lowercase()).collect(),
                config: Box::new(c),
                origin: Some(origin),
            });
        }
    }
    // A virtual host's sections follow the main server's, as with Apache.
    for h in &mut hosts {
        let mut own = std::mem::take(&mut h.config.site);
        let mut s = cfg.site.clone();
        let off = s.sections.len();
        s.sections.extend(own.sections.drain(..).map(|mut x| {
            x.parent = x.parent.map(|p| p + off);
            x
        }));
        own.aliases.append(&mut s.aliases);
        s.aliases = own.aliases;
        h.config.site = s;
    }
    cfg.vhosts.extend(hosts);
    Ok(())
}
