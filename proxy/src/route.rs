//! Routing: Apache `ProxyPass` (prefix, `alias_match`) and `ProxyPassMatch` (regex, `$N`) in
//! configuration order, first match wins; `ProxyPass /x !` exclusions. The result carries the
//! "filename" Apache builds in `ap_proxy_trans_match` (`r->filename` after `proxy:`, before
//! canonicalisation).

use crate::config::{Config, ConfigError, Target, expr::pregsub};
use crate::uri::RequestUri;

/// Which backend a match goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The route's own worker (`config.routes[route].target` is `Target::Worker`).
    Worker,
    /// A balancer: index into `config.balancers` and its (lower-case) name.
    Balancer { index: usize, name: String },
}

/// The result of routing a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index into `config.routes`.
    pub route: usize,
    /// Worker or balancer.
    pub backend: Backend,
    /// `r->filename` without the `proxy:` prefix, as Apache builds it before canonicalisation:
    /// target URL (after `$N` substitution) + decoded remainder. E.g.
    /// `fcgi://127.0.0.1:9000/foo.php/x` or `balancer://pool/sub/x`. Bytes: the remainder is a
    /// decoded path.
    pub filename: Vec<u8>,
    /// Where [`RouteMatch::path`] starts in `filename`.
    path_at: usize,
    /// For prefix routes: how many bytes of the decoded request path matched (runs of `/` count
    /// fully). 0 for regex routes.
    pub matched_len: usize,
    /// `nocanon` is in effect: `path` is the raw request remainder (with `?query`), to be
    /// passed without re-encoding. Apache drops `nocanon` (AH01136) when the raw target does not
    /// match the route the same way as the decoded path.
    pub nocanon: bool,
}

impl RouteMatch {
    /// The part of `filename` after the target's authority (`fcgi://host:port`,
    /// `unix:…|fcgi://host` or `balancer://name`): what canonicalisation %-encodes into
    /// SCRIPT_FILENAME. Normally starts with `/`; it does not when a target without a path is
    /// mapped from a prefix ending in `/` (Apache then builds a broken URL: the CGI layer
    /// answers 500).
    pub fn path(&self) -> &[u8] {
        &self.filename[self.path_at..]
    }
}

#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    backend: Option<Backend>,
    /// Where the target's path starts (after its authority).
    split: usize,
}

/// Compiled routing table.
#[derive(Debug, Clone)]
pub struct Router {
    config: Config,
    entries: Vec<Entry>,
}

/// Apache `alias_match` (mod_proxy.c): the number of URI bytes matched by `alias`, or 0. Runs
/// of `/` in either string match each other (at least one required in the URI) and the last
/// component of the alias must match a whole URI component.
pub fn alias_match(uri: &[u8], alias: &[u8]) -> usize {
    if alias.is_empty() {
        return 0;
    }
    let (mut a, mut u) = (0usize, 0usize);
    while a < alias.len() && u < uri.len() {
        if alias[a] == b'/' {
            if uri[u] != b'/' {
                return 0;
            }
            while a < alias.len() && alias[a] == b'/' {
                a += 1;
            }
            while u < uri.len() && uri[u] == b'/' {
                u += 1;
            }
        } else {
            if uri[u] != alias[a] {
                return 0;
            }
            u += 1;
            a += 1;
        }
    }
    if u == uri.len() && a != alias.len() {
        return 0;
    }
    if alias[a - 1] != b'/' && u < uri.len() && uri[u] != b'/' {
        return 0;
    }
    u
}

/// Split a target URL text into (authority part, path part), where the path starts at the first
/// `/` after `scheme://authority` (after the `|` for `unix:` URLs).
fn split_authority(raw: &str) -> (&str, &str) {
    let inner_start = raw.find('|').map_or(0, |i| i + 1);
    let inner = &raw[inner_start..];
    let after_scheme = inner
        .find("//")
        .map_or_else(|| inner.find(':').map_or(0, |i| i + 1), |i| i + 2);
    let start = inner_start + after_scheme;
    match raw[start..].find('/') {
        Some(i) => raw.split_at(start + i),
        None => (raw, ""),
    }
}

impl Router {
    /// Build the router. Fails when a route names an unknown balancer.
    pub fn new(config: &Config) -> Result<Router, ConfigError> {
        let mut entries = Vec::with_capacity(config.routes.len());
        for (index, r) in config.routes.iter().enumerate() {
            let backend = match &r.target {
                Target::Exclude => None,
                Target::Worker(_) => Some(Backend::Worker),
                Target::Balancer(b) => {
                    let bi = config
                        .balancers
                        .iter()
                        .position(|x| x.name.eq_ignore_ascii_case(&b.name))
                        .ok_or_else(|| {
                            ConfigError::new(format!(
                                "route #{} ({}): unknown balancer '{}'",
                                index + 1,
                                r.describe_match(),
                                b.name
                            ))
                        })?;
                    Some(Backend::Balancer {
                        index: bi,
                        name: config.balancers[bi].name.clone(),
                    })
                }
            };
            if r.path.is_none() && r.regex.is_none() {
                return Err(ConfigError::new(format!(
                    "route #{} has neither path nor regex",
                    index + 1
                )));
            }
            let split = split_authority(r.target.as_str()).0.len();
            entries.push(Entry {
                index,
                backend,
                split,
            });
        }
        Ok(Router {
            config: config.clone(),
            entries,
        })
    }

    /// The configuration the router was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Route a request by its decoded, normalised path (`RequestUri::path`; the raw target is
    /// used for `nocanon` routes). `None`: no route, or the first matching route is an
    /// exclusion (not proxied).
    pub fn route(&self, uri: &RequestUri) -> Option<RouteMatch> {
        self.route_path(&uri.path, Some(uri.raw.as_bytes()))
    }

    /// [`Router::route`] on a bare decoded path (`nocanon` then never applies).
    pub fn route_path(&self, path: &[u8], raw: Option<&[u8]>) -> Option<RouteMatch> {
        for e in &self.entries {
            let r = &self.config.routes[e.index];
            let target = r.target.as_str();
            if let Some(re) = &r.regex {
                let Some(decoded_caps) = re.regex().captures(path) else {
                    continue;
                };
                let backend = e.backend.clone()?;
                let raw_caps = if r.nocanon {
                    raw.and_then(|raw| re.regex().captures(raw))
                } else {
                    None
                };
                let nocanon = raw_caps.is_some();
                let (use_uri, caps) = match (&raw_caps, raw) {
                    (Some(c), Some(raw)) => (raw, c),
                    _ => (path, &decoded_caps),
                };
                let (authority, tpath) = target.split_at(e.split);
                let substituted = pregsub(tpath, Some(caps));
                let mut filename = authority.as_bytes().to_vec();
                // Apache: when substitution changed nothing, the whole URI is appended.
                if substituted == tpath.as_bytes() {
                    filename.extend_from_slice(tpath.as_bytes());
                    filename.extend_from_slice(use_uri);
                } else {
                    filename.extend_from_slice(&substituted);
                }
                return Some(RouteMatch {
                    route: e.index,
                    backend,
                    filename,
                    path_at: authority.len(),
                    matched_len: 0,
                    nocanon,
                });
            }
            let prefix = r.path.as_deref().unwrap_or("/");
            let len = alias_match(path, prefix.as_bytes());
            if len == 0 {
                continue;
            }
            let backend = e.backend.clone()?;
            let raw_len = match (r.nocanon, raw) {
                (true, Some(raw)) => alias_match(raw, prefix.as_bytes()),
                _ => 0,
            };
            let nocanon = r.nocanon && raw_len == len;
            let remainder = match (nocanon, raw) {
                (true, Some(raw)) => &raw[len..],
                _ => &path[len..],
            };
            // The target (authority and path) with the remainder appended.
            let mut filename = Vec::with_capacity(target.len() + remainder.len());
            filename.extend_from_slice(target.as_bytes());
            filename.extend_from_slice(remainder);
            return Some(RouteMatch {
                route: e.index,
                backend,
                filename,
                path_at: e.split,
                matched_len: len,
                nocanon,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balancer, Member, Pattern, Route, WorkerUrl};

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    fn cfg(routes: Vec<Route>) -> Config {
        let mut b = Balancer::new("pool");
        b.members.push(Member::new(
            WorkerUrl::parse("fcgi://127.0.0.1:27001").unwrap(),
        ));
        Config {
            listen: vec!["8080".into()],
            routes,
            balancers: vec![b],
            ..Config::default()
        }
    }

    #[test]
    fn alias_match_semantics() {
        assert_eq!(alias_match(b"/myapp/x", b"/myapp/"), 7);
        assert_eq!(alias_match(b"/myapp", b"/myapp/"), 0);
        assert_eq!(alias_match(b"/myapp2", b"/myapp"), 0);
        assert_eq!(alias_match(b"/myapp", b"/myapp"), 6);
        assert_eq!(alias_match(b"/myapp/", b"/myapp"), 6);
        assert_eq!(alias_match(b"/myapp//x", b"/myapp/"), 8);
        assert_eq!(alias_match(b"/a/b", b"/a//b"), 4);
        assert_eq!(alias_match(b"/x", b"/"), 1);
        assert_eq!(alias_match(b"/", b"/"), 1);
        assert_eq!(alias_match(b"/", b"/examples"), 0);
        assert_eq!(alias_match(b"/ex/nox", b"/ex/no"), 0);
        assert_eq!(alias_match(b"", b"/"), 0);
        assert_eq!(alias_match(b"/x", b""), 0);
    }

    #[test]
    fn prefix_routes_first_match_and_exclusions() {
        let router = Router::new(&cfg(vec![
            Route::prefix("/ex/no", t("!")),
            Route::prefix("/ex", t("fcgi://127.0.0.1:27001/e")),
            Route::prefix("/myapp/", t("fcgi://127.0.0.1:27001/")),
            Route::prefix("/", t("fcgi://127.0.0.1:27002/root/")),
        ]))
        .unwrap();
        assert_eq!(router.route_path(b"/ex/no/x", None), None);
        assert_eq!(router.route_path(b"/ex/no", None), None);
        let m = router.route_path(b"/ex/nox", None).unwrap();
        assert_eq!(
            (m.route, m.filename.as_slice()),
            (1, &b"fcgi://127.0.0.1:27001/e/nox"[..])
        );
        let m = router
            .route_path(b"/myapp/foo.php/extra/path", None)
            .unwrap();
        assert_eq!(m.route, 2);
        assert_eq!(m.filename, b"fcgi://127.0.0.1:27001/foo.php/extra/path");
        assert_eq!(m.path(), b"/foo.php/extra/path");
        assert_eq!(m.matched_len, 7);
        assert_eq!(m.backend, Backend::Worker);
        let m = router.route_path(b"/myapp", None).unwrap();
        assert_eq!(m.route, 3);
        assert_eq!(m.filename, b"fcgi://127.0.0.1:27002/root/myapp");
    }

    #[test]
    fn regex_routes_substitute_or_append() {
        let router = Router::new(&cfg(vec![
            Route::regex(
                Pattern::new(r"^/pm/(.*\.php)(/.*)?$", false).unwrap(),
                t("fcgi://127.0.0.1:27001/var/www/$1"),
            ),
            Route::regex(
                Pattern::new(r"^/pn/.*\.php(/.*)?$", false).unwrap(),
                t("fcgi://127.0.0.1:27001/var/www/"),
            ),
            Route::regex(
                Pattern::new(r"^/(.*\.php(/.*)?)$", false).unwrap(),
                t("unix:/run/php.sock|fcgi://localhost/var/www/"),
            ),
        ]))
        .unwrap();
        let m = router.route_path(b"/pm/a/b.php/c/d", None).unwrap();
        assert_eq!(m.filename, b"fcgi://127.0.0.1:27001/var/www/a/b.php");
        assert_eq!(m.path(), b"/var/www/a/b.php");
        let m = router.route_path(b"/pm/a b.php", None).unwrap();
        assert_eq!(m.path(), b"/var/www/a b.php");
        let m = router.route_path(b"/pn/a/b.php/c", None).unwrap();
        assert_eq!(m.filename, b"fcgi://127.0.0.1:27001/var/www//pn/a/b.php/c");
        let m = router.route_path(b"/foo.php", None).unwrap();
        assert_eq!(m.route, 2);
        assert_eq!(
            m.filename,
            b"unix:/run/php.sock|fcgi://localhost/var/www//foo.php"
        );
        assert_eq!(m.path(), b"/var/www//foo.php");
        assert_eq!(router.route_path(b"/foo.txt", None), None);
    }

    #[test]
    fn balancer_routes() {
        let router = Router::new(&cfg(vec![Route::prefix(
            "/bal/",
            t("balancer://Pool/sub/"),
        )]))
        .unwrap();
        let m = router.route_path(b"/bal/x.php", None).unwrap();
        assert_eq!(
            m.backend,
            Backend::Balancer {
                index: 0,
                name: "pool".into()
            }
        );
        assert_eq!(m.filename, b"balancer://Pool/sub/x.php");
        assert_eq!(m.path(), b"/sub/x.php");
    }

    #[test]
    fn target_without_path_and_prefix_with_slash() {
        let router = Router::new(&cfg(vec![Route::prefix(
            "/t/",
            t("fcgi://127.0.0.1:27001"),
        )]))
        .unwrap();
        let m = router.route_path(b"/t/x", None).unwrap();
        assert_eq!(m.filename, b"fcgi://127.0.0.1:27001x");
        assert_eq!(m.path(), b"x");
        assert_eq!(router.route_path(b"/t/", None).unwrap().path(), b"");
    }

    #[test]
    fn unknown_balancer_is_an_error() {
        let mut c = cfg(vec![Route::prefix("/", t("balancer://nope/"))]);
        c.balancers.clear();
        assert!(Router::new(&c).is_err());
    }

    #[test]
    fn split_authority_forms() {
        assert_eq!(split_authority("fcgi://h:1/a/b"), ("fcgi://h:1", "/a/b"));
        assert_eq!(split_authority("fcgi://h:1"), ("fcgi://h:1", ""));
        assert_eq!(
            split_authority("unix:/run/x.sock|fcgi://localhost/v/"),
            ("unix:/run/x.sock|fcgi://localhost", "/v/")
        );
        assert_eq!(
            split_authority("unix:/run/x.sock|fcgi:/v"),
            ("unix:/run/x.sock|fcgi:", "/v")
        );
        assert_eq!(split_authority("balancer://p"), ("balancer://p", ""));
    }
}
