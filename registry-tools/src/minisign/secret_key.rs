//! minisign secret key files: the Ed25519 key, encrypted at rest with a key
//! derived from a password by scrypt (libsodium's
//! `crypto_pwhash_scryptsalsa208sha256` parameters), with a BLAKE2b-256
//! checksum that detects a wrong password.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use super::{KeyId, MinisignError, PublicKey, SignatureBox, b64, parse_box};

type Blake2b256 = Blake2b<U32>;

/// How expensive the password key derivation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfCost {
    /// libsodium's interactive limits (16 MiB, fast): the default.
    Interactive,
    /// libsodium's sensitive limits (1 GiB, seconds), as `minisign -G` uses.
    Sensitive,
    /// libsodium's `opslimit` and `memlimit` as stored in the file, e.g.
    /// cheap ones for tests. Limits costlier than [`KdfCost::Sensitive`] are
    /// refused, as they are when reading a key file.
    Limits {
        /// libsodium's `opslimit`.
        opslimit: u64,
        /// libsodium's `memlimit` in bytes.
        memlimit: u64,
    },
}

impl KdfCost {
    fn limits(self) -> (u64, u64) {
        match self {
            KdfCost::Interactive => (524_288, 16_777_216),
            KdfCost::Sensitive => (33_554_432, 1_073_741_824),
            KdfCost::Limits { opslimit, memlimit } => (opslimit, memlimit),
        }
    }
}

/// The costliest scrypt a key file may ask for: libsodium's sensitive
/// limits, N = 2^20, r = 8, p = 1 (1 GiB and a few seconds), the most that
/// `minisign -G` writes. The parameters come from the file: without a bound
/// a corrupted or hostile key file could ask for 16 GiB (N = 2^24) or for
/// p in the millions, hours of work, before the password is even checked.
const MAX_SCRYPT_LOG_N: u8 = 20;
/// N · r · p at most (memory is 128 · r · N bytes, work grows with N · r · p).
const MAX_SCRYPT_WORK: u64 = 1 << 23;

/// A secret key (never printed: `Debug` shows only the key id).
pub struct SecretKey {
    key_id: KeyId,
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", super::key_id_hex(&self.key_id))
    }
}

const KEYNUM_SK_LEN: usize = 8 + 64 + 32;
const FILE_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + KEYNUM_SK_LEN;

fn random<const N: usize>() -> Result<[u8; N], MinisignError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| MinisignError::Malformed {
        what: "random source",
        why: e.to_string(),
    })?;
    Ok(bytes)
}

/// libsodium's `pickparams`: (log2 N, r, p) from opslimit and memlimit.
fn scrypt_params(opslimit: u64, memlimit: u64) -> (u8, u32, u32) {
    let opslimit = opslimit.max(32_768);
    let r: u64 = 8;
    let find_log_n = |max_n: u64| {
        let mut log_n = 1u8;
        while log_n < 63 && (1u64 << log_n) <= max_n / 2 {
            log_n += 1;
        }
        log_n
    };
    if opslimit < memlimit / 32 {
        (find_log_n(opslimit / (r * 4)), r as u32, 1)
    } else {
        let log_n = find_log_n(memlimit / (r * 128));
        let max_rp = ((opslimit / 4) / (1u64 << log_n)).min(0x3fff_ffff);
        (log_n, r as u32, (max_rp / r).max(1) as u32)
    }
}

/// The scrypt parameters for libsodium's limits, refused above
/// [`MAX_SCRYPT_LOG_N`] and [`MAX_SCRYPT_WORK`] before any work is done.
fn checked_scrypt_params(opslimit: u64, memlimit: u64) -> Result<scrypt::Params, MinisignError> {
    let (log_n, r, p) = scrypt_params(opslimit, memlimit);
    let unsupported = |why: String| MinisignError::UnsupportedAlgorithm {
        what: "scrypt parameters",
        found: why,
    };
    let work = (1u64 << log_n)
        .saturating_mul(u64::from(r))
        .saturating_mul(u64::from(p));
    if log_n > MAX_SCRYPT_LOG_N || work > MAX_SCRYPT_WORK {
        return Err(unsupported(format!(
            "N = 2^{log_n}, r = {r}, p = {p} (opslimit {opslimit}, memlimit {memlimit}) costs more than libsodium's sensitive limits, the most this tool accepts"
        )));
    }
    // `len` only matters for PHC strings; the output buffer sets the length.
    scrypt::Params::new(log_n, r, p, scrypt::Params::RECOMMENDED_LEN)
        .map_err(|e| unsupported(e.to_string()))
}

fn keystream(
    password: &[u8],
    salt: &[u8],
    opslimit: u64,
    memlimit: u64,
) -> Result<Zeroizing<[u8; KEYNUM_SK_LEN]>, MinisignError> {
    let params = checked_scrypt_params(opslimit, memlimit)?;
    let unsupported = |why: String| MinisignError::UnsupportedAlgorithm {
        what: "scrypt parameters",
        found: why,
    };
    let mut out = Zeroizing::new([0u8; KEYNUM_SK_LEN]);
    scrypt::scrypt(password, salt, &params, out.as_mut())
        .map_err(|e| unsupported(e.to_string()))?;
    Ok(out)
}

fn checksum(key_id: &KeyId, sk: &[u8]) -> [u8; 32] {
    let mut h = Blake2b256::new();
    h.update(b"Ed");
    h.update(key_id);
    h.update(sk);
    h.finalize().into()
}

impl SecretKey {
    /// A new random key pair.
    pub fn generate() -> Result<Self, MinisignError> {
        let seed = Zeroizing::new(random::<32>()?);
        Ok(SecretKey {
            key_id: random::<8>()?,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Sign `data` with a trusted comment (one line: a line break is
    /// refused, since the signature file could not carry it).
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<SignatureBox, MinisignError> {
        SignatureBox::sign(
            &self.key,
            self.key_id,
            data,
            trusted_comment,
            "signature from plugin-registry secret key",
        )
    }

    /// The secret key file, encrypted with `password` (or unencrypted when
    /// `password` is `None`, for keys kept in a CI secret store).
    pub fn to_text(
        &self,
        password: Option<&[u8]>,
        cost: KdfCost,
    ) -> Result<Zeroizing<String>, MinisignError> {
        let mut keynum_sk = Zeroizing::new([0u8; KEYNUM_SK_LEN]);
        keynum_sk[..8].copy_from_slice(&self.key_id);
        keynum_sk[8..40].copy_from_slice(self.key.as_bytes());
        keynum_sk[40..72].copy_from_slice(self.key.verifying_key().as_bytes());
        let chk = checksum(&self.key_id, &keynum_sk[8..72]);
        keynum_sk[72..].copy_from_slice(&chk);

        let mut bytes = Zeroizing::new(Vec::with_capacity(FILE_LEN));
        bytes.extend_from_slice(b"Ed");
        let salt = random::<32>()?;
        let (opslimit, memlimit) = cost.limits();
        match password {
            Some(password) => {
                bytes.extend_from_slice(b"Sc");
                bytes.extend_from_slice(b"B2");
                bytes.extend_from_slice(&salt);
                bytes.extend_from_slice(&opslimit.to_le_bytes());
                bytes.extend_from_slice(&memlimit.to_le_bytes());
                let stream = keystream(password, &salt, opslimit, memlimit)?;
                for (b, s) in keynum_sk.iter_mut().zip(stream.iter()) {
                    *b ^= s;
                }
            }
            None => {
                bytes.extend_from_slice(&[0, 0]);
                bytes.extend_from_slice(b"B2");
                bytes.extend_from_slice(&[0u8; 32 + 8 + 8]);
            }
        }
        bytes.extend_from_slice(keynum_sk.as_ref());
        let comment = if password.is_some() {
            "minisign encrypted secret key"
        } else {
            "minisign unencrypted secret key"
        };
        Ok(Zeroizing::new(format!(
            "untrusted comment: {comment}\n{}\n",
            b64(&bytes)
        )))
    }

    /// Parse a secret key file; `password` decrypts an encrypted one.
    pub fn from_text(text: &str, password: Option<&[u8]>) -> Result<Self, MinisignError> {
        let (_, bytes, _) = parse_box("secret key", text)?;
        let bytes = Zeroizing::new(bytes);
        if bytes.len() != FILE_LEN {
            return Err(MinisignError::Malformed {
                what: "secret key",
                why: format!("{} bytes instead of {FILE_LEN}", bytes.len()),
            });
        }
        let alg =
            |range: std::ops::Range<usize>| String::from_utf8_lossy(&bytes[range]).into_owned();
        if &bytes[..2] != b"Ed" {
            return Err(MinisignError::UnsupportedAlgorithm {
                what: "signature",
                found: alg(0..2),
            });
        }
        if &bytes[4..6] != b"B2" {
            return Err(MinisignError::UnsupportedAlgorithm {
                what: "checksum",
                found: alg(4..6),
            });
        }
        let mut keynum_sk = Zeroizing::new([0u8; KEYNUM_SK_LEN]);
        keynum_sk.copy_from_slice(&bytes[54..]);
        match &bytes[2..4] {
            b"Sc" => {
                let password = password.ok_or(MinisignError::WrongPassword)?;
                let le = |r: std::ops::Range<usize>| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&bytes[r]);
                    u64::from_le_bytes(a)
                };
                let stream = keystream(password, &bytes[6..38], le(38..46), le(46..54))?;
                for (b, s) in keynum_sk.iter_mut().zip(stream.iter()) {
                    *b ^= s;
                }
            }
            [0, 0] => {}
            _ => {
                return Err(MinisignError::UnsupportedAlgorithm {
                    what: "key derivation",
                    found: alg(2..4),
                });
            }
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&keynum_sk[..8]);
        if checksum(&key_id, &keynum_sk[8..72]) != keynum_sk[72..] {
            return Err(MinisignError::WrongPassword);
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&keynum_sk[8..40]);
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes() != &keynum_sk[40..72] {
            return Err(MinisignError::Malformed {
                what: "secret key",
                why: "the public half does not match the secret half".to_string(),
            });
        }
        Ok(SecretKey { key_id, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libsodium_parameter_choice() {
        assert_eq!(scrypt_params(524_288, 16_777_216), (14, 8, 1));
        assert_eq!(scrypt_params(33_554_432, 1_073_741_824), (20, 8, 1));
    }

    #[test]
    fn scrypt_cost_is_capped_at_libsodium_sensitive() {
        // What minisign and this tool write is accepted.
        for cost in [KdfCost::Interactive, KdfCost::Sensitive] {
            let (ops, mem) = cost.limits();
            assert!(checked_scrypt_params(ops, mem).is_ok(), "{cost:?}");
        }
        // Twice the memory, twice the work (p = 2), 16 GiB (N = 2^24, which
        // the parser used to accept), millions of p, and the extremes.
        for (ops, mem) in [
            (67_108_864, 2_147_483_648),
            (67_108_864, 1_073_741_824),
            (536_870_912, 17_179_869_184),
            (u64::MAX, 16_777_216),
            (u64::MAX, u64::MAX),
            (u64::MAX / 2, u64::MAX),
            (u64::MAX, 0),
        ] {
            assert!(
                matches!(
                    checked_scrypt_params(ops, mem),
                    Err(MinisignError::UnsupportedAlgorithm {
                        what: "scrypt parameters",
                        ..
                    })
                ),
                "opslimit {ops}, memlimit {mem}"
            );
        }
        // libsodium's minimum and zeros are cheap and accepted.
        assert!(checked_scrypt_params(0, 0).is_ok());
        assert!(checked_scrypt_params(32_768, 16_777_216).is_ok());
    }

    #[test]
    fn a_key_file_asking_for_a_huge_scrypt_is_refused_at_once() {
        let sk = SecretKey::generate().unwrap();
        let cheap = KdfCost::Limits {
            opslimit: 32_768,
            memlimit: 16_777_216,
        };
        let text = sk.to_text(Some(b"pw"), cheap).unwrap();
        let (comment, mut bytes, _) = parse_box("secret key", &text).unwrap();
        // N = 2^24 (16 GiB), then p in the hundreds of millions.
        for (ops, mem) in [(1u64 << 40, 1u64 << 34), (u64::MAX, 1 << 24)] {
            bytes[38..46].copy_from_slice(&u64::to_le_bytes(ops));
            bytes[46..54].copy_from_slice(&u64::to_le_bytes(mem));
            let hostile = format!("untrusted comment: {comment}\n{}\n", b64(&bytes));
            let started = std::time::Instant::now();
            assert!(matches!(
                SecretKey::from_text(&hostile, Some(b"pw")),
                Err(MinisignError::UnsupportedAlgorithm {
                    what: "scrypt parameters",
                    ..
                })
            ));
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        // Writing such a key is refused too.
        assert!(
            sk.to_text(
                Some(b"pw"),
                KdfCost::Limits {
                    opslimit: u64::MAX,
                    memlimit: u64::MAX
                }
            )
            .is_err()
        );
    }

    #[test]
    fn encrypted_keys_round_trip_and_refuse_a_wrong_password() {
        let sk = SecretKey::generate().unwrap();
        let text = sk
            .to_text(Some(b"correct horse"), KdfCost::Interactive)
            .unwrap();
        assert!(text.starts_with("untrusted comment: minisign encrypted secret key\n"));
        let back = SecretKey::from_text(&text, Some(b"correct horse")).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        assert_eq!(
            SecretKey::from_text(&text, Some(b"wrong")).unwrap_err(),
            MinisignError::WrongPassword
        );
        assert_eq!(
            SecretKey::from_text(&text, None).unwrap_err(),
            MinisignError::WrongPassword
        );
    }

    #[test]
    fn unencrypted_keys_round_trip() {
        let sk = SecretKey::generate().unwrap();
        let text = sk.to_text(None, KdfCost::Interactive).unwrap();
        assert_eq!(
            SecretKey::from_text(&text, None).unwrap().public_key(),
            sk.public_key()
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let sk = SecretKey::generate().unwrap();
        let shown = format!("{sk:?}");
        assert_eq!(
            shown,
            format!("SecretKey({})", sk.public_key().key_id_hex())
        );
    }

    #[test]
    fn signatures_verify_and_detect_tampering() {
        let sk = SecretKey::generate().unwrap();
        let pk = sk.public_key();
        let sig = sk
            .sign(b"manifest bytes", "plugin sshd-hardening 1.2.3")
            .unwrap();
        let parsed = SignatureBox::from_text(&sig.to_text()).unwrap();
        assert_eq!(parsed, sig);
        parsed.verify(&pk, b"manifest bytes").unwrap();
        assert_eq!(
            parsed.verify(&pk, b"manifest bytez"),
            Err(MinisignError::BadSignature)
        );
        let mut altered = parsed.clone();
        altered.trusted_comment = "plugin sshd-hardening 9.9.9".to_string();
        assert_eq!(
            altered.verify(&pk, b"manifest bytes"),
            Err(MinisignError::BadTrustedComment)
        );
        let other = SecretKey::generate().unwrap().public_key();
        assert!(matches!(
            parsed.verify(&other, b"manifest bytes"),
            Err(MinisignError::UnknownKey { .. })
        ));
        assert!(matches!(
            parsed.verify_any(std::slice::from_ref(&other), b"manifest bytes"),
            Err(MinisignError::UnknownKey { .. })
        ));
        assert_eq!(
            parsed
                .verify_any(&[other, pk.clone()], b"manifest bytes")
                .unwrap(),
            &pk
        );
        assert_eq!(PublicKey::from_text(&pk.to_text()).unwrap(), pk);
        assert_eq!(PublicKey::from_text(&pk.to_base64()).unwrap(), pk);
    }
}
