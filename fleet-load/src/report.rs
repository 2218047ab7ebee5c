//! A run's figures: JSON for tools, and a Markdown section for
//! `BENCHMARKS.md` (merged in by `scripts/fleet-bench.sh`).

use std::fmt::Write;

use serde::Serialize;

use crate::model::{LoadModel, OfferedRates};
use crate::scrape::ServerFigures;
use crate::stats::{Counts, LagSummary, Route, RouteSummary};

/// One phase's requests.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Phase {
    /// From its first request to its last answer, seconds.
    pub elapsed_s: f64,
    /// Requests answered with success.
    pub requests_ok: u64,
    /// Requests that failed.
    pub errors: u64,
}

impl Phase {
    /// Successful requests per second.
    pub fn per_second(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.requests_ok as f64 / self.elapsed_s
        } else {
            0.0
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What the run was (`SQLite, one control plane`).
    pub label: String,
    /// Runtimes asked for.
    pub runtimes: usize,
    /// Runtimes that enrolled.
    pub runtimes_enrolled: usize,
    /// Control planes the runtimes were spread over.
    pub control_planes: usize,
    /// Whether each runtime had its own loopback source address.
    pub distinct_sources: bool,
    /// The most activities in flight at once.
    pub concurrency: usize,
    /// The load model.
    pub model: LoadModel,
    /// What the fleet offered per real second.
    pub offered: OfferedRates,
    /// The steady phase's configured length, seconds.
    pub duration_s: f64,
    /// Enrollment: admin tokens and enrollments.
    pub enrollment: Phase,
    /// The steady phase: tokens, heartbeats, configuration, batches.
    pub steady: Phase,
    /// Per route.
    pub routes: Vec<RouteSummary>,
    /// How late the steady phase's activities started.
    pub lag: LagSummary,
    /// Records and activities.
    pub counts: Counts,
    /// Steady-phase activities still running when the run was cut short.
    pub unfinished_runtimes: usize,
    /// The control planes' figures before the run.
    pub server_before: Option<ServerFigures>,
    /// And after.
    pub server_after: Option<ServerFigures>,
    /// The generator's peak resident memory, bytes (Linux).
    pub generator_peak_rss_bytes: Option<u64>,
}

/// Whether a route belongs to the enrollment phase.
pub fn is_enrollment(route: &str) -> bool {
    route == Route::Enroll.as_str() || route == Route::AdminEnrollmentToken.as_str()
}

impl Report {
    /// Records the control planes say they stored during the run.
    pub fn server_records_accepted(&self) -> Option<f64> {
        Some(self.server_after?.records_accepted - self.server_before?.records_accepted)
    }

    /// Growth of the database per million records stored, bytes: the
    /// database's growth over the run (runtimes and heartbeats included)
    /// over the records stored in it.
    pub fn database_bytes_per_million_records(&self) -> Option<f64> {
        let records = self.server_records_accepted()?;
        let growth = self.server_after?.database_bytes - self.server_before?.database_bytes;
        (records > 0.0).then(|| growth / records * 1e6)
    }

    /// The JSON form, with the derived figures.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "server_records_accepted".to_string(),
                self.server_records_accepted().into(),
            );
            object.insert(
                "database_bytes_per_million_records".to_string(),
                self.database_bytes_per_million_records().into(),
            );
            object.insert(
                "steady_requests_per_second".to_string(),
                self.steady.per_second().into(),
            );
        }
        value
    }

    /// A Markdown section (`###` heading, a summary and a table per route).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.model;
        let o = &self.offered;
        let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
        let _ = writeln!(out, "### {}\n", self.label);
        let config = match m.config_poll_interval {
            Some(interval) => format!("a configuration poll every {} s, ", interval.as_secs_f64()),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "{} runtimes over {} control plane{}, each with its own key and client certificate{}. Model: a heartbeat every {} s, {config}a batch of {} records every {} s; time scale {}× for {} s, so the fleet offered {:.0} heartbeats/s, {:.0} configuration polls/s and {:.1} batches/s ({:.0} records/s); at most {} activities in flight.\n",
            self.runtimes,
            self.control_planes,
            if self.control_planes == 1 {
                ""
            } else {
                "s (runtimes spread evenly)"
            },
            if self.distinct_sources {
                " and its own loopback source address"
            } else {
                ""
            },
            m.heartbeat_interval.as_secs_f64(),
            m.records_per_batch,
            m.batch_interval.as_secs_f64(),
            m.time_scale,
            self.duration_s,
            o.heartbeats,
            o.config_polls,
            o.batches,
            o.records,
            self.concurrency,
        );
        let _ = writeln!(out, "| measure | value |\n|---|---|");
        let _ = writeln!(
            out,
            "| enrollment (admin token, key and CSR, `/v1/enroll`) | {} of {} runtimes in {:.1} s: {:.0} runtimes/s |",
            self.runtimes_enrolled,
            self.runtimes,
            self.enrollment.elapsed_s,
            if self.enrollment.elapsed_s > 0.0 {
                self.runtimes_enrolled as f64 / self.enrollment.elapsed_s
            } else {
                0.0
            },
        );
        let _ = writeln!(
            out,
            "| steady phase | {} requests in {:.1} s: **{:.0} requests/s**, {} errors |",
            self.steady.requests_ok,
            self.steady.elapsed_s,
            self.steady.per_second(),
            self.steady.errors,
        );
        if self.unfinished_runtimes > 0 {
            let _ = writeln!(
                out,
                "| cut short | {} runtimes were still busy a request timeout after the end and were stopped; a batch they had in flight may be stored without the generator counting it |",
                self.unfinished_runtimes,
            );
        }
        let server = self
            .server_records_accepted()
            .map_or_else(|| "not read".to_string(), |n| format!("{n:.0}"));
        let _ = writeln!(
            out,
            "| evidence records accepted: generator / control plane | {} / {server} ({} in refused or failed batches) |",
            self.counts.records_accepted, self.counts.records_failed,
        );
        if let (Some(after), Some(per_million)) =
            (self.server_after, self.database_bytes_per_million_records())
        {
            let _ = writeln!(
                out,
                "| database after the run | {:.1} MiB; **{:.0} MiB per million records** |",
                mib(after.database_bytes),
                mib(per_million),
            );
        }
        let _ = writeln!(
            out,
            "| activities started late (p50 / p99 / max) | {:.1} / {:.1} / {:.1} ms of {} |",
            self.lag.p50_ms, self.lag.p99_ms, self.lag.max_ms, self.lag.activities,
        );
        if let Some(rss) = self.generator_peak_rss_bytes {
            let _ = writeln!(
                out,
                "| generator's peak memory | {:.0} MiB |",
                mib(rss as f64)
            );
        }
        let _ = writeln!(
            out,
            "\n| route | requests | per second | p50 | p99 | max | errors |\n|---|---|---|---|---|---|---|"
        );
        for route in &self.routes {
            let phase = if is_enrollment(route.route) {
                &self.enrollment
            } else {
                &self.steady
            };
            let rate = if phase.elapsed_s > 0.0 {
                route.ok as f64 / phase.elapsed_s
            } else {
                0.0
            };
            let errors = if route.errors.is_empty() {
                "0".to_string()
            } else {
                route
                    .errors
                    .iter()
                    .map(|(kind, n)| format!("{n} {kind}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {rate:.1} | {:.1} ms | {:.1} ms | {:.1} ms | {errors} |",
                route.route, route.ok, route.p50_ms, route.p99_ms, route.max_ms,
            );
        }
        out
    }
}

/// This process's peak resident memory (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
