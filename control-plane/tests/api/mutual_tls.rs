//! Serving mutual TLS: enrollment issues a client certificate from the CSR,
//! every runtime request must come over the connection of that certificate,
//! certificates of another CA fail the handshake, and rotation replaces the
//! certificate with the secret.

use assessment_control_plane::ca::CertificateAuthority;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Server, error_message, key_and_csr, tls_client};

/// An enrolled runtime and a client with its certificate.
struct TlsRuntime {
    id: String,
    secret: String,
    certificate: String,
    key: String,
    client: Client,
}

async fn enroll(server: &Server, group: &str) -> TlsRuntime {
    let token = server.enrollment_token(group).await;
    let (key, csr) = key_and_csr();
    let response = server
        .post("/v1/enroll")
        .json(&json!({ "token": token, "name": "web-1", "csr": csr }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["ca_certificate"].as_str(),
        server.ca_pem.as_deref(),
        "enrollment says which CA to trust"
    );
    let certificate = body["certificate"].as_str().unwrap().to_string();
    TlsRuntime {
        id: body["runtime_id"].as_str().unwrap().to_string(),
        secret: body["client_secret"].as_str().unwrap().to_string(),
        client: tls_client(
            server.ca_pem.as_deref().unwrap(),
            Some((&certificate, &key)),
        ),
        certificate,
        key,
    }
}

async fn config_status(server: &Server, client: &Client, token: &str) -> StatusCode {
    client
        .get(format!("{}/v1/config", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn enrollment_needs_a_valid_csr_and_a_refusal_spends_no_token() {
    let server = Server::start_tls().await;
    let token = server.enrollment_token("default").await;
    for body in [
        json!({ "token": token, "name": "web-1" }),
        json!({ "token": token, "name": "web-1", "csr": "not a CSR" }),
    ] {
        let response = server.post("/v1/enroll").json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(
            error_message(response)
                .await
                .contains("certificate signing request"),
            "the error says what to send"
        );
    }
    let (_, csr) = key_and_csr();
    let response = server
        .post("/v1/enroll")
        .json(&json!({ "token": token, "name": "web-1", "csr": csr }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "the token was unspent"
    );
    server.stop().await;
}

#[tokio::test]
async fn runtime_requests_need_the_certificate_issued_to_that_runtime() {
    let server = Server::start_tls().await;
    let config = server
        .put("/v1/admin/config/default")
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "plugin": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        config.status(),
        StatusCode::OK,
        "admins need no certificate"
    );
    let a = enroll(&server, "default").await;
    let b = enroll(&server, "default").await;

    // Without a client certificate, the secret alone gets nothing.
    let refused = server
        .token_response_via(&server.http, &a.id, &a.secret)
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(error_message(refused).await.contains("mutual TLS"));
    // Nor does it with another runtime's certificate.
    let refused = server.token_response_via(&b.client, &a.id, &a.secret).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let token = server.access_token_via(&a.client, &a.id, &a.secret).await;
    assert_eq!(
        config_status(&server, &a.client, &token).await,
        StatusCode::OK
    );
    // A stolen access token is useless without the certificate it is bound to.
    assert_eq!(
        config_status(&server, &server.http, &token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        config_status(&server, &b.client, &token).await,
        StatusCode::UNAUTHORIZED
    );

    // A revoked runtime is refused, certificate or not.
    let revoked = server
        .post(&format!("/v1/admin/runtimes/{}/revoke", a.id))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    assert_eq!(
        config_status(&server, &a.client, &token).await,
        StatusCode::UNAUTHORIZED
    );
    let refused = server.token_response_via(&a.client, &a.id, &a.secret).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn certificates_of_another_ca_fail_the_handshake() {
    let server = Server::start_tls().await;
    let runtime = enroll(&server, "default").await;
    let dir = tempfile::tempdir().unwrap();
    let rogue = CertificateAuthority::load_or_create(dir.path()).unwrap();
    let (key, csr) = key_and_csr();
    // The rogue CA signs a certificate naming the real runtime.
    let forged = rogue.issue_client_certificate(&runtime.id, &csr).unwrap();
    let client = tls_client(server.ca_pem.as_deref().unwrap(), Some((&forged.pem, &key)));
    let error = client
        .post(format!("{}/api/auth/token", server.url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", runtime.id.as_str()),
            ("client_secret", runtime.secret.as_str()),
        ])
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect() || error.is_request(), "{error:?}");

    // A client that trusts another CA does not talk to this server.
    let misled = tls_client(
        rogue.certificate_pem(),
        Some((&runtime.certificate, &runtime.key)),
    );
    let error = misled
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
    server.stop().await;
}

#[tokio::test]
async fn rotation_replaces_the_certificate_with_the_secret() {
    let server = Server::start_tls().await;
    let old = enroll(&server, "default").await;
    let token = server
        .access_token_via(&old.client, &old.id, &old.secret)
        .await;
    let rotate = |body: Value| {
        old.client
            .post(format!("{}/v1/credentials/rotate", server.url))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let missing = rotate(json!({})).await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let (key, csr) = key_and_csr();
    let rotated: Value = rotate(json!({ "csr": csr }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = rotated["client_secret"].as_str().unwrap();
    let certificate = rotated["certificate"].as_str().unwrap();
    let new = tls_client(server.ca_pem.as_deref().unwrap(), Some((certificate, &key)));

    // Until the new pair is used, the old pair works; the pairs do not mix.
    server
        .access_token_via(&old.client, &old.id, &old.secret)
        .await;
    for (client, secret) in [(&old.client, secret), (&new, old.secret.as_str())] {
        let mixed = server.token_response_via(client, &old.id, secret).await;
        assert_eq!(mixed.status(), StatusCode::UNAUTHORIZED);
    }
    let token = server.access_token_via(&new, &old.id, secret).await;
    assert_eq!(
        config_status(&server, &new, &token).await,
        StatusCode::NOT_FOUND
    );
    let retired = server
        .token_response_via(&old.client, &old.id, &old.secret)
        .await;
    assert_eq!(retired.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}
