//! Restores as jobs: a restore is planned at once (so "no backup before
//! that moment" is answered at once), recorded as running, and done in a
//! task of its own that records its phase and bytes every few seconds and
//! its outcome at the end, for the CLI and operators to poll from any
//! replica. A job whose coordinator stopped falls silent and is marked
//! interrupted before the tenant's next restore starts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::manifest::Manifest;
use super::recording::while_recording;
use super::service::{
    BackupService, RestoreError, RestorePart, RestorePlan, RestoreProgress, STALE_AFTER, StartError,
};
use super::{BackupKind, TenantRef};
use crate::store::{RestoreJob, RestoreStatus, StoreError, Unique};

/// How often a running job records where it is (and that it is alive); a
/// job silent for [`STALE_AFTER`], as a run, belongs to a coordinator that
/// stopped.
const RECORD_EVERY: Duration = Duration::from_secs(2);

/// Why a restore job did not start.
#[derive(Debug, thiserror::Error)]
pub enum JobStartError {
    /// Nothing to restore, or the repository could not be read.
    #[error(transparent)]
    Plan(RestoreError),
    #[error("a restore into this tenant is running: wait for it to end")]
    AlreadyRunning,
    #[error("failed to record the restore job")]
    Store(#[source] StoreError),
}

impl RestoreError {
    /// The stable code a job or a reply shows for this error.
    pub fn code(&self) -> &'static str {
        match self {
            RestoreError::NothingBefore { .. } => "no_backup",
            RestoreError::Safety { .. } => "restore_safety_failed",
            RestoreError::Part { .. } => "restore_failed",
            RestoreError::ScaleDown { .. } => "restore_scale_down_failed",
            RestoreError::Redeploy { .. } => "restore_redeploy_failed",
            RestoreError::Backup(_) => "backup_repository_error",
            RestoreError::Start(StartError::AlreadyRunning { .. } | StartError::Restoring) => {
                "backup_running"
            }
            RestoreError::Start(StartError::Store(_)) => "internal",
        }
    }
}

impl BackupService {
    /// Plans a restore of `from`'s backups at `at` (each kind, or `only`
    /// one) into `into`, records it as a running job and starts it;
    /// returns the job as recorded.
    pub async fn start_restore(
        &self,
        from: TenantRef,
        into: TenantRef,
        at: DateTime<Utc>,
        only: Option<BackupKind>,
        actor: String,
    ) -> Result<RestoreJob, JobStartError> {
        let RestorePlan {
            manifests: plan,
            parts,
            unchanged,
        } = self
            .plan_restore(&from, &into, at, only)
            .await
            .map_err(JobStartError::Plan)?;
        let total: u64 = parts.iter().map(|p| p.size).sum();
        let now = crate::store::now();
        let job = RestoreJob {
            id: Uuid::now_v7(),
            tenant_id: into.id,
            source: from.slug.clone(),
            at,
            only,
            actor: actor.clone(),
            status: RestoreStatus::Running,
            phase: "starting".to_owned(),
            bytes_total: int(total),
            bytes_done: 0,
            parts: parts_json(&parts),
            error_code: None,
            error: None,
            started_at: now,
            updated_at: now,
            finished_at: None,
        };
        let stale_before = now - chrono::Duration::from_std(STALE_AFTER).expect("a short duration");
        match self.store().start_restore_job(&job, stale_before).await {
            Ok(()) => {}
            Err(StoreError::Conflict(Unique::RestoreRunning)) => {
                return Err(JobStartError::AlreadyRunning);
            }
            Err(other) => return Err(JobStartError::Store(other)),
        }
        tracing::info!(job = %job.id, from = %from.slug, into = %into.slug, %at, actor, "restore started");
        for left in unchanged {
            tracing::warn!(job = %job.id, into = %into.slug, kind = %left.kind, reason = left.reason, "restore leaves it as it is");
        }
        let this = self.clone();
        let id = job.id;
        tokio::spawn(async move {
            this.run_job(id, &from, &into, &plan, parts, &actor, total)
                .await;
        });
        Ok(job)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_job(
        &self,
        id: Uuid,
        from: &TenantRef,
        into: &TenantRef,
        plan: &[Manifest],
        parts: Vec<RestorePart>,
        actor: &str,
        total: u64,
    ) {
        let progress = RestoreProgress::default();
        let planned = parts_json(&parts);
        let work = self.held_restore(id, from, into, plan, parts, actor, &progress);
        let (at, first) = (&progress, &planned);
        let outcome = while_recording(work, RECORD_EVERY, || async move {
            let shown = at.parts();
            let parts = if shown.is_empty() {
                first.clone()
            } else {
                parts_json(&shown)
            };
            let done = int(at.bytes_done.load(Ordering::Relaxed));
            if let Err(err) = self
                .store()
                .update_restore_job(id, &at.phase(), int(total), done, &parts)
                .await
            {
                tracing::warn!(job = %id, error = %err, "failed to record a restore's progress");
            }
        })
        .await;
        let finished = match &outcome {
            Ok(parts) => {
                tracing::info!(job = %id, into = %into.slug, "restore done");
                self.store()
                    .finish_restore_job(id, &parts_json(parts), None)
                    .await
            }
            Err(err) => {
                let message = knowton_common::error_chain(err);
                tracing::error!(job = %id, into = %into.slug, error = %message, "restore failed");
                let shown = progress.parts();
                let parts = if shown.is_empty() {
                    planned
                } else {
                    parts_json(&shown)
                };
                self.store()
                    .finish_restore_job(id, &parts, Some((err.code(), &message)))
                    .await
            }
        };
        if let Err(err) = finished {
            tracing::error!(job = %id, error = %err, "failed to record how a restore ended");
        }
    }
}

impl BackupService {
    /// [`BackupService::apply_restore`], with the tenant held at zero
    /// while its database or files are replaced, and redeployed after
    /// (whether the restore succeeded or not: a tenant is never left down
    /// by a restore that ended).
    #[allow(clippy::too_many_arguments)]
    async fn held_restore(
        &self,
        job: Uuid,
        from: &TenantRef,
        into: &TenantRef,
        plan: &[Manifest],
        parts: Vec<RestorePart>,
        actor: &str,
        progress: &RestoreProgress,
    ) -> Result<Vec<RestorePart>, RestoreError> {
        let data = parts.iter().any(|p| p.kind != BackupKind::Configuration);
        let Some(deployments) = self.holding().filter(|_| data) else {
            return self
                .apply_restore(from, into, plan, parts, actor, progress)
                .await;
        };
        progress.set_phase("scaling the tenant to zero");
        let restored = match self.scale_to_zero(deployments.as_ref(), job, into).await {
            Ok(()) => {
                tracing::info!(job = %job, into = %into.slug, "tenant held at zero for the restore");
                self.apply_restore(from, into, plan, parts, actor, progress)
                    .await
            }
            Err(reason) => Err(RestoreError::ScaleDown { reason }),
        };
        progress.set_phase("redeploying the tenant and verifying its health");
        let redeployed = self.redeploy(deployments.as_ref(), job, into).await;
        match (restored, redeployed) {
            (Ok(parts), Ok(note)) => {
                tracing::info!(job = %job, into = %into.slug, note = note.unwrap_or_default(), "tenant redeployed after the restore");
                Ok(parts)
            }
            (Ok(parts), Err(reason)) => Err(RestoreError::Redeploy {
                restored: parts.iter().map(|p| p.kind.to_string()).collect(),
                reason,
            }),
            (Err(err), redeployed) => {
                if let Err(reason) = redeployed {
                    tracing::error!(job = %job, into = %into.slug, reason, "the tenant's redeployment after a failed restore failed too");
                }
                Err(err)
            }
        }
    }
}

fn parts_json(parts: &[RestorePart]) -> serde_json::Value {
    serde_json::to_value(parts).expect("parts serialise")
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
