//! How a tenant's configuration changes (plan, features, branding,
//! domain) under optimistic concurrency, and what a change conflicts with.

use knowton_common::tenant::normalize_domain;
use knowton_common::{Branding, Feature, Features, Plan, TenantStatus, ValidationError};
use uuid::Uuid;

use super::TenantLifecycle;
use super::error::{LifecycleError, Result, failed};
use super::request::UpdateRequest;
use crate::deploy::Trigger;
use crate::store::{ConfigChange, StoreError, Tenant};

impl TenantLifecycle {
    /// Changes plan, features, branding or domain, records a history
    /// version and asks for a deployment of the change. A downgrade that
    /// current usage does not fit is refused unless `force`.
    ///
    /// Optimistic concurrency: the write is conditional on the version the
    /// change was computed from. With `expected` (the caller's `If-Match`)
    /// a tenant at another version is `PreconditionFailed`. Without it, a
    /// write that lost a race is computed again on the new state when the
    /// other write changed none of the fields this one changes, and is a
    /// `VersionConflict` naming them when it did; nothing is lost silently.
    pub async fn update(
        &self,
        id: Uuid,
        req: UpdateRequest,
        force: bool,
        expected: Option<i64>,
        actor: &str,
    ) -> Result<Tenant> {
        if req.plan.is_none()
            && req.features.is_none()
            && req.branding.is_none()
            && req.domain.is_none()
        {
            return Err(ValidationError::new(
                "body",
                "give at least one of plan, features, branding, domain",
            )
            .into());
        }
        let mut current = self.get(id).await?;
        for _ in 0..UPDATE_ATTEMPTS {
            if let Some(expected) = expected
                && expected != current.config_version
            {
                return Err(LifecycleError::PreconditionFailed {
                    current: current.config_version,
                });
            }
            let Some(change) = planned_change(&current, &req, force, actor)? else {
                return Ok(current);
            };
            match self.store.update_config(id, &change).await {
                Ok(version) => {
                    tracing::info!(tenant = %current.slug, version, change = %change.summary, actor, "tenant configuration changed");
                    // Another change may land between the write and this
                    // read: the caller is answered with its own version.
                    let tenant = as_written(self.get(id).await?, change, version);
                    self.changed(id, &tenant.slug).await;
                    self.deployer.after_change(id, Trigger::Updated).await;
                    return Ok(tenant);
                }
                Err(StoreError::Stale) => {
                    let fresh = self.get(id).await?;
                    if expected.is_some() {
                        // The caller asked for the version it read.
                        return Err(LifecycleError::PreconditionFailed {
                            current: fresh.config_version,
                        });
                    }
                    let overlap = overlapping_fields(&current, &fresh, &change);
                    if !overlap.is_empty() {
                        return Err(LifecycleError::VersionConflict { fields: overlap });
                    }
                    current = fresh;
                }
                Err(other) => return Err(failed(LifecycleError::ChangeConfig, id)(other)),
            }
        }
        Err(LifecycleError::VersionConflict { fields: Vec::new() })
    }
}

/// Carries the tenant's explicit choices over to a new plan: features the
/// new plan adds are switched on, features it lacks are switched off.
fn rebase_features(current: Features, from: Plan, to: Plan) -> Features {
    let mut out = current;
    for feature in Feature::ALL {
        match (from.includes(feature), to.includes(feature)) {
            (false, true) => out.set(feature, true),
            (_, false) => out.set(feature, false),
            (true, true) => {}
        }
    }
    out
}

/// How many times an update is computed again after losing a race on
/// fields it does not change.
const UPDATE_ATTEMPTS: usize = 8;

/// The change `req` makes to `current`, `None` if it changes nothing.
fn planned_change(
    current: &Tenant,
    req: &UpdateRequest,
    force: bool,
    actor: &str,
) -> Result<Option<ConfigChange>> {
    if current.status == TenantStatus::Deprovisioned {
        return Err(LifecycleError::Deprovisioned(current.slug.clone()));
    }
    let plan = req.plan.unwrap_or(current.plan);
    if plan < current.plan && !force {
        let violations = current.usage.violations(plan);
        if !violations.is_empty() {
            return Err(LifecycleError::PlanLimitsExceeded { plan, violations });
        }
    }
    let features = req
        .features
        .unwrap_or_default()
        .apply(rebase_features(current.features, current.plan, plan), plan)?;
    let branding = match &req.branding {
        Some(patch) => patch.apply(current.branding.clone())?,
        None => current.branding.clone(),
    };
    let domain = match &req.domain {
        Some(d) => normalize_domain("domain", d)?,
        None => current.domain.clone(),
    };

    let mut changes = Vec::new();
    if plan != current.plan {
        changes.push(format!("plan {} -> {plan}", current.plan));
    }
    if features != current.features {
        changes.push("features".to_owned());
    }
    if branding != current.branding {
        changes.push("branding".to_owned());
    }
    if domain != current.domain {
        changes.push(format!("domain {} -> {domain}", current.domain));
    }
    if changes.is_empty() {
        return Ok(None);
    }
    Ok(Some(ConfigChange {
        base_version: current.config_version,
        plan,
        features,
        branding,
        domain,
        actor: actor.to_owned(),
        summary: changes.join(", "),
    }))
}

/// `fresh` with the configuration `change` wrote as `version`: what the
/// caller is answered even when a later change was read back with it.
fn as_written(fresh: Tenant, change: ConfigChange, version: i64) -> Tenant {
    if fresh.config_version == version {
        return fresh;
    }
    Tenant {
        plan: change.plan,
        features: change.features,
        branding: change.branding,
        domain: change.domain,
        config_version: version,
        ..fresh
    }
}

/// The fields (`plan`, `domain`, `features.<name>`, `branding.<name>`)
/// that `change` sets to something new and that another writer changed
/// between `read` and `fresh`.
fn overlapping_fields(read: &Tenant, fresh: &Tenant, change: &ConfigChange) -> Vec<String> {
    use serde_json::{Value, json};
    use std::collections::BTreeMap;
    // Field name -> value; an absent optional field is null.
    let fields = |plan: Plan, features: &Features, branding: &Branding, domain: &str| {
        let mut out = BTreeMap::from([
            ("plan".to_owned(), json!(plan)),
            ("domain".to_owned(), json!(domain)),
        ]);
        for (group, value) in [
            ("features", serde_json::to_value(features)),
            ("branding", serde_json::to_value(branding)),
        ] {
            if let Ok(Value::Object(map)) = value {
                out.extend(map.into_iter().map(|(k, v)| (format!("{group}.{k}"), v)));
            }
        }
        out
    };
    let before = fields(read.plan, &read.features, &read.branding, &read.domain);
    let theirs = fields(fresh.plan, &fresh.features, &fresh.branding, &fresh.domain);
    let mine = fields(
        change.plan,
        &change.features,
        &change.branding,
        &change.domain,
    );
    let get = |m: &BTreeMap<String, Value>, k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    let names: std::collections::BTreeSet<&String> = before
        .keys()
        .chain(theirs.keys())
        .chain(mine.keys())
        .collect();
    names
        .into_iter()
        .filter(|name| {
            let was = get(&before, name);
            get(&theirs, name) != was && get(&mine, name) != was
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_follow_plan_changes_but_keep_choices() {
        let mut basic = Plan::Basic.features();
        basic.bonds = false;
        let up = rebase_features(basic, Plan::Basic, Plan::Enterprise);
        assert!(up.enterprise && up.custom_development && !up.bonds);
        let down = rebase_features(up, Plan::Enterprise, Plan::Basic);
        assert!(!down.enterprise && !down.custom_development && !down.bonds && down.nft);
    }

    fn tenant(version: i64, company: &str) -> Tenant {
        let now = chrono::Utc::now();
        Tenant {
            id: Uuid::nil(),
            name: "Acme".to_owned(),
            slug: "acme".to_owned(),
            plan: Plan::Professional,
            domain: "acme.example.com".to_owned(),
            status: TenantStatus::Active,
            admin_email: "admin@acme.example.com".to_owned(),
            branding: Branding {
                company_name: company.to_owned(),
                ..Branding::default_for("acme")
            },
            features: Plan::Professional.features(),
            usage: knowton_common::Usage::default(),
            api_keys: Vec::new(),
            config_version: version,
            created_at: now,
            updated_at: now,
            deprovisioned_at: None,
            retain_until: None,
        }
    }

    /// Found by `lifecycle.rs::concurrent_updates_lose_nothing`: a change
    /// read back after another one landed answered with the other's
    /// version and values, so two callers could each be told theirs was
    /// the later one.
    #[test]
    fn a_change_is_answered_with_its_own_version_when_another_landed_after_it() {
        let read = tenant(1, "Acme 1");
        let req: UpdateRequest =
            serde_json::from_value(serde_json::json!({"branding": {"companyName": "Acme 2"}}))
                .unwrap();
        let change = planned_change(&read, &req, false, "test").unwrap().unwrap();
        let mut later = tenant(3, "Acme 3");
        later.branding.primary_color = "#123456".to_owned();

        let answered = as_written(later, change.clone(), 2);
        assert_eq!(answered.config_version, 2);
        assert_eq!(answered.branding.company_name, "Acme 2");
        assert_eq!(answered.branding.primary_color, read.branding.primary_color);

        let same = as_written(tenant(2, "Acme 2"), change, 2);
        assert_eq!(
            (same.config_version, same.branding.company_name.as_str()),
            (2, "Acme 2")
        );
    }
}
