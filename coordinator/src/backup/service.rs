//! Backup runs as the coordinator records them: one running per tenant and
//! kind, its progress written while it works (a run whose coordinator
//! stopped is recognised by its silence), its outcome at the end.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::manifest::Manifest;
use super::recording::while_recording;
use super::status::BackupStatus;
use super::{BackupError, BackupInfo, BackupKind, Backups, TenantRef};
use crate::store::{
    BackupRun, LastBackup, RunProgress, RunStatus, RunTrigger, Store, StoreError, Unique,
    Verification,
};

/// How often the backups' status is read for the metrics and the health
/// engine.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// How often a running run records its progress (and that it is alive):
/// one small update per running backup.
const TOUCH_EVERY: Duration = Duration::from_secs(5);
/// A running run silent this long belongs to a coordinator that stopped
/// (six missed updates): after a crash, the tenant's next backup of that
/// kind waits this long at most.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a {kind} backup of this tenant is already running")]
    AlreadyRunning { kind: BackupKind },
    /// A restore is replacing the tenant's data: a backup now would hold
    /// half of it (the restore takes its own safety backups first).
    #[error("a restore into this tenant is running: its backups wait for it to end")]
    Restoring,
    #[error("failed to record the backup run")]
    Store(#[source] StoreError),
}

/// Starts and records backup runs.
#[derive(Debug, Clone)]
pub struct BackupService {
    backups: Backups,
    store: Arc<dyn Store>,
    /// Each active tenant's backups as last read from the store
    /// (refreshed every minute and after each run or verification here).
    status: Arc<BackupStatus>,
    /// Applies a restored configuration (see `config`).
    pub(super) config_target: Option<Arc<dyn super::config::ConfigurationTarget>>,
    /// Holds a tenant at zero while a restore replaces its data (see
    /// `hold`).
    pub(super) deployments: Option<Arc<dyn super::hold::TenantDeployments>>,
}

impl BackupService {
    pub fn new(backups: Backups, store: Arc<dyn Store>) -> Self {
        BackupService {
            backups,
            store,
            status: Arc::default(),
            config_target: None,
            deployments: None,
        }
    }

    /// Each active tenant's last successful backup of each kind, as last
    /// read.
    pub fn last_successes(&self) -> Vec<LastBackup> {
        self.status.last_successes()
    }

    /// Each active tenant's backups, as last read.
    pub fn status(&self) -> &Arc<BackupStatus> {
        &self.status
    }

    /// Reads the backups' status again.
    pub async fn refresh(&self) {
        if let Err(err) = self.status.refresh(self.store.as_ref()).await {
            tracing::warn!(error = %err, "failed to read the backups' status");
        }
    }

    /// Refreshes [`Self::status`] every minute until `stop`.
    pub async fn keep_fresh(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.refresh().await;
        }
    }

    pub fn backups(&self) -> &Backups {
        &self.backups
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
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
        self.not_restoring(&tenant).await?;
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
        self.not_restoring(tenant).await?;
        self.run_during_restore(tenant, kind, trigger, actor).await
    }

    /// [`Self::run`] without the check for a restore under way: the
    /// restore's own safety backups.
    pub(super) async fn run_during_restore(
        &self,
        tenant: &TenantRef,
        kind: BackupKind,
        trigger: RunTrigger,
        actor: &str,
    ) -> Result<BackupRun, StartError> {
        let run = self.record(tenant, kind, trigger, actor).await?;
        Ok(self.work(tenant, run).await)
    }

    /// Refuses a backup of a tenant a live restore job is writing into.
    async fn not_restoring(&self, tenant: &TenantRef) -> Result<(), StartError> {
        let alive_since =
            Utc::now() - chrono::Duration::from_std(STALE_AFTER).expect("a short duration");
        match self.store.live_restore(tenant.id, alive_since).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(StartError::Restoring),
            Err(err) => Err(StartError::Store(err)),
        }
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
            let writer = &writer;
            while_recording(backup, TOUCH_EVERY, || async move {
                let progress = progress_of(writer.transfer());
                if let Err(err) = self.store.touch_backup_run(run.id, progress).await {
                    tracing::warn!(tenant = %tenant.slug, error = %err, "failed to record a backup's progress");
                }
            })
            .await
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
        self.refresh().await;
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

/// What a restore does (or, dry, would do): per kind, the backup
/// restored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestorePart {
    pub kind: BackupKind,
    pub backup_id: Uuid,
    pub taken_at: chrono::DateTime<Utc>,
    /// Bytes the backup restores.
    pub size: u64,
    /// The configuration version, for a configuration backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The backup of the state the restore replaced: what to restore to
    /// undo it (absent on a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_backup_id: Option<Uuid>,
    /// Bytes written (absent on a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_bytes: Option<u64>,
}

/// What a restore would do.
#[derive(Debug, Default)]
pub struct RestorePlan {
    /// The backups it restores, in order.
    pub manifests: Vec<Manifest>,
    /// The same, as shown.
    pub parts: Vec<RestorePart>,
    /// The kinds it leaves as they are.
    pub unchanged: Vec<Unchanged>,
}

/// A kind a restore leaves as it is, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unchanged {
    pub kind: BackupKind,
    pub reason: String,
}

/// Why a restore did not (fully) happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("no backup of tenant {tenant} at or before {at}{}", only.map(|k| format!(" of its {k}")).unwrap_or_default())]
    NothingBefore {
        tenant: String,
        at: chrono::DateTime<Utc>,
        only: Option<BackupKind>,
    },
    #[error(
        "the safety backup of {kind} before the restore failed, so nothing was restored: {error}"
    )]
    Safety { kind: BackupKind, error: String },
    #[error(
        "restoring the {kind} failed ({}); {}",
        knowton_common::error_chain(source),
        match (restored.is_empty(), safety) {
            (true, Some(id)) => format!("nothing else was restored; the safety backup {id} holds the state before"),
            (false, Some(id)) => format!("already restored: {}; the safety backup {id} holds the {kind} as it was before", restored.join(", ")),
            (_, None) => String::new(),
        }
    )]
    Part {
        kind: BackupKind,
        restored: Vec<String>,
        safety: Option<Uuid>,
        #[source]
        source: BackupError,
    },
    #[error(
        "scaling the tenant to zero before the restore failed, so nothing was restored: {reason}"
    )]
    ScaleDown { reason: String },
    #[error(
        "the data was restored ({}), but the tenant's redeployment after it failed: {reason}",
        restored.join(", ")
    )]
    Redeploy {
        restored: Vec<String>,
        reason: String,
    },
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Start(#[from] StartError),
}

impl BackupService {
    /// What a restore of `from`'s backups at `at` (each kind, or `only`
    /// one) into `into` would do: the latest complete backup of each kind
    /// taken at or before `at`, and each kind it would leave as it is, and
    /// why. An inactive `into` gets its database and files back, its
    /// configuration only once it is provisioned again (`only:
    /// configuration` then), as the lifecycle changes only an active
    /// tenant's configuration.
    pub async fn plan_restore(
        &self,
        from: &TenantRef,
        into: &TenantRef,
        at: chrono::DateTime<Utc>,
        only: Option<BackupKind>,
    ) -> Result<RestorePlan, RestoreError> {
        let kinds: Vec<BackupKind> = match only {
            Some(kind) => vec![kind],
            None => BackupKind::ALL.to_vec(),
        };
        let mut plan = RestorePlan::default();
        for kind in kinds {
            match self.latest_for_restore(from, kind, at).await? {
                Some(manifest) => plan.manifests.push(manifest),
                None => plan.unchanged.push(Unchanged {
                    kind,
                    reason: format!("no backup of it at or before {at}"),
                }),
            }
        }
        if plan.manifests.is_empty() {
            return Err(RestoreError::NothingBefore {
                tenant: from.slug.clone(),
                at,
                only,
            });
        }
        let configuration = plan
            .manifests
            .iter()
            .position(|m| m.kind == BackupKind::Configuration);
        if let (None, Some(index), true) = (only, configuration, plan.manifests.len() > 1) {
            let active = match self.store.get_tenant(into.id).await {
                Ok(Some(t)) => t.status == knowton_common::TenantStatus::Active,
                _ => true,
            };
            if !active {
                plan.manifests.remove(index);
                plan.unchanged.push(Unchanged {
                    kind: BackupKind::Configuration,
                    reason: format!(
                        "{} is not active: restore its configuration (only: configuration) once it is provisioned again",
                        into.slug
                    ),
                });
            }
        }
        plan.parts = plan
            .manifests
            .iter()
            .map(|m| RestorePart {
                kind: m.kind,
                backup_id: m.id,
                taken_at: m.taken_at,
                size: m.content.size(),
                version: m.content.config_version(),
                safety_backup_id: None,
                restored_bytes: None,
            })
            .collect();
        Ok(plan)
    }

    /// Restores `plan` (from [`Self::plan_restore`]) into `into`: a safety
    /// backup of each kind first, then each part in order, `progress`
    /// telling what it does and the bytes restored so far.
    pub async fn apply_restore(
        &self,
        from: &TenantRef,
        into: &TenantRef,
        plan: &[Manifest],
        mut parts: Vec<RestorePart>,
        actor: &str,
        progress: &RestoreProgress,
    ) -> Result<Vec<RestorePart>, RestoreError> {
        progress.set_phase("taking safety backups of what the restore replaces");
        for i in 0..parts.len() {
            let part = &mut parts[i];
            if part.kind == BackupKind::Configuration {
                part.safety_backup_id = Some(self.configuration_safety(into).await?);
                continue;
            }
            let safety = self
                .run_during_restore(
                    into,
                    part.kind,
                    RunTrigger::Manual,
                    &format!("{actor} (before a restore)"),
                )
                .await?;
            match (safety.status, safety.backup_id) {
                (RunStatus::Succeeded, Some(id)) => part.safety_backup_id = Some(id),
                _ => {
                    return Err(RestoreError::Safety {
                        kind: part.kind,
                        error: safety.error.unwrap_or_default(),
                    });
                }
            }
            progress.set_parts(&parts);
        }
        progress.set_parts(&parts);
        let mut restored = Vec::new();
        for i in 0..parts.len() {
            let (kind, manifest) = (parts[i].kind, &plan[i]);
            progress.set_phase(match kind {
                BackupKind::Database => "restoring the database",
                BackupKind::Storage => "restoring the files",
                BackupKind::Configuration => "restoring the configuration",
            });
            let written = match kind {
                BackupKind::Database => {
                    self.backups
                        .restore_database_counting(manifest, into, &progress.bytes_done)
                        .await
                }
                BackupKind::Storage => {
                    self.backups
                        .restore_storage_counting(manifest, into, &progress.bytes_done)
                        .await
                }
                BackupKind::Configuration => {
                    self.restore_configuration(manifest, from, into, actor)
                        .await
                }
            };
            let part = &mut parts[i];
            match written {
                Ok(bytes) => {
                    part.restored_bytes = Some(bytes);
                    restored.push(part.kind.to_string());
                    tracing::info!(from = %from.slug, into = %into.slug, kind = %part.kind, backup = %part.backup_id, bytes, actor, "restored");
                }
                Err(source) => {
                    return Err(RestoreError::Part {
                        kind: part.kind,
                        restored,
                        safety: part.safety_backup_id,
                        source,
                    });
                }
            }
            progress.set_parts(&parts);
        }
        Ok(parts)
    }

    /// Verifies the backups of `tenant` (`only` the one `backup`, or every
    /// complete one): every chunk present, opening under this key, holding
    /// what its name says. With `deep`, the latest backup of each kind (or
    /// `only` the one) is also restored into a scratch place and compared.
    /// The verification is recorded: its problems are the tenant's
    /// `backup` alert until one passes.
    pub async fn verify(
        &self,
        tenant: &TenantRef,
        only: Option<Uuid>,
        deep: bool,
        trigger: RunTrigger,
        actor: &str,
    ) -> Result<Verified, BackupError> {
        let started_at = Utc::now();
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for &kind in BackupKind::ALL {
            // A manifest or listing that does not open (another key, an
            // object gone) is a problem of that kind's backups: named,
            // recorded and alerted on, not a failure to verify.
            let manifests = match self.backups.manifests(tenant.id, kind).await {
                Ok(manifests) => manifests,
                Err(err) if err.is_damage() => {
                    unreadable.push(format!(
                        "{kind} backups: {}",
                        knowton_common::error_chain(&err)
                    ));
                    continue;
                }
                Err(err) => return Err(err),
            };
            let latest = manifests.last().map(|m| m.id);
            for manifest in &manifests {
                if only.is_some_and(|id| id != manifest.id) {
                    continue;
                }
                // A configuration backup is its manifest: opening it is
                // all there is to check.
                let deeply = deep
                    && kind != BackupKind::Configuration
                    && (only.is_some() || Some(manifest.id) == latest);
                let problems = if deeply {
                    self.backups.verify_deep(manifest).await
                } else {
                    self.backups.verify(manifest).await
                };
                out.push(VerifiedBackup::new(manifest, deeply, problems));
            }
        }
        if only.is_some() && out.is_empty() && unreadable.is_empty() {
            // Nothing verified: nothing to record.
            return Ok(Verified {
                backups: out,
                unreadable,
            });
        }
        let problems_total = unreadable.len() + out.iter().map(|v| v.problems_total).sum::<usize>();
        let problems: Vec<String> = unreadable
            .iter()
            .cloned()
            .chain(out.iter().flat_map(|v| {
                v.problems.iter().map(|p| {
                    format!(
                        "{} backup {} taken {}: {p}",
                        v.backup.kind,
                        v.backup.id,
                        v.backup.taken_at.format("%Y-%m-%d %H:%M:%SZ")
                    )
                })
            }))
            .take(Verification::MAX_PROBLEMS)
            .collect();
        if let Some(first) = problems.first() {
            tracing::error!(tenant = %tenant.slug, problems = problems_total, first = %first, "backup verification found problems");
        }
        let verification = Verification {
            id: Uuid::now_v7(),
            tenant_id: tenant.id,
            deep,
            trigger,
            actor: actor.to_owned(),
            started_at,
            finished_at: Utc::now(),
            backups: out.len() as i64,
            problems_total: i64::try_from(problems_total).unwrap_or(i64::MAX),
            problems,
        };
        if let Err(err) = self.store.record_verification(&verification).await {
            tracing::error!(tenant = %tenant.slug, error = %err, "failed to record a backup verification");
        }
        self.refresh().await;
        Ok(Verified {
            backups: out,
            unreadable,
        })
    }
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub backups: Vec<VerifiedBackup>,
    /// Backups that could not even be listed (a manifest or its listing
    /// missing, damaged or sealed under another key), by kind.
    pub unreadable: Vec<String>,
}

impl Verified {
    pub fn ok(&self) -> bool {
        self.unreadable.is_empty() && self.backups.iter().all(|b| b.ok)
    }
}

/// One verified backup.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedBackup {
    pub backup: BackupInfo,
    /// Restored into a scratch place and compared, not only read.
    pub deep: bool,
    pub ok: bool,
    /// The first objects missing, altered, or unreadable with this key,
    /// and (deep) tables or files that differ, each named (at most
    /// [`VerifiedBackup::MAX_SHOWN`]).
    pub problems: Vec<String>,
    /// Every problem found, shown or not.
    pub problems_total: usize,
}

impl VerifiedBackup {
    /// Problems a reply shows per backup: a backup whose every chunk is
    /// gone names the first ones and counts the rest.
    pub const MAX_SHOWN: usize = 100;

    fn new(manifest: &Manifest, deep: bool, mut problems: Vec<String>) -> Self {
        let problems_total = problems.len();
        problems.truncate(Self::MAX_SHOWN);
        VerifiedBackup {
            backup: BackupInfo::from(manifest),
            deep,
            ok: problems_total == 0,
            problems,
            problems_total,
        }
    }
}

/// What a restore under way is doing, read by its job's recorder.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    phase: std::sync::Mutex<String>,
    parts: std::sync::Mutex<Vec<RestorePart>>,
    /// Bytes restored so far.
    pub bytes_done: std::sync::atomic::AtomicU64,
}

impl RestoreProgress {
    pub fn set_phase(&self, phase: &str) {
        *self.phase.lock().expect("restore phase lock") = phase.to_owned();
    }

    pub fn phase(&self) -> String {
        self.phase.lock().expect("restore phase lock").clone()
    }

    fn set_parts(&self, parts: &[RestorePart]) {
        *self.parts.lock().expect("restore parts lock") = parts.to_vec();
    }

    pub fn parts(&self) -> Vec<RestorePart> {
        self.parts.lock().expect("restore parts lock").clone()
    }
}
