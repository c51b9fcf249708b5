//! Notification routes: a tenant's own channels, and the outbox as the
//! operator sees it (pending, delivered, dead-lettered).

use axum::Json;
use axum::extract::{Extension, FromRequest, Path, Request, State};

use chrono::{DateTime, Utc};
use knowton_common::TenantStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::ApiQuery;
use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::json;
use super::page::{Page, parse_cursor};
use crate::notify::channels::{ChannelsRequest, ChannelsView};
use crate::notify::{Channel, NO_SMTP};
use crate::provision::LifecycleError;
use crate::store::{DeliveryState, OutboxEntry};
use knowton_common::health::MessageKind;

/// The tenant's notification channels: the addresses that receive its
/// alerts, and its webhook and Slack receivers (redacted, never a secret).
#[utoipa::path(get, path = "/api/v1/tenants/{idOrSlug}/notifications", tag = "notifications",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = ChannelsView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_channels(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
) -> Result<Json<ChannelsView>, ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    let tenant = state.service.get(id).await?;
    Ok(Json(state.notify.channels_view(&tenant).await?))
}

/// Replace the tenant's notification channels (all of them: an absent
/// field is no channel of that kind; absent `emails` is the tenant
/// admin's address). URLs must be https; a literal address must be a
/// public one (400 naming the field otherwise), and a name is checked
/// when delivering, after resolution (see `--notify-allow-cidr`).
/// The webhook secret and the Slack URL are stored sealed and never shown.
/// Recorded in the configuration history.
#[utoipa::path(put, path = "/api/v1/tenants/{idOrSlug}/notifications", tag = "notifications",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    request_body = ChannelsRequest,
    responses((status = 200, body = ChannelsView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "tenant_deprovisioned", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_channels(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    ChannelsJson(request): ChannelsJson,
) -> Result<Json<ChannelsView>, ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    caller.require_production()?;
    let tenant = state.service.get(id).await?;
    if tenant.status == TenantStatus::Deprovisioned {
        return Err(LifecycleError::Deprovisioned(tenant.slug).into());
    }
    let view = state
        .notify
        .set_channels(&tenant, request, &caller.actor())
        .await?;
    Ok(Json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationListParams {
    /// Only notifications in this state (`failed`: the dead letters).
    pub state: Option<DeliveryState>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// One outbox message: never its body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    /// The tenant's slug, while the tenant exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What caused it.
    pub kind: MessageKind,
    pub channel: Channel,
    /// The address, or the receiver's URL redacted to its host.
    pub recipient: String,
    pub subject: String,
    /// What receivers see to recognise a repeat.
    pub idempotency_key: String,
    pub state: DeliveryState,
    /// Delivery attempts made.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    /// When it is attempted next (pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed (or why it is not attempted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl NotificationView {
    fn of(entry: OutboxEntry, email_enabled: bool) -> Self {
        let pending = entry.state == DeliveryState::Pending;
        let last_error = match entry.last_error {
            None if pending && entry.channel == Channel::Email && !email_enabled => {
                Some(NO_SMTP.to_owned())
            }
            other => other,
        };
        NotificationView {
            id: entry.id,
            tenant_id: entry.tenant_id,
            tenant: entry.tenant_slug,
            kind: entry.kind,
            channel: entry.channel,
            recipient: entry.recipient,
            subject: entry.subject,
            idempotency_key: entry.idempotency_key,
            state: entry.state,
            attempts: entry.attempts,
            created_at: entry.created_at,
            next_attempt_at: pending.then_some(entry.next_attempt_at),
            delivered_at: entry.delivered_at,
            failed_at: entry.failed_at,
            last_error,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPage {
    pub notifications: Vec<NotificationView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Notifications in the outbox, oldest first, a page at a time:
/// `state=failed` lists the dead letters with their last error.
#[utoipa::path(get, path = "/api/v1/monitoring/notifications", tag = "monitoring",
    params(NotificationListParams),
    responses((status = 200, body = NotificationPage), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_notifications(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<NotificationListParams>,
) -> Result<Json<NotificationPage>, ApiError> {
    caller.require_admin()?;
    let page = Page::new(params.limit)?;
    let after = parse_cursor(params.cursor.as_deref())?;
    let mut entries = state
        .notify
        .store()
        .list_outbox(params.state, page.rows_to_read(), after)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let next_cursor = page.cut(&mut entries, |e| e.id.to_string());
    let email_enabled = state.notify.email_enabled();
    Ok(Json(NotificationPage {
        notifications: entries
            .into_iter()
            .map(|e| NotificationView::of(e, email_enabled))
            .collect(),
        next_cursor,
    }))
}

/// The body of `PUT …/notifications`. Like [`json::ApiJson`] (content
/// type, size, the field at fault named), except that `emails` is a list:
/// it is taken out and checked here, and the rest goes through
/// [`json::parse`], which refuses a list anywhere else.
#[derive(Debug)]
pub struct ChannelsJson(pub ChannelsRequest);

impl<S: Send + Sync> FromRequest<S> for ChannelsJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json::json_body(req, state).await?;
        // Syntax errors and empty bodies are reported by json::parse.
        let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
            return json::parse::<ChannelsRequest>(&bytes).map(ChannelsJson);
        };
        let emails = match value.as_object_mut().and_then(|m| m.remove("emails")) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::String(s) => Ok(s),
                        _ => Err(ApiError::invalid(
                            format!("emails[{i}]"),
                            "invalid type: expected a string",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(ApiError::invalid(
                    "emails",
                    "invalid type: expected a list of strings",
                ));
            }
        };
        let mut request: ChannelsRequest = json::parse(value.to_string().as_bytes())?;
        request.emails = emails;
        Ok(ChannelsJson(request))
    }
}
