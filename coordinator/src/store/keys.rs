//! API keys and deployment secrets as stored: looking a key up by its
//! hash, rotating one, reading a tenant's sealed secrets.

use async_trait::async_trait;
use uuid::Uuid;

use super::{NewApiKey, Result, Tenant};
use crate::credentials::KeyKind;

/// The owner of a valid, unrevoked API key, loaded with the key so that a
/// tenant-key request costs one round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyOwner {
    pub kind: KeyKind,
    pub display_prefix: String,
    /// The key's tenant as it was when the key was checked.
    pub tenant: Tenant,
}

/// Keys and secrets.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn authenticate_key(&self, hash: &str) -> Result<Option<KeyOwner>>;
    /// Revokes the active key of `key.kind` and stores `key` in its place.
    async fn rotate_key(&self, tenant: Uuid, key: &NewApiKey) -> Result<()>;

    /// `(name, sealed value)` of the tenant's deployment secrets.
    async fn sealed_secrets(&self, tenant: Uuid) -> Result<Vec<(String, String)>>;
}
