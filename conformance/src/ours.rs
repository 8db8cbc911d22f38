//! The neutral topology of a scenario translated into an fcgi-proxy [`Config`].
//!
//! Each neutral notion maps onto the Apache-shaped model: a route is a `ProxyPass` (`path`) or a
//! `ProxyPassMatch` (`match`) to `fcgi://<backend>:<port><backend_path>` or
//! `balancer://<name><backend_path>`; `reuse`, `max`, `acquire`, `timeout`, `connect_timeout`,
//! `ttl` and `retry` are the worker parameters of the same names; a balancer's
//! `sticky_session`, `nofailover`, `force_recovery` and `wait` are `stickysession`,
//! `nofailover`, `forcerecovery` and its `timeout`; a member's `route` and `redirect` are
//! Apache's; `pathinfo` is `proxy-fcgi-pathinfo`; `backend_type` is `ProxyFCGIBackendType`;
//! `env` is `SetEnv`; `fcgi_set` / `fcgi_unset` are `ProxyFCGISetEnvIf "true" NAME "value"` /
//! `!NAME`.

use fcgi_proxy::config::{
    self, BackendSocket, BackendType, Config, FcgiSetEnvIf, LoadFactor, MemberStatus, Pattern,
    SetEnv, Target, WorkerParams, WorkerUrl,
};

use crate::scenario::{self, Scenario, WorkerSettings};

/// The address the proxy listens on in the simulator.
pub const LISTEN: &str = "0.0.0.0:80";

fn worker_params(w: &WorkerSettings) -> WorkerParams {
    let d = |x: Option<scenario::Dur>| x.map(|d| d.0);
    WorkerParams {
        reuse: w.reuse.unwrap_or(true),
        max: w.max,
        ttl: d(w.ttl),
        timeout: d(w.timeout),
        connection_timeout: d(w.connect_timeout),
        acquire: d(w.acquire),
        retry: d(w.retry),
        ..WorkerParams::default()
    }
}

/// The fcgi-proxy configuration for a scenario's topology.
pub fn config(s: &Scenario) -> Result<Config, String> {
    let mut cfg = Config {
        listen: vec![LISTEN.to_string()],
        ..Config::default()
    };
    if let Some(root) = &s.topology.document_root {
        cfg.document_root = root.clone();
    }
    if let Some(t) = s.topology.header_timeout {
        cfg.timeouts.header_read = t.0;
    }
    for (i, r) in s.topology.routes.iter().enumerate() {
        let path = r.backend_path.as_deref().unwrap_or("/");
        let target = match (&r.backend, &r.balancer) {
            (Some(b), _) => {
                let b = s
                    .backend(b)
                    .ok_or_else(|| format!("route {i}: unknown backend {b}"))?;
                format!("fcgi://{}{path}", b.authority())
            }
            (None, Some(name)) => format!("balancer://{name}{path}"),
            (None, None) => return Err(format!("route {i}: no backend")),
        };
        let target = Target::parse(&target).map_err(|e| format!("route {i}: {e}"))?;
        let mut route = match (&r.path, &r.regex) {
            (Some(p), _) => config::Route::prefix(p, target),
            (None, Some(re)) => config::Route::regex(
                Pattern::new(re, false).map_err(|e| format!("route {i}: {e}"))?,
                target,
            ),
            (None, None) => return Err(format!("route {i}: no path")),
        };
        route.pathinfo = r.pathinfo.clone();
        route.backend_type = r.backend_type.map(|t| match t {
            scenario::BackendType::Fpm => BackendType::Fpm,
            scenario::BackendType::Generic => BackendType::Generic,
        });
        route.pass_authorization = r.pass_authorization;
        route.setenv = r
            .env
            .iter()
            .map(|(name, value)| SetEnv {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        for (name, value) in &r.fcgi_set {
            route.fcgi_setenvif.push(
                FcgiSetEnvIf::new("true", name, Some(value))
                    .map_err(|e| format!("route {i}: {e}"))?,
            );
        }
        for name in &r.fcgi_unset {
            route.fcgi_setenvif.push(
                FcgiSetEnvIf::new("true", &format!("!{name}"), None)
                    .map_err(|e| format!("route {i}: {e}"))?,
            );
        }
        // `flush`: what fcgi-proxy always does (flushpackets=on).
        route.worker = worker_params(&r.worker());
        cfg.routes.push(route);
    }
    for b in &s.topology.balancers {
        let mut bal = config::Balancer::new(&b.name);
        bal.lbmethod = match b.method {
            scenario::LbMethod::Byrequests => config::LbMethod::Byrequests,
            scenario::LbMethod::Bybusyness => config::LbMethod::Bybusyness,
        };
        bal.max_attempts = b.max_attempts;
        bal.sticky_session = b.sticky_session.clone();
        bal.nofailover = b.nofailover.unwrap_or(false);
        bal.force_recovery = b.force_recovery.unwrap_or(true);
        bal.timeout = b.wait.map(|d| d.0);
        for m in &b.members {
            let backend = s
                .backend(&m.backend)
                .ok_or_else(|| format!("balancer {}: unknown backend {}", b.name, m.backend))?;
            let url = WorkerUrl::parse(&format!("fcgi://{}", backend.authority()))
                .map_err(|e| format!("balancer {}: {e}", b.name))?;
            let mut member = config::Member::new(url);
            member.loadfactor = LoadFactor::from_hundredths(m.loadfactor * 100)
                .ok_or_else(|| format!("balancer {}: bad loadfactor", b.name))?;
            member.lbset = m.lbset;
            member.status = MemberStatus::parse(&m.status)?;
            member.route = m.route.clone();
            member.redirect = m.redirect.clone();
            member.worker = worker_params(&m.worker().or(&b.worker()));
            bal.members.push(member);
        }
        cfg.balancers.push(bal);
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The `max` of every fcgi-proxy worker (connection pool) that targets `authority`
/// (`host:port`). Routes to the same URL share one worker; each balancer member is a worker of
/// its own.
pub fn worker_caps(cfg: &Config, authority: &str) -> Vec<usize> {
    let default = cfg.limits.default_max_connections;
    let targets = |url: &WorkerUrl| match &url.socket {
        BackendSocket::Tcp { host, port } => format!("{host}:{port}") == authority,
        BackendSocket::Unix { .. } => false,
    };
    let mut seen: Vec<String> = Vec::new();
    let mut caps = Vec::new();
    for r in &cfg.routes {
        if let Target::Worker(url) = &r.target
            && targets(url)
        {
            // The first route's parameters win for a shared worker.
            let name = url.name();
            if !seen.contains(&name) {
                seen.push(name);
                caps.push(r.worker.max.unwrap_or(default) as usize);
            }
        }
    }
    for b in &cfg.balancers {
        for m in b.members.iter().filter(|m| targets(&m.url)) {
            caps.push(m.worker.max.unwrap_or(default) as usize);
        }
    }
    caps
}

/// The most connections fcgi-proxy may have open to `authority` at once: the sum of its
/// workers' caps, each lowered to the backend's FCGI_MAX_CONNS when the backend announces one
/// (fcgi-proxy learns it per worker).
pub fn connection_cap(cfg: &Config, authority: &str, announced: Option<usize>) -> usize {
    worker_caps(cfg, authority)
        .into_iter()
        .map(|c| announced.map_or(c, |n| c.min(n.max(1))))
        .sum()
}
