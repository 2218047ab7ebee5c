//! The load model: what one runtime does and how often, in model time, and
//! the time scale that compresses it into a bounded run.
//!
//! A runtime heartbeats every `heartbeat_interval` (the daemon's default is
//! 60 s), polls its configuration every `config_poll_interval` (default
//! 60 s), and delivers one batch of `records_per_batch` records every
//! `batch_interval` (a job of one of its plugins: four plugins hourly make
//! a batch every 15 minutes). Each runtime's timers start at a random
//! offset within their interval, so the fleet's load is even. A run at time
//! scale S does in one real second what the fleet does in S seconds.

use std::time::Duration;

use serde::Serialize;

/// What each runtime does, in model time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoadModel {
    /// Model seconds per real second.
    pub time_scale: f64,
    /// Between two heartbeats.
    #[serde(with = "seconds")]
    pub heartbeat_interval: Duration,
    /// Between two configuration polls (`None`: the runtime does not poll).
    #[serde(with = "optional_seconds")]
    pub config_poll_interval: Option<Duration>,
    /// Between two evidence batches.
    #[serde(with = "seconds")]
    pub batch_interval: Duration,
    /// Records in a batch.
    pub records_per_batch: usize,
    /// How long the control plane keeps an idle connection open (its
    /// `--header-read-timeout`, default 10 s), real time.
    #[serde(with = "seconds")]
    pub server_keep_alive: Duration,
}

/// The activities of a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// A heartbeat.
    Heartbeat,
    /// A configuration poll.
    ConfigPoll,
    /// An evidence batch.
    Batch,
}

/// Offered load of the whole fleet, per real second.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OfferedRates {
    /// Heartbeats per second.
    pub heartbeats: f64,
    /// Configuration polls per second.
    pub config_polls: f64,
    /// Evidence batches per second.
    pub batches: f64,
    /// Evidence records per second.
    pub records: f64,
}

impl LoadModel {
    /// A model duration in real time.
    pub fn to_real(self, model: Duration) -> Duration {
        model.div_f64(self.time_scale)
    }

    /// A real duration in model time.
    pub fn to_model(self, real: Duration) -> Duration {
        real.mul_f64(self.time_scale)
    }

    /// How long a simulated runtime keeps an idle connection: as long, in
    /// model time, as the control plane keeps it in real time. A runtime
    /// whose next activity comes later than that (a heartbeat a minute on)
    /// finds its connection closed and makes a new one, with a new TLS
    /// handshake, as a real one does; requests of one activity (a token,
    /// then the heartbeat) share one connection.
    pub fn client_keep_alive(self) -> Duration {
        self.to_real(self.server_keep_alive)
    }

    /// The interval of `activity` in real time, `None` when the runtime
    /// does not do it.
    pub fn real_interval(self, activity: Activity) -> Option<Duration> {
        let model = match activity {
            Activity::Heartbeat => Some(self.heartbeat_interval),
            Activity::ConfigPoll => self.config_poll_interval,
            Activity::Batch => Some(self.batch_interval),
        }?;
        Some(self.to_real(model)).filter(|interval| !interval.is_zero())
    }

    /// What `runtimes` runtimes offer per real second.
    pub fn offered(self, runtimes: usize) -> OfferedRates {
        let per_second = |activity| {
            self.real_interval(activity)
                .map_or(0.0, |interval| runtimes as f64 / interval.as_secs_f64())
        };
        let batches = per_second(Activity::Batch);
        OfferedRates {
            heartbeats: per_second(Activity::Heartbeat),
            config_polls: per_second(Activity::ConfigPoll),
            batches,
            records: batches * self.records_per_batch as f64,
        }
    }
}

mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

mod optional_seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

/// One runtime's timeline: each activity at its offset, then at each
/// interval, in order.
#[derive(Debug)]
pub struct Schedule {
    next: Vec<(Duration, Activity, Duration)>,
}

impl Schedule {
    /// A timeline whose activities start at random offsets within their
    /// intervals (from `rng`).
    pub fn new(model: &LoadModel, rng: &mut fastrand::Rng) -> Self {
        let next = [Activity::Heartbeat, Activity::ConfigPoll, Activity::Batch]
            .into_iter()
            .filter_map(|activity| {
                let interval = model.real_interval(activity)?;
                let offset = interval.mul_f64(rng.f64());
                Some((offset, activity, interval))
            })
            .collect();
        Schedule { next }
    }

    /// The next activity and when it is due (from the start of the run),
    /// moving its timer on by its interval.
    pub fn pop(&mut self) -> Option<(Duration, Activity)> {
        let (at, activity, interval) = self.next.iter_mut().min_by_key(|(at, _, _)| *at)?;
        let due = (*at, *activity);
        *at += *interval;
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> LoadModel {
        LoadModel {
            time_scale: 10.0,
            heartbeat_interval: Duration::from_secs(60),
            config_poll_interval: Some(Duration::from_secs(60)),
            batch_interval: Duration::from_secs(900),
            records_per_batch: 25,
            server_keep_alive: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_time_scale_compresses_intervals_and_keep_alive() {
        let model = model();
        assert_eq!(
            model.real_interval(Activity::Heartbeat),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            model.real_interval(Activity::Batch),
            Some(Duration::from_secs(90))
        );
        assert_eq!(model.client_keep_alive(), Duration::from_secs(1));
        assert_eq!(
            model.to_model(Duration::from_secs(3)),
            Duration::from_secs(30)
        );
        let offered = model.offered(10_000);
        assert!((offered.heartbeats - 10_000.0 / 6.0).abs() < 1e-6);
        assert!((offered.records - 10_000.0 / 90.0 * 25.0).abs() < 1e-6);
        let quiet = LoadModel {
            config_poll_interval: None,
            ..model
        };
        assert_eq!(quiet.offered(10).config_polls, 0.0);
    }

    #[test]
    fn a_schedule_runs_each_activity_at_its_interval_in_order() {
        let model = model();
        let mut schedule = Schedule::new(&model, &mut fastrand::Rng::with_seed(1));
        let due: Vec<_> = std::iter::from_fn(|| schedule.pop())
            .take_while(|(at, _)| *at < Duration::from_secs(180))
            .collect();
        assert!(due.windows(2).all(|w| w[0].0 <= w[1].0), "in order");
        let count = |activity| due.iter().filter(|(_, a)| *a == activity).count();
        assert_eq!(count(Activity::Heartbeat), 30);
        assert_eq!(count(Activity::ConfigPoll), 30);
        assert_eq!(count(Activity::Batch), 2);
        let first_batch = due
            .iter()
            .find(|(_, a)| *a == Activity::Batch)
            .map(|(at, _)| *at);
        assert!(first_batch.is_some_and(|at| at < Duration::from_secs(90)));
    }
}
