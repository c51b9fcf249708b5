//! The agent's own Prometheus metrics and its HTTP endpoints: `/metrics`,
//! `/healthz`, `/readyz` (ready after the first discovery sync and once
//! connected to at least one coordinator replica). The stream series are
//! totals ("at least one replica"); the `knowton_agent_replica_*` series
//! are per replica, labelled by its address (16 at most).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::stream::StreamStats;

/// Counters the probe loop updates; gauges read from the stream at scrape time.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    registry: Registry,
    pub probes: IntCounterVec,
    pub probe_failures: IntCounterVec,
    pub rounds: IntCounter,
    /// Pods a round skipped: their previous probe was still running.
    pub probes_skipped: IntCounter,
    /// Slow verdicts sent before the slow answer.
    pub slow_verdicts: IntCounter,
    /// Watched idle connections the pods closed, by how (`clean`, `reset`).
    pub idle_closed: IntCounterVec,
    pub targets: IntGauge,
    /// Kubelet stats summaries that could not be read (no storage that round).
    pub stats_summary_failures: IntCounter,
    buffer_bytes: IntGauge,
    dropped: IntCounter,
    reconnects: IntCounter,
    connected: IntGauge,
    last_sequence: IntGauge,
    replicas: IntGauge,
    replica_connected: IntGaugeVec,
    replica_acked: IntGaugeVec,
    replica_dropped: IntCounterVec,
    replica_reconnects: IntCounterVec,
    replica_connect_failures: IntCounterVec,
    /// One scrape at a time: the per-replica series are rebuilt at each.
    rendering: Arc<Mutex<()>>,
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
        let rounds = IntCounter::new("knowton_agent_probe_rounds_total", "Probe rounds started")
            .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let per_replica_gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["replica"]).expect("valid metric")
        };
        let per_replica_counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["replica"]).expect("valid metric")
        };
        let metrics = AgentMetrics {
            probes,
            probe_failures,
            rounds,
            probes_skipped: counter(
                "knowton_agent_probes_skipped_total",
                "Pods a round did not probe because their previous probe was still running",
            ),
            slow_verdicts: counter(
                "knowton_agent_slow_verdicts_total",
                "API health checks reported slow when the slow threshold passed, before their answer",
            ),
            idle_closed: IntCounterVec::new(
                Opts::new(
                    "knowton_agent_idle_connections_closed_total",
                    "Kept idle connections the pods closed between probes, by how (clean or reset); each is probed at once",
                ),
                &["how"],
            )
            .expect("valid metric"),
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
                "Streams to the coordinator lost, all replicas together",
            )
            .expect("valid metric"),
            connected: gauge(
                "knowton_agent_connected",
                "1 while a stream to at least one coordinator replica is open",
            ),
            last_sequence: gauge(
                "knowton_agent_last_sequence",
                "Sequence of the latest batch of this agent session",
            ),
            replicas: gauge(
                "knowton_agent_replicas",
                "Coordinator replicas the agent streams to",
            ),
            replica_connected: per_replica_gauge(
                "knowton_agent_replica_connected",
                "1 while the stream to this coordinator replica is open",
            ),
            replica_acked: per_replica_gauge(
                "knowton_agent_replica_acked_sequence",
                "Highest sequence this coordinator replica acknowledged",
            ),
            replica_dropped: per_replica_counter(
                "knowton_agent_replica_dropped_results_total",
                "Results dropped from the full buffer before this coordinator replica acknowledged them",
            ),
            replica_reconnects: per_replica_counter(
                "knowton_agent_replica_reconnects_total",
                "Streams to this coordinator replica lost",
            ),
            replica_connect_failures: per_replica_counter(
                "knowton_agent_replica_connect_failures_total",
                "Failed attempts to open a stream to this coordinator replica",
            ),
            rendering: Arc::default(),
            registry,
        };
        for collector in [
            Box::new(metrics.probes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.probe_failures.clone()),
            Box::new(metrics.rounds.clone()),
            Box::new(metrics.probes_skipped.clone()),
            Box::new(metrics.slow_verdicts.clone()),
            Box::new(metrics.idle_closed.clone()),
            Box::new(metrics.targets.clone()),
            Box::new(metrics.stats_summary_failures.clone()),
            Box::new(metrics.buffer_bytes.clone()),
            Box::new(metrics.dropped.clone()),
            Box::new(metrics.reconnects.clone()),
            Box::new(metrics.connected.clone()),
            Box::new(metrics.last_sequence.clone()),
            Box::new(metrics.replicas.clone()),
            Box::new(metrics.replica_connected.clone()),
            Box::new(metrics.replica_acked.clone()),
            Box::new(metrics.replica_dropped.clone()),
            Box::new(metrics.replica_reconnects.clone()),
            Box::new(metrics.replica_connect_failures.clone()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        metrics
    }

    fn render(&self, stream: &StreamStats) -> String {
        let _one_at_a_time = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        // The stream's totals only grow: bring the counters up to them.
        let catch_up = |counter: &IntCounter, total: u64| {
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        self.buffer_bytes
            .set(i64::try_from(load(&stream.buffer_bytes)).unwrap_or(i64::MAX));
        catch_up(&self.dropped, load(&stream.dropped_results));
        catch_up(&self.reconnects, load(&stream.reconnects));
        self.connected.set(i64::from(stream.connected()));
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.last_sequence.set(gauge(load(&stream.last_sequence)));
        // Only the replicas streamed to now: a gone one's series go too.
        let replicas = stream.replicas();
        self.replicas.set(gauge(replicas.len() as u64));
        for vec in [&self.replica_connected, &self.replica_acked] {
            vec.reset();
        }
        for vec in [
            &self.replica_dropped,
            &self.replica_reconnects,
            &self.replica_connect_failures,
        ] {
            vec.reset();
        }
        for (addr, replica) in replicas {
            let label = [addr.to_string()];
            let label = [label[0].as_str()];
            self.replica_connected
                .with_label_values(&label)
                .set(i64::from(replica.connected.load(Ordering::Relaxed)));
            self.replica_acked
                .with_label_values(&label)
                .set(gauge(load(&replica.acked_sequence)));
            self.replica_dropped
                .with_label_values(&label)
                .inc_by(load(&replica.dropped_results));
            self.replica_reconnects
                .with_label_values(&label)
                .inc_by(load(&replica.reconnects));
            self.replica_connect_failures
                .with_label_values(&label)
                .inc_by(load(&replica.connect_failures));
        }
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
        state.stream.connected(),
    ) {
        (true, true) => (StatusCode::OK, "ready"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "discovering pods"),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to any coordinator replica",
        ),
    }
}
