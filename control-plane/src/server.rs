//! Serving the API on a listener until a shutdown signal: over mutual TLS,
//! or over plain HTTP for development.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{AppState, router};
use crate::tls::{TlsListener, TlsPeer};

/// Serves the API over TLS on `listener` with `config` until `shutdown`
/// completes, then finishes the requests in flight. The state should hold
/// the CA (see [`AppState::with_ca`]) so that runtime endpoints require the
/// client certificate the runtime was issued.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TlsListener::new(listener, config)?;
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<TlsPeer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serves the API on `listener` (plain HTTP) until `shutdown` completes, then
/// finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
