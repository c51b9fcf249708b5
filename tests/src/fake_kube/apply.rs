//! Server-side apply (`PATCH` with `application/apply-patch+yaml`): the
//! manager's configuration is merged into the live object, conflicts with
//! the fields other managers own are refused unless forced, and the fields
//! the manager applied before but no longer does are removed.
//!
//! See <https://kubernetes.io/docs/reference/using-api/server-side-apply/>;
//! the granularity of fields is [`super::fields`]'s (lists are atomic).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::fields::{
    FieldSet, ManagedFields, Part, Path, Writer, format_path, leaves, remove_at, value_at,
};
use super::status::StatusError;

/// A field `writer` would change that another manager owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    pub path: Path,
    /// The owner, as messages name it (`"kubectl-edit" using apps/v1`).
    pub owner: String,
}

/// The configuration as it is applied: `null`s dropped (they set
/// nothing), and only the fields of `part` kept.
pub fn config_of(config: &Value, part: Part) -> Value {
    let Some(root) = config.as_object() else {
        return json!({});
    };
    let kept = root.iter().filter(|(key, _)| match key.as_str() {
        "apiVersion" | "kind" | "metadata" => true,
        "status" => part != Part::Main,
        _ => part != Part::Status,
    });
    let mut config: Map<String, Value> = kept.map(|(k, v)| (k.clone(), without_nulls(v))).collect();
    if part == Part::Status
        && let Some(Value::Object(metadata)) = config.get_mut("metadata")
    {
        metadata.retain(|key, _| key == "name" || key == "namespace");
    }
    Value::Object(config)
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The object an apply creates, and who owns what in it.
pub fn create(config: &Value, writer: &Writer, part: Part, now: &str) -> (Value, ManagedFields) {
    let mut managed = ManagedFields::default();
    managed.set(writer, leaves(config, part), now);
    (config.clone(), managed)
}

/// Applies `config` (from [`config_of`]) to `live`: the object after, and
/// who owns what in it; or the conflicts, when not forced.
pub fn apply(
    live: &Value,
    config: &Value,
    writer: &Writer,
    part: Part,
    force: bool,
    now: &str,
) -> Result<(Value, ManagedFields), Vec<Conflict>> {
    let mut managed = ManagedFields::of(live);
    let applied = leaves(config, part);
    let mut conflicts = Vec::new();
    for path in &applied {
        for entry in managed.0.iter().filter(|e| !e.is(writer)) {
            // The field itself; the fields under it, when the configuration
            // replaces a map with a value; the field above it, when it
            // replaces a value with a map.
            let related = entry
                .fields
                .iter()
                .filter(|f| f.starts_with(path) || path.starts_with(f));
            for owned in related {
                let live_value = value_at(live, owned);
                if live_value.is_some() && live_value != value_at(config, owned) {
                    conflicts.push(Conflict {
                        path: owned.clone(),
                        owner: entry.describe(),
                    });
                }
            }
        }
    }
    conflicts.sort();
    conflicts.dedup();
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts);
        }
        // Forced: the others lose the fields this apply changes.
        let taken: FieldSet = conflicts.into_iter().map(|c| c.path).collect();
        for entry in managed.0.iter_mut().filter(|e| !e.is(writer)) {
            entry.fields.retain(|f| !taken.contains(f));
        }
    }
    let mut object = live.clone();
    // Fields applied before and no longer, that nobody else owns, go.
    for dropped in managed.owned_by(writer).difference(&applied) {
        let kept = managed
            .0
            .iter()
            .any(|e| !e.is(writer) && e.fields.contains(dropped));
        if !kept {
            remove_at(&mut object, dropped);
        }
    }
    merge(&mut object, config);
    managed.set(writer, applied, now);
    Ok((object, managed))
}

/// Sets every field of `config` in `object`, merging maps.
fn merge(object: &mut Value, config: &Value) {
    match (object, config) {
        (Value::Object(live), Value::Object(config)) => {
            for (key, value) in config {
                match live.get_mut(key) {
                    Some(slot) if slot.is_object() && value.is_object() => merge(slot, value),
                    _ => {
                        live.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (object, config) => *object = config.clone(),
    }
}

/// The 409 Conflict the real API server answers, with the message and
/// causes it gives:
/// `Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas`.
pub fn conflict_error(conflicts: &[Conflict]) -> StatusError {
    let message = match conflicts {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.owner,
            format_path(&one.path)
        ),
        many => {
            let mut by_owner: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for c in many {
                by_owner
                    .entry(c.owner.as_str())
                    .or_default()
                    .push(format_path(&c.path));
            }
            let lines: Vec<String> = by_owner
                .iter()
                .flat_map(|(owner, paths)| {
                    std::iter::once(format!("conflicts with {owner}:"))
                        .chain(paths.iter().map(|p| format!("- {p}")))
                })
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                many.len(),
                lines.join("\n")
            )
        }
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", c.owner),
                "field": format_path(&c.path),
            })
        })
        .collect();
    StatusError::new(StatusCode::CONFLICT, "Conflict", message)
        .with_details(json!({"causes": causes}))
}
