//! The agent's own Prometheus metrics and its HTTP endpoints: `/metrics`,
//! `/healthz`, `/readyz` (ready after the first discovery sync and once
//! connected to the coordinator).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::stream::StreamStats;

/// Counters the probe loop updates; gauges read from the stream at scrape time.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    registry: Registry,
    pub probes: IntCounterVec,
    pub probe_failures: IntCounterVec,
    pub rounds: IntCounter,
    pub targets: IntGauge,
    /// Kubelet stats summaries that could not be read (no storage that round).
    pub stats_summary_failures: IntCounter,
    buffer_bytes: IntGauge,
    dropped: IntCounter,
    reconnects: IntCounter,
    connected: IntGauge,
}

impl AgentMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let probes = IntCounterVec::new(
            Opts::new("knowton_agent_probes_total", "Probes made, by check"),
            &["check"],
        )
        .expect("valid metric");
        let probe_failures = IntCounterVec::new(
            Opts::new(
                "knowton_agent_probe_failures_total",
                "Failed probes (after confirmation), by check and reason",
            ),
            &["check", "reason"],
        )
        .expect("valid metric");
        let rounds = IntCounter::new("knowton_agent_probe_rounds_total", "Probe rounds completed")
            .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let metrics = AgentMetrics {
            probes,
            probe_failures,
            rounds,
            targets: gauge("knowton_agent_targets", "Pods this agent probes"),
            stats_summary_failures: IntCounter::new(
                "knowton_agent_stats_summary_failures_total",
                "Kubelet stats summaries (pod storage) that could not be read",
            )
            .expect("valid metric"),
            buffer_bytes: gauge(
                "knowton_agent_buffer_bytes",
                "Results waiting for the coordinator's acknowledgement, in bytes",
            ),
            dropped: IntCounter::new(
                "knowton_agent_dropped_results_total",
                "Results dropped from the full buffer",
            )
            .expect("valid metric"),
            reconnects: IntCounter::new(
                "knowton_agent_reconnects_total",
                "Streams to the coordinator lost",
            )
            .expect("valid metric"),
            connected: gauge(
                "knowton_agent_connected",
                "1 while a stream to the coordinator is open",
            ),
            registry,
        };
        for collector in [
            Box::new(metrics.probes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.probe_failures.clone()),
            Box::new(metrics.rounds.clone()),
            Box::new(metrics.targets.clone()),
            Box::new(metrics.stats_summary_failures.clone()),
            Box::new(metrics.buffer_bytes.clone()),
            Box::new(metrics.dropped.clone()),
            Box::new(metrics.reconnects.clone()),
            Box::new(metrics.connected.clone()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        metrics
    }

    fn render(&self, stream: &StreamStats) -> String {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        // The stream's totals only grow: bring the counters up to them.
        let catch_up = |counter: &IntCounter, total: u64| {
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        self.buffer_bytes
            .set(i64::try_from(load(&stream.buffer_bytes)).unwrap_or(i64::MAX));
        catch_up(&self.dropped, load(&stream.dropped_results));
        catch_up(&self.reconnects, load(&stream.reconnects));
        self.connected
            .set(i64::from(stream.connected.load(Ordering::Relaxed)));
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone)]
pub struct HttpState {
    pub metrics: AgentMetrics,
    pub stream: Arc<StreamStats>,
    /// Set after the first discovery sync.
    pub discovered: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&state.stream),
    )
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    match (
        state.discovered.load(Ordering::Relaxed),
        state.stream.connected.load(Ordering::Relaxed),
    ) {
        (true, true) => (StatusCode::OK, "ready"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "discovering pods"),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the coordinator",
        ),
    }
}
