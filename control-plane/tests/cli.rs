//! The binary: refusals at start, the admin commands on the database file,
//! and `serve` end to end with a graceful SIGTERM shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_assessment-control-plane");
const ADMIN_TOKEN: &str = "cli-admin-token-0123456789";

fn command(database: Option<&Path>) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("ACP_ADMIN_TOKEN")
        .env_remove("ACP_DATABASE")
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    if let Some(database) = database {
        command.arg("--database").arg(database);
    }
    command
}

async fn run(database: Option<&Path>, args: &[&str]) -> (bool, String, String) {
    let output = command(database).args(args).output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStderr>>;

/// `serve` on an ephemeral port with `args`; returns the child, its log and
/// the address it listens on.
async fn spawn_server(database: &Path, args: &[&str]) -> (tokio::process::Child, Lines, String) {
    let mut server = command(Some(database))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("ACP_ADMIN_TOKEN", ADMIN_TOKEN)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let address = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("control plane listening") {
                let start = line.find("address=").unwrap() + "address=".len();
                return line[start..].split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .unwrap();
    (server, lines, address)
}

#[tokio::test]
async fn serve_uses_mutual_tls_with_a_ca_beside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let (mut server, _lines, address) = spawn_server(&db, &[]).await;
    let ca_dir = dir.path().join("ca");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca_dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // `ca certificate` prints the CA the server uses (and does not make another).
    let (ok, pem, stderr) = run(Some(&db), &["ca", "certificate"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(pem, std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap());
    assert!(stderr.contains("SHA-256"), "{stderr}");

    let port = address.rsplit(':').next().unwrap();
    let trusting = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let health = trusting
            .get(format!("https://{host}:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "the certificate names {host}");
    }
    // Plain HTTP gets no answer from a TLS port, and a client that does not
    // trust the CA refuses the server.
    assert!(
        reqwest::get(format!("http://{address}/healthz"))
            .await
            .and_then(|r| r.error_for_status())
            .is_err()
    );
    let error = reqwest::Client::builder()
        .use_rustls_tls()
        .build()
        .unwrap()
        .get(format!("https://{address}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
    server.kill().await.unwrap();
}

async fn run_ok(database: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = run(Some(database), args).await;
    assert!(ok, "{args:?} failed: {stderr}");
    stdout
}

#[tokio::test]
async fn serve_refuses_to_start_without_admin_token_or_with_bad_tls_settings() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");

    for args in [&["serve"][..], &["serve", "--dev-plain-http"]] {
        let (ok, _, stderr) = run(Some(&db), args).await;
        assert!(!ok);
        assert!(stderr.contains("ACP_ADMIN_TOKEN"), "{stderr}");
    }
    let (ok, _, stderr) = run(
        Some(&db),
        &["serve", "--admin-token", ADMIN_TOKEN, "--tls-name", ""],
    )
    .await;
    assert!(!ok && stderr.contains("--tls-name"), "{stderr}");
    let (ok, _, stderr) = run(
        Some(&db),
        &[
            "serve",
            "--admin-token",
            ADMIN_TOKEN,
            "--client-cert-validity",
            "30s",
        ],
    )
    .await;
    assert!(!ok && stderr.contains("--client-cert-validity"), "{stderr}");
    assert!(!dir.path().join("ca").exists());

    let (ok, _, stderr) = run(
        Some(&db),
        &["serve", "--dev-plain-http", "--admin-token", "short"],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("at least 16 characters"), "{stderr}");

    let (ok, _, stderr) = run(None, &["runtimes", "list"]).await;
    assert!(!ok);
    assert!(stderr.contains("--database"), "{stderr}");
    assert!(!db.exists(), "nothing was created by refused commands");
}

/// The admin commands reach PostgreSQL on another host over TLS: the
/// user is let in only with TLS, the server's certificate is verified
/// against `sslrootcert`, and the password is never printed.
#[tokio::test]
async fn admin_commands_use_verified_tls_to_postgres() {
    use test_postgres::{TLS_ONLY_USER, TestDatabase, cluster};
    let database = TestDatabase::create();
    let user = format!("{TLS_ONLY_USER}:s3cret");
    let run_on = |query: String| {
        let url = database.tcp_url(&user, &query);
        async move {
            let output = command(None)
                .arg("--database")
                .arg(url)
                .args(["enrollment-token", "create", "--group", "prod"])
                .output()
                .await
                .unwrap();
            let stderr = String::from_utf8(output.stderr).unwrap();
            assert!(!stderr.contains("s3cret"), "{stderr}");
            (output.status.success(), stderr)
        }
    };
    let ca = cluster().ca_certificate.display().to_string();
    let (ok, stderr) = run_on(format!("sslmode=verify-full&sslrootcert={ca}")).await;
    assert!(ok, "{stderr}");
    let (ok, stderr) = run_on("sslmode=disable".to_string()).await;
    assert!(!ok && stderr.contains("pg_hba.conf rejects"), "{stderr}");
    let (ok, stderr) = run_on("sslmode=require".to_string()).await;
    assert!(!ok && stderr.contains("UnknownIssuer"), "{stderr}");
    let missing = format!("{ca}.missing");
    let (ok, stderr) = run_on(format!("sslmode=require&sslrootcert={missing}")).await;
    assert!(
        !ok && stderr.contains(&format!("sslrootcert={missing}")),
        "{stderr}"
    );
    // Refused while reading the arguments, without quoting the URL.
    let (ok, stderr) = run_on("sslmode=bogus".to_string()).await;
    assert!(!ok && stderr.contains("sslmode=\"bogus\""), "{stderr}");
}

#[tokio::test]
async fn admin_commands_and_serve_share_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");

    // Admin commands before the server runs.
    let token = run_ok(
        &db,
        &[
            "enrollment-token",
            "create",
            "--group",
            "prod",
            "--ttl",
            "10m",
        ],
    )
    .await;
    let token = token.trim().to_string();
    assert_eq!(token.len(), 64, "only the token on stdout: {token:?}");
    let config_file = dir.path().join("prod.json");
    std::fs::write(
        &config_file,
        r#"{"runtime": {"heartbeat_interval": "1h"}, "plugin": []}"#,
    )
    .unwrap();
    let set: Value = serde_json::from_str(
        &run_ok(
            &db,
            &[
                "config",
                "set",
                "--group",
                "prod",
                config_file.to_str().unwrap(),
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(set["version"], 1);
    let not_object = dir.path().join("list.json");
    std::fs::write(&not_object, "[1]").unwrap();
    let (ok, _, stderr) = run(
        Some(&db),
        &[
            "config",
            "set",
            "--group",
            "prod",
            not_object.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok && stderr.contains("JSON object"), "{stderr}");
    // Nor a document of another shape: the field is named.
    let misspelt = dir.path().join("misspelt.json");
    std::fs::write(&misspelt, r#"{"plugins": []}"#).unwrap();
    let (ok, _, stderr) = run(
        Some(&db),
        &[
            "config",
            "set",
            "--group",
            "prod",
            misspelt.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        !ok && stderr.contains("plugins: unknown field `plugins`"),
        "{stderr}"
    );

    // The server, on an ephemeral port, with the admin token from the environment.
    let (mut server, mut lines, address) = spawn_server(&db, &["--dev-plain-http"]).await;
    let url = format!("http://{address}");
    let http = reqwest::Client::new();

    // A runtime enrolls with the token the CLI created and gets the CLI's config.
    let enrolled: Value = http
        .post(format!("{url}/v1/enroll"))
        .json(&json!({ "token": token, "name": "web-1" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(enrolled["group"], "prod");
    let id = enrolled["runtime_id"].as_str().unwrap().to_string();
    let secret = enrolled["client_secret"].as_str().unwrap();
    let issued: Value = http
        .post(format!("{url}/api/auth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(issued["expires_in"], 900, "default --token-ttl 15m");
    let access = issued["access_token"].as_str().unwrap().to_string();
    let config = http
        .get(format!("{url}/v1/config"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 200);
    assert_eq!(config.headers()["etag"], set["etag"].as_str().unwrap());
    let batch = json!({ "records": [{ "idempotency_key": "k1", "evidence": {
        "uuid": uuid::Uuid::new_v4().to_string(), "labels": { "plugin": "sshd", "check": "c1" } } }] });
    let stored = http
        .post(format!("{url}/v1/evidence/batch"))
        .bearer_auth(&access)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);

    // The admin commands see the server's writes while it runs...
    let runtimes: Value = serde_json::from_str(&run_ok(&db, &["runtimes", "list"]).await).unwrap();
    assert_eq!(runtimes[0]["id"], id.as_str());
    assert_eq!(runtimes[0]["stale"], true);
    let evidence: Value =
        serde_json::from_str(&run_ok(&db, &["evidence", "list", "--plugin", "sshd"]).await)
            .unwrap();
    assert_eq!(evidence.as_array().unwrap().len(), 1);
    let none: Value = serde_json::from_str(
        &run_ok(
            &db,
            &[
                "evidence",
                "list",
                "--runtime",
                &uuid::Uuid::new_v4().to_string(),
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(none, json!([]));
    let latest: Value =
        serde_json::from_str(&run_ok(&db, &["evidence", "latest", "--plugin", "sshd"]).await)
            .unwrap();
    assert_eq!(latest[0]["check"], "c1");
    assert_eq!(latest[0]["runtime_id"], id.as_str());

    // ...and the server sees theirs: a revocation from the CLI takes effect.
    run_ok(&db, &["runtimes", "revoke", &id]).await;
    let refused = http
        .get(format!("{url}/v1/config"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let (ok, _, stderr) = run(
        Some(&db),
        &["runtimes", "revoke", &uuid::Uuid::new_v4().to_string()],
    )
    .await;
    assert!(!ok && stderr.contains("no runtime"), "{stderr}");

    // SIGTERM: a graceful stop with exit status 0.
    drop(http);
    let pid = server.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(rest.contains("SIGTERM received"), "{rest}");
    assert!(rest.contains("control plane stopped"), "{rest}");
}

#[tokio::test]
async fn failed_authentications_are_logged_with_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let (mut server, mut lines, address) = spawn_server(&db, &["--dev-plain-http"]).await;
    let http = reqwest::Client::new();
    let refused = http
        .get(format!("http://{address}/v1/admin/runtimes"))
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused = http
        .post(format!("http://{address}/api/auth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &uuid::Uuid::new_v4().to_string()),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let logged = tokio::time::timeout(Duration::from_secs(10), async {
        let mut logged = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("authentication failed") {
                logged.push(line);
                if logged.len() == 2 {
                    return logged;
                }
            }
        }
        panic!("the server exited");
    })
    .await
    .expect("two failed authentications are logged");
    assert!(logged[0].contains("source=127.0.0.1:"), "{logged:?}");
    assert!(logged[0].contains("admin"), "{logged:?}");
    assert!(logged[1].contains("client credentials"), "{logged:?}");
    assert!(
        !logged.iter().any(|l| l.contains("not-the-admin-token")),
        "the presented token is not logged"
    );
    server.kill().await.unwrap();
}

#[tokio::test]
async fn the_database_and_the_ca_key_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let (ok, _, stderr) = run(Some(&db), &["runtimes", "list"]).await;
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run(Some(&db), &["ca", "certificate"]).await;
    assert!(ok, "{stderr}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&dir.path().join("ca").join("ca.key")), 0o600);
}

#[tokio::test]
async fn serve_logs_json_lines_and_serves_metrics_on_its_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let mut server = command(Some(&db))
        .env_remove("RUST_LOG")
        .args([
            "--log-format",
            "json",
            "--log-level",
            "info",
            "serve",
            "--dev-plain-http",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env("ACP_ADMIN_TOKEN", ADMIN_TOKEN)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    // One JSON object per line, the message and fields as top-level keys.
    let (api, metrics) = tokio::time::timeout(Duration::from_secs(10), async {
        let mut metrics = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            let event: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let message = event["message"].as_str().unwrap();
            let address = event["address"].as_str().map(str::to_string);
            if message.starts_with("metrics listening") {
                metrics = address;
            } else if message.starts_with("control plane listening") {
                return (
                    address.unwrap(),
                    metrics.expect("the metrics listener is logged first"),
                );
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .unwrap();
    assert_ne!(api, metrics);
    for path in ["/healthz", "/readyz"] {
        let response = reqwest::get(format!("http://{metrics}{path}"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("assessment_control_plane_runtimes 0\n"),
        "{text}"
    );
    let response = reqwest::get(format!("http://{api}/metrics")).await.unwrap();
    assert_eq!(response.status(), 404, "not on the API listener");
    server.kill().await.unwrap();

    // A log level that does not parse is refused before anything starts.
    let (ok, _, stderr) = run(Some(&db), &["--log-level", "info,=[", "runtimes", "list"]).await;
    assert!(!ok && stderr.contains("--log-level"), "{stderr}");
}
