//! Writes through the API, with the checks and answers of the real API
//! server: create (POST), replace (PUT), patch (merge, strategic merge,
//! JSON patch, server-side apply) and delete, on an object or its
//! `/status`; `dryRun=All` checks and answers everything and stores
//! nothing. Also the tests' own writes, which skip admission.

use serde_json::{Value, json};

use super::apply::{self, config_of, conflict_error};
use super::fields::{ManagedFields, Operation, Writer};
use super::namespaces::{self, admit};
use super::object::{Via, now, settle, with_managed};
use super::patch::{JsonPatchError, json_patch, merge_patch, strategic_merge_patch};
use super::resources::{NAMESPACES, ResourceType};
use super::status::StatusError;
use super::store::{ObjectKey, Store};
use super::validate::{
    check_body, check_preconditions, check_update, invalid, patch_options_invalid, random_suffix,
    validate_name,
};

/// A write request, as the routes understood it.
#[derive(Debug, Clone)]
pub struct Request {
    pub ty: &'static ResourceType,
    /// "" for cluster-scoped objects.
    pub namespace: String,
    /// None for the collection (a create).
    pub name: Option<String>,
    /// Through the `/status` subresource.
    pub status: bool,
    /// The `fieldManager` parameter.
    pub field_manager: Option<String>,
    /// The manager of Update operations without a `fieldManager`, from the
    /// User-Agent as the real API server takes it.
    pub default_manager: String,
    pub force: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

#[derive(Debug, Clone)]
pub enum Write {
    Create(Value),
    Replace(Value),
    Patch(PatchKind, Value),
    /// With the request's DeleteOptions (or null).
    Delete(Value),
}

/// The answer to a write.
#[derive(Debug, Clone)]
pub struct Written {
    /// 201 rather than 200.
    pub created: bool,
    pub object: Value,
}

/// Carries out a write on `store`.
pub fn write(store: &mut Store, request: &Request, write: Write) -> Result<Written, StatusError> {
    match write {
        Write::Create(body) => create(store, request, body),
        Write::Replace(body) => replace(store, request, body),
        Write::Patch(PatchKind::Apply, body) => server_side_apply(store, request, body),
        Write::Patch(kind, patch) => patch_object(store, request, kind, &patch),
        Write::Delete(options) => delete(store, request, &options),
    }
}

/// How one write is stored.
#[derive(Debug)]
struct Ctx {
    ty: &'static ResourceType,
    key: ObjectKey,
    via: Via,
    writer: Writer,
    dry_run: bool,
    /// False for the tests' own writes.
    admission: bool,
}

impl Ctx {
    fn new(request: &Request, name: &str, operation: Operation, manager: &str) -> Ctx {
        let via = if request.status {
            Via::Status
        } else {
            Via::Main
        };
        Ctx {
            ty: request.ty,
            key: (request.namespace.clone(), name.to_owned()),
            via,
            writer: writer(request.ty, via, operation, manager),
            dry_run: request.dry_run,
            admission: true,
        }
    }

    fn for_test(ty: &'static ResourceType, key: ObjectKey, via: Via, manager: &str) -> Ctx {
        Ctx {
            ty,
            key,
            via,
            writer: writer(ty, via, Operation::Update, manager),
            dry_run: false,
            admission: false,
        }
    }
}

fn writer(ty: &ResourceType, via: Via, operation: Operation, manager: &str) -> Writer {
    Writer {
        manager: manager.to_owned(),
        operation,
        api_version: ty.api_version(),
        subresource: if via == Via::Status {
            "status".into()
        } else {
            String::new()
        },
    }
}

/// Who owns what after a write: an Update's writer what it changed, or
/// what an apply worked out.
#[derive(Debug)]
enum Ownership {
    Update,
    Applied(ManagedFields),
}

/// Stores a new object (namespace lifecycle, AlreadyExists).
fn store_new(
    store: &mut Store,
    ctx: &Ctx,
    body: Value,
    ownership: Ownership,
) -> Result<Written, StatusError> {
    if ctx.admission {
        admit(store, ctx.ty, &ctx.key.0, &ctx.key.1, true)?;
    }
    if let Some(existing) = store.get(ctx.ty, &ctx.key) {
        let being_deleted = !existing["metadata"]["deletionTimestamp"].is_null();
        return Err(StatusError::already_exists(
            ctx.ty,
            &ctx.key.1,
            being_deleted,
        ));
    }
    let settled = settle(ctx.ty, &ctx.key, None, body, ctx.via);
    let managed = match ownership {
        Ownership::Applied(managed) => managed,
        Ownership::Update => {
            let mut managed = ManagedFields::default();
            managed.record_update(&ctx.writer, None, &settled, ctx.via.part(ctx.ty), &now());
            managed
        }
    };
    let object = with_managed(settled, managed);
    if ctx.dry_run {
        return Ok(Written {
            created: true,
            object,
        });
    }
    let object = store.commit(ctx.ty, ctx.key.clone(), object);
    Ok(Written {
        created: true,
        object,
    })
}

/// Stores `new` in place of `old`; nothing changes (not even the
/// resourceVersion) when nothing would.
fn store_update(
    store: &mut Store,
    ctx: &Ctx,
    old: &Value,
    new: Value,
    ownership: Ownership,
) -> Result<Written, StatusError> {
    if ctx.admission {
        admit(store, ctx.ty, &ctx.key.0, &ctx.key.1, false)?;
    }
    let settled = settle(ctx.ty, &ctx.key, Some(old), new, ctx.via);
    check_update(ctx.ty, &ctx.key.1, old, &settled)?;
    let mut managed = match ownership {
        Ownership::Applied(managed) => managed,
        Ownership::Update => {
            let mut managed = ManagedFields::of(old);
            let part = ctx.via.part(ctx.ty);
            managed.record_update(&ctx.writer, Some(old), &settled, part, &now());
            managed
        }
    };
    // Settled, the object still has the old managedFields and
    // resourceVersion: it differs from the old one only if the write
    // changes something.
    if settled != *old {
        managed.touch(&ctx.writer, &now());
    }
    let object = with_managed(settled, managed);
    if ctx.dry_run || object == *old {
        return Ok(Written {
            created: false,
            object,
        });
    }
    let object = store.commit(ctx.ty, ctx.key.clone(), object);
    Ok(Written {
        created: false,
        object,
    })
}

fn update_manager(request: &Request) -> &str {
    request
        .field_manager
        .as_deref()
        .unwrap_or(&request.default_manager)
}

fn create(store: &mut Store, request: &Request, mut body: Value) -> Result<Written, StatusError> {
    check_body(request, &body, None)?;
    let name = match body["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
        Some(name) => name.to_owned(),
        None => match body["metadata"]["generateName"].as_str() {
            Some(prefix) => format!("{prefix}{}", random_suffix()),
            None => {
                return Err(invalid(
                    request.ty,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required".into(),
                ));
            }
        },
    };
    validate_name(request.ty, &name)?;
    body["metadata"]["name"] = json!(name);
    let ctx = Ctx::new(request, &name, Operation::Update, update_manager(request));
    store_new(store, &ctx, body, Ownership::Update)
}

fn replace(store: &mut Store, request: &Request, body: Value) -> Result<Written, StatusError> {
    let name = request.name.as_deref().unwrap_or_default();
    check_body(request, &body, Some(name))?;
    let ctx = Ctx::new(request, name, Operation::Update, update_manager(request));
    match store.get(request.ty, &ctx.key).cloned() {
        None if request.ty.create_on_update && !request.status => {
            validate_name(request.ty, name)?;
            store_new(store, &ctx, body, Ownership::Update)
        }
        None => Err(StatusError::object_not_found(request.ty, name)),
        Some(old) => {
            check_preconditions(request.ty, name, &old, &body)?;
            store_update(store, &ctx, &old, body, Ownership::Update)
        }
    }
}

fn patch_object(
    store: &mut Store,
    request: &Request,
    kind: PatchKind,
    patch: &Value,
) -> Result<Written, StatusError> {
    if request.force {
        return Err(patch_options_invalid(
            "force",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    let name = request.name.as_deref().unwrap_or_default();
    let ctx = Ctx::new(request, name, Operation::Update, update_manager(request));
    let old = store
        .get(request.ty, &ctx.key)
        .cloned()
        .ok_or_else(|| StatusError::object_not_found(request.ty, name))?;
    let mut patched = old.clone();
    match kind {
        PatchKind::Json => json_patch(&mut patched, patch).map_err(|err| match err {
            JsonPatchError::Malformed(why) => StatusError::bad_request(why),
            JsonPatchError::Failed(why) => StatusError::generic(422, why),
        })?,
        _ if !patch.is_object() => {
            return Err(StatusError::bad_request("the patch is not a JSON object"));
        }
        PatchKind::Strategic => strategic_merge_patch(&mut patched, patch),
        _ => merge_patch(&mut patched, patch),
    }
    if !patched.is_object() {
        return Err(StatusError::bad_request(
            "the patched object is not a JSON object",
        ));
    }
    check_preconditions(request.ty, name, &old, &patched)?;
    store_update(store, &ctx, &old, patched, Ownership::Update)
}

fn server_side_apply(
    store: &mut Store,
    request: &Request,
    body: Value,
) -> Result<Written, StatusError> {
    let Some(manager) = request.field_manager.as_deref() else {
        return Err(patch_options_invalid(
            "fieldManager",
            "Required value: is required for apply patch",
        ));
    };
    let name = request.name.as_deref().unwrap_or_default();
    if !body.is_object() {
        return Err(StatusError::bad_request(
            "the applied configuration is not a JSON object",
        ));
    }
    for field in ["apiVersion", "kind"] {
        if body[field].as_str().is_none_or(str::is_empty) {
            return Err(StatusError::bad_request(format!(
                "error decoding apply patch: Object '{}' is missing",
                if field == "kind" {
                    "Kind"
                } else {
                    "apiVersion"
                }
            )));
        }
    }
    if body["apiVersion"] != request.ty.api_version().as_str() {
        return Err(StatusError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {}, expected: {}",
            body["apiVersion"].as_str().unwrap_or(""),
            request.ty.api_version()
        )));
    }
    if !body["metadata"]["managedFields"].is_null() {
        return Err(StatusError::bad_request(
            "metadata.managedFields must be nil",
        ));
    }
    check_body(request, &body, Some(name))?;
    let ctx = Ctx::new(request, name, Operation::Apply, manager);
    let part = ctx.via.part(request.ty);
    let config = config_of(&body, part);
    match store.get(request.ty, &ctx.key).cloned() {
        None if request.status => Err(StatusError::object_not_found(request.ty, name)),
        None => {
            validate_name(request.ty, name)?;
            let (object, managed) = apply::create(&config, &ctx.writer, part, &now());
            store_new(store, &ctx, object, Ownership::Applied(managed))
        }
        Some(old) => {
            check_preconditions(request.ty, name, &old, &body)?;
            let (object, managed) =
                apply::apply(&old, &config, &ctx.writer, part, request.force, &now())
                    .map_err(|conflicts| conflict_error(&conflicts))?;
            store_update(store, &ctx, &old, object, Ownership::Applied(managed))
        }
    }
}

fn delete(store: &mut Store, request: &Request, options: &Value) -> Result<Written, StatusError> {
    let name = request.name.as_deref().unwrap_or_default();
    let dry_run = request.dry_run
        || options["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    if *request.ty == NAMESPACES {
        let object = namespaces::delete(store, name, dry_run)?;
        return Ok(Written {
            created: false,
            object,
        });
    }
    let key = (request.namespace.clone(), name.to_owned());
    let old = store
        .get(request.ty, &key)
        .cloned()
        .ok_or_else(|| StatusError::object_not_found(request.ty, name))?;
    let preconditions = &options["preconditions"];
    for (field, label) in [("resourceVersion", "ResourceVersion"), ("uid", "UID")] {
        if let Some(wanted) = preconditions[field].as_str()
            && Some(wanted) != old["metadata"][field].as_str()
        {
            let why = format!(
                "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {}",
                old["metadata"][field].as_str().unwrap_or("")
            );
            return Err(StatusError::conflict(request.ty, name, &why));
        }
    }
    if dry_run {
        return Ok(Written {
            created: false,
            object: old,
        });
    }
    let object = store.delete(request.ty, &key).unwrap_or(old);
    Ok(Written {
        created: false,
        object,
    })
}

/// A test's own create-or-replace, by `manager`, as given (status and
/// deletionTimestamp included), without admission; always a new
/// resourceVersion and a watch event.
pub fn put_for_test(
    store: &mut Store,
    ty: &'static ResourceType,
    object: Value,
    manager: &str,
) -> Value {
    let name = object["metadata"]["name"]
        .as_str()
        .expect("an object with metadata.name")
        .to_owned();
    let namespace = if ty.namespaced {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned()
    } else {
        String::new()
    };
    let ctx = Ctx::for_test(ty, (namespace, name), Via::Test, manager);
    let old = store.get(ty, &ctx.key).cloned();
    let settled = settle(ty, &ctx.key, old.as_ref(), object, Via::Test);
    let mut managed = old.as_ref().map(ManagedFields::of).unwrap_or_default();
    managed.record_update(
        &ctx.writer,
        old.as_ref(),
        &settled,
        ctx.via.part(ty),
        &now(),
    );
    store.commit(ty, ctx.key, with_managed(settled, managed))
}

/// A test's own Update of an existing object, through `via` (the object
/// itself or its status), by `manager`; the object after, or None if
/// there is no such object.
pub fn update_for_test(
    store: &mut Store,
    ty: &'static ResourceType,
    key: ObjectKey,
    via: Via,
    manager: &str,
    change: impl FnOnce(&mut Value),
) -> Option<Value> {
    let old = store.get(ty, &key)?.clone();
    let mut new = old.clone();
    change(&mut new);
    let ctx = Ctx::for_test(ty, key, via, manager);
    store_update(store, &ctx, &old, new, Ownership::Update)
        .ok()
        .map(|w| w.object)
}
