//! The runtime through an enterprise network: a CONNECT proxy written here
//! (it counts the tunnels it opens), a registry and a control plane on
//! loopback over TLS with test CAs, trust from `[network] ca_bundle` and
//! from the operating system's store (`SSL_CERT_FILE` stands in for it).
//!
//! The library's clients are tested in this process; what depends on the
//! environment runs the real binary with its own, never this process's
//! (other tests run in threads beside these).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use assessment_runtime::agent_config::NetworkSettings;
use assessment_runtime::control_plane::client::{self, ClientError, ControlPlaneClient, Trust};
use assessment_runtime::control_plane::{ClientTls, Credentials};
use assessment_runtime::plugins::fetch::Downloader;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A test CA.
struct TestCa(rcgen::CertifiedIssuer<'static, rcgen::KeyPair>);

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa(rcgen::CertifiedIssuer::self_signed(params, key).unwrap())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// The CA as a PEM file in `dir`.
    fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("ca-{}.pem", fastrand::u64(..)));
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// A certificate for `names` and its key (PEM).
    fn issue(&self, names: &[&str]) -> (String, String) {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.0).unwrap();
        (certificate.pem(), key.serialize_pem())
    }
}

type Handler = dyn Fn(&str, &str, &[u8]) -> (u16, String) + Send + Sync;

/// An HTTPS server on loopback (for `localhost` and `127.0.0.1`), one
/// request per connection; keeps "METHOD /path" of each request.
struct TlsServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TlsServer {
    async fn start(
        ca: &TestCa,
        handler: impl Fn(&str, &str, &[u8]) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        let (certificate, key) = ca.issue(&["localhost", "127.0.0.1"]);
        let certificate = CertificateDer::from_pem_slice(certificate.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, handler, seen) = (acceptor.clone(), handler.clone(), seen.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate hangs up.
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut stream = BufReader::new(stream);
                    let Some((request_line, length)) = read_head(&mut stream).await else {
                        return;
                    };
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let mut parts = request_line.split(' ');
                    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    seen.lock().unwrap().push(format!("{method} {path}"));
                    let (status, body) = handler(method, path, &body);
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let mut stream = stream.into_inner();
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        TlsServer { addr, requests }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// The request line and the content length of a request head.
async fn read_head(stream: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> Option<(String, usize)> {
    let mut request_line = String::new();
    stream.read_line(&mut request_line).await.ok()?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some((request_line.trim_end().to_string(), length));
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
}

/// An HTTP proxy that only tunnels (`CONNECT host:port`), as enterprise
/// proxies do for HTTPS; keeps the target of every tunnel it opened.
struct ConnectProxy {
    addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let opened = tunnels.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let opened = opened.clone();
                tokio::spawn(async move {
                    let mut client = BufReader::new(client);
                    let Some((request_line, _)) = read_head(&mut client).await else {
                        return;
                    };
                    let target = match request_line.split(' ').collect::<Vec<_>>()[..] {
                        ["CONNECT", target, "HTTP/1.1"] => target.to_string(),
                        _ => {
                            let _ = client
                                .into_inner()
                                .write_all(
                                    b"HTTP/1.1 405 Only CONNECT\r\ncontent-length: 0\r\n\r\n",
                                )
                                .await;
                            return;
                        }
                    };
                    let Ok(mut upstream) = TcpStream::connect(&target).await else {
                        let _ = client
                            .into_inner()
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    };
                    opened.lock().unwrap().push(target);
                    // Whatever the client sent past the head belongs upstream.
                    let early = client.buffer().to_vec();
                    let mut client = client.into_inner();
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                        || upstream.write_all(&early).await.is_err()
                    {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        ConnectProxy { addr, tunnels }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().unwrap().clone()
    }
}

/// Network settings without the operating system's store (this machine's
/// must not decide a test), through `proxy` when given.
fn network(proxy: Option<&ConnectProxy>, ca_bundle: Option<&Path>) -> NetworkSettings {
    NetworkSettings {
        system_roots: false,
        control_plane_system_roots: false,
        ca_bundle: ca_bundle.map(Path::to_path_buf),
        proxy: proxy.map(ConnectProxy::url),
        no_proxy: None,
    }
}

#[tokio::test]
async fn registry_downloads_take_the_configured_proxy_and_trust_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("registry CA");
    let bundle = ca.write(dir.path());
    let registry = TlsServer::start(&ca, |_, path, _| (200, format!("asset {path}"))).await;
    let proxy = ConnectProxy::start().await;
    let url = format!("https://localhost:{}/r/asset", registry.port());

    // Without the CA: the tunnel opens, the registry is not trusted.
    let downloader = Downloader::new(TIMEOUT, 0, &network(Some(&proxy), None)).unwrap();
    let error = downloader.get(&url, 1024).await.unwrap_err().to_string();
    assert!(
        error.contains("certificate") && error.contains("network] ca_bundle"),
        "{error}"
    );
    assert!(registry.requests().is_empty());
    assert_eq!(proxy.tunnels(), [format!("localhost:{}", registry.port())]);

    // With it: downloaded through the proxy.
    let downloader = Downloader::new(TIMEOUT, 0, &network(Some(&proxy), Some(&bundle))).unwrap();
    assert_eq!(downloader.get(&url, 1024).await.unwrap(), b"asset /r/asset");
    assert_eq!(registry.requests(), ["GET /r/asset"]);
    assert_eq!(proxy.tunnels().len(), 2);
}

#[tokio::test]
async fn hosts_in_no_proxy_are_reached_directly_and_loopback_is_not_special() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("registry CA");
    let bundle = ca.write(dir.path());
    let registry = TlsServer::start(&ca, |_, _, _| (200, "asset".to_string())).await;
    let proxy = ConnectProxy::start().await;
    let settings = NetworkSettings {
        no_proxy: Some(vec!["localhost".to_string(), "192.168.0.0/16".to_string()]),
        ..network(Some(&proxy), Some(&bundle))
    };
    let downloader = Downloader::new(TIMEOUT, 0, &settings).unwrap();
    let port = registry.port();
    downloader
        .get(&format!("https://localhost:{port}/direct"), 1024)
        .await
        .unwrap();
    assert!(proxy.tunnels().is_empty());
    // The same server by its address, which the list does not name: reqwest
    // makes no exception for loopback, so the proxy carries it.
    downloader
        .get(&format!("https://127.0.0.1:{port}/proxied"), 1024)
        .await
        .unwrap();
    assert_eq!(proxy.tunnels(), [format!("127.0.0.1:{port}")]);
    assert_eq!(registry.requests(), ["GET /direct", "GET /proxied"]);
}

/// A control plane answering enrollment and the token endpoint; its
/// certificate comes from `server_ca`, the client certificates it issues
/// from `ca`.
async fn control_plane(ca: &Arc<TestCa>, server_ca: &TestCa) -> TlsServer {
    let ca = ca.clone();
    TlsServer::start(server_ca, move |method, path, body| match (method, path) {
        ("POST", "/v1/enroll") => {
            let request: serde_json::Value = serde_json::from_slice(body).unwrap();
            let csr = request["csr"].as_str().unwrap();
            let certificate = rcgen::CertificateSigningRequestParams::from_pem(csr)
                .unwrap()
                .signed_by(&ca.0)
                .unwrap();
            let answer = serde_json::json!({
                "runtime_id": "rt-1",
                "client_secret": "secret",
                "certificate": certificate.pem(),
            });
            (201, answer.to_string())
        }
        ("POST", "/api/auth/token") => (
            200,
            serde_json::json!({"access_token": "t", "expires_in": 3600}).to_string(),
        ),
        _ => (404, "{}".to_string()),
    })
    .await
}

#[tokio::test]
async fn the_control_plane_is_reached_through_the_proxy() {
    let ca = Arc::new(TestCa::new("control plane CA"));
    let server = control_plane(&ca, &ca).await;
    let proxy = ConnectProxy::start().await;
    let settings = network(Some(&proxy), None);
    let url = format!("https://localhost:{}", server.port());
    let credentials = client::enroll(
        &url,
        "token",
        "web-1",
        Trust::CaCertificate(ca.pem()),
        &settings,
    )
    .await
    .unwrap();
    assert_eq!(proxy.tunnels().len(), 1);
    let client = ControlPlaneClient::new(credentials, TIMEOUT, &settings).unwrap();
    client.authenticate().await.unwrap();
    assert_eq!(
        proxy.tunnels(),
        vec![format!("localhost:{}", server.port()); 2]
    );
    assert_eq!(
        server.requests(),
        ["POST /v1/enroll", "POST /api/auth/token"]
    );
}

#[tokio::test]
async fn a_control_plane_behind_a_gateway_is_trusted_through_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let enrolled = Arc::new(TestCa::new("control plane CA"));
    // A gateway in front of the control plane presents its own certificate.
    let gateway = TestCa::new("gateway CA");
    let server = control_plane(&enrolled, &gateway).await;
    let proxy = ConnectProxy::start().await;
    let (certificate, private_key) = enrolled.issue(&["runtime"]);
    let credentials = Credentials {
        url: format!("https://localhost:{}", server.port()),
        runtime_id: "rt-1".to_string(),
        client_secret: "secret".to_string(),
        tls: Some(ClientTls {
            ca_certificate: enrolled.pem(),
            certificate,
            private_key,
        }),
    };
    let client =
        ControlPlaneClient::new(credentials.clone(), TIMEOUT, &network(Some(&proxy), None))
            .unwrap();
    let error = client.authenticate().await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Unreachable(m) if m.contains("certificate")),
        "{error}"
    );
    let bundle = gateway.write(dir.path());
    let client =
        ControlPlaneClient::new(credentials, TIMEOUT, &network(Some(&proxy), Some(&bundle)))
            .unwrap();
    client.authenticate().await.unwrap();
    assert_eq!(server.requests(), ["POST /api/auth/token"]);
}

// ---- The real binary, with an environment of its own ----

/// The runtime's directory, with an agent.toml whose `[network]` section is
/// `network` and one registry plugin from `registry`.
fn agent(dir: &Path, registry: &TlsServer, network: &str) -> PathBuf {
    let config = dir.join("agent.toml");
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::write(
        &config,
        format!(
            "[runtime]\nassessment_root = {root:?}\nstate_dir = {state:?}\n\
             download_retries = 0\ndownload_timeout = \"10s\"\n\
             trusted_keys = [\"RWRlhfIL4e2ssaUm6G05FcNgLm6DQ4nojJJgb+z5R7RjvfoFnfgWKYGU\"]\n\
             [network]\n{network}\n\
             [[plugin]]\nname = \"probe\"\nversion = \"1.0.0\"\n\
             source = {{ url = \"https://localhost:{port}/releases\" }}\n",
            root = dir.join("root").display().to_string(),
            state = dir.join("state").display().to_string(),
            port = registry.port(),
        ),
    )
    .unwrap();
    config
}

/// The runtime with `args` and only the variables of `env` among those
/// that choose proxies and trust stores.
async fn runtime(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_assessment-runtime"));
    command.args(args).arg("--config").arg(config);
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "REQUEST_METHOD",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let out = command.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The registry answers 404 to everything: a fetch that gets that far went
/// through TLS and the proxy, which is all these tests ask.
async fn empty_registry(ca: &TestCa) -> TlsServer {
    TlsServer::start(ca, |_, _, _| (404, "{}".to_string())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_fetch_takes_the_proxy_and_ca_bundle_of_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("registry CA");
    let bundle = ca.write(dir.path());
    let registry = empty_registry(&ca).await;
    let proxy = ConnectProxy::start().await;
    let proxied = format!("system_roots = false\nproxy = {:?}", proxy.url());

    let config = agent(dir.path(), &registry, &proxied);
    let (ok, text) = runtime(&["plugins", "fetch"], &config, &[]).await;
    assert!(!ok && text.contains("certificate"), "{text}");
    assert!(registry.requests().is_empty(), "{text}");
    assert_eq!(proxy.tunnels().len(), 1, "{text}");

    let config = agent(
        dir.path(),
        &registry,
        &format!("{proxied}\nca_bundle = {bundle:?}"),
    );
    let (ok, text) = runtime(&["plugins", "fetch"], &config, &[]).await;
    assert!(!ok && text.contains("HTTP 404"), "{text}");
    assert_eq!(
        registry.requests(),
        ["GET /releases/probe/v1.0.0/probe-1.0.0.manifest.json"],
        "{text}"
    );
    assert_eq!(proxy.tunnels().len(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_fetch_takes_https_proxy_from_the_environment_and_no_proxy_from_the_configuration()
{
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("registry CA");
    let bundle = ca.write(dir.path());
    let registry = empty_registry(&ca).await;
    let proxy = ConnectProxy::start().await;
    let proxy_url = proxy.url();

    let config = agent(
        dir.path(),
        &registry,
        &format!("system_roots = false\nca_bundle = {bundle:?}"),
    );
    let (_, text) = runtime(
        &["plugins", "fetch"],
        &config,
        &[("HTTPS_PROXY", &proxy_url)],
    )
    .await;
    assert!(text.contains("HTTP 404"), "{text}");
    assert_eq!(
        proxy.tunnels(),
        [format!("localhost:{}", registry.port())],
        "{text}"
    );

    // `no_proxy` in the file replaces NO_PROXY; the environment's proxy
    // still applies to the other hosts.
    let config = agent(
        dir.path(),
        &registry,
        &format!("system_roots = false\nca_bundle = {bundle:?}\nno_proxy = [\"localhost\"]"),
    );
    let (_, text) = runtime(
        &["plugins", "fetch"],
        &config,
        &[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "example.org")],
    )
    .await;
    assert!(text.contains("HTTP 404"), "{text}");
    assert_eq!(proxy.tunnels().len(), 1, "{text}");
    assert_eq!(registry.requests().len(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_are_trusted_through_the_system_store_unless_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("enterprise CA");
    let store = ca.write(dir.path());
    let store = store.to_str().unwrap();
    let registry = empty_registry(&ca).await;

    // The default: the system store (here SSL_CERT_FILE) is trusted.
    let config = agent(dir.path(), &registry, "");
    let (_, text) = runtime(&["plugins", "fetch"], &config, &[("SSL_CERT_FILE", store)]).await;
    assert!(text.contains("HTTP 404"), "{text}");

    let config = agent(dir.path(), &registry, "system_roots = false");
    let (ok, text) = runtime(&["plugins", "fetch"], &config, &[("SSL_CERT_FILE", store)]).await;
    assert!(!ok && text.contains("certificate"), "{text}");
    assert_eq!(registry.requests().len(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_trusts_the_system_store_only_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let enrolled = Arc::new(TestCa::new("control plane CA"));
    let gateway = TestCa::new("gateway CA");
    let store = gateway.write(dir.path());
    let store = store.to_str().unwrap();
    let enrolled_pem = enrolled.write(dir.path());
    let server = control_plane(&enrolled, &gateway).await;
    let url = format!("https://localhost:{}", server.port());
    let enroll = [
        "enroll",
        "--url",
        &url,
        "--token",
        "token",
        "--name",
        "web-1",
        "--ca-cert",
        enrolled_pem.to_str().unwrap(),
    ];

    // The registry's default (the system store) is not the control plane's.
    let config = agent(dir.path(), &server, "");
    let (ok, text) = runtime(&enroll, &config, &[("SSL_CERT_FILE", store)]).await;
    assert!(!ok && text.contains("certificate"), "{text}");

    let config = agent(dir.path(), &server, "control_plane_system_roots = true");
    let (ok, text) = runtime(&enroll, &config, &[("SSL_CERT_FILE", store)]).await;
    assert!(ok && text.contains("enrolled as rt-1"), "{text}");
    assert_eq!(server.requests(), ["POST /v1/enroll"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_an_unusable_ca_bundle_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("registry CA");
    let registry = empty_registry(&ca).await;
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("bundle.der");
    std::fs::write(&not_pem, b"\x30\x82 binary").unwrap();
    for (bundle, why) in [
        (&missing, "cannot read it"),
        (&not_pem, "holds no PEM certificate"),
    ] {
        let config = agent(dir.path(), &registry, &format!("ca_bundle = {bundle:?}"));
        let (ok, text) = runtime(&["validate"], &config, &[]).await;
        assert!(!ok, "{text}");
        assert!(
            text.contains(&format!("network.ca_bundle = {}: {why}", bundle.display())),
            "{text}"
        );
    }
    assert!(registry.requests().is_empty());
}
