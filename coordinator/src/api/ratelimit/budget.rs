//! One tenant's budget as one replica holds it, and the decisions taken on
//! it: pure, each given `now` in milliseconds on the limiter's clock.

use std::time::Duration;

use knowton_common::ratelimit::{available, take, wait_ms};

use super::Decision;
use crate::store::Taken;

/// The most tokens one lease asks for: 2% of the plan's rate, at least
/// one (basic 2, professional 10, enterprise 40).
pub fn batch_limit(per_minute: u32) -> u32 {
    (per_minute / 50).max(1)
}

/// A lease asks for as many tokens as the tenant sent requests to this
/// replica in the last window of this length (up to [`batch_limit`]).
pub const DEMAND_WINDOW_MS: i64 = 1_000;

/// Leased tokens not spent within this long are lost: twice the demand
/// window, so that at a steady rate a batch is spent well before.
pub const LEASE_LIFETIME_MS: i64 = 2 * DEMAND_WINDOW_MS;

#[derive(Debug)]
pub struct Budget {
    /// The theoretical arrival time of a budget held here alone: the
    /// plan's whole budget on SQLite; this replica's share while the
    /// shared budget cannot be reached.
    local_tat_ms: i64,
    /// Tokens leased from the shared budget and not spent yet; lost at
    /// `leased_until_ms`.
    leased: u32,
    leased_until_ms: i64,
    /// What the shared budget held after the last lease (for the
    /// remaining header).
    shared_left: u32,
    /// The shared budget refused the last lease: no new one before this.
    limited_until_ms: i64,
    demand: Demand,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            local_tat_ms: i64::MIN,
            leased: 0,
            leased_until_ms: i64::MIN,
            shared_left: 0,
            limited_until_ms: i64::MIN,
            demand: Demand::default(),
        }
    }
}

impl Budget {
    /// Judges a request by the budget held here alone, of the plan's
    /// `limit`, each request costing `share` tokens: 1 for the whole
    /// budget, the live replicas for this replica's share of it (so that
    /// the arithmetic stays in whole tokens).
    pub fn judge_locally(&mut self, now: i64, limit: u32, share: u32) -> Decision {
        let share = share.clamp(1, limit.max(1));
        let left = available(self.local_tat_ms, now, limit);
        if left < share {
            return Decision::Limited {
                limit,
                retry_after: millis(wait_ms(self.local_tat_ms, now, limit, share)),
            };
        }
        self.local_tat_ms = take(self.local_tat_ms, now, limit, share).tat_ms;
        Decision::Allowed {
            limit,
            remaining: (left - share) / share,
        }
    }

    /// Judges a request by the tokens leased here, or by the shared
    /// budget's last refusal while it stands; `None`: a lease decides.
    pub fn judge_by_lease(&mut self, now: i64, limit: u32) -> Option<Decision> {
        self.demand.record(now);
        if self.leased > 0 && now < self.leased_until_ms {
            self.leased -= 1;
            return Some(Decision::Allowed {
                limit,
                remaining: self.remaining(limit),
            });
        }
        (now < self.limited_until_ms).then(|| Decision::Limited {
            limit,
            retry_after: millis(self.limited_until_ms - now),
        })
    }

    /// How many tokens the next lease asks for.
    pub fn want(&self, per_minute: u32) -> u32 {
        self.demand.recent().clamp(1, batch_limit(per_minute))
    }

    /// Judges a request by what a lease of `want` tokens of a budget of
    /// `limit` a minute came to. A refusal stands until `want` tokens are
    /// back (whichever replica then takes them).
    pub fn leased(&mut self, now: i64, limit: u32, want: u32, taken: Taken) -> Decision {
        if taken.granted == 0 {
            let wait = wait_ms(taken.tat_ms, taken.now_ms, limit, want).max(1);
            self.limited_until_ms = now + wait;
            return Decision::Limited {
                limit,
                retry_after: millis(wait),
            };
        }
        self.leased = taken.granted - 1;
        self.leased_until_ms = now + LEASE_LIFETIME_MS;
        self.shared_left = available(taken.tat_ms, taken.now_ms, limit);
        Decision::Allowed {
            limit,
            remaining: self.remaining(limit),
        }
    }

    /// Forgetting the budget loses nothing: its local budget is full, no
    /// leased token is left and no refusal stands.
    pub fn idle(&self, now: i64) -> bool {
        self.local_tat_ms <= now
            && (self.leased == 0 || self.leased_until_ms <= now)
            && self.limited_until_ms <= now
    }

    /// Approximate across replicas: the tokens leased here and what the
    /// shared budget held at the last lease; what other replicas took
    /// since is not known here.
    fn remaining(&self, limit: u32) -> u32 {
        self.leased
            .saturating_add(self.shared_left)
            .min(limit.saturating_sub(1))
    }
}

/// Requests of one tenant to this replica, in the current demand window
/// and the one before.
#[derive(Debug)]
struct Demand {
    since_ms: i64,
    current: u32,
    previous: u32,
}

impl Default for Demand {
    fn default() -> Self {
        Demand {
            since_ms: i64::MIN,
            current: 0,
            previous: 0,
        }
    }
}

impl Demand {
    fn record(&mut self, now: i64) {
        let elapsed = now.saturating_sub(self.since_ms);
        if elapsed >= DEMAND_WINDOW_MS {
            self.previous = if elapsed < 2 * DEMAND_WINDOW_MS {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.since_ms = now;
        }
        self.current = self.current.saturating_add(1);
    }

    /// Requests in the last full window or the current one, whichever
    /// saw more.
    fn recent(&self) -> u32 {
        self.current.max(self.previous)
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
