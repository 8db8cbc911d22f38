//! The TLS workloads' pieces: the self-signed certificate every target serves, the check
//! request over HTTPS (HTTP/1.1, or HTTP/2 by ALPN), and what `openssl s_client` negotiates with
//! each target (the load clients, wrk and h2load, use the same OpenSSL with its defaults).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Expect, answer_matches, expect_matches};
use crate::peers::TlsFiles;

/// Every network wait of a check.
const WAIT: Duration = Duration::from_secs(5);

/// The name the certificate is for (besides 127.0.0.1), and the SNI every client sends.
pub const SERVER_NAME: &str = "localhost";

/// `openssl` from Debian's package of that name.
pub const OPENSSL: &str = "openssl";

/// Writes a new self-signed ECDSA P-256 certificate for `localhost` and 127.0.0.1 into `dir`:
/// `cert.pem`, `key.pem` and `cert-key.pem` (both, for HAProxy's `crt`). Returns the files and
/// the certificate (which the check requests trust).
pub fn write_certificate(dir: &Path) -> Result<(TlsFiles, CertificateDer<'static>), String> {
    use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| format!("key: {e}"))?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])
        .map_err(|e| format!("certificate: {e}"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("certificate: {e}"))?;
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        cert_and_key: dir.join("cert-key.pem"),
    };
    let write = |p: &PathBuf, text: String| {
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    write(&files.cert, cert.pem())?;
    write(&files.key, key.serialize_pem())?;
    write(
        &files.cert_and_key,
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )?;
    Ok((files, cert.der().clone()))
}

/// A client trusting only `cert`, offering `alpn` (none: what wrk sends).
#[allow(deprecated)]
fn client_config(
    cert: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert.clone())
        .map_err(|e| format!("certificate: {e}"))?;
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS versions: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

async fn connect(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let cfg = client_config(cert, alpn)?;
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect {addr}: timed out"))?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| format!("TLS handshake: {e}"))
}

/// One GET of `path` over TLS without ALPN (as wrk connects), HTTP/1.1, `Connection: close`;
/// Ok when the answer is `expect`'s.
pub async fn check_https(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    path: &str,
    expect: Expect,
) -> Result<(), String> {
    let mut io = connect(addr, cert, &[]).await?;
    if let Some(p) = io.get_ref().1.alpn_protocol()
        && p != b"http/1.1"
    {
        return Err(format!(
            "ALPN chose {:?} though the client offered none",
            String::from_utf8_lossy(p)
        ));
    }
    let req = format!("GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n");
    tokio::time::timeout(WAIT, io.write_all(req.as_bytes()))
        .await
        .map_err(|_| "write timed out".to_owned())?
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    // Some servers close without a TLS close_notify: what was read so far is the answer.
    let _ = tokio::time::timeout(WAIT, io.read_to_end(&mut resp))
        .await
        .map_err(|_| "read timed out".to_owned())?;
    if answer_matches(&resp, expect) {
        Ok(())
    } else {
        Err(format!(
            "check request over HTTPS for {path} answered {:?} (expected 200, Content-Type {}, \
             a body with {:?})",
            String::from_utf8_lossy(&resp)
                .chars()
                .take(300)
                .collect::<String>(),
            expect.content_type,
            expect.body
        ))
    }
}

/// One GET of `path` over HTTP/2, offering only `h2` by ALPN (as h2load does); Ok when the
/// server chose h2 and answered as `expect`s.
pub async fn check_h2(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    path: &str,
    expect: Expect,
) -> Result<(), String> {
    let io = connect(addr, cert, &[b"h2"]).await?;
    let alpn = io.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() != Some(b"h2") {
        return Err(format!(
            "ALPN did not choose h2 (got {:?})",
            alpn.map(|p| String::from_utf8_lossy(&p).into_owned())
        ));
    }
    let (mut send, conn) = tokio::time::timeout(
        WAIT,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)),
    )
    .await
    .map_err(|_| "HTTP/2 handshake timed out".to_owned())?
    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let req = hyper::Request::get(format!("https://{SERVER_NAME}{path}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP/2 request: {e}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("HTTP/2 body: {e}"))?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if expect_matches(status, &content_type, &body, expect) {
            Ok(())
        } else {
            Err(format!(
                "check request over HTTP/2 for {path} answered {status}, Content-Type \
                 {content_type:?}, body {:?} (expected 200, Content-Type {}, a body with {:?})",
                body.chars().take(200).collect::<String>(),
                expect.content_type,
                expect.body
            ))
        }
    };
    let out = tokio::time::timeout(WAIT, result)
        .await
        .map_err(|_| "HTTP/2 answer timed out".to_owned())?;
    driver.abort();
    out
}

/// What a TLS handshake settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: String,
    pub cipher: String,
    /// `None`: no ALPN.
    pub alpn: Option<String>,
}

impl std::fmt::Display for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}, ALPN {}",
            self.version,
            self.cipher,
            self.alpn.as_deref().unwrap_or("none")
        )
    }
}

/// Reads `openssl s_client`'s report of a handshake (`New, TLSv1.3, Cipher is ...` and
/// `ALPN protocol: h2` or `No ALPN negotiated`).
pub fn parse_s_client(text: &str) -> Result<Negotiated, String> {
    let mut version_cipher = None;
    let mut alpn = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("New, ")
            && let Some((v, c)) = rest.split_once(", Cipher is ")
        {
            version_cipher = Some((v.trim().to_owned(), c.trim().to_owned()));
        } else if let Some(p) = line.strip_prefix("ALPN protocol:") {
            alpn = Some(p.trim().to_owned());
        }
    }
    match version_cipher {
        Some((version, cipher)) if cipher != "(NONE)" => Ok(Negotiated {
            version,
            cipher,
            alpn,
        }),
        _ => Err(format!(
            "no handshake in openssl s_client's output: {:?}",
            text.chars().take(400).collect::<String>()
        )),
    }
}

/// `openssl s_client` against `addr` with OpenSSL's defaults (what wrk and h2load offer),
/// offering `alpn` if given; what was negotiated.
pub fn probe(addr: SocketAddr, alpn: Option<&str>) -> Result<Negotiated, String> {
    let mut c = Command::new(programs::program_path(OPENSSL));
    c.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-servername",
        SERVER_NAME,
    ]);
    if let Some(p) = alpn {
        c.args(["-alpn", p]);
    }
    // stdin at EOF: s_client closes the connection once the handshake is done.
    c.stdin(Stdio::null());
    let out = super::output_within(c, WAIT)?;
    parse_s_client(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_s_client_negotiated() {
        let h2 = "CONNECTED(00000003)\n---\nNo client certificate CA names sent\n\
                  ---\nNew, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384\n\
                  Server public key is 256 bit\nALPN protocol: h2\nEarly data was not sent\n\
                  SSL-Session:\n    Protocol  : TLSv1.3\n";
        assert_eq!(
            parse_s_client(h2).unwrap(),
            Negotiated {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_256_GCM_SHA384".into(),
                alpn: Some("h2".into())
            }
        );
        let plain = "New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256\nNo ALPN negotiated\n";
        let n = parse_s_client(plain).unwrap();
        assert_eq!(n.alpn, None);
        assert_eq!(n.to_string(), "TLSv1.3 TLS_AES_128_GCM_SHA256, ALPN none");
        // A failed handshake.
        let failed = "CONNECTED(00000003)\n---\nNew, (NONE), Cipher is (NONE)\n";
        assert!(parse_s_client(failed).is_err());
        assert!(parse_s_client("connect: Connection refused\n").is_err());
    }

    /// A TLS server on a loopback port offering `alpn`, answering every request (HTTP/1.1 or
    /// HTTP/2) with `body` as `content_type`.
    async fn server(
        dir: &Path,
        alpn: &[&[u8]],
        content_type: &'static str,
    ) -> (SocketAddr, CertificateDer<'static>) {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let (files, der) = write_certificate(dir).unwrap();
        let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
        #[allow(deprecated)]
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |_req| async move {
                        hyper::Response::builder()
                            .header("content-type", content_type)
                            .body(http_body_util::Full::new(Bytes::from_static(
                                b"Hello, world\n",
                            )))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (addr, der)
    }

    #[test]
    fn checks_go_over_the_protocol_asked_for() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let expect = super::super::LIBFCGI_ANSWER;
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let both: &[&[u8]] = &[b"h2", b"http/1.1"];
            let (addr, cert) = server(dir.path(), both, "text/plain").await;
            check_h2(addr, &cert, "/x", expect).await.unwrap();
            check_https(addr, &cert, "/x", expect).await.unwrap();

            // A server without ALPN (HTTP/1.1 only): the HTTP/2 check says h2 was not chosen;
            // HTTPS still passes.
            let dir = tempfile::tempdir().unwrap();
            let (addr, cert) = server(dir.path(), &[], "text/plain").await;
            let err = check_h2(addr, &cert, "/x", expect).await.unwrap_err();
            assert!(err.contains("ALPN did not choose h2 (got None)"), "{err}");
            check_https(addr, &cert, "/x", expect).await.unwrap();
            // One offering only http/1.1 refuses a client wanting h2 (RFC 7301).
            let dir = tempfile::tempdir().unwrap();
            let (addr, cert) = server(dir.path(), &[b"http/1.1"], "text/plain").await;
            let err = check_h2(addr, &cert, "/x", expect).await.unwrap_err();
            assert!(err.contains("TLS handshake"), "{err}");

            // Not the backend's answer.
            let dir = tempfile::tempdir().unwrap();
            let (addr, cert) = server(dir.path(), both, "text/html").await;
            let err = check_h2(addr, &cert, "/x", expect).await.unwrap_err();
            assert!(
                err.contains("answered 200, Content-Type \"text/html\""),
                "{err}"
            );
            assert!(check_https(addr, &cert, "/x", expect).await.is_err());

            // A certificate the check does not trust.
            let other = tempfile::tempdir().unwrap();
            let (_, stranger) = write_certificate(other.path()).unwrap();
            let err = check_https(addr, &stranger, "/x", expect)
                .await
                .unwrap_err();
            assert!(err.contains("TLS handshake"), "{err}");
        });
    }

    #[test]
    fn writes_a_p256_certificate_for_localhost() {
        let dir = tempfile::tempdir().unwrap();
        let (files, der) = write_certificate(dir.path()).unwrap();
        let cert = std::fs::read_to_string(&files.cert).unwrap();
        let key = std::fs::read_to_string(&files.key).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        let both = std::fs::read_to_string(&files.cert_and_key).unwrap();
        assert_eq!(both, format!("{cert}{key}"));
        // The certificate the checks trust is the one written, and is valid for both names.
        let der_bytes: &[u8] = der.as_ref();
        assert!(der_bytes.len() > 100);
        let ecdsa_with_sha256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        let p256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        for oid in [&ecdsa_with_sha256[..], &p256[..]] {
            assert!(der_bytes.windows(oid.len()).any(|w| w == oid), "{oid:x?}");
        }
        assert!(der_bytes.windows(4).any(|w| w == [127, 0, 0, 1]));
        // A second run gets a new key.
        let (files2, _) = write_certificate(dir.path()).unwrap();
        assert_ne!(std::fs::read_to_string(&files2.key).unwrap(), key);
    }
}
