//! The operator's agent configuration file (TOML): where the assessed
//! system is, which plugins run, with which configuration values, grants,
//! limits and schedules.
//!
//! Loading validates everything that can be checked without the plugins
//! themselves and fails with an error naming the field. What needs the plugin
//! (its component, the keys it accepts, whether a granted path exists) is
//! checked per plugin when it is prepared, so one bad plugin never stops the
//! others.
//!
//! ```toml
//! [runtime]
//! assessment_root = "/"          # or a mounted image / directory tree
//! max_concurrent_jobs = 2
//!
//! [[plugin]]
//! name = "sshd-hardening"
//! instance = "sshd-host"                 # optional, default the name
//! path = "plugins/sshd_hardening.wasm"   # relative to this file
//! schedule = { every = "6h" }            # or { cron = "0 3 * * *" }
//! config = { max_auth_tries = 4 }
//! grants = { read = ["/etc/ssh"] }
//! limits = { memory_mib = 64, timeout = "30s" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use assessment_registry::manifest::valid_plugin_name;
use assessment_registry::minisign::PublicKey;

use crate::control_plane::settings::ControlPlaneSettings;
use crate::policy::{GrantSet, Limits, LocalPolicy, ceilings};
// The document as written is a wire type: the control plane checks the
// same shape before it serves a document.
use capability_model::wire::config::{
    RawConfig, RawLimits, RawNetwork, RawPolicy, RawSchedule, RawService, RawSource,
};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the agent configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid agent configuration {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid agent configuration {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Names the field and the fix.
        message: String,
    },
    /// Configuration from the control plane asks for more than the
    /// runtime's own `[policy]` allows; it is refused whole.
    #[error(
        "the control plane's configuration exceeds the local policy and is refused whole: {}; the runtime's own file decides what remote configuration may do (`[policy]`)",
        .excess.join("; ")
    )]
    Policy {
        /// Each excess, naming the field.
        excess: Vec<String>,
    },
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The file it was loaded from.
    pub source: PathBuf,
    /// Where the assessed system's `/` is.
    pub assessment_root: PathBuf,
    /// How many plugin runs may be in flight at once.
    pub max_concurrent_jobs: usize,
    /// The configured plugins, enabled or not, in file order.
    pub plugins: Vec<PluginSpec>,
    /// Where the plugin store and other state live.
    pub state_dir: PathBuf,
    /// Keys whose signatures make a registry plugin acceptable.
    pub trusted_keys: Vec<PublicKey>,
    /// Timeout of one registry request.
    pub download_timeout: Duration,
    /// Retries of a registry request after a transient failure.
    pub download_retries: usize,
    /// How often the daemon sends a heartbeat.
    pub heartbeat_interval: Duration,
    /// How often the daemon polls the control plane for configuration.
    pub config_poll_interval: Duration,
    /// How long runs in flight may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Bytes the results outbox may hold.
    pub outbox_max_bytes: u64,
    /// What configuration from the control plane may do at most (always
    /// the local file's).
    pub policy: LocalPolicy,
    /// The time zone cron schedules are read in (default UTC).
    pub time_zone: chrono_tz::Tz,
    /// The daemon as a service (always the local file's).
    pub service: ServiceSettings,
    /// Trust roots and proxy (always the local file's).
    pub network: NetworkSettings,
    /// The server and credentials given in `[control_plane]` instead of by
    /// enrollment (always the local file's).
    pub control_plane: Option<ControlPlaneSettings>,
}

/// `[service]`: the daemon as a service on this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP);
    /// nothing is served when `None`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The log filter, as `ASSESSMENT_RUNTIME_LOG` takes it (which, when
    /// set, overrides it).
    pub log_level: Option<String>,
}

/// `[network]`: how this machine reaches registries and the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Registry downloads also trust the operating system's store.
    pub system_roots: bool,
    /// The control plane is also trusted through the operating system's
    /// store, not only through the CA it was enrolled with.
    pub control_plane_system_roots: bool,
    /// Extra trusted CA certificates (PEM, absolute path).
    pub ca_bundle: Option<PathBuf>,
    /// The proxy for every request; `None`: the standard environment
    /// variables apply.
    pub proxy: Option<String>,
    /// Hosts reached directly; `None`: `NO_PROXY` applies.
    pub no_proxy: Option<Vec<String>>,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            system_roots: true,
            control_plane_system_roots: false,
            ca_bundle: None,
            proxy: None,
            no_proxy: None,
        }
    }
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOrigin {
    /// A local file, unsigned (development).
    Local {
        /// The component file (absolute).
        path: PathBuf,
    },
    /// A signed release from a registry.
    Registry {
        /// The exact version to run.
        version: String,
        /// Base URL of the release layout (`{base}/{name}/v{version}/{asset}`).
        base_url: String,
    },
}

/// One configured plugin.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The name the operator gave it; the component must describe itself
    /// with the same name.
    pub name: String,
    /// This configured run of the plugin, unique in the configuration
    /// (`instance`, default: the name): what jobs, the heartbeat, reports
    /// and evidence streams are keyed by, so that one plugin can run
    /// several times with other configuration and grants.
    pub instance: String,
    /// Where its component comes from.
    pub origin: PluginOrigin,
    /// Disabled plugins are listed but never run.
    pub enabled: bool,
    /// When it runs in daemon mode.
    pub schedule: Option<Schedule>,
    /// Configuration values passed to the plugin, by key.
    pub config: BTreeMap<String, ConfigValue>,
    /// What it may reach.
    pub grants: GrantSet,
    /// The bounds of one run.
    pub limits: Limits,
}

/// A configuration value passed to a plugin.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// A string.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Boolean(bool),
    /// A list of strings.
    TextList(Vec<String>),
}

/// When a plugin runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// At a fixed interval.
    Every(Duration),
    /// On a cron expression (five fields, or six with seconds).
    Cron(Box<croner::Cron>),
}

impl PluginSpec {
    /// Whether `instance` was set to something other than the name.
    pub fn has_own_instance(&self) -> bool {
        self.instance != self.name
    }

    /// The plugin as operators know it, for messages: its name, and its
    /// instance when that differs (`sshd-hardening as sshd-jail`).
    pub fn label(&self) -> String {
        if self.has_own_instance() {
            format!("{} as {}", self.name, self.instance)
        } else {
            self.name.clone()
        }
    }

    /// The component file or release URL, for messages.
    pub fn location(&self) -> String {
        match &self.origin {
            PluginOrigin::Local { path } => path.display().to_string(),
            PluginOrigin::Registry { version, base_url } => {
                format!(
                    "{}/{}",
                    base_url,
                    assessment_registry::manifest::release_tag(&self.name, version)
                )
            }
        }
    }
}

impl AgentConfig {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        Self::parse(&text, path, base)
    }

    /// Validate configuration `text`; relative plugin paths are taken
    /// relative to `base`. `source` only names the file in errors.
    pub fn parse(text: &str, source: &Path, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: source.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Self::from_raw(raw, source, base, None)
    }

    /// Validate a configuration document in JSON as the control plane
    /// serves it (the file's schema and rules), within the `local`
    /// configuration's policy: the machine's own settings (state
    /// directory, assessment root, policy) and trusted keys stay the local
    /// file's; anything beyond the policy refuses the whole document.
    pub fn from_remote(
        document: &serde_json::Value,
        local: &AgentConfig,
    ) -> Result<Self, ConfigError> {
        let source = Path::new("control plane configuration");
        let raw: RawConfig =
            serde_json::from_value(document.clone()).map_err(|e| ConfigError::Parse {
                path: source.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut excess = Vec::new();
        for section in raw.machine_only_sections() {
            let what = match section {
                "policy" => "the ceiling on remote configuration is",
                "service" => "the metrics listener and log level are",
                "control_plane" => "the server and this runtime's credentials are",
                _ => "trust roots and proxies are",
            };
            excess.push(format!(
                "{section}: {what} set only in the runtime's own file"
            ));
        }
        if !local.policy.remote_trusted_keys {
            for (i, key) in raw.runtime.trusted_keys.iter().enumerate() {
                let known =
                    PublicKey::from_text(key).is_ok_and(|k| local.trusted_keys.contains(&k));
                if !known {
                    excess.push(format!(
                        "runtime.trusted_keys[{i}]: a key the local file does not trust (policy.remote_trusted_keys = false)"
                    ));
                }
            }
        }
        // Refused above; the local file's is used, so it is not validated.
        let raw = RawConfig {
            control_plane: None,
            ..raw
        };
        let mut config = Self::from_raw(raw, source, &local.state_dir, Some(local))?;
        for (i, plugin) in config.plugins.iter().enumerate() {
            let field = format!("plugin[{i}] ({})", plugin.instance);
            if matches!(plugin.origin, PluginOrigin::Local { .. })
                && !local.policy.remote_path_plugins
            {
                excess.push(format!(
                    "{field}.path: an unsigned local component (policy.remote_path_plugins = false)"
                ));
            }
            excess.extend(
                local
                    .policy
                    .excess(&format!("{field}.grants"), &plugin.grants),
            );
        }
        if !excess.is_empty() {
            return Err(ConfigError::Policy { excess });
        }
        config.state_dir = local.state_dir.clone();
        config.assessment_root = local.assessment_root.clone();
        config.service = local.service.clone();
        config.network = local.network.clone();
        config.control_plane = local.control_plane.clone();
        Ok(config)
    }

    /// Validate `raw`. With `local`, it is a remote document: the policy is
    /// the local one and the local trusted keys are trusted too.
    fn from_raw(
        raw: RawConfig,
        source: &Path,
        base: &Path,
        local: Option<&AgentConfig>,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: source.to_path_buf(),
            message,
        };
        let policy = match local {
            Some(local) => local.policy.clone(),
            None => resolve_policy(raw.policy.unwrap_or_default()).map_err(invalid)?,
        };

        if raw.runtime.max_concurrent_jobs == 0 || raw.runtime.max_concurrent_jobs > 256 {
            return Err(invalid(format!(
                "runtime.max_concurrent_jobs = {}: must be between 1 and 256",
                raw.runtime.max_concurrent_jobs
            )));
        }
        if !raw.runtime.assessment_root.is_absolute() {
            return Err(invalid(format!(
                "runtime.assessment_root = {:?}: must be an absolute path",
                raw.runtime.assessment_root
            )));
        }
        let defaults = resolve_limits("runtime.limits", &raw.runtime.limits, &Limits::default())
            .map_err(invalid)?;

        let mut plugins = Vec::with_capacity(raw.plugin.len());
        for (i, p) in raw.plugin.into_iter().enumerate() {
            let field = format!("plugin[{i}]");
            if !valid_plugin_name(&p.name) {
                return Err(invalid(format!(
                    "{field}.name = {:?}: use lowercase letters, digits and `-` (e.g. \"sshd-hardening\")",
                    p.name
                )));
            }
            // Where the instance comes from, for errors.
            let (instance, instance_field) = match p.instance {
                Some(instance) => {
                    let at = format!("{field}.instance = {instance:?}");
                    (instance, at)
                }
                None => (
                    p.name.clone(),
                    format!(
                        "{field}.name = {:?} (also its instance, as `instance` is not set)",
                        p.name
                    ),
                ),
            };
            if !valid_plugin_name(&instance) {
                return Err(invalid(format!(
                    "{instance_field}: an instance is named like a plugin: lowercase letters, digits and `-`, starting with a letter, at most 64 bytes (e.g. \"sshd-jail\")"
                )));
            }
            if let Some(j) = plugins
                .iter()
                .position(|q: &PluginSpec| q.instance == instance)
            {
                // Name both entries: the operator renames one of them.
                return Err(invalid(format!(
                    "{instance_field}: plugin[{j}] ({}) already has the instance {instance:?}; instances must be unique: to configure one plugin more than once, give each [[plugin]] its own `instance` (e.g. instance = \"{}-2\")",
                    plugins[j].label(),
                    p.name
                )));
            }
            let field = format!("plugin[{i}] ({instance})");
            let grants = GrantSet::from_capabilities(&format!("{field}.grants"), &p.grants)
                .map_err(invalid)?;
            let limits = resolve_limits(&format!("{field}.limits"), &p.limits, &defaults)
                .map_err(invalid)?;
            let schedule = p
                .schedule
                .map(|s| resolve_schedule(&format!("{field}.schedule"), s))
                .transpose()
                .map_err(invalid)?;
            let config = p
                .config
                .into_iter()
                .map(|(key, value)| {
                    config_value(&value)
                        .map(|v| (key.clone(), v))
                        .ok_or_else(|| {
                            invalid(format!(
                                "{field}.config.{key}: plugins accept strings, integers, floats, booleans and lists of strings, not {}",
                                value.type_str()
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            let origin = resolve_origin(
                &field,
                &p.name,
                p.path,
                p.version,
                p.source,
                base,
                policy.dev_plain_http_registries,
            )
            .map_err(invalid)?;
            plugins.push(PluginSpec {
                name: p.name,
                instance,
                origin,
                enabled: p.enabled,
                schedule,
                config,
                grants,
                limits,
            });
        }

        let mut trusted_keys = local.map_or_else(Vec::new, |l| l.trusted_keys.clone());
        for (i, k) in raw.runtime.trusted_keys.iter().enumerate() {
            let key = PublicKey::from_text(k).map_err(|e| {
                invalid(format!("runtime.trusted_keys[{i}]: {e} (give the base64 line of a minisign public key, \"RW…\")"))
            })?;
            if !trusted_keys.contains(&key) {
                trusted_keys.push(key);
            }
        }
        let first_registry_plugin = plugins
            .iter()
            .enumerate()
            .find(|(_, p)| matches!(p.origin, PluginOrigin::Registry { .. }));
        if let (true, Some((i, p))) = (trusted_keys.is_empty(), first_registry_plugin) {
            return Err(invalid(format!(
                "plugin[{i}] ({}) comes from a registry but runtime.trusted_keys is empty; add the publisher's minisign public key",
                p.instance
            )));
        }
        if !raw.runtime.state_dir.is_absolute() {
            return Err(invalid(format!(
                "runtime.state_dir = {:?}: must be an absolute path",
                raw.runtime.state_dir
            )));
        }
        let download_timeout = match &raw.runtime.download_timeout {
            Some(t) => duration("runtime.download_timeout", t, Duration::from_secs(3600))
                .map_err(invalid)?,
            None => Duration::from_secs(60),
        };
        let interval = |field: &str, value: &Option<String>, default: u64| match value {
            Some(v) => duration(&format!("runtime.{field}"), v, Duration::from_secs(86_400))
                .map_err(invalid),
            None => Ok(Duration::from_secs(default)),
        };
        let heartbeat_interval =
            interval("heartbeat_interval", &raw.runtime.heartbeat_interval, 60)?;
        let config_poll_interval = interval(
            "config_poll_interval",
            &raw.runtime.config_poll_interval,
            60,
        )?;
        let shutdown_grace = interval("shutdown_grace", &raw.runtime.shutdown_grace, 30)?;
        let outbox_max_bytes = bounded(
            "runtime.outbox_max_mib",
            raw.runtime.outbox_max_mib.unwrap_or(256),
            65_536,
        )
        .map_err(invalid)?
            << 20;
        let time_zone = match &raw.runtime.time_zone {
            None => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                invalid(format!(
                    "runtime.time_zone = {name:?}: not a time zone; give an IANA name such as \"UTC\" or \"Europe/Berlin\""
                ))
            })?,
        };
        let service = resolve_service(raw.service.unwrap_or_default()).map_err(invalid)?;
        let network = resolve_network(raw.network.unwrap_or_default()).map_err(invalid)?;
        let control_plane = raw
            .control_plane
            .map(ControlPlaneSettings::from_raw)
            .transpose()
            .map_err(invalid)?;
        let download_retries = raw.runtime.download_retries.unwrap_or(3);
        if download_retries > 10 {
            return Err(invalid(format!(
                "runtime.download_retries = {download_retries}: at most 10"
            )));
        }

        Ok(AgentConfig {
            source: source.to_path_buf(),
            assessment_root: raw.runtime.assessment_root,
            max_concurrent_jobs: raw.runtime.max_concurrent_jobs,
            plugins,
            state_dir: raw.runtime.state_dir,
            trusted_keys,
            download_timeout,
            download_retries,
            heartbeat_interval,
            config_poll_interval,
            shutdown_grace,
            outbox_max_bytes,
            policy,
            time_zone,
            service,
            network,
            control_plane,
        })
    }
}

fn resolve_service(raw: RawService) -> Result<ServiceSettings, String> {
    let metrics_listen = raw
        .metrics_listen
        .map(|text| {
            text.parse::<std::net::SocketAddr>().map_err(|_| {
                format!(
                    "service.metrics_listen = {text:?}: give an address and port, such as \"127.0.0.1:9464\""
                )
            })
        })
        .transpose()?;
    if let Some(level) = &raw.log_level {
        tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .map_err(|e| {
                format!(
                    "service.log_level = {level:?}: {e}; use a level (error, warn, info, debug, trace) or directives such as \"info,assessment_runtime=debug\""
                )
            })?;
    }
    Ok(ServiceSettings {
        metrics_listen,
        log_level: raw.log_level,
    })
}

fn resolve_network(raw: RawNetwork) -> Result<NetworkSettings, String> {
    if let Some(path) = &raw.ca_bundle
        && !path.is_absolute()
    {
        return Err(format!(
            "network.ca_bundle = {path:?}: must be an absolute path"
        ));
    }
    if let Some(proxy) = &raw.proxy {
        let scheme = proxy.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("http" | "https")) || reqwest::Proxy::all(proxy).is_err() {
            return Err(format!(
                "network.proxy = {:?}: give the proxy's URL, such as \"http://proxy.example:3128\"",
                without_password(proxy)
            ));
        }
    }
    let defaults = NetworkSettings::default();
    Ok(NetworkSettings {
        system_roots: raw.system_roots.unwrap_or(defaults.system_roots),
        control_plane_system_roots: raw
            .control_plane_system_roots
            .unwrap_or(defaults.control_plane_system_roots),
        ca_bundle: raw.ca_bundle,
        proxy: raw.proxy,
        no_proxy: raw.no_proxy,
    })
}

/// `url` with the password of its user information replaced by `***`, for
/// errors and logs.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

fn resolve_policy(raw: RawPolicy) -> Result<LocalPolicy, String> {
    Ok(LocalPolicy {
        remote_trusted_keys: raw.remote_trusted_keys,
        remote_path_plugins: raw.remote_path_plugins,
        remote_grants: GrantSet::from_capabilities("policy", &raw.grants)?,
        dev_plain_http_registries: raw.dev_plain_http_registries,
    })
}

fn resolve_origin(
    field: &str,
    name: &str,
    path: Option<PathBuf>,
    version: Option<String>,
    source: Option<RawSource>,
    base: &Path,
    plain_http: bool,
) -> Result<PluginOrigin, String> {
    match (path, version, source) {
        (Some(path), None, None) => Ok(PluginOrigin::Local {
            path: if path.is_absolute() {
                path
            } else {
                base.join(path)
            },
        }),
        (None, Some(version), Some(source)) => {
            if semver::Version::parse(&version).is_err() {
                return Err(format!(
                    "{field}.version = {version:?}: give the exact semantic version to run, e.g. \"1.2.3\""
                ));
            }
            let base_url = match (source.github, source.url) {
                (Some(repo), None) => {
                    let mut parts = repo.split('/');
                    let valid = |p: Option<&str>| {
                        p.is_some_and(|p| {
                            !p.is_empty()
                                && p.chars()
                                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                        })
                    };
                    if !(valid(parts.next()) && valid(parts.next()) && parts.next().is_none()) {
                        return Err(format!(
                            "{field}.source.github = {repo:?}: write \"owner/repository\""
                        ));
                    }
                    format!("https://github.com/{repo}/releases/download")
                }
                (None, Some(url)) => {
                    if url.starts_with("http://") && !plain_http {
                        return Err(format!(
                            "{field}.source.url = {url:?}: registries are reached over HTTPS; plain HTTP needs `dev_plain_http_registries = true` in the runtime's own `[policy]` (development only)"
                        ));
                    }
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(format!(
                            "{field}.source.url = {url:?}: must be an https URL"
                        ));
                    }
                    url.trim_end_matches('/').to_string()
                }
                _ => {
                    return Err(format!(
                        "{field}.source: set exactly one of `github` (\"owner/repo\") or `url`"
                    ));
                }
            };
            Ok(PluginOrigin::Registry { version, base_url })
        }
        (Some(_), _, Some(_)) | (Some(_), Some(_), None) => Err(format!(
            "{field}: `path` (a local development build of `{name}`) excludes `version` and `source` (a signed release)"
        )),
        (None, None, Some(_)) => Err(format!(
            "{field}: a plugin from `source` needs the exact `version` to run"
        )),
        (None, _, None) => Err(format!(
            "{field}: set `path` (a local component) or `version` and `source` (a signed release)"
        )),
    }
}

fn config_value(value: &toml::Value) -> Option<ConfigValue> {
    Some(match value {
        toml::Value::String(s) => ConfigValue::Text(s.clone()),
        toml::Value::Integer(i) => ConfigValue::Integer(*i),
        toml::Value::Float(f) => ConfigValue::Float(*f),
        toml::Value::Boolean(b) => ConfigValue::Boolean(*b),
        toml::Value::Array(items) => ConfigValue::TextList(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()?,
        ),
        toml::Value::Datetime(_) | toml::Value::Table(_) => return None,
    })
}

fn duration(field: &str, text: &str, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| {
        format!("{field} = {text:?}: {e} (write durations like \"30s\", \"5m\", \"6h\")")
    })?;
    if d.is_zero() || d > max {
        return Err(format!(
            "{field} = {text:?}: must be more than 0 and at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

fn bounded<T: PartialOrd + Copy + std::fmt::Display + From<u8>>(
    field: &str,
    value: T,
    max: T,
) -> Result<T, String> {
    if value < T::from(1) || value > max {
        return Err(format!("{field} = {value}: must be between 1 and {max}"));
    }
    Ok(value)
}

fn resolve_limits(field: &str, raw: &RawLimits, base: &Limits) -> Result<Limits, String> {
    let mut limits = base.clone();
    if let Some(v) = raw.memory_mib {
        limits.memory_bytes =
            bounded(&format!("{field}.memory_mib"), v, ceilings::MEMORY_MIB)? << 20;
    }
    if let Some(v) = &raw.timeout {
        limits.timeout = duration(&format!("{field}.timeout"), v, ceilings::TIMEOUT)?;
    }
    if let Some(v) = raw.max_findings {
        limits.max_findings = bounded(&format!("{field}.max_findings"), v, ceilings::MAX_FINDINGS)?;
    }
    if let Some(v) = raw.max_findings_kib {
        limits.max_findings_bytes = bounded(
            &format!("{field}.max_findings_kib"),
            v,
            ceilings::MAX_FINDINGS_KIB,
        )? << 10;
    }
    if let Some(v) = raw.log_kib {
        limits.log_bytes = bounded(&format!("{field}.log_kib"), v, ceilings::LOG_KIB)? << 10;
    }
    if let Some(v) = raw.max_file_kib {
        limits.max_file_bytes =
            bounded(&format!("{field}.max_file_kib"), v, ceilings::MAX_FILE_KIB)? << 10;
    }
    if let Some(v) = raw.component_mib {
        limits.component_bytes = bounded(
            &format!("{field}.component_mib"),
            v,
            ceilings::COMPONENT_MIB,
        )? << 20;
    }
    if let Some(v) = &raw.command_timeout {
        limits.command_timeout = duration(
            &format!("{field}.command_timeout"),
            v,
            ceilings::COMMAND_TIMEOUT,
        )?;
    }
    if let Some(v) = raw.command_output_kib {
        limits.command_output_bytes = bounded(
            &format!("{field}.command_output_kib"),
            v,
            ceilings::COMMAND_OUTPUT_KIB,
        )? << 10;
    }
    Ok(limits)
}

fn resolve_schedule(field: &str, raw: RawSchedule) -> Result<Schedule, String> {
    match (raw.every, raw.cron) {
        (Some(every), None) => Ok(Schedule::Every(duration(
            &format!("{field}.every"),
            &every,
            Duration::from_secs(366 * 86_400),
        )?)),
        (None, Some(cron)) => croner::Cron::from_str(&cron)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| {
                format!("{field}.cron = {cron:?}: {e} (e.g. \"0 3 * * *\" for 03:00 every day)")
            }),
        _ => Err(format!(
            "{field}: set exactly one of `every` (e.g. \"6h\") or `cron` (e.g. \"0 3 * * *\")"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("agent.toml"), Path::new("/opt/agent"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_complete_configuration_loads() {
        let c = parse(
            r#"
            [runtime]
            assessment_root = "/mnt/image"
            max_concurrent_jobs = 3
            limits = { timeout = "20s" }

            [[plugin]]
            name = "sshd-hardening"
            path = "plugins/sshd.wasm"
            schedule = { cron = "0 3 * * *" }
            config = { max_auth_tries = 3, skip = ["sshd-log-level"], strict = true, ratio = 0.5, label = "x" }
            grants = { read = ["/etc/ssh/"], commands = ["/usr/sbin/sshd"], env = ["LANG"], host_facts = true }
            limits = { memory_mib = 32 }

            [[plugin]]
            name = "kernel-params"
            path = "/abs/kernel.wasm"
            enabled = false
            schedule = { every = "6h" }
            "#,
        )
        .unwrap();
        assert_eq!(c.assessment_root, Path::new("/mnt/image"));
        assert_eq!(c.max_concurrent_jobs, 3);
        let p = &c.plugins[0];
        assert_eq!(
            p.origin,
            PluginOrigin::Local {
                path: PathBuf::from("/opt/agent/plugins/sshd.wasm")
            }
        );
        assert_eq!(p.limits.memory_bytes, 32 << 20);
        assert_eq!(
            p.limits.timeout,
            Duration::from_secs(20),
            "runtime defaults apply"
        );
        assert_eq!(p.grants.read, vec![PathBuf::from("/etc/ssh")]);
        assert_eq!(p.config["max_auth_tries"], ConfigValue::Integer(3));
        assert_eq!(
            p.config["skip"],
            ConfigValue::TextList(vec!["sshd-log-level".into()])
        );
        assert!(matches!(p.schedule, Some(Schedule::Cron(_))));
        assert_eq!(
            c.plugins[1].origin,
            PluginOrigin::Local {
                path: PathBuf::from("/abs/kernel.wasm")
            }
        );
        assert!(!c.plugins[1].enabled);
        assert!(
            matches!(c.plugins[1].schedule, Some(Schedule::Every(d)) if d == Duration::from_secs(6 * 3600))
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\nfoo = 1\n",
                "unknown field `foo`",
            ),
            (
                "[runtime]\nmax_concurrent_jobs = 0\n",
                "runtime.max_concurrent_jobs",
            ),
            (
                "[runtime]\nassessment_root = \"rel\"\n",
                "runtime.assessment_root",
            ),
            (
                "[[plugin]]\nname = \"A b\"\npath = \"a.wasm\"\n",
                "plugin[0].name",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\n[[plugin]]\nname = \"a\"\npath = \"b.wasm\"\n",
                "plugin[1].name = \"a\" (also its instance, as `instance` is not set): plugin[0] (a) already has the instance \"a\"",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\ngrants = { read = [\"etc\"] }\n",
                "plugin[0] (a).grants.read[0]",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\nlimits = { memory_mib = 0 }\n",
                "plugin[0] (a).limits.memory_mib",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\nlimits = { memory_mib = 100000 }\n",
                "between 1 and 4096",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\nlimits = { timeout = \"soon\" }\n",
                "plugin[0] (a).limits.timeout",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\nlimits = { timeout = \"2h\" }\n",
                "at most 1h",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\nschedule = {}\n",
                "exactly one of `every`",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\nschedule = { cron = \"61 * * * *\" }\n",
                "plugin[0] (a).schedule.cron",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\nconfig = { t = { x = 1 } }\n",
                "plugin[0] (a).config.t",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\nconfig = { l = [1, 2] }\n",
                "plugin[0] (a).config.l",
            ),
            (
                "[[plugin]]\nname = \"a\"\n",
                "set `path` (a local component) or `version` and `source`",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\nversion = \"1.0.0\"\n",
                "excludes `version` and `source`",
            ),
            (
                "[[plugin]]\nname = \"a\"\nsource = { url = \"https://r\" }\n",
                "needs the exact `version`",
            ),
            (
                "[[plugin]]\nname = \"a\"\nversion = \"1\"\nsource = { url = \"https://r\" }\n",
                "plugin[0] (a).version",
            ),
            (
                "[[plugin]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = { github = \"nope\" }\n",
                "source.github",
            ),
            (
                "[[plugin]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = { url = \"ftp://r\" }\n",
                "source.url",
            ),
            (
                "[[plugin]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = { github = \"o/r\" }\n",
                "runtime.trusted_keys is empty",
            ),
            (
                "[runtime]\ntrusted_keys = [\"RWQnope\"]\n",
                "runtime.trusted_keys[0]",
            ),
            ("[runtime]\nstate_dir = \"rel\"\n", "runtime.state_dir"),
            (
                "[runtime]\ndownload_retries = 11\n",
                "runtime.download_retries",
            ),
            ("this is not toml", "invalid agent configuration agent.toml"),
        ];
        for (text, expected) in cases {
            let e = error(text);
            assert!(
                e.contains(expected),
                "{text:?}: expected {expected:?} in: {e}"
            );
        }
    }

    #[test]
    fn the_instance_defaults_to_the_name() {
        let c = parse("[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\n").unwrap();
        assert_eq!(c.plugins[0].instance, "a");
        assert!(!c.plugins[0].has_own_instance());
        assert_eq!(c.plugins[0].label(), "a");
    }

    #[test]
    fn one_plugin_may_be_configured_twice_with_distinct_instances() {
        let c = parse(
            r#"
            [[plugin]]
            name = "sshd-hardening"
            path = "sshd.wasm"
            grants = { read = ["/etc/ssh"] }

            [[plugin]]
            name = "sshd-hardening"
            instance = "sshd-jail"
            path = "sshd.wasm"
            config = { config_path = "/srv/jail/etc/ssh/sshd_config" }
            grants = { read = ["/srv/jail/etc/ssh"] }
            "#,
        )
        .unwrap();
        let [host, jail] = &c.plugins[..] else {
            panic!("two plugins: {:?}", c.plugins);
        };
        assert_eq!(
            (host.name.as_str(), host.instance.as_str()),
            ("sshd-hardening", "sshd-hardening")
        );
        assert_eq!(
            (jail.name.as_str(), jail.instance.as_str()),
            ("sshd-hardening", "sshd-jail")
        );
        assert_eq!(jail.label(), "sshd-hardening as sshd-jail");
        assert_eq!(jail.grants.read, vec![PathBuf::from("/srv/jail/etc/ssh")]);
        assert_eq!(host.grants.read, vec![PathBuf::from("/etc/ssh")]);
        // Two instances, neither of them the name, are fine too.
        parse(
            "[[plugin]]\nname = \"a\"\ninstance = \"x\"\npath = \"a.wasm\"\n\
             [[plugin]]\nname = \"a\"\ninstance = \"y\"\npath = \"a.wasm\"\n",
        )
        .unwrap();
    }

    #[test]
    fn duplicate_instances_are_refused_naming_both_entries() {
        let cases = [
            (
                "[[plugin]]\nname = \"a\"\ninstance = \"x\"\npath = \"a.wasm\"\n\
                 [[plugin]]\nname = \"a\"\ninstance = \"x\"\npath = \"a.wasm\"\n",
                "plugin[1].instance = \"x\": plugin[0] (a as x) already has the instance \"x\"",
            ),
            // Another plugin's instance may not be a plugin's default one.
            (
                "[[plugin]]\nname = \"a\"\ninstance = \"b\"\npath = \"a.wasm\"\n\
                 [[plugin]]\nname = \"b\"\npath = \"b.wasm\"\n",
                "plugin[1].name = \"b\" (also its instance, as `instance` is not set): plugin[0] (a as b) already has the instance \"b\"",
            ),
            (
                "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\n\
                 [[plugin]]\nname = \"c\"\npath = \"c.wasm\"\n\
                 [[plugin]]\nname = \"b\"\ninstance = \"a\"\npath = \"b.wasm\"\n",
                "plugin[2].instance = \"a\": plugin[0] (a) already has the instance \"a\"",
            ),
        ];
        for (text, expected) in cases {
            let e = error(text);
            assert!(
                e.contains(expected) && e.contains("give each [[plugin]] its own `instance`"),
                "{text:?}: expected {expected:?} in: {e}"
            );
        }
    }

    #[test]
    fn an_invalid_instance_is_refused() {
        for bad in ["", "Jail", "jail two", "2nd", "-x", "a_b", &"x".repeat(65)] {
            let e = error(&format!(
                "[[plugin]]\nname = \"a\"\ninstance = {bad:?}\npath = \"a.wasm\"\n"
            ));
            assert!(
                e.contains(&format!(
                    "plugin[0].instance = {bad:?}: an instance is named like a plugin"
                )),
                "{bad:?}: {e}"
            );
        }
        let e = error("[[plugin]]\nname = \"a\"\ninstance = 3\npath = \"a.wasm\"\n");
        assert!(e.contains("instance"), "{e}");
    }

    #[test]
    fn remote_documents_configure_instances_within_the_local_policy() {
        let local = local_with_policy("remote_path_plugins = true\nread = [\"/etc\", \"/srv\"]");
        let doc = serde_json::json!({
            "plugin": [
                { "name": "a", "path": "/p/a.wasm", "grants": { "read": ["/etc"] } },
                { "name": "a", "instance": "a-srv", "path": "/p/a.wasm", "grants": { "read": ["/srv"] } }
            ]
        });
        let c = AgentConfig::from_remote(&doc, &local).unwrap();
        let instances: Vec<_> = c.plugins.iter().map(|p| p.instance.as_str()).collect();
        assert_eq!(instances, ["a", "a-srv"]);
        // The ceiling applies to each instance, named by its instance.
        let doc = serde_json::json!({
            "plugin": [{ "name": "a", "instance": "a-root", "path": "/p/a.wasm", "grants": { "read": ["/root"] } }]
        });
        let e = AgentConfig::from_remote(&doc, &local)
            .unwrap_err()
            .to_string();
        assert!(e.contains("plugin[0] (a-root).grants.read"), "{e}");
        let doc = serde_json::json!({
            "plugin": [
                { "name": "a", "path": "/p/a.wasm" },
                { "name": "b", "instance": "a", "path": "/p/b.wasm" }
            ]
        });
        let e = AgentConfig::from_remote(&doc, &local)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("plugin[1].instance = \"a\": plugin[0] (a) already has the instance"),
            "{e}"
        );
    }

    #[test]
    fn registry_plugins_resolve_their_release_location() {
        let key = "RWRlhfIL4e2ssaUm6G05FcNgLm6DQ4nojJJgb+z5R7RjvfoFnfgWKYGU";
        let c = parse(&format!(
            "[runtime]\ntrusted_keys = [\"{key}\"]\nstate_dir = \"/tmp/s\"\ndownload_timeout = \"5s\"\n\
             [[plugin]]\nname = \"a\"\nversion = \"1.2.3\"\nsource = {{ github = \"acme/plugins\" }}\n\
             [[plugin]]\nname = \"b\"\nversion = \"0.1.0\"\nsource = {{ url = \"http://127.0.0.1:9/rel/\" }}\n\
             [policy]\ndev_plain_http_registries = true\n"
        ))
        .unwrap();
        assert_eq!(c.trusted_keys.len(), 1);
        assert_eq!(c.download_timeout, Duration::from_secs(5));
        assert_eq!(
            c.plugins[0].location(),
            "https://github.com/acme/plugins/releases/download/a/v1.2.3"
        );
        assert_eq!(c.plugins[1].location(), "http://127.0.0.1:9/rel/b/v0.1.0");
    }

    fn local_with_policy(policy: &str) -> AgentConfig {
        let key = "RWRlhfIL4e2ssaUm6G05FcNgLm6DQ4nojJJgb+z5R7RjvfoFnfgWKYGU";
        parse(&format!(
            "[runtime]\ntrusted_keys = [\"{key}\"]\nstate_dir = \"/var/lib/ar\"\nassessment_root = \"/mnt/image\"\n[policy]\n{policy}\n"
        ))
        .unwrap()
    }

    #[test]
    fn json_documents_follow_the_same_rules() {
        let local = local_with_policy("remote_path_plugins = true\nread = [\"/etc\"]");
        let doc = serde_json::json!({
            "runtime": { "max_concurrent_jobs": 1, "state_dir": "/elsewhere", "assessment_root": "/" },
            "plugin": [{ "name": "a", "path": "/p/a.wasm", "config": { "n": 1, "l": ["x"] }, "grants": { "read": ["/etc"] } }]
        });
        let c = AgentConfig::from_remote(&doc, &local).unwrap();
        assert_eq!(c.plugins[0].config["n"], ConfigValue::Integer(1));
        assert_eq!(c.state_dir, Path::new("/var/lib/ar"), "the machine's own");
        assert_eq!(c.assessment_root, Path::new("/mnt/image"));
        assert_eq!(
            c.trusted_keys, local.trusted_keys,
            "local keys stay trusted"
        );
        let bad = serde_json::json!({ "plugin": [{ "name": "a", "path": "/p", "grants": { "reed": [] } }] });
        let e = AgentConfig::from_remote(&bad, &local)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `reed`"), "{e}");
    }

    #[test]
    fn grants_and_the_policy_share_the_capability_keys_and_refuse_others() {
        let key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
        let ok = parse(&format!(
            "[runtime]\ntrusted_keys = [\"{key}\"]\n[policy]\npackages = true\nread = [\"/etc\"]\n[[plugin]]\nname = \"a\"\npath = \"/p.wasm\"\ngrants = {{ packages = true, host_facts = true }}\n"
        ))
        .unwrap();
        assert!(ok.policy.remote_grants.packages);
        assert!(ok.plugins[0].grants.packages && ok.plugins[0].grants.host_facts);
        let e = parse("[policy]\npackagez = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `packagez`"), "{e}");
        let e = parse("[[plugin]]\nname = \"a\"\npath = \"/p\"\ngrants = { packagez = true }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `packagez`"), "{e}");
    }

    #[test]
    fn remote_configuration_beyond_the_local_policy_is_refused_whole() {
        let other_key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
        // No [policy]: the control plane may add no key, no path plugin and
        // grant nothing.
        let local = local_with_policy("");
        let doc = serde_json::json!({
            "runtime": { "trusted_keys": [other_key] },
            "plugin": [
                { "name": "shell", "path": "/tmp/evil.wasm",
                  "grants": { "commands": ["/bin/sh"], "env": ["AWS_SECRET_ACCESS_KEY"], "read": ["/"], "host_facts": true } },
                { "name": "ok", "version": "1.0.0", "source": { "url": "https://r.example/rel" } }
            ],
            "policy": { "remote_path_plugins": true }
        });
        let e = AgentConfig::from_remote(&doc, &local).unwrap_err();
        let ConfigError::Policy { excess } = &e else {
            panic!("{e}");
        };
        let text = excess.join("\n");
        for expected in [
            "policy: the ceiling",
            "runtime.trusted_keys[0]",
            "plugin[0] (shell).path",
            "/bin/sh is not in policy.commands",
            "AWS_SECRET_ACCESS_KEY",
            "/ is not below",
            "host_facts",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
        assert!(e.to_string().contains("refused whole"), "{e}");

        // Within a ceiling that allows it, the same kinds of grants pass.
        let local = local_with_policy(
            "remote_path_plugins = true\nremote_trusted_keys = true\nread = [\"/etc\"]\ncommands = [\"/usr/sbin/sysctl\"]\nhost_facts = true",
        );
        let doc = serde_json::json!({
            "runtime": { "trusted_keys": [other_key] },
            "plugin": [{ "name": "a", "path": "/p/a.wasm",
                         "grants": { "read": ["/etc/ssh"], "commands": ["/usr/sbin/sysctl"], "host_facts": true } }]
        });
        let c = AgentConfig::from_remote(&doc, &local).unwrap();
        assert_eq!(c.trusted_keys.len(), 2);
    }

    #[test]
    fn registries_are_reached_over_https_unless_the_local_file_says_otherwise() {
        let key = "RWRlhfIL4e2ssaUm6G05FcNgLm6DQ4nojJJgb+z5R7RjvfoFnfgWKYGU";
        let plugin = "[[plugin]]\nname = \"b\"\nversion = \"0.1.0\"\nsource = { url = \"http://127.0.0.1:9/rel\" }\n";
        let e = parse(&format!("[runtime]\ntrusted_keys = [\"{key}\"]\n{plugin}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HTTPS") && e.contains("dev_plain_http_registries"),
            "{e}"
        );
        let local = local_with_policy("");
        let doc = serde_json::json!({ "plugin": [{ "name": "b", "version": "0.1.0", "source": { "url": "http://127.0.0.1:9/rel" } }] });
        let e = AgentConfig::from_remote(&doc, &local)
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTPS"), "{e}");
    }

    #[test]
    fn the_service_network_and_time_zone_settings_load_and_name_their_errors() {
        let c = parse(
            "[runtime]\ntime_zone = \"Europe/Berlin\"\n[service]\nmetrics_listen = \"127.0.0.1:9464\"\nlog_level = \"warn,assessment_runtime=debug\"\n[network]\nsystem_roots = false\nca_bundle = \"/etc/ssl/extra.pem\"\nproxy = \"http://proxy.example:3128\"\nno_proxy = [\".internal\"]\n",
        )
        .unwrap();
        assert_eq!(c.time_zone, chrono_tz::Europe::Berlin);
        assert_eq!(
            c.service.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            c.service.log_level.as_deref(),
            Some("warn,assessment_runtime=debug")
        );
        assert!(!c.network.system_roots && !c.network.control_plane_system_roots);
        assert_eq!(
            c.network.ca_bundle.as_deref(),
            Some(Path::new("/etc/ssl/extra.pem"))
        );
        assert_eq!(c.network.no_proxy, Some(vec![".internal".to_string()]));
        // Defaults: UTC, nothing served, the OS store trusted for registries.
        let d = parse("").unwrap();
        assert_eq!(d.time_zone, chrono_tz::UTC);
        assert_eq!(d.service, ServiceSettings::default());
        assert!(d.network.system_roots && d.network.proxy.is_none());
        for (text, expected) in [
            (
                "[runtime]\ntime_zone = \"Mars/Olympus\"",
                "runtime.time_zone",
            ),
            (
                "[service]\nmetrics_listen = \"localhost\"",
                "service.metrics_listen",
            ),
            ("[service]\nlog_level = \"info,=[\"", "service.log_level"),
            ("[network]\nca_bundle = \"extra.pem\"", "network.ca_bundle"),
            ("[network]\nproxy = \"proxy:3128\"", "network.proxy"),
            (
                "[network]\nproxy = \"socks5://me:hunter2@proxy:1080\"",
                "\"socks5://me:***@proxy:1080\"",
            ),
            (
                "[network]\nproxie = \"http://p:1\"",
                "unknown field `proxie`",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn the_control_plane_cannot_set_the_machines_own_sections() {
        let mut local = local_with_policy("");
        local.service.metrics_listen = Some("127.0.0.1:9464".parse().unwrap());
        let doc = serde_json::json!({
            "service": { "metrics_listen": "0.0.0.0:9464" },
            "network": { "proxy": "http://evil.example:8080" }
        });
        let e = AgentConfig::from_remote(&doc, &local)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("service: the metrics listener") && e.contains("network: trust roots"),
            "{e}"
        );
        // A document without them keeps the local file's, and may set the
        // time zone of its schedules.
        let doc = serde_json::json!({ "runtime": { "time_zone": "Asia/Tokyo" } });
        let c = AgentConfig::from_remote(&doc, &local).unwrap();
        assert_eq!(c.service, local.service);
        assert_eq!(c.network, local.network);
        assert_eq!(c.time_zone, chrono_tz::Asia::Tokyo);
    }

    #[test]
    fn control_plane_credentials_are_the_local_files_own() {
        let c = parse(
            "[control_plane]\nurl = \"https://cf.example\"\nruntime_id = \"7a1c9a52-9a0e-4c84-9f44-1f0a8f1e2b3c\"\nclient_secret_env = \"CF_SECRET\"\n",
        )
        .unwrap();
        let settings = c.control_plane.as_ref().unwrap();
        assert_eq!(settings.url, "https://cf.example");
        let e = parse("[control_plane]\nurl = \"https://cf\"\nruntime_id = \"x\"\nclient_secret_env = \"S\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("control_plane.runtime_id"), "{e}");
        let e = parse("[control_plane]\nurl = \"https://cf\"\nsecret = \"inline\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `secret`"), "{e}");
        // The control plane cannot point the runtime elsewhere; a document
        // without the section keeps the local one.
        let doc = serde_json::json!({ "control_plane": { "url": "https://evil.example" } });
        let e = AgentConfig::from_remote(&doc, &c).unwrap_err().to_string();
        assert!(e.contains("control_plane: the server"), "{e}");
        let kept = AgentConfig::from_remote(&serde_json::json!({}), &c).unwrap();
        assert_eq!(kept.control_plane, c.control_plane);
    }

    #[test]
    fn an_empty_file_is_an_empty_configuration() {
        let c = parse("").unwrap();
        assert!(c.plugins.is_empty());
        assert_eq!(c.assessment_root, Path::new("/"));
    }
}
