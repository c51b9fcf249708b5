//! A real agent streaming to several coordinator replicas: every replica
//! gets the same batches, one that stops costs the others nothing and
//! catches up from its cursor when it is back, and a replica named by DNS
//! is reached by address with its certificate checked against the name.
//! On one PostgreSQL database, the leader and its standby judge a tenant
//! from the same results.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use knowton_agent::config::Args;
use knowton_agent::instructions::Instructed;
use knowton_agent::replicas::Replica;
use knowton_agent::stream::{self, Round, StreamConfig, StreamStats};
use knowton_coordinator::certs::{SERVER_CERT, SERVER_KEY};
use knowton_coordinator::config::ServeConfig;
use knowton_coordinator::server;
use knowton_coordinator::sim::Behaviour;
use knowton_coordinator::sim::SimPod;
use knowton_tests::agent::{RunningAgent, agent_metric, assert_resumed_from, free_port};
use knowton_tests::{ADMIN_TOKEN, eventually_showing, on_postgres};
use serde_json::Value;
use tokio::sync::watch;

use super::*;

const WAIT: Duration = Duration::from_secs(20);

/// A real agent `node`, probing acme's `acme-0` at `pod`, streaming to
/// `coordinator` (the `--coordinator` list), its metrics on `port`.
fn agent_args(tls: &Path, node: &str, coordinator: String, pod: &SimPod, port: u16) -> Args {
    let targets = tls.join(format!("{node}-targets.yaml"));
    std::fs::write(
        &targets,
        format!("- {{tenant: acme, pod: acme-0, url: '{}'}}\n", pod.url()),
    )
    .unwrap();
    Args {
        targets: Some(targets),
        coordinator,
        metrics_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        ..Args::for_tests(node, "127.0.0.1:1".parse().unwrap(), tls)
    }
}

/// `node` as `GET /api/v1/agents` of `kt` shows it, once it is listed.
async fn agent_on(kt: &TestCoordinator, node: &str) -> Option<Value> {
    agents(kt).await["agents"]
        .as_array()?
        .iter()
        .find(|a| a["node"] == node)
        .cloned()
}

/// The last sequence `kt` acknowledged to node-a (0: none yet).
async fn last_sequence(kt: &TestCoordinator) -> u64 {
    agent_on(kt, "node-a")
        .await
        .and_then(|a| a["lastSequence"].as_u64())
        .unwrap_or(0)
}

/// When acme's pod was last observed, as `kt` shows it.
async fn observed(kt: &TestCoordinator) -> Value {
    kt.monitoring_health("acme").await.body["pods"][0]["observedAt"].clone()
}

/// A per-replica series of the agent's `/metrics`.
async fn replica_metric(
    http: &reqwest::Client,
    port: u16,
    name: &str,
    replica: SocketAddr,
) -> Option<f64> {
    agent_metric(http, port, &format!("{name}{{replica=\"{replica}\"}}")).await
}

/// Two coordinators (each on its own SQLite database, both knowing acme)
/// that node-a's certificate in `tls` is let into.
async fn two_coordinators(tls: &Path) -> (TestCoordinator, TestCoordinator) {
    certs::init(tls, &[], false).unwrap();
    certs::agent(tls, "node-a").unwrap();
    let one = TestCoordinator::start_with_agents(Db::Sqlite, tls).await;
    let two = TestCoordinator::start_with_agents(Db::Sqlite, tls).await;
    for kt in [&one, &two] {
        kt.provision("acme", "professional").await;
    }
    (one, two)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_replica_gets_the_same_batches_and_a_restarted_one_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path();
    let (one, two) = two_coordinators(tls).await;
    let (one_addr, two_addr) = (one.grpc_addr(), two.grpc_addr());
    let pod = SimPod::start(Ipv4Addr::new(127, 0, 0, 21), 0);
    let port = free_port();
    let list = format!("https://{one_addr}, https://{two_addr}");
    let agent = RunningAgent::start(agent_args(tls, "node-a", list, &pod, port));
    let http = one.http.clone();

    // Both replicas receive the session's batches.
    eventually(WAIT, "both replicas to acknowledge batches", || async {
        (last_sequence(&one).await >= 3 && last_sequence(&two).await >= 3).then_some(())
    })
    .await;
    assert_eq!(
        agent_metric(&http, port, "knowton_agent_replicas").await,
        Some(2.0)
    );
    for replica in [one_addr, two_addr] {
        let connected =
            replica_metric(&http, port, "knowton_agent_replica_connected", replica).await;
        assert_eq!(connected, Some(1.0), "{replica}");
    }

    // The second stops: the first keeps receiving, the agent stays ready.
    let (db, args) = two.stop_for_restart().await;
    let cursor = eventually(WAIT, "the agent to see the replica gone", || async {
        let connected =
            replica_metric(&http, port, "knowton_agent_replica_connected", two_addr).await?;
        let acked = replica_metric(
            &http,
            port,
            "knowton_agent_replica_acked_sequence",
            two_addr,
        )
        .await?;
        (connected == 0.0).then_some(acked as u64)
    })
    .await;
    assert!(cursor >= 3, "its cursor: {cursor}");
    let flowing_from = last_sequence(&one).await;
    eventually(WAIT, "results to keep flowing to the other", || async {
        (last_sequence(&one).await >= flowing_from.max(cursor) + 5).then_some(())
    })
    .await;
    let ready = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "one replica is enough");
    assert_eq!(
        agent_metric(&http, port, "knowton_agent_connected").await,
        Some(1.0)
    );
    assert!(
        agent_metric(&http, port, "knowton_agent_buffer_bytes").await > Some(0.0),
        "the stopped replica's backlog is held"
    );

    // Back on the same address, it is sent everything after its cursor.
    let two = TestCoordinator::start_with(db, args).await;
    let latest = agent_metric(&http, port, "knowton_agent_last_sequence")
        .await
        .unwrap() as u64;
    let seen = eventually(WAIT, "the restarted replica to catch up", || async {
        let seen = agent_on(&two, "node-a").await?;
        (seen["lastSequence"].as_u64()? >= latest).then_some(seen)
    })
    .await;
    assert_resumed_from(&seen, cursor);
    assert_eq!(
        replica_metric(
            &http,
            port,
            "knowton_agent_replica_dropped_results_total",
            two_addr
        )
        .await,
        Some(0.0)
    );
    let reconnects = replica_metric(
        &http,
        port,
        "knowton_agent_replica_reconnects_total",
        two_addr,
    )
    .await;
    assert!(reconnects >= Some(1.0), "{reconnects:?}");

    // Once the agent has flushed, both hold the same last batch.
    agent.stop().await;
    let (a, b) = (last_sequence(&one).await, last_sequence(&two).await);
    assert_eq!(a, b, "the same sequence on both");
    let (a, b) = (observed(&one).await, observed(&two).await);
    assert!(a.is_string(), "{a}");
    assert_eq!(a, b, "the same last result on both");
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_named_by_dns_is_reached_by_address_and_verified_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path();
    certs::init(tls, &[], false).unwrap();
    certs::agent(tls, "node-a").unwrap();
    certs::agent(tls, "node-b").unwrap();
    // The server certificate names `localhost` only, not 127.0.0.1.
    let ca = CertificateAuthority::load(tls).unwrap();
    let server = ca
        .issue_server(&["localhost".to_owned()], Validity::days(1))
        .unwrap();
    std::fs::write(tls.join(SERVER_CERT), &server.cert_pem).unwrap();
    std::fs::write(tls.join(SERVER_KEY), &server.key_pem).unwrap();
    let kt = TestCoordinator::start_with_agents(Db::Sqlite, tls).await;
    kt.provision("acme", "professional").await;
    let grpc = kt.grpc_addr();
    let pod = SimPod::start(Ipv4Addr::new(127, 0, 0, 22), 0);

    let by_name = free_port();
    let named = RunningAgent::start(agent_args(
        tls,
        "node-a",
        format!("https://localhost:{}", grpc.port()),
        &pod,
        by_name,
    ));
    let by_address = free_port();
    let unnamed = RunningAgent::start(agent_args(
        tls,
        "node-b",
        format!("https://127.0.0.1:{}", grpc.port()),
        &pod,
        by_address,
    ));
    let http = kt.http.clone();

    // `localhost` resolved to 127.0.0.1: connected there, the certificate
    // checked against the name.
    eventually(WAIT, "results through the name", || async {
        (last_sequence(&kt).await >= 2).then_some(())
    })
    .await;
    let local = SocketAddr::from(([127, 0, 0, 1], grpc.port()));
    assert_eq!(
        replica_metric(&http, by_name, "knowton_agent_replica_connected", local).await,
        Some(1.0)
    );
    assert_eq!(
        agent_metric(&http, by_name, "knowton_agent_replicas").await,
        Some(1.0),
        "one replica: not ::1 as well"
    );
    // The same server by its address fails verification: the name was used.
    eventually(WAIT, "the agent by address to fail twice", || async {
        let failed = replica_metric(
            &http,
            by_address,
            "knowton_agent_replica_connect_failures_total",
            local,
        )
        .await?;
        (failed >= 2.0).then_some(())
    })
    .await;
    assert_eq!(
        agent_metric(&http, by_address, "knowton_agent_connected").await,
        Some(0.0)
    );
    assert!(agent_on(&kt, "node-b").await.is_none(), "never let in");

    named.stop().await;
    unnamed.stop_within(Duration::from_secs(5)).await;
    kt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_appears_gets_a_stream_and_one_that_goes_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path();
    let (one, two) = two_coordinators(tls).await;
    let replica = |kt: &TestCoordinator| Replica {
        addr: kt.grpc_addr(),
        url: format!("https://{}", kt.grpc_addr()),
        domain: None,
    };
    // What re-resolution would find, chosen by the test.
    let (found, resolved) = watch::channel(vec![replica(&one)]);
    let config = StreamConfig {
        coordinators: Vec::new(),
        resolve_every: Duration::from_secs(30),
        ca: tls.join("ca.pem"),
        cert: tls.join("node-a.pem"),
        key: tls.join("node-a-key.pem"),
        node: "node-a".to_owned(),
        buffer_bytes: 1 << 20,
        heartbeat_every: Duration::from_secs(1),
        dead_after: Duration::from_secs(5),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
    };
    let stats = Arc::new(StreamStats::default());
    let (rounds_tx, rounds) = mpsc::channel(4);
    let (instructions, _) = watch::channel(Instructed::default());
    let streaming = tokio::spawn(stream::follow_replicas(
        config,
        resolved,
        rounds,
        stats.clone(),
        instructions,
    ));
    // A round every 50 ms, as a probing agent would send them.
    let probing = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        for _ in 0..2_000 {
            every.tick().await;
            let round = Round {
                results: vec![pod("acme", "acme-0", 1_000)],
                node: None,
            };
            if rounds_tx.send(round).await.is_err() {
                return;
            }
        }
    });

    eventually(WAIT, "the first replica to acknowledge", || async {
        (last_sequence(&one).await >= 3).then_some(())
    })
    .await;
    assert!(agent_on(&two, "node-a").await.is_none(), "not found yet");

    found.send_replace(vec![replica(&one), replica(&two)]);
    eventually(WAIT, "the replica found to get a stream", || async {
        (last_sequence(&two).await >= 3).then_some(())
    })
    .await;
    assert_eq!(stats.replicas().len(), 2);

    found.send_replace(vec![replica(&two)]);
    eventually(WAIT, "the gone replica's stream to be closed", || async {
        (agent_on(&one, "node-a").await?["connected"] == false).then_some(())
    })
    .await;
    let kept: Vec<SocketAddr> = stats.replicas().into_iter().map(|(a, _)| a).collect();
    assert_eq!(kept, [two.grpc_addr()]);
    let from = last_sequence(&two).await;
    eventually(WAIT, "the remaining replica to keep receiving", || async {
        (last_sequence(&two).await >= from + 5).then_some(())
    })
    .await;
    let closed_at = last_sequence(&one).await;
    assert!(
        closed_at < last_sequence(&two).await,
        "nothing more reached the gone replica"
    );

    // No more rounds: what the remaining replica has not acknowledged is
    // flushed, and the streams end.
    probing.abort();
    tokio::time::timeout(Duration::from_secs(10), streaming)
        .await
        .expect("the streams end once flushed")
        .unwrap();
    assert_eq!(
        stats
            .acked_sequence
            .load(std::sync::atomic::Ordering::Relaxed),
        stats
            .last_sequence
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    one.stop().await;
    two.stop().await;
}

on_postgres!(a_leader_and_its_standby_judge_a_tenant_from_the_same_results);

/// acme's health as the replica at `base` serves it.
async fn health_at(http: &reqwest::Client, base: &str) -> Option<Value> {
    http.get(format!("{base}/api/v1/monitoring/health"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Tenant-Slug", "acme")
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Two replicas on one database, one leading: the agent streams to both,
/// so the standby sees a pod fail as the leader does, and judges the
/// tenant the same.
async fn a_leader_and_its_standby_judge_a_tenant_from_the_same_results(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path();
    certs::init(tls, &[], false).unwrap();
    certs::agent(tls, "node-a").unwrap();
    let leader = TestCoordinator::start_with_agents_and(db, tls, |args| {
        args.leader.replica_id = Some("a".to_owned());
    })
    .await;
    // Before the standby starts, so that it knows the tenant.
    leader.provision("acme", "professional").await;
    let mut args = TestCoordinator::args_for(&leader.db, |args| {
        args.leader.replica_id = Some("b".to_owned());
        args.http_addr = "127.0.0.1:0".parse().unwrap();
        args.grpc_addr = "127.0.0.1:0".parse().unwrap();
    });
    args.tls_dir = Some(tls.to_owned());
    args.tls_reload_seconds = 1;
    let standby = server::start(ServeConfig::try_from(args).unwrap())
        .await
        .unwrap();
    let standby_base = format!("http://{}", standby.http_addr);
    let standby_grpc = standby.grpc_addr.expect("agent listener on");

    let pod = SimPod::start(Ipv4Addr::new(127, 0, 0, 23), 0);
    let list = format!("https://{},https://{standby_grpc}", leader.grpc_addr());
    let agent = RunningAgent::start(agent_args(tls, "node-a", list, &pod, free_port()));
    let http = leader.http.clone();

    pod.set(Behaviour::Status(503)).await;
    let judged = |h: &Value| {
        let failing = h["pods"][0]["apiHealth"]["statusCode"] == 503;
        failing.then(|| h["status"].clone())
    };
    // Each evaluates as results arrive: both come to the same judgement.
    let judgement = eventually_showing(WAIT, "both replicas to judge the failure", || async {
        let a = judged(&leader.monitoring_health("acme").await.body);
        let b = judged(&health_at(&http, &standby_base).await.unwrap_or_default());
        match (a, b) {
            (Some(a), Some(b)) if a == b && a != "unknown" => Ok(a),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    assert_ne!(judgement, "healthy");

    agent.stop().await;
    standby.shutdown().await.unwrap();
    leader.stop().await;
}
