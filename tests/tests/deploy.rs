//! Tenant deployments against the FAKE Kubernetes API server (no cluster
//! can run here; the real kube client talks HTTP to it): provisioning
//! deploys, rollout outcomes driven by writing Deployment status, server
//! dry-runs, pruning, deprovisioning, purge, drift repair, failures mid-apply.

use std::path::PathBuf;
use std::time::Duration;

use knowton_coordinator::config::ServeArgs;
use knowton_tests::fake_kube::FakeKube;
use knowton_tests::{Db, TestCoordinator, eventually, on_every_backend};
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

async fn provisioning_deploys_waits_for_the_rollout_and_records_every_phase(db: Db) {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator(db).await;
    kt.provision("acme", "professional").await;

    let waiting = until_phase(&kt, "acme", 1, "waiting").await;
    assert_eq!(waiting["trigger"], "provisioned");
    assert_eq!(waiting["cluster"], true);
    let mut kinds = cluster.kinds_in("acme");
    kinds.sort();
    assert_eq!(kinds.len(), 13, "{kinds:?}");
    let namespace = cluster
        .fake
        .object("v1", "Namespace", None, "knowton-tenant-acme")
        .expect("namespace created");
    assert_eq!(namespace["metadata"]["labels"]["knowton.io/tenant"], "acme");
    let backend = cluster.deployment("acme", "backend").unwrap();
    let managers: Vec<&str> = backend["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["knowton-coordinator"], "one field manager");
    let secret = cluster
        .fake
        .object(
            "v1",
            "Secret",
            Some("knowton-tenant-acme"),
            "tenant-secrets",
        )
        .unwrap();
    assert!(
        secret.get("data").or(secret.get("stringData")).is_some(),
        "the secrets are in the cluster: {secret}"
    );

    // Nothing moves until the controller reports the rollout.
    assert_eq!(deployment_of(&kt, "acme").await["phase"], "waiting");
    cluster.roll_out_all("acme");
    let ready = until_phase(&kt, "acme", 1, "ready").await;
    assert_eq!(
        ready["reason"], "health not verified: no agent is connected",
        "{ready:#}"
    );
    for key in [
        "requestedAt",
        "startedAt",
        "updatedAt",
        "finishedAt",
        "objectsHash",
    ] {
        assert!(ready[key].is_string(), "{key}: {ready:#}");
    }
    let phases = events(&ready, "phase");
    for phase in ["applying", "waiting", "verifying", "ready"] {
        assert!(
            phases.iter().any(|p| p.starts_with(phase)),
            "{phase} missing from {phases:?}"
        );
    }
    // The hash is that of what a client dry-run shows.
    let preview = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/acme/deploy?dryRun=client",
            None,
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert_eq!(preview.body["objectsHash"], ready["objectsHash"]);
    assert!(
        !preview.body["yaml"]
            .as_str()
            .unwrap()
            .contains(secret_value(&secret).as_str())
    );

    // A plan change deploys again: the quota follows.
    let reply = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(json!({"plan": "enterprise"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    until_phase(&kt, "acme", 2, "waiting").await;
    let quota = cluster
        .fake
        .object(
            "v1",
            "ResourceQuota",
            Some("knowton-tenant-acme"),
            "tenant-quota",
        )
        .unwrap();
    assert_eq!(quota["spec"]["hard"]["requests.storage"], "1Ti");
    cluster.roll_out_all("acme");
    let ready = until_phase(&kt, "acme", 2, "ready").await;
    assert_eq!(ready["trigger"], "updated");
    kt.stop().await;
}

/// One of the secret's values as the fake stores it, to check it is
/// never shown.
fn secret_value(secret: &Value) -> String {
    let field = secret.get("data").or(secret.get("stringData")).unwrap();
    field
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

async fn rollouts_fail_on_progress_deadline_and_on_timeout(db: Db) {
    let cluster = Cluster::start().await;
    let kt = TestCoordinator::start_and(db, |args| {
        cluster.configure(args);
        args.kube.rollout_timeout_seconds = 2;
    })
    .await;
    kt.provision("stuck", "basic").await;
    until_phase(&kt, "stuck", 1, "waiting").await;
    let generation = cluster.deployment("stuck", "backend").unwrap()["metadata"]["generation"]
        .as_i64()
        .unwrap();
    cluster.fake.set_status(
        "apps/v1",
        "Deployment",
        "knowton-tenant-stuck",
        "backend",
        json!({
            "observedGeneration": generation, "replicas": 1, "updatedReplicas": 0,
            "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"backend-7d9\" has timed out progressing."}],
        }),
    );
    let failed = until_phase(&kt, "stuck", 1, "failed").await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("backend") && reason.contains("progress deadline exceeded"),
        "{reason}"
    );

    // Nobody reports anything: the overall timeout ends it, naming what it
    // waited for.
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants/stuck/deploy", None)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    cluster.fake.set_status(
        "apps/v1",
        "Deployment",
        "knowton-tenant-stuck",
        "backend",
        json!({"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0}),
    );
    let failed = until_phase(&kt, "stuck", 2, "failed").await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("did not complete within") && reason.contains("0 of 1"),
        "{reason}"
    );
    assert_eq!(failed["trigger"], "manual");
    kt.stop().await;
}

async fn server_dry_run_previews_a_new_namespace_and_field_changes_storing_nothing(db: Db) {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator(db).await;
    // The first apply fails at the namespace: nothing exists in the cluster.
    cluster
        .fake
        .fail_next("PATCH", "/namespaces/knowton-tenant-globex", 500, 1);
    kt.provision("globex", "professional").await;
    let failed = until_phase(&kt, "globex", 1, "failed").await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("Namespace knowton-tenant-globex") && reason.contains("500"),
        "the failed object is named: {reason}"
    );
    assert!(cluster.kinds_in("globex").is_empty());

    let before = cluster.fake.resource_version();
    let preview = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/globex/deploy?dryRun=server",
            None,
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let changes = preview.body["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 15, "{changes:#?}");
    assert!(
        changes.iter().all(|c| c["action"] == "create"),
        "{changes:#?}"
    );
    assert!(
        changes[1]["note"].as_str().unwrap().contains("namespace"),
        "{:#}",
        changes[1]
    );
    assert_eq!(
        cluster.fake.resource_version(),
        before,
        "a dry-run stores nothing"
    );
    assert!(cluster.kinds_in("globex").is_empty());

    // A retry converges.
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants/globex/deploy", None)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    until_phase(&kt, "globex", 2, "waiting").await;
    cluster.roll_out_all("globex");
    until_phase(&kt, "globex", 2, "ready").await;

    // Everything as applied: unchanged.
    let preview = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/globex/deploy?dryRun=server",
            None,
        )
        .await;
    let actions: Vec<&str> = preview.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.iter().all(|a| *a == "unchanged"),
        "{:#}",
        preview.body
    );
    kt.admin(
        Method::PUT,
        "/api/v1/tenants/globex",
        Some(json!({"branding": {"primaryColor": "#abcdef"}})),
    )
    .await;
    until_phase(&kt, "globex", 3, "waiting").await;
    cluster.roll_out_all("globex");
    until_phase(&kt, "globex", 3, "ready").await;
    // A new allowlist whose deployment fails at the ingress: the cluster
    // holds the old ingress, and the dry-run names the field that differs.
    cluster.fake.fail_next(
        "PATCH",
        "/namespaces/knowton-tenant-globex/ingresses/tenant",
        500,
        1,
    );
    let reply = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/globex/deployment",
            Some(json!({"allowlist": ["203.0.113.0/24"]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["allowlist"], json!(["203.0.113.0/24"]));
    until_phase(&kt, "globex", 4, "failed").await;
    let preview = kt
        .admin(
            Method::POST,
            "/api/v1/tenants/globex/deploy?dryRun=server",
            None,
        )
        .await;
    let changes = preview.body["changes"].as_array().unwrap();
    let changed: Vec<&Value> = changes
        .iter()
        .filter(|c| c["action"] != "unchanged")
        .collect();
    assert_eq!(changed.len(), 1, "{changes:#?}");
    assert_eq!(changed[0]["kind"], "Ingress");
    assert_eq!(changed[0]["action"], "change");
    assert_eq!(
        changed[0]["fields"],
        json!([{
            "path": ".metadata.annotations[\"nginx.ingress.kubernetes.io/whitelist-source-range\"]",
            "before": null,
            "after": "203.0.113.0/24",
        }])
    );
    let reply = kt
        .admin(Method::POST, "/api/v1/tenants/globex/deploy", None)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    until_phase(&kt, "globex", 5, "ready").await;
    let ingress = cluster
        .fake
        .object(
            "networking.k8s.io/v1",
            "Ingress",
            Some("knowton-tenant-globex"),
            "tenant",
        )
        .unwrap();
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/whitelist-source-range"],
        "203.0.113.0/24"
    );
    kt.stop().await;
}

async fn deprovision_scales_to_zero_keeping_data_and_purge_deletes_the_namespace(db: Db) {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator(db).await;
    cluster.provisioned(&kt, "initech", "professional").await;
    // An object of the tenant's that its rendering does not contain (left
    // by an older version) is pruned; one without the labels is not ours.
    let labels = json!({"knowton.io/tenant": "initech", "app.kubernetes.io/managed-by": "knowton-coordinator"});
    for (name, labels) in [("old-config", labels), ("someone-elses", json!({}))] {
        cluster.fake.put_object(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "knowton-tenant-initech", "labels": labels},
            "data": {"k": "v"},
        }));
    }

    let reply = kt
        .admin(Method::DELETE, "/api/v1/tenants/initech", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    until_phase(&kt, "initech", 2, "waiting").await;
    for name in ["backend", "frontend"] {
        assert_eq!(
            cluster.deployment("initech", name).unwrap()["spec"]["replicas"],
            0
        );
    }
    let mut kinds = cluster.kinds_in("initech");
    kinds.sort();
    for gone in ["Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"] {
        assert!(
            !kinds.contains(&gone.to_owned()),
            "{gone} pruned: {kinds:?}"
        );
    }
    let config_maps: Vec<String> = cluster
        .fake
        .objects("v1", "ConfigMap", Some("knowton-tenant-initech"))
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        config_maps.contains(&"someone-elses".to_owned()),
        "{config_maps:?}"
    );
    assert!(
        !config_maps.contains(&"old-config".to_owned()),
        "{config_maps:?}"
    );
    assert!(
        config_maps.contains(&"tenant-config".to_owned()),
        "data kept"
    );
    cluster.roll_out_all("initech");
    let ready = until_phase(&kt, "initech", 2, "ready").await;
    assert!(ready["reason"].as_str().unwrap().contains("scaled to zero"));
    assert!(
        events(&ready, "prune")
            .iter()
            .any(|e| e.contains("ConfigMap knowton-tenant-initech/old-config")),
        "{ready:#}"
    );
    assert!(
        cluster
            .fake
            .object("v1", "Namespace", None, "knowton-tenant-initech")
            .is_some()
    );

    // Purging refuses to leave the cluster behind: when the API server
    // fails, nothing is purged.
    cluster
        .fake
        .fail_next("DELETE", "/namespaces/knowton-tenant-initech", 500, 1);
    let reply = kt
        .admin(Method::DELETE, "/api/v1/tenants/initech?purge=true", None)
        .await;
    let (code, _) = reply.error(StatusCode::BAD_GATEWAY);
    assert_eq!(code, "cluster_error");
    assert_eq!(
        kt.admin(Method::GET, "/api/v1/tenants/initech", None)
            .await
            .status,
        StatusCode::OK
    );
    let reply = kt
        .admin(Method::DELETE, "/api/v1/tenants/initech?purge=true", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    eventually(WAIT, "the namespace and its content to be gone", || async {
        let gone = cluster
            .fake
            .object("v1", "Namespace", None, "knowton-tenant-initech")
            .is_none()
            && cluster.kinds_in("initech").is_empty();
        gone.then_some(())
    })
    .await;
    assert_eq!(
        kt.admin(Method::GET, "/api/v1/tenants/initech", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    kt.stop().await;
}

async fn drift_is_repaired_as_it_happens_and_recorded(db: Db) {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator(db).await;
    cluster.provisioned(&kt, "hooli", "basic").await;

    cluster.fake.edit(
        "apps/v1",
        "Deployment",
        Some("knowton-tenant-hooli"),
        "frontend",
        |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil/miner:latest"),
    );
    cluster
        .fake
        .delete_object("v1", "Service", Some("knowton-tenant-hooli"), "backend");
    let view = eventually(WAIT, "both repairs recorded", || async {
        let view = deployment_of(&kt, "hooli").await;
        let drift = events(&view, "drift").join("; ");
        (drift.contains("restored Deployment knowton-tenant-hooli/frontend")
            && drift.contains("re-created Service knowton-tenant-hooli/backend"))
        .then_some(view)
    })
    .await;
    let drift = events(&view, "drift").join("; ");
    assert!(drift.contains(".spec.template.spec.containers"), "{drift}");
    let image =
        cluster.deployment("hooli", "frontend").unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["image"]
            .clone();
    assert_eq!(image, "ghcr.io/knowton/frontend:latest");
    assert!(
        cluster
            .fake
            .object("v1", "Service", Some("knowton-tenant-hooli"), "backend")
            .is_some()
    );
    assert_eq!(view["phase"], "ready", "a repair is not a new deployment");
    assert_eq!(view["attempt"], 1);
    let metrics = kt.scrape().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("knowton_drift_repairs_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    kt.stop().await;
}

async fn a_failure_mid_apply_names_the_object_prunes_nothing_and_a_retry_converges(db: Db) {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator(db).await;
    cluster.provisioned(&kt, "umbrella", "professional").await;

    // Deprovisioning would prune the ingress, autoscaler and budget; the
    // API server refuses the frontend's apply halfway: nothing is pruned.
    for (code, attempt) in [(422, 2), (409, 3)] {
        cluster.fake.fail_next(
            "PATCH",
            "/namespaces/knowton-tenant-umbrella/deployments/frontend",
            code,
            1,
        );
        if attempt == 2 {
            kt.admin(Method::DELETE, "/api/v1/tenants/umbrella", None)
                .await;
        } else {
            kt.admin(Method::POST, "/api/v1/tenants/umbrella/deploy", None)
                .await;
        }
        let failed = until_phase(&kt, "umbrella", attempt, "failed").await;
        let reason = failed["reason"].as_str().unwrap();
        assert!(
            reason.contains("Deployment knowton-tenant-umbrella/frontend")
                && reason.contains(&code.to_string()),
            "{reason}"
        );
        let kinds = cluster.kinds_in("umbrella");
        for kept in ["Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"] {
            assert!(
                kinds.contains(&kept.to_owned()),
                "{kept} not pruned: {kinds:?}"
            );
        }
    }
    kt.admin(Method::POST, "/api/v1/tenants/umbrella/deploy", None)
        .await;
    until_phase(&kt, "umbrella", 4, "waiting").await;
    cluster.roll_out_all("umbrella");
    until_phase(&kt, "umbrella", 4, "ready").await;
    assert!(!cluster.kinds_in("umbrella").contains(&"Ingress".to_owned()));
    kt.stop().await;
}

on_every_backend!(db:
    provisioning_deploys_waits_for_the_rollout_and_records_every_phase,
    rollouts_fail_on_progress_deadline_and_on_timeout,
    server_dry_run_previews_a_new_namespace_and_field_changes_storing_nothing,
    deprovision_scales_to_zero_keeping_data_and_purge_deletes_the_namespace,
    drift_is_repaired_as_it_happens_and_recorded,
    a_failure_mid_apply_names_the_object_prunes_nothing_and_a_retry_converges,
);

mod without_a_cluster {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployments_are_rendered_and_recorded_as_skipped() {
        let kt = TestCoordinator::start(Db::Sqlite).await;
        kt.provision("solo", "basic").await;
        let view = until_phase(&kt, "solo", 1, "skipped").await;
        assert_eq!(view["cluster"], false);
        assert!(
            view["reason"].as_str().unwrap().contains("no cluster"),
            "{view:#}"
        );
        assert!(view["objectsHash"].as_str().is_some_and(|h| h.len() == 64));
        let reply = kt
            .admin(
                Method::POST,
                "/api/v1/tenants/solo/deploy?dryRun=server",
                None,
            )
            .await;
        let (code, _) = reply.error(StatusCode::CONFLICT);
        assert_eq!(code, "no_cluster");
        let reply = kt
            .admin(
                Method::POST,
                "/api/v1/tenants/solo/deploy?dryRun=client",
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body["objects"].as_array().unwrap().len(), 15);
        assert_eq!(reply.body["objectsHash"], view["objectsHash"]);
        kt.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_settings_are_refused_and_change_nothing() {
        let kt = TestCoordinator::start(Db::Sqlite).await;
        kt.provision("alpha", "basic").await;
        kt.provision("beta", "basic").await;
        until_phase(&kt, "beta", 1, "skipped").await;
        let reply = kt
            .admin(
                Method::PUT,
                "/api/v1/tenants/beta/deployment",
                Some(json!({"allowlist": ["203.0.113.0/24", "10.0.0/8"]})),
            )
            .await;
        let (code, field) = reply.error(StatusCode::BAD_REQUEST);
        assert_eq!(
            (code.as_str(), field.as_str()),
            ("invalid_field", "allowlist[1]"),
            "{}",
            reply.body
        );
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("10.0.0/8")
        );
        // A domain another tenant owns: refused, and no deployment follows.
        let reply = kt
            .admin(
                Method::PUT,
                "/api/v1/tenants/beta",
                Some(json!({"domain": "alpha.knowton.example.com"})),
            )
            .await;
        let (code, _) = reply.error(StatusCode::CONFLICT);
        assert_eq!(code, "domain_taken");
        let view = deployment_of(&kt, "beta").await;
        assert_eq!(view["attempt"], 1, "{view:#}");
        assert_eq!(view["allowlist"], json!([]));
        kt.stop().await;
    }
}

mod scaling {
    use knowton_tests::feed::{Feed, Shape, healthy};

    use super::*;

    /// Feeds the tenant's two pods every 100 ms, slow while `slow` says so.
    fn feed(
        kt: &TestCoordinator,
        slug: &str,
        slow: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let mut feed = Feed::new(kt, "node-a");
        let slug = slug.to_owned();
        tokio::spawn(async move {
            // An agent's probe interval, shortened.
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                let results = ["p-0", "p-1"]
                    .into_iter()
                    .map(|pod| {
                        let result = healthy(&slug, pod);
                        if *slow.borrow() {
                            result.slow(9_000)
                        } else {
                            result
                        }
                    })
                    .collect();
                feed.send(results);
            }
        })
    }

    fn min_replicas(cluster: &Cluster, slug: &str) -> Value {
        cluster
            .fake
            .object(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                Some(&ns(slug)),
                "backend",
            )
            .unwrap()["spec"]["minReplicas"]
            .clone()
    }

    async fn sustained_critical_response_time_raises_min_replicas_and_calm_lowers_it(db: Db) {
        let cluster = Cluster::start().await;
        let kt = TestCoordinator::start_and(db, |args| {
            cluster.configure(args);
            args.kube.scale_after_seconds = 1;
            args.kube.scale_calm_seconds = 1;
            args.kube.scale_check_seconds = 1;
            args.alerting.health_sweep_seconds = 1;
        })
        .await;
        kt.provision("pied", "basic").await;
        until_phase(&kt, "pied", 1, "waiting").await;
        cluster.roll_out_all("pied");
        // The fed pods run on the feeding agent's node: with a cluster, the
        // coordinator takes results only for those.
        for (pod, ip) in [("p-0", "10.0.0.10"), ("p-1", "10.0.0.11")] {
            cluster.fake.put_pod(
                knowton_tests::fake_kube::TestPod::new(&ns("pied"), pod)
                    .tenant("pied")
                    .on("node-a")
                    .running(ip)
                    .json(),
            );
        }
        let (slow, slow_rx) = tokio::sync::watch::channel(false);
        let feeding = feed(&kt, "pied", slow_rx);
        until_phase(&kt, "pied", 1, "ready").await;
        assert_eq!(min_replicas(&cluster, "pied"), 2);

        slow.send_replace(true);
        let view = eventually(WAIT, "a scale-up deployed", || async {
            let view = deployment_of(&kt, "pied").await;
            (view["minReplicas"] == 3 && view["trigger"] == "scaled").then_some(view)
        })
        .await;
        assert!(
            events(&view, "scale")
                .iter()
                .any(|e| e.contains("minReplicas 2 -> 3")),
            "{view:#}"
        );
        eventually(WAIT, "the autoscaler's floor raised", || async {
            (min_replicas(&cluster, "pied") == 3).then_some(())
        })
        .await;
        let dashboard = kt
            .http
            .get(kt.url("/api/v1/monitoring/dashboard"))
            .bearer_auth(knowton_tests::ADMIN_TOKEN)
            .header("X-Tenant-Slug", "pied")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(
            dashboard["deployment"]["minReplicas"]
                .as_i64()
                .map(|n| n >= 3),
            Some(true),
            "{dashboard:#}"
        );
        assert_eq!(dashboard["deployment"]["scaled"], true);

        // The basic plan's maximum (4) is never passed however long it lasts.
        eventually(WAIT, "the plan's maximum", || async {
            (min_replicas(&cluster, "pied") == 4).then_some(())
        })
        .await;

        slow.send_replace(false);
        eventually(WAIT, "back to the plan's minimum", || async {
            let view = deployment_of(&kt, "pied").await;
            (view.get("minReplicas").is_none() && min_replicas(&cluster, "pied") == 2).then_some(())
        })
        .await;
        let view = deployment_of(&kt, "pied").await;
        assert!(
            events(&view, "scale")
                .iter()
                .any(|e| e.contains("-> 2: response time fine")),
            "{view:#}"
        );
        feeding.abort();
        kt.stop().await;
    }

    on_every_backend!(db: sustained_critical_response_time_raises_min_replicas_and_calm_lowers_it);
}

mod reconcile {
    use super::*;

    fn metric(metrics: &str, name: &str) -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The periodic drift check of an unchanged tenant reads the watch's
    /// cache: no request for any of its objects reaches the API server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_periodic_check_of_an_unchanged_tenant_reads_only_its_secret() {
        let cluster = Cluster::start().await;
        let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
            cluster.configure(args);
            args.kube.reconcile_seconds = 1;
        })
        .await;
        cluster.provisioned(&kt, "calm", "basic").await;
        // Reads of single objects (not watches) in the tenant's namespace,
        // of Secrets or of anything else.
        let object_reads = |secrets: bool| {
            cluster
                .fake
                .requests()
                .iter()
                .filter(|r| {
                    r.starts_with("GET ")
                        && r.contains("/namespaces/knowton-tenant-calm/")
                        && !r.contains("watch=")
                        && r.contains("/secrets/") == secrets
                })
                .count()
        };
        let metrics = || kt.scrape();
        let checks = metric(&metrics().await, "knowton_drift_checks_total");
        let (reads, secret_reads) = (object_reads(false), object_reads(true));
        // A check is counted as it starts, before it reads the Secret: wait
        // for both.
        eventually(
            WAIT,
            "two more periodic drift checks, each reading the Secret",
            || async {
                (metric(&metrics().await, "knowton_drift_checks_total") >= checks + 2
                    && object_reads(true) >= secret_reads + 2)
                    .then_some(())
            },
        )
        .await;
        // Everything else comes from the watch cache; the Secret, which the
        // coordinator may not watch cluster-wide, is read in its namespace.
        assert_eq!(object_reads(false), reads, "{:#?}", cluster.fake.requests());
        assert_eq!(deployment_of(&kt, "calm").await["attempt"], 1);

        // So a hand edit of the Secret is found and repaired all the same.
        cluster.fake.edit(
            "v1",
            "Secret",
            Some("knowton-tenant-calm"),
            "tenant-secrets",
            |s| s["data"]["JWT_SECRET"] = json!("c3RvbGVu"),
        );
        let view = eventually(WAIT, "the Secret restored", || async {
            let view = deployment_of(&kt, "calm").await;
            events(&view, "drift")
                .join("; ")
                .contains("restored Secret knowton-tenant-calm/tenant-secrets")
                .then_some(view)
        })
        .await;
        let drift = events(&view, "drift").join("; ");
        assert!(!drift.contains("c3RvbGVu"), "{drift}");
        let secret = cluster
            .fake
            .object(
                "v1",
                "Secret",
                Some("knowton-tenant-calm"),
                "tenant-secrets",
            )
            .unwrap();
        assert_ne!(secret["data"]["JWT_SECRET"], "c3RvbGVu");
        kt.stop().await;
    }
}

/// The drift watch's cache is filled by a list and kept by events (a hand
/// edit, a deletion), and holds neither managedFields nor status, which
/// drift is never judged on.
#[tokio::test]
async fn the_watch_cache_follows_the_cluster_without_managed_fields_or_status() {
    use knowton_common::{Branding, Plan};
    use knowton_coordinator::deploy::kinds::ObjectRef;
    use knowton_coordinator::deploy::watch::{LiveCache, watch_kind, watched};
    use knowton_coordinator::deploy::{ClusterSettings, TenantSecrets, TenantSpec, render};
    use tokio_stream::StreamExt;

    knowton_coordinator::client::install_crypto_provider();
    let cluster = Cluster::start().await;
    let kube = knowton_coordinator::deploy::Cluster::connect(Some(&cluster.kubeconfig))
        .await
        .unwrap()
        .expect("a cluster configured");
    let spec = TenantSpec {
        id: uuid::Uuid::new_v4(),
        slug: "acme".to_owned(),
        plan: Plan::Basic,
        domain: "acme.knowton.example.com".to_owned(),
        features: Plan::Basic.features(),
        branding: Branding::default_for("acme"),
        allowlist: Vec::new(),
        stopped: false,
        min_replicas: None,
    };
    let secrets = TenantSecrets {
        database_password: "p".repeat(32),
        jwt_secret: "j".repeat(64),
    };
    let objects = render(&spec, &secrets, &ClusterSettings::default());
    kube.apply("acme", &objects).await.unwrap();
    cluster.roll_out("acme", "backend");

    let cache = std::sync::Arc::new(LiveCache::default());
    for kind in watched() {
        let events = watch_kind(kube.api_of(kind), kind, cache.clone());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while events.next().await.is_some() {}
        });
    }
    tokio::time::timeout(WAIT, cache.wait_until_ready())
        .await
        .expect("every kind listed");
    // Every object but the Secret, which is not watched.
    assert_eq!(
        cache.size().0,
        objects.iter().filter(|o| o["kind"] != "Secret").count(),
        "every watched object, nothing else"
    );

    let backend = |name: &str, kind: &str| ObjectRef {
        kind: kind.to_owned(),
        namespace: Some(ns("acme")),
        name: name.to_owned(),
    };
    let served = cluster.deployment("acme", "backend").unwrap();
    assert!(served["metadata"]["managedFields"].is_array());
    assert!(served["status"].is_object());
    let held = cache
        .get(&backend("backend", "Deployment"))
        .expect("cached");
    assert_eq!(held["metadata"].get("managedFields"), None, "{held:#}");
    assert_eq!(held.get("status"), None, "{held:#}");
    assert_eq!(held["spec"], served["spec"]);

    cluster.fake.edit(
        "apps/v1",
        "Deployment",
        Some(&ns("acme")),
        "frontend",
        |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil/miner:latest"),
    );
    cluster
        .fake
        .delete_object("v1", "Service", Some(&ns("acme")), "backend");
    eventually(WAIT, "the edit and the deletion in the cache", || async {
        let image = cache
            .get(&backend("frontend", "Deployment"))
            .map(|d| d["spec"]["template"]["spec"]["containers"][0]["image"].clone());
        (image == Some(json!("evil/miner:latest"))
            && cache.get(&backend("backend", "Service")).is_none())
        .then_some(())
    })
    .await;
    assert_eq!(
        cache.size().0,
        objects.iter().filter(|o| o["kind"] != "Secret").count() - 1
    );
}

/// The coordinator's rights on a tenant's Secrets come from the RoleBinding
/// it applies just before them; an API server whose authorizer has not seen
/// that binding yet refuses the Secret (403) for a moment, which the first
/// deployment rides out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_forbidden_until_its_rolebinding_is_seen_is_applied_all_the_same() {
    let cluster = Cluster::start().await;
    let kt = cluster.coordinator(Db::Sqlite).await;
    cluster.fake.fail_next(
        "PATCH",
        "/namespaces/knowton-tenant-wonka/secrets/tenant-secrets",
        403,
        2,
    );
    cluster.provisioned(&kt, "wonka", "basic").await;
    let binding = cluster
        .fake
        .object(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            Some("knowton-tenant-wonka"),
            "knowton-coordinator",
        )
        .expect("the tenant namespace's RoleBinding");
    assert_eq!(binding["roleRef"]["name"], "knowton-tenant-manager");
    assert!(
        cluster
            .fake
            .object(
                "v1",
                "Secret",
                Some("knowton-tenant-wonka"),
                "tenant-secrets"
            )
            .is_some()
    );
    kt.stop().await;
}
