//! The registry's bounds and staleness, on paused tokio time.

use std::time::Duration;

use knowton_proto::agent::v1::{Hello, NodeMetrics, PodResult, ResultBatch};

use super::*;
use crate::ingest::pods::{STALE_POD, TenantPods};

fn latest(node: &str) -> LatestResult {
    LatestResult {
        node: node.to_owned(),
        received_at: Utc::now(),
        received: Instant::now(),
        result: PodResult::default(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_keeps_a_bounded_number_of_a_tenants_pods_and_others_are_unaffected() {
    let mut t = TenantPods::default();
    for i in 0..MAX_PODS_PER_NODE {
        assert!(t.keep(format!("flood-{i}"), latest("a")));
    }
    assert!(!t.keep("one-more".into(), latest("a")));
    assert!(
        t.keep("flood-0".into(), latest("a")),
        "a known pod is updated"
    );
    assert!(t.keep("web-0".into(), latest("b")), "another node has room");
    // A pod rescheduled from b to a does not fit; from a to b it does.
    assert!(!t.keep("web-0".into(), latest("a")));
    assert!(t.keep("flood-1".into(), latest("b")));
    assert_eq!(t.on_node("a"), MAX_PODS_PER_NODE - 1);
    assert_eq!(t.on_node("b"), 2);
    assert!(t.keep("one-more".into(), latest("a")));
}

#[tokio::test(start_paused = true)]
async fn stale_pods_make_room() {
    let mut t = TenantPods::default();
    for i in 0..MAX_PODS_PER_NODE {
        assert!(t.keep(format!("old-{i}"), latest("a")));
    }
    tokio::time::advance(STALE_POD - Duration::from_secs(1)).await;
    assert!(
        !t.keep("new-0".into(), latest("a")),
        "not stale yet: no room"
    );
    // Looked for stale pods a moment ago: not again within the minute.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(!t.keep("new-0".into(), latest("a")));
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(t.keep("new-0".into(), latest("a")));
    assert_eq!(t.pods.len(), 1, "the stale pods were forgotten");
    assert_eq!(t.on_node("a"), 1);
}

fn hello(node: &str, session: &str) -> Hello {
    Hello {
        protocol_version: 1,
        node_name: node.to_owned(),
        agent_version: "test".to_owned(),
        session_id: session.to_owned(),
    }
}

fn batch(sequence: u64, pods: impl IntoIterator<Item = String>) -> ResultBatch {
    ResultBatch {
        sequence,
        results: pods
            .into_iter()
            .map(|pod| PodResult {
                tenant: "acme".to_owned(),
                pod,
                ..PodResult::default()
            })
            .collect(),
        node: None,
    }
}

fn remote() -> SocketAddr {
    "127.0.0.1:4000".parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_full_node_gets_room_once_its_old_pods_are_stale() {
    let registry = Registry::default();
    let directory = TenantDirectory::default();
    directory.insert("acme");
    let (conn, _) = registry.connect(&hello("node-a", "s1"), 1, remote());
    let flood = (0..MAX_PODS_PER_NODE).map(|i| format!("old-{i}"));
    registry.ingest(&conn, batch(1, flood), &directory);
    let replaced = || batch(2, ["new-0".to_owned()]);
    let BatchOutcome::Stored { accepted, .. } = registry.ingest(&conn, replaced(), &directory)
    else {
        panic!("stored")
    };
    assert_eq!(accepted, 0, "the node is full");
    tokio::time::advance(STALE_POD).await;
    let BatchOutcome::Stored { accepted, .. } =
        registry.ingest(&conn, batch(3, ["new-0".to_owned()]), &directory)
    else {
        panic!("stored")
    };
    assert_eq!(accepted, 1, "the stale pods made room");
    let pods = registry.latest("acme");
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].1.received, Instant::now());
}

#[tokio::test(start_paused = true)]
async fn the_latest_node_figures_are_kept_across_sessions() {
    let registry = Registry::default();
    let directory = TenantDirectory::default();
    let (conn, _) = registry.connect(&hello("node-a", "s1"), 1, remote());
    let figures = NodeMetrics {
        cpu_percent: 12.5,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        disk_used_bytes: 10 << 30,
        disk_total_bytes: 100 << 30,
    };
    let mut first = batch(1, []);
    first.node = Some(figures);
    registry.ingest(&conn, first, &directory);
    // A batch without figures (a later flush of the same round) keeps them.
    registry.ingest(&conn, batch(2, []), &directory);
    let agent = &registry.agents()[0];
    assert_eq!(
        agent.node_metrics.as_ref().map(|n| n.metrics),
        Some(figures)
    );
    registry.disconnect(&conn);
    registry.connect(&hello("node-a", "s2"), 1, remote());
    let agent = &registry.agents()[0];
    assert!(agent.connected);
    assert_eq!(
        agent.node_metrics.as_ref().map(|n| n.metrics),
        Some(figures)
    );
}

/// One pod's result for `tenant`: healthy, or its API health failed.
fn result_of(tenant: &str, healthy: bool) -> PodResult {
    let outcome = |ok: bool| knowton_proto::agent::v1::ProbeOutcome {
        ok,
        ..Default::default()
    };
    PodResult {
        tenant: tenant.to_owned(),
        pod: format!("{tenant}-web"),
        liveness: Some(outcome(true)),
        api_health: Some(outcome(healthy)),
        ..PodResult::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_in_a_round_of_healthy_results_is_handed_over_first() {
    let registry = Registry::default();
    let directory = TenantDirectory::default();
    let tenants: Vec<String> = (0..200).map(|i| format!("t{i:03}")).collect();
    for t in &tenants {
        directory.insert(t);
    }
    let (conn, _) = registry.connect(&hello("node-a", "s1"), 1, remote());
    let round = |sequence: u64, failing: &str| ResultBatch {
        sequence,
        results: tenants.iter().map(|t| result_of(t, t != failing)).collect(),
        node: None,
    };
    registry.ingest(&conn, round(1, "t150"), &directory);

    let first = registry.take_changed(64);
    assert_eq!(first.urgent, ["t150"], "the failure, whatever its place");
    assert_eq!(first.routine, tenants[..64], "the oldest healthy ones");
    assert!(first.more);
    // A failure arriving while the round is judged goes before its rest.
    let late = ResultBatch {
        sequence: 2,
        results: vec![result_of("t199", false)],
        node: None,
    };
    registry.ingest(&conn, late, &directory);
    let second = registry.take_changed(64);
    assert_eq!(second.urgent, ["t199"]);
    assert_eq!(second.routine, tenants[64..128]);
    // t150 and t199 were handed over already: not again.
    let rest: Vec<&String> = tenants[128..]
        .iter()
        .filter(|t| *t != "t150" && *t != "t199")
        .collect();
    let third = registry.take_changed(64);
    assert!(third.urgent.is_empty());
    assert_eq!(third.routine.iter().collect::<Vec<_>>(), rest[..64]);
    assert!(third.more);
    let fourth = registry.take_changed(64);
    assert_eq!(fourth.routine.iter().collect::<Vec<_>>(), rest[64..]);
    assert!(!fourth.more);

    // A tenant in the engine's attention: its healthy results are urgent
    // too (what resolves its alert is not held up), until it is let go.
    registry.set_attention("t007", true);
    registry.ingest(&conn, round(3, ""), &directory);
    let next = registry.take_changed(64);
    assert_eq!(next.urgent, ["t007"]);
    assert!(!next.routine.contains(&"t007".to_owned()));
    while registry.take_changed(64).more {}
    registry.set_attention("t007", false);
    registry.ingest(&conn, round(4, ""), &directory);
    assert!(registry.take_changed(64).urgent.is_empty());
}
