//! The tenant registry's storage: one [`Store`] trait, backed by SQLite
//! (the embedded default) or PostgreSQL, with migrations embedded in the
//! binary.
//!
//! # Layout
//! - this module: tenants, their configuration history and usage, and
//!   [`Backend`] (how to reach the database).
//! - `keys`: API keys and sealed deployment secrets ([`KeyStore`]).
//! - `outbox`: notifications waiting to be delivered and each tenant's
//!   channels ([`OutboxStore`]).
//! - `monitor`: alerts, silences, rollups, thresholds ([`MonitorStore`]).
//! - `deploy`: each tenant's deployment and its events ([`DeployStore`]).
//! - `lease`: leadership among replicas and the fence of leader-only
//!   writes ([`LeaseStore`]).
//! - `changes`: what one replica changes that the others must apply at
//!   once ([`ChangeStore`]).
//! - `ratelimit`: each tenant's request budget, shared by the replicas
//!   ([`RateLimitStore`]).
//! - `backup`: backup runs, their progress and outcome, and the queue of
//!   configuration versions to back up ([`BackupStore`]).
//! - `sql`: the SQL of all of them, written once for both backends.

mod backup;
mod changes;
mod deploy;
mod keys;
mod lease;
mod monitor;
mod outbox;
mod ratelimit;
mod sql;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use knowton_common::{Branding, Features, Plan, TenantStatus, Usage};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use crate::credentials::KeyKind;

pub use backup::{
    BackupKind, BackupRun, BackupStore, CommittedConfig, ConfigSettings, FailureStreak, LastBackup,
    LiveRestore, RestoreJob, RestoreStatus, RunProgress, RunStatus, RunTrigger, SealedChannels,
    Verification,
};
pub use changes::{Change, ChangeListener, ChangeStore, MAX_CHANGE_BYTES};
pub use deploy::{DeployStore, DeploymentEvent, DeploymentRow, DeploymentSettings, Phase};
pub use keys::{KeyOwner, KeyStore};
pub use lease::{Fence, LeaseStore, MAX_LISTED_AGENTS, ReplicaBeat, ReplicaRow, Term};
pub use monitor::{
    ADMIN_ACTOR, AlertEventRow, AlertFilter, AlertRow, AlertState, AlertWrite, CleanupCounts,
    HealthSummary, MonitorStore, Rollup, Silence,
};
pub use outbox::{
    ClaimedMessage, DeliveryOutcome, DeliveryState, OutboxEntry, OutboxMessage, OutboxStore,
    StoredChannels,
};
pub use ratelimit::{RateLimitStore, Taken};
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
    #[error("the {0} is already taken")]
    Conflict(Unique),
    #[error("tenant not found")]
    NotFound,
    #[error("the row was changed by someone else meanwhile")]
    Stale,
    #[error(
        "the write was fenced: it was made as leader in epoch {held}, but the lease is in {}",
        current.map_or("no epoch".to_owned(), |e| format!("epoch {e}"))
    )]
    Fenced { held: i64, current: Option<i64> },
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("stored row is corrupt: {table}.{column} holds {:?}", source.value)]
    UnknownName {
        table: &'static str,
        column: &'static str,
        #[source]
        source: Box<knowton_common::health::UnknownName>,
    },
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
}

/// A uniqueness a write can run into that callers act on (the others
/// are failed queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unique {
    /// `tenants_slug_key`: another tenant has the slug.
    TenantSlug,
    /// `tenants_domain_key`: another tenant has the domain.
    TenantDomain,
    /// `outbox_idempotency_key`: a message with the key was enqueued before.
    OutboxIdempotencyKey,
    /// `backup_runs_one_running`: a run of that tenant and kind is running.
    BackupRunning,
    /// `restore_jobs_one_running`: a restore into that tenant is running.
    RestoreRunning,
}

impl Unique {
    /// Each one's constraint name (PostgreSQL reports it) and its columns as
    /// SQLite names them (SQLite reports `UNIQUE constraint failed: <columns>`
    /// and no constraint name).
    const ALL: [(Unique, &'static str, &'static str); 5] = [
        (Unique::TenantSlug, "tenants_slug_key", "tenants.slug"),
        (Unique::TenantDomain, "tenants_domain_key", "tenants.domain"),
        (
            Unique::OutboxIdempotencyKey,
            "outbox_idempotency_key",
            "outbox.idempotency_key",
        ),
        (
            Unique::BackupRunning,
            "backup_runs_one_running",
            "backup_runs.tenant_id, backup_runs.kind",
        ),
        (
            Unique::RestoreRunning,
            "restore_jobs_one_running",
            "restore_jobs.tenant_id",
        ),
    ];

    /// The constraint a database's unique violation names, if it is one of these.
    fn of(db: &dyn sqlx::error::DatabaseError) -> Option<Unique> {
        if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
            return None;
        }
        let sqlite_columns = db.message().strip_prefix("UNIQUE constraint failed: ");
        Unique::ALL
            .into_iter()
            .find(|(_, name, columns)| {
                db.constraint() == Some(*name) || sqlite_columns == Some(*columns)
            })
            .map(|(unique, _, _)| unique)
    }
}

impl std::fmt::Display for Unique {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unique::TenantSlug => "tenant slug",
            Unique::TenantDomain => "tenant domain",
            Unique::OutboxIdempotencyKey => "outbox idempotency key",
            Unique::BackupRunning => "running backup of this kind",
            Unique::RestoreRunning => "running restore of this tenant",
        })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && let Some(unique) = Unique::of(db.as_ref())
        {
            return StoreError::Conflict(unique);
        }
        StoreError::Query(err)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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

/// A change to a tenant's configuration, recorded as a new history version.
#[derive(Debug, Clone)]
pub struct ConfigChange {
    /// The configuration version the change was computed from: the write
    /// is refused with [`StoreError::Stale`] if the tenant moved on since.
    pub base_version: i64,
    pub plan: Plan,
    pub features: Features,
    pub branding: Branding,
    pub domain: String,
    pub actor: String,
    pub summary: String,
}

/// The tenant registry.
#[async_trait]
pub trait Store:
    MonitorStore
    + DeployStore
    + OutboxStore
    + KeyStore
    + LeaseStore
    + ChangeStore
    + RateLimitStore
    + BackupStore
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
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
    /// Applies `change` and appends it to the history; returns the new
    /// version. `Stale` if the tenant's version is no longer
    /// `change.base_version` (nothing is written).
    async fn update_config(&self, id: Uuid, change: &ConfigChange) -> Result<i64>;
    async fn config_history(&self, id: Uuid) -> Result<Vec<ConfigVersion>>;
    async fn set_usage(&self, id: Uuid, usage: Usage) -> Result<()>;

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
            url: redact_url_credentials(url),
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
                let opts = sqlite_options(opts);
                let pool = SqlitePoolOptions::new()
                    .max_connections(SQLITE_READERS)
                    .connect_with(opts.clone())
                    .await
                    .map_err(StoreError::Connect)?;
                // As long as a writer waited on the busy timeout before.
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(SQLITE_BUSY_TIMEOUT)
                    .connect_with(opts)
                    .await
                    .map_err(StoreError::Connect)?;
                Arc::new(SqliteStore::new(pool, writer))
            }
            Backend::Postgres(opts) => {
                let opts = postgres_options(opts);
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

/// The SQLite read pool's connections, beside the one that writes. Each
/// is a worker thread with its own page cache and statement cache; the
/// machine has few cores, so more connections buy waiting, not throughput.
const SQLITE_READERS: u32 = 3;

/// How long a write waits for the file another process holds locked (and
/// for its turn on the write connection).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How every SQLite connection is set up. `synchronous = FULL`: in WAL
/// mode `NORMAL` may lose the last commits on power loss (they are not yet
/// fsynced), and a provisioning whose keys were shown, or an alert whose
/// notification was sent, must not be forgotten.
fn sqlite_options(opts: SqliteConnectOptions) -> SqliteConnectOptions {
    opts.journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .pragma("cache_size", format!("-{SQLITE_CACHE_KIB}"))
}

/// Each SQLite connection's page cache, in KiB (SQLite's default is 2,000).
/// A page it does not hold is read again from the operating system's
/// cache, which costs microseconds; held, it is resident memory of the
/// coordinator, once per connection.
const SQLITE_CACHE_KIB: u32 = 512;

/// How every PostgreSQL session is set up. A replica paused in the middle
/// of a leader's write (SIGSTOP, a frozen VM) keeps its transaction open,
/// and with it the share lock on the lease row that fences the write: no
/// other replica could take the lease until it resumed. The server ends
/// such a transaction after [`IDLE_IN_TRANSACTION`]; every transaction of
/// the coordinator only runs statements, so a healthy one is never idle
/// that long.
pub fn postgres_options(opts: PgConnectOptions) -> PgConnectOptions {
    let idle = format!("{}ms", IDLE_IN_TRANSACTION.as_millis());
    opts.options([("idle_in_transaction_session_timeout", idle.as_str())])
}

/// How long a session may sit idle inside a transaction: a leader paused
/// inside a write delays a take-over by at most this (or the lease, if
/// longer).
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);

/// The url with every credential replaced by `***`, for error messages
/// and logs: the password of its user, the value of every query parameter
/// not known to be harmless (`?password=`, `?token=`, `?sslpassword=`, a
/// bare `?s3cret`), and any fragment. Scheme, user, host, port and path
/// stay, so a database or SMTP URL remains recognisable. (Notification
/// URLs, whose path may be the credential, are shown by
/// [`crate::notify::channels::redact_url_to_host`] instead: host only.)
pub fn redact_url_credentials(url: &str) -> String {
    let (url, fragment) = match url.split_once('#') {
        Some((url, _)) => (url, true),
        None => (url, false),
    };
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_password(base);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                let value = pair.split_once('=').map_or(pair, |(_, value)| value);
                if value.is_empty() || HARMLESS_PARAMETERS.contains(&name) {
                    pair.to_owned()
                } else if pair.contains('=') {
                    format!("{name}=***")
                } else {
                    "***".to_owned()
                }
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if fragment {
        out.push_str("#***");
    }
    out
}

/// Query parameters of database and SMTP URLs whose values are shown.
const HARMLESS_PARAMETERS: &[&str] = &[
    "application_name",
    "cache",
    "connect_timeout",
    "dbname",
    "host",
    "hostaddr",
    "immutable",
    "mode",
    "port",
    "sslcert",
    "sslmode",
    "sslrootcert",
    "statement-cache-capacity",
    "target_session_attrs",
    "user",
];

/// `scheme://user:pass@host…` with the password replaced.
fn redact_password(base: &str) -> String {
    let Some(scheme) = base.find("://") else {
        return base.to_owned();
    };
    let authority_start = scheme + 3;
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let authority = &base[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return base.to_owned();
    };
    match authority[..at].split_once(':') {
        Some((user, _)) => format!(
            "{}{user}:***{}",
            &base[..authority_start],
            &base[authority_start + at..]
        ),
        None => base.to_owned(),
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

/// The redacted view of the notification channels every tenant starts
/// with: its admin's address, no webhook, no Slack.
pub const DEFAULT_CHANNELS_DISPLAY: &str =
    r#"{"emails":null,"slackWebhookUrl":null,"webhookSecretSet":false,"webhookUrl":null}"#;

/// `snapshot` with the tenant's redacted notification channels, if it has any.
pub fn with_notifications(
    mut snapshot: serde_json::Value,
    notifications: Option<serde_json::Value>,
) -> serde_json::Value {
    if let (Some(map), Some(display)) = (snapshot.as_object_mut(), notifications) {
        map.insert("notifications".to_owned(), display);
    }
    snapshot
}

#[cfg(test)]
mod tests;
