//! Validation of OSCAL documents against NIST's published JSON schema of
//! assessment results (tests/fixtures/oscal/, checked by its SHA-256), by an
//! independent validator: ajv with ajv-formats from the npm registry (whose
//! patterns are Unicode regular expressions, as the schema's `\p{L}` needs),
//! installed under target/oscal-validator by scripts/test.sh, or here when
//! it is missing. It is required on CI (`CI=true`) and wherever
//! `REQUIRE_OSCAL_VALIDATOR` is set; elsewhere, without npm, a test says
//! SKIPPED.

use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::repo;

/// The SHA-256 of the vendored schema (tests/fixtures/oscal/README.md).
pub const SCHEMA_SHA256: &str = "d9e34757f0c12aff61f52b821f0b8f83ba0ba75b3a149a202b08ba82f82bc4c3";

/// The validator's packages, pinned.
const PACKAGES: [&str; 2] = ["ajv-cli@5.0.0", "ajv-formats@3.0.1"];

/// The vendored schema, its digest checked.
pub fn schema() -> PathBuf {
    let path = repo().join("tests/fixtures/oscal/oscal_assessment-results_schema.json");
    let digest = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
    assert_eq!(digest, SCHEMA_SHA256, "{} was changed", path.display());
    path
}

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var_os("REQUIRE_OSCAL_VALIDATOR").is_some()
}

/// The ajv executable, installed if missing; `None` (SKIPPED) only where it
/// is not required and npm is not there.
fn validator() -> Option<PathBuf> {
    let dir = repo().join("target/oscal-validator");
    let ajv = dir.join("node_modules/.bin/ajv");
    let formats = dir.join("node_modules/ajv-formats");
    if ajv.exists() && formats.exists() {
        return Some(ajv);
    }
    std::fs::create_dir_all(&dir).unwrap();
    // One install at a time across the test processes.
    let lock = std::fs::File::create(dir.join(".install-lock")).unwrap();
    lock.lock().unwrap();
    if !(ajv.exists() && formats.exists()) {
        let installed = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .args(PACKAGES)
            .output();
        match installed {
            Ok(out) if out.status.success() => {}
            other => {
                let why = match other {
                    Ok(out) => crate::output_text(&out),
                    Err(e) => e.to_string(),
                };
                assert!(
                    !required(),
                    "the OSCAL validator is required but could not be installed: {why}"
                );
                eprintln!("SKIPPED: the OSCAL validator could not be installed ({why})");
                return None;
            }
        }
    }
    Some(ajv)
}

/// `Ok` when `document` (JSON text) is valid against the schema, else the
/// validator's errors; `None` when the validator is not installed here
/// (never where it is required).
pub fn validate(document: &str) -> Option<Result<(), String>> {
    let ajv = validator()?;
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(file.path(), document).unwrap();
    let out = Command::new(&ajv)
        .args([
            "validate",
            "--spec=draft7",
            "--strict=false",
            "-c",
            "ajv-formats",
            "-s",
        ])
        .arg(schema())
        .arg("-d")
        .arg(file.path())
        .output()
        .unwrap();
    let text = crate::output_text(&out);
    Some(match out.status.code() {
        Some(0) if text.contains(" valid") => Ok(()),
        Some(1) if text.contains(" invalid") => Err(text),
        _ => panic!("the OSCAL validator did not run: {text}"),
    })
}

/// Asserts that `document` is valid (or that the validator is not
/// installed here, where it is not required).
pub fn assert_valid(document: &str) {
    if let Some(Err(errors)) = validate(document) {
        panic!("not a valid OSCAL assessment-results document: {errors}\n{document}");
    }
}
