//! Scaling: sustained critical response times raise the minimum replicas,
//! calm lowers them.

use knowton_tests::feed::{Feed, Shape, healthy};

use super::*;

/// Feeds the tenant's two pods every 100 ms, slow while `slow` says so.
fn feed(
    kt: &TestCoordinator,
    slug: &str,
    slow: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut feed = Feed::new(kt, "node-a");
    let slug = slug.to_owned();
    tokio::spawn(async move {
        // An agent's probe interval, shortened.
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            let results = ["p-0", "p-1"]
                .into_iter()
                .map(|pod| {
                    let result = healthy(&slug, pod);
                    if *slow.borrow() {
                        result.slow(9_000)
                    } else {
                        result
                    }
                })
                .collect();
            feed.send(results);
        }
    })
}

fn min_replicas(cluster: &Cluster, slug: &str) -> Value {
    cluster
        .fake
        .object(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            Some(&ns(slug)),
            "backend",
        )
        .unwrap()["spec"]["minReplicas"]
        .clone()
}

async fn sustained_critical_response_time_raises_min_replicas_and_calm_lowers_it(db: Db) {
    let cluster = Cluster::start().await;
    let kt = TestCoordinator::start_and(db, |args| {
        cluster.configure(args);
        // Scaling needs a volume every node may mount (one replica
        // otherwise).
        args.kube.cluster.tenant_storage_access_mode =
            knowton_coordinator::deploy::volume::AccessMode::ReadWriteMany;
        args.kube.scale_after_seconds = 1;
        args.kube.scale_calm_seconds = 1;
        args.kube.scale_check_seconds = 1;
        args.alerting.health_sweep_seconds = 1;
    })
    .await;
    kt.provision("pied", "basic").await;
    until_phase(&kt, "pied", 1, "waiting").await;
    cluster.roll_out_all("pied");
    // The fed pods run on the feeding agent's node: with a cluster, the
    // coordinator takes results only for those.
    for (pod, ip) in [("p-0", "10.0.0.10"), ("p-1", "10.0.0.11")] {
        cluster.fake.put_pod(
            knowton_tests::fake_kube::TestPod::new(&ns("pied"), pod)
                .tenant("pied")
                .on("node-a")
                .running(ip)
                .json(),
        );
    }
    let (slow, slow_rx) = tokio::sync::watch::channel(false);
    let feeding = feed(&kt, "pied", slow_rx);
    until_phase(&kt, "pied", 1, "ready").await;
    assert_eq!(min_replicas(&cluster, "pied"), 2);

    slow.send_replace(true);
    let view = eventually(WAIT, "a scale-up deployed", || async {
        let view = deployment_of(&kt, "pied").await;
        (view["minReplicas"] == 3 && view["trigger"] == "scaled").then_some(view)
    })
    .await;
    assert!(
        events(&view, "scale")
            .iter()
            .any(|e| e.contains("minReplicas 2 -> 3")),
        "{view:#}"
    );
    eventually(WAIT, "the autoscaler's floor raised", || async {
        (min_replicas(&cluster, "pied") == 3).then_some(())
    })
    .await;
    let dashboard = kt
        .http
        .get(kt.url("/api/v1/monitoring/dashboard"))
        .bearer_auth(knowton_tests::ADMIN_TOKEN)
        .header("X-Tenant-Slug", "pied")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        dashboard["deployment"]["minReplicas"]
            .as_i64()
            .map(|n| n >= 3),
        Some(true),
        "{dashboard:#}"
    );
    assert_eq!(dashboard["deployment"]["scaled"], true);

    // The basic plan's maximum (4) is never passed however long it lasts.
    eventually(WAIT, "the plan's maximum", || async {
        (min_replicas(&cluster, "pied") == 4).then_some(())
    })
    .await;

    slow.send_replace(false);
    eventually(WAIT, "back to the plan's minimum", || async {
        let view = deployment_of(&kt, "pied").await;
        (view.get("minReplicas").is_none() && min_replicas(&cluster, "pied") == 2).then_some(())
    })
    .await;
    let view = deployment_of(&kt, "pied").await;
    assert!(
        events(&view, "scale")
            .iter()
            .any(|e| e.contains("-> 2: response time fine")),
        "{view:#}"
    );
    feeding.abort();
    kt.stop().await;
}

on_every_backend!(db: sustained_critical_response_time_raises_min_replicas_and_calm_lowers_it);
