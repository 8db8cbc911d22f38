//! The Apache directive importer on arbitrary text; on success the configuration is validated,
//! described, and routed through (the router compiles every ProxyPassMatch regex).
#![no_main]

use fcgi_proxy::config::apache;
use fcgi_proxy::route::Router;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok((cfg, warnings)) = apache::parse(&text, "fuzz.conf") else {
        return;
    };
    for w in &warnings {
        let _ = w.to_string();
    }
    let _ = cfg.describe();
    if cfg.validate().is_err() {
        return;
    }
    if let Ok(router) = Router::new(&cfg) {
        for p in [&b"/"[..], b"/index.php", b"/a/b/c.php/x", b"/x%2Fy"] {
            let _ = router.route_path(p, Some(p));
        }
    }
});
