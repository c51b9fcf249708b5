//! Leadership among coordinator replicas, kept in the store itself so that
//! it can fence: a lease with a holder, an expiry on the database's clock
//! and an epoch that grows at every change of holder. Writes only the
//! leader may make carry the [`Fence`] of the term their writer believes
//! it holds and are refused ([`super::StoreError::Fenced`]) once another
//! replica has taken over.

use std::time::Duration;

use async_trait::async_trait;

use super::Result;

/// The term of leadership in force, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub holder: String,
    pub epoch: i64,
    /// When the holder took the lease (milliseconds since the Unix epoch,
    /// database clock).
    pub acquired_ms: i64,
    /// When the holder last renewed it.
    pub renewed_ms: i64,
    /// When it runs out unless renewed.
    pub expires_ms: i64,
    /// The database's clock when this was read: `expires_ms - now_ms` is
    /// how long the term still runs, whatever the replicas' clocks say.
    pub now_ms: i64,
}

impl Term {
    /// How long the term still runs, as of when it was read.
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.expires_ms.saturating_sub(self.now_ms).max(0) as u64)
    }
}

/// The term a leader-only write is made in. The write's transaction
/// checks that the lease still has this epoch and holds the lease row
/// until it commits, so that no take-over can slip in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    pub epoch: i64,
}

/// What a replica says of itself at each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaBeat {
    /// The holder name it campaigns under (unique per process).
    pub id: String,
    /// Its name among the coordinators (`--replica-id`).
    pub replica: String,
    /// Where its REST API answers the other replicas.
    pub http_url: String,
    /// Its agents' gRPC address, when ingest is on.
    pub grpc_addr: Option<String>,
    /// The nodes whose agents stream to it (at most
    /// [`MAX_LISTED_AGENTS`]).
    pub agents: Vec<String>,
}

/// The most agents a heartbeat lists.
pub const MAX_LISTED_AGENTS: usize = 1_000;

/// A replica as the store last heard of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub beat: ReplicaBeat,
    /// When it first beat (milliseconds since the Unix epoch, database
    /// clock).
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// The database's clock when this was read.
    pub now_ms: i64,
}

/// The lease, and the replicas' heartbeats.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes the lease for `holder` for `duration` when it is free, has
    /// expired or is `holder`'s already (then it is renewed, in the same
    /// epoch); the epoch grows when the holder changes. Returns the term in
    /// force afterwards, whoever holds it.
    async fn campaign(&self, holder: &str, duration: Duration) -> Result<Term>;
    /// Ends `holder`'s term at once, if it still holds the lease in
    /// `epoch`, so that another replica can take over without waiting for
    /// the expiry.
    async fn resign(&self, holder: &str, epoch: i64) -> Result<()>;
    /// The term in force, if any replica ever led.
    async fn term(&self) -> Result<Option<Term>>;
    /// Records that the replica is alive and what it says of itself; rows
    /// of replicas silent for a day are removed. Returns how many replicas
    /// (this one included) beat within `alive_within`.
    async fn heartbeat(&self, beat: &ReplicaBeat, alive_within: Duration) -> Result<u32>;
    /// Every replica heard of in the last day, by id.
    async fn replicas(&self) -> Result<Vec<ReplicaRow>>;
    /// Removes a replica that is shutting down.
    async fn forget_replica(&self, id: &str) -> Result<()>;
}
