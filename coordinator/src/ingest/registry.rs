//! What the ingest server knows: connected agents, and each tenant's latest
//! result per pod. In memory; the next issue persists health rollups.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use chrono::{DateTime, Utc};
use knowton_proto::agent::v1::{Hello, NodeMetrics, PodResult, ProbeOutcome, ResultBatch};
use tokio::time::Instant;

use super::placement::Placement;
pub use super::pods::MAX_PODS_PER_NODE;
use super::pods::TenantPods;
use super::rejected::{RejectedCounts, RejectedResult, Tally};
use super::slow::SlowThresholds;
use crate::directory::TenantDirectory;

/// Counters of refused or dropped input (exported as metrics later).
#[derive(Debug, Default)]
pub struct Counters {
    pub handshakes_failed: AtomicU64,
    pub hellos_rejected: AtomicU64,
    pub streams_rejected: AtomicU64,
    /// Results not stored, by reason.
    pub results_rejected: RejectedCounts,
    pub duplicate_batches: AtomicU64,
    /// Batches an agent never sent (dropped from its full buffer).
    pub sequence_gaps: AtomicU64,
    pub results_accepted: AtomicU64,
    /// Batches that put their stream over its rate (the stream was then paced).
    pub batches_throttled: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One agent as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentState {
    pub node: String,
    pub agent_version: String,
    pub session_id: String,
    pub protocol_version: u32,
    pub remote: SocketAddr,
    pub connected: bool,
    pub connected_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub acked_sequence: u64,
    /// The first sequence this coordinator stored for the session (0: none yet).
    pub first_sequence: u64,
    pub batches_received: u64,
    pub results_received: u64,
    /// The node's figures from the agent's latest batch that carried them.
    pub node_metrics: Option<NodeSample>,
    /// Distinguishes a reconnection from the stream it replaces.
    connection: u64,
}

/// A node's CPU, memory and disk as its agent last sampled them.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSample {
    pub metrics: NodeMetrics,
    pub received_at: DateTime<Utc>,
}

/// A pod's latest result and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestResult {
    pub node: String,
    /// When it arrived, as shown to people.
    pub received_at: DateTime<Utc>,
    /// When it arrived, on tokio time: what ages are measured from.
    pub received: Instant,
    pub result: PodResult,
}

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Stored; acknowledge up to this sequence.
    Stored {
        ack: u64,
        accepted: usize,
        /// Results not stored, by reason.
        rejected: Tally,
    },
    /// Already stored earlier (a re-send): acknowledge again, store nothing.
    Duplicate { ack: u64 },
    /// The stream is no longer the agent's current one.
    Superseded,
}

#[derive(Debug, Default)]
struct RegistryState {
    agents: HashMap<String, AgentState>,
    latest: HashMap<String, TenantPods>,
    next_connection: u64,
    /// Tenants with new results, in arrival order, for the health engine.
    /// A name whose tenant's `dirty` is no longer set was taken as urgent
    /// meanwhile, and is skipped.
    dirty: VecDeque<String>,
    /// Tenants with a result that may change their health, or in the
    /// engine's attention: taken before the others.
    urgent: Vec<String>,
}

/// What [`Registry::take_changed`] hands the health engine.
#[derive(Debug, Default)]
pub struct Changed {
    /// Every tenant with a result that may change its health (a failed,
    /// pending or confirmed probe) or in the engine's attention.
    pub urgent: Vec<String>,
    /// The oldest of the other tenants with new results.
    pub routine: Vec<String>,
    /// More routine tenants are waiting.
    pub more: bool,
}

/// Whether a result may move its tenant's health: a probe failed, is still
/// waiting past the slow threshold, or is a confirmation. Judged without
/// thresholds; what it misses comes within a routine turn.
fn suspect(result: &PodResult) -> bool {
    let off = |o: &Option<ProbeOutcome>| {
        o.as_ref()
            .is_none_or(|o| !o.ok || o.pending || o.confirmed || o.database_ok == Some(false))
    };
    off(&result.liveness) || off(&result.api_health)
}

#[derive(Debug, Default)]
pub struct Registry {
    inner: RwLock<RegistryState>,
    pub counters: Counters,
    /// Notified when a tenant gets new results (see [`Registry::take_changed`]).
    pub changed: tokio::sync::Notify,
    /// Bumped to ask every connected agent to probe all its pods now.
    pub probe_now: tokio::sync::watch::Sender<u64>,
    /// Woken when an agent connects, disconnects or has a batch stored
    /// (see [`Registry::wait_for_agents`]).
    agents_changed: tokio::sync::Notify,
    /// With a cluster: where the tenant pods run (see [`Registry::bind_placement`]).
    placement: OnceLock<Arc<Placement>>,
    /// Each tenant's slow threshold, sent to the agents.
    pub slow_thresholds: SlowThresholds,
}

/// A registered stream, to report batches and its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub node: String,
    id: u64,
}

impl Registry {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RegistryState> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RegistryState> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, a result is stored only for a pod in its tenant's
    /// namespace reported by the agent of the pod's node, as `placement`
    /// says (with a cluster). Once bound, never unbound: `Err` when it
    /// already was.
    pub fn bind_placement(&self, placement: Arc<Placement>) -> Result<(), Arc<Placement>> {
        self.placement.set(placement)
    }

    /// Registers a stream after a valid hello. Returns it and the sequence
    /// already acknowledged for this agent session (0 for a new session).
    pub fn connect(
        &self,
        hello: &Hello,
        protocol_version: u32,
        remote: SocketAddr,
    ) -> (Connection, u64) {
        let now = Utc::now();
        let mut inner = self.write();
        inner.next_connection += 1;
        let id = inner.next_connection;
        let acked = inner
            .agents
            .get(&hello.node_name)
            .filter(|a| a.session_id == hello.session_id)
            .map_or(0, |a| a.acked_sequence);
        let previous = inner.agents.get(&hello.node_name);
        let (first, batches, results) = previous
            .filter(|a| a.session_id == hello.session_id)
            .map_or((0, 0, 0), |a| {
                (a.first_sequence, a.batches_received, a.results_received)
            });
        // The node is the same whatever the session: its last figures stay.
        let node_metrics = previous.and_then(|a| a.node_metrics.clone());
        inner.agents.insert(
            hello.node_name.clone(),
            AgentState {
                node: hello.node_name.clone(),
                agent_version: hello.agent_version.clone(),
                session_id: hello.session_id.clone(),
                protocol_version,
                remote,
                connected: true,
                connected_at: now,
                last_seen: now,
                acked_sequence: acked,
                first_sequence: first,
                batches_received: batches,
                results_received: results,
                node_metrics,
                connection: id,
            },
        );
        drop(inner);
        self.agents_changed.notify_waiters();
        (
            Connection {
                node: hello.node_name.clone(),
                id,
            },
            acked,
        )
    }

    /// Stores a batch's results, in sequence order: those of active tenants
    /// and, once bound to a cluster's placement, only for pods in their
    /// tenant's namespace running on this agent's node; the others are
    /// counted by reason.
    pub fn ingest(
        &self,
        conn: &Connection,
        batch: ResultBatch,
        directory: &TenantDirectory,
    ) -> BatchOutcome {
        let now = Utc::now();
        let received = Instant::now();
        let mut inner = self.write();
        let inner = &mut *inner;
        let Some(agent) = inner
            .agents
            .get_mut(&conn.node)
            .filter(|a| a.connection == conn.id)
        else {
            return BatchOutcome::Superseded;
        };
        agent.last_seen = now;
        if batch.sequence <= agent.acked_sequence {
            Counters::add(&self.counters.duplicate_batches, 1);
            return BatchOutcome::Duplicate {
                ack: agent.acked_sequence,
            };
        }
        let gap = batch.sequence - agent.acked_sequence - 1;
        if gap > 0 && agent.acked_sequence > 0 {
            Counters::add(&self.counters.sequence_gaps, gap);
        }
        let mut accepted = 0;
        let mut rejected = Tally::default();
        let dirty_before = inner.dirty.len() + inner.urgent.len();
        let placement = self.placement.get().map(|p| p.view());
        directory.with(|active| {
            for result in batch.results {
                if !active.contains(&result.tenant) {
                    rejected.add(RejectedResult::UnknownTenant);
                    continue;
                }
                if let Some(Err(why)) = placement
                    .as_ref()
                    .map(|p| p.check(&result.tenant, &result.pod, &conn.node))
                {
                    rejected.add(why);
                    continue;
                }
                if !inner.latest.contains_key(&result.tenant) {
                    inner
                        .latest
                        .insert(result.tenant.clone(), TenantPods::default());
                }
                let Some(pods) = inner.latest.get_mut(&result.tenant) else {
                    continue;
                };
                // The engine's lists get the name once until it takes it.
                let urgent = !pods.urgent && (pods.attention || suspect(&result));
                let newly_dirty = (urgent || !pods.dirty).then(|| result.tenant.clone());
                let pod = result.pod.clone();
                let latest = LatestResult {
                    node: conn.node.clone(),
                    received_at: now,
                    received,
                    result,
                };
                if pods.keep(pod, latest) {
                    accepted += 1;
                    if let Some(tenant) = newly_dirty {
                        if urgent {
                            pods.urgent = true;
                            inner.urgent.push(tenant);
                        } else {
                            inner.dirty.push_back(tenant);
                        }
                        pods.dirty = true;
                    }
                } else {
                    rejected.add(RejectedResult::PodsOverLimit);
                }
            }
        });
        drop(placement);
        let over = rejected.get(RejectedResult::PodsOverLimit);
        if over > 0 {
            tracing::warn!(node = %conn.node, dropped = over, limit = MAX_PODS_PER_NODE, "results for more pods of a tenant than one node may have were dropped");
        }
        let unbound = rejected.get(RejectedResult::WrongNode)
            + rejected.get(RejectedResult::NotInTenantNamespace);
        if unbound > 0 {
            tracing::warn!(
                node = %conn.node,
                wrong_node = rejected.get(RejectedResult::WrongNode),
                not_in_tenant_namespace = rejected.get(RejectedResult::NotInTenantNamespace),
                "results for pods the agent's node does not run were dropped"
            );
        }
        if inner.dirty.len() + inner.urgent.len() > dirty_before {
            self.changed.notify_one();
        }
        agent.acked_sequence = batch.sequence;
        if agent.first_sequence == 0 {
            agent.first_sequence = batch.sequence;
        }
        agent.batches_received += 1;
        agent.results_received += accepted as u64;
        if let Some(metrics) = batch.node {
            agent.node_metrics = Some(NodeSample {
                metrics,
                received_at: now,
            });
        }
        Counters::add(&self.counters.results_accepted, accepted as u64);
        rejected.commit(&self.counters.results_rejected);
        self.agents_changed.notify_waiters();
        BatchOutcome::Stored {
            ack: batch.sequence,
            accepted,
            rejected,
        }
    }

    /// Notes that the agent is alive (a heartbeat).
    pub fn touch(&self, conn: &Connection) {
        if let Some(agent) = self
            .write()
            .agents
            .get_mut(&conn.node)
            .filter(|a| a.connection == conn.id)
        {
            agent.last_seen = Utc::now();
        }
    }

    /// The stream ended; a newer stream of the same node is left alone.
    pub fn disconnect(&self, conn: &Connection) {
        if let Some(agent) = self
            .write()
            .agents
            .get_mut(&conn.node)
            .filter(|a| a.connection == conn.id)
        {
            agent.connected = false;
        }
        self.agents_changed.notify_waiters();
    }

    /// Waits until `done` holds for the agents as they are, re-checking
    /// whenever one connects, disconnects or has a batch stored; gives up
    /// at `deadline`. Returns whether it held.
    pub async fn wait_for_agents(
        &self,
        deadline: tokio::time::Instant,
        mut done: impl FnMut(&[AgentState]) -> bool,
    ) -> bool {
        loop {
            let changed = self.agents_changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so no change is missed between.
            changed.as_mut().enable();
            if done(&self.agents()) {
                return true;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => return done(&self.agents()),
            }
        }
    }

    pub fn agents(&self) -> Vec<AgentState> {
        let mut agents: Vec<_> = self.read().agents.values().cloned().collect();
        agents.sort_by(|a, b| a.node.cmp(&b.node));
        agents
    }

    /// Asks every connected agent to probe now; returns the connected
    /// agents and how many batches each had sent, to wait for the next.
    pub fn request_probe_now(&self) -> Vec<(String, u64)> {
        self.probe_now.send_modify(|n| *n += 1);
        self.read()
            .agents
            .values()
            .filter(|a| a.connected)
            .map(|a| (a.node.clone(), a.batches_received))
            .collect()
    }

    /// The tenants with results new since the last call: every urgent one,
    /// and the oldest `routine` of the others. Taken in small turns, a
    /// probe round's thousand healthy results do not hold up the one
    /// failure among them, nor one arriving while they are judged.
    pub fn take_changed(&self, routine: usize) -> Changed {
        let mut inner = self.write();
        let inner = &mut *inner;
        let urgent = std::mem::take(&mut inner.urgent);
        for tenant in &urgent {
            if let Some(pods) = inner.latest.get_mut(tenant) {
                pods.dirty = false;
                pods.urgent = false;
            }
        }
        let mut taken = Vec::with_capacity(routine.min(inner.dirty.len()));
        while taken.len() < routine
            && let Some(tenant) = inner.dirty.pop_front()
        {
            if let Some(pods) = inner.latest.get_mut(&tenant)
                && std::mem::take(&mut pods.dirty)
            {
                taken.push(tenant);
            }
        }
        Changed {
            urgent,
            routine: taken,
            more: !inner.dirty.is_empty(),
        }
    }

    /// Whether all of the tenant's results are taken as urgent (the
    /// engine's attention, while it is not healthy).
    pub fn set_attention(&self, tenant: &str, attention: bool) {
        if let Some(pods) = self.write().latest.get_mut(tenant) {
            pods.attention = attention;
        }
    }

    /// Forgets a tenant's results (it was deprovisioned).
    pub fn forget(&self, tenant: &str) {
        self.write().latest.remove(tenant);
        self.slow_thresholds.forget(tenant);
    }

    /// The tenant's latest result per pod, by pod name.
    pub fn latest(&self, tenant: &str) -> Vec<(String, LatestResult)> {
        let mut pods: Vec<_> = self
            .read()
            .latest
            .get(tenant)
            .map(|t| {
                t.pods
                    .iter()
                    .map(|(k, v)| (k.clone(), LatestResult::clone(v)))
                    .collect()
            })
            .unwrap_or_default();
        pods.sort_by(|a, b| a.0.cmp(&b.0));
        pods
    }
}

#[cfg(test)]
mod tests;
