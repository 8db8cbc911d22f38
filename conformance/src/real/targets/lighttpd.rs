//! lighttpd 1.4 (Debian: 1.4.69) with mod_fastcgi: a prefix route is a `fastcgi.server` key at
//! global scope (`check-local` off: nothing is looked up on disk); a regex route is a
//! `$HTTP["url"] =~` block with the key `/`. lighttpd opens a new connection for every request
//! (KEEP_CONN never set). Round robin alternates between hosts with `check-local` off, at global
//! scope and inside a `$HTTP["url"]` block alike (docs/reference/peers.md §3.5).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::scenario::{LbMethod, Scenario};

use super::{
    BalancerCaps, Generated, backend_addr, balancer_limits, docroot, no_reuse_reason, quote,
    root_for, route_limits, secs_ceil, sub_second, upstream, workers,
};

pub(super) fn cannot_express(s: &Scenario) -> Option<String> {
    if let Some(why) = route_limits(s, "lighttpd") {
        return Some(why);
    }
    if let Some(why) = no_reuse_reason(s, "lighttpd 1.4") {
        return Some(why);
    }
    if let Some(why) = balancer_limits(
        s,
        &BalancerCaps {
            peer: "lighttpd",
            weights: false,
            ordered_levels: false,
        },
    ) {
        return Some(why);
    }
    if workers(s).any(|w| w.max.is_some() || w.acquire.is_some()) {
        return Some(
            "lighttpd has no cap on connections to a remote FastCGI host (max/acquire)".into(),
        );
    }
    if workers(s).any(|w| w.ttl.is_some()) {
        return Some("lighttpd keeps no idle backend connections (ttl)".into());
    }
    // A connect-timeout is rounded up to whole seconds: on loopback a dead backend refuses the
    // connection at once, so only the read timeout's length is observable.
    if workers(s).any(|w| sub_second(w.timeout)) {
        return Some("lighttpd takes read-timeout in whole seconds".into());
    }
    if workers(s).any(|w| w.retry.is_some()) {
        return Some(
            "lighttpd has no time a failed host stays out of rotation (it is retried on the next \
             request)"
                .into(),
        );
    }
    let r = &s.topology.routes;
    let methods: Vec<LbMethod> = s.topology.balancers.iter().map(|b| b.method).collect();
    if methods.windows(2).any(|w| w[0] != w[1]) {
        return Some("lighttpd has one fastcgi.balance for the whole server".into());
    }
    if r.iter().any(|r| !r.fcgi_set.is_empty()) {
        return Some(
            "lighttpd's setenv adds variables but cannot override those mod_fastcgi computes"
                .into(),
        );
    }
    if r.iter()
        .any(|r| r.path.as_deref().is_some_and(|p| !p.starts_with('/')))
    {
        return Some("a lighttpd fastcgi.server prefix starts with /".into());
    }
    None
}

/// A regex as a lighttpd string: backslashes are kept as written, only `"` is escaped.
fn regex_string(re: &str) -> String {
    format!("\"{}\"", re.replace('"', "\\\""))
}

pub(super) fn config(
    s: &Scenario,
    backends: &BTreeMap<String, SocketAddr>,
    listen: SocketAddr,
    dir: &Path,
) -> Result<Generated, String> {
    let mut c = format!(
        "server.document-root = {}\nserver.bind = \"{}\"\nserver.port = {}\n\
         server.errorlog = \"/dev/stderr\"\nserver.modules = ( \"mod_setenv\", \"mod_fastcgi\" )\n",
        quote(&docroot(s)),
        listen.ip(),
        listen.port()
    );
    if s.speaks_h2c() {
        // HTTP/2, and HTTP/2 with prior knowledge on a plain listener (h2c).
        c.push_str(
            "server.feature-flags = ( \"server.h2proto\" => \"enable\", \"server.h2c\" => \"enable\" )\n",
        );
    }
    if let Some(t) = s.topology.header_timeout {
        // lighttpd has only an idle timeout for reading a request, no deadline for the head.
        c.push_str(&format!(
            "server.max-read-idle = {}\n",
            t.0.as_secs().max(1)
        ));
    }
    if s.topology.routes.iter().any(|r| r.flush) {
        // Send the response body as it arrives, with minimal buffering.
        c.push_str("server.stream-response-body = 2\n");
    }
    let method = s
        .topology
        .balancers
        .first()
        .map_or(LbMethod::Byrequests, |b| b.method);
    c.push_str(match method {
        LbMethod::Byrequests => "fastcgi.balance = \"round-robin\"\n",
        LbMethod::Bybusyness => "fastcgi.balance = \"fair\"\n",
    });
    let mut global = Vec::new();
    let mut blocks = Vec::new();
    for r in &s.topology.routes {
        let up = upstream(s, r)?;
        let mut hosts = Vec::new();
        for m in up.members.iter().filter(|m| !m.disabled()) {
            let a = backend_addr(backends, m.backend)?;
            let mut h = format!(
                "\"host\" => \"{}\", \"port\" => {}, \"check-local\" => \"disable\"",
                a.ip(),
                a.port()
            );
            if let Some(t) = m.worker.timeout {
                let t = secs_ceil(t.0).max(1);
                h.push_str(&format!(
                    ", \"read-timeout\" => {t}, \"write-timeout\" => {t}"
                ));
            }
            if let Some(t) = m.worker.connect_timeout {
                h.push_str(&format!(
                    ", \"connect-timeout\" => {}",
                    secs_ceil(t.0).max(1)
                ));
            }
            hosts.push(format!("( {h} )"));
        }
        let hosts = hosts.join(", ");
        let mut settings = Vec::new();
        if r.backend_path.is_some() {
            settings.push(format!("server.document-root = {}", quote(&root_for(s, r))));
        }
        if !r.env.is_empty() {
            let kv: Vec<String> = r
                .env
                .iter()
                .map(|(n, v)| format!("{} => {}", quote(n), quote(v)))
                .collect();
            settings.push(format!("setenv.add-environment = ( {} )", kv.join(", ")));
        }
        match (&r.path, &r.regex) {
            (Some(p), _) if settings.is_empty() => {
                global.push(format!("  {} => ( {hosts} )", quote(p)));
            }
            (Some(p), _) => {
                blocks.push(format!(
                    "$HTTP[\"url\"] =^ {} {{\n  {}\n}}\n",
                    quote(p),
                    settings.join("\n  ")
                ));
                global.push(format!("  {} => ( {hosts} )", quote(p)));
            }
            (None, Some(re)) => {
                settings.push(format!("fastcgi.server = ( \"/\" => ( {hosts} ) )"));
                blocks.push(format!(
                    "$HTTP[\"url\"] =~ {} {{\n  {}\n}}\n",
                    regex_string(re),
                    settings.join("\n  ")
                ));
            }
            (None, None) => return Err("route without path".into()),
        }
    }
    if !global.is_empty() {
        c.push_str(&format!("fastcgi.server = (\n{}\n)\n", global.join(",\n")));
    }
    // Later conditions override earlier ones; the first route must win, as with ProxyPass.
    for b in blocks.iter().rev() {
        c.push_str(b);
    }
    Ok(Generated::new(
        "lighttpd.conf",
        c,
        vec![
            "lighttpd".into(),
            "-D".into(),
            "-f".into(),
            dir.join("lighttpd.conf").display().to_string(),
        ],
    ))
}
