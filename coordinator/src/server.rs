//! Load, bind, spawn, drain: the lifecycle of `knowton-coordinator serve`.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::api::{self, ApiSettings, AppState, Services};
use crate::backup::service::BackupService;
use crate::backup::volume::{Caps, VolumePods, VolumeSettings};
use crate::backup::{BackupKind, Backups, open_repository};
use crate::config::{AdminTokenSource, ServeConfig};
use crate::credentials;
use crate::deploy::config::ClusterSource;
use crate::deploy::controller::Verification;
use crate::deploy::{Cluster, Deployer};
use crate::directory::TenantDirectory;
use crate::health::Engine;
use crate::health::backups::BackupWatch;
use crate::ingest::{self, IngestService, StreamSettings};
use crate::leader::Leadership;
use crate::listen::{self, MetricsToken, MetricsTokenError};
use crate::notify::email::MailerError;
use crate::notify::worker::Deliveries;
use crate::notify::{NotifyService, Wakeup};
use crate::provision::{LifecycleParts, TenantLifecycle};
use crate::secrets::{self, SecretBox, SecretKeyError};
use crate::store::{Store, StoreError};
use crate::tenant_data::{TenantData, TenantDatabases, TenantStorage};
use crate::tls::ServerTls;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to open the database {database}")]
    OpenStore {
        database: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    LoadSecretKey(#[from] SecretKeyError),
    #[error(transparent)]
    TenantData(#[from] crate::tenant_data::TenantDataError),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    #[error(
        "the secret key does not match the key this database's secrets were sealed with; \
         start with the original KNOWTON_SECRET_KEY or key file"
    )]
    WrongSecretKey,
    #[error("failed to record the secret key check in the database")]
    KeyCheck(#[source] StoreError),
    #[error("failed to read or record this installation's id in the database")]
    InstallationId(#[source] StoreError),
    #[error("failed to read or create the admin token file {path}")]
    AdminTokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin token file {path} is empty or shorter than 16 characters")]
    AdminTokenTooShort { path: String },
    #[error(
        "admin token file {path} is readable or writable by other users (mode {mode:o}); run chmod 600 {path}"
    )]
    AdminTokenPermissions { path: String, mode: u32 },
    #[error("failed to bind the HTTP listener on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    LoadMetricsToken(#[from] MetricsTokenError),
    #[error("failed to load the agent stream's TLS certificates")]
    LoadAgentTls(#[from] crate::tls::TlsError),
    #[error("failed to set up notification e-mail")]
    SetUpMailer(#[from] MailerError),
    #[error("failed to connect to the Kubernetes cluster")]
    ConnectCluster(#[from] crate::deploy::ClusterError),
    #[error("failed to campaign for leadership in the database")]
    Campaign(#[source] StoreError),
    #[error(
        "another coordinator{holder} is serving the SQLite database {database}: \
         SQLite serves one coordinator; stop it, or run replicas on PostgreSQL"
    )]
    SqliteInUse { database: String, holder: String },
    #[error("failed to lock the SQLite database's lock file {path}")]
    LockSqlite {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A coordinator that is serving.
#[derive(Debug)]
pub struct Running {
    pub http_addr: SocketAddr,
    /// The metrics listener, when `--metrics-addr` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// The agents' gRPC listener, when TLS is configured.
    pub grpc_addr: Option<SocketAddr>,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Starts draining and waits for the server to stop.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Loads the configuration's resources, binds the listener and spawns the
/// server. Fails before binding if the database or keys are not right.
pub async fn start(config: ServeConfig) -> Result<Running, ServeError> {
    // Before the database is touched: SQLite serves one coordinator.
    let sqlite_lock = match config.backend.sqlite_path() {
        Some(db) => Some(lock_sqlite(db, &config.database_display)?),
        None => None,
    };
    let store = config
        .backend
        .clone()
        .open()
        .await
        .map_err(|source| ServeError::OpenStore {
            database: config.database_display.clone(),
            source,
        })?;
    let secret_box = SecretBox::load(&config.key_source)?;
    let check = store
        .init_meta(secrets::KEY_CHECK_META, &secret_box.key_check())
        .await
        .map_err(ServeError::KeyCheck)?;
    if !secret_box.matches_check(&check) {
        return Err(ServeError::WrongSecretKey);
    }
    let admin_token = load_admin_token(&config.admin_token)?;
    let metrics_token = config
        .http
        .metrics_token
        .as_ref()
        .map(MetricsToken::load)
        .transpose()?;

    let directory = TenantDirectory::load(store.as_ref())
        .await
        .map_err(|source| ServeError::OpenStore {
            database: config.database_display.clone(),
            source,
        })?;
    let directory = Arc::new(directory);
    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.http_addr,
        source,
    })?;
    let metrics_listener = match config.http.metrics_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            Some((listener, bound))
        }
        None => None,
    };
    let mut notify = config.notify.clone();
    if notify.external_url.is_empty() {
        // Links in notifications point at the address actually bound.
        notify.external_url = format!("http://{http_addr}");
    }
    let outbox = Wakeup::default();
    let notify = Arc::new(NotifyService::new(
        store.clone(),
        secret_box.clone(),
        outbox.clone(),
        notify,
    ));
    let deliveries = Deliveries::new(notify.clone())?;

    let (shutdown, mut signal) = watch::channel(false);
    // The lease is given up last, once everything that writes as leader
    // has stopped.
    let (resign, resigned) = watch::channel(false);
    let (leadership, campaign_task) = Leadership::campaign(
        store.clone(),
        config.leader.clone(),
        sqlite_lock.is_some(),
        resigned,
    )
    .await
    .map_err(ServeError::Campaign)?;
    let registry = Arc::new(ingest::Registry::default());
    let cluster = match &config.deploy.source {
        ClusterSource::None => None,
        ClusterSource::Infer => Cluster::connect(None).await?,
        ClusterSource::Kubeconfig(path) => Cluster::connect(Some(path)).await?,
    };
    let has_cluster = cluster.is_some();
    if has_cluster && config.deploy.settings.cluster.database_cidrs.is_empty() {
        tracing::warn!(
            "no --tenant-database-cidr: tenants' pods may reach no database (their egress allows DNS and their namespace only)"
        );
    }
    if let Some(host) = &config.deploy.settings.cluster.database_host
        && has_cluster
        && is_loopback(host)
    {
        tracing::warn!(
            host = %host,
            "tenants' pods are told their database is at a loopback address, which is their own: set --tenant-database-host"
        );
    }
    // Health is verified by the agents, unless none can connect.
    let verification = if config.ingest.is_some() {
        Verification::ByAgents
    } else {
        Verification::Unavailable
    };
    let deployer = Deployer::new(
        store.clone(),
        secret_box.clone(),
        registry.clone(),
        cluster,
        config.deploy.settings.clone(),
        verification,
        leadership.clone(),
    );
    let data = TenantData {
        databases: match &config.tenant_database_url {
            Some(url) => Some(
                TenantDatabases::connect(&url.0, installation_id(store.as_ref()).await?).await?,
            ),
            None => None,
        },
        // Found no cluster (`--no-cluster`, or none to infer): files here.
        storage: if has_cluster {
            None
        } else {
            Some(TenantStorage::new(config.tenant_storage.clone()))
        },
    };
    // Without a cluster the files are here; with one, in each tenant's
    // volume, read and written through a volume pod.
    let files_here = data.storage.is_some() || has_cluster;
    let volumes = deployer.cluster().map(|cluster| {
        let flags = &config.deploy.volumes;
        VolumePods::new(
            cluster.client().clone(),
            VolumeSettings {
                namespace_prefix: config.deploy.settings.cluster.namespace_prefix.clone(),
                image: flags.image.clone(),
                deadline: flags.deadline,
                start_timeout: flags.start_timeout,
                caps: Caps {
                    silence: flags.silence,
                    ..Caps::default()
                },
            },
        )
    });
    let backups = match &config.backup {
        Some(settings) => {
            let repo =
                open_repository(&settings.url, settings.s3_endpoint.as_deref(), &secret_box)?;
            tracing::info!(repository = %repo.shown(), retention = %settings.retention, "backups on");
            let mut backups = Backups::new(repo, data.clone());
            if let Some(volumes) = volumes {
                backups = backups.with_volumes(volumes);
            }
            Some(BackupService::new(backups, store.clone()))
        }
        None => {
            tracing::info!("backups off: no --backup-url");
            None
        }
    };
    // The kinds backed up here, each on its schedule.
    let backup_kinds: Vec<_> = match &config.backup {
        Some(settings) => [
            (
                config.tenant_database_url.is_some(),
                BackupKind::Database,
                &settings.database_schedule,
            ),
            (files_here, BackupKind::Storage, &settings.storage_schedule),
        ]
        .into_iter()
        .filter(|(on, _, _)| *on)
        .map(|(_, kind, schedule)| (kind, schedule.clone()))
        .collect(),
        None => Vec::new(),
    };
    let (engine, engine_task) = Engine::start(
        store.clone(),
        notify.clone(),
        registry.clone(),
        directory.clone(),
        leadership.clone(),
        config.engine.clone(),
        backups.as_ref().map(|service| BackupWatch {
            status: service.status().clone(),
            kinds: backup_kinds.iter().map(|(kind, _)| *kind).collect(),
        }),
        shutdown.subscribe(),
    )
    .await
    .map_err(|source| ServeError::OpenStore {
        database: config.database_display.clone(),
        source,
    })?;
    let lifecycle = Arc::new(TenantLifecycle::new(LifecycleParts {
        store: store.clone(),
        secrets: secret_box,
        retention_days: config.retention_days,
        directory,
        outbox,
        deployer: deployer.clone(),
        engine: engine.clone(),
        data,
        backups: backups.as_ref().map(|service| service.backups().clone()),
    }));
    // A restored configuration is applied through the lifecycle; a
    // restore of data holds the tenant at zero through the deployer.
    let backups = backups.map(|service| {
        service
            .with_configuration_target(lifecycle.clone())
            .with_deployments(Arc::new(deployer.clone()))
    });
    let state = AppState::new(
        Services {
            lifecycle,
            store,
            ingest: registry,
            notify,
            engine: engine.clone(),
            deployer: deployer.clone(),
            backups,
        },
        ApiSettings {
            admin_token,
            metrics_token,
            request_timeout: config.http.request_timeout,
            shared_rate_limits: sqlite_lock.is_none(),
        },
    );
    let deploy_task = tokio::spawn(deployer.clone().run(shutdown.subscribe()));
    if has_cluster {
        crate::deploy::watch::spawn(deployer.clone(), shutdown.subscribe());
        if let Some(scaling) = &config.deploy.scaling {
            tokio::spawn(crate::deploy::scaling::run(
                deployer,
                engine,
                scaling.clone(),
                shutdown.subscribe(),
            ));
        }
    } else {
        tracing::info!("no Kubernetes cluster: deployments are rendered and recorded as skipped");
    }
    spawn_housekeeping(&state, &config, shutdown.subscribe());
    if let (Some(service), Some(settings)) = (&state.backups, &config.backup) {
        for (kind, schedule) in &backup_kinds {
            tracing::info!(%kind, %schedule, "scheduled backups (by the leader)");
        }
        tokio::spawn(service.clone().keep_fresh(shutdown.subscribe()));
        tracing::info!(
            "configuration versions are backed up as they are committed (by the leader)"
        );
        tokio::spawn(crate::backup::config::run(
            service.clone(),
            state.deployer.leadership().clone(),
            shutdown.subscribe(),
        ));
        tokio::spawn(crate::backup::schedule::run(
            service.clone(),
            crate::backup::schedule::Schedules {
                kinds: backup_kinds,
                retention: settings.retention,
                verify: settings.verify_schedule.clone(),
            },
            state.deployer.leadership().clone(),
            shutdown.subscribe(),
        ));
    }
    let rate_upkeep = state.limiter.clone().spawn_upkeep(shutdown.subscribe());
    let follower = state
        .service
        .spawn_follower(config.leader.resync_every, shutdown.subscribe());
    let deliveries = deliveries.spawn(shutdown.subscribe(), config.shutdown_grace, leadership);
    let grpc_addr = match &config.ingest {
        Some(ingest) => Some(
            start_ingest(
                ingest,
                &config.deploy.agent_namespace,
                &state,
                shutdown.subscribe(),
            )
            .await?,
        ),
        None => {
            tracing::info!("agent ingest is off: no TLS certificates configured (--tls-dir)");
            None
        }
    };
    let advertised = advertised(&config, http_addr, grpc_addr);
    let heartbeat = crate::replicas::spawn_heartbeat(
        state.store.clone(),
        state.deployer.leadership().clone(),
        state.ingest.clone(),
        advertised,
        state.deployer.leadership().renew_every(),
        state.limiter.live_replicas_handle(),
        shutdown.subscribe(),
    );
    let app = api::router(state.clone());
    let limits = config.http.limits;
    let metrics_addr = match metrics_listener {
        Some((listener, addr)) => {
            tokio::spawn(listen::serve(
                listener,
                crate::api::metrics::router(state.clone()),
                limits,
                state.http_metrics.clone(),
                shutdown.subscribe(),
            ));
            tracing::info!(metrics.addr = %addr, "metrics listening");
            Some(addr)
        }
        None => {
            if state.metrics_token.is_none() {
                tracing::warn!(
                    "metrics are not served: set --metrics-addr or --metrics-token to scrape /metrics"
                );
            }
            None
        }
    };
    let store = state.store.clone();
    let draining = state.draining.clone();
    let grace = config.shutdown_grace;
    let http_metrics = state.http_metrics.clone();
    let task = tokio::spawn(async move {
        // Draining starts with the shutdown signal: readiness turns 503,
        // the listener stops accepting and each connection closes once its
        // request in flight is answered.
        let stop = signal.clone();
        let server = listen::serve(listener, app, limits, http_metrics, stop);
        tokio::pin!(server);
        let served = tokio::select! {
            () = &mut server => true,
            _ = signal.wait_for(|stop| *stop) => false,
        };
        draining.store(true, Ordering::Relaxed);
        tracing::info!("shutdown: draining in-flight requests");
        if !served && tokio::time::timeout(grace, server).await.is_err() {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "shutdown grace period over; closing remaining connections"
            );
        }
        // Deliveries in flight finish (bounded by the grace period) before
        // the store closes under them.
        if deploy_task.await.is_err_and(|e| e.is_panic()) {
            tracing::error!("the deployer panicked");
        }
        if engine_task.await.is_err_and(|e| e.is_panic()) {
            tracing::error!("the health engine panicked");
        }
        if deliveries.await.is_err_and(|e| e.is_panic()) {
            tracing::error!("the notification worker panicked");
        }
        if follower.await.is_err_and(|e| e.is_panic()) {
            tracing::error!("the follower of other replicas' changes panicked");
        }
        if heartbeat.await.is_err_and(|e| e.is_panic()) {
            tracing::error!("the heartbeat panicked");
        }
        if rate_upkeep.await.is_err_and(|e| e.is_panic()) {
            tracing::error!("the rate limiter's upkeep panicked");
        }
        let _ = resign.send(true);
        if campaign_task.await.is_err_and(|e| e.is_panic()) {
            tracing::error!("the leadership campaign panicked");
        }
        store.close().await;
        // Another coordinator may use the SQLite database from here on.
        drop(sqlite_lock);
        Ok(())
    });
    tracing::info!(
        http.addr = %http_addr,
        database = %config.database_display,
        backend = state.store.backend(),
        "coordinator ready"
    );
    Ok(Running {
        http_addr,
        metrics_addr,
        grpc_addr,
        state,
        shutdown,
        task,
    })
}

/// Runs until `shutdown` resolves, then drains.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let running = start(config).await?;
    shutdown.await;
    running.shutdown().await
}

/// Where the other replicas reach this one: `--advertise-ip` (the pod's
/// IP), else the listener's own address, else loopback.
fn advertised(
    config: &ServeConfig,
    http: SocketAddr,
    grpc: Option<SocketAddr>,
) -> crate::replicas::Advertised {
    let ip = config.leader.advertise_ip.unwrap_or_else(|| {
        if http.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            http.ip()
        }
    });
    crate::replicas::Advertised {
        http_url: format!("http://{}", SocketAddr::new(ip, http.port())),
        grpc_addr: grpc.map(|g| SocketAddr::new(ip, g.port()).to_string()),
    }
}

/// Takes the lock that makes a SQLite database one coordinator's:
/// `<database>.lock` beside it, locked while the process lives (the kernel
/// releases it when the process dies, however it dies), holding the
/// process id of its holder for the message of the next one.
fn lock_sqlite(db: &Path, database: &str) -> Result<std::fs::File, ServeError> {
    let mut path = db.as_os_str().to_owned();
    path.push(".lock");
    let path = std::path::PathBuf::from(path);
    let failed = |source| ServeError::LockSqlite {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = std::io::Read::read_to_string(&mut file, &mut holder);
            let holder = holder.trim();
            return Err(ServeError::SqliteInUse {
                database: database.to_owned(),
                holder: if holder.is_empty() || holder.len() > 64 {
                    String::new()
                } else {
                    format!(" ({holder})")
                },
            });
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(failed(err)),
    }
    file.set_len(0).map_err(failed)?;
    write!(file, "pid {}", std::process::id()).map_err(failed)?;
    Ok(file)
}

/// Loads the certificates, binds the agents' listener and serves it.
async fn start_ingest(
    config: &crate::config::IngestConfig,
    agent_namespace: &str,
    state: &AppState,
    stop: watch::Receiver<bool>,
) -> Result<SocketAddr, ServeError> {
    let tls = ServerTls::load(config.files.clone())?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.addr,
        source,
    })?;
    tls.spawn_reloader(config.reload_every, stop.clone());
    let service = IngestService {
        registry: state.ingest.clone(),
        directory: state.service.directory().clone(),
        settings: StreamSettings {
            hello_timeout: config.hello_timeout,
            idle_timeout: config.idle_timeout,
            max_results_per_second: config.max_results_per_second,
            ..StreamSettings::default()
        },
        shutdown: stop.clone(),
        pods: state.deployer.cluster().map(|cluster| {
            crate::ingest::identity::PodIdentities::new(
                cluster.client().clone(),
                agent_namespace.to_owned(),
            )
        }),
    };
    let mut stop = stop;
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(err) = ingest::serve(listener, tls, service, shutdown).await {
            tracing::error!(error = %err, "agent ingest server failed");
        }
    });
    tracing::info!(grpc.addr = %addr, "agent ingest listening (mutual TLS)");
    Ok(addr)
}

/// A tenant database this old without its tenant's record was left by a
/// provisioning that was interrupted (none takes this long).
/// The id every replica of this installation shares (made by the first
/// to start): it marks what the installation makes outside its own
/// database, such as the tenants' databases on a server other
/// installations may use too.
async fn installation_id(store: &dyn Store) -> Result<Uuid, ServeError> {
    let fresh = Uuid::new_v4().to_string();
    let stored = store
        .init_meta(INSTALLATION_META, &fresh)
        .await
        .map_err(ServeError::InstallationId)?;
    Uuid::parse_str(&stored).map_err(|_| {
        ServeError::InstallationId(StoreError::Corrupt(format!(
            "meta {INSTALLATION_META} is not a UUID: {stored:?}"
        )))
    })
}

const INSTALLATION_META: &str = "installation_id";

const UNRECORDED_AFTER: Duration = Duration::from_secs(600);

fn spawn_housekeeping(state: &AppState, config: &ServeConfig, mut stop: watch::Receiver<bool>) {
    let lifecycle = state.service.clone();
    let leadership = state.deployer.leadership().clone();
    let purge_expired = config.purge_expired;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut minutes = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // Retention ends once, by the leader's hand.
            if purge_expired && minutes.is_multiple_of(60) && leadership.is_leader() {
                match lifecycle.purge_expired(crate::store::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(tenants = n, "purged tenants whose retention ended"),
                    Err(err) => tracing::error!(error = %err, "failed to purge expired tenants"),
                }
            }
            if minutes.is_multiple_of(60) && leadership.is_leader() {
                let interrupted = lifecycle.drop_unrecorded_databases(UNRECORDED_AFTER).await;
                if let Err(err) = interrupted {
                    tracing::error!(error = %knowton_common::error_chain(&err), "failed to drop the databases of interrupted provisionings");
                }
            }
            minutes += 1;
        }
    });
}

fn load_admin_token(source: &AdminTokenSource) -> Result<String, ServeError> {
    let path = match source {
        AdminTokenSource::Inline(token) => return Ok(token.clone()),
        AdminTokenSource::File(path) => path,
    };
    let io_err = |source| ServeError::AdminTokenFile {
        path: path.display().to_string(),
        source,
    };
    if !path.exists() {
        create_private_file(path, &credentials::random_base62(40)).map_err(io_err)?;
        tracing::info!(path = %path.display(), "generated an admin token (the CLI reads it from this file)");
    }
    if let Some(mode) = crate::secrets::open_to_others(path).map_err(io_err)? {
        return Err(ServeError::AdminTokenPermissions {
            path: path.display().to_string(),
            mode,
        });
    }
    let token = std::fs::read_to_string(path)
        .map_err(io_err)?
        .trim()
        .to_owned();
    if token.len() < 16 {
        return Err(ServeError::AdminTokenTooShort {
            path: path.display().to_string(),
        });
    }
    Ok(token)
}

fn create_private_file(path: &Path, content: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{content}")?;
    file.sync_all()
}

/// `localhost` or a loopback address: the coordinator's own, not a pod's.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
