//! Configuration backups: every configuration version a tenant commits
//! (plan, features, branding, domain, thresholds, notification channels
//! with their secrets still sealed) is written to the repository as a
//! backup of its own.
//!
//! The queue is the configuration history: a version's row is written in
//! the transaction of the change and is pending until its backup is
//! written, so a crash skips none. The leader drains it ([`run`]) as soon
//! as a change commits here (every few seconds for another replica's),
//! and again with backoff while the repository fails. A version's backup
//! has one path and id, derived from the tenant, the version and its
//! commit time: written again after a crash between the write and the
//! mark, it is found there and counted as done.
//!
//! A restore applies a version through the tenant lifecycle
//! ([`ConfigurationTarget`]), as a new version.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use knowton_common::thresholds::Thresholds;
use knowton_common::{Branding, Features, Plan};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::manifest::{self, Content, Manifest};
use super::repo::{self, Put};
use super::service::{BackupService, RestoreError};
use super::{BackupError, BackupKind, Backups, TenantRef};
use crate::leader::Leadership;
use crate::store::{CommittedConfig, SealedChannels, Store};

/// Versions read from the queue at a time.
const BATCH: i64 = 100;
/// How often the queue is read without a change committed here: another
/// replica's changes are found this late at most.
const POLL_EVERY: Duration = Duration::from_secs(5);
/// The first wait after the repository failed; each next one is twice as
/// long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The id of the backup of `tenant`'s configuration `version` committed at
/// `changed_at`: the same every time it is computed, and ordered by time
/// as the ids of other backups (UUIDv7 layout: the commit's milliseconds,
/// then the version and a hash of the tenant).
pub fn backup_id(tenant: Uuid, version: i64, changed_at: DateTime<Utc>) -> Uuid {
    let mut rest = [0u8; 10];
    rest[..6].copy_from_slice(&version.to_be_bytes()[2..]);
    let hash = Sha256::digest(tenant.as_bytes());
    rest[6..].copy_from_slice(&hash[..4]);
    let millis = u64::try_from(changed_at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &rest).into_uuid()
}

impl Backups {
    /// Writes the backup of `committed`, unless it is there already (then
    /// the one there is the backup). Returns its manifest.
    pub async fn put_configuration(
        &self,
        committed: &CommittedConfig,
    ) -> Result<Manifest, BackupError> {
        let v = &committed.version;
        let id = backup_id(committed.tenant_id, v.version, v.changed_at);
        let mut manifest = Manifest {
            format: manifest::FORMAT,
            id,
            tenant: committed.tenant_id,
            slug: committed.slug.clone(),
            kind: BackupKind::Configuration,
            started_at: v.changed_at,
            taken_at: v.changed_at,
            finished_at: Utc::now(),
            transfer: Default::default(),
            content: Content::Configuration {
                version: v.version,
                actor: v.actor.clone(),
                change: v.change.clone(),
                snapshot: v.snapshot.clone(),
                settings: committed.settings.clone().map(Box::new),
            },
        };
        let path = repo::manifest_path(
            committed.tenant_id,
            BackupKind::Configuration,
            v.changed_at,
            id,
        );
        let body = serde_json::to_vec(&manifest).expect("a manifest serialises");
        match self.repository().put_new(&path, &body).await? {
            Put::Written(bytes) => {
                manifest.transfer.bytes_written = bytes;
                tracing::info!(tenant = %committed.slug, version = v.version, backup = %id, "configuration backed up");
            }
            Put::Existed => {
                tracing::debug!(tenant = %committed.slug, version = v.version, "configuration backup was written before");
            }
        }
        Ok(manifest)
    }
}

/// Writes the backup of every pending configuration version (only
/// `tenant`'s when given), marking each done once written; returns how
/// many. Stops at the first failure: what is left stays pending.
pub async fn drain(
    store: &dyn Store,
    backups: &Backups,
    tenant: Option<Uuid>,
) -> Result<usize, BackupError> {
    let mut written = 0;
    loop {
        let batch = store
            .pending_config_versions(tenant, BATCH)
            .await
            .map_err(BackupError::Queue)?;
        if batch.is_empty() {
            return Ok(written);
        }
        for committed in &batch {
            backups.put_configuration(committed).await?;
            store
                .mark_config_backed_up(committed.tenant_id, committed.version.version)
                .await
                .map_err(BackupError::Queue)?;
            written += 1;
        }
    }
}

/// Drains the queue while this replica leads, until `stop`: at once after
/// a change commits here, every [`POLL_EVERY`] otherwise, and after a
/// failure again with backoff, so that no version is dropped.
pub async fn run(
    service: BackupService,
    leadership: Leadership,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let committed = service.store().config_committed();
    let mut leader = leadership.subscribe();
    let mut backoff: Option<Duration> = None;
    loop {
        if leadership.is_leader() {
            match drain(service.store(), service.backups(), None).await {
                Ok(_) => {
                    backoff = None;
                    service.status().config_drained();
                }
                Err(err) => {
                    service
                        .status()
                        .config_failed(knowton_common::error_chain(&err));
                    let next = backoff.map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                    tracing::warn!(
                        error = %knowton_common::error_chain(&err),
                        retry_in_seconds = next.as_secs(),
                        "failed to back up configuration versions; they stay queued"
                    );
                    backoff = Some(next);
                }
            }
        }
        match backoff {
            // The repository failed: a change committed meanwhile waits
            // for the retry too.
            Some(wait) => tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            },
            None => tokio::select! {
                _ = committed.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = leader.changed() => {}
                _ = stop.wait_for(|s| *s) => return,
            },
        }
    }
}

/// A configuration version read back from its backup, to be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedConfiguration {
    pub version: i64,
    pub taken_at: DateTime<Utc>,
    pub plan: Plan,
    pub features: Features,
    pub branding: Branding,
    pub domain: String,
    /// Thresholds and channels; `None` for a version recorded before
    /// configuration backups (they are left as they are).
    pub settings: Option<SavedSettings>,
}

/// The thresholds and channels of a saved version.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedSettings {
    /// `None`: the defaults.
    pub thresholds: Option<Thresholds>,
    /// `None`: none were recorded (left as they are).
    pub channels: Option<SealedChannels>,
}

/// The part of a snapshot a restore applies.
#[derive(Deserialize)]
struct Snapshot {
    plan: Plan,
    domain: String,
    features: Features,
    branding: Branding,
}

impl SavedConfiguration {
    /// The configuration `manifest` holds.
    pub fn of(manifest: &Manifest) -> Result<Self, BackupError> {
        let Content::Configuration {
            version,
            snapshot,
            settings,
            ..
        } = &manifest.content
        else {
            return Err(BackupError::Corrupt(format!(
                "backup {} is not a configuration backup",
                manifest.id
            )));
        };
        let snap: Snapshot = serde_json::from_value(snapshot.clone()).map_err(|e| {
            BackupError::Corrupt(format!(
                "configuration backup {} does not hold a configuration: {e}",
                manifest.id
            ))
        })?;
        Ok(SavedConfiguration {
            version: *version,
            taken_at: manifest.taken_at,
            plan: snap.plan,
            features: snap.features,
            branding: snap.branding,
            domain: snap.domain,
            settings: settings.as_deref().map(|s| SavedSettings {
                thresholds: s.thresholds,
                channels: s.channels.clone(),
            }),
        })
    }
}

/// What applies a restored configuration: the tenant lifecycle, so that
/// it is a change like any other (a new version, deployed, announced).
#[async_trait]
pub trait ConfigurationTarget: std::fmt::Debug + Send + Sync {
    /// Makes `into`'s configuration `saved` (a version of `from`'s), by
    /// `actor`; returns the versions written (none when nothing changed).
    /// Into another tenant, the domain stays `into`'s own (a domain
    /// belongs to one tenant).
    async fn apply_configuration(
        &self,
        from: &TenantRef,
        into: &TenantRef,
        saved: &SavedConfiguration,
        actor: &str,
    ) -> Result<Vec<i64>, Box<dyn std::error::Error + Send + Sync>>;
}

impl BackupService {
    /// Applies restored configurations through `target`.
    pub fn with_configuration_target(mut self, target: Arc<dyn ConfigurationTarget>) -> Self {
        self.config_target = Some(target);
        self
    }

    /// The backup of `kind` a restore of `tenant` to `at` takes: for the
    /// configuration, its pending versions are written first, so that a
    /// version committed before `at` is found even if the queue has not
    /// reached it.
    pub(super) async fn latest_for_restore(
        &self,
        tenant: &TenantRef,
        kind: BackupKind,
        at: DateTime<Utc>,
    ) -> Result<Option<Manifest>, BackupError> {
        if kind == BackupKind::Configuration {
            drain(self.store(), self.backups(), Some(tenant.id)).await?;
        }
        self.backups().latest(tenant.id, kind, at).await
    }

    /// The safety backup of `into`'s configuration before a restore: its
    /// current version, whose backup is written now if the queue has not.
    pub(super) async fn configuration_safety(
        &self,
        into: &TenantRef,
    ) -> Result<Uuid, RestoreError> {
        let safety = |error: String| RestoreError::Safety {
            kind: BackupKind::Configuration,
            error,
        };
        let current = self
            .store()
            .latest_config_version(into.id)
            .await
            .map_err(|e| safety(knowton_common::error_chain(&e)))?
            .ok_or_else(|| safety(format!("tenant {} has no configuration version", into.slug)))?;
        let manifest = self
            .backups()
            .put_configuration(&current)
            .await
            .map_err(|e| safety(knowton_common::error_chain(&e)))?;
        // Marked by the queue's own drain if this fails: it is written.
        let _ = self
            .store()
            .mark_config_backed_up(into.id, current.version.version)
            .await;
        Ok(manifest.id)
    }

    /// Applies the configuration backup `manifest` of `from` to `into`.
    pub(super) async fn restore_configuration(
        &self,
        manifest: &Manifest,
        from: &TenantRef,
        into: &TenantRef,
        actor: &str,
    ) -> Result<u64, BackupError> {
        let saved = SavedConfiguration::of(manifest)?;
        let target = self
            .config_target
            .as_ref()
            .ok_or_else(|| BackupError::Apply {
                tenant: into.slug.clone(),
                source: "this coordinator restores no configuration".into(),
            })?;
        let versions = target
            .apply_configuration(from, into, &saved, &format!("{actor} (restore)"))
            .await
            .map_err(|source| BackupError::Apply {
                tenant: into.slug.clone(),
                source,
            })?;
        tracing::info!(from = %from.slug, into = %into.slug, restored = saved.version, ?versions, actor, "configuration restored");
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_version_s_backup_id_is_stable_and_ordered_by_time() {
        let tenant = Uuid::new_v4();
        let at = Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap();
        let id = backup_id(tenant, 3, at);
        assert_eq!(id, backup_id(tenant, 3, at), "the same every time");
        assert_ne!(id, backup_id(tenant, 4, at));
        assert_ne!(id, backup_id(Uuid::new_v4(), 3, at));
        assert!(backup_id(tenant, 3, at + chrono::Duration::milliseconds(1)) > id);
        assert!(backup_id(tenant, 4, at) > id, "the same moment: by version");
        assert_eq!(id.get_version_num(), 7);
    }
}
