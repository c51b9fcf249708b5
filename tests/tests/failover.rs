//! Fail-over with real processes: two coordinator binaries on one
//! PostgreSQL database, a real agent streaming to both, simulated tenant
//! pods, a webhook receiver. The leader is killed with SIGKILL while faults
//! start on ten tenants: the other replica leads within the lease and every
//! fault is notified exactly once (by idempotency key and by tenant, check
//! and state); nothing is opened twice and nothing resolves falsely.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use knowton_agent::config::Args;
use knowton_coordinator::certs;
use knowton_coordinator::sim::{Behaviour, SimPod};
use knowton_tests::agent::{RunningAgent, free_port};
use knowton_tests::process::{CoordinatorProcess, get_json, tenant_health};
use knowton_tests::receiver::Receiver;
use knowton_tests::{ADMIN_TOKEN, Db, TestDb, eventually, on_postgres};
use serde_json::Value;

on_postgres!(killing_the_leader_mid_fault_loses_and_repeats_no_notification);

const WAIT: Duration = Duration::from_secs(30);
const TENANTS: u8 = 10;
const LEASE_SECONDS: u64 = 2;

/// Replica `name` of the test's installation.
fn serve(db: &TestDb, tls: &Path, name: &str, grpc: u16, hook: &str) -> CoordinatorProcess {
    let lease = LEASE_SECONDS.to_string();
    CoordinatorProcess::serve(
        db,
        tls,
        (free_port(), grpc),
        hook,
        &[
            "--replica-id",
            name,
            "--leader-lease-seconds",
            &lease,
            "--notify-timeout-seconds",
            "2",
            "--health-sweep-seconds",
            "1",
        ],
    )
}

async fn killing_the_leader_mid_fault_loses_and_repeats_no_notification(kind: Db) {
    let db = TestDb::new(kind).await;
    let tls = db.dir.path().join("tls");
    certs::init(&tls, &[], false).unwrap();
    certs::agent(&tls, "node-a").unwrap();
    let hook = Receiver::start().await;
    let hook_url = hook.url("/alertmanager");
    let http = knowton_coordinator::client::http_client();
    let (grpc_a, grpc_b) = (free_port(), free_port());
    let a = serve(&db, &tls, "a", grpc_a, &hook_url);
    let b = serve(&db, &tls, "b", grpc_b, &hook_url);
    let cluster = get_json(&http, &b.base, "/api/v1/cluster").await;
    assert!(
        cluster["leader"]
            .as_str()
            .is_some_and(|l| l.starts_with("a#")),
        "a, started first, leads: {cluster}"
    );

    // Ten tenants, each with a healthy pod of its own, probed by one agent
    // that streams to both replicas.
    let mut pods = Vec::new();
    let mut targets = String::new();
    for i in 0..TENANTS {
        let slug = format!("shop-{i}");
        let created = http
            .post(format!("{}/api/v1/tenants", a.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&knowton_tests::tenant_request(&slug, "professional"))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let pod = SimPod::start(Ipv4Addr::new(127, 0, 1, 10 + i), 0);
        targets.push_str(&format!(
            "- {{tenant: {slug}, pod: {slug}-web-0, url: '{}'}}\n",
            pod.url()
        ));
        pods.push(pod);
    }
    let targets_file = db.dir.path().join("targets.yaml");
    std::fs::write(&targets_file, targets).unwrap();
    let mut args = Args {
        targets: Some(targets_file),
        shutdown_grace: Duration::from_secs(1),
        ..Args::for_tests("node-a", SocketAddr::from(([127, 0, 0, 1], grpc_a)), &tls)
    };
    args.coordinator = format!("https://127.0.0.1:{grpc_a},https://127.0.0.1:{grpc_b}");
    let agent = RunningAgent::start(args);
    for replica in [&a, &b] {
        eventually(WAIT, "every tenant healthy on both replicas", || async {
            for i in 0..TENANTS {
                let (_, health) = tenant_health(&http, &replica.base, &format!("shop-{i}")).await;
                if health["status"] != "healthy" {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    // kill -9 the leader as the faults start.
    a.kill();
    for pod in &pods {
        pod.set(Behaviour::DatabaseDown).await;
    }

    eventually(WAIT, "b to lead", || async {
        let cluster = get_json(&http, &b.base, "/api/v1/cluster").await;
        cluster["leader"]
            .as_str()
            .is_some_and(|l| l.starts_with("b#"))
            .then_some(())
    })
    .await;
    eventually(WAIT, "a notification of every fault", || async {
        let firing: std::collections::BTreeSet<String> = hook
            .accepted()
            .iter()
            .map(|h| h.json())
            .filter(|j| j["status"] == "firing" && j["commonLabels"]["alertname"] == "database")
            .filter_map(|j| j["commonLabels"]["tenant"].as_str().map(str::to_owned))
            .collect();
        (firing.len() == usize::from(TENANTS)).then_some(())
    })
    .await;

    let hits = hook.accepted();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_fault: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for hit in &hits {
        let json = hit.json();
        *by_key
            .entry(json["idempotencyKey"].as_str().unwrap().to_owned())
            .or_default() += 1;
        let labels = &json["commonLabels"];
        *by_fault
            .entry((
                labels["tenant"].as_str().unwrap_or_default().to_owned(),
                labels["alertname"].as_str().unwrap_or_default().to_owned(),
                json["status"].as_str().unwrap_or_default().to_owned(),
            ))
            .or_default() += 1;
    }
    assert!(
        by_key.values().all(|n| *n == 1),
        "each message once: {by_key:?}"
    );
    assert!(
        by_fault.values().all(|n| *n == 1),
        "each fault notified once: {by_fault:?}"
    );
    assert!(
        by_fault.keys().all(|(_, _, status)| status == "firing"),
        "nothing resolved: {by_fault:?}"
    );
    let alerts = get_json(&http, &b.base, "/api/v1/monitoring/alerts?limit=200").await;
    let database: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["check"] == "database")
        .collect();
    assert_eq!(database.len(), usize::from(TENANTS), "each opened once");
    assert!(database.iter().all(|a| a["resolvedAt"].is_null()));
    agent.stop().await;
    drop(b);
}
