//! h2o 2.2 (Debian: 2.2.5): a path mount per prefix route with `fastcgi.connect` to one
//! backend; reuse is `fastcgi.timeout.keepalive` (the idle time a kept connection may wait,
//! which is also how a ttl is expressed). h2o 2.2.5 takes one address per `fastcgi.connect` and
//! has no regex paths, so it cannot balance or route by regex.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::scenario::Scenario;

use super::{Generated, backend_addr, ms, root_for, route_limits, upstream, workers};

/// Idle time of a kept backend connection when the scenario gives no ttl.
const KEEPALIVE_MS: u128 = 60_000;

pub(super) fn cannot_express(s: &Scenario) -> Option<String> {
    if let Some(why) = route_limits(s, "h2o") {
        return Some(why);
    }
    if !s.topology.balancers.is_empty() {
        return Some("h2o 2.2.5 cannot balance: fastcgi.connect takes exactly one address".into());
    }
    let r = &s.topology.routes;
    if r.iter().any(|r| r.regex.is_some()) {
        return Some("h2o 2.2 maps paths by prefix only (no regex routes)".into());
    }
    if workers(s).any(|w| w.max.is_some() || w.acquire.is_some()) {
        return Some("h2o has no cap on connections to a FastCGI backend (max/acquire)".into());
    }
    if workers(s).any(|w| w.connect_timeout.is_some()) {
        return Some("h2o 2.2 has one I/O timeout for FastCGI, no separate connect timeout".into());
    }
    if workers(s).any(|w| w.ttl.is_some() && w.reuse != Some(true)) {
        return Some("a ttl without reuse".into());
    }
    if r.iter().any(|r| !r.fcgi_set.is_empty()) {
        return Some(
            "h2o's setenv adds variables but cannot override those the FastCGI handler computes"
                .into(),
        );
    }
    if r.iter()
        .any(|r| r.path.as_deref().is_some_and(|p| !p.starts_with('/')))
    {
        return Some("an h2o path starts with /".into());
    }
    None
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

pub(super) fn config(
    s: &Scenario,
    backends: &BTreeMap<String, SocketAddr>,
    listen: SocketAddr,
    dir: &Path,
) -> Result<Generated, String> {
    let mut paths = String::new();
    for r in &s.topology.routes {
        let up = upstream(s, r)?;
        let Some(m) = up.members.first() else {
            return Err("route without backend".into());
        };
        let a = backend_addr(backends, m.backend)?;
        let p = r.path.as_deref().ok_or("route without path")?;
        let w = &up.worker;
        paths.push_str(&format!(
            "      {}:\n        fastcgi.connect:\n          host: {}\n          port: {}\n          type: tcp\n",
            yaml_str(p),
            a.ip(),
            a.port()
        ));
        if w.reuse == Some(true) {
            let keep = w.ttl.map_or(KEEPALIVE_MS, |t| ms(t.0));
            paths.push_str(&format!("        fastcgi.timeout.keepalive: {keep}\n"));
        }
        if let Some(t) = w.timeout {
            paths.push_str(&format!("        fastcgi.timeout.io: {}\n", ms(t.0)));
        }
        paths.push_str(&format!(
            "        fastcgi.document_root: {}\n",
            yaml_str(&root_for(s, r))
        ));
        if !r.env.is_empty() {
            paths.push_str("        setenv:\n");
            for (n, v) in &r.env {
                paths.push_str(&format!("          {}: {}\n", yaml_str(n), yaml_str(v)));
            }
        }
    }
    let header_timeout = s
        .topology
        .header_timeout
        .map(|t| format!("http1-request-timeout: {}\n", t.0.as_secs().max(1)))
        .unwrap_or_default();
    let text = format!(
        "listen:\n  host: {}\n  port: {}\nnum-threads: 1\nerror-log: /dev/stderr\n{header_timeout}\
         hosts:\n  \"example.com\":\n    paths:\n{paths}",
        listen.ip(),
        listen.port()
    );
    Ok(Generated::new(
        "h2o.conf",
        text,
        vec![
            "h2o".into(),
            "-c".into(),
            dir.join("h2o.conf").display().to_string(),
        ],
    ))
}
