//! The tenant lifecycle, owned in one place: provision, change, rotate
//! keys, deprovision and purge. Each operation does the store transaction,
//! asks for the deployment, keeps the live tenant directory current and
//! makes the health engine forget a tenant that is gone, here and (`follow`)
//! on every other replica; the REST API (and so the CLI) and the demo call
//! it, nothing reaches around it.

mod error;
mod follow;
mod prepare;
mod request;
mod restore;
mod retire;
mod update;

use std::sync::Arc;

use knowton_common::{TenantStatus, Usage};
use uuid::Uuid;

pub use error::{LifecycleError, Result};
pub use prepare::{Provisioned, prepare};
pub use request::{BrandingPatch, ProvisionRequest, ProvisionSpec, UpdateRequest};

use self::error::failed;
use crate::credentials;
use crate::credentials::KeyKind;
use crate::deploy::controller::secrets as deployment_secrets;
use crate::deploy::{Deployer, Trigger};
use crate::directory::TenantDirectory;
use crate::health::Engine;
use crate::notify::Wakeup;
use crate::secrets::SecretBox;
use crate::store::{ConfigVersion, Store, Tenant, Unique};
use crate::tenant_data::TenantData;

/// What the lifecycle acts on.
#[derive(Debug)]
pub struct LifecycleParts {
    pub store: Arc<dyn Store>,
    /// Seals new tenants' secrets and welcome e-mails.
    pub secrets: SecretBox,
    /// Deprovisioned tenants' data is kept this many days.
    pub retention_days: u32,
    /// Must hold the store's active tenants (see [`TenantDirectory::load`]);
    /// the lifecycle keeps it current.
    pub directory: Arc<TenantDirectory>,
    /// Poked after a commit that enqueued notifications.
    pub outbox: Wakeup,
    pub deployer: Deployer,
    pub engine: Engine,
    /// Each tenant's database and files.
    pub data: TenantData,
    /// The backups, deleted with the tenant when it is purged.
    pub backups: Option<crate::backup::Backups>,
}

/// The tenant lifecycle service.
#[derive(Debug)]
pub struct TenantLifecycle {
    store: Arc<dyn Store>,
    secrets: SecretBox,
    hasher: credentials::PasswordHasherPool,
    retention: chrono::Duration,
    directory: Arc<TenantDirectory>,
    outbox: Wakeup,
    deployer: Deployer,
    engine: Engine,
    data: TenantData,
    backups: Option<crate::backup::Backups>,
}

impl TenantLifecycle {
    pub fn new(parts: LifecycleParts) -> Self {
        TenantLifecycle {
            store: parts.store,
            secrets: parts.secrets,
            hasher: credentials::PasswordHasherPool::per_cpu(),
            retention: chrono::Duration::days(i64::from(parts.retention_days)),
            directory: parts.directory,
            outbox: parts.outbox,
            deployer: parts.deployer,
            engine: parts.engine,
            data: parts.data,
            backups: parts.backups,
        }
    }

    /// The active tenants' slugs.
    pub fn directory(&self) -> &Arc<TenantDirectory> {
        &self.directory
    }

    /// Resolves a tenant id or slug to an id.
    pub async fn resolve(&self, id_or_slug: &str) -> Result<Uuid> {
        if let Ok(id) = Uuid::parse_str(id_or_slug) {
            return Ok(id);
        }
        self.store
            .find_tenant_id(id_or_slug)
            .await
            .map_err(LifecycleError::ReadTenant)?
            .ok_or_else(|| LifecycleError::NotFound(id_or_slug.to_owned()))
    }

    pub async fn get(&self, id: Uuid) -> Result<Tenant> {
        self.store
            .get_tenant(id)
            .await
            .map_err(LifecycleError::ReadTenant)?
            .ok_or_else(|| LifecycleError::NotFound(id.to_string()))
    }

    /// Creates the tenant's database and files, then the tenant (record,
    /// admin user, keys, sealed deployment secrets, welcome e-mail, first
    /// configuration version) in one transaction, and asks for its first
    /// deployment. When the record cannot be written, the database and
    /// files are removed again: a failure leaves neither.
    pub async fn provision(&self, req: ProvisionRequest, actor: &str) -> Result<Provisioned> {
        let spec = req.validate()?;
        // Cheap check before the deliberately slow password hash; the unique
        // constraint still decides races.
        if self
            .store
            .find_tenant_id(&spec.slug)
            .await
            .map_err(LifecycleError::ReadTenant)?
            .is_some()
        {
            return Err(LifecycleError::Conflict(Unique::TenantSlug));
        }
        let password = credentials::generate_password();
        let password_hash = self
            .hasher
            .hash(password.clone())
            .await
            .map_err(LifecycleError::HashPassword)?;
        let (new, shown) = prepare(spec, password, password_hash, &self.secrets, actor);
        let id = new.tenant.id;
        let slug = &new.tenant.slug;
        let database_password =
            deployment_secrets::database_password(&new.secrets, &self.secrets, id)
                .map_err(|e| LifecycleError::OpenSecrets(Box::new(e)))?;
        self.data
            .create(id, slug, &database_password)
            .await
            .map_err(|e| LifecycleError::CreateData(Box::new(e)))?;
        if let Err(err) = self.store.create_tenant(&new).await {
            if let Err(undo) = self.data.remove(id, slug).await {
                tracing::error!(tenant = %slug, error = %undo, "failed to remove the data of a tenant whose record could not be written");
            }
            return Err(failed(LifecycleError::CreateTenant, id)(err));
        }
        self.outbox.poke();
        let tenant = self.get(id).await?;
        self.changed(id, &tenant.slug).await;
        tracing::info!(tenant = %tenant.slug, tenant_id = %id, plan = %tenant.plan, "tenant provisioned");
        self.deployer.after_change(id, Trigger::Provisioned).await;
        Ok(Provisioned { tenant, ..shown })
    }

    /// Replaces the tenant's key of `kind`; the old key stops working at once.
    pub async fn rotate_key(&self, id: Uuid, kind: KeyKind) -> Result<(Tenant, String)> {
        let tenant = self.get(id).await?;
        if tenant.status == TenantStatus::Deprovisioned {
            return Err(LifecycleError::Deprovisioned(tenant.slug));
        }
        let key = credentials::generate_api_key(kind);
        self.store
            .rotate_key(id, &prepare::stored_key(kind, &key))
            .await
            .map_err(failed(LifecycleError::RotateKey, id))?;
        tracing::info!(tenant = %tenant.slug, kind = kind.as_str(), prefix = %key.display_prefix, "api key rotated");
        Ok((self.get(id).await?, key.plaintext))
    }

    pub async fn set_usage(&self, id: Uuid, usage: Usage) -> Result<Tenant> {
        self.store
            .set_usage(id, usage)
            .await
            .map_err(failed(LifecycleError::SetUsage, id))?;
        self.get(id).await
    }

    pub async fn history(&self, id: Uuid) -> Result<Vec<ConfigVersion>> {
        self.get(id).await?;
        self.store
            .config_history(id)
            .await
            .map_err(LifecycleError::ReadTenant)
    }
}
