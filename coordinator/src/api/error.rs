//! One place that turns every failure into an HTTP status and a stable `code`.
//!
//! Client mistakes are returned as they are and not logged as errors;
//! internal failures are logged with their cause chain and returned as a
//! generic message.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use knowton_common::{LimitViolation, ValidationError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::notify::NotifyError;
use crate::provision::ServiceError;
use crate::store::Unique;

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

    /// Logs `err` with its cause chain and hides it from the client.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %chain, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the coordinator's log has the details under this response's x-request-id",
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        ApiError::invalid(err.field, err.message)
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Invalid(v) => v.into(),
            ServiceError::Conflict(unique) => {
                let (code, field) = match unique {
                    Unique::TenantSlug => ("slug_taken", "slug"),
                    Unique::TenantDomain => ("domain_taken", "domain"),
                    // Never a request's field: a duplicate key is a bug.
                    Unique::OutboxIdempotencyKey => {
                        return ApiError::internal(&ServiceError::Conflict(unique));
                    }
                };
                ApiError::new(
                    StatusCode::CONFLICT,
                    code,
                    format!("{field} is already taken by another tenant"),
                )
                .field(field)
            }
            ServiceError::NotFound(what) => ApiError::not_found(&what),
            ServiceError::PlanLimitsExceeded { plan, violations } => {
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
            ServiceError::Deprovisioned(slug) => ApiError::new(
                StatusCode::CONFLICT,
                "tenant_deprovisioned",
                format!("tenant {slug} is deprovisioned"),
            ),
            err @ ServiceError::PreconditionFailed { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                err.to_string(),
            )
            .field("If-Match"),
            ServiceError::VersionConflict { fields } => {
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
            err @ (ServiceError::HashPassword(_)
            | ServiceError::OpenSecret { .. }
            | ServiceError::Store(_)) => ApiError::internal(&err),
        }
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
