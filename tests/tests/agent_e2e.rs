//! The agent end to end: simulated tenant pods on their own loopback
//! addresses, a real agent probing them from a targets file, a real
//! coordinator receiving the results over mutual TLS, read back through
//! the REST API.

use std::net::Ipv4Addr;
use std::time::Duration;

use knowton_agent::config::{Args, LogFormat};
use knowton_coordinator::certs;
use knowton_tests::pods::{Behaviour, SimPod};
use knowton_tests::{ADMIN_TOKEN, Db, TestCoordinator, eventually};
use serde_json::Value;

fn agent_args(kt: &TestCoordinator, tls: &std::path::Path, targets: &std::path::Path) -> Args {
    Args {
        node_name: "node-a".into(),
        coordinator: format!("https://127.0.0.1:{}", kt.grpc_addr().port()),
        tls_dir: Some(tls.to_owned()),
        ca: None,
        cert: None,
        key: None,
        targets: targets.to_owned(),
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(500),
        slow_threshold: Duration::from_millis(300),
        concurrency: 8,
        buffer_bytes: 1 << 20,
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        shutdown_grace: Duration::from_secs(2),
        log_format: LogFormat::Text,
    }
}

async fn health(kt: &TestCoordinator, slug: &str) -> Value {
    kt.http
        .get(kt.url("/api/v1/monitoring/health"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Tenant-Slug", slug)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The pod's latest result once `check` holds for it.
async fn pod_where(
    kt: &TestCoordinator,
    pod: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(Duration::from_secs(15), what, || async {
        let body = health(kt, "acme").await;
        body["pods"]
            .as_array()?
            .iter()
            .find(|p| p["pod"] == pod && check(p))
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_probes_simulated_pods_and_the_coordinator_shows_the_results() {
    let tls = tempfile::tempdir().unwrap();
    certs::init(tls.path(), &[], false).unwrap();
    certs::agent(tls.path(), "node-a").unwrap();
    let kt = TestCoordinator::start_with_agents(Db::Sqlite, tls.path()).await;
    kt.provision("acme", "professional").await;

    let healthy = SimPod::start(Ipv4Addr::new(127, 0, 0, 2), 0);
    let flaky = SimPod::start(Ipv4Addr::new(127, 0, 0, 3), 0);
    let stranger = SimPod::start(Ipv4Addr::new(127, 0, 0, 4), 0);
    let targets = tls.path().join("targets.yaml");
    std::fs::write(
        &targets,
        format!(
            "- {{tenant: acme, pod: acme-backend-0, url: '{}'}}\n\
             - {{tenant: acme, pod: acme-backend-1, url: '{}'}}\n\
             - {{tenant: ghost, pod: ghost-0, url: '{}'}}\n",
            healthy.url(),
            flaky.url(),
            stranger.url()
        ),
    )
    .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(knowton_agent::run::run(
        agent_args(&kt, tls.path(), &targets),
        async {
            let _ = stopped.await;
        },
    ));

    let up = pod_where(&kt, "acme-backend-0", "a healthy result", |p| {
        p["liveness"]["ok"] == true
    })
    .await;
    assert_eq!(up["node"], "node-a");
    assert_eq!(up["podIp"], "127.0.0.2");
    assert_eq!(up["apiHealth"]["databaseOk"], true);
    assert!(up["liveness"]["latencyMs"].as_f64().unwrap() > 0.0);
    assert_eq!(up["metrics"]["users"], 12.0);

    flaky.set(Behaviour::Status(503)).await;
    let down = pod_where(&kt, "acme-backend-1", "the 503 to be reported", |p| {
        p["apiHealth"]["statusCode"] == 503
    })
    .await;
    assert_eq!(down["apiHealth"]["ok"], false);
    assert_eq!(down["apiHealth"]["failure"], "http_status");
    assert_eq!(
        down["apiHealth"]["confirmed"], true,
        "a failure is confirmed before it is reported"
    );

    flaky.set(Behaviour::Refuse).await;
    let refused = pod_where(&kt, "acme-backend-1", "the refusal to be reported", |p| {
        p["liveness"]["failure"] == "refused"
    })
    .await;
    assert_eq!(refused["liveness"]["ok"], false);

    flaky.set(Behaviour::DatabaseDown).await;
    pod_where(
        &kt,
        "acme-backend-1",
        "the database outage to be reported",
        |p| p["apiHealth"]["databaseOk"] == false,
    )
    .await;

    // The agent is listed, and results for the unknown tenant were dropped, not stored.
    let agents: Value = kt
        .http
        .get(kt.url("/api/v1/agents"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agents["agents"][0]["node"], "node-a");
    assert_eq!(agents["agents"][0]["connected"], true);
    assert!(agents["counters"]["unknownTenantResults"].as_u64().unwrap() > 0);
    assert_eq!(agents["counters"]["duplicateBatches"], 0);
    assert_eq!(
        health(&kt, "acme").await["pods"].as_array().unwrap().len(),
        2
    );

    // A pod removed from the targets file is no longer probed: the kept pod
    // goes through three more rounds while the removed one gets nothing.
    std::fs::write(
        &targets,
        format!(
            "- {{tenant: acme, pod: acme-backend-1, url: '{}'}}\n",
            flaky.url()
        ),
    )
    .unwrap();
    let mut last = (healthy.requests("/health"), flaky.requests("/health"));
    eventually(
        Duration::from_secs(20),
        "the removed pod to stop being probed",
        || {
            let now = (healthy.requests("/health"), flaky.requests("/health"));
            if now.0 != last.0 {
                last = now;
            }
            let quiet_rounds = now.1 - last.1;
            async move { (quiet_rounds >= 3).then_some(()) }
        },
    )
    .await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent stops within its grace period")
        .unwrap()
        .unwrap();
}
