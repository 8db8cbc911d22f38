//! TLS and HTTP/2 on the client side: certificates from PEM files (a chain from a separate
//! file), SNI choosing the certificate, TLS 1.2 and 1.3, ALPN choosing h2 or http/1.1, h2c with
//! prior knowledge, the CGI params a request over TLS or HTTP/2 carries, the handshake timeout,
//! and (when apache2 is installed) the same params compared with real Apache's mod_ssl and
//! mod_http2 for the same configuration file.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fcgi_mock::{MockHandle, MockServer, RequestEntry, Script};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use support::Proc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// A root CA, an intermediate CA under it, and leaf certificates for `a.test` (signed by the
/// intermediate: its chain is in a file of its own) and `b.test` (signed by the root), as PEM
/// files in `dir`.
struct Pki {
    root: CertificateDer<'static>,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p
    };
    let root_key = KeyPair::generate().expect("key");
    let root = ca("test root").self_signed(&root_key).expect("root");
    let int_key = KeyPair::generate().expect("key");
    let int = ca("test intermediate")
        .signed_by(&int_key, &root, &root_key)
        .expect("intermediate");
    let leaf =
        |name: &str, key: &KeyPair, by: &rcgen::Certificate, by_key: &KeyPair, ips: &[&str]| {
            let mut names = vec![name.to_owned()];
            names.extend(ips.iter().map(|s| s.to_string()));
            let mut p = CertificateParams::new(names).expect("params");
            p.distinguished_name.push(DnType::CommonName, name);
            p.signed_by(key, by, by_key).expect("leaf")
        };
    let a_key = KeyPair::generate().expect("key");
    let a = leaf("a.test", &a_key, &int, &int_key, &["127.0.0.1"]);
    let b_key = KeyPair::generate().expect("key");
    let b = leaf("b.test", &b_key, &root, &root_key, &[]);
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).expect("write pem");
    };
    write("a.crt", a.pem());
    write("a.key", a_key.serialize_pem());
    write("chain.crt", int.pem());
    write("b.crt", b.pem());
    write("b.key", b_key.serialize_pem());
    Pki {
        root: root.der().clone(),
    }
}

#[allow(deprecated)]
fn client_config(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root.clone()).expect("root");
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection that verifies the server's certificate for `name` (sent as SNI).
async fn connect_tls(
    addr: SocketAddr,
    name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<Tls, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(cfg).connect(server_name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| format!("handshake with {name}: {e}"))
}

/// An HTTP/1.1 GET over `io` with `Connection: close`; the status.
async fn get_h1<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: &mut S,
    host: &str,
    path: &str,
    case: &str,
) -> u16 {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Case: {case}\r\nConnection: close\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, io.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP/1.1 response: {text:?}"))
}

/// An HTTP/2 GET (hyper's client: `:authority` from the URI, no Host field); the status.
async fn get_h2<S>(io: S, authority: &str, path: &str, case: &str) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://{authority}{path}"))
        .header("x-case", case)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .expect("h2 response in time")
        .expect("h2 response");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// What the backend received for the request marked `case`.
async fn entry(mock: &MockHandle, case: &str) -> RequestEntry {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(e) = mock
            .journal()
            .requests()
            .into_iter()
            .find(|e| e.param("HTTP_X_CASE").as_deref() == Some(case))
        {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend got no request {case}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn p(e: &RequestEntry, name: &str) -> Option<String> {
    e.param(name)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// The proxy on `conf` (written to `dir/proxy.toml`), ready on `front`.
async fn start_proxy(dir: &Path, conf: String, front: SocketAddr) -> Proc {
    let c = dir.join("proxy.toml");
    std::fs::write(&c, conf).expect("write config");
    let l = dir.join("proxy.log");
    blocking(move || support::start_proxy_toml(&c, &l, front))
        .await
        .expect("proxy starts")
}

/// TOML `[[listener]]`s: a TLS one (a chain in its own file, an SNI certificate) and a plain
/// one taking h2c; what each kind of client gets and what the backend is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_sni_versions_alpn_and_h2c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let mock = MockServer::bind_tcp("127.0.0.1:0", Script::default())
        .await
        .expect("mock");
    let backend = mock.socket_addr().expect("tcp");
    let (tls_port, h2c_port, only13_port) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let d = dir.path().display();
    let conf = format!(
        r#"
[[listener]]
addr = "127.0.0.1:{tls_port}"
tls = {{ cert = "{d}/a.crt", key = "{d}/a.key", chain = "{d}/chain.crt", sni = [{{ names = ["b.test"], cert = "{d}/b.crt", key = "{d}/b.key" }}] }}

[[listener]]
addr = "127.0.0.1:{h2c_port}"
protocols = ["h2c", "http/1.1"]

[[listener]]
addr = "127.0.0.1:{only13_port}"
protocols = ["http/1.1"]
tls = {{ cert = "{d}/b.crt", key = "{d}/b.key", versions = ["TLSv1.3"] }}

[[route]]
path = "/app/"
target = "fcgi://{backend}/srv/"
"#
    );
    let front: SocketAddr = format!("127.0.0.1:{tls_port}").parse().expect("addr");
    let proxy = start_proxy(dir.path(), conf, front).await;

    let both = [&rustls::version::TLS13, &rustls::version::TLS12];
    // TLS 1.3, http/1.1 by ALPN, the default certificate (whose chain comes from `chain`).
    let cfg = client_config(&pki, &both, &[b"http/1.1"]);
    let mut s = connect_tls(front, "a.test", cfg).await.expect("a.test");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let host = format!("a.test:{tls_port}");
    assert_eq!(get_h1(&mut s, &host, "/app/x.php?q=1", "h1-a").await, 200);
    let e = entry(&mock, "h1-a").await;
    assert_eq!(p(&e, "HTTPS").as_deref(), Some("on"));
    assert_eq!(p(&e, "SSL_TLS_SNI").as_deref(), Some("a.test"));
    assert_eq!(p(&e, "REQUEST_SCHEME").as_deref(), Some("https"));
    assert_eq!(p(&e, "SERVER_PORT"), Some(tls_port.to_string()));
    assert_eq!(p(&e, "SERVER_PROTOCOL").as_deref(), Some("HTTP/1.1"));
    assert_eq!(p(&e, "HTTP2"), None);

    // TLS 1.2 only, SNI b.test: b's certificate (verified for that name), h2 by ALPN.
    let cfg = client_config(&pki, &[&rustls::version::TLS12], &[b"h2", b"http/1.1"]);
    let s = connect_tls(front, "b.test", cfg).await.expect("b.test");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let authority = format!("b.test:{tls_port}");
    assert_eq!(get_h2(s, &authority, "/app/y.php", "h2-b").await, 200);
    let e = entry(&mock, "h2-b").await;
    assert_eq!(p(&e, "SSL_TLS_SNI").as_deref(), Some("b.test"));
    assert_eq!(p(&e, "SERVER_PROTOCOL").as_deref(), Some("HTTP/2.0"));
    assert_eq!(p(&e, "HTTP2").as_deref(), Some("on"));
    assert_eq!(p(&e, "HTTP_HOST"), Some(authority.clone()));
    assert_eq!(p(&e, "SERVER_NAME").as_deref(), Some("b.test"));
    assert_eq!(p(&e, "REQUEST_URI").as_deref(), Some("/app/y.php"));
    assert_eq!(
        p(&e, "SCRIPT_FILENAME").as_deref(),
        Some(format!("proxy:fcgi://{backend}/srv/y.php").as_str())
    );

    // A name with no certificate of its own gets the default one: a client expecting b's
    // certificate for c.test refuses it (it is a's, not valid for c.test).
    let cfg = client_config(&pki, &both, &[b"http/1.1"]);
    assert!(connect_tls(front, "c.test", cfg).await.is_err());

    // h2c with prior knowledge on the plain listener; HTTP/1.1 still served there.
    let h2c: SocketAddr = format!("127.0.0.1:{h2c_port}").parse().expect("addr");
    let tcp = TcpStream::connect(h2c).await.expect("connect h2c");
    assert_eq!(
        get_h2(tcp, &format!("127.0.0.1:{h2c_port}"), "/app/z.php", "h2c").await,
        200
    );
    let e = entry(&mock, "h2c").await;
    assert_eq!(p(&e, "HTTP2").as_deref(), Some("on"));
    assert_eq!(p(&e, "HTTPS"), None);
    assert_eq!(p(&e, "REQUEST_SCHEME").as_deref(), Some("http"));
    let mut tcp = TcpStream::connect(h2c).await.expect("connect h1");
    let host = format!("127.0.0.1:{h2c_port}");
    assert_eq!(get_h1(&mut tcp, &host, "/app/w.php", "h1-plain").await, 200);
    assert_eq!(
        p(&entry(&mock, "h1-plain").await, "SERVER_PROTOCOL").as_deref(),
        Some("HTTP/1.1")
    );

    // versions = ["TLSv1.3"]: a TLS 1.2 client is refused.
    let only13: SocketAddr = format!("127.0.0.1:{only13_port}").parse().expect("addr");
    let cfg = client_config(&pki, &[&rustls::version::TLS12], &[b"http/1.1"]);
    assert!(connect_tls(only13, "b.test", cfg).await.is_err());
    let cfg = client_config(&pki, &both, &[b"h2", b"http/1.1"]);
    let s = connect_tls(only13, "b.test", cfg).await.expect("TLS 1.3");
    // Only http/1.1 offered there.
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    blocking(move || drop(proxy)).await;
}

/// A client that connects and never completes its handshake loses its connection after
/// `timeouts.tls_handshake`: with one connection slot, the next client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_frees_its_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let mock = MockServer::bind_tcp("127.0.0.1:0", Script::default())
        .await
        .expect("mock");
    let backend = mock.socket_addr().expect("tcp");
    let port = support::free_port();
    let d = dir.path().display();
    let conf = format!(
        r#"
workers = 1
[timeouts]
tls_handshake = "300ms"
[limits]
max_connections = 1

[[listener]]
addr = "127.0.0.1:{port}"
tls = {{ cert = "{d}/b.crt", key = "{d}/b.key" }}

[[route]]
path = "/app/"
target = "fcgi://{backend}/"
"#
    );
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let proxy = start_proxy(dir.path(), conf, front).await;
    // Give the readiness probe's connection time to be dropped.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Takes the only slot: a TCP connection that sends half a ClientHello and stops.
    let mut staller = TcpStream::connect(front).await.expect("connect");
    staller
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = std::time::Instant::now();
    let cfg = client_config(&pki, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let mut s = connect_tls(front, "b.test", cfg)
        .await
        .expect("served once the staller's handshake time is up");
    assert_eq!(
        get_h1(&mut s, &format!("b.test:{port}"), "/app/x", "after-staller").await,
        200
    );
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "the second client waited {waited:?}"
    );
    // The staller's connection was closed by the proxy.
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(2), staller.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "stalled handshake still open: {r:?}"
    );
    blocking(move || drop(proxy)).await;
}

/// A directory asked for without its slash over HTTPS is redirected to an `https://` URL (the
/// scheme the client used, as Apache under mod_ssl); over plain HTTP to an `http://` one.
#[tokio::test]
async fn directory_redirect_keeps_the_scheme() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    std::fs::create_dir_all(dir.path().join("www/docs")).expect("docs dir");
    std::fs::write(dir.path().join("www/docs/index.html"), "hi").expect("index");
    let (tls_port, plain_port) = (support::free_port(), support::free_port());
    let d = dir.path().display();
    let conf = format!(
        r#"
[[listener]]
addr = "127.0.0.1:{tls_port}"
tls = {{ cert = "{d}/a.crt", key = "{d}/a.key", chain = "{d}/chain.crt" }}

[[listener]]
addr = "127.0.0.1:{plain_port}"

[[site]]
root = "{d}/www"
"#
    );
    let front: SocketAddr = format!("127.0.0.1:{tls_port}").parse().expect("addr");
    let proxy = start_proxy(dir.path(), conf, front).await;
    async fn location<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        io: &mut S,
        host: &str,
    ) -> String {
        let req = format!("GET /docs HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        io.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(WAIT, io.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        assert!(text.starts_with("HTTP/1.1 301"), "{text}");
        text.lines()
            .find_map(|l| {
                l.strip_prefix("location: ")
                    .or_else(|| l.strip_prefix("Location: "))
            })
            .unwrap_or_else(|| panic!("no Location: {text}"))
            .to_owned()
    }
    let cfg = client_config(&pki, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let mut s = connect_tls(front, "a.test", cfg).await.expect("a.test");
    let host = format!("a.test:{tls_port}");
    assert_eq!(
        location(&mut s, &host).await,
        format!("https://{host}/docs/")
    );
    let mut tcp = TcpStream::connect(("127.0.0.1", plain_port))
        .await
        .expect("plain");
    let host = format!("a.test:{plain_port}");
    assert_eq!(
        location(&mut tcp, &host).await,
        format!("http://{host}/docs/")
    );
    blocking(move || drop(proxy)).await;
}

/// Apache with mod_ssl and mod_http2, and `fcgi-proxy --apache`, read the same file: two
/// TLS virtual hosts on one port. Each request (HTTP/1.1 and HTTP/2, each SNI name, no SNI)
/// goes through each in turn, on the same port, to the same backend; the params each sent
/// compare in names, order and values, but for what is the process's own (PATH,
/// SERVER_SOFTWARE, REMOTE_PORT) and mod_http2's stream numbering (H2_STREAM_ID,
/// H2_STREAM_TAG, which hyper does not expose).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_params_match_apache_mod_ssl_and_mod_http2() {
    let Some(apache) = programs::require_program("apache2", "apache2") else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("tls-parity-")
        .tempdir()
        .expect("tempdir");
    support::open_up_dir(dir.path());
    let pki = make_pki(dir.path());
    let mock = MockServer::bind_tcp("127.0.0.1:0", Script::default())
        .await
        .expect("mock");
    let backend = mock.socket_addr().expect("tcp");
    let port = support::free_port();
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let d = dir.path().display();
    let conf = format!(
        r#"ServerRoot "{d}"
PidFile "{d}/httpd.pid"
DefaultRuntimeDir "{d}"
ErrorLog "{d}/error.log"
LogLevel warn
Mutex file:{d} default
User www-data
Group www-data
LoadModule mpm_event_module   /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module  /usr/lib/apache2/modules/mod_authz_core.so
LoadModule proxy_module       /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_fcgi_module  /usr/lib/apache2/modules/mod_proxy_fcgi.so
LoadModule ssl_module         /usr/lib/apache2/modules/mod_ssl.so
LoadModule http2_module       /usr/lib/apache2/modules/mod_http2.so
Listen 127.0.0.1:{port} https
ServerName main.test
DocumentRoot "{d}"
<VirtualHost *:{port}>
  ServerName a.test
  SSLEngine on
  SSLProtocol all -SSLv3
  Protocols h2 http/1.1
  SSLCertificateFile {d}/a.crt
  SSLCertificateKeyFile {d}/a.key
  SSLCertificateChainFile {d}/chain.crt
  ProxyPass "/app/" "fcgi://{backend}/a/" disablereuse=on
</VirtualHost>
<VirtualHost *:{port}>
  ServerName b.test
  SSLEngine on
  Protocols h2 http/1.1
  SSLCertificateFile {d}/b.crt
  SSLCertificateKeyFile {d}/b.key
  ProxyPass "/app/" "fcgi://{backend}/b/" disablereuse=on
</VirtualHost>
"#
    );
    let conf_path = dir.path().join("httpd.conf");
    std::fs::write(&conf_path, conf).expect("write config");
    for f in [
        "a.crt",
        "a.key",
        "chain.crt",
        "b.crt",
        "b.key",
        "httpd.conf",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let _ =
            std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o644));
    }

    // (case, SNI name, h2)
    let cases: &[(&str, &str, bool)] = &[
        ("h1-a", "a.test", false),
        ("h2-a", "a.test", true),
        ("h2-b", "b.test", true),
        ("h1-b", "b.test", false),
        ("h1-nosni", "127.0.0.1", false),
    ];
    let both = [&rustls::version::TLS13, &rustls::version::TLS12];
    let run = |side: &'static str| {
        let mock = &mock;
        let pki = &pki;
        async move {
            let mut got = Vec::new();
            for (case, name, h2) in cases {
                let tag = format!("{side}-{case}");
                let alpn: &[&[u8]] = if *h2 { &[b"h2"] } else { &[b"http/1.1"] };
                let s = connect_tls(front, name, client_config(pki, &both, alpn))
                    .await
                    .unwrap_or_else(|e| panic!("{side} {case}: {e}"));
                let authority = format!("{name}:{port}");
                let status = if *h2 {
                    get_h2(s, &authority, "/app/x.php?q=1", &tag).await
                } else {
                    let mut s = s;
                    get_h1(&mut s, &authority, "/app/x.php?q=1", &tag).await
                };
                assert_eq!(status, 200, "{side} {case}");
                let e = entry(mock, &tag).await;
                let params: Vec<(String, String)> = e
                    .params_lossy()
                    .into_iter()
                    .filter(|(n, _)| {
                        !matches!(
                            n.as_str(),
                            "PATH"
                                | "SERVER_SOFTWARE"
                                | "REMOTE_PORT"
                                | "H2_STREAM_ID"
                                | "H2_STREAM_TAG"
                        )
                    })
                    .map(|(n, v)| {
                        let v = if n == "HTTP_X_CASE" {
                            case.to_string()
                        } else {
                            v
                        };
                        (n, v)
                    })
                    .collect();
                got.push((case.to_string(), params));
            }
            got
        }
    };

    let (c, l) = (conf_path.clone(), dir.path().to_path_buf());
    let proxy: Proc = blocking(move || support::start_proxy_apache(&c, &l, front))
        .await
        .expect("proxy starts");
    let ours = run("ours").await;
    blocking(move || drop(proxy)).await;

    let (c, l) = (conf_path.clone(), dir.path().to_path_buf());
    let httpd: Proc = blocking(move || support::start_apache(&apache, &c, &l, front)).await;
    let theirs = run("apache").await;
    blocking(move || drop(httpd)).await;

    let mut report = String::new();
    for ((case, a), (_, o)) in theirs.iter().zip(&ours) {
        if a != o {
            report.push_str(&format!(
                "\n[{case}]\n  Apache:     {a:?}\n  fcgi-proxy: {o:?}\n"
            ));
        }
    }
    assert!(report.is_empty(), "params differ from Apache's:{report}");
    // The comparison saw what it is about.
    let h2a = &theirs[1].1;
    assert!(h2a.contains(&("HTTPS".into(), "on".into())));
    assert!(h2a.contains(&("SSL_TLS_SNI".into(), "a.test".into())));
    assert!(h2a.contains(&("SERVER_PROTOCOL".into(), "HTTP/2.0".into())));
    assert!(!theirs[4].1.iter().any(|(n, _)| n == "SSL_TLS_SNI"));
}

/// `curl --http2` over TLS to a PHP script behind real php-fpm: what PHP sees in `$_SERVER`
/// is what a browser request through Apache with mod_ssl and mod_http2 gives it.
#[test]
fn curl_http2_through_php_fpm() {
    let Some(fpm_bin) = support::fpm::php_fpm_bin() else {
        return;
    };
    let Some(curl) = programs::require_program("curl", "curl") else {
        return;
    };
    let _serial = support::fpm::serial();
    let fpm = support::fpm::Fpm::start(&fpm_bin, support::fpm::Pm::Static(2));
    std::fs::write(
        fpm.docroot.join("server.php"),
        "<?php\nheader('Content-Type: application/json');\necho json_encode($_SERVER);\n",
    )
    .expect("server.php");
    let dir = tempfile::tempdir().expect("tempdir");
    let _pki = make_pki(dir.path());
    let port = support::free_port();
    let d = dir.path().display();
    let conf = format!(
        r#"
[[listener]]
addr = "127.0.0.1:{port}"
tls = {{ cert = "{d}/b.crt", key = "{d}/b.key" }}

[[route]]
path = "/app/"
target = "fcgi://127.0.0.1:{}{}/"
"#,
        fpm.port,
        fpm.docroot.display()
    );
    let conf_path = dir.path().join("proxy.toml");
    std::fs::write(&conf_path, conf).expect("write config");
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let proxy = support::start_proxy_toml(&conf_path, &dir.path().join("proxy.log"), front)
        .expect("proxy starts");
    let out = std::process::Command::new(curl)
        .args(["--http2", "-sS", "--max-time", "10", "--cacert"])
        .arg(dir.path().join("b.crt"))
        .arg("--resolve")
        .arg(format!("b.test:{port}:127.0.0.1"))
        .args(["-H", "Accept-Language: en", "-w", "\n%{http_version}"])
        .arg(format!("https://b.test:{port}/app/server.php/extra?q=1"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {}\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.output()
    );
    let (json, version) = text.rsplit_once('\n').expect("body and version");
    assert_eq!(version, "2", "not HTTP/2");
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let port_s = port.to_string();
    for (k, want) in [
        ("HTTPS", "on"),
        ("SSL_TLS_SNI", "b.test"),
        ("REQUEST_SCHEME", "https"),
        ("SERVER_PROTOCOL", "HTTP/2.0"),
        ("HTTP2", "on"),
        ("SERVER_NAME", "b.test"),
        ("SERVER_PORT", port_s.as_str()),
        ("HTTP_HOST", format!("b.test:{port}").as_str()),
        ("HTTP_ACCEPT_LANGUAGE", "en"),
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/app/server.php/extra?q=1"),
        ("SCRIPT_NAME", "/app/server.php"),
        ("PATH_INFO", "/extra"),
        ("QUERY_STRING", "q=1"),
    ] {
        assert_eq!(v[k].as_str(), Some(want), "{k} in {v}");
    }
    assert!(
        v["HTTP_USER_AGENT"]
            .as_str()
            .is_some_and(|u| u.starts_with("curl/")),
        "{v}"
    );
    drop(proxy);
}
