//! Errors as the real API server answers them: a `Status` object (kind,
//! code, reason, message and details) with the same HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::resources::ResourceType;

/// An error, answered as a `Status` object with its HTTP status.
#[derive(Debug, Clone)]
pub(super) struct StatusError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl StatusError {
    pub(super) fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        StatusError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// An error with the reason the real API server gives to `code` when
    /// it knows nothing more (`NewGenericServerResponse`).
    pub(super) fn generic(code: u16, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        StatusError::new(status, reason_for(code), message)
    }

    pub(super) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Adds a cause to the details.
    pub(super) fn with_cause(mut self, cause: Value) -> Self {
        let details = self.details.get_or_insert_with(|| json!({}));
        match details["causes"].as_array_mut() {
            Some(causes) => causes.push(cause),
            None => details["causes"] = json!([cause]),
        }
        self
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        StatusError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        StatusError::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub(super) fn no_such_resource() -> Self {
        StatusError::not_found("the server could not find the requested resource")
    }

    pub(super) fn method_not_allowed(method: &str) -> Self {
        StatusError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    pub(super) fn too_large_resource_version() -> Self {
        StatusError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            "Too large resource version",
        )
    }

    pub(super) fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        StatusError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({"causes": [{"message": message}]}))
    }

    /// `pods "x" not found`
    pub(super) fn object_not_found(ty: &ResourceType, name: &str) -> Self {
        StatusError::not_found(format!("{} \"{name}\" not found", ty.qualified()))
            .with_details(details(ty, name))
    }

    /// `namespaces "x" not found`, as the NamespaceLifecycle admission
    /// plugin answers a write into a namespace that does not exist.
    pub(super) fn namespace_not_found(namespace: &str) -> Self {
        StatusError::not_found(format!("namespaces \"{namespace}\" not found"))
            .with_details(json!({"name": namespace, "kind": "namespaces"}))
    }

    /// `configmaps "x" already exists`; `object is being deleted: ...` if
    /// it is.
    pub(super) fn already_exists(ty: &ResourceType, name: &str, being_deleted: bool) -> Self {
        let prefix = if being_deleted {
            "object is being deleted: "
        } else {
            ""
        };
        StatusError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{prefix}{} \"{name}\" already exists", ty.qualified()),
        )
        .with_details(details(ty, name))
    }

    /// `Operation cannot be fulfilled on deployments.apps "x": <why>`
    pub(super) fn conflict(ty: &ResourceType, name: &str, why: &str) -> Self {
        StatusError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                ty.qualified()
            ),
        )
        .with_details(details(ty, name))
    }

    /// A write based on an old resourceVersion.
    pub(super) fn stale(ty: &ResourceType, name: &str) -> Self {
        StatusError::conflict(
            ty,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `pods "x" is forbidden: <why>`
    pub(super) fn forbidden(ty: &ResourceType, name: &str, why: &str) -> Self {
        StatusError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", ty.qualified()),
        )
        .with_details(details(ty, name))
    }

    /// 422 Invalid for `Kind.group "name"`, one cause per (field, message).
    pub(super) fn invalid(kind: &str, group: &str, name: &str, causes: &[(&str, String)]) -> Self {
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let listed: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let listed = match listed.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        StatusError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {listed}"),
        )
        .with_details(json!({
            "name": name,
            "group": group,
            "kind": kind,
            "causes": causes
                .iter()
                .map(|(f, m)| json!({"reason": cause_reason(m), "message": m, "field": f}))
                .collect::<Vec<_>>(),
        }))
    }

    /// The `Status` object answered.
    pub(super) fn object(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for StatusError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.object())).into_response()
    }
}

/// `details` naming an object: its name, group and resource.
fn details(ty: &ResourceType, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": ty.resource});
    if !ty.group.is_empty() {
        details["group"] = json!(ty.group);
    }
    details
}

/// The reason of a field error from its message, as the real API server
/// words them: `Required value: ...`, `Forbidden: ...`, `Invalid value: ...`.
fn cause_reason(message: &str) -> &'static str {
    if message.starts_with("Required value") {
        "FieldValueRequired"
    } else if message.starts_with("Forbidden") {
        "FieldValueForbidden"
    } else {
        "FieldValueInvalid"
    }
}

/// The reason the real API server gives to an HTTP status by itself.
pub(super) fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}
