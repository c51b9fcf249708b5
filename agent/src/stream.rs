//! The streams to the coordinator replicas: one per replica address (DNS
//! names re-resolved, new addresses streamed to, gone ones closed), all in
//! one session with the same batches and sequence numbers, fed from one
//! shared buffer with a cursor per replica. Each replica's stream is as the
//! single stream was: mutual TLS, hello, re-send of what it has not
//! acknowledged, heartbeats both ways, reconnection with exponential
//! backoff and jitter, certificates read at every connection.

mod connection;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use knowton_proto::agent::v1::{NodeMetrics, PodResult};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::buffer::ResultBuffer;
use crate::instructions::Instructed;
use crate::replicas::{self, CoordinatorUrl, Replica};

/// Where and how to reach the coordinator replicas.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The `--coordinator` list.
    pub coordinators: Vec<CoordinatorUrl>,
    /// How often DNS names are resolved again.
    pub resolve_every: Duration,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub node: String,
    pub buffer_bytes: usize,
    pub heartbeat_every: Duration,
    /// No message from a replica for this long: reconnect to it.
    pub dead_after: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// What the streams report to the agent's metrics and readiness: totals
/// over the replicas, and each replica's own figures.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Streams lost, all replicas together.
    pub reconnects: AtomicU64,
    pub buffer_bytes: AtomicU64,
    /// Results dropped before at least one replica acknowledged them.
    pub dropped_results: AtomicU64,
    /// The highest sequence a replica acknowledged.
    pub acked_sequence: AtomicU64,
    /// The latest batch's sequence.
    pub last_sequence: AtomicU64,
    pub batches_sent: AtomicU64,
    replicas: Mutex<BTreeMap<SocketAddr, Arc<ReplicaStats>>>,
}

/// One replica's figures.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    pub connected: AtomicBool,
    /// Its streams lost.
    pub reconnects: AtomicU64,
    /// Its connection attempts that failed.
    pub connect_failures: AtomicU64,
    pub acked_sequence: AtomicU64,
    /// Results dropped for space before it acknowledged them.
    pub dropped_results: AtomicU64,
    pub batches_sent: AtomicU64,
}

impl StreamStats {
    /// Whether a stream to at least one replica is open.
    pub fn connected(&self) -> bool {
        self.lock()
            .values()
            .any(|r| r.connected.load(Ordering::Relaxed))
    }

    /// The replicas streamed to (at most [`replicas::MAX_REPLICAS`]), by address.
    pub fn replicas(&self) -> Vec<(SocketAddr, Arc<ReplicaStats>)> {
        self.lock().iter().map(|(a, r)| (*a, r.clone())).collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<SocketAddr, Arc<ReplicaStats>>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A batch of results from one probe round.
#[derive(Debug, Clone)]
pub struct Round {
    pub results: Vec<PodResult>,
    pub node: Option<NodeMetrics>,
}

/// What the replicas' streams share.
struct Shared {
    config: StreamConfig,
    session_id: String,
    buffer: Mutex<ResultBuffer>,
    /// The latest batch's sequence: streams wait on it for more to send.
    pushed: watch::Sender<u64>,
    /// An acknowledgement arrived or a stream opened or closed.
    progress: Notify,
    stats: Arc<StreamStats>,
    instructions: watch::Sender<Instructed>,
}

impl Shared {
    fn buffer(&self) -> MutexGuard<'_, ResultBuffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the buffer's figures to the stats.
    fn publish(&self, buffer: &ResultBuffer) {
        let stats = &self.stats;
        stats
            .buffer_bytes
            .store(buffer.bytes() as u64, Ordering::Relaxed);
        stats
            .dropped_results
            .store(buffer.dropped_results(), Ordering::Relaxed);
        stats
            .last_sequence
            .store(buffer.last_sequence(), Ordering::Relaxed);
        let replicas = stats.lock();
        let mut highest = 0;
        for (addr, cursor) in buffer.cursors() {
            highest = highest.max(cursor.acked);
            if let Some(replica) = replicas.get(&addr) {
                replica
                    .acked_sequence
                    .store(cursor.acked, Ordering::Relaxed);
                replica
                    .dropped_results
                    .store(cursor.dropped_results, Ordering::Relaxed);
            }
        }
        stats.acked_sequence.fetch_max(highest, Ordering::Relaxed);
    }

    fn push(&self, round: Round) {
        let mut buffer = self.buffer();
        let sequence = buffer.push(round.results, round.node);
        self.publish(&buffer);
        drop(buffer);
        self.pushed.send_replace(sequence);
    }

    /// `replica` acknowledged up to `sequence`; returns its cursor.
    fn ack(&self, replica: SocketAddr, sequence: u64) -> u64 {
        let mut buffer = self.buffer();
        buffer.ack(replica, sequence);
        self.publish(&buffer);
        let acked = buffer.cursor(replica).map_or(0, |c| c.acked);
        drop(buffer);
        self.progress.notify_one();
        acked
    }

    /// Nothing is left to flush: every replica acknowledged everything
    /// held, or at least one replica is connected and every connected one
    /// did (one that is down is not waited for).
    fn flushed(&self) -> bool {
        let buffer = self.buffer();
        if buffer.is_empty() {
            return true;
        }
        let last = buffer.last_sequence();
        let replicas = self.stats.lock();
        let mut connected = replicas
            .iter()
            .filter(|(_, r)| r.connected.load(Ordering::Relaxed))
            .peekable();
        connected.peek().is_some()
            && connected.all(|(addr, _)| buffer.cursor(*addr).is_some_and(|c| c.acked >= last))
    }
}

/// A task aborted when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps a stream to every coordinator replica until `rounds` closes and
/// what is buffered is flushed (the caller bounds that with its grace
/// period).
pub async fn run(
    config: StreamConfig,
    rounds: mpsc::Receiver<Round>,
    stats: Arc<StreamStats>,
    instructions: watch::Sender<Instructed>,
) {
    let (resolved_tx, resolved) = watch::channel(Vec::new());
    let _resolver = Task(tokio::spawn(replicas::watch(
        config.coordinators.clone(),
        config.resolve_every,
        resolved_tx,
    )));
    follow_replicas(config, resolved, rounds, stats, instructions).await;
}

/// [`run`] with the replicas taken from `resolved` as they change instead
/// of resolved from `config.coordinators` (for tests: they choose when a
/// replica appears or goes).
pub async fn follow_replicas(
    config: StreamConfig,
    mut resolved: watch::Receiver<Vec<Replica>>,
    mut rounds: mpsc::Receiver<Round>,
    stats: Arc<StreamStats>,
    instructions: watch::Sender<Instructed>,
) {
    let shared = Arc::new(Shared {
        session_id: uuid::Uuid::new_v4().to_string(),
        buffer: Mutex::new(ResultBuffer::new(config.buffer_bytes)),
        pushed: watch::Sender::new(0),
        progress: Notify::new(),
        config,
        stats,
        instructions,
    });
    let mut streams: BTreeMap<SocketAddr, Task> = BTreeMap::new();
    follow(&shared, &mut streams, &resolved.borrow_and_update().clone());
    let mut resolving = true;
    let mut draining = false;
    loop {
        if draining && shared.flushed() {
            return;
        }
        tokio::select! {
            round = rounds.recv(), if !draining => match round {
                Some(round) => shared.push(round),
                None => draining = true,
            },
            changed = resolved.changed(), if resolving => {
                if changed.is_err() {
                    resolving = false;
                    continue;
                }
                let next = resolved.borrow_and_update().clone();
                follow(&shared, &mut streams, &next);
            }
            () = shared.progress.notified(), if draining => {}
        }
    }
}

/// Opens a stream to each new replica and closes those of the gone.
fn follow(shared: &Arc<Shared>, streams: &mut BTreeMap<SocketAddr, Task>, resolved: &[Replica]) {
    let (added, removed) = replicas::diff(streams.keys(), resolved);
    for addr in removed {
        streams.remove(&addr);
        shared.stats.lock().remove(&addr);
        let mut buffer = shared.buffer();
        buffer.remove_replica(addr);
        shared.publish(&buffer);
        tracing::info!(replica = %addr, "coordinator replica gone; its stream is closed");
    }
    for replica in added {
        let stats = Arc::new(ReplicaStats::default());
        shared.stats.lock().insert(replica.addr, stats.clone());
        let mut buffer = shared.buffer();
        buffer.add_replica(replica.addr);
        shared.publish(&buffer);
        drop(buffer);
        tracing::info!(replica = %replica.addr, coordinator = %replica.url, "coordinator replica found");
        let addr = replica.addr;
        let task = tokio::spawn(connection::keep(shared.clone(), replica, stats));
        streams.insert(addr, Task(task));
    }
    shared.progress.notify_one();
}
