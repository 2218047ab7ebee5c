//! Downloads from a plugin registry: HTTPS with rustls (trust roots and
//! proxy from `[network]`), a timeout per request, retries with exponential
//! backoff for transient failures, and a size cap enforced while streaming
//! (a body is never held past its cap).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::agent_config::NetworkSettings;
use crate::network::{self, Peer};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body is larger than allowed.
    #[error("{url}: larger than {max} bytes; refusing it")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        max: u64,
    },
    /// The `[network]` settings cannot be applied (a CA bundle or proxy).
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// Connection, TLS, timeout or truncated body.
    #[error("{url}: {message}")]
    Transport {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
        /// Whether retrying may help.
        transient: bool,
    },
}

impl FetchError {
    fn is_transient(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => *status >= 500 || *status == 429,
            FetchError::TooLarge { .. } | FetchError::Network(_) => false,
            FetchError::Transport { transient, .. } => *transient,
        }
    }
}

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// Why a redirect to `next` must not be followed: a download that started
/// on HTTPS stays on HTTPS (a registry or a CDN must not downgrade it), and
/// chains are short.
fn redirect_refusal(previous: &[reqwest::Url], next: &reqwest::Url) -> Option<String> {
    if previous.len() >= MAX_REDIRECTS {
        return Some(format!("more than {MAX_REDIRECTS} redirects"));
    }
    let started_secure = previous.first().is_some_and(|u| u.scheme() == "https");
    if started_secure && next.scheme() != "https" {
        return Some(format!(
            "refusing a redirect from HTTPS to {}://{}: downloads that start on HTTPS stay on HTTPS",
            next.scheme(),
            next.host_str().unwrap_or("?")
        ));
    }
    None
}

/// `e` with its causes: reqwest's own message says only "error sending
/// request"; the causes say why (refused, proxy, certificate not trusted).
fn with_causes(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if message.contains("certificate") {
        message.push_str(
            " (TLS: the server's certificate is not from a CA this runtime trusts; for a private CA or a TLS-inspecting proxy, add its CA with `[network] ca_bundle`)",
        );
    }
    message
}

/// An HTTP client for registry downloads.
#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
    retries: usize,
}

impl Downloader {
    /// A client whose requests time out after `timeout` and are retried
    /// `retries` times when the failure is transient, trusting and
    /// proxied as `network` says (see [`crate::network`]).
    pub fn new(
        timeout: Duration,
        retries: usize,
        network: &NetworkSettings,
    ) -> Result<Self, FetchError> {
        let builder = network::configure(reqwest::Client::builder(), network, Peer::Registry)?;
        let client = builder
            .user_agent(concat!("assessment-runtime/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .https_only(false)
            .redirect(reqwest::redirect::Policy::custom(
                |attempt| match redirect_refusal(attempt.previous(), attempt.url()) {
                    Some(why) => attempt.error(why),
                    None => attempt.follow(),
                },
            ))
            .build()
            .map_err(|e| FetchError::Transport {
                url: String::new(),
                message: format!("cannot create the HTTP client: {e}"),
                transient: false,
            })?;
        Ok(Downloader { client, retries })
    }

    /// GET `url`, at most `max` bytes.
    pub async fn get(&self, url: &str, max: u64) -> Result<Vec<u8>, FetchError> {
        (|| self.get_once(url, max))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(self.retries),
            )
            .sleep(tokio::time::sleep)
            .when(FetchError::is_transient)
            .notify(|e, after| tracing::warn!("download failed, retrying in {after:?}: {e}"))
            .await
    }

    async fn get_once(&self, url: &str, max: u64) -> Result<Vec<u8>, FetchError> {
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: url.to_string(),
            message: if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_body() || e.is_decode() {
                format!("incomplete or corrupt body: {e}")
            } else {
                with_causes(&e)
            },
            transient: e.is_timeout() || e.is_connect() || e.is_body() || e.is_request(),
        };
        let mut response = self.client.get(url).send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            max,
        };
        if response.content_length().is_some_and(|len| len > max) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> reqwest::Url {
        reqwest::Url::parse(u).unwrap()
    }

    #[test]
    fn a_redirect_from_https_to_http_is_refused() {
        let secure = [url("https://registry.example/a")];
        assert!(redirect_refusal(&secure, &url("https://cdn.example/a")).is_none());
        let why = redirect_refusal(&secure, &url("http://cdn.example/a")).unwrap();
        assert!(why.contains("stay on HTTPS"), "{why}");
        // Further down a chain that started on HTTPS too.
        let chain = [
            url("https://registry.example/a"),
            url("https://cdn.example/b"),
        ];
        assert!(redirect_refusal(&chain, &url("http://evil.example/c")).is_some());
        // A development registry on plain HTTP may redirect within HTTP.
        assert!(
            redirect_refusal(&[url("http://127.0.0.1:1/a")], &url("http://127.0.0.1:1/b"))
                .is_none()
        );
        let long: Vec<_> = (0..MAX_REDIRECTS)
            .map(|i| url(&format!("https://r.example/{i}")))
            .collect();
        assert!(redirect_refusal(&long, &url("https://r.example/x")).is_some());
    }
}
