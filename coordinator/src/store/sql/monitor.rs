//! The SQL behind [`MonitorStore`], for both backends (see the parent
//! module for how the macro instantiates it).

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use knowton_common::health::{HealthStatus, MessageKind};
use knowton_common::thresholds::Thresholds;
use sqlx::Row;
use uuid::Uuid;

use super::{PgStore, SqliteStore, TENANT_FIELDS, TENANT_FROM, corrupt, decode, parse_uuid};
use crate::store::{
    AlertEventRow, AlertFilter, AlertRow, AlertWrite, CleanupCounts, Fence, HealthSummary,
    MonitorStore, Result, Rollup, Silence, StoreError, snapshot, with_notifications,
};

const ALERT_FIELDS: &str = "a.id, a.tenant_id, t.slug AS tenant_slug, a.check_name, a.severity, \
    a.state, a.sequence, a.summary, a.value, a.threshold, a.opened_at, a.updated_at, \
    a.resolved_at, a.resolved_by, a.resolve_note, a.acknowledged_at, a.acknowledged_by, \
    a.notified, a.last_notified_at";
const ALERT_FROM: &str = "FROM alerts a JOIN tenants t ON t.id = a.tenant_id";

const SILENCE_FIELDS: &str = "id, tenant_id, check_name, starts_at, ends_at, end_on_resolve, \
    comment, created_by, created_at";

const ROLLUP_FIELDS: &str = "tenant_id, minute, status, availability, latency_p50_ms, \
    latency_p95_ms, latency_max_ms, error_rate_percent, requests_per_minute, storage_bytes, \
    users, samples";

/// The columns of an alert that its transitions change, in the order
/// `bind_alert_changes!` binds them.
const ALERT_CHANGES: [&str; 14] = [
    "severity",
    "state",
    "sequence",
    "summary",
    "value",
    "threshold",
    "updated_at",
    "resolved_at",
    "resolved_by",
    "resolve_note",
    "acknowledged_at",
    "acknowledged_by",
    "notified",
    "last_notified_at",
];

/// A new alert: its identity (`$1`–`$4`), then [`ALERT_CHANGES`].
static INSERT_ALERT: LazyLock<String> = LazyLock::new(|| {
    let placeholders: Vec<String> = (1..=4 + ALERT_CHANGES.len())
        .map(|n| format!("${n}"))
        .collect();
    format!(
        "INSERT INTO alerts (id, tenant_id, check_name, opened_at, {}) VALUES ({})",
        ALERT_CHANGES.join(", "),
        placeholders.join(", ")
    )
});

/// An alert's next transition (`$1` its id, `$2` the sequence it must
/// still have, then [`ALERT_CHANGES`]): nothing changes when another
/// writer got there first.
static UPDATE_ALERT: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = ALERT_CHANGES
        .iter()
        .enumerate()
        .map(|(i, column)| format!("{column} = ${}", i + 3))
        .collect();
    format!(
        "UPDATE alerts SET {} WHERE id = $1 AND sequence = $2",
        sets.join(", ")
    )
});

/// Binds an alert's [`ALERT_CHANGES`] to a query, in their order.
macro_rules! bind_alert_changes {
    ($query:expr, $alert:expr) => {
        $query
            .bind($alert.severity.as_str())
            .bind($alert.state.as_str())
            .bind($alert.sequence)
            .bind(&$alert.summary)
            .bind(&$alert.value)
            .bind(&$alert.threshold)
            .bind($alert.updated_at)
            .bind($alert.resolved_at)
            .bind(&$alert.resolved_by)
            .bind(&$alert.resolve_note)
            .bind($alert.acknowledged_at)
            .bind(&$alert.acknowledged_by)
            .bind($alert.notified)
            .bind($alert.last_notified_at)
    };
}

fn parse_thresholds(tenant: Uuid, json: &str) -> Result<Thresholds> {
    serde_json::from_str(json).map_err(|e| corrupt(format!("thresholds of {tenant}: {e}")))
}

macro_rules! monitor_sql {
    ($store:ty) => {
        impl $store {
            fn alert_from_row(
                row: &<super::DbOf<$store> as sqlx::Database>::Row,
            ) -> Result<AlertRow> {
                Ok(AlertRow {
                    id: parse_uuid(&row.try_get::<String, _>("id")?)?,
                    tenant_id: parse_uuid(&row.try_get::<String, _>("tenant_id")?)?,
                    tenant_slug: row.try_get("tenant_slug")?,
                    check: decode("alerts", "check_name", row.try_get("check_name")?)?,
                    severity: decode("alerts", "severity", row.try_get("severity")?)?,
                    state: decode("alerts", "state", row.try_get("state")?)?,
                    sequence: row.try_get("sequence")?,
                    summary: row.try_get("summary")?,
                    value: row.try_get("value")?,
                    threshold: row.try_get("threshold")?,
                    opened_at: row.try_get("opened_at")?,
                    updated_at: row.try_get("updated_at")?,
                    resolved_at: row.try_get("resolved_at")?,
                    resolved_by: row.try_get("resolved_by")?,
                    resolve_note: row.try_get("resolve_note")?,
                    acknowledged_at: row.try_get("acknowledged_at")?,
                    acknowledged_by: row.try_get("acknowledged_by")?,
                    notified: row.try_get("notified")?,
                    last_notified_at: row.try_get("last_notified_at")?,
                })
            }

            fn silence_from_row(
                row: &<super::DbOf<$store> as sqlx::Database>::Row,
            ) -> Result<Silence> {
                Ok(Silence {
                    id: parse_uuid(&row.try_get::<String, _>("id")?)?,
                    tenant_id: parse_uuid(&row.try_get::<String, _>("tenant_id")?)?,
                    check: row
                        .try_get::<Option<String>, _>("check_name")?
                        .map(|check| decode("silences", "check_name", check))
                        .transpose()?,
                    starts_at: row.try_get("starts_at")?,
                    ends_at: row.try_get("ends_at")?,
                    end_on_resolve: row.try_get("end_on_resolve")?,
                    comment: row.try_get("comment")?,
                    created_by: row.try_get("created_by")?,
                    created_at: row.try_get("created_at")?,
                })
            }

            fn rollup_from_row(
                row: &<super::DbOf<$store> as sqlx::Database>::Row,
            ) -> Result<Rollup> {
                Ok(Rollup {
                    tenant_id: parse_uuid(&row.try_get::<String, _>("tenant_id")?)?,
                    minute: row.try_get("minute")?,
                    status: decode("health_rollups", "status", row.try_get("status")?)?,
                    availability: row.try_get("availability")?,
                    latency_p50_ms: row.try_get("latency_p50_ms")?,
                    latency_p95_ms: row.try_get("latency_p95_ms")?,
                    latency_max_ms: row.try_get("latency_max_ms")?,
                    error_rate_percent: row.try_get("error_rate_percent")?,
                    requests_per_minute: row.try_get("requests_per_minute")?,
                    storage_bytes: row.try_get("storage_bytes")?,
                    users: row.try_get("users")?,
                    samples: row.try_get("samples")?,
                })
            }
        }

        #[async_trait]
        impl MonitorStore for $store {
            async fn all_thresholds(&self) -> Result<Vec<(Uuid, Thresholds)>> {
                let rows = sqlx::query("SELECT tenant_id, thresholds FROM tenant_thresholds")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let id = parse_uuid(&row.try_get::<String, _>("tenant_id")?)?;
                        Ok((id, parse_thresholds(id, &row.try_get::<String, _>("thresholds")?)?))
                    })
                    .collect()
            }

            async fn thresholds(&self, tenant: Uuid) -> Result<Option<Thresholds>> {
                let row = sqlx::query("SELECT thresholds FROM tenant_thresholds WHERE tenant_id = $1")
                    .bind(tenant.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| parse_thresholds(tenant, &row.try_get::<String, _>("thresholds")?))
                    .transpose()
            }

            async fn set_thresholds(
                &self,
                tenant: Uuid,
                thresholds: Option<&Thresholds>,
                actor: &str,
            ) -> Result<()> {
                let id = tenant.to_string();
                let at = crate::store::now();
                let json = thresholds
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| corrupt(format!("thresholds: {e}")))?;
                let mut tx = self.begin_write().await?;
                // A configuration version, as any change of the tenant's
                // configuration: the tenant's row first (it orders
                // concurrent changes), then the thresholds, then the
                // history version that records (and backs up) them.
                let row = sqlx::query(
                    "UPDATE tenants SET updated_at = $2, config_version = config_version + 1 \
                     WHERE id = $1 RETURNING config_version",
                )
                .bind(&id)
                .bind(at)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                };
                let version: i64 = row.try_get("config_version")?;
                let current = sqlx::query("SELECT thresholds FROM tenant_thresholds WHERE tenant_id = $1")
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| parse_thresholds(tenant, &row.try_get::<String, _>("thresholds")?))
                    .transpose()?;
                if current.as_ref() == thresholds {
                    // Nothing changes: no version.
                    tx.rollback().await?;
                    return Ok(());
                }
                match &json {
                    Some(json) => {
                        sqlx::query(
                            "INSERT INTO tenant_thresholds (tenant_id, thresholds, updated_at, updated_by) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET \
                             thresholds = excluded.thresholds, updated_at = excluded.updated_at, \
                             updated_by = excluded.updated_by",
                        )
                        .bind(&id)
                        .bind(json)
                        .bind(at)
                        .bind(actor)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM tenant_thresholds WHERE tenant_id = $1")
                            .bind(&id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {TENANT_FIELDS} {TENANT_FROM} WHERE t.id = $1"
                ));
                let row = sqlx::query(sql).bind(&id).fetch_one(&mut *tx).await?;
                let t = Self::tenant_from_row(&row)?;
                let snap = with_notifications(
                    snapshot(t.plan, &t.domain, &t.features, &t.branding),
                    Self::channels_display(&mut tx, &id).await?,
                );
                let summary = match thresholds {
                    Some(_) => "thresholds",
                    None => "thresholds reset to the defaults",
                };
                Self::insert_history(&mut tx, &id, version, at, actor, summary, &snap).await?;
                tx.commit().await?;
                self.config_committed.notify_one();
                Ok(())
            }

            async fn record_alert(&self, write: &AlertWrite, fence: Fence) -> Result<()> {
                let a = &write.alert;
                let id = a.id.to_string();
                let tenant = a.tenant_id.to_string();
                let mut tx = self.begin_write().await?;
                Self::hold_fence(&mut tx, fence).await?;
                if a.sequence == 1 {
                    let insert = sqlx::query(INSERT_ALERT.as_str())
                        .bind(&id)
                        .bind(&tenant)
                        .bind(a.check.as_str())
                        .bind(a.opened_at);
                    bind_alert_changes!(insert, a).execute(&mut *tx).await?;
                } else {
                    let update = sqlx::query(UPDATE_ALERT.as_str()).bind(&id).bind(a.sequence - 1);
                    let done = bind_alert_changes!(update, a).execute(&mut *tx).await?;
                    if done.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Err(StoreError::Stale);
                    }
                }
                let e = &write.event;
                sqlx::query(
                    "INSERT INTO alert_events (alert_id, sequence, at, kind, severity, summary, \
                     actor, note, notifications) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&id)
                .bind(e.sequence)
                .bind(e.at)
                .bind(e.kind.as_str())
                .bind(e.severity.as_str())
                .bind(&e.summary)
                .bind(&e.actor)
                .bind(&e.note)
                .bind(e.notifications)
                .execute(&mut *tx)
                .await?;
                for m in &write.messages {
                    Self::insert_outbox(&mut tx, Some(&tenant), MessageKind::Alert, m, e.at).await?;
                }
                if let Some(at) = a.resolved_at {
                    sqlx::query(
                        "UPDATE silences SET ends_at = $1 WHERE tenant_id = $2 AND end_on_resolve \
                         AND (check_name IS NULL OR check_name = $3) AND starts_at <= $1 AND ends_at > $1",
                    )
                    .bind(at)
                    .bind(&tenant)
                    .bind(a.check.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn get_alert(&self, id: Uuid) -> Result<Option<AlertRow>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {ALERT_FIELDS} {ALERT_FROM} WHERE a.id = $1"));
                let row = sqlx::query(sql)
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::alert_from_row).transpose()
            }

            async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRow>> {
                let resolved = match filter.resolved {
                    Some(true) => " AND a.resolved_at IS NOT NULL",
                    Some(false) => " AND a.resolved_at IS NULL",
                    None => "",
                };
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {ALERT_FIELDS} {ALERT_FROM} WHERE ($1 IS NULL OR a.tenant_id = $1) \
                     AND ($2 IS NULL OR a.id < $2){resolved} ORDER BY a.id DESC LIMIT $3"
                ));
                let rows = sqlx::query(sql)
                    .bind(filter.tenant.map(|t| t.to_string()))
                    .bind(filter.before.map(|t| t.to_string()))
                    .bind(i64::from(filter.limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::alert_from_row).collect()
            }

            async fn open_alerts(&self) -> Result<Vec<AlertRow>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {ALERT_FIELDS} {ALERT_FROM} WHERE a.resolved_at IS NULL ORDER BY a.id"
                ));
                let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
                rows.iter().map(Self::alert_from_row).collect()
            }

            async fn alert_events(&self, alert: Uuid) -> Result<Vec<AlertEventRow>> {
                let rows = sqlx::query(
                    "SELECT sequence, at, kind, severity, summary, actor, note, notifications \
                     FROM alert_events WHERE alert_id = $1 ORDER BY sequence",
                )
                .bind(alert.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(AlertEventRow {
                            sequence: row.try_get("sequence")?,
                            at: row.try_get("at")?,
                            kind: decode("alert_events", "kind", row.try_get("kind")?)?,
                            severity: decode("alert_events", "severity", row.try_get("severity")?)?,
                            summary: row.try_get("summary")?,
                            actor: row.try_get("actor")?,
                            note: row.try_get("note")?,
                            notifications: row.try_get("notifications")?,
                        })
                    })
                    .collect()
            }

            async fn create_silence(&self, s: &Silence) -> Result<()> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "INSERT INTO silences ({SILENCE_FIELDS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ));
                sqlx::query(sql)
                    .bind(s.id.to_string())
                    .bind(s.tenant_id.to_string())
                    .bind(s.check.map(|c| c.as_str()))
                    .bind(s.starts_at)
                    .bind(s.ends_at)
                    .bind(s.end_on_resolve)
                    .bind(&s.comment)
                    .bind(&s.created_by)
                    .bind(s.created_at)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn active_silences(&self, at: DateTime<Utc>) -> Result<Vec<Silence>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {SILENCE_FIELDS} FROM silences WHERE ends_at > $1 ORDER BY id"
                ));
                let rows = sqlx::query(sql).bind(at).fetch_all(&self.pool).await?;
                rows.iter().map(Self::silence_from_row).collect()
            }

            async fn end_silence(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE silences SET ends_at = CASE WHEN ends_at > $2 THEN $2 ELSE ends_at END \
                     WHERE id = $1",
                )
                .bind(id.to_string())
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn write_rollups(&self, rollups: &[Rollup], fence: Fence) -> Result<()> {
                if rollups.is_empty() {
                    return Ok(());
                }
                let sql = format!(
                    "INSERT INTO health_rollups ({ROLLUP_FIELDS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (tenant_id, minute) DO UPDATE SET status = excluded.status, \
                     availability = excluded.availability, latency_p50_ms = excluded.latency_p50_ms, \
                     latency_p95_ms = excluded.latency_p95_ms, latency_max_ms = excluded.latency_max_ms, \
                     error_rate_percent = excluded.error_rate_percent, \
                     requests_per_minute = excluded.requests_per_minute, \
                     storage_bytes = excluded.storage_bytes, users = excluded.users, \
                     samples = excluded.samples"
                );
                let mut tx = self.begin_write().await?;
                Self::hold_fence(&mut tx, fence).await?;
                for r in rollups {
                    let inserted = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(r.tenant_id.to_string())
                        .bind(r.minute)
                        .bind(r.status.as_str())
                        .bind(r.availability)
                        .bind(r.latency_p50_ms)
                        .bind(r.latency_p95_ms)
                        .bind(r.latency_max_ms)
                        .bind(r.error_rate_percent)
                        .bind(r.requests_per_minute)
                        .bind(r.storage_bytes)
                        .bind(r.users)
                        .bind(r.samples)
                        .execute(&mut *tx)
                        .await;
                    match inserted {
                        Ok(_) => {}
                        // The tenant was purged meanwhile: its minute goes with it.
                        Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                            tx.rollback().await?;
                            let rest: Vec<Rollup> = rollups
                                .iter()
                                .filter(|x| x.tenant_id != r.tenant_id)
                                .cloned()
                                .collect();
                            return Box::pin(self.write_rollups(&rest, fence)).await;
                        }
                        Err(err) => return Err(err.into()),
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn rollups(
                &self,
                tenant: Uuid,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<Rollup>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {ROLLUP_FIELDS} FROM health_rollups WHERE tenant_id = $1 \
                     AND minute >= $2 AND minute < $3 ORDER BY minute"
                ));
                let rows = sqlx::query(sql)
                    .bind(tenant.to_string())
                    .bind(from)
                    .bind(to)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::rollup_from_row).collect()
            }

            async fn health_summaries(
                &self,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<HealthSummary>> {
                let rows = sqlx::query(
                    "SELECT tenant_id, COUNT(*) AS minutes, AVG(availability) AS availability, \
                     MAX(latency_p95_ms) AS latency_p95_ms, MAX(latency_max_ms) AS latency_max_ms, \
                     AVG(error_rate_percent) AS error_rate_percent, MAX(storage_bytes) AS storage_bytes, \
                     MAX(users) AS users, \
                     SUM(CASE WHEN status IN ($3, $4) THEN 1 ELSE 0 END) AS bad_minutes \
                     FROM health_rollups WHERE minute >= $1 AND minute < $2 \
                     GROUP BY tenant_id ORDER BY tenant_id",
                )
                .bind(from)
                .bind(to)
                .bind(HealthStatus::Critical.as_str())
                .bind(HealthStatus::Down.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(HealthSummary {
                            tenant_id: parse_uuid(&row.try_get::<String, _>("tenant_id")?)?,
                            minutes: row.try_get("minutes")?,
                            availability: row.try_get::<Option<f64>, _>("availability")?.unwrap_or(0.0),
                            latency_p95_ms: row.try_get("latency_p95_ms")?,
                            latency_max_ms: row.try_get("latency_max_ms")?,
                            error_rate_percent: row.try_get("error_rate_percent")?,
                            storage_bytes: row.try_get("storage_bytes")?,
                            users: row.try_get("users")?,
                            bad_minutes: row.try_get::<Option<i64>, _>("bad_minutes")?.unwrap_or(0),
                        })
                    })
                    .collect()
            }

            async fn cleanup(&self, before: DateTime<Utc>) -> Result<CleanupCounts> {
                let mut tx = self.begin_write().await?;
                let rollups = sqlx::query("DELETE FROM health_rollups WHERE minute < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let resolved_alerts = sqlx::query(
                    "DELETE FROM alerts WHERE resolved_at IS NOT NULL AND resolved_at < $1",
                )
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let delivered_notifications = sqlx::query(
                    "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < $1",
                )
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let ended_silences = sqlx::query("DELETE FROM silences WHERE ends_at < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(CleanupCounts {
                    rollups,
                    resolved_alerts,
                    delivered_notifications,
                    ended_silences,
                })
            }
        }
    };
}

monitor_sql!(SqliteStore);
monitor_sql!(PgStore);

#[cfg(test)]
mod tests {
    use knowton_common::health::{Check, Severity};

    use super::decode;

    #[test]
    fn an_unknown_name_is_an_error_naming_table_column_and_value() {
        let err = decode::<Check>("alerts", "check_name", "cpu".to_owned()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stored row is corrupt: alerts.check_name holds \"cpu\""
        );
        assert!(decode::<Severity>("alerts", "severity", "Warning".to_owned()).is_err());
        assert_eq!(
            decode::<Severity>("alerts", "severity", "critical".to_owned()).unwrap(),
            Severity::Critical
        );
    }
}
