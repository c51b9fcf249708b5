//! Storing the per-minute rollups the evaluations add up to.

use super::*;

impl Runner {
    /// Stores every finished minute (and with `all`, the ones in progress).
    pub(super) async fn flush_minutes(&mut self, all: bool) {
        let now = self.clock.now();
        let current = minute_of(now);
        let mut rollups = Vec::new();
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
        if self.store_rollups(&rollups).await && !all {
            for tenant in finished {
                self.minutes.remove(&tenant);
            }
        }
    }
}
