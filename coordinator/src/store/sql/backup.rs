//! The SQL behind [`BackupStore`], for both backends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{PgStore, SqliteStore, corrupt, parse_uuid};
use crate::store::{
    BackupKind, BackupRun, BackupStore, CommittedConfig, ConfigVersion, FailureStreak, LastBackup,
    LiveRestore, RestoreJob, RestoreStatus, Result, RunProgress, RunStatus, RunTrigger,
    Verification, now,
};

const FIELDS: &str = "id, tenant_id, kind, trigger_kind, actor, status, started_at, updated_at, \
    finished_at, bytes_read, bytes_written, new_chunks, backup_id, error";

const VERIFICATION_FIELDS: &str = "v.id, v.tenant_id, v.deep, v.trigger_kind, v.actor, \
    v.started_at, v.finished_at, v.backups, v.problems, v.problems_total";

const RESTORE_FIELDS: &str = "id, tenant_id, source_slug, restore_at, only_kind, actor, status, \
    phase, bytes_total, bytes_done, parts, error_code, error, started_at, updated_at, finished_at";

/// How long verifications are kept.
const KEEP_VERIFICATIONS: chrono::TimeDelta = chrono::TimeDelta::days(90);
/// A configuration version with its tenant's slug and settings, as
/// `committed_config_from_row` reads it.
const CONFIG_FIELDS: &str = "h.tenant_id, t.slug, h.version, h.changed_at, h.actor, h.change, \
    h.snapshot, h.settings";
const CONFIG_FROM: &str = "FROM tenant_config_history h JOIN tenants t ON t.id = h.tenant_id";

/// The longest error message kept with a run.
const MAX_ERROR: usize = 2000;

macro_rules! backup_sql {
    ($store:ty) => {
        impl $store {
            fn backup_run_from_row(
                row: &<super::DbOf<$store> as sqlx::Database>::Row,
            ) -> Result<BackupRun> {
                let name = |column: &str| -> Result<String> { Ok(row.try_get(column)?) };
                let kind = name("kind")?;
                let trigger = name("trigger_kind")?;
                let status = name("status")?;
                Ok(BackupRun {
                    id: parse_uuid(&name("id")?)?,
                    tenant_id: parse_uuid(&name("tenant_id")?)?,
                    kind: BackupKind::parse(&kind)
                        .ok_or_else(|| corrupt(format!("backup kind {kind:?}")))?,
                    trigger: RunTrigger::parse(&trigger)
                        .ok_or_else(|| corrupt(format!("backup trigger {trigger:?}")))?,
                    actor: name("actor")?,
                    status: RunStatus::parse(&status)
                        .ok_or_else(|| corrupt(format!("backup status {status:?}")))?,
                    started_at: row.try_get("started_at")?,
                    updated_at: row.try_get("updated_at")?,
                    finished_at: row.try_get("finished_at")?,
                    bytes_read: row.try_get("bytes_read")?,
                    bytes_written: row.try_get("bytes_written")?,
                    new_chunks: row.try_get("new_chunks")?,
                    backup_id: row
                        .try_get::<Option<String>, _>("backup_id")?
                        .map(|id| parse_uuid(&id))
                        .transpose()?,
                    error: row.try_get("error")?,
                })
            }

            fn restore_job_from_row(
                row: &<super::DbOf<$store> as sqlx::Database>::Row,
            ) -> Result<RestoreJob> {
                let status: String = row.try_get("status")?;
                let only: Option<String> = row.try_get("only_kind")?;
                let parts: String = row.try_get("parts")?;
                Ok(RestoreJob {
                    id: parse_uuid(&row.try_get::<String, _>("id")?)?,
                    tenant_id: parse_uuid(&row.try_get::<String, _>("tenant_id")?)?,
                    source: row.try_get("source_slug")?,
                    at: row.try_get("restore_at")?,
                    only: only
                        .map(|k| {
                            BackupKind::parse(&k)
                                .ok_or_else(|| corrupt(format!("backup kind {k:?}")))
                        })
                        .transpose()?,
                    actor: row.try_get("actor")?,
                    status: RestoreStatus::parse(&status)
                        .ok_or_else(|| corrupt(format!("restore status {status:?}")))?,
                    phase: row.try_get("phase")?,
                    bytes_total: row.try_get("bytes_total")?,
                    bytes_done: row.try_get("bytes_done")?,
                    parts: serde_json::from_str(&parts)
                        .map_err(|e| corrupt(format!("restore parts: {e}")))?,
                    error_code: row.try_get("error_code")?,
                    error: row.try_get("error")?,
                    started_at: row.try_get("started_at")?,
                    updated_at: row.try_get("updated_at")?,
                    finished_at: row.try_get("finished_at")?,
                })
            }

            fn verification_from_row(
                row: &<super::DbOf<$store> as sqlx::Database>::Row,
            ) -> Result<Verification> {
                let trigger: String = row.try_get("trigger_kind")?;
                let problems: String = row.try_get("problems")?;
                Ok(Verification {
                    id: parse_uuid(&row.try_get::<String, _>("id")?)?,
                    tenant_id: parse_uuid(&row.try_get::<String, _>("tenant_id")?)?,
                    deep: row.try_get("deep")?,
                    trigger: RunTrigger::parse(&trigger)
                        .ok_or_else(|| corrupt(format!("verification trigger {trigger:?}")))?,
                    actor: row.try_get("actor")?,
                    started_at: row.try_get("started_at")?,
                    finished_at: row.try_get("finished_at")?,
                    backups: row.try_get("backups")?,
                    problems: serde_json::from_str(&problems)
                        .map_err(|e| corrupt(format!("verification problems: {e}")))?,
                    problems_total: row.try_get("problems_total")?,
                })
            }

            fn committed_config_from_row(
                row: &<super::DbOf<$store> as sqlx::Database>::Row,
            ) -> Result<CommittedConfig> {
                let tenant_id = parse_uuid(&row.try_get::<String, _>("tenant_id")?)?;
                let version: i64 = row.try_get("version")?;
                let snapshot: String = row.try_get("snapshot")?;
                let settings = row
                    .try_get::<Option<String>, _>("settings")?
                    .map(|s| {
                        serde_json::from_str(&s).map_err(|e| {
                            corrupt(format!("settings of version {version} of {tenant_id}: {e}"))
                        })
                    })
                    .transpose()?;
                Ok(CommittedConfig {
                    tenant_id,
                    slug: row.try_get("slug")?,
                    version: ConfigVersion {
                        version,
                        changed_at: row.try_get("changed_at")?,
                        actor: row.try_get("actor")?,
                        change: row.try_get("change")?,
                        snapshot: serde_json::from_str(&snapshot).map_err(corrupt)?,
                    },
                    settings,
                })
            }
        }

        #[async_trait]
        impl BackupStore for $store {
            async fn start_backup_run(
                &self,
                run: &BackupRun,
                stale_before: DateTime<Utc>,
            ) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "UPDATE backup_runs SET status = 'failed', finished_at = $4, \
                     error = 'interrupted: its coordinator stopped' \
                     WHERE tenant_id = $1 AND kind = $2 AND status = 'running' AND updated_at < $3",
                )
                .bind(run.tenant_id.to_string())
                .bind(run.kind.as_str())
                .bind(stale_before)
                .bind(now())
                .execute(&mut *tx)
                .await?;
                let sql = sqlx::AssertSqlSafe(format!(
                    "INSERT INTO backup_runs ({FIELDS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, 0, 0, 0, NULL, NULL)"
                ));
                sqlx::query(sql)
                    .bind(run.id.to_string())
                    .bind(run.tenant_id.to_string())
                    .bind(run.kind.as_str())
                    .bind(run.trigger.as_str())
                    .bind(&run.actor)
                    .bind(RunStatus::Running.as_str())
                    .bind(run.started_at)
                    .bind(run.updated_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn touch_backup_run(&self, id: Uuid, progress: RunProgress) -> Result<()> {
                sqlx::query(
                    "UPDATE backup_runs SET updated_at = $2, bytes_read = $3, \
                     bytes_written = $4, new_chunks = $5 WHERE id = $1 AND status = 'running'",
                )
                .bind(id.to_string())
                .bind(now())
                .bind(progress.bytes_read)
                .bind(progress.bytes_written)
                .bind(progress.new_chunks)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn finish_backup_run(
                &self,
                id: Uuid,
                progress: RunProgress,
                backup: Option<Uuid>,
                error: Option<&str>,
            ) -> Result<()> {
                let status = match error {
                    None => RunStatus::Succeeded,
                    Some(_) => RunStatus::Failed,
                };
                let at = now();
                sqlx::query(
                    "UPDATE backup_runs SET status = $2, updated_at = $3, finished_at = $3, \
                     bytes_read = $4, bytes_written = $5, new_chunks = $6, backup_id = $7, \
                     error = $8 WHERE id = $1",
                )
                .bind(id.to_string())
                .bind(status.as_str())
                .bind(at)
                .bind(progress.bytes_read)
                .bind(progress.bytes_written)
                .bind(progress.new_chunks)
                .bind(backup.map(|b| b.to_string()))
                .bind(error.map(|e| truncate(e, MAX_ERROR)))
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn backup_runs(&self, tenant: Uuid, limit: i64) -> Result<Vec<BackupRun>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {FIELDS} FROM backup_runs WHERE tenant_id = $1 \
                     ORDER BY started_at DESC, id DESC LIMIT $2"
                ));
                let rows = sqlx::query(sql)
                    .bind(tenant.to_string())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::backup_run_from_row).collect()
            }

            async fn last_backup_successes(&self) -> Result<Vec<LastBackup>> {
                let rows = sqlx::query(
                    "SELECT r.tenant_id, t.slug, r.kind, max(r.started_at) AS started_at \
                     FROM backup_runs r JOIN tenants t ON t.id = r.tenant_id \
                     WHERE r.status = 'succeeded' AND t.status = 'active' \
                     GROUP BY r.tenant_id, t.slug, r.kind ORDER BY r.tenant_id, r.kind",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let kind: String = row.try_get("kind")?;
                        Ok(LastBackup {
                            tenant_id: parse_uuid(&row.try_get::<String, _>("tenant_id")?)?,
                            slug: row.try_get("slug")?,
                            kind: BackupKind::parse(&kind)
                                .ok_or_else(|| corrupt(format!("backup kind {kind:?}")))?,
                            started_at: row.try_get("started_at")?,
                        })
                    })
                    .collect()
            }

            async fn backup_failure_streaks(&self) -> Result<Vec<FailureStreak>> {
                let rows = sqlx::query(
                    "SELECT r.tenant_id, t.slug, r.kind, count(*) AS failures, \
                     max(r.started_at) AS last_failed_at \
                     FROM backup_runs r JOIN tenants t ON t.id = r.tenant_id \
                     WHERE r.status = 'failed' AND t.status = 'active' AND NOT EXISTS \
                     (SELECT 1 FROM backup_runs s WHERE s.tenant_id = r.tenant_id \
                      AND s.kind = r.kind AND s.status = 'succeeded' AND s.started_at > r.started_at) \
                     GROUP BY r.tenant_id, t.slug, r.kind ORDER BY r.tenant_id, r.kind",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut streaks = Vec::with_capacity(rows.len());
                for row in &rows {
                    let kind: String = row.try_get("kind")?;
                    let tenant_id: String = row.try_get("tenant_id")?;
                    let last_failed_at: DateTime<Utc> = row.try_get("last_failed_at")?;
                    let last_error: Option<String> = sqlx::query_scalar(
                        "SELECT error FROM backup_runs WHERE tenant_id = $1 AND kind = $2 \
                         AND status = 'failed' ORDER BY started_at DESC LIMIT 1",
                    )
                    .bind(&tenant_id)
                    .bind(&kind)
                    .fetch_optional(&self.pool)
                    .await?
                    .flatten();
                    streaks.push(FailureStreak {
                        tenant_id: parse_uuid(&tenant_id)?,
                        slug: row.try_get("slug")?,
                        kind: BackupKind::parse(&kind)
                            .ok_or_else(|| corrupt(format!("backup kind {kind:?}")))?,
                        failures: row.try_get("failures")?,
                        last_failed_at,
                        last_error,
                    });
                }
                Ok(streaks)
            }

            async fn start_restore_job(
                &self,
                job: &RestoreJob,
                stale_before: DateTime<Utc>,
            ) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "UPDATE restore_jobs SET status = 'failed', finished_at = $3, \
                     error_code = 'interrupted', \
                     error = 'interrupted: its coordinator stopped; the safety backups named in its parts hold the state before' \
                     WHERE tenant_id = $1 AND status = 'running' AND updated_at < $2",
                )
                .bind(job.tenant_id.to_string())
                .bind(stale_before)
                .bind(now())
                .execute(&mut *tx)
                .await?;
                let sql = sqlx::AssertSqlSafe(format!(
                    "INSERT INTO restore_jobs ({RESTORE_FIELDS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, $12, $12, NULL)"
                ));
                sqlx::query(sql)
                    .bind(job.id.to_string())
                    .bind(job.tenant_id.to_string())
                    .bind(&job.source)
                    .bind(job.at)
                    .bind(job.only.map(|k| k.as_str()))
                    .bind(&job.actor)
                    .bind(RestoreStatus::Running.as_str())
                    .bind(&job.phase)
                    .bind(job.bytes_total)
                    .bind(job.bytes_done)
                    .bind(job.parts.to_string())
                    .bind(job.started_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn update_restore_job(
                &self,
                id: Uuid,
                phase: &str,
                bytes_total: i64,
                bytes_done: i64,
                parts: &serde_json::Value,
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE restore_jobs SET phase = $2, bytes_total = $3, bytes_done = $4, \
                     parts = $5, updated_at = $6 WHERE id = $1 AND status = 'running'",
                )
                .bind(id.to_string())
                .bind(phase)
                .bind(bytes_total)
                .bind(bytes_done)
                .bind(parts.to_string())
                .bind(now())
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn finish_restore_job(
                &self,
                id: Uuid,
                parts: &serde_json::Value,
                error: Option<(&str, &str)>,
            ) -> Result<()> {
                let (status, phase) = match error {
                    None => (RestoreStatus::Succeeded, "done"),
                    Some(_) => (RestoreStatus::Failed, "failed"),
                };
                let at = now();
                sqlx::query(
                    "UPDATE restore_jobs SET status = $2, phase = $3, parts = $4, \
                     error_code = $5, error = $6, updated_at = $7, finished_at = $7, \
                     bytes_done = CASE WHEN $2 = 'succeeded' THEN bytes_total ELSE bytes_done END \
                     WHERE id = $1",
                )
                .bind(id.to_string())
                .bind(status.as_str())
                .bind(phase)
                .bind(parts.to_string())
                .bind(error.map(|(code, _)| code))
                .bind(error.map(|(_, message)| truncate(message, MAX_ERROR)))
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn set_restore_hold(&self, id: Uuid, hold: bool) -> Result<()> {
                sqlx::query(
                    "UPDATE restore_jobs SET holds_tenant = $2, updated_at = $3 \
                     WHERE id = $1 AND status = 'running'",
                )
                .bind(id.to_string())
                .bind(hold)
                .bind(now())
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn live_restore(
                &self,
                tenant: Uuid,
                alive_since: DateTime<Utc>,
            ) -> Result<Option<LiveRestore>> {
                let row: Option<(String, bool)> = sqlx::query_as(
                    "SELECT id, holds_tenant FROM restore_jobs WHERE tenant_id = $1 \
                     AND status = 'running' AND updated_at >= $2",
                )
                .bind(tenant.to_string())
                .bind(alive_since)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|(id, holds_tenant)| {
                    Ok(LiveRestore {
                        id: parse_uuid(&id)?,
                        holds_tenant,
                    })
                })
                .transpose()
            }

            async fn restore_job(&self, tenant: Uuid, id: Uuid) -> Result<Option<RestoreJob>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {RESTORE_FIELDS} FROM restore_jobs WHERE tenant_id = $1 AND id = $2"
                ));
                let row = sqlx::query(sql)
                    .bind(tenant.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::restore_job_from_row).transpose()
            }

            async fn record_verification(&self, v: &Verification) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO backup_verifications (id, tenant_id, deep, trigger_kind, actor, \
                     started_at, finished_at, backups, problems, problems_total) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(v.id.to_string())
                .bind(v.tenant_id.to_string())
                .bind(v.deep)
                .bind(v.trigger.as_str())
                .bind(&v.actor)
                .bind(v.started_at)
                .bind(v.finished_at)
                .bind(v.backups)
                .bind(
                    serde_json::to_string(
                        &v.problems
                            .iter()
                            .take(Verification::MAX_PROBLEMS)
                            .map(|p| truncate(p, MAX_ERROR))
                            .collect::<Vec<_>>(),
                    )
                    .expect("strings serialise"),
                )
                .bind(v.problems_total)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM backup_verifications WHERE tenant_id = $1 AND finished_at < $2",
                )
                .bind(v.tenant_id.to_string())
                .bind(v.finished_at - KEEP_VERIFICATIONS)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn verifications(&self, tenant: Uuid, limit: i64) -> Result<Vec<Verification>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {VERIFICATION_FIELDS} FROM backup_verifications v \
                     WHERE v.tenant_id = $1 ORDER BY v.finished_at DESC, v.id DESC LIMIT $2"
                ));
                let rows = sqlx::query(sql)
                    .bind(tenant.to_string())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::verification_from_row).collect()
            }

            async fn latest_verifications(&self) -> Result<Vec<(String, Verification)>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {VERIFICATION_FIELDS}, t.slug FROM backup_verifications v \
                     JOIN tenants t ON t.id = v.tenant_id WHERE t.status = 'active' \
                     AND v.id = (SELECT w.id FROM backup_verifications w \
                       WHERE w.tenant_id = v.tenant_id ORDER BY w.finished_at DESC, w.id DESC LIMIT 1) \
                     ORDER BY v.tenant_id"
                ));
                let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| Ok((row.try_get("slug")?, Self::verification_from_row(row)?)))
                    .collect()
            }

            async fn config_backlog(&self) -> Result<Vec<(Uuid, String, i64)>> {
                let rows = sqlx::query(
                    "SELECT h.tenant_id, t.slug, count(*) AS pending \
                     FROM tenant_config_history h JOIN tenants t ON t.id = h.tenant_id \
                     WHERE h.backed_up_at IS NULL AND t.status = 'active' \
                     GROUP BY h.tenant_id, t.slug",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            parse_uuid(&row.try_get::<String, _>("tenant_id")?)?,
                            row.try_get("slug")?,
                            row.try_get("pending")?,
                        ))
                    })
                    .collect()
            }

            async fn pending_config_versions(
                &self,
                tenant: Option<Uuid>,
                limit: i64,
            ) -> Result<Vec<CommittedConfig>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {CONFIG_FIELDS} {CONFIG_FROM} \
                     WHERE h.backed_up_at IS NULL AND ($1 = '' OR h.tenant_id = $1) \
                     ORDER BY h.changed_at, h.tenant_id, h.version LIMIT $2"
                ));
                let rows = sqlx::query(sql)
                    .bind(tenant.map(|t| t.to_string()).unwrap_or_default())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::committed_config_from_row).collect()
            }

            async fn mark_config_backed_up(&self, tenant: Uuid, version: i64) -> Result<()> {
                sqlx::query(
                    "UPDATE tenant_config_history SET backed_up_at = $3 \
                     WHERE tenant_id = $1 AND version = $2 AND backed_up_at IS NULL",
                )
                .bind(tenant.to_string())
                .bind(version)
                .bind(now())
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn latest_config_version(
                &self,
                tenant: Uuid,
            ) -> Result<Option<CommittedConfig>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {CONFIG_FIELDS} {CONFIG_FROM} WHERE h.tenant_id = $1 \
                     ORDER BY h.version DESC LIMIT 1"
                ));
                let row = sqlx::query(sql)
                    .bind(tenant.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::committed_config_from_row).transpose()
            }

            fn config_committed(&self) -> std::sync::Arc<tokio::sync::Notify> {
                self.config_committed.clone()
            }
        }
    };
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

backup_sql!(SqliteStore);
backup_sql!(PgStore);
