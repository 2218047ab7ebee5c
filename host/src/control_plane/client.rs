//! The HTTP client of the control plane: enrollment, client-credentials
//! bearer tokens from the Compliance Framework token endpoint (refreshed
//! before expiry, one retry on 401), configuration with ETags, heartbeats and
//! idempotent evidence batches.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::Credentials;
use crate::results::evidence::EvidenceRecord;
use crate::results::outbox::{DeliveryError, EvidenceSink};

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
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError::Unreachable(e.to_string())
    }
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

/// What a heartbeat says: the Compliance Framework's
/// `handler.HeartbeatCreateRequest` plus our extension fields.
#[derive(Debug, Clone, Serialize)]
pub struct Heartbeat {
    /// The runtime's id.
    pub uuid: String,
    /// RFC 3339.
    pub created_at: String,
    /// `assessment-runtime` version.
    pub runtime_version: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Plugin name → state (`ready`, or the error that keeps it from running).
    pub plugins: serde_json::Value,
    /// Job name → last run (time, outcome).
    pub jobs: serde_json::Value,
    /// Results waiting for delivery.
    pub outbox: serde_json::Value,
    /// Recent errors (e.g. an invalid configuration that was not applied).
    pub errors: Vec<String>,
}

/// A client bound to one runtime's credentials.
#[derive(Debug)]
pub struct ControlPlaneClient {
    http: reqwest::Client,
    credentials: Credentials,
    token: Mutex<Option<(String, Instant)>>,
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .user_agent(concat!("assessment-runtime/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| ClientError::Protocol(format!("cannot create the HTTP client: {e}")))
}

async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    format!(
        "HTTP {status}: {}",
        body.chars().take(300).collect::<String>()
    )
}

/// Enroll with a one-time enrollment token; returns the credentials to keep.
pub async fn enroll(url: &str, token: &str, name: &str) -> Result<Credentials, ClientError> {
    let url = url.trim_end_matches('/').to_string();
    let response = http_client(Duration::from_secs(30))?
        .post(format!("{url}/v1/enroll"))
        .json(&serde_json::json!({ "token": token, "name": name }))
        .send()
        .await?;
    match response.status().as_u16() {
        201 | 200 => {
            let body: EnrollResponse = response
                .json()
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            Ok(Credentials {
                url,
                runtime_id: body.runtime_id,
                client_secret: body.client_secret,
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
    /// A client for `credentials`, each request bounded by `timeout`.
    pub fn new(credentials: Credentials, timeout: Duration) -> Result<Self, ClientError> {
        Ok(ControlPlaneClient {
            http: http_client(timeout)?,
            credentials,
            token: Mutex::new(None),
        })
    }

    /// The runtime's id.
    pub fn runtime_id(&self) -> &str {
        &self.credentials.runtime_id
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.credentials.url)
    }

    async fn token(&self, renew: bool) -> Result<String, ClientError> {
        let mut cached = self.token.lock().await;
        let fresh = cached.as_ref().filter(|(_, expires)| {
            !renew && expires.saturating_duration_since(Instant::now()) > REFRESH_MARGIN
        });
        if let Some((token, _)) = fresh {
            return Ok(token.clone());
        }
        let response = self
            .http
            .post(self.url("/api/auth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.credentials.runtime_id.as_str()),
                ("client_secret", self.credentials.client_secret.as_str()),
            ])
            .send()
            .await?;
        match response.status().as_u16() {
            200 => {
                let body: TokenResponse = response
                    .json()
                    .await
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                *cached = Some((
                    body.access_token.clone(),
                    Instant::now() + Duration::from_secs(body.expires_in),
                ));
                Ok(body.access_token)
            }
            400 | 401 | 403 => {
                *cached = None;
                Err(ClientError::Unauthorized(error_text(response).await))
            }
            _ => Err(ClientError::Unreachable(error_text(response).await)),
        }
    }

    /// Send an authenticated request; on 401, renew the token and retry once.
    async fn send(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let token = self.token(false).await?;
        let response = build(&self.http, &token).send().await?;
        if response.status().as_u16() != 401 {
            return Ok(response);
        }
        let token = self.token(true).await?;
        let response = build(&self.http, &token).send().await?;
        if response.status().as_u16() == 401 {
            return Err(ClientError::Unauthorized(error_text(response).await));
        }
        Ok(response)
    }

    /// Get an access token now (checks the credentials; a rotated secret
    /// becomes the only valid one at its first use).
    pub async fn authenticate(&self) -> Result<(), ClientError> {
        self.token(true).await.map(|_| ())
    }

    /// Ask for a new client secret. The current one stays valid until the
    /// new one is first used, so save the new credentials, then
    /// [`authenticate`](Self::authenticate) with them.
    pub async fn rotate_secret(&self) -> Result<Credentials, ClientError> {
        #[derive(Deserialize)]
        struct Rotated {
            client_secret: String,
        }
        let url = self.url("/v1/credentials/rotate");
        let response = self
            .send(|http, token| http.post(&url).bearer_auth(token))
            .await?;
        if response.status().as_u16() != 200 {
            return Err(ClientError::Protocol(error_text(response).await));
        }
        let rotated: Rotated = response
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Credentials {
            client_secret: rotated.client_secret,
            ..self.credentials.clone()
        })
    }

    /// Poll the configuration; `etag` is the one of the configuration in use.
    pub async fn fetch_config(&self, etag: Option<&str>) -> Result<ConfigFetch, ClientError> {
        let url = self.url("/v1/config");
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
            404 => Ok(ConfigFetch::NotAssigned),
            200 => {
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let document = response
                    .json()
                    .await
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                Ok(ConfigFetch::New { etag, document })
            }
            _ => Err(ClientError::Protocol(error_text(response).await)),
        }
    }

    /// Send a heartbeat.
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), ClientError> {
        let url = self.url("/api/agent/heartbeat");
        let response = self
            .send(|http, token| http.post(&url).bearer_auth(token).json(heartbeat))
            .await?;
        match response.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            _ => Err(ClientError::Protocol(error_text(response).await)),
        }
    }
}

impl EvidenceSink for ControlPlaneClient {
    async fn deliver(&self, records: &[EvidenceRecord]) -> Result<(), DeliveryError> {
        let url = self.url("/v1/evidence/batch");
        let body = serde_json::json!({ "records": records });
        let response = self
            .send(|http, token| http.post(&url).bearer_auth(token).json(&body))
            .await
            .map_err(|e| DeliveryError::Transient(e.to_string()))?;
        match response.status().as_u16() {
            200 | 201 => Ok(()),
            400 | 413 | 422 => Err(DeliveryError::Rejected(error_text(response).await)),
            _ => Err(DeliveryError::Transient(error_text(response).await)),
        }
    }
}
