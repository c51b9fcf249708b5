//! The lifecycle of Namespaces: the NamespaceLifecycle admission plugin
//! (no new content in a namespace that does not exist or is being
//! terminated) and deletion, which marks the namespace Terminating, then
//! deletes everything in it and finally the namespace itself.
//!
//! The real namespace controller does the deleting in the background; the
//! fake does it before answering (the answer still shows Terminating),
//! unless a test holds deletions to look at the Terminating state.

use serde_json::{Value, json};

use super::object::now;
use super::resources::{NAMESPACES, RESOURCES, ResourceType};
use super::status::StatusError;
use super::store::{ObjectKey, Store};

/// Admits a write to an object of `ty` in `namespace`: the namespace must
/// exist, and must not be terminating if the write creates the object.
pub fn admit(
    store: &Store,
    ty: &ResourceType,
    namespace: &str,
    name: &str,
    creating: bool,
) -> Result<(), StatusError> {
    if !ty.namespaced {
        return Ok(());
    }
    let Some(found) = store.get(&NAMESPACES, &key(namespace)) else {
        return Err(StatusError::namespace_not_found(namespace));
    };
    if creating && is_terminating(found) {
        let why = format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        );
        return Err(StatusError::forbidden(ty, name, &why).with_cause(json!({
            "reason": "NamespaceTerminating",
            "message": format!("namespace {namespace} is being terminated"),
            "field": "metadata.namespace",
        })));
    }
    Ok(())
}

pub fn is_terminating(namespace: &Value) -> bool {
    namespace["status"]["phase"] == "Terminating"
        || !namespace["metadata"]["deletionTimestamp"].is_null()
}

fn key(name: &str) -> ObjectKey {
    (String::new(), name.to_owned())
}

/// Deletes a namespace: the namespace as answered, Terminating. Unless
/// deletions are held, its content and then itself are gone on return
/// (each a DELETED watch event). A dry run changes nothing.
pub fn delete(store: &mut Store, name: &str, dry_run: bool) -> Result<Value, StatusError> {
    let current = store
        .get(&NAMESPACES, &key(name))
        .cloned()
        .ok_or_else(|| StatusError::object_not_found(&NAMESPACES, name))?;
    if is_terminating(&current) {
        return Err(StatusError::conflict(
            &NAMESPACES,
            name,
            "The system is ensuring all content is removed from this namespace.  Upon completion, \
             this namespace will automatically be purged by the system.",
        ));
    }
    let terminating = mark_terminating(current);
    if dry_run {
        return Ok(terminating);
    }
    let answered = store.commit(&NAMESPACES, key(name), terminating);
    if !store.hold_namespace_deletion {
        finish(store, name);
    }
    Ok(answered)
}

/// As [`delete`], for a test: an already terminating namespace is left as
/// it is; its state, if it existed.
pub fn delete_for_test(store: &mut Store, name: &str) -> Option<Value> {
    let current = store.get(&NAMESPACES, &key(name))?.clone();
    if is_terminating(&current) {
        return Some(current);
    }
    delete(store, name, false).ok()
}

fn mark_terminating(mut namespace: Value) -> Value {
    namespace["metadata"]["deletionTimestamp"] = json!(now());
    let generation = namespace["metadata"]["generation"].as_i64().unwrap_or(1);
    namespace["metadata"]["generation"] = json!(generation + 1);
    if !namespace["status"].is_object() {
        namespace["status"] = json!({});
    }
    namespace["status"]["phase"] = json!("Terminating");
    namespace
}

/// Deletes everything in a terminating namespace, then the namespace.
pub fn finish(store: &mut Store, name: &str) {
    for ty in RESOURCES.iter().filter(|r| r.namespaced) {
        for object in store.keys_in(ty, name) {
            store.delete(ty, &object);
        }
    }
    store.delete(&NAMESPACES, &key(name));
}

/// Finishes the deletion of every terminating namespace (when a test
/// stops holding them).
pub fn finish_all(store: &mut Store) {
    let terminating: Vec<String> = store
        .keys_in(&NAMESPACES, "")
        .into_iter()
        .filter(|k| store.get(&NAMESPACES, k).is_some_and(is_terminating))
        .map(|(_, name)| name)
        .collect();
    for name in terminating {
        finish(store, &name);
    }
}
