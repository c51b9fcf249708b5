//! What the deployer keeps in the store: each tenant's latest deployment
//! with its progress, its deployment settings, and the log of what the
//! deployer did.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use knowton_common::health::DeploymentTrigger;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Fence, Result};

/// Where a tenant's deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Asked for; the deployer has not started it yet.
    Pending,
    /// Sending the objects (server-side apply), then pruning.
    Applying,
    /// Waiting for the Deployments' rollout.
    Waiting,
    /// Rolled out; waiting for the tenant's health through the agents.
    Verifying,
    Ready,
    Failed,
    /// Rendered and recorded only: no cluster is configured.
    Skipped,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Applying,
        Phase::Waiting,
        Phase::Verifying,
        Phase::Ready,
        Phase::Failed,
        Phase::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Applying => "applying",
            Phase::Waiting => "waiting",
            Phase::Verifying => "verifying",
            Phase::Ready => "ready",
            Phase::Failed => "failed",
            Phase::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Finished, one way or the other.
    pub fn is_settled(self) -> bool {
        matches!(self, Phase::Ready | Phase::Failed | Phase::Skipped)
    }
}

/// A tenant's deployment as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRow {
    pub tenant_id: Uuid,
    pub phase: Phase,
    pub attempt: i64,
    pub trigger: DeploymentTrigger,
    pub reason: Option<String>,
    pub objects_hash: Option<String>,
    pub allowlist: Vec<String>,
    pub min_replicas: Option<i32>,
    pub scaled_at: Option<DateTime<Utc>>,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl DeploymentRow {
    /// A tenant's first deployment, asked for now.
    pub fn new(tenant_id: Uuid, trigger: DeploymentTrigger) -> Self {
        let now = super::now();
        DeploymentRow {
            tenant_id,
            phase: Phase::Pending,
            attempt: 0,
            trigger,
            reason: None,
            objects_hash: None,
            allowlist: Vec::new(),
            min_replicas: None,
            scaled_at: None,
            requested_at: now,
            started_at: None,
            updated_at: now,
            finished_at: None,
        }
    }
}

/// One thing the deployer did.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEvent {
    pub at: DateTime<Utc>,
    pub attempt: i64,
    /// `phase`, `drift`, `prune` or `scale`.
    pub kind: String,
    pub detail: String,
}

/// Settings of a tenant's deployment to change; `None`: keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentSettings {
    pub allowlist: Option<Vec<String>>,
    /// `Some(None)`: back to the plan's minimum.
    pub min_replicas: Option<Option<i32>>,
}

#[async_trait]
pub trait DeployStore {
    async fn deployment(&self, tenant: Uuid) -> Result<Option<DeploymentRow>>;
    /// Every tenant's deployment.
    async fn deployments(&self) -> Result<Vec<DeploymentRow>>;
    /// The deployments in `phase`.
    async fn deployments_in(&self, phase: Phase) -> Result<Vec<DeploymentRow>>;
    /// Writes the row's progress (not its request time, written by
    /// [`DeployStore::request_deployment`], nor its settings: see
    /// [`DeployStore::set_deployment_settings`]) and, in the same
    /// transaction, the event. Fails with [`super::StoreError::NotFound`]
    /// when the tenant is gone. Only the leader deploys: refused once
    /// `fence`'s term has ended.
    async fn save_deployment(
        &self,
        row: &DeploymentRow,
        event: Option<&DeploymentEvent>,
        fence: Fence,
    ) -> Result<()>;
    /// Records a request: the deployment turns `pending` unless one is
    /// under way (which the request then follows), in one statement so
    /// that it never overwrites the deployer's progress. Returns the row.
    async fn request_deployment(
        &self,
        tenant: Uuid,
        trigger: DeploymentTrigger,
    ) -> Result<DeploymentRow>;
    /// Changes the given settings (creating the row if needed) and records
    /// `event`, in one transaction. An operator's change comes through any
    /// replica (`fence` `None`); scaling is the leader's (fenced).
    async fn set_deployment_settings(
        &self,
        tenant: Uuid,
        settings: &DeploymentSettings,
        event: &DeploymentEvent,
        fence: Option<Fence>,
    ) -> Result<()>;
    /// Records an event of the tenant's current deployment (the leader's).
    async fn record_deployment_event(
        &self,
        tenant: Uuid,
        event: &DeploymentEvent,
        fence: Fence,
    ) -> Result<()>;
    /// The tenant's latest events, newest first.
    async fn deployment_events(&self, tenant: Uuid, limit: i64) -> Result<Vec<DeploymentEvent>>;
}
