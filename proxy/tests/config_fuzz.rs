//! The configuration parsers never panic, whatever the input.

use fcgi_proxy::config::{Condition, Config, FcgiSetEnvIf, Target, ValueExpr, apache};
use proptest::prelude::*;

fn apache_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("Listen 80".to_string()),
        Just("ProxyPass /a/ fcgi://h:1/".to_string()),
        Just("ProxyPassMatch ^/(.*)$ fcgi://h:1/$1".to_string()),
        Just("<Location /x>".to_string()),
        Just("</Location>".to_string()),
        Just("<Proxy balancer://p>".to_string()),
        Just("</Proxy>".to_string()),
        Just("BalancerMember fcgi://h:2 loadfactor=3".to_string()),
        Just("ProxySet lbmethod=bybusyness".to_string()),
        Just("SetEnvIf Request_URI . a=b".to_string()),
        Just("ProxyFCGISetEnvIf true X".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("<".to_string()),
        Just("é".to_string()),
        "[ -~]{0,20}",
        "\\PC{0,10}",
    ];
    proptest::collection::vec(line, 0..12).prop_map(|v| v.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn apache_importer_never_panics(text in apache_text()) {
        if let Ok((cfg, _)) = apache::parse(&text, "fuzz.conf") {
            let _ = cfg.validate();
            let _ = cfg.describe();
        }
    }

    #[test]
    fn toml_loader_never_panics(text in "\\PC{0,200}") {
        let _ = Config::from_toml_str(&text, "fuzz.toml");
    }

    #[test]
    fn expressions_never_panic(s in "\\PC{0,40}", t in "[ -~]{0,40}") {
        let _ = Condition::parse(&s);
        let _ = Condition::parse(&t);
        let _ = Condition::parse(&format!("reqenv('{t}') =~ m{s}"));
        let _ = Condition::parse(&format!("req(\"{s}\") == '{t}'"));
        let _ = ValueExpr::parse(&s);
        let _ = ValueExpr::parse(&t);
        let _ = FcgiSetEnvIf::new(&t, &s, Some(&t));
    }

    #[test]
    fn targets_never_panic(s in "\\PC{0,40}", t in "[ -~]{0,40}") {
        let _ = Target::parse(&s);
        let _ = Target::parse(&format!("fcgi://{t}"));
        let _ = Target::parse(&format!("unix:{t}|fcgi://{s}"));
        let _ = Target::parse(&format!("balancer://{s}"));
    }
}
