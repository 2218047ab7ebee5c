//! `run --output oscal` and `run --output html` of a real run of example
//! plugins: the OSCAL document is valid against NIST's published schema by
//! an independent validator (tests/src/oscal.rs), which does reject a broken
//! document; the HTML page shows the failing checks first. (The control
//! plane's export is validated in tests/tests/control_plane.rs.)

use assessment_e2e::oscal::{assert_valid, validate};
use assessment_e2e::{Agent, example_fixture, guest, runtime_bin};
use serde_json::{Value, json};

/// sshd-hardening on a weak configuration (passes and failures) and
/// file-permissions without its grant (checks that reach no verdict).
fn agent() -> Agent {
    Agent::new()
        .with_tree(&example_fixture("sshd-hardening", "bad"))
        .plugin(
            "sshd-hardening",
            &guest("sshd_hardening"),
            "grants = { read = [\"/etc/ssh\"] }",
        )
        .plugin(
            "file-permissions",
            &guest("file_permissions"),
            "grants = { read = [\"/etc/passwd\"] }",
        )
}

const RUNTIME_ID: &str = "7a1c9a52-9a0e-4c84-9f44-1f0a8f1e2b3c";

fn props<'a>(o: &'a Value, name: &str) -> Vec<&'a str> {
    o["props"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter(|p| p["name"] == name)
                .filter_map(|p| p["value"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_run_as_oscal_is_valid_against_nists_schema_and_as_html_shows_failures_first() {
    let agent = agent();
    // A runtime given its id in [control_plane] is the assessor by that id
    // (its evidence's streams); `run` reads no secret and reaches no server.
    let config = agent.write();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[control_plane]\nurl = \"https://cf.invalid\"\nruntime_id = \"{RUNTIME_ID}\"\nclient_secret_env = \"UNUSED_SECRET\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(runtime_bin())
        .args(["run", "--once", "--output", "oscal", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let doc: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_valid(&text);

    let result = &doc["assessment-results"]["results"][0];
    assert_eq!(props(result, "runtime-id"), [RUNTIME_ID]);
    let observations = result["observations"].as_array().unwrap();
    let findings = result["findings"].as_array().unwrap();
    let statuses: Vec<&str> = observations
        .iter()
        .flat_map(|o| props(o, "status"))
        .collect();
    assert!(statuses.contains(&"fail") && statuses.contains(&"pass"));
    assert!(
        statuses.contains(&"error"),
        "checks without their grant reach no verdict: {statuses:?}"
    );
    let verdicts = statuses
        .iter()
        .filter(|s| matches!(**s, "pass" | "fail"))
        .count();
    assert_eq!(findings.len(), verdicts, "a finding per verdict only");
    let root_login = findings
        .iter()
        .find(|f| f["target"]["target-id"] == "sshd-permit-root-login")
        .unwrap();
    assert_eq!(root_login["target"]["status"]["state"], "not-satisfied");
    assert!(
        root_login["remarks"]
            .as_str()
            .unwrap()
            .contains("PermitRootLogin no"),
        "the remediation"
    );
    assert!(!props(root_login, "reference").is_empty(), "the references");
    let tools = result["local-definitions"]["assessment-assets"]["components"]
        .as_array()
        .unwrap();
    assert_eq!(tools.len(), 2, "each plugin is a tool: {tools:?}");
    // Each job's provenance is one back-matter resource, which each
    // observation of the job refers to.
    let resources: Vec<&str> = doc["assessment-results"]["back-matter"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uuid"].as_str().unwrap())
        .collect();
    let provenance: std::collections::BTreeSet<&str> = observations
        .iter()
        .map(|o| {
            let href = o["relevant-evidence"][0]["href"]
                .as_str()
                .unwrap_or_else(|| panic!("no provenance: {o}"));
            let uuid = href.strip_prefix('#').unwrap();
            assert!(resources.contains(&uuid), "{href} is no resource");
            uuid
        })
        .collect();
    assert_eq!(provenance.len(), 2, "one per job");

    let html = agent.command(&["run", "--once", "--output", "html"]);
    let page = String::from_utf8(html.stdout).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    let first_fail = page.find("badge fail").unwrap();
    assert!(
        page.find("badge pass").is_none_or(|pass| first_fail < pass)
            && page
                .find("badge error")
                .is_none_or(|error| first_fail < error),
        "failing checks first"
    );
    assert!(page.contains("PermitRootLogin no"), "remediation shown");
    assert!(!page.contains("<script"));
}

/// A minimal valid document, and the validator telling it from broken ones:
/// a field the model does not have, a token that is none, a wrong type.
#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let valid = json!({ "assessment-results": {
        "uuid": "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90",
        "metadata": {
            "title": "t", "last-modified": "2026-11-25T10:00:00.000Z",
            "version": "1", "oscal-version": "1.1.3",
            // A token of letters outside ASCII: the validator reads \p{L}.
            "props": [{ "name": "ñandú", "value": "v" }]
        },
        "import-ap": { "href": "#6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a91" },
        "results": [{
            "uuid": "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a92", "title": "r", "description": "d",
            "start": "2026-11-25T10:00:00Z",
            "reviewed-controls": { "control-selections": [{ "include-all": {} }] }
        }]
    }});
    let Some(outcome) = validate(&valid.to_string()) else {
        return;
    };
    assert_eq!(outcome, Ok(()));
    let broken = |path: &[&str], value: Value| {
        let mut doc = valid.clone();
        let mut at = &mut doc["assessment-results"];
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        at[*path.last().unwrap()] = value;
        validate(&doc.to_string()).unwrap()
    };
    for (path, value) in [
        (&["metadata", "colour"][..], json!("red")),
        (
            &["metadata", "props"][..],
            json!([{ "name": "9 lives", "value": "v" }]),
        ),
        (
            &["metadata", "props"][..],
            json!([{ "name": "n", "value": " padded" }]),
        ),
        (&["uuid"][..], json!("6f6b1e3c-4a0f-1d8e-9b1a-5c2e7d3f8a90")),
        (&["results"][..], json!([])),
        (&["metadata", "last-modified"][..], json!("yesterday")),
    ] {
        let outcome = broken(path, value.clone());
        assert!(outcome.is_err(), "{path:?} = {value} passed");
    }
}

/// Text of any shape (plugin-chosen, or from another agent's evidence in
/// the control plane) still makes a valid document: the mapping makes it
/// fit where OSCAL constrains it.
#[test]
fn hostile_text_and_foreign_evidence_still_make_a_valid_document() {
    use capability_model::wire::evidence::{
        EvidenceCreateRequest, EvidenceRecord, Link, ObjectiveStatus, Origin, OriginActor, Property,
    };
    use capability_model::wire::oscal::{DocumentInput, ResultInput, assessment_results};
    let hostile = " \u{feff}<a>\n\r\u{2028}\"é 9 lives\t";
    let prop = |name: &str, value: &str| Property {
        name: name.to_string(),
        value: value.to_string(),
        ns: None,
    };
    let record = EvidenceRecord {
        idempotency_key: hostile.to_string(),
        evidence: EvidenceCreateRequest {
            uuid: "not a uuid".to_string(),
            title: hostile.to_string(),
            description: String::new(),
            start: "yesterday".to_string(),
            end: "2026-13-45T99:00:00Z".to_string(),
            labels: [("check", hostile), ("severity", ""), ("status", hostile)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            status: ObjectiveStatus {
                state: "not-satisfied".to_string(),
                reason: hostile.to_string(),
                remarks: Some(hostile.to_string()),
            },
            subjects: Vec::new(),
            origins: vec![Origin {
                actors: vec![OriginActor {
                    kind: "robot".to_string(),
                    actor_uuid: "00000000-0000-0000-0000-000000000000".to_string(),
                    props: vec![prop(hostile, ""), prop("", hostile)],
                }],
            }],
            props: vec![prop(hostile, hostile), prop("9", "\n")],
            links: vec![
                Link {
                    href: "#no-such-resource".to_string(),
                    rel: Some(hostile.to_string()),
                    text: Some(hostile.to_string()),
                },
                Link {
                    href: format!("https://example.org/{hostile}%zz"),
                    rel: None,
                    text: None,
                },
            ],
            remarks: Some(hostile.to_string()),
            back_matter: None,
        },
    };
    let document = assessment_results(&DocumentInput {
        title: hostile.to_string(),
        last_modified: "2026-11-25T10:00:00Z",
        tool_version: hostile,
        results: vec![ResultInput {
            runtime_id: hostile,
            host: hostile,
            start: "2026-11-25T10:00:00Z",
            end: "2026-11-25T10:00:01Z",
            records: std::slice::from_ref(&record),
            remarks: Some(hostile.to_string()),
        }],
    });
    let text = serde_json::to_string(&document.to_json()).unwrap();
    assert_valid(&text);
}
