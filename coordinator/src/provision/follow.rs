//! Keeping every replica's memory of tenants current. A change this
//! replica commits is applied here at once and announced to the others
//! (PostgreSQL `NOTIFY`); what the others announce is applied here within
//! moments; and everything is read again every `resync_every` and whenever
//! an announcement may have been missed, so a lost one is late, not lost.

use std::sync::Arc;
use std::time::Duration;

use knowton_common::TenantStatus;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::TenantLifecycle;
use crate::health::engine::Reload;
use crate::store::{Change, ChangeListener};

/// How long to wait before listening again after the store refused.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

impl TenantLifecycle {
    /// After a committed change of the tenant: applied here, and
    /// announced to the other replicas.
    pub(super) async fn changed(&self, id: Uuid, slug: &str) {
        let change = Change::Tenant {
            id,
            slug: slug.to_owned(),
        };
        self.apply(&change).await;
        if let Err(err) = self.store.announce(&change).await {
            tracing::warn!(tenant = slug, error = %err, "failed to announce a tenant change to the other replicas; their next re-read applies it");
        }
    }

    /// Applies a change made here or by another replica.
    async fn apply(&self, change: &Change) {
        let reload = match change {
            Change::Tenant { id, slug } => {
                let read = async {
                    let tenant = self.store.get_tenant(*id).await?;
                    // The slug may name another tenant by now (purged,
                    // then provisioned again): that one is left alone.
                    let owner = self.store.find_tenant_id(slug).await?;
                    Ok::<_, crate::store::StoreError>((tenant, owner))
                };
                let (tenant, owner) = match read.await {
                    Ok(read) => read,
                    Err(err) => {
                        tracing::warn!(tenant = %slug, error = %err, "failed to read a changed tenant; the next re-read applies it");
                        return;
                    }
                };
                if owner.is_some_and(|owner| owner != *id) {
                    return;
                }
                if !tenant.is_some_and(|t| t.status == TenantStatus::Active) {
                    self.forget(slug).await;
                    return;
                }
                self.directory.insert(slug);
                Reload::Tenant(slug.clone())
            }
            Change::Thresholds { tenant } => Reload::Thresholds(*tenant),
            Change::Silences => Reload::Silences,
        };
        if let Err(err) = self.engine.reload(reload).await {
            tracing::debug!(error = %err, "the health engine did not take the change");
        }
    }

    /// Reads every active tenant again: the directory becomes exactly what
    /// the store holds, and the engine reads its records, thresholds and
    /// silences again.
    async fn resync(&self) {
        let snapshot = self.directory.snapshot();
        let active = match self.store.active_slugs().await {
            Ok(active) => active,
            Err(err) => {
                tracing::warn!(error = %err, "failed to read the active tenants again");
                return;
            }
        };
        let gone = self.directory.replace(active, snapshot);
        for slug in &gone {
            self.forget(slug).await;
        }
        if let Err(err) = self.engine.reload(Reload::Everything).await {
            tracing::debug!(error = %err, "the health engine did not read everything again");
        }
    }

    /// Follows the other replicas' changes until `stop`.
    pub fn spawn_follower(
        self: &Arc<Self>,
        resync_every: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let lifecycle = self.clone();
        tokio::spawn(async move {
            let mut resync = tokio::time::interval(resync_every);
            resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            resync.reset();
            let mut listener: Option<Box<dyn ChangeListener>> = None;
            let mut listening = true;
            loop {
                if listening && listener.is_none() {
                    match lifecycle.store.listen().await {
                        Ok(Some(started)) => {
                            listener = Some(started);
                            // What changed before it listened.
                            lifecycle.resync().await;
                        }
                        // One coordinator on its store: nothing to follow
                        // but the periodic re-read.
                        Ok(None) => listening = false,
                        Err(err) => {
                            tracing::warn!(error = %err, "failed to listen to the other replicas' changes; trying again");
                            tokio::select! {
                                _ = tokio::time::sleep(RELISTEN_AFTER) => continue,
                                _ = stop.wait_for(|s| *s) => return,
                            }
                        }
                    }
                }
                let next = async {
                    match listener.as_mut() {
                        Some(l) => l.next().await,
                        None => std::future::pending().await,
                    }
                };
                let stopped = async {
                    let _ = stop.wait_for(|s| *s).await;
                };
                tokio::select! {
                    () = stopped => return,
                    _ = resync.tick() => lifecycle.resync().await,
                    received = next => match received {
                        Ok(Some(change)) => lifecycle.apply(&change).await,
                        Ok(None) => lifecycle.resync().await,
                        Err(err) => {
                            tracing::warn!(error = %err, "lost the other replicas' changes; listening again");
                            listener = None;
                        }
                    },
                }
            }
        })
    }
}
