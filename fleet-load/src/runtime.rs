//! One simulated runtime, speaking to the control plane as the runtime's
//! client does (`host/src/control_plane/client.rs`): it enrolls with a key
//! made here and a certificate signing request, keeps the client
//! certificate it is issued, takes client-credentials access tokens and
//! renews them before they expire, and sends heartbeats, configuration
//! polls (with the ETag it has) and evidence batches with a bearer token,
//! renewing the token and retrying once on 401.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use capability_model::wire::evidence::EvidenceBatch;
use capability_model::wire::{Heartbeat, JobOutcome, JobStatus, OutboxDepth, PluginState};
use reqwest::header::{ETAG, IF_NONE_MATCH};
use serde::Deserialize;

use crate::evidence::{PLUGINS, job_records};
use crate::model::LoadModel;
use crate::stats::{Recorder, Route};

/// The runtime renews a token that has less than this left (model time).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// Errors whose message is printed in full (later ones are only counted).
const ERRORS_SHOWN: usize = 10;

/// What every simulated runtime shares.
#[derive(Debug)]
pub struct Fleet {
    /// The control plane's CA (PEM): the only one trusted.
    pub ca_certificate: reqwest::Certificate,
    /// The admin API's bearer token.
    pub admin_token: String,
    /// The control planes' base URLs; runtime `i` uses `urls[i % len]`.
    pub urls: Vec<String>,
    /// How long a request may take.
    pub request_timeout: Duration,
    /// Each runtime connects from its own loopback address (see
    /// [`source_address`]) instead of 127.0.0.1.
    pub distinct_sources: bool,
    /// The load model (time scale, intervals, batch size).
    pub model: LoadModel,
    /// Where the figures go.
    pub recorder: Arc<Recorder>,
    errors_shown: AtomicUsize,
}

impl Fleet {
    /// A fleet that trusts `ca_pem`.
    pub fn new(
        ca_pem: &str,
        admin_token: String,
        urls: Vec<String>,
        request_timeout: Duration,
        distinct_sources: bool,
        model: LoadModel,
    ) -> anyhow::Result<Self> {
        let ca_certificate = reqwest::Certificate::from_pem(ca_pem.as_bytes())
            .context("the CA certificate is not PEM")?;
        Ok(Fleet {
            ca_certificate,
            admin_token,
            urls: urls
                .into_iter()
                .map(|url| url.trim_end_matches('/').to_string())
                .collect(),
            request_timeout,
            distinct_sources,
            model,
            recorder: Arc::new(Recorder::default()),
            errors_shown: AtomicUsize::new(0),
        })
    }

    /// The base URL runtime `index` talks to.
    pub fn url(&self, index: usize) -> &str {
        &self.urls[index % self.urls.len()]
    }

    /// An HTTPS client that trusts only the control plane's CA, presents
    /// `identity` if given, connects from `source` and keeps an idle
    /// connection for `keep_alive` (a runtime's: see
    /// [`LoadModel::client_keep_alive`]).
    pub fn client(
        &self,
        identity: Option<reqwest::Identity>,
        source: Option<IpAddr>,
        keep_alive: Duration,
    ) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            // Only the control plane's CA; loading the system's roots for
            // each of thousands of clients would also cost seconds.
            .tls_built_in_root_certs(false)
            .add_root_certificate(self.ca_certificate.clone())
            .https_only(true)
            .user_agent("assessment-fleet-load")
            .timeout(self.request_timeout)
            .connect_timeout(self.request_timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(keep_alive)
            .local_address(source);
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        builder.build().context("cannot create an HTTP client")
    }

    /// Records a failed request; the first few are also printed.
    pub fn failed(&self, route: Route, kind: String, detail: &str) {
        if self.errors_shown.fetch_add(1, Ordering::Relaxed) < ERRORS_SHOWN {
            eprintln!("fleet-load: {} failed ({kind}): {detail}", route.as_str());
        }
        self.recorder.error(route, kind);
    }
}

/// The loopback address runtime `index` connects from: 127.1.0.1,
/// 127.1.0.2, … Linux routes all of 127.0.0.0/8 to the loopback interface,
/// so each simulated runtime is its own source, as separate machines are
/// (the control plane rate-limits enrollment and tokens per source).
pub fn source_address(index: usize) -> IpAddr {
    let offset = u32::try_from(index).unwrap_or(u32::MAX).min(0x00fe_fffe);
    IpAddr::V4(Ipv4Addr::from(0x7f01_0001 + offset))
}

/// A request's answer, read whole (its time counts in the latency).
struct Answer {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

/// Sends `request` and reads its answer; the error is the failure's kind
/// and its message.
async fn exchange(request: reqwest::RequestBuilder) -> Result<Answer, (String, String)> {
    let describe = |e: reqwest::Error| {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        (kind.to_string(), detail)
    };
    let response = request.send().await.map_err(describe)?;
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get(ETAG)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let body = response.bytes().await.map_err(describe)?.to_vec();
    Ok(Answer { status, etag, body })
}

fn http_error(answer: &Answer) -> (String, String) {
    let text: String = String::from_utf8_lossy(&answer.body)
        .chars()
        .take(300)
        .collect();
    (format!("HTTP {}", answer.status), text)
}

/// Creates a single-use enrollment token through the admin API.
pub async fn enrollment_token(fleet: &Fleet, admin: &reqwest::Client, url: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Created {
        token: String,
    }
    let route = Route::AdminEnrollmentToken;
    let sent = Instant::now();
    let answer = exchange(
        admin
            .post(format!("{url}/v1/admin/enrollment-tokens"))
            .bearer_auth(&fleet.admin_token)
            .json(&serde_json::json!({ "ttl_seconds": 3600 })),
    )
    .await;
    match answer {
        Ok(answer) if answer.status == 201 => match serde_json::from_slice::<Created>(&answer.body)
        {
            Ok(created) => {
                fleet.recorder.ok(route, sent.elapsed());
                Some(created.token)
            }
            Err(e) => {
                fleet.failed(route, "bad answer".to_string(), &e.to_string());
                None
            }
        },
        Ok(answer) => {
            let (kind, detail) = http_error(&answer);
            fleet.failed(route, kind, &detail);
            None
        }
        Err((kind, detail)) => {
            fleet.failed(route, kind, &detail);
            None
        }
    }
}

/// A new key pair and a certificate signing request for it, as the runtime
/// makes them at enrollment.
fn key_and_csr(name: &str) -> anyhow::Result<(rcgen::KeyPair, String)> {
    let key = rcgen::KeyPair::generate().context("cannot create a key pair")?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .context("cannot create a certificate signing request")?;
    Ok((key, csr))
}

/// One enrolled runtime and what it remembers between activities.
#[derive(Debug)]
pub struct SimulatedRuntime {
    index: usize,
    url: String,
    /// Its id (issued at enrollment).
    pub runtime_id: String,
    client_secret: String,
    host: String,
    /// Its own client: its certificate, its source address, its pool.
    client: reqwest::Client,
    token: Option<(String, Instant)>,
    config_etag: Option<String>,
    last_jobs: BTreeMap<String, JobStatus>,
    jobs_run: u64,
    started: Instant,
}

impl SimulatedRuntime {
    /// Enrolls runtime `index` with `token`: a key and CSR made here,
    /// `POST /v1/enroll`, then its own client with the issued certificate.
    /// `None` when the control plane refused (the error is recorded).
    pub async fn enroll(
        fleet: &Fleet,
        index: usize,
        token: &str,
    ) -> anyhow::Result<Option<SimulatedRuntime>> {
        #[derive(Deserialize)]
        struct Enrolled {
            runtime_id: String,
            client_secret: String,
            certificate: Option<String>,
        }
        let host = format!("fleet-host-{index:05}");
        let source = fleet.distinct_sources.then(|| source_address(index));
        let url = fleet.url(index).to_string();
        let (key, csr) = key_and_csr(&host)?;
        // The enrollment connection has no client certificate yet.
        let anonymous = fleet.client(None, source, fleet.model.client_keep_alive())?;
        let route = Route::Enroll;
        let sent = Instant::now();
        let answer = exchange(
            anonymous
                .post(format!("{url}/v1/enroll"))
                .json(&serde_json::json!({ "token": token, "name": host, "csr": csr })),
        )
        .await;
        let enrolled = match answer {
            Ok(answer) if answer.status == 201 => {
                match serde_json::from_slice::<Enrolled>(&answer.body) {
                    Ok(enrolled) => {
                        fleet.recorder.ok(route, sent.elapsed());
                        enrolled
                    }
                    Err(e) => {
                        fleet.failed(route, "bad answer".to_string(), &e.to_string());
                        return Ok(None);
                    }
                }
            }
            Ok(answer) => {
                let (kind, detail) = http_error(&answer);
                fleet.failed(route, kind, &detail);
                return Ok(None);
            }
            Err((kind, detail)) => {
                fleet.failed(route, kind, &detail);
                return Ok(None);
            }
        };
        let Some(certificate) = enrolled.certificate else {
            bail!("the control plane issued no client certificate: is it serving mutual TLS?");
        };
        let identity = reqwest::Identity::from_pem(
            format!("{}\n{certificate}", key.serialize_pem()).as_bytes(),
        )
        .context("the issued certificate or the key is unreadable")?;
        Ok(Some(SimulatedRuntime {
            index,
            url,
            runtime_id: enrolled.runtime_id,
            client_secret: enrolled.client_secret,
            host,
            client: fleet.client(Some(identity), source, fleet.model.client_keep_alive())?,
            token: None,
            config_etag: None,
            last_jobs: BTreeMap::new(),
            jobs_run: 0,
            started: Instant::now(),
        }))
    }

    /// The runtime's index in the fleet.
    pub fn index(&self) -> usize {
        self.index
    }

    /// An access token valid for a while yet, asked for when there is none.
    pub async fn access_token(&mut self, fleet: &Fleet, renew: bool) -> Option<String> {
        #[derive(Deserialize)]
        struct Issued {
            access_token: String,
            expires_in: u64,
        }
        if !renew
            && let Some((token, renew_at)) = &self.token
            && Instant::now() < *renew_at
        {
            return Some(token.clone());
        }
        self.token = None;
        let route = Route::Token;
        let sent = Instant::now();
        let answer = exchange(
            self.client
                .post(format!("{}/api/auth/token", self.url))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", self.runtime_id.as_str()),
                    ("client_secret", self.client_secret.as_str()),
                ]),
        )
        .await;
        match answer {
            Ok(answer) if answer.status == 200 => {
                match serde_json::from_slice::<Issued>(&answer.body) {
                    Ok(issued) => {
                        fleet.recorder.ok(route, sent.elapsed());
                        // Its lifetime is read in model time, so tokens are
                        // renewed as often per activity as in the model.
                        let lifetime = Duration::from_secs(issued.expires_in)
                            .saturating_sub(TOKEN_REFRESH_MARGIN);
                        let renew_at = sent + fleet.model.to_real(lifetime);
                        self.token = Some((issued.access_token.clone(), renew_at));
                        Some(issued.access_token)
                    }
                    Err(e) => {
                        fleet.failed(route, "bad answer".to_string(), &e.to_string());
                        None
                    }
                }
            }
            Ok(answer) => {
                let (kind, detail) = http_error(&answer);
                fleet.failed(route, kind, &detail);
                None
            }
            Err((kind, detail)) => {
                fleet.failed(route, kind, &detail);
                None
            }
        }
    }

    /// Sends an authenticated request of `route` (renewing the token and
    /// retrying once on 401); the answer when its status is one `accepted`
    /// allows, else `None` with the failure recorded.
    async fn call(
        &mut self,
        fleet: &Fleet,
        route: Route,
        accepted: fn(u16) -> bool,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Option<Answer> {
        let mut renew = false;
        loop {
            let Some(token) = self.access_token(fleet, renew).await else {
                fleet.recorder.count(|c| c.activities_without_token += 1);
                return None;
            };
            let sent = Instant::now();
            match exchange(build(&self.client, &token)).await {
                Ok(answer) if accepted(answer.status) => {
                    fleet.recorder.ok(route, sent.elapsed());
                    return Some(answer);
                }
                Ok(answer) if answer.status == 401 && !renew => renew = true,
                Ok(answer) => {
                    let (kind, detail) = http_error(&answer);
                    fleet.failed(route, kind, &detail);
                    return None;
                }
                Err((kind, detail)) => {
                    fleet.failed(route, kind, &detail);
                    return None;
                }
            }
        }
    }

    /// Sends a heartbeat as a daemon with the four example plugins ready
    /// and their last jobs does.
    pub async fn heartbeat(&mut self, fleet: &Fleet) {
        let heartbeat = Heartbeat {
            uuid: self.runtime_id.clone(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            runtime_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            uptime_seconds: Some(fleet.model.to_model(self.started.elapsed()).as_secs()),
            plugins: PLUGINS
                .iter()
                .map(|plugin| (plugin.to_string(), PluginState::Ready))
                .collect(),
            jobs: self.last_jobs.clone(),
            outbox: Some(OutboxDepth::default()),
            errors: Vec::new(),
        };
        let url = format!("{}/api/agent/heartbeat", self.url);
        self.call(
            fleet,
            Route::Heartbeat,
            |status| matches!(status, 200 | 201 | 204),
            |http, token| http.post(&url).bearer_auth(token).json(&heartbeat),
        )
        .await;
    }

    /// Polls the configuration with the ETag of the one it has; 404 (none
    /// assigned) and 304 (unchanged) are answers too.
    pub async fn poll_config(&mut self, fleet: &Fleet) {
        let url = format!("{}/v1/config", self.url);
        let etag = self.config_etag.clone();
        let answer = self
            .call(
                fleet,
                Route::Config,
                |status| matches!(status, 200 | 304 | 404),
                |http, token| {
                    let request = http.get(&url).bearer_auth(token);
                    match &etag {
                        Some(etag) => request.header(IF_NONE_MATCH, etag),
                        None => request,
                    }
                },
            )
            .await;
        if let Some(answer) = answer
            && answer.status == 200
        {
            self.config_etag = answer.etag;
        }
    }

    /// Runs (in simulation) the next plugin's job and delivers its records
    /// in one batch, as the daemon's outbox does for a job.
    pub async fn send_batch(&mut self, fleet: &Fleet) {
        #[derive(Deserialize)]
        struct Outcome {
            accepted: u64,
            duplicates: u64,
        }
        let plugin = PLUGINS[usize::try_from(self.jobs_run).unwrap_or(0) % PLUGINS.len()];
        let job_id = uuid::Uuid::new_v4().to_string();
        let findings = fleet.model.records_per_batch;
        let records = job_records(
            &self.runtime_id,
            &self.host,
            plugin,
            &job_id,
            findings,
            self.jobs_run ^ (self.index as u64) << 20,
        );
        self.jobs_run += 1;
        self.last_jobs.insert(
            plugin.to_string(),
            JobStatus {
                plugin: None,
                job_id,
                started_at: records
                    .first()
                    .map(|r| r.evidence.start.clone())
                    .unwrap_or_default(),
                duration_ms: 240,
                outcome: JobOutcome::Completed,
                error_kind: None,
                reason: None,
                findings,
                statuses: BTreeMap::from([
                    (
                        "pass".to_string(),
                        records
                            .iter()
                            .filter(|r| r.evidence.status.reason == "pass")
                            .count(),
                    ),
                    (
                        "fail".to_string(),
                        records
                            .iter()
                            .filter(|r| r.evidence.status.reason == "fail")
                            .count(),
                    ),
                ]),
            },
        );
        let body = EvidenceBatch {
            records: Cow::Owned(records),
        };
        let url = format!("{}/v1/evidence/batch", self.url);
        let answer = self
            .call(
                fleet,
                Route::EvidenceBatch,
                |status| matches!(status, 200 | 201),
                |http, token| http.post(&url).bearer_auth(token).json(&body),
            )
            .await;
        let sent = findings as u64;
        match answer.map(|answer| serde_json::from_slice::<Outcome>(&answer.body)) {
            Some(Ok(outcome)) => fleet.recorder.count(|c| {
                c.records_accepted += outcome.accepted;
                c.records_duplicate += outcome.duplicates;
            }),
            Some(Err(e)) => {
                fleet.failed(
                    Route::EvidenceBatch,
                    "bad answer".to_string(),
                    &e.to_string(),
                );
                fleet.recorder.count(|c| c.records_failed += sent);
            }
            None => fleet.recorder.count(|c| c.records_failed += sent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_runtime_has_its_own_loopback_source() {
        assert_eq!(source_address(0).to_string(), "127.1.0.1");
        assert_eq!(source_address(9_999).to_string(), "127.1.39.16");
        let all: std::collections::BTreeSet<_> = (0..10_000).map(source_address).collect();
        assert_eq!(all.len(), 10_000);
        assert!(all.iter().all(IpAddr::is_loopback));
    }

    #[test]
    fn csrs_are_for_a_fresh_key_each_time() {
        let (a, csr) = key_and_csr("fleet-host-00001").unwrap_or_else(|e| panic!("{e}"));
        let (b, _) = key_and_csr("fleet-host-00001").unwrap_or_else(|e| panic!("{e}"));
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert_ne!(a.serialize_pem(), b.serialize_pem());
    }
}
