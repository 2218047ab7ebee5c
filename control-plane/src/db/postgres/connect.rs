//! How the control plane reaches PostgreSQL: the `--database` URL read with
//! libpq's conventions, TLS included (rustls; no OpenSSL).
//!
//! `sslmode` is libpq's: `disable` never uses TLS, `prefer` (the default)
//! uses it when the server offers it, `require`, `verify-ca` and
//! `verify-full` insist on it. Unlike libpq, whenever TLS is used the
//! server's certificate is verified, chain and host name, against
//! `sslrootcert` (a PEM file of CA certificates; `system` for the
//! system's roots) or else the system's roots: a TLS session whose server
//! is not authenticated protects against nobody who can intercept it, and
//! it would carry the database password and every secret's hash. So
//! `require` means what libpq's `verify-full` means, as do `verify-ca` and
//! `verify-full`. `prefer` never falls back to plain text after a failed
//! verification. As in libpq, `sslmode` does not apply to a Unix socket
//! (the server offers no TLS there).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use postgres::config::{Host, SslMode};
use postgres::{Client, Config};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::StoreError;

/// Where the server's certificate is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCertificates {
    /// The operating system's trusted roots.
    System,
    /// The CA certificates of a PEM file (`sslrootcert=PATH`).
    File(PathBuf),
}

/// A PostgreSQL database to connect to: tokio-postgres's settings and the
/// roots its server's certificate is verified against.
#[derive(Clone)]
pub struct PgSettings {
    config: Config,
    roots: RootCertificates,
}

impl PgSettings {
    /// Reads a `postgres://` or `postgresql://` URL, without connecting:
    /// libpq's `sslmode` and `sslrootcert` are taken out of its query (the
    /// client library knows neither `sslrootcert` nor the `verify-*`
    /// modes), the rest is the client library's.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let invalid =
            |message: String| StoreError::Invalid(format!("invalid PostgreSQL URL: {message}"));
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut ssl_mode = None;
        let mut roots = RootCertificates::System;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str, what: &str| {
                percent_decode_str(text)
                    .decode_utf8()
                    .map(|text| text.into_owned())
                    .map_err(|_| invalid(format!("{what} is not UTF-8 once percent-decoded")))
            };
            match decode(key, "a parameter's name")?.as_str() {
                "sslmode" => ssl_mode = Some(parse_ssl_mode(&decode(value, "sslmode")?)?),
                "sslrootcert" => {
                    let value = decode(value, "sslrootcert")?;
                    roots = match value.as_str() {
                        "" => return Err(invalid(
                            "sslrootcert is empty: give the path of a PEM file of CA certificates"
                                .to_string(),
                        )),
                        "system" => RootCertificates::System,
                        path => RootCertificates::File(PathBuf::from(path)),
                    };
                }
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        // The client library's message names the parameter, never a value
        // (the password stays out of it).
        let mut config: Config = url
            .parse()
            .map_err(|e: postgres::Error| invalid(super::message(&e)))?;
        if let Some(mode) = ssl_mode {
            config.ssl_mode(mode);
        }
        Ok(Self::new(config, roots))
    }

    /// Settings of `config` as given (its `ssl_mode` included), verifying
    /// the server against `roots`.
    pub fn new(mut config: Config, roots: RootCertificates) -> Self {
        if config.get_application_name().is_none() {
            config.application_name("assessment-control-plane");
        }
        // As libpq: sslmode does not apply to Unix sockets, where the
        // server offers no TLS (`require` would otherwise fail there).
        let hosts = config.get_hosts();
        if !hosts.is_empty() && hosts.iter().all(|host| matches!(host, Host::Unix(_))) {
            config.ssl_mode(SslMode::Disable);
        }
        Self { config, roots }
    }

    /// The client library's settings (TLS mode included).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the server's certificate is verified against.
    pub fn roots(&self) -> &RootCertificates {
        &self.roots
    }

    /// The TLS connector of every connection to this database, the pool's
    /// and the admin commands': rustls verifying the server against the
    /// roots. Fails if `sslrootcert` cannot be read.
    pub fn tls_connector(&self) -> Result<MakeRustlsConnect, StoreError> {
        let roots = match (&self.roots, self.config.get_ssl_mode()) {
            // Never used: no file to read, no system store to load.
            (_, SslMode::Disable) => RootCertStore::empty(),
            (RootCertificates::File(path), _) => roots_from_file(path)?,
            (RootCertificates::System, _) => system_roots(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Invalid(format!("invalid TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// One connection (the admin commands'), with the same TLS as the pool.
    pub fn connect(&self) -> Result<Client, StoreError> {
        Ok(self.config.connect(self.tls_connector()?)?)
    }
}

/// Settings as the client library gives them, verified against the
/// system's roots when TLS is used.
impl From<Config> for PgSettings {
    fn from(config: Config) -> Self {
        Self::new(config, RootCertificates::System)
    }
}

/// Shows the database without its password.
impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("database", &super::describe(&self.config))
            .field("ssl_mode", &self.config.get_ssl_mode())
            .field("roots", &self.roots)
            .finish()
    }
}

/// libpq's `sslmode`, as the client library's: every mode that uses TLS
/// verifies the server (see the module's documentation).
fn parse_ssl_mode(value: &str) -> Result<SslMode, StoreError> {
    match value {
        "disable" => Ok(SslMode::Disable),
        "prefer" => Ok(SslMode::Prefer),
        "require" | "verify-ca" | "verify-full" => Ok(SslMode::Require),
        "allow" => Err(StoreError::Invalid(
            "invalid PostgreSQL URL: sslmode=allow (plain text first) is not supported: use prefer, require, verify-full or disable".to_string(),
        )),
        other => Err(StoreError::Invalid(format!(
            "invalid PostgreSQL URL: sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
        ))),
    }
}

/// The CA certificates of the PEM file `path` (`sslrootcert`).
fn roots_from_file(path: &Path) -> Result<RootCertStore, StoreError> {
    let failed =
        |message: String| StoreError::Invalid(format!("sslrootcert={}: {message}", path.display()));
    let pem = std::fs::read(path).map_err(|e| failed(format!("cannot read it: {e}")))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|e| failed(format!("not PEM: {e}")))?;
        roots
            .add(certificate)
            .map_err(|e| failed(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(failed("holds no PEM certificate".to_string()));
    }
    Ok(roots)
}

/// The operating system's roots; none found only shows when a server's
/// certificate is then refused, so it is logged.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "cannot read some of the system's root certificates");
    }
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        tracing::warn!(
            "no system root certificate found: a PostgreSQL server's certificate can only be verified with sslrootcert"
        );
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_ssl_parameters_are_read_and_taken_out() {
        for (query, mode) in [
            ("", SslMode::Prefer),
            ("sslmode=disable", SslMode::Disable),
            ("sslmode=prefer", SslMode::Prefer),
            ("sslmode=require", SslMode::Require),
            ("sslmode=verify-ca", SslMode::Require),
            ("connect_timeout=5&sslmode=verify-full", SslMode::Require),
        ] {
            let settings =
                PgSettings::from_url(&format!("postgres://acp:pw@db.example/acp?{query}")).unwrap();
            assert_eq!(settings.config().get_ssl_mode(), mode, "{query}");
            assert_eq!(settings.roots(), &RootCertificates::System, "{query}");
        }
        let settings = PgSettings::from_url(
            "postgresql://acp@db.example:5433/acp?sslrootcert=%2Fetc%2Facp%2Fpg%20ca.pem&sslmode=verify-full&connect_timeout=5&application_name=cp-1",
        )
        .unwrap();
        assert_eq!(
            settings.roots(),
            &RootCertificates::File(PathBuf::from("/etc/acp/pg ca.pem"))
        );
        let config = settings.config();
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_ports(), [5433]);
        assert_eq!(config.get_application_name(), Some("cp-1"));
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(5))
        );
        let system = PgSettings::from_url("postgres://db/acp?sslrootcert=system").unwrap();
        assert_eq!(system.roots(), &RootCertificates::System);
    }

    #[test]
    fn bad_ssl_parameters_are_named_and_the_password_never_shown() {
        for (query, named) in [
            ("sslmode=bogus", "sslmode"),
            ("sslmode=allow", "sslmode=allow"),
            ("sslmode=", "sslmode"),
            ("sslrootcert=", "sslrootcert"),
            ("sslcert=client.pem", "sslcert"),
        ] {
            let error = PgSettings::from_url(&format!("postgres://acp:s3cret@db/acp?{query}"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(named), "{query}: {error}");
            assert!(!error.contains("s3cret"), "{query}: {error}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let not_pem = dir.path().join("ca.txt");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        for path in [&missing, &not_pem] {
            let url = format!(
                "postgres://acp:s3cret@db/acp?sslmode=require&sslrootcert={}",
                path.display()
            );
            // Read when connecting: serve and the admin commands stop there.
            let settings = PgSettings::from_url(&url).unwrap();
            let error = settings.tls_connector().err().unwrap().to_string();
            assert!(error.starts_with("sslrootcert="), "{error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
            assert!(!format!("{settings:?}").contains("s3cret"));
            // Unless TLS is off, when the file is never read.
            let off = PgSettings::from_url(&format!("{url}&sslmode=disable")).unwrap();
            off.tls_connector().unwrap();
        }
    }

    #[test]
    fn sslmode_does_not_apply_to_unix_sockets() {
        let socket =
            PgSettings::from_url("postgresql:///acp?host=/run/postgresql&sslmode=require").unwrap();
        assert_eq!(socket.config().get_ssl_mode(), SslMode::Disable);
        let tcp =
            PgSettings::from_url("postgresql:///acp?host=db.example&sslmode=require").unwrap();
        assert_eq!(tcp.config().get_ssl_mode(), SslMode::Require);
    }
}

/// Against the tests' cluster, which listens on 127.0.0.1 with TLS (a
/// certificate of its own test CA).
#[cfg(test)]
mod against_postgres {
    use super::*;
    use crate::db::postgres::open_pool;
    use test_postgres::{SUPERUSER, TLS_ONLY_USER, TestDatabase, cluster};

    /// Whether the session is encrypted, as the server sees it.
    fn encrypted(client: &mut Client) -> bool {
        client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0)
    }

    fn url_settings(database: &TestDatabase, user: &str, query: &str) -> PgSettings {
        PgSettings::from_url(&database.tcp_url(user, query)).unwrap()
    }

    fn with_test_ca(mode: &str) -> String {
        format!(
            "sslmode={mode}&sslrootcert={}",
            cluster().ca_certificate.display()
        )
    }

    #[test]
    fn tls_sessions_are_encrypted_and_the_pool_uses_them() {
        let database = TestDatabase::create();
        for mode in ["prefer", "require", "verify-ca", "verify-full"] {
            let settings = url_settings(&database, SUPERUSER, &with_test_ca(mode));
            assert!(encrypted(&mut settings.connect().unwrap()), "{mode}");
        }
        // The pool's connections (and the migration's before them) too.
        let settings = url_settings(&database, TLS_ONLY_USER, &with_test_ca("require"));
        let pool = open_pool(&settings, 2).unwrap();
        assert!(encrypted(&mut pool.get().unwrap()));
        let mut client = settings.connect().unwrap();
        assert!(crate::db::PgDb::new(&mut client).check_ready().is_ok());
        // Plain text when asked for, where the server allows it.
        let plain = url_settings(&database, SUPERUSER, "sslmode=disable");
        assert!(!encrypted(&mut plain.connect().unwrap()));
    }

    #[test]
    fn an_unverified_server_is_refused() {
        let database = TestDatabase::create();
        // A CA that did not issue the server's certificate.
        let dir = tempfile::tempdir().unwrap();
        let other_ca = dir.path().join("other-ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
        for query in [
            format!("sslmode=require&sslrootcert={}", other_ca.display()),
            // prefer does not fall back to plain text either.
            format!("sslmode=prefer&sslrootcert={}", other_ca.display()),
            // libpq's require would take any certificate; the system's
            // roots do not know the test CA.
            "sslmode=require".to_string(),
        ] {
            let error = url_settings(&database, SUPERUSER, &query)
                .connect()
                .err()
                .unwrap()
                .to_string();
            assert!(
                error.contains("TLS") && error.contains("UnknownIssuer"),
                "{query}: {error}"
            );
        }
        // The certificate names localhost and 127.0.0.1, not this name
        // (the server reached at 127.0.0.1 all the same).
        let url = format!(
            "postgresql://{SUPERUSER}@db.invalid:{}/{}?hostaddr=127.0.0.1&{}",
            cluster().port,
            database.name(),
            with_test_ca("require")
        );
        let error = PgSettings::from_url(&url)
            .unwrap()
            .connect()
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("not valid for name \"db.invalid\""),
            "{error}"
        );
    }

    #[test]
    fn a_server_that_requires_tls_refuses_plain_text() {
        let database = TestDatabase::create();
        let error = url_settings(&database, TLS_ONLY_USER, "sslmode=disable")
            .connect()
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("pg_hba.conf rejects") && error.contains("no encryption"),
            "{error}"
        );
        let tls = url_settings(&database, TLS_ONLY_USER, &with_test_ca("verify-full"));
        assert!(encrypted(&mut tls.connect().unwrap()));
    }
}
