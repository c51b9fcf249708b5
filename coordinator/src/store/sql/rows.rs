//! A tenant's rows for both backends: decoding a tenant and its keys, and
//! the inserts that several writes share (an API key, a history version
//! with what its backup needs).

use chrono::{DateTime, Utc};
use knowton_common::thresholds::Thresholds;
use knowton_common::{Branding, Features, TenantStatus, Usage};
use sqlx::Row;

use super::{PgStore, SqliteStore, corrupt, parse_json, parse_uuid, to_u64};
use crate::store::{ApiKeyInfo, ConfigSettings, NewApiKey, Result, SealedChannels, Tenant};

macro_rules! tenant_rows {
    ($store:ty) => {
        impl $store {
            /// Inserts one API key of `tenant` inside `tx`.
            pub(super) async fn insert_api_key(
                tx: &mut sqlx::Transaction<'static, $crate::store::sql::DbOf<$store>>,
                tenant: &str,
                key: &NewApiKey,
                at: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO api_keys (id, tenant_id, kind, key_hash, display_prefix, \
                     created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(key.id.to_string())
                .bind(tenant)
                .bind(key.kind.as_str())
                .bind(&key.hash)
                .bind(&key.display_prefix)
                .bind(at)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// Appends version `version` to `tenant`'s configuration history
            /// inside `tx`, after the change: the snapshot with the tenant's
            /// thresholds as they now are, and (for its backup, never shown)
            /// its thresholds and notification channels, still sealed. The
            /// row is also the version's entry in the backup queue.
            pub(super) async fn insert_history(
                tx: &mut sqlx::Transaction<'static, $crate::store::sql::DbOf<$store>>,
                tenant: &str,
                version: i64,
                at: DateTime<Utc>,
                actor: &str,
                change: &str,
                snapshot: &serde_json::Value,
            ) -> Result<()> {
                let settings = Self::config_settings(tx, tenant).await?;
                let mut snapshot = snapshot.clone();
                if let Some(map) = snapshot.as_object_mut() {
                    let thresholds = settings
                        .thresholds
                        .as_ref()
                        .map(serde_json::to_value)
                        .transpose()
                        .map_err(|e| corrupt(format!("thresholds: {e}")))?;
                    map.insert(
                        "thresholds".to_owned(),
                        thresholds.unwrap_or(serde_json::Value::Null),
                    );
                }
                let settings = serde_json::to_string(&settings)
                    .map_err(|e| corrupt(format!("configuration settings: {e}")))?;
                sqlx::query(
                    "INSERT INTO tenant_config_history (tenant_id, version, changed_at, actor, \
                     change, snapshot, settings) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(tenant)
                .bind(version)
                .bind(at)
                .bind(actor)
                .bind(change)
                .bind(snapshot.to_string())
                .bind(settings)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// `tenant`'s own thresholds and notification channels (sealed),
            /// as `tx` sees them.
            async fn config_settings(
                tx: &mut sqlx::Transaction<'static, $crate::store::sql::DbOf<$store>>,
                tenant: &str,
            ) -> Result<ConfigSettings> {
                let thresholds =
                    sqlx::query("SELECT thresholds FROM tenant_thresholds WHERE tenant_id = $1")
                        .bind(tenant)
                        .fetch_optional(&mut **tx)
                        .await?
                        .map(|row| {
                            let json: String = row.try_get("thresholds")?;
                            serde_json::from_str::<Thresholds>(&json)
                                .map_err(|e| corrupt(format!("thresholds of {tenant}: {e}")))
                        })
                        .transpose()?;
                let channels = sqlx::query(
                    "SELECT emails, sealed_webhook, sealed_slack, display \
                     FROM tenant_notification_channels WHERE tenant_id = $1",
                )
                .bind(tenant)
                .fetch_optional(&mut **tx)
                .await?
                .map(|row| -> Result<SealedChannels> {
                    let emails = row
                        .try_get::<Option<String>, _>("emails")?
                        .map(|e| {
                            serde_json::from_str(&e).map_err(|e| corrupt(format!("emails: {e}")))
                        })
                        .transpose()?;
                    Ok(SealedChannels {
                        emails,
                        sealed_webhook: row.try_get("sealed_webhook")?,
                        sealed_slack: row.try_get("sealed_slack")?,
                        display: parse_json(
                            "channel display",
                            &row.try_get::<String, _>("display")?,
                        )?,
                    })
                })
                .transpose()?;
                Ok(ConfigSettings {
                    thresholds,
                    channels,
                })
            }

            pub(super) fn tenant_from_row(
                row: &<$crate::store::sql::DbOf<$store> as sqlx::Database>::Row,
            ) -> Result<Tenant> {
                let id: String = row.try_get("id")?;
                let plan: String = row.try_get("plan")?;
                let status: String = row.try_get("status")?;
                Ok(Tenant {
                    id: parse_uuid(&id)?,
                    name: row.try_get("name")?,
                    slug: row.try_get("slug")?,
                    plan: plan.parse().map_err(corrupt)?,
                    domain: row.try_get("domain")?,
                    status: status.parse::<TenantStatus>().map_err(corrupt)?,
                    admin_email: row
                        .try_get::<Option<String>, _>("admin_email")?
                        .unwrap_or_default(),
                    branding: Branding {
                        company_name: row.try_get("company_name")?,
                        primary_color: row.try_get("primary_color")?,
                        secondary_color: row.try_get("secondary_color")?,
                        logo_url: row.try_get("logo_url")?,
                    },
                    features: Features {
                        nft: row.try_get("enable_nft")?,
                        bonds: row.try_get("enable_bonds")?,
                        fractionalization: row.try_get("enable_fractionalization")?,
                        enterprise: row.try_get("enable_enterprise")?,
                        custom_development: row.try_get("enable_custom_development")?,
                    },
                    usage: Usage {
                        users: to_u64(row.try_get("users")?),
                        storage_bytes: to_u64(row.try_get("storage_bytes")?),
                        api_requests: to_u64(row.try_get("api_requests")?),
                    },
                    api_keys: Vec::new(),
                    config_version: row.try_get("config_version")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    deprovisioned_at: row.try_get("deprovisioned_at")?,
                    retain_until: row.try_get("retain_until")?,
                })
            }

            /// A tenant from rows of `TENANT_FIELDS` + `ACTIVE_KEYS`.
            pub(super) fn tenant_with_keys(
                rows: &[<$crate::store::sql::DbOf<$store> as sqlx::Database>::Row],
            ) -> Result<Option<Tenant>> {
                let Some(first) = rows.first() else {
                    return Ok(None);
                };
                let mut tenant = Self::tenant_from_row(first)?;
                for row in rows {
                    if let Some(kind) = row.try_get::<Option<String>, _>("key_kind")? {
                        tenant.api_keys.push(ApiKeyInfo {
                            kind: kind.parse().map_err(corrupt)?,
                            display_prefix: row.try_get("key_prefix")?,
                            created_at: row.try_get("key_created_at")?,
                        });
                    }
                }
                Ok(Some(tenant))
            }

            pub(super) fn key_from_row(
                row: &<$crate::store::sql::DbOf<$store> as sqlx::Database>::Row,
            ) -> Result<ApiKeyInfo> {
                let kind: String = row.try_get("kind")?;
                Ok(ApiKeyInfo {
                    kind: kind.parse().map_err(corrupt)?,
                    display_prefix: row.try_get("display_prefix")?,
                    created_at: row.try_get("created_at")?,
                })
            }
        }
    };
}

tenant_rows!(SqliteStore);
tenant_rows!(PgStore);
