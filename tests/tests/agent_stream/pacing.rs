//! A misbehaving stream is cut off and a flooding one paced, without
//! harming the others.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_stream_is_cut_off_without_harming_others() {
    let dir = tempfile::tempdir().unwrap();
    let (kt, ca, node_a) = setup(dir.path()).await;
    let node_b = CertificateAuthority::load(dir.path())
        .unwrap()
        .issue_agent("node-b", Validity::days(30))
        .unwrap();
    let mut good = FakeAgent::open(kt.grpc_addr(), &ca, Some(&node_a), hello("node-a"))
        .await
        .unwrap();
    good.next().await.unwrap();
    let mut bad = FakeAgent::open(kt.grpc_addr(), &ca, Some(&node_b), hello("node-b"))
        .await
        .unwrap();
    bad.next().await.unwrap();

    // Over 4 MiB in one message.
    let mut huge = pod("acme", "big", 1);
    huge.liveness.as_mut().unwrap().detail = "x".repeat(5 * 1024 * 1024);
    bad.send(batch(1, vec![huge], None)).await;
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
    let mut twice = FakeAgent::open(kt.grpc_addr(), &ca, Some(&node_b), hello("node-b"))
        .await
        .unwrap();
    twice.next().await.unwrap();
    twice.send(hello("node-b")).await;
    assert_eq!(
        twice.next().await.err().unwrap().code(),
        Code::InvalidArgument
    );

    // The good agent is unaffected.
    good.send(batch(1, vec![pod("acme", "acme-0", 1_000)], None))
        .await;
    assert_eq!(good.ack().await, 1);
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
    let mut flood = FakeAgent::open(kt.grpc_addr(), &ca, Some(&flooder), hello("node-flood"))
        .await
        .unwrap();
    flood.next().await.unwrap();
    let started = tokio::time::Instant::now();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = tokio::spawn({
        let tx = flood.sender();
        async move {
            for sequence in 1.. {
                let results = (0..BATCH)
                    .map(|i| pod("acme", &format!("flood-{sequence}-{i}"), 1))
                    .collect();
                if tx.send(batch(sequence, results, None)).await.is_err() {
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
    let mut good = FakeAgent::open(kt.grpc_addr(), &ca, Some(&node_a), hello("node-a"))
        .await
        .unwrap();
    good.next().await.unwrap();
    for sequence in 1..=20 {
        let results = (0..3)
            .map(|i| pod("acme", &format!("acme-{i}"), sequence * 1_000))
            .collect();
        good.send(batch(sequence, results, None)).await;
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
