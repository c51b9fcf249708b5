//! The `AgentStream/Connect` handler: hello checked against the client
//! certificate, then batches stored and acknowledged in order, heartbeats
//! both ways, and every misbehaviour ending only that agent's stream.

use std::sync::Arc;
use std::time::Duration;

use knowton_proto::PROTOCOL_VERSION;
use knowton_proto::agent::v1::agent_message::Body as In;
use knowton_proto::agent::v1::agent_stream_server::AgentStream;
use knowton_proto::agent::v1::coordinator_message::Body as Out;
use knowton_proto::agent::v1::{
    Ack, AgentMessage, CoordinatorMessage, Heartbeat, Hello, Instruction, ResultBatch, Welcome,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::AgentPeer;
use super::registry::{BatchOutcome, Connection, Counters, Registry};
use super::slow;
use crate::directory::TenantDirectory;

/// Limits and timers of agent streams.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The hello must arrive within this.
    pub hello_timeout: Duration,
    /// An agent silent for this long (no batch, no heartbeat) is cut off.
    pub idle_timeout: Duration,
    pub heartbeat_every: Duration,
    /// Most results in one batch.
    pub max_batch_results: usize,
    /// Probe interval imposed on agents in Welcome; `None` leaves each
    /// agent's own `--interval`.
    pub probe_interval: Option<Duration>,
    /// Results per second one stream may send, with a burst of one
    /// second's worth. A faster agent is read more slowly (HTTP/2 flow control then
    /// slows its sending), so a flood costs the coordinator no more than
    /// this, and an agent re-sending a backlog is paced, not cut off.
    pub max_results_per_second: u32,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(5),
            max_batch_results: 20_000,
            probe_interval: None,
            max_results_per_second: 50_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct IngestService {
    pub registry: Arc<Registry>,
    pub directory: Arc<TenantDirectory>,
    pub settings: StreamSettings,
    /// Set when the coordinator shuts down: open streams end with
    /// UNAVAILABLE so agents reconnect (to another replica) at once.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// On Kubernetes: checks agents identified by their pod.
    pub pods: Option<super::identity::PodIdentities>,
}

/// What a stream follows to instruct its agent after the welcome.
#[derive(Debug)]
struct Instructions {
    /// Bumped for a check-all.
    probe_now: tokio::sync::watch::Receiver<u64>,
    /// The tenants' slow thresholds.
    slow_thresholds: tokio::sync::watch::Receiver<super::slow::TenantThresholds>,
}

fn message(body: Out) -> Result<CoordinatorMessage, Status> {
    Ok(CoordinatorMessage { body: Some(body) })
}

/// Resolves once `stop` is set (never, if its sender is gone without it).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tonic::async_trait]
impl AgentStream for IngestService {
    type ConnectStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let peer = request
            .extensions()
            .get::<AgentPeer>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(self.settings.hello_timeout, inbound.message()).await
        {
            Err(_) => {
                Counters::add(&self.registry.counters.streams_rejected, 1);
                return Err(Status::deadline_exceeded(format!(
                    "no hello within {} s",
                    self.settings.hello_timeout.as_secs()
                )));
            }
            Ok(Ok(Some(AgentMessage {
                body: Some(In::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) | Ok(Err(_)) => {
                Counters::add(&self.registry.counters.streams_rejected, 1);
                return Err(Status::invalid_argument("the first message must be hello"));
            }
        };
        let protocol_version = self.check_hello(&hello, &peer).await?;
        // Subscribed before the agent shows as connected: a check-all that
        // sees it connected must reach it.
        let probe_now = self.registry.probe_now.subscribe();
        let mut slow_thresholds = self.registry.slow_thresholds.subscribe();
        let (conn, acked) = self.registry.connect(&hello, protocol_version, peer.remote);
        tracing::info!(node = %conn.node, agent_version = %hello.agent_version, acked, remote = %peer.remote, "agent connected");

        let (tx, rx) = mpsc::channel(64);
        let welcome = Welcome {
            protocol_version,
            coordinator_version: env!("CARGO_PKG_VERSION").to_owned(),
            acked_sequence: acked,
            instruction: Some(Instruction {
                probe_interval_ms: self
                    .settings
                    .probe_interval
                    .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
                ..slow::instruction(&slow_thresholds.borrow_and_update())
            }),
        };
        tx.send(message(Out::Welcome(welcome)))
            .await
            .map_err(|_| Status::cancelled("the agent went away"))?;
        let instructions = Instructions {
            probe_now,
            slow_thresholds,
        };
        tokio::spawn(self.clone().run(conn, inbound, tx, instructions));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl IngestService {
    async fn check_hello(&self, hello: &Hello, peer: &AgentPeer) -> Result<u32, Status> {
        // A pod identity is checked against the API server even when the
        // hello names the certificate's own CN: otherwise an agent pod's
        // certificate would be let in as a "node" named after its pod,
        // unchecked (issue 11, finding 8).
        let refused = match &self.pods {
            Some(pods) if peer.node.ends_with(super::identity::POD_SUFFIX) => {
                pods.verify(&peer.node, &hello.node_name).await.err()
            }
            _ if hello.node_name == peer.node => None,
            _ => Some(format!(
                "hello names node {:?} but the client certificate is for {:?}",
                hello.node_name, peer.node
            )),
        };
        if let Some(reason) = refused {
            Counters::add(&self.registry.counters.hellos_rejected, 1);
            tracing::warn!(certificate = %peer.node, hello = %hello.node_name, remote = %peer.remote, %reason, "agent refused: its certificate is not for the node it names");
            return Err(Status::permission_denied(reason));
        }
        if hello.protocol_version == 0 || hello.session_id.is_empty() {
            Counters::add(&self.registry.counters.hellos_rejected, 1);
            return Err(Status::invalid_argument(
                "hello needs a protocol_version and a session_id",
            ));
        }
        Ok(hello.protocol_version.min(PROTOCOL_VERSION))
    }

    async fn run(
        self,
        conn: Connection,
        mut inbound: Streaming<AgentMessage>,
        tx: mpsc::Sender<Result<CoordinatorMessage, Status>>,
        mut instructions: Instructions,
    ) {
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat_every);
        heartbeat.tick().await;
        let mut pace = Pace::new(self.settings.max_results_per_second);
        let shutdown = stopped(self.shutdown.clone());
        tokio::pin!(shutdown);
        let end = loop {
            tokio::select! {
                () = &mut shutdown => {
                    break Some(Status::unavailable("the coordinator is shutting down"));
                }
                received = async {
                    // Over its rate, the stream is not read until it is back within it.
                    if let Some(until) = pace.throttled_until() {
                        tokio::time::sleep_until(until).await;
                    }
                    tokio::time::timeout(self.settings.idle_timeout, inbound.message()).await
                } => {
                    let msg = match received {
                        Err(_) => break Some(Status::deadline_exceeded(format!(
                            "nothing from the agent for {} s", self.settings.idle_timeout.as_secs()))),
                        Ok(Ok(Some(msg))) => msg,
                        Ok(Ok(None)) => break None,
                        Ok(Err(status)) => {
                            tracing::debug!(node = %conn.node, %status, "agent stream failed");
                            break Some(status);
                        }
                    };
                    if pace.spend(results_in(&msg)) {
                        Counters::add(&self.registry.counters.batches_throttled, 1);
                    }
                    match self.handle(&conn, msg) {
                        Ok(Some(reply)) => {
                            if tx.send(message(reply)).await.is_err() {
                                break None;
                            }
                        }
                        Ok(None) => {}
                        Err(status) => break Some(status),
                    }
                }
                Ok(()) = instructions.probe_now.changed() => {
                    let instruction = Out::Instruction(Instruction {
                        probe_now: true,
                        ..Instruction::default()
                    });
                    if tx.send(message(instruction)).await.is_err() {
                        break None;
                    }
                }
                Ok(()) = instructions.slow_thresholds.changed() => {
                    // Changes while this one is sent are coalesced into the next.
                    let tenants = instructions.slow_thresholds.borrow_and_update().clone();
                    let instruction = Out::Instruction(slow::instruction(&tenants));
                    if tx.send(message(instruction)).await.is_err() {
                        break None;
                    }
                }
                _ = heartbeat.tick() => {
                    let beat = Out::Heartbeat(Heartbeat { sent_at_unix_ms: unix_ms() });
                    if tx.send(message(beat)).await.is_err() {
                        break None;
                    }
                }
            }
        };
        if let Some(status) = end {
            tracing::info!(node = %conn.node, code = ?status.code(), message = status.message(), "agent stream ended by the coordinator");
            let _ = tx.send(Err(status)).await;
        } else {
            tracing::info!(node = %conn.node, "agent disconnected");
        }
        self.registry.disconnect(&conn);
    }

    fn handle(&self, conn: &Connection, msg: AgentMessage) -> Result<Option<Out>, Status> {
        match msg.body {
            Some(In::Batch(batch)) => {
                if let Err(status) = check_batch(&self.settings, &batch) {
                    Counters::add(&self.registry.counters.streams_rejected, 1);
                    return Err(status);
                }
                match self.registry.ingest(conn, batch, &self.directory) {
                    BatchOutcome::Stored { ack, .. } | BatchOutcome::Duplicate { ack } => {
                        Ok(Some(Out::Ack(Ack { sequence: ack })))
                    }
                    BatchOutcome::Superseded => Err(Status::aborted(
                        "a newer stream of this node replaced this one",
                    )),
                }
            }
            Some(In::Heartbeat(_)) => {
                self.registry.touch(conn);
                Ok(None)
            }
            Some(In::Hello(_)) => Err(Status::invalid_argument("hello was already sent")),
            // A message kind from a newer agent: ignored, for compatibility.
            None => {
                self.registry.touch(conn);
                Ok(None)
            }
        }
    }
}

/// What a batch must be before its results are looked at; a batch that
/// is not ends its stream.
pub(super) fn check_batch(settings: &StreamSettings, batch: &ResultBatch) -> Result<(), Status> {
    if batch.results.len() > settings.max_batch_results {
        return Err(Status::invalid_argument(format!(
            "a batch holds at most {} results, got {}",
            settings.max_batch_results,
            batch.results.len()
        )));
    }
    if batch.sequence == 0 {
        return Err(Status::invalid_argument(
            "batch sequence numbers start at 1",
        ));
    }
    Ok(())
}

fn results_in(msg: &AgentMessage) -> usize {
    match &msg.body {
        Some(In::Batch(batch)) => batch.results.len(),
        _ => 0,
    }
}

/// A token bucket of results: `rate` per second, holding at most one
/// second's worth. Spending may take it below zero (a batch is never
/// split); the stream then waits until the bucket is back at zero.
#[derive(Debug)]
struct Pace {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Pace {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Pace {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned = (now - self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.at = now;
    }

    /// Takes `results` from the bucket; true when that put the stream over its rate.
    fn spend(&mut self, results: usize) -> bool {
        self.refill(Instant::now());
        self.tokens -= results as f64;
        self.tokens < 0.0
    }

    /// When the stream may be read again, if it is over its rate now.
    fn throttled_until(&mut self) -> Option<Instant> {
        let now = Instant::now();
        self.refill(now);
        (self.tokens < 0.0).then(|| now + Duration::from_secs_f64(-self.tokens / self.rate))
    }
}
