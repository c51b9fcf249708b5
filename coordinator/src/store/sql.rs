//! The SQL behind [`Store`], written once for both backends.
//!
//! The statements are portable between SQLite and PostgreSQL (`$n`
//! placeholders, `ON CONFLICT`, `RETURNING`); the `sql_store!` macro
//! instantiates them for each driver with its native types, so neither
//! backend pays for a lowest-common-denominator `Any` layer. Each store
//! trait has its own file and macro (`keys`, `outbox`, `monitor`,
//! `deploy`, `lease`, `ratelimit`); `rows` decodes tenants for them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use knowton_common::health::{MessageKind, UnknownName};
use knowton_common::{TenantStatus, Usage};
use sqlx::{PgPool, Row, SqlitePool};
use uuid::Uuid;

mod backup;
mod changes;
mod deploy;
mod lease;
mod monitor;
mod outbox;
mod ratelimit;
mod rows;

use super::{
    ApiKeyInfo, ConfigChange, ConfigVersion, DEFAULT_CHANNELS_DISPLAY, NewTenant, Result, Store,
    StoreError, Tenant, now, snapshot, with_notifications,
};

/// SQLite store (the embedded default).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads.
    pool: SqlitePool,
    /// Writes: one connection, so that this process's writers queue here,
    /// in order, for the moment the last one commits. Writing through the
    /// read pool, a writer finding the file locked sleeps in SQLite's busy
    /// handler (1, 2, 5, 10 ms, …), however soon the lock is free: tens of
    /// milliseconds added to an alert's commit or a notification's claim.
    writer: SqlitePool,
    /// Notified after a configuration version is committed (see `backup`).
    config_committed: std::sync::Arc<tokio::sync::Notify>,
}

impl SqliteStore {
    pub fn new(pool: SqlitePool, writer: SqlitePool) -> Self {
        SqliteStore {
            pool,
            writer,
            config_committed: std::sync::Arc::default(),
        }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Write transactions take the write lock up front, so concurrent writers
    /// wait on the busy timeout instead of failing on a lock upgrade.
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }
}

/// PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The same pool: PostgreSQL queues writers on row locks itself.
    writer: PgPool,
    /// The `NOTIFY` channel of this schema's replicas (see `changes`).
    changes_channel: std::sync::Arc<tokio::sync::OnceCell<String>>,
    /// Signs this store's announcements, so that its listener skips them:
    /// what a replica changes it has applied already.
    origin: uuid::Uuid,
    /// Notified after a configuration version is committed (see `backup`).
    config_committed: std::sync::Arc<tokio::sync::Notify>,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        PgStore {
            writer: pool.clone(),
            pool,
            changes_channel: std::sync::Arc::default(),
            origin: uuid::Uuid::new_v4(),
            config_committed: std::sync::Arc::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await
    }
}

/// A tenant's columns, everything but its keys.
const TENANT_FIELDS: &str = "t.id, t.name, t.slug, t.plan, t.domain, t.status, \
    t.config_version, t.created_at, t.updated_at, t.deprovisioned_at, t.retain_until, \
    b.company_name, b.primary_color, b.secondary_color, b.logo_url, \
    f.enable_nft, f.enable_bonds, f.enable_fractionalization, f.enable_enterprise, \
    f.enable_custom_development, u.users, u.storage_bytes, u.api_requests, \
    (SELECT a.email FROM tenant_users a WHERE a.tenant_id = t.id AND a.role = 'admin' \
     ORDER BY a.created_at LIMIT 1) AS admin_email";

macro_rules! tenant_joins {
    () => {
        "JOIN tenant_branding b ON b.tenant_id = t.id \
         JOIN tenant_features f ON f.tenant_id = t.id \
         JOIN tenant_usage u ON u.tenant_id = t.id"
    };
}

// After `tenant_joins!`, which it uses.
mod keys;

const TENANT_FROM: &str = concat!("FROM tenants t ", tenant_joins!());

/// The active keys of the tenant, joined as `k` (NULL columns if none).
const ACTIVE_KEYS: &str = "k.kind AS key_kind, k.display_prefix AS key_prefix, \
    k.created_at AS key_created_at";
const ACTIVE_KEYS_JOIN: &str =
    "LEFT JOIN api_keys k ON k.tenant_id = t.id AND k.revoked_at IS NULL";

/// Tables holding a tenant's rows, children first.
const TENANT_TABLES: [&str; 19] = [
    "restore_jobs",
    "backup_verifications",
    "backup_runs",
    "tenant_rate_limits",
    "deployment_events",
    "tenant_deployments",
    "health_rollups",
    "silences",
    "alerts",
    "tenant_thresholds",
    "outbox",
    "tenant_notification_channels",
    "tenant_config_history",
    "tenant_secrets",
    "tenant_usage",
    "tenant_features",
    "tenant_branding",
    "api_keys",
    "tenant_users",
];

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A column holding one of a vocabulary's names: a name the enum does not
/// know is an error naming the table, the column and the value, never a
/// default.
fn decode<T: std::str::FromStr<Err = UnknownName>>(
    table: &'static str,
    column: &'static str,
    value: String,
) -> Result<T> {
    value.parse().map_err(|source| StoreError::UnknownName {
        table,
        column,
        source: Box::new(source),
    })
}

fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| corrupt(format!("id {s:?}: {e}")))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn parse_optional_uuid(s: Option<String>) -> Result<Option<Uuid>> {
    s.as_deref().map(parse_uuid).transpose()
}

fn parse_json(what: &str, s: &str) -> Result<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| corrupt(format!("{what}: {e}")))
}

macro_rules! sql_store {
    ($store:ty, $backend:literal, $migrator:expr) => {
        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> Result<()> {
                $migrator.run(&self.writer).await.map_err(StoreError::Migrate)
            }

            async fn close(&self) {
                self.pool.close().await;
                self.writer.close().await;
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn get_meta(&self, key: &str) -> Result<Option<String>> {
                let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.try_get("value")).transpose()?)
            }

            async fn init_meta(&self, key: &str, value: &str) -> Result<String> {
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&self.writer)
                    .await?;
                self.get_meta(key)
                    .await?
                    .ok_or_else(|| corrupt(format!("meta {key} vanished")))
            }

            async fn create_tenant(&self, new: &NewTenant) -> Result<()> {
                let t = &new.tenant;
                let id = t.id.to_string();
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO tenants (id, name, slug, plan, domain, status, config_version, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
                )
                .bind(&id)
                .bind(&t.name)
                .bind(&t.slug)
                .bind(t.plan.as_str())
                .bind(&t.domain)
                .bind(t.status.as_str())
                .bind(t.created_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO tenant_users (id, tenant_id, email, role, password_hash, \
                     must_change_password, created_at) VALUES ($1, $2, $3, 'admin', $4, $5, $6)",
                )
                .bind(new.admin_user_id.to_string())
                .bind(&id)
                .bind(&t.admin_email)
                .bind(&new.admin_password_hash)
                .bind(true)
                .bind(t.created_at)
                .execute(&mut *tx)
                .await?;
                for key in &new.api_keys {
                    Self::insert_api_key(&mut tx, &id, key, t.created_at).await?;
                }
                sqlx::query(
                    "INSERT INTO tenant_branding (tenant_id, company_name, primary_color, \
                     secondary_color, logo_url) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&id)
                .bind(&t.branding.company_name)
                .bind(&t.branding.primary_color)
                .bind(&t.branding.secondary_color)
                .bind(&t.branding.logo_url)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO tenant_features (tenant_id, enable_nft, enable_bonds, \
                     enable_fractionalization, enable_enterprise, enable_custom_development) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&id)
                .bind(t.features.nft)
                .bind(t.features.bonds)
                .bind(t.features.fractionalization)
                .bind(t.features.enterprise)
                .bind(t.features.custom_development)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO tenant_usage (tenant_id, users, storage_bytes, api_requests, \
                     updated_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&id)
                .bind(to_i64(t.usage.users))
                .bind(to_i64(t.usage.storage_bytes))
                .bind(to_i64(t.usage.api_requests))
                .bind(t.created_at)
                .execute(&mut *tx)
                .await?;
                for (name, sealed) in &new.secrets {
                    sqlx::query(
                        "INSERT INTO tenant_secrets (tenant_id, name, sealed, created_at) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&id)
                    .bind(name)
                    .bind(sealed)
                    .bind(t.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
                Self::insert_outbox(&mut tx, Some(&id), MessageKind::Welcome, &new.welcome, t.created_at)
                    .await?;
                sqlx::query(
                    "INSERT INTO tenant_notification_channels (tenant_id, display, updated_at) \
                     VALUES ($1, $2, $3)",
                )
                .bind(&id)
                .bind(DEFAULT_CHANNELS_DISPLAY)
                .bind(t.created_at)
                .execute(&mut *tx)
                .await?;
                let snap = with_notifications(
                    snapshot(t.plan, &t.domain, &t.features, &t.branding),
                    Some(parse_json("channel display", DEFAULT_CHANNELS_DISPLAY)?),
                );
                Self::insert_history(&mut tx, &id, 1, t.created_at, &new.actor, "provisioned", &snap)
                    .await?;
                tx.commit().await?;
                self.config_committed.notify_one();
                Ok(())
            }

            async fn get_tenant(&self, id: Uuid) -> Result<Option<Tenant>> {
                // One round trip: the tenant row once per active key.
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {TENANT_FIELDS}, {ACTIVE_KEYS} {TENANT_FROM} {ACTIVE_KEYS_JOIN} \
                     WHERE t.id = $1 ORDER BY k.kind DESC"
                ));
                let rows = sqlx::query(sql)
                    .bind(id.to_string())
                    .fetch_all(&self.pool)
                    .await?;
                Self::tenant_with_keys(&rows)
            }

            async fn find_tenant_id(&self, slug: &str) -> Result<Option<Uuid>> {
                let row = sqlx::query("SELECT id FROM tenants WHERE slug = $1")
                    .bind(slug)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| parse_uuid(&r.try_get::<String, _>("id")?)).transpose()
            }

            async fn active_slugs(&self) -> Result<Vec<String>> {
                let rows = sqlx::query("SELECT slug FROM tenants WHERE status = 'active'")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| Ok(r.try_get("slug")?)).collect()
            }

            async fn list_tenants(
                &self,
                limit: u32,
                after: Option<Uuid>,
                status: Option<TenantStatus>,
            ) -> Result<Vec<Tenant>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {TENANT_FIELDS} {TENANT_FROM} WHERE t.id > $1 AND ($2 = '' OR t.status = $2) \
                     ORDER BY t.id LIMIT $3"
                ));
                let rows = sqlx::query(sql)
                    .bind(after.map(|a| a.to_string()).unwrap_or_default())
                    .bind(status.map(|s| s.as_str()).unwrap_or_default())
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                let mut tenants = rows
                    .iter()
                    .map(Self::tenant_from_row)
                    .collect::<Result<Vec<_>>>()?;
                if let (Some(first), Some(last)) = (tenants.first(), tenants.last()) {
                    let keys = sqlx::query(
                        "SELECT tenant_id, kind, display_prefix, created_at FROM api_keys \
                         WHERE revoked_at IS NULL AND tenant_id >= $1 AND tenant_id <= $2 \
                         ORDER BY kind DESC",
                    )
                    .bind(first.id.to_string())
                    .bind(last.id.to_string())
                    .fetch_all(&self.pool)
                    .await?;
                    let mut by_tenant = std::collections::HashMap::<String, Vec<ApiKeyInfo>>::new();
                    for row in &keys {
                        by_tenant
                            .entry(row.try_get("tenant_id")?)
                            .or_default()
                            .push(Self::key_from_row(row)?);
                    }
                    for tenant in &mut tenants {
                        tenant.api_keys = by_tenant.remove(&tenant.id.to_string()).unwrap_or_default();
                    }
                }
                Ok(tenants)
            }

            async fn update_config(&self, id: Uuid, change: &ConfigChange) -> Result<i64> {
                let id = id.to_string();
                let at = now();
                let mut tx = self.begin_write().await?;
                let row = sqlx::query(
                    "UPDATE tenants SET plan = $2, domain = $3, updated_at = $4, \
                     config_version = config_version + 1 \
                     WHERE id = $1 AND config_version = $5 RETURNING config_version",
                )
                .bind(&id)
                .bind(change.plan.as_str())
                .bind(&change.domain)
                .bind(at)
                .bind(change.base_version)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    let exists = sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
                        .bind(&id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                    // Roll back now: a dropped transaction is only rolled back
                    // when its connection is next used, holding its locks until then.
                    tx.rollback().await?;
                    return Err(if exists {
                        StoreError::Stale
                    } else {
                        StoreError::NotFound
                    });
                };
                let version: i64 = row.try_get("config_version")?;
                let f = &change.features;
                sqlx::query(
                    "UPDATE tenant_features SET enable_nft = $2, enable_bonds = $3, \
                     enable_fractionalization = $4, enable_enterprise = $5, \
                     enable_custom_development = $6 WHERE tenant_id = $1",
                )
                .bind(&id)
                .bind(f.nft)
                .bind(f.bonds)
                .bind(f.fractionalization)
                .bind(f.enterprise)
                .bind(f.custom_development)
                .execute(&mut *tx)
                .await?;
                let b = &change.branding;
                sqlx::query(
                    "UPDATE tenant_branding SET company_name = $2, primary_color = $3, \
                     secondary_color = $4, logo_url = $5 WHERE tenant_id = $1",
                )
                .bind(&id)
                .bind(&b.company_name)
                .bind(&b.primary_color)
                .bind(&b.secondary_color)
                .bind(&b.logo_url)
                .execute(&mut *tx)
                .await?;
                let snap = with_notifications(
                    snapshot(change.plan, &change.domain, f, b),
                    Self::channels_display(&mut tx, &id).await?,
                );
                Self::insert_history(&mut tx, &id, version, at, &change.actor, &change.summary, &snap)
                    .await?;
                tx.commit().await?;
                self.config_committed.notify_one();
                Ok(version)
            }

            async fn config_history(&self, id: Uuid) -> Result<Vec<ConfigVersion>> {
                let rows = sqlx::query(
                    "SELECT version, changed_at, actor, change, snapshot \
                     FROM tenant_config_history WHERE tenant_id = $1 ORDER BY version",
                )
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let snapshot: String = row.try_get("snapshot")?;
                        Ok(ConfigVersion {
                            version: row.try_get("version")?,
                            changed_at: row.try_get("changed_at")?,
                            actor: row.try_get("actor")?,
                            change: row.try_get("change")?,
                            snapshot: serde_json::from_str(&snapshot).map_err(corrupt)?,
                        })
                    })
                    .collect()
            }

            async fn set_usage(&self, id: Uuid, usage: Usage) -> Result<()> {
                let done = sqlx::query(
                    "UPDATE tenant_usage SET users = $2, storage_bytes = $3, api_requests = $4, \
                     updated_at = $5 WHERE tenant_id = $1",
                )
                .bind(id.to_string())
                .bind(to_i64(usage.users))
                .bind(to_i64(usage.storage_bytes))
                .bind(to_i64(usage.api_requests))
                .bind(now())
                .execute(&self.writer)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn deprovision(&self, id: Uuid, retain_until: DateTime<Utc>) -> Result<()> {
                let id = id.to_string();
                let at = now();
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE tenants SET status = 'deprovisioned', updated_at = $2, \
                     deprovisioned_at = COALESCE(deprovisioned_at, $2), \
                     retain_until = COALESCE(retain_until, $3) WHERE id = $1",
                )
                .bind(&id)
                .bind(at)
                .bind(retain_until)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = $2 WHERE tenant_id = $1 AND revoked_at IS NULL",
                )
                .bind(&id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn purge(&self, id: Uuid) -> Result<()> {
                let id = id.to_string();
                let mut tx = self.begin_write().await?;
                for table in TENANT_TABLES {
                    let sql = sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE tenant_id = $1"));
                    sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
                }
                let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                tx.commit().await?;
                Ok(())
            }

            async fn expired_tenants(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>> {
                let rows = sqlx::query(
                    "SELECT id, retain_until FROM tenants \
                     WHERE status = 'deprovisioned' AND retain_until IS NOT NULL",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut expired = Vec::new();
                for row in &rows {
                    let until: DateTime<Utc> = row.try_get("retain_until")?;
                    if until <= now {
                        expired.push(parse_uuid(&row.try_get::<String, _>("id")?)?);
                    }
                }
                Ok(expired)
            }
        }
    };
}

/// The sqlx database type behind a store type.
pub(crate) trait HasDb {
    type Db: sqlx::Database;
}
impl HasDb for SqliteStore {
    type Db = sqlx::Sqlite;
}
impl HasDb for PgStore {
    type Db = sqlx::Postgres;
}
pub(crate) type DbOf<S> = <S as HasDb>::Db;

sql_store!(SqliteStore, "sqlite", sqlx::migrate!("./migrations/sqlite"));
sql_store!(PgStore, "postgres", sqlx::migrate!("./migrations/postgres"));
