//! `plugin-registry capability-diff`: what a release about to be signed
//! declares beyond the latest published release of the same plugin.
//!
//! The new side is what exists before signing: the built component (its
//! imports and size) and the plugin's directory (its `plugin.toml`, read as
//! `package` reads it), or a manifest `package` wrote. The old side is the
//! highest published version below the new one among the repository's
//! GitHub releases (tags `<plugin>/v<version>`, drafts ignored), downloaded
//! from the release layout the host downloads from and verified with the
//! registry's key: a previous release that does not verify is an error,
//! never a baseline. A registry without any release of the plugin is a
//! first release, whose every declaration is new. The comparison itself is
//! `capability_model::diff`, the one the host logs on upgrade.
//!
//! Exit codes: 0 nothing widened (`unchanged`, `narrowed`), 3 flagged for
//! review (`widened`, `first-release`), 2 an error (as every command).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use assessment_registry::audit::{DEFAULT_MAX_BYTES, audit};
use assessment_registry::manifest::{Manifest, asset_names, release_tag, sha256_hex};
use assessment_registry::minisign::{PublicKey, SignatureBox};
use assessment_registry::release;
use capability_model::diff::{self, CapabilityDiff, Change, Declaration};
use serde::Serialize;

/// The exit code of a release that must be reviewed: it widens what the
/// previous release declared, or it is the plugin's first.
pub const EXIT_FLAGGED: u8 = 3;

/// The report's schema identifier.
pub const REPORT_SCHEMA: &str = "assessment-runtime/capability-diff@1";

/// Largest manifest accepted (as the host).
const MAX_MANIFEST_BYTES: u64 = 64 << 10;
/// Largest signature file accepted (as the host).
const MAX_SIGNATURE_BYTES: u64 = 4 << 10;
/// Largest page of the releases listing accepted.
const MAX_LISTING_BYTES: u64 = 16 << 20;
/// Releases per page of the listing (GitHub's maximum).
const PER_PAGE: usize = 100;
/// Pages read at most: a repository with more releases is refused rather
/// than read without end.
const MAX_PAGES: usize = 100;
/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// Arguments of `capability-diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The built component (its imports and size are compared).
    component: PathBuf,
    /// The plugin's directory, read as `package` reads it (name, version,
    /// the [capabilities] of plugin.toml).
    #[arg(
        long,
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    plugin_dir: Option<PathBuf>,
    /// Instead of --plugin-dir: the manifest `package` wrote for COMPONENT.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The version being released; must equal the plugin's version.
    #[arg(long, conflicts_with = "manifest")]
    version: Option<String>,
    /// The release tag, `<plugin>/v<version>`: must name this plugin and
    /// its version.
    #[arg(long, conflicts_with = "manifest")]
    tag: Option<String>,
    /// `owner/name` of the repository whose releases are the registry.
    #[arg(long)]
    repo: String,
    /// The registry's public key (file, or the base64 key itself): the
    /// previous release must verify with it.
    #[arg(long)]
    public_key: String,
    /// GitHub API base URL (releases are listed there; GITHUB_TOKEN, if
    /// set, is sent to it).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    api_url: String,
    /// GitHub server URL: assets are downloaded from
    /// SERVER/OWNER/NAME/releases/download/PLUGIN/vVERSION/ASSET, as the
    /// host downloads them.
    #[arg(long, env = "GITHUB_SERVER_URL", default_value = "https://github.com")]
    server_url: String,
    /// Write the machine-readable report here.
    #[arg(long)]
    json_report: Option<PathBuf>,
    /// Write a Markdown section for the release notes here.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// The outcome of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing changed.
    Unchanged,
    /// Only narrowings.
    Narrowed,
    /// At least one widening: review.
    Widened,
    /// No previous release: everything is new, review.
    FirstRelease,
}

impl Verdict {
    fn flagged(self) -> bool {
        matches!(self, Verdict::Widened | Verdict::FirstRelease)
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Unchanged => "unchanged",
            Verdict::Narrowed => "narrowed",
            Verdict::Widened => "widened",
            Verdict::FirstRelease => "first-release",
        }
    }
}

/// The release being made.
#[derive(Debug, Clone)]
struct NewRelease {
    name: String,
    version: semver::Version,
    declaration: Declaration,
}

/// The published release it is compared with, verified.
#[derive(Debug, Clone)]
struct Previous {
    version: String,
    tag: String,
    manifest_url: String,
    key_id: String,
    declaration: Declaration,
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct Report<'a> {
    schema: &'static str,
    plugin: &'a str,
    version: String,
    previous_version: Option<&'a str>,
    previous_tag: Option<&'a str>,
    verdict: Verdict,
    flagged: bool,
    widenings: &'a [Change],
    narrowings: &'a [Change],
}

struct Outcome {
    new: NewRelease,
    previous: Option<Previous>,
    diff: CapabilityDiff,
    verdict: Verdict,
}

impl Outcome {
    fn of(new: NewRelease, previous: Option<Previous>) -> Self {
        let baseline = previous
            .as_ref()
            .map(|p| p.declaration.clone())
            .unwrap_or_default();
        let diff = diff::diff(&baseline, &new.declaration);
        let verdict = if previous.is_none() {
            Verdict::FirstRelease
        } else if diff.widened() {
            Verdict::Widened
        } else if !diff.narrowings.is_empty() {
            Verdict::Narrowed
        } else {
            Verdict::Unchanged
        };
        Outcome {
            new,
            previous,
            diff,
            verdict,
        }
    }

    fn report(&self) -> Report<'_> {
        Report {
            schema: REPORT_SCHEMA,
            plugin: &self.new.name,
            version: self.new.version.to_string(),
            previous_version: self.previous.as_ref().map(|p| p.version.as_str()),
            previous_tag: self.previous.as_ref().map(|p| p.tag.as_str()),
            verdict: self.verdict,
            flagged: self.verdict.flagged(),
            widenings: &self.diff.widenings,
            narrowings: &self.diff.narrowings,
        }
    }

    /// What it was compared with, in a sentence.
    fn baseline(&self) -> String {
        match &self.previous {
            Some(p) => format!(
                "{} {} (release {}, {} verified with key {})",
                self.new.name, p.version, p.tag, p.manifest_url, p.key_id
            ),
            None => format!("no published release of {}", self.new.name),
        }
    }

    fn summary(&self) -> String {
        let mut out = format!(
            "{} {}: {} against {}\n",
            self.new.name,
            self.new.version,
            self.verdict.as_str(),
            self.baseline()
        );
        let lines = |out: &mut String, sign: &str, changes: &[Change]| {
            for change in changes {
                out.push_str(&format!("  {sign} {change}\n"));
            }
        };
        lines(&mut out, "+", &self.diff.widenings);
        lines(&mut out, "-", &self.diff.narrowings);
        out.push_str(match self.verdict {
            Verdict::FirstRelease => {
                "flagged for review: a first release, everything it declares is new\n"
            }
            Verdict::Widened => "flagged for review: it declares more than the previous release\n",
            Verdict::Narrowed => "narrowed: it declares less than the previous release\n",
            Verdict::Unchanged => "unchanged: it declares what the previous release declared\n",
        });
        out
    }

    fn markdown(&self) -> String {
        let item = |c: &Change| match (&c.old, &c.new) {
            (None, Some(new)) => format!("- `{}`: `{new}` (new)\n", c.kind),
            (Some(old), None) => format!("- `{}`: `{old}` (removed)\n", c.kind),
            (Some(old), Some(new)) => format!("- `{}`: `{old}` → `{new}`\n", c.kind),
            (None, None) => format!("- `{}`\n", c.kind),
        };
        let mut out = String::from("### Capabilities\n\n");
        match (&self.previous, self.verdict) {
            (None, _) => out.push_str(&format!(
                "First release of `{}`: everything it declares is new (flagged for review).\n\n",
                self.new.name
            )),
            (Some(p), Verdict::Unchanged) => out.push_str(&format!(
                "No change in declared capabilities or imports since {} (`{}`).\n",
                p.version, p.tag
            )),
            (Some(p), _) => out.push_str(&format!(
                "Compared with {} (`{}`, signature verified).\n\n",
                p.version, p.tag
            )),
        }
        if !self.diff.widenings.is_empty() {
            out.push_str(if self.previous.is_some() {
                "**Widened** (flagged for review):\n\n"
            } else {
                "**Declared**:\n\n"
            });
            for c in &self.diff.widenings {
                out.push_str(&item(c));
            }
            out.push('\n');
        }
        if !self.diff.narrowings.is_empty() {
            out.push_str("**Narrowed**:\n\n");
            for c in &self.diff.narrowings {
                out.push_str(&item(c));
            }
            out.push('\n');
        }
        out
    }
}

/// Run `capability-diff`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = super::read_public_key(&args.public_key)?;
    let new = new_release(&args)?;
    let token = std::env::var("GITHUB_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let registry = Registry::new(
        &args.api_url,
        &args.server_url,
        &args.repo,
        token.as_deref(),
    )?;
    let previous = runtime.block_on(registry.previous(&new.name, &new.version, &key))?;
    let outcome = Outcome::of(new, previous);
    if let Some(path) = &args.json_report {
        let mut bytes = serde_json::to_vec_pretty(&outcome.report())?;
        bytes.push(b'\n');
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, outcome.markdown())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!("{}", outcome.summary());
    Ok(if outcome.verdict.flagged() {
        ExitCode::from(EXIT_FLAGGED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The component's imports and size; an error for what is not a component.
fn component_facts(path: &Path, bytes: &[u8]) -> anyhow::Result<(BTreeSet<String>, u64)> {
    let report = audit(bytes, None, u64::MAX);
    if let Some(f) = report
        .findings
        .iter()
        .find(|f| matches!(f.rule, "component" | "validation"))
    {
        bail!("{}: {}", path.display(), f.message);
    }
    Ok((report.imports.into_iter().collect(), report.size))
}

fn new_release(args: &Args) -> anyhow::Result<NewRelease> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("cannot read {}", args.component.display()))?;
    let (imports, size) = component_facts(&args.component, &bytes)?;
    let (name, version, capabilities) = match (&args.plugin_dir, &args.manifest) {
        (Some(dir), _) => {
            let plugin = release::read_plugin_dir(dir, args.version.as_deref())?;
            if let Some(tag) = &args.tag {
                release::check_tag(tag, &plugin)?;
            }
            (plugin.name, plugin.version, plugin.capabilities)
        }
        (None, Some(path)) => {
            let text =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let manifest = Manifest::from_bytes(&text)
                .with_context(|| format!("{} is not a plugin manifest", path.display()))?;
            let sha256 = sha256_hex(&bytes);
            if manifest.component.sha256 != sha256 {
                bail!(
                    "{} describes a component with sha256 {}, but {} has sha256 {sha256}: pass the component it was written for",
                    path.display(),
                    manifest.component.sha256,
                    args.component.display()
                );
            }
            (manifest.name, manifest.version, manifest.capabilities)
        }
        (None, None) => bail!("pass --plugin-dir (or --manifest)"),
    };
    let version = semver::Version::parse(&version)
        .with_context(|| format!("version `{version}` is not a semantic version"))?;
    Ok(NewRelease {
        name,
        version,
        declaration: Declaration {
            capabilities,
            imports,
            component_size: Some(size),
        },
    })
}

/// Why a redirect must not be followed (the host's rule): a download that
/// started on HTTPS stays on HTTPS, and chains are short.
fn redirect_refusal(previous: &[reqwest::Url], next: &reqwest::Url) -> Option<String> {
    if previous.len() >= MAX_REDIRECTS {
        return Some(format!("more than {MAX_REDIRECTS} redirects"));
    }
    let started_secure = previous.first().is_some_and(|u| u.scheme() == "https");
    (started_secure && next.scheme() != "https").then(|| {
        format!(
            "refusing a redirect from HTTPS to {}://{}",
            next.scheme(),
            next.host_str().unwrap_or("?")
        )
    })
}

/// `e` with its causes (reqwest's own message says only "error sending
/// request").
fn with_causes(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Why a request failed.
enum Failure {
    /// An HTTP status other than success.
    Status(u16),
    /// Transport (connection, TLS, timeout, body); `transient` if a retry
    /// may help.
    Transport { message: String, transient: bool },
    /// The body is larger than allowed.
    TooLarge(u64),
}

/// The registry: GitHub releases of one repository.
struct Registry {
    client: reqwest::Client,
    api_url: String,
    download_base: String,
    repo: String,
    token: Option<String>,
}

impl Registry {
    fn new(
        api_url: &str,
        server_url: &str,
        repo: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let valid_part =
            |p: &str| !p.is_empty() && p != "." && p != ".." && !p.contains(['?', '#', '%']);
        match repo.split_once('/') {
            Some((owner, name)) if valid_part(owner) && valid_part(name) && !name.contains('/') => {
            }
            _ => bail!("--repo {repo:?}: expected owner/name"),
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("plugin-registry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::custom(
                |attempt| match redirect_refusal(attempt.previous(), attempt.url()) {
                    Some(why) => attempt.error(why),
                    None => attempt.follow(),
                },
            ))
            .build()
            .context("cannot create the HTTP client")?;
        Ok(Registry {
            client,
            api_url: api_url.trim_end_matches('/').to_string(),
            download_base: format!(
                "{}/{repo}/releases/download",
                server_url.trim_end_matches('/')
            ),
            repo: repo.to_string(),
            token: token.map(str::to_string),
        })
    }

    /// GET `url`, at most `max` bytes; the API's headers (and token) when
    /// `api`. Transient failures (connection, timeout, 5xx, 429) are tried
    /// three times.
    async fn get(&self, url: &str, max: u64, api: bool) -> Result<Vec<u8>, Failure> {
        let mut delay = Duration::from_millis(300);
        let mut attempt = 1;
        loop {
            match self.get_once(url, max, api).await {
                Err(Failure::Status(status)) if (status >= 500 || status == 429) && attempt < 3 => {
                }
                Err(Failure::Transport {
                    transient: true, ..
                }) if attempt < 3 => {}
                other => return other,
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }

    async fn get_once(&self, url: &str, max: u64, api: bool) -> Result<Vec<u8>, Failure> {
        let transport = |e: reqwest::Error| Failure::Transport {
            message: if e.is_timeout() {
                "timed out".to_string()
            } else {
                with_causes(&e)
            },
            transient: e.is_timeout() || e.is_connect() || e.is_body() || e.is_request(),
        };
        let mut request = self.client.get(url);
        if api {
            request = request
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28");
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
        }
        let mut response = request.send().await.map_err(transport)?;
        if !response.status().is_success() {
            return Err(Failure::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|len| len > max) {
            return Err(Failure::TooLarge(max));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(Failure::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A download (or listing) that must succeed, its failure explained
    /// with the URL.
    async fn fetch(&self, url: &str, max: u64, api: bool, what: &str) -> anyhow::Result<Vec<u8>> {
        self.get(url, max, api).await.map_err(|f| match f {
            Failure::Status(404) if api => anyhow::anyhow!(
                "{url}: HTTP 404 listing the releases of {}: no such repository, or the token (GITHUB_TOKEN) may not read it",
                self.repo
            ),
            Failure::Status(404) => anyhow::anyhow!(
                "{url}: HTTP 404: the published release has no {what}; every release needs its manifest, signature and component"
            ),
            Failure::Status(status) => anyhow::anyhow!("{url}: HTTP {status} fetching {what}"),
            Failure::Transport { message, .. } => {
                anyhow::anyhow!("{url}: cannot fetch {what}: {message}")
            }
            Failure::TooLarge(max) => {
                anyhow::anyhow!("{url}: {what} is larger than {max} bytes; refusing it")
            }
        })
    }

    /// The published versions of `name` (tags `<name>/v<version>`), drafts
    /// excluded.
    async fn published_versions(&self, name: &str) -> anyhow::Result<Vec<semver::Version>> {
        let prefix = format!("{name}/v");
        let mut versions = Vec::new();
        for page in 1..=MAX_PAGES {
            let url = format!(
                "{}/repos/{}/releases?per_page={PER_PAGE}&page={page}",
                self.api_url, self.repo
            );
            let body = self
                .fetch(&url, MAX_LISTING_BYTES, true, "the release listing")
                .await?;
            let releases: Vec<serde_json::Value> = serde_json::from_slice(&body)
                .with_context(|| format!("{url}: not a JSON list of releases"))?;
            for r in &releases {
                if r["draft"].as_bool() == Some(true) {
                    continue;
                }
                let Some(tag) = r["tag_name"].as_str() else {
                    bail!("{url}: a release without a tag_name");
                };
                if let Some(v) = tag
                    .strip_prefix(&prefix)
                    .and_then(|v| semver::Version::parse(v).ok())
                {
                    versions.push(v);
                }
            }
            if releases.len() < PER_PAGE {
                return Ok(versions);
            }
        }
        bail!(
            "{}/repos/{}/releases: more than {} releases; refusing to read further",
            self.api_url,
            self.repo,
            MAX_PAGES * PER_PAGE
        )
    }

    /// The highest published version of `name` below `version`, verified
    /// with `key`; `None` when the registry has none.
    async fn previous(
        &self,
        name: &str,
        version: &semver::Version,
        key: &PublicKey,
    ) -> anyhow::Result<Option<Previous>> {
        let Some(old) = self
            .published_versions(name)
            .await?
            .into_iter()
            .filter(|v| v < version)
            .max()
        else {
            return Ok(None);
        };
        let old = old.to_string();
        let tag = release_tag(name, &old);
        let base = format!("{}/{tag}", self.download_base);
        let (_, manifest_asset, signature_asset) = asset_names(name, &old);
        let manifest_url = format!("{base}/{manifest_asset}");
        let manifest_bytes = self
            .fetch(&manifest_url, MAX_MANIFEST_BYTES, false, &manifest_asset)
            .await?;
        let signature_url = format!("{base}/{signature_asset}");
        let signature = self
            .fetch(&signature_url, MAX_SIGNATURE_BYTES, false, &signature_asset)
            .await?;
        let refuse = |why: String| {
            anyhow::anyhow!(
                "the previous release {tag} does not verify with the registry key {}: {why}; refusing to compare with it ({manifest_url}). Check --public-key; if it is right, the published release was tampered with",
                key.key_id_hex()
            )
        };
        let signature = String::from_utf8(signature)
            .map_err(|_| refuse(format!("{signature_url} is not text")))
            .and_then(|text| {
                SignatureBox::from_text(&text).map_err(|e| refuse(format!("{signature_url}: {e}")))
            })?;
        signature
            .verify(key, &manifest_bytes)
            .map_err(|e| refuse(e.to_string()))?;
        let manifest = Manifest::from_bytes(&manifest_bytes)
            .map_err(|e| refuse(format!("a signed but invalid manifest: {e}")))?;
        if manifest.name != name || manifest.version != old {
            return Err(refuse(format!(
                "it carries the manifest of {} {}",
                manifest.name, manifest.version
            )));
        }
        // The imports are the component's: download it, held to the size
        // and digest the signed manifest gives.
        let component_url = format!("{base}/{}", manifest.component.file);
        if manifest.component.size > DEFAULT_MAX_BYTES.max(1 << 30) {
            return Err(refuse(format!(
                "it announces a component of {} bytes",
                manifest.component.size
            )));
        }
        let component = self
            .fetch(
                &component_url,
                manifest.component.size,
                false,
                &manifest.component.file,
            )
            .await?;
        let digest = sha256_hex(&component);
        if component.len() as u64 != manifest.component.size || digest != manifest.component.sha256
        {
            return Err(refuse(format!(
                "{component_url} has sha256 {digest} and {} bytes, the signed manifest says {} and {}",
                component.len(),
                manifest.component.sha256,
                manifest.component.size
            )));
        }
        let (imports, size) = component_facts(Path::new(&component_url), &component)?;
        Ok(Some(Previous {
            version: old,
            tag,
            manifest_url,
            key_id: key.key_id_hex(),
            declaration: Declaration {
                capabilities: manifest.capabilities,
                imports,
                component_size: Some(size),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use capability_model::Capabilities;
    use capability_model::diff::ChangeKind;

    fn release(read: &[&str]) -> Declaration {
        Declaration {
            capabilities: Capabilities {
                read: read.iter().map(|s| s.to_string()).collect(),
                ..Capabilities::default()
            },
            imports: ["assessment:plugin/filesystem@0.2.0".to_string()].into(),
            component_size: Some(1000),
        }
    }

    fn outcome(old: Option<&[&str]>, new: &[&str]) -> Outcome {
        let previous = old.map(|read| Previous {
            version: "0.1.0".into(),
            tag: "demo/v0.1.0".into(),
            manifest_url: "http://x/demo-0.1.0.manifest.json".into(),
            key_id: "ABCD".into(),
            declaration: release(read),
        });
        Outcome::of(
            NewRelease {
                name: "demo".into(),
                version: semver::Version::new(0, 2, 0),
                declaration: release(new),
            },
            previous,
        )
    }

    #[test]
    fn the_verdict_flags_widenings_and_first_releases() {
        let o = outcome(Some(&["/etc"]), &["/etc"]);
        assert_eq!(o.verdict, Verdict::Unchanged);
        assert!(o.markdown().contains("No change in declared capabilities"));
        let o = outcome(Some(&["/etc"]), &["/etc/ssh"]);
        assert_eq!(o.verdict, Verdict::Narrowed);
        let o = outcome(Some(&["/etc/ssh"]), &["/etc", "/proc"]);
        assert_eq!(o.verdict, Verdict::Widened);
        let md = o.markdown();
        assert!(
            md.contains("**Widened** (flagged for review)")
                && md.contains("- `read`: `/etc/ssh` → `/etc`")
                && md.contains("- `read`: `/proc` (new)"),
            "{md}"
        );
        // Widened and narrowed at once is widened.
        let o = outcome(Some(&["/etc/ssh", "/var"]), &["/etc"]);
        assert_eq!(o.verdict, Verdict::Widened);
        assert_eq!(o.diff.narrowings[0].kind, ChangeKind::Read);
        let o = outcome(None, &["/etc"]);
        assert_eq!(o.verdict, Verdict::FirstRelease);
        assert!(o.verdict.flagged());
        let report = serde_json::to_value(o.report()).unwrap();
        assert_eq!(report["verdict"], "first-release");
        assert_eq!(report["previous_version"], serde_json::Value::Null);
        assert_eq!(
            report["widenings"][0],
            serde_json::json!({"kind": "read", "old": null, "new": "/etc"})
        );
        assert!(o.summary().contains("a first release"), "{}", o.summary());
    }

    #[test]
    fn a_redirect_from_https_to_http_is_refused() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(redirect_refusal(&[url("https://a/x")], &url("https://b/y")).is_none());
        assert!(redirect_refusal(&[url("https://a/x")], &url("http://b/y")).is_some());
        assert!(redirect_refusal(&[url("http://a/x")], &url("http://b/y")).is_none());
    }

    #[test]
    fn the_repository_is_owner_and_name() {
        for bad in ["acme", "acme/", "/x", "acme/plugins/x", "../x", "acme/x?y"] {
            assert!(
                Registry::new("http://a", "http://b", bad, None).is_err(),
                "{bad}"
            );
        }
        let r = Registry::new("http://a/", "http://b/", "acme/plugins", None).unwrap();
        assert_eq!(r.download_base, "http://b/acme/plugins/releases/download");
        assert_eq!(r.api_url, "http://a");
    }
}
