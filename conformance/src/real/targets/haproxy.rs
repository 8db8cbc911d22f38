//! HAProxy 2.x (Debian: 2.6.12): a frontend choosing a backend per route (`path_beg`,
//! `path_reg`), an `fcgi-app` per route without `path-info` (SCRIPT_NAME is the whole path, as
//! ProxyPass without proxy-fcgi-pathinfo), servers with `proto fcgi`. Reuse is `option
//! keep-conn` + `http-reuse always`; a cap is the server's `maxconn` (excess requests queue for
//! `timeout queue`, like Apache's acquire).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::scenario::{LbMethod, Scenario};

use super::{
    BalancerCaps, Generated, backend_addr, balancer_limits, ms, ordered, root_for, route_limits,
    upstream, workers,
};

pub(super) fn cannot_express(s: &Scenario) -> Option<String> {
    if let Some(why) = route_limits(s, "HAProxy") {
        return Some(why);
    }
    if let Some(why) = balancer_limits(
        s,
        &BalancerCaps {
            peer: "HAProxy",
            weights: true,
            ordered_levels: true,
        },
    ) {
        return Some(why);
    }
    if workers(s).any(|w| w.ttl.is_some()) {
        return Some(
            "HAProxy has no age limit for idle backend connections (pool-purge-delay closes a \
             share of them periodically)"
                .into(),
        );
    }
    if s.topology
        .routes
        .iter()
        .filter_map(|r| r.regex.as_deref())
        .any(|re| re.contains('\''))
    {
        return Some("a regex with a single quote cannot be written in haproxy.cfg here".into());
    }
    None
}

/// A value for `set-param` (a log-format string, quoted).
fn log_format(v: &str) -> String {
    format!(
        "\"{}\"",
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('%', "%%")
    )
}

pub(super) fn config(
    s: &Scenario,
    backends: &BTreeMap<String, SocketAddr>,
    listen: SocketAddr,
    _dir: &Path,
) -> Result<Generated, String> {
    let mut c = String::from(
        "global\n    log stderr format raw local0 info\n    maxconn 1024\n    nbthread 1\n\
         defaults\n    mode http\n    log global\n    option httplog\n    timeout connect 5s\n\
         \x20   timeout client 30s\n    timeout server 30s\n    timeout queue 60s\n",
    );
    if let Some(t) = s.topology.header_timeout {
        c.push_str(&format!("    timeout http-request {}ms\n", t.0.as_millis()));
    }
    // `proto h2`: the bind speaks HTTP/2 with prior knowledge (and HTTP/2 only).
    let proto = if s.speaks_h2c() { " proto h2" } else { "" };
    let mut fe = format!("frontend fe\n    bind {listen}{proto}\n");
    let mut bes = String::new();
    for (i, r) in s.topology.routes.iter().enumerate() {
        let up = upstream(s, r)?;
        let w = &up.worker;
        c.push_str(&format!(
            "fcgi-app app{i}\n    docroot {}\n",
            root_for(s, r)
        ));
        if w.reuse == Some(false) {
            c.push_str("    no option keep-conn\n");
        }
        if r.pass_authorization == Some(true) {
            c.push_str("    pass-header Authorization\n");
        }
        for (n, v) in r.env.iter().chain(&r.fcgi_set) {
            c.push_str(&format!("    set-param {n} {}\n", log_format(v)));
        }
        let acl = match (&r.path, &r.regex) {
            (Some(p), _) => format!("path_beg {p}"),
            (None, Some(re)) => format!("path_reg '{re}'"),
            (None, None) => return Err("route without path".into()),
        };
        fe.push_str(&format!("    use_backend be{i} if {{ {acl} }}\n"));
        let mut b = format!("backend be{i}\n    use-fcgi-app app{i}\n");
        b.push_str(match w.reuse {
            Some(true) => "    http-reuse always\n",
            Some(false) => "    http-reuse never\n",
            None => "",
        });
        if up.balancer.is_some() {
            b.push_str(match up.method {
                LbMethod::Byrequests => "    balance roundrobin\n",
                LbMethod::Bybusyness => "    balance leastconn\n",
            });
            // When a member fails before answering (connection refused, or accepted and closed
            // without a response, as a dying backend does), retry on another server: Apache
            // tries each member.
            let members = up.members.iter().filter(|m| !m.disabled()).count();
            let attempts = up
                .balancer
                .and_then(|b| b.max_attempts)
                .unwrap_or(members.saturating_sub(1) as u32);
            b.push_str(&format!(
                "    retries {attempts}\n    option redispatch 1\n    retry-on conn-failure empty-response\n"
            ));
        }
        if let Some(t) = w.timeout {
            b.push_str(&format!("    timeout server {}ms\n", ms(t.0)));
        }
        if let Some(t) = w.connect_timeout {
            b.push_str(&format!("    timeout connect {}ms\n", ms(t.0)));
        }
        if let Some(t) = w.acquire {
            b.push_str(&format!("    timeout queue {}ms\n", ms(t.0)));
        }
        let levels = up.members.iter().any(|m| m.lbset != 0 || m.standby());
        let list: Vec<_> = if levels {
            ordered(&up.members)
        } else {
            up.members.iter().collect()
        };
        for (j, m) in list.iter().enumerate() {
            let mut line = format!(
                "    server s{j} {} proto fcgi",
                backend_addr(backends, m.backend)?
            );
            if up.balancer.is_some() && !levels {
                line.push_str(&format!(" weight {}", m.loadfactor));
            }
            if levels && j > 0 {
                // Backups are used in order, the first one alone (no `allbackups`).
                line.push_str(" backup");
            }
            if let Some(max) = m.worker.max {
                line.push_str(&format!(" maxconn {max}"));
            }
            if m.disabled() {
                line.push_str(" disabled");
            }
            if let Some(retry) = m.worker.retry
                && up.members.len() > 1
            {
                // A failed connection takes the server out; a health check every `retry`
                // brings it back.
                line.push_str(&format!(
                    " check inter {}ms fall 1 rise 1 observe layer4 error-limit 1 on-error mark-down",
                    ms(retry.0)
                ));
            }
            b.push_str(&line);
            b.push('\n');
        }
        bes.push_str(&b);
    }
    // A path no route maps is not found (HAProxy would answer 503, no backend).
    fe.push_str("    default_backend notfound\n");
    bes.push_str("backend notfound\n    http-request return status 404\n");
    c.push_str(&fe);
    c.push_str(&bes);
    Ok(Generated::new(
        "haproxy.cfg",
        c,
        vec![
            "haproxy".into(),
            "-db".into(),
            "-f".into(),
            "haproxy.cfg".into(),
        ],
    ))
}
