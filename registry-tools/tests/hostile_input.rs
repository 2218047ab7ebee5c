//! Hostile input: property tests of every parser of untrusted input in this
//! crate (minisign public keys, signatures and secret keys, the plugin
//! manifest, the component audit). Each property runs a bounded number of
//! cases on stable in the normal `cargo test`; the same entry functions
//! (`hostile/entries.rs`) are the fuzz targets of `fuzz/` (cargo-fuzz, on
//! nightly).
//!
//! Properties: the parser never panics, returns within [`LIMIT`] (no hang),
//! fails with the parser's typed error, and what parses (or what this crate
//! writes) reads back to the same value.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "hostile/entries.rs"]
mod entries;

use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use assessment_registry::audit::{DEFAULT_MAX_BYTES, audit};
use assessment_registry::manifest::{
    Capabilities, ComponentRef, MANIFEST_SCHEMA, Manifest, ManifestError, Source,
};
use assessment_registry::minisign::{KdfCost, MinisignError, PublicKey, SecretKey, SignatureBox};
use base64::Engine as _;
use blake2::Digest as _;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;

/// No single parse may take longer than this (a hang fails the property).
const LIMIT: Duration = Duration::from_secs(10);

/// Run `entry` on `data` in a thread and fail if it panics or outlives
/// [`LIMIT`].
fn within_limit(entry: fn(&[u8]), data: &[u8]) {
    let owned = data.to_vec();
    let (done, finished) = channel();
    let worker = std::thread::spawn(move || {
        entry(&owned);
        let _ = done.send(());
    });
    match finished.recv_timeout(LIMIT) {
        Ok(()) => worker.join().unwrap(),
        Err(RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("no answer within {LIMIT:?} on {} bytes", data.len())
        }
    }
}

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------- mutations

/// One change to a valid input.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR the byte at (index mod len) with a non-zero mask.
    Flip(usize, u8),
    /// Cut at (index mod len + 1).
    Truncate(usize),
    /// Insert bytes at (index mod len + 1).
    Insert(usize, Vec<u8>),
    /// Remove up to n bytes from (index mod len).
    Remove(usize, usize),
    /// Copy a run of bytes over another place (repeats structures).
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1..=255u8).prop_map(|(i, m)| Mutation::Flip(i, m)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<usize>(), 1..16usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<usize>(), any::<usize>(), 1..32usize)
            .prop_map(|(from, to, n)| Mutation::Splice(from, to, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match m {
            Mutation::Flip(i, mask) => bytes[i % len] ^= mask,
            Mutation::Truncate(i) => bytes.truncate(i % len + 1),
            Mutation::Insert(i, b) => {
                let at = i % len + 1;
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let at = i % len;
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Splice(from, to, n) => {
                let from = from % len;
                let run: Vec<u8> = bytes[from..(from + n).min(len)].to_vec();
                let to = to % len;
                let end = (to + run.len()).min(len);
                bytes[to..end].copy_from_slice(&run[..end - to]);
            }
        }
    }
    bytes
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..5)
}

// ------------------------------------------------------------- public keys

/// Key encodings that reach the point checks: random bytes (about half
/// decode to a point), honest keys, small-order points, points with a
/// torsion component, non-canonical encodings and a flipped sign bit.
fn key_bytes() -> impl Strategy<Value = [u8; 32]> {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    prop_oneof![
        any::<[u8; 32]>(),
        any::<u64>().prop_map(|a| (ED25519_BASEPOINT_POINT * Scalar::from(a))
            .compress()
            .to_bytes()),
        (0..8usize).prop_map(|i| EIGHT_TORSION[i].compress().to_bytes()),
        (any::<u64>(), 1..8usize).prop_map(|(a, i)| (ED25519_BASEPOINT_POINT * Scalar::from(a)
            + EIGHT_TORSION[i])
            .compress()
            .to_bytes()),
        // y = p + k for k < 19 (p = 2^255 - 19), either sign.
        (0..19u8, any::<bool>()).prop_map(|(k, negative)| {
            let mut b = [0xff; 32];
            b[0] = 0xed + k;
            b[31] = if negative { 0xff } else { 0x7f };
            b
        }),
        any::<u64>().prop_map(|a| {
            let mut b = (ED25519_BASEPOINT_POINT * Scalar::from(a))
                .compress()
                .to_bytes();
            b[31] ^= 0x80;
            b
        }),
    ]
}

/// A public key file or line: `Ed` (or something else), a key id, a key,
/// wrapped with or without the comment line, with CRLF or stray spaces.
fn public_key_text() -> impl Strategy<Value = String> {
    let algorithm = prop_oneof![
        4 => Just(*b"Ed"),
        1 => any::<[u8; 2]>()
    ];
    let payload = prop_oneof![
        8 => (algorithm, any::<[u8; 8]>(), key_bytes()).prop_map(|(alg, id, key)| {
            let mut b = alg.to_vec();
            b.extend_from_slice(&id);
            b.extend_from_slice(&key);
            b
        }),
        1 => vec(any::<u8>(), 0..64),
    ];
    (payload, 0..4u8, ".{0,40}").prop_map(|(payload, shape, comment)| {
        let line = b64(&payload);
        match shape {
            0 => line,
            1 => format!("untrusted comment: {comment}\n{line}\n"),
            2 => format!("untrusted comment:{comment}\r\n{line}\r\n"),
            _ => format!("  {line}  \n"),
        }
    })
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_public_key_parser(data in vec(any::<u8>(), 0..256)) {
        within_limit(entries::public_key, &data);
    }

    #[test]
    fn arbitrary_key_encodings_never_panic_the_public_key_parser(text in public_key_text()) {
        within_limit(entries::public_key, text.as_bytes());
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn public_keys_round_trip_through_text_and_base64(
        seed in any::<[u8; 32]>(),
        key_id in any::<[u8; 8]>(),
    ) {
        let key = PublicKey {
            key_id,
            key: ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key(),
        };
        prop_assert_eq!(PublicKey::from_text(&key.to_text()), Ok(key.clone()));
        prop_assert_eq!(PublicKey::from_text(&key.to_base64()), Ok(key.clone()));
        within_limit(entries::public_key, key.to_text().as_bytes());
    }
}

// -------------------------------------------------------------- secret keys

/// The unencrypted secret key file of `seed` (the form kept in
/// `PLUGIN_REGISTRY_SECRET_KEY`), built here byte by byte from minisign's
/// layout rather than by the code under test.
fn unencrypted_key_text(seed: &[u8; 32], key_id: &[u8; 8]) -> String {
    let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
    let mut checksum = blake2::Blake2b::<blake2::digest::consts::U32>::new();
    checksum.update(b"Ed");
    checksum.update(key_id);
    checksum.update(seed);
    checksum.update(public.as_bytes());
    let mut bytes = b"Ed\0\0B2".to_vec();
    bytes.extend_from_slice(&[0; 48]);
    bytes.extend_from_slice(key_id);
    bytes.extend_from_slice(seed);
    bytes.extend_from_slice(public.as_bytes());
    bytes.extend_from_slice(&checksum.finalize());
    format!(
        "untrusted comment: minisign unencrypted secret key\n{}\n",
        b64(&bytes)
    )
}

/// scrypt limits that cost a millisecond or so (opslimit at most libsodium's
/// minimum; memlimit at most 1 MiB): the parser runs scrypt for them.
fn cheap_limits() -> impl Strategy<Value = (u64, u64)> {
    (0..=32_768u64, 0..=1u64 << 20)
}

/// Limits over the cap (libsodium's sensitive limits): N above 2^20 or
/// N · r · p above 2^23. Without the cap these ask for up to exabytes.
fn hostile_limits() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        // Work: opslimit / 4 is about N · r · p.
        ((1u64 << 27)..=u64::MAX, any::<u64>()),
        // Memory: N from memlimit when opslimit is at least memlimit / 32.
        ((1u64 << 31)..=u64::MAX, any::<u64>())
            .prop_map(|(mem, extra)| ((mem / 32).saturating_add(extra % (1 << 40)), mem)),
    ]
}

/// A secret key file's 158 bytes with each field drawn from valid and
/// invalid values, and the scrypt limits either cheap or over the cap.
fn secret_key_fields() -> impl Strategy<Value = Vec<u8>> {
    let two = |valid: &'static [u8; 2]| prop_oneof![3 => Just(*valid), 1 => any::<[u8; 2]>()];
    let kdf = prop_oneof![Just(*b"Sc"), Just([0u8, 0]), any::<[u8; 2]>()];
    let limits = prop_oneof![cheap_limits(), hostile_limits()];
    (
        two(b"Ed"),
        kdf,
        two(b"B2"),
        any::<[u8; 32]>(),
        limits,
        vec(any::<u8>(), 104),
    )
        .prop_map(|(alg, kdf, chk, salt, (ops, mem), keynum)| {
            let mut b = Vec::with_capacity(158);
            b.extend_from_slice(&alg);
            b.extend_from_slice(&kdf);
            b.extend_from_slice(&chk);
            b.extend_from_slice(&salt);
            b.extend_from_slice(&ops.to_le_bytes());
            b.extend_from_slice(&mem.to_le_bytes());
            b.extend_from_slice(&keynum);
            b
        })
}

fn cheap_cost() -> KdfCost {
    KdfCost::Limits {
        opslimit: 32_768,
        memlimit: 1 << 20,
    }
}

/// One key, and its file encrypted with [`entries::PASSWORD`] at
/// [`cheap_cost`], made once: scrypt is the slow part of these tests.
fn encrypted_key() -> &'static (SecretKey, Vec<u8>) {
    static KEY: std::sync::OnceLock<(SecretKey, Vec<u8>)> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let key = SecretKey::from_text(&unencrypted_key_text(&[9; 32], b"cached!!"), None).unwrap();
        let text = key.to_text(Some(entries::PASSWORD), cheap_cost()).unwrap();
        let body = text.lines().nth(1).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        (key, bytes)
    })
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_secret_key_parser(data in vec(any::<u8>(), 0..400)) {
        within_limit(entries::secret_key, &data);
    }
}

proptest! {
    #![proptest_config(cases(500))]

    #[test]
    fn arbitrary_key_fields_never_panic_the_secret_key_parser(
        bytes in secret_key_fields(),
        comment in ".{0,20}",
    ) {
        let text = format!("untrusted comment: {comment}\n{}\n", b64(&bytes));
        within_limit(entries::secret_key, text.as_bytes());
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn hostile_scrypt_parameters_are_refused_before_any_work(
        (opslimit, memlimit) in hostile_limits(),
    ) {
        let (key, bytes) = encrypted_key();
        let mut bytes = bytes.clone();
        bytes[38..46].copy_from_slice(&opslimit.to_le_bytes());
        bytes[46..54].copy_from_slice(&memlimit.to_le_bytes());
        let hostile = format!("untrusted comment: hostile\n{}\n", b64(&bytes));
        let started = Instant::now();
        let parsed = SecretKey::from_text(&hostile, Some(entries::PASSWORD));
        prop_assert!(
            matches!(
                parsed,
                Err(MinisignError::UnsupportedAlgorithm { what: "scrypt parameters", .. })
            ),
            "{:?}",
            parsed
        );
        prop_assert!(started.elapsed() < Duration::from_millis(500));
        // Writing a key with such limits is refused the same way.
        let written = key.to_text(Some(b"pw"), KdfCost::Limits { opslimit, memlimit });
        prop_assert!(written.is_err());
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn unencrypted_secret_keys_round_trip(
        seed in any::<[u8; 32]>(),
        key_id in any::<[u8; 8]>(),
    ) {
        let text = unencrypted_key_text(&seed, &key_id);
        let key = SecretKey::from_text(&text, None).unwrap();
        prop_assert_eq!(key.public_key().key_id, key_id);
        let plain = key.to_text(None, KdfCost::Interactive).unwrap();
        prop_assert_eq!(plain.as_str(), text.as_str());
    }
}

proptest! {
    // Two scrypt runs a case (about 10 ms each in a test build): fewer
    // cases; the parser's other paths have the thousands above.
    #![proptest_config(cases(32))]

    #[test]
    fn encrypted_secret_keys_round_trip(
        seed in any::<[u8; 32]>(),
        key_id in any::<[u8; 8]>(),
        password in vec(any::<u8>(), 0..32),
        (opslimit, memlimit) in cheap_limits(),
    ) {
        let key = SecretKey::from_text(&unencrypted_key_text(&seed, &key_id), None).unwrap();
        let public = key.public_key();
        let cost = KdfCost::Limits { opslimit, memlimit };
        let encrypted = key.to_text(Some(&password), cost).unwrap();
        prop_assert_eq!(
            SecretKey::from_text(&encrypted, Some(&password)).unwrap().public_key(),
            public
        );
        prop_assert_eq!(
            SecretKey::from_text(&encrypted, None).unwrap_err(),
            MinisignError::WrongPassword
        );
    }
}

proptest! {
    // Most cases run scrypt once (at the cheapest limits).
    #![proptest_config(cases(256))]

    #[test]
    fn mutated_secret_key_files_never_panic_the_parser(
        encrypted in any::<bool>(),
        // Not the scrypt limits (bytes 38..54), which the previous
        // properties cover: a mutation there may ask for up to the cap
        // (seconds of scrypt), too slow for a thousand cases.
        flips in vec(((0..142usize).prop_map(|i| if i < 38 { i } else { i + 16 }), 1..=255u8), 1..4),
        text_mutations in proptest::option::of(mutations()),
    ) {
        let mut bytes = if encrypted {
            encrypted_key().1.clone()
        } else {
            let text = unencrypted_key_text(&[9; 32], b"mutated!");
            let body = text.lines().nth(1).unwrap().to_string();
            base64::engine::general_purpose::STANDARD.decode(body).unwrap()
        };
        for (i, mask) in &flips {
            bytes[*i] ^= mask;
        }
        let mutated = format!("untrusted comment: mutated\n{}\n", b64(&bytes));
        within_limit(entries::secret_key, mutated.as_bytes());
        // Changes to the text itself (line structure, base64) fail before
        // the key derivation, or leave the limits alone; except when they
        // hit the limits: keep those out, as above.
        if let Some(m) = text_mutations {
            let changed = mutate(mutated.into_bytes(), &m);
            let reaches_scrypt = String::from_utf8(changed.clone()).ok().and_then(|t| {
                let line = t.lines().nth(1)?.trim().to_string();
                let b = base64::engine::general_purpose::STANDARD.decode(line).ok()?;
                (b.len() == 158 && &b[2..4] == b"Sc" && b[38..54] != bytes[38..54]).then_some(())
            });
            if reaches_scrypt.is_none() {
                within_limit(entries::secret_key, &changed);
            }
        }
    }
}

#[test]
fn a_wrong_password_is_refused() {
    let (_, bytes) = encrypted_key();
    let text = format!("untrusted comment: k\n{}\n", b64(bytes));
    for wrong in [
        &b""[..],
        b"correct horse battery stapl",
        b"correct horse battery staple!",
    ] {
        assert_eq!(
            SecretKey::from_text(&text, Some(wrong)).unwrap_err(),
            MinisignError::WrongPassword
        );
    }
    assert_eq!(
        SecretKey::from_text(&text, Some(entries::PASSWORD))
            .unwrap()
            .public_key(),
        encrypted_key().0.public_key()
    );
}

// --------------------------------------------------------------- signatures

/// A signature file with each field drawn from valid and invalid values.
fn signature_text() -> impl Strategy<Value = String> {
    let algorithm = prop_oneof![Just(*b"ED"), Just(*b"Ed"), any::<[u8; 2]>()];
    let body = prop_oneof![
        6 => (algorithm, vec(any::<u8>(), 72)).prop_map(|(alg, rest)| {
            let mut b = alg.to_vec();
            b.extend_from_slice(&rest);
            b
        }),
        1 => vec(any::<u8>(), 0..100),
    ];
    let global = prop_oneof![4 => vec(any::<u8>(), 64), 1 => vec(any::<u8>(), 0..100)];
    (
        ".{0,30}",
        body,
        prop_oneof![4 => Just("trusted comment: ".to_string()), 1 => ".{0,20}"],
        ".{0,60}",
        global,
        any::<bool>(),
    )
        .prop_map(|(untrusted, body, prefix, trusted, global, crlf)| {
            let nl = if crlf { "\r\n" } else { "\n" };
            format!(
                "untrusted comment: {untrusted}{nl}{}{nl}{prefix}{trusted}{nl}{}{nl}",
                b64(&body),
                b64(&global)
            )
        })
}

/// A one-line comment (what `sign` accepts).
fn one_line() -> impl Strategy<Value = String> {
    "[^\r\n]{0,80}"
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_signature_parser(data in vec(any::<u8>(), 0..512)) {
        within_limit(entries::signature, &data);
    }

    #[test]
    fn arbitrary_signature_fields_never_panic_the_signature_parser(text in signature_text()) {
        within_limit(entries::signature, text.as_bytes());
    }
}

proptest! {
    #![proptest_config(cases(500))]

    #[test]
    fn signatures_round_trip_through_text(
        seed in any::<[u8; 32]>(),
        data in vec(any::<u8>(), 0..256),
        trusted_comment in one_line(),
    ) {
        let key = SecretKey::from_text(&unencrypted_key_text(&seed, b"roundtrp"), None).unwrap();
        let sig = key.sign(&data, &trusted_comment).unwrap();
        let parsed = SignatureBox::from_text(&sig.to_text()).unwrap();
        prop_assert_eq!(&parsed, &sig);
        prop_assert_eq!(parsed.verify(&key.public_key(), &data), Ok(()));
        within_limit(entries::signature, sig.to_text().as_bytes());
    }

    #[test]
    fn comments_with_line_breaks_are_never_signed(
        before in one_line(),
        brk in prop_oneof![Just("\n"), Just("\r"), Just("\r\n")],
        after in one_line(),
    ) {
        let key = SecretKey::from_text(&unencrypted_key_text(&[5; 32], b"linebrk!"), None).unwrap();
        let refused = key.sign(b"data", &format!("{before}{brk}{after}"));
        prop_assert!(
            matches!(refused, Err(MinisignError::Malformed { what: "trusted comment", .. })),
            "{:?}",
            refused
        );
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    /// A changed signature file either does not parse, or does not verify,
    /// or says exactly what the original said: only the untrusted comment
    /// and the line layout can change unnoticed.
    #[test]
    fn mutated_signature_files_never_verify_altered_content(
        m in mutations(),
        trusted_comment in one_line(),
    ) {
        let key = SecretKey::from_text(&unencrypted_key_text(&[7; 32], b"mutation"), None).unwrap();
        let original = key.sign(b"the manifest", &trusted_comment).unwrap();
        let changed = mutate(original.to_text().into_bytes(), &m);
        within_limit(entries::signature, &changed);
        if let Ok(sig) = SignatureBox::from_text(&String::from_utf8_lossy(&changed))
            && sig.verify(&key.public_key(), b"the manifest").is_ok()
        {
            prop_assert_eq!(
                (sig.prehashed, sig.key_id, sig.signature, &sig.trusted_comment, sig.global_signature),
                (
                    original.prehashed,
                    original.key_id,
                    original.signature,
                    &original.trusted_comment,
                    original.global_signature
                )
            );
        }
    }
}

// ---------------------------------------------------------------- manifests

fn capability_path() -> impl Strategy<Value = String> {
    // Absolute, without `..` (no dots at all).
    "(/[a-z0-9_-]{1,10}){1,4}"
}

fn manifest() -> impl Strategy<Value = Manifest> {
    let name = "[a-z][a-z0-9-]{0,30}";
    let version = (
        0..1000u64,
        0..1000u64,
        0..1000u64,
        proptest::option::of("[a-z]{1,6}(\\.[a-z]{1,6}){0,2}"),
        proptest::option::of("[0-9a-z]{1,6}"),
    )
        .prop_map(|(major, minor, patch, pre, build)| {
            let mut v = format!("{major}.{minor}.{patch}");
            if let Some(pre) = pre {
                v.push('-');
                v.push_str(&pre);
            }
            if let Some(build) = build {
                v.push('+');
                v.push_str(&build);
            }
            v
        });
    let capabilities = (
        btree_set(capability_path(), 0..4),
        btree_set(capability_path(), 0..4),
        btree_set(".{0,16}", 0..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(read, commands, env, host_facts, packages)| Capabilities {
            read,
            commands,
            env,
            host_facts,
            packages,
        });
    (
        name,
        version,
        ".{0,40}",
        any::<String>(),
        "[0-9a-f]{64}",
        any::<u64>(),
        capabilities,
        (".{0,30}", ".{0,30}"),
    )
        .prop_map(
            |(
                name,
                version,
                abi,
                description,
                sha256,
                size,
                capabilities,
                (repository, commit),
            )| {
                Manifest {
                    schema: MANIFEST_SCHEMA.to_string(),
                    component: ComponentRef {
                        file: format!("{name}-{version}.wasm"),
                        sha256,
                        size,
                    },
                    name,
                    version,
                    abi,
                    description,
                    capabilities,
                    source: Source { repository, commit },
                    audit: None,
                    toolchain: Default::default(),
                }
            },
        )
}

/// JSON values, with object keys mostly the manifest's own field names so
/// that generated documents reach the schema checks.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    const FIELDS: &[&str] = &[
        "schema",
        "name",
        "version",
        "abi",
        "description",
        "component",
        "file",
        "sha256",
        "size",
        "capabilities",
        "read",
        "commands",
        "env",
        "host_facts",
        "source",
        "repository",
        "commit",
    ];
    let key =
        prop_oneof![3 => proptest::sample::select(FIELDS).prop_map(str::to_string), 1 => ".{0,8}"];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        Just(Value::String(MANIFEST_SCHEMA.to_string())),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_manifest_parser(data in vec(any::<u8>(), 0..512)) {
        within_limit(entries::manifest, &data);
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn arbitrary_json_never_panics_the_manifest_parser(value in json()) {
        within_limit(entries::manifest, &serde_json::to_vec(&value).unwrap());
    }

    /// One field of a valid manifest replaced by arbitrary JSON.
    #[test]
    fn valid_manifests_with_one_arbitrary_field_never_panic_the_parser(
        m in manifest(),
        field in 0..12usize,
        value in json(),
    ) {
        let mut doc = serde_json::to_value(&m).unwrap();
        let path: &[&str] = match field {
            0 => &["schema"],
            1 => &["name"],
            2 => &["version"],
            3 => &["abi"],
            4 => &["component"],
            5 => &["component", "sha256"],
            6 => &["component", "size"],
            7 => &["component", "file"],
            8 => &["capabilities"],
            9 => &["capabilities", "read"],
            10 => &["source"],
            _ => &["extra"],
        };
        let mut at = &mut doc;
        for step in &path[..path.len() - 1] {
            at = &mut at[*step];
        }
        at[path[path.len() - 1]] = value;
        within_limit(entries::manifest, &serde_json::to_vec(&doc).unwrap());
    }

    #[test]
    fn valid_manifests_round_trip_through_their_canonical_bytes(m in manifest()) {
        let bytes = m.to_bytes();
        prop_assert_eq!(Manifest::from_bytes(&bytes), Ok(m.clone()));
        prop_assert_eq!(Manifest::from_bytes(&bytes).unwrap().to_bytes(), bytes.clone());
        within_limit(entries::manifest, &bytes);
    }

    #[test]
    fn mutated_manifests_never_panic_the_parser(m in manifest(), changes in mutations()) {
        within_limit(entries::manifest, &mutate(m.to_bytes(), &changes));
    }
}

#[test]
fn deeply_nested_json_is_refused_without_exhausting_the_stack() {
    for nested in [
        "[".repeat(100_000),
        "{\"a\":".repeat(100_000),
        format!("{{\"schema\":{}", "[".repeat(100_000)),
    ] {
        assert!(matches!(
            Manifest::from_bytes(nested.as_bytes()),
            Err(ManifestError::Malformed(_))
        ));
        within_limit(entries::manifest, nested.as_bytes());
    }
}

// --------------------------------------------------------------- components

/// A small valid component that passes the audit: it imports a WASI
/// interface (an instance with one function), instantiates a core module,
/// and exports the plugin interface as an instance re-exporting that
/// function.
fn seed_component() -> Vec<u8> {
    component_with_body(true)
}

/// The seed component; unless `valid`, its one function body adds with a
/// single operand on the stack: well formed, but invalid.
fn component_with_body(valid: bool) -> Vec<u8> {
    use wasm_encoder::{
        Alias, CodeSection, Component, ComponentAliasSection, ComponentExportKind,
        ComponentExportSection, ComponentImportSection, ComponentInstanceSection, ComponentTypeRef,
        ComponentTypeSection, ExportKind, ExportSection, Function, FunctionSection,
        InstanceSection, InstanceType, Module, ModuleArg, ModuleSection, PrimitiveValType,
        TypeSection, ValType,
    };

    let mut interface = InstanceType::new();
    interface
        .ty()
        .function()
        .params([("x", PrimitiveValType::U32)])
        .result(Some(PrimitiveValType::U32.into()));
    interface.export("get", ComponentTypeRef::Func(0));
    let mut types = ComponentTypeSection::new();
    types.instance(&interface);

    let mut imports = ComponentImportSection::new();
    imports.import("wasi:cli/environment@0.2.3", ComponentTypeRef::Instance(0));

    let mut module = Module::new();
    let mut core_types = TypeSection::new();
    core_types.ty().function([ValType::I32], [ValType::I32]);
    module.section(&core_types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut exports = ExportSection::new();
    exports.export("double", ExportKind::Func, 0);
    module.section(&exports);
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    let mut sink = body.instructions();
    sink.local_get(0);
    if valid {
        sink.local_get(0);
    }
    sink.i32_add().end();
    code.function(&body);
    module.section(&code);

    let mut core_instances = InstanceSection::new();
    core_instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());

    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::InstanceExport {
        instance: 0,
        kind: ComponentExportKind::Func,
        name: "get",
    });
    let mut instances = ComponentInstanceSection::new();
    instances.export_items([("get", ComponentExportKind::Func, 0)]);
    let mut component_exports = ComponentExportSection::new();
    component_exports.export(
        "assessment:plugin/plugin@0.1.0",
        ComponentExportKind::Instance,
        1,
        None,
    );

    let mut component = Component::new();
    component.section(&types);
    component.section(&imports);
    component.section(&ModuleSection(&module));
    component.section(&core_instances);
    component.section(&aliases);
    component.section(&instances);
    component.section(&component_exports);
    component.finish()
}

#[test]
fn the_seed_component_passes_the_audit() {
    let seed = seed_component();
    let report = audit(&seed, None, DEFAULT_MAX_BYTES);
    assert!(report.accepted(), "{}", report.to_text());
    assert_eq!(report.abi_version.as_deref(), Some("0.1.0"));
    assert_eq!(report.imports, ["wasi:cli/environment@0.2.3"]);
    assert_eq!(report.exports, ["assessment:plugin/plugin@0.1.0"]);
    entries::component(&seed);
}

#[test]
fn function_bodies_are_validated_unless_the_bytes_were_compiled_before() {
    use assessment_registry::audit::{Known, audit_known};

    let invalid = component_with_body(false);
    let report = audit(&invalid, None, DEFAULT_MAX_BYTES);
    assert_eq!(
        report.first_rejection().map(|r| r.rule),
        Some("validation"),
        "{}",
        report.to_text()
    );
    // Bytes the host compiled before (wasmtime validated them): the
    // bodies are not validated again, everything else still is.
    let compiled = Known {
        sha256: None,
        validated: true,
    };
    let report = audit_known(&invalid, None, DEFAULT_MAX_BYTES, compiled);
    assert!(report.accepted(), "{}", report.to_text());
    let core = audit_known(b"\0asm\x01\0\0\0", None, DEFAULT_MAX_BYTES, compiled);
    assert_eq!(core.first_rejection().map(|r| r.rule), Some("component"));
    let mut truncated = seed_component();
    truncated.truncate(truncated.len() - 3);
    let report = audit_known(&truncated, None, DEFAULT_MAX_BYTES, compiled);
    assert_eq!(report.first_rejection().map(|r| r.rule), Some("validation"));
    // A digest the caller computed is the one reported.
    let seed = seed_component();
    let digest = assessment_registry::manifest::sha256_hex(&seed);
    let known = Known {
        sha256: Some(&digest),
        validated: false,
    };
    assert_eq!(
        audit_known(&seed, None, DEFAULT_MAX_BYTES, known).sha256,
        digest
    );
}

/// Bytes that start like wasm more often than chance would.
fn wasm_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        Just(Vec::new()),
        Just(b"\0asm\x0d\0\x01\0".to_vec()),
        Just(b"\0asm\x01\0\0\0".to_vec()),
    ];
    (header, vec(any::<u8>(), 0..512)).prop_map(|(mut h, rest)| {
        h.extend(rest);
        h
    })
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_component_audit(data in wasm_like_bytes()) {
        within_limit(entries::component, &data);
    }
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn mutated_components_never_panic_the_audit(changes in mutations()) {
        within_limit(entries::component, &mutate(seed_component(), &changes));
    }
}
