//! The heartbeat (`POST /api/agent/heartbeat`): the Compliance Framework's
//! `handler.HeartbeatCreateRequest` (`uuid`, `created_at`) plus the
//! runtime's state: each plugin's state, each plugin's last job, the
//! results outbox and recent errors.
//!
//! Plugins and jobs are keyed by the configured instance, which is the
//! plugin's name unless the configuration sets `instance` (one plugin
//! configured more than once): a runtime without instances sends what it
//! always sent, and a job of an instance of its own names its plugin.
//!
//! Only `uuid` and `created_at` are required, as in the Compliance
//! Framework; fields the reader does not know are ignored (a newer runtime
//! may add some), and fields it knows must have their type.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The runtime's id.
    pub uuid: String,
    /// When it was sent (RFC 3339).
    pub created_at: String,
    /// `assessment-runtime` version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// Seconds since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Plugin instance (its name unless configured otherwise) → state.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginState>,
    /// Plugin instance (its name unless configured otherwise) → its last job.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobStatus>,
    /// Results waiting for delivery; `null` when the outbox could not be
    /// read.
    #[serde(default)]
    pub outbox: Option<OutboxDepth>,
    /// Recent errors (e.g. an invalid configuration that was not applied).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// A plugin's state. On the wire it is one string: `pending`, `disabled`,
/// `ready`, or `unavailable (KIND): REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginState {
    /// Configured and enabled, not run yet.
    Pending,
    /// Configured with `enabled = false`.
    Disabled,
    /// Its last job could load and start it.
    Ready,
    /// It cannot run: load, fetch, verify, configuration or grant errors.
    Unavailable {
        /// Which of them.
        kind: JobErrorKind,
        /// What happened and what to do.
        reason: String,
    },
}

/// A string that is no [`PluginState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is no plugin state: expected `pending`, `disabled`, `ready` or `unavailable (KIND): REASON`"
)]
pub struct InvalidPluginState(pub String);

impl fmt::Display for PluginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginState::Pending => f.write_str("pending"),
            PluginState::Disabled => f.write_str("disabled"),
            PluginState::Ready => f.write_str("ready"),
            PluginState::Unavailable { kind, reason } => {
                write!(f, "unavailable ({}): {reason}", kind.as_str())
            }
        }
    }
}

impl FromStr for PluginState {
    type Err = InvalidPluginState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(PluginState::Pending),
            "disabled" => Ok(PluginState::Disabled),
            "ready" => Ok(PluginState::Ready),
            _ => {
                // The kind never contains "): ", so the first one ends it.
                let (kind, reason) = s
                    .strip_prefix("unavailable (")
                    .and_then(|rest| rest.split_once("): "))
                    .ok_or_else(|| InvalidPluginState(s.to_string()))?;
                Ok(PluginState::Unavailable {
                    kind: kind
                        .parse()
                        .map_err(|_| InvalidPluginState(s.to_string()))?,
                    reason: reason.to_string(),
                })
            }
        }
    }
}

impl Serialize for PluginState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PluginState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How a plugin's last job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobOutcome {
    /// Ran to the end; its findings are in the outbox.
    Completed,
    /// Failed (its findings up to the failure are in the outbox).
    Failed,
    /// Its findings could not be put in the outbox.
    NotRecorded,
}

/// How a job ended badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobErrorKind {
    /// The component could not be read, is not a compatible plugin, or does
    /// not compile or link.
    Load,
    /// `describe` failed or described something invalid.
    Describe,
    /// The operator's configuration does not fit the plugin.
    Config,
    /// A read grant does not resolve under the assessment root.
    Grant,
    /// The plugin exceeded its memory limit.
    MemoryLimit,
    /// The plugin exceeded its deadline.
    Deadline,
    /// The plugin emitted more findings than allowed.
    FindingLimit,
    /// The plugin trapped (a panic, a bug).
    Trap,
    /// `run` returned `run-error.invalid-config`.
    PluginConfig,
    /// `run` returned `run-error.failed`.
    PluginFailed,
    /// A registry plugin could not be downloaded.
    Fetch,
    /// A registry plugin failed verification (signature, name, version,
    /// digest, audit); nothing of it was stored or run.
    Verify,
    /// The host itself failed.
    Host,
}

/// A name that is no [`JobErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is no job error kind")]
pub struct UnknownJobErrorKind(pub String);

impl JobErrorKind {
    /// Every kind.
    pub const ALL: [JobErrorKind; 13] = [
        JobErrorKind::Load,
        JobErrorKind::Describe,
        JobErrorKind::Config,
        JobErrorKind::Grant,
        JobErrorKind::MemoryLimit,
        JobErrorKind::Deadline,
        JobErrorKind::FindingLimit,
        JobErrorKind::Trap,
        JobErrorKind::PluginConfig,
        JobErrorKind::PluginFailed,
        JobErrorKind::Fetch,
        JobErrorKind::Verify,
        JobErrorKind::Host,
    ];

    /// The kebab-case name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            JobErrorKind::Load => "load",
            JobErrorKind::Describe => "describe",
            JobErrorKind::Config => "config",
            JobErrorKind::Grant => "grant",
            JobErrorKind::MemoryLimit => "memory-limit",
            JobErrorKind::Deadline => "deadline",
            JobErrorKind::FindingLimit => "finding-limit",
            JobErrorKind::Trap => "trap",
            JobErrorKind::PluginConfig => "plugin-config",
            JobErrorKind::PluginFailed => "plugin-failed",
            JobErrorKind::Fetch => "fetch",
            JobErrorKind::Verify => "verify",
            JobErrorKind::Host => "host",
        }
    }
}

impl FromStr for JobErrorKind {
    type Err = UnknownJobErrorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobErrorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownJobErrorKind(s.to_string()))
    }
}

/// A plugin's last job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The plugin's name, when the job's key is an instance other than
    /// the name (absent otherwise, as from runtimes without instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The job's id.
    pub job_id: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it ran.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<JobErrorKind>,
    /// What happened, when it did not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Findings it emitted.
    pub findings: usize,
    /// Findings by status (`pass`, `fail`, `error`, `not-applicable`,
    /// `skipped`): those that are no evidence are seen only here.
    #[serde(default)]
    pub statuses: BTreeMap<String, usize>,
}

/// Size of the results outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxDepth {
    /// Batches waiting.
    pub batches: usize,
    /// Bytes waiting.
    pub bytes: u64,
    /// Batches set aside as rejected.
    pub rejected: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            uuid: "0b9e0000-4000-8000-0000-000000000001".to_string(),
            created_at: "2026-11-25T10:00:00.000Z".to_string(),
            runtime_version: Some("0.1.0".to_string()),
            uptime_seconds: Some(42),
            plugins: BTreeMap::from([
                ("a".to_string(), PluginState::Pending),
                ("b".to_string(), PluginState::Disabled),
                ("c".to_string(), PluginState::Ready),
                (
                    "d".to_string(),
                    PluginState::Unavailable {
                        kind: JobErrorKind::Verify,
                        reason: "bad signature (key RWQ…): re-sign it".to_string(),
                    },
                ),
            ]),
            jobs: BTreeMap::from([(
                "c".to_string(),
                JobStatus {
                    plugin: None,
                    job_id: "j".to_string(),
                    started_at: "2026-11-25T09:59:59.000Z".to_string(),
                    duration_ms: 12,
                    outcome: JobOutcome::NotRecorded,
                    error_kind: Some(JobErrorKind::MemoryLimit),
                    reason: Some("failed to record its findings".to_string()),
                    findings: 3,
                    statuses: BTreeMap::from([("pass".to_string(), 2), ("skipped".to_string(), 1)]),
                },
            )]),
            outbox: Some(OutboxDepth {
                batches: 1,
                bytes: 2048,
                rejected: 0,
            }),
            errors: vec!["registry unreachable".to_string()],
        }
    }

    #[test]
    fn heartbeats_round_trip_in_the_shape_the_runtime_sends() {
        let h = heartbeat();
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["plugins"]["a"], "pending");
        assert_eq!(
            json["plugins"]["d"],
            "unavailable (verify): bad signature (key RWQ…): re-sign it"
        );
        assert_eq!(json["jobs"]["c"]["outcome"], "not-recorded");
        assert_eq!(json["jobs"]["c"]["error_kind"], "memory-limit");
        assert_eq!(json["jobs"]["c"]["statuses"]["skipped"], 1);
        assert_eq!(json["outbox"]["bytes"], 2048);
        assert_eq!(serde_json::from_value::<Heartbeat>(json).unwrap(), h);

        // A job that completed says nothing of errors; an unreadable outbox is null.
        let mut quiet = heartbeat();
        quiet.outbox = None;
        let job = quiet.jobs.get_mut("c").unwrap();
        (job.outcome, job.error_kind, job.reason) = (JobOutcome::Completed, None, None);
        let json = serde_json::to_value(&quiet).unwrap();
        assert!(json["jobs"]["c"].get("error_kind").is_none());
        assert!(json["jobs"]["c"].get("reason").is_none());
        assert_eq!(json["outbox"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<Heartbeat>(json).unwrap(), quiet);
    }

    #[test]
    fn instances_are_keys_and_only_an_instance_of_its_own_names_its_plugin() {
        // Without instances: no `plugin` in any job, as before instances.
        let json = serde_json::to_value(heartbeat()).unwrap();
        assert!(json["jobs"]["c"].get("plugin").is_none());
        // A heartbeat of a runtime without instances reads unchanged.
        let old = json!({ "uuid": "u", "created_at": "t", "jobs": { "c": {
            "job_id": "j", "started_at": "t", "duration_ms": 1,
            "outcome": "completed", "findings": 0 } } });
        let read: Heartbeat = serde_json::from_value(old).unwrap();
        assert_eq!(read.jobs["c"].plugin, None);

        let mut h = heartbeat();
        let mut job = h.jobs["c"].clone();
        job.plugin = Some("c".to_string());
        h.jobs.insert("c-jail".to_string(), job);
        h.plugins.insert("c-jail".to_string(), PluginState::Ready);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["jobs"]["c-jail"]["plugin"], "c");
        assert_eq!(json["plugins"]["c-jail"], "ready");
        assert_eq!(serde_json::from_value::<Heartbeat>(json).unwrap(), h);
    }

    #[test]
    fn the_compliance_framework_heartbeat_alone_is_a_heartbeat() {
        let h: Heartbeat = serde_json::from_value(
            json!({ "uuid": "u", "created_at": "2026-11-25T10:00:00Z", "newer": true }),
        )
        .unwrap();
        assert_eq!(h.runtime_version, None);
        assert!(h.plugins.is_empty() && h.jobs.is_empty() && h.errors.is_empty());
        let json = serde_json::to_value(&h).unwrap();
        assert!(json.get("runtime_version").is_none());
    }

    #[test]
    fn malformed_states_and_kinds_are_refused() {
        for bad in [
            json!({ "uuid": "u" }),
            json!({ "uuid": "u", "created_at": "t", "plugins": ["a"] }),
            json!({ "uuid": "u", "created_at": "t", "plugins": { "a": "exploded" } }),
            json!({ "uuid": "u", "created_at": "t", "plugins": { "a": "unavailable (nope): x" } }),
            json!({ "uuid": "u", "created_at": "t", "plugins": { "a": "unavailable (load)" } }),
            json!({ "uuid": "u", "created_at": "t", "outbox": { "batches": "3" } }),
            json!({ "uuid": "u", "created_at": "t", "jobs": { "a": { "job_id": "j" } } }),
        ] {
            assert!(
                serde_json::from_value::<Heartbeat>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn job_error_kinds_are_named_as_serialised() {
        for kind in JobErrorKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(kind.as_str().parse::<JobErrorKind>(), Ok(kind));
        }
        assert!("Load".parse::<JobErrorKind>().is_err());
    }

    #[test]
    fn plugin_states_parse_back_whatever_the_reason_says() {
        for state in [
            PluginState::Ready,
            PluginState::Unavailable {
                kind: JobErrorKind::Grant,
                reason: String::new(),
            },
            PluginState::Unavailable {
                kind: JobErrorKind::PluginConfig,
                reason: "unavailable (load): ready".to_string(),
            },
        ] {
            assert_eq!(state.to_string().parse::<PluginState>(), Ok(state));
        }
    }
}
