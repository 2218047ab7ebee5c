//! `assessment:plugin/results`: findings emitted by a run, validated and
//! bounded, owned by the host once accepted.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::bindings::latest::assessment::plugin::results::{self, EmitError};
use crate::bindings::latest::assessment::plugin::types::{self, Severity, Status, SubjectKind};

use super::PluginState;
use crate::guest_text::bounded;

/// Bounds of one finding (see the WIT documentation of `finding`).
pub mod bounds {
    /// Bytes of `title`.
    pub const TITLE: usize = 256;
    /// Bytes of `message` and of `remediation`.
    pub const TEXT: usize = 4096;
    /// Evidence items.
    pub const EVIDENCE_ITEMS: usize = 64;
    /// Bytes of an evidence key.
    pub const EVIDENCE_KEY: usize = 128;
    /// Bytes of an evidence value.
    pub const EVIDENCE_VALUE: usize = 8192;
    /// Bytes of a subject's identifier.
    pub const SUBJECT_ID: usize = 1024;
}

/// A finding as the host keeps and reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check, as announced by `describe`.
    pub check_id: String,
    /// One-line title.
    pub title: String,
    /// `pass`, `fail`, `error`, `not-applicable` or `skipped`.
    pub status: FindingStatus,
    /// `info` … `critical`.
    pub severity: FindingSeverity,
    /// What the verdict is about; `None` for the system as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// The benchmark items of the check (from `describe`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    /// What was observed.
    pub message: String,
    /// Supporting key/value evidence, in the plugin's order.
    pub evidence: Vec<EvidenceItem>,
    /// What to do about it.
    pub remediation: Option<String>,
}

impl Finding {
    /// The bytes of text it holds (what the per-run byte budget counts).
    pub fn text_bytes(&self) -> u64 {
        let evidence: usize = self
            .evidence
            .iter()
            .map(|e| e.key.len() + e.value.len())
            .sum();
        (self.check_id.len()
            + self.subject.as_ref().map_or(0, |s| s.id.len())
            + self.title.len()
            + self.message.len()
            + self.remediation.as_ref().map_or(0, String::len)
            + evidence) as u64
    }
}

/// What a verdict is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Subject {
    /// The kind of thing.
    pub kind: FindingSubjectKind,
    /// Its name on the assessed system (path, user name, …).
    pub id: String,
}

/// The kind of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingSubjectKind {
    /// A file.
    File,
    /// A directory.
    Directory,
    /// A user account.
    User,
    /// A group.
    Group,
    /// An installed package.
    Package,
    /// A service.
    Service,
    /// A kernel parameter.
    KernelParameter,
    /// A setting in a configuration file.
    ConfigSetting,
    /// Anything else.
    Other,
}

impl FindingSubjectKind {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingSubjectKind::File => "file",
            FindingSubjectKind::Directory => "directory",
            FindingSubjectKind::User => "user",
            FindingSubjectKind::Group => "group",
            FindingSubjectKind::Package => "package",
            FindingSubjectKind::Service => "service",
            FindingSubjectKind::KernelParameter => "kernel-parameter",
            FindingSubjectKind::ConfigSetting => "config-setting",
            FindingSubjectKind::Other => "other",
        }
    }
}

/// A benchmark item a check implements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    /// E.g. `CIS Debian Linux 12`.
    pub benchmark: String,
    /// E.g. `5.1.20`.
    pub id: String,
    /// A link to the item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Reference {
    /// `benchmark id`, for people and labels.
    pub fn label(&self) -> String {
        if self.benchmark.is_empty() {
            self.id.clone()
        } else {
            format!("{} {}", self.benchmark, self.id)
        }
    }
}

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceItem {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Verdict of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingStatus {
    /// Meets the requirement.
    Pass,
    /// Does not meet it.
    Fail,
    /// No verdict.
    Error,
    /// The requirement does not apply to this system.
    NotApplicable,
    /// Disabled by configuration (in ABI 0.1.0 also "does not apply").
    Skipped,
}

impl FindingStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Pass => "pass",
            FindingStatus::Fail => "fail",
            FindingStatus::Error => "error",
            FindingStatus::NotApplicable => "not-applicable",
            FindingStatus::Skipped => "skipped",
        }
    }
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingSeverity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl FindingSeverity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingSeverity::Info => "info",
            FindingSeverity::Low => "low",
            FindingSeverity::Medium => "medium",
            FindingSeverity::High => "high",
            FindingSeverity::Critical => "critical",
        }
    }
}

/// The findings of one run.
#[derive(Debug, Default)]
pub struct ResultsCtx {
    /// The checks `describe` announced, with their references.
    known_checks: BTreeMap<String, Vec<Reference>>,
    /// (check, subject) pairs emitted so far.
    emitted: BTreeSet<(String, Option<Subject>)>,
    /// Plugins of ABI 0.1.0 have no subjects and may emit a check several
    /// times; their streams are told apart by order.
    pub allow_repeats: bool,
    max_findings: u32,
    max_bytes: u64,
    used_bytes: u64,
    findings: Vec<Finding>,
    /// The plugin tried to emit more than `max_findings`, or more than
    /// `max_bytes` of findings.
    pub limit_reached: bool,
}

impl ResultsCtx {
    /// Accept findings of `known_checks`, at most `max_findings` of them.
    pub fn new(
        known_checks: BTreeMap<String, Vec<Reference>>,
        max_findings: u32,
        max_bytes: u64,
    ) -> Self {
        ResultsCtx {
            known_checks,
            emitted: BTreeSet::new(),
            allow_repeats: false,
            max_findings,
            max_bytes,
            used_bytes: 0,
            findings: Vec::new(),
            limit_reached: false,
        }
    }

    /// The accepted findings.
    pub fn take(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// Validate and keep one finding.
    pub fn accept(&mut self, finding: types::Finding) -> Result<(), EmitError> {
        if self.findings.len() >= self.max_findings as usize {
            self.limit_reached = true;
            return Err(EmitError::LimitReached(self.max_findings));
        }
        let finding = validate(&self.known_checks, finding).map_err(EmitError::Invalid)?;
        let pair = (finding.check_id.clone(), finding.subject.clone());
        if !self.allow_repeats && self.emitted.contains(&pair) {
            return Err(EmitError::Invalid(format!(
                "check {:?} was already reported for {}: one finding per check and subject per run",
                finding.check_id,
                finding
                    .subject
                    .as_ref()
                    .map_or("the system as a whole".to_string(), |s| format!(
                        "{} {:?}",
                        s.kind.as_str(),
                        bounded(&s.id, 128)
                    ))
            )));
        }
        let size = finding.text_bytes();
        if self.used_bytes.saturating_add(size) > self.max_bytes {
            self.limit_reached = true;
            return Err(EmitError::LimitReached(
                u32::try_from(self.findings.len()).unwrap_or(u32::MAX),
            ));
        }
        self.used_bytes += size;
        self.emitted.insert(pair);
        self.findings.push(finding);
        Ok(())
    }
}

fn too_long(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        Err(format!("{field} is {} bytes, more than {max}", value.len()))
    } else {
        Ok(())
    }
}

fn validate(
    known: &BTreeMap<String, Vec<Reference>>,
    f: types::Finding,
) -> Result<Finding, String> {
    let Some(references) = known.get(&f.check_id) else {
        return Err(format!(
            "check id {:?} was not announced by describe()",
            f.check_id.chars().take(128).collect::<String>()
        ));
    };
    let subject = match f.subject {
        None => None,
        Some(s) => {
            if s.id.is_empty() {
                return Err("a subject's id is empty".to_string());
            }
            too_long("a subject's id", &s.id, bounds::SUBJECT_ID)?;
            if s.id.chars().any(char::is_control) {
                return Err(format!(
                    "the subject id {:?} contains control characters",
                    bounded(&s.id, 128)
                ));
            }
            Some(Subject {
                kind: match s.kind {
                    SubjectKind::File => FindingSubjectKind::File,
                    SubjectKind::Directory => FindingSubjectKind::Directory,
                    SubjectKind::User => FindingSubjectKind::User,
                    SubjectKind::Group => FindingSubjectKind::Group,
                    SubjectKind::Package => FindingSubjectKind::Package,
                    SubjectKind::Service => FindingSubjectKind::Service,
                    SubjectKind::KernelParameter => FindingSubjectKind::KernelParameter,
                    SubjectKind::ConfigSetting => FindingSubjectKind::ConfigSetting,
                    SubjectKind::Other => FindingSubjectKind::Other,
                },
                id: s.id,
            })
        }
    };
    too_long("title", &f.title, bounds::TITLE)?;
    too_long("message", &f.message, bounds::TEXT)?;
    if let Some(r) = &f.remediation {
        too_long("remediation", r, bounds::TEXT)?;
    }
    if f.evidence.len() > bounds::EVIDENCE_ITEMS {
        return Err(format!(
            "{} evidence items, more than {}",
            f.evidence.len(),
            bounds::EVIDENCE_ITEMS
        ));
    }
    for e in &f.evidence {
        too_long("an evidence key", &e.key, bounds::EVIDENCE_KEY)?;
        too_long(
            &format!("evidence {:?}", e.key),
            &e.value,
            bounds::EVIDENCE_VALUE,
        )?;
    }
    Ok(Finding {
        check_id: f.check_id,
        title: f.title,
        status: match f.status {
            Status::Pass => FindingStatus::Pass,
            Status::Fail => FindingStatus::Fail,
            Status::Error => FindingStatus::Error,
            Status::NotApplicable => FindingStatus::NotApplicable,
            Status::Skipped => FindingStatus::Skipped,
        },
        subject,
        references: references.clone(),
        severity: match f.severity {
            Severity::Info => FindingSeverity::Info,
            Severity::Low => FindingSeverity::Low,
            Severity::Medium => FindingSeverity::Medium,
            Severity::High => FindingSeverity::High,
            Severity::Critical => FindingSeverity::Critical,
        },
        message: f.message,
        evidence: f
            .evidence
            .into_iter()
            .map(|e| EvidenceItem {
                key: e.key,
                value: e.value,
            })
            .collect(),
        remediation: f.remediation,
    })
}

impl results::Host for PluginState {
    async fn emit(&mut self, finding: types::Finding) -> wasmtime::Result<Result<(), EmitError>> {
        Ok(self.results.accept(finding))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(check: &str) -> types::Finding {
        types::Finding {
            check_id: check.to_string(),
            title: "t".into(),
            status: Status::Fail,
            severity: Severity::High,
            subject: None,
            message: "m".into(),
            evidence: vec![types::Evidence {
                key: "k".into(),
                value: "v".into(),
            }],
            remediation: None,
        }
    }

    fn known() -> BTreeMap<String, Vec<Reference>> {
        BTreeMap::from([(
            "a".to_string(),
            vec![Reference {
                benchmark: "CIS Debian Linux 12".into(),
                id: "5.1.20".into(),
                url: None,
            }],
        )])
    }

    fn ctx(max: u32) -> ResultsCtx {
        let mut c = ResultsCtx::new(known(), max, 1 << 20);
        c.allow_repeats = true;
        c
    }

    fn about(kind: SubjectKind, id: &str) -> Option<types::Subject> {
        Some(types::Subject {
            kind,
            id: id.to_string(),
        })
    }

    #[test]
    fn one_finding_per_check_and_subject() {
        let mut c = ResultsCtx::new(known(), 100, 1 << 20);
        let mut f = finding("a");
        f.subject = about(SubjectKind::User, "alice");
        assert!(c.accept(f.clone()).is_ok());
        assert!(
            matches!(c.accept(f.clone()), Err(EmitError::Invalid(m)) if m.contains("already reported for user \"alice\""))
        );
        f.subject = about(SubjectKind::User, "bob");
        assert!(c.accept(f.clone()).is_ok());
        f.subject = about(SubjectKind::Group, "alice");
        assert!(
            c.accept(f.clone()).is_ok(),
            "another kind is another subject"
        );
        f.subject = None;
        assert!(c.accept(f.clone()).is_ok());
        assert!(
            matches!(c.accept(f), Err(EmitError::Invalid(m)) if m.contains("system as a whole"))
        );
        let kept = c.take();
        assert_eq!(kept.len(), 4);
        assert_eq!(kept[0].references[0].label(), "CIS Debian Linux 12 5.1.20");
        assert_eq!(kept[0].subject.as_ref().unwrap().id, "alice");
    }

    #[test]
    fn subjects_are_bounded_and_printable() {
        let mut c = ResultsCtx::new(known(), 100, 1 << 20);
        for bad in ["", "a\nb", &"x".repeat(bounds::SUBJECT_ID + 1)] {
            let mut f = finding("a");
            f.subject = about(SubjectKind::File, bad);
            assert!(matches!(c.accept(f), Err(EmitError::Invalid(_))), "{bad:?}");
        }
        let mut f = finding("a");
        f.status = Status::NotApplicable;
        f.subject = about(SubjectKind::File, &"x".repeat(bounds::SUBJECT_ID));
        assert!(c.accept(f).is_ok());
        assert_eq!(c.take()[0].status.as_str(), "not-applicable");
    }

    #[test]
    fn findings_are_accepted_up_to_the_byte_budget() {
        let mut c = ResultsCtx::new(known(), 1000, 10_000);
        c.allow_repeats = true;
        let big = || {
            let mut f = finding("a");
            f.message = "x".repeat(4000);
            f
        };
        assert!(c.accept(big()).is_ok());
        assert!(c.accept(big()).is_ok());
        assert!(matches!(c.accept(big()), Err(EmitError::LimitReached(2))));
        assert!(c.limit_reached);
        assert!(c.accept(finding("a")).is_ok(), "a small one still fits");
        assert_eq!(c.take().len(), 3);
    }

    #[test]
    fn findings_are_accepted_up_to_the_limit() {
        let mut c = ctx(2);
        assert!(c.accept(finding("a")).is_ok());
        assert!(c.accept(finding("a")).is_ok());
        assert!(matches!(
            c.accept(finding("a")),
            Err(EmitError::LimitReached(2))
        ));
        assert!(c.limit_reached);
        let kept = c.take();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].status, FindingStatus::Fail);
        assert_eq!(kept[0].evidence[0].value, "v");
    }

    #[test]
    fn malformed_findings_are_refused() {
        let mut c = ctx(10);
        assert!(
            matches!(c.accept(finding("b")), Err(EmitError::Invalid(m)) if m.contains("not announced"))
        );
        let mut f = finding("a");
        f.message = "x".repeat(bounds::TEXT + 1);
        assert!(matches!(c.accept(f), Err(EmitError::Invalid(m)) if m.contains("message")));
        let mut f = finding("a");
        f.evidence = (0..=bounds::EVIDENCE_ITEMS)
            .map(|i| types::Evidence {
                key: i.to_string(),
                value: String::new(),
            })
            .collect();
        assert!(matches!(c.accept(f), Err(EmitError::Invalid(m)) if m.contains("evidence items")));
        let mut f = finding("a");
        f.evidence[0].value = "x".repeat(bounds::EVIDENCE_VALUE + 1);
        assert!(matches!(c.accept(f), Err(EmitError::Invalid(_))));
        assert!(c.take().is_empty());
    }
}
