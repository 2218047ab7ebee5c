//! An audit as GitHub Actions shows it: workflow commands
//! (`::error file=…,title=…::message`), which become annotations on the run
//! and the pull request, and a Markdown job summary
//! (`$GITHUB_STEP_SUMMARY`).
//!
//! Escaping follows the runner's own (`@actions/core`, `command.ts`): in
//! the message `%`, `\r` and `\n` become `%25`, `%0D`, `%0A`; in a property
//! value `:` and `,` also become `%3A` and `%2C`, since they end a property
//! or the command. A plugin's text (a rule message quotes import names)
//! cannot end the command early or start another one.

use std::path::Path;

use crate::audit::{AuditReport, Level};

/// A workflow command's message.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value (`file=`, `title=`).
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// Where a finding of `rule` is fixed, in a plugin whose directory has
/// these files: `plugin.toml` for what it declares, the plugin's source for
/// what it imports or exports.
pub fn file_for_rule<'a>(
    rule: &str,
    plugin_toml: Option<&'a Path>,
    source: Option<&'a Path>,
) -> Option<&'a Path> {
    match rule {
        "undeclared-capability"
        | "unusable-capability"
        | "unused-capability"
        | "capability-widening"
        | "manifest-abi" => plugin_toml,
        "imports" | "abi-export" | "abi-version" | "start-function" => source.or(plugin_toml),
        _ => None,
    }
}

/// One workflow command per finding (`::error` for a rejection,
/// `::warning` for a flag), then a `::notice` with the verdict. `file_of`
/// says which file a rule's finding belongs to, if any.
pub fn annotations<'a>(
    report: &AuditReport,
    component: &str,
    file_of: impl Fn(&str) -> Option<&'a Path>,
) -> String {
    let mut out = String::new();
    for finding in &report.findings {
        let command = match finding.level {
            Level::Reject => "error",
            Level::Warn => "warning",
        };
        let mut properties = Vec::new();
        if let Some(file) = file_of(finding.rule) {
            properties.push(format!(
                "file={}",
                escape_property(&file.display().to_string())
            ));
        }
        properties.push(format!(
            "title={}",
            escape_property(&format!("plugin audit: {}", finding.rule))
        ));
        out.push_str(&format!(
            "::{command} {}::{}\n",
            properties.join(","),
            escape_data(&format!("{component}: {}", finding.message))
        ));
    }
    out.push_str(&format!(
        "::notice title={}::{}\n",
        escape_property("plugin audit"),
        escape_data(&format!(
            "{component}: {} (sha256 {})",
            report.verdict, report.sha256
        ))
    ));
    out
}

/// Markdown table cell: no line breaks, no column separators, and no
/// HTML a plugin's text could smuggle into the summary.
fn cell(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

/// The job summary of one audit.
pub fn summary(report: &AuditReport, component: &str) -> String {
    let mut out = format!(
        "### Plugin audit: {}\n\n**Verdict: {}**{}\n\n| | |\n| --- | --- |\n| SHA-256 | `{}` |\n| Size | {} bytes |\n| ABI | {} |\n| Imports | {} |\n\n",
        cell(component),
        report.verdict,
        match report.verdict {
            crate::audit::Verdict::Accepted => " — signed and published without review",
            crate::audit::Verdict::Flagged =>
                " — published only after a reviewer approves (environment `plugin-review`)",
            crate::audit::Verdict::Rejected => " — not signed",
        },
        report.sha256,
        report.size,
        report
            .abi_version
            .as_deref()
            .map_or("unknown".to_string(), |v| format!(
                "`{}@{}`",
                crate::audit::ABI_PACKAGE,
                cell(v)
            )),
        if report.imports.is_empty() {
            "none".to_string()
        } else {
            report
                .imports
                .iter()
                .map(|i| format!("`{}`", cell(i)))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    if report.findings.is_empty() {
        out.push_str("No findings.\n\n");
    } else {
        out.push_str("| Level | Rule | Finding |\n| --- | --- | --- |\n");
        for f in &report.findings {
            out.push_str(&format!(
                "| {} | `{}` | {} |\n",
                match f.level {
                    Level::Reject => "reject",
                    Level::Warn => "warn",
                },
                f.rule,
                cell(&f.message)
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditFinding, Verdict};

    fn report(findings: Vec<AuditFinding>) -> AuditReport {
        AuditReport {
            verdict: Verdict::of(&findings),
            sha256: "ab".repeat(32),
            size: 10,
            abi_version: Some("0.2.0".into()),
            imports: vec!["assessment:plugin/filesystem@0.2.0".into()],
            exports: vec![],
            findings,
        }
    }

    #[test]
    fn escaping_is_the_runners() {
        assert_eq!(escape_data("100%\r\nnext::x"), "100%25%0D%0Anext::x");
        assert_eq!(
            escape_property("a:b,c%\n"),
            "a%3Ab%2Cc%25%0A",
            "colons and commas end a property"
        );
    }

    #[test]
    fn each_finding_is_one_command_on_its_file() {
        let r = report(vec![
            AuditFinding {
                rule: "imports",
                level: Level::Reject,
                message: "imports `wasi:http/types@0.2.0`\n::error::forged".into(),
            },
            AuditFinding {
                rule: "unused-capability",
                level: Level::Warn,
                message: "declares, 100% unused".into(),
            },
        ]);
        let toml = Path::new("plugins/demo/plugin.toml");
        let src = Path::new("plugins/demo/src/lib.rs");
        let text = annotations(&r, "demo.wasm", |rule| {
            file_for_rule(rule, Some(toml), Some(src))
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "::error file=plugins/demo/src/lib.rs,title=plugin audit%3A imports::demo.wasm: imports `wasi:http/types@0.2.0`%0A::error::forged"
        );
        assert_eq!(
            lines[1],
            "::warning file=plugins/demo/plugin.toml,title=plugin audit%3A unused-capability::demo.wasm: declares, 100%25 unused"
        );
        assert!(
            lines[2].starts_with("::notice title=plugin audit::demo.wasm: rejected (sha256 abab")
        );
    }

    #[test]
    fn the_summary_is_a_table_plugins_cannot_break() {
        let r = report(vec![AuditFinding {
            rule: "imports",
            level: Level::Warn,
            message: "a | b\n<img src=x>".into(),
        }]);
        let md = summary(&r, "demo.wasm");
        assert!(md.contains("**Verdict: flagged**"), "{md}");
        assert!(md.contains("environment `plugin-review`"), "{md}");
        assert!(
            md.contains("| warn | `imports` | a \\| b &lt;img src=x&gt; |"),
            "{md}"
        );
    }
}
