//! A deployment is ready only once an agent saw the tenant's `/health`
//! answer: with agent ingest on and no agent reporting, it stays
//! verifying (saying what it waits for) and then fails with a reason,
//! instead of being marked ready unverified. Against the fake Kubernetes
//! API server, with results fed straight into the ingest registry.

use knowton_coordinator::certs;
use knowton_tests::deploy::{Cluster, WAIT, deployment_of, until_phase};
use knowton_tests::feed::{Feed, healthy};
use knowton_tests::{Db, TestCoordinator, eventually_showing};
use reqwest::Method;
use serde_json::json;

const VERIFY_TIMEOUT_SECONDS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_agent_report_a_deployment_is_not_ready_and_then_fails() {
    let cluster = Cluster::start().await;
    let tls = cluster.dir().join("tls");
    certs::init(&tls, &[], false).unwrap();
    let kt = TestCoordinator::start_with_agents_and(Db::Sqlite, &tls, |args| {
        cluster.configure(args);
        args.kube.verify_timeout_seconds = VERIFY_TIMEOUT_SECONDS;
    })
    .await;

    // Rolled out, no agent connected: verifying, saying what it waits for.
    kt.provision("acme", "basic").await;
    until_phase(&kt, "acme", 1, "waiting").await;
    cluster.roll_out_all("acme");
    let verifying = until_phase(&kt, "acme", 1, "verifying").await;
    assert_eq!(
        verifying["reason"], "waiting for the agents to see /health answer",
        "{verifying:#}"
    );
    // Then failed once the verify timeout is over: never ready unverified.
    let failed = until_phase(&kt, "acme", 1, "failed").await;
    assert_eq!(
        failed["reason"],
        format!("health not verified: no agent connected within {VERIFY_TIMEOUT_SECONDS}s"),
        "{failed:#}"
    );
    let phases: Vec<&str> = failed["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "phase")
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(!phases.iter().any(|p| p.starts_with("ready")), "{phases:?}");

    // An agent that sees /health answer makes the next attempt ready (its
    // results count for the pod the cluster placed on its node).
    cluster.fake.put_object(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "acme-backend-0",
            "namespace": "knowton-tenant-acme",
            "labels": {"knowton.io/tenant": "acme"},
        },
        "spec": {"nodeName": "node-a", "containers": [{"name": "backend", "image": "backend"}]},
    }));
    let mut feed = Feed::new(&kt, "node-a");
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants/acme/deploy", None)
        .await;
    assert!(reply.status.is_success(), "{}", reply.body);
    let ready = eventually_showing(WAIT, "attempt 2 ready", || {
        // Results keep coming, as an agent's would, until one is newer
        // than the start of the verification.
        feed.send(vec![healthy("acme", "acme-backend-0")]);
        let kt = &kt;
        async move {
            let view = deployment_of(kt, "acme").await;
            if view["attempt"] == 2 && view["phase"] == "ready" {
                Ok(view)
            } else {
                Err(format!("{view:#}"))
            }
        }
    })
    .await;
    assert!(ready["reason"].is_null(), "{ready:#}");
    kt.stop().await;
}
