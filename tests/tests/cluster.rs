//! The high-availability scenarios with real processes: three
//! `knowton-coordinator` replicas on one PostgreSQL database, a real agent
//! streaming to all three, a simulated pod per tenant and a webhook
//! receiver that records every delivery's `Idempotency-Key`
//! ([`Cluster`]). Replicas are killed (SIGKILL), paused (SIGSTOP), cut
//! off from the database, stopped (SIGTERM) and started again.
//!
//! One scenario runs at a time: each is three coordinators, and the lease
//! is short (2 s), so that two of them at once on a small machine would
//! starve each other's renewals.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use knowton_coordinator::sim::Behaviour;
use knowton_tests::agent::{agent_metric, assert_resumed_from};
use knowton_tests::cluster::{Cluster, Spec, WAIT};
use knowton_tests::process::get_json;
use knowton_tests::{ADMIN_TOKEN, Db, eventually, on_postgres};
use reqwest::StatusCode;
use rustix::process::Signal;
use serde_json::Value;
use tokio::sync::Mutex;

on_postgres!(
    a_tenant_provisioned_through_one_replica_is_served_by_all,
    killing_the_leader_mid_fault_loses_and_repeats_no_notification,
    a_paused_leader_that_resumes_writes_nothing_and_follows,
    a_replica_cut_off_from_the_database_stops_leading_keeps_answering_and_rejoins,
    a_rolling_restart_answers_every_read_and_notifies_each_fault_once,
    a_replica_that_is_down_catches_up_from_its_cursor,
);

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The bound for a change to reach every replica.
const WITHIN: Duration = Duration::from_secs(2);

const DROPPED_UNKNOWN: &str = "knowton_ingest_dropped_results_total{reason=\"unknown_tenant\"}";

/// Database alerts as `replica` lists them.
async fn database_alerts(cluster: &Cluster, replica: usize) -> Vec<Value> {
    let alerts = get_json(
        &cluster.http,
        &cluster.base(replica),
        "/api/v1/monitoring/alerts?limit=200",
    )
    .await;
    alerts["alerts"]
        .as_array()
        .expect("alerts listed")
        .iter()
        .filter(|a| a["check"] == "database")
        .cloned()
        .collect()
}

/// Waits until every tenant of `tenants` was notified as firing for its
/// database.
async fn wait_for_firing(cluster: &Cluster, tenants: &[String]) {
    eventually(WAIT, "a notification of every fault", || async {
        let deliveries = cluster.deliveries();
        let firing = deliveries.firing("database");
        tenants
            .iter()
            .all(|t| firing.contains(&t.as_str()))
            .then_some(())
    })
    .await;
}

/// Scenario 1: provisioned through r1, the tenant is served by r2 and r3
/// within 2 s; deprovisioned through r3, its results are dropped by all.
async fn a_tenant_provisioned_through_one_replica_is_served_by_all(db: Db) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(
        db,
        Spec {
            unprovisioned: vec!["late".to_owned()],
            subnet: 11,
            ..Spec::default()
        },
    )
    .await;
    for replica in 0..cluster.len() {
        assert_eq!(
            cluster.health(replica, "late").await.0,
            StatusCode::NOT_FOUND
        );
    }

    cluster.provision(0, "late").await;
    for replica in [1, 2] {
        eventually(WITHIN, "the other replicas to serve the tenant", || async {
            (cluster.health(replica, "late").await.0 == StatusCode::OK).then_some(())
        })
        .await;
    }
    for replica in 0..cluster.len() {
        cluster.wait_for_status(replica, "late", "healthy").await;
    }

    let gone = cluster
        .http
        .delete(format!("{}/api/v1/tenants/late", cluster.base(2)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::OK);
    for replica in 0..cluster.len() {
        eventually(WITHIN, "every replica to forget the tenant", || async {
            (cluster.health(replica, "late").await.0 == StatusCode::NOT_FOUND).then_some(())
        })
        .await;
        // The agent still probes the pod: its next results are dropped.
        let before = cluster.metric(replica, DROPPED_UNKNOWN).await.unwrap();
        eventually(WAIT, "the tenant's results to be dropped", || async {
            let now = cluster.metric(replica, DROPPED_UNKNOWN).await?;
            (now > before).then_some(())
        })
        .await;
        assert_eq!(
            cluster.health(replica, "late").await.0,
            StatusCode::NOT_FOUND
        );
    }
    cluster.stop().await;
}

/// Scenario 2: the leader is killed with SIGKILL as faults start on ten
/// tenants: another replica leads within the lease and every fault is
/// notified exactly once; nothing is opened twice, nothing resolves.
async fn killing_the_leader_mid_fault_loses_and_repeats_no_notification(db: Db) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(
        db,
        Spec {
            tenants: 10,
            subnet: 12,
            ..Spec::default()
        },
    )
    .await;
    let tenants: Vec<String> = (0..10).map(|i| format!("shop-{i}")).collect();

    cluster.kill(0);
    cluster.set_every_pod(Behaviour::DatabaseDown).await;
    let leader = cluster.wait_for_new_leader(0, WAIT).await;
    wait_for_firing(&cluster, &tenants).await;

    let deliveries = cluster.deliveries();
    deliveries.assert_each_once();
    assert!(
        deliveries
            .by_fault
            .keys()
            .all(|(_, _, status)| status == "firing"),
        "nothing resolved: {:?}",
        deliveries.by_fault
    );
    let alerts = database_alerts(&cluster, leader).await;
    assert_eq!(alerts.len(), tenants.len(), "each opened once: {alerts:?}");
    assert!(alerts.iter().all(|a| a["resolvedAt"].is_null()));
    cluster.stop().await;
}

/// Scenario 3: the leader is paused (SIGSTOP) for longer than its lease;
/// another replica takes over and notifies a fault; the old leader,
/// resumed (SIGCONT), writes nothing in its old term and follows. Its own
/// monotonic clock, which ran on while it was stopped, usually steps it
/// down before it writes; a write it had begun (its fence read before the
/// pause) is refused by the store and counted. The store's refusal on its
/// own is `leader.rs`'s `a_deposed_leader_is_fenced_…`, where the test
/// deposes the leader behind its back.
async fn a_paused_leader_that_resumes_writes_nothing_and_follows(db: Db) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(
        db,
        Spec {
            tenants: 3,
            subnet: 13,
            ..Spec::default()
        },
    )
    .await;
    let epoch_before = cluster.metric(0, "knowton_coordinator_epoch").await;

    cluster.signal(0, Signal::STOP);
    cluster.pod("shop-0").set(Behaviour::DatabaseDown).await;
    let leader = cluster.wait_for_new_leader(0, WAIT).await;
    wait_for_firing(&cluster, &["shop-0".to_owned()]).await;

    cluster.signal(0, Signal::CONT);
    eventually(WAIT, "the resumed replica to follow", || async {
        let leads = cluster.metric(0, "knowton_coordinator_leader").await?;
        let epoch = cluster.metric(0, "knowton_coordinator_epoch").await?;
        let seen = cluster.leader_seen_by(0).await?;
        (leads == 0.0 && epoch > epoch_before? && seen == leader).then_some(())
    })
    .await;
    // It judges from fresh results again, and has had every chance to act
    // on the fault it saw begin: one more sweep after it resumed.
    cluster.wait_for_status(0, "shop-0", "critical").await;
    let fenced = cluster
        .metric(0, "knowton_fenced_writes_total")
        .await
        .unwrap();
    assert!(
        fenced > 0.0 || cluster.logged(0, "the lease ran out without a renewal"),
        "the resumed leader stepped down on its own or was fenced"
    );
    let deliveries = cluster.deliveries();
    deliveries.assert_each_once();
    assert_eq!(
        deliveries.firing("database"),
        vec!["shop-0"],
        "{:?}",
        deliveries.by_fault
    );
    let alerts = database_alerts(&cluster, 0).await;
    assert_eq!(alerts.len(), 1, "opened once: {alerts:?}");
    cluster.stop().await;
}

/// Scenario 4: the leader is cut off from PostgreSQL by a TCP proxy: it
/// stops leading within the lease, another leads and notifies, the cut-off
/// replica keeps judging from the live results it receives, and once the
/// database is back it rejoins as a follower.
async fn a_replica_cut_off_from_the_database_stops_leading_keeps_answering_and_rejoins(db: Db) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(
        db,
        Spec {
            tenants: 2,
            proxied: Some(0),
            subnet: 14,
            ..Spec::default()
        },
    )
    .await;
    let proxy = cluster.proxy.as_ref().unwrap();

    proxy.cut();
    let leader = cluster.wait_for_new_leader(0, WAIT).await;
    eventually(WAIT, "the cut-off replica to step down", || async {
        let leads = cluster.metric(0, "knowton_coordinator_leader").await?;
        (leads == 0.0).then_some(())
    })
    .await;
    // A fault that starts after the cut: the cut-off replica sees it in
    // the results the agent streams to it.
    cluster.pod("shop-1").set(Behaviour::DatabaseDown).await;
    cluster.wait_for_status(0, "shop-1", "critical").await;
    wait_for_firing(&cluster, &["shop-1".to_owned()]).await;

    proxy.restore();
    eventually(WAIT, "the replica to rejoin as a follower", || async {
        let view = get_json(&cluster.http, &cluster.base(leader), "/api/v1/cluster").await;
        let r1 = view["replicas"]
            .as_array()?
            .iter()
            .find(|r| r["replica"] == "r1")?
            .clone();
        let seen = cluster.leader_seen_by(0).await?;
        (r1["alive"] == true && seen == leader).then_some(())
    })
    .await;
    assert_eq!(
        cluster.metric(0, "knowton_coordinator_leader").await,
        Some(0.0)
    );
    cluster.deliveries().assert_each_once();
    assert_eq!(database_alerts(&cluster, 0).await.len(), 1);
    cluster.stop().await;
}

/// Reads every replica's API without pause until `done`; returns the
/// answers with a 5xx status (a replica that is down refuses the
/// connection: that is not an answer).
async fn read_until(
    http: reqwest::Client,
    bases: Vec<String>,
    tenants: Vec<String>,
    done: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let mut answered = 0;
    let mut failed = Vec::new();
    let paths = [
        "/api/v1/monitoring/alerts?limit=50",
        "/api/v1/tenants",
        "/api/v1/cluster",
        "/api/v1/monitoring/health",
    ];
    for round in 0.. {
        if done.load(Ordering::Relaxed) {
            break;
        }
        for base in &bases {
            let path = paths[round % paths.len()];
            let reply = http
                .get(format!("{base}{path}"))
                .bearer_auth(ADMIN_TOKEN)
                .header("X-Tenant-Slug", &tenants[round % tenants.len()])
                .send()
                .await;
            if let Ok(reply) = reply {
                answered += 1;
                if reply.status().is_server_error() {
                    let status = reply.status();
                    let body = reply.text().await.unwrap_or_default();
                    failed.push(format!("{base}{path}: {status} {body}"));
                }
            }
        }
    }
    (answered, failed)
}

/// Scenario 5: every replica in turn is stopped (SIGTERM) and started
/// again while faults start and end and the API is read without pause:
/// no replica that is up answers a read with a 5xx, and every fault is
/// notified once as firing and once as resolved.
async fn a_rolling_restart_answers_every_read_and_notifies_each_fault_once(db: Db) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(
        db,
        Spec {
            tenants: 4,
            subnet: 15,
            ..Spec::default()
        },
    )
    .await;
    let tenants: Vec<String> = (0..4).map(|i| format!("shop-{i}")).collect();
    let done = Arc::new(AtomicBool::new(false));
    let bases = (0..cluster.len()).map(|r| cluster.base(r)).collect();
    let reader = tokio::spawn(read_until(
        cluster.http.clone(),
        bases,
        tenants.clone(),
        done.clone(),
    ));

    // Replica r(i+1) restarts while shop-i's fault starts and shop-(i-1)'s
    // ends; it has judged the new fault before the next one goes.
    for replica in 0..cluster.len() {
        cluster
            .pod(&tenants[replica])
            .set(Behaviour::DatabaseDown)
            .await;
        if replica > 0 {
            cluster
                .pod(&tenants[replica - 1])
                .set(Behaviour::Healthy)
                .await;
        }
        cluster.terminate(replica);
        cluster.restart(replica);
        cluster
            .wait_for_status(replica, &tenants[replica], "critical")
            .await;
    }
    cluster.set_every_pod(Behaviour::Healthy).await;
    let faulted = &tenants[..cluster.len()];
    eventually(WAIT, "every fault notified as resolved", || async {
        let deliveries = cluster.deliveries();
        faulted
            .iter()
            .all(|t| {
                let fault = (t.clone(), "database".to_owned(), "resolved".to_owned());
                deliveries.by_fault.contains_key(&fault)
            })
            .then_some(())
    })
    .await;
    done.store(true, Ordering::Relaxed);
    let (answered, failed) = reader.await.unwrap();
    assert!(failed.is_empty(), "5xx answers: {failed:#?}");
    assert!(answered > 50, "the reads went on: {answered}");

    let deliveries = cluster.deliveries();
    deliveries.assert_each_once();
    let notified: BTreeSet<&str> = deliveries.firing("database").into_iter().collect();
    let expected: BTreeSet<&str> = faulted.iter().map(String::as_str).collect();
    assert_eq!(notified, expected, "{:?}", deliveries.by_fault);
    let leader = cluster.leader().await.unwrap();
    let alerts = database_alerts(&cluster, leader).await;
    assert_eq!(alerts.len(), faulted.len(), "each opened once: {alerts:?}");
    assert!(alerts.iter().all(|a| !a["resolvedAt"].is_null()));
    cluster.stop().await;
}

/// node-a as `replica`'s `GET /api/v1/agents` shows it.
async fn agent_seen_by(cluster: &Cluster, replica: usize) -> Option<Value> {
    let agents = get_json(&cluster.http, &cluster.base(replica), "/api/v1/agents").await;
    agents["agents"]
        .as_array()?
        .iter()
        .find(|a| a["node"] == "node-a")
        .cloned()
}

async fn last_sequence(cluster: &Cluster, replica: usize) -> u64 {
    agent_seen_by(cluster, replica)
        .await
        .and_then(|a| a["lastSequence"].as_u64())
        .unwrap_or(0)
}

/// Scenario 6: one replica is down (SIGKILL) while the agent streams: the
/// others keep receiving; back on its address, it is sent everything
/// after its cursor, and nothing is dropped.
async fn a_replica_that_is_down_catches_up_from_its_cursor(db: Db) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(
        db,
        Spec {
            tenants: 2,
            subnet: 16,
            ..Spec::default()
        },
    )
    .await;
    let port = cluster.agent_metrics;
    let replica_series = |name: &str| format!("{name}{{replica=\"{}\"}}", cluster.grpc(2));
    let (connected, acked, dropped) = (
        replica_series("knowton_agent_replica_connected"),
        replica_series("knowton_agent_replica_acked_sequence"),
        replica_series("knowton_agent_replica_dropped_results_total"),
    );

    cluster.kill(2);
    let cursor = eventually(WAIT, "the agent to see r3 gone", || async {
        let up = agent_metric(&cluster.http, port, &connected).await?;
        let acked = agent_metric(&cluster.http, port, &acked).await?;
        (up == 0.0).then_some(acked as u64)
    })
    .await;
    for replica in [0, 1] {
        let from = last_sequence(&cluster, replica).await.max(cursor);
        eventually(WAIT, "results to keep flowing to the others", || async {
            (last_sequence(&cluster, replica).await >= from + 3).then_some(())
        })
        .await;
    }
    assert!(
        agent_metric(&cluster.http, port, "knowton_agent_buffer_bytes").await > Some(0.0),
        "r3's backlog is held"
    );

    cluster.restart(2);
    let latest = agent_metric(&cluster.http, port, "knowton_agent_last_sequence")
        .await
        .unwrap() as u64;
    let seen = eventually(WAIT, "r3 to catch up", || async {
        let seen = agent_seen_by(&cluster, 2).await?;
        (seen["lastSequence"].as_u64()? >= latest).then_some(seen)
    })
    .await;
    assert_resumed_from(&seen, cursor);
    assert_eq!(agent_metric(&cluster.http, port, &dropped).await, Some(0.0));
    cluster.stop().await;
}
