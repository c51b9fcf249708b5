//! What the store keeps of backups: each run (its kind, trigger, progress
//! and outcome), each verification (its problems), and the queue of
//! configuration versions not yet written to the backup repository (the
//! history rows themselves). The backups
//! themselves are in the backup repository.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use knowton_common::thresholds::Thresholds;

use super::{ConfigVersion, Result};

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Database,
    Storage,
    /// A configuration version, written when it is committed.
    Configuration,
}

/// How a backup run ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

/// What started a backup run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunTrigger {
    Schedule,
    Manual,
}

macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name),+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(BackupKind { Database => "database", Storage => "storage", Configuration => "configuration" });
names!(RunStatus { Running => "running", Succeeded => "succeeded", Failed => "failed" });
names!(RestoreStatus { Running => "running", Succeeded => "succeeded", Failed => "failed" });
names!(RunTrigger { Schedule => "schedule", Manual => "manual" });

impl std::str::FromStr for BackupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BackupKind::parse(s).ok_or_else(|| {
            format!("unknown backup kind {s:?}: expected database, storage or configuration")
        })
    }
}

/// One backup run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRun {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: BackupKind,
    pub trigger: RunTrigger,
    /// Who asked for it (`admin`, `tenant-key:<prefix>`, `schedule`).
    pub actor: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub bytes_read: i64,
    pub bytes_written: i64,
    pub new_chunks: i64,
    /// The backup it took, once it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An active tenant's latest successful backup of a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastBackup {
    pub tenant_id: Uuid,
    pub slug: String,
    pub kind: BackupKind,
    pub started_at: DateTime<Utc>,
}

/// An active tenant's failed runs of a kind since its last successful one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureStreak {
    pub tenant_id: Uuid,
    pub slug: String,
    pub kind: BackupKind,
    pub failures: i64,
    pub last_failed_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// A verification of a tenant's backups, as it ended.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Restored into a scratch database and directory and compared, not
    /// only every object read and checked.
    pub deep: bool,
    pub trigger: RunTrigger,
    pub actor: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Backups verified.
    pub backups: i64,
    /// The first problems found (at most [`Verification::MAX_PROBLEMS`]),
    /// each naming the backup and the object or table.
    pub problems: Vec<String>,
    /// Every problem found, kept or not.
    pub problems_total: i64,
}

impl Verification {
    /// Problems a verification keeps.
    pub const MAX_PROBLEMS: usize = 20;

    pub fn passed(&self) -> bool {
        self.problems_total == 0
    }
}

/// Where a restore job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestoreStatus {
    Running,
    Succeeded,
    Failed,
}

/// A restore job running into a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveRestore {
    pub id: Uuid,
    /// Whether it holds the tenant at zero replicas.
    pub holds_tenant: bool,
}

/// A restore as a job: started, then polled until it ends.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreJob {
    pub id: Uuid,
    /// The tenant restored into.
    pub tenant_id: Uuid,
    /// The tenant whose backups are restored (itself, or another).
    pub source: String,
    /// The moment restored to.
    pub at: DateTime<Utc>,
    pub only: Option<BackupKind>,
    pub actor: String,
    pub status: RestoreStatus,
    /// What it is doing, for people ("taking safety backups", "restoring
    /// the database", …).
    pub phase: String,
    /// Bytes to restore, and restored so far.
    pub bytes_total: i64,
    pub bytes_done: i64,
    /// The backups restored, with the safety backups taken first.
    #[schema(value_type = Vec<Object>)]
    pub parts: serde_json::Value,
    /// A stable code when it failed (`restore_failed`,
    /// `restore_safety_failed`, `interrupted`, …).
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where a run is: its bytes so far, or at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunProgress {
    pub bytes_read: i64,
    pub bytes_written: i64,
    pub new_chunks: i64,
}

/// What a configuration version committed beside its snapshot, kept for
/// its backup: restoring it needs the secrets, which the snapshot (shown by
/// the history) leaves out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSettings {
    /// The tenant's own thresholds; `None`: the defaults.
    pub thresholds: Option<Thresholds>,
    /// Its notification channels; `None`: it had none recorded.
    pub channels: Option<SealedChannels>,
}

/// A tenant's notification channels as stored: the webhook and Slack URLs
/// still sealed under the coordinator's secret key (bound to the tenant),
/// never opened for a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedChannels {
    /// `None`: the default, the tenant admin's address.
    pub emails: Option<Vec<String>>,
    pub sealed_webhook: Option<String>,
    pub sealed_slack: Option<String>,
    /// The redacted view the API shows.
    pub display: serde_json::Value,
}

/// A committed configuration version, with what its backup needs.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedConfig {
    pub tenant_id: Uuid,
    pub slug: String,
    pub version: ConfigVersion,
    /// `None` for versions recorded before configuration backups.
    pub settings: Option<ConfigSettings>,
}

#[async_trait]
pub trait BackupStore: Send + Sync {
    /// Records `run` as running. A running run of the same tenant and kind
    /// last updated before `stale_before` is marked failed (its
    /// coordinator stopped) first; one updated since is a
    /// `Conflict(BackupRunning)`.
    async fn start_backup_run(&self, run: &BackupRun, stale_before: DateTime<Utc>) -> Result<()>;
    /// Records a running run's progress (and that it is alive).
    async fn touch_backup_run(&self, id: Uuid, progress: RunProgress) -> Result<()>;
    /// Records how a run ended: `backup` when it succeeded, `error` when
    /// it failed.
    async fn finish_backup_run(
        &self,
        id: Uuid,
        progress: RunProgress,
        backup: Option<Uuid>,
        error: Option<&str>,
    ) -> Result<()>;
    /// `tenant`'s runs, newest first, at most `limit`.
    async fn backup_runs(&self, tenant: Uuid, limit: i64) -> Result<Vec<BackupRun>>;
    /// When each active tenant's last successful run of each kind started
    /// (the moment its backup shows).
    async fn last_backup_successes(&self) -> Result<Vec<LastBackup>>;
    /// Each active tenant's failed runs of each kind since its last
    /// successful one (none when the latest run succeeded).
    async fn backup_failure_streaks(&self) -> Result<Vec<FailureStreak>>;
    /// Records a verification that ended; a tenant's verifications older
    /// than 90 days are dropped.
    async fn record_verification(&self, verification: &Verification) -> Result<()>;
    /// `tenant`'s verifications, newest first, at most `limit`.
    async fn verifications(&self, tenant: Uuid, limit: i64) -> Result<Vec<Verification>>;
    /// Records `job` as running. A running job of the same tenant last
    /// updated before `stale_before` is marked failed (interrupted)
    /// first; one updated since is a `Conflict(RestoreRunning)`.
    async fn start_restore_job(&self, job: &RestoreJob, stale_before: DateTime<Utc>) -> Result<()>;
    /// Records a running job's phase and progress (and that it is alive).
    async fn update_restore_job(
        &self,
        id: Uuid,
        phase: &str,
        bytes_total: i64,
        bytes_done: i64,
        parts: &serde_json::Value,
    ) -> Result<()>;
    /// Records how a job ended (`error`: its code and message).
    async fn finish_restore_job(
        &self,
        id: Uuid,
        parts: &serde_json::Value,
        error: Option<(&str, &str)>,
    ) -> Result<()>;
    /// Sets whether the running job `id` holds its tenant at zero replicas.
    async fn set_restore_hold(&self, id: Uuid, hold: bool) -> Result<()>;
    /// The running restore job into `tenant`, if one was updated at or
    /// after `alive_since` (a silent one is no longer running, nor holds
    /// its tenant).
    async fn live_restore(
        &self,
        tenant: Uuid,
        alive_since: DateTime<Utc>,
    ) -> Result<Option<LiveRestore>>;
    /// A job of `tenant`.
    async fn restore_job(&self, tenant: Uuid, id: Uuid) -> Result<Option<RestoreJob>>;
    /// Each active tenant's latest verification, with the tenant's slug.
    async fn latest_verifications(&self) -> Result<Vec<(String, Verification)>>;

    /// Each active tenant with configuration versions not backed up yet,
    /// with its slug and how many.
    async fn config_backlog(&self) -> Result<Vec<(Uuid, String, i64)>>;
    /// Configuration versions whose backup is not written yet, oldest
    /// first, at most `limit`; only `tenant`'s when given.
    async fn pending_config_versions(
        &self,
        tenant: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<CommittedConfig>>;
    /// Records that the backup of `tenant`'s `version` is written (again:
    /// nothing changes).
    async fn mark_config_backed_up(&self, tenant: Uuid, version: i64) -> Result<()>;
    /// `tenant`'s latest configuration version.
    async fn latest_config_version(&self, tenant: Uuid) -> Result<Option<CommittedConfig>>;
    /// Woken after this store committed a configuration version (other
    /// replicas' are found by polling).
    fn config_committed(&self) -> std::sync::Arc<tokio::sync::Notify>;
}
