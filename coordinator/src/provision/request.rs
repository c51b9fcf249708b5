//! What callers ask the tenant lifecycle for (the REST bodies of
//! provisioning and configuration changes), and their validation.

use knowton_common::tenant::{normalize_domain, normalize_email, validate_name, validate_slug};
use knowton_common::{Branding, FeatureOverrides, Features, Plan, ValidationError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
    pub(super) fn apply(&self, mut base: Branding) -> Result<Branding, ValidationError> {
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

impl ProvisionRequest {
    /// Checks every field; the result is what will be stored.
    pub fn validate(self) -> Result<ProvisionSpec, ValidationError> {
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
        Ok(ProvisionSpec {
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
pub struct ProvisionSpec {
    pub name: String,
    pub slug: String,
    pub plan: Plan,
    pub admin_email: String,
    pub domain: String,
    pub features: Features,
    pub branding: Branding,
}
