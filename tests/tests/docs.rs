//! The documents claim only what tests show: every test the threat model
//! names exists.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;

use assessment_e2e::repo;

/// Every `fn name(` in the repository's Rust sources.
fn test_functions() -> std::collections::BTreeSet<String> {
    fn walk(dir: &Path, out: &mut std::collections::BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !matches!(
                    name.as_ref(),
                    "target" | "node_modules" | ".git" | "fixtures"
                ) {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for line in text.lines() {
                    let line = line.trim_start();
                    let rest = line
                        .strip_prefix("fn ")
                        .or_else(|| line.strip_prefix("async fn "))
                        .or_else(|| line.strip_prefix("pub fn "));
                    if let Some(rest) = rest {
                        let ident: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        out.insert(ident);
                    }
                }
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(&repo(), &mut out);
    out
}

#[test]
fn every_test_the_threat_model_names_exists() {
    let text = std::fs::read_to_string(repo().join("docs/threat-model.md")).unwrap();
    let functions = test_functions();
    let mut named = 0;
    let mut missing = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('|')) {
        // Test names are sentences: snake case with three or more
        // underscores (code identifiers such as `verify_strict` are short).
        for quoted in line.split('`').skip(1).step_by(2) {
            let is_name = quoted
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && quoted.matches('_').count() >= 3;
            if is_name {
                named += 1;
                if !functions.contains(quoted) {
                    missing.push(quoted.to_string());
                }
            }
        }
    }
    assert!(
        named > 50,
        "only {named} test names found: is the table format unchanged?"
    );
    assert!(
        missing.is_empty(),
        "the threat model names tests that do not exist: {missing:?}"
    );
}
