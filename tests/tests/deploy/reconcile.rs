//! The periodic drift check of an unchanged tenant reads the watch's cache,
//! not the API server.

use super::*;

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The periodic drift check of an unchanged tenant reads the watch's
/// cache: no request for any of its objects reaches the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_check_of_an_unchanged_tenant_reads_only_its_secret() {
    let cluster = Cluster::start().await;
    let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
        cluster.configure(args);
        args.kube.reconcile_seconds = 1;
    })
    .await;
    cluster.provisioned(&kt, "calm", "basic").await;
    // Reads of single objects (not watches) in the tenant's namespace,
    // of Secrets or of anything else.
    let object_reads = |secrets: bool| {
        cluster
            .fake
            .requests()
            .iter()
            .filter(|r| {
                r.starts_with("GET ")
                    && r.contains("/namespaces/knowton-tenant-calm/")
                    && !r.contains("watch=")
                    && r.contains("/secrets/") == secrets
            })
            .count()
    };
    let metrics = || kt.scrape();
    let checks = metric(&metrics().await, "knowton_drift_checks_total");
    let (reads, secret_reads) = (object_reads(false), object_reads(true));
    // A check is counted as it starts, before it reads the Secret: wait
    // for both.
    eventually(
        WAIT,
        "two more periodic drift checks, each reading the Secret",
        || async {
            (metric(&metrics().await, "knowton_drift_checks_total") >= checks + 2
                && object_reads(true) >= secret_reads + 2)
                .then_some(())
        },
    )
    .await;
    // Everything else comes from the watch cache; the Secret, which the
    // coordinator may not watch cluster-wide, is read in its namespace.
    assert_eq!(object_reads(false), reads, "{:#?}", cluster.fake.requests());
    assert_eq!(deployment_of(&kt, "calm").await["attempt"], 1);

    // So a hand edit of the Secret is found and repaired all the same.
    cluster.fake.edit(
        "v1",
        "Secret",
        Some("knowton-tenant-calm"),
        "tenant-secrets",
        |s| s["data"]["JWT_SECRET"] = json!("c3RvbGVu"),
    );
    let view = eventually(WAIT, "the Secret restored", || async {
        let view = deployment_of(&kt, "calm").await;
        events(&view, "drift")
            .join("; ")
            .contains("restored Secret knowton-tenant-calm/tenant-secrets")
            .then_some(view)
    })
    .await;
    let drift = events(&view, "drift").join("; ");
    assert!(!drift.contains("c3RvbGVu"), "{drift}");
    let secret = cluster
        .fake
        .object(
            "v1",
            "Secret",
            Some("knowton-tenant-calm"),
            "tenant-secrets",
        )
        .unwrap();
    assert_ne!(secret["data"]["JWT_SECRET"], "c3RvbGVu");
    kt.stop().await;
}
