//! The deployer: turns requests (provisioning, configuration changes, an
//! operator, the periodic and watch-driven reconcile) into deployments of
//! one tenant at a time, records every phase in the store, and repairs
//! drift.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use knowton_common::TenantStatus;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::cluster::{Cluster, ClusterError};
use super::render::{ClusterSettings, TenantSpec, render, to_yaml};
use super::watch::LiveCache;
use crate::ingest::Registry;
use crate::leader::Leadership;
use crate::secrets::{OpenError, SecretBox};
use crate::store::{DeploymentRow, Phase, Store, StoreError, Tenant, now};

mod attempt;
mod drift;
mod purge;
pub mod secrets;

pub use purge::PurgeHold;

/// How long after a failure a reconcile retries the deployment.
const RETRY_FAILED_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// How often the leader looks for deployments other replicas recorded.
const PENDING_SCAN_EVERY: Duration = Duration::from_secs(5);

/// How deployments run.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    pub cluster: ClusterSettings,
    /// How long a rollout may take before the deployment fails.
    pub rollout_timeout: Duration,
    /// How long to wait for the agents to see the tenant healthy.
    pub verify_timeout: Duration,
    /// How often every tenant is checked for drift (besides the watch).
    pub reconcile_every: Duration,
    /// Tenants deployed at once.
    pub concurrency: usize,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            cluster: ClusterSettings::default(),
            rollout_timeout: Duration::from_secs(600),
            verify_timeout: Duration::from_secs(180),
            reconcile_every: Duration::from_secs(600),
            concurrency: 4,
        }
    }
}

/// What asked for a deployment (the vocabulary's name for it).
pub use knowton_common::health::DeploymentTrigger as Trigger;

/// How a deployment's health is verified once it rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Wait (up to `verify_timeout`) for an agent's result saying the
    /// tenant's `/health` answered; fail without one.
    ByAgents,
    /// No agent can report (agent ingest is off): ready, with a reason
    /// saying health was not verified.
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("failed to read the tenant")]
    ReadTenant(#[source] StoreError),
    #[error("failed to record the deployment")]
    RecordDeployment(#[source] StoreError),
    #[error("failed to read the tenant's deployment secrets")]
    ReadSecrets(#[source] StoreError),
    #[error("the tenant's deployment secret {name} is missing")]
    MissingSecret { name: &'static str },
    #[error("failed to open the tenant's deployment secret {name}")]
    OpenSecret {
        name: &'static str,
        #[source]
        source: OpenError,
    },
    #[error("failed to delete the tenant's namespace")]
    DeleteNamespace(#[source] ClusterError),
    #[error("failed to dry-run the tenant's objects")]
    DryRun(#[source] ClusterError),
    #[error("this coordinator does not lead: the leader deploys")]
    NotLeader,
}

impl DeployError {
    /// The cluster's refusal, when that is what failed.
    pub fn cluster(&self) -> Option<&ClusterError> {
        match self {
            DeployError::DeleteNamespace(err) | DeployError::DryRun(err) => Some(err),
            _ => None,
        }
    }
}

/// The deployer's handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Deployer {
    inner: Arc<DeployerState>,
}

#[derive(Debug)]
struct DeployerState {
    store: Arc<dyn Store>,
    /// Opens the tenants' sealed deployment secrets.
    secrets: SecretBox,
    registry: Arc<Registry>,
    cluster: Option<Cluster>,
    settings: DeploySettings,
    verification: Verification,
    /// Tenants waiting for the worker, with what asked (a full deployment
    /// wins over a reconcile).
    queue: Mutex<BTreeMap<Uuid, Queued>>,
    wake: Notify,
    /// Each deployed tenant's objects, for the watch to compare against.
    desired: Mutex<drift::Desired>,
    /// The managed objects as the watch last saw them.
    live: Arc<LiveCache>,
    /// Tenants being purged: never deployed again.
    purging: Mutex<HashSet<Uuid>>,
    /// Whether this replica leads (and so deploys).
    leadership: Leadership,
    counters: DeployCounters,
}

/// What the deployer did, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeployCounters {
    pub ready: AtomicU64,
    pub failed: AtomicU64,
    pub skipped: AtomicU64,
    pub drift_checks: AtomicU64,
    pub drift_repairs: AtomicU64,
    pub pruned: AtomicU64,
    pub scaled_up: AtomicU64,
    pub scaled_down: AtomicU64,
}

/// A tenant waiting for the worker.
#[derive(Debug, Clone, Copy)]
struct Queued {
    trigger: Trigger,
    /// When the latest request came: an attempt started after it serves
    /// every request queued so far.
    at: chrono::DateTime<chrono::Utc>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Deployer {
    pub fn new(
        store: Arc<dyn Store>,
        secrets: SecretBox,
        registry: Arc<Registry>,
        cluster: Option<Cluster>,
        settings: DeploySettings,
        verification: Verification,
        leadership: Leadership,
    ) -> Self {
        Deployer {
            inner: Arc::new(DeployerState {
                leadership,
                counters: DeployCounters::default(),
                store,
                secrets,
                registry,
                cluster,
                settings,
                verification,
                queue: Mutex::new(BTreeMap::new()),
                wake: Notify::new(),
                desired: Mutex::default(),
                purging: Mutex::new(HashSet::new()),
                live: Arc::default(),
            }),
        }
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.as_ref()
    }

    pub fn is_leader(&self) -> bool {
        self.inner.leadership.is_leader()
    }

    pub fn leadership(&self) -> &Leadership {
        &self.inner.leadership
    }

    pub fn counters(&self) -> &DeployCounters {
        &self.inner.counters
    }

    /// The managed objects as the watch last saw them.
    pub fn live(&self) -> &Arc<LiveCache> {
        &self.inner.live
    }

    /// The store the deployer records deployments in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The agents' results.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    pub fn settings(&self) -> &DeploySettings {
        &self.inner.settings
    }

    /// Asks for a deployment of `tenant`: recorded as pending (unless one
    /// is under way, which the new one follows) and queued.
    pub async fn request(
        &self,
        tenant: Uuid,
        trigger: Trigger,
    ) -> Result<DeploymentRow, DeployError> {
        let row = self
            .inner
            .store
            .request_deployment(tenant, trigger)
            .await
            .map_err(DeployError::RecordDeployment)?;
        self.enqueue_at(tenant, trigger, row.requested_at);
        Ok(row)
    }

    /// [`Self::request`] after a change that is already committed: a
    /// failure to record the request is logged, not returned (the change
    /// stands, and the next reconcile deploys it).
    pub async fn after_change(&self, tenant: Uuid, trigger: Trigger) {
        if let Err(err) = self.request(tenant, trigger).await {
            self.enqueue(tenant, trigger);
            tracing::warn!(tenant_id = %tenant, trigger = trigger.as_str(), error = %knowton_common::error_chain(&err), "failed to record a deployment request; deploying anyway");
        }
    }

    fn enqueue(&self, tenant: Uuid, trigger: Trigger) {
        self.enqueue_at(tenant, trigger, now());
    }

    /// Queues `tenant`, asked for at `at` (an attempt starting later
    /// serves the request).
    fn enqueue_at(&self, tenant: Uuid, trigger: Trigger, at: chrono::DateTime<chrono::Utc>) {
        let mut queue = lock(&self.inner.queue);
        let entry = queue.entry(tenant).or_insert(Queued { trigger, at });
        entry.trigger = entry.trigger.min(trigger);
        entry.at = entry.at.max(at);
        drop(queue);
        self.inner.wake.notify_one();
    }

    /// The tenant's objects as the deployer would apply them now.
    pub async fn render_tenant(&self, tenant: &Tenant) -> Result<Vec<Value>, DeployError> {
        Ok(self.rendering(tenant).await?.0)
    }

    /// [`Self::render_tenant`], with the restore job holding the tenant at
    /// zero replicas, if one does (it is rendered stopped).
    async fn rendering(&self, tenant: &Tenant) -> Result<(Vec<Value>, Option<Uuid>), DeployError> {
        let store = &self.inner.store;
        let row = store
            .deployment(tenant.id)
            .await
            .map_err(DeployError::ReadTenant)?;
        let alive_since = now()
            - chrono::Duration::from_std(crate::backup::service::STALE_AFTER)
                .expect("a short duration");
        let held = store
            .live_restore(tenant.id, alive_since)
            .await
            .map_err(DeployError::ReadTenant)?
            .filter(|restore| restore.holds_tenant)
            .map(|restore| restore.id);
        let secrets = secrets::open(store.as_ref(), &self.inner.secrets, tenant.id).await?;
        let mut spec = spec_of(tenant, row.as_ref());
        spec.stopped |= held.is_some();
        Ok((render(&spec, &secrets, &self.inner.settings.cluster), held))
    }

    /// Runs deployments until `shutdown` turns true: queued requests, a
    /// reconcile of every tenant at start and every `reconcile_every`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut leader = self.inner.leadership.subscribe();
        let mut electing = true;
        let every = self.inner.settings.reconcile_every;
        let mut next_reconcile = tokio::time::Instant::now();
        // Requests recorded by other replicas (which do not deploy).
        let mut pending_scan = tokio::time::interval(PENDING_SCAN_EVERY);
        pending_scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running: HashSet<Uuid> = HashSet::new();
        let mut tasks: JoinSet<Uuid> = JoinSet::new();
        loop {
            let leads = leader.borrow_and_update().is_some();
            while leads && tasks.len() < self.inner.settings.concurrency.max(1) {
                let next = {
                    let mut queue = lock(&self.inner.queue);
                    let id = queue.keys().find(|id| !running.contains(id)).copied();
                    id.and_then(|id| queue.remove(&id).map(|t| (id, t)))
                };
                let Some((id, queued)) = next else { break };
                running.insert(id);
                let deployer = self.clone();
                tasks.spawn(async move {
                    match deployer.deploy(id, queued).await {
                        // Purged while it was deployed: nothing to record.
                        Ok(()) | Err(DeployError::RecordDeployment(StoreError::NotFound)) => {}
                        // Leadership moved mid-attempt: the new leader
                        // reconciles every tenant when it takes over.
                        Err(DeployError::NotLeader | DeployError::RecordDeployment(StoreError::Fenced { .. })) => {
                            tracing::info!(tenant_id = %id, "no longer the leader: the deployment is left to the new leader");
                        }
                        Err(err) => {
                            tracing::error!(tenant_id = %id, error = %knowton_common::error_chain(&err), "deployment could not be recorded");
                        }
                    }
                    id
                });
            }
            tokio::select! {
                Some(done) = tasks.join_next() => {
                    if let Ok(id) = done {
                        running.remove(&id);
                    }
                }
                () = self.inner.wake.notified() => {}
                changed = leader.changed(), if electing => {
                    // Closed: leadership no longer changes (a lone
                    // coordinator, or shutting down).
                    electing = changed.is_ok();
                    if electing && leader.borrow().is_some() {
                        // A new leader checks everything at once.
                        next_reconcile = tokio::time::Instant::now();
                    }
                }
                () = tokio::time::sleep_until(next_reconcile), if leads => {
                    next_reconcile += every;
                    if let Err(err) = self.reconcile_all().await {
                        tracing::warn!(error = %knowton_common::error_chain(&err), "failed to list tenants to reconcile");
                    }
                }
                _ = pending_scan.tick(), if leads => {
                    match self.inner.store.deployments_in(Phase::Pending).await {
                        Ok(rows) => {
                            for row in rows.into_iter().filter(|r| !running.contains(&r.tenant_id)) {
                                self.enqueue_at(row.tenant_id, Trigger::Manual, row.requested_at);
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "failed to read pending deployments"),
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        tasks.shutdown().await;
    }

    /// Queues every tenant for a reconcile; a tenant never deployed (from
    /// before deployments existed, or whose request a crash lost) for its
    /// first deployment.
    async fn reconcile_all(&self) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let deployed: HashSet<Uuid> = store
            .deployments()
            .await?
            .into_iter()
            .map(|row| row.tenant_id)
            .collect();
        let mut after = None;
        loop {
            let page = store.list_tenants(500, after, None).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for tenant in &page {
                if deployed.contains(&tenant.id) {
                    self.enqueue(tenant.id, Trigger::Reconcile);
                } else {
                    // Any attempt since its creation serves it (the
                    // provisioning request may be recorded meanwhile).
                    self.enqueue_at(tenant.id, Trigger::Provisioned, tenant.created_at);
                }
            }
        }
        Ok(())
    }
}

/// What the tenant is rendered from: its record and deployment settings.
pub fn spec_of(tenant: &Tenant, row: Option<&DeploymentRow>) -> TenantSpec {
    TenantSpec {
        id: tenant.id,
        slug: tenant.slug.clone(),
        plan: tenant.plan,
        domain: tenant.domain.clone(),
        features: tenant.features,
        branding: tenant.branding.clone(),
        allowlist: row.map(|r| r.allowlist.clone()).unwrap_or_default(),
        stopped: tenant.status == TenantStatus::Deprovisioned,
        min_replicas: row.and_then(|r| r.min_replicas),
    }
}

/// sha256 of the objects as a dry-run prints them (Secret values left out).
pub fn objects_hash(objects: &[Value]) -> String {
    knowton_common::hex(&Sha256::digest(to_yaml(objects).as_bytes()))
}

#[cfg(test)]
mod tests;
