//! The control plane's own certificate authority: it signs the server's TLS
//! certificate and one client certificate per runtime (from the runtime's
//! certificate signing request, so runtime keys never leave their machine).
//!
//! The CA lives in a directory: `ca.pem` (give it to runtimes: they trust
//! nothing else) and `ca.key` (mode 0600, never leaves the directory). It is
//! created on first use; the server certificate is made when the server
//! starts, for the names it is reached by, and again whenever it nears its
//! end (see [`crate::tls`]), so it never goes stale.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The CA certificate's file name in the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name in the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server certificate is valid (a new one is made after two
/// thirds of that).
pub const SERVER_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);
/// Default lifetime of runtime client certificates.
pub const DEFAULT_CLIENT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this much in the past, for clocks that lag.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A CA failure.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The CA files exist but do not hold a usable CA.
    #[error(
        "{path} does not hold a usable CA ({message}); restore it from a backup, or move the directory away to create a new CA (every runtime must then enroll again)"
    )]
    Corrupt {
        /// The CA directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A certificate could not be made.
    #[error("cannot create a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The random source failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// A certificate signing request that cannot be signed.
#[derive(Debug, thiserror::Error)]
#[error(
    "the certificate signing request is invalid ({0}); send a PEM CSR (PKCS #10) signed by the runtime's new key"
)]
pub struct CsrError(String);

/// A certificate issued to a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub pem: String,
    /// The SHA-256 of its DER encoding, hex: how the database binds it to
    /// the runtime.
    pub sha256: String,
    /// When it expires, Unix milliseconds.
    pub not_after_millis: i64,
}

/// The hex SHA-256 of a DER certificate.
pub fn certificate_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The control plane's certificate authority.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// The end of the CA certificate's validity, Unix seconds.
    not_after: i64,
    client_validity: Duration,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("sha256", &self.sha256())
            .field("client_validity", &self.client_validity)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA in `dir`, creating the directory and a new CA if it
    /// holds none yet (`ca.key` absent).
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let key_path = dir.join(CA_KEY_FILE);
        if key_path.exists() {
            return Self::load(dir);
        }
        create_private_dir(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        // A name of its own, so that a certificate from another control
        // plane's CA is reported as from an unknown issuer.
        let mut id = [0u8; 4];
        getrandom::fill(&mut id).map_err(|e| CaError::Random(e.to_string()))?;
        params.distinguished_name = distinguished_name(&format!(
            "Assessment Runtime control plane CA {}",
            hex::encode(id)
        ));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        // The certificate first, the key last: `ca.key` marks a complete CA,
        // so a crash in between leaves a directory that is created anew.
        write_file(&dir.join(CA_CERT_FILE), cert.pem().as_bytes(), 0o644)?;
        write_new_private_file(&key_path, key.serialize_pem().as_bytes())?;
        tracing::info!(dir = %dir.display(), "created a new certificate authority");
        Self::load(dir)
    }

    fn load(dir: &Path) -> Result<Self, CaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CaError::Io { path, source })
        };
        let corrupt = |message: String| CaError::Corrupt {
            path: dir.to_path_buf(),
            message,
        };
        let cert_pem = read(CA_CERT_FILE)?;
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)
            .map_err(|e| corrupt(format!("{CA_KEY_FILE}: {e}")))?;
        let cert_der = pem_certificate(&cert_pem).map_err(corrupt)?;
        let (public_key, not_after) = x509_key_and_end(&cert_der).map_err(corrupt)?;
        if public_key != key.public_key_raw() {
            return Err(corrupt(format!(
                "{CA_KEY_FILE} is not the key of {CA_CERT_FILE}"
            )));
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| corrupt(format!("{CA_CERT_FILE}: {e}")))?;
        Ok(Self {
            issuer,
            cert_pem,
            cert_der,
            not_after,
            client_validity: DEFAULT_CLIENT_VALIDITY,
        })
    }

    /// Sets the lifetime of the client certificates issued from now on.
    pub fn with_client_validity(mut self, validity: Duration) -> Self {
        self.client_validity = validity;
        self
    }

    /// The CA certificate, PEM: what runtimes trust.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// When the CA certificate expires, in Unix seconds: every certificate
    /// it issued stops being trusted then.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The CA certificate's SHA-256 (hex), for operators to compare.
    pub fn sha256(&self) -> String {
        certificate_sha256(&self.cert_der)
    }

    /// A fresh server certificate for `names` (DNS names or IP addresses),
    /// valid for `validity`, and its key.
    pub fn server_certificate(
        &self,
        names: &[String],
        validity: Duration,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = distinguished_name("Assessment Runtime control plane");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((cert.der().clone(), key))
    }

    /// Signs a client certificate for `runtime_id` with the public key of
    /// `csr_pem`. Only the key is taken from the request: the subject, names,
    /// usages and lifetime are the CA's choice.
    pub fn issue_client_certificate(
        &self,
        runtime_id: &str,
        csr_pem: &str,
    ) -> Result<IssuedCertificate, CsrError> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CsrError(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(runtime_id);
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:uuid:{runtime_id}")
                .try_into()
                .map_err(|e: rcgen::Error| CsrError(e.to_string()))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial().map_err(|e| CsrError(e.to_string()))?);
        set_validity(&mut params, self.client_validity);
        let not_after_millis =
            i64::try_from(params.not_after.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let cert = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| CsrError(e.to_string()))?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            sha256: certificate_sha256(cert.der()),
            not_after_millis,
        })
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
}

/// A random positive 128-bit serial number.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| CaError::Random(e.to_string()))?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The first certificate of a PEM text.
pub fn pem_certificate(pem: &str) -> Result<CertificateDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))
}

/// The subject public key bits of a DER certificate, and the end of its
/// validity (Unix seconds).
fn x509_key_and_end(der: &[u8]) -> Result<(Vec<u8>, i64), String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    Ok((
        cert.public_key().subject_public_key.data.to_vec(),
        cert.validity().not_after.timestamp(),
    ))
}

fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    let fail = |source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(fail)
}

/// Writes `bytes` to the new file `path`, readable only by its owner: a
/// temporary file created exclusively (`O_EXCL`, so never an existing file
/// or a planted link) with mode 0600 from the start, then linked to `path`,
/// which fails if `path` exists (so a key is never replaced).
fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    let fail = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let temporary = temporary_path(path);
    // A temporary file left by a crash is removed (a link, not its target).
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(fail(error)),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
    let removed = std::fs::remove_file(&temporary);
    linked.map_err(fail)?;
    removed.map_err(fail)
}

/// `ca.key.tmp` for `ca.key`.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` through a temporary file and a rename, with
/// `mode` from the start.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let fail = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let temporary = temporary_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&temporary).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        (key, csr)
    }

    #[test]
    fn the_ca_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("tls");
        let first = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        let again = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        assert_eq!(first.sha256(), again.sha256());
        assert_eq!(first.not_after(), again.not_after());
        let ten_years = OffsetDateTime::now_utc() + CA_VALIDITY;
        assert!((first.not_after() - ten_years.unix_timestamp()).abs() < 60);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);
            assert_eq!(mode(&ca_dir), 0o700);
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_ca_key_is_written_exclusively_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // Whatever the umask, the key is 0600.
        let key = dir.path().join("key");
        write_new_private_file(&key, b"secret").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        assert!(!dir.path().join("key.tmp").exists());
        // An existing key is never replaced.
        let error = write_new_private_file(&key, b"other").unwrap_err();
        assert!(error.to_string().contains("exists"), "{error}");
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        // A link planted where the temporary file goes is not followed.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("key2.tmp")).unwrap();
        write_new_private_file(&dir.path().join("key2"), b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(mode(&dir.path().join("key2")), 0o600);
    }

    #[test]
    fn a_ca_whose_key_does_not_match_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        CertificateAuthority::load_or_create(&one).unwrap();
        CertificateAuthority::load_or_create(&two).unwrap();
        std::fs::copy(two.join(CA_KEY_FILE), one.join(CA_KEY_FILE)).unwrap();
        let error = CertificateAuthority::load_or_create(&one).unwrap_err();
        assert!(error.to_string().contains("is not the key of"), "{error}");
        std::fs::write(one.join(CA_KEY_FILE), "garbage").unwrap();
        assert!(matches!(
            CertificateAuthority::load_or_create(&one).unwrap_err(),
            CaError::Corrupt { .. }
        ));
    }

    #[test]
    fn client_certificates_carry_only_what_the_ca_decides() {
        use x509_parser::prelude::FromDer;
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        // A request that asks to be a CA for another name gets none of it.
        let key = KeyPair::generate().unwrap();
        let mut wanted = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        wanted.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = wanted.serialize_request(&key).unwrap().pem().unwrap();
        let id = "5d0c9d43-2f1b-4a4e-9d7e-0b7c2f0d9a11";
        let issued = ca.issue_client_certificate(id, &csr).unwrap();
        let der = pem_certificate(&issued.pem).unwrap();
        assert_eq!(issued.sha256, certificate_sha256(&der));
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        assert!(!cert.is_ca());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            id
        );
        assert_eq!(
            cert.public_key().subject_public_key.data,
            key.public_key_raw()
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!format!("{:?}", cert.subject_alternative_name()).contains("evil"));
    }

    #[test]
    fn bad_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert!(ca.issue_client_certificate("x", "not a csr").is_err());
        // A CSR whose signature does not match its key.
        let (_, csr) = csr();
        let der = pem::parse(&csr).unwrap();
        let mut bytes = der.contents().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", bytes));
        let error = ca.issue_client_certificate("x", &tampered).unwrap_err();
        assert!(error.to_string().contains("certificate signing request"));
    }
}
