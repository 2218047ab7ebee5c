//! Group configuration: assignment, versions, ETags and 304.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Server, error_message};

async fn put_config(server: &Server, group: &str, body: &Value) -> reqwest::Response {
    server
        .put(&format!("/v1/admin/config/{group}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn config_etag_304_and_version_bump() {
    let server = Server::start().await;
    let (_, token) = server.runtime("prod").await;
    let (_, other_group_token) = server.runtime("staging").await;

    let missing = server
        .get("/v1/config")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(error_message(missing).await.contains("prod"));

    let document = json!({
        "plugin": [{ "name": "sshd-hardening", "version": "0.1.0", "source": { "github": "acme/plugins" } }],
        "runtime": { "config_poll_interval": "1h" }
    });
    let v1 = put_config(&server, "prod", &document).await;
    assert_eq!(v1.status(), StatusCode::OK);
    let v1: Value = v1.json().await.unwrap();
    assert_eq!(v1["group"], "prod");
    assert_eq!(v1["version"], 1);
    let etag1 = v1["etag"].as_str().unwrap().to_string();
    assert!(
        etag1.starts_with('"') && etag1.ends_with('"') && etag1.len() == 66,
        "{etag1}"
    );

    let fetched = server
        .get("/v1/config")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.headers()["etag"], etag1.as_str());
    assert_eq!(fetched.headers()["x-config-version"], "1");
    assert_eq!(fetched.json::<Value>().await.unwrap(), document);

    let unchanged = server
        .get("/v1/config")
        .bearer_auth(&token)
        .header("if-none-match", &etag1)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.headers()["etag"], etag1.as_str());
    assert!(unchanged.bytes().await.unwrap().is_empty());

    let stale_etag = server
        .get("/v1/config")
        .bearer_auth(&token)
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale_etag.status(), StatusCode::OK);

    // A new document: version 2, a new ETag, and the old ETag no longer 304s.
    let changed = json!({ "plugin": [], "runtime": { "config_poll_interval": "5m" } });
    let v2: Value = put_config(&server, "prod", &changed)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v2["version"], 2);
    assert_ne!(v2["etag"], v1["etag"]);
    let refreshed = server
        .get("/v1/config")
        .bearer_auth(&token)
        .header("if-none-match", &etag1)
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(refreshed.headers()["etag"], v2["etag"].as_str().unwrap());
    assert_eq!(refreshed.headers()["x-config-version"], "2");
    assert_eq!(refreshed.json::<Value>().await.unwrap(), changed);

    // The same content again: version 3, same ETag as version 2 (content-derived).
    let v3: Value = put_config(&server, "prod", &changed)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["etag"], v2["etag"]);

    // Other groups do not see it.
    let other = server
        .get("/v1/config")
        .bearer_auth(&other_group_token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn config_must_be_a_json_object() {
    let server = Server::start().await;
    for body in [json!([1, 2]), json!("text"), json!(null), json!(3)] {
        let response = put_config(&server, "prod", &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(error_message(response).await.contains("JSON object"));
    }
    let malformed = server
        .put("/v1/admin/config/prod")
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let _ = error_message(malformed).await;
    let bad_group = put_config(&server, "a.b c", &json!({})).await;
    assert_eq!(bad_group.status(), StatusCode::BAD_REQUEST);
    // Nothing was stored: the first valid PUT is version 1.
    let v1: Value = put_config(&server, "prod", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v1["version"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_runtime_config_replaces_its_groups_for_that_runtime_only() {
    let server = Server::start().await;
    let (id, token) = server.runtime("prod").await;
    let (_, neighbour) = server.runtime("prod").await;
    let fetch = |token: String| {
        let request = server.get("/v1/config").bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let etag = response.headers()["etag"].to_str().unwrap().to_string();
            (etag, response.json::<Value>().await.unwrap())
        }
    };
    let group = json!({ "plugin": [] });
    put_config(&server, "prod", &group).await;
    let path = format!("/v1/admin/runtimes/{id}/config");
    let own = json!({ "plugin": [{ "name": "kernel-params" }] });
    let assigned = server
        .put(&path)
        .bearer_auth(ADMIN_TOKEN)
        .json(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(assigned.status(), StatusCode::OK);
    let assigned: Value = assigned.json().await.unwrap();
    assert_eq!(assigned["runtime"], id.as_str());
    assert_eq!(assigned["group"], "prod");

    let (own_etag, document) = fetch(token.clone()).await;
    assert_eq!(document, own);
    assert_eq!(own_etag, assigned["etag"].as_str().unwrap());
    assert_eq!(fetch(neighbour.clone()).await.1, group);
    // A change of the group's document does not reach the runtime with its own.
    let changed = json!({ "plugin": [], "runtime": { "max_concurrent_jobs": 4 } });
    put_config(&server, "prod", &changed).await;
    assert_eq!(fetch(token.clone()).await.1, own);

    // Removed: the group's document applies again, under another ETag.
    let delete = || {
        server
            .http
            .delete(format!("{}{path}", server.url))
            .bearer_auth(ADMIN_TOKEN)
    };
    assert_eq!(
        delete().send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let (etag, document) = fetch(token).await;
    assert_eq!(document, changed);
    assert_ne!(etag, own_etag);
    let again = delete().send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert!(
        error_message(again)
            .await
            .contains("no configuration of its own")
    );

    let unknown = server
        .put(&format!(
            "/v1/admin/runtimes/{}/config",
            uuid::Uuid::new_v4()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let not_object = server
        .put(&path)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!([1]))
        .send()
        .await
        .unwrap();
    assert_eq!(not_object.status(), StatusCode::BAD_REQUEST);
    let anonymous = server.put(&path).json(&own).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn a_document_of_another_shape_is_refused_naming_the_field() {
    let server = Server::start().await;
    let (id, token) = server.runtime("prod").await;
    let good =
        json!({ "plugin": [{ "name": "kernel-params", "grants": { "read": ["/proc/sys"] } }] });
    assert_eq!(
        put_config(&server, "prod", &good).await.status(),
        StatusCode::OK
    );
    let runtime_path = format!("/v1/admin/runtimes/{id}/config");
    for (document, field) in [
        // A grant key no capability has.
        (
            json!({ "plugin": [{ "name": "kernel-params", "grants": { "network": true } }] }),
            "plugin[0].grants.network: unknown field `network`",
        ),
        // A misspelt plugin key, and a key the document does not have.
        (
            json!({ "plugin": [{ "name": "kernel-params", "pathh": "/x" }] }),
            "plugin[0].pathh: unknown field `pathh`",
        ),
        (json!({ "plugins": [] }), "plugins: unknown field `plugins`"),
        // A value of another type.
        (
            json!({ "plugin": [{ "name": "kernel-params", "grants": { "read": "/etc" } }] }),
            "plugin[0].grants.read: invalid type",
        ),
    ] {
        for path in ["/v1/admin/config/prod", runtime_path.as_str()] {
            let response = server
                .put(path)
                .bearer_auth(ADMIN_TOKEN)
                .json(&document)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{path} {document}"
            );
            let message = error_message(response).await;
            assert!(message.contains(field), "{path}: {message}");
        }
    }
    // The document in force is still the good one, version 1, for the group
    // and the runtime alike.
    let served = server
        .get("/v1/config")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(served.headers()["x-config-version"], "1");
    assert_eq!(served.json::<Value>().await.unwrap(), good);
    server.stop().await;
}
