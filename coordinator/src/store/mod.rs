//! The tenant registry's storage: one trait, backed by SQLite (the embedded
//! default) or PostgreSQL, with migrations embedded in the binary.

mod deploy;
mod monitor;
mod sql;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use knowton_common::health::{Channel, MessageKind};
use knowton_common::{Branding, Features, Plan, TenantStatus, Usage};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use crate::credentials::KeyKind;

pub use deploy::{DeployStore, DeploymentEvent, DeploymentRow, DeploymentSettings, Phase};
pub use monitor::{
    ADMIN_ACTOR, AlertEventRow, AlertFilter, AlertRow, AlertState, AlertWrite, CleanupCounts,
    HealthSummary, MonitorStore, Rollup, Silence,
};
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
}

impl Unique {
    /// Each one's constraint name (PostgreSQL reports it) and its columns as
    /// SQLite names them (SQLite reports `UNIQUE constraint failed: <columns>`
    /// and no constraint name).
    const ALL: [(Unique, &'static str, &'static str); 3] = [
        (Unique::TenantSlug, "tenants_slug_key", "tenants.slug"),
        (Unique::TenantDomain, "tenants_domain_key", "tenants.domain"),
        (
            Unique::OutboxIdempotencyKey,
            "outbox_idempotency_key",
            "outbox.idempotency_key",
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

/// A notification to enqueue in the outbox: one message to one recipient
/// on one channel (`email`, `webhook`, `slack`), delivered and retried on
/// its own. `recipient` is what may be shown (an address, or a redacted
/// URL); where to deliver is inside the sealed body.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: Uuid,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub sealed_body: String,
    /// Unique; receivers see it and may deduplicate on it.
    pub idempotency_key: String,
    /// When what caused it happened (for alerts: the breaching result's
    /// arrival), if known.
    pub caused_at: Option<DateTime<Utc>>,
}

/// Where an outbox row is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet; attempted again at `next_attempt_at`.
    Pending,
    /// A receiver accepted it.
    Delivered,
    /// Dead-lettered: a permanent error, or not delivered within the
    /// maximum age.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryState {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(format!(
                "unknown delivery state {other:?}: expected pending, delivered or failed"
            )),
        }
    }
}

/// An outbox row as an operator may see it: never the body.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    /// The tenant's slug, while the tenant exists.
    pub tenant_slug: Option<String>,
    pub kind: MessageKind,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub idempotency_key: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// A due outbox row leased to this coordinator for one delivery attempt.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub kind: MessageKind,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub sealed_body: String,
    pub idempotency_key: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub caused_at: Option<DateTime<Utc>>,
}

/// What became of a delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Try again at `at`.
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    /// Dead-letter it.
    Failed {
        error: String,
    },
}

/// A tenant's own notification channels as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChannels {
    /// `None`: the default, the tenant admin's address.
    pub emails: Option<Vec<String>>,
    /// Sealed JSON of the webhook's URL and secret.
    pub sealed_webhook: Option<String>,
    /// Sealed Slack incoming-webhook URL.
    pub sealed_slack: Option<String>,
    /// The redacted view shown by the API and recorded in the history.
    pub display: serde_json::Value,
    pub updated_at: DateTime<Utc>,
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
pub trait Store: MonitorStore + DeployStore + std::fmt::Debug + Send + Sync + 'static {
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

    /// Writes `messages` to the outbox in one transaction, due at once.
    ///
    /// A change that causes notifications must write them in the same
    /// transaction as the change itself (as `create_tenant` does with the
    /// welcome e-mail): a store method for that change inserts its rows with
    /// the SQL of this one (see `insert_outbox` in `sql.rs`), and the caller
    /// pokes [`crate::notify::Wakeup`] after the commit.
    async fn enqueue(
        &self,
        tenant: Option<Uuid>,
        kind: MessageKind,
        messages: &[OutboxMessage],
    ) -> Result<()>;
    /// Leases up to `limit` pending rows of `channel` that are due at `now`
    /// and not leased by anyone else, until `lease_until`. Safe with several
    /// coordinators on one database: a row goes to one of them.
    async fn claim_due(
        &self,
        channel: Channel,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>>;
    /// When the next pending row becomes due (or its lease runs out), for
    /// the channels that can be delivered (`email`: whether SMTP is configured).
    async fn next_due(&self, email: bool, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>>;
    /// Records the outcome of an attempt on a leased row, counts the
    /// attempt and releases the lease. A row no longer pending is left alone.
    async fn record_delivery(
        &self,
        id: Uuid,
        outcome: &DeliveryOutcome,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Outbox rows ordered by id (oldest first), after `after` if given.
    async fn list_outbox(
        &self,
        state: Option<DeliveryState>,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<OutboxEntry>>;

    /// The tenant's own notification channels, if it has set any.
    async fn notification_channels(&self, tenant: Uuid) -> Result<Option<StoredChannels>>;
    /// Replaces the tenant's notification channels and records a history
    /// version; returns the new version.
    async fn set_notification_channels(
        &self,
        tenant: Uuid,
        channels: &StoredChannels,
        actor: &str,
        summary: &str,
    ) -> Result<i64>;
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

/// How every SQLite connection is set up. `synchronous = FULL`: in WAL
/// mode `NORMAL` may lose the last commits on power loss (they are not yet
/// fsynced), and a provisioning whose keys were shown, or an alert whose
/// notification was sent, must not be forgotten.
fn sqlite_options(opts: SqliteConnectOptions) -> SqliteConnectOptions {
    opts.journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
}

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
mod tests {
    use super::*;

    /// Hardening review, finding 12: commits were `synchronous = NORMAL`.
    #[tokio::test]
    async fn sqlite_commits_are_synced_before_they_return() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("k.db").display());
        let Backend::Sqlite(opts) = Backend::from_url(&url).unwrap() else {
            panic!("not sqlite");
        };
        let mut conn = sqlx::SqliteConnection::connect_with(&sqlite_options(opts))
            .await
            .unwrap();
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            (mode.as_str(), sync),
            ("wal", 2),
            "WAL with synchronous = FULL (2)"
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url_credentials("postgres://app:s3cret@db:5432/knowton"),
            "postgres://app:***@db:5432/knowton"
        );
        assert_eq!(
            redact_url_credentials("sqlite:knowton.db"),
            "sqlite:knowton.db"
        );
        assert_eq!(
            redact_url_credentials("postgres://app:p@ss@db/knowton"),
            "postgres://app:***@db/knowton"
        );
        assert_eq!(
            redact_url_credentials("sqlite:knowton.db?mode=rwc"),
            "sqlite:knowton.db?mode=rwc"
        );
        // Passwords and tokens in the query string, and a fragment.
        assert_eq!(
            redact_url_credentials(
                "postgres://db:5432/knowton?user=app&password=s3cret&sslmode=require&sslpassword=k3y"
            ),
            "postgres://db:5432/knowton?user=app&password=***&sslmode=require&sslpassword=***"
        );
        assert_eq!(
            redact_url_credentials("smtp://mail.example.com?auth_token=t0ken&empty=&s3cret#frag"),
            "smtp://mail.example.com?auth_token=***&empty=&***#***"
        );
        // An @ in the query is not taken for the user's.
        assert_eq!(
            redact_url_credentials("postgres://db/k?user=a@b&Password=x:y@z"),
            "postgres://db/k?user=a@b&Password=***"
        );
    }

    #[test]
    fn no_secret_survives_redaction() {
        for secret in ["s3cret", "hunter2"] {
            for url in [
                format!("postgres://u:{secret}@h/d"),
                format!("postgres://h/d?password={secret}"),
                format!("postgres://h/d?PASSWORD={secret}&sslmode=disable"),
                format!("postgres://h/d?pass%77ord={secret}"),
                format!("smtps://h?{secret}"),
                format!("smtp://h/#{secret}"),
            ] {
                assert!(!redact_url_credentials(&url).contains(secret), "{url}");
            }
        }
    }

    proptest::proptest! {
        /// A password, a query value not known to be harmless, or a
        /// fragment never survives, wherever it is.
        #[test]
        fn redaction_hides_every_credential(
            secret in "[A-Za-z0-9]{12,24}",
            name in "[a-z_]{1,12}",
            user in "[a-z]{1,8}",
            host in "[a-z]{1,10}",
        ) {
            proptest::prop_assume!(!HARMLESS_PARAMETERS.contains(&name.as_str()));
            for url in [
                format!("postgres://{user}:{secret}@{host}:5432/db"),
                format!("postgres://{host}/db?sslmode=require&{name}={secret}"),
                format!("smtps://{user}@{host}?{name}={secret}&port=465"),
                format!("smtp://{host}/#{secret}"),
            ] {
                let shown = redact_url_credentials(&url);
                proptest::prop_assert!(!shown.contains(&secret), "{} shown as {}", url, shown);
                proptest::prop_assert!(shown.contains(&host));
            }
        }

        /// Never panics, whatever the text.
        #[test]
        fn redaction_takes_any_text(url in "\\PC{0,80}") {
            let _ = redact_url_credentials(&url);
        }
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
