//! The daemon as a service: readiness, reload and watchdog notifications
//! to systemd (`Type=notify`), and the operations listener serving
//! `/metrics`, `/healthz` and `/readyz` over plain HTTP.
//!
//! The listener says nothing secret (counts, durations, plugin names from
//! the operator's configuration) and takes no input but the path; it binds
//! where `[service] metrics_listen` says (loopback unless the operator
//! chooses otherwise).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use sd_notify::NotifyState;

/// Where the daemon is in its life, for `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
}

// `Default` starts at 0.
const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

impl Health {
    /// Jobs are scheduled under a configuration in force.
    pub fn set_ready(&self) {
        self.state.store(READY, Ordering::SeqCst);
    }

    /// Shutting down (draining runs in flight).
    pub fn set_stopping(&self) {
        self.state.store(STOPPING, Ordering::SeqCst);
    }

    /// Ready to run jobs; and when not, why.
    pub fn ready(&self) -> Result<(), &'static str> {
        match self.state.load(Ordering::SeqCst) {
            STARTING => Err("starting"),
            READY => Ok(()),
            _ => Err("stopping"),
        }
    }
}

/// Refreshes the gauges read at scrape time (outbox depth, certificate).
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// Why the operations listener did not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {address} for metrics ([service] metrics_listen): {source}; choose a free address and port"
)]
pub struct ListenError {
    /// The configured address.
    pub address: SocketAddr,
    /// The operating system's error.
    pub source: std::io::Error,
}

/// Bind the operations listener (before the daemon announces readiness, so
/// that a bad address stops the start with a clear error).
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, ListenError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ListenError { address, source })
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until
/// `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    refresh: Refresh,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use axum::routing::get;
    let ready = health.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || async move {
                // Reading the outbox's depth touches the disk.
                let refresh = refresh.clone();
                let _ = tokio::task::spawn_blocking(move || refresh()).await;
                (
                    [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                    crate::metrics::global().encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                match ready.ready() {
                    Ok(()) => (StatusCode::OK, "ready\n").into_response(),
                    Err(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    )
                        .into_response(),
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
}

/// Notifications to the service manager; silent without `NOTIFY_SOCKET`
/// (not started by systemd as `Type=notify`).
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    watchdog: Option<Duration>,
}

impl Notifier {
    /// What the service manager asked for (`WATCHDOG_USEC`).
    pub fn from_env() -> Self {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to pet the watchdog (half its timeout), if it is on.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
            .map(|t| (t / 2).max(Duration::from_millis(100)))
    }

    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("cannot notify the service manager: {e}");
        }
    }

    /// Started: jobs are scheduled.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Reloading the configuration (`ExecReload` waits for the next ready).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Draining before exit.
    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("draining runs in flight"),
        ]);
    }

    /// The daemon's tasks still run.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_daemons_life() {
        let health = Health::default();
        assert_eq!(health.ready(), Err("starting"));
        health.set_ready();
        assert_eq!(health.ready(), Ok(()));
        health.set_stopping();
        assert_eq!(health.ready(), Err("stopping"));
    }
}
