//! Server-side apply: creation, pruning, conflicts, forced takeover, and
//! hand edits undone by the next apply.

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::client::{DEPLOYMENT, api, api_error, json_of, namespace};
use crate::fake_kube::FakeKube;

const NS: &str = "knowton-tenant-acme";

/// The deployer's configuration of a Deployment.
fn web(replicas: i64, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "backend", "image": "knowton/backend:2.14.0"}]},
            },
        },
    })
}

fn entry<'a>(object: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

async fn apply(fake: &FakeKube, params: &PatchParams, config: Value) -> kube::Result<Value> {
    let deployments = api(fake, DEPLOYMENT, Some(NS));
    let applied = deployments
        .patch("web", params, &Patch::Apply(config))
        .await?;
    Ok(json_of(&applied))
}

#[tokio::test]
async fn an_apply_creates_the_object_owned_by_its_manager() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let created = apply(
        &fake,
        &PatchParams::apply("deployer"),
        web(2, json!({"app": "web"})),
    )
    .await
    .unwrap();
    assert_eq!(created["spec"]["replicas"], 2);
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["status"], json!({}));
    let owned = entry(&created, "deployer", "Apply").expect("an Apply entry");
    assert_eq!(owned["apiVersion"], "apps/v1");
    assert_eq!(owned["fieldsType"], "FieldsV1");
    assert!(owned["time"].is_string());
    let fields = &owned["fieldsV1"];
    assert_eq!(fields["f:spec"]["f:replicas"], json!({}));
    assert_eq!(fields["f:metadata"]["f:labels"]["f:app"], json!({}));
    assert_eq!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"],
        json!({}),
        "lists are atomic"
    );
    assert!(fields["f:metadata"].get("f:name").is_none());

    // The same apply again changes nothing, not even the resourceVersion.
    let rv = fake.resource_version();
    let again = apply(
        &fake,
        &PatchParams::apply("deployer"),
        web(2, json!({"app": "web"})),
    )
    .await
    .unwrap();
    assert_eq!(again, created);
    assert_eq!(fake.resource_version(), rv);

    let missing = api_error(
        api(&fake, DEPLOYMENT, Some(NS))
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Apply(web(1, json!({}))),
            )
            .await,
    );
    assert_eq!(missing.code, 422, "an apply needs a fieldManager");
    assert!(missing.message.contains("fieldManager: Required value"));

    // What a real API server refuses in an apply configuration.
    let mut from_get = created.clone();
    from_get["spec"]["replicas"] = json!(3);
    let err = api_error(apply(&fake, &PatchParams::apply("deployer"), from_get).await);
    assert_eq!(
        (err.code, err.message.as_str()),
        (400, "metadata.managedFields must be nil")
    );
    let mut other_version = web(2, json!({}));
    other_version["apiVersion"] = json!("apps/v1beta1");
    let err = api_error(apply(&fake, &PatchParams::apply("deployer"), other_version).await);
    assert_eq!(err.code, 400);
}

#[tokio::test]
async fn fields_a_manager_stops_applying_are_removed_unless_another_owns_them() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let deployer = PatchParams::apply("deployer");
    apply(
        &fake,
        &deployer,
        web(2, json!({"app": "web", "tier": "backend", "old": "x"})),
    )
    .await
    .unwrap();
    // Another manager applies the same "tier" label: co-owned.
    let mut other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"tier": "backend"}, "annotations": {"note": "kept"}}});
    let applied = apply(&fake, &PatchParams::apply("other"), other.take())
        .await
        .unwrap();
    assert!(entry(&applied, "other", "Apply").is_some());

    let pruned = apply(&fake, &deployer, web(2, json!({"app": "web"})))
        .await
        .unwrap();
    let labels = &pruned["metadata"]["labels"];
    assert_eq!(
        labels,
        &json!({"app": "web", "tier": "backend"}),
        "old gone, tier kept"
    );
    assert_eq!(pruned["metadata"]["annotations"]["note"], "kept");
    let deployer_fields = &entry(&pruned, "deployer", "Apply").unwrap()["fieldsV1"];
    assert!(
        deployer_fields["f:metadata"]["f:labels"]
            .get("f:tier")
            .is_none()
    );
    assert_eq!(pruned["metadata"]["generation"], 1, "labels are metadata");

    // Dropping a spec field the deployer alone owned removes it.
    let mut without_replicas = web(2, json!({"app": "web"}));
    without_replicas["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas");
    let pruned = apply(&fake, &deployer, without_replicas).await.unwrap();
    assert!(pruned["spec"].get("replicas").is_none());
    assert_eq!(pruned["metadata"]["generation"], 2);
}

#[tokio::test]
async fn a_conflict_is_refused_without_force_and_taken_over_with_it() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let deployer = PatchParams::apply("deployer");
    apply(&fake, &deployer, web(2, json!({"app": "web"})))
        .await
        .unwrap();
    // Someone scales by hand.
    let edited = fake.edit("apps/v1", "Deployment", Some(NS), "web", |d| {
        d["spec"]["replicas"] = json!(5);
    });
    assert_eq!(edited["metadata"]["generation"], 2);
    let edit = entry(&edited, "kubectl-edit", "Update").expect("an Update entry");
    assert_eq!(edit["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    let deployer_fields = &entry(&edited, "deployer", "Apply").unwrap()["fieldsV1"];
    assert!(
        deployer_fields["f:spec"].get("f:replicas").is_none(),
        "ownership moved"
    );

    // Applying the same other fields is no conflict; replicas is.
    let conflict = api_error(apply(&fake, &deployer, web(2, json!({"app": "web"}))).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        conflict.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas"
    );
    let cause = &conflict.details.unwrap().causes[0];
    assert_eq!(
        (cause.reason.as_str(), cause.field.as_str()),
        ("FieldManagerConflict", ".spec.replicas")
    );
    let stored = fake
        .object("apps/v1", "Deployment", Some(NS), "web")
        .unwrap();
    assert_eq!(stored["spec"]["replicas"], 5, "nothing applied");
    // The value the other manager set is no conflict.
    apply(&fake, &deployer, web(5, json!({"app": "web"})))
        .await
        .unwrap();

    // Forced: the deployer takes replicas back, the hand edit is undone.
    let forced = apply(
        &fake,
        &deployer.clone().force(),
        web(2, json!({"app": "web"})),
    )
    .await
    .unwrap();
    assert_eq!(forced["spec"]["replicas"], 2);
    assert!(
        entry(&forced, "kubectl-edit", "Update").is_none(),
        "an owner of nothing is dropped"
    );
    let deployer_fields = &entry(&forced, "deployer", "Apply").unwrap()["fieldsV1"];
    assert_eq!(deployer_fields["f:spec"]["f:replicas"], json!({}));
    assert_eq!(forced["metadata"]["generation"], 3);
}

#[tokio::test]
async fn conflicts_with_several_fields_are_listed_by_manager() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    apply(
        &fake,
        &PatchParams::apply("deployer"),
        web(2, json!({"app": "web"})),
    )
    .await
    .unwrap();
    fake.edit("apps/v1", "Deployment", Some(NS), "web", |d| {
        d["spec"]["replicas"] = json!(5);
        d["metadata"]["labels"]["app"] = json!("edited");
    });
    let conflict = api_error(
        apply(
            &fake,
            &PatchParams::apply("other"),
            web(3, json!({"app": "mine"})),
        )
        .await,
    );
    assert_eq!(
        conflict.message,
        "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using apps/v1:\n\
         - .metadata.labels.app\n- .spec.replicas"
    );
}
