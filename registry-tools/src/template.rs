//! `plugin-registry new NAME`: a plugin crate to start from, made from the
//! templates in `registry-tools/templates/` (compiled into the binary).
//!
//! The crate has one real check (with a subject and a benchmark reference),
//! its declared capability in `plugin.toml`, `fixtures/good` and
//! `fixtures/bad`, unit tests that run the plugin through the SDK's mock
//! host, a README and a GitHub workflow that tests it and calls the
//! repository's reusable release workflow (`plugin-release.yml`: build,
//! capability diff, audit, review when flagged, sign, publish). Inside this repository it depends on the SDK
//! by path; elsewhere by version (or by `--sdk-path`).

use std::path::{Component, Path, PathBuf};

use assessment_registry::manifest::valid_plugin_name;

/// The SDK's own manifest: its version is what a crate created outside the
/// repository depends on.
const SDK_MANIFEST: &str = include_str!("../../sdk/Cargo.toml");

/// Every file of a new plugin crate: its path and its template.
const FILES: [(&str, &str); 9] = [
    ("Cargo.toml", include_str!("../templates/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("../templates/lib.rs.tmpl")),
    ("plugin.toml", include_str!("../templates/plugin.toml.tmpl")),
    ("README.md", include_str!("../templates/README.md.tmpl")),
    (".gitignore", include_str!("../templates/gitignore.tmpl")),
    (
        ".github/workflows/plugin.yml",
        include_str!("../templates/plugin.yml.tmpl"),
    ),
    (
        "fixtures/good/etc/issue.net",
        include_str!("../templates/issue.net.good.tmpl"),
    ),
    (
        "fixtures/bad/etc/issue.net",
        include_str!("../templates/issue.net.bad.tmpl"),
    ),
    (
        "fixtures/README.md",
        "Trees to assess: each directory stands for the `/` of a system.\n\
         `good` passes every check, `bad` fails them.\n",
    ),
];

/// Why a plugin crate was not created.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The name is not a plugin name.
    #[error(
        "{0:?} is not a plugin name: lowercase letters, digits and `-`, starting with a letter, at most 64 bytes"
    )]
    InvalidName(String),
    /// The target directory exists and is not empty.
    #[error("{} already exists and is not empty", .0.display())]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The SDK's version could not be read from its manifest.
    #[error("the SDK manifest compiled into this tool has no version")]
    SdkVersion,
}

/// Where the new crate gets `assessment-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A path dependency, as written into `Cargo.toml`.
    Path(String),
    /// A registry dependency on this version.
    Version(String),
}

/// A created plugin crate.
#[derive(Debug)]
pub struct Created {
    /// Its directory.
    pub dir: PathBuf,
    /// The files written, relative to `dir`.
    pub files: Vec<&'static str>,
    /// Where it gets the SDK from.
    pub sdk: SdkSource,
}

/// `my-plugin` → `MyPlugin`.
fn type_name(name: &str) -> String {
    name.split('-')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// `dir` made absolute and without `.` or `..`, without touching the file
/// system (the directory may not exist yet).
fn lexical_absolute(dir: &Path) -> Result<PathBuf, TemplateError> {
    let absolute = std::path::absolute(dir).map_err(|source| TemplateError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// The repository that contains `dir`, if any: the nearest ancestor with
/// the SDK (`sdk/Cargo.toml` of `assessment-sdk`) and the WIT.
fn enclosing_repository(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().skip(1).find_map(|ancestor| {
        let manifest = std::fs::read_to_string(ancestor.join("sdk/Cargo.toml")).ok()?;
        let is_sdk = manifest
            .parse::<toml::Table>()
            .ok()?
            .get("package")?
            .get("name")?
            .as_str()?
            == "assessment-sdk";
        (is_sdk && ancestor.join("wit/world.wit").is_file()).then(|| ancestor.to_path_buf())
    })
}

/// `to` relative to `from` (both absolute and lexical).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to[common..] {
        out.push(part);
    }
    out
}

fn sdk_version() -> Result<String, TemplateError> {
    SDK_MANIFEST
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| {
            t.get("package")?
                .get("version")?
                .as_str()
                .map(str::to_string)
        })
        .ok_or(TemplateError::SdkVersion)
}

/// Where a crate created in `dir` gets the SDK from: `sdk_path` when given
/// (relative paths are relative to the current directory), the repository's
/// SDK when `dir` is inside this repository, the registry otherwise.
pub fn sdk_source(dir: &Path, sdk_path: Option<&Path>) -> Result<SdkSource, TemplateError> {
    let dir = lexical_absolute(dir)?;
    if let Some(path) = sdk_path {
        let path = lexical_absolute(path)?;
        // Relative when the two share more than `/` (a crate next to the
        // repository), absolute otherwise.
        let shared = dir
            .components()
            .zip(path.components())
            .take_while(|(a, b)| a == b)
            .count();
        let written = if shared > 1 {
            relative(&dir, &path)
        } else {
            path
        };
        return Ok(SdkSource::Path(written.display().to_string()));
    }
    if let Some(repo) = enclosing_repository(&dir) {
        return Ok(SdkSource::Path(
            relative(&dir, &repo.join("sdk")).display().to_string(),
        ));
    }
    Ok(SdkSource::Version(sdk_version()?))
}

/// The text of every file of plugin `name` with the SDK from `sdk`.
pub fn render(name: &str, sdk: &SdkSource) -> Result<Vec<(&'static str, String)>, TemplateError> {
    if !valid_plugin_name(name) {
        return Err(TemplateError::InvalidName(name.to_string()));
    }
    let (dependency, dev_dependency) = match sdk {
        SdkSource::Path(path) => (
            format!("assessment-sdk = {{ path = {path:?} }}"),
            format!("assessment-sdk = {{ path = {path:?}, features = [\"testing\"] }}"),
        ),
        SdkSource::Version(version) => (
            format!("assessment-sdk = {version:?}"),
            format!("assessment-sdk = {{ version = {version:?}, features = [\"testing\"] }}"),
        ),
    };
    let crate_name = name.replace('-', "_");
    let type_name = type_name(name);
    Ok(FILES
        .iter()
        .map(|(path, template)| {
            let text = template
                .replace("__SDK_DEV_DEPENDENCY__", &dev_dependency)
                .replace("__SDK_DEPENDENCY__", &dependency)
                .replace("__CRATE__", &crate_name)
                .replace("__TYPE__", &type_name)
                .replace("__NAME__", name);
            (*path, text)
        })
        .collect())
}

/// Create plugin crate `name` in `dir` (which must not exist or be empty).
pub fn create(name: &str, dir: &Path, sdk_path: Option<&Path>) -> Result<Created, TemplateError> {
    let sdk = sdk_source(dir, sdk_path)?;
    let files = render(name, &sdk)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TemplateError::Io { path, source }
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(TemplateError::Exists(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dir)(e)),
    }
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(Created {
        dir: dir.to_path_buf(),
        files: files.iter().map(|(rel, _)| *rel).collect(),
        sdk,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    #[test]
    fn every_placeholder_is_filled() {
        let files = render("my-first-plugin", &SdkSource::Version("0.1.0".into())).unwrap();
        assert_eq!(files.len(), FILES.len());
        for (path, text) in &files {
            for placeholder in [
                "__NAME__",
                "__CRATE__",
                "__TYPE__",
                "__SDK_DEPENDENCY__",
                "__SDK_DEV_DEPENDENCY__",
            ] {
                assert!(!text.contains(placeholder), "{path} keeps {placeholder}");
            }
        }
        let text = |p: &str| &files.iter().find(|(path, _)| *path == p).unwrap().1;
        assert!(text("src/lib.rs").contains("struct MyFirstPlugin;"));
        assert!(text("src/lib.rs").contains("PluginInfo::new(\n            \"my-first-plugin\""));
        assert!(text("Cargo.toml").contains("name = \"my-first-plugin\""));
        assert!(text("Cargo.toml").contains("assessment-sdk = \"0.1.0\"\n"));
        assert!(
            text("Cargo.toml")
                .contains("assessment-sdk = { version = \"0.1.0\", features = [\"testing\"] }")
        );
        assert!(text("README.md").contains("release/my_first_plugin.wasm"));
        assert!(text(".github/workflows/plugin.yml").contains("tags: [\"my-first-plugin/v*\"]"));
        // The release steps are the reusable workflow's, not a copy.
        let workflow = text(".github/workflows/plugin.yml");
        assert!(workflow.contains("/.github/workflows/plugin-release.yml@"));
        assert!(workflow.contains("github.ref_name"));
        assert!(!workflow.contains("plugin-registry package"));
        let manifest: toml::Table = text("Cargo.toml").parse().unwrap();
        assert_eq!(manifest["lib"]["crate-type"][0].as_str(), Some("cdylib"));
        let declared: toml::Table = text("plugin.toml").parse().unwrap();
        assert_eq!(
            declared["capabilities"]["read"][0].as_str(),
            Some("/etc/issue.net")
        );
    }

    #[test]
    fn names_are_plugin_names() {
        for bad in ["", "My-Plugin", "1plugin", "my_plugin", "a/b"] {
            assert!(
                matches!(
                    render(bad, &SdkSource::Version("0.1.0".into())),
                    Err(TemplateError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(type_name("cis-2-checks"), "Cis2Checks");
    }

    #[test]
    fn inside_the_repository_the_sdk_is_a_relative_path() {
        let dir = repo().join("target/plugins-made-here/demo");
        assert_eq!(
            sdk_source(&dir, None).unwrap(),
            SdkSource::Path("../../../sdk".to_string())
        );
        let outside = tempfile::tempdir().unwrap();
        assert_eq!(
            sdk_source(&outside.path().join("demo"), None).unwrap(),
            SdkSource::Version(sdk_version().unwrap())
        );
        let forced = sdk_source(&outside.path().join("demo"), Some(&repo().join("sdk"))).unwrap();
        let SdkSource::Path(path) = forced else {
            panic!("{forced:?}")
        };
        assert_eq!(
            lexical_absolute(&outside.path().join("demo").join(&path)).unwrap(),
            repo().join("sdk")
        );
        // Next to each other: relative.
        assert_eq!(
            sdk_source(&repo().join("../demo"), Some(&repo().join("sdk"))).unwrap(),
            SdkSource::Path(format!(
                "../{}/sdk",
                repo().file_name().unwrap().to_string_lossy()
            ))
        );
    }

    #[test]
    fn creates_the_files_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("demo");
        let created = create("demo", &target, Some(&repo().join("sdk"))).unwrap();
        assert_eq!(created.files.len(), FILES.len());
        assert!(target.join("fixtures/bad/etc/issue.net").is_file());
        assert!(target.join(".github/workflows/plugin.yml").is_file());
        assert!(matches!(
            create("demo", &target, None),
            Err(TemplateError::Exists(_))
        ));
    }
}
