//! The agent stream against a real coordinator over real mutual TLS: who is
//! let in, what is stored and acknowledged, what is refused, and certificate
//! rotation without a restart.
//!
//! One test binary; its modules by subject:
//! - `results`: a valid agent's results, stored, acknowledged and visible.
//! - `admission`: who is refused, and certificates rotated without a restart.
//! - `pacing`: misbehaving and flooding streams, cut off or paced.
//! - `cluster`: pod certificates and results bound to their pod's node.

mod admission;
mod cluster;
mod pacing;
mod results;

use std::path::Path;
use std::time::Duration;

use knowton_coordinator::certs::{self, CertificateAuthority, Issued, Validity};
use knowton_proto::PROTOCOL_VERSION;
use knowton_proto::agent::v1::agent_message::Body as In;
use knowton_proto::agent::v1::agent_stream_client::AgentStreamClient;
use knowton_proto::agent::v1::coordinator_message::Body as Out;
use knowton_proto::agent::v1::{
    AgentMessage, CoordinatorMessage, Hello, PodResult, ProbeOutcome, ResultBatch, StorageSample,
};
use knowton_tests::{Db, TestCoordinator, eventually};
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<CoordinatorMessage>,
}

fn hello(node: &str) -> AgentMessage {
    AgentMessage {
        body: Some(In::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            node_name: node.to_owned(),
            agent_version: "test".to_owned(),
            session_id: "session-1".to_owned(),
        })),
    }
}

fn batch(sequence: u64, results: Vec<PodResult>) -> AgentMessage {
    AgentMessage {
        body: Some(In::Batch(ResultBatch {
            sequence,
            results,
            node: None,
        })),
    }
}

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

async fn channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Opens a stream and sends `first`; returns the agent or the refusal.
async fn open(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
    first: AgentMessage,
) -> Result<Agent, tonic::Status> {
    let channel = channel(addr, ca_pem, identity)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.unwrap();
    let inbound = AgentStreamClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Agent { tx, inbound })
}

impl Agent {
    /// The next message that is not a heartbeat.
    async fn next(&mut self) -> Result<Out, tonic::Status> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
                .await
                .expect("a message within 10 s")?
                .expect("the stream is open");
            match msg.body {
                Some(Out::Heartbeat(_)) => continue,
                Some(body) => return Ok(body),
                None => panic!("empty message"),
            }
        }
    }

    async fn send(&self, msg: AgentMessage) {
        self.tx.send(msg).await.unwrap();
    }

    async fn ack(&mut self) -> u64 {
        match self.next().await.unwrap() {
            Out::Ack(ack) => ack.sequence,
            other => panic!("expected an ack, got {other:?}"),
        }
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
