//! Each tenant's own data: a PostgreSQL database and role on the tenants'
//! server ([`database`], with `--tenant-database-url`) and, without a
//! cluster, a storage directory ([`storage`]). Made when the tenant is
//! provisioned (a failure leaves neither), kept when it is deprovisioned
//! (its role can no longer log in), removed when it is purged.

pub mod database;
pub mod scram;
pub mod storage;

use std::path::PathBuf;

use uuid::Uuid;

pub use database::{DatabaseRef, TenantDatabases, ToolAccess, database_name};
pub use storage::TenantStorage;

/// Flags of `serve` for tenants' data.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TenantDataArgs {
    /// An administrative connection to the PostgreSQL server that holds the
    /// tenants' databases (a superuser, or a role with CREATEROLE and
    /// CREATEDB): provisioning creates a role and a database
    /// `tenant_<slug>` per tenant; deprovisioning stops the role's login;
    /// purging drops both. Without it, tenants have no database.
    #[arg(long, env = "KNOWTON_TENANT_DATABASE_URL", hide_env_values = true)]
    pub tenant_database_url: Option<String>,

    /// Where each tenant's files live when there is no cluster:
    /// `<dir>/<slug>`. Default: `tenants/` beside the SQLite database,
    /// else in the working directory.
    #[arg(long, env = "KNOWTON_TENANT_STORAGE_DIR")]
    pub tenant_storage_dir: Option<PathBuf>,
}

/// `--tenant-database-url`: its credentials stay out of `Debug` output.
#[derive(Clone)]
pub struct AdminUrl(pub String);

impl std::fmt::Debug for AdminUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::store::redact_url_credentials(&self.0))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TenantDataError {
    #[error("--tenant-database-url {url} is not a PostgreSQL URL")]
    InvalidUrl { url: String },
    #[error("failed to connect to the tenants' database server {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("tenant database {name}: failed to {step}")]
    Database {
        name: String,
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("a database named {name} exists that was not made for this tenant: it is left alone")]
    NotOurs { name: String },
    #[error("tenant storage {}: failed to {step}", dir.display())]
    Storage {
        dir: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The tenants' data: what there is of it in this installation.
#[derive(Debug, Clone, Default)]
pub struct TenantData {
    /// With `--tenant-database-url`.
    pub databases: Option<TenantDatabases>,
    /// Without a cluster.
    pub storage: Option<TenantStorage>,
}

impl TenantData {
    /// Creates the tenant's database (its role logging in with
    /// `database_password`) and storage directory; on failure, nothing of
    /// either is left.
    pub async fn create(
        &self,
        tenant: Uuid,
        slug: &str,
        database_password: &str,
    ) -> Result<(), TenantDataError> {
        if let Some(storage) = &self.storage {
            storage
                .create(slug)
                .map_err(|source| TenantDataError::Storage {
                    dir: storage.dir(slug),
                    step: "create it",
                    source,
                })?;
        }
        if let Some(databases) = &self.databases
            && let Err(err) = databases.create(tenant, slug, database_password).await
        {
            if let Some(storage) = &self.storage
                && let Err(undo) = storage.remove(slug)
            {
                tracing::error!(tenant = slug, error = %undo, "failed to remove the storage directory of a failed provisioning");
            }
            return Err(err);
        }
        Ok(())
    }

    /// Deprovisioned: the data stays, the database can no longer be used.
    pub async fn disable(&self, slug: &str) -> Result<(), TenantDataError> {
        match &self.databases {
            Some(databases) => databases.disable(slug).await,
            None => Ok(()),
        }
    }

    /// Purged (or never committed): the tenant's database, role and files
    /// are deleted.
    pub async fn remove(&self, tenant: Uuid, slug: &str) -> Result<(), TenantDataError> {
        if let Some(databases) = &self.databases {
            databases.drop(tenant, slug).await?;
        }
        if let Some(storage) = &self.storage {
            storage
                .remove(slug)
                .map_err(|source| TenantDataError::Storage {
                    dir: storage.dir(slug),
                    step: "remove it",
                    source,
                })?;
        }
        Ok(())
    }

    /// Where the tenant's backend finds its database, if tenants have one.
    pub fn database(&self, slug: &str) -> Option<DatabaseRef> {
        self.databases.as_ref().map(|d| d.reference(slug))
    }
}
