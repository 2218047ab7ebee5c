//! minisign signature files.

use blake2::{Blake2b512, Digest};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};

use super::{KeyId, MinisignError, PublicKey, b64, key_id_hex, parse_box};

/// A detached signature with its trusted comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureBox {
    /// The untrusted comment (free text, not authenticated).
    pub untrusted_comment: String,
    /// `true` for `ED` (signature of the BLAKE2b-512 hash), `false` for the
    /// legacy `Ed` (signature of the data).
    pub prehashed: bool,
    /// Id of the signing key.
    pub key_id: KeyId,
    /// The signature of the data (or its hash).
    pub signature: Signature,
    /// The trusted comment (authenticated by the global signature).
    pub trusted_comment: String,
    /// Signature of `signature ‖ trusted_comment`.
    pub global_signature: Signature,
}

fn prehash(data: &[u8]) -> Vec<u8> {
    Blake2b512::digest(data).to_vec()
}

impl SignatureBox {
    /// Sign `data` (prehashed, as current minisign does) with `key`.
    pub(crate) fn sign(
        key: &SigningKey,
        key_id: KeyId,
        data: &[u8],
        trusted_comment: &str,
        untrusted_comment: &str,
    ) -> Self {
        let signature = key.sign(&prehash(data));
        let mut global = signature.to_bytes().to_vec();
        global.extend_from_slice(trusted_comment.as_bytes());
        SignatureBox {
            untrusted_comment: untrusted_comment.to_string(),
            prehashed: true,
            key_id,
            signature,
            trusted_comment: trusted_comment.to_string(),
            global_signature: key.sign(&global),
        }
    }

    /// Parse a signature file.
    pub fn from_text(text: &str) -> Result<Self, MinisignError> {
        let malformed = |why: &str| MinisignError::Malformed {
            what: "signature",
            why: why.to_string(),
        };
        let (untrusted_comment, bytes, rest) = parse_box("signature", text)?;
        if bytes.len() != 74 {
            return Err(malformed(&format!("{} bytes instead of 74", bytes.len())));
        }
        let prehashed = match &bytes[..2] {
            b"ED" => true,
            b"Ed" => false,
            other => {
                return Err(MinisignError::UnsupportedAlgorithm {
                    what: "signature",
                    found: String::from_utf8_lossy(other).into_owned(),
                });
            }
        };
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&bytes[2..10]);
        let signature =
            Signature::from_slice(&bytes[10..74]).map_err(|e| malformed(&e.to_string()))?;
        let mut rest = rest.into_iter();
        let trusted_comment = rest
            .next()
            .and_then(|l| l.strip_prefix("trusted comment: ").map(str::to_string))
            .ok_or_else(|| malformed("the third line must start with `trusted comment: `"))?;
        let global = rest
            .next()
            .ok_or_else(|| malformed("missing the global signature"))?;
        let global =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, global.trim())
                .map_err(|e| malformed(&format!("invalid base64 in the global signature: {e}")))?;
        let global_signature =
            Signature::from_slice(&global).map_err(|e| malformed(&e.to_string()))?;
        Ok(SignatureBox {
            untrusted_comment,
            prehashed,
            key_id,
            signature,
            trusted_comment,
            global_signature,
        })
    }

    /// The signature file.
    pub fn to_text(&self) -> String {
        let mut bytes = Vec::with_capacity(74);
        bytes.extend_from_slice(if self.prehashed { b"ED" } else { b"Ed" });
        bytes.extend_from_slice(&self.key_id);
        bytes.extend_from_slice(&self.signature.to_bytes());
        format!(
            "untrusted comment: {}\n{}\ntrusted comment: {}\n{}\n",
            self.untrusted_comment,
            b64(&bytes),
            self.trusted_comment,
            b64(&self.global_signature.to_bytes())
        )
    }

    /// Verify `data` against `key`: key id first, then the signature, then
    /// the trusted comment.
    pub fn verify(&self, key: &PublicKey, data: &[u8]) -> Result<(), MinisignError> {
        if self.key_id != key.key_id {
            return Err(MinisignError::UnknownKey {
                signed_by: key_id_hex(&self.key_id),
                trusted: key.key_id_hex(),
            });
        }
        let verified = if self.prehashed {
            key.key.verify(&prehash(data), &self.signature)
        } else {
            key.key.verify(data, &self.signature)
        };
        verified.map_err(|_| MinisignError::BadSignature)?;
        let mut global = self.signature.to_bytes().to_vec();
        global.extend_from_slice(self.trusted_comment.as_bytes());
        key.key
            .verify(&global, &self.global_signature)
            .map_err(|_| MinisignError::BadTrustedComment)
    }

    /// Verify against the first of `keys` with the signature's key id.
    pub fn verify_any<'a>(
        &self,
        keys: &'a [PublicKey],
        data: &[u8],
    ) -> Result<&'a PublicKey, MinisignError> {
        let Some(key) = keys.iter().find(|k| k.key_id == self.key_id) else {
            return Err(MinisignError::UnknownKey {
                signed_by: key_id_hex(&self.key_id),
                trusted: if keys.is_empty() {
                    "(none configured)".to_string()
                } else {
                    keys.iter()
                        .map(PublicKey::key_id_hex)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        };
        self.verify(key, data)?;
        Ok(key)
    }
}
