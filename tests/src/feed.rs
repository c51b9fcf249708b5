//! Feeding probe results straight into a running coordinator's ingest
//! registry, as an agent's stream would after its TLS handshake and hello:
//! for tests of what the coordinator does with results (evaluation,
//! alerts, history), which need exact results at exact moments. The
//! stream itself is tested with real agents elsewhere.

use std::net::SocketAddr;

use knowton_coordinator::ingest::registry::Connection;
use knowton_proto::agent::v1::{
    Failure, Hello, MetricsSample, PodResult, ProbeOutcome, ResultBatch, StorageSample,
};

use crate::TestCoordinator;

/// One simulated agent's results for one tenant's pods.
#[derive(Debug)]
pub struct Feed {
    state: knowton_coordinator::api::AppState,
    conn: Connection,
    sequence: u64,
}

impl Feed {
    /// Registers an agent of `node` with the coordinator.
    pub fn new(kt: &TestCoordinator, node: &str) -> Self {
        Self::on(kt.running_state(), node)
    }

    /// [`Self::new`], for a coordinator started without [`TestCoordinator`].
    pub fn on(state: knowton_coordinator::api::AppState, node: &str) -> Self {
        let hello = Hello {
            protocol_version: 1,
            node_name: node.to_owned(),
            agent_version: "test".to_owned(),
            session_id: format!("feed-{node}"),
        };
        let (conn, _) = state
            .ingest
            .connect(&hello, 1, SocketAddr::from(([127, 0, 0, 1], 1)));
        Feed {
            state,
            conn,
            sequence: 0,
        }
    }

    /// Sends one batch.
    pub fn send(&mut self, results: Vec<PodResult>) {
        self.sequence += 1;
        let batch = ResultBatch {
            sequence: self.sequence,
            results,
            node: None,
        };
        self.state
            .ingest
            .ingest(&self.conn, batch, self.state.service.directory());
    }
}

/// A healthy pod's result: 20 ms API, 2 users, 1 GiB used, 0.5 requests/s, no 5xx.
pub fn healthy(tenant: &str, pod: &str) -> PodResult {
    let ok = |latency_ms: u64| ProbeOutcome {
        ok: true,
        status_code: 200,
        latency_us: latency_ms * 1000,
        connect_us: 100,
        first_byte_us: latency_ms * 1000,
        failure: Failure::None as i32,
        detail: String::new(),
        database_ok: None,
        confirmed: false,
        pending: false,
    };
    PodResult {
        tenant: tenant.to_owned(),
        pod: pod.to_owned(),
        pod_ip: "127.0.0.2".to_owned(),
        observed_at_unix_ms: chrono::Utc::now().timestamp_millis(),
        liveness: Some(ok(1)),
        api_health: Some(ProbeOutcome {
            database_ok: Some(true),
            ..ok(20)
        }),
        metrics: Some(MetricsSample {
            scraped: true,
            failure: Failure::None as i32,
            requests_total: Some(1000.0),
            errors_5xx_total: Some(0.0),
            users: Some(2.0),
            request_rate_per_second: Some(0.5),
            error_ratio: Some(0.0),
        }),
        storage: Some(StorageSample {
            used_bytes: 1 << 30,
            capacity_bytes: 1 << 40,
        }),
    }
}

/// Changes to a result, read as a sentence: `healthy(..).slow(1500)`.
pub trait Shape {
    fn slow(self, api_ms: u64) -> Self;
    fn database_down(self) -> Self;
    fn api_failing(self) -> Self;
    fn down(self) -> Self;
    fn storage(self, used_bytes: u64) -> Self;
    fn users(self, users: f64) -> Self;
    fn traffic(self, per_second: f64, error_ratio: f64) -> Self;
}

impl Shape for PodResult {
    fn slow(mut self, api_ms: u64) -> Self {
        if let Some(api) = self.api_health.as_mut() {
            api.latency_us = api_ms * 1000;
            api.confirmed = true;
        }
        self
    }

    fn database_down(mut self) -> Self {
        if let Some(api) = self.api_health.as_mut() {
            api.database_ok = Some(false);
        }
        self
    }

    fn api_failing(mut self) -> Self {
        if let Some(api) = self.api_health.as_mut() {
            api.ok = false;
            api.status_code = 503;
            api.failure = Failure::HttpStatus as i32;
            api.detail = "HTTP 503".to_owned();
            api.database_ok = None;
            api.confirmed = true;
        }
        self
    }

    fn down(mut self) -> Self {
        let refused = ProbeOutcome {
            ok: false,
            failure: Failure::Refused as i32,
            detail: "connection refused".to_owned(),
            confirmed: true,
            ..ProbeOutcome::default()
        };
        self.liveness = Some(refused.clone());
        self.api_health = Some(refused);
        self.metrics = None;
        self
    }

    fn storage(mut self, used_bytes: u64) -> Self {
        if let Some(s) = self.storage.as_mut() {
            s.used_bytes = used_bytes;
        }
        self
    }

    fn users(mut self, users: f64) -> Self {
        if let Some(m) = self.metrics.as_mut() {
            m.users = Some(users);
        }
        self
    }

    fn traffic(mut self, per_second: f64, error_ratio: f64) -> Self {
        if let Some(m) = self.metrics.as_mut() {
            m.request_rate_per_second = Some(per_second);
            m.error_ratio = Some(error_ratio);
        }
        self
    }
}
