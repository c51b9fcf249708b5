//! A valid agent streams results that are stored, acknowledged and visible.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_agent_streams_results_that_are_stored_acked_and_visible() {
    let dir = tempfile::tempdir().unwrap();
    let (kt, ca, node) = setup(dir.path()).await;
    let mut agent = FakeAgent::open(kt.grpc_addr(), &ca, Some(&node), hello("node-a"))
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
            None,
        ))
        .await;
    assert_eq!(agent.ack().await, 1);
    agent
        .send(batch(2, vec![pod("acme", "acme-backend-1", 2_000)], None))
        .await;
    assert_eq!(agent.ack().await, 2);
    // A re-send of an acknowledged batch is acknowledged again and not stored twice.
    agent
        .send(batch(1, vec![pod("acme", "acme-backend-0", 99_000)], None))
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
    let mut again = FakeAgent::open(kt.grpc_addr(), &ca, Some(&node), hello("node-a"))
        .await
        .unwrap();
    match again.next().await.unwrap() {
        Out::Welcome(w) => assert_eq!(w.acked_sequence, 2),
        other => panic!("expected welcome, got {other:?}"),
    }
}
