//! A proxy the user already runs: configured to send every request path to one FastCGI
//! backend at a given address. The runner starts the scenario's single mock backend there and
//! sends the requests to the proxy's URL; it cannot change the proxy's configuration, so only
//! scenarios whose topology any such configuration satisfies can run.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::scenario::Scenario;

use super::{observes_connections, workers};

/// Where the user's proxy listens and where it sends FastCGI requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// The proxy's address, from `--url http://HOST:PORT`.
    pub proxy: SocketAddr,
    /// The FastCGI backend address the proxy is configured with (`--backend HOST:PORT`); the
    /// runner's mock listens there.
    pub backend: SocketAddr,
    /// Where the proxy accepts HTTP/2 with prior knowledge (h2c), from `--h2c-url`; may be
    /// `proxy`. Without it the checks sent over h2c are SKIP: a proxy that was not set up for
    /// h2c does not fail them.
    pub h2c: Option<SocketAddr>,
}

impl External {
    /// From `--url` and `--backend`.
    pub fn parse(url: &str, backend: &str) -> Result<External, String> {
        let proxy = parse_url("--url", url)?;
        let backend = resolve(backend).map_err(|e| format!("--backend {backend:?}: {e}"))?;
        if backend.port() == 0 {
            return Err("--backend needs a port".into());
        }
        Ok(External {
            proxy,
            backend,
            h2c: None,
        })
    }

    /// With `--h2c-url`: the h2c checks run too, sent there.
    pub fn with_h2c(self, url: &str) -> Result<External, String> {
        Ok(External {
            h2c: Some(parse_url("--h2c-url", url)?),
            ..self
        })
    }

    /// Where the clients of `s` connect: the h2c address for a scenario sent over h2c (every
    /// client of such a scenario is), else the HTTP/1.1 one.
    pub fn front_for(&self, s: &Scenario) -> Result<SocketAddr, String> {
        if !s.speaks_h2c() {
            return Ok(self.proxy);
        }
        self.h2c.ok_or_else(|| NO_H2C.to_string())
    }
}

/// Why an h2c check is SKIP without `--h2c-url`.
pub const NO_H2C: &str = "sent over HTTP/2 with prior knowledge (h2c); give --h2c-url if the \
    external proxy accepts h2c (nginx: a `listen PORT http2;` server)";

/// `http://HOST:PORT` (a trailing `/` allowed), as given for `flag`.
fn parse_url(flag: &str, url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{flag} {url:?}: only http://HOST:PORT is supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if rest.len() > authority.len() && rest[authority.len()..] != *"/" {
        return Err(format!(
            "{flag} {url:?}: give the proxy's root; the scenarios send their own paths"
        ));
    }
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    resolve(&with_port).map_err(|e| format!("{flag} {url:?}: {e}"))
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_string())
}

pub(super) fn cannot_express(s: &Scenario) -> Option<String> {
    const WHY: &str = "the external proxy sends everything to one backend with its own settings";
    if s.backends.len() != 1 {
        return Some(format!("needs {} backends; {WHY}", s.backends.len()));
    }
    let t = &s.topology;
    if !t.balancers.is_empty() {
        return Some(format!("needs a balancer; {WHY}"));
    }
    if t.routes.len() != 1 {
        return Some(format!("needs {} routes; {WHY}", t.routes.len()));
    }
    let r = &t.routes[0];
    if r.regex.is_some() {
        return Some(format!("needs a regex route; {WHY}"));
    }
    let specific = [
        (r.pathinfo.is_some(), "a proxy-fcgi-pathinfo mode"),
        (r.backend_path.is_some(), "a backend path"),
        (r.backend_type.is_some(), "a backend type"),
        (r.pass_authorization == Some(true), "Authorization passed"),
        (!r.env.is_empty(), "extra variables"),
        (!r.fcgi_set.is_empty(), "variables set"),
        (!r.fcgi_unset.is_empty(), "variables removed"),
        (t.document_root.is_some(), "a document root"),
        (t.header_timeout.is_some(), "a request head deadline"),
    ];
    if let Some((_, what)) = specific.iter().find(|(yes, _)| *yes) {
        return Some(format!("needs {what}; {WHY}"));
    }
    let w = r.worker();
    if w.max.is_some() || w.acquire.is_some() {
        return Some(format!("needs a connection cap; {WHY}"));
    }
    if w.timeout.is_some() || w.connect_timeout.is_some() || w.ttl.is_some() {
        return Some(format!("needs specific timeouts; {WHY}"));
    }
    if workers(s).any(|w| w.reuse.is_some()) && observes_connections(s) {
        return Some(format!(
            "observes backend connections under a specific reuse setting; {WHY}"
        ));
    }
    None
}
