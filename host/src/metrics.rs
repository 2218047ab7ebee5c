//! The runtime's Prometheus metrics: what ran and how it ended, what was
//! found and denied, the outbox and its delivery, configuration, plugin
//! supply and the client certificate. The parts of the runtime record into
//! one process-wide set (cheap atomics, recorded whether or not anything
//! serves them); the daemon serves it in the text exposition format when
//! `[service] metrics_listen` is set.
//!
//! Label values are bounded: plugin names and instances come from the
//! operator's configuration, the rest from fixed sets; nothing a plugin
//! chooses (a check id, a path) becomes a label.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Every metric's name starts with this (and `_`).
pub const PREFIX: &str = "assessment_runtime";

/// A plugin run's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The configured instance (the plugin's name unless set).
    pub instance: String,
    /// The plugin.
    pub plugin: String,
    /// `completed`, `failed` or `not-recorded`.
    pub outcome: &'static str,
    /// The error's kind (`deadline`, `trap`, …); empty when completed.
    pub error_kind: &'static str,
}

/// A plugin's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// The plugin.
    pub plugin: String,
}

/// A finding's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    /// The plugin.
    pub plugin: String,
    /// `pass`, `fail`, …
    pub status: &'static str,
    /// `info` … `critical`.
    pub severity: &'static str,
}

/// A denied call's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// The plugin.
    pub plugin: String,
    /// The host function refused (`read-file`, `run-command`, …).
    pub capability: String,
}

/// An outcome's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error` (or another fixed word the metric documents).
    pub result: &'static str,
}

/// A plugin-supply step's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SupplyLabels {
    /// `fetch`, `verify` or `compile`.
    pub step: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// A certificate's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// Which one: `client` (the runtime's, for mutual TLS).
    pub certificate: &'static str,
}

/// The running version's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The runtime's version.
    pub version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn job_seconds() -> Histogram {
    // 10 ms … about 80 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

fn supply_seconds() -> Histogram {
    // 1 ms … about 33 s (a large component's first compilation).
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The runtime's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Plugin runs by instance, outcome and error kind.
    pub jobs: Family<JobLabels, Counter>,
    /// Run durations by plugin.
    pub job_duration: HistogramFamily<PluginLabels>,
    /// Findings by plugin, status and severity.
    pub findings: Family<FindingLabels, Counter>,
    /// Denied host calls by plugin and capability.
    pub denials: Family<DenialLabels, Counter>,
    /// Result batches waiting in the outbox.
    pub outbox_batches: Gauge,
    /// Bytes waiting in the outbox.
    pub outbox_bytes: Gauge,
    /// Batches the control plane refused for good (kept aside).
    pub outbox_rejected: Gauge,
    /// Delivery attempts by result (`ok`, `error`).
    pub deliveries: Family<ResultLabels, Counter>,
    /// Findings delivered.
    pub delivered_records: Counter,
    /// How long a delivery attempt took.
    pub delivery_duration: Histogram,
    /// Configurations applied since start (local file, reloads and the
    /// control plane's).
    pub config_generation: Gauge,
    /// When the control plane last answered a configuration poll (Unix
    /// seconds; 0: never).
    pub config_last_sync: Gauge<f64, AtomicU64>,
    /// Configuration polls and reloads by result (`ok`, `error`,
    /// `refused`).
    pub config_updates: Family<ResultLabels, Counter>,
    /// Plugin fetches, verifications and compilations by result.
    pub supply: Family<SupplyLabels, Counter>,
    /// Their durations.
    pub supply_duration: HistogramFamily<SupplyLabels>,
    /// Seconds until the client certificate expires (negative: expired;
    /// no sample without one, e.g. over plain HTTP).
    pub certificate_expiry: Family<CertificateLabels, Gauge<f64, AtomicU64>>,
    /// Heartbeats by result.
    pub heartbeats: Family<ResultLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs",
            "Plugin runs by instance, outcome and error kind",
            jobs.clone(),
        );
        let job_duration = HistogramFamily::<PluginLabels>::new_with_constructor(job_seconds);
        registry.register_with_unit(
            "job_duration",
            "How long plugin runs took",
            Unit::Seconds,
            job_duration.clone(),
        );
        let findings = Family::<FindingLabels, Counter>::default();
        registry.register(
            "findings",
            "Findings by plugin, status and severity",
            findings.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "denials",
            "Host calls refused to plugins, by plugin and capability",
            denials.clone(),
        );
        let outbox_batches = Gauge::default();
        registry.register(
            "outbox_batches",
            "Result batches waiting in the outbox",
            outbox_batches.clone(),
        );
        let outbox_bytes = Gauge::default();
        registry.register_with_unit(
            "outbox",
            "Size of the results waiting in the outbox",
            Unit::Bytes,
            outbox_bytes.clone(),
        );
        let outbox_rejected = Gauge::default();
        registry.register(
            "outbox_rejected_batches",
            "Batches the control plane refused for good, kept aside",
            outbox_rejected.clone(),
        );
        let deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts of results to the control plane, by result",
            deliveries.clone(),
        );
        let delivered_records = Counter::default();
        registry.register(
            "delivered_findings",
            "Findings delivered to the control plane",
            delivered_records.clone(),
        );
        let delivery_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register_with_unit(
            "delivery_duration",
            "How long a delivery attempt took",
            Unit::Seconds,
            delivery_duration.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Configurations applied since start",
            config_generation.clone(),
        );
        let config_last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "config_last_sync_timestamp",
            "When the control plane last answered a configuration poll (Unix time)",
            Unit::Seconds,
            config_last_sync.clone(),
        );
        let config_updates = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_updates",
            "Configuration polls and local reloads, by result",
            config_updates.clone(),
        );
        let supply = Family::<SupplyLabels, Counter>::default();
        registry.register(
            "plugin_supply",
            "Plugin fetches, verifications and compilations, by result",
            supply.clone(),
        );
        let supply_duration = HistogramFamily::<SupplyLabels>::new_with_constructor(supply_seconds);
        registry.register_with_unit(
            "plugin_supply_duration",
            "How long plugin fetches, verifications and compilations took",
            Unit::Seconds,
            supply_duration.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "certificate_expiry",
            "Time until a certificate expires",
            Unit::Seconds,
            certificate_expiry.clone(),
        );
        let heartbeats = Family::<ResultLabels, Counter>::default();
        registry.register(
            "heartbeats",
            "Heartbeats sent, by result",
            heartbeats.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version", build);
        Metrics {
            registry,
            jobs,
            job_duration,
            findings,
            denials,
            outbox_batches,
            outbox_bytes,
            outbox_rejected,
            deliveries,
            delivered_records,
            delivery_duration,
            config_generation,
            config_last_sync,
            config_updates,
            supply,
            supply_duration,
            certificate_expiry,
            heartbeats,
        }
    }

    /// Everything, in the Prometheus text exposition format (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Record a plugin-supply step that took `elapsed`.
    pub fn supply_step(&self, step: &'static str, ok: bool, elapsed: Duration) {
        let labels = SupplyLabels {
            step,
            result: if ok { "ok" } else { "error" },
        };
        self.supply.get_or_create(&labels).inc();
        self.supply_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Count one `result` of a family keyed by result.
    pub fn result(family: &Family<ResultLabels, Counter>, result: &'static str) {
        family.get_or_create(&ResultLabels { result }).inc();
    }

    /// Set the certificate's remaining lifetime from its expiry.
    pub fn certificate_expires(&self, not_after: SystemTime) {
        let seconds = match not_after.duration_since(SystemTime::now()) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        };
        self.certificate_expiry
            .get_or_create(&CertificateLabels {
                certificate: "client",
            })
            .set(seconds);
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_with_the_prefix() {
        let m = Metrics::new();
        m.jobs
            .get_or_create(&JobLabels {
                instance: "sshd-jail".into(),
                plugin: "sshd-hardening".into(),
                outcome: "failed",
                error_kind: "deadline",
            })
            .inc();
        m.supply_step("compile", true, Duration::from_millis(30));
        let text = m.encode();
        assert!(
            text.contains(
                "assessment_runtime_jobs_total{instance=\"sshd-jail\",plugin=\"sshd-hardening\",outcome=\"failed\",error_kind=\"deadline\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "assessment_runtime_plugin_supply_total{step=\"compile\",result=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("assessment_runtime_build_info{version=\""),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
