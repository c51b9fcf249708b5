//! Per-tenant rate limiting at the plan's rate (GCRA through `governor`).
//!
//! Each plan has one keyed limiter whose quota is the plan's requests per
//! minute with a burst of the same size, keyed by tenant id; a tenant that
//! changes plan moves to the other limiter on its next request.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use knowton_common::Plan;
use uuid::Uuid;

type Keyed =
    RateLimiter<Uuid, DefaultKeyedStateStore<Uuid>, DefaultClock, StateInformationMiddleware>;

/// The outcome of one request against its tenant's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed { limit: u32, remaining: u32 },
    Limited { limit: u32, retry_after: Duration },
}

#[derive(Debug)]
pub struct TenantRateLimiter {
    limiters: HashMap<Plan, (u32, Keyed)>,
    clock: DefaultClock,
}

impl Default for TenantRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl TenantRateLimiter {
    pub fn new() -> Self {
        let limiters = Plan::ALL
            .into_iter()
            .map(|plan| {
                let per_minute = plan.limits().api_requests_per_minute;
                let quota = Quota::per_minute(
                    NonZeroU32::new(per_minute).expect("plan rates are positive"),
                );
                let limiter =
                    RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>();
                (plan, (per_minute, limiter))
            })
            .collect();
        TenantRateLimiter {
            limiters,
            clock: DefaultClock::default(),
        }
    }

    pub fn check(&self, tenant: Uuid, plan: Plan) -> Decision {
        let (limit, limiter) = &self.limiters[&plan];
        match limiter.check_key(&tenant) {
            Ok(snapshot) => Decision::Allowed {
                limit: *limit,
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => Decision::Limited {
                limit: *limit,
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    /// Forgets tenants whose budget is full again (bounded memory).
    pub fn shrink(&self) {
        for (_, limiter) in self.limiters.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_plan_allows_its_rate_then_limits() {
        let limiter = TenantRateLimiter::new();
        for plan in Plan::ALL {
            let tenant = Uuid::new_v4();
            let rate = plan.limits().api_requests_per_minute;
            for i in 0..rate {
                match limiter.check(tenant, plan) {
                    Decision::Allowed { limit, remaining } => {
                        assert_eq!(limit, rate);
                        assert_eq!(remaining, rate - i - 1);
                    }
                    other => panic!("{plan} request {i} limited: {other:?}"),
                }
            }
            match limiter.check(tenant, plan) {
                Decision::Limited { retry_after, .. } => {
                    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60));
                }
                other => panic!("{plan} over budget allowed: {other:?}"),
            }
            assert!(matches!(
                limiter.check(Uuid::new_v4(), plan),
                Decision::Allowed { .. }
            ));
        }
    }
}
