//! The control plane's own figures, read from its Prometheus metrics
//! (`serve --metrics-listen`) before and after a run: what it says it
//! stored, and the size of its database.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

const PREFIX: &str = "assessment_control_plane_";

/// One control plane's figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ServerFigures {
    /// Evidence records it accepted (stored) since it started.
    pub records_accepted: f64,
    /// Heartbeats it stored since it started.
    pub heartbeats: f64,
    /// Enrollments that succeeded since it started.
    pub enrollments: f64,
    /// Runtimes enrolled and not revoked (from the database).
    pub runtimes: f64,
    /// The database's size in bytes (from the database).
    pub database_bytes: f64,
}

impl ServerFigures {
    /// The figures read from an exposition text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string())))
            .context("the metrics are not in the Prometheus text format")?;
        let mut figures = ServerFigures::default();
        for sample in &scrape.samples {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            let Some(name) = sample.metric.strip_prefix(PREFIX) else {
                continue;
            };
            let outcome = sample.labels.get("outcome");
            match name.strip_suffix("_total").unwrap_or(name) {
                "evidence_records" if outcome == Some("accepted") => {
                    figures.records_accepted += value;
                }
                "heartbeats" => figures.heartbeats += value,
                "enrollments" if outcome == Some("succeeded") => figures.enrollments += value,
                "runtimes" => figures.runtimes = value,
                "database_size_bytes" => figures.database_bytes = value,
                _ => {}
            }
        }
        Ok(figures)
    }
}

/// The figures of every control plane in `urls` (their metrics listeners,
/// e.g. `http://127.0.0.1:9465`): counters summed over the replicas, the
/// database's figures (one database shared by all) as the largest seen.
pub async fn scrape(urls: &[String]) -> anyhow::Result<Option<ServerFigures>> {
    if urls.is_empty() {
        return Ok(None);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot create an HTTP client")?;
    let mut total = ServerFigures::default();
    for url in urls {
        let url = format!("{}/metrics", url.trim_end_matches('/'));
        let text = client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| {
                format!("cannot read {url}: is --metrics-listen set on the control plane?")
            })?
            .text()
            .await
            .with_context(|| format!("cannot read {url}"))?;
        let one = ServerFigures::parse(&text).with_context(|| url.clone())?;
        total.records_accepted += one.records_accepted;
        total.heartbeats += one.heartbeats;
        total.enrollments += one.enrollments;
        total.runtimes = total.runtimes.max(one.runtimes);
        total.database_bytes = total.database_bytes.max(one.database_bytes);
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_planes_figures_are_read() {
        let text = "\
# TYPE assessment_control_plane_evidence_records counter
assessment_control_plane_evidence_records_total{outcome=\"accepted\"} 1200
assessment_control_plane_evidence_records_total{outcome=\"duplicate\"} 7
# TYPE assessment_control_plane_heartbeats counter
assessment_control_plane_heartbeats_total 340
# TYPE assessment_control_plane_enrollments counter
assessment_control_plane_enrollments_total{outcome=\"succeeded\"} 20
assessment_control_plane_enrollments_total{outcome=\"refused\"} 2
# TYPE assessment_control_plane_runtimes gauge
assessment_control_plane_runtimes 20
# TYPE assessment_control_plane_database_size_bytes gauge
assessment_control_plane_database_size_bytes 4096000
";
        let figures = ServerFigures::parse(text).unwrap_or_default();
        assert_eq!(
            figures,
            ServerFigures {
                records_accepted: 1200.0,
                heartbeats: 340.0,
                enrollments: 20.0,
                runtimes: 20.0,
                database_bytes: 4_096_000.0,
            }
        );
    }
}
