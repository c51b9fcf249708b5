//! The agent end to end: simulated tenant pods on their own loopback
//! addresses, a real agent probing them from a targets file, a real
//! coordinator receiving the results over mutual TLS, read back through
//! the REST API.

use std::net::Ipv4Addr;
use std::time::Duration;

use knowton_agent::config::Args;
use knowton_coordinator::certs;
use knowton_coordinator::sim::{Behaviour, SimPod};
use knowton_tests::agent::{RunningAgent, acme_pod_where, agent_metric, free_port};
use knowton_tests::{Db, TestCoordinator, eventually};
use reqwest::Method;
use serde_json::Value;

fn agent_args(kt: &TestCoordinator, tls: &std::path::Path, targets: &std::path::Path) -> Args {
    Args {
        targets: Some(targets.to_owned()),
        ..Args::for_tests("node-a", kt.grpc_addr(), tls)
    }
}

async fn health(kt: &TestCoordinator, slug: &str) -> Value {
    kt.monitoring_health(slug).await.body
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

    let agent = RunningAgent::start(agent_args(&kt, tls.path(), &targets));

    let up = acme_pod_where(&kt, "acme-backend-0", "a healthy result", |p| {
        p["liveness"]["ok"] == true
    })
    .await;
    assert_eq!(up["node"], "node-a");
    assert_eq!(up["podIp"], "127.0.0.2");
    assert_eq!(up["apiHealth"]["databaseOk"], true);
    assert!(up["liveness"]["latencyMs"].as_f64().unwrap() > 0.0);
    assert_eq!(up["metrics"]["users"], 12.0);

    flaky.set(Behaviour::Status(503)).await;
    let down = acme_pod_where(&kt, "acme-backend-1", "the 503 to be reported", |p| {
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
    let refused = acme_pod_where(&kt, "acme-backend-1", "the refusal to be reported", |p| {
        p["liveness"]["failure"] == "refused"
    })
    .await;
    assert_eq!(refused["liveness"]["ok"], false);

    flaky.set(Behaviour::DatabaseDown).await;
    acme_pod_where(
        &kt,
        "acme-backend-1",
        "the database outage to be reported",
        |p| p["apiHealth"]["databaseOk"] == false,
    )
    .await;

    // The agent is listed, and results for the unknown tenant were dropped, not stored.
    let agents = agent_view(&kt).await;
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
    knowton_tests::until_no_longer_probed(&healthy, &flaky, "the removed pod to stop being probed")
        .await;

    agent.stop().await;
}

async fn agent_view(kt: &TestCoordinator) -> Value {
    kt.admin(Method::GET, "/api/v1/agents", None).await.body
}

/// Runs an agent against one pod with `buffer_bytes`, stops the coordinator
/// while the agent keeps probing for `rounds_down` rounds, restarts it, and
/// returns (last sequence acknowledged before the stop, the agent as the
/// restarted coordinator sees it once the buffer is drained, dropped results).
async fn outage(buffer_bytes: usize, rounds_down: f64) -> (u64, Value, f64) {
    let tls = tempfile::tempdir().unwrap();
    certs::init(tls.path(), &[], false).unwrap();
    certs::agent(tls.path(), "node-a").unwrap();
    let kt = TestCoordinator::start_with_agents(Db::Sqlite, tls.path()).await;
    kt.provision("acme", "basic").await;
    let pod = SimPod::start(Ipv4Addr::new(127, 0, 0, 5), 0);
    let targets = tls.path().join("targets.yaml");
    std::fs::write(
        &targets,
        format!("- {{tenant: acme, pod: acme-0, url: '{}'}}\n", pod.url()),
    )
    .unwrap();
    let port = free_port();
    let mut args = agent_args(&kt, tls.path(), &targets);
    args.interval = Duration::from_millis(100);
    args.buffer_bytes = buffer_bytes;
    args.metrics_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let agent = RunningAgent::start(args);
    let http = kt.http.clone();

    eventually(
        Duration::from_secs(15),
        "a few acknowledged batches",
        || async {
            (agent_view(&kt).await["agents"][0]["lastSequence"].as_u64()? >= 3).then_some(())
        },
    )
    .await;
    let state = kt.running_state();
    let (db, serve_args) = kt.stop_for_restart().await;
    let acked_before = state.ingest.agents()[0].acked_sequence;

    let rounds = agent_metric(&http, port, "knowton_agent_probe_rounds_total")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(15),
        "rounds probed while the coordinator is down",
        || async {
            let now = agent_metric(&http, port, "knowton_agent_probe_rounds_total").await?;
            let connected = agent_metric(&http, port, "knowton_agent_connected").await?;
            (connected == 0.0 && now >= rounds + rounds_down).then_some(())
        },
    )
    .await;

    let kt = TestCoordinator::start_with(db, serve_args).await;
    let seen = eventually(
        Duration::from_secs(30),
        "the buffer to drain into the restarted coordinator",
        || async {
            let drained = agent_metric(&http, port, "knowton_agent_buffer_bytes").await? == 0.0
                && agent_metric(&http, port, "knowton_agent_connected").await? == 1.0;
            let view = agent_view(&kt).await;
            (drained && view["agents"][0]["batchesReceived"].as_u64()? > 0).then_some(view)
        },
    )
    .await;
    let dropped = agent_metric(&http, port, "knowton_agent_dropped_results_total")
        .await
        .unwrap();
    agent.stop().await;
    (acked_before, seen, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_produced_during_an_outage_arrive_exactly_once() {
    let (acked_before, seen, dropped) = outage(1 << 20, 5.0).await;
    let agent = &seen["agents"][0];
    let (first, last, batches) = (
        agent["firstSequence"].as_u64().unwrap(),
        agent["lastSequence"].as_u64().unwrap(),
        agent["batchesReceived"].as_u64().unwrap(),
    );
    assert_eq!(dropped, 0.0);
    assert_eq!(
        first,
        acked_before + 1,
        "the restarted coordinator got the first unacknowledged batch first"
    );
    assert!(
        last >= acked_before + 5,
        "the outage's batches arrived: {acked_before}..{last}"
    );
    assert_eq!(
        batches,
        last - first + 1,
        "every sequence exactly once, none missing"
    );
    assert_eq!(seen["counters"]["duplicateBatches"], 0);
    assert_eq!(seen["counters"]["sequenceGaps"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_buffer_drops_the_oldest_results_and_counts_them() {
    // Room for about two batches of one pod's result.
    let (acked_before, seen, dropped) = outage(400, 12.0).await;
    let first = seen["agents"][0]["firstSequence"].as_u64().unwrap();
    assert!(dropped >= 1.0, "drops are counted");
    assert!(
        first > acked_before + 1,
        "the oldest batches were the ones dropped"
    );
}

/// A slow pod does not hold back the results of the others probed in the
/// same round: they reach the coordinator while it is still being probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_pod_does_not_hold_back_the_other_results() {
    let tls = tempfile::tempdir().unwrap();
    certs::init(tls.path(), &[], false).unwrap();
    certs::agent(tls.path(), "node-a").unwrap();
    let kt = TestCoordinator::start_with_agents(Db::Sqlite, tls.path()).await;
    kt.provision("acme", "professional").await;
    let fast = SimPod::start(Ipv4Addr::new(127, 0, 0, 2), 0);
    let slow = SimPod::start(Ipv4Addr::new(127, 0, 0, 3), 0);
    let targets = tls.path().join("targets.yaml");
    std::fs::write(
        &targets,
        format!(
            "- {{tenant: acme, pod: acme-backend-0, url: '{}'}}\n\
             - {{tenant: acme, pod: acme-backend-1, url: '{}'}}\n",
            fast.url(),
            slow.url()
        ),
    )
    .unwrap();
    let mut args = agent_args(&kt, tls.path(), &targets);
    args.timeout = Duration::from_secs(10);
    let agent = RunningAgent::start(args);
    acme_pod_where(&kt, "acme-backend-1", "a first result", |p| {
        p["liveness"]["ok"] == true
    })
    .await;

    slow.set(Behaviour::Slow(Duration::from_secs(3))).await;
    let slowed_at = chrono::Utc::now();
    let time = |v: &Value| v.as_str()?.parse::<chrono::DateTime<chrono::Utc>>().ok();
    // A result of the fast pod probed after the slowdown…
    let fresh = acme_pod_where(
        &kt,
        "acme-backend-0",
        "a result probed after the slowdown",
        |p| time(&p["observedAt"]).is_some_and(|t| t > slowed_at),
    )
    .await;
    // …arrives while the slow pod's probe of that round is still running:
    // the slow pod still shows its last quick answer.
    let pods = health(&kt, "acme").await["pods"]
        .as_array()
        .unwrap()
        .clone();
    let lagging = pods.iter().find(|p| p["pod"] == "acme-backend-1").unwrap();
    assert!(
        lagging["apiHealth"]["latencyMs"].as_f64().unwrap() < 1000.0,
        "the fast pod's result ({fresh}) waited for the slow one ({lagging})"
    );
    // And the slow pod's answer comes in its own time.
    acme_pod_where(&kt, "acme-backend-1", "the slow answer", |p| {
        p["apiHealth"]["latencyMs"]
            .as_f64()
            .is_some_and(|ms| ms >= 3000.0)
    })
    .await;

    agent.stop_within(Duration::from_secs(15)).await;
}

/// check-all asks the connected agents to probe now and waits for them:
/// with an interval far longer than the test, the fresh results can only
/// come from that instruction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_all_gets_fresh_results_from_the_agents() {
    let tls = tempfile::tempdir().unwrap();
    certs::init(tls.path(), &[], false).unwrap();
    certs::agent(tls.path(), "node-a").unwrap();
    let kt = TestCoordinator::start_with_agents(Db::Sqlite, tls.path()).await;
    kt.provision("acme", "professional").await;
    let pod = SimPod::start(Ipv4Addr::new(127, 0, 0, 2), 0);
    let targets = tls.path().join("targets.yaml");
    std::fs::write(
        &targets,
        format!(
            "- {{tenant: acme, pod: acme-backend-0, url: '{}'}}\n",
            pod.url()
        ),
    )
    .unwrap();
    let mut args = agent_args(&kt, tls.path(), &targets);
    args.interval = Duration::from_secs(3600);
    let agent = RunningAgent::start(args);
    // The first round starts within the first tenth of the interval: wait
    // for the agent to be connected instead.
    eventually(Duration::from_secs(15), "the agent to connect", || async {
        let agents = agent_view(&kt).await;
        (agents["agents"][0]["connected"] == true).then_some(())
    })
    .await;
    let probed_before = pod.requests("/api/health");

    let reply = kt
        .admin(
            Method::POST,
            "/api/v1/monitoring/check-all?timeoutSeconds=20",
            None,
        )
        .await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["agents"], 1);
    assert_eq!(reply.body["agentsAnswered"], 1, "{}", reply.body);
    assert_eq!(reply.body["timedOut"], false);
    assert!(
        pod.requests("/api/health") > probed_before,
        "probed on request"
    );
    let acme = &reply.body["tenants"][0];
    assert_eq!(acme["tenant"], "acme");
    assert_eq!(acme["status"], "healthy", "{}", reply.body);
    assert_eq!(acme["podsUp"], 1);

    agent.stop_within(Duration::from_secs(15)).await;
}
