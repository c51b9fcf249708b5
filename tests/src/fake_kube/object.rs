//! How the server stores an object after any write: the metadata it owns
//! (uid, creationTimestamp, resourceVersion, generation, managedFields),
//! the status rules of kinds with a status subresource, and the defaults
//! of Namespaces and Secrets. Other kinds get no defaults (the real API
//! server fills in, say, a Deployment's strategy or a container's
//! imagePullPolicy): a test sees back what was written.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::fields::{ManagedFields, Part};
use super::resources::{NAMESPACES, ResourceType, SECRETS};
use super::store::ObjectKey;

/// The label the real API server puts on every Namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Now, as timestamps in objects are written.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// How a write reaches an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The object itself: for a kind with a status subresource, the
    /// stored status is kept.
    Main,
    /// The `/status` subresource: only the status changes.
    Status,
    /// A test's own write: the object as given, status and
    /// deletionTimestamp included.
    Test,
}

impl Via {
    /// The fields a write this way covers.
    pub fn part(self, ty: &ResourceType) -> Part {
        match self {
            Via::Test => Part::Whole,
            Via::Status => Part::Status,
            Via::Main if ty.status_subresource => Part::Main,
            Via::Main => Part::Whole,
        }
    }
}

/// `new`, as the server would store it in place of `old` (the new
/// resourceVersion aside, which the store sets): the server's metadata,
/// the status rules, the defaults of Namespaces and the generation. Its
/// managedFields are still `old`'s.
pub fn settle(
    ty: &ResourceType,
    key: &ObjectKey,
    old: Option<&Value>,
    new: Value,
    via: Via,
) -> Value {
    let mut object = match (via, old) {
        (Via::Status, Some(old)) => {
            let mut object = old.clone();
            match new.get("status") {
                Some(status) if !status.is_null() => object["status"] = status.clone(),
                _ => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            object
        }
        _ if new.is_object() => new,
        _ => json!({}),
    };
    object["apiVersion"] = json!(ty.api_version());
    object["kind"] = json!(ty.kind);
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    let old_meta = |field: &str| old.and_then(|o| o["metadata"].get(field)).cloned();
    let meta = object["metadata"]
        .as_object_mut()
        .expect("made a map above");
    meta.insert("name".into(), json!(key.1));
    if ty.namespaced {
        meta.insert("namespace".into(), json!(key.0));
    } else {
        meta.remove("namespace");
    }
    meta.insert(
        "uid".into(),
        old_meta("uid").unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string())),
    );
    meta.insert(
        "creationTimestamp".into(),
        old_meta("creationTimestamp").unwrap_or_else(|| json!(now())),
    );
    keep(meta, "resourceVersion", old_meta("resourceVersion"));
    keep(meta, "managedFields", old_meta("managedFields"));
    if via != Via::Test {
        keep(meta, "deletionTimestamp", old_meta("deletionTimestamp"));
        keep(
            meta,
            "deletionGracePeriodSeconds",
            old_meta("deletionGracePeriodSeconds"),
        );
    }
    if via == Via::Main && ty.status_subresource {
        let status = match old {
            Some(old) => old.get("status").cloned(),
            None => Some(json!({})),
        };
        set_or_remove(&mut object, "status", status);
    }
    if *ty == NAMESPACES {
        namespace_defaults(&mut object, old, via);
    }
    if *ty == SECRETS {
        secret_defaults(&mut object);
    }
    let generation = match old {
        None => 1,
        Some(old) => {
            let before = old["metadata"]["generation"].as_i64().unwrap_or(1);
            before + i64::from(spec_of(old) != spec_of(&object))
        }
    };
    object["metadata"]["generation"] = json!(generation);
    object
}

/// `object` with `managed` as its managedFields, less the fields it no
/// longer has.
pub fn with_managed(mut object: Value, mut managed: ManagedFields) -> Value {
    managed.retain_present(&object);
    let meta = object["metadata"]
        .as_object_mut()
        .expect("a settled object has metadata");
    if managed.0.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), managed.to_json());
    }
    object
}

fn keep(meta: &mut Map<String, Value>, field: &str, value: Option<Value>) {
    match value {
        Some(value) => meta.insert(field.into(), value),
        None => meta.remove(field),
    };
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        keep(map, field, value);
    }
}

/// What the generation counts changes of: all but metadata and status.
fn spec_of(object: &Value) -> Value {
    let mut rest = object.as_object().cloned().unwrap_or_default();
    for field in ["metadata", "status", "apiVersion", "kind"] {
        rest.remove(field);
    }
    Value::Object(rest)
}

/// As the real namespace strategy: the `kubernetes` finalizer on create
/// (kept as it was on update), phase Active on create, the status kept on
/// update, and the name label always.
fn namespace_defaults(object: &mut Value, old: Option<&Value>, via: Via) {
    let name = object["metadata"]["name"].clone();
    if !object["metadata"]["labels"].is_object() {
        object["metadata"]["labels"] = json!({});
    }
    object["metadata"]["labels"][NAMESPACE_NAME_LABEL] = name;
    if via == Via::Test {
        if old.is_none() && object["status"]["phase"].is_null() {
            object["status"] = json!({"phase": "Active"});
        }
        return;
    }
    match old {
        None => {
            if !object["spec"].is_object() {
                object["spec"] = json!({});
            }
            let finalizers = &mut object["spec"]["finalizers"];
            if !finalizers.is_array() {
                *finalizers = json!([]);
            }
            let list = finalizers.as_array_mut().expect("made a list above");
            if !list.iter().any(|f| f == "kubernetes") {
                list.push(json!("kubernetes"));
            }
            object["status"] = json!({"phase": "Active"});
        }
        Some(old) => {
            let finalizers = old["spec"].get("finalizers").cloned();
            if finalizers.is_some() && !object["spec"].is_object() {
                object["spec"] = json!({});
            }
            if let Some(spec) = object["spec"].as_object_mut() {
                keep(spec, "finalizers", finalizers);
            }
        }
    }
}

/// As the real API server: `stringData` is written into `data` (base64)
/// and never stored; the type defaults to Opaque.
fn secret_defaults(object: &mut Value) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(strings)) = map.remove("stringData") {
        let data = map.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default().to_owned();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data[key.as_str()] = json!(encoded);
        }
    }
    map.entry("type").or_insert_with(|| json!("Opaque"));
}
