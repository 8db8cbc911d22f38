//! Apache configurations as Apache reads them: includes, definitions, `<IfModule>` by the
//! modules loaded, virtual hosts, filesystem sections and handlers, access control (refused
//! unless implemented), on `config_fixtures/site/` (a Debian-shaped tree) and on a copy of this
//! machine's `/etc/apache2`.

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use fcgi_proxy::config::site::{Handler, PathKind};
use fcgi_proxy::config::{Config, ConfigError, Warning, apache};
use fcgi_proxy::site::{Decision, Fs, HandlerTarget, decide};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_fixtures/site")
}

fn read(path: &Path, defines: &[(&str, &str)]) -> Result<(Config, Vec<Warning>), ConfigError> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let defines: Vec<(String, String)> = defines
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    apache::parse_with(&text, &path.display().to_string(), &defines)
}

/// A configuration text in its own directory (the default ServerRoot), with extra files.
fn in_dir(main: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let conf = dir.path().join("httpd.conf");
    std::fs::write(&conf, main).unwrap();
    (dir, conf)
}

/// A disk for [`decide`]: these paths exist (directories end with '/').
struct Disk(Vec<String>);

impl Fs for Disk {
    fn kind(&self, path: &[u8]) -> PathKind {
        let p = String::from_utf8_lossy(path);
        let p = p.trim_end_matches('/');
        if self.0.iter().any(|x| x == p) {
            PathKind::File
        } else if p.is_empty() || self.0.iter().any(|x| x.starts_with(&format!("{p}/"))) {
            PathKind::Directory
        } else {
            PathKind::Missing
        }
    }
}

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn handler(d: Decision) -> HandlerTarget {
    match d {
        Decision::Handler(t) => *t,
        other => panic!("expected the handler, got {other:?}"),
    }
}

#[test]
fn debian_shaped_tree_is_read_as_apache_reads_it() {
    let conf = fixture_dir().join("apache2.conf");
    let (cfg, warnings) = read(&conf, &[("SITE_ROOT", "/srv/t")]).unwrap();
    // ports.conf through Include; Listen 8443 is in <IfModule ssl_module>, not loaded.
    assert_eq!(cfg.listen, vec!["8080"]);
    // envvars: ${APACHE_LOG_DIR} and friends are defined, so no warning about them.
    assert!(
        !warnings
            .iter()
            .any(|w| w.message.contains("is not defined")),
        "{warnings:#?}"
    );
    // mods-enabled/dir.conf, inside <IfModule mod_dir.c> with dir_module loaded.
    assert_eq!(
        cfg.site.base.directory_index.as_deref(),
        Some(&["index.html".to_string(), "index.php".to_string()][..])
    );
    // Timeout 30 from the main file.
    assert_eq!(cfg.timeouts.backend_io, std::time::Duration::from_secs(30));
    // sites-enabled/*.conf in name order; README is not read.
    assert_eq!(cfg.vhosts.len(), 2);
    let (default, blog) = (&cfg.vhosts[0], &cfg.vhosts[1]);
    assert!(default.names.is_empty());
    assert_eq!(default.config.document_root, "/srv/t/default");
    assert_eq!(
        default.config.server_admin.as_deref(),
        Some("webmaster@localhost")
    );
    assert_eq!(blog.names, vec!["blog.example", "*.blog.example"]);
    assert_eq!(blog.config.document_root, "/srv/t/blog");
    assert!(blog.is_named(b"www.blog.example") && !blog.is_named(b"blog.example.org"));
    assert_eq!(blog.config.routes.len(), 1);
    assert_eq!(
        blog.config.routes[0].target.as_str(),
        "fcgi://127.0.0.1:9000/api/",
        "PHP_PORT defaults through <IfDefine !PHP_PORT>"
    );
    assert!(
        default.config.routes.is_empty(),
        "ProxyPass stays in its own host"
    );
    // The php handler from conf-enabled/, decided by LoadModule proxy_fcgi_module.
    let h = blog
        .config
        .site
        .sections
        .iter()
        .find_map(|s| match &s.settings.handler {
            Some(Handler::Proxy { url, defined, .. }) => Some((url.raw.clone(), *defined)),
            _ => None,
        })
        .expect("the php handler");
    assert_eq!(
        h,
        ("fcgi://127.0.0.1:9000".to_string(), false),
        "a ProxyPass to a path of the same backend does not cover the handler's files: \
         Apache's default worker"
    );
    let d = handler(decide(
        &blog.config,
        b"/a/index.php",
        LOOPBACK,
        LOOPBACK,
        &Disk(vec!["/srv/t/blog/a/index.php".into()]),
    ));
    assert_eq!(d.filename, b"/srv/t/blog/a/index.php");
    assert_eq!(d.script_uri, b"/a/index.php");
    cfg.validate().unwrap();
}

#[test]
fn sections_merge_and_decide_like_apache() {
    let conf = fixture_dir().join("apache2.conf");
    let (cfg, _) = read(&conf, &[("SITE_ROOT", "/srv/t"), ("PHP_PORT", "9123")]).unwrap();
    let blog = &cfg.vhosts[1].config;
    let disk = Disk(vec![
        "/srv/t/blog/index.php".into(),
        "/srv/t/blog/.htaccess".into(),
        "/srv/t/blog/src.phps".into(),
        "/srv/t/blog/sub/index.php".into(),
        "/srv/t/blog/readme.txt".into(),
        "/srv/t/shared/x.php".into(),
        "/etc/passwd".into(),
    ]);
    let at = |uri: &str| decide(blog, uri.as_bytes(), LOOPBACK, LOOPBACK, &disk);
    let d = handler(at("/index.php/extra/path"));
    assert_eq!(d.worker.raw, "fcgi://127.0.0.1:9123", "-D PHP_PORT=9123");
    assert_eq!(d.path_info, b"/extra/path");
    assert_eq!(d.context_prefix, b"");
    // DirectoryIndex: the first that exists (index.html does not).
    let d = handler(at("/sub/"));
    assert_eq!(d.filename, b"/srv/t/blog/sub/index.php");
    assert_eq!(d.script_uri, b"/sub/index.php");
    assert_eq!(at("/sub"), Decision::Redirect(b"/sub/".to_vec()));
    // A missing .php file still goes to the handler (no <If -f>), its path info kept.
    let d = handler(at("/nope.php/x"));
    assert_eq!(
        (d.filename.as_slice(), d.path_info.as_slice()),
        (&b"/srv/t/blog/nope.php"[..], &b"/x"[..])
    );
    // Alias: CONTEXT_PREFIX and CONTEXT_DOCUMENT_ROOT are the alias's.
    let d = handler(at("/static/x.php"));
    assert_eq!(d.filename, b"/srv/t/shared/x.php");
    assert_eq!(d.context_prefix, b"/static/");
    assert_eq!(d.context_document_root, b"/srv/t/shared/");
    // Require all denied: <FilesMatch "^\.ht">, raw PHP sources, a name that is only ".php".
    assert_eq!(at("/.htaccess"), Decision::Status(403));
    assert_eq!(at("/src.phps"), Decision::Status(403));
    assert_eq!(at("/.php"), Decision::Status(403));
    // Files no handler claims, and files that are not there.
    assert_eq!(
        at("/readme.txt"),
        Decision::File(b"/srv/t/blog/readme.txt".to_vec())
    );
    assert_eq!(
        at("/readme.txt/x"),
        Decision::Status(404),
        "no path info for files"
    );
    assert_eq!(at("/missing.txt"), Decision::Status(404));
    // An Alias out of the granted tree is denied by <Directory />.
    let mut c = blog.clone();
    c.site.aliases.insert(
        0,
        fcgi_proxy::config::site::Alias {
            from: fcgi_proxy::config::site::Matcher::Path("/etc/".into()),
            to: "/etc/".into(),
            origin: Default::default(),
        },
    );
    assert_eq!(
        decide(&c, b"/etc/passwd", LOOPBACK, LOOPBACK, &disk),
        Decision::Status(403)
    );
}

#[test]
fn includes_defines_and_modules() {
    let (_d, conf) = in_dir(
        "Listen 80\n\
         Define DOC /srv/a\n\
         DocumentRoot ${DOC}\n\
         Include conf.d/*.conf\n\
         IncludeOptional none.d/*.conf\n\
         LoadModule proxy_module modules/mod_proxy.so\n\
         <IfModule mod_proxy.c>\n ProxyPass /p fcgi://h:1/\n</IfModule>\n\
         <IfModule proxy_fcgi_module>\n ProxyPass /q fcgi://h:1/\n</IfModule>\n\
         <IfModule !proxy_fcgi_module>\n ProxyPass /r fcgi://h:1/\n</IfModule>\n\
         <IfDefine X>\n ProxyPass /x fcgi://h:1/\n Include does-not-exist.conf\n</IfDefine>\n\
         ServerAdmin ${NOPE}\n",
        &[
            ("conf.d/b.conf", "ProxyPass /b fcgi://h:1/\n"),
            ("conf.d/a.conf", "ProxyPass /a fcgi://h:1/\nInclude sub\n"),
            ("conf.d/c.txt", "ProxyPass /txt fcgi://h:1/\n"),
            ("sub/one", "ProxyPass /sub1 fcgi://h:1/\n"),
        ],
    );
    let (cfg, w) = read(&conf, &[]).unwrap();
    let paths: Vec<String> = cfg.routes.iter().filter_map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        vec!["/a", "/sub1", "/b", "/p", "/r"],
        "sorted includes; modules as loaded"
    );
    assert_eq!(cfg.document_root, "/srv/a");
    let undefined = w
        .iter()
        .find(|w| w.message.contains("${NOPE} is not defined"))
        .expect("a warning for ${NOPE}");
    assert_eq!(undefined.line, Some(20));
    // -D X turns <IfDefine X> on, and then its Include must exist.
    let e = read(&conf, &[("X", "")]).unwrap_err();
    assert!(e.to_string().contains("does-not-exist.conf"), "{e}");
    assert_eq!(e.line, Some(18));
    // An Include that matches nothing is an error; a loop is stopped.
    let (_d, conf) = in_dir("Listen 80\nInclude conf.d/*.conf\n", &[]);
    let e = read(&conf, &[]).unwrap_err();
    assert!(e.to_string().contains("httpd.conf:2:"), "{e}");
    let (_d, conf) = in_dir(
        "Listen 80\nInclude loop.conf\n",
        &[("loop.conf", "Include loop.conf\n")],
    );
    let e = read(&conf, &[]).unwrap_err();
    assert!(e.to_string().contains("levels of includes"), "{e}");
    // A section left open in an included file names that file.
    let (_d, conf) = in_dir(
        "Listen 80\nInclude open.conf\n",
        &[("open.conf", "<IfModule x>\nProxyPass /a fcgi://h:1/\n")],
    );
    let e = read(&conf, &[]).unwrap_err();
    assert!(e.to_string().contains("open.conf:1:"), "{e}");
}

#[test]
fn access_control_that_is_not_implemented_is_refused_with_its_place() {
    for (text, line) in [
        ("<Directory /srv>\n  Require valid-user\n</Directory>\n", 3),
        ("<Location /a>\n  Require env X\n</Location>\n", 3),
        (
            "<Directory /srv>\n  Allow from env=let_me_in\n</Directory>\n",
            3,
        ),
        ("<Location /adm>\n  AuthType Basic\n</Location>\n", 3),
        ("<Location /adm>\n  AuthUserFile /x\n</Location>\n", 3),
        (
            "<Location /a>\n  <Limit POST>\n  </Limit>\n</Location>\n",
            3,
        ),
        (
            "<Directory /srv>\n  <RequireAll>\n  Require expr true\n  </RequireAll>\n</Directory>\n",
            4,
        ),
        ("<Proxy *>\n  Require all denied\n</Proxy>\n", 3),
        // Inside a section fcgi-proxy does not evaluate: still refused.
        (
            "<If \"%{HTTP_HOST} == 'a'\">\n  Require all denied\n</If>\n",
            3,
        ),
    ] {
        let text = format!("Listen 80\n{text}");
        let e = apache::parse(&text, "a.conf").unwrap_err();
        assert_eq!(
            (e.file.as_deref(), e.line),
            (Some("a.conf"), Some(line)),
            "{text}: {e}"
        );
        assert!(e.message.contains("refusing to start"), "{e}");
    }
    // The forms implemented load; access control in a module that is not loaded is not read.
    let ok = "Listen 80\nLoadModule authz_core_module m.so\n\
              <Directory /srv>\n Require all granted\n</Directory>\n\
              <Location /s>\n Require local\n</Location>\n\
              <Files \".ht*\">\n Require all denied\n</Files>\n\
              <Proxy *>\n Require all granted\n</Proxy>\n\
              <IfModule mod_auth_basic.c>\n <Location /adm>\n  AuthType Basic\n  Require valid-user\n </Location>\n</IfModule>\n";
    let (cfg, _) = apache::parse(ok, "ok.conf").unwrap();
    let access: Vec<Option<String>> = cfg
        .site
        .sections
        .iter()
        .map(|s| s.settings.describe_access())
        .collect();
    assert_eq!(
        access,
        vec![
            Some("require all granted".to_owned()),
            Some("require local".to_owned()),
            Some("require all denied".to_owned())
        ]
    );
    let mut d = cfg.clone();
    d.document_root = "/srv".into();
    let disk = Disk(vec!["/srv/.htpasswd".into()]);
    assert_eq!(
        decide(&d, b"/.htpasswd", LOOPBACK, LOOPBACK, &disk),
        Decision::Status(403)
    );
    let far: IpAddr = "192.0.2.1".parse().unwrap();
    let local: IpAddr = "192.0.2.9".parse().unwrap();
    assert_eq!(
        decide(&d, b"/s", far, local, &disk),
        Decision::Status(403),
        "Require local"
    );
    assert_eq!(
        decide(&d, b"/s", local, local, &disk),
        Decision::Status(404)
    );
}

#[test]
fn htaccess_files_are_read_where_allow_override_lets_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir_all(root.join("app/inc")).unwrap();
    let text = format!(
        "Listen 80\nLoadModule authz_core_module m.so\nLoadModule alias_module m.so\n\
         DocumentRoot {0}\n<Directory {0}/app>\n AllowOverride All\n</Directory>\n",
        root.display()
    );
    let r = root.display().to_string();
    let disk = Disk(vec![
        format!("{r}/app/index.php"),
        format!("{r}/app/VERSION"),
        format!("{r}/app/inc/x.txt"),
        format!("{r}/app/.git/config"),
        format!("{r}/VERSION"),
    ]);
    let cfg = |text: &str| {
        let (mut c, _) = apache::parse(text, "o.conf").unwrap_or_else(|e| panic!("{e}"));
        c.document_root.clone_from(&r);
        c
    };
    // Outside the AllowOverride directory: not read.
    std::fs::write(root.join(".htaccess"), "Require all denied\n").unwrap();
    let c = cfg(&text);
    assert_eq!(
        decide(&c, b"/VERSION", LOOPBACK, LOOPBACK, &disk),
        Decision::File(format!("{r}/VERSION").into())
    );
    // DokuWiki's files, as Debian ships them.
    std::fs::write(
        root.join("app/.htaccess"),
        "<Files ~ \"^([\\._]ht|README$|VERSION$|COPYING$)\">\n\
         \x20   <IfModule mod_authz_core.c>\n        Require all denied\n    </IfModule>\n\
         \x20   <IfModule !mod_authz_core.c>\n        Order allow,deny\n        Deny from all\n    </IfModule>\n\
         </Files>\n<IfModule alias_module>\n    RedirectMatch 404 /\\.git\n</IfModule>\n\
         #RewriteEngine on\n",
    )
    .unwrap();
    std::fs::write(
        root.join("app/inc/.htaccess"),
        "<IfModule mod_authz_core.c>\n    Require all denied\n</IfModule>\n\
         <IfModule !mod_authz_core.c>\n    Order allow,deny\n    Deny from all\n</IfModule>\n",
    )
    .unwrap();
    let c = cfg(&text);
    let d = |u: &str| decide(&c, u.as_bytes(), LOOPBACK, LOOPBACK, &disk);
    assert_eq!(
        d("/app/VERSION"),
        Decision::Status(403),
        "<Files ~> in .htaccess"
    );
    assert_eq!(d("/app/inc/x.txt"), Decision::Status(403), "inc/.htaccess");
    assert_eq!(
        d("/app/.git/config"),
        Decision::Status(404),
        "RedirectMatch 404"
    );
    assert_eq!(d("/VERSION"), Decision::File(format!("{r}/VERSION").into()));
    // AllowOverride None: not read; a class that does not allow a directive: refused.
    let none = text.replace("AllowOverride All", "AllowOverride None");
    assert_eq!(
        decide(&cfg(&none), b"/app/inc/x.txt", LOOPBACK, LOOPBACK, &disk),
        Decision::File(format!("{r}/app/inc/x.txt").into())
    );
    let e = apache::parse(
        &text.replace("AllowOverride All", "AllowOverride FileInfo"),
        "o.conf",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("app/.htaccess:3:") && e.message.contains("AuthConfig"),
        "{e}"
    );
    // What could restrict access and is not implemented stops the start, with file and line.
    for bad in [
        "RewriteEngine on\nRewriteRule ^x - [F]\n",
        "AuthType Basic\n",
        "<Limit GET>\n</Limit>\n",
        "Frobnicate yes\n",
    ] {
        std::fs::write(root.join("app/inc/.htaccess"), bad).unwrap();
        let e = apache::parse(&text, "o.conf").unwrap_err();
        assert!(e.to_string().contains("inc/.htaccess:1:"), "{bad}: {e}");
    }
    // Under a linked directory (walked under the link's name, as Apache reads it), and with a
    // link that loops.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join(".htaccess"), "Require all denied\n").unwrap();
    std::fs::write(root.join("app/inc/.htaccess"), "Options -Indexes\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("app/linked")).unwrap();
    std::os::unix::fs::symlink(root.join("app"), root.join("app/inc/loop")).unwrap();
    let c = cfg(&text);
    let disk = Disk(vec![
        format!("{r}/app/linked/x.txt"),
        format!("{r}/app/inc/x.txt"),
    ]);
    assert_eq!(
        decide(&c, b"/app/linked/x.txt", LOOPBACK, LOOPBACK, &disk),
        Decision::Status(403)
    );
    assert_eq!(
        decide(&c, b"/app/inc/x.txt", LOOPBACK, LOOPBACK, &disk),
        Decision::File(format!("{r}/app/inc/x.txt").into())
    );
    // Harmless ones are ignored with a warning.
    std::fs::write(
        root.join("app/inc/.htaccess"),
        "Options -Indexes\nAddType text/plain .x\n",
    )
    .unwrap();
    apache::parse(&text, "o.conf").unwrap();
}

/// Access control evaluated as Apache 2.4.71 does (each case checked against it: reference
/// §8.4).
#[test]
fn access_rules_combine_as_in_apache() {
    let two: IpAddr = "127.0.0.2".parse().unwrap();
    let r = "/srv/www";
    let disk = Disk(vec![
        format!("{r}/index.html"),
        format!("{r}/sub/f.txt"),
        format!("{r}/open/f.txt"),
    ]);
    let run = |conf: &str, cases: &[(&str, IpAddr, u16)]| {
        let text = format!("Listen 80\nDocumentRoot {r}\n{}", conf.replace("@D@", r));
        let (c, _) = apache::parse(&text, "a.conf").unwrap_or_else(|e| panic!("{conf}: {e}"));
        for &(u, ip, want) in cases {
            let got = match decide(&c, u.as_bytes(), ip, LOOPBACK, &disk) {
                Decision::Status(s) => s,
                _ => 200,
            };
            assert_eq!(got, want, "{conf}\n{u} from {ip}");
        }
    };
    let one = LOOPBACK;
    run(
        "<Directory @D@>\nRequire ip 127.0.0.2\nRequire ip 10.0.0.0/8\n</Directory>\n",
        &[("/index.html", one, 403), ("/index.html", two, 200)],
    );
    run(
        "<Directory @D@>\n<RequireAll>\nRequire all granted\nRequire not ip 127.0.0.2\n</RequireAll>\n</Directory>\n",
        &[("/index.html", one, 200), ("/index.html", two, 403)],
    );
    run(
        "<Directory @D@>\n<RequireAll>\nRequire all granted\n<RequireNone>\nRequire ip 127.0.0.2\nRequire ip 127.0.0.3\n</RequireNone>\n</RequireAll>\n</Directory>\n",
        &[("/index.html", one, 200), ("/index.html", two, 403)],
    );
    run(
        "<Directory @D@>\nRequire ip 127.0.0.2\n</Directory>\n<Directory @D@/sub>\nRequire all granted\n</Directory>\n<Directory @D@/open>\nOptions None\n</Directory>\n",
        &[
            ("/index.html", one, 403),
            ("/sub/f.txt", one, 200),
            ("/open/f.txt", one, 403),
            ("/open/f.txt", two, 200),
        ],
    );
    run(
        "<Directory @D@>\nOrder allow,deny\nAllow from 127.0.0.2\n</Directory>\n",
        &[("/index.html", one, 403), ("/index.html", two, 200)],
    );
    // DokuWiki's: Order/Allow in the directory, Require in a subdirectory; both apply.
    run(
        "<Directory @D@>\nOrder allow,deny\nAllow from localhost 127.0.0.1 ::1\n</Directory>\n<Directory @D@/sub>\nRequire all denied\n</Directory>\n<Directory @D@/open>\nRequire all granted\n</Directory>\n",
        &[
            ("/index.html", one, 200),
            ("/index.html", two, 403),
            ("/sub/f.txt", one, 403),
            ("/open/f.txt", two, 403),
            ("/open/f.txt", one, 200),
        ],
    );
    // A section with any of Order/Allow/Deny replaces what it inherits.
    run(
        "<Directory @D@>\nOrder allow,deny\nAllow from 127.0.0.2\n</Directory>\n<Directory @D@/sub>\nDeny from 127.0.0.3\n</Directory>\n",
        &[
            ("/sub/f.txt", one, 200),
            ("/sub/f.txt", two, 200),
            ("/index.html", one, 403),
        ],
    );
    run(
        "<Directory @D@>\nOrder deny,allow\nDeny from all\nAllow from 127.0.0.2\n</Directory>\n",
        &[("/index.html", one, 403), ("/index.html", two, 200)],
    );
    run(
        "<Directory @D@>\nOrder mutual-failure\nAllow from 127.0.0.0/8\nDeny from 127.0.0.2\n</Directory>\n",
        &[("/index.html", one, 200), ("/index.html", two, 403)],
    );
    run(
        "<Directory @D@>\nRequire all denied\nOrder allow,deny\nAllow from 127.0.0.2\nSatisfy Any\n</Directory>\n",
        &[("/index.html", one, 403), ("/index.html", two, 200)],
    );
    run(
        "<Directory @D@>\nRequire ip 127.0.0.1\nOrder allow,deny\nAllow from 127.0.0.2\n</Directory>\n",
        &[("/index.html", one, 403), ("/index.html", two, 403)],
    );
    run(
        "<Directory @D@>\nRequire all denied\nSatisfy Any\n</Directory>\n",
        &[("/index.html", one, 200)],
    );
    // Satisfy belongs to mod_access_compat's settings: alone in a section it resets them.
    run(
        "<Directory @D@>\nOrder allow,deny\nAllow from 127.0.0.2\nRequire all denied\n</Directory>\n\
         <Directory @D@/sub>\nSatisfy Any\n</Directory>\n",
        &[
            ("/sub/f.txt", one, 200),
            ("/sub/f.txt", two, 200),
            ("/index.html", two, 403),
        ],
    );
    run(
        "<Directory @D@>\nRequire ip 127.0.0.0/8\n</Directory>\n\
         <Directory @D@/sub>\nAuthMerging And\nRequire ip 127.0.0.2\n</Directory>\n",
        &[("/sub/f.txt", one, 403), ("/sub/f.txt", two, 200)],
    );
    run(
        "<Directory @D@>\nRequire ip 127.0.0.2\n</Directory>\n\
         <Directory @D@/sub>\nAuthMerging Or\nRequire ip 127.0.0.3\n</Directory>\n",
        &[("/sub/f.txt", one, 403), ("/sub/f.txt", two, 200)],
    );
    run(
        "<Directory @D@>\nOrder allow,deny\nAllow from 127.0.0\n</Directory>\n",
        &[("/index.html", one, 200), ("/index.html", two, 200)],
    );
    run(
        "<Files \"f.txt\">\nOrder allow,deny\nDeny from all\n</Files>\n",
        &[("/sub/f.txt", two, 403), ("/index.html", two, 200)],
    );
    // Without a resolver answer a name never matches: `Allow` denies, `Deny` lets through
    // (so a name in a Deny list would fail open without lookups: they are made).
    run(
        "<Directory @D@>\nRequire host localhost\n</Directory>\n",
        &[("/index.html", one, 403)],
    );
    // What Apache refuses to start with.
    for bad in [
        "<Directory @D@>\nRequire not ip 127.0.0.2\n</Directory>\n",
        "<Directory @D@>\nRequire all granted\nRequire not ip 127.0.0.2\n</Directory>\n",
        "<Directory @D@>\n<RequireNone>\nRequire ip 127.0.0.2\n</RequireNone>\n</Directory>\n",
        "<Directory @D@>\n<RequireAll>\nRequire not ip 127.0.0.2\n</RequireAll>\n</Directory>\n",
    ] {
        let text = format!("Listen 80\n{}", bad.replace("@D@", r));
        apache::parse(&text, "a.conf").unwrap_err();
    }
}

/// Host names are matched on the double-reverse lookup's answer.
#[test]
fn host_rules_use_the_resolved_name() {
    struct Named(Disk);
    impl Fs for Named {
        fn kind(&self, path: &[u8]) -> PathKind {
            self.0.kind(path)
        }
        fn host_of(&self, ip: IpAddr) -> Option<String> {
            (ip == LOOPBACK).then(|| "www.Example.com".to_owned())
        }
    }
    let disk = Named(Disk(vec!["/srv/www/a.txt".into()]));
    let two: IpAddr = "127.0.0.2".parse().unwrap();
    for (conf, one_gets, two_gets) in [
        ("Require host example.com", 200, 403),
        ("Require host ample.com", 403, 403),
        ("Order deny,allow\nDeny from .example.com", 403, 200),
        ("Order allow,deny\nAllow from www.example.com", 200, 403),
    ] {
        let text = format!(
            "Listen 80\nDocumentRoot /srv/www\n<Directory /srv/www>\n{conf}\n</Directory>\n"
        );
        let (c, _) = apache::parse(&text, "a.conf").unwrap();
        let st = |ip| match decide(&c, b"/a.txt", ip, LOOPBACK, &disk) {
            Decision::Status(s) => s,
            _ => 200,
        };
        assert_eq!((st(LOOPBACK), st(two)), (one_gets, two_gets), "{conf}");
    }
}

#[test]
fn this_machines_apache_tree_with_php_fpm_enabled() {
    if programs::require_program("apache2", "apache2").is_none() {
        return;
    }
    let etc = Path::new("/etc/apache2");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("apache2");
    support::copy_tree(etc, &tree);
    let conf = tree.join("apache2.conf");
    // As installed: no handler, no route.
    let (cfg, _) = read(&conf, &[]).unwrap();
    assert!(!cfg.site.serves_files());
    assert_eq!(cfg.listen, vec!["80"]);
    // a2enconf php8.2-fpm alone: <IfModule proxy_fcgi_module> is false, still no handler.
    let php = tree.join("conf-available/php8.2-fpm.conf");
    if !programs::require_file(&php, "php8.2-fpm") {
        return;
    }
    std::os::unix::fs::symlink(
        "../conf-available/php8.2-fpm.conf",
        tree.join("conf-enabled/php8.2-fpm.conf"),
    )
    .unwrap();
    let (cfg, _) = read(&conf, &[]).unwrap();
    assert!(!cfg.site.serves_files(), "proxy_fcgi is not loaded yet");
    // a2enmod proxy_fcgi (and proxy, its dependency).
    for m in ["proxy.load", "proxy_fcgi.load"] {
        let link = tree.join("mods-enabled").join(m);
        if !link.exists() {
            std::os::unix::fs::symlink(format!("../mods-available/{m}"), link).unwrap();
        }
    }
    let (mut cfg, warnings) = read(&conf, &[]).unwrap();
    cfg.override_listen(vec!["127.0.0.1:0".into()]);
    cfg.validate().unwrap();
    assert!(
        !warnings
            .iter()
            .any(|w| w.message.contains("is not defined")),
        "envvars supplies APACHE_*: {warnings:#?}"
    );
    assert_eq!(cfg.vhosts.len(), 1, "000-default.conf");
    let v = &cfg.vhosts[0].config;
    assert_eq!(v.document_root, "/var/www/html");
    let disk = Disk(vec![
        "/var/www/html/index.php".into(),
        "/var/www/html/.htaccess".into(),
    ]);
    let d = handler(decide(v, b"/", LOOPBACK, LOOPBACK, &disk));
    assert_eq!(
        d.worker.raw,
        "unix:/run/php/php8.2-fpm.sock|fcgi://localhost"
    );
    assert!(
        d.default_worker,
        "no <Proxy> defines it: Apache's default worker"
    );
    assert_eq!(d.filename, b"/var/www/html/index.php");
    assert_eq!(
        decide(v, b"/.htaccess", LOOPBACK, LOOPBACK, &disk),
        Decision::Status(403)
    );
    assert_eq!(
        decide(v, b"/x.phps", LOOPBACK, LOOPBACK, &disk),
        Decision::Status(403)
    );
}

#[test]
fn if_file_exists_fallback_resource_and_accept_path_info() {
    let text = "Listen 80\nDocumentRoot /w\n\
                <FilesMatch \"\\.php$\">\n\
                  <If \"-f %{REQUEST_FILENAME}\">\n\
                    SetHandler \"proxy:unix:/run/php.sock|fcgi://localhost\"\n\
                  </If>\n\
                </FilesMatch>\n\
                <Directory /w/app>\n  FallbackResource /app/index.php\n</Directory>\n\
                <Directory /w/strict>\n  AcceptPathInfo Off\n</Directory>\n\
                <Location /raw/>\n  SetHandler none\n</Location>\n";
    let (cfg, _) = apache::parse(text, "i.conf").unwrap();
    let disk = Disk(vec![
        "/w/a.php".into(),
        "/w/app/index.php".into(),
        "/w/strict/s.php".into(),
        "/w/raw/r.php".into(),
    ]);
    let at = |uri: &str| decide(&cfg, uri.as_bytes(), LOOPBACK, LOOPBACK, &disk);
    let d = handler(at("/a.php"));
    assert_eq!(d.worker.raw, "unix:/run/php.sock|fcgi://localhost");
    // <If -f>: a missing .php file gets no handler, hence a 404 and no backend request.
    assert_eq!(at("/missing.php"), Decision::Status(404));
    // FallbackResource: a missing file under /w/app is served by the fallback script.
    let d = handler(at("/app/some/route"));
    assert_eq!(d.filename, b"/w/app/index.php");
    assert_eq!(d.script_uri, b"/app/index.php");
    assert_eq!(at("/other/route"), Decision::Status(404));
    // AcceptPathInfo Off refuses path info even for the handler.
    assert!(matches!(at("/strict/s.php"), Decision::Handler(_)));
    assert_eq!(at("/strict/s.php/x"), Decision::Status(404));
    // SetHandler none in a Location is merged after <FilesMatch>, but the <If> in it comes
    // after every section: the handler again.
    assert!(matches!(at("/raw/r.php"), Decision::Handler(_)));
}
