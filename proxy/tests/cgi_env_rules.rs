//! httpd-tests rows 1, 2 and 9 (docs/reference/apache.md §2.5, §3.11) expressed with ProxyPass
//! routes, plus SetEnvIf / SetEnv / ProxyFCGISetEnvIf behaviour and `proxy-fcgi-pathinfo=full` on a
//! real directory.

mod cgi_support;

use cgi_support::{Req, get, names, run, run_with_fs, toml_config};
use fcgi_proxy::config::apache;
use fcgi_proxy::site::RealFs;

const DOCROOT: &str = "/srv/httpd-tests/t/htdocs";

#[test]
fn httpd_tests_row1_fcgisetenv_via_toml() {
    let cfg = toml_config(&format!(
        r#"listen = ["80"]
document_root = "{DOCROOT}"
[[route]]
path = "/fcgisetenv"
target = "fcgi://127.0.0.1:9000"
fcgi_setenvif = [
  {{ condition = "true", set = "QUERY_STRING", value = "test_value" }},
  {{ condition = "true", set = "TEST_EMPTY" }},
  {{ condition = "false", set = "TEST_NOT_SET" }},
  {{ condition = "true", set = "TEST_DOCROOT", value = "%{{DOCUMENT_ROOT}}" }},
  {{ condition = "reqenv('GATEWAY_INTERFACE') =~ m#CGI/(.\\..)#", set = "TEST_CGI_VERSION", value = "v$1" }},
  {{ condition = "true", unset = "REMOTE_ADDR" }},
]
"#
    ));
    let p = run(&cfg, &Req::get("/fcgisetenv?query")).unwrap();
    assert_eq!(get(&p, "QUERY_STRING"), Some("test_value"));
    assert_eq!(get(&p, "TEST_NOT_SET"), None);
    assert_eq!(get(&p, "TEST_EMPTY"), Some(""));
    assert_eq!(get(&p, "TEST_DOCROOT"), Some(DOCROOT));
    assert_eq!(get(&p, "TEST_CGI_VERSION"), Some("v1.1"));
    assert_eq!(get(&p, "REMOTE_ADDR"), None);
    // Overridden variables keep their place; new ones come last in entry order.
    let n = names(&p);
    let q = n.iter().position(|x| *x == "QUERY_STRING").unwrap();
    assert!(q < n.iter().position(|x| *x == "REQUEST_URI").unwrap());
    assert_eq!(
        &n[n.len() - 3..],
        &["TEST_EMPTY", "TEST_DOCROOT", "TEST_CGI_VERSION"]
    );
}

#[test]
fn httpd_tests_row1_via_apache_importer() {
    // The same directives as t/conf/proxy.conf.in, with ProxyPass instead of SetHandler.
    let text = format!(
        "Listen 80\nDocumentRoot {DOCROOT}\n\
         <Location /fcgisetenv>\n\
           ProxyPass fcgi://127.0.0.1:9000\n\
           ProxyFCGISetEnvIf true QUERY_STRING test_value\n\
           ProxyFCGISetEnvIf true TEST_EMPTY\n\
           ProxyFCGISetEnvIf false TEST_NOT_SET\n\
           ProxyFCGISetEnvIf true TEST_DOCROOT \"%{{DOCUMENT_ROOT}}\"\n\
           ProxyFCGISetEnvIf \"reqenv('GATEWAY_INTERFACE') =~ m#CGI/(.\\..)#\" TEST_CGI_VERSION \"v$1\"\n\
           ProxyFCGISetEnvIf true !REMOTE_ADDR\n\
         </Location>\n"
    );
    let (cfg, warnings) = apache::parse(&text, "proxy.conf").unwrap();
    assert!(warnings.is_empty(), "{warnings:#?}");
    let p = run(&cfg, &Req::get("/fcgisetenv?query")).unwrap();
    assert_eq!(get(&p, "QUERY_STRING"), Some("test_value"));
    assert_eq!(get(&p, "TEST_NOT_SET"), None);
    assert_eq!(get(&p, "TEST_EMPTY"), Some(""));
    assert_eq!(get(&p, "TEST_DOCROOT"), Some(DOCROOT));
    assert_eq!(get(&p, "TEST_CGI_VERSION"), Some("v1.1"));
    assert_eq!(get(&p, "REMOTE_ADDR"), None);
    // Observed on Apache 2.4.71: the Location path without slash, the URL without slash.
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:9000/")
    );
    let p = run(&cfg, &Req::get("/fcgisetenv/x")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:9000/x")
    );
}

#[test]
fn httpd_tests_row2_generic_script_filename() {
    // ProxyFCGIBackendType GENERIC; SCRIPT_FILENAME has neither query string nor proxy: prefix.
    let cfg = toml_config(&format!(
        r#"listen = ["80"]
document_root = "{DOCROOT}"
[[route]]
regex = '^/modules/proxy/fcgi-generic/(.*\.php)$'
target = "fcgi://127.0.0.1:9000{DOCROOT}/modules/proxy/fcgi-generic/$1"
backend_type = "generic"
"#
    ));
    let p = run(
        &cfg,
        &Req::get("/modules/proxy/fcgi-generic/index.php?query"),
    )
    .unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some(format!("{DOCROOT}/modules/proxy/fcgi-generic/index.php").as_str())
    );
    assert_eq!(get(&p, "QUERY_STRING"), Some("query"));
}

#[test]
fn httpd_tests_row9_script_name() {
    let cfg = toml_config(&format!(
        r#"listen = ["80"]
document_root = "{DOCROOT}"
[[route]]
regex = '^/modules/proxy/fcgi/(.*\.php)$'
target = "fcgi://127.0.0.1:9000{DOCROOT}/modules/proxy/fcgi/$1"
"#
    ));
    let p = run(&cfg, &Req::get("/modules/proxy/fcgi/index.php")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_NAME"),
        Some("/modules/proxy/fcgi/index.php")
    );
    assert_eq!(get(&p, "PATH_INFO"), None);
}

#[test]
fn setenv_is_too_late_for_pathinfo_with_a_worker_but_not_a_balancer() {
    // Observed on Apache 2.4.71: "SetEnv proxy-fcgi-pathinfo 1" in a <Location> with a
    // direct fcgi:// ProxyPass gives no PATH_INFO (the variable is still sent); with a balancer
    // it applies (canonicalised again in the handler phase).
    let text = "Listen 80\nDocumentRoot /d\n\
        <Proxy balancer://pool>\nBalancerMember fcgi://127.0.0.1:27001\n</Proxy>\n\
        <Location /dir/>\nSetEnv proxy-fcgi-pathinfo 1\nProxyPass fcgi://127.0.0.1:27001/\n</Location>\n\
        <Location /bal/>\nSetEnv proxy-fcgi-pathinfo 1\nProxyPass balancer://pool/sub/\n</Location>\n";
    let (cfg, _) = apache::parse(text, "t.conf").unwrap();
    let p = run(&cfg, &Req::get("/dir/x.php/y")).unwrap();
    assert_eq!(get(&p, "proxy-fcgi-pathinfo"), Some("1"));
    assert_eq!(get(&p, "PATH_INFO"), None);
    assert_eq!(get(&p, "SCRIPT_NAME"), Some("/dir/x.php/y"));
    let p = run(&cfg, &Req::get("/bal/x.php/y?q=1")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:27001/sub/x.php/y")
    );
    assert_eq!(get(&p, "SCRIPT_NAME"), Some("/bal"));
    assert_eq!(get(&p, "PATH_INFO"), Some("/sub/x.php/y"));
    assert_eq!(get(&p, "PATH_TRANSLATED"), Some("/d/sub/x.php/y"));
    assert_eq!(get(&p, "BALANCER_NAME"), Some("balancer://pool"));
    // SetEnvIf is early enough for both.
    let text = text.replace(
        "SetEnv proxy-fcgi-pathinfo 1",
        "SetEnvIf Request_URI . proxy-fcgi-pathinfo=1",
    );
    let (cfg, _) = apache::parse(&text, "t.conf").unwrap();
    let p = run(&cfg, &Req::get("/dir/x.php/y")).unwrap();
    assert_eq!(get(&p, "PATH_INFO"), Some("/x.php/y"));
    assert_eq!(get(&p, "SCRIPT_NAME"), Some("/dir"));
}

#[test]
fn balancer_member_path_is_prefixed() {
    // Observed: member "FCGI://127.0.0.1:27001/base/" + balancer path "/sub/x" gives a double
    // slash, worker name lower-cased, route sent.
    let text = "Listen 80\n<Proxy balancer://Pool2>\nBalancerMember FCGI://127.0.0.1:27001/base/ route=r1\n</Proxy>\n\
        ProxyPass /b2/ balancer://Pool2/sub/\n";
    let (cfg, _) = apache::parse(text, "t.conf").unwrap();
    let p = run(&cfg, &Req::get("/b2/x")).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some("proxy:fcgi://127.0.0.1:27001/base//sub/x")
    );
    assert_eq!(get(&p, "BALANCER_NAME"), Some("balancer://pool2"));
    assert_eq!(
        get(&p, "BALANCER_WORKER_NAME"),
        Some("fcgi://127.0.0.1:27001/base/")
    );
    assert_eq!(get(&p, "BALANCER_WORKER_ROUTE"), Some("r1"));
}

/// The sticky-session variables where Apache 2.4.71 put them (observed with
/// `scenarios/balance/sticky-*` run against it): BALANCER_ROUTE_CHANGED before BALANCER_NAME,
/// or last when a failover attempt noted it; the session after BALANCER_WORKER_ROUTE.
#[test]
fn balancer_session_variables_in_apache_order() {
    let text = "Listen 80\n<Proxy balancer://pool>\nBalancerMember fcgi://127.0.0.1:27001 route=one\n\
        ProxySet stickysession=ROUTEID\n</Proxy>\nProxyPass /app/ balancer://pool/\n";
    let (cfg, _) = apache::parse(text, "t.conf").unwrap();
    let balancer_vars = |p: &[(String, String)]| -> Vec<String> {
        p.iter()
            .filter(|(n, _)| n.starts_with("BALANCER_"))
            .map(|(n, v)| format!("{n}={v}"))
            .collect()
    };
    let mut req = Req::get("/app/x.php");
    req.route_changed = (true, false);
    assert_eq!(
        balancer_vars(&run(&cfg, &req).unwrap()),
        [
            "BALANCER_ROUTE_CHANGED=1",
            "BALANCER_NAME=balancer://pool",
            "BALANCER_WORKER_NAME=fcgi://127.0.0.1:27001",
            "BALANCER_WORKER_ROUTE=one",
        ]
    );
    req.session = Some(fcgi_proxy::balancer::Session {
        sticky: "ROUTEID".into(),
        route: b"two".to_vec(),
    });
    req.route_changed = (true, true);
    assert_eq!(
        balancer_vars(&run(&cfg, &req).unwrap()),
        [
            "BALANCER_NAME=balancer://pool",
            "BALANCER_WORKER_NAME=fcgi://127.0.0.1:27001",
            "BALANCER_WORKER_ROUTE=one",
            "BALANCER_SESSION_STICKY=ROUTEID",
            "BALANCER_SESSION_ROUTE=two",
            "BALANCER_ROUTE_CHANGED=1",
        ]
    );
    req.route_changed = (false, false);
    let p = run(&cfg, &req).unwrap();
    assert_eq!(get(&p, "BALANCER_ROUTE_CHANGED"), None);
    assert_eq!(get(&p, "BALANCER_SESSION_ROUTE"), Some("two"));
}

#[test]
fn setenvif_rules_server_then_route_and_pathinfo_shorthand() {
    let cfg = toml_config(
        r#"listen = ["80"]
[[setenvif]]
attribute = "User-Agent"
regex = "^curl/(.*)$"
nocase = true
set = ["CURL_VERSION=$1", "proxy-fcgi-pathinfo=last-dot"]
[[route]]
path = "/app/"
target = "fcgi://127.0.0.1:9000/"
pathinfo = "first-dot"
setenvif = [{ attribute = "Request_URI", regex = "\\.php", set = ["ROUTE_RULE"] }]
setenv = [{ name = "FROM_SETENV", value = "x y" }]
fcgi_setenvif = [{ condition = "%{reqenv:CURL_VERSION} == '8.0'", set = "IS_CURL8", value = "%{HTTP_USER_AGENT}" }]
"#,
    );
    // Server rule sets last-dot first; the route shorthand (first-dot) comes after it.
    let p = run(
        &cfg,
        &Req::get("/app/a.b/c.php/d").header("User-Agent", "CURL/8.0"),
    )
    .unwrap();
    assert_eq!(
        &names(&p)[..5],
        &[
            "CURL_VERSION",
            "proxy-fcgi-pathinfo",
            "ROUTE_RULE",
            "FROM_SETENV",
            "HTTP_HOST"
        ]
    );
    assert_eq!(get(&p, "CURL_VERSION"), Some("8.0"));
    assert_eq!(get(&p, "proxy-fcgi-pathinfo"), Some("first-dot"));
    assert_eq!(get(&p, "PATH_INFO"), Some("/c.php/d"));
    assert_eq!(get(&p, "FROM_SETENV"), Some("x y"));
    assert_eq!(get(&p, "IS_CURL8"), Some("CURL/8.0"));
    // Without the user agent: only the route shorthand.
    let p = run(&cfg, &Req::get("/app/a.b/c.php/d")).unwrap();
    assert_eq!(get(&p, "CURL_VERSION"), None);
    assert_eq!(get(&p, "PATH_INFO"), Some("/c.php/d"));
    assert_eq!(get(&p, "IS_CURL8"), None);
}

#[test]
fn server_then_route_fcgi_setenvif() {
    let cfg = toml_config(
        r#"listen = ["80"]
fcgi_setenvif = [{ condition = "true", set = "ORDER", value = "server" }]
[[route]]
path = "/"
target = "fcgi://127.0.0.1:9000/"
fcgi_setenvif = [
  { condition = "reqenv('ORDER') == 'server'", set = "ORDER", value = "%{reqenv:ORDER}+route" },
  { condition = "%{SCRIPT_FILENAME} =~ /fcgi:..127/", set = "SF_SEEN" },
  { condition = "%{REQUEST_URI} == '/a b'", set = "DECODED_URI" },
  { condition = "%{QUERY_STRING} == 'x=%20'", set = "RAW_QUERY" },
]
"#,
    );
    let p = run(&cfg, &Req::get("/a%20b?x=%20")).unwrap();
    assert_eq!(get(&p, "ORDER"), Some("server+route"));
    assert_eq!(get(&p, "SF_SEEN"), Some(""));
    assert_eq!(get(&p, "DECODED_URI"), Some(""));
    assert_eq!(get(&p, "RAW_QUERY"), Some(""));
}

#[test]
fn full_mode_on_a_real_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    std::fs::create_dir_all(format!("{root}/myapp/sub")).unwrap();
    std::fs::write(format!("{root}/myapp/index.php"), "<?php").unwrap();
    std::fs::write(format!("{root}/myapp/a b.php"), "<?php").unwrap();
    let cfg = toml_config(&format!(
        r#"listen = ["80"]
document_root = "{root}"
[[route]]
path = "/docr/"
target = "fcgi://127.0.0.1:9000{root}/"
pathinfo = "full"
[[route]]
path = "/rel/"
target = "fcgi://127.0.0.1:9000/myapp/"
pathinfo = "full"
"#
    ));
    let fs = RealFs;
    let p = run_with_fs(
        &cfg,
        &Req::get("/docr/myapp/index.php/extra/p.x/y?x=1"),
        &fs,
    )
    .unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some(format!("{root}/myapp/index.php").as_str())
    );
    assert_eq!(get(&p, "SCRIPT_NAME"), Some("/docr/myapp/index.php"));
    assert_eq!(get(&p, "PATH_INFO"), Some("/extra/p.x/y"));
    assert_eq!(
        get(&p, "PATH_TRANSLATED"),
        Some(format!("{root}/extra/p.x/y").as_str())
    );
    // Under DOCUMENT_ROOT when the backend path itself is not on disk.
    let p = run_with_fs(&cfg, &Req::get("/rel/a%20b.php/p"), &fs).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some(format!("{root}/myapp/a b.php").as_str())
    );
    assert_eq!(get(&p, "SCRIPT_NAME"), Some("/rel/a b.php"));
    assert_eq!(get(&p, "PATH_INFO"), Some("/p"));
    // A missing file under a directory: fall back to the proxy: filename, no PATH_INFO.
    let p = run_with_fs(&cfg, &Req::get("/docr/myapp/sub/zz"), &fs).unwrap();
    assert_eq!(
        get(&p, "SCRIPT_FILENAME"),
        Some(format!("proxy:fcgi://127.0.0.1:9000{root}/myapp/sub/zz").as_str())
    );
    assert_eq!(get(&p, "PATH_INFO"), None);
}

#[test]
fn no_path_translated_when_the_path_info_is_too_long_for_a_file_name() {
    // Apache maps PATH_INFO under the DocumentRoot with apr_filepath_merge, which refuses a
    // name over PATH_MAX (4096 with the root, the path and 4); its sub-request then has no file
    // name and no PATH_TRANSLATED is sent (docs/reference/apache.md 3.6).
    let text = "Listen 80\nDocumentRoot /var/www/html\n\
        SetEnvIf Request_URI . proxy-fcgi-pathinfo=unescape\n\
        ProxyPass /app/ fcgi://127.0.0.1:27001/\n";
    let (cfg, _) = apache::parse(text, "t.conf").unwrap();
    // "/var/www/html" (13) + the path info without its leading '/' + 4: 4096 fits, 4097 not.
    let fits = format!("/app/{}", "a".repeat(4096 - 13 - 4));
    let p = run(&cfg, &Req::get(&fits)).unwrap();
    assert_eq!(get(&p, "PATH_INFO"), Some(&fits[4..]));
    let pt = get(&p, "PATH_TRANSLATED").expect("PATH_TRANSLATED at the limit");
    assert_eq!(pt.len(), 13 + fits.len() - 4);
    let over = format!("{fits}a");
    let p = run(&cfg, &Req::get(&over)).unwrap();
    assert_eq!(get(&p, "PATH_INFO"), Some(&over[4..]));
    assert_eq!(get(&p, "PATH_TRANSLATED"), None);
}
