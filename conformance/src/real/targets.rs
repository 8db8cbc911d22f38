//! Target adapters: a scenario's neutral topology as each proxy's own configuration, with what
//! each can and cannot express. One module per proxy; this one has what they share.

mod apache;
mod caddy;
mod external;
mod h2o;
mod haproxy;
mod lighttpd;
mod nginx;
mod ours;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::scenario::{Balancer, Dur, LbMethod, Route, Scenario, WorkerSettings};

use super::RealOptions;

pub use external::External;

/// A proxy the suite can run scenarios against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// `fcgi-proxy`, from a generated TOML file.
    Ours,
    /// Apache httpd 2.4 with mod_proxy_fcgi.
    Apache,
    /// nginx with `fastcgi_pass`.
    Nginx,
    /// Caddy 2 with `reverse_proxy` and the fastcgi transport.
    Caddy,
    /// HAProxy with an `fcgi-app`.
    Haproxy,
    /// lighttpd with mod_fastcgi.
    Lighttpd,
    /// h2o with `fastcgi.connect`.
    H2o,
    /// A proxy the user runs, sending everything to one FastCGI backend
    /// ([`RealOptions::external`]).
    External,
}

/// A generated configuration and the command that runs the target on it (in the foreground,
/// from the run's directory).
#[derive(Debug, Clone)]
pub struct Generated {
    pub file_name: &'static str,
    pub text: String,
    pub command: Vec<String>,
    /// Environment variables set for the process (on top of the runner's).
    pub env: Vec<(String, String)>,
}

impl Generated {
    fn new(file_name: &'static str, text: String, command: Vec<String>) -> Generated {
        Generated {
            file_name,
            text,
            command,
            env: Vec::new(),
        }
    }
}

impl Target {
    /// What `--target all` runs (`external` needs a URL, so it is named on its own).
    pub const ALL: [Target; 7] = [
        Target::Ours,
        Target::Apache,
        Target::Nginx,
        Target::Caddy,
        Target::Haproxy,
        Target::Lighttpd,
        Target::H2o,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Ours => "ours",
            Target::Apache => "apache",
            Target::Nginx => "nginx",
            Target::Caddy => "caddy",
            Target::Haproxy => "haproxy",
            Target::Lighttpd => "lighttpd",
            Target::H2o => "h2o",
            Target::External => "external",
        }
    }

    /// Another project's proxy the suite starts itself (not ours, not the user's own).
    pub fn is_peer(self) -> bool {
        self.program().is_some()
    }

    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL
            .into_iter()
            .chain([Target::External])
            .find(|t| t.name() == s)
    }

    /// The program and the Debian package it comes in (for peers).
    pub fn program(self) -> Option<(&'static str, &'static str)> {
        match self {
            Target::Ours | Target::External => None,
            Target::Apache => Some(("apache2", "apache2")),
            Target::Nginx => Some(("nginx", "nginx")),
            Target::Caddy => Some(("caddy", "caddy")),
            Target::Haproxy => Some(("haproxy", "haproxy")),
            Target::Lighttpd => Some(("lighttpd", "lighttpd")),
            Target::H2o => Some(("h2o", "h2o")),
        }
    }

    fn binary(self, opts: &RealOptions) -> Option<PathBuf> {
        match self {
            Target::Ours => Some(opts.proxy_bin.clone()).filter(|p| p.exists()),
            Target::External => None,
            t => t
                .program()
                .and_then(|(bin, _)| crate::peers::find_program(bin)),
        }
    }

    /// Why the whole column is skipped, with an install hint.
    pub fn unavailable(self, opts: &RealOptions) -> Option<String> {
        if self == Target::External {
            return match &opts.external {
                Some(_) => None,
                None => Some(
                    "no external proxy given (--target external --url http://127.0.0.1:PORT \
                     --backend 127.0.0.1:PORT)"
                        .into(),
                ),
            };
        }
        if self.binary(opts).is_some() {
            return None;
        }
        Some(match (self, self.program()) {
            (_, Some((bin, package))) => {
                format!(
                    "{bin} not installed (apt-get install {package}, or the `peers install` \
                     command)"
                )
            }
            _ => format!(
                "{} not found (in a checkout: cargo build -p fcgi-proxy; installed: cargo \
                 install --path proxy, or --proxy-bin FILE)",
                opts.proxy_bin.display()
            ),
        })
    }

    /// Why this target cannot express the scenario's topology, if it cannot.
    pub fn cannot_express(self, s: &Scenario) -> Option<String> {
        // Only fcgi-proxy is started several times (the runner knows its one config file).
        if s.topology.proxies > 1 && self != Target::Ours {
            return Some(format!("runs one instance of {}", self.name()));
        }
        match self {
            Target::Ours => None,
            Target::Apache => apache::cannot_express(s),
            Target::Nginx => nginx::cannot_express(s),
            Target::Caddy => caddy::cannot_express(s),
            Target::Haproxy => haproxy::cannot_express(s),
            Target::Lighttpd => lighttpd::cannot_express(s),
            Target::H2o => h2o::cannot_express(s),
            Target::External => external::cannot_express(s),
        }
    }

    /// The configuration file and command for a run. `External` has none: the runner talks to
    /// the user's proxy.
    pub fn config(
        self,
        s: &Scenario,
        backends: &BTreeMap<String, SocketAddr>,
        listen: SocketAddr,
        dir: &Path,
        opts: &RealOptions,
    ) -> Result<Generated, String> {
        match self {
            Target::Ours => ours::config(s, backends, listen, opts),
            Target::Apache => apache::config(s, backends, listen, dir),
            Target::Nginx => nginx::config(s, backends, listen, dir),
            Target::Caddy => caddy::config(s, backends, listen, dir),
            Target::Haproxy => haproxy::config(s, backends, listen, dir),
            Target::Lighttpd => lighttpd::config(s, backends, listen, dir),
            Target::H2o => h2o::config(s, backends, listen, dir),
            Target::External => Err("the external proxy is configured by its user".into()),
        }
    }
}

// ---- helpers shared by the adapters ----

/// Every worker's settings: each route's own and each balancer member's (merged with its
/// balancer's).
fn workers(s: &Scenario) -> impl Iterator<Item = WorkerSettings> + '_ {
    s.topology.routes.iter().map(Route::worker).chain(
        s.topology
            .balancers
            .iter()
            .flat_map(|b| b.members.iter().map(|m| m.worker().or(&b.worker()))),
    )
}

fn sub_second(d: Option<Dur>) -> bool {
    d.is_some_and(|d| d.0.subsec_nanos() != 0)
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn ms(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// Whether the scenario's expectations look at backend connections (counts, reuse, the
/// KEEP_CONN flag, close reasons), so a peer that cannot keep connections open cannot run it
/// with `reuse = true`. A count of 0 (a member never contacted) does not depend on reuse.
fn observes_connections(s: &Scenario) -> bool {
    let e = &s.expect;
    e.requests
        .iter()
        .any(|r| r.keep_conn.is_some() || r.attempts.is_some())
        || e.backends.iter().any(|b| {
            b.connections
                .as_ref()
                .is_some_and(|c| *c != crate::scenario::Count::Exactly(0))
                || b.requests_per_connection.is_some()
                || b.max_concurrent_connections.is_some()
                || b.keep_conn.is_some()
                || b.close_reasons.is_some()
                || b.get_values.is_some()
        })
        || s.backends.iter().any(|b| b.idle_timeout.is_some())
}

/// The reason a peer that never keeps backend connections open cannot run `s`, if any.
fn no_reuse_reason(s: &Scenario, peer: &str) -> Option<String> {
    (workers(s).any(|w| w.reuse == Some(true)) && observes_connections(s)).then(|| {
        format!(
            "{peer} cannot keep FastCGI connections open for reuse, and this scenario observes \
             backend connections"
        )
    })
}

fn docroot(s: &Scenario) -> String {
    s.topology
        .document_root
        .clone()
        .unwrap_or_else(|| "/var/www/html".into())
}

/// The directory a peer prefixes to SCRIPT_NAME for SCRIPT_FILENAME on route `r`. Peers have no
/// backend path (the path part of Apache's `fcgi://host/path`), so a route's backend path
/// stands in for the document root there.
fn root_for(s: &Scenario, r: &Route) -> String {
    r.backend_path
        .as_deref()
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty())
        .map_or_else(|| docroot(s), str::to_string)
}

fn backend_addr(backends: &BTreeMap<String, SocketAddr>, name: &str) -> Result<SocketAddr, String> {
    backends
        .get(name)
        .copied()
        .ok_or_else(|| format!("unknown backend {name}"))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A route's target resolved: its members (one for a plain backend route), the balancing
/// method and the worker settings that apply to all of them.
struct Upstream<'a> {
    members: Vec<UpMember<'a>>,
    method: LbMethod,
    balancer: Option<&'a Balancer>,
    /// The route's settings, or the balancer's merged with its first member's.
    worker: WorkerSettings,
}

struct UpMember<'a> {
    backend: &'a str,
    loadfactor: u32,
    lbset: u8,
    status: &'a str,
    worker: WorkerSettings,
}

impl UpMember<'_> {
    fn standby(&self) -> bool {
        self.status.contains('H')
    }

    fn disabled(&self) -> bool {
        self.status.contains('D')
    }
}

fn upstream<'a>(s: &'a Scenario, r: &'a Route) -> Result<Upstream<'a>, String> {
    match (&r.backend, &r.balancer) {
        (Some(b), _) => Ok(Upstream {
            members: vec![UpMember {
                backend: b,
                loadfactor: 1,
                lbset: 0,
                status: "",
                worker: r.worker(),
            }],
            method: LbMethod::Byrequests,
            balancer: None,
            worker: r.worker(),
        }),
        (None, Some(name)) => {
            let bal = s
                .balancer(name)
                .ok_or_else(|| format!("unknown balancer {name}"))?;
            let members: Vec<UpMember> = bal
                .members
                .iter()
                .map(|m| UpMember {
                    backend: &m.backend,
                    loadfactor: m.loadfactor,
                    lbset: m.lbset,
                    status: &m.status,
                    worker: m.worker().or(&bal.worker()),
                })
                .collect();
            let worker = members
                .first()
                .map(|m| m.worker.clone())
                .unwrap_or_else(|| bal.worker());
            Ok(Upstream {
                members,
                method: bal.method,
                balancer: Some(bal),
                worker,
            })
        }
        (None, None) => Err("route without backend".into()),
    }
}

/// Checks shared by the peers on balancers: which member flags and layouts they can express.
struct BalancerCaps {
    peer: &'static str,
    /// Unequal `loadfactor`s.
    weights: bool,
    /// `H` members and `lbset`s as an ordered list where each level has one member (first
    /// available wins).
    ordered_levels: bool,
}

fn balancer_limits(s: &Scenario, caps: &BalancerCaps) -> Option<String> {
    let peer = caps.peer;
    for b in &s.topology.balancers {
        if let Some(m) = b
            .members
            .iter()
            .find(|m| m.status.chars().any(|c| !"+DH".contains(c)))
        {
            return Some(format!(
                "{peer} has no equivalent of member status {:?}",
                m.status
            ));
        }
        let active: Vec<_> = b
            .members
            .iter()
            .filter(|m| !m.status.contains('D'))
            .collect();
        if !caps.weights
            && active
                .windows(2)
                .any(|w| w[0].loadfactor != w[1].loadfactor)
        {
            return Some(format!("{peer} has no weighted balancing (loadfactor)"));
        }
        let levels = active
            .iter()
            .any(|m| m.lbset != 0 || m.status.contains('H'));
        if levels {
            if !caps.ordered_levels {
                return Some(format!("{peer} has no lbsets or hot standby members"));
            }
            let mut keys: Vec<(u8, bool)> = active
                .iter()
                .map(|m| (m.lbset, m.status.contains('H')))
                .collect();
            keys.sort();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Some(format!(
                    "{peer} orders members only one by one (first available): lbsets or standby \
                     groups of several members cannot be expressed"
                ));
            }
        }
    }
    None
}

/// Members in the order of use for [`BalancerCaps::ordered_levels`]: by lbset, hot standbys
/// after the others of their set.
fn ordered<'a, 'b>(members: &'b [UpMember<'a>]) -> Vec<&'b UpMember<'a>> {
    let mut v: Vec<&UpMember> = members.iter().filter(|m| !m.disabled()).collect();
    v.sort_by_key(|m| (m.lbset, m.standby()));
    v
}

/// Balancer settings only Apache's mod_proxy_balancer has: sticky sessions routed by member
/// `route` (and `redirect`, `nofailover`), `forcerecovery=off`, the balancer's wait for a usable
/// member, hot spares (`R`) and draining members (`N`).
fn balancer_apache_only(s: &Scenario, peer: &str) -> Option<String> {
    for b in &s.topology.balancers {
        if b.sticky_session.is_some()
            || b.nofailover.is_some()
            || b.members
                .iter()
                .any(|m| m.route.is_some() || m.redirect.is_some())
        {
            return Some(format!(
                "{peer} has no sticky sessions routed by a member route in a cookie or URL \
                 parameter (stickysession, route, redirect, nofailover)"
            ));
        }
        if b.force_recovery == Some(false) {
            return Some(format!(
                "{peer} has no switch for releasing all failed members at once (forcerecovery)"
            ));
        }
        if b.wait.is_some() {
            return Some(format!(
                "{peer} cannot hold a request until a failed member may be tried again \
                 (the balancer's timeout)"
            ));
        }
        if let Some(m) = b.members.iter().find(|m| m.status.contains(['R', 'N'])) {
            return Some(format!(
                "{peer} has no hot spares or draining members (status {:?})",
                m.status
            ));
        }
    }
    None
}

/// Routes and balancer settings a peer has no directive for.
fn route_limits(s: &Scenario, peer: &str) -> Option<String> {
    if let Some(why) = balancer_apache_only(s, peer) {
        return Some(why);
    }
    let r = &s.topology.routes;
    if r.iter().any(|r| r.pathinfo.is_some()) {
        return Some(format!("{peer} has no proxy-fcgi-pathinfo modes"));
    }
    if r.iter().any(|r| !r.fcgi_unset.is_empty()) {
        return Some(format!(
            "{peer} cannot remove a CGI variable it computed (ProxyFCGISetEnvIf !NAME)"
        ));
    }
    if r.iter()
        .any(|r| r.backend_path.as_deref().is_some_and(|p| p.contains('$')))
    {
        return Some(format!(
            "{peer} has no ProxyPassMatch substitution of regex groups into the backend path"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(id: &str) -> Scenario {
        let path = crate::sim::suite::scenarios_dir().join(format!("{id}.toml"));
        Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_parse_back_and_all_leaves_out_external() {
        for t in Target::ALL.into_iter().chain([Target::External]) {
            assert_eq!(Target::parse(t.name()), Some(t));
        }
        assert!(!Target::ALL.contains(&Target::External));
        assert_eq!(Target::parse("iis"), None);
    }

    #[test]
    fn external_takes_a_root_url_and_a_backend_address() {
        let e = External::parse("http://127.0.0.1:8080", "127.0.0.1:9001").unwrap();
        assert_eq!(e.proxy, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(e.backend, "127.0.0.1:9001".parse().unwrap());
        assert!(External::parse("http://127.0.0.1:8080/", "127.0.0.1:9001").is_ok());
        assert!(External::parse("https://127.0.0.1:8443", "127.0.0.1:9001").is_err());
        assert!(External::parse("http://127.0.0.1:8080/app/", "127.0.0.1:9001").is_err());
        assert!(External::parse("http://127.0.0.1:8080", "127.0.0.1").is_err());
    }

    #[test]
    fn external_sends_h2c_checks_only_where_h2c_was_given() {
        let e = External::parse("http://127.0.0.1:8080", "127.0.0.1:9001").unwrap();
        let h1 = scenario("cgi/meta-variables");
        let h2 = scenario("security/h2-httpoxy");
        assert_eq!(e.front_for(&h1), Ok(e.proxy));
        assert!(e.front_for(&h2).unwrap_err().contains("--h2c-url"));
        let e = e.with_h2c("http://127.0.0.1:8081/").unwrap();
        assert_eq!(e.front_for(&h1), Ok("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(e.front_for(&h2), Ok("127.0.0.1:8081".parse().unwrap()));
        assert!(
            External::parse("http://127.0.0.1:8080", "127.0.0.1:9001")
                .unwrap()
                .with_h2c("h2c://127.0.0.1:8081")
                .unwrap_err()
                .starts_with("--h2c-url")
        );
    }

    #[test]
    fn external_runs_only_what_one_backend_with_its_own_settings_can_show() {
        assert_eq!(
            Target::External.cannot_express(&scenario("cgi/meta-variables")),
            None
        );
        for (id, why) in [
            ("balance/byrequests-equal", "backends"),
            ("pathinfo/first-dot", "proxy-fcgi-pathinfo"),
            ("faults/stalled-backend-504", "timeouts"),
            ("reuse/sequential-one-connection", "reuse"),
            ("cgi/authorization-passed-when-configured", "Authorization"),
        ] {
            let got = Target::External.cannot_express(&scenario(id));
            assert!(
                got.as_deref().is_some_and(|g| g.contains(why)),
                "{id}: {got:?}"
            );
        }
    }

    #[test]
    fn peers_say_what_they_lack() {
        let cases = [
            (
                Target::H2o,
                "balance/byrequests-equal",
                Some("cannot balance"),
            ),
            (Target::Caddy, "balance/byrequests-70-30", Some("weighted")),
            (Target::Lighttpd, "balance/lbset-order", Some("lbsets")),
            (Target::Caddy, "balance/lbset-order", None),
            (Target::Haproxy, "balance/lbset-order", None),
            (Target::Haproxy, "reuse/ttl-expiry", Some("idle")),
            (Target::H2o, "reuse/ttl-expiry", None),
            (
                Target::Caddy,
                "reuse/sequential-one-connection",
                Some("reuse"),
            ),
            (
                Target::Nginx,
                "balance/sticky-cookie-route",
                Some("sticky sessions"),
            ),
            (
                Target::Haproxy,
                "balance/hot-spare-replaces-one-for-one",
                Some("hot spares"),
            ),
            (
                Target::Caddy,
                "balance/timeout-waits-for-a-member",
                Some("forcerecovery"),
            ),
            (Target::Apache, "balance/sticky-nofailover", None),
            // reuse = true, but nothing observed depends on it.
            (Target::Caddy, "cgi/meta-variables", None),
            (Target::Lighttpd, "cgi/meta-variables", None),
        ];
        for (t, id, want) in cases {
            let got = t.cannot_express(&scenario(id));
            match want {
                None => assert_eq!(got, None, "{} {id}", t.name()),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(w)),
                    "{} {id}: {got:?}",
                    t.name()
                ),
            }
        }
    }
}
