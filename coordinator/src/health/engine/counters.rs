//! The engine's counters, read by the metrics.

use super::*;

/// Counters for the metrics endpoint.
#[derive(Debug)]
pub struct EngineCounters {
    pub evaluations: AtomicU64,
    /// Alert transitions recorded, by kind (indexed by the kind's place
    /// in [`TransitionKind::ALL`]); resolutions by hand are counted apart.
    pub transitions: [AtomicU64; TransitionKind::ALL.len()],
    /// Alerts resolved by hand (their kind is `resolved`).
    pub manual_resolves: AtomicU64,
    pub store_errors: AtomicU64,
    /// From a breaching result's arrival to its transition's commit.
    pub commit_latency: prometheus::Histogram,
    /// From the newest result's arrival to the start of its tenant's
    /// evaluation: how far behind the arrivals the engine runs.
    pub evaluation_delay: prometheus::Histogram,
}

impl Default for EngineCounters {
    fn default() -> Self {
        EngineCounters {
            evaluations: AtomicU64::default(),
            transitions: Default::default(),
            manual_resolves: AtomicU64::default(),
            store_errors: AtomicU64::default(),
            commit_latency: latency_histogram(
                "knowton_alert_commit_latency_seconds",
                "From a breaching result's arrival to its alert transition's commit (with its notifications).",
                &[],
            ),
            evaluation_delay: latency_histogram(
                "knowton_health_evaluation_delay_seconds",
                "From the newest result's arrival to the start of its tenant's evaluation.",
                &[0.0005],
            ),
        }
    }
}

/// A histogram of latencies in seconds, from 1 ms to 1 s, with `finer`
/// bounds below 1 ms.
fn latency_histogram(name: &str, help: &str, finer: &[f64]) -> prometheus::Histogram {
    let mut buckets = finer.to_vec();
    buckets.extend([
        0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
    ]);
    prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric")
}

pub(super) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
