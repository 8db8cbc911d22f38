//! Header → param rules, server variables and ordering (docs/reference/apache.md §3.1 to §3.3;
//! each case also checked against Apache 2.4.71).

mod cgi_support;

use cgi_support::{Req, get, names, run, toml_config};
use fcgi_proxy::config::Config;

fn cfg(extra_route: &str) -> Config {
    toml_config(&format!(
        "listen = [\"80\"]\nserver_name = \"example.com\"\ndocument_root = \"/var/www/html\"\n\
         [[route]]\npath = \"/myapp/\"\ntarget = \"fcgi://127.0.0.1:9000/\"\n{extra_route}"
    ))
}

#[test]
fn httpoxy_proxy_header_never_becomes_http_proxy() {
    for name in ["Proxy", "proxy", "PROXY"] {
        let req = Req::get("/myapp/x")
            .header(name, "http://127.0.0.1:1/")
            .header(name, "x");
        let p = run(&cfg(""), &req).unwrap();
        assert_eq!(get(&p, "HTTP_PROXY"), None, "{name}");
    }
    let p = run(&cfg(""), &Req::get("/myapp/x").header("X-Safe", "1")).unwrap();
    assert_eq!(get(&p, "HTTP_X_SAFE"), Some("1"));
}

#[test]
fn invalid_header_names_are_dropped() {
    let req = Req::get("/myapp/x")
        .header("X-Forwarded-For", "1.1.1.1")
        .header("X_Forwarded_For", "6.6.6.6")
        .header("Remote.User", "admin")
        .header("Remote_User", "admin")
        .header("Content_Length", "99999")
        .header("X-A@b", "1");
    let p = run(&cfg(""), &req).unwrap();
    assert_eq!(get(&p, "HTTP_X_FORWARDED_FOR"), Some("1.1.1.1"));
    assert_eq!(get(&p, "HTTP_REMOTE_USER"), None);
    assert_eq!(get(&p, "REMOTE_USER"), None);
    assert_eq!(get(&p, "CONTENT_LENGTH"), None);
    assert!(!names(&p).iter().any(|n| n.contains('@') || n.contains('.')));
}

#[test]
fn content_type_and_length() {
    // POST with Content-Length: CONTENT_LENGTH at the header's position, never HTTP_CONTENT_*.
    let mut req = Req::get("/myapp/x")
        .header("Content-Length", "5")
        .header("X-A", "1")
        .header("Content-Type", "text/plain");
    req.method = "POST".into();
    req.content_length = Some(5);
    let p = run(&cfg(""), &req).unwrap();
    assert_eq!(
        &names(&p)[..4],
        &["HTTP_HOST", "CONTENT_LENGTH", "HTTP_X_A", "CONTENT_TYPE"]
    );
    assert_eq!(get(&p, "CONTENT_LENGTH"), Some("5"));
    assert_eq!(get(&p, "CONTENT_TYPE"), Some("text/plain"));
    assert_eq!(get(&p, "HTTP_CONTENT_LENGTH"), None);
    assert_eq!(get(&p, "HTTP_CONTENT_TYPE"), None);
    // Chunked, buffered by the runtime: TE gone, CONTENT_LENGTH after the headers.
    let mut req = Req::get("/myapp/x")
        .header("Transfer-Encoding", "chunked")
        .header("X-A", "1");
    req.method = "POST".into();
    req.content_length = Some(11);
    let p = run(&cfg(""), &req).unwrap();
    assert_eq!(
        &names(&p)[..4],
        &["HTTP_HOST", "HTTP_X_A", "CONTENT_LENGTH", "PATH"]
    );
    assert_eq!(get(&p, "CONTENT_LENGTH"), Some("11"));
    assert_eq!(get(&p, "HTTP_TRANSFER_ENCODING"), None);
    // The body length given, not the client's header value.
    let mut req = Req::get("/myapp/x").header("Content-Length", "7");
    req.method = "POST".into();
    req.content_length = Some(3);
    assert_eq!(
        get(&run(&cfg(""), &req).unwrap(), "CONTENT_LENGTH"),
        Some("3")
    );
    // Bodiless GET: no CONTENT_LENGTH; GET with "Content-Length: 0": "0".
    let p = run(&cfg(""), &Req::get("/myapp/x")).unwrap();
    assert_eq!(get(&p, "CONTENT_LENGTH"), None);
    let mut req = Req::get("/myapp/x").header("Content-Length", "0");
    req.content_length = Some(0);
    assert_eq!(
        get(&run(&cfg(""), &req).unwrap(), "CONTENT_LENGTH"),
        Some("0")
    );
    // POST without length or coding: no CONTENT_LENGTH.
    let mut req = Req::get("/myapp/x");
    req.method = "POST".into();
    assert_eq!(get(&run(&cfg(""), &req).unwrap(), "CONTENT_LENGTH"), None);
}

#[test]
fn authorization_only_when_configured() {
    let req = Req::get("/myapp/x")
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .header("Proxy-Authorization", "xx");
    let p = run(&cfg(""), &req).unwrap();
    assert_eq!(get(&p, "HTTP_AUTHORIZATION"), None);
    assert_eq!(get(&p, "HTTP_PROXY_AUTHORIZATION"), None);
    let p = run(&cfg("pass_authorization = true\n"), &req).unwrap();
    assert_eq!(get(&p, "HTTP_AUTHORIZATION"), Some("Basic dXNlcjpwYXNz"));
    assert_eq!(get(&p, "HTTP_PROXY_AUTHORIZATION"), Some("xx"));
    // Server-level default, route override.
    let c = toml_config(
        "listen = [\"80\"]\npass_authorization = true\n\
         [[route]]\npath = \"/a/\"\ntarget = \"fcgi://h:1/\"\n\
         [[route]]\npath = \"/b/\"\ntarget = \"fcgi://h:1/\"\npass_authorization = false\n",
    );
    let mut r = req.clone();
    r.target = "/a/x".into();
    assert!(get(&run(&c, &r).unwrap(), "HTTP_AUTHORIZATION").is_some());
    r.target = "/b/x".into();
    assert!(get(&run(&c, &r).unwrap(), "HTTP_AUTHORIZATION").is_none());
}

#[test]
fn duplicates_merge_at_first_position_case_insensitively() {
    let req = Req::get("/myapp/x")
        .header("X-Multi", "a")
        .header("Cookie", "a=1")
        .header("x-multi", "b")
        .header("Cookie", "b=2");
    let p = run(&cfg(""), &req).unwrap();
    assert_eq!(
        &names(&p)[..3],
        &["HTTP_HOST", "HTTP_X_MULTI", "HTTP_COOKIE"]
    );
    assert_eq!(get(&p, "HTTP_X_MULTI"), Some("a, b"));
    assert_eq!(get(&p, "HTTP_COOKIE"), Some("a=1, b=2"));
}

#[test]
fn hop_by_hop_headers_pass_and_max_forwards_decrements() {
    let req = Req::get("/myapp/x")
        .header("Connection", "close")
        .header("Max-Forwards", "3")
        .header("TE", "trailers");
    let p = run(&cfg(""), &req).unwrap();
    assert_eq!(get(&p, "HTTP_CONNECTION"), Some("close"));
    assert_eq!(get(&p, "HTTP_TE"), Some("trailers"));
    assert_eq!(get(&p, "HTTP_MAX_FORWARDS"), Some("2"));
    assert_eq!(
        run(&cfg(""), &Req::get("/myapp/x").header("Max-Forwards", "0")),
        Err(400)
    );
    assert_eq!(
        run(&cfg(""), &Req::get("/myapp/x").header("Max-Forwards", "x")),
        Err(400)
    );
}

#[test]
fn server_name_and_port() {
    let c = cfg("");
    let case = |host: Option<&str>, proto: &str| {
        let mut r = Req::get("/myapp/x").headers(&[]);
        if let Some(h) = host {
            r = r.header("Host", h);
        }
        r.protocol = proto.into();
        run(&c, &r).map(|p| {
            (
                get(&p, "SERVER_NAME").unwrap().to_string(),
                get(&p, "SERVER_PORT").unwrap().to_string(),
            )
        })
    };
    let s = |a: &str, b: &str| Ok((a.to_string(), b.to_string()));
    // Observed on Apache: port from Host, else 80 (not the listening port).
    assert_eq!(case(Some("127.0.0.1"), "HTTP/1.1"), s("127.0.0.1", "80"));
    assert_eq!(
        case(Some("EXAMPLE.com:8080"), "HTTP/1.1"),
        s("example.com", "8080")
    );
    assert_eq!(case(Some("[::1]:9"), "HTTP/1.1"), s("[::1]", "9"));
    assert_eq!(case(Some("x.org."), "HTTP/1.1"), s("x.org", "80"));
    assert_eq!(case(Some("a_b"), "HTTP/1.1"), s("a_b", "80"));
    assert_eq!(case(Some("a:08"), "HTTP/1.1"), s("a", "8"));
    assert_eq!(case(Some("a&b"), "HTTP/1.1"), Err(400));
    assert_eq!(case(Some("1.2.3.4:"), "HTTP/1.1"), Err(400));
    assert_eq!(case(Some("a<b"), "HTTP/1.1"), Err(400));
    assert_eq!(case(None, "HTTP/1.1"), Err(400));
    assert_eq!(case(None, "HTTP/1.0"), s("example.com", "80"));
    let mut two = Req::get("/myapp/x").header("Host", "b");
    two.protocol = "HTTP/1.1".into();
    assert_eq!(run(&c, &two), Err(400), "two Host fields");
    // ServerName with a port: used when Host has none.
    let c2 = toml_config(
        "listen = [\"80\"]\nserver_name = \"www.example.com:8443\"\n[[route]]\npath = \"/\"\ntarget = \"fcgi://h:1/\"\n",
    );
    let mut r = Req::get("/x").headers(&[]);
    r.protocol = "HTTP/1.0".into();
    let p = run(&c2, &r).unwrap();
    assert_eq!(get(&p, "SERVER_NAME"), Some("www.example.com"));
    assert_eq!(get(&p, "SERVER_PORT"), Some("8443"));
    let p = run(&c2, &Req::get("/x").headers(&[("Host", "h")])).unwrap();
    assert_eq!(get(&p, "SERVER_PORT"), Some("8443"));
    // No ServerName, no Host: the local address.
    let c3 = toml_config("listen = [\"80\"]\n[[route]]\npath = \"/\"\ntarget = \"fcgi://h:1/\"\n");
    let mut r = Req::get("/x").headers(&[]);
    r.protocol = "HTTP/1.0".into();
    r.local = "[2001:db8::1]:80".parse().unwrap();
    let p = run(&c3, &r).unwrap();
    assert_eq!(get(&p, "SERVER_NAME"), Some("[2001:db8::1]"));
    assert_eq!(get(&p, "SERVER_ADDR"), Some("2001:db8::1"));
}

#[test]
fn absolute_form_replaces_host() {
    let req = Req::get("http://Other.Host:99/myapp/abs?q").headers(&[("Host", "127.0.0.1:28081")]);
    let p = run(&cfg(""), &req).unwrap();
    assert_eq!(get(&p, "HTTP_HOST"), Some("other.host:99"));
    assert_eq!(get(&p, "SERVER_NAME"), Some("other.host"));
    assert_eq!(get(&p, "SERVER_PORT"), Some("99"));
    assert_eq!(
        get(&p, "REQUEST_URI"),
        Some("http://Other.Host:99/myapp/abs?q")
    );
    assert_eq!(get(&p, "SCRIPT_NAME"), Some("/myapp/abs"));
    assert_eq!(get(&p, "QUERY_STRING"), Some("q"));
    let mut r = Req::get("http://other.host/myapp/x").headers(&[]);
    r.protocol = "HTTP/1.0".into();
    let p = run(&cfg(""), &r).unwrap();
    assert_eq!(get(&p, "HTTP_HOST"), None, "no Host field to replace");
    assert_eq!(get(&p, "SERVER_NAME"), Some("other.host"));
}

#[test]
fn addresses_and_v4_mapped() {
    let mut r = Req::get("/myapp/x");
    r.remote = "[::ffff:192.0.2.7]:4242".parse().unwrap();
    r.local = "[::ffff:198.51.100.1]:80".parse().unwrap();
    let p = run(&cfg(""), &r).unwrap();
    assert_eq!(get(&p, "REMOTE_ADDR"), Some("192.0.2.7"));
    assert_eq!(get(&p, "REMOTE_PORT"), Some("4242"));
    assert_eq!(get(&p, "SERVER_ADDR"), Some("198.51.100.1"));
}

#[test]
fn order_is_apaches_table_order() {
    let c = toml_config(
        "listen = [\"80\"]\nserver_name = \"example.com\"\nserver_admin = \"ops@example.com\"\n\
         [[setenvif]]\nattribute = \"Request_URI\"\nregex = \".\"\nset = [\"proxy-fcgi-pathinfo=first-dot\", \"EARLY=1\", \"HTTP_X_A=from-env\", \"PATH=/opt/bin\"]\n\
         [[setenv]]\nname = \"LATE\"\nvalue = \"2\"\n\
         [[route]]\npath = \"/myapp/\"\ntarget = \"fcgi://127.0.0.1:9000/\"\n",
    );
    let req = Req::get("/myapp/a.php/b?q").header("X-A", "header");
    let p = run(&c, &req).unwrap();
    assert_eq!(
        names(&p),
        vec![
            "proxy-fcgi-pathinfo",
            "EARLY",
            "HTTP_X_A",
            "PATH",
            "LATE",
            "HTTP_HOST",
            "SERVER_SIGNATURE",
            "SERVER_SOFTWARE",
            "SERVER_NAME",
            "SERVER_ADDR",
            "SERVER_PORT",
            "REMOTE_ADDR",
            "DOCUMENT_ROOT",
            "REQUEST_SCHEME",
            "CONTEXT_PREFIX",
            "CONTEXT_DOCUMENT_ROOT",
            "SERVER_ADMIN",
            "SCRIPT_FILENAME",
            "REMOTE_PORT",
            "GATEWAY_INTERFACE",
            "SERVER_PROTOCOL",
            "REQUEST_METHOD",
            "QUERY_STRING",
            "REQUEST_URI",
            "SCRIPT_NAME",
            "PATH_INFO",
            "PATH_TRANSLATED",
        ]
    );
    // Request-derived values replace pre-existing ones in place; PATH set by SetEnvIf wins.
    assert_eq!(get(&p, "HTTP_X_A"), Some("header"));
    assert_eq!(get(&p, "PATH"), Some("/opt/bin"));
    assert_eq!(get(&p, "SERVER_ADMIN"), Some("ops@example.com"));
    assert_eq!(
        get(&p, "SERVER_SOFTWARE"),
        Some(fcgi_proxy::cgi::SERVER_SOFTWARE)
    );
    // Without a process PATH: Apache's DEFAULT_PATH.
    let mut r = Req::get("/myapp/x");
    r.process_path = None;
    let p = run(&cfg(""), &r).unwrap();
    assert_eq!(get(&p, "PATH"), Some(fcgi_proxy::cgi::DEFAULT_PATH));
}

#[test]
fn no_https_param_on_plain_http() {
    let p = run(&cfg(""), &Req::get("/myapp/x").header("Https", "on")).unwrap();
    assert_eq!(get(&p, "HTTPS"), None);
    assert_eq!(get(&p, "HTTP_HTTPS"), Some("on"));
    assert_eq!(get(&p, "REQUEST_SCHEME"), Some("http"));
}
