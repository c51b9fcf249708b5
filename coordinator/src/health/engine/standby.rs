//! Leading and standing by. Every replica evaluates every tenant; only the
//! leader records transitions and rollups, each write fenced by its term.
//! A replica that does not lead keeps its alert slots in step with what
//! the leader recorded, so that its health reads show the same open alerts
//! and it can take over at once: its state machines stand where the live
//! results put them, one result short of any transition the leader has not
//! recorded, so the first new result after a take-over records it.

use super::*;
use crate::store::Fence;

impl Runner {
    /// The term to record in; an error on a replica that does not lead.
    pub(super) fn fence(&self) -> Result<Fence, EngineError> {
        match self.leadership.fence() {
            Some(fence) if !self.reload_pending => Ok(fence),
            _ => Err(EngineError::NotLeader),
        }
    }

    /// After a leader-only write failed: a fenced one steps this replica
    /// down (another replica leads).
    pub(super) fn after_failed_write(&self, fence: Fence, err: &StoreError) {
        if matches!(err, StoreError::Fenced { .. }) {
            self.leadership.fenced(fence);
        }
    }

    /// Stores finished minutes as leader. Not leading, they are left to
    /// the leader, which evaluates the same results: `true` either way
    /// when nothing is left to retry.
    pub(super) async fn store_rollups(&mut self, rollups: &[Rollup]) -> bool {
        let Ok(fence) = self.fence() else {
            return true;
        };
        match self.store.write_rollups(rollups, fence).await {
            Ok(()) => true,
            Err(err) => {
                self.after_failed_write(fence, &err);
                count(&self.published.counters.store_errors);
                tracing::warn!(error = %err, minutes = rollups.len(), "failed to store health rollups; will retry");
                false
            }
        }
    }

    /// Aligns the alert slots with the open alerts in the store: at a
    /// take-over, and at every sweep while standing by. A slot whose alert
    /// is the one stored keeps its state machine; one whose alert changed
    /// or appeared restarts from the stored alert; one whose alert the
    /// leader resolved starts afresh.
    pub(super) async fn load_alert_state(&mut self) -> Result<(), StoreError> {
        let open = self.store.open_alerts().await?;
        let mut stored: HashMap<(Uuid, Check), AlertRow> = open
            .into_iter()
            .map(|alert| ((alert.tenant_id, alert.check), alert))
            .collect();
        for (key, slot) in &mut self.check_alerts {
            match (stored.remove(key), &slot.alert) {
                (Some(alert), Some(mine))
                    if mine.id == alert.id && mine.sequence == alert.sequence => {}
                (Some(alert), _) => *slot = CheckAlert::reopened(alert),
                (None, Some(_)) => *slot = CheckAlert::default(),
                (None, None) => {}
            }
        }
        for (key, alert) in stored {
            self.check_alerts.insert(key, CheckAlert::reopened(alert));
        }
        Ok(())
    }

    /// At every sweep: a replica standing by (or a leader whose take-over
    /// could not read the store) reads the leader's alerts again.
    pub(super) async fn follow(&mut self) {
        if self.leadership.is_leader() && !self.reload_pending {
            return;
        }
        if self.reload_pending {
            self.take_over().await;
        } else if let Err(err) = self.load_alert_state().await {
            tracing::warn!(error = %err, "failed to read the leader's alerts");
        }
    }

    /// This replica has started to lead: what other replicas changed while
    /// it stood by (alerts, silences, thresholds) is read again.
    pub(super) async fn take_over(&mut self) {
        let now = self.clock.now();
        let loaded = async {
            self.load_alert_state().await?;
            self.silences = self.store.active_silences(now).await?;
            self.thresholds = self.store.all_thresholds().await?.into_iter().collect();
            Ok::<_, StoreError>(())
        };
        match loaded.await {
            Ok(()) => {
                self.silences_loaded_at = now;
                self.reload_pending = false;
                tracing::info!(
                    open_alerts = self
                        .check_alerts
                        .values()
                        .filter(|c| c.alert.is_some())
                        .count(),
                    "leading: alert state read from the store"
                );
            }
            Err(err) => {
                count(&self.published.counters.store_errors);
                tracing::error!(error = %err, "failed to read alert state at the take-over; the next sweep tries again");
                self.reload_pending = true;
            }
        }
    }
}
