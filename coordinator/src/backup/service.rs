//! Backup runs as the coordinator records them: one running per tenant and
//! kind, its progress written while it works (a run whose coordinator
//! stopped is recognised by its silence), its outcome at the end.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::{BackupKind, Backups, TenantRef};
use crate::store::{BackupRun, RunProgress, RunStatus, RunTrigger, Store, StoreError, Unique};

/// How often a running run records its progress.
const TOUCH_EVERY: Duration = Duration::from_secs(30);
/// A running run silent this long belongs to a coordinator that stopped.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a {kind} backup of this tenant is already running")]
    AlreadyRunning { kind: BackupKind },
    #[error("failed to record the backup run")]
    Store(#[source] StoreError),
}

/// Starts and records backup runs.
#[derive(Debug, Clone)]
pub struct BackupService {
    backups: Backups,
    store: Arc<dyn Store>,
}

impl BackupService {
    pub fn new(backups: Backups, store: Arc<dyn Store>) -> Self {
        BackupService { backups, store }
    }

    pub fn backups(&self) -> &Backups {
        &self.backups
    }

    /// Records a run of `kind` for `tenant` and starts it in the
    /// background; returns the run as recorded (running).
    pub async fn start(
        &self,
        tenant: TenantRef,
        kind: BackupKind,
        trigger: RunTrigger,
        actor: &str,
    ) -> Result<BackupRun, StartError> {
        let run = self.record(&tenant, kind, trigger, actor).await?;
        let this = self.clone();
        let started = run.clone();
        tokio::spawn(async move {
            let _ = this.work(&tenant, started).await;
        });
        Ok(run)
    }

    /// Records a run and does it; returns the run as it ended.
    pub async fn run(
        &self,
        tenant: &TenantRef,
        kind: BackupKind,
        trigger: RunTrigger,
        actor: &str,
    ) -> Result<BackupRun, StartError> {
        let run = self.record(tenant, kind, trigger, actor).await?;
        Ok(self.work(tenant, run).await)
    }

    async fn record(
        &self,
        tenant: &TenantRef,
        kind: BackupKind,
        trigger: RunTrigger,
        actor: &str,
    ) -> Result<BackupRun, StartError> {
        let now = crate::store::now();
        let run = BackupRun {
            id: Uuid::now_v7(),
            tenant_id: tenant.id,
            kind,
            trigger,
            actor: actor.to_owned(),
            status: RunStatus::Running,
            started_at: now,
            updated_at: now,
            finished_at: None,
            bytes_read: 0,
            bytes_written: 0,
            new_chunks: 0,
            backup_id: None,
            error: None,
        };
        let stale_before = now - chrono::Duration::from_std(STALE_AFTER).expect("a short duration");
        match self.store.start_backup_run(&run, stale_before).await {
            Ok(()) => Ok(run),
            Err(StoreError::Conflict(Unique::BackupRunning)) => {
                Err(StartError::AlreadyRunning { kind })
            }
            Err(other) => Err(StartError::Store(other)),
        }
    }

    /// Does the run, recording its progress and then its outcome.
    async fn work(&self, tenant: &TenantRef, mut run: BackupRun) -> BackupRun {
        let outcome = async {
            let writer = self.backups.chunk_writer(tenant.id).await?;
            let backup = self.backups.run_with(tenant, run.kind, &writer);
            tokio::pin!(backup);
            let mut touch = tokio::time::interval(TOUCH_EVERY);
            touch.tick().await;
            loop {
                tokio::select! {
                    done = &mut backup => break done,
                    _ = touch.tick() => {
                        let progress = progress_of(writer.transfer());
                        if let Err(err) = self.store.touch_backup_run(run.id, progress).await {
                            tracing::warn!(tenant = %tenant.slug, error = %err, "failed to record a backup's progress");
                        }
                    }
                }
            }
        }
        .await;
        let (progress, backup, error) = match &outcome {
            Ok(manifest) => (progress_of(manifest.transfer), Some(manifest.id), None),
            Err(err) => (
                RunProgress::default(),
                None,
                Some(knowton_common::error_chain(err)),
            ),
        };
        if let Some(error) = &error {
            tracing::error!(tenant = %tenant.slug, kind = %run.kind, error = %error, "backup failed");
        }
        if let Err(err) = self
            .store
            .finish_backup_run(run.id, progress, backup, error.as_deref())
            .await
        {
            tracing::error!(tenant = %tenant.slug, error = %err, "failed to record how a backup ended");
        }
        run.status = if error.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        run.finished_at = Some(Utc::now());
        run.bytes_read = progress.bytes_read;
        run.bytes_written = progress.bytes_written;
        run.new_chunks = progress.new_chunks;
        run.backup_id = backup;
        run.error = error;
        run
    }
}

fn progress_of(transfer: super::chunk::Transfer) -> RunProgress {
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    RunProgress {
        bytes_read: int(transfer.bytes_read),
        bytes_written: int(transfer.bytes_written),
        new_chunks: int(transfer.new_chunks),
    }
}
