//! Every replica sees everything: what is changed through one coordinator
//! replica takes effect on the others at once (PostgreSQL `NOTIFY`), with
//! the periodic re-read as the safety net.

use std::time::Duration;

use knowton_common::Plan;
use knowton_coordinator::ingest::rejected::RejectedResult;
use knowton_coordinator::server::Running;
use knowton_coordinator::store::{Backend, Change};
use knowton_tests::feed::{Feed, Shape, healthy};
use knowton_tests::process::tenant_health;
use knowton_tests::{ADMIN_TOKEN, Db, TestCoordinator, TestDb, eventually, on_postgres};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The bound for a change to reach every replica.
const WITHIN: Duration = Duration::from_secs(2);

on_postgres!(
    a_change_through_one_replica_takes_effect_on_the_other_at_once,
    installations_sharing_a_database_do_not_hear_each_other,
);

/// `NOTIFY` reaches every session of a database, whatever its schema: two
/// installations (or two test runs) in schemas of one database must not
/// apply each other's changes. Announcements arrive in commit order, so
/// the listener's first one being its own proves it heard nothing of the
/// other's, made before.
async fn installations_sharing_a_database_do_not_hear_each_other(db: Db) {
    let ours = TestDb::new(db).await;
    let theirs = TestDb::new(db).await;
    let open = |url: String| async move { Backend::from_url(&url).unwrap().open().await.unwrap() };
    let (ours_store, theirs_store) = (open(ours.url.clone()).await, open(theirs.url.clone()).await);
    let mut listener = ours_store
        .listen()
        .await
        .unwrap()
        .expect("PostgreSQL listens");
    let tenant = Change::Tenant {
        id: uuid::Uuid::now_v7(),
        slug: "acme".to_owned(),
    };
    theirs_store.announce(&tenant).await.unwrap();
    ours_store.announce(&Change::Silences).await.unwrap();
    let first = tokio::time::timeout(WITHIN, listener.next())
        .await
        .expect("our own announcement arrives")
        .unwrap();
    assert_eq!(first, Some(Change::Silences));
    // In its own schema, it is heard.
    let mut theirs_listener = theirs_store.listen().await.unwrap().unwrap();
    theirs_store.announce(&tenant).await.unwrap();
    let heard = tokio::time::timeout(WITHIN, theirs_listener.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard, Some(tenant));
    // A listener holds a connection of its pool: gone before the pool closes.
    drop((listener, theirs_listener));
    ours_store.close().await;
    theirs_store.close().await;
}

/// A second replica on `a`'s database, re-reading everything only every
/// hour: what reaches it within [`WITHIN`] came by announcement.
async fn second_replica(a: &TestCoordinator) -> (Running, String) {
    a.another_replica(|args| args.leader.replica_resync_seconds = 3600)
        .await
}

fn storage_state(view: &Value) -> Option<&str> {
    view["checks"]
        .as_array()?
        .iter()
        .find(|c| c["check"] == "storage")?["state"]
        .as_str()
}

async fn a_change_through_one_replica_takes_effect_on_the_other_at_once(db: Db) {
    let a = TestCoordinator::start_and(db, |args| {
        args.leader.replica_resync_seconds = 3600;
    })
    .await;
    let (b, base_b) = second_replica(&a).await;
    let http = reqwest::Client::new();
    assert_eq!(
        tenant_health(&http, &base_b, "acme").await.0,
        StatusCode::NOT_FOUND
    );

    // Provisioned through a: b serves its health and takes its results.
    a.provision("acme", "basic").await;
    eventually(WITHIN, "b to know the tenant", || async {
        (tenant_health(&http, &base_b, "acme").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let mut feed_b = Feed::on(b.state.clone(), "node-a");
    let used = Plan::Basic.limits().storage_bytes / 100 * 96;
    feed_b.send(vec![healthy("acme", "web-0").storage(used)]);
    eventually(WITHIN, "b to judge the basic plan's storage", || async {
        let (_, view) = tenant_health(&http, &base_b, "acme").await;
        (storage_state(&view) == Some("critical")).then_some(())
    })
    .await;

    // The plan changes through a: b judges by the new plan's storage.
    let reply = a
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(json!({"plan": "enterprise"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    eventually(
        WITHIN,
        "b to judge the enterprise plan's storage",
        || async {
            let (_, view) = tenant_health(&http, &base_b, "acme").await;
            (storage_state(&view) == Some("ok")).then_some(())
        },
    )
    .await;

    // Thresholds set through b reach a's engine (the pod uses 0.94% of
    // the enterprise plan's storage).
    let mut feed_a = Feed::new(&a, "node-a");
    feed_a.send(vec![healthy("acme", "web-0").storage(used)]);
    eventually(WITHIN, "a to evaluate the tenant", || async {
        let (_, view) = tenant_health(&a.http, &a.base, "acme").await;
        (storage_state(&view) == Some("ok")).then_some(())
    })
    .await;
    let reply = http
        .put(format!("{base_b}/api/v1/tenants/acme/thresholds"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"storagePercent": {"warning": 0.5, "critical": 0.9}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.status(),
        StatusCode::OK,
        "{}",
        reply.text().await.unwrap()
    );
    eventually(WITHIN, "a to judge by b's thresholds", || async {
        let (_, view) = tenant_health(&a.http, &a.base, "acme").await;
        (storage_state(&view) == Some("critical")).then_some(())
    })
    .await;

    // Deprovisioned through b: neither serves it or keeps its results.
    let reply = http
        .delete(format!("{base_b}/api/v1/tenants/acme"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.status(),
        StatusCode::OK,
        "{}",
        reply.text().await.unwrap()
    );
    eventually(WITHIN, "a to forget the tenant", || async {
        (tenant_health(&a.http, &a.base, "acme").await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let unknown = || {
        a.running_state()
            .ingest
            .counters
            .results_rejected
            .get(RejectedResult::UnknownTenant)
    };
    let dropped_before = unknown();
    feed_a.send(vec![healthy("acme", "web-0")]);
    assert_eq!(
        unknown(),
        dropped_before + 1,
        "a drops the tenant's results"
    );
    assert_eq!(
        tenant_health(&http, &base_b, "acme").await.0,
        StatusCode::NOT_FOUND
    );
    b.shutdown().await.unwrap();
    a.stop().await;
}
