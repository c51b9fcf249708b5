//! Backups of each tenant's data: its database (`pg_dump`, chunked) and
//! its files (incremental, by content-defined chunks), into a repository
//! of sealed, write-once objects ([`repo`]), restorable to a moment and
//! verifiable.
//!
//! A backup is its manifest ([`manifest`]), written after every chunk it
//! names is in a pack and the index ([`pack`]): a run that stops part-way
//! (a crash, a kill) leaves packs that the next run reuses (or a prune
//! removes), and no backup that looks complete.
//!
//! A tenant's configuration is backed up version by version as it is
//! committed ([`config`]): its manifest holds it whole.

pub mod chunk;
pub mod config;
pub mod database;
pub mod hold;
pub mod listing;
pub mod manifest;
pub mod pack;
pub mod recording;
pub mod repo;
pub mod restore_job;
pub mod retention;
pub mod schedule;
pub mod seal;
pub mod service;
pub mod status;
pub mod storage;
pub mod sweep;
pub mod verify;
pub mod volume;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use self::chunk::{ChunkRef, ChunkWriter, Transfer};
use self::manifest::{Content, Manifest};
use self::repo::{Put, Repository};
use self::retention::{Retention, RetentionPolicy};
use self::schedule::Schedule;
use self::seal::{OpenError, Sealer};
use self::storage::Source;
use self::volume::VolumePods;
use self::volume::pod::Access;
use crate::secrets::SecretBox;
pub use crate::store::BackupKind;
use crate::tenant_data::{TenantData, TenantDataError, database_name};
use knowton_common::Plan;
use std::sync::atomic::AtomicU64;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("invalid backup repository {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("backup repository {repository}: failed to {step} {path}")]
    Repository {
        repository: String,
        path: String,
        step: &'static str,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("backup object {path} {reason}")]
    Unreadable { path: String, reason: OpenError },
    #[error("backup is inconsistent: {0}")]
    Corrupt(String),
    #[error("failed to read the data being backed up")]
    Read(#[source] std::io::Error),
    #[error("failed to write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {detail}")]
    Tool { tool: &'static str, detail: String },
    #[error("tenant database: failed to {step}")]
    Query {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    TenantData(#[from] TenantDataError),
    #[error(transparent)]
    Volume(#[from] self::volume::VolumeError),
    #[error("tenant {tenant} has no {kind} to back up: {reason}")]
    Nothing {
        tenant: String,
        kind: BackupKind,
        reason: &'static str,
    },
    #[error("no {kind} backup of tenant {tenant} at or before {at}")]
    NoneBefore {
        tenant: String,
        kind: BackupKind,
        at: DateTime<Utc>,
    },
    #[error("{0} already exists: a restore writes into a new directory only")]
    TargetExists(PathBuf),
    #[error("failed to read or record the configuration backup queue")]
    Queue(#[source] crate::store::StoreError),
    #[error("failed to apply the configuration to tenant {tenant}")]
    Apply {
        tenant: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BackupError {
    /// Whether this says the backups are damaged (an object missing, not
    /// opening under this key, or inconsistent), rather than that the
    /// repository could not be asked.
    pub fn is_damage(&self) -> bool {
        match self {
            BackupError::Unreadable { .. } | BackupError::Corrupt(_) => true,
            BackupError::Repository { source, .. } => {
                matches!(**source, object_store::Error::NotFound { .. })
            }
            _ => false,
        }
    }
}

/// Where backups go, and how long they are kept.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BackupArgs {
    /// The backup repository: `file:///path` or `s3://bucket/prefix` (S3
    /// credentials and region from the usual AWS_* variables).
    /// Default: `backups/` beside the SQLite database.
    #[arg(long, env = "KNOWTON_BACKUP_URL")]
    pub backup_url: Option<String>,
    /// An S3-compatible server's endpoint (`https://…`; `http://` for a
    /// server on this host or network only) instead of AWS.
    #[arg(long, env = "KNOWTON_BACKUP_S3_ENDPOINT")]
    pub backup_s3_endpoint: Option<String>,
    /// How many backups of each kind a tenant keeps: the newest of each
    /// of the last N days, ISO weeks and months that have one.
    #[arg(
        long,
        env = "KNOWTON_BACKUP_RETENTION",
        default_value = "daily=7,weekly=4,monthly=6"
    )]
    pub backup_retention: String,
    /// What a basic plan's tenants keep instead (same form).
    #[arg(long, env = "KNOWTON_BACKUP_RETENTION_BASIC")]
    pub backup_retention_basic: Option<String>,
    /// What a professional plan's tenants keep instead.
    #[arg(long, env = "KNOWTON_BACKUP_RETENTION_PROFESSIONAL")]
    pub backup_retention_professional: Option<String>,
    /// What an enterprise plan's tenants keep instead.
    #[arg(long, env = "KNOWTON_BACKUP_RETENTION_ENTERPRISE")]
    pub backup_retention_enterprise: Option<String>,
    /// When tenants' databases are backed up (cron, UTC; an optional
    /// seconds field first).
    #[arg(
        long,
        env = "KNOWTON_BACKUP_DATABASE_SCHEDULE",
        default_value = "0 2 * * *"
    )]
    pub backup_database_schedule: String,
    /// When tenants' files are backed up (cron, UTC).
    #[arg(
        long,
        env = "KNOWTON_BACKUP_STORAGE_SCHEDULE",
        default_value = "0 */6 * * *"
    )]
    pub backup_storage_schedule: String,
    /// When every tenant's latest backups are verified deeply: restored
    /// into a scratch database and directory and compared (cron, UTC;
    /// `off` for never).
    #[arg(
        long,
        env = "KNOWTON_BACKUP_VERIFY_SCHEDULE",
        default_value = "0 4 * * 0"
    )]
    pub backup_verify_schedule: String,
}

/// The backup settings of `serve`, checked.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub url: String,
    pub s3_endpoint: Option<String>,
    pub retention: RetentionPolicy,
    pub database_schedule: Schedule,
    pub storage_schedule: Schedule,
    /// Deep verifications (`None`: off).
    pub verify_schedule: Option<Schedule>,
}

impl BackupArgs {
    /// The settings, with `default_dir` (beside the SQLite database) as
    /// the repository when `--backup-url` is not given; `None` (backups
    /// off) without either. Problems go to `errors`.
    pub fn validate(
        &self,
        default_dir: Option<&Path>,
        errors: &mut Vec<String>,
    ) -> Option<BackupConfig> {
        let mut retention = self
            .backup_retention
            .parse::<Retention>()
            .map_err(|e| errors.push(format!("--backup-retention: {e}")))
            .ok()
            .map(|default| RetentionPolicy {
                default,
                ..RetentionPolicy::default()
            });
        for (flag, given, plan) in [
            (
                "backup-retention-basic",
                &self.backup_retention_basic,
                Plan::Basic,
            ),
            (
                "backup-retention-professional",
                &self.backup_retention_professional,
                Plan::Professional,
            ),
            (
                "backup-retention-enterprise",
                &self.backup_retention_enterprise,
                Plan::Enterprise,
            ),
        ] {
            let Some(text) = given else { continue };
            match text.parse::<Retention>() {
                Ok(own) => {
                    if let Some(policy) = &mut retention {
                        let slot = match plan {
                            Plan::Basic => &mut policy.basic,
                            Plan::Professional => &mut policy.professional,
                            Plan::Enterprise => &mut policy.enterprise,
                        };
                        *slot = Some(own);
                    }
                }
                Err(e) => errors.push(format!("--{flag}: {e}")),
            }
        }
        let schedule = |flag: &str, text: &str, errors: &mut Vec<String>| {
            text.parse::<Schedule>()
                .map_err(|e| errors.push(format!("--{flag}: {e}")))
                .ok()
        };
        let database_schedule = schedule(
            "backup-database-schedule",
            &self.backup_database_schedule,
            errors,
        );
        let storage_schedule = schedule(
            "backup-storage-schedule",
            &self.backup_storage_schedule,
            errors,
        );
        let verify_schedule = match self.backup_verify_schedule.trim() {
            "off" => Some(None),
            text => schedule("backup-verify-schedule", text, errors).map(Some),
        };
        if let Some(endpoint) = &self.backup_s3_endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            errors.push(format!(
                "--backup-s3-endpoint {endpoint:?} must be an http:// or https:// URL"
            ));
        }
        let url = match (&self.backup_url, default_dir) {
            (Some(url), _) => {
                match url::Url::parse(url) {
                    Ok(parsed) if parsed.scheme() == "file" && parsed.to_file_path().is_ok() => {}
                    Ok(parsed) if parsed.scheme() == "s3" && parsed.host_str().is_some() => {}
                    _ => errors.push(format!(
                        "--backup-url {url:?}: expected file:///absolute/path or s3://bucket/prefix"
                    )),
                }
                url.clone()
            }
            (None, Some(dir)) => match std::path::absolute(dir.join("backups")) {
                Ok(path) => match url::Url::from_file_path(&path) {
                    Ok(url) => url.to_string(),
                    Err(()) => {
                        errors.push(format!("backups directory {}: not a path", path.display()));
                        return None;
                    }
                },
                Err(e) => {
                    errors.push(format!("backups directory: {e}"));
                    return None;
                }
            },
            (None, None) => return None,
        };
        Some(BackupConfig {
            url,
            s3_endpoint: self.backup_s3_endpoint.clone(),
            retention: retention?,
            database_schedule: database_schedule?,
            storage_schedule: storage_schedule?,
            verify_schedule: verify_schedule?,
        })
    }
}

/// Opens the repository at `url`.
pub fn open_repository(
    url: &str,
    s3_endpoint: Option<&str>,
    secrets: &SecretBox,
) -> Result<Repository, BackupError> {
    let invalid = |reason: String| BackupError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let store: Arc<dyn object_store::ObjectStore> = match parsed.scheme() {
        "file" => {
            let dir = parsed
                .to_file_path()
                .map_err(|()| invalid("not an absolute local path".to_owned()))?;
            make_private_dir(&dir).map_err(|e| invalid(format!("cannot create it: {e}")))?;
            // Each object durable before its write returns, as S3's are:
            // a manifest, written last, then never names a pack a power
            // cut lost.
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| invalid(e.to_string()))?
                    .with_fsync(true),
            )
        }
        "s3" => {
            let bucket = parsed
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| invalid("no bucket".to_owned()))?;
            let mut builder =
                object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = s3_endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            let s3 = builder.build().map_err(|e| invalid(e.to_string()))?;
            let prefix = parsed.path().trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        }
        other => return Err(invalid(format!("scheme {other:?}: expected file or s3"))),
    };
    Ok(Repository::new(store, Sealer::new(secrets), url.to_owned()))
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The tenant a backup is taken of or restored to.
#[derive(Debug, Clone)]
pub struct TenantRef {
    pub id: Uuid,
    pub slug: String,
}

/// One listed backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    pub id: Uuid,
    pub kind: BackupKind,
    pub taken_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Bytes the backup restores.
    pub size: u64,
    /// Bytes this backup added to the repository.
    pub bytes_written: u64,
    pub new_chunks: u64,
    pub reused_chunks: u64,
    /// The configuration version, for a configuration backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

impl From<&Manifest> for BackupInfo {
    fn from(m: &Manifest) -> Self {
        BackupInfo {
            id: m.id,
            kind: m.kind,
            taken_at: m.taken_at,
            finished_at: m.finished_at,
            size: m.content.size(),
            bytes_written: m.transfer.bytes_written,
            new_chunks: m.transfer.new_chunks,
            reused_chunks: m.transfer.reused_chunks,
            version: m.content.config_version(),
        }
    }
}

/// What a prune did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub kept: usize,
    pub deleted_backups: usize,
    /// Chunks no backup references, deleted by a later prune unless a
    /// backup uses them again.
    pub marked_chunks: usize,
    pub deleted_chunks: usize,
}

/// Chunks read at once to verify a backup or read its listing.
const VERIFY_READS: usize = 8;

/// Takes, lists, restores and verifies tenants' backups.
#[derive(Debug, Clone)]
pub struct Backups {
    repo: Repository,
    data: TenantData,
    /// In a cluster: tenants' files are in their volumes.
    volumes: Option<VolumePods>,
}

/// Where a tenant's files are.
enum Files<'a> {
    Dir(PathBuf),
    Volume(&'a VolumePods),
}

impl Backups {
    pub fn new(repo: Repository, data: TenantData) -> Self {
        Backups {
            repo,
            data,
            volumes: None,
        }
    }

    /// Tenants' files are read from and restored into their volumes on
    /// the cluster, through volume pods.
    pub fn with_volumes(mut self, volumes: VolumePods) -> Self {
        self.volumes = Some(volumes);
        self
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Takes a backup of `kind` of `tenant` now.
    pub async fn run(&self, tenant: &TenantRef, kind: BackupKind) -> Result<Manifest, BackupError> {
        let writer = self.chunk_writer(tenant.id).await?;
        self.run_with(tenant, kind, &writer).await
    }

    /// [`Self::run`] through `writer` (from [`Self::chunk_writer`]), whose
    /// [`ChunkWriter::transfer`] shows the run's progress meanwhile.
    pub async fn run_with(
        &self,
        tenant: &TenantRef,
        kind: BackupKind,
        writer: &ChunkWriter,
    ) -> Result<Manifest, BackupError> {
        let started_at = Utc::now();
        let content = match kind {
            BackupKind::Database => {
                let databases = self.data.databases.as_ref().ok_or(BackupError::Nothing {
                    tenant: tenant.slug.clone(),
                    kind,
                    reason: "tenants have no databases (no --tenant-database-url)",
                })?;
                database::back_up(databases, &database_name(&tenant.slug), writer).await?
            }
            BackupKind::Configuration => {
                return Err(BackupError::Nothing {
                    tenant: tenant.slug.clone(),
                    kind,
                    reason: "configuration versions are backed up as they are committed",
                });
            }
            BackupKind::Storage => {
                let files = self.files(tenant, kind)?;
                let previous = match self.latest(tenant.id, kind, Utc::now()).await? {
                    Some(m) => match m.content {
                        Content::Storage { entries, .. } => entries,
                        Content::Database { .. } | Content::Configuration { .. } => Vec::new(),
                    },
                    None => Vec::new(),
                };
                let entries = match files {
                    Files::Dir(root) => {
                        storage::back_up(Source::Local(&root), writer, &previous).await?
                    }
                    Files::Volume(volumes) => {
                        let pod = volumes.open(&tenant.slug, Access::Read).await?;
                        let entries =
                            storage::back_up(Source::Volume(&pod), writer, &previous).await;
                        pod.close().await;
                        entries?
                    }
                };
                Content::Storage {
                    listing: writer.write_listing(listing::pieces(&entries)).await?,
                    entries,
                }
            }
        };
        // Every pack, and the index naming them, before the manifest.
        writer.finish().await?;
        let mut manifest = Manifest {
            format: manifest::FORMAT,
            id: Uuid::now_v7(),
            tenant: tenant.id,
            slug: tenant.slug.clone(),
            kind,
            started_at,
            taken_at: started_at,
            finished_at: Utc::now(),
            transfer: Transfer::default(),
            content,
        };
        manifest.transfer = writer.transfer();
        let path = repo::manifest_path(tenant.id, kind, manifest.taken_at, manifest.id);
        let body = stored(&mut manifest);
        match self.repo.put_new(&path, &body).await? {
            Put::Written(bytes) => manifest.transfer.bytes_written += bytes,
            Put::Existed => {
                return Err(BackupError::Corrupt(format!(
                    "manifest {path} exists already"
                )));
            }
        }
        tracing::info!(
            tenant = %tenant.slug, %kind, backup = %manifest.id,
            bytes_read = manifest.transfer.bytes_read,
            bytes_written = manifest.transfer.bytes_written,
            new_chunks = manifest.transfer.new_chunks,
            "backup taken"
        );
        Ok(manifest)
    }

    /// The tenant's files: in its volume in a cluster, else in its
    /// directory here.
    fn files(&self, tenant: &TenantRef, kind: BackupKind) -> Result<Files<'_>, BackupError> {
        match &self.volumes {
            Some(volumes) => Ok(Files::Volume(volumes)),
            None => self.storage_dir(tenant, kind).map(Files::Dir),
        }
    }

    fn storage_dir(&self, tenant: &TenantRef, kind: BackupKind) -> Result<PathBuf, BackupError> {
        let storage = self.data.storage.as_ref().ok_or(BackupError::Nothing {
            tenant: tenant.slug.clone(),
            kind,
            reason: "tenants' files are not on this host (no --tenant-storage-dir)",
        })?;
        Ok(storage.dir(&tenant.slug))
    }

    /// The complete backups of `tenant` of `kind`, oldest first (a
    /// manifest that does not open is an error naming it).
    pub async fn manifests(
        &self,
        tenant: Uuid,
        kind: BackupKind,
    ) -> Result<Vec<Manifest>, BackupError> {
        let mut listed = self
            .repo
            .list(&repo::manifests_prefix(tenant, kind))
            .await?;
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        let mut out = Vec::with_capacity(listed.len());
        // Read once, for the first storage backup's listing.
        let mut chunks = None;
        for object in listed {
            let mut manifest = self.manifest(&object.path).await?;
            if let Content::Storage { entries, listing } = &mut manifest.content {
                if chunks.is_none() {
                    chunks = Some(self.repo.chunks(tenant).await?);
                }
                if let Some(chunks) = &chunks {
                    *entries = read_listing(chunks, listing, &object.path).await?;
                }
            }
            out.push(manifest);
        }
        Ok(out)
    }

    async fn manifest(&self, path: &str) -> Result<Manifest, BackupError> {
        let body = self.repo.get(path).await?;
        let manifest: Manifest = serde_json::from_slice(&body)
            .map_err(|e| BackupError::Corrupt(format!("manifest {path} does not parse: {e}")))?;
        if manifest.format != manifest::FORMAT {
            return Err(BackupError::Corrupt(format!(
                "manifest {path} is of format {}; this coordinator reads format {}",
                manifest.format,
                manifest::FORMAT
            )));
        }
        Ok(manifest)
    }

    /// The latest complete backup of `kind` taken at or before `at`.
    pub async fn latest(
        &self,
        tenant: Uuid,
        kind: BackupKind,
        at: DateTime<Utc>,
    ) -> Result<Option<Manifest>, BackupError> {
        Ok(self
            .manifests(tenant, kind)
            .await?
            .into_iter()
            .filter(|m| m.taken_at <= at)
            .max_by_key(|m| (m.taken_at, m.content.config_version())))
    }

    /// Deletes every object of `tenant` (a purge): its manifests first, so
    /// that a deletion cut short never leaves a backup listed whose chunks
    /// are gone (deleting again finishes it). Returns how many objects.
    pub async fn delete_tenant(&self, tenant: Uuid) -> Result<usize, BackupError> {
        let mut deleted = 0;
        for prefix in [
            format!("tenants/{tenant}/backups"),
            format!("tenants/{tenant}"),
        ] {
            for object in self.repo.list(&prefix).await? {
                self.repo.delete(&object.path).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// A writer of `tenant`'s chunks for one backup run: it knows the
    /// chunks the tenant has, and rewrites those a prune marked.
    pub async fn chunk_writer(&self, tenant: Uuid) -> Result<ChunkWriter, BackupError> {
        let marked = self
            .marks(tenant)
            .await?
            .into_iter()
            .flat_map(|(_, mark)| mark.chunks)
            .collect();
        ChunkWriter::new(self.repo.clone(), tenant, marked).await
    }

    /// Every backup of `tenant`, newest first.
    pub async fn list(&self, tenant: Uuid) -> Result<Vec<BackupInfo>, BackupError> {
        let mut out = Vec::new();
        for &kind in BackupKind::ALL {
            out.extend(
                self.manifests(tenant, kind)
                    .await?
                    .iter()
                    .map(BackupInfo::from),
            );
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.taken_at));
        Ok(out)
    }

    /// Restores the database backup `manifest` of `from` into the
    /// database of `into` (the same tenant, or a new one).
    pub async fn restore_database(
        &self,
        manifest: &Manifest,
        into: &TenantRef,
    ) -> Result<u64, BackupError> {
        self.restore_database_counting(manifest, into, &AtomicU64::new(0))
            .await
    }

    /// [`Self::restore_database`], adding the bytes restored to
    /// `progress` as they go.
    pub async fn restore_database_counting(
        &self,
        manifest: &Manifest,
        into: &TenantRef,
        progress: &AtomicU64,
    ) -> Result<u64, BackupError> {
        let Content::Database { chunks, .. } = &manifest.content else {
            return Err(BackupError::Corrupt(format!(
                "backup {} is not a database backup",
                manifest.id
            )));
        };
        let databases = self.data.databases.as_ref().ok_or(BackupError::Nothing {
            tenant: into.slug.clone(),
            kind: BackupKind::Database,
            reason: "tenants have no databases (no --tenant-database-url)",
        })?;
        let name = database_name(&into.slug);
        database::restore(
            &self.repo,
            manifest.tenant,
            chunks,
            databases,
            &name,
            &name,
            progress,
        )
        .await
    }

    /// Restores the storage backup `manifest` as the files of `into`: the
    /// backup is written beside the tenant's directory, which is then
    /// replaced by it in one rename (the old one removed).
    pub async fn restore_storage(
        &self,
        manifest: &Manifest,
        into: &TenantRef,
    ) -> Result<u64, BackupError> {
        self.restore_storage_counting(manifest, into, &AtomicU64::new(0))
            .await
    }

    /// [`Self::restore_storage`], adding the bytes restored to `progress`
    /// as they go.
    pub async fn restore_storage_counting(
        &self,
        manifest: &Manifest,
        into: &TenantRef,
        progress: &AtomicU64,
    ) -> Result<u64, BackupError> {
        let Content::Storage { entries, .. } = &manifest.content else {
            return Err(BackupError::Corrupt(format!(
                "backup {} is not a storage backup",
                manifest.id
            )));
        };
        let dir = match self.files(into, BackupKind::Storage)? {
            Files::Dir(dir) => dir,
            Files::Volume(volumes) => {
                let pod = volumes.open(&into.slug, Access::Write).await?;
                let written =
                    volume::restore::restore(&self.repo, manifest.tenant, entries, &pod, progress)
                        .await;
                pod.close().await;
                return written;
            }
        };
        let aside = dir.with_file_name(format!(
            ".{}.before-restore-{}",
            into.slug,
            Uuid::new_v4().simple()
        ));
        let restored =
            dir.with_file_name(format!(".{}.restored-{}", into.slug, manifest.id.simple()));
        let _ = tokio::fs::remove_dir_all(&restored).await;
        let written =
            storage::restore(&self.repo, manifest.tenant, entries, &restored, progress).await?;
        let moved = tokio::fs::rename(&dir, &aside).await;
        if let Err(source) = tokio::fs::rename(&restored, &dir).await {
            if moved.is_ok() {
                let _ = tokio::fs::rename(&aside, &dir).await;
            }
            return Err(BackupError::Write { path: dir, source });
        }
        if moved.is_ok() {
            let _ = tokio::task::spawn_blocking(move || remove_tree(&aside)).await;
        }
        Ok(written)
    }

    /// Checks that every chunk of `manifest` is in the repository, opens
    /// under this key and holds what its name says. Returns the problems,
    /// each naming the object.
    pub async fn verify(&self, manifest: &Manifest) -> Vec<String> {
        use futures::StreamExt;
        let mut seen = HashSet::new();
        let tenant = manifest.tenant;
        let chunks = match self.repo.chunks(tenant).await {
            Ok(chunks) => chunks,
            Err(err) => return vec![knowton_common::error_chain(&err)],
        };
        let unique: Vec<ChunkRef> = manifest
            .content
            .chunks()
            .filter(|c| seen.insert(c.id.as_str()))
            .cloned()
            .collect();
        let checks = unique.into_iter().map(|chunk| {
            let fetched = chunks.fetch(&chunk.id);
            async move {
                match fetched.await {
                    Ok(data) if data.len() as u64 == chunk.len => None,
                    Ok(data) => Some(format!(
                        "chunk {} holds {} bytes, the backup expects {}",
                        chunk.id,
                        data.len(),
                        chunk.len
                    )),
                    Err(err) => Some(knowton_common::error_chain(&err)),
                }
            }
        });
        futures::stream::iter(checks)
            .buffer_unordered(VERIFY_READS)
            .filter_map(std::future::ready)
            .collect()
            .await
    }
}

/// The manifest as stored: without a storage backup's entries, which are
/// in its listing.
fn stored(manifest: &mut Manifest) -> Vec<u8> {
    let entries = match &mut manifest.content {
        Content::Storage { entries, .. } => std::mem::take(entries),
        Content::Database { .. } | Content::Configuration { .. } => Vec::new(),
    };
    let body = serde_json::to_vec(&manifest).expect("a manifest serialises");
    if let Content::Storage { entries: slot, .. } = &mut manifest.content {
        *slot = entries;
    }
    body
}

/// The entries of the storage backup at `path` from its `listing`.
async fn read_listing(
    chunks: &repo::Chunks,
    listing: &[ChunkRef],
    path: &str,
) -> Result<Vec<manifest::Entry>, BackupError> {
    use futures::{StreamExt, TryStreamExt};
    let ids: Vec<String> = listing.iter().map(|c| c.id.clone()).collect();
    let pieces: Vec<Vec<u8>> = futures::stream::iter(ids)
        .map(|id| chunks.fetch(&id))
        .buffered(VERIFY_READS)
        .try_collect()
        .await?;
    listing::parse(&pieces).map_err(|e| {
        BackupError::Corrupt(format!("the listing of backup {path} does not parse: {e}"))
    })
}

/// Removes a tree whose directories may be read-only.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700))?;
            remove_tree(&entry.path())?;
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    std::fs::remove_dir_all(dir)
}
