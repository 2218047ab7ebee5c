//! Checks and the finding builder.

use crate::imports::results;
use crate::{
    CheckInfo, EmitError, Evidence, Finding, Reference, Severity, Status, Subject, SubjectKind,
};

/// A benchmark item a check implements, usable in constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchmarkRef {
    /// The benchmark, e.g. `CIS Debian Linux 12`.
    pub benchmark: &'static str,
    /// The item, e.g. `5.1.20`.
    pub id: &'static str,
    /// A link to the item.
    pub url: Option<&'static str>,
}

impl BenchmarkRef {
    /// Item `id` of `benchmark`.
    pub const fn new(benchmark: &'static str, id: &'static str) -> Self {
        BenchmarkRef {
            benchmark,
            id,
            url: None,
        }
    }

    /// With a link to the item.
    pub const fn url(mut self, url: &'static str) -> Self {
        self.url = Some(url);
        self
    }

    fn to_wit(self) -> Reference {
        Reference {
            benchmark: self.benchmark.to_string(),
            id: self.id.to_string(),
            url: self.url.map(str::to_string),
        }
    }
}

/// A check a plugin performs. Declare checks as constants, announce them in
/// [`crate::Plugin::describe`] and emit their verdicts with
/// [`Check::pass`], [`Check::fail`], [`Check::error`],
/// [`Check::not_applicable`] or [`Check::skipped`], one per subject.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Stable identifier, unique within the plugin.
    pub id: &'static str,
    /// One-line human title.
    pub title: &'static str,
    /// Severity of a failure.
    pub severity: Severity,
    /// The benchmark items implemented.
    pub references: &'static [BenchmarkRef],
    /// What to do about a failure; attached to every failing finding.
    pub remediation: Option<&'static str>,
}

impl Check {
    /// A check with an id, a title and the severity of a failure.
    pub const fn new(id: &'static str, title: &'static str, severity: Severity) -> Self {
        Check {
            id,
            title,
            severity,
            references: &[],
            remediation: None,
        }
    }

    /// The benchmark items this check implements (at most 16).
    pub const fn references(mut self, references: &'static [BenchmarkRef]) -> Self {
        self.references = references;
        self
    }

    /// What an operator should do when the check fails.
    pub const fn remediation(mut self, remediation: &'static str) -> Self {
        self.remediation = Some(remediation);
        self
    }

    /// The description `describe` announces.
    pub fn info(&self) -> CheckInfo {
        CheckInfo {
            id: self.id.to_string(),
            title: self.title.to_string(),
            severity: self.severity,
            references: self.references.iter().map(|r| r.to_wit()).collect(),
        }
    }

    /// A finding with the given status.
    pub fn finding(&self, status: Status, message: impl Into<String>) -> FindingBuilder {
        let remediation = match status {
            Status::Fail => self.remediation.map(str::to_string),
            _ => None,
        };
        FindingBuilder {
            finding: Finding {
                check_id: self.id.to_string(),
                title: self.title.to_string(),
                status,
                severity: self.severity,
                subject: None,
                message: message.into(),
                evidence: Vec::new(),
                remediation,
            },
        }
    }

    /// The system meets the requirement.
    pub fn pass(&self, message: impl Into<String>) -> FindingBuilder {
        self.finding(Status::Pass, message)
    }

    /// The system does not meet the requirement.
    pub fn fail(&self, message: impl Into<String>) -> FindingBuilder {
        self.finding(Status::Fail, message)
    }

    /// No verdict could be reached.
    pub fn error(&self, message: impl Into<String>) -> FindingBuilder {
        self.finding(Status::Error, message)
    }

    /// The requirement does not apply to this system.
    pub fn not_applicable(&self, message: impl Into<String>) -> FindingBuilder {
        self.finding(Status::NotApplicable, message)
    }

    /// The check was disabled by configuration.
    pub fn skipped(&self, message: impl Into<String>) -> FindingBuilder {
        self.finding(Status::Skipped, message)
    }

    /// `pass` when `ok`, `fail` otherwise, with the same message.
    pub fn verdict(&self, ok: bool, message: impl Into<String>) -> FindingBuilder {
        self.finding(if ok { Status::Pass } else { Status::Fail }, message)
    }
}

impl Finding {
    /// The value of the first evidence item with this key.
    pub fn evidence_value(&self, key: &str) -> Option<&str> {
        self.evidence
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }
}

/// A finding under construction. Finish it with [`FindingBuilder::emit`].
#[derive(Debug, Clone)]
#[must_use = "a finding does nothing until it is emitted"]
pub struct FindingBuilder {
    finding: Finding,
}

impl FindingBuilder {
    /// Attach one piece of evidence.
    pub fn evidence(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.finding.evidence.push(Evidence {
            key: key.into(),
            value: value.to_string(),
        });
        self
    }

    /// What the verdict is about (one finding per check and subject per
    /// run; without a subject, the finding is about the system as a whole).
    pub fn subject(mut self, kind: SubjectKind, id: impl Into<String>) -> Self {
        self.finding.subject = Some(Subject {
            kind,
            id: id.into(),
        });
        self
    }

    /// Set (or replace) the remediation text.
    pub fn remediation(mut self, remediation: impl Into<String>) -> Self {
        self.finding.remediation = Some(remediation.into());
        self
    }

    /// The finding as built so far (for tests of plugin logic).
    pub fn build(self) -> Finding {
        self.finding
    }

    /// Hand the finding to the host. Once this returns `Ok`, the host owns it.
    pub fn emit(self) -> Result<(), EmitError> {
        results::emit(&self.finding)
    }
}
