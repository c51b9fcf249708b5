//! Latency percentiles (nearest rank) of measured requests, as every
//! benchmark reports them.

use std::time::Duration;

use serde::Serialize;

use crate::open_loop::Sample;

/// Latency percentiles (nearest rank) in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(samples: &[Sample]) -> Self {
        Self::of_durations(samples.iter().map(|s| s.latency))
    }

    pub fn of_durations(durations: impl Iterator<Item = Duration>) -> Self {
        let mut nanos: Vec<u64> = durations
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .collect();
        if nanos.is_empty() {
            return Latency::default();
        }
        nanos.sort_unstable();
        let ms = |n: u64| n as f64 / 1e6;
        let at = |q: f64| {
            ms(nanos[((q * nanos.len() as f64).ceil() as usize).clamp(1, nanos.len()) - 1])
        };
        let sum: f64 = nanos.iter().map(|&n| n as f64).sum();
        Latency {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(*nanos.last().expect("not empty")),
            mean_ms: sum / nanos.len() as f64 / 1e6,
        }
    }

    /// `ms p50 … p90 … p99 … p99.9 … max … mean …`.
    pub fn line(&self) -> String {
        format!(
            "ms p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::open_loop::Outcome;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let now = Instant::now();
        let samples: Vec<Sample> = (1..=100)
            .map(|ms| Sample {
                latency: Duration::from_millis(ms),
                done: now,
                outcome: Outcome::Ok,
            })
            .collect();
        let l = Latency::of(&samples);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p90_ms, 90.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(Latency::of(&[]).p99_ms, 0.0);
        let l = Latency::of_durations((1..=100).map(Duration::from_millis));
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(Latency::of_durations(std::iter::empty()).p99_ms, 0.0);
    }
}
