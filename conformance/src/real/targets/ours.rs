//! fcgi-proxy: the scenario's own configuration (as the simulator runs it), as a TOML file.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::scenario::Scenario;

use super::super::RealOptions;
use super::Generated;

pub(super) fn config(
    s: &Scenario,
    backends: &BTreeMap<String, SocketAddr>,
    listen: SocketAddr,
    opts: &RealOptions,
) -> Result<Generated, String> {
    let mut cfg = crate::ours::config(s)?;
    if s.speaks_h2c() {
        cfg.listen = Vec::new();
        cfg.listeners = vec![fcgi_proxy::config::tls::Listener {
            addr: listen.to_string(),
            tls: None,
            protocols: Some(vec!["h2c".into(), "http/1.1".into()]),
        }];
    } else {
        cfg.listen = vec![listen.to_string()];
    }
    let mut text = toml::to_string(&cfg).map_err(|e| format!("config as TOML: {e}"))?;
    for b in &s.backends {
        if let Some(real) = backends.get(&b.name) {
            text = text.replace(
                &format!("fcgi://{}", b.authority()),
                &format!("fcgi://{real}"),
            );
        }
    }
    Ok(Generated::new(
        "proxy.toml",
        text,
        vec![
            opts.proxy_bin.display().to_string(),
            "--config".into(),
            "proxy.toml".into(),
        ],
    ))
}
