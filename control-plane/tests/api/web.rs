//! The web view over HTTP: sign-in into a session cookie, CSRF on every
//! form, sign-in rate limits, security headers, escaped hostile text. (The
//! browser test, tests/web_view.rs, drives the same pages in Chromium.)

use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};
use serde_json::json;

use crate::harness::{ADMIN_TOKEN, Options, Server, evidence_of};

fn browser() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` of the `Set-Cookie` of `name`, and the whole header.
fn set_cookie(response: &Response, name: &str) -> (String, String) {
    let header = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie: {:?}", response.headers()));
    (header.split(';').next().unwrap().to_string(), header)
}

/// The value of the hidden `csrf` field of the first form on `page`.
fn csrf_field(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[start..start + 64].to_string()
}

/// Signs in; returns the session cookie (`acp_session=...`).
async fn sign_in(server: &Server, http: &Client, token: &str) -> Response {
    let form = http
        .get(format!("{}/ui/sign-in", server.url))
        .send()
        .await
        .unwrap();
    let (cookie, header) = set_cookie(&form, "acp_sign_in");
    assert!(
        header.contains("Max-Age=600"),
        "a sign-in form lasts 10 minutes: {header}"
    );
    let csrf = csrf_field(&form.text().await.unwrap());
    http.post(format!("{}/ui/sign-in", server.url))
        .header(COOKIE, cookie)
        .form(&[("token", token), ("csrf", &csrf)])
        .send()
        .await
        .unwrap()
}

async fn session(server: &Server, http: &Client) -> String {
    let response = sign_in(server, http, ADMIN_TOKEN).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    set_cookie(&response, "acp_session").0
}

async fn get_page(
    server: &Server,
    http: &Client,
    cookie: &str,
    path: &str,
) -> (StatusCode, String) {
    let response = http
        .get(format!("{}{path}", server.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_session_cookie_and_sign_out_ends_it() {
    let server = Server::start().await;
    let http = browser();
    let anonymous = http
        .get(format!("{}/ui/results", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()[LOCATION], "/ui/sign-in");

    let form = http
        .get(format!("{}/ui/sign-in", server.url))
        .send()
        .await
        .unwrap();
    let csp = form.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(form.headers()["x-frame-options"], "DENY");

    let wrong = sign_in(&server, &http, "not-the-admin-token").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("acp_session="))
    );

    let signed_in = sign_in(&server, &http, ADMIN_TOKEN).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()[LOCATION], "/ui/results");
    let (cookie, header) = set_cookie(&signed_in, "acp_session");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(header.contains(attribute), "{header}");
    }
    assert!(!header.contains("Secure"), "plain HTTP: {header}");
    assert!(!header.contains(ADMIN_TOKEN));
    let (status, page) = get_page(&server, &http, &cookie, "/ui/results").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains(ADMIN_TOKEN),
        "the token never reaches a page"
    );

    // Sign-out needs the CSRF token too, and ends the session server-side.
    let csrf = csrf_field(&page);
    let refused = http
        .post(format!("{}/ui/sign-out", server.url))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let out = http
        .post(format!("{}/ui/sign-out", server.url))
        .header(COOKIE, &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let (status, _) = get_page(&server, &http, &cookie, "/ui/results").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the old cookie is dead");
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let server = Server::start().await;
    let http = browser();
    // Sign-in without its cookie (a form posted from another site).
    let response = http
        .post(format!("{}/ui/sign-in", server.url))
        .form(&[("token", ADMIN_TOKEN), ("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("acp_session="))
    );

    let cookie = session(&server, &http).await;
    let (_, page) = get_page(&server, &http, &cookie, "/ui/fleet").await;
    let csrf = csrf_field(&page);
    let post = |fields: Vec<(&'static str, String)>| {
        http.post(format!("{}/ui/enrollment-tokens", server.url))
            .header(COOKIE, &cookie)
            .form(&fields)
            .send()
    };
    let without = post(vec![("group", "default".into()), ("ttl", "1h".into())])
        .await
        .unwrap();
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    let forged = post(vec![
        ("csrf", "0".repeat(64)),
        ("group", "default".into()),
        ("ttl", "1h".into()),
    ])
    .await
    .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        server
            .admin_get("/v1/admin/runtimes")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let created = post(vec![
        ("csrf", csrf),
        ("group", "default".into()),
        ("ttl", "1h".into()),
    ])
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let page = created.text().await.unwrap();
    let start = page.find("class=\"token mono\">").unwrap() + "class=\"token mono\">".len();
    let token = &page[start..start + 64];
    // The token it shows enrolls a runtime.
    let enrolled = server
        .http
        .post(format!("{}/v1/enroll", server.url))
        .json(&json!({"token": token, "name": "from-the-web"}))
        .send()
        .await
        .unwrap();
    assert_eq!(enrolled.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn sign_in_attempts_are_rate_limited() {
    let mut options = Options::default();
    options.limits.auth_burst = 2;
    options.limits.auth_per_minute = 1;
    let server = Server::start_with(options).await;
    let http = browser();
    for _ in 0..2 {
        let response = sign_in(&server, &http, "wrong-token-wrong-token").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = sign_in(&server, &http, ADMIN_TOKEN).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn hostile_text_is_escaped_in_every_page() {
    let server = Server::start().await;
    let (id, token) = server.runtime("default").await;
    let mut record = evidence_of(
        &id,
        "p<script>",
        "c\"><img src=x onerror=alert(1)>",
        "not-satisfied",
    );
    record["title"] = json!("<script>alert(document.cookie)</script>");
    record["description"] = json!("</td><script>alert(2)</script>");
    let stream = record["uuid"].as_str().unwrap().to_string();
    let sent = server
        .post_json(
            "/v1/evidence/batch",
            &token,
            &json!({"records": [{"idempotency_key": "k", "evidence": record}]}),
        )
        .await;
    assert_eq!(sent.status(), StatusCode::OK);
    let heartbeat = server
        .post("/api/agent/heartbeat")
        .bearer_auth(&token)
        .json(&json!({"uuid": id, "created_at": chrono::Utc::now().to_rfc3339(), "plugins": {"<script>x</script>": "ready"}}))
        .send()
        .await
        .unwrap();
    assert!(heartbeat.status().is_success());
    let http = browser();
    let cookie = session(&server, &http).await;
    for path in [
        "/ui/results".to_string(),
        "/ui/summary".into(),
        "/ui/fleet".into(),
        format!("/ui/streams/{stream}"),
    ] {
        let (status, page) = get_page(&server, &http, &cookie, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            !page.contains("<script>") && !page.contains("<img"),
            "{path}: {page}"
        );
        assert!(
            page.contains("&lt;script&gt;"),
            "{path}: the text is shown, escaped"
        );
    }
    let (status, _) = get_page(&server, &http, &cookie, "/ui/results?after=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get_page(
        &server,
        &http,
        &cookie,
        &format!("/ui/streams/{}", uuid::Uuid::new_v4()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn over_tls_the_cookie_is_secure_and_certificate_expiry_is_known() {
    let server = Server::start_tls().await;
    let form = server.get("/ui/sign-in").send().await.unwrap();
    let (_, header) = set_cookie(&form, "acp_sign_in");
    assert!(header.contains("; Secure"), "{header}");
    // The client certificate issued at enrollment has its expiry shown.
    let token = server.enrollment_token("default").await;
    let (_, csr) = crate::harness::key_and_csr();
    let enrolled: serde_json::Value = server
        .post("/v1/enroll")
        .json(&json!({ "token": token, "name": "web-1", "csr": csr }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = enrolled["runtime_id"].as_str().unwrap().to_string();
    let details = server.store.call(|db| db.fleet_details()).await.unwrap();
    let not_after = details[&id].certificate_not_after.clone().unwrap();
    let not_after = chrono::DateTime::parse_from_rfc3339(&not_after).unwrap();
    let days = (not_after.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((364..=365).contains(&days), "{not_after}");
}

/// The `href` of the link with `id` on `page` (HTML-unescaped `&amp;`).
fn link(page: &str, id: &str) -> Option<String> {
    let start = page.find(&format!("id=\"{id}\" href=\""))? + format!("id=\"{id}\" href=\"").len();
    let end = start + page[start..].find('"')?;
    Some(page[start..end].replace("&amp;", "&"))
}

#[tokio::test]
async fn result_pages_and_histories_link_to_the_next_page() {
    let server = Server::start().await;
    let (id, token) = server.runtime("default").await;
    // 51 failing streams: one page of 50 and one of 1, the filter kept.
    let records: Vec<_> = (0..51)
        .map(|i| {
            json!({"idempotency_key": format!("k{i}"),
                   "evidence": evidence_of(&id, "sshd", &format!("c{i}"), "not-satisfied")})
        })
        .collect();
    let sent = server
        .post_json("/v1/evidence/batch", &token, &json!({ "records": records }))
        .await;
    assert_eq!(sent.status(), StatusCode::OK);
    // One stream with 21 records: 20 and 1.
    let stream = evidence_of(&id, "kernel", "ip-forward", "satisfied");
    for i in 0..21 {
        let mut record = stream.clone();
        record["description"] = json!(format!("run {i}"));
        let sent = server
            .post_json(
                "/v1/evidence/batch",
                &token,
                &json!({"records": [{"idempotency_key": format!("s{i}"), "evidence": record}]}),
            )
            .await;
        assert_eq!(sent.status(), StatusCode::OK);
    }
    let http = browser();
    let cookie = session(&server, &http).await;
    let count_rows = |page: &str| page.matches("<td><a href=\"/ui/streams/").count();
    let (_, first) = get_page(&server, &http, &cookie, "/ui/results?status=not-satisfied").await;
    assert_eq!(count_rows(&first), 50);
    let next = link(&first, "next").expect("a next page");
    assert!(next.contains("status=not-satisfied"), "{next}");
    let (status, second) = get_page(&server, &http, &cookie, &next).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count_rows(&second), 1);
    assert_eq!(link(&second, "next"), None);

    let uuid = stream["uuid"].as_str().unwrap();
    let (_, newest) = get_page(&server, &http, &cookie, &format!("/ui/streams/{uuid}")).await;
    assert_eq!(newest.matches("run ").count(), 20);
    assert!(newest.contains("run 20") && !newest.contains("run 0<"));
    let older = link(&newest, "older").expect("an older page");
    let (_, oldest) = get_page(&server, &http, &cookie, &older).await;
    assert_eq!(oldest.matches("run ").count(), 1);
    assert!(oldest.contains("run 0<"));
    assert_eq!(link(&oldest, "older"), None);
}
