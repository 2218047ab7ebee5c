//! The run as an OSCAL assessment-results document (`run --output oscal`):
//! each job's findings become the records the daemon would deliver (with
//! the same stream UUIDs and keys), plus those of the findings without a
//! verdict, which the daemon does not deliver; the control plane's export
//! maps its stored evidence with the same `capability_model::wire::oscal`.

use std::time::Duration;

use capability_model::wire::oscal::{self, DocumentInput, ResultInput};

use super::RunReport;
use crate::executor::JobReport;
use crate::results::evidence::{RunContext, attach_provenance, instance_report_records};

/// Whom the document names as the assessor: the runtime and its machine.
#[derive(Debug, Clone, Copy)]
pub struct Assessor<'a> {
    /// The runtime's id: the enrolled id, so that the document's streams
    /// are those of the evidence the daemon delivers, else the host name.
    pub runtime_id: &'a str,
    /// The machine's host name.
    pub host: &'a str,
}

/// When a job ended: its start plus its duration (its start when the start
/// cannot be read).
fn job_end(job: &JobReport) -> String {
    humantime::parse_rfc3339(&job.started_at).map_or_else(
        |_| job.started_at.clone(),
        |start| {
            humantime::format_rfc3339_millis(start + Duration::from_millis(job.duration_ms))
                .to_string()
        },
    )
}

impl RunReport {
    /// The OSCAL document of the run, as pretty JSON.
    pub fn to_oscal(&self, assessor: Assessor<'_>) -> String {
        let mut records = Vec::new();
        for job in &self.jobs {
            // A job that could not start has no plugin build to name; its
            // failure is in the result's remarks.
            let Some(plugin) = &job.id else { continue };
            let end = job_end(job);
            let ctx = RunContext {
                runtime_id: assessor.runtime_id,
                host: assessor.host,
                plugin,
                job_id: &job.job_id,
                start: &job.started_at,
                end: &end,
            };
            let mut job_records = instance_report_records(&ctx, &job.instance, &job.findings);
            attach_provenance(&mut job_records, &job.job_id, &job.provenance);
            records.extend(job_records);
        }
        let failed: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|j| {
                let e = j.error.as_ref()?;
                Some(format!("{} ({})", j.instance, e.kind.as_str()))
            })
            .collect();
        let document = oscal::assessment_results(&DocumentInput {
            title: format!("Assessment Runtime results of {}", assessor.host),
            last_modified: &self.finished_at,
            tool_version: env!("CARGO_PKG_VERSION"),
            results: vec![ResultInput {
                runtime_id: assessor.runtime_id,
                host: assessor.host,
                start: &self.started_at,
                end: &self.finished_at,
                records: &records,
                remarks: (!failed.is_empty()).then(|| {
                    format!(
                        "{} of {} plugin job(s) failed to run; their findings, if any, are the ones they emitted before: {}.",
                        failed.len(),
                        self.jobs.len(),
                        failed.join(", ")
                    )
                }),
            }],
        });
        serde_json::to_string_pretty(&document.to_json())
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use capability_model::wire::JobErrorKind;
    use serde_json::Value;

    use super::*;
    use crate::capabilities::results::{Finding, FindingSeverity, FindingStatus};
    use crate::executor::JobError;
    use crate::plugins::PluginId;
    use crate::results::evidence::instance_evidence_records;

    fn finding(check: &str, status: FindingStatus) -> Finding {
        Finding {
            check_id: check.to_string(),
            title: format!("title of {check}"),
            status,
            severity: FindingSeverity::High,
            subject: None,
            references: Vec::new(),
            message: format!("message of {check}"),
            evidence: Vec::new(),
            remediation: None,
        }
    }

    fn job(instance: &str, findings: Vec<Finding>) -> JobReport {
        JobReport {
            plugin: "sshd-hardening".into(),
            instance: instance.into(),
            path: "p.wasm".into(),
            id: Some(PluginId {
                name: "sshd-hardening".into(),
                version: "0.1.0".into(),
                digest: "sha256:ab".into(),
            }),
            abi: None,
            job_id: format!("job-{instance}"),
            started_at: "2026-11-25T10:00:00.000Z".into(),
            duration_ms: 1500,
            error: None,
            note: None,
            findings,
            denials: Vec::new(),
            denial_count: 0,
            log_dropped_bytes: 0,
            provenance: Default::default(),
        }
    }

    #[test]
    fn every_finding_is_observed_verdicts_are_findings_and_streams_are_the_evidence() {
        let mut failed = job("broken", Vec::new());
        failed.id = None;
        failed.error = Some(JobError {
            kind: JobErrorKind::Load,
            message: "no such file".into(),
        });
        let findings = vec![
            finding("a", FindingStatus::Pass),
            finding("b", FindingStatus::Fail),
            finding("c", FindingStatus::NotApplicable),
        ];
        let mut served = job("sshd-hardening", findings.clone());
        let mut log = crate::capabilities::provenance::ProvenanceLog::default();
        log.environment("PATH", true);
        served.provenance = log.take();
        let provenance =
            crate::results::evidence::provenance_resource("job-sshd-hardening", &served.provenance);
        let report = RunReport::new(SystemTime::now(), Path::new("/"), vec![served, failed]);
        let assessor = Assessor {
            runtime_id: "rt-1",
            host: "web-1",
        };
        let doc: Value = serde_json::from_str(&report.to_oscal(assessor)).unwrap();
        let result = &doc["assessment-results"]["results"][0];
        let observations = result["observations"].as_array().unwrap();
        assert_eq!(observations.len(), 3);
        assert_eq!(result["findings"].as_array().unwrap().len(), 2);
        let prop = |o: &Value, name: &str| {
            o["props"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| p["value"].as_str().unwrap().to_string())
        };
        assert_eq!(
            prop(&observations[2], "status").as_deref(),
            Some("not-applicable")
        );
        // The streams of the evidence the daemon delivers for the same job.
        let plugin = report.jobs[0].id.clone().unwrap();
        let ctx = RunContext {
            runtime_id: "rt-1",
            host: "web-1",
            plugin: &plugin,
            job_id: "job-sshd-hardening",
            start: "2026-11-25T10:00:00.000Z",
            end: "2026-11-25T10:00:01.500Z",
        };
        let evidence = instance_evidence_records(&ctx, "sshd-hardening", &findings);
        assert_eq!(evidence.len(), 2);
        for (o, e) in observations.iter().zip(&evidence) {
            assert_eq!(prop(o, "stream").as_deref(), Some(e.evidence.uuid.as_str()));
            assert_eq!(o["collected"], "2026-11-25T10:00:01.500Z", "the job's end");
        }
        assert!(
            result["remarks"]
                .as_str()
                .unwrap()
                .contains("1 of 2 plugin job(s) failed to run"),
            "{result}"
        );
        assert_eq!(
            doc["assessment-results"]["metadata"]["parties"][0]["name"],
            "Assessment Runtime rt-1 on web-1"
        );
        // The job's provenance: once in the back-matter, referred to by each
        // observation of the job.
        let resources = doc["assessment-results"]["back-matter"]["resources"]
            .as_array()
            .unwrap();
        let exported: Vec<_> = resources
            .iter()
            .filter(|r| r["uuid"] == provenance.uuid)
            .collect();
        assert_eq!(exported.len(), 1, "{resources:#?}");
        assert_eq!(
            exported[0]["base64"]["value"],
            provenance.base64.as_ref().unwrap().value
        );
        for o in observations {
            assert!(
                o["relevant-evidence"]
                    .to_string()
                    .contains(&format!("#{}", provenance.uuid)),
                "{o}"
            );
        }
    }
}
