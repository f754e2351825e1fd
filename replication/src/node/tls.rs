//! TLS between sites (mutual: each end presents a certificate signed by the group's CA and
//! checks the other's), under the HMAC handshake, which stays: TLS keeps the traffic private and
//! proves the peer holds a certificate of the group; the handshake still proves the group secret
//! and names the site. rustls with the `ring` provider; the real network only, since the
//! simulator's links need no encryption (and a simulated run must not depend on a real crypto
//! library's randomness).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a site's TLS material lives: its certificate chain and private key, and the group's
/// CA certificate(s), all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The site's certificate (chain), PEM.
    pub cert: PathBuf,
    /// The site's private key, PEM.
    pub key: PathBuf,
    /// The group's CA certificate(s), PEM: peers must present a certificate it signed.
    pub ca: PathBuf,
}

/// A site's TLS configuration, loaded once: what it dials and accepts with.
#[derive(Clone)]
pub struct Tls {
    #[cfg(not(madsim))]
    pub(super) connector: tokio_rustls::TlsConnector,
    #[cfg(not(madsim))]
    pub(super) acceptor: tokio_rustls::TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls { .. }")
    }
}

/// Shares one [`Tls`] among a node's connections; none for plain TCP.
#[derive(Clone, Debug, Default)]
pub struct TlsHandle(pub Option<Arc<Tls>>);

/// The same TLS setup, not merely equal files.
impl PartialEq for TlsHandle {
    fn eq(&self, other: &TlsHandle) -> bool {
        super::same_shared(&self.0, &other.0)
    }
}

impl Eq for TlsHandle {}

impl Tls {
    /// Reads and checks the files; an error names the file and what was wrong.
    #[cfg(not(madsim))]
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no PEM certificate in it", path.display()));
            }
            Ok(certs)
        };
        let chain = certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| format!("{}: no usable private key: {e}", files.key.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certs(&files.ca)? {
            roots
                .add(ca)
                .map_err(|e| format!("{}: {e}", files.ca.display()))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("{}: {e}", files.ca.display()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// The simulator has no TLS.
    #[cfg(madsim)]
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        Err(format!(
            "{}: TLS needs the real network, not the simulator",
            files.cert.display()
        ))
    }
}

/// The name a dialled peer's certificate must carry: the host of its address (an IP address or
/// a DNS name).
#[cfg(not(madsim))]
pub(super) fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{addr}: not a name a certificate can carry: {e}"))
}
