//! A replica cut off from PostgreSQL (a TCP proxy between them, cut and
//! restored), in one process, where the test can reach into its engine: a
//! tenant record marked stale by a change heard just before the cut stays
//! the one it judges by. (The scenario with real processes, three
//! replicas and an agent is `cluster.rs`.)

use std::time::Duration;

use knowton_coordinator::health::engine::Reload;
use knowton_tests::cluster::database_addr;
use knowton_tests::feed::{Feed, healthy};
use knowton_tests::process::{get_json, tenant_health};
use knowton_tests::proxy::TcpProxy;
use knowton_tests::{Db, TestCoordinator, TestDb, eventually, on_postgres};
use reqwest::StatusCode;

on_postgres!(a_replica_cut_off_keeps_judging_by_its_last_tenant_record);

const WAIT: Duration = Duration::from_secs(30);

async fn a_replica_cut_off_keeps_judging_by_its_last_tenant_record(db: Db) {
    let db = TestDb::new(db).await;
    let direct = database_addr(&db.url);
    let proxy = TcpProxy::start(direct).await;
    let via_proxy = db
        .url
        .replacen(&direct.to_string(), &proxy.addr.to_string(), 1);
    let args = TestCoordinator::args_for(&db, |args| {
        args.database_url = via_proxy;
        args.leader.replica_id = Some("a".to_owned());
        args.leader.leader_lease_seconds = 2;
        args.alerting.health_sweep_seconds = 1;
    });
    let a = TestCoordinator::start_with(db, args).await;
    let (b, base_b) = a
        .another_replica(|args| {
            args.leader.replica_id = Some("b".to_owned());
            args.leader.leader_lease_seconds = 2;
        })
        .await;
    let http = reqwest::Client::new();
    let a_state = a.running_state();
    assert!(a_state.deployer.is_leader());
    assert!(!b.state.deployer.is_leader());
    a.provision("acme", "basic").await;
    let mut feed_a = Feed::new(&a, "node-a");
    let mut feed_b = Feed::on(b.state.clone(), "node-a");
    feed_a.send(vec![healthy("acme", "web-0")]);
    feed_b.send(vec![healthy("acme", "web-0")]);

    // Cut off: a steps down on its own (its lease could have run out), and
    // b takes over.
    proxy.cut();
    eventually(WAIT, "a to step down and b to lead", || async {
        (!a_state.deployer.is_leader() && b.state.deployer.is_leader()).then_some(())
    })
    .await;

    // a still answers health reads from the results it receives, even
    // with its record of the tenant marked stale by a change heard just
    // before the cut (the last record read stays the fallback).
    a_state
        .engine
        .reload(Reload::Tenant("acme".to_owned()))
        .await
        .unwrap();
    let cut_at = chrono::Utc::now();
    feed_a.send(vec![healthy("acme", "web-0")]);
    eventually(WAIT, "a to judge the fresh results", || async {
        let (status, view) = tenant_health(&http, &a.base, "acme").await;
        assert_eq!(status, StatusCode::OK, "{view}");
        let evaluated: chrono::DateTime<chrono::Utc> =
            view["evaluatedAt"].as_str()?.parse().ok()?;
        (evaluated > cut_at && view["status"] == "healthy").then_some(())
    })
    .await;

    // Restored: a rejoins as a follower; b keeps leading.
    proxy.restore();
    eventually(WAIT, "a's heartbeat again", || async {
        let cluster = get_json(&http, &base_b, "/api/v1/cluster").await;
        let replicas = cluster["replicas"].as_array()?;
        let a_view = replicas.iter().find(|r| r["replica"] == "a")?;
        let b_leads = cluster["leader"].as_str()?.starts_with("b#");
        (a_view["alive"] == true && b_leads).then_some(())
    })
    .await;
    assert!(!a_state.deployer.is_leader(), "a follows");
    assert!(b.state.deployer.is_leader());
    b.shutdown().await.unwrap();
    a.stop().await;
}
