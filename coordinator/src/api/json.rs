//! The JSON body extractor: content type, size, syntax and field errors all
//! become a 4xx naming what is wrong.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Maximum request body size.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Like `axum::Json`, with errors in our shape and the offending field named.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_body(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// The bytes of a JSON request body: 415 unless the content type is JSON,
/// 413 past [`MAX_BODY_BYTES`].
pub async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be JSON with Content-Type: application/json",
        ));
    }
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(body_rejection)?;
    Ok(bytes)
}

/// A request body that could not be read (too large, cut off).
pub fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than {} KiB",
                MAX_BODY_BYTES / 1024
            ),
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            rejection.body_text(),
        )
    }
}

/// Parses `bytes` as `T`, naming the field at fault.
///
/// No request body of this API contains a list, and serde would read a list
/// as a struct's fields in order (`"features": [true, false]`), so a list
/// anywhere is refused; `request_bodies_have_no_lists` keeps that true.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_with_lists(bytes, &[])
}

/// [`parse`] for a body whose fields at `lists` (top-level names) are
/// lists of values.
pub fn parse_with_lists<T: DeserializeOwned>(bytes: &[u8], lists: &[&str]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the request body is empty; expected a JSON object",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("malformed JSON: {e}"),
        )
    })?;
    let mut checked = value.clone();
    if let Some(map) = checked.as_object_mut() {
        for name in lists {
            if let Some(serde_json::Value::Array(items)) = map.remove(*name)
                && let Some(i) = items.iter().position(|v| v.is_array() || v.is_object())
            {
                return Err(ApiError::invalid(
                    format!("{name}[{i}]"),
                    "invalid type: expected a value, not a list or an object",
                ));
            }
        }
    }
    if let Some(path) = find_list(&checked, "") {
        let field = if path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        return Err(ApiError::invalid(
            field,
            "invalid type: a list, expected an object or a value",
        ));
    }
    let err = match serde_path_to_error::deserialize(&value) {
        Ok(parsed) => return Ok(parsed),
        Err(err) => err,
    };
    let path = err.path().to_string();
    let message = strip_position(&err.into_inner().to_string());
    let parent = if path == "." { String::new() } else { path };
    let field = match named_field(&message) {
        Some(name) => join_path(&parent, name),
        None if parent.is_empty() => "body".into(),
        None => parent,
    };
    Err(ApiError::invalid(field, message))
}

/// The path of the first list in `value`, if any.
fn find_list(value: &serde_json::Value, path: &str) -> Option<String> {
    match value {
        serde_json::Value::Array(_) => Some(path.to_owned()),
        serde_json::Value::Object(map) => map.iter().find_map(|(key, v)| {
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            find_list(v, &child)
        }),
        _ => None,
    }
}

/// serde names the field itself for unknown and missing fields.
fn named_field(message: &str) -> Option<&str> {
    ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
}

fn join_path(parent: &str, name: &str) -> String {
    // For unknown fields the path already ends at the field itself.
    if parent.is_empty() || parent == name || parent.ends_with(&format!(".{name}")) {
        return if parent.is_empty() {
            name.to_owned()
        } else {
            parent.to_owned()
        };
    }
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::ProvisionRequest;

    fn field_of(body: &str) -> (String, String) {
        let err = parse::<ProvisionRequest>(body.as_bytes()).unwrap_err();
        (
            err.detail.code.to_owned(),
            err.detail.field.unwrap_or_default(),
        )
    }

    #[test]
    fn errors_name_the_field() {
        let base =
            r#""name":"A","slug":"acme","plan":"basic","adminEmail":"a@b.co","domain":"a.b.co""#;
        assert_eq!(
            field_of(&format!("{{{base},\"colour\":1}}")),
            ("invalid_field".into(), "colour".into())
        );
        assert_eq!(
            field_of(r#"{"name":"A"}"#),
            ("invalid_field".into(), "slug".into())
        );
        assert_eq!(
            field_of(
                r#"{"name":5,"slug":"acme","plan":"basic","adminEmail":"a@b.co","domain":"a.b.co"}"#
            ),
            ("invalid_field".into(), "name".into())
        );
        assert_eq!(
            field_of(&format!("{{{}}}", base.replace("basic", "gold"))),
            ("invalid_field".into(), "plan".into())
        );
        assert_eq!(
            field_of(&format!("{{{base},\"branding\":{{\"logo\":\"x\"}}}}")),
            ("invalid_field".into(), "branding.logo".into())
        );
        assert_eq!(
            field_of(&format!(
                "{{{base},\"features\":{{\"enableNFT\":\"yes\"}}}}"
            )),
            ("invalid_field".into(), "features.enableNFT".into())
        );
        assert_eq!(
            field_of("{\"name\":"),
            ("invalid_json".into(), String::new())
        );
        assert_eq!(field_of(""), ("invalid_json".into(), String::new()));
        assert_eq!(
            field_of(&format!("{{{base}}} trailing")),
            ("invalid_json".into(), String::new())
        );
    }

    #[test]
    fn request_bodies_have_no_lists() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(crate::api::ApiDoc::openapi()).unwrap();
        for name in [
            "ProvisionRequest",
            "UpdateRequest",
            "BrandingPatch",
            "FeatureOverrides",
            "Usage",
        ] {
            let schema = &doc["components"]["schemas"][name];
            assert!(schema.is_object(), "{name} is documented");
            let text = schema.to_string();
            assert!(
                !text.contains("\"array\""),
                "{name} has a list: parse() must learn to accept it"
            );
        }
    }

    proptest::proptest! {
        /// Any bytes, and JSON objects of the requests' own keys with values
        /// of any type: a value or a 4xx naming what is wrong, never a panic.
        #[test]
        fn any_body_is_parsed_or_refused_as_a_client_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            object in request_like_object(),
        ) {
            crate::api::fuzzing::json_bodies(&bytes);
            crate::api::fuzzing::json_bodies(object.to_string().as_bytes());
        }
    }

    /// Objects with the request bodies' keys (and some others), nested.
    fn request_like_object() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let keys = prop_oneof![
            Just("name"),
            Just("slug"),
            Just("plan"),
            Just("adminEmail"),
            Just("domain"),
            Just("features"),
            Just("branding"),
            Just("logoUrl"),
            Just("primaryColor"),
            Just("emails"),
            Just("webhookUrl"),
            Just("slackWebhookUrl"),
            Just("users"),
            Just("storageBytes"),
            Just("apiRequests"),
            Just("enableNFT"),
            Just("x"),
        ];
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            "\\PC{0,24}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| {
                    serde_json::Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                    )
                }),
            ]
        })
    }
}
