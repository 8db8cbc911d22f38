//! Caddy 2 (Debian: 2.6.2): `reverse_proxy` with the fastcgi transport, one per route inside a
//! `route` block (first match wins, as with ProxyPass). The transport splits at `.php` (`split
//! .php`, as `php_fastcgi` and every Caddy FastCGI setup does: without a split Caddy 2.6 sends
//! the whole path as PATH_INFO and an empty SCRIPT_NAME), so a path without more after the
//! script reads as with ProxyPass; Caddy always sends PATH_INFO, empty when nothing follows.
//! The transport dials a new connection for every request (no keep-alive in 2.6).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::scenario::{LbMethod, Scenario};

use super::{
    BalancerCaps, Generated, backend_addr, balancer_limits, ms, no_reuse_reason, ordered, quote,
    root_for, route_limits, upstream, workers,
};

pub(super) fn cannot_express(s: &Scenario) -> Option<String> {
    if let Some(why) = route_limits(s, "Caddy") {
        return Some(why);
    }
    if let Some(why) = no_reuse_reason(s, "Caddy 2.6 (fastcgi transport)") {
        return Some(why);
    }
    if let Some(why) = balancer_limits(
        s,
        &BalancerCaps {
            peer: "Caddy 2.6",
            weights: false,
            ordered_levels: true,
        },
    ) {
        return Some(why);
    }
    if workers(s).any(|w| w.max.is_some() || w.acquire.is_some()) {
        return Some(
            "Caddy 2.6 has no cap on connections to an upstream that makes requests wait \
             (max/acquire)"
                .into(),
        );
    }
    let r = &s.topology.routes;
    if r.iter()
        .any(|r| r.fcgi_set.keys().any(|k| k.starts_with("HTTP_")))
    {
        return Some(
            "Caddy's `env` is applied before the request headers, so it cannot override an HTTP_* \
             variable"
                .into(),
        );
    }
    None
}

pub(super) fn config(
    s: &Scenario,
    backends: &BTreeMap<String, SocketAddr>,
    listen: SocketAddr,
    dir: &Path,
) -> Result<Generated, String> {
    let mut matchers = String::new();
    let mut routes = String::new();
    for (i, r) in s.topology.routes.iter().enumerate() {
        let up = upstream(s, r)?;
        let root = root_for(s, r);
        let matcher = match (&r.path, &r.regex) {
            (Some(p), _) => {
                // Caddy's path matcher: `/app/*` is the prefix `/app/`.
                if p.ends_with('/') {
                    format!("{p}*")
                } else {
                    matchers.push_str(&format!("\t@r{i} path {p} {p}/*\n"));
                    format!("@r{i}")
                }
            }
            (None, Some(re)) => {
                // A backquoted Caddyfile token keeps backslashes as written.
                if re.contains('`') {
                    return Err("a regex with a backquote".into());
                }
                matchers.push_str(&format!("\t@r{i} path_regexp `{re}`\n"));
                format!("@r{i}")
            }
            (None, None) => return Err("route without path".into()),
        };
        let levels = up.members.iter().any(|m| m.lbset != 0 || m.standby());
        let mut addrs = Vec::new();
        for m in ordered(&up.members) {
            addrs.push(backend_addr(backends, m.backend)?.to_string());
        }
        let w = &up.worker;
        let mut p = format!("\t\treverse_proxy {matcher} {} {{\n", addrs.join(" "));
        if up.balancer.is_some() {
            let policy = if levels {
                "first"
            } else {
                match up.method {
                    LbMethod::Byrequests => "round_robin",
                    LbMethod::Bybusyness => "least_conn",
                }
            };
            p.push_str(&format!("\t\t\tlb_policy {policy}\n"));
            if addrs.len() > 1 {
                // Fail over to the next upstream when one cannot be reached (Apache tries
                // every member once), and keep a failed one out for `retry` (Apache's
                // default 60 s).
                let retry = w.retry.map_or(60_000, |r| r.0.as_millis());
                p.push_str(&format!(
                    "\t\t\tlb_try_duration {}ms\n\t\t\tfail_duration {}ms\n\t\t\tmax_fails 1\n",
                    w.connect_timeout.map_or(1000, |d| ms(d.0) * 2),
                    retry.max(1)
                ));
            }
        }
        if r.flush {
            // Write each piece of the response as it comes.
            p.push_str("\t\t\tflush_interval -1\n");
        }
        p.push_str(&format!(
            "\t\t\ttransport fastcgi {{\n\t\t\t\troot {}\n\t\t\t\tsplit .php\n",
            quote(&root)
        ));
        if let Some(t) = w.connect_timeout {
            p.push_str(&format!("\t\t\t\tdial_timeout {}ms\n", ms(t.0)));
        }
        if let Some(t) = w.timeout {
            p.push_str(&format!(
                "\t\t\t\tread_timeout {}ms\n\t\t\t\twrite_timeout {}ms\n",
                ms(t.0),
                ms(t.0)
            ));
        }
        for (n, v) in r.env.iter().chain(&r.fcgi_set) {
            p.push_str(&format!("\t\t\t\tenv {n} {}\n", quote(v)));
        }
        p.push_str("\t\t\t}\n\t\t}\n");
        routes.push_str(&p);
    }
    // A path no route maps is not found (Caddy would answer an empty 200).
    routes.push_str("\t\trespond 404\n");
    let mut server_opts = String::new();
    if let Some(t) = s.topology.header_timeout {
        server_opts.push_str(&format!(
            "\t\ttimeouts {{\n\t\t\tread_header {}ms\n\t\t}}\n",
            t.0.as_millis()
        ));
    }
    if s.speaks_h2c() {
        // HTTP/2 with prior knowledge on the plain listener, besides HTTP/1.1.
        server_opts.push_str("\t\tprotocols h1 h2c\n");
    }
    let servers = if server_opts.is_empty() {
        String::new()
    } else {
        format!("\tservers {{\n{server_opts}\t}}\n")
    };
    let text = format!(
        "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {}\n{servers}}}\n\
         http://:{port} {{\n\tbind {ip}\n{matchers}\troute {{\n{routes}\t}}\n}}\n",
        quote(&dir.join("data").display().to_string()),
        port = listen.port(),
        ip = listen.ip(),
    );
    let d = dir.display().to_string();
    let mut g = Generated::new(
        "Caddyfile",
        text,
        vec![
            "caddy".into(),
            "run".into(),
            "--config".into(),
            dir.join("Caddyfile").display().to_string(),
            "--adapter".into(),
            "caddyfile".into(),
        ],
    );
    g.env = vec![
        ("HOME".into(), d.clone()),
        ("XDG_DATA_HOME".into(), d.clone()),
        ("XDG_CONFIG_HOME".into(), d),
    ];
    Ok(g)
}
