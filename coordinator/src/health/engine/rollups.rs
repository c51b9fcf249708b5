//! Storing the per-minute rollups the evaluations add up to.

use super::*;
use crate::store::Fence;

/// Ended minutes kept for another try while the store cannot be written
/// (about ten minutes of a thousand tenants).
const MAX_ENDED_MINUTES: usize = 10_000;

/// The sweep's writing of finished minutes, done beside the engine's task:
/// a thousand tenants' minutes are a transaction of tens of milliseconds,
/// and the results arriving meanwhile would wait for it.
pub(super) struct RollupWrites {
    in_flight: bool,
    tx: mpsc::Sender<RollupsWritten>,
}

/// How a background writing of minutes ended.
pub(super) struct RollupsWritten {
    fence: Fence,
    rollups: Vec<Rollup>,
    result: Result<(), StoreError>,
}

impl RollupWrites {
    /// The engine's side, and where the outcomes arrive.
    pub(super) fn new() -> (RollupWrites, mpsc::Receiver<RollupsWritten>) {
        let (tx, rx) = mpsc::channel(1);
        (
            RollupWrites {
                in_flight: false,
                tx,
            },
            rx,
        )
    }

    pub(super) fn in_flight(&self) -> bool {
        self.in_flight
    }
}

impl Runner {
    /// The minutes to store: those that ended at an evaluation and every
    /// finished one (with `all`, the ones in progress too, which are kept).
    fn take_minutes(&mut self, all: bool) -> Vec<Rollup> {
        let current = minute_of(self.clock.now());
        let mut rollups = std::mem::take(&mut self.ended_minutes);
        let mut finished = Vec::new();
        for (tenant, minute) in &self.minutes {
            if all || minute.start < current {
                rollups.extend(minute.rollup(*tenant));
                finished.push(*tenant);
            }
        }
        if !all {
            for tenant in finished {
                self.minutes.remove(&tenant);
            }
        }
        rollups
    }

    /// Keeps minutes that could not be stored for the next try, the newest
    /// [`MAX_ENDED_MINUTES`] of them.
    fn keep_for_retry(&mut self, mut rollups: Vec<Rollup>) {
        rollups.append(&mut self.ended_minutes);
        let excess = rollups.len().saturating_sub(MAX_ENDED_MINUTES);
        rollups.drain(..excess);
        self.ended_minutes = rollups;
    }

    /// Starts storing every finished minute in the background, in one
    /// transaction, unless a writing is still in flight (the next sweep
    /// tries). Not leading, they are left to the leader, which evaluates
    /// the same results.
    pub(super) fn flush_minutes(&mut self) {
        if self.rollup_writes.in_flight {
            return;
        }
        let rollups = self.take_minutes(false);
        if rollups.is_empty() {
            return;
        }
        let Ok(fence) = self.fence() else {
            return;
        };
        self.rollup_writes.in_flight = true;
        let (store, tx) = (self.store.clone(), self.rollup_writes.tx.clone());
        tokio::spawn(async move {
            let result = store.write_rollups(&rollups, fence).await;
            let _ = tx
                .send(RollupsWritten {
                    fence,
                    rollups,
                    result,
                })
                .await;
        });
    }

    /// Takes in how a background writing ended: minutes not stored are
    /// tried again at the next sweep.
    pub(super) fn minutes_written(&mut self, written: RollupsWritten) {
        self.rollup_writes.in_flight = false;
        if let Err(err) = written.result {
            self.after_failed_write(written.fence, &err);
            count(&self.published.counters.store_errors);
            tracing::warn!(error = %err, minutes = written.rollups.len(), "failed to store health rollups; will retry");
            self.keep_for_retry(written.rollups);
        }
    }

    /// At shutdown: stores every minute, those in progress included (the
    /// next start adds to them), and waits for it.
    pub(super) async fn flush_all_minutes(&mut self) {
        let rollups = self.take_minutes(true);
        if !rollups.is_empty() && !self.store_rollups(&rollups).await {
            tracing::warn!(
                minutes = rollups.len(),
                "health rollups not stored at shutdown"
            );
        }
    }
}
