//! The run as one self-contained HTML page (`run --output html`) for
//! people: the summary, each job's status, then every finding, failing
//! checks first (by severity), with their remediation and references.
//!
//! Inline CSS, no script, no external resource: the file can be mailed or
//! archived and reads the same anywhere. Everything a plugin chose is
//! escaped; a reference's URL is a link only when it is `http` or `https`.

use std::fmt::Write as _;

use html_escape::{encode_double_quoted_attribute, encode_text};

use super::RunReport;
use crate::capabilities::results::{Finding, FindingSeverity, FindingStatus};
use crate::executor::JobReport;
use crate::guest_text::bounded;
use crate::plugins::short_digest;

/// Longest plugin text one field of the page shows.
const HTML_TEXT: usize = 16 << 10;

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1b1f24;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
.meta{color:#57606a;margin-top:0}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #d8dee4;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{border:1px solid #d0d7de;border-radius:6px;padding:.5rem .9rem;min-width:6rem}
.card b{display:block;font-size:1.4rem}
.badge{display:inline-block;border-radius:1rem;padding:.05rem .6rem;font-size:.8rem;font-weight:600;white-space:nowrap}
.fail,.failed{background:#ffebe9;color:#a40e26}.error{background:#fff8c5;color:#7d4e00}.pass,.completed{background:#dafbe1;color:#116329}
.not-applicable,.skipped{background:#eaeef2;color:#424a53}
.finding{border:1px solid #d0d7de;border-left:6px solid #8c959f;border-radius:6px;padding:.6rem 1rem;margin:.8rem 0}
.finding.s-fail{border-left-color:#cf222e}.finding.s-error{border-left-color:#bf8700}.finding.s-pass{border-left-color:#1a7f37}
.finding h3{font-size:1rem;margin:.2rem 0}.check{font-family:ui-monospace,monospace;color:#57606a}
.label{font-weight:600}pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;padding:.4rem .6rem;border-radius:4px;margin:.3rem 0}
ul{margin:.2rem 0}
@media print{.finding{break-inside:avoid}}
";

/// Failing checks first, then those without a verdict, then the rest.
fn status_rank(status: FindingStatus) -> u8 {
    match status {
        FindingStatus::Fail => 0,
        FindingStatus::Error => 1,
        FindingStatus::Pass => 2,
        FindingStatus::NotApplicable => 3,
        FindingStatus::Skipped => 4,
    }
}

/// The most severe first.
fn severity_rank(severity: FindingSeverity) -> u8 {
    match severity {
        FindingSeverity::Critical => 0,
        FindingSeverity::High => 1,
        FindingSeverity::Medium => 2,
        FindingSeverity::Low => 3,
        FindingSeverity::Info => 4,
    }
}

/// Plugin text, bounded and escaped for an element's content.
fn text(s: &str) -> String {
    encode_text(&bounded(s, HTML_TEXT)).into_owned()
}

fn job_name(job: &JobReport) -> String {
    let mut who = match &job.id {
        Some(id) => format!("{} {}", id.name, id.version),
        None => job.plugin.clone(),
    };
    if job.instance != job.plugin {
        let _ = write!(who, " as {}", job.instance);
    }
    who
}

impl RunReport {
    /// The page.
    pub fn to_html(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>Assessment report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
             <h1>Assessment report</h1>\n<p class=\"meta\">{} to {}, assessing <code>{}</code></p>\n",
            text(&self.started_at),
            text(&self.finished_at),
            text(&self.assessment_root.display().to_string()),
        );
        let _ = write!(out, "<h2>Summary</h2>\n<div class=\"cards\">");
        for (label, count, class) in [
            ("failed", s.fail, "fail"),
            ("errors", s.error, "error"),
            ("passed", s.pass, "pass"),
            ("not applicable", s.not_applicable, "not-applicable"),
            ("skipped", s.skipped, "skipped"),
            ("plugins", s.jobs, ""),
            ("plugins failed to run", s.jobs_failed, "failed"),
        ] {
            let _ = write!(
                out,
                "<div class=\"card {class}\"><b>{count}</b>{label}</div>"
            );
        }
        out.push_str("</div>\n");
        self.write_jobs(&mut out);
        self.write_findings(&mut out);
        out.push_str("</body>\n</html>\n");
        out
    }

    fn write_jobs(&self, out: &mut String) {
        out.push_str(
            "<h2>Plugins</h2>\n<table>\n<thead><tr><th>Plugin</th><th>Digest</th><th>Status</th><th>Findings</th><th>Denied calls</th></tr></thead>\n<tbody>\n",
        );
        for job in &self.jobs {
            let digest = job
                .id
                .as_ref()
                .map_or(String::new(), |id| text(short_digest(&id.digest)));
            let status = match &job.error {
                None => format!(
                    "<span class=\"badge completed\">completed</span> in {} ms",
                    job.duration_ms
                ),
                Some(e) => format!(
                    "<span class=\"badge failed\">failed: {}</span><pre>{}</pre>",
                    e.kind.as_str(),
                    text(&e.message)
                ),
            };
            let note = job
                .note
                .as_deref()
                .map_or(String::new(), |n| format!("<br>note: {}", text(n)));
            let denials = match job.denials.first() {
                Some(first) if job.denial_count > 0 => {
                    format!("{}, e.g. <code>{}</code>", job.denial_count, text(first))
                }
                _ => job.denial_count.to_string(),
            };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><code>{digest}</code></td><td>{status}{note}</td><td>{}</td><td>{denials}</td></tr>",
                text(&job_name(job)),
                job.findings.len(),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    fn write_findings(&self, out: &mut String) {
        let mut findings: Vec<(&JobReport, &Finding)> = self
            .jobs
            .iter()
            .flat_map(|j| j.findings.iter().map(move |f| (j, f)))
            .collect();
        // Stable: equal findings keep the plugins' order.
        findings.sort_by_key(|(_, f)| (status_rank(f.status), severity_rank(f.severity)));
        out.push_str("<h2>Findings</h2>\n");
        if findings.is_empty() {
            out.push_str("<p>No plugin reported a finding.</p>\n");
        }
        for (job, f) in findings {
            let status = f.status.as_str();
            let _ = write!(
                out,
                "<section class=\"finding s-{status}\">\n<span class=\"badge {status}\">{status}</span> \
                 <span class=\"badge\">{}</span> <span class=\"check\">{}</span> · {}\n<h3>{}</h3>\n",
                f.severity.as_str(),
                text(&f.check_id),
                text(&job_name(job)),
                text(&f.title),
            );
            if let Some(subject) = &f.subject {
                let _ = writeln!(
                    out,
                    "<div><span class=\"label\">Subject:</span> {} <code>{}</code></div>",
                    subject.kind.as_str(),
                    text(&subject.id)
                );
            }
            let _ = writeln!(out, "<pre>{}</pre>", text(&f.message));
            if let Some(remediation) = &f.remediation {
                let _ = writeln!(
                    out,
                    "<div><span class=\"label\">Remediation:</span><pre>{}</pre></div>",
                    text(remediation)
                );
            }
            if !f.references.is_empty() {
                out.push_str("<div><span class=\"label\">References:</span><ul>");
                for r in &f.references {
                    let label = text(&r.label());
                    match r.url.as_deref().filter(|u| {
                        let lower = u.to_ascii_lowercase();
                        lower.starts_with("https://") || lower.starts_with("http://")
                    }) {
                        Some(url) => {
                            let _ = write!(
                                out,
                                "<li><a href=\"{}\" rel=\"noreferrer\">{label}</a></li>",
                                encode_double_quoted_attribute(&bounded(url, HTML_TEXT))
                            );
                        }
                        None => {
                            let _ = write!(out, "<li>{label}</li>");
                        }
                    }
                }
                out.push_str("</ul></div>\n");
            }
            if !f.evidence.is_empty() {
                out.push_str("<table><tbody>");
                for e in &f.evidence {
                    let _ = write!(
                        out,
                        "<tr><th>{}</th><td><code>{}</code></td></tr>",
                        text(&e.key),
                        text(&e.value)
                    );
                }
                out.push_str("</tbody></table>\n");
            }
            out.push_str("</section>\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use super::*;
    use crate::capabilities::results::{EvidenceItem, Reference};
    use crate::executor::JobError;
    use capability_model::wire::JobErrorKind;

    fn finding(check: &str, status: FindingStatus, severity: FindingSeverity) -> Finding {
        Finding {
            check_id: check.to_string(),
            title: format!("title of {check}"),
            status,
            severity,
            subject: None,
            references: Vec::new(),
            message: format!("message of {check}"),
            evidence: Vec::new(),
            remediation: None,
        }
    }

    fn job(findings: Vec<Finding>) -> JobReport {
        JobReport {
            plugin: "sshd-hardening".into(),
            instance: "sshd-hardening".into(),
            path: "p.wasm".into(),
            id: None,
            abi: None,
            job_id: "j".into(),
            started_at: "2026-11-25T10:00:00.000Z".into(),
            duration_ms: 3,
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
    fn failing_checks_come_first_by_severity_with_the_summary_and_each_job() {
        let mut broken = job(Vec::new());
        broken.instance = "broken".into();
        broken.error = Some(JobError {
            kind: JobErrorKind::Trap,
            message: "the plugin trapped".into(),
        });
        let report = RunReport::new(
            SystemTime::now(),
            Path::new("/"),
            vec![
                job(vec![
                    finding("ok-check", FindingStatus::Pass, FindingSeverity::Critical),
                    finding("low-fail", FindingStatus::Fail, FindingSeverity::Low),
                    finding("na", FindingStatus::NotApplicable, FindingSeverity::High),
                    finding(
                        "critical-fail",
                        FindingStatus::Fail,
                        FindingSeverity::Critical,
                    ),
                    finding("erred", FindingStatus::Error, FindingSeverity::Medium),
                ]),
                broken,
            ],
        );
        let html = report.to_html();
        let at = |needle: &str| {
            html.find(needle)
                .unwrap_or_else(|| panic!("{needle} missing"))
        };
        let order = [
            "<h3>title of critical-fail",
            "<h3>title of low-fail",
            "<h3>title of erred",
            "<h3>title of ok-check",
            "<h3>title of na",
        ];
        for pair in order.windows(2) {
            assert!(at(pair[0]) < at(pair[1]), "{pair:?}");
        }
        assert!(html.contains("<b>2</b>failed"), "the summary");
        assert!(html.contains("<b>1</b>plugins failed to run"));
        assert!(html.contains("failed: trap</span><pre>the plugin trapped</pre>"));
        assert!(html.contains("<span class=\"badge completed\">completed</span> in 3 ms"));
        // Self-contained: no script, nothing fetched.
        for absent in ["<script", "<link", "src=", "@import", "url("] {
            assert!(!html.contains(absent), "{absent}");
        }
    }

    #[test]
    fn plugin_text_is_escaped_and_only_web_urls_are_links() {
        let hostile = "<script>alert(1)</script>\"'&";
        let mut f = finding("x", FindingStatus::Fail, FindingSeverity::High);
        f.title = hostile.to_string();
        f.check_id = format!("c{hostile}");
        f.message = hostile.to_string();
        f.remediation = Some(format!("</pre>{hostile}"));
        f.evidence = vec![EvidenceItem {
            key: hostile.to_string(),
            value: hostile.to_string(),
        }];
        f.references = vec![
            Reference {
                benchmark: hostile.to_string(),
                id: "1".into(),
                url: Some("javascript:alert(1)".into()),
            },
            Reference {
                benchmark: "CIS".into(),
                id: "2".into(),
                url: Some("https://example.org/?a=\"><script>".into()),
            },
        ];
        let mut j = job(vec![f]);
        j.note = Some(hostile.to_string());
        j.instance = hostile.to_string();
        let html = RunReport::new(SystemTime::now(), Path::new("/"), vec![j]).to_html();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("javascript:alert(1)\""), "not a link");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains("<li>&lt;script&gt;"),
            "the label stays, as text"
        );
        assert!(
            html.contains("href=\"https://example.org/?a=&quot;&gt;&lt;script&gt;\""),
            "{html}"
        );
        assert_eq!(
            html.matches("</pre>").count(),
            html.matches("<pre>").count()
        );
    }
}
