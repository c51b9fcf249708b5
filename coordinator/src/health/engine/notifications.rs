//! Recording a planned transition: who hears of it once silences apply, its outbox rows, and the one transaction that writes both.

use super::*;

impl Runner {
    /// Writes a planned transition with its notifications, in one transaction.
    pub(super) async fn record(
        &mut self,
        tenant: &Tenant,
        planned: alerting::Planned,
        cause: Option<DateTime<Utc>>,
    ) -> Result<AlertRow, EngineError> {
        let fence = self.fence()?;
        let alerting::Planned {
            mut alert,
            mut event,
            notify,
        } = planned;
        let audience = self.audience(tenant.id, alert.check, event.at);
        let silenced = audience != Audience::Everyone;
        let send = match notify {
            Some(AlertStatus::Firing) => audience != Audience::Nobody,
            Some(AlertStatus::Resolved) => alert.notified || self.settings.notify_silenced_resolved,
            None => false,
        };
        let mut messages = Vec::new();
        if let (true, Some(status)) = (send, notify) {
            if status == AlertStatus::Firing {
                alert.notified = true;
            }
            alert.last_notified_at = Some(event.at);
            let mut channels = self.notify.resolve_channels(tenant).await?;
            if audience == Audience::Operator {
                channels = channels.operator_only();
            }
            let rendered = alerting::event_of(tenant, &alert, status);
            messages = self.notify.plan_alert(&rendered, &channels);
            for m in &mut messages {
                m.caused_at = cause;
            }
        }
        event.notifications = messages.len() as i64;
        let write = AlertWrite {
            alert,
            event,
            messages,
        };
        if let Err(err) = self.store.record_alert(&write, fence).await {
            self.after_failed_write(fence, &err);
            return Err(err.into());
        }
        if !write.messages.is_empty() {
            self.notify.wakeup().poke();
        }
        if let Some(cause) = cause {
            self.published
                .counters
                .commit_latency
                .observe((self.clock.now() - cause).as_seconds_f64().max(0.0));
        }
        let by_hand = write.event.kind == TransitionKind::Resolved
            && write
                .alert
                .resolved_by
                .as_deref()
                .is_some_and(|by| by != AUTOMATIC_ACTOR);
        let counters = &self.published.counters;
        count(if by_hand {
            &counters.manual_resolves
        } else {
            &counters.transitions[write.event.kind as usize]
        });
        tracing::info!(
            tenant = %tenant.slug,
            check = %write.alert.check,
            alert_id = %write.alert.id,
            kind = %write.event.kind,
            severity = %write.alert.severity,
            notifications = write.messages.len(),
            silenced,
            "alert {}", write.event.kind
        );
        if write.alert.resolved_at.is_some() {
            // Silences that end with the alert were ended in the store.
            let (id, check, at) = (tenant.id, write.alert.check, write.event.at);
            for s in &mut self.silences {
                if s.end_on_resolve && s.covers(id, check, at) {
                    s.ends_at = at;
                }
            }
        }
        Ok(write.alert)
    }
}
