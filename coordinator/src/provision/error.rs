//! What can go wrong in the tenant lifecycle: the caller's mistakes and
//! refusals first, then failures named after the operation that failed.

use knowton_common::{LimitViolation, Plan, ValidationError};

use crate::credentials;
use crate::deploy::controller::DeployError;
use crate::store::{StoreError, Unique};
use crate::tenant_data::TenantDataError;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
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
    #[error("failed to read the tenant")]
    ReadTenant(#[source] StoreError),
    #[error("failed to hash the admin password")]
    HashPassword(#[source] credentials::HashError),
    #[error("failed to create the tenant")]
    CreateTenant(#[source] StoreError),
    #[error("failed to change the tenant's configuration")]
    ChangeConfig(#[source] StoreError),
    #[error("failed to rotate the tenant's api key")]
    RotateKey(#[source] StoreError),
    #[error("failed to deprovision the tenant")]
    Deprovision(#[source] StoreError),
    #[error("failed to delete the tenant's namespace")]
    DeleteNamespace(#[source] DeployError),
    #[error("failed to delete the tenant's rows")]
    DeleteRows(#[source] StoreError),
    #[error("failed to list the tenants whose retention ended")]
    ListExpired(#[source] StoreError),
    #[error("failed to record the tenant's usage")]
    SetUsage(#[source] StoreError),
    #[error("failed to open the tenant's generated secrets")]
    OpenSecrets(#[source] Box<DeployError>),
    #[error("failed to create the tenant's data")]
    CreateData(#[source] Box<TenantDataError>),
    #[error("failed to disable the tenant's database")]
    DisableData(#[source] Box<TenantDataError>),
    #[error("failed to delete the tenant's data")]
    DeleteData(#[source] Box<TenantDataError>),
    #[error("failed to delete the tenant's backups")]
    DeleteBackups(#[source] Box<crate::backup::BackupError>),
}

pub type Result<T, E = LifecycleError> = std::result::Result<T, E>;

/// `operation` for a store failure, except that a unique constraint is the
/// caller's [`LifecycleError::Conflict`] and a missing row `NotFound`.
pub(super) fn failed(
    operation: fn(StoreError) -> LifecycleError,
    tenant: impl std::fmt::Display,
) -> impl FnOnce(StoreError) -> LifecycleError {
    move |err| match err {
        StoreError::Conflict(unique) => LifecycleError::Conflict(unique),
        StoreError::NotFound => LifecycleError::NotFound(tenant.to_string()),
        other => operation(other),
    }
}
