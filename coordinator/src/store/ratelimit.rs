//! Each tenant's request budget shared by the coordinator replicas: the
//! GCRA state of [`knowton_common::ratelimit`], one row per tenant, from
//! which each replica leases tokens in small batches (see
//! `crate::api::ratelimit`). Times are milliseconds on the database's
//! clock, so the replicas' clocks need not agree.

use async_trait::async_trait;
use uuid::Uuid;

use super::Result;

/// What a lease of tokens came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Tokens granted: as many as asked, fewer when fewer were left, or
    /// none.
    pub granted: u32,
    /// The budget's theoretical arrival time afterwards (milliseconds
    /// since the Unix epoch, database clock).
    pub tat_ms: i64,
    /// The database's clock when the tokens were taken.
    pub now_ms: i64,
}

#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Takes up to `want` (at most `per_minute`) of `tenant`'s tokens from
    /// its budget of `per_minute` requests with a burst of as many, in one
    /// statement; a tenant without a row has a full budget.
    async fn take_tokens(&self, tenant: Uuid, per_minute: u32, want: u32) -> Result<Taken>;
    /// Deletes the budgets that are full again (their row says nothing an
    /// absent one would not); returns how many.
    async fn forget_full_budgets(&self) -> Result<u64>;
}
