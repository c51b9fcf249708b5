//! Provisioning deploys and waits for the rollout; rollouts that fail;
//! server dry-runs; a Secret refused until its RoleBinding is seen.

use super::*;

on_every_backend!(db:
    provisioning_deploys_waits_for_the_rollout_and_records_every_phase,
    rollouts_fail_on_progress_deadline_and_on_timeout,
    server_dry_run_previews_a_new_namespace_and_field_changes_storing_nothing,
);

async fn provisioning_deploys_waits_for_the_rollout_and_records_every_phase(db: Db) {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator(db).await;
    kt.provision("acme", "professional").await;

    let waiting = until_phase(&kt, "acme", 1, "waiting").await;
    assert_eq!(waiting["trigger"], "provisioned");
    assert_eq!(waiting["cluster"], true);
    let mut kinds = cluster.kinds_in("acme");
    kinds.sort();
    // One backend replica on its volume: no autoscaler, no disruption
    // budget (README, "Tenant data in the cluster").
    assert_eq!(kinds.len(), 13, "{kinds:?}");
    assert!(kinds.contains(&"PersistentVolumeClaim".to_owned()));
    let namespace = cluster
        .fake
        .object("v1", "Namespace", None, "knowton-tenant-acme")
        .expect("namespace created");
    assert_eq!(namespace["metadata"]["labels"]["knowton.io/tenant"], "acme");
    let backend = cluster.deployment("acme", "backend").unwrap();
    let managers: Vec<&str> = backend["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["knowton-coordinator"], "one field manager");
    let secret = cluster
        .fake
        .object(
            "v1",
            "Secret",
            Some("knowton-tenant-acme"),
            "tenant-secrets",
        )
        .unwrap();
    assert!(
        secret.get("data").or(secret.get("stringData")).is_some(),
        "the secrets are in the cluster: {secret}"
    );

    // Nothing moves until the controller reports the rollout.
    assert_eq!(deployment_of(&kt, "acme").await["phase"], "waiting");
    cluster.roll_out_all("acme");
    let ready = until_phase(&kt, "acme", 1, "ready").await;
    assert_eq!(
        ready["reason"], "health not verified: no agent is connected",
        "{ready:#}"
    );
    for key in [
        "requestedAt",
        "startedAt",
        "updatedAt",
        "finishedAt",
        "objectsHash",
    ] {
        assert!(ready[key].is_string(), "{key}: {ready:#}");
    }
    let phases = events(&ready, "phase");
    for phase in ["applying", "waiting", "verifying", "ready"] {
        assert!(
            phases.iter().any(|p| p.starts_with(phase)),
            "{phase} missing from {phases:?}"
        );
    }
    // The hash is that of what a client dry-run shows.
    let preview = dry_run(&kt, "acme", "client").await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert_eq!(preview.body["objectsHash"], ready["objectsHash"]);
    assert!(
        !preview.body["yaml"]
            .as_str()
            .unwrap()
            .contains(secret_value(&secret).as_str())
    );

    // A plan change deploys again: the quota follows.
    let reply = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(json!({"plan": "enterprise"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    until_phase(&kt, "acme", 2, "waiting").await;
    let quota = cluster
        .fake
        .object(
            "v1",
            "ResourceQuota",
            Some("knowton-tenant-acme"),
            "tenant-quota",
        )
        .unwrap();
    assert_eq!(quota["spec"]["hard"]["requests.storage"], "1Ti");
    cluster.roll_out_all("acme");
    let ready = until_phase(&kt, "acme", 2, "ready").await;
    assert_eq!(ready["trigger"], "updated");
    kt.stop().await;
}

/// One of the secret's values as the fake stores it, to check it is
/// never shown.
fn secret_value(secret: &Value) -> String {
    let field = secret.get("data").or(secret.get("stringData")).unwrap();
    field
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

async fn rollouts_fail_on_progress_deadline_and_on_timeout(db: Db) {
    let cluster = Cluster::start().await;
    let kt = TestCoordinator::start_and(db, |args| {
        cluster.configure(args);
        args.kube.rollout_timeout_seconds = 2;
    })
    .await;
    kt.provision("stuck", "basic").await;
    until_phase(&kt, "stuck", 1, "waiting").await;
    let generation = cluster.deployment("stuck", "backend").unwrap()["metadata"]["generation"]
        .as_i64()
        .unwrap();
    cluster.fake.set_status(
        "apps/v1",
        "Deployment",
        "knowton-tenant-stuck",
        "backend",
        json!({
            "observedGeneration": generation, "replicas": 1, "updatedReplicas": 0,
            "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"backend-7d9\" has timed out progressing."}],
        }),
    );
    let failed = until_phase(&kt, "stuck", 1, "failed").await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("backend") && reason.contains("progress deadline exceeded"),
        "{reason}"
    );

    // Nobody reports anything: the overall timeout ends it, naming what it
    // waited for. The stalled status goes in before the retry, which would
    // otherwise read the progress deadline still there and fail on it.
    cluster.fake.set_status(
        "apps/v1",
        "Deployment",
        "knowton-tenant-stuck",
        "backend",
        json!({"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0}),
    );
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants/stuck/deploy", None)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let failed = until_phase(&kt, "stuck", 2, "failed").await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("did not complete within") && reason.contains("0 of 1"),
        "{reason}"
    );
    assert_eq!(failed["trigger"], "manual");
    kt.stop().await;
}

async fn server_dry_run_previews_a_new_namespace_and_field_changes_storing_nothing(db: Db) {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator(db).await;
    // Applying fails at the namespace: nothing exists in the cluster. The
    // controller's first reconcile may deploy the new tenant before its
    // provisioning request does, and the request then deploys again: every
    // attempt fails until the test says otherwise, and the wait is for the
    // outcome, not for attempt 1's phase that attempt 2 may replace.
    let namespace_path = "/namespaces/knowton-tenant-globex";
    cluster.fake.fail_every("PATCH", namespace_path, 500);
    kt.provision("globex", "professional").await;
    let failed = until_settled(&kt, "globex").await;
    assert_eq!(failed["phase"], "failed", "{failed:#}");
    let first = failed["attempt"].as_i64().unwrap();
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("Namespace knowton-tenant-globex") && reason.contains("500"),
        "the failed object is named: {reason}"
    );
    assert!(cluster.kinds_in("globex").is_empty());
    cluster.fake.stop_failing("PATCH", namespace_path);

    let before = cluster.fake.resource_version();
    let preview = dry_run(&kt, "globex", "server").await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let changes = preview.body["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 15, "{changes:#?}");
    assert!(
        changes.iter().all(|c| c["action"] == "create"),
        "{changes:#?}"
    );
    assert!(
        changes[1]["note"].as_str().unwrap().contains("namespace"),
        "{:#}",
        changes[1]
    );
    assert_eq!(
        cluster.fake.resource_version(),
        before,
        "a dry-run stores nothing"
    );
    assert!(cluster.kinds_in("globex").is_empty());

    // A retry converges.
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants/globex/deploy", None)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    until_phase(&kt, "globex", first + 1, "waiting").await;
    cluster.roll_out_all("globex");
    until_phase(&kt, "globex", first + 1, "ready").await;

    // Everything as applied: unchanged.
    let preview = dry_run(&kt, "globex", "server").await;
    let actions: Vec<&str> = preview.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.iter().all(|a| *a == "unchanged"),
        "{:#}",
        preview.body
    );
    kt.admin(
        Method::PUT,
        "/api/v1/tenants/globex",
        Some(json!({"branding": {"primaryColor": "#abcdef"}})),
    )
    .await;
    until_phase(&kt, "globex", first + 2, "waiting").await;
    cluster.roll_out_all("globex");
    until_phase(&kt, "globex", first + 2, "ready").await;
    // A new allowlist whose deployment fails at the ingress: the cluster
    // holds the old ingress, and the dry-run names the field that differs.
    cluster.fake.fail_next(
        "PATCH",
        "/namespaces/knowton-tenant-globex/ingresses/tenant",
        500,
        1,
    );
    let reply = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/globex/deployment",
            Some(json!({"allowlist": ["203.0.113.0/24"]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["allowlist"], json!(["203.0.113.0/24"]));
    until_phase(&kt, "globex", first + 3, "failed").await;
    let preview = dry_run(&kt, "globex", "server").await;
    let changes = preview.body["changes"].as_array().unwrap();
    let changed: Vec<&Value> = changes
        .iter()
        .filter(|c| c["action"] != "unchanged")
        .collect();
    assert_eq!(changed.len(), 1, "{changes:#?}");
    assert_eq!(changed[0]["kind"], "Ingress");
    assert_eq!(changed[0]["action"], "change");
    assert_eq!(
        changed[0]["fields"],
        json!([{
            "path": ".metadata.annotations[\"nginx.ingress.kubernetes.io/whitelist-source-range\"]",
            "before": null,
            "after": "203.0.113.0/24",
        }])
    );
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants/globex/deploy", None)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    until_phase(&kt, "globex", first + 4, "ready").await;
    let ingress = cluster
        .fake
        .object(
            "networking.k8s.io/v1",
            "Ingress",
            Some("knowton-tenant-globex"),
            "tenant",
        )
        .unwrap();
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/whitelist-source-range"],
        "203.0.113.0/24"
    );
    kt.stop().await;
}

/// The coordinator's rights on a tenant's Secrets come from the RoleBinding
/// it applies just before them; an API server whose authorizer has not seen
/// that binding yet refuses the Secret (403) for a moment, which the first
/// deployment rides out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_forbidden_until_its_rolebinding_is_seen_is_applied_all_the_same() {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator(Db::Sqlite).await;
    cluster.fake.fail_next(
        "PATCH",
        "/namespaces/knowton-tenant-wonka/secrets/tenant-secrets",
        403,
        2,
    );
    cluster.provisioned(&kt, "wonka", "basic").await;
    let binding = cluster
        .fake
        .object(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            Some("knowton-tenant-wonka"),
            "knowton-coordinator",
        )
        .expect("the tenant namespace's RoleBinding");
    assert_eq!(binding["roleRef"]["name"], "knowton-tenant-manager");
    assert!(
        cluster
            .fake
            .object(
                "v1",
                "Secret",
                Some("knowton-tenant-wonka"),
                "tenant-secrets"
            )
            .is_some()
    );
    kt.stop().await;
}
