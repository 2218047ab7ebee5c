//! Evidence records as one OSCAL 1.1.3 **assessment-results** document:
//! the mapping the runtime's `run --output oscal` and the control plane's
//! export (`GET /v1/admin/oscal/assessment-results`) both use, so that one
//! run reads the same from either side. `docs/oscal.md` describes it field
//! by field.
//!
//! - One [`ResultInput`] (one runtime's records over one span of time)
//!   becomes one `result`; the runtime as the assessing party is a
//!   `metadata` party in the `assessor` role, the machine an inventory item,
//!   each plugin build a tool component of the result's assessment platform.
//! - Every record becomes an observation (the plugin, the subject, the
//!   evidence); a record whose objective status is `satisfied` or
//!   `not-satisfied` also becomes a finding targeting its check. A record
//!   without a verdict (a check that erred, does not apply or was skipped:
//!   only the runtime's own report has those) is an observation without a
//!   finding, its status in the observation's `status` property.
//! - The records' back-matter resources (the jobs' provenance) go to the
//!   document's back-matter once each, and each observation refers to those
//!   its record links (`relevant-evidence`, `#<uuid>`).
//!
//! UUIDs are UUIDv5 of what they identify (the record's idempotency key, the
//! runtime's id, the result's span), so the same records give the same
//! document. Text a plugin chose is carried as is where OSCAL takes any
//! string, and made to fit where OSCAL constrains it: a property's name or a
//! target id becomes a token (`_` for each other character), a property's
//! value loses surrounding whitespace and line breaks.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use uuid::Uuid;

use super::evidence::{
    BackMatter, EvidenceCreateRequest, EvidenceRecord, Link, PROPERTY_NS, Property, Resource,
};

/// The OSCAL version the document conforms to.
pub const OSCAL_VERSION: &str = "1.1.3";

/// Namespace of the document's UUIDs (a fixed random UUID: changing it
/// would change every identity in every export).
const OSCAL_NAMESPACE: Uuid = Uuid::from_u128(0x8d3c_52a4_1f0e_4b7a_9c65_2e81_d4f0_7b13);

/// The role of the runtime in the document's metadata.
pub const ASSESSOR_ROLE: &str = "assessor";

/// What one document is about.
#[derive(Debug, Clone)]
pub struct DocumentInput<'a> {
    /// The document's title.
    pub title: String,
    /// When it was made (RFC 3339 with a time zone).
    pub last_modified: &'a str,
    /// The version of the software that made it.
    pub tool_version: &'a str,
    /// One result each.
    pub results: Vec<ResultInput<'a>>,
}

/// What one runtime observed over one span of time: one result.
#[derive(Debug, Clone)]
pub struct ResultInput<'a> {
    /// The runtime's id (the evidence's `subjects[].identifier`).
    pub runtime_id: &'a str,
    /// The assessed machine's host name.
    pub host: &'a str,
    /// Start of the span (RFC 3339 with a time zone).
    pub start: &'a str,
    /// End of the span.
    pub end: &'a str,
    /// The records, in the order the observations are to be listed.
    pub records: &'a [EvidenceRecord],
    /// What else to say about the span (jobs that failed to run).
    pub remarks: Option<String>,
}

/// The document: `{"assessment-results": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssessmentResultsDocument {
    /// The model.
    #[serde(rename = "assessment-results")]
    pub assessment_results: AssessmentResults,
}

/// `assessment-results`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssessmentResults {
    /// UUIDv5 of its results' UUIDs.
    pub uuid: String,
    /// Title, parties and roles.
    pub metadata: Metadata,
    /// The assessment plan: a back-matter resource saying there is none
    /// apart from the runtime's configuration.
    pub import_ap: ImportAp,
    /// One per runtime and span.
    pub results: Vec<AssessmentResult>,
    /// The records' resources, and the plan's.
    pub back_matter: BackMatter,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Metadata {
    /// Title.
    pub title: String,
    /// When the document was made.
    pub last_modified: String,
    /// The tool's version.
    pub version: String,
    /// [`OSCAL_VERSION`].
    pub oscal_version: String,
    /// [`ASSESSOR_ROLE`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// The runtimes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parties: Vec<Party>,
    /// The runtimes in the assessor role.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub responsible_parties: Vec<ResponsibleParty>,
}

/// `metadata.roles[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Role {
    /// Token.
    pub id: String,
    /// Title.
    pub title: String,
}

/// `metadata.parties[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Party {
    /// UUIDv5 of the runtime's id.
    pub uuid: String,
    /// `organization` (OSCAL 1.1 knows no other kind of party than a person).
    #[serde(rename = "type")]
    pub kind: String,
    /// The runtime and its machine.
    pub name: String,
    /// `runtime-id`, `host`.
    pub props: Vec<Property>,
}

/// `metadata.responsible-parties[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ResponsibleParty {
    /// The role.
    pub role_id: String,
    /// Who performs it.
    pub party_uuids: Vec<String>,
}

/// `import-ap`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportAp {
    /// `#<uuid>` of a back-matter resource.
    pub href: String,
    /// Why there is no plan document.
    pub remarks: String,
}

/// `results[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssessmentResult {
    /// UUIDv5 of the runtime and the span.
    pub uuid: String,
    /// Title.
    pub title: String,
    /// Counts.
    pub description: String,
    /// Start of the span.
    pub start: String,
    /// End of the span.
    pub end: String,
    /// `runtime-id`.
    pub props: Vec<Property>,
    /// The machine and the plugins.
    pub local_definitions: LocalDefinitions,
    /// Every check the plugins ran (no control catalog is imported).
    pub reviewed_controls: ReviewedControls,
    /// One per record.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<Observation>,
    /// One per record with a verdict.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// [`ResultInput::remarks`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

/// `results[].local-definitions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LocalDefinitions {
    /// The assessed machine.
    pub inventory_items: Vec<InventoryItem>,
    /// The runtime and its plugins.
    pub assessment_assets: AssessmentAssets,
}

/// An inventory item: the assessed machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InventoryItem {
    /// UUIDv5 of the runtime's id.
    pub uuid: String,
    /// The host name.
    pub description: String,
    /// `runtime-id`, `host`.
    pub props: Vec<Property>,
}

/// `assessment-assets`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssessmentAssets {
    /// The plugin builds, as tools.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
    /// The runtime.
    pub assessment_platforms: Vec<AssessmentPlatform>,
}

/// A plugin build as a `software` component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// The evidence's `actor-uuid`.
    pub uuid: String,
    /// `software`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name and version.
    pub title: String,
    /// What it is.
    pub description: String,
    /// The actor's properties (plugin, version, digest).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    /// `operational`.
    pub status: ComponentStatus,
}

/// `status` of a component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentStatus {
    /// `operational`.
    pub state: String,
}

/// The runtime as an assessment platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssessmentPlatform {
    /// UUIDv5 of the runtime's id.
    pub uuid: String,
    /// Title.
    pub title: String,
    /// The plugins it ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uses_components: Vec<UsesComponent>,
}

/// `uses-components[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct UsesComponent {
    /// A component's uuid.
    pub component_uuid: String,
}

/// `reviewed-controls`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReviewedControls {
    /// What was reviewed.
    pub description: String,
    /// `include-all`.
    pub control_selections: Vec<ControlSelection>,
}

/// `control-selections[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ControlSelection {
    /// `{}`.
    pub include_all: BTreeMap<String, String>,
}

/// `observations[]`: what one record says the plugin saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Observation {
    /// UUIDv5 of the record's idempotency key.
    pub uuid: String,
    /// The check's title.
    pub title: String,
    /// The finding's message.
    pub description: String,
    /// Check, stream (the evidence's uuid), status, severity, then the
    /// record's properties (subject, references, evidence items).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    /// The record's links (references, resources).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// `TEST`: a tool ran a check.
    pub methods: Vec<String>,
    /// The plugin.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<OscalOrigin>,
    /// The machine.
    pub subjects: Vec<SubjectReference>,
    /// The back-matter resources the record links.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relevant_evidence: Vec<RelevantEvidence>,
    /// When the job ended.
    pub collected: String,
    /// The remediation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

/// `origins[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OscalOrigin {
    /// The actors.
    pub actors: Vec<OscalActor>,
}

/// `origins[].actors[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OscalActor {
    /// `tool`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A component's uuid.
    #[serde(rename = "actor-uuid")]
    pub actor_uuid: String,
    /// Plugin, version, digest, job.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
}

/// `subjects[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubjectReference {
    /// The inventory item's uuid.
    pub subject_uuid: String,
    /// `inventory-item`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The host name.
    pub title: String,
}

/// `relevant-evidence[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelevantEvidence {
    /// `#<uuid>` of a back-matter resource.
    pub href: String,
    /// The resource's title.
    pub description: String,
}

/// `findings[]`: a verdict on one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Finding {
    /// UUIDv5 of the record's idempotency key.
    pub uuid: String,
    /// The check's title.
    pub title: String,
    /// The finding's message.
    pub description: String,
    /// Check, severity, references.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    /// The check's references with a URL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// The plugin.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<OscalOrigin>,
    /// The check and its status.
    pub target: FindingTarget,
    /// The record's observation.
    pub related_observations: Vec<RelatedObservation>,
    /// The remediation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

/// `findings[].target`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FindingTarget {
    /// `objective-id`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The check's id, as a token.
    pub target_id: String,
    /// The check's title.
    pub title: String,
    /// Satisfied or not.
    pub status: TargetStatus,
}

/// `findings[].target.status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStatus {
    /// `satisfied` or `not-satisfied`.
    pub state: String,
    /// `pass`, `fail`, or `other` for a reason that is no token.
    pub reason: String,
    /// The finding's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

/// `related-observations[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RelatedObservation {
    /// An observation's uuid.
    pub observation_uuid: String,
}

fn derived(kind: &str, of: &str) -> String {
    Uuid::new_v5(&OSCAL_NAMESPACE, format!("{kind}\n{of}").as_bytes()).to_string()
}

/// Whether `s` is a UUID as OSCAL takes one: hyphenated, version 4 or 5,
/// of the RFC 4122 variant.
pub fn is_oscal_uuid(s: &str) -> bool {
    s.len() == 36
        && Uuid::try_parse(s).is_ok_and(|u| {
            matches!(u.get_version_num(), 4 | 5) && u.get_variant() == uuid::Variant::RFC4122
        })
}

/// `s` as an OSCAL token (an XML NCName): ASCII letters, digits, `.`, `-`
/// and `_`, starting with a letter or `_`; every other character becomes
/// `_`.
pub fn token(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// `s` as an OSCAL string (no surrounding whitespace, one line, not empty).
pub fn one_line(s: &str) -> String {
    let line: String = s
        .chars()
        .map(|c| {
            if matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect();
    let trimmed = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if trimmed.is_empty() {
        "(empty)".to_string()
    } else {
        trimmed.to_string()
    }
}

fn property(p: &Property) -> Property {
    Property {
        name: token(&p.name),
        value: one_line(&p.value),
        ns: p.ns.clone(),
    }
}

fn own(name: &str, value: &str) -> Property {
    Property {
        name: name.to_string(),
        value: one_line(value),
        ns: Some(PROPERTY_NS.to_string()),
    }
}

/// `s` as a URI reference: every byte outside RFC 3986's unreserved, reserved
/// and `%` characters (spaces, non-ASCII, brackets) percent-encoded, and a
/// `%` that starts no escape encoded itself.
pub fn uri_reference(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, &b) in bytes.iter().enumerate() {
        let escape = b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if escape || (b.is_ascii_alphanumeric() || b"-._~:/?#@!$&'()*+,;=".contains(&b)) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn link(l: &Link) -> Link {
    Link {
        href: uri_reference(&l.href),
        rel: l.rel.as_deref().map(token),
        text: l.text.clone(),
    }
}

/// The state of a verdict, or `None` for a record without one.
fn verdict(evidence: &EvidenceCreateRequest) -> Option<&str> {
    let state = evidence.status.state.as_str();
    matches!(state, "satisfied" | "not-satisfied").then_some(state)
}

/// The check a record is about: its `check` label, else its title.
fn check_of(evidence: &EvidenceCreateRequest) -> &str {
    evidence
        .labels
        .get("check")
        .map_or(evidence.title.as_str(), String::as_str)
}

fn text_or(text: &str, fallback: &str) -> String {
    if text.trim().is_empty() {
        fallback.to_string()
    } else {
        text.to_string()
    }
}

/// The uuid a record's actor is known by in the document.
fn actor_uuid(actor_uuid: &str) -> String {
    if is_oscal_uuid(actor_uuid) {
        actor_uuid.to_string()
    } else {
        derived("actor", actor_uuid)
    }
}

fn origins(evidence: &EvidenceCreateRequest) -> Vec<OscalOrigin> {
    evidence
        .origins
        .iter()
        .filter(|o| !o.actors.is_empty())
        .map(|o| OscalOrigin {
            actors: o
                .actors
                .iter()
                .map(|a| OscalActor {
                    // A Compliance Framework actor is a tool, a platform or
                    // a party as in OSCAL; any other kind is the plugin.
                    kind: match a.kind.as_str() {
                        kind @ ("tool" | "assessment-platform" | "party") => kind.to_string(),
                        _ => "tool".to_string(),
                    },
                    actor_uuid: actor_uuid(&a.actor_uuid),
                    props: a.props.iter().map(property).collect(),
                })
                .collect(),
        })
        .collect()
}

/// The document of `input`.
pub fn assessment_results(input: &DocumentInput<'_>) -> AssessmentResultsDocument {
    let mut resources: Vec<Resource> = Vec::new();
    let mut resource_titles: BTreeMap<String, String> = BTreeMap::new();
    let mut parties: Vec<Party> = Vec::new();
    let mut results = Vec::new();
    for r in &input.results {
        // Every record's resources, once each, before the observations
        // that refer to them.
        for record in r.records {
            let Some(back_matter) = &record.evidence.back_matter else {
                continue;
            };
            for resource in &back_matter.resources {
                if !is_oscal_uuid(&resource.uuid) || resource_titles.contains_key(&resource.uuid) {
                    continue;
                }
                let title = resource
                    .title
                    .clone()
                    .unwrap_or_else(|| "A resource of the evidence".to_string());
                resource_titles.insert(resource.uuid.clone(), title);
                resources.push(Resource {
                    props: resource.props.iter().map(property).collect(),
                    ..resource.clone()
                });
            }
        }
        let party = derived("runtime", r.runtime_id);
        if !parties.iter().any(|p| p.uuid == party) {
            parties.push(Party {
                uuid: party,
                kind: "organization".to_string(),
                name: one_line(&format!(
                    "Assessment Runtime {} on {}",
                    r.runtime_id, r.host
                )),
                props: vec![own("runtime-id", r.runtime_id), own("host", r.host)],
            });
        }
        results.push(result(r, &resource_titles));
    }
    let uuid = derived(
        "assessment-results",
        &results
            .iter()
            .map(|r| r.uuid.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let plan = derived("assessment-plan", &uuid);
    resources.push(Resource {
        uuid: plan.clone(),
        title: Some("The assessment plan: the runtimes' configuration".to_string()),
        description: Some(
            "No separate assessment plan exists: each runtime's configuration (its plugins, their settings, grants and schedules) decides which checks run.".to_string(),
        ),
        ..Resource::default()
    });
    let party_uuids: Vec<String> = parties.iter().map(|p| p.uuid.clone()).collect();
    AssessmentResultsDocument {
        assessment_results: AssessmentResults {
            uuid,
            metadata: Metadata {
                title: input.title.clone(),
                last_modified: input.last_modified.to_string(),
                version: one_line(input.tool_version),
                oscal_version: OSCAL_VERSION.to_string(),
                roles: vec![Role {
                    id: ASSESSOR_ROLE.to_string(),
                    title: "Assessor".to_string(),
                }],
                responsible_parties: if party_uuids.is_empty() {
                    Vec::new()
                } else {
                    vec![ResponsibleParty {
                        role_id: ASSESSOR_ROLE.to_string(),
                        party_uuids,
                    }]
                },
                parties,
            },
            import_ap: ImportAp {
                href: format!("#{plan}"),
                remarks: "The runtimes ran the checks of their configured plugins; no assessment plan document was imported.".to_string(),
            },
            results,
            back_matter: BackMatter { resources },
        },
    }
}

fn result(r: &ResultInput<'_>, resource_titles: &BTreeMap<String, String>) -> AssessmentResult {
    let machine = derived("inventory-item", r.runtime_id);
    let subject = SubjectReference {
        subject_uuid: machine.clone(),
        kind: "inventory-item".to_string(),
        title: r.host.to_string(),
    };
    let mut components: Vec<Component> = Vec::new();
    let mut observations = Vec::new();
    let mut findings = Vec::new();
    let mut checks = BTreeSet::new();
    for record in r.records {
        let e = &record.evidence;
        for actor in e.origins.iter().flat_map(|o| &o.actors) {
            let uuid = actor_uuid(&actor.actor_uuid);
            if components.iter().any(|c| c.uuid == uuid) {
                continue;
            }
            let value = |name: &str| {
                actor
                    .props
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.value.as_str())
            };
            let title = match (value("plugin"), value("plugin-version")) {
                (Some(name), Some(version)) => format!("{name} {version}"),
                (Some(name), None) => name.to_string(),
                _ => e
                    .labels
                    .get("plugin")
                    .cloned()
                    .unwrap_or_else(|| "an assessment plugin".to_string()),
            };
            components.push(Component {
                uuid,
                kind: "software".to_string(),
                description: format!("The assessment plugin {title}, run in the runtime's sandbox"),
                title,
                props: actor
                    .props
                    .iter()
                    // The job is the observation's, not the build's.
                    .filter(|p| p.name != "job")
                    .map(property)
                    .collect(),
                status: ComponentStatus {
                    state: "operational".to_string(),
                },
            });
        }
        let check = check_of(e);
        checks.insert(check.to_string());
        let observation_uuid = derived("observation", &record.idempotency_key);
        let mut props = vec![own("check", check), own("stream", &e.uuid)];
        for label in ["status", "severity", "instance"] {
            if let Some(value) = e.labels.get(label) {
                props.push(own(label, value));
            }
        }
        props.extend(e.props.iter().map(property));
        let origins = origins(e);
        let relevant_evidence = e
            .links
            .iter()
            .filter_map(|l| {
                let title = resource_titles.get(l.href.strip_prefix('#')?)?;
                Some(RelevantEvidence {
                    href: l.href.clone(),
                    description: title.clone(),
                })
            })
            .collect();
        let description = text_or(&e.description, &text_or(&e.title, check));
        observations.push(Observation {
            uuid: observation_uuid.clone(),
            title: e.title.clone(),
            description: description.clone(),
            props,
            links: e.links.iter().map(link).collect(),
            methods: vec!["TEST".to_string()],
            origins: origins.clone(),
            subjects: vec![subject.clone()],
            relevant_evidence,
            collected: if is_date_time(&e.end) { &e.end } else { r.end }.to_string(),
            remarks: e.remarks.clone(),
        });
        let Some(state) = verdict(e) else {
            continue;
        };
        let mut props = vec![own("check", check)];
        if let Some(severity) = e.labels.get("severity") {
            props.push(own("severity", severity));
        }
        props.extend(
            e.props
                .iter()
                .filter(|p| p.name == "reference")
                .map(property),
        );
        let reason = if e.status.reason.is_empty() {
            None
        } else if token(&e.status.reason) == e.status.reason {
            Some(e.status.reason.clone())
        } else {
            Some("other".to_string())
        };
        findings.push(Finding {
            uuid: derived("finding", &record.idempotency_key),
            title: e.title.clone(),
            description,
            props,
            links: e
                .links
                .iter()
                .filter(|l| !l.href.starts_with('#'))
                .map(link)
                .collect(),
            origins,
            target: FindingTarget {
                kind: "objective-id".to_string(),
                target_id: token(check),
                title: e.title.clone(),
                status: TargetStatus {
                    state: state.to_string(),
                    reason: reason.unwrap_or_else(|| "other".to_string()),
                    remarks: e.status.remarks.clone(),
                },
            },
            related_observations: vec![RelatedObservation { observation_uuid }],
            remarks: e.remarks.clone(),
        });
    }
    let verdicts = findings.len();
    AssessmentResult {
        uuid: derived("result", &format!("{}\n{}\n{}", r.runtime_id, r.start, r.end)),
        title: format!("Assessment of {} by Assessment Runtime", r.host),
        description: format!(
            "Runtime {} on {}: {} observation(s) of {} check(s), {} with a verdict.",
            r.runtime_id,
            r.host,
            observations.len(),
            checks.len(),
            verdicts
        ),
        start: r.start.to_string(),
        end: r.end.to_string(),
        props: vec![own("runtime-id", r.runtime_id)],
        local_definitions: LocalDefinitions {
            inventory_items: vec![InventoryItem {
                uuid: machine,
                description: text_or(r.host, r.runtime_id),
                props: vec![own("runtime-id", r.runtime_id), own("host", r.host)],
            }],
            assessment_assets: AssessmentAssets {
                assessment_platforms: vec![AssessmentPlatform {
                    uuid: derived("assessment-platform", r.runtime_id),
                    title: format!("Assessment Runtime {}", r.runtime_id),
                    uses_components: components
                        .iter()
                        .map(|c| UsesComponent {
                            component_uuid: c.uuid.clone(),
                        })
                        .collect(),
                }],
                components,
            },
        },
        reviewed_controls: ReviewedControls {
            description: "The checks of the plugins the runtime ran; each finding targets one check by its id.".to_string(),
            control_selections: vec![ControlSelection {
                include_all: BTreeMap::new(),
            }],
        },
        observations,
        findings,
        remarks: r.remarks.clone(),
    }
}

impl AssessmentResultsDocument {
    /// The document as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Whether `s` is a date and time with a time zone (RFC 3339), as OSCAL
/// takes one: evidence from other agents may carry anything.
pub fn is_date_time(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// The time span of `records`: the earliest `start` and the latest `end`
/// that are dates and times, or `None` when no record has one.
pub fn span_of(records: &[EvidenceRecord]) -> Option<(&str, &str)> {
    let times = |pick: fn(&EvidenceRecord) -> &str| {
        records.iter().filter_map(move |r| {
            let text = pick(r);
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| (t, text))
        })
    };
    let start = times(|r| &r.evidence.start).min_by_key(|(t, _)| *t)?.1;
    let end = times(|r| &r.evidence.end)
        .max_by_key(|(t, _)| *t)
        .map_or(start, |(_, text)| text);
    Some((start, end))
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::evidence::{Base64, ObjectiveStatus, Origin, OriginActor, Subject};
    use serde_json::Value;

    const PROVENANCE: &str = "3e0c1b1a-5f2d-5b7e-9a43-6d1c2b8e4f70";

    fn record(key: &str, check: &str, state: &str, reason: &str) -> EvidenceRecord {
        let prop = |name: &str, value: &str| Property {
            name: name.to_string(),
            value: value.to_string(),
            ns: Some(PROPERTY_NS.to_string()),
        };
        EvidenceRecord {
            idempotency_key: key.to_string(),
            evidence: EvidenceCreateRequest {
                uuid: Uuid::new_v5(&Uuid::NAMESPACE_OID, check.as_bytes()).to_string(),
                title: format!("title of {check}"),
                description: format!("message of {check}"),
                start: "2026-11-25T10:00:00.000Z".to_string(),
                end: "2026-11-25T10:00:01.000Z".to_string(),
                labels: BTreeMap::from([
                    ("plugin".to_string(), "sshd-hardening".to_string()),
                    ("check".to_string(), check.to_string()),
                    ("severity".to_string(), "high".to_string()),
                    ("status".to_string(), reason.to_string()),
                ]),
                status: ObjectiveStatus {
                    state: state.to_string(),
                    reason: reason.to_string(),
                    remarks: Some(format!("message of {check}")),
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
                        props: vec![
                            prop("plugin", "sshd-hardening"),
                            prop("plugin-version", "0.1.0"),
                            prop("job", "job-1"),
                        ],
                    }],
                }],
                props: vec![
                    prop("reference", "CIS Debian Linux 12 5.1.20"),
                    prop("configured value", "  yes\n"),
                ],
                links: vec![
                    Link {
                        href: "https://example.org/cis/5.1.20".to_string(),
                        rel: Some("reference".to_string()),
                        text: Some("CIS 5.1.20".to_string()),
                    },
                    Link {
                        href: format!("#{PROVENANCE}"),
                        rel: Some("provenance".to_string()),
                        text: None,
                    },
                ],
                remarks: Some("set PermitRootLogin no".to_string()),
                back_matter: Some(BackMatter {
                    resources: vec![Resource {
                        uuid: PROVENANCE.to_string(),
                        title: Some("Provenance of job job-1".to_string()),
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

    fn document(results: Vec<ResultInput<'_>>) -> Value {
        assessment_results(&DocumentInput {
            title: "t".to_string(),
            last_modified: "2026-11-25T10:00:02.000Z",
            tool_version: "0.5.0",
            results,
        })
        .to_json()
    }

    fn one(records: &[EvidenceRecord]) -> ResultInput<'_> {
        ResultInput {
            runtime_id: "rt-1",
            host: "web-1",
            start: "2026-11-25T10:00:00.000Z",
            end: "2026-11-25T10:00:01.000Z",
            records,
            remarks: None,
        }
    }

    #[test]
    fn every_record_is_an_observation_and_only_verdicts_are_findings() {
        let records = [
            record("k1", "permit-root", "not-satisfied", "fail"),
            record("k2", "protocol", "satisfied", "pass"),
            record("k3", "ciphers", "error", "error"),
        ];
        let doc = document(vec![one(&records)]);
        let result = &doc["assessment-results"]["results"][0];
        let observations = result["observations"].as_array().unwrap();
        let findings = result["findings"].as_array().unwrap();
        assert_eq!(observations.len(), 3);
        assert_eq!(findings.len(), 2, "the error has no verdict: no finding");
        assert_eq!(findings[0]["target"]["target-id"], "permit-root");
        assert_eq!(findings[0]["target"]["type"], "objective-id");
        assert_eq!(findings[0]["target"]["status"]["state"], "not-satisfied");
        assert_eq!(findings[0]["target"]["status"]["reason"], "fail");
        assert_eq!(findings[1]["target"]["status"]["state"], "satisfied");
        assert_eq!(
            findings[0]["related-observations"][0]["observation-uuid"],
            observations[0]["uuid"]
        );
        // The check's references: as properties and links, the resource
        // link only on the observation.
        assert_eq!(findings[0]["links"].as_array().unwrap().len(), 1);
        assert!(
            findings[0]["props"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "reference" && p["value"] == "CIS Debian Linux 12 5.1.20")
        );
        let error = &observations[2];
        assert!(
            error["props"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "status" && p["value"] == "error")
        );
        assert_eq!(error["methods"][0], "TEST");
        assert_eq!(error["collected"], "2026-11-25T10:00:01.000Z");
        assert_eq!(error["remarks"], "set PermitRootLogin no");
        // The subject is the machine, an inventory item of the result.
        let machine = &result["local-definitions"]["inventory-items"][0];
        assert_eq!(error["subjects"][0]["subject-uuid"], machine["uuid"]);
        assert_eq!(machine["description"], "web-1");
        // The plugin is a tool component of the runtime's platform.
        let assets = &result["local-definitions"]["assessment-assets"];
        let actor = &error["origins"][0]["actors"][0];
        assert_eq!(actor["type"], "tool");
        assert_eq!(assets["components"][0]["uuid"], actor["actor-uuid"]);
        assert_eq!(assets["components"][0]["title"], "sshd-hardening 0.1.0");
        assert_eq!(
            assets["assessment-platforms"][0]["uses-components"][0]["component-uuid"],
            actor["actor-uuid"]
        );
    }

    #[test]
    fn resources_go_to_the_back_matter_once_and_observations_refer_to_them() {
        let mut unknown = record("k3", "ciphers", "satisfied", "pass");
        unknown.evidence.back_matter = None;
        unknown.evidence.links[1].href = "#5a1f0c9e-0000-4000-8000-000000000000".to_string();
        let records = [
            record("k1", "permit-root", "not-satisfied", "fail"),
            record("k2", "protocol", "satisfied", "pass"),
            unknown,
        ];
        let doc = document(vec![one(&records)]);
        let ar = &doc["assessment-results"];
        let resources = ar["back-matter"]["resources"].as_array().unwrap();
        let provenance: Vec<_> = resources
            .iter()
            .filter(|r| r["uuid"] == PROVENANCE)
            .collect();
        assert_eq!(provenance.len(), 1, "deduplicated by uuid: {resources:?}");
        assert_eq!(provenance[0]["base64"]["value"], "e30=");
        let observations = ar["results"][0]["observations"].as_array().unwrap();
        for o in &observations[..2] {
            assert_eq!(o["relevant-evidence"][0]["href"], format!("#{PROVENANCE}"));
            assert_eq!(
                o["relevant-evidence"][0]["description"],
                "Provenance of job job-1"
            );
        }
        assert!(
            observations[2].get("relevant-evidence").is_none(),
            "a link to no resource of the document is no evidence"
        );
        // The plan the document imports is a resource of it too.
        let plan = ar["import-ap"]["href"].as_str().unwrap();
        assert!(
            resources
                .iter()
                .any(|r| format!("#{}", r["uuid"].as_str().unwrap()) == plan)
        );
    }

    #[test]
    fn identities_are_stable_and_valid_oscal_uuids() {
        let records = [
            record("k1", "permit-root", "not-satisfied", "fail"),
            record("k2", "protocol", "satisfied", "pass"),
        ];
        let first = document(vec![one(&records)]);
        assert_eq!(first, document(vec![one(&records)]), "deterministic");
        let ar = &first["assessment-results"];
        let result = &ar["results"][0];
        let uuids = [
            &ar["uuid"],
            &result["uuid"],
            &result["observations"][0]["uuid"],
            &result["observations"][1]["uuid"],
            &result["findings"][0]["uuid"],
            &ar["metadata"]["parties"][0]["uuid"],
        ];
        for u in uuids {
            assert!(is_oscal_uuid(u.as_str().unwrap()), "{u}");
        }
        assert_ne!(uuids[2], uuids[3]);
        let mut again = records.clone();
        again[0].idempotency_key = "k9".to_string();
        let other = document(vec![one(&again)]);
        assert_ne!(
            other["assessment-results"]["results"][0]["observations"][0]["uuid"],
            result["observations"][0]["uuid"],
            "another finding (another job) is another observation"
        );
        assert!(!is_oscal_uuid("0b9e0000-4000-8000-0000-00000000000"));
        assert!(!is_oscal_uuid("0b9e0000-1000-8000-0000-000000000001"));
        assert!(!is_oscal_uuid("0b9e00004000800000000000000000001"));
    }

    #[test]
    fn the_runtimes_are_the_assessing_parties() {
        let a = [record("k1", "permit-root", "not-satisfied", "fail")];
        let b = [record("k2", "permit-root", "satisfied", "pass")];
        let mut other = one(&b);
        other.runtime_id = "rt-2";
        other.host = "web-2";
        let doc = document(vec![one(&a), other]);
        let metadata = &doc["assessment-results"]["metadata"];
        assert_eq!(metadata["oscal-version"], OSCAL_VERSION);
        let parties = metadata["parties"].as_array().unwrap();
        assert_eq!(parties.len(), 2);
        assert_eq!(parties[1]["name"], "Assessment Runtime rt-2 on web-2");
        assert_eq!(metadata["roles"][0]["id"], ASSESSOR_ROLE);
        let responsible = &metadata["responsible-parties"][0];
        assert_eq!(responsible["role-id"], ASSESSOR_ROLE);
        assert_eq!(responsible["party-uuids"][1], parties[1]["uuid"]);
        let results = doc["assessment-results"]["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        assert_ne!(results[0]["uuid"], results[1]["uuid"]);
    }

    #[test]
    fn plugin_text_is_made_to_fit_where_oscal_constrains_it() {
        assert_eq!(token("configured value"), "configured_value");
        assert_eq!(token("5.1.20"), "_5.1.20");
        assert_eq!(token("ñ:x"), "__x");
        assert_eq!(token(""), "_");
        assert_eq!(
            uri_reference("https://example.org/a b/é?q=%zz%41[1]"),
            "https://example.org/a%20b/%C3%A9?q=%25zz%41%5B1%5D"
        );
        assert_eq!(one_line("  yes\n"), "yes");
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
        assert_eq!(one_line(" \u{feff}\t"), "(empty)");
        let mut r = record("k1", "9 lives", "not-satisfied", "no such reason!");
        r.evidence.description = " ".to_string();
        let doc = document(vec![one(std::slice::from_ref(&r))]);
        let result = &doc["assessment-results"]["results"][0];
        let finding = &result["findings"][0];
        assert_eq!(finding["target"]["target-id"], "_9_lives");
        assert_eq!(finding["target"]["status"]["reason"], "other");
        assert_eq!(finding["description"], "title of 9 lives");
        let props = result["observations"][0]["props"].as_array().unwrap();
        assert!(
            props
                .iter()
                .any(|p| p["name"] == "configured_value" && p["value"] == "yes")
        );
        assert!(
            props
                .iter()
                .any(|p| p["name"] == "check" && p["value"] == "9 lives")
        );
    }

    #[test]
    fn the_span_of_records() {
        let mut a = record("k1", "a", "satisfied", "pass");
        let mut b = record("k2", "b", "satisfied", "pass");
        a.evidence.start = "2026-11-25T10:00:00.000+01:00".to_string();
        b.evidence.end = "2026-11-25T11:00:00.000Z".to_string();
        let mut c = record("k3", "c", "satisfied", "pass");
        c.evidence.start = "yesterday".to_string();
        c.evidence.end = "tomorrow".to_string();
        assert_eq!(
            span_of(&[a, b, c.clone()]),
            Some(("2026-11-25T10:00:00.000+01:00", "2026-11-25T11:00:00.000Z")),
            "compared as times, whatever the zone; what is no time is left out"
        );
        assert_eq!(span_of(&[]), None);
        assert_eq!(span_of(&[c.clone()]), None);
        // An observation of a record without a time is collected at the
        // result's end.
        let doc = document(vec![one(std::slice::from_ref(&c))]);
        assert_eq!(
            doc["assessment-results"]["results"][0]["observations"][0]["collected"],
            "2026-11-25T10:00:01.000Z"
        );
    }
}
