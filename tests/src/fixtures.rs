//! What tests provision and send: a valid tenant request, a storage alert.

use serde_json::{Value, json};

/// A storage alert of the tenant in `provisioned` (a 201 body of
/// `POST /api/v1/tenants`): `[CRITICAL] <slug>: storage at 96% of 1 TiB`,
/// resolved when `resolved`. Only for tests that write outbox rows where
/// no engine can (a stopped coordinator, channels the API refuses); others
/// raise alerts through the engine ([`crate::TestCoordinator::fill_storage`]).
pub fn storage_alert(
    provisioned: &Value,
    alert_id: uuid::Uuid,
    sequence: i64,
    resolved: bool,
) -> knowton_coordinator::notify::render::AlertEvent {
    use knowton_coordinator::notify::render::{AlertEvent, AlertStatus, Severity};
    let tenant = &provisioned["tenant"];
    let starts_at = chrono::Utc::now() - chrono::Duration::minutes(5);
    AlertEvent {
        alert_id,
        sequence,
        tenant_id: tenant["id"].as_str().unwrap().parse().unwrap(),
        tenant_slug: tenant["slug"].as_str().unwrap().to_owned(),
        tenant_name: tenant["name"].as_str().unwrap().to_owned(),
        plan: tenant["plan"].as_str().unwrap().parse().unwrap(),
        check: knowton_common::health::Check::Storage,
        severity: Severity::Critical,
        status: if resolved {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        },
        summary: "storage at 96% of 1 TiB".into(),
        value: "96%".into(),
        threshold: "95%".into(),
        starts_at,
        ends_at: resolved.then(chrono::Utc::now),
    }
}

/// A valid provisioning request for `slug`.
pub fn tenant_request(slug: &str, plan: &str) -> Value {
    json!({
        "name": format!("{slug} Corp"),
        "slug": slug,
        "plan": plan,
        "adminEmail": format!("admin@{slug}.example.com"),
        "domain": format!("{slug}.knowton.example.com"),
    })
}
