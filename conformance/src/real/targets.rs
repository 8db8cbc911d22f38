//! Target adapters: a scenario's neutral topology as each proxy's own configuration, with what
//! each can and cannot express.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::scenario::{BackendType, LbMethod, Route, Scenario, WorkerSettings};

use super::RealOptions;

/// A proxy the suite can run scenarios against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// `fcgi-proxy`, from a generated TOML file.
    Ours,
    /// Apache httpd 2.4 with mod_proxy_fcgi.
    Apache,
    /// nginx with `fastcgi_pass`.
    Nginx,
}

/// A generated configuration and the command that runs the target on it (in the foreground,
/// from the run's directory).
#[derive(Debug, Clone)]
pub struct Generated {
    pub file_name: &'static str,
    pub text: String,
    pub command: Vec<String>,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Ours, Target::Apache, Target::Nginx];

    pub fn name(self) -> &'static str {
        match self {
            Target::Ours => "ours",
            Target::Apache => "apache",
            Target::Nginx => "nginx",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    fn binary(self, opts: &RealOptions) -> Option<PathBuf> {
        match self {
            Target::Ours => Some(opts.proxy_bin.clone()).filter(|p| p.exists()),
            Target::Apache => crate::peers::find_program("apache2"),
            Target::Nginx => crate::peers::find_program("nginx"),
        }
    }

    /// Why the whole column is skipped, with an install hint.
    pub fn unavailable(self, opts: &RealOptions) -> Option<String> {
        if self.binary(opts).is_some() {
            return None;
        }
        Some(match self {
            Target::Ours => format!(
                "{} not built (cargo build -p fcgi-proxy)",
                opts.proxy_bin.display()
            ),
            Target::Apache => "apache2 not installed (apt-get install apache2)".into(),
            Target::Nginx => "nginx not installed (apt-get install nginx)".into(),
        })
    }

    /// Why this target cannot express the scenario's topology, if it cannot.
    pub fn cannot_express(self, s: &Scenario) -> Option<String> {
        let workers = || {
            s.topology.routes.iter().map(Route::worker).chain(
                s.topology
                    .balancers
                    .iter()
                    .flat_map(|b| b.members.iter().map(|m| m.worker().or(&b.worker()))),
            )
        };
        let sub_second =
            |d: Option<crate::scenario::Dur>| d.is_some_and(|d| d.0.subsec_millis() != 0);
        match self {
            Target::Ours => None,
            Target::Apache => {
                if let Some(root) = &s.topology.document_root
                    && !Path::new(root).is_dir()
                {
                    return Some(format!(
                        "Apache refuses to start with a DocumentRoot that is not a directory ({root})"
                    ));
                }
                if workers().any(|w| sub_second(w.timeout) || sub_second(w.ttl)) {
                    return Some("Apache takes timeout= and ttl= in whole seconds".into());
                }
                None
            }
            Target::Nginx => {
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
                    return Some("nginx cannot set or unset CGI variables per request like SetEnv/ProxyFCGISetEnvIf".into());
                }
                if r.iter().any(|r| r.acquire.is_some())
                    || s.topology.balancers.iter().any(|b| b.acquire.is_some())
                {
                    return Some("nginx has no wait-for-a-free-connection (acquire)".into());
                }
                None
            }
        }
    }

    pub fn config(
        self,
        s: &Scenario,
        backends: &BTreeMap<String, SocketAddr>,
        listen: SocketAddr,
        dir: &Path,
        opts: &RealOptions,
    ) -> Result<Generated, String> {
        match self {
            Target::Ours => ours(s, backends, listen, opts),
            Target::Apache => apache(s, backends, listen, dir),
            Target::Nginx => nginx(s, backends, listen, dir),
        }
    }
}

fn ours(
    s: &Scenario,
    backends: &BTreeMap<String, SocketAddr>,
    listen: SocketAddr,
    opts: &RealOptions,
) -> Result<Generated, String> {
    let mut cfg = crate::ours::config(s)?;
    cfg.listen = vec![listen.to_string()];
    let mut text = toml::to_string(&cfg).map_err(|e| format!("config as TOML: {e}"))?;
    for b in &s.backends {
        if let Some(real) = backends.get(&b.name) {
            text = text.replace(
                &format!("fcgi://{}", b.authority()),
                &format!("fcgi://{real}"),
            );
        }
    }
    Ok(Generated {
        file_name: "proxy.toml",
        text,
        command: vec![
            opts.proxy_bin.display().to_string(),
            "--config".into(),
            "proxy.toml".into(),
        ],
    })
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
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

fn backend_addr(backends: &BTreeMap<String, SocketAddr>, name: &str) -> Result<SocketAddr, String> {
    backends
        .get(name)
        .copied()
        .ok_or_else(|| format!("unknown backend {name}"))
}

fn route_url(r: &Route, backends: &BTreeMap<String, SocketAddr>) -> Result<String, String> {
    let path = r.backend_path.as_deref().unwrap_or("/");
    match (&r.backend, &r.balancer) {
        (Some(b), _) => Ok(format!("fcgi://{}{path}", backend_addr(backends, b)?)),
        (None, Some(name)) => Ok(format!("balancer://{name}{path}")),
        (None, None) => Err("route without backend".into()),
    }
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

fn apache(
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
    c.push_str(
        "StartServers 1\nServerLimit 1\nThreadsPerChild 25\nMaxRequestWorkers 25\n\
         MinSpareThreads 1\nMaxSpareThreads 25\n",
    );
    c.push_str(&format!(
        "Listen {listen}\nServerName example.com\nDocumentRoot {}\n",
        quote(&docroot)
    ));
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
        let attempts = b
            .max_attempts
            .map(|m| format!(" maxattempts={m}"))
            .unwrap_or_default();
        c.push_str(&format!(
            "  ProxySet lbmethod={method}{attempts}\n</Proxy>\n"
        ));
    }
    for r in &s.topology.routes {
        let url = route_url(r, backends)?;
        let keys = if r.backend.is_some() {
            apache_keys(&r.worker())
        } else {
            String::new()
        };
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
    Ok(Generated {
        file_name: "httpd.conf",
        text: c,
        command: vec![
            "apache2".into(),
            "-f".into(),
            dir.join("httpd.conf").display().to_string(),
            "-DFOREGROUND".into(),
        ],
    })
}

fn nginx(
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
                    .topology
                    .balancers
                    .iter()
                    .find(|b| b.name == *name)
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
    let text = format!(
        "pid {d}/nginx.pid;\nerror_log stderr notice;\nworker_processes 1;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  fastcgi_temp_path {d}/fastcgi;\n\
         proxy_temp_path {d}/proxy;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {upstreams}  server {{\n    listen {listen};\n    server_name example.com;\n    root {docroot};\n{locations}  }}\n}}\n"
    );
    Ok(Generated {
        file_name: "nginx.conf",
        text,
        command: vec![
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
    })
}
