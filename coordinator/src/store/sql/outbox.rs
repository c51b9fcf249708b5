//! The SQL behind [`OutboxStore`], for both backends (see the parent
//! module for how the macros instantiate it).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use knowton_common::health::{Channel, MessageKind};
use sqlx::Row;
use uuid::Uuid;

use super::{
    PgStore, SqliteStore, TENANT_FIELDS, TENANT_FROM, corrupt, decode, parse_json,
    parse_optional_uuid, parse_uuid,
};
use crate::store::{
    ClaimedMessage, DeliveryOutcome, DeliveryState, OutboxEntry, OutboxMessage, OutboxStore,
    Result, StoreError, StoredChannels, now, snapshot, with_notifications,
};

/// `$skip_locked`: how a claim skips rows another coordinator is claiming
/// at the same moment (PostgreSQL's `FOR UPDATE SKIP LOCKED`; SQLite has a
/// single writer, so nothing).
macro_rules! outbox_sql {
    ($store:ty, $skip_locked:literal) => {
        impl $store {
            /// Inserts one outbox row, due at once, inside `tx`: the building
            /// block for every change that causes a notification.
            pub(super) async fn insert_outbox(
                tx: &mut sqlx::Transaction<'static, $crate::store::sql::DbOf<$store>>,
                tenant: Option<&str>,
                kind: MessageKind,
                m: &OutboxMessage,
                at: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO outbox (id, tenant_id, kind, channel, recipient, subject, \
                     sealed_body, idempotency_key, created_at, next_attempt_at, state, caused_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 'pending', $10)",
                )
                .bind(m.id.to_string())
                .bind(tenant)
                .bind(kind.as_str())
                .bind(m.channel.as_str())
                .bind(&m.recipient)
                .bind(&m.subject)
                .bind(&m.sealed_body)
                .bind(&m.idempotency_key)
                .bind(at)
                .bind(m.caused_at)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// The redacted notification channels of `tenant`, for a history snapshot.
            pub(super) async fn channels_display(
                tx: &mut sqlx::Transaction<'static, $crate::store::sql::DbOf<$store>>,
                tenant: &str,
            ) -> Result<Option<serde_json::Value>> {
                let row = sqlx::query(
                    "SELECT display FROM tenant_notification_channels WHERE tenant_id = $1",
                )
                .bind(tenant)
                .fetch_optional(&mut **tx)
                .await?;
                row.map(|r| parse_json("channel display", &r.try_get::<String, _>("display")?))
                    .transpose()
            }

            fn outbox_entry(row: &<$crate::store::sql::DbOf<$store> as sqlx::Database>::Row) -> Result<OutboxEntry> {
                let state: String = row.try_get("state")?;
                Ok(OutboxEntry {
                    id: parse_uuid(&row.try_get::<String, _>("id")?)?,
                    tenant_id: parse_optional_uuid(row.try_get("tenant_id")?)?,
                    tenant_slug: row.try_get("tenant_slug")?,
                    kind: decode("outbox", "kind", row.try_get("kind")?)?,
                    channel: decode("outbox", "channel", row.try_get("channel")?)?,
                    recipient: row.try_get("recipient")?,
                    subject: row.try_get("subject")?,
                    idempotency_key: row.try_get("idempotency_key")?,
                    state: state.parse::<DeliveryState>().map_err(corrupt)?,
                    attempts: row.try_get("attempts")?,
                    created_at: row.try_get("created_at")?,
                    next_attempt_at: row.try_get("next_attempt_at")?,
                    delivered_at: row.try_get("delivered_at")?,
                    failed_at: row.try_get("failed_at")?,
                    last_error: row.try_get("last_error")?,
                })
            }

        }

        #[async_trait]
        impl OutboxStore for $store {
            async fn enqueue(
                &self,
                tenant: Option<Uuid>,
                kind: MessageKind,
                messages: &[OutboxMessage],
            ) -> Result<()> {
                let tenant = tenant.map(|t| t.to_string());
                let at = now();
                let mut tx = self.begin_write().await?;
                for m in messages {
                    Self::insert_outbox(&mut tx, tenant.as_deref(), kind, m, at).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn claim_due(
                &self,
                channel: Channel,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<ClaimedMessage>> {
                // The due rows are chosen once, in a materialized CTE: as an
                // `IN (subquery)` PostgreSQL may rescan the subquery per row,
                // and with SKIP LOCKED each rescan can pick other rows.
                let rows = sqlx::query(concat!(
                    "WITH due AS MATERIALIZED (SELECT id FROM outbox WHERE state = 'pending' \
                     AND channel = $1 AND next_attempt_at <= $2 \
                     AND (claimed_until IS NULL OR claimed_until <= $2) \
                     ORDER BY next_attempt_at LIMIT $4",
                    $skip_locked,
                    ") UPDATE outbox SET claimed_until = $3 \
                     WHERE state = 'pending' AND id IN (SELECT id FROM due) \
                     RETURNING id, tenant_id, kind, channel, recipient, subject, sealed_body, \
                     idempotency_key, attempts, created_at, last_error, caused_at"
                ))
                .bind(channel.as_str())
                .bind(now)
                .bind(lease_until)
                .bind(i64::from(limit))
                .fetch_all(&self.writer)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(ClaimedMessage {
                            id: parse_uuid(&row.try_get::<String, _>("id")?)?,
                            tenant_id: parse_optional_uuid(row.try_get("tenant_id")?)?,
                            kind: decode("outbox", "kind", row.try_get("kind")?)?,
                            channel: decode("outbox", "channel", row.try_get("channel")?)?,
                            recipient: row.try_get("recipient")?,
                            subject: row.try_get("subject")?,
                            sealed_body: row.try_get("sealed_body")?,
                            idempotency_key: row.try_get("idempotency_key")?,
                            attempts: row.try_get("attempts")?,
                            created_at: row.try_get("created_at")?,
                            last_error: row.try_get("last_error")?,
                            caused_at: row.try_get("caused_at")?,
                        })
                    })
                    .collect()
            }

            async fn next_due(
                &self,
                email: bool,
                now: DateTime<Utc>,
            ) -> Result<Option<DateTime<Utc>>> {
                let free = sqlx::query(
                    "SELECT next_attempt_at FROM outbox WHERE state = 'pending' \
                     AND (channel IN ('webhook', 'slack') OR ($1 AND channel = 'email')) \
                     AND (claimed_until IS NULL OR claimed_until <= $2) \
                     ORDER BY next_attempt_at LIMIT 1",
                )
                .bind(email)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                let leased = sqlx::query(
                    "SELECT claimed_until FROM outbox WHERE state = 'pending' \
                     AND (channel IN ('webhook', 'slack') OR ($1 AND channel = 'email')) \
                     AND claimed_until > $2 \
                     ORDER BY claimed_until LIMIT 1",
                )
                .bind(email)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                let free: Option<DateTime<Utc>> =
                    free.map(|r| r.try_get("next_attempt_at")).transpose()?;
                let leased: Option<DateTime<Utc>> =
                    leased.map(|r| r.try_get("claimed_until")).transpose()?;
                Ok(free.into_iter().chain(leased).min())
            }

            async fn record_delivery(
                &self,
                id: Uuid,
                outcome: &DeliveryOutcome,
                at: DateTime<Utc>,
            ) -> Result<()> {
                let id = id.to_string();
                let query = match outcome {
                    DeliveryOutcome::Delivered => sqlx::query(
                        "UPDATE outbox SET state = 'delivered', delivered_at = $2, \
                         attempts = attempts + 1, claimed_until = NULL \
                         WHERE id = $1 AND state = 'pending'",
                    )
                    .bind(&id)
                    .bind(at),
                    DeliveryOutcome::Retry { at: next, error } => sqlx::query(
                        "UPDATE outbox SET next_attempt_at = $2, last_error = $3, \
                         attempts = attempts + 1, claimed_until = NULL \
                         WHERE id = $1 AND state = 'pending'",
                    )
                    .bind(&id)
                    .bind(*next)
                    .bind(error),
                    DeliveryOutcome::Failed { error } => sqlx::query(
                        "UPDATE outbox SET state = 'failed', failed_at = $2, last_error = $3, \
                         attempts = attempts + 1, claimed_until = NULL \
                         WHERE id = $1 AND state = 'pending'",
                    )
                    .bind(&id)
                    .bind(at)
                    .bind(error),
                };
                query.execute(&self.writer).await?;
                Ok(())
            }

            async fn list_outbox(
                &self,
                state: Option<DeliveryState>,
                limit: u32,
                after: Option<Uuid>,
            ) -> Result<Vec<OutboxEntry>> {
                let rows = sqlx::query(
                    "SELECT o.id, o.tenant_id, t.slug AS tenant_slug, o.kind, o.channel, \
                     o.recipient, o.subject, o.idempotency_key, o.state, o.attempts, \
                     o.created_at, o.next_attempt_at, o.delivered_at, o.failed_at, o.last_error \
                     FROM outbox o LEFT JOIN tenants t ON t.id = o.tenant_id \
                     WHERE o.id > $1 AND ($2 = '' OR o.state = $2) ORDER BY o.id LIMIT $3",
                )
                .bind(after.map(|a| a.to_string()).unwrap_or_default())
                .bind(state.map(DeliveryState::as_str).unwrap_or_default())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::outbox_entry).collect()
            }

            async fn notification_channels(&self, tenant: Uuid) -> Result<Option<StoredChannels>> {
                let row = sqlx::query(
                    "SELECT emails, sealed_webhook, sealed_slack, display, updated_at \
                     FROM tenant_notification_channels WHERE tenant_id = $1",
                )
                .bind(tenant.to_string())
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let emails = row
                    .try_get::<Option<String>, _>("emails")?
                    .map(|e| serde_json::from_str(&e).map_err(|e| corrupt(format!("emails: {e}"))))
                    .transpose()?;
                Ok(Some(StoredChannels {
                    emails,
                    sealed_webhook: row.try_get("sealed_webhook")?,
                    sealed_slack: row.try_get("sealed_slack")?,
                    display: parse_json("channel display", &row.try_get::<String, _>("display")?)?,
                    updated_at: row.try_get("updated_at")?,
                }))
            }

            async fn set_notification_channels(
                &self,
                tenant: Uuid,
                channels: &StoredChannels,
                actor: &str,
                summary: &str,
            ) -> Result<i64> {
                let id = tenant.to_string();
                let at = channels.updated_at;
                let mut tx = self.begin_write().await?;
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
                let emails = channels
                    .emails
                    .as_ref()
                    .map(|e| serde_json::Value::from(e.clone()).to_string());
                sqlx::query(
                    "INSERT INTO tenant_notification_channels (tenant_id, emails, sealed_webhook, \
                     sealed_slack, display, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (tenant_id) DO UPDATE SET emails = excluded.emails, \
                     sealed_webhook = excluded.sealed_webhook, sealed_slack = excluded.sealed_slack, \
                     display = excluded.display, updated_at = excluded.updated_at",
                )
                .bind(&id)
                .bind(emails)
                .bind(&channels.sealed_webhook)
                .bind(&channels.sealed_slack)
                .bind(channels.display.to_string())
                .bind(at)
                .execute(&mut *tx)
                .await?;
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {TENANT_FIELDS} {TENANT_FROM} WHERE t.id = $1"
                ));
                let row = sqlx::query(sql).bind(&id).fetch_one(&mut *tx).await?;
                let t = Self::tenant_from_row(&row)?;
                let snap = with_notifications(
                    snapshot(t.plan, &t.domain, &t.features, &t.branding),
                    Some(channels.display.clone()),
                );
                Self::insert_history(&mut tx, &id, version, at, actor, summary, &snap).await?;
                tx.commit().await?;
                self.config_committed.notify_one();
                Ok(version)
            }
        }
    };
}

outbox_sql!(SqliteStore, "");
outbox_sql!(PgStore, " FOR UPDATE SKIP LOCKED");
