//! Two coordinators on one database and one (FAKE) Kubernetes API server:
//! only the holder of the Lease deploys; when it stops, the other takes
//! over and finishes what was left.

use std::time::Duration;

use knowton_coordinator::config::{ServeArgs, ServeConfig};
use knowton_coordinator::server;
use knowton_tests::fake_kube::FakeKube;
use knowton_tests::{
    ADMIN_TOKEN, Db, TestCoordinator, eventually, on_every_backend, tenant_request,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn elect(args: &mut ServeArgs, kubeconfig: &std::path::Path, identity: &str) {
    args.kube.no_cluster = false;
    args.kube.kubeconfig = Some(kubeconfig.to_owned());
    args.kube.identity = Some(identity.to_owned());
    args.kube.lease_namespace = "knowton-system".to_owned();
    args.kube.lease_seconds = 3;
    args.kube.rollout_timeout_seconds = 60;
    args.kube.verify_timeout_seconds = 5;
}

async fn leads(http: &reqwest::Client, base: &str) -> bool {
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(knowton_tests::METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics.lines().any(|l| l == "knowton_coordinator_leader 1")
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The test tenant's deployment, as a replica serves it.
async fn wayne(http: &reqwest::Client, base: &str) -> Value {
    call(
        http,
        base,
        Method::GET,
        "/api/v1/tenants/wayne/deployment",
        None,
    )
    .await
    .1
}

/// The coordinators' Lease, which must exist.
fn the_lease(fake: &FakeKube) -> Value {
    fake.object(
        "coordination.k8s.io/v1",
        "Lease",
        Some("knowton-system"),
        "knowton-coordinator",
    )
    .expect("the lease exists")
}

async fn only_the_lease_holder_deploys_and_a_successor_takes_over(db: Db) {
    let fake = FakeKube::start().await;
    fake.put_object(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "knowton-system"}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();

    let a = TestCoordinator::start_and(db, |args| elect(args, &kubeconfig, "coordinator-a")).await;
    eventually(WAIT, "a to lead", || async {
        leads(&a.http, &a.base).await.then_some(())
    })
    .await;
    let args_b = TestCoordinator::args_for(&a.db, |args| elect(args, &kubeconfig, "coordinator-b"));
    let b = server::start(ServeConfig::try_from(args_b).unwrap())
        .await
        .unwrap();
    let base_b = format!("http://{}", b.http_addr);
    let http = reqwest::Client::new();
    assert!(!leads(&http, &base_b).await, "one leader at a time");
    let lease = the_lease(&fake);
    assert_eq!(lease["spec"]["holderIdentity"], "coordinator-a");

    // Provisioned through the replica that does not lead: the leader
    // deploys it.
    let (status, body) = call(
        &http,
        &base_b,
        Method::POST,
        "/api/v1/tenants",
        Some(tenant_request("wayne", "basic")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    eventually(WAIT, "the leader to apply the tenant", || async {
        fake.object(
            "apps/v1",
            "Deployment",
            Some("knowton-tenant-wayne"),
            "backend",
        )
        .map(|_| ())
    })
    .await;

    // The leader stops mid-rollout; the other takes the lease and deploys
    // again, to the end.
    // (Its database lives on: b uses it.)
    let (_db, _) = a.stop_for_restart().await;
    eventually(WAIT, "b to lead", || async {
        leads(&http, &base_b).await.then_some(())
    })
    .await;
    let lease = the_lease(&fake);
    assert_eq!(lease["spec"]["holderIdentity"], "coordinator-b");
    let view = eventually(WAIT, "b to deploy", || async {
        let view = wayne(&http, &base_b).await;
        (view["attempt"].as_i64() >= Some(2) && view["phase"] == "waiting").then_some(view)
    })
    .await;
    for name in ["backend", "frontend"] {
        let deployment = fake
            .object("apps/v1", "Deployment", Some("knowton-tenant-wayne"), name)
            .unwrap();
        let generation = deployment["metadata"]["generation"].clone();
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        fake.set_status(
            "apps/v1",
            "Deployment",
            "knowton-tenant-wayne",
            name,
            json!({"observedGeneration": generation, "replicas": replicas,
                   "updatedReplicas": replicas, "availableReplicas": replicas}),
        );
    }
    let attempt = view["attempt"].clone();
    eventually(WAIT, "the deployment to be ready", || async {
        let view = wayne(&http, &base_b).await;
        (view["attempt"] == attempt && view["phase"] == "ready").then_some(())
    })
    .await;
    b.shutdown().await.unwrap();
}

on_every_backend!(db: only_the_lease_holder_deploys_and_a_successor_takes_over);
