//! `[control_plane]`: a server reached with credentials an administrator
//! created (`assessment-control-plane runtimes create`, or a Compliance
//! Framework API's own), instead of credentials from enrollment.
//!
//! ```toml
//! [control_plane]
//! url = "https://cf.example"
//! runtime_id = "7a1c9a52-9a0e-4c84-9f44-1f0a8f1e2b3c"
//! client_secret_file = "/etc/assessment-runtime/client-secret"
//! # or: client_secret_env = "ASSESSMENT_RUNTIME_CLIENT_SECRET"
//! ```
//!
//! Over HTTPS the server is trusted through `[network]` (`ca_bundle`,
//! `control_plane_system_roots`); there is no client certificate, as a
//! Compliance Framework API asks for none. The secret is read when the
//! daemon starts and is never logged nor put in an error.

use std::path::PathBuf;

use capability_model::wire::config::RawControlPlane;

use super::Credentials;

/// Longest secret file read (a secret is a line, not a document).
const MAX_SECRET_BYTES: u64 = 4096;

/// Where the client secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The first line of a file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// `[control_plane]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneSettings {
    /// The server's base URL, without a trailing slash.
    pub url: String,
    /// This runtime's id (canonical UUID text).
    pub runtime_id: String,
    /// Where the secret is.
    pub secret: SecretSource,
    /// Plain HTTP allowed (development).
    pub dev_plain_http: bool,
}

impl ControlPlaneSettings {
    /// Validates the section; errors name the field and the fix.
    pub fn from_raw(raw: RawControlPlane) -> Result<Self, String> {
        let url = raw.url.trim_end_matches('/').to_string();
        match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("https") => {}
            Some("http") if raw.dev_plain_http => {}
            Some("http") => {
                return Err(format!(
                    "control_plane.url = {url:?}: plain HTTP sends the secret in the clear; use https:// (or control_plane.dev_plain_http = true for development)"
                ));
            }
            _ => {
                return Err(format!(
                    "control_plane.url = {url:?}: give the server's https:// base URL, such as \"https://cf.example\""
                ));
            }
        }
        if reqwest::Url::parse(&url).is_err() {
            return Err(format!("control_plane.url = {url:?}: not a valid URL"));
        }
        let runtime_id = uuid::Uuid::parse_str(raw.runtime_id.trim())
            .map_err(|_| {
                format!(
                    "control_plane.runtime_id = {:?}: give the runtime's id, a UUID (printed by `assessment-control-plane runtimes create`)",
                    raw.runtime_id
                )
            })?
            .to_string();
        let secret = match (raw.client_secret_file, raw.client_secret_env) {
            (Some(path), None) if path.is_absolute() => SecretSource::File(path),
            (Some(path), None) => {
                return Err(format!(
                    "control_plane.client_secret_file = {path:?}: must be an absolute path"
                ));
            }
            (None, Some(name)) if !name.is_empty() && !name.contains(['=', '\0']) => {
                SecretSource::Env(name)
            }
            (None, Some(name)) => {
                return Err(format!(
                    "control_plane.client_secret_env = {name:?}: not an environment variable name"
                ));
            }
            _ => {
                return Err(
                    "control_plane: give exactly one of client_secret_file (a file holding the secret) or client_secret_env (a variable holding it)"
                        .to_string(),
                );
            }
        };
        Ok(ControlPlaneSettings {
            url,
            runtime_id,
            secret,
            dev_plain_http: raw.dev_plain_http,
        })
    }

    /// The credentials, with the secret read now. The error names where
    /// the secret was looked for, never what it holds.
    pub fn credentials(&self) -> Result<Credentials, String> {
        self.credentials_with_env(&|name| std::env::var(name).ok())
    }

    fn credentials_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials, String> {
        let secret = match &self.secret {
            SecretSource::File(path) => {
                let field = format!("control_plane.client_secret_file = {path:?}");
                let size = std::fs::metadata(path)
                    .map_err(|e| format!("{field}: cannot read it: {e}"))?
                    .len();
                if size > MAX_SECRET_BYTES {
                    return Err(format!(
                        "{field}: {size} bytes; a secret file holds one line of at most {MAX_SECRET_BYTES} bytes"
                    ));
                }
                let text = std::fs::read(path).map_err(|e| format!("{field}: cannot read it: {e}"))?;
                let text = String::from_utf8(text)
                    .map_err(|_| format!("{field}: the secret is not UTF-8 text"))?;
                text.lines().next().unwrap_or_default().trim().to_string()
            }
            SecretSource::Env(name) => env(name)
                .map(|value| value.trim().to_string())
                .ok_or_else(|| {
                    format!(
                        "control_plane.client_secret_env = {name:?}: the variable is not set (or not UTF-8) in the runtime's environment"
                    )
                })?,
        };
        if secret.is_empty() {
            return Err(format!(
                "control_plane: the client secret from {} is empty",
                match &self.secret {
                    SecretSource::File(path) => format!("{path:?}"),
                    SecretSource::Env(name) => format!("${name}"),
                }
            ));
        }
        Ok(Credentials {
            url: self.url.clone(),
            runtime_id: self.runtime_id.clone(),
            client_secret: secret,
            tls: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str, file: Option<&str>, env: Option<&str>) -> RawControlPlane {
        RawControlPlane {
            url: url.to_string(),
            runtime_id: "7A1C9A52-9A0E-4C84-9F44-1F0A8F1E2B3C".to_string(),
            client_secret_file: file.map(PathBuf::from),
            client_secret_env: env.map(str::to_string),
            dev_plain_http: false,
        }
    }

    #[test]
    fn the_section_is_validated_naming_the_field() {
        let ok =
            ControlPlaneSettings::from_raw(raw("https://cf.example/", None, Some("S"))).unwrap();
        assert_eq!(ok.url, "https://cf.example");
        assert_eq!(ok.runtime_id, "7a1c9a52-9a0e-4c84-9f44-1f0a8f1e2b3c");
        assert_eq!(ok.secret, SecretSource::Env("S".into()));
        let refused = |raw: RawControlPlane| ControlPlaneSettings::from_raw(raw).unwrap_err();
        assert!(refused(raw("http://cf", None, Some("S"))).contains("dev_plain_http"));
        let mut plain = raw("http://cf", None, Some("S"));
        plain.dev_plain_http = true;
        assert!(ControlPlaneSettings::from_raw(plain).is_ok());
        assert!(refused(raw("cf.example", None, Some("S"))).contains("control_plane.url"));
        assert!(refused(raw("https://cf", None, None)).contains("exactly one"));
        assert!(refused(raw("https://cf", Some("/s"), Some("S"))).contains("exactly one"));
        assert!(refused(raw("https://cf", Some("s"), None)).contains("absolute"));
        assert!(refused(raw("https://cf", None, Some("A=B"))).contains("client_secret_env"));
        let mut bad_id = raw("https://cf", None, Some("S"));
        bad_id.runtime_id = "web-1".into();
        assert!(refused(bad_id).contains("control_plane.runtime_id"));
    }

    #[test]
    fn the_secret_is_read_from_a_file_or_the_environment_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret-value\n").unwrap();
        let from_file =
            ControlPlaneSettings::from_raw(raw("https://cf", Some(file.to_str().unwrap()), None))
                .unwrap();
        let credentials = from_file.credentials_with_env(&|_| None).unwrap();
        assert_eq!(credentials.client_secret, "s3cret-value");
        assert!(credentials.tls.is_none());
        assert!(!format!("{credentials:?}").contains("s3cret"));

        let from_env = ControlPlaneSettings::from_raw(raw("https://cf", None, Some("S"))).unwrap();
        let env = |name: &str| (name == "S").then(|| "env-s3cret".to_string());
        assert_eq!(
            from_env.credentials_with_env(&env).unwrap().client_secret,
            "env-s3cret"
        );
        let unset = from_env.credentials_with_env(&|_| None).unwrap_err();
        assert!(unset.contains("not set"), "{unset}");

        // Errors name the source, never the contents.
        std::fs::write(&file, "\n").unwrap();
        let empty = from_file.credentials_with_env(&|_| None).unwrap_err();
        assert!(empty.contains("empty"), "{empty}");
        std::fs::write(&file, vec![b'x'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        let huge = from_file.credentials_with_env(&|_| None).unwrap_err();
        assert!(
            huge.contains("one line of at most") && !huge.contains("xxx"),
            "{huge}"
        );
        std::fs::remove_file(&file).unwrap();
        let missing = from_file.credentials_with_env(&|_| None).unwrap_err();
        assert!(missing.contains("cannot read"), "{missing}");
    }
}
