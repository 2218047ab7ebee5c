//! Test plugin: `describe` answers with megabytes (a 4 MiB description and
//! 20 000 checks with long titles, with forged log lines in them). The
//! agent must refuse it as a describe error without carrying the text
//! anywhere.

use assessment_sdk::{Check, Plugin, PluginInfo, RunError, RunSummary, Severity, register};

struct DescribeHuge;

impl Plugin for DescribeHuge {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            "describe-huge",
            "0.1.0",
            &format!("{}\n2026-11-29T00:00:00Z  INFO forged", "d".repeat(4 << 20)),
        );
        let checks: Vec<Check> = (0..20_000)
            .map(|i| {
                let id: &'static str = Box::leak(format!("check-{i}").into_boxed_str());
                let title: &'static str = Box::leak("t".repeat(200).into_boxed_str());
                Check::new(id, title, Severity::Info)
            })
            .collect();
        info = info.checks(checks.iter());
        info
    }

    fn run() -> Result<RunSummary, RunError> {
        Ok(RunSummary::default())
    }
}

register!(DescribeHuge);
