//! Tenant lifecycle: provision, change configuration, rotate keys and
//! deprovision. One service behind both the REST API and the CLI.

mod directory;
pub mod welcome;

pub use directory::TenantDirectory;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use knowton_common::tenant::{normalize_domain, normalize_email, validate_name, validate_slug};
use knowton_common::{
    Branding, Feature, FeatureOverrides, Features, LimitViolation, Plan, TenantStatus, Usage,
    ValidationError,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::credentials::{self, GeneratedKey};
use crate::notify::{Wakeup, outbox_context};
use crate::secrets::{OpenError, SecretBox};
use crate::store::{
    ConfigChange, ConfigVersion, KeyKind, NewApiKey, NewTenant, OutboxMessage, Store, StoreError,
    Tenant, Unique, now,
};

pub const DATABASE_PASSWORD: &str = "database_password";
pub const JWT_SECRET: &str = "jwt_secret";

/// `POST /api/v1/tenants`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvisionRequest {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// A DNS label, not reserved (admin, api, www, system, kube-…).
    #[schema(
        min_length = 3,
        max_length = 40,
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )]
    pub slug: String,
    pub plan: Plan,
    #[schema(
        max_length = 254,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$"
    )]
    pub admin_email: String,
    /// A fully qualified hostname; stored lower-case.
    #[schema(
        max_length = 253,
        pattern = r"^([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$"
    )]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeatureOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branding: Option<BrandingPatch>,
}

/// Branding fields to set; absent fields keep their value (or the default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrandingPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub company_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^#[0-9A-Fa-f]{6}$")]
    pub primary_color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^#[0-9A-Fa-f]{6}$")]
    pub secondary_color: Option<String>,
    /// An https URL; `null` is the same as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2048,
        pattern = r"^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[^\s]*)?$"
    )]
    pub logo_url: Option<String>,
}

impl BrandingPatch {
    fn apply(&self, mut base: Branding) -> Result<Branding, ValidationError> {
        if let Some(v) = &self.company_name {
            base.company_name.clone_from(v);
        }
        if let Some(v) = &self.primary_color {
            base.primary_color.clone_from(v);
        }
        if let Some(v) = &self.secondary_color {
            base.secondary_color.clone_from(v);
        }
        if let Some(v) = &self.logo_url {
            base.logo_url = Some(v.clone());
        }
        base.validate()?;
        Ok(base)
    }
}

/// `PUT /api/v1/tenants/{id}`: any of plan, features, branding, domain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeatureOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branding: Option<BrandingPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 253,
        pattern = r"^([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$"
    )]
    pub domain: Option<String>,
}

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

/// A tenant's generated deployment secrets, decrypted for the deployer.
#[derive(Clone)]
pub struct DeploymentSecrets {
    pub database_password: String,
    pub jwt_secret: String,
}

impl std::fmt::Debug for DeploymentSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeploymentSecrets(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("the {0} is already taken")]
    Conflict(Unique),
    #[error("tenant {0} not found")]
    NotFound(String),
    #[error("current usage exceeds the {plan} plan's limits")]
    PlanLimitsExceeded {
        plan: Plan,
        violations: Vec<LimitViolation>,
    },
    #[error("tenant {0} is deprovisioned")]
    Deprovisioned(String),
    #[error("the tenant is at configuration version {current}, not the one given in If-Match")]
    PreconditionFailed { current: i64 },
    #[error("another change to {} was made at the same time", fields.join(", "))]
    VersionConflict { fields: Vec<String> },
    #[error("failed to hash the admin password")]
    HashPassword(#[source] credentials::HashError),
    #[error("failed to open the sealed secret {name}")]
    OpenSecret {
        name: String,
        #[source]
        source: OpenError,
    },
    #[error("tenant store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(unique) => ServiceError::Conflict(unique),
            other => ServiceError::Store(other),
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The tenant lifecycle service.
#[derive(Debug)]
pub struct TenantService {
    store: Arc<dyn Store>,
    secrets: SecretBox,
    hasher: credentials::PasswordHasherPool,
    retention: chrono::Duration,
    directory: Arc<TenantDirectory>,
    /// Poked after a commit that enqueued notifications.
    outbox: Wakeup,
}

impl TenantService {
    /// `directory` must hold the store's active tenants (see
    /// [`TenantDirectory::load`]); the service keeps it current.
    pub fn new(
        store: Arc<dyn Store>,
        secrets: SecretBox,
        retention_days: u32,
        directory: Arc<TenantDirectory>,
    ) -> Self {
        TenantService {
            store,
            secrets,
            hasher: credentials::PasswordHasherPool::per_cpu(),
            retention: chrono::Duration::days(i64::from(retention_days)),
            directory,
            outbox: Wakeup::default(),
        }
    }

    /// What wakes the notification worker when provisioning enqueued a
    /// welcome e-mail.
    pub fn outbox_wakeup(&self) -> &Wakeup {
        &self.outbox
    }

    pub fn directory(&self) -> &Arc<TenantDirectory> {
        &self.directory
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The key that seals secrets at rest.
    pub(crate) fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// Resolves a tenant id or slug to an id.
    pub async fn resolve(&self, id_or_slug: &str) -> Result<Uuid> {
        if let Ok(id) = Uuid::parse_str(id_or_slug) {
            return Ok(id);
        }
        self.store
            .find_tenant_id(id_or_slug)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id_or_slug.to_owned()))
    }

    pub async fn get(&self, id: Uuid) -> Result<Tenant> {
        self.store
            .get_tenant(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))
    }

    pub async fn provision(&self, req: ProvisionRequest, actor: &str) -> Result<Provisioned> {
        let spec = req.validate()?;
        // Cheap check before the deliberately slow password hash; the unique
        // constraint still decides races.
        if self.store.find_tenant_id(&spec.slug).await?.is_some() {
            return Err(ServiceError::Conflict(Unique::TenantSlug));
        }
        let password = credentials::generate_password();
        let password_hash = self
            .hasher
            .hash(password.clone())
            .await
            .map_err(ServiceError::HashPassword)?;
        let (new, shown) = prepare(spec, password, password_hash, &self.secrets, actor);
        self.store.create_tenant(&new).await?;
        self.outbox.poke();
        let id = new.tenant.id;
        let tenant = self.get(id).await?;
        self.directory.insert(&tenant.slug);
        tracing::info!(tenant = %tenant.slug, tenant_id = %id, plan = %tenant.plan, "tenant provisioned");
        Ok(Provisioned { tenant, ..shown })
    }

    /// Changes plan, features, branding or domain and records a history
    /// version. A downgrade that current usage does not fit is refused
    /// unless `force`.
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
                return Err(ServiceError::PreconditionFailed {
                    current: current.config_version,
                });
            }
            let Some(change) = planned_change(&current, &req, force, actor)? else {
                return Ok(current);
            };
            match self.store.update_config(id, &change).await {
                Ok(version) => {
                    tracing::info!(tenant = %current.slug, version, change = %change.summary, actor, "tenant configuration changed");
                    return self.get(id).await;
                }
                Err(StoreError::Stale) => {
                    let fresh = self.get(id).await?;
                    if expected.is_some() {
                        // The caller asked for the version it read.
                        return Err(ServiceError::PreconditionFailed {
                            current: fresh.config_version,
                        });
                    }
                    let overlap = overlapping_fields(&current, &fresh, &change);
                    if !overlap.is_empty() {
                        return Err(ServiceError::VersionConflict { fields: overlap });
                    }
                    current = fresh;
                }
                Err(StoreError::NotFound) => return Err(ServiceError::NotFound(id.to_string())),
                Err(other) => return Err(other.into()),
            }
        }
        Err(ServiceError::VersionConflict { fields: Vec::new() })
    }

    /// Replaces the tenant's key of `kind`; the old key stops working at once.
    pub async fn rotate_key(&self, id: Uuid, kind: KeyKind) -> Result<(Tenant, String)> {
        let tenant = self.get(id).await?;
        if tenant.status == TenantStatus::Deprovisioned {
            return Err(ServiceError::Deprovisioned(tenant.slug));
        }
        let key = credentials::generate_api_key(kind);
        self.store.rotate_key(id, &stored_key(kind, &key)).await?;
        tracing::info!(tenant = %tenant.slug, kind = kind.as_str(), prefix = %key.display_prefix, "api key rotated");
        Ok((self.get(id).await?, key.plaintext))
    }

    /// Deprovisions the tenant keeping its data; returns it. Idempotent.
    pub async fn deprovision(&self, id: Uuid) -> Result<Tenant> {
        let retain_until = now() + self.retention;
        match self.store.deprovision(id, retain_until).await {
            Err(StoreError::NotFound) => return Err(ServiceError::NotFound(id.to_string())),
            other => other?,
        }
        let tenant = self.get(id).await?;
        self.directory.remove(&tenant.slug);
        tracing::info!(tenant = %tenant.slug, retain_until = %tenant.retain_until.unwrap_or(retain_until), "tenant deprovisioned, data kept");
        Ok(tenant)
    }

    /// Deletes every row of the tenant.
    pub async fn purge(&self, id: Uuid) -> Result<()> {
        let slug = self.store.get_tenant(id).await?.map(|t| t.slug);
        match self.store.purge(id).await {
            Err(StoreError::NotFound) => Err(ServiceError::NotFound(id.to_string())),
            other => {
                other?;
                if let Some(slug) = slug {
                    self.directory.remove(&slug);
                }
                tracing::warn!(tenant_id = %id, "tenant purged: all of its data was deleted");
                Ok(())
            }
        }
    }

    /// Purges deprovisioned tenants whose retention ended before `at`.
    pub async fn purge_expired(&self, at: DateTime<Utc>) -> Result<usize> {
        let expired = self.store.expired_tenants(at).await?;
        for id in &expired {
            self.purge(*id).await?;
        }
        Ok(expired.len())
    }

    pub async fn set_usage(&self, id: Uuid, usage: Usage) -> Result<Tenant> {
        match self.store.set_usage(id, usage).await {
            Err(StoreError::NotFound) => return Err(ServiceError::NotFound(id.to_string())),
            other => other?,
        }
        self.get(id).await
    }

    pub async fn history(&self, id: Uuid) -> Result<Vec<ConfigVersion>> {
        self.get(id).await?;
        Ok(self.store.config_history(id).await?)
    }

    /// Decrypts the tenant's deployment secrets (for the deployer; never
    /// returned by the API).
    pub async fn deployment_secrets(&self, id: Uuid) -> Result<DeploymentSecrets> {
        let sealed = self.store.sealed_secrets(id).await?;
        let open = |name: &str| -> Result<String> {
            let (_, value) = sealed
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
            let plain = self
                .secrets
                .open(value, &secret_context(id, name))
                .map_err(|source| ServiceError::OpenSecret {
                    name: name.to_owned(),
                    source,
                })?;
            String::from_utf8(plain).map_err(|_| ServiceError::OpenSecret {
                name: name.to_owned(),
                source: OpenError::Malformed,
            })
        };
        Ok(DeploymentSecrets {
            database_password: open(DATABASE_PASSWORD)?,
            jwt_secret: open(JWT_SECRET)?,
        })
    }

    /// Opens a sealed outbox body.
    pub fn open_outbox_body(&self, id: Uuid, sealed: &str) -> Result<welcome::EmailBody> {
        let err = |source| ServiceError::OpenSecret {
            name: format!("outbox/{id}"),
            source,
        };
        let plain = self
            .secrets
            .open(sealed, &outbox_context(id))
            .map_err(err)?;
        serde_json::from_slice(&plain).map_err(|_| err(OpenError::Malformed))
    }
}

impl ProvisionRequest {
    /// Checks every field; the result is what will be stored.
    pub fn validate(self) -> Result<TenantSpec, ValidationError> {
        validate_name("name", &self.name)?;
        validate_slug(&self.slug)?;
        let admin_email = normalize_email("adminEmail", &self.admin_email)?;
        let domain = normalize_domain("domain", &self.domain)?;
        let features = self
            .features
            .unwrap_or_default()
            .apply(self.plan.features(), self.plan)?;
        let branding = self
            .branding
            .unwrap_or_default()
            .apply(Branding::default_for(&self.name))?;
        Ok(TenantSpec {
            name: self.name,
            slug: self.slug,
            plan: self.plan,
            admin_email,
            domain,
            features,
            branding,
        })
    }
}

/// A validated provisioning request.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    pub name: String,
    pub slug: String,
    pub plan: Plan,
    pub admin_email: String,
    pub domain: String,
    pub features: Features,
    pub branding: Branding,
}

/// Everything provisioning writes for `spec` (keys and deployment secrets
/// generated, secrets sealed, the welcome e-mail rendered and sealed), and
/// the secrets to show once. `password_hash` must be the hash of `password`.
pub fn prepare(
    spec: TenantSpec,
    password: String,
    password_hash: String,
    secrets: &SecretBox,
    actor: &str,
) -> (NewTenant, Provisioned) {
    let id = Uuid::now_v7();
    let created_at = now();
    let production = credentials::generate_api_key(KeyKind::Production);
    let development = credentials::generate_api_key(KeyKind::Development);
    let sealed_secrets = [
        (DATABASE_PASSWORD, credentials::DATABASE_PASSWORD_LEN),
        (JWT_SECRET, credentials::JWT_SECRET_LEN),
    ]
    .map(|(name, len)| {
        let value = credentials::random_base62(len);
        (
            name.to_owned(),
            secrets.seal(value.as_bytes(), &secret_context(id, name)),
        )
    })
    .to_vec();

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

fn stored_key(kind: KeyKind, key: &GeneratedKey) -> NewApiKey {
    NewApiKey {
        id: Uuid::now_v7(),
        kind,
        hash: key.hash.clone(),
        display_prefix: key.display_prefix.clone(),
    }
}

fn secret_context(tenant: Uuid, name: &str) -> String {
    format!("tenant/{tenant}/{name}")
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
        return Err(ServiceError::Deprovisioned(current.slug.clone()));
    }
    let plan = req.plan.unwrap_or(current.plan);
    if plan < current.plan && !force {
        let violations = current.usage.violations(plan);
        if !violations.is_empty() {
            return Err(ServiceError::PlanLimitsExceeded { plan, violations });
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
}
