//! Serving over mutual TLS with rustls.
//!
//! The server presents a certificate from the control plane's CA and asks
//! every client for a certificate from the same CA. A client may connect
//! without one (it has none before it enrolls), but then every runtime
//! operation answers 401: [`crate::auth`] checks that the certificate of the
//! connection is the one the runtime was issued. A certificate from any other
//! CA fails the handshake.
//!
//! Handshakes run in their own tasks, bounded in number and time, so a slow
//! or silent client never holds up the others; finished connections reach
//! `axum::serve` through [`TlsListener`], with the client certificate's
//! SHA-256 in [`TlsPeer`].

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::ca::{CaError, CertificateAuthority, SERVER_VALIDITY, certificate_sha256};

/// The longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most handshakes in progress at once.
const MAX_PENDING_HANDSHAKES: usize = 256;

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

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
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

/// A listener that hands `axum::serve` connections whose TLS handshake is
/// complete.
#[derive(Debug)]
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, TlsPeer)>,
    local_addr: SocketAddr,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `listener` and runs handshakes with `config`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, connections) = mpsc::channel(64);
        let acceptor_task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender));
        Ok(Self {
            connections,
            local_addr,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, TlsPeer)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::info!(%address, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%address, "TLS handshake timed out");
                    return;
                }
            };
            let client_certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| certificate_sha256(cert));
            let peer = TlsPeer {
                address,
                client_certificate,
            };
            // The receiver is gone only when the server is shutting down.
            let _ = sender.send((stream, peer)).await;
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop ended (it only does when aborted): no more
            // connections will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(TlsPeer {
            address: self.local_addr,
            client_certificate: None,
        })
    }
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
