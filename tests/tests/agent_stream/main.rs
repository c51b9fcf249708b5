//! The agent stream against a real coordinator over real mutual TLS: who is
//! let in, what is stored and acknowledged, what is refused, and certificate
//! rotation without a restart.
//!
//! One test binary; its modules by subject:
//! - `results`: a valid agent's results, stored, acknowledged and visible.
//! - `admission`: who is refused, and certificates rotated without a restart.
//! - `pacing`: misbehaving and flooding streams, cut off or paced.
//! - `cluster`: pod certificates and results bound to their pod's node.
//! - `reports`: what agents are told and shown beyond results (slow
//!   thresholds, node figures).
//! - `fanout`: a real agent streaming to several coordinator replicas.

mod admission;
mod cluster;
mod fanout;
mod pacing;
mod reports;
mod results;

use std::path::Path;
use std::time::Duration;

use knowton_coordinator::certs::{self, CertificateAuthority, Issued, Validity};
use knowton_proto::PROTOCOL_VERSION;
use knowton_proto::agent::v1::agent_stream_client::AgentStreamClient;
use knowton_proto::agent::v1::coordinator_message::Body as Out;
use knowton_proto::agent::v1::{AgentMessage, PodResult, ProbeOutcome, StorageSample};
use knowton_tests::agent::{FakeAgent, batch, channel, hello};
use knowton_tests::{Db, TestCoordinator, eventually};
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

fn pod(tenant: &str, pod: &str, latency_us: u64) -> PodResult {
    PodResult {
        tenant: tenant.to_owned(),
        pod: pod.to_owned(),
        pod_ip: "127.0.0.2".to_owned(),
        observed_at_unix_ms: 1_790_000_000_000,
        liveness: Some(ProbeOutcome {
            ok: true,
            status_code: 200,
            latency_us,
            ..Default::default()
        }),
        api_health: Some(ProbeOutcome {
            ok: true,
            status_code: 200,
            latency_us,
            database_ok: Some(true),
            ..Default::default()
        }),
        metrics: None,
        storage: Some(StorageSample {
            used_bytes: 1 << 30,
            capacity_bytes: 10 << 30,
        }),
    }
}

async fn setup(dir: &Path) -> (TestCoordinator, String, Issued) {
    certs::init(dir, &[], false).unwrap();
    let kt = TestCoordinator::start_with_agents(Db::Sqlite, dir).await;
    kt.provision("acme", "professional").await;
    let ca = CertificateAuthority::load(dir).unwrap();
    let node = ca.issue_agent("node-a", Validity::days(30)).unwrap();
    (kt, ca.cert_pem().to_owned(), node)
}

async fn agents(kt: &TestCoordinator) -> serde_json::Value {
    let reply = kt.admin(Method::GET, "/api/v1/agents", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}
