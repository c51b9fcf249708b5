//! Purging tenants whose retention ended is the same purge as
//! `DELETE ?purge=true`: the namespace with everything in it, then the
//! rows (it once deleted the rows only, leaving the namespace behind).
//! Against the fake Kubernetes API server.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_tenant_is_purged_with_its_namespace() {
    let cluster = Cluster::start().await;
    let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
        cluster.configure(args);
        args.retention_days = 1;
    })
    .await;
    let namespace = |slug: &str| cluster.fake.object("v1", "Namespace", None, &ns(slug));

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
