//! Tenant deployments on the fake Kubernetes API server: the cluster and a
//! kubeconfig for it, rollouts reported as a Deployment controller would,
//! and waits for a deployment's phase read from the REST API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use knowton_coordinator::config::ServeArgs;
use knowton_coordinator::deploy::volume::AccessMode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fake_kube::FakeKube;
use crate::{Db, TestCoordinator, eventually_showing};

/// How long a deployment may take to reach the phase a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// The phases a deployment ends in (until something asks for another).
const SETTLED: [&str; 3] = ["ready", "failed", "skipped"];

/// The fake API server and a kubeconfig pointing at it.
#[derive(Debug)]
pub struct Cluster {
    pub fake: FakeKube,
    dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let fake = FakeKube::start().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
        Cluster {
            fake,
            dir,
            kubeconfig,
        }
    }

    /// A scratch directory that lives as long as the cluster (for agent
    /// certificates, say).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Serve settings deploying to this cluster, with short timeouts.
    pub fn configure(&self, args: &mut ServeArgs) {
        args.kube.no_cluster = false;
        args.kube.kubeconfig = Some(self.kubeconfig.clone());
        args.kube.rollout_timeout_seconds = 30;
        args.kube.verify_timeout_seconds = 5;
        args.kube.reconcile_seconds = 3600;
    }

    pub async fn coordinator(&self, db: Db) -> TestCoordinator {
        TestCoordinator::start_and(db, |args| self.configure(args)).await
    }

    /// [`Self::coordinator`] with volumes every node may mount
    /// (`--tenant-storage-access-mode read-write-many`): the backend has
    /// its autoscaler and disruption budget.
    pub async fn coordinator_with_shared_volumes(&self, db: Db) -> TestCoordinator {
        TestCoordinator::start_and(db, |args| {
            self.configure(args);
            args.kube.cluster.tenant_storage_access_mode = AccessMode::ReadWriteMany;
        })
        .await
    }

    pub fn deployment(&self, slug: &str, name: &str) -> Option<Value> {
        self.fake
            .object("apps/v1", "Deployment", Some(&ns(slug)), name)
    }

    /// Writes the status a Deployment controller would once the rollout of
    /// the current generation is done.
    pub fn roll_out(&self, slug: &str, name: &str) {
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

    /// [`Self::roll_out`] for each of the tenant's Deployments.
    pub fn roll_out_all(&self, slug: &str) {
        self.roll_out(slug, "backend");
        self.roll_out(slug, "frontend");
    }

    /// Provisions `slug` and reports its first rollout done: ready.
    pub async fn provisioned(&self, kt: &TestCoordinator, slug: &str, plan: &str) {
        kt.provision(slug, plan).await;
        until_phase(kt, slug, 1, "waiting").await;
        self.roll_out_all(slug);
        until_phase(kt, slug, 1, "ready").await;
    }

    /// The kinds of the objects in the tenant's namespace, one entry per
    /// object.
    pub fn kinds_in(&self, slug: &str) -> Vec<String> {
        let mut kinds = Vec::new();
        for (api_version, kind) in KINDS {
            for _ in self.fake.objects(api_version, kind, Some(&ns(slug))) {
                kinds.push((*kind).to_owned());
            }
        }
        kinds
    }
}

/// The namespaced kinds a tenant's deployment applies.
pub const KINDS: &[(&str, &str)] = &[
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("networking.k8s.io/v1", "Ingress"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
];

/// The tenant's namespace.
pub fn ns(slug: &str) -> String {
    format!("knowton-tenant-{slug}")
}

/// `GET /api/v1/tenants/{slug}/deployment` as the admin.
pub async fn deployment_of(kt: &TestCoordinator, slug: &str) -> Value {
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

/// Waits until the deployment's attempt `attempt` is in `phase`. For a
/// phase the deployment leaves by itself, or one a later attempt may
/// replace, wait for something that stays instead ([`until_settled`]).
pub async fn until_phase(kt: &TestCoordinator, slug: &str, attempt: i64, phase: &str) -> Value {
    let what = format!("deployment of {slug} attempt {attempt} {phase}");
    until_view(kt, slug, &what, |view| {
        view["attempt"] == attempt && view["phase"] == phase
    })
    .await
}

/// Waits until the deployment ends (ready, failed or skipped) and returns
/// it. Every request made so far shows (as `pending`) until an attempt
/// serves it, so once a request has returned, the outcome this waits for
/// stays until something else asks for a deployment: it is not a phase a
/// follow-up attempt could replace before the test looks.
pub async fn until_settled(kt: &TestCoordinator, slug: &str) -> Value {
    let what = format!("deployment of {slug} to end");
    until_view(kt, slug, &what, |view| {
        SETTLED.iter().any(|phase| view["phase"] == *phase)
    })
    .await
}

/// Polls the deployment until `wanted` holds for it.
async fn until_view(
    kt: &TestCoordinator,
    slug: &str,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    eventually_showing(WAIT, what, || async {
        let view = deployment_of(kt, slug).await;
        if wanted(&view) {
            Ok(view)
        } else {
            Err(format!("{view:#}"))
        }
    })
    .await
}

/// The details of the deployment's events of `kind` (newest first).
pub fn events(view: &Value, kind: &str) -> Vec<String> {
    view["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["detail"].as_str().unwrap().to_owned())
        .collect()
}
