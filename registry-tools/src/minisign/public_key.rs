//! minisign public key files.

use ed25519_dalek::VerifyingKey;

use super::{KeyId, MinisignError, b64, key_id_hex, parse_box};

/// An Ed25519 public key with its minisign key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key id.
    pub key_id: KeyId,
    /// The key.
    pub key: VerifyingKey,
}

impl PublicKey {
    /// Parse a public key file (`untrusted comment:` line + base64 line), or
    /// the base64 line alone (as `minisign -P` takes it).
    pub fn from_text(text: &str) -> Result<Self, MinisignError> {
        let text = text.trim();
        if text.starts_with("untrusted comment:") {
            let (_, bytes, _) = parse_box("public key", text)?;
            Self::from_bytes(&bytes)
        } else {
            let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                .map_err(|e| MinisignError::Malformed {
                    what: "public key",
                    why: format!("invalid base64: {e}"),
                })?;
            Self::from_bytes(&bytes)
        }
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, MinisignError> {
        if bytes.len() != 42 {
            return Err(MinisignError::Malformed {
                what: "public key",
                why: format!("{} bytes instead of 42", bytes.len()),
            });
        }
        if &bytes[..2] != b"Ed" {
            return Err(MinisignError::UnsupportedAlgorithm {
                what: "public key",
                found: String::from_utf8_lossy(&bytes[..2]).into_owned(),
            });
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&bytes[2..10]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[10..42]);
        let malformed = |why: String| MinisignError::Malformed {
            what: "public key",
            why,
        };
        let key = VerifyingKey::from_bytes(&key).map_err(|e| malformed(e.to_string()))?;
        // A key made by a key generator is the canonical encoding of a point
        // in the prime-order subgroup. Anything else was made by hand: a
        // small-order key (which `verify` would accept any signature from,
        // and `verify_strict` none), a non-canonical encoding (refused by
        // libsodium, so by minisign), or a point with a torsion component
        // (whose signatures verify differently across implementations).
        let point = key.to_edwards();
        if key.is_weak() {
            return Err(malformed("a small-order (weak) key".to_string()));
        }
        if point.compress().as_bytes() != key.as_bytes() {
            return Err(malformed("a non-canonical point encoding".to_string()));
        }
        if !point.is_torsion_free() {
            return Err(malformed(
                "a point outside the prime-order subgroup".to_string(),
            ));
        }
        Ok(PublicKey { key_id, key })
    }

    /// The base64 line (what `minisign -P` takes).
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(42);
        bytes.extend_from_slice(b"Ed");
        bytes.extend_from_slice(&self.key_id);
        bytes.extend_from_slice(self.key.as_bytes());
        b64(&bytes)
    }

    /// The public key file.
    pub fn to_text(&self) -> String {
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            key_id_hex(&self.key_id),
            self.to_base64()
        )
    }

    /// The key id as minisign prints it.
    pub fn key_id_hex(&self) -> String {
        key_id_hex(&self.key_id)
    }
}
