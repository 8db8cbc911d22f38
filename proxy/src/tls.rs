//! TLS on the client side of the proxy (rustls with the `ring` provider): certificates loaded
//! from PEM files, the certificate chosen by the name the client sends (SNI), the versions and
//! ALPN protocols a listener offers, and what a request learns about its connection's TLS for
//! the CGI params (`HTTPS`, `SSL_TLS_SNI`).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::tls::{CertFiles, TlsPlan, TlsVersion};

/// What a request's handler knows of its connection's TLS (set once per connection, after the
/// handshake, and handed to every request of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnTls {
    /// The host name the client asked for in its handshake (SNI), lower case.
    pub sni: Option<String>,
}

/// The URL scheme of a request on a connection with (`https`) or without (`http`) TLS.
pub fn scheme(tls: Option<&ConnTls>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// ring, not aws-lc-rs: it builds with the C compiler alone. Its provider is deprecated only for
/// lacking post-quantum key exchange; X25519, P-256 and P-384 remain.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, checked to belong together.
pub fn load_certified_key(f: &CertFiles) -> Result<Arc<CertifiedKey>, String> {
    let read_certs = |path: &str| -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read certificates from {path}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{path}: bad PEM certificate: {e}"))?;
        Ok(certs)
    };
    let mut certs = read_certs(&f.cert)?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate (PEM) in the file", f.cert));
    }
    if let Some(chain) = &f.chain {
        certs.extend(read_certs(chain)?);
    }
    let key = PrivateKeyDer::from_pem_file(&f.key).map_err(|e| {
        format!(
            "{}: no private key (PEM: PKCS#8, RSA or EC) found: {e}",
            f.key
        )
    })?;
    let ck = CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("{} with key {}: {e}", f.cert, f.key))?;
    Ok(Arc::new(ck))
}

/// Picks the certificate by the SNI name: the first entry with a matching pattern, else the
/// default one.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            for (patterns, key) in &self.by_name {
                if patterns
                    .iter()
                    .any(|p| crate::config::read::fnmatch(p.as_bytes(), name.as_bytes()))
                {
                    return Some(key.clone());
                }
            }
        }
        Some(self.default.clone())
    }
}

/// The rustls server configuration of a listener: its certificates (loaded now, so a missing
/// or mismatched file is an error at start), versions, and the ALPN protocols in order.
pub fn server_config(plan: &TlsPlan, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, String> {
    let default = load_certified_key(&plan.default)?;
    let mut by_name = Vec::new();
    for (names, f) in &plan.sni {
        let key = if *f == plan.default {
            default.clone()
        } else {
            load_certified_key(f)?
        };
        by_name.push((names.clone(), key));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = plan
        .versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { default, by_name }));
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A listener's TLS acceptor (tokio-rustls's has no `Debug`).
#[derive(Clone)]
pub struct Acceptor(pub tokio_rustls::TlsAcceptor);

impl core::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

impl Acceptor {
    pub fn new(plan: &TlsPlan, h2: bool, http1: bool) -> Result<Acceptor, String> {
        let mut alpn: Vec<&[u8]> = Vec::new();
        if h2 {
            alpn.push(b"h2");
        }
        if http1 {
            alpn.push(b"http/1.1");
        }
        Ok(Acceptor(tokio_rustls::TlsAcceptor::from(server_config(
            plan, &alpn,
        )?)))
    }
}
