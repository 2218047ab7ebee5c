//! The HTTP client of the control plane: enrollment, client-credentials
//! bearer tokens from the Compliance Framework token endpoint (refreshed
//! before expiry, one retry on 401), configuration with ETags and
//! heartbeats; evidence delivery is [`super::evidence_delivery`]. The
//! credentials come from enrollment (`state_dir/credentials.json`) or from
//! `[control_plane]` ([`ControlPlaneClient::configured`]).
//!
//! Over mutual TLS (the default) the client trusts only the control plane's
//! CA, given at enrollment (and what `[network]` adds: a CA bundle, the
//! operating system's store), and presents the client certificate the CA
//! issued for a key generated here. Plain HTTP needs an explicit
//! development flag at enrollment. Requests take the proxy `[network]` or
//! the environment gives.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::evidence_delivery::BatchSupport;
use super::{ClientTls, Credentials, StateError};
use crate::agent_config::NetworkSettings;
use crate::network::{self, Peer};

/// What a heartbeat says (the wire type, shared with the control plane).
pub use capability_model::wire::Heartbeat;

/// A token is renewed when it has less than this left.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// A control plane failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Network, timeout or TLS failure: retry later.
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
    /// The control plane refused the credentials (revoked or unknown).
    #[error(
        "the control plane refused this runtime's credentials ({0}); re-enroll it if it was revoked"
    )]
    Unauthorized(String),
    /// Any other unexpected answer.
    #[error("unexpected answer from the control plane: {0}")]
    Protocol(String),
    /// The URL, the CA certificate or the stored TLS material cannot be used.
    #[error("{0}")]
    Setup(String),
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        // reqwest's own message says only "error sending request"; the
        // causes say why (refused, timed out, certificate not trusted).
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        if message.contains("not valid for name") {
            message.push_str(
                " (TLS: the control plane's certificate does not name the host in the URL; list that name with `assessment-control-plane serve --tls-name`)",
            );
        } else if message.contains("certificate") || message.contains("handshake") {
            message.push_str(
                " (TLS: the server's certificate is not from the CA this runtime trusts, or the server refused this runtime's client certificate)",
            );
        }
        ClientError::Unreachable(message)
    }
}

/// How to reach the control plane when enrolling.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Mutual TLS: the server must present a certificate from this CA
    /// (PEM), which is then the only CA the runtime trusts.
    CaCertificate(String),
    /// Plain HTTP, without server authentication or client certificate:
    /// development only.
    PlainHttp,
}

/// Checks that `url` goes with the transport: `https://` for mutual TLS,
/// `http://` only for plain HTTP.
fn check_url(url: &str, tls: bool) -> Result<(), ClientError> {
    match (url.split_once("://").map(|(scheme, _)| scheme), tls) {
        (Some("https"), true) | (Some("http"), false) => Ok(()),
        (Some("http"), true) => Err(ClientError::Setup(format!(
            "{url} is plain HTTP: mutual TLS needs an https:// URL (or --dev-plain-http for a development control plane)"
        ))),
        (Some("https"), false) => Err(ClientError::Setup(format!(
            "{url} is https:// but no CA certificate was given: pass --ca-cert with the control plane's CA (`assessment-control-plane ca certificate`)"
        ))),
        _ => Err(ClientError::Setup(format!(
            "{url} is not an http(s) URL of a control plane"
        ))),
    }
}

/// The base64 body of a PEM text, to compare certificates.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("-----"))
        .collect()
}

/// A new key pair and a certificate signing request for it (PEM), named
/// after the runtime. The CA decides the certificate's contents; the
/// request only proves possession of the key.
fn new_key_and_csr(name: &str) -> Result<(rcgen::KeyPair, String), ClientError> {
    let fail = |e: rcgen::Error| ClientError::Setup(format!("cannot create a key pair: {e}"));
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(fail)?;
    Ok((key, csr))
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Debug, Deserialize)]
struct EnrollResponse {
    runtime_id: String,
    client_secret: String,
    #[serde(default)]
    certificate: Option<String>,
    #[serde(default)]
    ca_certificate: Option<String>,
}

/// The answer to a configuration poll.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigFetch {
    /// Unchanged since the given ETag.
    NotModified,
    /// No configuration is assigned to this runtime yet.
    NotAssigned,
    /// A new document.
    New {
        /// Its ETag.
        etag: Option<String>,
        /// The document.
        document: serde_json::Value,
    },
}

/// A client bound to one runtime's credentials.
///
/// The credentials can change under it (rotation, see
/// [`rotate_and_save`](Self::rotate_and_save)); requests in flight finish
/// with the credentials they started with.
#[derive(Debug)]
pub struct ControlPlaneClient {
    session: RwLock<Arc<Session>>,
    runtime_id: String,
    timeout: Duration,
    /// Trust roots and proxy, for every session.
    network: NetworkSettings,
    /// Where the credentials are kept, to pick up ones rotated by another
    /// process when the control plane refuses the ones in memory.
    state_dir: Option<PathBuf>,
    token: Mutex<Option<(String, Instant)>>,
    /// Credentials from `[control_plane]`, not from enrollment: the URL
    /// was checked with the settings and the server is trusted through
    /// `[network]`.
    configured: bool,
    /// Whether the server serves `/v1/evidence/batch`, once known.
    pub(super) batch: BatchSupport,
}

/// An HTTP client set up for one set of credentials.
#[derive(Debug)]
struct Session {
    http: reqwest::Client,
    credentials: Credentials,
}

impl Session {
    fn new(
        credentials: Credentials,
        timeout: Duration,
        network: &NetworkSettings,
        configured: bool,
    ) -> Result<Self, ClientError> {
        if !configured {
            check_url(&credentials.url, credentials.tls.is_some())?;
        }
        let tls = credentials.tls.as_ref();
        let http = http_client(
            timeout,
            tls.map(|tls| tls.ca_certificate.as_str()),
            tls.map(|tls| (tls.certificate.as_str(), tls.private_key.as_str())),
            network,
        )?;
        Ok(Session { http, credentials })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.credentials.url)
    }
}

/// A credential rotation that did not complete; each says what still works.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The control plane did not issue new credentials.
    #[error(
        "the control plane did not rotate the credentials; the current ones are still valid: {0}"
    )]
    Rotate(ClientError),
    /// The new credentials could not be written.
    #[error("cannot store the new credentials; the current ones are still valid: {0}")]
    Save(StateError),
    /// The new credentials are stored but their first use failed.
    #[error(
        "the new credentials are stored but were not accepted yet; the next request will use them: {0}"
    )]
    Confirm(ClientError),
}

/// Whether a client certificate is due for renewal: in the last third of
/// its lifetime, and at most 30 days before it expires.
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    const MAX_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return true; // ends before it starts: replace it
    };
    let margin = (lifetime / 3).min(MAX_MARGIN);
    now + margin >= not_after
}

/// The validity period of a PEM certificate.
pub fn certificate_validity(pem: &str) -> Result<(SystemTime, SystemTime), String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let seconds = t.timestamp();
        match u64::try_from(seconds) {
            Ok(seconds) => SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
            Err(_) => SystemTime::UNIX_EPOCH,
        }
    };
    let validity = cert.validity();
    Ok((at(validity.not_before), at(validity.not_after)))
}

/// An HTTP client; with `ca`, one that trusts only that CA (PEM) and what
/// `network` adds, speaks only HTTPS and presents `identity` (certificate
/// and key, PEM) if given.
fn http_client(
    timeout: Duration,
    ca: Option<&str>,
    identity: Option<(&str, &str)>,
    network: &NetworkSettings,
) -> Result<reqwest::Client, ClientError> {
    let builder = network::configure(reqwest::Client::builder(), network, Peer::ControlPlane)
        .map_err(|e| ClientError::Setup(e.to_string()))?;
    let mut builder = builder
        .use_rustls_tls()
        .user_agent(concat!("assessment-runtime/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)));
    if let Some(ca) = ca {
        let ca = reqwest::Certificate::from_pem(ca.as_bytes()).map_err(|e| {
            ClientError::Setup(format!(
                "the control plane's CA certificate is unreadable: {e}"
            ))
        })?;
        builder = builder.add_root_certificate(ca).https_only(true);
    }
    if let Some((certificate, key)) = identity {
        let identity = reqwest::Identity::from_pem(format!("{key}\n{certificate}").as_bytes())
            .map_err(|e| {
                ClientError::Setup(format!(
                    "the stored client certificate or key is unreadable ({e}); enroll again"
                ))
            })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| ClientError::Setup(format!("cannot create the HTTP client: {e}")))
}

/// Largest answer read from the control plane (a configuration document is
/// the largest legitimate one): a hostile or broken control plane cannot
/// make the agent hold an endless body.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Bytes of an error answer read and quoted.
const MAX_ERROR_BYTES: usize = 4 << 10;

/// The body of `response`, read as it streams in and refused past `max`
/// bytes; `Ok(None)` when it is larger.
async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// A JSON answer of at most [`MAX_ANSWER_BYTES`].
async fn json_bounded<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ClientError> {
    let body = read_bounded(response, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| ClientError::Protocol(format!("incomplete answer: {e}")))?
        .ok_or_else(|| {
            ClientError::Protocol(format!(
                "the answer is larger than {} MiB; refusing it",
                MAX_ANSWER_BYTES >> 20
            ))
        })?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// The `Retry-After` of an answer, in seconds (the HTTP-date form is not
/// used by the control plane and is ignored).
pub(super) fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

pub(super) async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    // Only the start of an error body is read, however long it is.
    let mut body = Vec::new();
    let mut response = response;
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BYTES {
            break;
        }
    }
    let text = String::from_utf8_lossy(&body);
    format!(
        "HTTP {status}: {}",
        crate::guest_text::bounded(&text.chars().take(300).collect::<String>(), 600)
    )
}

/// Enroll with a one-time enrollment token; returns the credentials to
/// keep. Over mutual TLS a key pair is made here and only its certificate
/// signing request is sent. `network` gives extra trust roots and the
/// proxy.
pub async fn enroll(
    url: &str,
    token: &str,
    name: &str,
    trust: Trust,
    network: &NetworkSettings,
) -> Result<Credentials, ClientError> {
    let url = url.trim_end_matches('/').to_string();
    let ca = match &trust {
        Trust::CaCertificate(ca) => Some(ca.as_str()),
        Trust::PlainHttp => None,
    };
    check_url(&url, ca.is_some())?;
    let http = http_client(Duration::from_secs(30), ca, None, network)?;
    let key = ca.map(|_| new_key_and_csr(name)).transpose()?;
    let response = http
        .post(format!("{url}/v1/enroll"))
        .json(&serde_json::json!({
            "token": token,
            "name": name,
            "csr": key.as_ref().map(|(_, csr)| csr),
        }))
        .send()
        .await?;
    match response.status().as_u16() {
        201 | 200 => {
            let body: EnrollResponse = json_bounded(response).await?;
            let tls = match (ca, key) {
                (Some(ca), Some((key, _))) => {
                    let certificate = body.certificate.ok_or_else(|| {
                        ClientError::Protocol(
                            "the control plane issued no client certificate".to_string(),
                        )
                    })?;
                    if body
                        .ca_certificate
                        .is_some_and(|issuer| pem_body(&issuer) != pem_body(ca))
                    {
                        return Err(ClientError::Protocol(
                            "the control plane says its CA is not the one given with --ca-cert"
                                .to_string(),
                        ));
                    }
                    Some(ClientTls {
                        ca_certificate: ca.to_string(),
                        certificate,
                        private_key: key.serialize_pem(),
                    })
                }
                _ => None,
            };
            Ok(Credentials {
                url,
                runtime_id: body.runtime_id,
                client_secret: body.client_secret,
                tls,
            })
        }
        401 | 403 => Err(ClientError::Unauthorized(format!(
            "the enrollment token was refused (unknown, used or expired): {}",
            error_text(response).await
        ))),
        _ => Err(ClientError::Protocol(error_text(response).await)),
    }
}

impl ControlPlaneClient {
    /// A client for `credentials`, each request bounded by `timeout`,
    /// trusting and proxied as `network` says.
    pub fn new(
        credentials: Credentials,
        timeout: Duration,
        network: &NetworkSettings,
    ) -> Result<Self, ClientError> {
        Self::with(credentials, timeout, network, false)
    }

    /// A client for the server and credentials of `[control_plane]` (no
    /// enrollment, no client certificate; the server trusted through
    /// `network`). The secret is read now.
    pub fn configured(
        settings: &super::settings::ControlPlaneSettings,
        timeout: Duration,
        network: &NetworkSettings,
    ) -> Result<Self, ClientError> {
        let credentials = settings.credentials().map_err(ClientError::Setup)?;
        Self::with(credentials, timeout, network, true)
    }

    fn with(
        credentials: Credentials,
        timeout: Duration,
        network: &NetworkSettings,
        configured: bool,
    ) -> Result<Self, ClientError> {
        Ok(ControlPlaneClient {
            runtime_id: credentials.runtime_id.clone(),
            session: RwLock::new(Arc::new(Session::new(
                credentials,
                timeout,
                network,
                configured,
            )?)),
            timeout,
            network: network.clone(),
            state_dir: None,
            token: Mutex::new(None),
            configured,
            batch: BatchSupport::default(),
        })
    }

    /// `path` on the server, e.g. `/api/evidence`.
    pub(super) fn url(&self, path: &str) -> String {
        self.session().url(path)
    }

    /// The same client, picking up credentials that another process (such
    /// as `rotate-credentials`) saved in `state_dir` when the control plane
    /// refuses the ones in memory.
    pub fn reloading_from(mut self, state_dir: &Path) -> Self {
        self.state_dir = Some(state_dir.to_path_buf());
        self
    }

    /// The runtime's id.
    pub fn runtime_id(&self) -> &str {
        &self.runtime_id
    }

    fn session(&self) -> Arc<Session> {
        match self.session.read() {
            Ok(session) => session.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace_session(&self, session: Arc<Session>) {
        match self.session.write() {
            Ok(mut current) => *current = session,
            Err(poisoned) => *poisoned.into_inner() = session,
        }
    }

    /// The client certificate's validity period, over mutual TLS.
    pub fn certificate_validity(&self) -> Option<Result<(SystemTime, SystemTime), String>> {
        let session = self.session();
        let tls = session.credentials.tls.as_ref()?;
        Some(certificate_validity(&tls.certificate))
    }

    /// Credentials on disk that differ from `current` (for the same
    /// runtime), set up and put in force.
    fn reload(&self, current: &Session) -> Option<Arc<Session>> {
        let saved = Credentials::load(self.state_dir.as_deref()?).ok()?;
        if saved == current.credentials || saved.runtime_id != self.runtime_id {
            return None;
        }
        match Session::new(saved, self.timeout, &self.network, self.configured) {
            Ok(session) => {
                tracing::info!("using the credentials saved by another process");
                let session = Arc::new(session);
                self.replace_session(session.clone());
                Some(session)
            }
            Err(e) => {
                tracing::warn!("the saved credentials cannot be used: {e}");
                None
            }
        }
    }

    async fn token(&self, renew: bool) -> Result<String, ClientError> {
        let mut cached = self.token.lock().await;
        let fresh = cached.as_ref().filter(|(_, expires)| {
            !renew && expires.saturating_duration_since(Instant::now()) > REFRESH_MARGIN
        });
        if let Some((token, _)) = fresh {
            return Ok(token.clone());
        }
        *cached = None;
        let mut session = self.session();
        let mut reloaded = false;
        loop {
            let credentials = &session.credentials;
            let response = session
                .http
                .post(session.url("/api/auth/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", credentials.runtime_id.as_str()),
                    ("client_secret", credentials.client_secret.as_str()),
                ])
                .send()
                .await?;
            match response.status().as_u16() {
                200 => {
                    let body: TokenResponse = json_bounded(response).await?;
                    *cached = Some((
                        body.access_token.clone(),
                        token_expiry(Instant::now(), body.expires_in),
                    ));
                    return Ok(body.access_token);
                }
                400 | 401 | 403 => {
                    let message = error_text(response).await;
                    // Rotated by another process since this one loaded them?
                    match (!reloaded).then(|| self.reload(&session)).flatten() {
                        Some(newer) => {
                            session = newer;
                            reloaded = true;
                        }
                        None => return Err(ClientError::Unauthorized(message)),
                    }
                }
                _ => return Err(ClientError::Unreachable(error_text(response).await)),
            }
        }
    }

    /// Send an authenticated request; on 401, renew the token and retry once.
    pub(super) async fn send(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let token = self.token(false).await?;
        let response = build(&self.session().http, &token).send().await?;
        if response.status().as_u16() != 401 {
            return Ok(response);
        }
        let token = self.token(true).await?;
        let response = build(&self.session().http, &token).send().await?;
        if response.status().as_u16() == 401 {
            return Err(ClientError::Unauthorized(error_text(response).await));
        }
        Ok(response)
    }

    /// Rotate the credentials: get new ones, save them in `state_dir`
    /// (before their first use, so a crash leaves the old ones valid), put
    /// them in force and use them once, which retires the old ones.
    pub async fn rotate_and_save(&self, state_dir: &Path) -> Result<(), RotationError> {
        let rotated = self
            .rotate_credentials()
            .await
            .map_err(RotationError::Rotate)?;
        rotated.save(state_dir).map_err(RotationError::Save)?;
        let session = Arc::new(
            Session::new(rotated, self.timeout, &self.network, self.configured)
                .map_err(RotationError::Confirm)?,
        );
        {
            // Tokens are bound to the old certificate: drop them with it.
            let mut cached = self.token.lock().await;
            *cached = None;
            self.replace_session(session);
        }
        self.authenticate().await.map_err(RotationError::Confirm)
    }

    /// Get an access token now (checks the credentials; a rotated secret
    /// becomes the only valid one at its first use).
    pub async fn authenticate(&self) -> Result<(), ClientError> {
        self.token(true).await.map(|_| ())
    }

    /// Ask for a new client secret and, over mutual TLS, a client
    /// certificate for a new key. The current credentials stay valid until
    /// the new ones are first used, so save the new credentials, then
    /// [`authenticate`](Self::authenticate) with them.
    pub async fn rotate_credentials(&self) -> Result<Credentials, ClientError> {
        #[derive(Deserialize)]
        struct Rotated {
            client_secret: String,
            #[serde(default)]
            certificate: Option<String>,
        }
        let current = self.session().credentials.clone();
        let key = match &current.tls {
            Some(_) => Some(new_key_and_csr(&current.runtime_id)?),
            None => None,
        };
        let body = serde_json::json!({ "csr": key.as_ref().map(|(_, csr)| csr) });
        let url = self.session().url("/v1/credentials/rotate");
        let response = self
            .send(|http, token| http.post(&url).bearer_auth(token).json(&body))
            .await?;
        if response.status().as_u16() != 200 {
            return Err(ClientError::Protocol(error_text(response).await));
        }
        let rotated: Rotated = json_bounded(response).await?;
        let tls = match (&current.tls, key) {
            (Some(current), Some((key, _))) => Some(ClientTls {
                ca_certificate: current.ca_certificate.clone(),
                certificate: rotated.certificate.ok_or_else(|| {
                    ClientError::Protocol(
                        "the control plane rotated the secret but issued no certificate"
                            .to_string(),
                    )
                })?,
                private_key: key.serialize_pem(),
            }),
            _ => None,
        };
        Ok(Credentials {
            client_secret: rotated.client_secret,
            tls,
            ..current
        })
    }

    /// Poll the configuration; `etag` is the one of the configuration in use.
    pub async fn fetch_config(&self, etag: Option<&str>) -> Result<ConfigFetch, ClientError> {
        let url = self.session().url("/v1/config");
        let response = self
            .send(|http, token| {
                let request = http.get(&url).bearer_auth(token);
                match etag {
                    Some(etag) => request.header("If-None-Match", etag),
                    None => request,
                }
            })
            .await?;
        match response.status().as_u16() {
            304 => Ok(ConfigFetch::NotModified),
            // Not assigned, or no configuration endpoint at all (a
            // Compliance Framework API).
            404 | 405 => Ok(ConfigFetch::NotAssigned),
            200 => {
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let document = json_bounded(response).await?;
                Ok(ConfigFetch::New { etag, document })
            }
            _ => Err(ClientError::Protocol(error_text(response).await)),
        }
    }

    /// Send a heartbeat.
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), ClientError> {
        let url = self.session().url("/api/agent/heartbeat");
        let response = self
            .send(|http, token| http.post(&url).bearer_auth(token).json(heartbeat))
            .await?;
        match response.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            _ => Err(ClientError::Protocol(error_text(response).await)),
        }
    }
}

/// Longest an access token is reused, whatever the server says: a hostile
/// or broken `expires_in` (up to `u64::MAX` seconds) can neither overflow
/// the clock nor pin a token for years.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// When a token issued at `now` for `expires_in` seconds is treated as
/// expired.
fn token_expiry(now: Instant, expires_in: u64) -> Instant {
    let lifetime = Duration::from_secs(expires_in).min(MAX_TOKEN_LIFETIME);
    now.checked_add(lifetime).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_expires_in_neither_overflows_nor_pins_the_token() {
        let now = Instant::now();
        assert_eq!(token_expiry(now, u64::MAX), now + MAX_TOKEN_LIFETIME);
        assert_eq!(token_expiry(now, 60), now + Duration::from_secs(60));
        assert_eq!(token_expiry(now, 0), now);
    }

    #[test]
    fn the_url_must_match_the_transport() {
        assert!(check_url("https://cp.example:8443", true).is_ok());
        assert!(check_url("http://127.0.0.1:8080", false).is_ok());
        let refused = |url, tls| check_url(url, tls).unwrap_err().to_string();
        assert!(refused("http://cp.example", true).contains("https://"));
        assert!(refused("https://cp.example", false).contains("--ca-cert"));
        assert!(refused("cp.example:8443", true).contains("not an http(s) URL"));
        assert!(refused("ftp://cp.example", false).contains("not an http(s) URL"));
    }

    #[test]
    fn csrs_prove_a_fresh_key_and_stored_keys_are_redacted() {
        let (key, csr) = new_key_and_csr("web-1").unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let (other, _) = new_key_and_csr("web-1").unwrap();
        assert_ne!(key.serialize_pem(), other.serialize_pem());
        let credentials = Credentials {
            url: "https://cp".to_string(),
            runtime_id: "id".to_string(),
            client_secret: "s3cret".to_string(),
            tls: Some(ClientTls {
                ca_certificate: "CA".to_string(),
                certificate: "CERT".to_string(),
                private_key: key.serialize_pem(),
            }),
        };
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("PRIVATE KEY"));
        assert!(shown.contains("CERT"));
    }

    #[test]
    fn certificates_are_renewed_in_the_last_third_and_at_most_30_days_early() {
        let at = |days: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86_400);
        // A 90-day certificate: renewed from day 60.
        assert!(!renewal_due(at(0), at(90), at(59)));
        assert!(renewal_due(at(0), at(90), at(60)));
        assert!(renewal_due(at(0), at(90), at(100)), "expired: renew");
        // A year: 30 days before the end, not 122.
        assert!(!renewal_due(at(0), at(365), at(334)));
        assert!(renewal_due(at(0), at(365), at(335)));
        // Nonsense validity (end before start): due.
        assert!(renewal_due(at(10), at(5), at(0)));
    }

    #[test]
    fn the_validity_of_a_certificate_is_read() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2031, 1, 1);
        let pem = params.self_signed(&key).unwrap().pem();
        let (start, end) = certificate_validity(&pem).unwrap();
        let year = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(year(start), 1_893_456_000);
        assert_eq!(year(end), 1_924_992_000);
        assert!(certificate_validity("garbage").is_err());
    }

    #[test]
    fn certificates_compare_by_their_pem_body() {
        let a = "-----BEGIN CERTIFICATE-----\nAAAA\nBBBB\n-----END CERTIFICATE-----\n";
        let b = "-----BEGIN CERTIFICATE-----\r\nAAAABBBB\r\n-----END CERTIFICATE-----";
        assert_eq!(pem_body(a), pem_body(b));
        assert_ne!(pem_body(a), pem_body(&a.replace("BBBB", "BBBC")));
    }

    #[test]
    fn unreadable_tls_material_is_a_setup_error() {
        let credentials = Credentials {
            url: "https://cp".to_string(),
            runtime_id: "id".to_string(),
            client_secret: "s".to_string(),
            tls: Some(ClientTls {
                ca_certificate: "not a certificate".to_string(),
                certificate: "x".to_string(),
                private_key: "y".to_string(),
            }),
        };
        let error = ControlPlaneClient::new(
            credentials,
            Duration::from_secs(1),
            &NetworkSettings::default(),
        )
        .unwrap_err();
        assert!(matches!(error, ClientError::Setup(_)), "{error}");
    }
}
