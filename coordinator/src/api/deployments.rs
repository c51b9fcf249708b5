//! A tenant's deployment on Kubernetes: its status, a deployment on
//! demand, client and server dry-runs, and its ingress allowlist.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::{ApiQuery, AppState, json};
use crate::deploy::Trigger;
use crate::deploy::cluster::PlannedChange;
use crate::deploy::controller::{DeployError, objects_hash};
use crate::deploy::flags::is_cidr;
use crate::deploy::render::{redacted, to_yaml};
use crate::store::{DeploymentEvent, DeploymentRow, DeploymentSettings, Phase};

/// Events shown with the status.
const EVENTS_SHOWN: i64 = 50;

/// Where a tenant's deployment is, and what the deployer did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub tenant: String,
    pub phase: Phase,
    /// Why it failed, or a note on how it finished (e.g. `no cluster
    /// configured`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the coordinator has a cluster to deploy to.
    pub cluster: bool,
    /// The number of the latest deployment (0: none yet).
    pub attempt: i64,
    pub trigger: String,
    /// sha256 of the rendered objects (Secret values left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects_hash: Option<String>,
    pub allowlist: Vec<String>,
    /// The backend's minimum replicas as raised by scaling; absent: the
    /// plan's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaled_at: Option<DateTime<Utc>>,
    pub requested_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Newest first: phases, pruning, drift repairs, scaling.
    pub events: Vec<DeploymentEvent>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DryRunMode {
    /// Render only; no cluster needed.
    Client,
    /// Ask the API server (`dryRun=All`) what would change.
    Server,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeployParams {
    /// Preview instead of deploying.
    pub dry_run: Option<DryRunMode>,
}

/// A dry-run's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRunView {
    pub tenant: String,
    pub objects_hash: String,
    /// The rendered objects, Secret values redacted (client dry-run).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub objects: Option<Vec<Value>>,
    /// The same as a multi-document YAML stream (client dry-run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yaml: Option<String>,
    /// Per object: create, change (with the fields), unchanged or delete
    /// (server dry-run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<PlannedChange>>,
}

/// `PUT /api/v1/tenants/{id}/deployment`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSettingsRequest {
    /// CIDRs allowed to reach the tenant's ingress; empty: everyone.
    #[schema(max_items = 64)]
    pub allowlist: Vec<String>,
}

async fn view(state: &AppState, id: Uuid) -> Result<DeploymentView, ApiError> {
    let tenant = state.service.get(id).await?;
    let store = &state.store;
    let internal = |e: crate::store::StoreError| ApiError::internal(&e);
    let row = store.deployment(id).await.map_err(internal)?;
    let events = store
        .deployment_events(id, EVENTS_SHOWN)
        .await
        .map_err(internal)?;
    // No deployment asked for yet: shown as triggered by "none".
    let trigger = row
        .as_ref()
        .map_or("none", |r| r.trigger.as_str())
        .to_owned();
    let row = row.unwrap_or_else(|| DeploymentRow::new(id, Trigger::Provisioned));
    Ok(DeploymentView {
        tenant: tenant.slug,
        phase: row.phase,
        reason: row.reason,
        cluster: state.deployer.cluster().is_some(),
        attempt: row.attempt,
        trigger,
        objects_hash: row.objects_hash,
        allowlist: row.allowlist,
        min_replicas: row.min_replicas,
        scaled_at: row.scaled_at,
        requested_at: row.requested_at,
        started_at: row.started_at,
        updated_at: row.updated_at,
        finished_at: row.finished_at,
        events,
    })
}

/// The tenant's deployment: phase, timestamps, objects hash and events.
#[utoipa::path(get, path = "/api/v1/tenants/{idOrSlug}/deployment", tag = "deployments",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = DeploymentView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    Ok(Json(view(&state, id).await?))
}

/// Deploy the tenant now (202: queued; follow `GET …/deployment`), or
/// preview with `dryRun=client` (rendered objects) or `dryRun=server`
/// (what the API server says would change).
#[utoipa::path(post, path = "/api/v1/tenants/{idOrSlug}/deploy", tag = "deployments",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug"), DeployParams),
    responses((status = 202, description = "Queued", body = DeploymentView),
        (status = 200, description = "Dry-run", body = DryRunView),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "no_cluster (server dry-run without a cluster)", body = ErrorBody),
        (status = 502, description = "The API server refused", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deploy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    ApiQuery(params): ApiQuery<DeployParams>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let id = state.service.resolve(&id_or_slug).await?;
    let tenant = state.service.get(id).await?;
    let Some(mode) = params.dry_run else {
        state.deployer.request(id, Trigger::Manual).await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(to_json(&view(&state, id).await?)),
        ));
    };
    let objects = state.deployer.render_tenant(&tenant).await?;
    let mut shown = DryRunView {
        objects_hash: objects_hash(&objects),
        tenant: tenant.slug,
        objects: None,
        yaml: None,
        changes: None,
    };
    match mode {
        DryRunMode::Client => {
            shown.yaml = Some(to_yaml(&objects));
            shown.objects = Some(objects.iter().map(redacted).collect());
        }
        DryRunMode::Server => {
            let Some(cluster) = state.deployer.cluster() else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "no_cluster",
                    "no Kubernetes cluster is configured: use dryRun=client",
                ));
            };
            let changes = cluster
                .dry_run(&shown.tenant, &objects)
                .await
                .map_err(DeployError::DryRun)?;
            shown.changes = Some(changes);
        }
    }
    Ok((StatusCode::OK, Json(to_json(&shown))))
}

/// Set the tenant's ingress allowlist (admin only); deploys at once.
#[utoipa::path(put, path = "/api/v1/tenants/{idOrSlug}/deployment", tag = "deployments",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    request_body = DeploymentSettingsRequest,
    responses((status = 200, body = DeploymentView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    request: axum::extract::Request,
) -> Result<Json<DeploymentView>, ApiError> {
    caller.require_admin()?;
    let body = json::json_body(request, &()).await?;
    let request: DeploymentSettingsRequest = json::parse_with_lists(&body, &["allowlist"])?;
    let id = state.service.resolve(&id_or_slug).await?;
    let tenant = state.service.get(id).await?;
    if tenant.status == knowton_common::TenantStatus::Deprovisioned {
        return Err(crate::provision::LifecycleError::Deprovisioned(tenant.slug).into());
    }
    if request.allowlist.len() > 64 {
        return Err(ApiError::invalid("allowlist", "at most 64 entries"));
    }
    if let Some((i, bad)) = request
        .allowlist
        .iter()
        .enumerate()
        .find(|(_, c)| !is_cidr(c))
    {
        return Err(ApiError::invalid(
            format!("allowlist[{i}]"),
            format!("{bad:?} is not a CIDR (e.g. 203.0.113.0/24)"),
        ));
    }
    let event = DeploymentEvent {
        at: crate::store::now(),
        attempt: 0,
        kind: "settings".to_owned(),
        detail: format!(
            "ingress allowlist set by {}: {}",
            caller.actor(),
            if request.allowlist.is_empty() {
                "everyone".to_owned()
            } else {
                request.allowlist.join(", ")
            }
        ),
    };
    state
        .store
        .set_deployment_settings(
            id,
            &DeploymentSettings {
                allowlist: Some(request.allowlist),
                min_replicas: None,
            },
            &event,
            None,
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
    state.deployer.request(id, Trigger::Updated).await?;
    Ok(Json(view(&state, id).await?))
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
