//! The results of one assessment cycle: a JSON document with a stable,
//! versioned schema (`docs/run-report.md`) and a table for people; an OSCAL
//! assessment-results document ([`oscal`], `docs/oscal.md`) for tools and a
//! self-contained HTML page ([`html`]) for people.

pub mod html;
pub mod oscal;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::capabilities::results::FindingStatus;
use crate::executor::JobReport;
use crate::guest_text::bounded;
use crate::plugins::short_digest;

/// The schema identifier of the JSON document; bumped on any incompatible
/// change.
pub const SCHEMA: &str = "assessment-runtime/run-report@1";

/// Longest plugin text one table cell shows.
const TABLE_TEXT: usize = 4 << 10;

/// Counts over all jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Jobs run (or attempted).
    pub jobs: usize,
    /// Jobs that failed.
    pub jobs_failed: usize,
    /// Findings in all jobs.
    pub findings: usize,
    /// Findings by status.
    pub pass: usize,
    /// Failed checks.
    pub fail: usize,
    /// Checks without a verdict.
    pub error: usize,
    /// Checks that do not apply to the system.
    pub not_applicable: usize,
    /// Skipped checks.
    pub skipped: usize,
}

/// One assessment cycle.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// The assessed system's root.
    pub assessment_root: PathBuf,
    /// Counts.
    pub summary: Summary,
    /// One entry per enabled plugin, in configuration order.
    pub jobs: Vec<JobReport>,
}

impl RunReport {
    /// A report of `jobs` started at `started_at` and finished now.
    pub fn new(started_at: SystemTime, root: &Path, jobs: Vec<JobReport>) -> Self {
        let mut summary = Summary {
            jobs: jobs.len(),
            jobs_failed: jobs.iter().filter(|j| !j.completed()).count(),
            ..Summary::default()
        };
        for finding in jobs.iter().flat_map(|j| &j.findings) {
            summary.findings += 1;
            match finding.status {
                FindingStatus::Pass => summary.pass += 1,
                FindingStatus::Fail => summary.fail += 1,
                FindingStatus::Error => summary.error += 1,
                FindingStatus::NotApplicable => summary.not_applicable += 1,
                FindingStatus::Skipped => summary.skipped += 1,
            }
        }
        RunReport {
            schema: SCHEMA,
            started_at: humantime::format_rfc3339_millis(started_at).to_string(),
            finished_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            assessment_root: root.to_path_buf(),
            summary,
            jobs,
        }
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        for job in &self.jobs {
            let mut who = match &job.id {
                Some(id) => format!("{} {} ({})", id.name, id.version, short_digest(&id.digest)),
                None => job.plugin.clone(),
            };
            // Two runs of one plugin are told apart by their instance.
            if job.instance != job.plugin {
                let _ = write!(who, " as {}", job.instance);
            }
            let state = match &job.error {
                None => format!("completed in {} ms", job.duration_ms),
                Some(e) => format!("FAILED ({})", e.kind.as_str()),
            };
            let _ = writeln!(out, "== {who}: {state}");
            if let Some(e) = &job.error {
                let _ = writeln!(out, "   error: {}", bounded(&e.message, TABLE_TEXT));
            }
            if !job.findings.is_empty() {
                let width = job
                    .findings
                    .iter()
                    .map(|f| f.check_id.len())
                    .max()
                    .unwrap_or(0)
                    .min(40);
                let _ = writeln!(
                    out,
                    "   {:<7}  {:<8}  {:<width$}  MESSAGE",
                    "STATUS", "SEVERITY", "CHECK"
                );
                for f in &job.findings {
                    let status = match f.status {
                        FindingStatus::NotApplicable => "N/A".to_string(),
                        other => other.as_str().to_uppercase(),
                    };
                    let about = f.subject.as_ref().map_or(String::new(), |s| {
                        format!("[{}] ", bounded(&s.id, TABLE_TEXT))
                    });
                    let _ = writeln!(
                        out,
                        "   {:<7}  {:<8}  {:<width$}  {about}{}",
                        status,
                        f.severity.as_str(),
                        bounded(&f.check_id, TABLE_TEXT),
                        bounded(&f.message, TABLE_TEXT)
                    );
                }
            }
            if job.denial_count > 0 {
                let _ = writeln!(
                    out,
                    "   {} call(s) denied by policy, e.g. {}",
                    job.denial_count,
                    bounded(job.denials.first().map_or("", String::as_str), TABLE_TEXT)
                );
            }
            let served = &job.provenance;
            if !served.is_empty() {
                let dropped = served.dropped.total();
                let _ = writeln!(
                    out,
                    "   provenance: {} file(s), {} directory(ies), {} command(s), {} environment variable(s), {} package query(ies), {} denial(s){}",
                    served.files.len(),
                    served.directories.len(),
                    served.commands.len(),
                    served.environment.len(),
                    served.packages.len(),
                    served.denials.len(),
                    if dropped > 0 {
                        format!("; {dropped} more not recorded")
                    } else {
                        String::new()
                    }
                );
            }
            if let Some(note) = &job.note {
                let _ = writeln!(out, "   note: {}", bounded(note, TABLE_TEXT));
            }
            out.push('\n');
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "{} plugin(s), {} failed to run; {} finding(s): {} pass, {} fail, {} error, {} not applicable, {} skipped",
            s.jobs, s.jobs_failed, s.findings, s.pass, s.fail, s.error, s.not_applicable, s.skipped
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(instance: &str) -> JobReport {
        JobReport {
            plugin: "sshd-hardening".into(),
            instance: instance.into(),
            path: "p.wasm".into(),
            id: None,
            abi: None,
            job_id: "j".into(),
            started_at: "now".into(),
            duration_ms: 1,
            error: None,
            note: None,
            findings: Vec::new(),
            denials: Vec::new(),
            denial_count: 0,
            log_dropped_bytes: 0,
            provenance: Default::default(),
        }
    }

    #[test]
    fn instances_of_one_plugin_are_told_apart_in_the_table_and_the_json() {
        let report = RunReport::new(
            SystemTime::now(),
            Path::new("/"),
            vec![job("sshd-hardening"), job("sshd-jail")],
        );
        let table = report.to_table();
        assert!(
            table.contains("== sshd-hardening: completed"),
            "the name alone when it is the instance: {table}"
        );
        assert!(
            table.contains("== sshd-hardening as sshd-jail: completed"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["jobs"][0]["instance"], "sshd-hardening");
        assert_eq!(json["jobs"][1]["instance"], "sshd-jail");
        assert_eq!(json["jobs"][1]["plugin"], "sshd-hardening");
    }

    #[test]
    fn the_jobs_provenance_is_in_the_json_and_summed_up_in_the_table() {
        let mut served = job("sshd-hardening");
        let mut log = crate::capabilities::provenance::ProvenanceLog::default();
        log.file(
            "read-file",
            Path::new("/etc/ssh/sshd_config"),
            None,
            None,
            Some(b"PermitRootLogin no"),
            None,
        );
        log.environment("PATH", true);
        served.provenance = log.take();
        served.provenance.dropped.commands = 2;
        let report = RunReport::new(
            SystemTime::now(),
            Path::new("/"),
            vec![served, job("quiet")],
        );
        let table = report.to_table();
        assert!(
            table.contains("   provenance: 1 file(s), 0 directory(ies), 0 command(s), 1 environment variable(s), 0 package query(ies), 0 denial(s); 2 more not recorded\n"),
            "{table}"
        );
        assert_eq!(
            table.matches("provenance:").count(),
            1,
            "none for a job that touched nothing"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let p = &json["jobs"][0]["provenance"];
        assert_eq!(p["files"][0]["path"], "/etc/ssh/sshd_config");
        assert_eq!(p["environment"][0]["name"], "PATH");
        assert_eq!(p["dropped"]["commands"], 2);
        assert_eq!(
            json["jobs"][1]["provenance"]["files"],
            serde_json::json!([])
        );
    }
}
