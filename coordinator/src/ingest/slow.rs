//! Each tenant's slow threshold (its response-time warning) as the agents
//! are told it: a probe of the tenant's API slower than this is confirmed
//! at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use knowton_common::thresholds::Thresholds;
use knowton_proto::agent::v1::Instruction;
use tokio::sync::watch;

/// Tenants whose slow threshold is not the default one, in milliseconds.
pub type TenantThresholds = Arc<BTreeMap<String, u32>>;

/// The slow thresholds agents are sent, kept current by whoever knows each
/// tenant's thresholds (the health engine); each stream follows it with
/// [`SlowThresholds::subscribe`] and sends a new instruction on a change.
#[derive(Debug)]
pub struct SlowThresholds {
    tenants: watch::Sender<TenantThresholds>,
}

impl Default for SlowThresholds {
    fn default() -> Self {
        SlowThresholds {
            tenants: watch::Sender::new(Arc::default()),
        }
    }
}

/// The default tenant slow threshold: the default response-time warning.
pub fn default_ms() -> u32 {
    to_ms(Thresholds::default().response_time_ms.warning)
}

/// A threshold in whole milliseconds, at least 1 (0 means "none" on the wire).
pub fn to_ms(ms: f64) -> u32 {
    if ms.is_nan() {
        return default_ms();
    }
    ms.round().clamp(1.0, f64::from(u32::MAX)) as u32
}

impl SlowThresholds {
    /// Sets a tenant's slow threshold from its response-time warning (in
    /// ms); streams are woken only when it changed.
    pub fn set(&self, tenant: &str, response_time_warning_ms: f64) {
        let ms = to_ms(response_time_warning_ms);
        let default = default_ms();
        self.tenants.send_if_modified(|tenants| {
            let current = tenants.get(tenant).copied().unwrap_or(default);
            if current == ms {
                return false;
            }
            let tenants = Arc::make_mut(tenants);
            if ms == default {
                tenants.remove(tenant);
            } else {
                tenants.insert(tenant.to_owned(), ms);
            }
            true
        });
    }

    /// Back to the default (the tenant is gone).
    pub fn forget(&self, tenant: &str) {
        self.tenants.send_if_modified(|tenants| {
            tenants.contains_key(tenant) && Arc::make_mut(tenants).remove(tenant).is_some()
        });
    }

    /// The tenants whose threshold is not the default, as they are now.
    pub fn current(&self) -> TenantThresholds {
        self.tenants.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<TenantThresholds> {
        self.tenants.subscribe()
    }
}

/// An instruction carrying the slow thresholds (and nothing else to change).
pub fn instruction(tenants: &TenantThresholds) -> Instruction {
    Instruction {
        probe_interval_ms: 0,
        probe_now: false,
        slow_threshold_ms: default_ms(),
        tenant_slow_threshold_ms: tenants
            .iter()
            .map(|(tenant, ms)| (tenant.clone(), *ms))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tenants_off_the_default_are_sent_and_only_changes_wake_streams() {
        let slow = SlowThresholds::default();
        let mut rx = slow.subscribe();
        slow.set("acme", 1000.0);
        assert!(!rx.has_changed().unwrap(), "the default is not a change");
        slow.set("acme", 250.4);
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            *rx.borrow_and_update().clone(),
            [("acme".to_owned(), 250)].into()
        );
        slow.set("acme", 250.0);
        assert!(!rx.has_changed().unwrap(), "the same value is not a change");
        let sent = instruction(&slow.current());
        assert_eq!(sent.slow_threshold_ms, 1000);
        assert_eq!(sent.tenant_slow_threshold_ms.get("acme"), Some(&250));
        slow.forget("acme");
        assert!(rx.has_changed().unwrap());
        assert!(slow.current().is_empty());
        assert_eq!(to_ms(0.0), 1, "0 would mean no threshold on the wire");
    }
}
