//! The tenant registry's storage: one trait, backed by SQLite (the embedded
//! default) or PostgreSQL, with migrations embedded in the binary.

mod sql;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use knowton_common::{Branding, Features, Plan, TenantStatus, Usage};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

pub use sql::{PgStore, SqliteStore};

/// Errors of the store, named after what failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database url {url:?}: expected sqlite:PATH or postgres://…")]
    InvalidUrl { url: String },
    #[error("failed to connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("failed to apply database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("{field} is already taken")]
    Conflict { field: &'static str },
    #[error("tenant not found")]
    NotFound,
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && db.is_unique_violation()
        {
            let hint = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
            for field in ["slug", "domain"] {
                if hint.contains(field) {
                    return StoreError::Conflict { field };
                }
            }
        }
        StoreError::Query(err)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which kind of API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Production,
    Development,
}

impl KeyKind {
    pub const ALL: [KeyKind; 2] = [KeyKind::Production, KeyKind::Development];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Production => "production",
            KeyKind::Development => "development",
        }
    }

    /// The visible prefix of keys of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Production => "kt_live_",
            KeyKind::Development => "kt_test_",
        }
    }
}

impl FromStr for KeyKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "production" => Ok(KeyKind::Production),
            "development" => Ok(KeyKind::Development),
            other => Err(format!(
                "unknown key kind {other:?}: expected production or development"
            )),
        }
    }
}

/// A tenant as the registry knows it (never with a secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub plan: Plan,
    pub domain: String,
    pub status: TenantStatus,
    pub admin_email: String,
    pub branding: Branding,
    pub features: Features,
    pub usage: Usage,
    pub api_keys: Vec<ApiKeyInfo>,
    pub config_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deprovisioned_at: Option<DateTime<Utc>>,
    pub retain_until: Option<DateTime<Utc>>,
}

/// What may be shown of an API key: its kind and display prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub kind: KeyKind,
    pub display_prefix: String,
    pub created_at: DateTime<Utc>,
}

/// A hashed API key ready to be stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: Uuid,
    pub kind: KeyKind,
    pub hash: String,
    pub display_prefix: String,
}

/// A notification to enqueue in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: Uuid,
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub sealed_body: String,
    pub idempotency_key: String,
}

/// One entry of a tenant's configuration history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigVersion {
    pub version: i64,
    pub changed_at: DateTime<Utc>,
    pub actor: String,
    pub change: String,
    pub snapshot: serde_json::Value,
}

/// Everything provisioning writes, in one transaction.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub tenant: Tenant,
    pub admin_user_id: Uuid,
    pub admin_password_hash: String,
    pub api_keys: Vec<NewApiKey>,
    /// `(name, sealed value)`
    pub secrets: Vec<(String, String)>,
    pub welcome: OutboxMessage,
    pub actor: String,
}

/// The owner of a valid, unrevoked API key, loaded with the key so that a
/// tenant-key request costs one round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyOwner {
    pub kind: KeyKind,
    pub display_prefix: String,
    /// The key's tenant as it was when the key was checked.
    pub tenant: Tenant,
}

/// A change to a tenant's configuration, recorded as a new history version.
#[derive(Debug, Clone)]
pub struct ConfigChange {
    pub plan: Plan,
    pub features: Features,
    pub branding: Branding,
    pub domain: String,
    pub actor: String,
    pub summary: String,
}

/// The tenant registry.
#[async_trait]
pub trait Store: std::fmt::Debug + Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies the embedded migrations.
    async fn migrate(&self) -> Result<()>;
    /// Checks the database answers.
    async fn ping(&self) -> Result<()>;
    /// Closes the connections gracefully (on shutdown).
    async fn close(&self);
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;
    /// Sets `key` only if it has no value yet; returns the value now stored.
    async fn init_meta(&self, key: &str, value: &str) -> Result<String>;

    /// Writes a new tenant and everything that comes with it, atomically.
    async fn create_tenant(&self, new: &NewTenant) -> Result<()>;
    async fn get_tenant(&self, id: Uuid) -> Result<Option<Tenant>>;
    async fn find_tenant_id(&self, slug: &str) -> Result<Option<Uuid>>;
    /// The slugs of all active tenants.
    async fn active_slugs(&self) -> Result<Vec<String>>;
    /// Tenants ordered by id, after `after` if given.
    async fn list_tenants(
        &self,
        limit: u32,
        after: Option<Uuid>,
        status: Option<TenantStatus>,
    ) -> Result<Vec<Tenant>>;
    /// Applies `change` and appends it to the history; returns the new version.
    async fn update_config(&self, id: Uuid, change: &ConfigChange) -> Result<i64>;
    async fn config_history(&self, id: Uuid) -> Result<Vec<ConfigVersion>>;
    async fn set_usage(&self, id: Uuid, usage: Usage) -> Result<()>;

    async fn authenticate_key(&self, hash: &str) -> Result<Option<KeyOwner>>;
    /// Revokes the active key of `key.kind` and stores `key` in its place.
    async fn rotate_key(&self, tenant: Uuid, key: &NewApiKey) -> Result<()>;

    /// `(name, sealed value)` of the tenant's deployment secrets.
    async fn sealed_secrets(&self, tenant: Uuid) -> Result<Vec<(String, String)>>;

    /// Marks the tenant deprovisioned and revokes its keys; keeps its data.
    async fn deprovision(&self, id: Uuid, retain_until: DateTime<Utc>) -> Result<()>;
    /// Deletes every row of the tenant.
    async fn purge(&self, id: Uuid) -> Result<()>;
    /// Deprovisioned tenants whose retention has ended.
    async fn expired_tenants(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>>;
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

impl Backend {
    /// Parses `sqlite:PATH`, `sqlite://PATH` or `postgres://…`.
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = || StoreError::InvalidUrl {
            url: redact_url(url),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            PgConnectOptions::from_str(url)
                .map(Backend::Postgres)
                .map_err(|_| invalid())
        } else if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)
                .map(|o| Backend::Sqlite(o.create_if_missing(true)))
                .map_err(|_| invalid())
        } else {
            Err(invalid())
        }
    }

    /// The SQLite file, when this is SQLite.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            Backend::Sqlite(opts) => Some(opts.get_filename()),
            Backend::Postgres(_) => None,
        }
    }

    /// Connects and applies migrations.
    pub async fn open(self) -> Result<Arc<dyn Store>> {
        let store: Arc<dyn Store> = match self {
            Backend::Sqlite(opts) => {
                let opts = opts
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(opts)
                    .await
                    .map_err(StoreError::Connect)?;
                Arc::new(SqliteStore::new(pool))
            }
            Backend::Postgres(opts) => {
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await
                    .map_err(StoreError::Connect)?;
                Arc::new(PgStore::new(pool))
            }
        };
        store.migrate().await?;
        Ok(store)
    }
}

/// The url with any password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The current time at the precision both backends keep (microseconds).
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// The configuration a history version records.
pub fn snapshot(
    plan: Plan,
    domain: &str,
    features: &Features,
    branding: &Branding,
) -> serde_json::Value {
    serde_json::json!({
        "plan": plan,
        "domain": domain,
        "features": features,
        "branding": branding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/knowton"),
            "postgres://app:***@db:5432/knowton"
        );
        assert_eq!(redact_url("sqlite:knowton.db"), "sqlite:knowton.db");
    }

    #[test]
    fn backends_from_urls() {
        assert!(matches!(
            Backend::from_url("sqlite:x.db"),
            Ok(Backend::Sqlite(_))
        ));
        assert!(matches!(
            Backend::from_url("postgres://postgres@127.0.0.1/test"),
            Ok(Backend::Postgres(_))
        ));
        let err = Backend::from_url("mysql://u:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mysql://u:***@h/db"), "{err}");
    }
}
