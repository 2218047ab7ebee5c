//! Every admin endpoint refuses a missing or wrong admin token.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{ADMIN_TOKEN, Server, error_message};

#[tokio::test]
async fn admin_endpoints_refuse_missing_and_wrong_tokens() {
    let server = Server::start().await;
    let (runtime_id, runtime_token) = server.runtime("default").await;
    let endpoints = [
        (Method::POST, "/v1/admin/enrollment-tokens".to_string()),
        (Method::GET, "/v1/admin/runtimes".to_string()),
        (
            Method::POST,
            format!("/v1/admin/runtimes/{runtime_id}/revoke"),
        ),
        (Method::PUT, "/v1/admin/config/default".to_string()),
        (
            Method::PUT,
            format!("/v1/admin/runtimes/{runtime_id}/config"),
        ),
        (
            Method::DELETE,
            format!("/v1/admin/runtimes/{runtime_id}/config"),
        ),
        (Method::GET, "/v1/admin/evidence".to_string()),
        (
            Method::GET,
            "/v1/admin/oscal/assessment-results".to_string(),
        ),
    ];
    let wrong_tokens = [
        None,
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        // A runtime's access token is not an admin token.
        Some(format!("Bearer {runtime_token}")),
    ];
    for (method, path) in &endpoints {
        for authorization in &wrong_tokens {
            let mut request = server
                .http
                .request(method.clone(), format!("{}{path}", server.url))
                .json(&json!({ "a": 1 }));
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {authorization:?}"
            );
            let _ = error_message(response).await;
        }
    }
    // Nothing happened: no token, no revocation, no configuration.
    let runtimes = server.admin_get("/v1/admin/runtimes").await;
    assert_eq!(runtimes[0]["revoked"], false);
    let config = server
        .get("/v1/config")
        .bearer_auth(&runtime_token)
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_answer_in_the_error_shape() {
    let server = Server::start().await;
    let response = server.get("/v1/nothing").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let _ = error_message(response).await;
    let response = server.get("/v1/enroll").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let _ = error_message(response).await;
    let health = server.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.stop().await;
}
