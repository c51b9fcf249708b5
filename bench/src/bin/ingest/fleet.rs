//! The simulated fleet: nodes, the pods each one probes (spread over the
//! provisioned tenants), and one probe round of a node as an agent would
//! report it, pre-encoded once.

use std::sync::Arc;

use knowton_proto::agent::v1::{
    Failure, MetricsSample, NodeMetrics, PodResult, ProbeOutcome, ResultBatch, StorageSample,
};
use prost::Message;

/// The name of node `n`, which is also its certificate's identity.
pub fn node_name(n: usize) -> String {
    format!("bench-node-{n:03}")
}

/// One round of node `n`: `pods` results, the pods' tenants taken in turn
/// from `tenants` (offset per node, so every tenant has pods on many
/// nodes). Encoded as a `ResultBatch` without its sequence.
pub fn round_body(n: usize, pods: usize, tenants: &[String]) -> Arc<[u8]> {
    let results = (0..pods).map(|p| pod_result(n, p, tenants)).collect();
    ResultBatch {
        sequence: 0,
        results,
        node: Some(NodeMetrics {
            cpu_percent: 37.5,
            memory_used_bytes: 21 << 30,
            memory_total_bytes: 64 << 30,
            disk_used_bytes: 310 << 30,
            disk_total_bytes: 1 << 40,
        }),
    }
    .encode_to_vec()
    .into()
}

/// Pod `p` of node `n`: a healthy backend mostly, with the odd slow, failed
/// or half-scraped one, as real rounds have.
fn pod_result(n: usize, p: usize, tenants: &[String]) -> PodResult {
    let tenant = &tenants[(n * 7 + p) % tenants.len()];
    // Varied, deterministic numbers.
    let mix = (n * 1_000_003 + p * 7_919) as u64;
    let latency_us = 800 + mix % 9_000;
    let healthy = |latency_us: u64| ProbeOutcome {
        ok: true,
        status_code: 200,
        latency_us,
        connect_us: 90 + mix % 200,
        first_byte_us: latency_us * 9 / 10,
        failure: Failure::None.into(),
        detail: String::new(),
        database_ok: None,
        confirmed: false,
        pending: false,
    };
    let liveness = healthy(latency_us);
    let mut api_health = ProbeOutcome {
        database_ok: Some(true),
        ..healthy(latency_us * 3)
    };
    let mut metrics = MetricsSample {
        scraped: true,
        failure: Failure::None.into(),
        requests_total: Some((mix % 5_000_000) as f64),
        errors_5xx_total: Some((mix % 300) as f64),
        users: Some((mix % 2_000) as f64),
        request_rate_per_second: Some((mix % 4_000) as f64 / 10.0),
        error_ratio: Some((mix % 50) as f64 / 10_000.0),
    };
    match p % 100 {
        // A failed health check, confirmed on a fresh connection.
        0 => {
            api_health = ProbeOutcome {
                ok: false,
                status_code: 503,
                failure: Failure::HttpStatus.into(),
                detail: "GET /api/health answered 503".into(),
                database_ok: None,
                confirmed: true,
                ..healthy(latency_us)
            }
        }
        // A database outage reported by the backend.
        1 => api_health.database_ok = Some(false),
        // A scrape that failed.
        2 => {
            metrics = MetricsSample {
                scraped: false,
                failure: Failure::Timeout.into(),
                ..MetricsSample::default()
            }
        }
        _ => {}
    }
    PodResult {
        tenant: tenant.clone(),
        pod: format!("{tenant}-backend-{:x}-{p:04}", 0x5f7c_9d00 + n),
        pod_ip: format!("10.{}.{}.{}", 64 + n / 250, n % 250, p % 250 + 2),
        observed_at_unix_ms: 1_790_000_000_000 + (mix % 5_000) as i64,
        liveness: Some(liveness),
        api_health: Some(api_health),
        metrics: Some(metrics),
        storage: Some(StorageSample {
            used_bytes: (1 << 30) + mix % (4 << 30),
            capacity_bytes: 10 << 30,
        }),
    }
}
