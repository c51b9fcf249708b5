//! The periodic sweep: quiet tenants evaluated again, silences reloaded, open alerts reminded.

use super::*;

/// Whether `alert` is reminded at `now`: firing, notified, not
/// acknowledged, and last notified (or opened) at least `every` ago.
pub(super) fn reminder_due(alert: &AlertRow, now: DateTime<Utc>, every: TimeDelta) -> bool {
    let last = alert.last_notified_at.unwrap_or(alert.opened_at);
    alert.state == AlertState::Firing
        && alert.acknowledged_at.is_none()
        && alert.notified
        && now - last >= every
}

impl Runner {
    /// Re-evaluates tenants that had no new results for a sweep period,
    /// stores finished minutes, sends reminders.
    pub(super) async fn sweep(&mut self) {
        let now = self.clock.now();
        let quiet =
            chrono::TimeDelta::from_std(self.settings.sweep_every).unwrap_or(TimeDelta::seconds(5));
        let stale: Vec<String> = self
            .evaluated_at
            .iter()
            .filter(|(_, at)| now - **at >= quiet)
            .map(|(slug, _)| slug.clone())
            .collect();
        self.follow().await;
        self.reload_tenants(now);
        for slug in stale {
            self.evaluate(&slug, false).await;
        }
        self.flush_minutes();
        if now - self.silences_loaded_at >= TimeDelta::minutes(1) {
            match self.store.active_silences(now).await {
                Ok(silences) => {
                    self.silences = silences;
                    self.silences_loaded_at = now;
                }
                Err(err) => tracing::warn!(error = %err, "failed to reload silences"),
            }
        }
        self.silences.retain(|s| s.ends_at > now);
        self.remind(now).await;
    }

    /// Evaluates every tenant not evaluated for a while, so that its
    /// `backup` check moves although it has no pods reporting.
    pub(super) async fn sweep_backups(&mut self) {
        let now = self.clock.now();
        let quiet = TimeDelta::from_std(super::BACKUP_SWEEP).unwrap_or(TimeDelta::minutes(1));
        let due: Vec<String> = self.directory.with(|slugs| {
            slugs
                .iter()
                .filter(|slug| {
                    self.evaluated_at
                        .get(*slug)
                        .is_none_or(|at| now - *at >= quiet)
                })
                .cloned()
                .collect()
        });
        for slug in due {
            self.evaluate(&slug, false).await;
        }
    }

    /// Notifies again the open, unacknowledged alerts last notified long ago.
    pub(super) async fn remind(&mut self, now: DateTime<Utc>) {
        let Some(every) = self.settings.reminder_every else {
            return;
        };
        if self.fence().is_err() {
            // The leader reminds.
            return;
        }
        let due: Vec<(Uuid, Check)> = self
            .check_alerts
            .iter()
            .filter(|(_, c)| {
                c.alert
                    .as_ref()
                    .is_some_and(|a| reminder_due(a, now, every))
            })
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            let Some(current) = self.check_alerts.get(&key).and_then(|s| s.alert.clone()) else {
                continue;
            };
            let Some(tenant) = self.tenant(&current.tenant_slug, now).await else {
                continue;
            };
            let step = alerting::Step {
                kind: TransitionKind::Reminder,
                summary: current.summary.clone(),
                actor: AUTOMATIC_ACTOR,
                note: None,
                notify: Some(AlertStatus::Firing),
            };
            let planned = alerting::step(&current, now, step, |_| {});
            match self.record(&tenant, planned, None).await {
                Ok(alert) => {
                    if let Some(tracked) = self.check_alerts.get_mut(&key) {
                        tracked.alert = Some(Box::new(alert));
                    }
                }
                Err(err) => {
                    tracing::warn!(alert_id = %current.id, error = %err, "failed to send an alert reminder")
                }
            }
        }
    }
}
