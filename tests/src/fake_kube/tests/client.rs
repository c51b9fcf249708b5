//! The real `kube` client pointed at a fake, and the resources the tests
//! write through it.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, Config};
use serde_json::Value;

use crate::fake_kube::FakeKube;

pub fn client(fake: &FakeKube) -> Client {
    Client::try_from(Config::new(fake.url().parse().unwrap())).unwrap()
}

/// (group, version, kind, plural)
pub type Kind = (&'static str, &'static str, &'static str, &'static str);

pub const CONFIG_MAP: Kind = ("", "v1", "ConfigMap", "configmaps");
pub const DEPLOYMENT: Kind = ("apps", "v1", "Deployment", "deployments");
pub const SECRET: Kind = ("", "v1", "Secret", "secrets");
pub const NAMESPACE: Kind = ("", "v1", "Namespace", "namespaces");

/// An API of `kind` as the deployer builds it: by hand, no discovery.
pub fn api(fake: &FakeKube, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
    let (group, version, kind, plural) = kind;
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client(fake), ns, &resource),
        None => Api::all_with(client(fake), &resource),
    }
}

/// A `DynamicObject` from JSON.
pub fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// The JSON of a `DynamicObject`.
pub fn json_of(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap()
}

/// The API error of a failed call.
pub fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A namespace in the fake, as the test's own write.
pub fn namespace(fake: &FakeKube, name: &str) -> Value {
    fake.put_object(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
    }))
}
