//! Seeds tenants straight into the store, built the way provisioning builds
//! them but with one argon2 hash reused, and keeps their production keys.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use knowton_common::{Branding, Plan, TenantStatus, Usage};
use knowton_coordinator::credentials::{self, GeneratedKey};
use knowton_coordinator::provision::{DATABASE_PASSWORD, JWT_SECRET, welcome};
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::store::{
    KeyKind, NewApiKey, NewTenant, OutboxMessage, Store, Tenant, now,
};
use tokio::runtime::Handle;
use tokio::time::Instant;
use uuid::Uuid;

/// A seeded tenant and the key it authenticates with.
#[derive(Debug, Clone)]
pub struct SeededTenant {
    pub id: Uuid,
    pub production_key: String,
}

/// Writes `count` tenants with `concurrency` tasks on `handle` (the runtime
/// that owns the store's connections). Returns them and the time it took.
pub async fn seed(
    handle: &Handle,
    store: Arc<dyn Store>,
    secrets: SecretBox,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<SeededTenant>, Duration)> {
    let password = credentials::generate_password();
    let password_hash = handle
        .spawn_blocking(move || credentials::hash_password(&password))
        .await?
        .map_err(|e| anyhow::anyhow!("failed to hash the seed password: {e}"))?;
    let password_hash: Arc<str> = password_hash.into();

    let started = Instant::now();
    let concurrency = concurrency.clamp(1, count.max(1));
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let store = store.clone();
            let secrets = secrets.clone();
            let password_hash = password_hash.clone();
            handle.spawn(async move {
                let mut seeded = Vec::with_capacity(count / concurrency + 1);
                for i in (worker..count).step_by(concurrency) {
                    let (new, production_key) = new_tenant(i, &secrets, &password_hash);
                    store
                        .create_tenant(&new)
                        .await
                        .with_context(|| format!("failed to seed tenant {}", new.tenant.slug))?;
                    seeded.push(SeededTenant {
                        id: new.tenant.id,
                        production_key,
                    });
                }
                anyhow::Ok(seeded)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all, started.elapsed()))
}

/// Tenant number `i`, its plan cycling through the three plans.
fn new_tenant(i: usize, secrets: &SecretBox, password_hash: &str) -> (NewTenant, String) {
    let id = Uuid::now_v7();
    let created_at = now();
    let plan = Plan::ALL[i % Plan::ALL.len()];
    let slug = format!("seed-{i:06}");
    let name = format!("Seed Tenant {i}");
    let domain = format!("{slug}.bench.knowton.example");
    let admin_email = format!("admin@{domain}");

    let production = credentials::generate_api_key(KeyKind::Production);
    let development = credentials::generate_api_key(KeyKind::Development);
    let deployment_secrets = [
        (DATABASE_PASSWORD, credentials::DATABASE_PASSWORD_LEN),
        (JWT_SECRET, credentials::JWT_SECRET_LEN),
    ]
    .map(|(secret, len)| {
        let value = credentials::random_base62(len);
        let sealed = secrets.seal(value.as_bytes(), &format!("tenant/{id}/{secret}"));
        (secret.to_owned(), sealed)
    })
    .to_vec();
    let message_id = Uuid::now_v7();
    let body = welcome::render(&name, &domain, &admin_email, "seeded-password");
    let welcome = OutboxMessage {
        id: message_id,
        channel: "email".into(),
        recipient: admin_email.clone(),
        subject: welcome::subject(&name),
        sealed_body: secrets.seal(
            &serde_json::to_vec(&body).expect("an e-mail body serialises"),
            &format!("outbox/{message_id}"),
        ),
        idempotency_key: format!("welcome:{id}"),
    };
    let tenant = Tenant {
        id,
        branding: Branding::default_for(&name),
        name,
        slug,
        plan,
        domain,
        status: TenantStatus::Active,
        admin_email,
        features: plan.features(),
        usage: Usage::initial(),
        api_keys: Vec::new(),
        config_version: 1,
        created_at,
        updated_at: created_at,
        deprovisioned_at: None,
        retain_until: None,
    };
    let new = NewTenant {
        tenant,
        admin_user_id: Uuid::now_v7(),
        admin_password_hash: password_hash.to_owned(),
        api_keys: vec![
            stored_key(KeyKind::Production, &production),
            stored_key(KeyKind::Development, &development),
        ],
        secrets: deployment_secrets,
        welcome,
        actor: "bench-seed".to_owned(),
    };
    (new, production.plaintext)
}

fn stored_key(kind: KeyKind, key: &GeneratedKey) -> NewApiKey {
    NewApiKey {
        id: Uuid::now_v7(),
        kind,
        hash: key.hash.clone(),
        display_prefix: key.display_prefix.clone(),
    }
}
