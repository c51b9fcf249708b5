//! The checks of a write before it is carried out: the body names the
//! object of the path, preconditions (resourceVersion, uid) hold, names
//! are valid, a claim's spec changes only as the real server allows; and
//! the names a create generates.

use serde_json::Value;

use super::resources::{NAMESPACES, PERSISTENT_VOLUME_CLAIMS, ResourceType, SERVICES};
use super::status::StatusError;
use super::write::Request;

/// The object in a body must be the one the path names.
pub(super) fn check_body(
    request: &Request,
    body: &Value,
    name: Option<&str>,
) -> Result<(), StatusError> {
    if !body.is_object() {
        return Err(StatusError::bad_request(
            "the request body is not a JSON object",
        ));
    }
    let ty = request.ty;
    let given = |field: &str| body[field].as_str().filter(|s| !s.is_empty());
    if given("kind").is_some_and(|k| k != ty.kind)
        || given("apiVersion").is_some_and(|v| v != ty.api_version())
    {
        return Err(StatusError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}",
            given("kind").unwrap_or(ty.kind),
            given("apiVersion").unwrap_or(""),
            ty.kind
        )));
    }
    let meta = |field: &str| body["metadata"][field].as_str().filter(|s| !s.is_empty());
    if ty.namespaced && meta("namespace").is_some_and(|ns| ns != request.namespace) {
        return Err(StatusError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let (Some(url), Some(object)) = (name, meta("name"))
        && url != object
    {
        return Err(StatusError::bad_request(format!(
            "the name of the object ({object}) does not match the name on the URL ({url})"
        )));
    }
    Ok(())
}

/// A resourceVersion or uid given with a write must be the object's.
pub(super) fn check_preconditions(
    ty: &ResourceType,
    name: &str,
    old: &Value,
    given: &Value,
) -> Result<(), StatusError> {
    let meta = |object: &Value, field: &str| {
        object["metadata"][field]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if let Some(rv) = meta(given, "resourceVersion")
        && Some(&rv) != meta(old, "resourceVersion").as_ref()
    {
        return Err(StatusError::stale(ty, name));
    }
    if let Some(uid) = meta(given, "uid")
        && Some(&uid) != meta(old, "uid").as_ref()
    {
        let why = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta(old, "uid").unwrap_or_default()
        );
        return Err(StatusError::conflict(ty, name, &why));
    }
    Ok(())
}

/// An update of an object that exists, as the real server's validation
/// takes it: a PersistentVolumeClaim's spec is immutable but for its
/// storage request, which may not shrink. (Claims are never bound here, so
/// the real server's "bound claims only" condition on growing is not
/// simulated: a claim may grow at any time.)
pub(super) fn check_update(
    ty: &ResourceType,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), StatusError> {
    if *ty != PERSISTENT_VOLUME_CLAIMS {
        return Ok(());
    }
    let storage = |claim: &Value| {
        claim["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .map(str::to_owned)
    };
    let without_storage = |claim: &Value| {
        let mut spec = claim["spec"].clone();
        if let Some(requests) = spec
            .pointer_mut("/resources/requests")
            .and_then(Value::as_object_mut)
        {
            requests.remove("storage");
        }
        spec
    };
    if without_storage(old) != without_storage(new) {
        return Err(invalid(
            ty,
            name,
            "spec",
            "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".to_owned(),
        ));
    }
    let (before, after) = (storage(old), storage(new));
    let smaller = match (before.as_deref().and_then(quantity), after.as_deref()) {
        (Some(before), Some(after)) => quantity(after).is_none_or(|after| after < before),
        (Some(_), None) => true,
        _ => false,
    };
    if smaller {
        return Err(invalid(
            ty,
            name,
            "spec.resources.requests.storage",
            "Forbidden: field can not be less than previous value".to_owned(),
        ));
    }
    Ok(())
}

/// A storage quantity (`10Gi`, `1Ti`, `500M`, `1024`) in bytes.
fn quantity(text: &str) -> Option<u128> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: u128 = number.parse().ok()?;
    let factor: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return None,
    };
    Some(number * factor)
}

pub(super) fn invalid(ty: &ResourceType, name: &str, field: &str, message: String) -> StatusError {
    StatusError::invalid(ty.kind, ty.group, name, &[(field, message)])
}

pub(super) fn patch_options_invalid(field: &str, message: &str) -> StatusError {
    StatusError::invalid(
        "PatchOptions",
        "meta.k8s.io",
        "",
        &[(field, message.to_owned())],
    )
}

/// Names as the real API server validates them: RFC 1123 labels for
/// Namespaces, RFC 1035 labels for Services, RFC 1123 subdomains for the
/// rest.
pub(super) fn validate_name(ty: &ResourceType, name: &str) -> Result<(), StatusError> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.starts_with(alnum)
            && s.ends_with(alnum)
            && s.chars().all(|c| alnum(c) || c == '-')
    };
    let (ok, rule) = if *ty == NAMESPACES {
        (
            label(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        )
    } else if *ty == SERVICES {
        (
            label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()),
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start \
             with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  \
             or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        )
    } else {
        (
            name.len() <= 253 && name.split('.').all(label),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            ty,
            name,
            "metadata.name",
            format!("Invalid value: {name:?}: {rule}"),
        ))
    }
}

/// Five characters for a generateName, from the real alphabet.
pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}
