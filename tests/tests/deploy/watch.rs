//! The drift watch's cache against the fake API server.

use super::*;

/// The drift watch's cache is filled by a list and kept by events (a hand
/// edit, a deletion), and holds neither managedFields nor status, which
/// drift is never judged on.
#[tokio::test]
async fn the_watch_cache_follows_the_cluster_without_managed_fields_or_status() {
    use knowton_common::{Branding, Plan};
    use knowton_coordinator::deploy::kinds::ObjectRef;
    use knowton_coordinator::deploy::watch::{LiveCache, watch_kind, watched};
    use knowton_coordinator::deploy::{ClusterSettings, TenantSecrets, TenantSpec, render};
    use tokio_stream::StreamExt;

    knowton_coordinator::certs::install_crypto_provider();
    let cluster = Cluster::start().await;
    let kube = knowton_coordinator::deploy::Cluster::connect(Some(&cluster.kubeconfig))
        .await
        .unwrap()
        .expect("a cluster configured");
    let spec = TenantSpec {
        id: uuid::Uuid::new_v4(),
        slug: "acme".to_owned(),
        plan: Plan::Basic,
        domain: "acme.knowton.example.com".to_owned(),
        features: Plan::Basic.features(),
        branding: Branding::default_for("acme"),
        allowlist: Vec::new(),
        stopped: false,
        min_replicas: None,
    };
    let secrets = TenantSecrets {
        database_password: "p".repeat(32),
        jwt_secret: "j".repeat(64),
    };
    let objects = render(&spec, &secrets, &ClusterSettings::default());
    kube.apply("acme", &objects).await.unwrap();
    cluster.roll_out("acme", "backend");

    let cache = std::sync::Arc::new(LiveCache::default());
    for kind in watched() {
        let events = watch_kind(kube.api_of(kind), kind, cache.clone());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while events.next().await.is_some() {}
        });
    }
    tokio::time::timeout(WAIT, cache.wait_until_ready())
        .await
        .expect("every kind listed");
    // Every object but the Secret, which is not watched.
    assert_eq!(
        cache.size().0,
        objects.iter().filter(|o| o["kind"] != "Secret").count(),
        "every watched object, nothing else"
    );

    let backend = |name: &str, kind: &str| ObjectRef {
        kind: kind.to_owned(),
        namespace: Some(ns("acme")),
        name: name.to_owned(),
    };
    let served = cluster.deployment("acme", "backend").unwrap();
    assert!(served["metadata"]["managedFields"].is_array());
    assert!(served["status"].is_object());
    let held = cache
        .get(&backend("backend", "Deployment"))
        .expect("cached");
    assert_eq!(held["metadata"].get("managedFields"), None, "{held:#}");
    assert_eq!(held.get("status"), None, "{held:#}");
    assert_eq!(held["spec"], served["spec"]);

    cluster.fake.edit(
        "apps/v1",
        "Deployment",
        Some(&ns("acme")),
        "frontend",
        |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil/miner:latest"),
    );
    cluster
        .fake
        .delete_object("v1", "Service", Some(&ns("acme")), "backend");
    eventually(WAIT, "the edit and the deletion in the cache", || async {
        let image = cache
            .get(&backend("frontend", "Deployment"))
            .map(|d| d["spec"]["template"]["spec"]["containers"][0]["image"].clone());
        (image == Some(json!("evil/miner:latest"))
            && cache.get(&backend("backend", "Service")).is_none())
        .then_some(())
    })
    .await;
    assert_eq!(
        cache.size().0,
        objects.iter().filter(|o| o["kind"] != "Secret").count() - 1
    );
}
