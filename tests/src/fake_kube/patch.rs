//! The patch formats of PATCH requests: JSON merge patch (RFC 7386),
//! strategic merge patch (simplified to a merge patch) and JSON patch
//! (RFC 6902).
//!
//! The real strategic merge patch merges lists by their patch merge key
//! (containers by name, ports by containerPort); here every list is
//! replaced whole, as in a JSON merge patch. Its `$patch: replace` and
//! `$patch: delete` directives on maps are honoured; the other directives
//! (`$retainKeys`, `$setElementOrder/...`, `$deleteFromPrimitiveList/...`)
//! are dropped.

use serde_json::{Map, Value};

/// RFC 7386: maps merge, `null` removes a key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("made a map above");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A strategic merge patch, as a merge patch (see the module docs).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = without_directives(patch);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("made a map above");
    for (key, value) in patch.iter().filter(|(k, _)| !k.starts_with('$')) {
        if value.is_null() {
            map.remove(key);
            continue;
        }
        let slot = map.entry(key.clone()).or_insert(Value::Null);
        strategic_merge_patch(slot, value);
        if slot.is_null() {
            map.remove(key);
        }
    }
}

fn without_directives(patch: &Map<String, Value>) -> Value {
    Value::Object(
        patch
            .iter()
            .filter(|(k, _)| !k.starts_with('$'))
            .map(|(k, v)| match v {
                Value::Object(inner) => (k.clone(), without_directives(inner)),
                _ => (k.clone(), v.clone()),
            })
            .collect(),
    )
}

/// Why a JSON patch cannot be applied (answered as 422, as the real API
/// server does), or cannot be read (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonPatchError {
    Malformed(String),
    Failed(String),
}

/// RFC 6902: add, remove, replace, move, copy and test, in order, all or
/// nothing.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let ops = patch.as_array().ok_or_else(|| {
        JsonPatchError::Malformed("a JSON patch must be a list of operations".into())
    })?;
    let mut doc = target.clone();
    for op in ops {
        let name = op["op"]
            .as_str()
            .ok_or_else(|| JsonPatchError::Malformed(format!("operation without \"op\": {op}")))?;
        let path = pointer(op, "path")?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                JsonPatchError::Malformed(format!("{name} operation without \"value\""))
            })
        };
        match name {
            "add" => add(&mut doc, &path, value()?)?,
            "remove" => {
                remove(&mut doc, &path)?;
            }
            "replace" => {
                remove(&mut doc, &path).map_err(|_| {
                    JsonPatchError::Failed(format!(
                        "replace operation does not apply: doc is missing key: {}",
                        op["path"].as_str().unwrap_or("")
                    ))
                })?;
                add(&mut doc, &path, value()?)?;
            }
            "move" => {
                let from = pointer(op, "from")?;
                let moved = remove(&mut doc, &from)?;
                add(&mut doc, &path, moved)?;
            }
            "copy" => {
                let from = pointer(op, "from")?;
                let copied = get(&doc, &from)?.clone();
                add(&mut doc, &path, copied)?;
            }
            "test" => {
                if get(&doc, &path)? != &value()? {
                    return Err(JsonPatchError::Failed(format!(
                        "testing value {} failed: test failed",
                        op["path"].as_str().unwrap_or("")
                    )));
                }
            }
            other => {
                return Err(JsonPatchError::Malformed(format!(
                    "unexpected kind of operation: {other:?}"
                )));
            }
        }
    }
    *target = doc;
    Ok(())
}

/// The reference tokens of the JSON pointer in `op[field]`.
fn pointer(op: &Value, field: &str) -> Result<Vec<String>, JsonPatchError> {
    let text = op[field]
        .as_str()
        .ok_or_else(|| JsonPatchError::Malformed(format!("operation without \"{field}\": {op}")))?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let rest = text
        .strip_prefix('/')
        .ok_or_else(|| JsonPatchError::Malformed(format!("invalid JSON pointer {text:?}")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn missing(path: &[String]) -> JsonPatchError {
    JsonPatchError::Failed(format!(
        "doc is missing path: \"/{}\": missing value",
        path.join("/")
    ))
}

fn index(token: &str, len: usize, path: &[String]) -> Result<usize, JsonPatchError> {
    token
        .parse::<usize>()
        .ok()
        .filter(|i| *i < len)
        .ok_or_else(|| missing(path))
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Result<&'a Value, JsonPatchError> {
    let mut node = doc;
    for token in path {
        node = match node {
            Value::Object(map) => map.get(token).ok_or_else(|| missing(path))?,
            Value::Array(items) => &items[index(token, items.len(), path)?],
            _ => return Err(missing(path)),
        };
    }
    Ok(node)
}

/// The container of the last token of `path`, and that token.
fn parent<'a, 'p>(
    doc: &'a mut Value,
    path: &'p [String],
) -> Result<(&'a mut Value, &'p str), JsonPatchError> {
    let (last, parents) = path.split_last().ok_or_else(|| missing(path))?;
    let mut node = doc;
    for token in parents {
        node = match node {
            Value::Object(map) => map.get_mut(token).ok_or_else(|| missing(path))?,
            Value::Array(items) => {
                let i = index(token, items.len(), path)?;
                &mut items[i]
            }
            _ => return Err(missing(path)),
        };
    }
    Ok((node, last))
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), JsonPatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(map) => {
            map.insert(last.to_owned(), value);
        }
        Value::Array(items) if last == "-" => items.push(value),
        Value::Array(items) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i <= items.len())
                .ok_or_else(|| missing(path))?;
            items.insert(i, value);
        }
        _ => return Err(missing(path)),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, JsonPatchError> {
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(map) => map.remove(last).ok_or_else(|| missing(path)),
        Value::Array(items) => {
            let i = index(last, items.len(), path)?;
            Ok(items.remove(i))
        }
        _ => Err(missing(path)),
    }
}
