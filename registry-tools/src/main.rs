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
use assessment_registry::audit::{DEFAULT_MAX_BYTES, audit};
use assessment_registry::manifest::{Manifest, Source};
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
    /// Audit a component; exits 1 when it is rejected.
    Audit {
        /// The component.
        component: PathBuf,
        /// Also check it against this manifest.
        #[arg(long)]
        manifest: Option<PathBuf>,
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
            json_report,
            text_report,
            max_size,
        } => {
            let bytes = std::fs::read(&component)
                .with_context(|| format!("cannot read {}", component.display()))?;
            let manifest = manifest
                .map(|m| -> anyhow::Result<Manifest> {
                    let bytes = std::fs::read(&m)
                        .with_context(|| format!("cannot read {}", m.display()))?;
                    Ok(Manifest::from_bytes(&bytes)?)
                })
                .transpose()?;
            let report = audit(&bytes, manifest.as_ref(), max_size);
            let text = format!("component: {}\n{}", component.display(), report.to_text());
            print!("{text}");
            if let Some(path) = json_report {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if let Some(path) = text_report {
                std::fs::write(&path, &text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(if report.accepted() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
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
            max_size,
        } => {
            let sk = load_secret_key(secret_key.as_deref())?;
            let bytes = std::fs::read(&component)
                .with_context(|| format!("cannot read {}", component.display()))?;
            let mut plugin = release::read_plugin_dir(&plugin_dir, version.as_deref())?;
            if let Some(tag) = &tag {
                release::check_tag(tag, &plugin)?;
            }
            plugin.source = Source { repository, commit };
            match release::package(&bytes, &plugin, &sk, &out, max_size) {
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
                Err(e) => Err(e.into()),
            }
        }
        Command::Publish {
            assets,
            repo,
            tag,
            api_url,
        } => {
            let token = std::env::var("GITHUB_TOKEN")
                .context("set GITHUB_TOKEN to a token that may write releases")?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let url = runtime.block_on(release::publish(&api_url, &repo, &token, &tag, &assets))?;
            println!("published {} asset(s) to {url}", assets.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::CapabilityDiff(args) => capability_diff::run(args),
    }
}
