//! What the coordinator tells agents and shows of them beyond results:
//! each tenant's slow threshold in the instructions, and the nodes'
//! figures in `GET /api/v1/agents` and `/metrics`.

use std::path::Path;

use knowton_coordinator::certs::{self, CertificateAuthority, Validity};
use knowton_proto::agent::v1::coordinator_message::Body as Out;
use knowton_proto::agent::v1::{Instruction, NodeMetrics, PodResult};
use knowton_tests::agent::{FakeAgent, batch, hello};
use knowton_tests::promtool::promtool;
use knowton_tests::{Db, TestCoordinator};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A coordinator with two tenants, its CA's certificate, and the CA
/// to issue agent certificates.
async fn setup(dir: &Path) -> (TestCoordinator, String, CertificateAuthority) {
    certs::init(dir, &[], false).unwrap();
    let kt = TestCoordinator::start_with_agents(Db::Sqlite, dir).await;
    kt.provision("acme", "professional").await;
    kt.provision("globex", "basic").await;
    let authority = CertificateAuthority::load(dir).unwrap();
    (kt, authority.cert_pem().to_owned(), authority)
}

/// A fake agent for `node` with a certificate from `authority`, its
/// stream open (the welcome not read yet).
async fn connect(
    kt: &TestCoordinator,
    ca: &str,
    authority: &CertificateAuthority,
    node: &str,
) -> FakeAgent {
    let issued = authority.issue_agent(node, Validity::days(30)).unwrap();
    FakeAgent::open(kt.grpc_addr(), ca, Some(&issued), hello(node))
        .await
        .unwrap()
}

async fn next_instruction(agent: &mut FakeAgent) -> Instruction {
    match agent.next().await.unwrap() {
        Out::Instruction(instruction) => instruction,
        other => panic!("expected an instruction, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenants_slow_threshold_reaches_the_agents() {
    let dir = tempfile::tempdir().unwrap();
    let (kt, ca, authority) = setup(dir.path()).await;
    let mut agent = connect(&kt, &ca, &authority, "node-a").await;
    let welcome = match agent.next().await.unwrap() {
        Out::Welcome(welcome) => welcome.instruction.unwrap(),
        other => panic!("expected welcome, got {other:?}"),
    };
    assert_eq!(
        welcome.slow_threshold_ms, 1000,
        "the default response-time warning"
    );
    assert!(welcome.tenant_slow_threshold_ms.is_empty(), "{welcome:?}");
    // The agent probes acme: the engine evaluates it, and from then on
    // publishes its thresholds.
    let probed = PodResult {
        tenant: "acme".to_owned(),
        pod: "acme-backend-0".to_owned(),
        ..PodResult::default()
    };
    agent.send(batch(1, vec![probed], None)).await;
    assert_eq!(agent.ack().await, 1);

    let thresholds = json!({"responseTimeMs": {"warning": 250.0, "critical": 500.0}});
    let reply = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme/thresholds",
            Some(thresholds),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let changed = next_instruction(&mut agent).await;
    assert_eq!(changed.slow_threshold_ms, 1000);
    assert_eq!(
        changed.tenant_slow_threshold_ms,
        [("acme".to_owned(), 250)].into(),
        "only the tenant off the default"
    );
    assert!(!changed.probe_now && changed.probe_interval_ms == 0);

    // An agent connecting now is welcomed with it.
    let mut late = connect(&kt, &ca, &authority, "node-b").await;
    match late.next().await.unwrap() {
        Out::Welcome(welcome) => assert_eq!(
            welcome.instruction.unwrap().tenant_slow_threshold_ms,
            [("acme".to_owned(), 250)].into()
        ),
        other => panic!("expected welcome, got {other:?}"),
    }

    let reply = kt
        .admin(Method::DELETE, "/api/v1/tenants/acme/thresholds", None)
        .await;
    assert!(reply.status.is_success(), "{}", reply.body);
    let reset = next_instruction(&mut agent).await;
    assert_eq!(reset.slow_threshold_ms, 1000);
    assert!(reset.tenant_slow_threshold_ms.is_empty(), "{reset:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_figures_reach_the_agents_api_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (kt, ca, authority) = setup(dir.path()).await;
    let mut agent = connect(&kt, &ca, &authority, "node-a").await;
    assert!(matches!(agent.next().await.unwrap(), Out::Welcome(_)));
    let figures = NodeMetrics {
        cpu_percent: 37.5,
        memory_used_bytes: 3 << 30,
        memory_total_bytes: 8 << 30,
        disk_used_bytes: 40 << 30,
        disk_total_bytes: 100 << 30,
    };
    agent.send(batch(1, Vec::new(), Some(figures))).await;
    assert_eq!(agent.ack().await, 1);

    let reply = kt.admin(Method::GET, "/api/v1/agents", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let shown = &reply.body["agents"][0]["nodeMetrics"];
    assert_eq!(shown["cpuPercent"], 37.5, "{}", reply.body);
    assert_eq!(shown["memoryUsedBytes"], 3u64 << 30);
    assert_eq!(shown["memoryTotalBytes"], 8u64 << 30);
    assert_eq!(shown["diskUsedBytes"], 40u64 << 30);
    assert_eq!(shown["diskTotalBytes"], 100u64 << 30);
    assert!(shown["receivedAt"].is_string());

    let text = kt.scrape().await;
    for line in [
        "knowton_node_cpu_usage_ratio{node=\"node-a\"} 0.375",
        &format!(
            "knowton_node_memory_used_bytes{{node=\"node-a\"}} {}",
            3u64 << 30
        ),
        &format!(
            "knowton_node_memory_total_bytes{{node=\"node-a\"}} {}",
            8u64 << 30
        ),
        &format!(
            "knowton_node_disk_used_bytes{{node=\"node-a\"}} {}",
            40u64 << 30
        ),
        &format!(
            "knowton_node_disk_total_bytes{{node=\"node-a\"}} {}",
            100u64 << 30
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    let (ok, report) = promtool(&text);
    assert!(ok, "promtool check metrics: {report}\n{text}");
}
