//! Each tenant's data in the cluster: its volume claim (the plan's size,
//! the configured class) mounted at /data by the backend, its database in
//! the backend's config; the claim grows with the plan, never shrinks, is
//! kept when the tenant is deprovisioned and deleted when it is purged.

use knowton_coordinator::tenant_data::database_name;

use super::*;

on_every_backend!(db:
    the_backend_mounts_a_claim_kept_when_deprovisioned_and_deleted_by_purge,
);

const CLAIM: &str = "tenant-data";

fn claim(cluster: &Cluster, slug: &str) -> Option<Value> {
    cluster
        .fake
        .object("v1", "PersistentVolumeClaim", Some(&ns(slug)), CLAIM)
}

fn size(claim: &Value) -> &str {
    claim["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .unwrap()
}

/// Changes the tenant's plan and waits for the deployment to end.
async fn change_plan(kt: &TestCoordinator, cluster: &Cluster, slug: &str, plan: &str) -> Value {
    let reply = kt
        .admin(
            Method::PUT,
            &format!("/api/v1/tenants/{slug}"),
            Some(json!({"plan": plan})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    eventually(WAIT, &format!("{slug} deployed as {plan}"), || async {
        let view = deployment_of(kt, slug).await;
        if view["phase"] == "waiting" {
            cluster.roll_out_all(slug);
        }
        let deployed = cluster
            .deployment(slug, "backend")
            .is_some_and(|d| d["metadata"]["labels"]["knowton.io/plan"] == plan);
        (deployed && ["ready", "failed"].iter().any(|p| view["phase"] == *p)).then_some(view)
    })
    .await
}

async fn the_backend_mounts_a_claim_kept_when_deprovisioned_and_deleted_by_purge(db: Db) {
    let cluster = Cluster::start().await;
    // The tenants' database server when there is one (roles and databases
    // are the server's: a slug of this run's own).
    let server = knowton_tests::postgres_url();
    let slug = format!("vol-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let kt = TestCoordinator::start_and(db, |args| {
        cluster.configure(args);
        args.kube.cluster.tenant_storage_class = Some("fast-ssd".to_owned());
        if let Some(server) = &server {
            args.tenant_data.tenant_database_url = Some(server.clone());
            args.kube.cluster.tenant_database_host = Some("tenants-db.databases.svc".to_owned());
        }
    })
    .await;
    cluster.provisioned(&kt, &slug, "professional").await;

    let made = claim(&cluster, &slug).expect("the claim is applied");
    assert_eq!(size(&made), "100Gi", "the professional plan's storage");
    assert_eq!(made["spec"]["storageClassName"], "fast-ssd");
    assert_eq!(made["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    let uid = made["metadata"]["uid"].clone();
    let backend = cluster.deployment(&slug, "backend").unwrap();
    let pod = &backend["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(
        volumes.contains(&json!({"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}})),
        "{pod:#}"
    );
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.contains(&json!({"name": "data", "mountPath": "/data"})),
        "{pod:#}"
    );
    // One node may mount it: one replica, replaced rather than rolled.
    assert_eq!(backend["spec"]["replicas"], 1);
    assert_eq!(backend["spec"]["strategy"]["type"], "Recreate");
    let config = cluster
        .fake
        .object("v1", "ConfigMap", Some(&ns(&slug)), "tenant-config")
        .unwrap();
    let data = config["data"].as_object().unwrap();
    if server.is_some() {
        assert_eq!(data["DATABASE_HOST"], "tenants-db.databases.svc");
        assert_eq!(data["DATABASE_NAME"], database_name(&slug).as_str());
        assert_eq!(data["DATABASE_USER"], database_name(&slug).as_str());
        assert!(
            data["DATABASE_PORT"]
                .as_str()
                .unwrap()
                .parse::<u16>()
                .is_ok()
        );
    } else {
        eprintln!("TEST_DATABASE_URL is not set: tenants have no database here");
        assert!(data.keys().all(|k| !k.starts_with("DATABASE_")), "{data:?}");
    }

    // A bigger plan grows the claim; a smaller one leaves it as it is (the
    // API server refuses to shrink a claim) and still deploys.
    change_plan(&kt, &cluster, &slug, "enterprise").await;
    assert_eq!(size(&claim(&cluster, &slug).unwrap()), "1Ti");
    let view = change_plan(&kt, &cluster, &slug, "basic").await;
    assert_eq!(view["phase"], "ready", "{view:#}");
    let kept = claim(&cluster, &slug).unwrap();
    assert_eq!(size(&kept), "1Ti", "a claim never shrinks");
    assert_eq!(kept["metadata"]["uid"], uid, "the same claim");
    assert!(events(&view, "drift").is_empty(), "{view:#}");

    // A claim of the tenant's that its rendering lacks is not pruned.
    cluster.fake.put_object(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "older-data", "namespace": ns(&slug), "labels": {
            "knowton.io/tenant": slug, "app.kubernetes.io/managed-by": "knowton-coordinator",
        }},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }));

    // Deprovisioned: scaled to zero, the claim and its data kept.
    let reply = kt
        .admin(Method::DELETE, &format!("/api/v1/tenants/{slug}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let stopped = eventually(WAIT, "the deprovisioning deployed", || async {
        let view = deployment_of(&kt, &slug).await;
        if view["phase"] == "waiting" {
            cluster.roll_out_all(&slug);
        }
        (view["phase"] == "ready" && view["trigger"] == "deprovisioned").then_some(view)
    })
    .await;
    assert!(
        stopped["reason"].as_str().unwrap().contains("data kept"),
        "{stopped:#}"
    );
    assert_eq!(
        cluster.deployment(&slug, "backend").unwrap()["spec"]["replicas"],
        0
    );
    let kept = claim(&cluster, &slug).expect("the claim is kept");
    assert_eq!(kept["metadata"]["uid"], uid);
    let claims = cluster
        .fake
        .objects("v1", "PersistentVolumeClaim", Some(&ns(&slug)));
    assert_eq!(claims.len(), 2, "nothing pruned: {claims:#?}");
    // A manual redeploy of the stopped tenant keeps it as well.
    kt.admin(
        Method::POST,
        &format!("/api/v1/tenants/{slug}/deploy"),
        None,
    )
    .await;
    let redeployed = until_settled(&kt, &slug).await;
    assert_eq!(redeployed["phase"], "ready", "{redeployed:#}");
    assert_eq!(claim(&cluster, &slug).unwrap()["metadata"]["uid"], uid);

    // Purged: the namespace goes, and the claim with it.
    let reply = kt
        .admin(
            Method::DELETE,
            &format!("/api/v1/tenants/{slug}?purge=true"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    eventually(WAIT, "the claim to be gone", || async {
        cluster
            .fake
            .objects("v1", "PersistentVolumeClaim", Some(&ns(&slug)))
            .is_empty()
            .then_some(())
    })
    .await;
    kt.stop().await;
}
