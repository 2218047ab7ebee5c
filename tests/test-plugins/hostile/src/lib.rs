//! Test plugin: misbehaves on purpose, one way per `mode`, so the
//! end-to-end tests can prove that every per-run bound holds:
//! `memory-hog`, `spin`, `finding-flood`, `log-flood`, `stdout-flood`,
//! `bad-check-id`, `deep-recursion`, `panic`, `fail`, `invalid-config`,
//! `well-behaved`.

use assessment_sdk::{
    Check, Plugin, PluginInfo, RunError, RunSummary, Severity, ValueKind, config, log, register,
};
use std::io::Write;

const HOSTILE: Check = Check::new("hostile", "Hostile behaviour", Severity::Info);

struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile", "0.1.0", "Misbehaves on purpose for tests")
            .check(&HOSTILE)
            .config_option("mode", ValueKind::Text, "how to misbehave")
    }

    fn run() -> Result<RunSummary, RunError> {
        let mode = config::string_or("mode", "well-behaved")?;
        match mode.as_str() {
            "memory-hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    log::debug(&format!("holding {} MiB", hoard.len()));
                }
            }
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "finding-flood" => loop {
                HOSTILE.fail("flood").emit()?;
            },
            "log-flood" => {
                for i in 0..1_000_000u32 {
                    log::info(&format!("log line {i} {}", "x".repeat(100)));
                }
                HOSTILE.pass("survived the log flood").emit()?;
            }
            "stdout-flood" => {
                let line = "y".repeat(1000);
                for _ in 0..10_000 {
                    let _ = writeln!(std::io::stdout(), "{line}");
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
                HOSTILE.pass("survived the stdout flood").emit()?;
            }
            "bad-check-id" => {
                let mut finding = HOSTILE.pass("unknown id").build();
                finding.check_id = "not-announced".to_string();
                assessment_sdk::bindings::assessment::plugin::results::emit(&finding)?;
            }
            "deep-recursion" => {
                let depth = recurse(std::hint::black_box(u64::MAX));
                HOSTILE
                    .pass(format!("returned from depth {depth}"))
                    .emit()?;
            }
            "panic" => panic!("hostile plugin panicked on purpose"),
            "fail" => return Err(RunError::Failed("failed on purpose".to_string())),
            "invalid-config" => {
                return Err(RunError::InvalidConfig(
                    "`mode` is wrong on purpose".to_string(),
                ));
            }
            _ => HOSTILE.pass("behaved").emit()?,
        }
        Ok(RunSummary::default())
    }
}

register!(Hostile);

/// Recursion that only ends by exhausting the stack.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 16]);
    if n == 0 {
        frame[3]
    } else {
        recurse(n - 1).wrapping_add(frame[7])
    }
}
