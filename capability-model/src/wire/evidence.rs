//! Findings as Compliance Framework evidence (`handler.EvidenceCreateRequest`,
//! OSCAL 1.1.3 types), as the runtime sends them and the control plane
//! stores them: one [`EvidenceRecord`] per finding, delivered in an
//! [`EvidenceBatch`].
//!
//! What the runtime writes is fixed (the host's `results::evidence` builds
//! it, and its JSON is checked against the Compliance Framework's schema).
//! On reading, every field may be absent, as that schema requires none, so
//! that the control plane also takes evidence from other Compliance
//! Framework agents; a field that is present must have its type.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The namespace of the properties the runtime defines.
pub const PROPERTY_NS: &str = "https://assessment-runtime.dev/ns/evidence";

/// A property (`oscalTypes_1_1_3.Property`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Property {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Namespace of the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
}

/// `oscalTypes_1_1_3.ObjectiveStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectiveStatus {
    /// `satisfied` or `not-satisfied`.
    pub state: String,
    /// `pass` or `fail`.
    pub reason: String,
    /// The finding's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

/// `handler.EvidenceSubject`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Subject {
    /// `InventoryItem` (the assessed machine).
    #[serde(rename = "type")]
    pub kind: String,
    /// The machine's identifier: the runtime's id.
    pub identifier: String,
    /// Description (the host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `oscalTypes_1_1_3.OriginActor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OriginActor {
    /// `tool`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The plugin build's identity.
    #[serde(rename = "actor-uuid")]
    pub actor_uuid: String,
    /// Plugin name, version and digest.
    pub props: Vec<Property>,
}

/// `oscalTypes_1_1_3.Link`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Link {
    /// Where it points.
    pub href: String,
    /// `reference`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel: Option<String>,
    /// What it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `oscalTypes_1_1_3.Origin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Origin {
    /// Who produced the evidence.
    pub actors: Vec<OriginActor>,
}

/// `handler.EvidenceCreateRequest`: one finding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvidenceCreateRequest {
    /// The stream's identity: one check about one subject on one machine.
    pub uuid: String,
    /// The check's title.
    pub title: String,
    /// The finding's message.
    pub description: String,
    /// When the job started (RFC 3339).
    pub start: String,
    /// When the job ended (RFC 3339).
    pub end: String,
    /// `plugin`, `check`, `host`, `severity`, `status`, and `subject` when
    /// the finding has one.
    pub labels: BTreeMap<String, String>,
    /// Satisfied or not.
    pub status: ObjectiveStatus,
    /// The assessed machine.
    pub subjects: Vec<Subject>,
    /// The plugin that produced it.
    pub origins: Vec<Origin>,
    /// The finding's subject and references, then its evidence items in
    /// order.
    pub props: Vec<Property>,
    /// The check's references that have a URL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// The remediation, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
    /// Resources the record's `links` point to (`#<uuid>`): the job's
    /// provenance.
    #[serde(rename = "back-matter", skip_serializing_if = "Option::is_none")]
    pub back_matter: Option<BackMatter>,
}

/// `oscalTypes_1_1_3.BackMatter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackMatter {
    /// The resources.
    pub resources: Vec<Resource>,
}

/// `oscalTypes_1_1_3.Resource`: a document the record refers to, here
/// carried inline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resource {
    /// Its identity, referred to as `#<uuid>`.
    pub uuid: String,
    /// What it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// More about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A summary of its content.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    /// The document itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<Base64>,
    /// Notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

/// `oscalTypes_1_1_3.Base64`: a document inline, base64-encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Base64 {
    /// A file name for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Its media type.
    #[serde(rename = "media-type", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The bytes, base64-encoded (standard alphabet, padded).
    pub value: String,
}

/// A finding ready for delivery: its evidence and its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    /// Unique to this finding of this job; the control plane stores a key once.
    pub idempotency_key: String,
    /// The evidence.
    pub evidence: EvidenceCreateRequest,
}

/// The body of `POST /v1/evidence/batch`; borrowed when sent, so that a
/// batch is not copied to be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceBatch<'a> {
    /// The records, stored all or none.
    pub records: Cow<'a, [EvidenceRecord]>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> EvidenceRecord {
        let prop = |name: &str, value: &str| Property {
            name: name.to_string(),
            value: value.to_string(),
            ns: Some(PROPERTY_NS.to_string()),
        };
        EvidenceRecord {
            idempotency_key: "2c9d47a1-83e6-4b5f-a0d4-19e86b7c3f21".to_string(),
            evidence: EvidenceCreateRequest {
                uuid: "6f6b1e3c-4a0f-4d8e-9b1a-5c2e7d3f8a90".to_string(),
                title: "Root login disabled".to_string(),
                description: "PermitRootLogin yes".to_string(),
                start: "2026-11-25T10:00:00Z".to_string(),
                end: "2026-11-25T10:00:01Z".to_string(),
                labels: BTreeMap::from([("plugin".to_string(), "sshd".to_string())]),
                status: ObjectiveStatus {
                    state: "not-satisfied".to_string(),
                    reason: "fail".to_string(),
                    remarks: Some("PermitRootLogin yes".to_string()),
                },
                subjects: vec![Subject {
                    kind: "InventoryItem".to_string(),
                    identifier: "rt-1".to_string(),
                    description: Some("web-1".to_string()),
                }],
                origins: vec![Origin {
                    actors: vec![OriginActor {
                        kind: "tool".to_string(),
                        actor_uuid: "0b9e0000-4000-8000-0000-000000000001".to_string(),
                        props: vec![prop("plugin", "sshd")],
                    }],
                }],
                props: vec![prop("subject", "/etc/ssh/sshd_config")],
                links: vec![Link {
                    href: "https://example.org/cis/5.2.10".to_string(),
                    rel: Some("reference".to_string()),
                    text: Some("CIS 5.2.10".to_string()),
                }],
                remarks: Some("set PermitRootLogin no".to_string()),
                back_matter: Some(BackMatter {
                    resources: vec![Resource {
                        uuid: "3e0c1b1a-5f2d-5b7e-9a43-6d1c2b8e4f70".to_string(),
                        title: Some("Provenance".to_string()),
                        props: vec![prop("files", "1")],
                        base64: Some(Base64 {
                            filename: Some("provenance.json".to_string()),
                            media_type: Some("application/json".to_string()),
                            value: "e30=".to_string(),
                        }),
                        ..Resource::default()
                    }],
                }),
            },
        }
    }

    #[test]
    fn records_and_batches_round_trip() {
        let records = [record()];
        let batch = EvidenceBatch {
            records: Cow::Borrowed(&records),
        };
        let json = serde_json::to_value(&batch).unwrap();
        assert_eq!(
            serde_json::from_value::<EvidenceBatch>(json.clone()).unwrap(),
            batch
        );
        // The names the Compliance Framework expects.
        let evidence = &json["records"][0]["evidence"];
        assert_eq!(evidence["subjects"][0]["type"], "InventoryItem");
        assert_eq!(
            evidence["origins"][0]["actors"][0]["actor-uuid"],
            "0b9e0000-4000-8000-0000-000000000001"
        );
        let resource = &evidence["back-matter"]["resources"][0];
        assert_eq!(resource["base64"]["media-type"], "application/json");
        assert!(resource.get("description").is_none());
    }

    #[test]
    fn absent_options_and_empty_links_are_not_written() {
        let mut r = record().evidence;
        r.links.clear();
        r.remarks = None;
        r.back_matter = None;
        r.status.remarks = None;
        r.props[0].ns = None;
        let json = serde_json::to_value(&r).unwrap();
        for absent in ["links", "remarks", "back-matter"] {
            assert!(json.get(absent).is_none(), "{absent}: {json}");
        }
        assert!(json["status"].get("remarks").is_none());
        assert!(json["props"][0].get("ns").is_none());
        assert_eq!(
            serde_json::from_value::<EvidenceCreateRequest>(json).unwrap(),
            r
        );
    }

    #[test]
    fn fields_may_be_absent_but_not_of_another_type() {
        let minimal: EvidenceCreateRequest =
            serde_json::from_value(json!({ "uuid": "u", "activities": [] })).unwrap();
        assert_eq!(minimal.uuid, "u");
        assert!(minimal.labels.is_empty() && minimal.subjects.is_empty());
        for bad in [
            json!({ "uuid": 1 }),
            json!({ "labels": { "plugin": 3 } }),
            json!({ "subjects": {} }),
            json!({ "subjects": [{ "identifier": false }] }),
            json!({ "status": "satisfied" }),
            json!({ "back-matter": { "resources": {} } }),
            json!({ "back-matter": { "resources": [{ "base64": { "value": 1 } }] } }),
        ] {
            assert!(
                serde_json::from_value::<EvidenceCreateRequest>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
