//! The notification outbox and each tenant's own channels: rows, delivery
//! states, and the store methods that enqueue, lease and record them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use knowton_common::health::{Channel, MessageKind};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use uuid::Uuid;

use super::Result;

/// A notification to enqueue in the outbox: one message to one recipient
/// on one channel (`email`, `webhook`, `slack`), delivered and retried on
/// its own. `recipient` is what may be shown (an address, or a redacted
/// URL); where to deliver is inside the sealed body.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: Uuid,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub sealed_body: String,
    /// Unique; receivers see it and may deduplicate on it.
    pub idempotency_key: String,
    /// When what caused it happened (for alerts: the breaching result's
    /// arrival), if known.
    pub caused_at: Option<DateTime<Utc>>,
}

/// Where an outbox row is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet; attempted again at `next_attempt_at`.
    Pending,
    /// A receiver accepted it.
    Delivered,
    /// Dead-lettered: a permanent error, or not delivered within the
    /// maximum age.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryState {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(format!(
                "unknown delivery state {other:?}: expected pending, delivered or failed"
            )),
        }
    }
}

/// An outbox row as an operator may see it: never the body.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    /// The tenant's slug, while the tenant exists.
    pub tenant_slug: Option<String>,
    pub kind: MessageKind,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub idempotency_key: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// A due outbox row leased to this coordinator for one delivery attempt.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub kind: MessageKind,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub sealed_body: String,
    pub idempotency_key: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub caused_at: Option<DateTime<Utc>>,
}

/// What became of a delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Try again at `at`.
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    /// Dead-letter it.
    Failed {
        error: String,
    },
}

/// A tenant's own notification channels as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChannels {
    /// `None`: the default, the tenant admin's address.
    pub emails: Option<Vec<String>>,
    /// Sealed JSON of the webhook's URL and secret.
    pub sealed_webhook: Option<String>,
    /// Sealed Slack incoming-webhook URL.
    pub sealed_slack: Option<String>,
    /// The redacted view shown by the API and recorded in the history.
    pub display: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

/// The outbox and the tenants' notification channels.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Writes `messages` to the outbox in one transaction, due at once.
    ///
    /// A change that causes notifications must write them in the same
    /// transaction as the change itself (as `create_tenant` does with the
    /// welcome e-mail): a store method for that change inserts its rows with
    /// the SQL of this one (see `insert_outbox` in `sql.rs`), and the caller
    /// pokes [`crate::notify::Wakeup`] after the commit.
    async fn enqueue(
        &self,
        tenant: Option<Uuid>,
        kind: MessageKind,
        messages: &[OutboxMessage],
    ) -> Result<()>;
    /// Leases up to `limit` pending rows of `channel` that are due at `now`
    /// and not leased by anyone else, until `lease_until`. Safe with several
    /// coordinators on one database: a row goes to one of them.
    async fn claim_due(
        &self,
        channel: Channel,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>>;
    /// When the next pending row becomes due (or its lease runs out), for
    /// the channels that can be delivered (`email`: whether SMTP is configured).
    async fn next_due(&self, email: bool, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>>;
    /// Records the outcome of an attempt on a leased row, counts the
    /// attempt and releases the lease. A row no longer pending is left alone.
    async fn record_delivery(
        &self,
        id: Uuid,
        outcome: &DeliveryOutcome,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Outbox rows ordered by id (oldest first), after `after` if given.
    async fn list_outbox(
        &self,
        state: Option<DeliveryState>,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<OutboxEntry>>;

    /// The tenant's own notification channels, if it has set any.
    async fn notification_channels(&self, tenant: Uuid) -> Result<Option<StoredChannels>>;
    /// Replaces the tenant's notification channels and records a history
    /// version; returns the new version.
    async fn set_notification_channels(
        &self,
        tenant: Uuid,
        channels: &StoredChannels,
        actor: &str,
        summary: &str,
    ) -> Result<i64>;
}
