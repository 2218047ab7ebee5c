//! Enrollment, the client-credentials token endpoint and revocation.

use std::time::Duration;

use assessment_control_plane::Db;
use chrono::{TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Options, Server, error_message};

#[tokio::test]
async fn enrollment_tokens_are_single_use() {
    let server = Server::start().await;
    let response = server
        .post("/v1/admin/enrollment-tokens")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["group"], "default", "the default group");
    let token = created["token"].as_str().unwrap();
    assert!(token.len() >= 43, "32 random bytes");
    let expires =
        chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    let ttl = expires.with_timezone(&Utc) - Utc::now();
    assert!(
        ttl > TimeDelta::minutes(59) && ttl <= TimeDelta::minutes(60),
        "default 1 h"
    );

    let enroll = |name: &'static str| {
        server
            .post("/v1/enroll")
            .json(&json!({ "token": token, "name": name }))
            .send()
    };
    let first = enroll("web-1").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert!(uuid::Uuid::parse_str(first["runtime_id"].as_str().unwrap()).is_ok());
    assert_eq!(first["group"], "default");
    assert!(first["client_secret"].as_str().unwrap().len() >= 43);

    let second = enroll("web-2").await.unwrap();
    assert_eq!(second.status(), StatusCode::UNAUTHORIZED);
    assert!(error_message(second).await.contains("already used"));

    let unknown = server
        .post("/v1/enroll")
        .json(&json!({ "token": "0".repeat(64), "name": "web-3" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let runtimes = server.admin_get("/v1/admin/runtimes").await;
    assert_eq!(runtimes.as_array().unwrap().len(), 1);
    assert_eq!(runtimes[0]["name"], "web-1");
    server.stop().await;
}

#[tokio::test]
async fn expired_enrollment_tokens_are_refused() {
    let server = Server::start().await;
    // A token that expired a minute ago, written by the admin commands' code
    // path straight into the server's database file.
    let expired = {
        let mut db = Db::open(&server.database).unwrap();
        db.create_enrollment_token(
            "default",
            Duration::from_secs(60),
            Utc::now() - TimeDelta::minutes(2),
        )
        .unwrap()
    };
    let response = server
        .post("/v1/enroll")
        .json(&json!({ "token": expired.token, "name": "late" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(error_message(response).await.contains("expired"));
    server.stop().await;
}

#[tokio::test]
async fn enrollment_requests_are_validated() {
    let server = Server::start().await;
    for (body, status) in [
        (json!({ "group": "no spaces" }), StatusCode::BAD_REQUEST),
        (json!({ "ttl_seconds": 0 }), StatusCode::BAD_REQUEST),
        (json!({ "colour": "red" }), StatusCode::BAD_REQUEST),
        (
            json!({ "group": "prod", "ttl_seconds": 60 }),
            StatusCode::CREATED,
        ),
    ] {
        let response = server
            .post("/v1/admin/enrollment-tokens")
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
    }
    let token = server.enrollment_token("g").await;
    let response = server
        .post("/v1/enroll")
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "name is required"
    );
    let _ = error_message(response).await;
    server.stop().await;
}

#[tokio::test]
async fn client_credentials_issue_tokens_and_wrong_secrets_are_refused() {
    let server = Server::start_with(Options {
        token_ttl: Duration::from_secs(120),
        ..Options::default()
    })
    .await;
    let (id, secret) = server.enroll("default", "web-1").await;

    let response = server.token_response(&id, &secret).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 120, "--token-ttl");
    let token = body["access_token"].as_str().unwrap();
    let config = server
        .get("/v1/config")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        config.status(),
        StatusCode::NOT_FOUND,
        "authenticated; no config yet"
    );

    let wrong = server.token_response(&id, &"0".repeat(64)).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let _ = error_message(wrong).await;
    let unknown = server
        .token_response(&uuid::Uuid::new_v4().to_string(), &secret)
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let password = server
        .post("/api/auth/token")
        .form(&[
            ("username", "admin"),
            ("password", "x"),
            ("grant_type", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(password.status(), StatusCode::BAD_REQUEST);
    assert!(
        error_message(password)
            .await
            .contains("unsupported grant_type")
    );

    let json_body = server
        .post("/api/auth/token")
        .json(&json!({ "grant_type": "client_credentials" }))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    for bad in ["", "Bearer nope", "Basic abc"] {
        let response = server
            .get("/v1/config")
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    server.stop().await;
}

#[tokio::test]
async fn access_tokens_expire() {
    let server = Server::start_with(Options {
        token_ttl: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let (_, token) = server.runtime("default").await;
    let before = server
        .get("/v1/config")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = server
        .get("/v1/config")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn revoked_runtimes_lose_their_tokens_and_get_no_new_ones() {
    let server = Server::start().await;
    let (id, secret) = server.enroll("default", "web-1").await;
    let token = server.access_token(&id, &secret).await;
    let (other_id, other_token) = server.runtime("default").await;

    let revoke = server
        .post(&format!("/v1/admin/runtimes/{id}/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);

    let heartbeat = server
        .post("/api/agent/heartbeat")
        .bearer_auth(&token)
        .json(&json!({ "uuid": id, "created_at": Utc::now().to_rfc3339() }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        heartbeat.status(),
        StatusCode::UNAUTHORIZED,
        "existing token"
    );
    let config = server
        .get("/v1/config")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), StatusCode::UNAUTHORIZED);
    let reissue = server.token_response(&id, &secret).await;
    assert_eq!(reissue.status(), StatusCode::UNAUTHORIZED, "no new token");

    // The other runtime is unaffected.
    let heartbeat = server
        .post("/api/agent/heartbeat")
        .bearer_auth(&other_token)
        .json(&json!({ "uuid": other_id, "created_at": Utc::now().to_rfc3339() }))
        .send()
        .await
        .unwrap();
    assert_eq!(heartbeat.status(), StatusCode::CREATED);

    let runtimes = server.admin_get("/v1/admin/runtimes").await;
    let revoked: Vec<_> = runtimes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["revoked"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(revoked.contains(&(id.clone(), true)));
    assert!(revoked.contains(&(other_id, false)));

    let unknown = server
        .post(&format!(
            "/v1/admin/runtimes/{}/revoke",
            uuid::Uuid::new_v4()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}
