//! The SQL behind [`RateLimitStore`], for both backends: GCRA of
//! [`knowton_common::ratelimit`] in one upsert, on the database's clock.
//!
//! `$now` is read once per statement (PostgreSQL's `statement_timestamp()`;
//! SQLite's `'now'` is fixed within a statement), and every `SET`
//! expression sees the row as it was, so `granted` and `tat_ms` are
//! computed from the same budget. The row is locked from the upsert to the
//! end of its statement: concurrent leases of one tenant take turns.

use async_trait::async_trait;
use knowton_common::ratelimit::PERIOD_MS;
use sqlx::Row;
use uuid::Uuid;

use super::{PgStore, SqliteStore};
use crate::store::{RateLimitStore, Result, Taken};

/// The budget's start for this lease: its TAT, or now if it is full.
macro_rules! base {
    ($now:literal, $greatest:literal) => {
        concat!($greatest, "(b.tat_ms, ", $now, ")")
    };
}

/// Tokens granted: `$2` (want) or what the budget holds (`$3` per minute,
/// `$4` the period in ms), whichever is fewer.
macro_rules! granted {
    ($now:literal, $greatest:literal, $least:literal) => {
        concat!(
            $least,
            "($2, ",
            $greatest,
            "(0, (",
            $now,
            " + $4 - ",
            base!($now, $greatest),
            ") * $3 / $4))"
        )
    };
}

macro_rules! rate_limit_sql {
    ($store:ty, now = $now:literal, greatest = $greatest:literal, least = $least:literal) => {
        #[async_trait]
        impl RateLimitStore for $store {
            async fn take_tokens(&self, tenant: Uuid, per_minute: u32, want: u32) -> Result<Taken> {
                let per_minute = per_minute.max(1);
                let row = sqlx::query(concat!(
                    "INSERT INTO tenant_rate_limits AS b (tenant_id, tat_ms, granted) \
                     VALUES ($1, ",
                    $now,
                    " + ($2 * $4 + $3 - 1) / $3, $2) \
                     ON CONFLICT (tenant_id) DO UPDATE SET granted = ",
                    granted!($now, $greatest, $least),
                    ", tat_ms = ",
                    base!($now, $greatest),
                    " + (",
                    granted!($now, $greatest, $least),
                    " * $4 + $3 - 1) / $3 \
                     RETURNING tat_ms, granted, ",
                    $now,
                    " AS now_ms"
                ))
                .bind(tenant.to_string())
                .bind(i64::from(want.min(per_minute)))
                .bind(i64::from(per_minute))
                .bind(PERIOD_MS)
                .fetch_one(&self.writer)
                .await?;
                let granted: i64 = row.try_get("granted")?;
                Ok(Taken {
                    granted: u32::try_from(granted)
                        .map_err(|_| super::corrupt(format!("granted {granted} tokens")))?,
                    tat_ms: row.try_get("tat_ms")?,
                    now_ms: row.try_get("now_ms")?,
                })
            }

            async fn forget_full_budgets(&self) -> Result<u64> {
                let done = sqlx::query(concat!(
                    "DELETE FROM tenant_rate_limits WHERE tat_ms <= ",
                    $now
                ))
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

rate_limit_sql!(
    SqliteStore,
    now = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    greatest = "max",
    least = "min"
);
rate_limit_sql!(
    PgStore,
    now = "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT",
    greatest = "GREATEST",
    least = "LEAST"
);
