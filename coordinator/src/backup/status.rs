//! What the coordinator knows of each tenant's backups, read from the
//! store every minute and after each run or verification here: the last
//! good backup of each kind, the failures since, the latest verification.
//! The metrics and the health engine's `backup` check read it without
//! waiting on the store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::{BackupKind, FailureStreak, LastBackup, Store, StoreError, Verification};

/// One tenant's backups as last read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantBackups {
    pub slug: String,
    /// When the last good backup of each kind started.
    pub last_success: Vec<(BackupKind, DateTime<Utc>)>,
    /// Kinds whose runs failed since their last success.
    pub failing: Vec<FailureStreak>,
    /// The latest verification of the tenant's backups.
    pub verification: Option<Verification>,
    /// Configuration versions committed and not backed up yet.
    pub config_pending: i64,
}

/// The configuration queue's writer failing: since when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFailure {
    pub since: DateTime<Utc>,
    pub error: String,
}

impl TenantBackups {
    pub fn last_success(&self, kind: BackupKind) -> Option<DateTime<Utc>> {
        self.last_success
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, at)| *at)
    }

    pub fn failing(&self, kind: BackupKind) -> Option<&FailureStreak> {
        self.failing.iter().find(|f| f.kind == kind)
    }
}

/// The last reading, shared.
#[derive(Debug, Default)]
pub struct BackupStatus {
    read: RwLock<Reading>,
    /// Held through a refresh's reads and its store: refreshes overlapping
    /// (the minute's and a run's) would otherwise land in any order, an
    /// older reading replacing a newer one until the next minute.
    refreshing: tokio::sync::Mutex<()>,
    /// Tenants (slugs) whose backups changed at the last readings, not
    /// taken yet.
    changed: Mutex<HashSet<String>>,
    /// Woken when [`Self::take_changed`] has something.
    pub wake: tokio::sync::Notify,
    /// Whether the configuration queue's writer is failing (this replica's,
    /// as the leader drains it).
    config_queue: Mutex<Option<QueueFailure>>,
}

#[derive(Debug, Default)]
struct Reading {
    last: Vec<LastBackup>,
    tenants: HashMap<Uuid, Arc<TenantBackups>>,
}

impl BackupStatus {
    /// Reads every active tenant's backups from the store.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let last = store.last_backup_successes().await?;
        let streaks = store.backup_failure_streaks().await?;
        let verifications = store.latest_verifications().await?;
        let backlog = store.config_backlog().await?;
        let mut tenants: HashMap<Uuid, TenantBackups> = HashMap::new();
        for l in &last {
            entry(&mut tenants, l.tenant_id, &l.slug)
                .last_success
                .push((l.kind, l.started_at));
        }
        for s in streaks {
            let (id, slug) = (s.tenant_id, s.slug.clone());
            entry(&mut tenants, id, &slug).failing.push(s);
        }
        for (slug, v) in verifications {
            let id = v.tenant_id;
            entry(&mut tenants, id, &slug).verification = Some(v);
        }
        for (id, slug, pending) in backlog {
            entry(&mut tenants, id, &slug).config_pending = pending;
        }
        let tenants: HashMap<Uuid, Arc<TenantBackups>> = tenants
            .into_iter()
            .map(|(id, t)| (id, Arc::new(t)))
            .collect();
        let mut read = self.read.write().expect("backup status lock");
        let changed: Vec<String> = tenants
            .iter()
            .filter(|(id, t)| read.tenants.get(*id) != Some(*t))
            .map(|(_, t)| t.slug.clone())
            .chain(
                read.tenants
                    .iter()
                    .filter(|(id, _)| !tenants.contains_key(*id))
                    .map(|(_, t)| t.slug.clone()),
            )
            .collect();
        *read = Reading { last, tenants };
        drop(read);
        if !changed.is_empty() {
            self.changed
                .lock()
                .expect("backup changes lock")
                .extend(changed);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Records that writing the configuration queue failed with `error`
    /// (failing since now, unless it already was).
    pub fn config_failed(&self, error: String) {
        let mut failing = self.config_queue.lock().expect("config queue lock");
        let since = failing.as_ref().map_or_else(Utc::now, |f| f.since);
        *failing = Some(QueueFailure { since, error });
    }

    /// Records that the configuration queue was written out.
    pub fn config_drained(&self) {
        *self.config_queue.lock().expect("config queue lock") = None;
    }

    /// Whether writing the configuration queue is failing, since when.
    pub fn config_failing(&self) -> Option<QueueFailure> {
        self.config_queue.lock().expect("config queue lock").clone()
    }

    /// The tenants whose backups changed since the last call.
    pub fn take_changed(&self) -> Vec<String> {
        self.changed
            .lock()
            .expect("backup changes lock")
            .drain()
            .collect()
    }

    /// Each active tenant's last successful backup of each kind.
    pub fn last_successes(&self) -> Vec<LastBackup> {
        self.read.read().expect("backup status lock").last.clone()
    }

    /// Configuration versions not backed up yet, all tenants together.
    pub fn config_pending(&self) -> i64 {
        self.read
            .read()
            .expect("backup status lock")
            .tenants
            .values()
            .map(|t| t.config_pending)
            .sum()
    }

    /// `tenant`'s backups as last read (none: never backed up, verified
    /// or failed).
    pub fn tenant(&self, tenant: Uuid) -> Option<Arc<TenantBackups>> {
        self.read
            .read()
            .expect("backup status lock")
            .tenants
            .get(&tenant)
            .cloned()
    }
}

/// The tenant's entry, named `slug` when new.
fn entry<'a>(
    tenants: &'a mut HashMap<Uuid, TenantBackups>,
    id: Uuid,
    slug: &str,
) -> &'a mut TenantBackups {
    let t = tenants.entry(id).or_default();
    if t.slug.is_empty() {
        t.slug = slug.to_owned();
    }
    t
}
