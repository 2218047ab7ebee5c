//! Evidence records of one simulated job, shaped as the runtime builds
//! them (`host/src/results/evidence.rs`): one record per `pass` or `fail`
//! finding, the stream's `uuid` a UUIDv5 of the runtime, plugin, check and
//! subject (so a check's stream is the same job after job), the
//! idempotency key a UUIDv5 of the job and the finding's index, labels,
//! the plugin as the origin, the subject and references as properties, and
//! the job's provenance (the files it read, a directory, a variable) as a
//! back-matter resource linked from each record, as the runtime attaches
//! it. Records are about as large as the example plugins' (about 3 KiB of
//! JSON, half of it the provenance), so the database grows as it would.

use std::collections::BTreeMap;

use base64::Engine as _;
use capability_model::wire::evidence::{
    BackMatter, Base64, EvidenceCreateRequest, EvidenceRecord, Link, ObjectiveStatus, Origin,
    OriginActor, PROPERTY_NS, Property, Resource, Subject,
};
use capability_model::wire::provenance::{
    DirectoryListing, EnvironmentRead, FileAccess, PROVENANCE_MEDIA_TYPE, Provenance,
};
use uuid::Uuid;

/// The runtime's namespace of evidence UUIDs (the same value, so that the
/// streams are those a runtime of this id would have).
const EVIDENCE_NAMESPACE: Uuid = Uuid::from_u128(0x6f6b_1e3c_4a0f_4d8e_9b1a_5c2e_7d3f_8a90);
/// The runtime's namespace of idempotency keys.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x2c9d_47a1_83e6_4b5f_a0d4_19e8_6b7c_3f21);
/// The runtime's namespace of provenance resources (one per job).
const PROVENANCE_NAMESPACE: Uuid = Uuid::from_u128(0x4f4c_be7c_a6c7_4d8e_89f0_58d7_dbe2_ba7b);
/// Files a simulated job reads.
const FILES_READ: usize = 4;

/// The job's provenance as the runtime's back-matter resource: a plugin
/// that listed its configuration directory, read a few files and looked
/// at `PATH`.
fn provenance_resource(plugin: &str, job_id: &str, mtime: &str) -> Resource {
    let mut provenance = Provenance::new();
    provenance.directories.push(DirectoryListing {
        path: format!("/etc/{plugin}"),
        entries: Some(12),
        ..DirectoryListing::default()
    });
    provenance.files = (0..FILES_READ)
        .map(|k| {
            let path = format!("/etc/{plugin}/item-{k}.conf");
            let digest = Uuid::new_v5(&EVIDENCE_NAMESPACE, path.as_bytes()).simple();
            FileAccess {
                call: "read-file".to_string(),
                path,
                size: Some(1024 + 64 * k as u64),
                mtime: Some(mtime.to_string()),
                bytes: Some(1024 + 64 * k as u64),
                sha256: Some(format!("{digest}{digest}")),
                ..FileAccess::default()
            }
        })
        .collect();
    provenance.environment.push(EnvironmentRead {
        name: "PATH".to_string(),
        set: true,
    });
    let document = serde_json::to_vec(&provenance).unwrap_or_default();
    let prop = |name: &str, value: String| Property {
        name: name.to_string(),
        value,
        ns: Some(PROPERTY_NS.to_string()),
    };
    Resource {
        uuid: Uuid::new_v5(&PROVENANCE_NAMESPACE, job_id.as_bytes()).to_string(),
        title: Some("Provenance of the job's findings".to_string()),
        description: Some(
            "What the runtime's host served the plugin in this job: files read or stat'ed (size, modification time, SHA-256 of the bytes returned), directories listed, commands run (arguments, exit code, duration), environment variable names read, package databases read, and calls denied by policy. It is what the plugin was given, not what it concluded."
                .to_string(),
        ),
        props: vec![
            prop("schema", provenance.schema.clone()),
            prop("job", job_id.to_string()),
            prop("files", provenance.files.len().to_string()),
            prop("directories", provenance.directories.len().to_string()),
            prop("commands", "0".to_string()),
            prop("environment-variables", provenance.environment.len().to_string()),
            prop("package-queries", "0".to_string()),
            prop("denials", "0".to_string()),
            prop("dropped", "0".to_string()),
        ],
        base64: Some(Base64 {
            filename: Some("provenance.json".to_string()),
            media_type: Some(PROVENANCE_MEDIA_TYPE.to_string()),
            value: base64::engine::general_purpose::STANDARD.encode(document),
        }),
        remarks: None,
    }
}

/// The plugins a simulated runtime runs in turn (the example plugins).
pub const PLUGINS: [&str; 4] = [
    "sshd-hardening",
    "file-permissions",
    "kernel-params",
    "package-hygiene",
];

/// One job of `plugin` on the runtime `runtime_id` (host name `host`):
/// `findings` records, about one in five failing. `job_id` makes the
/// idempotency keys; `seed` varies which findings fail.
pub fn job_records(
    runtime_id: &str,
    host: &str,
    plugin: &str,
    job_id: &str,
    findings: usize,
    seed: u64,
) -> Vec<EvidenceRecord> {
    let now = chrono::Utc::now();
    let start = (now - chrono::Duration::milliseconds(240))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let end = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // A stable stand-in for the component's SHA-256, one per plugin.
    let id = Uuid::new_v5(&EVIDENCE_NAMESPACE, plugin.as_bytes()).simple();
    let digest = format!("sha256:{id}{id}");
    let actor_uuid = Uuid::new_v5(&EVIDENCE_NAMESPACE, digest.as_bytes()).to_string();
    let prop = |name: &str, value: &str| Property {
        name: name.to_string(),
        value: value.to_string(),
        ns: Some(PROPERTY_NS.to_string()),
    };
    let provenance = provenance_resource(plugin, job_id, &start);
    let provenance_link = Link {
        href: format!("#{}", provenance.uuid),
        rel: Some("provenance".to_string()),
        text: Some("What the host served the plugin in this job".to_string()),
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..findings)
        .map(|index| {
            // Ten checks, each about several subjects (files, parameters).
            let check = format!("{plugin}-check-{}", index % 10);
            let subject = format!("/etc/{plugin}/item-{}.conf", index / 10);
            let pass = rng.u8(..5) != 0;
            let (state, reason, status) = if pass {
                ("satisfied", "pass", "pass")
            } else {
                ("not-satisfied", "fail", "fail")
            };
            let severity = ["low", "medium", "high"][index % 3];
            let stream = format!("{runtime_id}\n{plugin}\n{check}\nsubject\nfile\n{subject}");
            let message = if pass {
                format!("{subject} is configured as the benchmark requires")
            } else {
                format!("{subject} allows what the benchmark forbids (found: value {index})")
            };
            let reference = format!("CIS {}.{}", 5 + index % 3, index % 10);
            EvidenceRecord {
                idempotency_key: Uuid::new_v5(
                    &IDEMPOTENCY_NAMESPACE,
                    format!("{job_id}\n{index}").as_bytes(),
                )
                .to_string(),
                evidence: EvidenceCreateRequest {
                    uuid: Uuid::new_v5(&EVIDENCE_NAMESPACE, stream.as_bytes()).to_string(),
                    title: format!("{check}: the setting is hardened"),
                    description: message.clone(),
                    start: start.clone(),
                    end: end.clone(),
                    labels: BTreeMap::from([
                        ("plugin".to_string(), plugin.to_string()),
                        ("check".to_string(), check.clone()),
                        ("host".to_string(), host.to_string()),
                        ("severity".to_string(), severity.to_string()),
                        ("status".to_string(), status.to_string()),
                        ("subject".to_string(), subject.clone()),
                    ]),
                    status: ObjectiveStatus {
                        state: state.to_string(),
                        reason: reason.to_string(),
                        remarks: Some(message),
                    },
                    subjects: vec![Subject {
                        kind: "InventoryItem".to_string(),
                        identifier: runtime_id.to_string(),
                        description: Some(host.to_string()),
                    }],
                    origins: vec![Origin {
                        actors: vec![OriginActor {
                            kind: "tool".to_string(),
                            actor_uuid: actor_uuid.clone(),
                            props: vec![
                                prop("plugin", plugin),
                                prop("plugin-version", "1.2.0"),
                                prop("plugin-digest", &digest),
                                prop("job", job_id),
                            ],
                        }],
                    }],
                    props: vec![
                        prop("subject-kind", "file"),
                        prop("subject", &subject),
                        prop("reference", &reference),
                        prop("observed", &format!("value {index}")),
                    ],
                    links: vec![
                        Link {
                            href: format!(
                                "https://www.cisecurity.org/benchmark/linux#{}",
                                reference.replace(' ', "-")
                            ),
                            rel: Some("reference".to_string()),
                            text: Some(reference),
                        },
                        provenance_link.clone(),
                    ],
                    remarks: (!pass).then(|| format!("set the value in {subject} as required")),
                    back_matter: Some(BackMatter {
                        resources: vec![provenance.clone()],
                    }),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_stay_and_keys_change_from_job_to_job() {
        let first = job_records("rt", "web-1", "kernel-params", "job-1", 25, 1);
        let second = job_records("rt", "web-1", "kernel-params", "job-2", 25, 2);
        assert_eq!(first.len(), 25);
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(
                a.evidence.uuid, b.evidence.uuid,
                "one stream per check and subject"
            );
            assert_ne!(a.idempotency_key, b.idempotency_key);
        }
        let streams: std::collections::BTreeSet<_> =
            first.iter().map(|r| &r.evidence.uuid).collect();
        assert_eq!(streams.len(), 25, "each finding its own stream");
        let other = job_records("rt-2", "web-2", "kernel-params", "job-1", 25, 1);
        assert_ne!(first[0].evidence.uuid, other[0].evidence.uuid);
    }

    #[test]
    fn records_are_about_as_large_as_real_ones() {
        let records = job_records(
            "0b9e0000-4000-8000-0000-000000000001",
            "host-1",
            "sshd-hardening",
            "9f1c2a34-0000-4000-8000-000000000000",
            100,
            7,
        );
        let bytes = serde_json::to_vec(&records).map(|v| v.len()).unwrap_or(0);
        let per_record = bytes / records.len();
        assert!((2000..5000).contains(&per_record), "{per_record} bytes");
        // Every record links its job's provenance, carried in its back-matter.
        let record = &records[0].evidence;
        let resource = &record.back_matter.as_ref().unwrap().resources[0];
        assert!(
            record
                .links
                .iter()
                .any(|l| l.href == format!("#{}", resource.uuid)
                    && l.rel.as_deref() == Some("provenance"))
        );
        let document = base64::engine::general_purpose::STANDARD
            .decode(&resource.base64.as_ref().unwrap().value)
            .unwrap();
        let provenance: Provenance = serde_json::from_slice(&document).unwrap();
        assert_eq!(provenance.files.len(), FILES_READ);
        assert!(records.iter().any(|r| r.evidence.status.reason == "fail"));
        assert!(records.iter().any(|r| r.evidence.status.reason == "pass"));
    }
}
