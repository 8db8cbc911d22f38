//! nginx: an `upstream` per route (keepalive, max_conns, weights, backup/down), `location`s with
//! the stock `fastcgi_params`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::scenario::{LbMethod, Scenario};

use super::{Generated, backend_addr, quote, secs_ceil};

pub(super) fn cannot_express(s: &Scenario) -> Option<String> {
    if let Some(why) = super::balancer_apache_only(s, "nginx") {
        return Some(why);
    }
    if s.topology
        .balancers
        .iter()
        .any(|b| b.members.iter().any(|m| m.lbset != 0))
    {
        return Some("nginx has no lbsets (only backup servers)".into());
    }
    let r = &s.topology.routes;
    if r.iter().any(|r| r.pathinfo.is_some()) {
        return Some("nginx has no proxy-fcgi-pathinfo modes".into());
    }
    if r.iter()
        .any(|r| !r.env.is_empty() || !r.fcgi_unset.is_empty())
    {
        return Some(
            "nginx cannot set or unset CGI variables per request like SetEnv/ProxyFCGISetEnvIf"
                .into(),
        );
    }
    if r.iter().any(|r| r.acquire.is_some())
        || s.topology.balancers.iter().any(|b| b.acquire.is_some())
    {
        return Some("nginx has no wait-for-a-free-connection (acquire)".into());
    }
    None
}

pub(super) fn config(
    s: &Scenario,
    backends: &BTreeMap<String, SocketAddr>,
    listen: SocketAddr,
    dir: &Path,
) -> Result<Generated, String> {
    let d = dir.display();
    for sub in ["body", "fastcgi", "proxy", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    let docroot = s
        .topology
        .document_root
        .clone()
        .unwrap_or_else(|| "/var/www/html".into());
    let mut upstreams = String::new();
    let mut locations = String::new();
    for (i, r) in s.topology.routes.iter().enumerate() {
        let (servers, method, w) = match (&r.backend, &r.balancer) {
            (Some(b), _) => (
                vec![format!(
                    "server {}{};",
                    backend_addr(backends, b)?,
                    r.max.map(|m| format!(" max_conns={m}")).unwrap_or_default()
                )],
                LbMethod::Byrequests,
                r.worker(),
            ),
            (None, Some(name)) => {
                let bal = s
                    .balancer(name)
                    .ok_or_else(|| format!("unknown balancer {name}"))?;
                let mut v = Vec::new();
                for m in &bal.members {
                    let mut line = format!(
                        "server {} weight={}",
                        backend_addr(backends, &m.backend)?,
                        m.loadfactor
                    );
                    if let Some(max) = m.worker().or(&bal.worker()).max {
                        line.push_str(&format!(" max_conns={max}"));
                    }
                    if m.status.contains('H') {
                        line.push_str(" backup");
                    }
                    if m.status.contains('D') {
                        line.push_str(" down");
                    }
                    let retry = m.worker().or(&bal.worker()).retry;
                    if let Some(rt) = retry {
                        line.push_str(&format!(
                            " max_fails=1 fail_timeout={}s",
                            secs_ceil(rt.0).max(1)
                        ));
                    }
                    v.push(format!("{line};"));
                }
                let w = bal
                    .members
                    .first()
                    .map(|m| m.worker().or(&bal.worker()))
                    .unwrap_or_default();
                (v, bal.method, w)
            }
            (None, None) => return Err("route without backend".into()),
        };
        let reuse = w.reuse == Some(true);
        upstreams.push_str(&format!("  upstream u{i} {{\n"));
        if method == LbMethod::Bybusyness {
            upstreams.push_str("    least_conn;\n");
        }
        for srv in servers {
            upstreams.push_str(&format!("    {srv}\n"));
        }
        if reuse {
            upstreams.push_str(&format!("    keepalive {};\n", w.max.unwrap_or(16)));
            if let Some(ttl) = w.ttl {
                upstreams.push_str(&format!(
                    "    keepalive_timeout {}ms;\n",
                    ttl.0.as_millis().max(1)
                ));
            }
        }
        upstreams.push_str("  }\n");
        let loc = match (&r.path, &r.regex) {
            (Some(p), _) => format!("location ^~ {p}"),
            (None, Some(re)) => format!("location ~ {}", quote(re)),
            (None, None) => return Err("route without path".into()),
        };
        let backend_path = r.backend_path.as_deref().unwrap_or("/");
        let mut l = format!("    {loc} {{\n      include /etc/nginx/fastcgi_params;\n");
        l.push_str(&format!(
            "      fastcgi_param SCRIPT_FILENAME {}$fastcgi_script_name;\n",
            backend_path.trim_end_matches('/')
        ));
        l.push_str(&format!("      fastcgi_pass u{i};\n"));
        if reuse {
            l.push_str("      fastcgi_keep_conn on;\n");
        }
        if r.flush {
            l.push_str("      fastcgi_buffering off;\n");
        }
        if let Some(t) = w.timeout {
            l.push_str(&format!(
                "      fastcgi_read_timeout {}ms;\n      fastcgi_send_timeout {}ms;\n",
                t.0.as_millis(),
                t.0.as_millis()
            ));
        }
        if let Some(t) = w.connect_timeout {
            l.push_str(&format!(
                "      fastcgi_connect_timeout {}ms;\n",
                t.0.as_millis()
            ));
        }
        for (n, v) in &r.fcgi_set {
            l.push_str(&format!("      fastcgi_param {n} {};\n", quote(v)));
        }
        l.push_str("    }\n");
        locations.push_str(&l);
    }
    let header_timeout = s
        .topology
        .header_timeout
        .map(|t| format!("  client_header_timeout {}ms;\n", t.0.as_millis()))
        .unwrap_or_default();
    // nginx before 1.25 has no `http2 on`: the listen parameter makes the plain listener
    // HTTP/2 with prior knowledge (and HTTP/2 only).
    let h2 = if s.speaks_h2c() { " http2" } else { "" };
    let text = format!(
        "pid {d}/nginx.pid;\nerror_log stderr notice;\nworker_processes 1;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n{header_timeout}  client_body_temp_path {d}/body;\n  fastcgi_temp_path {d}/fastcgi;\n\
         proxy_temp_path {d}/proxy;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {upstreams}  server {{\n    listen {listen}{h2};\n    server_name example.com;\n    root {docroot};\n{locations}  }}\n}}\n"
    );
    Ok(Generated::new(
        "nginx.conf",
        text,
        vec![
            "nginx".into(),
            "-p".into(),
            format!("{d}/"),
            "-c".into(),
            "nginx.conf".into(),
            "-e".into(),
            "stderr".into(),
            "-g".into(),
            "daemon off;".into(),
        ],
    ))
}
