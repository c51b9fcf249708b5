//! Changes one replica makes that the others must apply at once: each
//! replica keeps some of the store in memory (the active tenants, the
//! engine's tenant records, thresholds and silences). PostgreSQL carries
//! them (`NOTIFY`); SQLite serves one coordinator and has nothing to tell.
//! A periodic re-read of everything is the safety net for a change that
//! was missed (a listener's connection lost for a moment).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Result;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Change {
    /// A tenant was provisioned, changed, deprovisioned or purged: read it
    /// again (it may be gone).
    Tenant { id: Uuid, slug: String },
    /// A tenant's thresholds were set or reset.
    Thresholds { tenant: Uuid },
    /// A silence was created or ended.
    Silences,
}

/// The most bytes of an announcement read: ours are far smaller, and a
/// larger one is treated as a missed change.
pub const MAX_CHANGE_BYTES: usize = 1024;

/// Changes announced by any replica, in the order they were committed.
#[async_trait]
pub trait ChangeListener: Send {
    /// The next change; `Ok(None)` when some may have been missed (the
    /// connection was lost and is made again, or an announcement could not
    /// be read): read everything again.
    async fn next(&mut self) -> Result<Option<Change>>;
}

#[async_trait]
pub trait ChangeStore: Send + Sync {
    /// Tells every other listening replica of `change`, once the change is
    /// committed (this one has applied it: its listener skips it). Nothing on a backend that serves one
    /// coordinator.
    async fn announce(&self, change: &Change) -> Result<()>;
    /// Starts listening to every replica's announcements; `None` on a
    /// backend that serves one coordinator.
    async fn listen(&self) -> Result<Option<Box<dyn ChangeListener>>>;
}
