//! Test plugin: traps in `describe`, before the host knows anything about
//! it. The agent must report a describe error and run the other plugins.

use assessment_sdk::{Plugin, PluginInfo, RunError, RunSummary, register};

struct DescribeTrap;

impl Plugin for DescribeTrap {
    fn describe() -> PluginInfo {
        panic!("describe-trap panics in describe on purpose")
    }

    fn run() -> Result<RunSummary, RunError> {
        Ok(RunSummary::default())
    }
}

register!(DescribeTrap);
