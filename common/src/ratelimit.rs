//! The arithmetic of a tenant's request budget: GCRA (the generic cell
//! rate algorithm) at a plan's requests per minute with a burst of as
//! many, in whole milliseconds.
//!
//! A budget is one number, its theoretical arrival time (TAT): the instant
//! at which it would be full again. Each token costs `60 000 / rate` ms,
//! and a budget holds a minute's worth, so `take` grants what fits between
//! `max(tat, now)` and `now + 60 000` ms. Being a time, not a count, the
//! TAT means the same under any rate: a tenant that changes plan keeps the
//! share of its budget it has used. The coordinator keeps a budget in
//! memory with these functions and, shared by replicas, in PostgreSQL,
//! whose SQL (`coordinator/src/store/sql/ratelimit.rs`) computes the same
//! integers on the database's clock; a store test checks that they agree.

/// A budget holds one minute of requests.
pub const PERIOD_MS: i64 = 60_000;

/// What taking tokens from a budget came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    /// Tokens granted: `want`, fewer when fewer are left, or none.
    pub granted: u32,
    /// The budget's TAT afterwards.
    pub tat_ms: i64,
}

/// Takes up to `want` tokens at `now_ms` from a budget of `per_minute`
/// whose TAT is `tat_ms` (any past instant for a full budget).
pub fn take(tat_ms: i64, now_ms: i64, per_minute: u32, want: u32) -> Take {
    let base = tat_ms.max(now_ms);
    let granted = want.min(available(tat_ms, now_ms, per_minute));
    Take {
        granted,
        tat_ms: base + cost_ms(granted, per_minute),
    }
}

/// Tokens the budget holds at `now_ms` (at most `per_minute`).
pub fn available(tat_ms: i64, now_ms: i64, per_minute: u32) -> u32 {
    let base = tat_ms.max(now_ms);
    let left = (now_ms + PERIOD_MS - base).max(0) * i64::from(per_minute) / PERIOD_MS;
    u32::try_from(left).unwrap_or(per_minute)
}

/// Milliseconds from `now_ms` until the budget holds `tokens` (at most
/// `per_minute`); 0 when it holds them already.
pub fn wait_ms(tat_ms: i64, now_ms: i64, per_minute: u32, tokens: u32) -> i64 {
    let tokens = tokens.min(per_minute);
    (tat_ms.max(now_ms) - PERIOD_MS + cost_ms(tokens, per_minute) - now_ms).max(0)
}

/// What `tokens` cost, rounded up to a whole millisecond.
fn cost_ms(tokens: u32, per_minute: u32) -> i64 {
    let per_minute = i64::from(per_minute.max(1));
    (i64::from(tokens) * PERIOD_MS + per_minute - 1) / per_minute
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn a_full_budget_grants_what_is_asked() {
        let taken = take(i64::MIN, T0, 100, 10);
        assert_eq!(
            taken,
            Take {
                granted: 10,
                tat_ms: T0 + 6_000
            }
        );
        assert_eq!(available(taken.tat_ms, T0, 100), 90);
        // A fresh budget and one idle for long are the same.
        assert_eq!(take(T0 - 3_600_000, T0, 100, 10), taken);
    }

    #[test]
    fn a_nearly_spent_budget_grants_what_is_left() {
        let taken = take(i64::MIN, T0, 2_000, 1_990);
        assert_eq!(available(taken.tat_ms, T0, 2_000), 10);
        let rest = take(taken.tat_ms, T0, 2_000, 40);
        assert_eq!(rest.granted, 10);
        assert_eq!(rest.tat_ms, T0 + PERIOD_MS);
    }

    #[test]
    fn a_spent_budget_grants_nothing_and_says_how_long_to_wait() {
        let spent = take(i64::MIN, T0, 100, 100).tat_ms;
        assert_eq!(spent, T0 + PERIOD_MS);
        let refused = take(spent, T0, 100, 1);
        assert_eq!(
            refused,
            Take {
                granted: 0,
                tat_ms: spent
            }
        );
        // One token every 600 ms; two take twice as long.
        assert_eq!(wait_ms(spent, T0, 100, 1), 600);
        assert_eq!(wait_ms(spent, T0, 100, 2), 1_200);
        assert_eq!(wait_ms(spent, T0 + 100, 100, 1), 500);
        assert_eq!(wait_ms(i64::MIN, T0, 100, 1), 0);
    }

    #[test]
    fn a_budget_refills_at_its_rate_up_to_a_minute() {
        let spent = take(i64::MIN, T0, 500, 500).tat_ms;
        assert_eq!(available(spent, T0 + 119, 500), 0);
        assert_eq!(available(spent, T0 + 120, 500), 1);
        assert_eq!(available(spent, T0 + 30_000, 500), 250);
        assert_eq!(available(spent, T0 + 600_000, 500), 500);
        let after = take(spent, T0 + 1_200, 500, 50);
        assert_eq!(after.granted, 10);
        assert_eq!(available(after.tat_ms, T0 + 1_200, 500), 0);
    }

    #[test]
    fn the_used_share_survives_a_change_of_rate() {
        let half = take(i64::MIN, T0, 100, 50).tat_ms;
        assert_eq!(available(half, T0, 2_000), 1_000);
    }

    #[test]
    fn a_rate_that_does_not_divide_a_minute_rounds_against_the_tenant() {
        // 7 a minute: 8 571.4 ms each, charged 8 572: the other six are
        // there a millisecond later.
        let one = take(i64::MIN, T0, 7, 1);
        assert_eq!(one.tat_ms, T0 + 8_572);
        assert_eq!(available(one.tat_ms, T0, 7), 5);
        assert_eq!(available(one.tat_ms, T0 + 1, 7), 6);
        let all = take(i64::MIN, T0, 7, 7);
        assert_eq!(all.tat_ms, T0 + PERIOD_MS);
        assert_eq!(wait_ms(all.tat_ms, T0, 7, 1), 8_572);
    }
}
