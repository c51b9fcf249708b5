//! The load generator's agent streams: one mutual-TLS connection per node,
//! hello and welcome, then batches as fast as acknowledgements allow, with
//! a fixed window of unacknowledged batches per stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use knowton_proto::PROTOCOL_VERSION;
use knowton_proto::agent::v1::agent_message::Body as Out;
use knowton_proto::agent::v1::coordinator_message::Body as In;
use knowton_proto::agent::v1::{AgentMessage, CoordinatorMessage, Hello};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::codec::{Frame, RawCodec};

const CONNECT_PATH: &str = "/knowton.agent.v1.AgentStream/Connect";

/// What every stream adds to as acknowledgements arrive.
#[derive(Debug, Default)]
pub struct Totals {
    pub acked_results: AtomicU64,
    pub acked_batches: AtomicU64,
}

/// One simulated node agent, connected and welcomed.
#[derive(Debug)]
pub struct NodeStream {
    pub node: String,
    tx: mpsc::Sender<Frame>,
    inbound: tonic::Streaming<CoordinatorMessage>,
    /// The node's round, sent again and again with new sequence numbers.
    body: Arc<[u8]>,
    results_per_batch: u64,
}

/// Connects as `node` with its certificate, sends the hello and waits for
/// the welcome.
pub async fn open(
    addr: SocketAddr,
    ca_pem: &str,
    node: String,
    identity: Identity,
    body: Arc<[u8]>,
    results_per_batch: u64,
    window: usize,
) -> anyhow::Result<NodeStream> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(identity)
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("{node}: failed to connect to {addr}"))?;
    let (tx, rx) = mpsc::channel(window + 2);
    let hello = AgentMessage {
        body: Some(Out::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            node_name: node.clone(),
            agent_version: "knowton-bench-ingest".to_owned(),
            session_id: uuid::Uuid::new_v4().to_string(),
        })),
    };
    tx.send(Frame::Encoded(hello.encode_to_vec().into()))
        .await
        .expect("the receiver is held below");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("the channel is not ready")?;
    let mut inbound = grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static(CONNECT_PATH),
            RawCodec,
        )
        .await
        .with_context(|| format!("{node}: the coordinator refused the stream"))?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .with_context(|| format!("{node}: no welcome within 10 s"))??;
    match first.and_then(|m| m.body) {
        Some(In::Welcome(_)) => Ok(NodeStream {
            node,
            tx,
            inbound,
            body,
            results_per_batch,
        }),
        other => bail!("{node}: expected a welcome, got {other:?}"),
    }
}

impl NodeStream {
    /// Sends batches, keeping `window` unacknowledged, until `stop` turns
    /// true; then waits (up to 10 s) for the outstanding acknowledgements
    /// and closes the stream.
    pub async fn drive(
        mut self,
        window: usize,
        mut stop: watch::Receiver<bool>,
        totals: Arc<Totals>,
    ) -> anyhow::Result<()> {
        let window = window.max(1) as u64;
        let (mut next, mut acked) = (1u64, 0u64);
        let mut stopping = false;
        let drain = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(drain);
        loop {
            while !stopping && next - 1 - acked < window {
                let frame = Frame::Batch {
                    sequence: next,
                    body: self.body.clone(),
                };
                if self.tx.send(frame).await.is_err() {
                    bail!("{}: the request stream closed", self.node);
                }
                next += 1;
            }
            if stopping && acked + 1 == next {
                return Ok(());
            }
            tokio::select! {
                received = self.inbound.message() => match received {
                    Ok(Some(CoordinatorMessage { body: Some(In::Ack(ack)) })) => {
                        let newly = ack.sequence.saturating_sub(acked);
                        acked = acked.max(ack.sequence);
                        totals.acked_batches.fetch_add(newly, Ordering::Relaxed);
                        totals.acked_results.fetch_add(newly * self.results_per_batch, Ordering::Relaxed);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => bail!("{}: the coordinator ended the stream", self.node),
                    Err(status) => bail!("{}: stream failed: {status}", self.node),
                },
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    drain.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(10));
                }
                () = &mut drain => bail!("{}: {} batches unacknowledged 10 s after the end", self.node, next - 1 - acked),
            }
        }
    }
}
