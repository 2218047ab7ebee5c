//! The OSCAL export: the latest record of each stream, one result per
//! runtime, the records' back-matter resources carried through, bounded.
//! (Its validation against NIST's schema is in the end-to-end tests, on a
//! real runtime's evidence: tests/tests/control_plane.rs.)

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Server, evidence_of};

const PROVENANCE: &str = "3e0c1b1a-5f2d-5b7e-9a43-6d1c2b8e4f70";

fn record(key: &str, evidence: Value) -> Value {
    json!({ "idempotency_key": key, "evidence": evidence })
}

#[tokio::test]
async fn the_export_holds_the_latest_record_of_each_stream_per_runtime_with_its_resources() {
    let server = Server::start().await;
    let (a, a_token) = server.runtime("default").await;
    let (b, b_token) = server.runtime("default").await;
    let mut first = evidence_of(&a, "sshd", "permit-root", "satisfied");
    let mut latest = first.clone();
    latest["status"] = json!({ "state": "not-satisfied", "reason": "fail" });
    latest["end"] = json!("2027-01-15T09:00:01Z");
    latest["links"] = json!([{ "href": format!("#{PROVENANCE}"), "rel": "provenance" }]);
    latest["back-matter"] = json!({ "resources": [{
        "uuid": PROVENANCE,
        "title": "Provenance of job j-2",
        "base64": { "filename": "provenance.json", "media-type": "application/json", "value": "e30=" }
    }] });
    first["title"] = json!("the earlier record");
    let other = evidence_of(&b, "sshd", "permit-root", "satisfied");
    for (token, records) in [
        (&a_token, vec![record("k1", first), record("k2", latest)]),
        (&b_token, vec![record("k3", other)]),
    ] {
        let response = server
            .post_json("/v1/evidence/batch", token, &json!({ "records": records }))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    let fleet = server.admin_get("/v1/admin/oscal/assessment-results").await;
    let ar = &fleet["assessment-results"];
    assert_eq!(ar["metadata"]["oscal-version"], "1.1.3");
    assert_eq!(ar["metadata"]["parties"].as_array().unwrap().len(), 2);
    let results = ar["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "one result per runtime");
    let of = |id: &str| -> &Value {
        results
            .iter()
            .find(|r| r["props"][0]["value"] == id)
            .unwrap_or_else(|| panic!("no result of {id}: {fleet}"))
    };
    let mine = of(&a);
    let observations = mine["observations"].as_array().unwrap();
    assert_eq!(
        observations.len(),
        1,
        "the latest record of the stream only"
    );
    assert_eq!(observations[0]["title"], "permit-root title");
    assert_eq!(
        mine["findings"][0]["target"]["status"]["state"],
        "not-satisfied"
    );
    assert_eq!(mine["findings"][0]["target"]["target-id"], "permit-root");
    assert_eq!(mine["end"], "2027-01-15T09:00:01Z");
    assert_eq!(
        observations[0]["relevant-evidence"][0]["href"],
        format!("#{PROVENANCE}")
    );
    let resources = ar["back-matter"]["resources"].as_array().unwrap();
    let provenance: Vec<_> = resources
        .iter()
        .filter(|r| r["uuid"] == PROVENANCE)
        .collect();
    assert_eq!(provenance.len(), 1);
    assert_eq!(provenance[0]["base64"]["value"], "e30=");
    assert_eq!(
        of(&b)["findings"][0]["target"]["status"]["state"],
        "satisfied"
    );

    let one = server
        .admin_get(&format!("/v1/admin/oscal/assessment-results?runtime={b}"))
        .await;
    let results = one["assessment-results"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["props"][0]["value"], b.as_str());

    let unknown = server
        .get("/v1/admin/oscal/assessment-results?colour=red")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let anonymous = server
        .get("/v1/admin/oscal/assessment-results")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn an_export_past_its_bound_is_refused_with_413() {
    use assessment_control_plane::oscal_export::MAX_EXPORT_RECORDS;
    let server = Server::start().await;
    let (id, token) = server.runtime("default").await;
    let mut sent = 0;
    while sent <= MAX_EXPORT_RECORDS {
        let records: Vec<Value> = (sent..(sent + 1000).min(MAX_EXPORT_RECORDS + 1))
            .map(|i| {
                record(
                    &format!("k{i}"),
                    json!({ "uuid": uuid::Uuid::new_v4().to_string() }),
                )
            })
            .collect();
        sent += records.len();
        let response = server
            .post_json("/v1/evidence/batch", &token, &json!({ "records": records }))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    for path in [
        "/v1/admin/oscal/assessment-results".to_string(),
        format!("/v1/admin/oscal/assessment-results?runtime={id}"),
    ] {
        let response = server
            .get(&path)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let message = crate::harness::expect_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
        assert!(message.contains("one runtime at a time"), "{message}");
    }
    server.stop().await;
}
