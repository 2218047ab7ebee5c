//! One entry function per parser of untrusted input, shared by the property
//! tests (`tests/hostile_input.rs`, on stable, in the normal `cargo test`)
//! and the fuzz targets (`fuzz/fuzz_targets/*.rs`, cargo-fuzz on nightly),
//! which include this file. Each takes raw bytes, runs the parser, and
//! panics when a property is broken:
//!
//! - the parser returns (no panic; the property tests also bound the time);
//! - an error is one of the typed errors that parser documents;
//! - what parses serializes back to text that parses to the same value.

use assessment_registry::audit::{
    AuditReport, DEFAULT_MAX_BYTES, Level, Verdict, abi_compatible, audit,
};
use assessment_registry::manifest::{Manifest, sha256_hex};
use assessment_registry::minisign::{KdfCost, MinisignError, PublicKey, SecretKey, SignatureBox};

/// The password the secret key entry tries (besides none).
pub const PASSWORD: &[u8] = b"correct horse battery staple";

/// A public key whose secret key was thrown away: a signature that parses
/// is checked against it, with the signature's own key id, so that the
/// check reaches the signatures themselves.
const UNRELATED_KEY: &str = "RWTrbeOL4GTAZyCnmbRz0tQiorfluI3RG1IUkZ5TK2ZywJHFnvT+NS4W";

/// Bytes as the parsers' callers see text: a file or variable read as UTF-8.
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// minisign public keys: the file (`untrusted comment:` + base64 line) and
/// the base64 line alone (`minisign -P`).
pub fn public_key(data: &[u8]) {
    match PublicKey::from_text(&text(data)) {
        Ok(key) => {
            assert_eq!(PublicKey::from_text(&key.to_text()).as_ref(), Ok(&key));
            assert_eq!(PublicKey::from_text(&key.to_base64()).as_ref(), Ok(&key));
            assert!(!key.key.is_weak(), "a small-order key was accepted");
        }
        Err(
            MinisignError::Malformed {
                what: "public key", ..
            }
            | MinisignError::UnsupportedAlgorithm {
                what: "public key", ..
            },
        ) => {}
        Err(other) => panic!("the public key parser returned {other:?}"),
    }
}

/// minisign signature files (`.minisig`).
pub fn signature(data: &[u8]) {
    match SignatureBox::from_text(&text(data)) {
        Ok(sig) => {
            assert_eq!(SignatureBox::from_text(&sig.to_text()).as_ref(), Ok(&sig));
            // Whatever it claims, it does not verify under a key that never
            // signed it, even one with its key id.
            let Ok(unrelated) = PublicKey::from_text(UNRELATED_KEY) else {
                panic!("the unrelated key does not parse");
            };
            let key = PublicKey {
                key_id: sig.key_id,
                ..unrelated
            };
            assert!(matches!(
                sig.verify(&key, data),
                Err(MinisignError::BadSignature | MinisignError::BadTrustedComment)
            ));
        }
        Err(
            MinisignError::Malformed {
                what: "signature", ..
            }
            | MinisignError::UnsupportedAlgorithm {
                what: "signature", ..
            },
        ) => {}
        Err(other) => panic!("the signature parser returned {other:?}"),
    }
}

/// minisign secret key files, encrypted (scrypt) or not (the form kept in
/// `PLUGIN_REGISTRY_SECRET_KEY`), read without a password and with one.
pub fn secret_key(data: &[u8]) {
    let text = text(data);
    for password in [None, Some(PASSWORD)] {
        match SecretKey::from_text(&text, password) {
            Ok(key) => {
                // Written back (unencrypted: no scrypt here), it is the same
                // key, and it signs what its public key verifies.
                let Ok(written) = key.to_text(None, KdfCost::Interactive) else {
                    panic!("a parsed key cannot be written back");
                };
                let Ok(back) = SecretKey::from_text(&written, None) else {
                    panic!("a written key does not parse back");
                };
                assert_eq!(back.public_key(), key.public_key());
                let Ok(sig) = back.sign(data, "round trip") else {
                    panic!("a parsed key cannot sign");
                };
                assert_eq!(sig.verify(&key.public_key(), data), Ok(()));
            }
            Err(
                MinisignError::Malformed {
                    what: "secret key", ..
                }
                | MinisignError::UnsupportedAlgorithm { .. }
                | MinisignError::WrongPassword,
            ) => {}
            Err(other) => panic!("the secret key parser returned {other:?}"),
        }
    }
}

/// Plugin manifests (`NAME-VERSION.manifest.json`).
pub fn manifest(data: &[u8]) {
    // `ManifestError` is the only error type; any variant is fine.
    if let Ok(manifest) = Manifest::from_bytes(data) {
        assert_eq!(manifest.validate(), Ok(()));
        let canonical = manifest.to_bytes();
        assert_eq!(Manifest::from_bytes(&canonical).as_ref(), Ok(&manifest));
        assert_eq!(
            Manifest::from_bytes(&canonical).map(|m| m.to_bytes()),
            Ok(canonical)
        );
    }
}

fn check_report(report: &AuditReport, data: &[u8], max_bytes: u64) {
    assert_eq!(report.sha256, sha256_hex(data));
    assert_eq!(report.size, data.len() as u64);
    assert_eq!(report.verdict, Verdict::of(&report.findings));
    assert_eq!(report.accepted(), report.verdict != Verdict::Rejected);
    assert_eq!(report.accepted(), report.first_rejection().is_none());
    if data.len() as u64 > max_bytes {
        let rules: Vec<_> = report.findings.iter().map(|f| f.rule).collect();
        assert_eq!(rules, ["size"], "an oversized component was parsed");
    }
    if report.accepted() {
        let Some(abi) = &report.abi_version else {
            panic!("accepted without an ABI version");
        };
        assert!(abi_compatible(abi));
        assert!(report.findings.iter().all(|f| f.level == Level::Warn));
    }
    assert!(report.to_text().starts_with("verdict: "));
}

/// The component audit, alone, against a manifest describing the bytes, and
/// with a size limit below their size.
pub fn component(data: &[u8]) {
    let report = audit(data, None, DEFAULT_MAX_BYTES);
    check_report(&report, data, DEFAULT_MAX_BYTES);

    let mut described = match Manifest::from_bytes(SAMPLE_MANIFEST.as_bytes()) {
        Ok(m) => m,
        Err(e) => panic!("the sample manifest does not parse: {e}"),
    };
    described.component.sha256 = sha256_hex(data);
    described.component.size = data.len() as u64;
    if let Some(abi) = &report.abi_version {
        described.abi = format!("assessment:plugin@{abi}");
    }
    let against = audit(data, Some(&described), DEFAULT_MAX_BYTES);
    check_report(&against, data, DEFAULT_MAX_BYTES);
    // A manifest that matches cannot turn an accepted component down except
    // for its capabilities.
    if report.accepted() && !against.accepted() {
        assert_eq!(
            against.first_rejection().map(|f| f.rule),
            Some("undeclared-capability")
        );
    }

    let small = (data.len() as u64).saturating_sub(1);
    check_report(&audit(data, None, small), data, small);
}

/// A valid manifest; the component entry fills in the digest and size.
pub const SAMPLE_MANIFEST: &str = r#"{
  "schema": "assessment-runtime/plugin-manifest@1",
  "name": "sample",
  "version": "1.0.0",
  "abi": "assessment:plugin@0.1.0",
  "component": {
    "file": "sample-1.0.0.wasm",
    "sha256": "0000000000000000000000000000000000000000000000000000000000000000",
    "size": 0
  }
}
"#;
