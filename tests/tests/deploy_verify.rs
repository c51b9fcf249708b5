//! A deployment is ready only once an agent saw the tenant's `/health`
//! answer: with agent ingest on and no agent reporting, it stays
//! verifying (saying what it waits for) and then fails with a reason,
//! instead of being marked ready unverified. Against the fake Kubernetes
//! API server, with results fed straight into the ingest registry.

use std::time::Duration;

use knowton_coordinator::certs;
use knowton_tests::fake_kube::FakeKube;
use knowton_tests::feed::{Feed, healthy};
use knowton_tests::{Db, TestCoordinator, eventually_showing};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const VERIFY_TIMEOUT_SECONDS: u64 = 3;

async fn deployment_of(kt: &TestCoordinator, slug: &str) -> Value {
    let reply = kt
        .admin(
            Method::GET,
            &format!("/api/v1/tenants/{slug}/deployment"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

/// Waits until the deployment's attempt `attempt` is in `phase`.
async fn until_phase(kt: &TestCoordinator, slug: &str, attempt: i64, phase: &str) -> Value {
    let what = format!("deployment of {slug} attempt {attempt} {phase}");
    eventually_showing(WAIT, &what, || async {
        let view = deployment_of(kt, slug).await;
        if view["attempt"] == attempt && view["phase"] == phase {
            Ok(view)
        } else {
            Err(format!("{view:#}"))
        }
    })
    .await
}

/// Writes the status a Deployment controller would once the rollout of
/// the current generation is done, for each of the tenant's Deployments.
fn roll_out(fake: &FakeKube, slug: &str) {
    let ns = format!("knowton-tenant-{slug}");
    for name in ["backend", "frontend"] {
        let deployment = fake
            .object("apps/v1", "Deployment", Some(&ns), name)
            .expect("deployment exists");
        let generation = deployment["metadata"]["generation"].as_i64().unwrap();
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        fake.set_status(
            "apps/v1",
            "Deployment",
            &ns,
            name,
            json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_agent_report_a_deployment_is_not_ready_and_then_fails() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let tls = dir.path().join("tls");
    certs::init(&tls, &[], false).unwrap();
    let kt = TestCoordinator::start_with_agents_and(Db::Sqlite, &tls, |args| {
        args.kube.no_cluster = false;
        args.kube.kubeconfig = Some(kubeconfig.clone());
        args.kube.no_leader_election = true;
        args.kube.rollout_timeout_seconds = 30;
        args.kube.verify_timeout_seconds = VERIFY_TIMEOUT_SECONDS;
        args.kube.reconcile_seconds = 3600;
    })
    .await;

    // Rolled out, no agent connected: verifying, saying what it waits for.
    kt.provision("acme", "basic").await;
    until_phase(&kt, "acme", 1, "waiting").await;
    roll_out(&fake, "acme");
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
    fake.put_object(json!({
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
