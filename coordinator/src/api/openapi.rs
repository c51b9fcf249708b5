//! The OpenAPI 3 document, generated from the handlers and types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{error, tenants, views};
use crate::provision;

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "KnowTon coordinator", description = "Tenant registry, provisioning and lifecycle of white-label KnowTon instances."),
    paths(
        tenants::create, tenants::list, tenants::get, tenants::update, tenants::delete,
        tenants::rotate_key, tenants::set_usage, tenants::history, tenants::plans,
        super::healthz, super::readyz, serve,
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail,
        provision::ProvisionRequest, provision::UpdateRequest, provision::BrandingPatch,
        views::TenantView, views::ApiKeyView, views::ProvisionResponse, views::AdminCredentials,
        views::ApiKeys, views::RotatedKey, views::TenantPage, views::DeprovisionResponse,
        views::HistoryView, views::HistoryEntry, views::PlanView, views::Status,
    )),
    modifiers(&BearerAuth),
    tags((name = "tenants", description = "Tenant lifecycle"), (name = "plans"), (name = "health")),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (KNOWTON_ADMIN_TOKEN) or a tenant API key (kt_live_… / kt_test_…)",
                    ))
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
