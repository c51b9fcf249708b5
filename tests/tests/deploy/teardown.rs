//! Deprovisioning and purge, drift repaired as it happens, and a failure
//! mid-apply that a retry converges.

use super::*;

on_every_backend!(db:
    deprovision_scales_to_zero_keeping_data_and_purge_deletes_the_namespace,
    drift_is_repaired_as_it_happens_and_recorded,
    a_failure_mid_apply_names_the_object_prunes_nothing_and_a_retry_converges,
);

async fn deprovision_scales_to_zero_keeping_data_and_purge_deletes_the_namespace(db: Db) {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator_with_shared_volumes(db).await;
    cluster.provisioned(&kt, "initech", "professional").await;
    // An object of the tenant's that its rendering does not contain (left
    // by an older version) is pruned; one without the labels is not ours.
    let labels = json!({"knowton.io/tenant": "initech", "app.kubernetes.io/managed-by": "knowton-coordinator"});
    for (name, labels) in [("old-config", labels), ("someone-elses", json!({}))] {
        cluster.fake.put_object(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "knowton-tenant-initech", "labels": labels},
            "data": {"k": "v"},
        }));
    }

    let reply = kt
        .admin(Method::DELETE, "/api/v1/tenants/initech", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    until_phase(&kt, "initech", 2, "waiting").await;
    for name in ["backend", "frontend"] {
        assert_eq!(
            cluster.deployment("initech", name).unwrap()["spec"]["replicas"],
            0
        );
    }
    let mut kinds = cluster.kinds_in("initech");
    kinds.sort();
    for gone in ["Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"] {
        assert!(
            !kinds.contains(&gone.to_owned()),
            "{gone} pruned: {kinds:?}"
        );
    }
    let config_maps: Vec<String> = cluster
        .fake
        .objects("v1", "ConfigMap", Some("knowton-tenant-initech"))
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        config_maps.contains(&"someone-elses".to_owned()),
        "{config_maps:?}"
    );
    assert!(
        !config_maps.contains(&"old-config".to_owned()),
        "{config_maps:?}"
    );
    assert!(
        config_maps.contains(&"tenant-config".to_owned()),
        "data kept"
    );
    cluster.roll_out_all("initech");
    let ready = until_phase(&kt, "initech", 2, "ready").await;
    assert!(ready["reason"].as_str().unwrap().contains("scaled to zero"));
    assert!(
        events(&ready, "prune")
            .iter()
            .any(|e| e.contains("ConfigMap knowton-tenant-initech/old-config")),
        "{ready:#}"
    );
    assert!(
        cluster
            .fake
            .object("v1", "Namespace", None, "knowton-tenant-initech")
            .is_some()
    );

    // Purging refuses to leave the cluster behind: when the API server
    // fails, nothing is purged.
    cluster
        .fake
        .fail_next("DELETE", "/namespaces/knowton-tenant-initech", 500, 1);
    let reply = kt
        .admin(Method::DELETE, "/api/v1/tenants/initech?purge=true", None)
        .await;
    let (code, _) = reply.error(StatusCode::BAD_GATEWAY);
    assert_eq!(code, "cluster_error");
    assert_eq!(
        kt.admin(Method::GET, "/api/v1/tenants/initech", None)
            .await
            .status,
        StatusCode::OK
    );
    let reply = kt
        .admin(Method::DELETE, "/api/v1/tenants/initech?purge=true", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    eventually(WAIT, "the namespace and its content to be gone", || async {
        let gone = cluster
            .fake
            .object("v1", "Namespace", None, "knowton-tenant-initech")
            .is_none()
            && cluster.kinds_in("initech").is_empty();
        gone.then_some(())
    })
    .await;
    assert_eq!(
        kt.admin(Method::GET, "/api/v1/tenants/initech", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    kt.stop().await;
}

async fn drift_is_repaired_as_it_happens_and_recorded(db: Db) {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator(db).await;
    cluster.provisioned(&kt, "hooli", "basic").await;

    cluster.fake.edit(
        "apps/v1",
        "Deployment",
        Some("knowton-tenant-hooli"),
        "frontend",
        |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil/miner:latest"),
    );
    cluster
        .fake
        .delete_object("v1", "Service", Some("knowton-tenant-hooli"), "backend");
    let view = eventually(WAIT, "both repairs recorded", || async {
        let view = deployment_of(&kt, "hooli").await;
        let drift = events(&view, "drift").join("; ");
        (drift.contains("restored Deployment knowton-tenant-hooli/frontend")
            && drift.contains("re-created Service knowton-tenant-hooli/backend"))
        .then_some(view)
    })
    .await;
    let drift = events(&view, "drift").join("; ");
    assert!(drift.contains(".spec.template.spec.containers"), "{drift}");
    let image =
        cluster.deployment("hooli", "frontend").unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["image"]
            .clone();
    assert_eq!(image, "ghcr.io/knowton/frontend:latest");
    assert!(
        cluster
            .fake
            .object("v1", "Service", Some("knowton-tenant-hooli"), "backend")
            .is_some()
    );
    assert_eq!(view["phase"], "ready", "a repair is not a new deployment");
    assert_eq!(view["attempt"], 1);
    let metrics = kt.scrape().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("knowton_drift_repairs_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    kt.stop().await;
}

async fn a_failure_mid_apply_names_the_object_prunes_nothing_and_a_retry_converges(db: Db) {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator_with_shared_volumes(db).await;
    cluster.provisioned(&kt, "umbrella", "professional").await;

    // Deprovisioning would prune the ingress, autoscaler and budget; the
    // API server refuses the frontend's apply halfway: nothing is pruned.
    for (code, attempt) in [(422, 2), (409, 3)] {
        cluster.fake.fail_next(
            "PATCH",
            "/namespaces/knowton-tenant-umbrella/deployments/frontend",
            code,
            1,
        );
        if attempt == 2 {
            kt.admin(Method::DELETE, "/api/v1/tenants/umbrella", None)
                .await;
        } else {
            kt.admin(Method::POST, "/api/v1/tenants/umbrella/deploy", None)
                .await;
        }
        let failed = until_phase(&kt, "umbrella", attempt, "failed").await;
        let reason = failed["reason"].as_str().unwrap();
        assert!(
            reason.contains("Deployment knowton-tenant-umbrella/frontend")
                && reason.contains(&code.to_string()),
            "{reason}"
        );
        let kinds = cluster.kinds_in("umbrella");
        for kept in ["Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"] {
            assert!(
                kinds.contains(&kept.to_owned()),
                "{kept} not pruned: {kinds:?}"
            );
        }
    }
    kt.admin(Method::POST, "/api/v1/tenants/umbrella/deploy", None)
        .await;
    until_phase(&kt, "umbrella", 4, "waiting").await;
    cluster.roll_out_all("umbrella");
    until_phase(&kt, "umbrella", 4, "ready").await;
    assert!(!cluster.kinds_in("umbrella").contains(&"Ingress".to_owned()));
    kt.stop().await;
}
