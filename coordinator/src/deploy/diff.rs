//! What differs between two versions of an object: the field-level diff a
//! server dry-run prints, and the drift check that finds what someone
//! changed by hand. Pure functions over JSON.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Shown instead of a Secret's values.
const HIDDEN: &str = "<redacted>";

/// One field that differs; `null` before: added, `null` after: removed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldChange {
    /// e.g. `.spec.template.spec.containers[0].image`
    pub path: String,
    #[schema(value_type = Object)]
    pub before: Option<Value>,
    #[schema(value_type = Object)]
    pub after: Option<Value>,
}

/// The object without what the server maintains (resourceVersion, uid,
/// generation, managedFields, timestamps, status), so two versions of it
/// compare by what someone asked for. A Secret's `stringData` is folded
/// into `data` as the API server stores it.
pub fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "resourceVersion",
                "uid",
                "generation",
                "managedFields",
                "creationTimestamp",
                "selfLink",
            ] {
                meta.remove(field);
            }
            if meta
                .get("annotations")
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
            {
                meta.remove("annotations");
            }
        }
        if map.get("kind").and_then(Value::as_str) == Some("Secret") {
            fold_string_data(map);
        }
    }
    object
}

fn fold_string_data(secret: &mut Map<String, Value>) {
    let Some(Value::Object(strings)) = secret.remove("stringData") else {
        return;
    };
    let data = secret
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(data) = data.as_object_mut() {
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default();
            data.insert(
                key,
                Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

/// Every field that differs from `before` to `after` (both passed through
/// [`comparable`]): maps key by key, lists element by element when their
/// lengths match and as a whole otherwise. A Secret's values are hidden.
pub fn field_changes(before: &Value, after: &Value) -> Vec<FieldChange> {
    let secret = after["kind"] == "Secret" || before["kind"] == "Secret";
    let mut changes = Vec::new();
    walk(
        &comparable(before),
        &comparable(after),
        &mut String::new(),
        &mut changes,
    );
    if secret {
        for change in &mut changes {
            if change.path.starts_with(".data") {
                let hide = |v: &mut Option<Value>| {
                    if v.is_some() {
                        *v = Some(Value::String(HIDDEN.to_owned()));
                    }
                };
                hide(&mut change.before);
                hide(&mut change.after);
            }
        }
    }
    changes
}

fn walk(before: &Value, after: &Value, path: &mut String, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                let len = path.len();
                push_key(path, key);
                match (b.get(key), a.get(key)) {
                    (Some(bv), Some(av)) => walk(bv, av, path, out),
                    (bv, av) => out.push(FieldChange {
                        path: path.clone(),
                        before: bv.cloned(),
                        after: av.cloned(),
                    }),
                }
                path.truncate(len);
            }
        }
        (Value::Array(b), Value::Array(a)) if b.len() == a.len() => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(bv, av, path, out);
                path.truncate(len);
            }
        }
        (b, a) if b == a => {}
        (b, a) => out.push(FieldChange {
            path: path.clone(),
            before: Some(b.clone()),
            after: Some(a.clone()),
        }),
    }
}

fn push_key(path: &mut String, key: &str) {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[{key:?}]"));
    }
}

/// The fields `desired` sets that `live` does not hold as set: what
/// someone changed or removed by hand. Fields only the live object has
/// (defaults, other controllers' fields) are not drift; a list counts as
/// drifted when its length differs or an element drifted. A claim is
/// compared as it can be applied over the live one
/// ([`super::volume::settled`]): grown or made with another class is not
/// drift.
pub fn drift(live: &Value, desired: &Value) -> Vec<String> {
    let desired = super::volume::settled(desired, Some(live));
    let mut paths = Vec::new();
    missing(
        &comparable(live),
        &comparable(&desired),
        &mut String::new(),
        &mut paths,
    );
    paths
}

fn missing(live: &Value, desired: &Value, path: &mut String, out: &mut Vec<String>) {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => {
            for (key, dv) in d {
                let len = path.len();
                push_key(path, key);
                match l.get(key) {
                    Some(lv) => missing(lv, dv, path, out),
                    None if is_empty(dv) => {}
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(l), Value::Array(d)) if l.len() == d.len() => {
            for (i, (lv, dv)) in l.iter().zip(d).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                missing(lv, dv, path, out);
                path.truncate(len);
            }
        }
        (l, d) if l == d => {}
        (l, d) if same_quantity(l, d) => {}
        _ => out.push(path.clone()),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// `"1000m"` and `"1"`, `"1024Mi"` and `"1Gi"`: the same quantity.
fn same_quantity(a: &Value, b: &Value) -> bool {
    match (a.as_str().and_then(quantity), b.as_str().and_then(quantity)) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9 * x.abs().max(1.0),
        _ => false,
    }
}

/// A quantity (`1500m`, `10Gi`) as a number of base units.
pub(crate) fn quantity(text: &str) -> Option<f64> {
    let suffixes: BTreeMap<&str, f64> = BTreeMap::from([
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
    ]);
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = if suffix.is_empty() {
        1.0
    } else {
        *suffixes.get(suffix)?
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests;
