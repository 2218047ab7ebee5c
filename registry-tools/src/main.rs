//! `plugin-registry`: create, keygen, sign, verify, audit, package and
//! publish Assessment Runtime plugins. Every step the GitHub workflows run is
//! one of these commands.

mod capability_diff;
mod template;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use assessment_registry::audit::{
    AuditFinding, DEFAULT_MAX_BYTES, Level, RecordedReport, Verdict, audit,
};
use assessment_registry::github;
use assessment_registry::manifest::{Manifest, Source, sha256_hex};
use assessment_registry::minisign::{KdfCost, PublicKey, SecretKey, SignatureBox};
use assessment_registry::release;
use clap::{Parser, Subcommand, ValueEnum};
use zeroize::Zeroizing;

/// The secret key file's content, instead of `--secret-key` (for CI secrets).
const SECRET_KEY_ENV: &str = "PLUGIN_REGISTRY_SECRET_KEY";
/// The secret key's password.
const PASSWORD_ENV: &str = "PLUGIN_REGISTRY_PASSWORD";

#[derive(Debug, Parser)]
#[command(
    name = "plugin-registry",
    version,
    about = "Build-side tools of the Assessment Runtime plugin registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Cost {
    Interactive,
    Sensitive,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a plugin crate: one check, plugin.toml, good and bad
    /// fixtures, unit tests with the SDK's mock host, a README and a GitHub
    /// workflow.
    New {
        /// The plugin's name (lowercase letters, digits and `-`).
        name: String,
        /// The directory to create (default: ./NAME); it must not exist or
        /// be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Depend on the SDK at this path (default: the repository's SDK
        /// when DIR is inside the Assessment Runtime repository, otherwise
        /// the published version).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Generate a key pair (minisign formats). The password comes from
    /// PLUGIN_REGISTRY_PASSWORD; without it, pass --unencrypted.
    Keygen {
        /// Secret key file to create (mode 0600; never overwritten).
        #[arg(long)]
        secret_key: PathBuf,
        /// Public key file to create.
        #[arg(long)]
        public_key: PathBuf,
        /// Store the secret key unencrypted (for a CI secret store only).
        #[arg(long)]
        unencrypted: bool,
        /// Cost of the password key derivation.
        #[arg(long, value_enum, default_value = "interactive")]
        kdf_cost: Cost,
    },
    /// Sign a file; writes FILE.minisig.
    Sign {
        /// The file to sign.
        file: PathBuf,
        /// Secret key file (or PLUGIN_REGISTRY_SECRET_KEY).
        #[arg(long)]
        secret_key: Option<PathBuf>,
        /// Trusted comment (signed too).
        #[arg(long)]
        trusted_comment: Option<String>,
    },
    /// Verify a file against its signature (FILE.minisig by default).
    Verify {
        /// The signed file.
        file: PathBuf,
        /// Public key file, or the base64 key itself.
        #[arg(long)]
        public_key: String,
        /// Signature file.
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// Audit a component. Exits 0 when accepted, 3 when flagged (warnings
    /// only: to be released after a person approves), 1 when rejected, 2 on
    /// an error (an unreadable file).
    Audit {
        /// The component.
        component: PathBuf,
        /// Also check it against this manifest.
        #[arg(long, conflicts_with = "plugin_dir")]
        manifest: Option<PathBuf>,
        /// Also check it against the manifest `package` would sign from
        /// this plugin directory (its declared capabilities); annotations
        /// point into its plugin.toml and source.
        #[arg(long)]
        plugin_dir: Option<PathBuf>,
        /// The capability diff's JSON report (`capability-diff
        /// --json-report`): a widening (or a first release) adds a
        /// `capability-widening` warning, which flags the release.
        #[arg(long)]
        capability_diff: Option<PathBuf>,
        /// Print a GitHub Actions workflow command per finding (`::error`
        /// for a rejection, `::warning` for a flag), which GitHub shows as
        /// annotations on the run and the pull request.
        #[arg(long)]
        github_annotations: bool,
        /// Append the report as a Markdown job summary to this file (in a
        /// workflow: $GITHUB_STEP_SUMMARY).
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Write the machine-readable report here.
        #[arg(long)]
        json_report: Option<PathBuf>,
        /// Write the human-readable report here (it is also printed).
        #[arg(long)]
        text_report: Option<PathBuf>,
        /// Size limit in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
        max_size: u64,
    },
    /// Check that a component is the one an audit report describes (the
    /// same SHA-256): exits 0 when it is, 1 when not.
    CheckDigest {
        /// The component (e.g. a reproducible rebuild, or the artifact to
        /// sign).
        component: PathBuf,
        /// The audit report (`audit --json-report`).
        #[arg(long)]
        audit_report: PathBuf,
    },
    /// Audit, describe and sign a plugin: the component's `describe` must
    /// report the plugin's name and version (and those of --version and
    /// --tag); writes NAME-VERSION.wasm, .manifest.json and
    /// .manifest.json.minisig into --out. A Rust plugin's version is its
    /// crate's (Cargo.toml); a plugin without Cargo.toml (Python,
    /// JavaScript…) gives name and version in plugin.toml.
    Package {
        /// The built component.
        component: PathBuf,
        /// The plugin's directory: a Rust crate's (Cargo.toml, plugin.toml),
        /// or one whose plugin.toml gives `name` and `version`.
        #[arg(long)]
        plugin_dir: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Secret key file (or PLUGIN_REGISTRY_SECRET_KEY).
        #[arg(long)]
        secret_key: Option<PathBuf>,
        /// The version being released (e.g. from the tag); must equal the
        /// plugin's version.
        #[arg(long)]
        version: Option<String>,
        /// The release tag, `<plugin>/v<version>`: must name this plugin
        /// and its version.
        #[arg(long)]
        tag: Option<String>,
        /// Source repository URL recorded in the manifest.
        #[arg(long, default_value = "")]
        repository: String,
        /// Source commit recorded in the manifest.
        #[arg(long, default_value = "")]
        commit: String,
        /// The audit job's report (`audit --json-report`): the component
        /// must be the one it audited (same SHA-256) and not rejected; it
        /// becomes a signed release asset, NAME-VERSION.audit.json, and its
        /// digest and verdict are recorded in the manifest.
        #[arg(long)]
        audit_report: Option<PathBuf>,
        /// A person approved this release: required when the verdict is
        /// flagged. Set only in the job that runs after the review.
        #[arg(long)]
        reviewed: bool,
        /// A tool that built the component and its version, recorded in the
        /// manifest, e.g. `rustc="$(rustc -V)"` (repeatable).
        #[arg(long, value_name = "NAME=VERSION")]
        toolchain: Vec<String>,
        /// Size limit in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
        max_size: u64,
    },
    /// Upload release assets to a GitHub release (token from GITHUB_TOKEN).
    Publish {
        /// The files to upload.
        assets: Vec<PathBuf>,
        /// `owner/name`.
        #[arg(long)]
        repo: String,
        /// Release tag, e.g. `sshd-hardening/v1.2.3`.
        #[arg(long)]
        tag: String,
        /// GitHub API base URL.
        #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
        api_url: String,
        /// The release's description (Markdown), e.g. the capability diff.
        #[arg(long)]
        notes: Option<PathBuf>,
    },
    /// Compare what a release declares (capabilities, imports, size class)
    /// with the latest published release of the plugin, verified with the
    /// registry key; exits 3 when it widens anything or is the first
    /// release (flag it for review), 0 when nothing widened.
    CapabilityDiff(capability_diff::Args),
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn password() -> Option<Zeroizing<Vec<u8>>> {
    std::env::var_os(PASSWORD_ENV).map(|p| Zeroizing::new(p.into_encoded_bytes()))
}

fn load_secret_key(path: Option<&Path>) -> anyhow::Result<SecretKey> {
    let text = match path {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the secret key {}", path.display()))?,
        ),
        None => Zeroizing::new(std::env::var(SECRET_KEY_ENV).with_context(|| {
            format!("no secret key: pass --secret-key or set {SECRET_KEY_ENV}")
        })?),
    };
    let password = password();
    SecretKey::from_text(&text, password.as_deref().map(Vec::as_slice)).with_context(|| {
        format!("cannot load the secret key (is {PASSWORD_ENV} set to its password?)")
    })
}

fn read_public_key(arg: &str) -> anyhow::Result<PublicKey> {
    let text = if Path::new(arg).exists() {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read {arg}"))?
    } else {
        arg.to_string()
    };
    PublicKey::from_text(&text).context("invalid public key")
}

/// The exit code of a flagged audit (and of a release refused for want of a
/// review): "needs review", as `capability-diff` exits on a widening.
const FLAGGED: u8 = 3;

/// 0 accepted, 3 flagged, 1 rejected.
fn verdict_code(verdict: Verdict) -> ExitCode {
    match verdict {
        Verdict::Accepted => ExitCode::SUCCESS,
        Verdict::Flagged => ExitCode::from(FLAGGED),
        Verdict::Rejected => ExitCode::from(1),
    }
}

/// Append to a file (a job summary), creating it if needed.
fn append(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// The audit finding of a capability diff's JSON report (see
/// `capability-diff --json-report`): a `capability-widening` warning when it
/// is flagged (a widening, or a first release), none otherwise.
fn widening_finding(report: &[u8]) -> anyhow::Result<Option<AuditFinding>> {
    #[derive(serde::Deserialize)]
    struct Change {
        kind: String,
        old: Option<String>,
        new: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Diff {
        verdict: String,
        flagged: bool,
        previous_tag: Option<String>,
        #[serde(default)]
        widenings: Vec<Change>,
    }
    let diff: Diff = serde_json::from_slice(report)?;
    if !diff.flagged {
        return Ok(None);
    }
    let changes = diff
        .widenings
        .iter()
        .map(|c| match (&c.old, &c.new) {
            (None, Some(new)) => format!("{} + {new}", c.kind),
            (Some(old), Some(new)) => format!("{} {old} → {new}", c.kind),
            (Some(old), None) => format!("{} - {old}", c.kind),
            (None, None) => c.kind.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let message = match (diff.verdict.as_str(), &diff.previous_tag) {
        ("first-release", _) | (_, None) => format!(
            "the plugin's first release: everything it declares is new and needs a review ({})",
            if changes.is_empty() {
                "nothing declared"
            } else {
                &changes
            }
        ),
        (_, Some(tag)) => format!("declares more than {tag}: {changes}"),
    };
    Ok(Some(AuditFinding {
        rule: "capability-widening",
        level: Level::Warn,
        message,
    }))
}

/// The plugin's main source file, which annotations about what it imports
/// point to: `src/lib.rs` for a crate, else the one `.py` or `.js` file at
/// the top of its directory.
fn plugin_source(dir: &Path) -> Option<PathBuf> {
    let lib = dir.join("src/lib.rs");
    if lib.is_file() {
        return Some(lib);
    }
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "py" || e == "js"))
        .collect();
    sources.sort();
    (sources.len() == 1).then(|| sources.remove(0))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::New {
            name,
            dir,
            sdk_path,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let created = template::create(&name, &dir, sdk_path.as_deref())?;
            for file in &created.files {
                println!("{}", created.dir.join(file).display());
            }
            let sdk = match &created.sdk {
                template::SdkSource::Path(path) => format!("the SDK at {path}"),
                template::SdkSource::Version(version) => format!("assessment-sdk {version}"),
            };
            eprintln!(
                "created plugin {name} in {} (with {sdk}); next: `cargo test`, then `cargo build --release --target wasm32-wasip2`",
                created.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen {
            secret_key,
            public_key,
            unencrypted,
            kdf_cost,
        } => {
            let password = password();
            if password.is_none() && !unencrypted {
                bail!(
                    "set {PASSWORD_ENV} to the password that encrypts the secret key, or pass --unencrypted"
                );
            }
            let cost = match kdf_cost {
                Cost::Interactive => KdfCost::Interactive,
                Cost::Sensitive => KdfCost::Sensitive,
            };
            let sk = SecretKey::generate()?;
            let text = sk.to_text(
                if unencrypted {
                    None
                } else {
                    password.as_deref().map(Vec::as_slice)
                },
                cost,
            )?;
            write_new(&secret_key, text.as_bytes(), 0o600)?;
            write_new(&public_key, sk.public_key().to_text().as_bytes(), 0o644)?;
            println!(
                "key id {}\npublic key {}",
                sk.public_key().key_id_hex(),
                sk.public_key().to_base64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign {
            file,
            secret_key,
            trusted_comment,
        } => {
            let sk = load_secret_key(secret_key.as_deref())?;
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let comment = trusted_comment.unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                format!("timestamp:{now}\tfile:{name}\thashed")
            });
            let signature = sk.sign(&data, &comment)?;
            let mut out = file.clone().into_os_string();
            out.push(".minisig");
            std::fs::write(&out, signature.to_text())
                .with_context(|| format!("cannot write {}", PathBuf::from(&out).display()))?;
            println!(
                "signed {} with key {}",
                file.display(),
                sk.public_key().key_id_hex()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            file,
            public_key,
            signature,
        } => {
            let pk = read_public_key(&public_key)?;
            let sig_path = signature.unwrap_or_else(|| {
                let mut p = file.clone().into_os_string();
                p.push(".minisig");
                PathBuf::from(p)
            });
            let sig = SignatureBox::from_text(
                &std::fs::read_to_string(&sig_path)
                    .with_context(|| format!("cannot read {}", sig_path.display()))?,
            )?;
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            match sig.verify(&pk, &data) {
                Ok(()) => {
                    println!(
                        "signature and comment signature verified\ntrusted comment: {}",
                        sig.trusted_comment
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Audit {
            component,
            manifest,
            plugin_dir,
            capability_diff,
            github_annotations,
            summary,
            json_report,
            text_report,
            max_size,
        } => {
            let bytes = std::fs::read(&component)
                .with_context(|| format!("cannot read {}", component.display()))?;
            let manifest = match (manifest, &plugin_dir) {
                (Some(m), _) => {
                    let text = std::fs::read(&m)
                        .with_context(|| format!("cannot read {}", m.display()))?;
                    Some(Manifest::from_bytes(&text)?)
                }
                (None, Some(dir)) => {
                    let plugin = release::read_plugin_dir(dir, None)?;
                    Some(release::manifest_for(&bytes, &plugin, max_size)?)
                }
                (None, None) => None,
            };
            let mut report = audit(&bytes, manifest.as_ref(), max_size);
            if let Some(path) = capability_diff {
                let text = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if let Some(finding) = widening_finding(&text)
                    .with_context(|| format!("{}: not a capability-diff report", path.display()))?
                {
                    report.add_finding(finding);
                }
            }
            let name = component.display().to_string();
            let text = format!("component: {name}\n{}", report.to_text());
            if github_annotations {
                let plugin_toml = plugin_dir.as_ref().map(|d| d.join("plugin.toml"));
                let source = plugin_dir.as_deref().and_then(plugin_source);
                print!(
                    "{}",
                    github::annotations(&report, &name, |rule| github::file_for_rule(
                        rule,
                        plugin_toml.as_deref(),
                        source.as_deref()
                    ))
                );
            }
            print!("{text}");
            if let Some(path) = json_report {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if let Some(path) = text_report {
                std::fs::write(&path, &text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if let Some(path) = summary {
                append(&path, github::summary(&report, &name).as_bytes())?;
            }
            Ok(verdict_code(report.verdict))
        }
        Command::CheckDigest {
            component,
            audit_report,
        } => {
            let bytes = std::fs::read(&component)
                .with_context(|| format!("cannot read {}", component.display()))?;
            let text = std::fs::read(&audit_report)
                .with_context(|| format!("cannot read {}", audit_report.display()))?;
            let report = RecordedReport::from_bytes(&text)
                .with_context(|| audit_report.display().to_string())?;
            let digest = sha256_hex(&bytes);
            if digest == report.sha256 {
                println!(
                    "{}: sha256 {digest}, the audited component",
                    component.display()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "error: {}: sha256 {digest}, but {} audited {}: not the audited component",
                    component.display(),
                    audit_report.display(),
                    report.sha256
                );
                Ok(ExitCode::from(1))
            }
        }
        Command::Package {
            component,
            plugin_dir,
            out,
            secret_key,
            version,
            tag,
            repository,
            commit,
            audit_report,
            reviewed,
            toolchain,
            max_size,
        } => {
            let audit_report = audit_report
                .map(|path| -> anyhow::Result<(PathBuf, Vec<u8>)> {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Ok((path, bytes))
                })
                .transpose()?;
            let toolchain = toolchain
                .iter()
                .map(|entry| {
                    entry
                        .split_once('=')
                        .filter(|(name, version)| !name.is_empty() && !version.trim().is_empty())
                        .map(|(name, version)| (name.to_string(), version.trim().to_string()))
                        .with_context(|| format!("--toolchain {entry:?}: expected NAME=VERSION"))
                })
                .collect::<anyhow::Result<_>>()?;
            let provenance = release::Provenance {
                audit_report,
                reviewed,
                toolchain,
            };
            let sk = load_secret_key(secret_key.as_deref())?;
            let bytes = std::fs::read(&component)
                .with_context(|| format!("cannot read {}", component.display()))?;
            let mut plugin = release::read_plugin_dir(&plugin_dir, version.as_deref())?;
            if let Some(tag) = &tag {
                release::check_tag(tag, &plugin)?;
            }
            plugin.source = Source { repository, commit };
            match release::package(&bytes, &plugin, &sk, &out, max_size, &provenance) {
                Ok(packaged) => {
                    let from = if plugin.name_from == plugin.version_from {
                        plugin.name_from.display().to_string()
                    } else {
                        format!(
                            "{} and {}",
                            plugin.name_from.display(),
                            plugin.version_from.display()
                        )
                    };
                    eprintln!(
                        "describe(): {} {} (matches {from})",
                        packaged.described.name, packaged.described.version,
                    );
                    for f in &packaged.files {
                        println!("{}", f.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(release::ReleaseError::Rejected(report)) => {
                    eprint!("{}", report.to_text());
                    eprintln!("error: the audit rejected {}", component.display());
                    Ok(ExitCode::from(1))
                }
                Err(
                    e @ (release::ReleaseError::NotAudited { .. }
                    | release::ReleaseError::ReportRejected(_)),
                ) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(1))
                }
                Err(e @ release::ReleaseError::NeedsReview(_)) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(FLAGGED))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Publish {
            assets,
            repo,
            tag,
            api_url,
            notes,
        } => {
            let token = std::env::var("GITHUB_TOKEN")
                .context("set GITHUB_TOKEN to a token that may write releases")?;
            let notes = notes
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))
                })
                .transpose()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let url = runtime.block_on(release::publish(
                &api_url,
                &repo,
                &token,
                &tag,
                &assets,
                notes.as_deref(),
            ))?;
            println!("published {} asset(s) to {url}", assets.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::CapabilityDiff(args) => capability_diff::run(args),
    }
}
