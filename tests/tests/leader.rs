//! Leadership through the store's lease. Two coordinators on one
//! PostgreSQL database and one (FAKE) Kubernetes API server: only the
//! leader deploys; when it stops, the other takes over in the next epoch
//! and finishes what was left. On SQLite, a second coordinator refuses to
//! start.

use std::time::Duration;

use knowton_common::Plan;
use knowton_coordinator::config::{ServeArgs, ServeConfig};
use knowton_coordinator::server;
use knowton_coordinator::store::{Backend, IDLE_IN_TRANSACTION, postgres_options};
use knowton_tests::fake_kube::FakeKube;
use knowton_tests::feed::{Feed, Shape, healthy};
use knowton_tests::process::{metric, tenant_health};
use knowton_tests::{
    ADMIN_TOKEN, Db, TestCoordinator, TestDb, eventually, on_postgres, tenant_request,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

const WAIT: Duration = Duration::from_secs(30);

fn elect(args: &mut ServeArgs, kubeconfig: &std::path::Path, replica: &str) {
    args.kube.no_cluster = false;
    args.kube.kubeconfig = Some(kubeconfig.to_owned());
    args.leader.replica_id = Some(replica.to_owned());
    args.leader.leader_lease_seconds = 3;
    args.kube.rollout_timeout_seconds = 60;
    args.kube.verify_timeout_seconds = 5;
}

/// A gauge of the replica's `/metrics`.
async fn gauge(http: &reqwest::Client, base: &str, name: &str) -> i64 {
    let value = metric(http, base, name).await;
    value.unwrap_or_else(|| panic!("{name} in /metrics")) as i64
}

async fn leads(http: &reqwest::Client, base: &str) -> bool {
    gauge(http, base, "knowton_coordinator_leader").await == 1
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The test tenant's deployment, as a replica serves it.
async fn wayne(http: &reqwest::Client, base: &str) -> Value {
    call(
        http,
        base,
        Method::GET,
        "/api/v1/tenants/wayne/deployment",
        None,
    )
    .await
    .1
}

async fn only_the_leader_deploys_and_a_successor_takes_over_in_the_next_epoch(db: Db) {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();

    let a = TestCoordinator::start_and(db, |args| elect(args, &kubeconfig, "coordinator-a")).await;
    eventually(WAIT, "a to lead", || async {
        leads(&a.http, &a.base).await.then_some(())
    })
    .await;
    let (b, base_b) = a
        .another_replica(|args| elect(args, &kubeconfig, "coordinator-b"))
        .await;
    let http = reqwest::Client::new();
    assert!(!leads(&http, &base_b).await, "one leader at a time");
    let epoch = gauge(&a.http, &a.base, "knowton_coordinator_epoch").await;
    assert!(epoch >= 1);
    assert_eq!(
        gauge(&http, &base_b, "knowton_coordinator_epoch").await,
        epoch
    );
    // Either replica shows both, the same way.
    let cluster = eventually(WAIT, "both replicas' heartbeats", || async {
        let (status, view) = call(&http, &base_b, Method::GET, "/api/v1/cluster", None).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        (view["replicas"].as_array().map(Vec::len) == Some(2)).then_some(view)
    })
    .await;
    assert_eq!(cluster["epoch"], epoch);
    let leader = cluster["leader"].as_str().unwrap().to_owned();
    assert!(leader.starts_with("coordinator-a#"), "{cluster}");
    assert!(
        cluster["answeredBy"]
            .as_str()
            .unwrap()
            .starts_with("coordinator-b#")
    );
    for (replica, url) in [("coordinator-a", &a.base), ("coordinator-b", &base_b)] {
        let view = cluster["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["replica"] == replica)
            .unwrap_or_else(|| panic!("{replica} in {cluster}"));
        assert_eq!(&view["httpUrl"], url.as_str(), "{view}");
        assert_eq!(view["alive"], true);
        assert_eq!(view["leader"], replica == "coordinator-a");
    }
    let (_, from_a) = call(&a.http, &a.base, Method::GET, "/api/v1/cluster", None).await;
    assert_eq!(from_a["leader"], leader.as_str());

    // Provisioned through the replica that does not lead: the leader
    // deploys it.
    let (status, body) = call(
        &http,
        &base_b,
        Method::POST,
        "/api/v1/tenants",
        Some(tenant_request("wayne", "basic")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    eventually(WAIT, "the leader to apply the tenant", || async {
        fake.object(
            "apps/v1",
            "Deployment",
            Some("knowton-tenant-wayne"),
            "backend",
        )
        .map(|_| ())
    })
    .await;

    // The leader stops mid-rollout (resigning its lease); the other takes
    // the lease in the next epoch and deploys again, to the end.
    // (Its database lives on: b uses it.)
    let (_db, _) = a.stop_for_restart().await;
    eventually(WAIT, "b to lead", || async {
        leads(&http, &base_b).await.then_some(())
    })
    .await;
    assert_eq!(
        gauge(&http, &base_b, "knowton_coordinator_epoch").await,
        epoch + 1
    );
    // a, stopped, is gone from the view; b leads.
    let (_, cluster) = call(&http, &base_b, Method::GET, "/api/v1/cluster", None).await;
    assert_eq!(cluster["epoch"], epoch + 1);
    assert!(
        cluster["leader"]
            .as_str()
            .unwrap()
            .starts_with("coordinator-b#")
    );
    let replicas: Vec<&str> = cluster["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["replica"].as_str().unwrap())
        .collect();
    assert_eq!(replicas, ["coordinator-b"], "{cluster}");
    let view = eventually(WAIT, "b to deploy", || async {
        let view = wayne(&http, &base_b).await;
        (view["attempt"].as_i64() >= Some(2) && view["phase"] == "waiting").then_some(view)
    })
    .await;
    for name in ["backend", "frontend"] {
        let deployment = fake
            .object("apps/v1", "Deployment", Some("knowton-tenant-wayne"), name)
            .unwrap();
        let generation = deployment["metadata"]["generation"].clone();
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        fake.set_status(
            "apps/v1",
            "Deployment",
            "knowton-tenant-wayne",
            name,
            json!({"observedGeneration": generation, "replicas": replicas,
                   "updatedReplicas": replicas, "availableReplicas": replicas}),
        );
    }
    let attempt = view["attempt"].clone();
    eventually(WAIT, "the deployment to be ready", || async {
        let view = wayne(&http, &base_b).await;
        (view["attempt"] == attempt && view["phase"] == "ready").then_some(())
    })
    .await;
    b.shutdown().await.unwrap();
}

on_postgres!(
    only_the_leader_deploys_and_a_successor_takes_over_in_the_next_epoch,
    a_deposed_leader_is_fenced_and_its_successor_resolves_its_alert,
    a_leader_paused_inside_a_write_does_not_keep_the_lease,
);

/// A leader paused inside a write (SIGSTOP, a frozen VM) keeps its
/// transaction open, and with it the share lock on the lease row that
/// fences the write. The server ends that transaction after
/// [`IDLE_IN_TRANSACTION`], so another replica takes over once the lease
/// has run out, not only when the paused one resumes.
async fn a_leader_paused_inside_a_write_does_not_keep_the_lease(db: Db) {
    let db = TestDb::new(db).await;
    let store = Backend::from_url(&db.url).unwrap().open().await.unwrap();
    let lease = Duration::from_secs(2);
    let a = store.campaign("a", lease).await.unwrap();
    assert_eq!(a.holder, "a");

    // a's write, paused once it holds the fence: a session set up as the
    // coordinator's, its transaction open and idle.
    let Backend::Postgres(opts) = Backend::from_url(&db.url).unwrap() else {
        unreachable!("a PostgreSQL URL")
    };
    let mut paused = PgConnection::connect_with(&postgres_options(opts))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut paused).await.unwrap();
    let held: i64 = sqlx::query_scalar("SELECT epoch FROM coordinator_lease FOR SHARE")
        .fetch_one(&mut paused)
        .await
        .unwrap();
    assert_eq!(held, a.epoch);

    // b campaigns as a replica does: each round gives up after a while.
    let taken = eventually(
        IDLE_IN_TRANSACTION + lease + WAIT,
        "b to take the lease",
        || async {
            let round = tokio::time::timeout(Duration::from_secs(1), store.campaign("b", lease));
            let term = round.await.ok()?.ok()?;
            (term.holder == "b").then_some(term)
        },
    )
    .await;
    assert_eq!(taken.epoch, a.epoch + 1);
    assert!(
        sqlx::raw_sql("SELECT 1")
            .execute(&mut paused)
            .await
            .is_err(),
        "the paused session was ended"
    );
    store.close().await;
}

/// Both replicas get every result. The leader opens an alert; it is then
/// deposed behind its back (as if it had been paused past its lease) while
/// it still believes it leads: its next write is refused and counted, and
/// it follows. The successor, which stood by with the same results, takes
/// the open alert over and resolves it, once.
async fn a_deposed_leader_is_fenced_and_its_successor_resolves_its_alert(db: Db) {
    // a renews only every 100 s, so it goes on believing it leads; b
    // campaigns every second.
    let a = TestCoordinator::start_and(db, |args| {
        args.leader.replica_id = Some("a".to_owned());
        args.leader.leader_lease_seconds = 300;
        args.alerting.alert_resolve_after = 1;
        args.alerting.health_sweep_seconds = 1;
    })
    .await;
    // Before b starts, so that b knows the tenant.
    let provisioned = a.provision("acme", "basic").await;
    let (b, base_b) = a
        .another_replica(|args| {
            args.leader.replica_id = Some("b".to_owned());
            args.leader.leader_lease_seconds = 3;
            args.alerting.alert_resolve_after = 1;
            args.alerting.health_sweep_seconds = 1;
        })
        .await;
    let http = reqwest::Client::new();
    assert!(leads(&a.http, &a.base).await);
    assert!(!leads(&http, &base_b).await);

    let mut feed_a = Feed::new(&a, "node-a");
    let mut feed_b = Feed::on(b.state.clone(), "node-a");
    let full = Plan::Basic.limits().storage_bytes / 100 * 96;
    feed_b.send(vec![healthy("acme", "web-0").storage(full)]);
    let alert = a.fill_storage(&mut feed_a, &provisioned).await;
    let id = alert["id"].as_str().unwrap().to_owned();
    // b, standing by, shows the leader's alert in its health reads.
    eventually(WAIT, "b to show the open alert", || async {
        let (_, health) = tenant_health(&http, &base_b, "acme").await;
        health["openAlerts"]
            .as_array()
            .is_some_and(|open| open.iter().any(|o| o["id"] == id.as_str()))
            .then_some(())
    })
    .await;

    // Acknowledged through b, which passes it on to the leader; a request
    // that was passed on once is not passed on again.
    let acknowledge = format!("{base_b}/api/v1/monitoring/alerts/{id}/acknowledge");
    let refused = http
        .post(&acknowledge)
        .bearer_auth(ADMIN_TOKEN)
        .header("x-knowton-forwarded-by", "elsewhere#0")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_leader", "{body}");
    let acknowledged = http
        .post(&acknowledge)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"note": "looking"}))
        .send()
        .await
        .unwrap();
    assert_eq!(acknowledged.status(), StatusCode::OK);
    let view: Value = acknowledged.json().await.unwrap();
    assert_eq!(view["acknowledgedBy"], "admin", "{view}");
    assert_eq!(a.alert(&id).await["acknowledgedBy"], "admin");

    // Deposed: another holder took the lease in a later epoch, and its
    // term ran out; b takes over.
    a.db.execute(
        "UPDATE coordinator_lease SET holder = 'usurper#0', epoch = epoch + 1, expires_ms = 0",
    )
    .await;
    eventually(WAIT, "b to lead", || async {
        leads(&http, &base_b).await.then_some(())
    })
    .await;
    // a does not know yet, unless a write of its own came meanwhile (its
    // health rollups at a minute's end, CI saw): fenced, it stepped down.
    let still_leads = leads(&a.http, &a.base).await;
    let fenced = gauge(&a.http, &a.base, "knowton_fenced_writes_total").await;
    assert!(
        still_leads || fenced >= 1,
        "a stepped down without a fenced write"
    );

    // The pod recovers. a's resolution is refused; a follows.
    feed_a.send(vec![healthy("acme", "web-0")]);
    eventually(WAIT, "a's write to be fenced", || async {
        (gauge(&a.http, &a.base, "knowton_fenced_writes_total").await >= 1).then_some(())
    })
    .await;
    assert!(!leads(&a.http, &a.base).await, "a stepped down");
    let stored = a.alert(&id).await;
    assert!(
        stored["resolvedAt"].is_null(),
        "a changed nothing: {stored}"
    );

    // b resolves it, once, as the automatic actor.
    feed_b.send(vec![healthy("acme", "web-0")]);
    let resolved = eventually(WAIT, "b to resolve the alert", || async {
        let view = a.alert(&id).await;
        (!view["resolvedAt"].is_null()).then_some(view)
    })
    .await;
    assert_eq!(resolved["resolvedBy"], "auto");
    let resolutions = resolved["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "resolved")
        .count();
    assert_eq!(resolutions, 1, "{resolved}");
    assert_eq!(
        gauge(&http, &base_b, "knowton_fenced_writes_total").await,
        0
    );
    b.shutdown().await.unwrap();
    a.stop().await;
}

/// SQLite serves one coordinator: a second one on the same database file
/// refuses to start and says why; once the first has stopped, it starts
/// and leads at once (the lease of a coordinator that died is not waited
/// out: the file lock says it is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_on_one_sqlite_database_refuses_to_start() {
    let a = TestCoordinator::start(Db::Sqlite).await;
    let epoch = gauge(&a.http, &a.base, "knowton_coordinator_epoch").await;
    assert!(leads(&a.http, &a.base).await);
    let args = TestCoordinator::args_for(&a.db, |_| {});
    let refused = server::start(ServeConfig::try_from(args.clone()).unwrap())
        .await
        .expect_err("a second coordinator on the same SQLite file");
    let message = refused.to_string();
    assert!(
        matches!(refused, server::ServeError::SqliteInUse { .. }),
        "{message}"
    );
    assert!(
        message.contains(&format!("(pid {})", std::process::id()))
            && message.contains("SQLite serves one coordinator"),
        "{message}"
    );
    // The first one is unharmed.
    assert!(leads(&a.http, &a.base).await);

    let (db, _) = a.stop_for_restart().await;
    // As if the first had died holding the lease for another hour.
    db.execute(
        "UPDATE coordinator_lease SET holder = 'ghost#0', expires_ms = expires_ms + 3600000",
    )
    .await;
    let b = TestCoordinator::start_with(db, args).await;
    assert!(
        leads(&b.http, &b.base).await,
        "leads from its first request"
    );
    assert_eq!(
        gauge(&b.http, &b.base, "knowton_coordinator_epoch").await,
        epoch + 1
    );
    b.stop().await;
}
