//! A tenant's generated deployment secrets: made and sealed when it is
//! provisioned, opened here when its objects are rendered.

use uuid::Uuid;

use super::DeployError;
use crate::credentials;
use crate::deploy::render::TenantSecrets;
use crate::secrets::{OpenError, SecretBox};
use crate::store::Store;

const DATABASE_PASSWORD: &str = "database_password";
const JWT_SECRET: &str = "jwt_secret";

/// What a secret is sealed for: a sealed value of one tenant cannot be
/// passed off as another tenant's (or another name's).
fn context(tenant: Uuid, name: &str) -> String {
    format!("tenant/{tenant}/{name}")
}

/// New random deployment secrets for `tenant`, sealed, as (name, sealed
/// value) for the store.
pub fn generate_sealed(tenant: Uuid, secrets: &SecretBox) -> Vec<(String, String)> {
    [
        (DATABASE_PASSWORD, credentials::DATABASE_PASSWORD_LEN),
        (JWT_SECRET, credentials::JWT_SECRET_LEN),
    ]
    .map(|(name, len)| {
        let value = credentials::random_base62(len);
        (
            name.to_owned(),
            secrets.seal(value.as_bytes(), &context(tenant, name)),
        )
    })
    .to_vec()
}

/// Reads and opens the tenant's deployment secrets.
pub(super) async fn open(
    store: &dyn Store,
    secrets: &SecretBox,
    tenant: Uuid,
) -> Result<TenantSecrets, DeployError> {
    let sealed = store
        .sealed_secrets(tenant)
        .await
        .map_err(DeployError::ReadSecrets)?;
    let open = |name| open_one(&sealed, secrets, tenant, name);
    Ok(TenantSecrets {
        database_password: open(DATABASE_PASSWORD)?,
        jwt_secret: open(JWT_SECRET)?,
    })
}

/// The database password among a tenant's sealed secrets (as
/// [`generate_sealed`] made them), opened: what its database role logs in
/// with.
pub fn database_password(
    sealed: &[(String, String)],
    secrets: &SecretBox,
    tenant: Uuid,
) -> Result<String, DeployError> {
    open_one(sealed, secrets, tenant, DATABASE_PASSWORD)
}

fn open_one(
    sealed: &[(String, String)],
    secrets: &SecretBox,
    tenant: Uuid,
    name: &'static str,
) -> Result<String, DeployError> {
    let (_, value) = sealed
        .iter()
        .find(|(n, _)| n == name)
        .ok_or(DeployError::MissingSecret { name })?;
    let plain = secrets
        .open(value, &context(tenant, name))
        .map_err(|source| DeployError::OpenSecret { name, source })?;
    String::from_utf8(plain).map_err(|_| DeployError::OpenSecret {
        name,
        source: OpenError::Malformed,
    })
}
