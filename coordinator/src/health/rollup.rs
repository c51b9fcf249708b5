//! Per-minute health rollups: what each evaluation of a tenant adds to its
//! current minute, and how minutes are downsampled for long ranges.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use uuid::Uuid;

use super::evaluate::{Check, Evaluation, HealthStatus};
use crate::store::Rollup;

/// One tenant's minute in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Minute {
    pub start: DateTime<Utc>,
    worst: HealthStatus,
    evaluations: u32,
    available: u32,
    /// API latencies (ms) of the results that arrived in this minute.
    latencies: Vec<f64>,
    error_rate: Option<f64>,
    requests_per_minute: Option<f64>,
    storage_bytes: Option<i64>,
    users: Option<f64>,
}

/// The start of `at`'s minute.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

impl Minute {
    pub fn new(at: DateTime<Utc>) -> Self {
        Minute {
            start: minute_of(at),
            worst: HealthStatus::Unknown,
            evaluations: 0,
            available: 0,
            latencies: Vec::new(),
            error_rate: None,
            requests_per_minute: None,
            storage_bytes: None,
            users: None,
        }
    }

    /// Adds one evaluation and the latencies of the results new since the last one.
    pub fn add(&mut self, evaluation: &Evaluation, new_latencies_ms: &[f64], storage: Option<u64>) {
        self.worst = self.worst.max(evaluation.status);
        if evaluation.status == HealthStatus::Unknown {
            return;
        }
        self.evaluations += 1;
        if evaluation.status.is_available() {
            self.available += 1;
        }
        // Keep a bounded sample: a tenant with many pods reporting every
        // second still costs little memory per minute.
        for &ms in new_latencies_ms {
            if self.latencies.len() < 4096 {
                self.latencies.push(ms);
            }
        }
        if let Some(rate) = evaluation
            .checks
            .iter()
            .find(|c| c.check == Check::ErrorRate)
            .and_then(|c| c.value)
        {
            self.error_rate = Some(rate);
        }
        if let Some(rpm) = evaluation.requests_per_minute {
            self.requests_per_minute = Some(rpm);
        }
        if let Some(users) = evaluation.users {
            self.users = Some(users);
        }
        if let Some(bytes) = storage {
            self.storage_bytes = Some(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// The minute as stored; `None` when nothing was evaluated in it.
    pub fn rollup(&self, tenant: Uuid) -> Option<Rollup> {
        if self.evaluations == 0 {
            return None;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        Some(Rollup {
            tenant_id: tenant,
            minute: self.start,
            status: self.worst,
            availability: f64::from(self.available) / f64::from(self.evaluations),
            latency_p50_ms: percentile(&sorted, 0.50),
            latency_p95_ms: percentile(&sorted, 0.95),
            latency_max_ms: sorted.last().copied(),
            error_rate_percent: self.error_rate,
            requests_per_minute: self.requests_per_minute,
            storage_bytes: self.storage_bytes,
            users: self.users,
            samples: i64::from(self.evaluations),
        })
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Merges consecutive rollups into buckets of `bucket` (a whole number of
/// minutes): worst status, availability weighted by samples, the highest
/// percentiles (an upper bound), the last gauges.
pub fn downsample(rollups: &[Rollup], bucket: TimeDelta) -> Vec<Rollup> {
    if bucket <= TimeDelta::minutes(1) {
        return rollups.to_vec();
    }
    let mut out: Vec<Rollup> = Vec::new();
    for r in rollups {
        let start = bucket_start(r.minute, bucket);
        match out.last_mut() {
            Some(acc) if acc.minute == start => {
                let total = acc.samples + r.samples;
                if total > 0 {
                    acc.availability = (acc.availability * acc.samples as f64
                        + r.availability * r.samples as f64)
                        / total as f64;
                }
                acc.samples = total;
                acc.status = acc.status.max(r.status);
                acc.latency_p50_ms = max_opt(acc.latency_p50_ms, r.latency_p50_ms);
                acc.latency_p95_ms = max_opt(acc.latency_p95_ms, r.latency_p95_ms);
                acc.latency_max_ms = max_opt(acc.latency_max_ms, r.latency_max_ms);
                acc.error_rate_percent = max_opt(acc.error_rate_percent, r.error_rate_percent);
                acc.requests_per_minute = r.requests_per_minute.or(acc.requests_per_minute);
                acc.storage_bytes = r.storage_bytes.or(acc.storage_bytes);
                acc.users = r.users.or(acc.users);
            }
            _ => {
                let mut first = r.clone();
                first.minute = start;
                out.push(first);
            }
        }
    }
    out
}

fn bucket_start(at: DateTime<Utc>, bucket: TimeDelta) -> DateTime<Utc> {
    at.duration_trunc(bucket).unwrap_or(at)
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::evaluate::Evaluation;

    fn evaluation(status: HealthStatus) -> Evaluation {
        Evaluation {
            status,
            pods: 1,
            pods_up: usize::from(status != HealthStatus::Down),
            checks: Vec::new(),
            requests_per_minute: Some(120.0),
            users: Some(7.0),
        }
    }

    #[test]
    fn a_minute_keeps_the_worst_status_availability_and_latency_percentiles() {
        let at = "2026-11-29T12:00:10Z".parse().unwrap();
        let mut m = Minute::new(at);
        let latencies: Vec<f64> = (1..=100).map(f64::from).collect();
        m.add(&evaluation(HealthStatus::Healthy), &latencies, Some(10));
        m.add(&evaluation(HealthStatus::Down), &[], None);
        m.add(&evaluation(HealthStatus::Warning), &[], Some(20));
        m.add(&evaluation(HealthStatus::Healthy), &[], None);
        let r = m.rollup(Uuid::nil()).unwrap();
        assert_eq!(
            r.minute,
            "2026-11-29T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(r.status, HealthStatus::Down);
        assert_eq!(r.availability, 0.75);
        assert_eq!(r.latency_p50_ms, Some(50.0));
        assert_eq!(r.latency_p95_ms, Some(95.0));
        assert_eq!(r.latency_max_ms, Some(100.0));
        assert_eq!(r.storage_bytes, Some(20));
        assert_eq!(r.requests_per_minute, Some(120.0));
        assert_eq!(r.samples, 4);
        assert!(
            Minute::new(at).rollup(Uuid::nil()).is_none(),
            "empty minutes are not stored"
        );
    }

    #[test]
    fn downsampling_merges_whole_buckets() {
        let base: DateTime<Utc> = "2026-11-29T12:00:00Z".parse().unwrap();
        let rollups: Vec<Rollup> = (0..10)
            .map(|i| {
                let mut m = Minute::new(base + TimeDelta::minutes(i));
                let status = if i == 3 {
                    HealthStatus::Critical
                } else {
                    HealthStatus::Healthy
                };
                m.add(&evaluation(status), &[i as f64], None);
                if i == 7 {
                    m.add(&evaluation(HealthStatus::Down), &[], None);
                }
                m.rollup(Uuid::nil()).unwrap()
            })
            .collect();
        let five = downsample(&rollups, TimeDelta::minutes(5));
        assert_eq!(five.len(), 2);
        assert_eq!(five[0].minute, base);
        assert_eq!(five[0].status, HealthStatus::Critical);
        assert_eq!(five[0].samples, 5);
        assert_eq!(five[0].latency_max_ms, Some(4.0));
        assert_eq!(five[1].status, HealthStatus::Down);
        assert_eq!(five[1].samples, 6);
        assert!((five[1].availability - 5.0 / 6.0).abs() < 1e-9);
    }
}
