//! What every handler shares: the application state (store, settings,
//! CA, guards, metrics) and the request's source address. It depends on no
//! HTTP layer above it (`auth`, `api`, `admin`), so all of them can use it.

use std::sync::Arc;

use axum::extract::ConnectInfo;

use crate::ca::CertificateAuthority;
use crate::config::ServerConfig;
use crate::db::Store;
use crate::error::ApiError;
use crate::guard::{AuthFailure, AuthFailureLog, Principal, RateLimiter};
use crate::metrics::Metrics;
use crate::model::{RecordRules, RuntimeIdentity};
use crate::relay::RelayQueue;
use crate::session::{SESSION_IDLE_TIMEOUT, SessionStore};
use crate::tls::TlsPeer;

/// The defences every handler shares.
#[derive(Debug)]
pub struct Guards {
    /// The rate limit of the unauthenticated routes, per source address.
    pub unauthenticated: RateLimiter,
    /// The log of failed authentications.
    pub auth_failures: AuthFailureLog,
    /// The web view's sessions.
    pub sessions: SessionStore,
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The server's settings.
    pub config: Arc<ServerConfig>,
    /// The CA when serving mutual TLS: runtimes then get client
    /// certificates at enrollment and must present them. `None` only for
    /// plain HTTP (development).
    pub ca: Option<Arc<CertificateAuthority>>,
    /// Rate limits and the failed-authentication log.
    pub guards: Arc<Guards>,
    /// The metrics the handlers record into and `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// The queue of the relay to an upstream Compliance Framework API,
    /// when one is configured: accepted evidence enters it.
    pub relay: Option<Arc<RelayQueue>>,
}

impl AppState {
    /// State over `store` with `config`, for plain HTTP.
    pub fn new(store: Store, config: ServerConfig) -> Self {
        let guards = Guards {
            unauthenticated: RateLimiter::new(
                config.limits.auth_burst,
                config.limits.auth_per_minute,
            ),
            auth_failures: AuthFailureLog::default(),
            sessions: SessionStore::new(config.session_ttl, SESSION_IDLE_TIMEOUT),
        };
        Self {
            store,
            config: Arc::new(config),
            ca: None,
            guards: Arc::new(guards),
            metrics: Arc::new(Metrics::new()),
            relay: None,
        }
    }

    /// The same state, relaying accepted evidence through `queue`.
    pub fn with_relay(self, queue: Arc<RelayQueue>) -> Self {
        Self {
            relay: Some(queue),
            ..self
        }
    }

    /// Records that `source` failed to authenticate as `principal`: counted
    /// always, logged within the log's rate.
    pub fn authentication_failed(
        &self,
        source: Option<std::net::SocketAddr>,
        principal: Principal,
        reason: AuthFailure,
    ) {
        self.metrics.authentication_failed(principal, reason);
        self.guards.auth_failures.failed(source, principal, reason);
    }

    /// What the evidence records of `runtime` are checked against.
    pub fn record_rules(&self, runtime: &RuntimeIdentity) -> RecordRules {
        RecordRules {
            subjects_bound: !self.config.compliance_framework_only,
            runtime_id: runtime.id,
            max_record_bytes: self.config.limits.max_record_bytes,
        }
    }

    /// The same state for mutual TLS with `ca`.
    pub fn with_ca(self, ca: Arc<CertificateAuthority>) -> Self {
        self.metrics.ca_certificate(&ca.sha256(), ca.not_after());
        Self {
            ca: Some(ca),
            ..self
        }
    }

    /// The CA and the certificate signing request it is to sign: over
    /// mutual TLS the request must carry one (400 otherwise); over plain
    /// HTTP there is nothing to sign.
    pub fn csr_to_sign(
        &self,
        csr: Option<String>,
    ) -> Result<Option<(Arc<CertificateAuthority>, String)>, ApiError> {
        match (&self.ca, csr) {
            (Some(ca), Some(csr)) => Ok(Some((ca.clone(), csr))),
            (Some(_), None) => Err(ApiError::bad_request(
                "this control plane uses mutual TLS: send `csr`, a PEM certificate signing request for the runtime's key",
            )),
            (None, _) => Ok(None),
        }
    }
}

/// The source address of a request, when the server put it there.
pub fn peer_address(request_extensions: &axum::http::Extensions) -> Option<std::net::SocketAddr> {
    request_extensions
        .get::<ConnectInfo<TlsPeer>>()
        .map(|ConnectInfo(peer)| peer.address)
}
