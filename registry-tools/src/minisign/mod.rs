//! Ed25519 keys and signatures in the minisign file formats, so that any
//! plugin can be checked with the standard `minisign` tool and any
//! minisign-signed plugin verifies here.
//!
//! - [`PublicKey`]: `untrusted comment: …` + base64(`Ed` ‖ key id ‖ key).
//! - [`SecretKey`]: minisign's secret key file, encrypted with scrypt.
//! - [`SignatureBox`]: `untrusted comment: …` + base64(`ED` ‖ key id ‖
//!   signature of BLAKE2b-512(data)), `trusted comment: …` + base64(global
//!   signature of signature ‖ trusted comment). The legacy `Ed` variant
//!   (signature of the data itself) is verified too.
//!
//! Verification checks the key id before the signature, and the trusted
//! comment's global signature too: a comment cannot be altered. Both are
//! checked with `verify_strict` (as libsodium does), and a public key that
//! is small-order, non-canonical or outside the prime-order subgroup is
//! refused when parsed. A secret key file's scrypt limits are capped at
//! libsodium's sensitive limits before any work is done.

mod public_key;
mod secret_key;
mod signature;

pub use public_key::PublicKey;
pub use secret_key::{KdfCost, SecretKey};
pub use signature::SignatureBox;

use base64::Engine as _;

/// The 8-byte key id minisign stores next to keys and signatures.
pub type KeyId = [u8; 8];

/// minisign shows key ids as 16 uppercase hex digits of the little-endian
/// number.
pub fn key_id_hex(id: &KeyId) -> String {
    format!("{:016X}", u64::from_le_bytes(*id))
}

/// Why a key or signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MinisignError {
    /// The text is not in the expected format.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// Which kind of file.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The algorithm is not Ed25519 (or the KDF/checksum not scrypt/BLAKE2b).
    #[error("unsupported {what} algorithm {found:?}")]
    UnsupportedAlgorithm {
        /// Which field.
        what: &'static str,
        /// What was found.
        found: String,
    },
    /// Signed by another key.
    #[error("signed by key {signed_by}, not by the trusted key {trusted}")]
    UnknownKey {
        /// Key id of the signature.
        signed_by: String,
        /// Key id of the key it was checked against.
        trusted: String,
    },
    /// The signature does not match the data.
    #[error("signature verification failed: the data or the signature was altered")]
    BadSignature,
    /// The trusted comment was altered.
    #[error("the trusted comment was altered (global signature verification failed)")]
    BadTrustedComment,
    /// Wrong password (the secret key checksum does not match).
    #[error("cannot decrypt the secret key: wrong password or corrupted key file")]
    WrongPassword,
}

/// `untrusted comment: …` then a base64 line; returns (comment, bytes).
fn parse_box(
    what: &'static str,
    text: &str,
) -> Result<(String, Vec<u8>, Vec<String>), MinisignError> {
    let malformed = |why: &str| MinisignError::Malformed {
        what,
        why: why.to_string(),
    };
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let comment = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("untrusted comment: ")
                .or_else(|| l.strip_prefix("untrusted comment:"))
        })
        .ok_or_else(|| malformed("the first line must start with `untrusted comment:`"))?
        .to_string();
    let data = lines
        .next()
        .ok_or_else(|| malformed("missing the base64 line"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| malformed(&format!("invalid base64: {e}")))?;
    Ok((comment, bytes, lines.map(str::to_string).collect()))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
