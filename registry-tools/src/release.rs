//! Release assets of a plugin version — component, manifest, signature —
//! and their upload to a GitHub release.
//!
//! A plugin's directory says what is released, in `plugin.toml`:
//!
//! ```toml
//! name = "sshd-hardening"   # Rust: optional, when it differs from the crate name
//! version = "1.2.0"         # only without a Cargo.toml (Python, JavaScript…)
//! description = "Checks the OpenSSH server configuration"
//! [capabilities]
//! read = ["/etc/ssh"]
//! ```
//!
//! One rule decides where the name and version come from
//! ([`read_plugin_dir`]): a directory with a `Cargo.toml` is a Rust crate,
//! whose version is the crate's (the one `env!("CARGO_PKG_VERSION")`
//! reports) and whose name is the crate's unless `plugin.toml` names it; a
//! directory without one is a plugin in another language, and its
//! `plugin.toml` must give both `name` and `version`. Nothing else (a
//! `package.json`, say) is read.
//!
//! Before signing, [`package`] calls the component's `describe` (see
//! [`describe()`]): the name and version it reports must be the ones being
//! released, as the host refuses a release whose component describes
//! itself otherwise.

mod describe;

pub use describe::{DescribeError, Described, describe};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::audit::{ABI_PACKAGE, AuditReport, RecordedReport, ReportError, Verdict, audit};
use crate::manifest::{
    AuditRecord, Capabilities, ComponentRef, MANIFEST_SCHEMA, Manifest, Source, asset_names,
    sha256_hex, valid_plugin_name,
};
use crate::minisign::SecretKey;

/// Why packaging or publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `Cargo.toml` or `plugin.toml` is invalid, or lacks what the release
    /// needs.
    #[error("{path}: {message}")]
    PluginFiles {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `describe` could not be called.
    #[error("cannot check what the component says it is: {0}")]
    Describe(#[from] DescribeError),
    /// The component describes itself with another name or version than
    /// the one being released.
    #[error(
        "the component describes itself as {field} `{described}`, but {expected_from} says `{expected}`; {advice}"
    )]
    Mismatch {
        /// `name` or `version`.
        field: &'static str,
        /// What `describe` returned.
        described: String,
        /// What the release says.
        expected: String,
        /// Where the release's value comes from (a file, or the tag).
        expected_from: String,
        /// What to do about it.
        advice: &'static str,
    },
    /// The release tag is not `<name>/v<version>` of this plugin.
    #[error("release tag `{tag}` is not `{expected}` ({why})")]
    Tag {
        /// The tag.
        tag: String,
        /// The tag this release needs.
        expected: String,
        /// What differs.
        why: String,
    },
    /// The audit rejected the component.
    #[error("the audit rejected the component: {}", .0.first_rejection().map_or(String::new(), |f| format!("{}: {}", f.rule, f.message)))]
    Rejected(Box<AuditReport>),
    /// The audit report given is not one.
    #[error("{path}: {source}")]
    Report {
        /// The report file.
        path: PathBuf,
        /// Why it was refused.
        source: ReportError,
    },
    /// The component is not the one the audit report describes: it was not
    /// audited, and is not signed.
    #[error(
        "the component's sha256 is {component}, but the audit report records {audited}: only the audited component is signed (use the audit job's artifact, or rebuild reproducibly)"
    )]
    NotAudited {
        /// The component's digest.
        component: String,
        /// The digest in the audit report.
        audited: String,
    },
    /// The audit report rejects the component.
    #[error("the audit report's verdict is rejected: {0}")]
    ReportRejected(String),
    /// The verdict is flagged and no person approved the release.
    #[error(
        "the audit flagged this release ({0}); it is signed only after a person approves it: pass --reviewed in the job that runs after the review (the `plugin-review` environment)"
    )]
    NeedsReview(String),
    /// The GitHub API refused a request.
    #[error("GitHub API: {0}")]
    Api(String),
}

#[derive(Debug, Deserialize)]
struct CargoToml {
    package: CargoPackage,
}

#[derive(Debug, Deserialize)]
struct CargoPackage {
    name: String,
    version: toml::Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginToml {
    /// The plugin's name: required without a `Cargo.toml`; for a crate,
    /// when it differs from the crate's name.
    #[serde(default)]
    name: Option<String>,
    /// The plugin's version: required without a `Cargo.toml`, refused with
    /// one (the crate's version is the plugin's).
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    capabilities: Capabilities,
}

fn read(path: &Path) -> Result<Vec<u8>, ReleaseError> {
    std::fs::read(path).map_err(|source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The file's bytes, `None` when it does not exist.
fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, ReleaseError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReleaseError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    std::fs::write(path, bytes).map_err(|source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Where a plugin's name and version come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// A Rust crate (the directory has a `Cargo.toml`): the crate's version
    /// (or its workspace's), the crate's name unless `plugin.toml` names
    /// the plugin.
    RustCrate,
    /// Any other language — Python, JavaScript… (no `Cargo.toml`):
    /// `plugin.toml` gives both the name and the version.
    Other,
}

/// What a release says about its plugin, besides the component itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDescription {
    /// Plugin name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// One-line description.
    pub description: String,
    /// Declared capabilities.
    pub capabilities: Capabilities,
    /// Provenance.
    pub source: Source,
    /// Where the name and version come from.
    pub kind: PluginKind,
    /// The file the name comes from (`plugin.toml`, or `Cargo.toml` when
    /// it names none), for messages.
    pub name_from: PathBuf,
    /// The file the version comes from (`Cargo.toml` or the workspace's
    /// for a crate, `plugin.toml` otherwise).
    pub version_from: PathBuf,
}

/// A plugin's name and version, and the files they come from.
struct Identity {
    name: String,
    name_from: PathBuf,
    version: String,
    version_from: PathBuf,
}

fn plugin_files_error(path: &Path, message: String) -> ReleaseError {
    ReleaseError::PluginFiles {
        path: path.to_path_buf(),
        message,
    }
}

fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<T, ReleaseError> {
    toml::from_str(&String::from_utf8_lossy(bytes))
        .map_err(|e| plugin_files_error(path, e.to_string()))
}

/// A Rust crate's: the version from `Cargo.toml` (or its workspace's when
/// inherited), the name from `plugin.toml` or else the crate's.
fn crate_identity(
    dir: &Path,
    cargo_toml: &[u8],
    plugin: Option<&PluginToml>,
) -> Result<Identity, ReleaseError> {
    let cargo_path = dir.join("Cargo.toml");
    let plugin_path = dir.join("plugin.toml");
    let cargo: CargoToml = parse_toml(&cargo_path, cargo_toml)?;
    if let Some(version) = plugin.and_then(|p| p.version.as_ref()) {
        return Err(plugin_files_error(
            &plugin_path,
            format!(
                "`version = \"{version}\"` is only for a plugin without a Cargo.toml; a Rust plugin's version is its crate's ({}), the one env!(\"CARGO_PKG_VERSION\") reports in describe(): remove `version` from plugin.toml",
                cargo_path.display()
            ),
        ));
    }
    let (version, version_from) = match cargo.package.version {
        toml::Value::String(v) => (v, cargo_path.clone()),
        _ => {
            // `version.workspace = true`: the workspace root is the parent.
            let root = dir.parent().unwrap_or(Path::new(".")).join("Cargo.toml");
            let version = parse_toml::<toml::Table>(&root, &read(&root)?)?
                .get("workspace")
                .and_then(|w| w.get("package"))
                .and_then(|p| p.get("version"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    plugin_files_error(
                        &root,
                        "no [workspace.package] version to inherit".to_string(),
                    )
                })?;
            (version, root)
        }
    };
    let (name, name_from) = match plugin.and_then(|p| p.name.clone()) {
        Some(name) => (name, plugin_path),
        None => (cargo.package.name, cargo_path),
    };
    Ok(Identity {
        name,
        name_from,
        version,
        version_from,
    })
}

/// A plugin in another language's: `plugin.toml` must give both.
fn plugin_toml_identity(dir: &Path, plugin: Option<&PluginToml>) -> Result<Identity, ReleaseError> {
    let plugin_path = dir.join("plugin.toml");
    let Some(plugin) = plugin else {
        return Err(plugin_files_error(
            dir,
            "no Cargo.toml and no plugin.toml: a Rust plugin's directory is its crate's (with Cargo.toml); a plugin in another language (Python, JavaScript…) needs a plugin.toml giving its `name` and `version` (the ones its describe() returns), `description` and [capabilities]".to_string(),
        ));
    };
    match (&plugin.name, &plugin.version) {
        (Some(name), Some(version)) => Ok(Identity {
            name: name.clone(),
            name_from: plugin_path.clone(),
            version: version.clone(),
            version_from: plugin_path,
        }),
        (name, version) => {
            let (add, what) = match (name, version) {
                (None, None) => ("name = \"…\" and version = \"…\"", "name and version"),
                (None, Some(_)) => ("name = \"…\"", "name"),
                _ => ("version = \"…\"", "version"),
            };
            Err(plugin_files_error(
                &plugin_path,
                format!(
                    "without a Cargo.toml (a plugin in Python, JavaScript or another language), plugin.toml gives the plugin's name and version: add {add}, the {what} its describe() returns"
                ),
            ))
        }
    }
}

/// Read a plugin's directory: the description and capabilities from
/// `plugin.toml`, the name and version by the rule of [`PluginKind`]. With
/// a `Cargo.toml`, the version is the crate's (or its workspace's when
/// inherited) and `plugin.toml` must not give one; without, `plugin.toml`
/// must give `name` and `version`. The name must be a plugin name and the
/// version a semantic version. `expected_version` (e.g. from a release
/// tag) must equal the version: the component describes itself with that
/// version and the host checks both agree.
pub fn read_plugin_dir(
    dir: &Path,
    expected_version: Option<&str>,
) -> Result<PluginDescription, ReleaseError> {
    let plugin_path = dir.join("plugin.toml");
    let plugin: Option<PluginToml> = read_if_present(&plugin_path)?
        .map(|bytes| parse_toml(&plugin_path, &bytes))
        .transpose()?;
    let (kind, id) = match read_if_present(&dir.join("Cargo.toml"))? {
        Some(bytes) => (
            PluginKind::RustCrate,
            crate_identity(dir, &bytes, plugin.as_ref())?,
        ),
        None => (
            PluginKind::Other,
            plugin_toml_identity(dir, plugin.as_ref())?,
        ),
    };
    let Identity {
        name,
        name_from,
        version,
        version_from,
    } = id;
    if !valid_plugin_name(&name) {
        return Err(plugin_files_error(
            &name_from,
            format!(
                "`{name}` is not a plugin name: lowercase ASCII letters, digits and `-`, starting with a letter, at most 64 bytes"
            ),
        ));
    }
    if semver::Version::parse(&version).is_err() {
        return Err(plugin_files_error(
            &version_from,
            format!("version `{version}` is not a semantic version (e.g. 1.2.0)"),
        ));
    }
    if let Some(expected) = expected_version.filter(|e| *e != version) {
        let message = match kind {
            PluginKind::RustCrate => format!(
                "the crate's version is {version}, not {expected}: bump the crate version before tagging the release"
            ),
            PluginKind::Other => format!(
                "the plugin's version is {version}, not {expected}: bump `version` here, and the version describe() returns, before tagging the release"
            ),
        };
        return Err(plugin_files_error(&version_from, message));
    }
    let plugin = plugin.unwrap_or_default();
    Ok(PluginDescription {
        name,
        version,
        description: plugin.description,
        capabilities: plugin.capabilities,
        source: Source::default(),
        kind,
        name_from,
        version_from,
    })
}

/// Check that release tag `tag` is `<name>/v<version>` of `plugin` (the
/// layout the registry serves and the workflows release).
pub fn check_tag(tag: &str, plugin: &PluginDescription) -> Result<(), ReleaseError> {
    let expected = format!("{}/v{}", plugin.name, plugin.version);
    if tag == expected {
        return Ok(());
    }
    let why = match tag.rsplit_once("/v") {
        None => "a release tag is `<plugin>/v<version>`".to_string(),
        Some((name, _)) if name != plugin.name => format!(
            "it names the plugin `{name}`, {} names it `{}`",
            plugin.name_from.display(),
            plugin.name
        ),
        Some((_, version)) => format!(
            "it names version {version}, {} says {}: bump the version before tagging",
            plugin.version_from.display(),
            plugin.version
        ),
    };
    Err(ReleaseError::Tag {
        tag: tag.to_string(),
        expected,
        why,
    })
}

/// Check that the component's `describe` reports `plugin`'s name and
/// version.
pub fn check_described(
    described: &Described,
    plugin: &PluginDescription,
) -> Result<(), ReleaseError> {
    if described.name != plugin.name {
        return Err(ReleaseError::Mismatch {
            field: "name",
            described: described.name.clone(),
            expected: plugin.name.clone(),
            expected_from: plugin.name_from.display().to_string(),
            advice: "the host would refuse it under that name; make describe() and the plugin's name agree",
        });
    }
    if described.version != plugin.version {
        return Err(ReleaseError::Mismatch {
            field: "version",
            described: described.version.clone(),
            expected: plugin.version.clone(),
            expected_from: plugin.version_from.display().to_string(),
            advice: match plugin.kind {
                PluginKind::RustCrate => {
                    "the host would refuse it against its manifest; make describe() report the crate's version (env!(\"CARGO_PKG_VERSION\")) and rebuild"
                }
                PluginKind::Other => {
                    "the host would refuse it against its manifest; make describe() report the version of plugin.toml and rebuild"
                }
            },
        });
    }
    Ok(())
}

/// What a release records besides the plugin: the audit it passed and the
/// tools that built it.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The audit report (`audit --json-report`) of the audit job, as its
    /// bytes: the component must be the one it describes, its verdict must
    /// not be rejected; it becomes a signed release asset.
    pub audit_report: Option<(PathBuf, Vec<u8>)>,
    /// A person approved the release (set only by the job that runs after
    /// the review). Required when the verdict is flagged.
    pub reviewed: bool,
    /// Tool → version, recorded in the manifest.
    pub toolchain: BTreeMap<String, String>,
}

/// The release asset names of a plugin version's audit report and its
/// signature.
pub fn audit_asset_names(name: &str, version: &str) -> (String, String) {
    let base = format!("{name}-{version}.audit.json");
    (base.clone(), format!("{base}.minisig"))
}

/// The findings of a recorded report at `level`, for messages.
fn findings_text(report: &RecordedReport, level: crate::audit::Level) -> String {
    report
        .findings
        .iter()
        .filter(|f| f.level == level)
        .map(|f| format!("{}: {}", f.rule, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The release assets written by [`package`].
#[derive(Debug, Clone)]
pub struct Packaged {
    /// The manifest.
    pub manifest: Manifest,
    /// Component, manifest and signature files, then the audit report and
    /// its signature when one was given.
    pub files: Vec<PathBuf>,
    /// The audit of the component.
    pub report: AuditReport,
    /// What the component's `describe` reported (the plugin's name and
    /// version).
    pub described: Described,
}

/// The manifest `package` signs for `component` of `plugin` (without the
/// audit record), validated; `audit --plugin-dir` audits against it too.
pub fn manifest_for(
    component: &[u8],
    plugin: &PluginDescription,
    max_bytes: u64,
) -> Result<Manifest, ReleaseError> {
    let (name, version) = (plugin.name.as_str(), plugin.version.as_str());
    let (component_file, manifest_file, _) = asset_names(name, version);
    let probe = audit(component, None, max_bytes);
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        abi: format!(
            "{ABI_PACKAGE}@{}",
            probe.abi_version.clone().unwrap_or_default()
        ),
        description: plugin.description.clone(),
        component: ComponentRef {
            file: component_file,
            sha256: sha256_hex(component),
            size: component.len() as u64,
        },
        capabilities: plugin.capabilities.clone(),
        source: plugin.source.clone(),
        audit: None,
        toolchain: BTreeMap::new(),
    };
    manifest.validate().map_err(|e| ReleaseError::PluginFiles {
        path: PathBuf::from(&manifest_file),
        message: e.to_string(),
    })?;
    Ok(manifest)
}

/// Check `component` against the audit report of the audit job: the same
/// digest, not rejected, and, when flagged, `reviewed`. Returns the report.
pub fn check_audit_report(
    component: &[u8],
    path: &Path,
    bytes: &[u8],
    reviewed: bool,
) -> Result<RecordedReport, ReleaseError> {
    let report = RecordedReport::from_bytes(bytes).map_err(|source| ReleaseError::Report {
        path: path.to_path_buf(),
        source,
    })?;
    let digest = sha256_hex(component);
    if report.sha256 != digest {
        return Err(ReleaseError::NotAudited {
            component: digest,
            audited: report.sha256,
        });
    }
    match report.verdict {
        Verdict::Rejected => Err(ReleaseError::ReportRejected(findings_text(
            &report,
            crate::audit::Level::Reject,
        ))),
        Verdict::Flagged if !reviewed => Err(ReleaseError::NeedsReview(findings_text(
            &report,
            crate::audit::Level::Warn,
        ))),
        _ => Ok(report),
    }
}

/// Build the manifest of `component`, audit the component against it (and
/// check it against the audit job's report, when given), check that its
/// `describe` reports the plugin's name and version, sign the manifest (and
/// the report) and write the release assets into `out_dir`. A flagged
/// verdict (this audit's or the report's) needs `provenance.reviewed`.
pub fn package(
    component: &[u8],
    plugin: &PluginDescription,
    key: &SecretKey,
    out_dir: &Path,
    max_bytes: u64,
    provenance: &Provenance,
) -> Result<Packaged, ReleaseError> {
    let (name, version) = (plugin.name.as_str(), plugin.version.as_str());
    let (component_file, manifest_file, signature_file) = asset_names(name, version);
    let (report_file, report_signature_file) = audit_asset_names(name, version);
    // The audit job's report first: a component that is not the audited
    // one is refused whatever else it is.
    let recorded = provenance
        .audit_report
        .as_ref()
        .map(|(path, bytes)| check_audit_report(component, path, bytes, provenance.reviewed))
        .transpose()?;
    let mut manifest = manifest_for(component, plugin, max_bytes)?;
    let report = audit(component, Some(&manifest), max_bytes);
    if !report.accepted() {
        return Err(ReleaseError::Rejected(Box::new(report)));
    }
    // The verdict recorded is the worse of this audit and the audit job's
    // (which also holds the capability diff's findings).
    let verdict = recorded
        .as_ref()
        .map_or(report.verdict, |r| r.verdict.max(report.verdict));
    if verdict == Verdict::Flagged && !provenance.reviewed {
        return Err(ReleaseError::NeedsReview(
            report
                .findings
                .iter()
                .map(|f| format!("{}: {}", f.rule, f.message))
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    manifest.audit = Some(AuditRecord {
        verdict,
        reviewed: provenance.reviewed,
        report: provenance
            .audit_report
            .as_ref()
            .map(|_| report_file.clone()),
        report_sha256: provenance
            .audit_report
            .as_ref()
            .map(|(_, bytes)| sha256_hex(bytes)),
    });
    manifest.toolchain = provenance.toolchain.clone();
    manifest.validate().map_err(|e| ReleaseError::PluginFiles {
        path: PathBuf::from(&manifest_file),
        message: e.to_string(),
    })?;
    let described = describe(component)?;
    check_described(&described, plugin)?;
    let manifest_bytes = manifest.to_bytes();
    let trusted_comment = format!(
        "timestamp:{}\tfile:{manifest_file}\tplugin:{name}@{version}\tsha256:{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        manifest.component.sha256
    );
    let signature =
        key.sign(&manifest_bytes, &trusted_comment)
            .map_err(|e| ReleaseError::PluginFiles {
                path: PathBuf::from(&manifest_file),
                message: e.to_string(),
            })?;
    std::fs::create_dir_all(out_dir).map_err(|source| ReleaseError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut files = vec![
        out_dir.join(component_file),
        out_dir.join(&manifest_file),
        out_dir.join(signature_file),
    ];
    write(&files[0], component)?;
    write(&files[1], &manifest_bytes)?;
    write(&files[2], signature.to_text().as_bytes())?;
    if let Some((_, bytes)) = &provenance.audit_report {
        // The report exactly as the audit job wrote it: its digest is in
        // the signed manifest, and it is signed itself.
        let comment = format!(
            "file:{report_file}\tplugin:{name}@{version}\tverdict:{verdict}\tsha256:{}",
            manifest.component.sha256
        );
        let report_signature =
            key.sign(bytes, &comment)
                .map_err(|e| ReleaseError::PluginFiles {
                    path: PathBuf::from(&report_file),
                    message: e.to_string(),
                })?;
        files.push(out_dir.join(&report_file));
        files.push(out_dir.join(report_signature_file));
        write(&files[3], bytes)?;
        write(&files[4], report_signature.to_text().as_bytes())?;
    }
    Ok(Packaged {
        manifest,
        files,
        report,
        described,
    })
}

/// Upload `assets` to the GitHub release `tag` of `repo` (`owner/name`),
/// creating the release if needed, with `notes` (Markdown) as its
/// description; a release that exists gets `notes` as its description.
/// Existing assets are never replaced: a published version is immutable.
pub async fn publish(
    api_url: &str,
    repo: &str,
    token: &str,
    tag: &str,
    assets: &[PathBuf],
    notes: Option<&str>,
) -> Result<String, ReleaseError> {
    let api = |e: reqwest::Error| ReleaseError::Api(e.to_string());
    let client = reqwest::Client::builder()
        .user_agent(concat!("plugin-registry/", env!("CARGO_PKG_VERSION")))
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .map_err(api)?;
    let api_url = api_url.trim_end_matches('/');
    let request = |method: reqwest::Method, url: &str| {
        client
            .request(method, url)
            .bearer_auth(token)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    };

    let existing = request(
        reqwest::Method::GET,
        &format!("{api_url}/repos/{repo}/releases/tags/{tag}"),
    )
    .send()
    .await
    .map_err(api)?;
    let release: serde_json::Value = match existing.status().as_u16() {
        200 => {
            let release: serde_json::Value = existing.json().await.map_err(api)?;
            if let (Some(notes), Some(url)) = (notes, release["url"].as_str()) {
                let edited = request(reqwest::Method::PATCH, url)
                    .json(&serde_json::json!({ "body": notes }))
                    .send()
                    .await
                    .map_err(api)?;
                if !edited.status().is_success() {
                    return Err(ReleaseError::Api(format!(
                        "setting the notes of release {tag}: HTTP {}",
                        edited.status()
                    )));
                }
            }
            release
        }
        404 => {
            let created = request(reqwest::Method::POST, &format!("{api_url}/repos/{repo}/releases"))
                .json(&serde_json::json!({ "tag_name": tag, "name": tag, "body": notes.unwrap_or_default(), "draft": false, "prerelease": false }))
                .send()
                .await
                .map_err(api)?;
            if created.status().as_u16() != 201 {
                let status = created.status();
                return Err(ReleaseError::Api(format!(
                    "creating release {tag}: {status}: {}",
                    created.text().await.unwrap_or_default()
                )));
            }
            created.json().await.map_err(api)?
        }
        status => {
            return Err(ReleaseError::Api(format!(
                "looking up release {tag}: HTTP {status}"
            )));
        }
    };
    let upload_url = release["upload_url"]
        .as_str()
        .ok_or_else(|| ReleaseError::Api("the release has no upload_url".to_string()))?;
    let upload_url = upload_url
        .split('{')
        .next()
        .unwrap_or(upload_url)
        .to_string();
    let present: Vec<&str> = release["assets"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    for path in assets {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ReleaseError::Api(format!("{} has no file name", path.display())))?;
        if present.contains(&name.as_str()) {
            return Err(ReleaseError::Api(format!(
                "release {tag} already has an asset {name}; published versions are immutable, bump the version"
            )));
        }
        let bytes = read(path)?;
        let response = request(reqwest::Method::POST, &upload_url)
            .query(&[("name", name.as_str())])
            .header("Content-Type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .map_err(api)?;
        if response.status().as_u16() != 201 {
            let status = response.status();
            return Err(ReleaseError::Api(format!(
                "uploading {name}: {status}: {}",
                response.text().await.unwrap_or_default()
            )));
        }
    }
    Ok(release["html_url"].as_str().unwrap_or(tag).to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn plugin(name: &str, version: &str) -> PluginDescription {
        PluginDescription {
            name: name.to_string(),
            version: version.to_string(),
            description: String::new(),
            capabilities: Capabilities::default(),
            source: Source::default(),
            kind: PluginKind::RustCrate,
            name_from: PathBuf::from("demo/plugin.toml"),
            version_from: PathBuf::from("demo/Cargo.toml"),
        }
    }

    /// A plugin directory with these files (`(name, content)`).
    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    fn plugin_files_error(dir: &Path, expected_version: Option<&str>) -> (PathBuf, String) {
        match read_plugin_dir(dir, expected_version) {
            Err(ReleaseError::PluginFiles { path, message }) => (path, message),
            other => panic!("expected a PluginFiles error, got {other:?}"),
        }
    }

    fn described(name: &str, version: &str) -> Described {
        Described {
            name: name.to_string(),
            version: version.to_string(),
        }
    }

    #[test]
    fn describe_must_report_the_released_name_and_version() {
        let p = plugin("demo", "1.2.0");
        check_described(&described("demo", "1.2.0"), &p).unwrap();
        let e = check_described(&described("other", "1.2.0"), &p).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "the component describes itself as name `other`, but demo/plugin.toml says `demo`"
            ),
            "{e}"
        );
        let e = check_described(&described("demo", "1.1.0"), &p).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "the component describes itself as version `1.1.0`, but demo/Cargo.toml says `1.2.0`"
            ),
            "{e}"
        );
    }

    #[test]
    fn tags_name_the_plugin_and_its_version() {
        let p = plugin("demo", "1.2.0");
        check_tag("demo/v1.2.0", &p).unwrap();
        for (tag, why) in [
            (
                "demo/v1.2.1",
                "it names version 1.2.1, demo/Cargo.toml says 1.2.0",
            ),
            (
                "other/v1.2.0",
                "it names the plugin `other`, demo/plugin.toml names it `demo`",
            ),
            ("v1.2.0", "a release tag is `<plugin>/v<version>`"),
        ] {
            let e = check_tag(tag, &p).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("release tag `{tag}` is not `demo/v1.2.0`")),
                "{e}"
            );
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn what_is_not_a_plugin_component_cannot_be_described() {
        // A core module, not a component.
        assert!(matches!(
            describe(b"\0asm\x01\0\0\0"),
            Err(DescribeError::Load(_))
        ));
        // An empty component: no `assessment:plugin/plugin` export.
        assert!(matches!(
            describe(b"\0asm\x0d\0\x01\0"),
            Err(DescribeError::NoDescribe)
        ));
    }

    #[test]
    fn names_and_versions_come_from_plugin_toml_and_cargo_toml() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"crate-name\"\nversion = \"0.3.0\"\n",
        )
        .unwrap();
        let p = read_plugin_dir(dir.path(), None).unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str()),
            ("crate-name", "0.3.0")
        );
        assert_eq!(p.name_from, dir.path().join("Cargo.toml"));
        std::fs::write(dir.path().join("plugin.toml"), "name = \"plugin-name\"\n").unwrap();
        let p = read_plugin_dir(dir.path(), Some("0.3.0")).unwrap();
        assert_eq!(p.name, "plugin-name");
        assert_eq!(p.kind, PluginKind::RustCrate);
        assert_eq!(p.name_from, dir.path().join("plugin.toml"));
        assert_eq!(p.version_from, dir.path().join("Cargo.toml"));
    }

    #[test]
    fn a_crates_version_is_inherited_from_its_workspace() {
        let root = dir_with(&[(
            "Cargo.toml",
            "[workspace]\nmembers = [\"demo\"]\n[workspace.package]\nversion = \"2.0.1\"\n",
        )]);
        let dir = root.path().join("demo");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            "[package]\nname = \"demo\"\nversion.workspace = true\n",
        )
        .unwrap();
        let p = read_plugin_dir(&dir, Some("2.0.1")).unwrap();
        assert_eq!(p.version, "2.0.1");
        assert_eq!(p.version_from, root.path().join("Cargo.toml"));
        let (path, message) = plugin_files_error(&dir, Some("2.0.2"));
        assert_eq!(path, root.path().join("Cargo.toml"));
        assert_eq!(
            message,
            "the crate's version is 2.0.1, not 2.0.2: bump the crate version before tagging the release"
        );
    }

    #[test]
    fn without_cargo_toml_plugin_toml_gives_the_name_and_version() {
        let dir = dir_with(&[
            (
                "plugin.toml",
                "name = \"login-defs\"\nversion = \"0.1.0\"\ndescription = \"Checks\"\n[capabilities]\nread = [\"/etc/login.defs\"]\n",
            ),
            // Not read: plugin.toml is the one source.
            (
                "package.json",
                "{\"name\": \"other\", \"version\": \"9.9.9\"}",
            ),
        ]);
        let p = read_plugin_dir(dir.path(), Some("0.1.0")).unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str(), p.description.as_str()),
            ("login-defs", "0.1.0", "Checks")
        );
        assert_eq!(p.kind, PluginKind::Other);
        assert_eq!(
            p.capabilities.read.iter().collect::<Vec<_>>(),
            ["/etc/login.defs"]
        );
        assert_eq!(p.name_from, dir.path().join("plugin.toml"));
        assert_eq!(p.version_from, dir.path().join("plugin.toml"));
        check_tag("login-defs/v0.1.0", &p).unwrap();
        let e = check_tag("login-defs/v0.2.0", &p).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "it names version 0.2.0, {} says 0.1.0",
                dir.path().join("plugin.toml").display()
            )),
            "{e}"
        );

        let (path, message) = plugin_files_error(dir.path(), Some("0.2.0"));
        assert_eq!(path, dir.path().join("plugin.toml"));
        assert!(
            message.starts_with("the plugin's version is 0.1.0, not 0.2.0: bump `version` here"),
            "{message}"
        );
    }

    #[test]
    fn without_cargo_toml_a_missing_name_or_version_says_what_to_add() {
        for (plugin_toml, needle) in [
            (
                "name = \"login-defs\"\n",
                "add version = \"…\", the version its describe() returns",
            ),
            (
                "version = \"0.1.0\"\n",
                "add name = \"…\", the name its describe() returns",
            ),
            (
                "description = \"Checks\"\n",
                "add name = \"…\" and version = \"…\", the name and version its describe() returns",
            ),
        ] {
            let dir = dir_with(&[("plugin.toml", plugin_toml)]);
            let (path, message) = plugin_files_error(dir.path(), None);
            assert_eq!(path, dir.path().join("plugin.toml"), "{plugin_toml}");
            assert!(
                message.starts_with("without a Cargo.toml (a plugin in Python, JavaScript or another language), plugin.toml gives the plugin's name and version"),
                "{message}"
            );
            assert!(message.ends_with(needle), "{message}");
        }
        // Neither file: the directory is named, and what it needs.
        let dir = dir_with(&[("package.json", "{\"version\": \"0.1.0\"}")]);
        let (path, message) = plugin_files_error(dir.path(), None);
        assert_eq!(path, dir.path());
        assert!(
            message.starts_with("no Cargo.toml and no plugin.toml")
                && message.contains("needs a plugin.toml giving its `name` and `version`"),
            "{message}"
        );
    }

    #[test]
    fn names_and_versions_are_checked_where_they_are_written() {
        let dir = dir_with(&[(
            "plugin.toml",
            "name = \"Login_Defs\"\nversion = \"0.1.0\"\n",
        )]);
        let (path, message) = plugin_files_error(dir.path(), None);
        assert_eq!(path, dir.path().join("plugin.toml"));
        assert!(
            message.starts_with("`Login_Defs` is not a plugin name"),
            "{message}"
        );

        let dir = dir_with(&[("plugin.toml", "name = \"login-defs\"\nversion = \"1.0\"\n")]);
        let (path, message) = plugin_files_error(dir.path(), None);
        assert_eq!(path, dir.path().join("plugin.toml"));
        assert_eq!(
            message,
            "version `1.0` is not a semantic version (e.g. 1.2.0)"
        );

        // A crate name is a plugin name too, and Cargo.toml is named.
        let dir = dir_with(&[(
            "Cargo.toml",
            "[package]\nname = \"login_defs\"\nversion = \"0.1.0\"\n",
        )]);
        let (path, message) = plugin_files_error(dir.path(), None);
        assert_eq!(path, dir.path().join("Cargo.toml"));
        assert!(
            message.starts_with("`login_defs` is not a plugin name"),
            "{message}"
        );

        // A version must be a string, not another TOML value.
        let dir = dir_with(&[("plugin.toml", "name = \"login-defs\"\nversion = 1\n")]);
        let (path, _) = plugin_files_error(dir.path(), None);
        assert_eq!(path, dir.path().join("plugin.toml"));
    }

    #[test]
    fn a_crate_takes_its_version_from_cargo_toml_only() {
        let dir = dir_with(&[
            (
                "Cargo.toml",
                "[package]\nname = \"demo\"\nversion = \"0.3.0\"\n",
            ),
            ("plugin.toml", "version = \"0.3.0\"\n"),
        ]);
        let (path, message) = plugin_files_error(dir.path(), None);
        assert_eq!(path, dir.path().join("plugin.toml"));
        assert!(
            message.starts_with("`version = \"0.3.0\"` is only for a plugin without a Cargo.toml")
                && message.ends_with("remove `version` from plugin.toml"),
            "{message}"
        );
    }

    #[test]
    fn a_version_mismatch_advises_by_kind_of_plugin() {
        let mut p = plugin("demo", "1.2.0");
        let e = check_described(&described("demo", "1.1.0"), &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CARGO_PKG_VERSION"), "{e}");
        p.kind = PluginKind::Other;
        p.version_from = PathBuf::from("demo/plugin.toml");
        let e = check_described(&described("demo", "1.1.0"), &p)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "the component describes itself as version `1.1.0`, but demo/plugin.toml says `1.2.0`"
            ) && e.ends_with("make describe() report the version of plugin.toml and rebuild"),
            "{e}"
        );
    }
}
