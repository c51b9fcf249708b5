//! The agent stream against a real coordinator over real mutual TLS: who is
//! let in, what is stored and acknowledged, what is refused, and certificate
//! rotation without a restart.

use std::path::Path;
use std::time::Duration;

use knowton_coordinator::certs::{self, CertificateAuthority, Issued, Validity};
use knowton_proto::PROTOCOL_VERSION;
use knowton_proto::agent::v1::agent_message::Body as In;
use knowton_proto::agent::v1::agent_stream_client::AgentStreamClient;
use knowton_proto::agent::v1::coordinator_message::Body as Out;
use knowton_proto::agent::v1::{
    AgentMessage, CoordinatorMessage, Hello, PodResult, ProbeOutcome, ResultBatch, StorageSample,
};
use knowton_tests::{Db, TestCoordinator, eventually};
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<CoordinatorMessage>,
}

fn hello(node: &str) -> AgentMessage {
    AgentMessage {
        body: Some(In::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            node_name: node.to_owned(),
            agent_version: "test".to_owned(),
            session_id: "session-1".to_owned(),
        })),
    }
}

fn batch(sequence: u64, results: Vec<PodResult>) -> AgentMessage {
    AgentMessage {
        body: Some(In::Batch(ResultBatch {
            sequence,
            results,
            node: None,
        })),
    }
}

fn pod(tenant: &str, pod: &str, latency_us: u64) -> PodResult {
    PodResult {
        tenant: tenant.to_owned(),
        pod: pod.to_owned(),
        pod_ip: "127.0.0.2".to_owned(),
        observed_at_unix_ms: 1_790_000_000_000,
        liveness: Some(ProbeOutcome {
            ok: true,
            status_code: 200,
            latency_us,
            ..Default::default()
        }),
        api_health: Some(ProbeOutcome {
            ok: true,
            status_code: 200,
            latency_us,
            database_ok: Some(true),
            ..Default::default()
        }),
        metrics: None,
        storage: Some(StorageSample {
            used_bytes: 1 << 30,
            capacity_bytes: 10 << 30,
        }),
    }
}

async fn channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Opens a stream and sends `first`; returns the agent or the refusal.
async fn open(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
    first: AgentMessage,
) -> Result<Agent, tonic::Status> {
    let channel = channel(addr, ca_pem, identity)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.unwrap();
    let inbound = AgentStreamClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Agent { tx, inbound })
}

impl Agent {
    /// The next message that is not a heartbeat.
    async fn next(&mut self) -> Result<Out, tonic::Status> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
                .await
                .expect("a message within 10 s")?
                .expect("the stream is open");
            match msg.body {
                Some(Out::Heartbeat(_)) => continue,
                Some(body) => return Ok(body),
                None => panic!("empty message"),
            }
        }
    }

    async fn send(&self, msg: AgentMessage) {
        self.tx.send(msg).await.unwrap();
    }

    async fn ack(&mut self) -> u64 {
        match self.next().await.unwrap() {
            Out::Ack(ack) => ack.sequence,
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

async fn setup(dir: &Path) -> (TestCoordinator, String, Issued) {
    certs::init(dir, &[], false).unwrap();
    let kt = TestCoordinator::start_with_agents(Db::Sqlite, dir).await;
    kt.provision("acme", "professional").await;
    let ca = CertificateAuthority::load(dir).unwrap();
    let node = ca.issue_agent("node-a", Validity::days(30)).unwrap();
    (kt, ca.cert_pem().to_owned(), node)
}

async fn agents(kt: &TestCoordinator) -> serde_json::Value {
    let reply = kt.admin(Method::GET, "/api/v1/agents", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_agent_streams_results_that_are_stored_acked_and_visible() {
    let dir = tempfile::tempdir().unwrap();
    let (kt, ca, node) = setup(dir.path()).await;
    let mut agent = open(kt.grpc_addr(), &ca, Some(&node), hello("node-a"))
        .await
        .unwrap();
    match agent.next().await.unwrap() {
        Out::Welcome(w) => {
            assert_eq!(
                (w.protocol_version, w.acked_sequence),
                (PROTOCOL_VERSION, 0)
            );
            assert_eq!(
                w.instruction.unwrap().probe_interval_ms,
                0,
                "agents keep their own interval"
            );
        }
        other => panic!("expected welcome, got {other:?}"),
    }

    agent
        .send(batch(
            1,
            vec![
                pod("acme", "acme-backend-0", 12_500),
                pod("ghost", "ghost-0", 1),
            ],
        ))
        .await;
    assert_eq!(agent.ack().await, 1);
    agent
        .send(batch(2, vec![pod("acme", "acme-backend-1", 2_000)]))
        .await;
    assert_eq!(agent.ack().await, 2);
    // A re-send of an acknowledged batch is acknowledged again and not stored twice.
    agent
        .send(batch(1, vec![pod("acme", "acme-backend-0", 99_000)]))
        .await;
    assert_eq!(agent.ack().await, 2);

    let health = kt.monitoring_health("acme").await;
    assert_eq!(health.status, StatusCode::OK);
    let health = health.body;
    let pods = health["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 2, "{health}");
    assert_eq!(pods[0]["pod"], "acme-backend-0");
    assert_eq!(pods[0]["node"], "node-a");
    assert_eq!(
        pods[0]["liveness"]["latencyMs"], 12.5,
        "the duplicate did not overwrite"
    );
    assert_eq!(pods[0]["apiHealth"]["databaseOk"], true);
    assert_eq!(pods[0]["storage"]["usedBytes"], 1u64 << 30);
    assert!(pods[0]["metrics"].is_null(), "missing metrics stay missing");

    let body = agents(&kt).await;
    let a = &body["agents"][0];
    assert_eq!(
        (a["node"].as_str(), a["connected"].as_bool()),
        (Some("node-a"), Some(true))
    );
    assert_eq!(a["resultsReceived"], 2);
    assert_eq!(a["lastSequence"], 2);
    assert_eq!(
        body["counters"]["unknownTenantResults"], 1,
        "results for unknown tenants are dropped and counted"
    );
    assert_eq!(body["counters"]["duplicateBatches"], 1);
    let ghost = kt.monitoring_health("ghost").await;
    assert_eq!(ghost.status, StatusCode::NOT_FOUND, "no tenant was created");

    // Reconnecting with the same session learns what is already safe.
    drop(agent);
    let mut again = open(kt.grpc_addr(), &ca, Some(&node), hello("node-a"))
        .await
        .unwrap();
    match again.next().await.unwrap() {
        Out::Welcome(w) => assert_eq!(w.acked_sequence, 2),
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_impostors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (kt, ca, node) = setup(dir.path()).await;
    let addr = kt.grpc_addr();

    // A certificate for node-a saying it is node-b.
    let err = open(addr, &ca, Some(&node), hello("node-b"))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // No client certificate, another CA's, an expired one: no TLS session at all.
    let other = CertificateAuthority::generate("other")
        .unwrap()
        .issue_agent("node-a", Validity::days(30))
        .unwrap();
    let expired = CertificateAuthority::load(dir.path())
        .unwrap()
        .issue_agent(
            "node-a",
            Validity {
                not_before: (2020, 1, 1),
                not_after: (2021, 1, 1),
            },
        )
        .unwrap();
    for (what, identity) in [
        ("no certificate", None),
        ("another CA", Some(&other)),
        ("expired", Some(&expired)),
    ] {
        let err = open(addr, &ca, identity, hello("node-a"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} was let in"));
        // With TLS 1.3 the client may only learn of the refusal as a closed connection.
        assert!(
            matches!(
                err.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            ),
            "{what}: {err}"
        );
    }
    // The first message must be a hello.
    let err = open(addr, &ca, Some(&node), batch(1, vec![]))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::InvalidArgument);

    let body = agents(&kt).await;
    assert_eq!(body["counters"]["hellosRejected"], 1);
    assert!(
        body["counters"]["handshakesFailed"].as_u64().unwrap() >= 2,
        "{body}"
    );
    assert!(body["agents"].as_array().unwrap().is_empty());
    // A valid agent still gets in.
    assert!(open(addr, &ca, Some(&node), hello("node-a")).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_says_hello_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path(), &[], false).unwrap();
    let db = knowton_tests::TestDb::new(Db::Sqlite).await;
    let mut args = knowton_coordinator::config::ServeArgs::for_dir(db.dir.path());
    args.database_url = db.url.clone();
    args.admin_token = Some(knowton_tests::ADMIN_TOKEN.into());
    args.tls_dir = Some(dir.path().to_owned());
    args.agent_hello_timeout_seconds = 1;
    let kt = TestCoordinator::start_with(db, args).await;
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    let node = ca.issue_agent("node-a", Validity::days(30)).unwrap();
    let channel = channel(kt.grpc_addr(), ca.cert_pem(), Some(&node))
        .await
        .unwrap();
    let (_tx, rx) = mpsc::channel::<AgentMessage>(1);
    let err = AgentStreamClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .expect_err("no hello, no stream");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(agents(&kt).await["counters"]["streamsRejected"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_stream_is_cut_off_without_harming_others() {
    let dir = tempfile::tempdir().unwrap();
    let (kt, ca, node_a) = setup(dir.path()).await;
    let node_b = CertificateAuthority::load(dir.path())
        .unwrap()
        .issue_agent("node-b", Validity::days(30))
        .unwrap();
    let mut good = open(kt.grpc_addr(), &ca, Some(&node_a), hello("node-a"))
        .await
        .unwrap();
    good.next().await.unwrap();
    let mut bad = open(kt.grpc_addr(), &ca, Some(&node_b), hello("node-b"))
        .await
        .unwrap();
    bad.next().await.unwrap();

    // Over 4 MiB in one message.
    let mut huge = pod("acme", "big", 1);
    huge.liveness.as_mut().unwrap().detail = "x".repeat(5 * 1024 * 1024);
    bad.send(batch(1, vec![huge])).await;
    let err = bad
        .next()
        .await
        .expect_err("the oversized message ends the stream");
    assert!(
        matches!(
            err.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::Internal | Code::Unknown
        ),
        "{err}"
    );

    // A second hello on an open stream.
    let mut twice = open(kt.grpc_addr(), &ca, Some(&node_b), hello("node-b"))
        .await
        .unwrap();
    twice.next().await.unwrap();
    twice.send(hello("node-b")).await;
    assert_eq!(
        twice.next().await.err().unwrap().code(),
        Code::InvalidArgument
    );

    // The good agent is unaffected.
    good.send(batch(1, vec![pod("acme", "acme-0", 1_000)]))
        .await;
    assert_eq!(good.ack().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (kt, old_ca, old_node) = setup(dir.path()).await;
    let mut established = open(kt.grpc_addr(), &old_ca, Some(&old_node), hello("node-a"))
        .await
        .unwrap();
    established.next().await.unwrap();

    // A new CA and server certificate replace the files in place.
    certs::init(dir.path(), &[], true).unwrap();
    let new_ca = CertificateAuthority::load(dir.path()).unwrap();
    let new_node = new_ca.issue_agent("node-b", Validity::days(30)).unwrap();
    let new_ca_pem = new_ca.cert_pem().to_owned();
    let addr = kt.grpc_addr();
    eventually(
        Duration::from_secs(15),
        "the coordinator to serve the new certificates",
        || {
            let (ca, node) = (new_ca_pem.clone(), new_node.clone());
            async move {
                open(addr, &ca, Some(&node), hello("node-b"))
                    .await
                    .ok()
                    .map(|_| ())
            }
        },
    )
    .await;
    // Old certificates are no longer accepted for new connections...
    assert!(
        open(addr, &old_ca, Some(&old_node), hello("node-a"))
            .await
            .is_err()
    );
    // ...and the stream established before the rotation still works.
    established
        .send(batch(1, vec![pod("acme", "acme-0", 1_000)]))
        .await;
    assert_eq!(established.ack().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_is_paced_and_bounded_without_harming_others() {
    const RATE: u32 = 5_000;
    const BATCH: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path(), &[], false).unwrap();
    let kt = TestCoordinator::start_with_agents_and(Db::Sqlite, dir.path(), |args| {
        args.agent_max_results_per_second = RATE;
    })
    .await;
    kt.provision("acme", "professional").await;
    let authority = CertificateAuthority::load(dir.path()).unwrap();
    let ca = authority.cert_pem().to_owned();
    let node_a = authority.issue_agent("node-a", Validity::days(30)).unwrap();
    let flooder = authority
        .issue_agent("node-flood", Validity::days(30))
        .unwrap();

    // The flooder sends batches of invented pods as fast as the stream takes
    // them, and counts its acknowledgements.
    let mut flood = open(kt.grpc_addr(), &ca, Some(&flooder), hello("node-flood"))
        .await
        .unwrap();
    flood.next().await.unwrap();
    let started = tokio::time::Instant::now();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = tokio::spawn({
        let tx = flood.tx.clone();
        async move {
            for sequence in 1.. {
                let results = (0..BATCH)
                    .map(|i| pod("acme", &format!("flood-{sequence}-{i}"), 1))
                    .collect();
                if tx.send(batch(sequence, results)).await.is_err() {
                    return;
                }
            }
        }
    });
    let reader = tokio::spawn({
        let acked = acked.clone();
        async move {
            while let Ok(Out::Ack(ack)) = flood.next().await {
                acked.store(ack.sequence, std::sync::atomic::Ordering::Relaxed);
            }
            panic!("the flooding stream was cut off instead of paced");
        }
    });

    // Meanwhile a normal agent streams, and every batch is acknowledged in order.
    let mut good = open(kt.grpc_addr(), &ca, Some(&node_a), hello("node-a"))
        .await
        .unwrap();
    good.next().await.unwrap();
    for sequence in 1..=20 {
        let results = (0..3)
            .map(|i| pod("acme", &format!("acme-{i}"), sequence * 1_000))
            .collect();
        good.send(batch(sequence, results)).await;
        assert_eq!(good.ack().await, sequence);
    }
    let flood_acked = eventually(Duration::from_secs(30), "the flood goes on", || async {
        let n = acked.load(std::sync::atomic::Ordering::Relaxed);
        (n >= 20).then_some(n)
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();

    // Paced: no more than the rate allows over the time it ran, plus one
    // second's burst and the batch that went over.
    let processed = flood_acked as f64 * BATCH as f64;
    let allowed = f64::from(RATE) * (elapsed + 1.0) + BATCH as f64;
    assert!(
        processed <= allowed,
        "{processed} results processed in {elapsed:.2} s at {RATE}/s"
    );
    let body = agents(&kt).await;
    assert!(
        body["counters"]["batchesThrottled"].as_u64().unwrap() > 0,
        "{body}"
    );
    assert!(
        body["counters"]["podsOverLimit"].as_u64().unwrap() > 0,
        "invented pods beyond the tenant's bound are dropped: {body}"
    );

    // The normal agent's results are all there, and the tenant's pods are bounded.
    let health = kt.monitoring_health("acme").await.body;
    let pods = health["pods"].as_array().unwrap();
    assert!(
        pods.len() <= knowton_coordinator::ingest::registry::MAX_PODS_PER_NODE + 3,
        "{} pods kept",
        pods.len()
    );
    for i in 0..3 {
        let pod = pods
            .iter()
            .find(|p| p["pod"] == format!("acme-{i}"))
            .unwrap_or_else(|| panic!("acme-{i} missing"));
        assert_eq!(pod["node"], "node-a");
        assert_eq!(
            pod["liveness"]["latencyMs"], 20.0,
            "the last batch's result"
        );
    }
    sender.abort();
    reader.abort();
}

/// On Kubernetes an agent's certificate may name its pod (issued per pod by
/// the cert-manager csi-driver): it is let in for the node the API server
/// says the pod runs on, and only if the pod is an agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_certificates_are_let_in_for_their_pods_node_only() {
    use knowton_tests::fake_kube::{FakeKube, TestPod};

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
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    certs::init(dir.path(), &[], false).unwrap();
    let kt = TestCoordinator::start_with_agents_and(Db::Sqlite, dir.path(), |args| {
        args.kube.no_cluster = false;
        args.kube.kubeconfig = Some(kubeconfig.clone());
        args.kube.no_leader_election = true;
    })
    .await;
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    let ca_pem = ca.cert_pem().to_owned();
    let cert = |cn: &str| ca.issue_agent(cn, Validity::days(1)).unwrap();

    let mut agent = open(
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
        let err = open(kt.grpc_addr(), &ca_pem, Some(&cert(cn)), hello(node))
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
    use knowton_tests::fake_kube::{FakeKube, TestPod};

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
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    certs::init(dir.path(), &[], false).unwrap();
    let kt = TestCoordinator::start_with_agents_and(Db::Sqlite, dir.path(), |args| {
        args.kube.no_cluster = false;
        args.kube.kubeconfig = Some(kubeconfig.clone());
        args.kube.no_leader_election = true;
    })
    .await;
    kt.provision("acme", "professional").await;
    kt.provision("globex", "professional").await;
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    let ca_pem = ca.cert_pem().to_owned();
    let cert = |cn: &str| ca.issue_agent(cn, Validity::days(1)).unwrap();

    let mut node_a = open(
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
            .send(batch(sequence, vec![pod("acme", "acme-0", 1_000)]))
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
    let mut node_b = open(
        kt.grpc_addr(),
        &ca_pem,
        Some(&cert("node-b")),
        hello("node-b"),
    )
    .await
    .unwrap();
    assert!(matches!(node_b.next().await.unwrap(), Out::Welcome(_)));
    node_b
        .send(batch(1, vec![pod("acme", "acme-1", 3_000)]))
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
