//! The per-tenant families, rendered from each tenant's published health
//! snapshot and kept until the engine publishes a new one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};

use knowton_common::health::{Check, Severity};
use knowton_common::thresholds::Thresholds;

use super::families::{esc, family};
use crate::health::TenantHealth;

/// Checks measured as a share (of a plan limit, of pods, of requests).
const RATIO_CHECKS: [Check; 6] = [
    Check::Database,
    Check::ApiHealth,
    Check::Storage,
    Check::Users,
    Check::ApiRate,
    Check::ErrorRate,
];

/// The per-tenant families: name, type, help. A tenant's lines of each are
/// rendered once per evaluation ([`tenant_lines`]), so a scrape only
/// concatenates them.
const TENANT_FAMILIES: [(&str, &str, &str); 12] = [
    (
        "knowton_tenant_status",
        "gauge",
        "Tenant status: -1 unknown, 0 healthy, 1 warning, 2 critical, 3 down; the plan label is here only (join on tenant).",
    ),
    (
        "knowton_tenant_pods",
        "gauge",
        "Tenant pods with a fresh result.",
    ),
    (
        "knowton_tenant_pods_up",
        "gauge",
        "Tenant pods whose liveness probe succeeds.",
    ),
    (
        "knowton_tenant_check_state",
        "gauge",
        "Each check's state: -1 unknown, 0 ok, 1 warning, 2 critical.",
    ),
    (
        "knowton_tenant_check_ratio",
        "gauge",
        "Measured value of share checks (0-1): of the plan's limit (storage, users, api_rate), of responses (error_rate), of pods (database, api_health).",
    ),
    (
        "knowton_tenant_check_threshold_ratio",
        "gauge",
        "Thresholds of share checks (0-1) for tenants with their own; the others use knowton_check_threshold_default_ratio.",
    ),
    (
        "knowton_tenant_response_time_seconds",
        "gauge",
        "API response time of the tenant's slowest pod.",
    ),
    (
        "knowton_tenant_users",
        "gauge",
        "Users the tenant's pods report (limit: knowton_plan_users_limit).",
    ),
    (
        "knowton_tenant_storage_used_bytes",
        "gauge",
        "Volume usage of the tenant's fullest pod (limit: knowton_plan_storage_limit_bytes).",
    ),
    (
        "knowton_tenant_api_requests_per_second",
        "gauge",
        "Request rate of the tenant's pods added up (limit: knowton_plan_api_rate_limit_requests_per_second).",
    ),
    (
        "knowton_tenant_open_alerts",
        "gauge",
        "Open alerts by severity.",
    ),
    (
        "knowton_tenant_response_time_threshold_seconds",
        "gauge",
        "Response-time thresholds of tenants with their own; the others use knowton_response_time_threshold_default_seconds.",
    ),
];

/// A tenant's lines of each of [`TENANT_FAMILIES`], in that order.
pub type TenantLines = Vec<String>;

/// Renders a tenant's lines of every per-tenant family.
pub fn tenant_lines(h: &TenantHealth) -> TenantLines {
    let mut f: Vec<String> = vec![String::new(); TENANT_FAMILIES.len()];
    let l = format!("tenant=\"{}\"", esc(&h.tenant.slug));
    let e = &h.evaluation;
    let _ = writeln!(
        f[0],
        "knowton_tenant_status{{{l},plan=\"{}\"}} {}",
        h.tenant.plan.as_str(),
        e.status.rank()
    );
    let _ = writeln!(f[1], "knowton_tenant_pods{{{l}}} {}", e.pods);
    let _ = writeln!(f[2], "knowton_tenant_pods_up{{{l}}} {}", e.pods_up);
    let own = h.thresholds != Thresholds::default();
    for c in &e.checks {
        let check = c.check.as_str();
        let _ = writeln!(
            f[3],
            "knowton_tenant_check_state{{{l},check=\"{check}\"}} {}",
            c.state.rank()
        );
        if RATIO_CHECKS.contains(&c.check) {
            if let Some(v) = c.value {
                let _ = writeln!(
                    f[4],
                    "knowton_tenant_check_ratio{{{l},check=\"{check}\"}} {}",
                    v / 100.0
                );
            }
            if own {
                for (severity, level) in [("warning", c.warning), ("critical", c.critical)] {
                    if let Some(level) = level {
                        let _ = writeln!(
                            f[5],
                            "knowton_tenant_check_threshold_ratio{{{l},check=\"{check}\",severity=\"{severity}\"}} {}",
                            level / 100.0
                        );
                    }
                }
            }
        } else if let (Check::ResponseTime, Some(ms)) = (c.check, c.value) {
            let _ = writeln!(
                f[6],
                "knowton_tenant_response_time_seconds{{{l}}} {}",
                ms / 1000.0
            );
        }
    }
    if let Some(users) = e.users {
        let _ = writeln!(f[7], "knowton_tenant_users{{{l}}} {users}");
    }
    if let Some(bytes) = h.current_minute.as_ref().and_then(|m| m.storage_bytes) {
        let _ = writeln!(f[8], "knowton_tenant_storage_used_bytes{{{l}}} {bytes}");
    }
    if let Some(rpm) = e.requests_per_minute {
        let _ = writeln!(
            f[9],
            "knowton_tenant_api_requests_per_second{{{l}}} {}",
            rpm / 60.0
        );
    }
    if own {
        let t = h.thresholds.response_time_ms;
        for (severity, ms) in [("warning", t.warning), ("critical", t.critical)] {
            let _ = writeln!(
                f[11],
                "knowton_tenant_response_time_threshold_seconds{{{l},severity=\"{severity}\"}} {}",
                ms / 1000.0
            );
        }
    }
    for &severity in Severity::ALL {
        let n = h
            .open_alerts
            .iter()
            .filter(|a| a.severity == severity)
            .count();
        let _ = writeln!(
            f[10],
            "knowton_tenant_open_alerts{{{l},severity=\"{severity}\"}} {n}"
        );
    }
    // Kept until the tenant's next snapshot: without the slack of growth.
    f.iter_mut().for_each(String::shrink_to_fit);
    f
}

/// Each tenant's rendered lines, kept with the snapshot they were rendered
/// from: a scrape renders again only the tenants whose snapshot changed
/// (the engine publishes a new `Arc` on every change), so the engine never
/// renders metrics and a scrape of many quiet tenants only concatenates.
#[derive(Debug, Default)]
pub struct TenantLineCache {
    rendered: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    by_slug: HashMap<String, Rendered>,
    /// Which scrape this is, to forget tenants no longer published.
    scrape: u64,
}

#[derive(Debug)]
struct Rendered {
    /// Which snapshot the lines are of. Weak: the engine drops a snapshot
    /// it has replaced, and the cache must not keep every tenant's previous
    /// one alive until the next scrape (only the allocation stays, so no
    /// later snapshot can take its address).
    snapshot: Weak<TenantHealth>,
    lines: Arc<TenantLines>,
    seen: u64,
}

impl TenantLineCache {
    /// The lines of each snapshot, in order, rendering only new snapshots.
    pub fn lines(&self, snapshots: &[Arc<TenantHealth>]) -> Vec<Arc<TenantLines>> {
        let mut cached = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        cached.scrape += 1;
        let scrape = cached.scrape;
        let mut out = Vec::with_capacity(snapshots.len());
        for h in snapshots {
            let entry = match cached.by_slug.get_mut(&h.tenant.slug) {
                Some(r) => {
                    if !std::ptr::eq(r.snapshot.as_ptr(), Arc::as_ptr(h)) {
                        r.snapshot = Arc::downgrade(h);
                        r.lines = Arc::new(tenant_lines(h));
                    }
                    r
                }
                None => cached
                    .by_slug
                    .entry(h.tenant.slug.clone())
                    .or_insert_with(|| Rendered {
                        snapshot: Arc::downgrade(h),
                        lines: Arc::new(tenant_lines(h)),
                        seen: scrape,
                    }),
            };
            entry.seen = scrape;
            out.push(entry.lines.clone());
        }
        cached.by_slug.retain(|_, r| r.seen == scrape);
        out
    }
}

/// Every per-tenant family, then the defaults and plan limits.
pub(super) fn render(snapshots: &[Arc<TenantHealth>], cache: &TenantLineCache, out: &mut String) {
    let all = cache.lines(snapshots);
    let size: usize = all.iter().flat_map(|l| l.iter().map(String::len)).sum();
    out.reserve(size + 16 * 1024);
    for (i, (name, kind, help)) in TENANT_FAMILIES.iter().enumerate() {
        family(out, name, kind, help);
        for tenant in &all {
            if let Some(lines) = tenant.get(i) {
                out.push_str(lines);
            }
        }
    }
    defaults_and_plans(out);
}

/// The default thresholds, and each plan's limits.
fn defaults_and_plans(out: &mut String) {
    let t = Thresholds::default();
    family(
        out,
        "knowton_check_threshold_default_ratio",
        "gauge",
        "Default thresholds of share checks (0-1), for tenants without their own.",
    );
    for (check, level) in [
        (Check::Storage, t.storage_percent),
        (Check::Users, t.users_percent),
        (Check::ApiRate, t.api_rate_percent),
        (Check::ErrorRate, t.error_rate_percent),
    ] {
        for (severity, v) in [("warning", level.warning), ("critical", level.critical)] {
            let _ = writeln!(
                out,
                "knowton_check_threshold_default_ratio{{check=\"{}\",severity=\"{severity}\"}} {}",
                check.as_str(),
                v / 100.0
            );
        }
    }
    family(
        out,
        "knowton_response_time_threshold_default_seconds",
        "gauge",
        "Default response-time thresholds, for tenants without their own.",
    );
    for (severity, ms) in [
        ("warning", t.response_time_ms.warning),
        ("critical", t.response_time_ms.critical),
    ] {
        let _ = writeln!(
            out,
            "knowton_response_time_threshold_default_seconds{{severity=\"{severity}\"}} {}",
            ms / 1000.0
        );
    }
    let limits = [
        ("knowton_plan_users_limit", "Users the plan allows."),
        (
            "knowton_plan_storage_limit_bytes",
            "Storage the plan allows.",
        ),
        (
            "knowton_plan_api_rate_limit_requests_per_second",
            "API request rate the plan allows.",
        ),
    ];
    for (i, (name, help)) in limits.iter().enumerate() {
        family(out, name, "gauge", help);
        for plan in knowton_common::Plan::ALL {
            let l = plan.limits();
            let value = match i {
                0 => l.max_users as f64,
                1 => l.storage_bytes as f64,
                _ => f64::from(l.api_requests_per_minute) / 60.0,
            };
            let _ = writeln!(out, "{name}{{plan=\"{}\"}} {value}", plan.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use knowton_common::health::HealthStatus;
    use knowton_common::{Branding, Features, Plan, TenantStatus, Usage};
    use uuid::Uuid;

    use super::*;
    use crate::health::Evaluation;
    use crate::store::Tenant;

    fn snapshot(slug: &str, pods: usize) -> Arc<TenantHealth> {
        let now = Utc::now();
        Arc::new(TenantHealth {
            tenant: Arc::new(Tenant {
                id: Uuid::now_v7(),
                name: slug.to_owned(),
                slug: slug.to_owned(),
                plan: Plan::Enterprise,
                domain: format!("{slug}.example.com"),
                status: TenantStatus::Active,
                admin_email: format!("admin@{slug}.example.com"),
                branding: Branding::default_for(slug),
                features: Features::none(),
                usage: Usage::default(),
                api_keys: Vec::new(),
                config_version: 1,
                created_at: now,
                updated_at: now,
                deprovisioned_at: None,
                retain_until: None,
            }),
            thresholds: Thresholds::default(),
            evaluation: Evaluation {
                status: HealthStatus::Healthy,
                pods,
                pods_up: pods,
                checks: Vec::new(),
                requests_per_minute: None,
                users: None,
            },
            evaluated_at: now,
            results_up_to: None,
            open_alerts: Vec::new(),
            current_minute: None,
        })
    }

    #[test]
    fn only_changed_snapshots_are_rendered_again_and_gone_tenants_forgotten() {
        let cache = TenantLineCache::default();
        let (acme, globex) = (snapshot("acme", 1), snapshot("globex", 2));
        let first = cache.lines(&[acme.clone(), globex.clone()]);
        assert!(first[0][1].contains("knowton_tenant_pods{tenant=\"acme\"} 1"));
        assert_eq!(
            Arc::strong_count(&acme),
            1,
            "the cache keeps no snapshot alive: a replaced one is freed at once"
        );

        let same = cache.lines(&[acme.clone(), globex.clone()]);
        assert!(Arc::ptr_eq(&first[0], &same[0]), "unchanged: not rendered");
        assert!(Arc::ptr_eq(&first[1], &same[1]));

        let acme_now = snapshot("acme", 3);
        let next = cache.lines(&[acme_now, globex.clone()]);
        assert!(
            !Arc::ptr_eq(&first[0], &next[0]),
            "a new snapshot: rendered"
        );
        assert!(next[0][1].contains("knowton_tenant_pods{tenant=\"acme\"} 3"));
        assert!(Arc::ptr_eq(&first[1], &next[1]));

        cache.lines(&[globex]);
        let cached = cache.rendered.lock().unwrap();
        assert_eq!(cached.by_slug.len(), 1, "acme is no longer published");
    }
}
