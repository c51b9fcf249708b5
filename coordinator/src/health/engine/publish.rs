//! Publishing each tenant's health snapshot for readers (API, dashboard, metrics).

use super::*;

impl Runner {
    pub(super) fn open_alerts_of(&self, tenant: Uuid, now: DateTime<Utc>) -> Vec<OpenAlert> {
        // A lookup per check, not a pass over every tenant's slots: this
        // runs at each evaluation, a thousand tenants' results a round.
        let mut open: Vec<OpenAlert> = Check::ALL
            .iter()
            .filter_map(|check| self.check_alerts.get(&(tenant, *check)))
            .filter_map(|tracked| tracked.alert.as_ref())
            .map(|a| OpenAlert {
                id: a.id,
                check: a.check,
                severity: a.severity,
                state: a.state,
                summary: a.summary.clone(),
                opened_at: a.opened_at,
                acknowledged: a.acknowledged_at.is_some(),
                silenced: self.silenced(tenant, a.check, now),
            })
            .collect();
        open.sort_by_key(|a| a.id);
        open
    }

    pub(super) fn publish(
        &mut self,
        tenant: Arc<Tenant>,
        thresholds: Thresholds,
        evaluation: Evaluation,
        now: DateTime<Utc>,
        results_up_to: Option<DateTime<Utc>>,
    ) {
        let open_alerts = self.open_alerts_of(tenant.id, now);
        let current_minute = self
            .minutes
            .get(&tenant.id)
            .and_then(|m| m.rollup(tenant.id));
        let slug = tenant.slug.clone();
        // The agents confirm a probe slower than the tenant's warning at once.
        self.registry
            .slow_thresholds
            .set(&slug, thresholds.response_time_ms.warning);
        let health = TenantHealth {
            tenant,
            thresholds,
            evaluation,
            evaluated_at: now,
            results_up_to,
            open_alerts,
            current_minute,
        };
        let health = Arc::new(health);
        self.published
            .health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slug, health);
    }

    /// Publishes a tenant again after an operator's action on its alerts.
    pub(super) fn republish(&mut self, slug: &str) {
        let Some(previous) = self
            .published
            .health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(slug)
            .cloned()
        else {
            return;
        };
        let now = self.clock.now();
        let mut updated = (*previous).clone();
        updated.open_alerts = self.open_alerts_of(previous.tenant.id, now);
        self.published
            .health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slug.to_owned(), Arc::new(updated));
    }
}
