//! The agent's Kubernetes discovery against the fake API server
//! (`knowton_tests::fake_kube`): the real kube client reading it, the pod
//! watcher following pods on its node, recovery after an outage and a
//! compaction (410 Gone), and end to end with a real coordinator and
//! simulated pods whose storage comes from the stats summary.
//!
//! Pods here use 127.0.0.40-127.0.0.59 (no other test file does); the
//! simulated pods listen on ports the system picks.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use knowton_agent::config::{Args, DiscoverySource};
use knowton_agent::discover::{self, Discovery, Target};
use knowton_coordinator::certs;
use knowton_coordinator::sim::SimPod;
use knowton_tests::agent::{RunningAgent, acme_pod_where, agent_metric, free_port};
use knowton_tests::fake_kube::{FakeKube, TestPod};
use knowton_tests::{Db, TestCoordinator, eventually};
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

const NODE: &str = "node-a";
const ACME: &str = "knowton-tenant-acme";

/// A Running pod of tenant `acme` on this node with IP 127.0.0.`host`.
fn acme_pod(name: &str, host: u8) -> TestPod {
    TestPod::new(ACME, name)
        .tenant("acme")
        .on(NODE)
        .running(&format!("127.0.0.{host}"))
}

/// Kubernetes discovery of `NODE` against `fake`, default pod port 3000.
async fn discover_from(fake: &FakeKube) -> (Discovery, Arc<AtomicBool>) {
    let synced = Arc::new(AtomicBool::new(false));
    let discovery = discover::start(
        DiscoverySource::Kubernetes {
            api_url: Some(fake.url()),
            pod_port: 3000,
            namespace_prefix: "knowton-tenant-".into(),
        },
        NODE,
        synced.clone(),
    )
    .await
    .unwrap();
    (discovery, synced)
}

/// (pod, url) of every target, in order.
fn current(discovery: &Discovery) -> Vec<(String, String)> {
    discovery
        .targets
        .borrow()
        .iter()
        .map(|t: &Target| (t.pod.clone(), t.url.clone()))
        .collect()
}

/// Waits until the targets are exactly `pods` (names, in order).
async fn targets_become(discovery: &Discovery, pods: &[&str], what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        let now = current(discovery);
        now.iter()
            .map(|(pod, _)| pod.as_str())
            .eq(pods.iter().copied())
            .then_some(())
    })
    .await;
}

/// The query parameters of the first list request (not a watch) to `path`.
fn first_list_query(fake: &FakeKube, path: &str) -> Option<Vec<(String, String)>> {
    fake.requests().iter().find_map(|request| {
        let url =
            reqwest::Url::parse(&format!("http://fake{}", request.split_once(' ')?.1)).ok()?;
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let watch = pairs.iter().any(|(k, _)| k == "watch");
        (url.path() == path && !watch).then_some(pairs)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_client_reads_lists_gets_and_watches_from_the_fake() {
    let fake = FakeKube::start().await;
    for (name, host) in [("acme-0", 40), ("acme-1", 41), ("acme-2", 42)] {
        fake.put_pod(acme_pod(name, host).http_port(8080).json());
    }
    fake.put_pod(
        TestPod::new(ACME, "elsewhere")
            .tenant("acme")
            .on("node-b")
            .json(),
    );

    // Through a kubeconfig, as `Config::infer` would load one.
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&fake.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let all: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default()
        .labels("knowton.io/tenant")
        .fields("spec.nodeName=node-a");
    let list = all.list(&on_node).await.unwrap();
    assert_eq!(list.items.len(), 3);
    assert_eq!(
        list.metadata.resource_version,
        Some(fake.resource_version().to_string())
    );
    let first = &list.items[0];
    assert_eq!(
        first.status.as_ref().unwrap().pod_ip.as_deref(),
        Some("127.0.0.40")
    );
    assert!(first.metadata.uid.is_some() && first.metadata.creation_timestamp.is_some());

    // Paged: kube follows the continue tokens.
    let page = all.list(&on_node.clone().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = all
        .list(&on_node.clone().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items[0].metadata.name.as_deref(), Some("acme-2"));

    let in_ns: Api<Pod> = Api::namespaced(client.clone(), ACME);
    let got = in_ns.get("acme-1").await.unwrap();
    assert_eq!(got.metadata.namespace.as_deref(), Some(ACME));
    match in_ns.get("absent").await.unwrap_err() {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
        }
        other => panic!("expected a 404 Status, got {other}"),
    }
    assert!(in_ns.get_opt("absent").await.unwrap().is_none());

    // The watcher: the initial list, then changes.
    let config = watcher::Config::default().fields("spec.nodeName=node-a");
    let mut events = std::pin::pin!(watcher::watcher(all, config));
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a watcher event")
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, Event::Init));
    for _ in 0..3 {
        assert!(matches!(next().await, Event::InitApply(_)));
    }
    assert!(matches!(next().await, Event::InitDone));
    fake.delete_pod(ACME, "acme-0");
    match next().await {
        Event::Delete(pod) => assert_eq!(pod.metadata.name.as_deref(), Some("acme-0")),
        other => panic!("expected Delete, got {other:?}"),
    }
    fake.put_pod(acme_pod("acme-3", 43).json());
    match next().await {
        Event::Apply(pod) => assert_eq!(pod.metadata.name.as_deref(), Some("acme-3")),
        other => panic!("expected Apply, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_the_running_tenant_pods_on_its_node() {
    let fake = FakeKube::start().await;
    fake.put_pod(acme_pod("acme-0", 44).http_port(8080).json());
    fake.put_pod(acme_pod("acme-1", 45).json());
    fake.put_pod(
        TestPod::new("knowton-tenant-globex", "globex-0")
            .tenant("globex")
            .on(NODE)
            .running("127.0.0.46")
            .json(),
    );
    fake.put_pod(acme_pod("elsewhere", 47).on("node-b").json());
    fake.put_pod(
        TestPod::new(ACME, "unlabelled")
            .on(NODE)
            .running("127.0.0.48")
            .json(),
    );
    fake.put_pod(TestPod::new(ACME, "pending").tenant("acme").on(NODE).json());
    fake.put_pod(
        TestPod::new(ACME, "no-ip")
            .tenant("acme")
            .on(NODE)
            .running_without_ip()
            .json(),
    );
    fake.put_pod(acme_pod("leaving", 49).terminating().json());
    // Labelled as acme's, but not in acme's namespace (issue 11, finding 8).
    fake.put_pod(
        TestPod::new("default", "impostor")
            .tenant("acme")
            .on(NODE)
            .running("127.0.0.59")
            .json(),
    );

    // Not synced, and no targets, before the first list completes.
    fake.hold_lists();
    let (discovery, synced) = discover_from(&fake).await;
    let query = eventually(Duration::from_secs(10), "the first list", || async {
        first_list_query(&fake, "/api/v1/pods")
    })
    .await;
    assert!(
        query.contains(&("fieldSelector".into(), "spec.nodeName=node-a".into())),
        "{query:?}"
    );
    assert!(
        query.contains(&("labelSelector".into(), "knowton.io/tenant".into())),
        "{query:?}"
    );
    assert!(
        !synced.load(Ordering::Relaxed),
        "not synced before the list"
    );
    assert!(current(&discovery).is_empty());

    fake.release_lists();
    eventually(Duration::from_secs(10), "the first sync", || async {
        synced.load(Ordering::Relaxed).then_some(())
    })
    .await;
    assert_eq!(
        current(&discovery),
        [
            ("acme-0".to_owned(), "http://127.0.0.44:8080".to_owned()),
            ("acme-1".to_owned(), "http://127.0.0.45:3000".to_owned()),
            ("globex-0".to_owned(), "http://127.0.0.46:3000".to_owned()),
        ],
        "synced means complete: every target is there at once"
    );

    fake.put_pod(acme_pod("pending", 50).json());
    targets_become(
        &discovery,
        &["acme-0", "acme-1", "pending", "globex-0"],
        "the pod that started running",
    )
    .await;
    fake.put_pod(acme_pod("no-ip", 51).json());
    targets_become(
        &discovery,
        &["acme-0", "acme-1", "no-ip", "pending", "globex-0"],
        "the pod that got an IP",
    )
    .await;
    fake.delete_pod(ACME, "acme-1");
    targets_become(
        &discovery,
        &["acme-0", "no-ip", "pending", "globex-0"],
        "the deleted pod gone",
    )
    .await;
    fake.put_pod(acme_pod("acme-0", 44).http_port(8080).on("node-b").json());
    targets_become(
        &discovery,
        &["no-ip", "pending", "globex-0"],
        "the pod moved to another node gone",
    )
    .await;
    fake.put_pod(acme_pod("pending", 50).terminating().json());
    targets_become(
        &discovery,
        &["no-ip", "globex-0"],
        "the terminating pod gone",
    )
    .await;
    // Replaced under the same name on this node: back, at its new address.
    fake.delete_pod(ACME, "acme-0");
    fake.put_pod(acme_pod("acme-0", 52).json());
    targets_become(
        &discovery,
        &["acme-0", "no-ip", "globex-0"],
        "the replacement",
    )
    .await;
    assert_eq!(current(&discovery)[0].1, "http://127.0.0.52:3000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_and_a_compaction_the_watch_relists_and_ends_up_correct() {
    let fake = FakeKube::start().await;
    for (name, host) in [("a", 53), ("b", 54), ("c", 55)] {
        fake.put_pod(acme_pod(name, host).json());
    }
    let (discovery, synced) = discover_from(&fake).await;
    targets_become(&discovery, &["a", "b", "c"], "the first sync").await;
    eventually(Duration::from_secs(10), "the watch", || async {
        (fake.open_watches() == 1).then_some(())
    })
    .await;

    // While the API server is down, pods change and the history is
    // compacted past the agent's resourceVersion.
    fake.down().await;
    fake.delete_pod(ACME, "a");
    fake.put_pod(acme_pod("d", 56).json());
    fake.put_pod(TestPod::new(ACME, "c").tenant("acme").on(NODE).json());
    fake.compact();
    assert_eq!(
        current(&discovery).len(),
        3,
        "the previous targets are kept meanwhile"
    );
    assert!(synced.load(Ordering::Relaxed), "still ready");

    fake.up().await;
    targets_become(&discovery, &["b", "d"], "the relisted targets").await;
    assert!(
        fake.expired_answers() >= 1,
        "the watch resumed from a compacted version and got 410 Gone"
    );
    let lists = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch="))
        .count();
    assert_eq!(lists, 2, "the first list, and the relist after 410");
}

fn agent_args(kt: &TestCoordinator, tls: &std::path::Path, fake: &FakeKube, pod_port: u16) -> Args {
    Args {
        kube_api_url: Some(fake.url()),
        pod_port,
        metrics_addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        ..Args::for_tests(NODE, kt.grpc_addr(), tls)
    }
}

async fn readyz(http: &reqwest::Client, port: u16) -> Option<(u16, String)> {
    let response = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// A kubelet summary: acme-backend-0 with two PVC volumes (plus a projected
/// and a ConfigMap volume), acme-backend-1 with no PVC.
fn stats_summary() -> Value {
    let gib = 1u64 << 30;
    json!({
        "node": {"nodeName": NODE, "startTime": "2026-11-29T08:00:00Z"},
        "pods": [
            {
                "podRef": {"name": "acme-backend-0", "namespace": ACME, "uid": "u0"},
                "startTime": "2026-11-29T08:01:00Z",
                "volume": [
                    {"name": "data", "usedBytes": 3 * gib, "capacityBytes": 8 * gib, "availableBytes": 5 * gib,
                     "pvcRef": {"name": "data-acme-backend-0", "namespace": ACME}},
                    {"name": "uploads", "usedBytes": gib, "capacityBytes": 2 * gib,
                     "pvcRef": {"name": "uploads-acme", "namespace": ACME}},
                    {"name": "kube-api-access-7xk2p", "usedBytes": 12288, "capacityBytes": 4 * gib},
                    {"name": "config", "usedBytes": 4096, "capacityBytes": 4 * gib}
                ]
            },
            {
                "podRef": {"name": "acme-backend-1", "namespace": ACME, "uid": "u1"},
                "volume": [{"name": "kube-api-access-q8f4z", "usedBytes": 12288, "capacityBytes": 4 * gib}]
            }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_discovering_through_kubernetes_reports_its_pods_and_their_storage() {
    let tls = tempfile::tempdir().unwrap();
    certs::init(tls.path(), &[], false).unwrap();
    certs::agent(tls.path(), NODE).unwrap();
    let kt = TestCoordinator::start_with_agents(Db::Sqlite, tls.path()).await;
    kt.provision("acme", "professional").await;

    // Pod 0 names its http port; pod 1 has none and is reached on --pod-port.
    let sim0 = SimPod::start(Ipv4Addr::new(127, 0, 0, 57), 0);
    let sim1 = SimPod::start(Ipv4Addr::new(127, 0, 0, 58), 0);
    let fake = FakeKube::start().await;
    fake.put_pod(
        acme_pod("acme-backend-0", 57)
            .http_port(sim0.addr().port())
            .json(),
    );
    fake.put_pod(acme_pod("acme-backend-1", 58).json());
    fake.set_stats_summary(NODE, stats_summary());
    fake.hold_lists();

    let args = agent_args(&kt, tls.path(), &fake, sim1.addr().port());
    let port = args.metrics_addr.port();
    let agent = RunningAgent::start(args);
    let http = kt.http.clone();

    // Not ready until the pods are listed.
    eventually(
        Duration::from_secs(10),
        "the agent's first list",
        || async { first_list_query(&fake, "/api/v1/pods") },
    )
    .await;
    let (status, body) =
        eventually(Duration::from_secs(10), "/readyz", || readyz(&http, port)).await;
    assert_eq!((status, body.as_str()), (503, "discovering pods"));
    fake.release_lists();
    eventually(Duration::from_secs(15), "the agent to be ready", || async {
        (readyz(&http, port).await?.0 == 200).then_some(())
    })
    .await;

    let health =
        |pod: &'static str, check: fn(&Value) -> bool| acme_pod_where(&kt, pod, pod, check);
    let gib = 1u64 << 30;
    let pod0 = health("acme-backend-0", |p| {
        p["liveness"]["ok"] == true && !p["storage"].is_null()
    })
    .await;
    assert_eq!(pod0["node"], NODE);
    assert_eq!(pod0["podIp"], "127.0.0.57");
    assert_eq!(pod0["apiHealth"]["databaseOk"], true);
    assert_eq!(
        pod0["storage"],
        json!({"usedBytes": 4 * gib, "capacityBytes": 10 * gib}),
        "the PVC volumes added up, nothing else"
    );
    let pod1 = health("acme-backend-1", |p| p["liveness"]["ok"] == true).await;
    assert_eq!(pod1["podIp"], "127.0.0.58");
    assert!(pod1["storage"].is_null(), "no PVC, no storage: {pod1}");

    // One summary per round at most, not one per pod.
    let summary_path = "/api/v1/nodes/node-a/proxy/stats/summary";
    let summaries = fake.requests_to(summary_path) as f64;
    let rounds = agent_metric(&http, port, "knowton_agent_probe_rounds_total")
        .await
        .unwrap();
    assert!(
        summaries >= 1.0 && summaries <= rounds + 1.0,
        "{summaries} summaries in {rounds} rounds"
    );

    // A summary that cannot be read is counted, and probing goes on.
    fake.remove_stats_summary(NODE);
    let probed = sim0.requests("/health");
    eventually(
        Duration::from_secs(15),
        "a counted summary failure",
        || async {
            let failures =
                agent_metric(&http, port, "knowton_agent_stats_summary_failures_total").await?;
            (failures >= 1.0 && sim0.requests("/health") > probed).then_some(())
        },
    )
    .await;

    // The pod deleted in Kubernetes is no longer probed, while the other
    // goes through three more rounds.
    fake.delete_pod(ACME, "acme-backend-0");
    knowton_tests::until_no_longer_probed(&sim0, &sim1, "the deleted pod to stop being probed")
        .await;

    agent.stop().await;
}
