//! The limiter on tokio's paused clock: in memory, and replicas sharing an
//! in-memory store that computes what the SQL does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use knowton_common::ratelimit::take;
use tokio::sync::Semaphore;

use super::budget::batch_limit;
use super::*;
use crate::store::{Result, StoreError, Taken};

/// Shared budgets as the SQL keeps them, on a clock of its own (the
/// database's), that can be made to fail, or to hold leases until
/// released.
#[derive(Debug)]
struct FakeBudgets {
    epoch: Instant,
    tats: Mutex<HashMap<Uuid, i64>>,
    leases: AtomicU32,
    in_flight: AtomicU32,
    most_in_flight: AtomicU32,
    failing: AtomicBool,
    gate: Semaphore,
}

impl FakeBudgets {
    fn new() -> Arc<Self> {
        Self::with_gate(Semaphore::MAX_PERMITS)
    }

    /// Leases wait until [`Self::release`].
    fn held() -> Arc<Self> {
        Self::with_gate(0)
    }

    fn with_gate(permits: usize) -> Arc<Self> {
        Arc::new(FakeBudgets {
            // The database's clock is not the replicas'.
            epoch: Instant::now() - Duration::from_secs(3600),
            tats: Mutex::default(),
            leases: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            most_in_flight: AtomicU32::new(0),
            failing: AtomicBool::new(false),
            gate: Semaphore::new(permits),
        })
    }

    fn release(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    fn leases(&self) -> u32 {
        self.leases.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl RateLimitStore for FakeBudgets {
    async fn take_tokens(&self, tenant: Uuid, per_minute: u32, want: u32) -> Result<Taken> {
        self.leases.fetch_add(1, Ordering::SeqCst);
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight
            .fetch_max(now_in_flight, Ordering::SeqCst);
        let _permit = self.gate.acquire().await.unwrap();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("unreachable".to_owned()));
        }
        let now_ms = i64::try_from(self.epoch.elapsed().as_millis()).unwrap();
        let mut tats = self.tats.lock().unwrap();
        let tat = tats.entry(tenant).or_insert(i64::MIN);
        let taken = take(*tat, now_ms, per_minute, want.min(per_minute));
        *tat = taken.tat_ms;
        Ok(Taken {
            granted: taken.granted,
            tat_ms: taken.tat_ms,
            now_ms,
        })
    }

    async fn forget_full_budgets(&self) -> Result<u64> {
        let now_ms = i64::try_from(self.epoch.elapsed().as_millis()).unwrap();
        let mut tats = self.tats.lock().unwrap();
        let before = tats.len();
        tats.retain(|_, tat| *tat > now_ms);
        Ok((before - tats.len()) as u64)
    }
}

fn replicas(store: &Arc<FakeBudgets>, n: usize) -> Vec<TenantRateLimiter> {
    (0..n)
        .map(|_| {
            let limiter = TenantRateLimiter::shared(store.clone(), Arc::default());
            limiter.set_live_replicas(u32::try_from(n).unwrap());
            limiter
        })
        .collect()
}

/// Requests of `tenant` sent to `replicas` in turn until the first is
/// refused: how many were allowed, and the refusal's wait.
async fn allowed_until_refused(
    replicas: &[&TenantRateLimiter],
    tenant: Uuid,
    plan: Plan,
) -> (u32, Duration) {
    let rate = plan.limits().api_requests_per_minute;
    for i in 0..rate * 2 {
        let replica = replicas[i as usize % replicas.len()];
        match replica.check(tenant, plan).await {
            Decision::Allowed { limit, remaining } => {
                assert_eq!(limit, rate);
                assert!(remaining < rate, "{plan}: remaining {remaining}");
            }
            Decision::Limited { retry_after, .. } => return (i, retry_after),
        }
    }
    panic!("{plan}: never limited");
}

#[tokio::test(start_paused = true)]
async fn in_memory_each_plan_allows_its_rate_then_limits() {
    let limiter = TenantRateLimiter::local(Arc::default());
    for plan in Plan::ALL {
        let tenant = Uuid::new_v4();
        let rate = plan.limits().api_requests_per_minute;
        for i in 0..rate {
            match limiter.check(tenant, plan).await {
                Decision::Allowed { limit, remaining } => {
                    assert_eq!(limit, rate);
                    assert_eq!(remaining, rate - i - 1);
                }
                other => panic!("{plan} request {i} limited: {other:?}"),
            }
        }
        match limiter.check(tenant, plan).await {
            Decision::Limited { retry_after, .. } => {
                assert_eq!(retry_after, Duration::from_millis(60_000 / u64::from(rate)));
            }
            other => panic!("{plan} over budget allowed: {other:?}"),
        }
        assert!(matches!(
            limiter.check(Uuid::new_v4(), plan).await,
            Decision::Allowed { .. }
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn three_replicas_hold_a_plan_rate_together_within_the_batches_on_others() {
    let store = FakeBudgets::new();
    let replicas = replicas(&store, 3);
    let all: Vec<_> = replicas.iter().collect();
    for plan in Plan::ALL {
        let rate = plan.limits().api_requests_per_minute;
        let leases_before = store.leases();
        let (spread, _) = allowed_until_refused(&all, Uuid::new_v4(), plan).await;
        // Refused while each other replica may hold a batch less one.
        let held_elsewhere = 2 * (batch_limit(rate) - 1);
        assert!(
            (rate - held_elsewhere..=rate).contains(&spread),
            "{plan}: {spread} allowed across three replicas"
        );
        assert!(
            f64::from(spread) >= f64::from(rate) * 0.9,
            "{plan}: {spread}"
        );
        let leases = store.leases() - leases_before;
        assert!(
            leases <= rate / batch_limit(rate) + 30,
            "{plan}: {leases} leases for {spread} requests"
        );
        // All to one replica: every token leased is spent.
        let (one, retry) = allowed_until_refused(&all[..1], Uuid::new_v4(), plan).await;
        assert_eq!(one, rate, "{plan}");
        assert!(retry > Duration::ZERO && retry <= Duration::from_millis(1_200));
    }
}

#[tokio::test(start_paused = true)]
async fn a_tenant_under_its_rate_loses_no_token_to_leases_that_lapse() {
    let store = FakeBudgets::new();
    let replicas = replicas(&store, 3);
    // 90 a minute on basic (100), each replica seeing one every 2 s, as
    // long as a lease lives: a lease of two would lose one each time.
    let tenant = Uuid::new_v4();
    for i in 0..300 {
        let decision = replicas[i % 3].check(tenant, Plan::Basic).await;
        assert!(
            matches!(decision, Decision::Allowed { .. }),
            "request {i}: {decision:?}"
        );
        tokio::time::advance(Duration::from_millis(667)).await;
    }
    assert_eq!(store.leases(), 300);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_of_a_tenant_wait_for_one_lease() {
    let store = FakeBudgets::held();
    let limiter = Arc::new(replicas(&store, 1).remove(0));
    let tenant = Uuid::new_v4();
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.check(tenant, Plan::Enterprise).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(store.leases(), 1, "one lease in flight");
    store.release();
    for request in requests {
        assert!(matches!(request.await.unwrap(), Decision::Allowed { .. }));
    }
    assert_eq!(store.most_in_flight.load(Ordering::SeqCst), 1);
    // The first lease was of one token; the waiters' demand grew the next.
    assert!(store.leases() <= 6, "{} leases", store.leases());
}

#[tokio::test(start_paused = true)]
async fn a_refused_lease_stands_until_its_tokens_are_back() {
    let store = FakeBudgets::new();
    let limiter = replicas(&store, 1).remove(0);
    let tenant = Uuid::new_v4();
    let (allowed, retry) = allowed_until_refused(&[&limiter], tenant, Plan::Basic).await;
    assert_eq!(allowed, 100);
    // Asked for a batch of two: 1.2 s until they are back.
    assert_eq!(retry, Duration::from_millis(1_200));
    let leases = store.leases();
    for _ in 0..50 {
        assert!(matches!(
            limiter.check(tenant, Plan::Basic).await,
            Decision::Limited { .. }
        ));
    }
    assert_eq!(store.leases(), leases, "refused without asking again");
    tokio::time::advance(retry).await;
    assert!(matches!(
        limiter.check(tenant, Plan::Basic).await,
        Decision::Allowed { .. }
    ));
    assert_eq!(store.leases(), leases + 1);
}

#[tokio::test(start_paused = true)]
async fn without_the_database_a_replica_limits_at_its_share_and_counts_it() {
    let store = FakeBudgets::new();
    let limiter = replicas(&store, 3).remove(0);
    store.failing.store(true, Ordering::SeqCst);
    let tenant = Uuid::new_v4();
    let (allowed, retry) = allowed_until_refused(&[&limiter], tenant, Plan::Basic).await;
    // 100 a minute over 3 replicas: 33 each, one every 1.8 s.
    assert_eq!(allowed, 33);
    assert_eq!(retry, Duration::from_millis(1_200));
    assert_eq!(limiter.metrics.rate_limit_fallbacks.get(), 34);
    let failed = || {
        limiter
            .metrics
            .rate_limit_leases
            .with_label_values(&["failed"])
            .get()
    };
    assert_eq!(failed(), 1, "the shared budget is not asked again at once");
    // Back after the pause: leases again, from a full shared budget.
    store.failing.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(SHARED_RETRY_MS as u64)).await;
    assert!(matches!(
        limiter.check(tenant, Plan::Basic).await,
        Decision::Allowed { .. }
    ));
    assert_eq!(failed(), 1);
    assert_eq!(limiter.metrics.rate_limit_fallbacks.get(), 34);
}

#[tokio::test(start_paused = true)]
async fn a_database_that_does_not_answer_holds_a_request_for_the_lease_timeout() {
    let store = FakeBudgets::held();
    let limiter = replicas(&store, 2).remove(0);
    let started = Instant::now();
    let decision = limiter.check(Uuid::new_v4(), Plan::Enterprise).await;
    assert_eq!(started.elapsed(), LEASE_TIMEOUT);
    assert_eq!(
        decision,
        Decision::Allowed {
            limit: 2000,
            remaining: 999
        }
    );
    // Meanwhile another tenant is judged at once.
    let started = Instant::now();
    limiter.check(Uuid::new_v4(), Plan::Basic).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn budgets_full_again_are_forgotten_here_and_in_the_store() {
    let store = FakeBudgets::new();
    let limiter = replicas(&store, 1).remove(0);
    let (idle, busy) = (Uuid::new_v4(), Uuid::new_v4());
    limiter.check(idle, Plan::Basic).await;
    // A lease of one, then of two: `busy` holds a token.
    limiter.check(busy, Plan::Enterprise).await;
    limiter.check(busy, Plan::Enterprise).await;
    assert_eq!(limiter.tenants_held(), 2);
    assert_eq!(store.tats.lock().unwrap().len(), 2);
    tokio::time::advance(Duration::from_millis(100)).await;
    limiter.shrink().await;
    // `idle` holds nothing here; `busy` holds its leased token. In the
    // store, `busy`'s 3 tokens came back in 90 ms, `idle`'s one takes 600.
    assert_eq!(limiter.tenants_held(), 1);
    assert_eq!(store.tats.lock().unwrap().len(), 1);
    tokio::time::advance(Duration::from_millis(600)).await;
    limiter.shrink().await;
    assert_eq!(store.tats.lock().unwrap().len(), 0);
    assert_eq!(limiter.tenants_held(), 1);
    // Its lease lapsed: nothing is lost by forgetting it.
    tokio::time::advance(Duration::from_secs(2)).await;
    limiter.shrink().await;
    assert_eq!(limiter.tenants_held(), 0);
}
