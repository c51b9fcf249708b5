//! Crash safety: the coordinator binary is killed with SIGKILL after an
//! alert and its notification were committed and before the notification
//! could be delivered (the webhook receiver is not up yet). After a
//! restart the notification arrives exactly once, and the alert is still
//! the same open alert with its history. On SQLite and PostgreSQL.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use knowton_agent::config::Args;
use knowton_coordinator::certs;
use knowton_coordinator::sim::{Behaviour, SimPod};
use knowton_tests::agent::{RunningAgent, free_port};
use knowton_tests::process::{CoordinatorProcess, get_json, tenant_health};
use knowton_tests::receiver::Receiver;
use knowton_tests::{ADMIN_TOKEN, Db, TestDb, eventually, on_every_backend};
use serde_json::Value;

on_every_backend!(db: a_committed_notification_survives_kill_9_and_arrives_once);

const WAIT: Duration = Duration::from_secs(30);

/// The coordinator on `db`, its notification retries fast.
fn serve(db: &TestDb, tls: &Path, http: u16, grpc: u16, hook: &str) -> CoordinatorProcess {
    CoordinatorProcess::serve(
        (db.dir.path(), &db.url),
        tls,
        (http, grpc),
        hook,
        &[
            // A delivery claimed when the process is killed is retried once
            // its lease (twice the timeout + 10 s) runs out: well within WAIT.
            "--notify-timeout-seconds",
            "2",
            "--notify-retry-base-ms",
            "100",
            "--notify-retry-max-ms",
            "500",
        ],
    )
}

async fn a_committed_notification_survives_kill_9_and_arrives_once(kind: Db) {
    let db = TestDb::new(kind).await;
    let tls = db.dir.path().join("tls");
    certs::init(&tls, &[], false).unwrap();
    certs::agent(&tls, "node-a").unwrap();
    let (http_port, grpc_port, hook_port) = (free_port(), free_port(), free_port());
    let hook_url = format!("http://127.0.0.1:{hook_port}/alertmanager");
    let http = knowton_coordinator::client::http_client();

    let first = serve(&db, &tls, http_port, grpc_port, &hook_url);
    let created = http
        .post(format!("{}/api/v1/tenants", first.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&knowton_tests::tenant_request("acme", "professional"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // A pod whose database is down, probed by a real agent over mutual TLS.
    let pod = SimPod::start(Ipv4Addr::new(127, 0, 0, 2), 0);
    pod.set(Behaviour::DatabaseDown).await;
    let targets = db.dir.path().join("targets.yaml");
    std::fs::write(
        &targets,
        format!(
            "- {{tenant: acme, pod: acme-web-0, url: '{}'}}\n",
            pod.url()
        ),
    )
    .unwrap();
    let args = Args {
        targets: Some(targets),
        shutdown_grace: Duration::from_secs(1),
        ..Args::for_tests(
            "node-a",
            SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            &tls,
        )
    };
    let agent = RunningAgent::start(args);

    // The alert and its notification are committed; delivery keeps failing
    // (nothing listens on the webhook's port yet).
    let alert = eventually(WAIT, "the database alert", || async {
        let list = get_json(
            &http,
            &first.base,
            "/api/v1/monitoring/alerts?resolved=false",
        )
        .await;
        list["alerts"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(alert["check"], "database");
    let pending = eventually(WAIT, "a failed delivery attempt", || async {
        let list = get_json(
            &http,
            &first.base,
            "/api/v1/monitoring/notifications?state=pending",
        )
        .await;
        list["notifications"]
            .as_array()?
            .iter()
            .find(|n| n["kind"] == "alert" && n["attempts"].as_i64() >= Some(1))
            .cloned()
    })
    .await;
    let key = pending["idempotencyKey"].as_str().unwrap().to_owned();

    // kill -9.
    first.kill();

    let hook = Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], hook_port))).await;
    let second = serve(&db, &tls, http_port, grpc_port, &hook_url);
    let delivered = eventually(WAIT, "the notification after the restart", || async {
        let list = get_json(
            &http,
            &second.base,
            "/api/v1/monitoring/notifications?state=delivered",
        )
        .await;
        list["notifications"]
            .as_array()?
            .iter()
            .find(|n| n["idempotencyKey"] == key.as_str())
            .cloned()
    })
    .await;
    assert_eq!(delivered["state"], "delivered");
    let hits: Vec<_> = hook
        .accepted()
        .into_iter()
        .filter(|h| h.json()["idempotencyKey"] == key.as_str())
        .collect();
    assert_eq!(hits.len(), 1, "delivered exactly once");
    assert_eq!(hits[0].json()["status"], "firing");

    // The same alert is still open with its history: no second one opened
    // by the restarted engine while the database stays down.
    let id = alert["id"].as_str().unwrap();
    let after = get_json(
        &http,
        &second.base,
        &format!("/api/v1/monitoring/alerts/{id}"),
    )
    .await;
    assert_eq!(after["state"], "firing", "{after}");
    assert_eq!(after["history"][0]["kind"], "opened");
    let evaluated = |v: &Value| {
        v["evaluatedAt"]
            .as_str()?
            .parse::<chrono::DateTime<chrono::Utc>>()
            .ok()
    };
    // Wait for the restarted engine to have judged fresh results.
    let restarted_at = chrono::Utc::now();
    eventually(WAIT, "an evaluation after the restart", || async {
        let (_, h) = tenant_health(&http, &second.base, "acme").await;
        (evaluated(&h)? > restarted_at && h["status"] == "critical").then_some(())
    })
    .await;
    let open = get_json(
        &http,
        &second.base,
        "/api/v1/monitoring/alerts?resolved=false",
    )
    .await;
    assert_eq!(open["alerts"].as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open["alerts"][0]["id"], alert["id"]);

    agent.stop_within(Duration::from_secs(15)).await;
}
