//! Seeds tenants straight into the store, built the way provisioning builds
//! them but with one argon2 hash reused, and keeps their production keys.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use knowton_common::Plan;
use knowton_coordinator::credentials;
use knowton_coordinator::provision::{self, ProvisionRequest};
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::store::{NewTenant, Store};
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

/// Tenant number `i`, its plan cycling through the three plans, built by
/// the coordinator's own provisioning code (minus the password hash).
fn new_tenant(i: usize, secrets: &SecretBox, password_hash: &str) -> (NewTenant, String) {
    let slug = format!("seed-{i:06}");
    let domain = format!("{slug}.bench.knowton.example");
    let request = ProvisionRequest {
        name: format!("Seed Tenant {i}"),
        admin_email: format!("admin@{domain}"),
        plan: Plan::ALL[i % Plan::ALL.len()],
        slug,
        domain,
        features: None,
        branding: None,
    };
    let spec = request.validate().expect("seed tenants are valid");
    let (new, shown) = provision::prepare(
        spec,
        "seeded-password".to_owned(),
        password_hash.to_owned(),
        secrets,
        "bench-seed",
    );
    (new, shown.production_key)
}
