//! `proxy-fcgi-pathinfo=full` through the running proxy: the script is found by walking the
//! real filesystem (in the blocking pool, or on the serving thread where `filesystem_lookups`
//! allows it), and the backend gets the split the walk found, wherever it ran.

mod front;

use fcgi_proxy::mounts::LookupMode;
use front::{T, get, mock, send, start, within};
use http::StatusCode;

#[tokio::test]
async fn full_pathinfo_walks_the_filesystem_where_lookups_run() {
    for mode in [
        LookupMode::Pool,
        LookupMode::ServingThread,
        LookupMode::Auto,
    ] {
        walk_with(mode).await;
    }
}

async fn walk_with(mode: LookupMode) {
    within(T, async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_string();
        std::fs::create_dir_all(format!("{root}/app/sub")).unwrap();
        std::fs::write(format!("{root}/app/index.php"), "<?php").unwrap();
        let m = mock("").await;
        let conf = format!("ProxyPass /docr/ fcgi://{}{root}/\n", m.addr());
        let f = start(&conf, |c| {
            c.routes[0].pathinfo = Some("full".into());
            c.filesystem_lookups = mode;
        })
        .await;

        let r = send(&f, get("/docr/app/index.php/extra/p.x?x=1")).await;
        assert_eq!(r.status, StatusCode::OK, "{mode:?}");
        let r2 = send(&f, get("/docr/app/sub/missing")).await;
        assert_eq!(r2.status, StatusCode::OK);
        let reqs = m.journal().snapshot().requests;
        assert_eq!(
            reqs[0].param("SCRIPT_FILENAME").as_deref(),
            Some(format!("{root}/app/index.php").as_str())
        );
        assert_eq!(
            reqs[0].param("PATH_INFO").as_deref(),
            Some("/extra/p.x"),
            "{mode:?}"
        );
        assert_eq!(
            reqs[0].param("SCRIPT_NAME").as_deref(),
            Some("/docr/app/index.php")
        );
        // Nothing on disk past a directory: the proxy: filename, no PATH_INFO.
        assert_eq!(
            reqs[1].param("SCRIPT_FILENAME").as_deref(),
            Some(format!("proxy:fcgi://{}{root}/app/sub/missing", m.addr()).as_str())
        );
        assert_eq!(reqs[1].param("PATH_INFO"), None);
    })
    .await;
}
