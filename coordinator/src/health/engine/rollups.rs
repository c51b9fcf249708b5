//! Storing the per-minute rollups the evaluations add up to.

use super::*;

/// Ended minutes kept for another try while the store cannot be written
/// (about ten minutes of a thousand tenants).
const MAX_ENDED_MINUTES: usize = 10_000;

impl Runner {
    /// Stores every finished minute (and with `all`, the ones in progress)
    /// in one transaction. Minutes that ended at an evaluation and could
    /// not be stored are tried again at the next sweep, the newest
    /// [`MAX_ENDED_MINUTES`] of them.
    pub(super) async fn flush_minutes(&mut self, all: bool) {
        let now = self.clock.now();
        let current = minute_of(now);
        let mut rollups = std::mem::take(&mut self.ended_minutes);
        let ended_count = rollups.len();
        let mut finished = Vec::new();
        for (tenant, minute) in &self.minutes {
            if all || minute.start < current {
                rollups.extend(minute.rollup(*tenant));
                finished.push(*tenant);
            }
        }
        if rollups.is_empty() && finished.is_empty() {
            return;
        }
        if self.store_rollups(&rollups).await {
            if !all {
                for tenant in finished {
                    self.minutes.remove(&tenant);
                }
            }
        } else {
            rollups.truncate(ended_count);
            let excess = rollups.len().saturating_sub(MAX_ENDED_MINUTES);
            rollups.drain(..excess);
            self.ended_minutes = rollups;
        }
    }
}
