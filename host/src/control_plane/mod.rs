//! The control plane, from the runtime's side: the credentials issued at
//! enrollment ([`Credentials`]), the HTTP client ([`client`]), and the
//! configuration sync that keeps the last good configuration on disk
//! ([`ConfigSync`]).

pub mod client;
pub mod evidence_delivery;
pub mod settings;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agent_config::{AgentConfig, ConfigError};
use crate::durable;
use client::{ClientError, ConfigFetch, ControlPlaneClient};

/// A failure to read or write the runtime's own state files.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong and what to do.
    pub message: String,
}

/// What enrollment issued: kept in `state_dir/credentials.json`, mode 0600.
/// One file, written atomically, so a rotation never leaves a secret that
/// does not go with its certificate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The control plane's base URL.
    pub url: String,
    /// This runtime's id.
    pub runtime_id: String,
    /// The secret for the token endpoint (never logged).
    pub client_secret: String,
    /// The mutual TLS identity; `None` only for a control plane enrolled
    /// with over plain HTTP (development).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

/// The mutual TLS material of a runtime, all PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTls {
    /// The control plane's CA: the only issuer the runtime trusts.
    pub ca_certificate: String,
    /// The runtime's client certificate, issued by that CA.
    pub certificate: String,
    /// The runtime's private key (generated here; never sent anywhere).
    pub private_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("runtime_id", &self.runtime_id)
            .field("client_secret", &"<redacted>")
            .field("tls", &self.tls)
            .finish()
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_certificate", &self.ca_certificate)
            .field("certificate", &self.certificate)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Write `bytes` to `path` atomically with `mode`, creating its directory.
fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let fail = |e: std::io::Error| StateError {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    // The state directory holds the credentials: private to the agent.
    durable::ensure_private_dir(dir).map_err(fail)?;
    durable::write_atomic(dir, path, bytes, mode).map_err(fail)
}

impl Credentials {
    /// `state_dir/credentials.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("credentials.json")
    }

    /// Save with mode 0600.
    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError {
            path: Self::path(state_dir),
            message: e.to_string(),
        })?;
        write_private(&Self::path(state_dir), &bytes, 0o600)
    }

    /// Load the saved credentials.
    pub fn load(state_dir: &Path) -> Result<Self, StateError> {
        let path = Self::path(state_dir);
        let bytes = std::fs::read(&path).map_err(|e| StateError {
            path: path.clone(),
            message: format!(
                "{e}; enroll this runtime first (`assessment-runtime enroll --url … --token …`)"
            ),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| StateError {
            path,
            message: format!("corrupt credentials ({e}); enroll again"),
        })
    }
}

/// The configuration in force, as last applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastGood {
    etag: Option<String>,
    document: serde_json::Value,
}

/// Keeps the runtime's configuration in step with the control plane.
///
/// The document the control plane serves has the agent configuration's
/// schema (`runtime` and `plugin`, as JSON). The local file keeps what is
/// the machine's own: `runtime.state_dir` and `runtime.assessment_root`. A
/// document that does not validate is not applied: the last good one stays
/// in force (and on disk, for restarts while the control plane is away) and
/// the error is reported.
#[derive(Debug)]
pub struct ConfigSync {
    local: AgentConfig,
    path: PathBuf,
    current: Option<LastGood>,
    /// The last error (an invalid document, an unreachable control plane).
    pub last_error: Option<String>,
    /// The server was heard to serve no configuration (said once in the
    /// log, until it serves one).
    without_remote: bool,
}

/// What a poll changed.
#[derive(Debug)]
pub enum SyncOutcome {
    /// A new configuration is in force.
    Applied(Box<AgentConfig>),
    /// Nothing changed.
    Unchanged,
}

impl ConfigSync {
    /// Start from the local configuration and the last good document on disk.
    pub fn new(local: AgentConfig) -> Self {
        let path = local.state_dir.join("config.last-good.json");
        let current = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        ConfigSync {
            local,
            path,
            current,
            last_error: None,
            without_remote: false,
        }
    }

    /// The configuration in force: the last good document, or the local
    /// configuration when the control plane never sent one.
    pub fn config(&self) -> AgentConfig {
        self.current
            .as_ref()
            .and_then(|c| self.apply(&c.document).ok())
            .unwrap_or_else(|| self.local.clone())
    }

    /// The runtime's own configuration file, as last loaded.
    pub fn local(&self) -> &AgentConfig {
        &self.local
    }

    /// A reloaded local file takes the place of the old one: the control
    /// plane's last good document is applied again within its policy (a
    /// narrower policy may now refuse it; then the local plugins run and
    /// the refusal is reported). Returns the configuration now in force.
    pub fn replace_local(&mut self, local: AgentConfig) -> AgentConfig {
        self.local = local;
        if let Some(current) = &self.current
            && let Err(e) = self.apply(&current.document)
        {
            let message = format!(
                "the reloaded local file refuses the control plane's configuration; running the local file's plugins: {e}"
            );
            tracing::error!("{message}");
            self.last_error = Some(message);
        }
        self.config()
    }

    fn apply(&self, document: &serde_json::Value) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_remote(document, &self.local)
    }

    /// Poll once.
    pub async fn poll(&mut self, client: &ControlPlaneClient) -> Result<SyncOutcome, ClientError> {
        let etag = self.current.as_ref().and_then(|c| c.etag.clone());
        let fetched = match client.fetch_config(etag.as_deref()).await {
            Ok(fetched) => fetched,
            Err(e) => {
                // An answer that cannot be read (malformed, endless) is the
                // control plane's fault and goes in the heartbeat; being
                // unreachable is reported by the heartbeat's absence.
                if matches!(e, ClientError::Protocol(_)) {
                    let message = format!(
                        "the control plane's configuration could not be read; keeping the last good one: {e}"
                    );
                    tracing::error!("{message}");
                    self.last_error = Some(message);
                }
                return Err(e);
            }
        };
        match fetched {
            ConfigFetch::NotModified => {
                // The control plane serves what is in force: an earlier
                // refusal no longer applies.
                self.last_error = None;
                Ok(SyncOutcome::Unchanged)
            }
            ConfigFetch::NotAssigned => {
                // A server without configuration (a Compliance Framework
                // API has no `/v1/config`, or none is assigned): the
                // configuration in force stays, asked again at the next
                // poll; said once, not at every poll.
                self.last_error = None;
                if !self.without_remote {
                    self.without_remote = true;
                    let running = if self.current.is_some() {
                        "the last configuration it sent"
                    } else {
                        "the local file's plugins"
                    };
                    tracing::info!(
                        "the server serves no configuration for this runtime (GET /v1/config: not found): running {running}; asking again at every configuration poll"
                    );
                }
                Ok(SyncOutcome::Unchanged)
            }
            ConfigFetch::New { etag, document } => match self.apply(&document) {
                Ok(config) => {
                    self.without_remote = false;
                    let good = LastGood { etag, document };
                    let bytes = serde_json::to_vec_pretty(&good).unwrap_or_default();
                    if let Err(e) = write_private(&self.path, &bytes, 0o600) {
                        tracing::warn!("cannot keep the configuration on disk: {e}");
                    }
                    self.current = Some(good);
                    self.last_error = None;
                    tracing::info!(
                        plugins = config.plugins.len(),
                        "applied a new configuration from the control plane"
                    );
                    Ok(SyncOutcome::Applied(Box::new(config)))
                }
                Err(e) => {
                    let message = match &e {
                        ConfigError::Policy { .. } => format!(
                            "refused the control plane's configuration; keeping the last good one: {e}"
                        ),
                        _ => format!(
                            "the control plane sent an invalid configuration; keeping the last good one: {e}"
                        ),
                    };
                    tracing::error!("{message}");
                    self.last_error = Some(message);
                    Ok(SyncOutcome::Unchanged)
                }
            },
        }
    }
}
