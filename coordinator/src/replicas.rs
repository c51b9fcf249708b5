//! The coordinator replicas as a whole: each one's heartbeat in the store
//! (where it answers, which agents stream to it) and the view of all of
//! them that `GET /api/v1/cluster` and `knowton-coordinator cluster` show.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::ingest::Registry;
use crate::leader::Leadership;
use crate::store::{MAX_LISTED_AGENTS, ReplicaBeat, ReplicaRow, Store, StoreError, Term};

/// Where this replica answers the others.
#[derive(Debug, Clone)]
pub struct Advertised {
    /// `http://ip:port` of its REST API.
    pub http_url: String,
    /// `ip:port` of its agents' listener, when ingest is on.
    pub grpc_addr: Option<String>,
}

/// How many replicas are alive (this one included), as this replica's
/// last heartbeat counted them; cheap to clone and read.
#[derive(Debug, Clone)]
pub struct LiveReplicas(Arc<AtomicU32>);

impl Default for LiveReplicas {
    fn default() -> Self {
        LiveReplicas(Arc::new(AtomicU32::new(1)))
    }
}

impl LiveReplicas {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// At least this one.
    pub fn set(&self, count: u32) {
        self.0.store(count.max(1), Ordering::Relaxed);
    }
}

/// A replica silent for longer than this is not alive: three beats missed.
fn silent_after(beat_every: Duration) -> Duration {
    beat_every * 3
}

/// Beats every `every` until `stop`, then removes this replica's row; each
/// beat also counts the live replicas into `live`.
pub fn spawn_heartbeat(
    store: Arc<dyn Store>,
    leadership: Leadership,
    registry: Arc<Registry>,
    advertised: Advertised,
    every: Duration,
    live: LiveReplicas,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let agents = registry
                .agents()
                .into_iter()
                .filter(|a| a.connected)
                .map(|a| a.node)
                .take(MAX_LISTED_AGENTS)
                .collect();
            let beat = ReplicaBeat {
                id: leadership.holder().to_owned(),
                replica: leadership.replica().to_owned(),
                http_url: advertised.http_url.clone(),
                grpc_addr: advertised.grpc_addr.clone(),
                agents,
            };
            match store.heartbeat(&beat, silent_after(every)).await {
                Ok(alive) => live.set(alive),
                Err(err) => {
                    tracing::warn!(error = %err, "failed to record this replica's heartbeat")
                }
            }
        }
        if let Err(err) = store.forget_replica(leadership.holder()).await {
            tracing::debug!(error = %err, "failed to remove this replica's heartbeat");
        }
    })
}

/// Every replica, as `GET /api/v1/cluster` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// The lease's epoch (0: nobody has led yet).
    pub epoch: i64,
    /// The id of the replica holding an unexpired lease, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// When the leader's lease runs out unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The id of the replica that answered.
    pub answered_by: String,
    pub replicas: Vec<ReplicaView>,
}

/// One replica.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// Its holder name: `--replica-id` and a suffix unique to the process.
    pub id: String,
    /// `--replica-id`.
    pub replica: String,
    pub http_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<String>,
    pub leader: bool,
    /// Whether its last heartbeat is recent (within three of its periods).
    pub alive: bool,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// The nodes whose agents stream to it.
    pub agents: Vec<String>,
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl ClusterView {
    /// The view from the store's lease and heartbeats; `beat_every` is how
    /// often replicas beat, `answered_by` this replica's id.
    pub fn of(
        term: Option<Term>,
        replicas: Vec<ReplicaRow>,
        beat_every: Duration,
        answered_by: &str,
    ) -> ClusterView {
        let leading = term.as_ref().filter(|t| t.expires_ms > t.now_ms);
        let silent_after = i64::try_from(silent_after(beat_every).as_millis()).unwrap_or(i64::MAX);
        ClusterView {
            epoch: term.as_ref().map_or(0, |t| t.epoch),
            leader: leading.map(|t| t.holder.clone()),
            lease_expires_at: leading.map(|t| at(t.expires_ms)),
            answered_by: answered_by.to_owned(),
            replicas: replicas
                .into_iter()
                .map(|r| ReplicaView {
                    leader: leading.is_some_and(|t| t.holder == r.beat.id),
                    alive: r.now_ms - r.heartbeat_ms <= silent_after,
                    started_at: at(r.started_ms),
                    last_heartbeat_at: at(r.heartbeat_ms),
                    id: r.beat.id,
                    replica: r.beat.replica,
                    http_url: r.beat.http_url,
                    grpc_addr: r.beat.grpc_addr,
                    agents: r.beat.agents,
                })
                .collect(),
        }
    }

    /// Reads the view from the store.
    pub async fn read(
        store: &dyn Store,
        beat_every: Duration,
        answered_by: &str,
    ) -> Result<ClusterView, StoreError> {
        let term = store.term().await?;
        let replicas = store.replicas().await?;
        Ok(Self::of(term, replicas, beat_every, answered_by))
    }

    /// The leader's REST API, if a live replica leads.
    pub fn leader_url(&self) -> Option<&str> {
        let leader = self.leader.as_deref()?;
        self.replicas
            .iter()
            .find(|r| r.id == leader && r.alive)
            .map(|r| r.http_url.as_str())
    }
}
