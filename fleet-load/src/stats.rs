//! What the simulated fleet measured: per route, the answers, their
//! latencies (send to answer, in a histogram) and the errors by kind; and
//! how late activities started against their schedule.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The control plane's routes the fleet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Route {
    /// `POST /v1/admin/enrollment-tokens`: the operator's side of enrollment.
    AdminEnrollmentToken,
    /// `POST /v1/enroll`.
    Enroll,
    /// `POST /api/auth/token`.
    Token,
    /// `POST /api/agent/heartbeat`.
    Heartbeat,
    /// `GET /v1/config`.
    Config,
    /// `POST /v1/evidence/batch`.
    EvidenceBatch,
}

impl Route {
    /// Every route, in the order they are reported.
    pub const ALL: [Route; 6] = [
        Route::AdminEnrollmentToken,
        Route::Enroll,
        Route::Token,
        Route::Heartbeat,
        Route::Config,
        Route::EvidenceBatch,
    ];

    /// Method and path.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::AdminEnrollmentToken => "POST /v1/admin/enrollment-tokens",
            Route::Enroll => "POST /v1/enroll",
            Route::Token => "POST /api/auth/token",
            Route::Heartbeat => "POST /api/agent/heartbeat",
            Route::Config => "GET /v1/config",
            Route::EvidenceBatch => "POST /v1/evidence/batch",
        }
    }
}

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, with
/// three significant digits.
const MAX_MICROS: u64 = 600_000_000;

fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(MAX_MICROS)
        .clamp(1, MAX_MICROS)
}

/// One route's figures so far.
#[derive(Debug)]
struct RouteStats {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            latency: histogram(),
            errors: BTreeMap::new(),
        }
    }
}

/// The figures of a phase, shared by every simulated runtime.
#[derive(Debug)]
pub struct Recorder {
    routes: Mutex<BTreeMap<Route, RouteStats>>,
    lag: Mutex<Histogram<u64>>,
    counts: Mutex<Counts>,
}

/// Items the control plane confirmed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Evidence records the control plane said it stored (`accepted`).
    pub records_accepted: u64,
    /// Evidence records it said it already had (`duplicates`).
    pub records_duplicate: u64,
    /// Evidence records in batches that were refused or got no answer.
    pub records_failed: u64,
    /// Activities (heartbeat, configuration poll, batch) that could not
    /// start because the runtime had no access token.
    pub activities_without_token: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            routes: Mutex::new(BTreeMap::new()),
            lag: Mutex::new(histogram()),
            counts: Mutex::new(Counts::default()),
        }
    }
}

/// A route's figures for the report.
#[derive(Debug, Clone, Serialize)]
pub struct RouteSummary {
    /// Method and path.
    pub route: &'static str,
    /// Requests answered with success.
    pub ok: u64,
    /// Requests that failed, by kind (`HTTP 429`, `timeout`, …).
    pub errors: BTreeMap<String, u64>,
    /// Latency of the successful requests, send to answer, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

impl RouteSummary {
    /// Requests that failed.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// How late activities started, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LagSummary {
    /// Activities started.
    pub activities: u64,
    /// Median lateness.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The latest.
    pub max_ms: f64,
}

fn millis(micros: u64) -> f64 {
    // Microseconds up to ten minutes: exact in an f64.
    micros as f64 / 1000.0
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves figures that are still counts.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Recorder {
    /// A successful request of `route` that took `elapsed`.
    pub fn ok(&self, route: Route, elapsed: Duration) {
        let mut routes = lock(&self.routes);
        routes
            .entry(route)
            .or_default()
            .latency
            .saturating_record(micros(elapsed));
    }

    /// A failed request of `route`, of the kind `kind`.
    pub fn error(&self, route: Route, kind: String) {
        let mut routes = lock(&self.routes);
        *routes
            .entry(route)
            .or_default()
            .errors
            .entry(kind)
            .or_insert(0) += 1;
    }

    /// An activity scheduled for some time that started `late` after it.
    pub fn started(&self, late: Duration) {
        lock(&self.lag).saturating_record(micros(late));
    }

    /// Changes the counts.
    pub fn count(&self, change: impl FnOnce(&mut Counts)) {
        change(&mut lock(&self.counts));
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        *lock(&self.counts)
    }

    /// Every route that saw a request, in [`Route::ALL`]'s order.
    pub fn routes(&self) -> Vec<RouteSummary> {
        let routes = lock(&self.routes);
        Route::ALL
            .iter()
            .filter_map(|route| {
                let stats = routes.get(route)?;
                let latency = &stats.latency;
                Some(RouteSummary {
                    route: route.as_str(),
                    ok: latency.len(),
                    errors: stats.errors.clone(),
                    p50_ms: millis(latency.value_at_quantile(0.5)),
                    p99_ms: millis(latency.value_at_quantile(0.99)),
                    max_ms: millis(latency.max()),
                })
            })
            .collect()
    }

    /// The lateness of activities.
    pub fn lag(&self) -> LagSummary {
        let lag = lock(&self.lag);
        LagSummary {
            activities: lag.len(),
            p50_ms: millis(lag.value_at_quantile(0.5)),
            p99_ms: millis(lag.value_at_quantile(0.99)),
            max_ms: millis(lag.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_and_errors_are_summarised_per_route() {
        let recorder = Recorder::default();
        for ms in 1..=100 {
            recorder.ok(Route::Heartbeat, Duration::from_millis(ms));
        }
        recorder.error(Route::Heartbeat, "HTTP 429".to_string());
        recorder.error(Route::Heartbeat, "HTTP 429".to_string());
        recorder.error(Route::Token, "timeout".to_string());
        let routes = recorder.routes();
        assert_eq!(
            routes.iter().map(|r| r.route).collect::<Vec<_>>(),
            ["POST /api/auth/token", "POST /api/agent/heartbeat"]
        );
        let heartbeat = &routes[1];
        assert_eq!(heartbeat.ok, 100);
        assert_eq!(heartbeat.error_count(), 2);
        assert!((heartbeat.p50_ms - 50.0).abs() < 0.1, "{heartbeat:?}");
        assert!((heartbeat.p99_ms - 99.0).abs() < 0.1, "{heartbeat:?}");
        assert!((heartbeat.max_ms - 100.0).abs() < 0.1, "{heartbeat:?}");
        assert_eq!(routes[0].ok, 0);
        assert_eq!(routes[0].errors["timeout"], 1);
    }
}
