use serde_json::json;

use super::*;

fn live_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "backend", "namespace": "knowton-tenant-acme",
            "resourceVersion": "42", "uid": "u-1", "generation": 3,
            "managedFields": [{"manager": "knowton-coordinator"}],
            "labels": {"knowton.io/tenant": "acme"},
        },
        "spec": {
            "progressDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{
                "name": "backend", "image": "backend:1.0",
                "terminationMessagePath": "/dev/termination-log",
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            }]}},
        },
        "status": {"replicas": 2},
    })
}

fn desired_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "backend", "namespace": "knowton-tenant-acme",
            "labels": {"knowton.io/tenant": "acme"},
        },
        "spec": {"template": {"spec": {"containers": [{
            "name": "backend", "image": "backend:1.0",
            "resources": {"limits": {"cpu": "1000m", "memory": "1024Mi"}},
        }]}}},
    })
}

#[test]
fn server_maintained_fields_and_defaults_are_not_drift() {
    assert_eq!(
        drift(&live_deployment(), &desired_deployment()),
        Vec::<String>::new()
    );
}

#[test]
fn a_hand_edit_or_a_removed_field_is_drift_named_by_its_path() {
    let mut live = live_deployment();
    live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:latest");
    live["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("knowton.io/tenant");
    assert_eq!(
        drift(&live, &desired_deployment()),
        vec![
            ".metadata.labels[\"knowton.io/tenant\"]".to_owned(),
            ".spec.template.spec.containers[0].image".to_owned(),
        ]
    );
}

#[test]
fn field_changes_list_every_difference_with_both_values() {
    let before = live_deployment();
    let mut after = live_deployment();
    after["spec"]["template"]["spec"]["containers"][0]["image"] = json!("backend:1.1");
    after["metadata"]["resourceVersion"] = json!("43");
    after["spec"]["paused"] = json!(true);
    after["status"]["replicas"] = json!(3);
    assert_eq!(
        field_changes(&before, &after),
        vec![
            FieldChange {
                path: ".spec.paused".to_owned(),
                before: None,
                after: Some(json!(true)),
            },
            FieldChange {
                path: ".spec.template.spec.containers[0].image".to_owned(),
                before: Some(json!("backend:1.0")),
                after: Some(json!("backend:1.1")),
            },
        ]
    );
    assert!(field_changes(&before, &before).is_empty());
}

#[test]
fn secret_values_are_compared_as_stored_and_never_shown() {
    let desired = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tenant-secrets", "namespace": "ns"},
        "stringData": {"JWT_SECRET": "s3cret"},
    });
    let stored = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tenant-secrets", "namespace": "ns", "resourceVersion": "7"},
        "data": {"JWT_SECRET": "czNjcmV0"},
    });
    assert!(drift(&stored, &desired).is_empty());
    let mut changed = stored.clone();
    changed["data"]["JWT_SECRET"] = json!("b3RoZXI=");
    assert_eq!(
        drift(&changed, &desired),
        vec![".data.JWT_SECRET".to_owned()]
    );
    let changes = field_changes(&changed, &desired);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].before, Some(json!(HIDDEN)));
    assert_eq!(changes[0].after, Some(json!(HIDDEN)));
    let text = serde_json::to_string(&changes).unwrap();
    assert!(!text.contains("czNjcmV0") && !text.contains("s3cret"));
}

#[test]
fn quantities_compare_by_value() {
    for (a, b) in [
        ("1", "1000m"),
        ("1Gi", "1024Mi"),
        ("1Ti", "1024Gi"),
        ("0.5", "500m"),
    ] {
        assert!(same_quantity(&json!(a), &json!(b)), "{a} {b}");
    }
    for (a, b) in [("1", "2"), ("1Gi", "1G"), ("nginx", "nginx2")] {
        assert!(!same_quantity(&json!(a), &json!(b)), "{a} {b}");
    }
}
