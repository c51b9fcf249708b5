//! `serve` configuration: flags (each with an environment variable) and
//! their validation, which reports every bad value at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::backup::retention::Retention;
use crate::backup::{BackupArgs, BackupConfig};
use crate::deploy::config::{ClusterSource, DeployConfig, KubeArgs};
use crate::health::{AlertPolicy, EngineSettings};
use crate::leader::{LeaderArgs, LeaderSettings};
use crate::listen::{HttpArgs, HttpSettings};
use crate::notify::NotifySettings;
use crate::notify::config::NotifyArgs;
use crate::secrets::KeySource;
use crate::store::{Backend, redact_url_credentials};
use crate::tenant_data::{AdminUrl, TenantDataArgs};
use crate::tls::TlsFiles;

pub const DEFAULT_DATABASE_URL: &str = "sqlite:knowton.db";
pub const ADMIN_TOKEN_FILE: &str = "knowton-admin.token";
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Flags of `knowton-coordinator serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address of the REST API.
    #[arg(long, env = "KNOWTON_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// sqlite:PATH (embedded default, created on first start) or postgres://…
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// Key that seals secrets at rest: 32 bytes, base64. Prefer the env var.
    #[arg(long, env = "KNOWTON_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// File holding the secret key (base64, mode 0600). With SQLite and no
    /// key given, `<database>.key` beside the database is used, created on
    /// first start.
    #[arg(long, env = "KNOWTON_SECRET_KEY_FILE", conflicts_with = "secret_key")]
    pub secret_key_file: Option<PathBuf>,

    /// Operator token for the REST API (at least 16 characters).
    #[arg(long, env = "KNOWTON_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Where the admin token is read from, or written to (mode 0600) when no
    /// token is given. Default: knowton-admin.token beside the SQLite
    /// database, or in the working directory.
    #[arg(long, env = "KNOWTON_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,

    /// Days a deprovisioned tenant's data is kept.
    #[arg(long, env = "KNOWTON_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,

    /// Purge deprovisioned tenants once their retention has ended. Off by
    /// default: deleting data is never the default.
    #[arg(long, env = "KNOWTON_PURGE_EXPIRED", default_value_t = false)]
    pub purge_expired: bool,

    /// Seconds to let in-flight requests finish on shutdown.
    #[arg(long, env = "KNOWTON_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    /// Address of the agents' mutual-TLS gRPC listener. Listens only when
    /// certificates are configured (--tls-dir or --tls-ca/--tls-cert/--tls-key):
    /// there is no plaintext gRPC.
    #[arg(long, env = "KNOWTON_GRPC_ADDR", default_value = "127.0.0.1:8443")]
    pub grpc_addr: SocketAddr,

    /// Directory in the `certs init` layout: ca.pem, server.pem, server-key.pem.
    #[arg(long, env = "KNOWTON_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,

    /// CA that agent certificates must chain to (overrides --tls-dir's ca.pem).
    #[arg(long, env = "KNOWTON_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Server certificate (overrides --tls-dir's server.pem).
    #[arg(long, env = "KNOWTON_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// Server private key (overrides --tls-dir's server-key.pem).
    #[arg(long, env = "KNOWTON_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Seconds between checks of the TLS files for a rotation.
    #[arg(long, env = "KNOWTON_TLS_RELOAD_SECONDS", default_value_t = 10)]
    pub tls_reload_seconds: u64,

    /// Seconds an agent has to send its hello after connecting.
    #[arg(
        long,
        env = "KNOWTON_AGENT_HELLO_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub agent_hello_timeout_seconds: u64,

    /// Seconds of silence (no batch, no heartbeat) after which an agent stream is cut.
    #[arg(long, env = "KNOWTON_AGENT_IDLE_TIMEOUT_SECONDS", default_value_t = 30)]
    pub agent_idle_timeout_seconds: u64,

    /// Most probe results per second one agent stream may send; a faster
    /// agent is slowed down (its stream is read more slowly), not cut off.
    #[arg(
        long,
        env = "KNOWTON_AGENT_MAX_RESULTS_PER_SECOND",
        default_value_t = 50_000
    )]
    pub agent_max_results_per_second: u32,

    /// Notification channels and delivery (boxed: the flags are many).
    #[command(flatten)]
    pub notify: Box<NotifyArgs>,

    /// Tenant health evaluation and alerting.
    #[command(flatten)]
    pub alerting: AlertingArgs,

    /// Tenant deployments on Kubernetes.
    #[command(flatten)]
    pub kube: KubeArgs,

    /// Leadership among coordinator replicas.
    #[command(flatten)]
    pub leader: LeaderArgs,

    /// HTTP listeners: timeouts, connection limit, metrics.
    #[command(flatten)]
    pub http: HttpArgs,

    /// Tenants' own databases and files.
    #[command(flatten)]
    pub tenant_data: TenantDataArgs,

    /// Backups of tenants' data.
    #[command(flatten)]
    pub backup: BackupArgs,
}

/// Flags of health evaluation and alert life.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertingArgs {
    /// Results older than this many seconds do not count; a tenant whose
    /// pods all stop reporting for this long is down.
    #[arg(long, env = "KNOWTON_RESULT_MAX_AGE_SECONDS", default_value_t = 60)]
    pub result_max_age_seconds: u64,

    /// Consecutive evaluations within thresholds before an alert resolves.
    #[arg(long, env = "KNOWTON_ALERT_RESOLVE_AFTER", default_value_t = 2)]
    pub alert_resolve_after: u32,

    /// A check changing state more than this many times within the flap
    /// window is flapping (one notification, then quiet until stable).
    #[arg(long, env = "KNOWTON_ALERT_FLAP_CHANGES", default_value_t = 5)]
    pub alert_flap_changes: usize,

    /// The flap window, in seconds.
    #[arg(long, env = "KNOWTON_ALERT_FLAP_WINDOW_SECONDS", default_value_t = 600)]
    pub alert_flap_window_seconds: u64,

    /// Seconds between reminders of an open, unacknowledged alert (0: none).
    #[arg(long, env = "KNOWTON_ALERT_REMINDER_SECONDS", default_value_t = 14_400)]
    pub alert_reminder_seconds: u64,

    /// Also notify the resolution of alerts that fired while silenced.
    #[arg(
        long,
        env = "KNOWTON_NOTIFY_SILENCED_RESOLVED",
        default_value_t = false
    )]
    pub notify_silenced_resolved: bool,

    /// Seconds between re-evaluations of tenants without new results.
    #[arg(long, env = "KNOWTON_HEALTH_SWEEP_SECONDS", default_value_t = 5)]
    pub health_sweep_seconds: u64,
}

impl Default for AlertingArgs {
    fn default() -> Self {
        AlertingArgs {
            result_max_age_seconds: 60,
            alert_resolve_after: 2,
            alert_flap_changes: 5,
            alert_flap_window_seconds: 600,
            alert_reminder_seconds: 14_400,
            notify_silenced_resolved: false,
            health_sweep_seconds: 5,
        }
    }
}

impl AlertingArgs {
    fn validate(&self, errors: &mut Vec<String>) -> EngineSettings {
        if self.result_max_age_seconds == 0 {
            errors.push("--result-max-age-seconds must be at least 1".to_owned());
        }
        if self.alert_resolve_after == 0 {
            errors.push("--alert-resolve-after must be at least 1".to_owned());
        }
        if self.alert_flap_changes < 2 || self.alert_flap_window_seconds == 0 {
            errors.push(
                "--alert-flap-changes must be at least 2 and --alert-flap-window-seconds at least 1"
                    .to_owned(),
            );
        }
        if self.health_sweep_seconds == 0 {
            errors.push("--health-sweep-seconds must be at least 1".to_owned());
        }
        let seconds =
            |s: u64| chrono::TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        EngineSettings {
            policy: AlertPolicy {
                resolve_after: self.alert_resolve_after.max(1),
                flap_changes: self.alert_flap_changes,
                flap_window: seconds(self.alert_flap_window_seconds),
            },
            result_max_age: seconds(self.result_max_age_seconds),
            reminder_every: (self.alert_reminder_seconds > 0)
                .then(|| seconds(self.alert_reminder_seconds)),
            notify_silenced_resolved: self.notify_silenced_resolved,
            sweep_every: std::time::Duration::from_secs(self.health_sweep_seconds.max(1)),
        }
    }
}

impl ServeArgs {
    /// Defaults for tests and embedding: everything under `dir`.
    pub fn for_dir(dir: &Path) -> Self {
        ServeArgs {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: format!("sqlite:{}", dir.join("knowton.db").display()),
            secret_key: None,
            secret_key_file: None,
            admin_token: None,
            admin_token_file: None,
            retention_days: 30,
            purge_expired: false,
            shutdown_grace_seconds: 5,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_dir: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_reload_seconds: 10,
            agent_hello_timeout_seconds: 10,
            agent_idle_timeout_seconds: 30,
            agent_max_results_per_second: 50_000,
            notify: Box::default(),
            alerting: AlertingArgs::default(),
            kube: KubeArgs::default(),
            leader: LeaderArgs::default(),
            http: HttpArgs::default(),
            tenant_data: TenantDataArgs::default(),
            backup: BackupArgs {
                backup_retention: Retention::default().to_string(),
                backup_database_schedule: "0 2 * * *".to_owned(),
                backup_storage_schedule: "0 */6 * * *".to_owned(),
                backup_verify_schedule: "0 4 * * 0".to_owned(),
                ..BackupArgs::default()
            },
        }
    }
}

/// Where the admin token comes from. `Debug` never shows an inline token.
#[derive(Clone)]
pub enum AdminTokenSource {
    Inline(String),
    /// Read, or created with a random token if missing.
    File(PathBuf),
}

impl std::fmt::Debug for AdminTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminTokenSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            AdminTokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Validated `serve` configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub http_addr: SocketAddr,
    pub backend: Backend,
    pub database_display: String,
    pub key_source: KeySource,
    pub admin_token: AdminTokenSource,
    pub retention_days: u32,
    pub purge_expired: bool,
    pub shutdown_grace: std::time::Duration,
    /// The agent ingest listener, when certificates are configured.
    pub ingest: Option<IngestConfig>,
    /// Notification channels and delivery.
    pub notify: NotifySettings,
    /// Health evaluation and alert life.
    pub engine: EngineSettings,
    /// Tenant deployments.
    pub deploy: DeployConfig,
    /// Leadership among replicas.
    pub leader: LeaderSettings,
    /// HTTP listeners: timeouts, connection limit, metrics.
    pub http: HttpSettings,
    /// `--tenant-database-url`.
    pub tenant_database_url: Option<AdminUrl>,
    /// Where tenants' files live when there is no cluster (in a cluster,
    /// their volumes hold them, whatever this says).
    pub tenant_storage: PathBuf,
    /// Backups (`None`: off, with PostgreSQL and no `--backup-url`).
    pub backup: Option<BackupConfig>,
}

/// The agents' mutual-TLS gRPC listener.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub addr: SocketAddr,
    pub files: TlsFiles,
    pub reload_every: std::time::Duration,
    pub hello_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub max_results_per_second: u32,
}

/// Every invalid setting, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let backend = Backend::from_url(&args.database_url)
            .map_err(|e| errors.push(format!("--database-url: {e}")))
            .ok();
        let sqlite_dir = backend
            .as_ref()
            .and_then(Backend::sqlite_path)
            .map(|p| p.parent().unwrap_or(Path::new("")).to_path_buf());

        let key_source = match (&args.secret_key, &args.secret_key_file, &backend) {
            (Some(key), _, _) => Some(KeySource::Inline(key.clone())),
            (None, Some(file), _) => Some(KeySource::File(file.clone())),
            (None, None, Some(b)) => match b.sqlite_path() {
                Some(db) => Some(KeySource::FileCreate(db.with_extension("key"))),
                None => {
                    errors.push(
                        "--secret-key / KNOWTON_SECRET_KEY or --secret-key-file is required with PostgreSQL"
                            .to_owned(),
                    );
                    None
                }
            },
            (None, None, None) => None,
        };

        let admin_token = match (&args.admin_token, &args.admin_token_file) {
            (Some(token), _) => {
                if token.trim().len() < MIN_ADMIN_TOKEN_LEN {
                    errors.push(format!(
                        "--admin-token / KNOWTON_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LEN} characters"
                    ));
                }
                AdminTokenSource::Inline(token.trim().to_owned())
            }
            (None, Some(file)) => AdminTokenSource::File(file.clone()),
            (None, None) => AdminTokenSource::File(
                sqlite_dir
                    .clone()
                    .unwrap_or_default()
                    .join(ADMIN_TOKEN_FILE),
            ),
        };
        let ingest = ingest_config(&args, &mut errors);
        let notify = args.notify.validate(&mut errors);
        let engine = args.alerting.validate(&mut errors);
        let mut deploy = args.kube.validate(&mut errors);
        let leader = args.leader.validate(&mut errors);
        let http = args.http.validate(&mut errors);
        let tenant_storage = args
            .tenant_data
            .tenant_storage_dir
            .clone()
            .unwrap_or_else(|| sqlite_dir.clone().unwrap_or_default().join("tenants"));
        if let Some(url) = &args.tenant_data.tenant_database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            errors.push(format!(
                "--tenant-database-url {} must be a PostgreSQL URL (postgres://…)",
                redact_url_credentials(url)
            ));
        }
        if let Some(url) = &args.tenant_data.tenant_database_url {
            tenants_database_address(url, &args.kube, &mut deploy, &mut errors);
        }
        let backup = args.backup.validate(sqlite_dir.as_deref(), &mut errors);
        if args.shutdown_grace_seconds > 3600 {
            errors.push("--shutdown-grace-seconds must be at most 3600".to_owned());
        }

        match (backend, key_source, notify) {
            (Some(backend), Some(key_source), Some(notify)) if errors.is_empty() => {
                Ok(ServeConfig {
                    http_addr: args.http_addr,
                    backend,
                    database_display: redact_url_credentials(&args.database_url),
                    key_source,
                    admin_token,
                    retention_days: args.retention_days,
                    purge_expired: args.purge_expired,
                    shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_seconds),
                    ingest,
                    notify,
                    engine,
                    deploy,
                    leader,
                    http,
                    tenant_database_url: args.tenant_data.tenant_database_url.clone().map(AdminUrl),
                    tenant_storage,
                    backup,
                })
            }
            _ => Err(ConfigError(errors)),
        }
    }
}

/// Where tenants' backends reach their database server: the host and port
/// of `--tenant-database-url`, unless `--tenant-database-host` or
/// `--tenant-database-port` say otherwise. A URL without a TCP host (a
/// Unix socket) needs `--tenant-database-host` when there may be a
/// cluster.
fn tenants_database_address(
    url: &str,
    kube: &KubeArgs,
    deploy: &mut DeployConfig,
    errors: &mut Vec<String>,
) {
    let parsed = url::Url::parse(url).ok();
    let url_host = parsed
        .as_ref()
        .and_then(|u| u.host_str())
        .filter(|h| !h.is_empty())
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
    let url_port = parsed.as_ref().and_then(url::Url::port);
    let cluster = &mut deploy.settings.cluster;
    cluster.database_host = match (&kube.cluster.tenant_database_host, url_host) {
        (Some(host), _) => Some(host.clone()),
        (None, Some(host)) => Some(host),
        (None, None) if deploy.source == ClusterSource::None => Some("localhost".to_owned()),
        (None, None) => {
            errors.push(format!(
                "--tenant-database-url {} names no host tenants' pods could reach: set --tenant-database-host",
                redact_url_credentials(url)
            ));
            None
        }
    };
    if kube.cluster.tenant_database_port.is_none() {
        cluster.database_port = url_port.unwrap_or(5432);
    }
}

fn ingest_config(args: &ServeArgs, errors: &mut Vec<String>) -> Option<IngestConfig> {
    let base = args.tls_dir.as_deref().map(TlsFiles::server_in);
    let pick =
        |explicit: &Option<PathBuf>, from_dir: Option<PathBuf>| explicit.clone().or(from_dir);
    let ca = pick(&args.tls_ca, base.as_ref().map(|b| b.ca.clone()));
    let cert = pick(&args.tls_cert, base.as_ref().map(|b| b.cert.clone()));
    let key = pick(&args.tls_key, base.as_ref().map(|b| b.key.clone()));
    if args.tls_reload_seconds == 0 {
        errors.push("--tls-reload-seconds must be at least 1".to_owned());
    }
    if args.agent_hello_timeout_seconds == 0 || args.agent_idle_timeout_seconds < 10 {
        errors.push(
            "--agent-hello-timeout-seconds must be at least 1 and --agent-idle-timeout-seconds at least 10 (agents send heartbeats every 5 s)"
                .to_owned(),
        );
    }
    if args.agent_max_results_per_second == 0 {
        errors.push("--agent-max-results-per-second must be at least 1".to_owned());
    }
    match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Some(IngestConfig {
            addr: args.grpc_addr,
            files: TlsFiles { ca, cert, key },
            reload_every: std::time::Duration::from_secs(args.tls_reload_seconds.max(1)),
            hello_timeout: std::time::Duration::from_secs(args.agent_hello_timeout_seconds),
            idle_timeout: std::time::Duration::from_secs(args.agent_idle_timeout_seconds),
            max_results_per_second: args.agent_max_results_per_second.max(1),
        }),
        (None, None, None) => None,
        (ca, cert, key) => {
            let missing: Vec<&str> = [("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)]
                .into_iter()
                .filter(|(_, v)| v.is_none())
                .map(|(flag, _)| flag)
                .collect();
            errors.push(format!(
                "agent TLS needs --tls-dir or all of --tls-ca, --tls-cert, --tls-key; missing {}",
                missing.join(", ")
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let mut args = ServeArgs::for_dir(Path::new("/tmp"));
        args.database_url = "postgres://app:pw@db/knowton".into();
        args.admin_token = Some("short".into());
        args.shutdown_grace_seconds = 99_999;
        let err = ServeConfig::try_from(args).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        let text = err.to_string();
        assert!(text.contains("KNOWTON_SECRET_KEY"));
        assert!(text.contains("at least 16"));
        assert!(!text.contains("pw@"));
    }

    #[test]
    fn a_plan_may_keep_backups_longer_and_a_bad_policy_is_named() {
        let mut args = ServeArgs::for_dir(Path::new("/srv"));
        args.backup.backup_retention_enterprise = Some("daily=30,monthly=24".into());
        let config = ServeConfig::try_from(args.clone()).unwrap();
        let retention = config.backup.unwrap().retention;
        assert_eq!(
            retention.for_plan(knowton_common::Plan::Enterprise).daily,
            30
        );
        assert_eq!(retention.for_plan(knowton_common::Plan::Basic).daily, 7);
        args.backup.backup_retention_basic = Some("hourly=3".into());
        let err = ServeConfig::try_from(args).unwrap_err().to_string();
        assert!(
            err.contains("--backup-retention-basic: \"hourly\""),
            "{err}"
        );
    }

    #[test]
    fn agent_tls_is_all_or_nothing() {
        let mut args = ServeArgs::for_dir(Path::new("/srv"));
        assert!(
            ServeConfig::try_from(args.clone())
                .unwrap()
                .ingest
                .is_none()
        );
        args.tls_cert = Some("/x/cert.pem".into());
        let err = ServeConfig::try_from(args.clone()).unwrap_err().to_string();
        assert!(err.contains("missing --tls-ca, --tls-key"), "{err}");
        args.tls_dir = Some("/etc/knowton/tls".into());
        let ingest = ServeConfig::try_from(args).unwrap().ingest.unwrap();
        assert_eq!(ingest.files.ca, Path::new("/etc/knowton/tls/ca.pem"));
        assert_eq!(
            ingest.files.cert,
            Path::new("/x/cert.pem"),
            "a single file overrides the directory"
        );
    }

    #[test]
    fn debug_output_hides_inline_secrets() {
        let mut args = ServeArgs::for_dir(Path::new("/tmp"));
        args.admin_token = Some("admin-token-that-is-secret".into());
        args.secret_key = Some("c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=".into());
        let config = ServeConfig::try_from(args).unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("admin-token-that-is-secret") && !shown.contains("c2VjcmV0"),
            "{shown}"
        );
    }

    #[test]
    fn tenants_reach_their_database_at_the_urls_address_unless_told_otherwise() {
        let with = |url: Option<&str>, change: &dyn Fn(&mut ServeArgs)| {
            let mut args = ServeArgs::for_dir(Path::new("/srv/kt"));
            args.tenant_data.tenant_database_url = url.map(str::to_owned);
            change(&mut args);
            ServeConfig::try_from(args).map(|c| {
                let cluster = c.deploy.settings.cluster;
                (cluster.database_host, cluster.database_port)
            })
        };
        let none = |_: &mut ServeArgs| {};
        assert_eq!(with(None, &none).unwrap(), (None, 5432), "no database");
        assert_eq!(
            with(Some("postgres://admin:pw@db.internal:6432/postgres"), &none).unwrap(),
            (Some("db.internal".to_owned()), 6432)
        );
        let overridden = with(Some("postgres://admin@127.0.0.1/postgres"), &|args| {
            args.kube.cluster.tenant_database_host = Some("pg.databases.svc".to_owned());
            args.kube.cluster.tenant_database_port = Some(5433);
        });
        assert_eq!(
            overridden.unwrap(),
            (Some("pg.databases.svc".to_owned()), 5433)
        );
        // A socket is no address for a pod: with a cluster, say so.
        let socket = "postgres:///postgres?host=/run/postgresql";
        let err = with(Some(socket), &|args| args.kube.no_cluster = false).unwrap_err();
        assert!(err.to_string().contains("--tenant-database-host"), "{err}");
        let bad = with(Some(socket), &|args| {
            args.kube.no_cluster = false;
            args.kube.cluster.tenant_database_host = Some("-bad host".to_owned());
        })
        .unwrap_err();
        assert!(bad.to_string().contains("is not a host name"), "{bad}");
    }

    #[test]
    fn sqlite_defaults_put_key_and_token_beside_the_database() {
        let config = ServeConfig::try_from(ServeArgs::for_dir(Path::new("/srv/kt"))).unwrap();
        assert!(
            matches!(&config.key_source, KeySource::FileCreate(p) if p == Path::new("/srv/kt/knowton.key"))
        );
        assert!(
            matches!(&config.admin_token, AdminTokenSource::File(p) if p == Path::new("/srv/kt/knowton-admin.token"))
        );
    }
}
