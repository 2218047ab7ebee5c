//! The command line itself (plugin runs are covered by the end-to-end
//! tests in `tests/`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_assessment-runtime"))
}

#[test]
fn help_lists_the_commands() {
    let out = bin().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("run") && text.contains("validate"), "{text}");
}

#[test]
fn run_without_once_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").unwrap();
    let out = bin()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --once"));
}

#[test]
fn a_missing_configuration_file_is_a_clear_error() {
    let out = bin()
        .args(["run", "--once", "--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the agent configuration /nonexistent/agent.toml"),
        "{err}"
    );
}

#[test]
fn an_empty_configuration_runs_nothing_successfully() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").unwrap();
    let out = bin()
        .args(["run", "--once", "--output", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["jobs"], 0);
}
