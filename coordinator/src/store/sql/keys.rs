//! The SQL behind [`KeyStore`], for both backends.

use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

use super::{ACTIVE_KEYS, ACTIVE_KEYS_JOIN, PgStore, SqliteStore, TENANT_FIELDS, corrupt};
use crate::credentials::KeyKind;
use crate::store::{KeyOwner, KeyStore, NewApiKey, Result, now};

macro_rules! keys_sql {
    ($store:ty) => {
        #[async_trait]
        impl KeyStore for $store {
            async fn authenticate_key(&self, hash: &str) -> Result<Option<KeyOwner>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {TENANT_FIELDS}, {ACTIVE_KEYS}, auth.kind AS auth_kind, \
                     auth.display_prefix AS auth_prefix \
                     FROM api_keys auth JOIN tenants t ON t.id = auth.tenant_id {} \
                     {ACTIVE_KEYS_JOIN} \
                     WHERE auth.key_hash = $1 AND auth.revoked_at IS NULL \
                     AND t.status = 'active' ORDER BY k.kind DESC",
                    tenant_joins!()
                ));
                let rows = sqlx::query(sql).bind(hash).fetch_all(&self.pool).await?;
                let (Some(first), Some(tenant)) = (rows.first(), Self::tenant_with_keys(&rows)?)
                else {
                    return Ok(None);
                };
                let kind: String = first.try_get("auth_kind")?;
                Ok(Some(KeyOwner {
                    kind: kind.parse::<KeyKind>().map_err(corrupt)?,
                    display_prefix: first.try_get("auth_prefix")?,
                    tenant,
                }))
            }

            async fn rotate_key(&self, tenant: Uuid, key: &NewApiKey) -> Result<()> {
                let id = tenant.to_string();
                let at = now();
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = $3 \
                     WHERE tenant_id = $1 AND kind = $2 AND revoked_at IS NULL",
                )
                .bind(&id)
                .bind(key.kind.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
                Self::insert_api_key(&mut tx, &id, key, at).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn sealed_secrets(&self, tenant: Uuid) -> Result<Vec<(String, String)>> {
                let rows = sqlx::query(
                    "SELECT name, sealed FROM tenant_secrets WHERE tenant_id = $1 ORDER BY name",
                )
                .bind(tenant.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("name")?, r.try_get("sealed")?)))
                    .collect()
            }
        }
    };
}

keys_sql!(SqliteStore);
keys_sql!(PgStore);
