//! Per-tenant rate limiting at the plan's rate: GCRA with a burst of a
//! minute's requests ([`knowton_common::ratelimit`]), both API keys of a
//! tenant drawing on one budget.
//!
//! On SQLite one coordinator serves, and the budget is held in memory. On
//! PostgreSQL the replicas share each tenant's budget in the database
//! ([`RateLimitStore`]) without a round trip per request: a replica leases
//! tokens in small batches and spends them locally, one lease in flight
//! per tenant (the tenant's other requests wait for it and are judged by
//! what it brought).
//!
//! # Why the plan's rate holds within ±10% across three replicas
//! - A lease asks for at most 2% of the rate ([`budget::batch_limit`]:
//!   basic 2, professional 10, enterprise 40), and no more than the
//!   tenant's requests to this replica in the last second: a tenant that
//!   sends slowly leases one token a request and none lapse.
//! - Stricter: tokens leased are not seen by the other replicas. When one
//!   is refused, each other holds at most a batch less one, so a tenant
//!   spread over 3 replicas can be refused up to 2 × (batch − 1) early:
//!   basic 2 of 100 (2%), professional 18 of 500 (3.6%), enterprise 78 of
//!   2000 (3.9%). These are spent by the next requests to those replicas;
//!   tokens are lost only when a replica's traffic for the tenant stops
//!   or falls within [`budget::LEASE_LIFETIME_MS`] (2 s), at most a batch
//!   (2%) per replica then.
//! - More lenient: a token may be spent up to 2 s after the shared budget
//!   granted it, so a tenant can get 2/60 = 3.3% of its rate more in a
//!   minute than the budget alone allows (and never more than the 3
//!   batches, 6%, replicas hold).
//! - A refused lease stands until the tokens it asked for are back, so a
//!   tenant over its rate costs a replica a lease per batch's worth of
//!   refill (about one a 1.2 s), not one a request.
//!
//! `x-ratelimit-remaining` is approximate across replicas: the tokens this
//! replica leased and what the shared budget held at its last lease.
//!
//! When the database does not answer a lease within [`LEASE_TIMEOUT`], the
//! replica judges every tenant for [`SHARED_RETRY_MS`] by a budget of its
//! own at the plan's rate divided by the live replicas (as its last
//! heartbeat counted them), and
//! counts each such request (`knowton_rate_limit_fallback_requests_total`).
//!
//! # Layout
//! - `budget`: one tenant's budget on one replica, and its decisions.

pub mod budget;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use knowton_common::Plan;
use tokio::sync::{Mutex as AsyncMutex, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use self::budget::Budget;
use crate::metrics::HttpMetrics;
use crate::replicas::LiveReplicas;
use crate::store::RateLimitStore;

/// The outcome of one request against its tenant's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed { limit: u32, remaining: u32 },
    Limited { limit: u32, retry_after: Duration },
}

/// The longest a request waits for a lease before it is judged by the
/// replica's own share.
pub const LEASE_TIMEOUT: Duration = Duration::from_millis(500);

/// After a lease failed, how long (ms) every tenant is judged by the
/// replica's own share before the shared budget is tried again.
pub const SHARED_RETRY_MS: i64 = 1_000;

/// How often local budgets that are full again are forgotten, and shared
/// ones deleted.
const SHRINK_EVERY: Duration = Duration::from_secs(60);

/// Judges each tenant-key request against its tenant's budget: held here
/// ([`Self::local`]) or shared by the replicas ([`Self::shared`]).
pub struct TenantRateLimiter {
    budgets: Mutex<HashMap<Uuid, Arc<AsyncMutex<Budget>>>>,
    /// The replicas' shared budgets (PostgreSQL); none on SQLite.
    shared: Option<Arc<dyn RateLimitStore>>,
    /// Time zero of the budgets held here.
    epoch: Instant,
    /// Live replicas as the heartbeat last counted them: the divisor of
    /// the fallback share.
    live_replicas: LiveReplicas,
    /// Until when (ms on this clock) the shared budget is not tried.
    shared_down_until_ms: AtomicI64,
    metrics: Arc<HttpMetrics>,
}

impl std::fmt::Debug for TenantRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantRateLimiter")
            .field("shared", &self.shared.is_some())
            .field("live_replicas", &self.live_replicas())
            .finish_non_exhaustive()
    }
}

impl TenantRateLimiter {
    /// Budgets held in memory: the one coordinator of a SQLite database.
    pub fn local(metrics: Arc<HttpMetrics>) -> Self {
        Self::new(None, metrics)
    }

    /// Budgets shared with the other replicas through `store`.
    pub fn shared(store: Arc<dyn RateLimitStore>, metrics: Arc<HttpMetrics>) -> Self {
        Self::new(Some(store), metrics)
    }

    fn new(shared: Option<Arc<dyn RateLimitStore>>, metrics: Arc<HttpMetrics>) -> Self {
        TenantRateLimiter {
            budgets: Mutex::default(),
            shared,
            epoch: Instant::now(),
            live_replicas: LiveReplicas::default(),
            shared_down_until_ms: AtomicI64::new(i64::MIN),
            metrics,
        }
    }

    pub async fn check(&self, tenant: Uuid, plan: Plan) -> Decision {
        let limit = plan.limits().api_requests_per_minute;
        let entry = self.budget(tenant);
        let mut budget = entry.lock().await;
        let now = self.now_ms();
        let Some(store) = &self.shared else {
            return budget.judge_locally(now, limit, 1);
        };
        if let Some(decision) = budget.judge_by_lease(now, limit) {
            return decision;
        }
        if now < self.shared_down_until_ms.load(Ordering::Relaxed) {
            return self.fallback(&mut budget, now, limit);
        }
        let want = budget.want(limit);
        let lease = tokio::time::timeout(LEASE_TIMEOUT, store.take_tokens(tenant, limit, want));
        let failure = match lease.await {
            Ok(Ok(taken)) => {
                let decision = budget.leased(self.now_ms(), limit, want, taken);
                let outcome = match decision {
                    Decision::Allowed { .. } => "granted",
                    Decision::Limited { .. } => "limited",
                };
                self.metrics
                    .rate_limit_leases
                    .with_label_values(&[outcome])
                    .inc();
                return decision;
            }
            Ok(Err(err)) => knowton_common::error_chain(&err),
            Err(_) => format!("no answer within {} ms", LEASE_TIMEOUT.as_millis()),
        };
        self.metrics
            .rate_limit_leases
            .with_label_values(&["failed"])
            .inc();
        let now = self.now_ms();
        let was = self
            .shared_down_until_ms
            .swap(now + SHARED_RETRY_MS, Ordering::Relaxed);
        if was < now {
            tracing::warn!(
                error = %failure,
                replicas = self.live_replicas(),
                "failed to lease from a tenant's shared rate budget; limiting each tenant to its plan's rate divided by the live replicas"
            );
        }
        self.fallback(&mut budget, now, limit)
    }

    /// Judges by this replica's own share of the plan's rate.
    fn fallback(&self, budget: &mut Budget, now: i64, limit: u32) -> Decision {
        self.metrics.rate_limit_fallbacks.inc();
        budget.judge_locally(now, limit, self.live_replicas())
    }

    /// Live replicas as last counted (at least this one).
    pub fn live_replicas(&self) -> u32 {
        self.live_replicas.get()
    }

    /// Sets the live replicas the fallback share divides by.
    pub fn set_live_replicas(&self, count: u32) {
        self.live_replicas.set(count);
    }

    /// Where the heartbeat puts its count of the live replicas.
    pub fn live_replicas_handle(&self) -> LiveReplicas {
        self.live_replicas.clone()
    }

    /// Forgets tenants whose budget is full again (bounded memory), and
    /// deletes the shared budgets that are.
    pub async fn shrink(&self) {
        let now = self.now_ms();
        self.budgets.lock().unwrap().retain(|_, entry| {
            // In use by a request, or holding what would be lost.
            Arc::strong_count(entry) > 1 || entry.try_lock().map_or(true, |b| !b.idle(now))
        });
        if let Some(store) = &self.shared
            && let Err(err) = store.forget_full_budgets().await
        {
            tracing::debug!(error = %err, "failed to delete the full shared rate budgets");
        }
    }

    /// Tenants whose budget is held here.
    pub fn tenants_held(&self) -> usize {
        self.budgets.lock().unwrap().len()
    }

    /// Keeps memory bounded (every minute) until `stop`. (The live replica
    /// count comes from the heartbeat: [`Self::live_replicas_handle`].)
    pub fn spawn_upkeep(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SHRINK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is at once: nothing to forget yet.
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                self.shrink().await;
            }
        })
    }

    fn budget(&self, tenant: Uuid) -> Arc<AsyncMutex<Budget>> {
        self.budgets
            .lock()
            .unwrap()
            .entry(tenant)
            .or_default()
            .clone()
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests;
