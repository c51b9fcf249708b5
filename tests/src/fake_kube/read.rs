//! Reads: list, watch and get, for every resource in [`RESOURCES`].
//!
//! Semantics follow the Kubernetes API concepts: a list answers at the
//! current resourceVersion (or the exact one asked, or the one of its
//! continue token); a watch from resourceVersion N streams every change
//! after N, as an object enters or leaves the selectors; a watch without
//! one (or from "0") first sends the current objects as ADDED. A watch
//! from a compacted resourceVersion is answered, as the real API server
//! does, with 200 and a single ERROR event holding a 410 Expired Status; a
//! list from one (`resourceVersionMatch=Exact`, or an old continue token)
//! with a 410 Status.
//!
//! [`RESOURCES`]: super::resources::RESOURCES

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector, field_value};
use super::status::StatusError;
use super::store::{Change, ChangeType, Expired, ObjectKey};

/// How long a watch lasts when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A list or a watch (`watch=true`) of `ty`, in `namespace` or all.
pub(super) async fn collection(
    shared: &Arc<Shared>,
    ty: &'static ResourceType,
    namespace: Option<String>,
    query: &HashMap<String, String>,
) -> Result<Response, StatusError> {
    let filter = Filter::new(ty, namespace, query).map_err(StatusError::bad_request)?;
    match query.get("watch").map(String::as_str) {
        Some("true" | "1") => watch(shared, filter, &Params(query)),
        None | Some("false" | "0") => {
            shared.lists_released().await;
            list(shared, &filter, &Params(query))
        }
        Some(other) => Err(StatusError::bad_request(format!(
            "invalid value for watch: {other:?}"
        ))),
    }
}

/// One object, or 404 NotFound.
pub(super) fn get(
    shared: &Shared,
    ty: &ResourceType,
    key: &ObjectKey,
) -> Result<Response, StatusError> {
    match shared.store().get(ty, key) {
        Some(object) => Ok(axum::Json(object.clone()).into_response()),
        None => Err(StatusError::object_not_found(ty, &key.1)),
    }
}

/// 410 Gone, counted.
fn expired(shared: &Shared, message: impl Into<String>) -> StatusError {
    shared.expired_answers.fetch_add(1, Ordering::SeqCst);
    StatusError::new(StatusCode::GONE, "Expired", message)
}

/// The query parameters of a request; empty ones count as absent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Params<'a>(pub(super) &'a HashMap<String, String>);

impl Params<'_> {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(super) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }

    fn number(&self, name: &str) -> Result<Option<u64>, StatusError> {
        self.get(name)
            .map(|text| {
                text.parse()
                    .map_err(|_| StatusError::bad_request(format!("invalid {name} {text:?}")))
            })
            .transpose()
    }
}

/// Which objects of one resource a request is about.
#[derive(Debug, Clone)]
struct Filter {
    ty: &'static ResourceType,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(
        ty: &'static ResourceType,
        namespace: Option<String>,
        query: &HashMap<String, String>,
    ) -> Result<Self, String> {
        let text = |name: &str| query.get(name).map_or("", String::as_str);
        let labels = LabelSelector::parse(text("labelSelector"))?;
        let fields = FieldSelector::parse(text("fieldSelector"))?;
        fields.check_supported(|f| ty.selectable(f))?;
        Ok(Filter {
            ty,
            namespace,
            labels,
            fields,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self
                .labels
                .matches(object["metadata"]["labels"].as_object())
            && self.fields.matches(|field| field_value(object, field))
    }

    /// The watch event `change` is for this filter, if any: an object that
    /// stops matching is DELETED for it, one that starts matching ADDED.
    fn event(&self, change: &Change) -> Option<Value> {
        if change.resource != (self.ty.group, self.ty.version, self.ty.resource) {
            return None;
        }
        let before = change.previous.as_ref().is_some_and(|p| self.matches(p));
        let after = change.kind != ChangeType::Deleted && self.matches(&change.object);
        let (kind, object) = match (change.kind, before, after) {
            (ChangeType::Deleted, true, _) => ("DELETED", change.object.clone()),
            (_, false, true) => ("ADDED", change.object.clone()),
            (_, true, true) => ("MODIFIED", change.object.clone()),
            (ChangeType::Modified, true, false) => {
                // The object as the watcher last saw it, at this change's version.
                let mut previous = change.previous.clone().unwrap_or_default();
                previous["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                ("DELETED", previous)
            }
            _ => return None,
        };
        Some(json!({"type": kind, "object": object}))
    }
}

/// A continue token: the list's resourceVersion and the last key returned.
fn encode_continue(rv: u64, last: &ObjectKey) -> String {
    let token = json!({"rv": rv, "namespace": last.0, "name": last.1});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Option<(u64, ObjectKey)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let token: Value = serde_json::from_slice(&bytes).ok()?;
    Some((
        token["rv"].as_u64()?,
        (
            token["namespace"].as_str()?.to_owned(),
            token["name"].as_str()?.to_owned(),
        ),
    ))
}

fn list(shared: &Arc<Shared>, filter: &Filter, params: &Params) -> Result<Response, StatusError> {
    let limit = params
        .number("limit")?
        .filter(|n| *n > 0)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let requested = params.number("resourceVersion")?;
    let store = shared.store();
    let current = store.resource_version();
    // The version to list at, and where a continued list resumes.
    let (rv, after) = match (params.get("continue"), params.get("resourceVersionMatch")) {
        (Some(token), _) => decode_continue(token)
            .map(|(rv, last)| (rv, Some(last)))
            .ok_or_else(|| StatusError::bad_request(format!("invalid continue token {token:?}")))?,
        (None, Some(_)) if requested.is_none() => {
            return Err(StatusError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        (None, Some("Exact")) => (requested.unwrap_or(current), None),
        // Unset, "0" or NotOlderThan: the current state is recent enough.
        (None, _) => (current.max(requested.unwrap_or(0)), None),
    };
    if rv > current {
        return Err(StatusError::too_large_resource_version());
    }
    let (page, remaining) = store
        .page_at(
            filter.ty,
            filter.namespace.as_deref(),
            after.as_ref(),
            rv,
            |object| filter.matches(object),
            limit.unwrap_or(usize::MAX),
        )
        .map_err(|Expired { requested, oldest }| {
            let message = if after.is_some() {
                format!(
                    "The provided continue parameter is too old to display a consistent list \
                     result (resourceVersion {requested}, oldest available {oldest}); start a \
                     new list without the continue parameter"
                )
            } else {
                format!("too old resource version: {requested} ({oldest})")
            };
            expired(shared, message)
        })?;
    drop(store);
    let mut items = Vec::new();
    let mut last = None;
    for (key, mut object) in page {
        // Items of a list carry neither kind nor apiVersion.
        if let Some(map) = object.as_object_mut() {
            map.remove("kind");
            map.remove("apiVersion");
        }
        items.push(object);
        last = Some(key);
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let (true, Some(last)) = (remaining > 0, &last) {
        metadata["continue"] = json!(encode_continue(rv, last));
        // As the real API server: not counted when selectors filter the list.
        if filter.labels.0.is_empty() && filter.fields.0.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    Ok(axum::Json(json!({
        "kind": format!("{}List", filter.ty.kind),
        "apiVersion": filter.ty.api_version(),
        "metadata": metadata,
        "items": items,
    }))
    .into_response())
}

/// Where a watch starts: the last resourceVersion it accounts for, the
/// events to send first, and the changes to come.
type Start = (u64, Vec<Value>, broadcast::Receiver<Arc<Change>>);

fn watch(shared: &Arc<Shared>, filter: Filter, params: &Params) -> Result<Response, StatusError> {
    let timeout = params
        .number("timeoutSeconds")?
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let bookmarks = params.flag("allowWatchBookmarks");
    let initial_events_end = params.flag("sendInitialEvents");
    // "0" is "any version": like none, the current objects come first.
    let since = params.number("resourceVersion")?.filter(|rv| *rv != 0);
    // Subscribed before the check, so that `down` either closes this watch
    // or refuses it.
    let mut closing = shared.closing.subscribe();
    if shared.is_down() {
        return Err(StatusError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is shutting down",
        ));
    }
    let started: Result<Start, Expired> = {
        let store = shared.store();
        match since {
            None => {
                let rv = store.resource_version();
                let current = store
                    .list_at(filter.ty, filter.namespace.as_deref(), None, rv)
                    .unwrap_or_default();
                let initial = current
                    .into_values()
                    .filter(|o| filter.matches(o))
                    .map(|o| json!({"type": "ADDED", "object": o}))
                    .collect();
                Ok((rv, initial, store.subscribe()))
            }
            Some(rv) => store.changes_since(rv).map(|resumed| {
                let events = resumed
                    .backlog
                    .iter()
                    .filter_map(|c| filter.event(c))
                    .collect();
                let last = resumed.backlog.last().map_or(rv, |c| c.rv);
                (last, events, resumed.receiver)
            }),
        }
    };
    let bookmark_every = shared.bookmark_every;
    let api_version = filter.ty.api_version();
    let bookmark = move |rv: u64, initial_end: bool| {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {"kind": filter.ty.kind, "apiVersion": api_version, "metadata": metadata}})
    };
    let (lines, receiver) = mpsc::channel::<Result<String, Infallible>>(256);
    shared.watch_opened();
    let watching = shared.clone();
    tokio::spawn(async move {
        let send = |event: Value| {
            let lines = lines.clone();
            async move { lines.send(Ok(format!("{event}\n"))).await.is_ok() }
        };
        let (mut last, initial, mut changes) = match started {
            Ok(started) => started,
            Err(Expired { requested, oldest }) => {
                // A too old version is answered in the stream, as the real
                // API server does: one ERROR event, then the end.
                let message = format!("too old resource version: {requested} ({oldest})");
                let status = expired(&watching, message).object();
                send(json!({"type": "ERROR", "object": status})).await;
                watching.watch_closed();
                return;
            }
        };
        'watch: {
            for event in initial {
                if !send(event).await {
                    break 'watch;
                }
            }
            if initial_events_end && bookmarks && !send(bookmark(last, true)).await {
                break 'watch;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let mut ticks = tokio::time::interval(bookmark_every);
            ticks.tick().await;
            loop {
                tokio::select! {
                    received = changes.recv() => match received {
                        Ok(change) => {
                            if change.rv <= last {
                                continue;
                            }
                            last = change.rv;
                            if let Some(event) = filter.event(&change)
                                && !send(event).await
                            {
                                break 'watch;
                            }
                        }
                        // Too slow a reader: the API server ends such a watch.
                        Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => break 'watch,
                    },
                    _ = ticks.tick(), if bookmarks => {
                        if !send(bookmark(last, false)).await {
                            break 'watch;
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        if bookmarks {
                            send(bookmark(last, false)).await;
                        }
                        break 'watch;
                    }
                    _ = closing.changed() => break 'watch,
                    () = lines.closed() => break 'watch,
                }
            }
        }
        watching.watch_closed();
    });
    let mut response = Body::from_stream(ReceiverStream::new(receiver)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
