//! One place that turns every failure into an HTTP status and a stable `code`.
//!
//! Client mistakes are returned as they are and not logged as errors;
//! internal failures are logged with their cause chain and returned as a
//! generic message.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use knowton_common::{LimitViolation, ValidationError, error_chain};
use serde::Serialize;
use utoipa::ToSchema;

use crate::deploy::controller::DeployError;
use crate::health::engine::EngineError;
use crate::notify::NotifyError;
use crate::provision::LifecycleError;
use crate::store::Unique;
use crate::tenant_data::TenantDataError;

/// The code of what only the leader can do, asked of a replica that does
/// not lead (and could not pass it on to the leader).
pub const NOT_LEADER: &str = "not_leader";

/// `{"error": {...}}`
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `slug_taken`.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The plan limits that current usage exceeds (`plan_limits_exceeded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Vec<LimitViolation>>,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: ErrorDetail,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: ErrorDetail {
                code,
                message: message.into(),
                field: None,
                limits: None,
            },
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.detail.field = Some(field.into());
        self
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).field(field)
    }

    pub fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "tenant_not_found",
            format!("tenant {what} not found"),
        )
    }

    /// 404 `alert_not_found`: no such alert, or one the caller may not see.
    pub fn alert_not_found(id: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "alert_not_found",
            format!("alert {id} not found"),
        )
    }

    /// 404 `silence_not_found`: no such silence in force, or one the caller
    /// may not see.
    pub fn silence_not_found(id: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "silence_not_found",
            format!("silence {id} not found"),
        )
    }

    /// Logs `err` with its cause chain and hides it from the client.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(err), "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the coordinator's log has the details under this response's x-request-id",
        )
    }

    /// The Kubernetes API server refused or failed: 502 `cluster_error`;
    /// what it said is logged with its cause chain, not returned (it can
    /// name objects and settings of the cluster).
    pub fn cluster(err: &(dyn std::error::Error + 'static)) -> Self {
        tracing::warn!(error = %error_chain(err), "the kubernetes api server failed a request");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "cluster_error",
            "the Kubernetes API server failed the request; the coordinator's log has the details under this response's x-request-id",
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        ApiError::invalid(err.field, err.message)
    }
}

impl From<LifecycleError> for ApiError {
    fn from(err: LifecycleError) -> Self {
        match err {
            LifecycleError::Invalid(v) => v.into(),
            LifecycleError::Conflict(unique) => {
                let (code, field) = match unique {
                    Unique::TenantSlug => ("slug_taken", "slug"),
                    Unique::TenantDomain => ("domain_taken", "domain"),
                    // Never a request's field: a duplicate key is a bug, and
                    // a running backup or restore is answered before it
                    // reaches here.
                    Unique::OutboxIdempotencyKey
                    | Unique::BackupRunning
                    | Unique::RestoreRunning => {
                        return ApiError::internal(&LifecycleError::Conflict(unique));
                    }
                };
                ApiError::new(
                    StatusCode::CONFLICT,
                    code,
                    format!("{field} is already taken by another tenant"),
                )
                .field(field)
            }
            LifecycleError::NotFound(what) => ApiError::not_found(&what),
            LifecycleError::PlanLimitsExceeded { plan, violations } => {
                let named: Vec<String> = violations
                    .iter()
                    .map(|v| format!("{} {} > {}", v.limit, v.current, v.allowed))
                    .collect();
                let mut e = ApiError::new(
                    StatusCode::CONFLICT,
                    "plan_limits_exceeded",
                    format!(
                        "current usage exceeds the {plan} plan's limits ({}); retry with ?force=true to downgrade anyway",
                        named.join(", ")
                    ),
                )
                .field("plan");
                e.detail.limits = Some(violations);
                e
            }
            LifecycleError::Deprovisioned(slug) => ApiError::new(
                StatusCode::CONFLICT,
                "tenant_deprovisioned",
                format!("tenant {slug} is deprovisioned"),
            ),
            err @ LifecycleError::PreconditionFailed { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                err.to_string(),
            )
            .field("If-Match"),
            LifecycleError::VersionConflict { fields } => {
                let message = if fields.is_empty() {
                    "the tenant kept changing while this change was applied; retry".to_owned()
                } else {
                    format!(
                        "another change to {} was made at the same time; read the tenant again and retry",
                        fields.join(", ")
                    )
                };
                let e = ApiError::new(StatusCode::CONFLICT, "version_conflict", message);
                match fields.into_iter().next() {
                    Some(field) => e.field(field),
                    None => e,
                }
            }
            LifecycleError::DeleteNamespace(err) => match err.cluster() {
                Some(refused) => {
                    tracing::warn!(error = %knowton_common::error_chain(&err), "the cluster refused to delete a tenant's namespace");
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "cluster_error",
                        refused.to_string(),
                    )
                }
                None => ApiError::internal(&err),
            },
            LifecycleError::CreateData(err)
            | LifecycleError::DisableData(err)
            | LifecycleError::DeleteData(err) => tenant_data_error(&err),
            LifecycleError::DeleteBackups(err) => {
                let message = knowton_common::error_chain(&err);
                tracing::error!(error = %message, "a purged tenant's backups could not be deleted");
                ApiError::new(StatusCode::BAD_GATEWAY, "backup_repository_error", message)
            }
            err @ (LifecycleError::ReadTenant(_)
            | LifecycleError::OpenSecrets(_)
            | LifecycleError::HashPassword(_)
            | LifecycleError::CreateTenant(_)
            | LifecycleError::ChangeConfig(_)
            | LifecycleError::RotateKey(_)
            | LifecycleError::Deprovision(_)
            | LifecycleError::DeleteRows(_)
            | LifecycleError::ListExpired(_)
            | LifecycleError::SetUsage(_)) => ApiError::internal(&err),
        }
    }
}

/// A tenant's database or files could not be made, disabled or removed:
/// 409 when a database or role of its name exists that is not the
/// tenant's, else 502 naming the step and the server's reason (an
/// operator's to fix: permissions, disk, the server down).
fn tenant_data_error(err: &TenantDataError) -> ApiError {
    let taken = match err {
        TenantDataError::NotOurs { .. } => true,
        TenantDataError::Database {
            source: sqlx::Error::Database(db),
            ..
        } => matches!(db.code().as_deref(), Some("42710" | "42P04")),
        TenantDataError::Storage { source, .. } => {
            source.kind() == std::io::ErrorKind::AlreadyExists
        }
        _ => false,
    };
    let message = knowton_common::error_chain(err);
    if taken {
        ApiError::new(StatusCode::CONFLICT, "tenant_data_conflict", message)
    } else {
        tracing::error!(error = %message, "a tenant's data could not be changed");
        ApiError::new(StatusCode::BAD_GATEWAY, "tenant_data_error", message)
    }
}

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> Self {
        match err {
            NotifyError::Invalid(v) => v.into(),
            err @ (NotifyError::OpenChannel { .. } | NotifyError::Store(_)) => {
                ApiError::internal(&err)
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::AlertNotFound(id) => ApiError::alert_not_found(id),
            EngineError::AlreadyResolved(id) => ApiError::new(
                StatusCode::CONFLICT,
                "alert_resolved",
                format!("alert {id} is already resolved"),
            ),
            EngineError::SilenceNotFound(id) => ApiError::silence_not_found(id),
            err @ EngineError::SilenceLimit { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "silence_limit_reached",
                err.to_string(),
            ),
            EngineError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine_not_running",
                "the health engine is not running",
            ),
            err @ EngineError::NotLeader => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_leader",
                err.to_string(),
            ),
            err @ (EngineError::RecordAlert(_) | EngineError::PlanNotifications(_)) => {
                ApiError::internal(&err)
            }
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(err: DeployError) -> Self {
        match err.cluster() {
            Some(refused) => ApiError::cluster(refused),
            None => ApiError::internal(&err),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let text = rejection.body_text();
        let message = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("query string: {message}"),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, Json(ErrorBody { error: self.detail })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::ApiError;
    use crate::deploy::ClusterError;
    use crate::deploy::controller::DeployError;
    use crate::deploy::kinds::ObjectRef;

    #[test]
    fn cluster_failures_keep_their_status_and_code_but_not_their_text() {
        let object = ObjectRef {
            kind: "Secret".to_owned(),
            namespace: Some("knowton-tenant-acme".to_owned()),
            name: "acme-database".to_owned(),
        };
        let err = ApiError::from(DeployError::DryRun(ClusterError::UnknownKind { object }));
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        assert_eq!(err.detail.code, "cluster_error");
        assert!(
            !err.detail.message.contains("acme"),
            "{}",
            err.detail.message
        );
    }
}
