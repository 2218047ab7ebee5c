//! Samples of one measurement and their median and 99th percentile.

use std::time::Duration;

/// Durations of repeated runs of one thing.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    sorted: Vec<Duration>,
}

impl Samples {
    /// The samples `durations`, in any order.
    pub fn new(mut durations: Vec<Duration>) -> Self {
        durations.sort_unstable();
        Samples { sorted: durations }
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The `q` quantile (0.0–1.0), nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let last = self.sorted.len() - 1;
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let rank = ((q * self.sorted.len() as f64).ceil() as usize).clamp(1, last + 1) - 1;
        self.sorted[rank]
    }

    /// The median.
    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

/// A duration for a table: µs below 10 ms, ms below 10 s, s above.
pub fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.1} µs")
    } else if us < 10_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `a / b` as a ratio for a table, e.g. `1.31×`.
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        return "n/a".to_string();
    }
    let r = a / b;
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let s = Samples::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(s.median(), Duration::from_millis(50));
        assert_eq!(s.p99(), Duration::from_millis(99));
        assert_eq!(s.quantile(1.0), Duration::from_millis(100));
        assert_eq!(s.quantile(0.0), Duration::from_millis(1));
        let one = Samples::new(vec![Duration::from_millis(7)]);
        assert_eq!(one.median(), Duration::from_millis(7));
        assert_eq!(one.p99(), Duration::from_millis(7));
        assert_eq!(Samples::default().median(), Duration::ZERO);
    }

    #[test]
    fn human_units_and_ratios() {
        assert_eq!(human(Duration::from_micros(42)), "42.0 µs");
        assert_eq!(human(Duration::from_millis(42)), "42.0 ms");
        assert_eq!(human(Duration::from_secs(42)), "42.00 s");
        assert_eq!(ratio(3.0, 2.0), "1.50×");
        assert_eq!(ratio(250.0, 2.0), "125×");
        assert_eq!(ratio(1.0, 0.0), "n/a");
    }
}
