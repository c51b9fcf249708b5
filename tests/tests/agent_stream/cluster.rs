//! With a cluster: pod certificates are let in for their pod's node, and
//! results are bound to the pod's node and tenant namespace.

use knowton_tests::fake_kube::FakeKube;

use super::*;

/// A coordinator with the agent listener (its certificates in the returned
/// directory) and `fake` as its cluster.
async fn coordinator_on(fake: &FakeKube) -> (tempfile::TempDir, TestCoordinator) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    certs::init(dir.path(), &[], false).unwrap();
    let kt = TestCoordinator::start_with_agents_and(Db::Sqlite, dir.path(), |args| {
        args.kube.no_cluster = false;
        args.kube.kubeconfig = Some(kubeconfig.clone());
    })
    .await;
    (dir, kt)
}

/// On Kubernetes an agent's certificate may name its pod (issued per pod by
/// the cert-manager csi-driver): it is let in for the node the API server
/// says the pod runs on, and only if the pod is an agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_certificates_are_let_in_for_their_pods_node_only() {
    use knowton_tests::fake_kube::TestPod;

    let fake = FakeKube::start().await;
    for (name, node, agent) in [
        ("agent-x1", "node-a", true),
        ("agent-x2", "node-b", true),
        ("impostor", "node-a", false),
    ] {
        let mut pod = TestPod::new("knowton-system", name)
            .on(node)
            .running("10.0.0.9");
        if agent {
            pod = pod.label("app.kubernetes.io/name", "knowton-agent");
        }
        fake.put_pod(pod.json());
    }
    let (dir, kt) = coordinator_on(&fake).await;
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    let ca_pem = ca.cert_pem().to_owned();
    let cert = |cn: &str| ca.issue_agent(cn, Validity::days(1)).unwrap();

    let mut agent = FakeAgent::open(
        kt.grpc_addr(),
        &ca_pem,
        Some(&cert("agent-x1.knowton-system.pod")),
        hello("node-a"),
    )
    .await
    .expect("the agent pod on node-a is let in");
    assert!(matches!(agent.next().await.unwrap(), Out::Welcome(_)));

    for (cn, node, why) in [
        (
            "agent-x1.knowton-system.pod",
            "node-b",
            "runs on \"node-a\"",
        ),
        // Naming the certificate's own CN skipped the check (issue 11,
        // finding 8): it is checked like any other name.
        (
            "agent-x1.knowton-system.pod",
            "agent-x1.knowton-system.pod",
            "runs on \"node-a\"",
        ),
        ("impostor.knowton-system.pod", "node-a", "not an agent"),
        ("ghost.knowton-system.pod", "node-a", "does not exist"),
        (
            "agent-x1.default.pod",
            "node-a",
            "not in the agents' namespace",
        ),
    ] {
        let err = FakeAgent::open(kt.grpc_addr(), &ca_pem, Some(&cert(cn)), hello(node))
            .await
            .err()
            .unwrap_or_else(|| panic!("{cn} as {node} refused"));
        assert_eq!(err.code(), Code::PermissionDenied, "{cn}: {err}");
        assert!(err.message().contains(why), "{cn}: {}", err.message());
    }
}

/// Issue 11, finding 8: with a cluster, a result is stored only when it
/// comes from the agent of the node its pod runs on, for a pod in the
/// namespace of the tenant it names. An agent certificate for node-a
/// reporting a pod of node-b, a pod labelled as acme's in another
/// namespace, another tenant's pod or a pod that does not exist only
/// moves the rejection counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_results_are_bound_to_the_pods_node_and_tenant_namespace() {
    use knowton_tests::fake_kube::TestPod;

    let fake = FakeKube::start().await;
    for (namespace, name, tenant, node) in [
        ("knowton-tenant-acme", "acme-0", "acme", "node-a"),
        ("knowton-tenant-acme", "acme-1", "acme", "node-b"),
        ("default", "acme-evil", "acme", "node-a"),
        ("knowton-tenant-globex", "globex-0", "globex", "node-a"),
    ] {
        fake.put_pod(
            TestPod::new(namespace, name)
                .tenant(tenant)
                .on(node)
                .running("10.0.0.9")
                .json(),
        );
    }
    let (dir, kt) = coordinator_on(&fake).await;
    kt.provision("acme", "professional").await;
    kt.provision("globex", "professional").await;
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    let ca_pem = ca.cert_pem().to_owned();
    let cert = |cn: &str| ca.issue_agent(cn, Validity::days(1)).unwrap();

    let mut node_a = FakeAgent::open(
        kt.grpc_addr(),
        &ca_pem,
        Some(&cert("node-a")),
        hello("node-a"),
    )
    .await
    .unwrap();
    assert!(matches!(node_a.next().await.unwrap(), Out::Welcome(_)));
    let counters = || async { agents(&kt).await["counters"].clone() };

    // Until the coordinator has listed the tenant pods, nothing is stored.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut sequence = 0;
    loop {
        sequence += 1;
        node_a
            .send(batch(sequence, vec![pod("acme", "acme-0", 1_000)], None))
            .await;
        assert_eq!(node_a.ack().await, sequence);
        if counters().await["resultsAccepted"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tenant pods were never listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = counters().await;
    let not_listed = before["rejectedResults"]["pods_not_listed"]
        .as_u64()
        .unwrap_or_default();
    assert_eq!(not_listed, sequence - 1, "{before}");

    sequence += 1;
    node_a
        .send(batch(
            sequence,
            vec![
                pod("acme", "acme-1", 666),
                pod("acme", "acme-evil", 666),
                pod("acme", "globex-0", 666),
                pod("acme", "ghost", 666),
                pod("globex", "acme-0", 666),
                pod("acme", "acme-0", 2_000),
            ],
            None,
        ))
        .await;
    assert_eq!(node_a.ack().await, sequence);
    let health = kt.monitoring_health("acme").await.body;
    let pods: Vec<_> = health["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pod"].clone(),
                p["node"].clone(),
                p["liveness"]["latencyMs"].clone(),
            )
        })
        .collect();
    assert_eq!(
        pods,
        [("acme-0".into(), "node-a".into(), 2.0.into())],
        "only acme-0, from its own node"
    );
    assert!(
        kt.monitoring_health("globex").await.body["pods"]
            .as_array()
            .is_none_or(|p| p.is_empty()),
        "nothing reached globex"
    );

    let after = counters().await;
    assert_eq!(after["resultsAccepted"], 2, "{after}");
    assert_eq!(
        after["rejectedResults"],
        serde_json::json!({
            "unknown_tenant": 0,
            "not_in_tenant_namespace": 4,
            "wrong_node": 1,
            "pods_not_listed": not_listed,
            "pods_over_limit": 0,
        })
    );

    // The agent of node-b reports acme-1.
    let mut node_b = FakeAgent::open(
        kt.grpc_addr(),
        &ca_pem,
        Some(&cert("node-b")),
        hello("node-b"),
    )
    .await
    .unwrap();
    assert!(matches!(node_b.next().await.unwrap(), Out::Welcome(_)));
    node_b
        .send(batch(1, vec![pod("acme", "acme-1", 3_000)], None))
        .await;
    assert_eq!(node_b.ack().await, 1);
    let health = kt.monitoring_health("acme").await.body;
    assert_eq!(health["pods"][1]["pod"], "acme-1");
    assert_eq!(health["pods"][1]["node"], "node-b");

    let metrics = kt.scrape().await;
    for line in [
        "knowton_ingest_dropped_results_total{reason=\"wrong_node\"} 1",
        "knowton_ingest_dropped_results_total{reason=\"not_in_tenant_namespace\"} 4",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in /metrics");
    }
}
