//! Findings as Compliance Framework evidence (`handler.EvidenceCreateRequest`,
//! OSCAL 1.1.3 types, defined in `capability_model::wire::evidence`), the
//! record the control plane stores.
//!
//! The evidence `uuid` is the identity of one check about one subject on
//! one machine over time: a UUIDv5 of the runtime's id, the plugin, the
//! check id and the finding's subject (kind and id), so that the order in
//! which a plugin emits its findings, or a new subject appearing, changes
//! no other stream. A finding without a subject (the system as a whole, and
//! every finding of an ABI 0.1.0 plugin) is identified by its occurrence
//! among that check's subject-less findings in the run, as before subjects
//! existed, so that 0.1.0 plugins keep their streams.
//! A plugin configured more than once runs as several instances: an
//! instance other than the plugin's name is part of the stream's identity
//! (written `plugin@instance`, which no plugin name can be) and labels its
//! evidence; the instance that is the name keeps the streams it had before
//! instances existed.
//! Every finding also gets an idempotency key, unique to that finding of
//! that job, so that a redelivery is stored once.
//!
//! Statuses map onto the Compliance Framework the way its own agent plugins
//! do: `pass` is `satisfied` (reason `pass`), `fail` is `not-satisfied`
//! (reason `fail`); a check without a verdict (`error`), one that does not
//! apply (`not-applicable`) and one disabled (`skipped`) is no evidence
//! about the control: it stays in the run report and the job's counts and
//! is not sent.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::capabilities::results::{Finding, FindingStatus};
use crate::plugins::PluginId;

// The wire types live in the capability model, shared with the control
// plane; they are re-exported here where the host builds them.
pub use capability_model::wire::evidence::{
    BackMatter, Base64, EvidenceBatch, EvidenceCreateRequest, EvidenceRecord, Link,
    ObjectiveStatus, Origin, OriginActor, PROPERTY_NS, Property, Resource, Subject,
};
use capability_model::wire::provenance::{PROVENANCE_MEDIA_TYPE, PROVENANCE_SCHEMA, Provenance};

/// Namespace of evidence UUIDs (a fixed random UUID: changing it would
/// change the identity of every stream).
const EVIDENCE_NAMESPACE: Uuid = Uuid::from_u128(0x6f6b_1e3c_4a0f_4d8e_9b1a_5c2e_7d3f_8a90);
/// Namespace of idempotency keys.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x2c9d_47a1_83e6_4b5f_a0d4_19e8_6b7c_3f21);
/// Namespace of the UUIDs of provenance resources (one per job).
const PROVENANCE_NAMESPACE: Uuid = Uuid::from_u128(0x4f4c_be7c_a6c7_4d8e_89f0_58d7_dbe2_ba7b);
/// The `rel` of a record's link to its job's provenance.
pub const PROVENANCE_REL: &str = "provenance";

/// Where a run happened, for the evidence it produces.
#[derive(Debug, Clone)]
pub struct RunContext<'a> {
    /// The runtime's stable id (issued at enrollment).
    pub runtime_id: &'a str,
    /// The assessed machine's host name.
    pub host: &'a str,
    /// The plugin build.
    pub plugin: &'a PluginId,
    /// The job.
    pub job_id: &'a str,
    /// RFC 3339 start of the job.
    pub start: &'a str,
    /// RFC 3339 end of the job.
    pub end: &'a str,
}

/// Whether a finding of this status is evidence about its control (see
/// the module documentation).
pub fn is_evidence(status: FindingStatus) -> bool {
    matches!(status, FindingStatus::Pass | FindingStatus::Fail)
}

/// The evidence records of one job's findings: one per `pass` or `fail`,
/// for the plugin configured once (its instance is its name).
pub fn evidence_records(ctx: &RunContext<'_>, findings: &[Finding]) -> Vec<EvidenceRecord> {
    instance_evidence_records(ctx, &ctx.plugin.name, findings)
}

/// The evidence records of one job of the configured `instance` of the
/// plugin: one per `pass` or `fail`.
pub fn instance_evidence_records(
    ctx: &RunContext<'_>,
    instance: &str,
    findings: &[Finding],
) -> Vec<EvidenceRecord> {
    records_of(ctx, instance, findings, is_evidence)
}

/// The records of every finding of one job of `instance`, verdict or not,
/// for reports of the run (`run --output oscal`), never for delivery: a
/// finding without a verdict has its status as its state and reason
/// (`error`, `not-applicable`, `skipped`), which no Compliance Framework
/// objective status is. Its stream and key are those it would have as
/// evidence.
pub fn instance_report_records(
    ctx: &RunContext<'_>,
    instance: &str,
    findings: &[Finding],
) -> Vec<EvidenceRecord> {
    records_of(ctx, instance, findings, |_| true)
}

fn records_of(
    ctx: &RunContext<'_>,
    instance: &str,
    findings: &[Finding],
    include: impl Fn(FindingStatus) -> bool,
) -> Vec<EvidenceRecord> {
    let own_instance = instance != ctx.plugin.name;
    // '@' is in no plugin name, so an instance's streams can be no other
    // plugin's (or instance's); the name alone keeps today's streams.
    let stream_plugin = if own_instance {
        format!("{}@{instance}", ctx.plugin.name)
    } else {
        ctx.plugin.name.clone()
    };
    let mut occurrences: BTreeMap<&str, usize> = BTreeMap::new();
    let mut records = Vec::new();
    for (index, f) in findings.iter().enumerate() {
        let stream = match &f.subject {
            Some(subject) => format!(
                "{}\n{}\n{}\nsubject\n{}\n{}",
                ctx.runtime_id,
                stream_plugin,
                f.check_id,
                subject.kind.as_str(),
                subject.id
            ),
            None => {
                let occurrence = occurrences.entry(f.check_id.as_str()).or_insert(0);
                let stream = format!(
                    "{}\n{}\n{}\n{}",
                    ctx.runtime_id, stream_plugin, f.check_id, occurrence
                );
                *occurrence += 1;
                stream
            }
        };
        if !include(f.status) {
            continue;
        }
        let uuid = Uuid::new_v5(&EVIDENCE_NAMESPACE, stream.as_bytes());
        let idempotency_key = Uuid::new_v5(
            &IDEMPOTENCY_NAMESPACE,
            format!("{}\n{index}", ctx.job_id).as_bytes(),
        );
        let prop = |name: &str, value: &str| Property {
            name: name.to_string(),
            value: value.to_string(),
            ns: Some(PROPERTY_NS.to_string()),
        };
        let mut labels = BTreeMap::from([
            ("plugin".to_string(), ctx.plugin.name.clone()),
            ("check".to_string(), f.check_id.clone()),
            ("host".to_string(), ctx.host.to_string()),
            ("severity".to_string(), f.severity.as_str().to_string()),
            ("status".to_string(), f.status.as_str().to_string()),
        ]);
        let mut actor_props = vec![
            prop("plugin", &ctx.plugin.name),
            prop("plugin-version", &ctx.plugin.version),
            prop("plugin-digest", &ctx.plugin.digest),
            prop("job", ctx.job_id),
        ];
        if own_instance {
            labels.insert("instance".to_string(), instance.to_string());
            actor_props.insert(1, prop("plugin-instance", instance));
        }
        let mut props = Vec::new();
        if let Some(subject) = &f.subject {
            labels.insert("subject".to_string(), subject.id.clone());
            props.push(prop("subject-kind", subject.kind.as_str()));
            props.push(prop("subject", &subject.id));
        }
        for r in &f.references {
            props.push(prop("reference", &r.label()));
        }
        props.extend(f.evidence.iter().map(|e| prop(&e.key, &e.value)));
        let links = f
            .references
            .iter()
            .filter_map(|r| {
                Some(Link {
                    href: r.url.clone()?,
                    rel: Some("reference".to_string()),
                    text: Some(r.label()),
                })
            })
            .collect();
        let (state, reason) = match f.status {
            FindingStatus::Pass => ("satisfied", "pass"),
            FindingStatus::Fail => ("not-satisfied", "fail"),
            other => (other.as_str(), other.as_str()),
        };
        records.push(EvidenceRecord {
            idempotency_key: idempotency_key.to_string(),
            evidence: EvidenceCreateRequest {
                uuid: uuid.to_string(),
                title: f.title.clone(),
                description: f.message.clone(),
                start: ctx.start.to_string(),
                end: ctx.end.to_string(),
                labels,
                status: ObjectiveStatus {
                    state: state.to_string(),
                    reason: reason.to_string(),
                    remarks: Some(f.message.clone()),
                },
                subjects: vec![Subject {
                    kind: "InventoryItem".to_string(),
                    identifier: ctx.runtime_id.to_string(),
                    description: Some(ctx.host.to_string()),
                }],
                origins: vec![Origin {
                    actors: vec![OriginActor {
                        kind: "tool".to_string(),
                        actor_uuid: Uuid::new_v5(&EVIDENCE_NAMESPACE, ctx.plugin.digest.as_bytes())
                            .to_string(),
                        props: actor_props,
                    }],
                }],
                props,
                links,
                remarks: f.remediation.clone(),
                back_matter: None,
            },
        });
    }
    records
}

/// The job's provenance as an OSCAL back-matter resource: its UUID is
/// derived from the job (so a redelivered record is identical and every
/// record of the job names the same resource), its props count what it
/// holds, and the provenance document itself is its `base64` content.
pub fn provenance_resource(job_id: &str, provenance: &Provenance) -> Resource {
    use base64::Engine as _;
    // Plain data with string keys: serialising cannot fail.
    let document = serde_json::to_vec(provenance).unwrap_or_default();
    let prop = |name: &str, value: String| Property {
        name: name.to_string(),
        value,
        ns: Some(PROPERTY_NS.to_string()),
    };
    let count = |n: usize| n.to_string();
    Resource {
        uuid: Uuid::new_v5(&PROVENANCE_NAMESPACE, job_id.as_bytes()).to_string(),
        title: Some("Provenance of the job's findings".to_string()),
        description: Some(
            "What the runtime's host served the plugin in this job: files read or stat'ed (size, modification time, SHA-256 of the bytes returned), directories listed, commands run (arguments, exit code, duration), environment variable names read, package databases read, and calls denied by policy. It is what the plugin was given, not what it concluded."
                .to_string(),
        ),
        props: vec![
            prop("schema", PROVENANCE_SCHEMA.to_string()),
            prop("job", job_id.to_string()),
            prop("files", count(provenance.files.len())),
            prop("directories", count(provenance.directories.len())),
            prop("commands", count(provenance.commands.len())),
            prop("environment-variables", count(provenance.environment.len())),
            prop("package-queries", count(provenance.packages.len())),
            prop("denials", count(provenance.denials.len())),
            prop("dropped", provenance.dropped.total().to_string()),
        ],
        base64: Some(Base64 {
            filename: Some("provenance.json".to_string()),
            media_type: Some(PROVENANCE_MEDIA_TYPE.to_string()),
            value: base64::engine::general_purpose::STANDARD.encode(document),
        }),
        remarks: None,
    }
}

/// Attach the job's provenance to each of its records: the resource in the
/// record's back-matter and a link to it (`#<uuid>`, rel
/// [`PROVENANCE_REL`]).
pub fn attach_provenance(records: &mut [EvidenceRecord], job_id: &str, provenance: &Provenance) {
    if records.is_empty() {
        return;
    }
    let resource = provenance_resource(job_id, provenance);
    let link = Link {
        href: format!("#{}", resource.uuid),
        rel: Some(PROVENANCE_REL.to_string()),
        text: Some("What the host served the plugin in this job".to_string()),
    };
    for record in records {
        record.evidence.links.push(link.clone());
        record
            .evidence
            .back_matter
            .get_or_insert_with(BackMatter::default)
            .resources
            .push(resource.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::results::{
        EvidenceItem, FindingSeverity, FindingSubjectKind, Reference, Subject as About,
    };

    fn finding(check: &str, status: FindingStatus) -> Finding {
        Finding {
            check_id: check.to_string(),
            title: format!("title of {check}"),
            status,
            severity: FindingSeverity::High,
            subject: None,
            references: Vec::new(),
            message: "observed".to_string(),
            evidence: vec![EvidenceItem {
                key: "path".into(),
                value: "/etc/passwd".into(),
            }],
            remediation: Some("fix it".into()),
        }
    }

    fn plugin() -> PluginId {
        PluginId {
            name: "file-permissions".into(),
            version: "1.0.0".into(),
            digest: "sha256:ab".into(),
        }
    }

    fn records(runtime: &str, job: &str, findings: &[Finding]) -> Vec<EvidenceRecord> {
        let plugin = plugin();
        let ctx = RunContext {
            runtime_id: runtime,
            host: "web-1",
            plugin: &plugin,
            job_id: job,
            start: "2026-11-25T10:00:00Z",
            end: "2026-11-25T10:00:01Z",
        };
        evidence_records(&ctx, findings)
    }

    #[test]
    fn uuids_are_stable_per_check_and_machine_and_keys_unique_per_job() {
        let fs = [
            finding("a", FindingStatus::Pass),
            finding("b", FindingStatus::Fail),
            finding("b", FindingStatus::Pass),
        ];
        let first = records("rt-1", "job-1", &fs);
        let again = records("rt-1", "job-2", &fs);
        let other_machine = records("rt-2", "job-1", &fs);
        let uuids = |r: &[EvidenceRecord]| {
            r.iter()
                .map(|e| e.evidence.uuid.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            uuids(&first),
            uuids(&again),
            "same checks, same machine: same streams"
        );
        assert_ne!(
            uuids(&first),
            uuids(&other_machine),
            "another machine: other streams"
        );
        let u = uuids(&first);
        assert!(
            u[0] != u[1] && u[1] != u[2],
            "each check and occurrence is its own stream"
        );
        let keys: Vec<_> = first
            .iter()
            .chain(&again)
            .map(|r| r.idempotency_key.clone())
            .collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len());
        assert_eq!(
            records("rt-1", "job-1", &fs),
            first,
            "deterministic: a redelivery is identical"
        );
    }

    fn about(check: &str, user: &str, status: FindingStatus) -> Finding {
        Finding {
            subject: Some(About {
                kind: FindingSubjectKind::User,
                id: user.to_string(),
            }),
            ..finding(check, status)
        }
    }

    #[test]
    fn a_stream_is_its_check_and_subject_whatever_the_order_or_new_subjects() {
        let before = [
            about("uid0", "alice", FindingStatus::Pass),
            about("uid0", "bob", FindingStatus::Fail),
        ];
        let after = [
            about("uid0", "bob", FindingStatus::Pass),
            about("uid0", "aaron", FindingStatus::Fail),
            about("uid0", "alice", FindingStatus::Pass),
        ];
        let streams = |fs: &[Finding]| {
            records("rt-1", "job", fs)
                .into_iter()
                .map(|r| (r.evidence.labels["subject"].clone(), r.evidence.uuid))
                .collect::<BTreeMap<_, _>>()
        };
        let (b, a) = (streams(&before), streams(&after));
        assert_eq!(b["alice"], a["alice"]);
        assert_eq!(b["bob"], a["bob"]);
        assert!(!b.values().any(|u| *u == a["aaron"]));
        // Another kind of subject with the same name is another stream.
        let mut group = about("uid0", "alice", FindingStatus::Pass);
        group.subject.as_mut().unwrap().kind = FindingSubjectKind::Group;
        assert_ne!(streams(&[group]).values().next(), Some(&b["alice"]));
    }

    #[test]
    fn only_verdicts_are_evidence_and_references_are_carried() {
        let mut f = about("a", "alice", FindingStatus::Fail);
        f.references = vec![
            Reference {
                benchmark: "CIS Debian Linux 12".into(),
                id: "7.2.2".into(),
                url: Some("https://example.org/cis/7.2.2".into()),
            },
            Reference {
                benchmark: "STIG".into(),
                id: "V-1".into(),
                url: None,
            },
        ];
        let fs = [
            f,
            finding("b", FindingStatus::Error),
            finding("c", FindingStatus::NotApplicable),
            finding("d", FindingStatus::Skipped),
            finding("e", FindingStatus::Pass),
        ];
        let r = records("rt-1", "job", &fs);
        assert_eq!(
            r.len(),
            2,
            "error, not-applicable and skipped are not evidence"
        );
        let e = &r[0].evidence;
        let props: Vec<_> = e
            .props
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            &props[..4],
            [
                ("subject-kind", "user"),
                ("subject", "alice"),
                ("reference", "CIS Debian Linux 12 7.2.2"),
                ("reference", "STIG V-1")
            ]
        );
        assert_eq!(e.links.len(), 1);
        assert_eq!(e.links[0].href, "https://example.org/cis/7.2.2");
        assert_eq!(r[1].evidence.labels["check"], "e");
        assert_eq!(r[1].evidence.status.reason, "pass");
        // Keys stay those of the findings' places in the job.
        assert_eq!(
            records("rt-1", "job", &fs[4..])[0].evidence.uuid,
            r[1].evidence.uuid
        );
        assert_ne!(
            records("rt-1", "job", &fs[4..])[0].idempotency_key,
            r[1].idempotency_key
        );
    }

    fn instance_records(instance: &str, findings: &[Finding]) -> Vec<EvidenceRecord> {
        let plugin = plugin();
        let ctx = RunContext {
            runtime_id: "rt-1",
            host: "web-1",
            plugin: &plugin,
            job_id: "job-1",
            start: "2026-11-25T10:00:00Z",
            end: "2026-11-25T10:00:01Z",
        };
        instance_evidence_records(&ctx, instance, findings)
    }

    #[test]
    fn the_instance_that_is_the_plugin_name_keeps_the_streams_of_before_instances() {
        let fs = [
            finding("a", FindingStatus::Pass),
            about("uid0", "alice", FindingStatus::Fail),
        ];
        // UUIDv5 of "rt-1\nfile-permissions\na\n0" and of
        // "rt-1\nfile-permissions\nuid0\nsubject\nuser\nalice" in the
        // evidence namespace, as computed before instances existed.
        let expected = [
            "ff8fa657-232e-569b-b115-598a1c5da78c",
            "ba8f1ad7-df18-5459-a5ad-6be972ad701a",
        ];
        for r in [
            records("rt-1", "job-1", &fs),
            instance_records("file-permissions", &fs),
        ] {
            let uuids: Vec<_> = r.iter().map(|e| e.evidence.uuid.as_str()).collect();
            assert_eq!(uuids, expected);
            assert!(!r[0].evidence.labels.contains_key("instance"));
            let actor = &r[0].evidence.origins[0].actors[0].props;
            assert!(!actor.iter().any(|p| p.name == "plugin-instance"));
        }
        assert_eq!(
            instance_records("file-permissions", &fs),
            records("rt-1", "job-1", &fs)
        );
    }

    #[test]
    fn two_instances_of_one_plugin_are_distinct_streams_labelled_with_their_instance() {
        let fs = [
            finding("a", FindingStatus::Pass),
            about("uid0", "alice", FindingStatus::Fail),
        ];
        let uuids = |r: &[EvidenceRecord]| {
            r.iter()
                .map(|e| e.evidence.uuid.clone())
                .collect::<Vec<_>>()
        };
        let default = instance_records("file-permissions", &fs);
        let home = instance_records("perms-home", &fs);
        let srv = instance_records("perms-srv", &fs);
        for (a, b) in [(&default, &home), (&default, &srv), (&home, &srv)] {
            for (x, y) in uuids(a).iter().zip(uuids(b).iter()) {
                assert_ne!(x, y, "each instance is its own stream");
            }
        }
        assert_eq!(
            uuids(&home),
            uuids(&instance_records("perms-home", &fs)),
            "an instance's streams are stable"
        );
        // An instance named like another plugin is not that plugin's stream.
        let mut other = plugin();
        other.name = "perms-home".into();
        let ctx = RunContext {
            runtime_id: "rt-1",
            host: "web-1",
            plugin: &other,
            job_id: "job-1",
            start: "2026-11-25T10:00:00Z",
            end: "2026-11-25T10:00:01Z",
        };
        assert!(
            uuids(&evidence_records(&ctx, &fs))
                .iter()
                .all(|u| !uuids(&home).contains(u))
        );
        let e = &home[1].evidence;
        assert_eq!(e.labels["instance"], "perms-home");
        assert_eq!(e.labels["plugin"], "file-permissions");
        let actor = &e.origins[0].actors[0].props;
        assert!(
            actor
                .iter()
                .any(|p| p.name == "plugin-instance" && p.value == "perms-home")
        );
        assert!(
            actor
                .iter()
                .any(|p| p.name == "plugin" && p.value == "file-permissions")
        );
    }

    fn provenance() -> Provenance {
        let mut log = crate::capabilities::provenance::ProvenanceLog::default();
        log.environment("PATH", true);
        log.denial("read-file", "/etc/shadow is not granted");
        log.take()
    }

    fn decoded(resource: &Resource) -> Provenance {
        use base64::Engine as _;
        let b64 = resource.base64.as_ref().unwrap();
        assert_eq!(b64.media_type.as_deref(), Some("application/json"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&b64.value)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn every_record_of_a_job_links_the_jobs_provenance_in_its_back_matter() {
        let fs = [
            finding("a", FindingStatus::Pass),
            finding("b", FindingStatus::Fail),
        ];
        let p = provenance();
        let mut first = records("rt-1", "job-1", &fs);
        attach_provenance(&mut first, "job-1", &p);
        for record in &first {
            let e = &record.evidence;
            let resources = &e.back_matter.as_ref().unwrap().resources;
            assert_eq!(resources.len(), 1);
            let link = e.links.last().unwrap();
            assert_eq!(link.href, format!("#{}", resources[0].uuid));
            assert_eq!(link.rel.as_deref(), Some(PROVENANCE_REL));
            assert_eq!(decoded(&resources[0]), p);
            let props: BTreeMap<_, _> = resources[0]
                .props
                .iter()
                .map(|p| (p.name.as_str(), p.value.as_str()))
                .collect();
            assert_eq!(props["environment-variables"], "1");
            assert_eq!(props["denials"], "1");
            assert_eq!(props["files"], "0");
            assert_eq!(props["dropped"], "0");
            assert_eq!(props["schema"], PROVENANCE_SCHEMA);
        }
        // A redelivery is identical; another job is another resource.
        let mut again = records("rt-1", "job-1", &fs);
        attach_provenance(&mut again, "job-1", &p);
        assert_eq!(again, first);
        let mut other = records("rt-1", "job-2", &fs);
        attach_provenance(&mut other, "job-2", &p);
        assert_ne!(
            other[0].evidence.back_matter.as_ref().unwrap().resources[0].uuid,
            first[0].evidence.back_matter.as_ref().unwrap().resources[0].uuid
        );
    }

    /// The control plane's default record limit
    /// (`control-plane/src/config.rs`, `DEFAULT_MAX_RECORD_BYTES`, which a
    /// constant assertion there keeps at 4 MiB).
    const CONTROL_PLANE_MAX_RECORD_BYTES: usize = 4 << 20;

    #[test]
    fn the_largest_finding_with_the_fullest_provenance_fits_the_control_planes_record_limit() {
        use crate::capabilities::provenance::ProvenanceLog;
        use crate::capabilities::results::bounds;
        use capability_model::wire::provenance::bounds as provenance_bounds;
        // Control characters: six bytes of JSON each (`\u0001`).
        let worst = |n: usize| "\u{1}".repeat(n);
        let mut f = about("c", &"s".repeat(bounds::SUBJECT_ID), FindingStatus::Fail);
        f.title = worst(bounds::TITLE);
        f.message = worst(bounds::TEXT);
        f.remediation = Some(worst(bounds::TEXT));
        f.evidence = (0..bounds::EVIDENCE_ITEMS)
            .map(|_| EvidenceItem {
                key: worst(bounds::EVIDENCE_KEY),
                value: worst(bounds::EVIDENCE_VALUE),
            })
            .collect();
        // Provenance filled to its byte budget with entries whose JSON is
        // as long as it gets.
        let mut log = ProvenanceLog::default();
        let path = format!("/{}", "\"".repeat(provenance_bounds::PATH));
        while log.provenance().dropped.total() == 0 {
            log.file(
                "read-range",
                std::path::Path::new(&path),
                Some(u64::MAX),
                None,
                Some(b"x"),
                None,
            );
        }
        let p = log.take();
        let document = serde_json::to_vec(&p).unwrap().len();
        assert!(
            document > provenance_bounds::MAX_JSON_BYTES * 9 / 10,
            "the provenance is nearly full: {document}"
        );
        let mut r = records("rt-1", "job-1", &[f]);
        attach_provenance(&mut r, "job-1", &p);
        let size = serde_json::to_vec(&r[0].evidence).unwrap().len();
        assert!(
            size <= CONTROL_PLANE_MAX_RECORD_BYTES,
            "{size} bytes of JSON, more than {CONTROL_PLANE_MAX_RECORD_BYTES}"
        );
        // Without the finding's worst case it would prove little.
        assert!(size > 3 << 20, "{size}");
    }

    #[test]
    fn status_labels_and_origin() {
        let r = &records("rt-1", "job-1", &[finding("a", FindingStatus::Fail)])[0].evidence;
        assert_eq!(r.status.state, "not-satisfied");
        assert_eq!(r.status.reason, "fail");
        assert_eq!(r.labels["plugin"], "file-permissions");
        assert_eq!(r.labels["check"], "a");
        assert_eq!(r.labels["host"], "web-1");
        assert_eq!(r.props[0].name, "path");
        assert_eq!(r.remarks.as_deref(), Some("fix it"));
        let props = &r.origins[0].actors[0].props;
        assert!(
            props
                .iter()
                .any(|p| p.name == "plugin-digest" && p.value == "sha256:ab")
        );
        let pass = &records("rt-1", "j", &[finding("a", FindingStatus::Pass)])[0].evidence;
        assert_eq!(pass.status.state, "satisfied");
    }
}
