//! Field ownership, as server-side apply tracks it in
//! `metadata.managedFields`: which manager (with which operation, Apply or
//! Update, and through which subresource) owns which fields of an object.
//!
//! Simplified from the real structured-merge-diff: a field is a path of map
//! keys to a value that is not a map; maps are granular (each key its own
//! field), an empty map is structure that nobody owns, and every list is
//! atomic (one field, as if `x-kubernetes-list-type: atomic`), where the
//! real server merges associative lists such as `containers` by key.
//! `fieldsV1` is the real format for maps (`{"f:spec":{"f:replicas":{}}}`),
//! without the `"."` entries that mark an owned map itself.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// Map keys from the object's root to a field.
pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who writes: the `fieldManager`, the kind of write, the apiVersion
/// used, and the subresource ("" or "status").
#[derive(Debug, Clone)]
pub struct Writer {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub subresource: String,
}

/// Which fields of an object a write covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but the system metadata (kinds without a status
    /// subresource, and the tests' own writes).
    Whole,
    /// Everything but the system metadata and `status`.
    Main,
    /// Only `status`.
    Status,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub subresource: String,
    pub time: String,
    pub fields: FieldSet,
}

impl Entry {
    /// Whether this is the entry of `writer`. As in the real API server,
    /// a manager's Apply entry is one whatever apiVersion it applied with,
    /// its Update entries one per apiVersion.
    pub fn is(&self, writer: &Writer) -> bool {
        self.manager == writer.manager
            && self.operation == writer.operation
            && self.subresource == writer.subresource
            && (self.operation == Operation::Apply || self.api_version == writer.api_version)
    }

    /// The manager as conflict messages name it: `"kubectl-edit" using
    /// apps/v1` for an Update, `"deployer"` for an Apply.
    pub fn describe(&self) -> String {
        let mut described = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            described.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            described.push_str(&format!(" using {}", self.api_version));
        }
        described
    }
}

/// All the entries of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedFields(pub Vec<Entry>);

impl ManagedFields {
    /// The entries of `object`'s `metadata.managedFields` (entries this
    /// fake cannot read are dropped).
    pub fn of(object: &Value) -> ManagedFields {
        let entries = object["metadata"]["managedFields"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        ManagedFields(
            entries
                .iter()
                .filter_map(|e| {
                    let operation = match e["operation"].as_str()? {
                        "Apply" => Operation::Apply,
                        "Update" => Operation::Update,
                        _ => return None,
                    };
                    let text = |field: &str| e[field].as_str().unwrap_or("").to_owned();
                    Some(Entry {
                        manager: text("manager"),
                        operation,
                        api_version: text("apiVersion"),
                        subresource: text("subresource"),
                        time: text("time"),
                        fields: from_fields_v1(&e["fieldsV1"]),
                    })
                })
                .collect(),
        )
    }

    /// The `managedFields` list, sorted as the real API server sorts it.
    pub fn to_json(&self) -> Value {
        let mut entries = self.0.clone();
        entries.sort_by(|a, b| {
            (
                a.operation,
                &a.time,
                &a.manager,
                &a.api_version,
                &a.subresource,
            )
                .cmp(&(
                    b.operation,
                    &b.time,
                    &b.manager,
                    &b.api_version,
                    &b.subresource,
                ))
        });
        Value::Array(
            entries
                .iter()
                .map(|e| {
                    let mut entry = json!({
                        "manager": e.manager,
                        "operation": e.operation.as_str(),
                        "apiVersion": e.api_version,
                        "time": e.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": to_fields_v1(&e.fields),
                    });
                    if !e.subresource.is_empty() {
                        entry["subresource"] = json!(e.subresource);
                    }
                    entry
                })
                .collect(),
        )
    }

    /// The fields `writer` owns now.
    pub fn owned_by(&self, writer: &Writer) -> FieldSet {
        self.0
            .iter()
            .find(|e| e.is(writer))
            .map(|e| e.fields.clone())
            .unwrap_or_default()
    }

    /// Gives `writer` exactly `fields`; its entry's time changes only if
    /// its fields do, as in the real API server.
    pub fn set(&mut self, writer: &Writer, fields: FieldSet, now: &str) {
        match self.0.iter_mut().find(|e| e.is(writer)) {
            Some(entry) => {
                if entry.fields != fields {
                    entry.fields = fields;
                    entry.time = now.to_owned();
                }
                entry.api_version = writer.api_version.clone();
            }
            None => self.0.push(Entry {
                manager: writer.manager.clone(),
                operation: writer.operation,
                api_version: writer.api_version.clone(),
                subresource: writer.subresource.clone(),
                time: now.to_owned(),
                fields,
            }),
        }
    }

    /// Marks `writer`'s entry as written now (when the write changed the
    /// object), as the real API server does when a manager changes the
    /// value of a field it owns.
    pub fn touch(&mut self, writer: &Writer, now: &str) {
        if let Some(entry) = self.0.iter_mut().find(|e| e.is(writer)) {
            entry.time = now.to_owned();
        }
    }

    /// Records an Update from `old` to `new`: `writer` comes to own every
    /// field it set or changed, which the other managers lose.
    pub fn record_update(
        &mut self,
        writer: &Writer,
        old: Option<&Value>,
        new: &Value,
        part: Part,
        now: &str,
    ) {
        let changed: FieldSet = leaves(new, part)
            .into_iter()
            .filter(|path| old.and_then(|o| value_at(o, path)) != value_at(new, path))
            .collect();
        if changed.is_empty() {
            return;
        }
        for entry in self.0.iter_mut().filter(|e| !e.is(writer)) {
            entry.fields.retain(|path| !changed.contains(path));
        }
        let mut owned = self.owned_by(writer);
        owned.extend(changed);
        self.set(writer, owned, now);
    }

    /// Drops the fields `object` no longer has (a removed field loses all
    /// its owners), then the entries left with none.
    pub fn retain_present(&mut self, object: &Value) {
        for entry in &mut self.0 {
            entry
                .fields
                .retain(|path| value_at(object, path).is_some_and(|v| !v.is_object()));
        }
        self.0.retain(|e| !e.fields.is_empty());
    }
}

/// The fields of `object` in `part`: the paths to its values that are not
/// maps, leaving out what the server sets (apiVersion, kind, name,
/// namespace, uid, resourceVersion and the like).
pub fn leaves(object: &Value, part: Part) -> FieldSet {
    let mut found = FieldSet::new();
    let Some(root) = object.as_object() else {
        return found;
    };
    for (key, value) in root {
        let wanted = match key.as_str() {
            "apiVersion" | "kind" => false,
            "status" => part != Part::Main,
            _ => part != Part::Status,
        };
        if !wanted {
            continue;
        }
        if key == "metadata" {
            for (field, value) in value.as_object().into_iter().flatten() {
                if !is_system_metadata(field) {
                    collect(value, vec![key.clone(), field.clone()], &mut found);
                }
            }
        } else {
            collect(value, vec![key.clone()], &mut found);
        }
    }
    found
}

/// Metadata the server sets, which no manager owns.
pub fn is_system_metadata(field: &str) -> bool {
    matches!(
        field,
        "name"
            | "namespace"
            | "uid"
            | "resourceVersion"
            | "generation"
            | "creationTimestamp"
            | "deletionTimestamp"
            | "deletionGracePeriodSeconds"
            | "managedFields"
            | "selfLink"
    )
}

fn collect(value: &Value, path: Path, found: &mut FieldSet) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let mut deeper = path.clone();
                deeper.push(key.clone());
                collect(value, deeper, found);
            }
        }
        _ => {
            found.insert(path);
        }
    }
}

pub fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |v, key| v.as_object()?.get(key))
}

/// Removes the field at `path`, if there.
pub fn remove_at(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let parent = parents
        .iter()
        .try_fold(value, |v, key| v.as_object_mut()?.get_mut(key));
    if let Some(map) = parent.and_then(Value::as_object_mut) {
        map.remove(last);
    }
}

/// `.spec.replicas`, as the real API server prints a field path.
pub fn format_path(path: &[String]) -> String {
    path.iter().map(|key| format!(".{key}")).collect()
}

fn to_fields_v1(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for key in path {
            node = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are maps");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(value: &Value) -> FieldSet {
    fn walk(node: &Map<String, Value>, path: &mut Path, found: &mut FieldSet) {
        let children: Vec<(&str, &Map<String, Value>)> = node
            .iter()
            .filter_map(|(key, child)| Some((key.strip_prefix("f:")?, child.as_object()?)))
            .collect();
        if children.is_empty() && !path.is_empty() {
            found.insert(path.clone());
        }
        for (key, child) in children {
            path.push(key.to_owned());
            walk(child, path, found);
            path.pop();
        }
    }
    let mut found = FieldSet::new();
    if let Some(root) = value.as_object() {
        walk(root, &mut Vec::new(), &mut found);
    }
    found
}
