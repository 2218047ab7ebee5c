//! Serving over mutual TLS with rustls.
//!
//! The server presents a certificate from the control plane's CA and asks
//! every client for a certificate from the same CA. A client may connect
//! without one (it has none before it enrolls), but then every runtime
//! operation answers 401: [`crate::auth`] checks that the certificate of the
//! connection is the one the runtime was issued. A certificate from any other
//! CA fails the handshake.
//!
//! [`crate::server`] runs each handshake in the connection's own task,
//! bounded in time, and hands the handlers the client certificate's SHA-256
//! in [`TlsPeer`].

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use crate::ca::{CaError, CertificateAuthority, SERVER_VALIDITY};

/// TLS settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA could not make the server certificate.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// rustls refused the configuration.
    #[error("invalid TLS configuration: {0}")]
    Rustls(String),
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The client's address.
    pub address: SocketAddr,
    /// The SHA-256 (hex) of the client certificate, if it sent one (its
    /// chain to the CA is already verified).
    pub client_certificate: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server certificate: made by the CA for the server's names, and made
/// again once two thirds of its lifetime are over, so that a control plane
/// that runs for years never presents an expired certificate.
#[derive(Debug)]
pub struct RenewingCertificate {
    ca: Arc<CertificateAuthority>,
    names: Vec<String>,
    validity: Duration,
    provider: Arc<CryptoProvider>,
    /// The certificate in use, and when to replace it.
    current: RwLock<(Arc<CertifiedKey>, SystemTime)>,
}

impl RenewingCertificate {
    /// A first certificate for `names`, valid for `validity`.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        names: &[String],
        validity: Duration,
    ) -> Result<Self, TlsSetupError> {
        let provider = provider();
        let current = issue(&ca, names, validity, &provider)?;
        Ok(Self {
            ca,
            names: names.to_vec(),
            validity,
            provider,
            current: RwLock::new(current),
        })
    }

    /// The certificate to present now, renewed first if it is due (if that
    /// fails, the current one is kept and the failure logged).
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        let (key, renew_at) = match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if SystemTime::now() < renew_at {
            return key;
        }
        match issue(&self.ca, &self.names, self.validity, &self.provider) {
            Ok(fresh) => {
                tracing::info!("renewed the server certificate");
                let key = fresh.0.clone();
                match self.current.write() {
                    Ok(mut current) => *current = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                key
            }
            Err(error) => {
                tracing::error!(%error, "cannot renew the server certificate; keeping the current one");
                key
            }
        }
    }
}

impl ResolvesServerCert for RenewingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

fn issue(
    ca: &CertificateAuthority,
    names: &[String],
    validity: Duration,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, SystemTime), TlsSetupError> {
    let (cert, key) = ca.server_certificate(names, validity)?;
    let chain = vec![cert, ca.certificate_der().clone()];
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    Ok((Arc::new(key), SystemTime::now() + validity * 2 / 3))
}

/// The rustls server configuration: a certificate for `names` (renewed as
/// it nears its end), and client certificates verified against the CA
/// (optional at the TLS layer, required by the runtime endpoints).
pub fn server_config(
    ca: Arc<CertificateAuthority>,
    names: &[String],
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let rustls_error = |e: &dyn std::fmt::Display| TlsSetupError::Rustls(e.to_string());
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.certificate_der().clone())
        .map_err(|e| rustls_error(&e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls_error(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| rustls_error(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(RenewingCertificate::new(
            ca,
            names,
            SERVER_VALIDITY,
        )?));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server's TLS settings without client certificates, as a Compliance
/// Framework API serves: the server proves itself with a certificate from
/// the CA; runtimes prove themselves with their client secret alone
/// (`serve --compliance-framework-only`).
pub fn server_config_without_client_certificates(
    ca: Arc<CertificateAuthority>,
    names: &[String],
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let rustls_error = |e: &dyn std::fmt::Display| TlsSetupError::Rustls(e.to_string());
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| rustls_error(&e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(RenewingCertificate::new(
            ca,
            names,
            SERVER_VALIDITY,
        )?));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_is_renewed_after_two_thirds_of_its_life() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(CertificateAuthority::load_or_create(dir.path()).unwrap());
        let names = ["localhost".to_string()];
        let certificate = RenewingCertificate::new(ca, &names, Duration::from_secs(3)).unwrap();
        let first = certificate.certified_key();
        assert!(
            Arc::ptr_eq(&first, &certificate.certified_key()),
            "not yet due"
        );
        std::thread::sleep(Duration::from_millis(2100));
        let renewed = certificate.certified_key();
        assert!(!Arc::ptr_eq(&first, &renewed));
        assert_ne!(first.cert[0], renewed.cert[0]);
        assert!(Arc::ptr_eq(&renewed, &certificate.certified_key()));
    }
}
