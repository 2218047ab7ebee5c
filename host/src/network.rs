//! How the runtime reaches registries and the control plane through the
//! networks enterprises have: whose certificates each HTTP client trusts
//! and which proxy carries its requests, from the `[network]` section of
//! the runtime's own file ([`NetworkSettings`]).
//!
//! Trust roots:
//! - registries: the roots built into the runtime (webpki), plus the
//!   operating system's store when `system_roots` (the default);
//! - the control plane: only the CA it was enrolled with (which the caller
//!   adds), plus the operating system's store when
//!   `control_plane_system_roots`;
//! - both: plus every certificate of `ca_bundle`.
//!
//! Proxy: `proxy` carries every request except to the hosts of `no_proxy`,
//! and the environment is then ignored. Without `proxy`, `HTTPS_PROXY`,
//! `HTTP_PROXY` and `ALL_PROXY` apply (and their lowercase forms), with
//! `no_proxy` in place of `NO_PROXY` when it is set. Loopback addresses
//! get no exception: only the no-proxy list exempts a host.

use std::path::{Path, PathBuf};

use crate::agent_config::NetworkSettings;

/// Why the `[network]` settings cannot be applied to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// `ca_bundle` cannot be read.
    #[error("network.ca_bundle = {}: cannot read it: {source}", path.display())]
    BundleUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `ca_bundle` was read but holds no usable certificate, or a broken
    /// one.
    #[error("network.ca_bundle = {}: {reason}", path.display())]
    BundleInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A proxy URL (from `network.proxy` or an environment variable)
    /// cannot be used.
    #[error("{setting} = {url:?}: not a usable proxy URL ({reason})")]
    Proxy {
        /// `network.proxy` or the environment variable.
        setting: String,
        /// The URL, its password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Whom a client talks to, which decides the roots it trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Plugin registries and the servers they redirect to: public roots.
    Registry,
    /// The control plane: its own CA, which the caller adds; public roots
    /// only when the operator says so.
    ControlPlane,
}

/// `builder` with the trust roots for `peer` and the proxy that
/// `settings` (and, where they leave it open, the environment) give.
/// Reads `ca_bundle`: fails, naming the file, when it is unreadable or
/// holds no certificate.
pub fn configure(
    builder: reqwest::ClientBuilder,
    settings: &NetworkSettings,
    peer: Peer,
) -> Result<reqwest::ClientBuilder, NetworkError> {
    configure_with_env(builder, settings, peer, &|name| std::env::var(name).ok())
}

/// [`configure`] with the environment given as a lookup, so that tests
/// never touch the process's own.
fn configure_with_env(
    builder: reqwest::ClientBuilder,
    settings: &NetworkSettings,
    peer: Peer,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<reqwest::ClientBuilder, NetworkError> {
    let mut builder = match peer {
        Peer::Registry => builder
            .tls_built_in_webpki_certs(true)
            .tls_built_in_native_certs(settings.system_roots),
        // Built-in roots off first: it switches off both sources.
        Peer::ControlPlane => builder
            .tls_built_in_root_certs(false)
            .tls_built_in_native_certs(settings.control_plane_system_roots),
    };
    if let Some(path) = &settings.ca_bundle {
        for certificate in read_ca_bundle(path)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    with_proxy(builder, settings, env)
}

/// Every certificate of a PEM bundle; an error names the file and says
/// what is wrong (unreadable, no certificate, a broken certificate).
pub fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, NetworkError> {
    let bytes = std::fs::read(path).map_err(|source| NetworkError::BundleUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    parse_ca_bundle(&bytes).map_err(|reason| NetworkError::BundleInvalid {
        path: path.to_path_buf(),
        reason,
    })
}

fn parse_ca_bundle(bytes: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let mut certificates = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let block = block.map_err(|e| {
            format!(
                "not readable as PEM after {} certificate(s): {e}",
                certificates.len()
            )
        })?;
        // Other blocks (a key, parameters) are not trust anchors; bundles
        // made by hand sometimes carry them.
        if block.label != "CERTIFICATE" {
            continue;
        }
        let number = certificates.len() + 1;
        block
            .parse_x509()
            .map_err(|e| format!("certificate {number} is not a valid X.509 certificate: {e}"))?;
        let certificate = reqwest::Certificate::from_der(&block.contents)
            .map_err(|e| format!("certificate {number} cannot be used: {e}"))?;
        certificates.push(certificate);
    }
    if certificates.is_empty() {
        return Err(
            "holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\"); a DER file converts with `openssl x509 -inform der -in FILE -out FILE.pem`"
                .to_string(),
        );
    }
    Ok(certificates)
}

/// The environment variables of each kind of proxy, in the order curl and
/// reqwest read them: the first one set counts.
const PROXY_VARIABLES: [(ProxyKind, [&str; 2]); 3] = [
    (ProxyKind::Https, ["HTTPS_PROXY", "https_proxy"]),
    (ProxyKind::Http, ["HTTP_PROXY", "http_proxy"]),
    (ProxyKind::All, ["ALL_PROXY", "all_proxy"]),
];

#[derive(Debug, Clone, Copy)]
enum ProxyKind {
    Https,
    Http,
    All,
}

fn with_proxy(
    builder: reqwest::ClientBuilder,
    settings: &NetworkSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<reqwest::ClientBuilder, NetworkError> {
    let no_proxy = settings
        .no_proxy
        .as_ref()
        .and_then(|hosts| reqwest::NoProxy::from_string(&hosts.join(",")));
    if let Some(url) = &settings.proxy {
        // A proxy given here replaces the environment's (reqwest stops
        // reading it once a proxy is added).
        let proxy = reqwest::Proxy::all(url)
            .map_err(|e| proxy_error("network.proxy", url, &e))?
            .no_proxy(no_proxy);
        return Ok(builder.proxy(proxy));
    }
    let Some(no_proxy) = no_proxy else {
        // Nothing configured: reqwest reads HTTPS_PROXY, HTTP_PROXY,
        // ALL_PROXY and NO_PROXY itself.
        return Ok(builder);
    };
    // `no_proxy` replaces NO_PROXY, which reqwest cannot be told: the
    // environment's proxies are read here instead.
    let mut builder = builder.no_proxy();
    if env("REQUEST_METHOD").is_some() {
        // Under CGI, HTTP_PROXY may come from a request header (httpoxy):
        // reqwest ignores the environment then, and so does this.
        return Ok(builder);
    }
    for (kind, names) in PROXY_VARIABLES {
        let Some((name, url)) = names
            .iter()
            .find_map(|name| env(name).map(|value| (*name, value)))
        else {
            continue;
        };
        if url.trim().is_empty() {
            continue;
        }
        // curl's reading of a value without a scheme.
        let url = if url.contains("://") {
            url
        } else {
            format!("http://{url}")
        };
        let proxy = match kind {
            ProxyKind::Https => reqwest::Proxy::https(&url),
            ProxyKind::Http => reqwest::Proxy::http(&url),
            ProxyKind::All => reqwest::Proxy::all(&url),
        }
        .map_err(|e| proxy_error(name, &url, &e))?;
        builder = builder.proxy(proxy.no_proxy(Some(no_proxy.clone())));
    }
    Ok(builder)
}

fn proxy_error(setting: &str, url: &str, error: &reqwest::Error) -> NetworkError {
    NetworkError::Proxy {
        setting: setting.to_string(),
        url: without_password(url),
        reason: error.to_string(),
    }
}

/// `url` fit for an error message: a password in it is replaced.
fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have a password at all.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) if url.contains('@') => "(a URL with credentials)".to_string(),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn ca_pem(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_bundle_gives_every_certificate_and_ignores_other_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let text = format!(
            "# the gateway and the proxy\n{}{key}\r\n{}",
            ca_pem("gateway"),
            ca_pem("proxy")
        );
        let path = write(&dir, "bundle.pem", &text);
        assert_eq!(read_ca_bundle(&path).unwrap().len(), 2);
        // And a client takes them, for both peers.
        let settings = NetworkSettings {
            ca_bundle: Some(path),
            ..NetworkSettings::default()
        };
        for peer in [Peer::Registry, Peer::ControlPlane] {
            configure(reqwest::Client::builder(), &settings, peer)
                .unwrap()
                .build()
                .unwrap();
        }
    }

    #[test]
    fn a_bad_bundle_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let cases = [
            (missing.clone(), "cannot read it"),
            (write(&dir, "empty.pem", ""), "holds no PEM certificate"),
            (
                write(&dir, "der.crt", "\u{30}\u{82}binary"),
                "holds no PEM certificate",
            ),
            (
                write(
                    &dir,
                    "key.pem",
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                ),
                "holds no PEM certificate",
            ),
            (
                write(
                    &dir,
                    "garbage.pem",
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ),
                "certificate 1 is not a valid X.509 certificate",
            ),
            (
                write(
                    &dir,
                    "cut.pem",
                    &format!("{}-----BEGIN CERTIFICATE-----\nAAAA\n", ca_pem("a")),
                ),
                "after 1 certificate(s)",
            ),
        ];
        for (path, expected) in cases {
            let error = read_ca_bundle(&path).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("network.ca_bundle = {}: ", path.display())),
                "{error}"
            );
            assert!(error.contains(expected), "{path:?}: {error}");
            // Building a client fails the same way (`validate` relies on it).
            let settings = NetworkSettings {
                ca_bundle: Some(path.clone()),
                ..NetworkSettings::default()
            };
            let error = configure(reqwest::Client::builder(), &settings, Peer::Registry)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn proxy_errors_hide_the_password() {
        assert_eq!(
            without_password("http://user:s3cret@proxy:3128"),
            "http://user:***@proxy:3128/"
        );
        assert_eq!(without_password("http://proxy:3128"), "http://proxy:3128");
        assert!(!without_password("http://user:s3cret@[bad").contains("s3cret"));
    }

    /// A plain-HTTP server answering every request with `body`; the request
    /// lines it received are kept.
    async fn answering(
        body: &'static str,
    ) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let lines = lines.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head);
                    lines
                        .lock()
                        .unwrap()
                        .push(head.lines().next().unwrap_or("").to_string());
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (addr, seen)
    }

    async fn body(client: &reqwest::Client, url: &str) -> String {
        client.get(url).send().await.unwrap().text().await.unwrap()
    }

    #[tokio::test]
    async fn no_proxy_hosts_are_reached_directly_and_loopback_is_not_special() {
        let (server, _) = answering("direct").await;
        let (proxy, through_proxy) = answering("proxied").await;
        let settings = NetworkSettings {
            proxy: Some(format!("http://{proxy}")),
            no_proxy: Some(vec!["localhost".to_string(), "10.0.0.0/8".to_string()]),
            ..NetworkSettings::default()
        };
        let client = configure(reqwest::Client::builder(), &settings, Peer::Registry)
            .unwrap()
            .build()
            .unwrap();
        let port = server.port();
        assert_eq!(
            body(&client, &format!("http://localhost:{port}/a")).await,
            "direct"
        );
        // 127.0.0.1 is loopback but not in the list: proxied.
        assert_eq!(
            body(&client, &format!("http://127.0.0.1:{port}/b")).await,
            "proxied"
        );
        assert_eq!(
            *through_proxy.lock().unwrap(),
            [format!("GET http://127.0.0.1:{port}/b HTTP/1.1")]
        );
    }

    #[tokio::test]
    async fn the_environment_proxy_applies_with_the_configured_no_proxy() {
        let (server, _) = answering("direct").await;
        let (proxy, through_proxy) = answering("proxied").await;
        let port = server.port();
        let client_with = |variables: &[(&str, String)], no_proxy: Option<Vec<String>>| {
            let variables: HashMap<String, String> = variables
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let settings = NetworkSettings {
                no_proxy,
                ..NetworkSettings::default()
            };
            configure_with_env(
                reqwest::Client::builder(),
                &settings,
                Peer::Registry,
                &move |name| variables.get(name).cloned(),
            )
            .unwrap()
            .build()
            .unwrap()
        };
        let localhost = Some(vec!["localhost".to_string()]);
        // HTTP_PROXY (without a scheme, as curl reads it), NO_PROXY replaced
        // by the configured list.
        let client = client_with(
            &[
                ("HTTP_PROXY", proxy.to_string()),
                ("NO_PROXY", "127.0.0.1".to_string()),
            ],
            localhost.clone(),
        );
        assert_eq!(
            body(&client, &format!("http://localhost:{port}/")).await,
            "direct"
        );
        assert_eq!(
            body(&client, &format!("http://127.0.0.1:{port}/")).await,
            "proxied"
        );
        // ALL_PROXY in lowercase covers HTTP too; HTTPS_PROXY does not.
        let client = client_with(
            &[("all_proxy", format!("http://{proxy}"))],
            localhost.clone(),
        );
        assert_eq!(
            body(&client, &format!("http://127.0.0.1:{port}/")).await,
            "proxied"
        );
        let client = client_with(
            &[("HTTPS_PROXY", format!("http://{proxy}"))],
            localhost.clone(),
        );
        assert_eq!(
            body(&client, &format!("http://127.0.0.1:{port}/")).await,
            "direct"
        );
        // Under CGI the environment's proxies are not trusted.
        let client = client_with(
            &[
                ("HTTP_PROXY", format!("http://{proxy}")),
                ("REQUEST_METHOD", "GET".to_string()),
            ],
            localhost,
        );
        assert_eq!(
            body(&client, &format!("http://127.0.0.1:{port}/")).await,
            "direct"
        );
        assert_eq!(through_proxy.lock().unwrap().len(), 2);
    }

    #[test]
    fn an_unusable_environment_proxy_is_named() {
        let settings = NetworkSettings {
            no_proxy: Some(vec!["localhost".to_string()]),
            ..NetworkSettings::default()
        };
        let error = configure_with_env(
            reqwest::Client::builder(),
            &settings,
            Peer::Registry,
            &|name| (name == "https_proxy").then(|| "http://u:pw@[::1".to_string()),
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("https_proxy = "), "{error}");
        assert!(!error.contains("pw"), "{error}");
    }
}
