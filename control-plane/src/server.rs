//! Serving the API on a listener until a shutdown signal: over mutual TLS,
//! or over plain HTTP for development.
//!
//! Each connection runs in its own task, so a slow or silent client never
//! holds up the others, and every stage of a connection is bounded
//! ([`ConnectionLimits`]): the number of open connections, the TLS
//! handshake, the time to send a request's headers (also the longest a
//! kept-alive connection may sit idle between requests), the time to send
//! and be answered a whole request, and the time a connection may move no
//! byte at all.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use crate::api::{operations, router};
use crate::ca::certificate_sha256;
use crate::error::ApiError;
use crate::state::AppState;
use crate::tls::TlsPeer;

/// Default most connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The most connections open at once on the operations listener: scrapers
/// and probes need few, and they must not take the API's file descriptors.
pub const OPERATIONS_MAX_CONNECTIONS: usize = 64;
/// Default longest TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest time to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest time to send a whole request and be answered.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest time a connection may move no byte in either direction.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds on connections, so that slow, silent or numerous clients cannot
/// hold the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The most connections open at once (handshakes included); more wait
    /// in the listen backlog until one closes.
    pub max_connections: usize,
    /// The longest a client may take to complete its TLS handshake.
    pub handshake_timeout: Duration,
    /// The longest a client may take to send a request's headers, counted
    /// from the connection's start or the end of the previous answer: a
    /// kept-alive connection idle that long is closed.
    pub header_read_timeout: Duration,
    /// The longest a request may take, from its headers to its answer
    /// (its body included): 408 after that.
    pub request_timeout: Duration,
    /// The longest a connection may move no byte while the server waits to
    /// read or write (a client that stops reading an answer, say).
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl ConnectionLimits {
    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_connections == 0 {
            return Err("--max-connections must be more than zero");
        }
        let timeouts = [
            self.handshake_timeout,
            self.header_read_timeout,
            self.request_timeout,
            self.idle_timeout,
        ];
        if timeouts.iter().any(Duration::is_zero) {
            return Err("connection timeouts must be more than zero");
        }
        Ok(())
    }
}

/// Serves the API over TLS on `listener` with `config` until `shutdown`
/// completes, then finishes the requests in flight. The state should hold
/// the CA (see [`AppState::with_ca`]) so that runtime endpoints require the
/// client certificate the runtime was issued.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(
        listener,
        Some(config),
        state,
        ConnectionLimits::default(),
        shutdown,
    )
    .await
}

/// Serves the API on `listener` (plain HTTP) until `shutdown` completes, then
/// finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, None, state, ConnectionLimits::default(), shutdown).await
}

/// Serves the API on `listener`, over TLS with `tls` or plain HTTP without,
/// within `limits`, until `shutdown` completes; then finishes the requests
/// in flight (for at most the request timeout).
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_router(listener, tls, router(state), limits, shutdown).await
}

/// Serves the operations routes (`/metrics`, `/healthz`, `/readyz`, see
/// [`crate::api::operations`]) of `state` on `listener` over plain HTTP,
/// within `limits`, until `shutdown` completes.
pub async fn serve_operations(
    listener: TcpListener,
    state: AppState,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_router(listener, None, operations::router(state), limits, shutdown).await
}

/// Serves `router` on `listener` (see [`serve_with`]).
async fn serve_router(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    limits
        .validate()
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
    let acceptor = tls.map(TlsAcceptor::from);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let watcher = graceful.watcher();
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Some(acceptor) = acceptor else {
                let peer = TlsPeer {
                    address,
                    client_certificate: None,
                };
                return serve_connection(tcp, peer, router, limits, watcher).await;
            };
            let stream =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
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
            serve_connection(stream, peer, router, limits, watcher).await;
        });
    }
    drop(listener);
    let grace = limits.request_timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {grace:?}; stopping anyway");
    }
    Ok(())
}

/// Serves HTTP/1.1 on one connection.
async fn serve_connection<I>(
    io: I,
    peer: TlsPeer,
    router: Router,
    limits: ConnectionLimits,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let address = peer.address;
    let service = PeerService {
        router,
        peer,
        request_timeout: limits.request_timeout,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let io = TokioIo::new(IdleTimeout::new(io, limits.idle_timeout));
    let connection = builder.serve_connection(io, service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%address, %error, "connection closed");
    }
}

/// The router for one connection: each request gets the connection's
/// [`TlsPeer`] (as `ConnectInfo`) and is bounded by the request timeout.
#[derive(Clone)]
struct PeerService {
    router: Router,
    peer: TlsPeer,
    request_timeout: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for PeerService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request
            .extensions_mut()
            .insert(ConnectInfo(self.peer.clone()));
        let request = request.map(Body::new);
        let mut router = self.router.clone();
        let timeout = self.request_timeout;
        let address = self.peer.address;
        Box::pin(async move {
            let answer = tower_service::Service::call(&mut router, request);
            match tokio::time::timeout(timeout, answer).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::info!(%address, "request timed out");
                    let mut response = ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "the request was not sent and answered within {} s",
                            timeout.as_secs_f64()
                        ),
                    )
                    .into_response();
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    Ok(response)
                }
            }
        })
    }
}

/// A connection that fails with `TimedOut` once it has waited `timeout`
/// to read or write without moving a byte.
struct IdleTimeout<I> {
    inner: I,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    armed: bool,
}

impl<I> IdleTimeout<I> {
    fn new(inner: I, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// After the inner connection said `Pending`: whether the wait is over.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.armed {
            let deadline = tokio::time::Instant::now() + self.timeout;
            self.deadline.as_mut().reset(deadline);
            self.armed = true;
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection moved no byte for too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => self.poll_idle(cx).map(Err),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleTimeout<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.progress(cx, poll)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
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
