//! Node agents in tests: a fake one speaking the stream protocol over real
//! mutual TLS, for tests that need to send exact messages and read exact
//! answers; and for a real agent (`knowton_agent::run::run` with
//! `Args::for_tests`), free ports and its own `/metrics` read back.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{TestCoordinator, eventually};
use knowton_agent::config::Args;
use knowton_agent::run::RunError;
use knowton_coordinator::certs::Issued;
use knowton_proto::PROTOCOL_VERSION;
use knowton_proto::agent::v1::agent_message::Body as In;
use knowton_proto::agent::v1::agent_stream_client::AgentStreamClient;
use knowton_proto::agent::v1::coordinator_message::Body as Out;
use knowton_proto::agent::v1::{
    AgentMessage, CoordinatorMessage, Hello, NodeMetrics, PodResult, ResultBatch,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// One open stream to the coordinator.
#[derive(Debug)]
pub struct FakeAgent {
    tx: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<CoordinatorMessage>,
}

/// A hello from `node`, session `session-1`.
pub fn hello(node: &str) -> AgentMessage {
    AgentMessage {
        body: Some(In::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            node_name: node.to_owned(),
            agent_version: "test".to_owned(),
            session_id: "session-1".to_owned(),
        })),
    }
}

/// A batch of `results`, with the node's figures when given.
pub fn batch(sequence: u64, results: Vec<PodResult>, node: Option<NodeMetrics>) -> AgentMessage {
    AgentMessage {
        body: Some(In::Batch(ResultBatch {
            sequence,
            results,
            node,
        })),
    }
}

/// A TLS channel to the agent listener at `addr`, trusting `ca_pem`,
/// presenting `identity` when given.
pub async fn channel(
    addr: SocketAddr,
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
        .expect("a valid URI")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

impl FakeAgent {
    /// Opens a stream and sends `first`; returns the agent or the refusal.
    pub async fn open(
        addr: SocketAddr,
        ca_pem: &str,
        identity: Option<&Issued>,
        first: AgentMessage,
    ) -> Result<FakeAgent, tonic::Status> {
        let channel = channel(addr, ca_pem, identity)
            .await
            .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("the stream is open");
        let inbound = AgentStreamClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(FakeAgent { tx, inbound })
    }

    /// The next message that is not a heartbeat (within 10 s: heartbeats
    /// do not extend the wait).
    pub async fn next(&mut self) -> Result<Out, tonic::Status> {
        let next = async {
            loop {
                let msg = self.inbound.message().await?.expect("the stream is open");
                match msg.body {
                    Some(Out::Heartbeat(_)) => continue,
                    Some(body) => return Ok(body),
                    None => panic!("empty message"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("a message other than a heartbeat within 10 s")
    }

    /// A sender of messages on this stream, to send from another task.
    pub fn sender(&self) -> mpsc::Sender<AgentMessage> {
        self.tx.clone()
    }

    pub async fn send(&self, msg: AgentMessage) {
        self.tx.send(msg).await.expect("the stream is open");
    }

    /// The next message, which must be an acknowledgement.
    pub async fn ack(&mut self) -> u64 {
        match self.next().await.expect("the stream is open") {
            Out::Ack(ack) => ack.sequence,
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

/// A real agent running in this process until stopped.
#[derive(Debug)]
pub struct RunningAgent {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), RunError>>,
}

impl RunningAgent {
    /// Starts `knowton_agent::run::run` with `args`.
    pub fn start(args: Args) -> RunningAgent {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(knowton_agent::run::run(args, async {
            let _ = stopped.await;
        }));
        RunningAgent { stop, task }
    }

    /// Stops it; it must end cleanly within its grace period (10 s).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the agent stops within its grace period")
            .expect("the agent's task ran to its end")
            .expect("the agent ran without an error");
    }

    /// Asks it to stop and gives it `wait` to, whatever its outcome (for
    /// tests that leave it behind a coordinator that is gone).
    pub async fn stop_within(self, wait: Duration) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(wait, self.task).await;
    }
}

/// acme's pod `pod` as `GET /api/v1/monitoring/health` shows it,
/// once `check` holds for it (15 s at most).
pub async fn acme_pod_where(
    kt: &TestCoordinator,
    pod: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(Duration::from_secs(15), what, || async {
        let body = kt.monitoring_health("acme").await.body;
        body["pods"]
            .as_array()?
            .iter()
            .find(|p| p["pod"] == pod && check(p))
            .cloned()
    })
    .await
}

/// A free loopback port (for a listener started after this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free loopback port")
        .local_addr()
        .expect("a bound address")
        .port()
}

/// One value of a real agent's own `/metrics` on `port`; `None` while it
/// does not answer or does not show `name`.
pub async fn agent_metric(http: &reqwest::Client, port: u16, name: &str) -> Option<f64> {
    let request = http.get(format!("http://127.0.0.1:{port}/metrics"));
    crate::process::scrape(request, name).await
}

/// Fails unless `seen` (an agent as a replica's `GET /api/v1/agents` shows
/// it) was sent every batch after `cursor` and nothing before: the replica,
/// restarted, resumed from its cursor with nothing missing.
pub fn assert_resumed_from(seen: &Value, cursor: u64) {
    assert_eq!(
        seen["firstSequence"].as_u64(),
        Some(cursor + 1),
        "resumed from its cursor: {seen}"
    );
    let received = seen["lastSequence"].as_u64().unwrap() - cursor;
    assert_eq!(
        seen["batchesReceived"].as_u64(),
        Some(received),
        "nothing missing: {seen}"
    );
}
