//! Purging tenants whose retention ended is the same purge as
//! `DELETE ?purge=true`: the namespace with everything in it, then the
//! rows (it once deleted the rows only, leaving the namespace behind).
//! Against the fake Kubernetes API server.

use std::time::Duration;

use knowton_tests::fake_kube::FakeKube;
use knowton_tests::{Db, TestCoordinator, eventually};
use reqwest::{Method, StatusCode};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_tenant_is_purged_with_its_namespace() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
        args.kube.no_cluster = false;
        args.kube.kubeconfig = Some(kubeconfig.clone());
        args.kube.no_leader_election = true;
        args.kube.reconcile_seconds = 3600;
        args.retention_days = 1;
    })
    .await;
    let namespace =
        |slug: &str| fake.object("v1", "Namespace", None, &format!("knowton-tenant-{slug}"));

    kt.provision("expiring", "basic").await;
    kt.provision("kept", "basic").await;
    eventually(WAIT, "both namespaces", || async {
        (namespace("expiring").is_some() && namespace("kept").is_some()).then_some(())
    })
    .await;
    let reply = kt
        .admin(Method::DELETE, "/api/v1/tenants/expiring", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // Not expired yet: nothing purged.
    let lifecycle = kt.running_state().service;
    let now = chrono::Utc::now();
    assert_eq!(lifecycle.purge_expired(now).await.unwrap(), 0);
    assert!(namespace("expiring").is_some());

    // Two days on, the retention of one day is over.
    let later = now + chrono::TimeDelta::days(2);
    assert_eq!(lifecycle.purge_expired(later).await.unwrap(), 1);
    eventually(
        WAIT,
        "the expired tenant's namespace to be gone",
        || async { namespace("expiring").is_none().then_some(()) },
    )
    .await;
    assert_eq!(
        kt.admin(Method::GET, "/api/v1/tenants/expiring", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // The active tenant keeps everything.
    assert!(namespace("kept").is_some());
    assert_eq!(
        kt.admin(Method::GET, "/api/v1/tenants/kept", None)
            .await
            .status,
        StatusCode::OK
    );
    kt.stop().await;
}
