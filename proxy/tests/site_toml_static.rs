//! A TOML `[[site]]` with only a `root` serves its files (no PHP handler needed) and answers
//! 404 for what is not there.

use std::sync::Arc;

use fcgi_proxy::config::Config;
use fcgi_proxy::handler::Proxy;
use fcgi_proxy::net::TokioConnector;
use fcgi_proxy::server::{self, FrontSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_site_with_only_a_root_serves_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from the root\n").unwrap();
    let toml = format!("listen = [\"127.0.0.1:0\"]\n[[site]]\nroot = \"{root}\"\n");
    let cfg = Config::from_toml_str(&toml, "site.toml").unwrap();
    let warnings = cfg.validate().unwrap();
    assert!(
        warnings.iter().all(|w| !w.to_string().contains("404")),
        "{warnings:?}"
    );
    let front = FrontSettings::from_config(&cfg);
    let proxy = Arc::new(Proxy::new(Arc::new(cfg), TokioConnector).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(server::serve(listener, proxy, front, rx));

    let ok = get(&addr, "/hello.txt").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("hello from the root\n"), "{ok}");
    let missing = get(&addr, "/nope.txt").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}
