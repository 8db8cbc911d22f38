//! Apache httpd 2.4 with mod_proxy_fcgi: `ProxyPass`/`ProxyPassMatch`, `<Proxy balancer://>`,
//! worker keys for reuse, caps and timeouts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::scenario::{BackendType, LbMethod, Route, Scenario, WorkerSettings};

use super::{Generated, backend_addr, quote, regex_escape, secs_ceil, sub_second, workers};

pub(super) fn cannot_express(s: &Scenario) -> Option<String> {
    if let Some(root) = &s.topology.document_root
        && !Path::new(root).is_dir()
    {
        return Some(format!(
            "Apache refuses to start with a DocumentRoot that is not a directory ({root})"
        ));
    }
    if workers(s).any(|w| sub_second(w.timeout) || sub_second(w.ttl))
        || s.topology.balancers.iter().any(|b| sub_second(b.wait))
    {
        return Some("Apache takes timeout= and ttl= in whole seconds".into());
    }
    None
}

/// Apache worker keys (`ProxyPass ... key=value`) for the neutral settings.
fn apache_keys(w: &WorkerSettings) -> String {
    let mut k = Vec::new();
    match w.reuse {
        Some(true) => k.push("enablereuse=on".to_string()),
        Some(false) => k.push("disablereuse=on".to_string()),
        None => {}
    }
    if let Some(m) = w.max {
        k.push(format!("max={m}"));
    }
    if let Some(a) = w.acquire {
        k.push(format!("acquire={}", a.0.as_millis().max(1)));
    }
    if let Some(t) = w.timeout {
        // Whole seconds: Apache reads `timeout=` with atoi.
        k.push(format!("timeout={}", secs_ceil(t.0).max(1)));
    }
    if let Some(t) = w.connect_timeout {
        k.push(format!("connectiontimeout={}ms", t.0.as_millis().max(1)));
    }
    if let Some(t) = w.ttl {
        k.push(format!("ttl={}", secs_ceil(t.0).max(1)));
    }
    if let Some(r) = w.retry {
        k.push(format!("retry={}", secs_ceil(r.0)));
    }
    k.join(" ")
}

fn route_url(r: &Route, backends: &BTreeMap<String, SocketAddr>) -> Result<String, String> {
    let path = r.backend_path.as_deref().unwrap_or("/");
    match (&r.backend, &r.balancer) {
        (Some(b), _) => Ok(format!("fcgi://{}{path}", backend_addr(backends, b)?)),
        (None, Some(name)) => Ok(format!("balancer://{name}{path}")),
        (None, None) => Err("route without backend".into()),
    }
}

pub(super) fn config(
    s: &Scenario,
    backends: &BTreeMap<String, SocketAddr>,
    listen: SocketAddr,
    dir: &Path,
) -> Result<Generated, String> {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("run")).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
    let docroot = s
        .topology
        .document_root
        .clone()
        .unwrap_or_else(|| "/var/www/html".into());
    let modules = [
        "mpm_event",
        "authz_core",
        "setenvif",
        "env",
        "proxy",
        "proxy_fcgi",
        "proxy_balancer",
        "slotmem_shm",
        "lbmethod_byrequests",
        "lbmethod_bybusyness",
    ];
    let mut c = format!(
        "ServerRoot \"{d}\"\nPidFile \"{d}/httpd.pid\"\nDefaultRuntimeDir \"{d}/run\"\n\
         ErrorLog \"{d}/error.log\"\nLogLevel warn\nMutex file:{d}/run default\n"
    );
    if crate::peers::running_as_root() {
        c.push_str("User www-data\nGroup www-data\n");
    }
    for m in modules {
        c.push_str(&format!(
            "LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"
        ));
    }
    if let Some(t) = s.topology.header_timeout {
        // A fixed deadline for the whole head (no MinRate extension).
        c.push_str(&format!(
            "LoadModule reqtimeout_module /usr/lib/apache2/modules/mod_reqtimeout.so\n\
             RequestReadTimeout header={}\n",
            t.0.as_secs().max(1)
        ));
    }
    c.push_str(
        "StartServers 1\nServerLimit 1\nThreadsPerChild 25\nMaxRequestWorkers 25\n\
         MinSpareThreads 1\nMaxSpareThreads 25\n",
    );
    c.push_str(&format!(
        "Listen {listen}\nServerName example.com\nDocumentRoot {}\n",
        quote(&docroot)
    ));
    if s.speaks_h2c() {
        // mod_http2 takes HTTP/2 with prior knowledge on a plain listener (H2Direct is on
        // for h2c by default).
        c.push_str(
            "LoadModule http2_module /usr/lib/apache2/modules/mod_http2.so\n\
             Protocols h2c http/1.1\n",
        );
    }
    for b in &s.topology.balancers {
        c.push_str(&format!("<Proxy \"balancer://{}\">\n", b.name));
        for m in &b.members {
            let mut keys = vec![format!("loadfactor={}", m.loadfactor)];
            if m.lbset != 0 {
                keys.push(format!("lbset={}", m.lbset));
            }
            if !m.status.is_empty() {
                keys.push(format!("status={}", m.status));
            }
            if let Some(r) = &m.route {
                keys.push(format!("route={r}"));
            }
            if let Some(r) = &m.redirect {
                keys.push(format!("redirect={r}"));
            }
            let k = apache_keys(&m.worker().or(&b.worker()));
            if !k.is_empty() {
                keys.push(k);
            }
            c.push_str(&format!(
                "  BalancerMember \"fcgi://{}\" {}\n",
                backend_addr(backends, &m.backend)?,
                keys.join(" ")
            ));
        }
        let method = match b.method {
            LbMethod::Byrequests => "byrequests",
            LbMethod::Bybusyness => "bybusyness",
        };
        let mut set = format!("lbmethod={method}");
        if let Some(m) = b.max_attempts {
            set.push_str(&format!(" maxattempts={m}"));
        }
        if let Some(name) = &b.sticky_session {
            set.push_str(&format!(" stickysession={name}"));
        }
        let on = |b: bool| if b { "On" } else { "Off" };
        if let Some(v) = b.nofailover {
            set.push_str(&format!(" nofailover={}", on(v)));
        }
        if let Some(v) = b.force_recovery {
            set.push_str(&format!(" forcerecovery={}", on(v)));
        }
        if let Some(w) = b.wait {
            // The balancer's timeout: whole seconds (atoi), at least 1.
            set.push_str(&format!(" timeout={}", secs_ceil(w.0).max(1)));
        }
        c.push_str(&format!("  ProxySet {set}\n</Proxy>\n"));
    }
    for r in &s.topology.routes {
        let url = route_url(r, backends)?;
        let mut keys = if r.backend.is_some() {
            apache_keys(&r.worker())
        } else {
            String::new()
        };
        if r.flush && r.backend.is_some() {
            keys.push_str(" flushpackets=on");
        }
        let (directive, pattern, location) = match (&r.path, &r.regex) {
            (Some(p), _) => ("ProxyPass", p.clone(), format!("^{}", regex_escape(p))),
            (None, Some(re)) => ("ProxyPassMatch", re.clone(), re.clone()),
            (None, None) => return Err("route without path".into()),
        };
        if let Some(pi) = &r.pathinfo {
            c.push_str(&format!(
                "SetEnvIf Request_URI {} proxy-fcgi-pathinfo={pi}\n",
                quote(&location)
            ));
        }
        let mut inside = Vec::new();
        if r.backend_type == Some(BackendType::Generic) {
            inside.push("ProxyFCGIBackendType GENERIC".to_string());
        }
        if r.pass_authorization == Some(true) {
            inside.push("CGIPassAuth On".to_string());
        }
        for (n, v) in &r.env {
            inside.push(format!("SetEnv {n} {}", quote(v)));
        }
        for (n, v) in &r.fcgi_set {
            inside.push(format!("ProxyFCGISetEnvIf \"true\" {n} {}", quote(v)));
        }
        for n in &r.fcgi_unset {
            inside.push(format!("ProxyFCGISetEnvIf \"true\" !{n}"));
        }
        if !inside.is_empty() {
            c.push_str(&format!("<LocationMatch {}>\n", quote(&location)));
            for l in inside {
                c.push_str(&format!("  {l}\n"));
            }
            c.push_str("</LocationMatch>\n");
        }
        c.push_str(&format!(
            "{directive} {} {} {keys}\n",
            quote(&pattern),
            quote(&url)
        ));
    }
    Ok(Generated::new(
        "httpd.conf",
        c,
        vec![
            "apache2".into(),
            "-f".into(),
            dir.join("httpd.conf").display().to_string(),
            "-DFOREGROUND".into(),
        ],
    ))
}
