//! Writes through the API: create, replace, patch, delete, the status
//! subresource, generations and injected failures.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::client::{CONFIG_MAP, DEPLOYMENT, api, api_error, client, dynamic, json_of, namespace};
use crate::fake_kube::FakeKube;

const NS: &str = "knowton-tenant-acme";

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "backend", "image": "knowton/backend:2.14.0"}]},
            },
        },
    })
}

async fn json_patch(fake: &FakeKube, path: &str, ops: Value) -> (u16, Value) {
    let response = super::http()
        .patch(format!("{}{path}", fake.url()))
        .header("content-type", "application/json-patch+json")
        .body(ops.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn create_get_replace_and_delete_answer_as_the_api_server_does() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let maps = api(&fake, CONFIG_MAP, Some(NS));
    let pp = PostParams::default();

    let created = json_of(
        &maps
            .create(&pp, &dynamic(config_map("settings", json!({"a": "1"}))))
            .await
            .unwrap(),
    );
    assert_eq!(created["metadata"]["namespace"], NS);
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(
        created["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let entry = &created["metadata"]["managedFields"][0];
    assert_eq!(entry["operation"], "Update");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(entry["fieldsV1"], json!({"f:data": {"f:a": {}}}));

    let again = api_error(
        maps.create(&pp, &dynamic(config_map("settings", json!({}))))
            .await,
    );
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(again.message, "configmaps \"settings\" already exists");
    assert_eq!(json_of(&maps.get("settings").await.unwrap()), created);

    // Replace: with the current resourceVersion, then with a stale one.
    let mut changed = created.clone();
    changed["data"]["a"] = json!("2");
    let replaced = json_of(
        &maps
            .replace("settings", &pp, &dynamic(changed.clone()))
            .await
            .unwrap(),
    );
    assert_eq!(replaced["data"]["a"], "2");
    assert!(rv(&replaced) > rv(&created));
    assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        replaced["metadata"]["generation"], 2,
        "data is outside metadata and status"
    );
    let stale = api_error(maps.replace("settings", &pp, &dynamic(changed)).await);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        stale.message,
        "Operation cannot be fulfilled on configmaps \"settings\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
    let absent = api_error(
        maps.replace("ghost", &pp, &dynamic(config_map("ghost", json!({}))))
            .await,
    );
    assert_eq!((absent.code, absent.reason.as_str()), (404, "NotFound"));

    // A delete with a stale precondition is refused.
    let stale_delete = DeleteParams::default().preconditions(kube::api::Preconditions {
        resource_version: Some(
            created["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .into(),
        ),
        uid: None,
    });
    let refused = api_error(maps.delete("settings", &stale_delete).await);
    assert_eq!((refused.code, refused.reason.as_str()), (409, "Conflict"));

    // A generated name.
    let generated = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"generateName": "settings-"}});
    let generated = json_of(&maps.create(&pp, &dynamic(generated)).await.unwrap());
    let name = generated["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("settings-") && name.len() == "settings-".len() + 5);
    let bad = api_error(
        maps.create(&pp, &dynamic(config_map("Not_Valid", json!({}))))
            .await,
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));

    // Delete answers the object, then 404.
    let deleted = maps
        .delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(json_of(&deleted.left().unwrap())["data"]["a"], "2");
    let gone = api_error(maps.delete("settings", &DeleteParams::default()).await);
    assert_eq!(
        (gone.code, gone.message.as_str()),
        (404, "configmaps \"settings\" not found")
    );
    assert!(
        fake.object("v1", "ConfigMap", Some(NS), "settings")
            .is_none()
    );

    // Cluster-scoped and grouped paths name what they serve.
    let bad = api_error(api(&fake, DEPLOYMENT, Some(NS)).get("nope").await);
    assert_eq!(bad.message, "deployments.apps \"nope\" not found");
}

#[tokio::test]
async fn patches_merge_strategic_and_json_with_their_own_semantics() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let maps: Api<ConfigMap> = Api::namespaced(client(&fake), NS);
    maps.create(
        &PostParams::default(),
        &serde_json::from_value(config_map("m", json!({"a": "1", "b": "2"}))).unwrap(),
    )
    .await
    .unwrap();
    let pp = PatchParams::default();

    let merged = maps
        .patch(
            "m",
            &pp,
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        [("b".into(), "2".into()), ("c".into(), "3".into())].into()
    );

    let strategic = maps
        .patch(
            "m",
            &pp,
            &Patch::Strategic(json!({"data": {"b": null}, "metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.data.unwrap().len(), 1);
    assert_eq!(strategic.metadata.labels.unwrap()["x"], "y");

    // JSON patches through plain HTTP (kube's type for them is not a
    // dependency here).
    let path = format!("/api/v1/namespaces/{NS}/configmaps/m");
    let ops = json!([
        {"op": "add", "path": "/data/d", "value": "4"},
        {"op": "replace", "path": "/data/c", "value": "33"},
        {"op": "remove", "path": "/metadata/labels/x"},
    ]);
    let (code, patched) = json_patch(&fake, &path, ops).await;
    assert_eq!(code, 200);
    assert_eq!(patched["data"], json!({"c": "33", "d": "4"}));
    assert_eq!(patched["metadata"]["labels"], json!({}));
    let failing = json!([{"op": "test", "path": "/data/c", "value": "0"}]);
    let (code, err) = json_patch(&fake, &path, failing).await;
    assert_eq!((code, err["reason"].as_str()), (422, Some("Invalid")));
    let (code, _) = json_patch(&fake, &path, json!([{"op": "remove", "path": "/data/zz"}])).await;
    assert_eq!(code, 422);
    let (code, _) = json_patch(&fake, &path, json!({"op": "add"})).await;
    assert_eq!(code, 400);
    let missing = api_error(maps.patch("ghost", &pp, &Patch::Merge(json!({}))).await);
    assert_eq!(missing.code, 404);

    // A patch carrying a stale resourceVersion is refused as a stale replace.
    let stale = api_error(
        maps.patch(
            "m",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"z": "1"}})),
        )
        .await,
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
}

#[tokio::test]
async fn the_generation_counts_spec_changes_only() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let deployments = api(&fake, DEPLOYMENT, Some(NS));
    let pp = PatchParams::default();
    let generation = |fake: &FakeKube| {
        fake.object("apps/v1", "Deployment", Some(NS), "web")
            .unwrap()["metadata"]["generation"]
            .as_i64()
            .unwrap()
    };
    deployments
        .create(&PostParams::default(), &dynamic(deployment("web", 2)))
        .await
        .unwrap();
    assert_eq!(generation(&fake), 1);

    deployments
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .unwrap();
    assert_eq!(generation(&fake), 2, "a spec change");
    deployments
        .patch(
            "web",
            &pp,
            &Patch::Merge(
                json!({"metadata": {"labels": {"tier": "web"}, "annotations": {"a": "b"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(generation(&fake), 2, "a label or annotation change");
    fake.set_status(
        "apps/v1",
        "Deployment",
        NS,
        "web",
        json!({"observedGeneration": 2, "replicas": 3}),
    );
    assert_eq!(generation(&fake), 2, "a status change");
    let before = fake.resource_version();
    deployments
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .unwrap();
    assert_eq!(
        fake.resource_version(),
        before,
        "a write that changes nothing stores nothing"
    );
    fake.edit("apps/v1", "Deployment", Some(NS), "web", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("knowton/backend:2.15.0")
    });
    assert_eq!(generation(&fake), 3, "a hand edit of the spec");
}

#[tokio::test]
async fn status_is_written_only_through_its_subresource() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let deployments: Api<Deployment> = Api::namespaced(client(&fake), NS);
    let mut with_status = deployment("web", 1);
    with_status["status"] = json!({"replicas": 9});
    let created = deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(with_status).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        created.status.unwrap_or_default().replicas,
        None,
        "status ignored on create"
    );

    let pp = PatchParams::default();
    let patched = deployments
        .patch_status(
            "web",
            &pp,
            &Patch::Merge(
                json!({"status": {"readyReplicas": 1, "replicas": 1}, "spec": {"replicas": 5}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.status.as_ref().unwrap().ready_replicas, Some(1));
    assert_eq!(
        patched.spec.as_ref().unwrap().replicas,
        Some(1),
        "spec ignored through /status"
    );
    assert_eq!(patched.metadata.generation, Some(1));
    let status_entry = patched
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|e| e.subresource.as_deref() == Some("status"));
    assert!(
        status_entry.is_some(),
        "the status write has its own managedFields entry"
    );

    // Writes to the object keep the stored status.
    let main = deployments
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({"status": {"readyReplicas": 0}, "spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(main.status.as_ref().unwrap().ready_replicas, Some(1));
    assert_eq!(main.spec.as_ref().unwrap().replicas, Some(2));

    let status = deployments.get_status("web").await.unwrap();
    assert_eq!(status.status.unwrap().ready_replicas, Some(1));
    let mut replaced = deployments.get("web").await.unwrap();
    replaced.status.as_mut().unwrap().ready_replicas = Some(2);
    let replaced = deployments
        .replace_status("web", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(replaced.status.unwrap().ready_replicas, Some(2));
    // A controller applying status owns it through the subresource.
    let applied = deployments
        .patch_status(
            "web",
            &PatchParams::apply("controller"),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"}, "status": {"availableReplicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.status.as_ref().unwrap().available_replicas, Some(2));
    let entry = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|e| e.manager.as_deref() == Some("controller"))
        .unwrap();
    assert_eq!(
        (entry.operation.as_deref(), entry.subresource.as_deref()),
        (Some("Apply"), Some("status"))
    );
    let configmaps = api(&fake, CONFIG_MAP, Some(NS));
    let no_status = api_error(configmaps.get_status("x").await);
    assert_eq!(
        no_status.code, 404,
        "config maps have no status subresource"
    );
}

#[tokio::test]
async fn lists_and_watches_serve_every_resource_with_selectors() {
    let fake = FakeKube::start().await;
    for ns in ["a", "b"] {
        namespace(&fake, ns);
        let mut d = deployment("web", 1);
        d["metadata"]["namespace"] = json!(ns);
        d["metadata"]["labels"]["tenant"] = json!(ns);
        api(&fake, DEPLOYMENT, Some(ns))
            .create(&PostParams::default(), &dynamic(d))
            .await
            .unwrap();
    }
    let all = api(&fake, DEPLOYMENT, None);
    let listed = all
        .list(&kube::api::ListParams::default().labels("tenant=b"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.namespace.as_deref(), Some("b"));
    let namespaces = api(&fake, super::client::NAMESPACE, None)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(namespaces.items.len(), 2);
    assert_eq!(fake.objects("apps/v1", "Deployment", None).len(), 2);
    assert_eq!(fake.objects("apps/v1", "Deployment", Some("a")).len(), 1);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("GET /apis/apps/v1/deployments?"))
    );
}

#[tokio::test]
async fn injected_failures_answer_real_statuses_and_store_nothing() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let maps = api(&fake, CONFIG_MAP, Some(NS));
    let apply = PatchParams::apply("deployer");
    let body = Patch::Apply(config_map("m", json!({"a": "1"})));

    fake.fail_next("PATCH", "/configmaps/m", 409, 1);
    fake.fail_next("patch", "/configmaps/m", 422, 1);
    fake.fail_next("PATCH", "/configmaps/", 500, 1);
    fake.fail_next("PATCH", "/configmaps/m", 404, 1);
    let conflict = api_error(maps.patch("m", &apply, &body).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    let invalid = api_error(maps.patch("m", &apply, &body).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert!(
        invalid
            .details
            .unwrap()
            .causes
            .is_empty()
            .then_some("no causes")
            .is_none()
    );
    let internal = api_error(maps.patch("m", &apply, &body).await);
    assert_eq!(
        (internal.code, internal.reason.as_str()),
        (500, "InternalError")
    );
    let missing = api_error(maps.patch("m", &apply, &body).await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert!(
        fake.object("v1", "ConfigMap", Some(NS), "m").is_none(),
        "nothing stored"
    );

    maps.patch("m", &apply, &body).await.unwrap();
    assert_eq!(
        fake.object("v1", "ConfigMap", Some(NS), "m").unwrap()["data"]["a"],
        "1"
    );
    let path = format!("/api/v1/namespaces/{NS}/configmaps/m");
    assert_eq!(fake.requests_to(&path), 5, "every request logged");
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("PATCH ") && r.contains("fieldManager=deployer"))
    );
}

#[tokio::test]
async fn secrets_store_string_data_as_data() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let secrets = api(&fake, super::client::SECRET, Some(NS));
    let config = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db"}, "stringData": {"password": "hunter2"}});
    let apply = PatchParams::apply("deployer");
    let stored = json_of(
        &secrets
            .patch("db", &apply, &Patch::Apply(config.clone()))
            .await
            .unwrap(),
    );
    assert_eq!(stored["data"], json!({"password": "aHVudGVyMg=="}));
    assert_eq!(stored["type"], "Opaque");
    assert!(stored.get("stringData").is_none(), "never stored");
    let rv = fake.resource_version();
    secrets
        .patch("db", &apply, &Patch::Apply(config))
        .await
        .unwrap();
    assert_eq!(
        fake.resource_version(),
        rv,
        "the same apply again is no change"
    );
}

#[tokio::test]
async fn a_claims_spec_is_immutable_but_its_storage_may_grow() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let claims = api(
        &fake,
        ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        Some(NS),
    );
    let claim = |size: &str, class: &str| {
        dynamic(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "tenant-data", "namespace": NS},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": class,
                "resources": {"requests": {"storage": size}},
            },
        }))
    };
    let apply = PatchParams::apply("knowton-coordinator").force();
    claims
        .patch(
            "tenant-data",
            &apply,
            &Patch::Apply(claim("10Gi", "standard")),
        )
        .await
        .unwrap();
    let grown = claims
        .patch(
            "tenant-data",
            &apply,
            &Patch::Apply(claim("100Gi", "standard")),
        )
        .await
        .unwrap();
    assert_eq!(
        json_of(&grown)["spec"]["resources"]["requests"]["storage"],
        "100Gi"
    );
    let shrunk = api_error(
        claims
            .patch(
                "tenant-data",
                &apply,
                &Patch::Apply(claim("10Gi", "standard")),
            )
            .await,
    );
    assert_eq!(shrunk.code, 422);
    assert!(
        shrunk.message.contains(
            "spec.resources.requests.storage: Forbidden: field can not be less than previous value"
        ),
        "{}",
        shrunk.message
    );
    let reclassed = api_error(
        claims
            .patch("tenant-data", &apply, &Patch::Apply(claim("100Gi", "fast")))
            .await,
    );
    assert_eq!(reclassed.code, 422);
    assert!(
        reclassed.message.contains("spec is immutable"),
        "{}",
        reclassed.message
    );
    let live = fake
        .object("v1", "PersistentVolumeClaim", Some(NS), "tenant-data")
        .unwrap();
    assert_eq!(live["spec"]["storageClassName"], "standard");
    assert_eq!(live["spec"]["resources"]["requests"]["storage"], "100Gi");
}
