//! Starts and stops a control plane for a test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use assessment_control_plane::ca::CertificateAuthority;
use assessment_control_plane::config::Limits;
use assessment_control_plane::server::{ConnectionLimits, serve_operations, serve_with};
use assessment_control_plane::tls::server_config;
use assessment_control_plane::{AppState, ServerConfig, Store};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running control plane.
pub struct Server {
    pub url: String,
    pub http: Client,
    pub database: PathBuf,
    /// The CA's certificate (PEM) when serving mutual TLS.
    pub ca_pem: Option<String>,
    /// The operations listener (`/metrics`, `/healthz`, `/readyz`, plain
    /// HTTP), when started with `Options::metrics`.
    pub metrics_url: Option<String>,
    /// The server's store.
    pub store: Store,
    shutdown: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// Options of a test server.
#[derive(Clone, Copy)]
pub struct Options {
    pub stale_after: Duration,
    pub token_ttl: Duration,
    pub limits: Limits,
    pub connections: ConnectionLimits,
    /// Also serve the operations listener.
    pub metrics: bool,
    /// Serve only the Compliance Framework routes.
    pub compliance_framework_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(180),
            token_ttl: Duration::from_secs(900),
            limits: Limits::default(),
            connections: ConnectionLimits::default(),
            metrics: false,
            compliance_framework_only: false,
        }
    }
}

impl Options {
    fn config(&self) -> ServerConfig {
        ServerConfig::new(ADMIN_TOKEN, self.token_ttl, self.stale_after)
            .unwrap()
            .with_limits(self.limits)
            .unwrap()
            .with_compliance_framework_only(self.compliance_framework_only)
    }
}

impl Server {
    /// A server on a new temporary database.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A server with `options` on a new temporary database.
    pub async fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("control-plane.db");
        let mut server = Self::start_on(&database, options).await;
        server._dir = Some(dir);
        server
    }

    /// A server on `database` (which may hold data already).
    pub async fn start_on(database: &Path, options: Options) -> Self {
        let store = Store::open(database).await.unwrap();
        let state = AppState::new(store, options.config());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut server = Self::spawn(listener, url, None, state, options).await;
        server.database = database.to_path_buf();
        server
    }

    /// A server over mutual TLS with a new CA, on a new temporary database.
    /// Its `http` client trusts the CA but has no client certificate.
    pub async fn start_tls() -> Self {
        Self::start_tls_with(Options::default()).await
    }

    /// A server over mutual TLS with `options`.
    pub async fn start_tls_with(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("control-plane.db");
        let ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("ca")).unwrap());
        let tls = server_config(ca.clone(), &["localhost".to_string()]).unwrap();
        let ca_pem = ca.certificate_pem().to_string();
        let store = Store::open(&database).await.unwrap();
        let state = AppState::new(store, options.config()).with_ca(ca);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let mut server = Self::spawn(listener, url, Some(tls), state, options).await;
        server.http = tls_client(&ca_pem, None);
        server.database = database;
        server.ca_pem = Some(ca_pem);
        server._dir = Some(dir);
        server
    }

    /// Serves `state` on `listener` (and on an operations listener if
    /// `options.metrics`).
    async fn spawn(
        listener: tokio::net::TcpListener,
        url: String,
        tls: Option<Arc<rustls::ServerConfig>>,
        state: AppState,
        options: Options,
    ) -> Self {
        let store = state.store.clone();
        let mut shutdown = Vec::new();
        let mut tasks = Vec::new();
        let mut metrics_url = None;
        if options.metrics {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            metrics_url = Some(format!("http://{}", listener.local_addr().unwrap()));
            let (stop, stopped) = oneshot::channel::<()>();
            shutdown.push(stop);
            tasks.push(tokio::spawn(serve_operations(
                listener,
                state.clone(),
                options.connections,
                async move {
                    let _ = stopped.await;
                },
            )));
        }
        let (stop, stopped) = oneshot::channel::<()>();
        shutdown.push(stop);
        tasks.push(tokio::spawn(serve_with(
            listener,
            tls,
            state,
            options.connections,
            async move {
                let _ = stopped.await;
            },
        )));
        Self {
            url,
            http: Client::new(),
            database: PathBuf::new(),
            ca_pem: None,
            metrics_url,
            store,
            shutdown,
            tasks,
            _dir: None,
        }
    }

    /// Stops the server gracefully and waits for it; keeps the database.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        drop(std::mem::take(&mut self.http));
        for shutdown in self.shutdown.drain(..) {
            shutdown.send(()).unwrap();
        }
        for task in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the server stops within 10 s")
                .unwrap()
                .unwrap();
        }
        self._dir.take()
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(format!("{}{path}", self.url))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.http.post(format!("{}{path}", self.url))
    }

    /// `POST path` with a bearer `token` and a JSON `body`, sent.
    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.post(path)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.http.put(format!("{}{path}", self.url))
    }

    /// `POST /v1/admin/enrollment-tokens`; returns the token.
    pub async fn enrollment_token(&self, group: &str) -> String {
        let response = self
            .post("/v1/admin/enrollment-tokens")
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "group": group, "ttl_seconds": 600 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["group"], group);
        body["token"].as_str().unwrap().to_string()
    }

    /// Enrolls a runtime into `group`; returns (runtime id, client secret).
    pub async fn enroll(&self, group: &str, name: &str) -> (String, String) {
        let token = self.enrollment_token(group).await;
        let response = self
            .post("/v1/enroll")
            .json(&json!({ "token": token, "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["group"], group);
        (
            body["runtime_id"].as_str().unwrap().to_string(),
            body["client_secret"].as_str().unwrap().to_string(),
        )
    }

    /// The token endpoint's raw answer.
    pub async fn token_response(&self, id: &str, secret: &str) -> reqwest::Response {
        self.token_response_via(&self.http, id, secret).await
    }

    /// The token endpoint's raw answer to a request sent with `client`
    /// (which may present a client certificate).
    pub async fn token_response_via(
        &self,
        client: &Client,
        id: &str,
        secret: &str,
    ) -> reqwest::Response {
        client
            .post(format!("{}/api/auth/token", self.url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap()
    }

    /// A fresh access token.
    pub async fn access_token(&self, id: &str, secret: &str) -> String {
        self.access_token_via(&self.http, id, secret).await
    }

    /// A fresh access token, requested with `client`.
    pub async fn access_token_via(&self, client: &Client, id: &str, secret: &str) -> String {
        let response = self.token_response_via(client, id, secret).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Enrolls a runtime and gets it an access token: (id, access token).
    pub async fn runtime(&self, group: &str) -> (String, String) {
        let (id, secret) = self.enroll(group, "web-1").await;
        let token = self.access_token(&id, &secret).await;
        (id, token)
    }

    /// `GET` an admin endpoint, expecting 200; returns the JSON body.
    pub async fn admin_get(&self, path: &str) -> Value {
        let response = self
            .get(path)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }
}

/// The `errors.message` of an error answer, checking its shape.
pub async fn error_message(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["errors"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an api.Error body: {body}"))
        .to_string()
}

/// An `EvidenceCreateRequest` for `plugin`/`check` about the runtime `id`
/// (its subject), as the runtime sends it.
pub fn evidence_of(id: &str, plugin: &str, check: &str, state: &str) -> Value {
    let mut evidence = evidence(plugin, check, state);
    evidence["subjects"] =
        json!([{ "type": "InventoryItem", "identifier": id, "description": "web-1" }]);
    evidence
}

/// The `errors.message` of an error answer, checking its status and shape.
pub async fn expect_error(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    error_message(response).await
}

/// Every stored record, following the listing's pages.
pub async fn all_evidence(server: &Server, query: &str) -> Vec<Value> {
    let mut records = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/admin/evidence?limit=1000{query}");
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let page = server.admin_get(&path).await;
        records.extend(page["evidence"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return records,
        }
    }
}

/// An `EvidenceCreateRequest` for `plugin`/`check`.
pub fn evidence(plugin: &str, check: &str, state: &str) -> Value {
    json!({
        "uuid": uuid::Uuid::new_v4().to_string(),
        "title": format!("{check} title"),
        "description": "checked",
        "start": "2027-01-15T08:00:00Z",
        "end": "2027-01-15T08:00:01Z",
        "labels": { "plugin": plugin, "check": check, "host": "web-1" },
        "status": { "state": state, "reason": "pass" },
        "subjects": [],
        "origins": [],
        "props": []
    })
}

/// A client that trusts only the CA `ca_pem` and presents `identity`
/// (certificate PEM, key PEM) if given.
pub fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> Client {
    let mut builder = Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    if let Some((certificate, key)) = identity {
        builder = builder.identity(
            reqwest::Identity::from_pem(format!("{key}\n{certificate}").as_bytes()).unwrap(),
        );
    }
    builder.build().unwrap()
}

/// A new key (PEM) and a certificate signing request for it (PEM).
pub fn key_and_csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key.serialize_pem(), csr)
}
