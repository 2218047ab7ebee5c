//! Prometheus metrics: one registry per server, with typed families, all
//! named `assessment_control_plane_*`. The handlers and the authentication
//! extractors record into it as they work (an atomic add, or a map lookup
//! for labelled families); the gauges read from the store and the encoding
//! happen only when `/metrics` is scraped.
//!
//! Every label takes its values from a closed set (a route template, never
//! the raw path; a status code; a method; the variants of the enums here),
//! so no client can make the number of series grow.

use std::fmt;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::guard::{AuthFailure, Principal};
use crate::model::StoreStats;

/// The prefix of every metric name.
pub const PREFIX: &str = "assessment_control_plane";

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the Prometheus text format (0.0.4).
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `route` label of a request that matched no route (404s of unknown
/// paths all share it).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Upper bounds of the request duration buckets, in seconds: from a cached
/// answer to a large evidence batch on a busy disk.
const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthFailureLabels {
    principal: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaLabels {
    sha256: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// How an enrollment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentOutcome {
    /// The runtime got its credentials.
    Succeeded,
    /// Any error answer (bad token, bad CSR, bad name, bad body).
    Refused,
}

impl EnrollmentOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Refused => "refused",
        }
    }
}

/// The control plane's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    evidence_records: Family<OutcomeLabels, Counter>,
    evidence_rejected: Family<ReasonLabels, Counter>,
    heartbeats: Counter,
    enrollments: Family<OutcomeLabels, Counter>,
    auth_failures: Family<AuthFailureLabels, Counter>,
    runtimes: Gauge,
    stale_runtimes: Gauge,
    revoked_runtimes: Gauge,
    database_bytes: Gauge,
    database_up: Gauge,
    ca_expiry: Family<CaLabels, Gauge>,
    relay_waiting: Gauge,
    relay_rejected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    /// A new registry with every family registered (at zero).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered by the API, by method, route template and status code",
            http_requests.clone(),
        );
        let http_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival at the API router to its answer, by route template",
            Unit::Seconds,
            http_duration.clone(),
        );
        let evidence_records = Family::default();
        registry.register(
            "evidence_records",
            "Evidence records received: accepted (stored), duplicate (an idempotent replay, not stored again) or rejected (in a refused request: a batch is refused whole)",
            evidence_records.clone(),
        );
        let evidence_rejected = Family::default();
        registry.register(
            "evidence_requests_rejected",
            "Evidence requests refused, by reason: invalid, identity, conflict, too_large, quota or error",
            evidence_rejected.clone(),
        );
        let heartbeats = Counter::default();
        registry.register(
            "heartbeats",
            "Heartbeats received and stored",
            heartbeats.clone(),
        );
        let enrollments = Family::default();
        registry.register(
            "enrollments",
            "Enrollment requests, by outcome: succeeded or refused",
            enrollments.clone(),
        );
        let auth_failures = Family::default();
        registry.register(
            "authentication_failures",
            "Failed authentications, by who the caller claimed to be (admin, runtime, enrollment) and why",
            auth_failures.clone(),
        );
        let runtimes = Gauge::default();
        registry.register(
            "runtimes",
            "Enrolled runtimes that are not revoked",
            runtimes.clone(),
        );
        let stale_runtimes = Gauge::default();
        registry.register(
            "runtimes_stale",
            "Runtimes (not revoked) that never sent a heartbeat or whose last one is older than --stale-after",
            stale_runtimes.clone(),
        );
        let revoked_runtimes = Gauge::default();
        registry.register(
            "runtimes_revoked",
            "Revoked runtimes",
            revoked_runtimes.clone(),
        );
        let database_bytes = Gauge::default();
        registry.register_with_unit(
            "database_size",
            "Size of the database (SQLite: its pages; PostgreSQL: pg_database_size)",
            Unit::Bytes,
            database_bytes.clone(),
        );
        let database_up = Gauge::default();
        registry.register(
            "database_up",
            "1 when the database answered at this scrape, 0 when it did not (the runtime and size gauges then keep their last values)",
            database_up.clone(),
        );
        let ca_expiry = Family::default();
        registry.register_with_unit(
            "ca_certificate_expiry_timestamp",
            "When the CA certificate expires (Unix time), by the certificate's SHA-256; absent without mutual TLS",
            Unit::Seconds,
            ca_expiry.clone(),
        );
        let relay_waiting = Gauge::default();
        registry.register(
            "relay_queue_records",
            "Records in the relay's queue, not yet taken by the upstream (0 without a relay)",
            relay_waiting.clone(),
        );
        let relay_rejected = Gauge::default();
        registry.register(
            "relay_rejected_records",
            "Records the upstream refused as invalid, kept in the relay queue's rejected table",
            relay_rejected.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1, labelled with the control plane's version",
            build_info,
        );
        Self {
            registry,
            http_requests,
            http_duration,
            evidence_records,
            evidence_rejected,
            heartbeats,
            enrollments,
            auth_failures,
            runtimes,
            stale_runtimes,
            revoked_runtimes,
            database_bytes,
            database_up,
            ca_expiry,
            relay_waiting,
            relay_rejected,
        }
    }

    /// Records an answered request: `route` is the matched route template
    /// (`None` when no route matched).
    pub fn http_request(
        &self,
        method: &Method,
        route: Option<&str>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let route = route.unwrap_or(UNMATCHED_ROUTE).to_string();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.http_requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route,
                status: status.as_u16(),
            })
            .inc();
    }

    /// Records a stored evidence request: `accepted` new records and
    /// `duplicates` replayed ones.
    pub fn evidence_stored(&self, accepted: usize, duplicates: usize) {
        self.evidence_records("accepted", accepted);
        self.evidence_records("duplicate", duplicates);
    }

    /// Records a refused evidence request carrying `records` records (0
    /// when its body could not be read as records), answered with `status`.
    pub fn evidence_rejected(&self, records: usize, status: StatusCode) {
        self.evidence_records("rejected", records);
        self.evidence_rejected
            .get_or_create(&ReasonLabels {
                reason: rejection_reason(status),
            })
            .inc();
    }

    fn evidence_records(&self, outcome: &'static str, records: usize) {
        self.evidence_records
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(u64::try_from(records).unwrap_or(u64::MAX));
    }

    /// Records a stored heartbeat.
    pub fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    /// Records an enrollment request's outcome.
    pub fn enrollment(&self, outcome: EnrollmentOutcome) {
        self.enrollments
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Records a failed authentication.
    pub fn authentication_failed(&self, principal: Principal, reason: AuthFailure) {
        self.auth_failures
            .get_or_create(&AuthFailureLabels {
                principal: principal.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Sets the CA certificate's expiry (Unix seconds) for the CA `sha256`.
    pub fn ca_certificate(&self, sha256: &str, not_after: i64) {
        self.ca_expiry
            .get_or_create(&CaLabels {
                sha256: sha256.to_string(),
            })
            .set(not_after);
    }

    /// Sets the gauges read from the store at a scrape (`None`: the store
    /// did not answer).
    pub fn store_stats(&self, stats: Option<StoreStats>) {
        let Some(stats) = stats else {
            self.database_up.set(0);
            return;
        };
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.runtimes.set(gauge(stats.runtimes));
        self.stale_runtimes.set(gauge(stats.stale_runtimes));
        self.revoked_runtimes.set(gauge(stats.revoked_runtimes));
        self.database_bytes.set(gauge(stats.database_bytes));
        self.database_up.set(1);
    }

    /// Sets the relay's gauges, read from its queue at a scrape.
    pub fn relay_depth(&self, waiting: usize, rejected: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.relay_waiting.set(gauge(waiting));
        self.relay_rejected.set(gauge(rejected));
    }

    /// Every metric in the OpenMetrics text format (`openmetrics`) or the
    /// Prometheus text format.
    pub fn encode(&self, openmetrics: bool) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(8 * 1024);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        }
        Ok(text)
    }
}

/// The `method` label: the standard methods by name, any other as `other`
/// (a client may send any token as a method).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Why an evidence request was refused, from its answer's status (see
/// `api::evidence` for what each status means).
fn rejection_reason(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => "invalid",
        StatusCode::UNPROCESSABLE_ENTITY => "identity",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::INSUFFICIENT_STORAGE => "quota",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_queue_depth_is_exposed() {
        let metrics = Metrics::new();
        let text = metrics.encode(false).unwrap();
        assert!(
            text.contains("assessment_control_plane_relay_queue_records 0"),
            "{text}"
        );
        metrics.relay_depth(3, 1);
        let text = metrics.encode(false).unwrap();
        assert!(
            text.contains("assessment_control_plane_relay_queue_records 3"),
            "{text}"
        );
        assert!(
            text.contains("assessment_control_plane_relay_rejected_records 1"),
            "{text}"
        );
    }

    #[test]
    fn families_are_named_with_the_prefix_and_labelled_by_template() {
        let metrics = Metrics::new();
        metrics.http_request(
            &Method::from_bytes(b"BREW").unwrap(),
            Some("/v1/admin/runtimes/{id}/revoke"),
            StatusCode::NO_CONTENT,
            Duration::from_millis(3),
        );
        metrics.evidence_stored(4, 1);
        metrics.evidence_rejected(2, StatusCode::INSUFFICIENT_STORAGE);
        metrics.authentication_failed(Principal::Admin, AuthFailure::WrongAdminToken);
        let text = metrics.encode(false).unwrap();
        assert!(
            text.contains(
                "assessment_control_plane_http_requests_total{method=\"other\",route=\"/v1/admin/runtimes/{id}/revoke\",status=\"204\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "assessment_control_plane_evidence_records_total{outcome=\"accepted\"} 4\n"
            )
        );
        assert!(
            text.contains(
                "assessment_control_plane_evidence_records_total{outcome=\"rejected\"} 2\n"
            )
        );
        assert!(text.contains(
            "assessment_control_plane_evidence_requests_rejected_total{reason=\"quota\"} 1\n"
        ));
        assert!(text.contains("assessment_control_plane_authentication_failures_total{principal=\"admin\",reason=\"wrong_admin_token\"} 1\n"));
        assert!(text.contains("assessment_control_plane_build_info{version="));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("assessment_control_plane_"), "{line}");
        }
        let openmetrics = metrics.encode(true).unwrap();
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    }
}
