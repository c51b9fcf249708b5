//! One replica's stream: connect with mutual TLS (the certificate checked
//! against the URL's name), hello, send from the replica's cursor, take its
//! acknowledgements and instructions, heartbeats, and reconnect with
//! exponential backoff and jitter.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use knowton_proto::PROTOCOL_VERSION;
use knowton_proto::agent::v1::agent_message::Body as Out;
use knowton_proto::agent::v1::agent_stream_client::AgentStreamClient;
use knowton_proto::agent::v1::coordinator_message::Body as In;
use knowton_proto::agent::v1::{AgentMessage, CoordinatorMessage, Heartbeat, Hello, Welcome};
use rand::RngExt;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{ReplicaStats, Shared, StreamConfig};
use crate::replicas::Replica;

/// Messages waiting for the transport on one stream: batches are cloned
/// from the shared buffer only as the stream takes them, so a replica's
/// stream holds at most this many besides the buffer.
const OUTBOUND: usize = 2;

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
    replica: &Replica,
    session_id: &str,
) -> Result<(Session, Welcome), ConnectError> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&config.ca)?))
        .identity(Identity::from_pem(read(&config.cert)?, read(&config.key)?));
    let mut endpoint = Endpoint::from_shared(replica.endpoint())?;
    if let Some(domain) = &replica.domain {
        // Connected by address, verified (and addressed) by name.
        tls = tls.domain_name(domain.clone());
        if let Ok(origin) = replica.url.parse() {
            endpoint = endpoint.origin(origin);
        }
    }
    let channel = endpoint
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let (out, rx) = mpsc::channel(OUTBOUND);
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

/// Keeps a stream to `replica` until aborted.
pub(super) async fn keep(shared: Arc<Shared>, replica: Replica, stats: Arc<ReplicaStats>) {
    let config = &shared.config;
    let mut backoff = config.backoff_min;
    loop {
        let (session, welcome) = match connect(config, &replica, &shared.session_id).await {
            Ok(connected) => connected,
            Err(err) => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(replica = %replica.addr, coordinator = %replica.url, error = %err, retry_in_ms = backoff.as_millis() as u64, "cannot stream to the coordinator");
                // Full jitter: a fleet of agents does not reconnect in step.
                let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                backoff = (backoff * 2).min(config.backoff_max);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        backoff = config.backoff_min;
        if let Some(instruction) = welcome.instruction {
            // From any replica: the latest one received is in force.
            shared
                .instructions
                .send_modify(|instructed| instructed.apply(instruction));
        }
        let cursor = shared.ack(replica.addr, welcome.acked_sequence);
        stats.connected.store(true, Ordering::Relaxed);
        shared.progress.notify_one();
        let pending = shared.buffer().pending(replica.addr).count();
        tracing::info!(replica = %replica.addr, coordinator = %replica.url, acked = cursor, pending, "streaming to the coordinator");
        let ended = stream(&shared, &replica, &stats, session, cursor).await;
        stats.connected.store(false, Ordering::Relaxed);
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
        shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        shared.progress.notify_one();
        match ended {
            Ok(()) => {
                tracing::warn!(replica = %replica.addr, "the coordinator closed the stream; reconnecting")
            }
            Err(reason) => {
                tracing::warn!(replica = %replica.addr, %reason, "agent stream lost; reconnecting")
            }
        }
    }
}

/// Sends every batch after `cursor` as the buffer gets them, takes the
/// replica's acknowledgements and instructions, and beats; returns when
/// the stream ends.
async fn stream(
    shared: &Shared,
    replica: &Replica,
    stats: &ReplicaStats,
    mut session: Session,
    cursor: u64,
) -> Result<(), String> {
    let config = &shared.config;
    let mut pushed = shared.pushed.subscribe();
    // The last sequence sent on this stream.
    let mut sent = cursor;
    let mut heartbeat = tokio::time::interval(config.heartbeat_every);
    let mut last_heard = Instant::now();
    loop {
        let latest = *pushed.borrow_and_update();
        tokio::select! {
            permit = session.out.reserve(), if latest > sent => {
                let permit = permit.map_err(|_| "stream closed".to_owned())?;
                let next = shared.buffer().next_after(sent).cloned();
                match next {
                    Some(batch) => {
                        sent = batch.sequence;
                        permit.send(msg(Out::Batch(batch)));
                        stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                        shared.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    // Dropped or acknowledged meanwhile: nothing to send.
                    None => sent = latest,
                }
            }
            changed = pushed.changed(), if latest <= sent => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            received = session.inbound.message() => {
                last_heard = Instant::now();
                match received {
                    Ok(Some(CoordinatorMessage { body: Some(In::Ack(ack)) })) => {
                        shared.ack(replica.addr, ack.sequence);
                    }
                    Ok(Some(CoordinatorMessage { body: Some(In::Instruction(instruction)) })) => {
                        shared.instructions.send_modify(|instructed| instructed.apply(instruction));
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
                // A full queue is a batch on its way: that says as much.
                match session.out.try_send(msg(Out::Heartbeat(beat))) {
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Closed(_)) => return Err("stream closed".to_owned()),
                }
            }
        }
    }
}
