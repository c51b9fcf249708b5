//! The fake's HTTP routes: the paths of the real API server for every
//! resource in [`RESOURCES`] (`/api/v1/...` for the core group,
//! `/apis/{group}/{version}/...` for the others; cluster-wide and
//! namespaced collections, objects and their `/status`), the kubelet stats
//! summary through the node proxy, the request log and the failures a test
//! injects.
//!
//! Not served: discovery, `deletecollection`, subresources other than
//! `/status`, and protobuf or YAML bodies (apply configurations are read
//! as JSON, which is what `kube` sends).
//!
//! [`RESOURCES`]: super::resources::RESOURCES

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::Value;

use super::Shared;
use super::read::{self, Params};
use super::resources::ResourceType;
use super::status::StatusError;
use super::write::{self, PatchKind, Write};

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            any(super::exec::exec),
        )
        .route("/api/{*path}", any(serve))
        .route("/apis/{*path}", any(serve))
        .fallback(|| async { StatusError::no_such_resource() })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            inject_failures,
        ))
        .layer(middleware::from_fn_with_state(shared.clone(), log_request))
        .with_state(shared)
}

async fn log_request(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    shared.log_request(request.method().as_str(), request.uri());
    next.run(request).await
}

/// Answers with the failure a test asked for, if this request is one.
async fn inject_failures(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    match shared.take_failure(request.method().as_str(), &path) {
        Some(code) => injected(code, &path).into_response(),
        None => next.run(request).await,
    }
}

/// The failure `fail_next` injects, worded as the real one would be.
fn injected(code: u16, path: &str) -> StatusError {
    let target = match route(path) {
        Ok(Route::Object(target)) => Some(target),
        _ => None,
    };
    let named = target
        .as_ref()
        .and_then(|t| Some((t.ty, t.name.as_deref()?)));
    match (code, named) {
        (409, Some((ty, name))) => StatusError::stale(ty, name),
        (422, Some((ty, name))) => StatusError::invalid(
            ty.kind,
            ty.group,
            name,
            &[(
                "spec",
                "Invalid value: \"injected\": injected failure".into(),
            )],
        ),
        (422, None) => StatusError::invalid(
            "Object",
            "",
            "",
            &[(
                "spec",
                "Invalid value: \"injected\": injected failure".into(),
            )],
        ),
        (404, Some((ty, name))) => StatusError::object_not_found(ty, name),
        (404, None) => StatusError::no_such_resource(),
        (500, _) => StatusError::internal("injected failure"),
        (code, _) => StatusError::generic(code, "injected failure"),
    }
}

/// What a path names.
#[derive(Debug)]
enum Route {
    /// The kubelet stats summary of a node.
    StatsSummary(String),
    Object(Target),
}

/// A collection, an object or a subresource of one.
#[derive(Debug)]
struct Target {
    ty: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    /// Only `status` is served.
    status: bool,
}

/// Reads a path as the real API server does: `namespaces/{ns}/{resource}`
/// is a namespaced collection, unless `{resource}` is a subresource of
/// the namespace itself (`namespaces/{ns}/status`).
fn route(path: &str) -> Result<Route, StatusError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(StatusError::no_such_resource()),
    };
    if let ("", ["nodes", node, "proxy", "stats", "summary"]) = (group, rest) {
        return Ok(Route::StatsSummary((*node).to_owned()));
    }
    let (namespace, rest): (Option<String>, Vec<&str>) = match rest {
        ["namespaces", namespace, resource, tail @ ..]
            if !matches!(*resource, "status" | "finalize") =>
        {
            let rest = std::iter::once(*resource).chain(tail.iter().copied());
            (Some((*namespace).to_owned()), rest.collect())
        }
        _ => (None, rest.to_vec()),
    };
    let (resource, name, subresource) = match rest.as_slice() {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, subresource] => (*resource, Some(*name), Some(*subresource)),
        _ => return Err(StatusError::no_such_resource()),
    };
    let ty =
        ResourceType::at(group, version, resource).ok_or_else(StatusError::no_such_resource)?;
    let misplaced = match &namespace {
        Some(_) => !ty.namespaced,
        None => ty.namespaced && name.is_some(),
    };
    let status = match subresource {
        None => false,
        Some("status") if ty.status_subresource => true,
        Some(_) => return Err(StatusError::no_such_resource()),
    };
    if misplaced || name.is_some_and(str::is_empty) || resource.is_empty() {
        return Err(StatusError::no_such_resource());
    }
    Ok(Route::Object(Target {
        ty,
        namespace,
        name: name.map(str::to_owned),
        status,
    }))
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, StatusError> {
    let target = match route(uri.path())? {
        Route::StatsSummary(node) if method == Method::GET => {
            let summary = shared
                .stats_summary(&node)
                .ok_or_else(|| StatusError::not_found(format!("nodes \"{node}\" not found")))?;
            return Ok(axum::Json(summary).into_response());
        }
        Route::StatsSummary(_) => return Err(StatusError::method_not_allowed(method.as_str())),
        Route::Object(target) => target,
    };
    let write = match (&target.name, &method) {
        (None, &Method::GET) => {
            return read::collection(&shared, target.ty, target.namespace, &query).await;
        }
        (Some(name), &Method::GET) => {
            let key = (target.namespace.unwrap_or_default(), name.clone());
            return read::get(&shared, target.ty, &key);
        }
        (None, &Method::POST) if target.namespace.is_some() || !target.ty.namespaced => {
            Write::Create(json_body(&body)?)
        }
        (Some(_), &Method::PUT) => Write::Replace(json_body(&body)?),
        (Some(_), &Method::PATCH) => {
            let kind = patch_kind(&headers)?;
            let patch = serde_json::from_slice(&body).map_err(|err| {
                StatusError::bad_request(match kind {
                    PatchKind::Apply => format!(
                        "error decoding YAML: this fake reads apply configurations written as JSON only: {err}"
                    ),
                    _ => format!("error decoding patch: {err}"),
                })
            })?;
            Write::Patch(kind, patch)
        }
        (Some(_), &Method::DELETE) if !target.status => Write::Delete(if body.is_empty() {
            Value::Null
        } else {
            json_body(&body)?
        }),
        _ => return Err(StatusError::method_not_allowed(method.as_str())),
    };
    let params = Params(&query);
    let dry_run = match params.get("dryRun") {
        None => false,
        Some("All") => true,
        Some(other) => {
            return Err(StatusError::bad_request(format!(
                "invalid dryRun value {other:?}: the only valid value is All"
            )));
        }
    };
    let request = write::Request {
        ty: target.ty,
        namespace: target.namespace.unwrap_or_default(),
        name: target.name,
        status: target.status,
        field_manager: params.get("fieldManager").map(str::to_owned),
        default_manager: default_manager(&headers),
        force: params.flag("force"),
        dry_run,
    };
    let written = write::write(&mut shared.store(), &request, write)?;
    if written.created && !request.dry_run && *request.ty == super::resources::PODS {
        let name = written.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        super::exec::start_if_mounted(&shared, &request.namespace, name);
    }
    let code = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(written.object)).into_response())
}

fn json_body(body: &Bytes) -> Result<Value, StatusError> {
    serde_json::from_slice(body)
        .map_err(|err| StatusError::bad_request(format!("error decoding the request body: {err}")))
}

/// The patch format of a PATCH, from its Content-Type.
fn patch_kind(headers: &HeaderMap) -> Result<PatchKind, StatusError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    match media_type {
        "application/merge-patch+json" => Ok(PatchKind::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
        "application/json-patch+json" => Ok(PatchKind::Json),
        "application/apply-patch+yaml" => Ok(PatchKind::Apply),
        _ => Err(StatusError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml, application/strategic-merge-patch+json \
                 (got {content_type:?})"
            ),
        )),
    }
}

/// The manager of an Update without `fieldManager`: as the real API
/// server, the User-Agent up to its first `/`.
fn default_manager(headers: &HeaderMap) -> String {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match agent.split('/').next() {
        Some(prefix) if !prefix.is_empty() => prefix.chars().take(128).collect(),
        _ => "unknown".to_owned(),
    }
}
