//! The configuration document: the agent configuration file's schema
//! (TOML), which is also the JSON document the control plane serves. The
//! types hold the document as written ("raw"): the runtime validates the
//! values (names, durations, bounds, origins, the local `[policy]`) when it
//! loads them; the control plane checks only this shape (unknown keys,
//! grant keys, types) before it stores a document.

use std::path::PathBuf;

use serde::Deserialize;

use crate::Capabilities;

/// A whole document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[runtime]`: the machine's own settings.
    #[serde(default)]
    pub runtime: RawRuntime,
    /// `[[plugin]]`: the plugins, in order.
    #[serde(default)]
    pub plugin: Vec<RawPlugin>,
    /// `[policy]`: what remote configuration may do at most (only in the
    /// runtime's own file).
    #[serde(default)]
    pub policy: Option<RawPolicy>,
    /// `[service]`: the daemon as a service on this machine (metrics
    /// listener, log level; only in the runtime's own file).
    #[serde(default)]
    pub service: Option<RawService>,
    /// `[network]`: how this machine reaches registries and the control
    /// plane (trust roots, proxy; only in the runtime's own file).
    #[serde(default)]
    pub network: Option<RawNetwork>,
    /// `[control_plane]`: the server and this runtime's credentials, given
    /// here instead of by enrollment (only in the runtime's own file).
    #[serde(default)]
    pub control_plane: Option<RawControlPlane>,
}

impl RawConfig {
    /// The sections present that only the runtime's own file may set: a
    /// document from the control plane carrying one is refused whole.
    pub fn machine_only_sections(&self) -> Vec<&'static str> {
        let mut present = Vec::new();
        if self.policy.is_some() {
            present.push("policy");
        }
        if self.service.is_some() {
            present.push("service");
        }
        if self.network.is_some() {
            present.push("network");
        }
        if self.control_plane.is_some() {
            present.push("control_plane");
        }
        present
    }
}

/// `[service]`: the daemon as a service.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Where the daemon serves `/metrics`, `/healthz` and `/readyz` over
    /// plain HTTP (`"127.0.0.1:9464"`); nothing is served when absent.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// The log filter (`"info"`, `"debug"`, `"info,assessment_runtime=debug"`);
    /// the `ASSESSMENT_RUNTIME_LOG` environment variable overrides it.
    #[serde(default)]
    pub log_level: Option<String>,
}

/// `[network]`: trust roots and proxy for registries and the control plane.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// Registry downloads trust the operating system's certificate store
    /// (default true), besides the roots built into the runtime.
    #[serde(default)]
    pub system_roots: Option<bool>,
    /// The control plane is trusted through the operating system's store
    /// too, not only through the CA it was enrolled with (default false:
    /// for a control plane behind a gateway with an enterprise certificate).
    #[serde(default)]
    pub control_plane_system_roots: Option<bool>,
    /// Extra trusted CA certificates (a PEM file), for registries and the
    /// control plane.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// An HTTP(S) proxy for every request (`"http://proxy:3128"`); without
    /// it, `HTTPS_PROXY`, `HTTP_PROXY` and `ALL_PROXY` apply.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Hosts reached without the proxy (`"internal.example"`,
    /// `".example.com"`, `"10.0.0.0/8"`); without it, `NO_PROXY` applies.
    #[serde(default)]
    pub no_proxy: Option<Vec<String>>,
}

/// `[control_plane]`: a Compliance Framework API (or the reference control
/// plane) reached with credentials an administrator created, without
/// enrollment. The secret itself is never in the file: it is read from a
/// file or an environment variable when the daemon starts.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControlPlane {
    /// The server's base URL (`https://cf.example`), without `/api`.
    #[serde(default)]
    pub url: String,
    /// This runtime's id (a UUID): the `client_id` at `/api/auth/token`
    /// and the `uuid` of its heartbeats.
    #[serde(default)]
    pub runtime_id: String,
    /// A file holding the client secret (its first line), readable only
    /// by the runtime's user.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Plain HTTP to the server (development only).
    #[serde(default)]
    pub dev_plain_http: bool,
}

/// `[policy]`: what remote configuration may do at most. Its grant keys
/// are those of [`Capabilities`], so a new capability needs no change here.
#[derive(Debug, Default)]
pub struct RawPolicy {
    /// Remote documents may add trusted keys.
    pub remote_trusted_keys: bool,
    /// Remote documents may name unsigned local components.
    pub remote_path_plugins: bool,
    /// Registries may be reached over plain HTTP (development).
    pub dev_plain_http_registries: bool,
    /// The most a remote document may grant.
    pub grants: Capabilities,
}

impl<'de> Deserialize<'de> for RawPolicy {
    // serde's `flatten` would let unknown keys through; the switches are
    // taken out by hand and the rest must be grant keys.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut switch = |key: &str| match table.remove(key) {
            None => Ok(false),
            Some(value) => value
                .as_bool()
                .ok_or_else(|| D::Error::custom(format!("`{key}` must be true or false"))),
        };
        Ok(RawPolicy {
            remote_trusted_keys: switch("remote_trusted_keys")?,
            remote_path_plugins: switch("remote_path_plugins")?,
            dev_plain_http_registries: switch("dev_plain_http_registries")?,
            grants: serde_json::from_value(serde_json::Value::Object(table))
                .map_err(D::Error::custom)?,
        })
    }
}

/// `[runtime]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// Where the assessed system's `/` is.
    #[serde(default = "default_root")]
    pub assessment_root: PathBuf,
    /// How many plugin runs may be in flight at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_jobs: usize,
    /// The default limits of every plugin.
    #[serde(default)]
    pub limits: RawLimits,
    /// Where the plugin store and other state live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Minisign public keys (base64 lines) whose signatures are trusted.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Timeout of one registry request (a duration, `"60s"`).
    #[serde(default)]
    pub download_timeout: Option<String>,
    /// Retries of a registry request.
    #[serde(default)]
    pub download_retries: Option<usize>,
    /// How often the daemon sends a heartbeat.
    #[serde(default)]
    pub heartbeat_interval: Option<String>,
    /// How often the daemon polls for configuration.
    #[serde(default)]
    pub config_poll_interval: Option<String>,
    /// How long runs in flight may finish after SIGTERM.
    #[serde(default)]
    pub shutdown_grace: Option<String>,
    /// MiB the results outbox may hold.
    #[serde(default)]
    pub outbox_max_mib: Option<u64>,
    /// The time zone of cron schedules (an IANA name, `"Europe/Berlin"`;
    /// default `"UTC"`).
    #[serde(default)]
    pub time_zone: Option<String>,
}

impl Default for RawRuntime {
    fn default() -> Self {
        RawRuntime {
            assessment_root: default_root(),
            max_concurrent_jobs: default_concurrency(),
            limits: RawLimits::default(),
            state_dir: default_state_dir(),
            trusted_keys: Vec::new(),
            download_timeout: None,
            download_retries: None,
            heartbeat_interval: None,
            config_poll_interval: None,
            shutdown_grace: None,
            outbox_max_mib: None,
            time_zone: None,
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/assessment-runtime")
}

fn default_root() -> PathBuf {
    PathBuf::from("/")
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `[[plugin]]`: one plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    /// Its name; the component must describe itself with it.
    pub name: String,
    /// This configured run of the plugin, distinct across the document
    /// (default: `name`): one plugin may be configured several times.
    #[serde(default)]
    pub instance: Option<String>,
    /// A local component (excludes `version` and `source`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The exact version of a signed release.
    #[serde(default)]
    pub version: Option<String>,
    /// Where signed releases are.
    #[serde(default)]
    pub source: Option<RawSource>,
    /// Disabled plugins are listed but never run.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// When it runs in daemon mode.
    #[serde(default)]
    pub schedule: Option<RawSchedule>,
    /// Configuration values passed to the plugin.
    #[serde(default)]
    pub config: toml::Table,
    /// What it may reach.
    #[serde(default)]
    pub grants: Capabilities,
    /// The bounds of one run.
    #[serde(default)]
    pub limits: RawLimits,
}

fn yes() -> bool {
    true
}

/// The bounds of one run, each optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Memory, MiB.
    pub memory_mib: Option<u64>,
    /// Deadline (a duration).
    pub timeout: Option<String>,
    /// Findings per run.
    pub max_findings: Option<u32>,
    /// KiB of findings per run.
    pub max_findings_kib: Option<u64>,
    /// KiB of log per run.
    pub log_kib: Option<u64>,
    /// KiB of one file read.
    pub max_file_kib: Option<u64>,
    /// MiB of the component.
    pub component_mib: Option<u64>,
    /// Deadline of one command (a duration).
    pub command_timeout: Option<String>,
    /// KiB of one command's output.
    pub command_output_kib: Option<u64>,
}

/// Where a plugin's signed releases are: one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// `owner/repository` on GitHub.
    pub github: Option<String>,
    /// The base URL of a release layout.
    pub url: Option<String>,
}

/// When a plugin runs: one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// An interval (a duration).
    pub every: Option<String>,
    /// A cron expression.
    pub cron: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::from_json;
    use serde_json::json;

    #[test]
    fn a_document_reads_alike_from_toml_and_json() {
        let toml_text = r#"
            [runtime]
            max_concurrent_jobs = 3
            trusted_keys = ["RWQ"]

            [[plugin]]
            name = "sshd-hardening"
            instance = "sshd-jail"
            version = "1.2.3"
            source = { github = "acme/plugins" }
            schedule = { every = "6h" }
            config = { max_auth_tries = 4, users = ["root"] }
            grants = { read = ["/etc/ssh"], host_facts = true }
            limits = { memory_mib = 64, timeout = "30s" }
        "#;
        let json = json!({
            "runtime": { "max_concurrent_jobs": 3, "trusted_keys": ["RWQ"] },
            "plugin": [{
                "name": "sshd-hardening",
                "instance": "sshd-jail",
                "version": "1.2.3",
                "source": { "github": "acme/plugins" },
                "schedule": { "every": "6h" },
                "config": { "max_auth_tries": 4, "users": ["root"] },
                "grants": { "read": ["/etc/ssh"], "host_facts": true },
                "limits": { "memory_mib": 64, "timeout": "30s" }
            }]
        });
        let from_toml: RawConfig = toml::from_str(toml_text).unwrap();
        let from_document: RawConfig = from_json(&json).unwrap();
        for c in [&from_toml, &from_document] {
            assert_eq!(c.runtime.max_concurrent_jobs, 3);
            let p = &c.plugin[0];
            assert_eq!(p.name, "sshd-hardening");
            assert_eq!(p.instance.as_deref(), Some("sshd-jail"));
            assert_eq!(p.version.as_deref(), Some("1.2.3"));
            assert_eq!(
                p.source.as_ref().unwrap().github.as_deref(),
                Some("acme/plugins")
            );
            assert_eq!(p.schedule.as_ref().unwrap().every.as_deref(), Some("6h"));
            assert_eq!(p.config["max_auth_tries"].as_integer(), Some(4));
            assert!(p.grants.host_facts && p.grants.read.contains("/etc/ssh"));
            assert_eq!(p.limits.memory_mib, Some(64));
            assert!(p.enabled);
        }
        assert!(from_document.policy.is_none());
        let empty: RawConfig = from_json(&json!({})).unwrap();
        assert!(empty.plugin.is_empty());
        assert_eq!(
            empty.runtime.state_dir,
            PathBuf::from("/var/lib/assessment-runtime")
        );
    }

    #[test]
    fn unknown_keys_and_grant_keys_are_named_with_their_place() {
        for (document, path) in [
            (json!({ "interval": "1h" }), "interval"),
            (
                json!({ "plugin": [{ "name": "a" }, { "name": "b", "pathh": "/x" }] }),
                "plugin[1].pathh",
            ),
            (
                json!({ "plugin": [{ "name": "a", "grants": { "packagez": true } }] }),
                "plugin[0].grants.packagez",
            ),
            (
                json!({ "plugin": [{ "name": "a", "limits": { "memory": 1 } }] }),
                "plugin[0].limits.memory",
            ),
            (
                json!({ "runtime": { "assessment_rot": "/" } }),
                "runtime.assessment_rot",
            ),
        ] {
            let error = from_json::<RawConfig>(&document).unwrap_err();
            assert_eq!(error.path, path, "{document}: {error}");
            let key = path.rsplit('.').next().unwrap();
            assert!(
                error.message.starts_with(&format!("unknown field `{key}`")),
                "{error}"
            );
        }
        let error = from_json::<RawConfig>(&json!({ "plugin": [{ "name": 3 }] })).unwrap_err();
        assert_eq!(error.path, "plugin[0].name", "{error}");
        let error = from_json::<RawConfig>(&json!({ "plugin": [{}] })).unwrap_err();
        assert!(
            error.to_string().contains("missing field `name`"),
            "{error}"
        );
    }

    #[test]
    fn the_policy_takes_switches_and_grant_keys_only() {
        let c: RawConfig = toml::from_str(
            "[policy]\nremote_trusted_keys = true\nread = [\"/etc\"]\npackages = true\n",
        )
        .unwrap();
        let policy = c.policy.unwrap();
        assert!(policy.remote_trusted_keys && !policy.remote_path_plugins);
        assert!(policy.grants.packages && policy.grants.read.contains("/etc"));
        for bad in [
            "[policy]\nremote_path_plugins = 1\n",
            "[policy]\nnetwork = true\n",
        ] {
            assert!(toml::from_str::<RawConfig>(bad).is_err(), "{bad}");
        }
    }
}
