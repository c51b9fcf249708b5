//! The SQL behind [`DeployStore`], for both backends.

use async_trait::async_trait;
use knowton_common::health::DeploymentTrigger;
use sqlx::Row;
use uuid::Uuid;

use super::{PgStore, SqliteStore, corrupt, decode, parse_uuid};
use crate::store::{
    DeployStore, DeploymentEvent, DeploymentRow, DeploymentSettings, Fence, Phase, Result,
    StoreError,
};

const FIELDS: &str = "tenant_id, phase, attempt, trigger_kind, reason, objects_hash, allowlist, \
    min_replicas, scaled_at, requested_at, started_at, updated_at, finished_at";

macro_rules! deploy_sql {
    ($store:ty) => {
        impl $store {
            fn deployment_from_row(
                row: &<super::DbOf<$store> as sqlx::Database>::Row,
            ) -> Result<DeploymentRow> {
                let phase: String = row.try_get("phase")?;
                let allowlist: String = row.try_get("allowlist")?;
                Ok(DeploymentRow {
                    tenant_id: parse_uuid(&row.try_get::<String, _>("tenant_id")?)?,
                    phase: Phase::parse(&phase)
                        .ok_or_else(|| corrupt(format!("deployment phase {phase:?}")))?,
                    attempt: row.try_get("attempt")?,
                    trigger: decode(
                        "tenant_deployments",
                        "trigger_kind",
                        row.try_get("trigger_kind")?,
                    )?,
                    reason: row.try_get("reason")?,
                    objects_hash: row.try_get("objects_hash")?,
                    allowlist: serde_json::from_str(&allowlist)
                        .map_err(|e| corrupt(format!("deployment allowlist: {e}")))?,
                    min_replicas: row
                        .try_get::<Option<i64>, _>("min_replicas")?
                        .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                    scaled_at: row.try_get("scaled_at")?,
                    requested_at: row.try_get("requested_at")?,
                    started_at: row.try_get("started_at")?,
                    updated_at: row.try_get("updated_at")?,
                    finished_at: row.try_get("finished_at")?,
                })
            }
        }

        #[async_trait]
        impl DeployStore for $store {
            async fn deployment(&self, tenant: Uuid) -> Result<Option<DeploymentRow>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {FIELDS} FROM tenant_deployments WHERE tenant_id = $1"
                ));
                let row = sqlx::query(sql)
                    .bind(tenant.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::deployment_from_row).transpose()
            }

            async fn deployments(&self) -> Result<Vec<DeploymentRow>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {FIELDS} FROM tenant_deployments ORDER BY tenant_id"
                ));
                let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
                rows.iter().map(Self::deployment_from_row).collect()
            }

            async fn deployments_in(&self, phase: Phase) -> Result<Vec<DeploymentRow>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {FIELDS} FROM tenant_deployments WHERE phase = $1"
                ));
                let rows = sqlx::query(sql)
                    .bind(phase.as_str())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::deployment_from_row).collect()
            }

            async fn save_deployment(
                &self,
                row: &DeploymentRow,
                event: Option<&DeploymentEvent>,
                fence: Fence,
            ) -> Result<()> {
                let tenant = row.tenant_id.to_string();
                let allowlist = serde_json::to_string(&row.allowlist)
                    .map_err(|e| corrupt(format!("allowlist: {e}")))?;
                let mut tx = self.begin_write().await?;
                Self::hold_fence(&mut tx, fence).await?;
                let exists = sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
                    .bind(&tenant)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                let sql = sqlx::AssertSqlSafe(format!(
                    "INSERT INTO tenant_deployments ({FIELDS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (tenant_id) DO UPDATE SET phase = excluded.phase, \
                     attempt = excluded.attempt, trigger_kind = excluded.trigger_kind, \
                     reason = excluded.reason, objects_hash = excluded.objects_hash, \
                     started_at = excluded.started_at, updated_at = excluded.updated_at, \
                     finished_at = excluded.finished_at"
                ));
                sqlx::query(sql)
                    .bind(&tenant)
                    .bind(row.phase.as_str())
                    .bind(row.attempt)
                    .bind(row.trigger.as_str())
                    .bind(&row.reason)
                    .bind(&row.objects_hash)
                    .bind(allowlist)
                    .bind(row.min_replicas.map(i64::from))
                    .bind(row.scaled_at)
                    .bind(row.requested_at)
                    .bind(row.started_at)
                    .bind(row.updated_at)
                    .bind(row.finished_at)
                    .execute(&mut *tx)
                    .await?;
                if let Some(event) = event {
                    insert_event!(&mut *tx, &tenant, event);
                }
                tx.commit().await?;
                Ok(())
            }

            async fn request_deployment(
                &self,
                tenant: Uuid,
                trigger: DeploymentTrigger,
            ) -> Result<DeploymentRow> {
                let id = tenant.to_string();
                let now = crate::store::now();
                // A request under way keeps its phase, and so does the
                // outcome of an attempt that started after the request was
                // made (it deployed the change; the request's statement
                // merely ran late). The latest request time is always
                // recorded (the deployer never writes it).
                macro_rules! open {
                    () => {
                        "tenant_deployments.phase IN ('ready', 'failed', 'skipped') \
                         AND (tenant_deployments.started_at IS NULL \
                         OR tenant_deployments.started_at < excluded.requested_at)"
                    };
                }
                // A provisioning request asks for what the tenant was created
                // with: any attempt since its creation serves it (the
                // deployer's start-up reconcile may start one before the
                // request's statement runs), so it counts as made then.
                sqlx::query(concat!(
                    "INSERT INTO tenant_deployments (tenant_id, phase, attempt, trigger_kind, \
                     requested_at, updated_at) SELECT id, 'pending', 0, $2, \
                     CASE WHEN $2 = 'provisioned' THEN created_at ELSE $3 END, $3 FROM tenants \
                     WHERE id = $1 ON CONFLICT (tenant_id) DO UPDATE SET \
                     requested_at = excluded.requested_at, phase = CASE WHEN ",
                    open!(),
                    " THEN 'pending' ELSE tenant_deployments.phase END, trigger_kind = CASE WHEN ",
                    open!(),
                    " THEN excluded.trigger_kind ELSE tenant_deployments.trigger_kind END, \
                     reason = CASE WHEN ",
                    open!(),
                    " THEN NULL ELSE tenant_deployments.reason END, \
                     updated_at = excluded.updated_at"
                ))
                .bind(&id)
                .bind(trigger.as_str())
                .bind(now)
                .execute(&self.writer)
                .await?;
                self.deployment(tenant).await?.ok_or(StoreError::NotFound)
            }

            async fn set_deployment_settings(
                &self,
                tenant: Uuid,
                settings: &DeploymentSettings,
                event: &DeploymentEvent,
                fence: Option<Fence>,
            ) -> Result<()> {
                let id = tenant.to_string();
                let mut tx = self.begin_write().await?;
                if let Some(fence) = fence {
                    Self::hold_fence(&mut tx, fence).await?;
                }
                let exists = sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                let now = crate::store::now();
                sqlx::query(
                    "INSERT INTO tenant_deployments (tenant_id, phase, attempt, trigger_kind, \
                     requested_at, updated_at) VALUES ($1, 'pending', 0, 'updated', $2, $2) \
                     ON CONFLICT (tenant_id) DO NOTHING",
                )
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if let Some(allowlist) = &settings.allowlist {
                    let json = serde_json::to_string(allowlist)
                        .map_err(|e| corrupt(format!("allowlist: {e}")))?;
                    sqlx::query("UPDATE tenant_deployments SET allowlist = $2 WHERE tenant_id = $1")
                        .bind(&id)
                        .bind(json)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(min_replicas) = settings.min_replicas {
                    sqlx::query(
                        "UPDATE tenant_deployments SET min_replicas = $2, scaled_at = $3 \
                         WHERE tenant_id = $1",
                    )
                    .bind(&id)
                    .bind(min_replicas.map(i64::from))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                insert_event!(&mut *tx, &id, event);
                tx.commit().await?;
                Ok(())
            }

            async fn record_deployment_event(
                &self,
                tenant: Uuid,
                event: &DeploymentEvent,
                fence: Fence,
            ) -> Result<()> {
                let tenant = tenant.to_string();
                let mut tx = self.begin_write().await?;
                Self::hold_fence(&mut tx, fence).await?;
                let done = sqlx::query(
                    "INSERT INTO deployment_events (id, tenant_id, at, attempt, kind, detail) \
                     SELECT $1, id, $3, $4, $5, $6 FROM tenants WHERE id = $2",
                )
                .bind(Uuid::now_v7().to_string())
                .bind(&tenant)
                .bind(event.at)
                .bind(event.attempt)
                .bind(&event.kind)
                .bind(&event.detail)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                tx.commit().await?;
                Ok(())
            }

            async fn deployment_events(
                &self,
                tenant: Uuid,
                limit: i64,
            ) -> Result<Vec<DeploymentEvent>> {
                let rows = sqlx::query(
                    "SELECT at, attempt, kind, detail FROM deployment_events \
                     WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(tenant.to_string())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(DeploymentEvent {
                            at: row.try_get("at")?,
                            attempt: row.try_get("attempt")?,
                            kind: row.try_get("kind")?,
                            detail: row.try_get("detail")?,
                        })
                    })
                    .collect()
            }
        }
    };
}

macro_rules! insert_event {
    ($tx:expr, $tenant:expr, $event:expr) => {
        sqlx::query(
            "INSERT INTO deployment_events (id, tenant_id, at, attempt, kind, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind($tenant)
        .bind($event.at)
        .bind($event.attempt)
        .bind(&$event.kind)
        .bind(&$event.detail)
        .execute($tx)
        .await?;
    };
}

deploy_sql!(SqliteStore);
deploy_sql!(PgStore);
