//! What the API returns. Secrets appear only in [`ProvisionResponse`] and
//! [`RotatedKey`], once.

use chrono::{DateTime, Utc};
use knowton_common::{Branding, Features, Plan, PlanLimits, TenantStatus, Usage};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::credentials::KeyKind;
use crate::store::{ConfigVersion, Tenant};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub plan: Plan,
    pub domain: String,
    pub status: TenantStatus,
    pub admin_email: String,
    pub branding: Branding,
    pub features: Features,
    pub usage: Usage,
    pub limits: PlanLimits,
    pub api_keys: Vec<ApiKeyView>,
    pub config_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprovisioned_at: Option<DateTime<Utc>>,
    /// Until when a deprovisioned tenant's data is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<DateTime<Utc>>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        TenantView {
            id: t.id,
            limits: t.plan.limits(),
            name: t.name,
            slug: t.slug,
            plan: t.plan,
            domain: t.domain,
            status: t.status,
            admin_email: t.admin_email,
            branding: t.branding,
            features: t.features,
            usage: t.usage,
            api_keys: t
                .api_keys
                .into_iter()
                .map(|k| ApiKeyView {
                    kind: k.kind,
                    display_prefix: k.display_prefix,
                    created_at: k.created_at,
                })
                .collect(),
            config_version: t.config_version,
            created_at: t.created_at,
            updated_at: t.updated_at,
            deprovisioned_at: t.deprovisioned_at,
            retain_until: t.retain_until,
        }
    }
}

/// An API key as listed: never the key itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub kind: KeyKind,
    /// The first characters of the key, to recognise it.
    pub display_prefix: String,
    pub created_at: DateTime<Utc>,
}

/// `201` of `POST /api/v1/tenants`: the only time these secrets are shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionResponse {
    pub tenant: TenantView,
    pub admin: AdminCredentials,
    pub api_keys: ApiKeys,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminCredentials {
    pub email: String,
    pub temporary_password: String,
    pub must_change_password: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeys {
    pub production: String,
    pub development: String,
}

/// A new API key, shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedKey {
    pub kind: KeyKind,
    pub api_key: String,
    pub display_prefix: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantPage {
    pub tenants: Vec<TenantView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Only tenants in this status.
    pub status: Option<TenantStatus>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UpdateParams {
    /// Downgrade even if current usage exceeds the new plan's limits.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Delete every row of the tenant instead of keeping its data.
    #[serde(default)]
    pub purge: bool,
}

/// Result of `DELETE /api/v1/tenants/{id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeprovisionResponse {
    pub id: Uuid,
    /// `deprovisioned` (data kept) or `purged` (data deleted).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryView {
    pub versions: Vec<HistoryEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub version: i64,
    pub changed_at: DateTime<Utc>,
    pub actor: String,
    pub change: String,
    #[schema(value_type = Object)]
    pub snapshot: serde_json::Value,
}

impl From<ConfigVersion> for HistoryEntry {
    fn from(v: ConfigVersion) -> Self {
        HistoryEntry {
            version: v.version,
            changed_at: v.changed_at,
            actor: v.actor,
            change: v.change,
            snapshot: v.snapshot,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub plan: Plan,
    pub limits: PlanLimits,
    pub features: Features,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
}
