//! `assessment:plugin/results`: findings emitted by a run, validated and
//! bounded, owned by the host once accepted.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::bindings::latest::assessment::plugin::results::{self, EmitError};
use crate::bindings::latest::assessment::plugin::types::{self, Severity, Status};

use super::PluginState;

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
}

/// A finding as the host keeps and reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check, as announced by `describe`.
    pub check_id: String,
    /// One-line title.
    pub title: String,
    /// `pass`, `fail`, `error` or `skipped`.
    pub status: FindingStatus,
    /// `info` … `critical`.
    pub severity: FindingSeverity,
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
            + self.title.len()
            + self.message.len()
            + self.remediation.as_ref().map_or(0, String::len)
            + evidence) as u64
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
#[serde(rename_all = "lowercase")]
pub enum FindingStatus {
    /// Meets the requirement.
    Pass,
    /// Does not meet it.
    Fail,
    /// No verdict.
    Error,
    /// Not applicable or disabled.
    Skipped,
}

impl FindingStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Pass => "pass",
            FindingStatus::Fail => "fail",
            FindingStatus::Error => "error",
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
    known_checks: BTreeSet<String>,
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
    pub fn new(known_checks: BTreeSet<String>, max_findings: u32, max_bytes: u64) -> Self {
        ResultsCtx {
            known_checks,
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

    fn accept(&mut self, finding: types::Finding) -> Result<(), EmitError> {
        if self.findings.len() >= self.max_findings as usize {
            self.limit_reached = true;
            return Err(EmitError::LimitReached(self.max_findings));
        }
        let finding = validate(&self.known_checks, finding).map_err(EmitError::Invalid)?;
        let size = finding.text_bytes();
        if self.used_bytes.saturating_add(size) > self.max_bytes {
            self.limit_reached = true;
            return Err(EmitError::LimitReached(
                u32::try_from(self.findings.len()).unwrap_or(u32::MAX),
            ));
        }
        self.used_bytes += size;
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

fn validate(known: &BTreeSet<String>, f: types::Finding) -> Result<Finding, String> {
    if !known.contains(&f.check_id) {
        return Err(format!(
            "check id {:?} was not announced by describe()",
            f.check_id.chars().take(128).collect::<String>()
        ));
    }
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
            Status::Skipped => FindingStatus::Skipped,
        },
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
            message: "m".into(),
            evidence: vec![types::Evidence {
                key: "k".into(),
                value: "v".into(),
            }],
            remediation: None,
        }
    }

    fn ctx(max: u32) -> ResultsCtx {
        ResultsCtx::new(["a".to_string()].into_iter().collect(), max, 1 << 20)
    }

    #[test]
    fn findings_are_accepted_up_to_the_byte_budget() {
        let mut c = ResultsCtx::new(["a".to_string()].into_iter().collect(), 1000, 10_000);
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
