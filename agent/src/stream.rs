//! The stream to the coordinator: mutual TLS, hello, re-send of everything
//! not yet acknowledged, heartbeats both ways, reconnection with
//! exponential backoff and jitter. Certificates are read from their files
//! at every connection, so rotated files are used from the next one on and
//! a healthy stream is never dropped for a rotation.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use knowton_proto::PROTOCOL_VERSION;
use knowton_proto::agent::v1::agent_message::Body as Out;
use knowton_proto::agent::v1::agent_stream_client::AgentStreamClient;
use knowton_proto::agent::v1::coordinator_message::Body as In;
use knowton_proto::agent::v1::{
    AgentMessage, CoordinatorMessage, Heartbeat, Hello, NodeMetrics, PodResult, ResultBatch,
    Welcome,
};
use rand::RngExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::buffer::ResultBuffer;
use crate::instructions::Instructed;

/// Where and how to reach the coordinator.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// `https://host:port`
    pub coordinator: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub node: String,
    pub buffer_bytes: usize,
    pub heartbeat_every: Duration,
    /// No message from the coordinator for this long: reconnect.
    pub dead_after: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// What the stream reports to the agent's metrics and readiness.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub connected: AtomicBool,
    pub reconnects: AtomicU64,
    pub buffer_bytes: AtomicU64,
    pub dropped_results: AtomicU64,
    pub acked_sequence: AtomicU64,
    pub batches_sent: AtomicU64,
}

/// A batch of results from one probe round.
#[derive(Debug, Clone)]
pub struct Round {
    pub results: Vec<PodResult>,
    pub node: Option<NodeMetrics>,
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid coordinator address or TLS settings")]
    Transport(#[from] tonic::transport::Error),
    #[error("the coordinator refused the stream: {0}")]
    Refused(#[from] tonic::Status),
    #[error("the coordinator did not welcome the agent")]
    NoWelcome,
}

struct Session {
    out: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<CoordinatorMessage>,
}

fn msg(body: Out) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read {
        path: path.clone(),
        source,
    })
}

async fn connect(
    config: &StreamConfig,
    session_id: &str,
) -> Result<(Session, Welcome), ConnectError> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&config.ca)?))
        .identity(Identity::from_pem(read(&config.cert)?, read(&config.key)?));
    let channel = Endpoint::from_shared(config.coordinator.clone())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let (out, rx) = mpsc::channel(256);
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        node_name: config.node.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        session_id: session_id.to_owned(),
    };
    out.send(msg(Out::Hello(hello)))
        .await
        .map_err(|_| ConnectError::NoWelcome)?;
    let mut inbound = AgentStreamClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .map_err(|_| ConnectError::NoWelcome)??;
    match first.and_then(|m| m.body) {
        Some(In::Welcome(welcome)) => Ok((Session { out, inbound }, welcome)),
        _ => Err(ConnectError::NoWelcome),
    }
}

/// Keeps a stream to the coordinator until `rounds` closes and everything
/// is acknowledged (the caller bounds that with its grace period).
pub async fn run(
    config: StreamConfig,
    mut rounds: mpsc::Receiver<Round>,
    stats: Arc<StreamStats>,
    instructions: watch::Sender<Instructed>,
) {
    let session_id = uuid::Uuid::new_v4().to_string();
    let mut buffer = ResultBuffer::new(config.buffer_bytes);
    let mut backoff = config.backoff_min;
    let mut draining = false;
    let publish = |buffer: &ResultBuffer| {
        stats
            .buffer_bytes
            .store(buffer.bytes() as u64, Ordering::Relaxed);
        stats
            .dropped_results
            .store(buffer.dropped_results(), Ordering::Relaxed);
    };
    loop {
        if draining && buffer.is_empty() {
            return;
        }
        let (session, welcome) = match connect(&config, &session_id).await {
            Ok(connected) => connected,
            Err(err) => {
                tracing::warn!(coordinator = %config.coordinator, error = %err, retry_in_ms = backoff.as_millis() as u64, "cannot stream to the coordinator");
                // Full jitter: a fleet of agents does not reconnect in step.
                let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                backoff = (backoff * 2).min(config.backoff_max);
                let until = Instant::now() + wait;
                while !draining {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        round = rounds.recv() => match round {
                            Some(round) => { buffer.push(round.results, round.node); publish(&buffer); }
                            None => draining = true,
                        },
                    }
                }
                if draining {
                    tokio::time::sleep_until(until).await;
                }
                continue;
            }
        };
        backoff = config.backoff_min;
        stats.connected.store(true, Ordering::Relaxed);
        tracing::info!(coordinator = %config.coordinator, acked = welcome.acked_sequence, pending = buffer.len(), "streaming to the coordinator");
        if let Some(instruction) = welcome.instruction {
            instructions.send_modify(|instructed| instructed.apply(instruction));
        }
        buffer.ack(welcome.acked_sequence);
        publish(&buffer);
        let ended = stream(
            &config,
            session,
            &mut buffer,
            &mut rounds,
            &mut draining,
            &stats,
            &instructions,
            &publish,
        )
        .await;
        stats.connected.store(false, Ordering::Relaxed);
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
        match ended {
            Ok(()) if draining && buffer.is_empty() => return,
            Ok(()) => tracing::warn!("the coordinator closed the stream; reconnecting"),
            Err(reason) => tracing::warn!(%reason, "agent stream lost; reconnecting"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    config: &StreamConfig,
    mut session: Session,
    buffer: &mut ResultBuffer,
    rounds: &mut mpsc::Receiver<Round>,
    draining: &mut bool,
    stats: &StreamStats,
    instructions: &watch::Sender<Instructed>,
    publish: &impl Fn(&ResultBuffer),
) -> Result<(), String> {
    let send = |batch: ResultBatch| msg(Out::Batch(batch));
    for batch in buffer.pending() {
        session
            .out
            .send(send(batch.clone()))
            .await
            .map_err(|_| "stream closed while re-sending".to_owned())?;
        stats.batches_sent.fetch_add(1, Ordering::Relaxed);
    }
    let mut heartbeat = tokio::time::interval(config.heartbeat_every);
    let mut last_heard = Instant::now();
    loop {
        if *draining && buffer.is_empty() {
            return Ok(());
        }
        tokio::select! {
            round = rounds.recv(), if !*draining => match round {
                Some(round) => {
                    let batch = buffer.push(round.results, round.node);
                    publish(buffer);
                    session.out.send(send(batch)).await.map_err(|_| "stream closed".to_owned())?;
                    stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                }
                None => *draining = true,
            },
            received = session.inbound.message() => {
                last_heard = Instant::now();
                match received {
                    Ok(Some(CoordinatorMessage { body: Some(In::Ack(ack)) })) => {
                        buffer.ack(ack.sequence);
                        stats.acked_sequence.store(ack.sequence, Ordering::Relaxed);
                        publish(buffer);
                    }
                    Ok(Some(CoordinatorMessage { body: Some(In::Instruction(instruction)) })) => {
                        instructions.send_modify(|instructed| instructed.apply(instruction));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(status) => return Err(format!("{}: {}", status.code(), status.message())),
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > config.dead_after {
                    return Err(format!("nothing from the coordinator for {} s", config.dead_after.as_secs()));
                }
                let beat = Heartbeat { sent_at_unix_ms: chrono::Utc::now().timestamp_millis() };
                session.out.send(msg(Out::Heartbeat(beat))).await.map_err(|_| "stream closed".to_owned())?;
            }
        }
    }
}
