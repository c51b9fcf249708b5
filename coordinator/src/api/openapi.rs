//! The OpenAPI 3 document, generated from the handlers and types.

use axum::Json;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use super::{
    alerts, backups, check_all, cleanup, cluster, dashboard, deployments, error, history,
    monitoring, notifications, reports, tenants, thresholds, views,
};
use crate::{notify, provision, store};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "KnowTon coordinator", description = "Tenant registry, provisioning and lifecycle of white-label KnowTon instances."),
    paths(
        tenants::create, tenants::list, tenants::get, tenants::update, tenants::delete,
        tenants::rotate_key, tenants::set_usage, tenants::history, tenants::plans,
        super::healthz, super::readyz, serve, monitoring::health, monitoring::agents,
        notifications::get_channels, notifications::set_channels,
        notifications::list_notifications,
        history::history, dashboard::dashboard, check_all::check_all, reports::report,
        reports::send_report, cleanup::cleanup, alerts::list, alerts::get, alerts::resolve, alerts::acknowledge,
        alerts::create_silence, alerts::list_silences, alerts::end_silence,
        thresholds::get, thresholds::put, thresholds::reset,
        deployments::get, deployments::deploy, deployments::put, cluster::cluster,
        backups::list, backups::start, backups::restore, backups::restore_job, backups::verify,
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail,
        provision::ProvisionRequest, provision::UpdateRequest, provision::BrandingPatch,
        views::TenantView, views::ApiKeyView, views::ProvisionResponse, views::AdminCredentials,
        views::ApiKeys, views::RotatedKey, views::TenantPage, views::DeprovisionResponse,
        views::HistoryView, views::HistoryEntry, views::PlanView, views::Status,
        monitoring::TenantHealthView, monitoring::AgentsView,
        notify::channels::ChannelsRequest, notify::channels::ChannelsView,
        notifications::NotificationView, notifications::NotificationPage, store::DeliveryState,
        alerts::AlertView, alerts::AlertList, alerts::AlertAction, alerts::SilenceRequest,
        alerts::SilenceList, store::Silence, store::AlertState, store::AlertEventRow, store::Rollup,
        store::CleanupCounts, history::HealthHistoryView, dashboard::DashboardView,
        check_all::CheckAllView, reports::ReportView, reports::ReportSent,
        dashboard::DashboardDeployment, cleanup::CleanupView, thresholds::ThresholdsView,
        thresholds::ThresholdsRequest,
        deployments::DeploymentView, deployments::DryRunView, deployments::DryRunMode,
        deployments::DeploymentSettingsRequest, store::DeploymentEvent, store::Phase,
        crate::deploy::cluster::PlannedChange, crate::deploy::cluster::Action,
        crate::deploy::diff::FieldChange, crate::deploy::kinds::ObjectRef,
        crate::replicas::ClusterView, crate::replicas::ReplicaView,
        backups::BackupsView, backups::BackupRequest, crate::backup::BackupInfo,
        backups::RestoreRequest, backups::RestoreView, crate::backup::service::RestorePart,
        crate::backup::service::Unchanged,
        crate::backup::service::VerifiedBackup, backups::VerifyView,
        store::BackupRun, store::BackupKind, store::RunStatus, store::RunTrigger, store::Verification, store::RestoreJob, store::RestoreStatus,
    )),
    modifiers(&BearerAuth, &StandardErrors),
    tags((name = "tenants", description = "Tenant lifecycle"), (name = "plans"), (name = "health"), (name = "monitoring", description = "Agent results and agents"), (name = "notifications", description = "A tenant's notification channels"), (name = "alerts", description = "Alerts, silences and thresholds"), (name = "deployments", description = "Tenant deployments on Kubernetes"), (name = "cluster", description = "The coordinator replicas and their leader"), (name = "backups", description = "Tenants' backups")),
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

/// Adds the responses every route can give, so clients (and contract
/// testers) know them: 400 for bad parameters, 401/403/429 on
/// authenticated routes, 413/415 where there is a body, 500.
struct StandardErrors;

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                let mut standard =
                    vec![("500", "Internal error; the log has it under x-request-id")];
                if path.starts_with("/api/v1/") && path != "/api/v1/openapi.json" {
                    standard.push(("400", "Invalid parameter or field, named in the error"));
                }
                if op.security.is_some() {
                    standard.push(("401", "Missing, unknown or revoked token"));
                    standard.push((
                        "403",
                        "Token not allowed to do this, or X-Tenant-Slug mismatch",
                    ));
                    standard.push((
                        "429",
                        "The tenant's plan rate limit is exhausted; see Retry-After",
                    ));
                }
                if op.request_body.is_some() {
                    standard.push(("413", "Body larger than 64 KiB"));
                    standard.push(("415", "Body is not application/json"));
                }
                for (code, description) in standard {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
        .into()
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
