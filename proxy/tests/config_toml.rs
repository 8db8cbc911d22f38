//! The TOML front end: the documented example, round trips, unknown keys, error positions,
//! validation and the check-config summary.

use std::time::Duration;

use fcgi_proxy::config::{BackendType, Config, ConfigError, FlushPackets, LbMethod, Target};

fn example_text() -> String {
    let path = format!(
        "{}/tests/config_fixtures/example.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "proxy.toml")
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error for:\n{text}\ngot {c:#?}"),
        Err(e) => e,
    }
}

const MINIMAL: &str =
    "listen = [\"8080\"]\n[[route]]\npath = \"/\"\ntarget = \"fcgi://127.0.0.1:9000/\"\n";

#[test]
fn example_loads_with_every_setting() {
    let cfg = parse(&example_text()).unwrap();
    assert_eq!(cfg.validate().unwrap(), vec![]);
    assert_eq!(cfg.listen.len(), 2);
    assert_eq!(cfg.listen_addrs().unwrap()[1].to_string(), "[::1]:8080");
    assert_eq!(cfg.timeouts.backend_connect, Some(Duration::from_secs(5)));
    assert_eq!(cfg.routes.len(), 4);
    assert_eq!(cfg.routes[0].target, Target::Exclude);
    let r = &cfg.routes[1];
    assert_eq!(r.origin.as_ref().unwrap().line, 52);
    assert_eq!(r.pathinfo.as_deref(), Some("first-dot"));
    assert_eq!(r.backend_type, Some(BackendType::Generic));
    assert_eq!(r.worker.max, Some(10));
    assert_eq!(r.worker.acquire, Some(Duration::from_millis(500)));
    assert_eq!(r.worker.flush_packets, FlushPackets::On);
    assert_eq!(r.fcgi_setenvif.len(), 2);
    assert!(cfg.routes[2].regex.is_some());
    let b = &cfg.balancers[0];
    assert_eq!(b.lbmethod, LbMethod::Byrequests);
    assert_eq!(b.members.len(), 3);
    assert_eq!(b.members[0].loadfactor.lbfactor(), 7000);
    assert!(b.members[2].status.hot_standby);
    assert_eq!(b.members[2].lbset, 1);
}

#[test]
fn round_trip_through_serialize() {
    let mut cfg = parse(&example_text()).unwrap();
    let text = toml::to_string(&cfg).unwrap();
    let mut again = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for c in [&mut cfg, &mut again] {
        c.origin = None;
        for r in &mut c.routes {
            r.origin = None;
        }
        for b in &mut c.balancers {
            b.origin = None;
        }
    }
    assert_eq!(cfg, again);
}

#[test]
fn defaults() {
    let cfg = parse(MINIMAL).unwrap();
    assert_eq!(cfg.document_root, "/var/www/html");
    assert_eq!(cfg.backend_type, BackendType::Fpm);
    assert!(!cfg.pass_authorization);
    assert!(cfg.merge_slashes);
    let w = cfg.routes[0].worker.effective(&cfg);
    assert!(w.reuse, "reuse is on by default");
    assert_eq!(w.max, 256);
    assert_eq!(w.io_timeout, Duration::from_secs(60));
    assert_eq!(w.connect_timeout, Duration::from_secs(60));
    assert_eq!(w.acquire, None);
    assert_eq!(w.retry, Duration::from_secs(60));
    assert_eq!(cfg.limits.max_body_buffer, 8 * 1024 * 1024);
    assert_eq!(cfg.workers, None, "one serving thread per core");
    assert!(cfg.worker_threads() >= 1);
    let cfg = parse(&format!("workers = 3\n{MINIMAL}")).unwrap();
    assert_eq!(cfg.worker_threads(), 3);
}

#[test]
fn durations_accept_strings_and_numbers() {
    let cfg = parse(&format!(
        "{MINIMAL}worker.timeout = 5\nworker.acquire = 0.25\nworker.ttl = \"2m\"\nworker.retry = \"1500ms\"\n"
    ))
    .unwrap();
    let w = &cfg.routes[0].worker;
    assert_eq!(w.timeout, Some(Duration::from_secs(5)));
    assert_eq!(w.acquire, Some(Duration::from_millis(250)));
    assert_eq!(w.ttl, Some(Duration::from_secs(120)));
    assert_eq!(w.retry, Some(Duration::from_millis(1500)));
    let e = err(&format!("{MINIMAL}worker.timeout = \"soon\"\n"));
    assert_eq!((e.line, e.column), (Some(5), Some(18)), "{e}");
    assert!(e.message.contains("invalid duration"), "{e}");
}

#[test]
fn unknown_keys_are_rejected_with_position() {
    let cases = [
        (
            "listen = [\"80\"]\nlisten_port = 80\n",
            2,
            "unknown field `listen_port`",
        ),
        (
            "listen = [\"80\"]\n[[route]]\npath = \"/\"\ntarget = \"fcgi://h:1/\"\nreuse = false\n",
            5,
            "unknown field `reuse`",
        ),
        (
            "listen = [\"80\"]\n[[route]]\npath = \"/\"\ntarget = \"fcgi://h:1/\"\nworker.maxx = 3\n",
            5,
            "unknown field `maxx`",
        ),
        (
            "listen = [\"80\"]\n[timeouts]\nheader = \"5s\"\n",
            3,
            "unknown field `header`",
        ),
        (
            "listen = [\"80\"]\n[[balancer]]\nname = \"p\"\n[[balancer.member]]\nurl = \"fcgi://h:1\"\nweight = 3\n",
            6,
            "unknown field `weight`",
        ),
        (
            "listen = [\"80\"]\n[[setenvif]]\nattribute = \"x\"\nregex = \".\"\nset = [\"A\"]\nfoo = 1\n",
            6,
            "unknown field `foo`",
        ),
    ];
    for (text, line, needle) in cases {
        let e = err(text);
        assert_eq!(e.file.as_deref(), Some("proxy.toml"));
        assert_eq!(e.line, Some(line), "{text} → {e}");
        assert!(e.column.is_some(), "{e}");
        assert!(e.message.contains(needle), "{text} → {e}");
        assert!(
            e.to_string().starts_with(&format!("proxy.toml:{line}:")),
            "{e}"
        );
    }
}

#[test]
fn bad_values_are_reported_at_their_line() {
    let cases = [
        (
            "listen = [\"80\"]\n[[route]]\npath = \"/\"\ntarget = \"http://h/\"\n",
            4,
            "unsupported backend URL",
        ),
        (
            "listen = [\"80\"]\n[[route]]\npath = \"/\"\ntarget = \"fcgi://h:x/\"\n",
            4,
            "invalid port",
        ),
        (
            "listen = [\"80\"]\n[[route]]\nregex = \"(\"\ntarget = \"fcgi://h/\"\n",
            3,
            "invalid regular expression",
        ),
        (
            "listen = [\"80\"]\n[[balancer]]\nname = \"p\"\nmember = [{ url = \"fcgi://h:1\", loadfactor = 101 }]\n",
            4,
            "loadfactor",
        ),
        (
            "listen = [\"80\"]\n[[balancer]]\nname = \"p\"\nmember = [{ url = \"fcgi://h:1\", status = \"+X\" }]\n",
            4,
            "unknown status flag",
        ),
        (
            "listen = [\"80\"]\nfcgi_setenvif = [{ condition = \"-n reqenv('X')\", set = \"Y\" }]\n",
            2,
            "unsupported ProxyFCGISetEnvIf condition",
        ),
        (
            "listen = [\"80\"]\nfcgi_setenvif = [{ condition = \"true\", set = \"Y\", unset = \"Z\" }]\n",
            2,
            "exactly one of 'set' and 'unset'",
        ),
        (
            "listen = [\"80\"]\nbackend_type = \"php\"\n",
            2,
            "unknown variant",
        ),
        (
            "listen = [\"80\"]\nallow_encoded_slashes = \"maybe\"\n",
            2,
            "unknown variant",
        ),
        ("listen = [\"80\"\n", 2, "invalid array"),
    ];
    for (text, line, needle) in cases {
        let e = err(text);
        assert_eq!(e.line, Some(line), "{text} → {e}");
        assert!(e.message.contains(needle), "{text} → {e}");
    }
}

#[test]
fn validation_errors() {
    let base = "listen = [\"80\"]\n";
    let cases = [
        (
            format!("{base}\n[[route]]\npath = \"/\"\ntarget = \"balancer://nope/\"\n"),
            Some(3),
            "unknown balancer 'nope'",
        ),
        (
            format!("{base}[[route]]\npath = \"/\"\nregex = \"^/\"\ntarget = \"fcgi://h/\"\n"),
            Some(2),
            "either path or regex",
        ),
        (
            format!("{base}[[route]]\ntarget = \"fcgi://h/\"\n"),
            Some(2),
            "give a path",
        ),
        (
            format!("{base}[[route]]\npath = \"x\"\ntarget = \"fcgi://h/\"\n"),
            Some(2),
            "must start with '/'",
        ),
        (
            format!("{base}[[route]]\npath = \"/\"\ntarget = \"fcgi://h/\"\nworker.max = 0\n"),
            Some(2),
            "max must be at least 1",
        ),
        (
            format!(
                "{base}[[balancer]]\nname = \"p\"\nmember = [{{ url = \"fcgi://h:1\", lbset = 100 }}]\n"
            ),
            Some(2),
            "lbset must be 0..99",
        ),
        (
            format!("{base}[[balancer]]\nname = \"p\"\n"),
            Some(2),
            "has no members",
        ),
        (
            format!(
                "{base}[[balancer]]\nname = \"p\"\nmember = [{{ url = \"fcgi://h:1\" }}]\n[[balancer]]\nname = \"P\"\nmember = [{{ url = \"fcgi://h:2\" }}]\n"
            ),
            Some(5),
            "defined twice",
        ),
        (
            format!(
                "{base}[[balancer]]\nname = \"p\"\nsticky_session = \"R\"\nmember = [{{ url = \"fcgi://h:1\", redirect = \"zz\" }}]\n"
            ),
            Some(2),
            "redirect 'zz' names no member route",
        ),
        (
            format!(
                "{base}[[balancer]]\nname = \"p\"\nmember = [{{ url = \"fcgi://h:1\", route = \"a\", redirect = \"a\" }}]\n"
            ),
            Some(2),
            "redirect 'a' has no effect without sticky_session (stickysession)",
        ),
        (
            format!(
                "{base}[[balancer]]\nname = \"p\"\nnofailover = true\nmember = [{{ url = \"fcgi://h:1\" }}]\n"
            ),
            Some(2),
            "nofailover has no effect without sticky_session",
        ),
        (
            format!(
                "{base}[[balancer]]\nname = \"p\"\nsticky_session = \"JSESSIONID|\"\nmember = [{{ url = \"fcgi://h:1\" }}]\n"
            ),
            Some(2),
            "sticky_session needs a cookie name",
        ),
        (
            format!(
                "{base}[[route]]\npath = \"/\"\ntarget = \"fcgi://h/\"\nworker.flush_packets = \"auto\"\n"
            ),
            Some(2),
            "flush_packets = \"auto\" (flushpackets) is not supported: response data is written \
             to the client as soon as it arrives from the backend",
        ),
        (
            format!(
                "{base}[[balancer]]\nname = \"p\"\nmember = [{{ url = \"fcgi://h:1\", worker.flush_packets = \"off\" }}]\n"
            ),
            Some(2),
            "flush_packets = \"off\" (flushpackets) is not supported",
        ),
        (
            format!(
                "{base}[[route]]\npath = \"/\"\ntarget = \"fcgi://h/\"\nworker.flush_wait = \"10ms\"\n"
            ),
            Some(2),
            "flush_wait (flushwait) is not supported: it applies only to flushpackets=auto",
        ),
        (
            format!("{base}[[balancer]]\nname = \"p\"\nmember = [{{ url = \"fcgi://h:1/$1\" }}]\n"),
            Some(2),
            "'$' is not allowed",
        ),
        ("listen = []\n".to_string(), None, "no listen address"),
        (
            "listen = [\"localhost:80\"]\n".to_string(),
            None,
            "invalid listen address",
        ),
        (
            format!("{base}document_root = \"relative\"\n"),
            None,
            "absolute",
        ),
        (
            format!("{base}server_name = \"a b\"\n"),
            None,
            "invalid server_name",
        ),
        (
            format!("{base}workers = 0\n"),
            None,
            "workers must be at least 1",
        ),
    ];
    for (text, line, needle) in cases {
        let e = err(&text);
        assert_eq!(e.line, line, "{text} → {e}");
        assert!(e.message.contains(needle), "{text} → {e}");
    }
}

#[test]
fn sticky_session_settings() {
    let cfg = parse(
        "listen = [\"80\"]\n\
         [[route]]\npath = \"/\"\ntarget = \"balancer://p/\"\n\
         [[balancer]]\nname = \"p\"\nsticky_session = \"JSESSIONID|jsessionid\"\n\
         sticky_session_sep = \"!\"\nscolon_path_delim = true\nnofailover = true\n\
         member = [{ url = \"fcgi://h:1\", route = \"a\", redirect = \"b\" }, \
                   { url = \"fcgi://h:2\", route = \"b\", status = \"+R\" }]\n",
    )
    .unwrap();
    let b = &cfg.balancers[0];
    assert_eq!(b.sticky_names(), Some(("JSESSIONID", "jsessionid")));
    assert_eq!(b.sticky_session_sep.0, Some('!'));
    assert!(b.scolon_path_delim && b.nofailover);
    assert!(b.members[1].status.hot_spare && !b.members[1].status.hot_standby);
    let d = cfg.describe();
    assert!(
        d.contains(
            "sticky sessions: cookie JSESSIONID, URL parameter jsessionid (ended by ';' too), \
             route after the first '!' of the value, nofailover on"
        ),
        "{d}"
    );
    assert!(d.contains("route a, redirect b"), "{d}");
    assert!(d.contains("status +R, route b"), "{d}");
    let off = parse(
        "listen = [\"80\"]\n[[route]]\npath = \"/\"\ntarget = \"balancer://p/\"\n\
         [[balancer]]\nname = \"p\"\nsticky_session = \"R\"\nsticky_session_sep = \"off\"\n\
         timeout = \"2s\"\nmember = [{ url = \"fcgi://h:1\", route = \"a\" }]\n",
    )
    .unwrap();
    assert_eq!(off.balancers[0].sticky_session_sep.0, None);
    let d = off.describe();
    assert!(
        d.contains("cookie R, URL parameter R, route: the whole value"),
        "{d}"
    );
    assert!(d.contains("timeout 2s (wait for a usable member)"), "{d}");
    let e = err(
        "listen = [\"80\"]\n[[balancer]]\nname = \"p\"\nsticky_session_sep = \"ab\"\n\
         member = [{ url = \"fcgi://h:1\" }]\n",
    );
    assert!(e.message.contains("a single character or off"), "{e}");
}

#[test]
fn warnings() {
    let cfg = parse(
        "listen = [\"80\"]\n\
         [[route]]\npath = \"/t/\"\ntarget = \"fcgi://127.0.0.1:27001\"\n\
         [[route]]\npath = \"/p/\"\ntarget = \"fcgi://h/x$1/\"\n\
         [[route]]\npath = \"/q/\"\ntarget = \"fcgi://h/\"\npathinfo = \"bogus\"\n\
         [[balancer]]\nname = \"unused\"\nmember = [{ url = \"fcgi://h:1\", status = \"D\" }]\n",
    )
    .unwrap();
    let w: Vec<String> = cfg
        .validate()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        w.iter()
            .any(|m| m.starts_with("proxy.toml:2: warning:") && m.contains("does not")),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|m| m.contains("'$' in the target of a prefix route")),
        "{w:#?}"
    );
    assert!(w.iter().any(|m| m.contains("pathinfo 'bogus'")), "{w:#?}");
    assert!(
        w.iter().any(|m| m.contains("every member is disabled")),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|m| m.contains("'unused' is not used")),
        "{w:#?}"
    );
}

#[test]
fn describe_shows_effective_worker_settings() {
    let cfg = parse(&example_text()).unwrap();
    let d = cfg.describe();
    assert!(
        d.contains("2. prefix /myapp/ -> fcgi://127.0.0.1:9000/var/www/myapp/  (proxy.toml:52)"),
        "{d}"
    );
    assert!(
        d.contains("reuse on (KEEP_CONN), max 10 (configured), timeout 30s, connect 2s, acquire 500ms, retry 60s, ttl 30s"),
        "{d}"
    );
    assert!(
        d.contains(
            "reuse on (KEEP_CONN), max 20 (configured), timeout 60s, connect 5s, acquire wait"
        ),
        "{d}"
    );
    assert!(d.contains("1. prefix /static/ -> !"), "{d}");
    assert!(d.contains("not proxied"), "{d}");
    assert!(d.contains("backend unix /run/php/php8.2-fpm.sock"), "{d}");
    assert!(
        d.contains("fcgi://10.0.0.3:9000 [tcp 10.0.0.3:9000] loadfactor 1, lbset 1, status +H"),
        "{d}"
    );
    assert_eq!(cfg.to_string(), d);
    insta::assert_snapshot!("describe_example", d);
    let off = parse(&format!("{MINIMAL}worker.reuse = false\n")).unwrap();
    assert!(
        off.describe()
            .contains("reuse off (one connection per request), max 25")
    );
}

/// `[[site]]`: a PHP site in a few lines, as sections the Apache front end would give.
#[test]
fn a_site_table_serves_php_with_denials() {
    use fcgi_proxy::config::site::PathKind;
    use fcgi_proxy::site::{Decision, Fs, decide};
    struct Disk;
    impl Fs for Disk {
        fn kind(&self, path: &[u8]) -> PathKind {
            match path {
                b"/srv" | b"/srv/wiki" | b"/srv/wiki/inc" | b"/srv/wiki/lib" => PathKind::Directory,
                b"/srv/wiki/doku.php"
                | b"/srv/wiki/index.php"
                | b"/srv/wiki/inc/init.php"
                | b"/srv/wiki/.htaccess"
                | b"/srv/wiki/lib/a.css"
                | b"/srv/wiki/VERSION" => PathKind::File,
                _ => PathKind::Missing,
            }
        }
    }
    let text = r#"listen = ["127.0.0.1:8080"]
[[site]]
prefix = "/wiki"
root = "/srv/wiki"
index = ["index.php"]
try_files = "/doku.php"
php = "unix:/run/php/php8.2-fpm.sock"
deny = ["/inc/", ".ht*", "VERSION"]
allow = ["127.0.0.0/8"]
"#;
    let cfg = parse(text).unwrap();
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let far: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let d = |u: &str, ip| decide(&cfg, u.as_bytes(), ip, lo, &Disk);
    let php = |u: &str| match d(u, lo) {
        Decision::Handler(h) => String::from_utf8(h.filename).unwrap(),
        other => panic!("{u}: {other:?}"),
    };
    assert_eq!(php("/wiki/doku.php"), "/srv/wiki/doku.php");
    assert_eq!(php("/wiki/"), "/srv/wiki/index.php", "index");
    assert_eq!(php("/wiki/no/such/page"), "/srv/wiki/doku.php", "try_files");
    assert_eq!(
        d("/wiki/lib/a.css", lo),
        Decision::File(b"/srv/wiki/lib/a.css".to_vec())
    );
    for denied in [
        "/wiki/inc/init.php",
        "/wiki/inc/",
        "/wiki/.htaccess",
        "/wiki/VERSION",
    ] {
        assert_eq!(d(denied, lo), Decision::Status(403), "{denied}");
    }
    assert_eq!(d("/wiki/doku.php", far), Decision::Status(403), "allow");
    assert_eq!(
        d("/etc/passwd", lo),
        Decision::Status(403),
        "outside the root"
    );
    let shown = cfg.describe();
    assert!(
        shown.contains("<Directory /srv/wiki/>") && shown.contains("require all denied"),
        "{shown}"
    );
    // It serializes back to the same table.
    let again = Config::from_toml_str(&toml::to_string(&cfg).unwrap(), "again.toml").unwrap();
    assert_eq!(again.sites, cfg.sites);
    // Mistakes name the table's line.
    for bad in [
        "root = \"srv\"",
        "root = \"/srv\"\ndeny = [\"a/b\"]",
        "root = \"/srv\"\nphp = \"http://x\"",
        "root = \"/srv\"\nallow = [\"nowhere\"]",
        "root = \"/srv\"\nfrobnicate = 1",
    ] {
        let e = err(&format!("listen = [\"8080\"]\n\n[[site]]\n{bad}\n"));
        assert_eq!(
            e.line,
            Some(if bad.contains("frobnicate") { 5 } else { 3 }),
            "{bad}: {e}"
        );
    }
}
