//! What tenant monitoring keeps in the store: threshold overrides, alerts
//! and their history, silences and per-minute health rollups.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use knowton_common::health::AlertState;
use knowton_common::health::{Check, HealthStatus, Severity, TransitionKind};
use knowton_common::thresholds::Thresholds;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Fence, OutboxMessage, Result};

/// An alert as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub check: Check,
    pub severity: Severity,
    pub state: AlertState,
    pub sequence: i64,
    pub summary: String,
    pub value: String,
    pub threshold: String,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// [`knowton_common::health::AUTOMATIC_ACTOR`], or who resolved it by hand.
    pub resolved_by: Option<String>,
    pub resolve_note: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    /// A firing notification went out.
    pub notified: bool,
    pub last_notified_at: Option<DateTime<Utc>>,
}

/// One entry of an alert's history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertEventRow {
    pub sequence: i64,
    pub at: DateTime<Utc>,
    pub kind: TransitionKind,
    pub severity: Severity,
    pub summary: String,
    /// [`knowton_common::health::AUTOMATIC_ACTOR`] for automatic
    /// transitions, else who acted.
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Notifications written to the outbox with it.
    pub notifications: i64,
}

/// One transition to record: the alert as it is after it, the history
/// entry, and the notifications it causes, all in one transaction.
#[derive(Debug, Clone)]
pub struct AlertWrite {
    /// The alert after the transition; `sequence` is the new one. With
    /// sequence 1 the row is inserted, else updated only if the stored
    /// sequence is the one before (else [`super::StoreError::Stale`]).
    pub alert: AlertRow,
    pub event: AlertEventRow,
    pub messages: Vec<OutboxMessage>,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub tenant: Option<Uuid>,
    /// `Some(false)`: open ones; `Some(true)`: resolved ones; `None`: all.
    pub resolved: Option<bool>,
    pub limit: u32,
    /// Alerts before this one (newest first).
    pub before: Option<Uuid>,
}

/// How the admin token's actions are recorded (`created_by`, `actor`).
pub const ADMIN_ACTOR: &str = "admin";

/// A silence as stored.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `None`: every check of the tenant.
    pub check: Option<Check>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Ended when an alert it covers resolves.
    pub end_on_resolve: bool,
    pub comment: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl Silence {
    /// Set by the operator (admin token): it quiets every channel. A
    /// tenant's own silence quiets only the tenant's channels.
    pub fn by_operator(&self) -> bool {
        self.created_by == ADMIN_ACTOR
    }

    pub fn covers(&self, tenant: Uuid, check: Check, at: DateTime<Utc>) -> bool {
        self.tenant_id == tenant
            && self.check.is_none_or(|c| c == check)
            && self.starts_at <= at
            && at < self.ends_at
    }
}

/// One tenant's health over one minute.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollup {
    #[serde(skip)]
    pub tenant_id: Uuid,
    /// The start of the minute (or of the downsampled bucket).
    pub minute: DateTime<Utc>,
    /// The worst status seen.
    pub status: HealthStatus,
    /// Share of evaluations with a backend pod answering, 0 to 1.
    pub availability: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub error_rate_percent: Option<f64>,
    pub requests_per_minute: Option<f64>,
    pub storage_bytes: Option<i64>,
    pub users: Option<f64>,
    /// Evaluations (or minutes, once downsampled) it sums up.
    pub samples: i64,
}

/// A tenant's health over a period, from its rollups.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthSummary {
    pub tenant_id: Uuid,
    /// Minutes with data.
    pub minutes: i64,
    /// Average availability over those minutes, 0 to 1.
    pub availability: f64,
    pub latency_p95_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub error_rate_percent: Option<f64>,
    pub storage_bytes: Option<i64>,
    pub users: Option<f64>,
    /// Minutes whose worst status was critical or down.
    pub bad_minutes: i64,
}

/// What a cleanup deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupCounts {
    pub rollups: u64,
    pub resolved_alerts: u64,
    pub delivered_notifications: u64,
    pub ended_silences: u64,
}

/// Storage of tenant monitoring (implemented by both backends).
#[async_trait]
pub trait MonitorStore: Send + Sync {
    /// Every tenant's threshold overrides.
    async fn all_thresholds(&self) -> Result<Vec<(Uuid, Thresholds)>>;
    /// One tenant's overrides, if it has any.
    async fn thresholds(&self, tenant: Uuid) -> Result<Option<Thresholds>>;
    /// Sets (or with `None` removes) the tenant's overrides, as a new
    /// configuration version (none when they do not change). `NotFound`
    /// without the tenant.
    async fn set_thresholds(
        &self,
        tenant: Uuid,
        thresholds: Option<&Thresholds>,
        actor: &str,
    ) -> Result<()>;

    /// Records one alert transition and its notifications atomically; when
    /// the alert resolves, ends the silences covering it that asked to.
    /// Only the leader records: refused with [`super::StoreError::Fenced`]
    /// once `fence`'s term has ended.
    async fn record_alert(&self, write: &AlertWrite, fence: Fence) -> Result<()>;
    async fn get_alert(&self, id: Uuid) -> Result<Option<AlertRow>>;
    /// Alerts newest first.
    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRow>>;
    /// Every open alert (firing or flapping), for rebuilding state at start.
    async fn open_alerts(&self) -> Result<Vec<AlertRow>>;
    async fn alert_events(&self, alert: Uuid) -> Result<Vec<AlertEventRow>>;

    async fn create_silence(&self, silence: &Silence) -> Result<()>;
    /// Silences not ended at `at` (and those starting later).
    async fn active_silences(&self, at: DateTime<Utc>) -> Result<Vec<Silence>>;
    /// Ends a silence now; false if there is none with that id.
    async fn end_silence(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool>;

    /// Inserts or replaces rollups (one transaction). Only the leader
    /// writes them: refused once `fence`'s term has ended.
    async fn write_rollups(&self, rollups: &[Rollup], fence: Fence) -> Result<()>;
    /// The tenant's rollups with `from <= minute < to`, oldest first.
    async fn rollups(
        &self,
        tenant: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>>;
    /// Every tenant's summary over `from <= minute < to`.
    async fn health_summaries(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HealthSummary>>;

    /// Deletes rollups, resolved alerts, delivered outbox rows and ended
    /// silences older than `before`.
    async fn cleanup(&self, before: DateTime<Utc>) -> Result<CleanupCounts>;
}
