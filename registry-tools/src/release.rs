//! Release assets of a plugin version — component, manifest, signature —
//! and their upload to a GitHub release.
//!
//! A plugin crate declares what it needs in `plugin.toml` next to its
//! `Cargo.toml` (which gives the name and version):
//!
//! ```toml
//! name = "sshd-hardening"   # optional: when it differs from the crate name
//! description = "Checks the OpenSSH server configuration"
//! [capabilities]
//! read = ["/etc/ssh"]
//! ```
//!
//! Before signing, [`package`] calls the component's `describe` (see
//! [`describe()`]): the name and version it reports must be the ones being
//! released, as the host refuses a release whose component describes
//! itself otherwise.

mod describe;

pub use describe::{DescribeError, Described, describe};

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::audit::{ABI_PACKAGE, AuditReport, audit};
use crate::manifest::{
    Capabilities, ComponentRef, MANIFEST_SCHEMA, Manifest, Source, asset_names, sha256_hex,
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
    /// `Cargo.toml` or `plugin.toml` is invalid.
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
    /// The plugin's name when it differs from the crate's.
    #[serde(default)]
    name: Option<String>,
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

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    std::fs::write(path, bytes).map_err(|source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    })
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
    /// The file the name comes from (`plugin.toml`, or `Cargo.toml` when
    /// it names none), for messages.
    pub name_from: PathBuf,
    /// The file the version comes from (`Cargo.toml`, or the workspace's).
    pub version_from: PathBuf,
}

/// Name, version (from `Cargo.toml`, or its workspace's when inherited),
/// description and capabilities (`plugin.toml`). `expected_version` (e.g.
/// from a release tag) must equal the crate's version: the component
/// describes itself with that version and the host checks both agree.
pub fn read_plugin_dir(
    dir: &Path,
    expected_version: Option<&str>,
) -> Result<PluginDescription, ReleaseError> {
    let cargo_path = dir.join("Cargo.toml");
    let bad = |path: &Path, message: String| ReleaseError::PluginFiles {
        path: path.to_path_buf(),
        message,
    };
    let parse = |path: &Path| -> Result<toml::Table, ReleaseError> {
        toml::from_str(&String::from_utf8_lossy(&read(path)?)).map_err(|e| bad(path, e.to_string()))
    };
    let cargo: CargoToml = parse(&cargo_path)?
        .try_into()
        .map_err(|e: toml::de::Error| bad(&cargo_path, e.to_string()))?;
    let mut version_from = cargo_path.clone();
    let version = match &cargo.package.version {
        toml::Value::String(v) => v.clone(),
        _ => {
            // `version.workspace = true`: the workspace root is the parent.
            let root = dir.parent().unwrap_or(Path::new(".")).join("Cargo.toml");
            version_from = root.clone();
            parse(&root)?
                .get("workspace")
                .and_then(|w| w.get("package"))
                .and_then(|p| p.get("version"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    bad(
                        &root,
                        "no [workspace.package] version to inherit".to_string(),
                    )
                })?
        }
    };
    if let Some(expected) = expected_version.filter(|e| *e != version) {
        return Err(bad(
            &cargo_path,
            format!(
                "the crate's version is {version}, not {expected}: bump the crate version before tagging the release"
            ),
        ));
    }
    let plugin_path = dir.join("plugin.toml");
    let plugin: PluginToml = if plugin_path.exists() {
        toml::from_str(&String::from_utf8_lossy(&read(&plugin_path)?))
            .map_err(|e| bad(&plugin_path, e.to_string()))?
    } else {
        PluginToml::default()
    };
    let name_from = if plugin.name.is_some() {
        plugin_path
    } else {
        cargo_path
    };
    Ok(PluginDescription {
        name: plugin.name.unwrap_or(cargo.package.name),
        version,
        description: plugin.description,
        capabilities: plugin.capabilities,
        source: Source::default(),
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
            advice: "the host would refuse it against its manifest; make describe() report the crate's version (in Rust, env!(\"CARGO_PKG_VERSION\")) and rebuild",
        });
    }
    Ok(())
}

/// The release assets written by [`package`].
#[derive(Debug, Clone)]
pub struct Packaged {
    /// The manifest.
    pub manifest: Manifest,
    /// Component, manifest and signature files.
    pub files: [PathBuf; 3],
    /// The audit of the component.
    pub report: AuditReport,
    /// What the component's `describe` reported (the plugin's name and
    /// version).
    pub described: Described,
}

/// Build the manifest of `component`, audit the component against it, check
/// that its `describe` reports the plugin's name and version, sign the
/// manifest and write the three release assets into `out_dir`.
pub fn package(
    component: &[u8],
    plugin: &PluginDescription,
    key: &SecretKey,
    out_dir: &Path,
    max_bytes: u64,
) -> Result<Packaged, ReleaseError> {
    let (name, version) = (plugin.name.as_str(), plugin.version.as_str());
    let (component_file, manifest_file, signature_file) = asset_names(name, version);
    let probe = audit(component, None, max_bytes);
    let abi = format!(
        "{ABI_PACKAGE}@{}",
        probe.abi_version.clone().unwrap_or_default()
    );
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        abi,
        description: plugin.description.clone(),
        component: ComponentRef {
            file: component_file.clone(),
            sha256: sha256_hex(component),
            size: component.len() as u64,
        },
        capabilities: plugin.capabilities.clone(),
        source: plugin.source.clone(),
    };
    manifest.validate().map_err(|e| ReleaseError::PluginFiles {
        path: PathBuf::from(&manifest_file),
        message: e.to_string(),
    })?;
    let report = audit(component, Some(&manifest), max_bytes);
    if !report.accepted() {
        return Err(ReleaseError::Rejected(Box::new(report)));
    }
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
    let files = [
        out_dir.join(component_file),
        out_dir.join(manifest_file),
        out_dir.join(signature_file),
    ];
    write(&files[0], component)?;
    write(&files[1], &manifest_bytes)?;
    write(&files[2], signature.to_text().as_bytes())?;
    Ok(Packaged {
        manifest,
        files,
        report,
        described,
    })
}

/// Upload `assets` to the GitHub release `tag` of `repo` (`owner/name`),
/// creating the release if needed. Existing assets are never replaced: a
/// published version is immutable.
pub async fn publish(
    api_url: &str,
    repo: &str,
    token: &str,
    tag: &str,
    assets: &[PathBuf],
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
        200 => existing.json().await.map_err(api)?,
        404 => {
            let created = request(reqwest::Method::POST, &format!("{api_url}/repos/{repo}/releases"))
                .json(&serde_json::json!({ "tag_name": tag, "name": tag, "draft": false, "prerelease": false }))
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
            name_from: PathBuf::from("demo/plugin.toml"),
            version_from: PathBuf::from("demo/Cargo.toml"),
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
        assert_eq!(p.name_from, dir.path().join("plugin.toml"));
        assert_eq!(p.version_from, dir.path().join("Cargo.toml"));
    }
}
