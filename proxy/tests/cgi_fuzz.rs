//! build_params never panics, and its output keeps the safety invariants whatever the request:
//! no HTTP_PROXY, no raw CR/LF/NUL in path-derived params, SCRIPT_NAME a prefix of the decoded
//! path, every param name unique.

mod cgi_support;

use cgi_support::{Req, run, toml_config};
use fcgi_proxy::config::Config;
use proptest::prelude::*;

fn configs() -> &'static [Config] {
    static CONFIGS: std::sync::OnceLock<Vec<Config>> = std::sync::OnceLock::new();
    CONFIGS.get_or_init(build_configs)
}

fn build_configs() -> Vec<Config> {
    let mut out = Vec::new();
    for mode in ["", "1", "unescape", "first-dot", "last-dot", "full"] {
        for generic in [false, true] {
            for nocanon in [false, true] {
                let mut t = String::from(
                    "listen = [\"80\"]\n[[route]]\npath = \"/a/\"\ntarget = \"fcgi://h:1/base/\"\n",
                );
                if !mode.is_empty() {
                    t.push_str(&format!("pathinfo = \"{mode}\"\n"));
                }
                if generic {
                    t.push_str("backend_type = \"generic\"\n");
                }
                if nocanon {
                    t.push_str("nocanon = true\n");
                }
                t.push_str("[[route]]\nregex = '^/r/(.*)$'\ntarget = \"fcgi://h:1/x/$1\"\n");
                t.push_str("[[route]]\npath = \"/\"\ntarget = \"balancer://p/\"\n");
                t.push_str("[[balancer]]\nname = \"p\"\nmember = [{ url = \"fcgi://m:2/mb\" }]\n");
                out.push(toml_config(&t));
            }
        }
    }
    out
}

fn target() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("a".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2F".to_string()),
        Just("%20".to_string()),
        Just("%0a".to_string()),
        Just("%25".to_string()),
        Just("%3F".to_string()),
        Just("?".to_string()),
        Just("r/".to_string()),
        Just(".php".to_string()),
        Just("%C8%BA".to_string()),
        "[!-~]{0,3}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

fn header() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            Just("Proxy".to_string()),
            Just("proxy".to_string()),
            Just("Host".to_string()),
            Just("X_Under".to_string()),
            Just("Content-Length".to_string()),
            Just("Authorization".to_string()),
            Just("Max-Forwards".to_string()),
            "[A-Za-z0-9_.-]{1,8}",
        ],
        "[ -~]{0,10}",
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn invariants(t in target(), headers in proptest::collection::vec(header(), 0..6), cfg_idx in 0usize..24) {
        let cfgs = configs();
        let cfg = &cfgs[cfg_idx % cfgs.len()];
        let mut req = Req::get(&t);
        for (n, v) in &headers {
            req = req.header(n, v);
        }
        let Ok(p) = run(cfg, &req) else { return Ok(()); };
        let mut names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        prop_assert_eq!(before, names.len(), "duplicate param names");
        prop_assert!(!p.iter().any(|(n, _)| n.eq_ignore_ascii_case("HTTP_PROXY")));
        for (n, v) in &p {
            if ["SCRIPT_NAME", "PATH_INFO", "SCRIPT_FILENAME", "PATH_TRANSLATED"].contains(&n.as_str()) {
                prop_assert!(!v.contains(['\r', '\n', '\0']), "{n}={v:?}");
            }
        }
        let uri = fcgi_proxy::uri::parse_target(&t, &cfg.uri_options()).unwrap();
        let sn = p.iter().find(|(n, _)| n == "SCRIPT_NAME").unwrap();
        prop_assert!(String::from_utf8_lossy(&uri.path).starts_with(sn.1.as_str()));
    }
}
