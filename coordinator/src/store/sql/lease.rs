//! The SQL behind [`LeaseStore`], for both backends, and the fence check
//! that leader-only writes make in their own transaction.
//!
//! Times come from the database's clock (`$now`: milliseconds since the
//! Unix epoch), so that replicas whose clocks disagree still agree on when
//! a lease runs out. `$share` locks the lease row until the writing
//! transaction ends (PostgreSQL): a take-over waits for the write to commit
//! and a write after a take-over sees the new epoch. SQLite needs no lock:
//! its write transactions are serial and one process owns the file.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;

use super::{PgStore, SqliteStore};
use crate::store::{
    Fence, LeaseStore, MAX_LISTED_AGENTS, ReplicaBeat, ReplicaRow, Result, StoreError, Term,
};

/// The lease's one row.
const LEASE: &str = "leader";

/// A replica silent this long is forgotten.
const FORGOTTEN_AFTER_MS: i64 = 24 * 3600 * 1000;

macro_rules! lease_sql {
    ($store:ty, now = $now:literal, share = $share:literal) => {
        impl $store {
            /// Fails with [`StoreError::Fenced`] unless the lease is still
            /// in `fence`'s epoch, and (PostgreSQL) holds the lease row so
            /// that it stays so until `tx` ends. Call it first in every
            /// leader-only write.
            pub(super) async fn hold_fence(
                tx: &mut sqlx::Transaction<'static, super::DbOf<$store>>,
                fence: Fence,
            ) -> Result<()> {
                let current: Option<i64> = sqlx::query_scalar(concat!(
                    "SELECT epoch FROM coordinator_lease WHERE name = $1",
                    $share
                ))
                .bind(LEASE)
                .fetch_optional(&mut **tx)
                .await?;
                match current {
                    Some(epoch) if epoch == fence.epoch => Ok(()),
                    current => Err(StoreError::Fenced {
                        held: fence.epoch,
                        current,
                    }),
                }
            }
        }

        #[async_trait]
        impl LeaseStore for $store {
            async fn campaign(&self, holder: &str, duration: Duration) -> Result<Term> {
                let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2);
                let taken = sqlx::query(concat!(
                    "INSERT INTO coordinator_lease AS l \
                     (name, holder, epoch, acquired_ms, renewed_ms, expires_ms) \
                     VALUES ($1, $2, 1, ", $now, ", ", $now, ", ", $now, " + $3) \
                     ON CONFLICT (name) DO UPDATE SET \
                     epoch = CASE WHEN l.holder = excluded.holder THEN l.epoch ELSE l.epoch + 1 END, \
                     acquired_ms = CASE WHEN l.holder = excluded.holder \
                         THEN l.acquired_ms ELSE excluded.acquired_ms END, \
                     holder = excluded.holder, \
                     renewed_ms = excluded.renewed_ms, \
                     expires_ms = excluded.expires_ms \
                     WHERE l.holder = excluded.holder OR l.expires_ms <= excluded.renewed_ms \
                     RETURNING holder, epoch, acquired_ms, renewed_ms, expires_ms, ",
                    $now, " AS now_ms"
                ))
                .bind(LEASE)
                .bind(holder)
                .bind(millis)
                .fetch_optional(&self.writer)
                .await?;
                match taken {
                    Some(row) => Self::term_from_row(&row),
                    // Another replica holds an unexpired lease.
                    None => self
                        .term()
                        .await?
                        .ok_or_else(|| super::corrupt("the lease vanished while campaigning")),
                }
            }

            async fn resign(&self, holder: &str, epoch: i64) -> Result<()> {
                sqlx::query(concat!(
                    "UPDATE coordinator_lease SET expires_ms = ", $now,
                    " WHERE name = $1 AND holder = $2 AND epoch = $3"
                ))
                .bind(LEASE)
                .bind(holder)
                .bind(epoch)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn term(&self) -> Result<Option<Term>> {
                let row = sqlx::query(concat!(
                    "SELECT holder, epoch, acquired_ms, renewed_ms, expires_ms, ",
                    $now, " AS now_ms FROM coordinator_lease WHERE name = $1"
                ))
                .bind(LEASE)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| Self::term_from_row(&row)).transpose()
            }

            async fn heartbeat(&self, beat: &ReplicaBeat, alive_within: Duration) -> Result<u32> {
                let agents = serde_json::to_string(
                    &beat.agents[..beat.agents.len().min(MAX_LISTED_AGENTS)],
                )
                .map_err(|e| super::corrupt(format!("agents: {e}")))?;
                let mut tx = self.begin_write().await?;
                sqlx::query(concat!(
                    "INSERT INTO coordinator_replicas \
                     (id, replica, http_url, grpc_addr, started_ms, heartbeat_ms, agents) \
                     VALUES ($1, $2, $3, $4, ", $now, ", ", $now, ", $5) \
                     ON CONFLICT (id) DO UPDATE SET replica = excluded.replica, \
                     http_url = excluded.http_url, grpc_addr = excluded.grpc_addr, \
                     heartbeat_ms = excluded.heartbeat_ms, agents = excluded.agents"
                ))
                .bind(&beat.id)
                .bind(&beat.replica)
                .bind(&beat.http_url)
                .bind(&beat.grpc_addr)
                .bind(agents)
                .execute(&mut *tx)
                .await?;
                sqlx::query(concat!(
                    "DELETE FROM coordinator_replicas WHERE heartbeat_ms < ", $now, " - $1"
                ))
                .bind(FORGOTTEN_AFTER_MS)
                .execute(&mut *tx)
                .await?;
                let within = i64::try_from(alive_within.as_millis()).unwrap_or(i64::MAX / 2);
                let alive: i64 = sqlx::query_scalar(concat!(
                    "SELECT count(*) FROM coordinator_replicas WHERE heartbeat_ms >= ", $now, " - $1"
                ))
                .bind(within)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(u32::try_from(alive).unwrap_or(u32::MAX).max(1))
            }

            async fn replicas(&self) -> Result<Vec<ReplicaRow>> {
                let rows = sqlx::query(concat!(
                    "SELECT id, replica, http_url, grpc_addr, started_ms, heartbeat_ms, agents, ",
                    $now, " AS now_ms FROM coordinator_replicas \
                     WHERE heartbeat_ms >= ", $now, " - $1 ORDER BY id"
                ))
                .bind(FORGOTTEN_AFTER_MS)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let agents: String = row.try_get("agents")?;
                        Ok(ReplicaRow {
                            beat: ReplicaBeat {
                                id: row.try_get("id")?,
                                replica: row.try_get("replica")?,
                                http_url: row.try_get("http_url")?,
                                grpc_addr: row.try_get("grpc_addr")?,
                                agents: serde_json::from_str(&agents)
                                    .map_err(|e| super::corrupt(format!("agents: {e}")))?,
                            },
                            started_ms: row.try_get("started_ms")?,
                            heartbeat_ms: row.try_get("heartbeat_ms")?,
                            now_ms: row.try_get("now_ms")?,
                        })
                    })
                    .collect()
            }

            async fn forget_replica(&self, id: &str) -> Result<()> {
                sqlx::query("DELETE FROM coordinator_replicas WHERE id = $1")
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }
        }

        impl $store {
            fn term_from_row(row: &<super::DbOf<$store> as sqlx::Database>::Row) -> Result<Term> {
                Ok(Term {
                    holder: row.try_get("holder")?,
                    epoch: row.try_get("epoch")?,
                    acquired_ms: row.try_get("acquired_ms")?,
                    renewed_ms: row.try_get("renewed_ms")?,
                    expires_ms: row.try_get("expires_ms")?,
                    now_ms: row.try_get("now_ms")?,
                })
            }
        }
    };
}

lease_sql!(
    SqliteStore,
    now = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    share = ""
);
lease_sql!(
    PgStore,
    now = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    share = " FOR SHARE"
);
