//! minisign signature files.

use blake2::{Blake2b512, Digest};
use ed25519_dalek::{Signature, Signer, SigningKey};

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
    /// Sign `data` (prehashed, as current minisign does) with `key`. A
    /// comment with a line break is refused: the signature file keeps each
    /// comment on one line, so it would not read back as signed.
    pub(crate) fn sign(
        key: &SigningKey,
        key_id: KeyId,
        data: &[u8],
        trusted_comment: &str,
        untrusted_comment: &str,
    ) -> Result<Self, MinisignError> {
        for (what, comment) in [
            ("trusted comment", trusted_comment),
            ("untrusted comment", untrusted_comment),
        ] {
            if comment.contains(['\n', '\r']) {
                return Err(MinisignError::Malformed {
                    what,
                    why: "a line break cannot be stored in a signature file".to_string(),
                });
            }
        }
        let signature = key.sign(&prehash(data));
        let mut global = signature.to_bytes().to_vec();
        global.extend_from_slice(trusted_comment.as_bytes());
        Ok(SignatureBox {
            untrusted_comment: untrusted_comment.to_string(),
            prehashed: true,
            key_id,
            signature,
            trusted_comment: trusted_comment.to_string(),
            global_signature: key.sign(&global),
        })
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
    /// the trusted comment. Both signatures are checked strictly
    /// (`verify_strict`, as libsodium does): a small-order key or a
    /// small-order `R` is refused, so no signature verifies here that
    /// minisign would refuse.
    pub fn verify(&self, key: &PublicKey, data: &[u8]) -> Result<(), MinisignError> {
        if self.key_id != key.key_id {
            return Err(MinisignError::UnknownKey {
                signed_by: key_id_hex(&self.key_id),
                trusted: key.key_id_hex(),
            });
        }
        let verified = if self.prehashed {
            key.key.verify_strict(&prehash(data), &self.signature)
        } else {
            key.key.verify_strict(data, &self.signature)
        };
        verified.map_err(|_| MinisignError::BadSignature)?;
        let mut global = self.signature.to_bytes().to_vec();
        global.extend_from_slice(self.trusted_comment.as_bytes());
        key.key
            .verify_strict(&global, &self.global_signature)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minisign::SecretKey;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::IsIdentity as _;
    use ed25519_dalek::{Verifier as _, VerifyingKey};
    use sha2::Sha512;

    /// The identity point's encoding: a small-order point.
    const IDENTITY: [u8; 32] = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };

    fn signature(r: [u8; 32], s: Scalar) -> Signature {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&r);
        bytes[32..].copy_from_slice(s.as_bytes());
        Signature::from_bytes(&bytes)
    }

    /// Ed25519's challenge k = SHA-512(R ‖ A ‖ M) mod ℓ.
    fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
        let mut h = Sha512::new();
        h.update(r);
        h.update(a);
        h.update(message);
        Scalar::from_bytes_mod_order_wide(&h.finalize().into())
    }

    fn is_even(k: &Scalar) -> bool {
        k.as_bytes()[0] & 1 == 0
    }

    fn global_message(signature: &Signature, trusted_comment: &str) -> Vec<u8> {
        let mut global = signature.to_bytes().to_vec();
        global.extend_from_slice(trusted_comment.as_bytes());
        global
    }

    #[test]
    fn a_small_order_key_signature_that_plain_verify_accepts_is_refused() {
        // Key A = identity, signature R = identity, s = 0: [s]B = R + [k]A
        // holds for every message, so plain `verify` accepts it as a
        // signature of anything; `verify_strict` refuses small-order points.
        let key = VerifyingKey::from_bytes(&IDENTITY).unwrap();
        let pk = PublicKey {
            key_id: *b"weak-key",
            key,
        };
        let zero = signature(IDENTITY, Scalar::ZERO);
        let data = b"a manifest nobody signed";
        for prehashed in [true, false] {
            let sig = SignatureBox {
                untrusted_comment: "forged".to_string(),
                prehashed,
                key_id: pk.key_id,
                signature: zero,
                trusted_comment: "plugin evil 6.6.6".to_string(),
                global_signature: zero,
            };
            let signed = if prehashed {
                prehash(data)
            } else {
                data.to_vec()
            };
            let global = global_message(&sig.signature, &sig.trusted_comment);
            // The claim, checked against ed25519-dalek 2 itself.
            assert!(key.verify(&signed, &sig.signature).is_ok());
            assert!(key.verify(&global, &sig.global_signature).is_ok());
            assert!(key.verify_strict(&signed, &sig.signature).is_err());
            assert!(key.verify_strict(&global, &sig.global_signature).is_err());
            // This crate refuses it.
            assert_eq!(sig.verify(&pk, data), Err(MinisignError::BadSignature));
            assert_eq!(
                sig.verify_any(std::slice::from_ref(&pk), data),
                Err(MinisignError::BadSignature)
            );
            // It survives the file format, and is still refused.
            let parsed = SignatureBox::from_text(&sig.to_text()).unwrap();
            assert_eq!(parsed.verify(&pk, data), Err(MinisignError::BadSignature));
        }
        // Such a key is not even accepted as a trusted key.
        assert!(matches!(
            PublicKey::from_text(&pk.to_text()),
            Err(MinisignError::Malformed {
                what: "public key",
                ..
            })
        ));
    }

    #[test]
    fn a_trusted_comment_signature_that_plain_verify_accepts_is_refused() {
        // A key with a torsion component, A = aB + T with T of order 2, is
        // not small-order, so `verify_strict` checks its signatures. Its
        // owner signs the data honestly (R = rB, s = r + ka, retrying r until
        // k is even so that [k]T vanishes) and the trusted comment with
        // R = identity and s = ka, which plain `verify` accepts whenever k is
        // even and `verify_strict` refuses (R has small order). So the data
        // signature is strictly valid and only the global one is not: this
        // shows that the trusted comment is verified strictly too.
        let t = EIGHT_TORSION[4];
        assert!(!t.is_identity() && (t + t).is_identity(), "T has order 2");
        let a = Scalar::from(0x5eed_u64);
        let a_point = ED25519_BASEPOINT_POINT * a + t;
        let a_bytes = a_point.compress().to_bytes();
        let key = VerifyingKey::from_bytes(&a_bytes).unwrap();
        assert!(!key.is_weak());
        let pk = PublicKey {
            key_id: *b"mixed-ok",
            key,
        };
        let data = b"manifest";
        let hashed = prehash(data);
        let data_signature = (1u64..)
            .find_map(|n| {
                let r = Scalar::from(n);
                let r_bytes = (ED25519_BASEPOINT_POINT * r).compress().to_bytes();
                let k = challenge(&r_bytes, &a_bytes, &hashed);
                is_even(&k).then(|| signature(r_bytes, r + k * a))
            })
            .unwrap();
        let (trusted_comment, global_signature) = (0u32..)
            .find_map(|n| {
                let comment = format!("plugin demo@1.0.{n}");
                let k = challenge(
                    &IDENTITY,
                    &a_bytes,
                    &global_message(&data_signature, &comment),
                );
                is_even(&k).then(|| (comment, signature(IDENTITY, k * a)))
            })
            .unwrap();
        let global = global_message(&data_signature, &trusted_comment);
        // The claims, checked against ed25519-dalek 2 itself.
        assert!(key.verify_strict(&hashed, &data_signature).is_ok());
        assert!(key.verify(&global, &global_signature).is_ok());
        assert!(key.verify_strict(&global, &global_signature).is_err());
        let sig = SignatureBox {
            untrusted_comment: "mixed".to_string(),
            prehashed: true,
            key_id: pk.key_id,
            signature: data_signature,
            trusted_comment,
            global_signature,
        };
        assert_eq!(sig.verify(&pk, data), Err(MinisignError::BadTrustedComment));
        // Such a key is not accepted as a trusted key either.
        assert!(matches!(
            PublicKey::from_text(&pk.to_base64()),
            Err(MinisignError::Malformed {
                what: "public key",
                ..
            })
        ));
    }

    #[test]
    fn the_key_id_is_checked_before_the_signature() {
        let sk = SecretKey::generate().unwrap();
        let pk = sk.public_key();
        let sig = sk.sign(b"data", "comment").unwrap();
        // Same key, other id: refused for the id although the signature is
        // good.
        let renamed = PublicKey {
            key_id: [0xAA; 8],
            ..pk.clone()
        };
        assert!(matches!(
            sig.verify(&renamed, b"data"),
            Err(MinisignError::UnknownKey { .. })
        ));
        // Other id and a bad signature: the id is what is reported.
        let mut garbage = sig.clone();
        garbage.signature = Signature::from_bytes(&[0x55; 64]);
        garbage.key_id = [0xBB; 8];
        assert!(matches!(
            garbage.verify(&pk, b"data"),
            Err(MinisignError::UnknownKey { .. })
        ));
        garbage.key_id = pk.key_id;
        assert_eq!(
            garbage.verify(&pk, b"data"),
            Err(MinisignError::BadSignature)
        );
    }

    #[test]
    fn the_trusted_comment_is_verified_for_both_signature_kinds() {
        let sk = SecretKey::generate().unwrap();
        let pk = sk.public_key();
        let prehashed = sk.sign(b"data", "plugin demo@1.0.0").unwrap();
        // The legacy kind signs the data itself.
        let signing = SigningKey::from_bytes(&[7; 32]);
        let legacy_pk = PublicKey {
            key_id: [1; 8],
            key: signing.verifying_key(),
        };
        let signature = signing.sign(b"data");
        let legacy = SignatureBox {
            untrusted_comment: String::new(),
            prehashed: false,
            key_id: legacy_pk.key_id,
            signature,
            trusted_comment: "plugin demo@1.0.0".to_string(),
            global_signature: signing.sign(&global_message(&signature, "plugin demo@1.0.0")),
        };
        for (sig, key) in [(prehashed, pk), (legacy, legacy_pk)] {
            sig.verify(&key, b"data").unwrap();
            let mut altered = sig.clone();
            altered.trusted_comment = "plugin demo@9.9.9".to_string();
            assert_eq!(
                altered.verify(&key, b"data"),
                Err(MinisignError::BadTrustedComment)
            );
            let mut altered = sig.clone();
            altered.global_signature = Signature::from_bytes(&[0; 64]);
            assert_eq!(
                altered.verify(&key, b"data"),
                Err(MinisignError::BadTrustedComment)
            );
        }
    }

    #[test]
    fn comments_with_line_breaks_are_not_signed() {
        let sk = SecretKey::generate().unwrap();
        for comment in ["two\nlines", "carriage\rreturn", "trailing\r"] {
            assert!(matches!(
                sk.sign(b"data", comment),
                Err(MinisignError::Malformed {
                    what: "trusted comment",
                    ..
                })
            ));
        }
    }
}
