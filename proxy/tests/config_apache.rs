//! The Apache importer on the verified peer configurations (copied from
//! reference/peer-configs into tests/config_fixtures) and on directive-level cases.

use std::time::Duration;

use fcgi_proxy::config::{
    self, BackendType, Config, ConfigError, FlushPackets, LbMethod, Target, Warning, apache,
};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/config_fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn import(text: &str) -> (Config, Vec<Warning>) {
    match apache::parse(text, "httpd.conf") {
        Ok(x) => x,
        Err(e) => panic!("import failed: {e}"),
    }
}

fn import_err(text: &str) -> ConfigError {
    match apache::parse(text, "bad.conf") {
        Ok((c, _)) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

fn ignored_warning(w: &[Warning]) -> &Warning {
    let hits: Vec<&Warning> = w
        .iter()
        .filter(|w| w.message.starts_with("ignored ") && w.message.contains("does not use"))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "exactly one ignored-directives warning: {w:#?}"
    );
    hits[0]
}

#[test]
fn peer_config_a_loads() {
    let (cfg, warnings) = import(&fixture("httpd.conf"));
    assert_eq!(cfg.listen, vec!["127.0.0.1:28081"]);
    assert_eq!(cfg.server_name.as_deref(), Some("127.0.0.1"));
    assert_eq!(cfg.document_root, "/srv/peers/docroot");
    assert_eq!(cfg.routes.len(), 1);
    let r = &cfg.routes[0];
    assert_eq!(r.path.as_deref(), Some("/myapp/"));
    assert_eq!(r.target.as_str(), "fcgi://127.0.0.1:27001/");
    assert!(r.worker.reuse, "reuse is on by default (product decision)");
    assert_eq!(r.origin.as_ref().map(|o| o.line), Some(17));
    assert_eq!(r.backend_type(&cfg), BackendType::Fpm);
    // ErrorLog and LogLevel are imported.
    let e = cfg.error_log.as_ref().expect("an error log");
    assert_eq!(e.path.as_deref(), Some("/dev/stderr"));
    assert_eq!(e.level.as_deref(), Some("warn"));
    let w = ignored_warning(&warnings);
    for expected in [
        "ServerRoot (line 2)",
        "PidFile (line 5)",
        "DefaultRuntimeDir (line 6)",
        "User (line 10)",
        "Group (line 11)",
        "LoadModule (lines 12, 13, 14, 15)",
    ] {
        assert!(
            w.message.contains(expected),
            "{expected} missing in {}",
            w.message
        );
    }
    assert!(
        w.message.starts_with("ignored 9 directive(s)"),
        "{}",
        w.message
    );
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(cfg.validate().unwrap(), vec![]);
}

#[test]
fn peer_config_b_handler_mode_is_read() {
    use fcgi_proxy::config::site::{Handler, Matcher, SectionKind};
    let (cfg, warnings) = import(&fixture("httpd-b.conf"));
    assert!(cfg.routes.is_empty());
    let s = &cfg.site.sections;
    assert_eq!(s.len(), 2, "{s:#?}");
    assert_eq!(s[0].kind, SectionKind::Directory);
    assert_eq!(
        s[0].settings.describe_access().as_deref(),
        Some("require all granted")
    );
    assert_eq!(s[1].kind, SectionKind::FilesMatch);
    assert!(matches!(&s[1].matcher, Matcher::Regex(r) if r.as_str() == "\\.php$"));
    match &s[1].settings.handler {
        Some(Handler::Proxy { url, defined, .. }) => {
            assert_eq!(url.raw, "fcgi://127.0.0.1:27001");
            assert!(!defined, "no <Proxy> or ProxyPass defines this worker");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s[1].origin.line, 19);
    ignored_warning(&warnings);
    // It serves files through the handler, so there is no "no routes" warning.
    let v = cfg.validate().unwrap();
    assert!(!v.iter().any(|w| w.message.contains("no routes")), "{v:#?}");
}

#[test]
fn peer_config_c_balancer_location_generic() {
    let (cfg, warnings) = import(&fixture("httpd-c.conf"));
    assert_eq!(cfg.balancers.len(), 1);
    let b = &cfg.balancers[0];
    assert_eq!(b.name, "fcgipool");
    assert_eq!(b.lbmethod, LbMethod::Byrequests);
    assert_eq!(b.members.len(), 2);
    assert_eq!(b.members[0].url.raw, "fcgi://127.0.0.1:27001");
    assert_eq!(b.members[1].url.raw, "fcgi://127.0.0.1:27002");
    assert!(b.members.iter().all(|m| m.worker.reuse));
    assert_eq!(cfg.routes.len(), 1);
    let r = &cfg.routes[0];
    assert_eq!(r.path.as_deref(), Some("/myapp/"));
    assert!(matches!(&r.target, Target::Balancer(t) if t.name == "fcgipool" && t.path == "/"));
    assert_eq!(r.backend_type, Some(BackendType::Generic));
    let setenv: Vec<(&str, &str)> = r
        .setenv
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        setenv,
        vec![("proxy-fcgi-pathinfo", "1"), ("proxy-sendcl", "1")]
    );
    let w = ignored_warning(&warnings);
    for d in [
        "StartServers (line 22)",
        "ServerLimit (line 23)",
        "ThreadsPerChild (line 24)",
        "MaxRequestWorkers (line 25)",
    ] {
        assert!(w.message.contains(d), "{d} in {}", w.message);
    }
    assert_eq!(cfg.validate().unwrap(), vec![]);
}

#[test]
fn load_file_picks_the_front_end_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("httpd.conf");
    std::fs::write(&conf, fixture("httpd.conf")).unwrap();
    let loaded = config::load_file(&conf).unwrap();
    assert_eq!(loaded.config.routes.len(), 1);
    assert_eq!(loaded.warnings.len(), 1);
    let toml = dir.path().join("proxy.toml");
    std::fs::write(
        &toml,
        "listen = [\"8080\"]\n[[route]]\npath = \"/\"\ntarget = \"fcgi://127.0.0.1:9000/\"\n",
    )
    .unwrap();
    let loaded = config::load_file(&toml).unwrap();
    assert_eq!(loaded.config.routes.len(), 1);
    let missing = dir.path().join("nope.conf");
    assert!(config::load_file(&missing).is_err());
}

#[test]
fn syntax_quotes_continuations_comments_case() {
    let (cfg, w) = import(
        "# comment\n\
         listen 8080\n\
         \x20 proxypass \"/my app/\" \\\n\
         \x20\x20\x20 'fcgi://h:9000/x y/' MAX=5\n\
         PROXYPASS /b fcgi://h:9001/\n",
    );
    assert!(w.is_empty(), "{w:#?}");
    assert_eq!(cfg.routes[0].path.as_deref(), Some("/my app/"));
    assert_eq!(cfg.routes[0].origin.as_ref().unwrap().line, 3);
    assert_eq!(cfg.routes[0].worker.max, Some(5));
    assert_eq!(cfg.routes[1].path.as_deref(), Some("/b"));
    let Target::Worker(t) = &cfg.routes[0].target else {
        panic!()
    };
    assert_eq!(t.path, "/x y/");
}

#[test]
fn worker_keys_mirror_apache_units() {
    let (cfg, _) = import(
        "Listen 80\n\
         ProxyPass /a fcgi://h:1/ disablereuse=on max=3 timeout=5 connectiontimeout=250ms acquire=100 retry=0 ttl=30 flushpackets=on\n\
         ProxyPass /b fcgi://h:1/ enablereuse=off\n\
         ProxyPass /c fcgi://h:1/ enablereuse=on\n\
         ProxyPass /d fcgi://h:1/ disablereuse=off\n",
    );
    let w = &cfg.routes[0].worker;
    assert!(!w.reuse);
    assert_eq!(w.max, Some(3));
    assert_eq!(w.timeout, Some(Duration::from_secs(5)));
    assert_eq!(w.connection_timeout, Some(Duration::from_millis(250)));
    assert_eq!(
        w.acquire,
        Some(Duration::from_millis(100)),
        "acquire is in ms in Apache"
    );
    assert_eq!(w.retry, Some(Duration::ZERO));
    assert_eq!(w.ttl, Some(Duration::from_secs(30)));
    assert_eq!(w.flush_packets, FlushPackets::On);
    assert!(!cfg.routes[1].worker.reuse);
    assert!(cfg.routes[2].worker.reuse);
    assert!(cfg.routes[3].worker.reuse);
}

#[test]
fn timeouts_and_limits() {
    let (cfg, _) = import(
        "Listen 80\nTimeout 30\nProxyTimeout 7\nKeepAliveTimeout 2\nLimitRequestLine 4000\n\
         LimitRequestFields 50\nLimitRequestFieldSize 1000\nLimitRequestBody 1000000\n\
         AllowEncodedSlashes NoDecode\nMergeSlashes Off\nMaxKeepAliveRequests 7\nKeepAlive Off\n",
    );
    assert_eq!(cfg.timeouts.body_read, Duration::from_secs(30));
    assert_eq!(cfg.timeouts.client_write, Duration::from_secs(30));
    assert_eq!(cfg.timeouts.backend_io, Duration::from_secs(7));
    assert_eq!(cfg.timeouts.keep_alive, Duration::from_secs(2));
    assert_eq!(cfg.limits.max_request_line, 4000);
    assert_eq!(cfg.limits.max_headers, 50);
    assert_eq!(cfg.limits.max_header_line, 1000);
    assert_eq!(cfg.limits.max_body, 1_000_000);
    assert_eq!(cfg.limits.max_keep_alive_requests, 7);
    assert!(!cfg.limits.keep_alive);
    assert!(!cfg.merge_slashes);
    assert_eq!(
        cfg.allow_encoded_slashes,
        fcgi_proxy::uri::EncodedSlashes::NoDecode
    );
    let (cfg, _) = import("Listen 80\nTimeout 30\n");
    assert_eq!(
        cfg.timeouts.backend_io,
        Duration::from_secs(30),
        "ProxyTimeout defaults to Timeout"
    );
}

#[test]
fn location_routes_come_first_latest_block_first() {
    let (cfg, _) = import(
        "Listen 80\n\
         ProxyPass /app/ fcgi://server:1/\n\
         <Location /app/>\n ProxyPass fcgi://a:1/\n</Location>\n\
         <Location /app/admin/>\n ProxyPass fcgi://b:1/\n ProxyFCGIBackendType GENERIC\n</Location>\n",
    );
    let order: Vec<&str> = cfg.routes.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        order,
        vec!["fcgi://b:1/", "fcgi://a:1/", "fcgi://server:1/"]
    );
    assert_eq!(cfg.routes[0].path.as_deref(), Some("/app/admin/"));
    assert_eq!(cfg.routes[0].backend_type, Some(BackendType::Generic));
    assert_eq!(cfg.routes[1].backend_type, None);
}

#[test]
fn location_settings_without_proxypass_apply_to_covered_routes() {
    let (cfg, w) = import(
        "Listen 80\n\
         ProxyPass /app/ fcgi://h:1/\n\
         ProxyPass /other/ fcgi://h:1/\n\
         ProxyPass / fcgi://h:2/\n\
         <Location /app>\n\
           ProxyFCGIBackendType GENERIC\n\
           CGIPassAuth On\n\
           SetEnvIf Request_URI \\.php$ proxy-fcgi-pathinfo=first-dot\n\
           ProxyFCGISetEnvIf true X_FROM_LOC yes\n\
           Require all granted\n\
         </Location>\n\
         <Location /nowhere/>\nSetEnv A b\n</Location>\n",
    );
    let app = &cfg.routes[0];
    assert_eq!(app.backend_type, Some(BackendType::Generic));
    assert_eq!(app.pass_authorization, Some(true));
    assert_eq!(app.setenvif.len(), 1);
    assert_eq!(app.fcgi_setenvif.len(), 1);
    assert_eq!(cfg.routes[1].backend_type, None);
    assert_eq!(
        cfg.routes[2].backend_type, None,
        "the / route is only partly covered"
    );
    let msgs: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("<Location /app> (line 5) covers only part of route prefix /")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("<Location /nowhere/>") && m.contains("covers only part")),
        "{msgs:#?}"
    );
    assert!(
        !w.iter().any(|x| x.message.contains("Require")),
        "Require all granted is understood: {w:#?}"
    );
    assert_eq!(
        cfg.site.sections[0].settings.describe_access().as_deref(),
        Some("require all granted")
    );
}

#[test]
fn location_match_and_proxypassmatch() {
    let (cfg, _) = import(
        "Listen 80\n\
         <LocationMatch \"^/(.*\\.php)$\">\n ProxyPass fcgi://h:1/var/www/$1\n</LocationMatch>\n\
         ProxyPassMatch ^/img/.*\\.gif$ !\n\
         ProxyPassMatch \"^/myapp/.*\\.php(/.*)?$\" \"fcgi://localhost:9000/var/www/\" enablereuse=on\n",
    );
    assert_eq!(cfg.routes.len(), 3);
    assert_eq!(
        cfg.routes[0].regex.as_ref().unwrap().as_str(),
        "^/(.*\\.php)$"
    );
    assert_eq!(cfg.routes[1].target, Target::Exclude);
    assert_eq!(
        cfg.routes[2].target.as_str(),
        "fcgi://localhost:9000/var/www/"
    );
}

#[test]
fn balancer_forms() {
    let (cfg, w) = import(
        "Listen 80\n\
         <Proxy \"balancer://Pool/\">\n\
           BalancerMember fcgi://a:1 loadfactor=70 route=r1 retry=5\n\
           BalancerMember fcgi://b:1 loadfactor=30 lbset=1 status=+H route=r2 redirect=r1\n\
           ProxySet lbmethod=bybusyness maxattempts=3 stickysession=ROUTEID nofailover=On timeout=2\n\
         </Proxy>\n\
         BalancerMember balancer://pool unix:/run/c.sock|fcgi://localhost/ loadfactor=1.5\n\
         ProxySet balancer://pool forcerecovery=off\n\
         ProxyPass /x/ balancer://pool/\n",
    );
    assert!(w.is_empty(), "{w:#?}");
    let b = &cfg.balancers[0];
    assert_eq!(b.name, "pool");
    assert_eq!(b.lbmethod, LbMethod::Bybusyness);
    assert_eq!(b.max_attempts, Some(3));
    assert_eq!(b.sticky_session.as_deref(), Some("ROUTEID"));
    assert!(b.nofailover);
    assert!(!b.force_recovery);
    assert_eq!(b.timeout, Some(Duration::from_secs(2)));
    assert_eq!(b.members.len(), 3);
    assert_eq!(b.members[0].loadfactor.lbfactor(), 7000);
    assert_eq!(b.members[0].worker.retry, Some(Duration::from_secs(5)));
    assert_eq!(b.members[1].lbset, 1);
    assert!(b.members[1].status.hot_standby);
    assert_eq!(b.members[1].redirect.as_deref(), Some("r1"));
    assert_eq!(b.members[2].loadfactor.lbfactor(), 150);
    cfg.validate().unwrap();
}

#[test]
fn sticky_session_keys() {
    let (cfg, w) = import(
        "Listen 80\n\
         <Proxy balancer://pool>\n\
           BalancerMember fcgi://a:1 route=a\n\
           BalancerMember fcgi://b:1 route=b status=+R\n\
           ProxySet stickysession=JSESSIONID|jsessionid stickysessionsep=! scolonpathdelim=On\n\
         </Proxy>\n\
         ProxyPass /x/ balancer://pool/\n",
    );
    assert!(w.is_empty(), "nothing ignored: {w:#?}");
    let b = &cfg.balancers[0];
    assert_eq!(b.sticky_names(), Some(("JSESSIONID", "jsessionid")));
    assert_eq!(b.sticky_session_sep.0, Some('!'));
    assert!(b.scolon_path_delim);
    assert!(b.members[1].status.hot_spare);
    let e = import_err(
        "Listen 80\n<Proxy balancer://p>\nBalancerMember fcgi://a:1\nProxySet stickysessionsep=ab\n</Proxy>\n",
    );
    assert!(e.to_string().contains("a single character or off"), "{e}");
}

/// What cannot be had here is refused at load, naming the line and saying why.
#[test]
fn refused_settings_say_why() {
    for (line, needle) in [
        (
            "ProxyPass /a fcgi://h:1/ flushpackets=off",
            "bad.conf:2: ProxyPass fcgi://h:1/: flushpackets=off is not supported: response \
             data is written to the client as soon as it arrives from the backend (what \
             flushpackets=on does)",
        ),
        (
            "ProxyPass /a fcgi://h:1/ flushpackets=auto",
            "flushpackets=auto is not supported: ",
        ),
        (
            "ProxyPass /a fcgi://h:1/ flushpackets=on flushwait=20",
            "bad.conf:2: ProxyPass fcgi://h:1/: flushwait=20 is not supported: it applies \
             only to flushpackets=auto",
        ),
        (
            "<Proxy balancer://p>\nBalancerMember fcgi://a:1 flushpackets=auto\n</Proxy>",
            "bad.conf:3: BalancerMember fcgi://a:1: flushpackets=auto is not supported: ",
        ),
    ] {
        let e = import_err(&format!("Listen 80\n{line}\n"));
        assert!(e.to_string().contains(needle), "{line}: {e}");
    }
}

/// `redirect` and `nofailover` act on sticky sessions: without `stickysession` they would do
/// nothing, so the configuration is refused.
#[test]
fn redirect_and_nofailover_need_a_sticky_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.conf");
    for (text, needle) in [
        (
            "<Proxy balancer://p>\nBalancerMember fcgi://a:1 route=a\nBalancerMember fcgi://b:1 route=b redirect=a\n</Proxy>\n",
            "site.conf:2: balancer 'p': member fcgi://b:1: redirect 'a' has no effect without \
             sticky_session (stickysession)",
        ),
        (
            "<Proxy balancer://p>\nBalancerMember fcgi://a:1 route=a\nProxySet nofailover=On\n</Proxy>\n",
            "site.conf:2: balancer 'p': nofailover has no effect without sticky_session",
        ),
    ] {
        std::fs::write(
            &path,
            format!("Listen 80\n{text}ProxyPass / balancer://p/\n"),
        )
        .unwrap();
        let e = config::load_file(&path).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    std::fs::write(
        &path,
        "Listen 80\n<Proxy balancer://p>\nBalancerMember fcgi://a:1 route=a\n\
         BalancerMember fcgi://b:1 route=b redirect=a\nProxySet stickysession=ROUTEID nofailover=On\n\
         </Proxy>\nProxyPass / balancer://p/\n",
    )
    .unwrap();
    config::load_file(&path).unwrap();
}

#[test]
fn worker_definitions_apply_to_matching_workers() {
    let (cfg, _) = import(
        "Listen 80\n\
         <Proxy \"fcgi://localhost/\" enablereuse=off max=10>\n</Proxy>\n\
         ProxySet fcgi://other:9000 timeout=3\n\
         ProxyPassMatch \"^/(.*\\.php)$\" \"unix:/run/php.sock|fcgi://localhost/var/www/$1\"\n\
         ProxyPass /o/ fcgi://other:9000/o/ max=2\n\
         ProxyPass /n/ fcgi://nomatch:9000/\n",
    );
    assert!(!cfg.routes[0].worker.reuse);
    assert_eq!(cfg.routes[0].worker.max, Some(10));
    assert_eq!(cfg.routes[1].worker.timeout, Some(Duration::from_secs(3)));
    assert_eq!(cfg.routes[1].worker.max, Some(2), "explicit keys win");
    assert!(cfg.routes[2].worker.reuse);
    assert_eq!(cfg.routes[2].worker.max, None);
}

#[test]
fn server_level_env_directives() {
    let (cfg, _) = import(
        "Listen 80\n\
         SetEnvIf Request_URI . proxy-fcgi-pathinfo=unescape\n\
         SetEnvIfNoCase User-Agent ^curl IS_CURL=1 !OTHER\n\
         BrowserMatch bot IS_BOT\n\
         SetEnv FOO \"bar baz\"\n\
         ProxyFCGISetEnvIf \"reqenv('PATH_TRANSLATED') =~ m|(/.*prefix)(\\d+)(.*)|\" PATH_TRANSLATED \"$1$3\"\n\
         ProxyFCGISetEnvIf true !REMOTE_ADDR\n\
         ProxyFCGIBackendType generic\n\
         CGIPassAuth on\n\
         ProxyPass / fcgi://h:1/\n",
    );
    assert_eq!(cfg.setenvif.len(), 3);
    assert!(cfg.setenvif[1].pattern.nocase());
    assert_eq!(cfg.setenv[0].value, "bar baz");
    assert_eq!(cfg.fcgi_setenvif.len(), 2);
    assert_eq!(cfg.backend_type, BackendType::Generic);
    assert!(cfg.pass_authorization);
}

#[test]
fn fragment_without_loadmodule_assumes_modules_loaded_and_keeps_vhosts_apart() {
    let (cfg, w) = import(
        "Listen 80\n\
         <IfModule mod_proxy_fcgi.c>\n  ProxyPass /a fcgi://h:1/\n</IfModule>\n\
         <IfModule !mod_proxy.c>\n  ProxyPass /b fcgi://h:1/\n</IfModule>\n\
         <Directory /var/www>\n  ProxyFCGIBackendType GENERIC\n</Directory>\n\
         <VirtualHost *:80>\n  ServerName example.com\n  ProxyPass /c fcgi://h:1/\n</VirtualHost>\n",
    );
    let paths =
        |c: &Config| -> Vec<String> { c.routes.iter().filter_map(|r| r.path.clone()).collect() };
    assert_eq!(paths(&cfg), vec!["/a"]);
    assert_eq!(cfg.vhosts.len(), 1);
    let v = &cfg.vhosts[0];
    assert_eq!(v.names, vec!["example.com"]);
    assert_eq!(v.config.server_name.as_deref(), Some("example.com"));
    assert_eq!(
        paths(&v.config),
        vec!["/a", "/c"],
        "a virtual host inherits the main server's ProxyPass, before its own"
    );
    assert_eq!(cfg.server_name, None);
    assert_eq!(
        cfg.backend_type,
        BackendType::Fpm,
        "ProxyFCGIBackendType in <Directory> is not applied"
    );
    let ig = ignored_warning(&w);
    assert!(
        ig.message.contains("<IfModule !mod_proxy.c> (line 5)"),
        "{}",
        ig.message
    );
    assert!(
        ig.message.contains("ProxyFCGIBackendType (line 9)"),
        "{}",
        ig.message
    );
}

#[test]
fn errors_name_file_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "Listen 80\nProxyPass /x http://h/\n",
            2,
            "unsupported backend URL",
        ),
        (
            "Listen 80\nProxyPass /x fcgi://h:1/ bogus=1\n",
            2,
            "unknown parameter 'bogus'",
        ),
        (
            "Listen 80\n\nProxyFCGIBackendType PHP\n",
            3,
            "ProxyFCGIBackendType requires one of the following arguments: 'GENERIC', 'FPM'",
        ),
        (
            "Listen 80\n<Location /x>\nProxyPass fcgi://h/\n",
            2,
            "never closed",
        ),
        ("Listen 80\n</Location>\n", 2, "without matching"),
        ("Listen 80\n<Location /a>\n</Proxy>\n", 3, "does not close"),
        (
            "Listen 80\nProxyPass x fcgi://h/\n",
            2,
            "must start with '/'",
        ),
        ("Listen 80\nProxyPass /x\n", 2, "takes at least 2"),
        (
            "Listen 80\nProxyFCGISetEnvIf \"-n reqenv('X')\" Y\n",
            2,
            "unsupported ProxyFCGISetEnvIf condition",
        ),
        (
            "Listen 80\nProxyFCGISetEnvIf true !X value\n",
            2,
            "takes no value",
        ),
        (
            "Listen 80\nProxyPassMatch \"^/(\" fcgi://h/\n",
            2,
            "invalid regular expression",
        ),
        (
            "Listen 80\n<Proxy balancer://p>\nBalancerMember fcgi://a:1 loadfactor=101\n</Proxy>\n",
            3,
            "loadfactor",
        ),
        (
            "Listen 80\n<Proxy balancer://p>\nProxySet max=3\n</Proxy>\n",
            3,
            "balancer parameters",
        ),
        (
            "Listen 80\nProxyPass /x fcgi://$1:9000/\n",
            2,
            "never in host or port",
        ),
        (
            "Listen 80\n<Location /a>\nDocumentRoot /x\n</Location>\n",
            3,
            "not allowed here",
        ),
        ("Listen 80\nProxyPass /x \"fcgi://h/\n", 2, "unterminated"),
        ("Listen nope\n", 1, "invalid listen address"),
        ("Listen 80\nSetEnvIf Request_URI\n", 2, "takes at least 3"),
        ("Listen 80\nTimeout soon\n", 2, "invalid duration"),
    ];
    for (text, line, needle) in cases {
        let e = import_err(text);
        assert_eq!(e.file.as_deref(), Some("bad.conf"), "{text}");
        assert_eq!(e.line, Some(*line), "{text} → {e}");
        assert!(e.message.contains(needle), "{text} → {e}");
        assert!(
            e.to_string().starts_with(&format!("bad.conf:{line}: ")),
            "{e}"
        );
    }
}

#[test]
fn validation_errors_after_import_name_the_route_line() {
    let (cfg, _) = import("Listen 80\n\nProxyPass /x/ balancer://missing/\n");
    // The importer creates balancers on use; an empty one is refused by validate.
    let e = cfg.validate().unwrap_err();
    assert!(e.message.contains("has no members"), "{e}");
    let (cfg, _) = import("ProxyPass /x/ fcgi://h:1/\n");
    let e = cfg.validate().unwrap_err();
    assert!(e.message.contains("no listen address"), "{e}");
}

#[test]
fn trailing_slash_mismatch_warns() {
    let (cfg, _) = import("Listen 80\nProxyPass /t/ fcgi://127.0.0.1:27001\n");
    let w = cfg.validate().unwrap();
    assert!(
        w.iter()
            .any(|w| w.message.contains("ends with '/'") && w.line == Some(2)),
        "{w:#?}"
    );
}

#[test]
fn error_log_and_log_level_are_imported() {
    let text = "ServerRoot /srv/site\nListen 80\nErrorLog logs/error.log\n\
        LogLevel info ssl:debug\nLogLevel warn\n\
        <VirtualHost *:80>\nServerName a.test\nErrorLog /var/log/a-error.log\n</VirtualHost>\n";
    let (cfg, warnings) = apache::parse(text, "/etc/site/httpd.conf").unwrap();
    let e = cfg.error_log.as_ref().expect("an error log");
    // Relative to ServerRoot, as Apache reads it; the last LogLevel wins.
    assert_eq!(e.path.as_deref(), Some("/srv/site/logs/error.log"));
    assert_eq!(e.level.as_deref(), Some("warn"));
    let said = |what: &str| warnings.iter().any(|w| w.to_string().contains(what));
    assert!(said("ssl:debug ignored"), "{warnings:?}");
    assert!(said("virtual host ignored"), "{warnings:?}");
    // Not a level: refused with the line.
    let err = apache::parse("Listen 80\nLogLevel loud\n", "t.conf").unwrap_err();
    assert!(err.to_string().contains("loud"), "{err}");
    // A piped error log is not a file.
    let (cfg, warnings) =
        apache::parse("Listen 80\nErrorLog \"|/usr/bin/logger\"\n", "t.conf").unwrap();
    assert!(cfg.error_log.is_none());
    assert!(!warnings.is_empty());
}
