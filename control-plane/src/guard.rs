//! Defences against floods: a per-source rate limit for the routes anyone
//! can call (enrollment, token), and a log of failed authentications that
//! a flood cannot fill.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many sources the rate limiter remembers before it forgets those
/// whose bucket has refilled.
const MAX_TRACKED_SOURCES: usize = 65_536;

/// A token bucket per source address: `burst` requests at once, refilled at
/// `per_minute` a minute. IPv6 sources are counted per /64, which one
/// client usually has whole.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter allowing `burst` requests at once and `per_minute` a minute.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `source` at `now`: `Ok`, or `Err` with how long
    /// to wait before the next one is allowed.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = source_key(source);
        let mut buckets = match self.buckets.lock() {
            Ok(buckets) => buckets,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= MAX_TRACKED_SOURCES {
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_TRACKED_SOURCES {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

fn source_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

/// Who a failed authentication claimed to be: the `what` of its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The admin, with the admin token.
    Admin,
    /// An enrolled runtime: client credentials, access token, client
    /// certificate.
    Runtime,
    /// A runtime enrolling, with an enrollment token.
    Enrollment,
}

impl Principal {
    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Runtime => "runtime",
            Self::Enrollment => "enrollment",
        }
    }
}

/// Why an authentication failed: the `reason` of its log line and of the
/// failure metric (a closed set, so the metric's labels stay bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    NoBearerToken,
    /// A bearer token that is not the admin token.
    WrongAdminToken,
    /// A runtime request over mutual TLS without a client certificate.
    NoClientCertificate,
    /// An access token that is unknown, expired, revoked or bound to
    /// another client certificate.
    InvalidAccessToken,
    /// Wrong client credentials at the token endpoint (or another client
    /// certificate, or a revoked runtime).
    InvalidClientCredentials,
    /// An enrollment token that is unknown, used or expired.
    InvalidEnrollmentToken,
}

impl AuthFailure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoBearerToken => "no_bearer_token",
            Self::WrongAdminToken => "wrong_admin_token",
            Self::NoClientCertificate => "no_client_certificate",
            Self::InvalidAccessToken => "invalid_access_token",
            Self::InvalidClientCredentials => "invalid_client_credentials",
            Self::InvalidEnrollmentToken => "invalid_enrollment_token",
        }
    }

    /// The text written in the log.
    pub fn message(self) -> &'static str {
        match self {
            Self::NoBearerToken => "no bearer token",
            Self::WrongAdminToken => "wrong admin token",
            Self::NoClientCertificate => "no client certificate",
            Self::InvalidAccessToken => {
                "unknown, expired or revoked access token, or another client certificate"
            }
            Self::InvalidClientCredentials => {
                "wrong client credentials, another client certificate, or a revoked runtime"
            }
            Self::InvalidEnrollmentToken => "unknown, used or expired enrollment token",
        }
    }
}

/// Logs failed authentications (with the source address) at warn level,
/// at most `per_minute` lines a minute; the lines dropped in between are
/// counted in the next line that is written.
#[derive(Debug)]
pub struct AuthFailureLog {
    limit: u32,
    state: Mutex<LogWindow>,
}

#[derive(Debug)]
struct LogWindow {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
}

/// Lines per minute the failed-authentication log writes at most.
pub const AUTH_FAILURE_LOG_PER_MINUTE: u32 = 30;

impl Default for AuthFailureLog {
    fn default() -> Self {
        Self::new(AUTH_FAILURE_LOG_PER_MINUTE)
    }
}

impl AuthFailureLog {
    /// A log writing at most `per_minute` lines a minute.
    pub fn new(per_minute: u32) -> Self {
        Self {
            limit: per_minute,
            state: Mutex::new(LogWindow {
                started: None,
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be written at `now`: `Some(n)` with the number of
    /// lines suppressed since the last one written, or `None` to drop it.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut window = match self.state.lock() {
            Ok(window) => window,
            Err(poisoned) => poisoned.into_inner(),
        };
        let expired = window.started.is_none_or(|started| {
            now.saturating_duration_since(started) >= Duration::from_secs(60)
        });
        if expired {
            window.started = Some(now);
            window.written = 0;
        }
        if window.written < self.limit {
            window.written += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }

    /// Logs that `source` failed to authenticate as `what` because of
    /// `reason` (unless the log is over its rate).
    pub fn failed(&self, source: Option<SocketAddr>, what: Principal, reason: AuthFailure) {
        let Some(suppressed) = self.admit(Instant::now()) else {
            return;
        };
        let what = what.as_str();
        let reason = reason.message();
        let source = source.map_or_else(|| "unknown".to_string(), |s| s.to_string());
        if suppressed > 0 {
            tracing::warn!(%source, what, reason, suppressed, "authentication failed (and {suppressed} more not logged)");
        } else {
            tracing::warn!(%source, what, reason, "authentication failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limiter_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(3, 60);
        let t0 = Instant::now();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            limiter.check(a, t0).unwrap();
        }
        let wait = limiter.check(a, t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        limiter.check(b, t0).unwrap();
        limiter.check(a, t0 + Duration::from_secs(1)).unwrap();
        assert!(limiter.check(a, t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let limiter = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        limiter.check("2001:db8::1".parse().unwrap(), t0).unwrap();
        assert!(limiter.check("2001:db8::2".parse().unwrap(), t0).is_err());
        limiter
            .check("2001:db8:0:1::1".parse().unwrap(), t0)
            .unwrap();
    }

    #[test]
    fn the_failure_log_is_rate_limited_and_counts_what_it_dropped() {
        let log = AuthFailureLog::new(2);
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0));
        assert_eq!(log.admit(t0), Some(0));
        assert_eq!(log.admit(t0), None);
        assert_eq!(log.admit(t0), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(61)), Some(2));
    }
}
