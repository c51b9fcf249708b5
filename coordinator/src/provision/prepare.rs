//! Everything a new tenant is stored with, generated in one go: keys,
//! deployment secrets (sealed), the welcome e-mail (rendered and sealed)
//! and the secrets shown once.

use knowton_common::{TenantStatus, Usage};
use uuid::Uuid;

use super::request::ProvisionSpec;
use crate::credentials::KeyKind;
use crate::credentials::{self, GeneratedKey};
use crate::deploy::controller::secrets as deployment_secrets;
use crate::notify::{outbox_context, welcome};
use crate::secrets::SecretBox;
use crate::store::{NewApiKey, NewTenant, OutboxMessage, Tenant, now};

/// What provisioning hands back once: the only time the secrets are shown.
#[derive(Clone)]
pub struct Provisioned {
    pub tenant: Tenant,
    pub temporary_password: String,
    pub production_key: String,
    pub development_key: String,
}

impl std::fmt::Debug for Provisioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioned")
            .field("tenant", &self.tenant.slug)
            .finish_non_exhaustive()
    }
}

/// Everything provisioning writes for `spec` (keys and deployment secrets
/// generated, secrets sealed, the welcome e-mail rendered and sealed), and
/// the secrets to show once. `password_hash` must be the hash of `password`.
pub fn prepare(
    spec: ProvisionSpec,
    password: String,
    password_hash: String,
    secrets: &SecretBox,
    actor: &str,
) -> (NewTenant, Provisioned) {
    let id = Uuid::now_v7();
    let created_at = now();
    let production = credentials::generate_api_key(KeyKind::Production);
    let development = credentials::generate_api_key(KeyKind::Development);
    let sealed_secrets = deployment_secrets::generate_sealed(id, secrets);

    let body = welcome::render(&spec.name, &spec.domain, &spec.admin_email, &password);
    let message_id = Uuid::now_v7();
    let welcome = OutboxMessage {
        id: message_id,
        channel: knowton_common::health::Channel::Email,
        recipient: spec.admin_email.clone(),
        subject: welcome::subject(&spec.name),
        sealed_body: secrets.seal(
            &serde_json::to_vec(&body).expect("an e-mail body serialises"),
            &outbox_context(message_id),
        ),
        idempotency_key: format!("welcome:{id}"),
        caused_at: None,
    };
    let tenant = Tenant {
        id,
        name: spec.name,
        slug: spec.slug,
        plan: spec.plan,
        domain: spec.domain,
        status: TenantStatus::Active,
        admin_email: spec.admin_email,
        branding: spec.branding,
        features: spec.features,
        usage: Usage::initial(),
        api_keys: Vec::new(),
        config_version: 1,
        created_at,
        updated_at: created_at,
        deprovisioned_at: None,
        retain_until: None,
    };
    let new = NewTenant {
        tenant: tenant.clone(),
        admin_user_id: Uuid::now_v7(),
        admin_password_hash: password_hash,
        api_keys: [
            (KeyKind::Production, &production),
            (KeyKind::Development, &development),
        ]
        .map(|(kind, key)| stored_key(kind, key))
        .to_vec(),
        secrets: sealed_secrets,
        welcome,
        actor: actor.to_owned(),
    };
    let shown = Provisioned {
        tenant,
        temporary_password: password,
        production_key: production.plaintext,
        development_key: development.plaintext,
    };
    (new, shown)
}

/// The stored form of a generated key (its hash, never the key).
pub(super) fn stored_key(kind: KeyKind, key: &GeneratedKey) -> NewApiKey {
    NewApiKey {
        id: Uuid::now_v7(),
        kind,
        hash: key.hash.clone(),
        display_prefix: key.display_prefix.clone(),
    }
}
