//! The configuration shown in README.md is a real one: it loads, validates, and says what the
//! README says it does.

use fcgi_proxy::config::{Config, LbMethod, Target};

fn readme_toml() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = readme[start..].find("```").expect("closed block");
    readme[start..start + len].to_string()
}

#[test]
fn readme_configuration_loads_and_means_what_it_says() {
    let cfg = Config::from_toml_str(&readme_toml(), "README.md").expect("README config loads");
    cfg.validate().expect("README config validates");
    assert_eq!(cfg.routes.len(), 4);
    let app = &cfg.routes[0];
    assert_eq!(app.path.as_deref(), Some("/app/"));
    assert!(app.worker.reuse, "reuse is on unless turned off");
    assert_eq!(app.worker.max, Some(10));
    assert!(!cfg.routes[1].worker.reuse, "disablereuse route");
    assert!(matches!(cfg.routes[3].target, Target::Balancer(_)));
    let b = &cfg.balancers[0];
    assert_eq!(b.lbmethod, LbMethod::Byrequests);
    assert_eq!(b.members.len(), 3);
    assert!(b.members[2].status.hot_standby);
    assert_eq!(b.sticky_names(), Some(("ROUTEID", "ROUTEID")));
    assert_eq!(b.members[0].route.as_deref(), Some("a"));
    assert_eq!(cfg.admin_listen.as_deref(), Some("127.0.0.1:9180"));
}

/// The `[[site]]` block of README.md (its second TOML block) loads and validates.
#[test]
fn readme_site_loads() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let block = readme
        .split("```toml\n")
        .nth(2)
        .and_then(|b| b.split("```").next())
        .expect("a second toml block");
    let cfg = Config::from_toml_str(block, "README.md").expect("README site loads");
    cfg.validate().expect("README site validates");
    assert_eq!(cfg.sites.len(), 1);
    assert!(cfg.site.serves_files());
}
