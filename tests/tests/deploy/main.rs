//! Tenant deployments against the FAKE Kubernetes API server (no cluster
//! can run here; the real kube client talks HTTP to it): provisioning
//! deploys, rollout outcomes driven by writing Deployment status, server
//! dry-runs, pruning, deprovisioning, purge, drift repair, failures mid-apply.
//!
//! One test binary; its modules by subject:
//! - `rollout`: provisioning deploys, rollout outcomes, dry runs.
//! - `teardown`: deprovisioning, purge, drift repair, failures mid-apply.
//! - `without_a_cluster`: skipped deployments, refused settings.
//! - `scaling`: replicas following sustained response times.
//! - `reconcile`: the periodic drift check reads the watch's cache.
//! - `watch`: the drift watch's cache.

mod reconcile;
mod rollout;
mod scaling;
mod teardown;
mod watch;
mod without_a_cluster;

use std::path::PathBuf;
use std::time::Duration;

use knowton_coordinator::config::ServeArgs;
use knowton_tests::fake_kube::FakeKube;
use knowton_tests::{Db, Reply, TestCoordinator, eventually, on_every_backend};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// The fake API server and a kubeconfig pointing at it.
struct Cluster {
    fake: FakeKube,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    async fn start() -> Cluster {
        let fake = FakeKube::start().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
        Cluster {
            fake,
            _dir: dir,
            kubeconfig,
        }
    }

    /// Serve settings deploying to this cluster, with short timeouts.
    fn configure(&self, args: &mut ServeArgs) {
        args.kube.no_cluster = false;
        args.kube.kubeconfig = Some(self.kubeconfig.clone());
        args.kube.no_leader_election = true;
        args.kube.rollout_timeout_seconds = 30;
        args.kube.verify_timeout_seconds = 5;
        args.kube.reconcile_seconds = 3600;
    }

    async fn coordinator(&self, db: Db) -> TestCoordinator {
        TestCoordinator::start_and(db, |args| self.configure(args)).await
    }

    fn deployment(&self, slug: &str, name: &str) -> Option<Value> {
        self.fake
            .object("apps/v1", "Deployment", Some(&ns(slug)), name)
    }

    /// Writes the status a Deployment controller would once the rollout of
    /// the current generation is done.
    fn roll_out(&self, slug: &str, name: &str) {
        let deployment = self.deployment(slug, name).expect("deployment exists");
        let generation = deployment["metadata"]["generation"].as_i64().unwrap();
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        self.fake.set_status(
            "apps/v1",
            "Deployment",
            &ns(slug),
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

    /// Provisions `slug` and reports its first rollout done: ready.
    async fn provisioned(&self, kt: &TestCoordinator, slug: &str, plan: &str) {
        kt.provision(slug, plan).await;
        until_phase(kt, slug, 1, "waiting").await;
        self.roll_out_all(slug);
        until_phase(kt, slug, 1, "ready").await;
    }

    fn roll_out_all(&self, slug: &str) {
        self.roll_out(slug, "backend");
        self.roll_out(slug, "frontend");
    }

    fn kinds_in(&self, slug: &str) -> Vec<String> {
        let mut kinds = Vec::new();
        for (api_version, kind) in KINDS {
            for _ in self.fake.objects(api_version, kind, Some(&ns(slug))) {
                kinds.push((*kind).to_owned());
            }
        }
        kinds
    }
}

const KINDS: &[(&str, &str)] = &[
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("networking.k8s.io/v1", "Ingress"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
];

fn ns(slug: &str) -> String {
    format!("knowton-tenant-{slug}")
}

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

/// `POST /api/v1/tenants/{slug}/deploy?dryRun={mode}` as the admin.
async fn dry_run(kt: &TestCoordinator, slug: &str, mode: &str) -> Reply {
    kt.admin(
        Method::POST,
        &format!("/api/v1/tenants/{slug}/deploy?dryRun={mode}"),
        None,
    )
    .await
}

/// Waits until the deployment's attempt `attempt` is in `phase`.
async fn until_phase(kt: &TestCoordinator, slug: &str, attempt: i64, phase: &str) -> Value {
    let what = format!("deployment of {slug} attempt {attempt} {phase}");
    knowton_tests::eventually_showing(WAIT, &what, || async {
        let view = deployment_of(kt, slug).await;
        if view["attempt"] == attempt && view["phase"] == phase {
            Ok(view)
        } else {
            Err(format!("{view:#}"))
        }
    })
    .await
}

fn events(view: &Value, kind: &str) -> Vec<String> {
    view["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["detail"].as_str().unwrap().to_owned())
        .collect()
}
