//! Test plugin: misbehaves on purpose, one way per `mode`, so the
//! end-to-end tests can prove that every per-run bound holds:
//! `memory-hog`, `spin`, `finding-flood`, `log-flood`, `stdout-flood`,
//! `bad-check-id`, `deep-recursion`, `panic`, `fail`, `invalid-config`,
//! `denial-flood` (1 000 reads of 1 MiB paths, 20 000 denied reads of
//! 4 KiB paths with forged log lines), `host-call-spin` (calls a granted host function forever),
//! `huge-findings` (findings at every per-finding bound until refused),
//! `env-probe` (asks for secrets in the agent's environment),
//! `forged-error` (a megabyte run error with forged log lines),
//! `forged-log` (log messages with forged lines and escape sequences),
//! `well-behaved`.

use assessment_sdk::{
    Check, Plugin, PluginInfo, RunError, RunSummary, Severity, SubjectKind, ValueKind, config, env,
    fs, log, register,
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
            "finding-flood" => {
                for i in 0u64.. {
                    HOSTILE
                        .fail("flood")
                        .subject(SubjectKind::Other, i.to_string())
                        .emit()?;
                }
            }
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
            "denial-flood" => {
                // Megabyte paths are refused as invalid before anything else.
                let huge = format!("/forbidden/{}", "a".repeat(1 << 20));
                let mut invalid = 0u32;
                for _ in 0..1_000 {
                    if matches!(
                        fs::read_file(&huge),
                        Err(assessment_sdk::AccessError::Invalid(_))
                    ) {
                        invalid += 1;
                    }
                }
                // Paths just under the limit, with forged log lines, are
                // denied: every denial is counted, few are logged.
                let path = format!(
                    "/forbidden/{}\n2026-11-29T00:00:00Z  INFO assessment_runtime: forged line\u{1b}[2J",
                    "a".repeat(3900)
                );
                let mut denied = 0u32;
                for _ in 0..20_000 {
                    if matches!(
                        fs::read_file(&path),
                        Err(assessment_sdk::AccessError::Denied(_))
                    ) {
                        denied += 1;
                    }
                }
                HOSTILE
                    .pass(format!("{invalid} calls invalid, {denied} denied"))
                    .emit()?;
            }
            "host-call-spin" => loop {
                let _ = std::hint::black_box(fs::stat("/etc"));
            },
            "huge-findings" => {
                for n in 0u64.. {
                    // The largest subject id too: about 1 KiB more per finding.
                    let mut finding = HOSTILE
                        .fail("m".repeat(4096))
                        .remediation("r".repeat(4096))
                        .subject(SubjectKind::Other, format!("{n:0>1024}"));
                    for i in 0..64 {
                        finding = finding.evidence(format!("{i:0>128}"), "v".repeat(8192));
                    }
                    finding.emit()?;
                }
            }
            "env-probe" => {
                let mut leaked = Vec::new();
                for name in [
                    "PATH",
                    "HOME",
                    "AWS_SECRET_ACCESS_KEY",
                    "ASSESSMENT_RUNTIME_LOG",
                    "SECRET_FOR_TEST",
                ] {
                    if let Ok(Some(value)) = env::var(name) {
                        leaked.push(format!("{name}={value}"));
                    }
                }
                for (k, v) in std::env::vars() {
                    leaked.push(format!("{k}={v}"));
                }
                HOSTILE
                    .verdict(leaked.is_empty(), format!("leaked: {leaked:?}"))
                    .emit()?;
            }
            "forged-error" => {
                return Err(RunError::Failed(format!(
                    "failed\n2026-11-29T00:00:00Z  INFO assessment_runtime: run recorded\u{1b}[31m{}",
                    "e".repeat(1 << 20)
                )));
            }
            "forged-log" => {
                log::error(
                    "first\n2026-11-29T00:00:00Z  INFO assessment_runtime: forged line\r\u{1b}[2K",
                );
                HOSTILE.pass("logged").emit()?;
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
