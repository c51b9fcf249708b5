//! Scaling: raises a tenant backend's minimum replicas (its autoscaler's
//! floor) while its response time stays critical, within the plan's
//! maximum, and lowers it again after a calm period. Every action is
//! recorded as a deployment event and deployed.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::controller::{Deployer, Trigger};
use super::render::{Replicas, replicas_of};
use crate::health::Engine;
use crate::health::evaluate::{Check, CheckState};
use crate::store::{DeploymentEvent, DeploymentSettings, StoreError, now};

#[derive(Debug, Clone)]
pub struct ScalingSettings {
    /// How long response time must stay critical before scaling up (and
    /// between two steps up).
    pub after: Duration,
    /// How long response time must stay fine before stepping down.
    pub calm: Duration,
    /// Replicas added or removed per step.
    pub step: i32,
    /// How often tenants are looked at.
    pub every: Duration,
}

impl Default for ScalingSettings {
    fn default() -> Self {
        ScalingSettings {
            after: Duration::from_secs(300),
            calm: Duration::from_secs(1800),
            step: 1,
            every: Duration::from_secs(15),
        }
    }
}

/// What the scaler remembers of one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watch {
    critical_since: Option<Instant>,
    calm_since: Option<Instant>,
}

/// A scaling step to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Hold,
    /// Raise the minimum to `to`.
    Up {
        from: i32,
        to: i32,
    },
    /// Lower it to `to`; `None`: back to the plan's minimum.
    Down {
        from: i32,
        to: Option<i32>,
    },
}

/// Decides on one look at a tenant whose response-time check is `state`,
/// whose backend minimum is `current` (`plan` holds the plan's bounds).
pub fn decide(
    state: CheckState,
    watch: &mut Watch,
    at: Instant,
    current: i32,
    plan: Replicas,
    settings: &ScalingSettings,
) -> Decision {
    match state {
        CheckState::Critical => {
            watch.calm_since = None;
            let since = *watch.critical_since.get_or_insert(at);
            if at.duration_since(since) >= settings.after && current < plan.max {
                // The next step needs another full period.
                watch.critical_since = Some(at);
                return Decision::Up {
                    from: current,
                    to: (current + settings.step.max(1)).min(plan.max),
                };
            }
            Decision::Hold
        }
        CheckState::Ok if current > plan.min => {
            watch.critical_since = None;
            let since = *watch.calm_since.get_or_insert(at);
            if at.duration_since(since) >= settings.calm {
                watch.calm_since = Some(at);
                let to = current - settings.step.max(1);
                return Decision::Down {
                    from: current,
                    to: (to > plan.min).then_some(to),
                };
            }
            Decision::Hold
        }
        // Warnings are not calm, no data is not critical.
        _ => {
            *watch = Watch::default();
            Decision::Hold
        }
    }
}

/// Looks at every tenant's response time every `settings.every` and acts,
/// while `leader` is true, until `shutdown`.
pub async fn run(
    deployer: Deployer,
    engine: Engine,
    settings: ScalingSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watches: HashMap<Uuid, Watch> = HashMap::new();
    // Each tenant's raised minimum; read from the store when this replica
    // starts to lead (only the leader changes it), kept here after that.
    let mut overrides: Option<HashMap<Uuid, Option<i32>>> = None;
    let mut tick = tokio::time::interval(settings.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if !deployer.is_leader() {
            watches.clear();
            overrides = None;
            continue;
        }
        let store = deployer.store().clone();
        let overrides = match &mut overrides {
            Some(known) => known,
            None => match store.deployments().await {
                Ok(rows) => {
                    overrides.insert(rows.iter().map(|r| (r.tenant_id, r.min_replicas)).collect())
                }
                Err(err) => {
                    tracing::warn!(error = %err, "scaling: failed to read deployments");
                    continue;
                }
            },
        };
        let at = Instant::now();
        for health in engine.tenants() {
            let tenant = &health.tenant;
            if tenant.status == knowton_common::TenantStatus::Deprovisioned {
                continue;
            }
            let state = health
                .evaluation
                .checks
                .iter()
                .find(|c| c.check == Check::ResponseTime)
                .map_or(CheckState::Unknown, |c| c.state);
            let mut spec = super::controller::spec_of(tenant, None);
            let plan = replicas_of(&spec, &deployer.settings().cluster);
            spec.min_replicas = overrides.get(&tenant.id).copied().flatten();
            let current = replicas_of(&spec, &deployer.settings().cluster).min;
            let watch = watches.entry(tenant.id).or_default();
            let counters = deployer.counters();
            let (to, detail) = match decide(state, watch, at, current, plan, &settings) {
                Decision::Hold => continue,
                Decision::Up { from, to } => (
                    Some(to),
                    format!(
                        "minReplicas {from} -> {to}: response time critical for {}s",
                        settings.after.as_secs()
                    ),
                ),
                Decision::Down { from, to } => (
                    to,
                    format!(
                        "minReplicas {from} -> {}: response time fine for {}s",
                        to.unwrap_or(plan.min),
                        settings.calm.as_secs()
                    ),
                ),
            };
            let event = DeploymentEvent {
                at: now(),
                attempt: 0,
                kind: "scale".to_owned(),
                detail: detail.clone(),
            };
            let change = DeploymentSettings {
                allowlist: None,
                min_replicas: Some(to),
            };
            let Some(fence) = deployer.leadership().fence() else {
                // No longer the leader: the next one decides.
                break;
            };
            if let Err(err) = store
                .set_deployment_settings(tenant.id, &change, &event, Some(fence))
                .await
            {
                if matches!(err, StoreError::Fenced { .. }) {
                    deployer.leadership().fenced(fence);
                    break;
                }
                tracing::warn!(tenant = %tenant.slug, error = %err, "scaling: failed to record");
                continue;
            }
            overrides.insert(tenant.id, to);
            let counter = if to.unwrap_or(plan.min) > current {
                &counters.scaled_up
            } else {
                &counters.scaled_down
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(tenant = %tenant.slug, %detail, "scaling");
            deployer.after_change(tenant.id, Trigger::Scaled).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: Replicas = Replicas { min: 2, max: 4 };

    fn settings() -> ScalingSettings {
        ScalingSettings {
            after: Duration::from_secs(60),
            calm: Duration::from_secs(600),
            step: 1,
            every: Duration::from_secs(15),
        }
    }

    #[test]
    fn sustained_critical_steps_up_to_the_plan_maximum_only() {
        let start = Instant::now();
        let s = settings();
        let mut w = Watch::default();
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(
            decide(CheckState::Critical, &mut w, at(0), 2, PLAN, &s),
            Decision::Hold
        );
        assert_eq!(
            decide(CheckState::Critical, &mut w, at(59), 2, PLAN, &s),
            Decision::Hold
        );
        assert_eq!(
            decide(CheckState::Critical, &mut w, at(60), 2, PLAN, &s),
            Decision::Up { from: 2, to: 3 }
        );
        // Another full period before the next step.
        assert_eq!(
            decide(CheckState::Critical, &mut w, at(90), 3, PLAN, &s),
            Decision::Hold
        );
        assert_eq!(
            decide(CheckState::Critical, &mut w, at(120), 3, PLAN, &s),
            Decision::Up { from: 3, to: 4 }
        );
        assert_eq!(
            decide(CheckState::Critical, &mut w, at(500), 4, PLAN, &s),
            Decision::Hold
        );
    }

    #[test]
    fn a_short_spike_or_a_warning_does_not_scale() {
        let start = Instant::now();
        let s = settings();
        let mut w = Watch::default();
        let at = |secs| start + Duration::from_secs(secs);
        decide(CheckState::Critical, &mut w, at(0), 2, PLAN, &s);
        decide(CheckState::Warning, &mut w, at(30), 2, PLAN, &s);
        assert_eq!(
            decide(CheckState::Critical, &mut w, at(61), 2, PLAN, &s),
            Decision::Hold
        );
        assert_eq!(
            decide(CheckState::Critical, &mut w, at(100), 2, PLAN, &s),
            Decision::Hold
        );
        assert_eq!(
            decide(CheckState::Critical, &mut w, at(121), 2, PLAN, &s),
            Decision::Up { from: 2, to: 3 }
        );
    }

    #[test]
    fn a_calm_period_steps_back_down_to_the_plan_minimum() {
        let start = Instant::now();
        let s = settings();
        let mut w = Watch::default();
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(
            decide(CheckState::Ok, &mut w, at(0), 4, PLAN, &s),
            Decision::Hold
        );
        // A warning interrupts the calm.
        decide(CheckState::Warning, &mut w, at(300), 4, PLAN, &s);
        assert_eq!(
            decide(CheckState::Ok, &mut w, at(301), 4, PLAN, &s),
            Decision::Hold
        );
        assert_eq!(
            decide(CheckState::Ok, &mut w, at(901), 4, PLAN, &s),
            Decision::Down {
                from: 4,
                to: Some(3)
            }
        );
        assert_eq!(
            decide(CheckState::Ok, &mut w, at(1501), 3, PLAN, &s),
            Decision::Down { from: 3, to: None }
        );
        // At the plan's minimum there is nothing to lower.
        assert_eq!(
            decide(CheckState::Ok, &mut w, at(9999), 2, PLAN, &s),
            Decision::Hold
        );
    }
}
